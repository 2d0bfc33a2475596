/*
 * GET /ffi/metrics: the metrics zone in Prometheus' text exposition format
 * 0.0.4, series of the same labels summed over every worker.
 */

#include "ngx_http_lua_ffi_metrics.h"
#include "ngx_http_lua_ffi_canary.h"


#define NGX_HTTP_LUA_FFI_SERIES_BYTES  5120
#define NGX_HTTP_LUA_FFI_LIB_BYTES     8192
#define NGX_HTTP_LUA_FFI_PROC_BYTES    1024

/*
 * The lines that carry a library's name, each once, escaped: a series has
 * one per family (and the table's end) and per histogram line; a library
 * one per line of render_libraries(). The BYTES above are for the rest of
 * each line.
 */
#define NGX_HTTP_LUA_FFI_SERIES_LINES                                         \
    (sizeof(ngx_http_lua_ffi_families) / sizeof(ngx_http_lua_ffi_family_t)   \
     + NGX_HTTP_LUA_FFI_BUCKETS + 2)
#define NGX_HTTP_LUA_FFI_LIB_LINES                                            \
    (2 + 2 * NGX_HTTP_LUA_FFI_RELOAD_OUTCOMES                                 \
     + NGX_HTTP_LUA_FFI_DROP_OUTCOMES + 2 + 3)


typedef ngx_http_lua_ffi_metrics_shm_t   ngx_http_lua_ffi_msh_t;
typedef ngx_http_lua_ffi_metrics_slot_t  ngx_http_lua_ffi_mslot_t;


/* the histogram's bounds as Prometheus reads them, see the bridge's */
static char *ngx_http_lua_ffi_le[NGX_HTTP_LUA_FFI_BOUNDS] = {
    "1e-05", "2.5e-05", "5e-05", "0.0001", "0.00025", "0.0005",
    "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05",
    "0.1", "0.25", "0.5", "1", "2.5", "5", "10"
};

static char *ngx_http_lua_ffi_rt_states[NGX_HTTP_LUA_FFI_RT_STATES] = {
    "starting", "serving", "draining", "drained"
};

static char *ngx_http_lua_ffi_reload_labels[NGX_HTTP_LUA_FFI_RELOAD_OUTCOMES]
    = {
    "outcome=\"ok\",reason=\"none\"",
    "outcome=\"conflict\",reason=\"not_unloadable\"",
    "outcome=\"refused\",reason=\"file\"",
    "outcome=\"refused\",reason=\"trial\"",
    "outcome=\"refused\",reason=\"prepare\"",
    "outcome=\"refused\",reason=\"busy\"",
    "outcome=\"conflict\",reason=\"canary\""
};

static char *ngx_http_lua_ffi_drop_labels[NGX_HTTP_LUA_FFI_DROP_OUTCOMES] = {
    "reloaded", "refused", "conflict", "failed"
};

/* in the order of ngx_http_lua_ffi_canary_end_e */
static char *ngx_http_lua_ffi_canary_labels[3] = {
    "promoted", "rolled_back", "guard"
};


typedef struct {
    char         *name;
    char         *type;
    char         *help;
    size_t        offset;    /* in ngx_http_lua_ffi_series_t */
    char         *extra;     /* a label of its own, or NULL */
} ngx_http_lua_ffi_family_t;


#define ngx_http_lua_ffi_counter_at(f)                                       \
    (offsetof(ngx_http_lua_ffi_series_t, c)                                  \
     + offsetof(ngx_http_lua_ffi_counters_t, f))

static ngx_http_lua_ffi_family_t  ngx_http_lua_ffi_families[] = {

    { "ffi_calls_total", "counter",
      "Calls accepted by a runtime's queue.",
      ngx_http_lua_ffi_counter_at(calls), NULL },

    { "ffi_answers_total", "counter",
      "Answers a runtime gave: rc 0 (ok) or rc != 0 (error), late ones "
      "included.",
      ngx_http_lua_ffi_counter_at(ok), "outcome=\"ok\"" },

    { "ffi_answers_total", NULL, NULL,
      ngx_http_lua_ffi_counter_at(failed), "outcome=\"error\"" },

    { "ffi_timeouts_total", "counter",
      "Calls whose caller stopped waiting at its timeout.",
      ngx_http_lua_ffi_counter_at(timeouts), NULL },

    { "ffi_queue_full_total", "counter",
      "Calls refused because the runtime's queue was full (max_queue).",
      ngx_http_lua_ffi_counter_at(queue_full), NULL },

    { "ffi_orphaned_calls_total", "counter",
      "Calls whose caller went away (client abort, thread killed) while "
      "waiting.",
      ngx_http_lua_ffi_counter_at(orphaned), NULL },

    { "ffi_stray_answers_total", "counter",
      "Answers dropped: for a task already answered or of an earlier call.",
      ngx_http_lua_ffi_counter_at(strays), NULL },

    { "ffi_calls_in_flight", "gauge",
      "Calls posted and not yet answered by the runtime.",
      offsetof(ngx_http_lua_ffi_series_t, inflight), NULL },

    { "ffi_queued_tasks", "gauge",
      "Calls waiting in the runtime's queue, not yet taken by its threads.",
      offsetof(ngx_http_lua_ffi_series_t, queued), NULL },

    { NULL, NULL, NULL, 0, NULL }
};


static u_char *
ngx_http_lua_ffi_label_value(u_char *p, u_char *last, u_char *s)
{
    for ( /* void */ ; *s && p + 2 < last; s++) {
        if (*s == '\\' || *s == '"') {
            *p++ = '\\';
            *p++ = *s;

        } else if (*s == '\n') {
            *p++ = '\\';
            *p++ = 'n';

        } else {
            *p++ = *s;
        }
    }

    return p;
}


/* The bytes a label value takes once escaped. */

static size_t
ngx_http_lua_ffi_label_len(u_char *s)
{
    size_t  n;

    for (n = 0; *s; s++) {
        n += (*s == '\\' || *s == '"' || *s == '\n') ? 2 : 1;
    }

    return n;
}


static u_char *
ngx_http_lua_ffi_lib_label(u_char *p, u_char *last, ngx_http_lua_ffi_msh_t *sh,
    ngx_uint_t lib)
{
    p = ngx_slprintf(p, last, "lib=\"");
    p = ngx_http_lua_ffi_label_value(p, last, sh->libs[lib].name);
    return ngx_slprintf(p, last, "\"");
}


/* lib, version and cfg; a slot of version 0 stands for "retired" */

static u_char *
ngx_http_lua_ffi_series_labels(u_char *p, u_char *last,
    ngx_http_lua_ffi_msh_t *sh, ngx_http_lua_ffi_mslot_t *sl)
{
    p = ngx_http_lua_ffi_lib_label(p, last, sh, sl->lib);

    if (sl->version == 0) {
        return ngx_slprintf(p, last, ",version=\"retired\",cfg=\"\"");
    }

    if (!sl->has_cfg) {
        return ngx_slprintf(p, last, ",version=\"%ui\",cfg=\"nil\"",
                            sl->version);
    }

    return ngx_slprintf(p, last, ",version=\"%ui\",cfg=\"%08xD\"",
                        sl->version, sl->cfg);
}


static u_char *
ngx_http_lua_ffi_family_head(u_char *p, u_char *last, char *name,
    char *type, char *help)
{
    return ngx_slprintf(p, last, "# HELP %s %s\n# TYPE %s %s\n",
                        name, help, name, type);
}


/*
 * Sums slots of the same series (one per worker, and those of runtimes
 * gone) into the first of them, and turns each library's counts of
 * reclaimed slots into one more series, version "retired".
 */

static ngx_uint_t
ngx_http_lua_ffi_metrics_merge(ngx_http_lua_ffi_msh_t *sh,
    ngx_http_lua_ffi_mslot_t **series, ngx_http_lua_ffi_mslot_t *retired)
{
    size_t                     k;
    uint64_t                  *to, *from;
    ngx_uint_t                 i, j, n;
    ngx_http_lua_ffi_mslot_t  *a, *b;

    n = 0;

    for (i = 0; i < NGX_HTTP_LUA_FFI_METRICS_SLOTS; i++) {
        a = &sh->slots[i];

        if (a->state == NGX_HTTP_LUA_FFI_SLOT_FREE || a->lib >= sh->nlibs) {
            continue;
        }

        if (a->s.taken > a->s.queued) {
            /* a thread took the task before the loop counted it queued */
            a->s.taken = a->s.queued;
        }

        for (j = i + 1; j < NGX_HTTP_LUA_FFI_METRICS_SLOTS; j++) {
            b = &sh->slots[j];

            if (b->state == NGX_HTTP_LUA_FFI_SLOT_FREE || b->lib != a->lib
                || b->version != a->version || b->cfg != a->cfg
                || b->has_cfg != a->has_cfg)
            {
                continue;
            }

            if (b->s.taken > b->s.queued) {
                b->s.taken = b->s.queued;
            }

            to = (uint64_t *) &a->s;
            from = (uint64_t *) &b->s;

            for (k = 0; k < sizeof(ngx_http_lua_ffi_series_t) / 8; k++) {
                to[k] += from[k];
            }

            b->state = NGX_HTTP_LUA_FFI_SLOT_FREE;
        }

        a->s.queued -= a->s.taken;
        series[n++] = a;
    }

    /* version 0: what reclaimed slots of the library had counted */
    for (i = 0; i < sh->nlibs; i++) {
        if (!sh->libs[i].has_retired) {
            continue;
        }

        a = &retired[i];
        ngx_memzero(a, sizeof(ngx_http_lua_ffi_mslot_t));
        a->state = NGX_HTTP_LUA_FFI_SLOT_RETIRED;
        a->lib = i;
        a->s.c = sh->libs[i].retired;
        series[n++] = a;
    }

    return n;
}


static u_char *
ngx_http_lua_ffi_render_series(u_char *p, u_char *last,
    ngx_http_lua_ffi_msh_t *sh, ngx_http_lua_ffi_mslot_t **series,
    ngx_uint_t n)
{
    uint64_t                    v, count;
    ngx_uint_t                  i, b;
    ngx_http_lua_ffi_family_t  *f;
    ngx_http_lua_ffi_mslot_t   *sl;

    for (f = ngx_http_lua_ffi_families; f->name; f++) {
        if (f->type) {
            p = ngx_http_lua_ffi_family_head(p, last, f->name, f->type,
                                             f->help);
        }

        for (i = 0; i < n; i++) {
            sl = series[i];
            v = *(uint64_t *) ((u_char *) &sl->s + f->offset);

            p = ngx_slprintf(p, last, "%s{", f->name);
            p = ngx_http_lua_ffi_series_labels(p, last, sh, sl);

            if (f->extra) {
                p = ngx_slprintf(p, last, ",%s", f->extra);
            }

            p = ngx_slprintf(p, last, "} %uL\n", v);
        }
    }

    p = ngx_http_lua_ffi_family_head(p, last, "ffi_call_duration_seconds",
              "histogram",
              "Time from posting a call to resuming its caller with the "
              "answer (calls answered in time).");

    for (i = 0; i < n; i++) {
        sl = series[i];
        count = 0;

        for (b = 0; b < NGX_HTTP_LUA_FFI_BUCKETS; b++) {
            count += sl->s.c.latency[b];

            p = ngx_slprintf(p, last, "ffi_call_duration_seconds_bucket{");
            p = ngx_http_lua_ffi_series_labels(p, last, sh, sl);
            p = ngx_slprintf(p, last, ",le=\"%s\"} %uL\n",
                             b < NGX_HTTP_LUA_FFI_BOUNDS
                             ? ngx_http_lua_ffi_le[b] : "+Inf",
                             count);
        }

        p = ngx_slprintf(p, last, "ffi_call_duration_seconds_sum{");
        p = ngx_http_lua_ffi_series_labels(p, last, sh, sl);
        p = ngx_slprintf(p, last, "} %uL.%09uL\n",
                         sl->s.c.latency_ns / 1000000000,
                         sl->s.c.latency_ns % 1000000000);

        p = ngx_slprintf(p, last, "ffi_call_duration_seconds_count{");
        p = ngx_http_lua_ffi_series_labels(p, last, sh, sl);
        p = ngx_slprintf(p, last, "} %uL\n", count);
    }

    return p;
}


static u_char *
ngx_http_lua_ffi_render_libraries(u_char *p, u_char *last,
    ngx_http_lua_ffi_msh_t *sh)
{
    ngx_uint_t  i, k;

    p = ngx_http_lua_ffi_family_head(p, last, "ffi_library_version", "gauge",
              "The version of the library that serves (1: as first loaded).");

    for (i = 0; i < sh->nlibs; i++) {
        p = ngx_slprintf(p, last, "ffi_library_version{");
        p = ngx_http_lua_ffi_lib_label(p, last, sh, i);
        p = ngx_slprintf(p, last, "} %ui\n", sh->libs[i].version);
    }

    p = ngx_http_lua_ffi_family_head(p, last, "ffi_reloads_total", "counter",
              "Reloads of the library by how they ended (drops included).");

    for (i = 0; i < sh->nlibs; i++) {
        for (k = 0; k < NGX_HTTP_LUA_FFI_RELOAD_OUTCOMES; k++) {
            p = ngx_slprintf(p, last, "ffi_reloads_total{");
            p = ngx_http_lua_ffi_lib_label(p, last, sh, i);
            p = ngx_slprintf(p, last, ",%s} %uL\n",
                             ngx_http_lua_ffi_reload_labels[k],
                             sh->libs[i].reloads[k]);
        }
    }

    p = ngx_http_lua_ffi_family_head(p, last, "ffi_rollbacks_total",
              "counter", "Rollbacks (POST /ffi/rollback) of the library by "
              "how they ended, labelled as ffi_reloads_total.");

    for (i = 0; i < sh->nlibs; i++) {
        for (k = 0; k < NGX_HTTP_LUA_FFI_RELOAD_OUTCOMES; k++) {
            p = ngx_slprintf(p, last, "ffi_rollbacks_total{");
            p = ngx_http_lua_ffi_lib_label(p, last, sh, i);
            p = ngx_slprintf(p, last, ",%s} %uL\n",
                             ngx_http_lua_ffi_reload_labels[k],
                             sh->libs[i].rollbacks[k]);
        }
    }

    p = ngx_http_lua_ffi_family_head(p, last, "ffi_drops_total", "counter",
              "Files dropped at the library's path (ffi_watch) by what came "
              "of them.");

    for (i = 0; i < sh->nlibs; i++) {
        for (k = 0; k < NGX_HTTP_LUA_FFI_DROP_OUTCOMES; k++) {
            p = ngx_slprintf(p, last, "ffi_drops_total{");
            p = ngx_http_lua_ffi_lib_label(p, last, sh, i);
            p = ngx_slprintf(p, last, ",outcome=\"%s\"} %uL\n",
                             ngx_http_lua_ffi_drop_labels[k],
                             sh->libs[i].drops[k]);
        }
    }

    p = ngx_http_lua_ffi_family_head(p, last, "ffi_canary_version", "gauge",
              "The version a canary runs beside the library's version "
              "(0: none runs).");

    for (i = 0; i < sh->nlibs; i++) {
        p = ngx_slprintf(p, last, "ffi_canary_version{");
        p = ngx_http_lua_ffi_lib_label(p, last, sh, i);
        p = ngx_slprintf(p, last, "} %ui\n", sh->libs[i].canary_version);
    }

    p = ngx_http_lua_ffi_family_head(p, last, "ffi_canary_percent", "gauge",
              "The share of calls (percent) a canary gets (0: none runs).");

    for (i = 0; i < sh->nlibs; i++) {
        p = ngx_slprintf(p, last, "ffi_canary_percent{");
        p = ngx_http_lua_ffi_lib_label(p, last, sh, i);
        p = ngx_slprintf(p, last, "} %ui\n", sh->libs[i].canary_percent);
    }

    p = ngx_http_lua_ffi_family_head(p, last, "ffi_canary_ends_total",
              "counter", "Canaries that ended, by how: promoted, rolled back "
              "by the admin, rolled back by ffi_canary_guard.");

    for (i = 0; i < sh->nlibs; i++) {
        for (k = 0; k < 3; k++) {
            p = ngx_slprintf(p, last, "ffi_canary_ends_total{");
            p = ngx_http_lua_ffi_lib_label(p, last, sh, i);
            p = ngx_slprintf(p, last, ",outcome=\"%s\"} %uL\n",
                             ngx_http_lua_ffi_canary_labels[k],
                             sh->libs[i].canary_ends[k]);
        }
    }

    p = ngx_http_lua_ffi_family_head(p, last,
              "ffi_library_last_reload_timestamp_seconds", "gauge",
              "When the library last reloaded (Unix time); 0: never.");

    for (i = 0; i < sh->nlibs; i++) {
        p = ngx_slprintf(p, last,
                         "ffi_library_last_reload_timestamp_seconds{");
        p = ngx_http_lua_ffi_lib_label(p, last, sh, i);
        p = ngx_slprintf(p, last, "} %T\n", sh->libs[i].last_reload);
    }

    return p;
}


/* Worker processes by ngx_worker: an old and a new one during a HUP sum. */

static u_char *
ngx_http_lua_ffi_render_workers(u_char *p, u_char *last,
    ngx_http_lua_ffi_msh_t *sh)
{
    uint64_t                          v;
    ngx_uint_t                        i, j, k, seen;
    ngx_http_lua_ffi_metrics_proc_t  *a;

    p = ngx_http_lua_ffi_family_head(p, last, "ffi_worker_runtimes", "gauge",
              "Runtimes of the worker by state.");

    for (k = 0; k < NGX_HTTP_LUA_FFI_RT_STATES; k++) {
        for (i = 0; i < NGX_HTTP_LUA_FFI_METRICS_PROCS; i++) {
            a = &sh->procs[i];

            for (seen = 0, j = 0; j < i; j++) {
                if (sh->procs[j].pid && sh->procs[j].worker == a->worker) {
                    seen = 1;
                }
            }

            if (a->pid == 0 || seen) {
                continue;
            }

            for (v = 0, j = i; j < NGX_HTTP_LUA_FFI_METRICS_PROCS; j++) {
                if (sh->procs[j].pid && sh->procs[j].worker == a->worker) {
                    v += sh->procs[j].runtimes[k];
                }
            }

            p = ngx_slprintf(p, last,
                             "ffi_worker_runtimes{worker=\"%ui\",state=\"%s\"}"
                             " %uL\n", a->worker,
                             ngx_http_lua_ffi_rt_states[k], v);
        }
    }

    p = ngx_http_lua_ffi_family_head(p, last, "ffi_worker_mapped_images",
              "gauge", "Library images (versions) the worker has mapped.");

    for (i = 0; i < NGX_HTTP_LUA_FFI_METRICS_PROCS; i++) {
        a = &sh->procs[i];

        for (seen = 0, j = 0; j < i; j++) {
            if (sh->procs[j].pid && sh->procs[j].worker == a->worker) {
                seen = 1;
            }
        }

        if (a->pid == 0 || seen) {
            continue;
        }

        for (v = 0, j = i; j < NGX_HTTP_LUA_FFI_METRICS_PROCS; j++) {
            if (sh->procs[j].pid && sh->procs[j].worker == a->worker) {
                v += sh->procs[j].images;
            }
        }

        p = ngx_slprintf(p, last,
                         "ffi_worker_mapped_images{worker=\"%ui\"} %uL\n",
                         a->worker, v);
    }

    return p;
}


ngx_int_t
ngx_http_lua_ffi_admin_metrics(ngx_http_request_t *r)
{
    size_t                      size;
    u_char                     *last;
    ngx_int_t                   rc;
    ngx_buf_t                  *b;
    ngx_uint_t                  i, n, procs;
    ngx_chain_t                 out;
    ngx_http_lua_ffi_msh_t     *sh;
    ngx_http_lua_ffi_mslot_t  **series, *retired;

    sh = ngx_http_lua_ffi_metrics_snapshot(r->pool);
    if (sh == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    series = ngx_palloc(r->pool, sizeof(ngx_http_lua_ffi_mslot_t *)
                                 * (NGX_HTTP_LUA_FFI_METRICS_SLOTS
                                    + NGX_HTTP_LUA_FFI_METRICS_LIBS));
    retired = ngx_palloc(r->pool, sizeof(ngx_http_lua_ffi_mslot_t)
                                  * NGX_HTTP_LUA_FFI_METRICS_LIBS);
    if (series == NULL || retired == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    n = ngx_http_lua_ffi_metrics_merge(sh, series, retired);

    /* the canary gauges as every worker routes, from the shared zone */
    for (i = 0; i < sh->nlibs; i++) {
        ngx_http_lua_ffi_canary_now(sh->libs[i].path,
                                    &sh->libs[i].canary_version,
                                    &sh->libs[i].canary_percent);
    }

    for (procs = 0, i = 0; i < NGX_HTTP_LUA_FFI_METRICS_PROCS; i++) {
        procs += (sh->procs[i].pid != 0);
    }

    size = 4096 + n * NGX_HTTP_LUA_FFI_SERIES_BYTES
           + sh->nlibs * NGX_HTTP_LUA_FFI_LIB_BYTES
           + procs * NGX_HTTP_LUA_FFI_PROC_BYTES;

    /* every line of a library or a series names it: long names, more */
    for (i = 0; i < n; i++) {
        size += NGX_HTTP_LUA_FFI_SERIES_LINES
                * ngx_http_lua_ffi_label_len(sh->libs[series[i]->lib].name);
    }

    for (i = 0; i < sh->nlibs; i++) {
        size += NGX_HTTP_LUA_FFI_LIB_LINES
                * ngx_http_lua_ffi_label_len(sh->libs[i].name);
    }

    b = ngx_create_temp_buf(r->pool, size);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    last = b->end;
    b->last = ngx_http_lua_ffi_render_series(b->last, last, sh, series, n);
    b->last = ngx_http_lua_ffi_render_libraries(b->last, last, sh);
    b->last = ngx_http_lua_ffi_render_workers(b->last, last, sh);
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = b->last - b->pos;
    ngx_str_set(&r->headers_out.content_type, "text/plain; version=0.0.4");
    r->headers_out.content_type_len = sizeof("text/plain") - 1;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}
