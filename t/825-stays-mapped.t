# A library that stays mapped after dlclose() (NODELETE, as a Rust cdylib
# or a C++ library with a unique symbol) loaded with unpin = true, used as
# upstream's examples do: load, call, rt:__unload(), and again on the next
# request. The worker maps the very file it already holds again (its
# kept descriptor, the name glibc knows it by) instead of refusing it,
# and the cycles cost no descriptor each. A canary of another build, then
# promote and rollback, work the same way between such cycles: a promoted
# canary's image is the one its copy is mapped as, never mapped twice.
use lib 't/lib';
use lib 't/lib/misbehave';
use FFITest;
use MBTest qw(release install escape workers);
use Test::More;
use JSON::PP;

my $root = FFITest::servroot();
my $dir = "$root/lib";
mkdir $dir, 0755;
my $lib = "$dir/libsticky.so";
install(release('nodelete'), $lib);

my $config = <<"CONF";
location /ffi/ { ffi_admin; allow 127.0.0.1; deny all; }
location = /cycle {
    content_by_lua_block {
        local rt, err = ngx.load_ffi("$lib", nil, {unpin = true})
        if not rt then
            ngx.say("load: ", err)
            return
        end
        local ok, res = rt:call("version")
        rt:__unload()
        local ok2 = rt:call("version")
        ngx.say(tostring(ok), " ", tostring(res), " ", tostring(ok2))
    }
}
CONF

FFITest::start_nginx(workers => 1, config => $config,
                     http_config => "ffi_close_grace 10ms;");

my ($pid) = workers(1);
ok($pid, "the worker is up") or BAIL_OUT("no worker");
# the worker's descriptors open on copies of the library
sub copies {
    return grep { (readlink($_) // '') =~ m{/libsticky[^/]*\z} }
           glob("/proc/$pid/fd/*");
}

for my $i (1 .. 6) {
    my ($s, $body) = FFITest::http('GET', '/cycle');
    is($body, "true nodelete false\n", "cycle $i: loaded, called, unloaded")
        or diag(FFITest::error_log());
    ok(FFITest::wait_for_log(qr/stays mapped after dlclose/, 10, $i),
       "cycle $i: the image closed, still mapped");
    is(scalar(copies()), 1, "cycle $i: one descriptor, on the one copy");
}

sub post {
    my ($what, $args) = @_;
    my ($status, $body) = FFITest::http('POST', "/ffi/$what?$args");
    return ($status, $body);
}

sub cycles {
    my ($n) = @_;
    my %seen;
    for (1 .. $n) {
        my (undef, $body) = FFITest::http('GET', '/cycle');
        $seen{$body}++;
    }
    return \%seen;
}

install(release('nodelete2'), $lib);
my ($s, $body) = post('reload', 'lib=' . escape($lib) . '&canary=50');
is($s, 200, 'a canary of another build') or diag($body);
is_deeply(cycles(10), { "true nodelete false\n" => 5,
                        "true nodelete2 false\n" => 5 },
          'cycles: half on each version');
($s, $body) = post('promote', 'lib=' . escape($lib));
is($s, 200, 'promoted') or diag($body);
is_deeply(cycles(4), { "true nodelete2 false\n" => 4 }, 'cycles on it');
($s, $body) = post('rollback', 'lib=' . escape($lib));
is($s, 200, 'rolled back') or diag($body);
is_deeply(cycles(4), { "true nodelete false\n" => 4 },
          'cycles on the bytes of version 1 again');

# a canary retired (rollback while it runs), then the same build again as
# a plain reload: its own copy maps beside the retired one
install(release('nodelete2'), $lib);
($s, $body) = post('reload', 'lib=' . escape($lib) . '&canary=50');
is($s, 200, 'a second canary') or diag($body);
is_deeply(cycles(10), { "true nodelete false\n" => 5,
                        "true nodelete2 false\n" => 5 },
          'cycles: half on each version again');
($s, $body) = post('rollback', 'lib=' . escape($lib));
is($s, 200, 'the canary retired') or diag($body);
is_deeply(cycles(4), { "true nodelete false\n" => 4 },
          'cycles on the version that stayed');
($s, $body) = post('reload', 'lib=' . escape($lib));
is($s, 200, 'a plain reload to the retired build') or diag($body);
is_deeply(cycles(4), { "true nodelete2 false\n" => 4 }, 'cycles on it');

unlike(FFITest::error_log(), qr/already names a mapped library|names another/,
       'never refused');
# every copy mapped once: one descriptor each (5 copies: version 1, the
# two canaries, the rollback's own copy, the last reload), none per cycle
is(scalar(copies()), 5, 'one descriptor per copy that stays mapped')
    or diag(join ' ', map { readlink $_ } glob("/proc/$pid/fd/*"));

FFITest::stop_nginx();
done_testing();
