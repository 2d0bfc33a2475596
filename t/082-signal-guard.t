# A library that puts handlers of its own on nginx's signals (the JVM does,
# without -Xrs; here a C runtime: SIGUSR1 in a constructor, SIGQUIT and
# SIGTERM in libffi_init) does not take them from nginx: the worker still
# reopens its logs on USR1 and shuts down gracefully on QUIT, and says
# which handler it put back.
use lib 't/lib';
use FFITest;
use Test::More;

my $config = <<'CONF';
location = /t {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("ffi_grab_signals"))
        local ok, res = rt:call("x")
        ngx.say(tostring(ok), " ", tostring(res), " ", ngx.worker.pid())
    }
}
CONF

FFITest::start_nginx(workers => 1, config => $config);
my ($status, $body) = FFITest::http('GET', '/t');
my ($w) = $body =~ /^true grabbed (\d+)\n\z/;
ok($w, 'the library loaded and answers');

for my $sig (qw(USR1 QUIT TERM)) {
    my $n = eval "POSIX::SIG$sig()";
    ok(FFITest::wait_for_log(qr/replaced nginx's handler of signal $n\b/, 10),
       "SIG$sig: the library's handler replaced, and nginx's put back");
}

kill 'USR1', $w;
ok(FFITest::wait_for_log(qr/\] $w#$w: reopening logs/, 10),
   'USR1 to the worker: nginx reopens its logs');

kill 'QUIT', $w;
ok(FFITest::wait_for_log(qr/\] $w#$w: gracefully shutting down/, 10),
   'QUIT to the worker: nginx shuts it down gracefully');
ok(FFITest::wait_exit($w, 20), 'the worker exited');

FFITest::stop_nginx();
done_testing();
