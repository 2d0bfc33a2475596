# The trial judges only crashes and hangs, and leaks nothing: its verdict
# travels on a channel of its own (a library may print, or fork a helper
# holding stdout), it maps as workers will (is_global), it runs every cfg
# any worker runs (so any worker coordinating gives the same verdict), it
# gets cfg on a pipe (never in /proc/*/cmdline or environ), inherits no
# descriptor of the worker but its error log, runs as the workers' user,
# and opts.trial = false skips it.
use lib 't/lib', 't/lib/misbehave';
use strict;
use warnings;
use FFITest;
use Test::More;
use File::Copy qw(copy);
use MBTest qw(install release reload);
use WorkerConn;

my $dir = FFITest::servroot() . '/lib';
mkdir $dir, 0755;
my $probes = FFITest::servroot() . '/probes';
mkdir $probes, 0777;

my $secret = 'S3cr3t-' . int(rand(1e9));

my $config = <<"CONF";
location /ffi/ { ffi_admin; }
location = /pid { content_by_lua_block { ngx.print(ngx.worker.pid()) } }
location = /t {
    content_by_lua_block {
        local opts = { is_global = ngx.var.arg_global and true or nil }
        if ngx.var.arg_notrial then
            opts.trial = false
        end
        local rt, err = ngx.load_ffi("$dir/lib" .. ngx.var.arg_lib .. ".so",
                                     ngx.var.arg_cfg and ngx.unescape_uri(ngx.var.arg_cfg), opts)
        if not rt then
            ngx.say("load failed: ", err)
            return
        end
        local ok, res = rt:call("version")
        ngx.say(res)
    }
}
CONF

sub t_get {
    my ($q) = @_;
    my (undef, $body) = FFITest::http('GET', "/t?$q");
    return $body;
}

sub probe_files {
    opendir my $d, $probes or die;
    my @f = map { "$probes/$_" } grep { /^probe-/ } readdir $d;
    closedir $d;
    my %p;
    for my $f (@f) {
        open my $fh, '<', $f or die;
        local $/;
        my $text = <$fh>;
        for my $rec (split /(?=^trial=)/m, $text) {
            push @{ $p{$rec =~ /^trial=1/ ? 'trial' : 'worker'} }, $rec;
        }
    }
    return \%p;
}

# ---- a library that prints, and forks a helper holding stdout
copy(release('noisy'), "$dir/libnoisy.so") or die;
copy(release('v1'), "$dir/libn.so") or die;
FFITest::start_nginx(config => $config);
is(t_get('lib=noisy'), "noisy\n",
   'a library printing in a constructor and libffi_init loads');
is(t_get('lib=n'), "v1\n", 'v1 serves');
install(release('noisy'), "$dir/libn.so");
my ($st, $json, $raw) = reload("$dir/libn.so");
is($st, 200, 'and reloads to it') or diag $raw;
is(t_get('lib=n'), "noisy\n", 'the noisy release serves');
FFITest::stop_nginx('noisy');
like(FFITest::error_log(), qr/says hello from libffi_init/,
     'what it printed went to the error log');

# ---- a library that needs RTLD_GLOBAL
copy(release('global'), "$dir/libglobal.so") or die;
copy(release('v1'), "$dir/libg.so") or die;
FFITest::start_nginx(config => $config);
is(t_get('lib=global&global=1'), "global\n",
   'is_global: the trial maps it RTLD_GLOBAL, as the worker does');
is(t_get('lib=g&global=1'), "v1\n", 'v1 with is_global serves');
install(release('global'), "$dir/libg.so");
($st, $json, $raw) = reload("$dir/libg.so");
is($st, 200, 'reload to a release that needs RTLD_GLOBAL') or diag $raw;
is(t_get('lib=g&global=1'), "global\n", 'it serves');
FFITest::stop_nginx('global');
unlike(FFITest::error_log(), qr/not mapped RTLD_GLOBAL/,
       'never mapped RTLD_LOCAL anywhere');

# ---- cfg stays private, nothing of the worker is inherited
copy(release('v1'), "$dir/libp.so") or die;
FFITest::start_nginx(config => $config);
my $cfg = "probe:$probes:$secret";
is(t_get("lib=p&cfg=" . MBTest::escape($cfg)), "v1\n", 'probe loads');
install(release('v2'), "$dir/libp.so");
($st, $json, $raw) = reload("$dir/libp.so");
is($st, 200, 'probe reloads') or diag $raw;
my ($worker) = FFITest::worker_pids();
my $uid = (stat "/proc/$worker")[4];
FFITest::stop_nginx('probe');

my $p = probe_files();
is(scalar @{ $p->{trial} || [] }, 2, 'a trial for the load, one for the reload');
is(scalar(grep { /leaks=0\n/ } @{ $p->{trial} }), 2,
   'no /proc/*/cmdline or environ showed the secret during the trials');
is(scalar(grep { /leaks=0\n/ } @{ $p->{worker} }), scalar @{ $p->{worker} },
   'nor during the loads in the worker');
is(scalar(grep { /socket:/ } @{ $p->{trial} }), 0,
   'no socket open in the trial (the listening one included)')
    or diag explain $p->{trial};
ok(scalar(grep { /socket:/ } @{ $p->{worker} }) > 0,
   '(the worker, for comparison, has its listening socket)');
is(scalar(grep { /anon_inode/ } @{ $p->{trial} }), 0,
   'no eventfd, epoll or inotify descriptor in the trial');
is(scalar(grep { /uid=$uid / } @{ $p->{trial} }), 2,
   "the trial runs as the workers' user ($uid)");

# ---- opts.trial = false
system("mkdir -p $probes/old && mv $probes/probe-* $probes/old/");
copy(release('v1'), "$dir/libq.so") or die;
FFITest::start_nginx(config => $config);
is(t_get("lib=q&notrial=1&cfg=" . MBTest::escape($cfg)), "v1\n",
   'opts.trial = false loads');
install(release('v2'), "$dir/libq.so");
($st, $json, $raw) = reload("$dir/libq.so");
is($st, 200, 'and reloads') or diag $raw;
FFITest::stop_nginx('notrial');
$p = probe_files();
is(scalar @{ $p->{trial} || [] }, 0, 'no trial ran, for the load or the reload') or diag explain $p;
is(scalar @{ $p->{worker} || [] }, 2, 'the worker ran both');

# ---- reuseport: the same verdict whichever worker coordinates
copy(release('v1'), "$dir/libr.so") or die;
FFITest::start_nginx(config => $config, workers => 2,
                     listen_options => 'reuseport',
                     init_worker_by_lua_block => qq{
    local cfg = ngx.worker.id() == 1 and "crash-on-v2" or "fine"
    assert(ngx.load_ffi("$dir/libr.so", cfg))
});
my @pids = MBTest::workers(2);
install(release('v2'), "$dir/libr.so");
for my $pid (@pids) {
    my $c = WorkerConn->to_worker($pid);
    my ($s, $body) = $c->request('POST', '/ffi/reload?lib=' .
                                 MBTest::escape("$dir/libr.so"));
    is($s, 422, "coordinated by worker $pid: refused");
    like($body, qr/crashed \(signal 11\)[^"]*trial/,
         "coordinated by worker $pid: by the trial");
    $c->close;
}
FFITest::stop_nginx('reuseport');

done_testing();
