/*
 * libffi_services: a runtime that drives the runtime services (logging and
 * shared dicts) from threads of its own, for t/7NN-*.t.
 */

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ngx_http_lua_ffi.h"


/*
 * Requests, fields separated by ':' (the last one takes the rest):
 *
 *   log:LEVEL:THREADS:COUNT:TAG   THREADS threads log COUNT lines each, at
 *                                 once, "TAG t=T n=N <x...x> end"; answers
 *                                 "sent S dropped D"
 *   logbg:LEVEL:THREADS:COUNT:DICT:TAG
 *                                 the same in the background: answers
 *                                 "started" at once; once every thread is
 *                                 done, sets key "logbg" of DICT to
 *                                 "sent S dropped D"
 *   lognul:LEVEL:MSG              logs MSG as a NUL-terminated string
 *   lograw:LEVEL:MSG              logs MSG by length (any bytes), answers
 *                                 the return code
 *   incr:DICT:KEY:THREADS:COUNT   THREADS threads incr KEY by 1 (init 0)
 *                                 COUNT times each; answers "errors E"
 *   incr1:DICT:KEY:BY:INIT        one incr; answers the new value
 *   get:DICT:KEY                  rc: get's return code; answer: the value
 *   set:DICT:KEY:EXPTIME:VALUE    rc: set's return code
 *   setbig:DICT:KEY:N             sets N bytes of 'v', no expiry
 *   del:DICT:KEY                  set with val NULL
 *
 * cfg "initlog" logs one warn line from libffi_init; "initfail" logs why
 * and fails (returns 3).
 */

typedef struct {
    void         *tq;
    const char   *dict;
    const char   *key;
    const char   *tag;
    int           level;
    int           count;
    int           id;
    int           failed;
} job_t;


static char *
field(char **p)
{
    char  *f = *p, *colon;

    if (f == NULL) {
        return NULL;
    }

    colon = strchr(f, ':');

    if (colon) {
        *colon = '\0';
        *p = colon + 1;

    } else {
        *p = NULL;
    }

    return f;
}


static void *
log_thread(void *arg)
{
    int     i, n;
    char    line[512], pad[301];
    job_t  *job = arg;

    memset(pad, 'x', 300);
    pad[300] = '\0';

    for (i = 0; i < job->count; i++) {
        n = snprintf(line, sizeof(line), "%s t=%d n=%d %s end", job->tag,
                     job->id, i, pad);

        if (ngx_http_lua_ffi_log(job->tq, job->level, line, n) != 0) {
            job->failed++;
        }
    }

    return NULL;
}


static void *
incr_thread(void *arg)
{
    int     i;
    double  result;
    job_t  *job = arg;

    for (i = 0; i < job->count; i++) {
        if (ngx_http_lua_ffi_dict_incr(job->tq, job->dict, job->key, -1, 1, 0,
                                       &result)
            != 0)
        {
            job->failed++;
        }
    }

    return NULL;
}


static char *
run_threads(void *tq, void *(*fn)(void *), job_t *proto, int nthreads,
    int *failed)
{
    int         i;
    job_t      *jobs;
    pthread_t  *tids;

    jobs = calloc(nthreads, sizeof(job_t));
    tids = calloc(nthreads, sizeof(pthread_t));

    if (jobs == NULL || tids == NULL) {
        free(jobs);
        free(tids);
        return "no memory";
    }

    for (i = 0; i < nthreads; i++) {
        jobs[i] = *proto;
        jobs[i].tq = tq;
        jobs[i].id = i;
    }

    /* started first, then let go together as far as threads allow */
    for (i = 0; i < nthreads; i++) {
        if (pthread_create(&tids[i], NULL, fn, &jobs[i]) != 0) {
            nthreads = i;
            break;
        }
    }

    *failed = 0;

    for (i = 0; i < nthreads; i++) {
        pthread_join(tids[i], NULL);
        *failed += jobs[i].failed;
    }

    free(jobs);
    free(tids);

    return NULL;
}


static void
answer(void *task, int rc, const char *fmt, ...)
{
    char     *rsp;
    va_list   args;

    rsp = malloc(256);
    if (rsp == NULL) {
        ngx_http_lua_ffi_respond(task, 99, NULL, 0);
        return;
    }

    va_start(args, fmt);
    vsnprintf(rsp, 256, fmt, args);
    va_end(args);

    ngx_http_lua_ffi_respond(task, rc, rsp, 0);
}


typedef struct {
    job_t   job;
    int     nthreads;
    char    dict[64];
    char    tag[64];
} background_t;


static void *
log_background(void *arg)
{
    int            failed, n;
    char           result[64];
    background_t  *bg = arg;

    bg->job.dict = bg->dict;
    bg->job.tag = bg->tag;

    if (run_threads(bg->job.tq, log_thread, &bg->job, bg->nthreads, &failed)
        != NULL)
    {
        failed = -1;
    }

    n = snprintf(result, sizeof(result), "sent %d dropped %d",
                 bg->nthreads * bg->job.count - failed, failed);
    (void) ngx_http_lua_ffi_dict_set(bg->job.tq, bg->dict, "logbg", -1,
                                     result, n, 0);
    free(bg);

    return NULL;
}


static void
handle(void *tq, void *task, char *req)
{
    int     rc, failed, nthreads, len;
    char   *p = req, *cmd, *err, *val;
    job_t   job;
    double  result, by;

    memset(&job, 0, sizeof(job));
    cmd = field(&p);

    if (strcmp(cmd, "log") == 0) {
        job.level = atoi(field(&p));
        nthreads = atoi(field(&p));
        job.count = atoi(field(&p));
        job.tag = p ? p : "";

        err = run_threads(tq, log_thread, &job, nthreads, &failed);
        if (err) {
            answer(task, 2, "%s", err);
            return;
        }

        answer(task, 0, "sent %d dropped %d", nthreads * job.count - failed,
               failed);
        return;
    }

    if (strcmp(cmd, "logbg") == 0) {
        background_t    *bg;
        pthread_t        tid;
        pthread_attr_t   attr;

        bg = calloc(1, sizeof(background_t));
        if (bg == NULL) {
            answer(task, 2, "no memory");
            return;
        }

        bg->job.tq = tq;
        bg->job.level = atoi(field(&p));
        bg->nthreads = atoi(field(&p));
        bg->job.count = atoi(field(&p));
        val = field(&p);
        snprintf(bg->dict, sizeof(bg->dict), "%s", val ? val : "");
        snprintf(bg->tag, sizeof(bg->tag), "%s", p ? p : "");

        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);

        if (pthread_create(&tid, &attr, log_background, bg) != 0) {
            free(bg);
            answer(task, 2, "pthread_create failed");
            return;
        }

        answer(task, 0, "started");
        return;
    }

    if (strcmp(cmd, "lognul") == 0 || strcmp(cmd, "lograw") == 0) {
        job.level = atoi(field(&p));
        val = p ? p : "";
        rc = ngx_http_lua_ffi_log(tq, job.level, val,
                                  cmd[3] == 'n' ? 0 : (int) strlen(val));
        answer(task, 0, "%d", rc);
        return;
    }

    if (strcmp(cmd, "incr") == 0) {
        job.dict = field(&p);
        job.key = field(&p);
        nthreads = atoi(field(&p));
        job.count = atoi(p);

        err = run_threads(tq, incr_thread, &job, nthreads, &failed);
        if (err) {
            answer(task, 2, "%s", err);
            return;
        }

        answer(task, 0, "errors %d", failed);
        return;
    }

    if (strcmp(cmd, "incr1") == 0) {
        job.dict = field(&p);
        job.key = field(&p);
        result = 0;
        by = atof(field(&p));
        rc = ngx_http_lua_ffi_dict_incr(tq, job.dict, job.key, -1, by,
                                        atof(p), &result);
        answer(task, rc, "%.14g", result);
        return;
    }

    if (strcmp(cmd, "get") == 0) {
        job.dict = field(&p);
        val = NULL;
        len = -7;
        rc = ngx_http_lua_ffi_dict_get(tq, job.dict, p, -1, &val, &len);

        if (rc == 0 && (val == NULL || val[len] != '\0')) {
            answer(task, 98, "bad copy");
            free(val);
            return;
        }

        /* the value goes back as the answer, so binary values survive */
        ngx_http_lua_ffi_respond(task, rc, val, len);
        return;
    }

    if (strcmp(cmd, "set") == 0) {
        job.dict = field(&p);
        job.key = field(&p);
        result = atof(field(&p));
        val = p ? p : "";
        rc = ngx_http_lua_ffi_dict_set(tq, job.dict, job.key, -1, val,
                                       (int) strlen(val), result);
        answer(task, rc, "%d", rc);
        return;
    }

    if (strcmp(cmd, "setbig") == 0) {
        job.dict = field(&p);
        job.key = field(&p);
        len = atoi(p);
        val = malloc(len + 1);

        if (val == NULL) {
            answer(task, 2, "no memory");
            return;
        }

        memset(val, 'v', len);
        rc = ngx_http_lua_ffi_dict_set(tq, job.dict, job.key, -1, val, len, 0);
        free(val);
        answer(task, rc, "%d", rc);
        return;
    }

    if (strcmp(cmd, "del") == 0) {
        job.dict = field(&p);
        rc = ngx_http_lua_ffi_dict_set(tq, job.dict, p, -1, NULL, 0, 0);
        answer(task, rc, "%d", rc);
        return;
    }

    answer(task, 2, "unknown command: %s", cmd);
}


static void *
poller(void *tq)
{
    int    len;
    char  *req, *copy;
    void  *task;

    while ((task = ngx_http_lua_ffi_task_poll(tq)) != NULL) {
        req = ngx_http_lua_ffi_get_req(task, &len);

        copy = malloc(len + 1);
        if (copy == NULL) {
            ngx_http_lua_ffi_respond(task, 99, NULL, 0);
            continue;
        }

        memcpy(copy, req ? req : "", len);
        copy[len] = '\0';

        handle(tq, task, copy);
        free(copy);
    }

    return NULL;
}


int
libffi_init(char *cfg, void *tq)
{
    pthread_t       tid;
    pthread_attr_t  attr;

    if (cfg && strstr(cfg, "initlog")) {
        ngx_http_lua_ffi_log(tq, 5, "hello from libffi_init", 0);
    }

    if (cfg && strstr(cfg, "initfail")) {
        ngx_http_lua_ffi_log(tq, 4, "libffi_init fails: initfail", 0);
        return 3;
    }

    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);

    if (pthread_create(&tid, &attr, poller, tq) != 0) {
        return 1;
    }

    return 0;
}
