# Reloading Java code: recompile demo.echo.App, POST /ffi/reload?lib=ffi_java,
# and the new class serves ("?": a fresh class loader per init); a class
# loaded without "?" keeps its first version; a failing init and a rebuilt
# loader are refused and the old code serves on.
use lib 't/lib';
use FFITest;
use File::Copy qw(copy);
use JSON::PP qw(decode_json);

my $repo = FFITest::repo();
my $root = FFITest::servroot();

my $arch = `dpkg --print-architecture`;
chomp $arch;
my $jdk = "/usr/lib/jvm/java-17-openjdk-$arch";
my $jnr = join ':', map { "/usr/share/java/$_.jar" } qw(jnr-ffi jffi);

# a copy of the loader with its classes beside it, which this test edits
my $dir = "$root/java";
mkdir $dir;
mkdir "$dir/demo";
mkdir "$dir/demo/echo";
mkdir "$dir/t401";
copy("$repo/examples/java/libffi_java.so", "$dir/libffi_java.so")
    or die "copy: $!\n";

sub slurp {
    my ($file) = @_;
    open my $fh, '<', $file or die "$file: $!\n";
    local $/;
    return scalar <$fh>;
}

sub spew {
    my ($file, $text) = @_;
    open my $fh, '>', $file or die "$file: $!\n";
    print $fh $text;
    close $fh or die "$file: $!\n";
}

# compiles one class into the folder beside the loader
sub javac {
    my ($file, $text) = @_;
    spew("$dir/$file", $text);
    my $out = `'$jdk/bin/javac' --release 17 -cp '$jnr' -d '$dir' \\
               '$dir/$file' 2>&1`;
    die "javac $file: $out\n" if $?;
}

my $echo = slurp("$repo/examples/java/demo/echo/App.java");
javac('demo/echo/App.java', $echo);

# loaded without "?": a restart keeps the class it was first loaded with
my $stay = $echo =~ s/package demo\.echo;/package t401;/r
                 =~ s/class App/class Stay/r;
$stay =~ s/(Pointer rsp = libc\.malloc\(n \+ )1\);/${1}8);/
    or die "App.java does not look as expected\n";
$stay =~ s/req\.transferTo\(0, rsp, 0, n\);/rsp.putString(0, "stay-1:", 7,
                java.nio.charset.StandardCharsets.US_ASCII);
            req.transferTo(0, rsp, 7, n);
            n += 7;/
    or die "App.java does not look as expected\n";
javac('t401/Stay.java', $stay);

my $config = <<'CONF';
location /ffi/ {
    ffi_admin;
    allow 127.0.0.1;
    deny all;
}

# 50 calls on each runtime object the worker got before any reload; says
# what the first call of each answered and how many answered the same
location = /echo {
    content_by_lua_block {
        for _, rt in ipairs({java_echo, java_stay}) do
            local first, same = nil, 0
            for i = 1, 50 do
                local ok, res = rt:call("hello")
                first = first or res
                if ok and res == first then
                    same = same + 1
                end
            end
            ngx.say(first, " x ", same)
        end
    }
}
CONF

my $init_worker = <<'LUA';
ngx.timer.at(0, function()
    java_echo = assert(ngx.load_ffi("ffi_java", "demo.echo.App?,init,"))
    java_stay = assert(ngx.load_ffi("ffi_java", "t401.Stay,init,"))
    local ok, res = java_echo:call("ready")
    ngx.log(ngx.NOTICE, "java loaded: ", res)
end)
LUA

# every answer, from whichever worker, is what the current code says
sub answers {
    my ($what, $echo, $stay) = @_;
    my @res = FFITest::concurrent(20, 'GET', '/echo');
    is_deeply([map { "$_->[0] $_->[1]" } @res],
              [("200 $echo x 50\n$stay x 50\n") x 20],
              "$what: 20 x 50 calls on each runtime answer $echo, $stay");
}

sub reload {
    my ($status, $body) = FFITest::http('POST', '/ffi/reload?lib=ffi_java');
    return ($status, decode_json($body));
}

ok(FFITest::start_nginx(
       workers => 2,
       main_config => "env LD_LIBRARY_PATH=$dir;",
       config => $config,
       init_worker_by_lua_block => $init_worker,
   ), 'nginx up');

ok(FFITest::wait_for_log('java loaded: ready', 20, 2),
   'both workers loaded ffi_java');

answers('as shipped', 'hello', 'stay-1:hello');

# ---- the edit: App now answers "v2:" and the request

my $v2 = $echo;
$v2 =~ s/(Pointer rsp = libc\.malloc\(n \+ )1\);/${1}4);/
    or die "App.java does not look as expected\n";
$v2 =~ s/req\.transferTo\(0, rsp, 0, n\);/rsp.putString(0, "v2:", 3,
                java.nio.charset.StandardCharsets.US_ASCII);
            req.transferTo(0, rsp, 3, n);
            n += 3;/
    or die "App.java does not look as expected\n";
javac('demo/echo/App.java', $v2);
javac('t401/Stay.java', $stay =~ s/stay-1/stay-2/r);

my ($status, $res) = reload();
is($status, 200, 'reload after the recompile answers 200');
is($res->{lib}, 'ffi_java', '... for ffi_java');
ok(!$res->{changed}, '... the loader itself unchanged');

answers('after the recompile', 'v2:hello', 'stay-1:hello');

# ---- a broken edit: init throws, the reload is refused, v2 serves on

my $broken = $v2 =~ s/(public static int init\(String cfg, long tq\) \{)/$1
        if (cfg.isEmpty()) {
            throw new IllegalStateException("v3 is broken");
        }/r;
javac('demo/echo/App.java', $broken);

($status, $res) = reload();
is($status, 422, 'reload of a class whose init throws answers 422');
like($res->{error}, qr/\S/, '... with the reason') or diag(explain($res));

ok(FFITest::wait_for_log(qr/IllegalStateException: v3 is broken/, 10, 1),
   'the exception is in error.log');

answers('after the broken edit', 'v2:hello', 'stay-1:hello');

# ---- fixed again: the shipped class serves

javac('demo/echo/App.java', $echo);

($status, $res) = reload();
is($status, 200, 'reload after the fix answers 200');

answers('after the fix', 'hello', 'stay-1:hello');

# ---- a rebuilt loader: the JVM cannot be unloaded, so it is refused

my $new = "$dir/tmp-libffi_java.so";
my $out = `cc -shared -fPIC -O2 -o '$new' '$repo/examples/java/ffi_java.c' \\
              -I'$repo/examples/java/build' \\
              -I'$jdk/include' -I'$jdk/include/linux' \\
              -L'$jdk/lib/server' -Wl,-rpath,'$jdk/lib/server' -ljvm \\
              -Wl,--build-id=0x0123456789abcdef0123 2>&1`;
is($?, 0, 'a second build of the loader with another build-id')
    or diag($out);
rename($new, "$dir/libffi_java.so") or die "rename: $!\n";

($status, $res) = reload();
is($status, 409, 'reload of a rebuilt loader answers 409');
Test::More::note("409: $res->{error}");

answers('after the refused reload', 'hello', 'stay-1:hello');

ok(FFITest::stop_nginx(), 'nginx stopped');
