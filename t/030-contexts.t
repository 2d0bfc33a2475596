# Where rt:call() may run: every yieldable context answers; every context
# that cannot yield gets false, "cannot yield in the context of <ctx>" and
# the runtime never sees the call.
use lib 't/lib';
use FFITest;

run_tests();

__DATA__

=== TEST 1: rewrite_by_lua and access_by_lua
--- config
location = /t {
    rewrite_by_lua_block {
        local rt = assert(ngx.load_ffi("ffi_test"))
        local ok, res = rt:call("echo:from rewrite")
        ngx.ctx.rewrite = tostring(ok) .. " " .. tostring(res)
    }
    access_by_lua_block {
        local rt = assert(ngx.load_ffi("ffi_test"))
        local ok, res = rt:call("echo:from access")
        ngx.ctx.access = tostring(ok) .. " " .. tostring(res)
    }
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("ffi_test"))
        local ok, res = rt:call("echo:from content")
        ngx.say(ngx.ctx.rewrite)
        ngx.say(ngx.ctx.access)
        ngx.say(tostring(ok), " ", tostring(res))
    }
}
--- request
GET /t
--- response_body
true from rewrite
true from access
true from content
--- no_error_log
[error]



=== TEST 2: server_rewrite_by_lua
--- config
server_rewrite_by_lua_block {
    local rt = assert(ngx.load_ffi("ffi_test"))
    local ok, res = rt:call("echo:from server rewrite")
    ngx.ctx.srv = tostring(ok) .. " " .. tostring(res)
}
location = /t {
    content_by_lua_block { ngx.say(ngx.ctx.srv) }
}
--- request
GET /t
--- response_body
true from server rewrite



=== TEST 3: an ngx.timer callback
--- config
location = /t {
    content_by_lua_block {
        local sema = require("ngx.semaphore").new()
        local out
        local ok, err = ngx.timer.at(0, function(premature)
            local rt = assert(ngx.load_ffi("ffi_test"))
            local ok, res = rt:call("echo:from timer")
            out = tostring(ok) .. " " .. tostring(res)
            sema:post(1)
        end)
        assert(ok, err)
        assert(sema:wait(10))
        ngx.say(out)
    }
}
--- request
GET /t
--- response_body
true from timer



=== TEST 4: ngx.thread, and a call does not block the worker
--- config
location = /t {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("ffi_test"))
        -- the first call can only be answered once the second one ran:
        -- a blocking call would never get there
        local parked = ngx.thread.spawn(function()
            return rt:call("park:ctx4:answered after release")
        end)
        local releaser = ngx.thread.spawn(function()
            return rt:call("release:ctx4")
        end)
        local w1, ok1, res1 = ngx.thread.wait(parked)
        local w2, ok2, res2 = ngx.thread.wait(releaser)
        ngx.say(tostring(w1), " ", tostring(ok1), " ", tostring(res1))
        ngx.say(tostring(w2), " ", tostring(ok2), " ", tostring(res2))
    }
}
--- request
GET /t
--- response_body
true true answered after release
true true released 1



=== TEST 5: coroutine.wrap and coroutine.resume inside content_by_lua
--- config
location = /t {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("ffi_test"))
        local gen = coroutine.wrap(function(a, b)
            local _, r1 = rt:call("echo:" .. a)
            coroutine.yield(r1)
            local _, r2 = rt:call("echo:" .. b)
            coroutine.yield(r2)
            return "done"
        end)
        ngx.say(gen("first", "second"))
        ngx.say(gen())
        ngx.say(gen())

        local co = coroutine.create(function(x)
            local ok, res = rt:call("echo:" .. x)
            local y = coroutine.yield(ok, res)
            return rt:call("echo:" .. y)
        end)
        ngx.say(select(2, coroutine.resume(co, "in co")))
        local _, ok, res = coroutine.resume(co, "resumed")
        ngx.say(tostring(ok), " ", res, " ", coroutine.status(co))
    }
}
--- request
GET /t
--- response_body
first
second
done
truein co
true resumed dead



=== TEST 6: header_filter_by_lua cannot yield
--- config
location = /t {
    content_by_lua_block { ngx.say("body") }
    header_filter_by_lua_block {
        local rt = assert(ngx.load_ffi("ffi_test", "trace"))
        local ok, err = rt:call("echo:from header filter")
        ngx.header["X-Result"] = tostring(ok) .. "|" .. tostring(err)
    }
}
--- request
GET /t
--- response_headers
X-Result: false|cannot yield in the context of header_filter_by_lua*
--- response_body
body
--- no_error_log
got echo:from header filter



=== TEST 7: body_filter_by_lua cannot yield
--- config
location = /t {
    content_by_lua_block { ngx.say("body") }
    body_filter_by_lua_block {
        if ngx.arg[2] then
            local rt = assert(ngx.load_ffi("ffi_test", "trace"))
            local ok, err = rt:call("echo:from body filter")
            ngx.arg[1] = (ngx.arg[1] or "") .. tostring(ok) .. "|"
                         .. tostring(err) .. "\n"
        end
    }
}
--- request
GET /t
--- response_body
body
false|cannot yield in the context of body_filter_by_lua*
--- no_error_log
got echo:from body filter



=== TEST 8: log_by_lua cannot yield
--- config
location = /t {
    content_by_lua_block { ngx.say("body") }
    log_by_lua_block {
        local rt = assert(ngx.load_ffi("ffi_test", "trace"))
        local ok, err = rt:call("echo:from log")
        ngx.log(ngx.WARN, "log phase: ", tostring(ok), "|", tostring(err))
    }
}
--- request
GET /t
--- response_body
body
--- error_log
log phase: false|cannot yield in the context of log_by_lua*
--- no_error_log
got echo:from log



=== TEST 9: init_worker_by_lua cannot yield (but loads)
--- init_worker_by_lua_block
local rt, err = ngx.load_ffi("ffi_test", "trace")
local ok, e = rt:call("echo:from init worker")
ngx.log(ngx.WARN, "init_worker: ", tostring(ok), "|", tostring(e))
--- config
location = /t {
    content_by_lua_block {
        -- the same runtime still serves once we can yield
        local ok, res = ngx.load_ffi("ffi_test", "trace"):call("echo:later")
        ngx.say(tostring(ok), " ", res)
    }
}
--- request
GET /t
--- response_body
true later
--- error_log
init_worker: false|cannot yield in the context of init_worker_by_lua*
--- no_error_log
got echo:from init worker



=== TEST 10: set_by_lua cannot yield
--- config
location = /t {
    set_by_lua_block $result {
        local rt = assert(ngx.load_ffi("ffi_test", "trace"))
        local ok, err = rt:call("echo:from set")
        return tostring(ok) .. "|" .. tostring(err)
    }
    content_by_lua_block { ngx.say(ngx.var.result) }
}
--- request
GET /t
--- response_body
false|cannot yield in the context of set_by_lua*
--- no_error_log
got echo:from set



=== TEST 11: exit_worker_by_lua cannot yield, and the worker still exits
--- http_config
exit_worker_by_lua_block {
    local rt = ngx.load_ffi("ffi_test", "trace")
    local ok, err = rt:call("echo:from exit worker")
    ngx.log(ngx.WARN, "exit_worker: ", tostring(ok), "|", tostring(err))
}
--- config
location = /t {
    content_by_lua_block {
        local ok, res = ngx.load_ffi("ffi_test", "trace"):call("echo:alive")
        ngx.say(tostring(ok), " ", res)
    }
}
--- request
GET /t
--- response_body
true alive
--- error_log
exit_worker: false|cannot yield in the context of exit_worker_by_lua*
--- no_error_log
got echo:from exit worker



=== TEST 12: a non-yieldable call leaves the request and worker healthy
--- config
location = /t {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("ffi_test"))
        local ok, res = rt:call("echo:" .. ngx.var.arg_n)
        ngx.say(tostring(ok), " ", res)
    }
    header_filter_by_lua_block {
        local rt = assert(ngx.load_ffi("ffi_test"))
        for i = 1, 100 do rt:call("echo:hf") end
    }
    log_by_lua_block {
        local rt = assert(ngx.load_ffi("ffi_test"))
        for i = 1, 100 do rt:call("echo:log") end
    }
}
--- pipelined_requests eval
["GET /t?n=1", "GET /t?n=2", "GET /t?n=3"]
--- response_body eval
["true 1\n", "true 2\n", "true 3\n"]
