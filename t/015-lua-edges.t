# Edges of the Lua API: runtime keys never collide for any (lib, cfg) pair,
# the error for a bad library name is that message alone, and a timeout
# under 0.5 ms is the shortest timeout, not "wait forever".
use lib 't/lib';
use FFITest;
use Test::More;

# one library under two names: "libt.so" and "libt.so&x"
my $root = FFITest::servroot();
my $dir = "$root/lib";
mkdir $dir, 0755;
my $target = FFITest::repo() . '/t/lib/runtimes/libffi_test.so';
symlink $target, "$dir/libt.so" or die "symlink: $!\n";
symlink $target, "$dir/libt.so&x" or die "symlink: $!\n";

my $config = <<"CONF";
location = /keys {
    content_by_lua_block {
        local function cfg_of(rt)
            local ok, res = rt:call("cfg")
            return tostring(res)
        end
        local a = assert(ngx.load_ffi("$dir/libt.so", "x"))
        local b = assert(ngx.load_ffi("$dir/libt.so&x"))
        ngx.say("(libt.so, x): ", cfg_of(a))
        ngx.say("(libt.so&x, nil): ", cfg_of(b))
        ngx.say("same object: ", tostring(a == b))
        local c = assert(ngx.load_ffi("$dir/libt.so", "x&"))
        local d = assert(ngx.load_ffi("$dir/libt.so&x", "&"))
        ngx.say("(libt.so, x&): ", cfg_of(c), ", (libt.so&x, &): ",
                cfg_of(d))
        ngx.say("again: ", tostring(ngx.load_ffi("$dir/libt.so", "x") == a),
                " ", tostring(ngx.load_ffi("$dir/libt.so&x") == b))
        local rt, err = ngx.load_ffi("demo&b")
        ngx.say("demo&b: ", tostring(rt), " ", tostring(err))
        ngx.say(tostring(a))
    }
}
location = /errors {
    content_by_lua_block {
        local rt, err = ngx.load_ffi("no_such_library_with_a_long_name")
        ngx.say(err)
        rt, err = ngx.load_ffi("bad\\0name")
        ngx.say("[", err, "]")
        rt, err = ngx.load_ffi(string.rep("n", 5000))
        ngx.say("[", err, "]")
    }
}
location = /timeout {
    content_by_lua_block {
        -- a runtime that answers 2 s later (held-up workers on a loaded
        -- machine still time out first): every tiny timeout ends
        -- the call first; 0 is no timeout (it overrides the runtime's)
        local rt = assert(ngx.load_ffi("ffi_test"))
        for _, t in ipairs({0.0004, 0.0001, 1e-300, 0}) do
            local ok, res = rt:call("sleep:2000:late", t)
            ngx.say("per call ", t, ": ", tostring(ok), " ", tostring(res))
        end
        local tiny = assert(ngx.load_ffi("ffi_test", "tiny",
                                         {timeout = 0.0002}))
        local ok, res = tiny:call("sleep:2000:late")
        ngx.say("per runtime 0.0002: ", tostring(ok), " ", tostring(res))
        ok, res = tiny:call("sleep:2000:late", 0)
        ngx.say("per runtime 0.0002, per call 0: ", tostring(ok), " ",
                tostring(res))
    }
}
CONF

FFITest::start_nginx(config => $config);

my ($status, $body) = FFITest::http('GET', '/keys');
# the folder searched last is the one compiled in from make's PREFIX
my $demo_err = qr/library "demo&b" not found \(looked for "libdemo&b\.so" in /
             . qr/ffi_library_path, LD_LIBRARY_PATH and \/[^()\s]+\)/;
my $keys = qr/\A\(libt\.so, x\): x\n\(libt\.so&x, nil\): nil\n/
            . qr/same object: false\n/
            . qr/\(libt\.so, x&\): x&, \(libt\.so&x, &\): &\nagain: true true\n/
            . qr/demo&b: nil $demo_err\nffi runtime \Q$dir\E\/libt\.so&x\n\z/;
like($body, qr/$keys/, 'keys: every (lib, cfg) pair its own runtime');

($status, $body) = FFITest::http('GET', '/errors');
like($body, qr/\Alibrary "no_such_library_with_a_long_name" not found[^\n]*\n\[bad library name\]\n\[bad library name\]\n\z/,
     'a bad library name: that message, no tail of the one before');

($status, $body) = FFITest::http('GET', '/timeout', undef, undef, 30);
is($body, "per call 0.0004: false timeout\nper call 0.0001: false timeout\n"
          . "per call 1e-300: false timeout\nper call 0: true late\n"
          . "per runtime 0.0002: false timeout\n"
          . "per runtime 0.0002, per call 0: true late\n",
   'a timeout under 0.5 ms: the shortest, not none');

FFITest::stop_nginx('lua edges');
done_testing();
