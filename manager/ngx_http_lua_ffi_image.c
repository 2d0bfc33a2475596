/*
 * Library images: finding a library file, checking it with libelf, making
 * its shadow copy and mapping that copy with dlopen().
 */

#include <dlfcn.h>

#include "ngx_http_lua_ffi_manager.h"


#define NGX_HTTP_LUA_FFI_MAX_FILE  (1024 * 1024 * 1024)


/* set in the master, inherited by the workers */
static u_char      ngx_http_lua_ffi_shadow_dir[NGX_HTTP_LUA_FFI_PATHLEN];
static ngx_uint_t  ngx_http_lua_ffi_shadow_seq;


/*
 * One private directory per master process, writable by the workers' user
 * only, so that nobody else can swap a shadow copy under a worker.
 */

ngx_int_t
ngx_http_lua_ffi_shadow_init(ngx_cycle_t *cycle,
    ngx_http_lua_ffi_main_conf_t *fmcf, ngx_core_conf_t *ccf)
{
    u_char  *p;

    p = ngx_snprintf(ngx_http_lua_ffi_shadow_dir,
                     NGX_HTTP_LUA_FFI_PATHLEN - 1, "%V/nginx-ffi.%P",
                     &fmcf->shadow_path, ngx_pid);
    *p = '\0';

    if (mkdir((char *) ngx_http_lua_ffi_shadow_dir, 0700) == -1
        && ngx_errno != NGX_EEXIST)
    {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, ngx_errno,
                      "ffi: mkdir(\"%s\") failed (ffi_shadow_path)",
                      ngx_http_lua_ffi_shadow_dir);
        return NGX_ERROR;
    }

    if (geteuid() == 0 && ccf->user != (ngx_uid_t) NGX_CONF_UNSET_UINT) {
        if (chown((char *) ngx_http_lua_ffi_shadow_dir, ccf->user,
                  ccf->group) == -1)
        {
            ngx_log_error(NGX_LOG_EMERG, cycle->log, ngx_errno,
                          "ffi: chown(\"%s\") failed",
                          ngx_http_lua_ffi_shadow_dir);
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


void
ngx_http_lua_ffi_shadow_cleanup(ngx_cycle_t *cycle)
{
    u_char      path[NGX_HTTP_LUA_FFI_PATHLEN + 256];
    ngx_dir_t   dir;
    ngx_str_t   name;

    if (ngx_http_lua_ffi_shadow_dir[0] == '\0') {
        return;
    }

    name.data = ngx_http_lua_ffi_shadow_dir;
    name.len = ngx_strlen(ngx_http_lua_ffi_shadow_dir);

    if (ngx_open_dir(&name, &dir) == NGX_OK) {
        while (ngx_read_dir(&dir) == NGX_OK) {
            if (ngx_de_name(&dir)[0] == '.') {
                continue;
            }

            *ngx_snprintf(path, sizeof(path) - 1, "%s/%s",
                          ngx_http_lua_ffi_shadow_dir,
                          ngx_de_name(&dir)) = '\0';
            (void) unlink((char *) path);
        }

        (void) ngx_close_dir(&dir);
    }

    (void) rmdir((char *) ngx_http_lua_ffi_shadow_dir);
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
 * The result is the real path: the library's identity in the registry.
 */

ngx_int_t
ngx_http_lua_ffi_library_resolve(ngx_str_t *name, ngx_str_t *path,
    u_char *err, size_t errlen)
{
    u_char                        *p, *q, *env, *last;
    u_char                         file_buf[NGX_HTTP_LUA_FFI_NAMELEN + 8];
    u_char                         buf[NGX_HTTP_LUA_FFI_PATHLEN];
    ngx_str_t                      file, *dir;
    ngx_uint_t                     i, found;
    ngx_http_lua_ffi_main_conf_t  *fmcf;
    static u_char                  real[PATH_MAX];

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
        dir = fmcf->library_path->elts;

        for (i = 0; i < fmcf->library_path->nelts; i++) {
            if (ngx_http_lua_ffi_search_dir(dir[i].data, dir[i].len, &file,
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

    if (realpath((char *) buf, (char *) real) == NULL) {
        ngx_snprintf(err, errlen, "realpath(\"%s\") failed: %s%Z", buf,
                     strerror(errno));
        return NGX_ERROR;
    }

    path->data = real;
    path->len = ngx_strlen(real);

    return NGX_OK;
}


/*
 * Never load code that someone else could have written: not from a folder
 * anyone may write to. For files dropped on a watched path (strict), the
 * file must also belong to root or to the workers' user, and neither the
 * file nor its folder may be writable by group or others.
 */

ngx_int_t
ngx_http_lua_ffi_file_trusted(ngx_str_t *path, ngx_uint_t strict,
    u_char *err, size_t errlen)
{
    u_char       dir[NGX_HTTP_LUA_FFI_PATHLEN], *slash;
    struct stat  st, dst;

    if (path->len >= NGX_HTTP_LUA_FFI_PATHLEN) {
        ngx_snprintf(err, errlen, "path too long%Z");
        return NGX_ERROR;
    }

    ngx_memcpy(dir, path->data, path->len);
    dir[path->len] = '\0';

    for (slash = dir + path->len; slash > dir && *slash != '/'; slash--) {
        /* void */
    }

    if (*slash != '/') {
        ngx_snprintf(err, errlen, "\"%V\" is not an absolute path%Z", path);
        return NGX_ERROR;
    }

    *(slash == dir ? slash + 1 : slash) = '\0';

    if (stat((char *) dir, &dst) == -1
        || stat((char *) path->data, &st) == -1)
    {
        ngx_snprintf(err, errlen, "cannot stat \"%V\": %s%Z", path,
                     strerror(errno));
        return NGX_ERROR;
    }

    if (dst.st_mode & S_IWOTH) {
        ngx_snprintf(err, errlen, "not loading \"%V\": its folder \"%s\" "
                     "is writable by anyone%Z", path, dir);
        return NGX_ERROR;
    }

    if (!strict) {
        return NGX_OK;
    }

    if (st.st_uid != 0 && st.st_uid != geteuid()) {
        ngx_snprintf(err, errlen, "not loading \"%V\": owned by uid %d, "
                     "neither root nor the workers' user%Z", path,
                     (int) st.st_uid);
        return NGX_ERROR;
    }

    if ((st.st_mode | dst.st_mode) & (S_IWGRP | S_IWOTH)) {
        ngx_snprintf(err, errlen, "not loading \"%V\": it or its folder "
                     "\"%s\" is writable by group or others%Z", path, dir);
        return NGX_ERROR;
    }

    return NGX_OK;
}


static uint64_t
ngx_http_lua_ffi_hash(u_char *p, size_t len)
{
    uint64_t  h = 0xcbf29ce484222325ULL;

    while (len--) {
        h ^= *p++;
        h *= 0x100000001b3ULL;
    }

    return h;
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
 * The whole file, or NULL. *busy is set when the file was written to or
 * replaced while we read it: what we got may be half a file, and a newer
 * version is on its way.
 */

static u_char *
ngx_http_lua_ffi_read_file(ngx_str_t *path, size_t *size, ngx_uint_t *busy,
    u_char *err, size_t errlen)
{
    int          fd;
    u_char      *buf, *p;
    ssize_t      n;
    size_t       left;
    struct stat  st, after, now;

    *busy = 0;

    fd = open((char *) path->data, O_RDONLY | O_CLOEXEC);
    if (fd == -1) {
        ngx_snprintf(err, errlen, "open(\"%V\") failed: %s%Z", path,
                     strerror(errno));
        return NULL;
    }

    if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode)
        || st.st_size > NGX_HTTP_LUA_FFI_MAX_FILE)
    {
        ngx_snprintf(err, errlen, "\"%V\" is not a regular file of a "
                     "sensible size%Z", path);
        (void) close(fd);
        return NULL;
    }

    buf = ngx_alloc(st.st_size ? st.st_size : 1, ngx_cycle->log);
    if (buf == NULL) {
        (void) close(fd);
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

    if (fstat(fd, &after) == -1 || stat((char *) path->data, &now) == -1
        || !ngx_http_lua_ffi_same_file(&st, &after)
        || !ngx_http_lua_ffi_same_file(&st, &now))
    {
        *busy = 1;
        ngx_snprintf(err, errlen, "\"%V\" changed while it was read%Z",
                     path);
        (void) close(fd);
        ngx_free(buf);
        return NULL;
    }

    (void) close(fd);

    *size = p - buf;

    return buf;
}


static ngx_int_t
ngx_http_lua_ffi_write_file(u_char *path, u_char *data, size_t len)
{
    int      fd;
    ssize_t  n;

    fd = open((char *) path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0700);
    if (fd == -1) {
        return NGX_ERROR;
    }

    while (len) {
        n = write(fd, data, len);

        if (n == -1 && errno == EINTR) {
            continue;
        }

        if (n <= 0) {
            (void) close(fd);
            (void) unlink((char *) path);
            return NGX_ERROR;
        }

        data += n;
        len -= n;
    }

    if (close(fd) == -1) {
        (void) unlink((char *) path);
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * Reads the library file once, checks those very bytes with libelf and
 * writes them to a new shadow copy: what is checked is what gets mapped,
 * whatever happens to the original file meanwhile. Every copy has a name
 * of its own, even for bytes seen before: dlopen() of a name still open
 * would hand back the old mapping instead of a fresh one.
 */

ngx_int_t
ngx_http_lua_ffi_shadow_create(ngx_str_t *path,
    ngx_http_lua_ffi_version_t *v, ngx_uint_t strict, u_char *err,
    size_t errlen)
{
    u_char                       *data, *base, *p;
    u_char                        tmp[NGX_HTTP_LUA_FFI_PATHLEN + 64];
    size_t                        size;
    ngx_uint_t                    busy;
    ngx_http_lua_ffi_elf_info_t   info;

    if (ngx_http_lua_ffi_file_trusted(path, strict, err, errlen) != NGX_OK) {
        return NGX_DECLINED;
    }

    data = ngx_http_lua_ffi_read_file(path, &size, &busy, err, errlen);
    if (data == NULL) {
        return busy ? NGX_AGAIN : NGX_ERROR;
    }

    if (ngx_http_lua_ffi_elf_inspect_mem(data, size, &info) != 0) {
        ngx_snprintf(err, errlen, "\"%V\": %s%Z", path, info.error);
        ngx_free(data);
        return NGX_DECLINED;
    }

    v->hash = ngx_http_lua_ffi_hash(data, size);
    v->pin_reason = info.pin_reason;
    ngx_memcpy(v->build_id, info.build_id, sizeof(v->build_id));

    base = path->data + path->len;
    while (base > path->data && base[-1] != '/') {
        base--;
    }

    p = ngx_snprintf(v->shadow, NGX_HTTP_LUA_FFI_PATHLEN - 1,
                     "%s/%*s.%P.%ui", ngx_http_lua_ffi_shadow_dir,
                     (size_t) (path->data + path->len - base), base, ngx_pid,
                     ++ngx_http_lua_ffi_shadow_seq);
    *p = '\0';

    *ngx_snprintf(tmp, sizeof(tmp) - 1, "%s.%P.tmp", v->shadow, ngx_pid) = '\0';

    (void) unlink((char *) tmp);

    if (ngx_http_lua_ffi_write_file(tmp, data, size) != NGX_OK
        || rename((char *) tmp, (char *) v->shadow) == -1)
    {
        ngx_snprintf(err, errlen, "cannot write shadow copy \"%s\": %s%Z",
                     v->shadow, strerror(errno));
        (void) unlink((char *) tmp);
        ngx_free(data);
        return NGX_ERROR;
    }

    ngx_free(data);

    return NGX_OK;
}


void
ngx_http_lua_ffi_shadow_remove(ngx_http_lua_ffi_version_t *v)
{
    if (v->shadow[0]) {
        (void) unlink((char *) v->shadow);
    }
}


ngx_http_lua_ffi_image_t *
ngx_http_lua_ffi_image_open(ngx_http_lua_ffi_library_t *lib,
    ngx_http_lua_ffi_version_t *v, u_char *err, size_t errlen)
{
    int                        mode;
    void                      *dl, *init;
    size_t                     len;
    ngx_http_lua_ffi_image_t  *img;

    mode = RTLD_NOW | (lib->is_global ? RTLD_GLOBAL : RTLD_LOCAL);

    dl = dlopen((char *) v->shadow, mode);
    if (dl == NULL) {
        ngx_snprintf(err, errlen, "dlopen(\"%V\") failed: %s%Z", &lib->path,
                     dlerror());
        return NULL;
    }

    init = dlsym(dl, "libffi_init");
    if (init == NULL) {
        ngx_snprintf(err, errlen, "\"%V\" has no libffi_init%Z", &lib->path);
        (void) dlclose(dl);
        return NULL;
    }

    len = ngx_strlen(v->shadow);

    img = ngx_calloc(sizeof(ngx_http_lua_ffi_image_t) + len + 1,
                     ngx_cycle->log);
    if (img == NULL) {
        (void) dlclose(dl);
        ngx_snprintf(err, errlen, "no memory%Z");
        return NULL;
    }

    img->library = lib;
    img->dl = dl;
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

    if (img == lib->current) {
        lib->current = NULL;
    }

    ngx_queue_remove(&img->link);
    ngx_free(img);
}
