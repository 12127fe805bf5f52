#!/usr/bin/env bash
# v2_infer.sh - images per second through the Open Inference Protocol's
# POST /v2/models/{model}/infer with binary FP32 tensors, side by side with
# POST /denoise on the same images and with ONNX Runtime's own session on
# the same network (the second part of make bench-http).
#
#   bench/v2_infer.sh [--duration S] [--model FILE] [--no-ort]
#
# bench/v2_bodies.py writes the same N noisy 28x28 MNIST test images
# (N = 1, 64, 1024) as PNGs and as one binary infer request per N: a JSON
# header (Inference-Header-Content-Length) asking for a binary answer
# (binary_data_output), then N*784 little-endian floats (binary_data_size).
# For each N, wrk runs for --duration seconds (default 5) each:
# - /v2 infer: that one request over and over, on 16 connections for N=1,
#   4 for N=64 and 2 for N=1024 (16, 256 and 2048 images in flight);
# - /denoise: the same N images cycled, one PNG a request, on 16
#   connections (its best load here: 64 measure the same);
# and the table gives images/s (requests/s x N for /v2), wrk's p50
# latency, and dae-server's CPU over the run (utime + stime, 100% = one
# core). ORT: onnxruntime-node's session (bench/ort_bench.mjs, as many
# threads as the server has workers, the native synchronous run, median
# of 5) on the network exported by tools/export_onnx.py, at batch N;
# skipped, with a line saying why, without Debian's python3-torch (the
# export), node or onnxruntime-node (installed into build/npm on first
# use, as bench/compare.sh does).
#
# dae-server runs with its defaults (2 workers on this 2-core machine, max
# batch 16) and --max-body 16M, which admits the N=1024 body (3.2 MB); wrk
# and node share the cores with it. BUILD=DIR measures the server of
# `make BUILD=DIR` (default build). About a minute in all.
set -euo pipefail
cd "$(dirname "$0")/.."

duration=5
model=models/mnist.safetensors
ort=1
build=${BUILD:-build}
npm_dir=build/npm
batches="1 64 1024"
while [ $# -gt 0 ]; do
    case "$1" in
    --duration) duration=$2; shift ;;
    --model) model=$2; shift ;;
    --no-ort) ort=0 ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) echo "v2_infer.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
for tool in wrk curl python3; do
    command -v "$tool" >/dev/null || { echo "v2_infer.sh: needs $tool (bench/http.sh installs wrk)" >&2; exit 1; }
done
make -s BUILD="$build" "$build/dae-server"

tmp=$(mktemp -d)
server=""
cleanup() {
    if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; fi
    rm -rf "$tmp"
}
trap cleanup EXIT

python3 bench/v2_bodies.py "$tmp" --count 1024 --batches "${batches// /,}"

# The binary infer request of one N, as it is: wrk sends the same bytes
# each time, so the load generator does no work per request.
cat >"$tmp/v2.lua" <<'EOF'
local f = assert(io.open(os.getenv("V2_BODY"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/octet-stream"
wrk.headers["Inference-Header-Content-Length"] = os.getenv("V2_HLEN")
EOF
# The N PNGs in turn: each wrk thread formats its requests once.
cat >"$tmp/denoise.lua" <<'EOF'
local requests, last = {}, 0
function init(args)
    local dir, count = os.getenv("PNG_DIR"), tonumber(os.getenv("PNG_COUNT"))
    for i = 0, count - 1 do
        local f = assert(io.open(string.format("%s/%04d.png", dir, i), "rb"))
        requests[i + 1] = wrk.format("POST", "/denoise", {["Content-Type"] = "image/png"}, f:read("*a"))
        f:close()
    end
end
function request()
    last = last % #requests + 1
    return requests[last]
end
EOF

# ms VALUE: wrk's latency ("202.00us", "1.67ms", "1.02s") in milliseconds.
ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u);
        if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000;
        printf "%.2f", n }'
}

# cpu_ticks: dae-server's user + system CPU so far, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$server/stat"; }

# load NAME N CONCURRENCY SECONDS PATH SCRIPT: one wrk run of SCRIPT (with
# its environment set by the caller); appends "NAME N c images/s p50
# cpu% non2xx errors" to $tmp/rows, images/s being requests/s x N for
# /v2 and requests/s for /denoise (one image a request).
load() {
    local name=$1 n=$2 c=$3 secs=$4 path=$5 script=$6 threads=2 per=$2
    [ "$c" -lt 2 ] && threads=1
    [ "$name" = denoise ] && per=1
    local t0 t1
    t0=$(cpu_ticks)
    wrk -t"$threads" -c"$c" -d"${secs}s" --latency -s "$script" "http://127.0.0.1:$port$path" >"$tmp/wrk.txt" 2>&1 || true
    t1=$(cpu_ticks)
    local rps p50 non2xx errors
    rps=$(awk '/^Requests\/sec/ {print $2}' "$tmp/wrk.txt")
    p50=$(ms "$(awk '$1 == "50%" {print $2}' "$tmp/wrk.txt")")
    non2xx=$(awk '/Non-2xx/ {print $NF}' "$tmp/wrk.txt")
    errors=$(awk '/Socket errors/ {gsub(",", ""); print $4 + $6 + $8 + $10}' "$tmp/wrk.txt")
    awk -v name="$name" -v n="$n" -v c="$c" -v rps="${rps:-0}" -v per="$per" -v p50="$p50" \
        -v ticks=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" -v secs="$secs" -v non2xx="${non2xx:-0}" -v err="${errors:-0}" \
        'BEGIN { printf "%s %d %d %.0f %s %.0f %d %d\n", name, n, c, rps * per, p50, 100 * ticks / hz / secs, non2xx, err }' \
        >>"$tmp/rows"
}

# v2_conc N: the connections of the /v2 run of N.
v2_conc() { case "$1" in 1) echo 16 ;; 64) echo 4 ;; *) echo 2 ;; esac; }

# ---- dae-server
"$build/dae-server" --bind 127.0.0.1 --port 0 --model "$model" --models-dir "$tmp/none" --max-body 16M \
    >"$tmp/access.log" 2>"$tmp/server.err" &
server=$!
port=""
for _ in $(seq 1 100); do
    port=$(sed -n 's|.*listening on http://127\.0\.0\.1:\([0-9]*\).*|\1|p' "$tmp/server.err")
    [ -n "$port" ] && break
    sleep 0.05
done
[ -n "$port" ] || { cat "$tmp/server.err" >&2; exit 1; }
# The model as the server names it, from its start line.
name=$(sed -n 's|.*(default model \([^ ]*\) .*|\1|p' "$tmp/server.err")
workers=$(sed -n 's|.*, \([0-9]*\) workers,.*|\1|p' "$tmp/server.err")
infer=/v2/models/$name/infer
load_start=$(cut -d' ' -f1-3 /proc/loadavg)

# One request of each N first: a benchmark of error answers measures nothing.
for n in $batches; do
    size=$(curl -s -o "$tmp/answer" -w '%{http_code} %{size_download}' --data-binary @"$tmp/v2-$n.body" \
        -H 'Content-Type: application/octet-stream' -H "Inference-Header-Content-Length: $(cat "$tmp/v2-$n.hlen")" \
        "http://127.0.0.1:$port$infer")
    want=$((n * 784 * 4))
    if [ "${size%% *}" != 200 ] || [ "${size#* }" -lt "$want" ]; then
        echo "v2_infer.sh: POST $infer of N=$n answered $size bytes (want 200 and > $want):" >&2
        head -c 300 "$tmp/answer" >&2; echo >&2
        exit 1
    fi
done

echo "wrk: warm-up ..." >&2
V2_BODY=$tmp/v2-64.body V2_HLEN=$(cat "$tmp/v2-64.hlen") load warmup 64 4 1 "$infer" "$tmp/v2.lua"
PNG_DIR=$tmp/png PNG_COUNT=64 load warmup 64 16 1 /denoise "$tmp/denoise.lua"
: >"$tmp/rows"
for n in $batches; do
    echo "wrk: /v2 infer and /denoise, N=$n ..." >&2
    V2_BODY=$tmp/v2-$n.body V2_HLEN=$(cat "$tmp/v2-$n.hlen") load v2 "$n" "$(v2_conc "$n")" "$duration" "$infer" "$tmp/v2.lua"
    PNG_DIR=$tmp/png PNG_COUNT=$n load denoise "$n" 16 "$duration" /denoise "$tmp/denoise.lua"
done
rss_peak=$(awk '/^VmHWM/ {print $2}' "/proc/$server/status")

# ---- ONNX Runtime's session, the server idle
ort_skip=""
if [ "$ort" = 0 ]; then
    ort_skip="--no-ort"
elif ! /usr/bin/python3 -c 'import torch' 2>/dev/null; then
    ort_skip="the ONNX export needs Debian's python3-torch: apt-get install python3-torch"
else
    source bench/ort_install.sh
    ort_skip=$(ort_install "$npm_dir" || true)
fi
if [ -z "$ort_skip" ]; then
    echo "ONNX Runtime: export and session ..." >&2
    if ! /usr/bin/python3 tools/export_onnx.py "$model" "$tmp/model.onnx" >&2; then
        ort_skip="tools/export_onnx.py failed (above)"
    elif ! node bench/ort_bench.mjs "$tmp/model.onnx" --label ort --threads "$workers" --reps 5 \
            --batch "${batches// /,}" --npm-dir "$npm_dir" >"$tmp/ort.txt"; then
        ort_skip="bench/ort_bench.mjs failed (above)"
    fi
fi

echo
echo "v2 infer (binary FP32), model $name, $workers worker threads, ${duration} s per run, $(nproc) cores," \
     "load average $load_start at the start"
[ -n "$ort_skip" ] && echo "ORT: skipped ($ort_skip)"
[ -s "$tmp/ort.txt" ] && echo "ORT: $(head -1 "$tmp/ort.txt")"
printf '%-5s %4s %20s %8s %6s   %4s %18s %8s %6s   %17s\n' N conc "dae /v2 infer img/s" "p50 ms" CPU% \
    conc "dae /denoise img/s" "p50 ms" CPU% "ORT session img/s"
for n in $batches; do
    read -r _ _ vc vimg vp50 vcpu _ _ < <(awk -v n="$n" '$1 == "v2" && $2 == n' "$tmp/rows")
    read -r _ _ dc dimg dp50 dcpu _ _ < <(awk -v n="$n" '$1 == "denoise" && $2 == n' "$tmp/rows")
    oimg=$(awk -v n="$n" '$3 == "forward," && $5 == n {print $6}' "$tmp/ort.txt" 2>/dev/null || true)
    printf '%-5s %4s %20s %8s %6s   %4s %18s %8s %6s   %17s\n' "$n" "$vc" "$vimg" "$vp50" "$vcpu" \
        "$dc" "$dimg" "$dp50" "$dcpu" "${oimg:--}"
done
awk '$7 + $8 > 0 { printf "%s N=%s: %d non-2xx answers, %d socket errors\n", $1, $2, $7, $8; bad = 1 }
     END { if (!bad) print "no non-2xx answers, no socket errors" }' "$tmp/rows"
echo "dae-server peak RSS ${rss_peak} kB; its stderr beyond the start line:" \
     "$(($(wc -l <"$tmp/server.err") - 1)) lines"
sed -n '2,6p' "$tmp/server.err"
