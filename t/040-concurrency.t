# Many calls in flight at once: ngx.thread fan-out inside one request,
# multi-threaded runtimes, and 500 concurrent clients across two workers.
use lib 't/lib';
use FFITest;

run_tests();

# 500 clients at once, two workers (reuseport spreads the connections),
# each request one call that answers after 300 ms: all 500 are in flight
# together and every answer must reach the request that asked for it
my $config = <<'CONF';
location = /slow {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("ffi_test", "threads=2"))
        local ok, res = rt:call("sleep:300:" .. ngx.var.arg_i)
        ngx.say(ngx.worker.pid(), " ", tostring(ok), " ", tostring(res))
    }
}
CONF

FFITest::start_nginx(workers => 2, listen_options => 'reuseport',
                     config => $config);

my @res = FFITest::concurrent(500, 'GET', sub { "/slow?i=$_[0]" }, undef,
                              undef, 30);
my (%pids, @wrong);
for my $i (0 .. $#res) {
    my ($status, $body) = @{ $res[$i] };
    if (defined $status && $status == 200 && $body =~ /^(\d+) true (\d+)\n\z/
        && $2 == $i)
    {
        $pids{$1}++;
        next;
    }
    push @wrong, "request $i: " . ($status // 'no status') . " "
                 . ($body // '');
}
is(scalar @wrong, 0, '500 concurrent calls, each got its own answer')
    or diag(join "\n", @wrong[0 .. ($#wrong > 9 ? 9 : $#wrong)]);
is(scalar keys %pids, 2, 'both workers served calls')
    or diag(Test::More::explain(\%pids));

FFITest::stop_nginx('500 clients, 2 workers');

__DATA__

=== TEST 1: 200 calls in flight from one request (ngx.thread fan-out)
--- config
location = /t {
    content_by_lua_block {
        -- one poller thread takes tasks in order: all 200 are parked when
        -- the release is taken, so "released 200" proves they were all in
        -- flight at once
        local rt = assert(ngx.load_ffi("ffi_test", "fanout"))
        local threads = {}
        for i = 1, 200 do
            threads[i] = ngx.thread.spawn(function()
                return rt:call("park:fanout:" .. i)
            end)
        end
        local ok, res = rt:call("release:fanout")
        ngx.say(tostring(ok), " ", res)
        local bad = 0
        for i = 1, 200 do
            local w, ok, res = ngx.thread.wait(threads[i])
            if not (w and ok and res == tostring(i)) then
                bad = bad + 1
            end
        end
        ngx.say("bad: ", bad)
    }
}
--- request
GET /t
--- response_body
true released 200
bad: 0
--- no_error_log
[error]



=== TEST 2: a runtime with 4 poller threads answers out of order correctly
--- config
location = /t {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("ffi_test", "threads=4"))
        local threads = {}
        for i = 1, 500 do
            -- later requests answer sooner: answers arrive out of order
            local cmd = (i % 3 == 0) and ("sleep:" .. (500 - i) % 50 .. ":" .. i)
                        or ("echo:" .. i)
            threads[i] = ngx.thread.spawn(function() return rt:call(cmd) end)
        end
        local bad = 0
        for i = 1, 500 do
            local w, ok, res = ngx.thread.wait(threads[i])
            if not (w and ok and res == tostring(i)) then
                bad = bad + 1
            end
        end
        ngx.say("bad: ", bad)
    }
}
--- request
GET /t
--- response_body
bad: 0



=== TEST 3: two runtimes, calls interleaved across them
--- config
location = /t {
    content_by_lua_block {
        local a = assert(ngx.load_ffi("ffi_test", "A,threads=2"))
        local b = assert(ngx.load_ffi("ffi_test", "B,threads=2"))
        local threads = {}
        for i = 1, 300 do
            local rt = (i % 2 == 0) and a or b
            threads[i] = ngx.thread.spawn(function()
                local ok, cfg = rt:call("cfg")
                local ok2, res = rt:call("sleep:" .. i % 7 .. ":" .. i)
                return cfg .. "/" .. res
            end)
        end
        local bad = 0
        for i = 1, 300 do
            local w, res = ngx.thread.wait(threads[i])
            local want = ((i % 2 == 0) and "A,threads=2" or "B,threads=2")
                         .. "/" .. i
            if not (w and res == want) then
                bad = bad + 1
            end
        end
        ngx.say("bad: ", bad)
    }
}
--- request
GET /t
--- response_body
bad: 0
