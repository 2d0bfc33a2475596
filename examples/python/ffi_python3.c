/*
 * Generic Python 3 loader for lua-resty-ffi (libffi_python3.so): embeds
 * libpython and starts runtimes from Python modules named in the cfg.
 *
 * cfg is "[venv=<path>,][<dir>/]<module>[?],<function>[,<rest>]"; without
 * the venv= field it is upstream's, and read as upstream's loader reads it
 * (<dir>, if given, goes first in sys.path):
 *
 *   - upstream's convention: the loader imports <module> and calls
 *     <function>(cfg, tq), cfg being the address of the NUL-terminated
 *     <rest> as an int (0 when there is none; valid during the call only)
 *     and tq the address of the task queue; the function starts its own
 *     poll thread, calls the ABI itself (usually through cffi) and returns
 *     0 on success;
 *   - the simpler way: <function> is marked with the decorator
 *     resty_ffi.handler (a module this loader provides); the loader polls
 *     for it and answers each request with what the handler returns.
 *
 * "?" after the module name imports it afresh from its source on every
 * init, so a runtime restarted after an edit runs the edited code.
 *
 * venv=<path> runs the runtime in a sub-interpreter of its own (shared GIL)
 * with that venv's site-packages and no user site: runtimes can then use
 * conflicting versions of one package, and each init (a reload) imports
 * every module of the application anew. The sub-interpreter is ended
 * (Py_EndInterpreter) once the runtime is drained: by the poll thread after
 * the NULL task, or, for upstream's convention, by a thread that waits for
 * the threads the application started in it.
 *
 * The loader is never unloaded: libpython cannot be, so the loader pins
 * itself and libpython on first use. Python runs with the GIL released
 * between calls; every thread that calls into Python takes it first.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>


#define FFI_PYTHON_MARK  "__resty_ffi_handler__"


/* the runtime ABI, exported by the nginx module (loaded RTLD_GLOBAL) */
void *ngx_http_lua_ffi_task_poll(void *tq);
char *ngx_http_lua_ffi_get_req(void *tsk, int *len);
void ngx_http_lua_ffi_respond(void *tsk, int rc, char *rsp, int rsp_len);

int libffi_init(char *cfg, void *tq);

/*
 * An extension of this project's host: the path the library was loaded
 * from. The host maps a private shadow copy of it, so dladdr() names the
 * copy, not the folder that holds our modules. Weak: a host without it
 * (upstream's) maps the file itself, and dladdr() tells.
 */
const char *ngx_http_lua_ffi_library_path(void *tq) __attribute__((weak));

/* the runtime services (src/ngx_http_lua_ffi.h); weak as well */
int ngx_http_lua_ffi_log(void *tq, int level, const char *msg, int len)
    __attribute__((weak));
int ngx_http_lua_ffi_dict_get(void *tq, const char *dict, const char *key,
    int key_len, char **val, int *val_len) __attribute__((weak));
int ngx_http_lua_ffi_dict_set(void *tq, const char *dict, const char *key,
    int key_len, const char *val, int val_len, double exptime)
    __attribute__((weak));
int ngx_http_lua_ffi_dict_incr(void *tq, const char *dict, const char *key,
    int key_len, double by, double init, double *result)
    __attribute__((weak));


typedef struct {
    char        *venv;          /* NULL: the main interpreter */
    char        *dir;           /* NULL when the module has no "<dir>/" */
    char        *module;
    char        *function;
    char        *rest;          /* NULL when the cfg has no third part */
    int          fresh;         /* "?" after the module name */
} ffi_python_cfg_t;


typedef struct {
    PyObject            *handler;   /* strong reference, taken with the GIL */
    PyThreadState       *ts;        /* the poll thread's, while it waits */
    PyInterpreterState  *interp;    /* a sub-interpreter, or NULL */
    void                *tq;
} ffi_python_runtime_t;


/* the state of module resty_ffi, one per interpreter */
typedef struct {
    PyObject  *dict_error;
} ffi_python_module_state_t;


static int ffi_python_setup(void *tq);
static int ffi_python_start_interpreter(void);
static int ffi_python_setup_interpreter(void);
static int ffi_python_add_loader_dir(void);
static int ffi_python_install_module(void);
static PyThreadState *ffi_python_new_interpreter(const char *venv);
static int ffi_python_use_venv(const char *venv);
static void ffi_python_leave_interpreter(PyThreadState *sub,
    PyThreadState *main, int keep);
static void *ffi_python_reap(void *data);
static PyThreadState *ffi_python_adopt(PyThreadState *lent);
static void ffi_python_end_interpreter(PyThreadState *ts);
static void ffi_python_refused(const char *module);
static int ffi_python_parse_cfg(char *buf, ffi_python_cfg_t *cfg);
static int ffi_python_prepend_dir(const char *dir);
static PyObject *ffi_python_import(const char *name, int fresh);
static PyObject *ffi_python_import_fresh(const char *name);
static int ffi_python_exec_fresh(PyObject *spec, PyObject *module);
static int ffi_python_call_init(PyObject *function, ffi_python_cfg_t *cfg,
    void *tq);
static int ffi_python_start_handler(PyObject *marked, ffi_python_cfg_t *cfg,
    void *tq, PyInterpreterState *interp);
static void *ffi_python_poll(void *data);
static void ffi_python_serve(ffi_python_runtime_t *rt, void *task);
static char *ffi_python_result(PyObject *result, int *len);
static char *ffi_python_exception_text(int *len);
static void ffi_python_log_exception(const char *fmt, ...);
static PyObject *ffi_python_module_init(void);
static struct PyModuleDef  ffi_python_module;
static int ffi_python_route_output(void);
static void ffi_python_flush_output(void);


static pthread_mutex_t  ffi_python_lock = PTHREAD_MUTEX_INITIALIZER;
static int              ffi_python_state;   /* 0 untried, 1 ready, -1 not */
static int              ffi_python_inittab; /* resty_ffi is built in */
static char             ffi_python_dir[PATH_MAX];

/*
 * The runtime a thread works for, so that what Python prints there is
 * logged with that runtime's name and version: the thread in libffi_init,
 * the poll thread of a handler runtime, or any thread that called
 * resty_ffi.bind(tq). Other threads log with no runtime named.
 */
static __thread void   *ffi_python_tq;


int
libffi_init(char *cfg, void *tq)
{
    int                rc, handler;
    char              *buf;
    void              *saved_tq;
    PyObject          *module, *function;
    PyThreadState     *main, *sub;
    PyGILState_STATE   gil;
    ffi_python_cfg_t   parsed;

    pthread_mutex_lock(&ffi_python_lock);

    if (ffi_python_state == 0) {
        ffi_python_state = (ffi_python_setup(tq) == 0) ? 1 : -1;
    }

    pthread_mutex_unlock(&ffi_python_lock);

    if (ffi_python_state != 1) {
        fprintf(stderr, "ffi_python3: Python could not be started, "
                "see the first error of this process\n");
        return 1;
    }

    buf = strdup(cfg ? cfg : "");
    if (buf == NULL) {
        return 1;
    }

    if (ffi_python_parse_cfg(buf, &parsed) != 0) {
        fprintf(stderr, "ffi_python3: bad cfg \"%s\": expected "
                "\"[venv=<path>,][<dir>/]<module>[?],<function>[,<rest>]\"\n",
                cfg ? cfg : "(null)");
        free(buf);
        return 1;
    }

    gil = PyGILState_Ensure();

    rc = 1;
    handler = 0;
    module = NULL;
    function = NULL;
    saved_tq = ffi_python_tq;
    ffi_python_tq = tq;

    main = PyThreadState_Get();
    sub = NULL;

    if (parsed.venv != NULL) {
        sub = ffi_python_new_interpreter(parsed.venv);
        if (sub == NULL) {
            goto done;
        }
    }

    if (parsed.dir != NULL && ffi_python_prepend_dir(parsed.dir) != 0) {
        ffi_python_log_exception("cannot add %s to sys.path", parsed.dir);
        goto done;
    }

    module = ffi_python_import(parsed.module, parsed.fresh);
    if (module == NULL) {
        if (sub != NULL) {
            ffi_python_refused(parsed.module);
        }

        ffi_python_log_exception("cannot import module %s", parsed.module);
        goto done;
    }

    function = PyObject_GetAttrString(module, parsed.function);
    if (function == NULL) {
        ffi_python_log_exception("no function %s in module %s",
                                 parsed.function, parsed.module);
        goto done;
    }

    if (PyObject_HasAttrString(function, FFI_PYTHON_MARK)) {
        handler = 1;
        rc = ffi_python_start_handler(function, &parsed, tq,
                                      sub ? PyThreadState_GetInterpreter(sub)
                                          : NULL);

    } else {
        rc = ffi_python_call_init(function, &parsed, tq);
    }

done:

    Py_XDECREF(function);
    Py_XDECREF(module);

    /* a partial line printed during init is this runtime's */
    ffi_python_flush_output();
    ffi_python_tq = saved_tq;

    if (sub != NULL) {
        /* a started handler's poll thread ends the interpreter itself */
        ffi_python_leave_interpreter(sub, main, rc == 0 && handler);
    }

    PyGILState_Release(gil);
    free(buf);

    return rc;
}


/*
 * Runs once per process, on the first libffi_init. Pins this loader and
 * libpython (neither survives dlclose), makes libpython's symbols global so
 * that extension modules (cffi's backend among them) resolve against it
 * even when nginx loaded us RTLD_LOCAL, and starts the interpreter unless
 * someone else did.
 */

static int
ffi_python_setup(void *tq)
{
    int                rc;
    char              *slash;
    void              *handle;
    Dl_info            self, python;
    const char        *origin;
    PyGILState_STATE   gil;

    if (dladdr((void *) libffi_init, &self) == 0
        || dladdr((void *) Py_InitializeFromConfig, &python) == 0)
    {
        fprintf(stderr, "ffi_python3: dladdr() failed: %s\n", dlerror());
        return -1;
    }

    handle = dlopen(self.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
    if (handle == NULL) {
        fprintf(stderr, "ffi_python3: cannot pin \"%s\": %s\n",
                self.dli_fname, dlerror());
        return -1;
    }

    handle = dlopen(python.dli_fname,
                    RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE | RTLD_GLOBAL);
    if (handle == NULL) {
        fprintf(stderr, "ffi_python3: cannot pin \"%s\": %s\n",
                python.dli_fname, dlerror());
        return -1;
    }

    origin = ngx_http_lua_ffi_library_path ? ngx_http_lua_ffi_library_path(tq)
                                           : NULL;
    if (origin == NULL) {
        origin = self.dli_fname;
    }

    if (strlen(origin) >= sizeof(ffi_python_dir)) {
        fprintf(stderr, "ffi_python3: path too long: %s\n", origin);
        return -1;
    }

    strcpy(ffi_python_dir, origin);

    slash = strrchr(ffi_python_dir, '/');
    if (slash == NULL) {
        strcpy(ffi_python_dir, ".");

    } else {
        *(slash == ffi_python_dir ? slash + 1 : slash) = '\0';
    }

    if (!Py_IsInitialized() && ffi_python_start_interpreter() != 0) {
        return -1;
    }

    gil = PyGILState_Ensure();
    rc = ffi_python_setup_interpreter();
    PyGILState_Release(gil);

    return rc;
}


/*
 * An embedded interpreter must not take over the host: no signal handlers
 * (nginx owns them) and no locale changes (UTF-8 mode instead). sys.path
 * gets PYTHONPATH first, so an operator can override, then our folder.
 */

static int
ffi_python_start_interpreter(void)
{
    char         *env, *path;
    size_t        len;
    PyStatus      status;
    PyConfig      config;
    PyPreConfig   preconfig;

    PyPreConfig_InitPythonConfig(&preconfig);
    preconfig.utf8_mode = 1;
    preconfig.coerce_c_locale = 0;
    preconfig.configure_locale = 0;

    status = Py_PreInitialize(&preconfig);
    if (PyStatus_Exception(status)) {
        fprintf(stderr, "ffi_python3: cannot start Python: %s\n",
                status.err_msg ? status.err_msg : "unknown error");
        return -1;
    }

    if (PyImport_AppendInittab("resty_ffi", ffi_python_module_init) != 0) {
        fprintf(stderr, "ffi_python3: cannot register module resty_ffi\n");
        return -1;
    }

    ffi_python_inittab = 1;

    env = getenv("PYTHONPATH");
    if (env != NULL && env[0] == '\0') {
        env = NULL;
    }

    len = (env ? strlen(env) + 1 : 0) + strlen(ffi_python_dir) + 1;

    path = malloc(len);
    if (path == NULL) {
        return -1;
    }

    snprintf(path, len, "%s%s%s", env ? env : "", env ? ":" : "",
             ffi_python_dir);

    PyConfig_InitPythonConfig(&config);
    config.install_signal_handlers = 0;
    config.parse_argv = 0;

    status = PyConfig_SetBytesString(&config, &config.pythonpath_env, path);
    free(path);

    if (!PyStatus_Exception(status)) {
        status = Py_InitializeFromConfig(&config);
    }

    PyConfig_Clear(&config);

    if (PyStatus_Exception(status)) {
        fprintf(stderr, "ffi_python3: cannot start Python: %s\n",
                status.err_msg ? status.err_msg : "unknown error");
        return -1;
    }

    /* from now on every thread, the caller's included, takes the GIL */
    (void) PyEval_SaveThread();

    return 0;
}


/*
 * With the GIL, in the interpreter to set up (the main one, or a new
 * sub-interpreter): our module resty_ffi, our folder in sys.path, and
 * print() and logging routed to error.log.
 */

static int
ffi_python_setup_interpreter(void)
{
    if (ffi_python_install_module() != 0 || ffi_python_add_loader_dir() != 0)
    {
        return -1;
    }

    return ffi_python_route_output();
}


/* Python was started by someone else: our folder may be missing */

static int
ffi_python_add_loader_dir(void)
{
    int        rc;
    PyObject  *path, *dir;

    rc = -1;
    path = PySys_GetObject("path");
    dir = PyUnicode_DecodeFSDefault(ffi_python_dir);

    if (path != NULL && dir != NULL) {
        rc = PySequence_Contains(path, dir);
        if (rc == 0) {
            rc = PyList_Append(path, dir);
        }
    }

    if (rc < 0) {
        ffi_python_log_exception("cannot add %s to sys.path",
                                 ffi_python_dir);
    }

    Py_XDECREF(dir);

    return rc < 0 ? -1 : 0;
}


/*
 * resty_ffi is built into an interpreter we started; into one started by
 * someone else it is put by hand, from the same definition.
 */

static int
ffi_python_install_module(void)
{
    int        rc;
    PyObject  *modules, *machinery, *spec, *module;

    modules = PyImport_GetModuleDict();

    if (ffi_python_inittab || PyDict_GetItemString(modules, "resty_ffi")) {
        return 0;
    }

    rc = -1;
    spec = NULL;
    module = NULL;

    machinery = PyImport_ImportModule("importlib.machinery");
    if (machinery != NULL) {
        spec = PyObject_CallMethod(machinery, "ModuleSpec", "sO",
                                   "resty_ffi", Py_None);
    }

    if (spec != NULL) {
        module = PyModule_FromDefAndSpec(&ffi_python_module, spec);
    }

    if (module != NULL
        && PyModule_ExecDef(module, &ffi_python_module) == 0)
    {
        rc = PyDict_SetItemString(modules, "resty_ffi", module);
    }

    if (rc != 0) {
        ffi_python_log_exception("cannot add module resty_ffi");
    }

    Py_XDECREF(module);
    Py_XDECREF(spec);
    Py_XDECREF(machinery);

    return rc;
}


/*
 * With the GIL, in the main interpreter: a new sub-interpreter for a runtime
 * with venv=, set up and current, or NULL (the main one current again).
 */

static PyThreadState *
ffi_python_new_interpreter(const char *venv)
{
    PyThreadState  *main, *sub;

    main = PyThreadState_Get();

    sub = Py_NewInterpreter();
    if (sub == NULL) {
        fprintf(stderr, "ffi_python3: cannot start a sub-interpreter "
                "for venv \"%s\"\n", venv);
        (void) PyThreadState_Swap(main);
        return NULL;
    }

    if (ffi_python_setup_interpreter() != 0
        || ffi_python_use_venv(venv) != 0)
    {
        ffi_python_leave_interpreter(sub, main, 0);
        return NULL;
    }

    return sub;
}


/*
 * sys.path of a sub-interpreter as the venv's python would have it: the
 * venv's site-packages (with its .pth files) where the site folders begin,
 * the system's kept only if the venv includes them, no user site.
 */

static const char  ffi_python_venv_code[] =
    "import os, site, sys\n"
    "\n"
    "def use_venv(path):\n"
    "    path = os.path.abspath(path)\n"
    "    cfg = os.path.join(path, 'pyvenv.cfg')\n"
    "    if not os.path.isfile(cfg):\n"
    "        raise ValueError(f'venv \"{path}\" is not a virtual '\n"
    "                         'environment: no pyvenv.cfg')\n"
    "    system = False\n"
    "    with open(cfg, encoding='utf-8') as f:\n"
    "        for line in f:\n"
    "            key, eq, value = line.partition('=')\n"
    "            if eq and key.strip() == 'include-system-site-packages':\n"
    "                system = value.strip().lower() == 'true'\n"
    "    ver = 'python%d.%d' % sys.version_info[:2]\n"
    "    packages = os.path.join(path, 'lib', ver, 'site-packages')\n"
    "    if not os.path.isdir(packages):\n"
    "        raise ValueError(f'venv \"{path}\" has no lib/{ver}/'\n"
    "                         'site-packages: not a venv of this Python')\n"
    "    norm = os.path.normpath\n"
    "    system_dirs = {norm(p) for p in site.getsitepackages()}\n"
    "    drop = {norm(site.getusersitepackages())}\n"
    "    if not system:\n"
    "        drop |= system_dirs\n"
    "    kept = [p for p in sys.path if norm(p) not in drop]\n"
    "    at = next((i for i, p in enumerate(kept)\n"
    "               if norm(p) in system_dirs), len(kept))\n"
    "    sys.path[:] = kept[:at]\n"
    "    site.ENABLE_USER_SITE = False\n"
    "    site.addsitedir(packages)\n"
    "    sys.path.extend(kept[at:])\n"
    "    sys.prefix = sys.exec_prefix = path\n";


static int
ffi_python_use_venv(const char *venv)
{
    int          rc;
    PyObject    *globals, *result, *type, *value, *tb, *text;
    const char  *why;

    rc = -1;
    result = NULL;

    globals = PyDict_New();
    if (globals != NULL
        && PyDict_SetItemString(globals, "__builtins__",
                                PyEval_GetBuiltins()) == 0)
    {
        result = PyRun_String(ffi_python_venv_code, Py_file_input, globals,
                              globals);
    }

    if (result != NULL) {
        Py_DECREF(result);
        result = PyObject_CallFunction(PyDict_GetItemString(globals,
                                                            "use_venv"),
                                       "s", venv);
        rc = (result == NULL) ? -1 : 0;
    }

    if (rc != 0 && PyErr_ExceptionMatches(PyExc_ValueError)) {
        /* what is wrong with the venv: one line says it */
        PyErr_Fetch(&type, &value, &tb);
        text = value ? PyObject_Str(value) : NULL;
        why = text ? PyUnicode_AsUTF8(text) : NULL;
        fprintf(stderr, "ffi_python3: %s\n", why ? why : "bad venv");
        PyErr_Clear();
        Py_XDECREF(text);
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(tb);

    } else if (rc != 0) {
        ffi_python_log_exception("cannot use venv \"%s\"", venv);
    }

    Py_XDECREF(result);
    Py_XDECREF(globals);

    return rc;
}


/*
 * With the GIL, sub current: back to the main interpreter's main. The poll
 * thread of a handler ends the sub-interpreter (keep); otherwise it ends
 * now if no other thread is in it, or once the application's threads in it
 * have ended, in a thread of its own.
 *
 * The thread state of the thread that ends it is made before sub is gone:
 * Python 3.11 reuses the interpreter's first thread state for a new one
 * made when it has none left, and aborts ("thread state already
 * initialized").
 */

static void
ffi_python_leave_interpreter(PyThreadState *sub, PyThreadState *main,
    int keep)
{
    int                  rc;
    pthread_t            thread;
    PyThreadState       *reaper;
    PyInterpreterState  *interp;

    interp = PyThreadState_GetInterpreter(sub);

    if (!keep) {
        if (PyInterpreterState_ThreadHead(interp) == sub
            && PyThreadState_Next(sub) == NULL)
        {
            Py_EndInterpreter(sub);
            (void) PyThreadState_Swap(main);
            return;
        }

        reaper = PyThreadState_New(interp);

        rc = pthread_create(&thread, NULL, ffi_python_reap, reaper);
        if (rc != 0) {
            fprintf(stderr, "ffi_python3: pthread_create() failed: %s; "
                    "a sub-interpreter stays\n", strerror(rc));
            PyThreadState_Clear(reaper);
            PyThreadState_Delete(reaper);

        } else {
            (void) pthread_detach(thread);
        }
    }

    PyThreadState_Clear(sub);
    (void) PyThreadState_Swap(main);
    PyThreadState_Delete(sub);
}


/* the thread that ends a sub-interpreter of upstream's convention */

static void *
ffi_python_reap(void *data)
{
    PyThreadState  *ts;

    ts = ffi_python_adopt(data);

    ffi_python_end_interpreter(ts);

    return NULL;
}


/*
 * Run first by a thread of ours that runs a sub-interpreter's Python (a
 * handler's poll thread, a reaper): takes the GIL through lent, the thread
 * state made for it by the thread that started it, replaces lent with one
 * this thread makes itself, and returns that one current, the GIL held.
 * Only a thread state made by the thread that uses it is the one
 * PyGILState_Ensure() finds there: with lent, a C callback into Python
 * (sqlite3's, ctypes', cffi's, Cython's "with gil") would run in the main
 * interpreter. lent still exists when ours is made: see
 * ffi_python_leave_interpreter().
 */

static PyThreadState *
ffi_python_adopt(PyThreadState *lent)
{
    PyThreadState  *own;

    PyEval_RestoreThread(lent);

    own = PyThreadState_New(PyThreadState_GetInterpreter(lent));
    if (own == NULL) {
        fprintf(stderr, "ffi_python3: no memory for a thread state; C "
                "callbacks of this runtime run in the main interpreter\n");
        return lent;
    }

    (void) PyThreadState_Swap(own);
    PyThreadState_Clear(lent);
    PyThreadState_Delete(lent);

    return own;
}


/*
 * With the GIL, ts current and its runtime drained: waits for the other
 * threads in the sub-interpreter (threads the application started end
 * after the NULL task), ends it, and releases the GIL. A thread that
 * Python's threading module does not know is looked for once a second.
 */

static void
ffi_python_end_interpreter(PyThreadState *ts)
{
    long                 joined;
    PyObject            *module, *result;
    PyThreadState       *other, *tmp;
    PyInterpreterState  *interp;

    interp = PyThreadState_GetInterpreter(ts);

    for ( ;; ) {
        other = PyInterpreterState_ThreadHead(interp);
        if (other == ts) {
            other = PyThreadState_Next(other);
        }

        if (other == NULL) {
            break;
        }

        module = PyImport_ImportModule("resty_ffi");
        result = module ? PyObject_CallMethod(module, "_join_threads", NULL)
                        : NULL;
        joined = result ? PyLong_AsLong(result) : 0;
        PyErr_Clear();
        Py_XDECREF(result);
        Py_XDECREF(module);

        if (joined <= 0) {
            (void) PyEval_SaveThread();
            sleep(1);
            PyEval_RestoreThread(ts);
        }
    }

    Py_EndInterpreter(ts);

    /* the GIL is still ours: released through a passing thread state */
    tmp = PyThreadState_New(PyInterpreterState_Main());
    (void) PyThreadState_Swap(tmp);
    PyThreadState_Clear(tmp);
    PyThreadState_DeleteCurrent();
}


/*
 * An ImportError (not ModuleNotFoundError) in a sub-interpreter is what an
 * extension module that cannot run in one raises (PyO3's, NumPy's): the
 * line names the way out. The exception stays pending.
 */

static void
ffi_python_refused(const char *module)
{
    PyObject    *type, *value, *tb, *text;
    const char  *why;

    if (!PyErr_ExceptionMatches(PyExc_ImportError)
        || PyErr_ExceptionMatches(PyExc_ModuleNotFoundError))
    {
        return;
    }

    PyErr_Fetch(&type, &value, &tb);

    text = value ? PyObject_Str(value) : NULL;
    why = text ? PyUnicode_AsUTF8(text) : NULL;
    if (why == NULL) {
        PyErr_Clear();
        why = "?";
    }

    fprintf(stderr, "ffi_python3: %s: ImportError in a sub-interpreter "
            "(venv=): %s; some extension modules cannot run in one: "
            "without venv= the runtime runs in the main interpreter\n",
            module, why);

    Py_XDECREF(text);
    PyErr_Restore(type, value, tb);
}


/*
 * Splits buf in place: "[venv=<path>,][<dir>/]<module>[?],<function>[,...]".
 * A module field never has "=" before a "/": a field that does is an
 * option, and venv= is the only one.
 */

static int
ffi_python_parse_cfg(char *buf, ffi_python_cfg_t *cfg)
{
    char    *p, *eq, *slash;
    size_t   len;

    cfg->venv = NULL;

    for ( ;; ) {
        p = strchr(buf, ',');
        eq = strchr(buf, '=');
        slash = strchr(buf, '/');

        if (eq == NULL || (p != NULL && eq > p)
            || (slash != NULL && slash < eq))
        {
            break;
        }

        if (p == NULL || eq - buf != 4 || strncmp(buf, "venv", 4) != 0
            || cfg->venv != NULL || eq + 1 == p)
        {
            return -1;
        }

        *p++ = '\0';
        cfg->venv = eq + 1;
        buf = p;
    }

    cfg->module = buf;

    p = strchr(buf, ',');
    if (p == NULL) {
        return -1;
    }

    *p++ = '\0';
    cfg->function = p;

    p = strchr(p, ',');
    if (p != NULL) {
        *p++ = '\0';
    }

    cfg->rest = p;

    p = strrchr(cfg->module, '/');
    if (p == NULL) {
        cfg->dir = NULL;

    } else {
        cfg->dir = (p == cfg->module) ? "/" : cfg->module;
        *p++ = '\0';
        cfg->module = p;
    }

    len = strlen(cfg->module);
    cfg->fresh = (len > 0 && cfg->module[len - 1] == '?');

    if (cfg->fresh) {
        cfg->module[--len] = '\0';
    }

    return (len == 0 || cfg->function[0] == '\0') ? -1 : 0;
}


/* upstream's "<dir>/<module>": <dir> goes first in sys.path, once */

static int
ffi_python_prepend_dir(const char *dir)
{
    int        rc;
    PyObject  *path, *item;

    path = PySys_GetObject("path");
    if (path == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "sys.path is missing");
        return -1;
    }

    item = PyUnicode_DecodeFSDefault(dir);
    if (item == NULL) {
        return -1;
    }

    rc = PySequence_Contains(path, item);
    if (rc == 0) {
        rc = PyList_Insert(path, 0, item);
    }

    Py_DECREF(item);

    return rc < 0 ? -1 : 0;
}


static PyObject *
ffi_python_import(const char *name, int fresh)
{
    if (fresh) {
        return ffi_python_import_fresh(name);
    }

    return PyImport_ImportModule(name);
}


/*
 * A fresh import runs the module's current source in a new module object
 * and puts that in sys.modules; the old object lives on for as long as an
 * older runtime uses it. The source is compiled directly, never taken from
 * __pycache__: a .pyc is trusted by mtime and size, which an edit made
 * within the same second may leave unchanged.
 */

static PyObject *
ffi_python_import_fresh(const char *name)
{
    int        ok;
    char      *dot;
    PyObject  *modules, *old, *util, *spec, *module, *parent, *key;
    PyObject  *result;

    modules = PyImport_GetModuleDict();

    old = PyDict_GetItemString(modules, name);
    Py_XINCREF(old);

    /* find_spec() would answer with the old module's spec otherwise */
    if (old != NULL && PyDict_DelItemString(modules, name) != 0) {
        Py_DECREF(old);
        return NULL;
    }

    ok = 0;
    spec = NULL;
    module = NULL;

    /* new files in folders that were searched before */
    util = PyImport_ImportModule("importlib");
    result = util ? PyObject_CallMethod(util, "invalidate_caches", NULL)
                  : NULL;
    Py_XDECREF(util);

    if (result == NULL) {
        util = NULL;
        goto done;
    }

    Py_DECREF(result);

    util = PyImport_ImportModule("importlib.util");
    if (util == NULL) {
        goto done;
    }

    spec = PyObject_CallMethod(util, "find_spec", "s", name);
    if (spec == NULL) {
        goto done;
    }

    if (spec == Py_None) {
        PyErr_Format(PyExc_ModuleNotFoundError, "No module named '%s'", name);
        goto done;
    }

    module = PyObject_CallMethod(util, "module_from_spec", "O", spec);
    if (module == NULL) {
        goto done;
    }

    if (PyDict_SetItemString(modules, name, module) != 0
        || ffi_python_exec_fresh(spec, module) != 0)
    {
        goto done;
    }

    /* what "import a.b" does too: attribute b of package a is the module */
    dot = strrchr(name, '.');
    if (dot != NULL) {
        key = PyUnicode_FromStringAndSize(name, dot - name);
        parent = key ? PyDict_GetItemWithError(modules, key) : NULL;
        Py_XDECREF(key);

        if (parent != NULL
            && PyObject_SetAttrString(parent, dot + 1, module) != 0)
        {
            goto done;
        }

        if (PyErr_Occurred()) {
            goto done;
        }
    }

    ok = 1;

done:

    if (!ok) {
        /* keep the exception across the sys.modules repair */
        PyObject  *type, *value, *tb;

        PyErr_Fetch(&type, &value, &tb);

        if (old != NULL) {
            (void) PyDict_SetItemString(modules, name, old);

        } else if (PyDict_GetItemString(modules, name) != NULL) {
            (void) PyDict_DelItemString(modules, name);
        }

        PyErr_Restore(type, value, tb);
        Py_CLEAR(module);
    }

    Py_XDECREF(old);
    Py_XDECREF(spec);
    Py_XDECREF(util);

    return module;
}


/* source modules: compile the .py; anything else: its loader's way */

static int
ffi_python_exec_fresh(PyObject *spec, PyObject *module)
{
    int        rc;
    PyObject  *loader, *origin, *source, *code, *result;

    rc = -1;
    origin = NULL;
    source = NULL;
    code = NULL;
    result = NULL;

    loader = PyObject_GetAttrString(spec, "loader");
    if (loader == NULL) {
        return -1;
    }

    if (!PyObject_HasAttrString(loader, "source_to_code")
        || !PyObject_HasAttrString(loader, "get_data"))
    {
        result = PyObject_CallMethod(loader, "exec_module", "O", module);
        rc = (result == NULL) ? -1 : 0;
        goto done;
    }

    origin = PyObject_GetAttrString(spec, "origin");
    if (origin == NULL) {
        goto done;
    }

    source = PyObject_CallMethod(loader, "get_data", "O", origin);
    if (source == NULL) {
        goto done;
    }

    code = PyObject_CallMethod(loader, "source_to_code", "OO", source, origin);
    if (code == NULL) {
        goto done;
    }

    result = PyEval_EvalCode(code, PyModule_GetDict(module),
                             PyModule_GetDict(module));
    rc = (result == NULL) ? -1 : 0;

done:

    Py_XDECREF(result);
    Py_XDECREF(code);
    Py_XDECREF(source);
    Py_XDECREF(origin);
    Py_DECREF(loader);

    return rc;
}


/* upstream's convention: function(cfg, tq) -> 0 on success */

static int
ffi_python_call_init(PyObject *function, ffi_python_cfg_t *cfg, void *tq)
{
    long       rc;
    PyObject  *result;

    result = PyObject_CallFunction(function, "NN",
                                   PyLong_FromVoidPtr(cfg->rest),
                                   PyLong_FromVoidPtr(tq));
    if (result == NULL) {
        ffi_python_log_exception("%s.%s() failed", cfg->module,
                                 cfg->function);
        return 1;
    }

    /* a function that forgot "return 0" still started its runtime */
    if (result == Py_None) {
        Py_DECREF(result);
        return 0;
    }

    rc = PyLong_AsLong(result);
    Py_DECREF(result);

    if (rc == -1 && PyErr_Occurred()) {
        ffi_python_log_exception("%s.%s() must return an int",
                                 cfg->module, cfg->function);
        return 1;
    }

    if (rc != 0) {
        fprintf(stderr, "ffi_python3: %s.%s() returned %ld\n",
                cfg->module, cfg->function, rc);
    }

    return (rc == 0) ? 0 : (rc > INT_MAX || rc < INT_MIN) ? 1 : (int) rc;
}


/*
 * The simpler way: a marked function is the handler itself; a marked class
 * is instantiated once per runtime with <rest> (a str, or None) and its
 * instance is the handler. One poll thread per runtime calls it.
 */

static int
ffi_python_start_handler(PyObject *marked, ffi_python_cfg_t *cfg, void *tq,
    PyInterpreterState *interp)
{
    int                    rc;
    PyObject              *handler;
    pthread_t              thread;
    ffi_python_runtime_t  *rt;

    if (PyType_Check(marked)) {
        handler = cfg->rest
                  ? PyObject_CallFunction(marked, "s", cfg->rest)
                  : PyObject_CallFunctionObjArgs(marked, Py_None, NULL);
        if (handler == NULL) {
            ffi_python_log_exception("cannot create handler %s.%s",
                                     cfg->module, cfg->function);
            return 1;
        }

    } else {
        handler = Py_NewRef(marked);
    }

    if (!PyCallable_Check(handler)) {
        fprintf(stderr, "ffi_python3: handler %s.%s is not callable\n",
                cfg->module, cfg->function);
        Py_DECREF(handler);
        return 1;
    }

    rt = malloc(sizeof(ffi_python_runtime_t));
    if (rt == NULL) {
        Py_DECREF(handler);
        return 1;
    }

    rt->handler = handler;
    rt->interp = interp;
    rt->tq = tq;

    /* made while the caller's exists: see ffi_python_leave_interpreter() */
    rt->ts = interp ? PyThreadState_New(interp) : NULL;

    rc = pthread_create(&thread, NULL, ffi_python_poll, rt);
    if (rc != 0) {
        fprintf(stderr, "ffi_python3: pthread_create() failed: %s\n",
                strerror(rc));

        if (rt->ts != NULL) {
            PyThreadState_Clear(rt->ts);
            PyThreadState_Delete(rt->ts);
        }

        Py_DECREF(handler);
        free(rt);
        return 1;
    }

    (void) pthread_detach(thread);

    return 0;
}


/*
 * The poll thread of a handler runtime. It keeps one thread state for its
 * life and holds the GIL only while Python code runs: never while it waits
 * for a task, and never while it hands a response to nginx. In a
 * sub-interpreter its thread state is that interpreter's, made by the
 * thread itself (ffi_python_adopt()), and it ends the interpreter after
 * close().
 */

static void *
ffi_python_poll(void *data)
{
    void                  *task;
    PyObject              *method, *result;
    PyGILState_STATE       gil;
    ffi_python_runtime_t  *rt;

    rt = data;
    gil = PyGILState_UNLOCKED;

    ffi_python_tq = rt->tq;

    if (rt->interp == NULL) {
        gil = PyGILState_Ensure();

    } else {
        (void) ffi_python_adopt(rt->ts);
    }

    rt->ts = PyEval_SaveThread();

    for ( ;; ) {
        task = ngx_http_lua_ffi_task_poll(rt->tq);
        if (task == NULL) {
            break;
        }

        ffi_python_serve(rt, task);
    }

    /* the NULL task: the runtime is unloaded, let the handler clean up */

    PyEval_RestoreThread(rt->ts);

    /* tq is the host's no more: close() logs with no runtime named */
    ffi_python_flush_output();
    ffi_python_tq = NULL;

    if (PyObject_HasAttrString(rt->handler, "close")) {
        method = PyObject_GetAttrString(rt->handler, "close");
        result = method ? PyObject_CallNoArgs(method) : NULL;

        if (result == NULL) {
            ffi_python_log_exception("a handler's close() failed");
        }

        Py_XDECREF(result);
        Py_XDECREF(method);
    }

    Py_DECREF(rt->handler);

    if (rt->interp != NULL) {
        ffi_python_end_interpreter(rt->ts);

    } else {
        PyGILState_Release(gil);
    }

    free(rt);

    return NULL;
}


static void
ffi_python_serve(ffi_python_runtime_t *rt, void *task)
{
    int        len, rc;
    char      *req, *rsp;
    PyObject  *arg, *result;

    req = ngx_http_lua_ffi_get_req(task, &len);

    PyEval_RestoreThread(rt->ts);

    arg = PyBytes_FromStringAndSize(req ? req : "", req ? len : 0);
    result = arg ? PyObject_CallOneArg(rt->handler, arg) : NULL;

    rsp = (result != NULL) ? ffi_python_result(result, &len) : NULL;
    rc = PyErr_Occurred() ? 1 : 0;

    if (rc != 0) {
        rsp = ffi_python_exception_text(&len);
    }

    Py_XDECREF(result);
    Py_XDECREF(arg);

    rt->ts = PyEval_SaveThread();

    ngx_http_lua_ffi_respond(task, rc, rsp, len);
}


/*
 * bytes-like and str (as UTF-8) become the response, None none at all.
 * The copy has a spare NUL so that an empty response is an empty string.
 */

static char *
ffi_python_result(PyObject *result, int *len)
{
    char       *rsp;
    const char *data;
    Py_ssize_t  size;
    Py_buffer   view;

    *len = 0;

    if (result == Py_None) {
        return NULL;
    }

    view.obj = NULL;

    if (PyUnicode_Check(result)) {
        data = PyUnicode_AsUTF8AndSize(result, &size);
        if (data == NULL) {
            return NULL;
        }

    } else if (PyObject_GetBuffer(result, &view, PyBUF_SIMPLE) == 0) {
        data = view.buf;
        size = view.len;

    } else {
        PyErr_Format(PyExc_TypeError, "handler returned %.200s, "
                     "expected bytes, str or None", Py_TYPE(result)->tp_name);
        return NULL;
    }

    rsp = NULL;

    if (size > INT_MAX - 1) {
        PyErr_SetString(PyExc_OverflowError, "response too large");

    } else {
        rsp = malloc(size + 1);
        if (rsp == NULL) {
            PyErr_NoMemory();

        } else {
            memcpy(rsp, data, size);
            rsp[size] = '\0';
            *len = (int) size;
        }
    }

    if (view.obj != NULL) {
        PyBuffer_Release(&view);
    }

    return rsp;
}


/* the pending exception as "Type: message", malloc()ed, and cleared */

static char *
ffi_python_exception_text(int *len)
{
    char       *text;
    PyObject   *type, *value, *tb, *traceback, *lines, *joined;
    Py_ssize_t  size;
    const char *data;

    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);

    text = NULL;
    lines = NULL;
    joined = NULL;

    traceback = PyImport_ImportModule("traceback");
    if (traceback != NULL && value != NULL) {
        lines = PyObject_CallMethod(traceback, "format_exception_only", "O",
                                    value);
    }

    if (lines != NULL) {
        joined = PyUnicode_Join(NULL, lines);
    }

    data = joined ? PyUnicode_AsUTF8AndSize(joined, &size) : NULL;
    if (data == NULL) {
        data = "exception in handler";
        size = strlen(data);
    }

    /* format_exception_only() ends with a newline: not part of the text */
    while (size > 0 && data[size - 1] == '\n') {
        size--;
    }

    if (size > INT_MAX - 1) {
        size = INT_MAX - 1;
    }

    text = malloc(size + 1);
    if (text != NULL) {
        memcpy(text, data, size);
        text[size] = '\0';
    }

    *len = text ? (int) size : 0;

    PyErr_Clear();

    Py_XDECREF(joined);
    Py_XDECREF(lines);
    Py_XDECREF(traceback);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);

    return text;
}


/*
 * Writes the pending Python exception with its traceback to stderr, which
 * nginx points at its error log, and clears it. Unlike PyErr_Print(), a
 * SystemExit raised by a module does not end the nginx worker.
 */

static void
ffi_python_log_exception(const char *fmt, ...)
{
    va_list    args;
    PyObject  *type, *value, *tb, *traceback, *result;

    va_start(args, fmt);
    fputs("ffi_python3: ", stderr);
    vfprintf(stderr, fmt, args);
    fputc('\n', stderr);
    va_end(args);

    if (!PyErr_Occurred()) {
        return;
    }

    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);

    if (tb != NULL && value != NULL) {
        (void) PyException_SetTraceback(value, tb);
    }

    result = NULL;

    traceback = PyImport_ImportModule("traceback");
    if (traceback != NULL && value != NULL) {
        result = PyObject_CallMethod(traceback, "print_exception", "O",
                                     value);
    }

    if (result == NULL) {
        fprintf(stderr, "ffi_python3: (the traceback could not be printed)\n");
    }

    PyErr_Clear();

    result = PySys_GetObject("stderr") != NULL
             ? PyObject_CallMethod(PySys_GetObject("stderr"), "flush", NULL)
             : NULL;
    PyErr_Clear();

    Py_XDECREF(result);
    Py_XDECREF(traceback);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
}


/* the module resty_ffi, built into the interpreter by this loader */

static PyObject *
ffi_python_handler(PyObject *self, PyObject *obj)
{
    if (!PyCallable_Check(obj)) {
        PyErr_SetString(PyExc_TypeError,
                        "resty_ffi.handler decorates a function or a class");
        return NULL;
    }

    if (PyObject_SetAttrString(obj, FFI_PYTHON_MARK, Py_True) != 0) {
        return NULL;
    }

    return Py_NewRef(obj);
}


/* resty_ffi.log(level, msg): one line into nginx's error.log */

static PyObject *
ffi_python_log(PyObject *self, PyObject *args)
{
    int          level, rc;
    const char  *msg;
    Py_ssize_t   len;

    if (!PyArg_ParseTuple(args, "is#", &level, &msg, &len)) {
        return NULL;
    }

    if (level < 1 || level > 8) {
        PyErr_SetString(PyExc_ValueError, "level: 1 (emerg) to 8 (debug)");
        return NULL;
    }

    if (len > INT_MAX) {
        len = INT_MAX;
    }

    if (ngx_http_lua_ffi_log == NULL) {
        /* a host without the service: the worker's stderr, unlevelled */
        fprintf(stderr, "%.*s\n", (int) len, msg);
        rc = 0;

    } else {
        /* len 0 means NUL-terminated: "" is an empty line all the same */
        rc = ngx_http_lua_ffi_log(ffi_python_tq, level, len ? msg : "",
                                  (int) len);
    }

    return PyBool_FromLong(rc == 0);
}


/* resty_ffi.bind(tq): this thread works for runtime tq (an int address) */

static PyObject *
ffi_python_bind(PyObject *self, PyObject *arg)
{
    void  *tq;

    tq = (arg == Py_None) ? NULL : PyLong_AsVoidPtr(arg);
    if (tq == NULL && PyErr_Occurred()) {
        return NULL;
    }

    ffi_python_tq = tq;

    Py_RETURN_NONE;
}


/* resty_ffi.bound(): the runtime this thread works for, or None */

static PyObject *
ffi_python_bound(PyObject *self, PyObject *unused)
{
    if (ffi_python_tq == NULL) {
        Py_RETURN_NONE;
    }

    return PyLong_FromVoidPtr(ffi_python_tq);
}


/* resty_ffi.DictError of the interpreter the module is in */

static PyObject *
ffi_python_dict_error(PyObject *module)
{
    ffi_python_module_state_t  *state;

    state = PyModule_GetState(module);

    return state ? state->dict_error : PyExc_RuntimeError;
}


static PyObject *
ffi_python_dict_fail(PyObject *self, int rc, const char *dict)
{
    const char  *why;

    switch (rc) {
    case -1:
        why = "no lua_shared_dict";
        break;
    case -2:
        why = "no memory in lua_shared_dict";
        break;
    case -3:
        why = "not a number (or a list) in lua_shared_dict";
        break;
    case -4:
        why = "bad key or exptime for lua_shared_dict";
        break;
    default:
        why = "error in lua_shared_dict";
        break;
    }

    PyErr_Format(ffi_python_dict_error(self), "%s \"%s\" (%d)", why, dict,
                 rc);

    return NULL;
}


static int
ffi_python_dict_ready(PyObject *self)
{
    if (ngx_http_lua_ffi_dict_get == NULL) {
        PyErr_SetString(ffi_python_dict_error(self),
                        "this nginx has no shared dicts for runtimes");
        return 0;
    }

    return 1;
}


/* resty_ffi.dict_get(dict, key) -> bytes, or None when absent */

static PyObject *
ffi_python_dict_get(PyObject *self, PyObject *args)
{
    int          rc, len;
    char        *val;
    void        *tq;
    const char  *dict, *key;
    PyObject    *result;
    Py_ssize_t   key_len;

    if (!PyArg_ParseTuple(args, "ss#", &dict, &key, &key_len)
        || !ffi_python_dict_ready(self))
    {
        return NULL;
    }

    tq = ffi_python_tq;

    Py_BEGIN_ALLOW_THREADS
    rc = ngx_http_lua_ffi_dict_get(tq, dict, key, (int) key_len, &val, &len);
    Py_END_ALLOW_THREADS

    if (rc == 1) {
        Py_RETURN_NONE;
    }

    if (rc != 0) {
        return ffi_python_dict_fail(self, rc, dict);
    }

    result = PyBytes_FromStringAndSize(val, len);
    free(val);

    return result;
}


/* resty_ffi.dict_set(dict, key, value, exptime=0); value None deletes */

static PyObject *
ffi_python_dict_set(PyObject *self, PyObject *args)
{
    int          rc;
    void        *tq;
    double       exptime;
    const char  *dict, *key, *val;
    Py_ssize_t   key_len, val_len;

    val = NULL;
    val_len = 0;
    exptime = 0;

    if (!PyArg_ParseTuple(args, "ss#z#|d", &dict, &key, &key_len, &val,
                          &val_len, &exptime)
        || !ffi_python_dict_ready(self))
    {
        return NULL;
    }

    tq = ffi_python_tq;

    Py_BEGIN_ALLOW_THREADS
    rc = ngx_http_lua_ffi_dict_set(tq, dict, key, (int) key_len, val,
                                   (int) val_len, exptime);
    Py_END_ALLOW_THREADS

    if (rc != 0) {
        return ffi_python_dict_fail(self, rc, dict);
    }

    Py_RETURN_NONE;
}


/* resty_ffi.dict_incr(dict, key, by=1, init=0) -> the new value */

static PyObject *
ffi_python_dict_incr(PyObject *self, PyObject *args)
{
    int          rc;
    void        *tq;
    double       by, init, result;
    const char  *dict, *key;
    Py_ssize_t   key_len;

    by = 1;
    init = 0;

    if (!PyArg_ParseTuple(args, "ss#|dd", &dict, &key, &key_len, &by, &init)
        || !ffi_python_dict_ready(self))
    {
        return NULL;
    }

    tq = ffi_python_tq;

    Py_BEGIN_ALLOW_THREADS
    rc = ngx_http_lua_ffi_dict_incr(tq, dict, key, (int) key_len, by, init,
                                    &result);
    Py_END_ALLOW_THREADS

    if (rc != 0) {
        return ffi_python_dict_fail(self, rc, dict);
    }

    return PyFloat_FromDouble(result);
}


static PyMethodDef  ffi_python_methods[] = {
    { "handler", ffi_python_handler, METH_O,
      "Marks a function (bytes -> bytes) or a class (instantiated with the\n"
      "cfg's rest as str or None; its instances are called with bytes) as\n"
      "the request handler of a runtime. Returns it unchanged." },
    { "log", ffi_python_log, METH_VARARGS,
      "log(level, msg): one line into nginx's error.log at an nginx level\n"
      "(1 emerg ... 8 debug), with the runtime's name and version.\n"
      "False when it was dropped (the worker's buffer was full)." },
    { "bind", ffi_python_bind, METH_O,
      "bind(tq): lines this thread logs (print() too) name runtime tq,\n"
      "the int an init(cfg, tq) function gets, or bound() of another\n"
      "thread. A thread bound to a runtime must stop logging when that\n"
      "runtime is unloaded. bind(None) undoes it." },
    { "bound", ffi_python_bound, METH_NOARGS,
      "bound() -> the tq this thread is bound to (int), or None. A\n"
      "handler's thread is bound to its runtime; threads it starts are\n"
      "not, unless they call bind(bound() of the handler's thread)." },
    { "dict_get", ffi_python_dict_get, METH_VARARGS,
      "dict_get(dict, key) -> bytes or None: ngx.shared[dict]:get(key);\n"
      "numbers come back in Lua's string form (b\"42\")." },
    { "dict_set", ffi_python_dict_set, METH_VARARGS,
      "dict_set(dict, key, value, exptime=0): ngx.shared[dict]:set();\n"
      "value str or bytes; None deletes." },
    { "dict_incr", ffi_python_dict_incr, METH_VARARGS,
      "dict_incr(dict, key, by=1, init=0) -> float:\n"
      "ngx.shared[dict]:incr(key, by, init)." },
    { NULL, NULL, 0, NULL }
};


/*
 * Multi-phase initialization: each interpreter (the main one, and each
 * runtime's sub-interpreter) gets a module of its own, with its own
 * DictError, freed with the interpreter.
 */

static int
ffi_python_module_exec(PyObject *module)
{
    ffi_python_module_state_t  *state;

    state = PyModule_GetState(module);

    state->dict_error = PyErr_NewException("resty_ffi.DictError",
                                           PyExc_RuntimeError, NULL);
    if (state->dict_error == NULL) {
        return -1;
    }

    return PyModule_AddObjectRef(module, "DictError", state->dict_error);
}


static int
ffi_python_module_traverse(PyObject *module, visitproc visit, void *arg)
{
    ffi_python_module_state_t  *state;

    state = PyModule_GetState(module);
    Py_VISIT(state->dict_error);

    return 0;
}


static int
ffi_python_module_clear(PyObject *module)
{
    ffi_python_module_state_t  *state;

    state = PyModule_GetState(module);
    Py_CLEAR(state->dict_error);

    return 0;
}


static void
ffi_python_module_free(void *module)
{
    (void) ffi_python_module_clear(module);
}


static PyModuleDef_Slot  ffi_python_module_slots[] = {
    { Py_mod_exec, ffi_python_module_exec },
    { 0, NULL }
};


static struct PyModuleDef  ffi_python_module = {
    PyModuleDef_HEAD_INIT,
    "resty_ffi",
    "Request handlers for lua-resty-ffi's Python loader.",
    sizeof(ffi_python_module_state_t),
    ffi_python_methods,
    ffi_python_module_slots,
    ffi_python_module_traverse,
    ffi_python_module_clear,
    ffi_python_module_free
};


static PyObject *
ffi_python_module_init(void)
{
    return PyModuleDef_Init(&ffi_python_module);
}


/*
 * print(), sys.stdout and sys.stderr become lines of nginx's error.log
 * (notice and warn). The root logger gets a handler that logs each record
 * at its level (resty_ffi.LogHandler, which applications that configure
 * logging themselves may add too); logging.basicConfig() replaces it, as
 * the application then asks for its own. Lines are gathered per thread,
 * so that two threads printing at once never share a line.
 */

static const char  ffi_python_output_code[] =
    "import io, logging, sys, threading\n"
    "import resty_ffi\n"
    "\n"
    "class _Output(io.TextIOBase):\n"
    "    def __init__(self, level, name):\n"
    "        self._level = level\n"
    "        self._name = name\n"
    "        self._local = threading.local()\n"
    "    name = property(lambda self: self._name)\n"
    "    encoding = 'utf-8'\n"
    "    errors = 'replace'\n"
    "    def writable(self):\n"
    "        return True\n"
    "    def isatty(self):\n"
    "        return False\n"
    "    def write(self, s):\n"
    "        if not isinstance(s, str):\n"
    "            raise TypeError('write() argument must be str, not '\n"
    "                            + type(s).__name__)\n"
    "        lines = (getattr(self._local, 'buf', '') + s).split('\\n')\n"
    "        self._local.buf = lines.pop()\n"
    "        for line in lines:\n"
    "            resty_ffi.log(self._level, line)\n"
    "        return len(s)\n"
    "    def flush(self):\n"
    "        buf = getattr(self._local, 'buf', '')\n"
    "        if buf:\n"
    "            self._local.buf = ''\n"
    "            resty_ffi.log(self._level, buf)\n"
    "\n"
    "def _nginx_level(levelno):\n"
    "    for at, level in ((logging.CRITICAL, 3), (logging.ERROR, 4),\n"
    "                      (logging.WARNING, 5), (logging.INFO, 7)):\n"
    "        if levelno >= at:\n"
    "            return level\n"
    "    return 8\n"
    "\n"
    "class LogHandler(logging.Handler):\n"
    "    # each record to nginx's error.log, at its level\n"
    "    def emit(self, record):\n"
    "        try:\n"
    "            resty_ffi.log(_nginx_level(record.levelno),\n"
    "                          self.format(record))\n"
    "        except Exception:\n"
    "            self.handleError(record)\n"
    "\n"
    "resty_ffi.LogHandler = LogHandler\n"
    "sys.stdout = _Output(6, '<nginx error.log: notice>')\n"
    "sys.stderr = _Output(5, '<nginx error.log: warn>')\n"
    "logging.lastResort = LogHandler(logging.DEBUG)\n"
    "_root = LogHandler()\n"
    "logging.getLogger().addHandler(_root)\n"
    "_basic = logging.basicConfig\n"
    "def basicConfig(**kwargs):\n"
    "    # an application's own configuration replaces ours\n"
    "    root = logging.getLogger()\n"
    "    if root.handlers == [_root]:\n"
    "        root.removeHandler(_root)\n"
    "    _basic(**kwargs)\n"
    "logging.basicConfig = basicConfig\n"
    "\n"
    "def _join_threads():\n"
    "    # the threads the application started here, so that a\n"
    "    # sub-interpreter can end: joined; how many were running\n"
    "    threading = sys.modules.get('threading')\n"
    "    if threading is None:\n"
    "        return 0\n"
    "    me = threading.get_ident()\n"
    "    alive = [t for t in threading.enumerate()\n"
    "             if t.ident != me and t.is_alive()\n"
    "             and not isinstance(t, threading._DummyThread)]\n"
    "    for t in alive:\n"
    "        t.join()\n"
    "    return len(alive)\n"
    "\n"
    "resty_ffi._join_threads = _join_threads\n";


static int
ffi_python_route_output(void)
{
    int        rc;
    PyObject  *globals, *result;

    rc = -1;
    result = NULL;

    globals = PyDict_New();
    if (globals != NULL
        && PyDict_SetItemString(globals, "__builtins__",
                                PyEval_GetBuiltins()) == 0)
    {
        result = PyRun_String(ffi_python_output_code, Py_file_input, globals,
                              globals);
        rc = (result == NULL) ? -1 : 0;
    }

    if (rc != 0) {
        ffi_python_log_exception("cannot route print() to error.log");
    }

    Py_XDECREF(result);
    Py_XDECREF(globals);

    return rc;
}


/* With the GIL: a line left unfinished on stdout or stderr is written. */

static void
ffi_python_flush_output(void)
{
    int        i;
    PyObject  *stream, *result;

    for (i = 0; i < 2; i++) {
        stream = PySys_GetObject(i ? "stderr" : "stdout");
        if (stream == NULL) {
            continue;
        }

        result = PyObject_CallMethod(stream, "flush", NULL);
        Py_XDECREF(result);
        PyErr_Clear();
    }
}
