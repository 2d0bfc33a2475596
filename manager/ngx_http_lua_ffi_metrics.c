/*
 * The metrics zone: a slot per runtime that its worker's event loop writes
 * with plain stores, library and worker figures beside, read by a scrape.
 */

#include "ngx_http_lua_ffi_metrics.h"


#define NGX_HTTP_LUA_FFI_REFRESH_MSEC  1000


static ngx_int_t ngx_http_lua_ffi_metrics_zone_init(ngx_shm_zone_t *zone,
    void *data);
static void ngx_http_lua_ffi_metrics_refresh(void);
static void ngx_http_lua_ffi_metrics_timer(ngx_event_t *ev);
static void ngx_http_lua_ffi_metrics_operation(u_char *path, u_char *name,
    ngx_http_lua_ffi_reload_outcome_e outcome, ngx_uint_t version,
    ngx_uint_t rollback);


static ngx_str_t  ngx_http_lua_ffi_metrics_zone_name =
    ngx_string("lua_resty_ffi_metrics");

static ngx_shm_zone_t                   *ngx_http_lua_ffi_metrics_zone;
static ngx_slab_pool_t                  *ngx_http_lua_ffi_metrics_pool;
static ngx_http_lua_ffi_metrics_shm_t   *ngx_http_lua_ffi_metrics_sh;
static ngx_http_lua_ffi_metrics_proc_t  *ngx_http_lua_ffi_metrics_proc;
static ngx_event_t                       ngx_http_lua_ffi_metrics_ev;

/* where a runtime counts when every slot is taken: counted, not shown */
static ngx_http_lua_ffi_series_t         ngx_http_lua_ffi_metrics_spare;


ngx_int_t
ngx_http_lua_ffi_metrics_add(ngx_conf_t *cf)
{
    ngx_shm_zone_t  *zone;

    zone = ngx_shared_memory_add(cf, &ngx_http_lua_ffi_metrics_zone_name,
                                 sizeof(ngx_http_lua_ffi_metrics_shm_t)
                                 + 65536,
                                 &ngx_http_lua_ffi_module);
    if (zone == NULL) {
        return NGX_ERROR;
    }

    zone->init = ngx_http_lua_ffi_metrics_zone_init;
    ngx_http_lua_ffi_metrics_zone = zone;

    return NGX_OK;
}


static ngx_int_t
ngx_http_lua_ffi_metrics_zone_init(ngx_shm_zone_t *zone, void *data)
{
    ngx_slab_pool_t                 *shpool;
    ngx_http_lua_ffi_metrics_shm_t  *sh;

    shpool = (ngx_slab_pool_t *) zone->shm.addr;

    if (data) {
        /* nginx -s reload: the counters go on where they were */
        zone->data = data;
        return NGX_OK;
    }

    if (zone->shm.exists) {
        zone->data = shpool->data;
        return NGX_OK;
    }

    sh = ngx_slab_calloc(shpool, sizeof(ngx_http_lua_ffi_metrics_shm_t));
    if (sh == NULL) {
        return NGX_ERROR;
    }

    shpool->data = sh;
    zone->data = sh;

    return NGX_OK;
}


static ngx_uint_t
ngx_http_lua_ffi_metrics_zero(ngx_http_lua_ffi_counters_t *c)
{
    size_t     i;
    uint64_t  *v = (uint64_t *) c;

    for (i = 0; i < sizeof(*c) / sizeof(uint64_t); i++) {
        if (v[i]) {
            return 0;
        }
    }

    return 1;
}


static void
ngx_http_lua_ffi_metrics_fold(ngx_http_lua_ffi_counters_t *to,
    ngx_http_lua_ffi_counters_t *from)
{
    size_t     i;
    uint64_t  *t = (uint64_t *) to, *f = (uint64_t *) from;

    for (i = 0; i < sizeof(*to) / sizeof(uint64_t); i++) {
        t[i] += f[i];
    }
}


/* A runtime is gone: its counts stay for the series; its gauges go. */

static void
ngx_http_lua_ffi_metrics_retire_locked(ngx_http_lua_ffi_metrics_slot_t *sl)
{
    sl->owner = 0;
    sl->s.inflight = 0;
    sl->s.queued = 0;
    sl->s.taken = 0;
    sl->state = ngx_http_lua_ffi_metrics_zero(&sl->s.c)
                ? NGX_HTTP_LUA_FFI_SLOT_FREE : NGX_HTTP_LUA_FFI_SLOT_RETIRED;
}


/* Slots and entries of workers that died (kill -9, a crash) retire. */

static void
ngx_http_lua_ffi_metrics_reap_locked(void)
{
    ngx_uint_t                        i, j;
    ngx_http_lua_ffi_metrics_shm_t   *sh = ngx_http_lua_ffi_metrics_sh;
    ngx_http_lua_ffi_metrics_proc_t  *p;

    for (i = 0; i < NGX_HTTP_LUA_FFI_METRICS_PROCS; i++) {
        p = &sh->procs[i];

        if (p->pid == 0 || p->pid == ngx_pid
            || kill(p->pid, 0) == 0 || ngx_errno != NGX_ESRCH)
        {
            continue;
        }

        for (j = 0; j < NGX_HTTP_LUA_FFI_METRICS_SLOTS; j++) {
            if (sh->slots[j].state == NGX_HTTP_LUA_FFI_SLOT_LIVE
                && sh->slots[j].owner == p->pid)
            {
                ngx_http_lua_ffi_metrics_retire_locked(&sh->slots[j]);
            }
        }

        ngx_memzero(p, sizeof(ngx_http_lua_ffi_metrics_proc_t));
    }
}


ngx_int_t
ngx_http_lua_ffi_metrics_init_worker(ngx_cycle_t *cycle)
{
    ngx_uint_t                        i;
    ngx_http_lua_ffi_metrics_proc_t  *p;

    if (ngx_http_lua_ffi_metrics_zone == NULL) {
        return NGX_OK;
    }

    ngx_http_lua_ffi_metrics_pool =
                   (ngx_slab_pool_t *) ngx_http_lua_ffi_metrics_zone->shm.addr;
    ngx_http_lua_ffi_metrics_sh = ngx_http_lua_ffi_metrics_pool->data;

    ngx_shmtx_lock(&ngx_http_lua_ffi_metrics_pool->mutex);

    ngx_http_lua_ffi_metrics_reap_locked();

    p = NULL;

    for (i = 0; i < NGX_HTTP_LUA_FFI_METRICS_PROCS; i++) {
        if (ngx_http_lua_ffi_metrics_sh->procs[i].pid == 0) {
            p = &ngx_http_lua_ffi_metrics_sh->procs[i];
            ngx_memzero(p, sizeof(ngx_http_lua_ffi_metrics_proc_t));
            p->pid = ngx_pid;
            p->worker = ngx_http_lua_ffi_worker.slot;
            break;
        }
    }

    ngx_shmtx_unlock(&ngx_http_lua_ffi_metrics_pool->mutex);

    if (p == NULL) {
        ngx_log_error(NGX_LOG_WARN, cycle->log, 0,
                      "ffi: metrics: more than %d worker processes at once, "
                      "this one's runtimes and images are not shown",
                      NGX_HTTP_LUA_FFI_METRICS_PROCS);
    }

    ngx_http_lua_ffi_metrics_proc = p;

    /* debug logging of timers reads ev->data (as a connection's fd) */
    ngx_http_lua_ffi_metrics_ev.data = &ngx_http_lua_ffi_worker;
    ngx_http_lua_ffi_metrics_ev.handler = ngx_http_lua_ffi_metrics_timer;
    ngx_http_lua_ffi_metrics_ev.log = cycle->log;
    ngx_http_lua_ffi_metrics_ev.cancelable = 1;
    ngx_add_timer(&ngx_http_lua_ffi_metrics_ev,
                  NGX_HTTP_LUA_FFI_REFRESH_MSEC);

    return NGX_OK;
}


void
ngx_http_lua_ffi_metrics_exit_worker(ngx_cycle_t *cycle)
{
    ngx_uint_t                        i;
    ngx_http_lua_ffi_metrics_shm_t   *sh = ngx_http_lua_ffi_metrics_sh;
    ngx_http_lua_ffi_metrics_slot_t  *sl;

    if (sh == NULL) {
        return;
    }

    if (ngx_http_lua_ffi_metrics_ev.timer_set) {
        ngx_del_timer(&ngx_http_lua_ffi_metrics_ev);
    }

    ngx_shmtx_lock(&ngx_http_lua_ffi_metrics_pool->mutex);

    for (i = 0; i < NGX_HTTP_LUA_FFI_METRICS_SLOTS; i++) {
        sl = &sh->slots[i];

        if (sl->state == NGX_HTTP_LUA_FFI_SLOT_LIVE && sl->owner == ngx_pid) {
            ngx_http_lua_ffi_metrics_retire_locked(sl);
        }
    }

    if (ngx_http_lua_ffi_metrics_proc) {
        ngx_memzero(ngx_http_lua_ffi_metrics_proc,
                    sizeof(ngx_http_lua_ffi_metrics_proc_t));
        ngx_http_lua_ffi_metrics_proc = NULL;
    }

    ngx_shmtx_unlock(&ngx_http_lua_ffi_metrics_pool->mutex);

    ngx_http_lua_ffi_metrics_sh = NULL;
}


/* The library's entry, by path; made on first sight. NGX_ERROR: full. */

static ngx_int_t
ngx_http_lua_ffi_metrics_lib_locked(u_char *path, u_char *name, size_t len)
{
    ngx_uint_t                       i;
    ngx_http_lua_ffi_metrics_shm_t  *sh = ngx_http_lua_ffi_metrics_sh;
    ngx_http_lua_ffi_metrics_lib_t  *ml;

    for (i = 0; i < sh->nlibs; i++) {
        if (ngx_strcmp(sh->libs[i].path, path) == 0) {
            return i;
        }
    }

    if (sh->nlibs == NGX_HTTP_LUA_FFI_METRICS_LIBS) {
        return NGX_ERROR;
    }

    ml = &sh->libs[sh->nlibs];
    ngx_memzero(ml, sizeof(ngx_http_lua_ffi_metrics_lib_t));
    ngx_cpystrn(ml->path, path, NGX_HTTP_LUA_FFI_PATHLEN);
    ngx_cpystrn(ml->name, name, ngx_min(len + 1, NGX_HTTP_LUA_FFI_NAMELEN));

    return sh->nlibs++;
}


/* the label: the first 8 hex digits of the cfg's tag, as status shows it */

static uint32_t
ngx_http_lua_ffi_metrics_cfg_hash(ngx_str_t *cfg)
{
    u_char  tag[NGX_HTTP_LUA_FFI_CFG_TAG];

    if (ngx_http_lua_ffi_cfg_tag(cfg->data, cfg->len, tag) != NGX_OK) {
        return 0;
    }

    return ((uint32_t) tag[0] << 24) | ((uint32_t) tag[1] << 16)
           | ((uint32_t) tag[2] << 8) | tag[3];
}


/*
 * A slot for a runtime that starts: a retired one of the same series (its
 * counts go on), else a free one, else the oldest retired version's, whose
 * counts move to its library's "retired" series first.
 */

static ngx_http_lua_ffi_metrics_slot_t *
ngx_http_lua_ffi_metrics_slot_locked(ngx_uint_t lib, ngx_uint_t version,
    uint32_t cfg, ngx_uint_t has_cfg)
{
    ngx_uint_t                        i;
    ngx_http_lua_ffi_metrics_shm_t   *sh = ngx_http_lua_ffi_metrics_sh;
    ngx_http_lua_ffi_metrics_lib_t   *ml;
    ngx_http_lua_ffi_metrics_slot_t  *sl, *free, *oldest;

    free = NULL;
    oldest = NULL;

    for (i = 0; i < NGX_HTTP_LUA_FFI_METRICS_SLOTS; i++) {
        sl = &sh->slots[i];

        if (sl->state == NGX_HTTP_LUA_FFI_SLOT_FREE) {
            if (free == NULL) {
                free = sl;
            }

            continue;
        }

        if (sl->state != NGX_HTTP_LUA_FFI_SLOT_RETIRED) {
            continue;
        }

        if (sl->lib == lib && sl->version == version && sl->cfg == cfg
            && sl->has_cfg == has_cfg)
        {
            return sl;
        }

        if (oldest == NULL || sl->version < oldest->version) {
            oldest = sl;
        }
    }

    if (free) {
        ngx_memzero(free, sizeof(ngx_http_lua_ffi_metrics_slot_t));
        sl = free;

    } else if (oldest) {
        ml = &sh->libs[oldest->lib];
        ngx_http_lua_ffi_metrics_fold(&ml->retired, &oldest->s.c);
        ml->has_retired = 1;
        ngx_memzero(oldest, sizeof(ngx_http_lua_ffi_metrics_slot_t));
        sl = oldest;

    } else {
        return NULL;
    }

    sl->lib = lib;
    sl->version = version;
    sl->cfg = cfg;
    sl->has_cfg = has_cfg;

    return sl;
}


/* Before libffi_init: the runtime's threads may count from their start. */

ngx_http_lua_ffi_series_t *
ngx_http_lua_ffi_metrics_attach(ngx_http_lua_ffi_image_t *img, ngx_str_t *cfg,
    ngx_uint_t has_cfg)
{
    uint32_t                          hash;
    ngx_int_t                         lib;
    ngx_http_lua_ffi_library_t       *l = img->library;
    ngx_http_lua_ffi_metrics_lib_t   *ml;
    ngx_http_lua_ffi_metrics_slot_t  *sl;

    if (ngx_http_lua_ffi_metrics_sh == NULL) {
        return &ngx_http_lua_ffi_metrics_spare;
    }

    sl = NULL;

    ngx_shmtx_lock(&ngx_http_lua_ffi_metrics_pool->mutex);

    lib = ngx_http_lua_ffi_metrics_lib_locked(l->path.data,
                                              l->names[0].data,
                                              l->names[0].len);
    if (lib != NGX_ERROR) {
        ml = &ngx_http_lua_ffi_metrics_sh->libs[lib];

        if (img == l->current && img->version > ml->version) {
            ml->version = img->version;
        }

        hash = has_cfg ? ngx_http_lua_ffi_metrics_cfg_hash(cfg) : 0;
        sl = ngx_http_lua_ffi_metrics_slot_locked(lib, img->version, hash,
                                                  has_cfg);
        if (sl) {
            sl->owner = ngx_pid;
            sl->s.inflight = 0;
            sl->s.queued = 0;
            sl->s.taken = 0;
            sl->state = NGX_HTTP_LUA_FFI_SLOT_LIVE;
        }
    }

    ngx_shmtx_unlock(&ngx_http_lua_ffi_metrics_pool->mutex);

    if (sl == NULL) {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "ffi: metrics: no slot left for a runtime of \"%V\": "
                      "its calls are not shown", &l->path);
        return &ngx_http_lua_ffi_metrics_spare;
    }

    ngx_http_lua_ffi_metrics_refresh();

    return &sl->s;
}


/* The runtime is freed (its threads are done with its queue). */

void
ngx_http_lua_ffi_metrics_detach(ngx_http_lua_ffi_series_t *s)
{
    if (s == &ngx_http_lua_ffi_metrics_spare
        || ngx_http_lua_ffi_metrics_sh == NULL)
    {
        return;
    }

    ngx_shmtx_lock(&ngx_http_lua_ffi_metrics_pool->mutex);
    ngx_http_lua_ffi_metrics_retire_locked(
                                   (ngx_http_lua_ffi_metrics_slot_t *) s);
    ngx_shmtx_unlock(&ngx_http_lua_ffi_metrics_pool->mutex);

    ngx_http_lua_ffi_metrics_refresh();
}


/* The coordinator of a reload counts how it ended, once for all workers. */

void
ngx_http_lua_ffi_metrics_reload(u_char *path, u_char *name,
    ngx_http_lua_ffi_reload_outcome_e outcome, ngx_uint_t version)
{
    ngx_http_lua_ffi_metrics_operation(path, name, outcome, version, 0);
}


/* A rollback is a reload to a kept version: ffi_rollbacks_total. */

void
ngx_http_lua_ffi_metrics_rollback(u_char *path, u_char *name,
    ngx_http_lua_ffi_reload_outcome_e outcome, ngx_uint_t version)
{
    ngx_http_lua_ffi_metrics_operation(path, name, outcome, version, 1);
}


static void
ngx_http_lua_ffi_metrics_operation(u_char *path, u_char *name,
    ngx_http_lua_ffi_reload_outcome_e outcome, ngx_uint_t version,
    ngx_uint_t rollback)
{
    ngx_int_t                        lib;
    ngx_http_lua_ffi_metrics_lib_t  *ml;

    if (ngx_http_lua_ffi_metrics_sh == NULL) {
        return;
    }

    ngx_shmtx_lock(&ngx_http_lua_ffi_metrics_pool->mutex);

    lib = ngx_http_lua_ffi_metrics_lib_locked(path, name, ngx_strlen(name));

    if (lib != NGX_ERROR) {
        ml = &ngx_http_lua_ffi_metrics_sh->libs[lib];

        if (rollback) {
            ml->rollbacks[outcome]++;

        } else {
            ml->reloads[outcome]++;
        }

        if (outcome == NGX_HTTP_LUA_FFI_RELOAD_OK) {
            ml->version = version;
            ml->last_reload = ngx_time();
        }
    }

    ngx_shmtx_unlock(&ngx_http_lua_ffi_metrics_pool->mutex);
}


/* The coordinator of a canary's start or end, once for all workers. */

void
ngx_http_lua_ffi_metrics_canary(u_char *path, u_char *name,
    ngx_uint_t version, ngx_uint_t percent, ngx_int_t end)
{
    ngx_int_t                        lib;
    ngx_http_lua_ffi_metrics_lib_t  *ml;

    if (ngx_http_lua_ffi_metrics_sh == NULL) {
        return;
    }

    ngx_shmtx_lock(&ngx_http_lua_ffi_metrics_pool->mutex);

    lib = ngx_http_lua_ffi_metrics_lib_locked(path, name, ngx_strlen(name));

    if (lib != NGX_ERROR) {
        ml = &ngx_http_lua_ffi_metrics_sh->libs[lib];

        if (end < 0) {
            ml->canary_version = version;
            ml->canary_percent = percent;

        } else {
            ml->canary_version = 0;
            ml->canary_percent = 0;
            ml->canary_ends[end]++;
        }
    }

    ngx_shmtx_unlock(&ngx_http_lua_ffi_metrics_pool->mutex);
}


/*
 * Every answer one version of a library gave, in every worker, and how
 * many of them were failures (rc != 0) or timeouts: ffi_canary_guard's
 * judgement, read from the counters the bridge keeps anyway.
 */

void
ngx_http_lua_ffi_metrics_answers(u_char *path, ngx_uint_t version,
    uint64_t *answers, uint64_t *bad)
{
    ngx_uint_t                        i;
    ngx_http_lua_ffi_metrics_shm_t   *sh = ngx_http_lua_ffi_metrics_sh;
    ngx_http_lua_ffi_metrics_slot_t  *sl;

    *answers = 0;
    *bad = 0;

    if (sh == NULL) {
        return;
    }

    ngx_shmtx_lock(&ngx_http_lua_ffi_metrics_pool->mutex);

    for (i = 0; i < sh->nlibs; i++) {
        if (ngx_strcmp(sh->libs[i].path, path) == 0) {
            break;
        }
    }

    if (i < sh->nlibs) {
        for (sl = sh->slots; sl < sh->slots + NGX_HTTP_LUA_FFI_METRICS_SLOTS;
             sl++)
        {
            if (sl->state == NGX_HTTP_LUA_FFI_SLOT_FREE || sl->lib != i
                || sl->version != version)
            {
                continue;
            }

            *answers += sl->s.c.ok + sl->s.c.failed + sl->s.c.timeouts;
            *bad += sl->s.c.failed + sl->s.c.timeouts;
        }
    }

    ngx_shmtx_unlock(&ngx_http_lua_ffi_metrics_pool->mutex);
}


/* The worker that acted on a file drop counts what came of it. */

void
ngx_http_lua_ffi_metrics_drop(ngx_str_t *path, ngx_int_t status)
{
    ngx_uint_t                       i, outcome;
    ngx_http_lua_ffi_metrics_shm_t  *sh = ngx_http_lua_ffi_metrics_sh;

    if (sh == NULL || status == NGX_HTTP_NOT_MODIFIED) {
        return;
    }

    outcome = (status == NGX_HTTP_OK) ? NGX_HTTP_LUA_FFI_DROP_RELOADED
              : (status == NGX_HTTP_UNPROCESSABLE_ENTITY)
                ? NGX_HTTP_LUA_FFI_DROP_REFUSED
              : (status == NGX_HTTP_CONFLICT) ? NGX_HTTP_LUA_FFI_DROP_CONFLICT
              : NGX_HTTP_LUA_FFI_DROP_FAILED;

    ngx_shmtx_lock(&ngx_http_lua_ffi_metrics_pool->mutex);

    for (i = 0; i < sh->nlibs; i++) {
        if (ngx_strncmp(sh->libs[i].path, path->data, path->len) == 0
            && sh->libs[i].path[path->len] == '\0')
        {
            sh->libs[i].drops[outcome]++;
            break;
        }
    }

    ngx_shmtx_unlock(&ngx_http_lua_ffi_metrics_pool->mutex);
}


/* This worker's runtimes by state and its mapped images. */

static void
ngx_http_lua_ffi_metrics_refresh(void)
{
    ngx_uint_t                        states[NGX_HTTP_LUA_FFI_RT_STATES];
    ngx_uint_t                        i, images;
    ngx_queue_t                      *q, *iq;
    ngx_http_lua_ffi_runtime_t       *rt;
    ngx_http_lua_ffi_library_t       *lib;
    ngx_http_lua_ffi_metrics_proc_t  *p = ngx_http_lua_ffi_metrics_proc;

    if (p == NULL) {
        return;
    }

    ngx_memzero(states, sizeof(states));
    images = 0;

    for (q = ngx_queue_head(&ngx_http_lua_ffi_worker.runtimes);
         q != ngx_queue_sentinel(&ngx_http_lua_ffi_worker.runtimes);
         q = ngx_queue_next(q))
    {
        rt = ngx_queue_data(q, ngx_http_lua_ffi_runtime_t, link);

        if (rt->state < NGX_HTTP_LUA_FFI_RT_STATES) {
            states[rt->state]++;
        }
    }

    for (q = ngx_queue_head(&ngx_http_lua_ffi_worker.libraries);
         q != ngx_queue_sentinel(&ngx_http_lua_ffi_worker.libraries);
         q = ngx_queue_next(q))
    {
        lib = ngx_queue_data(q, ngx_http_lua_ffi_library_t, link);

        for (iq = ngx_queue_head(&lib->images);
             iq != ngx_queue_sentinel(&lib->images);
             iq = ngx_queue_next(iq))
        {
            images++;
        }
    }

    for (i = 0; i < NGX_HTTP_LUA_FFI_RT_STATES; i++) {
        p->runtimes[i] = states[i];
    }

    p->images = images;
}


static void
ngx_http_lua_ffi_metrics_timer(ngx_event_t *ev)
{
    ngx_http_lua_ffi_metrics_refresh();

    if (!ngx_exiting) {
        ngx_add_timer(ev, NGX_HTTP_LUA_FFI_REFRESH_MSEC);
    }
}


/*
 * A copy of the whole zone for a scrape to render at leisure: the lock is
 * held for one memcpy (and a kill(pid, 0) per worker process, to retire
 * the slots of the dead), and no worker is asked for anything. The scraping
 * worker's own gauges are refreshed first, the others' are at most a
 * second old.
 */

ngx_http_lua_ffi_metrics_shm_t *
ngx_http_lua_ffi_metrics_snapshot(ngx_pool_t *pool)
{
    ngx_http_lua_ffi_metrics_shm_t  *copy;

    if (ngx_http_lua_ffi_metrics_sh == NULL) {
        return NULL;
    }

    copy = ngx_palloc(pool, sizeof(ngx_http_lua_ffi_metrics_shm_t));
    if (copy == NULL) {
        return NULL;
    }

    ngx_http_lua_ffi_metrics_refresh();

    ngx_shmtx_lock(&ngx_http_lua_ffi_metrics_pool->mutex);

    /* a killed worker not yet replaced: its calls in flight are no more */
    ngx_http_lua_ffi_metrics_reap_locked();

    ngx_memcpy(copy, ngx_http_lua_ffi_metrics_sh,
               sizeof(ngx_http_lua_ffi_metrics_shm_t));
    ngx_shmtx_unlock(&ngx_http_lua_ffi_metrics_pool->mutex);

    return copy;
}
