// The Node.js echo runtime: answers every request with the same bytes.
// Written to upstream lua-resty-ffi's Node.js conventions (worker polls).
//
// Loaded by libffi_nodejs with cfg "demo/echo?,init": init() starts a worker
// thread that polls this runtime's queue and hands each task to the main
// thread, which answers it (there, a handler may await anything it likes).
// The worker ends when it polls the NULL task (0n).
//
// It also shows the runtime services: console.log reaches nginx's error.log
// (the loader routes it through ngx_http_lua_ffi_log), and each start is
// counted in the lua_shared_dict "ffi_examples", where nginx.conf has one
// (Lua reads it with ngx.shared.ffi_examples:get("nodejs_starts")).

'use strict';

const { Worker, isMainThread, parentPort } = require('node:worker_threads');
const ffi = require('resty_ffi');

if (isMainThread) {
    exports.init = (cfg, tq) => {
        let starts;
        try {
            starts = ffi.dict_incr('ffi_examples', 'nodejs_starts');
        } catch (err) {
            // no lua_shared_dict ffi_examples in nginx.conf: not counted
        }
        console.log('demo/echo: start' + (starts ? ` number ${starts}` : ''));

        const poller = new Worker(__filename);

        poller.on('message', (task) => {
            // a Buffer, not a string: the same bytes, whatever they are
            ffi.respond(task, 0, ffi.get_req_buffer(task));
        });

        poller.on('error', (err) => {
            console.error('demo/echo: poller failed:', err);
        });

        poller.postMessage(tq);

        return 0;
    };

} else {
    parentPort.once('message', (tq) => {
        for (;;) {
            const task = ffi.poll_task(tq);

            if (task === 0n) {
                // unloaded: tq is gone; with no listener left, we exit
                return;
            }

            parentPort.postMessage(task);
        }
    });
}
