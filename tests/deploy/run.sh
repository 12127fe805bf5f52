#!/usr/bin/env bash
# run.sh - `make test-deploy`: the container and deployment files of dae,
# each exercised for real on this machine.
#
# usage: tests/deploy/run.sh
#
# What it checks, in order (one line each, "ok" or "FAIL"):
#   make data (tools/fetch_data.sh): fails fast and clearly when offline,
#     and rejects a download with the wrong checksum, leaving no file;
#   the Dockerfiles pass `dockerfile-utils lint`; all YAML passes yamllint;
#   the alert rules and the Grafana dashboard (deploy/grafana/dae.json) use
#     only metric names the running server exports (or the /train ones);
#   Prometheus: `promtool check config`, `check rules`, `test rules` (and
#     every alert of alerts.yml has a unit test that makes it fire);
#   Kubernetes: `kubectl kustomize` renders deploy/k8s and deploy/k8s/train,
#     every object validates against the API schemas (npm kubernetes-models),
#     the validator rejects broken manifests, and the deployment policy holds
#     (tests/deploy/check_k8s_policy.cjs);
#   KServe: the ServingRuntime and InferenceService of deploy/kserve validate
#     against KServe's CRD schemas (tests/deploy/fixtures/kserve) and fit
#     together and with dae (v2 protocol and probes, /mnt/models, the
#     dae-models PVC), and the validator rejects each broken manifest of
#     tests/deploy/invalid_kserve.yaml (tests/deploy/validate_kserve.cjs;
#     it needs only node and the npm modules, see the commands below);
#   docker-compose config validates deploy/docker-compose.yml;
#   the image builds (its build stage runs the unit and CLI tests), is under
#     125 MB, and uses only settings dae-server knows;
#   the container, run as a user would (`docker run -p`, read-only root):
#     ready within 2 s, /healthz, a real /denoise of a PNG, /metrics through
#     `promtool check metrics`, the HEALTHCHECK turns healthy, it runs as
#     non-root, `dae train` in it writes a model into the models volume from a
#     read-only data volume, and SIGTERM (docker stop) gives exit code 0;
#   compose: dae and a real Prometheus server come up, Prometheus scrapes the
#     service (up == 1) and loads the alert rules, and both stop with exit 0.
#
# Run it with `make test-deploy`, which provisions first and this script
# only checks: tools/deploy_deps.sh installs Debian's docker.io,
# docker-compose, debootstrap, yamllint, prometheus (promtool and the
# server), curl, and the npm packages kubernetes-models, yaml and
# dockerfile-utils (into build/deploy/npm, or $DEPLOY_CACHE/npm), and makes
# the base image debian:bookworm-slim with debootstrap
# (tests/deploy/make_base_image.sh, cached in build/deploy/); then
# tools/dockerd_private.sh runs this script against a Docker daemon of its
# own (DOCKER_HOST). kubectl (for kustomize) must be installed already:
# Debian 12 does not package it. A missing tool is a failure naming it.
#
# No image registry is needed: the base image tarball is imported;
# Prometheus's image is Debian's prometheus binary on that base
# (tests/deploy/prometheus.Dockerfile). Builds use the host network,
# published ports the userland proxy on 127.0.0.1 only.
# Everything it creates in the daemon is removed at the end. A step that
# cannot run is a failure, never a skip. Uses the shell harness
# tests/lib.sh. Ends with "deploy: N passed, M failed"; exits 1 if any
# check failed.
set -u

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
SHOW_PASSES=1
source "$ROOT/tests/lib.sh" deploy
CACHE=${DEPLOY_CACHE:-$ROOT/build/deploy}
NODE_MODULES=$CACHE/npm/node_modules
BASE_TAR=$CACHE/debian-bookworm-slim.tar
IMAGE=dae:test
PROM_IMAGE=dae-test/prometheus:local
MAX_IMAGE_BYTES=125000000  # libarchive for data set uploads (static: tar and zip only) took it past 120 MB
START=$(date +%s)

note() { echo "     $*"; }

HTTP_PID=""
CID=""
PROJECT=daedeploy$$
COMPOSE_PORT=0
PROM_PORT=0
DOCKER=/usr/bin/docker    # Debian's client, the daemon's version

compose() {
    DAE_IMAGE=$IMAGE PROMETHEUS_IMAGE=$PROM_IMAGE DAE_HOST_PORT=127.0.0.1:$COMPOSE_PORT \
        PROMETHEUS_HOST_PORT=127.0.0.1:$PROM_PORT DAE_DATA_DIR="$ROOT/tests/fixtures" DAE_ADMIN_TOKEN= \
        docker-compose -p "$PROJECT" -f "$ROOT/deploy/docker-compose.yml" "$@"
}

# What this script made in the daemon; the daemon itself belongs to
# tools/dockerd_private.sh.
cleanup() {
    [ -n "$HTTP_PID" ] && kill "$HTTP_PID" 2>/dev/null
    if "$DOCKER" version >/dev/null 2>&1; then
        compose down -v --remove-orphans >/dev/null 2>&1
        [ -n "$CID" ] && "$DOCKER" rm -f -v "$CID" >/dev/null 2>&1
    fi
}
trap 'exit 1' INT TERM

# free_port: prints a TCP port nothing listens on.
free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 20000))
        ss -ltnH "sport = :$p" 2>/dev/null | grep -q . || { echo "$p"; return; }
    done
}

# ------------------------------------------------------------ tools

# The tools tools/deploy_deps.sh installs (command:package), its npm
# packages and base image, and the daemon of tools/dockerd_private.sh.
NEEDS="/usr/bin/docker:docker.io docker-compose:docker-compose yamllint:yamllint promtool:prometheus
prometheus:prometheus curl:curl ss:iproute2 python3:python3 node:nodejs"
missing=""
for pair in $NEEDS; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing="$missing ${pair%%:*} (package ${pair#*:}),"
done
for f in kubernetes-models/package.json yaml/package.json ajv/package.json ajv-formats/package.json .bin/dockerfile-utils; do
    [ -e "$NODE_MODULES/$f" ] || missing="$missing $NODE_MODULES/$f,"
done
[ -s "$BASE_TAR" ] || missing="$missing the base image $BASE_TAR,"
[ -z "$missing" ] || fatal "missing${missing%,}: run tools/deploy_deps.sh as root (make test-deploy does)"
"$DOCKER" version >/dev/null 2>&1 ||
    fatal "no Docker daemon at ${DOCKER_HOST:-the default socket}:" \
        "run this under tools/dockerd_private.sh (make test-deploy does)"

# ------------------------------------------------------------ make data

# Offline: the sources are loopback ports where nothing listens, so no
# traffic leaves the machine.
dead=$(free_port)
mkdir -p "$TMP/data-offline"
t0=$EPOCHREALTIME
DAE_MNIST_URLS="http://127.0.0.1:$dead" DAE_FASHION_MNIST_URLS="http://127.0.0.1:$dead" \
    tools/fetch_data.sh --dir "$TMP/data-offline" >"$TMP/fetch.out" 2>&1
rc=$?
ms=$(ms_since "$t0")
if [ "$rc" -eq 1 ] && [ "$ms" -lt 5000 ] && grep -q "unreachable" "$TMP/fetch.out" &&
    grep -q "8 file(s) missing" "$TMP/fetch.out" && [ -z "$(find "$TMP/data-offline" -mindepth 1)" ]; then
    pass "make data offline: exit 1 in $ms ms, says the host is unreachable, leaves no file"
else
    fail "make data offline (exit $rc in $ms ms; left: $(find "$TMP/data-offline" -mindepth 1 | head -3))"
    sed 's/^/    /' "$TMP/fetch.out" >&2
fi

# A source that answers with the wrong bytes: a local HTTP server.
mkdir -p "$TMP/www" "$TMP/data-bad/mnist"
for f in train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz; do
    echo "not the official $f" | gzip -n >"$TMP/www/$f"
done
echo "keep me" >"$TMP/data-bad/mnist/README"
www=$(free_port)
python3 -m http.server "$www" --bind 127.0.0.1 --directory "$TMP/www" >"$TMP/http.log" 2>&1 &
HTTP_PID=$!
wait_until 5 curl -s -o /dev/null "http://127.0.0.1:$www/"
DAE_MNIST_URLS="http://127.0.0.1:$www" tools/fetch_data.sh --dir "$TMP/data-bad" --dataset mnist >"$TMP/fetch.out" 2>&1
rc=$?
kill "$HTTP_PID" 2>/dev/null
wait "$HTTP_PID" 2>/dev/null
HTTP_PID=""
left=$(find "$TMP/data-bad" -mindepth 1 -not -path "$TMP/data-bad/mnist" -not -name README)
if [ "$rc" -eq 1 ] && [ "$(grep -c 'expected .*discarded' "$TMP/fetch.out")" -eq 4 ] && [ -z "$left" ]; then
    pass "make data rejects files whose MD5 is not the official one, leaving no file"
else
    fail "make data with wrong checksums (exit $rc; left: $left)"
    sed 's/^/    /' "$TMP/fetch.out" >&2
fi

# ------------------------------------------------------------ static checks

# dockerfile-utils lint: clean means exit 0 and nothing printed.
lint_dockerfiles() {
    local out
    for f in Dockerfile tests/deploy/prometheus.Dockerfile; do
        out=$("$NODE_MODULES/.bin/dockerfile-utils" lint "$f" 2>&1) || { echo "$f: $out"; return 1; }
        [ -z "$out" ] || { echo "$f: $out"; return 1; }
    done
}
check "dockerfile-utils lint: Dockerfile and tests/deploy/prometheus.Dockerfile clean" lint_dockerfiles

yaml_files=$(find deploy tests/deploy -name '*.yml' -o -name '*.yaml' | sort)
check "yamllint --strict: $(echo "$yaml_files" | wc -l) YAML files" \
    yamllint --strict -c tests/deploy/yamllint.yml $yaml_files

check "promtool check config deploy/prometheus/prometheus.yml" promtool check config deploy/prometheus/prometheus.yml
check "promtool check rules deploy/prometheus/alerts.yml" promtool check rules deploy/prometheus/alerts.yml

# Every alert has a test case in which it fires (a non-empty exp_alerts).
alerts_tested() {
    promtool test rules deploy/prometheus/alerts.test.yml || return 1
    node -e '
        const req = require("module").createRequire(process.argv[1] + "/x.js");
        const YAML = req("yaml"), fs = require("fs");
        const rules = YAML.parse(fs.readFileSync("deploy/prometheus/alerts.yml", "utf8"));
        const tests = YAML.parse(fs.readFileSync("deploy/prometheus/alerts.test.yml", "utf8"));
        const alerts = rules.groups.flatMap((g) => g.rules).filter((r) => r.alert).map((r) => r.alert);
        const fired = new Set(tests.tests.flatMap((t) => t.alert_rule_test || [])
            .filter((a) => (a.exp_alerts || []).length > 0).map((a) => a.alertname));
        const quiet = new Set(tests.tests.flatMap((t) => t.alert_rule_test || [])
            .filter((a) => (a.exp_alerts || []).length === 0).map((a) => a.alertname));
        const missing = alerts.filter((a) => !fired.has(a) || !quiet.has(a));
        console.log(alerts.length + " alerts: " + alerts.join(", "));
        if (missing.length) { console.log("not tested both firing and quiet: " + missing.join(", ")); process.exit(1); }
    ' "$NODE_MODULES"
}
check "promtool test rules: every alert fires in its situation and stays quiet in a healthy one" alerts_tested
note "$(grep -A0 'alerts:' "$TMP/check.log" | head -1)"

# Kubernetes.
kubectl_ok=yes
command -v kubectl >/dev/null 2>&1 || kubectl_ok=no
render() {
    [ "$kubectl_ok" = yes ] || { echo "kubectl is not installed (Debian 12 does not package it): cannot render"; return 1; }
    kubectl kustomize deploy/k8s >"$TMP/k8s.yaml" && kubectl kustomize deploy/k8s/train >"$TMP/train.yaml" || return 1
    local kinds
    kinds=$(cat "$TMP/k8s.yaml" "$TMP/train.yaml" | sed -n 's/^kind: //p' | sort -u | tr '\n' ' ')
    echo "$kinds"
    for k in Deployment Service HorizontalPodAutoscaler PodDisruptionBudget PersistentVolumeClaim Secret Job; do
        case " $kinds" in *" $k "*) ;; *) echo "no $k rendered"; return 1 ;; esac
    done
}
check "kubectl kustomize renders deploy/k8s and deploy/k8s/train (Deployment, Service, HPA, PDB, PVC, Secret, Job)" render
if [ -s "$TMP/k8s.yaml" ]; then
    check "every rendered Kubernetes object validates against the API schemas (kubernetes-models 4.5.1)" \
        node tests/deploy/validate_k8s.cjs "$NODE_MODULES" "$TMP/k8s.yaml" "$TMP/train.yaml"
    note "$(grep -c '^valid' "$TMP/check.log") objects valid"
    check "the schema validator rejects each broken manifest of tests/deploy/invalid_k8s.yaml" \
        node tests/deploy/validate_k8s.cjs "$NODE_MODULES" --expect-invalid tests/deploy/invalid_k8s.yaml
    check "the manifests meet the deployment policy (probes, limits, non-root, grace >= drain, selectors, Job)" \
        node tests/deploy/check_k8s_policy.cjs "$NODE_MODULES" "$TMP/k8s.yaml" "$TMP/train.yaml"
else
    fail "Kubernetes schema validation: nothing rendered"
    fail "Kubernetes deployment policy: nothing rendered"
fi

# KServe: needs neither a cluster nor kubectl nor Docker. To run alone,
# the two node commands below with build/deploy/npm/node_modules for
# "$NODE_MODULES" (about 5 s each).
check "the KServe runtime and InferenceService of deploy/kserve validate against KServe's CRDs and fit dae" \
    node tests/deploy/validate_kserve.cjs "$NODE_MODULES" --context deploy/k8s/pvc.yaml deploy/kserve/*.yaml
note "$(grep -c '^valid' "$TMP/check.log") KServe objects valid"
check "the KServe validator rejects each broken manifest of tests/deploy/invalid_kserve.yaml, for its stated reason" \
    node tests/deploy/validate_kserve.cjs "$NODE_MODULES" --context deploy/k8s/pvc.yaml \
    --context deploy/kserve/servingruntime.yaml --expect-invalid tests/deploy/invalid_kserve.yaml
note "$(grep -c '^rejected' "$TMP/check.log") broken KServe manifests rejected"

check "docker-compose config -q deploy/docker-compose.yml" docker-compose -f deploy/docker-compose.yml config -q
echo "deploy: static checks done ($(($(date +%s) - START)) s)"

# ------------------------------------------------------------ the image

"$DOCKER" import --change 'CMD ["bash"]' "$BASE_TAR" debian:bookworm-slim >/dev/null ||
    fatal "docker import of the base image failed"

t0=$(date +%s)
if "$DOCKER" build --network host -t "$IMAGE" . >"$TMP/build.log" 2>&1; then
    build_s=$(($(date +%s) - t0))
    bytes=$("$DOCKER" image inspect -f '{{.Size}}' "$IMAGE")
    sed 's/\x1b\[[0-9;]*m//g' "$TMP/build.log" >"$TMP/build.txt"
    tests_line=$(grep -a 'Synthesis: ' "$TMP/build.txt" | tail -1 | sed 's/^\[====\] //')
    cli_line=$(grep -a '^cli: [0-9]* passed, 0 failed' "$TMP/build.txt" | tail -1)
    if [ -n "$tests_line" ] && [ -n "$cli_line" ] && [ "$bytes" -lt "$MAX_IMAGE_BYTES" ]; then
        pass "docker build: image $((bytes / 1000000)) MB (< 125 MB) in $build_s s; its build stage ran the tests"
        note "unit: $tests_line"
        note "$cli_line"
    else
        fail "docker build: image $bytes bytes (limit $MAX_IMAGE_BYTES), tests: '$tests_line' '$cli_line'"
    fi
    image_ok=yes
else
    fail "docker build (the Dockerfile, with its tests)"
    tail -40 "$TMP/build.log" | sed 's/^/    /' >&2
    image_ok=no
fi

if [ "$image_ok" = yes ]; then
    # The settings the image and the manifests use are dae-server's own.
    settings_known() {
        "$DOCKER" run --rm "$IMAGE" --help >"$TMP/help.txt" 2>&1 || { cat "$TMP/help.txt"; return 1; }
        local used v bad=0
        used=$( ( "$DOCKER" image inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "$IMAGE" | cut -d= -f1
            grep -ho 'DAE_[A-Z][A-Z_]*' deploy/docker-compose.yml "$TMP/k8s.yaml" "$TMP/train.yaml" deploy/kserve/*.yaml ) |
            grep '^DAE_' | grep -vE '^DAE_(IMAGE|HOST_PORT)$' | sort -u)
        for v in $used; do
            grep -q " $v " "$TMP/help.txt" || { echo "$v is not in dae-server --help"; bad=1; }
        done
        echo "$(echo $used | wc -w) settings: $(echo $used)"
        return $bad
    }
    check "every DAE_* setting in the image, compose, k8s and KServe files is one dae-server --help lists" settings_known
fi

# ------------------------------------------------------------ the container

if [ "$image_ok" = yes ]; then
    PORT=$(free_port)
    t0=$EPOCHREALTIME
    CID=$("$DOCKER" run -d --read-only --tmpfs /tmp -p "127.0.0.1:$PORT:8080" "$IMAGE" 2>"$TMP/run.err")
    ready_ms=""
    ready() { [ "$(status_of /readyz)" = 200 ]; }
    if wait_until 10 ready; then ready_ms=$(ms_since "$t0"); fi
    if [ -n "$ready_ms" ] && [ "$ready_ms" -le 2000 ]; then
        pass "docker run -p 127.0.0.1:$PORT:8080 --read-only: /readyz 200 after $ready_ms ms (<= 2 s)"
    else
        fail "container ready within 2 s (ready after: ${ready_ms:-never})"
        cat "$TMP/run.err" >&2
        [ -n "$CID" ] && "$DOCKER" logs "$CID" 2>&1 | tail -20 >&2
    fi

    # The README's user path: healthz, then a real PNG through /denoise.
    serve_ok() {
        curl -sf "http://127.0.0.1:$PORT/healthz" | grep -q '"ok"' || { echo "healthz"; return 1; }
        curl -sf --data-binary @tests/fixtures/images/gray_300x200.png "http://127.0.0.1:$PORT/denoise" \
            -D "$TMP/headers" >"$TMP/clean.png" || { echo "denoise failed"; return 1; }
        # The answer is a PNG of the same size.
        local size
        size=$(png_info "$TMP/clean.png")
        [ -n "$size" ] || { echo "not a PNG"; return 1; }
        [ "${size% * *}" = "300 200" ] || { echo "size differs: $size"; return 1; }
        grep -qi '^x-model: mnist' "$TMP/headers" || { echo "no X-Model: mnist header"; return 1; }
        curl -sf "http://127.0.0.1:$PORT/models" | grep -q '"fashion-mnist"' || { echo "fashion-mnist not served"; return 1; }
    }
    check "/healthz 200, /denoise of a 300x200 PNG answers a 300x200 PNG from the built-in mnist model" serve_ok

    metrics_ok() {
        curl -sf "http://127.0.0.1:$PORT/metrics" >"$TMP/metrics.txt" || return 1
        grep -q '^dae_http_requests_total{route="denoise",status="200"} 1$' "$TMP/metrics.txt" || { echo "no denoise count"; return 1; }
        promtool check metrics <"$TMP/metrics.txt"
    }
    check "/metrics from the container passes promtool check metrics" metrics_ok

    # The alert rules and the dashboard use only metrics the server
    # exports, or the training metrics of the /train server still to come.
    TRAIN_METRICS="dae_train_jobs dae_train_jobs_finished_total dae_train_steps_total dae_train_epoch
        dae_train_loss dae_train_images_per_second dae_model_switches_total"
    names_known() {
        [ -s "$TMP/metrics.txt" ] || { echo "no /metrics sample"; return 1; }
        local exported used n bad=0 pending=""
        exported=$(awk '$1 == "#" && $2 == "TYPE" { print $3; if ($4 == "histogram") { print $3 "_bucket"; print $3 "_sum"; print $3 "_count" } }' \
            "$TMP/metrics.txt")
        used=$( (grep -E '^\s+(expr:|[a-z(])' deploy/prometheus/alerts.yml; grep '"expr"' deploy/grafana/dae.json) |
            grep -oE '\b(dae|process)_[a-z_]+' | sort -u)
        node -e 'JSON.parse(require("fs").readFileSync("deploy/grafana/dae.json", "utf8"))' || { echo "dae.json is not JSON"; return 1; }
        for n in $used; do
            if echo "$exported" | grep -qx "$n"; then continue; fi
            case " $(echo $TRAIN_METRICS) " in *" $n "*) pending="$pending $n"; continue ;; esac
            echo "$n: not exported by dae-server"
            bad=1
        done
        echo "$(echo $used | wc -w) metric names used; training metrics not exported yet:${pending:- none}"
        return $bad
    }
    check "every metric in alerts.yml and the Grafana dashboard is one the server exports (or a /train metric)" names_known
    note "$(tail -1 "$TMP/check.log")"

    # health_settled: the HEALTHCHECK has said healthy or unhealthy (in $health).
    health_settled() {
        health=$("$DOCKER" inspect -f '{{.State.Health.Status}}' "$CID")
        [ "$health" = healthy ] || [ "$health" = unhealthy ]
    }
    healthy() {
        local health=""
        wait_until 30 health_settled && [ "$health" = healthy ] && return 0
        echo "health: $health"
        "$DOCKER" inspect -f '{{json .State.Health}}' "$CID"
        return 1
    }
    check "the image's HEALTHCHECK (bash /dev/tcp, no curl) reports healthy" healthy

    nonroot() {
        local uid
        uid=$("$DOCKER" exec "$CID" id -u) || return 1
        echo "uid $uid"
        [ "$uid" = 10001 ] && ! "$DOCKER" exec "$CID" touch /usr/local/bin/x 2>/dev/null
    }
    check "the service runs as uid 10001 on a read-only root" nonroot

    # What the Kubernetes Job does: dae train from a read-only data volume
    # into the models volume (the committed mnist-mini subset, 256 images).
    train_ok() {
        "$DOCKER" volume create "$PROJECT-models" >/dev/null || return 1
        "$DOCKER" run --rm --read-only --tmpfs /tmp -v "$PROJECT-models:/var/lib/dae/models" \
            -v "$ROOT/tests/fixtures:/var/lib/dae/data:ro" "$IMAGE" \
            dae train --dataset mnist-mini --limit 256 --epochs 1 --threads 1 \
            --out /var/lib/dae/models/trained.safetensors || return 1
        "$DOCKER" run --rm -v "$PROJECT-models:/var/lib/dae/models:ro" "$IMAGE" \
            dae info /var/lib/dae/models/trained.safetensors | head -5
        local rc=${PIPESTATUS[0]}
        "$DOCKER" volume rm "$PROJECT-models" >/dev/null
        return "$rc"
    }
    check "dae train in the image (as the Kubernetes Job runs it) writes a loadable model into the models volume" train_ok

    stop_ok() {
        local t0 rc ms
        t0=$EPOCHREALTIME
        "$DOCKER" stop -t 30 "$CID" >/dev/null || return 1
        ms=$(ms_since "$t0")
        rc=$("$DOCKER" inspect -f '{{.State.ExitCode}}' "$CID")
        "$DOCKER" logs "$CID" 2>&1 | tail -2
        echo "exit $rc after $ms ms"
        [ "$rc" = 0 ] && "$DOCKER" logs "$CID" 2>&1 | grep -q draining
    }
    check "docker stop (SIGTERM): the server drains and exits 0" stop_ok
    note "$(tail -1 "$TMP/check.log")"
    "$DOCKER" rm -v "$CID" >/dev/null 2>&1
else
    for c in "container ready within 2 s" "/healthz and /denoise" "/metrics" "metric names" "HEALTHCHECK" "non-root" \
        "dae train in the image" "SIGTERM exit 0"; do
        fail "$c: no image"
    done
fi

# ------------------------------------------------------------ compose + Prometheus

if [ "$image_ok" = yes ]; then
    mkdir -p "$TMP/promctx"
    cp "$(command -v prometheus)" "$TMP/promctx/prometheus"
    if ! "$DOCKER" build -q -t "$PROM_IMAGE" -f tests/deploy/prometheus.Dockerfile "$TMP/promctx" >"$TMP/prom-build.log" 2>&1; then
        cat "$TMP/prom-build.log" >&2
        fail "build the local Prometheus image"
    fi
    COMPOSE_PORT=$(free_port)
    PROM_PORT=$(free_port)
    compose_up() {
        compose up -d --no-build || return 1
        # docker-compose v1 exits 0 only when the containers started, but
        # check the service the way a user would.
        local up=""
        scraped() {
            up=$(curl -s "http://127.0.0.1:$PROM_PORT/api/v1/query?query=up%7Bjob%3D%22dae%22%7D")
            echo "$up" | grep -q '"value":\[[0-9.]*,"1"\]'
        }
        wait_until 60 scraped
        echo "$up"
        echo "$up" | grep -q '"value":\[[0-9.]*,"1"\]' || { compose logs --tail 20; return 1; }
        curl -sf --data-binary @tests/fixtures/images/gray8.png -o /dev/null "http://127.0.0.1:$COMPOSE_PORT/denoise"
    }
    t0=$EPOCHREALTIME
    check "docker-compose up: Prometheus scrapes dae (up == 1) and dae answers /denoise" compose_up
    note "scraped $(ms_since "$t0") ms after docker-compose up"

    # Rules are evaluated every 15 s: wait for every one to have been.
    evaluated() {
        curl -sf "http://127.0.0.1:$PROM_PORT/api/v1/rules" >"$TMP/rules.json" && ! grep -q '"health":"unknown"' "$TMP/rules.json"
    }
    rules_loaded() {
        wait_until 25 evaluated
        node -e '
            const d = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
            const rules = d.data.groups.flatMap((g) => g.rules);
            const bad = rules.filter((r) => r.health !== "ok");
            console.log(rules.length + " rules: " + rules.map((r) => r.name).join(", "));
            process.exit(rules.length >= 5 && bad.length === 0 ? 0 : 1);
        ' "$TMP/rules.json"
    }
    check "Prometheus in compose loaded every alert rule, all healthy" rules_loaded

    compose_stop() {
        compose stop -t 30 || return 1
        local c rc bad=0
        for c in $(compose ps -q); do
            rc=$("$DOCKER" inspect -f '{{.Name}} {{.State.ExitCode}}' "$c")
            echo "$rc"
            [ "${rc##* }" = 0 ] || bad=1
        done
        return $bad
    }
    check "docker-compose stop: dae and Prometheus exit 0" compose_stop
    compose down -v --remove-orphans >/dev/null 2>&1
else
    fail "docker-compose up: no image"
    fail "Prometheus rules in compose: no image"
    fail "docker-compose stop: no image"
fi

echo "deploy: done in $(($(date +%s) - START)) s"
finish
