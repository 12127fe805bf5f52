/* train_run.h - one training run from a typed request, the way both
 * front ends do it: `dae train` and the server's training jobs.
 *
 * dae_train_run_open loads the data set, builds the network (the
 * request's architecture, or the one of a checkpoint to resume), checks
 * that it takes the data set's images and readies the optimiser;
 * dae_train_run_train trains, keeping the last epoch's loss and test
 * metrics; dae_train_run_save writes the weights with the training facts
 * as metadata (train.h's set), computing the test metrics first when
 * evaluation was asked and no epoch ran. What differs between the front
 * ends stays with them: the CLI's progress bar, checkpoints and loss plots;
 * the server's queue, records, commit point and model registry. */
#ifndef DAE_TRAIN_RUN_H
#define DAE_TRAIN_RUN_H

#include <stdatomic.h>
#include <stddef.h>

#include "dae_status.h"
#include "idx.h"
#include "train.h"
#include "train_request.h"

typedef struct dae_train_run dae_train_run;

/* Opens a run of req on the data sets under data_dir; resume, when not
 * NULL, is a checkpoint (io/modelfile.h) to continue from (req's
 * architecture must then be NULL: the checkpoint's is used). A request
 * with a base_model starts from that weights file's network and weights
 * (fine-tuning: neither architecture nor resume then), with a fresh
 * optimiser; the saved model's metadata names it. A request with an
 * import_path trains on those images (io/dataset_import.h, cut to the
 * network's input size) instead of the data set named. req is copied. Returns DAE_OK with *out set; otherwise a sentence naming the
 * data set, file or field: DAE_ERR_NOT_FOUND when the data set is not
 * there, DAE_ERR_INVALID when the network does not take its images. */
dae_status dae_train_run_open(dae_train_run **out, const dae_train_request *req, const char *data_dir,
                              const char *resume, char *err, size_t errlen);

/* Trains up to the request's epochs. progress (may be NULL) sees every
 * step and epoch as dae_train's callback does; cancel (may be NULL) stops
 * the run at the next step with DAE_ERR_CANCELLED, the model then holding
 * the last completed step. */
dae_status dae_train_run_train(dae_train_run *run, dae_train_progress_fn progress, void *user,
                               const atomic_int *cancel, char *err, size_t errlen);

/* Writes the model to path (atomically, io/fileio.h) with the training
 * facts as metadata, program_version as dae_version, and the n_extra
 * pairs extra_keys/extra_values after them. Evaluates on the test split
 * first when evaluation was asked and no epoch of this run recorded it. */
dae_status dae_train_run_save(dae_train_run *run, const char *path, const char *program_version,
                              const char *const *extra_keys, const char *const *extra_values, int n_extra,
                              char *err, size_t errlen);

/* The run's network, optimiser state and configuration (the request's,
 * with the thread count resolved). Valid until dae_train_run_free. */
/* The run's data set: its training and held-out test images. */
const dae_dataset *dae_train_run_data(const dae_train_run *run);
const dae_model *dae_train_run_model(const dae_train_run *run);
const dae_train_state *dae_train_run_state(const dae_train_run *run);
const dae_train_config *dae_train_run_config(const dae_train_run *run);

/* Training images the run uses (the request's train_limit applied), and
 * the epochs done before it began (0 unless resumed). */
int dae_train_run_images(const dae_train_run *run);
int dae_train_run_first_epoch(const dae_train_run *run);

/* Seconds spent in dae_train_run_train. */
double dae_train_run_seconds(const dae_train_run *run);

/* NULL is fine. */
void dae_train_run_free(dae_train_run *run);

/* What a run of req would take, from the data set's headers: the bytes
 * of the data set in memory, the bytes a run on threads threads
 * allocates besides (dae_train_memory_bytes plus the saved copy of the
 * parameters), and the batch it would use. Reads no pixels. */
typedef struct {
    size_t dataset_bytes, run_bytes;
    int batch;
} dae_train_estimate;

dae_status dae_train_run_estimate(const dae_train_request *req, const char *data_dir, int threads,
                                  dae_train_estimate *out, char *err, size_t errlen);

#endif
