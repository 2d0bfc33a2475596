# Trust rules like OpenSSH's StrictModes, for every load (first load,
# reload, drop), judged on what was opened: the file and every folder on
# the way belong to root or the workers' user and nobody else may write to
# them (a sticky folder of root's only on the way), symlinks included. The
# attacker is nobody; each refusal names the offending path, and the
# serving version serves on.
use lib 't/lib';
use lib 't/lib/misbehave';
use FFITest;
use MBTest qw(release install reload status wait_until);
use Test::More;
use File::Copy qw(copy);

plan skip_all => 'needs root (the attacks run as nobody)' if $> != 0;

my $root = FFITest::servroot();
chmod 0755, $root;

sub as_nobody {
    my ($cmd) = @_;
    return system('runuser', '-u', 'nobody', '--', 'sh', '-c', $cmd) == 0;
}

sub folder {
    my ($path, $mode, $owner) = @_;
    mkdir $path;
    chmod $mode, $path;
    system('chown', $owner, $path) == 0 or die if $owner;
    return $path;
}

# trusted: root's, 0755
my $ok = folder("$root/ok", 0755);
install(release('v1'), "$ok/libver.so");

# a group-writable ancestor, two levels up from the library
my $gw = folder("$root/gw", 0775);
folder("$gw/sub", 0755);
install(release('v1'), "$gw/sub/libver.so");

# a folder of nobody's, holding a root-owned library
my $nb = folder("$root/nb", 0755, 'nobody');
install(release('v3'), "$nb/libver.so");

# a file of nobody's in a trusted folder
install(release('v1'), "$ok/libnobody.so");
system('chown', 'nobody', "$ok/libnobody.so") == 0 or die;

# a group-writable file
install(release('v1'), "$ok/libgw.so");
chmod 0775, "$ok/libgw.so";

# a sticky folder of root's, as /tmp: fine on the way, not as the folder
my $sticky = folder("$root/sticky", 01777);
install(release('v1'), "$sticky/libver.so");
folder("$sticky/sub", 0755);
install(release('v1'), "$sticky/sub/libver.so");

# symlinks: nobody's own in the sticky folder; root's, pointing into
# nobody's folder; root's, pointing at a trusted file (fine)
as_nobody("ln -s $ok/libver.so $sticky/link.so") or die;
symlink "$nb/libver.so", "$ok/to-nobody.so" or die;
symlink "libver.so", "$ok/alias.so" or die;
symlink "$ok", "$root/ok-link" or die;

my $config = <<"CONF";
location /ffi/ { ffi_admin; allow 127.0.0.1; deny all; }
location = /v {
    content_by_lua_block {
        local rt, err = ngx.load_ffi(ngx.unescape_uri(ngx.var.arg_lib), nil,
                                    {unpin = true})
        if not rt then
            ngx.say("false ", err)
            return
        end
        local ok, res = rt:call("version")
        ngx.header["X-Pid"] = ngx.worker.pid()
        ngx.say(tostring(ok), " ", tostring(res))
    }
}
CONF

FFITest::start_nginx(workers => 2, config => $config) or die;

sub load {
    my ($lib) = @_;
    my ($status, $body, $h) = FFITest::http('GET',
                                           '/v?lib=' . MBTest::escape($lib));
    chomp $body;
    return wantarray ? ($body, $h->{'x-pid'}) : $body;
}

# a library that serves keeps serving: load it in both workers first (a
# new load through a path that breaks the rules is refused, even of a
# version already established)
sub load_everywhere {
    my ($lib) = @_;
    my %pids;
    wait_until(sub {
        my ($body, $pid) = load($lib);
        $pids{$pid}++ if $pid && $body eq 'true v1';
        return keys %pids == 2;
    }, 20);
    return scalar keys %pids;
}

is(load("$ok/libver.so"), 'true v1', 'a trusted library loads');
is(load("$sticky/sub/libver.so"), 'true v1',
   'a sticky folder of root\'s is fine on the way');
is(load("$ok/alias.so"), 'true v1',
   'a symlink of root\'s to a trusted file is followed');
is(load("$root/ok-link/libver.so"), 'true v1',
   'a symlinked folder of root\'s is followed');

for my $case (
    ['a group-writable ancestor', "$gw/sub/libver.so",
     qr/^false not loading: folder "\Q$gw\E" is writable by group or others$/],
    ['a folder of nobody\'s', "$nb/libver.so",
     qr/^false not loading: folder "\Q$nb\E" is owned by uid 65534, neither root nor the workers' user$/],
    ['a file of nobody\'s', "$ok/libnobody.so",
     qr/^false not loading "\Q$ok\E\/libnobody.so": owned by uid 65534, neither root nor the workers' user$/],
    ['a group-writable file', "$ok/libgw.so",
     qr/^false not loading "\Q$ok\E\/libgw.so": writable by group or others$/],
    ['a library in a sticky folder', "$sticky/libver.so",
     qr/^false not loading "\Q$sticky\E\/libver.so": its folder is writable by others \(a sticky folder such as \/tmp is fine on the way, not as a library's own\)$/],
    ['a symlink of nobody\'s', "$sticky/link.so",
     qr/^false not loading "\Q$sticky\E\/link.so": symlink "\Q$sticky\E\/link.so" is owned by uid 65534, neither root nor the workers' user$/],
    ['a symlink into nobody\'s folder', "$ok/to-nobody.so",
     qr/^false not loading: folder "\Q$nb\E" is owned by uid 65534/],
) {
    my ($what, $lib, $re) = @$case;
    like(load($lib), $re, "$what: refused, naming the path");
}
like(FFITest::error_log(), qr/folder "\Q$gw\E" is writable by group or others/,
     'error.log names the offending folder');

# nobody flips a symlink between a trusted file and their own folder, and
# renames a folder of theirs back and forth, while we load through them:
# whichever state a load meets, it is refused, never served
my $flip = "$sticky/flip.so";
my $moved = "$sticky/moved";
as_nobody("mkdir $moved && cp $nb/libver.so $moved/") or die;
my $swapper = fork // die;
if ($swapper == 0) {
    setpgrp(0, 0);                   # killed as a group below
    open STDERR, '>', '/dev/null';
    exec 'runuser', '-u', 'nobody', '--', 'sh', '-c',
         "while :; do ln -sfn $ok/libver.so $flip; "
         . "ln -sfn $nb/libver.so $flip; "
         . "mv $moved $moved.x; mv $moved.x $moved; done";
}
my %answers;
for (1 .. 40) {
    for my $lib ($flip, "$moved/libver.so") {
        my $a = load($lib);
        $a =~ s/"[^"]*"/PATH/g;
        $answers{$a}++;
    }
}
kill 'KILL', -$swapper;
waitpid $swapper, 0;
ok(!grep(/^true/, keys %answers), 'swapped symlink, renamed folder: never '
   . 'loaded') or diag(explain \%answers);
note(explain \%answers);

# --- reloads and drops: the library serves v1 from a trusted folder, then
# what is on disk becomes untrusted in one way or another
my $lib = "$ok/libver.so";
is(load_everywhere($lib), 2, 'v1 serves in both workers');

sub refused {
    my ($what, $re) = @_;
    my ($rs, $json) = reload($lib);
    is($rs, 422, "$what: reload refused") or diag(explain $json);
    like($json->{error} // '', $re, "$what: the error names it");
    is(load($lib), 'true v1', "$what: v1 serves on");
}

# the library swapped for a symlink of root's into nobody's folder (the
# old code checked the folder it found the name in, then read elsewhere)
symlink "$nb/libver.so", "$ok/libver.so.t" or die;
rename "$ok/libver.so.t", $lib or die;
refused('swapped for a symlink into nobody\'s folder',
        qr/folder "\Q$nb\E" is owned by uid 65534/);

# a new file of nobody's, dropped in place
install(release('v2'), "$lib");
system('chown', 'nobody', $lib) == 0 or die;
refused('a file of nobody\'s', qr/owned by uid 65534/);

# the folder became group-writable
install(release('v2'), "$lib");
chmod 0775, $ok;
refused('a group-writable folder', qr/folder "\Q$ok\E" is writable by group or others/);
chmod 0755, $ok;

# and all is well again with a trusted file
install(release('v2'), $lib);
my ($rs) = reload($lib);
is($rs, 200, 'a trusted v2: reload 200');
is(load($lib), 'true v2', 'v2 serves');

FFITest::stop_nginx();

# --- a drop (ffi_watch) is judged the same way
install(release('v1'), $lib);
FFITest::start_nginx(workers => 2, config => $config,
                     http_config => 'ffi_watch on; ffi_watch_delay 50ms;')
    or die;
is(load_everywhere($lib), 2, 'watched: v1 serves in both workers');
install(release('v2'), "$lib.t");
system('chown', 'nobody', "$lib.t") == 0 or die;
rename "$lib.t", $lib or die;
ok(FFITest::wait_for_log(qr/not loading "\Q$lib\E": owned by uid 65534/, 10),
   'a drop of nobody\'s file: refused, error.log names it');
is(load($lib), 'true v1', 'drop refused: v1 serves on');

FFITest::stop_nginx();

done_testing();
