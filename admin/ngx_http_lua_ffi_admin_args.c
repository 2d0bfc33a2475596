/*
 * Parsing of admin requests (which endpoint, the lib argument), in plain C
 * with no nginx dependency so that a fuzzer can drive it alone.
 */

#include <string.h>

#include "ngx_http_lua_ffi_admin_args.h"


/* "reload", "status", "metrics" or none: rel is the path below the location */

int
ngx_http_lua_ffi_admin_endpoint(const unsigned char *rel, size_t len)
{
    while (len && *rel == '/') {
        rel++;
        len--;
    }

    if (len == 6 && memcmp(rel, "reload", 6) == 0) {
        return NGX_HTTP_LUA_FFI_ADMIN_RELOAD;
    }

    if (len == 6 && memcmp(rel, "status", 6) == 0) {
        return NGX_HTTP_LUA_FFI_ADMIN_STATUS;
    }

    if (len == 7 && memcmp(rel, "metrics", 7) == 0) {
        return NGX_HTTP_LUA_FFI_ADMIN_METRICS;
    }

    return NGX_HTTP_LUA_FFI_ADMIN_UNKNOWN;
}


static int
ngx_http_lua_ffi_hex(unsigned char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }

    c |= 0x20;

    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }

    return -1;
}


/*
 * The first lib=VALUE of a query string, percent-decoded into out (which
 * gets a terminating NUL). NGX_HTTP_LUA_FFI_ARG_MISSING: none, or empty;
 * NGX_HTTP_LUA_FFI_ARG_BAD: a broken escape, a NUL byte, or longer than
 * outsize - 1 once decoded.
 */

int
ngx_http_lua_ffi_admin_lib_arg(const unsigned char *args, size_t len,
    unsigned char *out, size_t outsize, size_t *outlen)
{
    int                   hi, lo;
    size_t                n;
    const unsigned char  *p, *end, *v;

    end = args + len;

    for (p = args; p < end; p++) {

        if (end - p < 4 || memcmp(p, "lib=", 4) != 0) {
            /* to the start of the next argument */
            while (p < end && *p != '&') {
                p++;
            }

            continue;
        }

        v = p + 4;
        n = 0;

        while (v < end && *v != '&') {

            if (n + 1 >= outsize) {
                return NGX_HTTP_LUA_FFI_ARG_BAD;
            }

            if (*v == '%') {
                if (end - v < 3
                    || (hi = ngx_http_lua_ffi_hex(v[1])) < 0
                    || (lo = ngx_http_lua_ffi_hex(v[2])) < 0)
                {
                    return NGX_HTTP_LUA_FFI_ARG_BAD;
                }

                out[n] = (unsigned char) (hi << 4 | lo);
                v += 3;

            } else {
                out[n] = *v++;
            }

            if (out[n++] == '\0') {
                return NGX_HTTP_LUA_FFI_ARG_BAD;
            }
        }

        if (n == 0) {
            return NGX_HTTP_LUA_FFI_ARG_MISSING;
        }

        out[n] = '\0';
        *outlen = n;

        return NGX_HTTP_LUA_FFI_ARG_OK;
    }

    return NGX_HTTP_LUA_FFI_ARG_MISSING;
}
