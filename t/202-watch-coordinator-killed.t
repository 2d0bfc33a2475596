# A drop whose coordinator is killed (SIGKILL) after it recorded the drop
# as judged but before its reload ended is not lost: a live watcher (the
# survivor, or the respawned worker once it watches) judges it again, and
# it serves after one reload. The reload is held in its prepare by a hold
# file that the library's libffi_init waits on, never by a sleep.
use lib 't/lib', 't/lib/misbehave';
use strict;
use warnings;
use FFITest;
use Test::More;
use File::Copy qw(copy);
use MBTest qw(install release escape wait_until workers);
use WorkerConn;

my $root = FFITest::servroot();
my $dir = "$root/lib";
mkdir $dir, 0755;
my $lib = "$dir/libdrop.so";
my $P = "$root/pause";
my $pause = "pause:$P";

my $config = <<"CONF";
location /ffi/ { ffi_admin; }
location = /pid { content_by_lua_block { ngx.print(ngx.worker.pid()) } }
location = /id { content_by_lua_block { ngx.print(ngx.worker.id()) } }
location = /t {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("$lib", "$pause"))
        ngx.say(select(2, rt:call("version")))
    }
}
CONF
# the deadline is a failure guard only: the coordinator is killed while
# it holds, long before it
my $http = "ffi_watch on;\nffi_watch_delay 50ms;\nffi_reload_timeout 60s;";

sub touch { open my $fh, '>', $_[0] or die "$_[0]: $!\n"; close $fh }
sub get_on { my ($c, $p) = @_; (undef, my $b) = $c->request('GET', $p); $b }
# a fresh connection each time: a poll outlives keepalive_timeout
sub ask {
    my ($pid, $p) = @_;
    my $c = WorkerConn->to_worker($pid);
    my $b = get_on($c, $p);
    $c->close;
    return $b;
}
sub count { my ($re) = @_; my @m = FFITest::error_log() =~ /$re/g; scalar @m }

copy(release('v1'), $lib) or die;
chmod 0755, $lib;
FFITest::start_nginx(config => $config, http_config => $http, workers => 2,
                     allow_alerts => 1);
my @w = workers(2);
my %id;
for my $pid (@w) {
    my $c = WorkerConn->to_worker($pid);
    $id{$pid} = get_on($c, '/id');
    is(get_on($c, '/t'), "v1\n", "worker $pid loads and watches");
    $c->close;
}
# the watcher in the lowest slot acts on drops: it coordinates
my ($a) = grep { $id{$_} == 0 } @w;
my ($b) = grep { $_ != $a } @w;
ok(FFITest::wait_for_log(qr/\[info\] $_#\d+: .*watching "\Q$lib\E"/, 10, 1),
   "$_ watches") for $a, $b;

touch("$P-$a.hold-v2");
install(release('v2'), $lib);
ok(wait_until(sub { -e "$P-$a.held-v2" }, 20),
   'A, coordinating the drop, holds in its prepare: the drop is recorded');
ok(FFITest::wait_for_log(qr/\[info\] $b#\d+: .*version 2 prepared here: ok/,
                         20, 1), 'B prepared');
FFITest::signal('KILL', $a);
unlink "$P-$a.hold-v2";
ok(FFITest::wait_exit($a, 20), 'A is gone');

ok(wait_until(sub { ask($b, '/t') eq "v2\n" }, 30),
   'the drop is judged again by a live watcher and serves');
my $a2;
ok(wait_until(sub { ($a2) = grep { $_ != $a && $_ != $b }
                             FFITest::worker_pids(); $a2 }, 20),
   'the master respawned A');
is(ask($a2, '/t'), "v2\n", 'the respawned worker serves version 2');
ok(FFITest::wait_for_log(qr/\[info\] $a2#\d+: .*watching "\Q$lib\E"/, 10, 1),
   'and watches');
# a drop judged later (a next drop) proves both watchers settled on v2
install(release('v3'), $lib);
ok(wait_until(sub { ask($b, '/t') eq "v3\n" && ask($a2, '/t') eq "v3\n" },
              30), 'the next drop reaches both');
FFITest::stop_nginx('coordinator killed');
is(count(qr/reloaded: version 2/), 1, 'version 2: one reload');
is(count(qr/reloaded: version 3/), 1, 'version 3: one reload');
is(count(qr/reloaded: version 4/), 0, 'nothing judged twice');

done_testing();
