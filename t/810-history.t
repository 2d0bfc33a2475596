# Each library's history (ffi_history N): the last N versions with their
# build-id, SHA-256, size, time, how they came and how it ended, the same
# in every worker's view and after nginx -s reload; the shadow copy of a
# version stays while it is in the history and goes when it falls out.
use lib 't/lib';
use lib 't/lib/misbehave';
use FFITest;
use MBTest qw(release install reload status workers wait_until);
use Test::More;
use JSON::PP;
use Digest::SHA qw(sha256_hex);

my $root = FFITest::servroot();
my $dir = "$root/lib";
mkdir $dir, 0755;
my $shadow = "$root/shadow";
mkdir $shadow;
chmod 01777, $shadow;

my $ver = "$dir/libver.so";

sub build_id {
    my ($file) = @_;
    my $out = `readelf -n $file`;
    return $out =~ /Build ID: ([0-9a-f]+)/ ? $1 : '';
}

sub file_sha {
    my ($file) = @_;
    my ($sum) = split ' ', `sha256sum $file`;
    return $sum;
}

# the SHA-256 of every copy in our shadow folder
sub shadow_shas {
    opendir my $d, $shadow or die;
    my @folders = grep { /^nginx-ffi\./ } readdir $d;
    closedir $d;
    return undef unless @folders == 1;
    opendir $d, "$shadow/$folders[0]" or die;
    my @files = grep { !/^\./ } readdir $d;
    closedir $d;
    return [sort map { file_sha("$shadow/$folders[0]/$_") } @files];
}

sub history {
    my $st = status();
    my ($sl) = grep { $_->{path} eq $ver } @{ $st->{libraries} || [] };
    return $sl ? $sl->{history} : undef;
}

install(release('v1'), $ver);

my $config = <<"CONF";
location /ffi/ { ffi_admin; allow 127.0.0.1; deny all; }
location = /v {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("$ver", nil, {unpin = true}))
        local ok, res = rt:call("version")
        ngx.say(tostring(ok), " ", tostring(res))
    }
}
CONF

my $t0 = time;
FFITest::start_nginx(workers => 2, config => $config,
                     http_config => "ffi_history 3;\n"
                                    . "ffi_shadow_path $shadow;\n"
                                    . "ffi_close_grace 50ms;",
                     init_worker_by_lua_block => <<"LUA");
assert(ngx.load_ffi("$ver", nil, {unpin = true}))
ngx.log(ngx.WARN, "loaded")
LUA
ok(FFITest::wait_for_log('loaded', 10, 2), 'both workers up');
workers(2);

# --- the first load is version 1, how "load"
my $h = history();
is(ref $h, 'ARRAY', 'status has a history per library');
is(scalar @$h, 1, 'one entry after the first load');
is($h->[0]{version}, 1, 'version 1');
is($h->[0]{how}, 'load', 'how: load');
is($h->[0]{outcome}, 'ok', 'outcome: ok');
is($h->[0]{sha256}, file_sha(release('v1')), 'sha256 is sha256sum of v1');
is($h->[0]{build_id}, build_id(release('v1')), 'build-id of v1');
is($h->[0]{size}, -s release('v1'), 'size of v1');
ok($h->[0]{time} >= $t0 && $h->[0]{time} <= time, 'time: when it loaded');
ok(!exists $h->[0]{from}, 'no "from" but for a rollback');

# --- an admin reload, then a refused one: both recorded
install(release('v2'), $ver);
my ($status, $json) = reload($ver);
is($status, 200, 'reload to v2: 200');
open my $g, '>', "$dir/bad.tmp" or die;
print $g "not a library\n";
close $g;
rename "$dir/bad.tmp", $ver or die;
($status, $json) = reload($ver);
is($status, 422, 'garbage: 422');

$h = history();
is(scalar @$h, 3, 'three entries: v1, v2, the refusal');
is_deeply([map { $_->{how} } @$h], [qw(load admin admin)], 'how of each');
is_deeply([map { $_->{outcome} } @$h], [qw(ok ok refused)],
          'outcome of each');
is($h->[1]{version}, 2, 'v2 is version 2');
is($h->[1]{sha256}, file_sha(release('v2')), 'sha256 of v2');
is($h->[1]{build_id}, build_id(release('v2')), 'build-id of v2');
is($h->[1]{size}, -s release('v2'), 'size of v2');
is($h->[2]{version}, undef, 'a refusal makes no version');
is($h->[2]{status}, 422, 'the refusal answered 422');
like($h->[2]{reason}, qr/\Q$ver\E/, 'its reason names the file');
is($h->[2]{sha256}, undef, 'garbage: no checked bytes');

is_deeply(shadow_shas(),
          [sort(file_sha(release('v1')), file_sha(release('v2')))],
          'the copies of v1 and v2 are kept: both are in the history');

# --- every worker's view agrees (the zone is shared): ask several times
my %seen;
for (1 .. 6) {
    $seen{ JSON::PP->new->canonical->encode(history()) }++;
}
is(scalar keys %seen, 1, 'the same history whoever answers');

# --- N is honoured: versions beyond the last 3 fall out, copies too
install(release('v3'), $ver);
($status) = reload($ver);
is($status, 200, 'reload to v3: 200');
install(release('v1'), $ver);
($status) = reload($ver);
is($status, 200, 'reload to v1 again (version 4): 200');
$h = history();
my @ok = grep { $_->{outcome} eq 'ok' } @$h;
is_deeply([map { $_->{version} } @ok], [2, 3, 4],
          'the last 3 versions (ffi_history 3)');
is($ok[2]{how}, 'admin', 'version 4 came by admin');
is($ok[2]{sha256}, file_sha(release('v1')), 'version 4 has v1\'s bytes');
is_deeply(shadow_shas(),
          [sort map { file_sha(release($_)) } qw(v2 v3 v1)],
          'one copy per version in the history');

install(release('v3'), $ver);
($status) = reload($ver);
is($status, 200, 'reload to v3 again (version 5): 200');
is_deeply(shadow_shas(),
          [sort map { file_sha(release($_)) } qw(v3 v1 v3)],
          'version 2 fell out: its copy is deleted');

# --- nginx -s reload: the history lives in the shared zone
my @old = workers(2);
FFITest::signal('HUP');
ok(wait_until(sub {
       my @now = FFITest::worker_pids();
       my %o = map { $_ => 1 } @old;
       @now == 2 && !grep { $o{$_} } @now
   }, 20), 'HUP: two new workers');
ok(FFITest::wait_for_log('loaded', 10, 4), 'the new workers loaded it');
my $after = history();
is(ref $after, 'ARRAY', 'history read after HUP');
$after ||= [];
is_deeply([map { $_->{version} } grep { $_->{outcome} eq 'ok' } @$after],
          [3, 4, 5], 'after HUP: versions 3, 4, 5 still in the history');
my (undef, $body) = FFITest::http('GET', '/v');
is($body, "true v3\n", 'version 5 serves after HUP');

# --- quit: no shadow copy left
ok(FFITest::stop_nginx(), 'nginx quit cleanly');
opendir my $d, $shadow or die;
is_deeply([grep { !/^\./ } readdir $d], [], 'no shadow folder left');
closedir $d;

done_testing();
