#!/usr/bin/env bash
# http.sh - HTTP benchmark of dae-server against a Python peer, side by
# side in one run on this machine (make bench-http).
#
#   bench/http.sh [--duration S] [--soak S] [--model FILE] [--no-python]
#
# 1. wrk POSTs a 28x28 PNG (tests/fixtures/images/gray8.png) to /denoise
#    at concurrency 1, 16 and 64 for --duration seconds each (default 10),
#    against dae-server and then against bench/python_peer.py (http.server
#    + the reference PyTorch module with the same weights), both started
#    here on loopback; prints requests/s, p50 and p99 latency, non-2xx
#    answers, socket errors and each server's CPU time per request, the
#    throughput ratio, and dae-server against the project's HTTP targets
#    (concurrency 64: 25,000 requests/s, p99 under 5 ms; concurrency 1:
#    p50 under 150 us).
# 2. One 1000x1000 gray image denoised through /denoise: the median of 5.
# 3. Memory: dae-server's RSS before and after --soak seconds (default 60)
#    of wrk at concurrency 64.
# 4. Beside a training job, when DAE_DATA_DIR has mnist/: wrk at
#    concurrency 4 for --duration seconds while a POST /train job on mnist
#    runs (--train-threads: one on two cores), then the job is cancelled;
#    prints the requests' rate and latency and the job's steps meanwhile.
#
# dae-server runs with its defaults (2 workers on this 2-core machine, 1
# of them for small images, max batch 16, queue delay 0; DAE_* variables
# set here reach it) and the access log written to a file, as in
# production. wrk shares the two cores with the server it measures, as
# does the peer. Needs wrk (installed here when missing and run as root),
# curl, and for the peer Debian's python3-torch, python3-numpy and
# python3-pil. BUILD=DIR uses the server of `make BUILD=DIR` (default build),
# to measure two builds of the same daemon one after the other.
set -euo pipefail
cd "$(dirname "$0")/.."

duration=10
soak=60
model=models/mnist.safetensors
python=1
build=${BUILD:-build}
while [ $# -gt 0 ]; do
    case "$1" in
    --duration) duration=$2; shift ;;
    --soak) soak=$2; shift ;;
    --model) model=$2; shift ;;
    --no-python) python=0 ;;
    -h|--help) sed -n '/^set -euo/q; 2,$p' "$0"; exit 0 ;;
    *) echo "http.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

if ! command -v wrk >/dev/null; then
    if [ "$(id -u)" -eq 0 ]; then
        echo "http.sh: installing wrk" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y --no-install-recommends wrk >/dev/null ||
            { apt-get update -q >/dev/null && apt-get install -y --no-install-recommends wrk >/dev/null; }
    else
        echo "http.sh: needs wrk: sudo apt-get install wrk" >&2
        exit 1
    fi
fi
if [ "$python" = 1 ] && ! /usr/bin/python3 -c 'import torch, numpy, PIL' 2>/dev/null; then
    echo "http.sh: the Python peer needs python3-torch, python3-numpy and python3-pil (or pass --no-python)" >&2
    exit 1
fi
make -s BUILD="$build" "$build/dae-server"
IMAGE=$PWD/tests/fixtures/images/gray8.png

tmp=$(mktemp -d)
pids=""
cleanup() {
    for p in $pids; do kill "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT

cat >"$tmp/post.lua" <<'EOF'
local f = assert(io.open(os.getenv("BENCH_IMAGE"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "image/png"
EOF

# wait_port PORT: waits until something answers GET /healthz there.
wait_port() {
    for _ in $(seq 1 300); do
        curl -s -o /dev/null "http://127.0.0.1:$1/healthz" && return 0
        sleep 0.1
    done
    echo "http.sh: nothing answers on port $1" >&2
    exit 1
}

# ms VALUE: wrk's latency ("202.00us", "1.67ms", "1.02s") in milliseconds,
# to the microsecond (the concurrency-1 target is 150 us).
ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u);
        if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000;
        printf "%.3f", n }'
}

# cpu_ticks PID: the process's user + system CPU time so far, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# load NAME PORT CONCURRENCY SECONDS PID: one wrk run against the server
# of process PID; appends a result row "NAME c req/s p50 p99 non2xx errors
# cpu_us" to $tmp/rows, cpu_us being the server's CPU time (all its
# threads, user and system) over the requests wrk completed: what a
# request costs, steadier on a shared host than the rate.
load() {
    local name=$1 port=$2 c=$3 secs=$4 pid=$5 threads=2
    [ "$c" -lt 2 ] && threads=1
    local ticks0
    ticks0=$(cpu_ticks "$pid")
    BENCH_IMAGE=$IMAGE wrk -t"$threads" -c"$c" -d"${secs}s" --latency -s "$tmp/post.lua" \
        "http://127.0.0.1:$port/denoise" >"$tmp/wrk.txt" 2>&1 || true
    local ticks=$(($(cpu_ticks "$pid") - ticks0))
    local rps p50 p99 non2xx errors requests cpu_us
    rps=$(awk '/^Requests\/sec/ {print $2}' "$tmp/wrk.txt")
    p50=$(ms "$(awk '$1 == "50%" {print $2}' "$tmp/wrk.txt")")
    p99=$(ms "$(awk '$1 == "99%" {print $2}' "$tmp/wrk.txt")")
    non2xx=$(awk '/Non-2xx/ {print $NF}' "$tmp/wrk.txt")
    errors=$(awk '/Socket errors/ {gsub(",", ""); print $4 + $6 + $8 + $10}' "$tmp/wrk.txt")
    requests=$(awk '/requests in/ {print $1}' "$tmp/wrk.txt")
    cpu_us=$(awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" -v n="${requests:-0}" \
        'BEGIN { if (n > 0) printf "%.1f", t / hz / n * 1e6; else print "-" }')
    echo "$name $c ${rps:-0} $p50 $p99 ${non2xx:-0} ${errors:-0} $cpu_us" >>"$tmp/rows"
}

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

echo "dae-server vs a Python peer: POST /denoise, 28x28 PNG, ${duration} s per run, $(nproc) cores," \
     "$(lscpu | sed -n 's/^Model name: *//p')"
# A virtual CPU that halts when idle takes tens of microseconds to wake
# for the next request: concurrency 1's latency depends on the guest's
# halt polling (README, "HTTP benchmark"), so the run says what it was.
idle=/sys/devices/system/cpu/cpuidle/current_driver
poll=/sys/module/haltpoll/parameters/guest_halt_poll_ns
if [ -r "$idle" ]; then
    line="cpuidle driver $(cat "$idle")"
    [ -r "$poll" ] && line="$line, guest_halt_poll_ns $(cat "$poll")"
    echo "$line"
fi

# ---- dae-server
"$build/dae-server" --bind 127.0.0.1 --port 0 --model "$model" --models-dir "$tmp/none" \
    >"$tmp/access.log" 2>"$tmp/server.err" &
server=$!
pids="$pids $server"
port=""
for _ in $(seq 1 100); do
    port=$(sed -n 's|.*listening on http://127\.0\.0\.1:\([0-9]*\).*|\1|p' "$tmp/server.err")
    [ -n "$port" ] && break
    sleep 0.05
done
[ -n "$port" ] || { cat "$tmp/server.err" >&2; exit 1; }
wait_port "$port"
# The model, workers and the engine's kernels, as the start line has them.
sed -n 's|.*listening on [^ ]* (\(.*\))$|dae-server: \1|p' "$tmp/server.err"
load warmup "$port" 16 1 "$server" && : >"$tmp/rows"
for c in 1 16 64; do
    echo "wrk: dae-server, concurrency $c ..." >&2
    load dae-server "$port" "$c" "$duration" "$server"
done

# ---- the Python peer
if [ "$python" = 1 ]; then
    pport=$((port + 1))
    /usr/bin/python3 bench/python_peer.py --model "$model" --port "$pport" >"$tmp/peer.log" 2>&1 &
    peer=$!
    pids="$pids $peer"
    wait_port "$pport"
    load warmup "$pport" 16 1 "$peer"
    grep -v '^warmup' "$tmp/rows" >"$tmp/rows2"
    mv "$tmp/rows2" "$tmp/rows"
    for c in 1 16 64; do
        echo "wrk: python peer, concurrency $c ..." >&2
        load python-peer "$pport" "$c" "$duration" "$peer"
    done
    echo "python peer: $(head -1 "$tmp/peer.log")"
fi

echo
printf '%-12s %5s %12s %10s %10s %8s %8s %12s\n' server conc "requests/s" "p50 ms" "p99 ms" non-2xx errors \
    "CPU us/req"
while read -r name c rps p50 p99 non2xx errors cpu_us; do
    printf '%-12s %5s %12.0f %10s %10s %8s %8s %12s\n' "$name" "$c" "$rps" "$p50" "$p99" "$non2xx" "$errors" \
        "$cpu_us"
done <"$tmp/rows"
# The project's HTTP targets, on dae-server's rows.
awk '$1 == "dae-server" && $2 == 1 { p50 = $4 } $1 == "dae-server" && $2 == 64 { rps = $3; p99 = $5 }
    function row(what, value, ok) { printf "  %-38s %10s  %s\n", what, value, (ok ? "ok" : "MISSED") }
    END {
        print "targets, dae-server:"
        row("concurrency 64: >= 25,000 requests/s", sprintf("%.0f", rps), rps >= 25000)
        row("concurrency 64: p99 < 5 ms", p99 " ms", p99 < 5)
        row("concurrency 1: p50 < 0.150 ms", p50 " ms", p50 < 0.150)
    }' "$tmp/rows"
if [ "$python" = 1 ]; then
    echo
    for c in 1 16 64; do
        d=$(awk -v c="$c" '$1 == "dae-server" && $2 == c {print $3}' "$tmp/rows")
        p=$(awk -v c="$c" '$1 == "python-peer" && $2 == c {print $3}' "$tmp/rows")
        awk -v c="$c" -v d="$d" -v p="$p" 'BEGIN {
            if (p > 0) printf "concurrency %2d: dae-server / python peer = %.1fx requests/s\n", c, d / p }'
    done
fi

# ---- a 1000x1000 image
/usr/bin/python3 -c "
import sys; sys.path.insert(0, 'tests/fixtures/images'); import make_images as m
open('$tmp/big.png', 'wb').write(m.gray_png(1000, 1000, 8, seed=3))"
for _ in 1 2 3 4 5; do
    curl -s -o "$tmp/big_out.png" -w '%{time_total}\n' --data-binary @"$tmp/big.png" \
        "http://127.0.0.1:$port/denoise" >>"$tmp/big_times"
done
echo
echo "1000x1000 gray PNG ($(stat -c %s "$tmp/big.png") bytes, 5041 tiles) through /denoise: median" \
     "$(sort -n "$tmp/big_times" | sed -n 3p | awk '{printf "%.3f", $1}') s of 5" \
     "(all: $(sort -n "$tmp/big_times" | awk '{printf "%.3f ", $1}'))"

# ---- memory over a soak
rss0=$(rss_kb "$server")
echo "soak: wrk at concurrency 64 for $soak s ..." >&2
load soak "$port" 64 "$soak" "$server"
rss1=$(rss_kb "$server")
read -r _ _ srps _ sp99 snon2xx serr _ < <(grep '^soak' "$tmp/rows")
echo "memory: dae-server RSS ${rss0} kB before, ${rss1} kB after $soak s at concurrency 64" \
     "($(printf '%.0f' "$srps") requests/s, p99 ${sp99} ms, non-2xx ${snon2xx}, socket errors ${serr})"
echo "access log: $(wc -l <"$tmp/access.log") lines written during the run"

# ---- beside a training job
if [ -d "${DAE_DATA_DIR:-}/mnist" ]; then
    # job_step: the steps the job has made, from GET /train/ID.
    job_step() {
        curl -s "http://127.0.0.1:$port/train/$job" | /usr/bin/python3 -c '
import json, sys
j = json.load(sys.stdin)
print(max(j["epoch"] - 1, 0) * j["steps_per_epoch"] + j["step"])'
    }
    job=$(curl -s -d '{"dataset":"mnist","epochs":100,"model_name":"bench-beside-training"}' \
        "http://127.0.0.1:$port/train" | sed -n 's/^{"id":"\([0-9]*\)".*/\1/p')
    [ -n "$job" ] || { echo "http.sh: POST /train did not start a job" >&2; exit 1; }
    sleep 1.5 # past loading the data set
    echo "wrk: dae-server beside a training job, concurrency 4 ..." >&2
    steps0=$(job_step)
    load training "$port" 4 "$duration" "$server"
    steps=$(($(job_step) - steps0))
    curl -s -o /dev/null -X DELETE "http://127.0.0.1:$port/train/$job"
    read -r _ _ trps tp50 tp99 tnon2xx terr _ < <(grep '^training' "$tmp/rows")
    echo "beside a training job (mnist): concurrency 4: $(printf '%.0f' "$trps") requests/s," \
         "p50 ${tp50} ms, p99 ${tp99} ms, non-2xx ${tnon2xx}, socket errors ${terr}; the job made $steps steps" \
         "in the $duration s"
else
    echo "beside a training job: skipped (DAE_DATA_DIR has no mnist/)"
fi
