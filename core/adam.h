/* adam.h - the Adam optimiser with torch.optim.Adam's update: weight
 * decay added to the gradient, bias-corrected moments, eps added after
 * dividing sqrt(v) by sqrt(1 - beta2^t); PyTorch's exact operations, or
 * with the engine's AVX-512 kernels (DAE_ISA) reciprocals for the
 * divisions, within a few ulps of them. */
#ifndef DAE_ADAM_H
#define DAE_ADAM_H

#include <stddef.h>

#include "dae_status.h"

typedef struct {
    float lr, beta1, beta2, eps, weight_decay;
    long step;     /* updates done so far */
    size_t n;      /* parameter count */
    float *m, *v;  /* owned: first and second moments (exp_avg, exp_avg_sq) */
} dae_adam;

/* Sets PyTorch's defaults (betas 0.9/0.999, eps 1e-8) with the given rate
 * and weight decay, and zeroed moments for n parameters. */
dae_status dae_adam_init(dae_adam *a, size_t n, float lr, float weight_decay,
                         char *err, size_t errlen);
void dae_adam_free(dae_adam *a);

/* Counts one step (call once per optimiser step, before the updates). */
void dae_adam_begin_step(dae_adam *a);

/* Updates params[begin, end) from grads[begin, end) with the current step's
 * bias corrections; threads may update disjoint ranges of one step. */
void dae_adam_update_range(dae_adam *a, float *params, const float *grads,
                           size_t begin, size_t end);

/* dae_adam_update_range from the sum of n_grads gradient buffers, added
 * in buffer order (the same bits as summing them first), each zeroed as it
 * is read: a data-parallel step's per-thread gradients summed, applied and
 * made ready for the next step's sums in one pass over memory. */
void dae_adam_update_sum_range(dae_adam *a, float *params, float *const *grads, int n_grads, size_t begin,
                               size_t end);

/* A weight gradient that is a sum of outer products over a batch (a
 * convolution whose kernel covers its whole input, or whose input is one
 * pixel): the weight (n_rows, n_cols) has the gradient
 * sum over images b of rows[b] (x) cols[b], rows (batch, n_rows) and cols
 * (batch, n_cols) batch-major, a part of the batch per buffer. */
typedef struct {
    const float *rows, *cols;
    int batch;
} dae_outer_part;

/* dae_adam_update_range on columns [col_begin, col_end) of such a weight
 * (every row), whose parameters are params[offset, offset + n_rows *
 * n_cols), from its gradient summed over the parts' images in order (a
 * multiply-add an image, fused where the engine's instruction set has
 * it): a tile of the gradient at a time, applied where it was summed and
 * never stored. The same bits as the update from that gradient; threads
 * may update disjoint column ranges of one step. */
void dae_adam_update_outer(dae_adam *a, float *params, size_t offset, int n_rows, int n_cols, int col_begin,
                           int col_end, const dae_outer_part *parts, int n_parts);

/* One whole step: begin_step + update of every parameter. */
void dae_adam_step(dae_adam *a, float *params, const float *grads);

#endif
