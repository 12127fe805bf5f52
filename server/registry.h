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
#include "dae_status.h"
#include "dataset.h"
#include "model.h"

typedef struct srv_model {
    atomic_int refs;
    char name[DAE_NAME_MAX + 1]; /* dae_name_valid */
    char version[24];     /* "sha256:0123456789ab" */
    char sha256[65];      /* of the weights file */
    char *path;           /* owned */
    size_t file_bytes;
    char loaded_at[32];   /* UTC, ISO 8601 */
    int in_dir;           /* loaded from the models directory (a rescan may drop it) */
    long long file_id[3]; /* device, inode, mtime in ns: a changed file is reloaded */
    dae_model net;        /* read-only once loaded */
    char **meta_keys, **meta_values; /* owned: the file's __metadata__ */
    int n_meta;
    int max_batch;        /* of the workspaces below */
    /* One inference workspace per worker, made on first use by that
     * worker (only worker i touches slot i), and slot SRV_MAX_WORKERS for
     * the one request srv_infer_run_now runs at a time (inference.h);
     * freed with the model. */
    dae_workspace *workspaces[SRV_MAX_WORKERS + 1];
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

/* Returns worker's workspace of m (0 to SRV_MAX_WORKERS), making it on
 * first use (NULL when out of memory). Only worker `worker` may call this
 * for that index. */
dae_workspace *srv_model_workspace(srv_model *m, int worker);

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

/* ------------------------------------------------------------ hot swap
 *
 * The models directory may hold a file ACTIVE with the name of the
 * default model (one line). The registry writes it (temporary file,
 * fsync, rename, fsync of the directory) on every activation, reads it
 * when it opens (it wins over cfg->model when it names a loadable model)
 * and on every srv_registry_reload, so replicas that share the directory
 * follow each other's activations. */

/* The ACTIVE file's name inside the models directory. */
#define SRV_ACTIVE_FILE "ACTIVE"

/* The file of the models directory whose flock the replicas sharing it
 * take around activations, removals and replacements (registry.c). */
#define SRV_LOCK_FILE ".dae.lock"

/* srv_registry_activate, _remove and _install return DAE_OK or, with a
 * sentence in err:
 *   DAE_ERR_NOT_FOUND  no model of that name (activate, remove)
 *   DAE_ERR_IN_USE     the model is the default (remove; install with replace)
 *   DAE_ERR_INVALID    remove: the model is not a file of the models directory
 *   DAE_ERR_EXISTS     install: the name is taken and replacing was not asked
 *   DAE_ERR_FORMAT     install_upload: the file does not load as a model this server runs
 *   DAE_ERR_IO         a file could not be written, renamed, removed or loaded
 *   DAE_ERR_NOMEM      install: out of memory (the file is in place) */

/* What one activation did, read in the step that did it: a concurrent
 * activation cannot mix its model into the answer. */
typedef struct {
    char previous[DAE_NAME_MAX + 1]; /* the default before ("" when none) */
    char version[24];                /* the activated model's */
} srv_activation;

/* Makes the model called name the default for new requests (requests
 * holding the old one finish on it) and records it in the ACTIVE file.
 * Counts a switch when the default changes. done (may be NULL) says what
 * it did. */
dae_status srv_registry_activate(srv_registry *r, const char *name, srv_activation *done, char *err,
                                 size_t errlen);

/* Deletes the file of the non-default model called name and unlists it
 * (requests holding it finish on it). */
dae_status srv_registry_remove(srv_registry *r, const char *name, char *err, size_t errlen);

/* Rescans the models directory (new files are loaded, changed files
 * reloaded, removed files unlisted; files that fail to load are skipped
 * with a log line) and follows the ACTIVE file. Never fails. */
void srv_registry_reload(srv_registry *r);

/* 1 when the name is taken: a model called name is listed or
 * DIR/NAME.safetensors exists. *active (may be NULL) is then 1 when that
 * model is the default or the one the ACTIVE file names. */
int srv_registry_name_taken(srv_registry *r, const char *name, int *active);

/* Installs the complete weights file tmp_path, written beside the target
 * in the models directory, as DIR/NAME.safetensors and lists it. Without
 * replace it never writes over a file (the rename refuses an existing
 * target: DAE_ERR_EXISTS, as when the name is listed); with replace it
 * may take the place of a model that is not the default (DAE_ERR_IN_USE
 * otherwise). The file is loaded before it is moved, so a file that does
 * not load never appears (DAE_ERR_IO, err says why). Checks and rename
 * happen under the lock of activations and rescans. On failure tmp_path
 * is left for the caller to remove. */
dae_status srv_registry_install(srv_registry *r, const char *name, const char *tmp_path, int replace, char *err,
                                size_t errlen);

/* srv_registry_install for a file a client sent (PUT /models/{name}):
 * one that was read but does not load as a model this server runs is
 * DAE_ERR_FORMAT, the client's mistake, not DAE_ERR_IO. On DAE_OK *json
 * is the installed model as GET /models/{name} shows it, made as it was
 * listed (a DELETE right after cannot take it from the answer), or NULL
 * when out of memory. */
dae_status srv_registry_install_upload(srv_registry *r, const char *name, const char *tmp_path, int replace,
                                       char **json, char *err, size_t errlen);

/* The v2 protocol's model repository (oip.h): unloading takes a model of
 * the models directory out of service without deleting its file (a
 * rescan passes over it), loading puts it back. */

/* Unlists the non-default model called name, keeping its file; requests
 * holding it finish on it. DAE_ERR_NOT_FOUND, DAE_ERR_IN_USE (the
 * default), DAE_ERR_INVALID (not a file of the models directory). */
dae_status srv_registry_unload(srv_registry *r, const char *name, char *err, size_t errlen);

/* Lists the model of DIR/NAME.safetensors again (an unloaded one, or a
 * new file). DAE_ERR_NOT_FOUND (no such file), DAE_ERR_FORMAT (it does
 * not load). */
dae_status srv_registry_load(srv_registry *r, const char *name, char *err, size_t errlen);

/* POST /v2/repository/index: a new malloc'd JSON array of the listed
 * models (state READY) and the unloaded ones whose files are there
 * (UNAVAILABLE), or NULL when out of memory. */
char *srv_registry_index_json(srv_registry *r);

/* Changes of the default model since the start. */
unsigned long long srv_registry_switches(srv_registry *r);

/* Reads the name in DIR/ACTIVE into name (len bytes); returns 0, or -1
 * when there is no such file or it does not hold a valid name. */
int srv_active_read(const char *dir, char *name, size_t len);

/* Writes name into DIR/ACTIVE atomically. Returns DAE_OK, or the failed
 * atomic write's status and fills err. */
dae_status srv_active_write(const char *dir, const char *name, char *err, size_t errlen);

#endif
