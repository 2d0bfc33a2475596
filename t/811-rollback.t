# POST /ffi/rollback?lib=NAME[&version=V], with 2 workers: the previous (or
# the named) version comes back from its kept shadow copy, through the
# reload protocol, even when the file on disk is broken; a new version
# number each time; bad requests are refused; Go-like libraries restart
# their runtimes when the image is the same, and get 409 otherwise.
use lib 't/lib';
use lib 't/lib/misbehave';
use FFITest;
use MBTest qw(release install escape reload status workers wait_until);
use Test::More;
use JSON::PP;

my $root = FFITest::servroot();
my $dir = "$root/lib";
mkdir $dir, 0755;
my $ver = "$dir/libver.so";
my $go = "$dir/libgoish.so";
my $pin = "$dir/libpin.so";

sub file_sha {
    my ($file) = @_;
    my ($sum) = split ' ', `sha256sum $file`;
    return $sum;
}

sub rollback {
    my ($name, $extra, $method) = @_;
    my ($status, $body) = FFITest::http($method // 'POST',
                                       '/ffi/rollback?lib=' . escape($name)
                                       . ($extra // ''));
    my $json = eval { decode_json($body) } || {};
    return ($status, $json, $body);
}

# every answer of N concurrent calls, and the pids that gave them
sub answers {
    my ($path, $n) = @_;
    my (%seen, %pids);
    for my $r (FFITest::concurrent($n, 'GET', $path)) {
        my ($answer, $pid) = ($r->[1] // 'none') =~ /^(.*) (\d+)\n\z/
            ? ($1, $2) : ($r->[1] // 'none', 0);
        $seen{$answer}++;
        $pids{$pid}++;
    }
    return (\%seen, \%pids);
}

# batches of N concurrent calls until each of the workers answered one
# (the kernel may hand a whole batch to one worker): what every answer
# was, and the pids that gave them
sub answers_everywhere {
    my ($path, $n, $workers) = @_;
    my (%seen, %pids);
    wait_until(sub {
        my ($s, $p) = answers($path, $n);
        $seen{$_} += $s->{$_} for keys %$s;
        $pids{$_} += $p->{$_} for keys %$p;
        return !grep { !$pids{$_} } @$workers;
    }, 30);
    return ([sort keys %seen], [sort { $a <=> $b } keys %pids]);
}

sub history {
    my ($path) = @_;
    my $st = status();
    my ($sl) = grep { $_->{path} eq $path } @{ $st->{libraries} || [] };
    return $sl ? $sl->{history} : [];
}

sub garbage_at {
    my ($to) = @_;
    open my $g, '>', "$dir/bad.tmp" or die;
    print $g "garbage, not a library\n";
    close $g;
    rename "$dir/bad.tmp", $to or die;
}

sub garbage { garbage_at($ver) }

install(release('v1'), $ver);
install(release('v1'), $pin);

system("printf 'go1.19' > $dir/buildinfo") == 0 or die;
for my $v (qw(v1 v2)) {
    system('objcopy', '--add-section', ".go.buildinfo=$dir/buildinfo",
           release($v), "$dir/goish-$v.so") == 0 or die;
}
install("$dir/goish-v1.so", $go);

my $config = <<"CONF";
location /ffi/ { ffi_admin; allow 127.0.0.1; deny all; }
location = /v {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("$ver", nil, {unpin = true}))
        local ok, res = rt:call(ngx.var.arg_q or "version")
        ngx.say(tostring(ok), " ", tostring(res), " ", ngx.worker.pid())
    }
}
location = /pin {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("$pin"))
        local ok, res = rt:call("version")
        ngx.say(tostring(ok), " ", tostring(res), " ", ngx.worker.pid())
    }
}
location = /go {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("$go"))
        local ok, res = rt:call("version")
        ngx.say(tostring(ok), " ", tostring(res), " ", ngx.worker.pid())
    }
}
CONF

FFITest::start_nginx(workers => 2, config => $config,
                     http_config => "ffi_history 4;\nffi_close_grace 50ms;",
                     init_worker_by_lua_block => <<"LUA");
assert(ngx.load_ffi("$ver", nil, {unpin = true}))
assert(ngx.load_ffi("$go"))
assert(ngx.load_ffi("$pin"))
ngx.log(ngx.WARN, "loaded")
LUA
ok(FFITest::wait_for_log('loaded', 10, 2), 'both workers up');
my @workers = sort { $a <=> $b } workers(2);

install(release('v2'), $ver);
my ($status, $json) = reload($ver);
is($status, 200, 'v2 is version 2');

# --- a broken file on disk: 422, then rollback brings v1's bytes back
garbage();
($status, $json) = reload($ver);
is($status, 422, 'garbage on disk: reload 422');
my ($seen) = answers('/v', 20);
is_deeply($seen, { 'true v2' => 20 }, 'v2 serves on');

($status, $json) = rollback($ver);
is($status, 200, 'rollback: 200');
is($json->{lib}, $ver, 'rollback: named as asked');
is($json->{version}, 3, 'rollback: a new version number (3)');
is($json->{previous_version}, 2, 'rollback: from version 2');
is($json->{rolled_back_to}, 1, 'rollback: to version 1');
is($json->{changed}, JSON::PP::true, 'rollback: another image');
is($json->{confirmed}, JSON::PP::true, 'rollback: every worker confirmed');

my $pids;
($seen, $pids) = answers_everywhere('/v', 20, \@workers);
is_deeply($seen, ['true v1'], 'v1 answers every call');
is_deeply($pids, \@workers,
          'both workers answered, with v1');

my $h = history($ver);
my $last = $h->[-1];
is($last->{version}, 3, 'history: version 3 last');
is($last->{how}, 'rollback', 'history: how rollback');
is($last->{from}, 1, 'history: from version 1');
is($last->{outcome}, 'ok', 'history: ok');
is($last->{sha256}, file_sha(release('v1')), 'history: v1\'s bytes');

# --- a release whose libffi_init fails: 422; rollback to a named version
install(release('fail'), $ver);
($status, $json) = reload($ver);
is($status, 422, 'failing libffi_init: reload 422');
($status, $json) = rollback($ver, '&version=2');
is($status, 200, 'rollback to version 2: 200');
is($json->{version}, 4, 'rollback to 2: version 4');
is($json->{rolled_back_to}, 2, 'rollback to 2: rolled_back_to 2');
($seen, $pids) = answers_everywhere('/v', 20, \@workers);
is_deeply($seen, ['true v2'], 'v2 answers every call');
is_deeply($pids, \@workers,
          'both workers answered, with v2');

# --- bad requests
($status, $json) = rollback($ver, '&version=99');
is($status, 404, 'unknown version: 404');
like($json->{error}, qr/no version 99/, '404 says which version');
($status, $json) = rollback($ver, '&version=abc');
is($status, 400, 'version not a number: 400');
like($json->{error}, qr/version/, '400 names the argument');
($status, $json) = rollback($ver, '&version=');
is($status, 400, 'empty version: 400');
($status, $json) = rollback($ver, '', 'GET');
is($status, 405, 'GET rollback: 405');
($status, $json) = rollback('nosuchlib');
is($status, 404, 'unknown library: 404');
($status, $json, my $body) = do {
    my ($s, $b) = FFITest::http('POST', '/ffi/rollback');
    ($s, (eval { decode_json($b) } || {}), $b);
};
is($status, 400, 'no lib: 400');

# --- a version that fell out of the history (ffi_history 4)
install(release('v3'), $ver);
($status) = reload($ver);
is($status, 200, 'v3 is version 5');
install(release('v1'), $ver);
($status) = reload($ver);
is($status, 200, 'v1 is version 6');
($status, $json) = rollback($ver, '&version=1');
is($status, 422, 'version out of the history: 422');
like($json->{error}, qr/version 1 fell out of the history/,
     '422 says it fell out');
($seen) = answers('/v', 10);
is_deeply($seen, { 'true v1' => 10 }, 'version 6 serves on');

# --- nginx -s reload between a reload and a rollback
my @old = @workers;
FFITest::signal('HUP');
ok(wait_until(sub {
       my @now = FFITest::worker_pids();
       my %o = map { $_ => 1 } @old;
       @now == 2 && !grep { $o{$_} } @now
   }, 20), 'HUP: two new workers');
ok(FFITest::wait_for_log('loaded', 10, 4), 'the new workers loaded');
@workers = sort { $a <=> $b } FFITest::worker_pids();
garbage();
($status, $json) = rollback($ver);
is($status, 200, 'rollback after HUP: 200');
is($json->{rolled_back_to}, 5, 'rollback after HUP: to version 5');
is($json->{version}, 7, 'rollback after HUP: version 7');
($seen, $pids) = answers_everywhere('/v', 20, \@workers);
is_deeply($seen, ['true v3'], 'after HUP: v3 answers every call');
is_deeply($pids, \@workers,
          'after HUP: both new workers answered');

# --- rollback with 100 calls in flight: none is lost
my $conns = FFITest::begin_requests(100, 'GET', '/v?q=sleep:800');
ok(FFITest::wait_for_log('libver v3 got sleep', 10, 100),
   '100 calls are in the v3 runtimes');
($status, $json) = rollback($ver);
is($status, 200, 'rollback with calls in flight: 200');
is($json->{rolled_back_to}, 6, 'to version 6 (the previous one)');
($seen) = answers('/v', 20);
is_deeply($seen, { 'true v1' => 20 }, 'new calls go to v1 at once');
my @res = FFITest::finish_requests($conns, 15);
my %old = map { (($_->[1] // 'none') =~ /^(.*) \d+\n\z/ ? $1 : 'bad') => 1 }
          @res;
is(scalar @res, 100, '100 answers');
is_deeply([sort keys %old], ['true v3'],
          'the calls in flight were answered by v3');

# --- Go-like: the same image restarts its runtimes, another one is 409
($status) = reload($go);
is($status, 200, 'Go-like, unchanged: version 2');
($status, $json) = rollback($go);
is($status, 200, 'Go-like rollback to the same image: 200');
is($json->{changed}, JSON::PP::false, 'Go-like rollback: runtime restart');
is($json->{version}, 3, 'Go-like rollback: version 3');
install("$dir/goish-v2.so", $go);
($status, $json) = reload($go);
is($status, 409, 'Go-like, changed file: reload 409');
($status, $json) = rollback($go, '&version=1');
is($status, 200, 'Go-like rollback whatever the file on disk: 200');
($seen) = answers('/go', 10);
is_deeply($seen, { 'true v1' => 10 }, 'Go-like still serves v1');

# --- a pinned library (no unpin): its old image stays mapped, idle; the
#     rollback still maps a new image of the old bytes, in every worker
($seen) = answers('/pin', 10);
is_deeply($seen, { 'true v1' => 10 }, 'pinned library: v1 serves');
install(release('v2'), $pin);
($status) = reload($pin);
is($status, 200, 'pinned library: v2 is version 2');
garbage_at($pin);
($status, $json) = rollback($pin);
is($status, 200, 'pinned library: rollback while v1 stays mapped: 200')
    or diag(encode_json($json));
($seen, $pids) = answers_everywhere('/pin', 20, \@workers);
is_deeply($seen, ['true v1'], 'pinned library: v1 answers again');
is_deeply($pids, \@workers,
          'pinned library: in both workers');
($status, $json) = rollback($pin);
is($status, 200, 'pinned library: and back to version 2: 200');
($seen) = answers('/pin', 20);
is_deeply($seen, { 'true v2' => 20 }, 'pinned library: v2 answers again');

ok(FFITest::stop_nginx(), 'nginx quit cleanly');

done_testing();
