# Every drop is acted on exactly once, by a worker that really watches the
# file, whatever HUPs happened: after nginx -s reload with lazily loaded
# libraries the new workers watch nothing until they load, and the one in
# the lowest slot may never load it. A drop nobody could see (it came
# while only exiting workers watched) is judged by the first worker that
# watches again. A drop that could not be judged for a transient failure
# (EMFILE here) is tried again, not marked judged.
use lib 't/lib', 't/lib/misbehave';
use strict;
use warnings;
use FFITest;
use Test::More;
use File::Copy qw(copy);
use IO::Socket::INET;
use MBTest qw(install release escape wait_until workers);
use WorkerConn;

my $dir = FFITest::servroot() . '/lib';
mkdir $dir, 0755;
my $lib = "$dir/libw.so";

my $config = <<"CONF";
location /ffi/ { ffi_admin; }
location = /pid { content_by_lua_block { ngx.print(ngx.worker.pid()) } }
location = /id { content_by_lua_block { ngx.print(ngx.worker.id()) } }
location = /t {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("$lib"))
        ngx.say(select(2, rt:call("version")))
    }
}
CONF
my $http = "ffi_watch on;\nffi_watch_delay 50ms;";

sub get_on { my ($c, $p) = @_; (undef, my $b) = $c->request('GET', $p); $b }
sub count { my ($re) = @_; my @m = FFITest::error_log() =~ /$re/g; scalar @m }

# ---- after HUP: only the worker in slot 1 loads (and watches) the library
copy(release('v1'), $lib) or die;
chmod 0755, $lib;
FFITest::start_nginx(config => $config, http_config => $http, workers => 2);
my @old = workers(2);
for my $pid (@old) {
    my $c = WorkerConn->to_worker($pid);
    is(get_on($c, '/t'), "v1\n", "old worker $pid loads and watches");
    $c->close;
}
FFITest::signal('HUP');
ok(FFITest::wait_exit($_, 20), "old worker $_ exits") for @old;
my @new = workers(2);
my ($w1) = grep {
    my $c = WorkerConn->to_worker($_);
    my $id = get_on($c, '/id');
    $c->close;
    $id == 1;
} @new;
my ($w0) = grep { $_ != $w1 } @new;
my $c1 = WorkerConn->to_worker($w1);
is(get_on($c1, '/t'), "v1\n", 'after HUP, the worker in slot 1 loads it');
ok(FFITest::wait_for_log(qr/\[info\] $w1#\d+: .*watching "\Q$lib\E"/, 10, 1),
   'and watches it');

install(release('v2'), $lib);
ok(wait_until(sub { get_on($c1, '/t') eq "v2\n" }, 20),
   'a drop: acted on by the worker that watches (slot 0 watches nothing)');
my $c0 = WorkerConn->to_worker($w0);
is(get_on($c0, '/t'), "v2\n", 'slot 0, loading later, maps version 2');

install(release('v3'), $lib);
ok(wait_until(sub { get_on($c1, '/t') eq "v3\n" && get_on($c0, '/t') eq "v3\n" },
              20), 'the next drop reaches both');
$_->close for $c0, $c1;
FFITest::stop_nginx('after HUP');
is(count(qr/reloaded: version 2/), 1, 'version 2: one reload');
is(count(qr/reloaded: version 3/), 1, 'version 3: one reload');

# ---- a drop while only exiting workers watched
copy(release('v1'), $lib) or die;
FFITest::start_nginx(config => $config, http_config => $http, workers => 1);
@old = workers(1);
is((FFITest::http('GET', '/t'))[1], "v1\n", 'loaded and watched');
FFITest::signal('HUP');
ok(FFITest::wait_exit($old[0], 20), 'the old worker exits');
install(release('v2'), $lib);
ok(wait_until(sub { (FFITest::http('GET', '/t'))[1] eq "v2\n" }, 20),
   'the new worker, loading lazily, judges the drop it could not see');
FFITest::stop_nginx('missed drop');
is(count(qr/reloaded: version 2/), 1, 'one reload');

# ---- EMFILE: the drop is tried again
copy(release('v1'), $lib) or die;
FFITest::start_nginx(config => $config, http_config => $http, workers => 1,
                     main_config => 'worker_rlimit_nofile 40;');
is((FFITest::http('GET', '/t'))[1], "v1\n", 'loaded and watched');
my @socks;
for (1 .. 60) {
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                  PeerPort => FFITest::port(), Proto => 'tcp')
        or last;
    push @socks, $s;
}
ok(FFITest::wait_for_log(qr/Too many open files/, 20, 1),
   'the worker has no descriptor left');
install(release('v2'), $lib);
ok(FFITest::wait_for_log(qr/file dropped at "\Q$lib\E" (not judged yet|not loaded)/,
                         20, 1), 'the drop could not be read');
close $_ for @socks;
@socks = ();
ok(wait_until(sub { (FFITest::http('GET', '/t'))[1] eq "v2\n" }, 20),
   'once descriptors are free again, the same drop is judged and serves');
FFITest::stop_nginx('EMFILE');
is(count(qr/reloaded: version 2/), 1, 'one reload');

done_testing();
