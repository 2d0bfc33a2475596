#!/bin/bash
# `make bench`: builds the benchmark's helpers under build/bench (or
# BENCH_PREFIX) and runs bench/bench.py; whatever it started is stopped on
# any exit (trap).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
out=${BENCH_PREFIX:-$repo/build/bench}
cc=${CC:-cc}

cd "$repo"

if [ ! -f "${BENCH_MODULE:-build/ngx_http_lua_ffi_module.so}" ]; then
    echo "bench: build/ngx_http_lua_ffi_module.so is missing: run make" >&2
    exit 1
fi

# every language's echo runtime (make examples)
for lib in examples/go/libffi_go_echo.so examples/rust/libffi_rust_echo.so \
           examples/python/libffi_python3.so examples/java/libffi_java.so \
           examples/nodejs/libffi_nodejs.so; do
    if [ ! -f "$lib" ]; then
        echo "bench: $lib is missing: run make examples" >&2
        exit 1
    fi
done

for tool in nginx wrk python3 go; do
    command -v "$tool" >/dev/null || {
        echo "bench: $tool not found (see DEPS_BENCH in the Makefile)" >&2
        exit 1
    }
done

mkdir -p "$out"

"$cc" -O2 -g -Wall -Wextra -Werror -pthread -o "$out/uds_echo" \
    bench/uds_echo.c

# the Go server: GOPATH mode, standard library only, caches in $out
GO111MODULE=off GOPROXY=off GOCACHE="$out/.gocache" GOPATH="$out/.gopath" \
    go build -o "$out/uds_echo_go.tmp" bench/uds_echo.go
mv -f "$out/uds_echo_go.tmp" "$out/uds_echo_go"

# two builds of the demo that differ only in their build id: each reload
# swaps in the other, so that a new image is really mapped every time
"$cc" -O2 -g -Wall -Wextra -Werror -fPIC -pthread -shared \
    -Wl,--build-id=0xbe0c0a00000000000000000000000000000000a1 \
    -o "$out/libdemo-a.so" examples/c/demo.c
"$cc" -O2 -g -Wall -Wextra -Werror -fPIC -pthread -shared \
    -Wl,--build-id=0xbe0c0b00000000000000000000000000000000b2 \
    -o "$out/libdemo-b.so" examples/c/demo.c

# the module as it was just before the metrics (issue 15), for the A/B of
# their per-call cost: that commit's tree, built by its own Makefile in
# build/bench-before (kept between runs; a lock: the smoke test may build
# it at the same time); no git checkout, or no such commit: no A/B
before_rev=${BENCH_BEFORE_REV:-e596f2d}
before=$repo/build/bench-before
if rev=$(git -C "$repo" rev-parse -q --verify "$before_rev^{commit}" \
         2>/dev/null); then
    mkdir -p "$before"
    (
        flock 9
        if [ "$(cat "$before/rev" 2>/dev/null)" != "$rev" ] \
           || [ ! -f "$before/src/build/ngx_http_lua_ffi_module.so" ]; then
            echo "bench: building the module at $before_rev in" \
                 "build/bench-before (the metrics A/B)"
            rm -rf "$before/src" "$before/rev"
            mkdir -p "$before/src/build"
            git -C "$repo" archive "$rev" | tar -x -C "$before/src"
            # lua-nginx-module's source is the same: no apt-get source
            if [ -f build/lua-nginx-module/.version ]; then
                ln -s "$repo/build/lua-nginx-module" \
                    "$before/src/build/lua-nginx-module"
            fi
            make -s -C "$before/src" module >"$before/build.log" 2>&1 || {
                tail -30 "$before/build.log" >&2
                echo "bench: the module at $before_rev did not build" >&2
                exit 1
            }
            echo "$rev" >"$before/rev"
        fi
    ) 9>"$before/lock"
    export BENCH_BEFORE_MODULE=$before/src/build/ngx_http_lua_ffi_module.so
    export BENCH_BEFORE_LUA=$before/src/lua
    export BENCH_BEFORE_REV=$(git -C "$repo" rev-parse --short "$rev")
    unset BENCH_BEFORE_SKIP
else
    export BENCH_BEFORE_SKIP="not a git checkout with commit $before_rev"
    echo "bench: metrics A/B skipped: $BENCH_BEFORE_SKIP" >&2
fi

# the driver leads its own process group (nginx, uds_echo, wrk, perf run
# in it): the trap stops that group if the driver itself cannot
driver=
stop() {
    [ -n "$driver" ] || return 0

    if kill -0 "$driver" 2>/dev/null; then
        kill -TERM "$driver" 2>/dev/null || true
        wait "$driver" 2>/dev/null || true
    fi

    # whatever outlived a driver that was killed hard
    if kill -0 -- "-$driver" 2>/dev/null; then
        kill -TERM -- "-$driver" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 -- "-$driver" 2>/dev/null || return 0
            sleep 0.1
        done
        kill -KILL -- "-$driver" 2>/dev/null || true
    fi
}
trap stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

python=python3
[ -x /usr/bin/python3 ] && python=/usr/bin/python3

setsid "$python" -B bench/bench.py &
driver=$!
wait "$driver"
