# The harness's procedural API (t/lib/FFITest.pm): several requests against
# one nginx, concurrency, signals, process bookkeeping; plain nginx + Lua.
use lib 't/lib';
use FFITest;
use IO::Socket::INET;
use Time::HiRes ();

my $config = <<'CONF';
client_body_buffer_size 2m;
client_max_body_size 2m;

location = /pid {
    content_by_lua_block { ngx.say(ngx.worker.pid()) }
}

location = /slow {
    content_by_lua_block { ngx.sleep(0.2) ngx.say("slow ", ngx.var.arg_i) }
}

location = /echo {
    content_by_lua_block {
        ngx.req.read_body()
        ngx.print(ngx.var.http_x_tag, ":", ngx.req.get_body_data() or "")
    }
}
CONF

ok(FFITest::start_nginx(workers => 2, config => $config), 'nginx up');

my ($status, $body) = FFITest::http('GET', '/pid');
is($status, 200, 'GET /pid answered');
# the master may still be forking the second worker when the first answers
my @workers;
for my $try (1 .. 500) {
    @workers = FFITest::worker_pids();
    last if @workers == 2;
    Time::HiRes::sleep(0.02);
}
is(scalar @workers, 2, 'two workers');
ok((grep { "$_\n" eq $body } @workers), 'a worker answered');

# 1 MB of every byte value through a POST and back
my $big = join '', map { chr($_ % 256) } 0 .. (1 << 20) - 1;
($status, $body) = FFITest::http('POST', '/echo', $big, { 'X-Tag' => 'b' });
is($status, 200, 'POST 1 MB answered');
ok($body eq "b:$big", '1 MB body came back unchanged');

my @res = FFITest::concurrent(50, 'GET', sub { "/slow?i=$_[0]" });
is(scalar(grep { defined $_->[0] && $_->[0] == 200 } @res), 50,
   '50 concurrent requests answered 200');
is_deeply([map { $_->[1] } @res], [map { "slow $_\n" } 0 .. 49],
          'each got its own answer, in order');

# HUP: new workers start, the old ones exit
FFITest::signal('HUP');
ok(FFITest::wait_for_log(qr/start worker process/, 10, 4),
   'HUP started two new workers');
ok(FFITest::wait_exit($_, 10), "old worker $_ exited") for @workers;
my @new = FFITest::worker_pids();
is(scalar @new, 2, 'two workers after HUP');
($status) = FFITest::http('GET', '/pid');
is($status, 200, 'served after HUP');

# a KILLed master leaves its workers; stop_nginx must clean them up
my $master = FFITest::master_pid();
FFITest::signal('KILL');
ok(FFITest::wait_exit($master, 5), 'master killed');
FFITest::stop_nginx('after KILL');
ok(!(grep { FFITest::wait_exit($_, 0) == 0 } @new), 'orphans cleaned');

# ...so that the next start gets the port
ok(FFITest::start_nginx(config => $config), 'nginx up again');
($status, $body) = FFITest::http('POST', '/echo', "x", [ 'X-Tag', 'a' ]);
is($body, 'a:x', 'served after restart');

# a client that closes early; the server still finishes
my $conns = FFITest::begin_requests(3, 'GET', '/slow?i=1');
FFITest::close_requests($conns);

FFITest::signal('QUIT');
ok(FFITest::wait_exit(FFITest::master_pid(), 10), 'QUIT stops nginx');
FFITest::stop_nginx('after QUIT');

# another program takes our port between two starts (test runs share the
# machine): the next start chooses another one, unless FFI_TEST_PORT
# fixed it
SKIP: {
    skip 'FFI_TEST_PORT fixes the port', 3 if $ENV{FFI_TEST_PORT};
    my $taken = FFITest::port();
    my $squatter = IO::Socket::INET->new(
        LocalAddr => '127.0.0.1', LocalPort => $taken, Proto => 'tcp',
        Listen => 1, ReuseAddr => 1,
    ) or die "cannot listen on $taken: $!\n";
    ok(FFITest::start_nginx(config => $config), 'nginx up, its port taken');
    isnt(FFITest::port(), $taken, 'on another port');
    ($status, $body) = FFITest::http('POST', '/echo', "y", [ 'X-Tag', 'p' ]);
    is($body, 'p:y', 'served there');
    FFITest::stop_nginx('another port');
    close $squatter;
}

# the module's shadow copies go to the server root, not to a folder that
# other runs and the Debian package share
SKIP: {
    skip 'plain nginx (FFI_MODULE=none)', 2
        if ($ENV{FFI_MODULE} // '') eq 'none';
    # (the KILLed master above left its own behind)
    my $shadows = sub {
        opendir my $dh, FFITest::servroot() or die;
        my @s = grep { /^nginx-ffi\./ } readdir $dh;
        closedir $dh;
        return scalar @s;
    };
    my $before = $shadows->();
    ok(FFITest::start_nginx(config => $config), 'nginx up again');
    is($shadows->(), $before + 1, 'its shadow folder is in the server root');
    FFITest::stop_nginx('shadow folder');
}
