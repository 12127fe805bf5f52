/* gemm_isa.h - what gemm.c and the per-instruction-set kernel files
 * (gemm_avx512.c, gemm_avx2.c, gemm_sse2.c, each compiling
 * gemm_kernels.inc once) share: the kernels' signatures and the table of
 * one instruction set's kernels. Private to core/. Each set is its own
 * file so that a parallel build compiles them at once: in one file, the
 * sanitizer build's gemm.c took 311 s, the longest step of
 * `make test-sanitize`. */
#ifndef DAE_GEMM_ISA_H
#define DAE_GEMM_ISA_H

#include <stddef.h>

/* Rows of A and B a weight-gradient product (gemm_tn) sums before moving
 * to the next tile of C: 256 rows of 144 floats, 147 KB, stay in L2. */
#define KTN_ROWS 256
/* The most floats of B (a chunk's rows, 256 KB) for which gemm_tn walks
 * C's tiles row by row (B stays in L2 across a row of tiles) rather than
 * column block by column block. */
#define KTN_ROWS_FIRST_FLOATS 65536
/* The largest C (floats) gemm_tn sums transposed when its columns are
 * ragged and its rows are whole vectors. */
#define KTN_SWAP_FLOATS 1024

/* A weight packed once for the products that multiply it (dae_gemm_pack),
 * the same layout on every instruction set. For C = A B: B's columns in
 * blocks of PACK_COLS, a block's rows one after another, PACK_COLS floats
 * each (the last block padded). For C = A B^T: B's rows in groups of
 * PACK_ROWS, a group's rows interleaved PACK_RUN floats at a time. A
 * product then reads its weight as one stream, where B as it lies was
 * read 64 rows (8) at once, 256 bytes (32) a row at a time. */
#define PACK_COLS 64
#define PACK_ROWS 8
#define PACK_RUN 16

/* The AVX2 and AVX-512 kernels need GCC's per-function targets. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define HAVE_X86_KERNELS 1
#endif

typedef void gemm_nn_fn(int m, int n, int k, const float *a, int lda, int k2, const float *a2, int lda2,
                        const float *b, int ldb, float *c, int ldc, const float *bias, int relu, float *pad);
typedef void gemm_nt_dot_fn(int m, int n, int k, const float *a, int lda, const float *b, int ldb, float *c,
                            int ldc, const float *bias, int relu);
typedef void gemm_packed_fn(int m, int n, int k, const float *a, int lda, const float *packed, float *c, int ldc,
                            const float *bias, int relu);
typedef void gemm_tn_fn(int m, int n, int k, const float *a, int lda, const float *b, int ldb, float *c, int ldc,
                        float *pad);
typedef void transpose_fn(int n, int k, const float *b, int ldb, float *out);
typedef void gemm_patches_fn(int oh, int ow, int kh, int kw, int sh, int sw, int channels, const float *img, int wp,
                             const float *b, int n, float *c, const float *bias, int relu);
typedef void gemm_patches_dot_fn(int oh, int ow, int kh, int kw, int sh, int sw, int channels, const float *img,
                                 int wp, const float *w, float *out);
typedef void gemm_same3_dot_fn(int h, int w, int channels, const float *img, const float *wt, const float *tail,
                               const float *tail_w, float bias, int relu, float *out);

/* One instruction set's kernels (gemm_kernels.inc defines one, named
 * gemm_kernels and its suffix). */
typedef struct {
    gemm_nn_fn *nn;
    gemm_nt_dot_fn *nt_dot;
    gemm_tn_fn *tn;
    transpose_fn *transpose;
    gemm_patches_fn *patches;
    gemm_patches_dot_fn *patches_dot;
    gemm_same3_dot_fn *same3_dot;
    gemm_packed_fn *nn_packed;     /* gemm_nn, B packed */
    gemm_packed_fn *nt_dot_packed; /* gemm_nt_dot, B packed */
} gemm_kernels;

extern const gemm_kernels gemm_kernels_sse2;
#ifdef HAVE_X86_KERNELS
extern const gemm_kernels gemm_kernels_avx2;
extern const gemm_kernels gemm_kernels_avx512;
#endif

#endif
