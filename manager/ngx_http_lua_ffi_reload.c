/*
 * The reload protocol, whole: one coordinator drives prepare, then commit
 * or abort, through the shared zone's command slot; every worker carries
 * commands out and converges on the library's current version.
 */

#include "ngx_http_lua_ffi_shm.h"
#include "ngx_http_lua_ffi_metrics.h"
#include "ngx_http_lua_ffi_canary.h"


#define NGX_HTTP_LUA_FFI_RETRY_MSEC    10
#define NGX_HTTP_LUA_FFI_ACK_MSEC      100
#define NGX_HTTP_LUA_FFI_FOLLOW_MSEC   100


/*
 * The coordinator (the worker that took the request), one operation:
 *
 *   state     event      next     action
 *   WAIT      turn       CHECK    owner := this worker
 *   WAIT      deadline   DONE     503 (another reload did not finish)
 *   CHECK     refused    DONE     404, 304, 409 or 422; owner := 0
 *   CHECK     checked    PREPARE  publish PREPARE(v)
 *   CHECK     decided    COMMIT   promote: current := canary; retire:
 *                                 canary := none; publish COMMIT(v)
 *   PREPARE   all_ok     COMMIT   current := v (a canary: canary := v);
 *                                 publish COMMIT(v)
 *   PREPARE   failed     ABORT    publish ABORT
 *   PREPARE   deadline   ABORT    publish ABORT (names the silent workers)
 *   COMMIT    all_ok     DONE     200; old shadow removed unless the
 *                                 history keeps it; owner := 0
 *   COMMIT    failed     DONE     202 (names the worker, its error)
 *   COMMIT    deadline   DONE     202 (names the workers that did not
 *                                 confirm: they converge when they run)
 *   ABORT     any        DONE     422; new shadow removed (never a kept
 *                                 one); owner := 0
 *   any       exit       DONE     503; in PREPARE, publish ABORT first
 *
 * "all_ok": every live worker acknowledged the command (a worker is live
 * while its slot's pid exists; a slot's new occupant acknowledged every
 * command issued before it started). The deadline is ffi_reload_timeout
 * per phase. A coordinator killed in any state leaves an owner that is not
 * alive: the next coordinator takes the turn, and every worker drops what
 * it prepared for a reload whose coordinator is gone (below).
 *
 * A rollback is the same operation: its CHECK takes a version of the
 * history (ngx_http_lua_ffi_history.c) instead of reading the file, and
 * COMMIT records the new version there in the same locked step.
 *
 * A file drop: CHECK records it (drop_ident, drop_pid := this worker); it
 * counts as judged once its reload reaches DONE by any row but "exit"
 * (drop_pid := 0 with owner := 0), or at once if CHECK finds a transient
 * failure (the previous record is put back: tried again). A coordinator
 * killed or exiting before DONE leaves drop_pid set: the drop stays open,
 * watchers keep looking, and the next live watcher to act judges it again.
 *
 * Every worker, per library, on every command (and every 100 ms while a
 * reload is under way or something is prepared here):
 *
 *   state              condition                       next
 *   SERVING(v)         PREPARE(v') of this library     PREPARED(v, v')
 *   PREPARED(v, v')    current = v'                    SERVING(v')
 *   PREPARED(v, v')    current != v', and no live      SERVING(v)
 *                      coordinator is preparing v'
 *   SERVING(v)         current = v' != v               SERVING(v')
 *   SERVING(v)         canary = c (committed)          CANARY(v, c)
 *   CANARY(v, c)       canary = none, current = c      SERVING(c)
 *   CANARY(v, c)       canary = none, current = v      SERVING(v)
 *
 * In CANARY (canary.c) every handle has a runtime on each version and
 * the call path routes between them; a promotion hands the canary's
 * runtimes to the commit as if prepared, a retirement drains them.
 *
 * The fourth line is what makes a 200 true for runtimes that did not exist
 * at prepare (ngx.load_ffi during a reload, a worker started by nginx -s
 * reload) and for a worker that missed the commit (stopped, busy): it
 * converges on the current version whatever the command slot says now.
 * A runtime created while PREPARED gets its prepared twin at once.
 */

typedef enum {
    NGX_HTTP_LUA_FFI_R_WAIT = 0,
    NGX_HTTP_LUA_FFI_R_CHECK,
    NGX_HTTP_LUA_FFI_R_PREPARE,
    NGX_HTTP_LUA_FFI_R_COMMIT,
    NGX_HTTP_LUA_FFI_R_ABORT,
    NGX_HTTP_LUA_FFI_R_DONE
} ngx_http_lua_ffi_rstate_e;


typedef enum {
    NGX_HTTP_LUA_FFI_E_NONE = 0,       /* nothing yet: wait */
    NGX_HTTP_LUA_FFI_E_TURN,
    NGX_HTTP_LUA_FFI_E_REFUSED,
    NGX_HTTP_LUA_FFI_E_CHECKED,
    NGX_HTTP_LUA_FFI_E_DECIDED,        /* promote, retire: no prepare */
    NGX_HTTP_LUA_FFI_E_ALL_OK,
    NGX_HTTP_LUA_FFI_E_FAILED,
    NGX_HTTP_LUA_FFI_E_DEADLINE,
    NGX_HTTP_LUA_FFI_E_EXIT
} ngx_http_lua_ffi_revent_e;


typedef struct ngx_http_lua_ffi_op_s  ngx_http_lua_ffi_op_t;

typedef void (*ngx_http_lua_ffi_action_pt)(ngx_http_lua_ffi_op_t *op);


typedef struct {
    ngx_http_lua_ffi_rstate_e     state;
    ngx_http_lua_ffi_revent_e     event;     /* NONE: any event */
    ngx_http_lua_ffi_rstate_e     next;
    ngx_http_lua_ffi_action_pt    action;
} ngx_http_lua_ffi_transition_t;


/* A reload this worker coordinates. */
struct ngx_http_lua_ffi_op_s {
    ngx_queue_t                       link;
    ngx_http_lua_ffi_rstate_e         state;
    ngx_http_lua_ffi_reload_done_pt   done;
    void                             *data;
    ngx_event_t                       timer;
    ngx_msec_t                        deadline;
    ngx_msec_t                        wait;      /* before the next look */
    ngx_uint_t                        lib;
    ngx_uint_t                        seq;       /* of our last command */
    ngx_http_lua_ffi_version_t        v;
    ngx_uint_t                        changed;
    ngx_uint_t                        old_version;
    ngx_http_lua_ffi_version_t        old;
    ngx_int_t                         status;    /* of a refusal */
    ngx_uint_t                        known;     /* lib is set */
    ngx_uint_t                        trial_failed;
    u_char                            err[NGX_HTTP_LUA_FFI_ERRLEN];
    u_char                            silent[NGX_HTTP_LUA_FFI_ERRLEN];
    u_char                            silent_json[NGX_HTTP_LUA_FFI_ERRLEN];
    ngx_str_t                         name;
    u_char                            name_buf[NGX_HTTP_LUA_FFI_NAMELEN];
    ngx_uint_t                        flags;
    ngx_uint_t                        target;    /* rollback: 0 previous */
    ngx_uint_t                        rolled_back_to;
    ngx_http_lua_ffi_canary_req_t     cr;        /* what it does */
    ngx_uint_t                        canary_refused;  /* 409 of canary.c */
};


static ngx_http_lua_ffi_revent_e ngx_http_lua_ffi_op_observe(
    ngx_http_lua_ffi_op_t *op);
static void ngx_http_lua_ffi_op_run(ngx_http_lua_ffi_op_t *op);
static ngx_int_t ngx_http_lua_ffi_op_step(ngx_http_lua_ffi_op_t *op,
    ngx_http_lua_ffi_revent_e ev);
static void ngx_http_lua_ffi_op_timer(ngx_event_t *ev);
static void ngx_http_lua_ffi_op_finish(ngx_http_lua_ffi_op_t *op,
    ngx_int_t status, u_char *body, size_t len, u_char *msg);
static void ngx_http_lua_ffi_op_error(ngx_http_lua_ffi_op_t *op,
    ngx_int_t status, u_char *msg);
static ngx_http_lua_ffi_revent_e ngx_http_lua_ffi_op_turn(
    ngx_http_lua_ffi_op_t *op);
static ngx_http_lua_ffi_revent_e ngx_http_lua_ffi_op_check(
    ngx_http_lua_ffi_op_t *op);
static ngx_http_lua_ffi_revent_e ngx_http_lua_ffi_op_check_rollback(
    ngx_http_lua_ffi_op_t *op);
static ngx_int_t ngx_http_lua_ffi_op_start(ngx_str_t *name,
    ngx_uint_t flags, ngx_uint_t target, ngx_http_lua_ffi_canary_req_t *cr,
    ngx_http_lua_ffi_reload_done_pt done, void *data);
static ngx_uint_t ngx_http_lua_ffi_op_how(ngx_http_lua_ffi_op_t *op);
static void ngx_http_lua_ffi_op_refusal(ngx_http_lua_ffi_op_t *op,
    ngx_int_t status);
static ngx_http_lua_ffi_revent_e ngx_http_lua_ffi_op_acks(
    ngx_http_lua_ffi_op_t *op);
static ngx_int_t ngx_http_lua_ffi_op_trial(ngx_http_lua_ffi_op_t *op,
    ngx_str_t *path);
static void ngx_http_lua_ffi_publish(ngx_http_lua_ffi_cmd_e type,
    ngx_http_lua_ffi_op_t *op);

static void ngx_http_lua_ffi_act_none(ngx_http_lua_ffi_op_t *op);
static void ngx_http_lua_ffi_act_busy(ngx_http_lua_ffi_op_t *op);
static void ngx_http_lua_ffi_act_refused(ngx_http_lua_ffi_op_t *op);
static void ngx_http_lua_ffi_act_prepare(ngx_http_lua_ffi_op_t *op);
static void ngx_http_lua_ffi_act_commit(ngx_http_lua_ffi_op_t *op);
static void ngx_http_lua_ffi_act_decide(ngx_http_lua_ffi_op_t *op);
static void ngx_http_lua_ffi_act_abort(ngx_http_lua_ffi_op_t *op);
static void ngx_http_lua_ffi_act_abort_silent(ngx_http_lua_ffi_op_t *op);
static void ngx_http_lua_ffi_act_committed(ngx_http_lua_ffi_op_t *op);
static void ngx_http_lua_ffi_act_unconfirmed(ngx_http_lua_ffi_op_t *op);
static void ngx_http_lua_ffi_act_aborted(ngx_http_lua_ffi_op_t *op);
static void ngx_http_lua_ffi_act_exit(ngx_http_lua_ffi_op_t *op);

static void ngx_http_lua_ffi_reload_notified(void);
static void ngx_http_lua_ffi_handle_command(void);
static void ngx_http_lua_ffi_reconcile_all(void);
static ngx_int_t ngx_http_lua_ffi_reconcile(ngx_http_lua_ffi_library_t *lib,
    ngx_int_t i, u_char *err, size_t errlen);
static void ngx_http_lua_ffi_follow(void);
static void ngx_http_lua_ffi_follow_handler(ngx_event_t *ev);


/* The coordinator's table: the first row that matches is taken. */

static ngx_http_lua_ffi_transition_t  ngx_http_lua_ffi_transitions[] = {

    { NGX_HTTP_LUA_FFI_R_WAIT, NGX_HTTP_LUA_FFI_E_TURN,
      NGX_HTTP_LUA_FFI_R_CHECK, ngx_http_lua_ffi_act_none },
    { NGX_HTTP_LUA_FFI_R_WAIT, NGX_HTTP_LUA_FFI_E_DEADLINE,
      NGX_HTTP_LUA_FFI_R_DONE, ngx_http_lua_ffi_act_busy },
    { NGX_HTTP_LUA_FFI_R_WAIT, NGX_HTTP_LUA_FFI_E_REFUSED,
      NGX_HTTP_LUA_FFI_R_DONE, ngx_http_lua_ffi_act_refused },

    { NGX_HTTP_LUA_FFI_R_CHECK, NGX_HTTP_LUA_FFI_E_REFUSED,
      NGX_HTTP_LUA_FFI_R_DONE, ngx_http_lua_ffi_act_refused },
    { NGX_HTTP_LUA_FFI_R_CHECK, NGX_HTTP_LUA_FFI_E_CHECKED,
      NGX_HTTP_LUA_FFI_R_PREPARE, ngx_http_lua_ffi_act_prepare },
    { NGX_HTTP_LUA_FFI_R_CHECK, NGX_HTTP_LUA_FFI_E_DECIDED,
      NGX_HTTP_LUA_FFI_R_COMMIT, ngx_http_lua_ffi_act_decide },

    { NGX_HTTP_LUA_FFI_R_PREPARE, NGX_HTTP_LUA_FFI_E_ALL_OK,
      NGX_HTTP_LUA_FFI_R_COMMIT, ngx_http_lua_ffi_act_commit },
    { NGX_HTTP_LUA_FFI_R_PREPARE, NGX_HTTP_LUA_FFI_E_FAILED,
      NGX_HTTP_LUA_FFI_R_ABORT, ngx_http_lua_ffi_act_abort },
    { NGX_HTTP_LUA_FFI_R_PREPARE, NGX_HTTP_LUA_FFI_E_DEADLINE,
      NGX_HTTP_LUA_FFI_R_ABORT, ngx_http_lua_ffi_act_abort_silent },

    { NGX_HTTP_LUA_FFI_R_COMMIT, NGX_HTTP_LUA_FFI_E_ALL_OK,
      NGX_HTTP_LUA_FFI_R_DONE, ngx_http_lua_ffi_act_committed },
    { NGX_HTTP_LUA_FFI_R_COMMIT, NGX_HTTP_LUA_FFI_E_FAILED,
      NGX_HTTP_LUA_FFI_R_DONE, ngx_http_lua_ffi_act_unconfirmed },
    { NGX_HTTP_LUA_FFI_R_COMMIT, NGX_HTTP_LUA_FFI_E_DEADLINE,
      NGX_HTTP_LUA_FFI_R_DONE, ngx_http_lua_ffi_act_unconfirmed },

    { NGX_HTTP_LUA_FFI_R_ABORT, NGX_HTTP_LUA_FFI_E_ALL_OK,
      NGX_HTTP_LUA_FFI_R_DONE, ngx_http_lua_ffi_act_aborted },
    { NGX_HTTP_LUA_FFI_R_ABORT, NGX_HTTP_LUA_FFI_E_FAILED,
      NGX_HTTP_LUA_FFI_R_DONE, ngx_http_lua_ffi_act_aborted },
    { NGX_HTTP_LUA_FFI_R_ABORT, NGX_HTTP_LUA_FFI_E_DEADLINE,
      NGX_HTTP_LUA_FFI_R_DONE, ngx_http_lua_ffi_act_aborted },

    { NGX_HTTP_LUA_FFI_R_WAIT, NGX_HTTP_LUA_FFI_E_EXIT,
      NGX_HTTP_LUA_FFI_R_DONE, ngx_http_lua_ffi_act_exit },
    { NGX_HTTP_LUA_FFI_R_CHECK, NGX_HTTP_LUA_FFI_E_EXIT,
      NGX_HTTP_LUA_FFI_R_DONE, ngx_http_lua_ffi_act_exit },
    { NGX_HTTP_LUA_FFI_R_PREPARE, NGX_HTTP_LUA_FFI_E_EXIT,
      NGX_HTTP_LUA_FFI_R_DONE, ngx_http_lua_ffi_act_exit },
    { NGX_HTTP_LUA_FFI_R_COMMIT, NGX_HTTP_LUA_FFI_E_EXIT,
      NGX_HTTP_LUA_FFI_R_DONE, ngx_http_lua_ffi_act_exit },
    { NGX_HTTP_LUA_FFI_R_ABORT, NGX_HTTP_LUA_FFI_E_EXIT,
      NGX_HTTP_LUA_FFI_R_DONE, ngx_http_lua_ffi_act_exit },
};


static ngx_queue_t       ngx_http_lua_ffi_ops;
/* in the order of ngx_http_lua_ffi_op_kind_e, for the log */
static char             *ngx_http_lua_ffi_op_names[] = {
    "reload", "canary reload", "promotion of the canary",
    "rollback of the canary"
};
static ngx_event_t       ngx_http_lua_ffi_follow_ev;
/* what a debug log's "event timer add: FD" reads through ev->data */
static ngx_connection_t  ngx_http_lua_ffi_follow_conn;
static ngx_uint_t        ngx_http_lua_ffi_seen_seq;


void
ngx_http_lua_ffi_reload_init(void)
{
    ngx_queue_init(&ngx_http_lua_ffi_ops);

    /* nginx's debug log reads a timer's data as a connection */
    ngx_http_lua_ffi_follow_conn.fd = (ngx_socket_t) -1;
    ngx_http_lua_ffi_follow_ev.data = &ngx_http_lua_ffi_follow_conn;
    ngx_http_lua_ffi_follow_ev.handler = ngx_http_lua_ffi_follow_handler;
    ngx_http_lua_ffi_follow_ev.log = ngx_cycle->log;
    ngx_http_lua_ffi_follow_ev.cancelable = 1;

    ngx_http_lua_ffi_shm_worker_init();
    ngx_http_lua_ffi_seen_seq = ngx_http_lua_ffi_shm->seq;

    if (ngx_http_lua_ffi_shm_alive(ngx_http_lua_ffi_shm->owner)) {
        /* started during a reload: its commit may come from afar */
        ngx_http_lua_ffi_follow();
    }

    /* what the bridge tells us, it tells through these */
    ngx_http_lua_ffi_hooks.drained = ngx_http_lua_ffi_registry_drained;
    ngx_http_lua_ffi_hooks.answered = ngx_http_lua_ffi_registry_answered;
    ngx_http_lua_ffi_hooks.notified = ngx_http_lua_ffi_reload_notified;
}


void
ngx_http_lua_ffi_reload_exit(void)
{
    ngx_queue_t            *q;
    ngx_http_lua_ffi_op_t  *op;

    ngx_http_lua_ffi_hooks.notified = NULL;

    while (!ngx_queue_empty(&ngx_http_lua_ffi_ops)) {
        q = ngx_queue_head(&ngx_http_lua_ffi_ops);
        op = ngx_queue_data(q, ngx_http_lua_ffi_op_t, link);
        (void) ngx_http_lua_ffi_op_step(op, NGX_HTTP_LUA_FFI_E_EXIT);
    }

    ngx_shmtx_lock(&ngx_http_lua_ffi_shpool->mutex);

    if (ngx_http_lua_ffi_shm->owner == ngx_pid) {
        ngx_http_lua_ffi_shm->owner = 0;
    }

    ngx_shmtx_unlock(&ngx_http_lua_ffi_shpool->mutex);

    ngx_http_lua_ffi_shm_worker_exit();
}


/* ---- the coordinator ---- */


ngx_int_t
ngx_http_lua_ffi_reload_start(ngx_str_t *name, ngx_uint_t flags,
    ngx_http_lua_ffi_reload_done_pt done, void *data)
{
    return ngx_http_lua_ffi_op_start(name, flags, 0, NULL, done, data);
}


/*
 * POST /ffi/rollback: the same operation, whose CHECK takes a version kept
 * in the history instead of reading the file (version 0: the previous one).
 * A library in canary has its canary retired instead (op_check).
 */

ngx_int_t
ngx_http_lua_ffi_rollback_start(ngx_str_t *name, ngx_uint_t version,
    ngx_http_lua_ffi_reload_done_pt done, void *data)
{
    return ngx_http_lua_ffi_op_start(name, NGX_HTTP_LUA_FFI_RELOAD_ROLLBACK,
                                     version, NULL, done, data);
}


/* cr: a canary's start, promotion or retirement; NULL: a reload */

ngx_int_t
ngx_http_lua_ffi_reload_op(ngx_str_t *name, ngx_uint_t flags,
    ngx_http_lua_ffi_canary_req_t *cr, ngx_http_lua_ffi_reload_done_pt done,
    void *data)
{
    return ngx_http_lua_ffi_op_start(name, flags, 0, cr, done, data);
}


static ngx_int_t
ngx_http_lua_ffi_op_start(ngx_str_t *name, ngx_uint_t flags,
    ngx_uint_t target, ngx_http_lua_ffi_canary_req_t *cr,
    ngx_http_lua_ffi_reload_done_pt done, void *data)
{
    ngx_http_lua_ffi_op_t  *op;

    op = ngx_http_lua_ffi_shm_op_alloc(sizeof(ngx_http_lua_ffi_op_t));
    if (op == NULL) {
        return NGX_ERROR;
    }

    op->state = NGX_HTTP_LUA_FFI_R_WAIT;
    op->done = done;
    op->data = data;

    /*
     * A worker told to exit (nginx -s reload, -s quit) finishes the reload
     * it coordinates first (not cancelable): every phase is bounded by its
     * deadline.
     */
    op->deadline = ngx_http_lua_ffi_shm_op_timer(&op->timer,
                                                 ngx_http_lua_ffi_op_timer,
                                                 op, 0);
    op->flags = flags;
    op->target = target;

    if (cr) {
        op->cr = *cr;
    }

    op->name.data = op->name_buf;
    op->name.len = ngx_min(name->len, NGX_HTTP_LUA_FFI_NAMELEN - 1);
    ngx_memcpy(op->name_buf, name->data, op->name.len);

    ngx_queue_insert_tail(&ngx_http_lua_ffi_ops, &op->link);

    ngx_http_lua_ffi_op_run(op);

    return NGX_OK;
}


/* The client went away: the operation goes on, nobody hears the end. */

void
ngx_http_lua_ffi_reload_cancel(void *data)
{
    ngx_queue_t            *q;
    ngx_http_lua_ffi_op_t  *op;

    for (q = ngx_queue_head(&ngx_http_lua_ffi_ops);
         q != ngx_queue_sentinel(&ngx_http_lua_ffi_ops);
         q = ngx_queue_next(q))
    {
        op = ngx_queue_data(q, ngx_http_lua_ffi_op_t, link);

        if (op->data == data) {
            op->done = NULL;
        }
    }

    ngx_http_lua_ffi_status_cancel(data);
}


/*
 * Takes the table's transition for ev. Returns NGX_DONE when the
 * operation ended (and was freed).
 */

static ngx_int_t
ngx_http_lua_ffi_op_step(ngx_http_lua_ffi_op_t *op,
    ngx_http_lua_ffi_revent_e ev)
{
    ngx_uint_t                      i;
    ngx_http_lua_ffi_rstate_e       next;
    ngx_http_lua_ffi_transition_t  *t;

    t = NULL;

    for (i = 0; i < sizeof(ngx_http_lua_ffi_transitions)
                    / sizeof(ngx_http_lua_ffi_transition_t); i++)
    {
        if (ngx_http_lua_ffi_transitions[i].state == op->state
            && ngx_http_lua_ffi_transitions[i].event == ev)
        {
            t = &ngx_http_lua_ffi_transitions[i];
            break;
        }
    }

    if (t == NULL) {
        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                      "ffi: reload: no transition from %d on %d",
                      op->state, ev);
        ngx_http_lua_ffi_act_exit(op);
        return NGX_DONE;
    }

    /* the action sees the state it leaves */
    next = t->next;
    t->action(op);

    if (next == NGX_HTTP_LUA_FFI_R_DONE) {
        return NGX_DONE;
    }

    op->state = next;

    return NGX_OK;
}


/* Looks and steps until the operation must wait, or ends. */

static void
ngx_http_lua_ffi_op_run(ngx_http_lua_ffi_op_t *op)
{
    ngx_http_lua_ffi_revent_e  ev;

    for ( ;; ) {
        op->wait = NGX_HTTP_LUA_FFI_ACK_MSEC;
        ev = ngx_http_lua_ffi_op_observe(op);

        if (ev == NGX_HTTP_LUA_FFI_E_NONE) {
            if (op->timer.timer_set) {
                ngx_del_timer(&op->timer);
            }

            /* answers come through the eventfd; the timer is a backstop */
            ngx_add_timer(&op->timer, op->wait);
            return;
        }

        if (ngx_http_lua_ffi_op_step(op, ev) == NGX_DONE) {
            return;
        }
    }
}


static ngx_http_lua_ffi_revent_e
ngx_http_lua_ffi_op_observe(ngx_http_lua_ffi_op_t *op)
{
    switch (op->state) {

    case NGX_HTTP_LUA_FFI_R_WAIT:
        return ngx_http_lua_ffi_op_turn(op);

    case NGX_HTTP_LUA_FFI_R_CHECK:
        return ngx_http_lua_ffi_op_check(op);

    default:
        return ngx_http_lua_ffi_op_acks(op);
    }
}


static void
ngx_http_lua_ffi_op_timer(ngx_event_t *ev)
{
    ngx_http_lua_ffi_op_run(ev->data);
}


static void
ngx_http_lua_ffi_op_finish(ngx_http_lua_ffi_op_t *op, ngx_int_t status,
    u_char *body, size_t len, u_char *msg)
{
    if (op->timer.timer_set) {
        ngx_del_timer(&op->timer);
    }

    ngx_queue_remove(&op->link);

    if (op->done) {
        op->done(op->data, status, body, len, msg);
    }

    ngx_free(op);
}


static void
ngx_http_lua_ffi_op_error(ngx_http_lua_ffi_op_t *op, ngx_int_t status,
    u_char *msg)
{
    u_char   buf[NGX_HTTP_LUA_FFI_ERRLEN * 2 + 32], *p;

    p = ngx_cpymem(buf, "{\"error\":", sizeof("{\"error\":") - 1);
    p = ngx_http_lua_ffi_json_str(p, buf + sizeof(buf) - 2, msg,
                                  ngx_strlen(msg));
    *p++ = '}';

    ngx_http_lua_ffi_op_finish(op, status, buf, p - buf, msg);
}


/*
 * WAIT: one reload at a time in the whole server. The turn goes to the
 * first operation of this worker once no live coordinator holds it; a
 * coordinator that died (SIGKILL) holds nothing.
 */

static ngx_http_lua_ffi_revent_e
ngx_http_lua_ffi_op_turn(ngx_http_lua_ffi_op_t *op)
{
    ngx_int_t                i;
    ngx_pid_t                owner;
    ngx_http_lua_ffi_shm_t  *sh = ngx_http_lua_ffi_shm;

    ngx_shmtx_lock(&ngx_http_lua_ffi_shpool->mutex);

    i = ngx_http_lua_ffi_shm_find_name(&op->name);

    if (i == NGX_ERROR) {
        ngx_shmtx_unlock(&ngx_http_lua_ffi_shpool->mutex);
        op->status = NGX_HTTP_NOT_FOUND;
        ngx_cpystrn(op->err, (u_char *) "unknown library",
                    NGX_HTTP_LUA_FFI_ERRLEN);
        return NGX_HTTP_LUA_FFI_E_REFUSED;
    }

    owner = sh->owner;
    op->lib = i;
    op->known = 1;

    if ((owner && owner != ngx_pid && ngx_http_lua_ffi_shm_alive(owner))
        || (owner == ngx_pid
            && op != ngx_queue_data(ngx_queue_head(&ngx_http_lua_ffi_ops),
                                    ngx_http_lua_ffi_op_t, link)))
    {
        ngx_shmtx_unlock(&ngx_http_lua_ffi_shpool->mutex);

        if ((ngx_msec_int_t) (op->deadline - ngx_current_msec) <= 0) {
            return NGX_HTTP_LUA_FFI_E_DEADLINE;
        }

        op->wait = NGX_HTTP_LUA_FFI_RETRY_MSEC;
        return NGX_HTTP_LUA_FFI_E_NONE;
    }

    sh->owner = ngx_pid;
    op->lib = i;

    ngx_shmtx_unlock(&ngx_http_lua_ffi_shpool->mutex);

    return NGX_HTTP_LUA_FFI_E_TURN;
}


/*
 * CHECK: the file is read once, checked and copied; a changed file is
 * tried in a process of its own. NGX_HTTP_LUA_FFI_E_REFUSED with
 * op->status: 304 (a drop already judged, or the same bytes), 409
 * (cannot be unloaded), 422 (not loadable), 503 (a transient failure:
 * the drop is not judged, the watcher tries again).
 */

static ngx_http_lua_ffi_revent_e
ngx_http_lua_ffi_op_check(ngx_http_lua_ffi_op_t *op)
{
    ngx_int_t                    rc;
    ngx_str_t                    path;
    ngx_http_lua_ffi_shm_t      *sh = ngx_http_lua_ffi_shm;
    ngx_http_lua_ffi_shm_lib_t  *sl;
    ngx_http_lua_ffi_version_t   cur;
    u_char                       path_buf[NGX_HTTP_LUA_FFI_PATHLEN];
    ngx_pid_t                    old_pid;
    u_char                       ident[96], old_ident[96];
    ngx_uint_t                   top;

    if (op->flags & NGX_HTTP_LUA_FFI_RELOAD_ROLLBACK) {
        return ngx_http_lua_ffi_op_check_rollback(op);
    }

    ngx_shmtx_lock(&ngx_http_lua_ffi_shpool->mutex);

    sl = &sh->libs[op->lib];

    if (op->cr.kind == NGX_HTTP_LUA_FFI_OP_PROMOTE
        || op->cr.kind == NGX_HTTP_LUA_FFI_OP_RETIRE)
    {
        /* no file is read: the canary's version and the current one */
        rc = ngx_http_lua_ffi_canary_check_locked(sl, op->cr.kind, op->err,
                                                  NGX_HTTP_LUA_FFI_ERRLEN);
        op->v = sl->canary;
        op->old = sl->current;
        op->old_version = sl->current.version;
        op->changed = (sl->canary.hash != sl->current.hash);
        ngx_shmtx_unlock(&ngx_http_lua_ffi_shpool->mutex);

        if (rc != NGX_OK) {
            op->status = NGX_HTTP_CONFLICT;
            op->canary_refused = 1;
            return NGX_HTTP_LUA_FFI_E_REFUSED;
        }

        return NGX_HTTP_LUA_FFI_E_DECIDED;
    }

    ngx_http_lua_ffi_shm_file_ident(sl->path, ident, sizeof(ident));
    ngx_memcpy(old_ident, sl->drop_ident, sizeof(old_ident));
    old_pid = sl->drop_pid;

    if ((op->flags & NGX_HTTP_LUA_FFI_RELOAD_IF_CHANGED)
        && !ngx_http_lua_ffi_shm_drop_open(sl, ident))
    {
        /*
         * Every watcher sees a drop: it was judged already, by a reload
         * that ended. One whose coordinator died or exited before it
         * ended left drop_pid behind: judged again here.
         */
        ngx_shmtx_unlock(&ngx_http_lua_ffi_shpool->mutex);
        op->status = NGX_HTTP_NOT_MODIFIED;
        op->err[0] = '\0';
        return NGX_HTTP_LUA_FFI_E_REFUSED;
    }

    ngx_memcpy(sl->drop_ident, ident, sizeof(ident));
    sl->drop_pid = ngx_pid;

    /* a drop meanwhile counts as judged: refused, logged, not retried */
    if (ngx_http_lua_ffi_canary_check_locked(sl, op->cr.kind, op->err,
                                             NGX_HTTP_LUA_FFI_ERRLEN)
        != NGX_OK)
    {
        ngx_shmtx_unlock(&ngx_http_lua_ffi_shpool->mutex);
        op->status = NGX_HTTP_CONFLICT;
        op->canary_refused = 1;
        return NGX_HTTP_LUA_FFI_E_REFUSED;
    }

    cur = sl->current;
    top = ngx_max(sl->top_version, sl->current.version);
    path.len = ngx_strlen(sl->path);
    path.data = ngx_cpymem(path_buf, sl->path, path.len + 1) - path.len - 1;

    ngx_shmtx_unlock(&ngx_http_lua_ffi_shpool->mutex);

    op->old_version = cur.version;
    op->old = cur;

    rc = ngx_http_lua_ffi_shadow_create(&path, &op->v,
                                        op->flags
                                        & NGX_HTTP_LUA_FFI_RELOAD_STRICT,
                                        op->err, NGX_HTTP_LUA_FFI_ERRLEN);

    if (rc == NGX_AGAIN || rc == NGX_ERROR) {
        /*
         * A file still being written (its close brings us back), or one
         * that could not be read or copied now (ENOSPC, EMFILE, EIO): not
         * judged, so the same file is tried again.
         */
        ngx_shmtx_lock(&ngx_http_lua_ffi_shpool->mutex);
        ngx_memcpy(sh->libs[op->lib].drop_ident, old_ident,
                   sizeof(old_ident));
        sh->libs[op->lib].drop_pid = old_pid;
        ngx_shmtx_unlock(&ngx_http_lua_ffi_shpool->mutex);

        if (rc == NGX_AGAIN && (op->flags & NGX_HTTP_LUA_FFI_RELOAD_IF_CHANGED))
        {
            op->status = NGX_HTTP_NOT_MODIFIED;
            op->err[0] = '\0';
            return NGX_HTTP_LUA_FFI_E_REFUSED;
        }

        op->status = (rc == NGX_ERROR) ? NGX_HTTP_SERVICE_UNAVAILABLE
                                       : NGX_HTTP_UNPROCESSABLE_ENTITY;
        return NGX_HTTP_LUA_FFI_E_REFUSED;
    }

    if (rc != NGX_OK) {
        op->status = NGX_HTTP_UNPROCESSABLE_ENTITY;
        return NGX_HTTP_LUA_FFI_E_REFUSED;
    }

    op->changed = (op->v.hash != cur.hash);

    if (!op->changed) {
        ngx_http_lua_ffi_shadow_remove(&op->v);

        if (op->flags & NGX_HTTP_LUA_FFI_RELOAD_IF_CHANGED) {
            /* the same bytes serve already */
            op->status = NGX_HTTP_NOT_MODIFIED;
            op->err[0] = '\0';
            return NGX_HTTP_LUA_FFI_E_REFUSED;
        }

        op->v = cur;

    } else if (cur.pin_reason != NGX_HTTP_LUA_FFI_PIN_NONE
               || op->v.pin_reason != NGX_HTTP_LUA_FFI_PIN_NONE)
    {
        ngx_snprintf(op->err, NGX_HTTP_LUA_FFI_ERRLEN,
                     "\"%V\" changed, but it cannot be unloaded (it needs "
                     "the %s runtime): restart nginx to load the new file, "
                     "or reload with the file unchanged to restart its "
                     "runtimes%Z", &path,
                     ngx_http_lua_ffi_pin_reason_name(
                         cur.pin_reason ? cur.pin_reason
                                        : op->v.pin_reason));
        ngx_http_lua_ffi_shadow_remove(&op->v);
        op->status = NGX_HTTP_CONFLICT;
        return NGX_HTTP_LUA_FFI_E_REFUSED;
    }

    /* a retired canary's number is not given again */
    op->v.version = top + 1;

    if (op->changed) {
        rc = ngx_http_lua_ffi_op_trial(op, &path);

        if (rc != NGX_OK) {
            ngx_http_lua_ffi_shadow_remove(&op->v);
            op->status = NGX_HTTP_UNPROCESSABLE_ENTITY;
            op->trial_failed = 1;
            return NGX_HTTP_LUA_FFI_E_REFUSED;
        }
    }

    return NGX_HTTP_LUA_FFI_E_CHECKED;
}


/*
 * CHECK of a rollback: the version comes from the history, from its kept
 * copy; the file on disk is not read (it may be the broken one). The rest
 * is a reload's: the same image restarts its runtimes; another image gets
 * a copy of its own (checked against the version's SHA-256 again, as it
 * is wherever it is mapped) and is tried first; one that cannot be
 * unloaded is 409.
 */

static ngx_http_lua_ffi_revent_e
ngx_http_lua_ffi_op_check_rollback(ngx_http_lua_ffi_op_t *op)
{
    ngx_int_t                    rc;
    ngx_str_t                    path;
    ngx_http_lua_ffi_shm_lib_t  *sl;
    ngx_uint_t                   top;
    ngx_http_lua_ffi_version_t   cur, kept;
    u_char                       path_buf[NGX_HTTP_LUA_FFI_PATHLEN];

    ngx_shmtx_lock(&ngx_http_lua_ffi_shpool->mutex);

    sl = &ngx_http_lua_ffi_shm->libs[op->lib];

    if (sl->canary.version) {
        ngx_shmtx_unlock(&ngx_http_lua_ffi_shpool->mutex);

        if (op->target == 0) {
            /* during a canary, a rollback retires the canary */
            op->flags &= ~NGX_HTTP_LUA_FFI_RELOAD_ROLLBACK;
            op->cr.kind = NGX_HTTP_LUA_FFI_OP_RETIRE;
            return ngx_http_lua_ffi_op_check(op);
        }

        ngx_snprintf(op->err, NGX_HTTP_LUA_FFI_ERRLEN, "a canary of "
                     "\"%V\" runs: POST rollback without a version retires "
                     "it, promote ends it; then roll back to version %ui%Z",
                     &op->name, op->target);
        op->status = NGX_HTTP_CONFLICT;
        op->canary_refused = 1;
        return NGX_HTTP_LUA_FFI_E_REFUSED;
    }

    cur = sl->current;
    top = ngx_max(sl->top_version, sl->current.version);
    path.len = ngx_strlen(sl->path);
    path.data = ngx_cpymem(path_buf, sl->path, path.len + 1) - path.len - 1;

    rc = ngx_http_lua_ffi_history_pick_locked(sl, op->target, &op->v,
                                              op->err,
                                              NGX_HTTP_LUA_FFI_ERRLEN);

    ngx_shmtx_unlock(&ngx_http_lua_ffi_shpool->mutex);

    op->old_version = cur.version;
    op->old = cur;

    if (rc != NGX_OK) {
        op->status = rc;
        return NGX_HTTP_LUA_FFI_E_REFUSED;
    }

    op->rolled_back_to = op->v.version;
    op->changed = (op->v.hash != cur.hash);

    if (!op->changed) {
        op->v = cur;

    } else if (cur.pin_reason != NGX_HTTP_LUA_FFI_PIN_NONE
               || op->v.pin_reason != NGX_HTTP_LUA_FFI_PIN_NONE)
    {
        ngx_snprintf(op->err, NGX_HTTP_LUA_FFI_ERRLEN,
                     "version %ui of \"%V\" is another image, and it "
                     "cannot be unloaded (it needs the %s runtime): restart "
                     "nginx to load it%Z", op->rolled_back_to, &path,
                     ngx_http_lua_ffi_pin_reason_name(
                         cur.pin_reason ? cur.pin_reason
                                        : op->v.pin_reason));
        op->status = NGX_HTTP_CONFLICT;
        return NGX_HTTP_LUA_FFI_E_REFUSED;
    }

    /* a retired canary's number is not given again */
    op->v.version = top + 1;

    if (!op->changed) {
        return NGX_HTTP_LUA_FFI_E_CHECKED;
    }

    kept = op->v;

    rc = ngx_http_lua_ffi_shadow_copy(&kept, &op->v, op->err,
                                      NGX_HTTP_LUA_FFI_ERRLEN);
    if (rc != NGX_OK) {
        op->status = (rc == NGX_ERROR) ? NGX_HTTP_SERVICE_UNAVAILABLE
                                       : NGX_HTTP_UNPROCESSABLE_ENTITY;
        return NGX_HTTP_LUA_FFI_E_REFUSED;
    }

    if (ngx_http_lua_ffi_op_trial(op, &path) != NGX_OK) {
        ngx_http_lua_ffi_shadow_remove(&op->v);
        op->status = NGX_HTTP_UNPROCESSABLE_ENTITY;
        op->trial_failed = 1;
        return NGX_HTTP_LUA_FFI_E_REFUSED;
    }

    return NGX_HTTP_LUA_FFI_E_CHECKED;
}


/*
 * The new image with every cfg any worker runs it with, mapped as the
 * workers will map it: the verdict does not depend on which worker
 * coordinates.
 */

static ngx_int_t
ngx_http_lua_ffi_op_trial(ngx_http_lua_ffi_op_t *op, ngx_str_t *path)
{
    ngx_int_t    rc;
    ngx_str_t    cfgs[NGX_HTTP_LUA_FFI_SHM_CFGS];
    ngx_uint_t   n, i, global, skip;

    ngx_shmtx_lock(&ngx_http_lua_ffi_shpool->mutex);
    global = ngx_http_lua_ffi_shm->libs[op->lib].is_global;
    skip = ngx_http_lua_ffi_shm->libs[op->lib].no_trial;
    ngx_shmtx_unlock(&ngx_http_lua_ffi_shpool->mutex);

    if (!ngx_http_lua_ffi_fmcf->trial || skip) {
        return NGX_OK;
    }

    n = ngx_http_lua_ffi_shm_trial_cfgs(op->lib, cfgs,
                                        NGX_HTTP_LUA_FFI_SHM_CFGS);

    if (n == 0) {
        cfgs[n].data = NULL;
        cfgs[n].len = 0;
        n++;
    }

    rc = ngx_http_lua_ffi_trial(op->v.shadow, path, cfgs, n, global,
                                op->v.pin_reason, op->err,
                                NGX_HTTP_LUA_FFI_ERRLEN);

    for (i = 0; i < n; i++) {
        if (cfgs[i].data) {
            ngx_free(cfgs[i].data);
        }
    }

    return rc;
}


/*
 * PREPARE, COMMIT, ABORT: the live workers' answers to our command. A
 * worker that has not answered by the deadline is named in op->silent.
 */

static ngx_http_lua_ffi_revent_e
ngx_http_lua_ffi_op_acks(ngx_http_lua_ffi_op_t *op)
{
    u_char                         *p, *last, *j, *jlast;
    ngx_uint_t                      i, waiting;
    ngx_http_lua_ffi_revent_e       ev;
    ngx_http_lua_ffi_shm_worker_t  *sw;

    ev = NGX_HTTP_LUA_FFI_E_ALL_OK;
    waiting = 0;

    p = op->silent;
    last = op->silent + NGX_HTTP_LUA_FFI_ERRLEN - 1;
    j = ngx_cpymem(op->silent_json, "[", 1);
    jlast = op->silent_json + NGX_HTTP_LUA_FFI_ERRLEN - 2;

    ngx_shmtx_lock(&ngx_http_lua_ffi_shpool->mutex);

    for (i = 0; i < ngx_http_lua_ffi_fmcf->nworkers; i++) {
        sw = &ngx_http_lua_ffi_shm->workers[i];

        if (!ngx_http_lua_ffi_shm_alive(sw->pid)) {
            continue;
        }

        if (sw->acked < op->seq) {
            waiting++;
            p = ngx_slprintf(p, last, "%s%P", waiting > 1 ? ", " : "",
                             sw->pid);
            j = ngx_slprintf(j, jlast, "%s{\"slot\":%ui,\"pid\":%P}",
                             waiting > 1 ? "," : "", i, sw->pid);
            continue;
        }

        if (sw->rc != NGX_OK && ev == NGX_HTTP_LUA_FFI_E_ALL_OK) {
            ngx_snprintf(op->err, NGX_HTTP_LUA_FFI_ERRLEN,
                         "worker %P: %s%Z", sw->pid, sw->err);
            ev = NGX_HTTP_LUA_FFI_E_FAILED;
        }
    }

    ngx_shmtx_unlock(&ngx_http_lua_ffi_shpool->mutex);

    *p = '\0';
    *j++ = ']';
    *j = '\0';

    if (waiting == 0) {
        return ev;
    }

    if ((ngx_msec_int_t) (op->deadline - ngx_current_msec) > 0) {
        return NGX_HTTP_LUA_FFI_E_NONE;
    }

    return NGX_HTTP_LUA_FFI_E_DEADLINE;
}


/* Puts a command in the slot, carries it out here, and tells the others. */

static void
ngx_http_lua_ffi_publish(ngx_http_lua_ffi_cmd_e type, ngx_http_lua_ffi_op_t *op)
{
    ngx_uint_t                         i, ngone;
    ngx_http_lua_ffi_shm_t            *sh = ngx_http_lua_ffi_shm;
    ngx_http_lua_ffi_shm_lib_t        *sl;
    ngx_http_lua_ffi_version_t         gone[2 * NGX_HTTP_LUA_FFI_HISTORY_MAX];
    ngx_http_lua_ffi_history_entry_t   he;

    ngx_memzero(&he, sizeof(ngx_http_lua_ffi_history_entry_t));
    he.v = op->v;
    he.when = ngx_time();
    he.how = ngx_http_lua_ffi_op_how(op);
    he.from = op->rolled_back_to;
    ngone = 0;

    ngx_shmtx_lock(&ngx_http_lua_ffi_shpool->mutex);

    sh->seq++;
    sh->type = type;
    sh->lib = op->lib;
    sh->v = op->v;
    op->seq = sh->seq;

    sl = &sh->libs[op->lib];

    if (type == NGX_HTTP_LUA_FFI_CMD_COMMIT
        && op->v.version > sl->top_version)
    {
        sl->top_version = op->v.version;
    }

    if (type == NGX_HTTP_LUA_FFI_CMD_COMMIT
        && op->cr.kind != NGX_HTTP_LUA_FFI_OP_RELOAD)
    {
        /* from here on, every runtime anywhere routes by the canary */
        ngx_http_lua_ffi_canary_commit_locked(sl, &op->cr, &op->v);

        if (op->cr.kind == NGX_HTTP_LUA_FFI_OP_PROMOTE) {
            /* a promoted canary is current: in the history at once */
            ngx_http_lua_ffi_history_add_locked(sl, &he, gone, &ngone);
        }

    } else if (type == NGX_HTTP_LUA_FFI_CMD_COMMIT) {
        /* from here on, every runtime anywhere converges on v */
        sl->current = op->v;
        sl->reloads++;
        sl->last_reload = ngx_time();
        sl->last_error[0] = '\0';

        /* the history has v as soon as it is current, in the same step */
        ngx_http_lua_ffi_history_add_locked(sl, &he, gone, &ngone);
    }

    ngx_shmtx_unlock(&ngx_http_lua_ffi_shpool->mutex);

    for (i = 0; i < ngone; i++) {
        ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                      "ffi: version %ui of \"%V\" left the history, its "
                      "shadow copy goes", gone[i].version, &op->name);
        ngx_http_lua_ffi_shadow_remove(&gone[i]);
    }

    op->deadline = ngx_current_msec + ngx_http_lua_ffi_fmcf->reload_timeout;

    ngx_http_lua_ffi_shm_notify_all();
    ngx_http_lua_ffi_handle_command();
}


/*
 * ended: the reload ended here (an answer other than "worker exiting"),
 * so a drop it recorded counts as judged from now on; an exiting
 * coordinator leaves it to be judged again by a live watcher.
 */

static void
ngx_http_lua_ffi_release(ngx_http_lua_ffi_op_t *op, ngx_uint_t failed,
    ngx_uint_t ended)
{
    ngx_http_lua_ffi_shm_t  *sh = ngx_http_lua_ffi_shm;

    ngx_shmtx_lock(&ngx_http_lua_ffi_shpool->mutex);

    if (ended && sh->owner == ngx_pid
        && sh->libs[op->lib].drop_pid == ngx_pid)
    {
        sh->libs[op->lib].drop_pid = 0;
    }

    if (failed) {
        sh->libs[op->lib].failures++;
        ngx_memcpy(sh->libs[op->lib].last_error, op->err,
                   NGX_HTTP_LUA_FFI_ERRLEN);
    }

    if (sh->owner == ngx_pid) {
        sh->owner = 0;
    }

    ngx_shmtx_unlock(&ngx_http_lua_ffi_shpool->mutex);

    /* a reload waiting in another worker may go now */
    ngx_http_lua_ffi_shm_notify_all();
}


/* ffi_reloads_total: each ending of an operation on a known library */

static void
ngx_http_lua_ffi_op_count(ngx_http_lua_ffi_op_t *op,
    ngx_http_lua_ffi_reload_outcome_e outcome)
{
    ngx_http_lua_ffi_shm_lib_t  *sl;

    if (!op->known) {
        return;
    }

    sl = &ngx_http_lua_ffi_shm->libs[op->lib];

    if (op->flags & NGX_HTTP_LUA_FFI_RELOAD_ROLLBACK) {
        ngx_http_lua_ffi_metrics_rollback(sl->path, sl->names[0], outcome,
                                          outcome == NGX_HTTP_LUA_FFI_RELOAD_OK
                                          ? op->v.version : 0);
        return;
    }

    ngx_http_lua_ffi_metrics_reload(sl->path, sl->names[0], outcome,
                                    outcome == NGX_HTTP_LUA_FFI_RELOAD_OK
                                    ? op->v.version : 0);
}


/* ---- the history's hooks (ngx_http_lua_ffi_history.c) ---- */


static ngx_uint_t
ngx_http_lua_ffi_op_how(ngx_http_lua_ffi_op_t *op)
{
    if (op->flags & NGX_HTTP_LUA_FFI_RELOAD_ROLLBACK) {
        return NGX_HTTP_LUA_FFI_HOW_ROLLBACK;
    }

    if (op->cr.kind != NGX_HTTP_LUA_FFI_OP_RELOAD) {
        return NGX_HTTP_LUA_FFI_HOW_CANARY;
    }

    return (op->flags & NGX_HTTP_LUA_FFI_RELOAD_IF_CHANGED)
           ? NGX_HTTP_LUA_FFI_HOW_DROP : NGX_HTTP_LUA_FFI_HOW_ADMIN;
}


/*
 * A refusal of something that was tried: a file or a kept version that
 * was refused (409, 422). An unknown library, a version that is not in
 * the history, "unchanged" and "busy" tried nothing.
 */

static void
ngx_http_lua_ffi_op_refusal(ngx_http_lua_ffi_op_t *op, ngx_int_t status)
{
    ngx_http_lua_ffi_version_t  v;

    if (!op->known
        || (status != NGX_HTTP_CONFLICT
            && status != NGX_HTTP_UNPROCESSABLE_ENTITY)
        || ((op->flags & NGX_HTTP_LUA_FFI_RELOAD_ROLLBACK)
            && op->rolled_back_to == 0)
        || op->cr.kind == NGX_HTTP_LUA_FFI_OP_PROMOTE
        || op->cr.kind == NGX_HTTP_LUA_FFI_OP_RETIRE)
    {
        return;
    }

    v = op->v;
    v.version = 0;

    ngx_http_lua_ffi_history_record(op->lib, &v, ngx_http_lua_ffi_op_how(op),
                                    op->rolled_back_to, status, op->err);
}


static void
ngx_http_lua_ffi_act_none(ngx_http_lua_ffi_op_t *op)
{
}


static void
ngx_http_lua_ffi_act_busy(ngx_http_lua_ffi_op_t *op)
{
    ngx_http_lua_ffi_op_count(op, NGX_HTTP_LUA_FFI_RELOAD_REFUSED_BUSY);
    ngx_http_lua_ffi_op_error(op, NGX_HTTP_SERVICE_UNAVAILABLE,
                              (u_char *) "another reload did not finish");
}


static void
ngx_http_lua_ffi_act_refused(ngx_http_lua_ffi_op_t *op)
{
    ngx_uint_t  failed, unknown;

    /* a rollback to a version the history does not have tried nothing */
    unknown = ((op->flags & NGX_HTTP_LUA_FFI_RELOAD_ROLLBACK)
               && op->state == NGX_HTTP_LUA_FFI_R_CHECK
               && op->rolled_back_to == 0);

    /* a promotion or rollback with no canary to end failed no reload */
    failed = (op->status != NGX_HTTP_NOT_MODIFIED
              && op->status != NGX_HTTP_NOT_FOUND
              && op->status != NGX_HTTP_SERVICE_UNAVAILABLE
              && !unknown
              && op->cr.kind != NGX_HTTP_LUA_FFI_OP_PROMOTE
              && op->cr.kind != NGX_HTTP_LUA_FFI_OP_RETIRE);

    if (op->status != NGX_HTTP_NOT_FOUND
        || op->state == NGX_HTTP_LUA_FFI_R_CHECK)
    {
        ngx_http_lua_ffi_release(op, failed, 1);
    }

    if (unknown) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0, "ffi: rollback of "
                      "\"%V\" refused: %s", &op->name, op->err);
        ngx_http_lua_ffi_op_error(op, op->status, op->err);
        return;
    }

    if (op->status == NGX_HTTP_NOT_MODIFIED) {
        ngx_http_lua_ffi_op_finish(op, NGX_HTTP_NOT_MODIFIED, NULL, 0, NULL);
        return;
    }

    ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0, "ffi: %s of \"%V\" "
                  "refused: %s", ngx_http_lua_ffi_op_names[op->cr.kind],
                  &op->name, op->err);

    if (op->cr.kind == NGX_HTTP_LUA_FFI_OP_PROMOTE
        || op->cr.kind == NGX_HTTP_LUA_FFI_OP_RETIRE)
    {
        /* no canary to end: no reload was refused */
        ngx_http_lua_ffi_op_error(op, op->status, op->err);
        return;
    }

    ngx_http_lua_ffi_op_count(op, op->canary_refused
                                  ? NGX_HTTP_LUA_FFI_RELOAD_CONFLICT_CANARY
                                  : (op->status == NGX_HTTP_CONFLICT)
                                  ? NGX_HTTP_LUA_FFI_RELOAD_CONFLICT
                                  : op->trial_failed
                                    ? NGX_HTTP_LUA_FFI_RELOAD_REFUSED_TRIAL
                                    : NGX_HTTP_LUA_FFI_RELOAD_REFUSED_FILE);
    ngx_http_lua_ffi_op_refusal(op, op->status);

    ngx_http_lua_ffi_op_error(op, op->status, op->err);
}


static void
ngx_http_lua_ffi_act_prepare(ngx_http_lua_ffi_op_t *op)
{
    ngx_http_lua_ffi_publish(NGX_HTTP_LUA_FFI_CMD_PREPARE, op);
}


static void
ngx_http_lua_ffi_act_commit(ngx_http_lua_ffi_op_t *op)
{
    ngx_http_lua_ffi_publish(NGX_HTTP_LUA_FFI_CMD_COMMIT, op);
}


static void
ngx_http_lua_ffi_act_decide(ngx_http_lua_ffi_op_t *op)
{
    ngx_http_lua_ffi_publish(NGX_HTTP_LUA_FFI_CMD_COMMIT, op);
}


static void
ngx_http_lua_ffi_act_abort(ngx_http_lua_ffi_op_t *op)
{
    ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                  "ffi: reload of \"%V\" failed, the running version "
                  "serves on: %s", &op->name, op->err);

    ngx_http_lua_ffi_publish(NGX_HTTP_LUA_FFI_CMD_ABORT, op);
}


static void
ngx_http_lua_ffi_act_abort_silent(ngx_http_lua_ffi_op_t *op)
{
    ngx_snprintf(op->err, NGX_HTTP_LUA_FFI_ERRLEN, "worker(s) %s did not "
                 "answer within %M ms (ffi_reload_timeout)%Z", op->silent,
                 ngx_http_lua_ffi_fmcf->reload_timeout);

    ngx_http_lua_ffi_act_abort(op);
}


static void
ngx_http_lua_ffi_op_body(ngx_http_lua_ffi_op_t *op, ngx_int_t status)
{
    u_char   body[NGX_HTTP_LUA_FFI_ERRLEN * 4], *p, *last;

    last = body + sizeof(body);

    p = ngx_slprintf(body, last - 256, "{\"lib\":");
    p = ngx_http_lua_ffi_json_str(p, last - 200, op->name.data,
                                  op->name.len);
    if (op->cr.kind == NGX_HTTP_LUA_FFI_OP_RETIRE) {
        /* the version that serves on, and the canary that went */
        p = ngx_slprintf(p, last, ",\"version\":%ui,\"retired\":%ui,"
                         "\"build_id\":\"%s\",\"confirmed\":%s",
                         op->old.version, op->v.version, op->old.build_id,
                         status == NGX_HTTP_OK ? "true" : "false");

    } else {
        p = ngx_slprintf(p, last, ",\"version\":%ui,\"previous_version\":%ui,"
                         "\"build_id\":\"%s\",\"changed\":%s,"
                         "\"confirmed\":%s",
                         op->v.version, op->old_version, op->v.build_id,
                         op->changed ? "true" : "false",
                         status == NGX_HTTP_OK ? "true" : "false");
    }

    if (op->cr.kind == NGX_HTTP_LUA_FFI_OP_CANARY) {
        p = ngx_slprintf(p, last, ",\"canary\":%ui", op->cr.percent);
    }

    if (op->rolled_back_to) {
        p = ngx_slprintf(p, last, ",\"rolled_back_to\":%ui",
                         op->rolled_back_to);
    }

    if (status != NGX_HTTP_OK) {
        p = ngx_slprintf(p, last - 8, ",\"unconfirmed\":%s,\"error\":",
                         op->silent_json);
        p = ngx_http_lua_ffi_json_str(p, last - 2, op->err,
                                      ngx_strlen(op->err));
    }

    *p++ = '}';

    ngx_http_lua_ffi_op_finish(op, status, body, p - body,
                               status == NGX_HTTP_OK ? NULL : op->err);
}


static void
ngx_http_lua_ffi_act_committed(ngx_http_lua_ffi_op_t *op)
{
    if (op->cr.kind != NGX_HTTP_LUA_FFI_OP_RELOAD) {
        ngx_http_lua_ffi_canary_done(&ngx_http_lua_ffi_shm->libs[op->lib],
                                     &op->cr, &op->v, &op->old, &op->name,
                                     1);
        ngx_http_lua_ffi_release(op, 0, 1);
        ngx_http_lua_ffi_op_body(op, NGX_HTTP_OK);
        return;
    }

    if (op->changed && ngx_strcmp(op->old.shadow, op->v.shadow) != 0) {
        /*
         * every worker that maps the old copy already has it mapped; it
         * stays while the history keeps the old version, for a rollback
         */
        ngx_http_lua_ffi_history_release(op->lib, &op->old);
    }

    ngx_http_lua_ffi_release(op, 0, 1);

    if (op->rolled_back_to) {
        ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                      "ffi: \"%V\" rolled back: version %ui, the bytes of "
                      "version %ui%s", &op->name, op->v.version,
                      op->rolled_back_to,
                      op->changed ? "" : " (same image, runtimes restarted)");

    } else {
        ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                      "ffi: \"%V\" reloaded: version %ui%s",
                      &op->name, op->v.version,
                      op->changed ? "" : " (same file, runtimes restarted)");
    }

    ngx_http_lua_ffi_op_count(op, NGX_HTTP_LUA_FFI_RELOAD_OK);
    ngx_http_lua_ffi_op_body(op, NGX_HTTP_OK);
}


/*
 * The new version is current (workers that did not confirm switch as soon
 * as they run again), but the answer must not claim that every worker
 * serves it: 202, naming the workers. The old shadow copy stays: they
 * still map it.
 */

static void
ngx_http_lua_ffi_act_unconfirmed(ngx_http_lua_ffi_op_t *op)
{
    if (op->silent[0]) {
        ngx_snprintf(op->err, NGX_HTTP_LUA_FFI_ERRLEN, "version %ui is "
                     "current, but worker(s) %s did not confirm the switch "
                     "within %M ms (ffi_reload_timeout): they switch when "
                     "they run again%Z", op->v.version, op->silent,
                     ngx_http_lua_ffi_fmcf->reload_timeout);
    }

    ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0, "ffi: reload of \"%V\": "
                  "%s", &op->name, op->err);

    if (op->cr.kind != NGX_HTTP_LUA_FFI_OP_RELOAD) {
        /* recorded in the shared zone: the others follow when they run */
        ngx_http_lua_ffi_canary_done(&ngx_http_lua_ffi_shm->libs[op->lib],
                                     &op->cr, &op->v, &op->old, &op->name,
                                     0);
        ngx_http_lua_ffi_release(op, 0, 1);
        ngx_http_lua_ffi_op_body(op, NGX_HTTP_ACCEPTED);
        return;
    }

    ngx_http_lua_ffi_release(op, 0, 1);

    /* the new version is current: it serves, unconfirmed workers follow */
    ngx_http_lua_ffi_op_count(op, NGX_HTTP_LUA_FFI_RELOAD_OK);
    ngx_http_lua_ffi_op_body(op, NGX_HTTP_ACCEPTED);
}


static void
ngx_http_lua_ffi_act_aborted(ngx_http_lua_ffi_op_t *op)
{
    if (op->changed && ngx_strcmp(op->old.shadow, op->v.shadow) != 0) {
        ngx_http_lua_ffi_history_release(op->lib, &op->v);
    }

    ngx_http_lua_ffi_release(op, 1, 1);

    ngx_http_lua_ffi_op_count(op, NGX_HTTP_LUA_FFI_RELOAD_REFUSED_PREPARE);
    ngx_http_lua_ffi_op_refusal(op, NGX_HTTP_UNPROCESSABLE_ENTITY);
    ngx_http_lua_ffi_op_error(op, NGX_HTTP_UNPROCESSABLE_ENTITY, op->err);
}


/*
 * This worker exits (nginx -s reload, -s quit) with the operation under
 * way. Prepared runtimes elsewhere are dropped at once; after a commit,
 * the new version is current and every worker converges on it anyway.
 */

static void
ngx_http_lua_ffi_act_exit(ngx_http_lua_ffi_op_t *op)
{
    if (op->state == NGX_HTTP_LUA_FFI_R_PREPARE) {
        ngx_cpystrn(op->err, (u_char *) "the coordinating worker exited",
                    NGX_HTTP_LUA_FFI_ERRLEN);
        ngx_http_lua_ffi_publish(NGX_HTTP_LUA_FFI_CMD_ABORT, op);
    }

    ngx_http_lua_ffi_release(op, 0, 0);

    ngx_http_lua_ffi_op_error(op, NGX_HTTP_SERVICE_UNAVAILABLE,
                              (u_char *) "worker exiting");
}


/* ---- every worker ---- */


/*
 * Every wakeup of this worker's eventfd: a command it has not carried
 * out, a current version it does not serve, a status to publish, answers
 * for the reloads it coordinates. Nothing but two loads of shared words
 * when nothing changed.
 */

static void
ngx_http_lua_ffi_reload_notified(void)
{
    ngx_queue_t            *q, *next;
    ngx_http_lua_ffi_op_t  *op;

    if (ngx_http_lua_ffi_shm->seq != ngx_http_lua_ffi_seen_seq) {
        ngx_http_lua_ffi_handle_command();
        ngx_http_lua_ffi_reconcile_all();
    }

    ngx_http_lua_ffi_status_notified();

    for (q = ngx_queue_head(&ngx_http_lua_ffi_ops);
         q != ngx_queue_sentinel(&ngx_http_lua_ffi_ops);
         q = next)
    {
        next = ngx_queue_next(q);
        op = ngx_queue_data(q, ngx_http_lua_ffi_op_t, link);
        ngx_http_lua_ffi_op_run(op);
    }
}


/*
 * Before a new handle starts here: a command published since this worker
 * last looked is carried out first, and every library converged, as the
 * eventfd's handler would. A request that was already waiting runs before
 * that handler (a worker stopped or busy while the coordinator published),
 * and its load must not find the shared zone's current version unknown
 * here: it would map that copy (the image a canary or a prepare holds for
 * the library) as if it were the library's own. One load of a shared word
 * when nothing changed.
 */

void
ngx_http_lua_ffi_reload_catch_up(void)
{
    if (ngx_http_lua_ffi_shm->seq != ngx_http_lua_ffi_seen_seq) {
        ngx_http_lua_ffi_handle_command();
        ngx_http_lua_ffi_reconcile_all();
    }
}


static void
ngx_http_lua_ffi_handle_command(void)
{
    ngx_int_t                       rc, i;
    ngx_str_t                       path;
    ngx_uint_t                      seq;
    ngx_http_lua_ffi_cmd_e          type;
    ngx_http_lua_ffi_version_t      v;
    ngx_http_lua_ffi_library_t     *library;
    ngx_http_lua_ffi_shm_worker_t  *sw;
    u_char                          err[NGX_HTTP_LUA_FFI_ERRLEN];
    u_char                          path_buf[NGX_HTTP_LUA_FFI_PATHLEN];

    ngx_shmtx_lock(&ngx_http_lua_ffi_shpool->mutex);

    sw = &ngx_http_lua_ffi_shm->workers[ngx_http_lua_ffi_worker.slot];
    seq = ngx_http_lua_ffi_shm->seq;
    ngx_http_lua_ffi_seen_seq = seq;

    /* a worker of an older configuration has lost its slot: not ours */
    if (sw->pid != ngx_pid || sw->acked >= seq) {
        ngx_shmtx_unlock(&ngx_http_lua_ffi_shpool->mutex);
        return;
    }

    type = ngx_http_lua_ffi_shm->type;
    i = ngx_http_lua_ffi_shm->lib;
    v = ngx_http_lua_ffi_shm->v;
    path.len = ngx_strlen(ngx_http_lua_ffi_shm->libs[i].path);
    path.data = path_buf;
    ngx_memcpy(path_buf, ngx_http_lua_ffi_shm->libs[i].path, path.len + 1);

    ngx_shmtx_unlock(&ngx_http_lua_ffi_shpool->mutex);

    library = ngx_http_lua_ffi_registry_library(&path);
    rc = NGX_OK;
    err[0] = '\0';

    if (library) {
        /* first, whatever an earlier command left to do */
        rc = ngx_http_lua_ffi_reconcile(library, i, err, sizeof(err));

        if (type == NGX_HTTP_LUA_FFI_CMD_PREPARE) {
            rc = ngx_http_lua_ffi_registry_prepare(library, &v, err,
                                                   sizeof(err));

        }
    }

    if (type == NGX_HTTP_LUA_FFI_CMD_PREPARE) {
        ngx_http_lua_ffi_follow();
    }

    ngx_shmtx_lock(&ngx_http_lua_ffi_shpool->mutex);

    /* a long prepare may outlive our slot (nginx -s reload meanwhile) */
    if (sw->pid == ngx_pid) {
        sw->acked = seq;
        sw->rc = rc;
        ngx_memcpy(sw->err, err, sizeof(err));
    }

    ngx_shmtx_unlock(&ngx_http_lua_ffi_shpool->mutex);

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "ffi: command %ui (%d) carried out: %i", seq, type, rc);

    if (type == NGX_HTTP_LUA_FFI_CMD_PREPARE && library) {
        ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                      "ffi: \"%V\" version %ui prepared here: %s",
                      &path, v.version, rc == NGX_OK ? "ok" : "failed");
    }

    ngx_http_lua_ffi_shm_notify_all();
}


/*
 * One library in this worker, against the shared zone (the table at the
 * top, for workers): commit what was prepared for the current version,
 * drop what was prepared for a reload that ended otherwise, and converge
 * every other runtime on the current version.
 */

static ngx_int_t
ngx_http_lua_ffi_reconcile(ngx_http_lua_ffi_library_t *lib, ngx_int_t i,
    u_char *err, size_t errlen)
{
    ngx_int_t                    rc;
    ngx_uint_t                   prepared, pending;
    ngx_http_lua_ffi_shm_t      *sh = ngx_http_lua_ffi_shm;
    ngx_http_lua_ffi_version_t   cur;
    ngx_http_lua_ffi_shm_lib_t   snap;

    prepared = ngx_http_lua_ffi_registry_prepared(lib);

    ngx_shmtx_lock(&ngx_http_lua_ffi_shpool->mutex);

    cur = sh->libs[i].current;
    ngx_memcpy(&snap, &sh->libs[i], sizeof(snap));
    pending = (prepared && sh->type == NGX_HTTP_LUA_FFI_CMD_PREPARE
               && sh->lib == (ngx_uint_t) i && sh->v.version == prepared
               && ngx_http_lua_ffi_shm_alive(sh->owner));

    ngx_shmtx_unlock(&ngx_http_lua_ffi_shpool->mutex);

    if (pending || cur.version == 0) {
        return NGX_OK;
    }

    if (prepared && prepared != cur.version
        && prepared != snap.canary.version)
    {
        ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                      "ffi: \"%V\": version %ui was not committed, its "
                      "prepared runtimes go", &lib->path, prepared);
        ngx_http_lua_ffi_registry_abort(lib);
    }

    /* a canary started, runs, was promoted (prepares it) or retired */
    rc = ngx_http_lua_ffi_canary_converge(lib, &snap, err, errlen);

    prepared = ngx_http_lua_ffi_registry_prepared(lib);

    if (prepared == cur.version
        || ngx_http_lua_ffi_registry_behind(lib, cur.version))
    {
        return ngx_http_lua_ffi_registry_commit(lib, &cur, err, errlen);
    }

    return rc;
}


static void
ngx_http_lua_ffi_reconcile_all(void)
{
    ngx_int_t                    i;
    ngx_uint_t                   waiting;
    ngx_queue_t                 *q;
    ngx_http_lua_ffi_library_t  *lib;
    u_char                       err[NGX_HTTP_LUA_FFI_ERRLEN];

    waiting = 0;

    for (q = ngx_queue_head(&ngx_http_lua_ffi_worker.libraries);
         q != ngx_queue_sentinel(&ngx_http_lua_ffi_worker.libraries);
         q = ngx_queue_next(q))
    {
        lib = ngx_queue_data(q, ngx_http_lua_ffi_library_t, link);

        ngx_shmtx_lock(&ngx_http_lua_ffi_shpool->mutex);
        i = ngx_http_lua_ffi_shm_find_path(&lib->path);
        ngx_shmtx_unlock(&ngx_http_lua_ffi_shpool->mutex);

        if (i == NGX_ERROR) {
            continue;
        }

        (void) ngx_http_lua_ffi_reconcile(lib, i, err, sizeof(err));

        waiting |= (lib->next != NULL);
    }

    if (waiting) {
        ngx_http_lua_ffi_follow();
    }
}

/*
 * While a reload is under way, or something is prepared here, this worker
 * also looks by itself: a coordinator of another generation (nginx -s
 * reload) cannot write our eventfd, and a coordinator that died never
 * tells. Nothing runs when no reload is under way.
 */

static void
ngx_http_lua_ffi_follow(void)
{
    if (!ngx_http_lua_ffi_follow_ev.timer_set && !ngx_exiting) {
        ngx_add_timer(&ngx_http_lua_ffi_follow_ev,
                      NGX_HTTP_LUA_FFI_FOLLOW_MSEC);
    }
}


static void
ngx_http_lua_ffi_follow_handler(ngx_event_t *ev)
{
    ngx_pid_t                    owner;
    ngx_uint_t                   prepared;
    ngx_queue_t                 *q;
    ngx_http_lua_ffi_library_t  *lib;

    ngx_http_lua_ffi_handle_command();
    ngx_http_lua_ffi_reconcile_all();

    prepared = 0;

    for (q = ngx_queue_head(&ngx_http_lua_ffi_worker.libraries);
         q != ngx_queue_sentinel(&ngx_http_lua_ffi_worker.libraries);
         q = ngx_queue_next(q))
    {
        lib = ngx_queue_data(q, ngx_http_lua_ffi_library_t, link);
        prepared |= (lib->next != NULL);
    }

    owner = ngx_http_lua_ffi_shm->owner;

    if (prepared || (owner && owner != ngx_pid
                     && ngx_http_lua_ffi_shm_alive(owner)))
    {
        ngx_http_lua_ffi_follow();
    }
}
