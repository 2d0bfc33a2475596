/*
 * A host with only upstream's runtime ABI (task_poll, get_req, respond; no
 * task_poll_batch, no runtime services): loads a library, echoes N calls
 * through it, then hands out the NULL task. Shows that an example library
 * still works where our extensions are missing. Usage: host LIB N.
 */

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


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


void *
ngx_http_lua_ffi_task_poll(void *tq)
{
    host_task_t  *task;

    (void) tq;

    pthread_mutex_lock(&mutex);

    while (head == tail && !closed) {
        pthread_cond_wait(&cond, &mutex);
    }

    task = (head < tail) ? queue[head++] : NULL;

    pthread_mutex_unlock(&mutex);

    return task;
}


char *
ngx_http_lua_ffi_get_req(void *tsk, int *len)
{
    host_task_t  *task = tsk;

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
    pthread_mutex_unlock(&mutex);

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

    printf("%d of %d calls echoed\n", good, n);

    return good == n ? 0 : 1;
}
