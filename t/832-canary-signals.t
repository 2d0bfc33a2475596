# Canaries and signals, with 2 workers: a worker that lags (SIGSTOP) while
# a canary is promoted or retired gets the answer 202 naming it, and once
# it runs again it converges; a worker killed and respawned mid-canary
# routes as the others do; the coordinator of a promotion killed -9 while
# a worker lags leaves a state the next operation can act on, and every
# worker converges on it; nginx -s reload while a promotion waits for a
# lagging worker: the promotion answers, the new workers serve it alone.
use lib 't/lib', 't/lib/misbehave';
use strict;
use warnings;
use FFITest;
use Test::More;
use JSON::PP;
use MBTest qw(install release escape status worker_libs wait_until workers);
use WorkerConn;

my $root = FFITest::servroot();
my $dir = "$root/lib";
mkdir $dir, 0755;
my $ver = "$dir/libver.so";

my $config = <<"CONF";
location /ffi/ { ffi_admin; }
location = /pid { content_by_lua_block { ngx.print(ngx.worker.pid()) } }
location = /v {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("$ver", nil, {unpin = true}))
        local ok, res = rt:call("version")
        ngx.say(tostring(res))
    }
}
CONF

sub post_on {
    my ($c, $what, $args) = @_;
    my ($s, $body) = $c->request('POST', "/ffi/$what?lib=" . escape($ver)
                                         . ($args // ''), 30);
    return ($s, (eval { decode_json($body) } || {}), $body);
}

# the versions of the runtimes serving in each worker: { pid => "1,2" }
sub serving {
    my $libs = worker_libs(status(), $ver);
    my %v;
    for my $pid (keys %$libs) {
        $v{$pid} = join ',', sort { $a <=> $b } map { $_->{version} }
                   grep { $_->{state} eq 'serving' }
                   @{ $libs->{$pid}{runtimes} };
    }
    return \%v;
}

sub all_serve {
    my ($want) = @_;
    return wait_until(sub {
        my $s = serving();
        keys %$s == 2 && !grep { $_ ne $want } values %$s;
    }, 20);
}

# what N calls on one worker's connection answered: { "v1\n" => n, ... }
sub answers_on {
    my ($c, $n) = @_;
    my %seen;
    for (1 .. $n) {
        my (undef, $body) = $c->request('GET', '/v');
        $seen{$body // 'none'}++;
    }
    return \%seen;
}

install(release('v1'), $ver);
FFITest::start_nginx(workers => 2, config => $config, allow_alerts => 1,
                     http_config => "ffi_reload_timeout 10s;\n"
                                    . "ffi_close_grace 50ms;\n"
                                    . "ffi_canary_guard off;",
                     init_worker_by_lua_block => <<"LUA");
assert(ngx.load_ffi("$ver", nil, {unpin = true}))
ngx.log(ngx.WARN, "loaded")
LUA
ok(FFITest::wait_for_log('loaded', 10, 2), 'both workers up');
my ($a, $b) = workers(2);
my $ca = WorkerConn->to_worker($a);

# ---- promote while B lags: 202 naming B, then B converges
install(release('v2'), $ver);
my ($s, $j, $body) = post_on($ca, 'reload', '&canary=50');
is($s, 200, 'canary of v2 (version 2) at 50%') or diag $body;
ok(all_serve('1,2'), 'both workers serve versions 1 and 2');
FFITest::signal('STOP', $b);
($s, $j, $body) = post_on($ca, 'promote');
is($s, 202, 'promote with B stopped: 202') or diag $body;
is_deeply([map { $_->{pid} } @{ $j->{unconfirmed} || [] }], [$b],
          '... naming B');
is($j->{version}, 2, '... version 2 is current');
FFITest::signal('CONT', $b);
ok(all_serve('2'), 'B, running again, serves version 2 alone, as A does')
    or diag explain serving();

# ---- retire while B lags: 202, then B converges
install(release('v3'), $ver);
($s, $j, $body) = post_on($ca, 'reload', '&canary=50');
is($s, 200, 'canary of v3 (version 3)') or diag $body;
is($j->{version}, 3, '... version 3');
ok(all_serve('2,3'), 'both workers serve versions 2 and 3');
FFITest::signal('STOP', $b);
($s, $j, $body) = post_on($ca, 'rollback');
is($s, 202, 'rollback (retire) with B stopped: 202') or diag $body;
is_deeply([map { $_->{pid} } @{ $j->{unconfirmed} || [] }], [$b],
          '... naming B');
FFITest::signal('CONT', $b);
ok(all_serve('2'), 'B, running again, serves version 2 alone')
    or diag explain serving();

# ---- a worker killed -9 mid-canary: its successor routes as B did
install(release('v1'), $ver);
($s, $j, $body) = post_on($ca, 'reload', '&canary=50');
is($s, 200, 'canary of v1 (version 4)') or diag $body;
is($j->{version}, 4, '... a new number, 4: the retired 3 is not given again');
ok(all_serve('2,4'), 'both workers serve versions 2 and 4');
FFITest::signal('KILL', $b);
ok(FFITest::wait_exit($b, 20), 'B is gone');
my $b2;
ok(wait_until(sub { ($b2) = grep { $_ != $a && $_ != $b }
                             FFITest::worker_pids(); $b2 }, 20),
   'the master respawned B');
ok(all_serve('2,4'), 'the new worker serves versions 2 and 4 too')
    or diag explain serving();
my $cb = WorkerConn->to_worker($b2);
my $seen = answers_on($cb, 40);
ok($seen->{"v2\n"} && $seen->{"v1\n"}
   && $seen->{"v2\n"} + $seen->{"v1\n"} == 40,
   'its calls go to both versions') or diag explain $seen;

# ---- the coordinator killed -9 while it waits for a lagging worker
# (connections made before the stop: a new one may queue at the stopped
# worker's listen socket, where nothing accepts it)
my $ca2 = WorkerConn->to_worker($a);
FFITest::signal('STOP', $b2);
$ca->send_request('POST', '/ffi/promote?lib=' . escape($ver));
# A carries the command out as it publishes it: its calls go to version 4
# (v1) alone from then on, while it waits for B (ffi_reload_timeout 10s)
ok(wait_until(sub { (answers_on($ca2, 6)->{"v1\n"} // 0) == 6 }, 20),
   'A published the promotion and waits for B');
$ca2->close;
FFITest::signal('KILL', $a);
ok(FFITest::wait_exit($a, 20), 'A is gone');
FFITest::signal('CONT', $b2);
$ca->close;
my $a2;
ok(wait_until(sub { ($a2) = grep { $_ != $a && $_ != $b2 }
                             FFITest::worker_pids(); $a2 }, 20),
   'the master respawned A');
# promoted (version 4 alone) or not (2 and 4): either way, consistent
my $st;
ok(wait_until(sub {
       my $s = serving();
       keys %$s == 2 && keys %{ { map { $_ => 1 } values %$s } } == 1
   }, 20), 'both workers serve the same versions')
    or diag explain serving();
$st = status();
my ($sl) = grep { $_->{path} eq $ver } @{ $st->{libraries} };
my $want = $sl->{canary} ? '2,4' : '4';
is((values %{ serving() })[0], $want,
   "the workers serve what the shared zone says ($want)");

# the metrics say what the shared zone says
my (undef, $m) = FFITest::http('GET', '/ffi/metrics');
my ($gauge) = $m =~ /^ffi_canary_version\{lib="\Q$ver\E"\} (\d+)$/m;
is($gauge, $sl->{canary} ? 4 : 0,
   'ffi_canary_version: ' . ($sl->{canary} ? 4 : 0) . ', as the status');
my ($cur) = $m =~ /^ffi_library_version\{lib="\Q$ver\E"\} (\d+)$/m;
is($cur, $sl->{version}, "ffi_library_version: $sl->{version}, as the status");

# the next operation is not refused as busy
$ca = WorkerConn->to_worker($a2);
($s, $j, $body) = post_on($ca, $sl->{canary} ? 'promote' : 'rollback');
is($s, 200, 'the next operation ends: 200') or diag $body;
ok(all_serve($sl->{canary} ? '4' : '5'), 'every worker converges on it')
    or diag explain serving();
$_->close for $ca, $cb;

# ---- nginx -s reload while a promotion waits for a lagging worker
install(release('v3'), $ver);
$ca = WorkerConn->to_worker($a2);
($s, $j, $body) = post_on($ca, 'reload', '&canary=50');
is($s, 200, 'canary of v3') or diag $body;
my $c3 = $j->{version};
my ($w1, $w2) = workers(2);
my $lag = $w1 == $a2 ? $w2 : $w1;
$ca2 = WorkerConn->to_worker($a2);
FFITest::signal('STOP', $lag);
$ca->send_request('POST', '/ffi/promote?lib=' . escape($ver));
ok(wait_until(sub { (answers_on($ca2, 6)->{"v3\n"} // 0) == 6 }, 20),
   'the coordinator published the promotion and waits');
$ca2->close;
FFITest::signal('HUP');
ok(wait_until(sub {
       grep { $_ != $a2 && $_ != $lag } FFITest::worker_pids()
   }, 20), 'HUP: new workers start');
FFITest::signal('CONT', $lag);
($s, $body) = $ca->read_response(30);
ok($s == 200 || $s == 202, "the promotion answers ($s)") or diag $body;
$ca->close;
ok(FFITest::wait_exit($a2, 20) && FFITest::wait_exit($lag, 20),
   'the old workers exit');
ok(all_serve($c3), "the new workers serve version $c3 alone")
    or diag explain serving();

FFITest::stop_nginx();
my @bad = grep { /\[alert\]|\[emerg\]|segfault|exited on signal/
                 && !/exited on signal 9\b/ }
          split /\n/, FFITest::error_log();
is_deeply(\@bad, [], 'no [alert], [emerg] or crash but the kills');
done_testing();
