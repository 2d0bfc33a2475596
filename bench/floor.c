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
static uint64_t       floor_busy_count;


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
 * The spin is the module's queue spin (ngx_http_lua_ffi_queue_spin): a
 * pause per look, a sched_yield() every 64 looks, so that a thread that
 * shares the CPU gets it.
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

        __builtin_ia32_pause();
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


/* the saturated neighbour: counts what it gets done */
static void *
floor_busy(void *arg)
{
    uint64_t  n = 0;

    floor_bind((int) (intptr_t) arg);

    while (!__atomic_load_n(&floor_stop, __ATOMIC_RELAXED)) {
        n++;
    }

    __atomic_store_n(&floor_busy_count, n, __ATOMIC_RELEASE);

    return NULL;
}


static uint64_t
floor_busy_rate(int cpu, double secs)
{
    pthread_t  busy;
    double     start;

    floor_stop = 0;
    start = floor_ns(CLOCK_MONOTONIC);
    (void) pthread_create(&busy, NULL, floor_busy, (void *) (intptr_t) cpu);
    (void) usleep((useconds_t) (secs * 1e6));
    __atomic_store_n(&floor_stop, 1, __ATOMIC_RELEASE);
    (void) pthread_join(busy, NULL);

    return floor_busy_count / ((floor_ns(CLOCK_MONOTONIC) - start) / 1e9);
}


static void
floor_handoff(floor_case_t *c, double secs)
{
    long       rounds;
    double     start, wall, alone, with;
    pthread_t  t[2], busy;

    floor_now = c;
    alone = c->neighbour ? floor_busy_rate(c->cpu[1], secs) : 0;

    /* a short first run sets the rounds so that the real one takes secs */
    for (rounds = 1000; ; rounds *= 4) {
        floor_rounds = rounds;
        floor_turn = 0;
        floor_stop = 0;

        if (c->neighbour) {
            (void) pthread_create(&busy, NULL, floor_busy,
                                  (void *) (intptr_t) c->cpu[1]);
        }

        start = floor_ns(CLOCK_MONOTONIC);
        (void) pthread_create(&t[0], NULL, floor_bounce, (void *) 0);
        (void) pthread_create(&t[1], NULL, floor_bounce, (void *) 1);
        (void) pthread_join(t[0], NULL);
        (void) pthread_join(t[1], NULL);
        wall = floor_ns(CLOCK_MONOTONIC) - start;

        __atomic_store_n(&floor_stop, 1, __ATOMIC_RELEASE);
        if (c->neighbour) {
            (void) pthread_join(busy, NULL);
        }

        if (wall > secs * 1e9 / 8 || rounds > 100000000) {
            break;
        }
    }

    printf("{\"what\": \"handoff\", \"name\": \"%s\", \"cpus\": [%d, %d], "
           "\"rounds\": %ld, \"wall_us\": %.3f, \"cpu_us\": %.3f",
           c->name, c->cpu[0], c->cpu[1], rounds, wall / rounds / 1e3,
           (floor_cpu_ns[0] + floor_cpu_ns[1]) / rounds / 1e3);

    if (c->neighbour) {
        with = floor_busy_count / (wall / 1e9);
        printf(", \"neighbour_lost_us\": %.3f",
               alone > 0 ? (1 - with / alone) * wall / rounds / 1e3 : 0.0);
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
floor_spawn(const char *self, int ncpus, int busy)
{
    int                          i, fd[2];
    double                       t0, t1, ms[FLOOR_SPAWNS];
    pid_t                        pid;
    pthread_t                    th[64];
    posix_spawn_file_actions_t   fa;
    char                        *argv[] = { "floor", "--child", NULL };

    floor_stop = 0;
    for (i = 0; i < busy * ncpus && i < 64; i++) {
        (void) pthread_create(&th[i], NULL, floor_busy,
                              (void *) (intptr_t) (i % ncpus));
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
    for (i = 0; i < busy * ncpus && i < 64; i++) {
        (void) pthread_join(th[i], NULL);
    }

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
    int           i, n, cpus[2];
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

    /* the first two CPUs this process may use */
    if (sched_getaffinity(0, sizeof(set), &set) != 0) {
        perror("sched_getaffinity");
        return 1;
    }

    for (i = 0, n = 0; i < CPU_SETSIZE && n < 2; i++) {
        if (CPU_ISSET(i, &set)) {
            cpus[n++] = i;
        }
    }

    for (i = 0; i < (int) (sizeof(cases) / sizeof(cases[0])); i++) {
        cases[i].cpu[0] = cpus[0];
        cases[i].cpu[1] = (i == 0 || n < 2) ? cpus[0] : cpus[1];

        if (i > 0 && n < 2) {
            continue;
        }

        floor_handoff(&cases[i], secs);
    }

    floor_spawn("/proc/self/exe", CPU_COUNT(&set), 0);
    floor_spawn("/proc/self/exe", CPU_COUNT(&set), 1);

    return 0;
}
