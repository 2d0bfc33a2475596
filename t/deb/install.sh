#!/bin/bash
# make install / make uninstall into a DESTDIR: every file lands under
# PREFIX (the enable link under /etc/nginx), the module holds no path of the
# build tree, and uninstall leaves no file behind.
set -euo pipefail
# the default PREFIX: another one would reconfigure the build tree for it
prefix=/usr/local
dest=$(mktemp -d)
trap 'rm -rf "$dest"' EXIT
n=0
ok()   { n=$((n + 1)); echo "ok $n - $*"; }
fail() { echo "not ok - $*" >&2; exit 1; }

make -s install DESTDIR="$dest" PREFIX=$prefix >/dev/null
for f in lib/nginx/modules/ngx_http_lua_ffi_module.so \
         share/nginx/modules-available/mod-http-lua-ffi.conf \
         share/lua/5.1/resty_ffi.lua include/nginx-lua-ffi/ngx_http_lua_ffi.h \
         libexec/libnginx-mod-http-lua-ffi/ffi-trial bin/ffi-elf-check \
         share/man/man1/ffi-elf-check.1 \
         share/doc/libnginx-mod-http-lua-ffi/hot-reload.md \
         share/doc/libnginx-mod-http-lua-ffi/examples/c/demo.c; do
    [ -f "$dest$prefix/$f" ] || fail "$prefix/$f not installed"
done
[ -d "$dest$prefix/lib/nginx/ffi" ] || fail "no library folder"
[ "$(readlink "$dest/etc/nginx/modules-enabled/60-mod-http-lua-ffi.conf")" \
    = $prefix/share/nginx/modules-available/mod-http-lua-ffi.conf ] \
    || fail "snippet not enabled"
grep -qx "load_module $prefix/lib/nginx/modules/ngx_http_lua_ffi_module.so;" \
    "$dest$prefix/share/nginx/modules-available/mod-http-lua-ffi.conf" \
    || fail "snippet"
ok "make install DESTDIR PREFIX=$prefix: every file, snippet enabled"

# what the module uses at run time, not the debugging info's source paths
mod="$dest/module.so"
objcopy --strip-debug \
    "$dest$prefix/lib/nginx/modules/ngx_http_lua_ffi_module.so" "$mod"
# (grep reads a file: with pipefail, `strings | grep -q` fails at random
# when grep stops at the first match and strings dies of SIGPIPE)
strings "$mod" >"$dest/strings"
grep -qF "$(pwd)" "$dest/strings" && fail "a build-tree path in the module"
helper=$prefix/libexec/libnginx-mod-http-lua-ffi/ffi-trial
grep -qxF "$helper" "$dest/strings" \
    || fail "the helper folder is not $prefix's"
grep -qF "$prefix/lib/nginx/ffi" "$dest/strings" \
    || fail "the library folder is not $prefix's"
ok "the module looks in $prefix's folders, none of the build tree"

make -s uninstall DESTDIR="$dest" PREFIX=$prefix >/dev/null
rm -f "$mod" "$dest/strings"
left=$(find "$dest" ! -type d)
[ -z "$left" ] || fail "left after uninstall: $left"
ok "make uninstall: no file left"
echo "1..$n"
