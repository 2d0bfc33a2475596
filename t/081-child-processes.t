# With a library of each language loaded, child processes and nginx's signals
# behave exactly as with none: os.execute and io.popen get their children's
# status, a failing trial's status reaches the worker, and nginx's handlers
# run on the event loop thread only, whichever thread a signal lands on.
use lib 't/lib';
use FFITest;
use Test::More;

use POSIX ();
require 'syscall.ph';

my $repo = FFITest::repo();
my $n = $ENV{FFI_CHILDREN} || 200;

# the trial's crashing library (make test-libs)
$ENV{TEST_LIB} = "$repo/build/t";

# label => [library, cfg, load options, folder]; '' loads nothing; c: a
# runtime whose threads, started at mapping, in libffi_init and later (on
# "spawn"), unblock every signal
my @runtimes = (
    [none   => ''],
    [c      => 'ffi_signals', undef, undef, 't/lib/runtimes'],
    [go     => 'ffi_go_echo', undef, undef, 'examples/go'],
    [rust   => 'ffi_rust_echo', undef, undef, 'examples/rust'],
    [python => 'ffi_python3', 'ffi.echo?,init', '{is_global = true}',
               'examples/python'],
    [java   => 'ffi_java', 'demo.echo.App?,init,', undef, 'examples/java'],
    [nodejs => 'ffi_nodejs', 'demo/echo?,init', '{is_global = true}',
               'examples/nodejs'],
);

# FFI_RUNTIMES=go,none runs some of them
if ($ENV{FFI_RUNTIMES}) {
    my %only = map { $_ => 1 } split /,/, $ENV{FFI_RUNTIMES};
    @runtimes = grep { $only{$_->[0]} } @runtimes;
}

my $path = join ':', map { "$repo/$_->[4]" } grep { $_->[1] } @runtimes;

# A child of popen exits only once the worker waits for it (in pclose):
# nginx's own SIGCHLD handler reaps any child of the worker that exits while
# the worker does something else (single-threaded, with no library, too), so
# only this makes the baseline exact. system() blocks SIGCHLD meanwhile.
my $config = <<'CONF';
location = /children {
    content_by_lua_block {
        local waited = 'until { read w; [ "$w" = do_wait ]; }'
                       .. ' < /proc/$PPID/wchan; do :; done; '
        local n = tonumber(ngx.var.arg_n)
        local seen, order = {}, {}

        local function count(...)
            local k = table.concat({...}, " ")
            if not seen[k] then
                seen[k] = 0
                order[#order + 1] = k
            end
            seen[k] = seen[k] + 1
        end

        for i = 1, n do
            count("execute", tostring(os.execute("exit 3")))
        end

        for i = 1, n do
            local f = io.popen(waited .. "exit 3")
            local ok, err = f:close()
            count("popen-close", tostring(ok), tostring(err))
        end

        for i = 1, n do
            local f = io.popen("echo hi; exec >&-; " .. waited .. "exit 0")
            local out = f:read("*a")
            local ok, err = f:close()
            count("popen-read", (out:gsub("\n", "")), tostring(ok),
                  tostring(err))
        end

        for _, k in ipairs(order) do
            ngx.say(k, ": ", seen[k])
        end
    }
}

location = /trial {
    content_by_lua_block {
        local n = tonumber(ngx.var.arg_n)
        local seen = {}
        for i = 1, n do
            local rt, err = ngx.load_ffi(os.getenv("TEST_LIB")
                                         .. "/libver-crashinit.so")
            err = tostring(rt) .. " " .. err:gsub("^.*/build/t/", "")
            seen[err] = (seen[err] or 0) + 1
        end
        for err, k in pairs(seen) do
            ngx.say(err, ": ", k)
        end
    }
}
CONF

my $expect_children = <<"BODY";
execute 768: $n
popen-close true nil: $n
popen-read hi true nil: $n
BODY

my $expect_trial = 'nil libver-crashinit.so" crashed (signal 11) in a '
                 . "constructor or libffi_init, in a trial process: 10\n";


sub init_worker {
    my ($label, $lib, $cfg, $opts) = @_;

    my $load = '';
    if ($lib) {
        my $args = join ', ', qq{"$lib"}, ($cfg ? qq{"$cfg"} : 'nil'),
                              ($opts || ());
        $load = "local rt = assert(ngx.load_ffi($args))\n"
              . "        assert(rt:call(\"up\"))\n"
              . "        assert(rt:call(\"spawn\"))\n";
    }

    return <<"LUA";
ngx.timer.at(0, function()
        $load
        ngx.log(ngx.NOTICE, "runtime $label up in ", ngx.worker.pid())
end)
LUA
}


# the threads of $pid other than its event loop thread that take $sig
sub threads_taking {
    my ($pid, $sig) = @_;
    my @tids;

    opendir my $dh, "/proc/$pid/task" or return ();
    for my $tid (sort { $a <=> $b } grep { /^\d+$/ } readdir $dh) {
        next if $tid == $pid;
        open my $fh, '<', "/proc/$pid/task/$tid/status" or next;
        my ($blocked) = map { /^SigBlk:\s*([0-9a-f]+)/ ? $1 : () } <$fh>;
        next unless defined $blocked;
        # signal n is bit n - 1; nginx's are all in the low word
        my $low = hex substr($blocked, -8);
        push @tids, $tid unless $low & (1 << ($sig - 1));
    }

    return @tids;
}


# a signal for one thread; syscall() passes a string as a pointer: numbers
sub tgkill {
    my ($pid, $tid, $sig) = @_;
    syscall(&SYS_tgkill, $pid + 0, $tid + 0, $sig + 0) == 0
        or diag("tgkill($pid, $tid, $sig): $!");
}


sub worker_lines {
    my ($pid, $re) = @_;
    return grep { /\] $pid#\d+: / && /$re/ } split /\n/, FFITest::error_log();
}


for my $r (@runtimes) {
    my ($label, $lib, $cfg, $opts) = @$r;

    ok(FFITest::start_nginx(
           workers => 1,
           main_config => "env LD_LIBRARY_PATH=$path;\nenv TEST_LIB;",
           config => $config,
           init_worker_by_lua_block => init_worker($label, $lib, $cfg,
                                                   $opts),
       ), "$label: nginx up");

    ok(FFITest::wait_for_log("runtime $label up in", 120),
       "$label: the runtime serves");
    my ($w) = FFITest::worker_pids();

    my ($status, $body) = FFITest::http('GET', "/children?n=$n", undef,
                                        undef, 300);
    is("$status\n$body", "200\n$expect_children",
       "$label: os.execute and io.popen get every child's status");

    ($status, $body) = FFITest::http('GET', '/trial?n=10', undef, undef, 300);
    is("$status\n$body", "200\n$expect_trial",
       "$label: every trial's crash reaches the worker");

    my @reaped = worker_lines($w, qr/unknown process/);
    is(scalar @reaped, 0, "$label: nginx's handler reaped no child of Lua's")
        or diag(join "\n", @reaped[0 .. ($#reaped > 5 ? 5 : $#reaped)]);

    # signals sent to a thread of the library: nginx acts on them at once,
    # on its own thread (the worker is idle: nothing else would wake it)
    my @usr1 = threads_taking($w, POSIX::SIGUSR1());
    diag("$label: " . scalar(@usr1) . " library threads take SIGUSR1");
    cmp_ok(scalar @usr1, '>', 0, "$label: threads that take signals exist")
        if $label eq 'go' || $label eq 'c';

    my @some = @usr1[0 .. ($#usr1 > 2 ? 2 : $#usr1)];
    for my $i (0 .. $#some) {
        tgkill($w, $some[$i], POSIX::SIGUSR1());
        ok(FFITest::wait_for_log(qr/\] $w#$w: reopening logs/, 30, $i + 1),
           "$label: SIGUSR1 on thread $some[$i] reopens the logs");
    }

    # passed on with its siginfo: nginx still names who sent it
    if (@some) {
        my $usr1 = POSIX::SIGUSR1();
        is(scalar(() = worker_lines($w,
               qr/ $w#$w: signal $usr1 \(SIGUSR1\) received from $$,/)),
           scalar @some, "$label: nginx's handler saw the sender's pid");
    }

    my @foreign = worker_lines($w, qr/signal \d+ \(\w+\) received/);
    @foreign = grep { !/\] $w#$w: / } @foreign;
    is(scalar @foreign, 0, "$label: nginx's handlers ran on the loop only")
        or diag(join "\n", @foreign[0 .. ($#foreign > 5 ? 5 : $#foreign)]);

    if (@some) {
        tgkill($w, $some[0], POSIX::SIGQUIT());
        ok(FFITest::wait_exit($w, 60),
           "$label: SIGQUIT on thread $some[0] ends the worker");
        ok(FFITest::wait_for_log("runtime $label up in", 120, 2),
           "$label: the master started a new worker");
    }

    # nginx's own signals through the master: reload, then quit
    my $up = () = FFITest::error_log() =~ /runtime \Q$label\E up in/g;
    FFITest::signal('HUP');
    ok(FFITest::wait_for_log("runtime $label up in", 120, $up + 1),
       "$label: nginx -s reload starts a worker that serves");

    # the new worker guards nginx's handlers as the first one did
    my ($nw) = (FFITest::error_log() =~ /.*runtime \Q$label\E up in (\d+)/s);
    my @t = $nw ? threads_taking($nw, POSIX::SIGUSR1()) : ();
    if (@t) {
        tgkill($nw, $t[0], POSIX::SIGUSR1());
        ok(FFITest::wait_for_log(qr/\] $nw#$nw: reopening logs/, 30),
           "$label: after the reload, SIGUSR1 on a library thread too")
            or diag(join "\n", "new worker $nw, threads @t",
                    worker_lines($nw, qr/signal|reopen|exit/));
    }

    FFITest::stop_nginx($label);
}

done_testing();
