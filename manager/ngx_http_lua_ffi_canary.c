/*
 * Canary reloads: the shared zone's canary beside a library's current
 * version, each worker's runtimes on it, promotion, retirement, status and
 * ffi_canary_guard. The protocol itself is reload.c's, with another ending.
 */

#include "ngx_http_lua_ffi_canary.h"
#include "ngx_http_lua_ffi_metrics.h"


#define NGX_HTTP_LUA_FFI_GUARD_MSEC  1000


/* a rollback the guard started, for its answer */
typedef struct {
    ngx_str_t                     path;
    ngx_uint_t                    version;
    u_char                        why[NGX_HTTP_LUA_FFI_ERRLEN];
    u_char                        buf[1];    /* path, NUL-terminated */
} ngx_http_lua_ffi_guard_op_t;


static void ngx_http_lua_ffi_canary_leave(ngx_http_lua_ffi_library_t *lib);
static void ngx_http_lua_ffi_guard_arm(void);
static void ngx_http_lua_ffi_guard_handler(ngx_event_t *ev);
static void ngx_http_lua_ffi_guard_check(ngx_http_lua_ffi_library_t *lib);
static void ngx_http_lua_ffi_guard_done(void *data, ngx_int_t status,
    u_char *body, size_t len, u_char *msg);


static ngx_event_t       ngx_http_lua_ffi_guard_ev;
/* what a debug log's "event timer add: FD" reads through ev->data */
static ngx_connection_t  ngx_http_lua_ffi_guard_conn;


/* ---- the admin's entry points ---- */


ngx_int_t
ngx_http_lua_ffi_canary_start(ngx_str_t *name, ngx_uint_t percent,
    ngx_str_t *key, ngx_http_lua_ffi_reload_done_pt done, void *data)
{
    ngx_http_lua_ffi_canary_req_t  cr;

    ngx_memzero(&cr, sizeof(cr));
    cr.kind = NGX_HTTP_LUA_FFI_OP_CANARY;
    cr.percent = percent;

    if (key && key->len) {
        /* ngx_http_get_variable() takes the name in lowercase */
        ngx_strlow(cr.key, key->data,
                   ngx_min(key->len, NGX_HTTP_LUA_FFI_KEYLEN - 1));
    }

    return ngx_http_lua_ffi_reload_op(name, 0, &cr, done, data);
}


ngx_int_t
ngx_http_lua_ffi_canary_promote(ngx_str_t *name,
    ngx_http_lua_ffi_reload_done_pt done, void *data)
{
    ngx_http_lua_ffi_canary_req_t  cr;

    ngx_memzero(&cr, sizeof(cr));
    cr.kind = NGX_HTTP_LUA_FFI_OP_PROMOTE;

    return ngx_http_lua_ffi_reload_op(name, 0, &cr, done, data);
}


/*
 * POST /ffi/rollback while a canary runs: the canary goes, the current
 * version serves alone. 409 "no canary running" otherwise (a rollback to
 * an earlier version is history's, not ours).
 */

ngx_int_t
ngx_http_lua_ffi_canary_retire(ngx_str_t *name,
    ngx_http_lua_ffi_reload_done_pt done, void *data)
{
    ngx_http_lua_ffi_canary_req_t  cr;

    ngx_memzero(&cr, sizeof(cr));
    cr.kind = NGX_HTTP_LUA_FFI_OP_RETIRE;

    return ngx_http_lua_ffi_reload_op(name, 0, &cr, done, data);
}


/* ---- the coordinator ---- */


/* Whether the operation may go on: one canary at a time, none to end. */

ngx_int_t
ngx_http_lua_ffi_canary_check_locked(ngx_http_lua_ffi_shm_lib_t *sl,
    ngx_http_lua_ffi_op_kind_e kind, u_char *err, size_t errlen)
{
    switch (kind) {

    case NGX_HTTP_LUA_FFI_OP_PROMOTE:
    case NGX_HTTP_LUA_FFI_OP_RETIRE:
        if (sl->canary.version == 0) {
            ngx_cpystrn(err, (u_char *) "no canary running", errlen);
            return NGX_DECLINED;
        }

        return NGX_OK;

    default:
        if (sl->canary.version) {
            ngx_snprintf(err, errlen, "a canary of version %ui runs: "
                         "promote it or roll it back first%Z",
                         sl->canary.version);
            return NGX_DECLINED;
        }

        return NGX_OK;
    }
}


/* COMMIT: what every worker converges on from now on. */

void
ngx_http_lua_ffi_canary_commit_locked(ngx_http_lua_ffi_shm_lib_t *sl,
    ngx_http_lua_ffi_canary_req_t *cr, ngx_http_lua_ffi_version_t *v)
{
    switch (cr->kind) {

    case NGX_HTTP_LUA_FFI_OP_CANARY:
        sl->canary = *v;
        sl->canary_pct = cr->percent;
        ngx_memcpy(sl->canary_key, cr->key, NGX_HTTP_LUA_FFI_KEYLEN);
        sl->canary_since = ngx_time();

        /* the guard's first window: the old version's record so far */
        sl->guard_start = sl->canary_since;
        ngx_memzero(sl->guard_base, sizeof(sl->guard_base));
        sl->guard_pid = 0;
        return;

    case NGX_HTTP_LUA_FFI_OP_PROMOTE:
        sl->current = sl->canary;
        sl->reloads++;
        sl->last_reload = ngx_time();
        sl->last_error[0] = '\0';
        break;

    default:
        break;
    }

    sl->canary.version = 0;
    sl->canary_pct = 0;
    sl->canary_key[0] = '\0';
    sl->guard_pid = 0;
}


/*
 * Every worker confirmed (or the deadline passed: confirmed = 0, and the
 * shadow copies stay, as workers that did not confirm may still map
 * them). Logged and counted once, here.
 */

void
ngx_http_lua_ffi_canary_done(ngx_http_lua_ffi_shm_lib_t *sl,
    ngx_http_lua_ffi_canary_req_t *cr, ngx_http_lua_ffi_version_t *v,
    ngx_http_lua_ffi_version_t *old, ngx_str_t *name, ngx_uint_t confirmed)
{
    ngx_int_t  end;

    switch (cr->kind) {

    case NGX_HTTP_LUA_FFI_OP_CANARY:
        ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                      "ffi: \"%V\" canary: version %ui serves %ui%% of "
                      "calls%s%s%s beside version %ui", name, v->version,
                      cr->percent, cr->key[0] ? " (by $" : "",
                      cr->key[0] ? (char *) cr->key : "",
                      cr->key[0] ? ")" : "", old->version);
        ngx_http_lua_ffi_metrics_canary(sl->path, sl->names[0], v->version,
                                        cr->percent, -1);
        return;

    case NGX_HTTP_LUA_FFI_OP_PROMOTE:
        if (confirmed && ngx_strcmp(old->shadow, v->shadow) != 0) {
            /* kept while the history has the old version, for rollback */
            ngx_http_lua_ffi_history_release(sl - ngx_http_lua_ffi_shm->libs,
                                             old);
        }

        ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                      "ffi: \"%V\" canary version %ui promoted: it serves "
                      "alone, version %ui drains", name, v->version,
                      old->version);
        ngx_http_lua_ffi_metrics_reload(sl->path, sl->names[0],
                                        NGX_HTTP_LUA_FFI_RELOAD_OK,
                                        v->version);
        end = NGX_HTTP_LUA_FFI_CANARY_PROMOTED;
        break;

    default:
        if (confirmed && ngx_strcmp(old->shadow, v->shadow) != 0) {
            ngx_http_lua_ffi_shadow_remove(v);
        }

        ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                      "ffi: \"%V\" canary version %ui retired%s: version "
                      "%ui serves alone", name, v->version,
                      cr->guard ? " by ffi_canary_guard" : "", old->version);
        end = cr->guard ? NGX_HTTP_LUA_FFI_CANARY_GUARD
                        : NGX_HTTP_LUA_FFI_CANARY_ROLLED_BACK;
        break;
    }

    ngx_http_lua_ffi_metrics_canary(sl->path, sl->names[0], 0, 0, end);
}


/* ---- every worker ---- */


/*
 * One library here against a snapshot of its shared entry: a canary
 * committed adopts the runtimes prepared for it; a running one gets a
 * runtime beside every handle's (new handles, new workers after nginx -s
 * reload, a respawned worker); an ended one is promoted (its runtimes
 * become the prepared ones, which reconcile commits at once) or retired
 * (its runtimes drain, its image goes). NGX_ERROR: some handle has no
 * canary runtime, its calls all go to the current version; err says why.
 */

ngx_int_t
ngx_http_lua_ffi_canary_converge(ngx_http_lua_ffi_library_t *lib,
    ngx_http_lua_ffi_shm_lib_t *snap, u_char *err, size_t errlen)
{
    int                          n;
    size_t                       klen;
    ngx_int_t                    rc;
    ngx_uint_t                   hash;
    ngx_queue_t                 *q;
    ngx_http_lua_ffi_image_t    *img;
    ngx_http_lua_ffi_handle_t   *h;
    ngx_http_lua_ffi_version_t  *can = &snap->canary;

    if (can->version == 0) {
        if (lib->canary == NULL) {
            return NGX_OK;
        }

        if (lib->canary_version != snap->current.version) {
            ngx_http_lua_ffi_canary_leave(lib);
            return NGX_OK;
        }

        if (ngx_queue_empty(&lib->handles)) {
            /* nothing runs here: the next load maps the current version */
            ngx_http_lua_ffi_canary_leave(lib);
            return NGX_OK;
        }

        /* promoted: the canary's runtimes are what a reload prepares */
        if (lib->next) {
            ngx_http_lua_ffi_registry_abort(lib);
        }

        lib->next = lib->canary;
        lib->next_version = lib->canary_version;
        lib->canary = NULL;
        lib->canary_version = 0;

        for (q = ngx_queue_head(&lib->handles);
             q != ngx_queue_sentinel(&lib->handles);
             q = ngx_queue_next(q))
        {
            h = ngx_queue_data(q, ngx_http_lua_ffi_handle_t, link);
            h->next = h->canary;
            h->canary = NULL;
        }

        return NGX_OK;
    }

    if (lib->canary && lib->canary_version != can->version) {
        ngx_http_lua_ffi_canary_leave(lib);
    }

    if (lib->canary == NULL && lib->next
        && ngx_http_lua_ffi_registry_prepared(lib) == can->version)
    {
        /* committed as a canary: what was prepared serves a share */
        lib->canary = lib->next;
        lib->next = NULL;
        lib->canary_version = can->version;

        for (q = ngx_queue_head(&lib->handles);
             q != ngx_queue_sentinel(&lib->handles);
             q = ngx_queue_next(q))
        {
            h = ngx_queue_data(q, ngx_http_lua_ffi_handle_t, link);
            h->canary = h->next;
            h->next = NULL;
        }
    }

    if (ngx_queue_empty(&lib->handles)) {
        return NGX_OK;
    }

    if (lib->canary == NULL) {
        img = lib->current;

        if (img == NULL || img->hash != can->hash) {
            img = ngx_http_lua_ffi_image_open(lib, can, err, errlen);
            if (img == NULL) {
                ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                              "ffi: \"%V\": cannot map canary version %ui: "
                              "%s", &lib->path, can->version, err);
                return NGX_ERROR;
            }

            img->pinned = (can->pin_reason != NGX_HTTP_LUA_FFI_PIN_NONE);
        }

        /* the library's own reference, as a prepare takes it */
        img->refcount++;
        lib->canary = img;
        lib->canary_version = can->version;
    }

    lib->canary->state = NGX_HTTP_LUA_FFI_IMG_SERVING;
    lib->canary_pct = snap->canary_pct;
    klen = ngx_strlen(snap->canary_key);
    ngx_memcpy(lib->canary_key, snap->canary_key, klen + 1);
    hash = ngx_hash_key(lib->canary_key, klen);

    rc = NGX_OK;

    for (q = ngx_queue_head(&lib->handles);
         q != ngx_queue_sentinel(&lib->handles);
         q = ngx_queue_next(q))
    {
        h = ngx_queue_data(q, ngx_http_lua_ffi_handle_t, link);

        if (h->runtime == NULL) {
            continue;
        }

        if (h->canary == NULL) {
            h->canary = ngx_http_lua_ffi_runtime_start(lib->canary,
                                                       can->version, &h->cfg,
                                                       h->has_cfg,
                                                       h->max_queue, &n, err,
                                                       errlen);
            if (h->canary == NULL) {
                ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                              "ffi: a runtime of \"%V\" gets no canary, its "
                              "calls stay on version %ui: %s", &lib->path,
                              h->runtime->generation, err);
                rc = NGX_ERROR;
                continue;
            }
        }

        h->canary_pct = lib->canary_pct;
        h->canary_key.data = lib->canary_key;
        h->canary_key.len = klen;
        h->canary_hash = hash;
    }

    ngx_http_lua_ffi_guard_arm();

    return rc;
}


/* The canary ended otherwise than promoted: its runtimes here drain. */

static void
ngx_http_lua_ffi_canary_leave(ngx_http_lua_ffi_library_t *lib)
{
    ngx_http_lua_ffi_image_t  *img;

    img = lib->canary;
    lib->canary = NULL;
    lib->canary_version = 0;

    ngx_http_lua_ffi_registry_drop_side(lib,
                                        offsetof(ngx_http_lua_ffi_handle_t,
                                                 canary),
                                        img);
}


/* A handle created while a canary runs gets its canary runtime at once. */

void
ngx_http_lua_ffi_canary_load(ngx_http_lua_ffi_library_t *lib)
{
    ngx_int_t                    i;
    ngx_http_lua_ffi_shm_lib_t   snap;
    u_char                       err[NGX_HTTP_LUA_FFI_ERRLEN];

    if (ngx_http_lua_ffi_shm == NULL) {
        return;
    }

    ngx_shmtx_lock(&ngx_http_lua_ffi_shpool->mutex);

    i = ngx_http_lua_ffi_shm_find_path(&lib->path);

    if (i == NGX_ERROR || ngx_http_lua_ffi_shm->libs[i].canary.version == 0)
    {
        ngx_shmtx_unlock(&ngx_http_lua_ffi_shpool->mutex);
        return;
    }

    ngx_memcpy(&snap, &ngx_http_lua_ffi_shm->libs[i], sizeof(snap));

    ngx_shmtx_unlock(&ngx_http_lua_ffi_shpool->mutex);

    (void) ngx_http_lua_ffi_canary_converge(lib, &snap, err, sizeof(err));
}


/* since: when it started (the shared zone's view), 0: not shown */

static u_char *
ngx_http_lua_ffi_canary_json(u_char *p, u_char *last, ngx_uint_t version,
    ngx_uint_t pct, u_char *key, time_t since)
{
    if (version == 0) {
        return ngx_slprintf(p, last, "null");
    }

    p = ngx_slprintf(p, last, "{\"version\":%ui,\"percent\":%ui,\"key\":",
                     version, pct);

    if (key[0]) {
        p = ngx_http_lua_ffi_json_str(p, last, key, ngx_strlen(key));

    } else {
        p = ngx_slprintf(p, last, "null");
    }

    if (since) {
        p = ngx_slprintf(p, last, ",\"since\":%T", since);
    }

    return ngx_slprintf(p, last, "}");
}


/* This worker's canary of lib, for its entry in /ffi/status. */

u_char *
ngx_http_lua_ffi_canary_status(u_char *p, u_char *last,
    ngx_http_lua_ffi_library_t *lib)
{
    return ngx_http_lua_ffi_canary_json(p, last,
                                        lib->canary ? lib->canary_version : 0,
                                        lib->canary_pct, lib->canary_key, 0);
}


/* The shared zone's, for the library's entry (the caller holds the lock). */

u_char *
ngx_http_lua_ffi_canary_status_shm(u_char *p, u_char *last,
    ngx_http_lua_ffi_shm_lib_t *sl)
{
    return ngx_http_lua_ffi_canary_json(p, last, sl->canary.version,
                                        sl->canary_pct, sl->canary_key,
                                        sl->canary_since);
}


/*
 * The canary of the library at path as the shared zone has it (0: none),
 * for ffi_canary_version and ffi_canary_percent: the coordinator that
 * ended it may have died before it could say so in the metrics zone.
 */

void
ngx_http_lua_ffi_canary_now(u_char *path, ngx_uint_t *version,
    ngx_uint_t *percent)
{
    ngx_int_t   i;
    ngx_str_t   p;

    *version = 0;
    *percent = 0;

    if (ngx_http_lua_ffi_shm == NULL) {
        return;
    }

    p.data = path;
    p.len = ngx_strlen(path);

    ngx_shmtx_lock(&ngx_http_lua_ffi_shpool->mutex);

    i = ngx_http_lua_ffi_shm_find_path(&p);

    if (i != NGX_ERROR) {
        *version = ngx_http_lua_ffi_shm->libs[i].canary.version;
        *percent = ngx_http_lua_ffi_shm->libs[i].canary_pct;
    }

    ngx_shmtx_unlock(&ngx_http_lua_ffi_shpool->mutex);
}


/* ---- ffi_canary_guard ---- */


/*
 * Once a second while a canary runs here (a timer of its own; nothing on
 * the call path): every worker looks, the first that finds the canary
 * failing starts its retirement, once.
 */

static void
ngx_http_lua_ffi_guard_arm(void)
{
    if (!ngx_http_lua_ffi_fmcf->guard || ngx_exiting
        || ngx_http_lua_ffi_guard_ev.timer_set)
    {
        return;
    }

    ngx_http_lua_ffi_guard_conn.fd = (ngx_socket_t) -1;
    ngx_http_lua_ffi_guard_ev.data = &ngx_http_lua_ffi_guard_conn;
    ngx_http_lua_ffi_guard_ev.handler = ngx_http_lua_ffi_guard_handler;
    ngx_http_lua_ffi_guard_ev.log = ngx_cycle->log;
    ngx_http_lua_ffi_guard_ev.cancelable = 1;

    ngx_add_timer(&ngx_http_lua_ffi_guard_ev, NGX_HTTP_LUA_FFI_GUARD_MSEC);
}


static void
ngx_http_lua_ffi_guard_handler(ngx_event_t *ev)
{
    ngx_uint_t                   running;
    ngx_queue_t                 *q;
    ngx_http_lua_ffi_library_t  *lib;

    running = 0;

    for (q = ngx_queue_head(&ngx_http_lua_ffi_worker.libraries);
         q != ngx_queue_sentinel(&ngx_http_lua_ffi_worker.libraries);
         q = ngx_queue_next(q))
    {
        lib = ngx_queue_data(q, ngx_http_lua_ffi_library_t, link);

        if (lib->canary) {
            running = 1;
            ngx_http_lua_ffi_guard_check(lib);
        }
    }

    if (running) {
        ngx_http_lua_ffi_guard_arm();
    }
}


/*
 * The failure ratio ((rc != 0) + timeouts over answers) of the canary
 * and of the current version, over the window, from the metrics zone
 * (every worker's answers). Windows follow each other (a new one starts
 * when one is over); the first starts with the canary and compares with
 * everything the current version answered so far.
 */

static void
ngx_http_lua_ffi_guard_check(ngx_http_lua_ffi_library_t *lib)
{
    double                        rn, ro;
    time_t                        now, window;
    uint64_t                      na, nb, oa, ob, dn, dbad, dold, dob;
    ngx_int_t                     i;
    ngx_uint_t                    old, fire;
    ngx_http_lua_ffi_shm_lib_t   *sl;
    ngx_http_lua_ffi_guard_op_t  *g;
    ngx_http_lua_ffi_canary_req_t cr;
    ngx_str_t                     name;
    u_char                        name_buf[NGX_HTTP_LUA_FFI_NAMELEN];

    ngx_shmtx_lock(&ngx_http_lua_ffi_shpool->mutex);
    i = ngx_http_lua_ffi_shm_find_path(&lib->path);
    old = (i == NGX_ERROR) ? 0 : ngx_http_lua_ffi_shm->libs[i].current.version;
    ngx_shmtx_unlock(&ngx_http_lua_ffi_shpool->mutex);

    if (i == NGX_ERROR) {
        return;
    }

    /*
     * Series are labelled by the image's version (a runtime restart keeps
     * it). The metrics zone has a lock of its own: never both at once.
     */
    ngx_http_lua_ffi_metrics_answers(lib->path.data, lib->canary->version,
                                     &na, &nb);
    ngx_http_lua_ffi_metrics_answers(lib->path.data,
                                     lib->current ? lib->current->version
                                                  : old, &oa, &ob);

    now = ngx_time();
    window = ngx_max(ngx_http_lua_ffi_fmcf->guard_window / 1000, 1);
    fire = 0;
    rn = 0;
    ro = 0;
    dn = 0;
    dold = 0;

    ngx_shmtx_lock(&ngx_http_lua_ffi_shpool->mutex);

    sl = &ngx_http_lua_ffi_shm->libs[i];

    if (sl->canary.version != lib->canary_version
        || sl->current.version != old)
    {
        ngx_shmtx_unlock(&ngx_http_lua_ffi_shpool->mutex);
        return;
    }

    /*
     * Counts below the window's start: a full metrics table moved this
     * version's oldest series to "retired", or another worker started the
     * window from a newer reading. No difference to judge (it would wrap
     * around): a new window starts.
     */
    if (now - sl->guard_start >= window
        || oa < sl->guard_base[0] || ob < sl->guard_base[1]
        || na < sl->guard_base[2] || nb < sl->guard_base[3])
    {
        sl->guard_start = now;
        sl->guard_base[0] = oa;
        sl->guard_base[1] = ob;
        sl->guard_base[2] = na;
        sl->guard_base[3] = nb;
        ngx_shmtx_unlock(&ngx_http_lua_ffi_shpool->mutex);
        return;
    }

    dold = oa - sl->guard_base[0];
    dob = ob - sl->guard_base[1];
    dn = na - sl->guard_base[2];
    dbad = nb - sl->guard_base[3];

    if (dn >= ngx_http_lua_ffi_fmcf->guard_min_calls && dn > 0) {
        rn = (double) dbad / dn;
        ro = dold ? (double) dob / dold : 0;

        if (rn - ro > ngx_http_lua_ffi_fmcf->guard_margin
            && !ngx_http_lua_ffi_shm_alive(sl->guard_pid))
        {
            sl->guard_pid = ngx_pid;
            fire = 1;
        }
    }

    ngx_shmtx_unlock(&ngx_http_lua_ffi_shpool->mutex);

    if (!fire) {
        return;
    }

    g = ngx_alloc(sizeof(ngx_http_lua_ffi_guard_op_t) + lib->path.len,
                  ngx_cycle->log);
    if (g == NULL) {
        return;
    }

    g->path.data = g->buf;
    g->path.len = lib->path.len;
    ngx_memcpy(g->buf, lib->path.data, lib->path.len + 1);
    g->version = lib->canary_version;

    ngx_snprintf(g->why, NGX_HTTP_LUA_FFI_ERRLEN, "it failed %.1f%% of %uL "
                 "calls, version %ui %.1f%% of %uL (ffi_canary_guard margin "
                 "%.3f)%Z", rn * 100, dn, old, ro * 100, dold,
                 ngx_http_lua_ffi_fmcf->guard_margin);

    ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                  "ffi: canary version %ui of \"%V\" fails, rolling it "
                  "back: %s",
                  g->version, &g->path, g->why);

    ngx_memzero(&cr, sizeof(cr));
    cr.kind = NGX_HTTP_LUA_FFI_OP_RETIRE;
    cr.guard = 1;

    name.len = ngx_min(lib->names[0].len, NGX_HTTP_LUA_FFI_NAMELEN);
    name.data = ngx_cpymem(name_buf, lib->names[0].data, name.len) - name.len;

    if (ngx_http_lua_ffi_reload_op(&name, 0, &cr, ngx_http_lua_ffi_guard_done,
                                   g)
        != NGX_OK)
    {
        ngx_http_lua_ffi_guard_done(g, NGX_HTTP_INTERNAL_SERVER_ERROR, NULL,
                                    0, (u_char *) "no memory");
    }
}


static void
ngx_http_lua_ffi_guard_done(void *data, ngx_int_t status, u_char *body,
    size_t len, u_char *msg)
{
    ngx_int_t                     i;
    ngx_http_lua_ffi_guard_op_t  *g = data;

    if (status == NGX_HTTP_OK || status == NGX_HTTP_ACCEPTED) {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "ffi: canary version %ui of \"%V\" rolled back: %s",
                      g->version, &g->path, g->why);
        ngx_free(g);
        return;
    }

    if (status == NGX_HTTP_CONFLICT) {
        /* promoted or rolled back by the admin meanwhile */
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "ffi: canary version %ui of \"%V\" ended otherwise "
                      "before the guard rolled it back: %s", g->version,
                      &g->path, g->why);
        ngx_free(g);
        return;
    }

    ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                  "ffi: canary version %ui of \"%V\" could not be rolled "
                  "back (%i: %s), the guard tries again: %s", g->version,
                  &g->path, status, msg ? msg : (u_char *) "", g->why);

    ngx_shmtx_lock(&ngx_http_lua_ffi_shpool->mutex);

    i = ngx_http_lua_ffi_shm_find_path(&g->path);

    if (i != NGX_ERROR && ngx_http_lua_ffi_shm->libs[i].guard_pid == ngx_pid)
    {
        ngx_http_lua_ffi_shm->libs[i].guard_pid = 0;
    }

    ngx_shmtx_unlock(&ngx_http_lua_ffi_shpool->mutex);

    ngx_free(g);
}


/* ffi_canary_guard margin=F min_calls=N window=TIME | off */

char *
ngx_http_lua_ffi_canary_guard_conf(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_lua_ffi_main_conf_t  *fmcf = conf;

    ngx_int_t    n;
    ngx_str_t   *value, v;
    ngx_uint_t   i;
    ngx_msec_t   ms;

    value = cf->args->elts;

    if (fmcf->guard != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    if (cf->args->nelts == 2 && ngx_strcmp(value[1].data, "off") == 0) {
        fmcf->guard = 0;
        return NGX_CONF_OK;
    }

    fmcf->guard = 1;
    fmcf->guard_margin = 0.1;
    fmcf->guard_min_calls = 100;
    fmcf->guard_window = 60000;

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "margin=", 7) == 0) {
            v.data = value[i].data + 7;
            v.len = value[i].len - 7;

            /* a ratio, three decimals: 0.2 */
            n = ngx_atofp(v.data, v.len, 3);
            if (n == NGX_ERROR || n > 1000) {
                goto invalid;
            }

            fmcf->guard_margin = (double) n / 1000;
            continue;
        }

        if (ngx_strncmp(value[i].data, "min_calls=", 10) == 0) {
            n = ngx_atoi(value[i].data + 10, value[i].len - 10);
            if (n == NGX_ERROR || n == 0) {
                goto invalid;
            }

            fmcf->guard_min_calls = n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "window=", 7) == 0) {
            v.data = value[i].data + 7;
            v.len = value[i].len - 7;

            ms = ngx_parse_time(&v, 0);
            if (ms == (ngx_msec_t) NGX_ERROR || ms < 1000) {
                goto invalid;
            }

            fmcf->guard_window = ms;
            continue;
        }

        goto invalid;
    }

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid parameter \"%V\": "
                       "ffi_canary_guard takes margin=RATIO (0-1), "
                       "min_calls=N (> 0) and window=TIME (>= 1s), or off",
                       &value[i]);

    return NGX_CONF_ERROR;
}
