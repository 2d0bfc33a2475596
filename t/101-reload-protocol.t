# The reload promise under real operations: "200 only once every worker
# serves the new version", for runtimes created during the reload (a new
# cfg, a worker's first load, the new workers of nginx -s reload), for a
# worker that lags (SIGSTOP after prepare), and a coordinator killed
# mid-reload. A reload is held in its prepare by a hold file that the
# library's libffi_init waits on (cfg "pause:PREFIX"), never by a sleep.
use lib 't/lib', 't/lib/misbehave';
use strict;
use warnings;
use FFITest;
use Test::More;
use JSON::PP;
use File::Copy qw(copy);
use MBTest qw(install release escape status worker_libs wait_until workers);
use WorkerConn;

my $root = FFITest::servroot();
my $dir = "$root/lib";
mkdir $dir, 0755;
my $lib = "$dir/libproto.so";
my $P = "$root/pause";
my $pause = "pause:$P";

my $config = <<"CONF";
location /ffi/ { ffi_admin; }
location = /pid { content_by_lua_block { ngx.print(ngx.worker.pid()) } }
location = /t {
    content_by_lua_block {
        local rt, err = ngx.load_ffi("$lib", ngx.unescape_uri(ngx.var.arg_cfg))
        if not rt then
            ngx.say("load failed: ", err)
            return
        end
        local ok, res = rt:call("version")
        ngx.say(res)
    }
}
CONF

# A reload held in a prepare must not run into its deadline while the
# test acts (loads, nginx -s reload, a respawn: seconds on a loaded ASan
# run): a deadline that only guards against a hang. Section 3 waits for a
# stopped worker on purpose: there a short one.
my $http = 'ffi_reload_timeout ' . FFITest::deadline(60) . 's;';
my $http_short = 'ffi_reload_timeout 3s;';

sub touch { open my $fh, '>', $_[0] or die "$_[0]: $!\n"; close $fh }
sub hold    { touch("$P-$_[0].hold-$_[1]") }
sub release_hold { unlink "$P-$_[0].hold-$_[1]" }
sub held    { my ($pid, $v) = @_; wait_until(sub { -e "$P-$pid.held-$v" }, 20) }

sub t_on {
    my ($c, $cfg) = @_;
    my (undef, $body) = $c->request('GET', '/t?cfg=' . escape($cfg));
    return $body;
}

# every runtime that serves, in every worker: { pid => [versions] }
sub serving {
    my $st = status();
    my %v;
    my $libs = worker_libs($st, $lib);
    for my $pid (keys %$libs) {
        $v{$pid} = [ sort map { $_->{version} }
                     grep { $_->{state} eq 'serving' }
                     @{ $libs->{$pid}{runtimes} } ];
    }
    return \%v;
}

sub all_on {
    my ($v, $want) = @_;
    my $s = serving();
    my @off = map { my $p = $_; map { "$p:$_" } grep { $_ != $want } @{ $s->{$p} } }
              keys %$s;
    return (!@off, $s);
}

# ---- 1. loads with new cfgs, and a worker's first load, during a reload
copy(release('v1'), $lib) or die;
FFITest::start_nginx(config => $config, http_config => $http, workers => 3);
my ($a, $b, $c) = workers(3);
my $ca = WorkerConn->to_worker($a);
my $cb = WorkerConn->to_worker($b);
my $cc = WorkerConn->to_worker($c);
is(t_on($ca, $pause), "v1\n", 'A loads');
is(t_on($cb, $pause), "v1\n", 'B loads');

hold($b, 'v2');
install(release('v2'), $lib);
my $coord = WorkerConn->to_worker($a);
$coord->send_request('POST', '/ffi/reload?lib=' . escape($lib));
ok(held($b, 'v2'), 'B holds in its prepare: the reload is under way');

# A prepared already (it coordinates); C never loaded the library
is(t_on($ca, "new-$_"), "v1\n", "A: load of a new cfg $_ during the reload")
    for 1 .. 3;
is(t_on($cc, "first"), "v1\n", "C: first load during the reload");

release_hold($b, 'v2');
my ($st, $body) = $coord->read_response(30);
is($st, 200, 'the reload answers 200') or diag $body;

my ($ok, $s) = all_on(serving(), 2);
ok($ok, 'after the 200, every runtime in every worker is on version 2')
    or diag explain $s;
is(scalar(map { @$_ } values %$s), 6, 'all six runtimes serve');
is(t_on($ca, "new-1"), "v2\n", 'A: a runtime made during the reload answers v2');
is(t_on($cc, "first"), "v2\n", 'C: its first runtime answers v2');
$_->close for $ca, $cb, $cc, $coord;
FFITest::stop_nginx('loads during a reload');

# ---- 2. nginx -s reload during a reload
copy(release('v1'), $lib) or die;
FFITest::start_nginx(config => $config, http_config => $http, workers => 2,
                     init_worker_by_lua_block => qq{
    assert(ngx.load_ffi("$lib", "$pause"))
    ngx.log(ngx.NOTICE, "loaded in init_worker")
});
($a, $b) = workers(2);
hold($b, 'v2');
install(release('v2'), $lib);
$coord = WorkerConn->to_worker($a);
$coord->send_request('POST', '/ffi/reload?lib=' . escape($lib));
ok(held($b, 'v2'), 'B holds in its prepare');
FFITest::signal('HUP');
ok(FFITest::wait_for_log(qr/loaded in init_worker/, 20, 4),
   'the new workers loaded in init_worker_by_lua during the reload');
release_hold($b, 'v2');
($st, $body) = $coord->read_response(30);
is($st, 200, 'the reload answers 200') or diag $body;
$coord->close;
ok(FFITest::wait_exit($a, 20) && FFITest::wait_exit($b, 20),
   'the old workers exit');
($ok, $s) = all_on(serving(), 2);
ok($ok, "after the 200, the new workers' runtimes are on version 2")
    or diag explain $s;
is(scalar(keys %$s), 2, 'two workers serve it');
FFITest::stop_nginx('nginx -s reload during a reload');

# ---- 3. a worker stopped after prepare, then continued
copy(release('v1'), $lib) or die;
FFITest::start_nginx(config => $config, http_config => $http_short,
                     workers => 2);
($a, $b) = workers(2);
$ca = WorkerConn->to_worker($a);
$cb = WorkerConn->to_worker($b);
is(t_on($ca, $pause), "v1\n", 'A loads');
is(t_on($cb, $pause), "v1\n", 'B loads');
hold($a, 'v2');
install(release('v2'), $lib);
$coord = WorkerConn->to_worker($a);
$coord->send_request('POST', '/ffi/reload?lib=' . escape($lib));
ok(FFITest::wait_for_log(qr/\[info\] $b#\d+: .*version 2 prepared here: ok/,
                         20, 1), 'B prepared');
FFITest::signal('STOP', $b);
release_hold($a, 'v2');
($st, $body) = $coord->read_response(30);
is($st, 202, 'B did not confirm the commit: 202, not 200') or diag $body;
my $j = eval { decode_json($body) } || {};
is_deeply([ map { $_->{pid} } @{ $j->{unconfirmed} || [] } ], [ $b ],
          'the answer names B');
is($j->{version}, 2, 'version 2 is current');

install(release('v3'), $lib);
($st, $body) = $coord->request('POST', '/ffi/reload?lib=' . escape($lib), 30);
is($st, 422, 'the next reload, B still stopped: refused') or diag $body;
like($body, qr/worker\(s\) $b did not answer/, 'naming B');

FFITest::signal('CONT', $b);
ok(wait_until(sub { t_on($cb, $pause) eq "v2\n" }, 20),
   'B, running again, serves the committed version 2');
($ok, $s) = all_on(serving(), 2);
ok($ok, 'every runtime everywhere on version 2') or diag explain $s;
$_->close for $ca, $cb, $coord;
FFITest::stop_nginx('SIGSTOP after prepare');

# ---- 4. SIGKILL of the coordinator mid-reload
copy(release('v1'), $lib) or die;
FFITest::start_nginx(config => $config, http_config => $http, workers => 2,
                     allow_alerts => 1);
($a, $b) = workers(2);
$ca = WorkerConn->to_worker($a);
$cb = WorkerConn->to_worker($b);
is(t_on($ca, $pause), "v1\n", 'A loads');
is(t_on($cb, $pause), "v1\n", 'B loads');
hold($a, 'v2');
install(release('v2'), $lib);
$coord = WorkerConn->to_worker($a);
$coord->send_request('POST', '/ffi/reload?lib=' . escape($lib));
ok(FFITest::wait_for_log(qr/\[info\] $b#\d+: .*version 2 prepared here: ok/,
                         20, 1), 'B prepared');
FFITest::signal('KILL', $a);
release_hold($a, 'v2');
ok(FFITest::wait_for_log(qr/\[info\] $b#\d+: .*version 2 was not committed/,
                         20, 1), 'B drops what it prepared for the dead reload');
my $runtimes = worker_libs(status(), $lib)->{$b}{runtimes};
is(scalar(grep { $_->{version} == 2 && $_->{state} =~ /serving|starting/ }
          @$runtimes), 0, 'B has no live runtime of the reload left')
    or diag explain $runtimes;
is(t_on($cb, $pause), "v1\n", 'B serves version 1');
ok(FFITest::wait_exit($a, 20), 'A is gone');
my $a2;
ok(wait_until(sub { ($a2) = grep { $_ != $a && $_ != $b }
                             FFITest::worker_pids(); $a2 }, 20),
   'the master respawned the killed worker');
($st, my $json) = MBTest::reload($lib);
is($st, 200, 'the next reload goes through') or diag explain $json;
is(t_on($cb, $pause), "v2\n", 'B serves version 2');
($ok, $s) = all_on(serving(), 2);
ok($ok, 'every runtime on version 2') or diag explain $s;
$_->close for $ca, $cb, $coord;
FFITest::stop_nginx('SIGKILL of the coordinator');

# ---- 5. a respawned worker inherits no previous occupant's answer
copy(release('v1'), $lib) or die;
FFITest::start_nginx(config => $config, http_config => $http, workers => 2,
                     allow_alerts => 1);
($a, $b) = workers(2);
$ca = WorkerConn->to_worker($a);
$cb = WorkerConn->to_worker($b);
is(t_on($ca, 'fail-on-v2'), "v1\n", 'A loads a cfg that v2 refuses');
is(t_on($cb, $pause), "v1\n", 'B loads');
$ca->close;
install(release('v2'), $lib);
hold($b, 'v2');
$cb->send_request('POST', '/ffi/reload?lib=' . escape($lib));
ok(held($b, 'v2'), 'B, coordinating, holds in its own prepare');
ok(FFITest::wait_for_log(qr/\[info\] $a#\d+: .*version 2 prepared here: failed/,
                         20, 1), "A's prepare failed");
FFITest::signal('KILL', $a);
ok(FFITest::wait_exit($a, 20), 'A is gone');
ok(wait_until(sub { ($a2) = grep { $_ != $a && $_ != $b }
                             FFITest::worker_pids(); $a2 }, 20),
   'the master respawned A');
my $ca2 = WorkerConn->to_worker($a2);
is($ca2->pid, $a2, 'the new worker in that slot serves');
release_hold($b, 'v2');
($st, $body) = $cb->read_response(30);
is($st, 200, "the reload goes through: A's failure is not the new worker's")
    or diag $body;
is(t_on($ca2, 'other'), "v2\n", 'the new worker serves version 2');
is(t_on($cb, $pause), "v2\n", 'B serves version 2');
$_->close for $cb, $ca2;
FFITest::stop_nginx('respawn');

done_testing();
