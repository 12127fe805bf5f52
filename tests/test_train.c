/* test_train.c - the training loop on the committed mini data set:
 * learning, determinism, resuming, cancelling, evaluation. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <unistd.h>

#include "idx.h"
#include "modelfile.h"
#include "test_util.h"
#include "train.h"

static dae_dataset mini;
static dae_model model;

static void setup(void) {
    char err[DAE_ERR_LEN] = "";
    cr_assert_eq(dae_dataset_load(FIXTURES, "mnist-mini", &mini, err, sizeof err), DAE_OK, "%s", err);
    cr_assert_eq(dae_model_init(&model, dae_model_default_spec(), err, sizeof err), DAE_OK, "%s", err);
    dae_model_init_params(&model, 3);
}

static void teardown(void) {
    dae_model_free(&model);
    dae_dataset_free(&mini);
}

TestSuite(train, .init = setup, .fini = teardown);

static dae_train_config small_config(int epochs, int threads) {
    dae_train_config cfg;
    dae_train_config_default(&cfg);
    cfg.epochs = epochs;
    cfg.batch_size = 16;
    cfg.threads = threads;
    cfg.limit = 512;
    cfg.seed = 9;
    return cfg;
}

/* Trains a copy of the fixture's model; returns it in out. */
static void train_copy(dae_model *out, const dae_train_config *cfg) {
    char err[DAE_ERR_LEN] = "";
    cr_assert_eq(dae_model_clone(out, &model, err, sizeof err), DAE_OK, "%s", err);
    dae_train_state s;
    cr_assert_eq(dae_train_state_init(&s, out, cfg, err, sizeof err), DAE_OK, "%s", err);
    cr_assert_eq(dae_train(out, &s, &mini, cfg, err, sizeof err), DAE_OK, "%s", err);
    cr_assert_eq(s.epochs_done, cfg->epochs);
    dae_train_state_free(&s);
}

typedef struct {
    int calls, epochs_closed, tests;
    double first_epoch_loss, last_epoch_loss, last_test_mse;
    atomic_int *cancel;
    int cancel_after;
} progress_log;

static void log_progress(const dae_train_progress *p, void *user) {
    progress_log *log = user;
    log->calls++;
    cr_assert(p->loss > 0 && isfinite(p->loss) && p->images_per_s > 0);
    if (p->epoch_done) {
        if (log->epochs_closed++ == 0) log->first_epoch_loss = p->epoch_loss;
        log->last_epoch_loss = p->epoch_loss;
        cr_assert_eq(p->step, p->steps_per_epoch);
    }
    if (p->has_test) log->tests++, log->last_test_mse = p->test_mse;
    if (log->cancel && log->calls == log->cancel_after) atomic_store(log->cancel, 1);
}

/* A few hundred steps lower the loss well below the noisy input's error,
 * and the test evaluation after each epoch sees it too. */
Test(train, a_few_hundred_steps_learn_to_denoise) {
    dae_train_config cfg = small_config(8, 2); /* 8 x 32 = 256 steps */
    progress_log log = {0};
    cfg.progress = log_progress;
    cfg.user = &log;
    cfg.eval_each_epoch = 1;
    dae_model trained;
    train_copy(&trained, &cfg);
    cr_assert_eq(log.epochs_closed, 8);
    cr_assert_eq(log.tests, 8);
    cr_assert_eq(log.calls, 8 * 32);
    cr_assert(log.last_epoch_loss < 0.6 * log.first_epoch_loss, "epoch loss %g -> %g", log.first_epoch_loss,
              log.last_epoch_loss);
    dae_quality q = {0}, qn = {0};
    char err[DAE_ERR_LEN];
    cr_assert_eq(dae_evaluate(&trained, NULL, mini.test_images.pixels, 256, &cfg.noise, DAE_EVAL_SEED, &q, &qn,
                              err, sizeof err), DAE_OK);
    cr_assert_float_eq(dae_quality_mse(&q), log.last_test_mse, 1e-9,
                       "evaluation is reproducible (and the packed weights were remade after the last step)");
    cr_assert(dae_quality_mse(&q) < 0.5 * dae_quality_mse(&qn), "denoised %g vs noisy %g", dae_quality_mse(&q),
              dae_quality_mse(&qn));
    cr_assert(dae_quality_psnr(&q) > dae_quality_psnr(&qn) + 3.0);
    /* Early on the output is a blurred digit: its SSIM is still below the
     * noisy input's, but far above the untrained network's. */
    dae_quality q0 = {0}, qn0 = {0};
    cr_assert_eq(dae_evaluate(&model, NULL, mini.test_images.pixels, 256, &cfg.noise, DAE_EVAL_SEED, &q0, &qn0,
                              err, sizeof err), DAE_OK);
    cr_assert(dae_quality_ssim(&q) > dae_quality_ssim(&q0) + 0.05, "ssim %g, untrained %g", dae_quality_ssim(&q),
              dae_quality_ssim(&q0));
    dae_model_free(&trained);
}

Test(train, same_seed_and_threads_give_identical_weights) {
    for (int threads = 1; threads <= 2; threads++) {
        dae_train_config cfg = small_config(1, threads);
        dae_model a, b;
        train_copy(&a, &cfg);
        train_copy(&b, &cfg);
        cr_assert_eq(memcmp(a.params, b.params, a.n_params * 4), 0, "%d threads differ", threads);
        cfg.seed = 10;
        dae_model c;
        train_copy(&c, &cfg);
        cr_assert_neq(memcmp(a.params, c.params, a.n_params * 4), 0, "another seed, other weights");
        dae_model_free(&a), dae_model_free(&b), dae_model_free(&c);
    }
}

/* Each step's loss, from the progress callback. */
enum { LOSSES_MAX = 64 };
typedef struct {
    int n;
    double loss[LOSSES_MAX];
} loss_log;

static void log_step_loss(const dae_train_progress *p, void *user) {
    loss_log *log = user;
    if (!p->epoch_done && log->n < LOSSES_MAX) log->loss[log->n++] = p->loss;
}

/* A thread that has finished its part of a step makes images of the next
 * step's batch, its own share or another thread's. Every step still
 * trains on its own batch: with three threads on a batch of 13 (shares of
 * 5, 4 and 4, the last batch of an epoch 1 image), each step's loss is
 * one thread's (which makes every image itself) up to the rounding that
 * three threads' gradient sums add. */
Test(train, every_step_trains_on_its_batch_whichever_thread_made_the_images) {
    loss_log one = {0}, three = {0};
    for (int threads = 1; threads <= 3; threads += 2) {
        dae_train_config cfg = small_config(2, threads);
        cfg.batch_size = 13;
        cfg.limit = 261; /* 20 full steps and one of a single image an epoch */
        cfg.progress = log_step_loss;
        cfg.user = threads == 1 ? &one : &three;
        dae_model m;
        train_copy(&m, &cfg);
        dae_model_free(&m);
    }
    cr_assert_eq(one.n, 2 * 20, "steps reported (the last of each epoch closes it)");
    cr_assert_eq(three.n, one.n);
    for (int i = 0; i < one.n; i++)
        cr_expect(fabs(three.loss[i] - one.loss[i]) <= 1e-6 * one.loss[i], "step %d: loss %.9g on 3 threads, %.9g on 1",
                  i + 1, three.loss[i], one.loss[i]);
}

/* A network of outer layers only (dae_model_outer_layer), the first one
 * reading the network's input itself: their weight gradients, formed in
 * the update from every thread's images, give each step one thread's loss
 * on three threads (shares of 5, 4 and 4, the epoch's last step one
 * image on one thread), and the loss falls (test_model checks the
 * gradients' factors against the plain pass). */
Test(train, a_network_of_outer_layers_trains_on_any_thread_count) {
    char err[DAE_ERR_LEN] = "";
    loss_log one = {0}, three = {0};
    for (int threads = 1; threads <= 3; threads += 2) {
        dae_model m;
        cr_assert_eq(dae_model_init(&m, OUTER_ONLY_SPEC, err, sizeof err), DAE_OK, "%s", err);
        int outer = 0, rows, cols;
        for (int i = 0; i < m.n_layers; i++) outer += dae_model_outer_layer(&m, i, &rows, &cols);
        cr_assert_eq(outer, 2);
        dae_model_init_params(&m, 5);
        dae_train_config cfg = small_config(2, threads);
        cfg.batch_size = 13;
        cfg.limit = 261;
        cfg.progress = log_step_loss;
        cfg.user = threads == 1 ? &one : &three;
        dae_train_state s;
        cr_assert_eq(dae_train_state_init(&s, &m, &cfg, err, sizeof err), DAE_OK, "%s", err);
        cr_assert_eq(dae_train(&m, &s, &mini, &cfg, err, sizeof err), DAE_OK, "%s", err);
        dae_train_state_free(&s);
        dae_model_free(&m);
    }
    cr_assert_eq(three.n, one.n);
    for (int i = 0; i < one.n; i++)
        cr_expect(fabs(three.loss[i] - one.loss[i]) <= 1e-6 * one.loss[i], "step %d: loss %.9g on 3 threads, %.9g on 1",
                  i + 1, three.loss[i], one.loss[i]);
    cr_assert(one.loss[one.n - 1] < 0.75 * one.loss[0], "loss %g after %g", one.loss[one.n - 1], one.loss[0]);
}

/* Two epochs straight equal one epoch, a checkpoint, and one more. */
Test(train, resuming_from_a_checkpoint_continues_exactly) {
    dae_train_config cfg = small_config(2, 2);
    cfg.limit = 256;
    dae_model straight;
    train_copy(&straight, &cfg);

    char err[DAE_ERR_LEN] = "", dir[64] = "/tmp/dae-test-XXXXXX", path[128];
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/ckpt.safetensors", dir);
    dae_model first;
    cfg.epochs = 1;
    cr_assert_eq(dae_model_clone(&first, &model, err, sizeof err), DAE_OK);
    dae_train_state s;
    cr_assert_eq(dae_train_state_init(&s, &first, &cfg, err, sizeof err), DAE_OK);
    cr_assert_eq(dae_train(&first, &s, &mini, &cfg, err, sizeof err), DAE_OK, "%s", err);
    cr_assert_eq(dae_checkpoint_save(path, &first, &s, err, sizeof err), DAE_OK, "%s", err);
    dae_train_state_free(&s);

    dae_model resumed;
    dae_train_state rs;
    cr_assert_eq(dae_checkpoint_load(path, &resumed, &rs, err, sizeof err), DAE_OK, "%s", err);
    cr_assert_eq(rs.epochs_done, 1);
    cr_assert_eq(rs.adam.step, 16);
    cfg.epochs = 2;
    cr_assert_eq(dae_train(&resumed, &rs, &mini, &cfg, err, sizeof err), DAE_OK, "%s", err);
    cr_assert_eq(memcmp(resumed.params, straight.params, straight.n_params * 4), 0);

    dae_train_state_free(&rs);

    /* A weights file is not a checkpoint. */
    dae_model w;
    cr_assert_eq(dae_model_save(&first, path, NULL, NULL, 0, err, sizeof err), DAE_OK);
    cr_assert_eq(dae_checkpoint_load(path, &w, &rs, err, sizeof err), DAE_ERR_FORMAT);
    cr_assert(strstr(err, "not a dae checkpoint") != NULL, "%s", err);
    unlink(path);
    rmdir(dir);
    dae_train_state_free(&rs);
    dae_model_free(&first), dae_model_free(&resumed), dae_model_free(&straight);
}

Test(train, the_cancel_flag_stops_within_a_step) {
    atomic_int cancel = 0;
    progress_log log = {.cancel = &cancel, .cancel_after = 3};
    dae_train_config cfg = small_config(5, 2);
    cfg.progress = log_progress;
    cfg.user = &log;
    cfg.cancel = &cancel;
    dae_train_state s;
    char err[DAE_ERR_LEN] = "";
    cr_assert_eq(dae_train_state_init(&s, &model, &cfg, err, sizeof err), DAE_OK);
    cr_assert_eq(dae_train(&model, &s, &mini, &cfg, err, sizeof err), DAE_ERR_CANCELLED);
    cr_assert_eq(log.calls, 3);
    cr_assert_eq(s.adam.step, 3);
    cr_assert_eq(s.epochs_done, 0);
    cr_assert(strstr(err, "cancelled") != NULL);
    dae_train_state_free(&s);
}

Test(train, invalid_configurations_name_the_field) {
    static const struct { int field; double value; const char *needle; } cases[] = {
        {0, 0, "epochs"}, {1, 0, "batch_size"}, {2, 0, "learning_rate"}, {2, 2, "learning_rate"},
        {3, -1, "weight_decay"}, {4, -1, "threads"}, {4, 1000, "threads"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        dae_train_config cfg = small_config(1, 1);
        switch (cases[i].field) {
        case 0: cfg.epochs = (int)cases[i].value; break;
        case 1: cfg.batch_size = (int)cases[i].value; break;
        case 2: cfg.learning_rate = (float)cases[i].value; break;
        case 3: cfg.weight_decay = (float)cases[i].value; break;
        case 4: cfg.threads = (int)cases[i].value; break;
        }
        char err[DAE_ERR_LEN] = "";
        cr_assert_eq(dae_train_config_check(&cfg, err, sizeof err), DAE_ERR_INVALID);
        cr_assert(strstr(err, cases[i].needle) != NULL, "%s", err);
    }
}

/* Parallel batched inference gives the same images as one thread. */
Test(train, parallel_forward_matches_single_thread) {
    enum { N = 100 };
    float *in = malloc(N * 784 * 4), *a = malloc(N * 784 * 4), *b = malloc(N * 784 * 4);
    for (int i = 0; i < N * 784; i++) in[i] = mini.test_images.pixels[i] / 255.0f;
    dae_workspace *one = dae_workspace_new(&model, N, 0);
    dae_model_forward(&model, one, in, a, N);
    dae_pool *pool = dae_pool_new(2);
    dae_workspace *ws[2] = {dae_workspace_new(&model, 16, 0), dae_workspace_new(&model, 16, 0)};
    dae_forward_parallel(&model, pool, ws, in, b, N);
    assert_close(b, a, (size_t)N * 784, 1e-6, "parallel forward");
    dae_workspace_free(one), dae_workspace_free(ws[0]), dae_workspace_free(ws[1]);
    dae_pool_free(pool);
    free(in), free(a), free(b);
}
