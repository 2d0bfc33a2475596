# A JVM and Node.js in the same worker, through many reloads of nginx (HUP)
# with calls running: every old worker, which ran both, exits with code 0,
# never on a signal. The JVM takes SIGSEGV for its own use (implicit null
# checks, safepoint polls) and Node could too (V8's WebAssembly trap
# handler, which does not chain): whichever holds SIGSEGV last must not
# leave the other's faults to the default action (hot-reload.md, fault
# signals). Both load orders: a library's exit handlers run in reverse.
use lib 't/lib';
use FFITest;

my $repo = FFITest::repo();

# enough reloads that 1 crash in 10 exits (the rate before the fix) shows
my $hups = $ENV{FFI_T421_HUPS} || 20;

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

# both run in every worker before the next HUP can end it, loaded in
# init_worker in either order: the JVM first in worker 0, Node first in
# worker 1 (what a library registers at exit runs in reverse order)
my $init_worker = <<'LUA';
ngx.timer.at(0, function()
    local java, node
    for _, which in ipairs(ngx.worker.id() == 0 and {"java", "node"}
                           or {"node", "java"})
    do
        if which == "java" then
            java = assert(ngx.load_ffi("ffi_java", "demo.echo.App?,init,"))
        else
            node = assert(ngx.load_ffi("ffi_nodejs", "demo/echo?,init",
                                       {is_global = true}))
        end
    end
    local _, j = java:call("up")
    local _, n = node:call("up")
    ngx.log(ngx.NOTICE, "loaders ", j, " ", n, " in ", ngx.worker.pid())
end)
LUA

ok(FFITest::start_nginx(
       workers => 2,
       main_config => "env LD_LIBRARY_PATH=$repo/examples/java:"
                    . "$repo/examples/nodejs;",
       config => $config,
       init_worker_by_lua_block => $init_worker,
   ), 'nginx up');

ok(FFITest::wait_for_log('loaders up up in', 60, 2),
   'both workers run a JVM and Node.js');

# every old worker's end, as the master logged it: "code 0" or "signal N"
my (@exits, @wrong);
my $up = 2;

for my $round (1 .. $hups) {
    my @workers = FFITest::worker_pids();

    # calls still running in the old workers while the HUP ends them
    my $n = 10;
    my $conns = FFITest::begin_requests($n, 'GET', sub { "/echo?i=$_[0]" });
    FFITest::signal('HUP');
    my @got = map { "$_->[0] $_->[1]" } FFITest::finish_requests($conns, 60);
    my @want = map { "200 java $_, node $_\n" } 0 .. $n - 1;
    push @wrong, "round $round: @got" unless "@got" eq "@want";

    for my $pid (@workers) {
        FFITest::wait_exit($pid, 30);
        FFITest::wait_for_log(
            qr/worker process $pid exited (?:with code|on signal) \d+/, 10);
        my ($how) = FFITest::error_log()
            =~ /worker process $pid exited ((?:with code|on signal) \d+)/;
        push @exits, defined $how ? $how : 'still running';
    }

    $up += 2;
    last unless FFITest::wait_for_log('loaders up up in', 60, $up);
    last if grep { $_ ne 'with code 0' } @exits;
}

is(scalar @exits, 2 * $hups, "$hups reloads, each ended 2 workers");
is_deeply([grep { $_ ne 'with code 0' } @exits], [],
          'every old worker exited with code 0, none on a signal');
is_deeply(\@wrong, [], 'the JVM and Node.js answered between the reloads');

ok(FFITest::stop_nginx(), 'nginx stopped');
