# ngx_http_lua_ffi_log: lines from runtime threads land whole in error.log
# with level, library and version; error_log's levels and targets hold; a
# reopen (USR1) moves them to the new file; a full buffer drops and counts.
use lib 't/lib';
use FFITest;

my $config = <<'CONF';
location = /call {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("ffi_services", ngx.var.arg_cfg))
        local ok, res, err = rt:call(ngx.unescape_uri(ngx.var.arg_req))
        ngx.say(tostring(ok), " ", tostring(res), " ", tostring(err))
    }
}
# starts a background flood, then keeps the event loop from turning until
# the runtime is done: nothing is written meanwhile, the buffer must fill
location = /flood {
    content_by_lua_block {
        local d = ngx.shared.ffi_test
        d:delete("logbg")
        local rt = assert(ngx.load_ffi("ffi_services"))
        local ok, res = rt:call(ngx.unescape_uri(ngx.var.arg_req))
        ngx.update_time()
        local deadline = ngx.now() + 60
        while not d:get("logbg") and ngx.now() < deadline do
            ngx.update_time()
        end
        ngx.say(tostring(ok), " ", tostring(res), ", ",
                tostring(d:get("logbg")))
    }
}
location /ffi/ { ffi_admin; }
CONF

my $http = "lua_shared_dict ffi_test 1m;\n";

sub call {
    my ($req, $cfg) = @_;
    $req =~ s/([^A-Za-z0-9:_.%-])/sprintf('%%%02X', ord $1)/ge;
    my $path = "/call?req=$req";
    $path .= "&cfg=$cfg" if defined $cfg;
    my ($status, $body) = FFITest::http('GET', $path);
    return defined $status && $status == 200 ? $body : "status "
           . ($status // 'none');
}

sub log_file { FFITest::_slurp(FFITest::servroot() . "/logs/$_[0]") }

# FFITest::wait_for_log, for another file of logs/
sub wait_for_log_in {
    my ($file, $re, $count) = @_;
    for (1 .. 500) {
        my $n = () = log_file($file) =~ /$re/g;
        return $n if $n >= $count;
        select undef, undef, undef, 0.02;
    }
    return 0;
}


# --- 8 threads at once, 50 lines each: every line whole, none twice
FFITest::start_nginx(config => $config, http_config => $http);

is(call('log:4:8:50:WHOLE'), "true sent 400 dropped 0 nil\n",
   '400 lines from 8 threads taken');
my $line = qr/^\S+ \S+ \[error\] \d+#\d+: ffi: \[ffi_services v1\] WHOLE t=(\d) n=(\d+) x{300} end$/m;
ok(FFITest::wait_for_log($line, 10, 400), '400 whole lines in error.log');

my $log = FFITest::error_log();
my (%seen, $broken);
while ($log =~ /$line/g) { $seen{"$1/$2"}++ }
$broken = grep { /WHOLE/ && !/$line/ } split /\n/, $log;
is(scalar keys %seen, 400, 'each thread/line pair once');
is((grep { $_ != 1 } values %seen), 0, 'no line twice');
is($broken, 0, 'no torn or merged line');

# --- NUL-terminated, trailing newline, bad levels
is(call('lognul:5:nul%20terminated%0A'), "true 0 nil\n", 'len 0: 0');
ok(FFITest::wait_for_log(qr/\[warn\] .*ffi: \[ffi_services v1\] nul terminated$/m),
   'NUL-terminated line, newline dropped');
is(call('lograw:9:level nine'), "true -1 nil\n", 'level 9: -1');
is(call('lograw:0:level zero'), "true -1 nil\n", 'level 0: -1');

# --- from libffi_init, and the version after a reload
is(call('lograw:5:first', 'initlog'), "true 0 nil\n", 'initlog runtime');
ok(FFITest::wait_for_log(qr/\[warn\] .*ffi: \[ffi_services v1\] hello from libffi_init$/m),
   'a line from libffi_init');
my ($st) = FFITest::http('POST', '/ffi/reload?lib=ffi_services');
is($st, 200, 'reload');
is(call('lograw:5:after reload', 'initlog'), "true 0 nil\n", 'logged');
ok(FFITest::wait_for_log(qr/ffi: \[ffi_services v2\] after reload$/m),
   'the runtime version follows the reload');
ok(FFITest::wait_for_log(qr/ffi: \[ffi_services v2\] hello from libffi_init$/m),
   'the new runtime logged from its libffi_init');

# --- a full buffer drops, and the count shows in /ffi/status
my $flood = call_flood('logbg:5:8:2000:ffi_test:FLOOD');
my ($sent, $dropped) = $flood =~ /sent (\d+) dropped (\d+)/;
ok(defined $sent && $sent + $dropped == 16000, "16000 lines: $flood");
ok($dropped > 0, 'the loop did not turn: lines were dropped');
ok(FFITest::wait_for_log(qr/ffi: \[ffi_services v2\] FLOOD t=\d n=\d+ x{300} end$/m,
                         10, $sent), "the $sent lines taken are in error.log");
my ($s2, $status) = FFITest::http('GET', '/ffi/status');
like($status, qr/"log_dropped":$dropped\b/, "/ffi/status: log_dropped $dropped");

# --- reopen: the next line goes to the new file
my $root = FFITest::servroot();
rename "$root/logs/error.log", "$root/logs/error.log.1" or die "rename: $!";
FFITest::signal('USR1');
# the master and the worker each say so, then reopen
ok(wait_for_log_in('error.log.1', qr/reopening logs/, 2),
   'master and worker reopen');
is(call('lograw:5:AFTER REOPEN'), "true 0 nil\n", 'logged after reopen');
ok(FFITest::wait_for_log(qr/ffi: \[ffi_services v2\] AFTER REOPEN$/m),
   'the line is in the new error.log');
unlike(log_file('error.log.1'), qr/AFTER REOPEN/, 'and not in the old one');

# lines logged while the files are reopened are all somewhere, whole
is(call('del:ffi_test:logbg'), "true 0 nil\n", 'the last result cleared');
my $stream = call_flood('logbg:5:2:300:ffi_test:STREAM', 1);
rename "$root/logs/error.log", "$root/logs/error.log.2" or die "rename: $!";
FFITest::signal('USR1');
my $done = wait_key();
my ($ssent) = $done =~ /sent (\d+)/;
ok(wait_for_log_in('error.log.2', qr/reopening logs/, 2),
   'second reopen');
is(call('lograw:5:MARK'), "true 0 nil\n", 'marker');
ok(FFITest::wait_for_log(qr/MARK$/m), 'marker in the newest file');
my $both = log_file('error.log.2') . log_file('error.log');
my $n = () = $both =~ /ffi: \[ffi_services v2\] STREAM t=\d n=\d+ x{300} end$/mg;
my $all = () = $both =~ /STREAM/g;
is($n, $ssent, "all $ssent lines across the reopen, whole");
is($all, $n, 'no torn line');

FFITest::stop_nginx('log');


# --- the level filter, and every error_log target
FFITest::start_nginx(config => $config, http_config => $http,
                     log_level => 'warn',
                     main_config => 'error_log logs/info.log info;');
is(call('lograw:6:a notice line'), "true 0 nil\n", 'notice: 0 (filtered)');
is(call('lograw:8:a debug line'), "true 0 nil\n", 'debug: 0 (filtered)');
is(call('lograw:7:an info line'), "true 0 nil\n", 'info: 0');
is(call('lograw:5:a warn line'), "true 0 nil\n", 'warn: 0');
ok(FFITest::wait_for_log(qr/\[warn\] .*a warn line$/m), 'warn is written');
ok(wait_for_log_in('info.log', qr/\[info\] .*an info line$/m, 1),
   'info reaches the info-level target');
ok(wait_for_log_in('info.log', qr/\[warn\] .*a warn line$/m, 1),
   'so does warn');
my $warnlog = FFITest::error_log();
unlike($warnlog, qr/an info line|a notice line|a debug line/,
       'the warn-level error.log holds nothing below warn');
unlike(log_file('info.log'), qr/a debug line/, 'debug reaches no target');
FFITest::stop_nginx('levels');



sub call_flood {
    my ($req, $background) = @_;
    return call($req) if $background;
    my ($status, $body) = FFITest::http('GET', "/flood?req=$req", undef,
                                        undef, 90);
    return $body // 'no answer';
}

# the "logbg" key once the background threads are done
sub wait_key {
    for (1 .. 3000) {
        my ($s, $b) = FFITest::http('GET', '/call?req=get:ffi_test:logbg');
        return $b if defined $b && $b =~ /^true sent/;
        select undef, undef, undef, 0.02;
    }
    return 'never done';
}


# --- the trial process provides the services too: a library that uses
# them in libffi_init passes its trial; its lines reach the trial's stderr
# (error.log) only when an init fails, as the reason
{
    my $repo = FFITest::repo();
    my $lib = "$repo/t/lib/runtimes/libffi_services.so";
    # cfgs on stdin ("N\n" and N bytes), the verdict on fd 3 (issue 12)
    my $out = `printf '7\\ninitlog' | $repo/build/ffi-trial $lib $lib 3>&1 2>&1`;
    is($out, "ok\n", 'trial: ok, and the log line kept to itself');
    $out = `printf '16\\ninitlog,initfail' | $repo/build/ffi-trial $lib $lib 3>&1 2>&1`;
    is($out, "ffi-trial: $lib: hello from libffi_init\n"
             . "ffi-trial: $lib: libffi_init fails: initfail\n"
             . "init 0 returned 3\n", 'a failed trial says why');
}
