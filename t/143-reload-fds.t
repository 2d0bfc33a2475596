# What reloads leave in a worker: 40 reloads of one plain C library, each
# version called once. Unpinned (`unpin = true`), an old version's image is
# closed after its grace and its shadow copy's descriptor with it: the
# worker holds no more deleted copies than the history keeps. Pinned (the
# default, as upstream), every version stays mapped, idle, and keeps the
# descriptor of its copy (the name glibc knows the mapping by must never
# name another file): exactly one per mapped image, as hot-reload.md says.
use lib 't/lib';
use lib 't/lib/misbehave';
use strict;
use warnings;
use FFITest;
use MBTest qw(release install reload);
use Test::More;
use JSON::PP;

my $root = FFITest::servroot();
my $dir = "$root/lib";
mkdir $dir, 0755;
my $ver = "$dir/libver.so";
my $N = 40;

sub config {
    my ($opts) = @_;
    return <<"CONF";
location /ffi/ { ffi_admin; }
location = /v {
    content_by_lua_block {
        collectgarbage()
        local rt = assert(ngx.load_ffi("$ver", nil, $opts))
        local ok, res = rt:call("version")
        ngx.say(res)
    }
}
CONF
}

# descriptors of the worker that name a shadow copy (the shadow folder is
# the server root here, the copies are in nginx-ffi.*), and
# how many of those copies are deleted
sub copies {
    my ($pid) = @_;
    my ($all, $deleted) = (0, 0);
    opendir my $d, "/proc/$pid/fd" or return (-1, -1);
    for (grep { /^\d+$/ } readdir $d) {
        my $l = readlink("/proc/$pid/fd/$_") // '';
        next unless index($l, "$root/nginx-ffi.") == 0;
        $all++;
        $deleted++ if $l =~ /\(deleted\)$/;
    }
    closedir $d;
    return ($all, $deleted);
}

sub mapped_images {
    my (undef, $body) = FFITest::http('GET', '/ffi/status');
    my $s = decode_json($body);
    my $lib = $s->{workers}[0]{libraries}[0];
    return scalar @{$lib->{images}};
}

for my $mode (['unpinned', '{unpin = true}'], ['pinned', 'nil']) {
    my ($name, $opts) = @$mode;
    install(release('v1'), $ver);
    FFITest::start_nginx(config => config($opts), workers => 1);
    my ($w) = MBTest::workers(1);

    my (undef, $body) = FFITest::http('GET', '/v');
    is($body, "v1\n", "$name: v1 serves");

    my $bad = 0;
    for my $i (1 .. $N) {
        my $v = $i % 2 ? 'v2' : 'v1';
        install(release($v), $ver);
        my ($st) = reload($ver);
        (undef, $body) = FFITest::http('GET', '/v');
        $bad++ if $st != 200 || $body ne "$v\n";
    }
    is($bad, 0, "$name: $N reloads, each version served");

    if ($name eq 'unpinned') {
        # the current image and nothing else once the grace passed
        ok(MBTest::wait_until(sub { mapped_images() == 1 }, 10),
           'unpinned: old images closed') or diag mapped_images();
        my ($all, $deleted) = copies($w);
        is($all, 1, 'unpinned: one shadow copy held, the current one\'s');
        is($deleted, 0, 'unpinned: no deleted copy held');

    } else {
        is(mapped_images(), $N + 1, 'pinned: every version stays mapped');
        my ($all) = copies($w);
        is($all, $N + 1, 'pinned: one descriptor per mapped image');
    }

    FFITest::stop_nginx("$name reloads");
}

done_testing();
