/* infer.h - running a model over many images: batched inference with a
 * pool's threads (what denoising tiles and evaluation share), and
 * evaluation of denoising quality on a set of images (what `dae eval`,
 * `dae train` and server training jobs report). */
#ifndef DAE_INFER_H
#define DAE_INFER_H

#include <stdint.h>

#include "dae_status.h"
#include "metrics.h"
#include "model.h"
#include "noise.h"
#include "pool.h"

/* The fixed noise seed of every evaluation, so numbers compare across runs. */
#define DAE_EVAL_SEED 20260101ULL

/* Images each evaluation thread runs through the network at once (its
 * workspace's max batch; dae_train_memory_bytes counts it). */
#define DAE_EVAL_CHUNK 64

/* Evaluates m on count images (uint8, h x w each): every image gets noise
 * from (seed, image index); denoised and noisy accumulate the quality of
 * the model's output and of the noisy input against the clean image. Uses
 * pool (or one thread when NULL). */
dae_status dae_evaluate(const dae_model *m, dae_pool *pool, const uint8_t *images, int count,
                        const dae_noise_spec *noise, uint64_t seed, dae_quality *denoised,
                        dae_quality *noisy, char *err, size_t errlen);

/* Batched inference over count images with the pool's threads, each with
 * its own workspace from workspaces[thread]; a thread's share is run in
 * chunks of its workspace's max_batch. With no pool, or fewer than 4
 * images per thread, everything runs on the calling thread with
 * workspaces[0] (waking the others costs more). */
void dae_forward_parallel(const dae_model *m, dae_pool *pool, dae_workspace *const *workspaces,
                          const float *in, float *out, int count);

#endif
