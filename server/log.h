/* log.h - the server's own messages (start, warnings, shutdown) on stderr,
 * and the access log: one line per request on stdout, as text or JSON.
 * Lines go out whole (a write(2) of one or several), so lines from
 * several threads never interleave. */
#ifndef SRV_LOG_H
#define SRV_LOG_H

#include <stddef.h>

#include "config.h"

/* Prints "<UTC time> dae-server: <message>" on stderr, or with
 * srv_log_set_format(SRV_LOG_JSON) one JSON object per line:
 * {"time":"...","level":"info|warning|error","msg":"..."}; a message
 * starting "warning: " or "cannot start: " is of that level. */
void srv_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Sets the format of srv_log (text by default), before any thread logs. */
void srv_log_set_format(srv_log_format format);

/* What the access log says about one request. Strings may hold any bytes
 * (the path comes from the client); they are escaped on output. */
typedef struct {
    const char *remote;   /* client address, "-" when unknown */
    const char *method;
    const char *path;     /* without the query string */
    const char *route;    /* the route table's name, "unknown" for none */
    int status;           /* 0: the connection ended before an answer */
    size_t bytes;         /* response body bytes */
    double duration_s;    /* from the first header byte to the answer */
    const char *model;    /* model name, or NULL */
    const char *error;    /* error code of a failed request, or NULL */
    const char *request_id; /* X-Request-Id (http.c makes sure it needs no escaping), or NULL */
    const char *client;   /* the client a trusted proxy named (--trusted-proxies): an address, or NULL */
} srv_access;

/* Writes one access-log line in format (nothing for SRV_LOG_OFF). busy:
 * other requests are still being answered, so, once
 * srv_access_log_start has run, the line may wait in a buffer
 * (SRV_ACCESS_BUFFER bytes) to go out with the next ones in one write, for
 * SRV_ACCESS_LINGER_MS at most; a line when nothing else is under way
 * goes out at once, with any waiting before it. (A write a line was 8%
 * of the HTTP thread's CPU at concurrency 64.) */
void srv_access_log(srv_log_format format, const srv_access *a, int busy);

#define SRV_ACCESS_BUFFER 16384
#define SRV_ACCESS_LINGER_MS 100

/* Starts the thread that writes out the waiting lines every
 * SRV_ACCESS_LINGER_MS (0, or -1 when it cannot start: lines then go out
 * at once); srv_access_log_stop writes out the rest and stops it. */
int srv_access_log_start(void);
void srv_access_log_stop(void);

/* Writes the current UTC time as "2026-01-01T12:00:00.123Z". */
void srv_utc_now(char *buf, size_t len);

#endif
