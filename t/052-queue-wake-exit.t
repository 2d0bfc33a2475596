# A call made while the worker starts to shut down (a pending ngx.timer
# runs early, premature, from ngx_close_idle_connections() after the event
# loop's cycle) must still wake its sleeping poller: nginx runs no posted
# event before it sleeps again in epoll_wait(), so a wake deferred to
# the end of the cycle waits for the next timer to fire (the keeper's
# round of 1 s, or another of ours: ~0.9 s here, measured). Not a timing
# test at heart: the margin is the keeper's round, far above a wake's
# cost. No busy polling (it would end the wait itself), a poller that
# sleeps at once.
use lib 't/lib';
use FFITest;
use Test::More;

# "at once": well under the keeper's round of 1 s even on a loaded box
# (scaled as every deadline, but never up to the round it must tell apart)
my $late = FFITest::deadline(0.5);
$late = 0.8 if $late > 0.8;

my $config = <<'CONF';
location = /arm {
    content_by_lua_block {
        local rt = assert(ngx.load_ffi("ffi_test"))
        local ok, res = rt:call("echo:warm")
        assert(ok and res == "warm")
        assert(ngx.timer.at(3600, function(premature)
            ngx.update_time()
            local t0 = ngx.now()
            local ok, res = rt:call("echo:at exit")
            ngx.update_time()
            ngx.log(ngx.WARN, "premature ", tostring(premature),
                    " call: ", tostring(ok), " ", tostring(res),
                    ngx.now() - t0 < LATE and " at once" or " late")
        end))
        ngx.say("armed")
    }
}
CONF
$config =~ s/LATE/$late/;


FFITest::start_nginx(config => $config,
                     http_config => 'ffi_queue_spin_us 0; '
                                    . 'ffi_busy_poll_us 0;');

my ($status, $body) = FFITest::http('GET', '/arm');
is($body, "armed\n", 'a timer waits, the runtime answered once');
ok(FFITest::wait_threads_asleep(2), 'the poller sleeps');

FFITest::stop_nginx('shutdown with a call from a premature timer');

like(FFITest::error_log(), qr/premature true call: true at exit at once/,
     'the call made at shutdown was answered, not given up');

done_testing();
