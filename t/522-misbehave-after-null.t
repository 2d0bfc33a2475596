# A runtime that answers the tasks it holds only after it took its NULL
# task (on __unload and on a reload): the waiting calls get those answers,
# a call that timed out has its late answer freed, and the image is closed
# only once every task was answered.
use lib 't/lib';
use lib 't/lib/misbehave';
use FFITest;
use MBTest qw(mb_lib install reload status worker_libs wait_until workers);
use Test::More;

my $root = FFITest::servroot();
my $dir = "$root/lib";
mkdir $dir, 0755;
my $lib = "$dir/libmb_after_null.so";
install(mb_lib('libmb_after_null.so'), $lib);

my $config = <<"CONF";
location /ffi/ { ffi_admin; allow 127.0.0.1; deny all; }
location = /call {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("$lib", ngx.var.arg_cfg,
                                       {unpin = true}))
        local ok, res = rt:call(ngx.var.arg_q, tonumber(ngx.var.arg_t))
        ngx.say(tostring(ok), " ", tostring(res))
    }
}
location = /unload {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("$lib", ngx.var.arg_cfg,
                                       {unpin = true}))
        rt:__unload()
        ngx.say(tostring(select(2, rt:call("echo:x"))))
    }
}
CONF

# runtimes are found in status by their cfg: show it
FFITest::start_nginx(workers => 1, config => $config,
                     http_config => 'ffi_close_grace 50ms; ffi_status_cfg on;');
my ($pid) = workers(1);

sub answers {
    my ($conns, $want, $what) = @_;
    my @res = FFITest::finish_requests($conns, 10);
    my @wrong = grep { ($res[$_][1] // '') ne $want->($_) } 0 .. $#res;
    is(scalar @wrong, 0, $what)
        or diag(join "\n", map { "call $_: " . ($res[$_][1] // 'none') }
                           @wrong);
}

# --- __unload with 5 calls held, one of them with a timeout
my ($status, $body) = FFITest::http('GET', '/call?cfg=delay=300&q=echo:hi');
is($body, "true hi\n", 'the runtime serves');
my $held = FFITest::begin_requests(5, 'GET',
                                   sub { "/call?cfg=delay=300&q=keep:k$_[0]" });
ok(FFITest::wait_for_log(qr/mb_after_null keeps k\d/, 10, 5), '5 calls held');
my $timed = FFITest::begin_requests(1, 'GET',
                                    '/call?cfg=delay=300&q=keep:t&t=0.1');
ok(FFITest::wait_for_log('mb_after_null keeps t'), 'a 6th, with a timeout');
my ($r) = FFITest::finish_requests($timed, 5);
is($r->[1], "false timeout\n", 'that one timed out');

($status, $body) = FFITest::http('GET', '/unload?cfg=delay=300');
is($body, "runtime unloaded\n", '__unload: later calls are refused');
ok(FFITest::wait_for_log('mb_after_null took its NULL task holding 6'),
   'the runtime took its NULL task, holding 6 tasks');

my $st = status();
my ($rt) = grep { $_->{cfg} eq 'delay=300' }
           @{ worker_libs($st, $lib)->{$pid}{runtimes} || [] };
is($rt->{state}, 'draining', 'still draining: tasks unanswered');
is($rt->{inflight}, 6, '6 tasks in flight');
unlike(FFITest::error_log(), qr/closing "\Q$lib\E"/, 'the image is mapped');

answers($held, sub { "true after-null:k$_[0]\n" },
        'the 5 held calls got their answers, given after the NULL task');
ok(FFITest::wait_for_log('mb_after_null answered 6 task(s) after its NULL'),
   'the timed-out call was answered late too');

# the image goes once drained: only "delay=300" was loaded from it
ok(FFITest::wait_for_log(qr/closing "\Q$lib\E" version 1/),
   'then the image was closed');
ok(wait_until(sub {
       my $l = worker_libs(status(), $lib)->{$pid};
       $l && !grep { $_->{cfg} eq 'delay=300' } @{ $l->{runtimes} };
   }, 5), 'status: the runtime is gone');

# --- a reload with calls held: they get the old runtime's late answers
($status, $body) = FFITest::http('GET', '/call?cfg=delay=200&q=echo:v');
is($body, "true v\n", 'a new runtime serves');
$held = FFITest::begin_requests(10, 'GET',
                                sub { "/call?cfg=delay=200&q=keep:r$_[0]" });
ok(FFITest::wait_for_log(qr/mb_after_null keeps r\d/, 10, 10),
   '10 calls held');
my ($rs, $json) = reload($lib);
is($rs, 200, 'reload answers 200 at once');
($status, $body) = FFITest::http('GET', '/call?cfg=delay=200&q=echo:new');
is($body, "true new\n", 'the new runtime serves at once');
ok(FFITest::wait_for_log('mb_after_null took its NULL task holding 10'),
   'the old runtime took its NULL task');
answers($held, sub { "true after-null:r$_[0]\n" },
        'the 10 held calls got the old runtime\'s answers');

my @states;
ok(wait_until(sub {
       my $l = worker_libs(status(), $lib)->{$pid} or return 0;
       @states = map { $_->{state} } @{ $l->{runtimes} };
       "@states" eq 'serving';
   }, 5), 'status: only the new runtime is left')
    or diag("states: @states");

FFITest::stop_nginx('answers after NULL');
done_testing();
