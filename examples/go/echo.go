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

// The runtime services (src/ngx_http_lua_ffi.h), weak: a host without them
// (upstream's) still loads this library, and they answer -1 there.
#pragma weak ngx_http_lua_ffi_log
#pragma weak ngx_http_lua_ffi_dict_incr
int ngx_http_lua_ffi_log(void *tq, int level, const char *msg, int len);
int ngx_http_lua_ffi_dict_incr(void *tq, const char *dict, const char *key,
                               int key_len, double by, double init,
                               double *result);

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
// It blocks in C between tasks, so it owns an OS thread for its lifetime.
func poll(tq unsafe.Pointer) {
	for {
		task := C.ngx_http_lua_ffi_task_poll(tq)
		if task == nil {
			return
		}

		var n C.int
		req := C.ngx_http_lua_ffi_get_req(task, &n)

		// One spare byte so that an empty request still gets a valid
		// NUL-terminated buffer (rsp_len 0 means "NUL-terminated").
		rsp := (*C.char)(C.malloc(C.size_t(n) + 1))
		if req != nil && n > 0 {
			C.memcpy(unsafe.Pointer(rsp), unsafe.Pointer(req), C.size_t(n))
		}
		*(*C.char)(unsafe.Add(unsafe.Pointer(rsp), n)) = 0

		C.ngx_http_lua_ffi_respond(task, 0, rsp, n)
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

	go poll(tq)
	return 0
}

func main() {}
