# The Rust echo runtime (examples/rust/libffi_rust_echo.so): every call
# answered with the same bytes, 1,000 calls from two workers, over HTTP too.
use lib 't/lib';
use EchoTest qw(run_echo_tests);

run_echo_tests('rust', 'ffi_rust_echo', 'examples/rust');
