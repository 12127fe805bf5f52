/* inference.h - the inference workers: a bounded queue of image requests
 * served by N threads that batch 28x28 tiles of several requests into one
 * forward pass. ("Request" here is always an image to denoise or noise; a
 * "job" is a training job, training.h.)
 *
 * A request is one HTTP request's image: the HTTP layer checks it cheaply
 * (size, header), reserves a place (srv_infer_reserve: a full queue is
 * refused at once), suspends its connection and enqueues the request; a worker
 * decodes it, begins a denoising pipeline over it (core/tile.h: the
 * request's tiles are cut from its 8-bit image), and the tiles of all
 * queued requests of the same model are gathered into batches of at most
 * max_batch tiles. With max_queue_delay_us 0 (the default) a worker runs
 * whatever is queued when it becomes free, so batches grow with the load
 * and an idle server answers at once (a lone image of one tile is run on
 * the HTTP thread itself: srv_infer_run_now); a positive delay lets a
 * partial batch wait that long for more. A request larger than one batch
 * is spread over several batches and workers, taking turns with the other
 * requests (round robin), so one big image does not hold up small ones; big and
 * small requests never share a batch, and a worker with nothing it may take
 * sleeps rather than spin. Small requests' batches run on at most
 * small_workers workers at once (on a machine the workers would fill, the
 * HTTP thread keeps a core); the other workers take big ones only. The
 * worker that accumulates a request's last tile blends the tiles back into
 * the request's image, encodes the PNG and calls the request's done
 * function, from which the HTTP layer resumes the connection.
 *
 * Memory: the submitter reserves a request's worst case from the memory
 * budget (srv_infer_budget, budget.h) before enqueueing it; the worker
 * lowers the reservation once the decoded channels are known and, when the
 * request is done, to the size of its PNG, which the submitter gives back
 * with the answer.
 *
 * Noise requests (POST /noise) take the same queue and are done in one step
 * by the worker that picks them up. Tensor requests (the v2 protocol's FP32
 * inputs, oip.h) are batches of model inputs given as floats: their
 * "tiles" are the inputs themselves, copied into the batch and their
 * outputs copied back, batched with the tiles of every other request.
 *
 * Errors are the engine's: a request ends with a dae_status and a sentence
 * (DAE_ERR_FORMAT for an image that does not decode, DAE_ERR_TOO_LARGE for
 * one over a limit, DAE_ERR_NOMEM, DAE_ERR_STOPPING when shutdown cancelled
 * it); the HTTP edge (http.c) alone turns them into HTTP statuses. */
#ifndef SRV_INFERENCE_H
#define SRV_INFERENCE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "budget.h"
#include "dae_status.h"
#include "image.h"
#include "metrics.h"
#include "noise.h"
#include "registry.h"
#include "tile.h"

typedef enum {
    SRV_INFER_DENOISE,
    SRV_INFER_NOISE,
    SRV_INFER_TENSOR, /* model inputs as they are (the v2 protocol's FP32 tensors): no image, no tiling */
} srv_infer_kind;

typedef struct srv_infer_request srv_infer_request;

/* One client's part of the queue (clients.h): its requests admitted and
 * not yet done, and their pixels. At most --client-share percent of the
 * queue's places and pixels, so that no one client fills it. Under the
 * queue's lock. */
typedef struct {
    int requests;
    long long pixels;
} srv_infer_share;

/* Called once per request, on a worker thread, when its result (or error)
 * is ready; the scheduler does not touch the request afterwards. */
typedef void (*srv_infer_done_fn)(srv_infer_request *req);

struct srv_infer_request {
    /* Set by the submitter before srv_infer_enqueue. */
    srv_infer_kind kind;
    const uint8_t *input;     /* the image file's bytes, borrowed until done */
    size_t input_len;
    size_t max_pixels;        /* decoding limit */
    long long pixels;         /* width * height from the header probe */
    srv_model *model;         /* denoise: a reference the submitter holds */
    const uint8_t *tensor_in; /* tensor: tensor_n model inputs (in_h x in_w floats each, at any
                                 alignment: straight from a request body), borrowed */
    uint8_t *tensor_out;      /* tensor: room for the tensor_n outputs (as tensor_in), borrowed;
                                 written by the workers */
    int tensor_n;
    dae_noise_spec noise;     /* noise */
    uint64_t seed;            /* noise */
    int png_level;            /* zlib level for large PNGs */
    long long mem_reserved;   /* bytes of srv_infer_budget() this request
                                 holds: taken by the submitter before
                                 enqueueing; the scheduler gives back what
                                 the request no longer needs, keeping png_len
                                 for the answer, and the submitter gives back
                                 the rest when the answer is sent */
    srv_budget_share *share;  /* the client's share mem_reserved counts in (budget.h), or NULL */
    srv_infer_share *queue_share; /* the client's part of the queue the request's place counts in, or NULL */
    srv_infer_done_fn done;   /* NULL after srv_infer_run_now ran it */
    void *user;

    /* The result, valid in done(). */
    dae_status status;        /* DAE_OK with png, or the error message names */
    char message[DAE_ERR_LEN];
    uint8_t *png;             /* malloc'd PNG; the receiver takes it */
    size_t png_len;
    int width, height, channels;
    const char *format;       /* static name of the input's format */
    int source_16bit;
    double queue_wait_s;      /* enqueue to the start of decoding */

    /* Private to the scheduler. */
    int state;
    int cancelled;
    int ended;                     /* status and message are its result */
    double t_enqueue;
    dae_image img;
    dae_denoise_pipe pipe;         /* denoise: over img; pipe.tiles tiles in all */
    int next_tile, done_tiles, in_flight;
    unsigned long batch_stamp;     /* the last batch that counted this request */
    pthread_mutex_t acc_mu;        /* guards pipe's accumulation between workers */
    srv_infer_request *prev, *next;
};

typedef struct srv_infer srv_infer;

/* Starts cfg->workers worker threads with cfg's batching and queue
 * limits and a memory budget of cfg->memory_budget bytes; observations go
 * to metrics. Returns NULL and fills err. */
srv_infer *srv_infer_start(const srv_config *cfg, srv_metrics *metrics, char *err, size_t errlen);

/* The memory budget of the requests in flight (bodies and images), which
 * the HTTP layer charges before allocating; lives as long as q. */
srv_budget *srv_infer_budget(srv_infer *q);

/* Reserves places for count requests of pixels pixels in all, on behalf
 * of share (a client's part of the queue, or NULL); always granted when
 * nothing is pending, so one maximal image, or one v2 batch of images,
 * always fits, and within the client's part when the client has nothing
 * pending. Returns DAE_OK, DAE_ERR_BUSY when queue_size requests or
 * queue_pixels pixels, or the client's part of them, would be pending,
 * or DAE_ERR_STOPPING once the queue is closed, with a sentence in err.
 * Each of the count requests gives its place back when it is done: set
 * each one's queue_share to share. */
dae_status srv_infer_reserve(srv_infer *q, srv_infer_share *share, int count, long long pixels, char *err,
                             size_t errlen);

/* Queues req (after a successful reserve of req->pixels). Never fails. */
void srv_infer_enqueue(srv_infer *q, srv_infer_request *req);

/* Runs the denoise or tensor request req (after a successful reserve) to its end on
 * the calling thread when the scheduler is idle: no other request is
 * reserved, queued or being computed. Handing a lone small image to a
 * worker and waking the HTTP thread again cost more than its forward pass
 * (two thread switches and their system calls). Returns 1 with req's
 * result in (req->done is not called, and is left NULL), or 0 when the
 * scheduler is busy, a queue delay is set (requests are to wait for
 * others) or req is a noise request: then the caller enqueues it.
 * The caller keeps it to small images, as the calling thread is blocked
 * meanwhile. */
int srv_infer_run_now(srv_infer *q, srv_infer_request *req);

/* The workers run under SCHED_BATCH (preemptive 0, the default): one that
 * a request wakes does not preempt the thread running, the event loop or a
 * client, and finds more requests to batch when it runs. Set while a
 * training job runs, they run under SCHED_OTHER and a wake-up preempts the
 * job's threads instead of waiting for their time slice to end. No effect
 * once srv_infer_join began. */
void srv_infer_set_preemptive(srv_infer *q, int preemptive);

/* Stops admitting (reserve answers DAE_ERR_STOPPING). */
void srv_infer_close(srv_infer *q);

/* Finishes every pending request at once with DAE_ERR_STOPPING (requests
 * in a forward pass finish that pass first). */
void srv_infer_cancel_all(srv_infer *q);

/* Requests not yet answered (queued or being computed). */
int srv_infer_pending(srv_infer *q);

/* Waits for the queue to empty, stops and joins the workers; q (and its
 * budget, which the HTTP layer gives back to as its last connections
 * close) stays until srv_infer_stop. NULL is fine. */
void srv_infer_join(srv_infer *q);

/* srv_infer_join, then frees q. NULL is fine. */
void srv_infer_stop(srv_infer *q);

#endif
