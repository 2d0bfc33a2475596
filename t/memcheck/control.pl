#!/usr/bin/perl
# The memcheck run's control: a worker that leaks 4,000 bytes on purpose
# (from Lua, through the FFI) must show up in LeakSanitizer's report, or
# a clean report means nothing. Run by t/memcheck/run.sh.

use strict;
use warnings;

use lib 't/lib';
use FFITest;
use Test::More;

my $config = <<'CONF';
location = /leak {
    content_by_lua_block {
        local ffi = require "ffi"
        ffi.cdef[[void *malloc(size_t size);]]
        -- lost on purpose: the control leak
        local p = ffi.C.malloc(4000)
        ngx.say(p ~= nil and "leaked" or "no memory")
    }
}
CONF

FFITest::start_nginx(workers => 1, config => $config);
my (undef, $body) = FFITest::http('GET', '/leak');
is($body, "leaked\n", 'the control leak happened');
FFITest::stop_nginx('leak control');
done_testing();
