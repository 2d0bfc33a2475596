# A poller that sleeps is woken once for all the calls one event-loop cycle
# posts, after the cycle posted them: it then takes them in one poll. Before,
# the first call's futex wake ran it while the cycle was still posting, one
# wake and one poll a call. Counted, not timed: the "batch" runtime answers
# how many tasks the poll that took the call took. ffi_queue_spin_us 0 so
# that the poller sleeps at once, and the burst waits until every thread
# of the worker sleeps (the poller in its condition wait).
use lib 't/lib';
use FFITest;
use Test::More;

my $config = <<'CONF';
location = /warm {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("ffi_test", "batch"))
        local ok, res = rt:call("batch")
        ngx.say(tostring(ok), " ", res)
    }
}
location = /burst {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("ffi_test", "batch"))
        local threads = {}
        for i = 1, 32 do
            threads[i] = ngx.thread.spawn(function()
                return rt:call("batch")
            end)
        end
        local seen = {}
        for i = 1, 32 do
            local _, ok, res = ngx.thread.wait(threads[i])
            seen[#seen + 1] = tostring(ok) .. " " .. tostring(res)
        end
        ngx.say(table.concat(seen, ","))
    }
}
location = /many {
    content_by_lua_block {
        local cfg = ngx.var.arg_cfg
        local rt = assert(ngx.load_ffi("ffi_test", cfg))
        local threads = {}
        for i = 1, 64 do
            threads[i] = ngx.thread.spawn(function()
                return rt:call("echo:m" .. i)
            end)
        end
        local bad = 0
        for i = 1, 64 do
            local _, ok, res = ngx.thread.wait(threads[i])
            if not ok or res ~= "m" .. i then
                bad = bad + 1
            end
        end
        ngx.say("answered ", 64 - bad, " of 64")
    }
}
CONF


FFITest::start_nginx(config => $config,
                     http_config => 'ffi_queue_spin_us 0;');

my ($status, $body) = FFITest::http('GET', '/warm');
is($body, "true 1\n", 'a lone call is a poll of one');

for my $round (1 .. 3) {
    ok(FFITest::wait_threads_asleep(3), "round $round: the poller sleeps");
    ($status, $body) = FFITest::http('GET', '/burst');
    is($body, join(',', ('true 32') x 32) . "\n",
       "round $round: 32 calls of one cycle, taken in one poll");
}

# several pollers asleep: as many wakes as tasks, at most one a poller, and
# no task left behind, with task_poll or task_poll_batch
for my $cfg ('threads=4', 'threads=4,batch', 'threads=64') {
    ok(FFITest::wait_threads_asleep(3), "$cfg: the pollers sleep");
    ($status, $body) = FFITest::http('GET', "/many?cfg=$cfg");
    is($body, "answered 64 of 64\n", "$cfg: every call answered");
}

FFITest::stop_nginx('queue wakes');

done_testing();
