# Canary reloads with 2 workers: POST /ffi/reload?lib=NAME&canary=P sends
# about P% of calls to the new version and the rest to the old one (by
# call, or sticky per ngx.var key), status and metrics show both; promote
# makes the new version serve alone, rollback retires it; one canary at a
# time, a reload during a canary is 409; nginx -s reload keeps the canary
# in the new workers; no request is lost meanwhile.
use lib 't/lib';
use lib 't/lib/misbehave';
use FFITest;
use MBTest qw(release install escape status worker_libs workers wait_until);
use Test::More;
use JSON::PP;
use POSIX qw(WNOHANG);

my $root = FFITest::servroot();
my $dir = "$root/lib";
mkdir $dir, 0755;
my $ver = "$dir/libver.so";

my $config = <<"CONF";
location /ffi/ { ffi_admin; allow 127.0.0.1; deny all; }

# n calls on the runtime, counted by answer: "v1=45 v2=5"
location = /many {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("$ver", nil, {unpin = true}))
        local seen = {}
        for _ = 1, tonumber(ngx.var.arg_n or 1) do
            local ok, res = rt:call("version")
            local k = ok and res or ("failed:" .. tostring(res))
            seen[k] = (seen[k] or 0) + 1
        end
        local out = {}
        for k, n in pairs(seen) do out[#out + 1] = k .. "=" .. n end
        table.sort(out)
        ngx.say(table.concat(out, " "))
    }
}

location = /v {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("$ver", nil, {unpin = true}))
        local ok, res = rt:call("version")
        if not ok then
            ngx.status = 500
        end
        ngx.say(tostring(res))
    }
}
CONF

my $init_worker = <<"LUA";
assert(ngx.load_ffi("$ver", nil, {unpin = true}))
ngx.log(ngx.WARN, "loaded")
LUA

sub post {
    my ($what, $args) = @_;
    my ($status, $body) = FFITest::http('POST', "/ffi/$what?$args");
    my $json = eval { decode_json($body) } || {};
    return ($status, $json, $body);
}

# answers to $reqs concurrent requests of $n calls each, summed by version
sub calls {
    my ($reqs, $n, $extra) = @_;
    my %sum;
    for my $r (FFITest::concurrent($reqs, 'GET', "/many?n=$n" . ($extra // '')))
    {
        if (!defined $r->[0] || $r->[0] != 200) {
            $sum{lost}++;
            next;
        }
        for (split ' ', $r->[1]) {
            my ($k, $c) = /^(.*)=(\d+)$/ or next;
            $sum{$k} += $c;
        }
    }
    return \%sum;
}

sub lib_status {
    my $st = status();
    my $libs = worker_libs($st, $ver);
    return ($st, $libs);
}

sub metric {
    my ($name, $labels) = @_;
    my (undef, $body) = FFITest::http('GET', '/ffi/metrics');
    my $sum;
    for (split /\n/, $body // '') {
        next unless /^\Q$name\E\{([^}]*)\} (\S+)$/;
        my ($l, $v) = ($1, $2);
        next if grep { $l !~ /\Q$_\E/ } @$labels;
        $sum += $v;
    }
    return $sum;
}

install(release('v1'), $ver);
FFITest::start_nginx(workers => 2, config => $config,
                     http_config => "ffi_close_grace 50ms;\n"
                         . "ffi_canary_guard margin=0.2 min_calls=100 "
                         . "window=60s;",
                     init_worker_by_lua_block => $init_worker);
ok(FFITest::wait_for_log('loaded', 10, 2), 'both workers up');
workers(2);

# ---- bad requests
my ($s, $j) = post('reload', "lib=" . escape($ver) . "&canary=0");
is($s, 400, 'canary=0 is 400');
($s, $j) = post('reload', "lib=" . escape($ver) . "&canary=100");
is($s, 400, 'canary=100 is 400');
($s, $j) = post('reload', "lib=" . escape($ver) . "&canary=x");
is($s, 400, 'canary=x is 400');
($s, $j) = post('promote', "lib=" . escape($ver));
is($s, 409, 'promote without a canary is 409');
is($j->{error}, 'no canary running', '... saying so');
# without a canary, a rollback goes back in the history: there is none yet
($s, $j) = post('rollback', "lib=" . escape($ver));
is($s, 404, 'rollback without a canary goes to the history: none before 1');
is($j->{error}, 'no version before version 1', '... saying so');
($s, $j) = post('promote', "lib=nosuch");
is($s, 404, 'promote of an unknown library is 404');

# ---- canary at 10%, by call
install(release('v2'), $ver);
my $body;
($s, $j, $body) = post('reload', "lib=" . escape($ver) . "&canary=10");
is($s, 200, 'canary at 10% starts') or diag($body);
is($j->{version}, 2, '... as version 2');
is($j->{canary}, 10, '... at 10%');
is($j->{previous_version}, 1, '... beside version 1');

my $c = calls(40, 50);
is($c->{lost} // 0, 0, 'no request lost');
is(($c->{v1} // 0) + ($c->{v2} // 0), 2000, '2,000 calls answered by v1 or v2');
my $pct = 100 * ($c->{v2} // 0) / 2000;
ok($pct >= 7 && $pct <= 13, "canary share ${pct}% is within 7-13%")
    or diag(explain($c));

my ($st, $libs) = lib_status();
is(scalar(keys %$libs), 2, 'both workers hold the library');
for my $pid (sort keys %$libs) {
    my $l = $libs->{$pid};
    is($l->{version}, 1, "worker $pid: version 1 serves");
    is($l->{canary}{version}, 2, "worker $pid: canary version 2");
    is($l->{canary}{percent}, 10, "worker $pid: canary at 10%");
    my %vs = map { $_->{version} => $_->{state} } @{ $l->{runtimes} };
    is_deeply(\%vs, { 1 => 'serving', 2 => 'serving' },
              "worker $pid: a serving runtime on each version");
}
my ($sl) = grep { $_->{path} eq $ver } @{ $st->{libraries} || [] };
is($sl->{canary}{version}, 2, 'status (shared): canary version 2');
is($sl->{canary}{percent}, 10, 'status (shared): at 10%');

is(metric('ffi_calls_total', ['version="2"']), $c->{v2},
   'metrics count the canary\'s calls on version 2');
is(metric('ffi_calls_total', ['version="1"']), $c->{v1},
   'metrics count the others on version 1');
is(metric('ffi_canary_percent', []), 10, 'ffi_canary_percent is 10');
is(metric('ffi_canary_version', []), 2, 'ffi_canary_version is 2');

# ---- one canary at a time; no reload meanwhile
install(release('v3'), $ver);
($s, $j) = post('reload', "lib=" . escape($ver) . "&canary=20");
is($s, 409, 'a second canary is 409');
like($j->{error}, qr/canary of version 2 runs/, '... saying why');
($s, $j) = post('reload', "lib=" . escape($ver));
is($s, 409, 'a reload during a canary is 409');
is(metric('ffi_reloads_total', ['outcome="conflict"', 'reason="canary"']), 2,
   'both counted as conflicts with the canary');
is(metric('ffi_reloads_total', ['reason="not_unloadable"']), 0,
   'none as a library that cannot be unloaded (nor promote, rollback)');
$c = calls(10, 20);
ok(!$c->{v3}, 'version 3 never served');

# ---- nginx -s reload keeps the canary in the new workers
my @old = workers(2);
FFITest::signal('HUP');
ok(wait_until(sub {
       my @now = FFITest::worker_pids();
       my %o = map { $_ => 1 } @old;
       @now == 2 && !grep { $o{$_} } @now;
   }, 20), 'new workers after HUP');
ok(FFITest::wait_for_log('loaded', 10, 4), 'the new workers loaded it');
$c = calls(40, 50);
$pct = 100 * ($c->{v2} // 0) / 2000;
ok($pct >= 7 && $pct <= 13, "after HUP, canary share ${pct}% is within 7-13%")
    or diag(explain($c));
($st, $libs) = lib_status();
is(scalar(grep { ($_->{canary}{version} // 0) == 2 } values %$libs), 2,
   'both new workers run the canary');

# ---- rollback during a canary: version 1 alone, version 2 closed
install(release('v2'), $ver);
($s, $j, $body) = post('rollback', "lib=" . escape($ver));
is($s, 200, 'rollback of the canary') or diag($body);
is($j->{version}, 1, '... version 1 serves');
is($j->{retired}, 2, '... version 2 retired');
$c = calls(10, 50);
is_deeply($c, { v1 => 500 }, 'every call on version 1');
ok(wait_until(sub {
       my (undef, $l) = lib_status();
       !grep { grep { $_->{version} == 2 } @{ $_->{images} } } values %$l;
   }, 10), 'version 2 closed in every worker');
($st, $libs) = lib_status();
ok(!grep({ $_->{canary} } values %$libs), 'no canary in status');
is(metric('ffi_canary_percent', []) // 0, 0, 'ffi_canary_percent is 0');
is(metric('ffi_canary_ends_total', ['outcome="rolled_back"']), 1,
   'ffi_canary_ends_total{outcome="rolled_back"} is 1');

# ---- sticky key: the same key, the same version, every time
($s, $j, $body) = post('reload', "lib=" . escape($ver)
                                 . "&canary=50&key=arg_user");
is($s, 200, 'canary at 50% by $arg_user') or diag($body);
is($j->{version}, 3, '... as version 3 (versions are never reused)');
my (%by, $mixed);
for my $u (1 .. 30) {
    for my $r (FFITest::concurrent(4, 'GET', "/many?n=10&user=u$u")) {
        my @k = map { /^(.*)=/ ? $1 : () } split ' ', $r->[1] // '';
        $mixed++ if @k != 1;
        $by{"u$u"}{$_}++ for @k;
    }
}
ok(!$mixed, 'every request of one key on one version');
ok(!grep({ keys %{ $by{$_} } != 1 } keys %by),
   'every key on one version across requests and workers');
my %users;
$users{ (keys %{ $by{$_} })[0] }++ for keys %by;
ok($users{v1} && $users{v2}, "keys on both versions: "
   . join(', ', map { "$_=$users{$_}" } sort keys %users));

# ---- promote under load: version 3 alone, version 1 drained and closed
my $load = fork;
die "fork: $!" unless defined $load;
if ($load == 0) {
    my $lost = 0;
    for (1 .. 30) {
        $lost += grep { !defined $_->[0] || $_->[0] != 200 }
                 FFITest::concurrent(16, 'GET', '/v');
    }
    POSIX::_exit($lost > 250 ? 250 : $lost);
}
($s, $j, $body) = post('promote', "lib=" . escape($ver));
is($s, 200, 'promote') or diag($body);
is($j->{version}, 3, '... version 3 serves alone');
waitpid($load, 0);
is($? >> 8, 0, 'no request lost under load during promote');
$c = calls(10, 50);
is_deeply($c, { v2 => 500 }, 'every call on version 3 (it answers "v2")');
ok(wait_until(sub {
       my (undef, $l) = lib_status();
       !grep { grep { $_->{version} == 1 } @{ $_->{images} } } values %$l;
   }, 10), 'version 1 drained and closed in every worker');
is(metric('ffi_canary_ends_total', ['outcome="promoted"']), 1,
   'ffi_canary_ends_total{outcome="promoted"} is 1');
($s, $j) = post('reload', "lib=" . escape($ver));
is($s, 200, 'reloads work again after promote');

# ---- automatic rollback: a canary failing half of its calls
install(release('flaky'), $ver);
($s, $j, $body) = post('reload', "lib=" . escape($ver) . "&canary=50");
is($s, 200, 'a flaky canary at 50%') or diag($body);
my $flaky = $j->{version};
$c = calls(20, 20);
ok(FFITest::wait_for_log(qr/canary version $flaky of .* rolled back: /, 15),
   'the guard rolled it back, logged');
ok(wait_until(sub { !grep { $_->{canary} } values %{ (lib_status())[1] } },
              10), 'no canary any more');
$c = calls(10, 50);
ok(!grep({ /flaky/ } keys %$c) && !$c->{lost}, 'the old version serves alone');
is(metric('ffi_canary_ends_total', ['outcome="guard"']), 1,
   'ffi_canary_ends_total{outcome="guard"} is 1');

FFITest::stop_nginx();
done_testing();
