# ffi_runtime_cpus: with workers bound to CPUs (worker_cpu_affinity), the
# threads a library starts (at mapping, in libffi_init, later from its own
# threads) run off their worker's CPU by default, on an explicit list when
# given, on the worker's CPU with "inherit"; the worker's thread stays
# bound; HUP and a reload keep it; a bad list fails nginx -t.
use lib 't/lib';
use FFITest;
use Test::More;

my $repo = FFITest::repo();
my $root = FFITest::servroot();

sub slurp {
    my ($path) = @_;
    open my $fh, '<', $path or return '';
    local $/;
    return scalar <$fh>;
}

sub parse_list {
    my ($list) = @_;
    my @cpus;
    for my $part (split /,/, $list) {
        my ($lo, $hi) = $part =~ /^(\d+)(?:-(\d+))?$/ or die "list: $list\n";
        push @cpus, $lo .. (defined $hi ? $hi : $lo);
    }
    return @cpus;
}

# as the kernel writes Cpus_allowed_list: ascending, ranges of 2 or more
sub format_list {
    my @cpus = sort { $a <=> $b } @_;
    my @parts;
    while (@cpus) {
        my $lo = shift @cpus;
        my $hi = $lo;
        $hi = shift @cpus while @cpus && $cpus[0] == $hi + 1;
        push @parts, $lo == $hi ? $lo : "$lo-$hi";
    }
    return join ',', @parts;
}

my ($mine) = slurp('/proc/self/status') =~ /^Cpus_allowed_list:\s*(\S+)/m;
my @cpus = parse_list($mine);
plan skip_all => "needs 2 CPUs, this process may use $mine" if @cpus < 2;

# worker 0 on the first CPU we may use, worker 1 on the second
my ($cpu0, $cpu1) = @cpus[0, 1];
my $affinity = 'worker_cpu_affinity '
             . join(' ', map { '1' . ('0' x $_) } $cpu0, $cpu1) . ';';

# tid => Cpus_allowed_list of every thread of a process
sub threads_of {
    my ($pid) = @_;
    my %t;
    opendir my $dh, "/proc/$pid/task" or return ();
    for my $tid (grep { /^\d+$/ } readdir $dh) {
        my ($list) = slurp("/proc/$pid/task/$tid/status")
                     =~ /^Cpus_allowed_list:\s*(\S+)/m;
        $t{$tid} = $list if defined $list;
    }
    return %t;
}

my $c_ready = <<'LUA';
ngx.timer.at(0, function()
    local rt = assert(ngx.load_ffi("ffi_signals"))
    -- one thread more, started by the runtime's own thread
    local ok = rt:call("spawn")
    ngx.log(ngx.NOTICE, "runtime ready: ", tostring(ok))
end)
LUA

# $expect->($worker_cpu): the list every runtime thread must show
sub check_workers {
    my ($label, $min_threads, $expect, @pids) = @_;
    my %seen;

    is(scalar @pids, 2, "$label: two workers") or return;

    for my $pid (@pids) {
        my %t = threads_of($pid);
        my $own = delete $t{$pid};
        ok(defined $own && ($own eq $cpu0 || $own eq $cpu1),
           "$label: worker ${pid}'s thread stays bound to one CPU")
            or diag("worker thread: " . ($own // 'gone'));
        next unless defined $own;
        $seen{$own}++;

        my $want = $expect->($own);
        my @wrong = grep { $t{$_} ne $want } sort keys %t;
        ok(scalar(keys %t) >= $min_threads && !@wrong,
           "$label: the runtime threads of the worker on CPU $own run on "
           . "$want") or diag(join ', ', map { "$_: $t{$_}" } sort keys %t);
    }

    is(join(' ', sort keys %seen), join(' ', sort($cpu0, $cpu1)),
       "$label: one worker on each CPU");
}

my $others = sub {
    my ($own) = @_;
    return format_list(grep { $_ != $own } @cpus);
};

my $admin = <<'CONF';
location /ffi/ { ffi_admin; allow 127.0.0.1; deny all; }
CONF

# --- the default: every CPU we may use but the worker's own
FFITest::start_nginx(workers => 2, main_config => $affinity,
                     config => $admin,
                     init_worker_by_lua_block => $c_ready);
ok(FFITest::wait_for_log(qr/runtime ready: true/, 30, 2),
   'default: both workers loaded the C runtime');
# threads at mapping (constructor), in libffi_init, and one later
check_workers('default', 3, $others, FFITest::worker_pids());
like(FFITest::error_log(), qr/ffi: runtime threads on CPUs \S+ \(worker on \S+\): spinning on/,
     'default: runtime and loop on different CPUs: the queue spins');

# --- a reload runs libffi_init again: its new thread runs off-CPU too
my ($status, $body) = FFITest::http('POST', '/ffi/reload?lib=ffi_signals');
is($status, 200, 'reload accepted') or diag($body);
check_workers('after a reload', 3, $others, FFITest::worker_pids());

# --- HUP: new workers, same places
my @old = FFITest::worker_pids();
FFITest::signal('HUP');
ok(FFITest::wait_for_log(qr/runtime ready: true/, 30, 4),
   'HUP: the new workers loaded the C runtime');
FFITest::wait_exit($_, 20) for @old;
check_workers('after HUP', 3, $others, FFITest::worker_pids());
FFITest::stop_nginx();

# --- an explicit list: honoured as given, the worker's CPU included
FFITest::start_nginx(workers => 2, main_config => $affinity,
                     http_config => "ffi_runtime_cpus $cpu1;",
                     init_worker_by_lua_block => $c_ready);
ok(FFITest::wait_for_log(qr/runtime ready: true/, 30, 2),
   'list: both workers loaded the C runtime');
check_workers("ffi_runtime_cpus $cpu1", 3, sub { "$cpu1" },
              FFITest::worker_pids());
FFITest::stop_nginx();

# --- inherit: as before this directive, on the worker's CPU; no spinning
FFITest::start_nginx(workers => 2, main_config => $affinity,
                     http_config => 'ffi_runtime_cpus inherit;',
                     init_worker_by_lua_block => $c_ready);
ok(FFITest::wait_for_log(qr/runtime ready: true/, 30, 2),
   'inherit: both workers loaded the C runtime');
check_workers('inherit', 3, sub { $_[0] }, FFITest::worker_pids());
like(FFITest::error_log(), qr/ffi: runtime threads on CPUs (\d+) \(worker on \1\): no busy polling or queue spinning/,
     'inherit: runtime and loop share one CPU: nobody spins');
FFITest::stop_nginx();

# --- no worker_cpu_affinity: nothing changes, every CPU for everybody
FFITest::start_nginx(workers => 2, init_worker_by_lua_block => $c_ready);
ok(FFITest::wait_for_log(qr/runtime ready: true/, 30, 2),
   'unbound: both workers loaded the C runtime');
for my $pid (FFITest::worker_pids()) {
    my %t = threads_of($pid);
    my @wrong = grep { $t{$_} ne $mine } sort keys %t;
    ok(!@wrong, "unbound: every thread of worker $pid may use $mine")
        or diag(join ', ', map { "$_: $t{$_}" } sort keys %t);
}
FFITest::stop_nginx();

# --- the Go and the Python runtimes (make examples)
my %runtimes = (
    go => ["$repo/examples/go/libffi_go_echo.so", "nil", "{}"],
    python => ["$repo/examples/python/libffi_python3.so", '"ffi.echo?,init"',
               '{is_global = true}'],
);

for my $name (sort keys %runtimes) {
    my ($so, $cfg, $opts) = @{ $runtimes{$name} };
    SKIP: {
        skip "$so not built (make examples)", 7 unless -f $so;
        my $dir = $so =~ s{/[^/]+$}{}r;
        FFITest::start_nginx(workers => 2,
            main_config => "$affinity\nenv LD_LIBRARY_PATH=$dir;",
            init_worker_by_lua_block => <<"LUA");
ngx.timer.at(0, function()
    local rt = assert(ngx.load_ffi("$so", $cfg, $opts))
    local ok = rt:call("x")
    ngx.log(ngx.NOTICE, "runtime ready: ", tostring(ok))
end)
LUA
        ok(FFITest::wait_for_log(qr/runtime ready: true/, 60, 2),
           "$name: both workers loaded the runtime");
        check_workers($name, 1, $others, FFITest::worker_pids());
        FFITest::stop_nginx();
    }
}

# --- bad lists fail nginx -t with a clear message
my $nginx = $ENV{NGINX} || 'nginx';
my $unusable = 1023;
$unusable-- while grep { $_ == $unusable } @cpus;
my %bad = (
    '0-'          => qr/invalid CPU list "0-" in "ffi_runtime_cpus"/,
    'x'           => qr/invalid CPU list "x" in "ffi_runtime_cpus"/,
    '3-1'         => qr/invalid CPU list "3-1" in "ffi_runtime_cpus"/,
    '0,,1'        => qr/invalid CPU list "0,,1" in "ffi_runtime_cpus"/,
    '99999'       => qr/invalid CPU list "99999" in "ffi_runtime_cpus"/,
    "$unusable"   => qr/"ffi_runtime_cpus" names CPU $unusable, which nginx may not use \(it may use \Q$mine\E\)/,
);
for my $list (sort keys %bad) {
    # the harness's own configuration, with the directive added
    my $conf = FFITest::_conf(workers => 1);
    $conf =~ s/^http \{$/http {\n    ffi_runtime_cpus $list;/m;
    open my $fh, '>', "$root/conf/bad.conf" or die;
    print $fh $conf;
    close $fh;
    my $out = `$nginx -p $root/ -c conf/bad.conf -t 2>&1`;
    isnt($?, 0, "nginx -t fails on \"$list\"");
    like($out, $bad{$list}, "nginx -t says why \"$list\" is bad")
        or diag($out);
}

done_testing();
