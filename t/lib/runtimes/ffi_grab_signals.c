/*
 * A runtime that takes nginx's signals for itself, as the JVM does without
 * -Xrs: SIGUSR1 in a constructor, SIGQUIT and SIGTERM in libffi_init.
 */

#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

void *ngx_http_lua_ffi_task_poll(void *tq);
char *ngx_http_lua_ffi_get_req(void *tsk, int *len);
void ngx_http_lua_ffi_respond(void *tsk, int rc, char *rsp, int rsp_len);


static volatile sig_atomic_t  grabbed;


static void
grab(int signo)
{
    (void) signo;
    grabbed++;
}


static void
grab_signal(int signo)
{
    struct sigaction  sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = grab;
    sigemptyset(&sa.sa_mask);
    (void) sigaction(signo, &sa, NULL);
}


__attribute__((constructor)) static void
grab_at_mapping(void)
{
    grab_signal(SIGUSR1);
}


static void *
grab_poll(void *tq)
{
    void  *task;

    while ((task = ngx_http_lua_ffi_task_poll(tq)) != NULL) {
        ngx_http_lua_ffi_respond(task, 0, strdup("grabbed"), 0);
    }

    return NULL;
}


int
libffi_init(char *cfg, void *tq)
{
    pthread_t  t;

    (void) cfg;

    grab_signal(SIGQUIT);
    grab_signal(SIGTERM);

    if (pthread_create(&t, NULL, grab_poll, tq) != 0) {
        return 1;
    }

    return pthread_detach(t);
}
