# 20 hot reloads (alternating versions, 10 through the admin endpoint and
# 10 by file drop with ffi_watch on) while wrk drives 64 connections at an
# ffi location all along: no request fails or is lost, every answer comes
# from one version or the other.
use lib 't/lib';
use lib 't/lib/misbehave';
use FFITest;
use MBTest qw(release install reload status worker_libs workers wait_until);
use Test::More;
use POSIX qw(WNOHANG);
use Time::HiRes qw(time);

my $WRK = 'wrk';
my $CONNS = 64;
# wrk runs until the reloads are done and is stopped then (SIGINT: it
# reports as at the end of its time); its -d only guards against a hang
my $SECONDS = 600;
my $RELOADS = 20;
my $PER_VERSION = 500;      # answers each version gives before the next
my $SPACING = 0.5;          # seconds between reloads: spread over the run

plan skip_all => 'wrk is not installed (Debian package wrk)'
    unless grep { -x "$_/$WRK" } split /:/, $ENV{PATH};

my $root = FFITest::servroot();
my $dir = "$root/lib";
mkdir $dir, 0755;
my $ver = "$dir/libver.so";

my $config = <<"CONF";
location /ffi/ { ffi_admin; allow 127.0.0.1; deny all; }
location = /v {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("$ver", nil, {unpin = true}))
        local ok, res = rt:call("version")
        local counts = ngx.shared.counts
        if not ok then
            counts:incr("failed", 1, 0)
            ngx.status = 500
            ngx.say("failed: ", tostring(res))
            return
        end
        counts:incr(res, 1, 0)
        ngx.say(res)
    }
}
location = /counts {
    content_by_lua_block {
        local counts = ngx.shared.counts
        ngx.say("v1=", counts:get("v1") or 0, " v2=", counts:get("v2") or 0,
                " failed=", counts:get("failed") or 0)
    }
}
CONF

# wrk counts the answers by body in each thread, and sums them at the end
my $script = "$root/count.lua";
open my $f, '>', $script or die;
print $f <<'LUA';
local threads = {}

function setup(thread)
    table.insert(threads, thread)
end

function init(args)
    v1, v2, other = 0, 0, 0
end

function response(status, headers, body)
    if status == 200 and body == "v1\n" then
        v1 = v1 + 1
    elseif status == 200 and body == "v2\n" then
        v2 = v2 + 1
    else
        other = other + 1
    end
end

function done(summary, latency, requests)
    local a, b, o = 0, 0, 0
    for _, t in ipairs(threads) do
        a, b, o = a + t:get("v1"), b + t:get("v2"), o + t:get("other")
    end
    local e = summary.errors
    io.write(string.format("answers v1=%d v2=%d other=%d\n", a, b, o))
    io.write(string.format("requests=%d connect=%d read=%d write=%d "
                           .. "status=%d timeout=%d\n", summary.requests,
                           e.connect, e.read, e.write, e.status, e.timeout))
end
LUA
close $f;

install(release('v1'), $ver);
FFITest::start_nginx(workers => 2, config => $config,
                     http_config => "lua_shared_dict counts 1m;\n"
                                    . "ffi_watch on;\nffi_watch_delay 1s;\n"
                                    . "ffi_close_grace 50ms;",
                     init_worker_by_lua_block => <<"LUA");
assert(ngx.load_ffi("$ver", nil, {unpin = true}))
ngx.log(ngx.WARN, "loaded")
LUA
ok(FFITest::wait_for_log('loaded', 10, 2), 'both workers up');
my @pids = sort { $a <=> $b } workers(2);

sub counts {
    my (undef, $body) = FFITest::http('GET', '/counts');
    return { map { split /=/ } split ' ', $body // '' };
}

# --- wrk, in the background for the whole run
my $out = "$root/wrk.out";
my $t0 = time;
my $wrk = fork;
die "fork: $!" unless defined $wrk;
# a test that dies on the way leaves no wrk running for its whole -d
END { kill 'KILL', $wrk if $wrk }
if ($wrk == 0) {
    open STDOUT, '>', $out or POSIX::_exit(126);
    open STDERR, '>&', \*STDOUT;
    { exec $WRK, '-t', '2', '-c', $CONNS, '-d', "${SECONDS}s",
         '--timeout', FFITest::deadline(5) . 's', '-s', $script,
         'http://127.0.0.1:' . FFITest::port() . '/v' }
    POSIX::_exit(127);
}

ok(wait_until(sub { counts()->{v1} >= $PER_VERSION }, 5),
   "wrk is driving v1 ($PER_VERSION answers)");

my (@admin, @drop);
for my $i (1 .. $RELOADS) {
    my $v = $i % 2 ? 'v2' : 'v1';
    my $version = $i + 1;
    my $seen = counts()->{$v} // 0;

    # pacing, not synchronisation: each version serves for a while
    my $at = $t0 + 1 + $i * $SPACING;
    sleep $at - time if $at > time;
    install(release($v), $ver);

    if ($i % 4 == 1 || $i % 4 == 2) {
        # admin: the POST comes before the watcher's delay (1 s, ten times
        # what a loaded ASan run needs) is up; the watcher then finds the
        # same bytes serving and does nothing
        my ($status, $json, $body) = reload($ver);
        push @admin, $status == 200 && $json->{version} == $version
                     ? 'ok' : "reload $i: $status $body";
    } else {
        push @drop, FFITest::wait_for_log(
                        qr/"\Q$ver\E" reloaded: version $version\b/, 5)
                    ? 'ok' : "drop $i: no reload to version $version";
    }

    wait_until(sub { (counts()->{$v} // 0) >= $seen + $PER_VERSION }, 5)
        or diag("reload $i: $v gave no $PER_VERSION answers in 5 s");
}
my $reloads_took = time - $t0;

is_deeply(\@admin, [('ok') x ($RELOADS / 2)],
          'the admin reloads answered 200 with the next version');
is_deeply(\@drop, [('ok') x ($RELOADS / 2)],
          'the drops were reloaded to the next version');
my $early = waitpid($wrk, WNOHANG);
my $wrk_status = $?;
ok($early == 0,
   sprintf('wrk ran all along (the reloads took %.1f s)', $reloads_took));
if ($early == 0) {
    kill 'INT', $wrk;
    waitpid($wrk, 0);
    $wrk = 0;
    $wrk_status = $?;
}
my $wrk_took = time - $t0;
is($wrk_status >> 8, 0, 'wrk exited 0');
open my $o, '<', $out or die;
my $report = do { local $/; <$o> };
close $o;
note($report);

my ($v1, $v2, $other) = $report =~ /^answers v1=(\d+) v2=(\d+) other=(\d+)$/m;
my %e;
my $errors = join ' ', map { "$_=(\\d+)" }
             qw(requests connect read write status timeout);
@e{qw(requests connect read write status timeout)} =
    $report =~ /^$errors$/m;
ok(defined $v1 && defined $e{requests}, 'wrk reported its counts');
cmp_ok($e{requests}, '>', $RELOADS * $PER_VERSION,
       "wrk: $e{requests} requests");
is($e{$_}, 0, "wrk: 0 $_ errors") for qw(connect read write timeout);
is($e{status}, 0, 'wrk: 0 non-2xx answers');
is($other, 0, 'wrk: no answer other than "v1" or "v2"');
is($v1 + $v2, $e{requests}, 'wrk: every request answered by a version');
cmp_ok($v1, '>', 0, "wrk: $v1 answers from v1");
cmp_ok($v2, '>', 0, "wrk: $v2 answers from v2");

# nginx's side: no failed call; it may have answered a few requests more
# (those in flight when wrk stopped), never fewer
my $c = counts();
is($c->{failed}, 0, 'nginx: no call failed');
my $served = $c->{v1} + $c->{v2};
cmp_ok($served, '>=', $e{requests}, "nginx answered $served calls");
cmp_ok($served - $e{requests}, '<=', $CONNS,
       'at most one in-flight request per connection unseen by wrk');

# the end state: version 21 everywhere, 20 reloads logged, none refused
my $st = status();
my ($sl) = grep { $_->{path} eq $ver } @{ $st->{libraries} };
is($sl->{version}, $RELOADS + 1, "version $RELOADS + 1");
for my $pid (@pids) {
    is(worker_libs($st, $ver)->{$pid}{version}, $RELOADS + 1,
       "worker $pid on version " . ($RELOADS + 1));
}
my $log = FFITest::error_log();
my @logged = $log =~ /"\Q$ver\E" reloaded: version (\d+.*)/g;
is_deeply(\@logged, [2 .. $RELOADS + 1],
          "$RELOADS reloads in error.log, each once, no other")
    or diag(join "\n", grep { /reloaded: version|new file at/ }
                       split /\n/, $log);
unlike($log, qr/not loaded|refused/, 'nothing refused');

note(sprintf("figures: $e{requests} requests in %.1f s over $CONNS "
             . 'connections, ', $wrk_took)
     . "$RELOADS reloads (" . ($RELOADS / 2) . " admin, " . ($RELOADS / 2)
     . " drop), $v1 answers from v1, $v2 from v2, 0 lost");

FFITest::stop_nginx('reloads under load');
cmp_ok(time - $t0, '<', FFITest::deadline(60),
       'under a minute (a failure guard: scaled under ASan)');
done_testing();
