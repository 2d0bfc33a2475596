# rt:__unload(): the runtime gets its NULL task after the pending calls,
# drains them, joins its threads; later calls give false, "runtime unloaded".
use lib 't/lib';
use FFITest;

run_tests();

__DATA__

=== TEST 1: calls after __unload are refused; the runtime's threads are joined
--- config
location = /t {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("ffi_test", "u1,threads=3"))
        local ok, res = rt:call("echo:before")
        ngx.say("before: ", tostring(ok), " ", tostring(res))
        rt:__unload()
        ok, res = rt:call("echo:after")
        ngx.say("after: ", tostring(ok), " ", tostring(res))
        ok, res = rt:call(nil)
        ngx.say("nil after: ", tostring(ok), " ", tostring(res))
        -- unloading twice is harmless
        rt:__unload()
        ok, res = rt:call("echo:again")
        ngx.say("again: ", tostring(ok), " ", tostring(res))
    }
}
--- request
GET /t
--- response_body
before: true before
after: false runtime unloaded
nil after: false runtime unloaded
again: false runtime unloaded
--- wait_for_log
runtime unloaded cfg=u1,threads=3 threads_joined=3
--- no_error_log
[error]



=== TEST 2: pending calls are answered before the NULL task (drain)
--- config
location = /t {
    content_by_lua_block {
        -- the poller is held: both calls are still queued when __unload
        -- appends the NULL task behind them
        local rt = assert(ngx.load_ffi("ffi_test", "hold=d2,trace"))
        local t1 = ngx.thread.spawn(function() return rt:call("echo:one") end)
        local t2 = ngx.thread.spawn(function() return rt:call("sleep:50:two") end)
        rt:__unload()
        local ok, err = rt:call("echo:three")
        ngx.say("three: ", tostring(ok), " ", tostring(err))
        ngx.load_ffi("ffi_test"):call("release:d2")
        local _, ok1, r1 = ngx.thread.wait(t1)
        local _, ok2, r2 = ngx.thread.wait(t2)
        ngx.say("one: ", tostring(ok1), " ", tostring(r1))
        ngx.say("two: ", tostring(ok2), " ", tostring(r2))
    }
}
--- request
GET /t
--- response_body
three: false runtime unloaded
one: true one
two: true two
--- wait_for_log
runtime unloaded cfg=hold=d2,trace threads_joined=1
--- no_error_log
got echo:three



=== TEST 3: a parked call is answered when its runtime unloads
--- config
location = /t {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("ffi_test", "u3"))
        local t = ngx.thread.spawn(function() return rt:call("park:never:drained") end)
        rt:__unload()
        local _, ok, res = ngx.thread.wait(t)
        ngx.say(tostring(ok), " ", tostring(res))
    }
}
--- request
GET /t
--- response_body
true drained
--- wait_for_log
runtime unloaded cfg=u3



=== TEST 4: unloading one runtime leaves the others of the library serving
--- config
location = /t {
    content_by_lua_block {
        local a = assert(ngx.load_ffi("ffi_test", "keep"))
        local b = assert(ngx.load_ffi("ffi_test", "drop"))
        b:__unload()
        local ok, res = a:call("cfg")
        ngx.say("keep: ", tostring(ok), " ", tostring(res))
        ok, res = b:call("cfg")
        ngx.say("drop: ", tostring(ok), " ", tostring(res))
    }
}
--- request
GET /t
--- response_body
keep: true keep
drop: false runtime unloaded
--- wait_for_log
runtime unloaded cfg=drop



=== TEST 5: load_ffi after __unload gives a fresh, working runtime
--- config
location = /t {
    content_by_lua_block {
        local old = assert(ngx.load_ffi("ffi_test", "reborn"))
        old:__unload()
        local new, err = ngx.load_ffi("ffi_test", "reborn")
        if not new then
            ngx.say("load failed: ", tostring(err))
            return
        end
        local ok, res = new:call("cfg")
        ngx.say("new: ", tostring(ok), " ", tostring(res))
        ok, res = old:call("cfg")
        ngx.say("old: ", tostring(ok), " ", tostring(res))
    }
}
--- request
GET /t
--- response_body
new: true reborn
old: false runtime unloaded
