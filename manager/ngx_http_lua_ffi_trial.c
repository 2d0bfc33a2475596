/*
 * Trying a new image in a short-lived process (ffi-trial) before any
 * worker maps it: a crash in a constructor or libffi_init costs no worker.
 */

#include "ngx_http_lua_ffi_manager.h"

#include <dlfcn.h>
#include <poll.h>
#include <spawn.h>


/*
 * How long a trial may take: a C, Rust or Go library's constructors and
 * libffi_init take milliseconds; one that starts a virtual machine (a
 * JVM, libnode, libpython: libelf saw it) takes seconds, and on a busy
 * host more than five (a JVM under load: 4 to 6 s), which must not read
 * as a hang.
 */
#define NGX_HTTP_LUA_FFI_TRIAL_MSEC     5000
#define NGX_HTTP_LUA_FFI_TRIAL_VM_MSEC  30000


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


/*
 * Waits for the verdict line, the trial's exit, or the deadline. The
 * verdict is a line on a channel of its own: a helper the library forked
 * may hold it open for ever, so its end is not awaited.
 */

static ngx_int_t
ngx_http_lua_ffi_trial_wait(int fd, ngx_pid_t pid, ngx_msec_t msec,
    int *status, u_char *line, size_t len)
{
    int            n;
    size_t         got;
    ssize_t        r;
    ngx_msec_t     deadline, now;
    struct pollfd  pfd;

    got = 0;
    ngx_time_update();
    deadline = ngx_current_msec + msec;

    for ( ;; ) {
        ngx_time_update();
        now = ngx_current_msec;

        if ((ngx_msec_int_t) (deadline - now) <= 0) {
            (void) kill(pid, SIGKILL);
            (void) waitpid(pid, status, 0);
            return NGX_AGAIN;
        }

        pfd.fd = fd;
        pfd.events = POLLIN;
        pfd.revents = 0;

        n = poll(&pfd, 1, ngx_min((int) (deadline - now), 50));

        if (n == 1) {
            r = read(fd, line + got, len - 1 - got);

            if (r > 0) {
                got += r;
                line[got] = '\0';

                if (ngx_strchr(line, '\n') || got == len - 1) {
                    (void) waitpid(pid, status, 0);
                    return NGX_OK;
                }

                continue;
            }

            if (r == -1 && ngx_errno == NGX_EINTR) {
                continue;
            }
        }

        /* no verdict yet: did it end without one (a crash)? */
        if (waitpid(pid, status, WNOHANG) == pid) {
            r = read(fd, line + got, len - 1 - got);
            got += (r > 0) ? r : 0;
            line[got] = '\0';

            return ngx_strchr(line, '\n') ? NGX_OK : NGX_ERROR;
        }
    }
}


/* Every cfg on the trial's stdin: "N\n" and N bytes, "-\n" for nil. */

static ngx_int_t
ngx_http_lua_ffi_trial_send(int fd, ngx_str_t *cfgs, ngx_uint_t ncfgs)
{
    u_char      head[32], *p, *last;
    ssize_t     n;
    ngx_uint_t  i, part;

    for (i = 0; i < ncfgs; i++) {
        for (part = 0; part < 2; part++) {
            if (part == 0) {
                p = head;
                last = cfgs[i].data
                       ? ngx_sprintf(head, "%uz\n", cfgs[i].len)
                       : ngx_cpymem(head, "-\n", 2);

            } else {
                p = cfgs[i].data;
                last = p ? p + cfgs[i].len : p;
            }

            while (p < last) {
                n = write(fd, p, last - p);

                if (n == -1 && ngx_errno == NGX_EINTR) {
                    continue;
                }

                if (n <= 0) {
                    return NGX_ERROR;
                }

                p += n;
            }
        }
    }

    return NGX_OK;
}


/*
 * NGX_OK: the image mapped and libffi_init returned 0 for every cfg (what
 * a real load's libffi_init returns is for that load to report);
 * NGX_DECLINED: refused, err says why.
 *
 * The trial inherits only what it needs: fd 0 (the cfgs, on a pipe: never
 * on a command line or in an environment, which other users can read in
 * /proc), fds 1 and 2 (the worker's error log, for whatever the library
 * prints) and fd 3 (the verdict). Listening sockets, the shared zone's
 * descriptors and every other fd of the worker are closed in it. It runs
 * as the worker runs (same user, same environment: nginx has cleared it
 * of all but TZ and the "env" directives), in a process group of its own
 * so that helpers a library forks end with it.
 */

ngx_int_t
ngx_http_lua_ffi_trial(u_char *shadow, ngx_str_t *path, ngx_str_t *cfgs,
    ngx_uint_t ncfgs, ngx_uint_t global, ngx_uint_t pin_reason, u_char *err,
    size_t errlen)
{
    int                         in[2], out[2], status;
    char                       *argv[6];
    ngx_int_t                   fd, keep;
    u_char                     *prog, line[512], *nl;
    ngx_int_t                   rc;
    ngx_uint_t                  n;
    sigset_t                    chld, old, none;
    ngx_pid_t                   pid;
    ngx_msec_t                  msec;
    posix_spawnattr_t           attr;
    posix_spawn_file_actions_t  fa;

    prog = ngx_http_lua_ffi_trial_program();
    if (prog == NULL) {
        return NGX_OK;
    }

    if (pipe2(in, O_CLOEXEC) == -1) {
        ngx_snprintf(err, errlen, "pipe2() failed: %s%Z", strerror(errno));
        return NGX_DECLINED;
    }

    if (pipe2(out, O_CLOEXEC) == -1) {
        ngx_snprintf(err, errlen, "pipe2() failed: %s%Z", strerror(errno));
        (void) close(in[0]);
        (void) close(in[1]);
        return NGX_DECLINED;
    }

    n = 0;
    argv[n++] = (char *) prog;

    if (global) {
        argv[n++] = "-g";
    }

    argv[n++] = (char *) shadow;
    argv[n++] = (char *) path->data;
    argv[n] = NULL;

    /*
     * SIGCHLD waits until we reaped the trial ourselves: otherwise nginx's
     * handler takes its exit status (and logs it as an unknown process).
     */
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    (void) pthread_sigmask(SIG_BLOCK, &chld, &old);

    sigemptyset(&none);
    posix_spawnattr_init(&attr);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setpgroup(&attr, 0);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK
                                    | POSIX_SPAWN_SETPGROUP);

    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    posix_spawn_file_actions_adddup2(&fa, STDERR_FILENO, STDOUT_FILENO);
    posix_spawn_file_actions_adddup2(&fa, out[1], 3);

    keep = 4;

    if (ngx_strncmp(shadow, "/proc/self/fd/", 14) == 0) {
        /* an anonymous image: the trial gets that one descriptor too */
        fd = ngx_atoi(shadow + 14, ngx_strlen(shadow + 14));
        if (fd > 3) {
            posix_spawn_file_actions_adddup2(&fa, fd, 4);
            argv[global ? 2 : 1] = "/proc/self/fd/4";
            keep = 5;
        }
    }

    posix_spawn_file_actions_addclosefrom_np(&fa, keep);

    rc = posix_spawn(&pid, (char *) prog, &fa, &attr, argv, environ);

    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    (void) close(in[0]);
    (void) close(out[1]);

    if (rc != 0) {
        (void) pthread_sigmask(SIG_SETMASK, &old, NULL);
        (void) close(in[1]);
        (void) close(out[0]);
        ngx_snprintf(err, errlen, "cannot start \"%s\": %s%Z", prog,
                     strerror(rc));
        return NGX_DECLINED;
    }

    /* a trial that died before reading shows below as a crash */
    (void) ngx_http_lua_ffi_trial_send(in[1], cfgs, ncfgs);
    (void) close(in[1]);

    msec = (pin_reason == NGX_HTTP_LUA_FFI_PIN_NONE
            || pin_reason == NGX_HTTP_LUA_FFI_PIN_GO)
           ? NGX_HTTP_LUA_FFI_TRIAL_MSEC : NGX_HTTP_LUA_FFI_TRIAL_VM_MSEC;

    status = 0;
    line[0] = '\0';
    rc = ngx_http_lua_ffi_trial_wait(out[0], pid, msec, &status, line,
                                     sizeof(line));
    (void) close(out[0]);

    /* helpers the library started in the trial go with it */
    (void) kill(-pid, SIGKILL);

    (void) pthread_sigmask(SIG_SETMASK, &old, NULL);

    if (rc == NGX_AGAIN) {
        ngx_snprintf(err, errlen, "\"%V\": a constructor or libffi_init did "
                     "not return within %M ms in a trial process%Z", path,
                     msec);
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

    if (ngx_strcmp(line, "ok") == 0 || ngx_strncmp(line, "init ", 5) == 0) {
        return NGX_OK;
    }

    ngx_snprintf(err, errlen, "\"%V\" failed in a trial process: %s%Z",
                 path, line);

    return NGX_DECLINED;
}
