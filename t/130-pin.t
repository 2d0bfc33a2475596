# pin/unpin as upstream: an unpinned image is dlclose()d once its last
# runtime drained, and mapped again by the next load; a pinned one stays.
use lib 't/lib';
use FFITest;
use Test::More;
use JSON::PP;
use File::Copy qw(copy);

my $repo = FFITest::repo();
my $dir = FFITest::servroot() . '/lib';
mkdir $dir, 0755;
copy("$repo/build/t/libver-v1.so", "$dir/libunpinned.so") or die;
copy("$repo/build/t/libver-v2.so", "$dir/libpinned.so") or die;

my $config = <<"CONF";
location /ffi/ { ffi_admin; }
location = /t {
    content_by_lua_block {
        local name = "$dir/lib" .. ngx.var.arg_lib .. ".so"
        local unpin = ngx.var.arg_lib == "unpinned"
        local rt = assert(ngx.load_ffi(name, nil, {unpin = unpin}))
        local ok, res = rt:call("version")
        if ngx.var.arg_unload then
            rt:__unload()
            local ok2, err = rt:call("version")
            ngx.say(res, " ", tostring(ok2), " ", err)
            return
        end
        ngx.say(res)
    }
}
CONF

sub worker_lib {
    my ($name) = @_;
    my (undef, $body) = FFITest::http('GET', '/ffi/status');
    my ($w) = @{ decode_json($body)->{workers} };
    my ($l) = grep { $_->{path} eq "$dir/lib$name.so" } @{ $w->{libraries} };
    return $l;
}

FFITest::start_nginx(config => $config,
                     http_config => 'ffi_close_grace 20ms;');

for my $lib (qw(unpinned pinned)) {
    my $v = $lib eq 'unpinned' ? 'v1' : 'v2';
    my (undef, $body) = FFITest::http('GET', "/t?lib=$lib&unload=1");
    is($body, "$v false runtime unloaded\n", "$lib: unloaded after a call");
}

ok(FFITest::wait_for_log(qr/closing "\Q$dir\E\/libunpinned\.so" version 1/,
                         5, 1), 'unpinned: image closed once drained');
my $l = worker_lib('unpinned');
is($l->{mapped_images}, 0, 'unpinned: nothing mapped');
is($l->{state}, 'closed', 'unpinned: state closed');

# the pinned runtime leaves its image after its own drain and grace: await
# that in status rather than assume it came with the unpinned one's
my $deadline = time + FFITest::deadline(10);
while (($l = worker_lib('pinned'))->{images}[0]{refcount} && time < $deadline) {
    select(undef, undef, undef, 0.02);
}
is($l->{mapped_images}, 1, 'pinned: still mapped');
is($l->{images}[0]{state}, 'serving', 'pinned: still the current image');
is($l->{images}[0]{refcount}, 0, 'pinned: no runtime on it');
is($l->{pinned}, JSON::PP::true, 'pinned: says so');

my (undef, $body) = FFITest::http('GET', '/t?lib=unpinned');
is($body, "v1\n", 'unpinned: load again maps it again and serves');
is(worker_lib('unpinned')->{mapped_images}, 1, 'unpinned: one image again');
(undef, $body) = FFITest::http('GET', '/t?lib=pinned');
is($body, "v2\n", 'pinned: load again serves from the same image');
is(worker_lib('pinned')->{mapped_images}, 1, 'pinned: still one image');

FFITest::stop_nginx();
unlike(FFITest::error_log(), qr/closing "[^"]*libpinned/,
       'the pinned image was never closed');
done_testing();
