# Canary reloads at their edges, with 2 workers: a library that cannot be
# unloaded (Go-like) gets 409 for a canary of a changed file and may run a
# canary of its unchanged file (a runtime restart); a file dropped with
# ffi_watch on during a canary is refused (409, logged, counted), the
# canary runs on; ffi_canary_guard refuses malformed parameters.
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
my $go = "$dir/libgoish.so";

# a Go-looking library: a .go.buildinfo section pins it for life
system("printf 'go1.19' > $dir/buildinfo") == 0 or die;
for my $v ('v1', 'v2') {
    system('objcopy', '--add-section', ".go.buildinfo=$dir/buildinfo",
           release($v), "$dir/goish-$v.so") == 0 or die;
}

sub post {
    my ($what, $args) = @_;
    my ($status, $body) = FFITest::http('POST', "/ffi/$what?$args");
    my $json = eval { decode_json($body) } || {};
    return ($status, $json, $body);
}

sub answers {
    my ($path, $n) = @_;
    my %seen;
    $seen{ $_->[1] // 'none' }++ for FFITest::concurrent($n, 'GET', $path);
    return \%seen;
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
location = /go {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("$go"))
        local ok, res = rt:call("version")
        ngx.say(tostring(res))
    }
}
CONF

# ---- ffi_canary_guard: malformed parameters stop nginx -t
my $nginx = $ENV{NGINX} || 'nginx';
for my $bad ('margin=2', 'margin=x', 'min_calls=0', 'window=10ms',
             'size=3')
{
    mkdir "$root/conf";
    mkdir "$root/logs";
    open my $f, '>', "$root/conf/bad.conf" or die;
    print $f FFITest::_conf(http_config => "ffi_canary_guard $bad;");
    close $f;
    my $out = `$nginx -t -p $root/ -c conf/bad.conf 2>&1`;
    isnt($? >> 8, 0, "ffi_canary_guard $bad: nginx -t fails");
    like($out, qr/invalid parameter "\Q$bad\E"/, '... naming it');
}

install(release('v1'), $ver);
install("$dir/goish-v1.so", $go);
FFITest::start_nginx(workers => 2, config => $config,
                     http_config => "ffi_close_grace 50ms;\nffi_watch on;\n"
                                    . "ffi_watch_delay 100ms;\n"
                                    . "ffi_canary_guard off;",
                     init_worker_by_lua_block => <<"LUA");
assert(ngx.load_ffi("$ver", nil, {unpin = true}))
assert(ngx.load_ffi("$go"))
ngx.log(ngx.WARN, "loaded")
LUA
ok(FFITest::wait_for_log('loaded', 10, 2), 'both workers up');
workers(2);

# ---- a library that cannot be unloaded
install("$dir/goish-v2.so", $go);
my ($s, $j, $body) = post('reload', 'lib=' . escape($go) . '&canary=10');
is($s, 409, 'canary of a changed Go-like library: 409');
like($j->{error}, qr/cannot be unloaded/, '... saying why');
is_deeply(answers('/go', 20), { "v1\n" => 20 }, 'v1 serves on');

install("$dir/goish-v1.so", $go);
($s, $j, $body) = post('reload', 'lib=' . escape($go) . '&canary=50');
is($s, 200, 'canary of the unchanged file (a runtime restart)')
    or diag($body);
is($j->{changed}, JSON::PP::false, '... same image');
my $st = status();
my $libs = worker_libs($st, $go);
for my $pid (sort keys %$libs) {
    my @live = grep { $_->{state} eq 'serving' } @{ $libs->{$pid}{runtimes} };
    is(scalar @live, 2, "worker $pid: two serving runtimes of one image");
}
($s, $j, $body) = post('rollback', 'lib=' . escape($go));
is($s, 200, 'rolled back') or diag($body);
ok(wait_until(sub {
       my $l = worker_libs(status(), $go);
       !grep { grep { $_->{state} eq 'serving' && $_->{version} != 1 }
               @{ $_->{runtimes} } } values %$l;
   }, 10), 'one serving runtime (version 1) in every worker');

# ---- a drop during a canary is refused, the canary runs on
install(release('v2'), $ver);
ok(FFITest::wait_for_log(qr/"\Q$ver\E" reloaded: version 2\b/, 10),
   'a drop reloads while no canary runs');
install(release('v3'), $ver);
my $n = () = FFITest::error_log() =~ /ffi: "\Q$ver\E" reloaded/g;
($s, $j, $body) = post('reload', 'lib=' . escape($ver) . '&canary=50');
is($s, 200, 'canary of v3 at 50%') or diag($body);
is($j->{version}, 3, '... version 3');
install(release('v1'), $ver);
my $refused = qr/file dropped at "\Q$ver\E" not loaded, the running /;
ok(FFITest::wait_for_log(
       qr/${refused}version serves on: a canary of version 3 runs/, 10),
   'the drop during the canary is refused, logged');
my (undef, $metrics) = FFITest::http('GET', '/ffi/metrics');
like($metrics, qr/^ffi_drops_total\{lib="[^"]*",outcome="conflict"\} 1$/m,
     'counted as a conflicting drop');
my $seen = answers('/v', 40);
ok($seen->{"v2\n"} && $seen->{"v3\n"} && keys %$seen == 2,
   'v2 and v3 serve on, v1 never: '
   . join(', ', map { s/\n//r . "=$seen->{$_}" } sort keys %$seen));
is(() = FFITest::error_log() =~ /ffi: "\Q$ver\E" reloaded/g, $n,
   'no reload happened');
($s, $j, $body) = post('promote', 'lib=' . escape($ver));
is($s, 200, 'promote') or diag($body);
is_deeply(answers('/v', 20), { "v3\n" => 20 },
          'v3 serves alone: the refused drop stays refused');

FFITest::stop_nginx();
done_testing();
