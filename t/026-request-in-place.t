# Requests of 16 KB and more are read in place: the runtime gets the Lua
# string's own bytes (NUL-terminated by LuaJIT), no copy. The string stays
# alive until the runtime answered, also when Lua stopped waiting (timeout,
# thread killed, client gone) and the garbage collector ran in between: the
# runtime (libffi_hold) checks every byte when it lets the request go. A
# per-request VM (lua_code_cache off) ends with its request: copied there.
use lib 't/lib';
use FFITest;

our $init = <<'LUA';
local ffi = require "ffi"
local n = 0

-- a request of len bytes starting with what, held by nobody else
function fresh(what, len)
    n = n + 1
    local id = string.format("%08d", n)
    return what .. string.rep(string.char(65 + n % 26), len - #what - 8) .. id
end

-- frees what is garbage and fills the memory with other bytes
function pressure(len)
    collectgarbage("collect")
    collectgarbage("collect")
    local keep = {}
    for i = 1, 64 do
        keep[i] = string.rep(string.char(97 + i % 26), len - 8)
                  .. string.format("%08d", i)
    end
    collectgarbage("collect")
    return keep
end

function address(s)
    local p = ffi.cast("intptr_t", ffi.cast("const char *", s))
    return string.format("%.0f", tonumber(p))
end
LUA

run_tests();

__DATA__

=== TEST 1: large requests read as C strings: exactly the request, NUL after
--- init_by_lua_block eval: $::init
--- config
location = /t {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("ffi_cstring"))
        for _, len in ipairs({16383, 16384, 16385, 100000, 1048576, 5}) do
            local req = fresh("c", len)
            local ok, res = rt:call(req)
            ngx.say(len, " ", tostring(ok), " ",
                    res == #req .. ":" .. req and "same" or "differs")
        end
    }
}
--- request
GET /t
--- response_body
16383 true same
16384 true same
16385 true same
100000 true same
1048576 true same
5 true same
--- no_error_log
[error]



=== TEST 2: below 16 KB the runtime reads a copy, from 16 KB on the string
--- init_by_lua_block eval: $::init
--- config
location = /t {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("ffi_hold"))
        for _, len in ipairs({100, 16383, 16384, 100000}) do
            local req = fresh("addr", len)
            local ok, res = rt:call(req)
            ngx.say(len, " ", tostring(ok), " ",
                    res == address(req) and "in place" or "copied")
        end
    }
}
--- request
GET /t
--- response_body
100 true copied
16383 true copied
16384 true in place
100000 true in place
--- no_error_log
[error]



=== TEST 3: a call that timed out: its request outlives Lua's interest
--- init_by_lua_block eval: $::init
--- config
location = /t {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("ffi_hold"))
        local function orphan()
            return rt:call(fresh("hold", 100000), 0.01)
        end
        ngx.say(select(2, orphan()))
        local keep = pressure(100000)
        ngx.say(select(2, rt:call("release")))
        ngx.say(#keep)
    }
}
--- request
GET /t
--- response_body
timeout
1 intact 0 changed
64
--- no_error_log
[error]



=== TEST 4: a thread killed while its call is in flight
--- init_by_lua_block eval: $::init
--- config
location = /t {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("ffi_hold"))
        local threads = {}
        for i = 1, 3 do
            threads[i] = ngx.thread.spawn(function()
                return rt:call(fresh("hold", 100000 + i))
            end)
        end
        for i = 1, 3 do
            assert(ngx.thread.kill(threads[i]))
        end
        threads = nil
        local keep = pressure(100001)
        ngx.say(select(2, rt:call("release")))
        ngx.say(#keep)
    }
}
--- request
GET /t
--- response_body
3 intact 0 changed
64
--- no_error_log
[error]



=== TEST 5: a garbage collection while the caller still waits
--- init_by_lua_block eval: $::init
--- config
location = /t {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("ffi_hold"))
        local t = ngx.thread.spawn(function()
            return rt:call(fresh("hold", 200000))
        end)
        local keep = pressure(200000)
        ngx.say(select(2, rt:call("release")))
        local _, ok, res = ngx.thread.wait(t)
        ngx.say(tostring(ok), " ", res)
        ngx.say(#keep)
    }
}
--- request
GET /t
--- response_body
1 intact 0 changed
true late
64
--- no_error_log
[error]



=== TEST 6: the client gone: the request's coroutine ends, the call goes on
--- init_by_lua_block eval: $::init
--- http_config
lua_check_client_abort on;
--- config
location = /t {
    content_by_lua_block {
        -- no upvalues of a killed coroutine in the timer: they read nil
        gone = false

        -- after the request ended: the memory of its garbage reused
        assert(ngx.timer.at(0, function()
            for _ = 1, 1000 do
                if gone then
                    break
                end
                ngx.sleep(0.01)
            end
            local keep = pressure(100000)
            local rt = assert(ngx.load_ffi("ffi_hold"))
            ngx.log(ngx.WARN, "gone: ", tostring(gone), ", ",
                    select(2, rt:call("release")), ", ", #keep)
        end))

        assert(ngx.on_abort(function()
            gone = true
            ngx.exit(499)
        end))

        local rt = assert(ngx.load_ffi("ffi_hold"))
        rt:call(fresh("hold", 100000))
    }
}
--- request
GET /t
--- abort
--- timeout: 0.5
--- wait_for_log
gone: true, 1 intact 0 changed, 64
--- no_error_log
[error]



=== TEST 7: lua_code_cache off: a VM per request, so large requests are copied
--- config
location = /t {
    lua_code_cache off;
    content_by_lua_block {
        local ffi = require "ffi"
        local rt = assert(ngx.load_ffi("ffi_hold"))
        local req = "addr" .. string.rep("o", 100000)
        local ok, res = rt:call(req)
        local p = ffi.cast("intptr_t", ffi.cast("const char *", req))
        ngx.say(tostring(ok), " ",
                res == string.format("%.0f", tonumber(p)) and "in place"
                or "copied")
        -- held past this request: its VM closes before the late answer
        ngx.say(select(2, rt:call("hold" .. string.rep("h", 100000), 0.01)))
        collectgarbage("collect")
        ngx.say(select(2, rt:call("release")))
    }
}
--- request
GET /t
--- response_body
true copied
timeout
1 intact 0 changed
--- no_error_log
[error]
