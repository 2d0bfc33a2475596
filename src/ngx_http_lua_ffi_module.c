/*
 * The nginx module: directives, configuration, and the per-process hooks
 * that set up each worker's eventfd, shared zone and shadow directory.
 */

#include "ngx_http_lua_ffi_module.h"
#include "ngx_http_lua_ffi_manager.h"
#include "ngx_http_lua_ffi_metrics.h"

#include <sys/eventfd.h>


static void *ngx_http_lua_ffi_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_lua_ffi_init_main_conf(ngx_conf_t *cf, void *conf);
static char *ngx_http_lua_ffi_conf_library_path(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static ngx_int_t ngx_http_lua_ffi_postconfiguration(ngx_conf_t *cf);
static ngx_int_t ngx_http_lua_ffi_init_module(ngx_cycle_t *cycle);
static ngx_int_t ngx_http_lua_ffi_init_process(ngx_cycle_t *cycle);
static void ngx_http_lua_ffi_exit_process(ngx_cycle_t *cycle);
static void ngx_http_lua_ffi_exit_master(ngx_cycle_t *cycle);
static void ngx_http_lua_ffi_close_fds(void *data);
static ngx_int_t ngx_http_lua_ffi_pin_self(ngx_cycle_t *cycle);
static void ngx_http_lua_ffi_leave(void);
static void ngx_http_lua_ffi_leave_early(void *data);


/* ffi_history N: a version's shadow copy and record live in shared memory */
static ngx_conf_num_bounds_t  ngx_http_lua_ffi_history_bounds = {
    ngx_conf_check_num_bounds, 1, NGX_HTTP_LUA_FFI_HISTORY_MAX
};


static ngx_command_t  ngx_http_lua_ffi_commands[] = {

    { ngx_string("ffi_library_path"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_lua_ffi_conf_library_path,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("ffi_watch"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_lua_ffi_main_conf_t, watch),
      NULL },

    { ngx_string("ffi_trial"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_lua_ffi_main_conf_t, trial),
      NULL },

    { ngx_string("ffi_busy_poll_us"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_lua_ffi_main_conf_t, busy_poll_us),
      NULL },

    { ngx_string("ffi_queue_spin_us"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_lua_ffi_main_conf_t, queue_spin_us),
      NULL },

    { ngx_string("ffi_runtime_cpus"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_lua_ffi_cpus_conf,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("ffi_watch_delay"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_lua_ffi_main_conf_t, watch_delay),
      NULL },

    { ngx_string("ffi_close_grace"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_lua_ffi_main_conf_t, close_grace),
      NULL },

    { ngx_string("ffi_exit_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_lua_ffi_main_conf_t, exit_timeout),
      NULL },

    { ngx_string("ffi_reload_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_lua_ffi_main_conf_t, reload_timeout),
      NULL },

    { ngx_string("ffi_shadow_path"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_lua_ffi_main_conf_t, shadow_path),
      NULL },

    { ngx_string("ffi_status_cfg"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_lua_ffi_main_conf_t, status_cfg),
      NULL },

    { ngx_string("ffi_shm_size"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_lua_ffi_main_conf_t, shm_size),
      NULL },

    { ngx_string("ffi_history"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_lua_ffi_main_conf_t, history),
      &ngx_http_lua_ffi_history_bounds },

    { ngx_string("ffi_admin"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_lua_ffi_admin,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("ffi_canary_guard"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_lua_ffi_canary_guard_conf,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("ffi_admin_token"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_lua_ffi_main_conf_t, admin_token),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_lua_ffi_module_ctx = {
    NULL,                                  /* preconfiguration */
    ngx_http_lua_ffi_postconfiguration,    /* postconfiguration */

    ngx_http_lua_ffi_create_main_conf,     /* create main configuration */
    ngx_http_lua_ffi_init_main_conf,       /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    NULL,                                  /* create location configuration */
    NULL                                   /* merge location configuration */
};


ngx_module_t  ngx_http_lua_ffi_module = {
    NGX_MODULE_V1,
    &ngx_http_lua_ffi_module_ctx,          /* module context */
    ngx_http_lua_ffi_commands,             /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    ngx_http_lua_ffi_init_module,          /* init module */
    ngx_http_lua_ffi_init_process,         /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_lua_ffi_exit_process,         /* exit process */
    ngx_http_lua_ffi_exit_master,          /* exit master */
    NGX_MODULE_V1_PADDING
};


static void *
ngx_http_lua_ffi_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_lua_ffi_main_conf_t  *fmcf;

    fmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_lua_ffi_main_conf_t));
    if (fmcf == NULL) {
        return NULL;
    }

    fmcf->watch = NGX_CONF_UNSET;
    fmcf->trial = NGX_CONF_UNSET;
    fmcf->guard = NGX_CONF_UNSET_UINT;
    fmcf->status_cfg = NGX_CONF_UNSET;
    fmcf->busy_poll_us = NGX_CONF_UNSET_UINT;
    fmcf->queue_spin_us = NGX_CONF_UNSET_UINT;
    fmcf->watch_delay = NGX_CONF_UNSET_MSEC;
    fmcf->close_grace = NGX_CONF_UNSET_MSEC;
    fmcf->exit_timeout = NGX_CONF_UNSET_MSEC;
    fmcf->reload_timeout = NGX_CONF_UNSET_MSEC;
    fmcf->shm_size = NGX_CONF_UNSET_SIZE;
    fmcf->history = NGX_CONF_UNSET;
    fmcf->runtime_cpus = NGX_CONF_UNSET_PTR;

    /* the master's set: workers are bound to parts of it later */
    fmcf->nginx_cpus_known = (sched_getaffinity(0, sizeof(cpu_set_t),
                                                &fmcf->nginx_cpus) == 0);

    return fmcf;
}


static char *
ngx_http_lua_ffi_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_lua_ffi_main_conf_t  *fmcf = conf;

    char  *tmp;

    ngx_conf_init_value(fmcf->watch, 0);
    ngx_conf_init_value(fmcf->trial, 1);
    ngx_conf_init_uint_value(fmcf->guard, 0);
    ngx_conf_init_value(fmcf->status_cfg, 0);
    ngx_conf_init_uint_value(fmcf->busy_poll_us, 20);
    ngx_conf_init_uint_value(fmcf->queue_spin_us, 20);
    ngx_conf_init_msec_value(fmcf->watch_delay, 300);
    ngx_conf_init_msec_value(fmcf->close_grace, 500);
    ngx_conf_init_msec_value(fmcf->exit_timeout, 5000);
    ngx_conf_init_msec_value(fmcf->reload_timeout, 10000);
    ngx_conf_init_size_value(fmcf->shm_size, 1024 * 1024);
    ngx_conf_init_value(fmcf->history, 5);

    if (fmcf->shadow_path.data == NULL) {
        tmp = getenv("TMPDIR");
        if (tmp == NULL || tmp[0] != '/') {
            tmp = "/tmp";
        }

#ifdef NGX_HTTP_LUA_FFI_SHADOW_DIR
        /* an installed module writes only where its package owns a folder */
        if (access(NGX_HTTP_LUA_FFI_SHADOW_DIR, F_OK) == 0) {
            tmp = NGX_HTTP_LUA_FFI_SHADOW_DIR;
        }
#endif

        fmcf->shadow_path.len = ngx_strlen(tmp);
        fmcf->shadow_path.data = (u_char *) tmp;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_lua_ffi_conf_library_path(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_lua_ffi_main_conf_t  *fmcf = conf;

    u_char     *p, *last, *start;
    ngx_str_t  *value, *dir;

    if (fmcf->library_path) {
        return "is duplicate";
    }

    fmcf->library_path = ngx_array_create(cf->pool, 4, sizeof(ngx_str_t));
    if (fmcf->library_path == NULL) {
        return NGX_CONF_ERROR;
    }

    value = cf->args->elts;
    p = value[1].data;
    last = p + value[1].len;

    while (p < last) {
        start = p;

        while (p < last && *p != ':') {
            p++;
        }

        if (p > start) {
            dir = ngx_array_push(fmcf->library_path);
            if (dir == NULL) {
                return NGX_CONF_ERROR;
            }

            dir->len = p - start;
            dir->data = start;

            if (ngx_conf_full_name(cf->cycle, dir, 1) != NGX_OK) {
                return NGX_CONF_ERROR;
            }
        }

        p++;
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_lua_ffi_postconfiguration(ngx_conf_t *cf)
{
    ngx_http_lua_ffi_main_conf_t  *fmcf;

    fmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_lua_ffi_module);

    if (ngx_http_lua_ffi_metrics_add(cf) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_http_lua_ffi_shm_add(cf, fmcf);
}


/*
 * In the master, before the workers are forked: one eventfd per worker.
 * A worker watches its own; any worker may write to another's to tell it
 * that a reload or a status request concerns it.
 */

static ngx_int_t
ngx_http_lua_ffi_init_module(ngx_cycle_t *cycle)
{
    ngx_uint_t                     i;
    ngx_core_conf_t               *ccf;
    ngx_pool_cleanup_t            *cln;
    ngx_http_lua_ffi_main_conf_t  *fmcf;

    fmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_lua_ffi_module);
    if (fmcf == NULL) {
        return NGX_OK;
    }

    ccf = (ngx_core_conf_t *) ngx_get_conf(cycle->conf_ctx, ngx_core_module);

    fmcf->nworkers = ccf->master ? (ngx_uint_t) ccf->worker_processes : 1;

    fmcf->notify_fds = ngx_pcalloc(cycle->pool,
                                   fmcf->nworkers * sizeof(int));
    if (fmcf->notify_fds == NULL) {
        return NGX_ERROR;
    }

    cln = ngx_pool_cleanup_add(cycle->pool, 0);
    if (cln == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i < fmcf->nworkers; i++) {
        fmcf->notify_fds[i] = -1;
    }

    cln->handler = ngx_http_lua_ffi_close_fds;
    cln->data = fmcf;

    for (i = 0; i < fmcf->nworkers; i++) {
        fmcf->notify_fds[i] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);

        if (fmcf->notify_fds[i] == -1) {
            ngx_log_error(NGX_LOG_EMERG, cycle->log, ngx_errno,
                          "ffi: eventfd() failed");
            return NGX_ERROR;
        }
    }

    return ngx_http_lua_ffi_shadow_init(cycle, fmcf, ccf);
}


static void
ngx_http_lua_ffi_close_fds(void *data)
{
    ngx_http_lua_ffi_main_conf_t  *fmcf = data;

    ngx_uint_t  i;

    for (i = 0; i < fmcf->nworkers; i++) {
        if (fmcf->notify_fds[i] != -1) {
            (void) close(fmcf->notify_fds[i]);
            fmcf->notify_fds[i] = -1;
        }
    }
}


static ngx_int_t
ngx_http_lua_ffi_init_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                     slot;
    ngx_http_lua_ffi_worker_t     *w = &ngx_http_lua_ffi_worker;
    ngx_http_lua_ffi_main_conf_t  *fmcf;

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    fmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_lua_ffi_module);
    if (fmcf == NULL || fmcf->notify_fds == NULL) {
        return NGX_OK;
    }

    slot = (ngx_process == NGX_PROCESS_WORKER) ? ngx_worker : 0;
    if (slot >= fmcf->nworkers) {
        return NGX_OK;
    }

    /* before anything can leave a pointer into this image behind */
    if (ngx_http_lua_ffi_pin_self(cycle) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_memzero(w, sizeof(ngx_http_lua_ffi_worker_t));
    w->log = cycle->log;
    w->cycle = cycle;
    w->slot = slot;
    ngx_queue_init(&w->libraries);
    ngx_queue_init(&w->runtimes);

    /* before Lua's init_worker can map a library and start its threads */
    ngx_http_lua_ffi_cpus_init_worker(cycle, fmcf);

    if (ngx_http_lua_ffi_signal_init(cycle) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_http_lua_ffi_bridge_init(cycle, fmcf->notify_fds[slot])
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    /*
     * The worker's own eventfd is the bridge's until the process ends, not
     * the cycle's: a runtime thread may answer and wake it after nginx
     * destroyed the cycle, whose cleanup closes the array, and by then the
     * number may be another file's. The kernel closes it at the very end.
     */
    fmcf->notify_fds[slot] = -1;

    if (ngx_http_lua_ffi_manager_init_worker(cycle, fmcf) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_http_lua_ffi_metrics_init_worker(cycle) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_http_lua_ffi_watch_init(cycle) != NGX_OK) {
        return NGX_ERROR;
    }

    w->ready = 1;

    return NGX_OK;
}


/*
 * nginx dlclose()s its dynamic modules when a worker exits (a cleanup of
 * the cycle's pool that ngx_load_module registers), while runtime threads
 * may still be in task_poll or respond, or call them later, and a signal
 * may still land on a library's thread and enter the signal trampoline
 * (ngx_http_lua_ffi_signal.c) that is the process's handler from now on.
 * So in a worker this image is pinned, here and only here, for all of the
 * module: mapped until the process ends. Without the pin neither the
 * bridge nor the trampoline may be set up: the worker does not start. The
 * master, which runs no runtime and installs no trampoline, keeps nginx's
 * own handling, so that a reload with a new build of the module maps the
 * new file.
 */

static ngx_int_t
ngx_http_lua_ffi_pin_self(ngx_cycle_t *cycle)
{
    void     *self;
    Dl_info   info;

    if (dladdr((void *) &ngx_http_lua_ffi_module, &info) == 0
        || info.dli_fname == NULL)
    {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, 0,
                      "ffi: dladdr() found no file for the module: it "
                      "cannot be kept mapped under runtime threads");
        return NGX_ERROR;
    }

    self = dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);

    if (self == NULL) {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, 0,
                      "ffi: pinning \"%s\" failed: %s", info.dli_fname,
                      dlerror());
        return NGX_ERROR;
    }

    /* the reference goes; RTLD_NODELETE stays */
    (void) dlclose(self);

    return NGX_OK;
}


static void
ngx_http_lua_ffi_exit_process(ngx_cycle_t *cycle)
{
    ngx_pool_cleanup_t         *cln;
    ngx_http_lua_ffi_worker_t  *w = &ngx_http_lua_ffi_worker;

    if (!w->ready) {
        return;
    }

    w->exiting = 1;

    ngx_http_lua_ffi_bridge_stop_polling();
    ngx_http_lua_ffi_watch_exit(cycle);
    ngx_http_lua_ffi_registry_exit(cycle);
    ngx_http_lua_ffi_metrics_exit_worker(cycle);
    ngx_http_lua_ffi_manager_exit_worker(cycle);
    ngx_http_lua_ffi_bridge_exit(cycle);

    if (w->abandoned) {
        /*
         * exit() would run library destructors, and one may wait for a
         * thread that never returns. Registered last, this runs first in
         * exit(): after nginx's own exit work, before any library code.
         */
        if (atexit(ngx_http_lua_ffi_leave) != 0) {
            ngx_log_error(NGX_LOG_ALERT, cycle->log, 0,
                          "ffi: atexit() failed: library destructors will "
                          "run at exit");
        }

        /*
         * A thread of theirs may still read a request in place, a string
         * of the Lua VM that the cycle's pool closes (and unmaps): leave
         * before. Added last, this cleanup runs first.
         */
        if (ngx_http_lua_ffi_bridge_holds_lua()) {
            cln = ngx_pool_cleanup_add(cycle->pool, 0);

            if (cln == NULL) {
                ngx_log_error(NGX_LOG_ALERT, cycle->log, 0,
                              "ffi: no memory: the Lua VM closes under a "
                              "request a runtime may still read");

            } else {
                cln->handler = ngx_http_lua_ffi_leave_early;
            }
        }
    }

    w->ready = 0;
}


static void
ngx_http_lua_ffi_leave(void)
{
    _exit(0);
}


/* What nginx does after the cycle's pool, before it: the Lua VM stays. */

static void
ngx_http_lua_ffi_leave_early(void *data)
{
    ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0, "exit");
    _exit(0);
}


static void
ngx_http_lua_ffi_exit_master(ngx_cycle_t *cycle)
{
    ngx_http_lua_ffi_shadow_cleanup(cycle);
}
