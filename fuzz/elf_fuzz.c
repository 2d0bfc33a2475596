
/*
 * libFuzzer target for the ELF inspector: any byte string must give a clean
 * verdict, never a crash, an overread or a malformed result.
 */


#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ngx_http_lua_ffi_elf.h"


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int                          rc;
    size_t                       n;
    ngx_http_lua_ffi_elf_info_t  info;

    /* garbage in the result must not pass for a verdict */
    memset(&info, 0xa5, sizeof(info));

    rc = ngx_http_lua_ffi_elf_inspect_mem(data, size, &info);

    n = strnlen(info.build_id, sizeof(info.build_id));
    if (n == sizeof(info.build_id) || n % 2 != 0
        || strspn(info.build_id, "0123456789abcdef") != n)
    {
        abort();
    }

    n = strnlen(info.error, sizeof(info.error));
    if (n == sizeof(info.error)) {
        abort();
    }

    /* a refusal always says why; an acceptance never carries an error */
    if ((rc == -1 && n == 0) || (rc == 0 && n != 0)
        || (rc != 0 && rc != -1))
    {
        abort();
    }

    if (rc == -1 && info.pin_reason != NGX_HTTP_LUA_FFI_PIN_NONE) {
        abort();
    }

    if ((unsigned) info.pin_reason > NGX_HTTP_LUA_FFI_PIN_PYTHON) {
        abort();
    }

    return 0;
}
