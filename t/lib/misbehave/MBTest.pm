package MBTest;
# Helpers shared by the reliability tests (t/5NN-*.t): the misbehaving
# libraries (built here on first use), reloads, status, worker footprints.

use strict;
use warnings;

use Exporter 'import';
use File::Copy qw(copy);
use JSON::PP;
use Time::HiRes qw(time sleep);

use FFITest;

our @EXPORT_OK = qw(mb_lib release install escape reload status
                    worker_libs footprint wait_until elf_patch workers
                    many_config);

my $REPO = FFITest::repo();
my $DIR = "$REPO/t/lib/misbehave";

# the libraries are tiny: build them rather than trust a stale tree
system('make', '-s', '-C', $DIR) == 0
    or die "make -C t/lib/misbehave failed\n";


sub mb_lib  { "$DIR/$_[0]" }
sub release { "$REPO/build/t/libver-$_[0].so" }


# a new file at $to, in one rename, as a deployment would do it
sub install {
    my ($from, $to) = @_;
    copy($from, "$to.tmp") or die "copy $from: $!\n";
    chmod 0755, "$to.tmp";
    rename "$to.tmp", $to or die "rename $to: $!\n";
}


sub escape {
    my ($s) = @_;
    $s =~ s/([^A-Za-z0-9_.~-])/sprintf('%%%02X', ord $1)/ge;
    return $s;
}


# POST /ffi/reload?lib=NAME -> (status, decoded JSON or {}, raw body)
sub reload {
    my ($name, $headers) = @_;
    my ($status, $body) = FFITest::http('POST',
                                       '/ffi/reload?lib=' . escape($name),
                                       undef, $headers);
    my $json = eval { decode_json($body) } || {};
    return ($status, $json, $body);
}


sub status {
    my ($headers) = @_;
    my ($st, $body) = FFITest::http('GET', '/ffi/status', undef, $headers);
    return eval { decode_json($body) } || { error => $body, status => $st };
}


# { pid => library entry of that worker } for the library at $path
sub worker_libs {
    my ($st, $path) = @_;
    my %libs;
    for my $w (@{ $st->{workers} || [] }) {
        my ($l) = grep { $_->{path} eq $path } @{ $w->{libraries} };
        $libs{ $w->{pid} } = $l if $l;
    }
    return \%libs;
}


# what a process holds: open fds, mappings, resident memory (kB)
sub footprint {
    my ($pid) = @_;
    opendir my $d, "/proc/$pid/fd" or die "/proc/$pid/fd: $!\n";
    my $fds = () = grep { !/^\./ } readdir $d;
    closedir $d;
    open my $m, '<', "/proc/$pid/maps" or die "/proc/$pid/maps: $!\n";
    my @maps = <$m>;
    close $m;
    open my $s, '<', "/proc/$pid/status" or die "/proc/$pid/status: $!\n";
    my ($rss) = map { /^VmRSS:\s+(\d+)/ ? $1 : () } <$s>;
    close $s;
    return { fds => $fds, maps => scalar @maps, rss => $rss,
             map_lines => \@maps };
}


# polls $cond (a state that has no log line to wait for) until true; the
# deadline guards against a hang only, scaled as FFITest's (ASan, load)
sub wait_until {
    my ($cond, $seconds) = @_;
    my $deadline = time + FFITest::deadline($seconds);
    for (;;) {
        my $v = $cond->();
        return $v if $v;
        return 0 if time > $deadline;
        sleep 0.02;
    }
}


# nginx.conf locations for many runtimes of one library: the admin API,
# /pid, and /many?n=N, which loads $lib N times with cfgs cfg-1 .. cfg-N
# (each a runtime of its own); &call also calls each, &unload unloads it
sub many_config {
    my ($lib) = @_;
    return <<"CONF";
location /ffi/ { ffi_admin; }
location = /pid { content_by_lua_block { ngx.print(ngx.worker.pid()) } }
location = /many {
    content_by_lua_block {
        for i = 1, tonumber(ngx.var.arg_n) do
            local rt = assert(ngx.load_ffi("$lib", "cfg-" .. i))
            if ngx.var.arg_call then
                assert(rt:call("version"))
            end
            if ngx.var.arg_unload then
                rt:__unload()
            end
        end
        ngx.say("done")
    }
}
CONF
}


# the pids of the master's $n workers, once there are $n of them
sub workers {
    my ($n, $seconds) = @_;
    my @pids;
    wait_until(sub { @pids = FFITest::worker_pids(); @pids == $n },
               $seconds || 10);
    return @pids;
}


# a copy of $from with e_machine (offset 18, 2 bytes LE) set to $machine
sub elf_patch {
    my ($from, $to, $machine) = @_;
    open my $in, '<:raw', $from or die "$from: $!\n";
    local $/;
    my $elf = <$in>;
    close $in;
    substr($elf, 18, 2) = pack 'v', $machine;
    open my $out, '>:raw', "$to.tmp" or die "$to: $!\n";
    print $out $elf;
    close $out or die "$to: $!\n";
    chmod 0755, "$to.tmp";
    rename "$to.tmp", $to or die "rename $to: $!\n";
}

1;
