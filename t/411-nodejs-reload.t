# Reloading Node.js code: edit demo/echo.js, POST /ffi/reload?lib=ffi_nodejs,
# and the edited module serves ("?": dropped from the require cache first);
# a module loaded without "?" keeps its first version; a broken module and a
# rebuilt loader are refused and the old code serves on.
use lib 't/lib';
use FFITest;
use File::Copy qw(copy);
use JSON::PP qw(decode_json);

my $repo = FFITest::repo();
my $root = FFITest::servroot();
my $src = "$repo/examples/nodejs";

# a copy of the loader with its modules beside it, which this test edits
my $dir = "$root/nodejs";
mkdir $dir;
mkdir "$dir/demo";
mkdir "$dir/t411";
for my $file ('libffi_nodejs.so', 'resty_ffi.node') {
    copy("$src/$file", "$dir/$file") or die "copy $file: $!\n";
}

sub slurp {
    my ($file) = @_;
    open my $fh, '<', $file or die "$file: $!\n";
    local $/;
    return scalar <$fh>;
}

sub spew {
    my ($file, $text) = @_;
    open my $fh, '>', "$file.tmp" or die "$file.tmp: $!\n";
    print $fh $text;
    close $fh or die "$file.tmp: $!\n";
    rename("$file.tmp", $file) or die "rename $file: $!\n";
}

my $echo = slurp("$src/demo/echo.js");
spew("$dir/demo/echo.js", $echo);

# prefixes the answers of demo/echo.js with $tag
sub tagged {
    my ($tag) = @_;
    my $js = $echo;
    $js =~ s/ffi\.respond\(task, 0, ffi\.get_req_buffer\(task\)\);/
             ffi.respond(task, 0, Buffer.concat([Buffer.from('$tag'),
                                                 ffi.get_req_buffer(task)]));/
        or die "demo/echo.js does not look as expected\n";
    return $js;
}

# loaded without "?": a restart keeps the module it was first loaded with
spew("$dir/t411/stay.js", tagged('stay-1:'));

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
        for _, rt in ipairs({node_echo, node_stay}) do
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
    node_echo = assert(ngx.load_ffi("ffi_nodejs", "demo/echo?,init", opts))
    node_stay = assert(ngx.load_ffi("ffi_nodejs", "t411/stay,init", opts))
    local ok, res = node_echo:call("ready")
    ngx.log(ngx.NOTICE, "node loaded: ", res)
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
    my ($status, $body) = FFITest::http('POST',
                                        '/ffi/reload?lib=ffi_nodejs');
    return ($status, decode_json($body));
}

ok(FFITest::start_nginx(
       workers => 2,
       main_config => "env LD_LIBRARY_PATH=$dir;",
       config => $config,
       init_worker_by_lua_block => $init_worker,
   ), 'nginx up');

ok(FFITest::wait_for_log('node loaded: ready', 20, 2),
   'both workers loaded ffi_nodejs');

answers('as shipped', 'hello', 'stay-1:hello');

# ---- the edit: echo.js now answers "v2:" and the request

spew("$dir/demo/echo.js", tagged('v2:'));
spew("$dir/t411/stay.js", tagged('stay-2:'));

my ($status, $res) = reload();
is($status, 200, 'reload after the edit answers 200');
is($res->{lib}, 'ffi_nodejs', '... for ffi_nodejs');
ok(!$res->{changed}, '... the loader itself unchanged');

answers('after the edit', 'v2:hello', 'stay-1:hello');

# ---- a broken edit: require() throws, the reload is refused, v2 serves on

spew("$dir/demo/echo.js", "exports.init = (cfg, tq => 0;\n");

($status, $res) = reload();
is($status, 422, 'reload of a broken echo.js answers 422');
like($res->{error}, qr/\S/, '... with the reason') or diag(explain($res));

ok(FFITest::wait_for_log(qr/SyntaxError/, 10, 1),
   'the SyntaxError is in error.log');

answers('after the broken edit', 'v2:hello', 'stay-1:hello');

# ---- fixed again: the shipped module serves

spew("$dir/demo/echo.js", $echo);

($status, $res) = reload();
is($status, 200, 'reload after the fix answers 200');

answers('after the fix', 'hello', 'stay-1:hello');

# ---- a rebuilt loader: libnode cannot be unloaded, so it is refused

my $lib = "$src/libnode/usr/lib/" . `gcc -print-multiarch`;
chomp $lib;
my $new = "$dir/tmp-libffi_nodejs.so";
my $out = `c++ -std=c++17 -shared -fPIC -O0 -o '$new' '$src/ffi_nodejs.cc' \\
               -isystem '$src/libnode/usr/include/node' \\
               -L'$lib' -Wl,-rpath,'$lib' -lnode -luv \\
               -Wl,--build-id=0x0123456789abcdef0123 2>&1`;
is($?, 0, 'a second build of the loader with another build-id')
    or diag($out);
rename($new, "$dir/libffi_nodejs.so") or die "rename: $!\n";

($status, $res) = reload();
is($status, 409, 'reload of a rebuilt loader answers 409');
Test::More::note("409: $res->{error}");

answers('after the refused reload', 'hello', 'stay-1:hello');

ok(FFITest::stop_nginx(), 'nginx stopped');
