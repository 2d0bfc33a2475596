# GET /ffi/metrics when a library's name is long (a deep path, 250 bytes,
# with quotes and backslashes that labels escape): every line of every
# family is there, whole, and promtool accepts the exposition. Each line
# carries the name: the answer's size follows the names' length.
use lib 't/lib';
use lib 't/lib/misbehave';
use FFITest;
use MBTest qw(release install reload workers escape);
use Test::More;

my $root = FFITest::servroot();
my $dir = "$root/lib";
mkdir $dir, 0755;

# a folder name of quotes and backslashes, then plain ones up to 250 bytes
my $deep = "$dir/" . ('"\\' x 20);
mkdir $deep, 0755 or die "$deep: $!";
while (length($deep) < 220) {
    my $n = 220 - length($deep);
    $deep .= '/' . ('d' x ($n > 40 ? 40 : $n));
    mkdir $deep, 0755 or die "$deep: $!";
}
my $ver = "$deep/" . ('v' x (246 - length $deep)) . '.so';    # 250
ok(length($ver) >= 245 && length($ver) < 256, 'a name of ' . length($ver)
   . ' bytes');

(my $lua = $ver) =~ s/(["\\])/\\$1/g;
my $config = <<"CONF";
location /ffi/ { ffi_admin; allow 127.0.0.1; deny all; }
location = /v {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("$lua", ngx.var.arg_cfg,
                                       {unpin = true}))
        local ok, res = rt:call("version")
        ngx.say(tostring(res))
    }
}
CONF

install(release('v1'), $ver);
FFITest::start_nginx(workers => 2, config => $config,
                     init_worker_by_lua_block => <<"LUA");
assert(ngx.load_ffi("$lua", nil, {unpin = true}))
ngx.log(ngx.WARN, "loaded")
LUA
ok(FFITest::wait_for_log('loaded', 10, 2), 'both workers up');
workers(2);

install(release('v2'), $ver);
my ($s, $j, $b) = reload($ver);
is($s, 200, 'reloaded') or diag($b);

# series of several cfgs, in both workers
for my $cfg (1 .. 4) {
    for (1 .. 4) {
        my ($st, $body) = FFITest::http('GET', "/v?cfg=c$cfg");
        is($body, "v2\n", "a call with cfg c$cfg") unless $st == 200;
    }
}

my ($status, $body) = FFITest::http('GET', '/ffi/metrics');
is($status, 200, 'metrics: 200');
ok($body =~ /\n\z/, 'the exposition ends with a whole line');
ok($body =~ /^ffi_worker_mapped_images\{/m,
   'the last family is there');
my $file = "$root/metrics.txt";
open my $fh, '>', $file or die "$file: $!\n";
print $fh $body;
close $fh;
my $lint = `promtool check metrics < $file 2>&1`;
is($?, 0, 'promtool check metrics: exit 0') or diag($lint);
is($lint, '', 'promtool check metrics: no complaint') or diag($lint);

FFITest::stop_nginx();
done_testing();
