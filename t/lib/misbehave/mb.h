/*
 * Shared bits of the misbehaving runtimes: upstream's ABI names (declared
 * here, as a library written against upstream would) and a log helper.
 */

#ifndef MB_H
#define MB_H

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>


extern void *ngx_http_lua_ffi_task_poll(void *tq);
extern char *ngx_http_lua_ffi_get_req(void *tsk, int *len);
extern void ngx_http_lua_ffi_respond(void *tsk, int rc, char *rsp,
    int rsp_len);

int libffi_init(char *cfg, void *tq);


/* stderr of a worker is its error.log: one write() keeps a line whole */
static inline void
mb_log(const char *fmt, ...)
{
    int      n;
    char     buf[256];
    va_list  args;

    va_start(args, fmt);
    n = vsnprintf(buf, sizeof(buf) - 1, fmt, args);
    va_end(args);

    if (n < 0) {
        return;
    }

    if (n > (int) sizeof(buf) - 2) {
        n = sizeof(buf) - 2;
    }

    buf[n++] = '\n';

    if (write(STDERR_FILENO, buf, n) < 0) {
        /* best effort: a test that needs the line will say so */
    }
}


static inline char *
mb_dup(const char *s, int len)
{
    char  *p;

    p = malloc(len + 1);
    if (p == NULL) {
        return NULL;
    }

    memcpy(p, s, len);
    p[len] = '\0';

    return p;
}


/* prefix and body in one malloc()ed, NUL-terminated answer */
static inline char *
mb_cat(const char *prefix, const char *body)
{
    size_t  plen, blen;
    char   *p;

    plen = strlen(prefix);
    blen = strlen(body);

    p = malloc(plen + blen + 1);
    if (p == NULL) {
        return NULL;
    }

    memcpy(p, prefix, plen);
    memcpy(p + plen, body, blen + 1);

    return p;
}


/* the request as a NUL-terminated copy ("" for NULL), for parsing */
static inline char *
mb_req(void *task, int *len)
{
    char  *req;

    *len = 0;
    req = ngx_http_lua_ffi_get_req(task, len);

    return mb_dup(req ? req : "", req ? *len : 0);
}


static inline int
mb_starts(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}


/*
 * Threads a runtime starts, joined by the image's destructor: dlclose()
 * must not unmap code that one of them still runs. A runtime whose
 * thread never returns (mb_no_null) must not use this.
 */

typedef struct mb_thread_s  mb_thread_t;

struct mb_thread_s {
    pthread_t     id;
    mb_thread_t  *next;
};

static pthread_mutex_t  mb_threads_lock = PTHREAD_MUTEX_INITIALIZER;
static mb_thread_t     *mb_threads;


static inline int
mb_spawn(void *(*fn)(void *), void *arg)
{
    mb_thread_t  *t;

    t = malloc(sizeof(mb_thread_t));
    if (t == NULL) {
        return -1;
    }

    pthread_mutex_lock(&mb_threads_lock);

    if (pthread_create(&t->id, NULL, fn, arg) != 0) {
        pthread_mutex_unlock(&mb_threads_lock);
        free(t);
        return -1;
    }

    t->next = mb_threads;
    mb_threads = t;

    pthread_mutex_unlock(&mb_threads_lock);

    return 0;
}


static inline void
mb_join_all(void)
{
    mb_thread_t  *t, *next;

    pthread_mutex_lock(&mb_threads_lock);
    t = mb_threads;
    mb_threads = NULL;
    pthread_mutex_unlock(&mb_threads_lock);

    for ( /* void */ ; t != NULL; t = next) {
        next = t->next;
        pthread_join(t->id, NULL);
        free(t);
    }
}


/*
 * An answer a thread gives later: from "MS:BODY" (or "MS", the body then
 * being the same text), for task, after MS milliseconds. again tells that
 * thread what to do; mb_later_free() when it is done. NULL: out of memory.
 */

typedef struct {
    void  *task;
    int    ms;
    char  *body;
    int    again;
} mb_later_t;


static inline mb_later_t *
mb_later_new(void *task, char *arg, int again)
{
    char        *body;
    mb_later_t  *l;

    body = strchr(arg, ':');
    body = body ? body + 1 : arg;

    l = malloc(sizeof(mb_later_t));
    if (l == NULL) {
        return NULL;
    }

    l->task = task;
    l->ms = atoi(arg);
    l->body = mb_dup(body, strlen(body));
    l->again = again;

    return l;
}


static inline void
mb_later_free(mb_later_t *l)
{
    free(l->body);
    free(l);
}


/*
 * The runtime most of these libraries are: libffi_init starts one thread
 * that polls the runtime's queue with poll(tq), and the image's destructor
 * joins it (and whatever else mb_spawn() started) before dlclose() unmaps
 * the code. A library with more to do at either end writes its own.
 */

#define MB_ONE_POLLER_INIT(poll)                                             \
    int                                                                      \
    libffi_init(char *cfg, void *tq)                                         \
    {                                                                        \
        (void) cfg;                                                          \
                                                                             \
        return mb_spawn(poll, tq) == 0 ? 0 : 1;                              \
    }

#define MB_JOIN_AT_UNLOAD()                                                  \
    __attribute__((destructor)) static void                                  \
    mb_join_at_unload(void)                                                  \
    {                                                                        \
        mb_join_all();                                                       \
    }

#endif /* MB_H */
