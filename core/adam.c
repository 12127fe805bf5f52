/* adam.c - torch.optim.Adam (single-tensor path) in float32. */
#include "adam.h"

#include "denormals.h"
#include "hot.h"

#include <math.h>
#include <stdlib.h>

dae_status dae_adam_init(dae_adam *a, size_t n, float lr, float weight_decay,
                         char *err, size_t errlen) {
    a->lr = lr;
    a->beta1 = 0.9f;
    a->beta2 = 0.999f;
    a->eps = 1e-8f;
    a->weight_decay = weight_decay;
    a->step = 0;
    a->n = n;
    a->m = calloc(n ? n : 1, sizeof(float));
    a->v = calloc(n ? n : 1, sizeof(float));
    if (a->m == NULL || a->v == NULL) {
        dae_adam_free(a);
        return dae_fail(err, errlen, DAE_ERR_NOMEM, "adam: out of memory for %zu parameters", n);
    }
    return DAE_OK;
}

void dae_adam_free(dae_adam *a) {
    free(a->m);
    free(a->v);
    a->m = a->v = NULL;
}

void dae_adam_begin_step(dae_adam *a) { a->step++; }

/* The step's constants, as PyTorch computes them: the corrections are
 * Python floats (double), applied as float scalars to float tensors. */
typedef struct {
    float step_size, bias2_sqrt, b1, b2, one_b1, one_b2, wd, eps;
} adam_consts;

static adam_consts step_consts(const dae_adam *a) {
    double bias1 = 1.0 - pow((double)a->beta1, (double)a->step);
    double bias2 = 1.0 - pow((double)a->beta2, (double)a->step);
    return (adam_consts){(float)((double)a->lr / bias1), (float)sqrt(bias2), a->beta1, a->beta2,
                         (float)(1.0 - (double)a->beta1), (float)(1.0 - (double)a->beta2), a->weight_decay, a->eps};
}

/* The update of n parameters from their gradients gr. */
static inline __attribute__((always_inline)) void update(const adam_consts *k, float *restrict p, float *restrict m,
                                                         float *restrict v, const float *restrict gr, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float g = gr[i];
        if (k->wd != 0.0f) g = g + k->wd * p[i];
        m[i] = m[i] * k->b1 + k->one_b1 * g;
        v[i] = v[i] * k->b2 + k->one_b2 * (g * g);
        float denom = sqrtf(v[i]) / k->bias2_sqrt + k->eps;
        p[i] = p[i] - k->step_size * (m[i] / denom);
    }
}

/* dae_adam_update_outer without vectors: a row's gradient a block of
 * columns at a time, summed image by image (a multiply, then an add). */
static void outer_portable(const adam_consts *k, float *p, float *m, float *v, int n_rows, int n_cols, int c0, int c1,
                           const dae_outer_part *parts, int n_parts) {
    enum { BLOCK = 256 };
    for (int r = 0; r < n_rows; r++)
        for (int j0 = c0; j0 < c1; j0 += BLOCK) {
            int nj = c1 - j0 < BLOCK ? c1 - j0 : BLOCK;
            float g[BLOCK] = {0};
            for (int q = 0; q < n_parts; q++)
                for (int i = 0; i < parts[q].batch; i++) {
                    float s = parts[q].rows[(size_t)i * n_rows + r];
                    const float *restrict b = parts[q].cols + (size_t)i * n_cols + j0;
                    for (int j = 0; j < nj; j++) g[j] += s * b[j];
                }
            size_t at = (size_t)r * n_cols + j0;
            update(k, p + at, m + at, v + at, g, (size_t)nj);
        }
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include <immintrin.h>
#include "gemm.h"

/* 24 sums in registers, 14 loads to 24 multiply-adds; 12 rows rather than 8
 * read the columns 6 times for the bottleneck's 64, not 8 (+0.5% images/s) */
enum { OUTER_TILE_ROWS = 12 };

/* update() on AVX-512, 16 parameters at a time (masked at the end, so
 * every parameter gets the same arithmetic wherever a range ends). Its
 * square root and two divisions a parameter kept the divider busy (0.85
 * ns a parameter in L1; 0.62 here): sqrt(v) is multiplied by
 * 1 / sqrt(bias2), and m divided by the denominator as m times its
 * reciprocal, rcp14's estimate refined by one Newton step (within a
 * couple of float ulps; the update, ~1e-3, moves a parameter by less
 * than its last bit). */
typedef struct {
    __m512 b1, b2, one_b1, one_b2, wd, eps, step_size, two, inv_bias2_sqrt;
    int decay;
} adam_vectors;

__attribute__((target("avx512f"))) static inline adam_vectors vectors_avx512(const adam_consts *k) {
    return (adam_vectors){_mm512_set1_ps(k->b1),       _mm512_set1_ps(k->b2),  _mm512_set1_ps(k->one_b1),
                          _mm512_set1_ps(k->one_b2),   _mm512_set1_ps(k->wd),  _mm512_set1_ps(k->eps),
                          _mm512_set1_ps(k->step_size), _mm512_set1_ps(2.0f),
                          _mm512_set1_ps(1.0f / k->bias2_sqrt), k->wd != 0.0f};
}

/* The update of the live ones of 16 parameters at p from their gradients g. */
__attribute__((target("avx512f"))) static inline __attribute__((always_inline)) void
update_vector_avx512(const adam_vectors *k, float *p, float *m, float *v, __m512 g, __mmask16 live) {
    __m512 pi = _mm512_maskz_loadu_ps(live, p), mi = _mm512_maskz_loadu_ps(live, m),
           vi = _mm512_maskz_loadu_ps(live, v);
    if (k->decay) g = _mm512_add_ps(g, _mm512_mul_ps(k->wd, pi));
    mi = _mm512_add_ps(_mm512_mul_ps(mi, k->b1), _mm512_mul_ps(k->one_b1, g));
    vi = _mm512_add_ps(_mm512_mul_ps(vi, k->b2), _mm512_mul_ps(k->one_b2, _mm512_mul_ps(g, g)));
    __m512 denom = _mm512_add_ps(_mm512_mul_ps(_mm512_sqrt_ps(vi), k->inv_bias2_sqrt), k->eps);
    __m512 r = _mm512_rcp14_ps(denom);
    r = _mm512_mul_ps(r, _mm512_fnmadd_ps(denom, r, k->two));
    pi = _mm512_sub_ps(pi, _mm512_mul_ps(k->step_size, _mm512_mul_ps(mi, r)));
    _mm512_mask_storeu_ps(p, live, pi);
    _mm512_mask_storeu_ps(m, live, mi);
    _mm512_mask_storeu_ps(v, live, vi);
}

__attribute__((target("avx512f"))) static void update_avx512(const adam_consts *k, float *p, float *m, float *v,
                                                             const float *gr, size_t n) {
    adam_vectors kv = vectors_avx512(k);
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 live = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        update_vector_avx512(&kv, p + i, m + i, v + i, _mm512_maskz_loadu_ps(live, gr + i), live);
    }
}

/* The gradient of a tile of dae_adam_update_outer, rows r .. r + R - 1
 * by columns j0 .. j0 + 31 (lanes live0, live1; full: all of them), into
 * g: 2R vectors of sums in registers over the parts' images, each image's
 * columns loaded once for the R rows. ahead: prefetches the next tile's
 * columns (an image's are 6 KB past the last image's, too far apart for
 * the hardware to follow). */
__attribute__((target("avx512f"))) static inline __attribute__((always_inline)) void
outer_sums_avx512(float (*g)[32], int n_rows, int n_cols, int R, int r, int j0, int full, int ahead,
                  __mmask16 live0, __mmask16 live1, const dae_outer_part *parts, int n_parts) {
    __m512 acc[OUTER_TILE_ROWS][2];
    for (int t = 0; t < R; t++) acc[t][0] = acc[t][1] = _mm512_setzero_ps();
    for (int q = 0; q < n_parts; q++) {
        const float *a = parts[q].rows + r, *b = parts[q].cols + j0;
        for (int i = 0; i < parts[q].batch; i++, a += n_rows, b += n_cols) {
            __m512 c0 = full ? _mm512_loadu_ps(b) : _mm512_maskz_loadu_ps(live0, b),
                   c1 = full ? _mm512_loadu_ps(b + 16) : _mm512_maskz_loadu_ps(live1, b + 16);
            if (ahead) _mm_prefetch((const char *)(b + 32), _MM_HINT_T0), _mm_prefetch((const char *)(b + 48), _MM_HINT_T0);
            for (int t = 0; t < R; t++) {
                __m512 s = _mm512_set1_ps(a[t]);
                acc[t][0] = _mm512_fmadd_ps(s, c0, acc[t][0]);
                acc[t][1] = _mm512_fmadd_ps(s, c1, acc[t][1]);
            }
        }
    }
    for (int t = 0; t < R; t++) {
        _mm512_store_ps(g[t], acc[t][0]);
        _mm512_store_ps(g[t] + 16, acc[t][1]);
    }
}

/* Adam on a tile from its gradient g: R rows of parameters from p + at,
 * n_cols apart; ahead: prefetches the next tile's. Not inlined: Adam's
 * constants held in registers beside the sums made the compiler spill
 * those (1.4% of a two-thread epoch of the seed network). */
__attribute__((target("avx512f,prfchw"), noinline)) static void
outer_update_tile_avx512(const adam_vectors *k, float *p, float *m, float *v, float (*g)[32], int R, size_t at,
                         int n_cols, __mmask16 live0, __mmask16 live1, int ahead) {
    for (int t = 0; t < R; t++, at += (size_t)n_cols) {
        if (ahead)
            for (int l = 32; l < 64; l += 16) {
                __builtin_prefetch(p + at + l, 1, 3);
                __builtin_prefetch(m + at + l, 1, 3);
                __builtin_prefetch(v + at + l, 1, 3);
            }
        update_vector_avx512(k, p + at, m + at, v + at, _mm512_load_ps(g[t]), live0);
        if (live1) update_vector_avx512(k, p + at + 16, m + at + 16, v + at + 16, _mm512_load_ps(g[t] + 16), live1);
    }
}

/* dae_adam_update_outer on AVX-512: tiles of OUTER_TILE_ROWS rows by 32
 * columns, along the rows. */
__attribute__((target("avx512f"))) static void outer_avx512(const adam_consts *k, float *p, float *m, float *v,
                                                            int n_rows, int n_cols, int c0, int c1,
                                                            const dae_outer_part *parts, int n_parts) {
    adam_vectors kv = vectors_avx512(k);
    for (int r = 0; r < n_rows; r += OUTER_TILE_ROWS) {
        int R = n_rows - r < OUTER_TILE_ROWS ? n_rows - r : OUTER_TILE_ROWS;
        for (int j0 = c0; j0 < c1; j0 += 32) {
            int nj = c1 - j0 < 32 ? c1 - j0 : 32, ahead = j0 + 32 < c1;
            __mmask16 live0 = nj >= 16 ? 0xffff : (__mmask16)((1u << nj) - 1),
                      live1 = nj >= 32 ? 0xffff : nj > 16 ? (__mmask16)((1u << (nj - 16)) - 1) : 0;
            float g[OUTER_TILE_ROWS][32] __attribute__((aligned(64)));
#define OUTER_SUMS(ROWS)                                                                                           \
    if (nj == 32 && ahead) outer_sums_avx512(g, n_rows, n_cols, ROWS, r, j0, 1, 1, live0, live1, parts, n_parts); \
    else if (nj == 32) outer_sums_avx512(g, n_rows, n_cols, ROWS, r, j0, 1, 0, live0, live1, parts, n_parts);     \
    else outer_sums_avx512(g, n_rows, n_cols, ROWS, r, j0, 0, 0, live0, live1, parts, n_parts)
            switch (R) {
            case 1: OUTER_SUMS(1); break;
            case 2: OUTER_SUMS(2); break;
            case 3: OUTER_SUMS(3); break;
            case 4: OUTER_SUMS(4); break;
            case 5: OUTER_SUMS(5); break;
            case 6: OUTER_SUMS(6); break;
            case 7: OUTER_SUMS(7); break;
            case 8: OUTER_SUMS(8); break;
            case 9: OUTER_SUMS(9); break;
            case 10: OUTER_SUMS(10); break;
            case 11: OUTER_SUMS(11); break;
            default: OUTER_SUMS(OUTER_TILE_ROWS); break;
            }
#undef OUTER_SUMS
            outer_update_tile_avx512(&kv, p, m, v, g, R, (size_t)r * n_cols + j0, n_cols, live0, live1, ahead);
        }
    }
}

/* dae_adam_update_outer on AVX2 + FMA: tiles of OUTER_AVX2_ROWS rows by
 * 16 columns, their 12 sums in registers over the parts' images (each
 * image's columns loaded once for the rows), a fused multiply-add an
 * image; a ragged tile's sums one by one in the same order (fmaf, the
 * same bits); then the portable update, as dae_adam_update_range does on
 * AVX2. The portable loop (a multiply and an add an image, a store and a
 * load of each sum an image) was 11.5% of a seed network's training step
 * on AVX2. Each tile prefetches the next tile's parameters and moments,
 * as the AVX-512 tiles do: without it a two-thread epoch of the seed
 * network spent about 45% more time here (perf) and ran 3-14% slower.
 * The prefetch is PREFETCHW: the other thread read these weights in its
 * forward pass, and a read prefetch left each line shared, so each store
 * still waited for the other core to give it up. With it, and the next
 * tile's columns of each image prefetched as well, a two-thread epoch
 * spends a third less time here (perf, 4 alternating epochs). Haswell
 * does not list PRFCHW: Intel's cores before Broadwell run it as a NOP. */
enum { OUTER_AVX2_ROWS = 6 };

__attribute__((target("avx2,fma"))) static inline __attribute__((always_inline)) void
outer_sums_avx2(float (*g)[16], int n_rows, int n_cols, int R, int r, int j0, int ahead,
                const dae_outer_part *parts, int n_parts) {
    __m256 acc[OUTER_AVX2_ROWS][2];
    for (int t = 0; t < R; t++) acc[t][0] = acc[t][1] = _mm256_setzero_ps();
    for (int q = 0; q < n_parts; q++) {
        const float *a = parts[q].rows + r, *b = parts[q].cols + j0;
        for (int i = 0; i < parts[q].batch; i++, a += n_rows, b += n_cols) {
            __m256 c0 = _mm256_loadu_ps(b), c1 = _mm256_loadu_ps(b + 8);
            if (ahead) _mm_prefetch((const char *)(b + 16), _MM_HINT_T0);
            for (int t = 0; t < R; t++) {
                __m256 s = _mm256_broadcast_ss(a + t);
                acc[t][0] = _mm256_fmadd_ps(s, c0, acc[t][0]);
                acc[t][1] = _mm256_fmadd_ps(s, c1, acc[t][1]);
            }
        }
    }
    for (int t = 0; t < R; t++) {
        _mm256_store_ps(g[t], acc[t][0]);
        _mm256_store_ps(g[t] + 8, acc[t][1]);
    }
}

__attribute__((target("avx2,fma,prfchw"))) static void outer_avx2(const adam_consts *k, float *p, float *m, float *v,
                                                                 int n_rows, int n_cols, int c0, int c1,
                                                                 const dae_outer_part *parts, int n_parts) {
    for (int r = 0; r < n_rows; r += OUTER_AVX2_ROWS) {
        int R = n_rows - r < OUTER_AVX2_ROWS ? n_rows - r : OUTER_AVX2_ROWS;
        for (int j0 = c0; j0 < c1; j0 += 16) {
            int nj = c1 - j0 < 16 ? c1 - j0 : 16;
            float g[OUTER_AVX2_ROWS][16] __attribute__((aligned(32)));
            int ahead = j0 + 16 < c1;
#define OUTER_SUMS_AVX2(ROWS)                                                          \
    (ahead ? outer_sums_avx2(g, n_rows, n_cols, ROWS, r, j0, 1, parts, n_parts)       \
           : outer_sums_avx2(g, n_rows, n_cols, ROWS, r, j0, 0, parts, n_parts))
            if (nj == 16) {
                switch (R) {
                case 1: OUTER_SUMS_AVX2(1); break;
                case 2: OUTER_SUMS_AVX2(2); break;
                case 3: OUTER_SUMS_AVX2(3); break;
                case 4: OUTER_SUMS_AVX2(4); break;
                case 5: OUTER_SUMS_AVX2(5); break;
                default: OUTER_SUMS_AVX2(OUTER_AVX2_ROWS); break;
                }
#undef OUTER_SUMS_AVX2
            } else {
                for (int t = 0; t < R; t++)
                    for (int j = 0; j < nj; j++) {
                        float sum = 0.0f;
                        for (int q = 0; q < n_parts; q++)
                            for (int i = 0; i < parts[q].batch; i++)
                                sum = fmaf(parts[q].rows[(size_t)i * n_rows + r + t],
                                           parts[q].cols[(size_t)i * n_cols + j0 + j], sum);
                        g[t][j] = sum;
                    }
            }
            for (int t = 0; t < R; t++) {
                size_t at = (size_t)(r + t) * n_cols + j0;
                if (ahead) { /* the next tile's: its rows lie a weight's row apart */
                    __builtin_prefetch(p + at + 16, 1, 3);
                    __builtin_prefetch(m + at + 16, 1, 3);
                    __builtin_prefetch(v + at + 16, 1, 3);
                }
                update(k, p + at, m + at, v + at, g[t], (size_t)nj);
            }
        }
    }
}

/* The update for the engine's instruction set (DAE_ISA picks another). */
static void update_any(const adam_consts *k, float *p, float *m, float *v, const float *gr, size_t n) {
    if (dae_gemm_isa() == DAE_ISA_AVX512) update_avx512(k, p, m, v, gr, n);
    else update(k, p, m, v, gr, n);
}

static void outer_any(const adam_consts *k, float *p, float *m, float *v, int n_rows, int n_cols, int c0, int c1,
                      const dae_outer_part *parts, int n_parts) {
    dae_isa isa = dae_gemm_isa();
    if (isa == DAE_ISA_AVX512) outer_avx512(k, p, m, v, n_rows, n_cols, c0, c1, parts, n_parts);
    else if (isa == DAE_ISA_AVX2) outer_avx2(k, p, m, v, n_rows, n_cols, c0, c1, parts, n_parts);
    else outer_portable(k, p, m, v, n_rows, n_cols, c0, c1, parts, n_parts);
}
#else
#define update_any update
#define outer_any outer_portable
#endif

HOT void dae_adam_update_range(dae_adam *a, float *params, const float *grads, size_t begin, size_t end) {
    dae_fp_mode caller = dae_denormals_off(); /* a decayed weight goes to 0, not below 1.2e-38 */
    adam_consts k = step_consts(a);
    update_any(&k, params + begin, a->m + begin, a->v + begin, grads + begin, end - begin);
    dae_fp_mode_restore(caller);
}

HOT void dae_adam_update_sum_range(dae_adam *a, float *params, float *const *grads, int n_grads, size_t begin,
                                   size_t end) {
    enum { BLOCK = 1024 }; /* 4 KB of summed gradients, in L1 */
    dae_fp_mode caller = dae_denormals_off();
    adam_consts k = step_consts(a);
    for (size_t b0 = begin; b0 < end; b0 += BLOCK) {
        size_t n = end - b0 < BLOCK ? end - b0 : BLOCK;
        float sum[BLOCK];
        float *restrict g0 = grads[0] + b0;
        for (size_t i = 0; i < n; i++) sum[i] = g0[i], g0[i] = 0.0f;
        for (int t = 1; t < n_grads; t++) {
            float *restrict g = grads[t] + b0;
            for (size_t i = 0; i < n; i++) sum[i] += g[i], g[i] = 0.0f;
        }
        update_any(&k, params + b0, a->m + b0, a->v + b0, sum, n);
    }
    dae_fp_mode_restore(caller);
}

HOT void dae_adam_update_outer(dae_adam *a, float *params, size_t offset, int n_rows, int n_cols, int col_begin,
                               int col_end, const dae_outer_part *parts, int n_parts) {
    dae_fp_mode caller = dae_denormals_off();
    adam_consts k = step_consts(a);
    float *p = params + offset, *m = a->m + offset, *v = a->v + offset;
    outer_any(&k, p, m, v, n_rows, n_cols, col_begin, col_end, parts, n_parts);
    dae_fp_mode_restore(caller);
}

void dae_adam_step(dae_adam *a, float *params, const float *grads) {
    dae_adam_begin_step(a);
    dae_adam_update_range(a, params, grads, 0, a->n);
}
