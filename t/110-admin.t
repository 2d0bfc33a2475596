# The admin endpoint's answers to good and bad requests: status codes,
# JSON bodies (errors too), methods, names looked up in the registry only,
# the optional token, and status JSON that stays valid for odd names.
use lib 't/lib';
use FFITest;
use Test::More;
use JSON::PP;
use File::Copy qw(copy);

my $repo = FFITest::repo();
my $root = FFITest::servroot();
my $dir = "$root/lib";
mkdir $dir, 0755;

# a library whose file name needs every kind of escaping in JSON
my $odd = qq{$dir/lib"q\\b\x01.so};
copy("$repo/build/t/libver-v1.so", $odd) or die;

my $config = <<"CONF";
location /ffi/ { ffi_admin; allow 127.0.0.1; deny all; }
location /secure/ { ffi_admin; }
location = /load {
    content_by_lua_block {
        assert(ngx.load_ffi("demo"))
        local name = ngx.unescape_uri(ngx.var.arg_odd or "")
        if name ~= "" then
            local rt, err = ngx.load_ffi(name)
            ngx.say(tostring(rt ~= nil), " ", tostring(err))
            return
        end
        ngx.say("ok")
    }
}
CONF

sub escape {
    my ($s) = @_;
    $s =~ s/([^A-Za-z0-9_.~-])/sprintf('%%%02X', ord $1)/ge;
    return $s;
}

sub check {
    my ($what, $method, $path, $code, $error, $body, $headers) = @_;
    my ($status, $out, $h) = FFITest::http($method, $path, $body, $headers);
    is($status, $code, "$what: $code");
    is($h->{'content-type'}, 'application/json', "$what: JSON")
        if $method ne 'HEAD';
    my $json = eval { decode_json($out) };
    ok($json, "$what: a valid JSON body") or diag($out) if $method ne 'HEAD';
    is($json->{error}, $error, "$what: error text") if defined $error;
    return ($json, $h);
}

FFITest::start_nginx(workers => 2, config => $config,
                     http_config => 'ffi_admin_token s3cr3t;');

my $auth = "Authorization: Bearer s3cr3t\r\n";
my ($status, $body) = FFITest::http('GET', '/load');
is($body, "ok\n", 'demo loaded');

# no token, wrong token
check('no token', 'POST', '/ffi/reload?lib=demo', 401,
      'missing or wrong token');
check('wrong token', 'POST', '/ffi/reload?lib=demo', 401,
      'missing or wrong token', undef, "Authorization: Bearer s3cr3t2\r\n");

my ($json) = check('reload', 'POST', '/ffi/reload?lib=demo', 200, undef,
                   undef, $auth);
is($json->{lib}, 'demo', 'reload: lib');
is($json->{version}, 2, 'reload: version');

my $no_such = 'no such admin endpoint: use reload, promote, rollback, '
            . 'status or metrics';
for my $case (
    ['missing lib', '/ffi/reload', 400, 'missing lib argument'],
    ['empty lib', '/ffi/reload?lib=', 400, 'missing lib argument'],
    ['other argument only', '/ffi/reload?name=demo', 400,
     'missing lib argument'],
    ['huge lib', '/ffi/reload?lib=' . ('a' x 5000), 400, 'bad lib argument'],
    ['NUL in lib', '/ffi/reload?lib=de%00mo', 400, 'bad lib argument'],
    ['unknown library', '/ffi/reload?lib=nope', 404, 'unknown library'],
    ['path of a loaded file, never loaded by that name',
     "/ffi/reload?lib=" . escape("$repo/examples/c/libdemo.so"), 404,
     'unknown library'],
    ['traversal', '/ffi/reload?lib=../../etc/passwd', 404,
     'unknown library'],
    ['encoded traversal', '/ffi/reload?lib=..%2F..%2Fetc%2Fpasswd', 404,
     'unknown library'],
    ['percent-encoded name', '/ffi/reload?lib=%64%65%6D%6F', 200, undef],
    ['unknown endpoint', '/ffi/restart', 404, $no_such],
    ['the location itself', '/ffi/', 404, $no_such],
    ['a path below reload', '/ffi/reload/x?lib=demo', 404, $no_such],
)
{
    my ($what, $path, $code, $error) = @$case;
    check($what, 'POST', $path, $code, $error, undef, $auth);
}

my (undef, $h) = check('GET reload', 'GET', '/ffi/reload?lib=demo', 405,
                       'method not allowed', undef, $auth);
is($h->{allow}, 'POST', 'GET reload: Allow: POST');
(undef, $h) = check('PUT reload', 'PUT', '/ffi/reload?lib=demo', 405,
                    'method not allowed', 'x', $auth);
(undef, $h) = check('POST status', 'POST', '/ffi/status', 405,
                    'method not allowed', undef, $auth);
is($h->{allow}, 'GET, HEAD', 'POST status: Allow: GET, HEAD');
check('DELETE status', 'DELETE', '/ffi/status', 405, 'method not allowed',
      undef, $auth);
check('a body with reload', 'POST', '/ffi/reload?lib=demo', 400,
      'the request takes no body', '{"lib":"demo"}', $auth);
check('HEAD status', 'HEAD', '/ffi/status', 200, undef, undef, $auth);

# the admin location without allow/deny still demands the token
check('other location, no token', 'GET', '/secure/status', 401,
      'missing or wrong token');
check('other location', 'GET', '/secure/status', 200, undef, undef, $auth);

# names and errors with quotes, backslashes and control characters
($status, $body) = FFITest::http('GET', '/load?odd=' . escape($odd));
is($body, "true nil\n", 'the oddly named library loads');
check('reload odd name', 'POST', '/ffi/reload?lib=' . escape($odd), 200,
      undef, undef, $auth);
open my $f, '>', $odd or die;
print $f "not \"ELF\"\\\n";
close $f;
($json) = check('reload odd name, bad file', 'POST',
                '/ffi/reload?lib=' . escape($odd), 422, undef, undef, $auth);
like($json->{error}, qr/\Q$odd\E/, 'the error names the odd file exactly');

($json) = check('status', 'GET', '/ffi/status', 200, undef, undef, $auth);
my ($lib) = grep { $_->{path} eq $odd } @{ $json->{libraries} };
ok($lib, 'status: the odd name round-trips through JSON');
is($lib->{name}, $odd, 'status: name');
like($lib->{last_error}, qr/not an ELF/, 'status: last error');
is(scalar @{ $json->{workers} }, 2, 'status: 2 workers');

FFITest::stop_nginx();
done_testing();
