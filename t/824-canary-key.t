# A canary's key names an nginx variable: one that no request can have
# (a typo, an unknown name) is refused by the admin endpoint with 400
# before anything is checked, instead of being accepted and then logging
# "unknown variable" on every call it routes; a name in capitals means
# what ngx.var means by it (ngx.var lowercases). A rollback to a version
# that was a retired canary says that, not that it fell out of the history.
use lib 't/lib';
use lib 't/lib/misbehave';
use FFITest;
use MBTest qw(release install escape status worker_libs workers wait_until);
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

my $config = <<"CONF";
location /ffi/ { ffi_admin; allow 127.0.0.1; deny all; }
location = /v {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("$ver", nil, {unpin = true}))
        local ok, res = rt:call("version")
        ngx.say(tostring(res))
    }
}
CONF

install(release('v1'), $ver);
FFITest::start_nginx(workers => 1, config => $config,
                     http_config => "ffi_close_grace 50ms;",
                     init_worker_by_lua_block => <<"LUA");
assert(ngx.load_ffi("$ver", nil, {unpin = true}))
ngx.log(ngx.WARN, "loaded")
LUA
ok(FFITest::wait_for_log('loaded', 10, 1), 'worker up');
install(release('v2'), $ver);

# ---- names no request has: 400 naming the variable, nothing changes
for my $bad ('nosuchvar', 'arg', 'http', 'cookie') {
    my ($s, $j, $body) = post('reload', 'lib=' . escape($ver)
                                        . "&canary=50&key=$bad");
    is($s, 400, "key=$bad: 400") or diag($body);
    like($j->{error} // '', qr/no variable "\Q$bad\E"/, '... naming it')
        or diag($body);
}
my $st = status();
my ($lib) = grep { $_->{path} eq $ver } @{ $st->{libraries} };
is($lib->{version}, 1, 'still version 1, no version spent');
ok(!$lib->{canary}, 'no canary');

# ---- capitals: routed by $arg_user as ngx.var.ARG_USER would be
my ($s, $j, $body) = post('reload', 'lib=' . escape($ver)
                                    . '&canary=50&key=ARG_User');
is($s, 200, 'key=ARG_User: a canary') or diag($body);
is($j->{version}, 2, '... version 2');
$st = status();
($lib) = grep { $_->{path} eq $ver } @{ $st->{libraries} };
is($lib->{canary}{key}, 'arg_user', 'status shows the name ngx.var uses');
my %seen;
for my $u (1 .. 20) {
    my %one;
    for (1 .. 4) {
        my (undef, $b) = FFITest::http('GET', "/v?user=u$u");
        $one{$b}++;
    }
    is(scalar keys %one, 1, "user u$u on one version");
    $seen{$_}++ for keys %one;
}
ok($seen{"v1\n"} && $seen{"v2\n"}, 'users on both versions');
unlike(FFITest::error_log(), qr/unknown "[^"]*" variable/,
       'no "unknown variable" in error.log');

# ---- a retired canary never was current: the history has no copy of it,
#      and the answer says so (not that it fell out)
($s, $j, $body) = post('rollback', 'lib=' . escape($ver));
is($s, 200, 'canary retired') or diag($body);
is($j->{retired}, 2, '... version 2');
install(release('v3'), $ver);
($s, $j, $body) = post('reload', 'lib=' . escape($ver));
is($s, 200, 'a plain reload') or diag($body);
is($j->{version}, 3, '... is version 3');
($s, $j, $body) = post('rollback', 'lib=' . escape($ver) . '&version=2');
is($s, 422, 'rollback to the retired canary: 422') or diag($body);
like($j->{error} // '', qr/version 2 never served as the current version/,
     '... saying it was a canary that never served alone') or diag($body);

FFITest::stop_nginx();
done_testing();
