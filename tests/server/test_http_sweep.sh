#!/usr/bin/env bash
# test_http_sweep.sh - the noise sweep through the HTTP service equals
# `dae eval --sweep` within 0.05 dB: starts dae-server with the committed
# models/ on a free loopback port and runs tools/http_sweep.py against it.
#
# usage: tests/server/test_http_sweep.sh path/to/dae-server path/to/dae
#
# Always on the committed mini data set (tests/fixtures/mnist-mini, 200
# test images, both committed models); when $DAE_DATA_DIR is set, also on
# the first 2000 test images of mnist and fashion-mnist, each with its own
# model. Six sigmas each. Uses the shell harness tests/lib.sh (bash, curl,
# python3). Ends with "http-sweep: N passed, M failed"; exits 1 if any
# check failed.
set -u

if [ $# -ne 2 ] || [ ! -x "$1" ] || [ ! -x "$2" ]; then
    echo "usage: $0 path/to/dae-server path/to/dae" >&2
    exit 2
fi
abs() { echo "$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"; }
SERVER=$(abs "$1")
DAE=$(abs "$2")
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
source "$ROOT/tests/lib.sh" http-sweep
# The full data sets are the caller's choice; the daemon gets none of the
# caller's settings.
DATA=${DAE_DATA_DIR:-}
PID=""
cleanup() { if [ -n "$PID" ]; then kill -KILL "$PID" 2>/dev/null; fi; }
SWEEP=0.05,0.1,0.2,0.3,0.5,0.7

# The daemon: the committed models by name, on a free port it prints.
start_daemon "$SERVER" --model "$ROOT/models/mnist.safetensors" --models-dir "$ROOT/models" \
    --state-dir "$TMP/state" --access-log off

# sweep NAME DATA_DIR DATASET LIMIT MODEL...: runs the tool on the data set
# with the committed models of those names; its table is shown when it
# fails, or with SHOW_PASSES set.
sweep() {
    local name=$1 dir=$2 dataset=$3 limit=$4
    shift 4
    local names files
    names=$(IFS=,; echo "$*")
    files=$(printf "$ROOT/models/%s.safetensors," "$@")
    local t0=$EPOCHREALTIME
    "$PYTHON" "$ROOT/tools/http_sweep.py" --url "http://127.0.0.1:$PORT" --dae "$DAE" --data-dir "$dir" \
        --dataset "$dataset" --models "$names" --model-files "${files%,}" --sweep "$SWEEP" --limit "$limit" \
        >"$TMP/sweep.out" 2>&1
    local rc=$?
    if [ "$rc" -ne 0 ] || [ -n "$SHOW_PASSES" ]; then sed 's/^/    /' "$TMP/sweep.out"; fi
    [ "$rc" -eq 0 ]
    ok "$name ($(ms_since "$t0") ms)"
}

sweep "mnist-mini through HTTP equals dae eval within 0.05 dB" "$ROOT/tests/fixtures" mnist-mini 200 \
    mnist fashion-mnist
if [ -n "$DATA" ]; then
    sweep "mnist through HTTP equals dae eval within 0.05 dB" "$DATA" mnist 2000 mnist
    sweep "fashion-mnist through HTTP equals dae eval within 0.05 dB" "$DATA" fashion-mnist 2000 fashion-mnist
else
    echo "http-sweep: the full mnist and fashion-mnist sweeps skipped: DAE_DATA_DIR is not set" \
         "(tools/fetch_data.sh downloads the data sets)"
fi

stop_cleanly "$PID" "$TMP/server.err"
PID=""
finish
