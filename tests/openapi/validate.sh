#!/usr/bin/env bash
# validate.sh - checks server/web/openapi.json, the API description
# dae-server serves at GET /openapi.json:
#
#   1. a real OpenAPI validator, @seriousme/openapi-schema-validator (npm),
#      and Ajv on what that cannot see: every $ref resolves, every schema
#      compiles, every example matches its schema (validate.mjs);
#   2. its "x-error-codes" are exactly the error codes in the server's
#      sources (server/*.c: answer_error, EDGE_ERRORS, the gate's and the
#      head parser's answers), the difference printed when they are not;
#   3. given a dae-server binary, the server started on a free loopback
#      port answers GET /openapi.json with the same bytes, as
#      application/json, and its JSON answers of every kind (a short
#      training job's included) match the schemas the document gives them.
#
# tests/test_openapi.c checks the document against the route table.
#
# usage: tests/openapi/validate.sh [path/to/dae-server]
#
# Needs node and npm (Debian's nodejs and npm), python3 and curl; uses
# the shell harness tests/lib.sh. The validator is installed into
# build/npm on first use (npm's registry must be reachable then). Without
# node or npm it prints "openapi: skipped: ..." and exits 0, unless
# DAE_REQUIRE_OPENAPI_LINT=1. Ends with "openapi: N passed, M failed";
# exits 1 if any check failed.
set -u

if [ $# -gt 1 ] || { [ $# -eq 1 ] && [ ! -x "$1" ]; }; then
    echo "usage: $0 [path/to/dae-server]" >&2
    exit 2
fi
SERVER=""
[ $# -eq 1 ] && SERVER=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT" || exit 2
DOC=server/web/openapi.json
NPM_DIR=build/npm
VALIDATOR=@seriousme/openapi-schema-validator

# skip WHY: without the tools nothing can be checked; that is a failure
# only when the check is required.
skip() {
    if [ "${DAE_REQUIRE_OPENAPI_LINT:-0}" = 1 ]; then
        echo "openapi: FAIL: $1 (DAE_REQUIRE_OPENAPI_LINT=1)" >&2
        exit 1
    fi
    echo "openapi: skipped: $1"
    exit 0
}
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    skip "node and npm are not installed (apt-get install nodejs npm)"
fi
if [ ! -f "$NPM_DIR/node_modules/$VALIDATOR/package.json" ]; then
    echo "openapi: installing $VALIDATOR into $NPM_DIR"
    mkdir -p "$NPM_DIR"
    npm install --prefix "$NPM_DIR" --no-audit --no-fund --ignore-scripts "$VALIDATOR" >"$NPM_DIR.log" 2>&1 ||
        { cat "$NPM_DIR.log" >&2; skip "npm could not install $VALIDATOR"; }
fi

source "$ROOT/tests/lib.sh" openapi
PID=""
cleanup() {
    if [ -n "$PID" ]; then kill -KILL "$PID" 2>/dev/null; fi
}

# ------------------------------------------------------------ 1. the validator

check "$DOC is valid OpenAPI: its refs resolve, its schemas compile, its examples match" \
    node tests/openapi/validate.mjs "$DOC" "$NPM_DIR/node_modules"

# ------------------------------------------------------------ 2. the error codes

# Every code string answered: the argument after an error status (400 to
# 599) of answer_error, answer_pending, head_error, fail_answer and the
# rows of EDGE_ERRORS, literals of a conditional expression included
# (`n_host == 0 ? "missing_host" : "duplicate_host"`). error_codes
# compares them with the document's list, printing the difference.
error_codes() {
    "$PYTHON" - "$DOC" server/*.c <<'EOF'
import json, re, sys
doc, sources = sys.argv[1], sys.argv[2:]
found = {}
status_then_code = re.compile(r'\b([45]\d\d),\s*((?:[^,"()]|"(?:[^"\\]|\\.)*")*)')
for path in sources:
    text = open(path, encoding="utf-8").read()
    for m in status_then_code.finditer(text):
        for code in re.findall(r'"([a-z][a-z0-9_]*)"', m.group(2)):
            found.setdefault(code, path)
listed = json.load(open(doc, encoding="utf-8")).get("x-error-codes", [])
missing = sorted(set(found) - set(listed))
extra = sorted(set(listed) - set(found))
for code in missing:
    print("%s answers error code %s, which x-error-codes of %s does not list" % (found[code], code, doc))
for code in extra:
    print("x-error-codes of %s lists %s, which no server/*.c answers" % (doc, code))
if listed != sorted(set(listed)):
    print("x-error-codes of %s is not sorted, each code once" % doc)
if missing or extra or listed != sorted(set(listed)):
    sys.exit(1)
EOF
}
check "x-error-codes lists exactly the error codes of server/*.c" error_codes

# ------------------------------------------------------------ 3. what the server serves

if [ -n "$SERVER" ]; then
    mkdir -p "$TMP/models" "$TMP/data" "$TMP/state"
    cp models/mnist.safetensors "$TMP/models/"
    cp -r tests/fixtures/mnist-mini "$TMP/data/"
    start_daemon "$SERVER" --model "$TMP/models/mnist.safetensors" --models-dir "$TMP/models" \
        --data-dir "$TMP/data" --state-dir "$TMP/state" --train-threads 1 --access-log off
    req GET /openapi.json
    [ "$STATUS" = 200 ] && [ "$(header Content-Type)" = application/json ]
    ok "GET /openapi.json answers 200 application/json"
    cmp "$TMP/body" "$DOC" >&2
    ok "GET /openapi.json is $DOC byte for byte (else: rebuild $SERVER)"

    # The server's JSON answers against their documented schemas: one of
    # each kind, a short training job (with the promotion gate) included.
    answers=()
    n=0
    # answer METHOD DOCUMENTED_PATH URL_PATH EXPECTED_STATUS [CURL ARGS...]
    answer() {
        local method=$1 documented=$2 url=$3 want=$4 got
        shift 4
        n=$((n + 1))
        got=$(curl -s -m 30 -o "$TMP/answer.$n" -w '%{http_code}' -X "$method" "$@" "http://127.0.0.1:$PORT$url")
        if [ "$got" != "$want" ]; then
            fail "$method $url answers $want, not $got: $(head -c 300 "$TMP/answer.$n")"
            return
        fi
        pass "$method $url answers $want"
        answers+=(--answer "$method" "$documented" "$got" "$TMP/answer.$n")
    }
    answer GET /healthz /healthz 200
    answer GET /readyz /readyz 200
    answer GET /models /models 200
    answer GET '/models/{name}' /models/mnist 200
    answer GET '/models/{name}' /models/nope 404
    answer GET /datasets /datasets 200
    answer GET '/datasets/{name}' /datasets/mnist-mini 200
    # The Open Inference Protocol's answers, its errors included.
    version=$(curl -s "http://127.0.0.1:$PORT/models/mnist" | sed -n 's/.*"version":"\([^"]*\)".*/\1/p')
    printf '{"id":"a1","inputs":[{"name":"input","datatype":"FP32","shape":[1,1,28,28],"data":[%s]}]}' \
        "$(printf '0.5,%.0s' $(seq 783))0.25" >"$TMP/infer.json"
    answer GET /v2 /v2 200
    answer GET /v2/health/live /v2/health/live 200
    answer GET /v2/health/ready /v2/health/ready 200
    answer GET '/v2/models/{name}' /v2/models/mnist 200
    answer GET '/v2/models/{name}/versions/{version}' "/v2/models/mnist/versions/$version" 200
    answer GET '/v2/models/{name}' /v2/models/nope 404
    answer GET '/v2/models/{name}/ready' /v2/models/mnist/ready 200
    answer POST '/v2/models/{name}/infer' /v2/models/mnist/infer 200 --data-binary "@$TMP/infer.json"
    answer POST '/v2/models/{name}/infer' /v2/models/mnist/infer 400 -d '{"inputs":[]}'
    answer POST /v2/repository/index /v2/repository/index 200 -d '{}'
    answer POST '/v2/repository/models/{name}/unload' /v2/repository/models/mnist/unload 409
    answer POST /train /train 400 -d 'not json'
    answer POST /train /train 422 -d '{"dataset":"mnist-mini","epochs":0}'
    answer POST /train /train 202 -d '{"dataset":"mnist-mini","epochs":1,"train_limit":64,"model_name":"check","activate":true}'
    job_ended() { curl -s -m 5 "http://127.0.0.1:$PORT/train/1" | grep -q '"state":"\(succeeded\|failed\|cancelled\)"'; }
    wait_until 60 job_ended
    ok "the training job ends within 60 s"
    answer GET '/train/{id}' /train/1 200
    answer DELETE '/train/{id}' /train/1 409
    answer GET /train /train 200
    answer POST '/models/{name}/activate' /models/check/activate 200
    answer POST '/models/{name}/activate' /models/mnist/activate 200
    answer DELETE '/models/{name}' /models/check 200
    answer DELETE '/models/{name}' /models/mnist 409
    answer PUT '/models/{name}' /models/junk 422 --data-binary 'not a safetensors file'
    tar -C tests/fixtures/mnist-mini -czf "$TMP/idx.tar.gz" .
    answer PUT '/datasets/{name}' /datasets/copy 201 --data-binary "@$TMP/idx.tar.gz"
    answer PUT '/datasets/{name}' /datasets/copy 409 --data-binary "@$TMP/idx.tar.gz"
    answer DELETE '/datasets/{name}' /datasets/copy 200
    check "the server's $((${#answers[@]} / 5)) JSON answers match their schemas in $DOC" \
        node tests/openapi/validate.mjs "$DOC" "$NPM_DIR/node_modules" "${answers[@]}"
    stop_cleanly "$PID" "$TMP/server.err"
    PID=""
fi

finish
