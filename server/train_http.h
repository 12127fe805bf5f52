/* train_http.h - the HTTP face of remote training: validation of POST
 * /train bodies into canonical requests, the answers of the training
 * routes (the one place their statuses and error codes are chosen), and
 * the Server-Sent Events stream of a job's progress, fed by the training
 * module's change callback (training.h), suspending and resuming
 * libmicrohttpd connections.
 *
 * A job is validated field by field when it is submitted (422 naming the
 * field, 400 for a body that is not a JSON object), then queued by the
 * training module: 202 with the job, 503 when the queue is full or the
 * server is draining, 409 when its model name is taken. DELETE
 * /train/{id} answers 202 (the job will end cancelled and write no
 * model), 404, 409 job_finished, or 409 job_finishing once the job is
 * past its commit point. */
#ifndef SRV_TRAIN_HTTP_H
#define SRV_TRAIN_HTTP_H

#include <stddef.h>
#include <sys/types.h>

#include "config.h"
#include "dae_status.h"
#include "training.h"

typedef struct srv_train_http srv_train_http;

/* An answer to give: status, error code and message, or a JSON body. */
typedef struct {
    int status;          /* 200, 202, or an error status */
    const char *code;    /* static snake_case error code when status >= 400 */
    char message[768];
    char *json;          /* malloc'd body of a success; the caller frees it */
    char id[24];         /* the job's id (202) */
} srv_train_answer;

/* Validates body into a canonical JSON job request (the defaults filled
 * in; srv_train_request_check, train_records.h) or fills a with the
 * 400/422 to give. data_dir is where data sets
 * are looked up. Returns 0 or -1. Exposed for the unit tests. */
int srv_train_validate(const char *body, size_t len, const char *data_dir, srv_train_answer *a);

/* srv_train_validate, plus the request's base model looked up in
 * registry (when not NULL) and the job's estimated memory (data set + what
 * a run with threads threads allocates, see dae_train_memory_bytes)
 * against train_budget bytes: over it, a is a 422 "train_memory_budget"
 * naming both numbers. train_budget 0 skips that check. */
int srv_train_validate_memory(const char *body, size_t len, const char *data_dir, srv_registry *registry,
                              long long train_budget, int threads, srv_train_answer *a);

/* The face of the training module t for the server configured by cfg
 * (both outlive it): registers its change callback. NULL if out of
 * memory. */
srv_train_http *srv_train_http_new(srv_training *t, const srv_config *cfg);

/* Unregisters the change callback and frees f, after the HTTP daemon has
 * stopped (streams point into f). NULL is fine. */
void srv_train_http_free(srv_train_http *f);

/* POST /train: validates body (len bytes) and queues the job, whose
 * record keeps request_id, the X-Request-Id of the POST. */
void srv_train_http_submit(srv_train_http *f, const char *body, size_t len, const char *request_id,
                           srv_train_answer *a);

/* DELETE /train/{id}: cancels a queued or running job. */
void srv_train_http_cancel(srv_train_http *f, const char *id, srv_train_answer *a);

/* GET /train: every job's text, newest first (srv_training_texts). */
dae_status srv_train_http_list(srv_train_http *f, srv_job_text ***texts, int *n);

/* GET /train/{id}: a reference to the job's text in *text (NULL if out
 * of memory); DAE_ERR_NOT_FOUND when there is no such job. */
dae_status srv_train_http_get(srv_train_http *f, const char *id, srv_job_text **text);

/* GET /train/{id}/loss.csv (svg 0) and /loss.svg (1): a reference to
 * the job's loss curve (srv_training_loss). */
dae_status srv_train_http_loss(srv_train_http *f, const char *id, int svg, srv_job_text **curve);

/* GET /metrics: the training metrics (srv_training_metrics). */
char *srv_train_http_metrics(srv_train_http *f);

/* The training module f is the face of (the data set routes ask it which
 * data sets its jobs use). */
srv_training *srv_train_http_training(srv_train_http *f);

/* Ends every event stream (for the drain): suspended ones are resumed,
 * and the next read of each ends it. */
void srv_train_http_end_streams(srv_train_http *f);

/* ------------------------------------------------------------ events */

typedef struct srv_train_stream srv_train_stream;

/* Opens an event stream of the job id; NULL when there is no such job. */
srv_train_stream *srv_train_stream_open(srv_train_http *f, const char *id);

/* libmicrohttpd's content reader: writes the next events into buf (at
 * most max bytes); with nothing new it suspends conn until the job
 * changes and returns 0; -1 ends the stream (after the final "done"
 * event). conn is a struct MHD_Connection. */
ssize_t srv_train_stream_read(srv_train_stream *s, void *conn, char *buf, size_t max);

/* Ends the stream early (its client left or stopped reading): a
 * suspended connection is resumed, and the next read ends the stream.
 * Safe from any thread while the stream is open. */
void srv_train_stream_kick(srv_train_stream *s);

/* Frees a stream (libmicrohttpd's free callback). */
void srv_train_stream_close(srv_train_stream *s);

#endif
