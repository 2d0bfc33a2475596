/*
 * Reloads and status across workers: a shared zone holding each library's
 * current version and one command slot, and a two-phase protocol (prepare
 * everywhere, then commit or abort everywhere) driven by one coordinator.
 */

#include "ngx_http_lua_ffi_manager.h"
#include "ngx_http_lua_ffi_metrics.h"


#define NGX_HTTP_LUA_FFI_SHM_LIBS      64
#define NGX_HTTP_LUA_FFI_SHM_WORKERS   128
#define NGX_HTTP_LUA_FFI_RETRY_MSEC    10
#define NGX_HTTP_LUA_FFI_STATUS_MAX    (256 * 1024)


typedef enum {
    NGX_HTTP_LUA_FFI_CMD_NONE = 0,
    NGX_HTTP_LUA_FFI_CMD_PREPARE,
    NGX_HTTP_LUA_FFI_CMD_COMMIT,
    NGX_HTTP_LUA_FFI_CMD_ABORT
} ngx_http_lua_ffi_cmd_e;


typedef struct {
    u_char                        path[NGX_HTTP_LUA_FFI_PATHLEN];
    u_char                        names[NGX_HTTP_LUA_FFI_MAX_NAMES]
                                       [NGX_HTTP_LUA_FFI_NAMELEN];
    ngx_uint_t                    nnames;
    ngx_http_lua_ffi_version_t    current;
    ngx_uint_t                    reloads;
    ngx_uint_t                    failures;
    time_t                        last_reload;
    u_char                        last_error[NGX_HTTP_LUA_FFI_ERRLEN];
    ngx_uint_t                    watched;
    uint64_t                      watchers;    /* slots < 64 watching it */
    u_char                        drop_ident[96];
    time_t                        last_drop;
    u_char                        last_drop_event[32];
    u_char                        last_drop_outcome[NGX_HTTP_LUA_FFI_ERRLEN];
} ngx_http_lua_ffi_shm_lib_t;


typedef struct {
    ngx_pid_t                     pid;
    ngx_uint_t                    acked;       /* last command handled */
    ngx_int_t                     rc;
    u_char                        err[NGX_HTTP_LUA_FFI_ERRLEN];
    ngx_uint_t                    status_seq;  /* last status written */
    u_char                       *status;      /* slab: JSON */
    size_t                        status_len;
    unsigned                      status_wanted:1;
} ngx_http_lua_ffi_shm_worker_t;


typedef struct {
    ngx_uint_t                    seq;
    ngx_http_lua_ffi_cmd_e        type;
    ngx_uint_t                    lib;
    ngx_http_lua_ffi_version_t    v;
    ngx_pid_t                     owner;       /* coordinator, 0: idle */
    ngx_uint_t                    status_seq;
    ngx_uint_t                    nlibs;
    ngx_http_lua_ffi_shm_lib_t    libs[NGX_HTTP_LUA_FFI_SHM_LIBS];
    ngx_http_lua_ffi_shm_worker_t workers[NGX_HTTP_LUA_FFI_SHM_WORKERS];
} ngx_http_lua_ffi_shm_t;


typedef enum {
    NGX_HTTP_LUA_FFI_OP_RELOAD = 0,
    NGX_HTTP_LUA_FFI_OP_STATUS
} ngx_http_lua_ffi_op_type_e;


/* A reload or status request this worker coordinates. */
typedef struct {
    ngx_queue_t                       link;
    ngx_http_lua_ffi_op_type_e        type;
    ngx_http_lua_ffi_reload_done_pt   done;
    void                             *data;
    ngx_event_t                       timer;
    ngx_msec_t                        deadline;
    ngx_uint_t                        lib;
    ngx_uint_t                        seq;
    ngx_http_lua_ffi_cmd_e            phase;
    ngx_http_lua_ffi_version_t        v;
    ngx_uint_t                        changed;
    ngx_uint_t                        old_version;
    u_char                            old_shadow[NGX_HTTP_LUA_FFI_PATHLEN];
    u_char                            err[NGX_HTTP_LUA_FFI_ERRLEN];
    ngx_str_t                         name;
    u_char                            name_buf[NGX_HTTP_LUA_FFI_NAMELEN];
    ngx_uint_t                        flags;
    unsigned                          started:1;
} ngx_http_lua_ffi_op_t;


static ngx_int_t ngx_http_lua_ffi_shm_init(ngx_shm_zone_t *zone, void *data);
static void ngx_http_lua_ffi_op_run(ngx_http_lua_ffi_op_t *op);
static void ngx_http_lua_ffi_op_timer(ngx_event_t *ev);
static void ngx_http_lua_ffi_op_finish(ngx_http_lua_ffi_op_t *op,
    ngx_int_t status, u_char *body, size_t len, u_char *msg);
static void ngx_http_lua_ffi_op_error(ngx_http_lua_ffi_op_t *op,
    ngx_int_t status, u_char *msg);
static void ngx_http_lua_ffi_reload_begin(ngx_http_lua_ffi_op_t *op);
static void ngx_http_lua_ffi_reload_check(ngx_http_lua_ffi_op_t *op);
static void ngx_http_lua_ffi_status_check(ngx_http_lua_ffi_op_t *op);
static void ngx_http_lua_ffi_command(ngx_http_lua_ffi_cmd_e type,
    ngx_http_lua_ffi_op_t *op);
static void ngx_http_lua_ffi_handle_command(void);
static void ngx_http_lua_ffi_status_publish(void);
static ngx_uint_t ngx_http_lua_ffi_worker_alive(
    ngx_http_lua_ffi_shm_worker_t *sw);
static ngx_int_t ngx_http_lua_ffi_reload_trial(ngx_http_lua_ffi_op_t *op,
    ngx_str_t *path);


static ngx_http_lua_ffi_shm_t   *ngx_http_lua_ffi_shm;
static ngx_slab_pool_t          *ngx_http_lua_ffi_shpool;
static ngx_http_lua_ffi_main_conf_t  *ngx_http_lua_ffi_fmcf;
static ngx_queue_t               ngx_http_lua_ffi_ops;

static ngx_str_t  ngx_http_lua_ffi_shm_name = ngx_string("lua_resty_ffi");


ngx_int_t
ngx_http_lua_ffi_shm_add(ngx_conf_t *cf, ngx_http_lua_ffi_main_conf_t *fmcf)
{
    ngx_shm_zone_t  *zone;

    if (fmcf->shm_size < sizeof(ngx_http_lua_ffi_shm_t) + 65536) {
        fmcf->shm_size = sizeof(ngx_http_lua_ffi_shm_t) + 65536;
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
    ngx_http_lua_ffi_shm_worker_t  *sw;

    ngx_http_lua_ffi_fmcf = fmcf;
    ngx_http_lua_ffi_shpool = (ngx_slab_pool_t *) fmcf->shm_zone->shm.addr;
    ngx_http_lua_ffi_shm = ngx_http_lua_ffi_shpool->data;
    ngx_queue_init(&ngx_http_lua_ffi_ops);

    if (ngx_http_lua_ffi_worker.slot >= NGX_HTTP_LUA_FFI_SHM_WORKERS) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                      "ffi: at most %d worker processes are supported",
                      NGX_HTTP_LUA_FFI_SHM_WORKERS);
        return NGX_ERROR;
    }

    ngx_shmtx_lock(&ngx_http_lua_ffi_shpool->mutex);

    sw = &ngx_http_lua_ffi_shm->workers[ngx_http_lua_ffi_worker.slot];
    sw->pid = ngx_pid;

    /* a command issued before this worker existed concerns it no more */
    sw->acked = ngx_http_lua_ffi_shm->seq;
    sw->status_seq = ngx_http_lua_ffi_shm->status_seq;
    sw->status_wanted = 0;

    ngx_shmtx_unlock(&ngx_http_lua_ffi_shpool->mutex);

    return NGX_OK;
}


void
ngx_http_lua_ffi_manager_exit_worker(ngx_cycle_t *cycle)
{
    ngx_queue_t                    *q;
    ngx_http_lua_ffi_op_t          *op;
    ngx_http_lua_ffi_shm_worker_t  *sw;

    while (!ngx_queue_empty(&ngx_http_lua_ffi_ops)) {
        q = ngx_queue_head(&ngx_http_lua_ffi_ops);
        op = ngx_queue_data(q, ngx_http_lua_ffi_op_t, link);
        ngx_http_lua_ffi_op_error(op, NGX_HTTP_SERVICE_UNAVAILABLE,
                                  (u_char *) "worker exiting");
    }

    ngx_shmtx_lock(&ngx_http_lua_ffi_shpool->mutex);

    sw = &ngx_http_lua_ffi_shm->workers[ngx_http_lua_ffi_worker.slot];

    if (sw->pid == ngx_pid) {
        sw->pid = 0;
    }

    if (ngx_http_lua_ffi_shm->owner == ngx_pid) {
        ngx_http_lua_ffi_shm->owner = 0;
    }

    ngx_shmtx_unlock(&ngx_http_lua_ffi_shpool->mutex);
}


static ngx_int_t
ngx_http_lua_ffi_shm_find_name(ngx_str_t *name)
{
    ngx_uint_t                   i, j;
    ngx_http_lua_ffi_shm_lib_t  *sl;

    for (i = 0; i < ngx_http_lua_ffi_shm->nlibs; i++) {
        sl = &ngx_http_lua_ffi_shm->libs[i];

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


static ngx_int_t
ngx_http_lua_ffi_shm_find_path(ngx_str_t *path)
{
    ngx_uint_t                   i;
    ngx_http_lua_ffi_shm_lib_t  *sl;

    for (i = 0; i < ngx_http_lua_ffi_shm->nlibs; i++) {
        sl = &ngx_http_lua_ffi_shm->libs[i];

        if (ngx_strlen(sl->path) == path->len
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


/*
 * The version every worker maps for this library file. The first worker
 * to need a library checks and copies it; later ones, and workers started
 * later, map that same copy even if the file has changed since: a new
 * file only takes effect through a reload, in all workers at once.
 */

ngx_int_t
ngx_http_lua_ffi_shm_current(ngx_str_t *path, ngx_str_t *name,
    ngx_str_t *cfg, ngx_http_lua_ffi_version_t *v, u_char *err,
    size_t errlen)
{
    ngx_int_t                    i, rc;
    ngx_http_lua_ffi_shm_lib_t  *sl;
    ngx_http_lua_ffi_version_t   nv;

    ngx_shmtx_lock(&ngx_http_lua_ffi_shpool->mutex);

    i = ngx_http_lua_ffi_shm_find_path(path);

    if (i != NGX_ERROR && ngx_http_lua_ffi_shm->libs[i].current.version) {
        sl = &ngx_http_lua_ffi_shm->libs[i];
        ngx_http_lua_ffi_shm_add_name(sl, name);
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
        && ngx_http_lua_ffi_trial(nv.shadow, path, cfg, 1, err, errlen)
           != NGX_OK)
    {
        ngx_http_lua_ffi_shadow_remove(&nv);
        return NGX_DECLINED;
    }

    ngx_shmtx_lock(&ngx_http_lua_ffi_shpool->mutex);

    i = ngx_http_lua_ffi_shm_find_path(path);

    if (i == NGX_ERROR) {
        if (ngx_http_lua_ffi_shm->nlibs == NGX_HTTP_LUA_FFI_SHM_LIBS
            || path->len >= NGX_HTTP_LUA_FFI_PATHLEN)
        {
            ngx_shmtx_unlock(&ngx_http_lua_ffi_shpool->mutex);
            ngx_http_lua_ffi_shadow_remove(&nv);
            ngx_snprintf(err, errlen, "too many libraries (at most %d)%Z",
                         NGX_HTTP_LUA_FFI_SHM_LIBS);
            return NGX_ERROR;
        }

        i = ngx_http_lua_ffi_shm->nlibs++;
        sl = &ngx_http_lua_ffi_shm->libs[i];
        ngx_memzero(sl, sizeof(ngx_http_lua_ffi_shm_lib_t));
        ngx_memcpy(sl->path, path->data, path->len);
    }

    sl = &ngx_http_lua_ffi_shm->libs[i];
    ngx_http_lua_ffi_shm_add_name(sl, name);

    if (sl->current.version == 0) {
        nv.version = 1;
        sl->current = nv;

    } else {
        /* another worker won the race: everyone maps its copy */
        ngx_http_lua_ffi_shadow_remove(&nv);
    }

    *v = sl->current;

    ngx_shmtx_unlock(&ngx_http_lua_ffi_shpool->mutex);

    return NGX_OK;
}


void
ngx_http_lua_ffi_shm_set_watched(ngx_str_t *path)
{
    ngx_int_t   i;
    ngx_uint_t  slot;

    ngx_shmtx_lock(&ngx_http_lua_ffi_shpool->mutex);

    i = ngx_http_lua_ffi_shm_find_path(path);
    if (i != NGX_ERROR) {
        ngx_http_lua_ffi_shm->libs[i].watched = 1;

        slot = ngx_http_lua_ffi_worker.slot;

        if (slot < 64) {
            ngx_http_lua_ffi_shm->libs[i].watchers |= (uint64_t) 1 << slot;
        }
    }

    ngx_shmtx_unlock(&ngx_http_lua_ffi_shpool->mutex);
}


/*
 * Every worker watching a folder sees a drop; the live watcher in the
 * lowest slot acts on it, so one drop makes one reload or one refusal.
 */

ngx_uint_t
ngx_http_lua_ffi_shm_watch_actor(ngx_str_t *path)
{
    ngx_int_t   i;
    ngx_uint_t  slot, actor;
    uint64_t    mask;

    actor = 1;

    if (ngx_http_lua_ffi_worker.slot >= 64) {
        return actor;
    }

    ngx_shmtx_lock(&ngx_http_lua_ffi_shpool->mutex);

    i = ngx_http_lua_ffi_shm_find_path(path);
    mask = (i == NGX_ERROR) ? 0 : ngx_http_lua_ffi_shm->libs[i].watchers;

    for (slot = 0; slot < ngx_http_lua_ffi_fmcf->nworkers && slot < 64;
         slot++)
    {
        if ((mask & ((uint64_t) 1 << slot))
            && ngx_http_lua_ffi_worker_alive(
                                  &ngx_http_lua_ffi_shm->workers[slot]))
        {
            actor = (slot == ngx_http_lua_ffi_worker.slot);
            break;
        }
    }

    ngx_shmtx_unlock(&ngx_http_lua_ffi_shpool->mutex);

    return actor;
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


/* What tells two drops apart without reading them. */

static void
ngx_http_lua_ffi_file_ident(u_char *path, u_char *ident, size_t len)
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


static ngx_uint_t
ngx_http_lua_ffi_worker_alive(ngx_http_lua_ffi_shm_worker_t *sw)
{
    if (sw->pid == 0) {
        return 0;
    }

    return kill(sw->pid, 0) == 0 || ngx_errno != NGX_ESRCH;
}


static void
ngx_http_lua_ffi_notify_all(void)
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


/* ---- the coordinator ---- */


static ngx_http_lua_ffi_op_t *
ngx_http_lua_ffi_op_create(ngx_http_lua_ffi_op_type_e type,
    ngx_http_lua_ffi_reload_done_pt done, void *data)
{
    ngx_http_lua_ffi_op_t  *op;

    op = ngx_calloc(sizeof(ngx_http_lua_ffi_op_t), ngx_cycle->log);
    if (op == NULL) {
        return NULL;
    }

    op->type = type;
    op->done = done;
    op->data = data;
    op->timer.handler = ngx_http_lua_ffi_op_timer;
    op->timer.data = op;
    op->timer.log = ngx_cycle->log;
    op->timer.cancelable = 1;
    op->deadline = ngx_current_msec + ngx_http_lua_ffi_fmcf->reload_timeout;

    ngx_queue_insert_tail(&ngx_http_lua_ffi_ops, &op->link);

    return op;
}


ngx_int_t
ngx_http_lua_ffi_reload_start(ngx_str_t *name, ngx_uint_t flags,
    ngx_http_lua_ffi_reload_done_pt done, void *data)
{
    ngx_http_lua_ffi_op_t  *op;

    if (ngx_http_lua_ffi_shm == NULL) {
        return NGX_ERROR;
    }

    op = ngx_http_lua_ffi_op_create(NGX_HTTP_LUA_FFI_OP_RELOAD, done, data);
    if (op == NULL) {
        return NGX_ERROR;
    }

    op->flags = flags;
    op->name.data = op->name_buf;
    op->name.len = ngx_min(name->len, NGX_HTTP_LUA_FFI_NAMELEN - 1);
    ngx_memcpy(op->name_buf, name->data, op->name.len);

    ngx_http_lua_ffi_op_run(op);

    return NGX_OK;
}


ngx_int_t
ngx_http_lua_ffi_status_start(ngx_http_lua_ffi_reload_done_pt done,
    void *data)
{
    ngx_http_lua_ffi_op_t  *op;

    if (ngx_http_lua_ffi_shm == NULL) {
        return NGX_ERROR;
    }

    op = ngx_http_lua_ffi_op_create(NGX_HTTP_LUA_FFI_OP_STATUS, done, data);
    if (op == NULL) {
        return NGX_ERROR;
    }

    ngx_http_lua_ffi_op_run(op);

    return NGX_OK;
}


/* The client went away: the operation goes on, nobody hears the end. */

void
ngx_http_lua_ffi_reload_cancel(void *data)
{
    ngx_queue_t            *q;
    ngx_http_lua_ffi_op_t  *op;

    for (q = ngx_queue_head(&ngx_http_lua_ffi_ops);
         q != ngx_queue_sentinel(&ngx_http_lua_ffi_ops);
         q = ngx_queue_next(q))
    {
        op = ngx_queue_data(q, ngx_http_lua_ffi_op_t, link);

        if (op->data == data) {
            op->done = NULL;
        }
    }
}


static void
ngx_http_lua_ffi_op_run(ngx_http_lua_ffi_op_t *op)
{
    if (op->type == NGX_HTTP_LUA_FFI_OP_STATUS) {
        ngx_http_lua_ffi_status_check(op);
        return;
    }

    if (!op->started) {
        ngx_http_lua_ffi_reload_begin(op);
        return;
    }

    ngx_http_lua_ffi_reload_check(op);
}


static void
ngx_http_lua_ffi_op_timer(ngx_event_t *ev)
{
    ngx_http_lua_ffi_op_run(ev->data);
}


static void
ngx_http_lua_ffi_op_finish(ngx_http_lua_ffi_op_t *op, ngx_int_t status,
    u_char *body, size_t len, u_char *msg)
{
    if (op->timer.timer_set) {
        ngx_del_timer(&op->timer);
    }

    ngx_queue_remove(&op->link);

    if (op->done) {
        op->done(op->data, status, body, len, msg);
    }

    ngx_free(op);
}


static void
ngx_http_lua_ffi_op_error(ngx_http_lua_ffi_op_t *op, ngx_int_t status,
    u_char *msg)
{
    u_char   buf[NGX_HTTP_LUA_FFI_ERRLEN * 2 + 32], *p;

    p = ngx_cpymem(buf, "{\"error\":", sizeof("{\"error\":") - 1);
    p = ngx_http_lua_ffi_json_str(p, buf + sizeof(buf) - 2, msg,
                                  ngx_strlen(msg));
    *p++ = '}';

    ngx_http_lua_ffi_op_finish(op, status, buf, p - buf, msg);
}


static void
ngx_http_lua_ffi_op_wait(ngx_http_lua_ffi_op_t *op, ngx_msec_t msec)
{
    if (op->timer.timer_set) {
        ngx_del_timer(&op->timer);
    }

    ngx_add_timer(&op->timer, msec);
}


/*
 * Reload, step 1: become the coordinator, check the file and make its
 * shadow copy, then ask every worker (this one included) to prepare.
 */

static void
ngx_http_lua_ffi_reload_begin(ngx_http_lua_ffi_op_t *op)
{
    ngx_int_t                    i, rc;
    ngx_str_t                    path;
    ngx_pid_t                    owner;
    ngx_http_lua_ffi_shm_t      *sh = ngx_http_lua_ffi_shm;
    ngx_http_lua_ffi_shm_lib_t  *sl;
    ngx_http_lua_ffi_version_t   cur;
    u_char                       path_buf[NGX_HTTP_LUA_FFI_PATHLEN];
    u_char                       ident[96];

    ngx_shmtx_lock(&ngx_http_lua_ffi_shpool->mutex);

    i = ngx_http_lua_ffi_shm_find_name(&op->name);

    if (i == NGX_ERROR) {
        ngx_shmtx_unlock(&ngx_http_lua_ffi_shpool->mutex);
        ngx_http_lua_ffi_op_error(op, NGX_HTTP_NOT_FOUND,
                                  (u_char *) "unknown library");
        return;
    }

    owner = sh->owner;

    if (owner && owner != ngx_pid
        && (kill(owner, 0) == 0 || ngx_errno != NGX_ESRCH))
    {
        ngx_shmtx_unlock(&ngx_http_lua_ffi_shpool->mutex);

        /* one reload at a time, in the whole server: wait our turn */
        if ((ngx_msec_int_t) (op->deadline - ngx_current_msec) <= 0) {
            ngx_http_lua_ffi_metrics_reload(sh->libs[i].path,
                                    sh->libs[i].names[0],
                                    NGX_HTTP_LUA_FFI_RELOAD_REFUSED_BUSY, 0);
            ngx_http_lua_ffi_op_error(op, NGX_HTTP_SERVICE_UNAVAILABLE,
                              (u_char *) "another reload did not finish");
            return;
        }

        ngx_http_lua_ffi_op_wait(op, NGX_HTTP_LUA_FFI_RETRY_MSEC);
        return;
    }

    if (owner == ngx_pid && op != ngx_queue_data(
                            ngx_queue_head(&ngx_http_lua_ffi_ops),
                            ngx_http_lua_ffi_op_t, link))
    {
        ngx_shmtx_unlock(&ngx_http_lua_ffi_shpool->mutex);
        ngx_http_lua_ffi_op_wait(op, NGX_HTTP_LUA_FFI_RETRY_MSEC);
        return;
    }

    sl = &sh->libs[i];

    if (op->flags & NGX_HTTP_LUA_FFI_RELOAD_IF_CHANGED) {
        /*
         * Every worker watching the folder sees a drop: the first to get
         * here acts on it, the others find it already handled, refused
         * files included.
         */
        ngx_http_lua_ffi_file_ident(sl->path, ident, sizeof(ident));

        if (ngx_strcmp(ident, sl->drop_ident) == 0) {
            ngx_shmtx_unlock(&ngx_http_lua_ffi_shpool->mutex);
            ngx_http_lua_ffi_op_finish(op, NGX_HTTP_NOT_MODIFIED, NULL, 0,
                                       NULL);
            return;
        }

        ngx_memcpy(sl->drop_ident, ident, sizeof(ident));
    }

    sh->owner = ngx_pid;
    cur = sl->current;
    path.len = ngx_strlen(sl->path);
    path.data = ngx_cpymem(path_buf, sl->path, path.len + 1) - path.len - 1;

    ngx_shmtx_unlock(&ngx_http_lua_ffi_shpool->mutex);

    op->started = 1;
    op->lib = i;
    op->old_version = cur.version;
    ngx_memcpy(op->old_shadow, cur.shadow, NGX_HTTP_LUA_FFI_PATHLEN);

    rc = ngx_http_lua_ffi_shadow_create(&path, &op->v,
                                        op->flags
                                        & NGX_HTTP_LUA_FFI_RELOAD_STRICT,
                                        op->err, NGX_HTTP_LUA_FFI_ERRLEN);

    if (rc == NGX_AGAIN && (op->flags & NGX_HTTP_LUA_FFI_RELOAD_IF_CHANGED)) {
        /* a drop still being written: its close will bring us back */
        ngx_shmtx_lock(&ngx_http_lua_ffi_shpool->mutex);
        sh->libs[i].drop_ident[0] = '\0';
        sh->owner = 0;
        ngx_shmtx_unlock(&ngx_http_lua_ffi_shpool->mutex);

        ngx_http_lua_ffi_op_finish(op, NGX_HTTP_NOT_MODIFIED, NULL, 0,
                                   NULL);
        return;
    }

    if (rc != NGX_OK) {
        goto failed;
    }

    op->changed = (op->v.hash != cur.hash);

    if (!op->changed) {
        ngx_http_lua_ffi_shadow_remove(&op->v);
    }

    if (!op->changed && (op->flags & NGX_HTTP_LUA_FFI_RELOAD_IF_CHANGED)) {
        /* another worker saw the same drop first and reloaded it */
        ngx_shmtx_lock(&ngx_http_lua_ffi_shpool->mutex);
        sh->owner = 0;
        ngx_shmtx_unlock(&ngx_http_lua_ffi_shpool->mutex);

        ngx_http_lua_ffi_op_finish(op, NGX_HTTP_NOT_MODIFIED, NULL, 0,
                                   NULL);
        return;
    }

    if (!op->changed) {
        op->v = cur;

    } else if (cur.pin_reason != NGX_HTTP_LUA_FFI_PIN_NONE
               || op->v.pin_reason != NGX_HTTP_LUA_FFI_PIN_NONE)
    {
        ngx_snprintf(op->err, NGX_HTTP_LUA_FFI_ERRLEN,
                     "\"%V\" changed, but it cannot be unloaded (it needs "
                     "the %s runtime): restart nginx to load the new file, "
                     "or reload with the file unchanged to restart its "
                     "runtimes%Z", &path,
                     ngx_http_lua_ffi_pin_reason_name(
                         cur.pin_reason ? cur.pin_reason
                                        : op->v.pin_reason));
        ngx_http_lua_ffi_shadow_remove(&op->v);
        rc = NGX_BUSY;
        goto failed;
    }

    op->v.version = cur.version + 1;

    if (op->changed && ngx_http_lua_ffi_fmcf->trial
        && ngx_http_lua_ffi_reload_trial(op, &path) != NGX_OK)
    {
        ngx_http_lua_ffi_shadow_remove(&op->v);
        rc = NGX_DECLINED;
        goto failed;
    }

    ngx_http_lua_ffi_command(NGX_HTTP_LUA_FFI_CMD_PREPARE, op);
    ngx_http_lua_ffi_reload_check(op);

    return;

failed:

    ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0, "ffi: reload of \"%V\" "
                  "refused: %s", &op->name, op->err);

    ngx_shmtx_lock(&ngx_http_lua_ffi_shpool->mutex);
    sl = &sh->libs[op->lib];
    sl->failures++;
    ngx_memcpy(sl->last_error, op->err, NGX_HTTP_LUA_FFI_ERRLEN);
    sh->owner = 0;
    ngx_shmtx_unlock(&ngx_http_lua_ffi_shpool->mutex);

    ngx_http_lua_ffi_metrics_reload(sl->path, sl->names[0],
                                    (rc == NGX_BUSY)
                                    ? NGX_HTTP_LUA_FFI_RELOAD_CONFLICT
                                    : (rc == NGX_DECLINED)
                                      ? NGX_HTTP_LUA_FFI_RELOAD_REFUSED_TRIAL
                                      : NGX_HTTP_LUA_FFI_RELOAD_REFUSED_FILE,
                                    0);

    ngx_http_lua_ffi_op_error(op, (rc == NGX_BUSY)
                                  ? NGX_HTTP_CONFLICT
                                  : NGX_HTTP_UNPROCESSABLE_ENTITY,
                              op->err);
}


/* The new image with the cfg of every runtime this worker has of it. */

static ngx_int_t
ngx_http_lua_ffi_reload_trial(ngx_http_lua_ffi_op_t *op, ngx_str_t *path)
{
    ngx_uint_t                   n;
    ngx_str_t                    cfgs[16];
    ngx_queue_t                 *q;
    ngx_http_lua_ffi_handle_t   *h;
    ngx_http_lua_ffi_library_t  *lib;

    n = 0;
    lib = ngx_http_lua_ffi_registry_library(path);

    if (lib) {
        for (q = ngx_queue_head(&lib->handles);
             q != ngx_queue_sentinel(&lib->handles) && n < 16;
             q = ngx_queue_next(q))
        {
            h = ngx_queue_data(q, ngx_http_lua_ffi_handle_t, link);

            /* the trial takes C strings: copies end where a NUL is */
            cfgs[n].len = h->cfg.len;
            cfgs[n].data = h->has_cfg
                           ? ngx_pnalloc(ngx_cycle->pool, h->cfg.len + 1)
                           : NULL;

            if (cfgs[n].data) {
                ngx_memcpy(cfgs[n].data, h->cfg.data, h->cfg.len);
                cfgs[n].data[h->cfg.len] = '\0';
            }

            n++;
        }
    }

    if (n == 0) {
        cfgs[n].data = NULL;
        cfgs[n].len = 0;
        n++;
    }

    return ngx_http_lua_ffi_trial(op->v.shadow, path, cfgs, n, op->err,
                                  NGX_HTTP_LUA_FFI_ERRLEN);
}


/* Publishes a command, carries it out here, and tells the others. */

static void
ngx_http_lua_ffi_command(ngx_http_lua_ffi_cmd_e type, ngx_http_lua_ffi_op_t *op)
{
    ngx_http_lua_ffi_shm_t  *sh = ngx_http_lua_ffi_shm;

    ngx_shmtx_lock(&ngx_http_lua_ffi_shpool->mutex);

    sh->seq++;
    sh->type = type;
    sh->lib = op->lib;
    sh->v = op->v;
    op->seq = sh->seq;
    op->phase = type;

    if (type == NGX_HTTP_LUA_FFI_CMD_COMMIT) {
        sh->libs[op->lib].current = op->v;
        sh->libs[op->lib].reloads++;
        sh->libs[op->lib].last_reload = ngx_time();
        sh->libs[op->lib].last_error[0] = '\0';
    }

    ngx_shmtx_unlock(&ngx_http_lua_ffi_shpool->mutex);

    ngx_http_lua_ffi_notify_all();
    ngx_http_lua_ffi_handle_command();
}


/*
 * Counts the workers that answered the current command. NGX_AGAIN: some
 * live worker has not yet; NGX_OK: all did and all succeeded; NGX_ERROR:
 * one failed, op->err says which and why.
 */

static ngx_int_t
ngx_http_lua_ffi_acks(ngx_http_lua_ffi_op_t *op)
{
    ngx_int_t                       rc;
    ngx_uint_t                      i;
    ngx_http_lua_ffi_shm_worker_t  *sw;

    rc = NGX_OK;

    ngx_shmtx_lock(&ngx_http_lua_ffi_shpool->mutex);

    for (i = 0; i < ngx_http_lua_ffi_fmcf->nworkers; i++) {
        sw = &ngx_http_lua_ffi_shm->workers[i];

        if (!ngx_http_lua_ffi_worker_alive(sw)) {
            continue;
        }

        if (sw->acked < op->seq) {
            rc = NGX_AGAIN;
            break;
        }

        if (sw->rc != NGX_OK && rc == NGX_OK) {
            ngx_snprintf(op->err, NGX_HTTP_LUA_FFI_ERRLEN,
                         "worker %P: %s%Z", sw->pid, sw->err);
            rc = NGX_ERROR;
        }
    }

    ngx_shmtx_unlock(&ngx_http_lua_ffi_shpool->mutex);

    return rc;
}


static void
ngx_http_lua_ffi_reload_check(ngx_http_lua_ffi_op_t *op)
{
    u_char                   body[512], *p;
    ngx_int_t                rc;
    ngx_http_lua_ffi_shm_t  *sh = ngx_http_lua_ffi_shm;

    rc = ngx_http_lua_ffi_acks(op);

    if (rc == NGX_AGAIN) {
        if ((ngx_msec_int_t) (op->deadline - ngx_current_msec) > 0) {
            /* answers come through the eventfd; the timer is a backstop */
            ngx_http_lua_ffi_op_wait(op, 100);
            return;
        }

        ngx_snprintf(op->err, NGX_HTTP_LUA_FFI_ERRLEN, "a worker did not "
                     "answer within %M ms (ffi_reload_timeout)%Z",
                     ngx_http_lua_ffi_fmcf->reload_timeout);
        rc = NGX_ERROR;
    }

    switch (op->phase) {

    case NGX_HTTP_LUA_FFI_CMD_PREPARE:
        if (rc == NGX_OK) {
            op->deadline = ngx_current_msec
                           + ngx_http_lua_ffi_fmcf->reload_timeout;
            ngx_http_lua_ffi_command(NGX_HTTP_LUA_FFI_CMD_COMMIT, op);

        } else {
            ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                          "ffi: reload of \"%V\" failed, the running "
                          "version serves on: %s", &op->name, op->err);
            op->deadline = ngx_current_msec
                           + ngx_http_lua_ffi_fmcf->reload_timeout;
            ngx_http_lua_ffi_command(NGX_HTTP_LUA_FFI_CMD_ABORT, op);
        }

        ngx_http_lua_ffi_reload_check(op);
        return;

    case NGX_HTTP_LUA_FFI_CMD_COMMIT:

        if (op->changed && ngx_strcmp(op->old_shadow, op->v.shadow) != 0) {
            /* every worker that maps the old copy already has it mapped */
            (void) unlink((char *) op->old_shadow);
        }

        ngx_shmtx_lock(&ngx_http_lua_ffi_shpool->mutex);
        sh->owner = 0;
        ngx_shmtx_unlock(&ngx_http_lua_ffi_shpool->mutex);

        ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                      "ffi: \"%V\" reloaded: version %ui%s",
                      &op->name, op->v.version,
                      op->changed ? "" : " (same file, runtimes restarted)");

        ngx_http_lua_ffi_metrics_reload(sh->libs[op->lib].path,
                                        sh->libs[op->lib].names[0],
                                        NGX_HTTP_LUA_FFI_RELOAD_OK,
                                        op->v.version);

        p = ngx_slprintf(body, body + sizeof(body) - 256, "{\"lib\":");
        p = ngx_http_lua_ffi_json_str(p, body + sizeof(body) - 200,
                                      op->name.data, op->name.len);
        p = ngx_slprintf(p, body + sizeof(body),
                         ",\"version\":%ui,\"previous_version\":%ui,"
                         "\"build_id\":\"%s\",\"changed\":%s}",
                         op->v.version, op->old_version, op->v.build_id,
                         op->changed ? "true" : "false");

        ngx_http_lua_ffi_op_finish(op, NGX_HTTP_OK, body, p - body, NULL);
        break;

    default: /* NGX_HTTP_LUA_FFI_CMD_ABORT */

        if (op->changed && ngx_strcmp(op->old_shadow, op->v.shadow) != 0) {
            ngx_http_lua_ffi_shadow_remove(&op->v);
        }

        ngx_shmtx_lock(&ngx_http_lua_ffi_shpool->mutex);
        sh->libs[op->lib].failures++;
        ngx_memcpy(sh->libs[op->lib].last_error, op->err,
                   NGX_HTTP_LUA_FFI_ERRLEN);
        sh->owner = 0;
        ngx_shmtx_unlock(&ngx_http_lua_ffi_shpool->mutex);

        ngx_http_lua_ffi_metrics_reload(sh->libs[op->lib].path,
                                    sh->libs[op->lib].names[0],
                                    NGX_HTTP_LUA_FFI_RELOAD_REFUSED_PREPARE, 0);

        ngx_http_lua_ffi_op_error(op, NGX_HTTP_UNPROCESSABLE_ENTITY, op->err);
        break;
    }
}


/* ---- every worker ---- */


/*
 * Called on every wakeup of this worker's eventfd: carries out a command
 * it has not seen, publishes its status if asked, and lets the operations
 * it coordinates look at the answers.
 */

void
ngx_http_lua_ffi_reload_notified(void)
{
    ngx_queue_t            *q, *next;
    ngx_http_lua_ffi_op_t  *op;

    if (ngx_http_lua_ffi_shm == NULL) {
        return;
    }

    ngx_http_lua_ffi_handle_command();
    ngx_http_lua_ffi_status_publish();

    for (q = ngx_queue_head(&ngx_http_lua_ffi_ops);
         q != ngx_queue_sentinel(&ngx_http_lua_ffi_ops);
         q = next)
    {
        next = ngx_queue_next(q);
        op = ngx_queue_data(q, ngx_http_lua_ffi_op_t, link);

        if (op->started || op->type == NGX_HTTP_LUA_FFI_OP_STATUS) {
            ngx_http_lua_ffi_op_run(op);
        }
    }
}


static void
ngx_http_lua_ffi_handle_command(void)
{
    ngx_int_t                       rc;
    ngx_str_t                       path;
    ngx_uint_t                      seq, lib;
    ngx_http_lua_ffi_cmd_e          type;
    ngx_http_lua_ffi_version_t      v;
    ngx_http_lua_ffi_library_t     *library;
    ngx_http_lua_ffi_shm_worker_t  *sw;
    u_char                          err[NGX_HTTP_LUA_FFI_ERRLEN];
    u_char                          path_buf[NGX_HTTP_LUA_FFI_PATHLEN];

    ngx_shmtx_lock(&ngx_http_lua_ffi_shpool->mutex);

    sw = &ngx_http_lua_ffi_shm->workers[ngx_http_lua_ffi_worker.slot];

    /* a worker of an older configuration has lost its slot: not ours */
    if (sw->pid != ngx_pid || sw->acked >= ngx_http_lua_ffi_shm->seq) {
        ngx_shmtx_unlock(&ngx_http_lua_ffi_shpool->mutex);
        return;
    }

    seq = ngx_http_lua_ffi_shm->seq;
    type = ngx_http_lua_ffi_shm->type;
    lib = ngx_http_lua_ffi_shm->lib;
    v = ngx_http_lua_ffi_shm->v;
    path.len = ngx_strlen(ngx_http_lua_ffi_shm->libs[lib].path);
    path.data = path_buf;
    ngx_memcpy(path_buf, ngx_http_lua_ffi_shm->libs[lib].path, path.len + 1);

    ngx_shmtx_unlock(&ngx_http_lua_ffi_shpool->mutex);

    library = ngx_http_lua_ffi_registry_library(&path);
    rc = NGX_OK;
    err[0] = '\0';

    if (library) {
        switch (type) {

        case NGX_HTTP_LUA_FFI_CMD_PREPARE:
            rc = ngx_http_lua_ffi_registry_prepare(library, &v, err,
                                                   sizeof(err));
            break;

        case NGX_HTTP_LUA_FFI_CMD_COMMIT:
            ngx_http_lua_ffi_registry_commit(library, v.version);
            break;

        default:
            ngx_http_lua_ffi_registry_abort(library);
            break;
        }
    }

    ngx_shmtx_lock(&ngx_http_lua_ffi_shpool->mutex);
    sw->acked = seq;
    sw->rc = rc;
    ngx_memcpy(sw->err, err, sizeof(err));
    ngx_shmtx_unlock(&ngx_http_lua_ffi_shpool->mutex);

    ngx_http_lua_ffi_notify_all();
}


/* ---- status ---- */


static void
ngx_http_lua_ffi_status_publish(void)
{
    u_char                         *buf, *p, *copy;
    ngx_uint_t                      seq;
    ngx_http_lua_ffi_shm_worker_t  *sw;

    sw = &ngx_http_lua_ffi_shm->workers[ngx_http_lua_ffi_worker.slot];

    seq = ngx_http_lua_ffi_shm->status_seq;

    if (sw->pid != ngx_pid || sw->status_seq >= seq) {
        return;
    }

    buf = ngx_alloc(NGX_HTTP_LUA_FFI_STATUS_MAX, ngx_cycle->log);
    if (buf == NULL) {
        return;
    }

    p = ngx_slprintf(buf, buf + NGX_HTTP_LUA_FFI_STATUS_MAX,
                     "{\"slot\":%ui,\"pid\":%P,\"inflight\":%ui,"
                     "\"libraries\":",
                     ngx_http_lua_ffi_worker.slot, ngx_pid,
                     ngx_http_lua_ffi_worker.inflight);
    p = ngx_http_lua_ffi_registry_status(p, buf + NGX_HTTP_LUA_FFI_STATUS_MAX
                                            - 1);
    *p++ = '}';

    ngx_shmtx_lock(&ngx_http_lua_ffi_shpool->mutex);

    copy = ngx_slab_alloc_locked(ngx_http_lua_ffi_shpool, p - buf);

    if (copy) {
        ngx_memcpy(copy, buf, p - buf);

        if (sw->status) {
            ngx_slab_free_locked(ngx_http_lua_ffi_shpool, sw->status);
        }

        sw->status = copy;
        sw->status_len = p - buf;
    }

    sw->status_seq = ngx_http_lua_ffi_shm->status_seq;

    ngx_shmtx_unlock(&ngx_http_lua_ffi_shpool->mutex);

    ngx_free(buf);

    ngx_http_lua_ffi_notify_all();
}


static u_char *
ngx_http_lua_ffi_status_libraries(u_char *p, u_char *last)
{
    ngx_uint_t                   i, j;
    ngx_http_lua_ffi_shm_lib_t  *sl;

    p = ngx_slprintf(p, last, "[");

    for (i = 0; i < ngx_http_lua_ffi_shm->nlibs; i++) {
        sl = &ngx_http_lua_ffi_shm->libs[i];

        p = ngx_slprintf(p, last, "%s{\"name\":", i ? "," : "");
        p = ngx_http_lua_ffi_json_str(p, last, sl->names[0],
                                      ngx_strlen(sl->names[0]));
        p = ngx_slprintf(p, last, ",\"names\":[");

        for (j = 0; j < sl->nnames; j++) {
            p = ngx_slprintf(p, last, "%s", j ? "," : "");
            p = ngx_http_lua_ffi_json_str(p, last, sl->names[j],
                                          ngx_strlen(sl->names[j]));
        }

        p = ngx_slprintf(p, last, "],\"path\":");
        p = ngx_http_lua_ffi_json_str(p, last, sl->path,
                                      ngx_strlen(sl->path));
        p = ngx_slprintf(p, last, ",\"version\":%ui,\"build_id\":\"%s\","
                         "\"pin_reason\":\"%s\",\"reloads\":%ui,"
                         "\"failed_reloads\":%ui,\"last_reload\":%T,"
                         "\"last_error\":",
                         sl->current.version, sl->current.build_id,
                         ngx_http_lua_ffi_pin_reason_name(
                                                   sl->current.pin_reason),
                         sl->reloads, sl->failures, sl->last_reload);
        p = ngx_http_lua_ffi_json_str(p, last, sl->last_error,
                                      ngx_strlen(sl->last_error));
        p = ngx_slprintf(p, last, ",\"watched\":%s,\"last_drop\":",
                         sl->watched ? "true" : "false");

        if (sl->last_drop) {
            p = ngx_slprintf(p, last, "{\"time\":%T,\"event\":\"%s\","
                             "\"outcome\":", sl->last_drop,
                             sl->last_drop_event);
            p = ngx_http_lua_ffi_json_str(p, last, sl->last_drop_outcome,
                                   ngx_strlen(sl->last_drop_outcome));
            p = ngx_slprintf(p, last, "}");

        } else {
            p = ngx_slprintf(p, last, "null");
        }

        p = ngx_slprintf(p, last, ",\"reloading\":%s}",
                         (ngx_http_lua_ffi_shm->owner
                          && ngx_http_lua_ffi_shm->lib == i)
                         ? "true" : "false");
    }

    return ngx_slprintf(p, last, "]");
}


static void
ngx_http_lua_ffi_status_check(ngx_http_lua_ffi_op_t *op)
{
    u_char                         *buf, *p, *last;
    ngx_uint_t                      i, n, waiting;
    ngx_http_lua_ffi_shm_worker_t  *sw;

    if (!op->started) {
        op->started = 1;

        ngx_shmtx_lock(&ngx_http_lua_ffi_shpool->mutex);
        op->seq = ++ngx_http_lua_ffi_shm->status_seq;
        ngx_shmtx_unlock(&ngx_http_lua_ffi_shpool->mutex);

        ngx_http_lua_ffi_notify_all();
        ngx_http_lua_ffi_status_publish();
    }

    waiting = 0;

    ngx_shmtx_lock(&ngx_http_lua_ffi_shpool->mutex);

    for (i = 0; i < ngx_http_lua_ffi_fmcf->nworkers; i++) {
        sw = &ngx_http_lua_ffi_shm->workers[i];

        if (ngx_http_lua_ffi_worker_alive(sw) && sw->status_seq < op->seq) {
            waiting++;
        }
    }

    ngx_shmtx_unlock(&ngx_http_lua_ffi_shpool->mutex);

    if (waiting && (ngx_msec_int_t) (op->deadline - ngx_current_msec) > 0) {
        ngx_http_lua_ffi_op_wait(op, 100);
        return;
    }

    n = ngx_http_lua_ffi_fmcf->nworkers;
    buf = ngx_alloc(NGX_HTTP_LUA_FFI_STATUS_MAX * (n + 1), ngx_cycle->log);
    if (buf == NULL) {
        ngx_http_lua_ffi_op_error(op, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                  (u_char *) "no memory");
        return;
    }

    last = buf + NGX_HTTP_LUA_FFI_STATUS_MAX * (n + 1);

    ngx_shmtx_lock(&ngx_http_lua_ffi_shpool->mutex);

    p = ngx_slprintf(buf, last, "{\"libraries\":");
    p = ngx_http_lua_ffi_status_libraries(p, last);
    p = ngx_slprintf(p, last, ",\"reload_in_progress\":%s,"
                     "\"worker_processes\":%ui,\"workers\":[",
                     ngx_http_lua_ffi_shm->owner ? "true" : "false", n);

    for (i = 0; i < n; i++) {
        sw = &ngx_http_lua_ffi_shm->workers[i];

        if (i) {
            p = ngx_slprintf(p, last, ",");
        }

        if (ngx_http_lua_ffi_worker_alive(sw) && sw->status
            && sw->status_seq >= op->seq
            && (size_t) (last - p) > sw->status_len + 64)
        {
            p = ngx_cpymem(p, sw->status, sw->status_len);

        } else {
            p = ngx_slprintf(p, last, "{\"slot\":%ui,\"pid\":%P,"
                             "\"answered\":false}", i, sw->pid);
        }
    }

    p = ngx_slprintf(p, last, "]}");

    ngx_shmtx_unlock(&ngx_http_lua_ffi_shpool->mutex);

    ngx_http_lua_ffi_op_finish(op, NGX_HTTP_OK, buf, p - buf, NULL);

    ngx_free(buf);
}
