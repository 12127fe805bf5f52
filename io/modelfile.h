/* modelfile.h - a model's weights and a training run's checkpoints as
 * safetensors files.
 *
 * A weights file holds the parameters under the PyTorch state_dict names
 * (PyTorch loads our files and we load PyTorch's) and __metadata__ with
 * the architecture spec and training facts. A checkpoint adds Adam's
 * moments and counters, so a run can resume; it is a separate file from
 * the weights, which stay PyTorch-loadable. Both are written atomically
 * (temporary file + rename), so a crash never leaves half a file. */
#ifndef DAE_MODELFILE_H
#define DAE_MODELFILE_H

#include <stddef.h>
#include <stdint.h>

#include "dae_status.h"
#include "model.h"
#include "tensors.h"
#include "train.h"

/* Writes the parameters as safetensors with the PyTorch state_dict names,
 * plus metadata: "architecture" (the spec), "format" and the caller's
 * key/value pairs (at most 62). Written atomically (temporary file +
 * rename). */
dae_status dae_model_save(const dae_model *m, const char *path,
                          const char *const *meta_keys, const char *const *meta_values,
                          int n_meta, char *err, size_t errlen);

/* dae_st_load + dae_model_from_safetensors: builds *m from the weights
 * file at path (the caller frees it with dae_model_free); messages name
 * the path. */
dae_status dae_model_load(dae_model *m, const char *path, char *err, size_t errlen);

/* Saves/loads the weights plus Adam's moments and counters.
 * load builds m from the checkpoint and fills s; on failure both are
 * zeroed and err names the path. */
dae_status dae_checkpoint_save(const char *path, const dae_model *m, const dae_train_state *s,
                               char *err, size_t errlen);
dae_status dae_checkpoint_load(const char *path, dae_model *m, dae_train_state *s,
                               char *err, size_t errlen);

/* ------------------------------------------------------------ either kind */

/* What a model file holds besides the network: its kind and its metadata. */
typedef enum { DAE_MODEL_FILE_WEIGHTS, DAE_MODEL_FILE_CHECKPOINT } dae_model_file_kind;

typedef struct {
    dae_model_file_kind kind;
    dae_st_file meta; /* the file's __metadata__ only (no tensors); release with dae_st_free */
} dae_model_info;

/* Builds *m from the bytes of a weights file or of a training checkpoint
 * (told apart by the "format" metadata; a checkpoint's Adam state is
 * checked and dropped). name (the path) begins every message. When info
 * is not NULL it receives the kind and the metadata (read it with
 * dae_st_meta, release it with dae_st_free(&info->meta)). On failure *m
 * and *info are zeroed. */
dae_status dae_model_parse(const uint8_t *buf, size_t len, const char *name, dae_model *m, dae_model_info *info,
                           char *err, size_t errlen);

/* dae_file_read + dae_model_parse: the one loader of the front ends, which
 * reads the file at path once whichever kind it is. */
dae_status dae_model_open(const char *path, dae_model *m, dae_model_info *info, char *err, size_t errlen);

#endif
