/* metrics.c - recording (atomics) and the Prometheus text exposition,
 * including the standard process_* metrics read from /proc. */
#include "metrics.h"

#include <dirent.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "config.h"
#include "gemm.h"
#include "registry.h"

static const int STATUSES[SRV_N_STATUSES] = {200, 201, 202, 304, 400, 401, 403, 404, 405, 409, 413, 415, 422, 500, 503};
static const char *const REJECT_NAMES[SRV_N_REJECTS] = {"queue_full", "draining", "body_too_large",
                                                         "too_many_pixels", "timeout", "too_many_connections",
                                                         "memory_budget", "client_share"};

static const double SECONDS[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                 0.05,   0.1,     0.25,   0.5,   1,      2.5,   5,    10};
static const double TILES[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096};

static void hist_init(srv_hist *h, const double *bounds, int n, double unit) {
    h->bounds = bounds;
    h->n_bounds = n;
    h->unit = unit;
    for (int i = 0; i < n; i++) snprintf(h->le[i], sizeof h->le[i], "%g", bounds[i]);
}

void srv_metrics_init(srv_metrics *m) {
    memset(m, 0, sizeof *m);
    enum { NS = sizeof SECONDS / sizeof SECONDS[0], NT = sizeof TILES / sizeof TILES[0] };
    for (int r = 0; r <= SRV_MAX_ROUTES; r++) hist_init(&m->latency[r], SECONDS, NS, 1e-9);
    hist_init(&m->queue_wait, SECONDS, NS, 1e-9);
    hist_init(&m->inference, SECONDS, NS, 1e-9);
    hist_init(&m->helper_wait, SECONDS, NS, 1e-9);
    hist_init(&m->helper_work, SECONDS, NS, 1e-9);
    hist_init(&m->batch_tiles, TILES, NT, 1);
    hist_init(&m->batch_requests, TILES, NT, 1);
    struct timeval tv;
    gettimeofday(&tv, NULL);
    m->start_time = (double)tv.tv_sec + tv.tv_usec * 1e-6;
}

void srv_hist_observe(srv_hist *h, double value) {
    int i = 0;
    while (i < h->n_bounds && value > h->bounds[i]) i++;
    atomic_fetch_add_explicit(&h->buckets[i], 1, memory_order_relaxed);
    double units = value / h->unit;
    atomic_fetch_add_explicit(&h->sum, units > 0 ? (unsigned long long)(units + 0.5) : 0, memory_order_relaxed);
}

void srv_metrics_name_route(srv_metrics *m, int route, const char *name) {
    if (route < 0 || route >= SRV_MAX_ROUTES) return;
    m->route_names[route] = name;
    if (route >= m->n_routes) m->n_routes = route + 1;
}

/* The row of route in the counters: its own, or the last for "unknown". */
static int route_row(const srv_metrics *m, int route) {
    return route >= 0 && route < m->n_routes ? route : SRV_MAX_ROUTES;
}

/* The label value of counter row r. */
static const char *route_label(const srv_metrics *m, int r) {
    return r < m->n_routes && m->route_names[r] != NULL ? m->route_names[r] : "unknown";
}

void srv_metrics_request(srv_metrics *m, int route, int status, double duration_s) {
    route = route_row(m, route);
    int s = SRV_N_STATUSES;
    for (int i = 0; i < SRV_N_STATUSES; i++)
        if (STATUSES[i] == status) s = i;
    atomic_fetch_add_explicit(&m->requests[route][s], 1, memory_order_relaxed);
    srv_hist_observe(&m->latency[route], duration_s);
}

void srv_metrics_reject(srv_metrics *m, srv_reject_reason reason) {
    atomic_fetch_add_explicit(&m->rejections[reason], 1, memory_order_relaxed);
}

/* ------------------------------------------------------------ rendering */

typedef struct {
    char *buf;
    size_t len, cap;
    int failed;
} text;

/* Makes room for more bytes and a NUL after t's text; 0, or -1 (and
 * t failed) when out of memory. */
static int reserve(text *t, size_t more) {
    if (t->failed) return -1;
    if (t->len + more < t->cap) return 0;
    size_t cap = t->cap * 2 + more + 1;
    char *grown = realloc(t->buf, cap);
    if (grown == NULL) {
        t->failed = 1;
        return -1;
    }
    t->buf = grown, t->cap = cap;
    return 0;
}

static void out(text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void out(text *t, const char *fmt, ...) {
    for (size_t more = 0; reserve(t, more) == 0;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(t->buf + t->len, t->cap - t->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            t->failed = 1;
            return;
        }
        if ((size_t)n < t->cap - t->len) {
            t->len += (size_t)n;
            return;
        }
        more = (size_t)n;
    }
}

/* Appends the len bytes of s. */
static void put(text *t, const char *s, size_t len) {
    if (reserve(t, len) != 0) return;
    memcpy(t->buf + t->len, s, len);
    t->len += len;
    t->buf[t->len] = '\0';
}

/* Appends v in decimal. */
static void put_count(text *t, unsigned long long v) {
    char digits[24];
    int i = sizeof digits;
    do digits[--i] = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    put(t, digits + i, sizeof digits - (size_t)i);
}

/* HELP and TYPE lines of a metric family. */
static void family(text *t, const char *name, const char *type, const char *help) {
    const char *parts[] = {"# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n"};
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) put(t, parts[i], strlen(parts[i]));
}

/* One histogram series: name with the label text labels ("" or
 * `route="x"`). */
static void hist_series(text *t, const char *name, const char *labels, const srv_hist *h) {
    /* Most of the page is these lines: put together, not printed (a
     * format each took /metrics 312 us of the event loop). */
    char head[256];
    int head_len = snprintf(head, sizeof head, "%s_bucket{%s%sle=\"", name, labels, labels[0] != '\0' ? "," : "");
    if (head_len < 0 || head_len >= (int)sizeof head) {
        t->failed = 1;
        return;
    }
    unsigned long long cum = 0;
    for (int i = 0; i <= h->n_bounds; i++) {
        cum += atomic_load_explicit(&h->buckets[i], memory_order_relaxed);
        put(t, head, (size_t)head_len);
        const char *le = i < h->n_bounds ? h->le[i] : "+Inf";
        put(t, le, strlen(le));
        put(t, "\"} ", 3);
        put_count(t, cum);
        put(t, "\n", 1);
    }
    double sum = (double)atomic_load_explicit(&h->sum, memory_order_relaxed) * h->unit;
    const char *open = labels[0] != '\0' ? "{" : "", *close = labels[0] != '\0' ? "}" : "";
    out(t, "%s_sum%s%s%s %.9g\n%s_count%s%s%s %llu\n", name, open, labels, close, sum, name, open, labels, close, cum);
}

static long long boot_seconds = -1;

static void read_boot_time(void) {
    char line[256];
    FILE *s = fopen("/proc/stat", "r");
    while (s != NULL && fgets(line, sizeof line, s) != NULL)
        if (sscanf(line, "btime %lld", &boot_seconds) == 1) break;
    if (s != NULL) fclose(s);
}

/* The boot time (btime in /proc/stat), or -1: read once, as the kernel
 * makes /proc/stat anew from every CPU's counters at each read. */
static long long boot_time(void) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, read_boot_time);
    return boot_seconds;
}

/* process_* as the Prometheus client libraries export them, from /proc. */
static void process_metrics(text *t) {
    long ticks = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
    char stat[2048];
    FILE *f = fopen("/proc/self/stat", "r");
    size_t n = f != NULL ? fread(stat, 1, sizeof stat - 1, f) : 0;
    if (f != NULL) fclose(f);
    stat[n] = '\0';
    /* Fields after the command name, which ends at the last ')'. */
    const char *p = strrchr(stat, ')');
    unsigned long long utime = 0, stime = 0, starttime = 0, vsize = 0;
    long long rss = 0;
    if (p != NULL &&
        sscanf(p + 2,
               "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d %*d %*d %llu %llu %lld",
               &utime, &stime, &starttime, &vsize, &rss) == 5 &&
        ticks > 0) {
        family(t, "process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.");
        out(t, "process_cpu_seconds_total %.2f\n", (double)(utime + stime) / (double)ticks);
        family(t, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.");
        out(t, "process_virtual_memory_bytes %llu\n", vsize);
        family(t, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
        out(t, "process_resident_memory_bytes %lld\n", rss * (long long)page);
        /* Start time: boot time (btime in /proc/stat) + starttime ticks. */
        long long btime = boot_time();
        if (btime >= 0) {
            family(t, "process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.");
            out(t, "process_start_time_seconds %.2f\n", (double)btime + (double)starttime / (double)ticks);
        }
    }
    DIR *d = opendir("/proc/self/fd");
    if (d != NULL) {
        long fds = 0;
        struct dirent *e;
        while ((e = readdir(d)) != NULL)
            if (e->d_name[0] != '.') fds++;
        closedir(d);
        family(t, "process_open_fds", "gauge", "Number of open file descriptors.");
        out(t, "process_open_fds %ld\n", fds - 1); /* not counting the directory's own */
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        family(t, "process_max_fds", "gauge", "Maximum number of open file descriptors.");
        if (rl.rlim_cur == RLIM_INFINITY) out(t, "process_max_fds +Inf\n");
        else out(t, "process_max_fds %llu\n", (unsigned long long)rl.rlim_cur);
    }
}

/* Appends one model's info series. */
static void model_info(void *ctx, const srv_model *m, int is_default) {
    text *t = ctx;
    out(t, "dae_model_info{model=\"%s\",version=\"%s\",default=\"%s\"} 1\n", m->name, m->version,
        is_default ? "true" : "false");
}

static void model_params(void *ctx, const srv_model *m, int is_default) {
    (void)is_default;
    text *t = ctx;
    out(t, "dae_model_parameters{model=\"%s\"} %zu\n", m->name, m->net.n_params);
}

char *srv_metrics_render(srv_metrics *m, const srv_metrics_gauges *g, struct srv_registry *registry, size_t *len) {
    text t = {malloc(16384), 0, 16384, 0};
    if (t.buf == NULL) return NULL;

    family(&t, "dae_http_requests_total", "counter", "HTTP requests answered, by route and status.");
    /* The routes in the table's order, then "unknown" (i == n_routes). */
    for (int i = 0; i <= m->n_routes; i++) {
        int r = route_row(m, i);
        for (int s = 0; s <= SRV_N_STATUSES; s++) {
            unsigned long long v = atomic_load_explicit(&m->requests[r][s], memory_order_relaxed);
            if (v == 0) continue;
            char status[8] = "other";
            if (s < SRV_N_STATUSES) snprintf(status, sizeof status, "%d", STATUSES[s]);
            out(&t, "dae_http_requests_total{route=\"%s\",status=\"%s\"} %llu\n", route_label(m, r), status, v);
        }
    }
    family(&t, "dae_http_request_duration_seconds", "histogram",
           "Time from the request's arrival to its answer, by route.");
    for (int i = 0; i <= m->n_routes; i++) {
        int r = route_row(m, i);
        char labels[48];
        snprintf(labels, sizeof labels, "route=\"%s\"", route_label(m, r));
        hist_series(&t, "dae_http_request_duration_seconds", labels, &m->latency[r]);
    }
    family(&t, "dae_http_requests_in_flight", "gauge", "Requests being handled.");
    out(&t, "dae_http_requests_in_flight %lld\n", g->in_flight);
    family(&t, "dae_http_connections", "gauge", "Open HTTP connections.");
    out(&t, "dae_http_connections %lld\n", g->connections);
    family(&t, "dae_http_closing_connections", "gauge",
           "Answered connections whose client still sends: read and dropped until it stops, then closed.");
    out(&t, "dae_http_closing_connections %lld\n", g->closing);
    family(&t, "dae_rejections_total", "counter", "Requests turned away before their work, by reason.");
    for (int i = 0; i < SRV_N_REJECTS; i++)
        out(&t, "dae_rejections_total{reason=\"%s\"} %llu\n", REJECT_NAMES[i],
            atomic_load_explicit(&m->rejections[i], memory_order_relaxed));

    family(&t, "dae_queue_depth", "gauge", "Requests waiting for an inference worker.");
    out(&t, "dae_queue_depth %lld\n", (long long)atomic_load_explicit(&m->queue_depth, memory_order_relaxed));
    family(&t, "dae_queue_pending", "gauge", "Requests admitted to the inference queue and not yet answered.");
    out(&t, "dae_queue_pending %lld\n", g->pending);
    family(&t, "dae_queue_capacity", "gauge", "Most requests admitted at once; more are answered 503.");
    out(&t, "dae_queue_capacity %d\n", g->queue_capacity);
    family(&t, "dae_memory_budget_bytes", "gauge", "Bytes requests in flight may hold (--memory-budget).");
    out(&t, "dae_memory_budget_bytes %lld\n", g->memory_budget);
    family(&t, "dae_memory_reserved_bytes", "gauge", "Bytes of the memory budget held by requests in flight.");
    out(&t, "dae_memory_reserved_bytes %lld\n", g->memory_reserved);
    family(&t, "dae_memory_reserved_peak_bytes", "gauge", "Most bytes of the memory budget held at once.");
    out(&t, "dae_memory_reserved_peak_bytes %lld\n", g->memory_peak);
    family(&t, "dae_inference_workers", "gauge", "Inference worker threads.");
    out(&t, "dae_inference_workers %d\n", g->workers);
    family(&t, "dae_inference_small_workers", "gauge", "Most workers running small images' batches at once.");
    out(&t, "dae_inference_small_workers %d\n", g->small_workers);
    family(&t, "dae_inference_max_batch", "gauge", "Most tiles in one forward pass.");
    out(&t, "dae_inference_max_batch %d\n", g->max_batch);
    family(&t, "dae_queue_wait_seconds", "histogram", "Time from admission until a worker starts a request.");
    hist_series(&t, "dae_queue_wait_seconds", "", &m->queue_wait);
    family(&t, "dae_inference_seconds", "histogram", "Duration of one batched forward pass.");
    hist_series(&t, "dae_inference_seconds", "", &m->inference);
    family(&t, "dae_inference_batch_tiles", "histogram", "Tiles (28x28 model inputs) per forward pass.");
    hist_series(&t, "dae_inference_batch_tiles", "", &m->batch_tiles);
    family(&t, "dae_inference_batch_requests", "histogram", "Requests sharing one forward pass.");
    hist_series(&t, "dae_inference_batch_requests", "", &m->batch_requests);
    family(&t, "dae_helper_queue_depth", "gauge",
           "Requests whose long work (big JSON, imports, admin changes) waits for the helper thread.");
    out(&t, "dae_helper_queue_depth %lld\n", (long long)atomic_load_explicit(&m->helper_depth, memory_order_relaxed));
    family(&t, "dae_helper_wait_seconds", "histogram", "Time a request's long work waits for the helper thread.");
    hist_series(&t, "dae_helper_wait_seconds", "", &m->helper_wait);
    family(&t, "dae_helper_work_seconds", "histogram", "Time the helper thread spends on one request's long work.");
    hist_series(&t, "dae_helper_work_seconds", "", &m->helper_work);
    family(&t, "dae_images_denoised_total", "counter", "Images denoised.");
    out(&t, "dae_images_denoised_total %llu\n", atomic_load_explicit(&m->images_denoised, memory_order_relaxed));
    family(&t, "dae_pixels_denoised_total", "counter", "Pixels of the images denoised (width x height).");
    out(&t, "dae_pixels_denoised_total %llu\n", atomic_load_explicit(&m->pixels_denoised, memory_order_relaxed));
    family(&t, "dae_tiles_denoised_total", "counter", "Tiles run through the network.");
    out(&t, "dae_tiles_denoised_total %llu\n", atomic_load_explicit(&m->tiles_denoised, memory_order_relaxed));
    family(&t, "dae_images_noised_total", "counter", "Images given synthetic noise by POST /noise.");
    out(&t, "dae_images_noised_total %llu\n", atomic_load_explicit(&m->images_noised, memory_order_relaxed));

    family(&t, "dae_model_info", "gauge", "Models loaded, with their version; default=\"true\" for the default.");
    srv_registry_foreach(registry, model_info, &t);
    family(&t, "dae_model_parameters", "gauge", "Parameters of each loaded model.");
    srv_registry_foreach(registry, model_params, &t);
    family(&t, "dae_model_switches_total", "counter", "Changes of the default model (activations, ACTIVE file).");
    out(&t, "dae_model_switches_total %llu\n", srv_registry_switches(registry));
    family(&t, "dae_ready", "gauge", "1 when the server takes requests, 0 while draining.");
    out(&t, "dae_ready %d\n", g->draining ? 0 : 1);
    family(&t, "dae_engine_info", "gauge", "Instruction set of the engine's kernels on this CPU (or DAE_ISA's).");
    out(&t, "dae_engine_info{isa=\"%s\"} 1\n", dae_isa_name(dae_gemm_isa()));
    family(&t, "dae_build_info", "gauge", "Build of this server.");
    out(&t, "dae_build_info{version=\"%s\",libmicrohttpd=\"%s\",compiler=\"%s\"} 1\n", DAE_SERVER_VERSION,
        MHD_get_version(),
#if defined(__clang__)
        "clang " __clang_version__
#elif defined(__GNUC__)
        "gcc " __VERSION__
#else
        "unknown"
#endif
    );
    process_metrics(&t);
    if (t.failed) {
        free(t.buf);
        return NULL;
    }
    *len = t.len;
    return t.buf;
}
