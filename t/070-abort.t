# Calls whose caller is gone before the answer: a client that closes the
# connection, a killed ngx.thread, a request that ends without waiting.
# The late answer must be dropped (no crash, no alert) and the worker serve on.
use lib 't/lib';
use FFITest;

my $config = <<'CONF';
location = /park {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("ffi_test", "trace"))
        local ok, res = rt:call("park:" .. ngx.var.arg_gate .. ":late answer")
        ngx.log(ngx.WARN, "park call returned: ", tostring(ok), " ",
                tostring(res))
        ngx.say(tostring(ok), " ", tostring(res))
    }
}
location = /release {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("ffi_test", "trace"))
        local ok, res = rt:call("release:" .. ngx.var.arg_gate)
        ngx.say(tostring(ok), " ", tostring(res))
    }
}
location = /echo {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("ffi_test", "trace"))
        local ok, res = rt:call("echo:" .. ngx.var.arg_v)
        ngx.say(tostring(ok), " ", tostring(res))
    }
}
location = /orphan {
    content_by_lua_block {
        -- the request ends (ngx.exit kills its light threads) while the
        -- thread's call is still in the runtime
        local rt = assert(ngx.load_ffi("ffi_test", "trace"))
        ngx.thread.spawn(function()
            local ok, res = rt:call("park:" .. ngx.var.arg_gate .. ":orphaned")
            ngx.log(ngx.ERR, "orphaned thread resumed: ", tostring(res))
        end)
        ngx.say("leaving")
        ngx.exit(200)
    }
}
CONF

# A client closes its connection while its call is parked in the runtime,
# then the answer comes: once with lua_check_client_abort off (the handler
# resumes and writes to a closed socket), once on (the request is gone).
for my $check ('off', 'on') {
    my $gate = "abort_$check";
    FFITest::start_nginx(config => "lua_check_client_abort $check;\n$config");

    my $conns = FFITest::begin_requests(1, 'GET', "/park?gate=$gate");
    ok(FFITest::wait_for_log("parked park:$gate:late answer"),
       "check_client_abort $check: call parked");
    FFITest::close_requests($conns);

    if ($check eq 'on') {
        ok(FFITest::wait_for_log(qr/client prematurely closed connection/),
           'nginx saw the client go');
    }

    my ($status, $body) = FFITest::http('GET', "/release?gate=$gate");
    is($body, "true released 1\n", "check_client_abort $check: released");
    ok(FFITest::wait_for_log("answered park:$gate:late answer"),
       "check_client_abort $check: late answer given");

    if ($check eq 'off') {
        ok(FFITest::wait_for_log('park call returned: true late answer'),
           'the handler resumed with the late answer');
    }

    ($status, $body) = FFITest::http('GET', '/echo?v=next');
    is($body, "true next\n", "check_client_abort $check: worker serves on");

    FFITest::stop_nginx("client abort (check_client_abort $check)");
    unlike(FFITest::error_log(), qr/park call returned/,
           'the aborted handler never resumed') if $check eq 'on';
}

# A request that exits while a light thread waits on a call
FFITest::start_nginx(config => $config);
my ($status, $body) = FFITest::http('GET', '/orphan?gate=orph');
is($body, "leaving\n", 'request ended with its thread still waiting');
ok(FFITest::wait_for_log('parked park:orph:orphaned'), 'call is parked');
($status, $body) = FFITest::http('GET', '/release?gate=orph');
is($body, "true released 1\n", 'released');
ok(FFITest::wait_for_log('answered park:orph:orphaned'), 'late answer given');
($status, $body) = FFITest::http('GET', '/echo?v=after-orphan');
is($body, "true after-orphan\n", 'worker serves on');
FFITest::stop_nginx('request ended with a thread waiting');
unlike(FFITest::error_log(), qr/orphaned thread resumed/,
       'the killed thread never resumed');

run_tests();

__DATA__

=== TEST 1: ngx.thread.kill on a thread waiting for a call
--- config
location = /t {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("ffi_test", "trace"))
        local t = ngx.thread.spawn(function()
            local ok, res = rt:call("park:kill1:too late")
            ngx.log(ngx.ERR, "killed thread resumed: ", tostring(res))
        end)
        local ok, err = ngx.thread.kill(t)
        ngx.say("kill: ", ok and "done" or tostring(err))
        -- the release is answered after the parked call (same poller), so
        -- the late answer has reached nginx before this call returns
        local ok, res = rt:call("release:kill1")
        ngx.say(tostring(ok), " ", tostring(res))
        ok, res = rt:call("echo:after kill")
        ngx.say(tostring(ok), " ", tostring(res))
    }
}
--- request
GET /t
--- response_body
kill: done
true released 1
true after kill
--- error_log
answered park:kill1:too late
--- no_error_log
killed thread resumed
[error]



=== TEST 2: several killed threads, then the same runtime again
--- config
location = /t {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("ffi_test", "threads=3"))
        local killed = 0
        for i = 1, 50 do
            local t = ngx.thread.spawn(function()
                return rt:call("sleep:" .. (i % 5) * 10 .. ":" .. i)
            end)
            if ngx.thread.kill(t) then
                killed = killed + 1
            end
        end
        ngx.say("killed: ", killed)
        local bad = 0
        for i = 1, 50 do
            local ok, res = rt:call("sleep:" .. (i % 5) * 10 .. ":" .. i)
            if not ok or res ~= tostring(i) then
                bad = bad + 1
            end
        end
        ngx.say("bad: ", bad)
    }
}
--- request
GET /t
--- response_body
killed: 50
bad: 0



=== TEST 3: a client that gives up (--- abort) while a call sleeps
--- config
location = /t {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("ffi_test", "trace"))
        local ok, res = rt:call("sleep:1000:slept")
        ngx.say(tostring(ok), " ", tostring(res))
    }
}
--- request
GET /t
--- timeout: 0.2
--- abort
--- wait_for_log
answered sleep:1000:slept
