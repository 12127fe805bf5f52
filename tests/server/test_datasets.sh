#!/usr/bin/env bash
# test_datasets.sh - data sets over HTTP (PUT, GET and DELETE /datasets):
# starts dae-server on a free loopback port with its own models, data and
# state directories (the committed mnist model as the default, the
# committed mnist-mini data set), uploads a tar.gz of clean images made
# by tests/server/make_dataset_archives.py, lists it, trains on it,
# refuses to delete it while a job uses it, then deletes it; puts shapes
# of a new domain (tools/make_shapes.py), fine-tunes the committed model
# on them and sees the promotion gate activate it. Every
# malformed upload must get its 4xx JSON error and leave the data
# directory byte for byte as it was; a server killed with SIGKILL during
# an upload leaves nothing behind once restarted.
#
# usage: tests/server/test_datasets.sh path/to/dae-server
#
# Uses the shell harness tests/lib.sh (bash, curl, python3). Ends with
# "datasets: N passed, M failed"; exits 1 if any check failed.
set -u

if [ $# -ne 1 ] || [ ! -x "$1" ]; then
    echo "usage: $0 path/to/dae-server" >&2
    exit 2
fi
abs() { echo "$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"; }
SERVER=$(abs "$1")
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
source "$ROOT/tests/lib.sh" datasets
unset DAE_BIND DAE_PORT DAE_MODEL DAE_MODELS_DIR DAE_WORKERS DAE_HTTP_THREADS DAE_MAX_BATCH \
      DAE_MAX_QUEUE_DELAY_US DAE_QUEUE_SIZE DAE_QUEUE_PIXELS DAE_MAX_BODY DAE_MAX_PIXELS \
      DAE_MAX_CONNECTIONS DAE_TIMEOUT DAE_DRAIN_TIMEOUT DAE_PNG_LEVEL DAE_RETRY_AFTER DAE_ACCESS_LOG \
      DAE_ADMIN_TOKEN DAE_STATE_DIR DAE_DATA_DIR DAE_TRAIN_THREADS DAE_TRAIN_QUEUE DAE_RELOAD_INTERVAL \
      DAE_MAX_DATASET_BYTES
PID=""
CURL_PID=""
cleanup() {
    if [ -n "$CURL_PID" ]; then kill -KILL "$CURL_PID" 2>/dev/null; fi
    if [ -n "$PID" ]; then kill -KILL "$PID" 2>/dev/null; fi
}
# A failure shows the start of the last answer's body.
fail_detail() {
    if [ -s "$TMP/body" ]; then echo "    body: $(head -c 400 "$TMP/body" | tr -d '\0')"; fi
}

DATA=$TMP/data
A=$TMP/archives
mkdir -p "$DATA" "$TMP/models" "$TMP/state"
cp "$ROOT/models/mnist.safetensors" "$TMP/models/"
cp -r "$ROOT/tests/fixtures/mnist-mini" "$DATA/"
"$PYTHON" "$ROOT/tests/server/make_dataset_archives.py" "$A" || fatal "cannot make the test archives"

# start: the daemon on a free port; sets PID and PORT. Its log goes on
# in $TMP/server.err across restarts.
port_of() { sed -n 's|.*listening on http://[0-9.]*:\([0-9]*\).*|\1|p' "$TMP/server.err" | tail -1; }
exited() { ! kill -0 "$1" 2>/dev/null; }
started() { [ "$(grep -c 'listening on' "$TMP/server.err")" -gt "$1" ] || exited "$PID"; }
start() {
    touch "$TMP/server.err"
    local before
    before=$(grep -c 'listening on' "$TMP/server.err")
    "$SERVER" --bind 127.0.0.1 --port 0 --model "$TMP/models/mnist.safetensors" --models-dir "$TMP/models" \
        --data-dir "$DATA" --state-dir "$TMP/state" --train-threads 1 --access-log off "$@" \
        >>"$TMP/server.out" 2>>"$TMP/server.err" &
    PID=$!
    wait_until 10 started "$before"
    PORT=$(port_of)
    if exited "$PID" || [ -z "$PORT" ]; then
        cat "$TMP/server.err" >&2
        fatal "dae-server did not start"
    fi
}

# (A check's name holds no command substitution: its status would be the
# $? that ok reads.)
# field NAME: a top-level field of the last answer's JSON body (a number
# or a string; nothing when absent).
field() {
    "$PYTHON" -c 'import json,sys
v = json.load(open(sys.argv[1])).get(sys.argv[2])
print("" if v is None else v)' "$TMP/body" "$1" 2>/dev/null
}
# listed NAME FIELD: FIELD of data set NAME in the last answer of GET /datasets.
listed() {
    "$PYTHON" -c 'import json,sys
for d in json.load(open(sys.argv[1]))["datasets"]:
    if d["name"] == sys.argv[2]: print(d[sys.argv[3]])' "$TMP/body" "$1" "$2" 2>/dev/null
}
# is_error STATUS CODE: the last answer is that JSON error, with a message.
is_error() {
    [ "$STATUS" = "$1" ] && [ "$(header Content-Type)" = "application/json" ] &&
        grep -q "^{\"error\":{\"status\":$1,\"code\":\"$2\",\"message\":\"[^\"]" "$TMP/body"
}
# snapshot: every file of the data directory with its SHA-256, and every
# directory (an empty one left behind counts too).
snapshot() {
    (cd "$DATA" && find . -type f -exec sha256sum {} + | sort && find . | sort)
}
# digest_of NAME: the SHA-256 of the data set's four files on disk,
# concatenated train-images, train-labels, t10k-images, t10k-labels.
digest_of() {
    local d=$DATA/$1 f p out=()
    for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
        if [ -f "$d/$f" ]; then p=$d/$f; else p=$d/$f.gz; fi
        out+=("$p")
    done
    cat "${out[@]}" | sha256sum | cut -c1-64
}
put() { req PUT "/datasets/$1" --data-binary @"$A/$2" -H 'Content-Type: application/octet-stream'; }
job_state() { req GET "/train/$1" >/dev/null; field state; }
job_in() { [ "$(job_state "$1")" = "$2" ]; }

start

# ------------------------------------------------------------ upload

put shapes good.tar.gz
[ "$STATUS" = 201 ] && [ "$(field name)" = shapes ] && [ "$(field train_count)" = 102 ] &&
    [ "$(field test_count)" = 6 ] && [ "$(field rows)" = 28 ] && [ "$(field source)" = upload ]
ok "PUT /datasets/shapes (64 PNGs, 4 of them 64x48) answers 201 with 102 train + 6 test examples"
"$PYTHON" -c 'import json,sys
r = json.load(open(sys.argv[1]))["import"]
assert r["source"] == "images" and r["images"] == 64 and r["patches"] == 108, r
assert r["skipped_other"] == 1 and r["skipped_small"] == 0 and r["test_every"] == 10, r
assert r["members"] >= 65 and "every 10th" in r["test_split"], r' "$TMP/body"
ok "its import report: 64 images, 108 patches, 1 other file skipped, every 10th image held out"
[ "$(field sha256)" = "$(digest_of shapes)" ]
ok "its sha256 is that of its four files concatenated"
[ -f "$DATA/shapes/train-images-idx3-ubyte" ] && [ -f "$DATA/shapes/dataset.json" ] &&
    [ -z "$(find "$DATA" -maxdepth 1 -name '.tmp.*')" ]
ok "the data set is DATA/shapes with its sidecar, and no staging directory is left"

put zipped good.zip
[ "$STATUS" = 201 ] && [ "$(field train_count)" = 16 ] && [ "$(field test_count)" = 4 ] &&
    grep -q '"test_split":"[^"]*test' "$TMP/body"
ok "PUT a zip with test/ and train/ folders: 201, 16 + 4 (the test split by folder)"
req DELETE /datasets/zipped
[ "$STATUS" = 200 ] && [ ! -e "$DATA/zipped" ]
ok "DELETE /datasets/zipped: 200, gone"

# ------------------------------------------------------------ list and get

req GET /datasets
[ "$STATUS" = 200 ] && [ "$(listed shapes train_count)" = 102 ] && [ "$(listed shapes source)" = upload ] &&
    [ "$(listed mnist-mini train_count)" = 1024 ] && [ "$(listed mnist-mini test_count)" = 256 ] &&
    [ "$(listed mnist-mini source)" = directory ] && [ "$(listed mnist-mini sha256)" = "$(digest_of mnist-mini)" ] &&
    [ "$(listed shapes sha256)" = "$(digest_of shapes)" ]
ok "GET /datasets lists shapes (upload) and mnist-mini (directory, 1024 + 256) with their sha256"
mkdir "$DATA/junk"
echo hello >"$DATA/junk/readme"
req GET /datasets
[ "$STATUS" = 200 ] && [ -z "$(listed junk name)" ] && [ "$(listed shapes name)" = shapes ]
ok "GET /datasets leaves out a directory that is not a data set"
req GET /datasets/junk
is_error 422 invalid_dataset
ok "GET /datasets/junk: 422 invalid_dataset"
rm -r "$DATA/junk"
req GET /datasets/shapes
[ "$STATUS" = 200 ] && [ "$(field test_count)" = 6 ] && [ "$(field sha256)" = "$(digest_of shapes)" ] &&
    [[ "$(field created)" =~ ^20[0-9][0-9]-[01][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-6][0-9]Z$ ]]
ok "GET /datasets/shapes: counts, sha256 and created (UTC ISO 8601)"
req GET /datasets/nothing
is_error 404 dataset_not_found
ok "GET /datasets/nothing: 404 dataset_not_found"

# ------------------------------------------------------------ malformed uploads

before=$(snapshot)
# bad NAME FILE STATUS CODE WHAT: the upload gets that error and the data
# directory is unchanged.
bad() {
    put "$1" "$2"
    is_error "$3" "$4" && [ "$(snapshot)" = "$before" ]
    ok "$5: $3 $4, data directory unchanged"
}
bad new1 not_archive.bin 422 invalid_archive "not an archive"
bad new1 truncated.tar.gz 422 invalid_archive "a truncated gzip"
bad new1 zipslip.tar 422 invalid_dataset "a member ../x.png (zip-slip)"
grep -q 'x.png' "$TMP/body"
ok "the zip-slip error names the member"
bad new1 symlink.tar 422 invalid_dataset "a symbolic link member"
bad new1 big_png.tar 413 dataset_too_large "a PNG claiming 20000x20000"
grep -q 'huge.png' "$TMP/body"
ok "the pixel limit's error names the member"
bad new1 many.tar.gz 413 dataset_too_large "100,000 empty members"
bad new1 gzip_bomb.tar 413 dataset_too_large "a gzip bomb member (100 MiB inflated)"
bad new1 few.tar.gz 422 invalid_dataset "3 images (too few)"
bad shapes good.tar.gz 409 dataset_exists "the name of an existing data set without replace"
bad .hidden good.tar.gz 422 invalid_parameter "a bad name"
req PUT "/datasets/new1?replace=maybe" --data-binary @"$A/good.tar.gz"
is_error 422 invalid_parameter && [ "$(snapshot)" = "$before" ]
ok "replace=maybe: 422 invalid_parameter, data directory unchanged"
# An announced body over --max-dataset-bytes is refused before it is read.
"$PYTHON" - "$PORT" >"$TMP/body" <<'EOF'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
s.sendall(b"PUT /datasets/new1 HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n")
data = b""
while b"}}" not in data:
    chunk = s.recv(4096)
    if not chunk:
        break
    data += chunk
print(data.decode("latin-1").split("\r\n")[0])
print(data.decode("latin-1").split("\r\n\r\n", 1)[-1])
EOF
head -1 "$TMP/body" | grep -q ' 413 ' && grep -q '"code":"body_too_large"' "$TMP/body" && [ "$(snapshot)" = "$before" ]
ok "Content-Length 100000000 (over 64 MiB): 413 body_too_large before the body, data directory unchanged"
req PUT /datasets/new1 --data-binary ''
is_error 400 empty_body
ok "an empty body: 400 empty_body"
[ -z "$(find "$DATA" -maxdepth 1 -name new1)" ]
ok "no data set new1 appeared from any of them"

# ------------------------------------------------------------ training and delete

req POST /train -d '{"dataset":"shapes","epochs":1,"model_name":"shapes-1","eval_limit":6}'
id1=$(field id)
[ "$STATUS" = 202 ] && wait_until 60 job_in "$id1" succeeded
ok "a training job on shapes succeeds (job $id1)"
# A long job on mnist-mini runs; one on shapes waits behind it.
req POST /train -d '{"dataset":"mnist-mini","epochs":10000,"model_name":"mini-long"}'
id2=$(field id)
req POST /train -d '{"dataset":"shapes","epochs":1,"model_name":"shapes-queued"}'
id3=$(field id)
wait_until 20 job_in "$id2" running && job_in "$id3" queued
ok "job $id2 runs on mnist-mini, job $id3 waits for its turn on shapes"
req DELETE /datasets/shapes
is_error 409 dataset_in_use && grep -q "job $id3" "$TMP/body" && [ -d "$DATA/shapes" ]
ok "DELETE while queued job $id3 names it: 409 dataset_in_use naming the job, still there"
held=$(digest_of shapes)
put "shapes?replace=true" good2.tar.gz
is_error 409 dataset_in_use && [ "$(digest_of shapes)" = "$held" ]
ok "PUT ?replace=true while queued job $id3 names it: 409 dataset_in_use, unchanged"
req DELETE "/train/$id3"
wait_until 10 job_in "$id3" cancelled
req DELETE "/train/$id2"
wait_until 30 job_in "$id2" cancelled
ok "both jobs cancelled"
req POST /train -d '{"dataset":"shapes","epochs":10000,"model_name":"shapes-long"}'
id4=$(field id)
wait_until 20 job_in "$id4" running
ok "job $id4 runs on shapes"
req DELETE /datasets/shapes
is_error 409 dataset_in_use && grep -q "job $id4" "$TMP/body" && [ -d "$DATA/shapes" ]
ok "DELETE while job $id4 runs on it: 409 dataset_in_use"
put "shapes?replace=true" good2.tar.gz
is_error 409 dataset_in_use && [ "$(digest_of shapes)" = "$held" ]
ok "PUT ?replace=true while job $id4 runs on it: 409 dataset_in_use, unchanged"
req DELETE "/train/$id4"
wait_until 30 job_in "$id4" cancelled
ok "job $id4 cancelled"
put "shapes?replace=true" good2.tar.gz
[ "$STATUS" = 200 ] && [ "$(field train_count)" = 36 ] && [ "$(field test_count)" = 4 ] &&
    [ "$(field sha256)" = "$(digest_of shapes)" ]
ok "PUT ?replace=true once no job uses it: 200 with the new counts (40 images: 36 + 4)"
req DELETE /datasets/shapes
[ "$STATUS" = 200 ] && [ ! -e "$DATA/shapes" ] && [ -z "$(find "$DATA" -maxdepth 1 -name '.tmp.*')" ]
ok "DELETE /datasets/shapes once no job uses it: 200, its directory gone"
req GET /datasets/shapes
is_error 404 dataset_not_found
ok "GET /datasets/shapes after the delete: 404"
req GET /datasets
[ -z "$(listed shapes name)" ] && [ "$(listed mnist-mini name)" = mnist-mini ]
ok "GET /datasets no longer lists it"
req DELETE /datasets/shapes
is_error 404 dataset_not_found
ok "DELETE again: 404 dataset_not_found"
req POST /train -d '{"dataset":"shapes","epochs":1}'
[ "$STATUS" = 422 ]
ok "POST /train on the deleted data set: 422"

# ------------------------------------------------------------ a new domain, end to end

# Shapes the committed models have never seen (tools/make_shapes.py), put
# over HTTP; the committed MNIST model fine-tuned on them beats itself on
# their held-out images by more than 1 dB and is promoted; the gate
# compares both on the same images with the same noise.
"$PYTHON" "$ROOT/tools/make_shapes.py" "$A/domain.tar.gz" --train 400 --test 40 >/dev/null
put domain domain.tar.gz
[ "$STATUS" = 201 ] && [ "$(field train_count)" = 400 ] && [ "$(field test_count)" = 40 ]
ok "PUT /datasets/domain: 201, 400 training and 40 held-out shapes"
req POST /train -d '{"dataset":"domain","epochs":10,"model_name":"domain-tuned","base_model":"mnist","noise":"gaussian:0.5:clip:quantize","promote":{"against":"mnist","min_gain_db":1.0}}'
idd=$(field id)
[ "$STATUS" = 202 ] && wait_until 120 job_in "$idd" succeeded
ok "fine-tuning mnist on the new domain succeeds (job $idd)"
req GET "/train/$idd"
gain=$("$PYTHON" -c 'import json,sys; p=json.load(open(sys.argv[1]))["promotion"]; print("%s %.2f %s" % (p["decision"], p["gain_db"], p["test_images"]))' "$TMP/body")
[ "${gain%% *}" = promoted ] && grep -q '"activated":true' "$TMP/body"
ok "it beats the committed model on the 40 held-out shapes and is promoted (decision, gain dB, images: $gain)"
req GET /models
grep -q '"active":"domain-tuned"' "$TMP/body"
ok "the fine-tuned model is the one served now"

# ------------------------------------------------------------ kill -9

before=$(snapshot)
models_before=$(ls -a "$TMP/models" | sort)
curl -s -o /dev/null --limit-rate 256k -X PUT --data-binary @"$A/large.bin" \
    "http://127.0.0.1:$PORT/datasets/slow" &
CURL_PID=$!
# ... and a model upload at the same time.
curl -s -o /dev/null --limit-rate 64k -X PUT --data-binary @"$TMP/models/mnist.safetensors" \
    "http://127.0.0.1:$PORT/models/slowmodel" &
CURL2_PID=$!
sleep 1
kill -KILL "$PID"
wait "$PID" 2>/dev/null
wait "$CURL_PID" "$CURL2_PID" 2>/dev/null
CURL_PID=""
# What a server killed while writing a data set leaves: a staging
# directory whose pid is gone.
sleep 0 &
dead=$!
wait "$dead"
mkdir -p "$DATA/.tmp.$dead.slow.put1abcdef/slow"
cp "$DATA/mnist-mini/"* "$DATA/.tmp.$dead.slow.put1abcdef/slow/"
start
[ -z "$(find "$DATA" -maxdepth 1 -name '.tmp.*')" ] && [ "$(snapshot)" = "$before" ]
ok "after kill -9 during an upload and a restart, the data directory is as before (staging directory removed)"
grep -q "removed $DATA/.tmp.$dead.slow.put1abcdef" "$TMP/server.err"
ok "the restart logged the removal"
req GET /datasets
[ "$STATUS" = 200 ] && [ -z "$(listed slow name)" ]
ok "GET /datasets after the restart lists no slow"
[ "$(ls -a "$TMP/models" | sort)" = "$models_before" ]
ok "... and the models directory holds no part of the model that was being uploaded"

stop_cleanly "$PID" "$TMP/server.err"
PID=""
finish
