# ffi_exit_timeout bounds a worker's exit whatever a library does: here a
# thread is stuck in a task for good and the library's destructor joins it.
# Past the timeout the worker names the runtime it abandons and leaves
# without running the library's code (no destructor), on reload and quit.
use lib 't/lib';
use lib 't/lib/misbehave';
use FFITest;
use MBTest qw(mb_lib workers wait_until);
use Test::More;
use Time::HiRes qw(time);

my $lib = mb_lib('libmb_stuck.so');

my $config = <<"CONF";
location = /stuck {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("$lib"))
        local ok, res = rt:call("stuck")
        ngx.say(tostring(ok), " ", tostring(res))
    }
}
location = /echo {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("$lib"))
        local ok, res = rt:call("echo:" .. ngx.var.arg_v)
        ngx.say(tostring(ok), " ", tostring(res))
    }
}
CONF

# calls in flight may hold the worker ffi_exit_timeout, then the runtimes
# get as long to drain: 2 x 1 s, and a margin for a slow machine
my $bound = 2 * 1 + 3;

FFITest::start_nginx(workers => 1, config => $config,
                     http_config => "ffi_exit_timeout 1s;");

my ($old) = workers(1);
my ($status, $body) = FFITest::http('GET', '/echo?v=a');
is($body, "true a\n", 'serves');
my $conns = FFITest::begin_requests(1, 'GET', '/stuck');
ok(FFITest::wait_for_log('mb_stuck is stuck'), 'a thread is stuck in a task');

# --- reload: the old worker leaves within the bound
my $t0 = time;
FFITest::signal('HUP');
# up to its "exit": under ASan, LeakSanitizer's scan follows
ok(FFITest::wait_at_exit([$old], 30), 'the old worker is at its exit');
my $secs = time - $t0;
ok(FFITest::wait_exit($old, 30), 'the old worker exited');
cmp_ok($secs, '<', $bound, sprintf('reload: within %d s (%.1f s)', $bound,
                                   $secs));
my @res = FFITest::finish_requests($conns, 10);
is($res[0][1], "false worker exiting\n", 'the stuck call: "worker exiting"');

my $log = FFITest::error_log();
like($log, qr/abandoning runtime "" of "\Q$lib\E" \(version 1\): NULL task not taken, 1 call\(s\) unanswered/,
     'the abandoned runtime is named');
like($log, qr/did not drain within 1000 ms \(ffi_exit_timeout\): the worker exits without running library destructors/,
     'and that destructors do not run');
unlike($log, qr/mb_stuck destructor/, 'the library destructor did not run');
# the master says so once it reaped the worker: a line to await
ok(FFITest::wait_for_log(qr/worker process $old exited with code 0/),
   'exit code 0');

# --- quit: the same with the new worker
my ($new) = workers(1);
($status, $body) = FFITest::http('GET', '/echo?v=b');
is($body, "true b\n", 'the new worker serves');
$conns = FFITest::begin_requests(1, 'GET', '/stuck');
ok(FFITest::wait_for_log('mb_stuck is stuck', 10, 2), 'stuck again');
my $master = FFITest::master_pid();
$t0 = time;
FFITest::signal('QUIT');
ok(FFITest::wait_at_exit([$new], 30), 'the worker is at its exit');
$secs = time - $t0;
ok(FFITest::wait_exit($master, 30), 'nginx quit');
cmp_ok($secs, '<', $bound, sprintf('quit: within %d s (%.1f s)', $bound,
                                   $secs));
FFITest::close_requests($conns);
FFITest::stop_nginx('stuck runtime at exit');
unlike(FFITest::error_log(), qr/mb_stuck destructor/,
       'no library destructor ran');

done_testing();
