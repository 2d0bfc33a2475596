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

# what a thread hand-off and a process start cost on this machine
"$cc" -O2 -g -Wall -Wextra -Werror -pthread -o "$out/floor" bench/floor.c

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

# build_at REV DIR: the module at commit REV, from that commit's tree
# (git archive) built by its own Makefile in DIR/src, kept between runs
# (DIR/rev says which commit) and built under a lock (the smoke test may
# build it while make bench runs)
build_at() {
    local rev=$1 dir=$2
    mkdir -p "$dir"
    (
        flock 9
        if [ "$(cat "$dir/rev" 2>/dev/null)" = "$rev" ] \
           && [ -f "$dir/src/build/ngx_http_lua_ffi_module.so" ]; then
            exit 0
        fi
        echo "bench: building the module at ${rev:0:7} in" \
             "${dir#$repo/} (the metrics A/B)"
        rm -rf "$dir/src" "$dir/rev"
        mkdir -p "$dir/src/build"
        git -C "$repo" archive "$rev" | tar -x -C "$dir/src"
        # lua-nginx-module's source is the same: no second apt-get source
        if [ -f build/lua-nginx-module/.version ]; then
            ln -s "$repo/build/lua-nginx-module" \
                "$dir/src/build/lua-nginx-module"
        fi
        make -s -C "$dir/src" module >"$dir/build.log" 2>&1 || {
            tail -30 "$dir/build.log" >&2
            echo "bench: the module at ${rev:0:7} did not build" >&2
            exit 1
        }
        echo "$rev" >"$dir/rev"
    ) 9>"$dir/lock"
}

# the metrics A/B (issue 15): the module as it was just before the metrics
# against the one under test (or, BENCH_AFTER_REV, the module at another
# commit, e.g. the metrics' own, e504811, to see them alone); no git
# checkout, or no such commit: no A/B, and the report says why
before_rev=${BENCH_BEFORE_REV:-e596f2d}
after_rev=${BENCH_AFTER_REV:-}
unset BENCH_BEFORE_SKIP
for side in before after; do
    want=$before_rev
    [ "$side" = after ] && want=$after_rev
    [ -n "$want" ] || continue
    if ! rev=$(git -C "$repo" rev-parse -q --verify "$want^{commit}" \
               2>/dev/null); then
        export BENCH_BEFORE_SKIP="not a git checkout with commit $want"
        echo "bench: metrics A/B skipped: $BENCH_BEFORE_SKIP" >&2
        break
    fi
    build_at "$rev" "$repo/build/bench-$side"
    short=$(git -C "$repo" rev-parse --short "$rev")
    tree=$repo/build/bench-$side/src
    if [ "$side" = before ]; then
        export BENCH_BEFORE_MODULE=$tree/build/ngx_http_lua_ffi_module.so
        export BENCH_BEFORE_LUA=$tree/lua BENCH_BEFORE_REV=$short
    else
        export BENCH_AFTER_MODULE=$tree/build/ngx_http_lua_ffi_module.so
        export BENCH_AFTER_LUA=$tree/lua BENCH_AFTER_REV=$short
    fi
done

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
