/*
 * GET /ffi/status across workers: every worker renders its own view into
 * the shared zone when asked; the worker that got the request joins them.
 */

#include "ngx_http_lua_ffi_shm.h"
#include "ngx_http_lua_ffi_canary.h"


#define NGX_HTTP_LUA_FFI_STATUS_MAX    (256 * 1024)
#define NGX_HTTP_LUA_FFI_STATUS_ENTRY  (6 * NGX_HTTP_LUA_FFI_ERRLEN + 512)
#define NGX_HTTP_LUA_FFI_STATUS_EXITING  "{\"error\":\"worker exiting\"}"


typedef struct {
    ngx_queue_t                       link;
    ngx_http_lua_ffi_reload_done_pt   done;
    void                             *data;
    ngx_event_t                       timer;
    ngx_msec_t                        deadline;
    ngx_uint_t                        seq;
} ngx_http_lua_ffi_status_op_t;


static void ngx_http_lua_ffi_status_check(ngx_http_lua_ffi_status_op_t *op);
static void ngx_http_lua_ffi_status_timer(ngx_event_t *ev);
static void ngx_http_lua_ffi_status_finish(ngx_http_lua_ffi_status_op_t *op,
    ngx_int_t status, u_char *body, size_t len, u_char *msg);
static void ngx_http_lua_ffi_status_publish(void);


static ngx_queue_t  ngx_http_lua_ffi_status_ops;


void
ngx_http_lua_ffi_status_init(void)
{
    ngx_queue_init(&ngx_http_lua_ffi_status_ops);
}


void
ngx_http_lua_ffi_status_exit(void)
{
    ngx_queue_t                   *q;
    ngx_http_lua_ffi_status_op_t  *op;

    while (!ngx_queue_empty(&ngx_http_lua_ffi_status_ops)) {
        q = ngx_queue_head(&ngx_http_lua_ffi_status_ops);
        op = ngx_queue_data(q, ngx_http_lua_ffi_status_op_t, link);
        ngx_http_lua_ffi_status_finish(op, NGX_HTTP_SERVICE_UNAVAILABLE,
                               (u_char *) NGX_HTTP_LUA_FFI_STATUS_EXITING,
                               sizeof(NGX_HTTP_LUA_FFI_STATUS_EXITING) - 1,
                               (u_char *) "worker exiting");
    }
}


ngx_int_t
ngx_http_lua_ffi_status_start(ngx_http_lua_ffi_reload_done_pt done,
    void *data)
{
    ngx_http_lua_ffi_status_op_t  *op;

    op = ngx_http_lua_ffi_shm_op_alloc(sizeof(ngx_http_lua_ffi_status_op_t));
    if (op == NULL) {
        return NGX_ERROR;
    }

    op->done = done;
    op->data = data;

    /* a worker told to exit answers 503 at once (status_exit) */
    op->deadline = ngx_http_lua_ffi_shm_op_timer(&op->timer,
                                                 ngx_http_lua_ffi_status_timer,
                                                 op, 1);

    ngx_queue_insert_tail(&ngx_http_lua_ffi_status_ops, &op->link);

    ngx_shmtx_lock(&ngx_http_lua_ffi_shpool->mutex);
    op->seq = ++ngx_http_lua_ffi_shm->status_seq;
    ngx_shmtx_unlock(&ngx_http_lua_ffi_shpool->mutex);

    ngx_http_lua_ffi_shm_notify_all();
    ngx_http_lua_ffi_status_publish();
    ngx_http_lua_ffi_status_check(op);

    return NGX_OK;
}


/* The client went away: nobody hears the end. */

void
ngx_http_lua_ffi_status_cancel(void *data)
{
    ngx_queue_t                   *q;
    ngx_http_lua_ffi_status_op_t  *op;

    for (q = ngx_queue_head(&ngx_http_lua_ffi_status_ops);
         q != ngx_queue_sentinel(&ngx_http_lua_ffi_status_ops);
         q = ngx_queue_next(q))
    {
        op = ngx_queue_data(q, ngx_http_lua_ffi_status_op_t, link);

        if (op->data == data) {
            op->done = NULL;
        }
    }
}


/* Every wakeup: publish this worker's view if asked, look at answers. */

void
ngx_http_lua_ffi_status_notified(void)
{
    ngx_queue_t                   *q, *next;
    ngx_http_lua_ffi_status_op_t  *op;

    ngx_http_lua_ffi_status_publish();

    for (q = ngx_queue_head(&ngx_http_lua_ffi_status_ops);
         q != ngx_queue_sentinel(&ngx_http_lua_ffi_status_ops);
         q = next)
    {
        next = ngx_queue_next(q);
        op = ngx_queue_data(q, ngx_http_lua_ffi_status_op_t, link);
        ngx_http_lua_ffi_status_check(op);
    }
}


static void
ngx_http_lua_ffi_status_timer(ngx_event_t *ev)
{
    ngx_http_lua_ffi_status_check(ev->data);
}


static void
ngx_http_lua_ffi_status_finish(ngx_http_lua_ffi_status_op_t *op,
    ngx_int_t status, u_char *body, size_t len, u_char *msg)
{
    if (op->timer.timer_set) {
        ngx_del_timer(&op->timer);
    }

    ngx_queue_remove(&op->link);

    if (op->done) {
        op->done(op->data, status, body, len, msg);
    }

    ngx_free(op);
}


static void
ngx_http_lua_ffi_status_publish(void)
{
    u_char                         *buf, *p, *copy;
    ngx_http_lua_ffi_shm_worker_t  *sw;

    sw = &ngx_http_lua_ffi_shm->workers[ngx_http_lua_ffi_worker.slot];

    if (sw->pid != ngx_pid
        || sw->status_seq >= ngx_http_lua_ffi_shm->status_seq)
    {
        return;
    }

    buf = ngx_alloc(NGX_HTTP_LUA_FFI_STATUS_MAX, ngx_cycle->log);
    if (buf == NULL) {
        return;
    }

    p = ngx_slprintf(buf, buf + NGX_HTTP_LUA_FFI_STATUS_MAX,
                     "{\"slot\":%ui,\"pid\":%P,\"inflight\":%ui,"
                     "\"log_dropped\":%ui,\"libraries\":",
                     ngx_http_lua_ffi_worker.slot, ngx_pid,
                     ngx_http_lua_ffi_worker.inflight,
                     ngx_http_lua_ffi_log_dropped());
    p = ngx_http_lua_ffi_registry_status(p, buf + NGX_HTTP_LUA_FFI_STATUS_MAX
                                            - 1);
    *p++ = '}';

    ngx_shmtx_lock(&ngx_http_lua_ffi_shpool->mutex);

    /*
     * The new view takes the old one's place: both at once may not fit
     * (a worker with a hundred runtimes has tens of kB), and the old one
     * must never be answered as if it were new. A view that does not fit
     * is none: the worker shows as not answered, error.log says why.
     */
    if (sw->status) {
        ngx_slab_free_locked(ngx_http_lua_ffi_shpool, sw->status);
        sw->status = NULL;
        sw->status_len = 0;
    }

    copy = ngx_slab_alloc_locked(ngx_http_lua_ffi_shpool, p - buf);

    if (copy) {
        ngx_memcpy(copy, buf, p - buf);
        sw->status = copy;
        sw->status_len = p - buf;
    }

    sw->status_seq = ngx_http_lua_ffi_shm->status_seq;

    ngx_shmtx_unlock(&ngx_http_lua_ffi_shpool->mutex);

    if (copy == NULL) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "ffi: this worker's status (%uz bytes) does not fit "
                      "in the shared zone: raise ffi_shm_size",
                      (size_t) (p - buf));
    }

    ngx_free(buf);

    ngx_http_lua_ffi_shm_notify_all();
}


static u_char *
ngx_http_lua_ffi_status_libraries(u_char *p, u_char *last)
{
    ngx_uint_t                   i, j, n;
    ngx_http_lua_ffi_shm_t      *sh = ngx_http_lua_ffi_shm;
    ngx_http_lua_ffi_shm_lib_t  *sl;

    p = ngx_slprintf(p, last, "[");

    for (n = 0, i = 0; i < sh->nlibs; i++) {
        sl = &sh->libs[i];

        if (sl->path[0] == '\0') {
            continue;
        }

        p = ngx_slprintf(p, last, "%s{\"name\":", n++ ? "," : "");
        p = ngx_http_lua_ffi_json_str(p, last, sl->names[0],
                                      ngx_strlen(sl->names[0]));
        p = ngx_slprintf(p, last, ",\"names\":[");

        for (j = 0; j < sl->nnames; j++) {
            p = ngx_slprintf(p, last, "%s", j ? "," : "");
            p = ngx_http_lua_ffi_json_str(p, last, sl->names[j],
                                          ngx_strlen(sl->names[j]));
        }

        p = ngx_slprintf(p, last, "],\"path\":");
        p = ngx_http_lua_ffi_json_str(p, last, sl->path,
                                      ngx_strlen(sl->path));
        p = ngx_slprintf(p, last, ",\"version\":%ui,\"build_id\":\"%s\","
                         "\"pin_reason\":\"%s\",\"reloads\":%ui,"
                         "\"failed_reloads\":%ui,\"last_reload\":%T,"
                         "\"last_error\":",
                         sl->current.version, sl->current.build_id,
                         ngx_http_lua_ffi_pin_reason_name(
                                                   sl->current.pin_reason),
                         sl->reloads, sl->failures, sl->last_reload);
        p = ngx_http_lua_ffi_json_str(p, last, sl->last_error,
                                      ngx_strlen(sl->last_error));
        p = ngx_slprintf(p, last, ",\"watched\":%s,\"trial\":%s,"
                         "\"is_global\":%s,\"last_drop\":",
                         sl->watched ? "true" : "false",
                         sl->no_trial ? "false" : "true",
                         sl->is_global ? "true" : "false");

        if (sl->last_drop) {
            p = ngx_slprintf(p, last, "{\"time\":%T,\"event\":\"%s\","
                             "\"outcome\":", sl->last_drop,
                             sl->last_drop_event);
            p = ngx_http_lua_ffi_json_str(p, last, sl->last_drop_outcome,
                                   ngx_strlen(sl->last_drop_outcome));
            p = ngx_slprintf(p, last, "}");

        } else {
            p = ngx_slprintf(p, last, "null");
        }

        p = ngx_slprintf(p, last, ",\"canary\":");
        p = ngx_http_lua_ffi_canary_status_shm(p, last, sl);
        p = ngx_slprintf(p, last, ",\"reloading\":%s,\"history\":",
                         (sh->owner && sh->lib == i
                          && ngx_http_lua_ffi_shm_alive(sh->owner))
                         ? "true" : "false");
        p = ngx_http_lua_ffi_history_json(p, last, sl);
        p = ngx_slprintf(p, last, "}");
    }

    return ngx_slprintf(p, last, "]");
}


static void
ngx_http_lua_ffi_status_check(ngx_http_lua_ffi_status_op_t *op)
{
    u_char                         *buf, *p, *last;
    size_t                          size;
    ngx_uint_t                      i, n, waiting;
    ngx_http_lua_ffi_shm_worker_t  *sw;

    waiting = 0;

    ngx_shmtx_lock(&ngx_http_lua_ffi_shpool->mutex);

    for (i = 0; i < ngx_http_lua_ffi_fmcf->nworkers; i++) {
        sw = &ngx_http_lua_ffi_shm->workers[i];

        if (ngx_http_lua_ffi_shm_alive(sw->pid) && sw->status_seq < op->seq)
        {
            waiting++;
        }
    }

    ngx_shmtx_unlock(&ngx_http_lua_ffi_shpool->mutex);

    if (waiting && (ngx_msec_int_t) (op->deadline - ngx_current_msec) > 0) {
        /* answers come through the eventfd; the timer is a backstop */
        if (op->timer.timer_set) {
            ngx_del_timer(&op->timer);
        }

        ngx_add_timer(&op->timer, 100);
        return;
    }

    n = ngx_http_lua_ffi_fmcf->nworkers;

    /* each library's history on top: at most 2 N entries, reasons escaped */
    size = NGX_HTTP_LUA_FFI_STATUS_MAX * (n + 1)
           + ngx_http_lua_ffi_shm->nlibs * 2 * NGX_HTTP_LUA_FFI_HISTORY_MAX
             * NGX_HTTP_LUA_FFI_STATUS_ENTRY;

    buf = ngx_alloc(size, ngx_cycle->log);
    if (buf == NULL) {
        ngx_http_lua_ffi_status_finish(op, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                       (u_char *) "{\"error\":\"no memory\"}",
                                       21, (u_char *) "no memory");
        return;
    }

    last = buf + size;

    ngx_shmtx_lock(&ngx_http_lua_ffi_shpool->mutex);

    p = ngx_slprintf(buf, last, "{\"libraries\":");
    p = ngx_http_lua_ffi_status_libraries(p, last);
    p = ngx_slprintf(p, last, ",\"reload_in_progress\":%s,"
                     "\"worker_processes\":%ui,\"workers\":[",
                     ngx_http_lua_ffi_shm_alive(ngx_http_lua_ffi_shm->owner)
                     ? "true" : "false", n);

    for (i = 0; i < n; i++) {
        sw = &ngx_http_lua_ffi_shm->workers[i];

        if (i) {
            p = ngx_slprintf(p, last, ",");
        }

        if (ngx_http_lua_ffi_shm_alive(sw->pid) && sw->status
            && sw->status_seq >= op->seq
            && (size_t) (last - p) > sw->status_len + 64)
        {
            p = ngx_cpymem(p, sw->status, sw->status_len);

        } else {
            p = ngx_slprintf(p, last, "{\"slot\":%ui,\"pid\":%P,"
                             "\"answered\":false}", i, sw->pid);
        }
    }

    p = ngx_slprintf(p, last, "]}");

    ngx_shmtx_unlock(&ngx_http_lua_ffi_shpool->mutex);

    ngx_http_lua_ffi_status_finish(op, NGX_HTTP_OK, buf, p - buf, NULL);

    ngx_free(buf);
}
