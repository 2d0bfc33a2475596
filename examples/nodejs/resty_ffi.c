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
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <node_api.h>

#include <ngx_http_lua_ffi.h>


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
