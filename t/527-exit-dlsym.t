# A runtime that found the ABI with dlsym() on the program's handle (as cffi
# and upstream's Python loader do) and whose threads keep calling task_poll
# after the NULL task: nginx dlclose()s its modules at worker exit, and no
# code of ours may be unmapped under those threads. Ten reloads, then quit:
# every worker exits with code 0, none on a signal.
use lib 't/lib';
use lib 't/lib/misbehave';
use FFITest;
use MBTest qw(mb_lib workers wait_until);
use Test::More;

my $lib = mb_lib('libmb_dlsym.so');

my $config = <<"CONF";
location = /echo {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("$lib"))
        local ok, res = rt:call("echo:" .. ngx.var.arg_v)
        ngx.say(tostring(ok), " ", tostring(res))
    }
}
CONF

my $init_worker = <<"LUA";
assert(ngx.load_ffi("$lib"))
LUA

FFITest::start_nginx(workers => 2, config => $config,
                     init_worker_by_lua_block => $init_worker,
                     http_config => "ffi_exit_timeout 5s;");

my @old = workers(2);
is(scalar @old, 2, 'two workers');

for my $round (1 .. 10) {
    my @res = FFITest::concurrent(10, 'GET', sub { "/echo?v=$round-$_[0]" });
    my @wrong = grep { ($res[$_][1] // '') ne "true $round-$_\n" } 0 .. $#res;
    is(scalar @wrong, 0, "round $round: the runtimes answer");

    FFITest::signal('HUP');
    my $gone = wait_until(sub { !grep { kill 0, $_ } @old }, 20);
    ok($gone, "round $round: the old workers exited");
    @old = workers(2);
}

my $log = FFITest::error_log();
unlike($log, qr/exited on signal/, 'no worker died on a signal');
my $exits = () = $log =~ /worker process \d+ exited with code 0/g;
is($exits, 20, '20 old workers exited with code 0');

FFITest::stop_nginx('dlsym runtime at exit');
done_testing();
