/*
 * Keeps nginx's signal handlers on the worker's event loop thread: a signal
 * of nginx's that lands on a library's thread is passed on to that thread.
 */

#include "ngx_http_lua_ffi_module.h"

#include <sys/syscall.h>


/*
 * A process-directed signal goes to any thread that does not block it, and
 * a library's threads need not block nginx's signals: threads started while
 * an image is mapped (constructors, the Go runtime in dlopen) inherit the
 * worker's empty mask, and Go unblocks SIGCHLD on every thread it creates.
 * nginx's handlers, written for one thread, then run elsewhere: SIGCHLD
 * reaps a child that system() or a trial is waiting for, and a flag set by
 * QUIT or USR1 waits for an event that may never come, as the loop thread,
 * asleep in epoll_wait(), never saw the signal.
 *
 * So at worker start, before any library is mapped, each of nginx's
 * handlers gets a trampoline in front of it. On the loop thread it calls
 * nginx's handler; on any other thread it sends the signal to the loop
 * thread and returns. There the signal waits while the loop thread blocks
 * it (SIGCHLD inside system(), around a trial) and is coalesced with one
 * already pending, exactly as in a worker that has no other thread.
 */

/* the signals nginx's ngx_init_signals() gives a handler (ngx_process.c) */
static const int  ngx_http_lua_ffi_signos[] = {
    ngx_signal_value(NGX_RECONFIGURE_SIGNAL),
    ngx_signal_value(NGX_REOPEN_SIGNAL),
    ngx_signal_value(NGX_NOACCEPT_SIGNAL),
    ngx_signal_value(NGX_TERMINATE_SIGNAL),
    ngx_signal_value(NGX_SHUTDOWN_SIGNAL),
    ngx_signal_value(NGX_CHANGEBIN_SIGNAL),
    SIGALRM,
    SIGINT,
    SIGIO,
    SIGCHLD
};

#define NGX_HTTP_LUA_FFI_NSIGNALS                                            \
    (sizeof(ngx_http_lua_ffi_signos) / sizeof(ngx_http_lua_ffi_signos[0]))

typedef struct {
    int               signo;        /* 0: not wrapped */
    struct sigaction  nginx;        /* the handler the trampoline stands for */
} ngx_http_lua_ffi_signal_t;

static ngx_http_lua_ffi_signal_t
    ngx_http_lua_ffi_signals[NGX_HTTP_LUA_FFI_NSIGNALS];

/* the worker and its event loop thread; written before any trampoline */
static pid_t  ngx_http_lua_ffi_signal_pid;
static pid_t  ngx_http_lua_ffi_signal_tid;


static void ngx_http_lua_ffi_signal_trampoline(int signo, siginfo_t *info,
    void *ucontext);


ngx_int_t
ngx_http_lua_ffi_signal_init(ngx_cycle_t *cycle)
{
    int                         signo;
    ngx_uint_t                  i;
    struct sigaction            sa;
    ngx_http_lua_ffi_signal_t  *s;

    /*
     * The trampoline stays mapped for as long as a thread may take a
     * signal: ngx_http_lua_ffi_init_process() pinned the module before.
     */

    ngx_http_lua_ffi_signal_pid = getpid();
    ngx_http_lua_ffi_signal_tid = (pid_t) syscall(SYS_gettid);

    for (i = 0; i < NGX_HTTP_LUA_FFI_NSIGNALS; i++) {
        signo = ngx_http_lua_ffi_signos[i];
        s = &ngx_http_lua_ffi_signals[i];

        if (sigaction(signo, NULL, &sa) == -1) {
            ngx_log_error(NGX_LOG_ALERT, cycle->log, ngx_errno,
                          "ffi: sigaction(%d) failed", signo);
            return NGX_ERROR;
        }

        if ((sa.sa_flags & SA_SIGINFO)
            ? sa.sa_sigaction == ngx_http_lua_ffi_signal_trampoline
            : (sa.sa_handler == SIG_DFL || sa.sa_handler == SIG_IGN))
        {
            /* nothing of nginx's to guard, or guarded already */
            continue;
        }

        s->nginx = sa;

        /*
         * nginx's own flags and mask, so that the loop thread sees what it
         * saw before (lua-nginx-module adds SA_RESTART to these later).
         * SA_ONSTACK: on a Go thread the handler must run on the signal
         * stack, a goroutine's stack is too small (Go's os/signal docs).
         */
        sa.sa_sigaction = ngx_http_lua_ffi_signal_trampoline;
        sa.sa_flags |= SA_SIGINFO | SA_ONSTACK;

        /* the trampoline finds nginx's handler from the moment it runs */
        s->signo = signo;

        if (sigaction(signo, &sa, NULL) == -1) {
            s->signo = 0;
            ngx_log_error(NGX_LOG_ALERT, cycle->log, ngx_errno,
                          "ffi: sigaction(%d) failed", signo);
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/*
 * The signals a worker acts on (ngx_signal_handler: QUIT, WINCH, TERM,
 * INT, USR1, and CHLD for its children). A worker only logs HUP, USR2 and
 * IO, and the JVM needs USR2 for itself (thread suspend and resume): those
 * are left to whoever took them.
 */

static ngx_uint_t
ngx_http_lua_ffi_signal_acts(int signo)
{
    return signo == ngx_signal_value(NGX_SHUTDOWN_SIGNAL)
           || signo == ngx_signal_value(NGX_NOACCEPT_SIGNAL)
           || signo == ngx_signal_value(NGX_TERMINATE_SIGNAL)
           || signo == ngx_signal_value(NGX_REOPEN_SIGNAL)
           || signo == SIGINT
           || signo == SIGCHLD;
}


/*
 * After a library's code ran (dlopen's constructors, libffi_init): a
 * library may have put a handler of its own on one of nginx's signals (the
 * JVM takes INT, TERM and QUIT unless started with -Xrs), and nginx's
 * would never run again in this worker. The signals a worker acts on are
 * nginx's: the trampoline goes back in front of nginx's handler, and the
 * library's is dropped, with a line saying so.
 */

void
ngx_http_lua_ffi_signal_guard(ngx_log_t *log, ngx_str_t *library)
{
    ngx_uint_t                  i;
    struct sigaction            sa;
    ngx_http_lua_ffi_signal_t  *s;

    for (i = 0; i < NGX_HTTP_LUA_FFI_NSIGNALS; i++) {
        s = &ngx_http_lua_ffi_signals[i];

        if (s->signo == 0 || !ngx_http_lua_ffi_signal_acts(s->signo)
            || sigaction(s->signo, NULL, &sa) == -1)
        {
            continue;
        }

        if ((sa.sa_flags & SA_SIGINFO)
            && sa.sa_sigaction == ngx_http_lua_ffi_signal_trampoline)
        {
            continue;
        }

        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "ffi: \"%V\" replaced nginx's handler of signal %d: "
                      "nginx's is back (a library must not handle nginx's "
                      "signals)", library, s->signo);

        sa = s->nginx;
        sa.sa_sigaction = ngx_http_lua_ffi_signal_trampoline;
        sa.sa_flags |= SA_SIGINFO | SA_ONSTACK;

        (void) sigaction(s->signo, &sa, NULL);
    }
}


/*
 * Only async-signal-safe work here, and errno as the interrupted code left
 * it. On a thread of the worker other than the loop: a thread-directed copy
 * of the signal for the loop thread. The kernel lets no thread send another
 * one a siginfo that claims the kernel or kill() sent it, so the copy says
 * SI_QUEUE; every other field (si_pid, si_status...) is the original's.
 * Elsewhere (the loop thread, or a child forked from any thread before it
 * replaced its image) nginx's handler runs, as it would have without us.
 */

static void
ngx_http_lua_ffi_signal_trampoline(int signo, siginfo_t *info, void *ucontext)
{
    int                         err;
    ngx_uint_t                  i;
    siginfo_t                   si;
    ngx_http_lua_ffi_signal_t  *s;

    err = errno;

    if ((pid_t) syscall(SYS_gettid) != ngx_http_lua_ffi_signal_tid
        && getpid() == ngx_http_lua_ffi_signal_pid)
    {
        if (info != NULL) {
            si = *info;

        } else {
            ngx_memzero(&si, sizeof(siginfo_t));
            si.si_signo = signo;
        }

        si.si_code = SI_QUEUE;

        if (syscall(SYS_rt_tgsigqueueinfo, ngx_http_lua_ffi_signal_pid,
                    ngx_http_lua_ffi_signal_tid, signo, &si)
            == -1)
        {
            (void) syscall(SYS_tgkill, ngx_http_lua_ffi_signal_pid,
                           ngx_http_lua_ffi_signal_tid, signo);
        }

        errno = err;
        return;
    }

    for (i = 0; i < NGX_HTTP_LUA_FFI_NSIGNALS; i++) {
        s = &ngx_http_lua_ffi_signals[i];

        if (s->signo != signo) {
            continue;
        }

        if (s->nginx.sa_flags & SA_SIGINFO) {
            s->nginx.sa_sigaction(signo, info, ucontext);

        } else {
            s->nginx.sa_handler(signo);
        }

        break;
    }

    errno = err;
}
