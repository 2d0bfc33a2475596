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

use std::os::raw::{c_char, c_int, c_void};
use std::ptr;

// The runtime ABI, exported by the nginx module; a cdylib may leave these
// undefined and the dynamic loader binds them when nginx loads us.
extern "C" {
    fn ngx_http_lua_ffi_task_poll(tq: *mut c_void) -> *mut c_void;
    fn ngx_http_lua_ffi_get_req(tsk: *mut c_void, len: *mut c_int) -> *mut c_char;
    fn ngx_http_lua_ffi_respond(tsk: *mut c_void, rc: c_int, rsp: *mut c_char, rsp_len: c_int);
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

    let rc = unsafe { libc::pthread_create(&mut thread, ptr::null(), poll, tq) };
    if rc != 0 {
        return rc;
    }

    unsafe { libc::pthread_detach(thread) };
    0
}
