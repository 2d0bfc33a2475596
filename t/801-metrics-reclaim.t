# The metrics table holds 1024 series: 1,100 runtimes that come and go
# (each its own cfg, one call, then __unload) fill it with series of
# runtimes that are gone; later ones take the oldest slots, whose counts
# move to the library's version="retired" series. No call is lost from the
# sums, and the output stays valid for promtool.
use lib 't/lib';
use lib 't/lib/misbehave';
use FFITest;
use MBTest qw(wait_until);
use Test::More;

my $N = 1100;

my $config = <<'CONF';
location /ffi/ { ffi_admin; allow 127.0.0.1; deny all; }
location = /many {
    content_by_lua_block {
        for i = tonumber(ngx.var.arg_from), tonumber(ngx.var.arg_to) do
            local rt = assert(ngx.load_ffi("ffi_test", "n=" .. i))
            local ok, res = rt:call("echo:" .. i)
            assert(ok and res == tostring(i), "echo " .. i)
            rt:__unload()
        end
        ngx.say("done")
    }
}
CONF

FFITest::start_nginx(workers => 2, config => $config,
                     http_config => 'ffi_close_grace 10ms;');

sub totals {
    my (undef, $body) = FFITest::http('GET', '/ffi/metrics');
    my ($calls, $series, $retired, $timed) = (0, 0, 0, 0);
    for (split /\n/, $body) {
        if (/^ffi_calls_total\{lib="ffi_test",version="([^"]+)".*\} (\d+)$/) {
            $calls += $2;
            $series++;
            $retired += $2 if $1 eq 'retired';
        }
        $timed += $1
            if /^ffi_call_duration_seconds_count\{lib="ffi_test".*\} (\d+)$/;
    }
    return { calls => $calls, series => $series, retired => $retired,
             timed => $timed, body => $body };
}

for (my $from = 1; $from <= $N; $from += 100) {
    my $to = $from + 99;
    my ($st, $body) = FFITest::http('GET', "/many?from=$from&to=$to",
                                    undef, undef, 60);
    is($body, "done\n", "runtimes $from-$to: one call each") or last;
}

my $t;
ok(wait_until(sub { $t = totals(); $t->{retired} > 0 }, 30),
   'a full table moved the oldest counts to version="retired"');
is($t->{calls}, $N, "calls summed: $N, none lost");
is($t->{timed}, $N, "histogram count: $N");
ok($t->{series} <= 1024 + 1, "at most 1024 series and the retired one "
   . "($t->{series})");

my $file = FFITest::servroot() . '/metrics.txt';
open my $fh, '>', $file or die "$file: $!\n";
print $fh $t->{body};
close $fh;
my $lint = `promtool check metrics < $file 2>&1`;
is($?, 0, 'promtool check metrics: exit 0') or diag($lint);

# the calls of one more runtime land in a series of their own
FFITest::http('GET', '/many?from=5000&to=5000');
ok(wait_until(sub { totals()->{calls} == $N + 1 }, 10),
   'one more call counted');

FFITest::stop_nginx('metrics reclaim');

done_testing();
