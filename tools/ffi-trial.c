/*
 * ffi-trial: maps a library in a short-lived process of its own and runs
 * its constructors and libffi_init, so that a crash there costs no worker.
 */

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>


/*
 * usage: ffi-trial SHADOW LIBRARY [CFG]...   ("-" for a nil cfg)
 * prints one line and exits 0: "ok", "dlopen: ...", "no libffi_init",
 * "init N returned RC"; a crash prints nothing.
 */

typedef struct {
    pthread_mutex_t  mutex;
    pthread_cond_t   cond;
    int              closed;
} trial_queue_t;


static const char  *trial_library;


/* The runtime ABI, as the host has it; the trial queues only ever close. */

void *
ngx_http_lua_ffi_task_poll(void *tq)
{
    trial_queue_t  *q = tq;

    pthread_mutex_lock(&q->mutex);

    while (!q->closed) {
        pthread_cond_wait(&q->cond, &q->mutex);
    }

    pthread_mutex_unlock(&q->mutex);

    return NULL;
}


int
ngx_http_lua_ffi_task_poll_batch(void *tq, void **tasks, int n)
{
    (void) tasks;
    (void) n;

    ngx_http_lua_ffi_task_poll(tq);

    return 0;
}


char *
ngx_http_lua_ffi_get_req(void *tsk, int *len)
{
    (void) tsk;

    if (len) {
        *len = 0;
    }

    return NULL;
}


void
ngx_http_lua_ffi_respond(void *tsk, int rc, char *rsp, int rsp_len)
{
    (void) tsk;
    (void) rc;
    (void) rsp_len;

    free(rsp);
}


const char *
ngx_http_lua_ffi_library_path(void *tq)
{
    (void) tq;

    return trial_library;
}


/*
 * The runtime services, so that a library that resolves them in
 * libffi_init passes its trial. Log lines are kept and printed to stderr
 * (the worker's error.log) only when an init fails: they may say why, and
 * a successful trial adds nothing to the lines the real init will log.
 * Shared dicts do not exist here (ENODICT, -1).
 */

#define TRIAL_LOG_MAX  65536

static pthread_mutex_t  trial_log_mutex = PTHREAD_MUTEX_INITIALIZER;
static char             trial_log[TRIAL_LOG_MAX];
static size_t           trial_log_len;


int
ngx_http_lua_ffi_log(void *tq, int level, const char *msg, int len)
{
    int  n;

    (void) tq;

    if (level < 1 || level > 8 || msg == NULL || len < 0) {
        return -1;
    }

    pthread_mutex_lock(&trial_log_mutex);

    n = snprintf(trial_log + trial_log_len, TRIAL_LOG_MAX - trial_log_len,
                 "ffi-trial: %s: %.*s\n", trial_library,
                 len ? len : (int) strlen(msg), msg);

    if (n < 0 || (size_t) n >= TRIAL_LOG_MAX - trial_log_len) {
        trial_log[trial_log_len] = '\0';
        pthread_mutex_unlock(&trial_log_mutex);
        return -1;
    }

    trial_log_len += n;

    pthread_mutex_unlock(&trial_log_mutex);

    return 0;
}


static void
trial_log_print(void)
{
    pthread_mutex_lock(&trial_log_mutex);
    fwrite(trial_log, 1, trial_log_len, stderr);
    fflush(stderr);
    pthread_mutex_unlock(&trial_log_mutex);
}


int
ngx_http_lua_ffi_dict_get(void *tq, const char *dict, const char *key,
    int key_len, char **val, int *val_len)
{
    (void) tq;
    (void) dict;
    (void) key;
    (void) key_len;

    if (val) {
        *val = NULL;
    }

    if (val_len) {
        *val_len = 0;
    }

    return -1;
}


int
ngx_http_lua_ffi_dict_set(void *tq, const char *dict, const char *key,
    int key_len, const char *val, int val_len, double exptime)
{
    (void) tq;
    (void) dict;
    (void) key;
    (void) key_len;
    (void) val;
    (void) val_len;
    (void) exptime;

    return -1;
}


int
ngx_http_lua_ffi_dict_incr(void *tq, const char *dict, const char *key,
    int key_len, double by, double init, double *result)
{
    (void) tq;
    (void) dict;
    (void) key;
    (void) key_len;
    (void) by;
    (void) init;

    if (result) {
        *result = 0;
    }

    return -1;
}


int
main(int argc, char **argv)
{
    int             i, rc;
    void           *dl;
    int           (*init)(char *, void *);
    trial_queue_t  *q;

    if (argc < 3) {
        fprintf(stderr, "usage: ffi-trial SHADOW LIBRARY [CFG]...\n");
        return 2;
    }

    trial_library = argv[2];

    dl = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (dl == NULL) {
        printf("dlopen: %s\n", dlerror());
        fflush(stdout);
        _exit(0);
    }

    *(void **) &init = dlsym(dl, "libffi_init");
    if (init == NULL) {
        printf("no libffi_init\n");
        fflush(stdout);
        _exit(0);
    }

    for (i = 3; i < argc || i == 3; i++) {
        q = calloc(1, sizeof(trial_queue_t));
        if (q == NULL) {
            _exit(1);
        }

        pthread_mutex_init(&q->mutex, NULL);
        pthread_cond_init(&q->cond, NULL);

        rc = init((i < argc && strcmp(argv[i], "-") != 0) ? argv[i] : NULL,
                  q);

        /* the NULL task at once: a runtime may start to stop, that's all */
        pthread_mutex_lock(&q->mutex);
        q->closed = 1;
        pthread_cond_broadcast(&q->cond);
        pthread_mutex_unlock(&q->mutex);

        if (rc != 0) {
            trial_log_print();
            printf("init %d returned %d\n", i - 3, rc);
            fflush(stdout);
            _exit(0);
        }
    }

    printf("ok\n");
    fflush(stdout);

    /* no destructors, no joins: the library's threads die with us */
    _exit(0);
}
