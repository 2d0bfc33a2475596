/*
 * A runtime that answers with huge bodies: "size:N" N bytes (byte i is
 * 'a' + i % 26) with their length, "nul:N" the same NUL-terminated, len 0.
 */

#include "mb.h"


static char *
mb_huge_body(long n)
{
    long   i;
    char  *p;

    p = malloc(n + 1);
    if (p == NULL) {
        return NULL;
    }

    for (i = 0; i < n; i++) {
        p[i] = 'a' + i % 26;
    }

    p[n] = '\0';

    return p;
}


static void *
mb_huge_poll(void *tq)
{
    int    len;
    long   n;
    char  *req, *rsp;
    void  *task;

    while ((task = ngx_http_lua_ffi_task_poll(tq)) != NULL) {
        req = mb_req(task, &len);

        if (req != NULL && mb_starts(req, "size:")) {
            n = atol(req + 5);
            rsp = mb_huge_body(n);
            ngx_http_lua_ffi_respond(task, rsp ? 0 : 12, rsp, (int) n);

        } else if (req != NULL && mb_starts(req, "nul:")) {
            n = atol(req + 4);
            rsp = mb_huge_body(n);
            ngx_http_lua_ffi_respond(task, rsp ? 0 : 12, rsp, 0);

        } else {
            ngx_http_lua_ffi_respond(task, 2, NULL, 0);
        }

        free(req);
    }

    return NULL;
}


MB_ONE_POLLER_INIT(mb_huge_poll)


MB_JOIN_AT_UNLOAD()
