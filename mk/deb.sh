#!/bin/bash
# Builds the Debian package in a copy of the tree (dpkg-buildpackage writes
# its output to the parent folder) and leaves the .deb in the repo root.
# $1: lua-nginx-module's source, copied in so that the build is offline.
set -euo pipefail
lua_src=$1
out=build/deb
src=$out/src
rm -rf "$out"
mkdir -p "$src/build"
if git rev-parse --git-dir >/dev/null 2>&1; then
    # tracked and new files as they are now; files deleted in the tree skipped
    git ls-files -z -co --exclude-standard \
        | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
        | xargs -0 cp --parents -t "$src"
else
    tar --exclude=./build --exclude='./*.deb' -cf - . | tar -xf - -C "$src"
fi
cp -a "$lua_src" "$src/build/"
(cd "$src" && dpkg-buildpackage -b -us -uc) >"$out/build.log" 2>&1 \
    || { tail -40 "$out/build.log"; exit 1; }
rm -f libnginx-mod-http-lua-ffi_*.deb
cp "$out"/libnginx-mod-http-lua-ffi_*.deb .
ls libnginx-mod-http-lua-ffi_*.deb
