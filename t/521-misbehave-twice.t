# A runtime that answers a task twice: the first answer wins, the second is
# freed, and it never reaches another call, even one that was given the
# first task's memory in between.
use lib 't/lib';
use lib 't/lib/misbehave';
use FFITest;
use MBTest qw(mb_lib);
use Test::More;

my $twice = mb_lib('libmb_twice.so');

my $config = <<"CONF";
location = /call {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("$twice"))
        local ok, res = rt:call(ngx.var.arg_q, 5)
        ngx.say(tostring(ok), " ", tostring(res))
    }
}
location = /seq {
    content_by_lua_block {
        -- a task answered twice, the second time 100 ms later; meanwhile
        -- the next call of this worker (free tasks are reused) waits 300 ms
        local rt = assert(ngx.load_ffi("$twice"))
        local i = ngx.var.arg_i
        local ok1, res1 = rt:call("later:100:first-" .. i, 5)
        local ok2, res2 = rt:call("delay:300:next-" .. i, 5)
        ngx.say(tostring(ok1), " ", tostring(res1), " / ", tostring(ok2),
                " ", tostring(res2))
    }
}
CONF

FFITest::start_nginx(workers => 2, config => $config);

# --- answered twice back to back, 200 calls at once, three rounds
for my $round (1 .. 3) {
    my @res = FFITest::concurrent(200, 'GET',
                                  sub { "/call?q=now:$round-$_[0]" });
    my @wrong = grep { ($res[$_][1] // '') ne "true $round-$_\n" } 0 .. $#res;
    is(scalar @wrong, 0, "round $round: every call got its first answer")
        or diag(join "\n", map { "call $_: " . ($res[$_][1] // 'none') }
                           @wrong[0 .. ($#wrong > 9 ? 9 : $#wrong)]);
}

# --- the second answer comes after the task memory was reused
my ($status, $body) = FFITest::http('GET', '/seq?i=1');
is($body, "true first-1 / true next-1\n",
   'a late second answer does not reach the next call');
ok(FFITest::wait_for_log('mb_twice answered first-1 again after 100 ms'),
   'the second answer was given');
ok(FFITest::wait_for_log('mb_twice answered next-1 after 300 ms'),
   'the next call was answered by the runtime too');

# the same, 20 requests at once over 2 workers
my @res = FFITest::concurrent(20, 'GET', sub { "/seq?i=c$_[0]" });
my @wrong = grep { ($res[$_][1] // '') ne "true first-c$_ / true next-c$_\n" }
            0 .. $#res;
is(scalar @wrong, 0, '20 at once: no call got another\'s or a second answer')
    or diag(join "\n", map { "request $_: " . ($res[$_][1] // 'none') }
                       @wrong[0 .. ($#wrong > 9 ? 9 : $#wrong)]);
ok(FFITest::wait_for_log(qr/answered next-c\d+ after 300 ms/, 10, 20),
   'all 20 delayed answers given');

# --- the workers serve on
@res = FFITest::concurrent(50, 'GET', sub { "/call?q=echo:e$_[0]" });
@wrong = grep { ($res[$_][1] // '') ne "true e$_\n" } 0 .. $#res;
is(scalar @wrong, 0, 'plain calls afterwards: each gets its own answer');

FFITest::stop_nginx('answers twice');
done_testing();
