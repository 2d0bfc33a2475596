# The process side: a worker killed with SIGKILL is replaced and serves
# (library loaded again, a reload afterwards works); nginx -s reload and
# -s quit (the real commands) with calls in flight on a hot-reloaded
# library; 100 clients that go away mid-call.
use lib 't/lib';
use lib 't/lib/misbehave';
use FFITest;
use MBTest qw(release install reload status worker_libs workers wait_until);
use Test::More;
use Time::HiRes qw(time);

my $NGINX = $ENV{NGINX} || 'nginx';
my $root = FFITest::servroot();
my $dir = "$root/lib";
mkdir $dir, 0755;
my $ver = "$dir/libver.so";

my $config = <<"CONF";
location /ffi/ { ffi_admin; allow 127.0.0.1; deny all; }
location = /v {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("$ver", nil, {unpin = true}))
        local ok, res = rt:call(ngx.var.arg_q or "version")
        ngx.say(tostring(ok), " ", tostring(res), " ", ngx.worker.pid())
    }
}
location = /park {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("ffi_test", "trace,threads=2"))
        local ok, res = rt:call("park:" .. ngx.var.arg_gate .. ":"
                                .. ngx.var.arg_i, tonumber(ngx.var.arg_t))
        ngx.log(ngx.WARN, "park call returned: ", tostring(ok), " ",
                tostring(res))
        ngx.say(tostring(ok), " ", tostring(res))
    }
}
location = /sleep {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("ffi_test", "trace,threads=2"))
        local ok, res = rt:call("sleep:" .. ngx.var.arg_ms .. ":"
                                .. ngx.var.arg_i)
        ngx.say(tostring(ok), " ", tostring(res))
    }
}
location = /release {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("ffi_test", "trace,threads=2"))
        ngx.say(select(2, rt:call("release:" .. ngx.var.arg_gate)))
    }
}
CONF

my $init_worker = <<"LUA";
assert(ngx.load_ffi("$ver", nil, {unpin = true}))
ngx.log(ngx.WARN, "worker ", ngx.worker.pid(), " loaded the library")
LUA

my %sections = (workers => 2, config => $config,
                init_worker_by_lua_block => $init_worker,
                http_config => 'ffi_close_grace 50ms;');

# answers of /v by "ok version" and by pid
sub answers {
    my ($n, $q) = @_;
    my (%seen, %pids);
    for my $r (FFITest::concurrent($n, 'GET', '/v' . ($q ? "?q=$q" : ''))) {
        my ($a, $pid) = ($r->[1] // '') =~ /^(\S+ \S+) (\d+)\n\z/
            ? ($1, $2) : ($r->[1] // 'none', 0);
        $seen{$a}++;
        $pids{$pid}++;
    }
    return (\%seen, \%pids);
}

# the real command line, as an operator types it
sub nginx_s {
    my ($sig) = @_;
    # NGINX in nginx's environment means "inherited sockets": drop it
    my $out = `env -u NGINX $NGINX -p $root/ -c conf/nginx.conf -s $sig 2>&1`;
    return ($? >> 8, $out);
}

# --- a worker killed with SIGKILL
install(release('v1'), $ver);
FFITest::start_nginx(%sections, allow_alerts => 1);
ok(FFITest::wait_for_log('loaded the library', 10, 2), 'both workers up');
my @pids = workers(2);
my ($victim, $survivor) = @pids;

# calls in flight in both workers when one is killed
my $conns = FFITest::begin_requests(20, 'GET', '/v?q=sleep:1500');
ok(FFITest::wait_for_log('libver v1 got sleep', 10, 20), '20 calls in flight');
FFITest::signal('KILL', $victim);
ok(FFITest::wait_exit($victim, 5), "worker $victim killed");
ok(FFITest::wait_for_log(qr/worker process $victim exited on signal 9/),
   'the master saw it');
my @new = workers(2);
my ($fresh) = grep { $_ != $survivor } @new;
ok($fresh && $fresh != $victim, "a new worker replaced it ($fresh)");
ok(FFITest::wait_for_log("worker $fresh loaded the library"),
   'the new worker loaded the library again');

my %in_flight;
for my $r (FFITest::finish_requests($conns, 10)) {
    if (($r->[1] // '') =~ /^true v1 (\d+)\n\z/) {
        $in_flight{ $1 == $survivor ? 'survivor: true v1' : "other: $1" }++;
    } else {
        $in_flight{'lost with the killed worker'}++;
    }
}
ok(!grep({ /^other/ } keys %in_flight),
   'calls in the surviving worker were answered by it');
note(join ', ', map { "$_: $in_flight{$_}" } sort keys %in_flight);

ok(wait_until(sub {
       my (undef, $pids) = answers(20);
       return $pids->{$fresh};
   }, 10), 'the new worker serves');
my ($seen) = answers(40);
is_deeply($seen, { 'true v1' => 40 }, 'every call answered by v1');

my $st = status();
is_deeply([sort { $a <=> $b } map { $_->{pid} } @{ $st->{workers} }],
          [sort { $a <=> $b } $survivor, $fresh],
          'status covers the two live workers, not the dead one');

install(release('v2'), $ver);
my ($status, $json, $body) = reload($ver);
is($status, 200, 'a reload after the kill answers 200') or diag($body);
is($json->{version}, 2, 'version 2');
($seen) = answers(40);
is_deeply($seen, { 'true v2' => 40 }, 'every call answered by v2');
$st = status();
is(worker_libs($st, $ver)->{$_}{version}, 2, "worker $_ on version 2")
    for $survivor, $fresh;

FFITest::stop_nginx('SIGKILL');
my @alerts = grep { /\[alert\]|\[emerg\]|exited on signal/ }
             split /\n/, FFITest::error_log();
is_deeply(\@alerts, [grep { /worker process $victim exited on signal 9/ }
                     @alerts], 'the only alert is the killed worker\'s');

# --- nginx -s reload, then -s quit, with calls in flight, after a hot
# reload: the old workers finish on the new version, the new workers load
# the file on disk, and hot reloads go on from there
install(release('v1'), $ver);
FFITest::start_nginx(%sections);
ok(FFITest::wait_for_log('loaded the library', 10, 2), 'both workers up');
my @old = workers(2);
install(release('v2'), $ver);
($status, $json) = reload($ver);
is($status, 200, 'hot reload to v2');

$conns = FFITest::begin_requests(20, 'GET', '/v?q=sleep:1000');
ok(FFITest::wait_for_log('libver v2 got sleep', 10, 20),
   '20 calls in flight on v2');
my ($rc, $out) = nginx_s('reload');
is($rc, 0, 'nginx -s reload exits 0') or diag($out);
ok(FFITest::wait_for_log('loaded the library', 10, 4),
   'the new workers loaded the library');
my %done;
$done{ ($_->[1] // 'none') =~ /^(true v2) \d+\n\z/ ? $1 : $_->[1] }++
    for FFITest::finish_requests($conns, 10);
is_deeply(\%done, { 'true v2' => 20 }, 'the calls in flight ended on v2');
ok(FFITest::wait_exit($_, 10), "old worker $_ exited") for @old;
my @after = workers(2);
($seen) = answers(40);
is_deeply($seen, { 'true v2' => 40 }, 'the new workers serve v2');

install(release('v3'), $ver);
($status, $json) = reload($ver);
is($status, 200, 'a hot reload after nginx -s reload answers 200');
($seen) = answers(40);
is_deeply($seen, { 'true v3' => 40 }, 'v3 serves');
$st = status();
is_deeply([sort { $a <=> $b } map { $_->{pid} } @{ $st->{workers} }],
          [sort { $a <=> $b } @after], 'status covers the new workers only');

$conns = FFITest::begin_requests(20, 'GET', '/v?q=sleep:1000');
ok(FFITest::wait_for_log('libver v3 got sleep', 10, 20),
   '20 calls in flight on v3');
my $master = FFITest::master_pid();
($rc, $out) = nginx_s('quit');
is($rc, 0, 'nginx -s quit exits 0') or diag($out);
%done = ();
$done{ ($_->[1] // 'none') =~ /^(true v3) \d+\n\z/ ? $1 : $_->[1] }++
    for FFITest::finish_requests($conns, 10);
is_deeply(\%done, { 'true v3' => 20 }, 'quit: the calls in flight ended');
ok(FFITest::wait_exit($master, 10), 'nginx quit');
FFITest::stop_nginx('nginx -s reload and -s quit');
my $codes = () = FFITest::error_log()
                 =~ /worker process \d+ exited with code 0/g;
is($codes, 4, 'all four workers exited with code 0');

# --- 100 clients that go away mid-call, with lua_check_client_abort off
# and on: the late answers are dropped, the server answers, no alert
for my $check ('off', 'on') {
    FFITest::start_nginx(%sections,
                         config => "lua_check_client_abort $check;\n$config");
    ok(FFITest::wait_for_log('loaded the library', 10, 2),
       "abort $check: both workers up");

    my $gate = "gone_$check";
    $conns = FFITest::begin_requests(100, 'GET',
                                     sub { "/park?gate=$gate&i=$_[0]" });
    ok(FFITest::wait_for_log(qr/parked park:$gate:\d+/, 10, 100),
       "abort $check: 100 calls parked");
    FFITest::close_requests($conns);

    # the same for 100 calls in the timer thread, answered 300 ms later
    my $sleepers = FFITest::begin_requests(100, 'GET',
                                           sub { "/sleep?ms=300&i=$_[0]" });
    ok(FFITest::wait_for_log(qr/got sleep:300:\d+/, 10, 100),
       "abort $check: 100 calls sleeping");
    FFITest::close_requests($sleepers);

    if ($check eq 'on') {
        ok(FFITest::wait_for_log(qr/client prematurely closed connection/,
                                 10, 200),
           'abort on: nginx saw the 200 clients go');
    }

    # the gate is per worker: open it until both workers answered theirs
    ok(wait_until(sub {
           FFITest::concurrent(4, 'GET', "/release?gate=$gate");
           return FFITest::wait_for_log(qr/answered park:$gate:\d+/, 0.1,
                                        100);
       }, 10), "abort $check: the 100 parked calls were answered late");
    ok(FFITest::wait_for_log(qr/answered sleep:300:\d+/, 10, 100),
       "abort $check: the 100 sleeping calls were answered late");

    my @res = FFITest::concurrent(50, 'GET', sub { "/sleep?ms=1&i=$_[0]" });
    my @wrong = grep { ($res[$_][1] // '') ne "true $_\n" } 0 .. $#res;
    is(scalar @wrong, 0, "abort $check: the server answers 50 new calls");

    ok(wait_until(sub {
           my $st = status();
           my @n = map { $_->{inflight} } @{ $st->{workers} || [] };
           return @n == 2 && !grep { $_ } @n;
       }, 5), "abort $check: status shows no call in flight");

    FFITest::stop_nginx("100 clients gone (check_client_abort $check)");
    my $log = FFITest::error_log();
    if ($check eq 'on') {
        unlike($log, qr/park call returned/,
               'abort on: no aborted handler resumed');
    } else {
        my $resumed = () = $log =~ /park call returned: true \d+/g;
        is($resumed, 100, 'abort off: the 100 handlers resumed and ended');
    }
}

done_testing();
