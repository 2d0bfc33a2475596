/*
 * The admin endpoint (`ffi_admin`): POST reload?lib=NAME (&canary=P),
 * promote and rollback, and GET status, JSON in and out, answering once
 * every worker has done its part; GET metrics
 * (admin/ngx_http_lua_ffi_admin_metrics.c).
 */

#include "ngx_http_lua_ffi_manager.h"
#include "ngx_http_lua_ffi_admin_args.h"
#include "ngx_http_lua_ffi_metrics.h"


static ngx_int_t ngx_http_lua_ffi_admin_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_lua_ffi_admin_var_known(ngx_http_request_t *r,
    ngx_str_t *key);
static void ngx_http_lua_ffi_admin_done(void *data, ngx_int_t status,
    u_char *body, size_t len, u_char *msg);
static void ngx_http_lua_ffi_admin_cleanup(void *data);
static ngx_int_t ngx_http_lua_ffi_admin_rollback(ngx_http_request_t *r,
    ngx_str_t *name);


char *
ngx_http_lua_ffi_admin(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_lua_ffi_admin_handler;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_lua_ffi_admin_send(ngx_http_request_t *r, ngx_int_t status,
    u_char *body, size_t len)
{
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    r->headers_out.status = status;

    if (status == NGX_HTTP_UNPROCESSABLE_ENTITY) {
        /* nginx 1.22 has no reason phrase of its own for 422 */
        ngx_str_set(&r->headers_out.status_line, "422 Unprocessable Entity");
    }
    r->headers_out.content_length_n = len + 1;
    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    b = ngx_create_temp_buf(r->pool, len + 1);
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->last = ngx_cpymem(b->last, body, len);
    *b->last++ = '\n';
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


static ngx_int_t
ngx_http_lua_ffi_admin_error(ngx_http_request_t *r, ngx_int_t status,
    char *msg)
{
    u_char  buf[NGX_HTTP_LUA_FFI_ERRLEN + 32], *p;

    p = ngx_cpymem(buf, "{\"error\":", sizeof("{\"error\":") - 1);
    p = ngx_http_lua_ffi_json_str(p, buf + sizeof(buf) - 1, (u_char *) msg,
                                  ngx_strlen(msg));
    *p++ = '}';

    return ngx_http_lua_ffi_admin_send(r, status, buf, p - buf);
}


static ngx_int_t
ngx_http_lua_ffi_admin_not_allowed(ngx_http_request_t *r, char *allow)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Allow");
    h->value.data = (u_char *) allow;
    h->value.len = ngx_strlen(allow);

    return ngx_http_lua_ffi_admin_error(r, NGX_HTTP_NOT_ALLOWED,
                                        "method not allowed");
}


/* ffi_admin_token: "Authorization: Bearer TOKEN", compared in full. */

static ngx_int_t
ngx_http_lua_ffi_admin_authorized(ngx_http_request_t *r, ngx_str_t *token)
{
    u_char            diff;
    size_t            i;
    ngx_str_t         given;
    ngx_table_elt_t  *auth;

    if (token->len == 0) {
        return 1;
    }

    auth = r->headers_in.authorization;
    if (auth == NULL || auth->value.len <= sizeof("Bearer ") - 1
        || ngx_strncasecmp(auth->value.data, (u_char *) "Bearer ",
                           sizeof("Bearer ") - 1) != 0)
    {
        return 0;
    }

    given.data = auth->value.data + sizeof("Bearer ") - 1;
    given.len = auth->value.len - (sizeof("Bearer ") - 1);

    if (given.len != token->len) {
        return 0;
    }

    for (diff = 0, i = 0; i < given.len; i++) {
        diff |= given.data[i] ^ token->data[i];
    }

    return diff == 0;
}


static ngx_table_elt_t *
ngx_http_lua_ffi_admin_header(ngx_http_request_t *r, char *name)
{
    size_t            len;
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    len = ngx_strlen(name);

    for (part = &r->headers_in.headers.part; part; part = part->next) {
        h = part->elts;

        for (i = 0; i < part->nelts; i++) {
            if (h[i].key.len == len
                && ngx_strncasecmp(h[i].key.data, (u_char *) name, len) == 0)
            {
                return &h[i];
            }
        }
    }

    return NULL;
}


/*
 * DNS rebinding: a page of a name its owner has pointed at this address
 * sends a Host, an Origin and a Sec-Fetch-Site that all agree. A request
 * from a browser is served only when its Host names this server as the
 * server knows itself: an address, localhost, or one of its server_names
 * (exact ones: a wildcard or a regex may cover a name someone else owns).
 */

static ngx_int_t
ngx_http_lua_ffi_admin_known_host(ngx_http_request_t *r)
{
    ngx_str_t                 *host, *name;
    ngx_http_core_srv_conf_t  *cscf;

    host = &r->headers_in.server;

    if (host->len == 0) {
        return 0;
    }

    if (ngx_http_lua_ffi_admin_host_literal(host->data, host->len)) {
        return 1;
    }

    /*
     * The server's own name: nginx keeps only the first server_name after
     * configuration (the list lives in the configuration's temporary pool).
     */
    cscf = ngx_http_get_module_srv_conf(r, ngx_http_core_module);
    name = &cscf->server_name;

    return name->len == host->len
           && name->len > 0
           && name->data[0] != '~'
           && ngx_strlchr(name->data, name->data + name->len, '*') == NULL
           && ngx_strncasecmp(name->data, host->data, host->len) == 0;
}


/*
 * A page in a browser may send a request here from any site: a bodyless
 * POST is a CORS "simple request", sent without asking. Browsers say where
 * a request comes from (Origin, Sec-Fetch-Site); anything but the endpoint
 * itself, or the user typing the URL, is refused. Tools such as curl send
 * neither header. This is no authentication: ffi_admin_token is.
 */

static ngx_int_t
ngx_http_lua_ffi_admin_cross_site(ngx_http_request_t *r)
{
    int               https;
    ngx_str_t        *v;
    ngx_table_elt_t  *h, *origin;

    h = ngx_http_lua_ffi_admin_header(r, "Sec-Fetch-Site");
    origin = ngx_http_lua_ffi_admin_header(r, "Origin");

    if (h == NULL && origin == NULL) {
        return 0;
    }

    if (!ngx_http_lua_ffi_admin_known_host(r)) {
        return 1;
    }

    if (h) {
        v = &h->value;

        if (!((v->len == 11
               && ngx_strncasecmp(v->data, (u_char *) "same-origin", 11) == 0)
              || (v->len == 4
                  && ngx_strncasecmp(v->data, (u_char *) "none", 4) == 0)))
        {
            return 1;
        }
    }

    h = origin;

    if (h == NULL) {
        return 0;
    }

#if (NGX_HTTP_SSL)
    https = (r->connection->ssl != NULL);
#else
    https = 0;
#endif

    if (r->headers_in.host == NULL) {
        return 1;
    }

    return !ngx_http_lua_ffi_admin_same_origin(h->value.data, h->value.len,
                                               r->headers_in.host->value.data,
                                               r->headers_in.host->value.len,
                                               https);
}


static ngx_int_t
ngx_http_lua_ffi_admin_lib(ngx_http_request_t *r, ngx_str_t *name)
{
    int  rc;

    name->data = ngx_pnalloc(r->pool, NGX_HTTP_LUA_FFI_NAMELEN);
    if (name->data == NULL) {
        return NGX_ERROR;
    }

    rc = ngx_http_lua_ffi_admin_lib_arg(r->args.data, r->args.len,
                                        name->data, NGX_HTTP_LUA_FFI_NAMELEN,
                                        &name->len);

    return rc == NGX_HTTP_LUA_FFI_ARG_OK ? NGX_OK
           : rc == NGX_HTTP_LUA_FFI_ARG_MISSING ? NGX_DECLINED : NGX_ERROR;
}


/*
 * reload's canary=P (1-99) and key=VAR (an ngx.var name, "$" optional):
 * *percent 0 without canary; NGX_ERROR for anything malformed.
 */

static ngx_int_t
ngx_http_lua_ffi_admin_canary_args(ngx_http_request_t *r,
    ngx_uint_t *percent, ngx_str_t *key)
{
    u_char     c;
    size_t     i;
    ngx_int_t  n;
    ngx_str_t  v;

    ngx_str_null(key);
    *percent = 0;

    if (ngx_http_arg(r, (u_char *) "canary", 6, &v) != NGX_OK) {
        return (ngx_http_arg(r, (u_char *) "key", 3, &v) == NGX_OK)
               ? NGX_ERROR : NGX_OK;
    }

    n = ngx_atoi(v.data, v.len);
    if (n < 1 || n > 99) {
        return NGX_ERROR;
    }

    *percent = n;

    if (ngx_http_arg(r, (u_char *) "key", 3, &v) != NGX_OK) {
        return NGX_OK;
    }

    if (v.len > 3 && ngx_strncasecmp(v.data, (u_char *) "%24", 3) == 0) {
        v.data += 3;
        v.len -= 3;

    } else if (v.len && v.data[0] == '$') {
        v.data++;
        v.len--;
    }

    if (v.len == 0 || v.len >= 64) {
        return NGX_ERROR;
    }

    for (i = 0; i < v.len; i++) {
        c = ngx_tolower(v.data[i]);

        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
        {
            return NGX_ERROR;
        }
    }

    key->data = ngx_pnalloc(r->pool, v.len);
    if (key->data == NULL) {
        return NGX_ERROR;
    }

    key->len = v.len;
    ngx_memcpy(key->data, v.data, v.len);

    return ngx_http_lua_ffi_admin_var_known(r, key);
}


/*
 * A key names a variable as ngx.var does (lowercased, in place): one
 * defined in the configuration or one of a prefix family (arg_, http_,
 * cookie_, ...). NGX_DECLINED for a name no request can have: accepted,
 * it would route every call by call and log "unknown variable" each time.
 */

static ngx_int_t
ngx_http_lua_ffi_admin_var_known(ngx_http_request_t *r, ngx_str_t *key)
{
    ngx_uint_t                  i, hash;
    ngx_http_variable_t        *pv;
    ngx_http_core_main_conf_t  *cmcf;

    cmcf = ngx_http_get_module_main_conf(r, ngx_http_core_module);

    hash = ngx_hash_strlow(key->data, key->data, key->len);

    if (ngx_hash_find(&cmcf->variables_hash, hash, key->data, key->len)) {
        return NGX_OK;
    }

    pv = cmcf->prefix_variables.elts;

    for (i = 0; i < cmcf->prefix_variables.nelts; i++) {
        if (key->len >= pv[i].name.len
            && ngx_strncmp(key->data, pv[i].name.data, pv[i].name.len) == 0)
        {
            return NGX_OK;
        }
    }

    return NGX_DECLINED;
}


static ngx_int_t
ngx_http_lua_ffi_admin_start(int endpoint, ngx_str_t *name,
    ngx_uint_t percent, ngx_str_t *key, ngx_http_request_t *r)
{
    switch (endpoint) {

    case NGX_HTTP_LUA_FFI_ADMIN_PROMOTE:
        return ngx_http_lua_ffi_canary_promote(name,
                                               ngx_http_lua_ffi_admin_done, r);

    default:
        if (percent) {
            return ngx_http_lua_ffi_canary_start(name, percent, key,
                                                 ngx_http_lua_ffi_admin_done,
                                                 r);
        }

        return ngx_http_lua_ffi_reload_start(name, 0,
                                             ngx_http_lua_ffi_admin_done, r);
    }
}


static ngx_int_t
ngx_http_lua_ffi_admin_handler(ngx_http_request_t *r)
{
    int                            endpoint;
    ngx_int_t                      rc;
    u_char                         msg[160];
    ngx_str_t                      rel, name, key;
    ngx_uint_t                     percent;
    ngx_http_cleanup_t            *cln;
    ngx_http_core_loc_conf_t      *clcf;
    ngx_http_lua_ffi_main_conf_t  *fmcf;

    fmcf = ngx_http_get_module_main_conf(r, ngx_http_lua_ffi_module);
    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    rel = r->uri;

    if (!clcf->exact_match && !clcf->regex && rel.len >= clcf->name.len) {
        rel.data += clcf->name.len;
        rel.len -= clcf->name.len;
    }

    endpoint = ngx_http_lua_ffi_admin_endpoint(rel.data, rel.len);

    if (ngx_http_lua_ffi_admin_cross_site(r)) {
        ngx_http_discard_request_body(r);
        return ngx_http_lua_ffi_admin_error(r, NGX_HTTP_FORBIDDEN,
                                   "cross-site request refused (Origin or "
                                   "Sec-Fetch-Site names another site)");
    }

    if (!ngx_http_lua_ffi_admin_authorized(r, &fmcf->admin_token)) {
        ngx_http_discard_request_body(r);
        return ngx_http_lua_ffi_admin_error(r, NGX_HTTP_UNAUTHORIZED,
                                            "missing or wrong token");
    }

    if (endpoint == NGX_HTTP_LUA_FFI_ADMIN_STATUS
        || endpoint == NGX_HTTP_LUA_FFI_ADMIN_METRICS)
    {
        if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
            ngx_http_discard_request_body(r);
            return ngx_http_lua_ffi_admin_not_allowed(r, "GET, HEAD");
        }

    } else if (endpoint == NGX_HTTP_LUA_FFI_ADMIN_RELOAD
               || endpoint == NGX_HTTP_LUA_FFI_ADMIN_PROMOTE
               || endpoint == NGX_HTTP_LUA_FFI_ADMIN_ROLLBACK)
    {
        if (r->method != NGX_HTTP_POST) {
            ngx_http_discard_request_body(r);
            return ngx_http_lua_ffi_admin_not_allowed(r, "POST");
        }

    } else {
        ngx_http_discard_request_body(r);
        return ngx_http_lua_ffi_admin_error(r, NGX_HTTP_NOT_FOUND,
                     "no such admin endpoint: use reload, promote, "
                     "rollback, status or metrics");
    }

    if (r->headers_in.content_length_n > 0 || r->headers_in.chunked) {
        ngx_http_discard_request_body(r);
        return ngx_http_lua_ffi_admin_error(r, NGX_HTTP_BAD_REQUEST,
                                            "the request takes no body");
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    if (endpoint == NGX_HTTP_LUA_FFI_ADMIN_METRICS) {
        /* from shared memory, at once: no worker is asked */
        return ngx_http_lua_ffi_admin_metrics(r);
    }

    cln = ngx_http_cleanup_add(r, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_http_lua_ffi_admin_cleanup;
    cln->data = r;

    if (endpoint == NGX_HTTP_LUA_FFI_ADMIN_STATUS) {
        r->main->count++;

        if (ngx_http_lua_ffi_status_start(ngx_http_lua_ffi_admin_done, r)
            != NGX_OK)
        {
            r->main->count--;
            return ngx_http_lua_ffi_admin_error(r,
                                       NGX_HTTP_INTERNAL_SERVER_ERROR,
                                       "status is not available");
        }

        return NGX_DONE;
    }

    rc = ngx_http_lua_ffi_admin_lib(r, &name);

    if (rc == NGX_DECLINED) {
        return ngx_http_lua_ffi_admin_error(r, NGX_HTTP_BAD_REQUEST,
                                            "missing lib argument");
    }

    if (rc != NGX_OK) {
        return ngx_http_lua_ffi_admin_error(r, NGX_HTTP_BAD_REQUEST,
                                            "bad lib argument");
    }

    if (endpoint == NGX_HTTP_LUA_FFI_ADMIN_ROLLBACK) {
        return ngx_http_lua_ffi_admin_rollback(r, &name);
    }

    percent = 0;

    rc = (endpoint == NGX_HTTP_LUA_FFI_ADMIN_RELOAD)
         ? ngx_http_lua_ffi_admin_canary_args(r, &percent, &key) : NGX_OK;

    if (rc == NGX_DECLINED) {
        *ngx_snprintf(msg, sizeof(msg) - 1,
                      "no variable \"%V\": key=VARIABLE names an nginx "
                      "variable (arg_NAME, cookie_NAME, http_NAME or one "
                      "the configuration defines)", &key) = '\0';
        return ngx_http_lua_ffi_admin_error(r, NGX_HTTP_BAD_REQUEST,
                                            (char *) msg);
    }

    if (rc != NGX_OK) {
        return ngx_http_lua_ffi_admin_error(r, NGX_HTTP_BAD_REQUEST,
                       "bad canary argument: canary=P (1-99), key=VARIABLE "
                       "(letters, digits, _)");
    }

    r->main->count++;

    if (ngx_http_lua_ffi_admin_start(endpoint, &name, percent, &key, r)
        != NGX_OK)
    {
        r->main->count--;
        return ngx_http_lua_ffi_admin_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                            "reload is not available");
    }

    return NGX_DONE;
}


/*
 * POST rollback?lib=NAME[&version=V]: answered as a reload is; during a
 * canary, without a version, it retires the canary (the protocol decides,
 * under the shared zone's lock).
 */

static ngx_int_t
ngx_http_lua_ffi_admin_rollback(ngx_http_request_t *r, ngx_str_t *name)
{
    int                 rc;
    unsigned long long  version;

    version = 0;
    rc = ngx_http_lua_ffi_admin_version_arg(r->args.data, r->args.len,
                                            &version);

    if (rc == NGX_HTTP_LUA_FFI_ARG_BAD) {
        return ngx_http_lua_ffi_admin_error(r, NGX_HTTP_BAD_REQUEST,
                                            "bad version argument: a "
                                            "version number (1, 2, ...)");
    }

    r->main->count++;

    if (ngx_http_lua_ffi_rollback_start(name, (ngx_uint_t) version,
                                        ngx_http_lua_ffi_admin_done, r)
        != NGX_OK)
    {
        r->main->count--;
        return ngx_http_lua_ffi_admin_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                            "rollback is not available");
    }

    return NGX_DONE;
}


static void
ngx_http_lua_ffi_admin_done(void *data, ngx_int_t status, u_char *body,
    size_t len, u_char *msg)
{
    ngx_http_request_t  *r = data;

    ngx_http_finalize_request(r,
                        ngx_http_lua_ffi_admin_send(r, status, body, len));
}


static void
ngx_http_lua_ffi_admin_cleanup(void *data)
{
    ngx_http_lua_ffi_reload_cancel(data);
}
