# The Node.js loader (examples/nodejs/libffi_nodejs.so): upstream's
# demo/echo.js found beside the loader, modules on NODE_PATH, cfg,
# NODE_OPTIONS, and every way init fails without taking nginx down.
use lib 't/lib';
use FFITest;

our $repo = FFITest::repo();
our $root = FFITest::servroot();

# modules of the tests, on NODE_PATH; demo/ beside the loader needs none
our $nodelib = "$root/nodelib";
mkdir $nodelib;
mkdir "$nodelib/t410";

sub spew {
    my ($file, $text) = @_;
    open my $fh, '>', $file or die "$file: $!\n";
    print $fh $text;
    close $fh or die "$file: $!\n";
}

# answers cfg, globalThis.t410tag (set by a --require'd module), then the
# request, as a string, from the polling worker itself
spew("$nodelib/t410/prefix.js", <<'JS');
const { Worker, isMainThread, workerData } = require('node:worker_threads');
const ffi = require('resty_ffi');

if (isMainThread) {
    exports.init = (cfg, tq) => {
        const tag = globalThis.t410tag || '';
        new Worker(__filename, { workerData: { prefix: cfg + tag, tq } });
        return 0;
    };
} else {
    const { prefix, tq } = workerData;
    for (;;) {
        const task = ffi.poll_task(tq);
        if (task === 0n) {
            break;
        }
        const req = ffi.get_req(task);
        ffi.respond(task, 0, prefix + (req === undefined ? '(none)' : req));
    }
}
JS

spew("$nodelib/t410/fail.js", <<'JS');
exports.seven = () => 7;
exports.boom = () => { throw new Error('boom in init'); };
exports.text = () => 'abc';
exports.exit = () => { process.exit(3); return 9; };
exports.later = () => {
    setTimeout(() => { throw new Error('async boom'); }, 1);
    return 6;
};
exports.notAFunction = 42;
JS

spew("$nodelib/t410/syntax.js", "exports.init = (cfg, tq => 0;\n");

spew("$nodelib/t410/preload.js", "globalThis.t410tag = '<preloaded>';\n");

our $main_config = "env LD_LIBRARY_PATH=$repo/examples/nodejs;\n"
                 . "env NODE_PATH=$nodelib;";

# call(cfg, req): the runtime "ffi_nodejs" with cfg answers req; says what
# Lua got back
our $init = <<'LUA';
function call(cfg, req)
    local rt, rc = ngx.load_ffi("ffi_nodejs", cfg, {is_global = true})
    if not rt then
        ngx.say("load: nil ", rc)
        return
    end
    local ok, res, err = rt:call(req)
    ngx.say(tostring(ok), " ", tostring(res), " ", tostring(err))
end

-- echo_check(label, runtimes, n, width): see t/lib/ffitest.lua
local echo = require("ffitest").echo_check
function echo_check(label, runtimes, n, width)
    echo(label, runtimes, n, width, 300)
end
LUA

run_tests();

__DATA__

=== TEST 1: demo/echo.js beside the loader, no NODE_PATH: 2 workers x 1,000
--- workers: 2
--- main_config eval: "env LD_LIBRARY_PATH=$::repo/examples/nodejs;"
--- init_by_lua_block eval: $::init
--- init_worker_by_lua_block
ngx.timer.at(0, function()
    local rt, err = ngx.load_ffi("ffi_nodejs", "demo/echo?,init",
                                 {is_global = true})
    if not rt then
        ngx.log(ngx.ERR, "load_ffi: ", err)
        return
    end
    local function same(req, res) return res == req end
    echo_check("node echo", {{rt, same}}, 1000, 20)
end)
--- wait_for_log eval
[("node echo: 1000 of 1000 calls right") x 2]
--- wait_for_log_timeout: 30
--- no_error_log
[error]
libffi_nodejs



=== TEST 2: empty and missing requests
--- main_config eval: "env LD_LIBRARY_PATH=$::repo/examples/nodejs;"
--- init_by_lua_block eval: $::init
--- config
location = /t {
    content_by_lua_block {
        call("demo/echo?,init", "")
        local rt = ngx.load_ffi("ffi_nodejs", "demo/echo?,init",
                                {is_global = true})
        local ok, res, err = rt:call()
        ngx.say(tostring(ok), " ", tostring(res), " ", tostring(err))
        call("demo/echo?,init", "a\0b\255")
    }
}
--- request
GET /t
--- response_body eval
"true  nil\ntrue nil nil\ntrue a\0b\xff nil\n"
--- no_error_log
[error]



=== TEST 3: one Node.js, several runtimes: cfg's rest (commas and all)
--- main_config eval: $::main_config
--- init_by_lua_block eval: $::init
--- config
location = /t {
    content_by_lua_block {
        call("t410/prefix,init,a:", "x")
        call("t410/prefix?,init,b,c:", "y")
        call("t410/prefix,init", "z")
        call("demo/echo?,init", "beside")
        call("t410/prefix,init,a:", "again")
        local rt = ngx.load_ffi("ffi_nodejs", "t410/prefix,init,a:",
                                {is_global = true})
        local ok, res, err = rt:call()
        ngx.say(tostring(ok), " ", tostring(res), " ", tostring(err))
    }
}
--- request
GET /t
--- response_body
true a:x nil
true b,c:y nil
true z nil
true beside nil
true a:again nil
true a:(none) nil
--- no_error_log
[error]



=== TEST 4: init fails: nil and the code, the reason logged, Node serves on
--- main_config eval: $::main_config
--- init_by_lua_block eval: $::init
--- config
location = /t {
    content_by_lua_block {
        call("no/such/module,init", "x")
        call("no/such/module?,init", "x")
        call("t410/fail,nothing", "x")
        call("t410/fail,notAFunction", "x")
        call("t410/fail,seven", "x")
        call("t410/fail?,boom", "x")
        call("t410/fail,text", "x")
        call("t410/fail,exit", "x")
        call("t410/syntax?,init", "x")
        call("t410/prefix", "x")
        call(",init", "x")
        call("demo/echo?,init", "still here")
    }
}
--- request
GET /t
--- response_body
load: nil 1
load: nil 1
load: nil 1
load: nil 1
load: nil 7
load: nil 1
load: nil 1
load: nil 9
load: nil 1
load: nil 1
load: nil 1
true still here nil
--- error_log
Error: Cannot find module 'no/such/module'
libffi_nodejs: module t410/fail exports no function nothing
libffi_nodejs: module t410/fail exports no function notAFunction
libffi_nodejs: "t410/fail,seven": init returned 7
Error: boom in init
libffi_nodejs: t410/fail.text() returned abc, not an int
libffi_nodejs: process.exit(3) ignored: it would end nginx's worker
SyntaxError
libffi_nodejs: bad cfg "t410/prefix"
libffi_nodejs: bad cfg ",init"



=== TEST 5: an exception thrown later, outside any call, is logged, not fatal
--- main_config eval: $::main_config
--- init_by_lua_block eval: $::init
--- config
location = /t {
    content_by_lua_block {
        call("t410/fail,later", "x")
        ngx.sleep(0.2)
        call("demo/echo?,init", "still here")
    }
}
--- request
GET /t
--- response_body
load: nil 6
true still here nil
--- error_log
libffi_nodejs: uncaught exception: Error: async boom



=== TEST 6: NODE_OPTIONS reach Node.js: a module --require'd first
--- main_config eval
"$::main_config\nenv 'NODE_OPTIONS=--require $::nodelib/t410/preload.js';"
--- init_by_lua_block eval: $::init
--- config
location = /t {
    content_by_lua_block {
        call("t410/prefix,init,", "x")
    }
}
--- request
GET /t
--- response_body
true <preloaded>x nil
--- no_error_log
[error]



=== TEST 7: Node.js that cannot start: nil, 1 each time, and no crash
--- main_config eval
"$::main_config\nenv NODE_OPTIONS=--no-such-option;"
--- init_by_lua_block eval: $::init
--- config
location = /t {
    content_by_lua_block {
        call("demo/echo?,init", "x")
        call("t410/prefix,init,", "y")
        ngx.say("nginx serves on")
    }
}
--- request
GET /t
--- response_body
load: nil 1
load: nil 1
nginx serves on
--- error_log
--no-such-option is not allowed in NODE_OPTIONS
libffi_nodejs: Node.js initialization failed
libffi_nodejs: Node.js could not start in this process
