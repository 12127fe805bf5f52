#!/usr/bin/env bash
# run.sh - the engine against the libraries made for its work, one thread
# pinned to CPU 0 (make bench-libs):
#   1. its product kernels against libxsmm's JIT kernels, OpenBLAS and BLIS
#      on the products the networks multiply (products.c);
#   2. the committed networks' forward pass against oneDNN's primitives,
#      same weights, same images, outputs checked (onednn.c).
#
#   bench/libs/run.sh [--avx2] [--reps N]
#
# --avx2: an AVX2 machine's path on this one: the build of `make
# AVX2_PATH=1`, DAE_ISA=avx2, OPENBLAS_CORETYPE=Haswell, libxsmm's Haswell
# kernels, BLIS's Zen 3 configuration, oneDNN capped at AVX2. Without it
# each library takes its choice for this CPU (BLIS its Skylake-X
# configuration where the CPU has AVX-512: it runs its generic C on a CPU
# it does not know). The libraries (Debian's libxsmm-dev, libblis-dev,
# libdnnl-dev) are not the project's dependencies: as root this installs
# them, otherwise it prints the apt command.
set -euo pipefail
cd "$(dirname "$0")/../.."

avx2=0
reps=7
while [ $# -gt 0 ]; do
    case "$1" in
    --avx2) avx2=1 ;;
    --reps) reps=$2; shift ;;
    -h|--help) sed -n '/^set -euo/q; 2,$p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

tools/deps.sh libxsmm-dev libblis-dev libdnnl-dev

if [ "$avx2" = 1 ]; then
    build=build/avx2-path
    make -s AVX2_PATH=1 "$build/bench-libs/products" "$build/bench-libs/onednn"
    export DAE_ISA=avx2 OPENBLAS_CORETYPE=Haswell LIBXSMM_TARGET=hsw ONEDNN_MAX_CPU_ISA=AVX2
    blis_arch=zen3
else
    build=build
    make -s "$build/bench-libs/products" "$build/bench-libs/onednn"
    if grep -qw avx512f /proc/cpuinfo; then blis_arch=skx; else blis_arch=zen3; fi
fi
# One thread each: oneDNN's (OpenMP) and BLIS's too.
export OMP_NUM_THREADS=1 BLIS_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1

echo "== products: dae's kernels, libxsmm, OpenBLAS, BLIS ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'))"
taskset -c 0 "$build/bench-libs/products" --reps "$reps" --blis-arch "$blis_arch"
echo
echo "== forward: dae against oneDNN, the committed networks"
taskset -c 0 "$build/bench-libs/onednn" --reps "$reps" --batch 1,64 models/mnist-ae.safetensors models/mnist.safetensors
