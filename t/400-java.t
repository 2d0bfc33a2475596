# The Java loader (examples/java/libffi_java.so): the demo class found beside
# the loader, classes on CLASSPATH, cfg, JAVA_OPTS, and every way init fails.
use lib 't/lib';
use FFITest;

our $repo = FFITest::repo();
our $root = FFITest::servroot();

# Debian's JDK 17 compiles the test classes, against Debian's jnr-ffi
my $arch = `dpkg --print-architecture`;
chomp $arch;
my $javac = "/usr/lib/jvm/java-17-openjdk-$arch/bin/javac";
my $jnr = join ':', map { "/usr/share/java/$_.jar" } qw(jnr-ffi jffi);

# test classes, on CLASSPATH; demo/echo beside the loader needs none
our $classes = "$root/classes";
mkdir $classes;
mkdir "$classes/t400";

sub spew {
    my ($file, $text) = @_;
    open my $fh, '>', $file or die "$file: $!\n";
    print $fh $text;
    close $fh or die "$file: $!\n";
}

# answers cfg, the system property t400.tag, then the request
spew("$classes/t400/Prefix.java", <<'JAVA');
package t400;

import java.nio.charset.StandardCharsets;
import jnr.ffi.LibraryLoader;
import jnr.ffi.Pointer;
import jnr.ffi.Runtime;
import jnr.ffi.byref.IntByReference;

public class Prefix {
    public interface Host {
        Pointer ngx_http_lua_ffi_task_poll(Pointer tq);
        Pointer ngx_http_lua_ffi_get_req(Pointer task, IntByReference len);
        void ngx_http_lua_ffi_respond(Pointer task, int rc, Pointer rsp,
                                      int len);
    }

    public interface Libc {
        Pointer strdup(String s);
    }

    public static int init(String cfg, long tq) {
        Host host = LibraryLoader.create(Host.class)
                                 .load(LibraryLoader.DEFAULT_LIBRARY);
        Libc libc = LibraryLoader.create(Libc.class)
                                 .load(LibraryLoader.DEFAULT_LIBRARY);
        Pointer q = Pointer.wrap(Runtime.getSystemRuntime(), tq);
        String prefix = cfg + System.getProperty("t400.tag", "");

        Thread t = new Thread(() -> {
            IntByReference len = new IntByReference();
            for (;;) {
                Pointer task = host.ngx_http_lua_ffi_task_poll(q);
                if (task == null) {
                    return;
                }
                Pointer req = host.ngx_http_lua_ffi_get_req(task, len);
                String s = req == null ? "(null)"
                                       : req.getString(0, len.intValue(),
                                                       StandardCharsets.UTF_8);
                host.ngx_http_lua_ffi_respond(task, 0,
                                              libc.strdup(prefix + s), 0);
            }
        });
        t.setDaemon(true);
        t.start();
        return 0;
    }
}
JAVA

spew("$classes/t400/Fail.java", <<'JAVA');
package t400;

public class Fail {
    public static int seven(String cfg, long tq) {
        return 7;
    }

    public static int boom(String cfg, long tq) {
        throw new IllegalStateException("boom in init");
    }

    public static void wrongType(String cfg, long tq) {
    }

    static {
        if (System.getProperty("t400.fail.static") != null) {
            throw new RuntimeException("static initializer failed");
        }
    }
}
JAVA

my $out = `'$javac' --release 17 -cp '$jnr' -d '$classes' \\
           '$classes/t400/Prefix.java' '$classes/t400/Fail.java' 2>&1`;
die "javac failed: $out\n" if $?;

our $main_config = "env LD_LIBRARY_PATH=$repo/examples/java;\n"
                 . "env CLASSPATH=$classes;";

# call(cfg, req): the runtime "ffi_java" with cfg answers req; says what Lua
# got back
our $init = <<'LUA';
function call(cfg, req)
    local rt, rc = ngx.load_ffi("ffi_java", cfg)
    if not rt then
        ngx.say("load: nil ", rc)
        return
    end
    local ok, res, err = rt:call(req)
    ngx.say(tostring(ok), " ", tostring(res), " ", tostring(err))
end

-- echo_check(label, runtimes, n, width): see t/lib/ffitest.lua
local echo = require("ffitest").echo_check
function echo_check(label, runtimes, n, width)
    echo(label, runtimes, n, width, 300)
end
LUA

run_tests();

__DATA__

=== TEST 1: the demo class beside the loader, no CLASSPATH: 2 workers x 1,000
--- workers: 2
--- main_config eval: "env LD_LIBRARY_PATH=$::repo/examples/java;"
--- init_by_lua_block eval: $::init
--- init_worker_by_lua_block
ngx.timer.at(0, function()
    local rt, err = ngx.load_ffi("ffi_java", "demo.echo.App?,init,")
    if not rt then
        ngx.log(ngx.ERR, "load_ffi: ", err)
        return
    end
    local function same(req, res) return res == req end
    echo_check("java echo", {{rt, same}}, 1000, 20)
end)
--- wait_for_log eval
[("java echo: 1000 of 1000 calls right") x 2]
--- wait_for_log_timeout: 30
--- no_error_log
[error]
libffi_java



=== TEST 2: empty and missing requests
--- main_config eval: "env LD_LIBRARY_PATH=$::repo/examples/java;"
--- init_by_lua_block eval: $::init
--- config
location = /t {
    content_by_lua_block {
        call("demo.echo.App?,init,", "")
        local rt = ngx.load_ffi("ffi_java", "demo.echo.App?,init,")
        local ok, res, err = rt:call()
        ngx.say(tostring(ok), " ", tostring(res), " ", tostring(err))
        call("demo.echo.App?,init,", "a\0b")
    }
}
--- request
GET /t
--- response_body eval
"true  nil\ntrue nil nil\ntrue a\0b nil\n"
--- no_error_log
[error]



=== TEST 3: one JVM, several runtimes: cfg's rest (commas and all) reaches init
--- main_config eval: $::main_config
--- init_by_lua_block eval: $::init
--- config
location = /t {
    content_by_lua_block {
        call("t400.Prefix,init,a:", "x")
        call("t400.Prefix?,init,b,c:", "y")
        call("t400/Prefix,init,", "z")
        call("t400.Prefix,init", "w")
        call("demo.echo.App?,init,", "beside")
        call("t400.Prefix,init,a:", "again")
    }
}
--- request
GET /t
--- response_body
true a:x nil
true b,c:y nil
true z nil
true w nil
true beside nil
true a:again nil
--- no_error_log
[error]



=== TEST 4: init fails: nil and the code, the reason logged, the JVM serves on
--- main_config eval: $::main_config
--- init_by_lua_block eval: $::init
--- config
location = /t {
    content_by_lua_block {
        call("no.such.Class,init,", "x")
        call("no.such.Class?,init,", "x")
        call("t400.Fail,nothing,", "x")
        call("t400.Fail,wrongType,", "x")
        call("t400.Fail,seven,", "x")
        call("t400.Fail?,boom,", "x")
        call("t400.Prefix", "x")
        call(",init,", "x")
        call("demo.echo.App?,init,", "still here")
    }
}
--- request
GET /t
--- response_body
load: nil 1
load: nil 1
load: nil 1
load: nil 1
load: nil 7
load: nil 1
load: nil 1
load: nil 1
true still here nil
--- error_log
libffi_java: cannot load class no.such.Class
java.lang.ClassNotFoundException: no.such.Class
libffi_java: class t400.Fail has no "public static int nothing(String, long)"
libffi_java: class t400.Fail has no "public static int wrongType(String, long)"
libffi_java: t400.Fail.seven() returned 7
java.lang.IllegalStateException: boom in init
libffi_java: bad cfg "t400.Prefix": expected "<class>[?],<method>,<rest>"
libffi_java: bad cfg ",init,"



=== TEST 5: JAVA_OPTS reach the JVM; a class whose static initializer throws
--- main_config eval
"$::main_config\n"
. "env 'JAVA_OPTS=-Xmx128m  -Dt400.tag=<opts> -Dt400.fail.static=1';"
--- init_by_lua_block eval: $::init
--- config
location = /t {
    content_by_lua_block {
        call("t400.Prefix,init,", "x")
        call("t400.Fail,seven,", "x")
        call("t400.Prefix?,init,again", "y")
    }
}
--- request
GET /t
--- response_body
true <opts>x nil
load: nil 1
true again<opts>y nil
--- error_log
java.lang.ExceptionInInitializerError
static initializer failed



=== TEST 6: a JVM that cannot start: nil, 1 each time, and no crash
--- main_config eval
"$::main_config\nenv JAVA_OPTS=-Xno-such-option;"
--- init_by_lua_block eval: $::init
--- config
location = /t {
    content_by_lua_block {
        call("demo.echo.App?,init,", "x")
        call("t400.Prefix,init,", "y")
        ngx.say("nginx serves on")
    }
}
--- request
GET /t
--- response_body
load: nil 1
load: nil 1
nginx serves on
--- error_log
Unrecognized option: -Xno-such-option
libffi_java: JNI_CreateJavaVM() failed
libffi_java: the JVM failed to start earlier in this process
