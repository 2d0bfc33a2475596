# Every request buffer ends with a NUL that len does not count, as upstream:
# a runtime that reads the request as a C string (get_req(task, NULL), then
# strlen/strdup) sees exactly the request, also when a longer one used the
# same task's buffer before it. A nil request is NULL.
use lib 't/lib';
use FFITest;

run_tests();

__DATA__

=== TEST 1: a short request after longer ones, read as a C string
--- config
location = /t {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("ffi_cstring"))
        for _, req in ipairs({string.rep("x", 1000), "abc", "", "d",
                              string.rep("y", 64), "e"}) do
            local ok, res = rt:call(req)
            ngx.say(tostring(ok), " ", #res > 40 and #res .. " bytes"
                                       or res)
        end
        ngx.say(tostring(rt:call(nil)), " ", select(2, rt:call(nil)))
    }
}
--- request
GET /t
--- response_body
true 1005 bytes
true 3:abc
true 0:
true 1:d
true 67 bytes
true 1:e
true nil
--- no_error_log
[error]



=== TEST 2: 200 calls at once, then shorter ones on the same tasks
--- config
location = /t {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("ffi_cstring"))
        local function run(len)
            local threads = {}
            for i = 1, 200 do
                threads[i] = ngx.thread.spawn(function()
                    return rt:call(string.rep(string.char(96 + i % 26),
                                              len + i % 7))
                end)
            end
            local wrong = 0
            for i = 1, 200 do
                local _, ok, res = ngx.thread.wait(threads[i])
                local req = string.rep(string.char(96 + i % 26), len + i % 7)
                if res ~= #req .. ":" .. req then wrong = wrong + 1 end
            end
            return wrong
        end
        for _, len in ipairs({3000, 100, 10, 1, 0}) do
            ngx.say(len, ": ", run(len), " wrong")
        end
    }
}
--- request
GET /t
--- response_body
3000: 0 wrong
100: 0 wrong
10: 0 wrong
1: 0 wrong
0: 0 wrong
--- no_error_log
[error]
