#!/bin/bash
# Starts or stops the demo nginx of `make run` (127.0.0.1:20000), with its
# prefix, configuration and logs under build/demo.
set -e
repo=$(cd "$(dirname "$0")/.." && pwd)
prefix=$repo/build/demo
conf=$prefix/nginx.conf
user=$(id -un)

case "$1" in
start)
    mkdir -p "$prefix"
    sed -e "s|@REPO@|$repo|g" -e "s|@PREFIX@|$prefix|g" \
        -e "s|@USER@|$user|g" "$repo/examples/c/nginx.conf.in" >"$conf"
    [ "$user" = root ] || sed -i '/^user /d' "$conf"
    if [ -f "$prefix/nginx.pid" ] && kill -0 "$(cat "$prefix/nginx.pid")" 2>/dev/null; then
        nginx -p "$prefix" -c "$conf" -s stop 2>/dev/null
        while kill -0 "$(cat "$prefix/nginx.pid" 2>/dev/null)" 2>/dev/null; do sleep 0.1; done
    fi
    nginx -p "$prefix" -c "$conf"
    cat <<MSG
The demo nginx runs on 127.0.0.1:20000 (2 workers, C demo runtime "demo").
Try:
  curl 'http://127.0.0.1:20000/echo?msg=hello'
  curl --data-binary 'some bytes' http://127.0.0.1:20000/echo
  curl http://127.0.0.1:20000/ffi/status
  curl -X POST 'http://127.0.0.1:20000/ffi/reload?lib=demo'
Logs: $prefix/error.log    Stop it: make stop
MSG
    ;;
stop)
    if [ -f "$prefix/nginx.pid" ] && kill -0 "$(cat "$prefix/nginx.pid")" 2>/dev/null; then
        nginx -p "$prefix" -c "$conf" -s stop 2>/dev/null
        echo "demo nginx stopped"
    else
        echo "demo nginx is not running"
    fi
    ;;
*)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
