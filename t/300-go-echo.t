# The Go echo runtime (examples/go/libffi_go_echo.so): every call answered
# with the same bytes, 1,000 calls from two workers, over HTTP too.
use lib 't/lib';
use EchoTest qw(run_echo_tests);

run_echo_tests('go', 'ffi_go_echo', 'examples/go');
