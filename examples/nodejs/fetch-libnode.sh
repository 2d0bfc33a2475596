#!/bin/sh
# Unpacks Debian's libnode (libnode108 + libnode-dev: Node 18) into $1 without
# installing it, since it conflicts with a nodejs that is not Debian's own.
#
# Debian's libnode108 conflicts with nodejs-legacy, which other nodejs builds
# (e.g. NodeSource's) provide, so apt would remove the machine's node to
# install it. The packages are downloaded with apt from the machine's own
# sources (a private apt state dir: the system's apt is untouched) and only
# unpacked; libffi_nodejs.so finds the library through its RUNPATH.
set -e
dest=$1
pkgs="libnode108 libnode-dev"
[ -f "$dest/.complete" ] && exit 0

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/parts" \
    "$work/debs"
for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] && cp "$f" "$work/parts/"
done
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    grep '^deb ' "$f" > "$work/parts/$(basename "$f").list" || true
done
apt_opts="-o Dir::State::Lists=$work/lists -o Dir::Cache=$work/cache
  -o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts=$work/parts
  -o Debug::NoLocking=1 -o APT::Sandbox::User=root"
apt-get $apt_opts -qq update
(cd "$work/debs" && apt-get $apt_opts -qq download $pkgs >/dev/null)

rm -rf "$dest"
mkdir -p "$dest"
for deb in "$work"/debs/*.deb; do
    dpkg-deb -x "$deb" "$dest"
done
touch "$dest/.complete"
