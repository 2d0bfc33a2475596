/*
 * libffi_test: the command runtime the bridge's tests talk to ("echo:abc",
 * "rc:3", "sleep:50:x", "park:g:x"...). Uses only upstream's ABI names,
 * but for the cfg word "batch" (the host's task_poll_batch extension).
 */

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>


/*
 * The host's ABI, declared here on purpose instead of including a header
 * of ours: this proves that a library written against upstream
 * lua-resty-ffi loads unchanged.
 */
extern void *ngx_http_lua_ffi_task_poll(void *tq);
extern char *ngx_http_lua_ffi_get_req(void *tsk, int *len);
extern void ngx_http_lua_ffi_respond(void *tsk, int rc, char *rsp,
    int rsp_len);

/* the extension, weak: only the cfg word "batch" needs it */
#pragma weak ngx_http_lua_ffi_task_poll_batch
extern int ngx_http_lua_ffi_task_poll_batch(void *tq, void **tasks, int n);

int libffi_init(char *cfg, void *tq);


/*
 * Requests are "cmd" or "cmd:arg" (binary safe, by length):
 *
 *   echo:BYTES         answers BYTES
 *   rc:N               rc N, no answer
 *   rcmsg:N:MSG        rc N, answer MSG
 *   nul:MSG            answers MSG as a NUL-terminated string (rsp_len 0)
 *   sleep:MS:BYTES     answers BYTES after MS ms (the timer thread does;
 *                      the poller takes the next task at once)
 *   big:N              answers N bytes of 'x'
 *   null               rc 0, rsp NULL
 *   cfg                answers the cfg string (NULL when cfg was NULL)
 *   pid                answers getpid() in decimal
 *   nolen              calls get_req(task, NULL), answers "ok"
 *   batch              answers how many tasks the poll that took it took
 *                      (1 unless cfg has "batch")
 *   park:NAME:BYTES    answers BYTES once gate NAME opens (at once if open)
 *   release:NAME       opens gate NAME for good, answers "released N"
 *                      (N: parked tasks it answered)
 *
 * a NULL request answers "null-request", an empty one "empty-request",
 * anything else rc 2 and "unknown command: ...".
 *
 * cfg is a comma-separated list of words; those that mean something:
 *   fail         libffi_init returns 7
 *   threads=N    N poller threads (default 1)
 *   hold=NAME    pollers wait until gate NAME opens before polling, so
 *                tasks pile up in the queue (max_queue tests)
 *   trace        one stderr (= error.log) line per task taken/answered
 *   batch        pollers take up to 64 tasks a poll (task_poll_batch)
 *
 * Gates are per process and shared by every runtime of the image: a
 * "release" sent to one runtime frees tasks parked in another.
 */


#define FFI_TEST_MAX_THREADS  64
#define FFI_TEST_LABEL_LEN    64
#define FFI_TEST_FAIL_RC      7
#define FFI_TEST_MAX_BATCH    64


typedef struct ffi_test_rt_s  ffi_test_rt_t;

/* An answer kept for later: a sleep timer or a task parked at a gate. */
typedef struct ffi_test_pending_s  ffi_test_pending_t;

struct ffi_test_pending_s {
    ffi_test_pending_t  *next;
    ffi_test_rt_t       *rt;
    int                  trace;
    void                *task;
    char                *rsp;
    int                  rsp_len;
    struct timespec      deadline;
    char                 label[FFI_TEST_LABEL_LEN];
};

/* A named gate: tasks parked on it and "hold" pollers wait until opened. */
typedef struct ffi_test_gate_s  ffi_test_gate_t;

struct ffi_test_gate_s {
    ffi_test_gate_t     *next;
    char                *name;
    int                  open;
    ffi_test_pending_t  *parked;
};

struct ffi_test_rt_s {
    void                *tq;
    char                *cfg;           /* NULL when Lua passed nil */
    char                *hold;          /* gate to pass before polling */
    int                  trace;
    int                  batch;         /* poll up to this many at once */
    int                  nthreads;
    pthread_t            pollers[FFI_TEST_MAX_THREADS];

    /* one poller inside task_poll at a time, so that after the NULL task
     * no thread of ours touches tq again */
    pthread_mutex_t      poll_lock;
    int                  unloaded;

    pthread_t            timer_thread;
    pthread_mutex_t      timer_lock;
    pthread_cond_t       timer_cond;    /* CLOCK_MONOTONIC */
    ffi_test_pending_t  *timers;        /* sorted by deadline */
    int                  timer_stop;
};


/* Every runtime of this image shares the gates, keyed by name. */
static pthread_mutex_t   ffi_test_gates_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t    ffi_test_gates_cond = PTHREAD_COND_INITIALIZER;
static ffi_test_gate_t  *ffi_test_gates;

/*
 * The thread that takes the NULL task cannot join itself; it leaves its id
 * here and the next libffi_init or the image's destructor joins it, so no
 * thread of ours still runs when the image is unmapped.
 */
static pthread_mutex_t   ffi_test_retired_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_t         ffi_test_retired[FFI_TEST_MAX_THREADS];
static int               ffi_test_nretired;


static void
ffi_test_log(int on, const char *fmt, ...)
{
    int      n;
    char     buf[512];
    va_list  args;

    if (!on) {
        return;
    }

    /* stderr of an nginx worker is its error log: one write() per line
     * keeps lines whole when threads log at once */
    n = snprintf(buf, sizeof(buf), "ffi_test[%d]: ", (int) getpid());

    va_start(args, fmt);
    n += vsnprintf(buf + n, sizeof(buf) - n - 1, fmt, args);
    va_end(args);

    if (n > (int) sizeof(buf) - 2) {
        n = sizeof(buf) - 2;
    }

    buf[n++] = '\n';

    if (write(STDERR_FILENO, buf, n) < 0) {
        /* nothing sensible to do: tracing is best effort */
    }
}


/* A printable copy of the start of a request, for trace lines. */
static void
ffi_test_label(char *dst, const char *req, int len)
{
    int  i;

    if (req == NULL) {
        snprintf(dst, FFI_TEST_LABEL_LEN, "(null)");
        return;
    }

    for (i = 0; i < len && i < FFI_TEST_LABEL_LEN - 1; i++) {
        dst[i] = (req[i] >= 0x20 && req[i] < 0x7f) ? req[i] : '.';
    }

    dst[i] = '\0';
}


static char *
ffi_test_dup(const char *data, int len)
{
    char  *p;

    p = malloc(len + 1);
    if (p == NULL) {
        return NULL;
    }

    memcpy(p, data, len);
    p[len] = '\0';

    return p;
}


/* The trace flag, not the runtime, is passed: a parked task may be
 * answered by another runtime's thread while its own is unloading. */
static void
ffi_test_answer(int trace, void *task, int rc, char *rsp, int len,
    const char *label)
{
    ngx_http_lua_ffi_respond(task, rc, rsp, len);
    ffi_test_log(trace, "answered %s", label);
}


/* Parses the leading decimal of s (at most len bytes); *used: its length. */
static long
ffi_test_number(const char *s, int len, int *used)
{
    int   i, neg;
    long  n;

    i = 0;
    neg = 0;
    n = 0;

    if (len > 0 && s[0] == '-') {
        neg = 1;
        i++;
    }

    for ( /* void */ ; i < len && s[i] >= '0' && s[i] <= '9'; i++) {
        n = n * 10 + (s[i] - '0');
    }

    *used = i;

    return neg ? -n : n;
}


static ffi_test_gate_t *
ffi_test_gate(const char *name, int len)
{
    ffi_test_gate_t  *g;

    for (g = ffi_test_gates; g != NULL; g = g->next) {
        if ((int) strlen(g->name) == len && memcmp(g->name, name, len) == 0) {
            return g;
        }
    }

    g = calloc(1, sizeof(ffi_test_gate_t));
    if (g == NULL) {
        return NULL;
    }

    g->name = ffi_test_dup(name, len);
    if (g->name == NULL) {
        free(g);
        return NULL;
    }

    g->next = ffi_test_gates;
    ffi_test_gates = g;

    return g;
}


static void
ffi_test_gate_wait(ffi_test_rt_t *rt)
{
    ffi_test_gate_t  *g;

    pthread_mutex_lock(&ffi_test_gates_lock);

    g = ffi_test_gate(rt->hold, strlen(rt->hold));

    while (g != NULL && !g->open) {
        pthread_cond_wait(&ffi_test_gates_cond, &ffi_test_gates_lock);
    }

    pthread_mutex_unlock(&ffi_test_gates_lock);
}


/* "park:NAME:BYTES": answered with BYTES once gate NAME opens. */
static void
ffi_test_park(ffi_test_rt_t *rt, void *task, const char *arg, int len,
    const char *label)
{
    int                  nlen;
    const char          *colon;
    ffi_test_gate_t     *g;
    ffi_test_pending_t  *p;

    colon = memchr(arg, ':', len);
    nlen = colon ? colon - arg : len;

    p = calloc(1, sizeof(ffi_test_pending_t));
    if (p == NULL) {
        ffi_test_answer(rt->trace, task, 12, NULL, 0, label);
        return;
    }

    p->rt = rt;
    p->trace = rt->trace;
    p->task = task;
    p->rsp_len = colon ? len - nlen - 1 : 0;
    p->rsp = ffi_test_dup(colon ? colon + 1 : "", p->rsp_len);
    memcpy(p->label, label, FFI_TEST_LABEL_LEN);

    pthread_mutex_lock(&ffi_test_gates_lock);

    g = ffi_test_gate(arg, nlen);

    if (g != NULL && !g->open) {
        p->next = g->parked;
        g->parked = p;
        pthread_mutex_unlock(&ffi_test_gates_lock);
        ffi_test_log(rt->trace, "parked %s", label);
        return;
    }

    pthread_mutex_unlock(&ffi_test_gates_lock);

    ffi_test_answer(rt->trace, task, 0, p->rsp, p->rsp_len, label);
    free(p);
}


static void
ffi_test_answer_list(ffi_test_pending_t *p)
{
    ffi_test_pending_t  *next;

    for ( /* void */ ; p != NULL; p = next) {
        next = p->next;
        ffi_test_answer(p->trace, p->task, 0, p->rsp, p->rsp_len, p->label);
        free(p);
    }
}


/* "release:NAME": opens gate NAME for good, answers "released N". */
static void
ffi_test_release(ffi_test_rt_t *rt, void *task, const char *arg, int len,
    const char *label)
{
    int                  n;
    char                *rsp;
    ffi_test_gate_t     *g;
    ffi_test_pending_t  *list, *p;

    pthread_mutex_lock(&ffi_test_gates_lock);

    list = NULL;
    g = ffi_test_gate(arg, len);

    if (g != NULL) {
        g->open = 1;
        list = g->parked;
        g->parked = NULL;
    }

    pthread_cond_broadcast(&ffi_test_gates_cond);
    pthread_mutex_unlock(&ffi_test_gates_lock);

    n = 0;
    for (p = list; p != NULL; p = p->next) {
        n++;
    }

    ffi_test_answer_list(list);

    rsp = malloc(32);
    if (rsp != NULL) {
        snprintf(rsp, 32, "released %d", n);
    }

    ffi_test_answer(rt->trace, task, 0, rsp, 0, label);
}


/* On unload the tasks this runtime parked are answered, not lost. */
static void
ffi_test_unpark(ffi_test_rt_t *rt)
{
    ffi_test_gate_t      *g;
    ffi_test_pending_t   *list, *p, **pp;

    list = NULL;

    pthread_mutex_lock(&ffi_test_gates_lock);

    for (g = ffi_test_gates; g != NULL; g = g->next) {
        pp = &g->parked;

        while (*pp != NULL) {
            p = *pp;

            if (p->rt == rt) {
                *pp = p->next;
                p->next = list;
                list = p;

            } else {
                pp = &p->next;
            }
        }
    }

    pthread_mutex_unlock(&ffi_test_gates_lock);

    ffi_test_answer_list(list);
}


/* "sleep:MS:BYTES": the timer thread answers, the poller moves on. */
static void
ffi_test_sleep(ffi_test_rt_t *rt, void *task, const char *arg, int len,
    const char *label)
{
    int                   used;
    long                  ms;
    ffi_test_pending_t   *p, **pp;

    ms = ffi_test_number(arg, len, &used);

    p = calloc(1, sizeof(ffi_test_pending_t));
    if (p == NULL) {
        ffi_test_answer(rt->trace, task, 12, NULL, 0, label);
        return;
    }

    if (used < len && arg[used] == ':') {
        used++;
    }

    p->rt = rt;
    p->trace = rt->trace;
    p->task = task;
    p->rsp_len = len - used;
    p->rsp = ffi_test_dup(arg + used, p->rsp_len);
    memcpy(p->label, label, FFI_TEST_LABEL_LEN);

    clock_gettime(CLOCK_MONOTONIC, &p->deadline);
    p->deadline.tv_sec += ms / 1000;
    p->deadline.tv_nsec += (ms % 1000) * 1000000;

    if (p->deadline.tv_nsec >= 1000000000) {
        p->deadline.tv_sec++;
        p->deadline.tv_nsec -= 1000000000;
    }

    pthread_mutex_lock(&rt->timer_lock);

    for (pp = &rt->timers; *pp != NULL; pp = &(*pp)->next) {
        if ((*pp)->deadline.tv_sec > p->deadline.tv_sec
            || ((*pp)->deadline.tv_sec == p->deadline.tv_sec
                && (*pp)->deadline.tv_nsec > p->deadline.tv_nsec))
        {
            break;
        }
    }

    p->next = *pp;
    *pp = p;

    pthread_cond_signal(&rt->timer_cond);
    pthread_mutex_unlock(&rt->timer_lock);
}


static int
ffi_test_due(struct timespec *deadline)
{
    struct timespec  now;

    clock_gettime(CLOCK_MONOTONIC, &now);

    return now.tv_sec > deadline->tv_sec
           || (now.tv_sec == deadline->tv_sec
               && now.tv_nsec >= deadline->tv_nsec);
}


static void *
ffi_test_timer(void *arg)
{
    ffi_test_rt_t       *rt = arg;
    ffi_test_pending_t  *p;

    pthread_mutex_lock(&rt->timer_lock);

    for ( ;; ) {
        p = rt->timers;

        if (p != NULL && ffi_test_due(&p->deadline)) {
            rt->timers = p->next;
            pthread_mutex_unlock(&rt->timer_lock);

            ffi_test_answer(p->trace, p->task, 0, p->rsp, p->rsp_len,
                            p->label);
            free(p);

            pthread_mutex_lock(&rt->timer_lock);
            continue;
        }

        /* unloading still lets every sleep run its course: drain */
        if (p == NULL && rt->timer_stop) {
            break;
        }

        if (p != NULL) {
            pthread_cond_timedwait(&rt->timer_cond, &rt->timer_lock,
                                   &p->deadline);

        } else {
            pthread_cond_wait(&rt->timer_cond, &rt->timer_lock);
        }
    }

    pthread_mutex_unlock(&rt->timer_lock);

    return NULL;
}


static void
ffi_test_handle(ffi_test_rt_t *rt, void *task, int got)
{
    int          len, alen, rc, used, trace;
    long         n;
    char        *req, *rsp, *colon;
    const char  *arg;
    char         label[FFI_TEST_LABEL_LEN];

    trace = rt->trace;
    len = 0;
    req = ngx_http_lua_ffi_get_req(task, &len);

    ffi_test_label(label, req, len);
    ffi_test_log(rt->trace, "got %s", label);

    if (req == NULL) {
        ffi_test_answer(trace, task, 0, ffi_test_dup("null-request", 12),
                        12, label);
        return;
    }

    if (len == 0) {
        ffi_test_answer(trace, task, 0,
                        ffi_test_dup("empty-request", 13), 13, label);
        return;
    }

    colon = memchr(req, ':', len);
    arg = colon ? colon + 1 : req + len;
    alen = colon ? len - (colon - req) - 1 : 0;

#define ffi_test_is(name)                                                     \
    ((colon ? colon - req : len) == (int) sizeof(name) - 1                    \
     && memcmp(req, name, sizeof(name) - 1) == 0)

    if (ffi_test_is("echo")) {
        /* rsp_len 0 would mean "NUL-terminated", which "" also is */
        ffi_test_answer(trace, task, 0, ffi_test_dup(arg, alen), alen, label);

    } else if (ffi_test_is("rc")) {
        rc = (int) ffi_test_number(arg, alen, &used);
        ffi_test_answer(trace, task, rc, NULL, 0, label);

    } else if (ffi_test_is("rcmsg")) {
        rc = (int) ffi_test_number(arg, alen, &used);
        if (used < alen && arg[used] == ':') {
            used++;
        }

        ffi_test_answer(trace, task, rc, ffi_test_dup(arg + used, alen - used),
                        alen - used, label);

    } else if (ffi_test_is("nul")) {
        ffi_test_answer(trace, task, 0, ffi_test_dup(arg, alen), 0, label);

    } else if (ffi_test_is("sleep")) {
        ffi_test_sleep(rt, task, arg, alen, label);

    } else if (ffi_test_is("big")) {
        n = ffi_test_number(arg, alen, &used);
        n = n < 0 ? 0 : n;
        rsp = malloc(n + 1);
        if (rsp != NULL) {
            memset(rsp, 'x', n);
            rsp[n] = '\0';
        }

        ffi_test_answer(trace, task, 0, rsp, (int) n, label);

    } else if (ffi_test_is("null")) {
        ffi_test_answer(trace, task, 0, NULL, 0, label);

    } else if (ffi_test_is("cfg")) {
        rsp = rt->cfg ? ffi_test_dup(rt->cfg, strlen(rt->cfg)) : NULL;
        ffi_test_answer(trace, task, 0, rsp, rsp ? (int) strlen(rsp) : 0,
                        label);

    } else if (ffi_test_is("park")) {
        ffi_test_park(rt, task, arg, alen, label);

    } else if (ffi_test_is("release")) {
        ffi_test_release(rt, task, arg, alen, label);

    } else if (ffi_test_is("pid")) {
        rsp = malloc(32);
        if (rsp != NULL) {
            snprintf(rsp, 32, "%d", (int) getpid());
        }

        ffi_test_answer(trace, task, 0, rsp, 0, label);

    } else if (ffi_test_is("batch")) {
        rsp = malloc(32);
        if (rsp != NULL) {
            snprintf(rsp, 32, "%d", got);
        }

        ffi_test_answer(trace, task, 0, rsp, 0, label);

    } else if (ffi_test_is("nolen")) {
        /* the ABI allows len == NULL */
        arg = ngx_http_lua_ffi_get_req(task, NULL) ? "ok" : "null";
        ffi_test_answer(trace, task, 0, ffi_test_dup(arg, strlen(arg)),
                        0, label);

    } else {
        rsp = malloc(FFI_TEST_LABEL_LEN + 32);
        if (rsp != NULL) {
            snprintf(rsp, FFI_TEST_LABEL_LEN + 32, "unknown command: %s",
                     label);
        }

        ffi_test_answer(trace, task, 2, rsp, 0, label);
    }

#undef ffi_test_is
}


static void
ffi_test_retire_self(void)
{
    pthread_mutex_lock(&ffi_test_retired_lock);

    if (ffi_test_nretired < FFI_TEST_MAX_THREADS) {
        ffi_test_retired[ffi_test_nretired++] = pthread_self();

    } else {
        pthread_detach(pthread_self());
    }

    pthread_mutex_unlock(&ffi_test_retired_lock);
}


static void
ffi_test_join_retired(void)
{
    int        i, n;
    pthread_t  ids[FFI_TEST_MAX_THREADS];

    pthread_mutex_lock(&ffi_test_retired_lock);
    n = ffi_test_nretired;
    memcpy(ids, ffi_test_retired, n * sizeof(pthread_t));
    ffi_test_nretired = 0;
    pthread_mutex_unlock(&ffi_test_retired_lock);

    for (i = 0; i < n; i++) {
        pthread_join(ids[i], NULL);
    }
}


__attribute__((destructor)) static void
ffi_test_fini(void)
{
    ffi_test_join_retired();
}


/* Run by the poller that took the NULL task: stop everything else. */
static void
ffi_test_unload(ffi_test_rt_t *rt)
{
    int  i, joined;

    joined = 0;

    for (i = 0; i < rt->nthreads; i++) {
        if (!pthread_equal(rt->pollers[i], pthread_self())) {
            pthread_join(rt->pollers[i], NULL);
            joined++;
        }
    }

    ffi_test_unpark(rt);

    pthread_mutex_lock(&rt->timer_lock);
    rt->timer_stop = 1;
    pthread_cond_signal(&rt->timer_cond);
    pthread_mutex_unlock(&rt->timer_lock);

    pthread_join(rt->timer_thread, NULL);
    joined++;

    /* always logged: tests wait for this line to know the drain finished */
    ffi_test_log(1, "runtime unloaded cfg=%s threads_joined=%d",
                 rt->cfg ? rt->cfg : "(null)", joined);

    pthread_mutex_destroy(&rt->poll_lock);
    pthread_mutex_destroy(&rt->timer_lock);
    pthread_cond_destroy(&rt->timer_cond);
    free(rt->cfg);
    free(rt->hold);
    free(rt);

    ffi_test_retire_self();
}


static void *
ffi_test_poller(void *arg)
{
    int             i, got;
    void           *tasks[FFI_TEST_MAX_BATCH];
    ffi_test_rt_t  *rt = arg;

    if (rt->hold != NULL) {
        ffi_test_gate_wait(rt);
    }

    for ( ;; ) {
        pthread_mutex_lock(&rt->poll_lock);

        if (rt->unloaded) {
            pthread_mutex_unlock(&rt->poll_lock);
            return NULL;
        }

        if (rt->batch > 1) {
            got = ngx_http_lua_ffi_task_poll_batch(rt->tq, tasks, rt->batch);

        } else {
            tasks[0] = ngx_http_lua_ffi_task_poll(rt->tq);
            got = (tasks[0] != NULL);
        }

        if (got == 0) {
            rt->unloaded = 1;
        }

        pthread_mutex_unlock(&rt->poll_lock);

        if (got == 0) {
            ffi_test_unload(rt);
            return NULL;
        }

        for (i = 0; i < got; i++) {
            ffi_test_handle(rt, tasks[i], got);
        }
    }
}


/* cfg is a comma-separated list: "fail", "threads=N", "hold=NAME",
 * "trace", "batch"; other words are kept only as part of the "cfg" answer. */
static int
ffi_test_parse(ffi_test_rt_t *rt, const char *cfg)
{
    int          len, used;
    const char  *p, *end;

    rt->nthreads = 1;

    for (p = cfg; p != NULL && *p != '\0'; p = *end ? end + 1 : end) {
        end = strchr(p, ',');
        if (end == NULL) {
            end = p + strlen(p);
        }

        len = end - p;

        if (len == 4 && memcmp(p, "fail", 4) == 0) {
            return FFI_TEST_FAIL_RC;

        } else if (len == 5 && memcmp(p, "trace", 5) == 0) {
            rt->trace = 1;

        } else if (len == 5 && memcmp(p, "batch", 5) == 0
                   && ngx_http_lua_ffi_task_poll_batch != NULL)
        {
            rt->batch = FFI_TEST_MAX_BATCH;

        } else if (len > 8 && memcmp(p, "threads=", 8) == 0) {
            rt->nthreads = (int) ffi_test_number(p + 8, len - 8, &used);
            if (rt->nthreads < 1 || rt->nthreads > FFI_TEST_MAX_THREADS) {
                rt->nthreads = 1;
            }

        } else if (len > 5 && memcmp(p, "hold=", 5) == 0) {
            free(rt->hold);
            rt->hold = ffi_test_dup(p + 5, len - 5);
        }
    }

    return 0;
}


int
libffi_init(char *cfg, void *tq)
{
    int                 i, rc;
    ffi_test_rt_t      *rt;
    pthread_condattr_t  attr;

    /* threads of runtimes unloaded earlier are finished by now */
    ffi_test_join_retired();

    rt = calloc(1, sizeof(ffi_test_rt_t));
    if (rt == NULL) {
        return ENOMEM;
    }

    rc = ffi_test_parse(rt, cfg);
    if (rc != 0) {
        free(rt->hold);
        free(rt);
        return rc;
    }

    rt->tq = tq;

    /* cfg is only valid during this call */
    rt->cfg = cfg ? ffi_test_dup(cfg, strlen(cfg)) : NULL;

    pthread_mutex_init(&rt->poll_lock, NULL);
    pthread_mutex_init(&rt->timer_lock, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&rt->timer_cond, &attr);
    pthread_condattr_destroy(&attr);

    if (pthread_create(&rt->timer_thread, NULL, ffi_test_timer, rt) != 0) {
        free(rt->cfg);
        free(rt->hold);
        free(rt);
        return EAGAIN;
    }

    /* no poller runs before all ids are stored: the unloading one joins
     * the others by these ids */
    pthread_mutex_lock(&rt->poll_lock);

    for (i = 0; i < rt->nthreads; i++) {
        if (pthread_create(&rt->pollers[i], NULL, ffi_test_poller, rt) != 0) {
            rt->nthreads = i;
            break;
        }
    }

    pthread_mutex_unlock(&rt->poll_lock);

    if (rt->nthreads == 0) {
        /* nobody will ever take the NULL task: stop the timer here */
        pthread_mutex_lock(&rt->timer_lock);
        rt->timer_stop = 1;
        pthread_cond_signal(&rt->timer_cond);
        pthread_mutex_unlock(&rt->timer_lock);
        pthread_join(rt->timer_thread, NULL);
        free(rt->cfg);
        free(rt->hold);
        free(rt);
        return EAGAIN;
    }

    ffi_test_log(rt->trace, "init cfg=%s threads=%d", cfg ? cfg : "(null)",
                 rt->nthreads);

    return 0;
}
