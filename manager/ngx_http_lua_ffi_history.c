/*
 * Each library's history (ffi_history N): its last N versions, whose shadow
 * copies stay for a rollback, and its last N refusals, in the shared zone.
 */

#include "ngx_http_lua_ffi_shm.h"


static ngx_uint_t ngx_http_lua_ffi_history_holds_locked(
    ngx_http_lua_ffi_shm_lib_t *sl, u_char *shadow);
static void ngx_http_lua_ffi_history_drop_locked(
    ngx_http_lua_ffi_history_t *h, ngx_uint_t versions);


static const char  *ngx_http_lua_ffi_how_names[] = {
    "load", "admin", "drop", "rollback", "canary"
};


/*
 * Whether a version still needs this shadow copy: the current one, or one
 * in the history. Several versions share a copy (a runtime restart, a
 * rollback to the image that serves).
 */

static ngx_uint_t
ngx_http_lua_ffi_history_holds_locked(ngx_http_lua_ffi_shm_lib_t *sl,
    u_char *shadow)
{
    ngx_uint_t  i;

    if (shadow[0] == '\0') {
        return 0;
    }

    if (ngx_strcmp(sl->current.shadow, shadow) == 0) {
        return 1;
    }

    for (i = 0; i < sl->history.n; i++) {
        if (sl->history.e[i].v.version
            && ngx_strcmp(sl->history.e[i].v.shadow, shadow) == 0)
        {
            return 1;
        }
    }

    return 0;
}


/* Takes the oldest entry of a kind (versions or refusals) out. */

static void
ngx_http_lua_ffi_history_drop_locked(ngx_http_lua_ffi_history_t *h,
    ngx_uint_t versions)
{
    ngx_uint_t  i;

    for (i = 0; i < h->n; i++) {
        if ((h->e[i].v.version != 0) == versions) {
            break;
        }
    }

    if (i == h->n) {
        return;
    }

    ngx_memmove(&h->e[i], &h->e[i + 1],
                (h->n - i - 1) * sizeof(ngx_http_lua_ffi_history_entry_t));
    h->n--;
}


/*
 * Appends e, then keeps the last N versions and the last N refusals.
 * gone (room for 2 * NGX_HTTP_LUA_FFI_HISTORY_MAX) gets the versions whose
 * copies nothing holds any more: the caller removes them once the zone is
 * unlocked. A smaller N after nginx -s reload applies here.
 */

void
ngx_http_lua_ffi_history_add_locked(ngx_http_lua_ffi_shm_lib_t *sl,
    ngx_http_lua_ffi_history_entry_t *e, ngx_http_lua_ffi_version_t *gone,
    ngx_uint_t *ngone)
{
    ngx_uint_t                         i, kind, versions, refusals, max;
    ngx_http_lua_ffi_history_t        *h = &sl->history;
    ngx_http_lua_ffi_history_entry_t   out;

    max = (ngx_uint_t) ngx_http_lua_ffi_fmcf->history;
    *ngone = 0;

    if (h->n == 2 * NGX_HTTP_LUA_FFI_HISTORY_MAX) {
        ngx_http_lua_ffi_history_drop_locked(h, e->v.version != 0);
    }

    if (e->v.version == 0) {
        /* a refusal holds no copy: its own was removed when refused */
        e->v.shadow[0] = '\0';
    }

    h->e[h->n++] = *e;

    for (kind = 0; kind < 2; kind++) {
        for ( ;; ) {
            versions = 0;
            refusals = 0;

            for (i = 0; i < h->n; i++) {
                if (h->e[i].v.version) {
                    versions++;

                } else {
                    refusals++;
                }
            }

            if ((kind ? versions : refusals) <= max) {
                break;
            }

            for (i = 0; i < h->n; i++) {
                if ((h->e[i].v.version != 0) == kind) {
                    break;
                }
            }

            out = h->e[i];
            ngx_http_lua_ffi_history_drop_locked(h, kind);

            if (kind && gone
                && !ngx_http_lua_ffi_history_holds_locked(sl,
                                                           out.v.shadow))
            {
                for (i = 0; i < *ngone; i++) {
                    if (ngx_strcmp(gone[i].shadow, out.v.shadow) == 0) {
                        break;
                    }
                }

                if (i == *ngone) {
                    gone[(*ngone)++] = out.v;
                }
            }
        }
    }
}


/*
 * How an operation on the library at index lib ended: v.version != 0 is a
 * version that became current (call it after the commit made it so);
 * v.version == 0 is a refusal with its answer and reason. Copies that fell
 * out of the history are removed.
 */

void
ngx_http_lua_ffi_history_record(ngx_uint_t lib, ngx_http_lua_ffi_version_t *v,
    ngx_uint_t how, ngx_uint_t from, ngx_int_t status, u_char *reason)
{
    ngx_uint_t                         i, ngone;
    ngx_http_lua_ffi_version_t         gone[2 * NGX_HTTP_LUA_FFI_HISTORY_MAX];
    ngx_http_lua_ffi_history_entry_t   e;

    ngx_memzero(&e, sizeof(ngx_http_lua_ffi_history_entry_t));

    if (v) {
        e.v = *v;
    }

    e.when = ngx_time();
    e.how = how;
    e.from = from;
    e.status = status;

    if (reason) {
        ngx_cpystrn(e.reason, reason, NGX_HTTP_LUA_FFI_ERRLEN);
    }

    ngx_shmtx_lock(&ngx_http_lua_ffi_shpool->mutex);
    ngx_http_lua_ffi_history_add_locked(&ngx_http_lua_ffi_shm->libs[lib], &e,
                                        gone, &ngone);
    ngx_shmtx_unlock(&ngx_http_lua_ffi_shpool->mutex);

    for (i = 0; i < ngone; i++) {
        ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                      "ffi: version %ui of \"%s\" left the history, its "
                      "shadow copy goes", gone[i].version,
                      ngx_http_lua_ffi_shm->libs[lib].path);
        ngx_http_lua_ffi_shadow_remove(&gone[i]);
    }
}


/* A version's copy no operation needs any more: gone, unless in history. */

void
ngx_http_lua_ffi_history_release(ngx_uint_t lib,
    ngx_http_lua_ffi_version_t *v)
{
    ngx_uint_t  held;

    ngx_shmtx_lock(&ngx_http_lua_ffi_shpool->mutex);
    held = ngx_http_lua_ffi_history_holds_locked(
                                 &ngx_http_lua_ffi_shm->libs[lib], v->shadow);
    ngx_shmtx_unlock(&ngx_http_lua_ffi_shpool->mutex);

    if (!held) {
        ngx_http_lua_ffi_shadow_remove(v);
    }
}


/* The library's entry is reclaimed: every copy its history kept goes. */

void
ngx_http_lua_ffi_history_forget_locked(ngx_http_lua_ffi_shm_lib_t *sl)
{
    ngx_uint_t  i;

    for (i = 0; i < sl->history.n; i++) {
        if (sl->history.e[i].v.version
            && ngx_strcmp(sl->history.e[i].v.shadow, sl->current.shadow) != 0)
        {
            ngx_http_lua_ffi_shadow_remove(&sl->history.e[i].v);
        }
    }

    sl->history.n = 0;
}


/*
 * What a rollback brings back: the version target, or (target 0) the one
 * that served before the current one. NGX_HTTP_NOT_FOUND: there never was
 * such a version; NGX_HTTP_UNPROCESSABLE_ENTITY: it fell out of the
 * history, its copy is gone.
 */

ngx_int_t
ngx_http_lua_ffi_history_pick_locked(ngx_http_lua_ffi_shm_lib_t *sl,
    ngx_uint_t target, ngx_http_lua_ffi_version_t *v, u_char *err,
    size_t errlen)
{
    ngx_uint_t                         i, cur;
    ngx_http_lua_ffi_history_entry_t  *e, *found;

    cur = sl->current.version;
    found = NULL;

    if (target == 0) {
        if (cur <= 1) {
            ngx_snprintf(err, errlen, "no version before version %ui%Z",
                         cur);
            return NGX_HTTP_NOT_FOUND;
        }

        for (i = 0; i < sl->history.n; i++) {
            e = &sl->history.e[i];

            if (e->v.version && e->v.version < cur
                && (found == NULL || e->v.version > found->v.version))
            {
                found = e;
            }
        }

        target = found ? found->v.version : cur - 1;

    } else if (target > cur && target <= sl->top_version) {
        /* numbers above the current one were given to canaries only */
        goto never_current;

    } else if (target > cur) {
        ngx_snprintf(err, errlen, "no version %ui (the current version is "
                     "%ui)%Z", target, cur);
        return NGX_HTTP_NOT_FOUND;

    } else {
        for (i = 0; i < sl->history.n; i++) {
            if (sl->history.e[i].v.version == target) {
                found = &sl->history.e[i];
            }
        }
    }

    if (found == NULL) {
        /* versions fall out oldest first: an older one kept means this
         * one never entered (a canary that was retired) */
        for (i = 0; i < sl->history.n; i++) {
            if (sl->history.e[i].v.version
                && sl->history.e[i].v.version < target)
            {
                goto never_current;
            }
        }

        ngx_snprintf(err, errlen, "version %ui fell out of the history "
                     "(ffi_history %i keeps the last versions), its copy is "
                     "gone%Z", target, ngx_http_lua_ffi_fmcf->history);
        return NGX_HTTP_UNPROCESSABLE_ENTITY;
    }

    *v = found->v;

    return NGX_OK;

never_current:

    ngx_snprintf(err, errlen, "version %ui never served as the current "
                 "version (a canary that was retired): the history keeps no "
                 "copy of it%Z", target);
    return NGX_HTTP_UNPROCESSABLE_ENTITY;
}


/* "history":[...] of one library in GET /ffi/status, oldest first. */

u_char *
ngx_http_lua_ffi_history_json(u_char *p, u_char *last,
    ngx_http_lua_ffi_shm_lib_t *sl)
{
    u_char                            *q;
    u_char                             hex[2 * NGX_HTTP_LUA_FFI_SHA256_LEN + 1];
    ngx_uint_t                         i;
    ngx_http_lua_ffi_history_entry_t  *e;

    p = ngx_slprintf(p, last, "[");

    for (i = 0; i < sl->history.n; i++) {
        e = &sl->history.e[i];

        p = ngx_slprintf(p, last, "%s{\"version\":", i ? "," : "");
        p = e->v.version ? ngx_slprintf(p, last, "%ui", e->v.version)
                         : ngx_slprintf(p, last, "null");

        if (e->v.hash) {
            q = ngx_hex_dump(hex, e->v.sha256, NGX_HTTP_LUA_FFI_SHA256_LEN);
            *q = '\0';
            p = ngx_slprintf(p, last, ",\"build_id\":\"%s\",\"sha256\":\"%s\","
                             "\"size\":%O", e->v.build_id, hex, e->v.size);

        } else {
            p = ngx_slprintf(p, last, ",\"build_id\":null,\"sha256\":null,"
                             "\"size\":null");
        }

        p = ngx_slprintf(p, last, ",\"time\":%T,\"how\":\"%s\"", e->when,
                         e->how < sizeof(ngx_http_lua_ffi_how_names)
                                  / sizeof(char *)
                         ? ngx_http_lua_ffi_how_names[e->how] : "");

        if (e->how == NGX_HTTP_LUA_FFI_HOW_ROLLBACK && e->from) {
            p = ngx_slprintf(p, last, ",\"from\":%ui", e->from);
        }

        if (e->v.version) {
            p = ngx_slprintf(p, last, ",\"outcome\":\"ok\"}");
            continue;
        }

        p = ngx_slprintf(p, last, ",\"outcome\":\"refused\",\"status\":%i,"
                         "\"reason\":", e->status);
        p = ngx_http_lua_ffi_json_str(p, last, e->reason,
                                      ngx_strlen(e->reason));
        p = ngx_slprintf(p, last, "}");
    }

    return ngx_slprintf(p, last, "]");
}
