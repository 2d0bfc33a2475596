/*
 * The metrics zone: every worker's counters in shared memory, so that a
 * scrape of /ffi/metrics reads them all without asking any worker.
 */

#ifndef _NGX_HTTP_LUA_FFI_METRICS_H_INCLUDED_
#define _NGX_HTTP_LUA_FFI_METRICS_H_INCLUDED_


#include "ngx_http_lua_ffi_manager.h"


#define NGX_HTTP_LUA_FFI_METRICS_SLOTS    1024
#define NGX_HTTP_LUA_FFI_METRICS_LIBS     64
#define NGX_HTTP_LUA_FFI_METRICS_PROCS    256   /* old and new, across HUP */
#define NGX_HTTP_LUA_FFI_RT_STATES        4


/* how a reload ended: ffi_reloads_total{outcome, reason} */
typedef enum {
    NGX_HTTP_LUA_FFI_RELOAD_OK = 0,
    NGX_HTTP_LUA_FFI_RELOAD_CONFLICT,         /* 409: cannot be unloaded */
    NGX_HTTP_LUA_FFI_RELOAD_REFUSED_FILE,     /* the file failed its checks */
    NGX_HTTP_LUA_FFI_RELOAD_REFUSED_TRIAL,    /* the trial process failed */
    NGX_HTTP_LUA_FFI_RELOAD_REFUSED_PREPARE,  /* a worker could not start it */
    NGX_HTTP_LUA_FFI_RELOAD_REFUSED_BUSY,     /* another reload never ended */
    NGX_HTTP_LUA_FFI_RELOAD_CONFLICT_CANARY,  /* 409: a canary runs */
    NGX_HTTP_LUA_FFI_RELOAD_OUTCOMES
} ngx_http_lua_ffi_reload_outcome_e;


/* what a file drop led to: ffi_drops_total{outcome} */
typedef enum {
    NGX_HTTP_LUA_FFI_DROP_RELOADED = 0,
    NGX_HTTP_LUA_FFI_DROP_REFUSED,
    NGX_HTTP_LUA_FFI_DROP_CONFLICT,
    NGX_HTTP_LUA_FFI_DROP_FAILED,
    NGX_HTTP_LUA_FFI_DROP_OUTCOMES
} ngx_http_lua_ffi_drop_outcome_e;


typedef enum {
    NGX_HTTP_LUA_FFI_SLOT_FREE = 0,
    NGX_HTTP_LUA_FFI_SLOT_LIVE,       /* a runtime of `owner` writes it */
    NGX_HTTP_LUA_FFI_SLOT_RETIRED     /* its runtime is gone; counts stay */
} ngx_http_lua_ffi_slot_state_e;


/* One runtime's series; its key is (library, version, cfg hash). */
typedef struct {
    ngx_http_lua_ffi_series_t     s;         /* first: rt->metrics */
    ngx_pid_t                     owner;
    ngx_uint_t                    state;
    ngx_uint_t                    lib;       /* index in libs[] */
    ngx_uint_t                    version;
    uint32_t                      cfg;       /* its tag's first 4 bytes */
    ngx_uint_t                    has_cfg;
} ngx_http_lua_ffi_metrics_slot_t;


typedef struct {
    u_char                        path[NGX_HTTP_LUA_FFI_PATHLEN];
    u_char                        name[NGX_HTTP_LUA_FFI_NAMELEN];
    ngx_uint_t                    version;
    time_t                        last_reload;
    uint64_t                      reloads[NGX_HTTP_LUA_FFI_RELOAD_OUTCOMES];
    uint64_t                      drops[NGX_HTTP_LUA_FFI_DROP_OUTCOMES];
    uint64_t                      rollbacks[NGX_HTTP_LUA_FFI_RELOAD_OUTCOMES];
    ngx_http_lua_ffi_counters_t   retired;   /* of slots reclaimed */
    ngx_uint_t                    has_retired;
    ngx_uint_t                    canary_version;  /* 0: none runs */
    ngx_uint_t                    canary_percent;
    uint64_t                      canary_ends[3];  /* canary_end_e */
} ngx_http_lua_ffi_metrics_lib_t;


/* One worker process; gauges it refreshes itself. */
typedef struct {
    ngx_pid_t                     pid;       /* 0: free */
    ngx_uint_t                    worker;    /* ngx_worker */
    uint64_t                      runtimes[NGX_HTTP_LUA_FFI_RT_STATES];
    uint64_t                      images;    /* mapped */
} ngx_http_lua_ffi_metrics_proc_t;


typedef struct {
    ngx_uint_t                       nlibs;
    ngx_http_lua_ffi_metrics_lib_t   libs[NGX_HTTP_LUA_FFI_METRICS_LIBS];
    ngx_http_lua_ffi_metrics_proc_t  procs[NGX_HTTP_LUA_FFI_METRICS_PROCS];
    ngx_http_lua_ffi_metrics_slot_t  slots[NGX_HTTP_LUA_FFI_METRICS_SLOTS];
} ngx_http_lua_ffi_metrics_shm_t;


ngx_int_t ngx_http_lua_ffi_metrics_add(ngx_conf_t *cf);
ngx_int_t ngx_http_lua_ffi_metrics_init_worker(ngx_cycle_t *cycle);
void ngx_http_lua_ffi_metrics_exit_worker(ngx_cycle_t *cycle);

ngx_http_lua_ffi_series_t *ngx_http_lua_ffi_metrics_attach(
    ngx_http_lua_ffi_image_t *img, ngx_str_t *cfg, ngx_uint_t has_cfg);
void ngx_http_lua_ffi_metrics_detach(ngx_http_lua_ffi_series_t *s);

void ngx_http_lua_ffi_metrics_reload(u_char *path, u_char *name,
    ngx_http_lua_ffi_reload_outcome_e outcome, ngx_uint_t version);
void ngx_http_lua_ffi_metrics_rollback(u_char *path, u_char *name,
    ngx_http_lua_ffi_reload_outcome_e outcome, ngx_uint_t version);
void ngx_http_lua_ffi_metrics_drop(ngx_str_t *path, ngx_int_t status);

/* canaries: end < 0, one starts; else how it ended (canary_end_e) */
void ngx_http_lua_ffi_metrics_canary(u_char *path, u_char *name,
    ngx_uint_t version, ngx_uint_t percent, ngx_int_t end);
void ngx_http_lua_ffi_metrics_answers(u_char *path, ngx_uint_t version,
    uint64_t *answers, uint64_t *bad);

ngx_http_lua_ffi_metrics_shm_t *ngx_http_lua_ffi_metrics_snapshot(
    ngx_pool_t *pool);

/* admin: GET metrics */
ngx_int_t ngx_http_lua_ffi_admin_metrics(ngx_http_request_t *r);


#endif /* _NGX_HTTP_LUA_FFI_METRICS_H_INCLUDED_ */
