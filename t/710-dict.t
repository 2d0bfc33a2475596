# ngx_http_lua_ffi_dict_get/set/incr: runtimes and Lua share lua_shared_dict
# zones: one counter incremented from 4 runtime threads and Lua at once
# stays exact; values, deletes, expiry and errors read the same both ways.
use lib 't/lib';
use FFITest;

run_tests();

__DATA__

=== TEST 1: 100,000 increments from 4 runtime threads while Lua does 100,000, in two workers at once: exact
--- workers: 2
--- http_config
lua_shared_dict ffi_dict 1m;
--- config
location = /race {
    content_by_lua_block {
        local d = ngx.shared.ffi_dict
        local rt = assert(ngx.load_ffi("ffi_services"))
        -- the call yields: the runtime's threads run while Lua loops
        local t = ngx.thread.spawn(function()
            return rt:call("incr:ffi_dict:counter:4:25000")
        end)
        local bad = 0
        for i = 1, 100000 do
            if not d:incr("counter", 1, 0) then bad = bad + 1 end
        end
        local _, ok, res = ngx.thread.wait(t)
        ngx.say(tostring(ok), " ", res, ", lua errors ", bad)
    }
}
location = /t {
    content_by_lua_block {
        -- two requests at once, over two connections (maybe two workers)
        local sock1 = ngx.socket.tcp()
        local sock2 = ngx.socket.tcp()
        assert(sock1:connect("127.0.0.1", ngx.var.server_port))
        assert(sock2:connect("127.0.0.1", ngx.var.server_port))
        local req = "GET /race HTTP/1.0\r\nHost: x\r\n\r\n"
        assert(sock1:send(req))
        assert(sock2:send(req))
        sock1:settimeout(120000)
        sock2:settimeout(120000)
        local r1 = assert(sock1:receive("*a"))
        local r2 = assert(sock2:receive("*a"))
        ngx.print(r1:match("\r\n\r\n(.*)$"), r2:match("\r\n\r\n(.*)$"))
        local ok, v = assert(ngx.load_ffi("ffi_services")):call(
                             "get:ffi_dict:counter")
        ngx.say("lua: ", ngx.shared.ffi_dict:get("counter"),
                ", runtime: ", v)
    }
}
--- request
GET /t
--- timeout: 150
--- response_body
true errors 0, lua errors 0
true errors 0, lua errors 0
lua: 400000, runtime: 400000
--- no_error_log
[error]



=== TEST 2: values Lua writes, runtimes read (numbers in Lua's string form)
--- http_config
lua_shared_dict ffi_dict 1m;
--- config
location = /t {
    content_by_lua_block {
        local d = ngx.shared.ffi_dict
        local rt = assert(ngx.load_ffi("ffi_services"))
        d:set("s", "hello")
        d:set("empty", "")
        d:set("i", 42)
        d:set("f", 3.5)
        d:set("neg", -0.25)
        d:set("big", 1e20)
        d:set("inf", math.huge)
        d:set("t", true)
        d:set("b", false)
        d:lpush("list", "x")
        for _, k in ipairs{"s", "empty", "i", "f", "neg", "big", "inf", "t",
                           "b", "list", "absent"}
        do
            local r = {rt:call("get:ffi_dict:" .. k)}
            for i = 1, #r do r[i] = tostring(r[i]) end
            ngx.say(k, ": ", table.concat(r, " "))
        end
        ngx.say("no dict: ", tostring(select(2, rt:call("get:nodict:s"))))
        ngx.say("not a dict zone: ",
                tostring(select(2, rt:call("get:lua_resty_ffi:s"))))
    }
}
--- request
GET /t
--- response_body
s: true hello
empty: true 
i: true 42
f: true 3.5
neg: true -0.25
big: true 1e+20
inf: true inf
t: true true
b: true false
list: false -3
absent: false 1
no dict: -1
not a dict zone: -1
--- no_error_log
[error]



=== TEST 3: values runtimes write, Lua reads; delete; incr; errors
--- http_config
lua_shared_dict ffi_dict 1m;
lua_shared_dict tiny 64k;
--- config
location = /t {
    content_by_lua_block {
        local d = ngx.shared.ffi_dict
        local rt = assert(ngx.load_ffi("ffi_services"))
        local function run(req)
            local r = {rt:call(req)}
            for i = 1, #r do r[i] = tostring(r[i]) end
            return table.concat(r, " ")
        end
        ngx.say(run("set:ffi_dict:k:0:from the runtime"))
        ngx.say("lua: ", d:get("k"), " ttl ", d:ttl("k"))
        ngx.say(run("set:ffi_dict:k:0:x"), " (shorter, same key)")
        ngx.say("lua: ", d:get("k"))
        ngx.say(run("set:ffi_dict:k:0:"), " (empty)")
        ngx.say("lua: [", d:get("k"), "] ", type(d:get("k")))
        ngx.say(run("del:ffi_dict:k"))
        ngx.say("lua after del: ", tostring(d:get("k")))
        ngx.say(run("del:ffi_dict:never-was"), " (del of an absent key)")
        ngx.say(run("incr1:ffi_dict:n:5:10"), " (absent: init + by)")
        ngx.say(run("incr1:ffi_dict:n:0.5:10"))
        d:incr("n", 1)
        ngx.say("lua: ", d:get("n"), " ", type(d:get("n")))
        d:set("str", "abc")
        ngx.say(run("incr1:ffi_dict:str:1:0"), " (not a number)")
        ngx.say(run("get:ffi_dict:"), " (empty key)")
        ngx.say(run("incr1:nodict:n:1:0"), " (no dict)")
        ngx.say(run("setbig:tiny:huge:100000"), " (larger than the zone)")
        for i = 1, 20 do
            local r = run("setbig:tiny:k" .. i .. ":8000")
            if r ~= "true 0" then ngx.say("setbig ", i, ": ", r) end
        end
        ngx.say("tiny: newest kept ", #(ngx.shared.tiny:get("k20") or ""),
                ", oldest evicted ", tostring(ngx.shared.tiny:get("k1")))
    }
}
--- request
GET /t
--- response_body
true 0
lua: from the runtime ttl 0
true 0 (shorter, same key)
lua: x
true 0 (empty)
lua: [] string
true 0
lua after del: nil
true 0 (del of an absent key)
true 15 (absent: init + by)
true 15.5
lua: 16.5 number
false -3 0 (not a number)
false -4 (empty key)
false -1 0 (no dict)
false -2 -2 (larger than the zone)
tiny: newest kept 8000, oldest evicted nil
--- no_error_log
[error]



=== TEST 4: expiry, both ways, as nginx's
--- http_config
lua_shared_dict ffi_dict 1m;
--- config
location = /t {
    content_by_lua_block {
        local d = ngx.shared.ffi_dict
        local rt = assert(ngx.load_ffi("ffi_services"))
        local function run(req)
            local r = {rt:call(req)}
            for i = 1, #r do r[i] = tostring(r[i]) end
            return table.concat(r, " ")
        end
        -- a runtime's exptime is Lua's: the ttl Lua sees is at most it
        ngx.say(run("set:ffi_dict:long:100:v"))
        local ttl = d:ttl("long")
        ngx.say("ttl in (99, 100]: ", tostring(ttl > 99 and ttl <= 100))
        ngx.say(run("set:ffi_dict:short:0.1:v"))
        d:set("lua-short", "v", 0.1)
        d:set("e", 5, 0.1)
        d:set("kept", 5, 100)
        ngx.say(run("incr1:ffi_dict:kept:1:0"))
        local kttl = d:ttl("kept")
        ngx.say("incr keeps the expiry: ", tostring(kttl > 99 and kttl <= 100))
        -- past every expiry above (awaiting time itself)
        ngx.sleep(0.3)
        ngx.say("lua, runtime's expired: ", tostring(d:get("short")))
        ngx.say("runtime, runtime's expired: ", run("get:ffi_dict:short"))
        ngx.say("runtime, lua's expired: ", run("get:ffi_dict:lua-short"))
        ngx.say("incr on expired: ", run("incr1:ffi_dict:e:1:10"))
        ngx.say("and it never expires: ", d:ttl("e"))
    }
}
--- request
GET /t
--- response_body
true 0
ttl in (99, 100]: true
true 0
true 6
incr keeps the expiry: true
lua, runtime's expired: nil
runtime, runtime's expired: false 1
runtime, lua's expired: false 1
incr on expired: true 11
and it never expires: 0
--- no_error_log
[error]
