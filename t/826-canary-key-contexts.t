# A canary's key is read only where a request has a client: a call from an
# ngx.timer (a fake request, no client address) is routed by call, even
# when the key is a variable that needs the client (binary_remote_addr);
# reading it there would crash the worker, as ngx.var is barred in timers.
use lib 't/lib';
use lib 't/lib/misbehave';
use FFITest;
use MBTest qw(release install escape status worker_libs workers wait_until);
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

# n calls, one after the other, from one timer: logged by answer
location = /timer {
    content_by_lua_block {
        local n = tonumber(ngx.var.arg_n)
        assert(ngx.timer.at(0, function()
            local rt = assert(ngx.load_ffi("$ver", nil, {unpin = true}))
            local seen = {}
            for _ = 1, n do
                local ok, res = rt:call("version")
                local k = ok and res or ("failed:" .. tostring(res))
                seen[k] = (seen[k] or 0) + 1
            end
            local out = {}
            for k, c in pairs(seen) do out[#out + 1] = k .. "=" .. c end
            table.sort(out)
            ngx.log(ngx.WARN, "timer calls: ", table.concat(out, " "))
        end))
        ngx.say("started")
    }
}
CONF

install(release('v1'), $ver);
FFITest::start_nginx(workers => 1, config => $config,
                     http_config => "ffi_close_grace 50ms;\n"
                                    . "ffi_canary_guard off;",
                     init_worker_by_lua_block => <<"LUA");
assert(ngx.load_ffi("$ver", nil, {unpin = true}))
ngx.log(ngx.WARN, "loaded")
LUA
ok(FFITest::wait_for_log('loaded', 10), 'worker up');
my @pids = FFITest::worker_pids();

install(release('v2'), $ver);
my ($s, $body) = FFITest::http('POST', '/ffi/reload?lib=' . escape($ver)
                                       . '&canary=50&key=binary_remote_addr');
is($s, 200, 'canary at 50% keyed by binary_remote_addr') or diag($body);

my %seen;
$seen{ $_->[1] // 'none' }++ for FFITest::concurrent(10, 'GET', '/v');
is(scalar(keys %seen), 1, 'requests of one client: one version');

($s, $body) = FFITest::http('GET', '/timer?n=4');
is($s, 200, 'timer started');
ok(FFITest::wait_for_log(qr/timer calls: /, 10), 'the timer\'s calls answered');
my ($line) = FFITest::error_log() =~ /timer calls: ([^,]*),/;
is($line, 'v1=2 v2=2', 'routed by call: 2 of 4 to the canary');
unlike(FFITest::error_log(), qr/exited on signal/, 'no worker crashed');
is_deeply([FFITest::worker_pids()], \@pids, 'the same worker serves on');

FFITest::stop_nginx();
done_testing();
