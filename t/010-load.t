# ngx.load_ffi: short names through ffi_library_path, idempotency per
# (lib, cfg), one runtime per cfg, and every way loading can fail.
use lib 't/lib';
use FFITest;

run_tests();

__DATA__

=== TEST 1: a short name is found through ffi_library_path
--- config
location = /t {
    content_by_lua_block {
        local rt, err = ngx.load_ffi("ffi_test")
        if not rt then
            ngx.say("load failed: ", err)
            return
        end
        local ok, res, e = rt:call("echo:hello")
        ngx.say(tostring(ok), " ", res, " ", tostring(e))
    }
}
--- request
GET /t
--- response_body
true hello nil
--- no_error_log
[error]



=== TEST 2: the file name and the absolute path load the same library
--- config eval
my $abs = FFITest::repo() . "/t/lib/runtimes/libffi_test.so";
<<"CONF";
location = /t {
    content_by_lua_block {
        for _, name in ipairs({"libffi_test.so", "$abs"}) do
            local rt, err = ngx.load_ffi(name, "by-" .. #name)
            if not rt then
                ngx.say("load failed: ", err)
            else
                local ok, res = rt:call("cfg")
                ngx.say(tostring(ok), " ", res == "by-" .. #name)
            end
        end
    }
}
CONF
--- request
GET /t
--- response_body
true true
true true



=== TEST 3: idempotent per (lib, cfg); each cfg is its own runtime
--- config
location = /t {
    content_by_lua_block {
        local a = ngx.load_ffi("ffi_test", "alpha")
        local b = ngx.load_ffi("ffi_test", "alpha")
        local c = ngx.load_ffi("ffi_test", "beta")
        local d = ngx.load_ffi("ffi_test")
        local e = ngx.load_ffi("ffi_test")
        ngx.say("same cfg same object: ", rawequal(a, b), " ", rawequal(d, e))
        ngx.say("other cfg other object: ", rawequal(a, c), " ",
                rawequal(a, d), " ", rawequal(c, d))
        local _, ra = a:call("cfg")
        local _, rc = c:call("cfg")
        ngx.say("cfg seen: ", ra, " ", rc)
    }
}
--- request
GET /t
--- response_body
same cfg same object: true true
other cfg other object: false false false
cfg seen: alpha beta
--- no_error_log
[error]



=== TEST 4: idempotent across requests of the same worker
--- config
location = /t {
    content_by_lua_block {
        local rt = ngx.load_ffi("ffi_test", "across")
        local saved = package.loaded.ffi_test_across
        if saved == nil then
            package.loaded.ffi_test_across = rt
            ngx.say("first")
        else
            ngx.say("same: ", rawequal(saved, rt))
        end
    }
}
--- pipelined_requests eval
["GET /t", "GET /t", "GET /t"]
--- response_body eval
["first\n", "same: true\n", "same: true\n"]



=== TEST 5: several runtimes of one library, each with its own cfg
--- config
location = /t {
    content_by_lua_block {
        local names = {"one", "two,threads=2", "three,threads=3", "four"}
        local rts = {}
        for i, cfg in ipairs(names) do
            rts[i] = assert(ngx.load_ffi("ffi_test", cfg))
        end
        -- interleave the calls: each answer comes from its own runtime
        for round = 1, 3 do
            for i = #names, 1, -1 do
                local ok, res = rts[i]:call("cfg")
                if not ok or res ~= names[i] then
                    ngx.say("round ", round, " runtime ", i, ": ",
                            tostring(ok), " ", tostring(res))
                end
            end
        end
        ngx.say("done")
    }
}
--- request
GET /t
--- response_body
done



=== TEST 6: a library that is nowhere: nil and a message naming it
--- config
location = /t {
    content_by_lua_block {
        local rt, err = ngx.load_ffi("no_such_ffi_library")
        ngx.say(tostring(rt), " ", type(err))
        ngx.say(err and err:find("no_such_ffi_library", 1, true) ~= nil)
        -- a missing absolute path too
        rt, err = ngx.load_ffi("/nonexistent/libnothing_here.so")
        ngx.say(tostring(rt), " ", type(err))
        ngx.say(err and err:find("libnothing_here", 1, true) ~= nil)
        -- and the next load of a real library still works
        local ok, res = ngx.load_ffi("ffi_test"):call("echo:still fine")
        ngx.say(tostring(ok), " ", res)
    }
}
--- request
GET /t
--- response_body
nil string
true
nil string
true
true still fine



=== TEST 7: a failing libffi_init gives nil and its rc, and is not cached
--- config
location = /t {
    content_by_lua_block {
        local rt, err = ngx.load_ffi("ffi_test", "fail")
        ngx.say(tostring(rt), " ", type(err), " ", tostring(err))
        rt, err = ngx.load_ffi("ffi_test", "fail")
        ngx.say(tostring(rt), " ", type(err), " ", tostring(err))
        local ok, res = ngx.load_ffi("ffi_test", "not-fail"):call("cfg")
        ngx.say(tostring(ok), " ", res)
    }
}
--- request
GET /t
--- response_body
nil number 7
nil number 7
true not-fail



=== TEST 8: a shared object without libffi_init is refused
--- config
location = /t {
    content_by_lua_block {
        local rt, err = ngx.load_ffi("ffi_test_noinit")
        ngx.say(tostring(rt), " ", type(err))
        ngx.say(err and err:find("libffi_init", 1, true) ~= nil)
    }
}
--- request
GET /t
--- response_body
nil string
true



=== TEST 9: in init_by_lua (the master) loading is refused: no threads across fork
--- init_by_lua_block
local rt, err = ngx.load_ffi("ffi_test", "from-master")
package.loaded.ffi_init_load = { rt = rt, err = err }
--- config
location = /t {
    content_by_lua_block {
        local r = package.loaded.ffi_init_load
        ngx.say(tostring(r.rt), " ", type(r.err))
        ngx.say(r.err)
        -- the worker can load the same (lib, cfg): nothing half-made was kept
        local ok, res = assert(ngx.load_ffi("ffi_test", "from-master")):call("cfg")
        ngx.say(tostring(ok), " ", res)
    }
}
--- request
GET /t
--- response_body_like chomp
\Anil string\n.*fork.*\ntrue from-master\n\z



=== TEST 10: init_worker_by_lua loads; the runtime serves requests later
--- init_worker_by_lua_block
local rt, err = ngx.load_ffi("ffi_test", "from-init-worker")
package.loaded.ffi_iw = rt
ngx.log(ngx.WARN, "init_worker load: ", tostring(rt ~= nil), " ", tostring(err))
--- config
location = /t {
    content_by_lua_block {
        local rt = ngx.load_ffi("ffi_test", "from-init-worker")
        ngx.say(rawequal(rt, package.loaded.ffi_iw))
        local ok, res = rt:call("cfg")
        ngx.say(tostring(ok), " ", res)
    }
}
--- request
GET /t
--- response_body
true
true from-init-worker
--- error_log
init_worker load: true nil
