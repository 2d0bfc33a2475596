/*
 * A versioned runtime for the hot-reload tests: built several times with
 * another VERSION (or a failing libffi_init) to play successive releases.
 */

#include <dirent.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef VERSION
#define VERSION "v1"
#endif

#ifndef INIT_RC
#define INIT_RC 0
#endif

void *ngx_http_lua_ffi_task_poll(void *tq);
char *ngx_http_lua_ffi_get_req(void *tsk, int *len);
void ngx_http_lua_ffi_respond(void *tsk, int rc, char *rsp, int rsp_len);


typedef struct ver_runtime_s  ver_runtime_t;

struct ver_runtime_s {
    void            *tq;
    pthread_t        thread;
    ver_runtime_t   *next;
};

typedef struct {
    void  *task;
    int    ms;
} ver_sleep_t;


static pthread_mutex_t  ver_lock = PTHREAD_MUTEX_INITIALIZER;
static ver_runtime_t   *ver_runtimes;
#ifdef FLAKY
static unsigned long    ver_calls;
#endif


static char *
ver_dup(const char *s)
{
    return strdup(s);
}


/* the request is not NUL-terminated: a number from at most len bytes */
static int
ver_number(const char *p, int len)
{
    int  n;

    for (n = 0; len > 0 && *p >= '0' && *p <= '9' && n < 100000; len--) {
        n = n * 10 + (*p++ - '0');
    }

    return n;
}


/* answers after ms without holding up the poller */
static void *
ver_sleeper(void *arg)
{
    ver_sleep_t  *s = arg;

    usleep(s->ms * 1000);
    ngx_http_lua_ffi_respond(s->task, 0, ver_dup(VERSION), 0);
    free(s);

    return NULL;
}


static void *
ver_poll(void *arg)
{
    int             len;
    char           *req, *rsp;
    void           *task;
    pthread_t       t;
    ver_sleep_t    *s;
    ver_runtime_t  *rt = arg;

    while ((task = ngx_http_lua_ffi_task_poll(rt->tq)) != NULL) {
        req = ngx_http_lua_ffi_get_req(task, &len);

        if (req && len > 6 && memcmp(req, "sleep:", 6) == 0) {
            s = malloc(sizeof(ver_sleep_t));
            s->task = task;
            s->ms = ver_number(req + 6, len - 6);
            fprintf(stderr, "libver " VERSION " got sleep\n");

            if (pthread_create(&t, NULL, ver_sleeper, s) == 0) {
                pthread_detach(t);
                continue;
            }

            free(s);
            ngx_http_lua_ffi_respond(task, 1, NULL, 0);
            continue;
        }

        if (req && len == 7 && memcmp(req, "version", 7) == 0) {
#ifdef FLAKY
            /* a bad release: every other call fails (rc 1) */
            if (__atomic_fetch_add(&ver_calls, 1, __ATOMIC_RELAXED) % 2) {
                ngx_http_lua_ffi_respond(task, 1, NULL, 0);
                continue;
            }
#endif
            ngx_http_lua_ffi_respond(task, 0, ver_dup(VERSION), 0);
            continue;
        }

        rsp = malloc(len ? len : 1);
        if (len) {
            memcpy(rsp, req, len);
        }

        ngx_http_lua_ffi_respond(task, 0, rsp, len);
    }

    return NULL;
}


/* whether this process is the trial (build/ffi-trial), not a worker */
static int
ver_in_trial(void)
{
    char     exe[4096];
    ssize_t  n;

    n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n <= 0) {
        return 0;
    }

    exe[n] = '\0';

    return strstr(exe, "ffi-trial") != NULL;
}


/* how many of /proc/PID/cmdline and /proc/PID/environ hold secret */
static int
ver_leaks(const char *secret)
{
    int             fd, found;
    char            path[512], buf[65536];
    size_t          slen, i;
    ssize_t         n;
    DIR            *d;
    struct dirent  *e;
    const char     *what[2] = { "cmdline", "environ" };
    int             w;

    found = 0;
    slen = strlen(secret);
    d = opendir("/proc");

    while (d && (e = readdir(d)) != NULL) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9') {
            continue;
        }

        for (w = 0; w < 2; w++) {
            snprintf(path, sizeof(path), "/proc/%s/%s", e->d_name, what[w]);
            fd = open(path, O_RDONLY);
            if (fd == -1) {
                continue;
            }

            n = read(fd, buf, sizeof(buf));
            close(fd);

            for (i = 0; n > 0 && i + slen <= (size_t) n; i++) {
                if (memcmp(buf + i, secret, slen) == 0) {
                    found++;
                    break;
                }
            }
        }
    }

    if (d) {
        closedir(d);
    }

    return found;
}


/*
 * cfg "probe:DIR:SECRET": writes DIR/probe-PID: where it runs (trial or
 * worker), its uid, its open descriptors, and how many processes show
 * SECRET in their command line or environment right now.
 */
static void
ver_probe(char *cfg)
{
    int             fd, len;
    char           *dir, *secret, path[4096], link[4096], out[65536];
    ssize_t         n;
    DIR            *d;
    struct dirent  *e;

    dir = strdup(cfg + 6);
    secret = strchr(dir, ':');
    if (secret == NULL) {
        free(dir);
        return;
    }

    *secret++ = '\0';

    len = snprintf(out, sizeof(out), "trial=%d uid=%d leaks=%d\n",
                   ver_in_trial(), (int) getuid(), ver_leaks(secret));

    d = opendir("/proc/self/fd");
    while (d && (e = readdir(d)) != NULL && len < (int) sizeof(out) - 4200) {
        if (e->d_name[0] == '.') {
            continue;
        }

        snprintf(path, sizeof(path), "/proc/self/fd/%s", e->d_name);
        n = readlink(path, link, sizeof(link) - 1);
        link[n > 0 ? n : 0] = '\0';
        len += snprintf(out + len, sizeof(out) - len, "fd %s %s\n",
                        e->d_name, link);
    }

    if (d) {
        closedir(d);
    }

    snprintf(path, sizeof(path), "%s/probe-%d", dir, (int) getpid());
    fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd != -1) {
        n = write(fd, out, len);
        (void) n;
        close(fd);
    }

    free(dir);
}


/*
 * cfg "pause:PREFIX": while the file PREFIX-PID.hold-VERSION exists, this
 * worker's libffi_init of VERSION holds (for 60 s at most), after saying
 * so in PREFIX-PID.held-VERSION: a test stops a reload in its prepare.
 */
static void
ver_pause(char *cfg)
{
    int     i, fd;
    char    hold[4096], held[4096];

    snprintf(hold, sizeof(hold), "%s-%d.hold-" VERSION, cfg + 6,
             (int) getpid());
    snprintf(held, sizeof(held), "%s-%d.held-" VERSION, cfg + 6,
             (int) getpid());

    if (access(hold, F_OK) != 0) {
        return;
    }

    fd = open(held, O_WRONLY | O_CREAT, 0644);
    if (fd != -1) {
        close(fd);
    }

    for (i = 0; i < 6000 && access(hold, F_OK) == 0; i++) {
        usleep(10000);
    }

    unlink(held);
}


/* cfg "fail-on-VERSION": that release's libffi_init returns 5 */
static int
ver_fails(char *cfg)
{
    return cfg && strcmp(cfg, "fail-on-" VERSION) == 0;
}


#ifdef NEEDS_GLOBAL
/* what a second library (a loader's addon) resolves in the global scope */
int ver_global_probe = 1;
#endif


int
libffi_init(char *cfg, void *tq)
{
    ver_runtime_t  *rt;

    if (INIT_RC != 0) {
        return INIT_RC;
    }

#ifdef TRIAL_SLEEP_MS
    /* a start as slow as a virtual machine's on a busy host, in the trial */
    if (ver_in_trial()) {
        usleep(TRIAL_SLEEP_MS * 1000);
    }
#endif

#ifdef NOISY
    /* a loader that talks: the trial's verdict must not be this */
    printf("libver " VERSION " says hello from libffi_init\n");
    fflush(stdout);

    if (ver_in_trial() && fork() == 0) {
        /* a helper that holds stdout (and all else) for a while */
        sleep(20);
        _exit(0);
    }
#endif

#ifdef NEEDS_GLOBAL
    /* as an addon that needs the loader's symbols (napi_*, Py*) */
    if (dlsym(RTLD_DEFAULT, "ver_global_probe") == NULL) {
        fprintf(stderr, "libver " VERSION ": not mapped RTLD_GLOBAL\n");
        abort();
    }
#endif

    if (cfg && strncmp(cfg, "probe:", 6) == 0) {
        ver_probe(cfg);
    }

    /* a release that crashes with one cfg only (a worker's, say) */
    if (cfg && strcmp(cfg, "crash-on-" VERSION) == 0) {
        raise(SIGSEGV);
    }

    if (cfg && strncmp(cfg, "pause:", 6) == 0) {
        ver_pause(cfg);
    }

    if (ver_fails(cfg)) {
        return 5;
    }

#ifdef CRASH_INIT
    raise(SIGSEGV);   /* a null store may be optimised away */
#endif

    rt = calloc(1, sizeof(ver_runtime_t));
    if (rt == NULL) {
        return 1;
    }

    rt->tq = tq;

    if (pthread_create(&rt->thread, NULL, ver_poll, rt) != 0) {
        free(rt);
        return 2;
    }

    pthread_mutex_lock(&ver_lock);
    rt->next = ver_runtimes;
    ver_runtimes = rt;
    pthread_mutex_unlock(&ver_lock);

    return 0;
}


__attribute__((destructor)) static void
ver_unload(void)
{
    ver_runtime_t  *rt, *next;

    for (rt = ver_runtimes; rt; rt = next) {
        next = rt->next;
        pthread_join(rt->thread, NULL);
        free(rt);
    }

    ver_runtimes = NULL;
}


#ifdef NOISY
__attribute__((constructor)) static void
ver_hello(void)
{
    printf("libver " VERSION " says hello from a constructor\n");
    fflush(stdout);
}
#endif


#ifdef CRASH_CTOR
/* a release that crashes as soon as it is mapped */
__attribute__((constructor)) static void
ver_crash(void)
{
    raise(SIGSEGV);   /* a null store may be optimised away */
}
#endif
