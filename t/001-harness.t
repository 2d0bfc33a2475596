# The test harness itself (t/lib/FFITest.pm) with plain nginx + Lua: every
# section it offers does what it says, so later failures are the bridge's.
use lib 't/lib';
use FFITest;

run_tests();

__DATA__

=== TEST 1: content_by_lua and an exact body
--- config
location = /t {
    content_by_lua_block { ngx.say("hello") }
}
--- request
GET /t
--- response_body
hello
--- no_error_log
[error]



=== TEST 2: error_code and response_body_like
--- config
location = /t {
    content_by_lua_block { ngx.status = 404 ngx.say("not here: ", ngx.var.uri) }
}
--- request
GET /t
--- error_code: 404
--- response_body_like: ^not here: /t$



=== TEST 3: response_headers, present and absent
--- config
location = /t {
    content_by_lua_block {
        ngx.header["X-Foo"] = "bar"
        ngx.print("x")
    }
}
--- request
GET /t
--- response_headers
X-Foo: bar
!X-Absent
--- response_body chomp
x



=== TEST 4: POST with a request body, more_headers
--- config
location = /t {
    content_by_lua_block {
        ngx.req.read_body()
        ngx.say(ngx.req.get_method(), " ", ngx.req.get_body_data(),
                " ", ngx.var.http_x_test)
    }
}
--- request
POST /t
hello body
--- more_headers
X-Test: yes
--- response_body
POST hello body yes



=== TEST 5: binary request and response bodies (eval)
--- config
location = /t {
    content_by_lua_block {
        ngx.req.read_body()
        local b = ngx.req.get_body_data()
        ngx.header.content_length = #b + 1
        ngx.print(b, "\0")
    }
}
--- request
POST /t
--- request_body eval
"a\0b\r\n\xff"
--- response_body eval
"a\0b\r\n\xff\0"



=== TEST 6: pipelined requests on one connection
--- config
location /p {
    content_by_lua_block { ngx.say(ngx.var.uri) }
}
--- pipelined_requests eval
["GET /p1", "GET /p2", "GET /p3"]
--- response_body eval
["/p1\n", "/p2\n", "/p3\n"]



=== TEST 7: error_log and no_error_log, strings and regexes
--- config
location = /t {
    content_by_lua_block {
        ngx.log(ngx.WARN, "marker one")
        ngx.log(ngx.ERR, "marker two 42")
        ngx.say("ok")
    }
}
--- request
GET /t
--- response_body
ok
--- error_log eval
["marker one", qr/\[error\] .* marker two \d+/]
--- no_error_log
marker three
[crit]



=== TEST 8: wait_for_log waits for what happens after the answer
--- config
location = /t {
    content_by_lua_block {
        ngx.timer.at(0.2, function() ngx.log(ngx.WARN, "late timer fired") end)
        ngx.say("ok")
    }
}
--- request
GET /t
--- response_body
ok
--- wait_for_log
late timer fired



=== TEST 9: two workers, init_worker_by_lua_block, a pattern listed twice
--- workers: 2
--- init_worker_by_lua_block
ngx.log(ngx.WARN, "worker ", ngx.worker.id(), " up of ", ngx.worker.count())
--- config
location = /t {
    content_by_lua_block { ngx.say(ngx.worker.count()) }
}
--- request
GET /t
--- response_body
2
--- wait_for_log eval
[qr/worker \d up of 2/, qr/worker \d up of 2/]



=== TEST 10: init_by_lua_block runs in the master before workers fork
--- init_by_lua_block
package.loaded.harness_marker = "from init"
--- config
location = /t {
    content_by_lua_block { ngx.say(package.loaded.harness_marker) }
}
--- request
GET /t
--- response_body
from init



=== TEST 11: main_config and http_config land where they belong
--- main_config
env FFITEST_MAIN=main-ok;
--- http_config
lua_shared_dict harness 1m;
--- config
location = /t {
    content_by_lua_block {
        ngx.say(os.getenv("FFITEST_MAIN"), " ", ngx.shared.harness ~= nil)
    }
}
--- request
GET /t
--- response_body
main-ok true



=== TEST 12: log_level debug
--- log_level: debug
--- config
location = /t {
    content_by_lua_block { ngx.say("ok") }
}
--- request
GET /t
--- response_body
ok
--- error_log
[debug]



=== TEST 13: abort: the client gives up after --- timeout
--- config
location = /t {
    content_by_lua_block { ngx.sleep(1) ngx.say("too late") }
}
--- request
GET /t
--- timeout: 0.3
--- abort



=== TEST 14: allow_alerts lets a block leave an [alert] behind
--- allow_alerts
--- config
location = /t {
    content_by_lua_block { ngx.log(ngx.ALERT, "deliberate alert") ngx.say("ok") }
}
--- request
GET /t
--- response_body
ok
--- error_log
[alert]
