/* inference.c - the bounded request queue, the worker threads, tile batching
 * across requests, and the decode / blend / encode steps around the
 * forward passes. The scheme is described in inference.h.
 *
 * Locking: q->mu guards the queue list, the counters and every request's
 * bookkeeping (state, next_tile, done_tiles, in_flight, cancelled). The
 * float work - decoding, extracting tiles, forward passes, encoding - runs
 * without it; accumulating tiles into a request's output planes takes that
 * request's acc_mu, since two workers may hold tiles of one large image. */
#include "inference.h"

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "gemm.h"
#include "utf8.h"

/* Requests of at most this many pixels are decoded into a batch already
 * being gathered; bigger ones start a batch of their own, so a slow
 * decode never holds up tiles already claimed. */
#define SMALL_REQ_PIXELS 65536

enum { REQ_NEW, REQ_PREPARING, REQ_READY, REQ_CLAIMED, REQ_DONE };

typedef struct {
    srv_infer_request *req;
    int first, n; /* tiles [first, first + n) of the request, within one plane */
} segment;

typedef struct {
    srv_model *model;      /* every segment's model */
    int tiles, n_seg, n_reqs;
    int big;               /* its tiles are of one big request: no small one joins */
    int small_slot;        /* it holds one of the q->small_limit places of small batches */
    unsigned long id;      /* stamps the requests counted in n_reqs */
    double oldest;         /* earliest enqueue time of its requests */
    segment *seg;          /* room for max_batch */
    srv_infer_request **decode;   /* room for max_batch: new requests being decoded */
    srv_infer_request *completed; /* retired requests to deliver (noise requests, failures) */
} batch;

typedef struct {
    struct srv_infer *q;
    int index;
    pthread_t thread;
    int started;
    float *tiles_in, *tiles_out; /* max_batch tiles each */
    size_t tile_floats;          /* floats per tile the buffers are sized for */
    segment *seg;
    srv_infer_request **decode;
} worker;

struct srv_infer {
    pthread_mutex_t mu;
    pthread_cond_t work;       /* a request arrived or the queue is stopping */
    srv_infer_request *head, *tail; /* requests with work left: new, being decoded, or with unclaimed tiles */
    int n_list, n_new, n_ready;
    int pending;               /* reserved and not yet completed */
    long long pending_pixels;
    int capacity;
    long long pixel_budget;
    int share_capacity;        /* of them, one client's part (srv_infer_share) */
    long long share_pixels;
    int closed, stopping;
    int preemptive;            /* the workers' policy: worker_policy */
    int max_batch, delay_us, n_workers;
    int small_limit;           /* most workers running small batches at once */
    int small_running;         /* batches holding a small slot now */
    int n_big_listed;          /* big requests in the list */
    unsigned long batch_serial;
    srv_metrics *metrics;
    worker *workers;
    worker now;                /* srv_infer_run_now's buffers and workspace slot (SRV_MAX_WORKERS) */
    srv_budget budget;         /* bytes of the requests in flight (atomic; no lock) */
};

/* ------------------------------------------------------------ the list */

/* A request too big to be decoded into a batch being gathered, or to share
 * one with small requests. */
static int req_is_big(const srv_infer_request *j) { return j->pixels > SMALL_REQ_PIXELS; }

static void list_append(srv_infer *q, srv_infer_request *j) {
    j->next = NULL;
    j->prev = q->tail;
    if (q->tail != NULL) q->tail->next = j;
    else q->head = j;
    q->tail = j;
    q->n_list++;
    q->n_big_listed += req_is_big(j);
    atomic_store_explicit(&q->metrics->queue_depth, q->n_list, memory_order_relaxed);
}

static void list_remove(srv_infer *q, srv_infer_request *j) {
    if (j->prev != NULL) j->prev->next = j->next;
    else q->head = j->next;
    if (j->next != NULL) j->next->prev = j->prev;
    else q->tail = j->prev;
    j->prev = j->next = NULL;
    q->n_list--;
    q->n_big_listed -= req_is_big(j);
    atomic_store_explicit(&q->metrics->queue_depth, q->n_list, memory_order_relaxed);
}

/* ------------------------------------------------------------ request steps */

/* Releases the request's working memory (not its result). */
static void req_release(srv_infer_request *j) {
    dae_image_free(&j->img);
    dae_denoise_free(&j->pipe);
}

/* Lowers j's memory reservation to keep bytes, giving the rest back to
 * the budget (never raises it). */
static void req_budget_trim(srv_infer *q, srv_infer_request *j, long long keep) {
    if (keep < 0) keep = 0;
    if (j->mem_reserved <= keep) return;
    srv_budget_give_share(&q->budget, j->share, j->mem_reserved - keep);
    j->mem_reserved = keep;
}

/* Records st and msg as the request's result (DAE_OK: its PNG is in).
 * The engine's DAE_ERR_INVALID is, for an image the HTTP layer let
 * through, always a limit (pixels or side when decoding, tiles when
 * planning): the request was too large. */
static void req_end(srv_infer_request *j, dae_status st, const char *msg) {
    j->status = st == DAE_ERR_INVALID ? DAE_ERR_TOO_LARGE : st;
    srv_copy_str(j->message, sizeof j->message, msg);
    j->ended = 1;
}

/* Ends a request that shutdown cancelled before its result was in. */
static void req_stopped(srv_infer_request *j) {
    if (!j->ended) req_end(j, DAE_ERR_STOPPING, "the server is shutting down");
}

/* Takes a finished request off the books: gives back its reservation. Called
 * with q->mu held; the request is then delivered without it. */
static void req_retire(srv_infer *q, srv_infer_request *j) {
    j->state = REQ_DONE;
    q->pending--;
    q->pending_pixels -= j->pixels;
    if (j->queue_share != NULL) j->queue_share->requests--, j->queue_share->pixels -= j->pixels;
}

/* Hands a retired request to its owner: frees the working memory, gives back
 * all of its memory reservation but the PNG answer's bytes, and calls
 * done (after which j may be gone). Called without q->mu. */
static void req_deliver(srv_infer *q, srv_infer_request *j) {
    req_release(j);
    req_budget_trim(q, j, j->png != NULL ? (long long)j->png_len : 0);
    if (j->kind != SRV_INFER_NOISE) pthread_mutex_destroy(&j->acc_mu);
    if (j->done != NULL) j->done(j); /* NULL: srv_infer_run_now, whose caller answers */
}

/* Delivers a chain of retired requests (linked through next). */
static void deliver_all(srv_infer *q, srv_infer_request *list) {
    while (list != NULL) {
        srv_infer_request *j = list;
        list = j->next;
        req_deliver(q, j);
    }
}

/* Decodes the image of j into j->img, then lowers j's reservation from
 * the worst case (channels unknown) to the estimate for the channels
 * the image has. Returns 0, or -1 with the error recorded. */
static int req_decode(srv_infer *q, srv_infer_request *j) {
    char err[DAE_ERR_LEN];
    dae_status st = dae_image_decode(j->input, j->input_len, j->max_pixels, &j->img, err, sizeof err);
    if (st != DAE_OK) {
        req_end(j, st, err);
        return -1;
    }
    j->width = j->img.width, j->height = j->img.height, j->channels = j->img.channels;
    j->format = j->img.format;
    j->source_16bit = j->img.source_16bit;
    req_budget_trim(q, j,
                    srv_budget_image_bytes(j->kind == SRV_INFER_DENOISE ? SRV_BUDGET_DENOISE : SRV_BUDGET_NOISE,
                                           j->width, j->height, j->channels));
    return 0;
}

/* Encodes img as j's PNG result. */
static void req_encode(srv_infer_request *j, const dae_image *img) {
    char err[DAE_ERR_LEN] = "";
    req_end(j, dae_image_encode_png(img, j->png_level, &j->png, &j->png_len, err, sizeof err), err);
}

/* The whole of a noise request: decode, add seeded noise, encode. */
static void req_run_noise(srv_infer *q, srv_infer_request *j) {
    if (req_decode(q, j) != 0) return;
    char err[DAE_ERR_LEN];
    dae_status st = dae_image_add_noise(&j->img, &j->noise, j->seed, err, sizeof err);
    if (st != DAE_OK) {
        req_end(j, st, err);
        return;
    }
    req_encode(j, &j->img);
    if (j->status == DAE_OK) atomic_fetch_add_explicit(&q->metrics->images_noised, 1, memory_order_relaxed);
}

/* First step of a denoise request: decode, then begin the denoising pipeline
 * over the decoded image (tiles are cut from the 8-bit image itself,
 * which saves a float copy of it). Returns 0, or -1 with the error
 * recorded. */
static int req_prepare_denoise(srv_infer *q, srv_infer_request *j) {
    if (req_decode(q, j) != 0) return -1;
    char err[DAE_ERR_LEN];
    dae_status st = dae_denoise_begin(&j->pipe, &j->model->net, &j->img, err, sizeof err);
    if (st != DAE_OK) {
        req_end(j, st, err);
        return -1;
    }
    return 0;
}

/* Last step of a denoise request: blend the accumulated planes back into the
 * request's image in place (every tile has been cut from it by now; alpha
 * stays as it was), which frees the planes, then encode the image. */
static void req_finish_denoise(srv_infer *q, srv_infer_request *j) {
    size_t plane = (size_t)j->width * (size_t)j->height;
    dae_denoise_finish(&j->pipe); /* the planes are no longer needed while encoding */
    req_encode(j, &j->img);
    dae_image_free(&j->img);
    if (j->status == DAE_OK) {
        atomic_fetch_add_explicit(&q->metrics->images_denoised, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&q->metrics->pixels_denoised, (unsigned long long)plane, memory_order_relaxed);
    }
}

/* First step of a tensor request: its inputs are its tiles, one "plane"
 * of tensor_n (claim keeps a batch's segments within a plane). Nothing
 * to decode or allocate. */
static void req_prepare_tensor(srv_infer_request *j) {
    j->width = j->model->net.in_w, j->height = j->model->net.in_h, j->channels = 1;
    j->pipe.plan.count = j->pipe.tiles = j->tensor_n;
}

/* Last step of a tensor request: every output is in tensor_out. */
static void req_finish_tensor(srv_infer *q, srv_infer_request *j) {
    req_end(j, DAE_OK, "");
    atomic_fetch_add_explicit(&q->metrics->images_denoised, (unsigned long long)j->tensor_n, memory_order_relaxed);
    atomic_fetch_add_explicit(&q->metrics->pixels_denoised, (unsigned long long)j->pixels, memory_order_relaxed);
}

/* Copies tiles [first, first + n) of j into tiles. */
static void req_extract(const srv_infer_request *j, int first, int n, float *tiles, size_t tile) {
    if (j->kind == SRV_INFER_TENSOR)
        memcpy(tiles, j->tensor_in + sizeof(float) * tile * (size_t)first, sizeof(float) * tile * (size_t)n);
    else dae_denoise_extract(&j->pipe, first, n, tiles);
}

/* Takes the outputs of tiles [first, first + n) of j (under j->acc_mu). */
static void req_accumulate(srv_infer_request *j, int first, int n, const float *outputs, size_t tile) {
    if (j->kind == SRV_INFER_TENSOR)
        memcpy(j->tensor_out + sizeof(float) * tile * (size_t)first, outputs, sizeof(float) * tile * (size_t)n);
    else dae_denoise_accumulate(&j->pipe, first, n, outputs);
}

/* ------------------------------------------------------------ batching */

/* Claims up to b's free room of j's unclaimed tiles (within one plane)
 * into b. Called with q->mu held, j READY and in the list. */
static void claim(srv_infer *q, batch *b, srv_infer_request *j) {
    int room = q->max_batch - b->tiles;
    const int plane_tiles = j->pipe.plan.count;
    int plane_end = (j->next_tile / plane_tiles + 1) * plane_tiles;
    int n = plane_end - j->next_tile < room ? plane_end - j->next_tile : room;
    segment *last = b->n_seg > 0 ? &b->seg[b->n_seg - 1] : NULL;
    if (last != NULL && last->req == j && last->first + last->n == j->next_tile &&
        last->first / plane_tiles == j->next_tile / plane_tiles) {
        last->n += n;
    } else {
        b->seg[b->n_seg++] = (segment){j, j->next_tile, n};
        j->in_flight++;
    }
    if (b->model == NULL) b->model = j->model;
    if (b->tiles == 0) b->big = req_is_big(j);
    if (b->tiles == 0 || j->t_enqueue < b->oldest) b->oldest = j->t_enqueue;
    b->tiles += n;
    j->next_tile += n;
    if (j->next_tile == j->pipe.tiles) {
        list_remove(q, j);
        q->n_ready--;
        j->state = REQ_CLAIMED;
    } else if (j->next != NULL) {
        /* Round robin: the rest of a big request waits behind the others. */
        list_remove(q, j);
        list_append(q, j);
    }
}

/* The first request in the list that batch b can take: a new request to decode
 * (any when b is empty, small ones otherwise), or a ready request of b's
 * model with tiles left and none in another worker's batch. One worker at
 * a time per request keeps each pixel's tile contributions added in tile
 * order, so a request's answer does not depend on timing (float addition
 * is not associative); other requests keep the other workers busy. Big and
 * small requests never share a batch: a small request then waits for a few
 * small tiles, not for a batch full of a big image's, and with two or
 * more workers one of them is always free of the big request (it is in one
 * batch at a time). Small requests go to at most q->small_limit batches at
 * once (a batch without a small slot, when all are held, takes big ones
 * only): on a machine whose cores the workers would fill, the event loop
 * keeps one, which small requests need nearly as much as their forward
 * passes. */
static srv_infer_request *next_eligible(srv_infer *q, const batch *b) {
    const int small_ok = b->small_slot || q->small_running < q->small_limit;
    for (srv_infer_request *j = q->head; j != NULL; j = j->next) {
        if (!small_ok && !req_is_big(j)) continue;
        if (j->state == REQ_NEW && (b->tiles == 0 || (!req_is_big(j) && !b->big))) return j;
        if (j->state == REQ_READY && (b->model == NULL || b->model == j->model) &&
            (j->in_flight == 0 || j->batch_stamp == b->id) && (b->tiles == 0 || req_is_big(j) == b->big))
            return j;
    }
    return NULL;
}

static int has_work(const srv_infer *q) { return q->n_new > 0 || q->n_ready > 0; }

/* Whether a sleeping worker could take some of the queue's work now (the
 * workers holding the small slots take more small requests themselves when
 * their batches end). Called with q->mu held. */
static int work_for_another(const srv_infer *q) {
    return has_work(q) && (q->n_big_listed > 0 || q->small_running < q->small_limit);
}

/* Fills b from the queue until it is full or nothing eligible is left.
 * Called with q->mu held. New requests are decoded in groups (as many as the
 * batch has room for) with the lock dropped once per group; noise requests
 * and failures end there and are retired onto b->completed. */
static void gather(srv_infer *q, batch *b) {
    while (b->tiles < q->max_batch && b->n_seg < q->max_batch) {
        srv_infer_request *j = next_eligible(q, b);
        if (j == NULL) return;
        if (!req_is_big(j) && !b->small_slot) {
            b->small_slot = 1;
            q->small_running++;
        }
        if (j->state == REQ_READY) {
            if (j->batch_stamp != b->id) {
                j->batch_stamp = b->id;
                b->n_reqs++;
            }
            claim(q, b, j);
            continue;
        }
        /* New requests: this one and the small ones after it, one per free tile. */
        int n = 0, room = q->max_batch - b->tiles;
        double now = dae_now_s();
        for (srv_infer_request *k = j; k != NULL && n < room; k = k->next) {
            if (k->state != REQ_NEW || (n > 0 && k->pixels > SMALL_REQ_PIXELS)) continue;
            if (b->tiles > 0 && k->pixels > SMALL_REQ_PIXELS) continue;
            k->state = REQ_PREPARING;
            q->n_new--;
            k->queue_wait_s = now - k->t_enqueue;
            b->decode[n++] = k;
            if (k->pixels > SMALL_REQ_PIXELS) break; /* a big one goes alone */
        }
        pthread_mutex_unlock(&q->mu);
        for (int i = 0; i < n; i++) {
            srv_infer_request *k = b->decode[i];
            srv_hist_observe(&q->metrics->queue_wait, k->queue_wait_s);
            if (k->kind == SRV_INFER_NOISE) req_run_noise(q, k); /* ends it: a PNG or an error */
            else if (k->kind == SRV_INFER_TENSOR) req_prepare_tensor(k);
            else req_prepare_denoise(q, k);                    /* ends it on failure */
        }
        pthread_mutex_lock(&q->mu);
        for (int i = 0; i < n; i++) {
            srv_infer_request *k = b->decode[i];
            if (k->cancelled) req_stopped(k);
            if (k->ended) { /* its work ends here */
                if (!k->cancelled) list_remove(q, k); /* cancel_all already took it off */
                req_retire(q, k);
                k->next = b->completed;
                b->completed = k;
            } else {
                k->state = REQ_READY;
                q->n_ready++;
            }
        }
    }
}

/* ------------------------------------------------------------ workers */

/* Makes w's tile buffers fit max_batch tiles of tile_floats floats.
 * Returns 0, or -1 when out of memory. */
static int worker_buffers(worker *w, size_t tile_floats) {
    if (w->tile_floats >= tile_floats) return 0;
    size_t n = tile_floats * (size_t)w->q->max_batch;
    float *in = realloc(w->tiles_in, sizeof(float) * n);
    if (in == NULL) return -1;
    w->tiles_in = in;
    float *out = realloc(w->tiles_out, sizeof(float) * n);
    if (out == NULL) return -1;
    w->tiles_out = out;
    w->tile_floats = tile_floats;
    return 0;
}

/* Blends and encodes each request of list (linked through next; their tiles
 * are all done, or they are cancelled), retires them under one lock and
 * hands them back. Called without q->mu. */
static void finish_and_deliver(srv_infer *q, srv_infer_request *list) {
    if (list == NULL) return;
    for (srv_infer_request *j = list; j != NULL; j = j->next) {
        if (j->cancelled) req_stopped(j);
        else if (j->kind == SRV_INFER_TENSOR) req_finish_tensor(q, j);
        else req_finish_denoise(q, j);
        req_release(j);
    }
    pthread_mutex_lock(&q->mu);
    for (srv_infer_request *j = list; j != NULL; j = j->next) req_retire(q, j);
    if (q->stopping) pthread_cond_broadcast(&q->work); /* workers waiting for these tiles may now exit */
    pthread_mutex_unlock(&q->mu);
    deliver_all(q, list);
}

/* Runs batch b: extract every segment's tiles, one forward pass,
 * accumulate, then finish and complete the requests whose last tiles these
 * were. Called without q->mu. */
static void run_batch(worker *w, batch *b) {
    srv_infer *q = w->q;
    srv_model *model = b->model;
    const size_t tile = (size_t)model->net.in_h * (size_t)model->net.in_w;
    dae_workspace *ws = srv_model_workspace(model, w->index);
    int ok = ws != NULL && worker_buffers(w, tile) == 0;
    if (ok) {
        size_t off = 0;
        for (int s = 0; s < b->n_seg; s++) {
            const segment *sg = &b->seg[s];
            req_extract(sg->req, sg->first, sg->n, w->tiles_in + off * tile, tile);
            off += (size_t)sg->n;
        }
        double t0 = dae_now_s();
        dae_model_forward(&model->net, ws, w->tiles_in, w->tiles_out, b->tiles);
        srv_hist_observe(&q->metrics->inference, dae_now_s() - t0);
        srv_hist_observe(&q->metrics->batch_tiles, b->tiles);
        srv_hist_observe(&q->metrics->batch_requests, b->n_reqs);
        atomic_fetch_add_explicit(&q->metrics->tiles_denoised, (unsigned long long)b->tiles, memory_order_relaxed);
        off = 0;
        for (int s = 0; s < b->n_seg; s++) {
            const segment *sg = &b->seg[s];
            srv_infer_request *j = sg->req;
            pthread_mutex_lock(&j->acc_mu);
            req_accumulate(j, sg->first, sg->n, w->tiles_out + off * tile, tile);
            pthread_mutex_unlock(&j->acc_mu);
            off += (size_t)sg->n;
        }
    }
    /* Bookkeeping; the requests whose work is over are chained through
     * their next pointers (they are off the list). */
    srv_infer_request *finished = NULL;
    int wake = 0;
    pthread_mutex_lock(&q->mu);
    for (int s = 0; s < b->n_seg; s++) {
        srv_infer_request *j = b->seg[s].req;
        j->done_tiles += b->seg[s].n;
        if (!ok && !j->cancelled) {
            req_end(j, DAE_ERR_NOMEM, "out of memory for an inference batch");
            j->cancelled = 1; /* stop handing out its tiles */
            if (j->state == REQ_READY) {
                list_remove(q, j);
                q->n_ready--;
                j->state = REQ_CLAIMED;
            }
        }
        if (--j->in_flight == 0 && (j->cancelled || j->done_tiles == j->pipe.tiles)) {
            j->next = finished;
            finished = j;
        } else if (j->in_flight == 0 && j->state == REQ_READY) {
            wake = 1; /* its remaining tiles are free for any worker again */
        }
    }
    if (wake) pthread_cond_broadcast(&q->work);
    pthread_mutex_unlock(&q->mu);
    /* Small requests first, together: blend and encode them, retire them
     * under one lock and hand them back, so the HTTP thread wakes once for
     * the lot. Then the big ones one by one, so a small answer never
     * waits for a big image's blending and encoding. */
    srv_infer_request *small = NULL, *big = NULL;
    while (finished != NULL) {
        srv_infer_request *j = finished;
        finished = j->next;
        srv_infer_request **to = j->pixels <= SMALL_REQ_PIXELS ? &small : &big;
        j->next = *to;
        *to = j;
    }
    finish_and_deliver(q, small);
    while (big != NULL) {
        srv_infer_request *j = big;
        big = j->next;
        j->next = NULL;
        finish_and_deliver(q, j);
    }
}

/* A worker's scheduling policy (no privilege needed; where the kernel
 * refuses, the worker runs as before). SCHED_BATCH: a worker that a new
 * request wakes does not preempt the thread that woke it, the event loop,
 * nor a client on the same cores; it runs when they wait or their slice
 * ends, and finds more requests to batch by then. On two cores shared
 * with wrk at concurrency 64 (AVX2 path) that took 0.25-0.29 context
 * switches a request to 0.22-0.23 and the passes from 11.6-13.2 tiles to
 * 13.4-13.5 (README, "HTTP benchmark"). Nor would it preempt a training
 * job's thread, and a request beside one waited for the job's slice to
 * end: so while a job runs the workers are preemptive (SCHED_OTHER). That
 * took the p99 at concurrency 4 beside a job from 4.10 to 3.69 ms
 * (medians), for ~8% of the job's steps in the meantime. */
static void worker_policy(pthread_t thread, int preemptive) {
    (void)pthread_setschedparam(thread, preemptive ? SCHED_OTHER : SCHED_BATCH, &(struct sched_param){0});
}

static void *worker_main(void *arg) {
    worker *w = arg;
    srv_infer *q = w->q;
    char name[16];
    snprintf(name, sizeof name, "dae-worker-%d", w->index);
    pthread_setname_np(pthread_self(), name);
    batch b = {0};
    b.seg = w->seg;
    b.decode = w->decode;
    pthread_mutex_lock(&q->mu);
    worker_policy(pthread_self(), q->preemptive); /* under the lock: srv_infer_set_preemptive's order */
    for (;;) {
        q->small_running -= b.small_slot; /* the last batch's */
        b.small_slot = 0;
        while (!q->stopping && !has_work(q)) pthread_cond_wait(&q->work, &q->mu);
        if (!has_work(q)) break; /* stopping, and nothing left */
        b.model = NULL;
        b.tiles = b.n_seg = b.n_reqs = b.big = 0;
        b.completed = NULL;
        b.id = ++q->batch_serial;
        gather(q, &b);
        if (b.tiles == 0 && b.completed == NULL) {
            /* Work is left, but none this worker may take: the ready requests'
             * tiles are in other workers' batches (one at a time per request).
             * Sleep until a batch gives a request back or a new one comes,
             * rather than spin on the lock and take a core from the
             * workers and the event loop. */
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            ts.tv_nsec += 100 * 1000 * 1000;
            if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
            pthread_cond_timedwait(&q->work, &q->mu, &ts);
            continue;
        }
        /* A positive delay lets a partial batch wait for more tiles. */
        if (q->delay_us > 0 && b.tiles > 0) {
            double deadline = b.oldest + q->delay_us * 1e-6;
            while (b.tiles < q->max_batch && !q->stopping && deadline > dae_now_s()) {
                int before = b.tiles;
                gather(q, &b);
                if (b.completed != NULL) { /* noise requests need not wait for the batch */
                    srv_infer_request *done = b.completed;
                    b.completed = NULL;
                    pthread_mutex_unlock(&q->mu);
                    deliver_all(q, done);
                    pthread_mutex_lock(&q->mu);
                }
                if (b.tiles > before) continue;
                /* Nothing this batch can take (another model's tiles?):
                 * hand that to another worker, and wait. */
                if (has_work(q)) pthread_cond_signal(&q->work);
                struct timespec ts;
                double left = deadline - dae_now_s();
                clock_gettime(CLOCK_MONOTONIC, &ts);
                long long ns = (long long)ts.tv_nsec + (left > 0 ? (long long)(left * 1e9) : 0);
                ts.tv_sec += (time_t)(ns / 1000000000LL);
                ts.tv_nsec = (long)(ns % 1000000000LL);
                pthread_cond_timedwait(&q->work, &q->mu, &ts);
            }
        }
        if (work_for_another(q)) pthread_cond_signal(&q->work);
        pthread_mutex_unlock(&q->mu);
        deliver_all(q, b.completed);
        if (b.tiles > 0) run_batch(w, &b);
        pthread_mutex_lock(&q->mu);
    }
    pthread_mutex_unlock(&q->mu);
    return NULL;
}

/* ------------------------------------------------------------ the API */

srv_infer *srv_infer_start(const srv_config *cfg, srv_metrics *metrics, char *err, size_t errlen) {
    srv_infer *q = calloc(1, sizeof *q);
    if (q == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    q->capacity = cfg->queue_size;
    q->pixel_budget = cfg->queue_pixels;
    q->share_capacity = (int)srv_config_client_part(cfg, cfg->queue_size);
    q->share_pixels = srv_config_client_part(cfg, cfg->queue_pixels);
    q->max_batch = cfg->max_batch;
    q->delay_us = cfg->max_queue_delay_us;
    q->n_workers = cfg->workers;
    q->small_limit = cfg->small_workers < 1 || cfg->small_workers > cfg->workers ? cfg->workers : cfg->small_workers;
    q->metrics = metrics;
    srv_budget_init(&q->budget, cfg->memory_budget, srv_config_client_part(cfg, cfg->memory_budget));
    pthread_mutex_init(&q->mu, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&q->work, &attr);
    pthread_condattr_destroy(&attr);
    /* Our workers split the work; the BLAS must not split it again. */
    dae_gemm_single_threaded();
    q->now.q = q;
    q->now.index = SRV_MAX_WORKERS;
    q->workers = calloc((size_t)q->n_workers, sizeof *q->workers);
    if (q->workers == NULL) {
        snprintf(err, errlen, "out of memory for %d workers", q->n_workers);
        srv_infer_stop(q);
        return NULL;
    }
    for (int i = 0; i < q->n_workers; i++) {
        worker *w = &q->workers[i];
        w->q = q;
        w->index = i;
        w->seg = malloc(sizeof(segment) * (size_t)q->max_batch);
        w->decode = malloc(sizeof(srv_infer_request *) * (size_t)q->max_batch);
        int rc = w->seg == NULL || w->decode == NULL ? ENOMEM : pthread_create(&w->thread, NULL, worker_main, w);
        if (rc != 0) {
            snprintf(err, errlen, "cannot start inference worker %d: %s", i, strerror(rc));
            srv_infer_stop(q);
            return NULL;
        }
        w->started = 1;
    }
    return q;
}

void srv_infer_set_preemptive(srv_infer *q, int preemptive) {
    pthread_mutex_lock(&q->mu);
    if (!q->stopping && q->preemptive != preemptive) { /* stopping: the workers may be gone */
        q->preemptive = preemptive;
        for (int i = 0; i < q->n_workers; i++)
            if (q->workers[i].started) worker_policy(q->workers[i].thread, preemptive);
    }
    pthread_mutex_unlock(&q->mu);
}

dae_status srv_infer_reserve(srv_infer *q, srv_infer_share *share, int count, long long pixels, char *err,
                             size_t errlen) {
    dae_status st = DAE_OK;
    int over_share = 0, held = 0;
    long long held_pixels = 0;
    pthread_mutex_lock(&q->mu);
    if (share != NULL) held = share->requests, held_pixels = share->pixels;
    if (q->closed) st = DAE_ERR_STOPPING;
    else if (q->pending > 0 && (q->pending + count > q->capacity || q->pending_pixels + pixels > q->pixel_budget))
        st = DAE_ERR_BUSY;
    else if (held > 0 && (held + count > q->share_capacity || held_pixels + pixels > q->share_pixels))
        st = DAE_ERR_BUSY, over_share = 1;
    else q->pending += count, q->pending_pixels += pixels;
    if (st == DAE_OK && share != NULL) share->requests += count, share->pixels += pixels;
    pthread_mutex_unlock(&q->mu);
    if (st == DAE_ERR_STOPPING) return dae_fail(err, errlen, st, "the inference queue is closed for shutdown");
    if (over_share)
        return dae_fail(err, errlen, st,
                        "your requests in flight hold %d of the %d places and %lld of the %lld pixels of the queue "
                        "one client may hold (--client-share); retry when they are done",
                        held, q->share_capacity, held_pixels, q->share_pixels);
    if (st == DAE_ERR_BUSY)
        return dae_fail(err, errlen, st,
                        "the server is at capacity (queue of %d requests or %lld pixels full); retry shortly",
                        q->capacity, q->pixel_budget);
    return DAE_OK;
}

/* Readies req's scheduler fields for its run. */
static void req_init(srv_infer_request *req) {
    req->state = REQ_NEW;
    req->cancelled = 0;
    req->ended = 0;
    req->status = DAE_OK;
    req->message[0] = '\0';
    req->png = NULL;
    req->png_len = 0;
    req->next_tile = req->done_tiles = req->in_flight = 0;
    req->batch_stamp = 0;
    memset(&req->img, 0, sizeof req->img);
    memset(&req->pipe, 0, sizeof req->pipe);
    if (req->kind != SRV_INFER_NOISE) pthread_mutex_init(&req->acc_mu, NULL);
    req->t_enqueue = dae_now_s();
}

void srv_infer_enqueue(srv_infer *q, srv_infer_request *req) {
    req_init(req);
    pthread_mutex_lock(&q->mu);
    list_append(q, req);
    q->n_new++;
    /* Unless only a worker holding a small slot may take it (it will when
     * its batch ends), or one gathering for a queue delay wants it. */
    if (q->delay_us > 0 || work_for_another(q)) pthread_cond_signal(&q->work);
    pthread_mutex_unlock(&q->mu);
}

int srv_infer_run_now(srv_infer *q, srv_infer_request *req) {
    if (req->kind == SRV_INFER_NOISE) return 0;
    /* Idle: the caller's reservation is the only one, so nothing is queued,
     * no worker has work, and no other srv_infer_run_now is under way (it
     * holds its reservation until its request is retired): the slot of
     * q->now is free. A queue delay asks for requests to wait for company:
     * then none is run at once. */
    if (q->delay_us > 0) return 0;
    pthread_mutex_lock(&q->mu);
    int idle = !q->closed && q->pending == 1 && q->n_list == 0;
    pthread_mutex_unlock(&q->mu);
    if (!idle) return 0;
    req->done = NULL;
    req_init(req);
    req->state = REQ_PREPARING;
    req->queue_wait_s = 0;
    srv_hist_observe(&q->metrics->queue_wait, 0);
    if (req->kind == SRV_INFER_TENSOR) req_prepare_tensor(req);
    else if (req_prepare_denoise(q, req) != 0) { /* ended: the image did not decode */
        pthread_mutex_lock(&q->mu);
        req_retire(q, req);
        pthread_mutex_unlock(&q->mu);
        req_deliver(q, req);
        return 1;
    }
    /* Every tile is this thread's: run_batch takes them max_batch at a time
     * and finishes, retires and delivers the request with its last. */
    req->state = REQ_CLAIMED;
    segment seg;
    batch b = {.seg = &seg, .n_seg = 1, .n_reqs = 1, .model = req->model};
    const int tiles = req->pipe.tiles;
    while (req->next_tile < tiles && !req->cancelled) {
        int n = tiles - req->next_tile < q->max_batch ? tiles - req->next_tile : q->max_batch;
        seg = (segment){req, req->next_tile, n};
        b.tiles = n;
        req->next_tile += n;
        req->in_flight = 1;
        run_batch(&q->now, &b);
    }
    return 1;
}

void srv_infer_close(srv_infer *q) {
    pthread_mutex_lock(&q->mu);
    q->closed = 1;
    pthread_mutex_unlock(&q->mu);
}

void srv_infer_cancel_all(srv_infer *q) {
    srv_infer_request *now_done = NULL;
    pthread_mutex_lock(&q->mu);
    q->closed = 1;
    while (q->head != NULL) {
        srv_infer_request *j = q->head;
        list_remove(q, j);
        j->cancelled = 1;
        if (j->state == REQ_NEW) q->n_new--;
        if (j->state == REQ_READY) q->n_ready--;
        /* Requests being decoded are finished by their worker; requests with
         * tiles in a forward pass by the worker that returns the last. */
        if (j->state == REQ_NEW || (j->state == REQ_READY && j->in_flight == 0)) {
            req_retire(q, j);
            j->next = now_done;
            now_done = j;
        } else if (j->state == REQ_READY) {
            j->state = REQ_CLAIMED;
        }
    }
    pthread_mutex_unlock(&q->mu);
    for (srv_infer_request *j = now_done; j != NULL; j = j->next) req_stopped(j);
    deliver_all(q, now_done);
}

srv_budget *srv_infer_budget(srv_infer *q) { return &q->budget; }

int srv_infer_pending(srv_infer *q) {
    pthread_mutex_lock(&q->mu);
    int n = q->pending;
    pthread_mutex_unlock(&q->mu);
    return n;
}

void srv_infer_join(srv_infer *q) {
    if (q == NULL) return;
    pthread_mutex_lock(&q->mu);
    q->closed = 1;
    q->stopping = 1;
    pthread_cond_broadcast(&q->work);
    pthread_mutex_unlock(&q->mu);
    for (int i = 0; q->workers != NULL && i < q->n_workers; i++) {
        worker *w = &q->workers[i];
        if (w->started) pthread_join(w->thread, NULL);
        w->started = 0;
    }
}

void srv_infer_stop(srv_infer *q) {
    if (q == NULL) return;
    srv_infer_join(q);
    for (int i = 0; q->workers != NULL && i < q->n_workers; i++) {
        worker *w = &q->workers[i];
        free(w->tiles_in);
        free(w->tiles_out);
        free(w->seg);
        free(w->decode);
    }
    free(q->workers);
    free(q->now.tiles_in);
    free(q->now.tiles_out);
    pthread_cond_destroy(&q->work);
    pthread_mutex_destroy(&q->mu);
    free(q);
}
