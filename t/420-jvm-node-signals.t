# A JVM and Node.js in the same nginx worker: both serve, and nginx's signals
# stay nginx's: USR1 reopens the logs; QUIT, HUP and TERM end workers as
# nginx means them to. No handler of the JVM's or Node's replaces nginx's.
use lib 't/lib';
use FFITest;

my $repo = FFITest::repo();

my $config = <<'CONF';
location = /echo {
    content_by_lua_block {
        local java = assert(ngx.load_ffi("ffi_java", "demo.echo.App?,init,"))
        local node = assert(ngx.load_ffi("ffi_nodejs", "demo/echo?,init",
                                         {is_global = true}))
        local _, j = java:call("java " .. ngx.var.arg_i)
        local _, n = node:call("node " .. ngx.var.arg_i)
        ngx.say(j, ", ", n)
    }
}
CONF

my $init_worker = <<'LUA';
ngx.timer.at(0, function()
    local java = assert(ngx.load_ffi("ffi_java", "demo.echo.App?,init,"))
    local node = assert(ngx.load_ffi("ffi_nodejs", "demo/echo?,init",
                                     {is_global = true}))
    local _, j = java:call("up")
    local _, n = node:call("up")
    ngx.log(ngx.NOTICE, "loaders ", j, " ", n, " in ", ngx.worker.pid())
end)
LUA

# n requests, all answered by both runtimes
sub both_answer {
    my ($what, $n) = @_;
    my @res = FFITest::concurrent($n, 'GET', sub { "/echo?i=$_[0]" });
    is_deeply([map { "$_->[0] $_->[1]" } @res],
              [map { "200 java $_, node $_\n" } 0 .. $n - 1],
              "$what: $n requests answered by the JVM and Node.js");
}

ok(FFITest::start_nginx(
       workers => 2,
       main_config => "env LD_LIBRARY_PATH=$repo/examples/java:"
                    . "$repo/examples/nodejs;",
       config => $config,
       init_worker_by_lua_block => $init_worker,
   ), 'nginx up');

ok(FFITest::wait_for_log('loaders up up in', 60, 2),
   'both workers run a JVM and Node.js');

both_answer('started', 40);

# ---- USR1 straight to each worker: nginx's handler must still be there and
# the worker's own thread wake up to reopen the logs (Node's default signal
# handling would have reset the handler, its inspector taken USR1)

my @workers = FFITest::worker_pids();
is(scalar @workers, 2, 'two workers');
FFITest::signal('USR1', $_) for @workers;

ok(FFITest::wait_for_log(qr/\d+#\d+: reopening logs/, 5, 2),
   'both workers reopened their logs');

# ---- QUIT straight to one worker: it shuts down gracefully (the JVM would
# print a thread dump instead without -Xrs); the master starts another

FFITest::signal('QUIT', $workers[0]);
ok(FFITest::wait_exit($workers[0], 10), 'the QUIT worker exited');
ok(FFITest::wait_for_log(qr/worker process $workers[0] exited with code 0/,
                         10, 1),
   '... with code 0');
ok(FFITest::wait_for_log('loaders up up in', 60, 3),
   'its replacement runs a JVM and Node.js');

both_answer('after QUIT', 40);

# ---- HUP to the master: new workers, the old ones exit gracefully

@workers = FFITest::worker_pids();
FFITest::signal('HUP');
for my $pid (@workers) {
    ok(FFITest::wait_exit($pid, 10), "old worker $pid exited");
    ok(FFITest::wait_for_log(qr/worker process $pid exited with code 0/,
                             10, 1),
       '... with code 0');
}
ok(FFITest::wait_for_log('loaders up up in', 60, 5),
   'the new workers run a JVM and Node.js');

both_answer('after HUP', 40);

# ---- TERM straight to one worker: nginx's fast shutdown, code 0 (Node's
# default signal handling would have made TERM kill it)

@workers = FFITest::worker_pids();
FFITest::signal('TERM', $workers[0]);
ok(FFITest::wait_exit($workers[0], 10), 'the TERM worker exited');
ok(FFITest::wait_for_log(qr/worker process $workers[0] exited with code 0/,
                         10, 1),
   '... with code 0');
ok(FFITest::wait_for_log('loaders up up in', 60, 6),
   'its replacement runs a JVM and Node.js');

both_answer('after TERM', 40);

ok(FFITest::stop_nginx(), 'nginx stopped');
