/*
 * Shared dicts for runtimes: get, set and incr on lua_shared_dict zones by
 * name, from any thread, with ngx.shared.DICT's semantics and data layout.
 */

#include "ngx_http_lua_ffi_module.h"
#include "ngx_http_lua_shdict.h"

#include <math.h>


/*
 * Why not call lua-nginx-module's own ngx_http_lua_ffi_shdict_*: they read
 * the time nginx caches on its event loop (seconds stale while the loop
 * sleeps, so expiry would drift), write debug lines to the error log from
 * the calling thread, and their signatures change between releases. These
 * work on the same zone with the same node layout and the zone's own lock
 * (an ngx_shmtx: its atomic works between threads of one process as between
 * processes); the clock is the system's, read on each operation.
 *
 * One limit: with `error_log ... debug`, nginx's lock and slab allocator
 * write their own debug lines from whichever thread calls them.
 */

/* the value types of lua-nginx-module's zone nodes (Lua's type numbers) */
#define NGX_HTTP_LUA_FFI_SHDICT_TBOOLEAN  1
#define NGX_HTTP_LUA_FFI_SHDICT_TNUMBER   3
#define NGX_HTTP_LUA_FFI_SHDICT_TSTRING   4
#define NGX_HTTP_LUA_FFI_SHDICT_TLIST     5

#define NGX_HTTP_LUA_FFI_DICT_KEY_MAX     65535

/* as in lua-nginx-module: how many entries a store may evict for room */
#define NGX_HTTP_LUA_FFI_DICT_EVICT       30


static ngx_http_lua_shdict_ctx_t *
ngx_http_lua_ffi_dict_find(const char *name)
{
    size_t                             len;
    ngx_uint_t                         i;
    ngx_shm_zone_t                    *zone;
    ngx_list_part_t                   *part;
    ngx_http_lua_shm_zone_ctx_t       *ctx;

    if (name == NULL) {
        return NULL;
    }

    len = strlen(name);

    /* the list is built at configuration time: read-only in a worker */
    part = (ngx_list_part_t *) &ngx_cycle->shared_memory.part;
    zone = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return NULL;
            }

            part = part->next;
            zone = part->elts;
            i = 0;
        }

        if (zone[i].shm.name.len != len
            || ngx_strncmp(zone[i].shm.name.data, name, len) != 0)
        {
            continue;
        }

        /*
         * only lua_shared_dict zones: others hold other data. Every zone
         * lua-nginx-module adds carries its wrapper, with the zone as
         * lua_shared_dict set it up inside.
         */
        if (zone[i].tag != &ngx_http_lua_module || zone[i].data == NULL) {
            return NULL;
        }

        ctx = zone[i].data;

        if (ctx->zone.init != ngx_http_lua_shdict_init_zone
            || ctx->zone.data == NULL)
        {
            return NULL;
        }

        return ctx->zone.data;
    }
}


static uint64_t
ngx_http_lua_ffi_dict_now(void)
{
    struct timespec  ts;

    /* wall clock in ms, as nginx's cached time that Lua's side uses */
    (void) clock_gettime(CLOCK_REALTIME, &ts);

    return (uint64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}


static ngx_int_t
ngx_http_lua_ffi_dict_key(const char *key, int *key_len)
{
    if (key == NULL) {
        return NGX_ERROR;
    }

    if (*key_len < 0) {
        *key_len = (int) strlen(key);
    }

    if (*key_len == 0 || *key_len > NGX_HTTP_LUA_FFI_DICT_KEY_MAX) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_http_lua_ffi_dict_free_node(ngx_http_lua_shdict_ctx_t *ctx,
    ngx_http_lua_shdict_node_t *sd)
{
    ngx_queue_t        *list, *q, *next;
    ngx_rbtree_node_t  *node;

    if (sd->value_type == NGX_HTTP_LUA_FFI_SHDICT_TLIST) {
        list = (ngx_queue_t *) ngx_align_ptr((u_char *) &sd->data
                                             + sd->key_len, NGX_ALIGNMENT);

        for (q = ngx_queue_head(list);
             q != ngx_queue_sentinel(list);
             q = next)
        {
            next = ngx_queue_next(q);
            ngx_slab_free_locked(ctx->shpool,
                                 ngx_queue_data(q,
                                     ngx_http_lua_shdict_list_node_t, queue));
        }
    }

    ngx_queue_remove(&sd->queue);

    node = (ngx_rbtree_node_t *)
               ((u_char *) sd - offsetof(ngx_rbtree_node_t, color));

    ngx_rbtree_delete(&ctx->sh->rbtree, node);
    ngx_slab_free_locked(ctx->shpool, node);
}


/*
 * With the lock held: n 1 frees up to two expired entries at the LRU end,
 * n 0 the least recently used entry whatever its expiry, as Lua's side.
 */

static ngx_uint_t
ngx_http_lua_ffi_dict_expire(ngx_http_lua_shdict_ctx_t *ctx, ngx_uint_t n,
    uint64_t now)
{
    ngx_uint_t                   freed;
    ngx_queue_t                 *q;
    ngx_http_lua_shdict_node_t  *sd;

    for (freed = 0; n < 3; n++) {

        if (ngx_queue_empty(&ctx->sh->lru_queue)) {
            break;
        }

        q = ngx_queue_last(&ctx->sh->lru_queue);
        sd = ngx_queue_data(q, ngx_http_lua_shdict_node_t, queue);

        if (n != 0 && (sd->expires == 0 || sd->expires > now)) {
            break;
        }

        ngx_http_lua_ffi_dict_free_node(ctx, sd);
        freed++;
    }

    return freed;
}


/* NGX_OK found and live, NGX_DONE found but expired, NGX_DECLINED absent */

static ngx_int_t
ngx_http_lua_ffi_dict_lookup(ngx_http_lua_shdict_ctx_t *ctx, uint32_t hash,
    u_char *key, size_t key_len, uint64_t now,
    ngx_http_lua_shdict_node_t **sdp)
{
    ngx_int_t                    rc;
    ngx_rbtree_node_t           *node, *sentinel;
    ngx_http_lua_shdict_node_t  *sd;

    node = ctx->sh->rbtree.root;
    sentinel = ctx->sh->rbtree.sentinel;

    while (node != sentinel) {

        if (hash != node->key) {
            node = (hash < node->key) ? node->left : node->right;
            continue;
        }

        sd = (ngx_http_lua_shdict_node_t *) &node->color;

        rc = ngx_memn2cmp(key, sd->data, key_len, (size_t) sd->key_len);

        if (rc == 0) {
            ngx_queue_remove(&sd->queue);
            ngx_queue_insert_head(&ctx->sh->lru_queue, &sd->queue);

            *sdp = sd;

            return (sd->expires != 0 && sd->expires < now)
                   ? NGX_DONE : NGX_OK;
        }

        node = (rc < 0) ? node->left : node->right;
    }

    *sdp = NULL;

    return NGX_DECLINED;
}


/* With the lock held: a new node, evicting old entries if needed. */

static ngx_http_lua_shdict_node_t *
ngx_http_lua_ffi_dict_alloc(ngx_http_lua_shdict_ctx_t *ctx, uint32_t hash,
    u_char *key, size_t key_len, size_t value_len, uint64_t now)
{
    size_t                       n;
    ngx_uint_t                   i;
    ngx_rbtree_node_t           *node;
    ngx_http_lua_shdict_node_t  *sd;

    n = offsetof(ngx_rbtree_node_t, color)
        + offsetof(ngx_http_lua_shdict_node_t, data)
        + key_len + value_len;

    node = ngx_slab_alloc_locked(ctx->shpool, n);

    for (i = 0; node == NULL && i < NGX_HTTP_LUA_FFI_DICT_EVICT; i++) {
        if (ngx_http_lua_ffi_dict_expire(ctx, 0, now) == 0) {
            break;
        }

        node = ngx_slab_alloc_locked(ctx->shpool, n);
    }

    if (node == NULL) {
        return NULL;
    }

    sd = (ngx_http_lua_shdict_node_t *) &node->color;

    node->key = hash;
    sd->key_len = (u_short) key_len;
    sd->value_len = (uint32_t) value_len;
    sd->user_flags = 0;
    ngx_memcpy(sd->data, key, key_len);

    ngx_rbtree_insert(&ctx->sh->rbtree, node);
    ngx_queue_insert_head(&ctx->sh->lru_queue, &sd->queue);

    return sd;
}


/* A number as Lua's tostring() writes it ("%.14g"; inf, -inf, nan). */

static int
ngx_http_lua_ffi_dict_number(double num, char *buf, size_t size)
{
    if (isnan(num)) {
        return snprintf(buf, size, "nan");
    }

    if (isinf(num)) {
        return snprintf(buf, size, num > 0 ? "inf" : "-inf");
    }

    return snprintf(buf, size, "%.14g", num);
}


NGX_HTTP_LUA_FFI_API int
ngx_http_lua_ffi_dict_get(void *tq, const char *dict, const char *key,
    int key_len, char **val, int *val_len)
{
    int                          rc, n;
    char                        *copy, small[32];
    double                       d;
    u_char                      *data;
    uint32_t                     hash;
    uint64_t                     now;
    ngx_http_lua_shdict_ctx_t   *ctx;
    ngx_http_lua_shdict_node_t  *sd;

    (void) tq;

    if (val == NULL || ngx_http_lua_ffi_dict_key(key, &key_len) != NGX_OK) {
        return NGX_HTTP_LUA_FFI_DICT_EINVAL;
    }

    *val = NULL;

    if (val_len) {
        *val_len = 0;
    }

    ctx = ngx_http_lua_ffi_dict_find(dict);
    if (ctx == NULL) {
        return NGX_HTTP_LUA_FFI_DICT_ENODICT;
    }

    hash = ngx_crc32_short((u_char *) key, key_len);
    now = ngx_http_lua_ffi_dict_now();
    copy = NULL;
    n = 0;
    rc = NGX_HTTP_LUA_FFI_DICT_OK;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    (void) ngx_http_lua_ffi_dict_expire(ctx, 1, now);

    if (ngx_http_lua_ffi_dict_lookup(ctx, hash, (u_char *) key, key_len, now,
                                     &sd)
        != NGX_OK)
    {
        ngx_shmtx_unlock(&ctx->shpool->mutex);
        return NGX_HTTP_LUA_FFI_DICT_NOT_FOUND;
    }

    data = sd->data + sd->key_len;

    switch (sd->value_type) {

    case NGX_HTTP_LUA_FFI_SHDICT_TSTRING:
        n = (int) sd->value_len;
        copy = malloc(n + 1);

        if (copy == NULL) {
            rc = NGX_HTTP_LUA_FFI_DICT_ENOMEM;
            break;
        }

        ngx_memcpy(copy, data, n);
        break;

    /* numbers and booleans as Lua's tostring() writes them */

    case NGX_HTTP_LUA_FFI_SHDICT_TNUMBER:
        ngx_memcpy(&d, data, sizeof(double));
        n = ngx_http_lua_ffi_dict_number(d, small, sizeof(small));
        break;

    case NGX_HTTP_LUA_FFI_SHDICT_TBOOLEAN:
        n = snprintf(small, sizeof(small), "%s", *data ? "true" : "false");
        break;

    default:
        /* a list: ngx.shared.DICT:get fails on it too */
        rc = NGX_HTTP_LUA_FFI_DICT_ETYPE;
        break;
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    if (rc != NGX_HTTP_LUA_FFI_DICT_OK) {
        return rc;
    }

    if (copy == NULL) {
        copy = malloc(n + 1);
        if (copy == NULL) {
            return NGX_HTTP_LUA_FFI_DICT_ENOMEM;
        }

        ngx_memcpy(copy, small, n);
    }

    copy[n] = '\0';
    *val = copy;

    if (val_len) {
        *val_len = n;
    }

    return NGX_HTTP_LUA_FFI_DICT_OK;
}


/*
 * ngx.shared.DICT:set (val NULL: delete). exptime in seconds, 0 never;
 * a full zone evicts its least recently used entries, as set() does.
 */

NGX_HTTP_LUA_FFI_API int
ngx_http_lua_ffi_dict_set(void *tq, const char *dict, const char *key,
    int key_len, const char *val, int val_len, double exptime)
{
    uint32_t                     hash;
    uint64_t                     now, ms, expires;
    ngx_http_lua_shdict_ctx_t   *ctx;
    ngx_http_lua_shdict_node_t  *sd;

    (void) tq;

    if (ngx_http_lua_ffi_dict_key(key, &key_len) != NGX_OK
        || !(exptime >= 0) || exptime > 1e12)
    {
        return NGX_HTTP_LUA_FFI_DICT_EINVAL;
    }

    if (val && val_len < 0) {
        val_len = (int) strlen(val);
    }

    ctx = ngx_http_lua_ffi_dict_find(dict);
    if (ctx == NULL) {
        return NGX_HTTP_LUA_FFI_DICT_ENODICT;
    }

    hash = ngx_crc32_short((u_char *) key, key_len);
    now = ngx_http_lua_ffi_dict_now();

    /* Lua's side keeps whole milliseconds: under 1 ms is no expiry */
    ms = (uint64_t) (exptime * 1000);
    expires = ms ? now + ms : 0;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    (void) ngx_http_lua_ffi_dict_expire(ctx, 1, now);

    /* found, live or expired: a value of the same size reuses the node */
    (void) ngx_http_lua_ffi_dict_lookup(ctx, hash, (u_char *) key, key_len,
                                        now, &sd);

    if (sd == NULL || val == NULL || sd->value_len != (uint32_t) val_len
        || sd->value_type == NGX_HTTP_LUA_FFI_SHDICT_TLIST)
    {
        if (sd) {
            ngx_http_lua_ffi_dict_free_node(ctx, sd);
        }

        if (val == NULL) {
            ngx_shmtx_unlock(&ctx->shpool->mutex);
            return NGX_HTTP_LUA_FFI_DICT_OK;
        }

        sd = ngx_http_lua_ffi_dict_alloc(ctx, hash, (u_char *) key, key_len,
                                         val_len, now);
        if (sd == NULL) {
            ngx_shmtx_unlock(&ctx->shpool->mutex);
            return NGX_HTTP_LUA_FFI_DICT_ENOMEM;
        }
    }

    sd->expires = expires;
    sd->user_flags = 0;
    sd->value_type = NGX_HTTP_LUA_FFI_SHDICT_TSTRING;
    ngx_memcpy(sd->data + key_len, val, val_len);

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return NGX_HTTP_LUA_FFI_DICT_OK;
}


/*
 * ngx.shared.DICT:incr(key, by, init): an absent or expired key starts at
 * init (with no expiry); a live one keeps its expiry. *result: the new
 * value. A value that is not a number is an error, as in Lua.
 */

NGX_HTTP_LUA_FFI_API int
ngx_http_lua_ffi_dict_incr(void *tq, const char *dict, const char *key,
    int key_len, double by, double init, double *result)
{
    double                       num;
    u_char                      *data;
    uint32_t                     hash;
    uint64_t                     now;
    ngx_int_t                    rc;
    ngx_http_lua_shdict_ctx_t   *ctx;
    ngx_http_lua_shdict_node_t  *sd;

    (void) tq;

    if (ngx_http_lua_ffi_dict_key(key, &key_len) != NGX_OK) {
        return NGX_HTTP_LUA_FFI_DICT_EINVAL;
    }

    ctx = ngx_http_lua_ffi_dict_find(dict);
    if (ctx == NULL) {
        return NGX_HTTP_LUA_FFI_DICT_ENODICT;
    }

    hash = ngx_crc32_short((u_char *) key, key_len);
    now = ngx_http_lua_ffi_dict_now();

    ngx_shmtx_lock(&ctx->shpool->mutex);

    (void) ngx_http_lua_ffi_dict_expire(ctx, 1, now);

    rc = ngx_http_lua_ffi_dict_lookup(ctx, hash, (u_char *) key, key_len, now,
                                      &sd);

    if (rc == NGX_OK) {
        if (sd->value_type != NGX_HTTP_LUA_FFI_SHDICT_TNUMBER
            || sd->value_len != sizeof(double))
        {
            ngx_shmtx_unlock(&ctx->shpool->mutex);
            return NGX_HTTP_LUA_FFI_DICT_ETYPE;
        }

        data = sd->data + key_len;
        ngx_memcpy(&num, data, sizeof(double));
        num += by;
        ngx_memcpy(data, &num, sizeof(double));

        ngx_shmtx_unlock(&ctx->shpool->mutex);

        if (result) {
            *result = num;
        }

        return NGX_HTTP_LUA_FFI_DICT_OK;
    }

    num = init + by;

    if (sd == NULL || sd->value_len != sizeof(double)
        || sd->value_type == NGX_HTTP_LUA_FFI_SHDICT_TLIST)
    {
        if (sd) {
            ngx_http_lua_ffi_dict_free_node(ctx, sd);
        }

        sd = ngx_http_lua_ffi_dict_alloc(ctx, hash, (u_char *) key, key_len,
                                         sizeof(double), now);
        if (sd == NULL) {
            ngx_shmtx_unlock(&ctx->shpool->mutex);
            return NGX_HTTP_LUA_FFI_DICT_ENOMEM;
        }
    }

    sd->expires = 0;
    sd->user_flags = 0;
    sd->value_type = NGX_HTTP_LUA_FFI_SHDICT_TNUMBER;
    ngx_memcpy(sd->data + key_len, &num, sizeof(double));

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    if (result) {
        *result = num;
    }

    return NGX_HTTP_LUA_FFI_DICT_OK;
}
