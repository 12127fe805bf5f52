/* dataset.h - images and labels in memory, and a data set of a training
 * and a test split: what dae_train and dae_evaluate work on.
 *
 * Reading them from IDX files (raw or gzip) is io/idx.h's work. */
#ifndef DAE_DATASET_H
#define DAE_DATASET_H

#include <stddef.h>
#include <stdint.h>

#include "dae_status.h"
#include "model.h"

typedef struct { int count, rows, cols; uint8_t *pixels; } dae_idx_images;   /* count*rows*cols bytes, owned */
typedef struct { int count; uint8_t *labels; } dae_idx_labels;              /* count bytes, owned */

/* A data set: a training and a test split of images with their labels;
 * each split has as many labels as images, and both splits images of the
 * same size. */
typedef struct { dae_idx_images train_images, test_images; dae_idx_labels train_labels, test_labels; } dae_dataset;

/* Release what the structs own and zero them; safe on zeroed structs,
 * idempotent, NULL allowed. */
void dae_idx_images_free(dae_idx_images *im);
void dae_idx_labels_free(dae_idx_labels *l);

/* Releases all four parts of d; safe on a zeroed struct, idempotent. */
void dae_dataset_free(dae_dataset *d);

/* Longest name of a data set or a model. */
#define DAE_NAME_MAX 64

/* 1 when name may name a data set or a model (a directory or a file
 * name of its own): 1 to DAE_NAME_MAX characters of [A-Za-z0-9._-], not
 * starting with '.' (so never ".", ".." or a hidden file). */
int dae_name_valid(const char *name);

/* How many of count images a limit selects: the first `limit`, or all
 * of them when limit is 0 (or not below count). */
int dae_limit_count(int limit, int count);

/* Checks that m takes images such as those of im (one gray channel of
 * im's size). Otherwise says so in err, naming model (a path or a word
 * for it) and the data set: "MODEL: the model takes 1x28x28 images, data
 * set NAME has 32x32 gray images". model may be NULL (no "MODEL: "). */
dae_status dae_model_check_images(const dae_model *m, const dae_idx_images *im, const char *model,
                                  const char *dataset, char *err, size_t errlen);

#endif
