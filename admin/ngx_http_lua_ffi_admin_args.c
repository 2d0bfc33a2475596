/*
 * Parsing of admin requests (which endpoint, the lib argument), in plain C
 * with no nginx dependency so that a fuzzer can drive it alone.
 */

#include <string.h>
#include <arpa/inet.h>

#include "ngx_http_lua_ffi_admin_args.h"


/*
 * "reload", "status", "metrics", "rollback" or none: rel is the path below
 * the location
 */

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

    if (len == 7 && memcmp(rel, "promote", 7) == 0) {
        return NGX_HTTP_LUA_FFI_ADMIN_PROMOTE;
    }

    if (len == 8 && memcmp(rel, "rollback", 8) == 0) {
        return NGX_HTTP_LUA_FFI_ADMIN_ROLLBACK;
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


/*
 * The first version=N of a query string: a version number, decimal digits
 * only, 1 or more. NGX_HTTP_LUA_FFI_ARG_MISSING: no version argument;
 * NGX_HTTP_LUA_FFI_ARG_BAD: empty, 0, a sign, an escape, anything but
 * digits, or more than 15 digits.
 */

int
ngx_http_lua_ffi_admin_version_arg(const unsigned char *args, size_t len,
    unsigned long long *version)
{
    size_t                n;
    unsigned long long    v;
    const unsigned char  *p, *end;

    end = args + len;

    for (p = args; p < end; p++) {

        if (end - p < 8 || memcmp(p, "version=", 8) != 0) {
            while (p < end && *p != '&') {
                p++;
            }

            continue;
        }

        v = 0;
        n = 0;

        for (p += 8; p < end && *p != '&'; p++) {
            if (*p < '0' || *p > '9' || ++n > 15) {
                return NGX_HTTP_LUA_FFI_ARG_BAD;
            }

            v = v * 10 + (*p - '0');
        }

        if (v == 0) {
            return NGX_HTTP_LUA_FFI_ARG_BAD;
        }

        *version = v;

        return NGX_HTTP_LUA_FFI_ARG_OK;
    }

    return NGX_HTTP_LUA_FFI_ARG_MISSING;
}


static size_t
ngx_http_lua_ffi_strip_port(const unsigned char *host, size_t len,
    const char *port)
{
    size_t  plen;

    plen = strlen(port);

    if (len > plen && memcmp(host + len - plen, port, plen) == 0) {
        return len - plen;
    }

    return len;
}


/*
 * Whether an Origin header names the endpoint itself: the scheme of the
 * connection and the Host the request was sent to, a default port or not.
 * 1: same origin; 0: anything else, "null" and garbage included.
 */

int
ngx_http_lua_ffi_admin_same_origin(const unsigned char *origin, size_t olen,
    const unsigned char *host, size_t hlen, int https)
{
    size_t       i, slen;
    const char  *scheme, *port;

    scheme = https ? "https://" : "http://";
    port = https ? ":443" : ":80";
    slen = strlen(scheme);

    if (hlen == 0 || olen <= slen) {
        return 0;
    }

    for (i = 0; i < slen; i++) {
        if ((origin[i] | 0x20) != scheme[i]) {
            return 0;
        }
    }

    origin += slen;
    olen = ngx_http_lua_ffi_strip_port(origin, olen - slen, port);
    hlen = ngx_http_lua_ffi_strip_port(host, hlen, port);

    if (olen != hlen) {
        return 0;
    }

    for (i = 0; i < olen; i++) {
        if (origin[i] == '/' || origin[i] == '@'
            || ((origin[i] | 0x20) != (host[i] | 0x20)))
        {
            return 0;
        }
    }

    return 1;
}


/*
 * Whether a Host (port stripped, as nginx keeps it) is a name no one else
 * can point at this server: an IPv4 address, an IPv6 address in brackets,
 * or localhost. 1: it is; 0: anything else.
 */

int
ngx_http_lua_ffi_admin_host_literal(const unsigned char *host, size_t len)
{
    char             buf[64];
    struct in6_addr  addr;

    if (len == 9 && strncasecmp((const char *) host, "localhost", 9) == 0) {
        return 1;
    }

    if (len < 2 || len >= sizeof(buf)) {
        return 0;
    }

    if (host[0] == '[' && host[len - 1] == ']') {
        memcpy(buf, host + 1, len - 2);
        buf[len - 2] = '\0';
        return inet_pton(AF_INET6, buf, &addr) == 1;
    }

    memcpy(buf, host, len);
    buf[len] = '\0';

    return inet_pton(AF_INET, buf, &addr) == 1;
}
