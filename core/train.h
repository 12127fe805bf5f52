/* train.h - training a model on a data set in memory (dataset.h).
 *
 * One call trains for a number of epochs with threads over the batch:
 * each thread runs the forward and backward pass of its share of the
 * batch into its own gradient buffer; the buffers are summed in a fixed
 * order and Adam updates the parameters. Noise is drawn per image from
 * (seed, epoch, image index), and the shuffle per epoch from (seed, epoch),
 * so the same seed and thread count give bit-identical weights, and a run
 * resumed from a checkpoint continues exactly as an uninterrupted one. */
#ifndef DAE_TRAIN_H
#define DAE_TRAIN_H

#include <stdatomic.h>
#include <stdint.h>

#include "adam.h"
#include "dae_status.h"
#include "dataset.h"
#include "infer.h"
#include "metrics.h"
#include "model.h"
#include "noise.h"
#include "pool.h"

/* What the progress callback sees. */
typedef struct {
    int epoch;              /* 1-based epoch being trained */
    int epochs;             /* the last epoch of this run */
    long step;              /* steps done in this epoch */
    long steps_per_epoch;
    long total_steps;       /* optimiser steps done, counting resumed ones */
    double loss;            /* this step's batch loss (mean squared error) */
    double epoch_loss;      /* mean batch loss of the epoch so far */
    double images_per_s;    /* training throughput over this run so far */
    double elapsed_s;       /* wall time of this run so far */
    double run_fraction;    /* share of this run's steps done, 0 to 1 */
    double eta_s;           /* time left in this run at its pace so far; -1 before the first step */
    int epoch_done;         /* 1 on the call that closes an epoch */
    int has_test;           /* 1 when the test fields below are filled */
    double test_mse, test_psnr, test_ssim; /* the model on noisy test images */
} dae_train_progress;

typedef void (*dae_train_progress_fn)(const dae_train_progress *p, void *user);

typedef struct {
    int epochs;             /* train until this many epochs are done */
    int batch_size;
    float learning_rate;
    float weight_decay;
    uint64_t seed;          /* shuffling and noise */
    int threads;            /* 1..64, or 0 for every online CPU */
    int limit;              /* use the first `limit` training images; 0 = all */
    dae_noise_spec noise;
    int eval_each_epoch;    /* evaluate on the test set after each epoch */
    int eval_limit;         /* test images for that evaluation; 0 = all */
    dae_train_progress_fn progress; /* may be NULL */
    void *user;
    int progress_every;     /* call progress every N steps (and at epoch ends); 0 = 1 */
    const atomic_int *cancel; /* checked every step; may be NULL */
} dae_train_config;

/* The reference hyper-parameters: 10 epochs, batch 64, lr 1e-3, weight
 * decay 1e-5, gaussian sigma 0.5 unclipped, seed 0, all CPUs. */
void dae_train_config_default(dae_train_config *cfg);

/* The number of online CPUs (1..64): the default thread count. */
int dae_online_cpus(void);

/* Checks every field of cfg; err names the field and its allowed range. */
dae_status dae_train_config_check(const dae_train_config *cfg, char *err, size_t errlen);

/* The bytes a training run of m with cfg allocates on n_train training
 * images (the batch is clamped to them, as dae_train does), besides the
 * data set itself: per-thread workspaces and buffers for the batch, the
 * optimiser's state, and evaluation buffers when cfg->eval_each_epoch.
 * Most of it grows with the batch size: a front end checks it against a
 * memory budget before starting a run. Allocates nothing. */
size_t dae_train_memory_bytes(const dae_model *m, const dae_train_config *cfg, int n_train);

/* Where a run starts: epochs already done with the optimiser's state.
 * A fresh run has epochs_done 0 and a zeroed optimiser. */
typedef struct {
    dae_adam adam;
    int epochs_done;
} dae_train_state;

dae_status dae_train_state_init(dae_train_state *s, const dae_model *m, const dae_train_config *cfg,
                                char *err, size_t errlen);
void dae_train_state_free(dae_train_state *s);

/* Trains m in place from state s up to cfg->epochs epochs on data's
 * training images (test images for evaluation). Returns DAE_ERR_CANCELLED
 * when the cancel flag was raised (m and s then hold the last completed
 * step). */
dae_status dae_train(dae_model *m, dae_train_state *s, const dae_dataset *data,
                     const dae_train_config *cfg, char *err, size_t errlen);

/* ------------------------------------------------------------ metadata */

/* The training facts a weights file records in its __metadata__, the same
 * set whether `dae train` or a server job trained it. */
enum { DAE_TRAIN_META_MAX = 32, DAE_TRAIN_META_VALUE_LEN = 64 };
typedef struct {
    int n;
    const char *keys[DAE_TRAIN_META_MAX];
    const char *values[DAE_TRAIN_META_MAX]; /* into text, or the caller's strings */
    char text[DAE_TRAIN_META_MAX][DAE_TRAIN_META_VALUE_LEN];
} dae_train_meta;

/* What a run knows besides its configuration. */
typedef struct {
    const char *dataset;
    const char *program_version; /* recorded as dae_version */
    int train_images;
    int threads;
    double seconds;
    int has_loss;
    double final_loss;
    int test_images;             /* 0: the run has no test metrics */
    double test_mse, test_psnr, test_ssim;
} dae_train_facts;

/* Fills meta with dataset, epochs (done), batch_size, learning_rate,
 * weight_decay, noise, seed, train_images, threads, train_seconds, created
 * (UTC, ISO 8601), dae_version, final_loss and, with test metrics,
 * test_images, test_noise, test_seed, test_mse, test_psnr, test_ssim. */
void dae_train_meta_init(dae_train_meta *meta, const dae_train_config *cfg, const dae_train_state *s,
                         const dae_train_facts *facts);

/* Appends key = value; both must outlive meta (they are not copied).
 * Ignored when meta is full. */
void dae_train_meta_add(dae_train_meta *meta, const char *key, const char *value);

#endif
