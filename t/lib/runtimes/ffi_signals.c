/*
 * libffi_signals: an echo runtime whose threads take every signal, as Go's
 * do: one started at mapping (a constructor), one per libffi_init, more later.
 */

#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>


void *ngx_http_lua_ffi_task_poll(void *tq);
char *ngx_http_lua_ffi_get_req(void *tsk, int *len);
void ngx_http_lua_ffi_respond(void *tsk, int rc, char *rsp, int rsp_len);
int libffi_init(char *cfg, void *tq);

#define MAX_IDLE  64

static pthread_mutex_t  lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t   stop = PTHREAD_COND_INITIALIZER;
static int              stopping;
static pthread_t        idle_threads[MAX_IDLE];
static int              nidle;


/* whatever mask the thread inherited, as Go's runtime does for SIGCHLD */
static void
take_every_signal(void)
{
    sigset_t  none;

    sigemptyset(&none);
    pthread_sigmask(SIG_SETMASK, &none, NULL);
}


static void *
idle(void *arg)
{
    (void) arg;

    take_every_signal();

    pthread_mutex_lock(&lock);
    while (!stopping) {
        pthread_cond_wait(&stop, &lock);
    }
    pthread_mutex_unlock(&lock);

    return NULL;
}


static int
start_idle(void)
{
    int  rc;

    pthread_mutex_lock(&lock);
    rc = -1;
    if (nidle < MAX_IDLE
        && pthread_create(&idle_threads[nidle], NULL, idle, NULL) == 0)
    {
        nidle++;
        rc = 0;
    }
    pthread_mutex_unlock(&lock);

    return rc;
}


__attribute__((constructor)) static void
start_at_mapping(void)
{
    (void) start_idle();
}


__attribute__((destructor)) static void
join_all(void)
{
    int  i;

    pthread_mutex_lock(&lock);
    stopping = 1;
    pthread_cond_broadcast(&stop);
    pthread_mutex_unlock(&lock);

    for (i = 0; i < nidle; i++) {
        pthread_join(idle_threads[i], NULL);
    }
}


/* "spawn" starts one more idle thread; anything else comes back as is */
static void *
serve(void *tq)
{
    int    len;
    char  *req, *rsp;
    void  *task;

    take_every_signal();

    while ((task = ngx_http_lua_ffi_task_poll(tq)) != NULL) {
        req = ngx_http_lua_ffi_get_req(task, &len);

        if (len == 5 && memcmp(req, "spawn", 5) == 0) {
            ngx_http_lua_ffi_respond(task, start_idle(), NULL, 0);
            continue;
        }

        rsp = malloc(len + 1);
        if (rsp == NULL) {
            ngx_http_lua_ffi_respond(task, 1, NULL, 0);
            continue;
        }

        if (len > 0) {
            memcpy(rsp, req, len);
        }

        rsp[len] = '\0';
        ngx_http_lua_ffi_respond(task, 0, rsp, len);
    }

    return NULL;
}


int
libffi_init(char *cfg, void *tq)
{
    pthread_t       t;
    pthread_attr_t  attr;

    (void) cfg;

    /* returns once it took its NULL task: nothing left to join */
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);

    if (pthread_create(&t, &attr, serve, tq) != 0) {
        pthread_attr_destroy(&attr);
        return 1;
    }

    pthread_attr_destroy(&attr);

    return 0;
}
