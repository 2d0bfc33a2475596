/*
 * The event-loop bridge: posting a call and yielding the Lua coroutine,
 * the answering half of the runtime ABI, and the worker's eventfd through
 * which answers (from any thread) resume their coroutines.
 */

#include "ngx_http_lua_ffi_module.h"
#include "ngx_http_lua_util.h"

#include <poll.h>


#define NGX_HTTP_LUA_FFI_KEEPER_MSEC   1000


static void ngx_http_lua_ffi_bridge_handler(ngx_event_t *ev);
static void ngx_http_lua_ffi_bridge_drain_fd(void);
static void ngx_http_lua_ffi_call_complete(ngx_http_lua_ffi_task_t *task);
static void ngx_http_lua_ffi_call_wakeup(ngx_http_lua_ffi_task_t *task);
static ngx_int_t ngx_http_lua_ffi_call_resume(ngx_http_request_t *r);
static void ngx_http_lua_ffi_call_cleanup(void *data);
static void ngx_http_lua_ffi_call_timeout(ngx_event_t *ev);
static void ngx_http_lua_ffi_keeper_handler(ngx_event_t *ev);
static void ngx_http_lua_ffi_abandon_all(const char *why);
static void ngx_http_lua_ffi_busy_handler(ngx_event_t *ev);
static void ngx_http_lua_ffi_spin_init(ngx_cycle_t *cycle,
    ngx_http_lua_ffi_worker_t *w);


ngx_http_lua_ffi_worker_t  ngx_http_lua_ffi_worker;
ngx_http_lua_ffi_hooks_t   ngx_http_lua_ffi_hooks;

/* read by runtime threads: set before any runtime exists */
static int  ngx_http_lua_ffi_notify_fd = -1;

/* the call-latency histogram's bounds: 10 us to 10 s */
const uint64_t  ngx_http_lua_ffi_bounds_ns[NGX_HTTP_LUA_FFI_BOUNDS] = {
    10000, 25000, 50000, 100000, 250000, 500000,
    1000000, 2500000, 5000000, 10000000, 25000000, 50000000,
    100000000, 250000000, 500000000,
    1000000000, 2500000000ULL, 5000000000ULL, 10000000000ULL
};


ngx_int_t
ngx_http_lua_ffi_bridge_init(ngx_cycle_t *cycle, int fd)
{
    ngx_event_t                *rev;
    ngx_connection_t           *c;
    ngx_http_lua_ffi_worker_t  *w = &ngx_http_lua_ffi_worker;

    c = ngx_get_connection(fd, cycle->log);
    if (c == NULL) {
        return NGX_ERROR;
    }

    c->log = cycle->log;
    c->data = w;

    rev = c->read;
    rev->handler = ngx_http_lua_ffi_bridge_handler;
    rev->log = cycle->log;

    /* answers are signalled once per burst, so edge-triggered suffices */
    if (ngx_add_event(rev, NGX_READ_EVENT,
                      (ngx_event_flags & NGX_USE_CLEAR_EVENT)
                      ? NGX_CLEAR_EVENT : NGX_LEVEL_EVENT)
        != NGX_OK)
    {
        ngx_free_connection(c);
        return NGX_ERROR;
    }

    w->notify = c;
    ngx_http_lua_ffi_notify_fd = fd;
    ngx_queue_init(&w->calls);

    ngx_http_lua_ffi_spin_init(cycle, w);
    ngx_http_lua_ffi_queue_wake_init(cycle);

    w->busy.handler = ngx_http_lua_ffi_busy_handler;
    w->busy.log = cycle->log;
    w->busy.data = w;

    w->stray_notice.kind = NGX_HTTP_LUA_FFI_TASK_STRAY;

    w->keeper.handler = ngx_http_lua_ffi_keeper_handler;
    w->keeper.log = cycle->log;
    w->keeper.data = w;
    w->keeper.cancelable = 1;

    return NGX_OK;
}


/*
 * Spinning pays only when the worker and a runtime's thread can run on two
 * CPUs at once (ngx_http_lua_ffi_cpus_apart): not when both are confined to
 * the same CPU (worker_cpu_affinity with ffi_runtime_cpus inherit, or a
 * machine of one CPU). Then neither side spins.
 */

static void
ngx_http_lua_ffi_spin_init(ngx_cycle_t *cycle, ngx_http_lua_ffi_worker_t *w)
{
    u_char                         buf[NGX_HTTP_LUA_FFI_ERRLEN], *p;
    ngx_http_lua_ffi_main_conf_t  *fmcf;

    fmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_lua_ffi_module);

    w->busy_poll_ns = (uint64_t) fmcf->busy_poll_us * 1000;
    w->queue_spin_us = fmcf->queue_spin_us;

    if (!ngx_http_lua_ffi_cpus_apart()) {
        w->busy_poll_ns = 0;
        w->queue_spin_us = 0;
    }

    p = ngx_http_lua_ffi_cpus_describe(buf, buf + sizeof(buf));

    ngx_log_error(NGX_LOG_INFO, cycle->log, 0, "ffi: %*s: %s", p - buf, buf,
                  (w->busy_poll_ns || w->queue_spin_us)
                  ? "spinning on" : "no busy polling or queue spinning");
}


/*
 * At exit, before the wait for the runtimes: the event loop polls no more,
 * so every answer and NULL-task notice from now on writes to the eventfd
 * that the wait watches. What was pushed while polling was still on is
 * taken here: the store and the look pair with done_push() as in the busy
 * handler.
 */

void
ngx_http_lua_ffi_bridge_stop_polling(void)
{
    ngx_http_lua_ffi_worker_t  *w = &ngx_http_lua_ffi_worker;

    if (w->busy.posted) {
        ngx_delete_posted_event(&w->busy);
    }

    __atomic_store_n(&w->polling, 0, __ATOMIC_SEQ_CST);

    if (__atomic_load_n(&w->done, __ATOMIC_SEQ_CST)) {
        ngx_http_lua_ffi_bridge_process();
    }
}


/*
 * Whether a runtime still holds a request read in place: a string of the
 * Lua VM, which the cycle's pool closes when the worker leaves.
 */

ngx_uint_t
ngx_http_lua_ffi_bridge_holds_lua(void)
{
    ngx_queue_t              *q;
    ngx_http_lua_ffi_task_t  *task;

    for (q = ngx_queue_head(&ngx_http_lua_ffi_worker.calls);
         q != ngx_queue_sentinel(&ngx_http_lua_ffi_worker.calls);
         q = ngx_queue_next(q))
    {
        task = ngx_queue_data(q, ngx_http_lua_ffi_task_t, inflight);

        if (task->in_place) {
            return 1;
        }
    }

    return 0;
}


void
ngx_http_lua_ffi_bridge_exit(ngx_cycle_t *cycle)
{
    ngx_http_lua_ffi_worker_t  *w = &ngx_http_lua_ffi_worker;

    if (w->keeper.timer_set) {
        ngx_del_timer(&w->keeper);
    }

    ngx_http_lua_ffi_bridge_stop_polling();
    ngx_http_lua_ffi_queue_wake_owed();

    /* what runtimes logged while they stopped */
    ngx_http_lua_ffi_log_flush();

    if (w->notify) {
        /* the fd belongs to the master's array: only stop watching it */
        ngx_del_event(w->notify->read, NGX_READ_EVENT, 0);
        w->notify->fd = (ngx_socket_t) -1;
        ngx_free_connection(w->notify);
        w->notify = NULL;
    }

    /*
     * The task table stays: runtimes that outlive the wait may still
     * answer, and their answers must find the slots they name.
     */
}


void
ngx_http_lua_ffi_bridge_wake(void)
{
    ssize_t   n;
    uint64_t  one = 1;

    /* EAGAIN means the counter is already non-zero: the loop will wake */
    do {
        n = write(ngx_http_lua_ffi_notify_fd, &one, sizeof(uint64_t));
    } while (n == -1 && errno == EINTR);
}


/*
 * Lock-free push onto the worker's done stack, from any thread. Only the
 * push that finds the stack empty writes to the eventfd: one syscall per
 * burst of answers, however many there are.
 */

void
ngx_http_lua_ffi_bridge_done_push(ngx_http_lua_ffi_task_t *task)
{
    ngx_http_lua_ffi_task_t  *old;

    old = __atomic_load_n(&ngx_http_lua_ffi_worker.done, __ATOMIC_RELAXED);

    do {
        task->next = old;
    } while (!__atomic_compare_exchange_n(&ngx_http_lua_ffi_worker.done,
                                          &old, task, 1, __ATOMIC_SEQ_CST,
                                          __ATOMIC_RELAXED));

    /*
     * While the event loop busy-polls it finds the answer by itself. The
     * push above and this load pair with the loop's store of polling = 0
     * and its last look at the stack: one of the two sides sees the other.
     */
    if (old == NULL
        && !__atomic_load_n(&ngx_http_lua_ffi_worker.polling,
                            __ATOMIC_SEQ_CST))
    {
        ngx_http_lua_ffi_bridge_wake();
    }
}


NGX_HTTP_LUA_FFI_API void
ngx_http_lua_ffi_respond(void *tsk, int rc, char *rsp, int rsp_len)
{
    uintptr_t                 seq, expected;
    ngx_http_lua_ffi_task_t  *task;

    task = ngx_http_lua_ffi_task_find(tsk, &seq);

    /*
     * Only the handle of a call that a runtime took and has not answered
     * moves its task from TAKEN to ANSWERED. A second answer, one for an
     * earlier use of the slot, one for a task still queued or a value that
     * is no handle at all leave every task as it is.
     */
    expected = ngx_http_lua_ffi_task_state(seq, NGX_HTTP_LUA_FFI_TASK_TAKEN);

    if (task == NULL
        || !__atomic_compare_exchange_n(&task->state, &expected,
                                        ngx_http_lua_ffi_task_state(seq,
                                            NGX_HTTP_LUA_FFI_TASK_ANSWERED),
                                        0, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE))
    {
        free(rsp);
        ngx_http_lua_ffi_task_stray(task, tsk);
        return;
    }

    if (rsp != NULL && rsp_len <= 0) {
        rsp_len = (int) strlen(rsp);
    }

    task->rc = rc;
    task->rsp = rsp;
    task->rsp_len = rsp ? rsp_len : 0;

    ngx_http_lua_ffi_bridge_done_push(task);
}


static void
ngx_http_lua_ffi_bridge_handler(ngx_event_t *ev)
{
    ngx_http_lua_ffi_bridge_drain_fd();
    ngx_http_lua_ffi_bridge_process();
    ngx_http_lua_ffi_log_flush();

    /* other workers write here too: reloads and status requests */
    if (ngx_http_lua_ffi_hooks.notified) {
        ngx_http_lua_ffi_hooks.notified();
    }
}


/*
 * Reads the counter before the stack is taken: a push that lands after the
 * take finds the stack empty and writes again, so no answer is left behind
 * until the next unrelated wakeup. Only the eventfd's own handler reads it:
 * a wakeup may also carry news from another worker.
 */

static void
ngx_http_lua_ffi_bridge_drain_fd(void)
{
    ssize_t   rc;
    uint64_t  n;

    do {
        rc = read(ngx_http_lua_ffi_notify_fd, &n, sizeof(uint64_t));
    } while (rc == -1 && errno == EINTR);
}


/*
 * At exit, with no event loop and polling stopped: takes what is on the
 * done stack, else waits for the eventfd, at most timeout.
 */

ngx_int_t
ngx_http_lua_ffi_bridge_wait(ngx_msec_t timeout)
{
    struct pollfd  pfd;

    if (__atomic_load_n(&ngx_http_lua_ffi_worker.done, __ATOMIC_SEQ_CST)) {
        ngx_http_lua_ffi_bridge_process();
        return NGX_OK;
    }

    pfd.fd = ngx_http_lua_ffi_notify_fd;
    pfd.events = POLLIN;
    pfd.revents = 0;

    if (poll(&pfd, 1, (int) timeout) <= 0) {
        return NGX_AGAIN;
    }

    ngx_http_lua_ffi_bridge_drain_fd();
    ngx_http_lua_ffi_bridge_process();

    return NGX_OK;
}


void
ngx_http_lua_ffi_bridge_process(void)
{
    ngx_http_lua_ffi_task_t    *task, *next, *fifo;
    ngx_http_lua_ffi_worker_t  *w = &ngx_http_lua_ffi_worker;

    task = __atomic_exchange_n(&w->done, NULL, __ATOMIC_ACQUIRE);

    for (fifo = NULL; task; task = next) {
        next = task->next;
        task->next = fifo;
        fifo = task;
    }

    for (task = fifo; task; task = next) {
        next = task->next;

        if (task->kind == NGX_HTTP_LUA_FFI_TASK_DRAINED) {
            if (ngx_http_lua_ffi_hooks.drained) {
                ngx_http_lua_ffi_hooks.drained(task->runtime);
            }

        } else if (task->kind == NGX_HTTP_LUA_FFI_TASK_STRAY) {
            ngx_http_lua_ffi_task_strays_count();

        } else {
            ngx_http_lua_ffi_call_complete(task);
        }
    }
}


static void
ngx_http_lua_ffi_inflight_inc(void)
{
    ngx_http_lua_ffi_worker_t  *w = &ngx_http_lua_ffi_worker;

    /*
     * A yielded call sets no timer of its own, so a non-cancelable keeper
     * timer is what makes a graceful shutdown wait for calls in flight.
     */
    if (w->inflight++ == 0) {
        w->keeper.cancelable = 0;

        if (!w->keeper.timer_set) {
            ngx_add_timer(&w->keeper, NGX_HTTP_LUA_FFI_KEEPER_MSEC);
        }
    }
}


static void
ngx_http_lua_ffi_inflight_dec(void)
{
    ngx_http_lua_ffi_worker_t  *w = &ngx_http_lua_ffi_worker;

    if (--w->inflight == 0) {
        w->keeper.cancelable = 1;
    }
}


/*
 * Resumes every coroutine still waiting, with false and why, so that its
 * request ends normally; the runtimes keep their tasks, and answers that
 * still come are freed.
 */

static void
ngx_http_lua_ffi_abandon_all(const char *why)
{
    ngx_uint_t                done;
    ngx_queue_t              *q, *next, *last;
    ngx_http_lua_ffi_task_t  *task;

    if (ngx_queue_empty(&ngx_http_lua_ffi_worker.calls)) {
        return;
    }

    /* calls posted by the coroutines it resumes are not this pass's */
    last = ngx_queue_last(&ngx_http_lua_ffi_worker.calls);

    for (q = ngx_queue_head(&ngx_http_lua_ffi_worker.calls), done = 0;
         !done;
         q = next)
    {
        done = (q == last);
        next = ngx_queue_next(q);
        task = ngx_queue_data(q, ngx_http_lua_ffi_task_t, inflight);

        if (task->co_ctx && task->abandoned == NULL) {
            if (task->timer.timer_set) {
                ngx_del_timer(&task->timer);
            }

            task->abandoned = why;
            ngx_http_lua_ffi_call_wakeup(task);
        }
    }
}


static void
ngx_http_lua_ffi_keeper_handler(ngx_event_t *ev)
{
    ngx_http_lua_ffi_worker_t     *w = ev->data;
    ngx_http_lua_ffi_main_conf_t  *fmcf;
    static ngx_msec_t              exit_started;

    if (w->inflight == 0) {
        return;
    }

    if (ngx_exiting) {
        fmcf = ngx_http_cycle_get_module_main_conf(w->cycle,
                                                   ngx_http_lua_ffi_module);
        if (exit_started == 0) {
            exit_started = ngx_current_msec;
        }

        if (ngx_current_msec - exit_started >= fmcf->exit_timeout) {
            ngx_log_error(NGX_LOG_WARN, ev->log, 0,
                          "ffi: %ui calls still in flight after %M ms of "
                          "shutdown (ffi_exit_timeout), giving up on them",
                          w->inflight, fmcf->exit_timeout);
            ev->cancelable = 1;
            ngx_http_lua_ffi_abandon_all("worker exiting");
            return;
        }
    }

    ngx_add_timer(ev, NGX_HTTP_LUA_FFI_KEEPER_MSEC);
}


/*
 * After a call is posted the event loop does not sleep in epoll_wait() for
 * ffi_busy_poll_us: the busy event, posted for the next cycle, makes that
 * wait a non-blocking look, and takes answers off the stack itself. A quick
 * runtime's answer then costs neither an eventfd write nor a wakeup.
 */

static void
ngx_http_lua_ffi_busy_start(uint64_t now)
{
    ngx_http_lua_ffi_worker_t  *w = &ngx_http_lua_ffi_worker;

    if (w->busy_poll_ns == 0 || w->exiting) {
        return;
    }

    w->busy_until = now + w->busy_poll_ns;

    if (!w->busy.posted) {
        __atomic_store_n(&w->polling, 1, __ATOMIC_SEQ_CST);
        ngx_post_event(&w->busy, &ngx_posted_next_events);
    }
}


static void
ngx_http_lua_ffi_busy_handler(ngx_event_t *ev)
{
    ngx_http_lua_ffi_worker_t  *w = ev->data;

    if (__atomic_load_n(&w->done, __ATOMIC_ACQUIRE)) {
        ngx_http_lua_ffi_bridge_process();

    } else if ((++w->busy_rounds & 15) == 0) {
        /* now and then: a runtime thread on this CPU gets to answer */
        (void) sched_yield();
    }

    if (w->inflight && ngx_http_lua_ffi_now_ns() < w->busy_until) {
        if (!ev->posted) {
            ngx_post_event(ev, &ngx_posted_next_events);
        }

        return;
    }

    if (ev->posted) {
        /* a call posted while we processed answers started a new round */
        return;
    }

    __atomic_store_n(&w->polling, 0, __ATOMIC_SEQ_CST);

    /* an answer pushed before the store above found polling still on */
    if (__atomic_load_n(&w->done, __ATOMIC_SEQ_CST)) {
        ngx_http_lua_ffi_bridge_process();
    }
}


/*
 * A canary runs beside the handle's runtime: a share of canary_pct calls
 * in 100 goes to it, spread evenly (an accumulator per library in this
 * worker, so that a handle made per request gets its share too; no clock,
 * no lock);
 * with a key, the hash of ngx.var[key] decides, so one key always lands
 * on one version (a request without it is routed by call). A fake request
 * (ngx.timer) has no client: variables such as $binary_remote_addr would
 * read its NULL address (ngx.var is barred there for that), so its calls
 * are routed by call too.
 */

static ngx_http_lua_ffi_runtime_t *
ngx_http_lua_ffi_canary_pick(ngx_http_request_t *r,
    ngx_http_lua_ffi_handle_t *h)
{
    ngx_uint_t                 *acc;
    ngx_http_variable_value_t  *vv;

    if (h->canary_key.len && r->connection->fd != (ngx_socket_t) -1) {
        vv = ngx_http_get_variable(r, &h->canary_key, h->canary_hash);

        if (vv && !vv->not_found && vv->len) {
            return (ngx_crc32_short(vv->data, vv->len) % 100 < h->canary_pct)
                   ? h->canary : h->runtime;
        }
    }

    acc = &h->library->canary_acc;
    *acc += h->canary_pct;

    if (*acc >= 100) {
        *acc -= 100;
        return h->canary;
    }

    return h->runtime;
}


/*
 * Posts a call from the current coroutine. On NGX_OK the Lua side yields;
 * the answer, a timeout or the caller's death decides what happens next.
 * *anchor is the task's index when the runtime reads req in place: Lua
 * then holds the string under it until the task is freed; else -1.
 */

ngx_int_t
ngx_http_lua_ffi_call_post(ngx_http_request_t *r,
    ngx_http_lua_ffi_handle_t *h, const char *req, int req_len,
    int timeout_ms, int *anchor, const char **err)
{
    ngx_msec_t                   timeout;
    ngx_int_t                    rc;
    ngx_uint_t                   in_place;
    ngx_http_lua_ctx_t          *ctx;
    ngx_http_lua_co_ctx_t       *coctx;
    ngx_http_lua_ffi_task_t     *task;
    ngx_http_lua_ffi_runtime_t  *rt;
    static u_char                errbuf[128];

    ctx = ngx_http_get_module_ctx(r, ngx_http_lua_module);
    if (ctx == NULL) {
        *err = "no request ctx found";
        return NGX_ERROR;
    }

    if (!(ctx->context & NGX_HTTP_LUA_CONTEXT_YIELDABLE)) {
        *ngx_snprintf(errbuf, sizeof(errbuf) - 1,
                      "cannot yield in the context of %s",
                      ngx_http_lua_context_name(ctx->context)) = '\0';
        *err = (const char *) errbuf;
        return NGX_ERROR;
    }

    coctx = ctx->cur_co_ctx;
    if (coctx == NULL) {
        *err = "no co ctx found";
        return NGX_ERROR;
    }

    rt = h->runtime;
    if (rt == NULL || h->unloaded) {
        *err = "runtime unloaded";
        return NGX_ERROR;
    }

    /*
     * A per-request Lua VM (lua_code_cache off) dies with its request,
     * and a late answer may come after that: such requests are copied.
     */
    in_place = (req != NULL && req_len >= NGX_HTTP_LUA_FFI_IN_PLACE
                && ctx->vm_state == NULL);

    if (h->canary) {
        rt = ngx_http_lua_ffi_canary_pick(r, h);
    }

    task = ngx_http_lua_ffi_task_alloc(rt->queue.id,
                                       (req && !in_place) ? (size_t) req_len
                                                          : 0);
    if (task == NULL) {
        *err = "no memory";
        return NGX_ERROR;
    }

    if (in_place) {
        /* read-only for the runtime; LuaJIT put a NUL after the bytes */
        task->req = (char *) req;
        task->req_len = req_len;

    } else if (req) {
        /* as upstream: a NUL that len does not count, for C-string readers */
        task->req = task->inline_buf;
        ngx_memcpy(task->req, req, req_len);
        task->req[req_len] = '\0';
        task->req_len = req_len;

    } else {
        task->req = NULL;
        task->req_len = 0;
    }

    task->runtime = rt;
    task->request = r;

    rc = ngx_http_lua_ffi_queue_push(&rt->queue, task);

    if (rc != NGX_OK) {
        ngx_http_lua_ffi_task_free(task);

        if (rc == NGX_BUSY) {
            rt->failed++;
            rt->metrics->c.queue_full++;
            *err = "queue full";

        } else {
            *err = "runtime unloaded";
        }

        return NGX_DECLINED;
    }

    /* from now on only the event loop frees it, after Lua anchored req */
    task->in_place = in_place;
    *anchor = in_place ? (int) task->index : -1;

    rt->inflight++;
    rt->calls++;
    rt->metrics->c.calls++;
    rt->metrics->inflight++;
    rt->metrics->queued++;
    task->metrics = rt->metrics;
    task->posted_ns = ngx_http_lua_ffi_now_ns();
    ngx_http_lua_ffi_inflight_inc();

    /* one clock read a call: the latency's start and busy polling's */
    ngx_http_lua_ffi_busy_start(task->posted_ns);
    ngx_queue_insert_tail(&ngx_http_lua_ffi_worker.calls, &task->inflight);

    ngx_http_lua_cleanup_pending_operation(coctx);
    coctx->cleanup = ngx_http_lua_ffi_call_cleanup;
    coctx->data = task;
    task->co_ctx = coctx;

    /*
     * per call (>= 0) or the runtime's default (-1); 0 waits forever. Lua
     * passes 0 only for a timeout of 0: a tiny one is rounded up to 1 ms
     */
    timeout = (timeout_ms >= 0) ? (ngx_msec_t) timeout_ms : h->timeout;

    if (timeout) {
        task->timer.handler = ngx_http_lua_ffi_call_timeout;
        task->timer.data = task;
        task->timer.log = r->connection->log;
        ngx_add_timer(&task->timer, timeout);
    }

    return NGX_OK;
}


/* The coroutine is going away (client abort, thread killed, request done). */

static void
ngx_http_lua_ffi_call_cleanup(void *data)
{
    ngx_http_lua_co_ctx_t    *coctx = data;
    ngx_http_lua_ffi_task_t  *task;

    task = coctx->data;
    task->co_ctx = NULL;
    task->metrics->c.orphaned++;

    if (task->timer.timer_set) {
        ngx_del_timer(&task->timer);
    }
}


static void
ngx_http_lua_ffi_call_timeout(ngx_event_t *ev)
{
    ngx_http_lua_ffi_task_t  *task = ev->data;

    /* the runtime still owns the task: its late answer is freed */
    task->abandoned = "timeout";
    task->metrics->c.timeouts++;
    ngx_http_lua_ffi_call_wakeup(task);
}


static void
ngx_http_lua_ffi_call_complete(ngx_http_lua_ffi_task_t *task)
{
    ngx_http_lua_ffi_runtime_t  *rt = task->runtime;

    if (task->timer.timer_set) {
        ngx_del_timer(&task->timer);
    }

    rt->inflight--;
    task->metrics->inflight--;

    if (task->rc == 0) {
        task->metrics->c.ok++;

    } else {
        task->metrics->c.failed++;
    }

    ngx_queue_remove(&task->inflight);
    ngx_http_lua_ffi_inflight_dec();

    if (ngx_http_lua_ffi_hooks.answered) {
        ngx_http_lua_ffi_hooks.answered(rt);
    }

    /* after exit_process began no coroutine may run: answers are dropped */
    if (task->co_ctx == NULL || ngx_http_lua_ffi_worker.exiting) {
        ngx_http_lua_ffi_task_free(task);
        return;
    }

    ngx_http_lua_ffi_call_wakeup(task);
}


/* Resumes the waiting coroutine, as lua-nginx-module's ngx.sleep() does. */

static void
ngx_http_lua_ffi_call_wakeup(ngx_http_lua_ffi_task_t *task)
{
    ngx_connection_t       *c;
    ngx_http_request_t     *r;
    ngx_http_lua_ctx_t     *ctx;
    ngx_http_log_ctx_t     *log_ctx;
    ngx_http_lua_co_ctx_t  *coctx;

    coctx = task->co_ctx;
    r = task->request;
    c = r->connection;

    task->co_ctx = NULL;
    coctx->cleanup = NULL;

    ctx = ngx_http_get_module_ctx(r, ngx_http_lua_module);
    if (ctx == NULL) {
        if (task->abandoned == NULL) {
            ngx_http_lua_ffi_task_free(task);
        }

        return;
    }

    if (c->fd != (ngx_socket_t) -1) {  /* not a fake connection */
        log_ctx = c->log->data;
        log_ctx->current_request = r;
    }

    ctx->cur_co_ctx = coctx;

    if (ctx->entered_content_phase) {
        (void) ngx_http_lua_ffi_call_resume(r);

    } else {
        ctx->resume_handler = ngx_http_lua_ffi_call_resume;
        ngx_http_core_run_phases(r);
    }

    ngx_http_run_posted_requests(c);
}


static int
ngx_http_lua_ffi_push_results(lua_State *co, ngx_http_lua_ffi_task_t *task)
{
    if (task->abandoned) {
        lua_pushboolean(co, 0);
        lua_pushstring(co, task->abandoned);
        return 2;
    }

    if (task->rc == 0) {
        lua_pushboolean(co, 1);

        if (task->rsp) {
            lua_pushlstring(co, task->rsp, task->rsp_len);

        } else {
            lua_pushnil(co);
        }

        return 2;
    }

    lua_pushboolean(co, 0);
    lua_pushinteger(co, task->rc);

    if (task->rsp == NULL) {
        return 2;
    }

    lua_pushlstring(co, task->rsp, task->rsp_len);

    return 3;
}


static ngx_int_t
ngx_http_lua_ffi_call_resume(ngx_http_request_t *r)
{
    int                       nret;
    lua_State                *vm;
    ngx_int_t                 rc;
    ngx_uint_t                nreqs;
    ngx_connection_t         *c;
    ngx_http_lua_ctx_t       *ctx;
    ngx_http_lua_ffi_task_t  *task;

    ctx = ngx_http_get_module_ctx(r, ngx_http_lua_module);
    if (ctx == NULL) {
        return NGX_ERROR;
    }

    ctx->resume_handler = ngx_http_lua_wev_handler;

    c = r->connection;
    vm = ngx_http_lua_get_lua_vm(r, ctx);
    nreqs = c->requests;

    task = ctx->cur_co_ctx->data;
    nret = ngx_http_lua_ffi_push_results(ctx->cur_co_ctx->co, task);

    if (task->abandoned == NULL) {
        /* post to resume: what the caller waited, queueing included */
        ngx_http_lua_ffi_counters_observe(&task->metrics->c,
                                ngx_http_lua_ffi_now_ns() - task->posted_ns);
        ngx_http_lua_ffi_task_free(task);
    }

    rc = ngx_http_lua_run_thread(vm, r, ctx, nret);

    if (rc == NGX_AGAIN) {
        return ngx_http_lua_run_posted_threads(c, vm, r, ctx, nreqs);
    }

    if (rc == NGX_DONE) {
        ngx_http_lua_finalize_request(r, NGX_DONE);
        return ngx_http_lua_run_posted_threads(c, vm, r, ctx, nreqs);
    }

    if (ctx->entered_content_phase) {
        ngx_http_lua_finalize_request(r, rc);
        return NGX_DONE;
    }

    return rc;
}
