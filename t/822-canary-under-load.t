# Canaries while wrk drives 32 connections at an ffi location, with 2
# workers: a canary started, rolled back, started again (sticky by a
# header), nginx -s reload, promoted; no request fails or is lost, every
# answer comes from one version or the other, both versions answer.
use lib 't/lib';
use lib 't/lib/misbehave';
use FFITest;
use MBTest qw(release install escape status workers wait_until);
use Test::More;
use JSON::PP;
use POSIX qw(WNOHANG);

my $WRK = 'wrk';
my $CONNS = 32;
# wrk runs until the test's steps are done and is stopped then (SIGINT: it
# reports as at the end of its time); its -d only guards against a hang
my $SECONDS = 600;

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

# wrk counts the answers by body, and sends a user header that changes
my $script = "$root/count.lua";
open my $f, '>', $script or die;
print $f <<'LUA';
local threads = {}
local n = 0

function setup(thread)
    table.insert(threads, thread)
end

function init(args)
    v1, v2, other = 0, 0, 0
end

function request()
    n = n + 1
    -- one request a connection: nginx -s reload closes idle keep-alive
    -- connections of the old workers, which a client may be writing to
    return wrk.format(nil, nil, { ["X-User"] = "u" .. (n % 97),
                                  ["Connection"] = "close" })
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

sub post {
    my ($what, $args) = @_;
    my ($status, $body) = FFITest::http('POST', "/ffi/$what?$args");
    return ($status, $body);
}

install(release('v1'), $ver);
FFITest::start_nginx(workers => 2, config => $config,
                     http_config => "lua_shared_dict counts 1m;\n"
                                    . "ffi_close_grace 50ms;",
                     init_worker_by_lua_block => <<"LUA");
assert(ngx.load_ffi("$ver", nil, {unpin = true}))
ngx.log(ngx.WARN, "loaded")
LUA
ok(FFITest::wait_for_log('loaded', 10, 2), 'both workers up');
workers(2);

my $out = "$root/wrk.out";
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

ok(wait_until(sub { counts()->{v1} >= 300 }, 5), 'wrk is driving v1');

install(release('v2'), $ver);
my ($s, $body) = post('reload', 'lib=' . escape($ver) . '&canary=20');
is($s, 200, 'canary at 20% under load') or diag($body);
my $c0 = counts()->{v2};
ok(wait_until(sub { counts()->{v2} >= $c0 + 200 }, 10), 'v2 answers');
($s, $body) = post('rollback', 'lib=' . escape($ver));
is($s, 200, 'rolled back under load') or diag($body);

($s, $body) = post('reload', 'lib=' . escape($ver)
                             . '&canary=50&key=http_x_user');
is($s, 200, 'canary at 50% by $http_x_user under load') or diag($body);
$c0 = counts()->{v2};
ok(wait_until(sub { counts()->{v2} >= $c0 + 200 }, 10), 'v2 answers');

my @old = workers(2);
FFITest::signal('HUP');
ok(wait_until(sub {
       my %o = map { $_ => 1 } @old;
       my @now = FFITest::worker_pids();
       @now == 2 && !grep { $o{$_} } @now;
   }, 20), 'nginx -s reload under load');
ok(FFITest::wait_for_log('loaded', 10, 4), 'the new workers loaded it');
$c0 = counts()->{v2};
ok(wait_until(sub { counts()->{v2} >= $c0 + 200 }, 10),
   'the new workers route to v2 too');

($s, $body) = post('promote', 'lib=' . escape($ver));
is($s, 200, 'promoted under load') or diag($body);
my %seen;
$seen{ $_->[1] // 'none' }++ for FFITest::concurrent(20, 'GET', '/v');
is_deeply(\%seen, { "v2\n" => 20 }, 'v2 alone serves after the promotion');

ok(waitpid($wrk, WNOHANG) == 0, 'wrk ran all along');
kill 'INT', $wrk;
waitpid($wrk, 0);
$wrk = 0;
is($? >> 8, 0, 'wrk exited 0');
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
is($e{$_}, 0, "wrk: 0 $_ errors") for qw(connect read write timeout);
is($e{status}, 0, 'wrk: 0 non-2xx answers');
is($other, 0, 'wrk: no answer other than "v1" or "v2"');
is($v1 + $v2, $e{requests}, 'wrk: every request answered by a version');
cmp_ok($v1, '>', 0, "wrk: $v1 answers from v1");
cmp_ok($v2, '>', 0, "wrk: $v2 answers from v2");

my $c = counts();
is($c->{failed}, 0, 'nginx: no call failed');
# less the 20 requests of this test itself
my $served = $c->{v1} + $c->{v2} - 20;
cmp_ok($served, '>=', $e{requests}, "nginx answered $served calls");
cmp_ok($served - $e{requests}, '<=', $CONNS,
       'at most one in-flight request per connection unseen by wrk');

FFITest::stop_nginx();
done_testing();
