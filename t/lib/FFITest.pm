package FFITest;
# Test::Nginx-like harness for the lua-resty-ffi bridge: data-driven blocks
# (run_tests) and a procedural API, both driving a real, daemonized nginx.

#
# Data-driven (use lib 't/lib'; use FFITest; run_tests(); __DATA__ ...),
# sections as in Test::Nginx:
#   main_config, http_config, config (inside server{}), workers: N,
#   listen_options (after "listen 127.0.0.1:PORT"), log_level (default info),
#   init_by_lua_block (after the implied require "resty_ffi"),
#   init_worker_by_lua_block;
#   request ("METHOD /path", body on the next lines), request_body,
#   more_headers, pipelined_requests (eval: a list), timeout (client, s),
#   abort (the client giving up after --- timeout is a pass);
#   error_code (default 200), response_body, response_body_like,
#   response_headers ("Name: value", "!Name" for absent);
#   wait_for_log (patterns to await after the answer; a pattern listed
#   twice must occur twice), wait_for_log_timeout;
#   error_log / no_error_log (checked after nginx quit), allow_alerts.
# Plain sections give one item per line; "eval" gives Perl values (qr//,
# lists). Every block also checks that nginx quit in time and that
# error.log has no [alert], [emerg], segfault or "exited on signal".
# There is no "--- wait": wait for an event with wait_for_log.
#
# Procedural (FFITest::name): start_nginx(%sections), stop_nginx($label),
# http($method, $path, $body, $headers, $timeout) -> ($status, $body,
# \%headers), concurrent($n, $method, $path|sub, ...) -> ([$status, $body,
# \%headers], ...), begin_requests(...) / finish_requests($conns) /
# close_requests($conns) for calls left in flight, signal($sig, $pid),
# master_pid, worker_pids, error_log, wait_for_log($re, $s, $count),
# wait_exit($pid, $s), port, repo, servroot.
#
# Environment: NGINX (binary, default "nginx"), FFI_MODULE (default
# <repo>/build/ngx_http_lua_ffi_module.so; "none" for plain nginx + Lua),
# FFI_TEST_PORT (default: a free port), FFI_TEST_KEEP=1 keeps the server
# root (a temp dir) for a look afterwards, FFI_TIMEOUT_SCALE (default 1;
# t/memcheck/run.sh sets 3) multiplies every deadline that only guards
# against a hang (deadline($s) for tests' own waits).
#
# Unless a block sets ffi_shadow_path, the shadow copies go to the server
# root: the module's default is /var/cache/libnginx-mod-http-lua-ffi
# whenever that folder exists (the Debian package installed, or t/deb
# running), shared with every other nginx and the package's purge.

use Test::Base -base;

use strict;
use warnings;

use Cwd qw(abs_path);
use Errno qw(EAGAIN EINTR EWOULDBLOCK);
use File::Basename qw(dirname);
use File::Path qw(make_path remove_tree);
use File::Temp qw(tempdir);
use IO::Select;
use IO::Socket::INET;
use POSIX qw(WNOHANG);
use Test::LongString ();
use Time::HiRes qw(time sleep);

our @EXPORT = qw(run_tests);

my $REPO = abs_path(dirname(__FILE__) . '/../..');
my $NGINX = $ENV{NGINX} || 'nginx';
my $FFI_MODULE = $ENV{FFI_MODULE} || "$REPO/build/ngx_http_lua_ffi_module.so";

# FFI_MODULE=none runs plain nginx + lua (to test the harness itself)
my $WITH_FFI = $FFI_MODULE ne 'none';

my $LUA_MODULES = '/usr/lib/nginx/modules';
my $DEFAULT_TIMEOUT = 10;
my $START_TIMEOUT = 10;
my $STOP_TIMEOUT = 20;
# under AddressSanitizer (t/memcheck/run.sh) each process scans its memory
# for leaks after nginx's exit work, in exit(): time on top of the above
my $LEAK_SCAN_SECS = $ENV{FFI_LEAK_SCAN_SECS} || 0;
# how much slower than a plain build on an idle machine a run may be (ASan
# is 2-3 times slower): applied to the deadlines that are failure guards,
# never to a client's timeout, which some tests give up at on purpose
my $TIMEOUT_SCALE = $ENV{FFI_TIMEOUT_SCALE} || 1;
my $LOG_TAIL_LINES = 60;

# the process-wide state of "the" nginx under test
my $SERVROOT;
my $PORT;
my $MASTER_PID;
my %RUNNING;            # sections nginx was started with

# section names a block may use; anything else is a typo and dies
my %KNOWN_SECTIONS = map { $_ => 1 } qw(
    main_config http_config config workers listen_options log_level
    init_by_lua_block init_worker_by_lua_block
    request request_body more_headers pipelined_requests timeout abort
    error_code response_body response_body_like response_headers
    error_log no_error_log wait_for_log wait_for_log_timeout allow_alerts
    ONLY SKIP LAST
);

# what no block may leave in error.log unless it says --- allow_alerts
my @DEFAULT_FORBIDDEN = (
    qr/\[alert\]/, qr/\[emerg\]/, qr/segfault/, qr/exited on signal/,
);


sub repo     { $REPO }
sub port     { $PORT ||= $ENV{FFI_TEST_PORT} || _free_port() }
sub servroot { $SERVROOT ||= _make_servroot() }
sub master_pid { $MASTER_PID }

# a failure guard of $seconds, as long as this run needs (FFI_TIMEOUT_SCALE)
sub deadline { $_[0] * $TIMEOUT_SCALE }


# A port below the kernel's ephemeral range, so that the client sockets of
# a test (500 at once, then TIME_WAIT) never sit on it between two starts.
sub _free_port {
    for (1 .. 100) {
        my $port = 10000 + int rand 20000;
        next if $port == 20000;             # the demo's (make run)
        my $sock = IO::Socket::INET->new(
            LocalAddr => '127.0.0.1', LocalPort => $port, Proto => 'tcp',
            Listen => 1, ReuseAddr => 1,
        ) or next;
        close $sock;
        return $port;
    }
    die "cannot find a free port: set FFI_TEST_PORT\n";
}


sub _make_servroot {
    my $dir = tempdir('ffitest-XXXXXX', TMPDIR => 1);
    return abs_path($dir);
}


sub _ensure_plan {
    # a no_plan plan counts itself; Test::Base also needs to know that
    # some plan exists or it runs its own comparisons at END
    Test::More::plan('no_plan') unless Test::More->builder->has_plan;
}


sub _slurp {
    my ($file) = @_;
    open my $fh, '<', $file or return '';
    binmode $fh;
    local $/;
    my $data = <$fh>;
    close $fh;
    return defined $data ? $data : '';
}


sub _spew {
    my ($file, $data) = @_;
    open my $fh, '>', $file or die "cannot write $file: $!\n";
    binmode $fh;
    print $fh $data;
    close $fh or die "cannot write $file: $!\n";
}


sub error_log {
    return _slurp(servroot() . '/logs/error.log');
}


sub _log_tail {
    my @lines = split /\n/, error_log();
    my $from = @lines > $LOG_TAIL_LINES ? @lines - $LOG_TAIL_LINES : 0;
    return join("\n", "--- tail of error.log:", @lines[$from .. $#lines]);
}


# ---------------------------------------------------------------- config

sub _conf {
    my (%s) = @_;

    my $root = servroot();
    my $port = port();
    my $workers = defined $s{workers} ? $s{workers} : 1;
    my $level = defined $s{log_level} ? $s{log_level} : 'info';
    my $listen = "127.0.0.1:$port";
    $listen .= " $s{listen_options}" if defined $s{listen_options};

    my $user = $> == 0 ? "user root;\n" : '';
    my $main = defined $s{main_config} ? $s{main_config} : '';
    my $http = defined $s{http_config} ? $s{http_config} : '';
    my $server = defined $s{config} ? $s{config} : '';

    my $init = $WITH_FFI ? qq{require "resty_ffi"\n} : '';
    $init .= $s{init_by_lua_block} if defined $s{init_by_lua_block};

    my $init_worker = '';
    if (defined $s{init_worker_by_lua_block}) {
        $init_worker = "    init_worker_by_lua_block {\n"
                     . "$s{init_worker_by_lua_block}\n    }\n";
    }

    my $ffi_module = $WITH_FFI ? "load_module $FFI_MODULE;\n" : '';
    my $ffi_path = $WITH_FFI
        ? "    ffi_library_path $REPO/examples/c:$REPO/t/lib/runtimes;\n"
        : '';
    # shadow copies in this run's own root, never in a folder other runs
    # or an installed package share (see the top of this file)
    $ffi_path .= "    ffi_shadow_path $root;\n"
        if $WITH_FFI && $http !~ /\bffi_shadow_path\b/;

    my $temp = join '', map {
        "    ${_}_temp_path $root/temp/$_;\n"
    } qw(client_body proxy fastcgi uwsgi scgi);

    return <<"CONF";
# written by t/lib/FFITest.pm for one test block
daemon on;
master_process on;
worker_processes $workers;
pid logs/nginx.pid;
error_log logs/error.log $level;
$user
load_module $LUA_MODULES/ndk_http_module.so;
load_module $LUA_MODULES/ngx_http_lua_module.so;
$ffi_module
$main

events {
    worker_connections 1024;
}

http {
    access_log off;
    default_type text/plain;
$temp
    lua_package_path "$REPO/lua/?.lua;$REPO/t/lib/?.lua;;";
$ffi_path
    init_by_lua_block {
$init
    }
$init_worker
$http

    server {
        listen $listen;
        server_name localhost;

$server
    }
}
CONF
}


# ---------------------------------------------------------------- processes

sub _alive {
    my ($pid) = @_;

    # reap it if it happens to be our child
    waitpid($pid, WNOHANG);

    return 0 unless kill 0, $pid;

    # a daemon's zombie lingers when pid 1 does not reap
    my $stat = _slurp("/proc/$pid/stat");
    return 0 if $stat =~ /^\d+ \(.*\) Z /s;

    return 1;
}


# true once $pid is gone, false if it is still there at time $until
sub _wait_gone {
    my ($pid, $until) = @_;

    while (_alive($pid)) {
        return 0 if time > $until;
        sleep 0.02;
    }
    return 1;
}


# Under ASan a process's exit includes LeakSanitizer's scan: a deadline for
# an nginx process to be gone gets $LEAK_SCAN_SECS on top.
sub wait_exit {
    my ($pid, $seconds) = @_;
    $seconds = $DEFAULT_TIMEOUT unless defined $seconds;

    return _wait_gone($pid, time + deadline($seconds) + $LEAK_SCAN_SECS);
}


# every nginx process started from our server root (nginx keeps the cwd
# it was started with): finds workers a KILLed master left behind
sub _our_processes {
    my $root = servroot();
    my @pids;

    opendir my $dh, '/proc' or return ();
    for my $pid (grep { /^\d+$/ } readdir $dh) {
        next if $pid == $$;
        my $cwd = readlink "/proc/$pid/cwd";
        next unless defined $cwd && $cwd eq $root;
        my $comm = _slurp("/proc/$pid/comm");
        push @pids, $pid if $comm =~ /^nginx/;
    }
    closedir $dh;

    return sort { $a <=> $b } @pids;
}


# Waits until every thread of the (only) worker sleeps (state S in
# /proc: the event loop in epoll_wait, runtime pollers in their waits), and
# there are at least $min of them. 0 at the (scaled) deadline.
sub wait_threads_asleep {
    my ($min) = @_;
    my $until = time() + deadline(10);
    for (;;) {
        my ($pid) = worker_pids();
        my @tids;
        if (opendir(my $dh, "/proc/$pid/task")) {
            @tids = grep { /^\d+$/ } readdir($dh);
            closedir($dh);
        }
        my $asleep = @tids >= $min;
        for my $tid (@tids) {
            open(my $fh, '<', "/proc/$pid/task/$tid/stat") or do {
                $asleep = 0;
                last;
            };
            my $stat = <$fh>;
            close($fh);
            $asleep = 0, last unless $stat =~ /\) S /;
        }
        return 1 if $asleep;
        return 0 if time() > $until;
        select(undef, undef, undef, 0.01);
    }
}


sub worker_pids {
    return () unless $MASTER_PID;

    my @pids;
    for my $pid (_our_processes()) {
        my $stat = _slurp("/proc/$pid/stat");
        # pid (comm) state ppid ...
        next unless $stat =~ /^\d+ \(.*\) (\S) (\d+) /s;
        next if $1 eq 'Z';
        next unless $2 == $MASTER_PID;
        my $cmdline = _slurp("/proc/$pid/cmdline");
        push @pids, $pid if $cmdline =~ /worker process/;
    }

    return @pids;
}


sub signal {
    my ($sig, $pid) = @_;
    $pid = $MASTER_PID unless defined $pid;
    die "signal($sig): nginx is not running\n" unless $pid;
    return kill $sig, $pid;
}


# Starts nginx with the block's sections. A port of our own choosing that
# another program took meanwhile (other test runs share the machine: the
# port is free when chosen, not held) is chosen again.
sub start_nginx {
    my (%s) = @_;

    _ensure_plan();
    stop_nginx() if $MASTER_PID;

    for my $try (1 .. 5) {
        my ($master, $why) = _start(%s);

        if ($master) {
            $MASTER_PID = $master;
            %RUNNING = %s;
            return 1;
        }

        _kill_all();

        if ($try < 5 && !$ENV{FFI_TEST_PORT}
            && $why =~ /bind\(\) to 127\.0\.0\.1:\d+ failed \(98: /)
        {
            $PORT = _free_port();
            next;
        }

        Test::More::fail("nginx started");
        Test::More::diag($why);
        return 0;
    }
}


# one start: the master's pid, or undef and why not
sub _start {
    my (%s) = @_;

    my $root = servroot();
    for my $dir ('conf', 'logs', 'html',
                 map { "temp/$_" } qw(client_body proxy fastcgi uwsgi scgi))
    {
        make_path("$root/$dir");
    }
    unlink "$root/logs/error.log", "$root/logs/nginx.pid",
           "$root/logs/startup.log";

    _spew("$root/conf/nginx.conf", _conf(%s));

    my $pid = fork;
    die "fork: $!\n" unless defined $pid;

    if ($pid == 0) {
        chdir $root or POSIX::_exit(126);
        open STDIN, '<', '/dev/null';
        open STDOUT, '>', "$root/logs/startup.log";
        open STDERR, '>&', \*STDOUT;
        # to nginx, NGINX means sockets inherited from a binary upgrade
        delete $ENV{NGINX};
        { exec $NGINX, '-p', "$root/", '-c', 'conf/nginx.conf' }
        POSIX::_exit(127);
    }

    waitpid($pid, 0);
    my $status = $?;

    my $pidfile = "$root/logs/nginx.pid";
    my $deadline = time + deadline($START_TIMEOUT);
    while ($status == 0 && !-s $pidfile && time < $deadline) {
        sleep 0.01;
    }

    my $master = _slurp($pidfile);
    $master = $1 if $master =~ /(\d+)/;

    if ($status != 0 || !$master || !_alive($master)) {
        return (undef, "$NGINX exited with status " . ($status >> 8)
                       . "\n" . _slurp("$root/logs/startup.log")
                       . _log_tail());
    }

    return ($master);
}


sub _kill_all {
    for my $pid (_our_processes()) {
        kill 'KILL', $pid;
        _wait_gone($pid, time + 5);
    }
}


# After a QUIT: nginx must be gone within $STOP_TIMEOUT (scaled as every
# failure guard: FFI_TIMEOUT_SCALE). Under ASan the
# deadline stays on what nginx and the module do: each worker must have
# logged its "exit" (nginx's last word before exit()) or be gone within
# $STOP_TIMEOUT, and only the leak scans that follow get $LEAK_SCAN_SECS
# more. A hang in a shutdown still fails at $STOP_TIMEOUT.
sub _wait_quit {
    my ($master, $workers) = @_;

    return (wait_exit($master, $STOP_TIMEOUT),
            'nginx quit within ' . deadline($STOP_TIMEOUT) . 's')
        unless $LEAK_SCAN_SECS;

    my $stop = deadline($STOP_TIMEOUT);
    my $t0 = time;
    my $deadline = $t0 + $stop;
    my %left = map { $_ => 1 } _at_exit($workers, $deadline);

    my $name = sprintf("nginx quit: workers at exit within %ds (%.1f s), "
                       . "then %ds for the leak scan", $stop,
                       time - $t0, $LEAK_SCAN_SECS);

    return (0, "$name; workers still working: " . join(' ', sort keys %left))
        if %left;

    return (_wait_gone($master, $deadline + $LEAK_SCAN_SECS), $name);
}


# the workers of @$pids that neither logged their "exit" nor are gone by
# time $until (polls until then or until none is left)
sub _at_exit {
    my ($pids, $until) = @_;
    my %left = map { $_ => 1 } @$pids;

    while (%left) {
        my $log = error_log();
        for my $pid (keys %left) {
            delete $left{$pid}
                if !_alive($pid) || $log =~ /\[notice\] $pid#\d+: exit$/m;
        }
        last if !%left || time > $until;
        sleep 0.05;
    }

    return sort { $a <=> $b } keys %left;
}


# How long a worker takes to leave, as nginx and the module see it: true
# once each worker of @$pids logged its "exit" (nginx's last word before
# exit()) or is gone, within $seconds (a failure guard). Under ASan the
# process lives on for LeakSanitizer's scan after that line: a test that
# bounds an exit's time measures up to here, then wait_exit()s.
sub wait_at_exit {
    my ($pids, $seconds) = @_;
    $seconds = $DEFAULT_TIMEOUT unless defined $seconds;

    return !_at_exit($pids, time + deadline($seconds));
}


# Stops nginx gracefully (QUIT), then checks error.log for the crashes and
# alerts no test may cause. Returns true when nginx quit in time, cleanly.
# $label (optional) prefixes the names of these two tests.
sub stop_nginx {
    my ($label) = @_;
    return 1 unless $MASTER_PID;

    $label = defined $label ? "$label - " : '';

    my $master = $MASTER_PID;
    my @workers = worker_pids();
    my $allow_alerts = $RUNNING{allow_alerts};
    $MASTER_PID = undef;
    %RUNNING = ();

    kill 'QUIT', $master;

    my ($quit, $name) = _wait_quit($master, \@workers);

    Test::More::ok($quit, "${label}$name")
        or Test::More::diag(_log_tail());

    # a KILLed master or a stuck quit leaves processes behind
    _kill_all();

    return $quit if $allow_alerts;

    my $log = error_log();
    my @bad = grep {
        my $line = $_;
        grep { $line =~ $_ } @DEFAULT_FORBIDDEN;
    } split /\n/, $log;

    Test::More::ok(!@bad, "${label}error.log has no [alert], [emerg], crash")
        or Test::More::diag(join "\n", "--- offending lines:",
                            @bad[0 .. ($#bad > 20 ? 20 : $#bad)]);

    return $quit && !@bad;
}


sub wait_for_log {
    my ($re, $seconds, $count) = @_;
    $seconds = $DEFAULT_TIMEOUT unless defined $seconds;
    $count = 1 unless defined $count;
    $re = qr/\Q$re\E/ unless ref $re;

    my $deadline = time + deadline($seconds);
    for (;;) {
        my $log = error_log();
        my $n = () = $log =~ /$re/g;
        return $n if $n >= $count;
        return 0 if time > $deadline;
        sleep 0.02;
    }
}


# ---------------------------------------------------------------- HTTP

sub _headers_text {
    my ($headers) = @_;
    return '' unless defined $headers;

    if (ref $headers eq 'HASH') {
        return join '', map { "$_: $headers->{$_}\r\n" } sort keys %$headers;
    }

    if (ref $headers eq 'ARRAY') {
        my @h = @$headers;
        my $text = '';
        while (my ($k, $v) = splice @h, 0, 2) {
            $text .= "$k: $v\r\n";
        }
        return $text;
    }

    return join '', map { "$_\r\n" } grep { /\S/ } split /\r?\n/, $headers;
}


sub _raw_request {
    my ($method, $path, $body, $headers, $keepalive) = @_;

    my $extra = _headers_text($headers);
    my $raw = "$method $path HTTP/1.1\r\nHost: localhost\r\n$extra";
    $raw .= $keepalive ? '' : "Connection: close\r\n"
        unless $extra =~ /^Connection:/mi;
    $raw .= 'Content-Length: ' . length($body) . "\r\n"
        if defined $body && $extra !~ /^Content-Length:/mi;
    $raw .= "\r\n";
    $raw .= $body if defined $body;

    return $raw;
}


# Parses one response off the front of $$buf; returns undef while it is
# incomplete (unless $eof, when the rest is the body).
sub _parse_response {
    my ($buf, $eof, $method) = @_;

    my $end = index $$buf, "\r\n\r\n";
    return undef if $end < 0;

    my $head = substr $$buf, 0, $end;
    my @lines = split /\r\n/, $head;
    my $status_line = shift @lines;
    my ($status) = $status_line =~ m{^HTTP/\d\.\d (\d{3})}
        or return { error => "bad status line: $status_line" };

    my %h;
    for (@lines) {
        my ($k, $v) = /^([^:]+):\s*(.*)$/ or next;
        $k = lc $k;
        $h{$k} = exists $h{$k} ? "$h{$k}, $v" : $v;
    }

    my $pos = $end + 4;
    my $body;

    if (($method || '') eq 'HEAD' || $status == 204 || $status == 304) {
        $body = '';

    } elsif (($h{'transfer-encoding'} || '') =~ /chunked/i) {
        $body = '';
        for (;;) {
            my $eol = index $$buf, "\r\n", $pos;
            return undef if $eol < 0;
            my $size = hex substr($$buf, $pos, $eol - $pos);
            my $data = $eol + 2;
            if ($size == 0) {
                # no trailer: a bare CRLF; else trailer lines and a CRLF
                if (substr($$buf, $data, 2) eq "\r\n") {
                    $pos = $data + 2;
                    last;
                }
                my $trailer_end = index $$buf, "\r\n\r\n", $data;
                return undef if $trailer_end < 0;
                $pos = $trailer_end + 4;
                last;
            }
            return undef if length($$buf) < $data + $size + 2;
            $body .= substr $$buf, $data, $size;
            $pos = $data + $size + 2;
        }

    } elsif (defined $h{'content-length'}) {
        my $len = $h{'content-length'};
        return undef if length($$buf) < $pos + $len;
        $body = substr $$buf, $pos, $len;
        $pos += $len;

    } else {
        return undef unless $eof;
        $body = substr $$buf, $pos;
        $pos = length $$buf;
    }

    substr($$buf, 0, $pos) = '';

    return { status => $status, headers => \%h, body => $body };
}


# Connects and writes a raw request whole: when this returns, a caller may
# wait for the server to act on it, or close the connection.
sub _send {
    my ($raw, $method, $index) = @_;

    my $sock = IO::Socket::INET->new(
        PeerAddr => '127.0.0.1', PeerPort => port(), Proto => 'tcp',
        Timeout => deadline($DEFAULT_TIMEOUT),
    );
    return { error => "connect: $!", index => $index } unless $sock;

    my $error;
    while (length $raw) {
        my $n = syswrite $sock, $raw;
        if (!defined $n) {
            next if $! == EINTR;
            $error = "write: $!";
            last;
        }
        substr($raw, 0, $n) = '';
    }

    $sock->blocking(0);

    return {
        sock => $sock, index => $index, method => $method, in => '',
        error => $error,
    };
}


# Opens N connections and writes N requests without waiting for answers.
# $path (and $body) may be code refs called with the index (0..N-1).
sub begin_requests {
    my ($n, $method, $path, $body, $headers) = @_;

    return [ map {
        my $p = ref $path eq 'CODE' ? $path->($_) : $path;
        my $b = ref $body eq 'CODE' ? $body->($_) : $body;
        _send(_raw_request($method, $p, $b, $headers), $method, $_);
    } 0 .. $n - 1 ];
}


# Drives the connections of begin_requests until every one was answered
# and closed, or $timeout passed. Returns [status, body, headers] for each,
# in request order (status undef and body the reason on failure). A given
# $timeout is the client's, as it is (a test may give up on purpose); the
# default one only guards against a hang, and is scaled as such.
sub finish_requests {
    my ($conns, $timeout) = @_;
    $timeout = deadline($DEFAULT_TIMEOUT) unless defined $timeout;

    my $deadline = time + $timeout;
    my %open = map { fileno($_->{sock}) => $_ }
               grep { $_->{sock} && !$_->{error} } @$conns;

    while (%open) {
        my $left = $deadline - time;
        last if $left <= 0;

        my $rsel = IO::Select->new(map { $_->{sock} } values %open);
        my ($r) = IO::Select->select($rsel, undef, undef, $left);
        next unless $r;

        for my $sock (@$r) {
            my $c = $open{fileno $sock} or next;
            my $n = sysread $sock, $c->{in}, 65536, length $c->{in};
            next if !defined $n
                    && ($! == EAGAIN || $! == EWOULDBLOCK || $! == EINTR);
            $c->{error} = "read: $!" unless defined $n;
            if (!$n) {
                $c->{eof} = 1;
                delete $open{fileno $sock};
                close $sock;
            }
        }

        for my $c (values %open) {
            next unless $c->{error};
            delete $open{fileno $c->{sock}};
            close $c->{sock};
        }
    }

    my @results;
    for my $c (@$conns) {
        if (!$c->{eof}) {
            my $why = $c->{error} || "no complete answer in ${timeout}s";
            close $c->{sock} if $c->{sock} && !$c->{error};
            push @results, [undef, $why, {}];
            next;
        }
        my $in = $c->{in};
        my $res = _parse_response(\$in, 1, $c->{method});
        if (!$res || $res->{error}) {
            my $got = substr $c->{in}, 0, 200;
            push @results, [undef, $res ? $res->{error}
                                        : "incomplete answer: $got", {}];
            next;
        }
        push @results, [$res->{status}, $res->{body}, $res->{headers}];
    }

    return @results;
}


# Closes the client side of connections from begin_requests at once.
sub close_requests {
    my ($conns) = @_;
    for my $c (@$conns) {
        close $c->{sock} if $c->{sock};
        delete $c->{sock};
    }
}


sub concurrent {
    my ($n, $method, $path, $body, $headers, $timeout) = @_;
    return finish_requests(begin_requests($n, $method, $path, $body,
                                          $headers), $timeout);
}


sub http {
    my ($method, $path, $body, $headers, $timeout) = @_;
    my ($res) = concurrent(1, $method, $path, $body, $headers, $timeout);
    return @$res;
}


# Sends several requests on one keep-alive connection in one write.
sub _pipelined {
    my ($reqs, $timeout) = @_;

    my $raw = '';
    for my $i (0 .. $#$reqs) {
        my ($method, $path, $body) = @{ $reqs->[$i] };
        $raw .= _raw_request($method, $path, $body, undef, $i < $#$reqs);
    }

    my $conns = [ _send($raw, 'GET', 0) ];
    finish_requests($conns, $timeout);

    my $c = $conns->[0];
    return ({ error => $c->{error} || 'no complete answer' }) unless $c->{eof};

    my @res;
    for my $r (@$reqs) {
        my $res = _parse_response(\$c->{in}, 1, $r->[0]);
        push @res, $res || { error => 'missing answer' };
    }
    return @res;
}


# ---------------------------------------------------------------- blocks

sub _is_eval {
    my ($block, $sec) = @_;
    my $filters = $block->{_section_map}[0]{$sec}{filters};
    return defined $filters && $filters =~ /\beval\b/;
}


# A section's value as a list: eval'd sections give what they evaluated
# to (array refs flattened), plain ones one item per non-empty line.
sub _list {
    my ($block, $sec) = @_;
    my @v = $block->$sec;
    return () unless @v && defined $v[0];
    return map { ref $_ eq 'ARRAY' ? @$_ : $_ } @v if _is_eval($block, $sec);
    return grep { length } map { split /\n/ } @v;
}


sub _scalar {
    my ($block, $sec) = @_;
    my @v = $block->$sec;
    return undef unless @v && defined $v[0];
    my $v = $v[0];
    chomp $v unless _is_eval($block, $sec);
    return $v;
}


sub _parse_request_line {
    my ($text) = @_;
    my ($line, $body) = split /\n/, $text, 2;
    $line =~ s/^\s+|\s+$//g;
    my ($method, $path) = split ' ', $line;
    chomp $body if defined $body;
    $body = undef if defined $body && $body eq '';
    return [$method, $path, $body];
}


sub _matches {
    my ($log, $pat) = @_;
    return ref $pat ? scalar($log =~ $pat) : index($log, $pat) >= 0;
}


sub _check_response {
    my ($block, $name, $res, $i) = @_;

    my $suffix = defined $i ? " (request $i)" : '';
    my $ok = 1;

    if ($res->{error}) {
        Test::More::fail("$name - answered$suffix");
        Test::More::diag($res->{error});
        return 0;
    }

    my @codes = _list($block, 'error_code');
    my $code = @codes ? $codes[$i || 0] : 200;
    Test::More::is($res->{status}, $code, "$name - status code ok$suffix")
        or $ok = 0;

    if (defined $block->response_body) {
        my @bodies = _is_eval($block, 'response_body')
                   ? _list($block, 'response_body')
                   : ($block->response_body);
        Test::LongString::is_string($res->{body}, $bodies[$i || 0],
                                    "$name - response_body$suffix")
            or $ok = 0;
    }

    # one regex (eval: several), matched against the whole body with /s
    my @likes = _is_eval($block, 'response_body_like')
              ? _list($block, 'response_body_like')
              : grep { defined } _scalar($block, 'response_body_like');
    for my $re (@likes) {
        $re = qr/$re/s unless ref $re;
        Test::More::like($res->{body}, $re,
                         "$name - response_body_like$suffix")
            or $ok = 0;
    }

    for my $line (_list($block, 'response_headers')) {
        if ($line =~ /^!\s*(\S+)/) {
            Test::More::ok(!exists $res->{headers}{lc $1},
                           "$name - header $1 absent$suffix")
                or $ok = 0;
            next;
        }

        my ($k, $v) = $line =~ /^([^:]+):\s*(.*)$/
            or die "$name: bad response_headers line: $line\n";
        Test::More::is($res->{headers}{lc $k}, $v, "$name - header $k$suffix")
            or $ok = 0;
    }

    return $ok;
}


sub _has_section {
    my ($block, $sec) = @_;
    return grep { $_ eq $sec } @{ $block->{_section_order}[0] || [] };
}


sub _run_request {
    my ($block, $name) = @_;

    my $timeout = _scalar($block, 'timeout');
    $timeout = deadline($DEFAULT_TIMEOUT) unless defined $timeout;

    if (defined $block->pipelined_requests) {
        my @reqs = map { _parse_request_line($_) }
                   _list($block, 'pipelined_requests');
        my $ok = 1;
        my @res = _pipelined(\@reqs, $timeout);
        for my $i (0 .. $#res) {
            _check_response($block, $name, $res[$i], $i) or $ok = 0;
        }
        return $ok;
    }

    return 1 unless defined $block->request;

    my $req = _parse_request_line(_scalar($block, 'request'));
    $req->[2] = _scalar($block, 'request_body')
        if defined $block->request_body;

    my ($res) = concurrent(1, $req->[0], $req->[1], $req->[2],
                           _scalar($block, 'more_headers'), $timeout);

    # --- abort: the client gives up after --- timeout, on purpose
    if (!defined $res->[0] && _has_section($block, 'abort')
        && $res->[1] =~ /^no complete answer/)
    {
        return Test::More::pass("$name - client aborted after ${timeout}s");
    }

    return _check_response($block, $name, {
        status => $res->[0], body => $res->[1], headers => $res->[2],
        error => defined $res->[0] ? undef : $res->[1],
    });
}


sub _wait_for_logs {
    my ($block, $name) = @_;

    my $ok = 1;
    my $secs = _scalar($block, 'wait_for_log_timeout');
    my @waits = _list($block, 'wait_for_log');

    # a pattern listed twice must appear twice
    my (%count, %seen);
    $count{$_}++ for @waits;

    for my $pat (grep { !$seen{$_}++ } @waits) {
        my $times = $count{$pat} > 1 ? " x$count{$pat}" : '';
        Test::More::ok(wait_for_log($pat, $secs, $count{$pat}),
                       "$name - error.log got $pat$times")
            or $ok = 0;
    }

    return $ok;
}


sub _run_block {
    my ($block) = @_;

    my $name = $block->name;
    my @sections = @{ $block->{_section_order}[0] || [] };

    die "$name: --- wait is not supported: wait for an event with "
        . "--- wait_for_log\n" if grep { $_ eq 'wait' } @sections;
    for my $sec (@sections) {
        die "$name: unknown section --- $sec\n" unless $KNOWN_SECTIONS{$sec};
    }

    my %conf = map { ($_ => _scalar($block, $_)) } grep {
        defined $block->$_
    } qw(main_config http_config config workers listen_options log_level
         init_by_lua_block init_worker_by_lua_block);
    $conf{allow_alerts} = _has_section($block, 'allow_alerts');

    start_nginx(%conf) or return;

    my $ok = _run_request($block, $name);
    _wait_for_logs($block, $name) or $ok = 0;

    # the log checks come after the quit, which is when crashes show
    stop_nginx($name) or $ok = 0;

    my $log = error_log();
    for my $pat (_list($block, 'error_log')) {
        Test::More::ok(_matches($log, $pat), "$name - error.log has: $pat")
            or $ok = 0;
    }
    for my $pat (_list($block, 'no_error_log')) {
        Test::More::ok(!_matches($log, $pat), "$name - error.log lacks: $pat")
            or $ok = 0;
    }

    Test::More::diag("$name failed\n" . _log_tail()) unless $ok;
}


sub run_tests {
    _ensure_plan();
    for my $block (Test::Base::blocks()) {
        _run_block($block);
    }
}


END {
    stop_nginx() if $MASTER_PID;
    _kill_all() if $SERVROOT;
    remove_tree($SERVROOT) if $SERVROOT && !$ENV{FFI_TEST_KEEP};
}


1;
