# Reloading the Go echo runtime: with the file unchanged its runtimes
# restart on the same image; a rebuilt file is refused with 409.
use lib 't/lib';
use FFITest;
use File::Copy qw(copy);
use JSON::PP qw(decode_json);

my $repo = FFITest::repo();
my $root = FFITest::servroot();

# a copy of the library, which this test replaces with a rebuilt one
my $dir = "$root/go";
mkdir $dir;
copy("$repo/examples/go/libffi_go_echo.so", "$dir/libffi_go_echo.so")
    or die "copy: $!\n";

my $config = <<'CONF';
location /ffi/ {
    ffi_admin;
    allow 127.0.0.1;
    deny all;
}

# 100 calls on the runtime object each worker got before any reload
location = /echo {
    content_by_lua_block {
        local good = 0
        for i = 1, 100 do
            local req = "call " .. i .. string.rep("\0", i)
            local ok, res = go_echo:echo(req)
            if ok and res == req then
                good = good + 1
            end
        end
        ngx.say(good, " of 100 echoed")
    }
}
CONF

my $init_worker = <<'LUA';
ngx.timer.at(0, function()
    go_echo = assert(ngx.load_ffi("ffi_go_echo"))
    local ok, res = go_echo:echo("ready")
    ngx.log(ngx.NOTICE, "go echo loaded: ", res)
end)
LUA

ok(FFITest::start_nginx(
       workers => 2,
       main_config => "env LD_LIBRARY_PATH=$dir;",
       config => $config,
       init_worker_by_lua_block => $init_worker,
   ), 'nginx up');

ok(FFITest::wait_for_log('go echo loaded: ready', 10, 2),
   'both workers loaded ffi_go_echo');

sub echo_everywhere {
    my ($what) = @_;
    my @res = FFITest::concurrent(20, 'GET', '/echo');
    is_deeply([map { "$_->[0] $_->[1]" } @res],
              [("200 100 of 100 echoed\n") x 20],
              "$what: 20 x 100 calls echoed");
}

sub worker_libraries {
    my ($status, $body) = FFITest::http('GET', '/ffi/status');
    is($status, 200, 'GET /ffi/status');
    return map { @{ $_->{libraries} } } @{ decode_json($body)->{workers} };
}

echo_everywhere('before any reload');

# ---- unchanged file: a runtime restart on the same image

my ($status, $body) = FFITest::http('POST', '/ffi/reload?lib=ffi_go_echo');
is($status, 200, 'reload of the unchanged file answers 200');
my $res = decode_json($body);
is($res->{lib}, 'ffi_go_echo', '... for ffi_go_echo');
is($res->{version}, 2, '... now version 2');
ok(!$res->{changed}, '... file unchanged');

my @libs = worker_libraries();
is(scalar @libs, 2, 'both workers have ffi_go_echo');
for my $lib (@libs) {
    is($lib->{version}, 2, 'the worker serves version 2');
    ok($lib->{pinned}, 'the Go image is pinned');
    is(scalar @{ $lib->{images} }, 1, 'on the one image it had');
    is_deeply([map { $_->{version} } grep { $_->{state} eq 'serving' }
               @{ $lib->{runtimes} }], [2],
              'its serving runtime is the restarted one');
}

echo_everywhere('after the restart');

# ---- a rebuilt file (another build-id): refused, the old one serves on

my $new = "$dir/tmp-libffi_go_echo.so";
my $build = "cd '$repo/examples/go' && GOPROXY=off GOFLAGS=-mod=mod "
          . "GOCACHE='$repo/examples/go/.gocache' "
          . "GOPATH='$repo/examples/go/.gopath' CGO_ENABLED=1 "
          . "go build -buildmode=c-shared -trimpath "
          . "-ldflags=-B=0x0123456789abcdef0123 -o '$new' . 2>&1";
my $out = `$build`;
is($?, 0, 'a second Go build with another build-id') or diag($out);
rename($new, "$dir/libffi_go_echo.so") or die "rename: $!\n";

($status, $body) = FFITest::http('POST', '/ffi/reload?lib=ffi_go_echo');
is($status, 409, 'reload of the rebuilt file answers 409');
like(decode_json($body)->{error}, qr/\S/, '... with the reason')
    or diag($body);
Test::More::note("409: $body");

for my $lib (worker_libraries()) {
    is($lib->{version}, 2, 'the worker still serves version 2');
}

echo_everywhere('after the refused reload');

ok(FFITest::stop_nginx(), 'nginx stopped');
