/*
 * The worker's task table: where calls live while a runtime holds them,
 * the handles runtimes see, and the accounting of answers to nothing.
 */

#include "ngx_http_lua_ffi_module.h"


/*
 * A handle is the task's index in the low bits and the sequence number of
 * the use above them; the sequence is never 0, so neither is a handle. On
 * 64-bit machines the top bit is set too: a handle is then no address a
 * program can have (the kernel's half), so a language runtime that keeps
 * it in a pointer (Go's unsafe.Pointer) never takes it for one of its own
 * heap's. A handle comes back only after 2^39 calls of the worker (at a
 * million calls a second: 17 years). 32-bit machines get a smaller table
 * and 2^20 calls.
 */

#if (UINTPTR_MAX > 0xffffffffUL)
#define NGX_HTTP_LUA_FFI_INDEX_BITS  24
#define NGX_HTTP_LUA_FFI_HANDLE_TAG  ((uintptr_t) 1 << 63)
#define NGX_HTTP_LUA_FFI_SEQ_BITS    39
#else
#define NGX_HTTP_LUA_FFI_INDEX_BITS  12
#define NGX_HTTP_LUA_FFI_HANDLE_TAG  0
#define NGX_HTTP_LUA_FFI_SEQ_BITS    20
#endif

#define NGX_HTTP_LUA_FFI_INDEX_MASK                                          \
    (((uintptr_t) 1 << NGX_HTTP_LUA_FFI_INDEX_BITS) - 1)
#define NGX_HTTP_LUA_FFI_SEQ_MASK                                            \
    (((uintptr_t) 1 << NGX_HTTP_LUA_FFI_SEQ_BITS) - 1)

#define ngx_http_lua_ffi_handle_seq(h)                                       \
    (((h) >> NGX_HTTP_LUA_FFI_INDEX_BITS) & NGX_HTTP_LUA_FFI_SEQ_MASK)

/* tasks come in chunks that never move: a handle is read without a lock */
#define NGX_HTTP_LUA_FFI_CHUNK_BITS  8
#define NGX_HTTP_LUA_FFI_CHUNK_SIZE  (1 << NGX_HTTP_LUA_FFI_CHUNK_BITS)
#define NGX_HTTP_LUA_FFI_CHUNKS                                              \
    (1 << (NGX_HTTP_LUA_FFI_INDEX_BITS - NGX_HTTP_LUA_FFI_CHUNK_BITS))

/* past this many free tasks they keep no request buffer; the largest one */
#define NGX_HTTP_LUA_FFI_FREE_TASKS    1024
#define NGX_HTTP_LUA_FFI_KEEP_BUF      16384


static ngx_http_lua_ffi_task_t  *ngx_http_lua_ffi_chunks[
                                                    NGX_HTTP_LUA_FFI_CHUNKS];


static ngx_http_lua_ffi_task_t *
ngx_http_lua_ffi_task_new(void)
{
    ngx_uint_t                  i, n;
    ngx_http_lua_ffi_task_t    *chunk;
    ngx_http_lua_ffi_worker_t  *w = &ngx_http_lua_ffi_worker;

    n = w->ntasks;

    if (n > NGX_HTTP_LUA_FFI_INDEX_MASK) {
        ngx_log_error(NGX_LOG_ERR, w->log, 0,
                      "ffi: %ui calls in flight: the task table is full", n);
        return NULL;
    }

    chunk = ngx_http_lua_ffi_chunks[n >> NGX_HTTP_LUA_FFI_CHUNK_BITS];

    if (chunk == NULL) {
        chunk = ngx_calloc(NGX_HTTP_LUA_FFI_CHUNK_SIZE
                           * sizeof(ngx_http_lua_ffi_task_t), w->log);
        if (chunk == NULL) {
            return NULL;
        }

        for (i = 0; i < NGX_HTTP_LUA_FFI_CHUNK_SIZE; i++) {
            chunk[i].index = n + i;
        }

        /* runtime threads read the slot only once this store is seen */
        __atomic_store_n(&ngx_http_lua_ffi_chunks[
                                          n >> NGX_HTTP_LUA_FFI_CHUNK_BITS],
                         chunk, __ATOMIC_RELEASE);
    }

    w->ntasks++;

    return &chunk[n & (NGX_HTTP_LUA_FFI_CHUNK_SIZE - 1)];
}


/*
 * A task for a new call, its request buffer large enough for req_len bytes
 * and the NUL after them. The state says QUEUED from here on: the runtime
 * cannot answer it before it takes it.
 */

ngx_http_lua_ffi_task_t *
ngx_http_lua_ffi_task_alloc(ngx_uint_t rt_id, size_t req_len)
{
    uintptr_t                   seq;
    ngx_http_lua_ffi_task_t    *task;
    ngx_http_lua_ffi_worker_t  *w = &ngx_http_lua_ffi_worker;

    task = w->free_tasks;

    if (task) {
        w->free_tasks = task->next;
        w->nfree--;

        if (w->free_tasks == NULL) {
            w->free_last = NULL;
        }

    } else {
        task = ngx_http_lua_ffi_task_new();
        if (task == NULL) {
            return NULL;
        }
    }

    if (req_len + 1 > task->inline_size) {
        ngx_free(task->inline_buf);
        task->inline_size = 0;

        task->inline_buf = ngx_alloc(req_len + 1, w->log);
        if (task->inline_buf == NULL) {
            ngx_http_lua_ffi_task_free(task);
            return NULL;
        }

        task->inline_size = req_len + 1;
    }

    task->next = NULL;
    task->co_ctx = NULL;
    task->rc = 0;
    task->rsp = NULL;
    task->rsp_len = 0;
    task->kind = NGX_HTTP_LUA_FFI_TASK_CALL;
    task->abandoned = NULL;

    seq = (w->seq + 1) & NGX_HTTP_LUA_FFI_SEQ_MASK;
    if (seq == 0) {
        seq = 1;
    }

    w->seq = seq;

    task->handle = NGX_HTTP_LUA_FFI_HANDLE_TAG
                   | (seq << NGX_HTTP_LUA_FFI_INDEX_BITS) | task->index;

    /* the uses of a slot by one runtime in a row: a range of sequences */
    if (task->rt_id != rt_id) {
        task->prev_rt_id = task->rt_id;
        task->prev_owner_since = task->owner_since;
        task->rt_id = rt_id;
        task->owner_since = seq;
    }

    __atomic_store_n(&task->state,
                     ngx_http_lua_ffi_task_state(seq,
                                                 NGX_HTTP_LUA_FFI_TASK_QUEUED),
                     __ATOMIC_RELEASE);

    return task;
}


void
ngx_http_lua_ffi_task_free(ngx_http_lua_ffi_task_t *task)
{
    ngx_http_lua_ffi_worker_t  *w = &ngx_http_lua_ffi_worker;

    if (task->rsp) {
        free(task->rsp);
        task->rsp = NULL;
    }

    /* the runtime is done with the Lua string: Lua may let it go */
    if (task->in_place) {
        task->in_place = 0;
        ngx_http_lua_ffi_lua_unanchor(task->index);
    }

    /* no handle of this use reaches the task any more */
    __atomic_store_n(&task->state,
                     ngx_http_lua_ffi_task_state(
                         ngx_http_lua_ffi_handle_seq(task->handle),
                         NGX_HTTP_LUA_FFI_TASK_FREE),
                     __ATOMIC_RELEASE);

    if (task->inline_size > NGX_HTTP_LUA_FFI_KEEP_BUF
        || w->nfree >= NGX_HTTP_LUA_FFI_FREE_TASKS)
    {
        ngx_free(task->inline_buf);
        task->inline_buf = NULL;
        task->inline_size = 0;
    }

    task->next = NULL;

    if (w->free_last) {
        w->free_last->next = task;

    } else {
        w->free_tasks = task;
    }

    w->free_last = task;
    w->nfree++;
}


/*
 * From any thread: the slot a handle names and the sequence number it
 * carries, or NULL for a value that names no slot. Whether the handle is
 * the slot's current use is for the caller to check, against the state.
 */

ngx_http_lua_ffi_task_t *
ngx_http_lua_ffi_task_find(void *handle, uintptr_t *seq)
{
    uintptr_t                 h, index;
    ngx_http_lua_ffi_task_t  *chunk;

    h = (uintptr_t) handle;
    index = h & NGX_HTTP_LUA_FFI_INDEX_MASK;
    *seq = ngx_http_lua_ffi_handle_seq(h);

    if (*seq == 0
        || (h & NGX_HTTP_LUA_FFI_HANDLE_TAG) != NGX_HTTP_LUA_FFI_HANDLE_TAG)
    {
        return NULL;
    }

    chunk = __atomic_load_n(
                &ngx_http_lua_ffi_chunks[index >> NGX_HTTP_LUA_FFI_CHUNK_BITS],
                __ATOMIC_ACQUIRE);
    if (chunk == NULL) {
        return NULL;
    }

    return &chunk[index & (NGX_HTTP_LUA_FFI_CHUNK_SIZE - 1)];
}


NGX_HTTP_LUA_FFI_API char *
ngx_http_lua_ffi_get_req(void *tsk, int *len)
{
    uintptr_t                 seq;
    ngx_http_lua_ffi_task_t  *task;

    task = ngx_http_lua_ffi_task_find(tsk, &seq);

    /* only a call the runtime holds has a request */
    if (task == NULL
        || __atomic_load_n(&task->state, __ATOMIC_ACQUIRE)
           != ngx_http_lua_ffi_task_state(seq, NGX_HTTP_LUA_FFI_TASK_TAKEN))
    {
        if (len) {
            *len = 0;
        }

        return NULL;
    }

    if (len) {
        *len = task->req_len;
    }

    return task->req;
}


/*
 * From any thread: an answer that completed nothing (task is the slot the
 * handle names, or NULL). It is told to the event loop, which knows which
 * runtime held that handle: the stray thread touches no runtime, which may
 * be gone by now.
 */

void
ngx_http_lua_ffi_task_stray(ngx_http_lua_ffi_task_t *task, void *handle)
{
    ngx_http_lua_ffi_task_t    *old;
    ngx_http_lua_ffi_worker_t  *w = &ngx_http_lua_ffi_worker;

    if (task == NULL) {
        (void) __atomic_add_fetch(&w->strays_unknown_new, 1,
                                  __ATOMIC_SEQ_CST);

    } else {
        __atomic_store_n(&task->stray_handle, (uintptr_t) handle,
                         __ATOMIC_RELAXED);
        (void) __atomic_add_fetch(&task->strays, 1, __ATOMIC_SEQ_CST);

        if (__atomic_exchange_n(&task->stray_pending, 1, __ATOMIC_SEQ_CST)
            == 0)
        {
            old = __atomic_load_n(&w->stray_slots, __ATOMIC_RELAXED);

            do {
                task->stray_next = old;
            } while (!__atomic_compare_exchange_n(&w->stray_slots, &old,
                                                  task, 1, __ATOMIC_SEQ_CST,
                                                  __ATOMIC_RELAXED));
        }
    }

    if (__atomic_exchange_n(&w->stray_notice_pending, 1, __ATOMIC_SEQ_CST)
        == 0)
    {
        ngx_http_lua_ffi_bridge_done_push(&w->stray_notice);
    }
}


static ngx_http_lua_ffi_runtime_t *
ngx_http_lua_ffi_runtime_by_id(ngx_uint_t id)
{
    ngx_queue_t                 *q;
    ngx_http_lua_ffi_runtime_t  *rt;

    if (id == 0) {
        return NULL;
    }

    for (q = ngx_queue_head(&ngx_http_lua_ffi_worker.runtimes);
         q != ngx_queue_sentinel(&ngx_http_lua_ffi_worker.runtimes);
         q = ngx_queue_next(q))
    {
        rt = ngx_queue_data(q, ngx_http_lua_ffi_runtime_t, link);

        if (rt->queue.id == id) {
            return rt;
        }
    }

    return NULL;
}


static void
ngx_http_lua_ffi_strays_add(ngx_uint_t id, ngx_uint_t n)
{
    ngx_http_lua_ffi_runtime_t  *rt;
    ngx_http_lua_ffi_worker_t   *w = &ngx_http_lua_ffi_worker;

    rt = ngx_http_lua_ffi_runtime_by_id(id);

    if (rt == NULL) {
        w->strays_unknown += n;

        if (!w->stray_unknown_logged) {
            w->stray_unknown_logged = 1;
            ngx_log_error(NGX_LOG_WARN, w->log, 0,
                          "ffi: a runtime answered a task it did not hold "
                          "(not a task handle, or one of a call long "
                          "answered): dropped; such answers are not logged "
                          "again");
        }

        return;
    }

    rt->queue.strays += n;

    if (rt->metrics) {
        rt->metrics->c.strays += n;
    }

    /* no cfg in error.log: it is where passwords go (hot-reload.md) */
    if (!rt->queue.stray_logged) {
        rt->queue.stray_logged = 1;
        ngx_log_error(NGX_LOG_WARN, w->log, 0,
                      "ffi: a runtime of \"%V\" (version %ui) answered a "
                      "task it did not hold (a second answer, or one before "
                      "it took the task): dropped; counted as \"stray\" in "
                      "status, not logged again",
                      &rt->image->library->path, rt->generation);
    }
}


/*
 * On the event loop, for a stray notice: each slot's strays go to the
 * runtime that held the handle they carried. Sequence numbers grow
 * worker-wide, and a slot remembers since which one its runtime (and the
 * one before) used it: that covers any number of reuses by one runtime.
 */

void
ngx_http_lua_ffi_task_strays_count(void)
{
    uintptr_t                   seq;
    ngx_uint_t                  n, id;
    ngx_http_lua_ffi_task_t    *task, *next;
    ngx_http_lua_ffi_worker_t  *w = &ngx_http_lua_ffi_worker;

    /* before the look at what is pending: a later stray notifies again */
    __atomic_store_n(&w->stray_notice_pending, 0, __ATOMIC_SEQ_CST);

    n = __atomic_exchange_n(&w->strays_unknown_new, 0, __ATOMIC_SEQ_CST);
    if (n) {
        ngx_http_lua_ffi_strays_add(0, n);
    }

    task = __atomic_exchange_n(&w->stray_slots, NULL, __ATOMIC_SEQ_CST);

    for ( /* void */ ; task; task = next) {
        next = task->stray_next;

        __atomic_store_n(&task->stray_pending, 0, __ATOMIC_SEQ_CST);
        n = __atomic_exchange_n(&task->strays, 0, __ATOMIC_SEQ_CST);
        seq = ngx_http_lua_ffi_handle_seq(
                  __atomic_load_n(&task->stray_handle, __ATOMIC_RELAXED));

        if (n == 0) {
            continue;
        }

        if (seq > ngx_http_lua_ffi_handle_seq(task->handle)) {
            id = 0;                          /* never issued for this slot */

        } else if (seq >= task->owner_since) {
            id = task->rt_id;

        } else if (seq >= task->prev_owner_since) {
            id = task->prev_rt_id;

        } else {
            id = 0;
        }

        ngx_http_lua_ffi_strays_add(id, n);
    }
}
