/*
 * resty.ffi.NginxLog: System.out and System.err of Java runtimes become
 * lines of nginx's error.log (notice and warn), through the host's
 * ngx_http_lua_ffi_log(); log() writes one line at any nginx level.
 *
 * libffi_java defines this class from bytes compiled into the loader and
 * registers log0() natively. A line names the runtime its thread works for:
 * the thread that runs init(), and every thread started from it (or from
 * those), inherit that runtime; bind(tq) changes it for a thread. A thread
 * must not log for a runtime that was unloaded (its NULL task was polled).
 */

package resty.ffi;

import java.io.ByteArrayOutputStream;
import java.io.OutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;

public final class NginxLog extends OutputStream {

    public static final int EMERG = 1, ALERT = 2, CRIT = 3, ERR = 4,
                            WARN = 5, NOTICE = 6, INFO = 7, DEBUG = 8;

    private static final InheritableThreadLocal<Long> RUNTIME =
        new InheritableThreadLocal<>();

    private static native boolean log0(long tq, int level, byte[] msg,
                                       int len);

    /* one line at an nginx level; false when nginx dropped it */
    public static boolean log(int level, String msg) {
        byte[] bytes = msg.getBytes(StandardCharsets.UTF_8);
        return log0(runtime(), level, bytes, bytes.length);
    }

    /* the runtime (tq, as init() got it) this thread logs for; 0: none */
    public static void bind(long tq) {
        RUNTIME.set(tq);
    }

    public static long runtime() {
        Long tq = RUNTIME.get();
        return tq == null ? 0 : tq;
    }

    /* called once by the loader, after the JVM started */
    static void install() {
        System.setOut(new PrintStream(new NginxLog(NOTICE), false,
                                      StandardCharsets.UTF_8));
        System.setErr(new PrintStream(new NginxLog(WARN), false,
                                      StandardCharsets.UTF_8));
    }

    private final int level;

    /* a line per thread: two threads printing at once never share one */
    private final ThreadLocal<ByteArrayOutputStream> line =
        ThreadLocal.withInitial(ByteArrayOutputStream::new);

    private NginxLog(int level) {
        this.level = level;
    }

    @Override
    public void write(int b) {
        if (b == '\n') {
            emit();
        } else {
            line.get().write(b);
        }
    }

    @Override
    public void write(byte[] b, int off, int len) {
        ByteArrayOutputStream buf = line.get();
        int start = off;

        for (int i = off; i < off + len; i++) {
            if (b[i] == '\n') {
                buf.write(b, start, i - start);
                emit();
                start = i + 1;
            }
        }

        buf.write(b, start, off + len - start);
    }

    /* a partial line stays until its newline: print() then println() */
    @Override
    public void flush() {
    }

    private void emit() {
        ByteArrayOutputStream buf = line.get();
        log0(runtime(), level, buf.toByteArray(), buf.size());
        buf.reset();
    }
}
