# Files that must not be loaded, through the admin endpoint and dropped
# with ffi_watch on: each is refused with an error that says why, no worker
# dies (crashes in libffi_init or a constructor included) and the running
# version serves on.
use lib 't/lib';
use lib 't/lib/misbehave';
use FFITest;
use MBTest qw(mb_lib release install reload status workers elf_patch);
use Test::More;
use JSON::PP;

my $repo = FFITest::repo();
my $root = FFITest::servroot();
my $dir = "$root/lib";
my $stage = "$root/stage";
mkdir $_, 0755 for $dir, $stage;
my $ver = "$dir/libver.so";

sub text {
    my ($data) = @_;
    return sub {
        open my $f, '>', "$stage/f" or die;
        print $f $data;
        close $f;
        install("$stage/f", $_[0]);
    };
}

sub file {
    my ($from) = @_;
    return sub { install($from, $_[0]) };
}

# name, how to put it at the library's path, what the error must say
my @bad = (
    ['a text file', text("hello, I am not a library\n"),
     qr/not an ELF file/],
    ['an empty file', text(''), qr/is empty \(0 bytes\)/],
    ['a truncated ELF', sub {
        open my $in, '<:raw', release('v2') or die;
        read $in, my $head, 3000;
        close $in;
        text($head)->($_[0]) },
     qr/truncated/],
    ['an ELF of another architecture', sub {
        elf_patch(release('v2'), $_[0], 183) },
     qr/another architecture: e_machine 183 \(AArch64\)/],
    ['a PIE executable', file(mb_lib('mb_exe_pie.so')),
     qr/is an executable, not a shared library/],
    ['a plain executable', file(mb_lib('mb_exe_nopie.so')),
     qr/is an executable, not a shared library: e_type ET_EXEC/],
    ['a library without libffi_init',
     file("$repo/t/lib/runtimes/libffi_test_noinit.so"),
     qr/does not export libffi_init/],
    ['a library whose libffi_init fails', file(release('fail')),
     qr/libffi_init of "\Q$ver\E" returned 9/],
    ['a library that needs a missing library',
     file(mb_lib('libmb_needs_gone.so')),
     qr/libmb_gone\.so: cannot open shared object file/],
    ['a library that crashes in libffi_init',
     file(mb_lib('libmb_crash_init.so')), qr/crashed/],
    ['a library that crashes in a constructor',
     file(mb_lib('libmb_crash_ctor.so')), qr/crashed/],
);

my $config = <<"CONF";
location /ffi/ { ffi_admin; allow 127.0.0.1; deny all; }
location = /v {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("$ver", nil, {unpin = true}))
        ngx.say(select(2, rt:call("version")))
    }
}
CONF

my $init_worker = <<"LUA";
assert(ngx.load_ffi("$ver", nil, {unpin = true}))
ngx.log(ngx.WARN, "loaded")
LUA

# a refusal logged or shown as a JSON error body: its text
sub message {
    my ($s) = @_;
    return $s unless defined $s && $s =~ /(\{"error":.*\})\s*\z/;
    my $json = eval { decode_json($1) } or return $s;
    return $json->{error};
}

sub serves {
    my ($want, $what) = @_;
    my %seen;
    $seen{ $_->[1] // 'none' }++ for FFITest::concurrent(20, 'GET', '/v');
    is_deeply(\%seen, { "$want\n" => 20 }, "$what: $want serves on");
}

# no worker died: the same pids, none of them "exited on signal"
sub workers_alive {
    my ($pids, $what) = @_;
    my @now = sort { $a <=> $b } FFITest::worker_pids();
    is("@now", "@$pids", "$what: the same workers");
    my @died = grep {
        my $pid = $_;
        FFITest::error_log() =~ /worker process $pid exited/;
    } @$pids;
    is(scalar @died, 0, "$what: no worker exited");
}

# the crash trial may leave "exited on signal" alerts, for its own process
sub stop_checked {
    my ($label, $pids) = @_;
    FFITest::stop_nginx($label);
    my @bad = grep {
        !/exited on signal 11/ && /\[alert\]|\[emerg\]|exited on signal/
    } split /\n/, FFITest::error_log();
    is(scalar @bad, 0, "$label: no other alert") or diag(join "\n", @bad);
    my $killed = join '|', @$pids;
    unlike(FFITest::error_log(), qr/process (?:$killed) exited on signal/,
           "$label: no worker exited on a signal");
}

# --- through the admin endpoint
install(release('v1'), $ver);
FFITest::start_nginx(workers => 2, config => $config, allow_alerts => 1,
                     init_worker_by_lua_block => $init_worker);
ok(FFITest::wait_for_log('loaded', 10, 2), 'admin: both workers up');
my @pids = sort { $a <=> $b } workers(2);
serves('v1', 'admin: at first');

for my $case (@bad) {
    my ($what, $make, $why) = @$case;
    $make->($ver);
    my ($status, $json, $body) = reload($ver);
    is($status, 422, "admin, $what: 422") or diag($body);
    like($json->{error}, $why, "admin, $what: the error says why")
        or diag($body);
    like($json->{error}, qr/\Q$ver\E/, "admin, $what: and names the file");
    serves('v1', "admin, $what");
    workers_alive(\@pids, "admin, $what");
    my ($sl) = grep { $_->{path} eq $ver } @{ status()->{libraries} };
    like($sl->{last_error}, $why, "admin, $what: status last_error");
    is($sl->{version}, 1, "admin, $what: still version 1");
}

install(release('v2'), $ver);
my ($status, $json) = reload($ver);
is($status, 200, 'admin: a good file after all that: 200');
is($json->{version}, 2, 'admin: version 2');
serves('v2', 'admin: the good file');
stop_checked('bad files through the admin endpoint', \@pids);

# --- dropped, with ffi_watch on
install(release('v1'), $ver);
FFITest::start_nginx(workers => 2, config => $config, allow_alerts => 1,
                     init_worker_by_lua_block => $init_worker,
                     http_config => "ffi_watch on;\nffi_watch_delay 100ms;");
ok(FFITest::wait_for_log('loaded', 10, 2), 'drop: both workers up');
@pids = sort { $a <=> $b } workers(2);

my $n = 0;
for my $case (@bad) {
    my ($what, $make, $why) = @$case;
    $n++;
    $make->($ver);
    ok(FFITest::wait_for_log(qr/file dropped at "\Q$ver\E" not loaded/, 5,
                             $n), "drop, $what: refused");
    my @lines = grep { /file dropped at/ } split /\n/, FFITest::error_log();
    like(message($lines[-1]), $why, "drop, $what: error.log says why");
    serves('v1', "drop, $what");
    workers_alive(\@pids, "drop, $what");
    my ($sl) = grep { $_->{path} eq $ver } @{ status()->{libraries} };
    my $outcome = $sl->{last_drop}{outcome} // '';
    like($outcome, qr/^refused \(422\)/, "drop, $what: status: refused");
    like(message($outcome), $why, "drop, $what: status says why");
}

install(release('v2'), $ver);
ok(FFITest::wait_for_log(qr/"\Q$ver\E" reloaded: version 2\b/, 5),
   'drop: a good file after all that is loaded');
serves('v2', 'drop: the good file');
my $refused = () = FFITest::error_log() =~ /file dropped at .* not loaded/g;
is($refused, scalar @bad, 'drop: one refusal per bad file');
stop_checked('bad files dropped', \@pids);

done_testing();
