/*
 * A runtime that never answers (cfg ""), or answers every task late
 * (cfg "late=MS": a 1 MiB answer MS ms after it took the task; cfg
 * "late=next": a 1 MiB answer once it took the next task, "flush" answered
 * at once after the one it follows).
 */

#include "mb.h"


#define MB_LATE_SIZE  (1024 * 1024)


typedef struct {
    void  *tq;
    int    late_ms;         /* -1: never answer */
    int    late_next;       /* answer a task when the next one comes */
} mb_silent_t;

typedef struct {
    void  *task;
    int    ms;
    char  *label;
} mb_late_t;


static void
mb_answer_big(void *task)
{
    char  *rsp;

    /* big enough that a leaked answer shows in RSS and in LeakSanitizer */
    rsp = malloc(MB_LATE_SIZE);
    if (rsp != NULL) {
        memset(rsp, 'L', MB_LATE_SIZE);
    }

    ngx_http_lua_ffi_respond(task, 0, rsp, rsp ? MB_LATE_SIZE : 0);
}


static void *
mb_late_answer(void *arg)
{
    mb_late_t  *l = arg;

    usleep(l->ms * 1000);

    mb_answer_big(l->task);
    mb_log("mb_silent answered %s late, after %d ms", l->label, l->ms);

    free(l->label);
    free(l);

    return NULL;
}


/*
 * Callers make one call at a time: the next task is posted only once the
 * caller stopped waiting for the previous one (it timed out), so answering
 * then is late for certain, however slowly the machine runs.
 */

static void
mb_answer_previous(void **prev, char **prev_req)
{
    if (*prev == NULL) {
        return;
    }

    mb_answer_big(*prev);
    mb_log("mb_silent answered %s late, after the next task", *prev_req);

    free(*prev_req);
    *prev = NULL;
    *prev_req = NULL;
}


static void *
mb_silent_poll(void *arg)
{
    int           len;
    char         *req, *prev_req;
    void         *task, *prev;
    mb_late_t    *l;
    mb_silent_t  *s = arg;

    prev = NULL;
    prev_req = NULL;

    while ((task = ngx_http_lua_ffi_task_poll(s->tq)) != NULL) {
        req = mb_req(task, &len);
        mb_log("mb_silent took %s", req ? req : "?");

        if (s->late_next && req != NULL) {
            mb_answer_previous(&prev, &prev_req);

            if (strcmp(req, "flush") == 0) {
                ngx_http_lua_ffi_respond(task, 0, NULL, 0);
                free(req);
                continue;
            }

            prev = task;
            prev_req = req;
            continue;
        }

        if (s->late_ms < 0 || req == NULL) {
            /* the task is the host's: keeping quiet leaks nothing of ours */
            free(req);
            continue;
        }

        l = malloc(sizeof(mb_late_t));
        if (l == NULL) {
            free(req);
            continue;
        }

        l->task = task;
        l->ms = s->late_ms;
        l->label = req;

        if (mb_spawn(mb_late_answer, l) != 0) {
            free(l);
            free(req);
        }
    }

    mb_answer_previous(&prev, &prev_req);
    mb_log("mb_silent took its NULL task");
    free(s);

    return NULL;
}


int
libffi_init(char *cfg, void *tq)
{
    mb_silent_t  *s;

    s = calloc(1, sizeof(mb_silent_t));
    if (s == NULL) {
        return 1;
    }

    s->tq = tq;
    s->late_ms = (cfg && mb_starts(cfg, "late=")) ? atoi(cfg + 5) : -1;
    s->late_next = (cfg && strcmp(cfg, "late=next") == 0);

    if (mb_spawn(mb_silent_poll, s) != 0) {
        free(s);
        return 2;
    }

    return 0;
}


__attribute__((destructor)) static void
mb_silent_fini(void)
{
    mb_join_all();
}
