package EchoTest;
# The echo examples' shared suite: a library that answers every request with
# the same bytes, 1,000 calls from two workers, 1 MB and empty over HTTP.

use strict;
use warnings;

use FFITest;
use Test::Base ();

our @EXPORT_OK = qw(run_echo_tests);
use Exporter 'import';

my $repo = FFITest::repo();

# the blocks below read $::main_config, $::init and $::echo_location;
# run_echo_tests() sets them for one library

# echo_check(label, rt, n, width): n calls, width at a time, with payloads
# of every byte value and of every size from 2 to n + 3 bytes; logs how
# many came back unchanged
our $init = <<'LUA';
function echo_check(label, rt, n, width)
    echo_run(label, rt, n, width, function(i)
        return string.rep(string.char(i % 256), i) .. i
    end)
end

-- echo_burst(label, rt, n): n calls in flight at once (more than the Go
-- echo's batch of 64 can hold, though how many a poll takes is up to the
-- threads), every 4th of them empty (a zero-length string), the others of
-- n sizes
function echo_burst(label, rt, n)
    echo_run(label, rt, n, n, function(i)
        return i % 4 == 0 and "" or string.rep(string.char(i % 256), i)
    end)
end

-- both: width light threads share calls 1..n (thread t makes calls t,
-- t + width, ...), call i sends req(i); logs how many came back unchanged
function echo_run(label, rt, n, width, req)
    local good = 0

    local function caller(first)
        for i = first, n, width do
            local r = req(i)
            local ok, res = rt:echo(r)
            if ok and res == r then
                good = good + 1
            end
        end
    end

    local threads = {}
    for t = 1, width do
        threads[t] = ngx.thread.spawn(caller, t)
    end
    for t = 1, width do
        ngx.thread.wait(threads[t])
    end

    ngx.log(ngx.NOTICE, label, ": ", good, " of ", n, " calls echoed")
end
LUA

our $echo_location = <<'CONF';
location = /echo {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("@LIB@"))
        ngx.req.read_body()
        local req = ngx.req.get_body_data() or ""
        local ok, res = rt:echo(req)
        ngx.print(tostring(ok), " ", #res, " ",
                  res == req and "same" or "differs")
    }
}
CONF


# run_echo_tests(label, library short name, folder under the repo)
sub run_echo_tests {
    my ($label, $lib, $dir) = @_;

    # short names are searched in ffi_library_path, then LD_LIBRARY_PATH
    $::main_config = "env LD_LIBRARY_PATH=$repo/$dir;";
    $::init = $EchoTest::init;
    ($::echo_location = $EchoTest::echo_location) =~ s/\@LIB\@/$lib/g;

    my $spec = $EchoTest::spec;
    $spec =~ s/\@LIB\@/$lib/g;
    $spec =~ s/\@LABEL\@/$label/g;

    Test::Base::spec_string($spec);
    FFITest::run_tests();
}


our $spec = <<'SPEC';

=== TEST 1: 500 calls in each of 2 workers, 10 at a time, all echoed
--- workers: 2
--- main_config eval: $::main_config
--- init_by_lua_block eval: $::init
--- init_worker_by_lua_block
ngx.timer.at(0, function()
    local rt, err = ngx.load_ffi("@LIB@")
    if not rt then
        ngx.log(ngx.ERR, "load_ffi: ", err)
        return
    end
    echo_check("@LABEL@ echo", rt, 500, 10)
end)
--- wait_for_log eval
[("@LABEL@ echo: 500 of 500 calls echoed") x 2]
--- no_error_log
[error]



=== TEST 2: 1 MB of binary over HTTP comes back unchanged
--- main_config eval: $::main_config
--- config eval: $::echo_location
--- request eval
"POST /echo\n" . pack('C*', map { ($_ * 7) % 256 } 0 .. (1 << 20) - 1)
--- http_config
client_body_buffer_size 2m;
client_max_body_size 2m;
--- response_body: true 1048576 same
--- no_error_log
[error]



=== TEST 3: the empty request is answered with the empty string
--- main_config eval: $::main_config
--- config eval: $::echo_location
--- request
POST /echo
--- response_body: true 0 same
--- no_error_log
[error]



=== TEST 4: 300 calls in flight at once, empty ones among them, all echoed
--- main_config eval: $::main_config
--- init_by_lua_block eval: $::init
--- init_worker_by_lua_block
ngx.timer.at(0, function()
    local rt, err = ngx.load_ffi("@LIB@")
    if not rt then
        ngx.log(ngx.ERR, "load_ffi: ", err)
        return
    end
    echo_burst("@LABEL@ burst", rt, 300)
end)
--- wait_for_log
@LABEL@ burst: 300 of 300 calls echoed
--- no_error_log
[error]
SPEC

1;
