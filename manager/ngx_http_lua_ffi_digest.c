/*
 * Digests: the SHA-256 that ties a shadow copy to the bytes that were
 * checked, and the keyed tag that stands for a cfg string in /ffi/status.
 */

#include "ngx_http_lua_ffi_manager.h"

#include <sys/random.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>


/*
 * Drawn once in the master, inherited by every worker it forks (also after
 * nginx -s reload): a cfg has the same tag in every worker, and the tag
 * tells nothing about the cfg to whoever lacks the key (a bare hash of a
 * short password could be guessed offline).
 */
static u_char      ngx_http_lua_ffi_tag_key[32];
static ngx_uint_t  ngx_http_lua_ffi_tag_key_set;


ngx_int_t
ngx_http_lua_ffi_digest_init(ngx_log_t *log)
{
    if (ngx_http_lua_ffi_tag_key_set) {
        return NGX_OK;
    }

    if (getrandom(ngx_http_lua_ffi_tag_key, sizeof(ngx_http_lua_ffi_tag_key),
                  0)
        != (ssize_t) sizeof(ngx_http_lua_ffi_tag_key))
    {
        ngx_log_error(NGX_LOG_EMERG, log, ngx_errno,
                      "ffi: getrandom() failed");
        return NGX_ERROR;
    }

    ngx_http_lua_ffi_tag_key_set = 1;

    return NGX_OK;
}


ngx_int_t
ngx_http_lua_ffi_sha256(u_char *data, size_t len, u_char *md)
{
    unsigned int  n;

    n = NGX_HTTP_LUA_FFI_SHA256_LEN;

    return EVP_Digest(data, len, md, &n, EVP_sha256(), NULL) == 1
           ? NGX_OK : NGX_ERROR;
}


/*
 * The SHA-256 of everything left to read on fd: exactly size bytes, or
 * NGX_ERROR (a file that grows or shrinks under us is not the one we want).
 */

ngx_int_t
ngx_http_lua_ffi_sha256_fd(int fd, off_t size, u_char *md)
{
    u_char      *buf;
    ssize_t      n;
    ngx_int_t    rc;
    EVP_MD_CTX  *ctx;

    buf = ngx_alloc(65536, ngx_cycle->log);
    ctx = EVP_MD_CTX_new();

    if (buf == NULL || ctx == NULL
        || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1)
    {
        rc = NGX_ERROR;
        goto done;
    }

    rc = NGX_OK;

    for ( ;; ) {
        n = read(fd, buf, 65536);

        if (n == -1 && errno == EINTR) {
            continue;
        }

        if (n <= 0) {
            rc = (n == 0 && size == 0) ? NGX_OK : NGX_ERROR;
            break;
        }

        if (n > size || EVP_DigestUpdate(ctx, buf, n) != 1) {
            rc = NGX_ERROR;
            break;
        }

        size -= n;
    }

    if (rc == NGX_OK && EVP_DigestFinal_ex(ctx, md, NULL) != 1) {
        rc = NGX_ERROR;
    }

done:

    if (ctx) {
        EVP_MD_CTX_free(ctx);
    }

    if (buf) {
        ngx_free(buf);
    }

    return rc;
}


/*
 * A cfg's tag: the first bytes of its HMAC-SHA256 under the master's key.
 * Equal cfgs get equal tags in every worker, so two runtimes can be told
 * apart (in status, metrics and error.log alike), and a tag cannot be
 * checked against guessed passwords by anyone without the key.
 */

ngx_int_t
ngx_http_lua_ffi_cfg_tag(u_char *cfg, size_t len, u_char *tag)
{
    u_char        md[EVP_MAX_MD_SIZE];
    unsigned int  n;

    if (HMAC(EVP_sha256(), ngx_http_lua_ffi_tag_key,
             sizeof(ngx_http_lua_ffi_tag_key), cfg, len, md, &n)
        == NULL)
    {
        return NGX_ERROR;
    }

    ngx_memcpy(tag, md, NGX_HTTP_LUA_FFI_CFG_TAG);

    return NGX_OK;
}


/* "redacted:" and the tag in hex: how a cfg shows by default */

u_char *
ngx_http_lua_ffi_cfg_tag_text(u_char *p, u_char *last, u_char *cfg,
    size_t len)
{
    u_char  tag[NGX_HTTP_LUA_FFI_CFG_TAG];

    if (ngx_http_lua_ffi_cfg_tag(cfg, len, tag) != NGX_OK) {
        return ngx_slprintf(p, last, "redacted");
    }

    p = ngx_slprintf(p, last, "redacted:");

    if ((size_t) (last - p) >= 2 * NGX_HTTP_LUA_FFI_CFG_TAG) {
        p = ngx_hex_dump(p, tag, NGX_HTTP_LUA_FFI_CFG_TAG);
    }

    return p;
}


u_char *
ngx_http_lua_ffi_json_cfg_tag(u_char *p, u_char *last, u_char *cfg,
    size_t len)
{
    p = ngx_slprintf(p, last, "\"");
    p = ngx_http_lua_ffi_cfg_tag_text(p, last - 1, cfg, len);

    return ngx_slprintf(p, last, "\"");
}
