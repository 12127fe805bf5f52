/* metrics.h - the server's Prometheus metrics and their text exposition
 * (format 0.0.4, checked with `promtool check metrics`).
 *
 * Every label value is fixed: route names come from the route table
 * (http.c), statuses from the short list the server answers with, rejection
 * reasons from an enum, model names from the registry. Raw paths or ids
 * never become labels. Counters and histograms are lock-free atomics, so
 * any thread records without contention on a lock. */
#ifndef SRV_METRICS_H
#define SRV_METRICS_H

#include <stdatomic.h>
#include <stddef.h>

/* The routes are the rows of http.c's route table: the metrics count
 * them by row index, and take their label values from the table
 * (srv_metrics_name_route). */
#define SRV_MAX_ROUTES 40

/* The route of a request that matched no route (a 404, or a head the
 * gate turned away): counted as route="unknown", after every row. */
#define SRV_ROUTE_UNKNOWN (-1)

/* Why a request was turned away before doing its work. */
typedef enum {
    SRV_REJECT_QUEUE_FULL,
    SRV_REJECT_DRAINING,
    SRV_REJECT_BODY_TOO_LARGE,
    SRV_REJECT_TOO_MANY_PIXELS,
    SRV_REJECT_TIMEOUT,
    SRV_REJECT_CONNECTIONS,
    SRV_REJECT_MEMORY_BUDGET, /* the memory budget could not hold the request */
    SRV_REJECT_CLIENT_SHARE,  /* the client's share of the memory budget could not hold it, or its connection
                                 was closed for another client's (clients.h) */
    SRV_N_REJECTS
} srv_reject_reason;

/* Largest number of bucket bounds of a histogram. */
#define SRV_HIST_MAX 20

typedef struct {
    const double *bounds;  /* upper bounds, increasing; +Inf is implied */
    int n_bounds;
    char le[SRV_HIST_MAX][16]; /* the bounds as their "le" labels print them (%g) */
    double unit;           /* sum is kept in units of this (1e-9 for seconds) */
    atomic_ullong buckets[SRV_HIST_MAX + 1]; /* not cumulative; last is +Inf */
    atomic_ullong sum;     /* in units */
} srv_hist;

/* The statuses counted per route; any other status counts as "other". */
#define SRV_N_STATUSES 15

typedef struct srv_metrics {
    const char *route_names[SRV_MAX_ROUTES]; /* label of each route row; static strings */
    int n_routes;
    /* Per route row, and the last one for route="unknown". */
    atomic_ullong requests[SRV_MAX_ROUTES + 1][SRV_N_STATUSES + 1];
    srv_hist latency[SRV_MAX_ROUTES + 1];
    srv_hist queue_wait, inference, batch_tiles, batch_requests;
    srv_hist helper_wait, helper_work; /* work off the event loop (http.c's off_loop): its wait, its time */
    atomic_ullong rejections[SRV_N_REJECTS];
    atomic_ullong images_denoised, pixels_denoised, tiles_denoised, images_noised;
    atomic_llong queue_depth;      /* jobs waiting for a worker */
    atomic_llong helper_depth;     /* requests whose work waits for the helper thread */
    double start_time;             /* UNIX time the server started */
} srv_metrics;

/* Values sampled when /metrics is rendered. */
typedef struct {
    long long in_flight;        /* requests being handled */
    long long pending;          /* requests admitted to the workers and not answered */
    long long connections;      /* open HTTP connections */
    long long closing;          /* answered connections in their lingering close */
    int queue_capacity, workers, small_workers, max_batch, draining;
    long long memory_budget;    /* bytes (--memory-budget) */
    long long memory_reserved;  /* bytes of it held by requests now */
    long long memory_peak;      /* most bytes of it held at once */
} srv_metrics_gauges;

/* Initialises m (all zero, the histograms' buckets set, no routes named). */
void srv_metrics_init(srv_metrics *m);

/* Gives route row index route (0 <= route < SRV_MAX_ROUTES) the label
 * value name (a static string); the rows are rendered in index order,
 * each named one up to the highest. Call before any thread records. */
void srv_metrics_name_route(srv_metrics *m, int route, const char *name);

/* Counts one answered request of route (a row index, or
 * SRV_ROUTE_UNKNOWN) with HTTP status, taking duration_s. */
void srv_metrics_request(srv_metrics *m, int route, int status, double duration_s);

void srv_metrics_reject(srv_metrics *m, srv_reject_reason reason);

/* Records value (seconds, or a count for the batch histograms). */
void srv_hist_observe(srv_hist *h, double value);

struct srv_registry;

/* Renders every metric as Prometheus text into a new malloc'd string
 * (*len bytes), NULL when out of memory. registry gives the model info. */
char *srv_metrics_render(srv_metrics *m, const srv_metrics_gauges *g, struct srv_registry *registry, size_t *len);

#endif
