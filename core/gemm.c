/* gemm.c - matrix multiply through OpenBLAS, the engine's own kernels for
 * the small products of a forward pass and of training's gradients, and
 * the naive oracle. */
#include "gemm.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "gemm_isa.h"
#include "hot.h"

/* ------------------------------------------------------------ own kernels
 *
 * One image's layers are products of a few hundred rows at most (784
 * pixels, 16 to 64 channels). OpenBLAS packs both operands for each call
 * and, on the Zen 5 it was measured on, ran its Haswell (AVX2) kernels:
 * packing was a third of a batch-1 pass. These kernels read the operands
 * where they lie, keep a register tile of C and apply the bias and ReLU
 * before storing it. They are compiled for AVX-512, AVX2 + FMA and SSE2
 * (gemm_kernels.inc, once each in gemm_avx512.c, gemm_avx2.c and
 * gemm_sse2.c) and picked at run time, so the default build stays
 * portable. Contracting a*b + c into one FMA changes rounding only within
 * the tolerance every kernel is tested to. */

/* Floats of stack scratch dae_gemm_bias may use: B transposed for a
 * product with B^T, and the padded copy of B's last columns. 48 KB: the
 * U-Net's 64 x 144 weight, whose transposition training's input gradient
 * needs, fits (with 32 KB it went to the dot-product kernel, whose
 * 144-long dots ran at a third of the broadcast kernel's speed). */
enum { SCRATCH_FLOATS = 12288 };

/* ------------------------------------------------------------- dispatch */

static const struct isa_kernels {
    const char *name;
    const gemm_kernels *kernels; /* NULL where this build has none */
} isa_kernels[DAE_ISA_COUNT] = {
    [DAE_ISA_SSE2] = {"sse2", &gemm_kernels_sse2},
#ifdef HAVE_X86_KERNELS
    [DAE_ISA_AVX2] = {"avx2", &gemm_kernels_avx2},
    [DAE_ISA_AVX512] = {"avx512", &gemm_kernels_avx512},
#else
    [DAE_ISA_AVX2] = {"avx2", NULL},
    [DAE_ISA_AVX512] = {"avx512", NULL},
#endif
};

/* The kernels of the instruction set in use. */
static const gemm_kernels *kernels(void) { return isa_kernels[dae_gemm_isa()].kernels; }

/* The instruction set in use, DAE_ISA_COUNT until the first product. */
static _Atomic int isa_in_use = DAE_ISA_COUNT;

const char *dae_isa_name(dae_isa isa) { return isa >= 0 && isa < DAE_ISA_COUNT ? isa_kernels[isa].name : "?"; }

int dae_isa_supported(dae_isa isa) {
    switch (isa) {
    case DAE_ISA_SSE2: return 1;
#ifdef HAVE_X86_KERNELS
    case DAE_ISA_AVX2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case DAE_ISA_AVX512: return __builtin_cpu_supports("avx512f");
#endif
    default: return 0;
    }
}

int dae_isa_parse(const char *name, dae_isa *isa) {
    for (int i = 0; i < DAE_ISA_COUNT; i++)
        if (strcmp(name, isa_kernels[i].name) == 0) {
            *isa = (dae_isa)i;
            return 0;
        }
    return -1;
}

dae_isa dae_gemm_isa(void) {
    int isa = atomic_load_explicit(&isa_in_use, memory_order_relaxed);
    if (isa != DAE_ISA_COUNT) return (dae_isa)isa;
    dae_isa wanted;
    const char *env = getenv("DAE_ISA");
    if (env == NULL || *env == '\0' || dae_isa_parse(env, &wanted) != 0 || !dae_isa_supported(wanted)) {
        wanted = DAE_ISA_SSE2;
        for (int i = DAE_ISA_COUNT - 1; i > DAE_ISA_SSE2; i--)
            if (dae_isa_supported((dae_isa)i)) {
                wanted = (dae_isa)i;
                break;
            }
    }
    atomic_store_explicit(&isa_in_use, (int)wanted, memory_order_relaxed);
    return wanted;
}

int dae_isa_env_check(char *err, size_t errlen) {
    const char *env = getenv("DAE_ISA");
    dae_isa named;
    if (env == NULL || *env == '\0') return 0;
    const char *taken = dae_isa_name(dae_gemm_isa());
    if (dae_isa_parse(env, &named) != 0) {
        char names[64] = "";
        for (int i = 0; i < DAE_ISA_COUNT; i++)
            snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", i ? ", " : "", isa_kernels[i].name);
        snprintf(err, errlen, "DAE_ISA=%s names no instruction set of the engine (%s): using %s", env, names, taken);
        return -1;
    }
    if (!dae_isa_supported(named)) {
        snprintf(err, errlen, "DAE_ISA=%s: this CPU does not have it: using %s", env, taken);
        return -1;
    }
    return 0;
}

int dae_gemm_set_isa(dae_isa isa) {
    if (isa < 0 || isa >= DAE_ISA_COUNT || !dae_isa_supported(isa)) return -1;
    atomic_store_explicit(&isa_in_use, (int)isa, memory_order_relaxed);
    return 0;
}

int dae_cpu_full_width_avx512(void) {
#ifdef HAVE_X86_KERNELS
    return __builtin_cpu_supports("avx512f") && !__builtin_cpu_is("amdfam19h");
#else
    return 0;
#endif
}

/* ---------------------------------------------------------------- entry */

void dae_gemm(int trans_a, int trans_b, int m, int n, int k, float alpha,
              const float *a, int lda, const float *b, int ldb, float beta,
              float *c, int ldc) {
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda,
                b, ldb, beta, c, ldc);
}

dae_gemm_path dae_gemm_bias_path(int trans_b, int n, int k) {
    size_t pad = n % 16 ? (size_t)k * 16 : 0;
    if (trans_b) return (size_t)k * n + pad > SCRATCH_FLOATS ? DAE_GEMM_DOT : DAE_GEMM_BROADCAST;
    return pad > SCRATCH_FLOATS ? DAE_GEMM_BLAS : DAE_GEMM_BROADCAST;
}

void dae_gemm_bias(int trans_b, int m, int n, int k, const float *a, int lda, const float *b, int ldb, float *c,
                   int ldc, const float *bias, int relu) {
    dae_gemm_path path = dae_gemm_bias_path(trans_b, n, k);
    if (path == DAE_GEMM_DOT) {
        kernels()->nt_dot(m, n, k, a, lda, b, ldb, c, ldc, bias, relu);
        return;
    }
    if (path == DAE_GEMM_BLAS) {
        dae_gemm(0, trans_b, m, n, k, 1.0f, a, lda, b, ldb, 0.0f, c, ldc);
        if (bias != NULL || relu) dae_add_bias(c, (size_t)ldc, (size_t)m, n, bias, relu);
        return;
    }
    float scratch[SCRATCH_FLOATS] __attribute__((aligned(64)));
    float *pad = scratch;
    if (trans_b) { /* B^T, (k, n), then the broadcast kernel */
        kernels()->transpose(n, k, b, ldb, scratch);
        b = scratch, ldb = n;
        pad = scratch + (size_t)k * n;
    }
    kernels()->nn(m, n, k, a, lda, 0, NULL, 0, b, ldb, c, ldc, bias, relu, pad);
}

size_t dae_gemm_packed_size(int trans_b, int n, int k) {
    if (trans_b)
        return dae_gemm_bias_path(1, n, k) == DAE_GEMM_DOT && n % PACK_ROWS == 0 && k % PACK_RUN == 0
                   ? (size_t)n * k
                   : 0;
    return dae_gemm_bias_path(0, n, k) == DAE_GEMM_BROADCAST && n % 16 == 0 && n > PACK_COLS
               ? (size_t)(n + PACK_COLS - 1) / PACK_COLS * PACK_COLS * k
               : 0;
}

void dae_gemm_pack(int trans_b, int n, int k, const float *b, float *packed) {
    if (trans_b) { /* groups of PACK_ROWS rows, a run of each in turn */
        for (int j = 0; j < n; j++)
            for (int p = 0; p < k; p++)
                packed[(size_t)(j / PACK_ROWS * PACK_ROWS) * k + (size_t)(p / PACK_RUN) * PACK_ROWS * PACK_RUN +
                       (size_t)(j % PACK_ROWS) * PACK_RUN + p % PACK_RUN] = b[(size_t)j * k + p];
        return;
    }
    for (int j0 = 0; j0 < n; j0 += PACK_COLS) { /* blocks of PACK_COLS columns */
        int cols = n - j0 < PACK_COLS ? n - j0 : PACK_COLS;
        float *block = packed + (size_t)j0 * k;
        for (int p = 0; p < k; p++) {
            memcpy(block + (size_t)p * PACK_COLS, b + (size_t)p * n + j0, sizeof(float) * cols);
            memset(block + (size_t)p * PACK_COLS + cols, 0, sizeof(float) * (PACK_COLS - cols));
        }
    }
}

void dae_gemm_bias_packed(int trans_b, int m, int n, int k, const float *a, int lda, const float *packed, float *c,
                          int ldc, const float *bias, int relu) {
    if (trans_b) kernels()->nt_dot_packed(m, n, k, a, lda, packed, c, ldc, bias, relu);
    else kernels()->nn_packed(m, n, k, a, lda, packed, c, ldc, bias, relu);
}

void dae_gemm_bias_split(int m, int n, int k1, const float *a1, int lda1, int k2, const float *a2, int lda2,
                         const float *b, int ldb, float *c, int ldc, const float *bias, int relu) {
    if (dae_gemm_bias_path(0, n, k1 + k2) != DAE_GEMM_BROADCAST) { /* the BLAS, a part at a time */
        dae_gemm(0, 0, m, n, k1, 1.0f, a1, lda1, b, ldb, 0.0f, c, ldc);
        dae_gemm(0, 0, m, n, k2, 1.0f, a2, lda2, b + (size_t)k1 * ldb, ldb, 1.0f, c, ldc);
        if (bias != NULL || relu) dae_add_bias(c, (size_t)ldc, (size_t)m, n, bias, relu);
        return;
    }
    float pad[SCRATCH_FLOATS] __attribute__((aligned(64)));
    kernels()->nn(m, n, k1, a1, lda1, k2, a2, lda2, b, ldb, c, ldc, bias, relu, pad);
}

void dae_gemm_patches(int oh, int ow, int kh, int kw, int sh, int sw, int channels, const float *img, int wp,
                      const float *b, int n, float *c, const float *bias, int relu) {
    kernels()->patches(oh, ow, kh, kw, sh, sw, channels, img, wp, b, n, c, bias, relu);
}

void dae_gemm_patches_dot(int oh, int ow, int kh, int kw, int sh, int sw, int channels, const float *img, int wp,
                          const float *w, float *out) {
    kernels()->patches_dot(oh, ow, kh, kw, sh, sw, channels, img, wp, w, out);
}

void dae_gemm_same3_dot(int h, int w, int channels, const float *img, const float *wt, const float *tail,
                        const float *tail_w, float bias, int relu, float *out) {
    kernels()->same3_dot(h, w, channels, img, wt, tail, tail_w, bias, relu, out);
}

void dae_gemm_transpose(int n, int k, const float *b, int ldb, float *out) {
    kernels()->transpose(n, k, b, ldb, out);
}

void dae_gemm_tn_acc(int m, int n, int k, const float *a, int lda, const float *b, int ldb, float *c, int ldc) {
    float pad[KTN_ROWS * 16] __attribute__((aligned(64)));
    kernels()->tn(m, n, k, a, lda, b, ldb, c, ldc, pad);
}

HOT void dae_add_bias(float *restrict x, size_t ldx, size_t rows, int n, const float *restrict bias, int relu) {
    if (n == 1 && ldx == 1) { /* one flat loop, not `rows` loops of one */
        float b = bias != NULL ? bias[0] : 0.0f;
        for (size_t r = 0; r < rows; r++) {
            float v = x[r] + b;
            x[r] = relu && v < 0.0f ? 0.0f : v;
        }
        return;
    }
    for (size_t r = 0; r < rows; r++) {
        float *p = x + r * ldx;
        if (bias != NULL && relu) {
            for (int c = 0; c < n; c++) {
                float v = p[c] + bias[c];
                p[c] = v > 0.0f ? v : 0.0f;
            }
        } else if (bias != NULL) {
            for (int c = 0; c < n; c++) p[c] += bias[c];
        } else if (relu) {
            for (int c = 0; c < n; c++) p[c] = p[c] > 0.0f ? p[c] : 0.0f;
        }
    }
}

void dae_gemm_naive(int trans_a, int trans_b, int m, int n, int k,
                    float alpha, const float *a, int lda, const float *b,
                    int ldb, float beta, float *c, int ldc) {
    for (int i = 0; i < m; i++) {
        for (int j = 0; j < n; j++) {
            double sum = 0.0;
            for (int p = 0; p < k; p++) {
                float av = trans_a ? a[(long)p * lda + i] : a[(long)i * lda + p];
                float bv = trans_b ? b[(long)j * ldb + p] : b[(long)p * ldb + j];
                sum += (double)av * bv;
            }
            float *cij = &c[(long)i * ldc + j];
            *cij = (float)(alpha * sum + (beta == 0.0f ? 0.0 : (double)beta * *cij));
        }
    }
}

void dae_gemm_single_threaded(void) { openblas_set_num_threads(1); }
