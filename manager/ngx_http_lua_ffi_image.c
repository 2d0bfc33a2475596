/*
 * Library images: finding a library file, checking it with libelf, making
 * its shadow copy in a private folder and mapping that very copy with
 * dlopen() once its SHA-256 proves it is the copy that was checked.
 */

#include "ngx_http_lua_ffi_manager.h"

#include <dlfcn.h>
#include <link.h>
#include <dirent.h>
#include <sys/sysmacros.h>
#include <sys/random.h>
#include <sys/statvfs.h>


/*
 * The shadow folder: made once by the master (a random name, so that it
 * cannot be guessed), owned by the workers' user, mode 0700; inherited by
 * every worker the master forks, also after nginx -s reload, since the
 * versions named in the shared zone live on. Checked again on every use.
 */
static u_char      ngx_http_lua_ffi_shadow_dir[NGX_HTTP_LUA_FFI_PATHLEN];
static ngx_uid_t   ngx_http_lua_ffi_shadow_uid;
/* ffi_shadow_path as it was then: a HUP cannot move the versions */
static u_char      ngx_http_lua_ffi_shadow_in[NGX_HTTP_LUA_FFI_PATHLEN];


/* The shadow folder, opened and checked: ours, 0700, not a symlink. */

static int
ngx_http_lua_ffi_shadow_dir_open(u_char *err, size_t errlen)
{
    int          fd;
    struct stat  st;

    if (ngx_http_lua_ffi_shadow_dir[0] == '\0') {
        ngx_snprintf(err, errlen, "no shadow folder%Z");
        return -1;
    }

    fd = open((char *) ngx_http_lua_ffi_shadow_dir,
              O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

    if (fd == -1 || fstat(fd, &st) == -1) {
        ngx_snprintf(err, errlen, "cannot open shadow folder \"%s\": %s%Z",
                     ngx_http_lua_ffi_shadow_dir, strerror(errno));
        if (fd != -1) {
            (void) close(fd);
        }
        return -1;
    }

    if (st.st_uid != ngx_http_lua_ffi_shadow_uid
        || (st.st_mode & 07777) != 0700)
    {
        ngx_snprintf(err, errlen, "shadow folder \"%s\" is not ours: owner "
                     "uid %d, mode %04o (want uid %d, 0700)%Z",
                     ngx_http_lua_ffi_shadow_dir, (int) st.st_uid,
                     (int) (st.st_mode & 07777),
                     (int) ngx_http_lua_ffi_shadow_uid);
        (void) close(fd);
        return -1;
    }

    return fd;
}


/*
 * In the master, for every configuration it loads: makes the shadow folder
 * the first time, in ffi_shadow_path (checked as an ancestor of a library
 * is), with a random name. nginx -t and nginx -s start no worker: no
 * folder for them.
 */

ngx_int_t
ngx_http_lua_ffi_shadow_init(ngx_cycle_t *cycle,
    ngx_http_lua_ffi_main_conf_t *fmcf, ngx_core_conf_t *ccf)
{
    int             fd, parent, unused;
    u_char          err[NGX_HTTP_LUA_FFI_ERRLEN], *base;
    u_char          path[NGX_HTTP_LUA_FFI_PATHLEN];
    u_char          real[NGX_HTTP_LUA_FFI_PATHLEN];
    u_char          name[sizeof("nginx-ffi.") + 24], rnd[12];
    ngx_uid_t       uid;
    struct passwd  *pw;
    struct statvfs  vfs;

    if (ngx_test_config || ngx_process == NGX_PROCESS_SIGNALLER) {
        return NGX_OK;
    }

    if (ngx_http_lua_ffi_digest_init(cycle->log) != NGX_OK) {
        return NGX_ERROR;
    }

    err[0] = '\0';

    /* relative to the prefix, as nginx's own paths are */
    if (ngx_conf_full_name(cycle, &fmcf->shadow_path, 0) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_http_lua_ffi_shadow_dir[0] != '\0') {
        /* nginx -s reload: the versions in the shared zone live here */
        if (fmcf->shadow_path.len != ngx_strlen(ngx_http_lua_ffi_shadow_in)
            || ngx_strncmp(fmcf->shadow_path.data, ngx_http_lua_ffi_shadow_in,
                           fmcf->shadow_path.len) != 0)
        {
            ngx_log_error(NGX_LOG_WARN, cycle->log, 0, "ffi: ffi_shadow_path "
                          "\"%V\" takes effect at the next start; shadow "
                          "copies stay in \"%s\"", &fmcf->shadow_path,
                          ngx_http_lua_ffi_shadow_dir);
        }

        goto check;
    }

    uid = (geteuid() == 0 && ccf->user != (ngx_uid_t) NGX_CONF_UNSET_UINT)
          ? ccf->user : geteuid();

    /*
     * nginx's default user when root names none: the workers' user is a
     * trusted owner of libraries, their folders and the shadow copies,
     * and "nobody" is whoever else runs as nobody.
     */
    pw = getpwnam("nobody");

    if (pw != NULL && pw->pw_uid == uid) {
        ngx_log_error(NGX_LOG_WARN, cycle->log, 0, "ffi: workers run as "
                      "\"nobody\" (uid %d): any process of that user can "
                      "change the code they load; give nginx a user of its "
                      "own (\"user www-data;\")", (int) uid);
    }

    if (fmcf->shadow_path.len >= sizeof(path) - sizeof(name) - 1) {
        ngx_snprintf(err, sizeof(err), "path too long%Z");
        goto failed;
    }

    *ngx_cpymem(path, fmcf->shadow_path.data, fmcf->shadow_path.len) = '\0';

    parent = ngx_http_lua_ffi_open_trusted(path, uid,
                                           NGX_HTTP_LUA_FFI_WALK_FOLDER,
                                           &unused, real, &base, err,
                                           sizeof(err));
    if (parent == -1) {
        goto failed;
    }

    /* dlopen() of a copy there would fail later, load by load */
    if (fstatvfs(parent, &vfs) == 0 && (vfs.f_flag & ST_NOEXEC)) {
        ngx_snprintf(err, sizeof(err), "\"%s\" is on a file system mounted "
                     "noexec: no copy there could be mapped%Z",
                     real[0] ? real : path);
        (void) close(parent);
        goto failed;
    }

    if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t) sizeof(rnd)) {
        ngx_snprintf(err, sizeof(err), "getrandom() failed%Z");
        (void) close(parent);
        goto failed;
    }

    *ngx_hex_dump(ngx_cpymem(name, "nginx-ffi.", sizeof("nginx-ffi.") - 1),
                  rnd, sizeof(rnd)) = '\0';

    fd = -1;

    if (mkdirat(parent, (char *) name, 0700) == -1
        || (fd = openat(parent, (char *) name,
                        O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC))
           == -1
        || (uid != geteuid() && fchown(fd, uid, ccf->group) == -1))
    {
        ngx_snprintf(err, sizeof(err), "cannot make \"%s\" for the workers' "
                     "user: %s%Z", name, strerror(errno));
        if (fd != -1) {
            (void) close(fd);
            (void) unlinkat(parent, (char *) name, AT_REMOVEDIR);
        }
        (void) close(parent);
        goto failed;
    }

    (void) close(fd);
    (void) close(parent);

    *ngx_snprintf(ngx_http_lua_ffi_shadow_dir, NGX_HTTP_LUA_FFI_PATHLEN - 1,
                  "%s/%s", real[0] ? real : (u_char *) "", name) = '\0';
    ngx_http_lua_ffi_shadow_uid = uid;
    *ngx_cpymem(ngx_http_lua_ffi_shadow_in, fmcf->shadow_path.data,
                fmcf->shadow_path.len) = '\0';

check:

    fd = ngx_http_lua_ffi_shadow_dir_open(err, sizeof(err));
    if (fd == -1) {
        goto failed;
    }

    (void) close(fd);

    return NGX_OK;

failed:

    ngx_log_error(NGX_LOG_EMERG, cycle->log, 0, "ffi: shadow folder in "
                  "\"%V\" (ffi_shadow_path): %s", &fmcf->shadow_path, err);

    return NGX_ERROR;
}


/* In the master at exit: the copies and the folder go. */

void
ngx_http_lua_ffi_shadow_cleanup(ngx_cycle_t *cycle)
{
    int             fd;
    DIR            *dir;
    u_char          err[NGX_HTTP_LUA_FFI_ERRLEN];
    struct dirent  *de;

    if (ngx_http_lua_ffi_shadow_dir[0] == '\0') {
        return;
    }

    fd = ngx_http_lua_ffi_shadow_dir_open(err, sizeof(err));
    if (fd == -1) {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, 0, "ffi: %s", err);
        return;
    }

    dir = fdopendir(fd);
    if (dir == NULL) {
        (void) close(fd);
        return;
    }

    while ((de = readdir(dir)) != NULL) {
        if (ngx_strcmp(de->d_name, ".") != 0
            && ngx_strcmp(de->d_name, "..") != 0)
        {
            (void) unlinkat(dirfd(dir), de->d_name, 0);
        }
    }

    (void) closedir(dir);

    if (rmdir((char *) ngx_http_lua_ffi_shadow_dir) == -1) {
        ngx_log_error(NGX_LOG_ERR, cycle->log, ngx_errno,
                      "ffi: rmdir(\"%s\") failed",
                      ngx_http_lua_ffi_shadow_dir);
    }

    ngx_http_lua_ffi_shadow_dir[0] = '\0';
}


static ngx_int_t
ngx_http_lua_ffi_file_exists(u_char *path)
{
    struct stat  st;

    return (stat((char *) path, &st) == 0 && S_ISREG(st.st_mode))
           ? NGX_OK : NGX_DECLINED;
}


static ngx_int_t
ngx_http_lua_ffi_search_dir(u_char *dir, size_t dlen, ngx_str_t *file,
    u_char *buf)
{
    if (dlen == 0 || dlen + 1 + file->len >= NGX_HTTP_LUA_FFI_PATHLEN) {
        return NGX_DECLINED;
    }

    *ngx_snprintf(buf, NGX_HTTP_LUA_FFI_PATHLEN - 1, "%*s/%V",
                  dlen, dir, file) = '\0';

    return ngx_http_lua_ffi_file_exists(buf);
}


/*
 * Short names ("demo" -> libdemo.so) and bare file names are searched in
 * ffi_library_path, then LD_LIBRARY_PATH, then the library folder chosen
 * when the module was configured (a package's /usr/lib/nginx/ffi), so that
 * a packaged nginx needs no ffi_library_path; a name with a slash is a path.
 * The result is the real path, the library's identity in the registry,
 * found by the same checked walk that every load makes: a symlink on the
 * way that someone else owns, or a folder someone else may write to, is
 * refused here already.
 */

ngx_int_t
ngx_http_lua_ffi_library_resolve(ngx_str_t *name, ngx_str_t *path,
    u_char *err, size_t errlen)
{
    int                            fd, dir;
    u_char                        *p, *q, *env, *last, *base;
    u_char                         file_buf[NGX_HTTP_LUA_FFI_NAMELEN + 8];
    u_char                         buf[NGX_HTTP_LUA_FFI_PATHLEN];
    ngx_str_t                      file, *dirs;
    ngx_uint_t                     i, found;
    ngx_http_lua_ffi_main_conf_t  *fmcf;
    static u_char                  real[NGX_HTTP_LUA_FFI_PATHLEN];

    if (name->len == 0 || name->len >= NGX_HTTP_LUA_FFI_NAMELEN
        || ngx_strlchr(name->data, name->data + name->len, '\0'))
    {
        ngx_snprintf(err, errlen, "bad library name");
        return NGX_ERROR;
    }

    found = 0;

    if (ngx_strlchr(name->data, name->data + name->len, '/')) {
        file = *name;

        if (name->data[0] == '/') {
            *ngx_cpymem(buf, name->data, name->len) = '\0';

        } else {
            *ngx_snprintf(buf, sizeof(buf) - 1, "%V%V",
                          &ngx_cycle->prefix, name) = '\0';
        }

        found = (ngx_http_lua_ffi_file_exists(buf) == NGX_OK);
        goto done;
    }

    if (ngx_strnstr(name->data, ".so", name->len)) {
        file = *name;

    } else {
        file.data = file_buf;
        file.len = ngx_sprintf(file_buf, "lib%V.so", name) - file_buf;
    }

    fmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_http_lua_ffi_module);

    if (fmcf->library_path) {
        dirs = fmcf->library_path->elts;

        for (i = 0; i < fmcf->library_path->nelts; i++) {
            if (ngx_http_lua_ffi_search_dir(dirs[i].data, dirs[i].len, &file,
                                            buf)
                == NGX_OK)
            {
                found = 1;
                goto done;
            }
        }
    }

    env = (u_char *) getenv("LD_LIBRARY_PATH");

    if (env) {
        last = env + ngx_strlen(env);

        for (p = env; p < last; p = q + 1) {
            q = ngx_strlchr(p, last, ':');
            if (q == NULL) {
                q = last;
            }

            if (ngx_http_lua_ffi_search_dir(p, q - p, &file, buf) == NGX_OK) {
                found = 1;
                goto done;
            }
        }
    }

#ifdef NGX_HTTP_LUA_FFI_LIBRARY_DIR
    if (ngx_http_lua_ffi_search_dir((u_char *) NGX_HTTP_LUA_FFI_LIBRARY_DIR,
                                    sizeof(NGX_HTTP_LUA_FFI_LIBRARY_DIR) - 1,
                                    &file, buf)
        == NGX_OK)
    {
        found = 1;
    }
#endif

done:

    if (!found) {
        ngx_snprintf(err, errlen, "library \"%V\" not found (looked for "
                     "\"%V\" in ffi_library_path, LD_LIBRARY_PATH"
#ifdef NGX_HTTP_LUA_FFI_LIBRARY_DIR
                     " and " NGX_HTTP_LUA_FFI_LIBRARY_DIR
#endif
                     ")%Z", name, &file);
        return NGX_DECLINED;
    }

    err[0] = '\0';

    fd = ngx_http_lua_ffi_open_trusted(buf, geteuid(),
                                       NGX_HTTP_LUA_FFI_WALK_NAME, &dir, real,
                                       &base, err, errlen);
    if (fd == -1) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0, "ffi: %s", err);
        return NGX_ERROR;
    }

    (void) close(fd);
    (void) close(dir);

    path->data = real;
    path->len = ngx_strlen(real);

    return NGX_OK;
}


static ngx_uint_t
ngx_http_lua_ffi_same_file(struct stat *a, struct stat *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino
           && a->st_size == b->st_size
           && a->st_mtim.tv_sec == b->st_mtim.tv_sec
           && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec
           && a->st_ctim.tv_sec == b->st_ctim.tv_sec
           && a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}


/*
 * The whole file, read from the descriptor that was checked, or NULL.
 * *busy is set when the file was written to or replaced while we read it:
 * what we got may be half a file, and a newer version is on its way.
 */

static u_char *
ngx_http_lua_ffi_read_file(int fd, int dir, u_char *base, u_char *path,
    size_t *size, ngx_uint_t *busy, u_char *err, size_t errlen)
{
    u_char      *buf, *p;
    ssize_t      n;
    size_t       left;
    struct stat  st, after, now;

    *busy = 0;

    if (fstat(fd, &st) == -1) {
        ngx_snprintf(err, errlen, "fstat(\"%s\") failed: %s%Z", path,
                     strerror(errno));
        return NULL;
    }

    buf = ngx_alloc(st.st_size ? st.st_size : 1, ngx_cycle->log);
    if (buf == NULL) {
        ngx_snprintf(err, errlen, "no memory%Z");
        return NULL;
    }

    for (p = buf, left = st.st_size; left; p += n, left -= n) {
        n = read(fd, p, left);

        if (n <= 0) {
            if (n == -1 && errno == EINTR) {
                n = 0;
                continue;
            }

            /* shrunk while we read: judge what we got */
            break;
        }
    }

    if (fstat(fd, &after) == -1
        || fstatat(dir, (char *) base, &now, AT_SYMLINK_NOFOLLOW) == -1
        || !ngx_http_lua_ffi_same_file(&st, &after)
        || !ngx_http_lua_ffi_same_file(&st, &now))
    {
        *busy = 1;
        ngx_snprintf(err, errlen, "\"%s\" changed while it was read%Z",
                     path);
        ngx_free(buf);
        return NULL;
    }

    *size = p - buf;

    return buf;
}


/* A new copy of its own in the shadow folder: O_EXCL, a random name. */

static ngx_int_t
ngx_http_lua_ffi_write_copy(u_char *base, u_char *data, size_t len,
    u_char *shadow, u_char *err, size_t errlen)
{
    int         dir, fd;
    u_char      rnd[8], name[NAME_MAX + 1], *p;
    size_t      blen;
    ssize_t     n;
    ngx_uint_t  tries;

    dir = ngx_http_lua_ffi_shadow_dir_open(err, errlen);
    if (dir == -1) {
        return NGX_ERROR;
    }

    blen = ngx_min(ngx_strlen(base), NAME_MAX - 20);
    fd = -1;

    for (tries = 0; fd == -1 && tries < 8; tries++) {
        if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t) sizeof(rnd)) {
            break;
        }

        p = ngx_cpymem(name, base, blen);
        *p++ = '.';
        *ngx_hex_dump(p, rnd, sizeof(rnd)) = '\0';

        fd = openat(dir, (char *) name,
                    O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                    0500);

        if (fd == -1 && errno != EEXIST) {
            break;
        }
    }

    if (fd == -1) {
        ngx_snprintf(err, errlen, "cannot make a shadow copy in \"%s\": "
                     "%s%Z", ngx_http_lua_ffi_shadow_dir, strerror(errno));
        (void) close(dir);
        return NGX_ERROR;
    }

    while (len) {
        n = write(fd, data, len);

        if (n == -1 && errno == EINTR) {
            continue;
        }

        if (n <= 0) {
            break;
        }

        data += n;
        len -= n;
    }

    if (close(fd) == -1 || len) {
        ngx_snprintf(err, errlen, "cannot write shadow copy \"%s/%s\": "
                     "%s%Z", ngx_http_lua_ffi_shadow_dir, name,
                     strerror(errno));
        (void) unlinkat(dir, (char *) name, 0);
        (void) close(dir);
        return NGX_ERROR;
    }

    (void) close(dir);

    *ngx_snprintf(shadow, NGX_HTTP_LUA_FFI_PATHLEN - 1, "%s/%s",
                  ngx_http_lua_ffi_shadow_dir, name) = '\0';

    return NGX_OK;
}


/*
 * Opens the library by the checked walk, reads it once from that very
 * descriptor, checks those bytes with libelf, records their SHA-256 and
 * writes them to a new shadow copy: what is checked is what gets mapped,
 * whatever happens to the original file meanwhile. Every copy has a name
 * of its own, even for bytes seen before. The same rules hold for every
 * load, first load, reload or drop (strict is kept for the callers).
 */

static ngx_uint_t
ngx_http_lua_ffi_errno_transient(ngx_err_t err)
{
    switch (err) {
    case EMFILE:
    case ENFILE:
    case ENOMEM:
    case ENOSPC:
    case EIO:
    case EINTR:
    case EAGAIN:
        return 1;
    default:
        return 0;
    }
}


ngx_int_t
ngx_http_lua_ffi_shadow_create(ngx_str_t *path,
    ngx_http_lua_ffi_version_t *v, ngx_uint_t strict, u_char *err,
    size_t errlen)
{
    int                           fd, dir;
    u_char                       *data, *base;
    u_char                        cpath[NGX_HTTP_LUA_FFI_PATHLEN];
    u_char                        real[NGX_HTTP_LUA_FFI_PATHLEN];
    size_t                        size;
    ngx_int_t                     rc;
    ngx_uint_t                    busy;
    ngx_http_lua_ffi_elf_info_t   info;

    (void) strict;

    if (path->len >= NGX_HTTP_LUA_FFI_PATHLEN) {
        ngx_snprintf(err, errlen, "path too long%Z");
        return NGX_DECLINED;
    }

    *ngx_cpymem(cpath, path->data, path->len) = '\0';
    err[0] = '\0';

    ngx_set_errno(0);

    fd = ngx_http_lua_ffi_open_trusted(cpath, geteuid(),
                                       NGX_HTTP_LUA_FFI_WALK_FILE, &dir, real,
                                       &base, err, errlen);
    if (fd == -1) {
        /*
         * A rule the file breaks is a verdict; a worker out of descriptors
         * or memory, or a read error, is not: the drop is tried again.
         */
        return ngx_http_lua_ffi_errno_transient(ngx_errno) ? NGX_ERROR
                                                            : NGX_DECLINED;
    }

    data = ngx_http_lua_ffi_read_file(fd, dir, base, cpath, &size, &busy,
                                      err, errlen);
    (void) close(fd);
    (void) close(dir);

    if (data == NULL) {
        return busy ? NGX_AGAIN : NGX_ERROR;
    }

    if (ngx_http_lua_ffi_elf_inspect_mem(data, size, &info) != 0) {
        ngx_snprintf(err, errlen, "\"%V\": %s%Z", path, info.error);
        ngx_free(data);
        return NGX_DECLINED;
    }

    if (ngx_http_lua_ffi_sha256(data, size, v->sha256) != NGX_OK) {
        ngx_snprintf(err, errlen, "SHA-256 failed%Z");
        ngx_free(data);
        return NGX_ERROR;
    }

    ngx_memcpy(&v->hash, v->sha256, sizeof(v->hash));
    v->size = size;
    v->pin_reason = info.pin_reason;
    ngx_memcpy(v->build_id, info.build_id, sizeof(v->build_id));

    rc = ngx_http_lua_ffi_write_copy(base, data, size, v->shadow, err,
                                     errlen);

    ngx_free(data);

    return rc;
}


static u_char *
ngx_http_lua_ffi_shadow_base(u_char *shadow)
{
    u_char  *base;

    base = (u_char *) ngx_strchr(shadow, '\0');

    while (base > shadow && base[-1] != '/') {
        base--;
    }

    return base;
}


void
ngx_http_lua_ffi_shadow_remove(ngx_http_lua_ffi_version_t *v)
{
    int     dir;
    u_char  err[NGX_HTTP_LUA_FFI_ERRLEN];

    if (v->shadow[0] == '\0') {
        return;
    }

    dir = ngx_http_lua_ffi_shadow_dir_open(err, sizeof(err));
    if (dir == -1) {
        return;
    }

    (void) unlinkat(dir, (char *) ngx_http_lua_ffi_shadow_base(v->shadow), 0);
    (void) close(dir);
}


/*
 * Opens the version's copy in the shadow folder and proves it is the one
 * that was checked: a regular file of ours that nobody else may write to,
 * whose bytes, read from this descriptor, have the SHA-256 recorded in
 * the shared zone. dlopen() then maps that descriptor's inode through
 * /proc/self/fd, never a path that could lead elsewhere. The descriptor
 * stays open while the image is mapped: glibc knows a library by the name
 * it was opened with, and a reused descriptor number must not name it.
 */

static int
ngx_http_lua_ffi_shadow_open(ngx_http_lua_ffi_version_t *v, u_char *err,
    size_t errlen)
{
    int          dir, fd;
    u_char       md[NGX_HTTP_LUA_FFI_SHA256_LEN];
    struct stat  st;

    dir = ngx_http_lua_ffi_shadow_dir_open(err, errlen);
    if (dir == -1) {
        return -1;
    }

    fd = openat(dir, (char *) ngx_http_lua_ffi_shadow_base(v->shadow),
                O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    (void) close(dir);

    if (fd == -1 || fstat(fd, &st) == -1) {
        ngx_snprintf(err, errlen, "cannot open shadow copy \"%s\": %s%Z",
                     v->shadow, strerror(errno));
        if (fd != -1) {
            (void) close(fd);
        }
        return -1;
    }

    if (!S_ISREG(st.st_mode) || st.st_uid != geteuid()
        || (st.st_mode & (S_IWGRP | S_IWOTH)))
    {
        ngx_snprintf(err, errlen, "shadow copy \"%s\" is not ours: not a "
                     "regular file of uid %d that only it may write%Z",
                     v->shadow, (int) geteuid());
        (void) close(fd);
        return -1;
    }

    if (ngx_http_lua_ffi_sha256_fd(fd, st.st_size, md) != NGX_OK
        || ngx_memcmp(md, v->sha256, sizeof(md)) != 0)
    {
        ngx_snprintf(err, errlen, "shadow copy \"%s\" is not the file that "
                     "was checked (SHA-256 differs): not mapped%Z",
                     v->shadow);
        (void) close(fd);
        return -1;
    }

    return fd;
}


/*
 * A rollback's own copy of a version the history kept: its bytes read once
 * from the kept copy (opened and proven as for mapping), their SHA-256
 * compared with the version's again, written to a new name. A copy of its
 * own makes the rollback a new image, as a reload's new file is: the kept
 * copy may still be mapped here (draining, or pinned and idle), and glibc
 * would hand back that mapping for the same inode, runtimes, globals and
 * all.
 */

ngx_int_t
ngx_http_lua_ffi_shadow_copy(ngx_http_lua_ffi_version_t *from,
    ngx_http_lua_ffi_version_t *to, u_char *err, size_t errlen)
{
    int          fd;
    u_char      *data, *base, *dot;
    u_char       md[NGX_HTTP_LUA_FFI_SHA256_LEN];
    u_char       name[NAME_MAX + 1];
    size_t       left;
    ssize_t      n;
    ngx_int_t    rc;
    struct stat  st;

    fd = ngx_http_lua_ffi_shadow_open(from, err, errlen);
    if (fd == -1) {
        return NGX_DECLINED;
    }

    if (fstat(fd, &st) == -1) {
        ngx_snprintf(err, errlen, "fstat(\"%s\") failed: %s%Z", from->shadow,
                     strerror(errno));
        (void) close(fd);
        return NGX_ERROR;
    }

    data = ngx_alloc(st.st_size ? st.st_size : 1, ngx_cycle->log);
    if (data == NULL) {
        (void) close(fd);
        ngx_snprintf(err, errlen, "no memory%Z");
        return NGX_ERROR;
    }

    for (left = st.st_size; left; left -= n) {
        n = pread(fd, data + (st.st_size - left), left, st.st_size - left);

        if (n == -1 && errno == EINTR) {
            n = 0;
            continue;
        }

        if (n <= 0) {
            break;
        }
    }

    (void) close(fd);

    if (left
        || ngx_http_lua_ffi_sha256(data, st.st_size, md) != NGX_OK
        || ngx_memcmp(md, from->sha256, sizeof(md)) != 0)
    {
        ngx_snprintf(err, errlen, "shadow copy \"%s\" is not the file that "
                     "was checked (SHA-256 differs): not copied%Z",
                     from->shadow);
        ngx_free(data);
        return NGX_DECLINED;
    }

    /* the new name starts as the kept one did: the library's file name */
    base = ngx_http_lua_ffi_shadow_base(from->shadow);
    *ngx_cpystrn(name, base, sizeof(name)) = '\0';
    dot = (u_char *) strrchr((char *) name, '.');

    if (dot && dot != name) {
        *dot = '\0';
    }

    *to = *from;

    rc = ngx_http_lua_ffi_write_copy(name, data, st.st_size, to->shadow, err,
                                     errlen);

    ngx_free(data);

    return rc;
}


/*
 * Copies that stayed mapped after dlclose() in this process (see
 * image_close_fd): their descriptors stay open, and glibc knows each
 * mapping as "/proc/self/fd/FD". Mapping such a copy again must use that
 * name: dlopen() of the same inode under a new name would return the
 * mapping and add the new name to it for good (so that number could never
 * name another copy). Looked up by device and inode, before glibc is
 * asked anything.
 */

typedef struct {
    dev_t   dev;
    ino_t   ino;
    int     fd;
} ngx_http_lua_ffi_kept_t;

static ngx_http_lua_ffi_kept_t  *ngx_http_lua_ffi_kept;
static ngx_uint_t                ngx_http_lua_ffi_nkept;


static int
ngx_http_lua_ffi_image_kept_fd(int fd)
{
    ngx_uint_t    i;
    struct stat   st;

    if (fstat(fd, &st) == -1) {
        return -1;
    }

    for (i = 0; i < ngx_http_lua_ffi_nkept; i++) {
        if (ngx_http_lua_ffi_kept[i].dev == st.st_dev
            && ngx_http_lua_ffi_kept[i].ino == st.st_ino)
        {
            return ngx_http_lua_ffi_kept[i].fd;
        }
    }

    return -1;
}


static void
ngx_http_lua_ffi_image_keep_fd(int fd)
{
    struct stat               st;
    ngx_http_lua_ffi_kept_t  *k;

    if (ngx_http_lua_ffi_image_kept_fd(fd) == fd || fstat(fd, &st) == -1) {
        return;
    }

    k = ngx_alloc((ngx_http_lua_ffi_nkept + 1) * sizeof(*k), ngx_cycle->log);
    if (k == NULL) {
        return;
    }

    if (ngx_http_lua_ffi_nkept) {
        ngx_memcpy(k, ngx_http_lua_ffi_kept,
                   ngx_http_lua_ffi_nkept * sizeof(*k));
        ngx_free(ngx_http_lua_ffi_kept);
    }

    k[ngx_http_lua_ffi_nkept].dev = st.st_dev;
    k[ngx_http_lua_ffi_nkept].ino = st.st_ino;
    k[ngx_http_lua_ffi_nkept].fd = fd;
    ngx_http_lua_ffi_kept = k;
    ngx_http_lua_ffi_nkept++;
}


/*
 * Whether the library glibc knows by some name is the file fd is open on:
 * the mapping that holds its dynamic section names the same device and
 * inode in /proc/self/maps. Only asked when glibc answered a probe.
 */

static ngx_int_t
ngx_http_lua_ffi_image_same_file(void *dl, struct stat *st)
{
    FILE              *f;
    char               line[NGX_HTTP_LUA_FFI_PATHLEN + 128];
    ngx_int_t          same;
    unsigned int       maj, min;
    unsigned long      lo, hi, ino;
    uintptr_t          addr;
    struct link_map   *lm;

    if (dlinfo(dl, RTLD_DI_LINKMAP, &lm) != 0 || lm->l_ld == NULL) {
        return 0;
    }

    addr = (uintptr_t) lm->l_ld;

    f = fopen("/proc/self/maps", "re");
    if (f == NULL) {
        return 0;
    }

    same = 0;

    while (fgets(line, sizeof(line), f)) {
        if (sscanf(line, "%lx-%lx %*s %*s %x:%x %lu", &lo, &hi, &maj, &min,
                   &ino)
            != 5)
        {
            continue;
        }

        if (addr >= lo && addr < hi) {
            same = (makedev(maj, min) == st->st_dev && ino == st->st_ino);
            break;
        }
    }

    (void) fclose(f);

    return same;
}


/*
 * A descriptor whose "/proc/self/fd/N" was given to dlopen() and whose
 * library is closed: while glibc still knows a library by that name
 * (RTLD_NODELETE, a unique symbol of C++ or Rust), the descriptor stays
 * open, as the mapping, so that N never names another copy.
 */

static ngx_uint_t
ngx_http_lua_ffi_image_release_fd(int fd)
{
    void    *dl;
    u_char   proc[sizeof("/proc/self/fd/") + NGX_INT_T_LEN];

    *ngx_sprintf(proc, "/proc/self/fd/%d", fd) = '\0';

    dl = dlopen((char *) proc, RTLD_LAZY | RTLD_NOLOAD);
    if (dl) {
        (void) dlclose(dl);
        ngx_http_lua_ffi_image_keep_fd(fd);
        return 1;
    }

    (void) close(fd);
    return 0;
}


/*
 * The image of this very copy if this worker has it mapped (a canary's
 * image that drains or is idle, then promoted): glibc would hand back
 * that mapping for the same inode anyway.
 */

static ngx_http_lua_ffi_image_t *
ngx_http_lua_ffi_image_mapped(ngx_http_lua_ffi_library_t *lib,
    ngx_http_lua_ffi_version_t *v)
{
    ngx_queue_t               *q;
    ngx_http_lua_ffi_image_t  *img;

    if (v->shadow[0] == '\0') {
        return NULL;
    }

    for (q = ngx_queue_head(&lib->images);
         q != ngx_queue_sentinel(&lib->images);
         q = ngx_queue_next(q))
    {
        img = ngx_queue_data(q, ngx_http_lua_ffi_image_t, link);

        if (ngx_strcmp(img->shadow, v->shadow) == 0) {
            return img;
        }
    }

    return NULL;
}


/*
 * An image of version v: the one this worker has mapped of that copy, or
 * the copy mapped now. The callers treat both alike (refcount, pinned and
 * state are theirs to set); an image found gets the pin a new one would.
 */

ngx_http_lua_ffi_image_t *
ngx_http_lua_ffi_image_open(ngx_http_lua_ffi_library_t *lib,
    ngx_http_lua_ffi_version_t *v, u_char *err, size_t errlen)
{
    int                        mode, fd, kept;
    void                      *dl, *init;
    u_char                     proc[sizeof("/proc/self/fd/") + NGX_INT_T_LEN];
    size_t                     len;
    ngx_uint_t                 tries;
    struct stat                st;
    ngx_http_lua_ffi_image_t  *img;

    img = ngx_http_lua_ffi_image_mapped(lib, v);
    if (img) {
        img->pinned |= !lib->unpin
                       || img->pin_reason != NGX_HTTP_LUA_FFI_PIN_NONE;
        return img;
    }

    mode = RTLD_NOW | (lib->is_global ? RTLD_GLOBAL : RTLD_LOCAL);

    for (tries = 0; /* void */; tries++) {

        fd = ngx_http_lua_ffi_shadow_open(v, err, errlen);
        if (fd == -1) {
            return NULL;
        }

        kept = ngx_http_lua_ffi_image_kept_fd(fd);

        if (kept != -1) {
            /* this very copy (the file just checked) stayed mapped */
            (void) close(fd);
            fd = kept;
            break;
        }

        *ngx_sprintf(proc, "/proc/self/fd/%d", fd) = '\0';

        /* glibc would answer with whatever it already knows by that name */
        dl = dlopen((char *) proc, RTLD_LAZY | RTLD_NOLOAD);
        if (dl == NULL) {
            break;
        }

        /*
         * glibc knows the name now, whatever it was before: the
         * descriptor stays open for good, so that N never names another
         * copy. The same file mapped and not known here is mapped as it
         * is; another file known by this name is never mapped for it.
         */

        if (fstat(fd, &st) == 0
            && ngx_http_lua_ffi_image_same_file(dl, &st))
        {
            (void) dlclose(dl);
            ngx_http_lua_ffi_image_keep_fd(fd);
            kept = fd;
            break;
        }

        (void) dlclose(dl);

        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "ffi: \"%s\" names another mapped library: that "
                      "descriptor stays open, the copy is opened again",
                      proc);

        if (tries == 3) {
            ngx_snprintf(err, errlen, "\"%s\" already names a mapped "
                         "library%Z", proc);
            return NULL;
        }
    }

    *ngx_sprintf(proc, "/proc/self/fd/%d", fd) = '\0';

    /* threads that constructors start run where runtimes run */
    ngx_http_lua_ffi_cpus_enter();
    dl = dlopen((char *) proc, mode);
    ngx_http_lua_ffi_cpus_leave();

    /* constructors ran: nginx's signal handlers must still be nginx's */
    ngx_http_lua_ffi_signal_guard(ngx_cycle->log, &lib->path);

    if (dl == NULL) {
        ngx_snprintf(err, errlen, "dlopen(\"%V\") failed: %s%Z", &lib->path,
                     dlerror());
        if (kept == -1) {
            (void) ngx_http_lua_ffi_image_release_fd(fd);
        }
        return NULL;
    }

    init = dlsym(dl, "libffi_init");
    if (init == NULL) {
        ngx_snprintf(err, errlen, "\"%V\" has no libffi_init%Z", &lib->path);
        (void) dlclose(dl);
        if (kept == -1) {
            (void) ngx_http_lua_ffi_image_release_fd(fd);
        }
        return NULL;
    }

    len = ngx_strlen(v->shadow);

    img = ngx_calloc(sizeof(ngx_http_lua_ffi_image_t) + len + 1,
                     ngx_cycle->log);
    if (img == NULL) {
        (void) dlclose(dl);
        if (kept == -1) {
            (void) ngx_http_lua_ffi_image_release_fd(fd);
        }
        ngx_snprintf(err, errlen, "no memory%Z");
        return NULL;
    }

    img->library = lib;
    img->dl = dl;
    img->fd = fd;
    img->init = (int (*)(char *, void *)) init;
    img->shadow = (u_char *) &img[1];
    ngx_memcpy(img->shadow, v->shadow, len + 1);
    img->version = v->version;
    img->hash = v->hash;
    img->pin_reason = v->pin_reason;
    ngx_memcpy(img->build_id, v->build_id, sizeof(img->build_id));
    img->pinned = !lib->unpin
                  || v->pin_reason != NGX_HTTP_LUA_FFI_PIN_NONE;
    img->state = NGX_HTTP_LUA_FFI_IMG_LOADING;

    ngx_queue_insert_tail(&lib->images, &img->link);

    return img;
}


/*
 * dlclose() may leave the library mapped (RTLD_NODELETE, a unique symbol of
 * C++ or Rust): glibc then still knows it as "/proc/self/fd/N", and N must
 * never name another copy. Such a descriptor stays open, as the mapping.
 */

static void
ngx_http_lua_ffi_image_close_fd(ngx_http_lua_ffi_image_t *img)
{
    if (ngx_http_lua_ffi_image_release_fd(img->fd)) {
        ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                      "ffi: \"%V\" version %ui stays mapped after dlclose()",
                      &img->library->path, img->version);
    }
}


/*
 * The last runtime on an image is gone (its grace period already passed):
 * an unpinned image is unmapped, whether or not it is still current; the
 * next ngx.load_ffi maps the current version again.
 */

void
ngx_http_lua_ffi_image_unref(ngx_http_lua_ffi_image_t *img)
{
    ngx_http_lua_ffi_library_t  *lib = img->library;

    if (--img->refcount > 0) {
        return;
    }

    if (img->pinned) {
        if (img != lib->current) {
            img->state = NGX_HTTP_LUA_FFI_IMG_DRAINING;
        }

        return;
    }

    ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                  "ffi: closing \"%V\" version %ui", &lib->path,
                  img->version);

    if (dlclose(img->dl) != 0) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "ffi: dlclose(\"%V\") failed: %s", &lib->path,
                      dlerror());
    }

    ngx_http_lua_ffi_image_close_fd(img);

    if (img == lib->current) {
        lib->current = NULL;
    }

    ngx_queue_remove(&img->link);
    ngx_free(img);
}
