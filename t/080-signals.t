# nginx -s reload (HUP) and -s quit (QUIT) while runtimes are alive and
# calls are in flight: the calls finish, old workers exit, nothing crashes.
use lib 't/lib';
use FFITest;

my $config = <<'CONF';
location = /slow {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("ffi_test", "trace,threads=2"))
        local ok, res = rt:call("sleep:1500:" .. ngx.var.arg_i)
        ngx.say(tostring(ok), " ", tostring(res))
    }
}
location = /stuck {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("ffi_test", "trace,threads=2"))
        local ok, res = rt:call("park:stuck:never answered")
        ngx.say(tostring(ok), " ", tostring(res))
    }
}
location = /pid {
    content_by_lua_block {
        local ok, res = ngx.load_ffi("ffi_test", "trace,threads=2"):call("pid")
        ngx.say(tostring(ok), " ", tostring(res))
    }
}
CONF

# every worker also holds idle runtimes from its start, threads blocked
# in task_poll, with nothing queued
my $init_worker = <<'LUA';
assert(ngx.load_ffi("ffi_test", "idle,threads=3"))
assert(ngx.load_ffi("ffi_test", "idle,threads=1"))
ngx.log(ngx.WARN, "worker ", ngx.worker.pid(), " loaded its runtimes")
LUA

my %sections = (
    workers => 2, config => $config, init_worker_by_lua_block => $init_worker,
);

sub check_answers {
    my ($what, @res) = @_;
    my @wrong = grep {
        my $r = $res[$_];
        !(defined $r->[0] && $r->[0] == 200 && $r->[1] eq "true $_\n");
    } 0 .. $#res;
    is(scalar @wrong, 0, "$what: every call in flight was answered")
        or diag(join "\n", map { "request $_: " . ($res[$_][0] // 'none')
                                 . " " . ($res[$_][1] // '') } @wrong);
}

# --- reload with calls in flight
FFITest::start_nginx(%sections);
ok(FFITest::wait_for_log('loaded its runtimes', 10, 2), 'both workers up');
# a worker is titled "worker process" only after its init_worker_by_lua*
# ran, just after that log line: await the title
my @old;
my $t_end = time + FFITest::deadline(10);
until ((@old = FFITest::worker_pids()) == 2 || time > $t_end) {
    select(undef, undef, undef, 0.05);
}
is(scalar @old, 2, 'two workers');

my $conns = FFITest::begin_requests(20, 'GET', sub { "/slow?i=$_[0]" });
ok(FFITest::wait_for_log(qr/got sleep:1500:\d+/, 10, 20),
   '20 calls are in the runtimes');

FFITest::signal('HUP');
ok(FFITest::wait_for_log('loaded its runtimes', 10, 4),
   'the new workers loaded their runtimes');

check_answers('reload', FFITest::finish_requests($conns, 15));
ok(FFITest::wait_exit($_, 15), "old worker $_ exited") for @old;

my @new = FFITest::worker_pids();
is(scalar @new, 2, 'two new workers');
my ($status, $body) = FFITest::http('GET', '/pid');
like($body, qr/^true (\d+)\n\z/, 'the new workers serve');
ok((grep { $body eq "true $_\n" } @new), 'answered by a new worker');

FFITest::stop_nginx('reload with calls in flight');

# --- quit with calls in flight
FFITest::start_nginx(%sections);
ok(FFITest::wait_for_log('loaded its runtimes', 10, 2), 'both workers up');
$conns = FFITest::begin_requests(20, 'GET', sub { "/slow?i=$_[0]" });
ok(FFITest::wait_for_log(qr/got sleep:1500:\d+/, 10, 20),
   '20 calls are in the runtimes');

my $master = FFITest::master_pid();
FFITest::signal('QUIT');
check_answers('quit', FFITest::finish_requests($conns, 15));
ok(FFITest::wait_exit($master, 15), 'nginx quit after the calls finished');
FFITest::stop_nginx('quit with calls in flight');
like(FFITest::error_log(), qr/worker process \d+ exited with code 0/,
     'workers exited normally');

# --- quit with only idle runtimes
FFITest::start_nginx(%sections);
ok(FFITest::wait_for_log('loaded its runtimes', 10, 2), 'both workers up');
($status, $body) = FFITest::http('GET', '/pid');
is($status, 200, 'served');
$master = FFITest::master_pid();
FFITest::signal('QUIT');
ok(FFITest::wait_exit($master, 15), 'nginx quit with idle runtimes');
FFITest::stop_nginx('quit with idle runtimes');

# --- two reloads in a row, then quit, calls in flight all along
FFITest::start_nginx(%sections);
ok(FFITest::wait_for_log('loaded its runtimes', 10, 2), 'both workers up');
my $first = FFITest::begin_requests(10, 'GET', sub { "/slow?i=$_[0]" });
ok(FFITest::wait_for_log(qr/got sleep:1500:\d+/, 10, 10), 'first batch in');
FFITest::signal('HUP');
ok(FFITest::wait_for_log('loaded its runtimes', 10, 4), 'first reload done');
my $second = FFITest::begin_requests(10, 'GET', sub { "/slow?i=$_[0]" });
ok(FFITest::wait_for_log(qr/got sleep:1500:\d+/, 10, 20), 'second batch in');
FFITest::signal('HUP');
ok(FFITest::wait_for_log('loaded its runtimes', 10, 6), 'second reload done');
check_answers('reload x2, first batch', FFITest::finish_requests($first, 15));
check_answers('reload x2, second batch',
              FFITest::finish_requests($second, 15));
$master = FFITest::master_pid();
FFITest::signal('QUIT');
ok(FFITest::wait_exit($master, 15), 'nginx quit');
FFITest::stop_nginx('two reloads then quit');

# --- quit while a runtime never polls its queue (so never takes its NULL
# task): the worker exits all the same
FFITest::start_nginx(%sections, init_worker_by_lua_block => $init_worker
                     . 'assert(ngx.load_ffi("ffi_test", "hold=never"))');
ok(FFITest::wait_for_log('loaded its runtimes', 10, 2), 'both workers up');
$master = FFITest::master_pid();
FFITest::signal('QUIT');
ok(FFITest::wait_exit($master, 20), 'nginx quit, a runtime never polling');
FFITest::stop_nginx('quit with a runtime that never polls');

# --- quit while the runtime never answers a call: the worker must still
# exit, cleanly, in bounded time
FFITest::start_nginx(%sections);
ok(FFITest::wait_for_log('loaded its runtimes', 10, 2), 'both workers up');
my $stuck = FFITest::begin_requests(1, 'GET', '/stuck');
ok(FFITest::wait_for_log('parked park:stuck:never answered'),
   'a call is parked for good');
$master = FFITest::master_pid();
FFITest::signal('QUIT');
ok(FFITest::wait_exit($master, 20),
   'nginx quit although a call was never answered');
FFITest::close_requests($stuck);
FFITest::stop_nginx('quit with a call never answered');
