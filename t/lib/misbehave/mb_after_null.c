/*
 * A runtime that keeps tasks ("keep:BODY") and answers them only after it
 * took its NULL task, cfg "delay=MS" later (default 300); "echo:BODY".
 */

#include "mb.h"


typedef struct mb_kept_s  mb_kept_t;

struct mb_kept_s {
    void       *task;
    char       *body;
    mb_kept_t  *next;
};

typedef struct {
    void       *tq;
    int         delay_ms;
    mb_kept_t  *kept;       /* only the poller touches it until NULL */
} mb_after_t;


static void *
mb_after_answer(void *arg)
{
    int          n;
    mb_kept_t   *k, *next;
    mb_after_t  *a = arg;

    usleep(a->delay_ms * 1000);

    for (n = 0, k = a->kept; k != NULL; k = next, n++) {
        next = k->next;

        ngx_http_lua_ffi_respond(k->task, 0, mb_cat("after-null:", k->body),
                                 0);

        free(k->body);
        free(k);
    }

    mb_log("mb_after_null answered %d task(s) after its NULL task", n);
    free(a);

    return NULL;
}


static void *
mb_after_poll(void *arg)
{
    int          n, len;
    char        *req;
    void        *task;
    mb_kept_t   *k;
    mb_after_t  *a = arg;

    while ((task = ngx_http_lua_ffi_task_poll(a->tq)) != NULL) {
        req = mb_req(task, &len);

        if (req != NULL && mb_starts(req, "keep:")) {
            k = malloc(sizeof(mb_kept_t));
            if (k == NULL) {
                ngx_http_lua_ffi_respond(task, 12, NULL, 0);
                free(req);
                continue;
            }

            k->task = task;
            k->body = mb_dup(req + 5, len - 5);
            k->next = a->kept;
            a->kept = k;
            mb_log("mb_after_null keeps %s", k->body);

        } else if (req != NULL && mb_starts(req, "echo:")) {
            ngx_http_lua_ffi_respond(task, 0, mb_dup(req + 5, len - 5), 0);

        } else {
            ngx_http_lua_ffi_respond(task, 2, NULL, 0);
        }

        free(req);
    }

    for (n = 0, k = a->kept; k != NULL; k = k->next) {
        n++;
    }

    mb_log("mb_after_null took its NULL task holding %d task(s)", n);

    /* the host must still take these answers, and only then close us */
    if (mb_spawn(mb_after_answer, a) != 0) {
        mb_after_answer(a);
    }

    return NULL;
}


int
libffi_init(char *cfg, void *tq)
{
    mb_after_t  *a;

    a = calloc(1, sizeof(mb_after_t));
    if (a == NULL) {
        return 1;
    }

    a->tq = tq;
    a->delay_ms = (cfg && mb_starts(cfg, "delay=")) ? atoi(cfg + 6) : 300;

    if (mb_spawn(mb_after_poll, a) != 0) {
        free(a);
        return 2;
    }

    return 0;
}


__attribute__((destructor)) static void
mb_after_fini(void)
{
    mb_join_all();
}
