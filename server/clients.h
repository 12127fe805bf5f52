/* clients.h - who a connection's client is, and the record of what each
 * client holds of what every client shares.
 *
 * A client is an IPv4 address, or an IPv6 /64 (what one subscriber is
 * given, so that one subscriber is not 2^64 clients); an IPv4-mapped
 * IPv6 address is its IPv4 address. The gate counts each client's
 * connections, to take one from the client holding the most when the
 * server is full, and its event streams, at most --client-share percent
 * of --max-streams (gate.c); a client's requests reserve memory and places
 * in the queue through its shares of them (budget.h, inference.h), so no
 * one client holds all of either.
 *
 * Behind a proxy every connection comes from the proxy's address: one
 * client. A request from a trusted proxy (--trusted-proxies, proxies.h)
 * counts in the shares of the client its X-Forwarded-For names, which
 * it holds a reference to, and so does its event stream (a reference of
 * the gate's); otherwise the shares only cap what the proxy may hold
 * (--client-share 100 lifts that cap).
 *
 * A client's record lives while a connection of it does: each takes a
 * reference, and its requests use it through the connection
 * (srv_gate_client). Any thread may get and put references. */
#ifndef SRV_CLIENTS_H
#define SRV_CLIENTS_H

#include <stddef.h>
#include <sys/socket.h>

#include "budget.h"
#include "inference.h"

/* Room for a client's name: an IPv4 address, or an IPv6 /64 ("/64" included). */
#define SRV_CLIENT_NAME_MAX 48

typedef struct srv_client {
    unsigned char key[17];   /* 4 or 6, then the address (an IPv6 /64: 8 bytes, the rest zero) */
    int refs;                /* under the table's lock */
    int connections;         /* the gate's count of its connections, under the gate's lock */
    int streams;             /* and of its event streams */
    srv_budget_share memory; /* what its requests hold of the memory budget */
    srv_infer_share queue;   /* and of the inference queue */
    unsigned long long helper_turn; /* its last turn on the helper thread (http.c's off_loop), under its lock */
    struct srv_client *next; /* the table's chain */
} srv_client;

typedef struct srv_clients srv_clients;

/* A table with no clients; NULL when out of memory. */
srv_clients *srv_clients_new(void);

/* Frees t (every reference must have been put). NULL is fine. */
void srv_clients_free(srv_clients *t);

/* A reference to the client of addr, a record made at its first
 * connection. NULL for an address that is neither IPv4 nor IPv6, or when
 * out of memory: such a connection has no client and no share. */
srv_client *srv_clients_get(srv_clients *t, const struct sockaddr *addr);

/* Another reference to c, which the caller holds one to; returns c.
 * NULL is fine. */
srv_client *srv_clients_ref(srv_clients *t, srv_client *c);

/* Drops a reference; the record goes with the last. NULL is fine. */
void srv_clients_put(srv_clients *t, srv_client *c);

/* Writes c's name ("192.0.2.7", "2001:db8:1:2::/64") into buf. */
void srv_client_name(const srv_client *c, char *buf, size_t len);

/* Clients with a record now. */
long srv_clients_count(srv_clients *t);

#endif
