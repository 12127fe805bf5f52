/* jobs.h - remote training: POST /train jobs, their FIFO queue, the
 * thread that runs one at a time, their records on disk, their JSON, the
 * Server-Sent Events stream of their progress and the training metrics.
 *
 * A job is validated field by field when it is submitted (srv_jobs_submit
 * answers 202 with the job, or the 4xx/503 to give), waits in a bounded
 * FIFO (--train-queue) and runs on the runner thread with --train-threads
 * threads. A job never writes over a model: its name must be free when it
 * is submitted (409 otherwise) and still free when its model is installed,
 * unless the request asks "replace": true, which may replace a model that
 * is not the active one. A finished job writes its model to a temporary
 * file beside MODELS_DIR/NAME.safetensors, then passes its commit point
 * and moves the file into place without clobbering (srv_registry_install),
 * lists it and activates it if asked.
 *
 * Cancelling raises the job's cancel flag, which dae_train checks every
 * step and the runner checks once more at the commit point, under the
 * jobs' lock: a DELETE answered 202 always ends the job cancelled with no
 * model; one that comes after the commit point is answered 409
 * job_finishing.
 *
 * Every record is STATE_DIR/ID.json, rewritten atomically (temporary file,
 * fsync, rename) on every change of state and after every epoch. At start
 * the records are read back and checked as requests are (a bad one is
 * skipped with a log line; ids never wrap), temporaries of interrupted
 * writes are removed, a job that was running (or whose record was being
 * rewritten) is failed with reason "interrupted" (jobs are not resumed),
 * and a queued one is queued again. */
#ifndef SRV_JOBS_H
#define SRV_JOBS_H

#include <stddef.h>
#include <sys/types.h>

#include "config.h"
#include "registry.h"

typedef struct srv_jobs srv_jobs;

/* An answer to give: status, error code and message, or a JSON body. */
typedef struct {
    int status;          /* 200, 202, or an error status */
    const char *code;    /* static snake_case error code when status >= 400 */
    char message[768];
    char *json;          /* malloc'd body of a success; the caller frees it */
    char id[24];         /* the job's id (202) */
} srv_jobs_answer;

/* Reads the records of cfg->state_dir and starts the runner thread.
 * Returns NULL and fills err on failure. */
srv_jobs *srv_jobs_start(const srv_config *cfg, srv_registry *registry, char *err, size_t errlen);

/* Begins shutdown without waiting: no job starts any more and the running
 * one is told to stop at its next step. NULL is fine. */
void srv_jobs_quiesce(srv_jobs *j);

/* Stops the runner, waiting at most seconds: a running job is stopped at
 * its next step and recorded failed ("interrupted"); queued ones stay
 * queued on disk. Ends every event stream. Returns 0, or -1 when the
 * runner was still inside a training step when the time ran out: the job
 * is then recorded interrupted and the runner left running, and j (and
 * the registry it uses) must not be freed. NULL is fine. */
int srv_jobs_stop(srv_jobs *j, double seconds);

/* Frees j (after srv_jobs_stop returned 0 and after the HTTP daemon has
 * stopped, as streams point into it). NULL is fine. */
void srv_jobs_free(srv_jobs *j);

/* POST /train: validates body (len bytes) and queues the job. */
void srv_jobs_submit(srv_jobs *j, const char *body, size_t len, srv_jobs_answer *a);

/* Validates body into a canonical JSON job request (the defaults filled
 * in) or fills a with the 400/422 to give. data_dir is where data sets
 * are looked up. Returns 0 or -1. Exposed for the unit tests. */
int srv_jobs_validate(const char *body, size_t len, const char *data_dir, srv_jobs_answer *a);

/* srv_jobs_validate, plus the job's estimated memory (data set + what a
 * run with threads threads allocates, see dae_train_memory_bytes) against
 * train_budget bytes: over it, a is a 422 "train_memory_budget" naming
 * both numbers. train_budget 0 skips that check. */
int srv_jobs_validate_memory(const char *body, size_t len, const char *data_dir, long long train_budget,
                             int threads, srv_jobs_answer *a);

/* Checks the text (len bytes) of a job record read from the state file
 * fname as srv_jobs_start does: 0 when it would be loaded, or -1 with the
 * reason in why. data_dir is where data sets are looked up. Exposed for
 * the unit tests. */
int srv_jobs_record_check(const char *fname, const char *text, size_t len, const char *data_dir, char *why,
                          size_t whylen);

/* GET /train: every job, newest first (malloc'd JSON, NULL if out of memory). */
char *srv_jobs_list_json(srv_jobs *j);

/* GET /train/{id}: the job, or NULL when there is none (*found says). */
char *srv_jobs_get_json(srv_jobs *j, const char *id, int *found);

/* DELETE /train/{id}: cancels a queued or running job (202: it will end
 * cancelled and write no model), or answers 404, 409 job_finished, or
 * 409 job_finishing once the job is past its commit point. */
void srv_jobs_cancel(srv_jobs *j, const char *id, srv_jobs_answer *a);

/* Ends every event stream (for the drain). */
void srv_jobs_end_streams(srv_jobs *j);

/* The training metrics as Prometheus text (malloc'd, NULL if out of memory). */
char *srv_jobs_metrics(srv_jobs *j);

/* ------------------------------------------------------------ events */

typedef struct srv_job_stream srv_job_stream;

/* Opens an event stream of the job id; NULL when there is no such job. */
srv_job_stream *srv_jobs_stream_open(srv_jobs *j, const char *id);

/* libmicrohttpd's content reader: writes the next events into buf (at
 * most max bytes); with nothing new it suspends conn until the job
 * changes and returns 0; -1 ends the stream (after the final "done"
 * event). conn is a struct MHD_Connection. */
ssize_t srv_jobs_stream_read(srv_job_stream *s, void *conn, char *buf, size_t max);

/* Ends the stream early (its client left or stopped reading): a
 * suspended connection is resumed, and the next read ends the stream.
 * Safe from any thread while the stream is open. */
void srv_jobs_stream_kick(srv_job_stream *s);

/* Frees a stream (libmicrohttpd's free callback). */
void srv_jobs_stream_close(srv_job_stream *s);

#endif
