# The admin endpoint cannot be driven from a browser: a request a browser
# sends cross-site (a foreign Origin, Sec-Fetch-Site other than same-origin
# or none) is refused with 403 JSON, whatever the token, and changes
# nothing; tools that send neither header (curl) and same-origin requests
# are served.
use lib 't/lib';
use lib 't/lib/misbehave';
use FFITest;
use MBTest qw(release install reload status);
use Test::More;
use JSON::PP;

my $root = FFITest::servroot();
my $dir = "$root/lib";
mkdir $dir, 0755;
my $ver = "$dir/libver.so";
install(release('v1'), $ver);
my $port = FFITest::port();

my $config = <<"CONF";
location /ffi/ { ffi_admin; allow 127.0.0.1; deny all; }
location = /v {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("$ver"))
        local ok, res = rt:call("version")
        ngx.say(tostring(ok), " ", tostring(res))
    }
}
CONF

FFITest::start_nginx(workers => 2, config => $config) or die;

my ($status, $body) = FFITest::http('GET', '/v');
is($body, "true v1\n", 'v1 serves');
install(release('v2'), $ver);

sub version {
    my ($l) = grep { $_->{path} eq $ver } @{ status()->{libraries} || [] };
    return $l ? $l->{version} : -1;
}

my $error = 'cross-site request refused (Origin or Sec-Fetch-Site names '
          . 'another site)';

for my $case (
    ['a foreign Origin', { Origin => 'http://evil.example' }],
    ['Origin null (a sandboxed page, a data: URL)', { Origin => 'null' }],
    ['another port of this host', { Origin => 'http://localhost:8080' }],
    ['https of this host', { Origin => 'https://localhost' }],
    ['an Origin with a path', { Origin => 'http://localhost/x' }],
    ['Sec-Fetch-Site: cross-site', { 'Sec-Fetch-Site' => 'cross-site' }],
    ['Sec-Fetch-Site: same-site', { 'Sec-Fetch-Site' => 'same-site' }],
    ['same Origin, but Sec-Fetch-Site: cross-site',
     { Origin => 'http://localhost', 'Sec-Fetch-Site' => 'cross-site' }],
) {
    my ($what, $h) = @$case;
    for my $method ('POST', 'GET') {
        my $path = $method eq 'POST' ? '/ffi/reload?lib=' . MBTest::escape($ver)
                                     : '/ffi/status';
        my ($s, $b, $hdr) = FFITest::http($method, $path, undef, $h);
        is($s, 403, "$what: $method 403");
        is($hdr->{'content-type'}, 'application/json', "$what: JSON");
        my $json = eval { decode_json($b) } || {};
        is($json->{error}, $error, "$what: the error says why");
    }
}
is(version(), 1, 'nothing was reloaded');
($status, $body) = FFITest::http('GET', '/v');
is($body, "true v1\n", 'v1 serves on');

# same origin as a browser sends it (Host with the port), and curl
my $url = "http://127.0.0.1:$port/ffi/reload?lib=" . MBTest::escape($ver);
my $out = `curl -s -o /dev/null -w '%{http_code}' -X POST -H 'Origin: http://127.0.0.1:$port' -H 'Sec-Fetch-Site: same-origin' '$url'`;
is($out, '200', 'same origin, Sec-Fetch-Site: same-origin: served');
is(version(), 2, 'reloaded');
$out = `curl -s -o /dev/null -w '%{http_code}' -X POST -H 'Origin: http://127.0.0.1:1$port' '$url'`;
is($out, '403', 'curl with another port as Origin: 403');
$out = `curl -s -o /dev/null -w '%{http_code}' -X POST -H 'Sec-Fetch-Site: none' '$url'`;
is($out, '200', 'Sec-Fetch-Site: none (typed by the user): served');
$out = `curl -s -o /dev/null -w '%{http_code}' -X POST '$url'`;
is($out, '200', 'no Origin, no Sec-Fetch-Site (curl): served');

# DNS rebinding: a page of evil.example whose name now resolves to
# 127.0.0.1 sends Host, Origin and Sec-Fetch-Site that all agree. A browser
# request must be addressed to this server by a name it has (server_name),
# an IP address or localhost, never to a name someone else controls.
for my $h (['evil.example', 'http://evil.example'],
           ["evil.example:$port", "http://evil.example:$port"],
           ["EVIL.example:$port", "http://evil.EXAMPLE:$port"]) {
    my ($host, $origin) = @$h;
    $out = `curl -s -w ' %{http_code}' -X POST -H 'Host: $host' -H 'Origin: $origin' -H 'Sec-Fetch-Site: same-origin' '$url'`;
    is($out, "{\"error\":\"$error\"}\n 403",
       "rebound name $host, its own Origin: 403");
    $out = `curl -s -o /dev/null -w '%{http_code}' -H 'Host: $host' -H 'Sec-Fetch-Site: same-origin' 'http://127.0.0.1:$port/ffi/status'`;
    is($out, '403', "rebound name $host, Sec-Fetch-Site only, GET: 403");
}
$out = `curl -s -o /dev/null -w '%{http_code}' -X POST -H 'Host: evil.example' '$url'`;
is($out, '200', 'another Host, no browser header (curl): served');
for my $h (["localhost:$port", "http://localhost:$port"],
           ["LocalHost:$port", "http://localhost:$port"],
           ["[::1]:$port", "http://[::1]:$port"],
           ["127.0.0.1:$port", "http://127.0.0.1:$port"]) {
    my ($host, $origin) = @$h;
    $out = `curl -s -o /dev/null -w '%{http_code}' -X POST -H 'Host: $host' -H 'Origin: $origin' -H 'Sec-Fetch-Site: same-origin' '$url'`;
    is($out, '200', "Host $host (server_name, address), same Origin: served");
}

FFITest::stop_nginx();

# with a token, a cross-site request is refused before the token matters
FFITest::start_nginx(workers => 1, config => $config,
                     http_config => 'ffi_admin_token s3cr3t;') or die;
FFITest::http('GET', '/v');
my ($s, $b) = FFITest::http('POST', '/ffi/reload?lib=' . MBTest::escape($ver),
                            undef, { Origin => 'http://evil.example',
                                     Authorization => 'Bearer s3cr3t' });
is($s, 403, 'token and a foreign Origin: 403');
($s) = FFITest::http('POST', '/ffi/reload?lib=' . MBTest::escape($ver),
                     undef, { Authorization => 'Bearer s3cr3t' });
is($s, 200, 'token, no Origin: 200');
FFITest::stop_nginx();

done_testing();
