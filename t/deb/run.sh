#!/bin/bash
# The Debian package as an operator uses it: apt-get install, Debian's own
# nginx with the stock nginx.conf (user www-data) plus one site, a call, an
# admin reload, a dropped file with ffi_watch on, status, nginx -s reload,
# stop, apt-get purge (nothing left behind), lintian. Run as root from the
# repo root after `make deb` (make test-deb); the machine is restored.
set -euo pipefail

PKG=libnginx-mod-http-lua-ffi
LIBDIR=/usr/lib/nginx/ffi
SHADOW=/var/cache/$PKG
SITE=/etc/nginx/sites-enabled/zz-$PKG-test
PIDFILE=/run/nginx.pid
ERRLOG=/var/log/nginx/error.log

n=0
ok()   { n=$((n + 1)); echo "ok $n - $*"; }
fail() { echo "not ok - $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "run as root (it installs a package)"
deb=$(ls "$PWD"/${PKG}_*.deb 2>/dev/null | head -1)
[ -n "$deb" ] || fail "no ./${PKG}_*.deb: run make deb first"
if [[ $(dpkg-query -W -f='${Status}' $PKG 2>/dev/null) == *installed* ]]; then
    fail "$PKG is installed already: the test must not replace it"
fi

work=$(mktemp -d)
master=""
moved_default=""
system_nginx=""
trap cleanup EXIT

# whatever happens: our nginx stopped, our site and library gone, the
# default site back, the package purged, /var/lib/nginx's owners as before
cleanup() {
    local rc=$?
    if [ -n "$master" ] && kill -0 "$master" 2>/dev/null; then
        kill -QUIT "$master" 2>/dev/null || true
        wait_gone "$master" || kill -KILL "$master" 2>/dev/null || true
    fi
    rm -f "$SITE" "$LIBDIR/libdemo.so" "$LIBDIR/libcrash.so"
    if [ -n "$moved_default" ]; then
        mv "$work/default" /etc/nginx/sites-enabled/default
    fi
    if [[ $(dpkg-query -W -f='${Status}' $PKG 2>/dev/null) == *installed* ]]; then
        DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq \
            -o DPkg::Lock::Timeout=900 $PKG >/dev/null
    fi
    [ -f "$work/owners" ] && while read -r owner dir; do
        [ -d "$dir" ] && chown "$owner" "$dir"
    done <"$work/owners"
    if [ -n "$system_nginx" ]; then
        if [ -d /run/systemd/system ]; then
            systemctl start nginx
        else
            /usr/sbin/nginx
        fi
    fi
    rm -rf "$work"
    exit $rc
}

wait_gone() {   # a process, for up to 60 s
    local i
    for i in $(seq 600); do
        kill -0 "$1" 2>/dev/null || return 0
        sleep 0.1
    done
    return 1
}

# polls a URL until its body matches a pattern (a deadline only for failure)
await() {
    local url=$1 pattern=$2 i
    for i in $(seq 600); do
        grep -q "$pattern" <<<"$(curl -s "$url")" && return 0
        sleep 0.1
    done
    return 1
}

free_port() {   # one nothing listens on (bash's /dev/tcp connect fails)
    local p
    for p in $(shuf -i 20000-60000 -n 200); do
        if ! (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    return 1
}

# ---- a C library, two builds of it ----

ID1=1111111111111111
ID2=2222222222222222
for v in 1 2; do
    id=ID$v
    cc -O2 -fPIC -shared -pthread -Wl,--build-id=0x${!id} \
        -o "$work/libdemo-$v.so" examples/c/demo.c
done

# a constructor that crashes: only the trial process may run it
cc -O2 -fPIC -shared -pthread -DVERSION='"crash"' -DCRASH_CTOR \
    -o "$work/libcrash.so" t/lib/reload/libver.c

for d in /var/lib/nginx/*/; do
    echo "$(stat -c %U:%G "$d") $d"
done >"$work/owners"

# the machine's own nginx (a fresh machine starts it when apt installs
# nginx) is stopped for the test and started again at its end
if [ -f $PIDFILE ] && kill -0 "$(cat $PIDFILE)" 2>/dev/null; then
    system_nginx=$(cat $PIDFILE)
    if [ -d /run/systemd/system ]; then
        systemctl stop nginx
    else
        /usr/sbin/nginx -s quit
    fi
    wait_gone "$system_nginx" || fail "the system's nginx did not stop"
fi

# ---- install ----

DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    -o DPkg::Lock::Timeout=900 "$deb" \
    >"$work/apt.log" 2>&1 || { cat "$work/apt.log"; fail "apt-get install"; }
dpkg-query -L $PKG | sort >"$work/files"
ok "apt-get install $deb"

[ "$(readlink /etc/nginx/modules-enabled/60-mod-http-lua-ffi.conf)" \
    = /usr/share/nginx/modules-available/mod-http-lua-ffi.conf ] \
    || fail "load snippet not enabled"
ok "modules-enabled/60-mod-http-lua-ffi.conf, after the lua module's 50-"

for f in /usr/lib/nginx/modules/ngx_http_lua_ffi_module.so \
         /usr/share/lua/5.1/resty_ffi.lua \
         /usr/include/nginx-lua-ffi/ngx_http_lua_ffi.h \
         /usr/libexec/$PKG/ffi-trial /usr/bin/ffi-elf-check \
         /usr/share/doc/$PKG/examples/c/demo.c; do
    [ -f "$f" ] || fail "$f not installed"
done
[ "$(stat -c %U:%a $LIBDIR)" = root:755 ] || fail "$LIBDIR not root 0755"
# (grep on a string: with pipefail, `strings | grep -q` fails at random when
# grep stops at the first match and strings dies of SIGPIPE)
if grep -qF "$(pwd)" \
        <<<"$(strings /usr/lib/nginx/modules/ngx_http_lua_ffi_module.so)"; then
    fail "the module holds a path of the build tree"
fi
ok "module, lua, header, helpers, docs; no build-tree path in the module"

grep -q ": ok build-id=$ID1" <<<"$(/usr/bin/ffi-elf-check "$work/libdemo-1.so")" \
    || fail "ffi-elf-check"
ok "ffi-elf-check accepts the demo"

# ---- Debian's nginx, stock nginx.conf, one site ----

install -m 0644 "$work/libdemo-1.so" $LIBDIR/libdemo.so
install -m 0644 "$work/libcrash.so" $LIBDIR/libcrash.so
port=$(free_port)
cat >"$SITE" <<EOF
# written by t/deb/run.sh (lua-resty-ffi for nginx), removed at its end
init_by_lua_block { require "resty_ffi" }
ffi_watch on;

server {
    listen 127.0.0.1:$port;

    location /ffi/ { ffi_admin; allow 127.0.0.1; deny all; }

    location /crash {
        content_by_lua_block {
            local rt, err = ngx.load_ffi("crash")
            ngx.say(rt and "loaded" or err)
        }
    }

    location /echo {
        content_by_lua_block {
            local demo = assert(ngx.load_ffi("demo"))
            local ok, res = demo:echo(ngx.var.arg_msg)
            ngx.say(ok and res or "failed: " .. tostring(res))
        }
    }
}
EOF
if [ -e /etc/nginx/sites-enabled/default ]; then
    mv /etc/nginx/sites-enabled/default "$work/default"
    moved_default=1
fi

errlog_start=$(stat -c %s $ERRLOG 2>/dev/null || echo 0)
env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin /usr/sbin/nginx -t -q \
    || fail "nginx -t"
env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin /usr/sbin/nginx
master=$(cat $PIDFILE)
base="http://127.0.0.1:$port"
ok "/usr/sbin/nginx with /etc/nginx/nginx.conf (master $master)"

[ "$(curl -s "$base/echo?msg=hello")" = hello ] || fail "call demo:echo"
ok "a call: hello (libdemo.so found by short name, no ffi_library_path)"

workers=$(ps -o pid= --ppid "$master" | sort)
body=$(curl -s "$base/crash" || true)
grep -q 'crashed (signal 11) .* in a trial process' <<<"$body" \
    || fail "a crashing constructor without the trial: $body"
[ "$(ps -o pid= --ppid "$master" | sort)" = "$workers" ] \
    || fail "a worker died"
ok "the installed ffi-trial runs a crashing constructor, no worker dies"

workers=$(ps -o user= --ppid "$master" | sort -u)
[ "$workers" = www-data ] || fail "workers run as '$workers'"
ok "workers run as www-data"

shadows=$(find $SHADOW -mindepth 1 -printf '%u %p\n')
grep -q . <<<"$shadows" || fail "no shadow copy under $SHADOW"
if echo "$shadows" | grep -v '^www-data '; then
    fail "shadow files not owned by www-data"
fi
ok "shadow copies under $SHADOW, owned by www-data"

body=$(curl -s -X POST "$base/ffi/reload?lib=demo")
grep -q '"version":2' <<<"$body" || fail "admin reload: $body"
[ "$(curl -s "$base/echo?msg=two")" = two ] || fail "call after reload"
ok "POST /ffi/reload?lib=demo: version 2 serves"

install -m 0644 "$work/libdemo-2.so" $LIBDIR/libdemo.so.new
mv $LIBDIR/libdemo.so.new $LIBDIR/libdemo.so
await "$base/ffi/status" '"version":3' \
    || fail "the dropped file was not loaded: $(curl -s "$base/ffi/status")"
[ "$(curl -s "$base/echo?msg=three")" = three ] || fail "call after drop"
ok "a new file dropped into $LIBDIR: version 3 serves"

status=$(curl -s "$base/ffi/status")
grep -q "\"path\":\"$LIBDIR/libdemo.so\"" <<<"$status" \
    || fail "status: $status"
grep -q "\"build_id\":\"$ID2\"" <<<"$status" \
    || fail "status build_id: $status"
ok "GET /ffi/status: $LIBDIR/libdemo.so, version 3, build-id $ID2"

old_workers=$(ps -o pid= --ppid "$master")
env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin /usr/sbin/nginx -s reload
for w in $old_workers; do
    wait_gone "$w" || fail "worker $w did not exit after nginx -s reload"
done
[ "$(curl -s "$base/echo?msg=again")" = again ] || fail "call after -s reload"
ok "nginx -s reload: old workers gone, calls served"

env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin /usr/sbin/nginx -s quit
wait_gone "$master" || fail "nginx did not stop"
pids=$(ps -o pid= --ppid "$master" || true)
[ -z "$pids" ] || fail "processes left: $pids"
master=""
ok "nginx -s quit: no process left"

# Known leaks of today's shadow storage (its redesign is under way), shown
# as a TAP TODO: `nginx -t` leaves an empty nginx-ffi.<pid> folder; the
# folder is named by the pid before nginx daemonizes, a reload makes a
# second one under the master's pid and only that one is removed at exit,
# with shadow copies of the first generation's workers left in the first.
left=$(find $SHADOW -mindepth 1 -printf '%u %M %p\n')
if [ -z "$left" ]; then
    ok "nginx -s quit: no shadow file left"
else
    n=$((n + 1))
    echo "not ok $n - nginx -s quit: no shadow file left # TODO left behind:"
    echo "$left" | sed 's/^/#   /'
fi

if tail -c +"$((errlog_start + 1))" $ERRLOG | grep -E '\[(alert|emerg|crit)\]'
then
    fail "alerts in $ERRLOG"
fi
ok "no alert in $ERRLOG"

# ---- purge ----

rm -f "$SITE" $LIBDIR/libdemo.so $LIBDIR/libcrash.so
DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq \
    -o DPkg::Lock::Timeout=900 $PKG \
    >"$work/apt.log" 2>&1 || { cat "$work/apt.log"; fail "apt-get purge"; }
left=""
while read -r f; do
    case "$f" in
        /.|/usr|/usr/bin|/usr/include|/usr/lib|/usr/libexec|/usr/share|\
        /usr/share/doc|/usr/share/lua|/usr/share/lua/5.1|/usr/lib/nginx|\
        /usr/lib/nginx/modules|/usr/share/nginx|\
        /usr/share/nginx/modules-available|/usr/share/man|\
        /usr/share/man/man1|/var|/var/cache) continue ;;
    esac
    [ -e "$f" ] || [ -L "$f" ] && left="$left $f"
done <"$work/files"
[ -z "$left" ] || fail "left after purge:$left"
for f in /etc/nginx/modules-enabled/60-mod-http-lua-ffi.conf* $SHADOW; do
    [ -e "$f" ] || [ -L "$f" ] && fail "left after purge: $f"
done
ok "apt-get purge: no file of the package, no shadow folder left"

# what the package installed, mapped or run by any process on the machine
users=$(grep -l -e /usr/lib/nginx/modules/ngx_http_lua_ffi_module.so \
        -e /usr/libexec/$PKG/ /proc/[0-9]*/maps 2>/dev/null || true)
[ -z "$users" ] || fail "processes still use the package: $users"
ok "no process runs or maps a file of the package"

# ---- lintian ----

lintian --tag-display-limit 0 "$deb" >"$work/lintian.log" 2>&1 || true
grep -v '^running with root' "$work/lintian.log" | sed 's/^/# lintian: /' \
    || true
if grep -q '^E: ' "$work/lintian.log"; then
    fail "lintian reports errors"
fi
ok "lintian: no error"

echo "1..$n"
