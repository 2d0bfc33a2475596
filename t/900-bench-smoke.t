# make bench's harness in its tiny mode (BENCH_TINY=1: a few calls per row,
# wrk runs of 1 s): on a clean clone it starts every runtime
# (C, Go, Rust, Python, Java, Node.js through ffi; C, Go and Python
# unix-socket servers; pure Lua) in every CPU mode and writes its report.
# No figure is judged here: only that every row was measured, without an
# error, and that the report names every target of issue 16. The metrics
# A/B of issue 15 (the module before them, built from the repository's
# history, against this one) runs too where the history has that commit.
use strict;
use warnings;

use lib 't/lib';
use FFITest;
use File::Temp qw(tempdir);
use JSON::PP;
use Test::More;

my $repo = FFITest::repo();
my $out = tempdir('ffi-bench-smoke-XXXXXX', TMPDIR => 1,
                  CLEANUP => !$ENV{FFI_TEST_KEEP});

my @ffi = qw(c go rust python java nodejs);
my @uds = qw(c go python);
my @ways = ((map { "ffi-$_" } @ffi), (map { "uds-$_" } @uds), 'lua');

# the nginx and module under test (t/memcheck/run.sh sets both): the bench
# must not pass NGINX on to nginx, which reads it as inherited sockets
local $ENV{BENCH_NGINX} = $ENV{NGINX} || 'nginx';
local $ENV{BENCH_MODULE} = $ENV{FFI_MODULE}
    || "$repo/build/ngx_http_lua_ffi_module.so";
delete local $ENV{NGINX};
local $ENV{BENCH_TINY} = 1;
local $ENV{BENCH_OUT} = $out;
# its own servers' folder: a make bench may run at the same time
local $ENV{BENCH_PREFIX} = "$out/run";

sub slurp {
    my ($path) = @_;
    open my $fh, '<', $path or return undef;
    local $/;
    return <$fh>;
}

my $report_before = slurp("$repo/bench/results.md");

# a failure guard only: the tiny run takes about a minute
my $log = `cd '$repo' && timeout 600 bash bench/run.sh 2>&1`;
my $rc = $? >> 8;
is($rc, 0, 'bench/run.sh in tiny mode exits 0')
    or diag($log);

ok(-s "$out/results.md", 'results.md written to BENCH_OUT');

my $json = slurp("$out/results.json");
my $run = $json ? decode_json($json)->{results} : {};

my @modes = qw(unpinned pinned);
# mode (c) exists only where the module knows ffi_runtime_cpus
# (and mode (d), every CPU for runtime threads)
my $ncpu = `nproc` + 0;    # the CPUs this process may use, as floor's
my $inherit = $log =~ /ffi_runtime_cpus inherit(?: and every CPU)?: measured/;
like($log, qr/ffi_runtime_cpus inherit(?: and every CPU)?: (measured|skipped)/,
     'the harness says whether it measures ffi_runtime_cpus');
push @modes, 'inherit' if $inherit;
push @modes, 'every' if $inherit && $ncpu > 1;

for my $mode (@modes) {
    for my $way (@ways) {
        next if $way eq 'lua';
        for my $size (512, 102400) {
            my @r = grep { $_->{config} eq $mode && $_->{way} eq $way
                           && $_->{size} == $size } @{$run->{seq} || []};
            ok(@r == 1 && $r[0]{us} > 0,
               "sequential $mode $way $size B measured");
        }
    }
    for my $way (@ways) {
        for my $conns (32, 256) {
            my @r = grep { $_->{config} eq $mode && $_->{way} eq $way
                           && $_->{conns} == $conns } @{$run->{wrk} || []};
            ok(@r == 1 && $r[0]{requests} > 0
               && $r[0]{errors} + $r[0]{non2xx} == 0,
               "wrk $mode $way c$conns: requests, none failed");
        }
    }
}

# the metrics A/B: both sides measured, or skipped for want of history
my $history = system("git -C '$repo' rev-parse -q --verify "
                     . "'e596f2d^{commit}' >/dev/null 2>&1") == 0;
my $mcost = $run->{mcost} || {};
if ($history) {
    like($log, qr/== metrics cost \(pinned\): .* module at e596f2d/,
         'the metrics A/B ran against the module at e596f2d');
    for my $side (qw(before after)) {
        my $got = $mcost->{$side} || {};
        ok(@{$got->{seq} || []} >= 1 && $got->{us} > 0,
           "metrics A/B $side: sequential 512 B measured");
        ok(@{$got->{rps} || []} >= 1 && $got->{requests} > 0
           && $got->{errors} == 0,
           "metrics A/B $side: wrk c32 requests, none failed");
    }
} else {
    like($mcost->{skipped} // '', qr/not a git checkout/,
         'the metrics A/B says why it was skipped');
}

ok($run->{reload} && $run->{reload}{lost} == 0,
   'reloads under load, none lost');
ok($run->{reload_notrial} && $run->{reload_notrial}{lost} == 0
   && $run->{reload_notrial}{t200_median} > 0,
   'reloads under load with ffi_trial off, none lost');
ok($run->{memory} && $run->{memory}{after_reloads2} > 0, 'memory measured');

# the machine's floor, before nginx: every hand-off case (two of them
# need two CPUs), then process starts idle and with every CPU busy
my @floor = @{ $run->{floor} // [] };
my @handoffs = grep { $_->{what} eq 'handoff' } @floor;
my @spawns = grep { $_->{what} eq 'spawn' } @floor;
is(scalar @handoffs, 5, 'bench/floor measured 5 hand-off cases')
    if $ncpu >= 2;
ok(!grep({ !($_->{rounds} > 0 && $_->{wall_us} > 0 && $_->{cpu_us} > 0) }
         @handoffs), 'every hand-off case has rounds, wall and CPU time');
is(scalar(grep { defined $_->{neighbour_lost_us} } @handoffs),
   $ncpu >= 2 ? 2 : 0, 'the busy-neighbour cases say what the neighbour lost');
is(join(',', map { $_->{busy_per_cpu} } @spawns), '0,1',
   'process starts measured idle, then with every CPU busy');
ok(!grep({ !($_->{median_ms} > 0 && $_->{p90_ms} >= $_->{median_ms}) }
         @spawns), 'process starts have a median and a p90');

my $md = slurp("$out/results.md") // '';
like($md,
     qr/## 7\. What limits throughput and reload time\n\n### The machine's floor/,
     'results.md has section 7 and the floor');
like($md,
     qr/\| futex, two CPUs, busy neighbour \| [\d.]+ \| [\d.]+ \| [\d.]+ \|/,
     'the floor table has the busy-neighbour row')
    if $ncpu >= 2;
like($md, qr/### Reload under load\n\nA reload of a changed file tries it/,
     'section 7 explains the reload with the process start');
like($md, qr/\| POST -> 200, another nginx with `ffi_trial off` .* ms \|\n/,
     'section 3 has the reload without the trial');
for my $target (
    qr/sequential 512 B, .*ffi C >= 10x uds C/,
    qr/sequential 100 KB, .*ffi C >= 8x uds C/,
    qr/wrk c32, .*ffi C >= 90% of pure Lua/,
    qr/wrk c32, .*ffi Go >= 85% of pure Lua/,
    qr/wrk c32, .*ffi Go >= 2x uds Go/,
    qr/wrk c32, .*ffi Python >= 2x uds Python/,
    qr/reload: 200 within 5 ms \(median\)/,
    qr/reload: no request lost/,
    qr/memory: RSS flat/,
    qr/metrics cost within noise \(issue 15\)/,
    ($history ? qr/## 6\. Per-call cost of the metrics/
              : qr/metrics cost within noise.*not measured/))
{
    like($md, $target, "results.md has the target $target");
}

# the repository's own report is not touched by a smoke run
ok(defined $report_before
   && slurp("$repo/bench/results.md") eq $report_before,
   'bench/results.md unchanged');

done_testing();
