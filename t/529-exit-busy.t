# Quit under load with busy polling on (the default) and a long
# ffi_exit_timeout: answers and NULL-task notices that come after the event
# loop stopped polling still wake the exit's wait, so the worker leaves as
# soon as its runtimes drained, not at the timeout, and logs no false
# "did not take their NULL task".
use lib 't/lib';
use lib 't/lib/misbehave';
use FFITest;
use MBTest qw(workers wait_until);
use Test::More;
use Time::HiRes qw(time);

my $config = <<'CONF';
location = /load {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("ffi_test", "threads=2"))
        local other = assert(ngx.load_ffi("ffi_test", "other"))
        local wrong = 0
        ngx.shared.load:incr("started", 1, 0)
        for i = 1, tonumber(ngx.var.arg_n) do
            -- quick answers (busy polling finds them) and answers from
            -- another thread 1 ms later (they come through the eventfd)
            local ok, res = (i % 2 == 0 and rt or other):call(
                                i % 3 == 0 and "sleep:1:" .. i or "echo:" .. i)
            if res ~= tostring(i) then wrong = wrong + 1 end
        end
        ngx.say(wrong, " wrong")
    }
}
location = /started {
    content_by_lua_block { ngx.say(ngx.shared.load:get("started") or 0) }
}
CONF

for my $round (1 .. 3) {
    FFITest::start_nginx(workers => 2, config => $config,
                         http_config => "ffi_exit_timeout 30s;\n"
                                        . "lua_shared_dict load 1m;");
    workers(2);
    my @warm = FFITest::concurrent(4, 'GET', '/load?n=10');
    my $conns = FFITest::begin_requests(40, 'GET', '/load?n=300');
    ok(wait_until(sub { (FFITest::http('GET', '/started'))[1] >= 44 }, 30),
       "round $round: 40 requests under way");
    my $master = FFITest::master_pid();
    my @quitting = FFITest::worker_pids();
    my $t0 = time;
    FFITest::signal('QUIT');
    my @res = FFITest::finish_requests($conns, 60);
    # up to the workers' "exit": under ASan, LeakSanitizer's scan follows
    ok(FFITest::wait_at_exit(\@quitting, 60),
       "round $round: the workers are at their exit");
    my $secs = time - $t0;
    ok(FFITest::wait_exit($master, 60), "round $round: nginx quit");
    my @wrong = grep { ($_->[1] // '') ne "0 wrong\n" } @res;
    is(scalar @wrong, 0, "round $round: every call under load answered right");
    cmp_ok($secs, '<', 15, sprintf('round %d: quit in %.1f s, not at the '
                                   . '30 s ffi_exit_timeout', $round, $secs));
    my $log = FFITest::error_log();
    unlike($log, qr/did not take their NULL task|did not drain/,
           "round $round: no runtime reported as stuck");
    FFITest::stop_nginx("quit under load, round $round");
}

done_testing();
