# Reloading Python code: edit ffi/echo.py, POST /ffi/reload?lib=ffi_python3,
# and the edited code serves; a broken edit or a rebuilt loader is refused
# and the old code serves on.
use lib 't/lib';
use FFITest;
use File::Copy qw(copy);
use JSON::PP qw(decode_json);

my $repo = FFITest::repo();
my $root = FFITest::servroot();

# a copy of the loader with its modules beside it, which this test edits
my $dir = "$root/py";
mkdir $dir;
mkdir "$dir/ffi";
copy("$repo/examples/python/libffi_python3.so", "$dir/libffi_python3.so")
    or die "copy: $!\n";
copy("$repo/examples/python/ffi/echo.py", "$dir/ffi/echo.py")
    or die "copy: $!\n";

sub spew {
    my ($file, $text) = @_;
    open my $fh, '>', "$file.tmp" or die "$file.tmp: $!\n";
    print $fh $text;
    close $fh or die "$file.tmp: $!\n";
    rename("$file.tmp", $file) or die "rename $file: $!\n";
}

# imported without "?": a restart keeps the code it was first imported with
my $stay = <<'PY';
import resty_ffi

@resty_ffi.handler
def tag(req):
    return b"stay-1:" + req
PY
spew("$dir/ffi/stay.py", $stay);

my $config = <<'CONF';
location /ffi/ {
    ffi_admin;
    allow 127.0.0.1;
    deny all;
}

# 50 calls on each runtime object the worker got before any reload; says
# what the last call of each answered and how many answered the same
location = /echo {
    content_by_lua_block {
        for _, rt in ipairs({py_echo, py_stay}) do
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
    local opts = {is_global = true}
    py_echo = assert(ngx.load_ffi("ffi_python3", "ffi.echo?,init", opts))
    py_stay = assert(ngx.load_ffi("ffi_python3", "ffi.stay,tag", opts))
    local ok, res = py_echo:call("ready")
    ngx.log(ngx.NOTICE, "python loaded: ", res)
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
    my ($status, $body) = FFITest::http('POST', '/ffi/reload?lib=ffi_python3');
    return ($status, decode_json($body));
}

ok(FFITest::start_nginx(
       workers => 2,
       main_config => "env LD_LIBRARY_PATH=$dir;",
       config => $config,
       init_worker_by_lua_block => $init_worker,
   ), 'nginx up');

ok(FFITest::wait_for_log('python loaded: ready', 10, 2),
   'both workers loaded ffi_python3');

answers('as shipped', 'hello', 'stay-1:hello');

# ---- the edit: echo.py now answers "v2:" and the request

my $echo = do {
    open my $fh, '<', "$dir/ffi/echo.py" or die "echo.py: $!\n";
    local $/;
    <$fh>;
};
my $v2 = $echo;
my $prefix = 'req = ffi.new("char[]", b"v2:" + ffi.buffer(req, n)[:])';
$v2 =~ s/^(\s+)(n = length\[0\]\n)/$1$2$1$prefix\n$1n += 3\n/m
    or die "echo.py does not look as expected\n";
spew("$dir/ffi/echo.py", $v2);
spew("$dir/ffi/stay.py", $stay =~ s/stay-1/stay-2/r);

my ($status, $res) = reload();
is($status, 200, 'reload after the edit answers 200');
is($res->{lib}, 'ffi_python3', '... for ffi_python3');
ok(!$res->{changed}, '... the loader itself unchanged');

answers('after the edit', 'v2:hello', 'stay-1:hello');

# ---- a broken edit: libffi_init fails, the reload is refused, v2 serves on

spew("$dir/ffi/echo.py", "def init(cfg, tq)\n    return 0\n");

($status, $res) = reload();
is($status, 422, 'reload of a broken echo.py answers 422');
like($res->{error}, qr/\S/, '... with the reason') or diag(explain($res));

ok(FFITest::wait_for_log(qr/SyntaxError/, 10, 1),
   'the SyntaxError is in error.log');

answers('after the broken edit', 'v2:hello', 'stay-1:hello');

# ---- fixed again: the shipped code serves

spew("$dir/ffi/echo.py", $echo);

($status, $res) = reload();
is($status, 200, 'reload after the fix answers 200');

answers('after the fix', 'hello', 'stay-1:hello');

# ---- a rebuilt loader: libpython cannot be unloaded, so it is refused

my $src = "$repo/examples/python/ffi_python3.c";
my $new = "$dir/tmp-libffi_python3.so";
my $out = `cc -shared -fPIC -O2 -o '$new' '$src' \\
              \$(pkg-config --cflags --libs python3-embed) \\
              -Wl,--build-id=0x0123456789abcdef0123 2>&1`;
is($?, 0, 'a second build of the loader with another build-id')
    or diag($out);
rename($new, "$dir/libffi_python3.so") or die "rename: $!\n";

($status, $res) = reload();
is($status, 409, 'reload of a rebuilt loader answers 409');
Test::More::note("409: $res->{error}");

answers('after the refused reload', 'hello', 'stay-1:hello');

ok(FFITest::stop_nginx(), 'nginx stopped');
