/*
 * resty_ffi.node: the addon that require("resty_ffi") returns to modules run
 * by libffi_nodejs: poll_task(), get_req() and respond() over the runtime ABI.
 *
 * As upstream's addon: tq and tasks are BigInts, poll_task() returns 0n for
 * the NULL task (stop polling now), get_req() returns the request as a
 * string (UTF-8) and respond(task, rc[, data]) copies data, a string, into
 * a malloc()ed response. Beyond upstream: get_req_buffer() returns the
 * request as a Buffer, and respond() also takes a Buffer (exact bytes).
 * All are thread-safe: a worker thread may poll while another responds.
 *
 * The runtime services (src/ngx_http_lua_ffi.h): log(tq, level, msg) one
 * line into nginx's error.log (tq may be 0n: no runtime named);
 * dict_get(dict, key) -> Buffer or null, dict_set(dict, key, value[,
 * exptime]) (value null deletes), dict_incr(dict, key[, by[, init]]) ->
 * Number, on lua_shared_dict zones; they throw on errors.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <node_api.h>

#include <ngx_http_lua_ffi.h>


/* resolved when nginx's module has them; a host without them throws */
#pragma weak ngx_http_lua_ffi_log
#pragma weak ngx_http_lua_ffi_dict_get
#pragma weak ngx_http_lua_ffi_dict_set
#pragma weak ngx_http_lua_ffi_dict_incr


static int ffi_addon_pointer(napi_env env, napi_value value, void **ptr);
static int ffi_addon_args(napi_env env, napi_callback_info info,
    size_t want, size_t *argc, napi_value *argv);
static napi_value ffi_addon_poll_task(napi_env env, napi_callback_info info);
static napi_value ffi_addon_get_req(napi_env env, napi_callback_info info);
static napi_value ffi_addon_get_req_buffer(napi_env env,
    napi_callback_info info);
static napi_value ffi_addon_request(napi_env env, napi_callback_info info,
    int as_buffer);
static napi_value ffi_addon_respond(napi_env env, napi_callback_info info);
static char *ffi_addon_copy(napi_env env, napi_value data, int *len);
static napi_value ffi_addon_log(napi_env env, napi_callback_info info);
static napi_value ffi_addon_dict_get(napi_env env, napi_callback_info info);
static napi_value ffi_addon_dict_set(napi_env env, napi_callback_info info);
static napi_value ffi_addon_dict_incr(napi_env env, napi_callback_info info);
static napi_value ffi_addon_init(napi_env env, napi_value exports);


/* A BigInt (as upstream) or a Number holding an address. */

static int
ffi_addon_pointer(napi_env env, napi_value value, void **ptr)
{
    bool             lossless;
    int64_t          n;
    uint64_t         u;
    napi_valuetype   type;

    if (napi_typeof(env, value, &type) != napi_ok) {
        return -1;
    }

    if (type == napi_bigint) {
        if (napi_get_value_bigint_uint64(env, value, &u, &lossless)
            != napi_ok || !lossless)
        {
            return -1;
        }

        *ptr = (void *) (uintptr_t) u;
        return 0;
    }

    if (type == napi_number) {
        if (napi_get_value_int64(env, value, &n) != napi_ok) {
            return -1;
        }

        *ptr = (void *) (uintptr_t) n;
        return 0;
    }

    return -1;
}


/* Gets at least want arguments (at most 3) or throws. */

static int
ffi_addon_args(napi_env env, napi_callback_info info, size_t want,
    size_t *argc, napi_value *argv)
{
    *argc = 3;

    if (napi_get_cb_info(env, info, argc, argv, NULL, NULL) != napi_ok
        || *argc < want)
    {
        napi_throw_type_error(env, NULL, "too few arguments");
        return -1;
    }

    return 0;
}


static napi_value
ffi_addon_poll_task(napi_env env, napi_callback_info info)
{
    void        *tq, *task;
    size_t       argc;
    napi_value   argv[3], ret;

    if (ffi_addon_args(env, info, 1, &argc, argv) != 0) {
        return NULL;
    }

    if (ffi_addon_pointer(env, argv[0], &tq) != 0 || tq == NULL) {
        napi_throw_type_error(env, NULL, "poll_task(tq): tq is no queue");
        return NULL;
    }

    /* blocks this thread (a worker's, usually) until a task comes */
    task = ngx_http_lua_ffi_task_poll(tq);

    if (napi_create_bigint_uint64(env, (uint64_t) (uintptr_t) task, &ret)
        != napi_ok)
    {
        return NULL;
    }

    return ret;
}


static napi_value
ffi_addon_get_req(napi_env env, napi_callback_info info)
{
    return ffi_addon_request(env, info, 0);
}


static napi_value
ffi_addon_get_req_buffer(napi_env env, napi_callback_info info)
{
    return ffi_addon_request(env, info, 1);
}


/* The request as a string or a Buffer; undefined for a call without one. */

static napi_value
ffi_addon_request(napi_env env, napi_callback_info info, int as_buffer)
{
    int          len;
    char        *req;
    void        *task;
    size_t       argc;
    napi_value   argv[3], ret;

    if (ffi_addon_args(env, info, 1, &argc, argv) != 0) {
        return NULL;
    }

    if (ffi_addon_pointer(env, argv[0], &task) != 0 || task == NULL) {
        napi_throw_type_error(env, NULL, "get_req(task): task is no task");
        return NULL;
    }

    len = 0;
    req = ngx_http_lua_ffi_get_req(task, &len);

    if (req == NULL) {
        napi_get_undefined(env, &ret);
        return ret;
    }

    if (as_buffer) {
        if (napi_create_buffer_copy(env, len, req, NULL, &ret) != napi_ok) {
            return NULL;
        }

    } else if (napi_create_string_utf8(env, req, len, &ret) != napi_ok) {
        return NULL;
    }

    return ret;
}


static napi_value
ffi_addon_respond(napi_env env, napi_callback_info info)
{
    int              len;
    char            *rsp;
    void            *task;
    size_t           argc;
    int32_t          rc;
    napi_value       argv[3];
    napi_valuetype   type;

    if (ffi_addon_args(env, info, 2, &argc, argv) != 0) {
        return NULL;
    }

    if (ffi_addon_pointer(env, argv[0], &task) != 0 || task == NULL) {
        napi_throw_type_error(env, NULL, "respond(task, rc, data): "
                              "task is no task");
        return NULL;
    }

    if (napi_get_value_int32(env, argv[1], &rc) != napi_ok) {
        napi_throw_type_error(env, NULL, "respond(task, rc, data): "
                              "rc is no number");
        return NULL;
    }

    rsp = NULL;
    len = 0;

    if (argc > 2
        && napi_typeof(env, argv[2], &type) == napi_ok
        && type != napi_undefined && type != napi_null)
    {
        rsp = ffi_addon_copy(env, argv[2], &len);
        if (rsp == NULL) {
            return NULL;
        }
    }

    /* the host free()s rsp; the task must not be touched after this */
    ngx_http_lua_ffi_respond(task, rc, rsp, len);

    return NULL;
}


/*
 * A malloc()ed, NUL-terminated copy of a string (as UTF-8) or a Buffer;
 * *len is its length, so an empty one reads "" (rsp_len 0, NUL-terminated).
 */

static char *
ffi_addon_copy(napi_env env, napi_value data, int *len)
{
    bool     is_buffer;
    char    *copy;
    void    *bytes;
    size_t   size;

    if (napi_is_buffer(env, data, &is_buffer) != napi_ok) {
        return NULL;
    }

    if (is_buffer) {
        if (napi_get_buffer_info(env, data, &bytes, &size) != napi_ok) {
            return NULL;
        }

    } else if (napi_get_value_string_utf8(env, data, NULL, 0, &size)
               != napi_ok)
    {
        napi_throw_type_error(env, NULL, "respond(task, rc, data): "
                              "data is no string or Buffer");
        return NULL;
    }

    if (size > INT32_MAX - 1) {
        napi_throw_range_error(env, NULL, "respond(): data too long");
        return NULL;
    }

    copy = malloc(size + 1);
    if (copy == NULL) {
        napi_throw_error(env, NULL, "respond(): out of memory");
        return NULL;
    }

    if (is_buffer) {
        memcpy(copy, bytes, size);
        copy[size] = '\0';

    } else if (napi_get_value_string_utf8(env, data, copy, size + 1, &size)
               != napi_ok)
    {
        free(copy);
        return NULL;
    }

    *len = (int) size;

    return copy;
}


/* a string argument, malloc()ed and NUL-terminated; NULL: thrown */

static char *
ffi_addon_string(napi_env env, napi_value value, const char *what,
    size_t *len)
{
    char    *s;
    size_t   size;

    if (napi_get_value_string_utf8(env, value, NULL, 0, &size) != napi_ok) {
        napi_throw_type_error(env, NULL, what);
        return NULL;
    }

    s = malloc(size + 1);
    if (s == NULL) {
        napi_throw_error(env, NULL, "out of memory");
        return NULL;
    }

    (void) napi_get_value_string_utf8(env, value, s, size + 1, &size);

    if (len) {
        *len = size;
    }

    return s;
}


static napi_value
ffi_addon_log(napi_env env, napi_callback_info info)
{
    int          rc;
    char        *msg;
    void        *tq;
    size_t       argc, len;
    int32_t      level;
    napi_value   argv[3], result;

    if (ffi_addon_args(env, info, 3, &argc, argv) != 0) {
        return NULL;
    }

    if (ffi_addon_pointer(env, argv[0], &tq) != 0
        || napi_get_value_int32(env, argv[1], &level) != napi_ok
        || level < 1 || level > 8)
    {
        napi_throw_type_error(env, NULL, "log(tq, level 1..8, msg)");
        return NULL;
    }

    msg = ffi_addon_string(env, argv[2], "log(tq, level, msg): msg", &len);
    if (msg == NULL) {
        return NULL;
    }

    if (ngx_http_lua_ffi_log == NULL) {
        free(msg);
        napi_throw_error(env, NULL, "this nginx has no log service");
        return NULL;
    }

    /* len 0 means NUL-terminated, which msg is */
    rc = ngx_http_lua_ffi_log(tq, level, msg, (int) len);
    free(msg);

    (void) napi_get_boolean(env, rc == 0, &result);

    return result;
}


static napi_value
ffi_addon_dict_fail(napi_env env, int rc)
{
    const char  *why;

    switch (rc) {
    case NGX_HTTP_LUA_FFI_DICT_ENODICT:
        why = "no such lua_shared_dict";
        break;
    case NGX_HTTP_LUA_FFI_DICT_ENOMEM:
        why = "no memory in the lua_shared_dict";
        break;
    case NGX_HTTP_LUA_FFI_DICT_ETYPE:
        why = "not a number (or a list) in the lua_shared_dict";
        break;
    default:
        why = "bad key or exptime";
        break;
    }

    napi_throw_error(env, NULL, why);

    return NULL;
}


/* up to cap arguments, dict and key first; -1: thrown */

static int
ffi_addon_dict_args(napi_env env, napi_callback_info info, size_t cap,
    napi_value *argv, size_t *argc, char **dict, char **key, size_t *key_len)
{
    if (ngx_http_lua_ffi_dict_get == NULL) {
        napi_throw_error(env, NULL, "this nginx has no shared dicts");
        return -1;
    }

    *argc = cap;

    if (napi_get_cb_info(env, info, argc, argv, NULL, NULL) != napi_ok
        || *argc < 2)
    {
        napi_throw_type_error(env, NULL, "too few arguments");
        return -1;
    }

    if (*argc > cap) {
        *argc = cap;
    }

    *dict = ffi_addon_string(env, argv[0], "dict: a string", NULL);
    if (*dict == NULL) {
        return -1;
    }

    *key = ffi_addon_string(env, argv[1], "key: a string", key_len);
    if (*key == NULL) {
        free(*dict);
        return -1;
    }

    return 0;
}


static napi_value
ffi_addon_dict_get(napi_env env, napi_callback_info info)
{
    int          rc, len;
    char        *dict, *key, *val;
    size_t       argc, key_len;
    napi_value   argv[2], result;

    if (ffi_addon_dict_args(env, info, 2, argv, &argc, &dict, &key, &key_len)
        != 0)
    {
        return NULL;
    }

    rc = ngx_http_lua_ffi_dict_get(NULL, dict, key, (int) key_len, &val,
                                   &len);
    free(dict);
    free(key);

    if (rc == NGX_HTTP_LUA_FFI_DICT_NOT_FOUND) {
        (void) napi_get_null(env, &result);
        return result;
    }

    if (rc != NGX_HTTP_LUA_FFI_DICT_OK) {
        return ffi_addon_dict_fail(env, rc);
    }

    rc = napi_create_buffer_copy(env, len, val, NULL, &result);
    free(val);

    return rc == napi_ok ? result : NULL;
}


static napi_value
ffi_addon_dict_set(napi_env env, napi_callback_info info)
{
    int              rc, copied;
    char            *dict, *key, *val;
    bool             is_buffer;
    void            *bytes;
    double           exptime;
    size_t           argc, key_len, val_len;
    napi_value       argv[4];
    napi_valuetype   type;

    if (ffi_addon_dict_args(env, info, 4, argv, &argc, &dict, &key, &key_len)
        != 0)
    {
        return NULL;
    }

    exptime = 0;
    val = NULL;
    val_len = 0;
    bytes = NULL;
    copied = 0;

    if (argc > 3 && napi_get_value_double(env, argv[3], &exptime) != napi_ok)
    {
        exptime = -1;
    }

    if (argc > 2 && napi_typeof(env, argv[2], &type) == napi_ok
        && type != napi_null && type != napi_undefined)
    {
        if (napi_is_buffer(env, argv[2], &is_buffer) == napi_ok && is_buffer) {
            (void) napi_get_buffer_info(env, argv[2], &bytes, &val_len);

            /* "" for an empty Buffer: NULL would delete */
            val = bytes ? bytes : (char *) "";

        } else {
            val = ffi_addon_string(env, argv[2], "value: a string or Buffer",
                                   &val_len);
            if (val == NULL) {
                free(dict);
                free(key);
                return NULL;
            }

            copied = 1;
        }
    }

    rc = ngx_http_lua_ffi_dict_set(NULL, dict, key, (int) key_len, val,
                                   (int) val_len, exptime);

    /* a string was copied; a Buffer's bytes are the Buffer's */
    if (copied) {
        free(val);
    }

    free(dict);
    free(key);

    if (rc != NGX_HTTP_LUA_FFI_DICT_OK) {
        return ffi_addon_dict_fail(env, rc);
    }

    return NULL;
}


static napi_value
ffi_addon_dict_incr(napi_env env, napi_callback_info info)
{
    int          rc;
    char        *dict, *key;
    double       by, init, result;
    size_t       argc, key_len;
    napi_value   argv[4], value;

    if (ffi_addon_dict_args(env, info, 4, argv, &argc, &dict, &key, &key_len)
        != 0)
    {
        return NULL;
    }

    by = 1;
    init = 0;

    if ((argc > 2 && napi_get_value_double(env, argv[2], &by) != napi_ok)
        || (argc > 3 && napi_get_value_double(env, argv[3], &init) != napi_ok))
    {
        free(dict);
        free(key);
        napi_throw_type_error(env, NULL, "dict_incr(dict, key, by, init): "
                              "numbers");
        return NULL;
    }

    rc = ngx_http_lua_ffi_dict_incr(NULL, dict, key, (int) key_len, by, init,
                                    &result);
    free(dict);
    free(key);

    if (rc != NGX_HTTP_LUA_FFI_DICT_OK) {
        return ffi_addon_dict_fail(env, rc);
    }

    (void) napi_create_double(env, result, &value);

    return value;
}


static napi_value
ffi_addon_init(napi_env env, napi_value exports)
{
    size_t                     i;
    napi_value                 fn;

    static const struct {
        const char            *name;
        napi_callback          cb;
    } methods[] = {
        { "poll_task", ffi_addon_poll_task },
        { "get_req", ffi_addon_get_req },
        { "get_req_buffer", ffi_addon_get_req_buffer },
        { "respond", ffi_addon_respond },
        { "log", ffi_addon_log },
        { "dict_get", ffi_addon_dict_get },
        { "dict_set", ffi_addon_dict_set },
        { "dict_incr", ffi_addon_dict_incr },
    };

    for (i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        if (napi_create_function(env, methods[i].name, NAPI_AUTO_LENGTH,
                                 methods[i].cb, NULL, &fn)
            != napi_ok
            || napi_set_named_property(env, exports, methods[i].name, fn)
               != napi_ok)
        {
            return NULL;
        }
    }

    return exports;
}


NAPI_MODULE(resty_ffi, ffi_addon_init)
