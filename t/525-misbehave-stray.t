# Answers to handles a runtime does not hold: a second answer, one after the
# call timed out or its client went away, answers to handles of calls long
# done (100,000 reuses of one task), and guesses of a task still queued.
# None completes another call or touches a queued task; each is dropped,
# counted per runtime ("stray" in /ffi/status) and logged once.
use lib 't/lib';
use lib 't/lib/misbehave';
use FFITest;
use MBTest qw(mb_lib status worker_libs);
use Test::More;

my $lib = mb_lib('libmb_stray.so');

my $config = <<"CONF";
location /ffi/ { ffi_admin; allow 127.0.0.1; deny all; }
location = /seq {
    content_by_lua_block {
        -- n calls in a row: each reuses the task the one before freed
        local rt = assert(ngx.load_ffi("$lib", "a"))
        local cmd, n = ngx.var.arg_cmd, tonumber(ngx.var.arg_n)
        local wrong, first = 0
        for i = 1, n do
            local ok, res = rt:call(cmd .. ":" .. i)
            if not ok or res ~= tostring(i) then
                wrong = wrong + 1
                first = first or (i .. ": " .. tostring(ok) .. " "
                                  .. tostring(res))
            end
        end
        ngx.say(wrong, " wrong of ", n, first and (", first " .. first)
                                               or "")
    }
}
location = /late {
    content_by_lua_block {
        -- answered (twice) 1 s after the call gave up at 50 ms (a worker
        -- a loaded machine holds up still times out first); calls in a
        -- row meanwhile, one of them on the late answer's task
        local rt = assert(ngx.load_ffi("$lib", "a"))
        local ok, res = rt:call("late:1000:L", 0.05)
        local wrong, n = 0, 0
        local start = ngx.now()
        repeat
            n = n + 1
            local ok2, res2 = rt:call("echo:" .. n)
            if res2 ~= tostring(n) then wrong = wrong + 1 end
            ngx.update_time()
        until ngx.now() - start > 1.5 and n > 100
        ngx.say(tostring(ok), " ", tostring(res), "; ", wrong, " wrong of ",
                n)
    }
}
location = /park {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("$lib", "a"))
        local ok, res = rt:call("park:" .. ngx.var.arg_v)
        ngx.say(tostring(ok), " ", tostring(res))
    }
}
location = /echo {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("$lib", ngx.var.arg_cfg or "a"))
        local ok, res = rt:call(ngx.var.arg_q)
        ngx.say(tostring(ok), " ", tostring(res))
    }
}
location = /early {
    content_by_lua_block {
        -- a's poller is parked; "victim" and "behind" wait in a's queue;
        -- b answers guesses of victim's handle before a ever took it
        local a = assert(ngx.load_ffi("$lib", "a"))
        local b = assert(ngx.load_ffi("$lib", "b"))
        local spawn, wait = ngx.thread.spawn, ngx.thread.wait
        local t1 = spawn(function() return a:call("park:P") end)
        assert(b:call("record"))
        local t2 = spawn(function() return a:call("echo:victim") end)
        local t3 = spawn(function() return a:call("echo:behind") end)
        local ok, res = b:call("forge")
        ngx.say("forge: ", tostring(ok), " ", tostring(res))
        ok, res = b:call("release")
        ngx.say("release: ", tostring(ok), " ", tostring(res))
        for _, t in ipairs({t1, t2, t3}) do
            local _, ok2, res2 = wait(t)
            ngx.say(tostring(ok2), " ", tostring(res2))
        end
        ok, res = a:call("echo:after")
        ngx.say(tostring(ok), " ", tostring(res))
        a:__unload()
    }
}
CONF

sub strays {
    my ($cfg) = @_;
    my $n = 0;
    for my $l (values %{ worker_libs(status(), $lib) }) {
        $n += $_->{stray} // 0
            for grep { ($_->{cfg} // '') eq $cfg } @{ $l->{runtimes} };
    }
    return $n;
}

# status names runtimes by their cfg: shown as it is (ffi_status_cfg on)
FFITest::start_nginx(workers => 1, config => "lua_check_client_abort on;\n"
                                             . $config,
                     http_config => 'ffi_status_cfg on;');

# --- a second answer at once, 1,000 calls in a row
my ($status, $body) = FFITest::http('GET', '/seq?cmd=twice&n=1000');
is($body, "0 wrong of 1000\n", 'answered twice: each call got its own first answer');
is(strays('a'), 1000, 'status: 1000 stray answers');
ok(FFITest::wait_for_log(qr/a runtime of "\Q$lib\E" \(version 1\) answered a task it did not hold/),
   'logged');

# --- answers to calls 1 to 1023 calls old, over 100,000 reuses of a task
# (one for every call but the first)
($status, $body) = FFITest::http('GET', '/seq?cmd=stale&n=100000', undef,
                                 undef, 300);
is($body, "0 wrong of 100000\n",
   '100,000 calls in a row, each after a stale answer: none completed one');
is(strays('a'), 1000 + 99999, 'status: every stale answer counted');

# --- answered (twice) after the call timed out
($status, $body) = FFITest::http('GET', '/late', undef, undef, 60);
like($body, qr/^false timeout; 0 wrong of \d+\n\z/,
     'timed out, then calls in a row while the late answers came: all right');
ok(FFITest::wait_for_log('mb_stray answered L twice after 1000 ms'),
   'the late answers were given');
($status, $body) = FFITest::http('GET', '/echo?q=echo:x');
is($body, "true x\n", 'serves on');
is(strays('a'), 1000 + 99999 + 1, 'status: the second late answer counted');

# --- answered (twice) after the client went away
my $conns = FFITest::begin_requests(1, 'GET', '/park?v=G');
ok(FFITest::wait_for_log('mb_stray parked G'), 'the call is in the runtime');
FFITest::close_requests($conns);
ok(FFITest::wait_for_log(qr/client prematurely closed connection/),
   'nginx saw the client go');
my $more = FFITest::begin_requests(20, 'GET', sub { "/echo?q=echo:z$_[0]" });
($status, $body) = FFITest::http('GET', '/echo?cfg=b&q=release');
is($body, "true released\n", 'released');
ok(FFITest::wait_for_log('mb_stray answered G twice'), 'answered twice');
my @res = FFITest::finish_requests($more);
my @wrong = grep { ($res[$_][1] // '') ne "true z$_\n" } 0 .. $#res;
is(scalar @wrong, 0, 'calls queued behind it got their own answers');
is(strays('a'), 1000 + 99999 + 2, 'status: the second answer counted');

my $log = FFITest::error_log();
my $lines = () = $log =~ /answered a task it did not hold/g;
is($lines, 1, 'logged once for the runtime');
FFITest::stop_nginx('stray answers');

# --- guesses of a task still queued (a fresh worker: tasks are predictable)
FFITest::start_nginx(workers => 1, config => $config,
                     http_config => 'ffi_status_cfg on;');
($status, $body) = FFITest::http('GET', '/early', undef, undef, 30);
is($body, "forge: true forged\nrelease: true released\ntrue P\n"
          . "true victim\ntrue behind\ntrue after\n",
   'answers to a queued task: the queue intact, every call its own answer');
ok(FFITest::wait_for_log('mb_stray took its NULL task'),
   'the runtime drained after __unload');
cmp_ok(strays('b') + strays('a'), '>=', 1, 'status: stray answers counted');
FFITest::stop_nginx('answers before the task was taken');

done_testing();
