# The race of t/529 made certain. A call the runtime answers only 12 s
# later keeps the event loop busy-polling (ffi_busy_poll_us is long) until
# the worker's exit: after ffi_exit_timeout (10 s) the graceful quit gives
# up on the call, and the exit's wait for the runtime to drain begins
# while polling is still on. The runtime's NULL task notice and its late
# answer must wake that wait, which no longer polls: the worker leaves at
# about 12 s, once the runtime drained, not at the wait's own deadline
# (20 s or more) with a false report of a runtime that did not drain.
use lib 't/lib';
use lib 't/lib/misbehave';
use FFITest;
use MBTest qw(workers wait_until);
use Test::More;
use Time::HiRes qw(time);

my $config = <<'CONF';
location = /call {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("ffi_test"))
        -- no yield between this and the call: once it shows, the call is
        -- posted and the loop busy-polls for it
        ngx.shared.load:incr("started", 1, 0)
        local ok, res = rt:call("sleep:12000:late")
        ngx.say(tostring(ok), " ", tostring(res))
    }
}
location = /started {
    content_by_lua_block { ngx.say(ngx.shared.load:get("started") or 0) }
}
CONF

for my $round (1 .. 1) {
    FFITest::start_nginx(workers => 1, config => $config,
                         http_config => "ffi_exit_timeout 10s;\n"
                                        . "ffi_busy_poll_us 60000000;\n"
                                        . "lua_shared_dict load 1m;");
    workers(1);
    my $conns = FFITest::begin_requests(1, 'GET', '/call');
    ok(wait_until(sub { (FFITest::http('GET', '/started'))[1] >= 1 }, 30),
       "round $round: the call is in flight");
    my $master = FFITest::master_pid();
    my @quitting = FFITest::worker_pids();
    my $t0 = time;
    FFITest::signal('QUIT');
    my @res = FFITest::finish_requests($conns, 30);
    is($res[0][1], "false worker exiting\n",
       "round $round: the caller is told the worker gave up on the call");
    # up to the worker's "exit": under ASan, LeakSanitizer's scan follows
    ok(FFITest::wait_at_exit(\@quitting, 60),
       "round $round: the worker is at its exit");
    my $secs = time - $t0;
    ok(FFITest::wait_exit($master, 60), "round $round: nginx quit");
    cmp_ok($secs, '<', 17, sprintf('round %d: quit in %.1f s, once the '
                                     . 'answer came (12 s)', $round, $secs));
    my $log = FFITest::error_log();
    unlike($log, qr/did not take their NULL task|did not drain|abandoning/,
           "round $round: the runtime drained, none is reported stuck");
    FFITest::stop_nginx("exit while polling, round $round");
}

done_testing();
