#!/usr/bin/env bash
# deploy_deps.sh - install what `make test-deploy` (tests/deploy/run.sh)
# tests with, so that the test script itself only checks.
#
# usage: tools/deploy_deps.sh   (root; DEPLOY_CACHE, default build/deploy)
#
# Installs what is missing of Debian's docker.io, docker-compose,
# debootstrap, yamllint, prometheus (promtool and the server), curl,
# iproute2, python3, nodejs and npm; the npm packages kubernetes-models,
# yaml and dockerfile-utils into $DEPLOY_CACHE/npm; and the base image
# debian:bookworm-slim as a tarball made with debootstrap
# ($DEPLOY_CACHE/debian-bookworm-slim.tar, tests/deploy/make_base_image.sh),
# so that no image registry is needed. Both are caches, kept between runs.
# kubectl (for kustomize) must be installed already: Debian 12 does not
# package it. Exit status 0, or 1 with a message naming what failed.
set -u

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${DEPLOY_CACHE:-$ROOT/build/deploy}
NPM_DIR=$CACHE/npm
NODE_MODULES=$NPM_DIR/node_modules
NPM_PACKAGES="kubernetes-models@4.5.1 yaml@2 dockerfile-utils@0.16.3 ajv@8 ajv-formats@2"

die() {
    echo "deploy_deps: $*" >&2
    exit 1
}

[ "$(id -u)" -eq 0 ] || die "needs root (apt-get, debootstrap)"
mkdir -p "$CACHE"
LOG=$(mktemp "${TMPDIR:-/tmp}/dae-deploy-deps.XXXXXX")
trap 'rm -f "$LOG"' EXIT

# command:package pairs; a command already on PATH (node and npm from
# another source, say) is left alone. The same list is what
# tests/deploy/run.sh checks for.
NEEDS="dockerd:docker.io /usr/bin/docker:docker.io docker-compose:docker-compose debootstrap:debootstrap
yamllint:yamllint promtool:prometheus prometheus:prometheus curl:curl ss:iproute2 ip:iproute2 python3:python3
node:nodejs npm:npm"
missing=""
for pair in $NEEDS; do
    command -v "${pair%%:*}" >/dev/null 2>&1 && continue
    case " $missing " in *" ${pair#*:} "*) ;; *) missing="$missing ${pair#*:}" ;; esac
done
if [ -n "$missing" ]; then
    echo "deploy_deps: apt-get install$missing"
    export DEBIAN_FRONTEND=noninteractive
    # docker.io's maintainer scripts may try to start the system service;
    # the test runs its own daemon instead (tools/dockerd_private.sh).
    { apt-get install -y --no-install-recommends $missing ||
        { apt-get update -q && apt-get install -y --no-install-recommends $missing; }; } >"$LOG" 2>&1 ||
        { tail -20 "$LOG" >&2; die "apt-get install$missing failed"; }
fi
for pair in $NEEDS; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || die "${pair%%:*} not found after apt-get install (package ${pair#*:})"
done
command -v kubectl >/dev/null 2>&1 ||
    echo "deploy_deps: kubectl is not installed (Debian 12 does not package it): the Kubernetes checks will fail" >&2

if [ ! -f "$NODE_MODULES/kubernetes-models/package.json" ] || [ ! -f "$NODE_MODULES/yaml/package.json" ] ||
    [ ! -f "$NODE_MODULES/ajv/package.json" ] || [ ! -f "$NODE_MODULES/ajv-formats/package.json" ] ||
    [ ! -x "$NODE_MODULES/.bin/dockerfile-utils" ] ||
    ! grep -q '"version": "4.5.1"' "$NODE_MODULES/kubernetes-models/package.json"; then
    mkdir -p "$NPM_DIR"
    (cd "$NPM_DIR" && npm install --prefix . --no-save --no-package-lock --no-audit --no-fund --loglevel=error \
        $NPM_PACKAGES) >"$LOG" 2>&1 || { cat "$LOG" >&2; die "npm install $NPM_PACKAGES failed"; }
fi

"$ROOT/tests/deploy/make_base_image.sh" "$CACHE/debian-bookworm-slim.tar" || die "no base image (debootstrap)"
echo "deploy_deps: tools, npm packages and base image ready in $CACHE"
