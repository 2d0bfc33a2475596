# GET /ffi/metrics with 2 workers: Prometheus text that promtool accepts and
# a real Prometheus server scrapes; every counter equals the calls this test
# made (ok, rc != 0, timeouts, queue full, client aborts, stray answers,
# the latency histogram's count), summed over both workers; reloads counted
# by outcome; nothing goes backwards across a kill -9 and `nginx -s reload`.
use lib 't/lib';
use lib 't/lib/misbehave';
use FFITest;
use MBTest qw(mb_lib release install reload workers wait_until);
use File::Temp qw(tempdir);
use HTTP::Tiny;
use IO::Socket::INET;
use JSON::PP;
use POSIX qw(WNOHANG);
use Test::More;

my $root = FFITest::servroot();
my $dir = "$root/lib";
mkdir $dir, 0755;
my $ver = "$dir/libver.so";
my $go = "$dir/libgoish.so";
my $twice = mb_lib('libmb_twice.so');

# a Go-looking library: a .go.buildinfo section pins it for life (409)
system("printf 'go1.19' > $dir/buildinfo") == 0 or die;
for my $v ('v1', 'v2') {
    system('objcopy', '--add-section', ".go.buildinfo=$dir/buildinfo",
           release($v), "$dir/goish-$v.so") == 0 or die;
}
install("$dir/goish-v1.so", $go);
install(release('v1'), $ver);

my $config = <<"CONF";
lua_check_client_abort on;
location /ffi/ { ffi_admin; allow 127.0.0.1; deny all; }
location = /calls {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("ffi_test", "metrics"))
        for i = 1, tonumber(ngx.var.arg_ok) do
            local ok, res = rt:call("echo:" .. i)
            assert(ok and res == tostring(i), "echo " .. i)
        end
        for i = 1, tonumber(ngx.var.arg_rc) do
            local ok, rc = rt:call("rc:3")
            assert(not ok and rc == 3, "rc 3")
        end
        ngx.say(ngx.worker.pid())
    }
}
location = /timeout {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("ffi_test", "metrics"))
        local ok, err = rt:call("sleep:2000:late", 0.01)
        ngx.say(tostring(ok), " ", tostring(err))
    }
}
location = /full {
    content_by_lua_block {
        -- its poller waits at a gate: the first call stays in the queue
        local gate = "q" .. ngx.var.arg_n
        local held = assert(ngx.load_ffi("ffi_test", "hold=" .. gate,
                                         {max_queue = 1}))
        local rt = assert(ngx.load_ffi("ffi_test", "metrics"))
        local th = ngx.thread.spawn(function()
            return held:call("echo:queued")
        end)
        local ok, err = held:call("echo:refused")
        assert(rt:call("release:" .. gate))
        local _, ok2, res2 = ngx.thread.wait(th)
        ngx.say(tostring(ok), " ", tostring(err), " ", tostring(ok2), " ",
                tostring(res2))
    }
}
location = /slow {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("ffi_test", "trace"))
        local ok = rt:call("sleep:3000:" .. ngx.var.arg_tag)
        ngx.say(tostring(ok))
    }
}
location = /twice {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("$twice"))
        local ok, res = rt:call("now:x")
        ngx.say(tostring(ok), " ", tostring(res))
    }
}
location = /lib {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi(ngx.unescape_uri(ngx.var.arg_path), nil,
                                       {unpin = true}))
        local ok, res = rt:call("version")
        ngx.say(tostring(ok), " ", tostring(res))
    }
}
CONF

# the kill -9 below leaves its [alert]; any other is checked at the end
FFITest::start_nginx(workers => 2, config => $config, allow_alerts => 1);
my @pids = workers(2);
is(scalar @pids, 2, 'two workers');

sub scrape {
    my ($status, $body, $headers) = FFITest::http('GET', '/ffi/metrics');
    return ($status, $body, $headers);
}

# { "name" => [ [ {labels}, value ], ... ] }
sub parse {
    my ($text) = @_;
    my %m;
    for my $line (split /\n/, $text) {
        next if $line =~ /^#/ || $line eq '';
        $line =~ /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/
            or die "bad line: $line\n";
        my ($name, $labels, $value) = ($1, $2 // '', $3);
        my %l;
        while ($labels =~ /(\w+)="((?:[^"\\]|\\.)*)"/g) {
            $l{$1} = $2;
        }
        push @{ $m{$name} }, [\%l, $value];
    }
    return \%m;
}

# the sum of a family's series whose labels include %want
sub total {
    my ($m, $name, %want) = @_;
    my $sum = 0;
    SERIES: for my $s (@{ $m->{$name} || [] }) {
        for my $k (keys %want) {
            next SERIES unless defined $s->[0]{$k} && $s->[0]{$k} eq $want{$k};
        }
        $sum += $s->[1];
    }
    return $sum;
}

sub metrics { my (undef, $body) = scrape(); return parse($body) }

# the counters of ffi_test that this test predicts
my %want = (calls => 0, ok => 0, error => 0, timeouts => 0, full => 0,
            orphaned => 0, timed => 0);

sub seen {
    my ($m) = @_;
    $m ||= metrics();
    my %l = (lib => 'ffi_test');
    return {
        calls    => total($m, 'ffi_calls_total', %l),
        ok       => total($m, 'ffi_answers_total', %l, outcome => 'ok'),
        error    => total($m, 'ffi_answers_total', %l, outcome => 'error'),
        timeouts => total($m, 'ffi_timeouts_total', %l),
        full     => total($m, 'ffi_queue_full_total', %l),
        orphaned => total($m, 'ffi_orphaned_calls_total', %l),
        timed    => total($m, 'ffi_call_duration_seconds_count', %l),
    };
}

# late answers come on their own time: await them, never sleep
sub settled {
    my ($what) = @_;
    my $got;
    wait_until(sub { $got = seen(); join(',', map { $got->{$_} } sort keys %want)
                     eq join(',', map { $want{$_} } sort keys %want) }, 20);
    is_deeply($got, \%want, "$what: counters match the calls made");
}

# --- the endpoint itself
my ($status, $body, $headers) = scrape();
is($status, 200, 'GET /ffi/metrics: 200');
is($headers->{'content-type'}, 'text/plain; version=0.0.4',
   'Prometheus text exposition 0.0.4');
($status) = FFITest::http('POST', '/ffi/metrics');
is($status, 405, 'POST /ffi/metrics: 405');

# --- calls on both workers: ok and rc != 0
# (the kernel picks the worker of each connection, and may favour one for
# a while: ask until both answered, a deadline only against a hang)
my %by_worker;
my $requests = 0;
my $until = time + FFITest::deadline(60);
while (time < $until && (keys %by_worker < 2 || $requests < 10)) {
    my ($st, $pid) = FFITest::http('GET', '/calls?ok=5&rc=2');
    is($st, 200, 'calls') if $st != 200;
    chomp $pid;
    $by_worker{$pid}++;
    $requests++;
}
is(scalar keys %by_worker, 2, "both workers served ($requests requests)");
$want{calls} += 7 * $requests;
$want{ok} += 5 * $requests;
$want{error} += 2 * $requests;
$want{timed} += 7 * $requests;
settled('ok and rc != 0');

my $m = metrics();
my @calls = grep { $_->[0]{lib} eq 'ffi_test' && $_->[0]{cfg} ne 'nil' }
            @{ $m->{ffi_calls_total} };
is(scalar @calls, 1, 'one series for the cfg, both workers summed');
like($calls[0][0]{cfg}, qr/^[0-9a-f]{8}$/, 'cfg shown as a short hash');
(undef, $body) = scrape();
unlike($body, qr/cfg="metrics"/, 'never the cfg itself');
is(total($m, 'ffi_call_duration_seconds_bucket', lib => 'ffi_test',
         le => '+Inf'), $want{timed}, 'histogram: +Inf bucket = count');

# --- timeouts: the late answers still count as answers
for (1 .. 2) {
    my ($st, $b) = FFITest::http('GET', '/timeout');
    is($b, "false timeout\n", 'call timed out');
}
$want{calls} += 2;
$want{timeouts} += 2;
$want{ok} += 2;
settled('timeouts');

# --- queue full
($status, $body) = FFITest::http('GET', '/full?n=1');
is($body, "false queue full true queued\n", 'second call refused: queue full');
$want{calls} += 2;
$want{ok} += 2;
$want{timed} += 2;
$want{full} += 1;
settled('queue full');

# --- a client that goes away while its call runs (answered 3 s later, long
#     after nginx saw the connection close, even on a loaded machine)
my $conns = FFITest::begin_requests(1, 'GET', '/slow?tag=abort1');
ok(FFITest::wait_for_log('got sleep:3000:abort1'), 'slow call taken');
FFITest::close_requests($conns);
$want{calls} += 1;
$want{orphaned} += 1;
$want{ok} += 1;
settled('client abort');

# --- stray answers: a runtime that answers every task twice
($status, $body) = FFITest::http('GET', '/twice');
is($body, "true x\n", 'first answer taken');
ok(wait_until(sub { total(metrics(), 'ffi_stray_answers_total',
                          lib => $twice) == 1 }, 20),
   'the second answer: dropped and counted');

# --- gauges at rest
$m = metrics();
is(total($m, 'ffi_calls_in_flight'), 0, 'nothing in flight');
is(total($m, 'ffi_queued_tasks'), 0, 'nothing queued');
ok(total($m, 'ffi_worker_runtimes', state => 'serving') >= 2,
   'serving runtimes shown per worker');
ok(total($m, 'ffi_worker_mapped_images') >= 2, 'mapped images shown');

# --- promtool accepts the whole exposition
($status, $body) = scrape();
my $file = "$root/metrics.txt";
open my $fh, '>', $file or die "$file: $!\n";
print $fh $body;
close $fh;
my $lint = `promtool check metrics < $file 2>&1`;
is($?, 0, 'promtool check metrics: exit 0') or diag($lint);
is($lint, '', 'promtool check metrics: no complaint') or diag($lint);

# --- reloads by outcome
sub lib_calls {
    my ($path, $n) = @_;
    for (1 .. $n) {
        my ($st, $b) = FFITest::http('GET', '/lib?path=' . MBTest::escape($path));
        die "GET /lib $path: $st $b" unless $st == 200;
    }
}
lib_calls($ver, 4);
lib_calls($go, 4);

my ($st, $json) = reload('ffi_test');
is($st, 200, 'reload ffi_test: 200 (same file, runtimes restart)');
install(release('v2'), $ver);
($st) = reload($ver);
is($st, 200, 'reload libver v2: 200');
install(release('fail'), $ver);
($st) = reload($ver);
is($st, 422, 'reload libver whose libffi_init fails: 422');
install("$dir/goish-v2.so", $go);
($st) = reload($go);
is($st, 409, 'reload of a pinned library, changed: 409');

$m = metrics();
is(total($m, 'ffi_reloads_total', lib => 'ffi_test', outcome => 'ok'), 1,
   'ffi_test: one reload ok');
is(total($m, 'ffi_library_version', lib => 'ffi_test'), 2,
   'ffi_test: version 2');
ok(total($m, 'ffi_library_last_reload_timestamp_seconds', lib => 'ffi_test')
   >= time - 600, 'ffi_test: last reload time');
is(total($m, 'ffi_reloads_total', lib => $ver, outcome => 'ok'), 1,
   'libver: one reload ok');
is(total($m, 'ffi_reloads_total', lib => $ver, outcome => 'refused'), 1,
   'libver: one reload refused');
is(total($m, 'ffi_reloads_total', lib => $go, outcome => 'conflict'), 1,
   'goish: one conflict');
is(total($m, 'ffi_reloads_total', lib => $go, outcome => 'ok')
   + total($m, 'ffi_reloads_total', lib => $go, outcome => 'refused'), 0,
   'goish: nothing else');
is(total($m, 'ffi_library_version', lib => $ver), 2, 'libver: version 2');

# the runtimes of ffi_test's version 1 are gone: their counts stay
$want{calls} += 0;
settled('after a reload');
($status) = FFITest::http('GET', '/calls?ok=1&rc=0');
$want{calls} += 1;
$want{ok} += 1;
$want{timed} += 1;
settled('calls on version 2');
# a reload with the same file restarts runtimes on the same image: the
# series keep its version; a new file is a version with series of its own
is(total(metrics(), 'ffi_calls_total', lib => 'ffi_test', version => '2'), 0,
   'same file: the series keep the image version');
lib_calls($ver, 3);
$m = metrics();
is(total($m, 'ffi_calls_total', lib => $ver, version => '1'), 4,
   'libver version 1: its calls stay counted');
is(total($m, 'ffi_calls_total', lib => $ver, version => '2'), 3,
   'libver version 2: a series of its own');

# --- a Prometheus server scrapes it and answers PromQL over it
sub free_port {
    my $s = IO::Socket::INET->new(Listen => 1, LocalAddr => '127.0.0.1',
                                  LocalPort => 0, ReuseAddr => 1) or die $!;
    my $p = $s->sockport;
    close $s;
    return $p;
}

my $prom_dir = tempdir(CLEANUP => 1);
my $prom_port = free_port();
my $port = FFITest::port();
open my $pc, '>', "$prom_dir/prometheus.yml" or die $!;
print $pc <<"YML";
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: ffi
    metrics_path: /ffi/metrics
    static_configs:
      - targets: ['127.0.0.1:$port']
YML
close $pc;

my $prom = fork // die "fork: $!\n";
if ($prom == 0) {
    open STDOUT, '>', "$prom_dir/prometheus.log";
    open STDERR, '>&', \*STDOUT;
    exec('/usr/bin/prometheus', "--config.file=$prom_dir/prometheus.yml",
         "--storage.tsdb.path=$prom_dir/data",
         "--web.listen-address=127.0.0.1:$prom_port") or exit 127;
}
END { if ($prom) { kill 'TERM', $prom; waitpid $prom, 0 } }

my $ua = HTTP::Tiny->new(timeout => 10);
sub promql {
    my ($q) = @_;
    my $res = $ua->get("http://127.0.0.1:$prom_port/api/v1/query?query="
                       . MBTest::escape($q));
    return undef unless $res->{success};
    my $r = eval { decode_json($res->{content}) } or return undef;
    return undef unless $r->{status} eq 'success'
                        && @{ $r->{data}{result} };
    return $r->{data}{result}[0]{value}[1];
}

my $up = wait_until(sub {
    my $res = $ua->get("http://127.0.0.1:$prom_port/api/v1/targets");
    $res->{success} && $res->{content} =~ /"health":"up"/;
}, 60);
ok($up, 'Prometheus scraped /ffi/metrics successfully')
    or diag(`tail -20 $prom_dir/prometheus.log`);
my $calls_q = 'sum(ffi_calls_total{lib="ffi_test"})';
my $seen_q;
wait_until(sub { $seen_q = promql($calls_q); defined $seen_q
                 && $seen_q == $want{calls} }, 30);
is($seen_q, $want{calls}, "PromQL $calls_q = the calls made");
my $err_q = promql('sum by (lib) (ffi_answers_total{outcome="error",'
                   . 'lib="ffi_test"})');
is($err_q, $want{error}, 'PromQL: answers with rc != 0');

# --- kill -9 of a worker: its counts stay
my $before = seen();
my $victim = $pids[0];
kill 'KILL', $victim;
ok(wait_until(sub { my @p = FFITest::worker_pids();
                    @p == 2 && !grep { $_ == $victim } @p }, 20),
   'the killed worker was replaced');
is_deeply(seen(), $before, 'kill -9: no counter went back');

%by_worker = ();
$requests = 0;
while ($requests < 200 && (keys %by_worker < 2 || $requests < 10)) {
    my ($st, $pid) = FFITest::http('GET', '/calls?ok=1&rc=1');
    chomp $pid;
    $by_worker{$pid}++;
    $requests++;
}
is(scalar keys %by_worker, 2, 'both workers serve after the respawn');
$want{calls} += 2 * $requests;
$want{ok} += $requests;
$want{error} += $requests;
$want{timed} += 2 * $requests;
settled('after kill -9');

# --- nginx -s reload: new workers, the same counts
my @old = FFITest::worker_pids();
FFITest::signal('HUP');
ok(wait_until(sub { my @p = FFITest::worker_pids();
                    @p == 2 && !grep { my $o = $_; grep { $_ == $o } @p }
                                     @old }, 30),
   'HUP: two new workers, the old ones gone');
settled('after nginx -s reload');
($status) = FFITest::http('GET', '/calls?ok=3&rc=0');
$want{calls} += 3;
$want{ok} += 3;
$want{timed} += 3;
settled('calls after nginx -s reload');
is(total(metrics(), 'ffi_reloads_total', lib => 'ffi_test', outcome => 'ok'),
   1, 'HUP: reload counts kept');

FFITest::stop_nginx('metrics');
my @bad = grep { !/worker process $victim exited on signal 9/ }
          grep { /\[alert\]|\[emerg\]|exited on signal|segfault/ }
          split /\n/, FFITest::error_log();
is_deeply(\@bad, [], 'no alert but the kill -9, no crash');

done_testing();
