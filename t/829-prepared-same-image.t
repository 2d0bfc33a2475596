# A reload of the same bytes (runtimes restarted) prepares its runtimes on
# the image that serves: what the worker prepared is that image. When the
# worker's last handle of an unpinned library goes between prepare and
# commit (or abort), the image must stay the worker's as long as it is the
# prepared one: the commit (or the abort) that follows takes it, and
# nothing of the worker points at an image it closed. Two workers: A
# coordinates and holds its own prepare (a handle that pauses), B prepares,
# unloads its only handle, and waits until its runtimes are reaped.
use lib 't/lib', 't/lib/misbehave';
use strict;
use warnings;
use FFITest;
use Test::More;
use MBTest qw(install release escape status worker_libs wait_until workers);
use WorkerConn;

my $root = FFITest::servroot();
my $dir = "$root/lib";
mkdir $dir, 0755;
my $lib = "$dir/libsame.so";
my $P = "$root/pause";
my $pause = "pause:$P";

my $config = <<"CONF";
location /ffi/ { ffi_admin; }
location = /pid { content_by_lua_block { ngx.print(ngx.worker.pid()) } }
location = /same {
    content_by_lua_block {
        local rt, err = ngx.load_ffi("$lib",
                                     ngx.unescape_uri(ngx.var.arg_cfg or ""),
                                     {unpin = true})
        if not rt then
            ngx.say("load: ", err)
            return
        end
        local ok, res = rt:call("version")
        if ngx.var.arg_unload then
            rt:__unload()
        end
        ngx.say(tostring(res))
    }
}
CONF

sub touch { open my $fh, '>', $_[0] or die "$_[0]: $!\n"; close $fh }

sub get_on {
    my ($c, $uri) = @_;
    my $body = eval { (undef, my $b) = $c->request('GET', $uri); $b };
    return $body // "none: $@";
}

# worker $pid's view of the library: what is wrong with it at rest
sub at_rest {
    my ($pid) = @_;
    my $l = worker_libs(status(), $lib)->{$pid} or return ('no entry');
    my (@bad, %rts);
    $rts{ $_->{image_version} }++
        for grep { $_->{state} ne 'drained' } @{ $l->{runtimes} };
    for my $img (@{ $l->{images} }) {
        my $n = $rts{ $img->{version} } // 0;
        push @bad, "image $img->{version}: refcount $img->{refcount}, "
                   . "$n runtime(s)" if $img->{refcount} != $n;
        push @bad, "image $img->{version} unused and mapped" if $n == 0;
    }
    return @bad;
}

sub rests {
    my ($pid, $what) = @_;
    my @bad;
    wait_until(sub { @bad = at_rest($pid); !@bad }, 20);
    is_deeply(\@bad, [], $what)
        or diag explain \@bad, worker_libs(status(), $lib)->{$pid};
}

# B's handle goes, and its runtimes with it (reaped: the last reference
# of a runtime to the image it ran on is given back). /ffi/status would
# wait for A, which holds in its prepare: the metrics are B's own count.
sub b_unloads {
    my ($cb, $slot, $n) = @_;
    is(get_on($cb, '/same?cfg=x&unload=1'), "v1\n", "$n: B: its handle unloaded");
    ok(wait_until(sub {
        my ($st, $m) = FFITest::http('GET', '/ffi/metrics');
        return 0 unless $st == 200;
        my $rts = 0;
        $rts += $1 while $m =~ /^ffi_worker_runtimes\{worker="$slot",[^}]*\} (\d+)$/mg;
        return $m =~ /^ffi_worker_runtimes\{worker="$slot",/m && $rts == 0;
    }, 20), "$n: B: its runtimes reaped");
}

install(release('v1'), $lib);
FFITest::start_nginx(workers => 2, config => $config,
                     http_config => "ffi_reload_timeout 30s;\n"
                                    . "ffi_close_grace 10ms;\n",
                     allow_alerts => 1);
my ($wa, $wb) = workers(2);
my $cb = WorkerConn->to_worker($wb);
my ($bslot) = map { $_->{slot} } grep { $_->{pid} == $wb }
              @{ status()->{workers} };

# A (pid $wa) coordinates a reload of the same bytes and holds in its own
# prepare; B prepares, then unloads its only handle and its runtimes are
# reaped; then A ends the reload ($end: 'abort', A is killed; 'commit')
sub round {
    my ($n, $end) = @_;
    my $ca = WorkerConn->to_worker($wa);
    is(get_on($ca, '/same?cfg=' . escape($pause)), "v1\n", "$n: A: a handle that pauses");
    is(get_on($cb, '/same?cfg=x'), "v1\n", "$n: B: a handle");
    touch("$P-$wa.hold-v1");
    $ca->send_request('POST', '/ffi/reload?lib=' . escape($lib));
    ok(FFITest::wait_for_log(qr/\[info\] $wb#\d+: .*"\Q$lib\E" version \d+ prepared here: ok/,
                             20, $n), "$n: B prepared (the same image)");
    b_unloads($cb, $bslot, $n);

    if ($end eq 'abort') {
        FFITest::signal('KILL', $wa);
        ok(FFITest::wait_for_log(qr/$wb#\d+: .*"\Q$lib\E": version \d+ was not committed/,
                                 20, 1), "$n: B: not committed, what it prepared goes");
        unlink "$P-$wa.hold-v1";
        ($wa) = grep { $_ != $wb } workers(2);

    } else {
        unlink "$P-$wa.hold-v1";
        my ($s, $body) = $ca->read_response(60);
        is($s, 200, "$n: committed") or diag $body;
    }

    $ca->close;
    is(get_on($cb, '/same?cfg=y&unload=1'), "v1\n", "$n: B: a new handle serves (and goes)");
    ok(kill(0, $wb), "$n: B still runs");
    rests($wb, "$n: B at rest: refcounts are runtimes, nothing mapped unused");
}

round(1, 'abort');
round(2, 'commit');

unlike(FFITest::error_log(), qr/exited on signal (?!9\b)|AddressSanitizer/,
       'no worker crashed');

$cb->close;
FFITest::stop_nginx();
done_testing();
