# Rollback of the Go echo runtime, with 2 workers: the Go runtime cannot be
# unloaded, so a rollback is a runtime restart on the image that is mapped,
# even after a rebuilt file on disk was refused with 409.
use lib 't/lib';
use FFITest;
use File::Copy qw(copy);
use JSON::PP qw(decode_json);
use Test::More;

my $repo = FFITest::repo();
my $root = FFITest::servroot();

my $dir = "$root/go";
mkdir $dir;
copy("$repo/examples/go/libffi_go_echo.so", "$dir/libffi_go_echo.so")
    or die "copy: $!\n";

my $config = <<'CONF';
location /ffi/ { ffi_admin; allow 127.0.0.1; deny all; }
location = /echo {
    content_by_lua_block {
        local good = 0
        for i = 1, 100 do
            local req = "call " .. i
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

ok(FFITest::start_nginx(workers => 2,
                        main_config => "env LD_LIBRARY_PATH=$dir;",
                        config => $config,
                        init_worker_by_lua_block => $init_worker),
   'nginx up');
ok(FFITest::wait_for_log('go echo loaded: ready', 10, 2),
   'both workers loaded ffi_go_echo');

sub echo_everywhere {
    my ($what) = @_;
    my @res = FFITest::concurrent(20, 'GET', '/echo');
    is_deeply([map { "$_->[0] $_->[1]" } @res],
              [("200 100 of 100 echoed\n") x 20],
              "$what: 20 x 100 calls echoed");
}

sub post {
    my ($path) = @_;
    my ($status, $body) = FFITest::http('POST', $path);
    return ($status, eval { decode_json($body) } || {}, $body);
}

sub worker_versions {
    my ($status, $body) = FFITest::http('GET', '/ffi/status');
    return [map { map { $_->{version} } @{ $_->{libraries} } }
            @{ decode_json($body)->{workers} }];
}

# version 2: a runtime restart by reload
my ($status, $json) = post('/ffi/reload?lib=ffi_go_echo');
is($status, 200, 'reload, file unchanged: 200 (version 2)');

# a rebuilt file on disk: its reload is 409
my $new = "$dir/tmp-libffi_go_echo.so";
my $build = "cd '$repo/examples/go' && GOPROXY=off GOFLAGS=-mod=mod "
          . "GOCACHE='$repo/examples/go/.gocache' "
          . "GOPATH='$repo/examples/go/.gopath' CGO_ENABLED=1 "
          . "go build -buildmode=c-shared -trimpath "
          . "-ldflags=-B=0x0123456789abcdef0123 -o '$new' . 2>&1";
my $out = `$build`;
is($?, 0, 'a second Go build with another build-id') or diag($out);
rename($new, "$dir/libffi_go_echo.so") or die "rename: $!\n";
($status, $json) = post('/ffi/reload?lib=ffi_go_echo');
is($status, 409, 'reload of the rebuilt file: 409');

# rollback: the image that is mapped, whatever is on disk
($status, $json, my $body) = post('/ffi/rollback?lib=ffi_go_echo');
is($status, 200, 'rollback: 200') or diag($body);
is($json->{version}, 3, 'rollback: version 3');
is($json->{rolled_back_to}, 1, 'rollback: the bytes of version 1');
ok(!$json->{changed}, 'rollback: same image, runtimes restarted');
is_deeply(worker_versions(), [3, 3], 'both workers serve version 3');
echo_everywhere('after the rollback');

($status, $json) = post('/ffi/rollback?lib=ffi_go_echo&version=2');
is($status, 200, 'rollback to version 2: 200');
is($json->{version}, 4, 'version 4');
echo_everywhere('after the second rollback');

# the history: the 409 is a refusal, three restarts on one image
($status, $body) = FFITest::http('GET', '/ffi/status');
my ($sl) = grep { $_->{name} eq 'ffi_go_echo' }
           @{ decode_json($body)->{libraries} };
my @h = @{ $sl->{history} };
is_deeply([map { $_->{outcome} } @h], [qw(ok ok refused ok ok)],
          'history: load, restart, the 409, two rollbacks');
is($h[2]{status}, 409, 'the refusal was a 409');
is(scalar(keys %{{ map { $_->{sha256} => 1 }
                   grep { $_->{outcome} eq 'ok' } @h }}), 1,
   'every version of a Go library is the one image');

ok(FFITest::stop_nginx(), 'nginx stopped');
done_testing();
