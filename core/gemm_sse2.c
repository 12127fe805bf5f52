/* gemm_sse2.c - the engine's own kernels (gemm_kernels.inc) for baseline x86-64 (SSE2) and any other CPU. */
#include "gemm_isa.h"

#define KV 4
#define KR 4
#define KNV 2
#define KNR 2
#define KNC 4
#define KSFX _sse2
#include "gemm_kernels.inc"
