#!/usr/bin/env bash
# run.sh - integration tests of dae-server: start the real daemon on a free
# loopback port and drive it with curl.
#
# usage: tests/server/run.sh path/to/dae-server path/to/dae
#
# Covers every route and every status of the contract (200, 400, 404, 405,
# 413, 415, 422, 503 with Retry-After), every PNG flavour libpng reads and
# JPEG, BMP, GIF, PNM and TGA (fixtures in tests/fixtures/images, made by
# make_images.py there), sizes 1x1, 27x29, 28x28, 300x200 and 2000x2000
# with output pixels identical to `dae denoise` (the engine), multipart
# uploads, model selection, /noise reproducibility, malformed inputs
# (empty, truncated, bad CRC, plain text, a decompression bomb, oversized
# bodies announced or chunked), the limits (queue, connections, idle
# timeout, pixels, body), the environment twins of the flags, the access
# log, /metrics (through `promtool check metrics` when installed), and
# SIGTERM: readiness off, no new connections, in-flight work finished, or
# answered 503 after the drain deadline, exit 0.
#
# Uses the shell harness tests/lib.sh (bash, curl, python3). Every daemon
# it starts is killed by PID on exit, even when a check fails. Ends with
# "server: N passed, M failed"; exits 1 if any check failed. A sanitizer
# report in a daemon's log is a failure, copied to stderr (where
# `make test-sanitize` looks for it).
set -u

if [ $# -ne 2 ] || [ ! -x "$1" ] || [ ! -x "$2" ]; then
    echo "usage: $0 path/to/dae-server path/to/dae" >&2
    exit 2
fi
abs() { echo "$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"; }
SERVER=$(abs "$1")
DAE=$(abs "$2")
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
source "$ROOT/tests/lib.sh" server
IMG=$ROOT/tests/fixtures/images
PIDS=""
NETNS_MADE=""
cleanup() {
    for p in $PIDS; do kill -KILL "$p" 2>/dev/null; done
    if [ -n "$NETNS_MADE" ]; then
        ip netns del "$NETNS_MADE" 2>/dev/null
        ip link del "vh$$" 2>/dev/null
    fi
}
unset DAE_BIND DAE_PORT DAE_MODEL DAE_MODELS_DIR DAE_WORKERS DAE_HTTP_THREADS DAE_MAX_BATCH \
      DAE_MAX_QUEUE_DELAY_US DAE_QUEUE_SIZE DAE_QUEUE_PIXELS DAE_MAX_BODY DAE_MAX_PIXELS \
      DAE_MAX_CONNECTIONS DAE_TIMEOUT DAE_DRAIN_TIMEOUT DAE_PNG_LEVEL DAE_RETRY_AFTER DAE_ACCESS_LOG \
      DAE_ADMIN_TOKEN DAE_STATE_DIR DAE_DATA_DIR DAE_TRAIN_THREADS DAE_TRAIN_QUEUE DAE_RELOAD_INTERVAL \
      DAE_LOG_FORMAT DAE_CORS_ORIGIN

# A failure shows the start of the last answer's body.
fail_detail() {
    if [ -s "$TMP/body" ]; then echo "    body: $(head -c 300 "$TMP/body" | tr -d '\0')"; fi
}

# ------------------------------------------------------------ daemons

# start NAME ARGS...: starts the daemon on a free port of $BIND (default
# 127.0.0.1; logs in $TMP/NAME.out and .err); sets PID and PORT. Extra
# environment comes from the caller (`VAR=x start ...`).
start() {
    local name=$1
    shift
    : >"$TMP/$name.err"
    "$SERVER" --bind "${BIND:-127.0.0.1}" --port 0 "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
    PID=$!
    PIDS="$PIDS $PID"
    wait_until 10 started "$name" "$PID"
    PORT=$(port_of "$name")
    if [ -z "$PORT" ]; then
        cat "$TMP/$name.err" >&2
        fatal "daemon $name did not start"
    fi
}
# port_of NAME: the port daemon NAME said it listens on, or nothing yet.
port_of() { sed -n 's|.*listening on http://[0-9.]*:\([0-9]*\).*|\1|p' "$TMP/$1.err" | head -1; }
# started NAME PID: the daemon has said its port, or has exited.
started() { [ -n "$(port_of "$1")" ] || exited "$2"; }
exited() { ! kill -0 "$1" 2>/dev/null; }

# stop PID NAME: SIGTERM, wait up to 30 s; sets RC (the exit status, or
# 124 when it did not stop). Checks its log for sanitizer reports.
stop() {
    local pid=$1 name=$2
    kill -TERM "$pid" 2>/dev/null
    RC=124
    if wait_until 30 exited "$pid"; then
        wait "$pid"
        RC=$?
    fi
    sanitizer_check "$name"
}

sanitizer_check() { sanitizer_scan "$TMP/$1.err" "daemon $1"; }

# ------------------------------------------------------------ requests

# expect_error STATUS CODE NAME METHOD PATH [CURL ARGS...]: sends the
# request and counts check NAME as passed when it is answered with that
# JSON error.
expect_error() {
    local status=$1 code=$2 name=$3
    shift 3
    req "$@"
    is_error "$status" "$code"
    ok "$name"
}

# is_error STATUS CODE: the last answer is that JSON error.
# Its request_id is the answer's X-Request-Id (the gate's answers, made
# before a request is parsed, have neither).
is_error() {
    local rid
    rid=$(header X-Request-Id)
    [ "$STATUS" = "$1" ] && [ "$(header Content-Type)" = "application/json" ] &&
        grep -q "^{\"error\":{\"status\":$1,\"code\":\"$2\",\"message\":\"[^\"]" "$TMP/body" &&
        if [ -n "$rid" ]; then grep -qF "\"request_id\":\"$rid\"}}" "$TMP/body"; else ! grep -q request_id "$TMP/body"; fi
}

# same_pixels A B: two PNGs hold the same pixels (both re-encoded by the
# server's /noise with sigma 0, which changes no sample), exactly: the
# forward pass is batch-invariant, so however the server batched a
# request's tiles, it answers what dae denoise writes.
same_pixels() {
    curl -s -o "$TMP/norm_a" "http://127.0.0.1:$PORT/noise?sigma=0" --data-binary @"$1" &&
        curl -s -o "$TMP/norm_b" "http://127.0.0.1:$PORT/noise?sigma=0" --data-binary @"$2" &&
        [ -s "$TMP/norm_a" ] && cmp -s "$TMP/norm_a" "$TMP/norm_b"
}

# metric TEXT: the value of the first series starting with TEXT.
metric() { curl -s "http://127.0.0.1:$PORT/metrics" | grep -F "$1" | grep -v '^#' | head -1 | awk '{print $NF}'; }
# pending N: the daemon's inference queue holds N requests.
pending() { [ "$(metric 'dae_queue_pending ')" = "$1" ]; }
# models_say TEXT / models_omit TEXT: GET /models holds TEXT / does not.
models_say() { curl -s "http://127.0.0.1:$PORT/models" | grep -qF "$1"; }
models_omit() { ! models_say "$1"; }

# ------------------------------------------------------------ models

mkdir -p "$TMP/models"
if [ -f "$ROOT/models/mnist.safetensors" ]; then
    cp "$ROOT/models/mnist.safetensors" "$TMP/models/mnist.safetensors"
else
    echo "server: models/mnist.safetensors missing; training a 1-epoch stand-in on mnist-mini" >&2
    "$DAE" train --data-dir "$ROOT/tests/fixtures" --dataset mnist-mini --epochs 1 \
        --out "$TMP/models/mnist.safetensors" >/dev/null 2>&1 || { echo "FATAL: cannot train a model" >&2; exit 1; }
fi
if [ -f "$ROOT/models/fashion-mnist.safetensors" ]; then
    cp "$ROOT/models/fashion-mnist.safetensors" "$TMP/models/other.safetensors"
else
    cp "$TMP/models/mnist.safetensors" "$TMP/models/other.safetensors"
fi
echo "not a safetensors file" >"$TMP/models/broken.safetensors"

# ------------------------------------------------------------ configuration

"$SERVER" --help >"$TMP/help" 2>&1
grep -q -- '--port N .*DAE_PORT .*(default 8080)' "$TMP/help"
ok "--help exits 0 and lists flags with their variables and defaults"
"$SERVER" --no-such-flag >/dev/null 2>"$TMP/usage"
rc=$?
[ "$rc" -eq 2 -a "$(wc -l <"$TMP/usage")" -eq 1 ]
ok "an unknown flag is a usage error (exit 2, one line)"
DAE_PORT=notaport "$SERVER" >/dev/null 2>"$TMP/usage"
rc=$?
[ "$rc" -eq 2 ] && grep -q DAE_PORT "$TMP/usage"
ok "a bad environment value is a usage error naming the variable"
"$SERVER" --bind 127.0.0.1 --port 0 --model "$TMP/nope.safetensors" --models-dir "$TMP/empty" >/dev/null 2>"$TMP/nomodel"
rc=$?
[ "$rc" -eq 1 ] && grep -q nope.safetensors "$TMP/nomodel"
ok "a missing default model fails to start (exit 1, names the file)"

# ------------------------------------------------------------ daemon A: routes

start a --models-dir "$TMP/models" --model mnist
A_PID=$PID
A_PORT=$PORT
grep -q 'broken.safetensors' "$TMP/a.err"
ok "a model file that does not load is skipped with a warning"
# The inference workers' scheduling policies (field 41 of a thread's stat;
# 0 SCHED_OTHER, 3 SCHED_BATCH), one word each.
worker_policies() {
    for t in /proc/"$PID"/task/*; do
        case "$(cat "$t/comm" 2>/dev/null)" in
        dae-worker-*) sed 's/.*) //' "$t/stat" | awk '{print $39}' ;;
        esac
    done | tr '\n' ' '
}
# all_policies WANT: every worker's policy is WANT; sets POLICIES to them all.
all_policies() {
    POLICIES=$(worker_policies)
    [ -n "$POLICIES" ] && [ -z "$(echo $POLICIES | tr ' ' '\n' | grep -vx "$1")" ]
}
# As SCHED_BATCH a request that wakes a worker does not preempt the event loop.
all_policies 3
ok "the inference workers run as SCHED_BATCH (policies: $POLICIES)"

req GET /healthz
[ "$STATUS" = 200 ] && grep -q '"status":"ok"' "$TMP/body"
ok "GET /healthz: 200 {\"status\":\"ok\"}"
req GET /readyz
[ "$STATUS" = 200 ] && grep -q '"model":"mnist"' "$TMP/body"
ok "GET /readyz: 200 naming the default model"
rm -f "$TMP/body"
STATUS=$(curl -s -I -o "$TMP/headers" -w '%{http_code}' "http://127.0.0.1:$PORT/healthz")
[ "$STATUS" = 200 ]
ok "HEAD /healthz: 200"
req GET /models
[ "$STATUS" = 200 ] && grep -q '"default":"mnist"' "$TMP/body" && grep -q '"name":"other"' "$TMP/body" &&
    ! grep -q '"name":"broken"' "$TMP/body"
ok "GET /models lists the models, mnist the default, without the broken file"
req GET /models/mnist
[ "$STATUS" = 200 ] && grep -q '"version":"sha256:[0-9a-f]\{12\}"' "$TMP/body" &&
    grep -q '"architecture":{' "$TMP/body" && grep -q '"default":true' "$TMP/body"
ok "GET /models/mnist: version, metadata and architecture"
expect_error 404 model_not_found "GET /models/nope: 404 model_not_found" GET /models/nope
expect_error 404 not_found "unknown route: 404 not_found" GET /no/such/route
req GET /denoise
is_error 405 method_not_allowed && [ "$(header Allow)" = "POST" ]
ok "GET /denoise: 405 with Allow: POST"
req POST /healthz
is_error 405 method_not_allowed && [ "$(header Allow)" = "GET, HEAD" ]
ok "POST /healthz: 405 with Allow: GET, HEAD"
expect_error 405 method_not_allowed "DELETE /models: 405" DELETE /models

# ------------------------------------------------------------ request ids, gzip, CORS, the page, the API description

req GET /models/nope -H 'X-Request-Id: trace-42.a:b'
is_error 404 model_not_found && [ "$(header X-Request-Id)" = trace-42.a:b ] && grep -q '"request_id":"trace-42.a:b"' "$TMP/body"
ok "X-Request-Id: the client's is echoed in the header and the error body"
req GET /healthz -H "X-Request-Id: an id with spaces"
rid=$(header X-Request-Id)
[ "$STATUS" = 200 ] && echo "$rid" | grep -qx '[0-9a-f]\{32\}'
ok "... an unusable one is replaced by one the server makes (32 hex digits)"
wait_until 2 grep -q "request_id=$rid\$" "$TMP/a.out"
ok "... which the access log line carries"
req GET /models -H 'Accept-Encoding: gzip'
[ "$STATUS" = 200 ] && [ "$(header Content-Encoding)" = gzip ] && [ "$(header Vary)" = Accept-Encoding ] &&
    gzip -dc "$TMP/body" | grep -q '"default":"mnist"'
ok "GET /models with Accept-Encoding: gzip: gzip'd JSON, Vary: Accept-Encoding"
req GET /models -H 'Accept-Encoding: gzip;q=0, identity'
[ "$STATUS" = 200 ] && [ -z "$(header Content-Encoding)" ] && grep -q '"default":"mnist"' "$TMP/body"
ok "... and plain JSON for gzip;q=0"
req GET /metrics -H 'Accept-Encoding: br, gzip'
[ "$STATUS" = 200 ] && [ "$(header Content-Encoding)" = gzip ] && gzip -dc "$TMP/body" | grep -q '^dae_http_requests_total'
ok "GET /metrics gzip'd for Accept-Encoding: br, gzip"
req POST /denoise -F image=@"$IMG/gray8.png" -F image=@"$IMG/gray8.png"
is_error 400 multiple_images
ok "two -F image= fields: 400 multiple_images (the second is not dropped silently)"
req GET /
[ "$STATUS" = 200 ] && [ "$(header Content-Type)" = "text/html; charset=utf-8" ] && cmp -s "$TMP/body" "$ROOT/server/web/index.html" &&
    header Content-Security-Policy | grep -q "^default-src 'self';.*frame-ancestors 'none'" &&
    [ "$(header X-Content-Type-Options)" = nosniff ]
ok "GET /: the web page, compiled in, under a Content-Security-Policy of its own files only"
req GET /ui/app.js
[ "$STATUS" = 200 ] && [ "$(header Content-Type)" = "text/javascript; charset=utf-8" ] && cmp -s "$TMP/body" "$ROOT/server/web/app.js"
ok "GET /ui/app.js: the page's script"
expect_error 404 not_found "GET /ui/nope.js: 404 not_found" GET /ui/nope.js
req GET /openapi.json
[ "$STATUS" = 200 ] && [ "$(header Content-Type)" = application/json ] && cmp -s "$TMP/body" "$ROOT/server/web/openapi.json"
ok "GET /openapi.json: the API description"
req GET /openapi.json -H 'Accept-Encoding: gzip'
cp "$TMP/body" "$TMP/openapi1.gz"
req GET /openapi.json -H 'Accept-Encoding: gzip'
[ "$STATUS" = 200 ] && [ "$(header Content-Encoding)" = gzip ] && cmp -s "$TMP/body" "$TMP/openapi1.gz" &&
    gzip -dc "$TMP/body" | cmp -s - "$ROOT/server/web/openapi.json"
ok "... gzip'd (once, then from the cache: the same bytes every time)"
req OPTIONS /denoise -H 'Origin: http://example.org' -H 'Access-Control-Request-Method: POST'
is_error 405 method_not_allowed && [ -z "$(header Access-Control-Allow-Origin)" ]
ok "CORS is off by default: OPTIONS 405, no Access-Control-Allow-Origin"
"$SERVER" --port "$A_PORT" --models-dir "$TMP/models" >/dev/null 2>"$TMP/inuse.err"
rc=$?
[ "$rc" = 1 ] && grep -q "port $A_PORT of 127.0.0.1 is already in use.*--port N or DAE_PORT=N" "$TMP/inuse.err"
ok "a port already in use: exit 1, naming the port and how to choose another"

DAE_ISA=sse2 start cors --models-dir "$TMP/models" --model mnist --cors-origin http://example.org --log-format json
req OPTIONS /denoise -H 'Origin: http://example.org' -H 'Access-Control-Request-Method: POST'
[ "$STATUS" = 204 ] && [ "$(header Access-Control-Allow-Origin)" = http://example.org ] &&
    [ "$(header Access-Control-Allow-Methods)" = POST ] && header Access-Control-Allow-Headers | grep -q X-Request-Id
ok "--cors-origin: OPTIONS /denoise is a preflight, 204 allowing POST"
req POST /denoise --data-binary @"$IMG/gray8.png" -H 'Origin: http://example.org'
[ "$STATUS" = 200 ] && [ "$(header Access-Control-Allow-Origin)" = http://example.org ] &&
    header Access-Control-Expose-Headers | grep -q X-Request-Id && [ "$(header Vary)" = Origin ]
ok "... POST /denoise answers with the origin, exposing X-Request-Id"
req OPTIONS /models/mnist/activate -H 'Origin: http://example.org'
is_error 405 method_not_allowed && [ -z "$(header Access-Control-Allow-Origin)" ]
ok "... an admin route takes no preflight"
req DELETE /models/nope -H 'Origin: http://example.org'
[ "$STATUS" = 404 ] && [ -z "$(header Access-Control-Allow-Origin)" ]
ok "... and its answers carry no CORS header"
python3 -c 'import json, sys
lines = open(sys.argv[1]).read().splitlines()
assert lines and all(set(json.loads(l)) == {"time", "level", "msg"} for l in lines)
msgs = [json.loads(l) for l in lines]
assert any(m["level"] == "info" and m["msg"].startswith("dae-server ") for m in msgs)
assert any(m["level"] == "warning" and "broken.safetensors" in m["msg"] for m in msgs)' "$TMP/cors.err"
ok "--log-format json: every server message on stderr is a JSON object (time, level, msg)"
grep -q 'sse2 kernels)"' "$TMP/cors.err" && curl -s "http://127.0.0.1:$PORT/metrics" | grep -q '^dae_engine_info{isa="sse2"} 1$'
ok "DAE_ISA=sse2: the start line and metrics say the engine runs its SSE2 kernels"
stop "$PID" cors
[ "$RC" = 0 ]
ok "... and it stops cleanly"
PORT=$A_PORT

# No token: loopback clients only, and not through a proxy on this host,
# which connects from loopback on anyone's behalf and says so.
for hdr in 'X-Forwarded-For: 203.0.113.9' 'Forwarded: for=203.0.113.9' 'X-Real-IP: 203.0.113.9'; do
    req POST /models/mnist/activate -H "$hdr"
    is_error 403 forbidden && grep -q "carries ${hdr%%:*}" "$TMP/body"
    ok "no token, a loopback client through a proxy ($hdr): 403 naming the header"
done

# ------------------------------------------------------------ denoise

req POST /denoise --data-binary @"$IMG/gray8.png" -H 'Content-Type: image/png'
cp "$TMP/body" "$TMP/raw_out.png"
[ "$STATUS" = 200 ] && [ "$(header Content-Type)" = "image/png" ] && [ "$(png_info "$TMP/body")" = "28 28 8 0" ]
ok "POST /denoise (raw 28x28 PNG): 200 image/png, 28x28 gray"
[ "$(header X-Model)" = mnist ] && header X-Model-Version | grep -q '^sha256:[0-9a-f]\{12\}$'
ok "the answer names the model and its version"
"$DAE" denoise --model "$TMP/models/mnist.safetensors" "$IMG/gray8.png" "$TMP/engine.png" 2>/dev/null
same_pixels "$TMP/raw_out.png" "$TMP/engine.png"
ok "a 28x28 image is one tile: the same pixels as the engine (dae denoise)"
req POST /denoise -F "image=@$IMG/gray8.png"
[ "$STATUS" = 200 ] && cmp -s "$TMP/body" "$TMP/raw_out.png"
ok "multipart/form-data field image: the same PNG as the raw upload"
expect_error 400 missing_image "multipart without an image field: 400 missing_image" POST /denoise -F "other=@$IMG/gray8.png"
expect_error 400 invalid_multipart "multipart without a boundary: 400 invalid_multipart" POST /denoise --data-binary 'junk' -H 'Content-Type: multipart/form-data'
expect_error 415 unsupported_media_type "multipart holding plain text: 415 unsupported_media_type" POST /denoise -F "image=@$IMG/text.txt"
req POST '/denoise?model=other' --data-binary @"$IMG/gray8.png"
[ "$STATUS" = 200 ] && [ "$(header X-Model)" = other ]
ok "?model=other: 200 from that model"
expect_error 404 model_not_found "?model=nope: 404 model_not_found" POST '/denoise?model=nope' --data-binary @"$IMG/gray8.png"
expect_error 422 invalid_parameter "an unknown query parameter: 422 invalid_parameter" POST '/denoise?colour=red' --data-binary @"$IMG/gray8.png"

# Every flavour: file, expected "WIDTH HEIGHT 8 COLOR_TYPE" of the answer.
while read -r file want; do
    [ -f "$IMG/$file" ] || { fail "fixture $file missing"; continue; }
    req POST /denoise --data-binary @"$IMG/$file"
    out=$TMP/out_$file.png
    cp "$TMP/body" "$out"
    got=$(png_info "$out")
    "$DAE" denoise --model "$TMP/models/mnist.safetensors" "$IMG/$file" "$TMP/engine_$file.png" 2>/dev/null
    if [ "$STATUS" != 200 ] || [ "$got" != "$want" ]; then
        fail "$file: status $STATUS, PNG \"$got\", want 200 \"$want\""
    elif ! same_pixels "$out" "$TMP/engine_$file.png"; then
        fail "$file: pixels differ from dae denoise"
    else
        pass "$file"
    fi
done <<'EOF'
gray1.png 28 28 8 0
gray2.png 28 28 8 0
gray4.png 28 28 8 0
gray16.png 28 28 8 0
gray_trns.png 28 28 8 4
graya8.png 28 28 8 4
graya16.png 28 28 8 4
rgb8.png 28 28 8 2
rgb16.png 28 28 8 2
rgba8.png 28 28 8 6
rgba16.png 28 28 8 6
pal1.png 28 28 8 2
pal2.png 28 28 8 2
pal4.png 28 28 8 2
pal8.png 28 28 8 2
pal8_trns.png 28 28 8 6
gray8_adam7.png 28 28 8 0
rgba16_adam7.png 28 28 8 6
gray_1x1.png 1 1 8 0
gray_27x29.png 27 29 8 0
gray_300x200.png 300 200 8 0
rgb_300x200_adam7.png 300 200 8 2
ring_2000x2000.png 2000 2000 8 0
gray.jpg 28 28 8 0
rgb.jpg 32 24 8 2
rgb.bmp 28 28 8 2
gray.gif 28 28 8 2
gray.pgm 28 28 8 0
rgb.ppm 28 28 8 2
rgb.tga 28 28 8 2
EOF

# ------------------------------------------------------------ malformed input

expect_error 400 empty_body "empty body: 400 empty_body" POST /denoise
expect_error 400 invalid_image "truncated PNG: 400 invalid_image" POST /denoise --data-binary @"$IMG/truncated.png"
req POST /denoise --data-binary @"$IMG/bad_crc.png"
is_error 400 invalid_image && grep -q 'CRC error' "$TMP/body"
ok "corrupted CRC: 400 invalid_image saying CRC"
expect_error 415 unsupported_media_type "plain text: 415 unsupported_media_type" POST /denoise --data-binary @"$IMG/text.txt" -H 'Content-Type: text/plain'
t0=$EPOCHREALTIME
req POST /denoise --data-binary @"$IMG/bomb.png"
ms=$(ms_since "$t0")
is_error 413 too_many_pixels && grep -q '20000x20000' "$TMP/body" && [ "$ms" -lt 2000 ]
ok "decompression bomb (1 KB claiming 20000x20000): 413 too_many_pixels at once"
rss=$(metric process_resident_memory_bytes)
[ "${rss:-0}" -gt 0 ] && [ "${rss%.*}" -lt 300000000 ]
ok "... and nothing near its 400 MB was allocated (RSS $rss)"
head -c 11534336 /dev/zero >"$TMP/big.bin"
expect_error 413 body_too_large "11 MiB body (limit 10 MiB): 413 body_too_large" POST /denoise --data-binary @"$TMP/big.bin"
# curl announces the length but has no byte of the body to send.
req POST /denoise -H 'Content-Type: image/png' -H 'Content-Length: 11534336' -H 'Expect:' --data-binary ''
[ "$STATUS" = 413 ] && grep -q '"code":"body_too_large"' "$TMP/body"
ok "413 from Content-Length alone, without sending the body"
expect_error 413 body_too_large "11 MiB chunked body: 413 body_too_large" POST /denoise -H 'Transfer-Encoding: chunked' --data-binary @"$TMP/big.bin"
req POST /denoise --data-binary @"$IMG/gray8.png"
[ "$STATUS" = 200 ] && cmp -s "$TMP/body" "$TMP/raw_out.png"
ok "the daemon still serves after every bad request"

# ------------------------------------------------------------ noise

req POST '/noise?type=gaussian&sigma=0.3&seed=7' --data-binary @"$IMG/gray8.png"
cp "$TMP/body" "$TMP/noise1.png"
[ "$STATUS" = 200 ] && [ "$(png_info "$TMP/noise1.png")" = "28 28 8 0" ]
ok "POST /noise: 200 PNG of the same size"
req POST '/noise?type=gaussian&sigma=0.3&seed=7' --data-binary @"$IMG/gray8.png"
cmp -s "$TMP/body" "$TMP/noise1.png"
ok "/noise: same seed, same bytes"
req POST '/noise?type=gaussian&sigma=0.3&seed=8' --data-binary @"$IMG/gray8.png"
[ "$STATUS" = 200 ] && ! cmp -s "$TMP/body" "$TMP/noise1.png"
ok "/noise: another seed, other bytes"
req POST '/noise?type=salt-pepper&amount=0.2&seed=1' --data-binary @"$IMG/rgba8.png"
[ "$STATUS" = 200 ] && [ "$(png_info "$TMP/body")" = "28 28 8 6" ]
ok "/noise salt-pepper on RGBA: 200 RGBA"
expect_error 422 invalid_parameter "/noise sigma out of range: 422" POST '/noise?sigma=11' --data-binary @"$IMG/gray8.png"
expect_error 422 invalid_parameter "/noise sigma as a range (training only): 422" POST '/noise?sigma=0-0.5' --data-binary @"$IMG/gray8.png"
expect_error 422 invalid_parameter "/noise sigma with salt-pepper: 422" POST '/noise?type=salt-pepper&sigma=0.2' --data-binary @"$IMG/gray8.png"
expect_error 422 invalid_parameter "/noise unknown type: 422" POST '/noise?type=blur' --data-binary @"$IMG/gray8.png"
expect_error 422 invalid_parameter "/noise negative seed: 422" POST '/noise?seed=-1' --data-binary @"$IMG/gray8.png"
# Which of two sigmas would count, what is "type=gaussian%00", what is a
# bare "?sigma": each refused rather than read one way.
while IFS='|' read -r target says; do
    req POST "$target" --data-binary @"$IMG/gray8.png"
    if is_error 422 invalid_parameter && grep -qF -- "$says" "$TMP/body"; then pass "POST $target: 422, $says"
    else fail "POST $target: 422 saying $says"; fi
done <<'EOF'
/noise?sigma=0.5&sigma=0.7|query parameter \"sigma\" is given more than once
/denoise?model=mnist&model=fashion-mnist|query parameter \"model\" is given more than once
/noise?type=gaussian%00|query parameter \"type\" holds a NUL byte
/noise?sigma|query parameter \"sigma\" has no value
EOF

# ------------------------------------------------------------ metrics and log

req GET /datasets # its listing runs on the helper thread, which the metrics time
[ "$STATUS" = 200 ]
ok "GET /datasets: 200"
req GET /metrics
cp "$TMP/body" "$TMP/metrics.txt"
[ "$STATUS" = 200 ] && header Content-Type | grep -q '^text/plain; version=0.0.4'
ok "GET /metrics: 200 text/plain version 0.0.4"
if command -v promtool >/dev/null; then
    check "promtool check metrics" promtool check metrics <"$TMP/metrics.txt"
else
    echo "server: promtool not installed (Debian package prometheus): metrics format check skipped"
fi
grep -q '^dae_http_requests_total{route="denoise",status="200"} [1-9]' "$TMP/metrics.txt"
ok "metrics count requests by route and status"
grep -q '^dae_rejections_total{reason="too_many_pixels"} [1-9]' "$TMP/metrics.txt" &&
    grep -q '^dae_rejections_total{reason="body_too_large"} [1-9]' "$TMP/metrics.txt"
ok "metrics count rejections by reason"
grep -q '^dae_http_request_duration_seconds_count{route="denoise"} [1-9]' "$TMP/metrics.txt" &&
    grep -q '^dae_queue_wait_seconds_count [1-9]' "$TMP/metrics.txt" &&
    grep -q '^dae_inference_seconds_count [1-9]' "$TMP/metrics.txt" &&
    grep -q '^dae_inference_batch_tiles_bucket{le="+Inf"} [1-9]' "$TMP/metrics.txt"
ok "metrics have the latency, queue, inference and batch histograms"
grep -q '^dae_images_denoised_total [1-9]' "$TMP/metrics.txt" &&
    grep -q '^dae_pixels_denoised_total [1-9]' "$TMP/metrics.txt" && grep -q '^dae_queue_depth 0' "$TMP/metrics.txt"
ok "metrics count images and pixels denoised, and the queue depth"
grep -q '^dae_helper_work_seconds_count [1-9]' "$TMP/metrics.txt" &&
    grep -q '^dae_helper_wait_seconds_bucket{le="+Inf"} [1-9]' "$TMP/metrics.txt" &&
    grep -q '^dae_helper_queue_depth 0$' "$TMP/metrics.txt"
ok "metrics time the work off the event loop, its wait, and count what waits for it"
grep -q '^dae_model_info{model="mnist",version="sha256:[0-9a-f]*",default="true"} 1' "$TMP/metrics.txt" &&
    grep -q '^dae_build_info{' "$TMP/metrics.txt" && grep -q '^process_cpu_seconds_total ' "$TMP/metrics.txt" &&
    grep -q '^process_resident_memory_bytes [1-9]' "$TMP/metrics.txt" && grep -q '^process_open_fds ' "$TMP/metrics.txt"
ok "metrics have model info, build info and process_* from /proc"
ISA=$(sed -n 's|.*listening on .*, \([a-z0-9]*\) kernels)$|\1|p' "$TMP/a.err")
[ -n "$ISA" ] && grep -q "^dae_engine_info{isa=\"$ISA\"} 1$" "$TMP/metrics.txt"
ok "the start line and metrics name the engine's kernels ($ISA)"
! grep -qE 'no/such|nope|route="/' "$TMP/metrics.txt"
ok "metric labels never hold raw paths or names from requests"
before=$(grep -c ' GET /readyz route=readyz status=200 ' "$TMP/a.out")
for _ in 1 2 3; do curl -s -o /dev/null "http://127.0.0.1:$PORT/readyz"; done
logged() { [ $(($(grep -c ' GET /readyz route=readyz status=200 ' "$TMP/a.out") - before)) -ge 3 ]; }
wait_until 2 logged
after=$(grep -c ' GET /readyz route=readyz status=200 ' "$TMP/a.out")
[ $((after - before)) -eq 3 ] &&
    grep -qE ' POST /denoise route=denoise status=200 bytes=[0-9]+ duration_ms=[0-9.]+ model=mnist request_id=[0-9a-f]{32}$' "$TMP/a.out"
ok "access log: one line per request (method, path, route, status, bytes, duration, request id)"
# Lines of requests answered while others are under way wait in a buffer
# (SRV_ACCESS_LINGER_MS) to go out together; every one of them comes out.
before=$(grep -c ' GET /readyz route=readyz status=200 ' "$TMP/a.out")
seq 300 | xargs -P 16 -I{} curl -s -o /dev/null "http://127.0.0.1:$PORT/readyz"
logged() { [ $(($(grep -c ' GET /readyz route=readyz status=200 ' "$TMP/a.out") - before)) -ge 300 ]; }
wait_until 2 logged && [ $(($(grep -c ' GET /readyz route=readyz status=200 ' "$TMP/a.out") - before)) -eq 300 ]
ok "... 300 requests, 16 at a time: 300 lines, whole"
exec 6<>"/dev/tcp/127.0.0.1/$PORT" # an upload under way all along: each line below waits
printf 'POST /denoise HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\nabc' >&6
sleep 0.3
before=$(grep -c ' GET /readyz route=readyz status=200 ' "$TMP/a.out")
for _ in 1 2 3; do curl -s -o /dev/null "http://127.0.0.1:$PORT/readyz"; done
logged() { [ $(($(grep -c ' GET /readyz route=readyz status=200 ' "$TMP/a.out") - before)) -ge 3 ]; }
wait_until 1 logged
ok "... lines answered while another request is under way come out within the linger"
exec 6<&-

stop "$A_PID" a
[ "$RC" -eq 0 ]
ok "SIGTERM with nothing in flight: exit 0 (exit $RC)"

# ------------------------------------------------------------ daemon B: limits, from the environment

DAE_MODEL="$TMP/models/mnist.safetensors" DAE_MODELS_DIR="$TMP/none" DAE_WORKERS=1 DAE_QUEUE_SIZE=1 \
    DAE_MAX_CONNECTIONS=3 DAE_TIMEOUT=1 DAE_ACCESS_LOG=json DAE_MAX_BODY=1M DAE_MAX_PIXELS=5000000 \
    DAE_RETRY_AFTER=2 DAE_SMALL_WORKERS=4 DAE_ISA=avx9 start b
B_PID=$PID
req GET /metrics
grep -q '^dae_inference_workers 1$' "$TMP/body" && grep -q '^dae_queue_capacity 1$' "$TMP/body"
grep -q '^dae_inference_small_workers 1$' "$TMP/body"
ok "environment twins: DAE_WORKERS, DAE_QUEUE_SIZE and DAE_SMALL_WORKERS (at most the workers) are in effect"
grep -q "warning: DAE_ISA=avx9 names no instruction set of the engine (sse2, avx2, avx512): using $ISA" "$TMP/b.err" &&
    grep -q "^dae_engine_info{isa=\"$ISA\"} 1$" "$TMP/body"
ok "DAE_ISA naming no instruction set: a warning, and the best kernels the CPU has ($ISA)"
req POST /denoise --data-binary @"$IMG/gray_300x200.png"
[ "$STATUS" = 200 ]
ok "DAE_MAX_BODY=1M still takes a 47 KB upload"
head -c 1100000 /dev/zero >"$TMP/1m.bin"
expect_error 413 body_too_large "DAE_MAX_BODY=1M: a 1.1 MB body is 413" POST /denoise --data-binary @"$TMP/1m.bin"
# A 2000x2000 image keeps the single worker busy; with a queue of 1 the
# next request must be turned away at once.
curl -s -o "$TMP/bigout.png" -w '%{http_code}' --data-binary @"$IMG/ring_2000x2000.png" \
    "http://127.0.0.1:$PORT/denoise" >"$TMP/bigstatus" &
big=$!
wait_until 5 pending 1
req POST /denoise --data-binary @"$IMG/gray8.png"
is_error 503 queue_full && [ "$(header Retry-After)" = 2 ]
ok "full queue: 503 queue_full with Retry-After at once"
wait $big
[ "$(cat "$TMP/bigstatus")" = 200 ] &&
    [ "$(png_info "$TMP/bigout.png")" = "2000 2000 8 0" ]
ok "... while the queued request still completes"
[ "$(metric 'dae_rejections_total{reason="queue_full"}')" -ge 1 ]
ok "the rejection is counted"
# Three uploads in progress fill DAE_MAX_CONNECTIONS=3 (checked well within
# DAE_TIMEOUT=1); a fourth request is answered 503, but the probes keep
# a few connections of their own. A stalled upload is a raw socket that
# sent half a request, not an HTTP client: bash's /dev/tcp.
stalled='POST /denoise HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\nabc'
exec 5<>"/dev/tcp/127.0.0.1/$PORT" 6<>"/dev/tcp/127.0.0.1/$PORT" 7<>"/dev/tcp/127.0.0.1/$PORT"
printf "$stalled" >&5; printf "$stalled" >&6; printf "$stalled" >&7
over_limit() { req GET /models; [ "$STATUS" = 503 ]; }
wait_until 0.5 over_limit
is_error 503 too_many_connections && [ "$(header Retry-After)" = 2 ]
ok "connection limit: a request over DAE_MAX_CONNECTIONS is answered 503 too_many_connections"
req GET /healthz
[ "$STATUS" = 200 ]
ok "... while GET /healthz still answers 200 (headroom for the probes)"
exec 5<&- 6<&- 7<&-
answers() { [ "$(status_of "$1")" = "$2" ]; }
wait_until 5 answers /models 200
ok "... and others are served again once they close"
# A client that stops half way through its request is cut off after
# DAE_TIMEOUT=1: cat ends when the daemon closes the connection.
exec 5<>"/dev/tcp/127.0.0.1/$PORT"
printf 'POST /denoise HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\nabc' >&5
timeout 5 cat <&5 >"$TMP/slow"
rc=$?
exec 5<&-
[ "$rc" -eq 0 ]
ok "idle timeout: a stalled upload is closed after DAE_TIMEOUT"
[ "$(metric 'dae_rejections_total{reason="timeout"}')" -ge 1 ]
ok "... and counted as a timeout rejection"
json_line='^\{"time":"[^"]+","remote":"127.0.0.1","method":"POST","path":"/denoise","route":"denoise",'
json_line+='"status":200,"bytes":[0-9]+,"duration_ms":[0-9.]+,"model":"mnist","request_id":"[0-9a-f]{32}"\}$'
grep -qE "$json_line" "$TMP/b.out"
ok "DAE_ACCESS_LOG=json: one JSON object per request"
stop "$B_PID" b
[ "$RC" -eq 0 ]
ok "daemon b: exit 0 (exit $RC)"

# ------------------------------------------------------------ daemon C: drain

# The drain deadline is far past the 2000x2000 image's time: the sanitizer
# build (no AVX code, -O1) takes 15-20 s on it on a 2-core machine, and the
# check is that the request finishes, not how fast.
start c --model "$TMP/models/mnist.safetensors" --models-dir "$TMP/none" --workers 1 --drain-timeout 120
C_PID=$PID
# Two curls ask /readyz ten times a second, each on one kept-alive
# connection, 50 ms apart; each answer is its body, then a line
# "|STATUS|NEW_CONNECTIONS". A probe answered while SIGTERM is being handled
# may get its 200 with Connection: close (the drain closes connections after
# their answer) and new connections are refused from then on: the other
# probe, asking later, sees the drain.
probe_readyz() {
    curl -s --rate 10/s -w '|%{http_code}|%{num_connects}\n' $(printf "http://127.0.0.1:$PORT/readyz %.0s" {1..300}) \
        >"$1" 2>/dev/null
}
: >"$TMP/readyz1"
: >"$TMP/readyz2"
probe_readyz "$TMP/readyz1" &
probe1=$!
wait_until 5 grep -q '^|200|1$' "$TMP/readyz1"
sleep 0.05
probe_readyz "$TMP/readyz2" &
probe2=$!
wait_until 5 grep -q '^|200|1$' "$TMP/readyz2"
ok "readyz 200 before SIGTERM (two kept-alive connections)"
curl -s -o "$TMP/drainout.png" -w '%{http_code}' --data-binary @"$IMG/ring_2000x2000.png" \
    "http://127.0.0.1:$PORT/denoise" >"$TMP/drainstatus" &
big=$!
wait_until 5 pending 1
kill -TERM "$C_PID"
drain_seen() {
    local f
    for f in "$TMP/readyz1" "$TMP/readyz2"; do
        grep -q '"code":"draining"' "$f" && grep -q '^|503|0$' "$f" && return 0
    done
    return 1
}
wait_until 5 drain_seen
ok "SIGTERM: readyz turns 503 draining"
kill "$probe1" "$probe2" 2>/dev/null
wait "$probe1" "$probe2" 2>/dev/null
answers /healthz 000
ok "SIGTERM: new connections are refused"
wait $big
[ "$(cat "$TMP/drainstatus")" = 200 ] &&
    [ "$(png_info "$TMP/drainout.png")" = "2000 2000 8 0" ]
ok "SIGTERM: the in-flight request is finished (200)"
stop "$C_PID" c
[ "$RC" -eq 0 ] && grep -q 'draining' "$TMP/c.err"
ok "SIGTERM: exit 0 after the drain (exit $RC)"

# ------------------------------------------------------------ daemon D: drain deadline

start d --model "$TMP/models/mnist.safetensors" --models-dir "$TMP/none" --workers 1 --max-batch 8 --drain-timeout 0
D_PID=$PID
curl -s -o "$TMP/cutout" -w '%{http_code}' --data-binary @"$IMG/ring_2000x2000.png" \
    "http://127.0.0.1:$PORT/denoise" >"$TMP/cutstatus" &
big=$!
wait_until 5 pending 1
t0=$EPOCHREALTIME
stop "$D_PID" d
ms=$(ms_since "$t0")
wait $big
[ "$(cat "$TMP/cutstatus")" = 503 ] && grep -q '"code":"shutting_down"' "$TMP/cutout"
ok "drain deadline 0: the unfinished request is answered 503 shutting_down"
[ "$RC" -eq 0 ] && [ "$ms" -lt 3000 ]
ok "drain deadline 0: exit 0 at once (exit $RC)"

# ------------------------------------------------------------ training, registry, admin

FIX=$ROOT/tests/fixtures
mkdir -p "$TMP/tmodels"
cp "$TMP/models/mnist.safetensors" "$TMP/tmodels/mnist.safetensors"

# job_field ID FIELD: a top-level string or number field of GET /train/ID.
job_field() {
    curl -s "http://127.0.0.1:$PORT/train/$1" | sed -n "s/^{\"id\":\"[^\"]*\".*\"$2\":\"\{0,1\}\([^\",]*\).*/\1/p" | head -1
}
# wait_state ID STATE SECONDS: polls until the job is in STATE.
wait_state() { wait_until "$3" job_in "$1" "$2"; }
job_in() { [ "$(job_field "$1" state)" = "$2" ]; }
# denoise_many N OUT: N /denoise requests, 4 at a time; their statuses into OUT.
denoise_many() {
    : >"$2"
    seq 1 "$1" | xargs -P 4 -I{} curl -s -o /dev/null -w '%{http_code}\n' --data-binary @"$IMG/gray8.png" \
        "http://127.0.0.1:$PORT/denoise" >>"$2"
}
all_200() { [ -s "$1" ] && ! grep -qv '^200$' "$1"; }
job_id() { sed -n 's/^{"id":"\([0-9]*\)".*/\1/p' "$TMP/body"; }

start e --models-dir "$TMP/tmodels" --model mnist --state-dir "$TMP/state" --data-dir "$FIX" \
    --train-threads 1 --workers 1 --reload-interval 1
E_PID=$PID

# Validation: every field, named with its range.
expect_error 400 invalid_json "POST /train with a body that is not JSON: 400 invalid_json" POST /train --data-binary 'not json'
req POST /train -H 'Content-Type: application/json' --data-binary '{"dataset":"mnist-mini","epochs":1}{"epochs":5}'
is_error 400 invalid_json && grep -q '12 bytes follow the JSON object' "$TMP/body"
ok "POST /train with a second object after the first: 400 invalid_json, not the first one's job"
while IFS='|' read -r body field; do
    req POST /train -H 'Content-Type: application/json' --data-binary "$body"
    if is_error 422 invalid_parameter && grep -qF "$field" "$TMP/body"; then pass "POST /train $body"; else fail "POST /train $body: 422 naming $field"; fi
done <<'EOF'
{"epochs":1}|dataset is required
{"dataset":"../etc"}|dataset must be
{"dataset":"mnist-mini","epochs":0}|epochs must be an integer from 1 to 10000
{"dataset":"mnist-mini","epochs":1.5}|epochs must be an integer
{"dataset":"mnist-mini","batch_size":0}|batch_size must be an integer from 1 to 65536
{"dataset":"mnist-mini","learning_rate":2}|learning_rate must be a number in (0, 1]
{"dataset":"mnist-mini","learning_rate":"x"}|learning_rate must be a number
{"dataset":"mnist-mini","weight_decay":-1}|weight_decay must be a number in [0, 1]
{"dataset":"mnist-mini","noise":"blur:1"}|noise:
{"dataset":"mnist-mini","noise":5}|noise must be a string
{"dataset":"mnist-mini","seed":-1}|seed must be an integer from 0
{"dataset":"mnist-mini","train_limit":-1}|train_limit must be an integer from 0
{"dataset":"mnist-mini","eval_limit":-5}|eval_limit must be an integer from 0
{"dataset":"mnist-mini","model_name":"../x"}|model_name must be
{"dataset":"mnist-mini","model_name":""}|model_name must be
{"dataset":"mnist-mini","activate":"yes"}|activate must be true (through the promotion gate), false or
{"dataset":"mnist-mini","architecture":{"encoder":[{"type":"conv9d"}]}}|architecture:
{"dataset":"mnist-mini","architecture":7}|architecture must be
{"dataset":"mnist-mini","epoch":1}|unknown field \"epoch\"
{"dataset":"mnist-mini","epochs":1,"epochs":100}|field \"epochs\" is given more than once
{"dataset":"mnist-mini","model_name":"a","model_name":"b"}|field \"model_name\" is given more than once
{"dataset":"mnist-mini","model_name":"a\u0000b"}|a string holds a NUL character
{"dataset":"mnist-mini\u0000x"}|a string holds a NUL character
EOF
req POST /train --data-binary '{"dataset":"nope"}'
is_error 422 dataset_not_found && grep -q "DATA_DIR/nope/train-images-idx3-ubyte" "$TMP/body" &&
    ! grep -q "$FIX" "$TMP/body"
ok "POST /train with a missing data set: 422 dataset_not_found with the file it looked for, inside DATA_DIR"

# A small job runs to succeeded; its model is listed and activated.
req POST /train -H 'Content-Type: application/json' -H 'X-Request-Id: trace-job1' \
    --data-binary '{"dataset":"mnist-mini","epochs":1,"train_limit":256,"model_name":"job1","seed":3}'
J1=$(job_id)
[ "$STATUS" = 202 ] && [ -n "$J1" ] && [ "$(header Location)" = "/train/$J1" ] &&
    grep -q '"state":"queued"' "$TMP/body" && grep -q "\"events\":\"/train/$J1/events\"" "$TMP/body"
ok "POST /train: 202 with the job (id, state, links) and Location"
wait_state "$J1" succeeded 60
ok "the job runs to succeeded"
req GET "/train/$J1"
grep -q '"progress":1' "$TMP/body" && grep -q '"history":\[{"epoch":1,"loss":[0-9.e-]*,"seconds":[0-9.e-]*,"test_mse":[0-9.e-]*,"test_psnr":' "$TMP/body" &&
    grep -q '"model":"job1"' "$TMP/body" && grep -q '"images_per_second":[1-9]' "$TMP/body"
ok "GET /train/{id}: progress 1, per-epoch loss and test MSE/PSNR, images/s, the model's name"
grep -q '"request_id":"trace-job1"' "$TMP/body" && grep -q '"request_id":"trace-job1"' "$TMP/state/$J1.json"
ok "... and the X-Request-Id of the POST that made it, in its record"
[ -f "$TMP/tmodels/job1.safetensors" ] && ! ls "$TMP/tmodels" | grep -q tmp
ok "the model is written into the models directory, no temporary left"
req GET /models/job1
[ "$STATUS" = 200 ] && grep -q '"dataset":"mnist-mini"' "$TMP/body" && grep -q '"train_images":"256"' "$TMP/body" &&
    grep -q '"test_psnr":' "$TMP/body" && grep -q '"default":false' "$TMP/body"
ok "GET /models/job1: listed with the training metadata of dae train"
req GET /train
[ "$STATUS" = 200 ] && grep -q "^{\"jobs\":\[{\"id\":\"$J1\"" "$TMP/body"
ok "GET /train lists the jobs"

# Activation under load: every /denoise answers 200.
denoise_many 40 "$TMP/during_switch" &
dm=$!
for _ in 1 2 3 4 5; do
    curl -s -o /dev/null -X POST "http://127.0.0.1:$PORT/models/job1/activate"
    curl -s -o /dev/null -X POST "http://127.0.0.1:$PORT/models/mnist/activate"
done
wait $dm
all_200 "$TMP/during_switch"
ok "concurrent /denoise requests during 10 activations all succeed ($(grep -c . "$TMP/during_switch") requests)"
req POST /models/job1/activate
[ "$STATUS" = 200 ] && grep -q '"active":"job1"' "$TMP/body" && grep -q '"previous":"mnist"' "$TMP/body"
ok "POST /models/job1/activate: 200"
req POST /denoise --data-binary @"$IMG/gray8.png"
[ "$STATUS" = 200 ] && [ "$(header X-Model)" = job1 ]
ok "/denoise answers from the activated model (X-Model: job1)"
[ "$(cat "$TMP/tmodels/ACTIVE")" = job1 ] && ! ls -a "$TMP/tmodels" | grep -q 'ACTIVE.tmp'
ok "the ACTIVE file names it"
req GET /models
grep -q '"active":"job1"' "$TMP/body"
ok "GET /models shows which is active"
expect_error 404 model_not_found "activating an unknown model: 404" POST /models/nope/activate
expect_error 409 model_active "DELETE of the active model: 409 model_active" DELETE /models/job1
[ "$(metric 'dae_model_switches_total')" -ge 11 ]
ok "dae_model_switches_total counts the switches"

# Server-Sent Events: progress, then done.
req POST /train --data-binary '{"dataset":"mnist-mini","epochs":3,"model_name":"job2"}'
J2=$(job_id)
curl -s -N -m 120 -D "$TMP/sse_headers" "http://127.0.0.1:$PORT/train/$J2/events" >"$TMP/sse"
grep -qi '^content-type: text/event-stream' "$TMP/sse_headers" && grep -q '^event: progress$' "$TMP/sse" &&
    grep -q '^data: {"id":"'"$J2"'","state":"running"' "$TMP/sse" &&
    [ "$(grep '^event:' "$TMP/sse" | tail -1)" = "event: done" ] && tail -2 "$TMP/sse" | grep -q '"state":"succeeded"'
ok "GET /train/{id}/events: text/event-stream, progress events and a final done, then it ends ($(grep -c '^event: progress' "$TMP/sse") progress events)"
expect_error 404 job_not_found "events of an unknown job: 404" GET /train/999/events

# Cancel a running job; /denoise during training.
req POST /train --data-binary '{"dataset":"mnist-mini","epochs":10000,"model_name":"cancelled1"}'
J3=$(job_id)
wait_state "$J3" running 30
ok "a long job starts running"
all_policies 0
ok "while a job runs, the inference workers run as SCHED_OTHER, to preempt it (policies: $POLICIES)"
denoise_many 24 "$TMP/during_train"
all_200 "$TMP/during_train"
ok "concurrent /denoise requests during training all succeed"
t0=$EPOCHREALTIME
req DELETE "/train/$J3"
[ "$STATUS" = 202 ]
ok "DELETE /train/{id}: 202"
wait_state "$J3" cancelled 5
rc=$?
ms=$(ms_since "$t0")
[ $rc -eq 0 ] && [ "$ms" -lt 1500 ]
ok "the running job ends cancelled within a second ($ms ms)"
wait_until 5 all_policies 3
ok "after the job, the inference workers run as SCHED_BATCH again (policies: $POLICIES)"
[ ! -e "$TMP/tmodels/cancelled1.safetensors" ] && ! ls "$TMP/tmodels" | grep -q tmp
ok "a cancelled job writes no model"
expect_error 409 job_finished "cancelling a finished job: 409" DELETE "/train/$J3"
expect_error 404 job_not_found "cancelling an unknown job: 404" DELETE /train/999
metrics=$(curl -s "http://127.0.0.1:$PORT/metrics")
for st in queued running succeeded failed cancelled; do echo "$metrics" | grep -q "^dae_train_jobs{state=\"$st\"} [0-9]"; done &&
    echo "$metrics" | grep -q '^dae_train_jobs_finished_total{state="succeeded"} 2$' &&
    echo "$metrics" | grep -q '^dae_train_jobs_finished_total{state="cancelled"} 1$' &&
    echo "$metrics" | grep -q '^dae_train_jobs_finished_total{state="failed"} 0$' &&
    echo "$metrics" | grep -q '^dae_train_steps_total [1-9]' && echo "$metrics" | grep -q '^dae_train_epoch [1-9]' &&
    echo "$metrics" | grep -q '^dae_train_loss 0\.' && echo "$metrics" | grep -q '^dae_train_images_per_second [1-9]'
ok "training metrics: jobs by state, finished by outcome, steps, epoch, loss, images/s"

# Fine-tuning and the promotion gate. A job that starts from the active
# model and may not lose more than 100 dB is promoted; a fresh network
# barely trained is compared with the committed model and kept. The model
# active before is active again after.
was_active=$(cat "$TMP/tmodels/ACTIVE")
req POST /train --data-binary '{"dataset":"mnist-mini","epochs":1,"train_limit":256,"model_name":"tuned","base_model":"mnist","promote":{"min_gain_db":-100}}'
JT=$(job_id)
[ "$STATUS" = 202 ] && grep -q '"base_model":"mnist"' "$TMP/body" && grep -q '"activate":true' "$TMP/body" &&
    grep -q '"promote":{"against":"active","metric":"psnr","min_gain_db":-100}' "$TMP/body"
ok "POST /train with base_model and promote: 202, the gate in the canonical request"
wait_state "$JT" succeeded 60
req GET "/train/$JT"
grep -q '"promotion":{"against":"'"$was_active"'","metric":"psnr","test_images":[0-9]*,"noise":"gaussian:0.5","min_gain_db":-100,"candidate_psnr":[0-9.]*,"baseline_psnr":[0-9.]*,"gain_db":[-0-9.e]*,"decision":"promoted","reason":"PSNR ' "$TMP/body" &&
    grep -q '"activated":true' "$TMP/body"
ok "the fine-tuned model is compared with the active one on the same images, promoted and activated"
req GET /models/tuned
grep -q '"base_model":"mnist"' "$TMP/body" && grep -q '"output":"residual"' "$TMP/body" && grep -q '"default":true' "$TMP/body"
ok "GET /models/tuned: the base model's network, named in its metadata, now the default"
req POST "/models/$was_active/activate"
[ "$STATUS" = 200 ]
ok "the model active before is activated again"
req POST /train --data-binary '{"dataset":"mnist-mini","epochs":1,"train_limit":64,"learning_rate":1e-7,"model_name":"worse","promote":{"against":"mnist"}}'
JW=$(job_id)
wait_state "$JW" succeeded 60
req GET "/train/$JW"
grep -q '"decision":"kept","reason":"PSNR [0-9.]* dB against [0-9.]* dB of mnist: a gain of -[0-9.]* dB, below the bar of 0.00 dB"' "$TMP/body" &&
    grep -q '"activated":false' "$TMP/body"
ok "a job worse than the model it is compared with is kept, not activated, and says why"
req GET /models
grep -q '"active":"'"$was_active"'"' "$TMP/body"
ok "the active model stays"
[ "$(metric 'dae_train_promotions_total{decision="promoted"}')" -ge 1 ] &&
    [ "$(metric 'dae_train_promotions_total{decision="kept"}')" -ge 1 ]
ok "dae_train_promotions_total counts promotions and refusals"
req POST /train --data-binary '{"dataset":"mnist-mini","epochs":1,"train_limit":64,"model_name":"forced","activate":"force"}'
JF=$(job_id)
wait_state "$JF" succeeded 60
req GET "/train/$JF"
grep -q '"activated":true' "$TMP/body" && ! grep -q '"promotion"' "$TMP/body"
ok "activate \"force\" activates without the gate"
req POST "/models/$was_active/activate"
while IFS='|' read -r body needle; do
    req POST /train --data-binary "$body"
    if is_error 422 invalid_parameter && grep -qF -- "$needle" "$TMP/body"; then
        pass "POST /train $body: 422 naming $needle"
    else
        fail "POST /train $body: $STATUS $(head -c 300 "$TMP/body")"
    fi
done <<'EOF'
{"dataset":"mnist-mini","base_model":"nope"}|base_model \"nope\" is not a model of this server
{"dataset":"mnist-mini","base_model":"mnist","architecture":"unet"}|base_model or architecture, not both
{"dataset":"mnist-mini","activate":false,"promote":{}}|promote is the gate of an activation
{"dataset":"mnist-mini","promote":{"metric":"ssim"}}|promote.metric must be \"psnr\"
{"dataset":"mnist-mini","promote":{"min_gain":1}}|promote.min_gain is not a field of promote
EOF

if command -v promtool >/dev/null; then
    echo "$metrics" | promtool check metrics >/dev/null 2>&1
    ok "promtool check metrics with the training metrics"
fi

# Restart with a job running: failed/interrupted, no partial model, clean start.
req POST /train --data-binary '{"dataset":"mnist-mini","epochs":10000,"model_name":"killed1"}'
J4=$(job_id)
wait_state "$J4" running 30
wait_until 5 grep -q '"state":"running"' "$TMP/state/$J4.json"
{ kill -KILL "$E_PID" && wait "$E_PID"; } 2>/dev/null
sanitizer_check e
start e2 --models-dir "$TMP/tmodels" --state-dir "$TMP/state" --data-dir "$FIX" \
    --train-threads 1 --workers 1 --reload-interval 0
E2_PID=$PID
E2_PORT=$PORT
[ "$(job_field "$J4" state)" = failed ] && [ "$(job_field "$J4" error)" = "interrupted: the server stopped while the job was running" ]
ok "after a restart the job that was running is failed, reason interrupted"
[ "$(job_field "$J1" state)" = succeeded ] && [ "$(job_field "$J3" state)" = cancelled ] &&
    [ "$(job_field "$J1" request_id)" = trace-job1 ]
ok "... and the other jobs are listed again as they ended, with their request ids"
[ ! -e "$TMP/tmodels/killed1.safetensors" ] && ! ls -a "$TMP/tmodels" | grep -q tmp
ok "... the models directory holds no partial file"
req GET /readyz
[ "$STATUS" = 200 ] && grep -q '"model":"job1"' "$TMP/body"
ok "... and the server starts cleanly, on the model ACTIVE names (no --model given)"
start g --models-dir "$TMP/tmodels" --model mnist --state-dir "$TMP/state_g" --data-dir "$FIX" --reload-interval 1 \
    --workers 1
req GET /readyz
[ "$STATUS" = 200 ] && grep -q '"model":"mnist"' "$TMP/body" && grep -q 'ACTIVE names "job1", but --model mnist' "$TMP/g.err"
ok "... while a server given --model mnist starts on mnist, saying that ACTIVE names job1"
sleep 1.5
req GET /readyz
grep -q '"model":"mnist"' "$TMP/body"
ok "... and keeps it over the rescans that follow (ACTIVE has not changed)"
stop "$PID" g
[ "$RC" = 0 ]
ok "... and stops cleanly"

# A second replica sharing the models directory follows ACTIVE on SIGHUP.
start f --models-dir "$TMP/tmodels" --state-dir "$TMP/state_f" --data-dir "$FIX" --reload-interval 0 \
    --admin-token 's3cret token' --train-queue 1 --train-threads 1 --workers 1
F_PID=$PID
F_PORT=$PORT
PORT=$E2_PORT
req POST /models/mnist/activate
[ "$STATUS" = 200 ]
ok "replica 1 activates mnist"
cp "$TMP/tmodels/job1.safetensors" "$TMP/tmodels/extra.safetensors"
echo "garbage" >"$TMP/tmodels/corrupt.safetensors"
PORT=$F_PORT
kill -HUP "$F_PID"
wait_until 5 models_say '"active":"mnist"'
req GET /models
grep -q '"active":"mnist"' "$TMP/body" && grep -q '"name":"extra"' "$TMP/body" && ! grep -q '"name":"corrupt"' "$TMP/body"
ok "replica 2 follows the ACTIVE file on SIGHUP, lists a new file, skips a corrupt one"
grep -q 'corrupt.safetensors' "$TMP/f.err"
ok "... with a log line for the corrupt file"
req POST /denoise --data-binary @"$IMG/gray8.png"
[ "$(header X-Model)" = mnist ]
ok "... and answers from it"
rm -f "$TMP/tmodels/extra.safetensors" "$TMP/tmodels/corrupt.safetensors"
kill -HUP "$F_PID"
wait_until 5 models_omit '"name":"extra"'
req GET /models
! grep -q '"name":"extra"' "$TMP/body"
ok "a removed file disappears on the next rescan"

# Admin token: 401 without or with a wrong token, read routes open.
req POST /train --data-binary '{"dataset":"mnist-mini"}'
is_error 401 unauthorized && header WWW-Authenticate | grep -q '^Bearer'
ok "with --admin-token, POST /train without a token: 401 with WWW-Authenticate: Bearer"
expect_error 401 unauthorized "a wrong token: 401" POST /models/mnist/activate -H 'Authorization: Bearer wrong'
expect_error 401 unauthorized "a token's prefix: 401" POST /models/mnist/activate -H 'Authorization: Bearer s3cret toke'
expect_error 404 job_not_found "the right token passes (DELETE /train/1 of this replica: 404)" DELETE /train/1 -H 'Authorization: Bearer s3cret token'
req GET /train
[ "$STATUS" = 200 ]
ok "read routes need no token (GET /train)"
AUTH=(-H 'Authorization: Bearer s3cret token')
req POST /train "${AUTH[@]}" --data-binary '{"dataset":"mnist-mini","epochs":10000,"model_name":"q1"}'
Q1=$(job_id)
wait_state "$Q1" running 30
req POST /train "${AUTH[@]}" --data-binary '{"dataset":"mnist-mini","epochs":1,"model_name":"q2"}'
Q2=$(job_id)
[ "$STATUS" = 202 ] && [ "$(job_field "$Q2" state)" = queued ]
ok "a second job waits queued while one runs"
req POST /train "${AUTH[@]}" --data-binary '{"dataset":"mnist-mini","epochs":1,"model_name":"q3"}'
is_error 503 train_queue_full && [ -n "$(header Retry-After)" ]
ok "a full job queue (--train-queue 1): 503 train_queue_full"
req DELETE "/train/$Q2" "${AUTH[@]}"
[ "$STATUS" = 202 ] && [ "$(job_field "$Q2" state)" = cancelled ]
ok "cancelling a queued job: cancelled at once"
req DELETE "/train/$Q1" "${AUTH[@]}"
wait_state "$Q1" cancelled 5
ok "... and the running one"
req DELETE /models/job1 "${AUTH[@]}"
[ "$STATUS" = 200 ] && [ ! -e "$TMP/tmodels/job1.safetensors" ]
ok "DELETE /models/job1 (not active): 200, file removed"
req GET /models
! grep -q '"name":"job1"' "$TMP/body"
ok "... and unlisted"
stop "$F_PID" f
[ "$RC" -eq 0 ]
ok "daemon f: exit 0"
PORT=$E2_PORT
stop "$E2_PID" e2
[ "$RC" -eq 0 ]
ok "daemon e2: exit 0"

# No token: loopback only. A client that is not on loopback gets 403: it
# runs in a network namespace of our own, joined to this one by a veth
# pair with addresses of a test subnet made here (root and iproute2
# needed; otherwise the rule is covered by the unit tests only).
NS=dae$$
if [ "$(id -u)" = 0 ] && command -v ip >/dev/null && ip netns add "$NS" 2>/dev/null; then
    NETNS_MADE=$NS
    ip link add "vh$$" type veth peer name "vn$$" &&
        ip link set "vn$$" netns "$NS" &&
        ip addr add 10.213.7.1/30 dev "vh$$" && ip link set "vh$$" up &&
        ip netns exec "$NS" ip addr add 10.213.7.2/30 dev "vn$$" &&
        ip netns exec "$NS" ip link set "vn$$" up && ip netns exec "$NS" ip link set lo up
    ok "a network namespace of our own as a non-loopback client"
    BIND=10.213.7.1 start g --models-dir "$TMP/tmodels" --model mnist --state-dir "$TMP/state_g" --reload-interval 0
    code=$(ip netns exec "$NS" curl -s -m 10 -o "$TMP/body" -w '%{http_code}' -X POST \
        "http://10.213.7.1:$PORT/models/mnist/activate")
    [ "$code" = 403 ] && grep -q '"code":"forbidden"' "$TMP/body" && grep -q -- '--admin-token' "$TMP/body"
    ok "no token, a non-loopback client (10.213.7.2): 403 saying how to set a token"
    code=$(ip netns exec "$NS" curl -s -m 10 -o /dev/null -w '%{http_code}' "http://10.213.7.1:$PORT/models")
    [ "$code" = 200 ]
    ok "... while read routes answer it"
    stop "$PID" g
    [ "$RC" -eq 0 ]
    ok "daemon g: exit 0"
    ip netns del "$NS" 2>/dev/null
    ip link del "vh$$" 2>/dev/null
    NETNS_MADE=""
else
    echo "server: no network namespace (needs root and iproute2): the 403 rule is covered by the unit tests only"
fi

# ------------------------------------------------------------ model files and loss curves (issue #12)

# GET /models/{name}/weights, PUT /models/{name} and GET
# /train/{id}/loss.csv|svg, on a daemon of their own with an admin token.
# Its state directory is daemon e's: the jobs above are read back from
# their records.
mkdir -p "$TMP/lmodels"
cp "$TMP/models/mnist.safetensors" "$TMP/lmodels/mnist.safetensors"
start l --models-dir "$TMP/lmodels" --model mnist --state-dir "$TMP/state" --data-dir "$FIX" \
    --admin-token 'l t0ken' --train-threads 1 --workers 1 --reload-interval 0
L_PID=$PID
LAUTH=(-H 'Authorization: Bearer l t0ken')
sha_of() { sha256sum "$1" | cut -c1-64; }
DISK_SHA=$(sha_of "$TMP/lmodels/mnist.safetensors")

# Download.
req GET /models/mnist/weights
cp "$TMP/body" "$TMP/weights.safetensors"
[ "$STATUS" = 200 ] && [ "$(sha_of "$TMP/weights.safetensors")" = "$DISK_SHA" ] &&
    [ "$(header ETag)" = "\"sha256:$DISK_SHA\"" ] && [ "$(header Content-Type)" = application/octet-stream ] &&
    [ "$(header Content-Disposition)" = 'attachment; filename="mnist.safetensors"' ]
ok "GET /models/mnist/weights: the file's bytes, octet-stream, as an attachment, ETag the file's sha256"
req GET /models/mnist
grep -q "\"sha256\":\"$DISK_SHA\"" "$TMP/body"
ok "... the sha256 GET /models/mnist shows"
req GET /models/mnist/weights -H "If-None-Match: \"sha256:$DISK_SHA\""
[ "$STATUS" = 304 ] && [ ! -s "$TMP/body" ] && [ "$(header ETag)" = "\"sha256:$DISK_SHA\"" ]
ok "If-None-Match with that ETag: 304, no body"
req GET /models/mnist/weights -H 'If-None-Match: "sha256:0123", W/"other"'
[ "$STATUS" = 200 ] && [ "$(sha_of "$TMP/body")" = "$DISK_SHA" ]
ok "If-None-Match with other ETags: 200 with the file"
req HEAD /models/mnist/weights -I
[ "$STATUS" = 200 ] && [ "$(header Content-Length)" = "$(stat -c %s "$TMP/lmodels/mnist.safetensors")" ] &&
    [ "$(stat -c %s "$TMP/body")" -lt 1000 ]
ok "HEAD /models/mnist/weights: 200 with the Content-Length, no body (curl -I writes the head alone)"
expect_error 404 model_not_found "weights of an unknown model: 404 model_not_found" GET /models/nope/weights
expect_error 405 method_not_allowed "POST /models/{name}/weights: 405" POST /models/mnist/weights
[ "$(header Allow)" = "GET, HEAD" ]
ok "... with Allow: GET, HEAD"

# Upload.
ls -a "$TMP/lmodels" >"$TMP/listing_before"
# Expect: 100-continue, as curl sends for bodies over 1 MiB: the 401 comes
# before the body is sent. (Without it the server answers and closes while
# the body is still arriving, and a loaded machine may reset the
# connection before the client has read the answer.)
expect_error 401 unauthorized "PUT /models/{name} without the token: 401" PUT /models/copy1 \
    -H 'Expect: 100-continue' --data-binary @"$TMP/weights.safetensors"
req PUT /models/copy1 "${LAUTH[@]}" --data-binary @"$TMP/weights.safetensors"
[ "$STATUS" = 201 ] && [ "$(header Content-Type)" = application/json ] && grep -q '"name":"copy1"' "$TMP/body" &&
    grep -q "\"sha256\":\"$DISK_SHA\"" "$TMP/body" && grep -q '"default":false' "$TMP/body"
ok "PUT /models/copy1 with the downloaded file: 201 with the model, the same sha256"
[ "$(sha_of "$TMP/lmodels/copy1.safetensors")" = "$DISK_SHA" ] && ! ls -a "$TMP/lmodels" | grep -q tmp
ok "... stored as copy1.safetensors in the models directory, byte for byte, no temporary left"
req GET /models/copy1
[ "$STATUS" = 200 ] && grep -q "\"sha256\":\"$DISK_SHA\"" "$TMP/body"
ok "GET /models/copy1: the same sha256"
req GET /models/copy1/weights
[ "$STATUS" = 200 ] && [ "$(sha_of "$TMP/body")" = "$DISK_SHA" ] &&
    [ "$(header Content-Disposition)" = 'attachment; filename="copy1.safetensors"' ]
ok "GET /models/copy1/weights: the same bytes"
req POST '/denoise?model=copy1' --data-binary @"$IMG/gray8.png"
[ "$STATUS" = 200 ] && [ "$(header X-Model)" = copy1 ]
ok "/denoise?model=copy1 answers from the uploaded model"
expect_error 409 model_exists "PUT onto an existing name without replace: 409 model_exists" PUT /models/copy1 \
    "${LAUTH[@]}" --data-binary @"$TMP/weights.safetensors"
"$DAE" train --data-dir "$FIX" --dataset mnist-mini --epochs 1 --limit 64 --out "$TMP/other.safetensors" \
    >/dev/null 2>&1
OTHER_SHA=$(sha_of "$TMP/other.safetensors")
req PUT '/models/copy1?replace=true' "${LAUTH[@]}" --data-binary @"$TMP/other.safetensors"
[ "$STATUS" = 200 ] && grep -q "\"sha256\":\"$OTHER_SHA\"" "$TMP/body" &&
    [ "$(sha_of "$TMP/lmodels/copy1.safetensors")" = "$OTHER_SHA" ]
ok "PUT ?replace=true onto a model that is not active: 200, the new file in place"
req PUT '/models/mnist?replace=true' "${LAUTH[@]}" --data-binary @"$TMP/other.safetensors"
is_error 409 model_active && grep -q 'another name' "$TMP/body" && grep -q 'activate' "$TMP/body" &&
    [ "$(sha_of "$TMP/lmodels/mnist.safetensors")" = "$DISK_SHA" ]
ok "PUT onto the active model, even with replace: 409 model_active (upload under another name, activate it)"
req GET /models/mnist
grep -q "\"sha256\":\"$DISK_SHA\"" "$TMP/body" && grep -q '"default":true' "$TMP/body"
ok "... and the active model is unchanged"
# A file changed on disk is not served until the rescan has loaded it:
# the ETag always names the bytes sent.
cat "$TMP/weights.safetensors" >"$TMP/lmodels/copy1.safetensors"
req GET /models/copy1/weights
is_error 503 model_file_changed && [ -n "$(header Retry-After)" ]
ok "weights whose file was rewritten in place since it was loaded: 503 model_file_changed with Retry-After"
kill -HUP "$L_PID"
wait_until 5 models_say "\"sha256\":\"$DISK_SHA\",\"file\":\"copy1.safetensors\""
req GET /models/copy1/weights
[ "$STATUS" = 200 ] && [ "$(sha_of "$TMP/body")" = "$DISK_SHA" ] && [ "$(header ETag)" = "\"sha256:$DISK_SHA\"" ]
ok "... and after the rescan (SIGHUP) the new file, with its own ETag"
expect_error 422 invalid_parameter "PUT ?replace=yes: 422" PUT '/models/copy2?replace=yes' "${LAUTH[@]}" \
    --data-binary @"$TMP/weights.safetensors"
expect_error 422 invalid_parameter "PUT with a name that is not valid: 422" PUT /models/..x "${LAUTH[@]}" \
    --data-binary @"$TMP/weights.safetensors"

# Bodies that are not a model: the loader's sentence, and no file left.
ls -a "$TMP/lmodels" >"$TMP/listing_before"
req PUT /models/bad1 "${LAUTH[@]}" --data-binary 'not a model at all'
is_error 422 invalid_model && grep -q 'the uploaded file' "$TMP/body"
ok "PUT of bytes that are not safetensors: 422 invalid_model with the loader's sentence"
head -c 1000 "$TMP/weights.safetensors" >"$TMP/truncated.safetensors"
expect_error 422 invalid_model "PUT of a truncated file: 422 invalid_model" PUT /models/bad2 "${LAUTH[@]}" \
    --data-binary @"$TMP/truncated.safetensors"
"$PYTHON" -c '
import json, struct, sys
h = json.dumps({"foo": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
open(sys.argv[1], "wb").write(struct.pack("<Q", len(h)) + h + bytes(8))' "$TMP/wrong.safetensors"
req PUT /models/bad3 "${LAUTH[@]}" --data-binary @"$TMP/wrong.safetensors"
is_error 422 invalid_model && grep -q 'missing tensor' "$TMP/body"
ok "PUT of a safetensors file with the wrong tensors: 422 invalid_model naming the missing tensor"
req PUT /models/bad4 "${LAUTH[@]}" --data-binary @"$TMP/big.bin"
is_error 422 invalid_model
ok "PUT of an 11 MiB body: over --max-body but within the model limit, read and refused by the loader (422)"
expect_error 400 empty_body "PUT with no body: 400 empty_body" PUT /models/bad5 "${LAUTH[@]}"
req PUT /models/bad6 "${LAUTH[@]}" -H 'Content-Length: 70000000' -H 'Expect:' --data-binary ''
is_error 413 body_too_large && grep -q '67108864' "$TMP/body"
ok "PUT announcing 70 MB: 413 body_too_large from Content-Length alone (limit 64 MiB)"
ls -a "$TMP/lmodels" >"$TMP/listing_after"
cmp -s "$TMP/listing_before" "$TMP/listing_after"
ok "... and the refused uploads left no file in the models directory"
req GET /models
! grep -q '"name":"bad' "$TMP/body"
ok "... nor a listed model"

# Loss curves: a job read back from its record (epochs only), and a new
# job (every step).
req GET "/train/$J1/loss.csv"
[ "$STATUS" = 200 ] && [ "$(header Content-Type)" = 'text/csv; charset=utf-8' ] &&
    [ "$(head -1 "$TMP/body")" = step,epoch,loss,epoch_mean_loss,test_mse,test_psnr,test_ssim ] &&
    [ "$(wc -l <"$TMP/body")" = 2 ] && sed -n 2p "$TMP/body" | grep -qE '^[1-9][0-9]*,1,,0\.[0-9]+,[0-9.e-]+,[0-9.e-]+,[0-9.e-]+$'
ok "GET /train/{id}/loss.csv of a job read back from its record: the header and its epoch's row"
req POST /train "${LAUTH[@]}" --data-binary '{"dataset":"mnist-mini","epochs":2,"train_limit":256,"model_name":"lossjob","seed":3}'
JL=$(job_id)
wait_state "$JL" succeeded 60
ok "a 2-epoch job runs to succeeded"
req GET "/train/$JL/loss.csv"
steps=$(job_field "$JL" total_steps)
[ "$STATUS" = 200 ] && [ "$(head -1 "$TMP/body")" = step,epoch,loss,epoch_mean_loss,test_mse,test_psnr,test_ssim ] &&
    [ "$(tail -n +2 "$TMP/body" | wc -l)" = "$steps" ] && [ "$(awk -F, 'NR > 1 && NF != 7' "$TMP/body" | wc -l)" = 0 ] &&
    [ "$(awk -F, 'NR > 1 && $4 != ""' "$TMP/body" | wc -l)" = 2 ] &&
    [ "$(awk -F, 'NR > 1 && $4 != "" { print $1 }' "$TMP/body" | tail -1)" = "$steps" ] &&
    [ "$(tail -1 "$TMP/body" | cut -d, -f2)" = 2 ]
ok "loss.csv of a finished job: the columns of dae train --loss-csv, a row per step ($steps), the epochs' means on their last steps"
req GET "/train/$JL/loss.svg"
[ "$STATUS" = 200 ] && [ "$(header Content-Type)" = image/svg+xml ] && grep -q '<polyline' "$TMP/body" &&
    grep -q 'mean loss of each epoch' "$TMP/body" &&
    "$PYTHON" -c 'import sys, xml.dom.minidom; xml.dom.minidom.parse(sys.argv[1])' "$TMP/body"
ok "loss.svg: a well-formed SVG chart of the steps and the epochs"
req HEAD "/train/$JL/loss.svg" -I
[ "$STATUS" = 200 ] && [ "$(header Content-Type)" = image/svg+xml ] && ! grep -q '<svg' "$TMP/body"
ok "HEAD of loss.svg: 200, no body"
req POST /train "${LAUTH[@]}" --data-binary '{"dataset":"mnist-mini","epochs":10000,"model_name":"lossjob2"}'
JR=$(job_id)
req POST /train "${LAUTH[@]}" --data-binary '{"dataset":"mnist-mini","epochs":1,"model_name":"lossjob3"}'
JQ=$(job_id)
req GET "/train/$JQ/loss.csv"
[ "$STATUS" = 200 ] && [ "$(cat "$TMP/body")" = step,epoch,loss,epoch_mean_loss,test_mse,test_psnr,test_ssim ]
ok "loss.csv of a queued job: the header alone"
req GET "/train/$JQ/loss.svg"
[ "$STATUS" = 200 ] && grep -q 'no data yet' "$TMP/body"
ok "loss.svg of a queued job: a chart saying no data yet"
req DELETE "/train/$JQ" "${LAUTH[@]}"
req DELETE "/train/$JR" "${LAUTH[@]}"
wait_state "$JR" cancelled 10
expect_error 404 job_not_found "loss.csv of an unknown job: 404" GET /train/999999/loss.csv
expect_error 404 job_not_found "loss.svg of an unknown job: 404" GET /train/999999/loss.svg
expect_error 405 method_not_allowed "POST /train/{id}/loss.csv: 405" POST "/train/$JL/loss.csv"

metrics=$(curl -s "http://127.0.0.1:$PORT/metrics")
for route in model_weights train_loss_csv train_loss_svg; do
    echo "$metrics" | grep -q "^dae_http_requests_total{route=\"$route\",status=\"200\"} [1-9]"
done && echo "$metrics" | grep -q '^dae_http_requests_total{route="model",status="409"} [1-9]'
ok "/metrics counts the new routes under their own labels"
stop "$L_PID" l
[ "$RC" -eq 0 ]
ok "daemon l: exit 0"

finish
