/*
 * A runtime that answers handles it does not hold: the handles of calls it
 * answered long ago, twice, and guesses of tasks still in its queue. Every
 * answer to a call of its own says which call it was.
 *
 *   echo:BODY     answers BODY
 *   twice:BODY    answers BODY, then again "second:BODY"
 *   stale:BODY    first answers "stale" to the handle of a call it answered
 *                 1 to 1023 calls ago (the age cycles; not for the first
 *                 call), then BODY
 *   late:MS:BODY  answers BODY after MS ms, then again "second:BODY"
 *   park:BODY     answers BODY once "release" came (blocks the poller),
 *                 then again "second:BODY"
 *   release       lets a parked task go; answers "released"
 *   record        keeps its own handle; answers "recorded"
 *   forge         answers "forged" to the recorded handle and to guesses of
 *                 the next use of its task (the next handle in any of the
 *                 ways a host could number them), after asking get_req for
 *                 them; answers "forged", or "forged, got a request" when
 *                 get_req gave anything for one of them
 */

#include "mb.h"

#include <stdint.h>


#define MB_RING  1024

static void            *mb_ring[MB_RING];
static unsigned long    mb_calls;
static void            *mb_recorded;

static pthread_mutex_t  mb_gate_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t   mb_gate_cond = PTHREAD_COND_INITIALIZER;
static int              mb_gate_open;


static void *
mb_stray_late(void *arg)
{
    mb_later_t  *l = arg;

    usleep(l->ms * 1000);

    ngx_http_lua_ffi_respond(l->task, 0, mb_cat("", l->body), 0);
    ngx_http_lua_ffi_respond(l->task, 0, mb_cat("second:", l->body), 0);
    mb_log("mb_stray answered %s twice after %d ms", l->body, l->ms);

    mb_later_free(l);

    return NULL;
}


static void
mb_stray_stale(void *task, char *body)
{
    unsigned long  age;

    age = mb_calls < MB_RING - 1 ? mb_calls : MB_RING - 1;
    age = age ? 1 + mb_calls % age : 0;

    if (age && mb_ring[(mb_calls - age) % MB_RING] != NULL) {
        ngx_http_lua_ffi_respond(mb_ring[(mb_calls - age) % MB_RING], 0,
                                 mb_dup("stale", 5), 0);
    }

    mb_ring[mb_calls % MB_RING] = task;
    mb_calls++;

    ngx_http_lua_ffi_respond(task, 0, mb_dup(body, strlen(body)), 0);
}


static void
mb_stray_forge(void *task)
{
    int        i, len, got;
    uintptr_t  h, guess[6];

    h = (uintptr_t) mb_recorded;
    got = 0;

    if (h != 0) {
        guess[0] = h;
        guess[1] = h + 1;
        guess[2] = h + ((uintptr_t) 1 << 24);
        guess[3] = h + ((uintptr_t) 1 << 32);
        guess[4] = h & ~((uintptr_t) 1 << 63);
        guess[5] = (uintptr_t) -1;

        for (i = 0; i < 6; i++) {
            len = -1;
            if (ngx_http_lua_ffi_get_req((void *) guess[i], &len) != NULL
                || len != 0)
            {
                got = 1;
            }
        }

        ngx_http_lua_ffi_respond((void *) h, 0, mb_dup("forged", 6), 0);

        /* a generation in the low bits, or a sequence in the high ones */
        ngx_http_lua_ffi_respond((void *) (h + 1), 0, mb_dup("forged", 6), 0);
        ngx_http_lua_ffi_respond((void *) (h + ((uintptr_t) 1 << 24)), 0,
                                 mb_dup("forged", 6), 0);
        ngx_http_lua_ffi_respond((void *) (h + ((uintptr_t) 1 << 32)), 0,
                                 mb_dup("forged", 6), 0);
    }

    ngx_http_lua_ffi_respond(task, 0,
                             got ? mb_dup("forged, got a request", 21)
                                 : mb_dup("forged", 6), 0);
}


static void
mb_stray_later(void *task, char *arg)
{
    mb_later_t  *l;

    l = mb_later_new(task, arg, 0);
    if (l == NULL) {
        ngx_http_lua_ffi_respond(task, 12, NULL, 0);
        return;
    }

    if (mb_spawn(mb_stray_late, l) != 0) {
        ngx_http_lua_ffi_respond(task, 12, NULL, 0);
        mb_later_free(l);
    }
}


static void
mb_stray_park(void *task, char *body)
{
    mb_log("mb_stray parked %s", body);

    pthread_mutex_lock(&mb_gate_lock);

    while (!mb_gate_open) {
        pthread_cond_wait(&mb_gate_cond, &mb_gate_lock);
    }

    mb_gate_open = 0;
    pthread_mutex_unlock(&mb_gate_lock);

    ngx_http_lua_ffi_respond(task, 0, mb_dup(body, strlen(body)), 0);
    ngx_http_lua_ffi_respond(task, 0, mb_cat("second:", body), 0);
    mb_log("mb_stray answered %s twice", body);
}


static void *
mb_stray_poll(void *tq)
{
    int    len;
    char  *req;
    void  *task;

    while ((task = ngx_http_lua_ffi_task_poll(tq)) != NULL) {
        req = mb_req(task, &len);

        if (req == NULL) {
            ngx_http_lua_ffi_respond(task, 12, NULL, 0);

        } else if (mb_starts(req, "echo:")) {
            ngx_http_lua_ffi_respond(task, 0, mb_dup(req + 5, len - 5), 0);

        } else if (mb_starts(req, "twice:")) {
            ngx_http_lua_ffi_respond(task, 0, mb_dup(req + 6, len - 6), 0);
            ngx_http_lua_ffi_respond(task, 0, mb_cat("second:", req + 6), 0);

        } else if (mb_starts(req, "stale:")) {
            mb_stray_stale(task, req + 6);

        } else if (mb_starts(req, "late:")) {
            mb_stray_later(task, req + 5);

        } else if (mb_starts(req, "park:")) {
            mb_stray_park(task, req + 5);

        } else if (strcmp(req, "release") == 0) {
            pthread_mutex_lock(&mb_gate_lock);
            mb_gate_open = 1;
            pthread_cond_broadcast(&mb_gate_cond);
            pthread_mutex_unlock(&mb_gate_lock);
            ngx_http_lua_ffi_respond(task, 0, mb_dup("released", 8), 0);

        } else if (strcmp(req, "record") == 0) {
            mb_recorded = task;
            ngx_http_lua_ffi_respond(task, 0, mb_dup("recorded", 8), 0);

        } else if (strcmp(req, "forge") == 0) {
            mb_stray_forge(task);

        } else {
            ngx_http_lua_ffi_respond(task, 2, NULL, 0);
        }

        free(req);
    }

    mb_log("mb_stray took its NULL task");

    return NULL;
}


MB_ONE_POLLER_INIT(mb_stray_poll)


MB_JOIN_AT_UNLOAD()
