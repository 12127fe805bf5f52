/* training.h - remote training: the FIFO queue of training jobs, the
 * thread that runs one at a time, cancellation and its commit point, and
 * the training metrics. No HTTP here: functions end in a dae_status and a
 * sentence, and the HTTP face (train_http.h) picks the answer; a job's
 * record and JSON are train_records.h's.
 *
 * A job arrives validated (its canonical request), waits in a bounded FIFO
 * (--train-queue) and runs on the runner thread with --train-threads
 * threads. A job never writes over a model: its name must be free when it
 * is submitted and still free when its model is installed, unless the
 * request asks "replace": true, which may replace a model that is not the
 * active one. A finished job writes its model to a temporary file beside
 * MODELS_DIR/NAME.safetensors, then passes its commit point and moves the
 * file into place without clobbering (srv_registry_install), lists it and
 * activates it if asked.
 *
 * Cancelling raises the job's cancel flag, which dae_train checks every
 * step and the runner checks once more at the commit point, under the
 * training lock: a cancel that succeeds always ends the job cancelled
 * with no model; one that comes after the commit point is refused
 * (DAE_ERR_IN_USE). */
#ifndef SRV_TRAINING_H
#define SRV_TRAINING_H

#include <stdatomic.h>
#include <stddef.h>

#include <cJSON.h>

#include "config.h"
#include "dae_status.h"
#include "registry.h"
#include "train_records.h"

typedef struct srv_training srv_training;

/* Sees a job under the training lock: version grows with every change
 * of it. Must be quick and must not call back into the training module. */
typedef void (*srv_training_view_fn)(const srv_train_job *job, unsigned long version, void *user);

/* Reads the records of cfg->state_dir (their requests checked as POST /train checks
 * them, train_records.h), removes stale temporaries of cfg->models_dir and
 * starts the runner thread. Returns NULL and fills err on failure. */
srv_training *srv_training_start(const srv_config *cfg, srv_registry *registry, char *err,
                                 size_t errlen);

/* Begins shutdown without waiting: no job starts any more and the running
 * one is told to stop at its next step. NULL is fine. */
void srv_training_quiesce(srv_training *t);

/* Stops the runner, waiting at most seconds: a running job is stopped at
 * its next step and recorded failed ("interrupted"); queued ones stay
 * queued on disk. Returns 0, or -1 when the runner was still inside a
 * training step when the time ran out: the job is then recorded
 * interrupted and the runner left running, and t (and the registry it
 * uses) must not be freed. NULL is fine. */
int srv_training_stop(srv_training *t, double seconds);

/* Frees t (after srv_training_stop returned 0). NULL is fine. */
void srv_training_free(srv_training *t);

/* Registers fn (NULL: none) to see every change of a job: a change of
 * state, its progress at most every 0.1 s, its end. fn is called with
 * the training lock held (see srv_training_view_fn), on whichever thread
 * made the change. Once this returns, the previous fn is no longer
 * called. */
void srv_training_on_change(srv_training *t, srv_training_view_fn fn, void *user);

/* Registers fn (NULL: none) to be told when a job starts running (running
 * 1) and when it ends (0), on the runner thread with the training lock
 * held; told at once when a job runs as it is registered. The server lets
 * the inference workers preempt a running job's threads with it
 * (srv_infer_set_preemptive). */
typedef void (*srv_training_running_fn)(void *user, int running);
void srv_training_on_running(srv_training *t, srv_training_running_fn fn, void *user);

/* Queues a job of the canonical request req (taken over, as the HTTP
 * face's validation writes it), made by the HTTP request request_id (may
 * be NULL), and shows it to fn (may be NULL) as it is queued. Fails with DAE_ERR_STOPPING (shutdown began), DAE_ERR_BUSY (the
 * queue is full), DAE_ERR_CONFLICT (a queued or running job will write a
 * model of that name), DAE_ERR_IN_USE (that name is the active model),
 * DAE_ERR_EXISTS (a model of that name exists and replacing was not
 * asked), DAE_ERR_TOO_LARGE (every job id is taken) or DAE_ERR_NOMEM. */
dae_status srv_training_submit(srv_training *t, cJSON *req, const char *request_id, srv_training_view_fn fn,
                               void *user, char *err,
                               size_t errlen);

/* Cancels the queued or running job id: it will end cancelled and write
 * no model; fn (may be NULL) sees it just after. Fails with
 * DAE_ERR_NOT_FOUND (no such job), DAE_ERR_CONFLICT (it has already ended)
 * or DAE_ERR_IN_USE (it is past its commit point, installing its model). */
dae_status srv_training_cancel(srv_training *t, const char *id, srv_training_view_fn fn, void *user, char *err,
                               size_t errlen);

/* Shows the job id to fn; DAE_ERR_NOT_FOUND when there is none. */
dae_status srv_training_view(srv_training *t, const char *id, srv_training_view_fn fn, void *user);

/* A job's JSON text (or its loss curve) as of one change, valid UTF-8,
 * made once for all its readers: each holds a reference, and the last to
 * let go frees it. */
typedef struct srv_job_text srv_job_text;
struct srv_job_text {
    atomic_int refs;
    /* The same as raw deflate blocks that end on a byte boundary (a sync
     * flush), so that they join others' into one stream, once a reader
     * made them (it holds one reference), or NULL; a deflated text's
     * crc32 is that of the text it holds. */
    _Atomic(srv_job_text *) deflated;
    unsigned long crc32;
    size_t len;
    char s[]; /* len bytes and a NUL */
};

/* A text of len bytes copied from bytes, one reference; NULL if out of
 * memory. */
srv_job_text *srv_job_text_new(const void *bytes, size_t len);

/* Takes another reference to text (NULL is fine); returns text. */
srv_job_text *srv_job_text_retain(srv_job_text *text);

/* Lets go of a reference to text (NULL is fine). */
void srv_job_text_release(srv_job_text *text);

/* A reference to the text of job id as of its last change in *text,
 * unless its change count *version is still seen (then *text is NULL, as
 * when out of memory); *finished: it has ended (version and finished may
 * be NULL). DAE_ERR_NOT_FOUND when there is no such job. */
dae_status srv_training_text(srv_training *t, const char *id, unsigned long seen, srv_job_text **text,
                             unsigned long *version, int *finished);

/* A reference to the loss curve of job id, as CSV (svg 0: the columns of
 * srv_train_job_loss_csv) or SVG (1), as of its last change, in *curve
 * (NULL if out of memory); DAE_ERR_NOT_FOUND when there is no such job. */
dae_status srv_training_loss(srv_training *t, const char *id, int svg, srv_job_text **curve);

/* References to every job's text, newest first (GET /train), in *texts
 * (malloc'd; *n of them, each let go with srv_job_text_release, then the
 * array freed). DAE_ERR_NOMEM when out of memory (nothing held then). */
dae_status srv_training_texts(srv_training *t, srv_job_text ***texts, int *n);

/* The training metrics as Prometheus text (malloc'd, NULL if out of memory). */
char *srv_training_metrics(srv_training *t);

/* The registry t installs its models into. */
srv_registry *srv_training_registry(srv_training *t);

/* 1 when a queued or running job names the data set name as its
 * "dataset" (the id of the first such job goes into job, joblen bytes),
 * else 0: what a data set's replacement or deletion must wait for. */
int srv_training_dataset_in_use(srv_training *t, const char *name, char *job, size_t joblen);

#endif
