# A runtime that stops polling and so never takes its NULL task: after a
# reload the new version serves, status shows the old runtime "stuck" once
# ffi_reload_timeout passed, its image is never closed, and nginx -s quit
# still ends within ffi_exit_timeout (plus a margin).
use lib 't/lib';
use lib 't/lib/misbehave';
use FFITest;
use MBTest qw(mb_lib install reload status worker_libs wait_until workers
              footprint);
use Test::More;
use Time::HiRes qw(time);

my $root = FFITest::servroot();
my $dir = "$root/lib";
mkdir $dir, 0755;
my $lib = "$dir/libmb_no_null.so";
install(mb_lib('libmb_no_null-v1.so'), $lib);

my $config = <<"CONF";
location /ffi/ { ffi_admin; allow 127.0.0.1; deny all; }
location = /v {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("$lib", nil, {unpin = true}))
        local ok, res = rt:call("version", 2)
        ngx.say(tostring(ok), " ", tostring(res))
    }
}
CONF

# each worker's runtime serves one call, then stops polling for good
my $init_worker = <<"LUA";
local rt = assert(ngx.load_ffi("$lib", nil, {unpin = true}))
ngx.timer.at(0, function()
    local ok, res = rt:call("stop")
    ngx.log(ngx.WARN, "stop answered: ", tostring(ok), " ", tostring(res))
end)
LUA

FFITest::start_nginx(workers => 2, config => $config,
                     init_worker_by_lua_block => $init_worker,
                     http_config => "ffi_reload_timeout 1s;\n"
                                    . "ffi_exit_timeout 2s;\n"
                                    . "ffi_close_grace 50ms;");
my @pids = workers(2);
is(scalar @pids, 2, 'two workers');
ok(FFITest::wait_for_log('stop answered: true stopping', 10, 2),
   'both runtimes answered "stop"');
ok(FFITest::wait_for_log('mb_no_null v1 stops polling', 10, 2),
   'both stopped polling');

install(mb_lib('libmb_no_null-v2.so'), $lib);
# the old runtimes start to drain after this moment, however slow we are
my $t_reload = time;
my ($status, $json, $body) = reload($lib);
is($status, 200, 'reload answers 200') or diag($body);
is($json->{version}, 2, 'version 2');
my %seen;
$seen{ $_->[1] // 'none' }++ for FFITest::concurrent(40, 'GET', '/v');
is_deeply(\%seen, { "true v2\n" => 40 }, 'v2 serves every call');

my $t0 = time;
my %state;
my $st = status();
for my $pid (@pids) {
    my $l = worker_libs($st, $lib)->{$pid};
    my %by = map { ($_->{image_version} => $_->{state}) }
             @{ $l->{runtimes} || [] };
    is_deeply(\%by, { 1 => 'draining', 2 => 'serving' },
              "worker $pid: v1 draining, v2 serving");
}

# "stuck" once it has drained for longer than ffi_reload_timeout (1 s)
for my $pid (@pids) {
    my $stuck = wait_until(sub {
        my $l = worker_libs(status(), $lib)->{$pid} or return 0;
        my ($old) = grep { $_->{image_version} == 1 } @{ $l->{runtimes} };
        return $old && $old->{state} eq 'stuck' ? $l : 0;
    }, 5);
    ok($stuck, "worker $pid: the v1 runtime shows \"stuck\"");
    is($stuck && $stuck->{mapped_images}, 2,
       "worker $pid: both images mapped");
    my %img = map { ($_->{version} => $_->{state}) }
              @{ $stuck ? $stuck->{images} : [] };
    is($img{1}, 'draining', "worker $pid: image v1 draining, not closed");
}
cmp_ok(time - $t_reload, '>=', 1, 'not stuck before ffi_reload_timeout');

# many grace periods later, the image is still there, in status and maps
ok(!FFITest::wait_for_log(qr/closing "\Q$lib\E"/, 1),
   'no "closing" line in 1 s (20 x ffi_close_grace)');
for my $pid (@pids) {
    my %images = map { m{(/\S*/libmb_no_null\.so\.\S+)} ? ($1 => 1) : () }
                 @{ footprint($pid)->{map_lines} };
    is(scalar keys %images, 2, "worker $pid maps both shadow copies");
}
%seen = ();
$seen{ $_->[1] // 'none' }++ for FFITest::concurrent(20, 'GET', '/v');
is_deeply(\%seen, { "true v2\n" => 20 }, 'v2 serves on');

# --- quit: bounded by ffi_exit_timeout (2 s), not forever
my $master = FFITest::master_pid();
my @quitting = FFITest::worker_pids();
$t0 = time;
FFITest::signal('QUIT');
# up to the workers' "exit": under ASan, LeakSanitizer's scan follows
ok(FFITest::wait_at_exit(\@quitting, 10), 'the workers are at their exit');
my $secs = time - $t0;
ok(FFITest::wait_exit($master, 10), 'nginx quit');
cmp_ok($secs, '<', 2 + 2,
       sprintf('within ffi_exit_timeout 2s + 2s (%.1f s)', $secs));
FFITest::stop_nginx('never takes its NULL task');
my $log = FFITest::error_log();
like($log, qr/1 runtime\(s\) did not take their NULL task within 2000 ms/,
     'error.log names the runtime that kept the worker');
my $exits = () = $log =~ /worker process \d+ exited with code 0/g;
is($exits, 2, 'both workers exited with code 0');

done_testing();
