# The Java loader and the runtime services: System.out and System.err reach
# error.log (notice, warn) with the runtime's name and version, from init()
# and from the threads it starts; the demo counts its starts in a shared dict.
use lib 't/lib';
use FFITest;

our $repo = FFITest::repo();
our $root = FFITest::servroot();

my $arch = `dpkg --print-architecture`;
chomp $arch;
my $javac = "/usr/lib/jvm/java-17-openjdk-$arch/bin/javac";
my $jnr = join ':', map { "/usr/share/java/$_.jar" } qw(jnr-ffi jffi);

our $classes = "$root/classes";
mkdir $classes;
mkdir "$classes/t730";

open my $fh, '>', "$classes/t730/Talk.java" or die "Talk.java: $!\n";
print $fh <<'JAVA';
package t730;

import jnr.ffi.LibraryLoader;
import jnr.ffi.Pointer;
import jnr.ffi.Runtime;
import jnr.ffi.byref.IntByReference;

public class Talk {
    public interface Host {
        Pointer ngx_http_lua_ffi_task_poll(Pointer tq);
        Pointer ngx_http_lua_ffi_get_req(Pointer task, IntByReference len);
        void ngx_http_lua_ffi_respond(Pointer task, int rc, Pointer rsp,
                                      int len);
    }

    public static int init(String cfg, long tq) {
        Host host = LibraryLoader.create(Host.class)
                                 .load(LibraryLoader.DEFAULT_LIBRARY);
        Pointer q = Pointer.wrap(Runtime.getSystemRuntime(), tq);

        System.out.println("t730 init says " + cfg);

        Thread t = new Thread(() -> {
            IntByReference len = new IntByReference();
            for (;;) {
                Pointer task = host.ngx_http_lua_ffi_task_poll(q);
                if (task == null) {
                    return;
                }
                Pointer req = host.ngx_http_lua_ffi_get_req(task, len);
                String word = req.getString(0, len.intValue(),
                        java.nio.charset.StandardCharsets.UTF_8);
                System.out.print("out says ");
                System.out.println(word);
                System.err.println("err says " + word + "\nsecond line");
                host.ngx_http_lua_ffi_respond(task, 0, null, 0);
            }
        });
        t.setDaemon(true);
        t.start();
        return 0;
    }
}
JAVA
close $fh;

system($javac, '--release', '17', '-cp', $jnr, '-d', $classes,
       "$classes/t730/Talk.java") == 0 or die "javac failed\n";

our $main_config = "env LD_LIBRARY_PATH=$repo/examples/java;\n"
                 . "env CLASSPATH=$classes;";

run_tests();

__DATA__

=== TEST 1: System.out and System.err, from init() and from its thread
--- main_config eval: $::main_config
--- config
location = /t {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("ffi_java", "t730.Talk,init,hello"))
        ngx.say(tostring(rt:call("hi")))
    }
}
--- request
GET /t
--- timeout: 60
--- response_body
true
--- wait_for_log_timeout: 60
--- wait_for_log eval
[qr/\[notice\] \d+#\d+: ffi: \[ffi_java v1\] t730 init says hello$/m,
 qr/\[notice\] \d+#\d+: ffi: \[ffi_java v1\] out says hi$/m,
 qr/\[warn\] \d+#\d+: ffi: \[ffi_java v1\] err says hi$/m,
 qr/\[warn\] \d+#\d+: ffi: \[ffi_java v1\] second line$/m]
--- no_error_log
[error]



=== TEST 2: the demo counts its starts in lua_shared_dict ffi_examples
--- main_config eval: $::main_config
--- http_config
lua_shared_dict ffi_examples 1m;
--- config
location = /t {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("ffi_java", "demo.echo.App?,init,"))
        ngx.say(select(2, rt:call("echo")))
        local rt2 = assert(ngx.load_ffi("ffi_java", "demo.echo.App?,init,2"))
        ngx.say(select(2, rt2:call("echo")))
        ngx.say("starts: ", ngx.shared.ffi_examples:get("java_starts"))
    }
}
--- request
GET /t
--- timeout: 60
--- response_body
echo
echo
starts: 2
--- wait_for_log_timeout: 60
--- wait_for_log eval
[qr/ffi: \[ffi_java v1\] demo.echo.App: start number 1$/m,
 qr/ffi: \[ffi_java v1\] demo.echo.App: start number 2$/m]
--- no_error_log
[error]
