#!/bin/sh
# deps.sh - make sure the Debian packages dae builds and tests with are
# installed. As root it installs what is missing; otherwise it prints the
# exact apt command and fails, so `make` stops with a clear message.
# With arguments, the same for the packages they name (a benchmark's).
set -eu

PACKAGES="${*:-}"
[ -n "$PACKAGES" ] || PACKAGES="gcc make libc6-dev pkg-config libmicrohttpd-dev libcjson-dev libpng-dev zlib1g-dev libjpeg-dev libgif-dev libdeflate-dev libarchive-dev nettle-dev libcriterion-dev libopenblas-dev curl python3"

missing=""
for p in $PACKAGES; do
    if ! dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing="$missing $p"
    fi
done

if [ -z "$missing" ]; then
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    echo "deps: installing$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends $missing || {
        apt-get update && apt-get install -y --no-install-recommends $missing
    }
else
    echo "deps: missing Debian packages:$missing" >&2
    echo "deps: install them with:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends$missing" >&2
    exit 1
fi
