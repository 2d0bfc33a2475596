/*
 * Trust rules like OpenSSH's StrictModes: which files and folders may hold
 * code we load, judged by a walk from "/" on descriptors, never on paths.
 */

#include "ngx_http_lua_ffi_manager.h"


#define NGX_HTTP_LUA_FFI_MAX_FILE   (1024 * 1024 * 1024)
#define NGX_HTTP_LUA_FFI_MAX_LINKS  40


/* The owners we trust: root, and the user that maps the code. */

static ngx_uint_t
ngx_http_lua_ffi_trusted_owner(struct stat *st, ngx_uid_t uid)
{
    return st->st_uid == 0 || st->st_uid == uid;
}


/*
 * The folder as an ancestor of a library: a trusted owner, and nobody
 * else may write to it, except a sticky folder of root's such as /tmp
 * (nobody can rename or delete what they do not own there). *sticky says
 * it was such a folder: fine on the way, never as a library's own folder.
 */

static ngx_int_t
ngx_http_lua_ffi_check_dir(struct stat *st, u_char *path, ngx_uid_t uid,
    ngx_uint_t *sticky, u_char *err, size_t errlen)
{
    if (!ngx_http_lua_ffi_trusted_owner(st, uid)) {
        ngx_snprintf(err, errlen, "not loading: folder \"%s\" is owned by "
                     "uid %d, neither root nor the workers' user%Z", path,
                     (int) st->st_uid);
        return NGX_ERROR;
    }

    *sticky = 0;

    if (!(st->st_mode & (S_IWGRP | S_IWOTH))) {
        return NGX_OK;
    }

    if ((st->st_mode & S_ISVTX) && st->st_uid == 0) {
        *sticky = 1;
        return NGX_OK;
    }

    ngx_snprintf(err, errlen, "not loading: folder \"%s\" is writable by "
                 "group or others%Z", path);

    return NGX_ERROR;
}


static ngx_int_t
ngx_http_lua_ffi_check_file(struct stat *st, u_char *path, ngx_uid_t uid,
    u_char *err, size_t errlen)
{
    if (!S_ISREG(st->st_mode) || st->st_size > NGX_HTTP_LUA_FFI_MAX_FILE) {
        ngx_snprintf(err, errlen, "\"%s\" is not a regular file of a "
                     "sensible size%Z", path);
        return NGX_ERROR;
    }

    if (!ngx_http_lua_ffi_trusted_owner(st, uid)) {
        ngx_snprintf(err, errlen, "not loading \"%s\": owned by uid %d, "
                     "neither root nor the workers' user%Z", path,
                     (int) st->st_uid);
        return NGX_ERROR;
    }

    if (st->st_mode & (S_IWGRP | S_IWOTH)) {
        ngx_snprintf(err, errlen, "not loading \"%s\": writable by group "
                     "or others%Z", path);
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * Walks path from "/" one component at a time, each opened relative to
 * the folder opened and checked before it, never by a path again: a folder
 * renamed or a symlink swapped meanwhile cannot send us somewhere we did
 * not check. Every folder on the way must belong to root or the workers'
 * user (uid) and be writable by nobody else (a sticky root-owned folder is
 * fine on the way, not as the file's own folder). A symlink is followed
 * only if it belongs to one of them too (its folder was checked already).
 *
 * WALK_FILE: returns the file opened for reading, once the descriptor was
 * judged (a regular file, same owners, writable by nobody else); WALK_NAME:
 * only where the name leads (an O_PATH descriptor of a regular file; its
 * own rules apply when its bytes are read); WALK_FOLDER: the folder itself.
 * *dir gets the file's folder (the caller closes it), real the path without
 * symlinks, *base its last component. -1 and err on refusal.
 */

int
ngx_http_lua_ffi_open_trusted(u_char *path, ngx_uid_t uid, ngx_uint_t walk,
    int *dir, u_char *real, u_char **base, u_char *err, size_t errlen)
{
    int           cur, next, fd;
    u_char        rest[NGX_HTTP_LUA_FFI_PATHLEN * 2];
    u_char        name[NAME_MAX + 1], link[NGX_HTTP_LUA_FFI_PATHLEN];
    u_char       *p, *q, *end, *r, *slash, *start;
    size_t        len, rlen, nlen;
    ssize_t       n;
    ngx_uint_t    links, sticky;
    struct stat   st, fst;

    len = ngx_strlen(path);

    if (path[0] != '/' || len >= NGX_HTTP_LUA_FFI_PATHLEN) {
        ngx_snprintf(err, errlen, "\"%s\" is not an absolute path of a "
                     "sensible length%Z", path);
        return -1;
    }

    ngx_memcpy(rest, path, len + 1);
    real[0] = '\0';
    r = real;
    links = 0;
    *dir = -1;

    cur = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);

    if (cur == -1 || fstat(cur, &st) == -1
        || ngx_http_lua_ffi_check_dir(&st, (u_char *) "/", uid, &sticky,
                                      err, errlen)
           != NGX_OK)
    {
        goto failed;
    }

    p = rest;

    for ( ;; ) {
        while (*p == '/') {
            p++;
        }

        if (*p == '\0') {
            if (walk == NGX_HTTP_LUA_FFI_WALK_FOLDER) {
                /* the folder itself, checked as an ancestor */
                return cur;
            }

            ngx_snprintf(err, errlen, "\"%s\" is a folder, not a library%Z",
                         path);
            goto failed;
        }

        start = p;

        for (q = p; *q && *q != '/'; q++) { /* void */ }

        if ((size_t) (q - p) > NAME_MAX) {
            ngx_snprintf(err, errlen, "a name in \"%s\" is too long%Z", path);
            goto failed;
        }

        ngx_memcpy(name, p, q - p);
        name[q - p] = '\0';

        for (end = q; *end == '/'; end++) { /* void */ }

        p = end;

        if (ngx_strcmp(name, ".") == 0) {
            continue;
        }

        if (ngx_strcmp(name, "..") == 0) {
            /* the folder we came from: checked, but check it again */
            next = openat(cur, "..", O_PATH | O_DIRECTORY | O_CLOEXEC);
            (void) close(cur);
            cur = next;

            for (slash = r; slash > real && *slash != '/'; slash--) {
                /* void */
            }
            r = slash;
            *r = '\0';

            if (cur == -1 || fstat(cur, &st) == -1
                || ngx_http_lua_ffi_check_dir(&st, r == real
                                              ? (u_char *) "/" : real,
                                              uid, &sticky, err, errlen)
                   != NGX_OK)
            {
                goto failed;
            }

            continue;
        }

        nlen = ngx_strlen(name);

        if ((size_t) (r - real) + 1 + nlen >= NGX_HTTP_LUA_FFI_PATHLEN) {
            ngx_snprintf(err, errlen, "\"%s\" is too long%Z", path);
            goto failed;
        }

        rlen = r - real;
        r = ngx_sprintf(r, "/%s", name);
        *r = '\0';

        next = openat(cur, (char *) name, O_PATH | O_NOFOLLOW | O_CLOEXEC);

        if (next == -1 || fstat(next, &st) == -1) {
            ngx_snprintf(err, errlen, "cannot open \"%s\": %s%Z", real,
                         strerror(errno));
            if (next != -1) {
                (void) close(next);
            }
            goto failed;
        }

        if (S_ISLNK(st.st_mode)) {
            if (!ngx_http_lua_ffi_trusted_owner(&st, uid)) {
                ngx_snprintf(err, errlen, "not loading \"%s\": symlink "
                             "\"%s\" is owned by uid %d, neither root nor "
                             "the workers' user%Z", path, real,
                             (int) st.st_uid);
                (void) close(next);
                goto failed;
            }

            n = readlinkat(next, "", (char *) link, sizeof(link) - 1);
            (void) close(next);

            if (n <= 0 || ++links > NGX_HTTP_LUA_FFI_MAX_LINKS
                || (size_t) n + 1 + ngx_strlen(p) >= sizeof(rest))
            {
                ngx_snprintf(err, errlen, "cannot follow symlink \"%s\"%Z",
                             real);
                goto failed;
            }

            /* the target, then what was left of the path (p == end) */
            len = ngx_strlen(p);
            ngx_memmove(rest + n + 1, p, len + 1);
            ngx_memcpy(rest, link, n);

            /* the last name: a trailing "/" would make it a folder */
            rest[n] = len ? '/' : '\0';
            p = rest;

            r = real + rlen;
            *r = '\0';

            if (link[0] == '/') {
                (void) close(cur);
                cur = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
                r = real;
                *r = '\0';

                if (cur == -1) {
                    goto failed;
                }
            }

            continue;
        }

        if (S_ISDIR(st.st_mode)) {
            if (ngx_http_lua_ffi_check_dir(&st, real, uid, &sticky,
                                           err, errlen)
                != NGX_OK)
            {
                (void) close(next);
                goto failed;
            }

            (void) close(cur);
            cur = next;
            continue;
        }

        if (*end != '\0' || !S_ISREG(st.st_mode)) {
            ngx_snprintf(err, errlen, "\"%s\" is not a %s%Z", real,
                         *end ? "folder" : "regular file");
            (void) close(next);
            goto failed;
        }

        if (walk == NGX_HTTP_LUA_FFI_WALK_NAME) {
            /* the file's own rules apply when its bytes are read */
            *dir = cur;
            *base = real + rlen + 1;
            return next;
        }

        (void) close(next);

        if (sticky) {
            ngx_snprintf(err, errlen, "not loading \"%s\": its folder is "
                         "writable by others (a sticky folder such as /tmp "
                         "is fine on the way, not as a library's own)%Z",
                         real);
            goto failed;
        }

        fd = openat(cur, (char *) name,
                    O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);

        if (fd == -1 || fstat(fd, &fst) == -1) {
            ngx_snprintf(err, errlen, "cannot open \"%s\": %s%Z", real,
                         strerror(errno));
            if (fd != -1) {
                (void) close(fd);
            }
            goto failed;
        }

        if (fst.st_dev != st.st_dev || fst.st_ino != st.st_ino) {
            /* replaced meanwhile (a drop): judge the name again */
            (void) close(fd);

            if (++links > NGX_HTTP_LUA_FFI_MAX_LINKS) {
                ngx_snprintf(err, errlen, "\"%s\" keeps changing%Z", real);
                goto failed;
            }

            p = start;
            r = real + rlen;
            *r = '\0';
            continue;
        }

        if (ngx_http_lua_ffi_check_file(&fst, real, uid, err, errlen)
            != NGX_OK)
        {
            (void) close(fd);
            goto failed;
        }

        *dir = cur;
        *base = real + rlen + 1;

        return fd;
    }

failed:

    if (err[0] == '\0') {
        ngx_snprintf(err, errlen, "cannot open \"%s\": %s%Z", path,
                     strerror(errno));
    }

    if (cur != -1) {
        (void) close(cur);
    }

    return -1;
}
