# The Python loader and the runtime services: print(), sys.stderr and the
# logging module reach error.log at their levels with the runtime's name
# and version; resty_ffi.dict_* share lua_shared_dict zones with Lua.
use lib 't/lib';
use FFITest;
use ServiceTest;

our $repo = FFITest::repo();
our $root = FFITest::servroot();

my $pylib = "$root/pylib";
ServiceTest::write_module($pylib, 't720.py', <<'PY');
import logging
import sys
import threading

import resty_ffi

print("t720 imported")


@resty_ffi.handler
def talk(req):
    word = req.decode()
    print("print says", word)
    print("in", "three", end=" ")
    print("parts")
    sys.stderr.write("stderr says " + word + "\n")
    logging.warning("warning says %s", word)
    logging.getLogger("t720").error("error says %s", word)
    logging.info("info is below Python's default level")
    return b"ok"


@resty_ffi.handler
def threads(req):
    # threads 0 and 1 work for this runtime; 2 and 3 are no runtime's
    tq = resty_ffi.bound()
    def run(i):
        if i < 2:
            resty_ffi.bind(tq)
        for n in range(50):
            print(f"thread {i} line {n} end")
    ts = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return b"done"


@resty_ffi.handler
def dicts(req):
    out = []
    resty_ffi.dict_set("ffi_dict", "py", "from python")
    out.append(resty_ffi.dict_get("ffi_dict", "lua"))
    out.append(resty_ffi.dict_get("ffi_dict", "num"))
    out.append(resty_ffi.dict_get("ffi_dict", "absent"))
    resty_ffi.dict_set("ffi_dict", "gone", b"x")
    resty_ffi.dict_set("ffi_dict", "gone", None)
    out.append(resty_ffi.dict_get("ffi_dict", "gone"))
    out.append(resty_ffi.dict_incr("ffi_dict", "n", 2, 40))
    try:
        resty_ffi.dict_get("nodict", "k")
    except resty_ffi.DictError as e:
        out.append(str(e))
    return repr(out)


@resty_ffi.handler
def counter(req):
    def run():
        for _ in range(10000):
            resty_ffi.dict_incr("ffi_dict", "counter")
    ts = [threading.Thread(target=run) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return b"counted"
PY

our $main_config = "env LD_LIBRARY_PATH=$repo/examples/python;\n"
                 . "env PYTHONPATH=$pylib;";

run_tests();

__DATA__

=== TEST 1: print(), sys.stderr and logging land in error.log, at their levels
--- main_config eval: $::main_config
--- config
location = /t {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("ffi_python3", "t720,talk",
                                       {is_global = true}))
        ngx.say(select(2, rt:call("hi")))
    }
}
--- request
GET /t
--- response_body
ok
--- wait_for_log eval
[qr/\[notice\] \d+#\d+: ffi: \[ffi_python3 v1\] t720 imported$/m,
 qr/\[notice\] \d+#\d+: ffi: \[ffi_python3 v1\] print says hi$/m,
 qr/\[notice\] \d+#\d+: ffi: \[ffi_python3 v1\] in three parts$/m,
 qr/\[warn\] \d+#\d+: ffi: \[ffi_python3 v1\] stderr says hi$/m,
 qr/\[warn\] \d+#\d+: ffi: \[ffi_python3 v1\] warning says hi$/m,
 qr/\[error\] \d+#\d+: ffi: \[ffi_python3 v1\] error says hi$/m]
--- no_error_log
info is below
[alert]



=== TEST 2: error_log's level holds for Python's lines too
--- main_config eval: $::main_config
--- log_level: warn
--- config
location = /t {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("ffi_python3", "t720,talk",
                                       {is_global = true}))
        ngx.say(select(2, rt:call("again")))
        -- a line after the others, to await
        assert(ngx.load_ffi("ffi_python3", "t720,talk",
                            {is_global = true}):call("last"))
    }
}
--- request
GET /t
--- response_body
ok
--- wait_for_log eval
[qr/error says last$/m]
--- no_error_log eval
[qr/print says/, qr/t720 imported/]
--- error_log eval
[qr/\[warn\] .*stderr says again$/m, qr/\[error\] .*error says again$/m]



=== TEST 3: 4 Python threads print at once: 200 whole lines
--- main_config eval: $::main_config
--- config
location = /t {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("ffi_python3", "t720,threads",
                                       {is_global = true}))
        ngx.say(select(2, rt:call("")))
    }
}
--- request
GET /t
--- response_body
done
--- wait_for_log eval
[(map { qr/\[notice\] \d+#\d+: ffi: \[ffi_python3 v1\] thread $_ line 49 end$/m } 0 .. 1),
 (map { qr/\[notice\] \d+#\d+: ffi: thread $_ line 49 end$/m } 2 .. 3)]
--- no_error_log eval
[qr/thread \d line \d+ end./, qr/ffi: thread [01]/, qr/\] thread [23]/]



=== TEST 4: resty_ffi.dict_* and Lua, both ways
--- main_config eval: $::main_config
--- http_config
lua_shared_dict ffi_dict 1m;
--- config
location = /t {
    content_by_lua_block {
        local d = ngx.shared.ffi_dict
        d:set("lua", "from lua")
        d:set("num", 0.5)
        local rt = assert(ngx.load_ffi("ffi_python3", "t720,dicts",
                                       {is_global = true}))
        ngx.say(select(2, rt:call("")))
        ngx.say(d:get("py"), " ", d:get("n"))
    }
}
--- request
GET /t
--- response_body
[b'from lua', b'0.5', None, None, 42.0, 'no lua_shared_dict "nodict" (-1)']
from python 42
--- no_error_log
[error]



=== TEST 5: 4 Python threads and Lua increment one counter: exact
--- main_config eval: $::main_config
--- http_config
lua_shared_dict ffi_dict 1m;
--- config eval
ServiceTest::counter_config("ffi_python3", "t720,counter", "", 40000)
--- request
GET /t
--- timeout: 60
--- response_body
counted 80000
--- no_error_log
[error]
