/*
 * The counters of one runtime that the bridge bumps on every call: plain
 * stores into shared memory that /ffi/metrics reads (manager/, admin/).
 */

#ifndef _NGX_HTTP_LUA_FFI_COUNTERS_H_INCLUDED_
#define _NGX_HTTP_LUA_FFI_COUNTERS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


/* upper bounds of the latency histogram, and one bucket past the last */
#define NGX_HTTP_LUA_FFI_BOUNDS   19
#define NGX_HTTP_LUA_FFI_BUCKETS  (NGX_HTTP_LUA_FFI_BOUNDS + 1)


/*
 * What stays counted when the runtime is gone. Every field but strays is
 * written by the worker's event loop thread only (a plain increment, no
 * lock, no atomic instruction); strays by the runtime's own threads, with
 * an atomic add, on a path that is already an error. A reader in another
 * process sees each aligned 64-bit value whole.
 */
typedef struct {
    uint64_t                      calls;       /* accepted by the queue */
    uint64_t                      ok;          /* answers with rc 0 */
    uint64_t                      failed;      /* answers with rc != 0 */
    uint64_t                      timeouts;
    uint64_t                      queue_full;
    uint64_t                      orphaned;    /* the caller went away */
    uint64_t                      strays;      /* answers dropped */
    uint64_t                      latency_ns;  /* sum of the histogram's */
    uint64_t                      latency[NGX_HTTP_LUA_FFI_BUCKETS];
} ngx_http_lua_ffi_counters_t;


/* One live runtime's series: its counters and its gauges. */
typedef struct {
    ngx_http_lua_ffi_counters_t   c;
    uint64_t                      inflight;    /* posted, not answered */
    uint64_t                      queued;      /* posted, event loop side */
    uint64_t                      taken;       /* under the queue's mutex */
} ngx_http_lua_ffi_series_t;


extern const uint64_t  ngx_http_lua_ffi_bounds_ns[NGX_HTTP_LUA_FFI_BOUNDS];


/* Prometheus buckets count what is <= their bound ("le"). */

static ngx_inline void
ngx_http_lua_ffi_counters_observe(ngx_http_lua_ffi_counters_t *c,
    uint64_t ns)
{
    ngx_uint_t  i;

    for (i = 0; i < NGX_HTTP_LUA_FFI_BOUNDS; i++) {
        if (ns <= ngx_http_lua_ffi_bounds_ns[i]) {
            break;
        }
    }

    c->latency[i]++;
    c->latency_ns += ns;
}


#endif /* _NGX_HTTP_LUA_FFI_COUNTERS_H_INCLUDED_ */
