//! Echo runtime for lua-resty-ffi written in Rust: one poll thread per
//! runtime answers every request with the same bytes; unloadable image.
//!
//! Unloading (dlclose with `unpin = true`) is safe because no thread ever
//! runs this image's code after the image is unmapped:
//! - libffi_init runs on the nginx worker's main thread and must leave no
//!   thread-local destructor there: glibc never unmaps an image while any
//!   live thread holds one of its destructors, and the main thread lives as
//!   long as the worker. `std::thread::spawn` registers one (spawn hooks),
//!   so the poll thread is started with pthread_create instead.
//! - The poll thread registers one on purpose (EXIT_GUARD): glibc then keeps
//!   the image mapped until that thread has left our code for good, even if
//!   dlclose() comes in the instant after it took the NULL task.
//!
//! It also shows the runtime services: `NginxLog`, a logger onto nginx's
//! error.log, and a start counter in the lua_shared_dict "ffi_examples"
//! (if there is one: Lua reads it with ngx.shared.ffi_examples:get(...)).
//! They are looked up with dlsym(), so a host without them (upstream's)
//! still loads this library.

use std::fmt::{self, Write as _};
use std::os::raw::{c_char, c_double, c_int, c_void};
use std::ptr;

// The runtime ABI, exported by the nginx module; a cdylib may leave these
// undefined and the dynamic loader binds them when nginx loads us.
extern "C" {
    fn ngx_http_lua_ffi_task_poll(tq: *mut c_void) -> *mut c_void;
    fn ngx_http_lua_ffi_get_req(tsk: *mut c_void, len: *mut c_int) -> *mut c_char;
    fn ngx_http_lua_ffi_respond(tsk: *mut c_void, rc: c_int, rsp: *mut c_char, rsp_len: c_int);
}

type LogFn = unsafe extern "C" fn(*mut c_void, c_int, *const c_char, c_int) -> c_int;
type IncrFn = unsafe extern "C" fn(
    *mut c_void,
    *const c_char,
    *const c_char,
    c_int,
    c_double,
    c_double,
    *mut c_double,
) -> c_int;

/// nginx's levels, as ngx_http_lua_ffi_log takes them.
#[allow(dead_code)]
#[derive(Clone, Copy)]
pub enum Level {
    Error = 4,
    Warn = 5,
    Notice = 6,
    Info = 7,
    Debug = 8,
}

/// A logger onto nginx's error.log for one runtime: each line is written
/// by nginx's event loop, at its level, with the runtime's name and
/// version. Use it from the runtime's threads until its NULL task only.
pub struct NginxLog {
    tq: *mut c_void,
    log: Option<LogFn>,
}

impl NginxLog {
    pub fn new(tq: *mut c_void) -> NginxLog {
        let sym = unsafe {
            libc::dlsym(
                libc::RTLD_DEFAULT,
                b"ngx_http_lua_ffi_log\0".as_ptr() as *const c_char,
            )
        };
        let log = if sym.is_null() {
            None
        } else {
            Some(unsafe { std::mem::transmute::<*mut c_void, LogFn>(sym) })
        };
        NginxLog { tq, log }
    }

    /// One line; false when nginx dropped it (or has no log service).
    pub fn log(&self, level: Level, args: fmt::Arguments) -> bool {
        let mut line = String::new();
        if line.write_fmt(args).is_err() {
            return false;
        }
        match self.log {
            // "" for an empty line: len 0 means NUL-terminated
            Some(log) => unsafe {
                let msg = if line.is_empty() {
                    b"\0".as_ptr() as *const c_char
                } else {
                    line.as_ptr() as *const c_char
                };
                log(self.tq, level as c_int, msg, line.len() as c_int) == 0
            },
            None => false,
        }
    }
}

/// `ngx_http_lua_ffi_dict_incr(tq, dict, key, by, 0)`: the new value, or
/// None without such a dict (or a host without the service).
fn dict_incr(tq: *mut c_void, dict: &[u8], key: &[u8], by: f64) -> Option<f64> {
    let sym = unsafe {
        libc::dlsym(
            libc::RTLD_DEFAULT,
            b"ngx_http_lua_ffi_dict_incr\0".as_ptr() as *const c_char,
        )
    };
    if sym.is_null() {
        return None;
    }
    let incr = unsafe { std::mem::transmute::<*mut c_void, IncrFn>(sym) };
    let mut result: c_double = 0.0;
    let rc = unsafe {
        incr(
            tq,
            dict.as_ptr() as *const c_char,
            key.as_ptr() as *const c_char,
            key.len() as c_int,
            by,
            0.0,
            &mut result,
        )
    };
    if rc == 0 {
        Some(result)
    } else {
        None
    }
}

/// Its destructor runs when the poll thread exits, after its last line of
/// our code; registering it is what holds the image (see above).
struct ExitGuard;

impl Drop for ExitGuard {
    fn drop(&mut self) {}
}

thread_local! {
    static EXIT_GUARD: ExitGuard = ExitGuard;
}

/// Answers one request with a malloc()ed copy of it; the module frees it.
unsafe fn echo(task: *mut c_void) {
    let mut len: c_int = 0;
    let req = ngx_http_lua_ffi_get_req(task, &mut len);
    let n = len.max(0) as usize;

    // One spare byte: an empty request gets an empty NUL-terminated string
    // (rsp_len 0 means "NUL-terminated"), not a NULL (no response) one.
    let rsp = libc::malloc(n + 1) as *mut c_char;
    if rsp.is_null() {
        ngx_http_lua_ffi_respond(task, 1, ptr::null_mut(), 0);
        return;
    }

    if !req.is_null() && n > 0 {
        ptr::copy_nonoverlapping(req, rsp, n);
    }
    *rsp.add(n) = 0;

    ngx_http_lua_ffi_respond(task, 0, rsp, n as c_int);
}

/// Serves one runtime until the NULL task, after which the task queue is
/// gone and the thread must return at once.
extern "C" fn poll(tq: *mut c_void) -> *mut c_void {
    EXIT_GUARD.with(|_| {});

    loop {
        let task = unsafe { ngx_http_lua_ffi_task_poll(tq) };
        if task.is_null() {
            return ptr::null_mut();
        }
        unsafe { echo(task) };
    }
}

/// Starts one runtime: a single detached poll thread. The echo needs no
/// configuration, so `cfg` (possibly NULL) is ignored.
#[no_mangle]
pub extern "C" fn libffi_init(_cfg: *mut c_char, tq: *mut c_void) -> c_int {
    let mut thread: libc::pthread_t = 0;
    let log = NginxLog::new(tq);

    // the dict name is NUL-terminated; the key goes by length
    match dict_incr(tq, b"ffi_examples\0", b"rust_starts", 1.0) {
        Some(n) => log.log(Level::Notice, format_args!("rust echo: start number {}", n)),
        None => log.log(Level::Notice, format_args!("rust echo: start")),
    };

    let rc = unsafe { libc::pthread_create(&mut thread, ptr::null(), poll, tq) };
    if rc != 0 {
        return rc;
    }

    unsafe { libc::pthread_detach(thread) };
    0
}
