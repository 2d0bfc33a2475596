/*
 * A runtime that finds the host's ABI at run time, as cffi and upstream's
 * Python loader do (dlsym on the program's handle: no link-time reference,
 * so nothing ties the host module's mapping to this library), and whose
 * threads keep polling after the NULL task, as task_poll allows.
 *
 *   echo:BODY   answers BODY
 */

#include <dlfcn.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>


#define MB_THREADS  4

typedef void *(*mb_poll_pt)(void *tq);
typedef char *(*mb_get_req_pt)(void *tsk, int *len);
typedef void (*mb_respond_pt)(void *tsk, int rc, char *rsp, int rsp_len);

static mb_poll_pt      mb_poll;
static mb_get_req_pt   mb_get_req;
static mb_respond_pt   mb_respond;

int libffi_init(char *cfg, void *tq);


static void *
mb_dlsym_poll(void *tq)
{
    int    len;
    char  *req, *rsp;
    void  *task;

    for ( ;; ) {
        task = mb_poll(tq);

        if (task == NULL) {
            /* asks again: it stays in the host's code until the end */
            sched_yield();
            continue;
        }

        req = mb_get_req(task, &len);

        if (req != NULL && len >= 5 && strncmp(req, "echo:", 5) == 0) {
            rsp = malloc(len - 5 + 1);
            if (rsp != NULL) {
                memcpy(rsp, req + 5, len - 5);
            }
            mb_respond(task, 0, rsp, len - 5);

        } else {
            mb_respond(task, 2, NULL, 0);
        }
    }

    return NULL;
}


int
libffi_init(char *cfg, void *tq)
{
    int         i;
    void       *self;
    pthread_t   t;

    (void) cfg;

    self = dlopen(NULL, RTLD_NOW);
    if (self == NULL) {
        return 1;
    }

    mb_poll = (mb_poll_pt) dlsym(self, "ngx_http_lua_ffi_task_poll");
    mb_get_req = (mb_get_req_pt) dlsym(self, "ngx_http_lua_ffi_get_req");
    mb_respond = (mb_respond_pt) dlsym(self, "ngx_http_lua_ffi_respond");

    if (mb_poll == NULL || mb_get_req == NULL || mb_respond == NULL) {
        return 2;
    }

    for (i = 0; i < MB_THREADS; i++) {
        if (pthread_create(&t, NULL, mb_dlsym_poll, tq) != 0) {
            return 3;
        }

        pthread_detach(t);
    }

    return 0;
}
