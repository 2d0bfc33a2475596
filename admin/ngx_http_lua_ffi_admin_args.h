/*
 * The admin endpoint's request parsing: plain C, shared by the module and
 * the fuzz target (fuzz/admin_fuzz.c).
 */

#ifndef _NGX_HTTP_LUA_FFI_ADMIN_ARGS_H_INCLUDED_
#define _NGX_HTTP_LUA_FFI_ADMIN_ARGS_H_INCLUDED_


#include <stddef.h>


#define NGX_HTTP_LUA_FFI_ADMIN_UNKNOWN   0
#define NGX_HTTP_LUA_FFI_ADMIN_RELOAD    1
#define NGX_HTTP_LUA_FFI_ADMIN_STATUS    2
#define NGX_HTTP_LUA_FFI_ADMIN_METRICS   3
#define NGX_HTTP_LUA_FFI_ADMIN_PROMOTE   4
#define NGX_HTTP_LUA_FFI_ADMIN_ROLLBACK  5

#define NGX_HTTP_LUA_FFI_ARG_OK          0
#define NGX_HTTP_LUA_FFI_ARG_MISSING    -1
#define NGX_HTTP_LUA_FFI_ARG_BAD        -2


int ngx_http_lua_ffi_admin_endpoint(const unsigned char *rel, size_t len);
int ngx_http_lua_ffi_admin_lib_arg(const unsigned char *args, size_t len,
    unsigned char *out, size_t outsize, size_t *outlen);
int ngx_http_lua_ffi_admin_version_arg(const unsigned char *args,
    size_t len, unsigned long long *version);
int ngx_http_lua_ffi_admin_same_origin(const unsigned char *origin,
    size_t olen, const unsigned char *host, size_t hlen, int https);
int ngx_http_lua_ffi_admin_host_literal(const unsigned char *host,
    size_t len);


#endif /* _NGX_HTTP_LUA_FFI_ADMIN_ARGS_H_INCLUDED_ */
