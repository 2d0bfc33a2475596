# ffi_shadow_path that cannot hold mappable private copies is refused when
# nginx starts, with an error naming the folder and why: a folder on a
# noexec file system (every dlopen() would fail later, one load at a time,
# with a bare "failed to map segment"), or one another user owns.
use lib 't/lib';
use FFITest;
use Test::More;
use File::Path qw(make_path);

plan skip_all => 'needs root (mount, chown)' if $> != 0;

my $root = FFITest::servroot();
chmod 0755, $root;

# nginx started by hand: it is meant to fail, and say why
sub start_fails {
    my ($shadow) = @_;
    make_path("$root/conf", "$root/logs", "$root/html",
              map { "$root/temp/$_" } qw(client_body proxy fastcgi uwsgi scgi));
    unlink "$root/logs/error.log";
    open my $f, '>', "$root/conf/nginx.conf" or die;
    print $f FFITest::_conf(workers => 1,
                            http_config => "ffi_shadow_path $shadow;");
    close $f;
    my $nginx = $ENV{NGINX} || 'nginx';
    my $out = `$nginx -p $root/ -c conf/nginx.conf 2>&1`;
    my $rc = $? >> 8;
    if ($rc == 0) {
        my $pid = `cat $root/logs/nginx.pid 2>/dev/null`;
        kill 'QUIT', $1 if $pid =~ /(\d+)/;
    }
    return ($rc, $out . `cat $root/logs/error.log 2>/dev/null`);
}

sub entries {
    my ($d) = @_;
    opendir my $h, $d or die "$d: $!";
    return grep { !/^\.\.?\z/ } readdir $h;
}

# --- noexec
my $noexec = "$root/noexec";
mkdir $noexec;
system('mount', '-t', 'tmpfs', '-o', 'noexec,nosuid,nodev,mode=0755',
       'ffitest-noexec', $noexec) == 0
    or plan skip_all => 'cannot mount a tmpfs here';

my ($rc, $out) = start_fails($noexec);
isnt($rc, 0, 'noexec ffi_shadow_path: nginx does not start');
like($out, qr/ffi: shadow folder in "\Q$noexec\E" \(ffi_shadow_path\): .*noexec/,
     'the error names the folder and says noexec');
is(scalar(entries($noexec)), 0, 'nothing left in it');
system('umount', $noexec);

# --- a folder nobody owns
my $foreign = "$root/foreign";
mkdir $foreign, 0755;
system('chown', 'nobody', $foreign) == 0 or die;
($rc, $out) = start_fails($foreign);
isnt($rc, 0, 'nobody\'s ffi_shadow_path: nginx does not start');
like($out, qr/ffi: shadow folder in "\Q$foreign\E" \(ffi_shadow_path\): .*owned by uid 65534/,
     'the error names the folder and its owner');
is(scalar(entries($foreign)), 0, 'nothing made in it');

# --- and a good one starts, for contrast
my $good = "$root/good";
mkdir $good, 0755;
ok(FFITest::start_nginx(workers => 1,
                        http_config => "ffi_shadow_path $good;"),
   'a root-owned exec folder: nginx starts');
is(scalar(entries($good)), 1, 'one private folder in it');

# nginx -s reload with another ffi_shadow_path: the versions in the shared
# zone stay where they are, and error.log says so instead of nothing
my $other = "$root/other";
mkdir $other, 0755;
open my $f, '>', "$root/conf/nginx.conf" or die;
print $f FFITest::_conf(workers => 1,
                        http_config => "ffi_shadow_path $other;");
close $f;
FFITest::signal('HUP');
ok(FFITest::wait_for_log(qr/\[warn\].*ffi: ffi_shadow_path "\Q$other\E" takes effect at the next start; shadow copies stay in "\Q$good\E\/nginx-ffi\.[0-9a-f]{24}"/, 20),
   'HUP with another ffi_shadow_path: error.log says it waits for a start');
is(scalar(entries($other)), 0, 'nothing made in the new one yet');
FFITest::stop_nginx();
is(scalar(entries($good)), 0, 'gone at exit');

# --- workers as nobody (nginx's default user when root gives none): the
# hostile local user of the threat model is then a trusted owner of
# libraries, folders and shadow copies; nginx starts, and says so
chmod 0755, $root;
{
    make_path("$root/conf");
    my $conf = FFITest::_conf(workers => 1);
    $conf =~ s/^user root;$/user nobody nogroup;/m or die 'no user line';
    open my $f, '>', "$root/conf/nginx.conf" or die;
    print $f $conf;
    close $f;
    unlink "$root/logs/error.log";
    my $nginx = $ENV{NGINX} || 'nginx';
    my $out = `$nginx -p $root/ -c conf/nginx.conf 2>&1`;
    is($? >> 8, 0, 'workers as nobody: nginx starts');
    my $log = `cat $root/logs/error.log`;
    like($log, qr/\[warn\].*ffi: workers run as "nobody" \(uid 65534\): any process of that user can change the code they load; give nginx a user of its own/,
         'error.log warns that nobody is a trusted owner then');
    my $pid = `cat $root/logs/nginx.pid 2>/dev/null`;
    if ($pid =~ /(\d+)/) {
        kill 'QUIT', $1;
        FFITest::wait_exit($1, 20);
    }
}

done_testing();
