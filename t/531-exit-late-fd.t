# An answer that comes after nginx's own exit work (here: a library's
# destructor, in exit(); as well any runtime thread still running then)
# wakes the worker's eventfd. nginx closes the cycle's descriptors before
# exit(), and a number it freed may be any other file's by then: the late
# answer must not write into it. The library gives every closed eventfd's
# number to a witness file, answers once more, and the file stays empty.
use lib 't/lib';
use lib 't/lib/misbehave';
use FFITest;
use MBTest qw(mb_lib workers);
use Test::More;

my $lib = mb_lib('libmb_late_fd.so');
my $witness = FFITest::servroot() . '/logs/witness';

my $config = <<"CONF";
location = /call {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("$lib", "$witness", {trial = false}))
        local ok, res = rt:call("hello")
        ngx.say(tostring(ok), " ", tostring(res))
    }
}
CONF

unlink $witness;
FFITest::start_nginx(workers => 1, config => $config);
workers(1);
my ($st, $body) = FFITest::http('GET', '/call');
is($body, "true hello\n", 'the call is answered');
my $master = FFITest::master_pid();
FFITest::signal('QUIT');
ok(FFITest::wait_exit($master, 30), 'nginx quit');
like(FFITest::error_log(), qr/mb_late_fd: answered late/,
     'the library answered after the exit work');
is(-e $witness ? -s $witness : 0, 0,
   'the late answer wrote nothing into a file that took a freed number');
FFITest::stop_nginx('late answer');

done_testing();
