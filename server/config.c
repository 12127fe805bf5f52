/* config.c - the flag/environment table of dae-server, its parser and the
 * generated --help. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gemm.h" /* the instruction set in use, for the small workers */
#include "http.h" /* the route list of the usage text */
#include "log.h"

typedef enum { OPT_STRING, OPT_INT, OPT_SIZE, OPT_LOG } opt_kind;

typedef struct {
    const char *flag;  /* without "--" */
    const char *env;
    opt_kind kind;
    size_t offset;     /* into srv_config */
    long long min, max;
    const char *meta;
    const char *help;  /* one line; the default is printed after it */
} opt;

#define OFF(field) offsetof(srv_config, field)

static const opt OPTS[] = {
    {"bind", "DAE_BIND", OPT_STRING, OFF(bind), 0, 0, "ADDR", "listening address, IPv4 or IPv6"},
    {"port", "DAE_PORT", OPT_INT, OFF(port), 0, 65535, "N", "listening port (0: any free port, printed at start)"},
    {"model", "DAE_MODEL", OPT_STRING, OFF(model), 0, 0, "FILE|NAME",
     "default model: a weights file, or the name of one in --models-dir"},
    {"models-dir", "DAE_MODELS_DIR", OPT_STRING, OFF(models_dir), 0, 0, "DIR",
     "models served by name: DIR/NAME.safetensors (missing dir: none)"},
    {"workers", "DAE_WORKERS", OPT_INT, OFF(workers), 1, SRV_MAX_WORKERS, "N", "inference threads"},
    {"small-workers", "DAE_SMALL_WORKERS", OPT_INT, OFF(small_workers), 1, SRV_MAX_WORKERS, "N",
     "most workers running small requests' batches at once; the others wait for big images"},
    {"http-threads", "DAE_HTTP_THREADS", OPT_INT, OFF(http_threads), 1, 64, "N", "HTTP event-loop threads"},
    {"max-batch", "DAE_MAX_BATCH", OPT_INT, OFF(max_batch), 1, 4096, "N", "most 28x28 tiles in one forward pass"},
    {"max-queue-delay-us", "DAE_MAX_QUEUE_DELAY_US", OPT_INT, OFF(max_queue_delay_us), 0, 10000000, "US",
     "longest a partial batch waits for more requests"},
    {"queue-size", "DAE_QUEUE_SIZE", OPT_INT, OFF(queue_size), 1, 1000000, "N",
     "most requests admitted and not yet answered; more get 503"},
    {"queue-pixels", "DAE_QUEUE_PIXELS", OPT_SIZE, OFF(queue_pixels), 1, (long long)1 << 40, "N",
     "most pixels of admitted requests (bounds memory; one request always fits)"},
    {"max-body", "DAE_MAX_BODY", OPT_SIZE, OFF(max_body_bytes), 1, (long long)1 << 32, "BYTES",
     "largest request body (suffixes k, M, G: binary)"},
    {"max-dataset-bytes", "DAE_MAX_DATASET_BYTES", OPT_SIZE, OFF(max_dataset_bytes), 1, (long long)1 << 32, "BYTES",
     "largest data set archive PUT /datasets/{name} takes (its body)"},
    {"max-pixels", "DAE_MAX_PIXELS", OPT_SIZE, OFF(max_pixels), 1, (long long)1 << 40, "N",
     "largest image, width x height, checked from its header"},
    {"memory-budget", "DAE_MEMORY_BUDGET", OPT_SIZE, OFF(memory_budget), 1 << 20, (long long)1 << 40, "BYTES",
     "bytes of request bodies and image work in flight; more get 503 before allocating"},
    {"client-share", "DAE_CLIENT_SHARE", OPT_INT, OFF(client_share), 1, 100, "PERCENT",
     "most of --memory-budget, --queue-size, --queue-pixels, --max-streams one client (IPv4, IPv6 /64) may hold"},
    {"trusted-proxies", "DAE_TRUSTED_PROXIES", OPT_STRING, OFF(trusted_proxies), 0, 0, "LIST",
     "proxies (ADDR[/BITS],...) whose X-Forwarded-For names the client the shares count and the log gives"},
    {"train-memory-budget", "DAE_TRAIN_MEMORY_BUDGET", OPT_SIZE, OFF(train_memory_budget), 1 << 20,
     (long long)1 << 40, "BYTES", "estimated bytes a training job may need (data set + batch); more get 422"},
    {"max-connections", "DAE_MAX_CONNECTIONS", OPT_INT, OFF(max_connections), 1, 1000000, "N",
     "concurrent connections; a request on one more is answered 503"},
    {"timeout", "DAE_TIMEOUT", OPT_INT, OFF(timeout_s), 1, 86400, "S",
     "seconds a connection may idle, or an event stream's client not read"},
    {"header-timeout", "DAE_HEADER_TIMEOUT", OPT_INT, OFF(header_timeout_s), 1, 3600, "S",
     "seconds a request head (request line and headers) may take in total; then 408"},
    {"body-timeout", "DAE_BODY_TIMEOUT", OPT_INT, OFF(body_timeout_s), 1, 86400, "S",
     "seconds a request body may take in total; then the connection is closed"},
    {"max-streams", "DAE_MAX_STREAMS", OPT_INT, OFF(max_streams), 0, 1000000, "N",
     "open GET /train/{id}/events streams; more get 503 (they count as connections too)"},
    {"drain-timeout", "DAE_DRAIN_TIMEOUT", OPT_INT, OFF(drain_s), 0, 86400, "S",
     "on SIGTERM/SIGINT: seconds to finish in-flight requests"},
    {"png-level", "DAE_PNG_LEVEL", OPT_INT, OFF(png_level), 0, 9, "N",
     "zlib level of PNG answers over 64 KiB of pixels (smaller: stored)"},
    {"retry-after", "DAE_RETRY_AFTER", OPT_INT, OFF(retry_after_s), 0, 3600, "S", "Retry-After of 503 answers"},
    {"access-log", "DAE_ACCESS_LOG", OPT_LOG, OFF(log_format), 0, 0, "FMT",
     "one line per request on stdout: text, json or off"},
    {"log-format", "DAE_LOG_FORMAT", OPT_LOG, OFF(message_format), 0, 0, "FMT",
     "the server's own messages on stderr: text or json (one object per line)"},
    {"cors-origin", "DAE_CORS_ORIGIN", OPT_STRING, OFF(cors_origin), 0, 0, "ORIGIN",
     "let pages of ORIGIN (or *) call the non-admin routes (CORS); unset: off"},
    {"admin-token", "DAE_ADMIN_TOKEN", OPT_STRING, OFF(admin_token), 0, 0, "TOKEN",
     "admin routes need Authorization: Bearer TOKEN (unset: loopback clients only)"},
    {"state-dir", "DAE_STATE_DIR", OPT_STRING, OFF(state_dir), 0, 0, "DIR",
     "training-job records, kept across restarts (made on first job)"},
    {"data-dir", "DAE_DATA_DIR", OPT_STRING, OFF(data_dir), 0, 0, "DIR",
     "data sets POST /train reads: DIR/NAME/ holds the four IDX files"},
    {"train-threads", "DAE_TRAIN_THREADS", OPT_INT, OFF(train_threads), 1, 64, "N",
     "threads of the running training job"},
    {"train-queue", "DAE_TRAIN_QUEUE", OPT_INT, OFF(train_queue), 1, 10000, "N",
     "most training jobs waiting to run; more get 503"},
    {"train-keep", "DAE_TRAIN_KEEP", OPT_INT, OFF(train_keep), 0, 1000000, "N",
     "ended training jobs kept, listed and on disk: past N the oldest are removed (0: every one)"},
    {"reload-interval", "DAE_RELOAD_INTERVAL", OPT_INT, OFF(reload_interval_s), 0, 86400, "S",
     "seconds between rescans of --models-dir and its ACTIVE file (0: on SIGHUP only)"},
};
enum { N_OPTS = sizeof OPTS / sizeof OPTS[0] };

static const char *const LOG_NAMES[] = {"text", "json", "off"};

/* The defaults; workers follows the CPU count. */
static void set_defaults(srv_config *cfg) {
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    memset(cfg, 0, sizeof *cfg);
    /* Loopback unless asked: a server started from a checkout is not
     * meant for the network (the container image sets DAE_BIND=0.0.0.0). */
    cfg->bind = "127.0.0.1";
    cfg->port = 8080;
    cfg->model = "mnist";
    cfg->models_dir = "models";
    cfg->workers = cpus < 1 ? 1 : cpus > SRV_MAX_WORKERS ? SRV_MAX_WORKERS : (int)cpus;
    cfg->http_threads = 1;
    /* 16, not more: under 64 connections a worker that took all the
     * waiting requests left the other idle until its answers went out
     * (README, "HTTP benchmark": 64 gave 5-15% fewer requests/s and a
     * p99 of 6.5-7.3 ms against 5.1-5.8). The engine's time per tile is
     * the same from 8 tiles a pass to 64, and the workspaces are a quarter
     * the size. With one worker for small images (small_workers), 8, 16
     * and 32 measured alike. */
    cfg->max_batch = 16;
    cfg->max_queue_delay_us = 0;
    cfg->queue_size = 256;
    cfg->queue_pixels = (long long)64 << 20;
    cfg->max_body_bytes = (long long)10 << 20;
    cfg->max_dataset_bytes = (long long)64 << 20;
    cfg->max_pixels = (long long)16 << 20;
    /* With the training budget and the process's own ~100 MiB, within the
     * 1 GiB memory limit of deploy/k8s/deployment.yaml. */
    cfg->memory_budget = (long long)512 << 20;
    cfg->train_memory_budget = (long long)256 << 20;
    /* A quarter of what clients share is always there for the others. */
    cfg->client_share = 75;
    cfg->max_connections = 512;
    cfg->timeout_s = 30;
    cfg->header_timeout_s = 10;
    cfg->body_timeout_s = 60;
    cfg->max_streams = 32;
    cfg->drain_s = 20;
    cfg->png_level = 1;
    cfg->retry_after_s = 1;
    cfg->log_format = SRV_LOG_TEXT;
    cfg->message_format = SRV_LOG_TEXT;
    cfg->admin_token = NULL;
    cfg->state_dir = "state";
    cfg->data_dir = "data";
    cfg->train_threads = cpus > 2 ? (cpus - 1 > 64 ? 64 : (int)cpus - 1) : 1;
    cfg->train_queue = 8;
    cfg->train_keep = 100;
    cfg->reload_interval_s = 5;
}

int srv_parse_size(const char *text, long long *out) {
    if (text == NULL || !isdigit((unsigned char)text[0])) return -1;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno == ERANGE || end == text) return -1;
    int shift = 0;
    switch (tolower((unsigned char)*end)) {
    case '\0': break;
    case 'k': shift = 10; end++; break;
    case 'm': shift = 20; end++; break;
    case 'g': shift = 30; end++; break;
    case 't': shift = 40; end++; break;
    default: return -1;
    }
    if (shift != 0) {
        if (*end == 'i') end++;
        if (*end == 'B' || *end == 'b') end++;
    }
    if (*end != '\0') return -1;
    if (v > (unsigned long long)LLONG_MAX >> shift) return -1;
    *out = (long long)(v << shift);
    return 0;
}

/* The default of o as text, from a freshly defaulted config. */
static void default_text(const opt *o, char *buf, size_t len) {
    srv_config d;
    set_defaults(&d);
    const char *base = (const char *)&d + o->offset;
    switch (o->kind) {
    case OPT_STRING: {
        const char *v = *(const char *const *)base;
        snprintf(buf, len, "%s", v != NULL ? v : "none");
        break;
    }
    case OPT_INT: snprintf(buf, len, "%d", *(const int *)base); break;
    case OPT_SIZE: snprintf(buf, len, "%lld", *(const long long *)base); break;
    case OPT_LOG: snprintf(buf, len, "%s", LOG_NAMES[*(const srv_log_format *)base]); break;
    }
}

/* Prints "Routes: " and the route table's list (http.c) wrapped between
 * routes, so that no line passes 96 columns, ending with ".\n". */
static void usage_routes(FILE *out) {
    char list[1024];
    srv_http_route_list(list, sizeof list);
    int col = fprintf(out, "Routes:");
    for (const char *p = list; *p != '\0';) {
        const char *comma = strstr(p, ", ");
        int len = comma != NULL ? (int)(comma - p) : (int)strlen(p);
        if (col + 1 + len + 1 > 96) {
            fputc('\n', out);
            col = 0;
        } else {
            fputc(' ', out);
            col++;
        }
        col += fprintf(out, "%.*s%s", len, p, comma != NULL ? "," : ".\n");
        p = comma != NULL ? comma + 2 : p + len;
    }
}

void srv_config_usage(FILE *out) {
    fprintf(out,
            "usage: dae-server [FLAGS]\n\n"
            "dae-server %s - the dae denoising autoencoder over HTTP: POST an image to /denoise,\n"
            "get it back denoised as a PNG.\n",
            DAE_SERVER_VERSION);
    usage_routes(out);
    fprintf(out, "SIGTERM or SIGINT drains and exits 0; SIGHUP rescans --models-dir and its ACTIVE file.\n\n"
                 "Every flag has an environment twin; a flag wins over its variable.\n\n"
                 "flags:\n");
    for (int i = 0; i < N_OPTS; i++) {
        const opt *o = &OPTS[i];
        char left[64], def[64];
        snprintf(left, sizeof left, "--%s %s", o->flag, o->meta);
        default_text(o, def, sizeof def);
        if (strcmp(o->flag, "workers") == 0) snprintf(def, sizeof def, "online CPUs");
        if (strcmp(o->flag, "small-workers") == 0)
            snprintf(def, sizeof def, "min(workers, online CPUs) - HTTP threads, at least 1");
        if (strcmp(o->flag, "train-threads") == 0) snprintf(def, sizeof def, "online CPUs - 1, at least 1");
        fprintf(out, "  %-28s %-24s %s (default %s)\n", left, o->env, o->help, def);
    }
    fprintf(out, "  %-28s %-24s %s\n", "--help", "", "show this help");
    fprintf(out, "  %-28s %-24s %s\n", "--version", "", "print the version");
    fprintf(out, "\nexit status: 0 after a clean shutdown, 1 failure to start, 2 usage error\n");
}

/* Stores text as o's value; where names the source ("--port" or
 * "DAE_PORT") in the one-line message printed on a mistake. Returns 0 or
 * SRV_CONFIG_USAGE. */
static int set_opt(srv_config *cfg, const opt *o, const char *text, const char *where) {
    char *base = (char *)cfg + o->offset;
    switch (o->kind) {
    case OPT_STRING:
        if (text[0] == '\0') {
            fprintf(stderr, "dae-server: %s needs a non-empty value (see dae-server --help)\n", where);
            return SRV_CONFIG_USAGE;
        }
        *(const char **)base = text;
        if (o->offset == OFF(model)) cfg->model_given = 1;
        return 0;
    case OPT_INT: {
        char *end;
        errno = 0;
        long v = strtol(text, &end, 10);
        if (end == text || *end != '\0' || errno == ERANGE || v < o->min || v > o->max) {
            fprintf(stderr, "dae-server: %s must be an integer from %lld to %lld, not \"%s\" (see dae-server --help)\n",
                    where, o->min, o->max, text);
            return SRV_CONFIG_USAGE;
        }
        *(int *)base = (int)v;
        return 0;
    }
    case OPT_SIZE: {
        long long v;
        if (srv_parse_size(text, &v) != 0 || v < o->min || v > o->max) {
            fprintf(stderr,
                    "dae-server: %s must be a size from %lld to %lld (suffixes k, M, G), not \"%s\" "
                    "(see dae-server --help)\n",
                    where, o->min, o->max, text);
            return SRV_CONFIG_USAGE;
        }
        *(long long *)base = v;
        return 0;
    }
    case OPT_LOG:
        for (int i = 0; i < 3; i++)
            if (strcmp(text, LOG_NAMES[i]) == 0) {
                *(srv_log_format *)base = (srv_log_format)i;
                return 0;
            }
        fprintf(stderr, "dae-server: %s must be text, json or off, not \"%s\" (see dae-server --help)\n", where, text);
        return SRV_CONFIG_USAGE;
    }
    return 0;
}

int srv_config_parse(srv_config *cfg, int argc, char **argv) {
    set_defaults(cfg);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            srv_config_usage(stdout);
            return SRV_CONFIG_HELP;
        }
        if (strcmp(argv[i], "--version") == 0) {
            printf("dae-server %s\n", DAE_SERVER_VERSION);
            return SRV_CONFIG_HELP;
        }
    }
    for (int i = 0; i < N_OPTS; i++) {
        const char *v = getenv(OPTS[i].env);
        if (v != NULL && v[0] != '\0') {
            int rc = set_opt(cfg, &OPTS[i], v, OPTS[i].env);
            if (rc != 0) return rc;
        }
    }
    unsigned char seen[N_OPTS] = {0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0 || a[2] == '\0') {
            fprintf(stderr, "dae-server: unexpected argument \"%s\" (see dae-server --help)\n", a);
            return SRV_CONFIG_USAGE;
        }
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t len = eq != NULL ? (size_t)(eq - name) : strlen(name);
        int k = -1;
        for (int j = 0; j < N_OPTS && k < 0; j++)
            if (strlen(OPTS[j].flag) == len && strncmp(OPTS[j].flag, name, len) == 0) k = j;
        if (k < 0) {
            fprintf(stderr, "dae-server: unknown flag --%.*s (see dae-server --help)\n", (int)len, name);
            return SRV_CONFIG_USAGE;
        }
        if (seen[k]) {
            fprintf(stderr, "dae-server: --%s given twice\n", OPTS[k].flag);
            return SRV_CONFIG_USAGE;
        }
        seen[k] = 1;
        const char *value;
        if (eq != NULL) {
            value = eq + 1;
        } else if (i + 1 < argc) {
            value = argv[++i];
        } else {
            fprintf(stderr, "dae-server: --%s needs a value (%s)\n", OPTS[k].flag, OPTS[k].meta);
            return SRV_CONFIG_USAGE;
        }
        char where[64];
        snprintf(where, sizeof where, "--%s", OPTS[k].flag);
        int rc = set_opt(cfg, &OPTS[k], value, where);
        if (rc != 0) return rc;
    }
    char why[160];
    if (srv_proxies_parse(&cfg->proxies, cfg->trusted_proxies, why, sizeof why) != 0) {
        fprintf(stderr, "dae-server: --trusted-proxies (DAE_TRUSTED_PROXIES): %s (see dae-server --help)\n", why);
        return SRV_CONFIG_USAGE;
    }
    if (cfg->message_format == SRV_LOG_OFF) {
        fprintf(stderr, "dae-server: --log-format must be text or json: the server's messages cannot be turned off\n");
        return SRV_CONFIG_USAGE;
    }
    srv_log_set_format(cfg->message_format);
    if (cfg->small_workers == 0) {
        /* With AVX-512 the event loop keeps a core of those the workers are
         * given (all, or a container's CPU limit as DAE_WORKERS): a small
         * image's request costs it nearly as much as its forward pass.
         * Without, the forward pass is most of the request, and every
         * worker takes small images (README, "HTTP benchmark"). */
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        long n = dae_gemm_isa() != DAE_ISA_AVX512 ? cfg->workers
                                                  : (cpus < cfg->workers ? cpus : cfg->workers) - cfg->http_threads;
        cfg->small_workers = n < 1 ? 1 : (int)n;
    }
    if (cfg->small_workers > cfg->workers) cfg->small_workers = cfg->workers;
    return 0;
}

long long srv_config_client_part(const srv_config *cfg, long long whole) {
    long long part = whole * cfg->client_share / 100; /* limits are at most 2^40: no overflow */
    return part < 1 && whole >= 1 ? 1 : part;
}

/* 1 for the characters a path may hold around a directory's name. */
static int path_char(char c) { return isalnum((unsigned char)c) || c == '.' || c == '_' || c == '-' || c == '/'; }

/* The length of directory dir as a message would name it ("models/" is
 * "models"), or 0 for none to hide (no directory, "" or "."). */
static size_t dir_len(const char *dir) {
    size_t n = dir != NULL ? strlen(dir) : 0;
    while (n > 1 && dir[n - 1] == '/') n--;
    return n == 1 && dir[0] == '.' ? 0 : n;
}

/* Whether directory dir (len bytes of it) stands at msg[i], a path's
 * start, as a whole directory: a path inside it, or an absolute dir alone. */
static int dir_at(const char *msg, size_t i, const char *dir, size_t len) {
    if (len == 0 || strncmp(msg + i, dir, len) != 0) return 0;
    char next = msg[i + len];
    return next == '/' || (dir[0] == '/' && !path_char(next));
}

int srv_config_hide_dirs(const srv_config *cfg, const char *msg, char *out, size_t cap) {
    const char *dirs[] = {cfg->models_dir, cfg->data_dir, cfg->state_dir};
    const char *names[] = {"MODELS_DIR", "DATA_DIR", "STATE_DIR"};
    size_t lens[3];
    for (int d = 0; d < 3; d++) lens[d] = dir_len(dirs[d]);
    size_t o = 0;
    int replaced = 0;
    for (size_t i = 0; msg[i] != '\0' && o + 1 < cap;) {
        size_t n = 0;
        int which = 0;
        /* The longest that stands here: a data directory may lie inside the models'. */
        for (int d = 0; d < 3 && (i == 0 || !path_char(msg[i - 1])); d++)
            if (lens[d] > n && dir_at(msg, i, dirs[d], lens[d])) n = lens[d], which = d;
        if (n > 0) {
            o += (size_t)snprintf(out + o, cap - o, "%s", names[which]);
            if (o >= cap) o = cap - 1;
            i += n, replaced = 1;
        } else {
            out[o++] = msg[i++];
        }
    }
    if (cap > 0) out[o < cap ? o : cap - 1] = '\0';
    return replaced;
}

