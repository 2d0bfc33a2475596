/*
 * Types shared by the bridge (src/), the hot-reload manager (manager/) and
 * the admin endpoint (admin/). One worker process owns everything here.
 */

#ifndef _NGX_HTTP_LUA_FFI_MODULE_H_INCLUDED_
#define _NGX_HTTP_LUA_FFI_MODULE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <pthread.h>

#include "ngx_http_lua_common.h"
#include "ngx_http_lua_ffi.h"
#include "ngx_http_lua_ffi_counters.h"


#define NGX_HTTP_LUA_FFI_API  __attribute__((visibility("default")))

#define NGX_HTTP_LUA_FFI_ERRLEN        256
#define NGX_HTTP_LUA_FFI_MAX_NAMES     4
#define NGX_HTTP_LUA_FFI_HISTORY_MAX   16      /* ffi_history's largest N */


typedef struct ngx_http_lua_ffi_task_s     ngx_http_lua_ffi_task_t;
typedef struct ngx_http_lua_ffi_queue_s    ngx_http_lua_ffi_queue_t;
typedef struct ngx_http_lua_ffi_runtime_s  ngx_http_lua_ffi_runtime_t;
typedef struct ngx_http_lua_ffi_image_s    ngx_http_lua_ffi_image_t;
typedef struct ngx_http_lua_ffi_library_s  ngx_http_lua_ffi_library_t;
typedef struct ngx_http_lua_ffi_handle_s   ngx_http_lua_ffi_handle_t;


typedef enum {
    NGX_HTTP_LUA_FFI_TASK_CALL = 0,
    NGX_HTTP_LUA_FFI_TASK_DRAINED,     /* a runtime took its NULL task */
    NGX_HTTP_LUA_FFI_TASK_STRAY        /* answers to nothing were dropped */
} ngx_http_lua_ffi_task_kind_e;


/*
 * One call. Owned by the event loop, lent to the runtime between post and
 * respond. Tasks live in the worker's task table (ngx_http_lua_ffi_task.c)
 * and are never freed while the worker lives, so that a runtime that
 * answers a task twice or late never writes to freed memory.
 *
 * What a runtime holds is a *handle*, not the address: the task's index in
 * the table and the sequence number of this use (one worker-wide counter).
 * The task's state word holds the sequence number and where the call is;
 * respond() moves it from TAKEN to ANSWERED by compare-and-swap, so only
 * the handle of a call that a runtime took and has not answered can ever
 * complete it.
 */

#define NGX_HTTP_LUA_FFI_TASK_FREE      0
#define NGX_HTTP_LUA_FFI_TASK_QUEUED    1
#define NGX_HTTP_LUA_FFI_TASK_TAKEN     2
#define NGX_HTTP_LUA_FFI_TASK_ANSWERED  3

#define ngx_http_lua_ffi_task_state(seq, st)  (((uintptr_t) (seq) << 2) | (st))

/*
 * From this length on a request is not copied: the runtime reads the Lua
 * string in place (LuaJIT ends every string with a NUL), kept alive by
 * Lua's anchor table under the task's index until the task is freed. Below
 * it the copy goes into the task's reused buffer, which is cheaper than
 * the anchor; at it, that buffer would be malloc()ed and freed per call.
 */
#define NGX_HTTP_LUA_FFI_IN_PLACE      16384

struct ngx_http_lua_ffi_task_s {
    ngx_http_lua_ffi_task_t      *next;      /* queue or done-stack link */
    ngx_http_lua_ffi_runtime_t   *runtime;
    ngx_http_lua_co_ctx_t        *co_ctx;    /* NULL once the caller left */
    ngx_http_request_t           *request;
    char                         *req;       /* req[req_len] == '\0' */
    int                           req_len;
    int                           rc;
    char                         *rsp;
    int                           rsp_len;
    uintptr_t                     state;     /* atomic: seq << 2 | where */
    uintptr_t                     handle;    /* of this use */
    ngx_event_t                   timer;     /* per-call timeout, if any */
    ngx_queue_t                   inflight;  /* in the worker's calls */
    const char                   *abandoned; /* why Lua stopped waiting */
    unsigned                      kind:2;
    unsigned                      in_place:1;  /* req is a Lua string's */
    ngx_uint_t                    index;     /* in the task table */
    char                         *inline_buf;  /* reusable request buffer */
    size_t                        inline_size;

    /* stray answers to this slot, for the event loop to attribute */
    ngx_http_lua_ffi_task_t      *stray_next;
    uintptr_t                     stray_handle;  /* atomic: the last one */
    ngx_uint_t                    strays;        /* atomic */
    int                           stray_pending; /* atomic: on the stack */
    ngx_uint_t                    rt_id;         /* runtime of this use */
    uintptr_t                     owner_since;   /* its first seq here */
    ngx_uint_t                    prev_rt_id;    /* the runtime before */
    uintptr_t                     prev_owner_since;

    ngx_http_lua_ffi_series_t    *metrics;   /* its runtime's, at post */
    uint64_t                      posted_ns;
};


/* The thread-safe queue a runtime polls; `tq` in the ABI points here. */
struct ngx_http_lua_ffi_queue_s {
    pthread_mutex_t               mutex;
    pthread_cond_t                cond;
    ngx_http_lua_ffi_task_t      *head;
    ngx_http_lua_ffi_task_t      *tail;
    ngx_uint_t                    size;
    ngx_uint_t                    max;
    ngx_uint_t                    sleepers;  /* pollers in cond_wait */
    ngx_uint_t                    taken;     /* tasks handed to pollers */
    uint64_t                      spin_ns;   /* poll: spin before sleep */
    int                           spinning;  /* atomic: one spinner */
    int                           closing;   /* NULL task appended */
    unsigned                      closed:1;  /* NULL task taken */
    ngx_uint_t                    id;        /* unique in the worker */
    ngx_uint_t                    owed;      /* wakes due at cycle end */
    ngx_queue_t                   owed_link; /* in the worker's list */
    ngx_uint_t                    strays;    /* answers to nothing */
    unsigned                      stray_logged:1;
};


typedef enum {
    NGX_HTTP_LUA_FFI_RT_STARTING = 0,
    NGX_HTTP_LUA_FFI_RT_SERVING,
    NGX_HTTP_LUA_FFI_RT_DRAINING,
    NGX_HTTP_LUA_FFI_RT_DRAINED
} ngx_http_lua_ffi_rt_state_e;


/* One libffi_init() on one image: the runtime's threads and its queue. */
struct ngx_http_lua_ffi_runtime_s {
    ngx_http_lua_ffi_queue_t      queue;     /* first: tq == runtime */
    ngx_http_lua_ffi_image_t     *image;
    ngx_str_t                     cfg;       /* for status */
    ngx_queue_t                   link;      /* in the registry's list */
    ngx_http_lua_ffi_task_t       drained;   /* pushed when NULL is taken */
    ngx_event_t                   reaper;    /* grace before free */
    ngx_uint_t                    generation;
    ngx_uint_t                    inflight;  /* posted, not yet answered */
    ngx_uint_t                    calls;
    ngx_uint_t                    failed;    /* refused: queue full */
    ngx_http_lua_ffi_series_t    *metrics;   /* never NULL once started */
    ngx_msec_t                    started;
    ngx_msec_t                    drain_started;
    ngx_http_lua_ffi_rt_state_e   state;
    unsigned                      null_taken:1;
    unsigned                      init_failed:1;
    unsigned                      has_cfg:1;
};


typedef enum {
    NGX_HTTP_LUA_FFI_IMG_LOADING = 0,
    NGX_HTTP_LUA_FFI_IMG_SERVING,
    NGX_HTTP_LUA_FFI_IMG_DRAINING,
    NGX_HTTP_LUA_FFI_IMG_CLOSED
} ngx_http_lua_ffi_img_state_e;


/* One version of one library, mapped from its own shadow copy. */
struct ngx_http_lua_ffi_image_s {
    ngx_http_lua_ffi_library_t   *library;
    ngx_queue_t                   link;      /* in library->images */
    void                         *dl;
    int                         (*init)(char *cfg, void *tq);
    u_char                       *shadow;    /* NUL-terminated path */
    int                           fd;        /* the copy, open while mapped */
    ngx_uint_t                    version;
    uint64_t                      hash;      /* of the file's bytes */
    char                          build_id[41];
    int                           pin_reason;
    ngx_uint_t                    refcount;  /* runtimes on this image */
    ngx_event_t                   closer;    /* grace before dlclose */
    ngx_http_lua_ffi_img_state_e  state;
    unsigned                      pinned:1;
};


/* A library file, keyed by its resolved path. */
struct ngx_http_lua_ffi_library_s {
    ngx_queue_t                   link;      /* in the registry */
    ngx_str_t                     path;
    ngx_str_t                     names[NGX_HTTP_LUA_FFI_MAX_NAMES];
    ngx_uint_t                    nnames;
    ngx_queue_t                   images;
    ngx_http_lua_ffi_image_t     *current;
    ngx_http_lua_ffi_image_t     *next;      /* prepared by a reload */
    ngx_uint_t                    next_version;  /* what next is for */
    ngx_http_lua_ffi_image_t     *canary;    /* a canary's, or NULL */
    ngx_uint_t                    canary_version;
    ngx_uint_t                    canary_pct;
    /* spreads calls evenly over all handles, a handle per request too */
    ngx_uint_t                    canary_acc;
    u_char                        canary_key[64];  /* lowercase, or "" */
    ngx_queue_t                   handles;
    ngx_uint_t                    version;
    ngx_uint_t                    reloads;
    ngx_int_t                     shm_index; /* entry in the shared zone */
    u_char                        last_error[NGX_HTTP_LUA_FFI_ERRLEN];
    ngx_event_t                   watch_timer; /* debounces drops */
    u_char                        watch_event[32];
    unsigned                      is_global:1;
    unsigned                      unpin:1;
    unsigned                      fresh:1;
    unsigned                      watch_reloading:1;
    unsigned                      watch_again:1;
};


/*
 * What a Lua runtime object points at: the key (library, cfg) for as long
 * as it lives. A reload swaps `runtime` underneath, so objects cached in Lua
 * before the reload follow it. __unload() retires it for good.
 */
struct ngx_http_lua_ffi_handle_s {
    ngx_queue_t                   link;      /* in library->handles */
    ngx_http_lua_ffi_library_t   *library;
    ngx_http_lua_ffi_runtime_t   *runtime;   /* NULL once unloaded */
    ngx_http_lua_ffi_runtime_t   *next;      /* prepared by a reload */
    ngx_http_lua_ffi_runtime_t   *canary;    /* a share of calls, or NULL */
    ngx_uint_t                    canary_pct;
    ngx_str_t                     canary_key;  /* ngx.var name, lowercase */
    ngx_uint_t                    canary_hash; /* of canary_key */
    ngx_str_t                     lib;       /* name it was loaded with */
    ngx_str_t                     cfg;
    ngx_msec_t                    timeout;   /* per call; 0: none */
    ngx_uint_t                    max_queue;
    ngx_uint_t                    lua_refs;  /* Lua objects holding it */
    unsigned                      has_cfg:1;
    unsigned                      unloaded:1;
};


/* Per-worker state of the module. */
typedef struct {
    ngx_connection_t             *notify;    /* our eventfd */
    ngx_http_lua_ffi_task_t      *done;      /* atomic LIFO of answers */
    ngx_http_lua_ffi_task_t      *free_tasks;  /* FIFO: oldest first */
    ngx_http_lua_ffi_task_t      *free_last;
    ngx_uint_t                    nfree;
    ngx_uint_t                    ntasks;    /* slots of the task table */
    uintptr_t                     seq;       /* of the last use of a task */
    ngx_uint_t                    queue_ids;
    ngx_http_lua_ffi_task_t       stray_notice;
    int                           stray_notice_pending;  /* atomic */
    ngx_http_lua_ffi_task_t      *stray_slots;   /* atomic LIFO */
    ngx_uint_t                    strays_unknown_new;  /* atomic */
    ngx_uint_t                    strays_unknown;
    unsigned                      stray_unknown_logged:1;
    ngx_uint_t                    inflight;
    ngx_queue_t                   calls;     /* tasks in flight */
    ngx_event_t                   keeper;    /* holds graceful exit */
    ngx_event_t                   busy;      /* polls answers, no sleep */
    uint64_t                      busy_until;
    uint64_t                      busy_poll_ns;  /* 0: sleep at once */
    ngx_uint_t                    queue_spin_us;
    ngx_uint_t                    busy_rounds;
    int                           polling;   /* atomic: busy is on */
    ngx_event_t                   wake;      /* wakes sleeping pollers */
    ngx_queue_t                   owed;      /* queues it must wake */
    ngx_queue_t                   libraries;
    ngx_queue_t                   runtimes;  /* every runtime, any state */
    ngx_log_t                    *log;
    ngx_cycle_t                  *cycle;
    ngx_uint_t                    slot;      /* ngx_worker */
    unsigned                      ready:1;   /* worker initialised */
    unsigned                      exiting:1;
    unsigned                      abandoned:1;  /* runtimes left at exit */
} ngx_http_lua_ffi_worker_t;


typedef struct {
    ngx_array_t                  *library_path;  /* of ngx_str_t */
    ngx_flag_t                    watch;
    ngx_flag_t                    trial;
    ngx_flag_t                    status_cfg;  /* show cfg in /ffi/status */
    ngx_uint_t                    busy_poll_us;
    ngx_uint_t                    queue_spin_us;
    ngx_msec_t                    watch_delay;
    ngx_msec_t                    close_grace;
    ngx_msec_t                    exit_timeout;
    ngx_msec_t                    reload_timeout;
    ngx_str_t                     shadow_path;
    ngx_str_t                     admin_token;
    ngx_uint_t                    guard;       /* ffi_canary_guard on */
    double                        guard_margin;
    ngx_uint_t                    guard_min_calls;
    ngx_msec_t                    guard_window;
    size_t                        shm_size;
    ngx_int_t                     history;       /* ffi_history N */
    ngx_shm_zone_t               *shm_zone;
    int                          *notify_fds;    /* one eventfd a worker */
    ngx_uint_t                    nworkers;
    cpu_set_t                    *runtime_cpus;  /* NULL: inherit */
    cpu_set_t                     nginx_cpus;    /* the master's */
    ngx_flag_t                    nginx_cpus_known;
} ngx_http_lua_ffi_main_conf_t;


extern ngx_module_t                ngx_http_lua_ffi_module;
extern ngx_http_lua_ffi_worker_t   ngx_http_lua_ffi_worker;


/* bridge: the event loop side */
ngx_int_t ngx_http_lua_ffi_bridge_init(ngx_cycle_t *cycle, int fd);
void ngx_http_lua_ffi_bridge_exit(ngx_cycle_t *cycle);
ngx_uint_t ngx_http_lua_ffi_bridge_holds_lua(void);
void ngx_http_lua_ffi_bridge_wake(void);
void ngx_http_lua_ffi_bridge_stop_polling(void);

/* task table: handles, from any thread */
ngx_http_lua_ffi_task_t *ngx_http_lua_ffi_task_alloc(ngx_uint_t rt_id,
    size_t req_len);
void ngx_http_lua_ffi_task_free(ngx_http_lua_ffi_task_t *task);
ngx_http_lua_ffi_task_t *ngx_http_lua_ffi_task_find(void *handle,
    uintptr_t *seq);
void ngx_http_lua_ffi_task_stray(ngx_http_lua_ffi_task_t *task,
    void *handle);
void ngx_http_lua_ffi_task_strays_count(void);
ngx_int_t ngx_http_lua_ffi_call_post(ngx_http_request_t *r,
    ngx_http_lua_ffi_handle_t *h, const char *req, int req_len,
    int timeout_ms, int *anchor, const char **err);
void ngx_http_lua_ffi_bridge_done_push(ngx_http_lua_ffi_task_t *task);
void ngx_http_lua_ffi_bridge_process(void);
ngx_int_t ngx_http_lua_ffi_bridge_wait(ngx_msec_t timeout);

/* queue: thread-safe, both sides */
ngx_int_t ngx_http_lua_ffi_queue_init(ngx_http_lua_ffi_queue_t *q,
    ngx_uint_t max, ngx_uint_t spin_us);
uint64_t ngx_http_lua_ffi_now_ns(void);
void ngx_http_lua_ffi_queue_destroy(ngx_http_lua_ffi_queue_t *q);
ngx_int_t ngx_http_lua_ffi_queue_push(ngx_http_lua_ffi_queue_t *q,
    ngx_http_lua_ffi_task_t *task);
void ngx_http_lua_ffi_queue_close(ngx_http_lua_ffi_queue_t *q);
void ngx_http_lua_ffi_queue_wake_init(ngx_cycle_t *cycle);
void ngx_http_lua_ffi_queue_wake_owed(void);

/* cpus: where the threads of libraries run (ffi_runtime_cpus) */
char *ngx_http_lua_ffi_cpus_conf(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
void ngx_http_lua_ffi_cpus_init_worker(ngx_cycle_t *cycle,
    ngx_http_lua_ffi_main_conf_t *fmcf);
ngx_uint_t ngx_http_lua_ffi_cpus_apart(void);
u_char *ngx_http_lua_ffi_cpus_print(u_char *p, u_char *last, cpu_set_t *set);
u_char *ngx_http_lua_ffi_cpus_describe(u_char *p, u_char *last);
void ngx_http_lua_ffi_cpus_enter(void);
void ngx_http_lua_ffi_cpus_leave(void);

/* lua: Lua's hold on a request read in place */
void ngx_http_lua_ffi_lua_unanchor(ngx_uint_t index);

/* signal: nginx's handlers run on the event loop thread only */
ngx_int_t ngx_http_lua_ffi_signal_init(ngx_cycle_t *cycle);
void ngx_http_lua_ffi_signal_guard(ngx_log_t *log, ngx_str_t *library);

/* log: runtime lines, written on the event loop */
void ngx_http_lua_ffi_log_flush(void);
ngx_uint_t ngx_http_lua_ffi_log_dropped(void);

/* registry: manager/ */
ngx_http_lua_ffi_handle_t *ngx_http_lua_ffi_registry_load(ngx_str_t *lib,
    ngx_str_t *cfg, ngx_uint_t max_queue, ngx_uint_t flags,
    ngx_msec_t timeout, int *rc, u_char *err, size_t errlen);
void ngx_http_lua_ffi_registry_unload(ngx_http_lua_ffi_handle_t *h);
void ngx_http_lua_ffi_registry_release(ngx_http_lua_ffi_handle_t *h);
void ngx_http_lua_ffi_registry_exit(ngx_cycle_t *cycle);
void ngx_http_lua_ffi_registry_retire(ngx_http_lua_ffi_runtime_t *rt);

#define NGX_HTTP_LUA_FFI_LOAD_GLOBAL   0x1
#define NGX_HTTP_LUA_FFI_LOAD_UNPIN    0x2

/*
 * What the layer above hears from the bridge, through handlers it sets at
 * init (as nginx's event modules set theirs): a retired runtime took its
 * NULL task, a call was answered, another worker wrote our eventfd. NULL:
 * nobody listens.
 */
typedef struct {
    void  (*drained)(ngx_http_lua_ffi_runtime_t *rt);
    void  (*answered)(ngx_http_lua_ffi_runtime_t *rt);
    void  (*notified)(void);
} ngx_http_lua_ffi_hooks_t;

extern ngx_http_lua_ffi_hooks_t    ngx_http_lua_ffi_hooks;


#endif /* _NGX_HTTP_LUA_FFI_MODULE_H_INCLUDED_ */
