# The Go echo in a host with upstream's ABI only (no task_poll_batch, no
# runtime services: they are weak in echo.go): it falls back to task_poll
# and still answers every call, empty ones included.
use strict;
use warnings;
use Test::More;
use File::Temp qw(tempdir);

use lib 't/lib';
use FFITest;

my $repo = FFITest::repo();
my $lib = "$repo/examples/go/libffi_go_echo.so";
my $dir = tempdir(CLEANUP => 1);

plan skip_all => "$lib is missing: make examples" unless -f $lib;

is(system('cc', '-O2', '-Wall', '-Wextra', '-Werror', '-pthread',
          '-rdynamic', '-o', "$dir/host",
          "$repo/t/lib/hosts/upstream_host.c", '-ldl'),
   0, 'the upstream-ABI host builds');

my $out = `$dir/host $lib 300 2>&1`;
is($?, 0, 'the host ran to the end');
is($out, "300 of 300 calls echoed, 1 NULL task taken, 0 ABI calls after it\n",
   "every call echoed once, the NULL task taken, nothing after it");

done_testing();
