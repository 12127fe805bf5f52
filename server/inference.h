/* inference.h - the inference workers: a bounded queue of image jobs
 * served by N threads that batch 28x28 tiles of several requests into one
 * forward pass.
 *
 * A job is one request's image: the HTTP layer checks it cheaply (size,
 * header), reserves a place (srv_infer_reserve: a full queue answers 503
 * at once), suspends its connection and enqueues the job; a worker
 * decodes it, begins a denoising pipeline over it (core/tile.h: the
 * job's tiles are cut from its 8-bit image), and the tiles of all
 * queued jobs of the same model are gathered into batches of at most
 * max_batch tiles. With max_queue_delay_us 0 (the default) a worker runs
 * whatever is queued when it becomes free, so batches grow with the load
 * and an idle server answers at once; a positive delay lets a partial
 * batch wait that long for more. A job larger than one batch is spread
 * over several batches and workers, taking turns with the other jobs
 * (round robin), so one big image does not hold up small ones; big and
 * small jobs never share a batch, and a worker with nothing it may take
 * sleeps rather than spin. The worker that accumulates a job's last tile
 * blends the tiles back into the job's image, encodes the PNG and calls
 * the job's done function, from which the HTTP layer resumes the
 * connection.
 *
 * Memory: the submitter reserves a job's worst case from the memory
 * budget (srv_infer_budget, budget.h) before enqueueing it; the worker
 * lowers the reservation once the decoded channels are known and, when the
 * job is done, to the size of its PNG, which the submitter gives back with
 * the answer.
 *
 * Noise jobs (POST /noise) take the same queue and are done in one step by
 * the worker that picks them up. */
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
    SRV_JOB_DENOISE,
    SRV_JOB_NOISE,
} srv_job_kind;

typedef struct srv_job srv_job;

/* Called once per job, on a worker thread, when its result (or error) is
 * ready; the scheduler does not touch the job afterwards. */
typedef void (*srv_job_done_fn)(srv_job *job);

struct srv_job {
    /* Set by the submitter before srv_infer_enqueue. */
    srv_job_kind kind;
    const uint8_t *input;     /* the image file's bytes, borrowed until done */
    size_t input_len;
    size_t max_pixels;        /* decoding limit */
    long long pixels;         /* width * height from the header probe */
    srv_model *model;         /* denoise: a reference the submitter holds */
    dae_noise_spec noise;     /* noise */
    uint64_t seed;            /* noise */
    int png_level;            /* zlib level for large PNGs */
    long long mem_reserved;   /* bytes of srv_infer_budget() this job holds: taken
                                 by the submitter before enqueueing; the
                                 scheduler gives back what the job no longer
                                 needs, keeping png_len for the answer, and the
                                 submitter gives back the rest when the answer
                                 is sent */
    srv_job_done_fn done;
    void *user;

    /* The result, valid in done(). */
    int http_status;          /* 200, or an error status */
    const char *error_code;   /* static snake_case code of an error */
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
    double t_enqueue;
    dae_image img;
    dae_denoise_pipe pipe;         /* denoise: over img; pipe.tiles tiles in all */
    int next_tile, done_tiles, in_flight;
    unsigned long batch_stamp;     /* the last batch that counted this job */
    pthread_mutex_t acc_mu;        /* guards pipe's accumulation between workers */
    srv_job *prev, *next;
};

typedef struct srv_infer srv_infer;

/* What srv_infer_reserve answers. */
typedef enum {
    SRV_RESERVE_OK = 0,
    SRV_RESERVE_FULL,     /* queue_size requests or queue_pixels pixels pending */
    SRV_RESERVE_STOPPING, /* draining for shutdown */
} srv_reserve;

/* Starts cfg->workers worker threads with cfg's batching and queue
 * limits and a memory budget of cfg->memory_budget bytes; observations go
 * to metrics. Returns NULL and fills err. */
srv_infer *srv_infer_start(const srv_config *cfg, srv_metrics *metrics, char *err, size_t errlen);

/* The memory budget of the requests in flight (bodies and jobs), which
 * the HTTP layer charges before allocating; lives as long as q. */
srv_budget *srv_infer_budget(srv_infer *q);

/* Reserves a place for a job of pixels pixels (always granted to the
 * first pending job, so one maximal image always fits). */
srv_reserve srv_infer_reserve(srv_infer *q, long long pixels);

/* Queues job (after a successful reserve of job->pixels). Never fails. */
void srv_infer_enqueue(srv_infer *q, srv_job *job);

/* Stops admitting (reserve answers SRV_RESERVE_STOPPING). */
void srv_infer_close(srv_infer *q);

/* Finishes every pending job at once with 503 "shutting_down" (jobs in a
 * forward pass finish that pass first). */
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
