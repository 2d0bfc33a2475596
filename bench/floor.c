/*
 * What this machine charges for the steps an ffi call and a reload cannot
 * avoid: handing a task to another thread and back, and starting a process.
 */

#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>


#define FLOOR_SPAWNS  60

#if defined(__x86_64__) || defined(__i386__)
#define floor_pause()  __builtin_ia32_pause()
#elif defined(__aarch64__)
#define floor_pause()  __asm__ volatile ("yield")
#else
#define floor_pause()
#endif


extern char  **environ;


/* one hand-off set-up: two threads bounce a turn, on which CPUs, how */
typedef struct {
    const char     *name;
    int             cpu[2];     /* where the two threads run */
    int             spin;       /* 1: wait by spinning, 0: on a futex */
    int             neighbour;  /* a busy thread shares thread 1's CPU */
} floor_case_t;


static int            floor_turn;
static int            floor_stop;
static floor_case_t  *floor_now;
static long           floor_rounds;
static double         floor_cpu_ns[2];
static uint64_t       floor_busy_count;  /* published every 1024 loops */
static int           *floor_cpus;        /* the CPUs this process may use */
static int            floor_ncpus;


static double
floor_ns(clockid_t clock)
{
    struct timespec  ts;

    (void) clock_gettime(clock, &ts);

    return ts.tv_sec * 1e9 + ts.tv_nsec;
}


static void
floor_bind(int cpu)
{
    cpu_set_t  set;

    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    (void) pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}


/*
 * The spin is shaped like the module's queue spin (ngx_http_lua_ffi_queue_
 * spin): a pause a look, a sched_yield() every 64 looks, so that a thread
 * that shares the CPU gets it; without its time limit and on both sides,
 * so a lower bound of what spinning costs.
 */

static void
floor_wait_turn(int me)
{
    unsigned  i;

    for (i = 1; __atomic_load_n(&floor_turn, __ATOMIC_ACQUIRE) != me; i++) {
        if (!floor_now->spin) {
            (void) syscall(SYS_futex, &floor_turn, FUTEX_WAIT_PRIVATE, !me,
                           NULL, NULL, 0);
            continue;
        }

        if ((i & 63) == 0) {
            (void) sched_yield();
        }

        floor_pause();
    }
}


static void *
floor_bounce(void *arg)
{
    int     me = (int) (intptr_t) arg;
    long    n;
    double  start;

    floor_bind(floor_now->cpu[me]);
    start = floor_ns(CLOCK_THREAD_CPUTIME_ID);

    for (n = 0; n < floor_rounds; n++) {
        floor_wait_turn(me);
        __atomic_store_n(&floor_turn, !me, __ATOMIC_RELEASE);

        if (!floor_now->spin) {
            (void) syscall(SYS_futex, &floor_turn, FUTEX_WAKE_PRIVATE, 1,
                           NULL, NULL, 0);
        }
    }

    floor_cpu_ns[me] = floor_ns(CLOCK_THREAD_CPUTIME_ID) - start;

    return NULL;
}


static void
floor_start(pthread_t *t, void *(*fn)(void *), intptr_t arg)
{
    int  rc;

    rc = pthread_create(t, NULL, fn, (void *) arg);
    if (rc != 0) {
        fprintf(stderr, "floor: pthread_create: %s\n", strerror(rc));
        exit(1);
    }
}


/*
 * The saturated neighbour: counts what it gets done, and publishes the
 * count as it goes, so that a reader takes it over any window it likes.
 */

static void *
floor_busy(void *arg)
{
    uint64_t  n = 0;

    floor_bind((int) (intptr_t) arg);

    while (!__atomic_load_n(&floor_stop, __ATOMIC_RELAXED)) {
        if ((++n & 1023) == 0) {
            __atomic_store_n(&floor_busy_count, n, __ATOMIC_RELAXED);
        }
    }

    return NULL;
}


/* what the neighbour gets done a second, over secs, alone on its CPU */
static double
floor_busy_rate(int cpu, double secs)
{
    uint64_t   n0;
    pthread_t  busy;
    double     t0;

    floor_stop = 0;
    floor_busy_count = 0;
    floor_start(&busy, floor_busy, cpu);
    (void) usleep(10000);

    n0 = __atomic_load_n(&floor_busy_count, __ATOMIC_RELAXED);
    t0 = floor_ns(CLOCK_MONOTONIC);
    (void) usleep((useconds_t) (secs * 1e6));
    n0 = __atomic_load_n(&floor_busy_count, __ATOMIC_RELAXED) - n0;
    t0 = floor_ns(CLOCK_MONOTONIC) - t0;

    __atomic_store_n(&floor_stop, 1, __ATOMIC_RELEASE);
    (void) pthread_join(busy, NULL);

    return n0 / (t0 / 1e9);
}


/* one run of rounds round trips: its wall time, the neighbour's count */
static double
floor_bounce_run(floor_case_t *c, long rounds, uint64_t *busy_done)
{
    uint64_t   n0;
    pthread_t  t[2], busy;
    double     start, wall;

    floor_rounds = rounds;
    floor_turn = 0;
    floor_stop = 0;
    floor_busy_count = 0;

    if (c->neighbour) {
        floor_start(&busy, floor_busy, c->cpu[1]);
        (void) usleep(10000);
    }

    n0 = __atomic_load_n(&floor_busy_count, __ATOMIC_RELAXED);
    start = floor_ns(CLOCK_MONOTONIC);
    floor_start(&t[0], floor_bounce, 0);
    floor_start(&t[1], floor_bounce, 1);
    (void) pthread_join(t[0], NULL);
    (void) pthread_join(t[1], NULL);
    wall = floor_ns(CLOCK_MONOTONIC) - start;
    *busy_done = __atomic_load_n(&floor_busy_count, __ATOMIC_RELAXED) - n0;

    __atomic_store_n(&floor_stop, 1, __ATOMIC_RELEASE);
    if (c->neighbour) {
        (void) pthread_join(busy, NULL);
    }

    return wall;
}


static void
floor_handoff(floor_case_t *c, double secs)
{
    long      rounds;
    double    wall, alone;
    uint64_t  done;

    floor_now = c;

    /* short runs find how many rounds take about secs */
    for (rounds = 1000; ; rounds *= 4) {
        wall = floor_bounce_run(c, rounds, &done);
        if (wall > secs * 1e9 / 16 || rounds > 100000000) {
            break;
        }
    }

    rounds = (long) (rounds * (secs * 1e9 / wall));
    if (rounds < 1000) {
        rounds = 1000;
    }

    wall = floor_bounce_run(c, rounds, &done);

    printf("{\"what\": \"handoff\", \"name\": \"%s\", \"cpus\": [%d, %d], "
           "\"rounds\": %ld, \"wall_us\": %.3f, \"cpu_us\": %.3f",
           c->name, c->cpu[0], c->cpu[1], rounds, wall / rounds / 1e3,
           (floor_cpu_ns[0] + floor_cpu_ns[1]) / rounds / 1e3);

    if (c->neighbour) {
        /* the neighbour alone, right after, over as long a time */
        alone = floor_busy_rate(c->cpu[1], wall / 1e9);
        printf(", \"neighbour_lost_us\": %.3f",
               alone > 0 ? (1 - done / (wall / 1e9) / alone)
                           * wall / rounds / 1e3 : 0.0);
    }

    printf("}\n");
    (void) fflush(stdout);
}


static int
floor_cmp(const void *a, const void *b)
{
    double  x = *(const double *) a, y = *(const double *) b;

    return (x > y) - (x < y);
}


/*
 * posix_spawn() of this program, until the child's main() runs (it
 * writes its clock to a pipe): what the trial of a reload costs before
 * any library is mapped. busy: threads that keep every CPU busy.
 */

static void
floor_spawn(const char *self, int busy)
{
    int                          i, n, fd[2];
    double                       t0, t1, ms[FLOOR_SPAWNS];
    pid_t                        pid;
    pthread_t                   *th;
    posix_spawn_file_actions_t   fa;
    char                        *argv[] = { "floor", "--child", NULL };

    n = busy * floor_ncpus;
    th = calloc(n + 1, sizeof(pthread_t));
    if (th == NULL) {
        perror("calloc");
        exit(1);
    }

    floor_stop = 0;
    for (i = 0; i < n; i++) {
        floor_start(&th[i], floor_busy, floor_cpus[i % floor_ncpus]);
    }

    for (i = 0; i < FLOOR_SPAWNS; i++) {
        if (pipe(fd) != 0) {
            perror("pipe");
            exit(1);
        }

        (void) posix_spawn_file_actions_init(&fa);
        (void) posix_spawn_file_actions_adddup2(&fa, fd[1], 1);

        t0 = floor_ns(CLOCK_MONOTONIC);

        if (posix_spawn(&pid, self, &fa, NULL, argv, environ) != 0) {
            fprintf(stderr, "floor: spawn of %s failed\n", self);
            exit(1);
        }

        (void) close(fd[1]);

        if (read(fd[0], &t1, sizeof(t1)) != sizeof(t1)) {
            fprintf(stderr, "floor: %s --child said nothing\n", self);
            exit(1);
        }

        ms[i] = (t1 - t0) / 1e6;
        (void) close(fd[0]);
        (void) waitpid(pid, NULL, 0);
        (void) posix_spawn_file_actions_destroy(&fa);
    }

    __atomic_store_n(&floor_stop, 1, __ATOMIC_RELEASE);
    for (i = 0; i < n; i++) {
        (void) pthread_join(th[i], NULL);
    }

    free(th);

    qsort(ms, FLOOR_SPAWNS, sizeof(double), floor_cmp);

    printf("{\"what\": \"spawn\", \"busy_per_cpu\": %d, \"spawns\": %d, "
           "\"median_ms\": %.3f, \"p90_ms\": %.3f, \"max_ms\": %.3f}\n",
           busy, FLOOR_SPAWNS, ms[FLOOR_SPAWNS / 2],
           ms[FLOOR_SPAWNS * 9 / 10], ms[FLOOR_SPAWNS - 1]);
    (void) fflush(stdout);
}


int
main(int argc, char **argv)
{
    int           i;
    double        secs, t;
    cpu_set_t     set;
    floor_case_t  cases[] = {
        { "futex, one CPU", { 0, 0 }, 0, 0 },
        { "futex, two CPUs", { 0, 0 }, 0, 0 },
        { "spin, two CPUs", { 0, 0 }, 1, 0 },
        { "futex, two CPUs, busy neighbour", { 0, 0 }, 0, 1 },
        { "spin, two CPUs, busy neighbour", { 0, 0 }, 1, 1 },
    };

    if (argc == 2 && strcmp(argv[1], "--child") == 0) {
        t = floor_ns(CLOCK_MONOTONIC);
        return write(1, &t, sizeof(t)) == sizeof(t) ? 0 : 1;
    }

    secs = (argc == 2) ? atof(argv[1]) : 0.5;
    if (argc > 2 || secs <= 0) {
        fprintf(stderr, "usage: %s [SECONDS_PER_CASE]\n", argv[0]);
        return 2;
    }

    /* the CPUs this process may use (taskset, a cpuset) */
    if (sched_getaffinity(0, sizeof(set), &set) != 0) {
        perror("sched_getaffinity");
        return 1;
    }

    floor_cpus = calloc(CPU_SETSIZE, sizeof(int));
    if (floor_cpus == NULL) {
        perror("calloc");
        return 1;
    }

    for (i = 0; i < CPU_SETSIZE; i++) {
        if (CPU_ISSET(i, &set)) {
            floor_cpus[floor_ncpus++] = i;
        }
    }

    /* one CPU: only the first case means anything */
    for (i = 0; i < (int) (sizeof(cases) / sizeof(cases[0])); i++) {
        if (i > 0 && floor_ncpus < 2) {
            break;
        }

        cases[i].cpu[0] = floor_cpus[0];
        cases[i].cpu[1] = (i == 0) ? floor_cpus[0] : floor_cpus[1];
        floor_handoff(&cases[i], secs);
    }

    floor_spawn("/proc/self/exe", 0);
    floor_spawn("/proc/self/exe", 1);

    return 0;
}
