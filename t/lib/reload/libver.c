/*
 * A versioned runtime for the hot-reload tests: built several times with
 * another VERSION (or a failing libffi_init) to play successive releases.
 */

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef VERSION
#define VERSION "v1"
#endif

#ifndef INIT_RC
#define INIT_RC 0
#endif

void *ngx_http_lua_ffi_task_poll(void *tq);
char *ngx_http_lua_ffi_get_req(void *tsk, int *len);
void ngx_http_lua_ffi_respond(void *tsk, int rc, char *rsp, int rsp_len);


typedef struct ver_runtime_s  ver_runtime_t;

struct ver_runtime_s {
    void            *tq;
    pthread_t        thread;
    ver_runtime_t   *next;
};

typedef struct {
    void  *task;
    int    ms;
} ver_sleep_t;


static pthread_mutex_t  ver_lock = PTHREAD_MUTEX_INITIALIZER;
static ver_runtime_t   *ver_runtimes;


static char *
ver_dup(const char *s)
{
    return strdup(s);
}


/* the request is not NUL-terminated: a number from at most len bytes */
static int
ver_number(const char *p, int len)
{
    int  n;

    for (n = 0; len > 0 && *p >= '0' && *p <= '9' && n < 100000; len--) {
        n = n * 10 + (*p++ - '0');
    }

    return n;
}


/* answers after ms without holding up the poller */
static void *
ver_sleeper(void *arg)
{
    ver_sleep_t  *s = arg;

    usleep(s->ms * 1000);
    ngx_http_lua_ffi_respond(s->task, 0, ver_dup(VERSION), 0);
    free(s);

    return NULL;
}


static void *
ver_poll(void *arg)
{
    int             len;
    char           *req, *rsp;
    void           *task;
    pthread_t       t;
    ver_sleep_t    *s;
    ver_runtime_t  *rt = arg;

    while ((task = ngx_http_lua_ffi_task_poll(rt->tq)) != NULL) {
        req = ngx_http_lua_ffi_get_req(task, &len);

        if (req && len > 6 && memcmp(req, "sleep:", 6) == 0) {
            s = malloc(sizeof(ver_sleep_t));
            s->task = task;
            s->ms = ver_number(req + 6, len - 6);
            fprintf(stderr, "libver " VERSION " got sleep\n");

            if (pthread_create(&t, NULL, ver_sleeper, s) == 0) {
                pthread_detach(t);
                continue;
            }

            free(s);
            ngx_http_lua_ffi_respond(task, 1, NULL, 0);
            continue;
        }

        if (req && len == 7 && memcmp(req, "version", 7) == 0) {
            ngx_http_lua_ffi_respond(task, 0, ver_dup(VERSION), 0);
            continue;
        }

        rsp = malloc(len ? len : 1);
        if (len) {
            memcpy(rsp, req, len);
        }

        ngx_http_lua_ffi_respond(task, 0, rsp, len);
    }

    return NULL;
}


int
libffi_init(char *cfg, void *tq)
{
    ver_runtime_t  *rt;

    (void) cfg;

    if (INIT_RC != 0) {
        return INIT_RC;
    }

#ifdef CRASH_INIT
    raise(SIGSEGV);   /* a null store may be optimised away */
#endif

    rt = calloc(1, sizeof(ver_runtime_t));
    if (rt == NULL) {
        return 1;
    }

    rt->tq = tq;

    if (pthread_create(&rt->thread, NULL, ver_poll, rt) != 0) {
        free(rt);
        return 2;
    }

    pthread_mutex_lock(&ver_lock);
    rt->next = ver_runtimes;
    ver_runtimes = rt;
    pthread_mutex_unlock(&ver_lock);

    return 0;
}


__attribute__((destructor)) static void
ver_unload(void)
{
    ver_runtime_t  *rt, *next;

    for (rt = ver_runtimes; rt; rt = next) {
        next = rt->next;
        pthread_join(rt->thread, NULL);
        free(rt);
    }

    ver_runtimes = NULL;
}


#ifdef CRASH_CTOR
/* a release that crashes as soon as it is mapped */
__attribute__((constructor)) static void
ver_crash(void)
{
    raise(SIGSEGV);   /* a null store may be optimised away */
}
#endif
