# nginx -s reload with another ffi_shm_size, with 2 workers: nginx maps a
# zone of a new size afresh, so the versions, the histories and the kept
# shadow copies of the running configuration would be lost, and version
# numbers given again. The new configuration is refused, saying why; the
# running one serves on, its history whole, and numbers go on.
use lib 't/lib';
use lib 't/lib/misbehave';
use FFITest;
use MBTest qw(release install reload status workers wait_until);
use Test::More;
use JSON::PP;

my $root = FFITest::servroot();
my $dir = "$root/lib";
mkdir $dir, 0755;
my $ver = "$dir/libver.so";

my $config = <<"CONF";
location /ffi/ { ffi_admin; allow 127.0.0.1; deny all; }
location = /v {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("$ver", nil, {unpin = true}))
        local ok, res = rt:call("version")
        ngx.say(tostring(res))
    }
}
CONF

# the refused HUP's [emerg] is expected: the log is checked below instead
my %run = (workers => 2, config => $config, allow_alerts => 1,
           init_worker_by_lua_block => <<"LUA");
assert(ngx.load_ffi("$ver", nil, {unpin = true}))
ngx.log(ngx.WARN, "loaded")
LUA

sub http_config {
    my ($size) = @_;
    return "ffi_history 4;\nffi_close_grace 50ms;\nffi_shm_size $size;";
}

sub versions {
    my ($st) = @_;
    my ($sl) = grep { $_->{path} eq $ver } @{ $st->{libraries} || [] };
    return [map { $_->{version} // 'refused' } @{ $sl ? $sl->{history} : [] }];
}

install(release('v1'), $ver);
FFITest::start_nginx(%run, http_config => http_config('8m'));
ok(FFITest::wait_for_log('loaded', 10, 2), 'both workers up');
my @old = sort { $a <=> $b } workers(2);

install(release('v2'), $ver);
my ($s, $j) = reload($ver);
is($s, 200, 'v2 reloaded');
is($j->{version}, 2, '... as version 2');
is_deeply(versions(status()), [1, 2], 'history: versions 1 and 2');

# ---- HUP with a zone of another size
open my $f, '>', "$root/conf/nginx.conf" or die;
print $f FFITest::_conf(%run, http_config => http_config('16m'));
close $f;
FFITest::signal('HUP');
ok(FFITest::wait_for_log(qr/ffi_shm_size cannot change/, 20),
   'HUP with another ffi_shm_size: refused, saying why');
like(FFITest::error_log(),
     qr/ffi_shm_size cannot change from 8388608 to 16777216/,
     '... naming both sizes');
is_deeply([sort { $a <=> $b } FFITest::worker_pids()], \@old,
          'the running workers serve on');
is_deeply(versions(status()), [1, 2], 'history whole');

install(release('v3'), $ver);
($s, $j) = reload($ver);
is($s, 200, 'v3 reloaded after the HUP');
is($j->{version}, 3, '... as version 3: no number given twice');
is_deeply(versions(status()), [1, 2, 3], 'history: versions 1, 2, 3');

# ---- HUP with the same size: applied, state kept
open $f, '>', "$root/conf/nginx.conf" or die;
print $f FFITest::_conf(%run, http_config => http_config('8m'));
close $f;
FFITest::signal('HUP');
ok(wait_until(sub {
       my %o = map { $_ => 1 } @old;
       my @now = FFITest::worker_pids();
       @now == 2 && !grep { $o{$_} } @now
   }, 20), 'HUP with the same size: two new workers');
ok(FFITest::wait_for_log('loaded', 10, 4), 'the new workers loaded');
install(release('v1'), $ver);
($s, $j) = reload($ver);
is($s, 200, 'v1 reloaded');
is($j->{version}, 4, '... as version 4');

FFITest::stop_nginx();
my @bad = grep { /\[alert\]|\[emerg\]|segfault|exited on signal/
                 && !/ffi_shm_size cannot change/ }
          split /\n/, FFITest::error_log();
is_deeply(\@bad, [], 'no other [alert], [emerg] or crash in error.log');
done_testing();
