/*
 * libffi_cstring: reads each request as a C string, as upstream's Rust
 * echo and Python modules do (get_req with len NULL, then strlen/strdup):
 * answers "strlen:copy", or "nil" for a nil request.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>


extern void *ngx_http_lua_ffi_task_poll(void *tq);
extern char *ngx_http_lua_ffi_get_req(void *tsk, int *len);
extern void ngx_http_lua_ffi_respond(void *tsk, int rc, char *rsp,
    int rsp_len);

int libffi_init(char *cfg, void *tq);


static void *
ffi_cstring_poll(void *tq)
{
    char    *req, *copy, *rsp;
    void    *task;
    size_t   n;

    while ((task = ngx_http_lua_ffi_task_poll(tq)) != NULL) {
        req = ngx_http_lua_ffi_get_req(task, NULL);

        if (req == NULL) {
            ngx_http_lua_ffi_respond(task, 0, strdup("nil"), 0);
            continue;
        }

        copy = strdup(req);
        n = strlen(copy) + 32;
        rsp = malloc(n);

        if (copy == NULL || rsp == NULL) {
            free(copy);
            free(rsp);
            ngx_http_lua_ffi_respond(task, 12, NULL, 0);
            continue;
        }

        snprintf(rsp, n, "%zu:%s", strlen(copy), copy);
        free(copy);

        ngx_http_lua_ffi_respond(task, 0, rsp, 0);
    }

    return NULL;
}


int
libffi_init(char *cfg, void *tq)
{
    pthread_t  t;

    (void) cfg;

    if (pthread_create(&t, NULL, ffi_cstring_poll, tq) != 0) {
        return 1;
    }

    return pthread_detach(t);
}
