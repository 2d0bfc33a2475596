# Hot reload of the Rust echo runtime's image (unpin = true): a rebuilt file
# is mapped and serves, and the old image is unmapped once it drained.
use lib 't/lib';
use FFITest;
use File::Copy qw(copy);
use JSON::PP qw(decode_json);

my $repo = FFITest::repo();
my $root = FFITest::servroot();

# a copy of the library, which this test replaces with a rebuilt one
my $dir = "$root/rust";
mkdir $dir;
copy("$repo/examples/rust/libffi_rust_echo.so", "$dir/libffi_rust_echo.so")
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
            local ok, res = rust_echo:echo(req)
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
    rust_echo = assert(ngx.load_ffi("ffi_rust_echo", nil, {unpin = true}))
    local ok, res = rust_echo:echo("ready")
    ngx.log(ngx.NOTICE, "rust echo loaded: ", res)
end)
LUA

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

# the files of the library's images that a worker has mapped (a shadow
# copy may be unlinked while mapped: maps then says " (deleted)")
sub mapped {
    my ($pid) = @_;
    open my $fh, '<', "/proc/$pid/maps" or return ();
    my %files = map {
        m{(/\S*libffi_rust_echo\.so\S*)(?: \(deleted\))?$} ? ($1 => 1) : ()
    } <$fh>;
    return sort keys %files;
}

ok(FFITest::start_nginx(
       workers => 2,
       main_config => "env LD_LIBRARY_PATH=$dir;",
       config => $config,
       init_worker_by_lua_block => $init_worker,
   ), 'nginx up');

ok(FFITest::wait_for_log('rust echo loaded: ready', 10, 2),
   'both workers loaded ffi_rust_echo');

echo_everywhere('before the reload');

my @workers = FFITest::worker_pids();
my %old = map { $_ => [mapped($_)] } @workers;
is(scalar @{ $old{$_} }, 1, "worker $_ maps one image")
    or diag(join "\n", @{ $old{$_} }) for @workers;

# ---- rebuild with another build-id, drop it in by rename, reload

my $build_id = '0123456789abcdef0123456789abcdef01234567';
my $target = "$root/rust-target";
# from examples/rust, whose .cargo/config.toml keeps the build offline
my $out = `cd '$repo/examples/rust' \\
           && RUSTFLAGS='-C link-arg=-Wl,--build-id=0x$build_id' \\
              cargo build --release --offline --quiet \\
                  --target-dir '$target' 2>&1`;
is($?, 0, 'a second Rust build with another build-id') or diag($out);
copy("$target/release/libffi_rust_echo.so", "$dir/tmp-libffi_rust_echo.so")
    or die "copy: $!\n";
rename("$dir/tmp-libffi_rust_echo.so", "$dir/libffi_rust_echo.so")
    or die "rename: $!\n";

my ($status, $body) = FFITest::http('POST', '/ffi/reload?lib=ffi_rust_echo');
is($status, 200, 'reload of the rebuilt file answers 200');
my $res = decode_json($body);
is($res->{lib}, 'ffi_rust_echo', '... for ffi_rust_echo');
is($res->{version}, 2, '... now version 2');
is($res->{build_id}, $build_id, '... with the new build-id');
ok($res->{changed}, '... file changed');

echo_everywhere('after the reload');

# every old image drains, then is dlclose()d: unmapped from its worker
my $closing = qr/ffi: closing "\Q$dir\E\/libffi_rust_echo\.so" version 1/;
ok(FFITest::wait_for_log($closing, 20, 2), 'both workers closed version 1');

for my $pid (@workers) {
    my @now = mapped($pid);
    is(scalar @now, 1, "worker $pid maps one image");
    isnt($now[0], $old{$pid}[0], "worker $pid: the old image is unmapped");
}

for my $lib (worker_libraries()) {
    is($lib->{version}, 2, 'the worker serves version 2');
    is($lib->{build_id}, $build_id, '... the new build');
    ok(!$lib->{pinned}, '... from an unpinned image');
}

echo_everywhere('after the old image is gone');

ok(FFITest::stop_nginx(), 'nginx stopped');
