# A library that crashes in a constructor or in libffi_init is tried in a
# short-lived process first: ngx.load_ffi returns nil and why, no worker dies.
use lib 't/lib';
use FFITest;

my $lib = FFITest::repo() . '/build/t';

$ENV{TEST_LIB} = $lib;
run_tests();

__DATA__

=== TEST 1: a constructor that crashes
--- config
location = /t {
    content_by_lua_block {
        local rt, err = ngx.load_ffi(os.getenv("TEST_LIB") .. "/libver-crashctor.so")
        ngx.say(tostring(rt), " ", (err:gsub("^.*/build/t/", "")))
        local rt2 = assert(ngx.load_ffi(os.getenv("TEST_LIB") .. "/libver-v1.so"))
        ngx.say(select(2, rt2:call("version")))
    }
}
--- main_config
env TEST_LIB;
--- request
GET /t
--- response_body
nil libver-crashctor.so" crashed (signal 11) in a constructor or libffi_init, in a trial process
v1
--- no_error_log
exited on signal



=== TEST 2: libffi_init that crashes, then the same request again
--- config
location = /t {
    content_by_lua_block {
        for i = 1, 2 do
            local rt, err = ngx.load_ffi(os.getenv("TEST_LIB") .. "/libver-crashinit.so")
            ngx.say(tostring(rt), " ", (err:gsub("^.*/build/t/", "")))
        end
    }
}
--- main_config
env TEST_LIB;
--- request
GET /t
--- response_body
nil libver-crashinit.so" crashed (signal 11) in a constructor or libffi_init, in a trial process
nil libver-crashinit.so" crashed (signal 11) in a constructor or libffi_init, in a trial process
--- error_log
crashed (signal 11)



=== TEST 3: ffi_trial off: a failing libffi_init still gives nil, rc
--- http_config
ffi_trial off;
--- config
location = /t {
    content_by_lua_block {
        local rt, rc = ngx.load_ffi(os.getenv("TEST_LIB") .. "/libver-fail.so")
        ngx.say(tostring(rt), " ", rc)
    }
}
--- main_config
env TEST_LIB;
--- request
GET /t
--- response_body
nil 9



=== TEST 4: a trial that takes 6 s: a hang for a C library, a start for a VM
A library that starts a virtual machine (here: one that needs libpython, as
libelf sees it) may take seconds to start in its trial on a busy host: it
gets 30 s. A plain library whose trial does not end within 5 s is refused.
--- config
location = /t {
    content_by_lua_block {
        local lib = os.getenv("TEST_LIB")
        local rt, err = ngx.load_ffi(lib .. "/libver-slowtrial.so")
        ngx.say(tostring(rt), " ", (err:gsub("^.*/build/t/", "")))
        local vm = assert(ngx.load_ffi(lib .. "/libver-slowvm.so"))
        ngx.say(select(2, vm:call("version")))
    }
}
--- main_config
env TEST_LIB;
--- request
GET /t
--- timeout: 60
--- response_body
nil libver-slowtrial.so": a constructor or libffi_init did not return within 5000 ms in a trial process
slowvm
