# ffi_canary_guard when a version's counts go down: a full metrics table
# moves the oldest retired series into version="retired", so the sum of a
# canary's answers the guard reads can fall below the window's start. The
# guard must not read that as a failing canary (the difference wrapped
# around: failures/answers near 1) and roll back a canary that fails less
# than the margin allows. 1 worker; X's canary (libver-flaky) fails every
# other call, version 1 none: 0.5, below the margin 0.6.
use lib 't/lib';
use lib 't/lib/misbehave';
use FFITest;
use MBTest qw(release install escape reload status wait_until);
use Test::More;
use JSON::PP;

my $root = FFITest::servroot();
my $dir = "$root/lib";
mkdir $dir, 0755;
my $x = "$dir/libx.so";
my $y = "$dir/liby.so";

my $config = <<"CONF";
location /ffi/ { ffi_admin; allow 127.0.0.1; deny all; }
location = /churn {
    content_by_lua_block {
        local lib = ngx.unescape_uri(ngx.var.arg_lib)
        for i = tonumber(ngx.var.arg_from), tonumber(ngx.var.arg_to) do
            local rt = assert(ngx.load_ffi(lib, "n=" .. i, {unpin = true}))
            for _ = 1, tonumber(ngx.var.arg_calls) do
                rt:call(ngx.var.arg_cmd or "version")
            end
            rt:__unload()
        end
        ngx.say("done")
    }
}
CONF

sub churn {
    my ($lib, $from, $to, $calls, $step, $cmd) = @_;
    $step ||= 100;
    for (my $i = $from; $i <= $to; $i += $step) {
        my $j = $i + $step - 1 > $to ? $to : $i + $step - 1;
        my ($st, $body) = FFITest::http('GET', '/churn?lib=' . escape($lib)
                                        . "&from=$i&to=$j&calls=$calls"
                                        . ($cmd ? "&cmd=$cmd" : ''),
                                        undef, undef, 60);
        return 0 unless $body eq "done\n";
    }
    return 1;
}

sub canary_of {
    my ($path) = @_;
    my ($sl) = grep { $_->{path} eq $path } @{ status()->{libraries} || [] };
    return $sl ? $sl->{canary} : undef;
}

install(release('v1'), $x);
install(release('v1'), $y);
FFITest::start_nginx(workers => 1, config => $config,
                     http_config => "ffi_close_grace 10ms;\n"
                                    . "ffi_canary_guard margin=0.6 "
                                    . "min_calls=10 window=2s;",
                     init_worker_by_lua_block => <<"LUA");
assert(ngx.load_ffi("$x", nil, {unpin = true}))
assert(ngx.load_ffi("$y", nil, {unpin = true}))
ngx.log(ngx.WARN, "loaded")
LUA
ok(FFITest::wait_for_log('loaded', 10, 1), 'the worker is up');

# Y's images above X's canary: a full table folds X's series first
for my $n (2, 3) {
    install(release("v$n"), $y);
    my ($s, $j) = reload($y);
    is($j->{version}, $n, "Y: v$n is version $n");
}

install(release('flaky'), $x);
my ($s, $body) = FFITest::http('POST', '/ffi/reload?lib=' . escape($x)
                                        . '&canary=50');
is($s, 200, 'X: canary of the flaky release (version 2) at 50%')
    or diag $body;

ok(churn($x, 1, 600, 4), "X: 600 runtimes of their own, 4 calls each");
is((canary_of($x) || {})->{version}, 2,
   'the canary runs: 0.5 is within 0.6');

# a call of 5 ms each: the folds span several of the guard's windows
ok(churn($y, 1, 1100, 1, 100, 'sleep:5'), 'Y: 1,100 runtimes fill the table');
my (undef, $m) = FFITest::http('GET', '/ffi/metrics');
my $left = () =
    $m =~ /^ffi_calls_total\{lib="\Q$x\E",version="2",cfg="[0-9a-f]/mg;
ok($left < 600, "X's canary series moved to version=\"retired\" ($left left)");
is((canary_of($x) || {})->{version}, 2, 'the canary still runs');
unlike(FFITest::error_log(), qr/canary version 2 of "\Q$x\E" fails/,
       'the guard did not roll it back');

FFITest::stop_nginx();
done_testing();
