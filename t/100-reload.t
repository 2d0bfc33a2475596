# Hot reload through the admin endpoint, with 2 workers: new versions are
# served everywhere (cached runtime objects too), calls in flight finish on
# the old version, failures roll back, Go-like libraries answer 409.
use lib 't/lib';
use lib 't/lib/misbehave';
use FFITest;
use MBTest qw(release install escape reload status workers);
use Test::More;
use JSON::PP;
use File::Copy qw(copy);

my $repo = FFITest::repo();
my $root = FFITest::servroot();
my $dir = "$root/lib";
mkdir $dir, 0755;

my $ver = "$dir/libver.so";
my $go = "$dir/libgoish.so";

sub build_id {
    my ($file) = @_;
    my $out = `readelf -n $file`;
    return $out =~ /Build ID: ([0-9a-f]+)/ ? $1 : '';
}

# every answer of N concurrent calls to $path, with the worker pids
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

install(release('v1'), $ver);

# a Go-looking library: a .go.buildinfo section pins it for life
system("printf 'go1.19' > $dir/buildinfo") == 0 or die;
system('objcopy', '--add-section', ".go.buildinfo=$dir/buildinfo",
       release('v1'), "$dir/goish-v1.so") == 0 or die;
system('objcopy', '--add-section', ".go.buildinfo=$dir/buildinfo",
       release('v2'), "$dir/goish-v2.so") == 0 or die;
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

location = /cached {
    content_by_lua_block {
        -- loaded once per worker, kept in a module-level variable
        local rt = package.loaded.cached_rt
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

my $init_worker = <<"LUA";
package.loaded.cached_rt = assert(ngx.load_ffi("$ver", nil, {unpin = true}))
assert(ngx.load_ffi("$go"))
ngx.log(ngx.WARN, "cached runtime loaded")
LUA

FFITest::start_nginx(workers => 2, config => $config,
                     http_config => 'ffi_close_grace 50ms;',
                     init_worker_by_lua_block => $init_worker);
ok(FFITest::wait_for_log('cached runtime loaded', 10, 2), 'both workers up');
my @workers = MBTest::workers(2);      # both forked, not just the first

my ($seen, $pids) = answers('/v', 40);
is_deeply($seen, { 'true v1' => 40 }, 'v1 serves');

# --- a new file, one POST: every worker, cached objects too, serve it
install(release('v2'), $ver);
my ($status, $json) = reload($ver);
is($status, 200, 'reload answers 200');
is($json->{lib}, $ver, 'named as loaded');
is($json->{version}, 2, 'version 2');
is($json->{changed}, JSON::PP::true, 'the image changed');
is($json->{build_id}, build_id(release('v2')), 'build-id of the new file');

($seen, $pids) = answers('/v', 40);
is_deeply($seen, { 'true v2' => 40 }, 'v2 serves every call');
($seen) = answers('/cached', 40);
is_deeply($seen, { 'true v2' => 40 }, 'cached runtime objects follow');

my $st = status();
is(scalar @{ $st->{workers} }, 2, 'status covers 2 workers');
for my $w (@{ $st->{workers} }) {
    my ($l) = grep { $_->{path} eq $ver } @{ $w->{libraries} };
    ok($l, "worker $w->{pid} has the library");
    is($l->{version}, 2, "worker $w->{pid} is on version 2");
    my @serving = grep { $_->{state} eq 'serving' } @{ $l->{runtimes} };
    is(scalar @serving, 1, "worker $w->{pid}: one serving runtime");
    is($serving[0]{version}, 2, "worker $w->{pid}: it runs version 2");
}

# --- a reload while 100 calls are in flight: none fails
my $conns = FFITest::begin_requests(100, 'GET', '/v?q=sleep:800');
ok(FFITest::wait_for_log('libver v2 got sleep', 10, 100),
   '100 calls are in the v2 runtimes');
install(release('v3'), $ver);
($status, $json) = reload($ver);
is($status, 200, 'reload with calls in flight answers 200');
is($json->{version}, 3, 'version 3');
($seen) = answers('/v', 20);
is_deeply($seen, { 'true v3' => 20 }, 'new calls go to v3 at once');
my @res = FFITest::finish_requests($conns, 15);
my %old = map { (($_->[1] // 'none') =~ /^(.*) \d+\n\z/ ? $1 : 'bad') => 1 }
          @res;
is_deeply([sort keys %old], ['true v2'],
          'the 100 calls in flight were answered by v2');

# --- a failing libffi_init rolls back everywhere
install(release('fail'), $ver);
($status, $json) = reload($ver);
is($status, 422, 'failing libffi_init: 422');
like($json->{error}, qr/libffi_init of "\Q$ver\E" returned 9/,
     'the error names libffi_init and its rc');
($seen) = answers('/v', 20);
is_deeply($seen, { 'true v3' => 20 }, 'v3 serves on');
($seen) = answers('/cached', 20);
is_deeply($seen, { 'true v3' => 20 }, 'cached objects still on v3');
$st = status();
my ($sl) = grep { $_->{path} eq $ver } @{ $st->{libraries} };
is($sl->{version}, 3, 'shared version stays 3');
like($sl->{last_error}, qr/returned 9/, 'status shows the last error');

# --- files that are not loadable: 422, nothing changes
for my $bad (['a text file', sub { open my $f, '>', $_[0]; print $f "hi\n" }],
             ['an empty file', sub { open my $f, '>', $_[0] }],
             ['a truncated library', sub {
                 copy(release('v1'), $_[0]); truncate $_[0], 3000 }])
{
    my ($what, $make) = @$bad;
    $make->("$dir/bad.tmp");
    rename "$dir/bad.tmp", $ver or die;
    ($status, $json) = reload($ver);
    is($status, 422, "$what: 422");
    like($json->{error}, qr/\Q$ver\E/, "$what: the error names the file");
    ($seen) = answers('/v', 10);
    is_deeply($seen, { 'true v3' => 10 }, "$what: v3 serves on");
}

# --- a crash in libffi_init or a constructor costs no worker: a trial
#     process runs them first
for my $crash (qw(crashinit crashctor)) {
    install(release($crash), $ver);
    ($status, $json) = reload($ver);
    is($status, 422, "$crash: 422");
    like($json->{error}, qr/crashed \(signal 11\) in a constructor or libffi_init, in a trial process/,
         "$crash: the error says it crashed in a trial");
    ($seen) = answers('/v', 10);
    is_deeply($seen, { 'true v3' => 10 }, "$crash: v3 serves on");
    is_deeply([sort { $a <=> $b } FFITest::worker_pids()],
              [sort { $a <=> $b } @workers], "$crash: no worker restarted");
}
unlike(FFITest::error_log(), qr/exited on signal|\[alert\]/,
       'no alert: the trial was reaped by the module');

# --- the same file again: a runtime restart on the same image
install(release('v3'), $ver);
($status, $json) = reload($ver);
is($status, 200, 'unchanged file: 200');
is($json->{changed}, JSON::PP::false, 'unchanged file: same image');
is($json->{version}, 4, 'versions count reloads, not files');
($seen) = answers('/cached', 10);
is_deeply($seen, { 'true v3' => 10 }, 'restarted runtime serves');

# --- a library that cannot be unloaded
($seen) = answers('/go', 10);
is_deeply($seen, { 'true v1' => 10 }, 'Go-like library serves');
($status, $json) = reload($go);
is($status, 200, 'Go-like, unchanged file: runtime restart is fine');
install("$dir/goish-v2.so", $go);
($status, $json) = reload($go);
is($status, 409, 'Go-like, changed file: 409');
like($json->{error}, qr/cannot be unloaded.*go runtime/,
     '409 says why');
($seen) = answers('/go', 10);
is_deeply($seen, { 'true v1' => 10 }, 'the old version serves on');
$st = status();
($sl) = grep { $_->{path} eq $go } @{ $st->{libraries} };
is($sl->{pin_reason}, 'go', 'status: pinned because of Go');

# --- 10 reloads of an unpinned library: at most 2 images mapped a worker
for my $i (1 .. 10) {
    install(release($i % 2 ? 'v1' : 'v2'), $ver);
    ($status) = reload($ver);
    is($status, 200, "reload $i of 10");
}
($seen) = answers('/v', 10);
is_deeply($seen, { 'true v2' => 10 }, 'the last one serves');

# the last old image goes once drained and past its grace (50 ms)
ok(FFITest::wait_for_log(qr/closing "\Q$ver\E" version 13/, 10, 2),
   'both workers closed the image before the last');
for my $pid (@workers) {
    open my $maps, '<', "/proc/$pid/maps" or die;
    my %images = map { /(\S+libver\.so\.[0-9a-f]+)/ ? ($1 => 1) : () }
                 <$maps>;
    cmp_ok(scalar keys %images, '<=', 2,
           "worker $pid maps at most 2 images of the library");
}

FFITest::stop_nginx();
done_testing();
