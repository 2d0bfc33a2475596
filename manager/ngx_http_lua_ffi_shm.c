/*
 * The shared zone: what every worker agrees on about each library (its
 * current version, the cfgs it runs with, who watches it) and the helpers
 * the reload protocol and the status request use to reach other workers.
 */

#include "ngx_http_lua_ffi_shm.h"


ngx_http_lua_ffi_shm_t        *ngx_http_lua_ffi_shm;
ngx_slab_pool_t               *ngx_http_lua_ffi_shpool;
ngx_http_lua_ffi_main_conf_t  *ngx_http_lua_ffi_fmcf;


static ngx_int_t ngx_http_lua_ffi_shm_init(ngx_shm_zone_t *zone, void *data);
static void ngx_http_lua_ffi_shm_reclaim_locked(void);
static size_t ngx_http_lua_ffi_shm_old_size(ngx_conf_t *cf);

static ngx_str_t  ngx_http_lua_ffi_shm_name = ngx_string("lua_resty_ffi");


/* The size of the running configuration's zone (nginx -s reload), or 0. */

static size_t
ngx_http_lua_ffi_shm_old_size(ngx_conf_t *cf)
{
    ngx_uint_t        i;
    ngx_cycle_t      *old;
    ngx_list_part_t  *part;
    ngx_shm_zone_t   *zone;

    old = cf->cycle->old_cycle;

    if (old == NULL || ngx_is_init_cycle(old)) {
        return 0;
    }

    part = &old->shared_memory.part;
    zone = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return 0;
            }

            part = part->next;
            zone = part->elts;
            i = 0;
        }

        if (zone[i].shm.name.len == ngx_http_lua_ffi_shm_name.len
            && ngx_strncmp(zone[i].shm.name.data,
                           ngx_http_lua_ffi_shm_name.data,
                           ngx_http_lua_ffi_shm_name.len) == 0)
        {
            return zone[i].shm.size;
        }
    }
}


ngx_int_t
ngx_http_lua_ffi_shm_add(ngx_conf_t *cf, ngx_http_lua_ffi_main_conf_t *fmcf)
{
    size_t           old;
    ngx_shm_zone_t  *zone;

    /*
     * Beyond its fixed tables the zone holds every worker's status view at
     * once (GET /ffi/status; tens of kB for a worker with a hundred
     * runtimes, page-rounded by the slab allocator) and the libraries'
     * cfgs: NGX_HTTP_LUA_FFI_SHM_ROOM of room, whatever ffi_shm_size says.
     */
    if (fmcf->shm_size < sizeof(ngx_http_lua_ffi_shm_t)
                         + NGX_HTTP_LUA_FFI_SHM_ROOM)
    {
        fmcf->shm_size = sizeof(ngx_http_lua_ffi_shm_t)
                         + NGX_HTTP_LUA_FFI_SHM_ROOM;
    }

    /*
     * nginx maps a zone of another size afresh: every library's versions,
     * history and kept shadow copies would be forgotten, and version
     * numbers given again. The running configuration serves on instead.
     */
    old = ngx_http_lua_ffi_shm_old_size(cf);

    if (old && old != fmcf->shm_size) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "ffi_shm_size cannot change from %uz to %uz on "
                           "nginx -s reload: its zone holds every library's "
                           "versions and history; restart nginx to resize "
                           "it", old, fmcf->shm_size);
        return NGX_ERROR;
    }

    zone = ngx_shared_memory_add(cf, &ngx_http_lua_ffi_shm_name,
                                 fmcf->shm_size, &ngx_http_lua_ffi_module);
    if (zone == NULL) {
        return NGX_ERROR;
    }

    zone->init = ngx_http_lua_ffi_shm_init;
    zone->data = fmcf;
    fmcf->shm_zone = zone;

    return NGX_OK;
}


static ngx_int_t
ngx_http_lua_ffi_shm_init(ngx_shm_zone_t *zone, void *data)
{
    ngx_slab_pool_t         *shpool;
    ngx_http_lua_ffi_shm_t  *sh;

    shpool = (ngx_slab_pool_t *) zone->shm.addr;

    if (data) {
        /* nginx -s reload: versions and shadow copies live on */
        zone->data = data;
        return NGX_OK;
    }

    if (zone->shm.exists) {
        zone->data = shpool->data;
        return NGX_OK;
    }

    sh = ngx_slab_calloc(shpool, sizeof(ngx_http_lua_ffi_shm_t));
    if (sh == NULL) {
        return NGX_ERROR;
    }

    shpool->data = sh;
    zone->data = sh;

    return NGX_OK;
}


ngx_int_t
ngx_http_lua_ffi_manager_init_worker(ngx_cycle_t *cycle,
    ngx_http_lua_ffi_main_conf_t *fmcf)
{
    ngx_http_lua_ffi_fmcf = fmcf;
    ngx_http_lua_ffi_shpool = (ngx_slab_pool_t *) fmcf->shm_zone->shm.addr;
    ngx_http_lua_ffi_shm = ngx_http_lua_ffi_shpool->data;

    if (ngx_http_lua_ffi_worker.slot >= NGX_HTTP_LUA_FFI_SHM_WORKERS) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                      "ffi: at most %d worker processes are supported",
                      NGX_HTTP_LUA_FFI_SHM_WORKERS);
        return NGX_ERROR;
    }

    ngx_http_lua_ffi_status_init();
    ngx_http_lua_ffi_reload_init();

    return NGX_OK;
}


void
ngx_http_lua_ffi_manager_exit_worker(ngx_cycle_t *cycle)
{
    if (ngx_http_lua_ffi_shm == NULL) {
        return;
    }

    ngx_http_lua_ffi_status_exit();
    ngx_http_lua_ffi_reload_exit();
}


/*
 * A worker takes its slot: whatever the slot's previous occupant (a worker
 * that crashed, or one of the configuration before nginx -s reload) held,
 * watched or answered is not this worker's.
 */

void
ngx_http_lua_ffi_shm_worker_init(void)
{
    uint64_t                        bit;
    ngx_uint_t                      i, slot;
    ngx_http_lua_ffi_shm_worker_t  *sw;

    slot = ngx_http_lua_ffi_worker.slot;
    bit = (slot < 64) ? ~((uint64_t) 1 << slot) : ~(uint64_t) 0;

    ngx_shmtx_lock(&ngx_http_lua_ffi_shpool->mutex);

    sw = &ngx_http_lua_ffi_shm->workers[slot];
    sw->pid = ngx_pid;

    /* a command issued before this worker existed concerns it no more */
    sw->acked = ngx_http_lua_ffi_shm->seq;
    sw->rc = NGX_OK;
    sw->err[0] = '\0';
    sw->status_seq = ngx_http_lua_ffi_shm->status_seq;

    for (i = 0; i < ngx_http_lua_ffi_shm->nlibs; i++) {
        ngx_http_lua_ffi_shm->libs[i].watchers &= bit;
        ngx_http_lua_ffi_shm->libs[i].holders &= bit;
    }

    ngx_shmtx_unlock(&ngx_http_lua_ffi_shpool->mutex);
}


void
ngx_http_lua_ffi_shm_worker_exit(void)
{
    uint64_t                        bit;
    ngx_uint_t                      i, slot;
    ngx_http_lua_ffi_shm_worker_t  *sw;

    slot = ngx_http_lua_ffi_worker.slot;
    bit = (slot < 64) ? ~((uint64_t) 1 << slot) : ~(uint64_t) 0;

    ngx_shmtx_lock(&ngx_http_lua_ffi_shpool->mutex);

    sw = &ngx_http_lua_ffi_shm->workers[slot];

    /* a worker of an older configuration has lost its slot: not ours */
    if (sw->pid == ngx_pid) {
        sw->pid = 0;

        for (i = 0; i < ngx_http_lua_ffi_shm->nlibs; i++) {
            ngx_http_lua_ffi_shm->libs[i].watchers &= bit;
            ngx_http_lua_ffi_shm->libs[i].holders &= bit;
        }
    }

    ngx_shmtx_unlock(&ngx_http_lua_ffi_shpool->mutex);
}


ngx_int_t
ngx_http_lua_ffi_shm_find_name(ngx_str_t *name)
{
    ngx_uint_t                   i, j;
    ngx_http_lua_ffi_shm_lib_t  *sl;

    for (i = 0; i < ngx_http_lua_ffi_shm->nlibs; i++) {
        sl = &ngx_http_lua_ffi_shm->libs[i];

        if (sl->path[0] == '\0') {
            continue;
        }

        for (j = 0; j < sl->nnames; j++) {
            if (ngx_strlen(sl->names[j]) == name->len
                && ngx_strncmp(sl->names[j], name->data, name->len) == 0)
            {
                return i;
            }
        }
    }

    return NGX_ERROR;
}


ngx_int_t
ngx_http_lua_ffi_shm_find_path(ngx_str_t *path)
{
    ngx_uint_t                   i;
    ngx_http_lua_ffi_shm_lib_t  *sl;

    for (i = 0; i < ngx_http_lua_ffi_shm->nlibs; i++) {
        sl = &ngx_http_lua_ffi_shm->libs[i];

        if (sl->path[0] != '\0' && ngx_strlen(sl->path) == path->len
            && ngx_strncmp(sl->path, path->data, path->len) == 0)
        {
            return i;
        }
    }

    return NGX_ERROR;
}


static void
ngx_http_lua_ffi_shm_add_name(ngx_http_lua_ffi_shm_lib_t *sl, ngx_str_t *name)
{
    ngx_uint_t  j;

    for (j = 0; j < sl->nnames; j++) {
        if (ngx_strlen(sl->names[j]) == name->len
            && ngx_strncmp(sl->names[j], name->data, name->len) == 0)
        {
            return;
        }
    }

    if (sl->nnames < NGX_HTTP_LUA_FFI_MAX_NAMES
        && name->len < NGX_HTTP_LUA_FFI_NAMELEN)
    {
        ngx_memcpy(sl->names[sl->nnames], name->data, name->len);
        sl->names[sl->nnames][name->len] = '\0';
        sl->nnames++;
    }
}


static void
ngx_http_lua_ffi_shm_hold_locked(ngx_http_lua_ffi_shm_lib_t *sl)
{
    ngx_uint_t  slot;

    slot = ngx_http_lua_ffi_worker.slot;

    if (slot < 64) {
        sl->holders |= (uint64_t) 1 << slot;
    }
}


void
ngx_http_lua_ffi_shm_release(ngx_str_t *path)
{
    ngx_int_t   i;
    ngx_uint_t  slot;

    slot = ngx_http_lua_ffi_worker.slot;

    ngx_shmtx_lock(&ngx_http_lua_ffi_shpool->mutex);

    i = ngx_http_lua_ffi_shm_find_path(path);

    if (i != NGX_ERROR && slot < 64) {
        ngx_http_lua_ffi_shm->libs[i].holders &= ~((uint64_t) 1 << slot);
    }

    ngx_shmtx_unlock(&ngx_http_lua_ffi_shpool->mutex);
}


/*
 * An entry no live worker holds (release folders behind a symlink make a
 * new path per deploy) gives its place back, shadow copy included. An
 * entry whose reload is under way is never reclaimed.
 */

static void
ngx_http_lua_ffi_shm_reclaim_locked(void)
{
    uint64_t                     held;
    ngx_uint_t                   i, j, slot;
    ngx_http_lua_ffi_shm_t      *sh = ngx_http_lua_ffi_shm;
    ngx_http_lua_ffi_shm_lib_t  *sl;

    for (i = 0; i < sh->nlibs; i++) {
        sl = &sh->libs[i];

        if (sl->path[0] == '\0' || (sh->owner && sh->lib == i)) {
            continue;
        }

        held = 0;

        for (slot = 0; slot < ngx_http_lua_ffi_fmcf->nworkers && slot < 64;
             slot++)
        {
            if ((sl->holders & ((uint64_t) 1 << slot))
                && ngx_http_lua_ffi_shm_alive(sh->workers[slot].pid))
            {
                held = 1;
                break;
            }
        }

        if (held || ngx_http_lua_ffi_fmcf->nworkers > 64) {
            continue;
        }

        ngx_http_lua_ffi_history_forget_locked(sl);
        ngx_http_lua_ffi_shadow_remove(&sl->current);

        for (j = 0; j < sl->ncfgs; j++) {
            ngx_slab_free_locked(ngx_http_lua_ffi_shpool, sl->cfgs[j]);
        }

        ngx_memzero(sl, sizeof(ngx_http_lua_ffi_shm_lib_t));
    }
}


/*
 * The version every worker maps for this library file. The first worker
 * to need a library checks and copies it; later ones, and workers started
 * later, map that same copy even if the file has changed since: a new
 * file only takes effect through a reload, in all workers at once.
 */

ngx_int_t
ngx_http_lua_ffi_shm_current(ngx_str_t *path, ngx_str_t *name,
    ngx_str_t *cfg, ngx_uint_t flags, ngx_http_lua_ffi_version_t *v,
    u_char *err, size_t errlen)
{
    ngx_int_t                    i, rc;
    ngx_uint_t                   j;
    ngx_uint_t                        ngone;
    ngx_http_lua_ffi_shm_lib_t       *sl;
    ngx_http_lua_ffi_version_t        nv;
    ngx_http_lua_ffi_history_entry_t  he;

    ngx_shmtx_lock(&ngx_http_lua_ffi_shpool->mutex);

    i = ngx_http_lua_ffi_shm_find_path(path);

    if (i != NGX_ERROR && ngx_http_lua_ffi_shm->libs[i].current.version) {
        sl = &ngx_http_lua_ffi_shm->libs[i];
        ngx_http_lua_ffi_shm_add_name(sl, name);
        ngx_http_lua_ffi_shm_hold_locked(sl);
        *v = sl->current;
        ngx_shmtx_unlock(&ngx_http_lua_ffi_shpool->mutex);
        return NGX_OK;
    }

    ngx_shmtx_unlock(&ngx_http_lua_ffi_shpool->mutex);

    ngx_memzero(&nv, sizeof(ngx_http_lua_ffi_version_t));

    rc = ngx_http_lua_ffi_shadow_create(path, &nv, 0, err, errlen);
    if (rc != NGX_OK) {
        return rc;
    }

    if (ngx_http_lua_ffi_fmcf->trial
        && !(flags & NGX_HTTP_LUA_FFI_LOAD_NO_TRIAL)
        && ngx_http_lua_ffi_trial(nv.shadow, path, cfg, 1,
                                  flags & NGX_HTTP_LUA_FFI_LOAD_GLOBAL,
                                  nv.pin_reason, err, errlen)
           != NGX_OK)
    {
        ngx_http_lua_ffi_shadow_remove(&nv);
        return NGX_DECLINED;
    }

    ngx_shmtx_lock(&ngx_http_lua_ffi_shpool->mutex);

    i = ngx_http_lua_ffi_shm_find_path(path);

    if (i == NGX_ERROR) {
        for (j = 0; j < ngx_http_lua_ffi_shm->nlibs; j++) {
            if (ngx_http_lua_ffi_shm->libs[j].path[0] == '\0') {
                break;
            }
        }

        if (j == NGX_HTTP_LUA_FFI_SHM_LIBS) {
            ngx_http_lua_ffi_shm_reclaim_locked();

            for (j = 0; j < ngx_http_lua_ffi_shm->nlibs; j++) {
                if (ngx_http_lua_ffi_shm->libs[j].path[0] == '\0') {
                    break;
                }
            }
        }

        if (j == NGX_HTTP_LUA_FFI_SHM_LIBS
            || path->len >= NGX_HTTP_LUA_FFI_PATHLEN)
        {
            ngx_shmtx_unlock(&ngx_http_lua_ffi_shpool->mutex);
            ngx_http_lua_ffi_shadow_remove(&nv);
            ngx_snprintf(err, errlen, "too many libraries (at most %d)%Z",
                         NGX_HTTP_LUA_FFI_SHM_LIBS);
            return NGX_ERROR;
        }

        if (j == ngx_http_lua_ffi_shm->nlibs) {
            ngx_http_lua_ffi_shm->nlibs++;
        }

        i = j;
        sl = &ngx_http_lua_ffi_shm->libs[i];
        ngx_memzero(sl, sizeof(ngx_http_lua_ffi_shm_lib_t));
        ngx_memcpy(sl->path, path->data, path->len);
    }

    sl = &ngx_http_lua_ffi_shm->libs[i];
    ngx_http_lua_ffi_shm_add_name(sl, name);
    ngx_http_lua_ffi_shm_hold_locked(sl);

    if (sl->current.version == 0) {
        nv.version = 1;
        sl->current = nv;

        /* a fresh entry: nothing falls out of its history yet */
        ngx_memzero(&he, sizeof(ngx_http_lua_ffi_history_entry_t));
        he.v = nv;
        he.when = ngx_time();
        he.how = NGX_HTTP_LUA_FFI_HOW_LOAD;
        ngx_http_lua_ffi_history_add_locked(sl, &he, NULL, &ngone);

        /* the first load decides how every worker maps it, trial included */
        sl->is_global = (flags & NGX_HTTP_LUA_FFI_LOAD_GLOBAL) ? 1 : 0;
        sl->no_trial = (flags & NGX_HTTP_LUA_FFI_LOAD_NO_TRIAL) ? 1 : 0;

        /* what a watcher that starts later compares the file with */
        ngx_http_lua_ffi_shm_file_ident(sl->path, sl->drop_ident,
                                        sizeof(sl->drop_ident));

    } else {
        /* another worker won the race: everyone maps its copy */
        ngx_http_lua_ffi_shadow_remove(&nv);
    }

    *v = sl->current;

    ngx_shmtx_unlock(&ngx_http_lua_ffi_shpool->mutex);

    return NGX_OK;
}


/*
 * Every cfg any worker runs the library with: the trial of a reload runs
 * them all, so its verdict is the same whichever worker coordinates.
 */

void
ngx_http_lua_ffi_shm_add_cfg(ngx_str_t *path, ngx_str_t *cfg,
    ngx_uint_t has_cfg)
{
    ngx_int_t                    i;
    ngx_uint_t                   j;
    ngx_http_lua_ffi_shm_cfg_t  *c;
    ngx_http_lua_ffi_shm_lib_t  *sl;

    ngx_shmtx_lock(&ngx_http_lua_ffi_shpool->mutex);

    i = ngx_http_lua_ffi_shm_find_path(path);
    if (i == NGX_ERROR) {
        goto done;
    }

    sl = &ngx_http_lua_ffi_shm->libs[i];

    for (j = 0; j < sl->ncfgs; j++) {
        c = sl->cfgs[j];

        if (c->nil == !has_cfg && c->len == cfg->len
            && ngx_memcmp(c->data, cfg->data, cfg->len) == 0)
        {
            goto done;
        }
    }

    if (sl->ncfgs == NGX_HTTP_LUA_FFI_SHM_CFGS) {
        goto done;
    }

    c = ngx_slab_alloc_locked(ngx_http_lua_ffi_shpool,
                              sizeof(ngx_http_lua_ffi_shm_cfg_t) + cfg->len);
    if (c == NULL) {
        goto done;
    }

    c->len = cfg->len;
    c->nil = !has_cfg;
    ngx_memcpy(c->data, cfg->data, cfg->len);
    c->data[cfg->len] = '\0';
    sl->cfgs[sl->ncfgs++] = c;

done:

    ngx_shmtx_unlock(&ngx_http_lua_ffi_shpool->mutex);
}


/* Copies (ngx_alloc()ed, NUL-terminated; data NULL for nil) of the cfgs. */

ngx_uint_t
ngx_http_lua_ffi_shm_trial_cfgs(ngx_uint_t lib, ngx_str_t *cfgs,
    ngx_uint_t max)
{
    ngx_uint_t                   j, n;
    ngx_http_lua_ffi_shm_cfg_t  *c;
    ngx_http_lua_ffi_shm_lib_t  *sl;

    n = 0;

    ngx_shmtx_lock(&ngx_http_lua_ffi_shpool->mutex);

    sl = &ngx_http_lua_ffi_shm->libs[lib];

    for (j = 0; j < sl->ncfgs && n < max; j++) {
        c = sl->cfgs[j];
        cfgs[n].len = c->len;
        cfgs[n].data = NULL;

        if (!c->nil) {
            cfgs[n].data = ngx_alloc(c->len + 1, ngx_cycle->log);
            if (cfgs[n].data == NULL) {
                continue;
            }

            ngx_memcpy(cfgs[n].data, c->data, c->len + 1);
        }

        n++;
    }

    ngx_shmtx_unlock(&ngx_http_lua_ffi_shpool->mutex);

    return n;
}


/*
 * Returns whether the file differs from the one the current version was
 * read from: a drop this worker could not have seen (it happened before
 * it watched) is then acted on like any other.
 */

ngx_uint_t
ngx_http_lua_ffi_shm_set_watched(ngx_str_t *path)
{
    u_char      ident[96];
    ngx_int_t   i;
    ngx_uint_t  slot, missed;

    missed = 0;
    ngx_http_lua_ffi_shm_file_ident(path->data, ident, sizeof(ident));

    ngx_shmtx_lock(&ngx_http_lua_ffi_shpool->mutex);

    i = ngx_http_lua_ffi_shm_find_path(path);
    if (i != NGX_ERROR) {
        ngx_http_lua_ffi_shm->libs[i].watched = 1;

        slot = ngx_http_lua_ffi_worker.slot;

        if (slot < 64) {
            ngx_http_lua_ffi_shm->libs[i].watchers |= (uint64_t) 1 << slot;
        }

        missed = ngx_http_lua_ffi_shm_drop_open(&ngx_http_lua_ffi_shm->libs[i],
                                                ident);
    }

    ngx_shmtx_unlock(&ngx_http_lua_ffi_shpool->mutex);

    return missed;
}


/*
 * Every worker watching a folder sees a drop; the live watcher in the
 * lowest slot acts on it, so one drop makes one reload or one refusal. A
 * worker that lost its slot (nginx -s reload) never acts: the slot's new
 * occupant watches for itself once it loads the library.
 */

ngx_uint_t
ngx_http_lua_ffi_shm_watch_actor(ngx_str_t *path)
{
    ngx_int_t                       i;
    ngx_uint_t                      slot, actor;
    uint64_t                        mask;
    ngx_http_lua_ffi_shm_worker_t  *sw;

    actor = 0;

    ngx_shmtx_lock(&ngx_http_lua_ffi_shpool->mutex);

    sw = &ngx_http_lua_ffi_shm->workers[ngx_http_lua_ffi_worker.slot];

    if (sw->pid != ngx_pid) {
        goto done;
    }

    if (ngx_http_lua_ffi_worker.slot >= 64) {
        actor = 1;
        goto done;
    }

    i = ngx_http_lua_ffi_shm_find_path(path);
    mask = (i == NGX_ERROR) ? 0 : ngx_http_lua_ffi_shm->libs[i].watchers;

    for (slot = 0; slot < ngx_http_lua_ffi_fmcf->nworkers && slot < 64;
         slot++)
    {
        if ((mask & ((uint64_t) 1 << slot))
            && ngx_http_lua_ffi_shm_alive(
                                  ngx_http_lua_ffi_shm->workers[slot].pid))
        {
            actor = (slot == ngx_http_lua_ffi_worker.slot);
            break;
        }
    }

done:

    ngx_shmtx_unlock(&ngx_http_lua_ffi_shpool->mutex);

    return actor;
}


/* A drop at path that no worker judged yet. */

ngx_uint_t
ngx_http_lua_ffi_shm_drop_pending(ngx_str_t *path)
{
    u_char      ident[96];
    ngx_int_t   i;
    ngx_uint_t  pending;

    pending = 0;
    ngx_http_lua_ffi_shm_file_ident(path->data, ident, sizeof(ident));

    ngx_shmtx_lock(&ngx_http_lua_ffi_shpool->mutex);

    i = ngx_http_lua_ffi_shm_find_path(path);
    if (i != NGX_ERROR) {
        pending = ngx_http_lua_ffi_shm_drop_open(
                                      &ngx_http_lua_ffi_shm->libs[i], ident);
    }

    ngx_shmtx_unlock(&ngx_http_lua_ffi_shpool->mutex);

    return pending;
}


void
ngx_http_lua_ffi_shm_note_drop(ngx_str_t *path, u_char *event,
    u_char *outcome)
{
    ngx_int_t                    i;
    ngx_http_lua_ffi_shm_lib_t  *sl;

    ngx_shmtx_lock(&ngx_http_lua_ffi_shpool->mutex);

    i = ngx_http_lua_ffi_shm_find_path(path);

    if (i != NGX_ERROR) {
        sl = &ngx_http_lua_ffi_shm->libs[i];
        sl->last_drop = ngx_time();

        if (event) {
            *ngx_cpystrn(sl->last_drop_event, event,
                         sizeof(sl->last_drop_event)) = '\0';
        }

        *ngx_cpystrn(sl->last_drop_outcome, outcome,
                     sizeof(sl->last_drop_outcome)) = '\0';
    }

    ngx_shmtx_unlock(&ngx_http_lua_ffi_shpool->mutex);
}


/*
 * A drop is judged only once the reload that recorded it ended: until
 * then its coordinator may die (SIGKILL) or exit, and a live watcher
 * must judge it again. drop_pid is set by CHECK with drop_ident and
 * cleared when that reload releases the turn; one left behind names a
 * coordinator that never finished. Called with the zone locked.
 */

ngx_uint_t
ngx_http_lua_ffi_shm_drop_open(ngx_http_lua_ffi_shm_lib_t *sl, u_char *ident)
{
    return ngx_strcmp(ident, sl->drop_ident) != 0 || sl->drop_pid != 0;
}


/* What tells two drops apart without reading them. */

void
ngx_http_lua_ffi_shm_file_ident(u_char *path, u_char *ident, size_t len)
{
    struct stat  st;

    if (stat((char *) path, &st) == -1) {
        *ngx_snprintf(ident, len - 1, "missing") = '\0';
        return;
    }

    *ngx_snprintf(ident, len - 1, "%uL:%uL:%O:%T.%l:%T.%l",
                  (uint64_t) st.st_dev, (uint64_t) st.st_ino,
                  (off_t) st.st_size, st.st_mtim.tv_sec,
                  (long) st.st_mtim.tv_nsec, st.st_ctim.tv_sec,
                  (long) st.st_ctim.tv_nsec) = '\0';
}


ngx_uint_t
ngx_http_lua_ffi_shm_alive(ngx_pid_t pid)
{
    if (pid == 0) {
        return 0;
    }

    return kill(pid, 0) == 0 || ngx_errno != NGX_ESRCH;
}


/*
 * An operation a worker runs for an admin request (a reload, a status):
 * zeroed memory, only where there is a zone to reach the other workers
 * through. NULL: no zone (not a worker of this module) or no memory.
 */

void *
ngx_http_lua_ffi_shm_op_alloc(size_t size)
{
    if (ngx_http_lua_ffi_shm == NULL) {
        return NULL;
    }

    return ngx_calloc(size, ngx_cycle->log);
}


/*
 * Its timer, which calls handler with the op, and its deadline, returned:
 * every such operation is bounded by ffi_reload_timeout from its start.
 */

ngx_msec_t
ngx_http_lua_ffi_shm_op_timer(ngx_event_t *timer, ngx_event_handler_pt handler,
    void *op, ngx_uint_t cancelable)
{
    timer->handler = handler;
    timer->data = op;
    timer->log = ngx_cycle->log;
    timer->cancelable = cancelable;

    return ngx_current_msec + ngx_http_lua_ffi_fmcf->reload_timeout;
}


void
ngx_http_lua_ffi_shm_notify_all(void)
{
    ssize_t     n;
    uint64_t    one = 1;
    ngx_uint_t  i;

    for (i = 0; i < ngx_http_lua_ffi_fmcf->nworkers; i++) {
        if (i == ngx_http_lua_ffi_worker.slot) {
            continue;
        }

        /* EAGAIN: that worker has a wakeup pending already */
        n = write(ngx_http_lua_ffi_fmcf->notify_fds[i], &one,
                  sizeof(uint64_t));
        (void) n;
    }
}
