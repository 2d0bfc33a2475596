/*
 * Trying a new image in a short-lived process (ffi-trial) before any
 * worker maps it: a crash in a constructor or libffi_init costs no worker.
 */

#include "ngx_http_lua_ffi_manager.h"

#include <dlfcn.h>
#include <poll.h>
#include <spawn.h>


#define NGX_HTTP_LUA_FFI_TRIAL_MSEC  5000
#define NGX_HTTP_LUA_FFI_TRIAL_ARGS  16


extern char **environ;


/*
 * ffi-trial is looked for next to the module first (the build tree), then
 * in the helper folder chosen when the module was configured (a package's
 * /usr/lib/...): no path of the build tree is compiled in.  Found once.
 */

static u_char *
ngx_http_lua_ffi_trial_program(void)
{
    u_char         *p;
    Dl_info         info;
    static u_char   prog[NGX_HTTP_LUA_FFI_PATHLEN];
    static int      looked;

    if (looked) {
        return prog[0] ? prog : NULL;
    }

    looked = 1;

    if (dladdr((void *) ngx_http_lua_ffi_trial_program, &info) != 0
        && info.dli_fname != NULL
        && ngx_strlen(info.dli_fname) + 16 < NGX_HTTP_LUA_FFI_PATHLEN)
    {
        p = ngx_cpystrn(prog, (u_char *) info.dli_fname,
                        NGX_HTTP_LUA_FFI_PATHLEN);

        while (p > prog && p[-1] != '/') {
            p--;
        }

        ngx_cpystrn(p, (u_char *) "ffi-trial", 10);

        if (access((char *) prog, X_OK) == 0) {
            return prog;
        }
    }

#ifdef NGX_HTTP_LUA_FFI_HELPER_DIR
    ngx_cpystrn(prog, (u_char *) NGX_HTTP_LUA_FFI_HELPER_DIR "/ffi-trial",
                NGX_HTTP_LUA_FFI_PATHLEN);

    if (access((char *) prog, X_OK) == 0) {
        return prog;
    }
#endif

    ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, ngx_errno,
                  "ffi: \"%s\" cannot run: new libraries are loaded "
                  "without a trial", prog);
    prog[0] = '\0';

    return NULL;
}


static ngx_int_t
ngx_http_lua_ffi_trial_read(int fd, ngx_pid_t pid, u_char *line, size_t len)
{
    int            n;
    size_t         got;
    ssize_t        r;
    ngx_msec_t     deadline, now;
    struct pollfd  pfd;

    got = 0;
    ngx_time_update();
    deadline = ngx_current_msec + NGX_HTTP_LUA_FFI_TRIAL_MSEC;

    for ( ;; ) {
        ngx_time_update();
        now = ngx_current_msec;

        if ((ngx_msec_int_t) (deadline - now) <= 0) {
            (void) kill(pid, SIGKILL);
            return NGX_AGAIN;
        }

        pfd.fd = fd;
        pfd.events = POLLIN;

        n = poll(&pfd, 1, (int) (deadline - now));

        if (n == -1 && ngx_errno == NGX_EINTR) {
            continue;
        }

        if (n <= 0) {
            continue;
        }

        r = read(fd, line + got, len - 1 - got);

        if (r == -1 && ngx_errno == NGX_EINTR) {
            continue;
        }

        if (r <= 0 || (got += r) == len - 1) {
            break;
        }
    }

    line[got] = '\0';

    return got ? NGX_OK : NGX_ERROR;
}


/*
 * NGX_OK: the image mapped and libffi_init returned (what it returned is
 * for the real load to report); NGX_DECLINED: refused, err says why.
 */

ngx_int_t
ngx_http_lua_ffi_trial(u_char *shadow, ngx_str_t *path, ngx_str_t *cfgs,
    ngx_uint_t ncfgs, u_char *err, size_t errlen)
{
    int                         fds[2], status;
    char                       *argv[NGX_HTTP_LUA_FFI_TRIAL_ARGS + 4];
    u_char                     *prog, line[512], *nl;
    ngx_int_t                   rc;
    ngx_uint_t                  i, n;
    sigset_t                    chld, old;
    ngx_pid_t                   pid;
    posix_spawn_file_actions_t  fa;

    prog = ngx_http_lua_ffi_trial_program();
    if (prog == NULL) {
        return NGX_OK;
    }

    if (pipe2(fds, O_CLOEXEC) == -1) {
        ngx_snprintf(err, errlen, "pipe2() failed: %s%Z", strerror(errno));
        return NGX_DECLINED;
    }

    n = 0;
    argv[n++] = (char *) prog;
    argv[n++] = (char *) shadow;
    argv[n++] = (char *) path->data;

    for (i = 0; i < ncfgs && i < NGX_HTTP_LUA_FFI_TRIAL_ARGS; i++) {
        argv[n++] = cfgs[i].data ? (char *) cfgs[i].data : "-";
    }

    argv[n] = NULL;

    /*
     * SIGCHLD waits until we reaped the trial ourselves: otherwise nginx's
     * handler takes its exit status (and logs it as an unknown process).
     */
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    (void) pthread_sigmask(SIG_BLOCK, &chld, &old);

    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], STDOUT_FILENO);

    rc = posix_spawn(&pid, (char *) prog, &fa, NULL, argv, environ);

    posix_spawn_file_actions_destroy(&fa);
    (void) close(fds[1]);

    if (rc != 0) {
        (void) pthread_sigmask(SIG_SETMASK, &old, NULL);
        (void) close(fds[0]);
        ngx_snprintf(err, errlen, "cannot start \"%s\": %s%Z", prog,
                     strerror(rc));
        return NGX_DECLINED;
    }

    rc = ngx_http_lua_ffi_trial_read(fds[0], pid, line, sizeof(line));
    (void) close(fds[0]);

    status = 0;
    (void) waitpid(pid, &status, 0);
    (void) pthread_sigmask(SIG_SETMASK, &old, NULL);

    if (rc == NGX_AGAIN) {
        ngx_snprintf(err, errlen, "\"%V\": a constructor or libffi_init did "
                     "not return within %d ms in a trial process%Z", path,
                     NGX_HTTP_LUA_FFI_TRIAL_MSEC);
        return NGX_DECLINED;
    }

    if (rc == NGX_ERROR) {
        if (WIFSIGNALED(status)) {
            ngx_snprintf(err, errlen, "\"%V\" crashed (signal %d) in a "
                         "constructor or libffi_init, in a trial process%Z",
                         path, WTERMSIG(status));

        } else {
            ngx_snprintf(err, errlen, "\"%V\" crashed in a constructor or "
                         "libffi_init, in a trial process%Z", path);
        }

        return NGX_DECLINED;
    }

    nl = (u_char *) ngx_strchr(line, '\n');
    if (nl) {
        *nl = '\0';
    }

    if (ngx_strncmp(line, "ok", 2) == 0 || ngx_strncmp(line, "init ", 5) == 0)
    {
        return NGX_OK;
    }

    ngx_snprintf(err, errlen, "\"%V\" failed in a trial process: %s%Z",
                 path, line);

    return NGX_DECLINED;
}
