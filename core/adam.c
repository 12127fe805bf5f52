/* adam.c - torch.optim.Adam (single-tensor path) in float32. */
#include "adam.h"

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

HOT void dae_adam_update_range(dae_adam *a, float *params, const float *grads,
                               size_t begin, size_t end) {
    /* As PyTorch: the corrections are Python floats (double), applied as
     * float scalars to float tensors. */
    double bias1 = 1.0 - pow((double)a->beta1, (double)a->step);
    double bias2 = 1.0 - pow((double)a->beta2, (double)a->step);
    float step_size = (float)((double)a->lr / bias1);
    float bias2_sqrt = (float)sqrt(bias2);
    float b1 = a->beta1, b2 = a->beta2;
    float one_b1 = (float)(1.0 - (double)a->beta1), one_b2 = (float)(1.0 - (double)a->beta2);
    float wd = a->weight_decay, eps = a->eps;
    float *restrict m = a->m, *restrict v = a->v;
    float *restrict p = params;
    const float *restrict gr = grads;
    for (size_t i = begin; i < end; i++) {
        float g = gr[i];
        if (wd != 0.0f) g = g + wd * p[i];
        m[i] = m[i] * b1 + one_b1 * g;
        v[i] = v[i] * b2 + one_b2 * (g * g);
        float denom = sqrtf(v[i]) / bias2_sqrt + eps;
        p[i] = p[i] - step_size * (m[i] / denom);
    }
}

void dae_adam_step(dae_adam *a, float *params, const float *grads) {
    dae_adam_begin_step(a);
    dae_adam_update_range(a, params, grads, 0, a->n);
}
