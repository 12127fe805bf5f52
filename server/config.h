/* config.h - the settings of dae-server: every one a command-line flag
 * with an environment twin (--port / DAE_PORT, ...) and a default, read
 * in that order of precedence: flag, then environment, then default.
 * `dae-server --help` prints the table with the defaults. */
#ifndef SRV_CONFIG_H
#define SRV_CONFIG_H

#include <stddef.h>
#include <stdio.h>

#include "proxies.h"

#define DAE_SERVER_VERSION "0.1.0"

/* Most inference workers (threads) the server runs. */
#define SRV_MAX_WORKERS 64

typedef enum {
    SRV_LOG_TEXT,
    SRV_LOG_JSON,
    SRV_LOG_OFF,
} srv_log_format;

typedef struct {
    const char *bind;          /* listening address (IPv4 or IPv6 literal) */
    int port;                  /* listening port; 0 picks a free one */
    const char *model;         /* default model: a path, or a name in models_dir */
    int model_given;           /* --model or DAE_MODEL was set: it wins over models_dir's ACTIVE file */
    const char *models_dir;    /* NAME.safetensors files served by name */
    int workers;               /* inference threads */
    int small_workers;         /* most workers running small requests' batches at once (srv_config_parse
                                  resolves 0: workers, at most online CPUs, less http_threads, at least 1;
                                  and at most workers) */
    int http_threads;          /* libmicrohttpd event-loop threads */
    int max_batch;             /* most tiles in one forward pass */
    int max_queue_delay_us;    /* longest a batch waits for more tiles */
    int queue_size;            /* most admitted requests not yet answered */
    long long queue_pixels;    /* most pixels of admitted requests (memory bound) */
    long long max_body_bytes;  /* largest request body */
    long long max_dataset_bytes; /* largest archive PUT /datasets/{name} takes */
    long long max_pixels;      /* largest image (width * height) */
    long long memory_budget;   /* bytes of bodies and image jobs in flight */
    int client_share;          /* percent of the memory budget, the queue and the streams one client may hold */
    const char *trusted_proxies; /* --trusted-proxies as given; NULL: none */
    srv_proxies proxies;       /* and as parsed by srv_config_parse */
    long long train_memory_budget; /* bytes one training job may need */
    int max_connections;       /* concurrent connections */
    int timeout_s;             /* idle limit of a connection; write limit of an event stream */
    int header_timeout_s;      /* total time a request head may take */
    int body_timeout_s;        /* total time a request body may take */
    int max_streams;           /* open event streams */
    int drain_s;               /* shutdown: longest wait for in-flight requests */
    int png_level;             /* zlib level of PNG responses (0 to 9) */
    int retry_after_s;         /* Retry-After of 503 answers */
    srv_log_format log_format; /* access log on stdout */
    srv_log_format message_format; /* the server's own messages on stderr: text or json */
    const char *cors_origin;   /* Access-Control-Allow-Origin of the non-admin routes; NULL: no CORS */
    const char *admin_token;   /* bearer token of the admin routes; NULL: loopback clients only */
    const char *state_dir;     /* training-job records (JSON) */
    const char *data_dir;      /* IDX data sets that POST /train reads */
    int train_threads;         /* threads of the running training job */
    int train_queue;           /* most training jobs waiting to run */
    int train_keep;            /* ended jobs kept (records and listing); the oldest past it are removed; 0: all */
    int reload_interval_s;     /* re-read ACTIVE and rescan models_dir this often (0: only on SIGHUP) */
} srv_config;

/* What srv_config_parse returns besides 0 (run). */
#define SRV_CONFIG_HELP 1    /* --help or --version printed: exit 0 */
#define SRV_CONFIG_USAGE 2   /* a mistake printed on stderr: exit 2 */

/* The part of whole (a limit all clients share: --memory-budget,
 * --queue-size, --queue-pixels, --max-streams) one client may hold:
 * --client-share percent of it, and at least 1 of a limit of 1 or more. */
long long srv_config_client_part(const srv_config *cfg, long long whole);

/* Copies msg into out (cap bytes) with the server's directories written
 * as their flags name them: MODELS_DIR, DATA_DIR and STATE_DIR, for a
 * path inside one ("/srv/dae/models/x.safetensors" reads
 * "MODELS_DIR/x.safetensors"), or an absolute one itself. An error a
 * client reads then names no path of the server, and still says which
 * file. Returns 1 when it replaced something, else 0 (out is msg). */
int srv_config_hide_dirs(const srv_config *cfg, const char *msg, char *out, size_t cap);

/* Fills *cfg from the defaults, then the DAE_* environment variables, then
 * argv (argv[0] is the program). Strings point into argv, the environment
 * or static storage. Prints --help / --version on stdout, and any mistake
 * (unknown flag, bad value, value out of range, naming the flag or the
 * variable) as one line on stderr. Returns 0, SRV_CONFIG_HELP or
 * SRV_CONFIG_USAGE. */
int srv_config_parse(srv_config *cfg, int argc, char **argv);

/* Prints the usage with every flag, its variable and its default. */
void srv_config_usage(FILE *out);

/* Parses a size such as "10485760", "10MiB", "10M", "512k" or "16Mi"
 * (binary multiples; no suffix means units). Returns 0 and sets *out, or
 * -1 for a malformed or negative value. Also used for pixel counts. */
int srv_parse_size(const char *text, long long *out);

#endif
