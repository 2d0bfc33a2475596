# ffi_watch on with 2 workers: each file dropped at a loaded library's path
# is counted once in ffi_drops_total by what came of it (both workers see
# the drop, one acts), and the reload it started once in ffi_reloads_total.
use lib 't/lib';
use lib 't/lib/misbehave';
use FFITest;
use MBTest qw(release install wait_until);
use Test::More;

my $root = FFITest::servroot();
my $dir = "$root/lib";
mkdir $dir, 0755;
chmod 0755, $dir;
my $ver = "$dir/libver.so";

my $config = <<"CONF";
location /ffi/ { ffi_admin; allow 127.0.0.1; deny all; }
location = /v {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("$ver", nil, {unpin = true}))
        ngx.say(select(2, rt:call("version")))
    }
}
CONF

install(release('v1'), $ver);
# log_level debug: nginx logs each timer with its event's data, which the
# metrics refresh timer once left NULL (a worker crash at start)
FFITest::start_nginx(workers => 2, config => $config, log_level => 'debug',
                     http_config => "ffi_watch on;\nffi_watch_delay 100ms;",
                     init_worker_by_lua_block => <<"LUA");
assert(ngx.load_ffi("$ver", nil, {unpin = true}))
ngx.log(ngx.WARN, "loaded")
LUA
ok(FFITest::wait_for_log('loaded', 10, 2), 'both workers loaded it');

sub value {
    my ($name, $labels) = @_;
    my (undef, $body) = FFITest::http('GET', '/ffi/metrics');
    my $re = qr/^\Q$name\E\{lib="\Q$ver\E",\Q$labels\E\} (\d+)$/m;
    return $body =~ $re ? $1 : -1;
}

sub drops { value('ffi_drops_total', "outcome=\"$_[0]\"") }

is(drops('reloaded'), 0, 'no drop yet');

# a good file: reloaded everywhere, counted once
install(release('v2'), $ver);
ok(wait_until(sub { drops('reloaded') == 1 }, 20), 'drop of v2: reloaded');
ok(FFITest::wait_for_log(qr/"\Q$ver\E" reloaded: version 2\b/, 10, 1),
   'version 2 serves');
is(value('ffi_reloads_total', 'outcome="ok",reason="none"'), 1,
   'the reload it started: one ok');

# a file whose libffi_init fails: refused, the old version serves on
install(release('fail'), $ver);
ok(wait_until(sub { drops('refused') == 1 }, 20), 'drop of a failing file: '
   . 'refused');
ok(FFITest::wait_for_log(qr/file dropped at "\Q$ver\E" not loaded/, 10, 1),
   'logged');

my (undef, $body) = FFITest::http('GET', '/ffi/metrics');
like($body, qr/^ffi_library_version\{lib="\Q$ver\E"\} 2$/m,
     'version 2 still serves');
my $refused = 0;
$refused += $1
    while $body =~ /^ffi_reloads_total\{lib="\Q$ver\E",outcome="refused",
                    reason="[a-z]+"\}\ (\d+)$/mgx;
is($refused, 1, 'the refused reload: counted once');
is(drops('reloaded'), 1, 'still one reloaded drop (both workers saw each)');
is(drops('conflict') + drops('failed'), 0, 'no other outcome');

FFITest::stop_nginx('metrics drops');

done_testing();
