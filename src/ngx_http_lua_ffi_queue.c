/*
 * The task queue of one runtime, and the polling half of the runtime ABI.
 * The event loop pushes; the runtime's own threads poll. Thread-safe.
 */

#include "ngx_http_lua_ffi_module.h"


static void ngx_http_lua_ffi_queue_wake_handler(ngx_event_t *ev);


uint64_t
ngx_http_lua_ffi_now_ns(void)
{
    struct timespec  ts;

    /* the vDSO answers: no system call */
    (void) clock_gettime(CLOCK_MONOTONIC, &ts);

    return (uint64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}


ngx_int_t
ngx_http_lua_ffi_queue_init(ngx_http_lua_ffi_queue_t *q, ngx_uint_t max,
    ngx_uint_t spin_us)
{
    ngx_memzero(q, sizeof(ngx_http_lua_ffi_queue_t));

    /* who held a handle, for answers that come after the task moved on */
    q->id = ++ngx_http_lua_ffi_worker.queue_ids;

    if (pthread_mutex_init(&q->mutex, NULL) != 0) {
        return NGX_ERROR;
    }

    if (pthread_cond_init(&q->cond, NULL) != 0) {
        (void) pthread_mutex_destroy(&q->mutex);
        return NGX_ERROR;
    }

    q->max = max;
    q->spin_ns = (uint64_t) spin_us * 1000;

    return NGX_OK;
}


void
ngx_http_lua_ffi_queue_destroy(ngx_http_lua_ffi_queue_t *q)
{
    if (q->owed) {
        ngx_queue_remove(&q->owed_link);
    }

    (void) pthread_cond_destroy(&q->cond);
    (void) pthread_mutex_destroy(&q->mutex);
}


/*
 * NGX_OK: queued; NGX_BUSY: the queue is full; NGX_DECLINED: the NULL task
 * was already appended. A poller that spins takes the task by itself. One
 * that sleeps is woken once the event loop ran everything this cycle posts
 * (queue_wake_handler): one wake for every task of the cycle instead of a
 * futex wake each, and a woken thread that finds them all. Event loop only.
 */

ngx_int_t
ngx_http_lua_ffi_queue_push(ngx_http_lua_ffi_queue_t *q,
    ngx_http_lua_ffi_task_t *task)
{
    ngx_uint_t                  sleepers;
    ngx_http_lua_ffi_worker_t  *w = &ngx_http_lua_ffi_worker;

    task->next = NULL;

    (void) pthread_mutex_lock(&q->mutex);

    if (q->closing) {
        (void) pthread_mutex_unlock(&q->mutex);
        return NGX_DECLINED;
    }

    if (q->max && q->size >= q->max) {
        (void) pthread_mutex_unlock(&q->mutex);
        return NGX_BUSY;
    }

    if (q->tail) {
        q->tail->next = task;

    } else {
        q->head = task;
    }

    q->tail = task;
    __atomic_store_n(&q->size, q->size + 1, __ATOMIC_RELEASE);
    sleepers = q->sleepers;

    (void) pthread_mutex_unlock(&q->mutex);

    /*
     * Once the worker shuts down, calls also come from outside the cycle:
     * lua-nginx-module runs pending ngx.timer handlers (premature) from
     * ngx_close_idle_connections(), after the posted events ran and right
     * before epoll_wait(), which a posted wake would wait out. Latency
     * matters no more then: the wake goes at once.
     */
    if (ngx_exiting) {
        if (sleepers) {
            (void) pthread_cond_signal(&q->cond);
        }

        return NGX_OK;
    }

    /* a signal a task, but no more than pollers sleep: extras wake nobody */
    if (q->owed < sleepers) {
        if (q->owed++ == 0) {
            ngx_queue_insert_tail(&w->owed, &q->owed_link);
        }

        if (!w->wake.posted) {
            ngx_post_event(&w->wake, &ngx_posted_events);
        }
    }

    return NGX_OK;
}


/*
 * Posted behind the events of this cycle that posted tasks (handlers of
 * ngx_posted_events, this one included, run in the order they were
 * posted, and those posted meanwhile too), so it runs before the event
 * loop sleeps: a task waits for its poller no longer than the rest of
 * the cycle. A poller that sleeps took nothing since its last look, so
 * it finds every task posted while it slept.
 */

static void
ngx_http_lua_ffi_queue_wake_handler(ngx_event_t *ev)
{
    ngx_queue_t                *l;
    ngx_http_lua_ffi_queue_t   *q;
    ngx_http_lua_ffi_worker_t  *w = ev->data;

    while (!ngx_queue_empty(&w->owed)) {
        l = ngx_queue_head(&w->owed);
        ngx_queue_remove(l);
        q = ngx_queue_data(l, ngx_http_lua_ffi_queue_t, owed_link);

        for ( /* void */ ; q->owed; q->owed--) {
            (void) pthread_cond_signal(&q->cond);
        }
    }
}


void
ngx_http_lua_ffi_queue_wake_init(ngx_cycle_t *cycle)
{
    ngx_http_lua_ffi_worker_t  *w = &ngx_http_lua_ffi_worker;

    ngx_queue_init(&w->owed);

    w->wake.handler = ngx_http_lua_ffi_queue_wake_handler;
    w->wake.log = cycle->log;
    w->wake.data = w;
}


/* At exit, when no cycle may follow: the wakes still due, now. */

void
ngx_http_lua_ffi_queue_wake_owed(void)
{
    ngx_http_lua_ffi_worker_t  *w = &ngx_http_lua_ffi_worker;

    if (w->wake.posted) {
        ngx_delete_posted_event(&w->wake);
    }

    if (w->owed.next) {
        ngx_http_lua_ffi_queue_wake_handler(&w->wake);
    }
}


/* Appends the NULL task: pollers get what is queued, then NULL. */

void
ngx_http_lua_ffi_queue_close(ngx_http_lua_ffi_queue_t *q)
{
    (void) pthread_mutex_lock(&q->mutex);
    __atomic_store_n(&q->closing, 1, __ATOMIC_RELEASE);
    (void) pthread_mutex_unlock(&q->mutex);

    (void) pthread_cond_broadcast(&q->cond);
}


/*
 * A poller that finds the queue empty spins for a few microseconds before
 * it sleeps: a task posted meanwhile (the next call of a sequence, say) is
 * taken without a futex wake on either side. One spinner per queue; the
 * other pollers of a multi-threaded runtime sleep at once.
 */

static void
ngx_http_lua_ffi_queue_spin(ngx_http_lua_ffi_queue_t *q)
{
    uint64_t    deadline;
    ngx_uint_t  i;

    if (__atomic_load_n(&q->size, __ATOMIC_ACQUIRE)
        || __atomic_load_n(&q->closing, __ATOMIC_ACQUIRE)
        || __atomic_exchange_n(&q->spinning, 1, __ATOMIC_ACQUIRE))
    {
        return;
    }

    deadline = ngx_http_lua_ffi_now_ns() + q->spin_ns;

    for (i = 1; ; i++) {
        if (__atomic_load_n(&q->size, __ATOMIC_ACQUIRE)
            || __atomic_load_n(&q->closing, __ATOMIC_ACQUIRE))
        {
            break;
        }

        if ((i & 63) == 0) {
            if (ngx_http_lua_ffi_now_ns() >= deadline) {
                break;
            }

            /* the event loop may share this CPU: let it post the task */
            (void) sched_yield();
        }

        ngx_cpu_pause();
    }

    __atomic_store_n(&q->spinning, 0, __ATOMIC_RELEASE);
}


/*
 * Takes up to n tasks, waiting for the first. Returns 0 once the queue is
 * closed and empty; the first poller to see that reports the drain to the
 * event loop, which may then free the queue after its grace period.
 */

static int
ngx_http_lua_ffi_queue_take(ngx_http_lua_ffi_queue_t *q, void **tasks, int n)
{
    int                       got;
    ngx_uint_t                first_null;
    ngx_http_lua_ffi_task_t  *task;

    if (q->spin_ns) {
        ngx_http_lua_ffi_queue_spin(q);
    }

    (void) pthread_mutex_lock(&q->mutex);

    while (q->head == NULL && !q->closing) {
        q->sleepers++;
        (void) pthread_cond_wait(&q->cond, &q->mutex);
        q->sleepers--;
    }

    for (got = 0; got < n && q->head; got++) {
        task = q->head;
        q->head = task->next;

        /* from here on, and only from here on, its handle may answer it */
        __atomic_store_n(&task->state,
                         ngx_http_lua_ffi_task_state(
                             task->state >> 2, NGX_HTTP_LUA_FFI_TASK_TAKEN),
                         __ATOMIC_RELEASE);
        tasks[got] = (void *) task->handle;
    }

    if (q->head == NULL) {
        q->tail = NULL;
    }

    __atomic_store_n(&q->size, q->size - got, __ATOMIC_RELEASE);
    q->taken += got;
    ((ngx_http_lua_ffi_runtime_t *) q)->metrics->taken += got;

    first_null = (got == 0 && !q->closed);
    if (got == 0) {
        q->closed = 1;
    }

    (void) pthread_mutex_unlock(&q->mutex);

    if (first_null) {
        ngx_http_lua_ffi_bridge_done_push(
                          &((ngx_http_lua_ffi_runtime_t *) q)->drained);
    }

    return got;
}


NGX_HTTP_LUA_FFI_API void *
ngx_http_lua_ffi_task_poll(void *tq)
{
    void  *task;

    if (ngx_http_lua_ffi_queue_take(tq, &task, 1) == 0) {
        return NULL;
    }

    return task;
}


NGX_HTTP_LUA_FFI_API int
ngx_http_lua_ffi_task_poll_batch(void *tq, void **tasks, int n)
{
    if (n <= 0) {
        return 0;
    }

    return ngx_http_lua_ffi_queue_take(tq, tasks, n);
}


NGX_HTTP_LUA_FFI_API const char *
ngx_http_lua_ffi_library_path(void *tq)
{
    ngx_http_lua_ffi_runtime_t  *rt = tq;

    return (const char *) rt->image->library->path.data;
}
