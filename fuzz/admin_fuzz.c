
/*
 * libFuzzer target for the admin endpoint's request parsing: any path and
 * query string gives a clean verdict, a decoded lib is a short C string
 * with no NUL inside, and an Origin built from a Host is that Host's own.
 */


#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ngx_http_lua_ffi_admin_args.h"


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


/* "http://" HOST is HOST's own origin, for any HOST a browser could send */

static void
ngx_http_lua_ffi_fuzz_own_origin(const uint8_t *host, size_t len)
{
    unsigned char  origin[7 + 256];

    if (len == 0 || len > 256 || memchr(host, '/', len)
        || memchr(host, '@', len))
    {
        return;
    }

    memcpy(origin, "http://", 7);
    memcpy(origin + 7, host, len);

    if (ngx_http_lua_ffi_admin_same_origin(origin, 7 + len, host, len, 0)
        != 1)
    {
        abort();
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int                 rc, ep;
    size_t              len, split;
    unsigned char       out[256];
    unsigned long long  version;

    /* the first byte splits the input into a path and a query string */
    split = size ? data[0] % (size) : 0;

    ep = ngx_http_lua_ffi_admin_endpoint(data, split);
    if (ep != NGX_HTTP_LUA_FFI_ADMIN_UNKNOWN
        && ep != NGX_HTTP_LUA_FFI_ADMIN_RELOAD
        && ep != NGX_HTTP_LUA_FFI_ADMIN_STATUS
        && ep != NGX_HTTP_LUA_FFI_ADMIN_METRICS
        && ep != NGX_HTTP_LUA_FFI_ADMIN_PROMOTE
        && ep != NGX_HTTP_LUA_FFI_ADMIN_ROLLBACK)
    {
        abort();
    }

    len = (size_t) -1;
    memset(out, 0xa5, sizeof(out));

    rc = ngx_http_lua_ffi_admin_lib_arg(data + split, size - split, out,
                                        sizeof(out), &len);

    if (rc == NGX_HTTP_LUA_FFI_ARG_OK) {
        if (len == 0 || len >= sizeof(out) || out[len] != '\0'
            || memchr(out, '\0', len) != NULL)
        {
            abort();
        }

    } else if (rc != NGX_HTTP_LUA_FFI_ARG_MISSING
               && rc != NGX_HTTP_LUA_FFI_ARG_BAD)
    {
        abort();
    }

    /* a version is a positive number of at most 15 digits */
    version = 0;
    rc = ngx_http_lua_ffi_admin_version_arg(data + split, size - split,
                                            &version);

    if ((rc == NGX_HTTP_LUA_FFI_ARG_OK
         && (version == 0 || version >= 1000000000000000ULL))
        || (rc != NGX_HTTP_LUA_FFI_ARG_OK
            && rc != NGX_HTTP_LUA_FFI_ARG_MISSING
            && rc != NGX_HTTP_LUA_FFI_ARG_BAD))
    {
        abort();
    }

    /* the path as an Origin, the query string as a Host */
    rc = ngx_http_lua_ffi_admin_same_origin(data, split, data + split,
                                            size - split, size & 1);
    if (rc != 0 && rc != 1) {
        abort();
    }

    rc = ngx_http_lua_ffi_admin_host_literal(data, size);
    if (rc != 0 && rc != 1) {
        abort();
    }

    ngx_http_lua_ffi_fuzz_own_origin(data + split, size - split);

    return 0;
}
