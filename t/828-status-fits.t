# A worker's view in GET /ffi/status is rendered into the shared zone on
# every request. A worker with many runtimes has a large view: the new
# one must take the place of the old one, never fail beside it and leave
# the old one to be answered again (a stale view, and a [crit] line of
# the slab allocator in error.log for every status request).
use lib 't/lib', 't/lib/misbehave';
use strict;
use warnings;
use FFITest;
use Test::More;
use JSON::PP;
use MBTest qw(install release escape status worker_libs wait_until workers
             many_config);
use WorkerConn;

my $root = FFITest::servroot();
my $dir = "$root/lib";
mkdir $dir, 0755;
my $lib = "$dir/libmany.so";
my $n = $ENV{FFI_TEST_MANY} || 120;

my $config = many_config($lib);

install(release('v1'), $lib);
FFITest::start_nginx(workers => 2, config => $config,
                     http_config => "ffi_close_grace 10ms;");
my ($a, $b) = workers(2);
my $ca = WorkerConn->to_worker($a);

sub serving_in {
    my ($pid) = @_;
    my $l = worker_libs(status(), $lib)->{$pid} or return -1;
    return scalar grep { $_->{state} eq 'serving' } @{ $l->{runtimes} };
}

sub calls_in {
    my ($pid) = @_;
    my $l = worker_libs(status(), $lib)->{$pid} or return -1;
    my $calls = 0;
    $calls += $_->{calls} for @{ $l->{runtimes} };
    return $calls;
}

my (undef, $body) = $ca->request('GET', "/many?n=$n");
is($body, "done\n", "A: $n runtimes");
is(serving_in($a), $n, "the status shows A's $n runtimes");
(undef, $body) = $ca->request('GET', '/many?n=1&call=1');
is($body, "done\n", 'A: a call on one of them');
my $last;
ok(wait_until(sub { ($last = calls_in($a)) == 1 }, 20),
   'the status shows the call') or diag "A made $last calls";
(undef, $body) = $ca->request('GET', "/many?n=$n&unload=1");
is($body, "done\n", 'A: all of them unloaded');
ok(wait_until(sub { ($last = serving_in($a)) == 0 }, 20),
   'the status shows them gone') or diag "A serves $last runtimes";
$ca->close;

FFITest::stop_nginx();
unlike(FFITest::error_log(), qr/ngx_slab_alloc\(\) failed/,
       'no status left the shared zone short');
done_testing();
