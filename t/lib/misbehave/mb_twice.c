/*
 * A runtime that answers tasks twice: "now:BODY" back to back, and
 * "later:MS:BODY" the second time MS ms after the first; answers once:
 * "echo:BODY" at once, "delay:MS:BODY" after MS ms.
 */

#include "mb.h"


/* a->again: 1, the second answer; 0, the only one */

static void *
mb_twice_again(void *arg)
{
    mb_later_t  *a = arg;

    usleep(a->ms * 1000);

    if (a->again) {
        /* by now the host may have given this task's memory to a new call */
        ngx_http_lua_ffi_respond(a->task, 0, mb_cat("second:", a->body), 0);
        mb_log("mb_twice answered %s again after %d ms", a->body, a->ms);

    } else {
        ngx_http_lua_ffi_respond(a->task, 0, mb_cat("", a->body), 0);
        mb_log("mb_twice answered %s after %d ms", a->body, a->ms);
    }

    mb_later_free(a);

    return NULL;
}


static void
mb_twice_later(void *task, char *arg, int again)
{
    mb_later_t  *a;

    a = mb_later_new(task, arg, again);
    if (a == NULL) {
        ngx_http_lua_ffi_respond(task, 12, NULL, 0);
        return;
    }

    if (again) {
        ngx_http_lua_ffi_respond(task, 0, mb_dup(a->body, strlen(a->body)),
                                 0);
    }

    if (mb_spawn(mb_twice_again, a) != 0) {
        if (!again) {
            ngx_http_lua_ffi_respond(task, 12, NULL, 0);
        }

        mb_later_free(a);
    }
}


static void *
mb_twice_poll(void *tq)
{
    int    len;
    char  *req;
    void  *task;

    while ((task = ngx_http_lua_ffi_task_poll(tq)) != NULL) {
        req = mb_req(task, &len);

        if (req == NULL) {
            ngx_http_lua_ffi_respond(task, 12, NULL, 0);

        } else if (mb_starts(req, "now:")) {
            ngx_http_lua_ffi_respond(task, 0, mb_dup(req + 4, len - 4), 0);
            ngx_http_lua_ffi_respond(task, 0, mb_cat("second:", req + 4), 0);

        } else if (mb_starts(req, "later:")) {
            mb_twice_later(task, req + 6, 1);

        } else if (mb_starts(req, "delay:")) {
            mb_twice_later(task, req + 6, 0);

        } else if (mb_starts(req, "echo:")) {
            ngx_http_lua_ffi_respond(task, 0, mb_dup(req + 5, len - 5), 0);

        } else {
            ngx_http_lua_ffi_respond(task, 2, NULL, 0);
        }

        free(req);
    }

    return NULL;
}


MB_ONE_POLLER_INIT(mb_twice_poll)


MB_JOIN_AT_UNLOAD()
