/*
 * Canary reloads: a new version serving a share of the calls beside the
 * old one, promoted or retired later, by the admin or by ffi_canary_guard.
 */

#ifndef _NGX_HTTP_LUA_FFI_CANARY_H_INCLUDED_
#define _NGX_HTTP_LUA_FFI_CANARY_H_INCLUDED_


#include "ngx_http_lua_ffi_shm.h"


/* what an operation of the reload protocol does once it has the turn */
typedef enum {
    NGX_HTTP_LUA_FFI_OP_RELOAD = 0,    /* the new version serves alone */
    NGX_HTTP_LUA_FFI_OP_CANARY,        /* the new version serves a share */
    NGX_HTTP_LUA_FFI_OP_PROMOTE,       /* the canary serves alone */
    NGX_HTTP_LUA_FFI_OP_RETIRE         /* the canary goes, the old stays */
} ngx_http_lua_ffi_op_kind_e;


/* how a canary ended: ffi_canary_ends_total{outcome} */
typedef enum {
    NGX_HTTP_LUA_FFI_CANARY_PROMOTED = 0,
    NGX_HTTP_LUA_FFI_CANARY_ROLLED_BACK,
    NGX_HTTP_LUA_FFI_CANARY_GUARD,
    NGX_HTTP_LUA_FFI_CANARY_ENDS
} ngx_http_lua_ffi_canary_end_e;


typedef struct {
    ngx_http_lua_ffi_op_kind_e    kind;
    ngx_uint_t                    percent;   /* 1-99, OP_CANARY */
    u_char                        key[NGX_HTTP_LUA_FFI_KEYLEN];  /* or "" */
    unsigned                      guard:1;   /* OP_RETIRE by the guard */
} ngx_http_lua_ffi_canary_req_t;


/* the protocol (reload.c), for operations other than a plain reload */
ngx_int_t ngx_http_lua_ffi_reload_op(ngx_str_t *name, ngx_uint_t flags,
    ngx_http_lua_ffi_canary_req_t *cr, ngx_http_lua_ffi_reload_done_pt done,
    void *data);

/* the coordinator, under the shared zone's mutex */
ngx_int_t ngx_http_lua_ffi_canary_check_locked(ngx_http_lua_ffi_shm_lib_t *sl,
    ngx_http_lua_ffi_op_kind_e kind, u_char *err, size_t errlen);
void ngx_http_lua_ffi_canary_commit_locked(ngx_http_lua_ffi_shm_lib_t *sl,
    ngx_http_lua_ffi_canary_req_t *cr, ngx_http_lua_ffi_version_t *v);

/* the coordinator, once every worker confirmed */
void ngx_http_lua_ffi_canary_done(ngx_http_lua_ffi_shm_lib_t *sl,
    ngx_http_lua_ffi_canary_req_t *cr, ngx_http_lua_ffi_version_t *v,
    ngx_http_lua_ffi_version_t *old, ngx_str_t *name, ngx_uint_t confirmed);

/* every worker: its runtimes of lib against the shared zone */
ngx_int_t ngx_http_lua_ffi_canary_converge(ngx_http_lua_ffi_library_t *lib,
    ngx_http_lua_ffi_shm_lib_t *snap, u_char *err, size_t errlen);
void ngx_http_lua_ffi_canary_load(ngx_http_lua_ffi_library_t *lib);
u_char *ngx_http_lua_ffi_canary_status(u_char *p, u_char *last,
    ngx_http_lua_ffi_library_t *lib);
void ngx_http_lua_ffi_canary_now(u_char *path, ngx_uint_t *version,
    ngx_uint_t *percent);
u_char *ngx_http_lua_ffi_canary_status_shm(u_char *p, u_char *last,
    ngx_http_lua_ffi_shm_lib_t *sl);


#endif /* _NGX_HTTP_LUA_FFI_CANARY_H_INCLUDED_ */
