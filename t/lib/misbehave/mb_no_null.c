/*
 * A runtime that serves ("version", "echo:BODY") until told "stop", then
 * never polls again: its NULL task is never taken. Built as v1 and v2.
 */

#include "mb.h"


#ifndef MB_VERSION
#define MB_VERSION "v1"
#endif


static pthread_mutex_t  mb_stop_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t   mb_stop_cond = PTHREAD_COND_INITIALIZER;


static void *
mb_no_null_poll(void *tq)
{
    int    len;
    char  *req;
    void  *task;

    while ((task = ngx_http_lua_ffi_task_poll(tq)) != NULL) {
        req = mb_req(task, &len);

        if (req != NULL && strcmp(req, "version") == 0) {
            ngx_http_lua_ffi_respond(task, 0, mb_dup(MB_VERSION, 2), 0);

        } else if (req != NULL && mb_starts(req, "echo:")) {
            ngx_http_lua_ffi_respond(task, 0, mb_dup(req + 5, len - 5), 0);

        } else if (req != NULL && strcmp(req, "stop") == 0) {
            ngx_http_lua_ffi_respond(task, 0, mb_dup("stopping", 8), 0);
            mb_log("mb_no_null " MB_VERSION " stops polling");
            free(req);

            /* as a runtime stuck in a long job would: nobody wakes us */
            pthread_mutex_lock(&mb_stop_lock);
            for ( ;; ) {
                pthread_cond_wait(&mb_stop_cond, &mb_stop_lock);
            }

        } else {
            ngx_http_lua_ffi_respond(task, 2, NULL, 0);
        }

        free(req);
    }

    mb_log("mb_no_null " MB_VERSION " took its NULL task");

    return NULL;
}


int
libffi_init(char *cfg, void *tq)
{
    pthread_t  t;

    (void) cfg;

    /* detached, never joined: a destructor must not wait for it */
    if (pthread_create(&t, NULL, mb_no_null_poll, tq) != 0) {
        return 1;
    }

    pthread_detach(t);

    return 0;
}
