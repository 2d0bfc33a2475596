# Rollbacks while wrk drives 32 connections at an ffi location, with 2
# workers: a good release, then a broken file on disk (its reload is 422),
# then a rollback, several times over: no request fails or is lost, every
# answer comes from v1 or v2, and copies leave the history as they should.
use lib 't/lib';
use lib 't/lib/misbehave';
use FFITest;
use MBTest qw(release install escape reload status workers wait_until);
use Test::More;
use JSON::PP;
use POSIX qw(WNOHANG);
use Time::HiRes qw(time);

my $WRK = 'wrk';
my $CONNS = 32;
# wrk runs until the test's steps are done and is stopped then (SIGINT: it
# reports as at the end of its time); its -d only guards against a hang
my $SECONDS = 600;
my $ROUNDS = 5;
my $PER_VERSION = 300;      # answers each version gives before the next

plan skip_all => 'wrk is not installed (Debian package wrk)'
    unless grep { -x "$_/$WRK" } split /:/, $ENV{PATH};

my $root = FFITest::servroot();
my $dir = "$root/lib";
mkdir $dir, 0755;
my $shadow = "$root/shadow";
mkdir $shadow;
chmod 01777, $shadow;
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

sub counts {
    my (undef, $body) = FFITest::http('GET', '/counts');
    return { map { split /=/ } split ' ', $body // '' };
}

sub rollback {
    my ($status, $body) = FFITest::http('POST',
                                       '/ffi/rollback?lib=' . escape($ver));
    return ($status, eval { decode_json($body) } || {}, $body);
}

sub shadow_files {
    opendir my $d, $shadow or die;
    my ($folder) = grep { /^nginx-ffi\./ } readdir $d;
    closedir $d;
    return -1 unless $folder;
    opendir $d, "$shadow/$folder" or die;
    my $n = grep { !/^\./ } readdir $d;
    closedir $d;
    return $n;
}

install(release('v1'), $ver);
FFITest::start_nginx(workers => 2, config => $config,
                     http_config => "lua_shared_dict counts 1m;\n"
                                    . "ffi_history 3;\n"
                                    . "ffi_shadow_path $shadow;\n"
                                    . "ffi_close_grace 50ms;",
                     init_worker_by_lua_block => <<"LUA");
assert(ngx.load_ffi("$ver", nil, {unpin = true}))
ngx.log(ngx.WARN, "loaded")
LUA
ok(FFITest::wait_for_log('loaded', 10, 2), 'both workers up');
my @pids = sort { $a <=> $b } workers(2);

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

# each round: v2 by reload, a broken file refused, back to v1 by rollback
my @steps;
for my $i (1 .. $ROUNDS) {
    my $version = 2 * $i;
    my $seen = counts()->{v2} // 0;
    install(release('v2'), $ver);
    my ($status, $json, $body) = reload($ver);
    push @steps, $status == 200 && $json->{version} == $version
                 ? 'ok' : "round $i reload: $status $body";
    wait_until(sub { (counts()->{v2} // 0) >= $seen + $PER_VERSION }, 5)
        or diag("round $i: v2 gave no $PER_VERSION answers in 5 s");

    open my $g, '>', "$dir/bad.tmp" or die;
    print $g "broken release\n";
    close $g;
    rename "$dir/bad.tmp", $ver or die;
    ($status, $json, $body) = reload($ver);
    push @steps, $status == 422 ? 'ok' : "round $i broken: $status $body";

    $seen = counts()->{v1} // 0;
    ($status, $json, $body) = rollback();
    push @steps, $status == 200 && $json->{version} == $version + 1
                 && $json->{rolled_back_to} == $version - 1
                 ? 'ok' : "round $i rollback: $status $body";
    wait_until(sub { (counts()->{v1} // 0) >= $seen + $PER_VERSION }, 5)
        or diag("round $i: v1 gave no $PER_VERSION answers in 5 s");
}
my $took = time - $t0;
is_deeply(\@steps, [('ok') x (3 * $ROUNDS)],
          'each round: reload 200, broken file 422, rollback 200');

my $early = waitpid($wrk, WNOHANG);
my $wrk_status = $?;
ok($early == 0, sprintf('wrk ran all along (the rounds took %.1f s)', $took));
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
@e{qw(requests connect read write status timeout)} = $report =~ /^$errors$/m;
ok(defined $v1 && defined $e{requests}, 'wrk reported its counts');
is($e{$_}, 0, "wrk: 0 $_ errors") for qw(connect read write timeout);
is($e{status}, 0, 'wrk: 0 non-2xx answers');
is($other, 0, 'wrk: no answer other than "v1" or "v2"');
is($v1 + $v2, $e{requests}, 'wrk: every request answered by a version');
my $c = counts();
is($c->{failed}, 0, 'nginx: no call failed');

my $st = status();
my ($sl) = grep { $_->{path} eq $ver } @{ $st->{libraries} };
is($sl->{version}, 2 * $ROUNDS + 1, 'the last rollback is current');
my @ok = grep { $_->{outcome} eq 'ok' } @{ $sl->{history} };
is(scalar @ok, 3, 'ffi_history 3: three versions kept');
is(shadow_files(), 3, 'three copies in the shadow folder, no other');

my ($status, $m) = FFITest::http('GET', '/ffi/metrics');
my ($rb) = $m =~ /^ffi_rollbacks_total\{lib="\Q$ver\E",outcome="ok",reason="none"\} (\d+)$/m;
is($rb, $ROUNDS, "ffi_rollbacks_total{outcome=\"ok\"} is $ROUNDS");
my ($rl) = $m =~ /^ffi_reloads_total\{lib="\Q$ver\E",outcome="ok",reason="none"\} (\d+)$/m;
is($rl, $ROUNDS, 'rollbacks are not counted as reloads');

note(sprintf("figures: $e{requests} requests in %.1f s over $CONNS "
             . 'connections, ', $wrk_took)
     . "$ROUNDS rollbacks after a broken file, $v1 answers from v1, "
     . "$v2 from v2, 0 lost");

FFITest::stop_nginx('rollbacks under load');
opendir my $d, $shadow or die;
is_deeply([grep { !/^\./ } readdir $d], [], 'no shadow folder left');
closedir $d;
done_testing();
