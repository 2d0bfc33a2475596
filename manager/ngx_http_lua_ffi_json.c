/*
 * JSON string quoting for the admin endpoint's bodies: any byte string
 * (library names, paths, errors) becomes a valid JSON string.
 */

#include "ngx_http_lua_ffi_manager.h"


/*
 * Writes "s" with quotes, escaping what JSON requires; bytes >= 0x80 are
 * written as \u00XX so that the body stays valid whatever the encoding.
 * Stops (still closing the quote) when there is no more room.
 */

u_char *
ngx_http_lua_ffi_json_str(u_char *p, u_char *last, u_char *s, size_t len)
{
    u_char         c;
    static u_char  hex[] = "0123456789abcdef";

    if (last - p < 2) {
        return p;
    }

    last--;   /* room for the closing quote */
    *p++ = '"';

    while (len--) {
        c = *s++;

        if (c == '"' || c == '\\') {
            if (last - p < 2) {
                break;
            }

            *p++ = '\\';
            *p++ = c;
            continue;
        }

        if (c < 0x20 || c >= 0x7f) {
            if (last - p < 6) {
                break;
            }

            p = ngx_cpymem(p, "\\u00", 4);
            *p++ = hex[c >> 4];
            *p++ = hex[c & 0xf];
            continue;
        }

        if (last - p < 1) {
            break;
        }

        *p++ = c;
    }

    *p++ = '"';

    return p;
}
