/*
 * File-drop redeploy (`ffi_watch on`): an inotify descriptor in the event
 * loop watches the folders of loaded libraries; a new file reloads.
 */

#include <sys/inotify.h>

#include "ngx_http_lua_ffi_manager.h"
#include "ngx_http_lua_ffi_metrics.h"


#define NGX_HTTP_LUA_FFI_WATCH_DIRS  64
#define NGX_HTTP_LUA_FFI_WATCH_RETRY_MSEC  1000

#define NGX_HTTP_LUA_FFI_WATCH_MASK                                          \
    (IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_MOVED_FROM)


typedef struct {
    int         wd;
    ngx_str_t   path;
} ngx_http_lua_ffi_watch_dir_t;


static void ngx_http_lua_ffi_watch_handler(ngx_event_t *ev);
static void ngx_http_lua_ffi_watch_schedule(ngx_http_lua_ffi_library_t *lib,
    const char *event);
static void ngx_http_lua_ffi_watch_fire(ngx_event_t *ev);
static void ngx_http_lua_ffi_watch_done(void *data, ngx_int_t status,
    u_char *body, size_t len, u_char *msg);


static ngx_connection_t              *ngx_http_lua_ffi_watch_conn;
static ngx_http_lua_ffi_watch_dir_t   ngx_http_lua_ffi_watch_dirs[
                                                NGX_HTTP_LUA_FFI_WATCH_DIRS];
static ngx_uint_t                     ngx_http_lua_ffi_watch_ndirs;


ngx_int_t
ngx_http_lua_ffi_watch_init(ngx_cycle_t *cycle)
{
    int                            fd;
    ngx_connection_t              *c;
    ngx_http_lua_ffi_main_conf_t  *fmcf;

    fmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_lua_ffi_module);

    if (!fmcf->watch) {
        return NGX_OK;
    }

    fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (fd == -1) {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, ngx_errno,
                      "ffi: inotify_init1() failed, ffi_watch is off");
        return NGX_OK;
    }

    c = ngx_get_connection(fd, cycle->log);
    if (c == NULL) {
        (void) close(fd);
        return NGX_ERROR;
    }

    c->log = cycle->log;
    c->read->handler = ngx_http_lua_ffi_watch_handler;
    c->read->log = cycle->log;

    if (ngx_add_event(c->read, NGX_READ_EVENT, 0) != NGX_OK) {
        ngx_close_connection(c);
        return NGX_ERROR;
    }

    ngx_http_lua_ffi_watch_conn = c;
    ngx_http_lua_ffi_watch_ndirs = 0;

    return NGX_OK;
}


void
ngx_http_lua_ffi_watch_exit(ngx_cycle_t *cycle)
{
    ngx_uint_t  i;

    if (ngx_http_lua_ffi_watch_conn) {
        ngx_close_connection(ngx_http_lua_ffi_watch_conn);
        ngx_http_lua_ffi_watch_conn = NULL;
    }

    for (i = 0; i < ngx_http_lua_ffi_watch_ndirs; i++) {
        ngx_free(ngx_http_lua_ffi_watch_dirs[i].path.data);
    }

    ngx_http_lua_ffi_watch_ndirs = 0;
}


/* Called once per library and worker, when it is first loaded from disk. */

void
ngx_http_lua_ffi_watch_library(ngx_http_lua_ffi_library_t *lib)
{
    int                            wd;
    size_t                         len;
    ngx_uint_t                     i;
    ngx_http_lua_ffi_watch_dir_t  *d;

    lib->watch_timer.handler = ngx_http_lua_ffi_watch_fire;
    lib->watch_timer.data = lib;
    lib->watch_timer.log = ngx_cycle->log;
    lib->watch_timer.cancelable = 1;

    if (ngx_http_lua_ffi_watch_conn == NULL) {
        return;
    }

    for (len = lib->path.len; len > 1 && lib->path.data[len - 1] != '/'; len--)
    {
        /* void */
    }

    len = (len > 1) ? len - 1 : len;

    for (i = 0; i < ngx_http_lua_ffi_watch_ndirs; i++) {
        d = &ngx_http_lua_ffi_watch_dirs[i];

        if (d->path.len == len
            && ngx_strncmp(d->path.data, lib->path.data, len) == 0)
        {
            goto watched;
        }
    }

    if (ngx_http_lua_ffi_watch_ndirs == NGX_HTTP_LUA_FFI_WATCH_DIRS) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "ffi: not watching \"%V\": too many folders watched",
                      &lib->path);
        return;
    }

    d = &ngx_http_lua_ffi_watch_dirs[ngx_http_lua_ffi_watch_ndirs];

    d->path.data = ngx_alloc(len + 1, ngx_cycle->log);
    if (d->path.data == NULL) {
        return;
    }

    ngx_memcpy(d->path.data, lib->path.data, len);
    d->path.data[len] = '\0';
    d->path.len = len;

    wd = inotify_add_watch(ngx_http_lua_ffi_watch_conn->fd,
                           (char *) d->path.data, NGX_HTTP_LUA_FFI_WATCH_MASK);
    if (wd == -1) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, ngx_errno,
                      "ffi: inotify_add_watch(\"%V\") failed", &d->path);
        ngx_free(d->path.data);
        return;
    }

    d->wd = wd;
    ngx_http_lua_ffi_watch_ndirs++;

watched:

    if (ngx_http_lua_ffi_shm_set_watched(&lib->path)) {
        /*
         * The file changed before this worker watched it (a drop while
         * only the workers of an older configuration watched): judged
         * now, like a drop seen.
         */
        ngx_http_lua_ffi_watch_schedule(lib, "missed");
    }

    ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                  "ffi: watching \"%V\" for new versions", &lib->path);
}


static void
ngx_http_lua_ffi_watch_handler(ngx_event_t *ev)
{
    u_char                         buf[4096]
                                   __attribute__((aligned(__alignof__(
                                       struct inotify_event))));
    u_char                         path[NGX_HTTP_LUA_FFI_PATHLEN], *p;
    ssize_t                        n;
    ngx_str_t                      file;
    ngx_uint_t                     i;
    ngx_queue_t                   *q;
    const char                    *what;
    struct inotify_event          *ie;
    ngx_http_lua_ffi_library_t    *lib;
    ngx_http_lua_ffi_watch_dir_t  *d;

    for ( ;; ) {
        n = read(ngx_http_lua_ffi_watch_conn->fd, buf, sizeof(buf));

        if (n <= 0) {
            return;
        }

        for (p = buf; p < buf + n; p += sizeof(struct inotify_event) + ie->len)
        {
            ie = (struct inotify_event *) p;

            if (ie->mask & IN_Q_OVERFLOW) {
                /* events were lost: look at every library again */
                for (q = ngx_queue_head(&ngx_http_lua_ffi_worker.libraries);
                     q != ngx_queue_sentinel(
                                        &ngx_http_lua_ffi_worker.libraries);
                     q = ngx_queue_next(q))
                {
                    lib = ngx_queue_data(q, ngx_http_lua_ffi_library_t, link);
                    ngx_http_lua_ffi_watch_schedule(lib, "overflow");
                }

                continue;
            }

            if (ie->len == 0) {
                continue;
            }

            d = NULL;
            for (i = 0; i < ngx_http_lua_ffi_watch_ndirs; i++) {
                if (ngx_http_lua_ffi_watch_dirs[i].wd == ie->wd) {
                    d = &ngx_http_lua_ffi_watch_dirs[i];
                    break;
                }
            }

            if (d == NULL
                || d->path.len + 1 + ngx_strlen(ie->name) >= sizeof(path))
            {
                continue;
            }

            file.data = path;
            file.len = ngx_sprintf(path, "%V/%s", &d->path, ie->name) - path;

            lib = ngx_http_lua_ffi_registry_library(&file);
            if (lib == NULL) {
                continue;
            }

            /*
             * Only a finished file counts: closed after writing (cp,
             * install) or renamed into place (mv). Creation alone means a
             * write is in progress; deletion changes nothing.
             */
            if (ie->mask & IN_CLOSE_WRITE) {
                what = "close_write";

            } else if (ie->mask & IN_MOVED_TO) {
                what = "moved_to";

            } else {
                ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ev->log, 0,
                               "ffi: \"%V\": event %xd ignored", &file,
                               ie->mask);
                continue;
            }

            ngx_http_lua_ffi_watch_schedule(lib, what);
        }
    }
}


/* Bursts of events (a copy in pieces, install's steps) make one reload. */

static void
ngx_http_lua_ffi_watch_schedule(ngx_http_lua_ffi_library_t *lib,
    const char *event)
{
    ngx_http_lua_ffi_main_conf_t  *fmcf;

    fmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_http_lua_ffi_module);

    *ngx_cpystrn(lib->watch_event, (u_char *) event,
                 sizeof(lib->watch_event)) = '\0';

    ngx_add_timer(&lib->watch_timer, fmcf->watch_delay);
}


static void
ngx_http_lua_ffi_watch_fire(ngx_event_t *ev)
{
    ngx_http_lua_ffi_library_t  *lib = ev->data;

    if (lib->watch_reloading) {
        lib->watch_again = 1;
        return;
    }

    if (!ngx_http_lua_ffi_shm_watch_actor(&lib->path)) {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ev->log, 0,
                       "ffi: \"%V\" changed, another worker acts on it",
                       &lib->path);

        /*
         * until a reload that judged it ended: the actor may die first,
         * even mid-reload, then this one acts
         */
        if (ngx_http_lua_ffi_shm_drop_pending(&lib->path)) {
            ngx_add_timer(&lib->watch_timer,
                          NGX_HTTP_LUA_FFI_WATCH_RETRY_MSEC);
        }

        return;
    }

    ngx_log_error(NGX_LOG_NOTICE, ev->log, 0,
                  "ffi: new file at \"%V\" (%s), reloading \"%V\"",
                  &lib->path, lib->watch_event, &lib->names[0]);

    lib->watch_reloading = 1;

    if (ngx_http_lua_ffi_reload_start(&lib->names[0],
                                      NGX_HTTP_LUA_FFI_RELOAD_IF_CHANGED
                                      | NGX_HTTP_LUA_FFI_RELOAD_STRICT,
                                      ngx_http_lua_ffi_watch_done, lib)
        != NGX_OK)
    {
        lib->watch_reloading = 0;
    }
}


static void
ngx_http_lua_ffi_watch_done(void *data, ngx_int_t status, u_char *body,
    size_t len, u_char *msg)
{
    ngx_http_lua_ffi_library_t  *lib = data;

    u_char  outcome[NGX_HTTP_LUA_FFI_ERRLEN];

    lib->watch_reloading = 0;

    if (status == NGX_HTTP_SERVICE_UNAVAILABLE) {
        /*
         * Not judged: the file could not be read or copied now (ENOSPC,
         * EMFILE, EIO), or another reload held the turn too long. Tried
         * again, never given up: the drop is still there.
         */
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "ffi: file dropped at \"%V\" not judged yet, "
                      "trying again in %M ms: %s", &lib->path,
                      (ngx_msec_t) NGX_HTTP_LUA_FFI_WATCH_RETRY_MSEC,
                      msg ? msg : (u_char *) "unknown error");

        ngx_add_timer(&lib->watch_timer, NGX_HTTP_LUA_FFI_WATCH_RETRY_MSEC);
        lib->watch_again = 0;
        return;
    }

    /* 304: the same bytes already serve (another worker saw it first) */
    if (status != NGX_HTTP_NOT_MODIFIED) {
        if (status == NGX_HTTP_OK) {
            ngx_snprintf(outcome, sizeof(outcome), "reloaded to version %ui%Z",
                         lib->version);

        } else {
            if (msg == NULL) {
                msg = (u_char *) "unknown error";
            }

            ngx_snprintf(outcome, sizeof(outcome), "refused (%i): %s%Z",
                         status, msg);

            ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                          "ffi: file dropped at \"%V\" not loaded, the "
                          "running version serves on: %s",
                          &lib->path, msg);
        }

        ngx_http_lua_ffi_shm_note_drop(&lib->path, lib->watch_event, outcome);
        ngx_http_lua_ffi_metrics_drop(&lib->path, status);
    }

    if (lib->watch_again) {
        lib->watch_again = 0;
        ngx_http_lua_ffi_watch_schedule(lib, (char *) lib->watch_event);
    }
}
