/* metrics.h - the server's Prometheus metrics and their text exposition
 * (format 0.0.4, checked with `promtool check metrics`).
 *
 * Every label value is fixed: route names come from the route table
 * below, statuses from the short list the server answers with, rejection
 * reasons from an enum, model names from the registry. Raw paths or ids
 * never become labels. Counters and histograms are lock-free atomics, so
 * any thread records without contention on a lock. */
#ifndef SRV_METRICS_H
#define SRV_METRICS_H

#include <stdatomic.h>
#include <stddef.h>

/* The routes, as labels. */
typedef enum {
    SRV_ROUTE_DENOISE,
    SRV_ROUTE_NOISE,
    SRV_ROUTE_HEALTHZ,
    SRV_ROUTE_READYZ,
    SRV_ROUTE_METRICS,
    SRV_ROUTE_MODELS,
    SRV_ROUTE_MODEL,   /* /models/{name} */
    SRV_ROUTE_MODEL_ACTIVATE, /* /models/{name}/activate */
    SRV_ROUTE_TRAIN,          /* /train */
    SRV_ROUTE_TRAIN_JOB,      /* /train/{id} */
    SRV_ROUTE_TRAIN_EVENTS,   /* /train/{id}/events */
    SRV_ROUTE_UNKNOWN, /* no route matched (404) */
    SRV_N_ROUTES
} srv_route_id;

/* Why a request was turned away before doing its work. */
typedef enum {
    SRV_REJECT_QUEUE_FULL,
    SRV_REJECT_DRAINING,
    SRV_REJECT_BODY_TOO_LARGE,
    SRV_REJECT_TOO_MANY_PIXELS,
    SRV_REJECT_TIMEOUT,
    SRV_REJECT_CONNECTIONS,
    SRV_REJECT_MEMORY_BUDGET, /* the memory budget could not hold the request */
    SRV_N_REJECTS
} srv_reject_reason;

/* The label value of a route ("denoise", ...). */
const char *srv_route_name(srv_route_id route);

/* Largest number of bucket bounds of a histogram. */
#define SRV_HIST_MAX 20

typedef struct {
    const double *bounds;  /* upper bounds, increasing; +Inf is implied */
    int n_bounds;
    double unit;           /* sum is kept in units of this (1e-9 for seconds) */
    atomic_ullong buckets[SRV_HIST_MAX + 1]; /* not cumulative; last is +Inf */
    atomic_ullong sum;     /* in units */
} srv_hist;

/* The statuses counted per route; any other status counts as "other". */
#define SRV_N_STATUSES 13

typedef struct srv_metrics {
    atomic_ullong requests[SRV_N_ROUTES][SRV_N_STATUSES + 1];
    srv_hist latency[SRV_N_ROUTES];
    srv_hist queue_wait, inference, batch_tiles, batch_requests;
    atomic_ullong rejections[SRV_N_REJECTS];
    atomic_ullong images_denoised, pixels_denoised, tiles_denoised, images_noised;
    atomic_llong queue_depth;      /* jobs waiting for a worker */
    double start_time;             /* UNIX time the server started */
} srv_metrics;

/* Values sampled when /metrics is rendered. */
typedef struct {
    long long in_flight;        /* requests being handled */
    long long pending;          /* requests admitted to the workers and not answered */
    long long connections;      /* open HTTP connections */
    int queue_capacity, workers, max_batch, draining;
    long long memory_budget;    /* bytes (--memory-budget) */
    long long memory_reserved;  /* bytes of it held by requests now */
    long long memory_peak;      /* most bytes of it held at once */
} srv_metrics_gauges;

/* Initialises m (all zero, the histograms' buckets set). */
void srv_metrics_init(srv_metrics *m);

/* Counts one answered request of route with HTTP status, taking
 * duration_s. */
void srv_metrics_request(srv_metrics *m, srv_route_id route, int status, double duration_s);

void srv_metrics_reject(srv_metrics *m, srv_reject_reason reason);

/* Records value (seconds, or a count for the batch histograms). */
void srv_hist_observe(srv_hist *h, double value);

struct srv_registry;

/* Renders every metric as Prometheus text into a new malloc'd string
 * (*len bytes), NULL when out of memory. registry gives the model info. */
char *srv_metrics_render(srv_metrics *m, const srv_metrics_gauges *g, struct srv_registry *registry, size_t *len);

#endif
