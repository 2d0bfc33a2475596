/*
 * The Java echo runtime: answers every request with the same bytes.
 * Written to upstream lua-resty-ffi's Java conventions (jnr-ffi, own thread).
 *
 * Loaded by libffi_java with cfg "demo.echo.App?,init,": init() starts a
 * poll thread and returns; the thread ends when it polls the NULL task.
 *
 * It also shows the runtime services: System.out reaches nginx's error.log
 * (the loader routes it through ngx_http_lua_ffi_log), and each start is
 * counted in the lua_shared_dict "ffi_examples", where nginx.conf has one
 * (Lua reads it with ngx.shared.ffi_examples:get("java_starts")).
 */

package demo.echo;

import jnr.ffi.LibraryLoader;
import jnr.ffi.Pointer;
import jnr.ffi.Runtime;
import jnr.ffi.byref.DoubleByReference;
import jnr.ffi.byref.IntByReference;

public class App {

    /* the runtime ABI, found among the process's global symbols (nginx's) */
    public interface Host {
        Pointer ngx_http_lua_ffi_task_poll(Pointer tq);
        Pointer ngx_http_lua_ffi_get_req(Pointer task, IntByReference len);
        void ngx_http_lua_ffi_respond(Pointer task, int rc, Pointer rsp,
                                      int rspLen);
        /* a runtime service: -1 when there is no such lua_shared_dict */
        int ngx_http_lua_ffi_dict_incr(Pointer tq, String dict, String key,
                                       int keyLen, double by, double init,
                                       DoubleByReference result);
    }

    /* responses are malloc()ed: the host free()s them */
    public interface Libc {
        Pointer malloc(long size);
    }

    public static int init(String cfg, long tq) {
        Host host = LibraryLoader.create(Host.class)
                                 .load(LibraryLoader.DEFAULT_LIBRARY);
        /* the malloc the host's free() pairs with: the process's own */
        Libc libc = LibraryLoader.create(Libc.class)
                                 .load(LibraryLoader.DEFAULT_LIBRARY);
        Pointer queue = Pointer.wrap(Runtime.getSystemRuntime(), tq);
        DoubleByReference starts = new DoubleByReference();

        if (host.ngx_http_lua_ffi_dict_incr(queue, "ffi_examples",
                                            "java_starts", -1, 1, 0, starts)
            == 0)
        {
            System.out.println("demo.echo.App: start number "
                               + starts.longValue());
        } else {
            System.out.println("demo.echo.App: started");
        }

        Thread poller = new Thread(() -> serve(host, libc, queue),
                                   "ffi-java-echo");

        /* a daemon: it never holds the process back */
        poller.setDaemon(true);
        poller.start();

        return 0;
    }

    private static void serve(Host host, Libc libc, Pointer queue) {
        IntByReference len = new IntByReference();

        for ( ;; ) {
            Pointer task = host.ngx_http_lua_ffi_task_poll(queue);

            if (task == null) {
                /* unloaded: the queue is gone, never touch it again */
                return;
            }

            Pointer req = host.ngx_http_lua_ffi_get_req(task, len);

            if (req == null) {
                host.ngx_http_lua_ffi_respond(task, 0, null, 0);
                continue;
            }

            int n = len.intValue();

            /* n + 1 bytes, NUL-terminated: rsp_len 0 then means "" */
            Pointer rsp = libc.malloc(n + 1);

            if (rsp == null) {
                host.ngx_http_lua_ffi_respond(task, 1, null, 0);
                continue;
            }

            req.transferTo(0, rsp, 0, n);
            rsp.putByte(n, (byte) 0);

            host.ngx_http_lua_ffi_respond(task, 0, rsp, n);
        }
    }
}
