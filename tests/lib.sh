# lib.sh - the one harness of the shell-level tests: tests/cli/run.sh,
# tests/server/run.sh and tests/deploy/run.sh each start with
#
#   source "$ROOT/tests/lib.sh" NAME
#
# and get a temporary directory $TMP (removed on exit, after the script's
# own `cleanup` function when it defines one), the counting and reporting
# of checks, the detection of sanitizer reports, waiting on a condition
# with a deadline (instead of sleeping for a guessed time), HTTP requests
# through curl, and a PNG header reader. A script ends with `finish`,
# which prints "NAME: N passed, M failed" (the line the Makefile and
# `make test-sanitize` read) and returns 1 if any check failed.
#
# Needs bash 5, coreutils, curl and python3 (`make deps` installs them).

TEST_NAME=$1
TMP=$(mktemp -d "${TMPDIR:-/tmp}/dae-$TEST_NAME-test.XXXXXX")
passed=0
failed=0
# Set to print "ok   NAME" for every check that passes, not only failures.
SHOW_PASSES=${SHOW_PASSES:-}
# Debian's python3, which `make deps` installs: a python3 found first on
# PATH may be a version manager's shim that takes 300 ms to start.
PYTHON=/usr/bin/python3
[ -x "$PYTHON" ] || PYTHON=python3

lib_exit() {
    if declare -F cleanup >/dev/null; then cleanup; fi
    rm -rf "$TMP"
}
trap lib_exit EXIT

# ------------------------------------------------------------ checks

# pass NAME / fail NAME: counts one check. A failure is reported on
# stderr, followed by what the script's fail_detail function adds when it
# defines one (the last command's stderr, the last HTTP body).
pass() {
    passed=$((passed + 1))
    if [ -n "$SHOW_PASSES" ]; then echo "ok   $1"; fi
    return 0
}
fail() {
    failed=$((failed + 1))
    echo "FAIL: $*" >&2
    if declare -F fail_detail >/dev/null; then fail_detail >&2; fi
    return 0
}

# CONDITION; ok NAME: counts check NAME as passed when the condition just
# evaluated (any && / || chain) succeeded.
ok() {
    if [ $? -eq 0 ]; then pass "$1"; else fail "$1"; fi
}

# check NAME COMMAND...: counts check NAME as passed when the command exits
# 0. Its output goes to $TMP/check.log, whose last 40 lines are shown when
# it fails.
check() {
    local name=$1
    shift
    if "$@" >"$TMP/check.log" 2>&1; then
        pass "$name"
    else
        fail "$name"
        tail -40 "$TMP/check.log" | sed 's/^/    /' >&2
    fi
}

# sanitizer_scan FILE WHAT: an ASan, LSan or UBSan report in FILE is a
# failure of its own, copied to stderr (where `make test-sanitize` looks).
sanitizer_scan() {
    if grep -qE 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$1"; then
        echo "FAIL: sanitizer report from $2" >&2
        cat "$1" >&2
        failed=$((failed + 1))
    fi
}

# finish: prints the summary line; returns 1 if any check failed.
finish() {
    echo "$TEST_NAME: $passed passed, $failed failed"
    [ "$failed" -eq 0 ]
}

# fatal MESSAGE: a step everything after it needs cannot run: one more
# failure, the summary line, exit 1.
fatal() {
    echo "$TEST_NAME: FATAL: $*" >&2
    failed=$((failed + 1))
    finish
    exit 1
}

# ------------------------------------------------------------ waiting

# stop_cleanly PID LOG: sends SIGTERM to the dae-server PID and checks that
# it exits 0 within 30 s, then scans its stderr LOG for sanitizer reports.
stop_cleanly() {
    local rc=124
    kill -TERM "$1"
    if wait_until 30 eval "! kill -0 $1 2>/dev/null"; then
        wait "$1"
        rc=$?
    fi
    [ "$rc" -eq 0 ]
    ok "dae-server exits 0 on SIGTERM (exit $rc)"
    sanitizer_scan "$2" dae-server
}

# start_daemon SERVER ARGS...: starts the dae-server SERVER on a free
# loopback port with ARGS and none of the caller's DAE_* variables (an
# admin token or a body limit there would change what is tested), its
# output in $TMP/server.out and .err; waits for the port it prints and
# sets PID and PORT. Fatal when it does not start.
start_daemon() {
    local server=$1
    shift
    # The log exists before the first look for the port (the background
    # job's redirection may come later).
    : >"$TMP/server.err"
    # shellcheck disable=SC2046
    env $(env | sed -n 's/^\(DAE_[A-Z0-9_]*\)=.*/-u \1/p') "$server" --bind 127.0.0.1 --port 0 "$@" \
        >"$TMP/server.out" 2>"$TMP/server.err" &
    PID=$!
    wait_until 10 eval '[ -n "$(daemon_port)" ] || ! kill -0 "$PID" 2>/dev/null'
    PORT=$(daemon_port)
    if [ -z "$PORT" ]; then
        cat "$TMP/server.err" >&2
        fatal "$server did not start"
    fi
}
# daemon_port: the port the daemon of start_daemon said it listens on.
daemon_port() { sed -n 's|.*listening on http://[0-9.]*:\([0-9]*\).*|\1|p' "$TMP/server.err" | head -1; }

# wait_until SECONDS COMMAND...: runs the command every 50 ms until it
# succeeds (returns 0) or SECONDS (a decimal number) have passed since the
# first try (returns 1). Its own variables start with _, so that a
# command which sets a variable of the caller's is not shadowed by them.
wait_until() {
    local _s=$1 _us=0 _deadline
    shift
    if [[ $_s == *.* ]]; then
        _us=${_s#*.}000000
        _us=$((10#${_us:0:6}))
        _s=${_s%%.*}
    fi
    _deadline=$((${EPOCHREALTIME//[!0-9]/} + ${_s:-0} * 1000000 + _us))
    until "$@"; do
        [ "${EPOCHREALTIME//[!0-9]/}" -lt "$_deadline" ] || return 1
        sleep 0.05
    done
}

# ms_since T0: milliseconds since T0, a time taken with `T0=$EPOCHREALTIME`.
ms_since() {
    echo $(((${EPOCHREALTIME//[!0-9]/} - ${1//[!0-9]/}) / 1000))
}

# ------------------------------------------------------------ HTTP

# req METHOD PATH [CURL ARGS...]: one request to http://127.0.0.1:$PORT;
# body in $TMP/body, headers in $TMP/headers, status in STATUS (000 when
# nothing answered).
req() {
    local method=$1 path=$2
    shift 2
    rm -f "$TMP/body" "$TMP/headers"
    STATUS=$(curl -s -m 30 -o "$TMP/body" -D "$TMP/headers" -w '%{http_code}' -X "$method" "$@" \
        "http://127.0.0.1:$PORT$path")
}

# header NAME: the value of header NAME in the last answer of req.
header() { sed -n "s/^$1: *//Ip" "$TMP/headers" | tr -d '\r' | head -1; }

# status_of PATH [CURL ARGS...]: prints the status of one GET to
# http://127.0.0.1:$PORT (000 when nothing answered within 3 s).
status_of() {
    local path=$1
    shift
    curl -s -m 3 -o /dev/null -w '%{http_code}' "$@" "http://127.0.0.1:$PORT$path"
}

# ------------------------------------------------------------ images

# png_info FILE: "WIDTH HEIGHT BIT_DEPTH COLOUR_TYPE" from a PNG's IHDR
# chunk, or nothing when FILE is not a PNG.
png_info() {
    "$PYTHON" -c '
import struct, sys
h = open(sys.argv[1], "rb").read(26)
if len(h) == 26 and h[:8] == b"\x89PNG\r\n\x1a\n" and h[12:16] == b"IHDR":
    print("%d %d %d %d" % struct.unpack(">IIBB", h[16:]))
' "$1" 2>/dev/null
}
