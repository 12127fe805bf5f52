#!/usr/bin/env bash
# run.sh - end-to-end tests of the dae command-line tool.
#
# usage: tests/cli/run.sh path/to/dae
#
# Drives every subcommand on the committed mini data set
# (tests/fixtures/mnist-mini: 1024 training and 256 test images): trains a
# tiny model, inspects, evaluates, resumes, denoises and adds noise to
# images of several sizes and kinds, draws a grid; checks that every usage
# error exits 2 and every bad file exits 1 with one line on stderr naming
# the file, leaving nothing at the output path. Uses the shell harness
# tests/lib.sh (coreutils, python3; rsvg-convert, when present, renders
# the SVG). Ends with "cli: N passed, M failed"; exits 1 if any check
# failed.
set -u

if [ $# -ne 1 ] || [ ! -x "$1" ]; then
    echo "usage: $0 path/to/dae" >&2
    exit 2
fi
DAE=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
source "$ROOT/tests/lib.sh" cli
FIX=$ROOT/tests/fixtures
OUT=$TMP/out          # outputs of failing commands go here: must stay empty
mkdir -p "$OUT" "$TMP/empty"
unset DAE_DATA_DIR DAE_MODEL

# A failure shows the first lines of the last command's stderr.
fail_detail() {
    if [ -s "$TMP/stderr" ]; then sed 's/^/    stderr: /' "$TMP/stderr" | head -5; fi
}

# run CMD...: runs dae with CMD, keeping stdout, stderr and the exit code.
# A sanitizer report is a failure of its own.
run() {
    "$DAE" "$@" >"$TMP/stdout" 2>"$TMP/stderr"
    rc=$?
    sanitizer_scan "$TMP/stderr" "dae $*"
}

# good NAME CMD...: the command succeeds.
good() {
    local name=$1
    shift
    run "$@"
    if [ "$rc" -eq 0 ]; then pass "$name"; else fail "$name: exit $rc, want 0"; fi
}

# usage NAME CMD...: the command is a usage error: exit 2, one stderr line.
usage() {
    local name=$1
    shift
    run "$@"
    local lines
    lines=$(wc -l <"$TMP/stderr")
    if [ "$rc" -ne 2 ]; then
        fail "$name: exit $rc, want 2"
    elif [ "$lines" -ne 1 ]; then
        fail "$name: $lines lines on stderr, want 1"
    else
        pass "$name"
    fi
}

# bad NAME NEEDLE OUTPUT CMD...: the command fails: exit 1, one stderr line
# containing NEEDLE (the file at fault), nothing at OUTPUT, and no
# temporary files left in $OUT.
bad() {
    local name=$1 needle=$2 output=$3
    shift 3
    run "$@"
    local lines
    lines=$(wc -l <"$TMP/stderr")
    if [ "$rc" -ne 1 ]; then
        fail "$name: exit $rc, want 1"
    elif [ "$lines" -ne 1 ]; then
        fail "$name: $lines lines on stderr, want 1"
    elif ! grep -qF -- "$needle" "$TMP/stderr"; then
        fail "$name: stderr does not name \"$needle\""
    elif [ -e "$output" ]; then
        fail "$name: $output was written"
    elif [ -n "$(ls -A "$OUT")" ]; then
        fail "$name: left $(ls -A "$OUT" | tr '\n' ' ')in $OUT"
    else
        pass "$name"
    fi
}

# run_io IN OUT CMD...: runs dae with CMD, standard input from IN and
# standard output to OUT, keeping stderr and the exit code.
run_io() {
    local in=$1 out=$2
    shift 2
    "$DAE" "$@" <"$in" >"$out" 2>"$TMP/stderr"
    rc=$?
    sanitizer_scan "$TMP/stderr" "dae $*"
}

# on_tty in|out CMD...: runs CMD with a terminal as its standard input or
# output, keeping stderr and the exit code (in rc), and how many bytes CMD
# wrote to the terminal in $TMP/tty.
on_tty() {
    "$PYTHON" -c '
import os, pty, subprocess, sys
master, slave = pty.openpty()
streams = {"stdout": slave} if sys.argv[1] == "out" else {"stdin": slave, "stdout": subprocess.DEVNULL}
rc = subprocess.run(sys.argv[2:], timeout=60, **streams).returncode
os.close(slave)
os.set_blocking(master, False)
n = 0
try:
    while True:
        chunk = os.read(master, 65536)
        if not chunk:
            break
        n += len(chunk)
except OSError:
    pass
print(n)
sys.exit(rc)
' "$@" >"$TMP/tty" 2>"$TMP/stderr"
    rc=$?
    sanitizer_scan "$TMP/stderr" "$*"
}

# flip_bit FILE OFFSET: inverts the lowest bit of the byte at OFFSET.
flip_bit() {
    "$PYTHON" -c '
import sys
with open(sys.argv[1], "r+b") as f:
    f.seek(int(sys.argv[2]))
    b = f.read(1)[0]
    f.seek(int(sys.argv[2]))
    f.write(bytes([b ^ 1]))
' "$1" "$2"
}

# pnm FILE MAGIC W H: a binary PGM (P5) or PPM (P6) of constant gray 96.
pnm() {
    local file=$1 magic=$2 w=$3 h=$4 ch=1
    [ "$magic" = P6 ] && ch=3
    {
        printf '%s\n%d %d\n255\n' "$magic" "$w" "$h"
        head -c $((w * h * ch)) /dev/zero | tr '\0' '\140'
    } >"$file"
}

# tga FILE W H: an uncompressed 32-bit TGA (RGBA, top-left origin).
tga() {
    local file=$1 w=$2 h=$3
    {
        printf '\0\0\2\0\0\0\0\0\0\0\0\0'
        printf "\\$(printf %03o $((w & 255)))\\$(printf %03o $((w >> 8)))"
        printf "\\$(printf %03o $((h & 255)))\\$(printf %03o $((h >> 8)))"
        printf '\040\050'
        head -c $((w * h * 4)) /dev/zero | tr '\0' '\200'
    } >"$file"
}

D=(--data-dir "$FIX" --dataset mnist-mini)
pnm "$TMP/g1.pgm" P5 1 1
pnm "$TMP/g2729.pgm" P5 27 29
pnm "$TMP/g28.pgm" P5 28 28
pnm "$TMP/c300.ppm" P6 300 200
tga "$TMP/rgba.tga" 30 20

# ------------------------------------------------------------ help and usage

good "dae --help" --help
check "dae --help lists every subcommand" \
    bash -c 'for c in train eval denoise noise grid info; do grep -q "^  $c " "$1" || exit 1; done' _ "$TMP/stdout"
# The commands of the table in cli/main.c, so a new row is checked too.
COMMANDS=$(sed -n 's/^ *{"\([a-z]*\)", cmd_[a-z_]*, .*/\1/p' "$ROOT/cli/main.c")
check "the command table of cli/main.c is found" test "$(wc -w <<<"$COMMANDS")" -ge 7
check "dae --help lists every command of the table" \
    bash -c 'for c in $2; do grep -q "^  $c " "$1" || exit 1; done' _ "$TMP/stdout" "$COMMANDS"
check "dae --help lists --version and --help" \
    bash -c 'grep -q "^  --version " "$1" && grep -q "^  --help " "$1"' _ "$TMP/stdout"
check "dae --help names DAE_MODELS_DIR" grep -q "DAE_MODELS_DIR" "$TMP/stdout"
good "dae --version" --version
check "dae --version prints a version" grep -qE '^dae [0-9]+\.[0-9]+' "$TMP/stdout"
for c in train eval denoise noise grid info; do
    good "dae $c --help" "$c" --help
    check "dae $c --help shows usage" grep -q "^usage: dae $c" "$TMP/stdout"
done
for c in $COMMANDS; do
    good "dae help $c" help "$c"
    check "dae help $c shows usage" grep -q "^usage: dae $c" "$TMP/stdout"
done

usage "no command" 
check "the missing command message lists every command of the table" \
    bash -c 'for c in $2; do grep -qw "$c" "$1" || exit 1; done' _ "$TMP/stderr" "$COMMANDS"
usage "unknown command" frobnicate
usage "unknown top-level flag" --frobnicate
usage "unknown flag" train --bogus 1
usage "epochs out of range" train "${D[@]}" --out "$OUT/m" --epochs 0
usage "epochs not a number" train "${D[@]}" --out "$OUT/m" --epochs ten
usage "missing flag value" train "${D[@]}" --out "$OUT/m" --epochs
usage "boolean flag with a value" train "${D[@]}" --out "$OUT/m" --eval=yes
usage "flag given twice" train "${D[@]}" --out "$OUT/m" --seed 1 --seed 2
usage "train without --dataset" train --data-dir "$FIX" --out "$OUT/m"
usage "train without --out" train "${D[@]}"
usage "train bad noise spec" train "${D[@]}" --out "$OUT/m" --noise gaussian:-1
usage "train negative learning rate" train "${D[@]}" --out "$OUT/m" --lr -0.1
usage "train --resume with --architecture" train "${D[@]}" --out "$OUT/m" --resume a --architecture b
usage "train stray argument" train "${D[@]}" --out "$OUT/m" extra
usage "train without a data directory" train --dataset mnist-mini --out "$OUT/m"
check "the data directory error says how to set one" grep -q "DAE_DATA_DIR" "$TMP/stderr"
# Two outputs naming one file: the one written last replaced the other
# (the weights lost to the loss CSV, and "wrote m" said).
usage "train --out and --loss-csv naming one file" train "${D[@]}" --out "$OUT/m" --loss-csv "$OUT/./m" --limit 64
check "... names both flags" grep -q -- "--out and --loss-csv name the same file" "$TMP/stderr"
usage "train --checkpoint and --out naming one file" train "${D[@]}" --out "$OUT/../out/m" --checkpoint "$OUT/m" \
    --limit 64
usage "eval without --model" eval "${D[@]}"
usage "eval bad --limit" eval "${D[@]}" --model x --limit -3
usage "denoise with one argument" denoise in.png
usage "denoise with three arguments" denoise a b c
usage "denoise bad --threads" denoise a b --threads 0
usage "noise negative seed" noise a b --seed -1
usage "noise bad spec" noise a b --noise pink:1
usage "grid count 0" grid "${D[@]}" --out "$OUT/g.png" --count 0
usage "grid without --out" grid "${D[@]}"
usage "info without a file" info
usage "info with two files" info a b
bad "a --help after -- is an argument, not a flag" "--help: No such file" /dev/null/x info -- --help
check "usage errors wrote nothing" test -z "$(ls -A "$OUT")"

# ------------------------------------------------------------ training

M1=$TMP/m1.safetensors
CK=$TMP/ck1.safetensors
good "train one tiny epoch" train --data-dir="$FIX" --dataset=mnist-mini --epochs 1 --limit 256 --batch-size 32 \
    --seed 1 --threads 2 --eval --eval-limit 64 --out "$M1" --checkpoint "$CK" \
    --loss-csv "$TMP/loss.csv" --loss-svg "$TMP/loss.svg"
check "train wrote the model and checkpoint" test -s "$M1" -a -s "$CK"
check "train printed one line for the epoch" grep -q "^epoch 1/1 .*test mse" "$TMP/stderr"
check "loss CSV has a header and 8 steps" test "$(wc -l <"$TMP/loss.csv")" -eq 9
check "loss CSV closes the epoch with its mean and test metrics" \
    grep -qE '^8,1,[0-9.e-]+,[0-9.e-]+,[0-9.e-]+,[0-9.e-]+,[0-9.e-]+$' "$TMP/loss.csv"
check "loss SVG is an SVG document" bash -c 'head -1 "$1" | grep -q "<?xml" && grep -q "<svg" "$1" && tail -1 "$1" | grep -q "</svg>"' _ "$TMP/loss.svg"
if command -v rsvg-convert >/dev/null; then
    check "loss SVG renders" rsvg-convert -o "$TMP/loss.png" "$TMP/loss.svg"
fi

good "info on weights" info "$M1"
check "info shows layers and shapes" grep -q "encoder.0 .*conv2d .*1x28x28 .*16x14x14" "$TMP/stdout"
check "info shows the parameter count" grep -q "^parameters  210369" "$TMP/stdout"
for key in dataset epochs batch_size learning_rate weight_decay noise seed train_images created dae_version \
    test_mse test_psnr test_ssim architecture; do
    check "info shows metadata $key" grep -q "^  $key " "$TMP/stdout"
done
check "metadata dataset is mnist-mini" grep -q "^  dataset  *mnist-mini$" "$TMP/stdout"
check "metadata created is UTC ISO 8601" grep -qE "^  created  *[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$" "$TMP/stdout"
good "info on a checkpoint" info "$CK"
check "info names the checkpoint and its Adam step" \
    bash -c 'grep -q "training checkpoint" "$1" && grep -q "^  adam_step  *8$" "$1"' _ "$TMP/stdout"

# Resuming: one epoch + one resumed epoch = two epochs straight.
M2=$TMP/m2.safetensors
M2R=$TMP/m2r.safetensors
good "train two epochs straight" train "${D[@]}" --epochs 2 --limit 256 --batch-size 32 --seed 1 --threads 2 --out "$M2"
good "resume the second epoch from the checkpoint" train "${D[@]}" --epochs 2 --limit 256 --batch-size 32 --seed 1 \
    --threads 2 --resume "$CK" --out "$M2R"
check "resume says where it starts" grep -q "resuming .* after epoch 1" "$TMP/stderr"
DAE_DATA_DIR=$FIX good "eval the straight model" eval --dataset mnist-mini --model "$M2" --json --limit 32
grep -v '"model"' "$TMP/stdout" >"$TMP/m2.json"
DAE_DATA_DIR=$FIX good "eval the resumed model" eval --dataset mnist-mini --model "$M2R" --json --limit 32
grep -v '"model"' "$TMP/stdout" >"$TMP/m2r.json"
check "resumed training equals straight training" cmp -s "$TMP/m2.json" "$TMP/m2r.json"

# Another architecture, from a JSON spec.
cat >"$TMP/small.json" <<'EOF'
{"input": [1, 28, 28],
 "enc": [{"type": "conv2d", "in_channels": 1, "out_channels": 4, "kernel_size": 3, "padding": 1}, {"type": "relu"}],
 "dec": [{"type": "conv2d", "in_channels": 4, "out_channels": 1, "kernel_size": 3, "padding": 1}, {"type": "sigmoid"}]}
EOF
good "train another architecture" train "${D[@]}" --architecture "$TMP/small.json" --epochs 1 --limit 64 \
    --out "$TMP/small.safetensors"
good "info on another architecture" info "$TMP/small.safetensors"
check "info shows its layers" grep -q "^  dec.0 .*conv2d .*4x28x28 .*1x28x28" "$TMP/stdout"
check "info shows its parameter count" grep -q "^parameters  77 " "$TMP/stdout"
good "denoise with another architecture" denoise "$TMP/g2729.pgm" "$TMP/small.png" --model "$TMP/small.safetensors"

# A built-in architecture by name: the U-Net, a graph with skips and a
# residual output.
good "train the built-in unet" train "${D[@]}" --architecture unet --epochs 1 --limit 64 --out "$TMP/unet.safetensors"
good "info on the unet" info "$TMP/unet.safetensors"
check "info shows its residual output" grep -q "^output      residual" "$TMP/stdout"
check "info shows what a concat joins" grep -q "^  out.0 .*concat .*of d1.2, input" "$TMP/stdout"
check "info shows its parameter count" grep -q "^parameters  219610 " "$TMP/stdout"
good "denoise with the unet" denoise "$TMP/g2729.pgm" "$TMP/unet.png" --model "$TMP/unet.safetensors"
# the best kernels this CPU has, as the engine picks them
BEST_ISA=sse2
grep -qw avx2 /proc/cpuinfo && grep -qw fma /proc/cpuinfo && BEST_ISA=avx2
grep -qw avx512f /proc/cpuinfo && BEST_ISA=avx512
DAE_ISA=avx9 good "DAE_ISA naming no instruction set: the command runs" \
    denoise "$TMP/g2729.pgm" "$TMP/unet-isa.png" --model "$TMP/unet.safetensors"
check "... warning that DAE_ISA names none, and that it runs the CPU's best kernels ($BEST_ISA)" \
    grep -qx "dae: warning: DAE_ISA=avx9 names no instruction set of the engine (sse2, avx2, avx512): using $BEST_ISA" \
    "$TMP/stderr"
DAE_ISA= run denoise "$TMP/g2729.pgm" "$TMP/unet-best.png" --model "$TMP/unet.safetensors"
check "... and runs the best kernels the CPU has: the same pixels as without DAE_ISA" \
    cmp -s "$TMP/unet-best.png" "$TMP/unet-isa.png"
bad "train an unknown built-in architecture" "resnet" "$OUT/m" \
    train "${D[@]}" --architecture resnet --out "$OUT/m" --epochs 1

# Fine-tuning: a base model gives the network and the starting weights.
good "fine-tune the unet" train "${D[@]}" --base-model "$TMP/unet.safetensors" --epochs 1 --limit 64 \
    --out "$TMP/tuned.safetensors"
good "info on the fine-tuned model" info "$TMP/tuned.safetensors"
check "it names its base model" grep -q "^  base_model *unet$" "$TMP/stdout"
check "it has the base model's network" grep -q "^parameters  219610 " "$TMP/stdout"
usage "base-model with architecture" train "${D[@]}" --out "$OUT/m" --base-model "$TMP/unet.safetensors" \
    --architecture unet
bad "fine-tune from a missing model" "nothere.safetensors" "$OUT/m" \
    train "${D[@]}" --base-model "$TMP/nothere.safetensors" --out "$OUT/m" --epochs 1

# Bring your own images: a folder or an archive of clean images is a data
# set (io/dataset_import.h); larger images are cut into the network's tiles.
mkdir -p "$TMP/own/shapes"
for i in $(seq 1 16); do cp "$FIX/images/gray8.png" "$TMP/own/shapes/small$i.png"; done
for i in 1 2; do cp "$FIX/images/rgb_300x200_adam7.png" "$TMP/own/shapes/big$i.png"; done
tar -C "$TMP/own" -czf "$TMP/own.tar.gz" shapes
good "train on a tar.gz of images" train --dataset "$TMP/own.tar.gz" --base-model "$TMP/unet.safetensors" --epochs 1 \
    --out "$TMP/own.safetensors"
check "it names the archive and counts the tiles of the big images" grep -q "^training on .*/own.tar.gz: 603 images" "$TMP/stderr"
good "train on a folder of images" train --dataset "$TMP/own/shapes" --epochs 1 --out "$TMP/own2.safetensors"
good "eval on an archive of images" eval --dataset "$TMP/own.tar.gz" --model "$TMP/own.safetensors" --sweep 0.5
check "eval names the archive and its held-out images" grep -q "^dataset  .*/own.tar.gz, [1-9][0-9]* test images" "$TMP/stdout"
printf 'not an archive' >"$TMP/junk.tar"
bad "train on something that is not an archive" "junk.tar" "$OUT/m" train --dataset "$TMP/junk.tar" --out "$OUT/m" --epochs 1

# ------------------------------------------------------------ eval

good "eval text" eval "${D[@]}" --model "$M1" --limit 64
check "eval table has raw and png rows for noisy and denoised" \
    test "$(grep -cE '^(raw|png) +gaussian:0.5(:clip:quantize)? +(noisy|denoised) +[0-9.]+ +[0-9.]+ +[0-9.]+$' "$TMP/stdout")" -eq 4
good "eval json" eval "${D[@]}" --model "$CK" --limit 64 --json --threads 1 --noise gaussian:0.3
check "eval json parses with the expected fields" "$PYTHON" -c '
import json, sys
d = json.load(open(sys.argv[1]))
assert d["test_images"] == 64 and d["seed"] == 20260101 and d["noise"] == "gaussian:0.3", d
assert d["png"]["noise"] == "gaussian:0.3:clip:quantize", d["png"]
for p in ("raw", "png"):
    for k in ("noisy", "denoised"):
        q = d[p][k]
        assert 0 < q["mse"] < 1 and 0 < q["psnr"] < 100 and -1 <= q["ssim"] <= 1, (p, k, q)
' "$TMP/stdout"

# The noise sweep: png protocol at several sigmas, for several models.
SWEEP=0.05,0.1,0.2,0.3,0.5,0.7
good "eval sweep of two models" eval "${D[@]}" --model "$M1,$M2" --sweep "$SWEEP" --limit 64 --threads 2 \
    --sweep-svg "$TMP/sweep.svg"
check "sweep table has a row per sigma: sigma and a PSNR, SSIM pair for the input and each model" \
    test "$(awk '$1 ~ /^[0-9.]+$/ && NF == 7' "$TMP/stdout" | wc -l)" -eq 6
check "sweep table names its columns" grep -qE '^ +noisy input +m1 +m2$' "$TMP/stdout"
sweep_psnr=$(awk '$1 == "0.5" { print $6 }' "$TMP/stdout")
good "eval at the sweep's sigma 0.5" eval "${D[@]}" --model "$M2" --noise gaussian:0.5 --limit 64 --threads 1
eval_psnr=$(awk '$1 == "png" && $3 == "denoised" { print $5 }' "$TMP/stdout")
[ -n "$sweep_psnr" ] && [ "$sweep_psnr" = "$eval_psnr" ]
ok "sweep PSNR at 0.5 equals eval's png row ($sweep_psnr dB, $eval_psnr dB)"
check "sweep SVG is XML with a polyline per model and one for the noisy input" "$PYTHON" -c '
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
lines = root.findall("{http://www.w3.org/2000/svg}polyline")
assert len(lines) == 3, len(lines)
assert all(len(l.get("points").split()) == 6 for l in lines)
assert lines[2].get("stroke-dasharray"), "the noisy line is not dashed"
' "$TMP/sweep.svg"
if command -v rsvg-convert >/dev/null; then
    check "sweep SVG renders" rsvg-convert -o "$TMP/sweep.png" "$TMP/sweep.svg"
fi
good "eval sweep json" eval "${D[@]}" --model "$M1,$M2" --sweep 0.1,0.5 --limit 64 --json
check "sweep json parses with a row per sigma and a result per model" "$PYTHON" -c '
import json, sys
d = json.load(open(sys.argv[1]))
assert d["test_images"] == 64 and d["protocol"] == "png", d
assert [m["name"] for m in d["models"]] == ["m1", "m2"], d["models"]
assert [r["sigma"] for r in d["sweep"]] == [0.1, 0.5], d["sweep"]
for r in d["sweep"]:
    assert r["noise"] == "gaussian:%g:clip:quantize" % r["sigma"], r
    assert len(r["denoised"]) == 2, r
    for q in [r["noisy"]] + r["denoised"]:
        assert 0 < q["psnr"] < 100 and -1 <= q["ssim"] <= 1, q
assert d["sweep"][0]["noisy"]["psnr"] > d["sweep"][1]["noisy"]["psnr"], d["sweep"]
' "$TMP/stdout"
usage "sweep with a word" eval "${D[@]}" --model "$M1" --sweep 0.1,abc --sweep-svg "$OUT/s.svg"
check "the sweep error names the bad item" grep -q '"abc"' "$TMP/stderr"
usage "sweep with an empty item" eval "${D[@]}" --model "$M1" --sweep 0.1,,0.2
check "the sweep error names the empty item" grep -q "item 2 is empty" "$TMP/stderr"
usage "sweep at sigma 0" eval "${D[@]}" --model "$M1" --sweep 0,0.1
usage "sweep with an exponent" eval "${D[@]}" --model "$M1" --sweep 1e-1
usage "sweep over sigma 10" eval "${D[@]}" --model "$M1" --sweep 0.5,10.5
usage "sweep of 17 sigmas" eval "${D[@]}" --model "$M1" --sweep 0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1,1.1,1.2,1.3,1.4,1.5,1.6,1.7
check "the sweep error says at most 16" grep -q "more than 16 sigmas" "$TMP/stderr"
usage "sweep not increasing" eval "${D[@]}" --model "$M1" --sweep 0.5,0.1
usage "sweep with --noise" eval "${D[@]}" --model "$M1" --sweep 0.5 --noise gaussian:0.5
usage "sweep-svg without --sweep" eval "${D[@]}" --model "$M1" --sweep-svg "$OUT/s.svg"
usage "two models without --sweep" eval "${D[@]}" --model "$M1,$M2"
usage "sweep with an empty model" eval "${D[@]}" --model "$M1," --sweep 0.5
check "sweep usage errors wrote nothing" test -z "$(ls -A "$OUT")"
# An output naming an input's file would replace it: a plot, a PNG or new
# weights where the model was.
cp "$M1" "$TMP/keep.safetensors"
usage "eval --sweep-svg naming the model" eval "${D[@]}" --model "$M1" --sweep 0.5 --sweep-svg "$TMP/./m1.safetensors"
usage "denoise OUT naming the model" denoise "$FIX/images/gray8.png" "$M1" --model "$M1"
usage "grid --out naming the model" grid "${D[@]}" --model "$M1" --out "$M1"
usage "train --out naming --base-model" train "${D[@]}" --base-model "$M1" --out "$M1" --limit 64
check "... and the model is the same bytes" cmp -s "$M1" "$TMP/keep.safetensors"
bad "sweep with a missing model" "nothere.safetensors" "$OUT/s.svg" \
    eval "${D[@]}" --model "$M1,$TMP/nothere.safetensors" --sweep 0.5 --sweep-svg "$OUT/s.svg"

# ------------------------------------------------------------ images

for f in g1.pgm g2729.pgm g28.pgm c300.ppm rgba.tga; do
    good "noise $f" noise "$TMP/$f" "$TMP/$f.noisy.png" --noise gaussian:0.2 --seed 7
done
check "noise keeps 1x1 gray" test "$(png_info "$TMP/g1.pgm.noisy.png")" = "1 1 8 0"
check "noise keeps 27x29 gray" test "$(png_info "$TMP/g2729.pgm.noisy.png")" = "27 29 8 0"
check "noise keeps 300x200 RGB" test "$(png_info "$TMP/c300.ppm.noisy.png")" = "300 200 8 2"
check "noise keeps RGBA" test "$(png_info "$TMP/rgba.tga.noisy.png")" = "30 20 8 6"
good "noise again with the same seed" noise "$TMP/c300.ppm" "$TMP/again.png" --noise gaussian:0.2 --seed 7
check "same seed, same bytes" cmp -s "$TMP/c300.ppm.noisy.png" "$TMP/again.png"
good "noise with another seed" noise "$TMP/c300.ppm" "$TMP/other.png" --noise gaussian:0.2 --seed 8
check "another seed, other bytes" bash -c '! cmp -s "$1" "$2"' _ "$TMP/c300.ppm.noisy.png" "$TMP/other.png"
good "salt-and-pepper noise" noise "$TMP/g28.pgm" "$TMP/sp.png" --noise salt-pepper:0.2

for f in g1.pgm g2729.pgm g28.pgm c300.ppm rgba.tga; do
    good "denoise $f" denoise "$TMP/$f.noisy.png" "$TMP/$f.clean.png" --model "$M1" --threads 2
    check "denoise keeps the size and kind of $f" \
        test "$(png_info "$TMP/$f.clean.png")" = "$(png_info "$TMP/$f.noisy.png")"
done
good "denoise a PNM directly" denoise "$TMP/g2729.pgm" "$TMP/direct.png" --model "$M1" --threads 1
check "denoise of a PNM gives a PNG" test "$(png_info "$TMP/direct.png")" = "27 29 8 0"
good "denoise with a checkpoint as the model" denoise "$TMP/g28.pgm" "$TMP/ck.png" --model "$CK"
DAE_MODEL=$M1 good "denoise with DAE_MODEL" denoise "$TMP/g28.pgm" "$TMP/env.png"
good "denoise may overwrite its input" denoise "$TMP/again.png" "$TMP/again.png" --model "$M1"

# "-" is standard input as an input and standard output as an output; no
# file named "-" appears, and nothing but the PNG goes to standard output.
mkdir -p "$TMP/stdio"
cd "$TMP/stdio" || exit 1
run_io "$TMP/c300.ppm" "$TMP/stdio.noisy.png" noise - - --noise gaussian:0.2 --seed 7
[ "$rc" -eq 0 ] && cmp -s "$TMP/stdio.noisy.png" "$TMP/c300.ppm.noisy.png"
ok "noise - - gives the bytes of noise IN OUT"
cat "$TMP/c300.ppm.noisy.png" | "$DAE" denoise - - --model "$M1" --threads 2 >"$TMP/stdio.clean.png" 2>"$TMP/stderr"
rc=$?
sanitizer_scan "$TMP/stderr" "dae denoise - -"
[ "$rc" -eq 0 ] && [ ! -s "$TMP/stderr" ] && cmp -s "$TMP/stdio.clean.png" "$TMP/c300.ppm.clean.png"
ok "cat noisy.png | dae denoise - - > clean.png gives the bytes of dae denoise noisy.png clean.png"
run_io "$TMP/rgba.tga.noisy.png" /dev/null denoise - "$TMP/stdio.in.png" --model "$M1" --threads 2
[ "$rc" -eq 0 ] && cmp -s "$TMP/stdio.in.png" "$TMP/rgba.tga.clean.png"
ok "denoise - OUT reads standard input"
run_io /dev/null "$TMP/stdio.out.png" denoise "$TMP/rgba.tga.noisy.png" - --model "$M1" --threads 2
[ "$rc" -eq 0 ] && cmp -s "$TMP/stdio.out.png" "$TMP/rgba.tga.clean.png"
ok "denoise IN - writes standard output"
printf 'just some text\n' >"$TMP/stdio.txt"
run_io "$TMP/stdio.txt" "$TMP/stdio.bad.png" denoise - - --model "$M1"
[ "$rc" -eq 1 ] && grep -q "^dae denoise: standard input: not a PNG" "$TMP/stderr" && [ ! -s "$TMP/stdio.bad.png" ]
ok "denoise of a text on standard input: exit 1, names standard input, writes nothing"
check "no file named - was written" test ! -e "$TMP/stdio/-"
# An output that is a FIFO (or a device: /dev/null, /dev/stdout) is written
# as it is: the atomic write's rename replaced the node with a file (as
# root, "dae denoise in.png /dev/full" left a PNG file where /dev/full was).
mkfifo "$TMP/stdio/fifo"
timeout 20 cat "$TMP/stdio/fifo" >"$TMP/stdio/fifo.png" &
reader=$!
run denoise "$TMP/rgba.tga.noisy.png" "$TMP/stdio/fifo" --model "$M1" --threads 2
[ "$rc" -ne 0 ] && : >"$TMP/stdio/fifo" # a reader still waiting gets its end
wait "$reader"
[ "$rc" -eq 0 ] && test -p "$TMP/stdio/fifo" && cmp -s "$TMP/stdio/fifo.png" "$TMP/rgba.tga.clean.png"
ok "denoise IN FIFO writes into the FIFO, which stays one"
run denoise <(cat "$TMP/rgba.tga.noisy.png") "$TMP/stdio/substituted.png" --model "$M1" --threads 2
[ "$rc" -eq 0 ] && cmp -s "$TMP/stdio/substituted.png" "$TMP/rgba.tga.clean.png"
ok "denoise <(cat noisy.png) OUT reads the pipe bash gives"
mkfifo "$TMP/stdio/lonely"
rc=$(timeout 10 "$DAE" info "$TMP/stdio/lonely" >/dev/null 2>&1; echo $?)
check "info on a FIFO nobody writes: an error, not a wait (exit $rc)" test "$rc" -eq 1
on_tty out "$DAE" denoise "$TMP/g28.pgm" - --model "$M1"
[ "$rc" -eq 1 ] && [ "$(cat "$TMP/tty")" = 0 ] && grep -q "terminal" "$TMP/stderr" && [ "$(wc -l <"$TMP/stderr")" -eq 1 ]
ok "denoise refuses to write a PNG to a terminal"
on_tty in "$DAE" noise - "$TMP/stdio.tty.png"
[ "$rc" -eq 1 ] && grep -q "standard input is a terminal" "$TMP/stderr" && [ ! -e "$TMP/stdio.tty.png" ]
ok "noise refuses to wait for an image typed at a terminal"
bad "forward refuses - as its output" "only image outputs go to standard output" "$TMP/stdio/-" \
    forward "$TMP/x.safetensors" - --model "$M1"
cd - >/dev/null || exit 1

# The default model is found from any directory: $DAE_MODELS_DIR, ./models,
# then beside the executable (a checkout's build/ or build/NAME/, or an
# installed PREFIX/bin with PREFIX/share/dae/models).
good "denoise with the checkout's model" denoise "$TMP/g2729.pgm" "$TMP/checkout.png" \
    --model "$ROOT/models/mnist.safetensors"
case $DAE in
"$ROOT"/build/*)
    cd "$TMP/empty" || exit 1
    good "denoise outside the checkout without --model" denoise "$TMP/g2729.pgm" "$TMP/outside.png"
    cd - >/dev/null || exit 1
    check "it used the checkout's models/mnist.safetensors" cmp -s "$TMP/outside.png" "$TMP/checkout.png"
    ;;
esac
good "denoise with m1" denoise "$TMP/g2729.pgm" "$TMP/m1.png" --model "$M1"
mkdir -p "$TMP/prefix/bin" "$TMP/prefix/share/dae/models" "$TMP/models-dir"
cp "$DAE" "$TMP/prefix/bin/dae"
cp "$M1" "$TMP/prefix/share/dae/models/mnist.safetensors"
cp "$M1" "$TMP/models-dir/mnist.safetensors"
cp "$M1" "$TMP/models-dir/tiny.safetensors"
cd "$TMP/empty" || exit 1
"$TMP/prefix/bin/dae" denoise "$TMP/g2729.pgm" "$TMP/installed.png" 2>"$TMP/stderr"
rc=$?
sanitizer_scan "$TMP/stderr" "installed dae denoise"
[ "$rc" -eq 0 ] && cmp -s "$TMP/installed.png" "$TMP/m1.png"
ok "an installed dae finds PREFIX/share/dae/models/mnist.safetensors"
DAE_MODELS_DIR=$TMP/models-dir good "denoise with DAE_MODELS_DIR" denoise "$TMP/g2729.pgm" "$TMP/models-dir.png"
check "DAE_MODELS_DIR comes first" cmp -s "$TMP/models-dir.png" "$TMP/m1.png"
DAE_MODELS_DIR=$TMP/models-dir DAE_MODEL=tiny good "denoise with DAE_MODEL a name" denoise "$TMP/g2729.pgm" \
    "$TMP/by-name.png"
check "DAE_MODEL=tiny is tiny.safetensors of the models directory" cmp -s "$TMP/by-name.png" "$TMP/m1.png"
DAE_MODELS_DIR=$TMP/models-dir DAE_MODEL=nosuch bad "DAE_MODEL names no model" "nosuch.safetensors" "$OUT/r.png" \
    denoise "$TMP/g2729.pgm" "$OUT/r.png"
cd - >/dev/null || exit 1

good "grid" grid "${D[@]}" --model "$M1" --count 5 --scale 2 --out "$TMP/grid.png"
check "grid is 5 images of 56 px with 2 px gaps, 3 rows" test "$(png_info "$TMP/grid.png")" = "292 176 8 0"
good "grid with defaults" grid "${D[@]}" --model "$M1" --out "$TMP/grid10.png" --noise salt-pepper:0.1 --seed 3
check "default grid is 10 images at scale 4" test "$(png_info "$TMP/grid10.png")" = "1164 352 8 0"
cd "$TMP/stdio" || exit 1
run_io /dev/null "$TMP/stdio.grid.png" grid "${D[@]}" --model "$M1" --count 5 --scale 2 --out -
[ "$rc" -eq 0 ] && cmp -s "$TMP/stdio.grid.png" "$TMP/grid.png"
ok "grid --out - writes standard output"
check "grid --out - wrote no file named -" test ! -e "$TMP/stdio/-"
cd - >/dev/null || exit 1

# ------------------------------------------------------------ bad files

printf 'just some text\n' >"$TMP/notes.txt"
: >"$TMP/empty.png"
head -c 60 "$TMP/g28.pgm.noisy.png" >"$TMP/truncated.png"
cp "$TMP/g28.pgm.noisy.png" "$TMP/crc.png"
flip_bit "$TMP/crc.png" 45
printf 'P5\n20000 20000\n255\n' >"$TMP/bomb.pgm"
head -c 200 "$M1" >"$TMP/short.safetensors"
printf '{"input":[1,28,28],"layers":[{"type":"conv9"}]}' >"$TMP/arch.json"
mkdir -p "$TMP/data/broken"
for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
    cp "$FIX/mnist-mini/$f.gz" "$TMP/data/broken/"
done
gzip -dc "$FIX/mnist-mini/train-images-idx3-ubyte.gz" | head -c 5000 >"$TMP/data/broken/train-images-idx3-ubyte"

R=$OUT/r.png
bad "denoise plain text" "notes.txt: not a PNG, JPEG, BMP, GIF, PNM or TGA image" "$R" \
    denoise "$TMP/notes.txt" "$R" --model "$M1"
bad "denoise an empty file" "empty.png" "$R" denoise "$TMP/empty.png" "$R" --model "$M1"
bad "denoise a truncated PNG" "truncated.png: PNG" "$R" denoise "$TMP/truncated.png" "$R" --model "$M1"
bad "denoise a corrupt CRC" "crc.png: PNG: CRC error in IDAT" "$R" denoise "$TMP/crc.png" "$R" --model "$M1"
bad "denoise a decompression bomb" "bomb.pgm: image is 20000x20000 = 400000000 pixels, over the limit of 16777216" \
    "$R" denoise "$TMP/bomb.pgm" "$R" --model "$M1"
bad "denoise over --max-pixels" "g2729.pgm: image is 27x29 = 783 pixels, over the limit of 700" "$R" \
    denoise "$TMP/g2729.pgm" "$R" --model "$M1" --max-pixels 700
bad "denoise a missing file" "missing.png" "$R" denoise "$TMP/missing.png" "$R" --model "$M1"
bad "denoise a directory" "is a directory" "$R" denoise "$TMP/data" "$R" --model "$M1"
bad "denoise into a missing directory" "$OUT/nodir/r.png" "$OUT/nodir/r.png" \
    denoise "$TMP/g28.pgm" "$OUT/nodir/r.png" --model "$M1"
usage "denoise into a .jpg name" denoise "$TMP/g28.pgm" "$OUT/r.jpg" --model "$M1"
check "the .jpg error says the output is a PNG" grep -q "r.jpg: the output is always a PNG" "$TMP/stderr"
usage "noise into a .JPEG name" noise "$TMP/g28.pgm" "$OUT/r.JPEG"
usage "denoise into a .webp name" denoise "$TMP/g28.pgm" "$OUT/r.webp" --model "$M1"
check "nothing was written for the .jpg, .JPEG and .webp names" test -z "$(ls -A "$OUT")"
rm -f "$OUT/r.jpg" "$OUT/r.JPEG" "$OUT/r.webp" # a dae that wrote them fails the checks above, not every later one
bad "denoise with a text file as the model" "notes.txt" "$R" denoise "$TMP/g28.pgm" "$R" --model "$TMP/notes.txt"
bad "denoise with a truncated model" "short.safetensors" "$R" denoise "$TMP/g28.pgm" "$R" --model "$TMP/short.safetensors"
# A copy of dae with no models directory near it, run where there is none.
mkdir -p "$TMP/alone/bin"
cp "$DAE" "$TMP/alone/bin/dae"
cd "$TMP/empty" || exit 1
DAE_REAL=$DAE
DAE=$TMP/alone/bin/dae
bad "denoise without the default model" "models/mnist.safetensors" "$R" denoise "$TMP/g28.pgm" "$R"
DAE=$DAE_REAL
cd - >/dev/null || exit 1
check "the missing default model error says how to choose one" grep -q "DAE_MODEL" "$TMP/stderr"
check "it lists the places looked in, beside the executable too" \
    grep -qF "$TMP/alone/share/dae/models/mnist.safetensors" "$TMP/stderr"
check "it says to pass --model" grep -qF -- "--model" "$TMP/stderr"
bad "noise on plain text" "notes.txt" "$R" noise "$TMP/notes.txt" "$R"
bad "noise on a corrupt CRC" "crc.png: PNG: CRC error in IDAT" "$R" noise "$TMP/crc.png" "$R"
bad "train on a missing data set" "nosuch" "$OUT/m" train --data-dir "$FIX" --dataset nosuch --out "$OUT/m" --epochs 1
bad "train on a truncated IDX file" "train-images-idx3-ubyte" "$OUT/m" \
    train --data-dir "$TMP/data" --dataset broken --out "$OUT/m" --epochs 1
bad "train with a bad architecture" "arch.json" "$OUT/m" \
    train "${D[@]}" --architecture "$TMP/arch.json" --out "$OUT/m" --epochs 1
bad "train with a missing architecture" "nothere.json" "$OUT/m" \
    train "${D[@]}" --architecture "$TMP/nothere.json" --out "$OUT/m" --epochs 1
bad "resume from weights, not a checkpoint" "not a dae checkpoint" "$OUT/m" \
    train "${D[@]}" --resume "$M1" --out "$OUT/m" --epochs 2
bad "train into a missing directory" "$OUT/nodir/m" "$OUT/nodir/m" train "${D[@]}" --out "$OUT/nodir/m" --epochs 1
bad "eval a missing model" "nothere.safetensors" /dev/null/x eval "${D[@]}" --model "$TMP/nothere.safetensors"
bad "eval a text file" "notes.txt" /dev/null/x eval "${D[@]}" --model "$TMP/notes.txt"
bad "grid with a truncated model" "short.safetensors" "$OUT/g.png" \
    grid "${D[@]}" --model "$TMP/short.safetensors" --out "$OUT/g.png"
bad "grid past the end of the test set" "mnist-mini" "$OUT/g.png" \
    grid "${D[@]}" --model "$M1" --first 250 --count 10 --out "$OUT/g.png"
bad "info on plain text" "notes.txt" /dev/null/x info "$TMP/notes.txt"
bad "info on a missing file" "nothere.safetensors" /dev/null/x info "$TMP/nothere.safetensors"

# An interrupted training run writes nothing.
"$DAE" train "${D[@]}" --epochs 10000 --out "$OUT/m" >"$TMP/stdout" 2>"$TMP/stderr" &
pid=$!
# The handler is in place once the first epoch is reported.
wait_until 60 grep -q "^epoch 1/" "$TMP/stderr"
kill -INT "$pid"
wait "$pid"
rc=$?
if [ "$rc" -eq 1 ] && grep -q "interrupted" "$TMP/stderr" && [ ! -e "$OUT/m" ] && [ -z "$(ls -A "$OUT")" ]; then
    pass "interrupted training writes nothing"
else
    fail "interrupted training: exit $rc, output $(ls -A "$OUT")"
fi

# ------------------------------------------------------------ eval --save-noisy

# The noisy test images of a sweep, as the models got them: an IDX file per
# sigma, whose noisy-input PSNR is eval's, and whose first image is what
# `dae noise` makes of the clean one with the evaluation seed (image 0 is
# stream 0, as a gray image's only channel is).
mkdir -p "$TMP/noisy"
good "eval sweep saves the noisy images" eval "${D[@]}" --model "$M1" --sweep "$SWEEP" --limit 64 --threads 2 \
    --save-noisy "$TMP/noisy" --json
cp "$TMP/stdout" "$TMP/noisy.json"
check "saved noisy images: an IDX3 file per sigma, 64 images of 28x28, eval's noisy-input PSNR" "$PYTHON" -c '
import gzip, json, math, struct, sys
d = json.load(open(sys.argv[1]))
clean = gzip.open(sys.argv[2]).read()[16:]
for s, row in zip(sys.argv[4].split(","), d["sweep"]):
    data = open("%s/noisy-%s-images-idx3-ubyte" % (sys.argv[3], s), "rb").read()
    assert struct.unpack(">IIII", data[:16]) == (0x803, 64, 28, 28), data[:16]
    assert len(data) == 16 + 64 * 784, len(data)
    px, total = data[16:], 0.0
    for i in range(64):
        mse = sum((clean[i * 784 + j] / 255 - px[i * 784 + j] / 255) ** 2 for j in range(784)) / 784
        total += min(-10 * math.log10(mse), 100) if mse > 0 else 100
    assert abs(total / 64 - row["noisy"]["psnr"]) < 0.01, (s, total / 64, row["noisy"]["psnr"])
' "$TMP/noisy.json" "$FIX/mnist-mini/t10k-images-idx3-ubyte.gz" "$TMP/noisy" "$SWEEP"
"$PYTHON" -c '
import gzip, sys
sys.path.insert(0, sys.argv[2])
from http_sweep import png_encode_gray8
open(sys.argv[3], "wb").write(png_encode_gray8(gzip.open(sys.argv[1]).read()[16:16 + 784], 28, 28))
' "$FIX/mnist-mini/t10k-images-idx3-ubyte.gz" "$ROOT/tools" "$TMP/clean0.png"
good "dae noise of the first clean test image" noise "$TMP/clean0.png" "$TMP/noisy0.png" \
    --noise gaussian:0.3:clip:quantize --seed 20260101
check "its pixels are the first saved noisy image at sigma 0.3" "$PYTHON" -c '
import sys
sys.path.insert(0, sys.argv[1])
from http_sweep import png_decode_gray
w, h, gray = png_decode_gray(open(sys.argv[2], "rb").read())
saved = open(sys.argv[3], "rb").read()[16:16 + 784]
assert (w, h) == (28, 28) and bytes(round(v * 255) for v in gray) == saved
' "$ROOT/tools" "$TMP/noisy0.png" "$TMP/noisy/noisy-0.3-images-idx3-ubyte"
usage "save-noisy without --sweep" eval "${D[@]}" --model "$M1" --save-noisy "$TMP/noisy"
bad "save-noisy into a missing directory" "$OUT/nodir" "$OUT/nodir" \
    eval "${D[@]}" --model "$M1" --sweep 0.5 --save-noisy "$OUT/nodir"

finish
