/* http.c - the libmicrohttpd daemon: the route table, the request state machine,
 * body collection with limits, dispatch of image requests with suspend and
 * resume, work too long for the event loop on a helper thread, JSON
 * answers, the access log and the request metrics. */
#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/random.h>
#include <unistd.h>

#include <microhttpd.h>
#include <zlib.h>

#include "assets.h"
#include "auth.h"
#include "clients.h"
#include "clock.h"
#include "dataset_http.h"
#include "deflate.h"
#include "gate.h"
#include "httphead.h"
#include "log.h"
#include "model_http.h"
#include "multipart.h"
#include "oip.h"
#include "proxies.h"
#include "utf8.h"

/* A body over the limit is read and dropped up to this much more before
 * the connection is cut (a chunked upload cannot be refused early), and a
 * body refused before it came up to this much as the connection closes. */
#define DISCARD_MAX ((size_t)64 << 20)

/* v2 JSON of at least this many bytes is parsed, and an answer of at
 * least this many printed and gzip'd, on the helper thread (off_loop), not
 * the event loop. On the 2-core machine of the README's benchmarks a 9.4 MB
 * request of 2.35 million floats took 0.2-0.8 s to parse and its answer
 * about as long to print, and gzip packs printed floats at 16 MB/s there
 * (zlib's; libdeflate's, now, 2.8 times as fast: io/deflate.h): 16 KiB is
 * under a millisecond of any of them. A one-image v2 request in JSON and
 * its answer stay on the loop. */
#define OFF_LOOP_BYTES ((size_t)16 << 10)

typedef struct request request;

struct srv_http {
    const srv_config *cfg;
    srv_registry *registry;
    srv_infer *infer;
    srv_metrics *metrics;
    srv_train_http *train; /* the training routes' face; NULL: no training */
    srv_datasets *datasets; /* the data set routes' (dataset_http.h) */
    struct MHD_Daemon *daemon;
    srv_gate *gate;  /* owns the listening socket; see gate.h */
    int port;
    atomic_int draining;
    atomic_long in_flight;
    /* The helper thread and its queue of requests (off_loop). */
    pthread_t helper;
    int helper_running;
    pthread_mutex_t helper_mu;
    pthread_cond_t helper_wake;
    request *helper_queue;            /* by turn, then arrival */
    unsigned long long helper_turn;   /* the turn of the work the helper took last */
    unsigned long long nobody_turn;   /* the last turn given to requests without a client */
    int helper_stopping;
};

/* ------------------------------------------------------------ routes */

/* The routes are the rows of one table, ROUTES (below the handlers):
 * matching, dispatch, the 405 Allow header, the 404 route list, the admin
 * check, the draining refusal, the metrics labels and the route list of
 * `dae-server --help` all read it. A new route is one row and one
 * handler. */

/* The methods, as bits; METHOD_NAMES[i] is the name of bit i. */
enum { M_GET = SRV_M_GET, M_HEAD = SRV_M_HEAD, M_POST = SRV_M_POST, M_PUT = SRV_M_PUT, M_DELETE = SRV_M_DELETE,
       N_METHODS = 5 };
static const char *const METHOD_NAMES[N_METHODS] = {"GET", "HEAD", "POST", "PUT", "DELETE"};

/* What the methods of a route need besides their handler. */
enum {
    ROUTE_ADMIN = 1,         /* a bearer token, or a loopback client when none is set (auth.h) */
    ROUTE_UPLOAD = 2,        /* an upload: an announced body over the route's limit (body_limit_of) is refused
                                before it is read; an image's work goes to the inference workers */
    ROUTE_DRAIN_REFUSES = 4, /* answered 503 "draining" once shutdown began */
    ROUTE_MODEL_FILE = 8,    /* the body is a weights file: limit SRV_MODEL_MAX_BYTES, not --max-body */
    ROUTE_DATASET = 16,      /* the body is a data set archive: limit --max-dataset-bytes, not --max-body */
};

/* Answers a request whose head and body are in (the final call). */
typedef enum MHD_Result (*route_handler)(request *r);

/* Some methods of a route, with their flags and their handler. */
typedef struct {
    unsigned methods; /* M_* bits; 0 marks an unused entry */
    unsigned flags;   /* ROUTE_* */
    route_handler handler;
} route_method;

/* One row of the route table. */
typedef struct {
    const char *name;       /* the route="..." label of the metrics and the access log */
    const char *path;       /* "{name}" or "{id}" as a whole segment stands for the route's argument */
    route_method by[N_METHODS]; /* by method: flags may differ (GET /train is public, POST /train admin) */
} route;

static unsigned method_bit(const char *method) {
    for (int i = 0; i < N_METHODS; i++)
        if (strcmp(method, METHOD_NAMES[i]) == 0) return 1u << i;
    return 0;
}

/* ------------------------------------------------------------ requests */

/* The largest body the route method rm (NULL: none matched) takes. */
static long long body_limit_of(const srv_config *cfg, const route_method *rm) {
    if (rm != NULL && (rm->flags & ROUTE_DATASET)) return cfg->max_dataset_bytes;
    return rm != NULL && (rm->flags & ROUTE_MODEL_FILE) ? SRV_MODEL_MAX_BYTES : cfg->max_body_bytes;
}

enum { PHASE_NEW, PHASE_BODY, PHASE_QUEUED, PHASE_OFF_LOOP, PHASE_ANSWERED };

struct request {
    srv_http *http;
    struct MHD_Connection *conn;
    void *conn_ctx;         /* the connection's record in the gate */
    srv_client *client;     /* the connection's client (srv_gate_client), or forwarded, or NULL */
    srv_client *forwarded;  /* the client a trusted proxy named (proxies.h): the request's own reference */
    char forwarded_addr[INET6_ADDRSTRLEN]; /* its address, for the access log ("" when none) */
    double t_start;
    int phase;
    int close;              /* answer with Connection: close */
    const route *route;     /* NULL: no route matched */
    int route_index;        /* its row in ROUTES, or SRV_ROUTE_UNKNOWN */
    int path_nul;           /* the target's path holds %00 (srv_head_path_nul) */
    const route_method *rm; /* the method's entry in the row, once allowed */
    const char *route_arg;  /* points at arg */
    char arg[160];
    char version_arg[64];   /* the route's second argument ({version}), or "" */
    unsigned mbit;          /* the method */
    char allow[32];         /* Allow header of a 405, or "" */
    char location[64];      /* Location header of a 202, or "" */
    char infer_header[24];  /* Inference-Header-Content-Length of a v2 answer with binary data, or "" */
    char method[16];
    char path[512];       /* for the access log, without the query */
    char request_id[SRV_REQUEST_ID_MAX + 1]; /* the client's X-Request-Id, or one made up; "" before the head */
    int gzip;             /* the client takes Content-Encoding: gzip */
    int cors;             /* the answer carries the CORS headers (--cors-origin, a non-admin method) */
    int page;             /* the answer is one of the web page's files: it carries PAGE_POLICY */
    /* The answer, for the log and the metrics. */
    int status;
    size_t bytes;
    const char *error_code;
    /* The body. */
    uint8_t *body;
    size_t len, cap;
    int too_large;
    size_t discarded;
    long long body_reserved; /* bytes of the memory budget the body holds */
    long long answer_reserved; /* bytes of the memory budget a made answer holds (hold_answer) */
    int over_budget;         /* the body did not fit the memory budget: discarded, answered 503 */
    /* The image request. */
    srv_model *model;
    srv_infer_request image;
    /* A v2 inference request (oip.h): the tensor's outputs, or one image
     * request per image, and the bytes of the memory budget they hold. */
    int v2_infer;
    srv_oip_request oip;
    float *v2_out;            /* a tensor's outputs for a JSON answer */
    uint8_t *v2_answer;       /* or its binary answer, made first: the workers write the outputs into it */
    size_t v2_answer_len, v2_answer_json;
    srv_infer_request *v2_images;
    atomic_int v2_outstanding; /* image requests not yet done */
    long long v2_reserved;    /* bytes of the memory budget the v2 request holds */
    long long v2_refused;     /* bytes the budget refused the parser */
    size_t v2_json_len;       /* the JSON's length in the body */
    srv_oip_scan v2_scan;     /* the JSON's scan; its bytes are held in v2_reserved while it is parsed */
    /* Work on the helper thread (off_loop): what runs there, what the
     * event loop runs after it, and what the work found. */
    void (*off_work)(request *r);
    route_handler off_then;
    request *off_next;
    unsigned long long off_turn; /* its place in the helper's round of clients (off_loop) */
    double off_since;         /* when it joined the helper's queue (dae_now_s) */
    int off_cancelled;        /* the daemon stopped before the work ran */
    dae_status off_status;
    char *off_json;           /* a JSON answer the work made */
    uint8_t *off_gz;          /* a v2 answer's gzip'd copy */
    size_t off_gz_len;
    int off_replace;          /* an upload's: replace one (in), it replaced one (out) */
    srv_train_answer off_train; /* a job's submission or cancel */
    char off_message[DAE_ERR_LEN + 256];
};

/* ------------------------------------------------------------ the memory budget */

/* What r's client holds of the memory budget, and of the inference
 * queue (NULL: no client, no share). */
static srv_budget_share *memory_share(const request *r) { return r->client != NULL ? &r->client->memory : NULL; }
static srv_infer_share *queue_share(const request *r) { return r->client != NULL ? &r->client->queue : NULL; }

/* Reserves bytes of the memory budget for r (within its client's share);
 * 0 when granted, -1 when not. */
static int budget_take(request *r, long long bytes) {
    return srv_budget_take_share(srv_infer_budget(r->http->infer), memory_share(r), bytes);
}

static void budget_give(request *r, long long bytes) {
    srv_budget_give_share(srv_infer_budget(r->http->infer), memory_share(r), bytes);
}

/* The most r could ever hold of the budget, and the flag that sets it. */
static long long budget_most(const request *r, const char **flag) {
    srv_budget *b = srv_infer_budget(r->http->infer);
    *flag = memory_share(r) != NULL && b->share_limit < b->limit ? "--client-share" : "--memory-budget";
    return srv_budget_most(b, memory_share(r));
}

/* Appends each X-Forwarded-For header's value to the text at cls, after
 * a comma (MHD_KeyValueIterator). */
static enum MHD_Result join_forwarded_for(void *cls, enum MHD_ValueKind kind, const char *key, const char *value) {
    (void)kind;
    char **joined = cls;
    if (strcasecmp(key, "X-Forwarded-For") != 0 || value == NULL) return MHD_YES;
    size_t had = *joined != NULL ? strlen(*joined) : 0, len = strlen(value);
    char *grown = realloc(*joined, had + len + 2);
    if (grown == NULL) {
        free(*joined);
        *joined = NULL;
        return MHD_NO;
    }
    if (had > 0) grown[had++] = ',';
    memcpy(grown + had, value, len + 1);
    *joined = grown;
    return MHD_YES;
}

/* With --trusted-proxies, makes r the client its proxy names: its own
 * reference, in place of the connection's client. Once the head is in,
 * before the request reserves anything. */
static void take_forwarded_client(request *r) {
    const srv_proxies *trusted = &r->http->cfg->proxies;
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (trusted->n == 0 || ci == NULL || !srv_proxies_trust(trusted, ci->client_addr)) return;
    char *xff = NULL;
    struct sockaddr_storage client;
    MHD_get_connection_values(r->conn, MHD_HEADER_KIND, join_forwarded_for, &xff);
    if (srv_proxies_client(trusted, ci->client_addr, xff, &client)) {
        r->forwarded = srv_clients_get(srv_gate_clients(r->http->gate), (const struct sockaddr *)&client);
        if (r->forwarded != NULL) r->client = r->forwarded;
        srv_addr_text((const struct sockaddr *)&client, r->forwarded_addr);
    }
    free(xff);
}

/* MHD_OPTION_URI_LOG_CALLBACK: the request line has arrived. Makes the
 * request's context, so its time counts from here. */
static void *on_request_start(void *cls, const char *uri, struct MHD_Connection *conn) {
    srv_http *h = cls;
    request *r = calloc(1, sizeof *r);
    if (r == NULL) return NULL;
    r->http = h;
    r->conn = conn;
    r->t_start = dae_now_s();
    r->route_index = SRV_ROUTE_UNKNOWN;
    uri += srv_head_authority_len(uri, strlen(uri)); /* the absolute form's path, as the gate logs it */
    size_t n = strcspn(uri, "?");
    r->path_nul = srv_head_path_nul(uri, n);
    if (n >= sizeof r->path) n = sizeof r->path - 1;
    memcpy(r->path, uri, n);
    r->path[n] = '\0';
    if (n == 0) srv_copy_str(r->path, sizeof r->path, "/"); /* "http://host" alone */
    snprintf(r->method, sizeof r->method, "-");
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    r->conn_ctx = ci != NULL ? ci->socket_context : NULL;
    r->client = srv_gate_client(r->conn_ctx);
    srv_gate_phase(h->gate, r->conn_ctx, SRV_CONN_HEAD);
    atomic_fetch_add(&h->in_flight, 1);
    return r;
}

/* MHD_OPTION_NOTIFY_COMPLETED: the answer is sent (or the connection
 * ended). Logs, counts and frees the request. */
static void on_request_done(void *cls, struct MHD_Connection *conn, void **con_cls,
                            enum MHD_RequestTerminationCode toe) {
    srv_http *h = cls;
    request *r = *con_cls;
    if (r == NULL) return;
    *con_cls = NULL;
    double dt = dae_now_s() - r->t_start;
    if (toe == MHD_REQUEST_TERMINATED_TIMEOUT_REACHED && r->status == 0)
        srv_metrics_reject(h->metrics, SRV_REJECT_TIMEOUT);
    if (r->status != 0) srv_metrics_request(h->metrics, r->route_index, r->status, dt);
    char remote[INET6_ADDRSTRLEN];
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    srv_addr_text(ci != NULL ? ci->client_addr : NULL, remote);
    const char *error = r->error_code;
    if (r->status == 0)
        error = toe == MHD_REQUEST_TERMINATED_TIMEOUT_REACHED ? "timeout"
                : toe == MHD_REQUEST_TERMINATED_CLIENT_ABORT   ? "client_abort"
                : toe == MHD_REQUEST_TERMINATED_DAEMON_SHUTDOWN ? "shutdown"
                                                                 : "connection_error";
    srv_access a = {remote, r->method, r->path, r->route != NULL ? r->route->name : "unknown", r->status, r->bytes, dt,
                    r->model != NULL ? r->model->name : NULL, error, r->request_id[0] != '\0' ? r->request_id : NULL,
                    r->forwarded_addr[0] != '\0' ? r->forwarded_addr : NULL};
    srv_access_log(h->cfg->log_format, &a, atomic_load(&h->in_flight) > 1); /* busy: others than this one */
    srv_gate_phase(h->gate, r->conn_ctx, SRV_CONN_IDLE); /* kept alive: the next head's time starts */
    free(r->image.png);
    for (int i = 0; r->v2_images != NULL && i < r->oip.n; i++) {
        free(r->v2_images[i].png);
        budget_give(r, r->v2_images[i].mem_reserved);
    }
    free(r->v2_images);
    free(r->v2_out);
    free(r->v2_answer);
    free(r->off_json);
    free(r->off_train.json);
    free(r->off_gz);
    srv_oip_request_free(&r->oip);
    budget_give(r, r->v2_reserved);
    srv_model_release(r->model);
    free(r->body);
    /* Everything this request held of the memory budget: its body, and
     * what its image request kept (the PNG answer, or all of it when the
     * workers never ran it). */
    budget_give(r, r->body_reserved + r->image.mem_reserved + r->answer_reserved);
    srv_clients_put(srv_gate_clients(h->gate), r->forwarded);
    free(r);
    atomic_fetch_sub(&h->in_flight, 1);
}

/* MHD_OPTION_NOTIFY_CONNECTION: links each connection to its record in
 * the gate (the gate counts connections, and its watchdog follows them),
 * and drops the record when libmicrohttpd closes the connection. */
static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe) {
    srv_http *h = cls;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) srv_gate_conn_started(h->gate, conn, socket_context);
    else srv_gate_conn_closed(h->gate, socket_context);
}

/* ------------------------------------------------------------ answers */

/* Queues resp (taken over), whose body has len bytes, with status,
 * content_type (NULL: none) and the usual headers; records status and
 * size. */
/* The page runs only its own script and style, talks only to this server,
 * shows images from it (as blob: URLs) and cannot be framed: a model or
 * job name a stranger chose can never become script. */
#define PAGE_POLICY                                                                                                   \
    "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; base-uri 'none'; form-action 'none'; "       \
    "frame-ancestors 'none'"

/* Adds the headers every answer of r carries: its request id and, for
 * the routes that allow it, CORS; the page's policy on its files. */
static void add_request_headers(request *r, struct MHD_Response *resp) {
    if (r->request_id[0] != '\0') MHD_add_response_header(resp, "X-Request-Id", r->request_id);
    if (r->page) {
        MHD_add_response_header(resp, "Content-Security-Policy", PAGE_POLICY);
        MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    }
    if (r->cors) {
        const char *origin = r->http->cfg->cors_origin;
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        MHD_add_response_header(resp, "Access-Control-Expose-Headers",
                                "X-Request-Id, X-Model, X-Model-Version, " SRV_OIP_HEADER_LENGTH);
        if (strcmp(origin, "*") != 0) MHD_add_response_header(resp, MHD_HTTP_HEADER_VARY, "Origin");
    }
}

/* Whether r's head announces a body (a Content-Length above 0, or chunks).
 * Answered in the first call, before any of it is read, such a request's
 * connection lingers as it closes (srv_gate_linger). */
static int body_announced(request *r) {
    const char *cl = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl != NULL) return strspn(cl, "0") != strlen(cl);
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING) != NULL;
}

static enum MHD_Result answer_response(request *r, int status, const char *content_type, struct MHD_Response *resp,
                                       size_t len) {
    add_request_headers(r, resp);
    if (content_type != NULL) MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    if (r->allow[0] != '\0') MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, r->allow);
    if (status == 503) {
        char retry[16];
        snprintf(retry, sizeof retry, "%d", r->http->cfg->retry_after_s);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, retry);
    }
    if (status == 401) MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"dae-server\"");
    if (r->location[0] != '\0') MHD_add_response_header(resp, MHD_HTTP_HEADER_LOCATION, r->location);
    if (r->infer_header[0] != '\0') MHD_add_response_header(resp, SRV_OIP_HEADER_LENGTH, r->infer_header);
    if (r->model != NULL && status == 200) {
        MHD_add_response_header(resp, "X-Model", r->model->name);
        MHD_add_response_header(resp, "X-Model-Version", r->model->version);
    }
    if (r->close || atomic_load(&r->http->draining))
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    if (r->phase == PHASE_NEW && body_announced(r)) srv_gate_linger(r->http->gate, r->conn_ctx, DISCARD_MAX);
    enum MHD_Result ret = MHD_queue_response(r->conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
    r->status = status;
    r->bytes = len;
    r->phase = PHASE_ANSWERED;
    return ret;
}

/* Text answers this short are sent as they are: gzip would save little. */
#define GZIP_MIN_BYTES 256

/* Whether answers of this media type are text, worth compressing. */
static int compressible(const char *content_type) {
    return content_type != NULL && (strncmp(content_type, "application/json", 16) == 0 ||
                                    strncmp(content_type, "text/", 5) == 0 ||
                                    strncmp(content_type, "image/svg+xml", 13) == 0);
}

/* Whether the Accept-Encoding value ae (may be NULL) takes gzip: "gzip"
 * or "*" listed without q=0. */
static int accepts_gzip(const char *ae) {
    for (const char *p = ae; p != NULL && *p != '\0';) {
        p += strspn(p, " \t,");
        size_t n = strcspn(p, ",");
        size_t name = strcspn(p, " \t;,");
        int match = (name == 4 && strncasecmp(p, "gzip", 4) == 0) || (name == 1 && p[0] == '*');
        if (match) {
            const char *q = memchr(p, ';', n);
            if (q == NULL) return 1;
            q = strstr(q, "q=");
            if (q == NULL || q >= p + n || strtod(q + 2, NULL) > 0) return 1;
            return 0;
        }
        p += n;
    }
    return 0;
}

/* len bytes of body as raw deflate blocks that end on a byte boundary (a
 * sync flush), which join others' into one stream (answer_texts), in a
 * malloc'd buffer of *out_len bytes; NULL (the body then goes as it is)
 * without memory. zlib's: libdeflate only makes streams that end. */
static uint8_t *deflate_joinable(const void *body, size_t len, size_t *out_len) {
    z_stream z;
    memset(&z, 0, sizeof z);
    *out_len = 0;
    if (len > UINT_MAX / 2 || deflateInit2(&z, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK) return NULL;
    uLong cap = deflateBound(&z, (uLong)len) + 16; /* and a sync flush's marker */
    uint8_t *out = malloc(cap);
    if (out != NULL) {
        z.next_in = (Bytef *)(uintptr_t)body;
        z.avail_in = (uInt)len;
        z.next_out = out;
        z.avail_out = (uInt)cap;
        if (deflate(&z, Z_SYNC_FLUSH) != Z_OK || z.avail_in != 0 || z.avail_out == 0) {
            free(out);
            out = NULL;
        }
    }
    *out_len = z.total_out;
    deflateEnd(&z);
    return out;
}

/* Queues a response of len bytes of body (taken over per mode), or of gz
 * (gz_len bytes, its gzip'd copy, freed here) when there is one, with
 * content_type and the usual headers; records status and size. */
static enum MHD_Result answer_made(request *r, int status, const char *content_type, void *body, size_t len,
                                   enum MHD_ResponseMemoryMode mode, uint8_t *gz, size_t gz_len) {
    int text = compressible(content_type);
    if (gz != NULL) {
        if (mode == MHD_RESPMEM_MUST_FREE) free(body);
        body = gz, len = gz_len, mode = MHD_RESPMEM_MUST_FREE;
    }
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, body, mode);
    if (resp == NULL) {
        if (mode == MHD_RESPMEM_MUST_FREE) free(body);
        return MHD_NO;
    }
    if (gz != NULL) MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_ENCODING, "gzip");
    if (text) MHD_add_response_header(resp, MHD_HTTP_HEADER_VARY, "Accept-Encoding");
    return answer_response(r, status, content_type, resp, len);
}

/* Whether an answer of len bytes of content_type is to be gzip'd for r. */
static int answer_zips(const request *r, const char *content_type, size_t len) {
    return compressible(content_type) && r->gzip && len >= GZIP_MIN_BYTES;
}

/* Queues a response of len bytes of body (taken over per mode) with
 * content_type and the usual headers, gzip'd when it is text and the
 * client takes it; records status and size. */
static enum MHD_Result answer(request *r, int status, const char *content_type, void *body, size_t len,
                              enum MHD_ResponseMemoryMode mode) {
    size_t gz_len = 0;
    uint8_t *gz = answer_zips(r, content_type, len) ? dae_gzip(body, len, &gz_len) : NULL;
    return answer_made(r, status, content_type, body, len, mode, gz, gz_len);
}

/* Whether r's path is the v2 protocol's (under /v2), whose errors have
 * the protocol's shape. */
static int is_v2(const request *r) { return strncmp(r->path, "/v2", 3) == 0 && (r->path[3] == '\0' || r->path[3] == '/'); }

/* The one function that produces every error reply:
 * {"error":{"status":N,"code":"...","message":"...","request_id":"..."}},
 * or under /v2 the Open Inference Protocol's {"error":"..."} (the code
 * then goes to the access log only). */
static enum MHD_Result answer_error(request *r, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static enum MHD_Result answer_error(request *r, int status, const char *code, const char *fmt, ...) {
    char msg[DAE_ERR_LEN + 256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    char shown[sizeof msg]; /* what the client reads: no path of the server; the log has them */
    if (srv_config_hide_dirs(r->http->cfg, msg, shown, sizeof shown))
        srv_log("request %s: %d %s: %s", r->request_id, status, code, msg);
    size_t cap = sizeof shown * 2 + 128, n = 0;
    char *body = malloc(cap);
    if (body == NULL) return MHD_NO;
    if (is_v2(r)) {
        n = (size_t)snprintf(body, cap, "{\"error\":\"");
        srv_json_escape(body, cap, &n, shown);
        n += (size_t)snprintf(body + n, cap - n, "\"}\n");
    } else {
        n = (size_t)snprintf(body, cap, "{\"error\":{\"status\":%d,\"code\":\"%s\",\"message\":\"", status, code);
        srv_json_escape(body, cap, &n, shown);
        /* The request id is [A-Za-z0-9._:-] (request_id_take): no escaping. */
        n += (size_t)snprintf(body + n, cap - n, "\",\"request_id\":\"%s\"}}\n", r->request_id);
    }
    r->error_code = code;
    return answer(r, status, "application/json", body, n, MHD_RESPMEM_MUST_FREE);
}

/* ------------------------------------------------------------ statuses at the edge */

/* The modules below this edge (inference, registry, multipart, training,
 * train_records) end in a dae_status and a sentence; here alone a status
 * becomes an HTTP status and an error code. Each kind of work has its rows; the row of status
 * DAE_OK is the kind's answer to any status it does not list. */
typedef struct {
    srv_edge_kind kind;
    dae_status status;
    int http_status;
    const char *code;
    int reject; /* the srv_reject_reason it counts in the metrics, or -1 */
} edge_error;

static const edge_error EDGE_ERRORS[] = {
    /* The result of an image request (inference.h). */
    {SRV_EDGE_IMAGE, DAE_ERR_FORMAT, 400, "invalid_image", -1},
    {SRV_EDGE_IMAGE, DAE_ERR_TOO_LARGE, 413, "too_many_pixels", SRV_REJECT_TOO_MANY_PIXELS},
    {SRV_EDGE_IMAGE, DAE_ERR_NOMEM, 503, "out_of_memory", -1},
    {SRV_EDGE_IMAGE, DAE_ERR_STOPPING, 503, "shutting_down", -1},
    {SRV_EDGE_IMAGE, DAE_OK, 500, "internal_error", -1},
    /* Taking an upload: the form field "image", a place in the queue. */
    {SRV_EDGE_UPLOAD, DAE_ERR_NOT_FOUND, 400, "missing_image", -1},
    {SRV_EDGE_UPLOAD, DAE_ERR_FORMAT, 400, "invalid_multipart", -1},
    {SRV_EDGE_UPLOAD, DAE_ERR_CONFLICT, 400, "multiple_images", -1},
    {SRV_EDGE_UPLOAD, DAE_ERR_BUSY, 503, "queue_full", SRV_REJECT_QUEUE_FULL},
    {SRV_EDGE_UPLOAD, DAE_ERR_STOPPING, 503, "draining", SRV_REJECT_DRAINING},
    {SRV_EDGE_UPLOAD, DAE_OK, 500, "internal_error", -1},
    /* POST /models/{name}/activate and DELETE /models/{name} (registry.h). */
    {SRV_EDGE_MODEL, DAE_ERR_NOT_FOUND, 404, "model_not_found", -1},
    {SRV_EDGE_MODEL, DAE_ERR_IN_USE, 409, "model_active", -1},
    {SRV_EDGE_MODEL, DAE_ERR_INVALID, 409, "model_not_in_dir", -1},
    {SRV_EDGE_MODEL, DAE_ERR_NO_SPACE, 507, "insufficient_storage", -1},
    {SRV_EDGE_MODEL, DAE_OK, 500, "io_error", -1},
    /* PUT /models/{name} (model_http.h). */
    {SRV_EDGE_MODEL_PUT, DAE_ERR_INVALID, 422, "invalid_parameter", -1},
    {SRV_EDGE_MODEL_PUT, DAE_ERR_FORMAT, 422, "invalid_model", -1},
    {SRV_EDGE_MODEL_PUT, DAE_ERR_TOO_LARGE, 413, "body_too_large", SRV_REJECT_BODY_TOO_LARGE},
    {SRV_EDGE_MODEL_PUT, DAE_ERR_IN_USE, 409, "model_active", -1},
    {SRV_EDGE_MODEL_PUT, DAE_ERR_EXISTS, 409, "model_exists", -1},
    {SRV_EDGE_MODEL_PUT, DAE_ERR_NOMEM, 503, "out_of_memory", -1},
    {SRV_EDGE_MODEL_PUT, DAE_ERR_NO_SPACE, 507, "insufficient_storage", -1},
    {SRV_EDGE_MODEL_PUT, DAE_OK, 500, "io_error", -1},
    /* GET /models/{name}/weights. */
    {SRV_EDGE_MODEL_FILE, DAE_ERR_NOT_FOUND, 404, "model_not_found", -1},
    {SRV_EDGE_MODEL_FILE, DAE_ERR_CONFLICT, 503, "model_file_changed", -1},
    {SRV_EDGE_MODEL_FILE, DAE_OK, 500, "io_error", -1},
    /* PUT, GET and DELETE /datasets/{name} (dataset_http.h). */
    {SRV_EDGE_DATASET, DAE_ERR_NOT_FOUND, 404, "dataset_not_found", -1},
    {SRV_EDGE_DATASET, DAE_ERR_INVALID, 422, "invalid_dataset", -1},
    {SRV_EDGE_DATASET, DAE_ERR_FORMAT, 422, "invalid_archive", -1},
    {SRV_EDGE_DATASET, DAE_ERR_TOO_LARGE, 413, "dataset_too_large", -1},
    {SRV_EDGE_DATASET, DAE_ERR_EXISTS, 409, "dataset_exists", -1},
    {SRV_EDGE_DATASET, DAE_ERR_IN_USE, 409, "dataset_in_use", -1},
    {SRV_EDGE_DATASET, DAE_ERR_BUSY, 503, "dataset_import_busy", -1},
    {SRV_EDGE_DATASET, DAE_ERR_NOMEM, 503, "out_of_memory", -1},
    {SRV_EDGE_DATASET, DAE_ERR_NO_SPACE, 507, "insufficient_storage", -1},
    {SRV_EDGE_DATASET, DAE_OK, 500, "io_error", -1},
    /* Any other route's refusal. */
    {SRV_EDGE_ROUTE, DAE_ERR_STOPPING, 503, "draining", -1},
    {SRV_EDGE_ROUTE, DAE_OK, 500, "internal_error", -1},
    /* POST /train: the request (a field, or what this server can run now) ... */
    {SRV_EDGE_TRAIN_REQUEST, DAE_ERR_INVALID, 422, "invalid_parameter", -1},
    {SRV_EDGE_TRAIN_REQUEST, DAE_ERR_NOT_FOUND, 422, "dataset_not_found", -1},
    {SRV_EDGE_TRAIN_REQUEST, DAE_ERR_FORMAT, 422, "invalid_dataset", -1},
    {SRV_EDGE_TRAIN_REQUEST, DAE_ERR_TOO_LARGE, 422, "train_memory_budget", -1},
    {SRV_EDGE_TRAIN_REQUEST, DAE_OK, 500, "internal_error", -1},
    /* ... and its place in the queue (training.h). */
    {SRV_EDGE_TRAIN_SUBMIT, DAE_ERR_STOPPING, 503, "draining", -1},
    {SRV_EDGE_TRAIN_SUBMIT, DAE_ERR_BUSY, 503, "train_queue_full", -1},
    {SRV_EDGE_TRAIN_SUBMIT, DAE_ERR_TOO_LARGE, 503, "job_ids_exhausted", -1},
    {SRV_EDGE_TRAIN_SUBMIT, DAE_ERR_CONFLICT, 409, "model_name_in_use", -1},
    {SRV_EDGE_TRAIN_SUBMIT, DAE_ERR_IN_USE, 409, "model_active", -1},
    {SRV_EDGE_TRAIN_SUBMIT, DAE_ERR_EXISTS, 409, "model_exists", -1},
    {SRV_EDGE_TRAIN_SUBMIT, DAE_ERR_NO_SPACE, 507, "insufficient_storage", -1},
    {SRV_EDGE_TRAIN_SUBMIT, DAE_ERR_IO, 500, "io_error", -1},
    {SRV_EDGE_TRAIN_SUBMIT, DAE_OK, 500, "internal_error", -1},
    /* DELETE /train/{id}. */
    {SRV_EDGE_TRAIN_CANCEL, DAE_ERR_NOT_FOUND, 404, "job_not_found", -1},
    {SRV_EDGE_TRAIN_CANCEL, DAE_ERR_CONFLICT, 409, "job_finished", -1},
    {SRV_EDGE_TRAIN_CANCEL, DAE_ERR_IN_USE, 409, "job_finishing", -1},
    {SRV_EDGE_TRAIN_CANCEL, DAE_ERR_NO_SPACE, 507, "insufficient_storage", -1},
    {SRV_EDGE_TRAIN_CANCEL, DAE_OK, 500, "internal_error", -1},
};

/* The row of EDGE_ERRORS for st in work of that kind. */
static const edge_error *edge_error_of(srv_edge_kind kind, dae_status st) {
    const edge_error *fallback = NULL;
    for (size_t i = 0; i < sizeof EDGE_ERRORS / sizeof EDGE_ERRORS[0]; i++) {
        const edge_error *e = &EDGE_ERRORS[i];
        if (e->kind != kind) continue;
        if (e->status == st) return e;
        if (e->status == DAE_OK) fallback = e;
    }
    return fallback;
}

int srv_http_error_of(srv_edge_kind kind, dae_status st, const char **code) {
    const edge_error *e = edge_error_of(kind, st);
    *code = e->code;
    return e->http_status;
}

const char *srv_http_error_message(dae_status st, const char *msg) {
    if (st != DAE_ERR_NO_SPACE) return msg;
    srv_log("warning: %s", msg);
    return "no space left on the server's storage: nothing was written or changed (an admin must free some, then "
           "retry)";
}

/* Answers the error st of work of that kind as EDGE_ERRORS says, with the
 * sentence fmt, and counts the rejection the row names. */
static enum MHD_Result answer_status(request *r, srv_edge_kind kind, dae_status st, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static enum MHD_Result answer_status(request *r, srv_edge_kind kind, dae_status st, const char *fmt, ...) {
    char msg[DAE_ERR_LEN + 256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    const edge_error *e = edge_error_of(kind, st);
    if (e->reject >= 0) srv_metrics_reject(r->http->metrics, (srv_reject_reason)e->reject);
    return answer_error(r, e->http_status, e->code, "%s", srv_http_error_message(st, msg));
}

/* Answers 503 "memory_budget" to a request whose next bytes would not fit
 * the memory budget, or what its client may hold of it (Retry-After says
 * when to try again). */
static enum MHD_Result refuse_memory(request *r, long long bytes) {
    srv_http *h = r->http;
    srv_budget *b = srv_infer_budget(h->infer);
    srv_budget_share *share = memory_share(r);
    long long held = share != NULL ? atomic_load(&share->used) : 0;
    const char *flag;
    long long most = budget_most(r, &flag);
    if (bytes > most) {
        srv_metrics_reject(h->metrics, share != NULL && b->share_limit < b->limit ? SRV_REJECT_CLIENT_SHARE
                                                                                   : SRV_REJECT_MEMORY_BUDGET);
        return answer_error(r, 503, "memory_budget",
                            "this request needs %lld bytes, more than one request may ever hold of the memory budget "
                            "(%lld bytes, %s)", bytes, most, flag);
    }
    if (share != NULL && bytes > b->share_limit - held) {
        char name[SRV_CLIENT_NAME_MAX];
        srv_client_name(r->client, name, sizeof name);
        srv_metrics_reject(h->metrics, SRV_REJECT_CLIENT_SHARE);
        return answer_error(r, 503, "memory_budget",
                            "your requests in flight hold %lld of the %lld bytes of memory one client (%s) may hold "
                            "(--client-share); this request needs %lld more; retry when they are done",
                            held, b->share_limit, name, bytes);
    }
    srv_metrics_reject(h->metrics, SRV_REJECT_MEMORY_BUDGET);
    return answer_error(r, 503, "memory_budget",
                        "the server's memory budget is in use (%lld of %lld bytes held by requests in flight; this "
                        "request needs %lld more); retry shortly",
                        srv_budget_used(b), b->limit, bytes);
}

/* Answers made for a request this small are not held against the memory
 * budget: a stalled connection holds as much of libmicrohttpd's own
 * buffers, which --max-connections bounds. */
#define HELD_MIN_BYTES (64 * 1024)

/* Holds bytes of the memory budget for r's answer until r ends, in place
 * of what it held (more or less). 0, or -1 when refused (what it held
 * stays). */
static int hold_answer(request *r, long long bytes) {
    long long more = bytes - r->answer_reserved;
    if (more > 0 && budget_take(r, more) != 0) return -1;
    if (more < 0) budget_give(r, -more);
    r->answer_reserved = bytes;
    return 0;
}

/* Answers a body made for r (malloc'd; taken over) like answer does,
 * holding the bytes it sends (gzip'd or not) against the memory budget
 * until r ends. A generated answer can be large (a loss curve, the model
 * list): each of 20 connections that asked for a 150 MB job list and read
 * nothing held its own copy, 3.1 GB in all. (Job records and the job list
 * are held the same way, sent from shared texts: answer_texts.) */
static enum MHD_Result answer_held(request *r, int status, const char *content_type, char *body, size_t len) {
    size_t gz_len = 0;
    uint8_t *gz = answer_zips(r, content_type, len) ? dae_gzip(body, len, &gz_len) : NULL;
    long long sent = (long long)(gz != NULL ? gz_len : len);
    if (sent >= HELD_MIN_BYTES && hold_answer(r, sent) != 0) {
        free(gz);
        free(body);
        return refuse_memory(r, sent);
    }
    return answer_made(r, status, content_type, body, len, MHD_RESPMEM_MUST_FREE, gz, gz_len);
}

/* Answers a JSON document (malloc'd; taken over; answer_held). Strings in
 * it may come from files (model metadata, job records): any byte that is
 * not well-formed UTF-8 is replaced, so a JSON client can always parse it. */
static enum MHD_Result answer_json(request *r, int status, char *json) {
    if (json == NULL) return answer_error(r, 500, "internal_error", "out of memory");
    size_t n = strlen(json);
    if (!srv_utf8_valid(json, n)) {
        char *fixed = srv_utf8_fix(json, n, &n);
        free(json);
        if (fixed == NULL) return answer_error(r, 500, "internal_error", "out of memory");
        json = fixed;
    }
    return answer_held(r, status, "application/json", json, n);
}

/* Answers 503 "draining" once shutdown began: the dispatcher's answer to
 * every route flagged ROUTE_DRAIN_REFUSES, and an upload's when the
 * inference queue closed meanwhile. The one place this answer is written.
 * An upload refused counts as a rejection (the rejections count image
 * work turned away). */
static enum MHD_Result refuse_draining(request *r) {
    int upload = r->rm != NULL && (r->rm->flags & ROUTE_UPLOAD) && !(r->rm->flags & (ROUTE_MODEL_FILE | ROUTE_DATASET));
    return answer_status(r, upload ? SRV_EDGE_UPLOAD : SRV_EDGE_ROUTE, DAE_ERR_STOPPING,
                         "the server is shutting down and takes no new work");
}

/* ------------------------------------------------ work off the event loop */

/* One event-loop thread answers every connection, so a handler's long
 * work (megabytes of JSON to parse or print, a data set to import) would
 * hold up every other client, /healthz too. Such work runs on the helper
 * thread instead, the request's connection suspended meanwhile; then the
 * loop runs then(r), which answers or goes on (to the inference workers).
 *
 * The helper takes the clients in turn, each client's work in the order
 * it came: a client's work gets the turn after its previous one, or the
 * next turn when it has none waiting. One client's sixteen big JSON
 * bodies used to go ahead of everyone else's, and another client's small
 * v2 request waited 0.5 s behind them. */
static enum MHD_Result off_loop(request *r, void (*work)(request *r), route_handler then) {
    srv_http *h = r->http;
    pthread_mutex_lock(&h->helper_mu);
    int stopping = h->helper_stopping;
    if (!stopping) {
        unsigned long long *last = r->client != NULL ? &r->client->helper_turn : &h->nobody_turn;
        if (*last < h->helper_turn) *last = h->helper_turn;
        r->off_turn = ++*last;
        r->off_work = work, r->off_then = then;
        r->off_since = dae_now_s();
        r->phase = PHASE_OFF_LOOP;
        MHD_suspend_connection(r->conn); /* first: the helper may resume it once it sees r */
        request **at = &h->helper_queue;
        while (*at != NULL && (*at)->off_turn <= r->off_turn) at = &(*at)->off_next;
        r->off_next = *at;
        *at = r;
        atomic_fetch_add_explicit(&h->metrics->helper_depth, 1, memory_order_relaxed);
        pthread_cond_signal(&h->helper_wake);
    }
    pthread_mutex_unlock(&h->helper_mu);
    return stopping ? refuse_draining(r) : MHD_YES;
}

/* The loop's side once a request's work is done (the handler's call
 * after the helper resumed the connection). */
static enum MHD_Result off_loop_done(request *r) {
    return r->off_cancelled ? refuse_draining(r) : r->off_then(r);
}

static void *helper_main(void *arg) {
    srv_http *h = arg;
    pthread_mutex_lock(&h->helper_mu);
    for (;;) {
        while (h->helper_queue == NULL && !h->helper_stopping) pthread_cond_wait(&h->helper_wake, &h->helper_mu);
        request *r = h->helper_queue;
        if (r == NULL) break; /* stopping, nothing left */
        h->helper_queue = r->off_next;
        h->helper_turn = r->off_turn;
        atomic_fetch_sub_explicit(&h->metrics->helper_depth, 1, memory_order_relaxed);
        int stop = h->helper_stopping;
        pthread_mutex_unlock(&h->helper_mu);
        if (stop) {
            r->off_cancelled = 1; /* the daemon is stopping: no work begins */
        } else {
            double t0 = dae_now_s();
            srv_hist_observe(&h->metrics->helper_wait, t0 - r->off_since);
            r->off_work(r);
            srv_hist_observe(&h->metrics->helper_work, dae_now_s() - t0);
        }
        MHD_resume_connection(r->conn); /* last touch: r may be gone after this */
        pthread_mutex_lock(&h->helper_mu);
    }
    pthread_mutex_unlock(&h->helper_mu);
    return NULL;
}

/* ------------------------------------------------------------ GET routes */

static enum MHD_Result get_healthz(request *r) {
    static char ok[] = "{\"status\":\"ok\"}\n";
    return answer(r, 200, "application/json", ok, sizeof ok - 1, MHD_RESPMEM_PERSISTENT);
}

/* GET /readyz: 200 with the default model; 503 without one (and, by its
 * flag, while draining). */
static enum MHD_Result get_readyz(request *r) {
    srv_http *h = r->http;
    srv_model *m = srv_registry_acquire(h->registry, NULL);
    if (m == NULL) return answer_error(r, 503, "no_model", "no default model is loaded");
    char body[256];
    int n = snprintf(body, sizeof body, "{\"status\":\"ready\",\"model\":\"%s\",\"version\":\"%s\"}\n", m->name,
                     m->version);
    srv_model_release(m);
    return answer(r, 200, "application/json", body, (size_t)n, MHD_RESPMEM_MUST_COPY);
}

static enum MHD_Result get_metrics(request *r) {
    srv_http *h = r->http;
    srv_metrics_gauges g = {
        .in_flight = atomic_load(&h->in_flight),
        .pending = srv_infer_pending(h->infer),
        .connections = srv_gate_connections(h->gate),
        .closing = srv_gate_closing(h->gate),
        .queue_capacity = h->cfg->queue_size,
        .workers = h->cfg->workers,
        .small_workers = h->cfg->small_workers,
        .max_batch = h->cfg->max_batch,
        .draining = atomic_load(&h->draining),
        .memory_budget = srv_infer_budget(h->infer)->limit,
        .memory_reserved = srv_budget_used(srv_infer_budget(h->infer)),
        .memory_peak = srv_budget_peak(srv_infer_budget(h->infer)),
    };
    size_t len;
    char *text = srv_metrics_render(h->metrics, &g, h->registry, &len);
    if (text == NULL) return answer_error(r, 500, "internal_error", "out of memory");
    char *train = h->train != NULL ? srv_train_http_metrics(h->train) : NULL;
    if (train != NULL) {
        size_t tl = strlen(train);
        char *both = realloc(text, len + tl + 1);
        if (both != NULL) {
            memcpy(both + len, train, tl + 1);
            text = both;
            len += tl;
        }
        free(train);
    }
    return answer(r, 200, "text/plain; version=0.0.4; charset=utf-8", text, len, MHD_RESPMEM_MUST_FREE);
}

static enum MHD_Result get_models(request *r) {
    return answer_json(r, 200, srv_registry_list_json(r->http->registry));
}

static enum MHD_Result get_model(request *r) {
    int found = 0;
    char *json = srv_registry_model_json(r->http->registry, r->route_arg, &found);
    if (!found) return answer_error(r, 404, "model_not_found", "no model named \"%s\"", r->route_arg);
    return answer_json(r, 200, json);
}

/* ------------------------------------------------------------ image routes */

/* A route's query arguments, checked (check_args): the first one refused
 * and why. */
typedef struct {
    const char *const *allowed; /* the names the route takes, NULL-terminated */
    const char *takes;          /* the same, for the message */
    const char *bad;            /* NULL: every argument is fine */
    enum { ARG_UNKNOWN, ARG_TWICE, ARG_NUL, ARG_NO_VALUE } why;
    unsigned seen;              /* bit i: allowed[i] came */
} arg_check;

/* MHD_KeyValueIteratorN: stops at the first argument whose name is not
 * in the list, that comes twice (which one would count?), that has no
 * value ("?sigma" would read as no sigma at all), or whose name or value
 * holds a NUL byte (%00: the C string would end there). */
static enum MHD_Result check_arg(void *cls, enum MHD_ValueKind kind, const char *key, size_t key_size,
                                 const char *value, size_t value_size) {
    (void)kind;
    arg_check *c = cls;
    c->bad = key;
    if (strlen(key) != key_size || (value != NULL && strlen(value) != value_size)) {
        c->why = ARG_NUL;
        return MHD_NO;
    }
    for (unsigned i = 0; c->allowed[i] != NULL; i++)
        if (strcmp(key, c->allowed[i]) == 0) {
            c->why = value == NULL ? ARG_NO_VALUE : ARG_TWICE;
            if (value == NULL || c->seen & 1u << i) return MHD_NO;
            c->seen |= 1u << i;
            c->bad = NULL;
            return MHD_YES;
        }
    c->why = ARG_UNKNOWN;
    return MHD_NO;
}

/* Checks r's query arguments against ac's list; 0, or -1 having answered
 * the 422 into *refused. */
static int check_args(request *r, arg_check *ac, enum MHD_Result *refused) {
    MHD_get_connection_values_n(r->conn, MHD_GET_ARGUMENT_KIND, check_arg, ac);
    if (ac->bad == NULL) return 0;
    if (ac->why == ARG_UNKNOWN)
        *refused = answer_error(r, 422, "invalid_parameter", "unknown query parameter \"%s\" (%s takes: %s)", ac->bad,
                                r->route->path, ac->takes);
    else
        *refused = answer_error(r, 422, "invalid_parameter", "query parameter \"%s\" %s", ac->bad,
                                ac->why == ARG_TWICE  ? "is given more than once"
                                : ac->why == ARG_NUL ? "holds a NUL byte (%00)"
                                                     : "has no value (NAME=VALUE)");
    return -1;
}

/* The worker's callback: the image request's result is in; wake the
 * connection. */
static void image_done(srv_infer_request *req) {
    request *r = req->user;
    MHD_resume_connection(r->conn); /* last touch: r may be gone after this */
}

/* The image request's result, after the worker resumed the connection. */
static enum MHD_Result answer_image(request *r) {
    srv_infer_request *req = &r->image;
    if (req->status != DAE_OK) return answer_status(r, SRV_EDGE_IMAGE, req->status, "%s", req->message);
    uint8_t *png = req->png;
    req->png = NULL;
    return answer(r, 200, "image/png", png, req->png_len, MHD_RESPMEM_MUST_FREE);
}

/* Readies j, an image request of r on the image file img (len bytes,
 * pixels pixels, need bytes of the memory budget reserved for it), with
 * r's model and the server's limits; done is called when it is. */
static void image_request_set(request *r, srv_infer_request *j, srv_infer_kind kind, const uint8_t *img, size_t len,
                              long long pixels, long long need, srv_infer_done_fn done) {
    const srv_config *cfg = r->http->cfg;
    j->kind = kind;
    j->input = img;
    j->input_len = len;
    j->max_pixels = (size_t)cfg->max_pixels;
    j->pixels = pixels;
    j->model = r->model;
    j->png_level = cfg->png_level;
    j->mem_reserved = need;
    j->share = memory_share(r);
    j->queue_share = queue_share(r);
    j->done = done;
    j->user = r;
}

/* Runs j, a denoise or tensor request of one w x h tile (after its
 * reserve), here and now when r's is the only client connected and the
 * server is idle; returns 1 when it ran. A worker would take a lone tile
 * at once too, and the trip there and back (two thread switches, their
 * wake-ups) cost more than it. With other connections open, requests may
 * be waiting unread in their sockets that this thread would hold up (and
 * that the workers batch): they go to the workers. */
static int run_lone_tile(request *r, srv_infer_request *j, int w, int h) {
    return w <= r->model->net.in_w && h <= r->model->net.in_h && srv_gate_connections(r->http->gate) == 1 &&
           srv_infer_run_now(r->http->infer, j);
}

/* Parses the /noise parameters into the image request. Returns 0, or
 * answers 422. */
static int noise_params(request *r, enum MHD_Result *ret) {
    struct MHD_Connection *c = r->conn;
    const char *type = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "type");
    const char *sigma = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "sigma");
    const char *amount = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "amount");
    const char *seed = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "seed");
    if (type == NULL) type = "gaussian";
    int salt = strcmp(type, "salt-pepper") == 0;
    if (strcmp(type, "gaussian") != 0 && strcmp(type, "speckle") != 0 && !salt) {
        *ret = answer_error(r, 422, "invalid_parameter", "type must be gaussian, salt-pepper or speckle, not \"%s\"",
                            type);
        return -1;
    }
    if (salt && sigma != NULL) {
        *ret = answer_error(r, 422, "invalid_parameter", "salt-pepper noise takes amount, not sigma");
        return -1;
    }
    if (!salt && amount != NULL) {
        *ret = answer_error(r, 422, "invalid_parameter", "%s noise takes sigma, not amount", type);
        return -1;
    }
    const char *level = salt ? (amount != NULL ? amount : "0.1") : (sigma != NULL ? sigma : "0.5");
    char spec_text[128], err[DAE_ERR_LEN];
    snprintf(spec_text, sizeof spec_text, "%s:%s", type, level);
    /* One image, one level: a range (LO-HI) is for training. */
    if (strlen(level) > 32 || dae_noise_parse(spec_text, &r->image.noise, err, sizeof err) != DAE_OK ||
        dae_noise_is_range(&r->image.noise)) {
        *ret = answer_error(r, 422, "invalid_parameter", "%s must be a plain decimal number in %s, not \"%s\"",
                            salt ? "amount" : "sigma", salt ? "[0, 1]" : "[0, 10]", level);
        return -1;
    }
    r->image.seed = 0;
    if (seed != NULL) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(seed, &end, 10);
        if (seed[0] < '0' || seed[0] > '9' || *end != '\0' || errno == ERANGE) {
            *ret = answer_error(r, 422, "invalid_parameter", "seed must be an integer from 0 to 2^64-1, not \"%s\"",
                                seed);
            return -1;
        }
        r->image.seed = v;
    }
    return 0;
}

/* The final call of POST /denoise (denoise 1) and /noise (0): every
 * cheap check, then the image request goes to the workers and the
 * connection is suspended. */
static enum MHD_Result post_image(request *r, int denoise) {
    srv_http *h = r->http;
    const srv_config *cfg = h->cfg;
    static const char *const denoise_args[] = {"model", NULL};
    static const char *const noise_args[] = {"type", "sigma", "amount", "seed", NULL};
    arg_check ac = {.allowed = denoise ? denoise_args : noise_args,
                    .takes = denoise ? "model" : "type, sigma, amount, seed"};
    enum MHD_Result ret;
    if (check_args(r, &ac, &ret) != 0) return ret;
    if (denoise) {
        const char *name = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "model");
        r->model = srv_registry_acquire(h->registry, name);
        if (r->model == NULL) {
            if (name == NULL) return answer_error(r, 503, "no_model", "no default model is loaded");
            return answer_error(r, 404, "model_not_found", "no model named \"%s\" (GET /models lists them)", name);
        }
    } else if (noise_params(r, &ret) != 0) {
        return ret;
    }
    if (r->too_large) {
        srv_metrics_reject(h->metrics, SRV_REJECT_BODY_TOO_LARGE);
        return answer_error(r, 413, "body_too_large", "request body is over the limit of %lld bytes",
                            cfg->max_body_bytes);
    }
    /* The image: the whole body, or the multipart field "image". */
    const uint8_t *img = r->body;
    size_t img_len = r->len;
    const char *ctype = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    if (srv_multipart_is_form(ctype)) {
        char err[256];
        dae_status st = srv_multipart_find(ctype, r->body, r->len, "image", &img, &img_len, err, sizeof err);
        if (st != DAE_OK) return answer_status(r, SRV_EDGE_UPLOAD, st, "%s", err);
    }
    if (img_len == 0)
        return answer_error(r, 400, "empty_body",
                            "no image: send the file as the body (--data-binary @FILE) or as the form field "
                            "\"image\" (-F image=@FILE)");
    /* The header alone tells the size: refuse big images before decoding. */
    int w, hgt;
    char err[DAE_ERR_LEN];
    if (dae_image_probe(img, img_len, &w, &hgt, err, sizeof err) != DAE_OK) {
        if (dae_image_format_name(img, img_len) == NULL)
            return answer_error(r, 415, "unsupported_media_type", "%s", err);
        return answer_status(r, SRV_EDGE_IMAGE, DAE_ERR_FORMAT, "%s", err);
    }
    long long pixels = (long long)w * hgt;
    if (pixels > cfg->max_pixels || w > DAE_IMAGE_MAX_SIDE || hgt > DAE_IMAGE_MAX_SIDE)
        return answer_status(r, SRV_EDGE_IMAGE, DAE_ERR_TOO_LARGE,
                             "image is %dx%d = %lld pixels, over the limit of %lld", w, hgt, pixels, cfg->max_pixels);
    /* The memory the request will need at its peak, estimated from the header
     * (the channels are not known yet: the worst case), reserved before
     * anything is decoded; the worker lowers it once they are. */
    const char *flag;
    long long most = budget_most(r, &flag);
    long long need = srv_budget_image_bytes(denoise ? SRV_BUDGET_DENOISE : SRV_BUDGET_NOISE, w, hgt, 0);
    if (need < 0 || need > most - r->body_reserved)
        return answer_status(r, SRV_EDGE_IMAGE, DAE_ERR_TOO_LARGE,
                             "image is %dx%d: with its body it needs up to %lld bytes, over the whole memory budget of "
                             "%lld bytes (%s)",
                             w, hgt, need + r->body_reserved, most, flag);
    if (budget_take(r, need) != 0) return refuse_memory(r, need);
    dae_status st = srv_infer_reserve(h->infer, queue_share(r), 1, pixels, err, sizeof err);
    if (st != DAE_OK) {
        budget_give(r, need);
        if (st == DAE_ERR_STOPPING) return refuse_draining(r); /* shutdown began since the dispatcher looked */
        return answer_status(r, SRV_EDGE_UPLOAD, st, "%s", err);
    }
    srv_infer_request *j = &r->image;
    image_request_set(r, j, denoise ? SRV_INFER_DENOISE : SRV_INFER_NOISE, img, img_len, pixels, need, image_done);
    if (denoise && run_lone_tile(r, j, w, hgt)) return answer_image(r);
    /* Suspend first: the worker may resume before this function returns. */
    r->phase = PHASE_QUEUED;
    MHD_suspend_connection(r->conn);
    srv_infer_enqueue(h->infer, j);
    return MHD_YES;
}

static enum MHD_Result post_denoise(request *r) { return post_image(r, 1); }

static enum MHD_Result post_noise(request *r) { return post_image(r, 0); }

/* ------------------------------------------------------------ the Open Inference Protocol (v2) */

static enum MHD_Result get_v2(request *r) {
    static char doc[] = "{\"name\":\"dae\",\"version\":\"" DAE_SERVER_VERSION "\",\"extensions\":" SRV_OIP_EXTENSIONS "}\n";
    return answer(r, 200, "application/json", doc, sizeof doc - 1, MHD_RESPMEM_PERSISTENT);
}

static enum MHD_Result get_v2_live(request *r) {
    static char doc[] = "{\"live\":true}\n";
    return answer(r, 200, "application/json", doc, sizeof doc - 1, MHD_RESPMEM_PERSISTENT);
}

/* GET /v2/health/ready: ready with a default model (and, by its flag,
 * not while draining). */
static enum MHD_Result get_v2_ready(request *r) {
    srv_model *m = srv_registry_acquire(r->http->registry, NULL);
    if (m == NULL) return answer_error(r, 503, "not_ready", "no default model is loaded");
    srv_model_release(m);
    static char doc[] = "{\"ready\":true}\n";
    return answer(r, 200, "application/json", doc, sizeof doc - 1, MHD_RESPMEM_PERSISTENT);
}

/* Takes the model the path names (and the version, when it names one)
 * into r->model. Returns 0, or -1 having answered 404. */
static int v2_model_of(request *r, enum MHD_Result *ret) {
    r->model = srv_registry_acquire(r->http->registry, r->route_arg);
    if (r->model == NULL) {
        *ret = answer_error(r, 404, "model_not_found", "no model named \"%s\"", r->route_arg);
        return -1;
    }
    if (r->version_arg[0] != '\0' && strcmp(r->version_arg, r->model->version) != 0) {
        *ret = answer_error(r, 404, "model_version_not_found", "model \"%s\" has no version \"%s\" (it has \"%s\")",
                            r->route_arg, r->version_arg, r->model->version);
        return -1;
    }
    return 0;
}

static enum MHD_Result get_v2_model(request *r) {
    enum MHD_Result ret;
    if (v2_model_of(r, &ret) != 0) return ret;
    return answer_json(r, 200, srv_oip_model_json(r->model));
}

static enum MHD_Result get_v2_model_ready(request *r) {
    enum MHD_Result ret;
    if (v2_model_of(r, &ret) != 0) return ret;
    char doc[128];
    int n = snprintf(doc, sizeof doc, "{\"name\":\"%s\",\"ready\":true}\n", r->model->name);
    return answer(r, 200, "application/json", doc, (size_t)n, MHD_RESPMEM_MUST_COPY);
}

/* The worker's callback for one image of a v2 request: the last one
 * wakes the connection. */
static void v2_image_done(srv_infer_request *req) {
    request *r = req->user;
    if (atomic_fetch_sub(&r->v2_outstanding, 1) == 1) MHD_resume_connection(r->conn); /* r may be gone after this */
}

/* Prints a v2 request's answer (its memory reserved) into r->v2_answer,
 * and gzips it when the client takes that. */
static void v2_print(request *r) {
    srv_oip_request *q = &r->oip;
    uint8_t **png = NULL;
    size_t *png_len = NULL;
    r->off_status = DAE_ERR_NOMEM;
    if (q->kind == SRV_OIP_IMAGES) {
        png = malloc(sizeof *png * (size_t)q->n);
        png_len = malloc(sizeof *png_len * (size_t)q->n);
        if (png == NULL || png_len == NULL) goto out;
        for (int i = 0; i < q->n; i++) png[i] = r->v2_images[i].png, png_len[i] = r->v2_images[i].png_len;
    }
    r->off_status = srv_oip_answer(q, r->model, r->v2_out, png, png_len, &r->v2_answer, &r->v2_answer_len,
                                   &r->v2_answer_json);
    if (r->off_status == DAE_OK && r->v2_answer_json == r->v2_answer_len &&
        answer_zips(r, "application/json", r->v2_answer_len)) /* millions of printed floats */
        r->off_gz = dae_gzip(r->v2_answer, r->v2_answer_len, &r->off_gz_len);
out:
    free(png);
    free(png_len);
}

/* Sends a v2 request's answer, JSON alone or with binary data. */
static enum MHD_Result v2_send(request *r) {
    if (r->off_status != DAE_OK) return answer_error(r, 503, "out_of_memory", "out of memory for the answer");
    uint8_t *body = r->v2_answer, *gz = r->off_gz;
    r->v2_answer = NULL, r->off_gz = NULL;
    if (r->v2_answer_json == r->v2_answer_len)
        return answer_made(r, 200, "application/json", body, r->v2_answer_len, MHD_RESPMEM_MUST_FREE, gz,
                           r->off_gz_len);
    snprintf(r->infer_header, sizeof r->infer_header, "%zu", r->v2_answer_json);
    return answer(r, 200, "application/octet-stream", body, r->v2_answer_len, MHD_RESPMEM_MUST_FREE);
}

/* The answer to a v2 inference request whose work is done. */
static enum MHD_Result answer_v2_infer(request *r) {
    srv_oip_request *q = &r->oip;
    size_t png_total = 0;
    if (q->kind == SRV_OIP_TENSOR) {
        if (r->image.status != DAE_OK) return answer_status(r, SRV_EDGE_IMAGE, r->image.status, "%s", r->image.message);
        if (r->v2_answer != NULL) { /* made before the run, the outputs written into it */
            r->off_status = DAE_OK;
            return v2_send(r);
        }
    } else {
        for (int i = 0; i < q->n; i++)
            if (r->v2_images[i].status != DAE_OK)
                return answer_status(r, SRV_EDGE_IMAGE, r->v2_images[i].status, "input \"%s\": element %d: %s",
                                     SRV_OIP_INPUT_IMAGES, i, r->v2_images[i].message);
        for (int i = 0; i < q->n; i++) png_total += r->v2_images[i].png_len;
    }
    long long bytes = srv_oip_answer_bytes(q, r->model->net.in_h, r->model->net.in_w, png_total);
    if (budget_take(r, bytes) != 0) return refuse_memory(r, bytes);
    r->v2_reserved += bytes; /* given back when the answer is sent */
    if (bytes >= (long long)OFF_LOOP_BYTES) return off_loop(r, v2_print, v2_send);
    v2_print(r);
    return v2_send(r);
}

/* Runs or queues the v2 request's n requests (their places and memory
 * reserved), like post_image: a lone one of one w x h tile on an idle
 * server runs here and now. */
static enum MHD_Result v2_submit(request *r, srv_infer_request *reqs, int n, int w, int h) {
    atomic_store(&r->v2_outstanding, n);
    if (n == 1 && run_lone_tile(r, &reqs[0], w, h)) return answer_v2_infer(r);
    r->phase = PHASE_QUEUED;
    MHD_suspend_connection(r->conn); /* first: a worker may resume it before this returns */
    for (int i = 0; i < n; i++) srv_infer_enqueue(r->http->infer, &reqs[i]);
    return MHD_YES;
}

/* The FP32 tensor of a v2 request: one tensor request of N inputs. Its
 * outputs go straight into the binary answer when one is asked for, or
 * into floats a JSON answer is printed from. */
static enum MHD_Result v2_infer_tensor(request *r) {
    srv_http *h = r->http;
    const int th = r->model->net.in_h, tw = r->model->net.in_w;
    long long count = (long long)r->oip.n * th * tw;
    long long out_bytes = r->oip.binary_output ? srv_oip_answer_bytes(&r->oip, th, tw, 0)
                                               : count * (long long)sizeof(float);
    if (budget_take(r, out_bytes) != 0) return refuse_memory(r, out_bytes);
    r->v2_reserved += out_bytes;
    uint8_t *out;
    if (r->oip.binary_output) {
        if (srv_oip_answer(&r->oip, r->model, NULL, NULL, NULL, &r->v2_answer, &r->v2_answer_len,
                           &r->v2_answer_json) != DAE_OK)
            return answer_error(r, 503, "out_of_memory", "out of memory for the answer");
        out = r->v2_answer + r->v2_answer_json;
    } else if ((r->v2_out = malloc((size_t)out_bytes)) != NULL) {
        out = (uint8_t *)r->v2_out;
    } else {
        return answer_error(r, 503, "out_of_memory", "out of memory for the output tensor");
    }
    char err[DAE_ERR_LEN];
    dae_status st = srv_infer_reserve(h->infer, queue_share(r), 1, count, err, sizeof err);
    if (st == DAE_ERR_STOPPING) return refuse_draining(r);
    if (st != DAE_OK) return answer_status(r, SRV_EDGE_UPLOAD, st, "%s", err);
    srv_infer_request *j = &r->image;
    j->kind = SRV_INFER_TENSOR;
    j->tensor_in = r->oip.tensor;
    j->tensor_out = out;
    j->tensor_n = r->oip.n;
    j->pixels = count;
    j->model = r->model;
    j->mem_reserved = 0; /* the tensors are r->v2_reserved's */
    j->queue_share = queue_share(r);
    j->done = v2_image_done;
    j->user = r;
    /* A batch of one input is one tile. */
    return v2_submit(r, j, 1, r->oip.n == 1 ? th : INT_MAX, tw);
}

/* Forgets the memory the v2 request's images were to reserve, when it is
 * refused before taking it (on_request_done gives back what they hold). */
static void v2_images_unreserved(request *r) {
    for (int i = 0; i < r->oip.n; i++) r->v2_images[i].mem_reserved = 0;
}

/* The BYTES images of a v2 request: one denoise request per image, with
 * /denoise's checks and limits for each, places and memory reserved for
 * all of them at once. */
static enum MHD_Result v2_infer_images(request *r) {
    srv_http *h = r->http;
    const srv_config *cfg = h->cfg;
    const int n = r->oip.n;
    /* The requests' own records first: a body of 10 MB holds 100,000 tiny images. */
    long long records = (long long)n * (long long)sizeof *r->v2_images;
    if (budget_take(r, records) != 0) return refuse_memory(r, records);
    r->v2_reserved += records;
    r->v2_images = calloc((size_t)n, sizeof *r->v2_images);
    if (r->v2_images == NULL) return answer_error(r, 503, "out_of_memory", "out of memory for %d image requests", n);
    long long pixels = 0, need = 0;
    char err[DAE_ERR_LEN];
    int w = 0, hgt = 0;
    for (int i = 0; i < n; i++) {
        const uint8_t *img = r->oip.image[i];
        size_t len = r->oip.image_len[i];
        if (dae_image_probe(img, len, &w, &hgt, err, sizeof err) != DAE_OK) {
            v2_images_unreserved(r);
            return answer_error(r, 400, "invalid_image", "input \"%s\": element %d: %s", SRV_OIP_INPUT_IMAGES, i, err);
        }
        long long p = (long long)w * hgt;
        if (p > cfg->max_pixels || w > DAE_IMAGE_MAX_SIDE || hgt > DAE_IMAGE_MAX_SIDE) {
            v2_images_unreserved(r);
            return answer_status(r, SRV_EDGE_IMAGE, DAE_ERR_TOO_LARGE,
                                 "input \"%s\": element %d is %dx%d = %lld pixels, over the limit of %lld",
                                 SRV_OIP_INPUT_IMAGES, i, w, hgt, p, cfg->max_pixels);
        }
        srv_infer_request *j = &r->v2_images[i];
        image_request_set(r, j, SRV_INFER_DENOISE, img, len, p, srv_budget_image_bytes(SRV_BUDGET_DENOISE, w, hgt, 0),
                          v2_image_done);
        pixels += p;
        need += j->mem_reserved;
    }
    const char *flag;
    long long most = budget_most(r, &flag);
    if (need > most - r->body_reserved - r->v2_reserved) {
        v2_images_unreserved(r);
        return answer_status(r, SRV_EDGE_IMAGE, DAE_ERR_TOO_LARGE,
                             "the %d images need up to %lld bytes with the request, over the whole memory budget of "
                             "%lld bytes (%s): send fewer at a time",
                             n, need + r->body_reserved + r->v2_reserved, most, flag);
    }
    if (budget_take(r, need) != 0) {
        v2_images_unreserved(r);
        return refuse_memory(r, need);
    }
    dae_status st = srv_infer_reserve(h->infer, queue_share(r), n, pixels, err, sizeof err);
    if (st != DAE_OK) { /* the reservations go back with the request (on_request_done) */
        if (st == DAE_ERR_STOPPING) return refuse_draining(r);
        return answer_status(r, SRV_EDGE_UPLOAD, st, "%s", err);
    }
    return v2_submit(r, r->v2_images, n, w, hgt); /* w x h: the last image's, the only one when n is 1 */
}

/* srv_oip_take_fn: what the parser keeps of a request comes from the
 * memory budget, and is held until the request ends. */
static int v2_take(void *ctx, long long bytes) {
    request *r = ctx;
    if (budget_take(r, bytes) != 0) {
        r->v2_refused = bytes;
        return -1;
    }
    r->v2_reserved += bytes;
    return 0;
}

/* Parses a v2 request's JSON (its parse tree's memory reserved). */
static void v2_parse(request *r) {
    r->off_status = srv_oip_parse(r->body, r->len, r->v2_json_len, &r->v2_scan, r->model->net.in_h, r->model->net.in_w,
                                  v2_take, r, &r->oip, r->off_message, sizeof r->off_message);
    budget_give(r, r->v2_scan.bytes);
    r->v2_reserved -= r->v2_scan.bytes;
}

/* A v2 request once parsed: refused, or on to the workers. */
static enum MHD_Result v2_parsed(request *r) {
    dae_status st = r->off_status;
    if (st == DAE_ERR_BUSY) return refuse_memory(r, r->v2_refused);
    if (st == DAE_ERR_NOMEM) return answer_error(r, 503, "out_of_memory", "%s", r->off_message);
    if (st != DAE_OK) return answer_error(r, 400, "invalid_inference_request", "%s", r->off_message);
    r->v2_infer = 1;
    return r->oip.kind == SRV_OIP_TENSOR ? v2_infer_tensor(r) : v2_infer_images(r);
}

/* POST /v2/models/{name}[/versions/{version}]/infer. */
static enum MHD_Result post_v2_infer(request *r) {
    srv_http *h = r->http;
    enum MHD_Result ret;
    if (v2_model_of(r, &ret) != 0) return ret;
    if (r->too_large) {
        srv_metrics_reject(h->metrics, SRV_REJECT_BODY_TOO_LARGE);
        return answer_error(r, 413, "body_too_large", "request body is over the limit of %lld bytes",
                            h->cfg->max_body_bytes);
    }
    if (r->len == 0) return answer_error(r, 400, "invalid_inference_request", "no body: send an inference request");
    char err[DAE_ERR_LEN + 256];
    size_t json_len;
    const char *header = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, SRV_OIP_HEADER_LENGTH);
    if (srv_oip_json_length(header, r->len, &json_len, err, sizeof err) != DAE_OK)
        return answer_error(r, 400, "invalid_inference_request", "%s", err);
    /* The parse tree's worst case is reserved for the parse; what the
     * parsed request keeps (a JSON tensor, decoded images) is reserved by
     * v2_take as the parser asks, until the request ends. */
    const char *flag;
    long long most = budget_most(r, &flag);
    srv_oip_scan_json(r->body, json_len, &r->v2_scan);
    long long tree = r->v2_scan.bytes;
    if (tree > most - r->body_reserved)
        return answer_error(r, 413, "body_too_large",
                            "parsing this request's JSON needs up to %lld bytes, over the whole memory budget of %lld "
                            "bytes (%s): send the tensor as binary data (%s), or fewer images at a time",
                            tree, most, flag, SRV_OIP_HEADER_LENGTH);
    if (budget_take(r, tree) != 0) return refuse_memory(r, tree);
    r->v2_json_len = json_len;
    r->v2_reserved += tree; /* so that a request stopped before its parse gives it back */
    if (json_len >= OFF_LOOP_BYTES) return off_loop(r, v2_parse, v2_parsed);
    v2_parse(r);
    return v2_parsed(r);
}

/* POST /v2/repository/index. */
static enum MHD_Result post_v2_repository_index(request *r) {
    return answer_json(r, 200, srv_registry_index_json(r->http->registry));
}

/* The answer to a v2 repository load or unload that ended with st. */
static enum MHD_Result v2_repository_changed(request *r, dae_status st, const char *err) {
    if (st == DAE_ERR_FORMAT) return answer_error(r, 400, "invalid_model", "%s", err);
    if (st != DAE_OK) return answer_status(r, SRV_EDGE_MODEL, st, "%s", err);
    static char doc[] = "{}\n";
    return answer(r, 200, "application/json", doc, sizeof doc - 1, MHD_RESPMEM_PERSISTENT);
}

/* Loads a POST /v2/repository/models/{name}/load's model from its file. */
static void v2_repository_load(request *r) {
    r->off_status = srv_registry_load(r->http->registry, r->route_arg, r->off_message, sizeof r->off_message);
}

static enum MHD_Result v2_repository_loaded(request *r) {
    return v2_repository_changed(r, r->off_status, r->off_message);
}

/* POST /v2/repository/models/{name}/load: off the event loop (reading,
 * checking and preparing the weights take 14-17 ms). */
static enum MHD_Result post_v2_repository_load(request *r) {
    return off_loop(r, v2_repository_load, v2_repository_loaded);
}

/* POST /v2/repository/models/{name}/unload. */
static enum MHD_Result post_v2_repository_unload(request *r) {
    char err[DAE_ERR_LEN];
    dae_status st = srv_registry_unload(r->http->registry, r->route_arg, err, sizeof err);
    return v2_repository_changed(r, st, err);
}

/* ------------------------------------------------------------ the handler */

/* Appends an upload chunk to the body, or counts it as discarded once
 * the body is over the limit. Returns MHD_NO to cut a connection that
 * keeps sending far past the limit or for too long. */
static enum MHD_Result take_body(request *r, const char *data, size_t n) {
    const srv_config *cfg = r->http->cfg;
    if (dae_now_s() - r->t_start > cfg->body_timeout_s) return MHD_NO; /* a slow upload may not hold on forever */
    size_t max = (size_t)body_limit_of(cfg, r->rm);
    if (r->over_budget) { /* refused for memory: read on and drop, up to the body limit and then some */
        r->discarded += n;
        return r->discarded > max + DISCARD_MAX ? MHD_NO : MHD_YES;
    }
    if (r->too_large || n > max - r->len) {
        if (!r->too_large) {
            r->too_large = 1;
            free(r->body);
            r->body = NULL;
            r->discarded = r->len;
            r->len = r->cap = 0;
            budget_give(r, r->body_reserved);
            r->body_reserved = 0;
        }
        r->discarded += n;
        return r->discarded - max > DISCARD_MAX ? MHD_NO : MHD_YES;
    }
    if (r->len + n > r->cap) {
        size_t cap = r->cap * 2 > r->len + n ? r->cap * 2 : r->len + n;
        if (cap < 4096) cap = 4096;
        if (cap > max) cap = max;
        /* Bytes beyond what the body holds of the memory budget are
         * reserved before they are allocated; when they do not fit, the
         * body is dropped and the request answered 503 at its end. */
        long long more = (long long)cap - r->body_reserved;
        if (more > 0 && budget_take(r, more) != 0) {
            r->over_budget = 1;
            r->discarded = r->len + n;
            free(r->body);
            r->body = NULL;
            r->len = r->cap = 0;
            budget_give(r, r->body_reserved);
            r->body_reserved = 0;
            return MHD_YES;
        }
        if (more > 0) r->body_reserved += more;
        uint8_t *grown = realloc(r->body, cap);
        if (grown == NULL) return MHD_NO;
        r->body = grown;
        r->cap = cap;
    }
    memcpy(r->body + r->len, data, n);
    r->len += n;
    return MHD_YES;
}

/* ------------------------------------------------------------ admin and training routes */

/* Answers a srv_train_answer (its JSON is taken over). */
static enum MHD_Result answer_train(request *r, srv_train_answer *a) {
    if (a->status >= 400) {
        free(a->json);
        return answer_error(r, a->status, a->code, "%s", a->message);
    }
    return answer_json(r, a->status, a->json);
}

/* The answer of a job's submission or cancel made off the loop. */
static enum MHD_Result train_answered(request *r) {
    enum MHD_Result ret = answer_train(r, &r->off_train);
    r->off_train.json = NULL; /* answer_train took it */
    return ret;
}

/* A POST /train's answer: 202 with the job's Location. */
static enum MHD_Result train_submitted(request *r) {
    if (r->off_train.status == 202) snprintf(r->location, sizeof r->location, "/train/%s", r->off_train.id);
    return train_answered(r);
}

/* Submits a POST /train's job: its validation reads the data set and
 * the base model, and its record is written and synced (6-11 ms here). */
static void train_submit(request *r) {
    srv_train_http_submit(r->http->train, r->body != NULL ? (const char *)r->body : "", r->len, r->request_id,
                          &r->off_train);
}

/* POST /train: submits a training job, off the event loop; 202 with its
 * Location. */
static enum MHD_Result post_train(request *r) {
    srv_http *h = r->http;
    if (r->too_large)
        return answer_error(r, 413, "body_too_large", "request body is over the limit of %lld bytes",
                            h->cfg->max_body_bytes);
    if (h->train == NULL) return answer_error(r, 503, "training_disabled", "this server runs no training jobs");
    return off_loop(r, train_submit, train_submitted);
}

/* Job texts an answer is sent from (their references), let go when it
 * has been sent, and a gzip'd answer's trailer. */
typedef struct {
    srv_job_text **texts;
    int n;
    uint8_t trailer[8]; /* the CRC-32 and the length of the answer before gzip (RFC 1952) */
} texts_held;

static void texts_release(srv_job_text **texts, int n) {
    for (int i = 0; i < n; i++) srv_job_text_release(texts[i]);
    free(texts);
}

/* libmicrohttpd is done with an answer sent from job texts. */
static void texts_sent(void *cls) {
    texts_held *held = cls;
    texts_release(held->texts, held->n);
    free(held);
}

/* A reference to text deflated joinably (deflate_joinable), made by its first
 * reader that takes gzip and kept with it (gzip'ing a 180 KB record took
 * 0.7 ms of the event loop for each request, and a job list of 152 MB
 * about a second); NULL if out of memory. */
static srv_job_text *deflated(srv_job_text *text) {
    srv_job_text *d = atomic_load(&text->deflated);
    if (d == NULL) {
        size_t len = 0;
        uint8_t *bytes = deflate_joinable(text->s, text->len, &len);
        d = bytes != NULL ? srv_job_text_new(bytes, len) : NULL;
        free(bytes);
        if (d == NULL) return NULL;
        d->crc32 = crc32(0L, (const Bytef *)text->s, (uInt)text->len);
        srv_job_text *none = NULL;
        if (!atomic_compare_exchange_strong(&text->deflated, &none, d)) { /* another thread's came first */
            srv_job_text_release(d);
            d = none;
        }
    }
    return srv_job_text_retain(d);
}

/* gzip's header (no name, no time, no OS) and a deflate stream's last,
 * empty block: a gzip'd answer is the header, its pieces deflated
 * joinably, the last block and the trailer. */
static const uint8_t GZIP_HEADER[10] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255};
static const uint8_t DEFLATE_LAST_BLOCK[2] = {3, 0};

/* Swaps held's texts for their deflated references and points iov at the
 * gzip'd answer they make: header, pieces, last block, trailer. Returns
 * the pieces of iov, or 0 if out of memory (held as it was). */
static unsigned gzip_texts(texts_held *held, size_t total, struct MHD_IoVec *iov, size_t *sent) {
    srv_job_text **d = malloc((size_t)held->n * sizeof *d);
    int made = 0;
    while (d != NULL && made < held->n && (d[made] = deflated(held->texts[made])) != NULL) made++;
    if (made < held->n) {
        texts_release(d, made);
        return 0;
    }
    unsigned n = 0;
    uLong crc = crc32(0L, Z_NULL, 0);
    iov[n++] = (struct MHD_IoVec){GZIP_HEADER, sizeof GZIP_HEADER};
    *sent = sizeof GZIP_HEADER + sizeof DEFLATE_LAST_BLOCK + sizeof held->trailer;
    for (int i = 0; i < held->n; i++) {
        iov[n++] = (struct MHD_IoVec){d[i]->s, d[i]->len};
        *sent += d[i]->len;
        crc = crc32_combine(crc, d[i]->crc32, (z_off_t)held->texts[i]->len);
    }
    iov[n++] = (struct MHD_IoVec){DEFLATE_LAST_BLOCK, sizeof DEFLATE_LAST_BLOCK};
    for (int k = 0; k < 4; k++) {
        held->trailer[k] = (uint8_t)(crc >> (8 * k));
        held->trailer[4 + k] = (uint8_t)(total >> (8 * k));
    }
    iov[n++] = (struct MHD_IoVec){held->trailer, sizeof held->trailer};
    texts_release(held->texts, held->n);
    held->texts = d;
    return n;
}

/* Answers content_type made of n job texts (the references and the
 * array taken over) after head, between seps and before tail (each may be
 * NULL). The texts are shared by every reader and valid UTF-8
 * (training.h): they are sent as they are, not copied (a copy of a 180 KB
 * record was mapped and unmapped at every request: a client asking for
 * one in a loop got 1,000 answers a second and took the event loop's
 * whole CPU); gzip'd, from the texts' own deflated copies. Held against
 * the memory budget as answer_held does: the whole size, then what is
 * sent. */
static enum MHD_Result answer_texts(request *r, const char *content_type, srv_job_text *head, srv_job_text *sep,
                                    srv_job_text *tail, srv_job_text **texts, int n) {
    texts_held *held = calloc(1, sizeof *held);
    size_t most = (size_t)n * 2 + 2; /* pieces: head, the texts with sep between them, tail */
    srv_job_text **pieces = malloc(most * sizeof *pieces);
    struct MHD_IoVec *iov = malloc((most + 3) * sizeof *iov);
    if (held == NULL || pieces == NULL || iov == NULL) {
        free(held);
        free(pieces);
        free(iov);
        texts_release(texts, n);
        return answer_error(r, 500, "internal_error", "out of memory");
    }
    size_t total = 0;
    for (int i = -1; i <= n; i++) {
        srv_job_text *piece = i < 0 ? head : i == n ? tail : texts[i];
        if (i > 0 && i < n && sep != NULL) pieces[held->n++] = srv_job_text_retain(sep);
        if (piece == NULL) continue;
        pieces[held->n++] = i < 0 || i == n ? srv_job_text_retain(piece) : piece; /* the texts' own are taken over */
    }
    free(texts);
    held->texts = pieces;
    for (int i = 0; i < held->n; i++) total += pieces[i]->len;
    if (total >= HELD_MIN_BYTES && hold_answer(r, (long long)total) != 0) {
        free(iov);
        texts_sent(held);
        return refuse_memory(r, (long long)total);
    }
    size_t sent = total;
    unsigned n_iov = answer_zips(r, content_type, total) ? gzip_texts(held, total, iov, &sent) : 0;
    const char *encoding = n_iov > 0 ? "gzip" : NULL;
    for (int i = 0; n_iov == 0 && i < held->n; i++) iov[i] = (struct MHD_IoVec){held->texts[i]->s, held->texts[i]->len};
    if (n_iov == 0) n_iov = (unsigned)held->n;
    if ((long long)sent < r->answer_reserved) hold_answer(r, (long long)sent); /* less: never refused */
    struct MHD_Response *resp = MHD_create_response_from_iovec(iov, n_iov, texts_sent, held);
    free(iov);
    if (resp == NULL) {
        texts_sent(held);
        return answer_error(r, 500, "internal_error", "out of memory");
    }
    if (encoding != NULL) MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_ENCODING, encoding);
    if (compressible(content_type)) MHD_add_response_header(resp, MHD_HTTP_HEADER_VARY, "Accept-Encoding");
    return answer_response(r, 200, content_type, resp, sent);
}

/* Answers one job text (the reference taken over; NULL: out of memory)
 * as answer_texts does. */
static enum MHD_Result answer_text(request *r, const char *content_type, srv_job_text *text) {
    srv_job_text **texts = text != NULL ? malloc(sizeof *texts) : NULL;
    if (texts == NULL) {
        srv_job_text_release(text);
        return answer_error(r, 500, "internal_error", "out of memory");
    }
    texts[0] = text;
    return answer_texts(r, content_type, NULL, NULL, NULL, texts, 1);
}

/* The job list's own pieces around the jobs' texts, made once. */
static srv_job_text *list_pieces[3];
static pthread_once_t list_pieces_once = PTHREAD_ONCE_INIT;

static void make_list_pieces(void) {
    static const char *const text[3] = {"{\"jobs\":[", ",", "]}"};
    for (int i = 0; i < 3; i++) list_pieces[i] = srv_job_text_new(text[i], strlen(text[i]));
}

/* GET /train: the training jobs. */
static enum MHD_Result get_train(request *r) {
    srv_http *h = r->http;
    if (h->train == NULL) return answer_json(r, 200, strdup("{\"jobs\":[]}"));
    srv_job_text **texts;
    int n;
    pthread_once(&list_pieces_once, make_list_pieces);
    if (list_pieces[0] == NULL || list_pieces[1] == NULL || list_pieces[2] == NULL ||
        srv_train_http_list(h->train, &texts, &n) != DAE_OK)
        return answer_error(r, 500, "internal_error", "out of memory");
    return answer_texts(r, "application/json", list_pieces[0], list_pieces[1], list_pieces[2], texts, n);
}

/* GET /train/{id}: one training job's record. */
static enum MHD_Result get_train_job(request *r) {
    srv_http *h = r->http;
    if (h->train == NULL) return answer_error(r, 404, "job_not_found", "no training job %s", r->route_arg);
    srv_job_text *text = NULL;
    if (srv_train_http_get(h->train, r->route_arg, &text) != DAE_OK)
        return answer_error(r, 404, "job_not_found", "no training job %s (GET /train lists them)", r->route_arg);
    return answer_text(r, "application/json", text);
}

/* Cancels a DELETE /train/{id}'s job (a queued one's record is written and synced). */
static void train_cancel(request *r) { srv_train_http_cancel(r->http->train, r->route_arg, &r->off_train); }

/* DELETE /train/{id}: cancels a training job, off the event loop. */
static enum MHD_Result delete_train_job(request *r) {
    srv_http *h = r->http;
    if (h->train == NULL) return answer_error(r, 404, "job_not_found", "no training job %s", r->route_arg);
    return off_loop(r, train_cancel, train_answered);
}

/* The JSON answer work off the loop made: off_json, or the error
 * off_status of work of that kind. */
static enum MHD_Result off_json_answered(request *r, srv_edge_kind kind) {
    if (r->off_status != DAE_OK) return answer_status(r, kind, r->off_status, "%s", r->off_message);
    char *json = r->off_json;
    r->off_json = NULL;
    return answer_json(r, 200, json);
}

/* {"deleted":"NAME"} for the route's name (malloc'd), or NULL. */
static char *deleted_json(const request *r) {
    char *body = NULL;
    return asprintf(&body, "{\"deleted\":\"%s\"}\n", r->route_arg) < 0 ? NULL : body;
}

/* Makes a POST /models/{name}/activate's model the default (the ACTIVE
 * file is written and synced). */
static void model_activate(request *r) {
    srv_activation done;
    r->off_status = srv_registry_activate(r->http->registry, r->route_arg, &done, r->off_message,
                                          sizeof r->off_message);
    if (r->off_status == DAE_OK &&
        asprintf(&r->off_json, "{\"active\":\"%s\",\"version\":\"%s\",\"previous\":\"%s\"}\n", r->route_arg,
                 done.version, done.previous) < 0)
        r->off_json = NULL;
}

/* Removes a DELETE /models/{name}'s model and its file. */
static void model_delete(request *r) {
    r->off_status = srv_registry_remove(r->http->registry, r->route_arg, r->off_message, sizeof r->off_message);
    if (r->off_status == DAE_OK) r->off_json = deleted_json(r);
}

static enum MHD_Result model_changed(request *r) { return off_json_answered(r, SRV_EDGE_MODEL); }

/* POST /models/{name}/activate: makes the model the default for new
 * requests; DELETE /models/{name}: removes it from the registry and the
 * models directory. Both off the event loop (they write and sync files). */
static enum MHD_Result post_activate(request *r) { return off_loop(r, model_activate, model_changed); }

static enum MHD_Result delete_model(request *r) { return off_loop(r, model_delete, model_changed); }

/* GET /models/{name}/weights: the model's weights file as it was loaded,
 * its SHA-256 as ETag; 304 when If-None-Match names it (model_http.h). */
static enum MHD_Result get_model_weights(request *r) {
    srv_model_file f;
    char err[DAE_ERR_LEN + 128];
    const char *inm = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_IF_NONE_MATCH);
    dae_status st = srv_model_file_open(r->http->registry, r->route_arg, inm, &f, err, sizeof err);
    if (st != DAE_OK) return answer_status(r, SRV_EDGE_MODEL_FILE, st, "%s", err);
    /* libmicrohttpd sends the file from its descriptor, and closes it. */
    struct MHD_Response *resp = f.not_modified ? MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT)
                                               : MHD_create_response_from_fd((uint64_t)f.len, f.fd);
    if (resp == NULL) {
        if (f.fd >= 0) close(f.fd);
        return answer_error(r, 500, "internal_error", "out of memory");
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_ETAG, f.etag);
    if (f.not_modified) return answer_response(r, 304, NULL, resp, 0);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_DISPOSITION, f.disposition);
    return answer_response(r, 200, "application/octet-stream", resp, f.len);
}

/* Reads the ?replace=true|false of a PUT, its only argument, into
 * *replace. Returns 0, or -1 having answered the 422 into *refused. */
static int replace_arg(request *r, int *replace, enum MHD_Result *refused) {
    static const char *const args[] = {"replace", NULL};
    arg_check ac = {.allowed = args, .takes = "replace"};
    if (check_args(r, &ac, refused) != 0) return -1;
    const char *value = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "replace");
    if (value != NULL && strcmp(value, "true") != 0 && strcmp(value, "false") != 0) {
        *refused = answer_error(r, 422, "invalid_parameter", "replace must be true or false, not \"%.80s\"", value);
        return -1;
    }
    *replace = value != NULL && strcmp(value, "true") == 0;
    return 0;
}

/* Installs a PUT /models/{name}'s weights file (off_replace: replace one). */
static void model_install(request *r) {
    srv_http *h = r->http;
    int replace = r->off_replace;
    r->off_status = srv_model_put(h->registry, h->cfg->models_dir, r->route_arg, r->body, r->len, replace,
                                  &r->off_replace, &r->off_json, r->off_message, sizeof r->off_message);
}

/* A PUT /models/{name} once installed (off_replace: it replaced one;
 * off_json: the model as it was installed, which another request may
 * have deleted since). */
static enum MHD_Result model_installed(request *r) {
    if (r->off_status != DAE_OK) return answer_status(r, SRV_EDGE_MODEL_PUT, r->off_status, "%s", r->off_message);
    srv_log("model %s %s from an upload of %zu bytes", r->route_arg, r->off_replace ? "replaced" : "installed", r->len);
    char *json = r->off_json;
    r->off_json = NULL;
    return answer_json(r, r->off_replace ? 200 : 201, json);
}

/* PUT /models/{name}: installs the uploaded weights file (model_http.h),
 * off the event loop (it is checked, written, synced and loaded: 30 ms);
 * 201 with the model as GET /models/{name} shows it, 200 when
 * ?replace=true replaced one. */
static enum MHD_Result put_model(request *r) {
    srv_http *h = r->http;
    int replace;
    enum MHD_Result refused;
    if (replace_arg(r, &replace, &refused) != 0) return refused;
    if (r->too_large) {
        srv_metrics_reject(h->metrics, SRV_REJECT_BODY_TOO_LARGE);
        return answer_error(r, 413, "body_too_large", "request body is over the limit of %lld bytes for a model file",
                            SRV_MODEL_MAX_BYTES);
    }
    if (r->len == 0)
        return answer_error(r, 400, "empty_body",
                            "no model: send the weights file (safetensors) as the body (--data-binary @FILE)");
    r->off_replace = replace;
    return off_loop(r, model_install, model_installed);
}

/* Describes every data set, or one, on the helper thread: a data set's
 * digest reads all of its files the first time (0.33 s for MNIST and
 * Fashion-MNIST), which on the event loop held up every client. */
static void datasets_list(request *r) {
    r->off_status = DAE_OK;
    r->off_json = srv_datasets_list_json(r->http->datasets);
}

static void dataset_one(request *r) {
    r->off_status = srv_dataset_get(r->http->datasets, r->route_arg, &r->off_json, r->off_message,
                                    sizeof r->off_message);
}

/* The answer of a data set description made off the loop. */
static enum MHD_Result datasets_described(request *r) { return off_json_answered(r, SRV_EDGE_DATASET); }

/* GET /datasets: every data set of the data directory. */
static enum MHD_Result get_datasets(request *r) { return off_loop(r, datasets_list, datasets_described); }

/* GET /datasets/{name}: one data set, with the SHA-256 of its files. */
static enum MHD_Result get_dataset(request *r) { return off_loop(r, dataset_one, datasets_described); }

/* Imports a PUT /datasets/{name}'s archive (off_replace: replace one). */
static void dataset_import(request *r) {
    int replace = r->off_replace;
    r->off_status = srv_dataset_put(r->http->datasets, r->route_arg, r->body, r->len, replace, &r->off_replace,
                                    &r->off_json, r->off_message, sizeof r->off_message);
}

/* A PUT /datasets/{name} once imported (off_replace: it replaced one). */
static enum MHD_Result dataset_imported(request *r) {
    if (r->off_status != DAE_OK) return answer_status(r, SRV_EDGE_DATASET, r->off_status, "%s", r->off_message);
    char *json = r->off_json;
    r->off_json = NULL;
    return answer_json(r, r->off_replace ? 200 : 201, json);
}

/* PUT /datasets/{name}: imports the uploaded archive as a data set
 * (dataset_http.h), off the event loop (thousands of images to decode);
 * 201 with it and the import's report, 200 when ?replace=true replaced
 * one. */
static enum MHD_Result put_dataset(request *r) {
    srv_http *h = r->http;
    int replace;
    enum MHD_Result refused;
    if (replace_arg(r, &replace, &refused) != 0) return refused;
    if (!dae_name_valid(r->route_arg))
        return answer_error(r, 422, "invalid_parameter",
                            "a data set name is 1 to %d characters of [A-Za-z0-9._-], not starting with '.'; "
                            "\"%.80s\" is not one",
                            DAE_NAME_MAX, r->route_arg);
    if (r->too_large) {
        srv_metrics_reject(h->metrics, SRV_REJECT_BODY_TOO_LARGE);
        return answer_error(r, 413, "body_too_large",
                            "request body is over the limit of %lld bytes for a data set archive (--max-dataset-bytes)",
                            h->cfg->max_dataset_bytes);
    }
    if (r->len == 0)
        return answer_error(r, 400, "empty_body",
                            "no data set: send a tar (optionally gzipped) or zip archive of images or of the four IDX "
                            "files as the body (--data-binary @FILE)");
    r->off_replace = replace;
    return off_loop(r, dataset_import, dataset_imported);
}

/* Removes a DELETE /datasets/{name}'s data set and its files. */
static void dataset_delete(request *r) {
    r->off_status = srv_dataset_delete(r->http->datasets, r->route_arg, r->off_message, sizeof r->off_message);
    if (r->off_status == DAE_OK) r->off_json = deleted_json(r);
}

static enum MHD_Result dataset_deleted(request *r) { return off_json_answered(r, SRV_EDGE_DATASET); }

/* DELETE /datasets/{name}: removes a data set no queued or running job
 * names, off the event loop. */
static enum MHD_Result delete_dataset(request *r) { return off_loop(r, dataset_delete, dataset_deleted); }

/* GET /train/{id}/loss.csv (svg 0) and /loss.svg (1): the job's loss
 * curve, in the CSV columns and the chart of `dae train`. */
static enum MHD_Result train_loss(request *r, int svg) {
    srv_http *h = r->http;
    srv_job_text *curve = NULL;
    if (h->train == NULL || srv_train_http_loss(h->train, r->route_arg, svg, &curve) != DAE_OK)
        return answer_error(r, 404, "job_not_found", "no training job %s (GET /train lists them)", r->route_arg);
    return answer_text(r, svg ? "image/svg+xml" : "text/csv; charset=utf-8", curve);
}

static enum MHD_Result get_train_loss_csv(request *r) { return train_loss(r, 0); }

static enum MHD_Result get_train_loss_svg(request *r) { return train_loss(r, 1); }

/* The event stream of GET /train/{id}/events. */
typedef struct {
    srv_train_stream *stream;
    struct MHD_Connection *conn;
    srv_gate *gate;
    unsigned long long token; /* the stream's place in --max-streams */
} sse;

static ssize_t sse_read(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    sse *e = cls;
    return srv_train_stream_read(e->stream, e->conn, buf, max);
}

/* The gate's watchdog: the stream's client left or stopped reading. */
static void sse_kick(void *cls) {
    sse *e = cls;
    srv_train_stream_kick(e->stream);
}

/* libmicrohttpd's free callback: leaves the gate's count first, so the
 * watchdog cannot kick a stream being freed. */
static void sse_free(void *cls) {
    sse *e = cls;
    srv_gate_stream_end(e->gate, e->token);
    srv_train_stream_close(e->stream);
    free(e);
}

/* GET /train/{id}/events: a Server-Sent Events stream of the job, within
 * --max-streams; the gate's watchdog ends it when its client goes away or
 * stops reading for --timeout. */
static enum MHD_Result get_events(request *r) {
    srv_http *h = r->http;
    srv_train_stream *s = h->train != NULL ? srv_train_stream_open(h->train, r->route_arg) : NULL;
    if (s == NULL) return answer_error(r, 404, "job_not_found", "no training job %s (GET /train lists them)", r->route_arg);
    sse *e = malloc(sizeof *e);
    if (e == NULL) {
        srv_train_stream_close(s);
        return answer_error(r, 500, "internal_error", "out of memory");
    }
    e->stream = s;
    e->conn = r->conn;
    e->gate = h->gate;
    e->token = srv_gate_stream_begin(h->gate, r->conn_ctx, r->client, sse_kick, e);
    if (e->token == 0) {
        srv_train_stream_close(s);
        free(e);
        srv_metrics_reject(h->metrics, SRV_REJECT_CONNECTIONS);
        return answer_error(r, 503, "too_many_streams",
                            "the server has its maximum of %d event streams open, or your client its share of them "
                            "(--client-share)",
                            h->cfg->max_streams);
    }
    struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, sse_read, e, sse_free);
    if (resp == NULL) {
        sse_free(e);
        return MHD_NO;
    }
    add_request_headers(r, resp);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    enum MHD_Result ret = MHD_queue_response(r->conn, 200, resp);
    MHD_destroy_response(resp);
    r->status = 200;
    r->phase = PHASE_ANSWERED;
    return ret;
}

/* ------------------------------------------------------------ the web page and the API description */

/* The gzip'd copies of the compiled-in files, made on first use and kept:
 * the files never change, and compressing the 120 KB API description on
 * every request would cost the event loop a millisecond each time. */
#define GZ_CACHE_MAX 16
typedef struct {
    const unsigned char *data; /* the asset's bytes: its key */
    uint8_t *gz;
    size_t len;
} gz_entry;
static struct {
    pthread_mutex_t mu;
    int n;
    gz_entry entry[GZ_CACHE_MAX];
} gz_cache = {PTHREAD_MUTEX_INITIALIZER, 0, {{0}}};

/* The gzip'd copy of asset a into *gz, *len; returns 0, or -1 when it
 * cannot be made (out of memory, cache full). */
static int asset_gzip(const srv_asset *a, const uint8_t **gz, size_t *len) {
    int rc = -1;
    pthread_mutex_lock(&gz_cache.mu);
    for (int i = 0; i < gz_cache.n && rc != 0; i++)
        if (gz_cache.entry[i].data == a->data) *gz = gz_cache.entry[i].gz, *len = gz_cache.entry[i].len, rc = 0;
    if (rc != 0 && gz_cache.n < GZ_CACHE_MAX) {
        size_t n;
        uint8_t *made = dae_gzip(a->data, a->len, &n);
        if (made != NULL) {
            gz_cache.entry[gz_cache.n++] = (gz_entry){a->data, made, n};
            *gz = made, *len = n, rc = 0;
        }
    }
    pthread_mutex_unlock(&gz_cache.mu);
    return rc;
}

/* Answers the compiled-in file name (assets.h), gzip'd from the cache when
 * the client takes it, or 404. */
static enum MHD_Result answer_asset(request *r, const char *name) {
    srv_asset a;
    if (srv_asset_find(name, &a) != 0) return answer_error(r, 404, "not_found", "no file %s (the page is at /)", r->path);
    r->page = 1;
    const uint8_t *gz;
    size_t gz_len;
    if (r->gzip && compressible(a.content_type) && asset_gzip(&a, &gz, &gz_len) == 0) {
        struct MHD_Response *resp = MHD_create_response_from_buffer(gz_len, (void *)(uintptr_t)gz, MHD_RESPMEM_PERSISTENT);
        if (resp == NULL) return MHD_NO;
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_ENCODING, "gzip");
        MHD_add_response_header(resp, MHD_HTTP_HEADER_VARY, "Accept-Encoding");
        return answer_response(r, 200, a.content_type, resp, gz_len);
    }
    r->gzip = 0; /* no copy to be had: the file as it is */
    return answer(r, 200, a.content_type, (void *)(uintptr_t)a.data, a.len, MHD_RESPMEM_PERSISTENT);
}

static enum MHD_Result get_page(request *r) { return answer_asset(r, "index.html"); }

static enum MHD_Result get_page_file(request *r) { return answer_asset(r, r->route_arg); }

static enum MHD_Result get_openapi(request *r) { return answer_asset(r, "openapi.json"); }

/* ------------------------------------------------------------ the route table */

/* Every route, in the order of the metrics' route labels. A request takes
 * the first row whose path matches; within it, the first entry naming
 * its method. Adding a route: a row here and its handler above. */
static const route ROUTES[] = {
    {"denoise", "/denoise", {{M_POST, ROUTE_UPLOAD | ROUTE_DRAIN_REFUSES, post_denoise}}},
    {"noise", "/noise", {{M_POST, ROUTE_UPLOAD | ROUTE_DRAIN_REFUSES, post_noise}}},
    {"healthz", "/healthz", {{M_GET | M_HEAD, 0, get_healthz}}},
    {"readyz", "/readyz", {{M_GET | M_HEAD, ROUTE_DRAIN_REFUSES, get_readyz}}},
    {"metrics", "/metrics", {{M_GET | M_HEAD, 0, get_metrics}}},
    {"models", "/models", {{M_GET | M_HEAD, 0, get_models}}},
    {"model", "/models/{name}",
     {{M_GET | M_HEAD, 0, get_model},
      {M_PUT, ROUTE_ADMIN | ROUTE_UPLOAD | ROUTE_MODEL_FILE | ROUTE_DRAIN_REFUSES, put_model},
      {M_DELETE, ROUTE_ADMIN, delete_model}}},
    {"model_activate", "/models/{name}/activate", {{M_POST, ROUTE_ADMIN, post_activate}}},
    {"model_weights", "/models/{name}/weights", {{M_GET | M_HEAD, 0, get_model_weights}}},
    {"datasets", "/datasets", {{M_GET | M_HEAD, 0, get_datasets}}},
    {"dataset", "/datasets/{name}",
     {{M_GET | M_HEAD, 0, get_dataset},
      {M_PUT, ROUTE_ADMIN | ROUTE_UPLOAD | ROUTE_DATASET | ROUTE_DRAIN_REFUSES, put_dataset},
      {M_DELETE, ROUTE_ADMIN, delete_dataset}}},
    {"train", "/train", {{M_GET | M_HEAD, 0, get_train}, {M_POST, ROUTE_ADMIN | ROUTE_DRAIN_REFUSES, post_train}}},
    {"train_job", "/train/{id}", {{M_GET | M_HEAD, 0, get_train_job}, {M_DELETE, ROUTE_ADMIN, delete_train_job}}},
    {"train_events", "/train/{id}/events", {{M_GET, 0, get_events}}},
    {"train_loss_csv", "/train/{id}/loss.csv", {{M_GET | M_HEAD, 0, get_train_loss_csv}}},
    {"train_loss_svg", "/train/{id}/loss.svg", {{M_GET | M_HEAD, 0, get_train_loss_svg}}},
    {"page", "/", {{M_GET | M_HEAD, 0, get_page}}},
    {"page_file", "/ui/{name}", {{M_GET | M_HEAD, 0, get_page_file}}},
    {"openapi", "/openapi.json", {{M_GET | M_HEAD, 0, get_openapi}}},
    /* The Open Inference Protocol (oip.h). */
    {"v2", "/v2", {{M_GET | M_HEAD, 0, get_v2}}},
    {"v2_live", "/v2/health/live", {{M_GET | M_HEAD, 0, get_v2_live}}},
    {"v2_ready", "/v2/health/ready", {{M_GET | M_HEAD, ROUTE_DRAIN_REFUSES, get_v2_ready}}},
    {"v2_model", "/v2/models/{name}", {{M_GET | M_HEAD, 0, get_v2_model}}},
    {"v2_model_version", "/v2/models/{name}/versions/{version}", {{M_GET | M_HEAD, 0, get_v2_model}}},
    {"v2_model_ready", "/v2/models/{name}/ready", {{M_GET | M_HEAD, 0, get_v2_model_ready}}},
    {"v2_model_version_ready", "/v2/models/{name}/versions/{version}/ready", {{M_GET | M_HEAD, 0, get_v2_model_ready}}},
    {"v2_infer", "/v2/models/{name}/infer", {{M_POST, ROUTE_UPLOAD | ROUTE_DRAIN_REFUSES, post_v2_infer}}},
    {"v2_model_version_infer", "/v2/models/{name}/versions/{version}/infer",
     {{M_POST, ROUTE_UPLOAD | ROUTE_DRAIN_REFUSES, post_v2_infer}}},
    {"v2_repository_index", "/v2/repository/index", {{M_POST, ROUTE_ADMIN, post_v2_repository_index}}},
    {"v2_repository_load", "/v2/repository/models/{name}/load",
     {{M_POST, ROUTE_ADMIN | ROUTE_DRAIN_REFUSES, post_v2_repository_load}}},
    {"v2_repository_unload", "/v2/repository/models/{name}/unload", {{M_POST, ROUTE_ADMIN, post_v2_repository_unload}}},
};
enum { N_ROUTES = sizeof ROUTES / sizeof ROUTES[0] };
_Static_assert(N_ROUTES <= SRV_MAX_ROUTES, "the metrics count at most SRV_MAX_ROUTES routes");

/* A request's room for the arguments of a route ("{...}" segments). */
typedef struct {
    char *arg[2];
    size_t len[2];
} route_args;

/* Whether url matches the pattern path segment by segment: literal
 * segments exactly, a "{...}" segment any non-empty one, which is copied
 * into the next of args (cut to its length - 1 bytes). */
static int path_match(const char *path, const char *url, const route_args *args) {
    int k = 0;
    while (*path != '\0') {
        if (*path++ != '/' || *url++ != '/') return 0;
        size_t plen = strcspn(path, "/"), ulen = strcspn(url, "/");
        if (path[0] == '{') {
            if (ulen == 0 || k == 2) return 0;
            size_t n = ulen < args->len[k] ? ulen : args->len[k] - 1;
            memcpy(args->arg[k], url, n);
            args->arg[k++][n] = '\0';
        } else if (plen != ulen || strncmp(path, url, plen) != 0) {
            return 0;
        }
        path += plen;
        url += ulen;
    }
    return *url == '\0';
}

/* The row of url in ROUTES, or -1; the arguments go into args. */
static int route_match(const char *url, const route_args *args) {
    for (int i = 0; i < N_ROUTES; i++) {
        args->arg[0][0] = args->arg[1][0] = '\0';
        if (path_match(ROUTES[i].path, url, args)) return i;
    }
    args->arg[0][0] = args->arg[1][0] = '\0';
    return -1;
}

/* The entry of row for the method bit mbit, or NULL (a 405). */
static const route_method *route_method_of(const route *row, unsigned mbit) {
    for (int i = 0; i < N_METHODS; i++)
        if (row->by[i].methods & mbit) return &row->by[i];
    return NULL;
}

/* Writes the names of the method bits in methods into out (cap bytes),
 * in METHOD_NAMES' order, separated by sep; HEAD left out unless
 * with_head. */
static void method_names(unsigned methods, int with_head, const char *sep, char *out, size_t cap) {
    size_t n = 0;
    out[0] = '\0';
    for (int i = 0; i < N_METHODS && n < cap; i++) {
        if (!(methods & (1u << i)) || (!with_head && (1u << i) == M_HEAD)) continue;
        n += (size_t)snprintf(out + n, cap - n, "%s%s", n > 0 ? sep : "", METHOD_NAMES[i]);
    }
}

/* Every method bit of row. */
static unsigned route_methods(const route *row) {
    unsigned all = 0;
    for (int i = 0; i < N_METHODS; i++) all |= row->by[i].methods;
    return all;
}

void srv_http_route_list(char *out, size_t cap) {
    size_t n = 0;
    out[0] = '\0';
    for (int i = 0; i < N_ROUTES && n < cap; i++) {
        char methods[32];
        method_names(route_methods(&ROUTES[i]), 0, "|", methods, sizeof methods);
        n += (size_t)snprintf(out + n, cap - n, "%s%s %s", i > 0 ? ", " : "", methods, ROUTES[i].path);
    }
}

int srv_http_route_count(void) { return N_ROUTES; }

/* The method bits of row that need admin rights. */
static unsigned admin_methods_of(const route *row) {
    unsigned m = 0;
    for (int k = 0; k < N_METHODS; k++)
        if (row->by[k].flags & ROUTE_ADMIN) m |= row->by[k].methods;
    return m;
}

void srv_http_route_get(int i, const char **name, const char **path, unsigned *methods, unsigned *admin_methods) {
    const route *row = &ROUTES[i];
    *name = row->name;
    *path = row->path;
    *methods = route_methods(row);
    *admin_methods = admin_methods_of(row);
}

/* ------------------------------------------------------------ request ids and CORS */

/* Random bytes for made-up request ids, fetched 256 ids at a time per
 * event-loop thread: a getrandom(2) per request was one in six of the
 * server's system calls per small request under load. */
#define REQUEST_ID_POOL 4096

/* Fills raw (16 bytes) from this thread's pool, refilling it when used
 * up. Returns 0, or -1 when the kernel has no entropy yet. */
static int request_id_random(unsigned char raw[16]) {
    static _Thread_local unsigned char pool[REQUEST_ID_POOL];
    static _Thread_local size_t used = REQUEST_ID_POOL;
    if (used == REQUEST_ID_POOL) {
        if (getrandom(pool, sizeof pool, GRND_NONBLOCK) != (ssize_t)sizeof pool) return -1;
        used = 0;
    }
    memcpy(raw, pool + used, 16);
    used += 16;
    return 0;
}

/* Takes the client's X-Request-Id when it is 1 to SRV_REQUEST_ID_MAX
 * characters of [A-Za-z0-9._:-] (safe in a header, a log line and JSON
 * as it is); otherwise makes one up: 32 random hex digits. */
static void request_id_take(request *r) {
    const char *given = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "X-Request-Id");
    size_t n = given != NULL ? strlen(given) : 0;
    if (n >= 1 && n <= SRV_REQUEST_ID_MAX &&
        strspn(given, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-") == n) {
        memcpy(r->request_id, given, n + 1);
        return;
    }
    static atomic_ullong counter;
    unsigned char raw[16];
    if (request_id_random(raw) != 0) {
        /* No entropy yet (early boot): the time and a counter, unique enough for a log. */
        unsigned long long t = (unsigned long long)(dae_now_s() * 1e9), c = atomic_fetch_add(&counter, 1);
        memcpy(raw, &t, 8);
        memcpy(raw + 8, &c, 8);
    }
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < sizeof raw; i++) {
        r->request_id[2 * i] = hex[raw[i] >> 4];
        r->request_id[2 * i + 1] = hex[raw[i] & 15];
    }
    r->request_id[2 * sizeof raw] = '\0';
}

/* Answers the CORS preflight OPTIONS on row: 204 naming the methods a
 * page of another origin may use (never the admin ones), or 405 when CORS
 * is off or none are open. */
static enum MHD_Result answer_preflight(request *r) {
    /* The methods that need no admin rights: the ones CORS may open. */
    unsigned open = r->http->cfg->cors_origin != NULL ? route_methods(r->route) & ~admin_methods_of(r->route) : 0;
    if (open == 0) {
        method_names(route_methods(r->route), 1, ", ", r->allow, sizeof r->allow);
        return answer_error(r, 405, "method_not_allowed", "%s takes %s, not OPTIONS%s", r->route->path, r->allow,
                            r->http->cfg->cors_origin == NULL ? " (CORS is off: --cors-origin)" : "");
    }
    char methods[64];
    method_names(open, 1, ", ", methods, sizeof methods);
    struct MHD_Response *resp = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
    if (resp == NULL) return MHD_NO;
    r->cors = 1;
    MHD_add_response_header(resp, "Access-Control-Allow-Methods", methods);
    MHD_add_response_header(resp, "Access-Control-Allow-Headers", "Content-Type, X-Request-Id, " SRV_OIP_HEADER_LENGTH);
    MHD_add_response_header(resp, "Access-Control-Max-Age", "600");
    return answer_response(r, 204, NULL, resp, 0);
}

/* Whether the row's flags turn r away now: the server is draining. */
static int drain_refuses(const request *r) {
    return (r->rm->flags & ROUTE_DRAIN_REFUSES) && atomic_load(&r->http->draining);
}

/* The final call of a request: its handler, or the draining refusal. */
static enum MHD_Result dispatch(request *r) {
    if (drain_refuses(r)) return refuse_draining(r);
    return r->rm->handler(r);
}

/* MHD_KeyValueIterator: counts a header in the srv_head_framing at cls. */
static enum MHD_Result count_framing(void *cls, enum MHD_ValueKind kind, const char *key, const char *value) {
    (void)kind;
    srv_head_count_field(cls, key, strlen(key), value, value != NULL ? strlen(value) : 0);
    return MHD_YES;
}

/* The gate's checks of a request head (httphead.h) on a later head of a
 * kept-alive connection, which libmicrohttpd parsed: its size, its path,
 * and where the request ends and whom it is for. 0, or -1 with the error
 * in *hi. */
static int later_head_refused(request *r, const char *version, srv_head *hi) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_REQUEST_HEADER_SIZE);
    if (ci != NULL && ci->header_size > SRV_HEAD_MAX) {
        srv_head_too_large(hi);
        return -1;
    }
    if (r->path_nul) {
        srv_head_path_nul_error(hi);
        return -1;
    }
    srv_head_framing f = {.http10 = strcmp(version, MHD_HTTP_VERSION_1_0) == 0};
    MHD_get_connection_values(r->conn, MHD_HEADER_KIND, count_framing, &f);
    return srv_head_check_framing(&f, hi) == SRV_HEAD_OK ? 0 : -1;
}

/* The first call of a request: route, method and, for uploads, the
 * announced length. Errors are answered at once (the connection then
 * closes, and a body is never read: the gate drops what the client still
 * sends, answer_response). */
static enum MHD_Result first_call(request *r, const char *url, const char *method, const char *version) {
    srv_http *h = r->http;
    srv_copy_str(r->method, sizeof r->method, method);
    request_id_take(r);
    r->gzip = accepts_gzip(MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_ACCEPT_ENCODING));
    route_args args = {{r->arg, r->version_arg}, {sizeof r->arg, sizeof r->version_arg}};
    url += srv_head_authority_len(url, strlen(url)); /* the absolute form: http://host/path */
    if (*url == '\0') url = "/";
    int row = route_match(url, &args);
    if (row >= 0) r->route = &ROUTES[row], r->route_index = row;
    r->route_arg = r->arg;
    r->mbit = method_bit(method);
    /* The gate checked the first head of the connection; later ones on a
     * kept-alive connection come here straight from libmicrohttpd. */
    srv_head refused;
    if (later_head_refused(r, version, &refused) != 0) {
        r->close = 1; /* where this request ends may be ambiguous: so is the next one */
        return answer_error(r, refused.status, refused.code, "%s", refused.message);
    }
    if (r->route == NULL) {
        char routes[2048];
        srv_http_route_list(routes, sizeof routes);
        return answer_error(r, 404, "not_found", "no route %s %s; routes: %s", method, url, routes);
    }
    if (strcmp(method, MHD_HTTP_METHOD_OPTIONS) == 0) return answer_preflight(r);
    r->rm = route_method_of(r->route, r->mbit);
    r->cors = r->rm != NULL && h->cfg->cors_origin != NULL && !(r->rm->flags & ROUTE_ADMIN);
    if (r->rm == NULL) {
        method_names(route_methods(r->route), 1, ", ", r->allow, sizeof r->allow);
        return answer_error(r, 405, "method_not_allowed", "%s takes %s, not %s", r->route->path, r->allow, method);
    }
    /* Admin routes: a bearer token, or a loopback client when none is set. */
    if (r->rm->flags & ROUTE_ADMIN) {
        const char *auth = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
        const union MHD_ConnectionInfo *ai = MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        static const char *const proxy_headers[] = SRV_AUTH_PROXY_HEADERS;
        const char *proxy = NULL;
        for (size_t i = 0; i < sizeof proxy_headers / sizeof *proxy_headers && proxy == NULL; i++)
            if (MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, proxy_headers[i]) != NULL)
                proxy = proxy_headers[i];
        switch (srv_auth_check(h->cfg->admin_token, auth, ai != NULL ? ai->client_addr : NULL, proxy != NULL)) {
        case SRV_AUTH_OK: break;
        case SRV_AUTH_UNAUTHORIZED:
            return answer_error(r, 401, "unauthorized",
                                "%s %s is an admin route: send Authorization: Bearer <the admin token>", method, url);
        case SRV_AUTH_FORBIDDEN:
            return answer_error(r, 403, "forbidden",
                                "%s %s is an admin route, and with no admin token set it accepts loopback clients "
                                "only%s%s%s; start dae-server with --admin-token TOKEN (or DAE_ADMIN_TOKEN) and send "
                                "Authorization: Bearer TOKEN",
                                method, url, proxy != NULL ? ", not a proxy's (this request carries " : "",
                                proxy != NULL ? proxy : "", proxy != NULL ? ")" : "");
        }
    }
    /* Other routes answer in the final call: an answer queued now, before
     * the request is complete, would make libmicrohttpd close the
     * connection afterwards. */
    if (!(r->rm->flags & ROUTE_UPLOAD)) {
        r->phase = PHASE_BODY;
        return MHD_YES;
    }
    /* An upload: refuse an announced body over the limit without reading it. */
    const char *cl = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl != NULL) {
        char *end;
        errno = 0;
        unsigned long long n = strtoull(cl, &end, 10);
        long long limit = body_limit_of(h->cfg, r->rm);
        if (errno == ERANGE || n > (unsigned long long)limit) {
            srv_metrics_reject(h->metrics, SRV_REJECT_BODY_TOO_LARGE);
            return answer_error(r, 413, "body_too_large", "request body of %s bytes is over the limit of %lld bytes",
                                cl, limit);
        }
        if (n > 0) {
            /* The memory budget first: a body that does not fit is
             * refused before a byte of it is allocated or read. */
            if (budget_take(r, (long long)n) != 0) return refuse_memory(r, (long long)n);
            r->body_reserved = (long long)n;
            r->body = malloc((size_t)n);
            if (r->body == NULL) return answer_error(r, 503, "out_of_memory", "out of memory for the request body");
            r->cap = (size_t)n;
        }
    }
    /* Refused now, its body is never read; the final call looks again, as
     * shutdown may begin while the body comes in. */
    if (drain_refuses(r)) return refuse_draining(r);
    r->phase = PHASE_BODY;
    return MHD_YES;
}

/* The MHD access handler: the request state machine. */
static enum MHD_Result handle(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                              const char *version, const char *upload_data, size_t *upload_data_size,
                              void **con_cls) {
    (void)cls;
    (void)conn;
    request *r = *con_cls;
    if (r == NULL) return MHD_NO; /* out of memory at the request's start */
    enum MHD_Result ret;
    switch (r->phase) {
    case PHASE_NEW:
        /* The head is complete: from here the body's time counts. */
        srv_gate_phase(r->http->gate, r->conn_ctx, SRV_CONN_BODY);
        take_forwarded_client(r);
        ret = first_call(r, url, method, version);
        if (r->phase == PHASE_ANSWERED) srv_gate_phase(r->http->gate, r->conn_ctx, SRV_CONN_ANSWER);
        return ret;
    case PHASE_BODY:
        if (*upload_data_size > 0) {
            ret = take_body(r, upload_data, *upload_data_size);
            *upload_data_size = 0;
            return ret;
        }
        srv_gate_phase(r->http->gate, r->conn_ctx, SRV_CONN_ANSWER); /* the request is complete */
        if (r->over_budget) return refuse_memory(r, (long long)r->discarded);
        return dispatch(r);
    case PHASE_QUEUED:
        return r->v2_infer ? answer_v2_infer(r) : answer_image(r);
    case PHASE_OFF_LOOP:
        return off_loop_done(r);
    default:
        return MHD_NO;
    }
}

/* ------------------------------------------------------------ the daemon */

/* MHD_OPTION_EXTERNAL_LOGGER: libmicrohttpd's own messages. */
static void mhd_log(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) msg[--n] = '\0';
    srv_log("libmicrohttpd: %s", msg);
}

/* Stops the helper thread after the work it is doing; requests still
 * queued are resumed without theirs (off_loop_done answers them 503). */
static void helper_stop(srv_http *h) {
    if (!h->helper_running) return;
    pthread_mutex_lock(&h->helper_mu);
    h->helper_stopping = 1;
    pthread_cond_signal(&h->helper_wake);
    pthread_mutex_unlock(&h->helper_mu);
    pthread_join(h->helper, NULL);
    h->helper_running = 0;
}

/* Frees h, its daemon and gate gone or never made. */
static void http_free(srv_http *h) {
    helper_stop(h);
    pthread_cond_destroy(&h->helper_wake);
    pthread_mutex_destroy(&h->helper_mu);
    srv_datasets_free(h->datasets);
    free(h);
}

srv_http *srv_http_start(const srv_config *cfg, srv_registry *registry, srv_infer *infer, srv_metrics *metrics,
                         srv_train_http *train, char *err, size_t errlen) {
    srv_http *h = calloc(1, sizeof *h);
    if (h == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    h->cfg = cfg, h->registry = registry, h->infer = infer, h->metrics = metrics, h->train = train;
    h->datasets = srv_datasets_new(cfg, registry, train != NULL ? srv_train_http_training(train) : NULL);
    if (h->datasets == NULL) {
        snprintf(err, errlen, "out of memory");
        free(h);
        return NULL;
    }
    pthread_mutex_init(&h->helper_mu, NULL);
    pthread_cond_init(&h->helper_wake, NULL);
    h->helper_running = pthread_create(&h->helper, NULL, helper_main, h) == 0;
    if (!h->helper_running) {
        snprintf(err, errlen, "cannot start the HTTP helper thread");
        http_free(h);
        return NULL;
    }
    pthread_setname_np(h->helper, "dae-http-helper");
    for (int i = 0; i < N_ROUTES; i++) srv_metrics_name_route(metrics, i, ROUTES[i].name);
    /* The gate owns the listening socket and hands libmicrohttpd only
     * connections whose request head is complete and sane (gate.h).
     * libmicrohttpd polls level-triggered: with MHD_USE_EPOLL (edge-
     * triggered) a read shorter than its buffer counts as "drained", so a
     * FIN that arrived with the last bytes of an aborted upload raised no
     * further event and the connection sat in CLOSE-WAIT until the idle
     * timeout. */
    h->gate = srv_gate_open(cfg, metrics, err, errlen);
    if (h->gate == NULL) {
        http_free(h);
        return NULL;
    }
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_USE_NO_LISTEN_SOCKET | MHD_USE_ITC |
                     MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    struct MHD_OptionItem opts[16];
    int n = 0;
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)mhd_log, NULL};
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_LIMIT, srv_gate_engine_limit(cfg), NULL};
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_TIMEOUT, cfg->timeout_s, NULL};
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_URI_LOG_CALLBACK, (intptr_t)on_request_start, h};
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)on_request_done, h};
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_NOTIFY_CONNECTION, (intptr_t)on_connection, h};
    /* libmicrohttpd zeroes a connection's whole memory pool (32 KiB by
     * default) before each request; 16 KiB still holds any head the gate
     * lets through (SRV_HEAD_MAX, httphead.h) and saves that time on every
     * request. */
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_MEMORY_LIMIT, 16 * 1024, NULL};
    if (cfg->http_threads > 1)
        opts[n++] = (struct MHD_OptionItem){MHD_OPTION_THREAD_POOL_SIZE, cfg->http_threads, NULL};
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
    h->daemon = MHD_start_daemon(flags, 0, NULL, NULL, handle, h, MHD_OPTION_ARRAY, opts, MHD_OPTION_END);
    if (h->daemon == NULL) {
        snprintf(err, errlen, "cannot start libmicrohttpd");
        srv_gate_free(h->gate);
        http_free(h);
        return NULL;
    }
    h->port = srv_gate_port(h->gate);
    if (srv_gate_start(h->gate, h->daemon, err, errlen) != 0) {
        srv_gate_stop(h->gate);
        helper_stop(h);
        MHD_stop_daemon(h->daemon);
        srv_gate_free(h->gate);
        http_free(h);
        return NULL;
    }
    return h;
}

int srv_http_port(const srv_http *h) { return h->port; }

void srv_http_drain(srv_http *h) {
    if (atomic_exchange(&h->draining, 1)) return;
    srv_infer_close(h->infer);
    srv_train_http_end_streams(h->train);
    srv_gate_quiesce(h->gate);
}

long srv_http_in_flight(srv_http *h) { return atomic_load(&h->in_flight); }

void srv_http_stop(srv_http *h) {
    if (h == NULL) return;
    srv_gate_stop(h->gate); /* no new connections, no watchdog */
    helper_stop(h);         /* before the daemon: it resumes the connections it holds */
    if (h->daemon != NULL) MHD_stop_daemon(h->daemon);
    srv_gate_free(h->gate); /* after libmicrohttpd's last close notice */
    http_free(h);
}
