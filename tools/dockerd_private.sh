#!/usr/bin/env bash
# dockerd_private.sh - run a command against a Docker daemon of its own,
# started here and removed afterwards; `make test-deploy` runs
# tests/deploy/run.sh under it.
#
# usage: tools/dockerd_private.sh COMMAND [ARGS...]   (root)
#
# The daemon keeps its data, sockets and state in a temporary directory,
# uses a bridge of its own on a /24 of 172.30.250-254 that no route uses
# yet (so a Docker engine already on the machine, docker0, is not
# disturbed) and runs with --iptables=false, so it changes no firewall
# rule. COMMAND sees DOCKER_HOST pointing at it. Afterwards the daemon,
# the containerd it started, its mounts and the bridge are removed, by
# PID and by name. Exits with COMMAND's status, or 1 when the daemon
# cannot start.
set -u

if [ $# -lt 1 ]; then
    echo "usage: $0 COMMAND [ARGS...]" >&2
    exit 2
fi
die() {
    echo "dockerd_private: $*" >&2
    exit 1
}
[ "$(id -u)" -eq 0 ] || die "needs root (dockerd, ip link)"
command -v dockerd >/dev/null 2>&1 || die "dockerd not found: run tools/deploy_deps.sh (package docker.io)"
DOCKER=/usr/bin/docker    # Debian's client, the daemon's version
[ -x "$DOCKER" ] || die "$DOCKER not found: run tools/deploy_deps.sh (package docker.io)"

DIR=$(mktemp -d "${TMPDIR:-/tmp}/dae-dockerd.XXXXXX")
DOCKERD_PID=""
BRIDGE=""
export DOCKER_HOST=unix://$DIR/docker.sock

cleanup() {
    if [ -n "$DOCKERD_PID" ] && kill -0 "$DOCKERD_PID" 2>/dev/null; then
        local ids
        ids=$("$DOCKER" ps -aq 2>/dev/null)
        [ -n "$ids" ] && "$DOCKER" rm -f -v $ids >/dev/null 2>&1
        kill -TERM "$DOCKERD_PID" 2>/dev/null
        for _ in $(seq 1 200); do
            kill -0 "$DOCKERD_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$DOCKERD_PID" 2>/dev/null
    fi
    # The containerd that dockerd started, should it outlive dockerd.
    local cpid
    cpid=$(cat "$DIR/exec/containerd/containerd.pid" 2>/dev/null)
    if [ -n "$cpid" ] && tr '\0' ' ' <"/proc/$cpid/cmdline" 2>/dev/null | grep -q "containerd.*$DIR"; then
        kill -TERM "$cpid" 2>/dev/null
    fi
    # Whatever dockerd left mounted under its directories (overlays, netns).
    grep -o " $DIR/[^ ]*" /proc/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
    [ -n "$BRIDGE" ] && ip link delete "$BRIDGE" 2>/dev/null
    rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

for net in 254 253 252 251 250; do
    [ -z "$(ip -4 route show to match "172.30.$net.1" | grep -v '^default')" ] && break
done
BRIDGE=daetest$$
if ! { ip link add "$BRIDGE" type bridge && ip addr add "172.30.$net.1/24" dev "$BRIDGE" &&
    ip link set "$BRIDGE" up; }; then
    die "cannot make the bridge $BRIDGE"
fi
dockerd --data-root "$DIR/docker" --exec-root "$DIR/exec" --pidfile "$DIR/dockerd.pid" -H "$DOCKER_HOST" \
    --bridge "$BRIDGE" --iptables=false --ip-forward=false --ip-masq=false >"$DIR/dockerd.log" 2>&1 &
DOCKERD_PID=$!
for _ in $(seq 1 100); do
    "$DOCKER" version >/dev/null 2>&1 && break
    kill -0 "$DOCKERD_PID" 2>/dev/null || break
    sleep 0.2
done
if ! "$DOCKER" version >/dev/null 2>&1; then
    tail -20 "$DIR/dockerd.log" >&2
    die "dockerd did not start"
fi

"$@"
