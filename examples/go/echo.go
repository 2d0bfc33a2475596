// Echo runtime for lua-resty-ffi written in Go, built as a C shared library:
// every request is answered with the same bytes. It also shows the runtime
// services: a standard library log.Logger that writes to nginx's error.log,
// and a start counter in the lua_shared_dict "ffi_examples" (if there is
// one: Lua reads it with ngx.shared.ffi_examples:get("go_starts")).
package main

/*
#include <stdlib.h>
#include <string.h>

// The runtime ABI is exported by the nginx module, which nginx loads with
// RTLD_GLOBAL; the linker leaves these undefined and the loader binds them.
void *ngx_http_lua_ffi_task_poll(void *tq);
char *ngx_http_lua_ffi_get_req(void *tsk, int *len);
void  ngx_http_lua_ffi_respond(void *tsk, int rc, char *rsp, int rsp_len);

// Our extensions of the ABI and the runtime services (src/ngx_http_lua_ffi.h),
// weak: a host without them (upstream's) still loads this library; the
// services answer -1 there, and tasks are taken one at a time.
#pragma weak ngx_http_lua_ffi_task_poll_batch
#pragma weak ngx_http_lua_ffi_log
#pragma weak ngx_http_lua_ffi_dict_incr
int ngx_http_lua_ffi_task_poll_batch(void *tq, void **tasks, int n);
int ngx_http_lua_ffi_log(void *tq, int level, const char *msg, int len);
int ngx_http_lua_ffi_dict_incr(void *tq, const char *dict, const char *key,
                               int key_len, double by, double init,
                               double *result);

// One batch of tasks, in C memory (it holds C pointers from one cgo call to
// the next): the host's task handles and requests, and Go's answers.
#define ECHO_BATCH 64

typedef struct {
    void  *task[ECHO_BATCH];
    char  *req[ECHO_BATCH];
    int    req_len[ECHO_BATCH];
    int    rc[ECHO_BATCH];
    char  *rsp[ECHO_BATCH];
    int    rsp_len[ECHO_BATCH];
    int    n;
} echo_batch_t;

// exchange answers the n tasks b holds, then waits for the next tasks and
// reads their requests: the host's calls for a whole batch (poll, get_req,
// respond) in one cgo call, the only one that blocks. Returns how many
// tasks b now holds; 0 is the NULL task.
static int
exchange(void *tq, echo_batch_t *b)
{
    int    i, n;
    void  *task;

    for (i = 0; i < b->n; i++) {
        ngx_http_lua_ffi_respond(b->task[i], b->rc[i], b->rsp[i],
                                 b->rsp_len[i]);
    }

    b->n = 0;

    if (ngx_http_lua_ffi_task_poll_batch != NULL) {
        n = ngx_http_lua_ffi_task_poll_batch(tq, b->task, ECHO_BATCH);

    } else {
        task = ngx_http_lua_ffi_task_poll(tq);
        b->task[0] = task;
        n = (task != NULL);
    }

    for (i = 0; i < n; i++) {
        b->req[i] = ngx_http_lua_ffi_get_req(b->task[i], &b->req_len[i]);
        if (b->req[i] == NULL) {
            b->req_len[i] = 0;
        }
    }

    b->n = n;

    return n;
}

static int
nginx_log(void *tq, int level, const char *msg, int len)
{
    if (ngx_http_lua_ffi_log == NULL) {
        return -1;
    }

    // len 0 would mean NUL-terminated: an empty line is ""
    return ngx_http_lua_ffi_log(tq, level, len ? msg : "", len);
}

static int
nginx_dict_incr(void *tq, const char *dict, const char *key, double by,
                double *result)
{
    if (ngx_http_lua_ffi_dict_incr == NULL) {
        return -1;
    }

    return ngx_http_lua_ffi_dict_incr(tq, dict, key, -1, by, 0, result);
}
*/
import "C"

import (
	"bytes"
	"log"
	"os"
	"runtime"
	"strconv"
	"unsafe"
)

// nginx's levels, as ngx_http_lua_ffi_log takes them.
const (
	levelError  = 4
	levelWarn   = 5
	levelNotice = 6
	levelInfo   = 7
)

// nginxWriter is an io.Writer onto nginx's error.log: each Write (a
// log.Logger writes one whole line at a time) is one line at its level,
// named after the runtime tq. Write from the runtime's own goroutines only
// until its NULL task: tq is the host's no more after that.
type nginxWriter struct {
	tq    unsafe.Pointer
	level C.int
}

func (w nginxWriter) Write(p []byte) (int, error) {
	line := bytes.TrimRight(p, "\n")
	var msg *C.char
	if len(line) > 0 {
		msg = (*C.char)(unsafe.Pointer(&line[0]))
	}
	C.nginx_log(w.tq, w.level, msg, C.int(len(line)))
	return len(p), nil
}

// newLogger gives runtime tq a log.Logger at one nginx level.
func newLogger(tq unsafe.Pointer, level C.int) *log.Logger {
	return log.New(nginxWriter{tq, level}, "go echo: ", 0)
}

// poll serves one runtime until its task queue hands out the NULL task.
// It takes the tasks that are waiting in one cgo call and answers them in
// the next: under load a call carries several tasks, and the call that
// blocks is made once per batch, not per task. It blocks in C between
// tasks, so it owns an OS thread for its lifetime.
func poll(tq unsafe.Pointer, b *C.echo_batch_t) {
	defer C.free(unsafe.Pointer(b))

	for C.exchange(tq, b) != 0 {
		for i := 0; i < int(b.n); i++ {
			// the request is the host's, read-only, valid until answered
			n := int(b.req_len[i])
			req := b.req[i]

			// the host free()s the response; one spare byte so that an
			// empty one is a valid NUL-terminated buffer (rsp_len 0 means
			// "NUL-terminated"). The echo copies with C's memcpy: for
			// 100 KB it took half the time of Go's copy() here.
			rsp := (*C.char)(C.malloc(C.size_t(n) + 1))
			if n > 0 {
				C.memcpy(unsafe.Pointer(rsp), unsafe.Pointer(req), C.size_t(n))
			}
			*(*C.char)(unsafe.Add(unsafe.Pointer(rsp), n)) = 0

			b.rc[i] = 0
			b.rsp[i] = rsp
			b.rsp_len[i] = C.int(n)
		}

		// a goroutine that never passes through the scheduler looks stuck
		// to the runtime's monitor (sysmon): it would take the P away
		// while exchange() blocks, every 20 us once 10 ms have passed,
		// and each next call would have to get one back (futex wakes)
		runtime.Gosched()
	}
}

// libffi_init starts one runtime. The echo needs no configuration, so cfg
// is ignored; it may be NULL.
//
//export libffi_init
func libffi_init(cfg *C.char, tq unsafe.Pointer) C.int {
	logger := newLogger(tq, levelNotice)

	dict := C.CString("ffi_examples")
	key := C.CString("go_starts")
	var starts C.double
	if C.nginx_dict_incr(tq, dict, key, 1, &starts) == 0 {
		logger.Printf("start number %d", int(starts))
	} else {
		logger.Print("start")
	}
	C.free(unsafe.Pointer(dict))
	C.free(unsafe.Pointer(key))

	// the batch is C memory (cgo's calloc does not abort on failure): no
	// memory, no runtime, and the host reports libffi_init's 1
	b := (*C.echo_batch_t)(C.calloc(1, C.sizeof_echo_batch_t))
	if b == nil {
		logger.Print("no memory for a batch")
		return 1
	}

	go poll(tq, b)
	return 0
}

// One P for the poll goroutine while it waits in C and one for everything
// else. With a single P (GOMAXPROCS is the number of CPUs the runtime may
// use: 1 when nginx binds its workers on a 2-CPU machine) sysmon takes the
// P away from every wait longer than 20 us, and each next call has to get
// one back: about 10 us of CPU a call, in futex wakes and sysmon's
// wake-ups. Two Ps suit one runtime per worker; a library run as several
// runtimes at once (other cfgs, or a restart while the old one drains)
// wants one more P per poll goroutine. A valid GOMAXPROCS in the
// environment nginx was started with is left as it is (the Go runtime
// reads the process's first environment, not what nginx.conf's `env` sets).
func init() {
	n, err := strconv.Atoi(os.Getenv("GOMAXPROCS"))
	if (err != nil || n <= 0) && runtime.GOMAXPROCS(0) < 2 {
		runtime.GOMAXPROCS(2)
	}
}

func main() {}
