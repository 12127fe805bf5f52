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
#include "inference.h"
#include "jobs.h"
#include "metrics.h"
#include "registry.h"

typedef struct srv_http srv_http;

/* Starts listening on cfg->bind:cfg->port. jobs may be NULL (no
 * training). Returns NULL and fills err. */
srv_http *srv_http_start(const srv_config *cfg, srv_registry *registry, srv_infer *infer, srv_metrics *metrics,
                         srv_jobs *jobs, char *err, size_t errlen);

/* Writes the route table as "POST /denoise, ..., GET|DELETE /train/{id},
 * ..." into out (cap bytes, cut short if it does not fit): the list of
 * the 404 message and of `dae-server --help`. */
void srv_http_route_list(char *out, size_t cap);

/* The port actually bound (useful with port 0). */
int srv_http_port(const srv_http *h);

/* Begins shutdown: /readyz answers 503, new image requests get 503, every
 * answer closes its connection, and the listening socket is closed so no
 * new connection is accepted. In-flight requests carry on. */
void srv_http_drain(srv_http *h);

/* Requests whose answer has not been sent yet. */
long srv_http_in_flight(srv_http *h);

/* Stops the daemon (every suspended request must have been resumed: stop
 * the inference workers first) and frees h. NULL is fine. */
void srv_http_stop(srv_http *h);

#endif
