# Shadow copies nobody else can touch, tried as a hostile local user
# (nobody): the folder's name cannot be guessed, a folder planted at the old
# predictable name is never used, a copy changed after it was checked is
# never mapped, and nothing is left behind by nginx -t, HUP or exit.
use lib 't/lib';
use lib 't/lib/misbehave';
use FFITest;
use MBTest qw(release install reload status wait_until workers);
use Test::More;
use File::Copy qw(copy);

plan skip_all => 'needs root (the attacks run as nobody)' if $> != 0;

my $root = FFITest::servroot();
chmod 0755, $root;                   # nobody may look, as in any /srv
my $dir = "$root/lib";
mkdir $dir, 0755;
my $shadow = "$root/shadow";         # a /tmp of its own: root's, sticky
mkdir $shadow;
chmod 01777, $shadow;

my $ver = "$dir/libver.so";
install(release('v1'), $ver);

# nobody's own copy of another release: the code an attacker wants to run
my $evil = "$root/evil";
mkdir $evil, 0755;
copy(release('v3'), "$evil/libevil.so") or die;
system('chown', '-R', 'nobody', $evil) == 0 or die;

sub as_nobody {
    my ($cmd) = @_;
    return system('runuser', '-u', 'nobody', '--', 'sh', '-c', $cmd) == 0;
}

sub entries {
    opendir my $d, $shadow or die;
    my @e = sort grep { !/^\.\.?\z/ } readdir $d;
    return @e;
}

sub ours { grep { (lstat "$shadow/$_")[4] == 0 } entries() }

# HUP, then wait for the new generation of workers (the old ones gone)
sub hup {
    my @old = workers(2);
    FFITest::signal('HUP');
    return wait_until(sub {
        my @now = FFITest::worker_pids();
        my %old = map { $_ => 1 } @old;
        return @now == 2 && !grep { $old{$_} } @now;
    }, 20);
}

my $config = <<"CONF";
location /ffi/ { ffi_admin; allow 127.0.0.1; deny all; }
location = /v {
    content_by_lua_block {
        local rt, err = ngx.load_ffi("$ver", nil, {unpin = true})
        if not rt then
            ngx.say("false ", err, " ", ngx.worker.pid())
            return
        end
        local ok, res = rt:call("version")
        ngx.say(tostring(ok), " ", tostring(res), " ", ngx.worker.pid())
    }
}
CONF

my %conf = (workers => 2, config => $config,
            http_config => "ffi_shadow_path $shadow;");

# workers are KILLed below: the master's [alert] about it is expected
FFITest::start_nginx(%conf, allow_alerts => 1) or die;

my ($status, $body) = FFITest::http('GET', '/v');
like($body, qr/^true v1 /, 'v1 serves');

# --- the private folder: one, random name, root's (the workers' user), 0700
my @ours = ours();
is(scalar @ours, 1, 'one shadow folder');
my $private = "$shadow/$ours[0]";
my $master = FFITest::master_pid();
unlike($ours[0], qr/\.\Q$master\E\z/, 'its name is not the master pid');
like($ours[0], qr/^nginx-ffi\.[0-9a-f]{24}\z/, 'a random name');
my @st = lstat $private;
ok(-d _ && !-l _, 'a real folder');
is($st[2] & 07777, 0700, 'mode 0700');
ok(!as_nobody("ls $private >/dev/null 2>&1"), 'nobody cannot list it');
ok(!as_nobody("cp $evil/libevil.so $private/x 2>/dev/null"),
   'nobody cannot write into it');

# --- nobody plants the folder the old code used after a HUP (the master's
# pid is in the pid file), open to all, and a symlink beside it
ok(as_nobody("mkdir -m 0777 $shadow/nginx-ffi.$master"
             . " && ln -s $evil $shadow/nginx-ffi.$master.link"),
   'nobody planted a folder at the predictable name');
my @planted = grep { !/^\Q$ours[0]\E\z/ } entries();

ok(hup(), 'HUP: new workers');
is_deeply([ours()], \@ours, 'after HUP: the same shadow folder, no other');

# v2 in the planted folder? the attacker swaps in their code by rename
install(release('v2'), $ver);
my ($rs, $json) = reload($ver);
is($rs, 200, 'reload to v2: 200');
as_nobody("for f in $shadow/nginx-ffi.$master/*; do "
          . "[ -f \"\$f\" ] && cp $evil/libevil.so \"\$f.t\" "
          . "&& mv -f \"\$f.t\" \"\$f\"; done; true");
is_deeply([sort grep { !/^\Q$ours[0]\E\z/ } entries()], \@planted,
          'nothing of ours went into what nobody planted');

# a new worker maps the current version from its copy
my @pids = workers(2);
kill 'KILL', $pids[0];
my %seen;
ok(wait_until(sub {
       my ($s, $b) = FFITest::http('GET', '/v');
       $seen{$1}++ if $b =~ /^(\S+ \S+) (\d+)$/ && !grep { $_ == $2 } @pids;
       return %seen;
   }, 20), 'a respawned worker answered');
is_deeply([keys %seen], ['true v2'], 'it serves v2, never nobody\'s code');

# --- a copy changed after it was checked (standing for any hole in the
# folder's protection) is refused by its SHA-256; the others serve on
# the current version's copy: the history keeps older versions' copies too
my $v2sum = (split ' ', `sha256sum ${\ release('v2')}`)[0];
my ($copy) = grep { (split ' ', `sha256sum $_`)[0] eq $v2sum }
             glob("$private/libver.so.*");
ok($copy, 'the current copy is in the private folder') or diag(`ls -la $private`);
$copy //= "$private/none";
copy(release('v3'), "$copy.t") or die;
chmod 0500, "$copy.t";
rename "$copy.t", $copy or die;

@pids = workers(2);
kill 'KILL', $pids[0];
my ($refused, $served, $mapped);
ok(wait_until(sub {
       my ($s, $b) = FFITest::http('GET', '/v');
       $served++ if $b =~ /^true v2 /;
       $refused = $b if $b =~ /^false / && !grep { $b =~ / $_$/ } @pids;
       $mapped = $b if $b =~ /v3/;
       return $mapped || ($refused && $served);
   }, 20), 'the respawned worker refused, the other served v2');
ok(!$mapped, 'the changed copy was never mapped') or diag($mapped);
like($refused, qr/shadow copy "\Q$copy\E" is not the file that was checked \(SHA-256 differs\)/,
     'the error names the copy and why');
like(FFITest::error_log(), qr/SHA-256 differs/, 'error.log says why');

# --- nginx -t and nginx -s reload make no folder
my @before = entries();
system(($ENV{NGINX} || "nginx") . " -p $root/ -c conf/nginx.conf -t >/dev/null 2>&1") == 0
    or diag('nginx -t failed');
is_deeply([entries()], \@before, 'nginx -t left nothing');

FFITest::stop_nginx();

is_deeply([grep { (lstat "$shadow/$_")[4] == 0 } entries()], [],
          'exit: no folder of ours is left');
is_deeply([entries()], \@planted, 'only what nobody planted remains');

# the same across a start, HUPs and an exit, without any attack
system('rm', '-rf', map { "$shadow/$_" } entries());
FFITest::start_nginx(%conf) or die;
($status, $body) = FFITest::http('GET', '/v');
like($body, qr/^true v2 /, 'a new start serves');
for my $n (1 .. 2) {
    ok(hup(), "HUP $n");
}
is(scalar(entries()), 1, 'one folder after two HUPs');
FFITest::stop_nginx();
is_deeply([entries()], [], 'nothing left after exit');

done_testing();
