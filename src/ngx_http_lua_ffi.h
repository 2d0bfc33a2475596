/*
 * The runtime ABI of lua-resty-ffi for nginx: what a library written in C
 * (or any language with a C ABI) implements and calls. Binary compatible
 * with upstream lua-resty-ffi; a library needs no header of ours to work.
 *
 * THE CONTRACT
 *
 * A *library* is a shared object that exports
 *
 *     int libffi_init(char *cfg, void *tq);
 *
 * Lua calls `ngx.load_ffi(lib, cfg, opts)`. The host (this nginx module, in
 * each worker process) then:
 *
 *   1. checks the file with libelf before anything is mapped: an ELF shared
 *      object of this machine's class and architecture that exports
 *      libffi_init as a function; the GNU build-id is recorded;
 *   2. copies it to a private *shadow copy* and dlopen()s the copy, so that
 *      a new file dropped at the same path never touches mapped code and
 *      two versions can be mapped side by side;
 *   3. creates a task queue `tq` and calls libffi_init(cfg, tq) on the
 *      worker's event loop thread. cfg is a NUL-terminated copy of the Lua
 *      string (or NULL), valid only during the call. Return 0 on success;
 *      any other value is handed to Lua as `nil, rc` and the runtime does
 *      not exist. libffi_init must not block for long: start your threads
 *      (or goroutines) and return.
 *
 * The pair (library, cfg) is a *runtime*: the threads you started, polling
 * the queue:
 *
 *     void *task = ngx_http_lua_ffi_task_poll(tq);    blocks until a task
 *     char *req  = ngx_http_lua_ffi_get_req(task, &len);
 *     ... work, on any thread ...
 *     ngx_http_lua_ffi_respond(task, rc, rsp, rsp_len);
 *
 * Each task is answered exactly once, from any thread. rsp is malloc()ed by
 * you and free()d by the host (NULL is fine); rsp_len 0 means rsp is a
 * NUL-terminated string. rc 0 is success (Lua gets `true, rsp`); any other
 * rc is a failure (Lua gets `false, rc, rsp`). The request buffer belongs to
 * the host and is valid until you answer; as upstream, it ends with a NUL
 * byte that len does not count (req[len] == '\0'), so it may be read as a
 * C string when the request holds no NUL of its own. It is NULL for a call
 * with no argument, and then len is 0. len may be passed as NULL. The
 * buffer is READ-ONLY (char * only for upstream's signature): from 16 KB on
 * it is the Lua string itself, not a copy, kept alive until you answer,
 * also when Lua stopped waiting (timeout, client gone) and while the
 * worker leaves with your runtime abandoned. Copy what you want
 * to change or keep after the answer.
 *
 * A task is an opaque handle, pointer-sized and never 0: pass it back as
 * you got it. The host keeps its calls in a table and checks every handle:
 * respond() with anything but a task this runtime took from task_poll and
 * has not answered yet (a second answer, one for a call long answered,
 * however often the host reused the slot since, a guess of a task still in
 * the queue, garbage) completes no call and touches no queued task. It is
 * dropped (rsp is freed), counted for the runtime ("stray" in
 * /ffi/status) and logged once. get_req() on such a handle gives NULL.
 *
 * THE NULL TASK
 *
 * When the runtime is retired (runtime:__unload() from Lua, a hot reload
 * that replaced it, or the worker exiting), the host appends a NULL task
 * after the pending ones: task_poll() returns every task already queued,
 * then NULL. On NULL the runtime must stop: answer what it still holds,
 * let its threads return, and never call into the host with this tq again
 * (task_poll keeps returning NULL for a while so that every polling thread
 * of a multi-threaded runtime sees it, but tq is freed after a grace).
 * A runtime has *drained* when its NULL task was taken and every task it
 * was given was answered.
 *
 * RELOADS, AND WHAT A LIBRARY MUST DO ACROSS THEM
 *
 * `POST /ffi/reload?lib=NAME` (or a new file dropped at the library's path
 * with `ffi_watch on`) gives every live runtime of the library a fresh
 * start, in every worker:
 *
 *   - file changed:   the new file is checked, shadow-copied and dlopen()ed
 *                     next to the old one; libffi_init(cfg, new_tq) runs on
 *                     the new image for each live cfg;
 *   - file unchanged: libffi_init(cfg, new_tq) runs again on the same image
 *                     (a runtime restart: how the Python, Java and Node.js
 *                     loaders pick up new code; the Python loader's
 *                     venv= runtimes get a fresh sub-interpreter each).
 *
 * Only when every new libffi_init succeeded in every worker does the switch
 * happen: new calls go to the new runtimes, and each old runtime gets its
 * NULL task and drains its in-flight calls. If any libffi_init fails, the
 * new runtimes get their NULL task instead and the old ones serve on.
 * A canary reload (`&canary=P`) starts the new runtimes the same way but
 * sends them only a share of the calls, for as long as the canary runs:
 * both versions serve side by side until the admin promotes the new one
 * (the old runtimes get their NULL task) or rolls it back (the new ones
 * get it).
 * So, for a runtime of yours:
 *
 *   - two runtimes of the same library (two versions, or the same image
 *     twice) may be alive at once: keep per-runtime state per tq, not in
 *     globals that a second libffi_init would clobber;
 *   - on NULL, run no more of your code after your threads return: the
 *     image may be dlclose()d once every runtime on it drained and a grace
 *     period passed (unless pinned). Join your threads where a destructor
 *     (__attribute__((destructor))) can see them, and do not leave timers,
 *     signal handlers or atexit() hooks pointing into the image;
 *   - images are pinned (never dlclose()d) by default, as upstream:
 *     opts.unpin = true lets an image go once it has drained. Images that
 *     need the Go runtime, the JVM, libnode or libpython are pinned for
 *     life whatever opts say, and a changed file of such a library is
 *     refused (409): restart their runtimes instead.
 *
 * AT WORKER EXIT
 *
 * Every runtime gets its NULL task; the worker waits up to ffi_exit_timeout
 * for each to drain. The host's own code stays mapped while the process
 * lives, so a thread still in task_poll is safe. A runtime that did not
 * drain is abandoned: the worker leaves without running library code
 * again (no destructors), so a destructor that waits for a stuck thread
 * cannot hold the worker.
 *
 * SIGNALS
 *
 * nginx's signal handlers (HUP, USR1, WINCH, TERM, QUIT, USR2, ALRM, INT,
 * IO, CHLD) act only on the worker's event loop thread: one of these that
 * lands on a thread of yours, whatever its mask, is passed on to that
 * thread. Threads started in libffi_init inherit a mask that blocks them.
 * Do not install handlers for these signals: after dlopen() and after each
 * libffi_init the host puts nginx's back for those a worker acts on (QUIT,
 * WINCH, TERM, INT, USR1, CHLD) and logs a warning.
 *
 * WHERE YOUR THREADS RUN
 *
 * Constructors and libffi_init run on the worker's thread with its CPU set
 * switched to the runtime's (ffi_runtime_cpus; by default every CPU nginx
 * may use but the worker's own, when worker_cpu_affinity binds workers), so
 * every thread you start there, and every thread those start later,
 * inherits the runtime's CPUs, not the worker's. Do not bind your threads
 * back to the CPU you find libffi_init on: the worker's set is restored
 * when it returns.
 *
 * States of an image:   loading -> serving -> draining -> closed
 * States of a runtime:  serving -> draining -> drained (or stuck, when a
 *                       draining runtime never takes its NULL task)
 *
 * hot-reload.md tells the whole lifecycle and how to operate it.
 */

#ifndef _NGX_HTTP_LUA_FFI_H_INCLUDED_
#define _NGX_HTTP_LUA_FFI_H_INCLUDED_


#ifdef __cplusplus
extern "C" {
#endif


/* Exported by the library. */
int libffi_init(char *cfg, void *tq);

/* Provided by the host; thread-safe; may be called from any thread. */
void *ngx_http_lua_ffi_task_poll(void *tq);
char *ngx_http_lua_ffi_get_req(void *tsk, int *len);
void ngx_http_lua_ffi_respond(void *tsk, int rc, char *rsp, int rsp_len);

/*
 * The path of the library file the runtime was loaded from (an
 * extension). The host maps a private shadow copy through the descriptor
 * it checked, so dladdr() in the library names "/proc/self/fd/N" (and
 * $ORIGIN in a RUNPATH is no help); a loader that finds its code next to
 * itself (the Python, Java and Node.js loaders) asks this instead. Valid
 * while the runtime lives; callable from libffi_init on.
 */
const char *ngx_http_lua_ffi_library_path(void *tq);

/*
 * Batch polling (an extension; task_poll keeps working): takes up to n
 * tasks at once into tasks[], blocking until at least one is there.
 * Returns how many were taken; 0 means the NULL task (stop, as above).
 */
int ngx_http_lua_ffi_task_poll_batch(void *tq, void **tasks, int n);


/*
 * RUNTIME SERVICES (additions; a library that uses none of them needs no
 * change). Each is callable from any thread of the runtime, from
 * libffi_init on, until the runtime took its NULL task. A library that
 * wants to load into an older host too looks them up with
 * dlsym(RTLD_DEFAULT, "ngx_http_lua_ffi_log") instead of linking them.
 * The trial process (ffi_trial) provides them as well: there, log lines
 * go to the trial's stderr and every dict operation fails with ENODICT.
 *
 * ngx_http_lua_ffi_log: one line into the worker's error.log, at an nginx
 * level (NGX_LOG_EMERG 1 ... NGX_LOG_DEBUG 8), as
 *
 *     2026/01/02 10:00:00 [warn] 1234#1234: ffi: [NAME vN] the message
 *
 * NAME is the name the library was loaded with, N the runtime's version
 * (the library version it started as, /ffi/status's runtimes[].version).
 * len 0 means msg is NUL-terminated; trailing newlines are dropped; a line
 * over 2 KB is cut. Lines are written by the worker's event loop, so they
 * honour error_log's level and every target and survive `nginx -s
 * reopen`. The call never waits for the event loop: the line is copied
 * into a bounded per-worker buffer (256 KB between two turns of the loop).
 * Returns 0 (also when error_log's level filters the line out), or -1
 * when the line was dropped because the buffer was full (counted as
 * "log_dropped" per worker in /ffi/status) or level was out of range.
 * tq may be NULL: the line then carries no library name.
 */
int ngx_http_lua_ffi_log(void *tq, int level, const char *msg, int len);

/*
 * Shared dicts: the `lua_shared_dict NAME SIZE;` zones of nginx.conf, by
 * NAME, with ngx.shared.DICT's semantics; Lua and runtimes see one
 * another's writes at once, across every worker. Each call takes the
 * zone's lock for that one operation. Keys are bytes, 1 to 65535 of them;
 * a key_len (or val_len) below 0 means NUL-terminated. tq may be NULL.
 *
 * get:  *val is a malloc()ed copy (the caller free()s it), NUL-terminated
 *       beyond *val_len (val_len may be NULL). A number comes back as Lua's
 *       tostring() writes it ("42", "0.5", "1e+20", "inf"), a boolean as
 *       "true" or "false". A list value (lpush) is DICT_ETYPE.
 * set:  stores val as a Lua string; val NULL deletes the key. exptime in
 *       seconds (0: never; under 1 ms counts as 0); when the zone is full
 *       the least recently used entries are evicted, as set() does.
 * incr: by added to a number; an absent or expired key starts at init
 *       (and never expires); a live key keeps its expiry. *result (may be
 *       NULL) gets the new value. A value that is not a number: ETYPE.
 *
 * The names differ from lua-nginx-module's own ngx_http_lua_ffi_shdict_*
 * on purpose: those live in the same process with other signatures.
 */
#define NGX_HTTP_LUA_FFI_DICT_OK          0
#define NGX_HTTP_LUA_FFI_DICT_NOT_FOUND   1    /* get: absent or expired */
#define NGX_HTTP_LUA_FFI_DICT_ENODICT    -1    /* no lua_shared_dict NAME */
#define NGX_HTTP_LUA_FFI_DICT_ENOMEM     -2    /* zone full, or malloc */
#define NGX_HTTP_LUA_FFI_DICT_ETYPE      -3    /* not a number; a list */
#define NGX_HTTP_LUA_FFI_DICT_EINVAL     -4    /* bad key, exptime, NULL */

int ngx_http_lua_ffi_dict_get(void *tq, const char *dict, const char *key,
    int key_len, char **val, int *val_len);
int ngx_http_lua_ffi_dict_set(void *tq, const char *dict, const char *key,
    int key_len, const char *val, int val_len, double exptime);
int ngx_http_lua_ffi_dict_incr(void *tq, const char *dict, const char *key,
    int key_len, double by, double init, double *result);


#ifdef __cplusplus
}
#endif


#endif /* _NGX_HTTP_LUA_FFI_H_INCLUDED_ */
