# Every example uses the runtime services: each logs its start into
# error.log with its name and version and counts it in the lua_shared_dict
# ffi_examples, which Lua reads back.
use lib 't/lib';
use FFITest;

our $repo = FFITest::repo();

our $main_config = join "\n", map { "env $_;" }
    "LD_LIBRARY_PATH=$repo/examples/go:$repo/examples/rust"
    . ":$repo/examples/python";

run_tests();

__DATA__

=== TEST 1: C, Go, Rust and Python examples: two starts each, logged and counted
--- main_config eval: $::main_config
--- http_config
lua_shared_dict ffi_examples 1m;
--- config
location = /t {
    content_by_lua_block {
        local libs = {
            {"demo", "demo_starts"},
            {"ffi_go_echo", "go_starts"},
            {"ffi_rust_echo", "rust_starts"},
            {"ffi_python3", "python_starts", "ffi.greet,Greeter,"},
        }
        for _, l in ipairs(libs) do
            local cfg = l[3] or ""
            local a = assert(ngx.load_ffi(l[1], cfg .. "a", {is_global = true}))
            local b = assert(ngx.load_ffi(l[1], cfg .. "b", {is_global = true}))
            local ok1 = a:call("x")
            local ok2 = b:call("y")
            ngx.say(l[1], ": ", tostring(ok1), " ", tostring(ok2), " ",
                    ngx.shared.ffi_examples:get(l[2]))
        end
    }
}
--- request
GET /t
--- timeout: 60
--- response_body
demo: true true 2
ffi_go_echo: true true 2
ffi_rust_echo: true true 2
ffi_python3: true true 2
--- wait_for_log eval
[qr/\[notice\] \d+#\d+: ffi: \[demo v1\] demo: start number 2$/m,
 qr/\[notice\] \d+#\d+: ffi: \[ffi_go_echo v1\] go echo: start number 2$/m,
 qr/\[notice\] \d+#\d+: ffi: \[ffi_rust_echo v1\] rust echo: start number 2$/m,
 qr/\[notice\] \d+#\d+: ffi: \[ffi_python3 v1\] ffi.greet: Greeter start number 2$/m]
--- no_error_log
[error]
