# Soak (make soak; skipped unless FFI_SOAK=1): 1,000,000 calls and 1,000
# reload cycles of one library, interleaved, with 2 workers: open files,
# mappings and RSS of each worker stay flat (within 5%).
use lib 't/lib';
use lib 't/lib/misbehave';
use FFITest;
use MBTest qw(release install reload status workers wait_until footprint);
use Test::More;
use Time::HiRes qw(time);

plan skip_all => 'a soak: run it with make soak (FFI_SOAK=1)'
    unless $ENV{FFI_SOAK};

my $ROUNDS = $ENV{FFI_SOAK_ROUNDS} || 100;
my $CALLS = 5000;           # per request; 2 requests a round
my $RELOADS = 10;           # per round

my $root = FFITest::servroot();
my $dir = "$root/lib";
mkdir $dir, 0755;
my $ver = "$dir/libver.so";

my $config = <<"CONF";
location /ffi/ { ffi_admin; allow 127.0.0.1; deny all; }
location = /loop {
    content_by_lua_block {
        -- the calls of one request go one after the other in one coroutine
        local rt = assert(ngx.load_ffi("$ver", nil, {unpin = true}))
        local n, bad = tonumber(ngx.var.arg_n), 0
        local req = "echo " .. ngx.var.arg_tag
        for i = 1, n do
            local ok, res = rt:call(req)
            if not ok or res ~= req then
                bad = bad + 1
            end
        end
        collectgarbage()
        ngx.say(n, " calls, ", bad, " bad")
    }
}
CONF

install(release('v1'), $ver);
FFITest::start_nginx(workers => 2, config => $config,
                     http_config => 'ffi_close_grace 10ms;',
                     init_worker_by_lua_block => <<"LUA");
assert(ngx.load_ffi("$ver", nil, {unpin = true}))
ngx.log(ngx.WARN, "loaded")
LUA
ok(FFITest::wait_for_log('loaded', 10, 2), 'both workers up');
my @pids = workers(2);

my ($calls, $bad_calls, $reloads, $bad_reloads) = (0, 0, 0, 0);

sub round {
    my ($r) = @_;
    for my $res (FFITest::concurrent(2, 'GET',
                                     sub { "/loop?n=$CALLS&tag=$r.$_[0]" },
                                     undef, undef, 60))
    {
        if (($res->[1] // '') =~ /^(\d+) calls, (\d+) bad\n\z/) {
            $calls += $1;
            $bad_calls += $2;
        } else {
            $bad_calls += $CALLS;
            diag("round $r: " . ($res->[1] // 'none'));
        }
    }
    for my $i (1 .. $RELOADS) {
        install(release(++$reloads % 2 ? 'v2' : 'v1'), $ver);
        my ($status, undef, $body) = reload($ver);
        next if $status == 200;
        $bad_reloads++;
        diag("reload $reloads: $status $body");
    }
}

# every old runtime drained and closed: one image, serving runtimes only
sub settle {
    return wait_until(sub {
        my $st = status();
        my @libs = map { @{ $_->{libraries} } } @{ $st->{workers} || [] };
        return @libs == 2 && !grep {
            $_->{mapped_images} != 1
            || grep { $_->{state} ne 'serving' } @{ $_->{runtimes} }
        } @libs;
    }, 10);
}

# warm-up: allocators and caches reach their working size
round($_) for 1 .. 10;
ok(settle(), 'settled after the warm-up');
my %before = map { $_ => footprint($_) } @pids;
($calls, $bad_calls, $reloads, $bad_reloads) = (0, 0, 0, 0);

my $t0 = time;
round($_) for 1 .. $ROUNDS;
my $secs = time - $t0;
is($calls, $ROUNDS * 2 * $CALLS, "$calls calls");
is($bad_calls, 0, 'every call answered with its request');
is($reloads, $ROUNDS * $RELOADS, "$reloads reloads");
is($bad_reloads, 0, 'every reload answered 200');
ok(settle(), 'settled: one image, only serving runtimes');
note(sprintf "%d calls and %d reloads in %.1f s", $calls, $reloads, $secs);

for my $pid (@pids) {
    my $a = footprint($pid);
    my $b = $before{$pid};
    note("figures: worker $pid: fds $b->{fds} -> $a->{fds}, maps "
         . "$b->{maps} -> $a->{maps}, rss $b->{rss} kB -> $a->{rss} kB");
    is($a->{fds}, $b->{fds}, "worker $pid: open files flat");
    cmp_ok($a->{maps}, '<=', $b->{maps} * 1.05,
           "worker $pid: mappings within 5% ($b->{maps} -> $a->{maps})");
    cmp_ok($a->{rss}, '<=', $b->{rss} * 1.05,
           "worker $pid: RSS within 5% ($b->{rss} -> $a->{rss} kB)");
}

FFITest::stop_nginx('soak');
done_testing();
