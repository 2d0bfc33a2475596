# A file drop (ffi_watch on) is recorded in the history as how "drop",
# whether it became a version or was refused; a rollback after a refused
# drop brings the previous bytes back and the watcher leaves them be.
use lib 't/lib';
use lib 't/lib/misbehave';
use FFITest;
use MBTest qw(release install escape status workers wait_until);
use Test::More;
use JSON::PP;

my $root = FFITest::servroot();
my $dir = "$root/lib";
mkdir $dir, 0755;
my $ver = "$dir/libver.so";

sub file_sha {
    my ($file) = @_;
    my ($sum) = split ' ', `sha256sum $file`;
    return $sum;
}

sub history {
    my $st = status();
    my ($sl) = grep { $_->{path} eq $ver } @{ $st->{libraries} || [] };
    return $sl ? $sl->{history} : [];
}

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
FFITest::start_nginx(workers => 2, config => $config,
                     http_config => "ffi_watch on;\nffi_watch_delay 100ms;"
                                    . "\nffi_close_grace 50ms;",
                     init_worker_by_lua_block => <<"LUA");
assert(ngx.load_ffi("$ver", nil, {unpin = true}))
ngx.log(ngx.WARN, "loaded")
LUA
ok(FFITest::wait_for_log('loaded', 10, 2), 'both workers up');
workers(2);

# --- a good drop
install(release('v2'), $ver);
ok(FFITest::wait_for_log(qr/"\Q$ver\E" reloaded: version 2\b/, 10),
   'the drop reloaded to version 2');
my $h = history();
is(scalar @$h, 2, 'two entries');
is($h->[1]{version}, 2, 'version 2');
is($h->[1]{how}, 'drop', 'how: drop');
is($h->[1]{outcome}, 'ok', 'outcome: ok');
is($h->[1]{sha256}, file_sha(release('v2')), 'sha256 of the dropped file');

# --- a broken drop: refused, recorded
open my $g, '>', "$dir/bad.tmp" or die;
print $g "not a library\n";
close $g;
rename "$dir/bad.tmp", $ver or die;
ok(wait_until(sub { grep { $_->{outcome} eq 'refused' } @{ history() } },
              10), 'the broken drop is in the history');
$h = history();
is($h->[-1]{how}, 'drop', 'refusal: how drop');
is($h->[-1]{status}, 422, 'refusal: 422');
like($h->[-1]{reason}, qr/not an ELF file/, 'refusal: why');

# --- rollback: version 1's bytes again; the broken file was judged once,
#     so the watcher starts no other reload
my ($status, $body) = FFITest::http('POST',
                                    '/ffi/rollback?lib=' . escape($ver));
is($status, 200, 'rollback after a broken drop: 200');
is(decode_json($body)->{rolled_back_to}, 1, 'to version 1');
my %seen;
$seen{ (FFITest::http('GET', '/v'))[1] }++ for 1 .. 20;
is_deeply(\%seen, { "v1\n" => 20 }, 'v1 serves');
$h = history();
is($h->[-1]{how}, 'rollback', 'last entry: the rollback');
is($h->[-1]{version}, 3, 'version 3');
is($h->[-1]{from}, 1, 'from version 1');

ok(FFITest::stop_nginx(), 'nginx quit cleanly');
my $log = FFITest::error_log();
my @reloads = $log =~ /"\Q$ver\E" reloaded: version (\d+)/g;
is_deeply(\@reloads, [2], 'one reload logged: the drop');
like($log, qr/"\Q$ver\E" rolled back: version 3, the bytes of version 1\n/,
     'the rollback is logged as one');

done_testing();
