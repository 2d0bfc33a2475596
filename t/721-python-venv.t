# Python runtimes with venv=PATH: each runs in a sub-interpreter of its own
# with that venv's site-packages, so two runtimes use two versions of one
# package; a reload starts a fresh sub-interpreter (every module anew) and
# finalizes the old one, with the worker's memory flat; a bad venv, or a
# module that cannot run in a sub-interpreter, fails the load clearly.
use lib 't/lib';
use FFITest;
use JSON::PP qw(decode_json);

my $repo = FFITest::repo();
my $root = FFITest::servroot();

# Debian's python3, the one the loader links, not whatever is on PATH
my $python = '/usr/bin/python3';

sub spew {
    my ($file, $text) = @_;
    open my $fh, '>', "$file.tmp" or die "$file.tmp: $!\n";
    print $fh $text;
    close $fh or die "$file.tmp: $!\n";
    rename("$file.tmp", $file) or die "rename $file: $!\n";
}

# two venvs, made offline, each with its own version of package "conflict"
for my $v (1, 2) {
    my $venv = "$root/venv$v";
    my $out = `'$python' -m venv --system-site-packages --without-pip \\
                   '$venv' 2>&1`;
    die "venv $venv: $out\n" if $?;
    my ($site) = glob("$venv/lib/python3*/site-packages");
    die "no site-packages in $venv\n" unless $site;
    mkdir "$site/conflict";
    spew("$site/conflict/__init__.py", "VERSION = '$v'\n");
}

# the application: t721 (handler) imports conflict and a helper module
my $app = "$root/app";
mkdir $app;

spew("$app/t721.py", <<'PY');
import atexit
import logging
import sys

import conflict
import resty_ffi
import t721_helper

print("t721 imported, conflict", conflict.VERSION)
atexit.register(print, "t721 interpreter ends, conflict", conflict.VERSION)


@resty_ffi.handler
def version(req):
    logging.warning("t721 logging from conflict %s", conflict.VERSION)
    return f"conflict {conflict.VERSION} {t721_helper.TAG}"
PY

# the same helper from the main interpreter, for contrast on reload
spew("$app/t721_main.py", <<'PY');
import resty_ffi
import t721_helper


@resty_ffi.handler
def tag(req):
    return f"main {t721_helper.TAG}"
PY

spew("$app/t721_helper.py", "TAG = 'helper-1'\n");

# needs cryptography's Rust (PyO3) extension, which refuses to be imported
# into a second interpreter of a process: the main one has it already
spew("$app/t721_rust.py", <<'PY');
import resty_ffi
import cryptography.hazmat.bindings._rust


@resty_ffi.handler
def echo(req):
    return req
PY

my $config = <<'CONF';
location /ffi/ {
    ffi_admin;
    allow 127.0.0.1;
    deny all;
}

# 20 calls on each runtime; says what the last call of each answered and
# how many answered the same
location = /v {
    content_by_lua_block {
        for _, rt in ipairs({py_v1, py_v2, py_main, py_echo}) do
            local first, same = nil, 0
            for i = 1, 20 do
                local ok, res = rt:call("x")
                first = first or res
                if ok and res == first then
                    same = same + 1
                end
            end
            ngx.say(first, " x ", same)
        end
    }
}

# loads cfg a, then cfg b if given, in this worker
location = /load {
    content_by_lua_block {
        for _, cfg in ipairs({ngx.var.arg_a, ngx.var.arg_b}) do
            local rt, err = ngx.load_ffi("ffi_python3", cfg,
                                         {is_global = true})
            ngx.say(rt and "loaded" or "failed: " .. tostring(err))
        end
    }
}

location = /pid {
    content_by_lua_block {
        ngx.say(ngx.worker.pid())
    }
}
CONF

my $init_worker = <<LUA;
ngx.timer.at(0, function()
    local opts = {is_global = true}
    py_main = assert(ngx.load_ffi("ffi_python3", "t721_main,tag", opts))
    py_v1 = assert(ngx.load_ffi("ffi_python3",
                                "venv=$root/venv1,t721,version", opts))
    py_v2 = assert(ngx.load_ffi("ffi_python3",
                                "venv=$root/venv2,t721,version", opts))
    -- upstream's convention (cffi, its own poll thread), in a venv
    py_echo = assert(ngx.load_ffi("ffi_python3",
                                  "venv=$root/venv1,ffi.echo?,init", opts))
    local _, a = py_v1:call("x")
    local _, b = py_v2:call("x")
    ngx.log(ngx.NOTICE, "python loaded: ", a, ", ", b)
end)
LUA

sub answers {
    my ($what, $helper, $main) = @_;
    my @res = FFITest::concurrent(20, 'GET', '/v');
    is_deeply([map { "$_->[0] $_->[1]" } @res],
              [("200 conflict 1 $helper x 20\nconflict 2 $helper x 20\n"
                . "main $main x 20\nx x 20\n") x 20],
              "$what: 20 x 20 calls on each runtime, in both workers");
}

sub reload {
    my ($status, $body) = FFITest::http('POST', '/ffi/reload?lib=ffi_python3',
                                        undef, undef, FFITest::deadline(90));
    return ($status, $body);
}

sub threads {
    my ($pid) = @_;
    opendir my $dh, "/proc/$pid/task" or die "tasks of $pid: $!\n";
    return scalar grep { /^\d+$/ } readdir $dh;
}

sub rss {
    my ($pid) = @_;
    open my $fh, '<', "/proc/$pid/status" or die "status of $pid: $!\n";
    while (my $line = <$fh>) {
        return $1 if $line =~ /^VmRSS:\s+(\d+) kB/;
    }
    die "no VmRSS for $pid\n";
}

# a reload's deadline here only guards against a hang: a worker that a
# loaded machine holds up for seconds in its commit (starting four
# sub-interpreters) must not turn a good reload into a 202
ok(FFITest::start_nginx(
       workers => 2,
       main_config => "env LD_LIBRARY_PATH=$repo/examples/python;\n"
                      . "env PYTHONPATH=$app;",
       http_config => 'ffi_reload_timeout ' . FFITest::deadline(30) . 's;',
       config => $config,
       init_worker_by_lua_block => $init_worker,
   ), 'nginx up');

ok(FFITest::wait_for_log('python loaded: conflict 1 helper-1, '
                         . 'conflict 2 helper-1', 20, 2),
   'both workers loaded the two venv runtimes');

# ---- two versions of one package, side by side, in both workers

answers('as loaded', 'helper-1', 'helper-1');

# ---- print() and logging from a sub-interpreter reach error.log

my $v1 = qr/\d+#\d+: ffi: \[ffi_python3 v1\]/;

ok(FFITest::wait_for_log(qr/\[notice\] $v1 t721 imported, conflict 1$/m,
                         5, 2),
   'print() at import, in venv1\'s sub-interpreter: notice, v1');
ok(FFITest::wait_for_log(qr/\[notice\] $v1 t721 imported, conflict 2$/m,
                         5, 2),
   '... in venv2\'s');
ok(FFITest::wait_for_log(qr/\[warn\] $v1 t721 logging from conflict 2$/m,
                         5),
   'logging.warning() in a handler: warn');

# ---- a full-application reload: the helper, not "?"-marked, is new

# Python's own import trusts __pycache__ by the source's mtime (seconds)
# and size: the edit changes the size, as an edit in the same second as
# the first import must for a module that is not "?"-marked
spew("$app/t721_helper.py", "TAG = 'helper-2'  # edited\n");

my ($status, $body) = reload();
is($status, 200, 'reload after editing the helper answers 200')
    or diag($body);

answers('after the edit', 'helper-2', 'helper-1');

ok(FFITest::wait_for_log(qr/t721 interpreter ends, conflict [12]$/m, 20, 4),
   'the old sub-interpreters ended (atexit ran), 2 per worker');

# ---- a bad venv: a clear error, the worker serves on

my ($st, $res) = FFITest::http('GET',
                               "/load?a=venv=$root/nothing,t721,version");
is("$st $res", "200 failed: 1\n", 'a venv that does not exist: load fails');
my $why = quotemeta(qq{ffi_python3: venv "$root/nothing" is not a }
                    . 'virtual environment: no pyvenv.cfg');
ok(FFITest::wait_for_log(qr/$why$/m, 10), '... and error.log says why');

($st, $res) = FFITest::http('GET', "/load?a=venv=$root/app,t721,version");
is("$st $res", "200 failed: 1\n", 'a folder that is no venv: load fails');
ok(FFITest::wait_for_log(qr/ffi_python3: venv "\Q$root\E\/app" is not a/, 10),
   '... and error.log says why');

answers('after the bad venvs', 'helper-2', 'helper-1');

# ---- a module that cannot run in a sub-interpreter

SKIP: {
    skip 'python3-cryptography is not installed', 2
        unless system("'$python' -c 'import cryptography.hazmat.bindings._rust'"
                      . " 2>/dev/null") == 0;

    # both in one worker: first the main interpreter, then a sub-interpreter
    ($st, $res) = FFITest::http('GET', '/load?a=t721_rust,echo'
                                . "&b=venv=$root/venv1,t721_rust,echo");
    is("$st $res", "200 loaded\nfailed: 1\n",
       'PyO3 module: loads in the main interpreter, not in a sub-interpreter');
    my $head = quotemeta('ffi_python3: t721_rust: ImportError in a '
                         . 'sub-interpreter (venv=): PyO3 modules ');
    my $tail = quotemeta('; some extension modules cannot run in one: '
                         . 'without venv= the runtime runs in the main '
                         . 'interpreter');
    ok(FFITest::wait_for_log(qr/$head[^;\n]+$tail$/m, 10),
       '... with an error that names the alternative');
}

answers('after the refused module', 'helper-2', 'helper-1');

# ---- the worker's memory over 200 reloads: flat

my @pids = FFITest::worker_pids();
is(scalar @pids, 2, 'two workers');

reload() for 1 .. 20;    # warm-up
my %before = map { $_ => rss($_) } @pids;
my %threads = map { $_ => threads($_) } @pids;

my $failed = 0;
for (1 .. 200) {
    my ($s) = reload();
    $failed++ if $s != 200;
}
is($failed, 0, '200 more reloads answer 200');

answers('after 220 more reloads', 'helper-2', 'helper-1');

for my $pid (@pids) {
    my $after = rss($pid);
    my $growth = ($after - $before{$pid}) / $before{$pid};
    Test::More::note(sprintf('worker %d: VmRSS %d kB after 20 reloads, '
                             . '%d kB after 220 (%+.1f%%)', $pid,
                             $before{$pid}, $after, 100 * $growth));
    ok($growth < 0.10, "worker $pid: RSS grew less than 10% over 200 reloads"
       . sprintf(' (%d -> %d kB)', $before{$pid}, $after));

    # a poll thread or an ending thread left behind per reload would show
    my $now = threads($pid);
    ok($now <= $threads{$pid} + 4,
       "worker $pid: $threads{$pid} threads before, $now after");
}

# 221 reloads, each ends two t721 interpreters in each of the two workers
ok(FFITest::wait_for_log(qr/t721 interpreter ends/, 30, 221 * 2 * 2),
   'every sub-interpreter of every reload ended');

unlike(FFITest::error_log(), qr/\[(alert|crit|emerg)\]|Fatal Python/,
       'no alert, crit or fatal error in error.log');

ok(FFITest::stop_nginx(), 'nginx stopped');
