# The Node.js loader and the runtime services: console.* and process.stdout
# and stderr reach error.log at their levels (naming the runtime during its
# init), the addon logs for a runtime and shares lua_shared_dict zones.
use lib 't/lib';
use FFITest;
use ServiceTest;

our $repo = FFITest::repo();
our $root = FFITest::servroot();

our $nodelib = "$root/nodelib";
ServiceTest::write_module($nodelib, 't740.js', <<'JS');
const { Worker, isMainThread, workerData } = require('node:worker_threads');
const ffi = require('resty_ffi');

if (isMainThread) {
    exports.init = (cfg, tq) => {
        console.log('init log says', cfg);
        console.info('init info says %d', 42);
        console.warn('init warn says');
        console.error('init error says\nin two lines');
        process.stdout.write('init stdout says ');
        process.stdout.write('in parts\n');
        new Worker(__filename, { workerData: { tq } });
        return 0;
    };
} else {
    const { tq } = workerData;
    for (;;) {
        const task = ffi.poll_task(tq);
        if (task === 0n) {
            break;
        }
        const req = ffi.get_req(task);
        let out;
        if (req === 'log') {
            ffi.log(tq, 5, 'addon log from the poller');
            console.log('worker console says');
            out = 'logged';
        } else if (req === 'dict') {
            const r = [];
            ffi.dict_set('ffi_dict', 'node', 'from node');
            r.push(String(ffi.dict_get('ffi_dict', 'lua')));
            r.push(String(ffi.dict_get('ffi_dict', 'absent')));
            r.push(ffi.dict_incr('ffi_dict', 'n', 2, 40));
            ffi.dict_set('ffi_dict', 'bytes', Buffer.from([0x61, 0, 0x62]));
            r.push(ffi.dict_get('ffi_dict', 'bytes').length);
            ffi.dict_set('ffi_dict', 'bytes', null);
            r.push(String(ffi.dict_get('ffi_dict', 'bytes')));
            try {
                ffi.dict_get('nodict', 'k');
            } catch (e) {
                r.push(e.message);
            }
            out = r.join(' | ');
        } else if (req === 'count') {
            for (let i = 0; i < 20000; i++) {
                ffi.dict_incr('ffi_dict', 'counter');
            }
            out = 'counted';
        }
        ffi.respond(task, 0, out);
    }
}
JS

our $main_config = "env LD_LIBRARY_PATH=$repo/examples/nodejs;\n"
                 . "env NODE_PATH=$nodelib;";

run_tests();

__DATA__

=== TEST 1: console.* and process.stdout from init, at their levels, named
--- main_config eval: $::main_config
--- config
location = /t {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("ffi_nodejs", "t740,init,hello",
                                       {is_global = true}))
        ngx.say(select(2, rt:call("log")))
    }
}
--- request
GET /t
--- timeout: 60
--- response_body
logged
--- wait_for_log_timeout: 60
--- wait_for_log eval
[qr/\[notice\] \d+#\d+: ffi: \[ffi_nodejs v1\] init log says hello$/m,
 qr/\[info\] \d+#\d+: ffi: \[ffi_nodejs v1\] init info says 42$/m,
 qr/\[warn\] \d+#\d+: ffi: \[ffi_nodejs v1\] init warn says$/m,
 qr/\[warn\] \d+#\d+: ffi: \[ffi_nodejs v1\] init error says$/m,
 qr/\[warn\] \d+#\d+: ffi: \[ffi_nodejs v1\] in two lines$/m,
 qr/\[notice\] \d+#\d+: ffi: \[ffi_nodejs v1\] init stdout says in parts$/m,
 qr/\[warn\] \d+#\d+: ffi: \[ffi_nodejs v1\] addon log from the poller$/m,
 qr/\[notice\] \d+#\d+: ffi: worker console says$/m]
--- no_error_log
[error]



=== TEST 2: the addon's dict_* and Lua, both ways
--- main_config eval: $::main_config
--- http_config
lua_shared_dict ffi_dict 1m;
--- config
location = /t {
    content_by_lua_block {
        local d = ngx.shared.ffi_dict
        d:set("lua", "from lua")
        local rt = assert(ngx.load_ffi("ffi_nodejs", "t740,init",
                                       {is_global = true}))
        ngx.say(select(2, rt:call("dict")))
        ngx.say(d:get("node"), " ", d:get("n"))
    }
}
--- request
GET /t
--- timeout: 60
--- response_body
from lua | null | 42 | 3 | null | no such lua_shared_dict
from node 42
--- no_error_log
[error]



=== TEST 3: a Node.js worker and Lua increment one counter: exact
--- main_config eval: $::main_config
--- http_config
lua_shared_dict ffi_dict 1m;
--- config eval
ServiceTest::counter_config("ffi_nodejs", "t740,init", "count", 20000)
--- request
GET /t
--- timeout: 60
--- response_body
counted 40000
--- no_error_log
[error]



=== TEST 4: the demo logs its start and counts it in ffi_examples
--- main_config eval: $::main_config
--- http_config
lua_shared_dict ffi_examples 1m;
--- config
location = /t {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("ffi_nodejs", "demo/echo?,init",
                                       {is_global = true}))
        ngx.say(select(2, rt:call("echo")))
        ngx.say("starts: ", ngx.shared.ffi_examples:get("nodejs_starts"))
    }
}
--- request
GET /t
--- timeout: 60
--- response_body
echo
starts: 1
--- wait_for_log_timeout: 60
--- wait_for_log eval
[qr/\[notice\] \d+#\d+: ffi: \[ffi_nodejs v1\] demo\/echo: start number 1$/m]
--- no_error_log
[error]
