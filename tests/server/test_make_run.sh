#!/usr/bin/env bash
# tests/server/test_make_run.sh BUILD: `make run` as the README uses it. It
# listens on 127.0.0.1:8080 unless DAE_PORT / DAE_BIND / RUN_FLAGS say
# otherwise (each of the three works), and everything the server writes
# (models, ACTIVE, job records, data sets) lands in RUN_DIR, never in the
# checkout. BUILD is the build directory of the binaries under test.
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD_DIR=${1:-build}
source "$ROOT/tests/lib.sh" make-run
cd "$ROOT"
unset DAE_BIND DAE_PORT DAE_MODEL DAE_MODELS_DIR DAE_STATE_DIR DAE_DATA_DIR DAE_ADMIN_TOKEN DAE_LOG_FORMAT

# free_port [ADDR]: a port nothing holds on ADDR (default 127.0.0.1). A
# port free on loopback may still be a client's on another address: the
# 0.0.0.0 run asks for one free on every address.
free_port() {
    "$PYTHON" -c 'import socket, sys; s = socket.socket(); s.bind((sys.argv[1], 0)); print(s.getsockname()[1])' \
        "${1:-127.0.0.1}"
}

RUN_PID=
# run_make LOG [VAR=VALUE...] [make ARGS...]: starts `make run` in a
# session of its own (so the whole of it can be stopped) with its output in
# $TMP/LOG; waits for the server's "listening on" line.
run_make() {
    local log=$1
    shift
    setsid env "$@" >"$TMP/$log" 2>&1 &
    RUN_PID=$!
    wait_until 60 grep -qs 'listening on http://' "$TMP/$log" || { cat "$TMP/$log" >&2; return 1; }
}
# stop_make: SIGTERM to the server (what a service manager sends); it
# drains and exits 0, and so does make.
stop_make() {
    pkill -TERM -s "$RUN_PID" -x dae-server
    wait_until 30 eval "! kill -0 $RUN_PID 2>/dev/null"
    wait "$RUN_PID"
}
cleanup() { [ -n "$RUN_PID" ] && kill -KILL -- "-$RUN_PID" 2>/dev/null; }

before=$(git status --porcelain --ignored models state data 2>/dev/null)

P1=$(free_port)
run_make one.log DAE_PORT="$P1" make -s run BUILD="$BUILD_DIR" RUN_DIR="$TMP/run"
grep -q "listening on http://127.0.0.1:$P1 " "$TMP/one.log"
ok "DAE_PORT=$P1 make run: listens on 127.0.0.1:$P1 (loopback by default)"
PORT=$P1
req GET /readyz
[ "$STATUS" = 200 ] && grep -q '"model":"mnist"' "$TMP/body"
ok "... ready, with mnist the default model"
req GET /models
grep -q '"name":"fashion-mnist"' "$TMP/body"
ok "... serving the committed models by name"
req GET /datasets
grep -q '"name":"mnist-mini"' "$TMP/body"
ok "... with the committed mnist-mini data set to train on"
req POST /models/fashion-mnist/activate
[ "$STATUS" = 200 ] && [ "$(cat "$TMP/run/models/ACTIVE")" = fashion-mnist ]
ok "an activation writes RUN_DIR/models/ACTIVE"
stop_make
ok "make run exits 0 when its server is stopped with SIGTERM"

P2=$(free_port)
run_make two.log make -s run BUILD="$BUILD_DIR" RUN_DIR="$TMP/run" RUN_FLAGS="--port $P2 --bind 127.0.0.1"
grep -q "listening on http://127.0.0.1:$P2 " "$TMP/two.log"
ok "make run RUN_FLAGS=\"--port $P2 --bind 127.0.0.1\": no flag given twice, the flags win"
PORT=$P2
req GET /readyz
grep -q '"model":"fashion-mnist"' "$TMP/body"
ok "... and it starts on the model ACTIVE names"
stop_make

P3=$(free_port 0.0.0.0)
run_make three.log DAE_BIND=0.0.0.0 DAE_PORT="$P3" make -s run BUILD="$BUILD_DIR" RUN_DIR="$TMP/run"
grep -q "listening on http://0.0.0.0:$P3 " "$TMP/three.log"
ok "DAE_BIND=0.0.0.0 make run: listens on every interface"
stop_make

[ "$(git status --porcelain --ignored models state data 2>/dev/null)" = "$before" ] && [ ! -e models/ACTIVE ]
ok "the checkout is untouched: no ACTIVE, model, state or data written into it"
finish
