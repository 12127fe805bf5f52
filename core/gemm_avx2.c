/* gemm_avx2.c - the engine's own kernels (gemm_kernels.inc) for AVX2 and FMA. */
#include "gemm_isa.h"

#ifdef HAVE_X86_KERNELS
#pragma GCC target("avx2,fma")
#define KV 8
#define KR 6
#define KNV 2
#define KNR 3
#define KNC 4
#define KSFX _avx2
#include "gemm_kernels.inc"
#endif
