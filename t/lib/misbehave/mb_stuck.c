/*
 * A runtime whose thread gets stuck in a task for good ("stuck"), and whose
 * destructor joins that thread: exit() would wait for it forever.
 *
 *   echo:BODY   answers BODY
 *   stuck       never answered; the poller blocks for good
 */

#include "mb.h"


static pthread_mutex_t  mb_stuck_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t   mb_stuck_cond = PTHREAD_COND_INITIALIZER;


static void *
mb_stuck_poll(void *tq)
{
    int    len;
    char  *req;
    void  *task;

    while ((task = ngx_http_lua_ffi_task_poll(tq)) != NULL) {
        req = mb_req(task, &len);

        if (req != NULL && mb_starts(req, "echo:")) {
            ngx_http_lua_ffi_respond(task, 0, mb_dup(req + 5, len - 5), 0);

        } else if (req != NULL && strcmp(req, "stuck") == 0) {
            mb_log("mb_stuck is stuck");
            free(req);

            pthread_mutex_lock(&mb_stuck_lock);
            for ( ;; ) {
                pthread_cond_wait(&mb_stuck_cond, &mb_stuck_lock);
            }

        } else {
            ngx_http_lua_ffi_respond(task, 2, NULL, 0);
        }

        free(req);
    }

    return NULL;
}


MB_ONE_POLLER_INIT(mb_stuck_poll)


__attribute__((destructor)) static void
mb_stuck_fini(void)
{
    mb_log("mb_stuck destructor joins its threads");
    mb_join_all();
}
