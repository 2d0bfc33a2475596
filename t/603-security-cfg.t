# cfg strings (connection strings, passwords) stay in the worker: error.log
# (at debug level) never shows them through loads, reloads and failed
# reloads, and /ffi/status shows a keyed tag ("redacted:" and 16 hex
# digits, the same for equal cfgs in every worker) unless the operator asks
# with ffi_status_cfg on.
use lib 't/lib';
use lib 't/lib/misbehave';
use FFITest;
use MBTest qw(release install reload status worker_libs wait_until);
use Test::More;

my $root = FFITest::servroot();
my $dir = "$root/lib";
mkdir $dir, 0755;
my $ver = "$dir/libver.so";
install(release('v1'), $ver);

my $secret = 'postgres://app:hunter2-SECRET@db/x';
my $other = 'hunter3-OTHER';

my $config = <<"CONF";
location /ffi/ { ffi_admin; allow 127.0.0.1; deny all; }
location = /v {
    content_by_lua_block {
        local cfg = ngx.var.arg_other and "$other" or "$secret"
        local rt, err = ngx.load_ffi("$ver", cfg)
        if not rt then
            ngx.say("false ", err)
            return
        end
        local ok, res = rt:call("version")
        ngx.header["X-Pid"] = ngx.worker.pid()
        ngx.say(tostring(ok), " ", tostring(res))
    }
}
CONF

sub everywhere {
    my ($path, $want) = @_;
    my %pids;
    wait_until(sub {
        my ($s, $b, $h) = FFITest::http('GET', $path);
        $pids{ $h->{'x-pid'} }++ if $b eq $want && $h->{'x-pid'};
        return keys %pids == 2;
    }, 20);
    return scalar keys %pids;
}

# { cfg as status shows it => how many workers have a runtime with it }
sub runtime_cfgs {
    my %cfg;
    for my $l (values %{ worker_libs(status(), $ver) }) {
        my %mine = map { $_->{cfg} => 1 } @{ $l->{runtimes} || [] };
        $cfg{$_}++ for keys %mine;
    }
    return \%cfg;
}

FFITest::start_nginx(workers => 2, config => $config, log_level => 'debug')
    or die;

is(everywhere('/v', "true v1\n"), 2, 'v1 serves in both workers');
is(everywhere('/v?other=1', "true v1\n"), 2, 'a second cfg in both workers');

install(release('v2'), $ver);
my ($rs) = reload($ver);
is($rs, 200, 'reload: 200');
install(release('fail'), $ver);
($rs) = reload($ver);
is($rs, 422, 'a failing libffi_init: 422');
install(release('crashinit'), $ver);
($rs) = reload($ver);
is($rs, 422, 'a crash in libffi_init: 422');

my $cfgs = runtime_cfgs();
my @tags = sort keys %$cfgs;
is(scalar @tags, 2, 'two cfgs, two tags');
like($_, qr/^redacted:[0-9a-f]{16}\z/, "status shows $_") for @tags;
is_deeply([sort values %$cfgs], [2, 2], 'each tag the same in both workers');

my ($s, $body) = FFITest::http('GET', '/ffi/status');
unlike($body, qr/hunter/, 'no cfg in /ffi/status');
unlike(FFITest::error_log(), qr/hunter/, 'no cfg in error.log (debug)');

FFITest::stop_nginx();

# the operator asks
install(release('v1'), $ver);
FFITest::start_nginx(workers => 2, config => $config,
                     http_config => 'ffi_status_cfg on;') or die;
is(everywhere('/v', "true v1\n"), 2, 'ffi_status_cfg on: v1 serves');
is_deeply(runtime_cfgs(), { $secret => 2 }, 'status shows the cfg itself');
FFITest::stop_nginx();

done_testing();
