# Every worker's view in GET /ffi/status must fit in the shared zone at
# once, with the default ffi_shm_size: 2 workers with 120 runtimes each
# (about 30 kB of view apiece). Before, the zone kept 64 kB beyond its
# fixed tables for all of them, less the slab's own pages: the second view
# did not fit ("raise ffi_shm_size"), and the make bench run of
# 2026-12-02 (six languages' runtimes, 12 kB views) lost a worker's view
# after 83 reloads.
use lib 't/lib', 't/lib/misbehave';
use strict;
use warnings;
use FFITest;
use Test::More;
use MBTest qw(install release status worker_libs workers
             many_config);
use WorkerConn;

my $root = FFITest::servroot();
my $dir = "$root/lib";
mkdir $dir, 0755;
my $lib = "$dir/libmany.so";
my $n = 120;

my $config = many_config($lib);

install(release('v1'), $lib);
FFITest::start_nginx(workers => 2, config => $config);
my ($a, $b) = workers(2);

for my $pid ($a, $b) {
    my $c = WorkerConn->to_worker($pid);
    my (undef, $body) = $c->request('GET', "/many?n=$n");
    is($body, "done\n", "worker $pid: $n runtimes");
    $c->close;
}

my $libs = worker_libs(status(), $lib);
for my $pid ($a, $b) {
    my $l = $libs->{$pid};
    is($l ? scalar(grep { $_->{state} eq 'serving' } @{ $l->{runtimes} })
          : -1,
       $n, "the status shows worker $pid: $n runtimes shown");
}

FFITest::stop_nginx();
unlike(FFITest::error_log(), qr/ngx_slab_alloc\(\) failed|raise ffi_shm_size/,
       'every view fit in the shared zone');
done_testing();
