/* http.h - the HTTP side of dae-server on libmicrohttpd: the daemon, the
 * route table, the per-request state machine, JSON errors and the access
 * log.
 *
 * libmicrohttpd's event-loop threads accept connections, parse requests
 * and collect bodies into a capped buffer; cheap checks (route, method,
 * Content-Length, parameters, the image header) are answered there. Image
 * work goes to the inference workers (inference.h): the connection is
 * suspended, and resumed by the worker when the PNG is ready, so the
 * event loop never runs a decoder or the network. */
#ifndef SRV_HTTP_H
#define SRV_HTTP_H

#include <stddef.h>

#include "config.h"
#include "dae_status.h"
#include "inference.h"
#include "metrics.h"
#include "registry.h"
#include "train_http.h"

typedef struct srv_http srv_http;

/* Starts listening on cfg->bind:cfg->port. train, the training routes'
 * face (train_http.h), may be NULL (no training). Returns NULL and fills
 * err. */
srv_http *srv_http_start(const srv_config *cfg, srv_registry *registry, srv_infer *infer, srv_metrics *metrics,
                         srv_train_http *train, char *err, size_t errlen);

/* Writes the route table as "POST /denoise, ..., GET|DELETE /train/{id},
 * ..." into out (cap bytes, cut short if it does not fit): the list of
 * the 404 message and of `dae-server --help`. */
void srv_http_route_list(char *out, size_t cap);

/* The methods of a route, as bits. */
enum { SRV_M_GET = 1, SRV_M_HEAD = 2, SRV_M_POST = 4, SRV_M_PUT = 8, SRV_M_DELETE = 16 };

/* The route table row by row, for its checks (tests/test_openapi.c): row
 * i (0 <= i < srv_http_route_count()) has the metrics label *name, the
 * path *path ("/models/{name}"), the SRV_M_* bits *methods it takes, and
 * of those the ones that need admin rights. */
int srv_http_route_count(void);
void srv_http_route_get(int i, const char **name, const char **path, unsigned *methods, unsigned *admin_methods);

/* Longest X-Request-Id taken from a client; a longer or odd one is
 * replaced by one the server makes (32 hex digits). */
#define SRV_REQUEST_ID_MAX 64

/* The port actually bound (useful with port 0). */
int srv_http_port(const srv_http *h);

/* Begins shutdown: /readyz answers 503, new image requests get 503, every
 * answer closes its connection, and the listening socket is closed so no
 * new connection is accepted. In-flight requests carry on. */
void srv_http_drain(srv_http *h);

/* The work a status from below the HTTP edge comes from: the same status
 * answers differently in each (DAE_ERR_NOT_FOUND is a missing model when
 * a model is activated, a missing form field in an upload). */
typedef enum {
    SRV_EDGE_IMAGE,  /* an image request's result (inference.h) */
    SRV_EDGE_UPLOAD, /* taking an upload: its form field (multipart.h), its place in the queue */
    SRV_EDGE_MODEL,  /* activating or deleting a model (registry.h) */
    SRV_EDGE_MODEL_PUT,  /* uploading a model file (srv_model_put, model_http.h) */
    SRV_EDGE_MODEL_FILE, /* opening one for download (srv_model_file_open) */
    SRV_EDGE_DATASET,    /* uploading, describing or deleting a data set (dataset_http.h) */
    SRV_EDGE_ROUTE,  /* any route's refusal of a request */
    SRV_EDGE_TRAIN_REQUEST, /* checking a training request (srv_train_request_check, train_records.h) */
    SRV_EDGE_TRAIN_SUBMIT,  /* queueing a training job (srv_training_submit) */
    SRV_EDGE_TRAIN_CANCEL,  /* cancelling one (srv_training_cancel) */
} srv_edge_kind;

/* The HTTP status the server answers when work of that kind ends with st
 * (not DAE_OK), and its error code in *code (static): the one table of
 * the HTTP edge. */
int srv_http_error_of(srv_edge_kind kind, dae_status st, const char **code);

/* The sentence a client gets for work that ended with st and the module's
 * sentence msg: msg, but for a full disk (DAE_ERR_NO_SPACE), whose msg
 * names the server's files: it goes to the log, the client gets a
 * sentence of its own. */
const char *srv_http_error_message(dae_status st, const char *msg);

/* Requests whose answer has not been sent yet. */
long srv_http_in_flight(srv_http *h);

/* Stops the daemon (every suspended request must have been resumed: stop
 * the inference workers first) and frees h. NULL is fine. */
void srv_http_stop(srv_http *h);

#endif
