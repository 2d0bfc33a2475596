# A runtime that answers with huge bodies (up to 64 MiB, with a length and
# NUL-terminated): Lua gets every byte, nginx sends every byte, and the
# answers are freed.
use lib 't/lib';
use lib 't/lib/misbehave';
use FFITest;
use MBTest qw(mb_lib footprint workers);
use Test::More;
use Digest::MD5 qw(md5_hex);

my $huge = mb_lib('libmb_huge.so');
my $MiB = 1024 * 1024;

my $config = <<"CONF";
location = /sum {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("$huge"))
        local ok, res = rt:call(ngx.var.arg_m .. ":" .. ngx.var.arg_n)
        local out = tostring(ok) .. " " .. #tostring(res) .. " "
                    .. ngx.md5(tostring(res))
        res = nil
        -- the Lua string is garbage now: only a leak of ours stays
        collectgarbage()
        collectgarbage()
        ngx.say(out)
    }
}
location = /body {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("$huge"))
        local ok, res = rt:call("size:" .. ngx.var.arg_n)
        ngx.print(res)
    }
}
CONF

# the runtime's pattern: byte i is 'a' + i % 26
sub pattern {
    my ($n) = @_;
    my $s = join('', 'a' .. 'z') x (int($n / 26) + 1);
    return substr $s, 0, $n;
}

FFITest::start_nginx(workers => 1, config => $config);
my ($pid) = workers(1);

for my $case ([size => 1], [size => 26], [size => $MiB + 1],
              [nul => $MiB + 1], [size => 64 * $MiB], [nul => 64 * $MiB])
{
    my ($m, $n) = @$case;
    my $want = "true $n " . md5_hex(pattern($n)) . "\n";
    my (undef, $body) = FFITest::http('GET', "/sum?m=$m&n=$n", undef, undef,
                                      30);
    is($body, $want, "$m:$n: every byte reached Lua");
}

my ($status, $body, $h) = FFITest::http('GET', '/body?n=' . 16 * $MiB,
                                        undef, undef, 30);
is($status, 200, '16 MiB answer sent to the client: 200');
is(length $body, 16 * $MiB, 'all 16 MiB');
is(md5_hex($body), md5_hex(pattern(16 * $MiB)), 'the same bytes');

# 10 more 64 MiB answers: RSS does not keep them
my $before = footprint($pid);
for my $i (1 .. 10) {
    (undef, $body) = FFITest::http('GET', '/sum?m=size&n=' . 64 * $MiB,
                                   undef, undef, 30);
    like($body, qr/^true 67108864 /, "64 MiB answer $i");
}
my $after = footprint($pid);
note("worker $pid rss $before->{rss} kB -> $after->{rss} kB");
cmp_ok($after->{rss} - $before->{rss}, '<', 128 * 1024,
       '640 MiB of answers later, RSS grew < 128 MiB');
is($after->{fds}, $before->{fds}, 'open files flat');

FFITest::stop_nginx('huge answers');
done_testing();
