# rt:anything(req): what goes in comes back exactly (nil, empty, binary,
# 1 MB), and every kind of answer: rc != 0 with and without a message,
# NUL-terminated, NULL.
use lib 't/lib';
use FFITest;

run_tests();

__DATA__

=== TEST 1: the method name is free; ok, res, err on success
--- config
location = /t {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("ffi_test"))
        for _, m in ipairs({"call", "echo", "anything", "some name"}) do
            local ok, res, err = rt[m](rt, "echo:" .. m)
            ngx.say(tostring(ok), " [", res, "] ", tostring(err))
        end
    }
}
--- request
GET /t
--- response_body
true [call] nil
true [echo] nil
true [anything] nil
true [some name] nil
--- no_error_log
[error]



=== TEST 2: a nil request reaches the runtime as NULL
--- config
location = /t {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("ffi_test"))
        local ok, res, err = rt:call(nil)
        ngx.say(tostring(ok), " ", tostring(res), " ", tostring(err))
        ok, res, err = rt:call()
        ngx.say(tostring(ok), " ", tostring(res), " ", tostring(err))
    }
}
--- request
GET /t
--- response_body
true null-request nil
true null-request nil



=== TEST 3: an empty request is not a NULL one
--- config
location = /t {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("ffi_test"))
        local ok, res, err = rt:call("")
        ngx.say(tostring(ok), " ", tostring(res), " ", tostring(err))
    }
}
--- request
GET /t
--- response_body
true empty-request nil



=== TEST 4: an empty answer is an empty string
--- config
location = /t {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("ffi_test"))
        local ok, res = rt:call("echo:")
        ngx.say(tostring(ok), " ", type(res), " ", #res)
        ok, res = rt:call("nul:")
        ngx.say(tostring(ok), " ", type(res), " ", #res)
    }
}
--- request
GET /t
--- response_body
true string 0
true string 0



=== TEST 5: every byte value, NULs included, both ways
--- config
location = /t {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("ffi_test"))
        local bytes = {}
        for i = 0, 255 do
            bytes[#bytes + 1] = string.char(i)
        end
        local all = table.concat(bytes)
        for _, payload in ipairs({"\0", "\0\0\0", "a\0b", all, "\0" .. all .. "\0",
                                  string.reverse(all)}) do
            local ok, res = rt:call("echo:" .. payload)
            ngx.say(tostring(ok), " ", #res, " ", res == payload)
        end
    }
}
--- request
GET /t
--- response_body
true 1 true
true 3 true
true 3 true
true 256 true
true 258 true
true 256 true



=== TEST 6: 1 MB request and 1 MB answer
--- config
location = /t {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("ffi_test"))
        local bytes = {}
        for i = 0, 255 do
            bytes[#bytes + 1] = string.char(255 - i)
        end
        local payload = string.rep(table.concat(bytes), 4096)
        local ok, res = rt:call("echo:" .. payload)
        ngx.say(tostring(ok), " ", #res, " ", res == payload)
        ok, res = rt:call("big:1048576")
        ngx.say(tostring(ok), " ", #res, " ", res == string.rep("x", 1048576))
    }
}
--- request
GET /t
--- response_body
true 1048576 true
true 1048576 true



=== TEST 7: a 1 MB binary HTTP body through the runtime and back
--- config
client_body_buffer_size 2m;
client_max_body_size 2m;
location = /t {
    content_by_lua_block {
        ngx.req.read_body()
        local body = assert(ngx.req.get_body_data())
        local rt = assert(ngx.load_ffi("ffi_test"))
        local ok, res = rt:call("echo:" .. body)
        if not ok then
            ngx.say("failed: ", tostring(res))
            return
        end
        ngx.print(res)
    }
}
--- request
POST /t
--- request_body eval
pack 'C*', map { ($_ * 7) % 256 } 0 .. 1048575
--- response_body eval
pack 'C*', map { ($_ * 7) % 256 } 0 .. 1048575



=== TEST 8: rc != 0 without an answer: false, rc
--- config
location = /t {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("ffi_test"))
        for _, rc in ipairs({3, 1, -1, 255, 100000}) do
            local ok, res, err = rt:call("rc:" .. rc)
            ngx.say(tostring(ok), " ", type(res), " ", tostring(res), " ",
                    tostring(err))
        end
    }
}
--- request
GET /t
--- response_body
false number 3 nil
false number 1 nil
false number -1 nil
false number 255 nil
false number 100000 nil



=== TEST 9: rc != 0 with an answer: false, rc, msg
--- config
location = /t {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("ffi_test"))
        local ok, res, err = rt:call("rcmsg:5:bad thing happened")
        ngx.say(tostring(ok), " ", tostring(res), " [", tostring(err), "]")
        ok, res, err = rt:call("rcmsg:9:bin\0ary")
        ngx.say(tostring(ok), " ", tostring(res), " ", err == "bin\0ary")
        ok, res, err = rt:call("unknown-command")
        ngx.say(tostring(ok), " ", tostring(res), " [", tostring(err), "]")
    }
}
--- request
GET /t
--- response_body
false 5 [bad thing happened]
false 9 true
false 2 [unknown command: unknown-command]



=== TEST 10: a NUL-terminated answer (rsp_len 0)
--- config
location = /t {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("ffi_test"))
        local ok, res = rt:call("nul:a C string")
        ngx.say(tostring(ok), " [", res, "] ", #res)
        ok, res = rt:call("pid")
        ngx.say(tostring(ok), " ", tonumber(res) == ngx.worker.pid())
    }
}
--- request
GET /t
--- response_body
true [a C string] 10
true true



=== TEST 11: a NULL answer: true, nil; rc 0 without an answer the same
--- config
location = /t {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("ffi_test"))
        local ok, res, err = rt:call("null")
        ngx.say(tostring(ok), " ", tostring(res), " ", tostring(err))
        ok, res, err = rt:call("rc:0")
        ngx.say(tostring(ok), " ", tostring(res), " ", tostring(err))
    }
}
--- request
GET /t
--- response_body
true nil nil
true nil nil



=== TEST 12: get_req(task, NULL) is allowed
--- config
location = /t {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("ffi_test"))
        local ok, res = rt:call("nolen")
        ngx.say(tostring(ok), " ", res)
    }
}
--- request
GET /t
--- response_body
true ok



=== TEST 13: a thousand calls one after another in one request
--- config
location = /t {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("ffi_test", "threads=2"))
        local bad = 0
        for i = 1, 1000 do
            local ok, res = rt:call("echo:" .. i)
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
bad: 0
