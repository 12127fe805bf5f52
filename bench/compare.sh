#!/usr/bin/env bash
# compare.sh - dae against the reference PyTorch implementation, side by
# side in one run on this machine: training seconds per epoch, test MSE
# after the same epochs, one-image latency and batched throughput.
#
#   bench/compare.sh [--full] [--threads N] [--dataset NAME]     (make bench)
#
# Short mode (default): 1 epoch over the 60,000 training images. --full: the
# notebook's 10 epochs. Needs DAE_DATA_DIR (or --data-dir DIR) and Debian's
# python3-torch for the PyTorch side.
set -euo pipefail
cd "$(dirname "$0")/.."

epochs=1
threads=$(nproc)
dataset=mnist
data_dir=${DAE_DATA_DIR:-}
while [ $# -gt 0 ]; do
    case "$1" in
    --full) epochs=10 ;;
    --threads) threads=$2; shift ;;
    --dataset) dataset=$2; shift ;;
    --data-dir) data_dir=$2; shift ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "compare.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
if [ -z "$data_dir" ] || [ ! -d "$data_dir/$dataset" ]; then
    echo "compare.sh: no data set at '$data_dir/$dataset': set DAE_DATA_DIR or pass --data-dir" >&2
    exit 1
fi
if ! /usr/bin/python3 -c 'import torch' 2>/dev/null; then
    echo "compare.sh: the PyTorch side needs Debian's python3-torch: apt-get install python3-torch" >&2
    exit 1
fi
make -s build/dae build/bench_core
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "dae vs PyTorch $(/usr/bin/python3 -c 'import torch; print(torch.__version__)'): $dataset, $epochs epoch(s) of" \
     "60,000 images, batch 64, $threads threads, $(lscpu | sed -n 's/^Model name: *//p')"

echo "training dae ..." >&2
build/dae train --data-dir "$data_dir" --dataset "$dataset" --epochs "$epochs" --threads "$threads" \
    --out "$tmp/dae.safetensors" 2> "$tmp/dae_train.log"
dae_train_s=$(sed -n 's/^wrote .*, \([0-9.]*\) s)$/\1/p' "$tmp/dae_train.log")
build/dae eval --data-dir "$data_dir" --dataset "$dataset" --model "$tmp/dae.safetensors" --json \
    --threads "$threads" > "$tmp/dae_eval.json"

echo "training PyTorch ..." >&2
/usr/bin/python3 bench/torch_train.py --data-dir "$data_dir" --dataset "$dataset" --epochs "$epochs" \
    --threads "$threads" --json > "$tmp/torch.json"

echo "inference ..." >&2
build/bench_core --threads "$threads" --forward-only --reps 5 > "$tmp/dae_fwd.txt"
/usr/bin/python3 bench/torch_reference.py --threads "$threads" --forward-only --reps 5 > "$tmp/torch_fwd.txt"

/usr/bin/python3 - "$tmp" "$epochs" "$dae_train_s" <<'PY'
import json, sys
tmp, epochs, dae_train_s = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
torch_res = json.load(open(f"{tmp}/torch.json"))
dae_eval = json.load(open(f"{tmp}/dae_eval.json"))

def forward_rows(path, key_col, batch_col, rate_col, us_col):
    rows = {}
    for line in open(path):
        f = line.split()
        if len(f) > rate_col and f[key_col] == "forward,":
            rows[int(f[batch_col])] = (float(f[rate_col]), float(f[us_col]))
    return rows

dae_fwd = forward_rows(f"{tmp}/dae_fwd.txt", 1, 3, 4, 5)
torch_fwd = forward_rows(f"{tmp}/torch_fwd.txt", 0, 2, 3, 4)
dae_epoch = dae_train_s / epochs
torch_epoch = sum(torch_res["epoch_seconds"]) / epochs
rows = [
    ("training, seconds per epoch", f"{dae_epoch:.2f}", f"{torch_epoch:.2f}", torch_epoch / dae_epoch, 4, "x faster"),
    ("forward, 1 image, us", f"{dae_fwd[1][1]:.1f}", f"{torch_fwd[1][1]:.1f}", torch_fwd[1][1] / dae_fwd[1][1], 5, "x faster"),
    ("forward, batch 64, images/s", f"{dae_fwd[64][0]:.0f}", f"{torch_fwd[64][0]:.0f}", dae_fwd[64][0] / torch_fwd[64][0], 3, "x"),
    ("forward, batch 1024, images/s", f"{dae_fwd[1024][0]:.0f}", f"{torch_fwd[1024][0]:.0f}", dae_fwd[1024][0] / torch_fwd[1024][0], 3, "x"),
]
print(f"\n{'measure':<34} {'dae':>10} {'PyTorch':>10} {'ratio':>8}  target")
for name, a, b, ratio, target, unit in rows:
    mark = "ok" if ratio >= target else "MISSED"
    print(f"{name:<34} {a:>10} {b:>10} {ratio:7.1f}{unit[0]}  >= {target}x {mark}")
for proto in ("raw", "png"):
    d, t = dae_eval[proto]["denoised"]["mse"], torch_res[proto]["model"]["mse"]
    rel = (d - t) / t
    # After one epoch both are still falling fast and two seeds differ by
    # several percent; the 3% target is for the full 10 epochs.
    mark = ("ok" if rel <= 0.03 else "MISSED") if epochs >= 10 else "(target is for --full)"
    print(f"{'test MSE after %d epoch(s), %s' % (epochs, proto):<34} {d:10.4f} {t:10.4f} {rel:+7.1%}  <= +3% {mark}")
PY
