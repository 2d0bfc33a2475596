# What the runtime-services tests of the loaders (t/720 Python, t/740
# Node.js) share: the test module each writes for its loader, and the
# request that has the runtime and Lua increment one counter at once.
package ServiceTest;

use strict;
use warnings;

use File::Path qw(make_path);


# Writes $text to $dir/$file ($dir made if missing), for the loader to
# find there; dies if it cannot.
sub write_module {
    my ($dir, $file, $text) = @_;

    make_path($dir);
    open my $fh, '>', "$dir/$file" or die "$dir/$file: $!\n";
    print $fh $text;
    close $fh or die "$dir/$file: $!\n";
}


# A location /t whose runtime ($lib with $cfg) counts in ffi_dict's
# "counter" when it gets $req while Lua adds 1 to it $n times: the answer
# is the runtime's and the counter's sum, exact when neither loses one.
sub counter_config {
    my ($lib, $cfg, $req, $n) = @_;

    return <<"CONF";
location = /t {
    content_by_lua_block {
        local d = ngx.shared.ffi_dict
        local rt = assert(ngx.load_ffi("$lib", "$cfg",
                                       {is_global = true}))
        local t = ngx.thread.spawn(function() return rt:call("$req") end)
        for i = 1, $n do d:incr("counter", 1, 0) end
        local _, ok, res = ngx.thread.wait(t)
        ngx.say(res, " ", d:get("counter"))
    }
}
CONF
}


1;
