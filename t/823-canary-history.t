# Canaries and the history together, with 2 workers: a rollback during a
# canary retires it (one that names a version is 409), a retired canary's
# version number is never given again, a promoted canary enters the history
# (how "canary") and the version it replaced stays there with its copy, so
# a rollback after a promotion brings those very bytes back.
use lib 't/lib';
use lib 't/lib/misbehave';
use FFITest;
use MBTest qw(release install escape reload status workers);
use Test::More;
use JSON::PP;

my $root = FFITest::servroot();
my $dir = "$root/lib";
mkdir $dir, 0755;
my $ver = "$dir/libver.so";

sub post {
    my ($what, $args) = @_;
    my ($status, $body) = FFITest::http('POST', "/ffi/$what?$args");
    my $json = eval { decode_json($body) } || {};
    return ($status, $json, $body);
}

# answers of N concurrent calls, counted
sub answers {
    my ($n) = @_;
    my %seen;
    $seen{ $_->[1] // 'none' }++
        for FFITest::concurrent($n, 'GET', '/v');
    return \%seen;
}

sub lib {
    my ($sl) = grep { $_->{path} eq $ver } @{ status()->{libraries} || [] };
    return $sl || {};
}

install(release('v1'), $ver);

my $config = <<"CONF";
location /ffi/ { ffi_admin; allow 127.0.0.1; deny all; }
location = /v {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("$ver", nil, {unpin = true}))
        local ok, res = rt:call("version")
        ngx.say(tostring(ok), " ", tostring(res))
    }
}
CONF

FFITest::start_nginx(workers => 2, config => $config,
                     http_config => "ffi_close_grace 50ms;",
                     init_worker_by_lua_block => <<"LUA");
assert(ngx.load_ffi("$ver", nil, {unpin = true}))
ngx.log(ngx.WARN, "loaded")
LUA
ok(FFITest::wait_for_log('loaded', 10, 2), 'both workers up');

install(release('v2'), $ver);
my ($s, $j) = reload($ver);
is($s, 200, 'v2 is version 2');

# --- a canary of v3's file, then rollback: the canary is retired
install(release('v3'), $ver);
($s, $j) = post('reload', 'lib=' . escape($ver) . '&canary=50');
is($s, 200, 'canary of v3: 200');
is($j->{version}, 3, 'the canary is version 3');

($s, $j) = post('rollback', 'lib=' . escape($ver) . '&version=1');
is($s, 409, 'rollback to a named version during a canary: 409');
like($j->{error}, qr/a canary of .* runs: POST rollback without a version retires it/,
     '... saying how to end the canary first');
is(lib()->{canary}{version}, 3, 'the canary runs on');

($s, $j) = post('rollback', 'lib=' . escape($ver));
is($s, 200, 'rollback during a canary: 200');
is($j->{retired}, 3, 'it retired version 3');
is($j->{version}, 2, 'version 2 serves on');
is_deeply(answers(40), { "true v2\n" => 40 }, 'every call on v2 again');
is(lib()->{canary}, undef, 'status: no canary');
is((grep { $_->{version} == 3 } @{ lib()->{history} }), 0,
   'a retired canary is not in the history');
($s, $j) = post('rollback', 'lib=' . escape($ver) . '&version=3');
is($s, 422, 'rollback to the retired canary, above the current version: 422');
like($j->{error}, qr/version 3 never served as the current version/,
     '... saying it never served (not that it never was)');

# --- a second canary gets a new number; promoted, it enters the history
($s, $j) = post('reload', 'lib=' . escape($ver) . '&canary=50');
is($s, 200, 'a second canary: 200');
is($j->{version}, 4, 'version 4: the retired canary\'s 3 is not given again');
($s, $j) = post('promote', 'lib=' . escape($ver));
is($s, 200, 'promote: 200');
is($j->{version}, 4, 'version 4 serves alone');
is_deeply(answers(40), { "true v3\n" => 40 }, 'every call on v3\'s bytes');

my @h = @{ lib()->{history} };
my ($h4) = grep { $_->{version} == 4 } @h;
is($h4->{how}, 'canary', 'history: version 4 came by a canary');
is($h4->{outcome}, 'ok', 'history: ok');
ok((grep { $_->{version} == 2 } @h), 'history: version 2 is still there');

# --- the file on disk is broken; rollback brings version 2's bytes back
open my $g, '>', "$dir/bad.tmp" or die;
print $g "garbage\n";
close $g;
rename "$dir/bad.tmp", $ver or die;

($s, $j) = post('rollback', 'lib=' . escape($ver));
is($s, 200, 'rollback after the promotion: 200');
is($j->{rolled_back_to}, 2, 'to version 2');
is($j->{version}, 5, 'as version 5');
is_deeply(answers(40), { "true v2\n" => 40 }, 'every call on v2\'s bytes');

($s, $j) = post('rollback', 'lib=' . escape($ver) . '&version=4');
is($s, 200, 'rollback to the promoted canary: 200');
is($j->{version}, 6, 'as version 6');
is_deeply(answers(40), { "true v3\n" => 40 }, 'every call on v3\'s bytes');

FFITest::stop_nginx();
done_testing();
