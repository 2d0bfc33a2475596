
/*
 * ffi-elf-check FILE...: runs the module's pre-dlopen() ELF checks on each
 * file, so a library can be vetted before it is deployed.
 */


#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "ngx_http_lua_ffi_elf.h"


static int ngx_http_lua_ffi_elf_check_file(const char *path);


int
main(int argc, char **argv)
{
    int  i, refused;

    if (argc < 2) {
        fprintf(stderr, "usage: ffi-elf-check FILE...\n"
                "prints \"FILE: ok build-id=HEX pin=REASON\" or "
                "\"FILE: refused: ERROR\" per file;\n"
                "exits 1 if any file was refused\n");
        return 2;
    }

    refused = 0;

    for (i = 1; i < argc; i++) {
        if (ngx_http_lua_ffi_elf_check_file(argv[i]) != 0) {
            refused = 1;
        }
    }

    if (fflush(stdout) != 0) {
        return 2;
    }

    return refused;
}


static int
ngx_http_lua_ffi_elf_check_file(const char *path)
{
    int                          fd, rc;
    const char                  *pin;
    ngx_http_lua_ffi_elf_info_t  info;

    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd == -1) {
        printf("%s: refused: cannot be opened: %s\n", path, strerror(errno));
        return -1;
    }

    rc = ngx_http_lua_ffi_elf_inspect_fd(fd, &info);

    (void) close(fd);

    if (rc != 0) {
        printf("%s: refused: %s\n", path, info.error);
        return -1;
    }

    /* "none" keeps every field non-empty for scripts that split on '=' */
    pin = ngx_http_lua_ffi_pin_reason_name(info.pin_reason);

    printf("%s: ok build-id=%s pin=%s\n", path,
           info.build_id[0] ? info.build_id : "none",
           pin[0] ? pin : "none");

    return 0;
}
