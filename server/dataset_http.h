/* dataset_http.h - the HTTP face of data sets: the directories of the
 * data directory (--data-dir) that POST /train reads. PUT
 * /datasets/{name} turns an uploaded archive into a data set
 * (io/dataset_import.h: the four IDX files of a split, or clean images cut
 * into the input size of the default model); GET /datasets and GET
 * /datasets/{name} describe every data set directory, uploaded or put
 * there by hand; DELETE /datasets/{name} removes one.
 *
 * No HTTP library here, as in model_http.h: the functions end in a
 * dae_status and a sentence, and http.c's handlers answer them (its edge
 * table turns the statuses into HTTP statuses, SRV_EDGE_DATASET).
 *
 * Nothing half-written is ever seen under a data set's name. An upload is
 * imported in memory, written (with its sidecar DATASET/dataset.json,
 * which says the server wrote it) inside a staging directory
 * DATA_DIR/.tmp.<pid>.NAME.XXXXXX, and moved to DATA_DIR/NAME in one
 * rename (renameat2: RENAME_NOREPLACE, or RENAME_EXCHANGE to replace, the
 * old copy then removed). A delete renames the directory away to such a
 * name before removing its files. Staging directories whose pid is gone,
 * or untouched for a minute, are removed when the server starts
 * (srv_datasets_new), as the models directory's temporaries are.
 *
 * A data set a queued or running training job names is neither replaced
 * nor deleted (DAE_ERR_IN_USE): a queued job would fail on a missing
 * data set, or train on other data than it was submitted with. */
#ifndef SRV_DATASET_HTTP_H
#define SRV_DATASET_HTTP_H

#include <stddef.h>

#include "config.h"
#include "dae_status.h"
#include "registry.h"
#include "training.h"

typedef struct srv_datasets srv_datasets;

/* The data sets of cfg->data_dir, for the server of registry (whose
 * default model gives an upload's image size) and training (may be NULL:
 * no job uses a data set). All three outlive the handle. Removes the
 * stale staging directories of the data directory. NULL if out of
 * memory. */
srv_datasets *srv_datasets_new(const srv_config *cfg, srv_registry *registry, srv_training *training);

/* Frees ds; NULL is fine. */
void srv_datasets_free(srv_datasets *ds);

/* GET /datasets: {"datasets":[...]} with every valid data set directory
 * of the data directory, by name (malloc'd; NULL if out of memory).
 * Directories that are not data sets are left out. */
char *srv_datasets_list_json(srv_datasets *ds);

/* GET /datasets/{name}: the data set's JSON into *json (malloc'd):
 * name, train_count, test_count, rows, cols, bytes (of its four files),
 * sha256 (of the four files as stored, concatenated in the order
 * train-images, train-labels, t10k-images, t10k-labels), files, created
 * (the directory's modification time, UTC ISO 8601) and source ("upload"
 * when PUT /datasets wrote it, else "directory"). Returns DAE_OK;
 * DAE_ERR_NOT_FOUND (no such directory, or a name dae_name_valid
 * refuses), DAE_ERR_INVALID (a directory that is not a valid data set: the
 * loader's sentence), DAE_ERR_IO (its files cannot be read),
 * DAE_ERR_NOMEM. err says why. */
dae_status srv_dataset_get(srv_datasets *ds, const char *name, char **json, char *err, size_t errlen);

/* PUT /datasets/{name}: imports the len bytes of body (a tar, gzipped or
 * not, or a zip archive) as the data set name and answers its JSON, as
 * GET shows it, plus "import", the import's report, in *json (malloc'd).
 * *replaced is 1 when an existing data set was replaced (replace must be
 * set for that). On failure nothing is left in the data directory.
 * Returns DAE_OK; DAE_ERR_INVALID (a bad name; content the importer
 * refuses: unsafe members, too few images, ...), DAE_ERR_FORMAT (not a
 * readable archive, image or IDX file), DAE_ERR_TOO_LARGE (a size limit:
 * the body over cfg->max_dataset_bytes, a member, the pixels),
 * DAE_ERR_EXISTS (the name is taken and replace is 0), DAE_ERR_IN_USE (a
 * queued or running job names it), DAE_ERR_BUSY (another upload is being
 * imported), DAE_ERR_IO, DAE_ERR_NOMEM. err says why, naming the member
 * at fault. */
dae_status srv_dataset_put(srv_datasets *ds, const char *name, const void *body, size_t len, int replace,
                           int *replaced, char **json, char *err, size_t errlen);

/* DELETE /datasets/{name}: renames the data set's directory away, then
 * removes it. Returns DAE_OK; DAE_ERR_NOT_FOUND, DAE_ERR_IN_USE (a queued
 * or running job names it), DAE_ERR_IO. err says why. */
dae_status srv_dataset_delete(srv_datasets *ds, const char *name, char *err, size_t errlen);

#endif
