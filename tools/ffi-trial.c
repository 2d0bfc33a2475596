/*
 * ffi-trial: maps a library in a short-lived process of its own and runs
 * its constructors and libffi_init, so that a crash there costs no worker.
 */

#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>


/*
 * usage: ffi-trial [-g] SHADOW LIBRARY
 *   -g       map the library with RTLD_GLOBAL, as workers will (is_global)
 *   fd 0     the cfgs, each "N\n" then N bytes, or "-\n" for a nil cfg;
 *            never on the command line: /proc/PID/cmdline is world-readable
 *   fd 3     the verdict, one line: "ok", "dlopen: ...", "no libffi_init",
 *            "init N returned RC"; a crash writes nothing
 * Whatever the library prints goes to fds 1 and 2 (the worker's error log):
 * its output can never be taken for the verdict.
 */

#define TRIAL_MAX_CFGS   64
#define TRIAL_MAX_CFG    (1024 * 1024)


typedef struct {
    pthread_mutex_t  mutex;
    pthread_cond_t   cond;
    int              closed;
} trial_queue_t;


static const char  *trial_library;
static int          trial_verdict = -1;


/* The runtime ABI, as the host has it; the trial queues only ever close. */

void *
ngx_http_lua_ffi_task_poll(void *tq)
{
    trial_queue_t  *q = tq;

    pthread_mutex_lock(&q->mutex);

    while (!q->closed) {
        pthread_cond_wait(&q->cond, &q->mutex);
    }

    pthread_mutex_unlock(&q->mutex);

    return NULL;
}


int
ngx_http_lua_ffi_task_poll_batch(void *tq, void **tasks, int n)
{
    (void) tasks;
    (void) n;

    ngx_http_lua_ffi_task_poll(tq);

    return 0;
}


char *
ngx_http_lua_ffi_get_req(void *tsk, int *len)
{
    (void) tsk;

    if (len) {
        *len = 0;
    }

    return NULL;
}


void
ngx_http_lua_ffi_respond(void *tsk, int rc, char *rsp, int rsp_len)
{
    (void) tsk;
    (void) rc;
    (void) rsp_len;

    free(rsp);
}


const char *
ngx_http_lua_ffi_library_path(void *tq)
{
    (void) tq;

    return trial_library;
}


/*
 * The runtime services, so that a library that resolves them in
 * libffi_init passes its trial. Log lines are kept and printed to stderr
 * (the worker's error.log) only when an init fails: they may say why, and
 * a successful trial adds nothing to the lines the real init will log.
 * Shared dicts do not exist here (ENODICT, -1).
 */

#define TRIAL_LOG_MAX  65536

static pthread_mutex_t  trial_log_mutex = PTHREAD_MUTEX_INITIALIZER;
static char             trial_log[TRIAL_LOG_MAX];
static size_t           trial_log_len;


int
ngx_http_lua_ffi_log(void *tq, int level, const char *msg, int len)
{
    int  n;

    (void) tq;

    if (level < 1 || level > 8 || msg == NULL || len < 0) {
        return -1;
    }

    pthread_mutex_lock(&trial_log_mutex);

    n = snprintf(trial_log + trial_log_len, TRIAL_LOG_MAX - trial_log_len,
                 "ffi-trial: %s: %.*s\n", trial_library,
                 len ? len : (int) strlen(msg), msg);

    if (n < 0 || (size_t) n >= TRIAL_LOG_MAX - trial_log_len) {
        trial_log[trial_log_len] = '\0';
        pthread_mutex_unlock(&trial_log_mutex);
        return -1;
    }

    trial_log_len += n;

    pthread_mutex_unlock(&trial_log_mutex);

    return 0;
}


static void
trial_say(const char *fmt, const char *s, int n)
{
    int   len;
    char  line[512];

    len = snprintf(line, sizeof(line), fmt, s, n);
    if (len >= (int) sizeof(line)) {
        len = sizeof(line) - 1;
        line[len - 1] = '\n';
    }

    if (write(trial_verdict, line, len) != len) {
        _exit(1);
    }

    /* no destructors, no joins: the library's threads die with us */
    _exit(0);
}


static int
trial_read(int fd, char *buf, size_t len)
{
    ssize_t  n;

    while (len) {
        n = read(fd, buf, len);
        if (n <= 0) {
            return -1;
        }

        buf += n;
        len -= n;
    }

    return 0;
}


static void
trial_log_print(void)
{
    pthread_mutex_lock(&trial_log_mutex);
    fwrite(trial_log, 1, trial_log_len, stderr);
    fflush(stderr);
    pthread_mutex_unlock(&trial_log_mutex);
}


int
ngx_http_lua_ffi_dict_get(void *tq, const char *dict, const char *key,
    int key_len, char **val, int *val_len)
{
    (void) tq;
    (void) dict;
    (void) key;
    (void) key_len;

    if (val) {
        *val = NULL;
    }

    if (val_len) {
        *val_len = 0;
    }

    return -1;
}


int
ngx_http_lua_ffi_dict_set(void *tq, const char *dict, const char *key,
    int key_len, const char *val, int val_len, double exptime)
{
    (void) tq;
    (void) dict;
    (void) key;
    (void) key_len;
    (void) val;
    (void) val_len;
    (void) exptime;

    return -1;
}


int
ngx_http_lua_ffi_dict_incr(void *tq, const char *dict, const char *key,
    int key_len, double by, double init, double *result)
{
    (void) tq;
    (void) dict;
    (void) key;
    (void) key_len;
    (void) by;
    (void) init;

    if (result) {
        *result = 0;
    }

    return -1;
}


/* The cfgs from fd 0: read whole before any code of the library runs. */

static int
trial_cfgs(char **cfgs)
{
    int     n;
    char    c, head[16];
    size_t  i, len;

    for (n = 0; n < TRIAL_MAX_CFGS; n++) {
        for (i = 0; i < sizeof(head) - 1; i++) {
            if (read(0, &c, 1) != 1) {
                return (i == 0) ? n : -1;
            }

            if (c == '\n') {
                break;
            }

            head[i] = c;
        }

        head[i] = '\0';

        if (strcmp(head, "-") == 0) {
            cfgs[n] = NULL;
            continue;
        }

        len = strtoul(head, NULL, 10);
        if (len > TRIAL_MAX_CFG) {
            return -1;
        }

        cfgs[n] = malloc(len + 1);
        if (cfgs[n] == NULL || trial_read(0, cfgs[n], len) != 0) {
            return -1;
        }

        cfgs[n][len] = '\0';
    }

    return n;
}


int
main(int argc, char **argv)
{
    int             i, n, rc, mode, null;
    char           *cfgs[TRIAL_MAX_CFGS];
    void           *dl;
    int           (*init)(char *, void *);
    char            num[16];
    trial_queue_t  *q;

    mode = RTLD_NOW | RTLD_LOCAL;

    if (argc > 1 && strcmp(argv[1], "-g") == 0) {
        mode = RTLD_NOW | RTLD_GLOBAL;
        argv++;
        argc--;
    }

    if (argc != 3) {
        fprintf(stderr, "usage: ffi-trial [-g] SHADOW LIBRARY\n");
        return 2;
    }

    /*
     * The verdict moves out of the way, closed on exec: a library that
     * opens files gets fd 3, and a helper it execs never holds the verdict.
     */
    trial_verdict = fcntl(3, F_DUPFD_CLOEXEC, 10);
    if (trial_verdict == -1) {
        /* RLIMIT_NOFILE below 10 (worker_rlimit_nofile) */
        trial_verdict = fcntl(3, F_DUPFD_CLOEXEC, 5);
        if (trial_verdict == -1) {
            return 2;
        }
    }

    (void) close(3);

    trial_library = argv[2];

    n = trial_cfgs(cfgs);
    if (n < 0) {
        trial_say("bad cfg input%s%.0d\n", "", 0);
    }

    /* nothing of the library reads the worker's stdin */
    null = open("/dev/null", O_RDONLY);
    if (null != -1) {
        (void) dup2(null, 0);
        (void) close(null);
    }

    if (n == 0) {
        cfgs[n++] = NULL;
    }

    dl = dlopen(argv[1], mode);
    if (dl == NULL) {
        trial_say("dlopen: %s%.0d\n", dlerror(), 0);
    }

    *(void **) &init = dlsym(dl, "libffi_init");
    if (init == NULL) {
        trial_say("no libffi_init%s%.0d\n", "", 0);
    }

    for (i = 0; i < n; i++) {
        q = calloc(1, sizeof(trial_queue_t));
        if (q == NULL) {
            _exit(1);
        }

        pthread_mutex_init(&q->mutex, NULL);
        pthread_cond_init(&q->cond, NULL);

        rc = init(cfgs[i], q);

        /* the NULL task at once: a runtime may start to stop, that's all */
        pthread_mutex_lock(&q->mutex);
        q->closed = 1;
        pthread_cond_broadcast(&q->cond);
        pthread_mutex_unlock(&q->mutex);

        if (rc != 0) {
            trial_log_print();
            snprintf(num, sizeof(num), "%d", i);
            trial_say("init %s returned %d\n", num, rc);
        }
    }

    trial_say("ok%s%.0d\n", "", 0);

    return 0;
}
