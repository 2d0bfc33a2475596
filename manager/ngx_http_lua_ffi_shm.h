/*
 * The shared zone's layout, private to the manager: each library's agreed
 * version, the reload protocol's command slot and every worker's answers.
 */

#ifndef _NGX_HTTP_LUA_FFI_SHM_H_INCLUDED_
#define _NGX_HTTP_LUA_FFI_SHM_H_INCLUDED_


#include "ngx_http_lua_ffi_manager.h"
#include "ngx_http_lua_ffi_history.h"


#define NGX_HTTP_LUA_FFI_SHM_LIBS      64
#define NGX_HTTP_LUA_FFI_SHM_WORKERS   128
#define NGX_HTTP_LUA_FFI_SHM_CFGS      16
#define NGX_HTTP_LUA_FFI_KEYLEN        64     /* a canary's ngx.var name */
/* room beyond the fixed tables: status views of every worker, cfgs */
#define NGX_HTTP_LUA_FFI_SHM_ROOM      (2 * 1024 * 1024)


typedef enum {
    NGX_HTTP_LUA_FFI_CMD_NONE = 0,
    NGX_HTTP_LUA_FFI_CMD_PREPARE,
    NGX_HTTP_LUA_FFI_CMD_COMMIT,
    NGX_HTTP_LUA_FFI_CMD_ABORT
} ngx_http_lua_ffi_cmd_e;


/* One cfg some worker runs the library with, for the trial (slab). */
typedef struct {
    size_t                        len;
    unsigned                      nil:1;
    u_char                        data[1];
} ngx_http_lua_ffi_shm_cfg_t;


typedef struct ngx_http_lua_ffi_shm_lib_s {
    u_char                        path[NGX_HTTP_LUA_FFI_PATHLEN];
    u_char                        names[NGX_HTTP_LUA_FFI_MAX_NAMES]
                                       [NGX_HTTP_LUA_FFI_NAMELEN];
    ngx_uint_t                    nnames;
    ngx_http_lua_ffi_version_t    current;
    ngx_uint_t                    reloads;
    ngx_uint_t                    failures;
    time_t                        last_reload;
    u_char                        last_error[NGX_HTTP_LUA_FFI_ERRLEN];
    ngx_uint_t                    watched;
    uint64_t                      watchers;    /* slots < 64 watching it */
    uint64_t                      holders;     /* slots < 64 that loaded it */
    u_char                        drop_ident[96];
    ngx_pid_t                     drop_pid;    /* judging it, reload on */
    time_t                        last_drop;
    u_char                        last_drop_event[32];
    u_char                        last_drop_outcome[NGX_HTTP_LUA_FFI_ERRLEN];
    ngx_uint_t                    ncfgs;
    ngx_http_lua_ffi_shm_cfg_t   *cfgs[NGX_HTTP_LUA_FFI_SHM_CFGS];
    unsigned                      is_global:1;
    unsigned                      no_trial:1;
    ngx_http_lua_ffi_history_t    history;

    /* a canary beside current: every worker routes by these */
    ngx_http_lua_ffi_version_t    canary;      /* version 0: none runs */
    ngx_uint_t                    canary_pct;
    u_char                        canary_key[NGX_HTTP_LUA_FFI_KEYLEN];
    time_t                        canary_since;
    ngx_uint_t                    top_version; /* never given twice */

    /* ffi_canary_guard: the window and the answers before it */
    time_t                        guard_start;
    uint64_t                      guard_base[4];  /* old, bad; new, bad */
    ngx_pid_t                     guard_pid;   /* retiring it */
} ngx_http_lua_ffi_shm_lib_t;


typedef struct {
    ngx_pid_t                     pid;
    ngx_uint_t                    acked;       /* last command handled */
    ngx_int_t                     rc;
    u_char                        err[NGX_HTTP_LUA_FFI_ERRLEN];
    ngx_uint_t                    status_seq;  /* last status written */
    u_char                       *status;      /* slab: JSON */
    size_t                        status_len;
} ngx_http_lua_ffi_shm_worker_t;


typedef struct {
    ngx_uint_t                    seq;         /* of the command slot */
    ngx_http_lua_ffi_cmd_e        type;
    ngx_uint_t                    lib;
    ngx_http_lua_ffi_version_t    v;
    ngx_pid_t                     owner;       /* coordinator, 0: idle */
    ngx_uint_t                    status_seq;
    ngx_uint_t                    nlibs;
    ngx_http_lua_ffi_shm_lib_t    libs[NGX_HTTP_LUA_FFI_SHM_LIBS];
    ngx_http_lua_ffi_shm_worker_t workers[NGX_HTTP_LUA_FFI_SHM_WORKERS];
} ngx_http_lua_ffi_shm_t;


extern ngx_http_lua_ffi_shm_t        *ngx_http_lua_ffi_shm;
extern ngx_slab_pool_t               *ngx_http_lua_ffi_shpool;
extern ngx_http_lua_ffi_main_conf_t  *ngx_http_lua_ffi_fmcf;


ngx_int_t ngx_http_lua_ffi_shm_find_name(ngx_str_t *name);
ngx_int_t ngx_http_lua_ffi_shm_find_path(ngx_str_t *path);
ngx_uint_t ngx_http_lua_ffi_shm_alive(ngx_pid_t pid);
void ngx_http_lua_ffi_shm_notify_all(void);
void *ngx_http_lua_ffi_shm_op_alloc(size_t size);
ngx_msec_t ngx_http_lua_ffi_shm_op_timer(ngx_event_t *timer,
    ngx_event_handler_pt handler, void *op, ngx_uint_t cancelable);
void ngx_http_lua_ffi_shm_file_ident(u_char *path, u_char *ident,
    size_t len);
ngx_uint_t ngx_http_lua_ffi_shm_drop_open(ngx_http_lua_ffi_shm_lib_t *sl,
    u_char *ident);
ngx_uint_t ngx_http_lua_ffi_shm_trial_cfgs(ngx_uint_t lib, ngx_str_t *cfgs,
    ngx_uint_t max);
void ngx_http_lua_ffi_shm_worker_init(void);
void ngx_http_lua_ffi_shm_worker_exit(void);

/* status.c */
void ngx_http_lua_ffi_status_init(void);
void ngx_http_lua_ffi_status_notified(void);
void ngx_http_lua_ffi_status_exit(void);
void ngx_http_lua_ffi_status_cancel(void *data);

/* reload.c */
void ngx_http_lua_ffi_reload_init(void);
void ngx_http_lua_ffi_reload_exit(void);


#endif /* _NGX_HTTP_LUA_FFI_SHM_H_INCLUDED_ */
