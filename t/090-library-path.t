# ffi_library_path: short names and file names resolve in the listed dirs
# (no LD_LIBRARY_PATH), in every worker.
use lib 't/lib';
use FFITest;

run_tests();

__DATA__

=== TEST 1: two workers each load "ffi_test" by short name at start
--- workers: 2
--- init_worker_by_lua_block
local rt, err = ngx.load_ffi("ffi_test")
if not rt then
    ngx.log(ngx.ERR, "worker ", ngx.worker.pid(), " load failed: ", err)
    return
end
-- init_worker cannot yield: call from a timer
ngx.timer.at(0, function()
    local ok, res = rt:call("pid")
    ngx.log(ngx.WARN, "worker ", ngx.worker.pid(), " got answer from pid ",
            tostring(res))
end)
--- config
location = /t {
    content_by_lua_block { ngx.say("ok") }
}
--- request
GET /t
--- response_body
ok
--- wait_for_log eval
[qr/worker (\d+) got answer from pid \1\b/, qr/worker (\d+) got answer from pid \1\b/]
--- no_error_log
load failed



=== TEST 2: the environment has no LD_LIBRARY_PATH to help
--- main_config
env LD_LIBRARY_PATH;
--- config
location = /t {
    content_by_lua_block {
        ngx.say("LD_LIBRARY_PATH=", tostring(os.getenv("LD_LIBRARY_PATH")))
        local rt, err = ngx.load_ffi("ffi_test")
        ngx.say(tostring(rt ~= nil), " ", tostring(err))
    }
}
--- request
GET /t
--- response_body_like chomp
\ALD_LIBRARY_PATH=(?:nil|(?:(?!runtimes)[^\n])*)\ntrue nil\n\z

