/*
 * The hot-reload manager's interfaces: images (shadow copies, ELF checks,
 * dlopen), the shared zone that carries reloads to every worker, and the
 * admin endpoint that starts them.
 */

#ifndef _NGX_HTTP_LUA_FFI_MANAGER_H_INCLUDED_
#define _NGX_HTTP_LUA_FFI_MANAGER_H_INCLUDED_


#include "ngx_http_lua_ffi_module.h"
#include "ngx_http_lua_ffi_elf.h"


#define NGX_HTTP_LUA_FFI_PATHLEN   1024
#define NGX_HTTP_LUA_FFI_NAMELEN   256
#define NGX_HTTP_LUA_FFI_SHA256_LEN  32

#ifndef NGX_HTTP_UNPROCESSABLE_ENTITY
#define NGX_HTTP_UNPROCESSABLE_ENTITY  422
#endif


/* What a worker needs to map one version: agreed on in the shared zone. */
typedef struct {
    ngx_uint_t        version;
    uint64_t          hash;        /* sha256's first 8 bytes, for equality */
    u_char            sha256[NGX_HTTP_LUA_FFI_SHA256_LEN];  /* checked bytes */
    off_t             size;        /* of those bytes */
    int               pin_reason;
    char              build_id[41];
    u_char            shadow[NGX_HTTP_LUA_FFI_PATHLEN];
} ngx_http_lua_ffi_version_t;


/* trust: what ngx_http_lua_ffi_open_trusted() opens at the end */
#define NGX_HTTP_LUA_FFI_WALK_FILE    0   /* the file, to read it */
#define NGX_HTTP_LUA_FFI_WALK_FOLDER  1   /* the path is a folder */
#define NGX_HTTP_LUA_FFI_WALK_NAME    2   /* only where the name leads */

int ngx_http_lua_ffi_open_trusted(u_char *path, ngx_uid_t uid,
    ngx_uint_t walk, int *dir, u_char *real, u_char **base, u_char *err,
    size_t errlen);

/* image */
ngx_int_t ngx_http_lua_ffi_shadow_init(ngx_cycle_t *cycle,
    ngx_http_lua_ffi_main_conf_t *fmcf, ngx_core_conf_t *ccf);
void ngx_http_lua_ffi_shadow_cleanup(ngx_cycle_t *cycle);
ngx_int_t ngx_http_lua_ffi_shadow_create(ngx_str_t *path,
    ngx_http_lua_ffi_version_t *v, ngx_uint_t strict, u_char *err,
    size_t errlen);
void ngx_http_lua_ffi_shadow_remove(ngx_http_lua_ffi_version_t *v);
ngx_int_t ngx_http_lua_ffi_shadow_copy(ngx_http_lua_ffi_version_t *from,
    ngx_http_lua_ffi_version_t *to, u_char *err, size_t errlen);
ngx_http_lua_ffi_image_t *ngx_http_lua_ffi_image_open(
    ngx_http_lua_ffi_library_t *lib, ngx_http_lua_ffi_version_t *v,
    u_char *err, size_t errlen);
void ngx_http_lua_ffi_image_unref(ngx_http_lua_ffi_image_t *img);
ngx_int_t ngx_http_lua_ffi_library_resolve(ngx_str_t *name, ngx_str_t *path,
    u_char *err, size_t errlen);

/* registry */
ngx_http_lua_ffi_library_t *ngx_http_lua_ffi_registry_find(ngx_str_t *name);
ngx_int_t ngx_http_lua_ffi_registry_prepare(ngx_http_lua_ffi_library_t *lib,
    ngx_http_lua_ffi_version_t *v, u_char *err, size_t errlen);
ngx_int_t ngx_http_lua_ffi_registry_commit(ngx_http_lua_ffi_library_t *lib,
    ngx_http_lua_ffi_version_t *v, u_char *err, size_t errlen);
ngx_uint_t ngx_http_lua_ffi_registry_prepared(
    ngx_http_lua_ffi_library_t *lib);
ngx_uint_t ngx_http_lua_ffi_registry_behind(ngx_http_lua_ffi_library_t *lib,
    ngx_uint_t version);
void ngx_http_lua_ffi_registry_drained(ngx_http_lua_ffi_runtime_t *rt);
void ngx_http_lua_ffi_registry_answered(ngx_http_lua_ffi_runtime_t *rt);
void ngx_http_lua_ffi_registry_abort(ngx_http_lua_ffi_library_t *lib);
void ngx_http_lua_ffi_registry_drop_side(ngx_http_lua_ffi_library_t *lib,
    size_t slot, ngx_http_lua_ffi_image_t *img);
ngx_http_lua_ffi_runtime_t *ngx_http_lua_ffi_runtime_start(
    ngx_http_lua_ffi_image_t *img, ngx_uint_t generation, ngx_str_t *cfg,
    ngx_uint_t has_cfg, ngx_uint_t max_queue, int *rc, u_char *err,
    size_t errlen);
u_char *ngx_http_lua_ffi_registry_status(u_char *p, u_char *last);
ngx_http_lua_ffi_library_t *ngx_http_lua_ffi_registry_library(
    ngx_str_t *path);

/* shared zone and the reload protocol */
ngx_int_t ngx_http_lua_ffi_shm_add(ngx_conf_t *cf,
    ngx_http_lua_ffi_main_conf_t *fmcf);
ngx_int_t ngx_http_lua_ffi_manager_init_worker(ngx_cycle_t *cycle,
    ngx_http_lua_ffi_main_conf_t *fmcf);
void ngx_http_lua_ffi_manager_exit_worker(ngx_cycle_t *cycle);
ngx_int_t ngx_http_lua_ffi_shm_current(ngx_str_t *path, ngx_str_t *name,
    ngx_str_t *cfg, ngx_uint_t flags, ngx_http_lua_ffi_version_t *v,
    u_char *err, size_t errlen);
void ngx_http_lua_ffi_shm_add_cfg(ngx_str_t *path, ngx_str_t *cfg,
    ngx_uint_t has_cfg);
void ngx_http_lua_ffi_shm_release(ngx_str_t *path);
/* a command not carried out here yet is, before a new handle starts */
void ngx_http_lua_ffi_reload_catch_up(void);

/* ngx.load_ffi's opts.trial = false (the flags of registry_load) */
#define NGX_HTTP_LUA_FFI_LOAD_NO_TRIAL  0x4

/* body: the JSON answer; msg: the error in plain text, or NULL */
typedef void (*ngx_http_lua_ffi_reload_done_pt)(void *data, ngx_int_t status,
    u_char *body, size_t len, u_char *msg);

#define NGX_HTTP_LUA_FFI_RELOAD_IF_CHANGED  0x1   /* else 304, no reload */
#define NGX_HTTP_LUA_FFI_RELOAD_STRICT      0x2   /* file ownership rules */
#define NGX_HTTP_LUA_FFI_RELOAD_ROLLBACK    0x4   /* a version of the history */

ngx_int_t ngx_http_lua_ffi_reload_start(ngx_str_t *name, ngx_uint_t flags,
    ngx_http_lua_ffi_reload_done_pt done, void *data);
ngx_int_t ngx_http_lua_ffi_rollback_start(ngx_str_t *name,
    ngx_uint_t version, ngx_http_lua_ffi_reload_done_pt done, void *data);
void ngx_http_lua_ffi_shm_note_drop(ngx_str_t *path, u_char *event,
    u_char *outcome);
ngx_uint_t ngx_http_lua_ffi_shm_set_watched(ngx_str_t *path);
ngx_uint_t ngx_http_lua_ffi_shm_watch_actor(ngx_str_t *path);
ngx_uint_t ngx_http_lua_ffi_shm_drop_pending(ngx_str_t *path);
ngx_int_t ngx_http_lua_ffi_status_start(
    ngx_http_lua_ffi_reload_done_pt done, void *data);
void ngx_http_lua_ffi_reload_cancel(void *data);

/* trial */
ngx_int_t ngx_http_lua_ffi_trial(u_char *shadow, ngx_str_t *path,
    ngx_str_t *cfgs, ngx_uint_t ncfgs, ngx_uint_t global,
    ngx_uint_t pin_reason, u_char *err, size_t errlen);

/* watcher */
ngx_int_t ngx_http_lua_ffi_watch_init(ngx_cycle_t *cycle);
void ngx_http_lua_ffi_watch_exit(ngx_cycle_t *cycle);
void ngx_http_lua_ffi_watch_library(ngx_http_lua_ffi_library_t *lib);

/* admin */
char *ngx_http_lua_ffi_admin(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);

/*
 * canary (ngx_http_lua_ffi_canary.c): POST reload?canary=P[&key=VAR],
 * promote, and rollback while a canary runs (409 "no canary running"
 * otherwise); they answer as a reload does.
 */
ngx_int_t ngx_http_lua_ffi_canary_start(ngx_str_t *name, ngx_uint_t percent,
    ngx_str_t *key, ngx_http_lua_ffi_reload_done_pt done, void *data);
ngx_int_t ngx_http_lua_ffi_canary_promote(ngx_str_t *name,
    ngx_http_lua_ffi_reload_done_pt done, void *data);
ngx_int_t ngx_http_lua_ffi_canary_retire(ngx_str_t *name,
    ngx_http_lua_ffi_reload_done_pt done, void *data);

/* ffi_canary_guard margin=RATIO min_calls=N window=TIME | off */
char *ngx_http_lua_ffi_canary_guard_conf(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);

/* helpers */
u_char *ngx_http_lua_ffi_json_str(u_char *p, u_char *last, u_char *s,
    size_t len);

/* digests */
ngx_int_t ngx_http_lua_ffi_digest_init(ngx_log_t *log);
ngx_int_t ngx_http_lua_ffi_sha256(u_char *data, size_t len, u_char *md);
ngx_int_t ngx_http_lua_ffi_sha256_fd(int fd, off_t size, u_char *md);
#define NGX_HTTP_LUA_FFI_CFG_TAG  8

ngx_int_t ngx_http_lua_ffi_cfg_tag(u_char *cfg, size_t len, u_char *tag);
u_char *ngx_http_lua_ffi_cfg_tag_text(u_char *p, u_char *last, u_char *cfg,
    size_t len);
u_char *ngx_http_lua_ffi_json_cfg_tag(u_char *p, u_char *last, u_char *cfg,
    size_t len);


#endif /* _NGX_HTTP_LUA_FFI_MANAGER_H_INCLUDED_ */
