
/*
 * ELF inspector: decides from a library file alone, before any dlopen(),
 * whether it may be loaded, what its GNU build-id is and why it is pinned.
 */


#ifndef _NGX_HTTP_LUA_FFI_ELF_H_INCLUDED_
#define _NGX_HTTP_LUA_FFI_ELF_H_INCLUDED_


#include <stddef.h>


/*
 * Plain C on purpose: no nginx headers, so the same file serves the module,
 * the ffi-elf-check tool and the fuzz target.  Not thread-safe (libelf's
 * version handshake is a global); the module calls it from the event loop.
 */


#define NGX_HTTP_LUA_FFI_ELF_ERRLEN  256


/* why an image can never be unloaded: its runtime cannot be torn down */
typedef enum {
    NGX_HTTP_LUA_FFI_PIN_NONE = 0,
    NGX_HTTP_LUA_FFI_PIN_GO,        /* Go runtime: .go.buildinfo & co */
    NGX_HTTP_LUA_FFI_PIN_JVM,       /* DT_NEEDED libjvm.so */
    NGX_HTTP_LUA_FFI_PIN_NODE,      /* DT_NEEDED libnode.so* */
    NGX_HTTP_LUA_FFI_PIN_PYTHON     /* DT_NEEDED libpython3* */
} ngx_http_lua_ffi_pin_reason_e;


typedef struct {
    ngx_http_lua_ffi_pin_reason_e  pin_reason;

    /* lowercase hex GNU build-id, "" when none (at most 20 bytes shown) */
    char                           build_id[41];

    /* set when the check fails: one sentence, found vs expected */
    char                           error[NGX_HTTP_LUA_FFI_ELF_ERRLEN];
} ngx_http_lua_ffi_elf_info_t;


/*
 * 0: the image may be dlopen()ed; -1: refused, info->error says why.
 * Never reads outside [data, data + len) and never crashes on any input.
 */
int ngx_http_lua_ffi_elf_inspect_mem(const void *data, size_t len,
    ngx_http_lua_ffi_elf_info_t *info);

/* reads the whole file from offset 0 (the fd's offset is left alone) */
int ngx_http_lua_ffi_elf_inspect_fd(int fd,
    ngx_http_lua_ffi_elf_info_t *info);

/* "go", "jvm", "node", "python"; "" for NGX_HTTP_LUA_FFI_PIN_NONE */
const char *ngx_http_lua_ffi_pin_reason_name(
    ngx_http_lua_ffi_pin_reason_e r);


#endif /* _NGX_HTTP_LUA_FFI_ELF_H_INCLUDED_ */
