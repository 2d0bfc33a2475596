# The Python loader (examples/python/libffi_python3.so): upstream's echo.py,
# handlers marked resty_ffi.handler, errors, PYTHONPATH, and the GIL.
use lib 't/lib';
use FFITest;

our $repo = FFITest::repo();
our $root = FFITest::servroot();

# modules of the tests, on PYTHONPATH; ffi/ beside the loader needs none
my $pylib = "$root/pylib";
mkdir $pylib;

open my $fh, '>', "$pylib/t320.py" or die "$pylib/t320.py: $!\n";
print $fh <<'PY';
import hashlib
import resty_ffi


@resty_ffi.handler
def echo(req):
    return req


@resty_ffi.handler
def nothing(req):
    return None


@resty_ffi.handler
def tail(req):
    return memoryview(bytearray(req))[1:]


@resty_ffi.handler
def number(req):
    return 42


@resty_ffi.handler
def digest(req):
    # holds the GIL for a while: other runtimes must still get their turn
    for _ in range(200):
        req = hashlib.sha256(req).digest()
    return req.hex()


@resty_ffi.handler
class Prefix:
    def __init__(self, cfg):
        self.prefix = cfg.encode()

    def __call__(self, req):
        return self.prefix + req


def seven(cfg, tq):
    return 7
PY
close $fh;

open $fh, '>', "$pylib/t320_exit.py" or die "$pylib/t320_exit.py: $!\n";
print $fh "import sys\nsys.exit(3)\n";
close $fh;

our $main_config = "env LD_LIBRARY_PATH=$repo/examples/python;\n"
                 . "env PYTHONPATH=$pylib;";

# call(cfg, req): the runtime "ffi_python3" with cfg answers req; says what
# Lua got back
our $init = <<'LUA';
function call(cfg, req)
    local rt, rc = ngx.load_ffi("ffi_python3", cfg, {is_global = true})
    if not rt then
        ngx.say("load: nil ", rc)
        return
    end
    local ok, res, err = rt:call(req)
    ngx.say(tostring(ok), " ", tostring(res), " ", tostring(err))
end

-- echo_check(label, runtimes, n, width): see t/lib/ffitest.lua
echo_check = require("ffitest").echo_check
LUA

run_tests();

__DATA__

=== TEST 1: upstream's ffi/echo.py, found beside the loader: 2 x 500 calls
--- workers: 2
--- main_config eval: "env LD_LIBRARY_PATH=$::repo/examples/python;"
--- init_by_lua_block eval: $::init
--- init_worker_by_lua_block
ngx.timer.at(0, function()
    local rt, err = ngx.load_ffi("ffi_python3", "ffi.echo?,init",
                                 {is_global = true})
    if not rt then
        ngx.log(ngx.ERR, "load_ffi: ", err)
        return
    end
    local function same(req, res) return res == req end
    echo_check("python echo", {{rt, same}}, 500, 10)
end)
--- wait_for_log eval
[("python echo: 500 of 500 calls right") x 2]
--- no_error_log
[error]



=== TEST 2: handlers of ffi/greet.py: a function, a class with and without cfg
--- main_config eval: "env LD_LIBRARY_PATH=$::repo/examples/python;"
--- init_by_lua_block eval: $::init
--- config
location = /t {
    content_by_lua_block {
        call("ffi.greet,upper", "shout")
        call("ffi.greet,Greeter,Hello", "Ann")
        call("ffi.greet,Greeter", "Bob")
        call("ffi.greet,upper", "")
    }
}
--- request
GET /t
--- response_body
true SHOUT nil
true Hello, Ann! nil
true Hi, Bob! nil
true  nil
--- no_error_log
[error]



=== TEST 3: an exception answers false, 1 and its text; the runtime serves on
--- main_config eval: "env LD_LIBRARY_PATH=$::repo/examples/python;"
--- init_by_lua_block eval: $::init
--- config
location = /t {
    content_by_lua_block {
        call("ffi.greet,Greeter", "")
        call("ffi.greet,Greeter", "Cy")
    }
}
--- request
GET /t
--- response_body
false 1 ValueError: nobody to greet
true Hi, Cy! nil
--- no_error_log
[error]



=== TEST 4: what a handler returns: None, a buffer, a wrong type
--- main_config eval: $::main_config
--- init_by_lua_block eval: $::init
--- config
location = /t {
    content_by_lua_block {
        call("t320,nothing", "x")
        call("t320,tail", "abc")
        call("t320,number", "x")
        call("t320,Prefix,> ", "quote")
    }
}
--- request
GET /t
--- response_body
true nil nil
true bc nil
false 1 TypeError: handler returned int, expected bytes, str or None
true > quote nil
--- no_error_log
[error]



=== TEST 5: a module that cannot be imported: nil and the code, traceback logged
--- main_config eval: $::main_config
--- init_by_lua_block eval: $::init
--- config
location = /t {
    content_by_lua_block {
        call("no_such_module,init", "x")
        call("t320,no_such_function", "x")
        call("t320,seven", "x")
        call("t320_exit?,init", "x")
        call("ffi.greet,upper", "still here")
    }
}
--- request
GET /t
--- response_body
load: nil 1
load: nil 1
load: nil 7
load: nil 1
true STILL HERE nil
--- error_log
ffi_python3: cannot import module no_such_module
ModuleNotFoundError: No module named 'no_such_module'
ffi_python3: no function no_such_function in module t320
ffi_python3: t320.seven() returned 7
SystemExit: 3



=== TEST 6: the GIL: 5 runtimes, 10 calls at a time, in each of 2 workers
--- workers: 2
--- main_config eval: $::main_config
--- init_by_lua_block eval: $::init
--- init_worker_by_lua_block
ngx.timer.at(0, function()
    local function load(cfg)
        return assert(ngx.load_ffi("ffi_python3", cfg, {is_global = true}))
    end
    local function same(req, res) return res == req end
    local function quoted(req, res) return res == "<" .. req end
    local function upper(req, res) return res == req:upper() end
    local function hex(req, res) return #res == 64 end
    echo_check("python mixed", {
        {load("ffi.echo?,init"), same},
        {load("t320,echo"), same},
        {load("t320,Prefix,<"), quoted},
        {load("ffi.greet,upper"), upper},
        {load("t320,digest"), hex},
    }, 1000, 10)
end)
--- wait_for_log eval
[("python mixed: 1000 of 1000 calls right") x 2]
--- no_error_log
[error]
