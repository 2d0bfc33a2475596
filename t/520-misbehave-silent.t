# A runtime that never answers: the per-runtime and the per-call timeout
# both end the call with false, "timeout"; a runtime that answers too late
# has its answers freed; nginx still quits within ffi_exit_timeout.
use lib 't/lib';
use lib 't/lib/misbehave';
use FFITest;
use MBTest qw(mb_lib footprint workers);
use Test::More;
use Time::HiRes qw(time);

my $silent = mb_lib('libmb_silent.so');

# each location answers "ok res elapsed_ms"
my $config = <<"CONF";
location = /call {
    content_by_lua_block {
        local args = ngx.req.get_uri_args()
        local opts = args.rt_timeout and {timeout = tonumber(args.rt_timeout)}
        local rt = assert(ngx.load_ffi("$silent", args.cfg or "", opts))
        ngx.update_time()
        local t0 = ngx.now()
        local ok, res = rt:call("req:" .. (args.i or "0"),
                                tonumber(args.t))
        ngx.update_time()
        ngx.say(tostring(ok), " ", type(res) == "string" and #res > 64
                and ("<" .. #res .. " bytes>") or tostring(res), " ",
                math.floor((ngx.now() - t0) * 1000))
    }
}
location = /loop {
    content_by_lua_block {
        -- n calls in a row, each answered only once the next one came,
        -- so each times out first; "flush" brings the last late answer
        local rt = assert(ngx.load_ffi("$silent", "late=next"))
        local n, timeouts = tonumber(ngx.var.arg_n), 0
        for i = 1, n do
            local ok, res = rt:call("loop:" .. i, 0.03)
            if not ok and res == "timeout" then
                timeouts = timeouts + 1
            end
        end
        local ok = rt:call("flush")
        ngx.say(timeouts, " of ", n, " timed out, flush ", tostring(ok))
    }
}
location = /pid { content_by_lua_block { ngx.say(ngx.worker.pid()) } }
CONF

my %sections = (
    workers => 1, config => $config,
    http_config => "ffi_exit_timeout 1s;",
);

sub call {
    my ($query) = @_;
    my ($status, $body) = FFITest::http('GET', "/call?$query");
    my ($ok, $res, $ms) = ($body // '') =~ /^(\S+) (.*) (\d+)\n\z/
        or return ("bad answer: " . ($body // 'none'), '', -1);
    return ($ok, $res, $ms);
}

FFITest::start_nginx(%sections);

# --- the runtime's own timeout
my ($ok, $res, $ms) = call('rt_timeout=0.3&cfg=a&i=1');
is("$ok $res", 'false timeout', 'per-runtime timeout: false, "timeout"');
cmp_ok($ms, '>=', 290, "per-runtime timeout: not before 0.3 s ($ms ms)");
# "soon": 0.7 s for a loaded machine (scaled under ASan, as deadlines are)
cmp_ok($ms, '<', 300 + FFITest::deadline(700),
       "per-runtime timeout: soon after 0.3 s ($ms ms)");
ok(FFITest::wait_for_log('mb_silent took req:1'), 'the runtime took it');

# --- a call's own timeout, on a runtime without one
($ok, $res, $ms) = call('cfg=b&i=2&t=0.2');
is("$ok $res", 'false timeout', 'per-call timeout: false, "timeout"');
cmp_ok($ms, '>=', 190, "per-call timeout: not before 0.2 s ($ms ms)");
cmp_ok($ms, '<', 200 + FFITest::deadline(700),
       "per-call timeout: soon after 0.2 s ($ms ms)");

# --- a call's timeout beats the runtime's, shorter or longer (the shorter
# one against a runtime's 30 s, so that a loaded machine's delay cannot
# pass for the runtime's timeout: the client gives up after 10 s)
($ok, $res, $ms) = call('rt_timeout=30&cfg=long&i=3&t=0.05');
is("$ok $res", 'false timeout', 'shorter per-call timeout wins');
cmp_ok($ms, '<', 10000, "shorter per-call timeout: $ms ms, not 30 s");
($ok, $res, $ms) = call('rt_timeout=0.3&cfg=a&i=4&t=0.6');
is("$ok $res", 'false timeout', 'longer per-call timeout wins');
cmp_ok($ms, '>=', 590, "longer per-call timeout: $ms ms");

# --- many at once
my @res = FFITest::concurrent(50, 'GET', sub { "/call?cfg=b&t=0.2&i=c$_[0]" });
my %seen;
$seen{ ($_->[1] // 'none') =~ /^(false timeout) \d+\n\z/ ? $1 : $_->[1] }++
    for @res;
is_deeply(\%seen, { 'false timeout' => 50 }, '50 concurrent calls time out');

# --- late answers: the caller is gone by then, the 1 MiB answer is freed
# (2 s after a 0.1 s timeout: a worker that a loaded machine holds up a
# while still times out first)
($ok, $res, $ms) = call('rt_timeout=0.1&cfg=late=2000&i=5');
is("$ok $res", 'false timeout', 'late runtime: the call timed out');
ok(FFITest::wait_for_log('mb_silent answered req:5 late, after 2000 ms'),
   'the late answer came');
($ok, $res) = call('rt_timeout=0.1&cfg=late=2000&i=6&t=0');
is("$ok $res", 'true <1048576 bytes>',
   'timeout 0 waits: the late answer is delivered whole');

# RSS does not keep the late answers: 150 x 1 MiB, one at a time
my ($pid) = workers(1);
my ($st, $body) = FFITest::http('GET', '/loop?n=20');
is($body, "20 of 20 timed out, flush true\n", 'warm-up: 20 late answers');
ok(FFITest::wait_for_log(qr/answered loop:20 late/), 'warm-up answered');
my $before = footprint($pid);
($st, $body) = FFITest::http('GET', '/loop?n=150', undef, undef, 30);
is($body, "150 of 150 timed out, flush true\n", '150 calls timed out');
ok(FFITest::wait_for_log(qr/answered loop:150 late/),
   'the last late answer came');
my $after = footprint($pid);
note("worker $pid rss $before->{rss} kB -> $after->{rss} kB");
cmp_ok($after->{rss} - $before->{rss}, '<', 40 * 1024,
       '150 MiB of late answers were freed (RSS grew < 40 MiB)');
is($after->{fds}, $before->{fds}, 'open files flat');

(undef, $body) = FFITest::http('GET', '/pid');
is($body, "$pid\n", 'the worker serves on');

# --- quit with calls the runtime never answers: bounded by ffi_exit_timeout
my $conns = FFITest::begin_requests(5, 'GET', sub { "/call?cfg=b&i=q$_[0]" });
ok(FFITest::wait_for_log(qr/mb_silent took req:q4/), 'calls left waiting');
my $master = FFITest::master_pid();
my @quitting = FFITest::worker_pids();
my $t0 = time;
FFITest::signal('QUIT');
# up to the worker's "exit": under ASan, LeakSanitizer's scan follows
ok(FFITest::wait_at_exit(\@quitting, 6), 'the worker is at its exit');
my $secs = time - $t0;
ok(FFITest::wait_exit($master, 6), 'nginx quit');
# (the slack is for a loaded machine and the ASan build; an exit that
# waited for the calls would never end)
cmp_ok($secs, '<', 1 + 4, sprintf('within ffi_exit_timeout 1s + 4s (%.1f s)',
                                   $secs));
my %quit;
$quit{ ($_->[1] // 'none') =~ /^(\S+ [^\d]+) \d+\n\z/ ? $1 : $_->[1] }++
    for FFITest::finish_requests($conns, 5);
is_deeply(\%quit, { 'false worker exiting' => 5 },
          'the callers got false, "worker exiting"');
FFITest::stop_nginx('never answers');
like(FFITest::error_log(), qr/calls still in flight after \d+ ms of shutdown/,
     'error.log says it gave up on the calls');

done_testing();
