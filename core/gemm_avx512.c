/* gemm_avx512.c - the engine's own kernels (gemm_kernels.inc) for AVX-512. */
#include "gemm_isa.h"

#ifdef HAVE_X86_KERNELS
#pragma GCC target("avx512f,fma")
#define KV 16
#define KR 8
#define KNV 3
#define KNR 4
#define KNC 6
#define KSFX _avx512
#include "gemm_kernels.inc"
#endif
