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

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include <immintrin.h>
#include "gemm.h"

/* update() on AVX-512, 16 parameters at a time (masked at the end, so
 * every parameter gets the same arithmetic wherever a range ends). Its
 * square root and two divisions a parameter kept the divider busy (0.85
 * ns a parameter in L1; 0.62 here): sqrt(v) is multiplied by
 * 1 / sqrt(bias2), and m divided by the denominator as m times its
 * reciprocal, rcp14's estimate refined by one Newton step (within a
 * couple of float ulps; the update, ~1e-3, moves a parameter by less
 * than its last bit). */
__attribute__((target("avx512f"))) static void update_avx512(const adam_consts *k, float *p, float *m, float *v,
                                                             const float *gr, size_t n) {
    const __m512 b1 = _mm512_set1_ps(k->b1), b2 = _mm512_set1_ps(k->b2), one_b1 = _mm512_set1_ps(k->one_b1),
                 one_b2 = _mm512_set1_ps(k->one_b2), wd = _mm512_set1_ps(k->wd), eps = _mm512_set1_ps(k->eps),
                 step_size = _mm512_set1_ps(k->step_size), two = _mm512_set1_ps(2.0f),
                 inv_bias2_sqrt = _mm512_set1_ps(1.0f / k->bias2_sqrt);
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 live = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        __m512 g = _mm512_maskz_loadu_ps(live, gr + i), pi = _mm512_maskz_loadu_ps(live, p + i),
               mi = _mm512_maskz_loadu_ps(live, m + i), vi = _mm512_maskz_loadu_ps(live, v + i);
        if (k->wd != 0.0f) g = _mm512_add_ps(g, _mm512_mul_ps(wd, pi));
        mi = _mm512_add_ps(_mm512_mul_ps(mi, b1), _mm512_mul_ps(one_b1, g));
        vi = _mm512_add_ps(_mm512_mul_ps(vi, b2), _mm512_mul_ps(one_b2, _mm512_mul_ps(g, g)));
        __m512 denom = _mm512_add_ps(_mm512_mul_ps(_mm512_sqrt_ps(vi), inv_bias2_sqrt), eps);
        __m512 r = _mm512_rcp14_ps(denom);
        r = _mm512_mul_ps(r, _mm512_fnmadd_ps(denom, r, two));
        pi = _mm512_sub_ps(pi, _mm512_mul_ps(step_size, _mm512_mul_ps(mi, r)));
        _mm512_mask_storeu_ps(p + i, live, pi);
        _mm512_mask_storeu_ps(m + i, live, mi);
        _mm512_mask_storeu_ps(v + i, live, vi);
    }
}

/* The update for the engine's instruction set (DAE_ISA picks another). */
static void update_any(const adam_consts *k, float *p, float *m, float *v, const float *gr, size_t n) {
    if (dae_gemm_isa() == DAE_ISA_AVX512) update_avx512(k, p, m, v, gr, n);
    else update(k, p, m, v, gr, n);
}
#else
#define update_any update
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

void dae_adam_step(dae_adam *a, float *params, const float *grads) {
    dae_adam_begin_step(a);
    dae_adam_update_range(a, params, grads, 0, a->n);
}
