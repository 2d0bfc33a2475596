/*
 * Each library's history in the shared zone: its last versions (ffi_history)
 * with the shadow copies they keep, and the refusals on the way.
 */

#ifndef _NGX_HTTP_LUA_FFI_HISTORY_H_INCLUDED_
#define _NGX_HTTP_LUA_FFI_HISTORY_H_INCLUDED_


#include "ngx_http_lua_ffi_manager.h"


/* how a version came, or how a refused attempt would have */
typedef enum {
    NGX_HTTP_LUA_FFI_HOW_LOAD = 0,       /* the first ngx.load_ffi */
    NGX_HTTP_LUA_FFI_HOW_ADMIN,          /* POST /ffi/reload */
    NGX_HTTP_LUA_FFI_HOW_DROP,           /* a file dropped, ffi_watch */
    NGX_HTTP_LUA_FFI_HOW_ROLLBACK,       /* POST /ffi/rollback */
    NGX_HTTP_LUA_FFI_HOW_CANARY          /* kept for canary reloads */
} ngx_http_lua_ffi_how_e;


typedef struct {
    ngx_http_lua_ffi_version_t    v;         /* v.version 0: a refusal */
    time_t                        when;
    ngx_uint_t                    how;
    ngx_uint_t                    from;      /* rollback: the version back */
    ngx_int_t                     status;    /* a refusal's answer */
    u_char                        reason[NGX_HTTP_LUA_FFI_ERRLEN];
} ngx_http_lua_ffi_history_entry_t;


/*
 * Oldest first. At most N versions and at most N refusals: refused drops
 * never push a version (and its shadow copy) out.
 */
typedef struct {
    ngx_uint_t                        n;
    ngx_http_lua_ffi_history_entry_t  e[2 * NGX_HTTP_LUA_FFI_HISTORY_MAX];
} ngx_http_lua_ffi_history_t;


struct ngx_http_lua_ffi_shm_lib_s;

void ngx_http_lua_ffi_history_add_locked(struct ngx_http_lua_ffi_shm_lib_s *sl,
    ngx_http_lua_ffi_history_entry_t *e, ngx_http_lua_ffi_version_t *gone,
    ngx_uint_t *ngone);
void ngx_http_lua_ffi_history_record(ngx_uint_t lib,
    ngx_http_lua_ffi_version_t *v, ngx_uint_t how, ngx_uint_t from,
    ngx_int_t status, u_char *reason);
void ngx_http_lua_ffi_history_release(ngx_uint_t lib,
    ngx_http_lua_ffi_version_t *v);
void ngx_http_lua_ffi_history_forget_locked(
    struct ngx_http_lua_ffi_shm_lib_s *sl);
ngx_int_t ngx_http_lua_ffi_history_pick_locked(
    struct ngx_http_lua_ffi_shm_lib_s *sl, ngx_uint_t target,
    ngx_http_lua_ffi_version_t *v, u_char *err, size_t errlen);
u_char *ngx_http_lua_ffi_history_json(u_char *p, u_char *last,
    struct ngx_http_lua_ffi_shm_lib_s *sl);


#endif /* _NGX_HTTP_LUA_FFI_HISTORY_H_INCLUDED_ */
