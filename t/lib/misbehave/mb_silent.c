/*
 * A runtime that never answers (cfg ""), or answers every task late
 * (cfg "late=MS": a 1 MiB answer MS ms after it took the task).
 */

#include "mb.h"


#define MB_LATE_SIZE  (1024 * 1024)


typedef struct {
    void  *tq;
    int    late_ms;         /* -1: never answer */
} mb_silent_t;

typedef struct {
    void  *task;
    int    ms;
    char  *label;
} mb_late_t;


static void *
mb_late_answer(void *arg)
{
    char       *rsp;
    mb_late_t  *l = arg;

    usleep(l->ms * 1000);

    /* big enough that a leaked answer shows in RSS and in LeakSanitizer */
    rsp = malloc(MB_LATE_SIZE);
    if (rsp != NULL) {
        memset(rsp, 'L', MB_LATE_SIZE);
    }

    ngx_http_lua_ffi_respond(l->task, 0, rsp, rsp ? MB_LATE_SIZE : 0);
    mb_log("mb_silent answered %s late, after %d ms", l->label, l->ms);

    free(l->label);
    free(l);

    return NULL;
}


static void *
mb_silent_poll(void *arg)
{
    int           len;
    char         *req;
    void         *task;
    mb_late_t    *l;
    mb_silent_t  *s = arg;

    while ((task = ngx_http_lua_ffi_task_poll(s->tq)) != NULL) {
        req = mb_req(task, &len);
        mb_log("mb_silent took %s", req ? req : "?");

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
