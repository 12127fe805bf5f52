/* gate.h - the connection gate of dae-server: who gets a connection, for
 * how long, and what a malformed request head is answered.
 *
 * The gate owns the listening socket. Its thread accepts every connection
 * and holds it until the request head is complete, reading it with
 * MSG_PEEK so nothing is consumed; a head that takes longer than
 * --header-timeout, grows past the head limit or breaks the protocol
 * (duplicate Content-Length, Content-Length with Transfer-Encoding, a bad
 * request line or HTTP version, ...) is answered with the service's JSON
 * error and closed, and a client that closes early is dropped at once. A
 * good head goes to libmicrohttpd (MHD_add_connection), within
 * --max-connections, plus a few more for GET /healthz, /readyz and
 * /metrics so a flood never locks the probes out.
 *
 * A watchdog thread then follows every connection libmicrohttpd holds,
 * told by the request handler which phase it is in: it closes an upload
 * whose client went away or whose body takes longer than --body-timeout,
 * a kept-alive connection whose next head is not complete in time, and an
 * event stream whose client left or stopped reading for --timeout. */
#ifndef SRV_GATE_H
#define SRV_GATE_H

#include <stddef.h>

#include <microhttpd.h>

#include "config.h"
#include "metrics.h"

typedef struct srv_gate srv_gate;

/* Connections admitted past --max-connections for the probe routes. */
#define SRV_GATE_PROBE_HEADROOM 16

/* Binds and listens on cfg->bind:cfg->port, and raises the process's
 * open-file limit to what the connection limits need. Returns NULL and
 * fills err when the address is bad or taken. */
srv_gate *srv_gate_open(const srv_config *cfg, srv_metrics *metrics, char *err, size_t errlen);

/* The port bound (useful with port 0). */
int srv_gate_port(const srv_gate *g);

/* The connection limit to give libmicrohttpd: a safety net above what the
 * gate ever admits. */
unsigned srv_gate_engine_limit(const srv_config *cfg);

/* Starts the gate and watchdog threads; admitted connections go to
 * daemon, which must run with MHD_USE_NO_LISTEN_SOCKET. Returns 0, or -1
 * and fills err. */
int srv_gate_start(srv_gate *g, struct MHD_Daemon *daemon, char *err, size_t errlen);

/* Stops accepting: closes the listening socket (heads already being read
 * carry on). */
void srv_gate_quiesce(srv_gate *g);

/* Stops both threads and closes the connections the gate still holds.
 * Call before MHD_stop_daemon; then srv_gate_free after it. */
void srv_gate_stop(srv_gate *g);

/* Frees g (after MHD_stop_daemon: its close notices come here). NULL is fine. */
void srv_gate_free(srv_gate *g);

/* The client (clients.h) of the connection whose socket context is ctx,
 * or NULL. The connection's record holds it until libmicrohttpd's close
 * notice, which comes after each of its requests completed: a request
 * may use it to its end without a reference of its own. */
struct srv_client *srv_gate_client(void *ctx);

/* The table of g's clients, where a request behind a trusted proxy takes
 * a reference to its own (proxies.h). */
struct srv_clients *srv_gate_clients(srv_gate *g);

/* Open connections: those in the gate and those libmicrohttpd holds. */
long srv_gate_connections(srv_gate *g);

/* Connections answered and closing: the gate reads and drops what their
 * clients still send (a lingering close), at most 256 at once. */
long srv_gate_closing(srv_gate *g);

/* ------------------------------------------------------------ libmicrohttpd hooks */

/* The phases of a connection that libmicrohttpd holds. */
typedef enum {
    SRV_CONN_IDLE,   /* kept alive, waiting for the next request */
    SRV_CONN_HEAD,   /* a request head is being parsed */
    SRV_CONN_BODY,   /* the request body is being received */
    SRV_CONN_ANSWER, /* the request is complete: working or answering */
    SRV_CONN_STREAM, /* an event stream */
} srv_conn_phase;

/* MHD_CONNECTION_NOTIFY_STARTED / _CLOSED: links the connection to its
 * record (stored in *socket_context) and drops it again. */
void srv_gate_conn_started(srv_gate *g, struct MHD_Connection *c, void **socket_context);
void srv_gate_conn_closed(srv_gate *g, void **socket_context);

/* The connection whose socket context is ctx is being answered before its
 * request body came: libmicrohttpd will close it after the answer without
 * reading the body. The gate then reads and drops up to discard_max bytes
 * of it while the client still sends, so that a client which writes its
 * whole body before it reads (Python's http.client, Node's fetch) gets the
 * answer, not a reset. */
void srv_gate_linger(srv_gate *g, void *ctx, size_t discard_max);

/* Moves the connection whose socket context is ctx into phase. */
void srv_gate_phase(srv_gate *g, void *ctx, srv_conn_phase phase);

/* Turns the connection into an event stream, within --max-streams and
 * client's share of them (--client-share): the request's client, its
 * connection's or the one a trusted proxy named (NULL: none), which the
 * stream holds a reference to until it ends.
 * kick(arg) is called (from the watchdog, with the gate's lock held) when
 * the stream must end because its client left or stopped reading; it
 * must wake a suspended connection. Returns a token for
 * srv_gate_stream_end, or 0 when --max-streams, or client's share, are open. */
unsigned long long srv_gate_stream_begin(srv_gate *g, void *ctx, struct srv_client *client, void (*kick)(void *),
                                         void *arg);

/* Ends the stream of token (safe after the connection closed). */
void srv_gate_stream_end(srv_gate *g, unsigned long long token);

#endif
