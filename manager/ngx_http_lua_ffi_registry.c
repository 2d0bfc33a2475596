/*
 * The per-worker registry: libraries, their images, the runtimes started
 * on them and the handles Lua holds; retiring and draining runtimes.
 */

#include "ngx_http_lua_ffi_manager.h"
#include "ngx_http_lua_ffi_metrics.h"
#include "ngx_http_lua_ffi_canary.h"


static void ngx_http_lua_ffi_runtime_check(ngx_http_lua_ffi_runtime_t *rt);
static void ngx_http_lua_ffi_runtime_reap(ngx_event_t *ev);
static void ngx_http_lua_ffi_image_drop(ngx_http_lua_ffi_image_t *img);
static void ngx_http_lua_ffi_registry_twin(ngx_http_lua_ffi_library_t *lib,
    ngx_http_lua_ffi_handle_t *h);


static ngx_uint_t
ngx_http_lua_ffi_str_eq(ngx_str_t *a, ngx_str_t *b)
{
    return a->len == b->len && ngx_memcmp(a->data, b->data, a->len) == 0;
}


static ngx_int_t
ngx_http_lua_ffi_str_dup(ngx_str_t *dst, ngx_str_t *src)
{
    dst->len = src->len;
    dst->data = ngx_alloc(src->len + 1, ngx_cycle->log);

    if (dst->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(dst->data, src->data, src->len);
    dst->data[src->len] = '\0';

    return NGX_OK;
}


ngx_http_lua_ffi_library_t *
ngx_http_lua_ffi_registry_library(ngx_str_t *path)
{
    ngx_queue_t                 *q;
    ngx_http_lua_ffi_library_t  *lib;

    for (q = ngx_queue_head(&ngx_http_lua_ffi_worker.libraries);
         q != ngx_queue_sentinel(&ngx_http_lua_ffi_worker.libraries);
         q = ngx_queue_next(q))
    {
        lib = ngx_queue_data(q, ngx_http_lua_ffi_library_t, link);

        if (ngx_http_lua_ffi_str_eq(&lib->path, path)) {
            return lib;
        }
    }

    return NULL;
}


/* NAME as the admin endpoint gives it: any name Lua loaded it with. */

ngx_http_lua_ffi_library_t *
ngx_http_lua_ffi_registry_find(ngx_str_t *name)
{
    ngx_uint_t                   i;
    ngx_queue_t                 *q;
    ngx_http_lua_ffi_library_t  *lib;

    for (q = ngx_queue_head(&ngx_http_lua_ffi_worker.libraries);
         q != ngx_queue_sentinel(&ngx_http_lua_ffi_worker.libraries);
         q = ngx_queue_next(q))
    {
        lib = ngx_queue_data(q, ngx_http_lua_ffi_library_t, link);

        for (i = 0; i < lib->nnames; i++) {
            if (ngx_http_lua_ffi_str_eq(&lib->names[i], name)) {
                return lib;
            }
        }
    }

    return NULL;
}


static ngx_http_lua_ffi_handle_t *
ngx_http_lua_ffi_handle_find(ngx_str_t *name, ngx_str_t *cfg,
    ngx_uint_t has_cfg)
{
    ngx_queue_t                 *q, *hq;
    ngx_http_lua_ffi_handle_t   *h;
    ngx_http_lua_ffi_library_t  *lib;

    for (q = ngx_queue_head(&ngx_http_lua_ffi_worker.libraries);
         q != ngx_queue_sentinel(&ngx_http_lua_ffi_worker.libraries);
         q = ngx_queue_next(q))
    {
        lib = ngx_queue_data(q, ngx_http_lua_ffi_library_t, link);

        for (hq = ngx_queue_head(&lib->handles);
             hq != ngx_queue_sentinel(&lib->handles);
             hq = ngx_queue_next(hq))
        {
            h = ngx_queue_data(hq, ngx_http_lua_ffi_handle_t, link);

            if (h->has_cfg == has_cfg
                && ngx_http_lua_ffi_str_eq(&h->lib, name)
                && ngx_http_lua_ffi_str_eq(&h->cfg, cfg))
            {
                return h;
            }
        }
    }

    return NULL;
}


static ngx_http_lua_ffi_library_t *
ngx_http_lua_ffi_library_get(ngx_str_t *path, ngx_str_t *name,
    ngx_uint_t flags)
{
    ngx_uint_t                   i;
    ngx_http_lua_ffi_library_t  *lib;

    lib = ngx_http_lua_ffi_registry_library(path);

    if (lib == NULL) {
        lib = ngx_calloc(sizeof(ngx_http_lua_ffi_library_t), ngx_cycle->log);
        if (lib == NULL) {
            return NULL;
        }

        if (ngx_http_lua_ffi_str_dup(&lib->path, path) != NGX_OK) {
            ngx_free(lib);
            return NULL;
        }

        ngx_queue_init(&lib->images);
        ngx_queue_init(&lib->handles);
        lib->shm_index = -1;

        /* the first load decides how the file is mapped */
        lib->is_global = (flags & NGX_HTTP_LUA_FFI_LOAD_GLOBAL) ? 1 : 0;
        lib->unpin = (flags & NGX_HTTP_LUA_FFI_LOAD_UNPIN) ? 1 : 0;

        ngx_queue_insert_tail(&ngx_http_lua_ffi_worker.libraries, &lib->link);
        lib->fresh = 1;
    }

    for (i = 0; i < lib->nnames; i++) {
        if (ngx_http_lua_ffi_str_eq(&lib->names[i], name)) {
            return lib;
        }
    }

    if (lib->nnames < NGX_HTTP_LUA_FFI_MAX_NAMES
        && ngx_http_lua_ffi_str_dup(&lib->names[lib->nnames], name) == NGX_OK)
    {
        lib->nnames++;
    }

    return lib;
}


/*
 * ngx.load_ffi(): the live handle of (name, cfg) if there is one, else a
 * new runtime on the library's current version, mapping it if needed.
 */

ngx_http_lua_ffi_handle_t *
ngx_http_lua_ffi_registry_load(ngx_str_t *name, ngx_str_t *cfg,
    ngx_uint_t max_queue, ngx_uint_t flags, ngx_msec_t timeout, int *rc,
    u_char *err, size_t errlen)
{
    ngx_str_t                    path;
    ngx_http_lua_ffi_image_t    *img;
    ngx_http_lua_ffi_handle_t   *h;
    ngx_http_lua_ffi_runtime_t  *rt;
    ngx_http_lua_ffi_library_t  *lib;
    ngx_http_lua_ffi_version_t   v;
    ngx_uint_t                   has_cfg;

    *rc = 0;

    if (!ngx_http_lua_ffi_worker.ready) {
        ngx_snprintf(err, errlen, "ngx.load_ffi cannot run in the master "
                     "process (init_by_lua*): a runtime's threads would not "
                     "survive fork(); load it in init_worker_by_lua* or "
                     "later%Z");
        return NULL;
    }

    has_cfg = (cfg->data != NULL);

    h = ngx_http_lua_ffi_handle_find(name, cfg, has_cfg);
    if (h) {
        return h;
    }

    /* the library as this worker converged on the shared zone, not before */
    ngx_http_lua_ffi_reload_catch_up();

    if (ngx_http_lua_ffi_library_resolve(name, &path, err, errlen) != NGX_OK) {
        return NULL;
    }

    lib = ngx_http_lua_ffi_library_get(&path, name, flags);
    if (lib == NULL) {
        ngx_snprintf(err, errlen, "no memory%Z");
        return NULL;
    }

    if (ngx_http_lua_ffi_shm_current(&lib->path, name, cfg, flags, &v, err,
                                     errlen)
        != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0, "ffi: %s", err);
        return NULL;
    }

    if (lib->fresh) {
        lib->fresh = 0;
        ngx_http_lua_ffi_watch_library(lib);
    }

    img = lib->current;

    if (img && img->version != v.version && img->hash != v.hash) {
        /* replaced while this worker had no runtime on it */
        lib->current = NULL;
        ngx_http_lua_ffi_image_drop(img);
        img = NULL;
    }

    if (img == NULL) {
        img = ngx_http_lua_ffi_image_open(lib, &v, err, errlen);
        if (img == NULL) {
            ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0, "ffi: %s", err);
            return NULL;
        }

        img->state = NGX_HTTP_LUA_FFI_IMG_SERVING;
        lib->current = img;
        lib->version = v.version;
    }

    h = ngx_calloc(sizeof(ngx_http_lua_ffi_handle_t) + name->len + cfg->len,
                   ngx_cycle->log);
    if (h == NULL) {
        ngx_snprintf(err, errlen, "no memory%Z");
        return NULL;
    }

    rt = ngx_http_lua_ffi_runtime_start(img, lib->version, cfg, has_cfg,
                                        max_queue, rc, err, errlen);
    if (rt == NULL) {
        ngx_free(h);
        return NULL;
    }

    h->library = lib;
    h->runtime = rt;
    h->lib.data = (u_char *) &h[1];
    h->lib.len = name->len;
    ngx_memcpy(h->lib.data, name->data, name->len);
    h->cfg.data = h->lib.data + name->len;
    h->cfg.len = cfg->len;
    ngx_memcpy(h->cfg.data, cfg->data, cfg->len);
    h->has_cfg = has_cfg;
    h->max_queue = max_queue;
    h->timeout = timeout;

    ngx_queue_insert_tail(&lib->handles, &h->link);

    /* a reload's trial runs every cfg any worker runs */
    ngx_http_lua_ffi_shm_add_cfg(&lib->path, cfg, has_cfg);

    if (lib->next) {
        /*
         * A reload was prepared here and is not committed yet: the new
         * runtime gets its twin on the prepared version now, so that the
         * commit switches it with the others.
         */
        ngx_http_lua_ffi_registry_twin(lib, h);
    }

    /* a canary runs: this runtime gets its share routed at once */
    ngx_http_lua_ffi_canary_load(lib);

    return h;
}


static void
ngx_http_lua_ffi_registry_twin(ngx_http_lua_ffi_library_t *lib,
    ngx_http_lua_ffi_handle_t *h)
{
    int          rc;
    ngx_uint_t   version;
    u_char       err[NGX_HTTP_LUA_FFI_ERRLEN];

    version = ngx_http_lua_ffi_registry_prepared(lib);

    h->next = ngx_http_lua_ffi_runtime_start(lib->next, version, &h->cfg,
                                             h->has_cfg, h->max_queue, &rc,
                                             err, sizeof(err));

    /* else the commit tries again, and says so if it fails */
}


/* generation: the version the runtime serves as, known to its log lines */

ngx_http_lua_ffi_runtime_t *
ngx_http_lua_ffi_runtime_start(ngx_http_lua_ffi_image_t *img,
    ngx_uint_t generation, ngx_str_t *cfg, ngx_uint_t has_cfg,
    ngx_uint_t max_queue, int *rc, u_char *err, size_t errlen)
{
    int                          n;
    char                        *c;
    sigset_t                     mask, old;
    ngx_http_lua_ffi_runtime_t  *rt;

    rt = ngx_calloc(sizeof(ngx_http_lua_ffi_runtime_t) + cfg->len + 1,
                    ngx_cycle->log);
    if (rt == NULL) {
        ngx_snprintf(err, errlen, "no memory%Z");
        return NULL;
    }

    if (ngx_http_lua_ffi_queue_init(&rt->queue, max_queue,
                                    ngx_http_lua_ffi_worker.queue_spin_us)
        != NGX_OK)
    {
        ngx_free(rt);
        ngx_snprintf(err, errlen, "cannot create a task queue%Z");
        return NULL;
    }

    rt->cfg.data = (u_char *) &rt[1];
    rt->cfg.len = cfg->len;
    ngx_memcpy(rt->cfg.data, cfg->data, cfg->len);
    rt->cfg.data[cfg->len] = '\0';
    rt->has_cfg = has_cfg;

    rt->image = img;
    img->refcount++;

    rt->drained.kind = NGX_HTTP_LUA_FFI_TASK_DRAINED;
    rt->drained.runtime = rt;
    rt->reaper.handler = ngx_http_lua_ffi_runtime_reap;
    rt->reaper.data = rt;
    rt->reaper.log = ngx_cycle->log;
    rt->reaper.cancelable = 1;
    rt->generation = generation;
    rt->started = ngx_current_msec;
    rt->state = NGX_HTTP_LUA_FFI_RT_STARTING;

    ngx_queue_insert_tail(&ngx_http_lua_ffi_worker.runtimes, &rt->link);
    rt->metrics = ngx_http_lua_ffi_metrics_attach(img, cfg, has_cfg);

    /* libffi_init may keep nothing of cfg: it gets a copy freed after */
    c = NULL;
    if (has_cfg) {
        c = malloc(cfg->len + 1);
        if (c == NULL) {
            ngx_snprintf(err, errlen, "no memory%Z");
            rt->init_failed = 1;
            ngx_http_lua_ffi_registry_retire(rt);
            return NULL;
        }

        ngx_memcpy(c, cfg->data, cfg->len);
        c[cfg->len] = '\0';
    }

    /*
     * Threads the library starts inherit this mask: like nginx's own thread
     * pools, they take no signal meant for the worker (SIGCHLD, SIGQUIT...)
     * and nginx's handlers only ever run on the event loop thread.
     */
    sigfillset(&mask);
    sigdelset(&mask, SIGSEGV);
    sigdelset(&mask, SIGBUS);
    sigdelset(&mask, SIGFPE);
    sigdelset(&mask, SIGILL);
    sigdelset(&mask, SIGABRT);
    sigdelset(&mask, SIGPROF);
    (void) pthread_sigmask(SIG_BLOCK, &mask, &old);

    /* and they run on the runtime's CPUs (ffi_runtime_cpus), not ours */
    ngx_http_lua_ffi_cpus_enter();

    n = img->init(c, rt);

    ngx_http_lua_ffi_cpus_leave();
    (void) pthread_sigmask(SIG_SETMASK, &old, NULL);

    ngx_http_lua_ffi_signal_guard(ngx_cycle->log, &img->library->path);

    free(c);

    if (n != 0) {
        *rc = n;
        ngx_snprintf(err, errlen, "libffi_init of \"%V\" returned %d%Z",
                     &img->library->path, n);
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0, "ffi: %s", err);
        rt->init_failed = 1;
        ngx_http_lua_ffi_registry_retire(rt);
        return NULL;
    }

    rt->state = NGX_HTTP_LUA_FFI_RT_SERVING;

    return rt;
}


/* Appends the NULL task; the runtime drains from now on. */

void
ngx_http_lua_ffi_registry_retire(ngx_http_lua_ffi_runtime_t *rt)
{
    ngx_http_lua_ffi_main_conf_t  *fmcf;

    if (rt->state >= NGX_HTTP_LUA_FFI_RT_DRAINING) {
        return;
    }

    rt->state = NGX_HTTP_LUA_FFI_RT_DRAINING;
    rt->drain_started = ngx_current_msec;

    ngx_http_lua_ffi_queue_close(&rt->queue);

    if (rt->init_failed && !ngx_http_lua_ffi_worker.exiting) {
        /*
         * A failed libffi_init started nothing that polls (or it breaks
         * the contract): nobody may ever take the NULL task.
         */
        fmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                                   ngx_http_lua_ffi_module);
        ngx_add_timer(&rt->reaper, fmcf->close_grace);
    }
}


void
ngx_http_lua_ffi_registry_drained(ngx_http_lua_ffi_runtime_t *rt)
{
    rt->null_taken = 1;
    ngx_http_lua_ffi_runtime_check(rt);
}


void
ngx_http_lua_ffi_registry_answered(ngx_http_lua_ffi_runtime_t *rt)
{
    if (rt->inflight == 0 && rt->null_taken) {
        ngx_http_lua_ffi_runtime_check(rt);
    }
}


static void
ngx_http_lua_ffi_runtime_check(ngx_http_lua_ffi_runtime_t *rt)
{
    ngx_http_lua_ffi_main_conf_t  *fmcf;

    if (!rt->null_taken || rt->inflight != 0
        || rt->state == NGX_HTTP_LUA_FFI_RT_DRAINED)
    {
        return;
    }

    rt->state = NGX_HTTP_LUA_FFI_RT_DRAINED;

    if (ngx_http_lua_ffi_worker.exiting) {
        return;
    }

    /* its threads may still be returning from our code into theirs */
    fmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_http_lua_ffi_module);

    if (rt->reaper.timer_set) {
        ngx_del_timer(&rt->reaper);
    }

    ngx_add_timer(&rt->reaper, fmcf->close_grace);
}


static void
ngx_http_lua_ffi_runtime_reap(ngx_event_t *ev)
{
    ngx_http_lua_ffi_runtime_t  *rt = ev->data;
    ngx_http_lua_ffi_image_t    *img;

    if (rt->state != NGX_HTTP_LUA_FFI_RT_DRAINED
        && !(rt->init_failed && rt->queue.sleepers == 0 && rt->inflight == 0))
    {
        return;
    }

    ngx_queue_remove(&rt->link);
    ngx_http_lua_ffi_queue_destroy(&rt->queue);

    img = rt->image;
    ngx_http_lua_ffi_metrics_detach(rt->metrics);
    ngx_free(rt);

    ngx_http_lua_ffi_image_unref(img);
}


static void
ngx_http_lua_ffi_image_drop(ngx_http_lua_ffi_image_t *img)
{
    if (img->refcount == 0) {
        img->refcount = 1;
        ngx_http_lua_ffi_image_unref(img);
    }
}


void
ngx_http_lua_ffi_registry_unload(ngx_http_lua_ffi_handle_t *h)
{
    if (h->unloaded) {
        return;
    }

    h->unloaded = 1;
    ngx_queue_remove(&h->link);

    if (ngx_queue_empty(&h->library->handles)) {
        /* this worker holds the library no more: its entry may go */
        ngx_http_lua_ffi_shm_release(&h->library->path);
    }

    if (h->next) {
        ngx_http_lua_ffi_registry_retire(h->next);
        h->next = NULL;
    }

    if (h->canary) {
        ngx_http_lua_ffi_registry_retire(h->canary);
        h->canary = NULL;
    }

    if (h->runtime) {
        ngx_http_lua_ffi_registry_retire(h->runtime);
        h->runtime = NULL;
    }

    if (h->lua_refs == 0) {
        ngx_free(h);
    }
}


void
ngx_http_lua_ffi_registry_release(ngx_http_lua_ffi_handle_t *h)
{
    if (h->lua_refs) {
        h->lua_refs--;
    }

    if (h->unloaded && h->lua_refs == 0) {
        ngx_free(h);
    }
}


/*
 * Reload, first half: a fresh runtime for every live handle of the
 * library, on the new image or (file unchanged) on the current one. None
 * of them serves before commit.
 */

ngx_int_t
ngx_http_lua_ffi_registry_prepare(ngx_http_lua_ffi_library_t *lib,
    ngx_http_lua_ffi_version_t *v, u_char *err, size_t errlen)
{
    int                          rc;
    ngx_queue_t                 *q;
    ngx_http_lua_ffi_image_t    *img;
    ngx_http_lua_ffi_handle_t   *h;

    if (lib->next) {
        /* left prepared by a coordinator that died: start over */
        ngx_http_lua_ffi_registry_abort(lib);
    }

    if (ngx_queue_empty(&lib->handles)) {
        return NGX_OK;
    }

    img = lib->current;

    if (img == NULL || img->hash != v->hash) {
        img = ngx_http_lua_ffi_image_open(lib, v, err, errlen);
        if (img == NULL) {
            return NGX_ERROR;
        }

        /* an image that never served goes as soon as it is unused */
        img->pinned = (v->pin_reason != NGX_HTTP_LUA_FFI_PIN_NONE);
    }

    /*
     * The library's own reference, the same image included (the same
     * bytes reloaded): its handles may all go before the commit, and
     * their runtimes with them, while lib->next must stay mapped.
     */
    img->refcount++;

    lib->next = img;
    lib->next_version = v->version;

    for (q = ngx_queue_head(&lib->handles);
         q != ngx_queue_sentinel(&lib->handles);
         q = ngx_queue_next(q))
    {
        h = ngx_queue_data(q, ngx_http_lua_ffi_handle_t, link);

        h->next = ngx_http_lua_ffi_runtime_start(img, v->version, &h->cfg,
                                                 h->has_cfg, h->max_queue,
                                                 &rc, err, errlen);
        if (h->next == NULL) {
            ngx_http_lua_ffi_registry_abort(lib);
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/*
 * A side of the library ends here (a prepared reload aborted, a canary
 * retired): each handle's runtime in that slot (offset in the handle)
 * retires, and the library gives back its reference on the side's image,
 * whichever image it is; one that does not serve any more drains.
 */

void
ngx_http_lua_ffi_registry_drop_side(ngx_http_lua_ffi_library_t *lib,
    size_t slot, ngx_http_lua_ffi_image_t *img)
{
    ngx_queue_t                  *q;
    ngx_http_lua_ffi_handle_t    *h;
    ngx_http_lua_ffi_runtime_t  **rt;

    for (q = ngx_queue_head(&lib->handles);
         q != ngx_queue_sentinel(&lib->handles);
         q = ngx_queue_next(q))
    {
        h = ngx_queue_data(q, ngx_http_lua_ffi_handle_t, link);
        rt = (ngx_http_lua_ffi_runtime_t **) ((u_char *) h + slot);

        if (*rt) {
            ngx_http_lua_ffi_registry_retire(*rt);
            *rt = NULL;
        }
    }

    if (img == NULL) {
        return;
    }

    if (img != lib->current) {
        img->state = NGX_HTTP_LUA_FFI_IMG_DRAINING;
    }

    ngx_http_lua_ffi_image_unref(img);
}


void
ngx_http_lua_ffi_registry_abort(ngx_http_lua_ffi_library_t *lib)
{
    ngx_http_lua_ffi_image_t  *img;

    img = lib->next;
    lib->next = NULL;

    ngx_http_lua_ffi_registry_drop_side(lib,
                                        offsetof(ngx_http_lua_ffi_handle_t,
                                                 next),
                                        img);
}


/* Whether some runtime here is not on version (a load made meanwhile). */

ngx_uint_t
ngx_http_lua_ffi_registry_behind(ngx_http_lua_ffi_library_t *lib,
    ngx_uint_t version)
{
    ngx_queue_t                *q;
    ngx_http_lua_ffi_handle_t  *h;

    if (lib->version != version) {
        return 1;
    }

    for (q = ngx_queue_head(&lib->handles);
         q != ngx_queue_sentinel(&lib->handles);
         q = ngx_queue_next(q))
    {
        h = ngx_queue_data(q, ngx_http_lua_ffi_handle_t, link);

        if (h->runtime && h->runtime->generation != version) {
            return 1;
        }
    }

    return 0;
}


/*
 * The version this worker prepared for, 0: none. The library's, not its
 * handles': they may all have gone (a handle per request, unloaded
 * between prepare and commit) while the image prepared is still held.
 */

ngx_uint_t
ngx_http_lua_ffi_registry_prepared(ngx_http_lua_ffi_library_t *lib)
{
    return lib->next ? lib->next_version : 0;
}


/*
 * Reload, second half, and convergence: every handle ends on version v,
 * through its prepared runtime if it has one, else through a runtime
 * started now (a handle created during the reload, or a worker that had
 * not prepared: one that started, loaded or lagged meanwhile). Old
 * runtimes drain. NGX_ERROR: some handle could not start on v and serves
 * on its old runtime, err says why.
 */

ngx_int_t
ngx_http_lua_ffi_registry_commit(ngx_http_lua_ffi_library_t *lib,
    ngx_http_lua_ffi_version_t *v, u_char *err, size_t errlen)
{
    int                          n;
    ngx_int_t                    rc;
    ngx_uint_t                   held;
    ngx_queue_t                 *q;
    ngx_http_lua_ffi_image_t    *img, *old;
    ngx_http_lua_ffi_handle_t   *h;
    ngx_http_lua_ffi_runtime_t  *prev;

    rc = NGX_OK;
    img = lib->next;
    lib->next = NULL;
    old = lib->current;

    /* a reference of the library's on img, given back at the end */
    held = (img != NULL);

    if (lib->version != v->version) {
        lib->reloads++;
    }

    lib->version = v->version;

    if (img == NULL && ngx_queue_empty(&lib->handles)) {
        /* no runtime here: the next load maps the new version */
        if (old && old->hash != v->hash) {
            lib->current = NULL;
            ngx_http_lua_ffi_image_drop(old);
        }

        return NGX_OK;
    }

    if (img == NULL) {
        if (old && old->hash == v->hash) {
            img = old;

        } else {
            img = ngx_http_lua_ffi_image_open(lib, v, err, errlen);
            if (img == NULL) {
                ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                              "ffi: cannot switch to version %ui: %s",
                              v->version, err);
                return NGX_ERROR;
            }

            img->pinned = (v->pin_reason != NGX_HTTP_LUA_FFI_PIN_NONE);
            img->refcount++;
            held = 1;
        }
    }

    for (q = ngx_queue_head(&lib->handles);
         q != ngx_queue_sentinel(&lib->handles);
         q = ngx_queue_next(q))
    {
        h = ngx_queue_data(q, ngx_http_lua_ffi_handle_t, link);

        if (h->next == NULL && h->runtime
            && h->runtime->generation != v->version)
        {
            h->next = ngx_http_lua_ffi_runtime_start(img, v->version,
                                                     &h->cfg, h->has_cfg,
                                                     h->max_queue, &n, err,
                                                     errlen);
            if (h->next == NULL) {
                ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                              "ffi: a runtime of \"%V\" stays on version "
                              "%ui: %s", &lib->path,
                              h->runtime->generation, err);
                rc = NGX_ERROR;
                continue;
            }
        }

        if (h->next == NULL) {
            continue;
        }

        prev = h->runtime;
        h->runtime = h->next;
        h->next = NULL;
        h->runtime->generation = v->version;

        if (prev) {
            ngx_http_lua_ffi_registry_retire(prev);
        }
    }

    img->state = NGX_HTTP_LUA_FFI_IMG_SERVING;

    if (img != old) {
        lib->current = img;
        img->pinned = !lib->unpin
                      || img->pin_reason != NGX_HTTP_LUA_FFI_PIN_NONE;

        if (old) {
            old->state = NGX_HTTP_LUA_FFI_IMG_DRAINING;
            ngx_http_lua_ffi_image_drop(old);
        }
    }

    /*
     * The reference prepare (or the open above) took on behalf of the
     * library: last, the image is the runtimes' now; with none (every
     * handle went meanwhile) an unpinned one is closed here.
     */
    if (held) {
        ngx_http_lua_ffi_image_unref(img);
    }

    return rc;
}


/*
 * Worker exit: every runtime gets its NULL task; a bounded wait for them
 * to drain (NULL taken, every call answered). Those that did not are
 * abandoned: their threads may be stuck in their code for good, so the
 * worker must leave without running it again (no library destructors).
 */

void
ngx_http_lua_ffi_registry_exit(ngx_cycle_t *cycle)
{
    ngx_msec_t                     deadline, now;
    ngx_uint_t                     pending, no_null;
    ngx_queue_t                   *q;
    ngx_http_lua_ffi_runtime_t    *rt;
    ngx_http_lua_ffi_main_conf_t  *fmcf;

    fmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_lua_ffi_module);

    for (q = ngx_queue_head(&ngx_http_lua_ffi_worker.runtimes);
         q != ngx_queue_sentinel(&ngx_http_lua_ffi_worker.runtimes);
         q = ngx_queue_next(q))
    {
        rt = ngx_queue_data(q, ngx_http_lua_ffi_runtime_t, link);
        ngx_http_lua_ffi_registry_retire(rt);
    }

    ngx_time_update();
    deadline = ngx_current_msec + fmcf->exit_timeout;

    for ( ;; ) {
        pending = 0;
        no_null = 0;

        for (q = ngx_queue_head(&ngx_http_lua_ffi_worker.runtimes);
             q != ngx_queue_sentinel(&ngx_http_lua_ffi_worker.runtimes);
             q = ngx_queue_next(q))
        {
            rt = ngx_queue_data(q, ngx_http_lua_ffi_runtime_t, link);

            if (rt->state != NGX_HTTP_LUA_FFI_RT_DRAINED
                && !rt->init_failed)
            {
                pending++;
                no_null += !rt->null_taken;
            }
        }

        ngx_time_update();
        now = ngx_current_msec;

        if (pending == 0) {
            return;
        }

        if ((ngx_msec_int_t) (deadline - now) <= 0) {
            break;
        }

        (void) ngx_http_lua_ffi_bridge_wait(deadline - now);
    }

    for (q = ngx_queue_head(&ngx_http_lua_ffi_worker.runtimes);
         q != ngx_queue_sentinel(&ngx_http_lua_ffi_worker.runtimes);
         q = ngx_queue_next(q))
    {
        rt = ngx_queue_data(q, ngx_http_lua_ffi_runtime_t, link);

        if (rt->state == NGX_HTTP_LUA_FFI_RT_DRAINED || rt->init_failed) {
            continue;
        }

        ngx_log_error(NGX_LOG_WARN, cycle->log, 0,
                      "ffi: abandoning runtime \"%V\" of \"%V\" (version "
                      "%ui): %s, %ui call(s) unanswered",
                      &rt->cfg, &rt->image->library->path, rt->generation,
                      rt->null_taken ? "NULL task taken"
                                     : "NULL task not taken",
                      rt->inflight);
    }

    if (no_null) {
        ngx_log_error(NGX_LOG_WARN, cycle->log, 0,
                      "ffi: %ui runtime(s) did not take their NULL task "
                      "within %M ms (ffi_exit_timeout), exiting anyway",
                      no_null, fmcf->exit_timeout);
    }

    ngx_log_error(NGX_LOG_WARN, cycle->log, 0,
                  "ffi: %ui runtime(s) did not drain within %M ms "
                  "(ffi_exit_timeout): the worker exits without running "
                  "library destructors", pending, fmcf->exit_timeout);

    ngx_http_lua_ffi_worker.abandoned = 1;
}


static const char *
ngx_http_lua_ffi_rt_state_name(ngx_http_lua_ffi_runtime_t *rt)
{
    ngx_http_lua_ffi_main_conf_t  *fmcf;

    switch (rt->state) {

    case NGX_HTTP_LUA_FFI_RT_STARTING:
        return "starting";

    case NGX_HTTP_LUA_FFI_RT_SERVING:
        return "serving";

    case NGX_HTTP_LUA_FFI_RT_DRAINED:
        return "drained";

    default:
        fmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                                   ngx_http_lua_ffi_module);

        /* draining for longer than a reload may take: it never will */
        if (!rt->null_taken
            && ngx_current_msec - rt->drain_started > fmcf->reload_timeout)
        {
            return "stuck";
        }

        return "draining";
    }
}


static const char *
ngx_http_lua_ffi_img_state_name(ngx_http_lua_ffi_image_t *img)
{
    switch (img->state) {

    case NGX_HTTP_LUA_FFI_IMG_LOADING:
        return "loading";

    case NGX_HTTP_LUA_FFI_IMG_SERVING:
        return "serving";

    case NGX_HTTP_LUA_FFI_IMG_DRAINING:
        return img->refcount ? "draining" : "idle";

    default:
        return "closed";
    }
}


static u_char *
ngx_http_lua_ffi_status_runtimes(u_char *p, u_char *last,
    ngx_http_lua_ffi_library_t *lib, ngx_uint_t *live, ngx_uint_t *inflight)
{
    ngx_uint_t                     n;
    ngx_queue_t                   *q;
    ngx_http_lua_ffi_runtime_t    *rt;
    ngx_http_lua_ffi_main_conf_t  *fmcf;

    fmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_http_lua_ffi_module);

    p = ngx_slprintf(p, last, "[");

    for (n = 0, q = ngx_queue_head(&ngx_http_lua_ffi_worker.runtimes);
         q != ngx_queue_sentinel(&ngx_http_lua_ffi_worker.runtimes);
         q = ngx_queue_next(q))
    {
        rt = ngx_queue_data(q, ngx_http_lua_ffi_runtime_t, link);

        if (rt->image->library != lib) {
            continue;
        }

        if (rt->state == NGX_HTTP_LUA_FFI_RT_SERVING) {
            (*live)++;
        }

        *inflight += rt->inflight;

        p = ngx_slprintf(p, last, "%s{\"cfg\":", n++ ? "," : "");

        /* cfg holds passwords and connection strings: shown on request */

        if (rt->has_cfg && fmcf->status_cfg) {
            p = ngx_http_lua_ffi_json_str(p, last, rt->cfg.data, rt->cfg.len);

        } else if (rt->has_cfg) {
            p = ngx_http_lua_ffi_json_cfg_tag(p, last, rt->cfg.data,
                                              rt->cfg.len);

        } else {
            p = ngx_slprintf(p, last, "null");
        }

        p = ngx_slprintf(p, last, ",\"version\":%ui,\"image_version\":%ui,"
                         "\"state\":\"%s\",\"inflight\":%ui,\"queued\":%ui,"
                         "\"calls\":%ui,\"refused\":%ui,\"stray\":%ui,"
                         "\"age_ms\":%M}",
                         rt->generation, rt->image->version,
                         ngx_http_lua_ffi_rt_state_name(rt), rt->inflight,
                         rt->queue.size, rt->calls, rt->failed,
                         rt->queue.strays,
                         ngx_current_msec - rt->started);
    }

    return ngx_slprintf(p, last, "]");
}


/* This worker's view of its libraries, as JSON, for GET /ffi/status. */

u_char *
ngx_http_lua_ffi_registry_status(u_char *p, u_char *last)
{
    ngx_uint_t                   n, live, inflight, refcount, pinned;
    ngx_queue_t                 *q, *iq;
    ngx_http_lua_ffi_image_t    *img;
    ngx_http_lua_ffi_library_t  *lib;

    p = ngx_slprintf(p, last, "[");

    for (q = ngx_queue_head(&ngx_http_lua_ffi_worker.libraries);
         q != ngx_queue_sentinel(&ngx_http_lua_ffi_worker.libraries);
         q = ngx_queue_next(q))
    {
        lib = ngx_queue_data(q, ngx_http_lua_ffi_library_t, link);

        p = ngx_slprintf(p, last, "%s{\"name\":",
                         q == ngx_queue_head(&ngx_http_lua_ffi_worker.libraries)
                         ? "" : ",");
        p = ngx_http_lua_ffi_json_str(p, last, lib->names[0].data,
                                      lib->names[0].len);
        p = ngx_slprintf(p, last, ",\"path\":");
        p = ngx_http_lua_ffi_json_str(p, last, lib->path.data, lib->path.len);

        refcount = 0;
        pinned = 0;
        img = lib->current;

        if (img) {
            refcount = img->refcount;
            pinned = img->pinned;
        }

        p = ngx_slprintf(p, last, ",\"version\":%ui,\"build_id\":\"%s\","
                         "\"pinned\":%s,\"refcount\":%ui,\"state\":\"%s\","
                         "\"unpin\":%s,\"is_global\":%s,\"images\":[",
                         lib->version, img ? img->build_id : "",
                         pinned ? "true" : "false", refcount,
                         img ? ngx_http_lua_ffi_img_state_name(img)
                             : "closed",
                         lib->unpin ? "true" : "false",
                         lib->is_global ? "true" : "false");

        for (n = 0, iq = ngx_queue_head(&lib->images);
             iq != ngx_queue_sentinel(&lib->images);
             iq = ngx_queue_next(iq))
        {
            img = ngx_queue_data(iq, ngx_http_lua_ffi_image_t, link);

            p = ngx_slprintf(p, last, "%s{\"version\":%ui,\"build_id\":\"%s\","
                             "\"state\":\"%s\",\"refcount\":%ui,"
                             "\"pinned\":%s,\"pin_reason\":\"%s\"}",
                             n++ ? "," : "", img->version, img->build_id,
                             ngx_http_lua_ffi_img_state_name(img),
                             img->refcount, img->pinned ? "true" : "false",
                             ngx_http_lua_ffi_pin_reason_name(
                                                          img->pin_reason));
        }

        live = 0;
        inflight = 0;

        p = ngx_slprintf(p, last, "],\"mapped_images\":%ui,\"runtimes\":", n);
        p = ngx_http_lua_ffi_status_runtimes(p, last, lib, &live, &inflight);
        p = ngx_slprintf(p, last, ",\"live_runtimes\":%ui,\"inflight\":%ui,"
                         "\"canary\":", live, inflight);
        p = ngx_http_lua_ffi_canary_status(p, last, lib);
        p = ngx_slprintf(p, last, "}");
    }

    return ngx_slprintf(p, last, "]");
}
