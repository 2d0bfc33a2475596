/*
 * The C demo runtime: answers every request with the same bytes. A model
 * for library authors: one poll thread per runtime, joined on unload; it
 * logs its start into error.log and counts it in a shared dict.
 */

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


/*
 * The runtime ABI, as upstream declares it. Including the project's
 * src/ngx_http_lua_ffi.h instead is equivalent and documents the contract.
 */
void *ngx_http_lua_ffi_task_poll(void *tq);
char *ngx_http_lua_ffi_get_req(void *tsk, int *len);
void ngx_http_lua_ffi_respond(void *tsk, int rc, char *rsp, int rsp_len);

/*
 * The runtime services (src/ngx_http_lua_ffi.h), weak: a host without
 * them (upstream's) still loads this library, and they are NULL there.
 */
#pragma weak ngx_http_lua_ffi_log
#pragma weak ngx_http_lua_ffi_dict_incr
int ngx_http_lua_ffi_log(void *tq, int level, const char *msg, int len);
int ngx_http_lua_ffi_dict_incr(void *tq, const char *dict, const char *key,
    int key_len, double by, double init, double *result);

#define DEMO_LOG_NOTICE  6


/* One per runtime: several runtimes (cfg values, versions) may coexist. */
typedef struct demo_runtime_s  demo_runtime_t;

struct demo_runtime_s {
    void            *tq;
    pthread_t        thread;
    demo_runtime_t  *next;      /* runtimes whose thread must be joined */
};


static pthread_mutex_t   demo_lock = PTHREAD_MUTEX_INITIALIZER;
static demo_runtime_t   *demo_runtimes;


static void *
demo_poll(void *arg)
{
    int              len;
    char            *req, *rsp;
    void            *task;
    demo_runtime_t  *rt = arg;

    /* task_poll() returns NULL once the runtime is unloaded: stop then */
    while ((task = ngx_http_lua_ffi_task_poll(rt->tq)) != NULL) {
        req = ngx_http_lua_ffi_get_req(task, &len);

        if (req == NULL || len == 0) {
            /* a call with no (or an empty) argument: answer "" */
            ngx_http_lua_ffi_respond(task, 0, NULL, 0);
            continue;
        }

        /* the answer must be malloc()ed: the host frees it */
        rsp = malloc(len);
        if (rsp == NULL) {
            ngx_http_lua_ffi_respond(task, 1, NULL, 0);
            continue;
        }

        memcpy(rsp, req, len);
        ngx_http_lua_ffi_respond(task, 0, rsp, len);
    }

    return NULL;
}


/*
 * Says so in error.log, with the start's number when nginx.conf has a
 * "lua_shared_dict ffi_examples" (Lua reads the same counter with
 * ngx.shared.ffi_examples:get("demo_starts")).
 */

static void
demo_started(void *tq)
{
    char    line[64];
    double  starts;

    if (ngx_http_lua_ffi_log == NULL || ngx_http_lua_ffi_dict_incr == NULL) {
        return;
    }

    if (ngx_http_lua_ffi_dict_incr(tq, "ffi_examples", "demo_starts", -1,
                                   1, 0, &starts)
        == 0)
    {
        snprintf(line, sizeof(line), "demo: start number %.0f", starts);

    } else {
        snprintf(line, sizeof(line), "demo: start");
    }

    (void) ngx_http_lua_ffi_log(tq, DEMO_LOG_NOTICE, line, 0);
}


int
libffi_init(char *cfg, void *tq)
{
    demo_runtime_t  *rt;

    (void) cfg;     /* a copy, freed after we return: keep none of it */

    demo_started(tq);

    rt = calloc(1, sizeof(demo_runtime_t));
    if (rt == NULL) {
        return 1;
    }

    rt->tq = tq;

    if (pthread_create(&rt->thread, NULL, demo_poll, rt) != 0) {
        free(rt);
        return 2;
    }

    pthread_mutex_lock(&demo_lock);
    rt->next = demo_runtimes;
    demo_runtimes = rt;
    pthread_mutex_unlock(&demo_lock);

    return 0;
}


/*
 * Runs at dlclose() (and process exit): every runtime of this image has
 * had its NULL task by then, so its thread has returned or is returning;
 * join it so that no thread of ours outlives the code it runs.
 */
__attribute__((destructor)) static void
demo_unload(void)
{
    demo_runtime_t  *rt, *next;

    pthread_mutex_lock(&demo_lock);
    rt = demo_runtimes;
    demo_runtimes = NULL;
    pthread_mutex_unlock(&demo_lock);

    for ( /* void */ ; rt; rt = next) {
        next = rt->next;
        pthread_join(rt->thread, NULL);
        free(rt);
    }
}
