# A library that stays mapped after dlclose() (NODELETE, as a Rust cdylib
# or a C++ library with a unique symbol) loaded with unpin = true, used as
# upstream's examples do: load, call, rt:__unload(), and again on the next
# request. The worker maps the very file it already holds again (its
# kept descriptor, the name glibc knows it by) instead of refusing it,
# and the cycles cost no descriptor each.
use lib 't/lib';
use lib 't/lib/misbehave';
use FFITest;
use MBTest qw(release install);
use Test::More;

my $root = FFITest::servroot();
my $dir = "$root/lib";
mkdir $dir, 0755;
my $lib = "$dir/libsticky.so";
install(release('nodelete'), $lib);

my $config = <<"CONF";
location = /cycle {
    content_by_lua_block {
        local rt, err = ngx.load_ffi("$lib", nil, {unpin = true})
        if not rt then
            ngx.say("load: ", err)
            return
        end
        local ok, res = rt:call("version")
        rt:__unload()
        local ok2 = rt:call("version")
        ngx.say(tostring(ok), " ", tostring(res), " ", tostring(ok2))
    }
}
CONF

FFITest::start_nginx(workers => 1, config => $config,
                     http_config => "ffi_close_grace 10ms;");

my ($pid) = FFITest::worker_pids();
my $fds;
for my $i (1 .. 6) {
    my ($s, $body) = FFITest::http('GET', '/cycle');
    is($body, "true nodelete false\n", "cycle $i: loaded, called, unloaded")
        or diag(FFITest::error_log());
    ok(FFITest::wait_for_log(qr/stays mapped after dlclose/, 10, $i),
       "cycle $i: the image closed, still mapped");
    my $n = () = glob("/proc/$pid/fd/*");
    $fds //= $n if $i == 2;
    is($n, $fds, "cycle $i: as many descriptors as after cycle 2")
        if $i > 2;
}
unlike(FFITest::error_log(), qr/already names a mapped library/,
       'never refused');

FFITest::stop_nginx();
done_testing();
