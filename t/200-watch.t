# ffi_watch on: a new file dropped at a loaded library's path (mv, install,
# cp over it) is served by every worker; bad drops are refused and the
# running version serves on; one reload per drop, not one per worker.
use lib 't/lib';
use lib 't/lib/misbehave';
use FFITest;
use MBTest qw(release);
use Test::More;
use JSON::PP;
use File::Copy qw(copy);
use Time::HiRes qw(time sleep);

my $repo = FFITest::repo();
my $root = FFITest::servroot();
my $dir = "$root/lib";
mkdir $dir, 0755;
chmod 0755, $dir;
my $ver = "$dir/libver.so";
my $stage = "$root/stage";
mkdir $stage, 0755;

sub answers {
    my ($n, $path) = @_;
    my %seen;
    $seen{ $_->[1] // 'none' }++
        for FFITest::concurrent($n, 'GET', $path || '/v');
    return \%seen;
}

# every worker serves $want: wait for both workers' reload, then check
sub served_everywhere {
    my ($want, $version, $what) = @_;
    my $t0 = time;
    my $ok = FFITest::wait_for_log(qr/"\Q$ver\E" reloaded: version $version\b/,
                                   3, 1);
    ok($ok, "$what: reloaded to version $version within "
            . FFITest::deadline(3) . ' s');
    my $seen = answers(40);
    is_deeply($seen, { "$want\n" => 40 }, "$what: every call gets $want");
    return time - $t0;
}

sub reloads_logged {
    my $log = FFITest::error_log();
    my $n = () = $log =~ /"\Q$ver\E" reloaded: version \d+/g;
    return $n;
}

my $config = <<"CONF";
location /ffi/ { ffi_admin; allow 127.0.0.1; deny all; }
location = /v {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("$ver", nil, {unpin = true}))
        ngx.say(select(2, rt:call(ngx.var.arg_q or "version")))
    }
}
CONF

copy(release('v1'), $ver) or die;
FFITest::start_nginx(workers => 2, config => $config,
                     http_config => "ffi_watch on;\nffi_watch_delay 100ms;"
                                    . "\nffi_close_grace 50ms;",
                     init_worker_by_lua_block => <<"LUA");
assert(ngx.load_ffi("$ver", nil, {unpin = true}))
ngx.log(ngx.WARN, "loaded")
LUA
ok(FFITest::wait_for_log('loaded', 10, 2), 'both workers up');
is_deeply(answers(10), { "v1\n" => 10 }, 'v1 serves');

my (undef, $body) = FFITest::http('GET', '/ffi/status');
my ($sl) = grep { $_->{path} eq $ver } @{ decode_json($body)->{libraries} };
is($sl->{watched}, JSON::PP::true, 'status: watched');
is($sl->{last_drop}, undef, 'status: no drop yet');

# --- mv (rename into place)
copy(release('v2'), "$stage/libver.so") or die;
rename "$stage/libver.so", $ver or die;
my $secs = served_everywhere('v2', 2, 'mv');
note(sprintf 'mv: drop to every worker serving in %.0f ms', $secs * 1000);

# --- install(1)
system('install', '-m', '0755', release('v3'), $ver) == 0 or die;
served_everywhere('v3', 3, 'install');

# --- cp over the file in place (the shadow copies keep this safe)
system('cp', release('v1'), $ver) == 0 or die;
served_everywhere('v1', 4, 'cp');
is(reloads_logged(), 3, 'one reload per drop, not one per worker');

(undef, $body) = FFITest::http('GET', '/ffi/status');
($sl) = grep { $_->{path} eq $ver } @{ decode_json($body)->{libraries} };
is($sl->{last_drop}{outcome}, 'reloaded to version 4', 'status: last drop');
is($sl->{last_drop}{event}, 'close_write', 'status: the event');

# --- bad drops: refused with a line saying why; v1 serves on
my $n = 0;
for my $bad (
    ['a truncated library', sub { system("head -c 3000 "
                                         . release('v2') . " > $ver") },
     qr/truncated/],
    ['a text file', sub { system("echo hello > $ver") },
     qr/not an ELF file/],
    ['a library without libffi_init', sub {
        open my $c, '>', "$stage/noinit.c" or die;
        print $c "int something(void) { return 1; }\n";
        close $c;
        system('cc', '-shared', '-fPIC', '-o', "$stage/noinit.so",
               "$stage/noinit.c") == 0 or die;
        system('cp', "$stage/noinit.so", $ver) },
     qr/does not export libffi_init/],
    ['a group-writable file', sub {
        copy(release('v2'), "$stage/gw.so") or die;
        chmod 0664, "$stage/gw.so";
        rename "$stage/gw.so", $ver },
     qr/writable by group or others/],
    ['a file of another user', sub {
        copy(release('v2'), "$stage/other.so") or die;
        chown 65534, 65534, "$stage/other.so";
        rename "$stage/other.so", $ver },
     qr/owned by uid 65534/],
)
{
    my ($what, $make, $why) = @$bad;
    SKIP: {
        skip 'needs root to chown', 3 if $what =~ /another user/ && $> != 0;
        $n++;
        $make->();
        ok(FFITest::wait_for_log(
               qr/file dropped at "\Q$ver\E" not loaded.*$why/, 3, 1),
           "$what: refused, error.log says why");
        is_deeply(answers(10), { "v1\n" => 10 }, "$what: v1 serves on");
        (undef, $body) = FFITest::http('GET', '/ffi/status');
        ($sl) = grep { $_->{path} eq $ver }
                @{ decode_json($body)->{libraries} };
        like($sl->{last_drop}{outcome}, qr/^refused \(4\d\d\)/,
             "$what: status shows the refusal");
    }
}

my $refusals = () = FFITest::error_log() =~ /file dropped at .* not loaded/g;
is($refusals, $n, 'each bad drop refused once, not once per worker');

# --- a later good file is picked up (install: a new file, owned by us)
system('install', '-m', '0755', release('v2'), $ver) == 0 or die;
served_everywhere('v2', 5, 'a good file after bad ones');

# --- rapid successive drops: the last one wins
for my $v (qw(v3 v1 v3 v1)) {
    system('cp', release($v), $ver) == 0 or die;
}
copy(release('v3'), "$stage/libver.so") or die;
rename "$stage/libver.so", $ver or die;
ok(FFITest::wait_for_log(qr/"\Q$ver\E" reloaded: version \d+/, 10,
                         reloads_logged() || 1), 'rapid drops reloaded');
my $deadline = time + FFITest::deadline(10);
my $seen;
while (time < $deadline) {
    $seen = answers(20);
    last if $seen->{"v3\n"} && keys %$seen == 1;
    sleep 0.05;
}
is_deeply($seen, { "v3\n" => 20 }, 'rapid drops: the last one (v3) serves');

# --- delete: nothing changes; putting it back reloads it
my $before = reloads_logged();
unlink $ver or die;
is_deeply(answers(10), { "v3\n" => 10 }, 'deleted file: v3 serves on');
is(reloads_logged(), $before, 'deleted file: no reload');
copy(release('v2'), "$stage/libver.so") or die;
rename "$stage/libver.so", $ver or die;
my $version = ($before + 2) + 0;
ok(FFITest::wait_for_log(qr/"\Q$ver\E" reloaded: version \d+/, 10,
                         $before + 1), 'put back: reloaded');
is_deeply(answers(20), { "v2\n" => 20 }, 'put back: v2 serves');

# --- a drop while calls are in flight: none fails
my $conns = FFITest::begin_requests(50, 'GET', '/v?q=sleep:600');
ok(FFITest::wait_for_log('libver v2 got sleep', 10, 50),
   '50 calls in flight on v2');
$before = reloads_logged();
copy(release('v1'), "$stage/libver.so") or die;
rename "$stage/libver.so", $ver or die;
ok(FFITest::wait_for_log(qr/"\Q$ver\E" reloaded: version \d+/, 10,
                         $before + 1), 'dropped with calls in flight');
is_deeply(answers(20), { "v1\n" => 20 }, 'new calls: v1');
my %old;
$old{ $_->[1] // 'none' }++ for FFITest::finish_requests($conns, 10);
is_deeply(\%old, { "v2\n" => 50 }, 'the 50 calls in flight: answered by v2');

FFITest::stop_nginx();
done_testing();
