/* tensors.h - a set of named F32 tensors with string metadata: what a
 * safetensors file holds once parsed.
 *
 * The engine maps a model's parameters to and from such a set
 * (model.h: dae_model_describe_tensors, dae_model_read_tensors,
 * dae_model_from_safetensors) without knowing the file format: parsing
 * and writing safetensors bytes and files is io/safetensors.h's work. The
 * type keeps the dae_st_ prefix of the format it mirrors. */
#ifndef DAE_TENSORS_H
#define DAE_TENSORS_H

#include <stddef.h>
#include <stdint.h>

/* Most dimensions a tensor may have. */
#define DAE_ST_MAX_DIMS 8

typedef struct {
    char *name;                 /* owned */
    int ndim;
    int64_t shape[DAE_ST_MAX_DIMS];
    size_t numel;
    float *data;                /* owned, numel floats, properly aligned */
} dae_st_tensor;

typedef struct {
    dae_st_tensor *tensors;     /* sorted by data offset, as in the file */
    int n_tensors;
    char **meta_keys, **meta_values; int n_meta;  /* the "__metadata__" string->string map */
} dae_st_file;

/* Releases everything *f owns and zeroes it. Safe on a zeroed struct and
 * on one already freed; f may be NULL. */
void dae_st_free(dae_st_file *f);

/* Returns the tensor named name, or NULL if there is none. The pointer
 * stays owned by f. */
const dae_st_tensor *dae_st_find(const dae_st_file *f, const char *name);

/* Returns the "__metadata__" value for key, or NULL if absent. The string
 * stays owned by f. */
const char *dae_st_meta(const dae_st_file *f, const char *key);

#endif
