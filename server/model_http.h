/* model_http.h - the HTTP face of model files: GET /models/{name}/weights
 * hands out a model's weights file exactly as it was loaded, with the
 * SHA-256 the registry took of it as its ETag; PUT /models/{name} takes
 * a weights file (a safetensors file, as PyTorch or `dae train` writes
 * it) and installs it through the registry, which loads it as it loads
 * the files of the models directory at start (the one validation) before
 * it is moved into place.
 *
 * No HTTP library here, as in train_http.h: the functions end in a
 * dae_status and a sentence, and http.c's handlers answer them (its edge
 * table turns the statuses of an upload into HTTP statuses,
 * SRV_EDGE_MODEL_PUT).
 *
 * The active (default) model is never replaced by an upload, even with
 * replace: a file swapped under the name that new requests use would
 * change every replica's answers at once, unannounced; the way is an
 * upload under a new name and an activation, which is logged, counted and
 * followed by the replicas through the ACTIVE file. */
#ifndef SRV_MODEL_HTTP_H
#define SRV_MODEL_HTTP_H

#include <stddef.h>

#include "config.h"
#include "dae_status.h"
#include "registry.h"

/* Largest weights file PUT /models/{name} takes (the image routes' limit,
 * --max-body, is for images). The reference network's file is under
 * 1 MiB; this leaves room for much larger architectures. */
#define SRV_MODEL_MAX_BYTES ((long long)64 << 20)

/* A weights file to send. */
typedef struct {
    int fd;                /* the open file, the caller's to close (or hand to the response); -1: none */
    size_t len;            /* its size */
    int not_modified;      /* If-None-Match named its ETag: answer 304, no file opened */
    char etag[80];         /* "\"sha256:<64 hex digits>\"" */
    char disposition[128]; /* "attachment; filename=\"NAME.safetensors\"" */
} srv_model_file;

/* GET /models/{name}/weights: opens the weights file of the model called
 * name into *f, or only fills its headers and sets not_modified when
 * if_none_match (the request's If-None-Match header, may be NULL) names
 * its ETag or is "*". The file must be the one the model was loaded from
 * (same device, inode and modification time): its bytes are then those
 * the ETag's SHA-256 was taken of. Returns DAE_OK; DAE_ERR_NOT_FOUND (no
 * such model); DAE_ERR_CONFLICT (its file was changed or removed since it
 * was loaded: the next rescan reloads or unlists it); DAE_ERR_IO. err
 * says why. */
dae_status srv_model_file_open(srv_registry *r, const char *name, const char *if_none_match, srv_model_file *f,
                               char *err, size_t errlen);

/* PUT /models/{name}: installs the len bytes of body as the model called
 * name (dae_name_valid), in models_dir: written once to a temporary file
 * there, flushed (dae_file_write_temp: its name carries the pid, so a
 * later start removes it if this process dies), loaded by the registry's
 * loader and renamed into place (srv_registry_install_upload). *replaced is set to
 * 1 when a model of that name was replaced, and *json to the installed
 * model as GET /models/{name} shows it (NULL when out of memory for it).
 * On failure no file is left. Returns DAE_OK; DAE_ERR_INVALID (not a
 * valid name), DAE_ERR_FORMAT (the file does not load as a model: the
 * loader's sentence), DAE_ERR_TOO_LARGE (over SRV_MODEL_MAX_BYTES),
 * DAE_ERR_IN_USE (name is the active model), DAE_ERR_EXISTS (name is
 * taken and replace is 0), DAE_ERR_IO or DAE_ERR_NOMEM. err says why. */
dae_status srv_model_put(srv_registry *r, const char *models_dir, const char *name, const void *body, size_t len,
                         int replace, int *replaced, char **json, char *err, size_t errlen);

#endif
