# The shared zone's library table never fills up for good: release folders
# behind a symlink make a new path per deploy, and the entry of a library
# no worker holds any more (every runtime unloaded) gives its place back.
# An entry some worker holds is never reclaimed.
use lib 't/lib', 't/lib/misbehave';
use strict;
use warnings;
use FFITest;
use Test::More;
use File::Copy qw(copy);
use MBTest qw(release reload status);

my $dir = FFITest::servroot() . '/releases';
mkdir $dir, 0755;
copy(release('v1'), sprintf("$dir/lib%03d.so", $_)) or die for 0 .. 99;
copy(release('v1'), "$dir/libkept.so") or die;

FFITest::start_nginx(config => <<"CONF");
location /ffi/ { ffi_admin; }
location = /kept {
    content_by_lua_block {
        kept = kept or assert(ngx.load_ffi("$dir/libkept.so"))
        ngx.say(select(2, kept:call("version")))
    }
}
location = /deploys {
    content_by_lua_block {
        local failed = 0
        for i = 0, 99 do
            local rt, err = ngx.load_ffi(string.format("$dir/lib%03d.so", i),
                                         nil, {unpin = true})
            if rt then
                rt:call("version")
                rt:__unload()
            else
                failed = failed + 1
                ngx.log(ngx.ERR, "deploy ", i, ": ", err)
            end
        end
        ngx.say(failed, " failed")
    }
}
CONF

my (undef, $body) = FFITest::http('GET', '/kept');
is($body, "v1\n", 'a library held all along');
(undef, $body) = FFITest::http('GET', '/deploys', undef, undef, 60);
is($body, "0 failed\n", '100 deploys at 100 paths, each loaded then unloaded');
my $st = status();
ok(@{ $st->{libraries} } <= 64, 'the table holds at most 64 entries')
    or diag scalar @{ $st->{libraries} };
ok((grep { $_->{path} eq "$dir/libkept.so" } @{ $st->{libraries} }),
   'the held library kept its entry');
copy(release('v2'), "$dir/libkept.so.tmp") or die;
rename "$dir/libkept.so.tmp", "$dir/libkept.so" or die;
my ($code, $json) = reload("$dir/libkept.so");
is($code, 200, 'and still reloads');
(undef, $body) = FFITest::http('GET', '/kept');
is($body, "v2\n", 'to version 2');

FFITest::stop_nginx();
unlike(FFITest::error_log(), qr/too many libraries/, 'never "too many libraries"');
done_testing();
