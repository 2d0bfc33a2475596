/*
 * A host with only upstream's runtime ABI (task_poll, get_req, respond; no
 * task_poll_batch, no runtime services): loads a library, echoes N calls
 * through it, then hands out the NULL task and waits until the library
 * took it: every call answered exactly once, none of the ABI used after the
 * NULL task (upstream frees the queue then). Shows that an example library
 * still works where our extensions are missing. Usage: host LIB N. Ends
 * itself after 60 s (SIGALRM) rather than hang on a lost answer.
 */

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>


typedef struct {
    char  *req;
    int    len;
    int    answered;
    int    rc;
    char  *rsp;
    int    rsp_len;
} host_task_t;


static pthread_mutex_t   mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t    cond = PTHREAD_COND_INITIALIZER;
static host_task_t     **queue;
static int               head, tail, closed, answered;
static int               nulls, after_null;


void *
ngx_http_lua_ffi_task_poll(void *tq)
{
    host_task_t  *task;

    (void) tq;

    pthread_mutex_lock(&mutex);

    if (nulls) {
        after_null++;
    }

    while (head == tail && !closed) {
        pthread_cond_wait(&cond, &mutex);
    }

    task = (head < tail) ? queue[head++] : NULL;

    if (task == NULL) {
        nulls++;
        pthread_cond_broadcast(&cond);
    }

    pthread_mutex_unlock(&mutex);

    return task;
}


char *
ngx_http_lua_ffi_get_req(void *tsk, int *len)
{
    host_task_t  *task = tsk;

    pthread_mutex_lock(&mutex);
    after_null += (nulls != 0);
    pthread_mutex_unlock(&mutex);

    if (len != NULL) {
        *len = task->len;
    }

    return task->req;
}


void
ngx_http_lua_ffi_respond(void *tsk, int rc, char *rsp, int rsp_len)
{
    host_task_t  *task = tsk;

    pthread_mutex_lock(&mutex);

    after_null += (nulls != 0);
    task->rc = rc;
    task->rsp = rsp;
    task->rsp_len = (rsp_len == 0 && rsp != NULL) ? (int) strlen(rsp)
                                                  : rsp_len;
    task->answered++;
    answered++;

    pthread_cond_broadcast(&cond);
    pthread_mutex_unlock(&mutex);
}


int
main(int argc, char **argv)
{
    int            i, n, good;
    void          *lib;
    host_task_t   *tasks;
    int          (*init)(char *cfg, void *tq);

    if (argc != 3) {
        fprintf(stderr, "usage: %s LIB N\n", argv[0]);
        return 2;
    }

    n = atoi(argv[2]);
    alarm(60);

    if (dlsym(RTLD_DEFAULT, "ngx_http_lua_ffi_task_poll_batch") != NULL) {
        fprintf(stderr, "this host must not have task_poll_batch\n");
        return 1;
    }

    lib = dlopen(argv[1], RTLD_NOW);
    if (lib == NULL) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        return 1;
    }

    init = (int (*)(char *, void *)) dlsym(lib, "libffi_init");
    if (init == NULL || init(NULL, &tasks) != 0) {
        fprintf(stderr, "libffi_init failed\n");
        return 1;
    }

    tasks = calloc(n, sizeof(host_task_t));
    queue = calloc(n, sizeof(host_task_t *));

    /* every 4th call has no argument (NULL, 0), as upstream sends it */
    for (i = 0; i < n; i++) {
        if (i % 4 != 0) {
            tasks[i].len = i;
            tasks[i].req = malloc(i + 1);
            memset(tasks[i].req, 'a' + i % 26, i);
            tasks[i].req[i] = '\0';
        }
    }

    pthread_mutex_lock(&mutex);

    for (i = 0; i < n; i++) {
        queue[tail++] = &tasks[i];
        pthread_cond_broadcast(&cond);
    }

    while (answered < n) {
        pthread_cond_wait(&cond, &mutex);
    }

    closed = 1;
    pthread_cond_broadcast(&cond);

    while (nulls == 0) {
        pthread_cond_wait(&cond, &mutex);
    }

    good = 0;

    for (i = 0; i < n; i++) {
        if (tasks[i].answered == 1 && tasks[i].rc == 0
            && tasks[i].rsp_len == tasks[i].len
            && (tasks[i].len == 0
                || memcmp(tasks[i].rsp, tasks[i].req, tasks[i].len) == 0))
        {
            good++;
        }
    }

    printf("%d of %d calls echoed, %d NULL task taken, %d ABI calls after it\n",
           good, n, nulls, after_null);

    pthread_mutex_unlock(&mutex);

    return (good == n && nulls == 1 && after_null == 0) ? 0 : 1;
}
