/* registry.h - the models the server knows, by name, with reference-
 * counted handles.
 *
 * At start the registry loads every NAME.safetensors in the models
 * directory and the default model (--model: a path, or a name in the
 * directory). Each model is a srv_model handle: a request takes a
 * reference to the model it starts with (srv_registry_acquire) and drops
 * it when done (srv_model_release); the registry holds one reference per
 * listed model. A model is freed when its last reference goes, so a later
 * replacement or removal of a model never pulls it from under a request
 * that is using it.
 *
 * A model's version is "sha256:" and the first 12 hex digits of the
 * SHA-256 of its weights file: the same weights always have the same
 * version. */
#ifndef SRV_REGISTRY_H
#define SRV_REGISTRY_H

#include <stdatomic.h>
#include <stddef.h>

#include "config.h"
#include "model.h"

/* Longest model name; names are [A-Za-z0-9._-], not starting with '.'. */
#define SRV_MODEL_NAME_LEN 64

typedef struct srv_model {
    atomic_int refs;
    char name[SRV_MODEL_NAME_LEN + 1];
    char version[24];     /* "sha256:0123456789ab" */
    char sha256[65];      /* of the weights file */
    char *path;           /* owned */
    size_t file_bytes;
    char loaded_at[32];   /* UTC, ISO 8601 */
    dae_model net;        /* read-only once loaded */
    char **meta_keys, **meta_values; /* owned: the file's __metadata__ */
    int n_meta;
    int max_batch;        /* of the workspaces below */
    /* One inference workspace per worker, made on first use by that
     * worker (only worker i touches slot i), freed with the model. */
    dae_workspace *workspaces[SRV_MAX_WORKERS];
} srv_model;

typedef struct srv_registry srv_registry;

/* Loads the models of cfg->models_dir (a missing directory is an empty
 * one; files that fail to load are skipped with a warning on stderr) and
 * the default model cfg->model, whose failure to load is an error.
 * Workspaces are made for batches of cfg->max_batch tiles. Returns NULL
 * and fills err on failure. */
srv_registry *srv_registry_open(const srv_config *cfg, char *err, size_t errlen);

/* Releases the registry's references (models still held by requests live
 * on until released) and frees it; NULL is fine. */
void srv_registry_free(srv_registry *r);

/* Returns a new reference to the model called name, or to the default
 * model when name is NULL; NULL when there is no such model. The caller
 * drops it with srv_model_release. */
srv_model *srv_registry_acquire(srv_registry *r, const char *name);

/* Takes one more reference to m (which the caller already holds). */
void srv_model_retain(srv_model *m);

/* Drops one reference; the last one frees the model. NULL is fine. */
void srv_model_release(srv_model *m);

/* Returns worker's workspace of m, making it on first use (NULL when out
 * of memory). Only worker `worker` may call this for that index. */
dae_workspace *srv_model_workspace(srv_model *m, int worker);

/* 1 when name is a valid model name. */
int srv_model_name_valid(const char *name);

/* GET /models: a new malloc'd JSON document listing every model, or NULL
 * when out of memory. */
char *srv_registry_list_json(srv_registry *r);

/* GET /models/{name}: a new malloc'd JSON document describing the model
 * (with its architecture and metadata), or NULL when there is none (or out
 * of memory: *found tells which). */
char *srv_registry_model_json(srv_registry *r, const char *name, int *found);

/* Calls fn(ctx, model, is_default) for every listed model, under the
 * registry's lock (fn must not call back into the registry). */
void srv_registry_foreach(srv_registry *r, void (*fn)(void *ctx, const srv_model *m, int is_default), void *ctx);

/* Number of listed models. */
int srv_registry_count(srv_registry *r);

#endif
