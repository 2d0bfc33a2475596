/*
 * Where the threads of libraries run (ffi_runtime_cpus): off their worker's
 * CPU by default, so a worker bound by worker_cpu_affinity and its runtime
 * do not take turns on one core.
 *
 * A new thread inherits the CPU set of the thread that creates it. Library
 * code runs on the worker's thread only in dlopen() (constructors) and in
 * libffi_init(); every later thread is started from one of the library's
 * own threads (calls are served there, never on the worker's thread). So
 * the worker's thread takes the runtime set for those two moments and its
 * own set back after them: two syscalls a load, none a call.
 */

#include "ngx_http_lua_ffi_module.h"


typedef struct {
    cpu_set_t   worker;      /* the event loop's, as nginx bound it */
    cpu_set_t   runtime;     /* what threads of libraries inherit */
    unsigned    differ:1;    /* switched around library code */
    unsigned    apart:1;     /* runtime may use a CPU the worker does not */
    unsigned    logged:1;    /* a failed switch was logged */
} ngx_http_lua_ffi_cpus_t;


static ngx_int_t ngx_http_lua_ffi_cpus_parse(ngx_str_t *s, cpu_set_t *set);


static ngx_http_lua_ffi_cpus_t  ngx_http_lua_ffi_cpus;


/*
 * "0-3,6": CPU numbers and ranges, as taskset -c takes them and
 * /proc/PID/status (Cpus_allowed_list) writes them.
 */

char *
ngx_http_lua_ffi_cpus_conf(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_lua_ffi_main_conf_t  *fmcf = conf;

    int         cpu;
    u_char      buf[NGX_HTTP_LUA_FFI_ERRLEN], *p;
    cpu_set_t   nginx, *set;
    ngx_str_t  *value;

    if (fmcf->runtime_cpus != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "inherit") == 0) {
        fmcf->runtime_cpus = NULL;
        return NGX_CONF_OK;
    }

    set = ngx_pcalloc(cf->pool, sizeof(cpu_set_t));
    if (set == NULL) {
        return NGX_CONF_ERROR;
    }

    if (ngx_http_lua_ffi_cpus_parse(&value[1], set) != NGX_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid CPU list \"%V\" in \"%V\": CPU numbers "
                           "and ranges below %d expected, like 0-3,6, or "
                           "\"inherit\"", &value[1], &cmd->name, CPU_SETSIZE);
        return NGX_CONF_ERROR;
    }

    /* a CPU nobody may use would fail in every worker, later */
    if (sched_getaffinity(0, sizeof(cpu_set_t), &nginx) == 0) {
        for (cpu = 0; cpu < CPU_SETSIZE; cpu++) {
            if (CPU_ISSET(cpu, set) && !CPU_ISSET(cpu, &nginx)) {
                p = ngx_http_lua_ffi_cpus_print(buf, buf + sizeof(buf) - 1,
                                                &nginx);
                *p = '\0';
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "\"%V\" names CPU %d, which nginx may not "
                                   "use (it may use %s)", &cmd->name, cpu,
                                   buf);
                return NGX_CONF_ERROR;
            }
        }
    }

    fmcf->runtime_cpus = set;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_lua_ffi_cpus_parse(ngx_str_t *s, cpu_set_t *set)
{
    u_char      *p, *last;
    ngx_int_t    lo, hi, n, cpu;
    ngx_uint_t   range;

    p = s->data;
    last = p + s->len;

    for ( ;; ) {
        lo = -1;
        range = 0;

        for ( ;; ) {
            if (p == last || *p < '0' || *p > '9') {
                return NGX_ERROR;
            }

            for (n = 0; p < last && *p >= '0' && *p <= '9'; p++) {
                n = n * 10 + (*p - '0');
                if (n >= CPU_SETSIZE) {
                    return NGX_ERROR;
                }
            }

            if (range || p == last || *p != '-') {
                break;
            }

            lo = n;
            range = 1;
            p++;
        }

        hi = n;
        if (lo == -1) {
            lo = n;
        }

        if (lo > hi) {
            return NGX_ERROR;
        }

        for (cpu = lo; cpu <= hi; cpu++) {
            CPU_SET(cpu, set);
        }

        if (p == last) {
            return NGX_OK;
        }

        if (*p++ != ',') {
            return NGX_ERROR;
        }
    }
}


/* A set as a CPU list: "0-3,6". */

u_char *
ngx_http_lua_ffi_cpus_print(u_char *p, u_char *last, cpu_set_t *set)
{
    int   cpu, hi;
    char  *sep;

    sep = "";

    for (cpu = 0; cpu < CPU_SETSIZE; cpu++) {
        if (!CPU_ISSET(cpu, set)) {
            continue;
        }

        for (hi = cpu; hi + 1 < CPU_SETSIZE && CPU_ISSET(hi + 1, set); hi++) {
            /* void */
        }

        if (hi == cpu) {
            p = ngx_slprintf(p, last, "%s%d", sep, cpu);

        } else {
            p = ngx_slprintf(p, last, "%s%d-%d", sep, cpu, hi);
        }

        sep = ",";
        cpu = hi;
    }

    return p;
}


/*
 * In the worker, after nginx bound it (ngx_worker_process_init applies
 * worker_cpu_affinity before any module's init_process) and before a
 * library can be mapped. nginx's set is the master's, read when the
 * configuration was.
 */

void
ngx_http_lua_ffi_cpus_init_worker(ngx_cycle_t *cycle,
    ngx_http_lua_ffi_main_conf_t *fmcf)
{
    cpu_set_t                 rest;
    ngx_http_lua_ffi_cpus_t  *c = &ngx_http_lua_ffi_cpus;

    ngx_memzero(c, sizeof(ngx_http_lua_ffi_cpus_t));

    if (sched_getaffinity(0, sizeof(cpu_set_t), &c->worker) == -1) {
        ngx_log_error(NGX_LOG_WARN, cycle->log, ngx_errno,
                      "ffi: sched_getaffinity() failed: library threads "
                      "run where the worker does");
        return;
    }

    c->runtime = c->worker;

    if (fmcf->runtime_cpus == NULL) {
        /* inherit */

    } else if (fmcf->runtime_cpus != NGX_CONF_UNSET_PTR) {
        c->runtime = *fmcf->runtime_cpus;

    } else if (fmcf->nginx_cpus_known && CPU_COUNT(&fmcf->nginx_cpus) > 1) {
        CPU_XOR(&rest, &fmcf->nginx_cpus, &c->worker);
        CPU_AND(&rest, &rest, &fmcf->nginx_cpus);

        /* a worker bound to every CPU nginx has leaves nothing to avoid */
        c->runtime = CPU_COUNT(&rest) ? rest : fmcf->nginx_cpus;
    }

    /* both may be on two CPUs at once unless both have the same one only */
    c->apart = !(CPU_COUNT(&c->worker) == 1 && CPU_EQUAL(&c->worker,
                                                         &c->runtime));

    c->differ = !CPU_EQUAL(&c->runtime, &c->worker);
}


/*
 * Whether a spinning poller can meet its peer running: spinning and busy
 * polling pay only when the runtime's threads and the event loop may run
 * on two CPUs at once, never when both are confined to the same one.
 */

ngx_uint_t
ngx_http_lua_ffi_cpus_apart(void)
{
    return ngx_http_lua_ffi_cpus.apart;
}


u_char *
ngx_http_lua_ffi_cpus_describe(u_char *p, u_char *last)
{
    ngx_http_lua_ffi_cpus_t  *c = &ngx_http_lua_ffi_cpus;

    p = ngx_slprintf(p, last, "runtime threads on CPUs ");
    p = ngx_http_lua_ffi_cpus_print(p, last, &c->runtime);
    p = ngx_slprintf(p, last, " (worker on ");
    p = ngx_http_lua_ffi_cpus_print(p, last, &c->worker);

    return ngx_slprintf(p, last, ")");
}


/* Around library code on the worker's thread: dlopen() and libffi_init(). */

void
ngx_http_lua_ffi_cpus_enter(void)
{
    ngx_http_lua_ffi_cpus_t  *c = &ngx_http_lua_ffi_cpus;

    if (c->differ
        && sched_setaffinity(0, sizeof(cpu_set_t), &c->runtime) == -1
        && !c->logged)
    {
        c->logged = 1;
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, ngx_errno,
                      "ffi: sched_setaffinity() failed: library threads "
                      "start where the worker runs");
    }
}


void
ngx_http_lua_ffi_cpus_leave(void)
{
    ngx_http_lua_ffi_cpus_t  *c = &ngx_http_lua_ffi_cpus;

    if (c->differ
        && sched_setaffinity(0, sizeof(cpu_set_t), &c->worker) == -1)
    {
        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, ngx_errno,
                      "ffi: sched_setaffinity() failed: the worker could "
                      "not take its own CPUs back");
    }
}
