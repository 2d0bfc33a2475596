#!/bin/bash
# make test-memcheck: the module built with AddressSanitizer (build/asan/),
# nginx run with libasan preloaded; runs tests, then counts ASan reports.
#
#   t/memcheck/run.sh                 t/540 (10,000 calls, 100 reloads)
#                                     and the reliability tests t/5*.t
#   t/memcheck/run.sh t/0*.t ...      these tests instead
#   FFI_MEMCHECK_ALL=1 t/memcheck/run.sh   the whole suite (prove -r t/)
#
# Fails on any ASan error report and on any leak LeakSanitizer finds in
# memory allocated by the module (leaks of nginx, LuaJIT or libc are
# listed, not counted: they are not ours to fix).

set -euo pipefail
cd "$(dirname "$0")/../.."

out=build/asan
logs=$out/logs
asan_lib=$(gcc -print-file-name=libasan.so)

if [ ! -e "$asan_lib" ]; then
    echo "no libasan (Debian package libasan8)" >&2
    exit 1
fi
asan_lib=$(readlink -f "$asan_lib")

# the normal build first: its configured nginx tree is what we rebuild
make -s module test-libs
make -s -C t/lib/misbehave

# a copy of the configured tree, our objects rebuilt with ASan
rm -rf "$out/nginx"
mkdir -p "$out"
cp -a build/nginx "$out/nginx"
find "$out/nginx/objs" -name 'ngx_http_lua_ffi_*.o' -delete
rm -f "$out/nginx/objs/ngx_http_lua_ffi_module.so"
make -s -C "$out/nginx" -f objs/Makefile objs/ngx_http_lua_ffi_module.so \
    CC="${CC:-cc} -fsanitize=address -fno-omit-frame-pointer"
cp "$out/nginx/objs/ngx_http_lua_ffi_module.so" "$out/"
# the trial helper is found next to the module
cp build/ffi-trial "$out/" 2>/dev/null || true

# nginx with the ASan runtime first in line, as a module built with it needs
cat > "$out/nginx-asan" <<SH
#!/bin/sh
# nginx with AddressSanitizer's runtime preloaded (t/memcheck/run.sh).
# NGINX (the harness's name for this script) must not reach nginx: to
# nginx it means sockets inherited from a binary upgrade, and no daemon.
unset NGINX
LD_PRELOAD=$asan_lib exec ${NGINX_BIN:-/usr/sbin/nginx} "\$@"
SH
chmod 755 "$out/nginx-asan"

rm -rf "$logs"
mkdir -p "$logs"

# handle_segv=0: the crash trial and the harness see real signals
export ASAN_OPTIONS="log_path=$PWD/$logs/asan:detect_leaks=1:handle_segv=0:\
halt_on_error=0:detect_stack_use_after_return=0:allocator_may_return_null=1:\
quarantine_size_mb=16"
export LSAN_OPTIONS="report_objects=0:max_leaks=200"
export NGINX="$PWD/$out/nginx-asan"
export FFI_MODULE="$PWD/$out/ngx_http_lua_ffi_module.so"
# LeakSanitizer scans each exiting process: with a language runtime's heap
# (t/320's Python) that took 21 s on 2 busy cores. The harness keeps its
# 20 s deadline up to each worker's "exit" and allows this much after it
export FFI_LEAK_SCAN_SECS=60
# nginx runs 2-3 times slower under ASan: every deadline that only guards
# against a hang (t/lib/FFITest.pm's deadline()) is three times as long
export FFI_TIMEOUT_SCALE=3

# the control: LeakSanitizer must see a leak made on purpose in a worker
mkdir -p "$logs/control"
ASAN_OPTIONS="${ASAN_OPTIONS/$logs\/asan/$logs\/control\/asan}" \
    perl t/memcheck/control.pl
if ! grep -qs "Direct leak of 4000 byte" "$logs"/control/asan.*; then
    echo "memcheck: LeakSanitizer did not report the control leak:" \
         "its reports cannot be trusted here" >&2
    echo "memcheck: 0 passed, 1 failed"
    exit 1
fi
echo "memcheck: the control leak (4000 bytes) was reported, as it must be"

if [ $# -gt 0 ]; then
    tests=("$@")
elif [ -n "${FFI_MEMCHECK_ALL:-}" ]; then
    tests=(-r t/)
else
    tests=(t/540-calls-and-reloads.t t/5[0-3]*.t)
fi

set +e
prove "${tests[@]}"
proved=$?
set -e

exec perl t/memcheck/asan-report.pl "$logs" "$proved"
