# Echo runtime for lua-resty-ffi's Python loader, written upstream's way:
# init(cfg, tq) starts a poll thread that calls the runtime ABI via cffi.

import threading

from cffi import FFI

ffi = FFI()
ffi.cdef("""
void *malloc(size_t size);
void *ngx_http_lua_ffi_task_poll(void *tq);
char *ngx_http_lua_ffi_get_req(void *tsk, int *len);
void ngx_http_lua_ffi_respond(void *tsk, int rc, char *rsp, int rsp_len);
""")

# nginx loads the module that exports the ABI with RTLD_GLOBAL, so the
# process's global symbols have it; cffi releases the GIL around each call.
C = ffi.dlopen(None)


def poll(tq):
    length = ffi.new("int *")
    while True:
        task = C.ngx_http_lua_ffi_task_poll(tq)
        if task == ffi.NULL:
            return  # the runtime is unloaded: tq is gone, leave now
        req = C.ngx_http_lua_ffi_get_req(task, length)
        n = length[0]
        # the module frees the response; the extra NUL makes an empty
        # request an empty string (rsp_len 0 means NUL-terminated)
        rsp = ffi.cast("char *", C.malloc(n + 1))
        if n > 0:
            ffi.memmove(rsp, req, n)
        rsp[n] = b"\0"
        C.ngx_http_lua_ffi_respond(task, 0, rsp, n)


def init(cfg, tq):
    # cfg: address of the text after "ffi.echo?,init," (0: none); unused
    threading.Thread(target=poll, args=(ffi.cast("void *", tq),),
                     name="ffi.echo", daemon=True).start()
    return 0
