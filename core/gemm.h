/* gemm.h - the one matrix-multiply entry point of the engine.
 *
 * C = alpha * op(A) * op(B) + beta * C, row-major, op = transpose or not.
 * dae_gemm calls the BLAS (OpenBLAS's sgemm, single-threaded: the engine
 * parallelises over the batch itself); dae_gemm_naive is the obviously
 * correct triple loop kept as the test oracle. */
#ifndef DAE_GEMM_H
#define DAE_GEMM_H

#include <stddef.h>

void dae_gemm(int trans_a, int trans_b, int m, int n, int k, float alpha,
              const float *a, int lda, const float *b, int ldb, float beta,
              float *c, int ldc);

/* C (m, n) = A (m, k) op(B) + bias (n values; none when NULL), then
 * max(0, .) when relu: a layer's forward product (and, without bias, its
 * input gradient's), row-major, A not transposed, C overwritten. Runs on
 * the engine's own kernels - no packing, no threads, nothing allocated,
 * 48 KB of stack - compiled for AVX-512, AVX2 and SSE2 and picked at run
 * time. A row of C does not
 * depend on how many rows there are (the kernel is chosen by n and k
 * alone, dae_gemm_bias_path, and every row sums its k products in the
 * same order), so an image's outputs are the same bits in any batch: a
 * server's answers do not depend on what else it was batched with. */
void dae_gemm_bias(int trans_b, int m, int n, int k, const float *a, int lda, const float *b, int ldb, float *c,
                   int ldc, const float *bias, int relu);
/* dae_gemm_bias on a B packed once (a model keeps its 7x7 bottleneck's
 * weights so): read as one stream where B as it lies is read many rows
 * at once, so a single image's product waits less on memory; the same
 * bits. dae_gemm_packed_size is the packed B's floats, 0 when this
 * product is not packed (n or k not whole groups, or dae_gemm_bias would
 * not run it on the engine's own kernels); dae_gemm_pack makes it from B
 * as it lies (leading dimension k when trans_b, n otherwise). */
size_t dae_gemm_packed_size(int trans_b, int n, int k);
void dae_gemm_pack(int trans_b, int n, int k, const float *b, float *packed);
void dae_gemm_bias_packed(int trans_b, int m, int n, int k, const float *a, int lda, const float *packed, float *c,
                          int ldc, const float *bias, int relu);
/* dae_gemm_bias (B not transposed) of A in two parts side by side,
 * [A1 (m, k1) | A2 (m, k2)], each read where it lies: a concatenation's
 * inputs multiplied without copying them. The sums run in the same order
 * as over one A, so the bits are dae_gemm_bias's on the joined A whenever
 * that takes the broadcast path (dae_gemm_bias_path(0, n, k1 + k2)), as
 * every product of these networks does. */
void dae_gemm_bias_split(int m, int n, int k1, const float *a1, int lda1, int k2, const float *a2, int lda2,
                         const float *b, int ldb, float *c, int ldc, const float *bias, int relu);
/* C (oh*ow, n) = the patches of an image (pixels of `channels` floats)
 * under a kh x kw kernel at strides sh, sw, times B (kh*kw*channels, n),
 * + bias, then max(0, .) when relu: a convolution read where the image
 * lies. img is the image zero-padded so that every patch lies inside it
 * (rows of wp pixels); n is a multiple of 16. The same bits as
 * dae_gemm_bias on an im2col of the image (its terms summed in the same
 * order), without the copy. */
void dae_gemm_patches(int oh, int ow, int kh, int kw, int sh, int sw, int channels, const float *img, int wp,
                      const float *b, int n, float *c, const float *bias, int relu);
/* out (oh*ow) = the patches of an image (pixels of `channels` floats, a
 * multiple of 16), laid out as for dae_gemm_patches, each dotted with w
 * (kh*kw*channels): a convolution with one output channel (no bias).
 * Each output's dot is a vector of partial sums; 16 neighbouring outputs'
 * vectors are summed across their lanes together. */
void dae_gemm_patches_dot(int oh, int ow, int kh, int kw, int sh, int sw, int channels, const float *img, int wp,
                          const float *w, float *out);
/* The same for a 3x3 kernel at stride 1 with padding 1 (h x w outputs),
 * read where the h x w image lies, with no padded copy: the products of
 * the patches' parts past the image's edges, zeros, are left out, so the
 * dots are dae_gemm_patches_dot's bits on the zero-padded image. Then
 * each output adds a one-channel image's (tail, h x w, or NULL for none)
 * 3x3 taps tail_w (row-major), each product rounded before its add, and
 * the bias, and is ReLU'd (v < 0 ? 0 : v) when relu: the bits of those
 * steps done plane by plane on the padded tail (layers.c). */
void dae_gemm_same3_dot(int h, int w, int channels, const float *img, const float *wt, const float *tail,
                        const float *tail_w, float bias, int relu, float *out);
/* out (k, n) = B^T for B (n, k), row stride ldb: dae_gemm_bias's own
 * transposition (16 x 16 blocks through the registers). */
void dae_gemm_transpose(int n, int k, const float *b, int ldb, float *out);
/* C (m, n) += A (k, m)^T B (k, n), row-major: a layer's weight gradient,
 * the sum over k rows (a batch's pixels) of A's row times B's row, each
 * entry summed over k in order, on the engine's own kernels (20 KB of
 * stack). */
void dae_gemm_tn_acc(int m, int n, int k, const float *a, int lda, const float *b, int ldb, float *c, int ldc);
/* x (rows, n; row stride ldx) += bias per column (none when NULL), then
 * max(0, .) when relu: the bias pass of a product the BLAS ran, and of a
 * transposed convolution's output. */
void dae_add_bias(float *x, size_t ldx, size_t rows, int n, const float *bias, int relu);
/* Where dae_gemm_bias runs a product: the broadcast kernel (B, or B^T
 * transposed into its scratch), the dot-product kernel (B^T too big for
 * that), or - for B with more than 512 rows and columns that are not
 * whole vectors, which no layer of these networks has - the BLAS, whose
 * rows are then not batch-invariant. Chosen by n and k alone. */
typedef enum { DAE_GEMM_BROADCAST, DAE_GEMM_DOT, DAE_GEMM_BLAS } dae_gemm_path;
dae_gemm_path dae_gemm_bias_path(int trans_b, int n, int k);

/* The instruction sets dae_gemm_bias's kernels are compiled for. The best
 * the CPU has is used, unless the environment's DAE_ISA names another it
 * has (sse2, avx2, avx512: to measure an older machine's path on a newer
 * one) or dae_gemm_set_isa chose one. */
typedef enum { DAE_ISA_SSE2, DAE_ISA_AVX2, DAE_ISA_AVX512, DAE_ISA_COUNT } dae_isa;
const char *dae_isa_name(dae_isa isa);
int dae_isa_parse(const char *name, dae_isa *isa); /* 0, or -1 for no such name */
int dae_isa_supported(dae_isa isa);
dae_isa dae_gemm_isa(void);
int dae_gemm_set_isa(dae_isa isa); /* 0, or -1 when this CPU lacks it */
/* 0 when DAE_ISA is unset or names an instruction set this CPU has; -1
 * with a sentence in err naming what it says, what the engine takes
 * instead and what it could say, for the front ends to warn with. */
int dae_isa_env_check(char *err, size_t errlen);

/* Whether the CPU runs a 512-bit multiply-add at full width: it has
 * AVX-512 and is not AMD's family 19h (Zen 4), which runs each as two
 * 256-bit halves. Whatever DAE_ISA says: the answer is the CPU's. */
int dae_cpu_full_width_avx512(void);

void dae_gemm_naive(int trans_a, int trans_b, int m, int n, int k,
                    float alpha, const float *a, int lda, const float *b,
                    int ldb, float beta, float *c, int ldc);

/* Makes the BLAS run every call on the calling thread. The engine calls it
 * before starting its own threads; it changes OpenBLAS's process-wide
 * thread count, which is why it is explicit. */
void dae_gemm_single_threaded(void);

#endif
