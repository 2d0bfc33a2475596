/*
 * The C side of lua/resty_ffi.lua, called through LuaJIT's FFI: load a
 * runtime, post a call, unload, and let go of a handle when Lua does.
 */

#include "ngx_http_lua_ffi_module.h"


/* the registry's name of resty_ffi.lua's anchor table */
#define NGX_HTTP_LUA_FFI_ANCHORS  "ngx_http_lua_ffi_anchors"


/*
 * NULL on failure: *rc != 0 when libffi_init failed (Lua: nil, rc), else
 * err holds the reason (Lua: nil, err).
 */

NGX_HTTP_LUA_FFI_API void *
ngx_http_lua_ffi_rt_load(const char *lib, size_t lib_len, const char *cfg,
    size_t cfg_len, int max_queue, int flags, int timeout_ms, int *rc,
    u_char *err, size_t *errlen)
{
    u_char                     *p;
    ngx_str_t                   name, conf;
    ngx_http_lua_ffi_handle_t  *h;

    name.data = (u_char *) lib;
    name.len = lib_len;
    conf.data = (u_char *) cfg;
    conf.len = cfg ? cfg_len : 0;

    /* whatever a callee writes, the message ends before the old one's */
    ngx_memzero(err, *errlen);

    h = ngx_http_lua_ffi_registry_load(&name, &conf,
                                       max_queue > 0 ? max_queue : 0,
                                       flags,
                                       timeout_ms > 0 ? timeout_ms : 0,
                                       rc, err, *errlen);
    if (h == NULL) {
        p = ngx_strlchr(err, err + *errlen, '\0');
        *errlen = p ? (size_t) (p - err) : *errlen;
        return NULL;
    }

    h->lua_refs++;

    return h;
}


/* 0: posted, the caller yields; otherwise *err says why not. */

NGX_HTTP_LUA_FFI_API int
ngx_http_lua_ffi_rt_call(ngx_http_request_t *r, void *handle,
    const char *req, int req_len, int timeout_ms, int *anchor,
    const char **err)
{
    ngx_http_lua_ffi_handle_t  *h = handle;

    if (r == NULL) {
        *err = "no request found";
        return NGX_ERROR;
    }

    if (req_len < 0) {
        *err = "request too large";
        return NGX_ERROR;
    }

    return ngx_http_lua_ffi_call_post(r, h, req, req_len, timeout_ms, anchor,
                                      err)
           == NGX_OK ? 0 : NGX_ERROR;
}


NGX_HTTP_LUA_FFI_API void
ngx_http_lua_ffi_rt_unload(void *handle)
{
    ngx_http_lua_ffi_registry_unload(handle);
}


NGX_HTTP_LUA_FFI_API void
ngx_http_lua_ffi_rt_release(void *handle)
{
    ngx_http_lua_ffi_registry_release(handle);
}


/*
 * The task at index is freed: the runtime answered and reads its request
 * no more. Only ever called on the event loop outside Lua code (answers,
 * timers, coroutine cleanup, resume handlers), where lua-nginx-module
 * itself works on the VM; requests of a per-request VM are never read in
 * place, so the anchors live in the main VM.
 */

void
ngx_http_lua_ffi_lua_unanchor(ngx_uint_t index)
{
    lua_State                 *L;
    ngx_http_lua_main_conf_t  *lmcf;

    lmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_http_lua_module);
    if (lmcf == NULL || lmcf->lua == NULL) {
        return;
    }

    L = lmcf->lua;

    lua_getfield(L, LUA_REGISTRYINDEX, NGX_HTTP_LUA_FFI_ANCHORS);

    if (lua_istable(L, -1)) {
        lua_pushnil(L);
        lua_rawseti(L, -2, (int) index);
    }

    lua_pop(L, 1);
}
