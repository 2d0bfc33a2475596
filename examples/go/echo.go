// Echo runtime for lua-resty-ffi written in Go, built as a C shared library:
// every request is answered with the same bytes.
package main

/*
#include <stdlib.h>
#include <string.h>

// The runtime ABI is exported by the nginx module, which nginx loads with
// RTLD_GLOBAL; the linker leaves these undefined and the loader binds them.
void *ngx_http_lua_ffi_task_poll(void *tq);
char *ngx_http_lua_ffi_get_req(void *tsk, int *len);
void  ngx_http_lua_ffi_respond(void *tsk, int rc, char *rsp, int rsp_len);
*/
import "C"

import "unsafe"

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
	go poll(tq)
	return 0
}

func main() {}
