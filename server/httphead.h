/* httphead.h - the parser of HTTP/1.x request heads that the connection
 * gate (gate.h) runs on bytes peeked from a new connection, before
 * libmicrohttpd sees them. It decides where the head ends and refuses
 * what would let two HTTP parsers disagree about the request: several
 * Content-Length headers, Content-Length with Transfer-Encoding, folded
 * lines, control characters, a missing or repeated Host. No state, no
 * allocation; safe on any thread. */
#ifndef SRV_HTTPHEAD_H
#define SRV_HTTPHEAD_H

#include <stddef.h>

/* Largest request head (request line and headers) taken. */
#define SRV_HEAD_MAX 8192
/* Longest request line; longer ones are answered 414. */
#define SRV_HEAD_LINE_MAX 4096

typedef enum { SRV_HEAD_INCOMPLETE, SRV_HEAD_OK, SRV_HEAD_ERROR } srv_head_result;

/* What srv_head_parse found. */
typedef struct {
    size_t len;          /* bytes of the head, its empty line included */
    long long body;      /* Content-Length, -1 when none */
    int chunked;
    int probe;           /* GET or HEAD of /healthz, /readyz or /metrics */
    char method[16];
    char path[256];      /* for the access log, without the query */
    /* The answer to give for SRV_HEAD_ERROR: status, static snake_case
     * code and an ASCII sentence (never request bytes). */
    int status;
    const char *code;
    char message[160];
} srv_head;

/* The headers that say where a request ends and whom it is for, counted
 * in a head: by srv_head_parse on the first head of a connection, and by
 * the request handler (http.c) on the later heads of a kept-alive one,
 * which libmicrohttpd parses, so that both refuse the same requests. */
typedef struct {
    int http10;            /* the request line says HTTP/1.0 */
    int content_length;    /* Content-Length headers */
    int transfer_encoding; /* Transfer-Encoding headers */
    int not_chunked;       /* of those, the ones whose value is not "chunked" */
    int host;              /* Host headers */
} srv_head_framing;

/* Counts the header name[0..name_len): value[0..value_len) (trimmed) in *f. */
void srv_head_count_field(srv_head_framing *f, const char *name, size_t name_len, const char *value,
                          size_t value_len);

/* SRV_HEAD_OK when the counts make an unambiguous request (one
 * Content-Length at most, one "chunked" Transfer-Encoding at most and not
 * with Content-Length nor in HTTP/1.0, exactly one Host in HTTP/1.1);
 * else SRV_HEAD_ERROR with the error to answer in hi. */
srv_head_result srv_head_check_framing(const srv_head_framing *f, srv_head *hi);

/* SRV_HEAD_ERROR with the answer to a head over SRV_HEAD_MAX in hi. */
srv_head_result srv_head_too_large(srv_head *hi);

/* 1 when a request target's path path[0..n) (up to its '?') holds %00:
 * decoded, the NUL byte would end the name a route reads, so that
 * "/models/mnist%00x" would name "mnist" (and DELETE remove it).
 * srv_head_path_nul_error puts the 400 to answer in hi. A query
 * argument's %00 is the route's to refuse, naming the argument. */
int srv_head_path_nul(const char *path, size_t n);
srv_head_result srv_head_path_nul_error(srv_head *hi);

/* The bytes of "http://host:port" (or https) that start a request target
 * target[0..n) in the absolute form, which a server must accept (RFC 9112
 * 3.2.2) and whose path follows them; 0 for a target in the origin form
 * ("/path?query"). */
size_t srv_head_authority_len(const char *target, size_t n);

/* Parses the request head at the start of buf (n bytes, not
 * NUL-terminated) into *hi. Returns SRV_HEAD_INCOMPLETE while the empty
 * line that ends the head has not arrived (and the limits are not yet
 * passed), SRV_HEAD_OK with hi->len set, or SRV_HEAD_ERROR with the
 * error to answer in hi. */
srv_head_result srv_head_parse(const char *buf, size_t n, srv_head *hi);

#endif
