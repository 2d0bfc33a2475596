/*
 * libffi_hold: holds requests until told to let them go, then checks that
 * every byte of each (and the NUL after it) is still what it was when the
 * task was taken: for t/026-request-in-place.t and t/027.
 */

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


void *ngx_http_lua_ffi_task_poll(void *tq);
char *ngx_http_lua_ffi_get_req(void *tsk, int *len);
void ngx_http_lua_ffi_respond(void *tsk, int rc, char *rsp, int rsp_len);
int libffi_init(char *cfg, void *tq);


#define MAX_HELD  64

typedef struct {
    void         *task;
    const char   *req;
    int           len;
    uint64_t      hash;
} held_t;

typedef struct {
    void         *tq;
    held_t        held[MAX_HELD];
    int           nheld;
} hold_t;


/* where "read" puts what it reads, so that the reads are done */
static volatile uint64_t  sink;


/* FNV-1a over the request and the NUL after it */
static uint64_t
hash(const char *p, int len)
{
    int       i;
    uint64_t  h = 14695981039346656037ULL;

    for (i = 0; i <= len; i++) {
        h = (h ^ (unsigned char) p[i]) * 1099511628211ULL;
    }

    return h;
}


static void
answer(void *task, int rc, const char *fmt, long a, long b)
{
    char  *rsp;

    rsp = malloc(64);
    if (rsp != NULL) {
        snprintf(rsp, 64, fmt, a, b);
    }

    ngx_http_lua_ffi_respond(task, rsp ? rc : 1, rsp, 0);
}


/* checks every held request, then lets each go with a late answer */
static void
release(hold_t *h, void *task)
{
    int  i, intact;

    intact = 0;
    for (i = 0; i < h->nheld; i++) {
        if (hash(h->held[i].req, h->held[i].len) == h->held[i].hash
            && h->held[i].req[h->held[i].len] == '\0')
        {
            intact++;
        }
    }

    for (i = 0; i < h->nheld; i++) {
        answer(h->held[i].task, 0, "late", 0, 0);
    }

    if (task) {
        answer(task, 0, "%ld intact %ld changed", intact, h->nheld - intact);
    }

    h->nheld = 0;
}


/*
 * "hold...": held, unanswered, until "release", which answers "I intact
 * C changed"; "count": how many are held; "addr...": the address of the
 * request buffer, in decimal; "read...": read over and over, for good,
 * never answered (a runtime stuck in its request while the worker exits)
 */
static void *
serve(void *arg)
{
    int      len;
    char    *req;
    void    *task;
    hold_t  *h = arg;

    while ((task = ngx_http_lua_ffi_task_poll(h->tq)) != NULL) {
        req = ngx_http_lua_ffi_get_req(task, &len);

        if (req && len >= 4 && memcmp(req, "hold", 4) == 0
            && h->nheld < MAX_HELD)
        {
            h->held[h->nheld].task = task;
            h->held[h->nheld].req = req;
            h->held[h->nheld].len = len;
            h->held[h->nheld].hash = hash(req, len);
            h->nheld++;

        } else if (req && len == 7 && memcmp(req, "release", 7) == 0) {
            release(h, task);

        } else if (req && len == 5 && memcmp(req, "count", 5) == 0) {
            answer(task, 0, "%ld", h->nheld, 0);

        } else if (req && len >= 4 && memcmp(req, "read", 4) == 0) {
            for ( ;; ) {
                sink = hash(req, len);
            }

        } else if (req && len >= 4 && memcmp(req, "addr", 4) == 0) {
            answer(task, 0, "%ld", (long) (uintptr_t) req, 0);

        } else {
            ngx_http_lua_ffi_respond(task, 1, NULL, 0);
        }
    }

    release(h, NULL);
    free(h);

    return NULL;
}


int
libffi_init(char *cfg, void *tq)
{
    hold_t          *h;
    pthread_t        t;
    pthread_attr_t   attr;

    (void) cfg;

    h = calloc(1, sizeof(hold_t));
    if (h == NULL) {
        return 1;
    }

    h->tq = tq;

    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);

    if (pthread_create(&t, &attr, serve, h) != 0) {
        pthread_attr_destroy(&attr);
        free(h);
        return 1;
    }

    pthread_attr_destroy(&attr);

    return 0;
}
