#!/bin/sh
# Installs the Debian packages named on the command line that are missing.
# Quiet and quick when everything is there; runs apt-get update at most once.
set -e
missing=""
for p in "$@"; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' \
        || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "missing Debian packages:$missing (run make as root to install them)" >&2
    exit 1
fi
echo "installing:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq || apt-get update -qq
apt-get install -y -qq --no-install-recommends $missing >/dev/null
