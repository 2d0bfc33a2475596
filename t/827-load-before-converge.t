# A load that runs in a worker after the shared zone changed and before the
# worker converged on it (its eventfd not read yet: the request was
# already waiting when the coordinator published). The worker maps each
# shadow copy once, so such a load gets the image the worker has of that
# copy: the canary's (promoted) or the one prepared (a reload committed).
# Whatever happened in that order, at rest every image's refcount is the
# runtimes on it, only the current image serves, a library loaded without
# unpin has its current image pinned, and an unpinned image nothing uses
# is closed. Two workers: A coordinates, B is stopped with a request
# queued on its connection, so that it runs that request first. Last, a
# canary prepared in B whose only handle is unloaded before the commit:
# what B prepared becomes its canary, nothing stays prepared.
use lib 't/lib', 't/lib/misbehave';
use strict;
use warnings;
use FFITest;
use Test::More;
use JSON::PP;
use MBTest qw(install release escape status worker_libs wait_until workers);
use WorkerConn;

my $root = FFITest::servroot();
my $dir = "$root/lib";
mkdir $dir, 0755;
my $cyc = "$dir/libcyc.so";     # upstream's way: a handle per request
my $keep = "$dir/libkeep.so";   # loaded once per worker, pinned
my $twin = "$dir/libtwin.so";   # a handle unloaded between prepare and commit
my $P = "$root/pause";
my $pause = "pause:$P";

my $config = <<"CONF";
location /ffi/ { ffi_admin; }
location = /pid { content_by_lua_block { ngx.print(ngx.worker.pid()) } }
location = /cycle {
    content_by_lua_block {
        local rt, err = ngx.load_ffi("$cyc", nil, {unpin = true})
        if not rt then
            ngx.say("load: ", err)
            return
        end
        local ok, res = rt:call("version")
        rt:__unload()
        ngx.say(tostring(res))
    }
}
location = /keep {
    content_by_lua_block {
        local rt, err = ngx.load_ffi("$keep", ngx.unescape_uri(ngx.var.arg_cfg or ""))
        if not rt then
            ngx.say("load: ", err)
            return
        end
        local ok, res = rt:call("version")
        ngx.say(tostring(res))
    }
}
location = /twin {
    content_by_lua_block {
        local rt, err = ngx.load_ffi("$twin", ngx.unescape_uri(ngx.var.arg_cfg or ""))
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

sub post_on {
    my ($c, $what, $path, $args) = @_;
    my ($s, $body) = $c->request('POST', "/ffi/$what?lib=" . escape($path)
                                         . ($args // ''), 30);
    return ($s, $body);
}

sub get_on {
    my ($c, $uri) = @_;
    my (undef, $body) = $c->request('GET', $uri);
    return $body // 'none';
}

# what is wrong with worker $pid's view of $path at rest, as a list
sub at_rest {
    my ($pid, $path, $pinned) = @_;
    my $l = worker_libs(status(), $path)->{$pid} or return ('no entry');
    my @bad;
    my %rts;
    $rts{ $_->{image_version} }++ for @{ $l->{runtimes} };
    for my $img (@{ $l->{images} }) {
        my $n = $rts{ $img->{version} } // 0;
        push @bad, "image $img->{version}: refcount $img->{refcount}, "
                   . "$n runtime(s)" if $img->{refcount} != $n;
        push @bad, "image $img->{version} serves, current is $l->{version}"
            if $img->{state} eq 'serving' && $img->{version} != $l->{version};
        push @bad, "image $img->{version} unused and mapped"
            if !$pinned && $n == 0;
    }
    push @bad, "current image not pinned"
        if $pinned && $l->{state} ne 'closed' && !$l->{pinned};
    push @bad, "a runtime not on version $l->{version}"
        if grep { $_->{state} eq 'serving' && $_->{version} != $l->{version} }
           @{ $l->{runtimes} };
    return @bad;
}

sub rests {
    my ($pid, $path, $pinned, $what) = @_;
    my @bad;
    wait_until(sub { @bad = at_rest($pid, $path, $pinned); !@bad }, 20);
    is_deeply(\@bad, [], $what)
        or diag explain \@bad, worker_libs(status(), $path)->{$pid};
}

# worker $pid has nothing draining any more: no runtime of its can wake it
# (a drained runtime's notice) before the request queued while it is stopped
sub settled {
    my ($pid) = @_;
    ok(wait_until(sub {
        my $st = status();
        my ($w) = grep { $_->{pid} == $pid } @{ $st->{workers} || [] };
        $w && !grep { $_->{state} ne 'serving' }
                   map { @{ $_->{runtimes} } } @{ $w->{libraries} };
    }, 20), "worker $pid: nothing draining");
}

install(release('v1'), $cyc);
install(release('v1'), $keep);
install(release('v1'), $twin);
FFITest::start_nginx(workers => 2, config => $config,
                     http_config => "ffi_reload_timeout 3s;\n"
                                    . "ffi_close_grace 10ms;\n"
                                    . "ffi_canary_guard off;");
my ($a, $b) = workers(2);
my $ca = WorkerConn->to_worker($a);
my $cb = WorkerConn->to_worker($b);

# ---- 1. a handle per request, a load between promote and converge
is(get_on($cb, '/cycle'), "v1\n", 'B: a cycle on version 1');
install(release('v2'), $cyc);
my ($s, $body) = post_on($ca, 'reload', $cyc, '&canary=50');
is($s, 200, 'a canary of v2') or diag $body;
ok(wait_until(sub { get_on($cb, '/cycle') eq "v2\n" }, 20),
   'B maps the canary (a cycle on it)');
like(get_on($ca, '/cycle'), qr/^v[12]\n\z/, 'A: a cycle');
settled($b);
FFITest::signal('STOP', $b);
$cb->send_request('GET', '/cycle');
($s, $body) = post_on($ca, 'promote', $cyc);
is($s, 202, 'promoted, B stopped: 202') or diag $body;
FFITest::signal('CONT', $b);
($s, $body) = $cb->read_response(30);
is($body, "v2\n", 'B, first thing it does: a cycle on the promoted version');
is(get_on($cb, '/cycle'), "v2\n", 'B: and the next one');
rests($b, $cyc, 0, 'B at rest: no reference left, nothing mapped unused');
rests($a, $cyc, 0, 'A at rest too');

# ---- 2. a persistent handle, a new one loaded before the converge
is(get_on($cb, '/keep?cfg=one'), "v1\n", 'B: a handle on version 1');
is(get_on($ca, '/keep?cfg=one'), "v1\n", 'A: one too');
install(release('v2'), $keep);
($s, $body) = post_on($ca, 'reload', $keep, '&canary=50');
is($s, 200, 'a canary of v2') or diag $body;
settled($b);
FFITest::signal('STOP', $b);
$cb->send_request('GET', '/keep?cfg=two');
($s, $body) = post_on($ca, 'promote', $keep);
is($s, 202, 'promoted, B stopped: 202') or diag $body;
FFITest::signal('CONT', $b);
($s, $body) = $cb->read_response(30);
is($body, "v2\n", 'B: the new handle is on the promoted version');
is(get_on($cb, '/keep?cfg=one'), "v2\n", 'B: the old one too');
rests($b, $keep, 1, 'B at rest: refcounts are runtimes, current pinned');
rests($a, $keep, 1, 'A at rest too');

# ---- 3. a plain reload: a load between commit and converge gets the
# image B prepared
is(get_on($ca, '/keep?cfg=' . escape($pause)), "v2\n", 'A: a handle that pauses');
settled($b);
touch("$P-$a.hold-v3");
install(release('v3'), $keep);
$ca->send_request('POST', '/ffi/reload?lib=' . escape($keep));
ok(FFITest::wait_for_log(qr/\[info\] $b#\d+: .*"\Q$keep\E" version 3 prepared here: ok/,
                         20, 1), 'B prepared version 3');
FFITest::signal('STOP', $b);
$cb->send_request('GET', '/keep?cfg=three');
unlink "$P-$a.hold-v3";
($s, $body) = $ca->read_response(30);
is($s, 202, 'committed, B stopped: 202') or diag $body;
FFITest::signal('CONT', $b);
($s, $body) = $cb->read_response(30);
is($body, "v3\n", 'B: the new handle is on the committed version');
is(get_on($cb, '/keep?cfg=one'), "v3\n", 'B: the old ones too');
rests($b, $keep, 1, 'B at rest: refcounts are runtimes, current pinned');

# ---- 4. a canary prepared in B, whose only handle goes before the commit:
# B's canary is the image it prepared, and nothing else stays prepared
is(get_on($ca, '/twin?cfg=' . escape($pause)), "v1\n", 'A: a handle that pauses');
is(get_on($cb, '/twin?cfg=x'), "v1\n", 'B: a handle');
touch("$P-$a.hold-v2");
install(release('v2'), $twin);
$ca->send_request('POST', '/ffi/reload?lib=' . escape($twin) . '&canary=50');
ok(FFITest::wait_for_log(qr/\[info\] $b#\d+: .*"\Q$twin\E" version 2 prepared here: ok/,
                         20, 1), 'B prepared version 2');
is(get_on($cb, '/twin?cfg=x&unload=1'), "v1\n", 'B: its handle unloaded');
unlink "$P-$a.hold-v2";
($s, $body) = $ca->read_response(30);
is($s, 200, 'the canary runs') or diag $body;
my %seen;
$seen{ get_on($cb, '/twin?cfg=y') }++ for 1 .. 4;
is_deeply(\%seen, { "v1\n" => 2, "v2\n" => 2 },
          'B: a new handle, its calls on both versions');
sub b_runtimes {
    my $l = worker_libs(status(), $twin)->{$b};
    return join ',', sort map { $_->{version} }
                     grep { $_->{state} eq 'serving' } @{ $l->{runtimes} };
}
is(b_runtimes(), '1,2', 'B: one runtime on each version, no other');
($s, $body) = post_on($ca, 'rollback', $twin);
is($s, 200, 'the canary retired') or diag $body;
is(get_on($cb, '/twin?cfg=y'), "v1\n", 'B: on version 1 alone');
rests($b, $twin, 1, 'B at rest: refcounts are runtimes');
unlike(FFITest::error_log(), qr/libtwin.*(?:cannot map|gets no canary)/,
       'B mapped the canary for its handles');

$_->close for $ca, $cb;
FFITest::stop_nginx();
done_testing();
