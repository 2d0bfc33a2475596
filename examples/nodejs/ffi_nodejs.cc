/*
 * libffi_nodejs: lua-resty-ffi's generic loader for Node.js, embedding
 * Debian's libnode (Node 18): one Node.js environment per process.
 *
 * cfg is "<module>[?],<function>[,<rest>]", as upstream: the loader
 * require()s the module and calls its exported function(rest, tq), tq being
 * a BigInt; the module polls and answers through require("resty_ffi") (the
 * addon resty_ffi.node), usually from a worker_threads thread. "?" drops the
 * module from the require cache first, so a runtime restart loads it anew.
 *
 * Node's event loop runs on a thread of this loader, started by the first
 * libffi_init; libffi_init hands its call to that thread and waits for the
 * function's return value. Modules are searched in the folder of the
 * library file nginx loaded (nginx maps a copy of it, and says which file),
 * then in $NODE_PATH. libnode cannot be unloaded: this library pins itself
 * (never dlclose()d).
 *
 * console.* and process.stdout/stderr (worker threads' too: Node forwards
 * them to the main thread's) become lines of nginx's error.log through the
 * host's ngx_http_lua_ffi_log(): console.log at notice, info at info,
 * debug at debug, warn and error (and stderr) at warn. Lines logged while
 * a runtime's init function runs name that runtime; the others name none
 * (the addon's log(tq, level, msg) names one explicitly).
 */

#include <dlfcn.h>
#include <errno.h>
#include <libgen.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include <node.h>
#include <uv.h>


/* how long a call may wait for the event loop to take it up */
#define FFI_NODE_QUEUE_TIMEOUT  30


/*
 * Debian's libnode reads these builtins from node-acorn, node-undici and
 * node-cjs-module-lexer when it starts, and abort()s if one is missing.
 */
static const char  *ffi_node_debian_builtins[] = {
    "/usr/share/nodejs/acorn/dist/acorn.js",
    "/usr/share/nodejs/acorn-walk/dist/walk.js",
    "/usr/share/nodejs/cjs-module-lexer/lexer.js",
    "/usr/share/nodejs/cjs-module-lexer/dist/lexer.js",
    "/usr/share/nodejs/undici/undici-fetch.js",
    NULL
};


enum ffi_node_state_e {
    FFI_NODE_NONE = 0,
    FFI_NODE_STARTING,
    FFI_NODE_RUNNING,
    FFI_NODE_FAILED
};


enum ffi_node_call_state_e {
    FFI_NODE_CALL_QUEUED = 0,
    FFI_NODE_CALL_RUNNING,
    FFI_NODE_CALL_DONE
};


/* one libffi_init, handed to the event loop thread */
struct ffi_node_call_t {
    ffi_node_call_t       *next;
    const char            *cfg;
    void                  *tq;
    int                    rc;
    ffi_node_call_state_e  state;
};


extern "C" int libffi_init(char *cfg, void *tq);

/* the host's, where it has it (ours does): the file we were loaded from */
extern "C" int ngx_http_lua_ffi_log(void *tq, int level, const char *msg,
    int len) __attribute__((weak));
extern "C" const char *ngx_http_lua_ffi_library_path(void *tq)
    __attribute__((weak));

static void ffi_node_log(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
static int ffi_node_start(void *tq);
static int ffi_node_set_path(void *tq);
static int ffi_node_check_builtins(void);
static void ffi_node_exit(int status, void *data);
static void *ffi_node_main(void *data);
static int ffi_node_serve(node::CommonEnvironmentSetup *setup);
static void ffi_node_set_state(ffi_node_state_e state);
static void ffi_node_take_calls(uv_async_t *handle);
static int ffi_node_call_js(ffi_node_call_t *call);
static void ffi_node_unlink(ffi_node_call_t *call);


/*
 * Runs as the embedder's main script, with the builtin-only require: it
 * returns setup(file), which returns the function every libffi_init calls
 * with (cfg, tq). That function never throws: failures are logged, rc 1.
 */
static const char ffi_node_bootstrap[] = R"JS(
'use strict';
const Module = require('module');

return function setup(loader, log) {
    const util = require('util');

    /* one nginx line per line of text, at an nginx level */
    const lines = (level, text) => {
        for (const line of text.split('\n')) {
            log(level, line);
        }
    };

    for (const [name, level] of [['log', 6], ['info', 7], ['debug', 8],
                                 ['warn', 5], ['error', 5]])
    {
        console[name] = (...args) => lines(level, util.format(...args));
    }

    /* direct writes, and what worker threads print, come through here */
    for (const [stream, level] of [[process.stdout, 6], [process.stderr, 5]]) {
        let partial = '';

        stream.write = (chunk, encoding, done) => {
            const text = partial + (typeof chunk === 'string'
                                    ? chunk : Buffer.from(chunk).toString());
            const cut = text.lastIndexOf('\n');

            if (cut >= 0) {
                lines(level, text.slice(0, cut));
            }

            partial = text.slice(cut + 1);

            const cb = typeof encoding === 'function' ? encoding : done;
            if (typeof cb === 'function') {
                process.nextTick(cb);
            }

            return true;
        };
    }

    /* nginx must outlive a module's mistake: log it, never exit */
    process.on('uncaughtException', (err) => {
        console.error('libffi_nodejs: uncaught exception:', err);
    });

    return function (cfg, tq) {
        const m = /^([^,]+),([^,]+)(?:,([\s\S]*))?$/.exec(cfg);

        if (m === null) {
            console.error(`libffi_nodejs: bad cfg "${cfg}": ` +
                          'expected "<module>[?],<function>[,<rest>]"');
            return 1;
        }

        let name = m[1];
        const fn = m[2];

        /*
         * Relative to the loader ("Require stack" names it in errors); a
         * new one each time: the modules it loads become its children, and
         * a module dropped from the cache must not stay one of them.
         */
        const load = Module.createRequire(loader);

        try {
            if (name.endsWith('?')) {
                name = name.slice(0, -1);
                delete load.cache[load.resolve(name)];
            }

            const mod = load(name);

            if (typeof mod[fn] !== 'function') {
                console.error(`libffi_nodejs: module ${name} exports ` +
                              `no function ${fn}`);
                return 1;
            }

            const rc = mod[fn](m[3] === undefined ? '' : m[3], tq);

            /* upstream read no number as 0: a function may return nothing */
            if (rc === undefined) {
                return 0;
            }

            if (!Number.isInteger(rc) || rc !== (rc | 0)) {
                console.error(`libffi_nodejs: ${name}.${fn}() returned ` +
                              `${String(rc)}, not an int`);
                return 1;
            }

            return rc;

        } catch (err) {
            console.error(`libffi_nodejs: ${name}.${fn}():`, err);
            return 1;
        }
    };
};
)JS";


/* guards everything below; calls wait on the condition */
static pthread_mutex_t            ffi_node_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t             ffi_node_cond = PTHREAD_COND_INITIALIZER;
static ffi_node_state_e           ffi_node_state;
static ffi_node_call_t           *ffi_node_calls;
static uv_async_t                 ffi_node_wakeup;

/* the event loop thread's own */
static std::string                ffi_node_file;   /* this library */
static v8::Global<v8::Function>  *ffi_node_load;    /* never freed */
static void                      *ffi_node_tq;      /* in an init call */
static node::CommonEnvironmentSetup  *ffi_node_setup;


extern "C" int
libffi_init(char *cfg, void *tq)
{
    int               rc;
    ffi_node_call_t   call, **last;
    struct timespec   deadline;

    if (cfg == NULL) {
        ffi_node_log("no cfg: expected \"<module>[?],<function>[,<rest>]\"");
        return 1;
    }

    pthread_mutex_lock(&ffi_node_lock);

    if (ffi_node_start(tq) != 0) {
        pthread_mutex_unlock(&ffi_node_lock);
        return 1;
    }

    call.next = NULL;
    call.cfg = cfg;
    call.tq = tq;
    call.rc = 1;
    call.state = FFI_NODE_CALL_QUEUED;

    for (last = &ffi_node_calls; *last; last = &(*last)->next) {
        /* void */
    }

    *last = &call;

    uv_async_send(&ffi_node_wakeup);

    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += FFI_NODE_QUEUE_TIMEOUT;

    /*
     * A call still queued can be withdrawn; one that runs cannot (the
     * module may already poll tq), so it is waited for, however long.
     */
    while (call.state == FFI_NODE_CALL_QUEUED) {
        if (pthread_cond_timedwait(&ffi_node_cond, &ffi_node_lock, &deadline)
            == ETIMEDOUT
            && call.state == FFI_NODE_CALL_QUEUED)
        {
            ffi_node_unlink(&call);
            ffi_node_log("\"%s\": the event loop did not take the call in "
                         "%d s (is some JavaScript code blocking it?)",
                         cfg, FFI_NODE_QUEUE_TIMEOUT);
            pthread_mutex_unlock(&ffi_node_lock);
            return 1;
        }
    }

    while (call.state != FFI_NODE_CALL_DONE) {
        pthread_cond_wait(&ffi_node_cond, &ffi_node_lock);
    }

    rc = call.rc;

    pthread_mutex_unlock(&ffi_node_lock);

    return rc;
}


static void
ffi_node_log(const char *fmt, ...)
{
    va_list  args;
    char     line[1024];

    va_start(args, fmt);
    vsnprintf(line, sizeof(line), fmt, args);
    va_end(args);

    /* stderr is nginx's error log in a worker */
    fprintf(stderr, "libffi_nodejs: %s\n", line);
}


/* Starts the event loop thread once; called with ffi_node_lock held. */

static int
ffi_node_start(void *tq)
{
    int             err;
    sigset_t        async, saved;
    pthread_t       tid;
    pthread_attr_t  attr;

    if (ffi_node_state == FFI_NODE_NONE) {

        if (ffi_node_check_builtins() != 0 || ffi_node_set_path(tq) != 0) {
            ffi_node_state = FFI_NODE_FAILED;
            return 1;
        }

        if (on_exit(ffi_node_exit, NULL) != 0) {
            ffi_node_log("on_exit() failed");
            ffi_node_state = FFI_NODE_FAILED;
            return 1;
        }

        /*
         * Every thread of Node's (the loop's, V8's, libuv's, workers')
         * descends from this one and inherits its signal mask: none of them
         * may take the signals that only the nginx worker's thread handles.
         */
        sigfillset(&async);
        sigdelset(&async, SIGSEGV);
        sigdelset(&async, SIGBUS);
        sigdelset(&async, SIGFPE);
        sigdelset(&async, SIGILL);
        sigdelset(&async, SIGTRAP);
        sigdelset(&async, SIGSYS);
        pthread_sigmask(SIG_BLOCK, &async, &saved);

        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        err = pthread_create(&tid, &attr, ffi_node_main, NULL);
        pthread_attr_destroy(&attr);

        pthread_sigmask(SIG_SETMASK, &saved, NULL);

        if (err != 0) {
            ffi_node_log("pthread_create() failed: %s", strerror(err));
            ffi_node_state = FFI_NODE_FAILED;
            return 1;
        }

        ffi_node_state = FFI_NODE_STARTING;
    }

    while (ffi_node_state == FFI_NODE_STARTING) {
        pthread_cond_wait(&ffi_node_cond, &ffi_node_lock);
    }

    if (ffi_node_state == FFI_NODE_FAILED) {
        ffi_node_log("Node.js could not start in this process");
        return 1;
    }

    return 0;
}


/*
 * exit() runs the atexit handlers and static destructors registered before
 * Node started (OpenSSL's, libnode's own) while Node's threads still run on
 * what they tear down: a worker tearing down its last Worker would crash in
 * its last moment. Node cannot be stopped from here in time, so the exit is
 * cut short, with the status exit() was given; handlers registered after
 * Node started have run already.
 */

static void
ffi_node_exit(int status, void *data)
{
    (void) data;

    fflush(stdout);
    fflush(stderr);

    _exit(status);
}


static int
ffi_node_check_builtins(void)
{
    const char  **file;

    for (file = ffi_node_debian_builtins; *file; file++) {
        if (access(*file, R_OK) != 0) {
            ffi_node_log("libnode needs %s: install node-acorn, node-undici "
                         "and node-cjs-module-lexer", *file);
            return 1;
        }
    }

    return 0;
}


/*
 * Puts the folder that holds this library first in $NODE_PATH: there are
 * the modules and resty_ffi.node. The environment, not a require hook, so
 * that worker threads (which copy it) search the same folders. The host
 * maps a shadow copy of the library, so its word on the file comes first.
 * Also pins this library: Node's threads outlive any dlclose().
 */

static int
ffi_node_set_path(void *tq)
{
    char         *file;
    void         *self;
    const char   *origin, *old;
    std::string   path;
    Dl_info       info;

    if (dladdr((void *) libffi_init, &info) == 0 || info.dli_fname == NULL) {
        ffi_node_log("dladdr() cannot tell where libffi_nodejs.so is");
        return 1;
    }

    self = dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
    if (self == NULL) {
        ffi_node_log("cannot pin \"%s\": %s", info.dli_fname, dlerror());
        return 1;
    }

    origin = ngx_http_lua_ffi_library_path
             ? ngx_http_lua_ffi_library_path(tq) : NULL;

    if (origin == NULL) {
        origin = info.dli_fname;
    }

    /* absolute: the name dlopen() got may be relative */
    file = realpath(origin, NULL);
    if (file == NULL) {
        ffi_node_log("realpath(\"%s\") failed: %s", origin, strerror(errno));
        return 1;
    }

    ffi_node_file = file;
    path = dirname(file);
    free(file);

    old = getenv("NODE_PATH");

    if (old != NULL && *old != '\0') {
        path += ":";
        path += old;
    }

    if (setenv("NODE_PATH", path.c_str(), 1) != 0) {
        ffi_node_log("setenv(NODE_PATH) failed: %s", strerror(errno));
        return 1;
    }

    return 0;
}


static void *
ffi_node_main(void *data)
{
    std::vector<std::string>  args = { "nginx" }, errors;

    (void) data;

    /*
     * Node must leave the process's state to nginx: its signal handlers
     * and dispositions, its stdio and tty, its resource limits. Without
     * its default signal handling Node also leaves V8's WebAssembly trap
     * handler off: SIGSEGV stays with a JVM in the same process, whose
     * implicit null checks need it (hot-reload.md, fault signals).
     */
    std::unique_ptr<node::InitializationResult> init =
        node::InitializeOncePerProcess(args, {
            node::ProcessInitializationFlags::kNoStdioInitialization,
            node::ProcessInitializationFlags::kNoDefaultSignalHandling,
            node::ProcessInitializationFlags::kNoAdjustResourceLimits,
            node::ProcessInitializationFlags::kNoPrintHelpOrVersionOutput
        });

    for (const std::string &err : init->errors()) {
        ffi_node_log("%s", err.c_str());
    }

    if (init->early_return()) {
        ffi_node_log("Node.js initialization failed: %d", init->exit_code());
        ffi_node_set_state(FFI_NODE_FAILED);
        return NULL;
    }

    /*
     * No inspector (it would take SIGUSR1, nginx's log reopening signal);
     * not owning the process state keeps process.chdir() and such out of
     * nginx's way.
     */
    std::unique_ptr<node::CommonEnvironmentSetup> setup =
        node::CommonEnvironmentSetup::Create(init->platform(), &errors,
                                             init->args(), init->exec_args(),
                                             node::EnvironmentFlags::
                                                 kNoCreateInspector);

    if (!setup) {
        for (const std::string &err : errors) {
            ffi_node_log("%s", err.c_str());
        }

        ffi_node_set_state(FFI_NODE_FAILED);
        return NULL;
    }

    ffi_node_setup = setup.get();

    if (ffi_node_serve(ffi_node_setup) != 0) {
        ffi_node_set_state(FFI_NODE_FAILED);
        return NULL;
    }

    /* the loop ended: only node::Stop() or a fatal error get here */
    ffi_node_log("the Node.js event loop stopped");
    ffi_node_set_state(FFI_NODE_FAILED);

    return NULL;
}


/*
 * log(level, text) of the bootstrap: one line into nginx's error.log, for
 * the runtime whose init function runs, if one does.
 */

static void
ffi_node_native_log(const v8::FunctionCallbackInfo<v8::Value> &args)
{
    int32_t                 level;
    v8::Isolate            *isolate = args.GetIsolate();
    v8::Local<v8::Context>  context = isolate->GetCurrentContext();

    if (args.Length() < 2
        || !args[0]->Int32Value(context).To(&level)
        || level < 1 || level > 8)
    {
        return;
    }

    v8::String::Utf8Value  text(isolate, args[1]);

    if (*text == NULL) {
        return;
    }

    if (ngx_http_lua_ffi_log == NULL) {
        /* a host without the service: stderr is nginx's error log */
        fprintf(stderr, "%.*s\n", text.length(), *text);
        return;
    }

    /* len 0 means NUL-terminated: an empty line is "" all the same */
    (void) ngx_http_lua_ffi_log(ffi_node_tq, level,
                                text.length() ? *text : "", text.length());
}


/* Loads the environment, then runs the event loop; returns if it fails. */

static int
ffi_node_serve(node::CommonEnvironmentSetup *setup)
{
    v8::Isolate            *isolate = setup->isolate();
    node::Environment      *env = setup->env();
    v8::Local<v8::Value>    boot, load, argv[2];
    v8::Local<v8::Function> log;

    v8::Locker              locker(isolate);
    v8::Isolate::Scope      isolate_scope(isolate);
    v8::HandleScope         handle_scope(isolate);
    v8::Local<v8::Context>  context = setup->context();
    v8::Context::Scope      context_scope(context);

    node::SetProcessExitHandler(env, [](node::Environment *, int code) {
        ffi_node_log("process.exit(%d) ignored: it would end nginx's "
                     "worker", code);
    });

    if (!node::LoadEnvironment(env, ffi_node_bootstrap).ToLocal(&boot)
        || !boot->IsFunction())
    {
        ffi_node_log("the loader's bootstrap script failed");
        return 1;
    }

    argv[0] = v8::String::NewFromUtf8(isolate, ffi_node_file.c_str())
                  .ToLocalChecked();

    if (!v8::Function::New(context, ffi_node_native_log).ToLocal(&log)) {
        ffi_node_log("the loader's bootstrap script failed");
        return 1;
    }

    argv[1] = log;

    if (!boot.As<v8::Function>()->Call(context, context->Global(), 2, argv)
             .ToLocal(&load)
        || !load->IsFunction())
    {
        ffi_node_log("the loader's bootstrap script failed");
        return 1;
    }

    /* not a static object: its destructor would run at exit() */
    ffi_node_load = new v8::Global<v8::Function>(isolate,
                                                 load.As<v8::Function>());

    /* the handle stays referenced: the loop never runs out of work */
    if (uv_async_init(setup->event_loop(), &ffi_node_wakeup,
                      ffi_node_take_calls)
        != 0)
    {
        ffi_node_log("uv_async_init() failed");
        return 1;
    }

    ffi_node_set_state(FFI_NODE_RUNNING);

    (void) node::SpinEventLoop(env);

    return 0;
}


static void
ffi_node_set_state(ffi_node_state_e state)
{
    pthread_mutex_lock(&ffi_node_lock);
    ffi_node_state = state;
    pthread_cond_broadcast(&ffi_node_cond);
    pthread_mutex_unlock(&ffi_node_lock);
}


/* On the event loop: runs the queued calls, one at a time, in order. */

static void
ffi_node_take_calls(uv_async_t *handle)
{
    int               rc;
    ffi_node_call_t  *call;

    (void) handle;

    for ( ;; ) {
        pthread_mutex_lock(&ffi_node_lock);

        call = ffi_node_calls;

        if (call == NULL) {
            pthread_mutex_unlock(&ffi_node_lock);
            return;
        }

        ffi_node_calls = call->next;
        call->state = FFI_NODE_CALL_RUNNING;
        pthread_cond_broadcast(&ffi_node_cond);

        pthread_mutex_unlock(&ffi_node_lock);

        /* the caller waits for us: call->cfg stays valid */
        rc = ffi_node_call_js(call);

        pthread_mutex_lock(&ffi_node_lock);
        call->rc = rc;
        call->state = FFI_NODE_CALL_DONE;
        pthread_cond_broadcast(&ffi_node_cond);
        pthread_mutex_unlock(&ffi_node_lock);
    }
}


static int
ffi_node_call_js(ffi_node_call_t *call)
{
    int32_t                 rc;
    v8::Isolate            *isolate = ffi_node_setup->isolate();
    v8::HandleScope         handle_scope(isolate);
    v8::Local<v8::Context>  context = ffi_node_setup->context();
    v8::Context::Scope      context_scope(context);
    v8::Local<v8::Value>    argv[2], ret;

    if (!v8::String::NewFromUtf8(isolate, call->cfg).ToLocal(&argv[0])) {
        ffi_node_log("cfg \"%s\" is not a valid string", call->cfg);
        return 1;
    }

    argv[1] = v8::BigInt::NewFromUnsigned(isolate,
                                          (uint64_t) (uintptr_t) call->tq);

    /* MakeCallback() also runs the microtasks and process.nextTick()s */
    ffi_node_tq = call->tq;

    if (!node::MakeCallback(isolate, context->Global(),
                            ffi_node_load->Get(isolate), 2, argv, {0, 0})
             .ToLocal(&ret)
        || !ret->Int32Value(context).To(&rc))
    {
        ffi_node_tq = NULL;
        return 1;
    }

    ffi_node_tq = NULL;

    if (rc != 0) {
        ffi_node_log("\"%s\": init returned %d", call->cfg, (int) rc);
    }

    return rc;
}


/* Withdraws a call still queued; called with ffi_node_lock held. */

static void
ffi_node_unlink(ffi_node_call_t *call)
{
    ffi_node_call_t  **p;

    for (p = &ffi_node_calls; *p; p = &(*p)->next) {
        if (*p == call) {
            *p = call->next;
            return;
        }
    }
}
