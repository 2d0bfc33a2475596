# 10,000 calls and 100 reloads with 2 workers, the calls mixed across a
# reloaded library, a runtime that answers from a timer thread and
# misbehaving runtimes (late answers after timeouts, a 1 MiB answer):
# every answer right, nothing left behind. The workload that
# `make test-memcheck` runs under AddressSanitizer. (Double answers have
# t/521 to themselves.)
use lib 't/lib';
use lib 't/lib/misbehave';
use FFITest;
use MBTest qw(mb_lib release install reload status workers wait_until);
use Test::More;
use Time::HiRes qw(time);

my $CYCLES = 100;
my $PER_CYCLE = 100;        # calls per cycle, in one request

my $root = FFITest::servroot();
my $dir = "$root/lib";
mkdir $dir, 0755;
my $ver = "$dir/libver.so";
my $silent = mb_lib('libmb_silent.so');
my $huge = mb_lib('libmb_huge.so');

my $config = <<"CONF";
location /ffi/ { ffi_admin; allow 127.0.0.1; deny all; }
location = /mix {
    content_by_lua_block {
        local v = assert(ngx.load_ffi("$ver", nil, {unpin = true}))
        local late = assert(ngx.load_ffi("$silent", "late=1000"))
        local timer = assert(ngx.load_ffi("ffi_test", "threads=2"))
        local huge = assert(ngx.load_ffi("$huge"))
        local tag, want = ngx.var.arg_tag, ngx.var.arg_v
        local counts = {}
        local function count(what)
            counts[what] = (counts[what] or 0) + 1
        end
        for i = 1, $PER_CYCLE do
            local ok, res
            local k = i % 10
            if k == 1 then
                -- times out at 1 ms, answered at 1 s (a worker that a
                -- loaded machine holds up still times out first): freed
                -- late
                ok, res = late:call("late " .. i, 0.001)
                count(not ok and res == "timeout" and "timeout"
                      or "bad late: " .. tostring(ok) .. " "
                         .. (type(res) == "string" and #res > 32
                             and #res .. " bytes" or tostring(res)))
            elseif k == 2 then
                -- answered by a timer thread, 1 ms later
                ok, res = timer:call("sleep:1:" .. tag .. i)
                count(ok and res == tag .. i and "sleep" or "bad")
            elseif k == 3 and i == 3 then
                ok, res = huge:call("size:1048576")
                count(ok and #res == 1048576 and "huge" or "bad")
            elseif k == 4 then
                ok, res = v:call("version")
                count(ok and res == want and "version" or "bad")
            else
                ok, res = v:call("echo " .. tag .. i)
                count(ok and res == "echo " .. tag .. i and "echo" or "bad")
            end
        end
        local keys = {}
        for k in pairs(counts) do keys[#keys + 1] = k end
        table.sort(keys)
        for _, k in ipairs(keys) do ngx.say(k, "=", counts[k]) end
    }
}
CONF

install(release('v1'), $ver);
FFITest::start_nginx(workers => 2, config => $config,
                     http_config => 'ffi_close_grace 10ms;',
                     init_worker_by_lua_block => <<"LUA");
assert(ngx.load_ffi("$ver", nil, {unpin = true}))
ngx.log(ngx.WARN, "loaded")
LUA
ok(FFITest::wait_for_log('loaded', 10, 2), 'both workers up');
note("servroot: $root");

my $want = "echo=69\nhuge=1\nsleep=10\ntimeout=10\nversion=10\n";
my $current = 'v1';
my ($calls, @bad, $reloads, @failed);
for my $c (1 .. $CYCLES) {
    my $t0 = time;
    my ($status, $body) = FFITest::http('GET',
                                        "/mix?tag=c$c.&v=$current",
                                        undef, undef, 30);
    diag(sprintf "cycle $c took %.1f s", time - $t0) if time - $t0 > 1;
    $calls += $PER_CYCLE if $status == 200;
    push @bad, "cycle $c: $status " . ($body // '')
        unless $status == 200 && $body eq $want;

    $current = $c % 2 ? 'v2' : 'v1';
    install(release($current), $ver);
    ($status, my $json, $body) = reload($ver);
    $reloads++;
    push @failed, "reload $c: $status $body"
        unless $status == 200 && $json->{version} == $c + 1;
}

is($calls, $CYCLES * $PER_CYCLE, "$calls calls made");
is_deeply(\@bad, [], 'every call answered as expected');
is($reloads, $CYCLES, "$reloads reloads");
is_deeply(\@failed, [], 'every reload answered 200 with the next version');

# everything answered or freed: no call in flight anywhere, one image
ok(wait_until(sub {
       my $st = status();
       my @w = @{ $st->{workers} || [] };
       return @w == 2 && !grep {
           my $w = $_;
           grep {
               $_->{path} eq $ver
               && ($_->{mapped_images} != 1 || $_->{inflight}
                   || grep { $_->{state} ne 'serving' } @{ $_->{runtimes} })
           } @{ $w->{libraries} }
       } @w;
   }, 10), 'settled: one image of the library, nothing in flight');

FFITest::stop_nginx('10,000 calls and 100 reloads');
done_testing();
