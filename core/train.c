/* train.c - the training loop (threads over the batch, fixed-order
 * gradient reduction, Adam) and the training facts a weights file
 * records. Evaluation after an epoch is infer.c's; checkpoint files are
 * io/modelfile.c's. */
#include "train.h"

#include <inttypes.h>
#include <stdarg.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "gemm.h"
#include "rng.h"
#include "train_request.h"

/* The most threads a run may use: the "threads" range of train_request.c. */
enum { MAX_THREADS = 64 };

/* Stream numbers: shuffles and noise draw from disjoint streams. */
#define SHUFFLE_STREAM 0x5348554646ULL /* "SHUFF" */

int dae_online_cpus(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > MAX_THREADS ? MAX_THREADS : (int)n;
}

void dae_train_config_default(dae_train_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->epochs = 10;
    cfg->batch_size = 64;
    cfg->learning_rate = 1e-3f;
    cfg->weight_decay = 1e-5f;
    cfg->seed = 0;
    cfg->threads = 0; /* all online CPUs */
    cfg->noise.kind = DAE_NOISE_GAUSSIAN;
    cfg->noise.level = 0.5f;
}

dae_status dae_train_config_check(const dae_train_config *cfg, char *err, size_t errlen) {
    for (int i = 0; i < DAE_TRAIN_N_PARAMS; i++) {
        dae_status st = dae_train_param_check(&DAE_TRAIN_PARAMS[i], cfg, err, errlen);
        if (st != DAE_OK) return st;
    }
    if (cfg->progress_every < 0)
        return dae_fail(err, errlen, DAE_ERR_INVALID, "the progress interval must not be negative");
    return DAE_OK;
}

size_t dae_train_memory_bytes(const dae_model *m, const dae_train_config *cfg, int n_train) {
    if (n_train < 1) n_train = 1;
    int threads = cfg->threads > 0 ? cfg->threads : dae_online_cpus();
    int batch = cfg->batch_size < n_train ? cfg->batch_size : n_train;
    if (batch < 1) batch = 1;
    int share = (batch + threads - 1) / threads;
    const size_t f = sizeof(float), image = dae_model_image_size(m), params = f * m->n_params;
    /* dae_train: per thread a training workspace for its share of the
     * batch and a gradient buffer; the clean and noisy images of two
     * batches (this step's and the next's) and their states; the shuffle
     * order. */
    size_t per_thread = dae_workspace_bytes(m, share, 1) + params;
    size_t bytes = per_thread * (size_t)threads + 2 * (2 * f * image + sizeof(atomic_int)) * (size_t)batch +
                   sizeof(int) * (size_t)n_train;
    /* The model's weights block (parameters and prepared weights), Adam's
     * two moments, and the PyTorch-layout copy a checkpoint or a saved
     * model is written from. */
    bytes += dae_model_weights_bytes(m) + 3 * params;
    /* dae_evaluate after an epoch: per thread an inference workspace and
     * three chunks of images. */
    if (cfg->eval_each_epoch)
        bytes += (size_t)threads * (dae_workspace_bytes(m, DAE_EVAL_CHUNK, 0) + 3 * f * image * DAE_EVAL_CHUNK);
    return bytes;
}

dae_status dae_train_state_init(dae_train_state *s, const dae_model *m, const dae_train_config *cfg,
                                char *err, size_t errlen) {
    s->epochs_done = 0;
    return dae_adam_init(&s->adam, m->n_params, cfg->learning_rate, cfg->weight_decay, err, errlen);
}

void dae_train_state_free(dae_train_state *s) { dae_adam_free(&s->adam); }

/* ------------------------------------------------------------ one step */

/* A batch's images as the passes read them, clean and noisy, each made
 * once by whichever thread claims it: the thread whose share it is, at the
 * start of its pass, or - for the next step's batch - a thread that has
 * finished its part of this step and would otherwise wait for the others.
 * Two threads spent 3% of a seed network epoch waiting (perf); now 30-38k
 * of its 60k images are made in those waits, 1.7-2.7% more images/s (10
 * and 12 epochs each way, alternating). Made from the thread's own share
 * first: making them in batch order, so that most crossed to the other
 * core, gained nothing. An image is the same bits whoever makes it, so
 * the steps are too. */
enum { IMAGE_FREE, IMAGE_CLAIMED, IMAGE_READY };

typedef struct {
    float *clean, *noisy; /* batch images of image_size floats each */
    atomic_int *state;    /* per image: IMAGE_FREE, _CLAIMED or _READY */
    int start, count;     /* the batch: order[start .. start + count) */
} step_images;

/* The parameters whose gradients the threads' passes make, summed in
 * the update: all but the outer layers' weights, in runs. */
typedef struct {
    size_t begin[DAE_MAX_LAYERS + 1], end[DAE_MAX_LAYERS + 1];
    int n_runs;
    size_t count;
} summed_params;

/* An outer layer's weight (dae_model_outer_layer): its gradient is formed
 * from all the threads' passes where the update applies it, each thread
 * a range of its columns, instead of summed from per-thread gradients.
 * For the 7x7 bottleneck, 95% of the parameters, each thread wrote a
 * whole gradient (800 KB) for its share of the batch, and the update read
 * every thread's back and zeroed it: with those gradients and their
 * updates left out (timing only), a two-thread epoch of the seed network
 * ran 1.30x as fast. Formed here, the seed network trains 2.7% more
 * images/s on two threads, 4% on one; by columns rather than by rows a
 * thread reads half as much of the other threads' activations (+2.4%). */
typedef struct {
    int layer, rows, cols;
    size_t offset;
} outer_weight;

typedef struct {
    const dae_model *m;
    dae_model *model;          /* the same model, writable, for the update */
    dae_adam *adam;
    const dae_train_config *cfg;
    const uint8_t *pixels;     /* training images */
    const int *order;          /* this epoch's shuffled image indices */
    int epoch;                 /* 0-based: the noise stream */
    int threads;
    dae_workspace *ws[MAX_THREADS];
    float *grads[MAX_THREADS];
    double sse[MAX_THREADS];
    summed_params summed;
    outer_weight outer[DAE_MAX_LAYERS];
    int n_outer;
    step_images images[2];      /* this step's and the next one's, in turn */
    step_images *now, *next;    /* next->count is 0 after an epoch's last step */
    atomic_int threads_done;    /* threads past their part of the current job */
} step_ctx;

/* Makes image i of batch b (order[b->start + i] of the data set): clean
 * and noisy floats for this epoch. */
static void make_image(const step_ctx *c, step_images *b, int i) {
    size_t n = dae_model_image_size(c->m);
    int index = c->order[b->start + i];
    if (i + 1 < b->count) { /* the next image's pixels, while this one's noise is made */
        const char *next = (const char *)(c->pixels + (size_t)c->order[b->start + i + 1] * n);
        for (size_t at = 0; at < n; at += 64) __builtin_prefetch(next + at, 0, 3);
        __builtin_prefetch(next + n - 1, 0, 3);
    }
    dae_noise_pixels(&c->cfg->noise, c->pixels + (size_t)index * n, b->clean + i * n, b->noisy + i * n, n,
                     c->cfg->seed, ((uint64_t)c->epoch << 32) | (uint32_t)index);
    atomic_store_explicit(&b->state[i], IMAGE_READY, memory_order_release);
}

/* Claims image i of b; 1 when this thread is to make it. */
static int claim_image(step_images *b, int i) {
    int free_state = IMAGE_FREE;
    return atomic_compare_exchange_strong_explicit(&b->state[i], &free_state, IMAGE_CLAIMED,
                                                   memory_order_acquire, memory_order_acquire);
}

/* Until every thread is past its part of the job (threads_done), makes
 * images of the next step's batch no thread has claimed: thread index's
 * own share first (read where they were made), then the others'. */
static void make_next_while_waiting(step_ctx *c, int index, int count) {
    atomic_fetch_add_explicit(&c->threads_done, 1, memory_order_acq_rel);
    step_images *b = c->next;
    int lo = dae_pool_split(b->count, index, count);
    for (int k = 0; k < b->count; k++) {
        if (atomic_load_explicit(&c->threads_done, memory_order_acquire) >= count) return;
        int i = (lo + k) % b->count;
        if (claim_image(b, i)) make_image(c, b, i);
    }
}

/* Forward and backward of thread `index`'s share of the batch, its
 * images made first (those no other thread has). */
static void step_pass(void *arg, int index, int count) {
    step_ctx *c = arg;
    step_images *b = c->now;
    int lo = dae_pool_split(b->count, index, count);
    int hi = dae_pool_split(b->count, index + 1, count);
    size_t n = dae_model_image_size(c->m);
    c->sse[index] = 0.0; /* grads[index] is zero: from calloc, then from each update */
    if (hi > lo) {
        for (int i = lo; i < hi; i++)
            if (claim_image(b, i)) make_image(c, b, i);
        for (int i = lo; i < hi; i++)
            while (atomic_load_explicit(&b->state[i], memory_order_acquire) != IMAGE_READY) dae_spin_pause();
        c->sse[index] = dae_model_train_pass_outer_apart(c->m, c->ws[index], b->noisy + lo * n, b->clean + lo * n,
                                                         hi - lo, n * (size_t)b->count, c->grads[index]);
    }
    make_next_while_waiting(c, index, count);
}

/* Applies Adam to thread `index`'s slice of the summed parameters from
 * the sum of the threads' gradients (always in thread order), zeroing
 * them for the next step, and to its columns of each outer weight from
 * the terms of the batch's images in batch order. */
static void step_update(void *arg, int index, int count) {
    step_ctx *c = arg;
    const summed_params *sp = &c->summed;
    size_t lo = sp->count * (size_t)index / (size_t)count, hi = sp->count * (size_t)(index + 1) / (size_t)count;
    size_t before = 0; /* summed parameters in the runs before run r */
    for (int r = 0; r < sp->n_runs && before < hi; r++) {
        size_t len = sp->end[r] - sp->begin[r], from = lo > before ? lo - before : 0,
               to = hi - before < len ? hi - before : len;
        if (from < to)
            dae_adam_update_sum_range(c->adam, c->model->params, c->grads, c->threads, sp->begin[r] + from,
                                      sp->begin[r] + to);
        before += len;
    }
    dae_outer_part parts[MAX_THREADS];
    int n_parts = 0, passes[MAX_THREADS]; /* the threads whose pass had images */
    for (int t = 0; t < count; t++) {
        int batch = dae_pool_split(c->now->count, t + 1, count) - dae_pool_split(c->now->count, t, count);
        if (batch > 0) passes[n_parts] = t, parts[n_parts++].batch = batch;
    }
    for (int o = 0; o < c->n_outer; o++) {
        const outer_weight *w = &c->outer[o];
        for (int q = 0; q < n_parts; q++)
            dae_model_outer_factors(c->m, c->ws[passes[q]], w->layer, &parts[q].rows, &parts[q].cols);
        int vectors = (w->cols + 15) / 16, c0 = 16 * dae_pool_split(vectors, index, count),
            c1 = 16 * dae_pool_split(vectors, index + 1, count);
        dae_adam_update_outer(c->adam, c->model->params, w->offset, w->rows, w->cols, c0, c1 < w->cols ? c1 : w->cols,
                              parts, n_parts);
    }
    make_next_while_waiting(c, index, count);
}

/* The outer weights of m and the runs of parameters between them. */
static void split_params(const dae_model *m, step_ctx *c) {
    summed_params *sp = &c->summed;
    size_t at = 0;
    sp->n_runs = 0;
    sp->count = 0;
    c->n_outer = 0;
    for (int i = 0; i < m->n_layers; i++) {
        outer_weight w = {.layer = i, .offset = m->layers[i].weight_offset};
        if (!dae_model_outer_layer(m, i, &w.rows, &w.cols)) continue;
        c->outer[c->n_outer++] = w;
        if (w.offset > at) sp->begin[sp->n_runs] = at, sp->end[sp->n_runs++] = w.offset;
        at = w.offset + m->layers[i].weight_count;
    }
    if (m->n_params > at) sp->begin[sp->n_runs] = at, sp->end[sp->n_runs++] = m->n_params;
    for (int r = 0; r < sp->n_runs; r++) sp->count += sp->end[r] - sp->begin[r];
}

/* Makes b the batch order[start .. start + batch) of n images (fewer at
 * the end, none past it) with no image made. */
static void images_reset(step_images *b, int start, int batch, int n) {
    int count = start >= n ? 0 : n - start < batch ? n - start : batch;
    b->start = start;
    b->count = count;
    for (int i = 0; i < count; i++) atomic_store_explicit(&b->state[i], IMAGE_FREE, memory_order_relaxed);
}

static void free_step_buffers(step_ctx *c) {
    for (int t = 0; t < MAX_THREADS; t++) {
        dae_workspace_free(c->ws[t]);
        free(c->grads[t]);
    }
    for (int k = 0; k < 2; k++) {
        free(c->images[k].clean);
        free(c->images[k].noisy);
        free(c->images[k].state);
    }
}

/* ------------------------------------------------------------ the loop */

/* Fisher-Yates shuffle of 0..n-1 drawn from (seed, epoch). */
static void shuffle(int *order, int n, uint64_t seed, int epoch) {
    dae_rng rng;
    dae_rng_seed(&rng, seed ^ SHUFFLE_STREAM, (uint64_t)epoch);
    for (int i = 0; i < n; i++) order[i] = i;
    for (int i = n - 1; i > 0; i--) {
        int j = (int)dae_rng_below(&rng, (uint64_t)i + 1);
        int t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
}

/* Fills p's share of the run done and the time left, from the steps done
 * since this run began at epoch first_epoch (run_steps in all). */
static void run_fraction(dae_train_progress *p, int first_epoch, long run_steps) {
    long done = (long)(p->epoch - 1 - first_epoch) * p->steps_per_epoch + p->step;
    p->run_fraction = run_steps > 0 ? (double)done / (double)run_steps : 1.0;
    if (p->run_fraction > 1.0) p->run_fraction = 1.0;
    p->eta_s = done > 0 ? p->elapsed_s / (double)done * (double)(run_steps - done) : -1.0;
}

dae_status dae_train(dae_model *m, dae_train_state *s, const dae_dataset *data,
                     const dae_train_config *cfg, char *err, size_t errlen) {
    dae_status st = dae_train_config_check(cfg, err, errlen);
    if (st != DAE_OK) return st;
    const dae_idx_images *train = &data->train_images;
    st = dae_model_check_images(m, train, NULL, "given", err, errlen);
    if (st != DAE_OK) return st;
    int n_train = dae_limit_count(cfg->limit, train->count);
    if (n_train < 1) return dae_fail(err, errlen, DAE_ERR_INVALID, "the data set has no training images");
    if (s->adam.n != m->n_params)
        return dae_fail(err, errlen, DAE_ERR_INVALID, "optimiser state is for %zu parameters, the model has %zu",
                        s->adam.n, m->n_params);
    s->adam.lr = cfg->learning_rate;
    s->adam.weight_decay = cfg->weight_decay;

    int threads = cfg->threads > 0 ? cfg->threads : dae_online_cpus();
    int batch = cfg->batch_size < n_train ? cfg->batch_size : n_train;
    int share = (batch + threads - 1) / threads;
    size_t image = dae_model_image_size(m);
    step_ctx c = {.m = m, .model = m, .adam = &s->adam, .cfg = cfg, .pixels = train->pixels,
                  .threads = threads};
    split_params(m, &c);
    int *order = malloc(sizeof(int) * (size_t)n_train);
    dae_pool *pool = NULL;
    int ok = order != NULL;
    for (int t = 0; t < threads && ok; t++) {
        c.ws[t] = dae_workspace_new(m, share, 1);
        c.grads[t] = calloc(m->n_params, sizeof(float));
        ok = c.ws[t] && c.grads[t];
    }
    for (int k = 0; k < 2 && ok; k++) {
        step_images *b = &c.images[k];
        b->clean = malloc(sizeof(float) * image * (size_t)batch);
        b->noisy = malloc(sizeof(float) * image * (size_t)batch);
        b->state = calloc((size_t)batch, sizeof(atomic_int));
        ok = b->clean && b->noisy && b->state;
    }
    if (ok) {
        dae_gemm_single_threaded();
        ok = (pool = dae_pool_new(threads)) != NULL;
    }
    if (!ok) {
        free_step_buffers(&c);
        free(order);
        return dae_fail(err, errlen, DAE_ERR_NOMEM, "out of memory for training buffers");
    }

    m->training = 1; /* the packed weights wait for the last step (model.h) */
    dae_train_progress p = {0};
    p.epochs = cfg->epochs;
    p.steps_per_epoch = (n_train + batch - 1) / batch;
    int every = cfg->progress_every > 0 ? cfg->progress_every : 1;
    double start = dae_now_s();
    long images_done = 0;
    const int first_epoch = s->epochs_done;
    const long run_steps = (long)(cfg->epochs - first_epoch) * p.steps_per_epoch;
    for (int epoch = s->epochs_done; epoch < cfg->epochs && st == DAE_OK; epoch++) {
        shuffle(order, n_train, cfg->seed, epoch);
        c.order = order;
        c.epoch = epoch;
        p.epoch = epoch + 1;
        p.epoch_done = p.has_test = 0;
        double loss_sum = 0.0;
        for (long step = 0; step < p.steps_per_epoch; step++) {
            if (cfg->cancel != NULL && atomic_load(cfg->cancel)) {
                st = dae_fail(err, errlen, DAE_ERR_CANCELLED, "training cancelled in epoch %d", epoch + 1);
                break;
            }
            /* This step's batch is the one the last step's waiting threads
             * began to make (none at an epoch's start), the next one the
             * other. */
            c.now = &c.images[step % 2];
            c.next = &c.images[(step + 1) % 2];
            if (step == 0) images_reset(c.now, 0, batch, n_train);
            images_reset(c.next, (int)((step + 1) * batch), batch, n_train);
            atomic_store(&c.threads_done, 0);
            dae_pool_run(pool, step_pass, &c);
            dae_adam_begin_step(&s->adam);
            atomic_store(&c.threads_done, 0);
            dae_pool_run(pool, step_update, &c);
            dae_model_params_changed(m);
            double sse = 0.0;
            for (int t = 0; t < threads; t++) sse += c.sse[t];
            images_done += c.now->count;
            p.loss = sse / ((double)c.now->count * image);
            loss_sum += p.loss;
            p.step = step + 1;
            p.total_steps = s->adam.step;
            p.epoch_loss = loss_sum / (double)p.step;
            p.elapsed_s = dae_now_s() - start;
            p.images_per_s = images_done / (p.elapsed_s > 0 ? p.elapsed_s : 1e-9);
            run_fraction(&p, first_epoch, run_steps);
            if (cfg->progress != NULL && p.step < p.steps_per_epoch && p.step % every == 0)
                cfg->progress(&p, cfg->user);
        }
        if (st != DAE_OK) break;
        s->epochs_done = epoch + 1;
        p.epoch_done = 1;
        if (cfg->eval_each_epoch) {
            dae_quality q = {0}, qn = {0};
            const dae_idx_images *test = &data->test_images;
            int n_test = dae_limit_count(cfg->eval_limit, test->count);
            st = dae_evaluate(m, pool, test->pixels, n_test, &cfg->noise, DAE_EVAL_SEED, &q, &qn, err, errlen);
            p.has_test = st == DAE_OK;
            p.test_mse = dae_quality_mse(&q);
            p.test_psnr = dae_quality_psnr(&q);
            p.test_ssim = dae_quality_ssim(&q);
        }
        p.elapsed_s = dae_now_s() - start;
        run_fraction(&p, first_epoch, run_steps);
        if (cfg->progress != NULL && st == DAE_OK) cfg->progress(&p, cfg->user);
    }
    m->training = 0;
    dae_model_params_changed(m);
    dae_pool_free(pool);
    free_step_buffers(&c);
    free(order);
    return st;
}

/* ------------------------------------------------------------ metadata */

void dae_train_meta_add(dae_train_meta *meta, const char *key, const char *value) {
    if (meta->n >= DAE_TRAIN_META_MAX) return;
    meta->keys[meta->n] = key;
    meta->values[meta->n] = value;
    meta->n++;
}

/* Appends key = the printf-formatted value, kept in meta's own storage. */
__attribute__((format(printf, 3, 4))) static void meta_addf(dae_train_meta *meta, const char *key,
                                                            const char *fmt, ...) {
    if (meta->n >= DAE_TRAIN_META_MAX) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(meta->text[meta->n], DAE_TRAIN_META_VALUE_LEN, fmt, ap);
    va_end(ap);
    dae_train_meta_add(meta, key, meta->text[meta->n]);
}

void dae_train_meta_init(dae_train_meta *meta, const dae_train_config *cfg, const dae_train_state *s,
                         const dae_train_facts *facts) {
    char noise[DAE_NOISE_TEXT_LEN], created[32];
    time_t now = time(NULL);
    struct tm utc;
    gmtime_r(&now, &utc);
    strftime(created, sizeof created, "%Y-%m-%dT%H:%M:%SZ", &utc);
    dae_noise_format(&cfg->noise, noise, sizeof noise);
    meta->n = 0;
    dae_train_meta_add(meta, "dataset", facts->dataset);
    meta_addf(meta, "epochs", "%d", s->epochs_done);
    meta_addf(meta, "batch_size", "%d", cfg->batch_size);
    meta_addf(meta, "learning_rate", "%g", (double)cfg->learning_rate);
    meta_addf(meta, "weight_decay", "%g", (double)cfg->weight_decay);
    meta_addf(meta, "noise", "%s", noise);
    meta_addf(meta, "seed", "%llu", (unsigned long long)cfg->seed);
    meta_addf(meta, "train_images", "%d", facts->train_images);
    meta_addf(meta, "threads", "%d", facts->threads);
    meta_addf(meta, "train_seconds", "%.1f", facts->seconds);
    meta_addf(meta, "created", "%s", created);
    dae_train_meta_add(meta, "dae_version", facts->program_version);
    if (facts->has_loss) meta_addf(meta, "final_loss", "%.6g", facts->final_loss);
    if (facts->test_images > 0) {
        meta_addf(meta, "test_images", "%d", facts->test_images);
        meta_addf(meta, "test_noise", "%s", noise);
        meta_addf(meta, "test_seed", "%llu", (unsigned long long)DAE_EVAL_SEED);
        meta_addf(meta, "test_mse", "%.6g", facts->test_mse);
        meta_addf(meta, "test_psnr", "%.4f", facts->test_psnr);
        meta_addf(meta, "test_ssim", "%.4f", facts->test_ssim);
    }
}
