/*
 * Logging for runtimes: ngx_http_lua_ffi_log() takes a line from any thread
 * into a bounded buffer; the event loop writes it to the worker's logs.
 */

#include "ngx_http_lua_ffi_module.h"


/*
 * Runtime threads never write to a log file themselves: `nginx -s reopen`
 * closes and replaces the descriptors on the event loop, and a thread could
 * write to one closed (or reused) meanwhile. Lines are copied into one of
 * two buffers under a mutex held only for the copy; the event loop swaps
 * the buffers and writes every line with ngx_log_error(), which honours
 * each error_log target and its level. A line that finds the buffer full is
 * dropped and counted: a runtime never waits for the event loop.
 */

#define NGX_HTTP_LUA_FFI_LOG_BUF   (256 * 1024)

/* nginx cuts a longer line anyway (NGX_MAX_ERROR_STR) */
#define NGX_HTTP_LUA_FFI_LOG_MSG   2048
#define NGX_HTTP_LUA_FFI_LOG_NAME  128


typedef struct {
    uint32_t                      len;       /* the whole record */
    uint16_t                      level;
    uint16_t                      name_len;
    uint32_t                      msg_len;
    uint32_t                      version;
} ngx_http_lua_ffi_log_rec_t;


typedef struct {
    pthread_mutex_t               mutex;
    ngx_uint_t                    fill;      /* the buffer being filled */
    size_t                        used;
    uint64_t                      dropped;   /* atomic */
    u_char                        buf[2][NGX_HTTP_LUA_FFI_LOG_BUF];
} ngx_http_lua_ffi_log_state_t;


/* per process: each worker has its own after fork() */
static ngx_http_lua_ffi_log_state_t  ngx_http_lua_ffi_log_state = {
    .mutex = PTHREAD_MUTEX_INITIALIZER
};


static size_t
ngx_http_lua_ffi_log_name(ngx_http_lua_ffi_runtime_t *rt, u_char *name,
    ngx_uint_t *version)
{
    size_t                       len;
    ngx_http_lua_ffi_library_t  *lib;

    if (rt == NULL) {
        *version = 0;
        return 0;
    }

    /* set before libffi_init ran; a reload gives a runtime no new name */
    lib = rt->image->library;
    *version = *(volatile ngx_uint_t *) &rt->generation;

    len = ngx_min(lib->names[0].len, NGX_HTTP_LUA_FFI_LOG_NAME);
    ngx_memcpy(name, lib->names[0].data, len);

    return len;
}


NGX_HTTP_LUA_FFI_API int
ngx_http_lua_ffi_log(void *tq, int level, const char *msg, int len)
{
    u_char                        *p, name[NGX_HTTP_LUA_FFI_LOG_NAME];
    size_t                         name_len, need, used;
    ngx_uint_t                     version;
    ngx_http_lua_ffi_log_rec_t     rec;
    ngx_http_lua_ffi_log_state_t  *st = &ngx_http_lua_ffi_log_state;

    if (level < NGX_LOG_EMERG || level > NGX_LOG_DEBUG || msg == NULL
        || len < 0)
    {
        return -1;
    }

    /* below every target's level: nothing to write, nothing to keep */
    if ((ngx_uint_t) level > ngx_cycle->log->log_level) {
        return 0;
    }

    if (len == 0) {
        len = (int) strlen(msg);
    }

    /* print() and friends end their lines; error.log adds its own */
    while (len > 0 && (msg[len - 1] == '\n' || msg[len - 1] == '\r')) {
        len--;
    }

    if (len > NGX_HTTP_LUA_FFI_LOG_MSG) {
        len = NGX_HTTP_LUA_FFI_LOG_MSG;
    }

    name_len = ngx_http_lua_ffi_log_name(tq, name, &version);

    rec.level = (uint16_t) level;
    rec.name_len = (uint16_t) name_len;
    rec.msg_len = (uint32_t) len;
    rec.version = (uint32_t) version;
    need = ngx_align(sizeof(rec) + name_len + len, sizeof(uint64_t));
    rec.len = (uint32_t) need;

    (void) pthread_mutex_lock(&st->mutex);

    used = st->used;

    if (used + need > NGX_HTTP_LUA_FFI_LOG_BUF) {
        (void) pthread_mutex_unlock(&st->mutex);
        (void) __atomic_add_fetch(&st->dropped, 1, __ATOMIC_RELAXED);
        return -1;
    }

    p = st->buf[st->fill] + used;
    p = ngx_cpymem(p, &rec, sizeof(rec));
    p = ngx_cpymem(p, name, name_len);
    ngx_memcpy(p, msg, len);
    __atomic_store_n(&st->used, used + need, __ATOMIC_RELAXED);

    (void) pthread_mutex_unlock(&st->mutex);

    /* the first line of a burst wakes the loop; the others ride along */
    if (used == 0) {
        ngx_http_lua_ffi_bridge_wake();
    }

    return 0;
}


/*
 * On the event loop: writes every line taken so far, in order. Runs on
 * each wakeup of the worker's eventfd, so an empty buffer costs no lock:
 * a line that lands after the look below was preceded by a wakeup of its
 * own (the first line of a burst writes to the eventfd after the unlock).
 */

void
ngx_http_lua_ffi_log_flush(void)
{
    u_char                        *p, *last, *name;
    size_t                         used;
    ngx_uint_t                     full;
    ngx_http_lua_ffi_log_rec_t     rec;
    ngx_http_lua_ffi_log_state_t  *st = &ngx_http_lua_ffi_log_state;

    if (__atomic_load_n(&st->used, __ATOMIC_RELAXED) == 0) {
        return;
    }

    (void) pthread_mutex_lock(&st->mutex);

    used = st->used;
    full = st->fill;

    if (used) {
        st->fill ^= 1;
        __atomic_store_n(&st->used, 0, __ATOMIC_RELAXED);
    }

    (void) pthread_mutex_unlock(&st->mutex);

    p = st->buf[full];
    last = p + used;

    while (p < last) {
        ngx_memcpy(&rec, p, sizeof(rec));
        name = p + sizeof(rec);

        if (rec.name_len) {
            ngx_log_error(rec.level, ngx_cycle->log, 0,
                          "ffi: [%*s v%uD] %*s", (size_t) rec.name_len, name,
                          rec.version, (size_t) rec.msg_len,
                          name + rec.name_len);

        } else {
            ngx_log_error(rec.level, ngx_cycle->log, 0, "ffi: %*s",
                          (size_t) rec.msg_len, name);
        }

        p += rec.len;
    }
}


ngx_uint_t
ngx_http_lua_ffi_log_dropped(void)
{
    return (ngx_uint_t) __atomic_load_n(&ngx_http_lua_ffi_log_state.dropped,
                                        __ATOMIC_RELAXED);
}
