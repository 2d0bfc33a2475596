
/*
 * ELF inspector: refuses files that dlopen() must never see (wrong machine,
 * executables, truncated, no libffi_init), reads the build-id and pin reason.
 */


#include <elf.h>
#include <endian.h>
#include <errno.h>
#include <gelf.h>
#include <libelf.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "ngx_http_lua_ffi_elf.h"


/*
 * What "this machine" means is fixed when the module is compiled: the file
 * must match the process that will dlopen() it.
 */

#if (UINTPTR_MAX > 0xffffffffu)
#define NGX_HTTP_LUA_FFI_ELF_CLASS  ELFCLASS64
typedef Elf64_Ehdr  ngx_http_lua_ffi_ehdr_t;
typedef Elf64_Shdr  ngx_http_lua_ffi_shdr_t;
typedef Elf64_Phdr  ngx_http_lua_ffi_phdr_t;
#else
#define NGX_HTTP_LUA_FFI_ELF_CLASS  ELFCLASS32
typedef Elf32_Ehdr  ngx_http_lua_ffi_ehdr_t;
typedef Elf32_Shdr  ngx_http_lua_ffi_shdr_t;
typedef Elf32_Phdr  ngx_http_lua_ffi_phdr_t;
#endif

#if (__BYTE_ORDER == __LITTLE_ENDIAN)
#define NGX_HTTP_LUA_FFI_ELF_DATA   ELFDATA2LSB
#else
#define NGX_HTTP_LUA_FFI_ELF_DATA   ELFDATA2MSB
#endif

#if defined(__x86_64__)
#define NGX_HTTP_LUA_FFI_ELF_MACHINE  EM_X86_64
#elif defined(__aarch64__)
#define NGX_HTTP_LUA_FFI_ELF_MACHINE  EM_AARCH64
#elif defined(__i386__)
#define NGX_HTTP_LUA_FFI_ELF_MACHINE  EM_386
#elif defined(__arm__)
#define NGX_HTTP_LUA_FFI_ELF_MACHINE  EM_ARM
#elif defined(__riscv)
#define NGX_HTTP_LUA_FFI_ELF_MACHINE  EM_RISCV
#elif defined(__powerpc64__)
#define NGX_HTTP_LUA_FFI_ELF_MACHINE  EM_PPC64
#elif defined(__powerpc__)
#define NGX_HTTP_LUA_FFI_ELF_MACHINE  EM_PPC
#elif defined(__s390__)
#define NGX_HTTP_LUA_FFI_ELF_MACHINE  EM_S390
#elif defined(__mips__)
#define NGX_HTTP_LUA_FFI_ELF_MACHINE  EM_MIPS
#elif defined(__loongarch__)
#define NGX_HTTP_LUA_FFI_ELF_MACHINE  258         /* EM_LOONGARCH */
#elif defined(__sparc__) && (UINTPTR_MAX > 0xffffffffu)
#define NGX_HTTP_LUA_FFI_ELF_MACHINE  EM_SPARCV9
#else
#error "ngx_http_lua_ffi_elf.c: add this architecture's e_machine"
#endif

#ifndef DF_1_PIE
#define DF_1_PIE  0x08000000
#endif

#define NGX_HTTP_LUA_FFI_ELF_INIT      "libffi_init"
#define NGX_HTTP_LUA_FFI_ELF_BUILD_ID  20

/* bounds the malloc() of inspect_fd(); far above any real runtime */
#define NGX_HTTP_LUA_FFI_ELF_MAX_FILE  ((off_t) 1 << 30)


typedef struct {
    Elf                          *elf;
    size_t                        len;
    ngx_http_lua_ffi_elf_info_t  *info;

    Elf_Scn                      *dynamic;
    Elf_Scn                      *dynsym;
    Elf_Scn                      *symtab;

    unsigned                      interp:1;
    unsigned                      dynamic_segment:1;
    unsigned                      pie_flag:1;
    unsigned                      go:1;
    unsigned                      jvm:1;
    unsigned                      node:1;
    unsigned                      python:1;
} ngx_http_lua_ffi_elf_ctx_t;


typedef struct {
    unsigned                      value;
    const char                   *name;
} ngx_http_lua_ffi_elf_name_t;


static int ngx_http_lua_ffi_elf_error(ngx_http_lua_ffi_elf_info_t *info,
    const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int ngx_http_lua_ffi_elf_libelf_error(
    ngx_http_lua_ffi_elf_info_t *info, const char *what);
static int ngx_http_lua_ffi_elf_in_file(uintmax_t off, uintmax_t size,
    size_t len);
static int ngx_http_lua_ffi_elf_truncated(ngx_http_lua_ffi_elf_info_t *info,
    const char *what, uintmax_t off, uintmax_t size, size_t len);
static void ngx_http_lua_ffi_elf_printable(char *s);
static const char *ngx_http_lua_ffi_elf_name(
    const ngx_http_lua_ffi_elf_name_t *names, unsigned value);
static int ngx_http_lua_ffi_elf_check_ident(const unsigned char *p,
    size_t len, ngx_http_lua_ffi_elf_info_t *info);
static int ngx_http_lua_ffi_elf_check_header(const unsigned char *p,
    size_t len, ngx_http_lua_ffi_elf_info_t *info);
static int ngx_http_lua_ffi_elf_check_type(unsigned type,
    ngx_http_lua_ffi_elf_info_t *info);
static int ngx_http_lua_ffi_elf_check_shdr_table(const unsigned char *p,
    size_t len, const ngx_http_lua_ffi_ehdr_t *eh,
    ngx_http_lua_ffi_elf_info_t *info);
static int ngx_http_lua_ffi_elf_check_image(ngx_http_lua_ffi_elf_ctx_t *ctx);
static int ngx_http_lua_ffi_elf_check_segments(
    ngx_http_lua_ffi_elf_ctx_t *ctx);
static int ngx_http_lua_ffi_elf_check_sections(
    ngx_http_lua_ffi_elf_ctx_t *ctx);
static int ngx_http_lua_ffi_elf_read_dynamic(ngx_http_lua_ffi_elf_ctx_t *ctx);
static void ngx_http_lua_ffi_elf_needed(ngx_http_lua_ffi_elf_ctx_t *ctx,
    const char *name);
static void ngx_http_lua_ffi_elf_read_build_id(Elf_Scn *scn,
    ngx_http_lua_ffi_elf_info_t *info);
static int ngx_http_lua_ffi_elf_find_symbol(ngx_http_lua_ffi_elf_ctx_t *ctx,
    Elf_Scn *scn, const char *name, GElf_Sym *found);
static int ngx_http_lua_ffi_elf_check_export(ngx_http_lua_ffi_elf_ctx_t *ctx);
static void ngx_http_lua_ffi_elf_find_go_symbol(
    ngx_http_lua_ffi_elf_ctx_t *ctx);


static const ngx_http_lua_ffi_elf_name_t  ngx_http_lua_ffi_elf_machines[] = {
    { EM_NONE, "none" },
    { EM_386, "Intel 80386" },
    { EM_MIPS, "MIPS" },
    { EM_PPC, "PowerPC" },
    { EM_PPC64, "PowerPC64" },
    { EM_S390, "IBM S/390" },
    { EM_ARM, "ARM" },
    { EM_SPARCV9, "SPARC v9" },
    { EM_IA_64, "IA-64" },
    { EM_X86_64, "x86-64" },
    { EM_AARCH64, "AArch64" },
    { EM_RISCV, "RISC-V" },
    { 247, "BPF" },
    { 258, "LoongArch" },
    { 0, NULL }
};


static const ngx_http_lua_ffi_elf_name_t  ngx_http_lua_ffi_elf_types[] = {
    { ET_NONE, "ET_NONE (no file type)" },
    { ET_REL, "ET_REL (relocatable object)" },
    { ET_EXEC, "ET_EXEC (executable)" },
    { ET_DYN, "ET_DYN (shared object)" },
    { ET_CORE, "ET_CORE (core dump)" },
    { 0, NULL }
};


static const ngx_http_lua_ffi_elf_name_t  ngx_http_lua_ffi_elf_segments[] = {
    { PT_NULL, "PT_NULL" },
    { PT_LOAD, "PT_LOAD" },
    { PT_DYNAMIC, "PT_DYNAMIC" },
    { PT_INTERP, "PT_INTERP" },
    { PT_NOTE, "PT_NOTE" },
    { PT_PHDR, "PT_PHDR" },
    { PT_TLS, "PT_TLS" },
    { PT_GNU_EH_FRAME, "PT_GNU_EH_FRAME" },
    { PT_GNU_STACK, "PT_GNU_STACK" },
    { PT_GNU_RELRO, "PT_GNU_RELRO" },
    { 0x6474e553, "PT_GNU_PROPERTY" },
    { 0, NULL }
};


static const ngx_http_lua_ffi_elf_name_t  ngx_http_lua_ffi_elf_sym_types[] = {
    { STT_NOTYPE, "STT_NOTYPE" },
    { STT_OBJECT, "STT_OBJECT" },
    { STT_FUNC, "STT_FUNC" },
    { STT_SECTION, "STT_SECTION" },
    { STT_FILE, "STT_FILE" },
    { STT_COMMON, "STT_COMMON" },
    { STT_TLS, "STT_TLS" },
    { STT_GNU_IFUNC, "STT_GNU_IFUNC" },
    { 0, NULL }
};


static const ngx_http_lua_ffi_elf_name_t  ngx_http_lua_ffi_elf_bindings[] = {
    { STB_LOCAL, "STB_LOCAL" },
    { STB_GLOBAL, "STB_GLOBAL" },
    { STB_WEAK, "STB_WEAK" },
    { STB_GNU_UNIQUE, "STB_GNU_UNIQUE" },
    { 0, NULL }
};


static const ngx_http_lua_ffi_elf_name_t  ngx_http_lua_ffi_elf_visibility[] = {
    { STV_DEFAULT, "STV_DEFAULT" },
    { STV_INTERNAL, "STV_INTERNAL" },
    { STV_HIDDEN, "STV_HIDDEN" },
    { STV_PROTECTED, "STV_PROTECTED" },
    { 0, NULL }
};


int
ngx_http_lua_ffi_elf_inspect_mem(const void *data, size_t len,
    ngx_http_lua_ffi_elf_info_t *info)
{
    int                          rc;
    ngx_http_lua_ffi_elf_ctx_t   ctx;

    info->pin_reason = NGX_HTTP_LUA_FFI_PIN_NONE;
    info->build_id[0] = '\0';
    info->error[0] = '\0';

    if (len == 0) {
        return ngx_http_lua_ffi_elf_error(info,
                   "is empty (0 bytes), expected an ELF shared library");
    }

    if (data == NULL) {
        return ngx_http_lua_ffi_elf_error(info, "cannot be inspected: "
                                          "no data");
    }

    /*
     * The header is checked by hand first: libelf refuses a file whose
     * section header table is cut off with a bare "invalid ELF file",
     * and the user deserves to hear "truncated" instead.
     */

    if (ngx_http_lua_ffi_elf_check_ident(data, len, info) != 0
        || ngx_http_lua_ffi_elf_check_header(data, len, info) != 0)
    {
        return -1;
    }

    if (elf_version(EV_CURRENT) == EV_NONE) {
        return ngx_http_lua_ffi_elf_libelf_error(info, "libelf init");
    }

    memset(&ctx, 0, sizeof(ctx));
    ctx.len = len;
    ctx.info = info;

    /*
     * elf_memory() wants a writable pointer, but nothing here updates the
     * ELF, so libelf only reads the image (converting or realigning into
     * copies of its own); the fuzz target would catch a write, as libFuzzer
     * aborts when a target changes its const input.
     */

    ctx.elf = elf_memory((char *) data, len);
    if (ctx.elf == NULL) {
        return ngx_http_lua_ffi_elf_libelf_error(info, "elf_memory");
    }

    if (elf_kind(ctx.elf) != ELF_K_ELF) {
        rc = ngx_http_lua_ffi_elf_error(info, "not an ELF file: libelf "
                                        "does not recognise its format");

    } else {
        rc = ngx_http_lua_ffi_elf_check_image(&ctx);
    }

    elf_end(ctx.elf);

    return rc;
}


int
ngx_http_lua_ffi_elf_inspect_fd(int fd, ngx_http_lua_ffi_elf_info_t *info)
{
    int            rc;
    char          *buf;
    size_t         size, got;
    ssize_t        n;
    struct stat    st;

    info->pin_reason = NGX_HTTP_LUA_FFI_PIN_NONE;
    info->build_id[0] = '\0';
    info->error[0] = '\0';

    if (fstat(fd, &st) != 0) {
        return ngx_http_lua_ffi_elf_error(info, "cannot be inspected: "
                                          "fstat() failed: %s",
                                          strerror(errno));
    }

    if (!S_ISREG(st.st_mode)) {
        return ngx_http_lua_ffi_elf_error(info, "is not a regular file, "
                                          "expected an ELF shared library");
    }

    if (st.st_size > NGX_HTTP_LUA_FFI_ELF_MAX_FILE) {
        return ngx_http_lua_ffi_elf_error(info, "is too large (%jd bytes), "
                                          "the limit is %jd bytes",
                                          (intmax_t) st.st_size,
                                          (intmax_t)
                                          NGX_HTTP_LUA_FFI_ELF_MAX_FILE);
    }

    /*
     * A private copy rather than mmap(): a file truncated under us by a
     * concurrent deploy must give "truncated", not SIGBUS in the worker.
     */

    size = (size_t) st.st_size;

    buf = malloc(size ? size : 1);
    if (buf == NULL) {
        return ngx_http_lua_ffi_elf_error(info, "cannot be inspected: "
                                          "malloc(%zu) failed", size);
    }

    got = 0;

    while (got < size) {
        n = pread(fd, buf + got, size - got, (off_t) got);

        if (n == -1 && errno == EINTR) {
            continue;
        }

        if (n == -1) {
            free(buf);
            return ngx_http_lua_ffi_elf_error(info, "cannot be read: %s",
                                              strerror(errno));
        }

        if (n == 0) {
            break;      /* shrank since fstat(): inspect what is there */
        }

        got += (size_t) n;
    }

    rc = ngx_http_lua_ffi_elf_inspect_mem(buf, got, info);

    free(buf);

    return rc;
}


const char *
ngx_http_lua_ffi_pin_reason_name(ngx_http_lua_ffi_pin_reason_e r)
{
    switch (r) {

    case NGX_HTTP_LUA_FFI_PIN_GO:
        return "go";

    case NGX_HTTP_LUA_FFI_PIN_JVM:
        return "jvm";

    case NGX_HTTP_LUA_FFI_PIN_NODE:
        return "node";

    case NGX_HTTP_LUA_FFI_PIN_PYTHON:
        return "python";

    default:
        return "";
    }
}


static int
ngx_http_lua_ffi_elf_error(ngx_http_lua_ffi_elf_info_t *info,
    const char *fmt, ...)
{
    va_list  args;

    va_start(args, fmt);
    vsnprintf(info->error, sizeof(info->error), fmt, args);
    va_end(args);

    return -1;
}


static int
ngx_http_lua_ffi_elf_libelf_error(ngx_http_lua_ffi_elf_info_t *info,
    const char *what)
{
    const char  *msg;

    msg = elf_errmsg(-1);

    return ngx_http_lua_ffi_elf_error(info, "is a corrupt ELF file: "
                                      "libelf %s failed: %s",
                                      what, msg ? msg : "unknown error");
}


static int
ngx_http_lua_ffi_elf_in_file(uintmax_t off, uintmax_t size, size_t len)
{
    return off <= len && size <= len - off;
}


static int
ngx_http_lua_ffi_elf_truncated(ngx_http_lua_ffi_elf_info_t *info,
    const char *what, uintmax_t off, uintmax_t size, size_t len)
{
    uintmax_t  end;

    /* saturate: a forged offset must not print as a small, believable end */
    end = (off > UINTMAX_MAX - size) ? UINTMAX_MAX : off + size;

    return ngx_http_lua_ffi_elf_error(info, "truncated: %s ends at byte %ju, "
                                      "but the file has only %zu bytes",
                                      what, end, len);
}


static void
ngx_http_lua_ffi_elf_printable(char *s)
{
    /* names from the file end up in error.log and JSON: keep them tame */

    for ( /* void */ ; *s != '\0'; s++) {
        if ((unsigned char) *s < 0x20 || (unsigned char) *s > 0x7e) {
            *s = '?';
        }
    }
}


static const char *
ngx_http_lua_ffi_elf_name(const ngx_http_lua_ffi_elf_name_t *names,
    unsigned value)
{
    for ( /* void */ ; names->name != NULL; names++) {
        if (names->value == value) {
            return names->name;
        }
    }

    return "unknown";
}


static int
ngx_http_lua_ffi_elf_check_ident(const unsigned char *p, size_t len,
    ngx_http_lua_ffi_elf_info_t *info)
{
    int     n;
    char    found[3 * SELFMAG + 1];
    size_t  i;

    if (len < SELFMAG || memcmp(p, ELFMAG, SELFMAG) != 0) {
        n = 0;
        for (i = 0; i < SELFMAG && i < len; i++) {
            n += snprintf(found + n, sizeof(found) - n, "%s%02x",
                          i ? " " : "", p[i]);
        }

        return ngx_http_lua_ffi_elf_error(info, "not an ELF file: "
                                          "it starts with bytes %s, "
                                          "expected 7f 45 4c 46 "
                                          "(\"\\177ELF\")", found);
    }

    if (len < EI_NIDENT) {
        return ngx_http_lua_ffi_elf_error(info, "truncated: %zu bytes, less "
                                          "than the %d-byte ELF "
                                          "identification", len, EI_NIDENT);
    }

    if (p[EI_CLASS] != NGX_HTTP_LUA_FFI_ELF_CLASS) {
        return ngx_http_lua_ffi_elf_error(info, "is a %s ELF file "
                   "(EI_CLASS %u), expected %s for this machine",
                   p[EI_CLASS] == ELFCLASS32 ? "32-bit"
                   : p[EI_CLASS] == ELFCLASS64 ? "64-bit" : "invalid-class",
                   p[EI_CLASS],
                   NGX_HTTP_LUA_FFI_ELF_CLASS == ELFCLASS64
                   ? "64-bit (ELFCLASS64)" : "32-bit (ELFCLASS32)");
    }

    if (p[EI_DATA] != NGX_HTTP_LUA_FFI_ELF_DATA) {
        return ngx_http_lua_ffi_elf_error(info, "is a %s ELF file "
                   "(EI_DATA %u), expected %s for this machine",
                   p[EI_DATA] == ELFDATA2LSB ? "little-endian"
                   : p[EI_DATA] == ELFDATA2MSB ? "big-endian"
                   : "invalid-byte-order",
                   p[EI_DATA],
                   NGX_HTTP_LUA_FFI_ELF_DATA == ELFDATA2LSB
                   ? "little-endian (ELFDATA2LSB)"
                   : "big-endian (ELFDATA2MSB)");
    }

    if (p[EI_VERSION] != EV_CURRENT) {
        return ngx_http_lua_ffi_elf_error(info, "has ELF version %u "
                                          "(EI_VERSION), expected %u",
                                          p[EI_VERSION], EV_CURRENT);
    }

    return 0;
}


static int
ngx_http_lua_ffi_elf_check_header(const unsigned char *p, size_t len,
    ngx_http_lua_ffi_elf_info_t *info)
{
    ngx_http_lua_ffi_ehdr_t  eh;

    if (len < sizeof(eh)) {
        return ngx_http_lua_ffi_elf_error(info, "truncated: %zu bytes, less "
                                          "than the %zu-byte ELF header",
                                          len, sizeof(eh));
    }

    /* class and byte order are native now, so the struct reads as is */
    memcpy(&eh, p, sizeof(eh));

    if (eh.e_machine != NGX_HTTP_LUA_FFI_ELF_MACHINE) {
        return ngx_http_lua_ffi_elf_error(info, "is built for another "
                   "architecture: e_machine %u (%s), expected %u (%s) "
                   "for this machine",
                   eh.e_machine,
                   ngx_http_lua_ffi_elf_name(ngx_http_lua_ffi_elf_machines,
                                             eh.e_machine),
                   NGX_HTTP_LUA_FFI_ELF_MACHINE,
                   ngx_http_lua_ffi_elf_name(ngx_http_lua_ffi_elf_machines,
                                             NGX_HTTP_LUA_FFI_ELF_MACHINE));
    }

    if (eh.e_version != EV_CURRENT) {
        return ngx_http_lua_ffi_elf_error(info, "has ELF version %ju "
                                          "(e_version), expected %u",
                                          (uintmax_t) eh.e_version,
                                          EV_CURRENT);
    }

    if (ngx_http_lua_ffi_elf_check_type(eh.e_type, info) != 0) {
        return -1;
    }

    if (eh.e_phnum != 0 && eh.e_phentsize != sizeof(ngx_http_lua_ffi_phdr_t))
    {
        return ngx_http_lua_ffi_elf_error(info, "is a corrupt ELF file: "
                                          "e_phentsize %u, expected %zu",
                                          eh.e_phentsize,
                                          sizeof(ngx_http_lua_ffi_phdr_t));
    }

    return ngx_http_lua_ffi_elf_check_shdr_table(p, len, &eh, info);
}


static int
ngx_http_lua_ffi_elf_check_type(unsigned type,
    ngx_http_lua_ffi_elf_info_t *info)
{
    if (type == ET_DYN) {
        return 0;
    }

    if (type == ET_EXEC) {
        return ngx_http_lua_ffi_elf_error(info, "is an executable, not a "
                                          "shared library: e_type ET_EXEC, "
                                          "expected ET_DYN");
    }

    return ngx_http_lua_ffi_elf_error(info, "is not a shared library: "
               "e_type %u %s, expected ET_DYN (shared object)", type,
               ngx_http_lua_ffi_elf_name(ngx_http_lua_ffi_elf_types, type));
}


static int
ngx_http_lua_ffi_elf_check_shdr_table(const unsigned char *p, size_t len,
    const ngx_http_lua_ffi_ehdr_t *eh, ngx_http_lua_ffi_elf_info_t *info)
{
    uintmax_t                 shnum, size;
    ngx_http_lua_ffi_shdr_t   sh0;

    /* dlopen() would not mind, but .dynsym can only be found from here */

    if (eh->e_shoff == 0) {
        return ngx_http_lua_ffi_elf_error(info, "has no section headers, "
                                          "so its exports cannot be "
                                          "checked");
    }

    if (eh->e_shentsize != sizeof(ngx_http_lua_ffi_shdr_t)) {
        return ngx_http_lua_ffi_elf_error(info, "is a corrupt ELF file: "
                                          "e_shentsize %u, expected %zu",
                                          eh->e_shentsize,
                                          sizeof(ngx_http_lua_ffi_shdr_t));
    }

    if (!ngx_http_lua_ffi_elf_in_file(eh->e_shoff, sizeof(sh0), len)) {
        return ngx_http_lua_ffi_elf_truncated(info, "the section header "
                                              "table", eh->e_shoff,
                                              sizeof(sh0) * (eh->e_shnum
                                                  ? eh->e_shnum : 1),
                                              len);
    }

    shnum = eh->e_shnum;

    if (shnum == 0) {
        /* extended numbering: the count lives in section 0 */
        memcpy(&sh0, p + eh->e_shoff, sizeof(sh0));
        shnum = sh0.sh_size;
    }

    if (shnum == 0) {
        return ngx_http_lua_ffi_elf_error(info, "has no section headers, "
                                          "so its exports cannot be "
                                          "checked");
    }

    size = (shnum > UINTMAX_MAX / sizeof(sh0)) ? UINTMAX_MAX
                                               : shnum * sizeof(sh0);

    if (!ngx_http_lua_ffi_elf_in_file(eh->e_shoff, size, len)) {
        return ngx_http_lua_ffi_elf_truncated(info, "the section header "
                                              "table", eh->e_shoff, size,
                                              len);
    }

    return 0;
}


static int
ngx_http_lua_ffi_elf_check_image(ngx_http_lua_ffi_elf_ctx_t *ctx)
{
    ngx_http_lua_ffi_elf_info_t  *info;

    info = ctx->info;

    if (ngx_http_lua_ffi_elf_check_segments(ctx) != 0
        || ngx_http_lua_ffi_elf_check_sections(ctx) != 0)
    {
        return -1;
    }

    if (ctx->interp) {
        return ngx_http_lua_ffi_elf_error(info, "is an executable, not a "
                                          "shared library: it names a "
                                          "program interpreter "
                                          "(PT_INTERP)");
    }

    if (!ctx->dynamic_segment || ctx->dynamic == NULL) {
        return ngx_http_lua_ffi_elf_error(info, "has no dynamic %s, "
                                          "expected a dynamically linked "
                                          "shared library",
                                          ctx->dynamic_segment
                                          ? "section (SHT_DYNAMIC)"
                                          : "segment (PT_DYNAMIC)");
    }

    if (ngx_http_lua_ffi_elf_read_dynamic(ctx) != 0) {
        return -1;
    }

    if (ctx->pie_flag) {
        return ngx_http_lua_ffi_elf_error(info, "is an executable, not a "
                                          "shared library: DT_FLAGS_1 has "
                                          "DF_1_PIE set");
    }

    if (ngx_http_lua_ffi_elf_check_export(ctx) != 0) {
        return -1;
    }

    if (!ctx->go) {
        ngx_http_lua_ffi_elf_find_go_symbol(ctx);
    }

    /* Go first: its runtime is inside the image itself */

    info->pin_reason = ctx->go ? NGX_HTTP_LUA_FFI_PIN_GO
                       : ctx->jvm ? NGX_HTTP_LUA_FFI_PIN_JVM
                       : ctx->node ? NGX_HTTP_LUA_FFI_PIN_NODE
                       : ctx->python ? NGX_HTTP_LUA_FFI_PIN_PYTHON
                       : NGX_HTTP_LUA_FFI_PIN_NONE;

    return 0;
}


static int
ngx_http_lua_ffi_elf_check_segments(ngx_http_lua_ffi_elf_ctx_t *ctx)
{
    char       what[64];
    size_t     i, phnum;
    uintmax_t  size;
    GElf_Phdr  ph;
    GElf_Ehdr  eh;

    if (gelf_getehdr(ctx->elf, &eh) == NULL) {
        return ngx_http_lua_ffi_elf_libelf_error(ctx->info, "gelf_getehdr");
    }

    if (elf_getphdrnum(ctx->elf, &phnum) != 0) {
        return ngx_http_lua_ffi_elf_libelf_error(ctx->info, "elf_getphdrnum");
    }

    if (phnum == 0) {
        return ngx_http_lua_ffi_elf_error(ctx->info, "has no program "
                                          "headers, so it cannot be "
                                          "loaded");
    }

    size = (phnum > UINTMAX_MAX / sizeof(ngx_http_lua_ffi_phdr_t))
           ? UINTMAX_MAX
           : (uintmax_t) phnum * sizeof(ngx_http_lua_ffi_phdr_t);

    if (!ngx_http_lua_ffi_elf_in_file(eh.e_phoff, size, ctx->len)) {
        return ngx_http_lua_ffi_elf_truncated(ctx->info, "the program "
                                              "header table", eh.e_phoff,
                                              size, ctx->len);
    }

    for (i = 0; i < phnum; i++) {
        if (gelf_getphdr(ctx->elf, (int) i, &ph) == NULL) {
            return ngx_http_lua_ffi_elf_libelf_error(ctx->info,
                                                     "gelf_getphdr");
        }

        if (ph.p_filesz != 0
            && !ngx_http_lua_ffi_elf_in_file(ph.p_offset, ph.p_filesz,
                                             ctx->len))
        {
            snprintf(what, sizeof(what), "segment %zu (%s)", i,
                     ngx_http_lua_ffi_elf_name(ngx_http_lua_ffi_elf_segments,
                                               ph.p_type));
            return ngx_http_lua_ffi_elf_truncated(ctx->info, what,
                                                  ph.p_offset, ph.p_filesz,
                                                  ctx->len);
        }

        if (ph.p_type == PT_INTERP) {
            ctx->interp = 1;

        } else if (ph.p_type == PT_DYNAMIC) {
            ctx->dynamic_segment = 1;
        }
    }

    return 0;
}


static int
ngx_http_lua_ffi_elf_check_sections(ngx_http_lua_ffi_elf_ctx_t *ctx)
{
    char         what[96];
    size_t       shstrndx;
    Elf_Scn     *scn;
    GElf_Shdr    sh;
    const char  *name;

    if (elf_getshdrstrndx(ctx->elf, &shstrndx) != 0) {
        return ngx_http_lua_ffi_elf_libelf_error(ctx->info,
                                                 "elf_getshdrstrndx");
    }

    for (scn = elf_nextscn(ctx->elf, NULL);
         scn != NULL;
         scn = elf_nextscn(ctx->elf, scn))
    {
        if (gelf_getshdr(scn, &sh) == NULL) {
            return ngx_http_lua_ffi_elf_libelf_error(ctx->info,
                                                     "gelf_getshdr");
        }

        /* a broken name table only costs names: dlopen() never reads it */
        name = elf_strptr(ctx->elf, shstrndx, sh.sh_name);
        if (name == NULL) {
            name = "";
        }

        if (sh.sh_type != SHT_NOBITS && sh.sh_size != 0
            && !ngx_http_lua_ffi_elf_in_file(sh.sh_offset, sh.sh_size,
                                             ctx->len))
        {
            snprintf(what, sizeof(what),
                     name[0] ? "section %zu (%.40s)" : "section %zu%s",
                     elf_ndxscn(scn), name);
            ngx_http_lua_ffi_elf_printable(what);

            return ngx_http_lua_ffi_elf_truncated(ctx->info, what,
                                                  sh.sh_offset, sh.sh_size,
                                                  ctx->len);
        }

        if (sh.sh_type == SHT_DYNAMIC && ctx->dynamic == NULL) {
            ctx->dynamic = scn;

        } else if (sh.sh_type == SHT_DYNSYM && ctx->dynsym == NULL) {
            ctx->dynsym = scn;

        } else if (sh.sh_type == SHT_SYMTAB && ctx->symtab == NULL) {
            ctx->symtab = scn;

        } else if (sh.sh_type == SHT_NOTE && ctx->info->build_id[0] == '\0')
        {
            ngx_http_lua_ffi_elf_read_build_id(scn, ctx->info);
        }

        /* the Go linker writes these, c-shared builds included */
        if (strcmp(name, ".go.buildinfo") == 0
            || strcmp(name, ".note.go.buildid") == 0)
        {
            ctx->go = 1;
        }
    }

    return 0;
}


static int
ngx_http_lua_ffi_elf_read_dynamic(ngx_http_lua_ffi_elf_ctx_t *ctx)
{
    int          i;
    Elf_Data    *data;
    GElf_Dyn     dyn;
    GElf_Shdr    sh;
    const char  *name;

    if (gelf_getshdr(ctx->dynamic, &sh) == NULL) {
        return ngx_http_lua_ffi_elf_libelf_error(ctx->info, "gelf_getshdr");
    }

    data = elf_getdata(ctx->dynamic, NULL);
    if (data == NULL) {
        return ngx_http_lua_ffi_elf_libelf_error(ctx->info,
                                                 "elf_getdata(.dynamic)");
    }

    /* gelf_getdyn() returns NULL past the end of the data */

    for (i = 0; gelf_getdyn(data, i, &dyn) != NULL; i++) {

        if (dyn.d_tag == DT_NULL) {
            break;
        }

        if (dyn.d_tag == DT_FLAGS_1 && (dyn.d_un.d_val & DF_1_PIE)) {
            ctx->pie_flag = 1;

        } else if (dyn.d_tag == DT_NEEDED) {
            name = elf_strptr(ctx->elf, sh.sh_link, dyn.d_un.d_val);
            if (name != NULL) {
                ngx_http_lua_ffi_elf_needed(ctx, name);
            }
        }
    }

    return 0;
}


static void
ngx_http_lua_ffi_elf_needed(ngx_http_lua_ffi_elf_ctx_t *ctx,
    const char *name)
{
    /* these runtimes keep threads and atexit hooks in the process forever */

    if (strcmp(name, "libjvm.so") == 0) {
        ctx->jvm = 1;

    } else if (strncmp(name, "libnode.so", sizeof("libnode.so") - 1) == 0) {
        ctx->node = 1;

    } else if (strncmp(name, "libpython3", sizeof("libpython3") - 1) == 0) {
        ctx->python = 1;
    }
}


static void
ngx_http_lua_ffi_elf_read_build_id(Elf_Scn *scn,
    ngx_http_lua_ffi_elf_info_t *info)
{
    size_t                off, next, name_off, desc_off, n, i;
    Elf_Data             *data;
    GElf_Nhdr             nh;
    const unsigned char  *base;

    static const char     hex[] = "0123456789abcdef";

    data = elf_getdata(scn, NULL);
    if (data == NULL || data->d_buf == NULL) {
        return;     /* no build-id is not a reason to refuse a library */
    }

    base = data->d_buf;

    for (off = 0; off < data->d_size; off = next) {

        /* gelf_getnote() checks that name and desc fit in the data */
        next = gelf_getnote(data, off, &nh, &name_off, &desc_off);
        if (next == 0) {
            return;
        }

        if (nh.n_type != NT_GNU_BUILD_ID
            || nh.n_namesz != sizeof(ELF_NOTE_GNU)
            || memcmp(base + name_off, ELF_NOTE_GNU, sizeof(ELF_NOTE_GNU))
               != 0
            || nh.n_descsz == 0)
        {
            continue;
        }

        n = nh.n_descsz < NGX_HTTP_LUA_FFI_ELF_BUILD_ID
            ? nh.n_descsz : NGX_HTTP_LUA_FFI_ELF_BUILD_ID;

        for (i = 0; i < n; i++) {
            info->build_id[2 * i] = hex[base[desc_off + i] >> 4];
            info->build_id[2 * i + 1] = hex[base[desc_off + i] & 0x0f];
        }

        info->build_id[2 * n] = '\0';

        return;
    }
}


/*
 * 1 and *found set when name is in the table (a definition wins over an
 * undefined reference), 0 when absent, -1 when the table is unreadable.
 */

static int
ngx_http_lua_ffi_elf_find_symbol(ngx_http_lua_ffi_elf_ctx_t *ctx,
    Elf_Scn *scn, const char *name, GElf_Sym *found)
{
    int          i, rc;
    Elf_Data    *data;
    GElf_Sym     sym;
    GElf_Shdr    sh;
    const char  *s;

    if (gelf_getshdr(scn, &sh) == NULL) {
        return -1;
    }

    data = elf_getdata(scn, NULL);
    if (data == NULL) {
        return -1;
    }

    rc = 0;

    /* gelf_getsym() returns NULL past the end of the data */

    for (i = 1; gelf_getsym(data, i, &sym) != NULL; i++) {
        s = elf_strptr(ctx->elf, sh.sh_link, sym.st_name);
        if (s == NULL || strcmp(s, name) != 0) {
            continue;
        }

        *found = sym;
        rc = 1;

        if (sym.st_shndx != SHN_UNDEF) {
            break;
        }
    }

    return rc;
}


static int
ngx_http_lua_ffi_elf_check_export(ngx_http_lua_ffi_elf_ctx_t *ctx)
{
    int                           rc;
    unsigned                      type, bind, vis;
    GElf_Sym                      sym;
    ngx_http_lua_ffi_elf_info_t  *info;

    info = ctx->info;

    if (ctx->dynsym == NULL) {
        return ngx_http_lua_ffi_elf_error(info, "does not export "
                                          NGX_HTTP_LUA_FFI_ELF_INIT ": it "
                                          "has no dynamic symbol table "
                                          "(.dynsym)");
    }

    rc = ngx_http_lua_ffi_elf_find_symbol(ctx, ctx->dynsym,
                                          NGX_HTTP_LUA_FFI_ELF_INIT, &sym);

    if (rc == -1) {
        return ngx_http_lua_ffi_elf_libelf_error(info, "reading .dynsym");
    }

    if (rc == 0) {
        return ngx_http_lua_ffi_elf_error(info, "does not export "
                                          NGX_HTTP_LUA_FFI_ELF_INIT ": no "
                                          "symbol of that name in .dynsym");
    }

    if (sym.st_shndx == SHN_UNDEF) {
        return ngx_http_lua_ffi_elf_error(info, "does not export "
                                          NGX_HTTP_LUA_FFI_ELF_INIT ": it "
                                          "is undefined (SHN_UNDEF), "
                                          "expected a definition");
    }

    type = GELF_ST_TYPE(sym.st_info);
    bind = GELF_ST_BIND(sym.st_info);
    vis = GELF_ST_VISIBILITY(sym.st_other);

    /* an IFUNC resolves to a function: dlsym() hands back its target */

    if (type != STT_FUNC && type != STT_GNU_IFUNC) {
        return ngx_http_lua_ffi_elf_error(info, "does not export "
                   NGX_HTTP_LUA_FFI_ELF_INIT ": its symbol type is %s, "
                   "expected STT_FUNC",
                   ngx_http_lua_ffi_elf_name(ngx_http_lua_ffi_elf_sym_types,
                                             type));
    }

    if (bind != STB_GLOBAL && bind != STB_WEAK) {
        return ngx_http_lua_ffi_elf_error(info, "does not export "
                   NGX_HTTP_LUA_FFI_ELF_INIT ": its binding is %s, "
                   "expected STB_GLOBAL or STB_WEAK",
                   ngx_http_lua_ffi_elf_name(ngx_http_lua_ffi_elf_bindings,
                                             bind));
    }

    if (vis != STV_DEFAULT && vis != STV_PROTECTED) {
        return ngx_http_lua_ffi_elf_error(info, "does not export "
                   NGX_HTTP_LUA_FFI_ELF_INIT ": its visibility is %s, "
                   "expected STV_DEFAULT or STV_PROTECTED",
                   ngx_http_lua_ffi_elf_name(ngx_http_lua_ffi_elf_visibility,
                                             vis));
    }

    return 0;
}


static void
ngx_http_lua_ffi_elf_find_go_symbol(ngx_http_lua_ffi_elf_ctx_t *ctx)
{
    GElf_Sym  sym;

    /* older Go toolchains and stripped sections: the runtime's own symbol */

    if (ngx_http_lua_ffi_elf_find_symbol(ctx, ctx->dynsym,
                                         "runtime.buildVersion", &sym) == 1
        && sym.st_shndx != SHN_UNDEF)
    {
        ctx->go = 1;
        return;
    }

    if (ctx->symtab != NULL
        && ngx_http_lua_ffi_elf_find_symbol(ctx, ctx->symtab,
                                            "runtime.buildVersion", &sym) == 1
        && sym.st_shndx != SHN_UNDEF)
    {
        ctx->go = 1;
    }
}
