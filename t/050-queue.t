# opts.max_queue: a full queue refuses calls with false, "queue full" at
# once, and accepts again once the runtime took its tasks. The runtime's
# poller is held at a gate, so the queue fills deterministically.
use lib 't/lib';
use FFITest;

run_tests();

# the queue belongs to the runtime, not to the request that filled it
my $config = <<'CONF';
location = /fill {
    content_by_lua_block {
        local held = assert(ngx.load_ffi("ffi_test", "hold=q3", {max_queue = 2}))
        local t1 = ngx.thread.spawn(function() return held:call("echo:a") end)
        local t2 = ngx.thread.spawn(function() return held:call("echo:b") end)
        ngx.log(ngx.WARN, "queue q3 filled")
        local _, ok1, r1 = ngx.thread.wait(t1)
        local _, ok2, r2 = ngx.thread.wait(t2)
        ngx.say(tostring(ok1), " ", r1, " ", tostring(ok2), " ", r2)
    }
}
location = /try {
    content_by_lua_block {
        local held = assert(ngx.load_ffi("ffi_test", "hold=q3", {max_queue = 2}))
        local ok, res = held:call("echo:c")
        ngx.say(tostring(ok), " ", res)
    }
}
location = /release {
    content_by_lua_block {
        local ok, res = ngx.load_ffi("ffi_test"):call("release:q3")
        ngx.say(tostring(ok), " ", res)
    }
}
CONF

FFITest::start_nginx(config => $config);
my $fill = FFITest::begin_requests(1, 'GET', '/fill');
ok(FFITest::wait_for_log('queue q3 filled'), 'queue filled by /fill');
my ($status, $body) = FFITest::http('GET', '/try');
is($body, "false queue full\n", 'another request is refused');
($status, $body) = FFITest::http('GET', '/release');
is($body, "true released 0\n", 'gate opened');
my ($res) = FFITest::finish_requests($fill);
is($res->[1], "true a true b\n", 'the queued calls were answered');
($status, $body) = FFITest::http('GET', '/try');
is($body, "true c\n", 'the queue accepts again');
FFITest::stop_nginx('queue shared by requests');

__DATA__

=== TEST 1: max_queue = 3: three calls wait, the fourth is refused
--- config
location = /t {
    content_by_lua_block {
        local held = assert(ngx.load_ffi("ffi_test", "hold=q1,trace",
                                         {max_queue = 3}))
        local ctl = assert(ngx.load_ffi("ffi_test"))
        local threads = {}
        for i = 1, 3 do
            threads[i] = ngx.thread.spawn(function()
                return held:call("echo:" .. i)
            end)
        end
        local ok, err = held:call("echo:4")
        ngx.say("4th: ", tostring(ok), " ", tostring(err))
        ok, err = held:call("echo:5")
        ngx.say("5th: ", tostring(ok), " ", tostring(err))

        -- other runtimes of the library are not affected
        ok, err = ctl:call("echo:other runtime")
        ngx.say("ctl: ", tostring(ok), " ", tostring(err))

        ok, err = ctl:call("release:q1")
        ngx.say("release: ", tostring(ok), " ", tostring(err))
        for i = 1, 3 do
            local w, ok, res = ngx.thread.wait(threads[i])
            ngx.say(i, ": ", tostring(w), " ", tostring(ok), " ", tostring(res))
        end

        ok, err = held:call("echo:6")
        ngx.say("after: ", tostring(ok), " ", tostring(err))
    }
}
--- request
GET /t
--- response_body
4th: false queue full
5th: false queue full
ctl: true other runtime
release: true released 0
1: true true 1
2: true true 2
3: true true 3
after: true 6
--- no_error_log
got echo:4
got echo:5
[error]



=== TEST 2: max_queue = 1
--- config
location = /t {
    content_by_lua_block {
        local held = assert(ngx.load_ffi("ffi_test", "hold=q2", {max_queue = 1}))
        local ctl = assert(ngx.load_ffi("ffi_test"))
        local t = ngx.thread.spawn(function() return held:call("echo:first") end)
        ngx.say("2nd: ", tostring(select(2, held:call("echo:second"))))
        ctl:call("release:q2")
        local _, ok, res = ngx.thread.wait(t)
        ngx.say("1st: ", tostring(ok), " ", tostring(res))
    }
}
--- request
GET /t
--- response_body
2nd: queue full
1st: true first

