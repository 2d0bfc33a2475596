# A request read in place is a string of the worker's Lua VM, and nginx
# closes that VM when the worker leaves (the cycle's pool). A runtime that
# never answers is abandoned at exit, but its thread still runs until the
# process ends: still reading such a request, it must not find it freed
# (unmapped: 1 MB is LuaJIT's own mmap) and crash the worker on its way out.
use lib 't/lib';
use FFITest;
use Test::More;

my $config = <<'CONF';
location = /read {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("ffi_hold"))
        local ok, err = rt:call("read" .. string.rep("r", 1048576), 0.1)
        collectgarbage("collect")
        ngx.say(tostring(ok), " ", tostring(err))
    }
}
CONF

for my $how ('quit', 'reload') {
    FFITest::start_nginx(workers => 1, config => $config,
                         http_config => "ffi_exit_timeout 200ms;");
    my ($status, $body) = FFITest::http('GET', '/read');
    is($body, "false timeout\n", "$how: the runtime reads, never answers");

    if ($how eq 'reload') {
        my ($old) = FFITest::worker_pids();
        FFITest::signal('HUP');
        ok(FFITest::wait_for_log(qr/abandon/, 20), "$how: runtime abandoned");
        ok(FFITest::wait_for_log(qr/worker process $old exited/, 20),
           "$how: the old worker left");
    }

    FFITest::stop_nginx();
    unlike(FFITest::error_log(), qr/exited on signal/,
           "$how: the worker left without a crash");
}

done_testing();
