/*
 * libffi_java: lua-resty-ffi's generic loader for Java. One JVM per process;
 * each libffi_init(cfg, tq) calls a static method of the class cfg names.
 *
 * cfg is "<class>[?],<method>,<rest>", as upstream: the loader calls
 * "public static int <method>(String rest, long tq)" and the class runs its
 * own poll thread, calling the runtime ABI itself (upstream's classes do
 * that with jnr-ffi). "?" loads the class through a new class loader on
 * every init, so a runtime restart picks up recompiled classes.
 *
 * The class path is the folder of the library file nginx loaded (nginx
 * maps a copy of it, and says which file), then $CLASSPATH, then Debian's
 * jnr-ffi jars. $JAVA_OPTS (space separated) adds options to the JVM, which
 * is created on the first init and lives as long as the process: a JVM
 * cannot be unloaded, so this library pins itself (never dlclose()d).
 *
 * System.out and System.err become lines of nginx's error.log through the
 * host's ngx_http_lua_ffi_log() (resty.ffi.NginxLog, carried as bytes).
 */

#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <libgen.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jni.h>

/* FreshClassLoader_class[], FreshClassLoader_class_len: made by the Makefile */
#include "FreshClassLoader.h"
/* NginxLog_class[], NginxLog_class_len: likewise */
#include "NginxLog.h"


#define FFI_JAVA_MAX_OPTIONS  64
#define FFI_JAVA_INIT_SIG     "(Ljava/lang/String;J)I"
#define FFI_JAVA_LOAD_SIG                                                     \
    "(Ljava/lang/String;Ljava/lang/String;)Ljava/lang/Class;"

/* Debian's jars that jnr-ffi needs, colon separated; set by the Makefile */
#ifndef FFI_JAVA_DEPS
#define FFI_JAVA_DEPS  ""
#endif


typedef struct {
    char       *class_name;      /* dotted: demo.echo.App */
    char       *method;
    char       *rest;
    int         fresh;           /* the "?" suffix */
} ffi_java_cfg_t;


typedef struct {
    char       *class_path;      /* the whole -Djava.class.path value */
    int         rc;
} ffi_java_boot_t;


int libffi_init(char *cfg, void *tq);

/* the host's, where it has it (ours does): the file we were loaded from */
const char *ngx_http_lua_ffi_library_path(void *tq) __attribute__((weak));

/* the host's logging service (src/ngx_http_lua_ffi.h), where it has it */
int ngx_http_lua_ffi_log(void *tq, int level, const char *msg, int len)
    __attribute__((weak));

static void ffi_java_log(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
static char *ffi_java_join(const char *a, const char *b);
static char *ffi_java_user_path(void *tq);
static int ffi_java_start_vm(void *tq);
static void *ffi_java_boot(void *data);
static int ffi_java_boot_options(JavaVMOption *options, char *class_path,
    char *java_opts);
static int ffi_java_define_fresh_loader(JNIEnv *env);
static int ffi_java_define_log(JNIEnv *env, jobject system_loader);
static void ffi_java_bind(JNIEnv *env, void *tq);
static int ffi_java_parse_cfg(char *buf, ffi_java_cfg_t *cfg);
static jclass ffi_java_find_class(JNIEnv *env, ffi_java_cfg_t *cfg);
static int ffi_java_call(JNIEnv *env, ffi_java_cfg_t *cfg, void *tq);
static int ffi_java_exception(JNIEnv *env, const char *what,
    const char *name);


/* all state is per process: one JVM serves every runtime of this library */
static pthread_mutex_t  ffi_java_lock = PTHREAD_MUTEX_INITIALIZER;
static JavaVM          *ffi_java_vm;
static int              ffi_java_vm_failed;
static char            *ffi_java_fresh_path;   /* where "?" classes are */
static jclass           ffi_java_fresh_class;  /* a global reference */
static jmethodID        ffi_java_fresh_load;
static jclass           ffi_java_log_class;    /* a global reference */
static jmethodID        ffi_java_log_bind;


int
libffi_init(char *cfg, void *tq)
{
    int                 rc, attached;
    char               *buf;
    JNIEnv             *env;
    sigset_t            async, saved;
    ffi_java_cfg_t      parsed;
    JavaVMAttachArgs    attach;

    if (cfg == NULL) {
        ffi_java_log("no cfg: expected \"<class>[?],<method>,<rest>\"");
        return 1;
    }

    buf = strdup(cfg);
    if (buf == NULL) {
        ffi_java_log("out of memory");
        return 1;
    }

    if (ffi_java_parse_cfg(buf, &parsed) != 0) {
        ffi_java_log("bad cfg \"%s\": expected \"<class>[?],<method>,<rest>\"",
                     cfg);
        free(buf);
        return 1;
    }

    /*
     * Threads inherit the signal mask of their creator: the JVM's threads
     * and those the class starts in init must never take nginx's signals
     * (SIGQUIT, SIGHUP, SIGUSR1, SIGCHLD...), which only the worker's own
     * thread handles.
     */
    sigfillset(&async);
    sigdelset(&async, SIGSEGV);
    sigdelset(&async, SIGBUS);
    sigdelset(&async, SIGFPE);
    sigdelset(&async, SIGILL);
    sigdelset(&async, SIGTRAP);
    sigdelset(&async, SIGSYS);
    pthread_sigmask(SIG_BLOCK, &async, &saved);

    pthread_mutex_lock(&ffi_java_lock);

    rc = ffi_java_start_vm(tq);
    if (rc != 0) {
        goto done;
    }

    attached = 0;

    if ((*ffi_java_vm)->GetEnv(ffi_java_vm, (void **) &env, JNI_VERSION_10)
        == JNI_EDETACHED)
    {
        attach.version = JNI_VERSION_10;
        attach.name = "libffi_init";
        attach.group = NULL;

        if ((*ffi_java_vm)->AttachCurrentThread(ffi_java_vm, (void **) &env,
                                                &attach)
            != JNI_OK)
        {
            ffi_java_log("cannot attach the calling thread to the JVM");
            rc = 1;
            goto done;
        }

        attached = 1;
    }

    /* init() and the threads it starts log for this runtime */
    ffi_java_bind(env, tq);
    rc = ffi_java_call(env, &parsed, tq);
    ffi_java_bind(env, NULL);

    if (attached) {
        (*ffi_java_vm)->DetachCurrentThread(ffi_java_vm);
    }

done:

    pthread_mutex_unlock(&ffi_java_lock);
    pthread_sigmask(SIG_SETMASK, &saved, NULL);
    free(buf);

    return rc;
}


static void
ffi_java_log(const char *fmt, ...)
{
    va_list  args;
    char     line[1024];

    va_start(args, fmt);
    vsnprintf(line, sizeof(line), fmt, args);
    va_end(args);

    /* stderr is nginx's error log in a worker; one write keeps it whole */
    fprintf(stderr, "libffi_java: %s\n", line);
}


static char *
ffi_java_join(const char *a, const char *b)
{
    char  *s;

    if (b == NULL || *b == '\0') {
        return strdup(a);
    }

    if (*a == '\0') {
        return strdup(b);
    }

    if (asprintf(&s, "%s:%s", a, b) == -1) {
        return NULL;
    }

    return s;
}


/*
 * The folder of the library file, then $CLASSPATH. The host maps a shadow
 * copy of the file, so its word on the file comes before dladdr()'s.
 * Also pins this library: the JVM's threads outlive any dlclose().
 */

static char *
ffi_java_user_path(void *tq)
{
    char        *file, *path;
    void        *self;
    const char  *origin;
    Dl_info      info;

    if (dladdr((void *) libffi_init, &info) == 0 || info.dli_fname == NULL) {
        ffi_java_log("dladdr() cannot tell where libffi_java.so is");
        return NULL;
    }

    self = dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
    if (self == NULL) {
        ffi_java_log("cannot pin \"%s\": %s", info.dli_fname, dlerror());
        return NULL;
    }

    origin = ngx_http_lua_ffi_library_path
             ? ngx_http_lua_ffi_library_path(tq) : NULL;

    if (origin == NULL) {
        origin = info.dli_fname;
    }

    /* absolute: the name dlopen() got may be relative */
    file = realpath(origin, NULL);
    if (file == NULL) {
        ffi_java_log("realpath(\"%s\") failed: %s", origin, strerror(errno));
        return NULL;
    }

    path = ffi_java_join(dirname(file), getenv("CLASSPATH"));

    free(file);

    return path;
}


static int
ffi_java_start_vm(void *tq)
{
    int              err;
    pthread_t        tid;
    ffi_java_boot_t  boot;

    if (ffi_java_vm != NULL) {
        return 0;
    }

    if (ffi_java_vm_failed) {
        /* the JNI allows one JNI_CreateJavaVM() a process, even a failed one */
        ffi_java_log("the JVM failed to start earlier in this process");
        return 1;
    }

    ffi_java_fresh_path = ffi_java_user_path(tq);
    if (ffi_java_fresh_path == NULL) {
        ffi_java_vm_failed = 1;
        return 1;
    }

    boot.class_path = ffi_java_join(ffi_java_fresh_path, FFI_JAVA_DEPS);
    boot.rc = 1;

    if (boot.class_path == NULL) {
        ffi_java_vm_failed = 1;
        return 1;
    }

    /*
     * The JVM is created on a thread of its own, which then detaches and
     * ends: HotSpot is at home on a thread it did not find running, and
     * the JVM keeps none of nginx's threads as its "main" thread.
     */
    err = pthread_create(&tid, NULL, ffi_java_boot, &boot);
    if (err != 0) {
        ffi_java_log("pthread_create() failed: %s", strerror(err));
        boot.rc = 1;

    } else {
        pthread_join(tid, NULL);
    }

    free(boot.class_path);

    if (boot.rc != 0) {
        ffi_java_vm_failed = 1;
        ffi_java_vm = NULL;
        return 1;
    }

    return 0;
}


static void *
ffi_java_boot(void *data)
{
    ffi_java_boot_t  *boot = data;

    jint              n, rc;
    char             *class_path, *java_opts;
    JNIEnv           *env;
    JavaVMOption      options[FFI_JAVA_MAX_OPTIONS];
    JavaVMInitArgs    args;

    java_opts = strdup(getenv("JAVA_OPTS") ? getenv("JAVA_OPTS") : "");

    if (asprintf(&class_path, "-Djava.class.path=%s", boot->class_path)
        == -1)
    {
        class_path = NULL;
    }

    if (java_opts == NULL || class_path == NULL) {
        ffi_java_log("out of memory");
        goto done;
    }

    /*
     * A process has one JVM at most: one that another library made (or
     * another copy of this loader, from another folder) is shared, with
     * the class path and options it was made with.
     */
    if (JNI_GetCreatedJavaVMs(&ffi_java_vm, 1, &n) == JNI_OK && n > 0) {
        ffi_java_log("sharing the JVM already in this process: "
                     "its class path and options stay as they were");

        rc = (*ffi_java_vm)->AttachCurrentThread(ffi_java_vm, (void **) &env,
                                                 NULL);
        if (rc != JNI_OK) {
            ffi_java_log("cannot attach to the JVM: %d", (int) rc);
            goto done;
        }

    } else {
        n = ffi_java_boot_options(options, class_path, java_opts);

        args.version = JNI_VERSION_10;
        args.nOptions = n;
        args.options = options;
        args.ignoreUnrecognized = JNI_FALSE;

        rc = JNI_CreateJavaVM(&ffi_java_vm, (void **) &env, &args);

        if (rc != JNI_OK) {
            ffi_java_log("JNI_CreateJavaVM() failed: %d (check JAVA_OPTS)",
                         (int) rc);
            goto done;
        }
    }

    if (ffi_java_define_fresh_loader(env) == 0) {
        boot->rc = 0;
    }

    (*ffi_java_vm)->DetachCurrentThread(ffi_java_vm);

done:

    free(class_path);
    free(java_opts);

    return NULL;
}


/*
 * Fills options[] and returns how many there are: the class path, -Xrs,
 * then java_opts split at blanks, in place (last, so they can override).
 */

static int
ffi_java_boot_options(JavaVMOption *options, char *class_path,
    char *java_opts)
{
    int    n;
    char  *opt;

    n = 0;

    options[n].optionString = class_path;
    options[n++].extraInfo = NULL;

    /*
     * Reduced signal use: without it the JVM takes SIGQUIT (thread dumps),
     * SIGHUP, SIGINT and SIGTERM (shutdown hooks) away from nginx.
     */
    options[n].optionString = "-Xrs";
    options[n++].extraInfo = NULL;

    while ((opt = strsep(&java_opts, " \t\n")) != NULL) {
        if (*opt == '\0') {
            continue;
        }

        if (n == FFI_JAVA_MAX_OPTIONS) {
            ffi_java_log("more than %d JVM options: \"%s\" and after ignored",
                         FFI_JAVA_MAX_OPTIONS - 2, opt);
            break;
        }

        options[n].optionString = opt;
        options[n++].extraInfo = NULL;
    }

    return n;
}


/*
 * Defines resty.ffi.FreshClassLoader, whose bytes this library carries,
 * in the system class loader, and keeps its load() method.
 */

static int
ffi_java_define_fresh_loader(JNIEnv *env)
{
    jclass     cls, loader_class;
    jobject    system_loader;
    jmethodID  get_system;

    loader_class = (*env)->FindClass(env, "java/lang/ClassLoader");
    if (loader_class == NULL) {
        return ffi_java_exception(env, "cannot find", "java.lang.ClassLoader");
    }

    get_system = (*env)->GetStaticMethodID(env, loader_class,
                                           "getSystemClassLoader",
                                           "()Ljava/lang/ClassLoader;");
    if (get_system == NULL) {
        return ffi_java_exception(env, "cannot find",
                                  "ClassLoader.getSystemClassLoader()");
    }

    system_loader = (*env)->CallStaticObjectMethod(env, loader_class,
                                                   get_system);
    if (system_loader == NULL) {
        return ffi_java_exception(env, "cannot get", "the system class loader");
    }

    /* defined already where the JVM is shared with another copy of us */
    cls = (*env)->FindClass(env, "resty/ffi/FreshClassLoader");

    if (cls == NULL) {
        (*env)->ExceptionClear(env);
        cls = (*env)->DefineClass(env, "resty/ffi/FreshClassLoader",
                                  system_loader,
                                  (const jbyte *) FreshClassLoader_class,
                                  FreshClassLoader_class_len);
    }

    if (cls == NULL) {
        return ffi_java_exception(env, "cannot define",
                                  "resty.ffi.FreshClassLoader");
    }

    ffi_java_fresh_load = (*env)->GetStaticMethodID(env, cls, "load",
                                                    FFI_JAVA_LOAD_SIG);
    if (ffi_java_fresh_load == NULL) {
        return ffi_java_exception(env, "cannot find",
                                  "resty.ffi.FreshClassLoader.load()");
    }

    ffi_java_fresh_class = (*env)->NewGlobalRef(env, cls);
    if (ffi_java_fresh_class == NULL) {
        return ffi_java_exception(env, "cannot keep",
                                  "resty.ffi.FreshClassLoader");
    }

    return ffi_java_define_log(env, system_loader);
}


/* resty.ffi.NginxLog.log0(): one line, by length, for runtime tq */

static jboolean JNICALL
ffi_java_native_log(JNIEnv *env, jclass cls, jlong tq, jint level,
    jbyteArray msg, jint len)
{
    int   rc;
    char  line[2048];

    (void) cls;

    /* nginx cuts a longer line anyway */
    if (len > (jint) sizeof(line)) {
        len = sizeof(line);
    }

    if (len < 0 || msg == NULL) {
        return JNI_FALSE;
    }

    (*env)->GetByteArrayRegion(env, msg, 0, len, (jbyte *) line);

    if ((*env)->ExceptionCheck(env)) {
        return JNI_FALSE;
    }

    if (ngx_http_lua_ffi_log == NULL) {
        /* a host without the service: stderr is nginx's error log */
        fprintf(stderr, "%.*s\n", (int) len, line);
        return JNI_TRUE;
    }

    /* len 0 means NUL-terminated: an empty line is "" */
    rc = ngx_http_lua_ffi_log((void *) (uintptr_t) tq, level,
                              len ? line : "", len);

    return rc == 0 ? JNI_TRUE : JNI_FALSE;
}


/*
 * Defines resty.ffi.NginxLog beside FreshClassLoader, registers its native
 * log0() and points System.out and System.err at it.
 */

static int
ffi_java_define_log(JNIEnv *env, jobject system_loader)
{
    jclass           cls;
    jmethodID        install;
    JNINativeMethod  native;

    cls = (*env)->FindClass(env, "resty/ffi/NginxLog");

    if (cls == NULL) {
        (*env)->ExceptionClear(env);
        cls = (*env)->DefineClass(env, "resty/ffi/NginxLog", system_loader,
                                  (const jbyte *) NginxLog_class,
                                  NginxLog_class_len);
    }

    if (cls == NULL) {
        return ffi_java_exception(env, "cannot define", "resty.ffi.NginxLog");
    }

    native.name = "log0";
    native.signature = "(JI[BI)Z";
    native.fnPtr = (void *) ffi_java_native_log;

    if ((*env)->RegisterNatives(env, cls, &native, 1) != 0) {
        return ffi_java_exception(env, "cannot register",
                                  "resty.ffi.NginxLog.log0()");
    }

    install = (*env)->GetStaticMethodID(env, cls, "install", "()V");
    ffi_java_log_bind = (*env)->GetStaticMethodID(env, cls, "bind", "(J)V");

    if (install == NULL || ffi_java_log_bind == NULL) {
        return ffi_java_exception(env, "cannot find",
                                  "resty.ffi.NginxLog's methods");
    }

    (*env)->CallStaticVoidMethod(env, cls, install);

    if ((*env)->ExceptionCheck(env)) {
        return ffi_java_exception(env, "exception in",
                                  "resty.ffi.NginxLog.install()");
    }

    ffi_java_log_class = (*env)->NewGlobalRef(env, cls);
    if (ffi_java_log_class == NULL) {
        return ffi_java_exception(env, "cannot keep", "resty.ffi.NginxLog");
    }

    return 0;
}


static void
ffi_java_bind(JNIEnv *env, void *tq)
{
    (*env)->CallStaticVoidMethod(env, ffi_java_log_class, ffi_java_log_bind,
                                 (jlong) (uintptr_t) tq);

    if ((*env)->ExceptionCheck(env)) {
        (void) ffi_java_exception(env, "exception in",
                                  "resty.ffi.NginxLog.bind()");
    }
}


/* Splits "<class>[?],<method>,<rest>" in place; <rest> may be missing. */

static int
ffi_java_parse_cfg(char *buf, ffi_java_cfg_t *cfg)
{
    char    *p;
    size_t   len;

    cfg->class_name = strsep(&buf, ",");
    cfg->method = strsep(&buf, ",");
    cfg->rest = buf ? buf : "";
    cfg->fresh = 0;

    if (cfg->method == NULL || *cfg->method == '\0') {
        return -1;
    }

    len = strlen(cfg->class_name);

    if (len > 0 && cfg->class_name[len - 1] == '?') {
        cfg->class_name[--len] = '\0';
        cfg->fresh = 1;
    }

    if (len == 0) {
        return -1;
    }

    /* upstream accepted both demo.echo.App and demo/echo/App */
    for (p = cfg->class_name; *p; p++) {
        if (*p == '/') {
            *p = '.';
        }
    }

    return 0;
}


static jclass
ffi_java_find_class(JNIEnv *env, ffi_java_cfg_t *cfg)
{
    char     *p;
    jclass    cls;
    jstring   name, path;

    if (cfg->fresh) {
        name = (*env)->NewStringUTF(env, cfg->class_name);
        path = (*env)->NewStringUTF(env, ffi_java_fresh_path);

        if (name == NULL || path == NULL) {
            return NULL;
        }

        return (*env)->CallStaticObjectMethod(env, ffi_java_fresh_class,
                                              ffi_java_fresh_load,
                                              name, path);
    }

    /*
     * A thread attached through the invocation API has no Java caller, so
     * FindClass() searches the system class loader (the class path).
     */
    for (p = cfg->class_name; *p; p++) {
        if (*p == '.') {
            *p = '/';
        }
    }

    cls = (*env)->FindClass(env, cfg->class_name);

    for (p = cfg->class_name; *p; p++) {
        if (*p == '/') {
            *p = '.';
        }
    }

    return cls;
}


static int
ffi_java_call(JNIEnv *env, ffi_java_cfg_t *cfg, void *tq)
{
    jint       rc;
    jclass     cls;
    jstring    rest;
    jmethodID  init;

    if ((*env)->PushLocalFrame(env, 16) != 0) {
        return ffi_java_exception(env, "out of memory calling", cfg->method);
    }

    cls = ffi_java_find_class(env, cfg);
    if (cls == NULL) {
        rc = ffi_java_exception(env, "cannot load class", cfg->class_name);
        goto done;
    }

    init = (*env)->GetStaticMethodID(env, cls, cfg->method, FFI_JAVA_INIT_SIG);
    if (init == NULL) {
        ffi_java_log("class %s has no \"public static int %s(String, long)\"",
                     cfg->class_name, cfg->method);
        rc = ffi_java_exception(env, "cannot find method", cfg->method);
        goto done;
    }

    rest = (*env)->NewStringUTF(env, cfg->rest);
    if (rest == NULL) {
        rc = ffi_java_exception(env, "cannot pass cfg to", cfg->method);
        goto done;
    }

    rc = (*env)->CallStaticIntMethod(env, cls, init, rest,
                                     (jlong) (uintptr_t) tq);

    if ((*env)->ExceptionCheck(env)) {
        rc = ffi_java_exception(env, "exception in", cfg->method);
        goto done;
    }

    if (rc != 0) {
        ffi_java_log("%s.%s() returned %d", cfg->class_name, cfg->method,
                     (int) rc);
    }

done:

    (*env)->PopLocalFrame(env, NULL);

    return rc;
}


/* Logs a failure and the pending Java exception, if any; returns 1. */

static int
ffi_java_exception(JNIEnv *env, const char *what, const char *name)
{
    ffi_java_log("%s %s", what, name);

    if ((*env)->ExceptionCheck(env)) {
        /* the stack trace goes to System.err, nginx's error log */
        (*env)->ExceptionDescribe(env);
        (*env)->ExceptionClear(env);
    }

    return 1;
}
