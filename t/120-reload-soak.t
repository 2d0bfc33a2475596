# 1,000 reload cycles of an unpinned library with 2 workers: open files,
# mappings and memory of the workers do not grow.
use lib 't/lib';
use lib 't/lib/misbehave';
use FFITest;
use MBTest qw(release install escape footprint);
use Test::More;
use JSON::PP;
use File::Copy qw(copy);

my $CYCLES = $ENV{FFI_SOAK_RELOADS} || 1000;

my $repo = FFITest::repo();
my $root = FFITest::servroot();
my $dir = "$root/lib";
mkdir $dir, 0755;
my $ver = "$dir/libver.so";

sub install_release { install(release($_[0]), $ver) }

# reload, then one call in each worker so that every version really serves
sub cycle {
    my ($i) = @_;
    install_release($i % 2 ? 'v2' : 'v1');
    my ($status, $body) = FFITest::http('POST',
                                        '/ffi/reload?lib=' . escape($ver));
    return $status == 200 ? 1 : (diag("reload $i: $status $body"), 0);
}

# no runtime may be draining and only the current image mapped
sub settle {
    my $deadline = time + FFITest::deadline(10);
    while (time < $deadline) {
        my (undef, $body) = FFITest::http('GET', '/ffi/status');
        my $st = decode_json($body);
        my $busy = grep {
            my $l = $_;
            $l->{mapped_images} != 1
                || grep { $_->{state} ne 'serving' } @{ $l->{runtimes} }
        } map { @{ $_->{libraries} } } @{ $st->{workers} };
        return 1 unless $busy;
        select undef, undef, undef, 0.05;
    }
    return 0;
}

my $config = <<"CONF";
location /ffi/ { ffi_admin; allow 127.0.0.1; deny all; }
location = /v {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("$ver", nil, {unpin = true}))
        ngx.say(select(2, rt:call("version")))
    }
}
CONF

install_release('v1');
FFITest::start_nginx(workers => 2, config => $config,
                     http_config => 'ffi_close_grace 10ms;',
                     init_worker_by_lua_block => <<"LUA");
assert(ngx.load_ffi("$ver", nil, {unpin = true}))
ngx.log(ngx.WARN, "loaded")
LUA
ok(FFITest::wait_for_log('loaded', 10, 2), 'both workers up');
my @pids = FFITest::worker_pids();

my $ok = 0;
$ok += cycle($_) for 1 .. 100;
is($ok, 100, '100 warm-up reloads');
ok(settle(), 'settled after the warm-up');
my %before = map { $_ => footprint($_) } @pids;

$ok = 0;
$ok += cycle($_) for 101 .. 100 + $CYCLES;
is($ok, $CYCLES, "$CYCLES reloads answered 200");
ok(settle(), 'settled: one image, only serving runtimes');

my (undef, $body) = FFITest::http('GET', '/v');
is($body, ((100 + $CYCLES) % 2 ? "v2\n" : "v1\n"), "the last version serves");

for my $pid (@pids) {
    my $a = footprint($pid);
    my $b = $before{$pid};
    note("worker $pid: fds $b->{fds} -> $a->{fds}, maps $b->{maps} -> "
         . "$a->{maps}, rss $b->{rss} kB -> $a->{rss} kB");
    is($a->{fds}, $b->{fds}, "worker $pid: open files flat");

  SKIP: {
        # ASan's quarantine and allocator regions grow by design
        skip 'memory figures mean nothing under AddressSanitizer', 2
            if ($ENV{ASAN_OPTIONS} // '') ne '';

        # a leak per reload would show by the thousand; what may still
        # come is glibc's malloc arenas for new threads (up to 8 per CPU,
        # two mappings each), made as contention on a loaded machine asks
        cmp_ok(abs($a->{maps} - $b->{maps}), '<=', 32,
               "worker $pid: mappings flat ($b->{maps} -> $a->{maps})");
        cmp_ok($a->{rss}, '<=', $b->{rss} * 1.05 + 512,
               "worker $pid: RSS flat ($b->{rss} -> $a->{rss} kB)");
    }
}

FFITest::stop_nginx();
done_testing();
