#!/bin/sh
# Fetches the source of the installed libnginx-mod-http-lua (exactly that version)
# into $1, for its headers: the module shares lua-nginx-module's request and
# coroutine structures. apt gets a private state dir with deb-src entries
# derived from the machine's own sources, so the system's apt is untouched.
set -e
mkdir -p "$(dirname "$1")"
dest=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
stamp="$dest/.version"
ver=$(dpkg-query -W -f='${Version}' libnginx-mod-http-lua)
[ -f "$stamp" ] && [ "$(cat "$stamp")" = "$ver" ] && exit 0

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/parts"
for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] && sed 's/^Types:.*/Types: deb-src/' "$f" > "$work/parts/$(basename "$f")"
done
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] && sed -n 's/^deb /deb-src /p' "$f" > "$work/parts/$(basename "$f").list"
done
apt_opts="-o Dir::State::Lists=$work/lists -o Dir::Cache=$work/cache
  -o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts=$work/parts
  -o Debug::NoLocking=1 -o APT::Sandbox::User=root"
apt-get $apt_opts -qq update
(cd "$work" && apt-get $apt_opts -qq --download-only source "libnginx-mod-http-lua=$ver" >/dev/null)
rm -rf "$dest"
(cd "$work" && dpkg-source -q -x ./*.dsc "$dest" >/dev/null 2>&1)
echo "$ver" > "$stamp"
