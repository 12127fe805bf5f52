/* train_run.c - one training run from a typed request (see train_run.h). */
#include "train_run.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "dataset_import.h"
#include "modelfile.h"

struct dae_train_run {
    dae_train_request req; /* a copy; owns its architecture */
    dae_train_config cfg;  /* req.cfg with the callbacks of the current call */
    dae_dataset data;
    dae_model model;
    dae_train_state state;
    int n_train, first_epoch;
    double seconds;
    /* The last epoch this run closed, for the metadata. */
    int epochs_seen;
    double last_loss;
    int has_test;
    double test_mse, test_psnr, test_ssim;
    /* The caller's progress callback. */
    dae_train_progress_fn progress;
    void *user;
};

dae_status dae_train_run_open(dae_train_run **out, const dae_train_request *req, const char *data_dir,
                              const char *resume, char *err, size_t errlen) {
    *out = NULL;
    if (resume != NULL && req->architecture != NULL)
        return dae_fail(err, errlen, DAE_ERR_INVALID, "a resumed run takes its network from the checkpoint %s", resume);
    if (req->base_model != NULL && (resume != NULL || req->architecture != NULL))
        return dae_fail(err, errlen, DAE_ERR_INVALID, "a fine-tuned run takes its network from its base model %s%s",
                        req->base_model, resume != NULL ? ", it cannot resume a checkpoint" : ", not an architecture");
    dae_status st = dae_train_config_check(&req->cfg, err, errlen);
    if (st != DAE_OK) return st;
    dae_train_run *run = calloc(1, sizeof *run);
    if (run == NULL) return dae_fail(err, errlen, DAE_ERR_NOMEM, "out of memory");
    run->req = *req;
    run->req.architecture = req->architecture != NULL ? strdup(req->architecture) : NULL;
    run->req.base_model = req->base_model != NULL ? strdup(req->base_model) : NULL;
    run->req.import_path = NULL; /* read below, not kept */
    run->cfg = req->cfg;
    if (run->cfg.threads == 0) run->cfg.threads = dae_online_cpus();
    if ((req->architecture != NULL && run->req.architecture == NULL) ||
        (req->base_model != NULL && run->req.base_model == NULL))
        st = dae_fail(err, errlen, DAE_ERR_NOMEM, "out of memory");
    if (st == DAE_OK && resume != NULL) {
        st = dae_checkpoint_load(resume, &run->model, &run->state, err, errlen);
    } else if (st == DAE_OK && req->base_model != NULL) {
        st = dae_model_load(&run->model, req->base_model, err, errlen);
        if (st == DAE_OK) st = dae_train_state_init(&run->state, &run->model, &run->cfg, err, errlen);
    } else if (st == DAE_OK) {
        const char *spec = run->req.architecture != NULL ? run->req.architecture : dae_model_default_spec();
        st = dae_model_init(&run->model, spec, err, errlen);
        if (st == DAE_OK) {
            dae_model_init_params(&run->model, req->cfg.seed);
            st = dae_train_state_init(&run->state, &run->model, &run->cfg, err, errlen);
        }
    }
    /* The data set, once the network is known: an import is cut to its
     * input size. */
    if (st == DAE_OK) {
        st = req->import_path != NULL ? dae_dataset_import(req->import_path, NULL, run->model.in_h, run->model.in_w,
                                                           &run->data, NULL, err, errlen)
                                      : dae_dataset_load(data_dir, req->dataset, &run->data, err, errlen);
        /* A data set that is not there is the caller's to report as such. */
        if (st == DAE_ERR_IO) st = DAE_ERR_NOT_FOUND;
    }
    if (st == DAE_OK)
        st = dae_model_check_images(&run->model, &run->data.train_images, resume != NULL ? resume : req->base_model,
                                    req->dataset, err, errlen);
    if (st != DAE_OK) {
        dae_train_run_free(run);
        return st;
    }
    run->n_train = dae_limit_count(run->cfg.limit, run->data.train_images.count);
    run->first_epoch = run->state.epochs_done;
    *out = run;
    return DAE_OK;
}

/* dae_train's callback: notes the epochs' results, then calls the caller's. */
static void on_progress(const dae_train_progress *p, void *user) {
    dae_train_run *run = user;
    if (p->epoch_done) {
        run->epochs_seen++;
        run->last_loss = p->epoch_loss;
        run->has_test = p->has_test;
        run->test_mse = p->test_mse, run->test_psnr = p->test_psnr, run->test_ssim = p->test_ssim;
    }
    if (run->progress != NULL) run->progress(p, run->user);
}

dae_status dae_train_run_train(dae_train_run *run, dae_train_progress_fn progress, void *user,
                               const atomic_int *cancel, char *err, size_t errlen) {
    run->progress = progress;
    run->user = user;
    run->cfg.progress = on_progress;
    run->cfg.user = run;
    run->cfg.progress_every = 1;
    run->cfg.cancel = cancel;
    double start = dae_now_s();
    dae_status st = dae_train(&run->model, &run->state, &run->data, &run->cfg, err, errlen);
    run->seconds += dae_now_s() - start;
    return st;
}

dae_status dae_train_run_save(dae_train_run *run, const char *path, const char *program_version,
                              const char *const *extra_keys, const char *const *extra_values, int n_extra,
                              char *err, size_t errlen) {
    const dae_idx_images *test = &run->data.test_images;
    int n_test = dae_limit_count(run->cfg.eval_limit, test->count);
    if (run->cfg.eval_each_epoch && !run->has_test) {
        dae_quality q = {0}, qn = {0};
        dae_status st = dae_evaluate(&run->model, NULL, test->pixels, n_test, &run->cfg.noise, DAE_EVAL_SEED, &q, &qn,
                                     err, errlen);
        if (st != DAE_OK) return st;
        run->has_test = 1;
        run->test_mse = dae_quality_mse(&q), run->test_psnr = dae_quality_psnr(&q), run->test_ssim = dae_quality_ssim(&q);
    }
    dae_train_facts facts = {
        .dataset = run->req.dataset, .program_version = program_version, .train_images = run->n_train,
        .threads = run->cfg.threads, .seconds = run->seconds, .has_loss = run->epochs_seen > 0,
        .final_loss = run->last_loss, .test_images = run->has_test ? n_test : 0,
        .test_mse = run->test_mse, .test_psnr = run->test_psnr, .test_ssim = run->test_ssim,
    };
    dae_train_meta meta;
    dae_train_meta_init(&meta, &run->cfg, &run->state, &facts);
    char base[DAE_NAME_MAX + 1] = "";
    if (run->req.base_model != NULL) { /* its name: the file's, without directory and extension */
        const char *slash = strrchr(run->req.base_model, '/'), *name = slash != NULL ? slash + 1 : run->req.base_model;
        snprintf(base, sizeof base, "%.*s", (int)strcspn(name, "."), name);
        dae_train_meta_add(&meta, "base_model", base);
    }
    for (int i = 0; i < n_extra; i++) dae_train_meta_add(&meta, extra_keys[i], extra_values[i]);
    return dae_model_save(&run->model, path, meta.keys, meta.values, meta.n, err, errlen);
}

const dae_model *dae_train_run_model(const dae_train_run *run) { return &run->model; }
const dae_dataset *dae_train_run_data(const dae_train_run *run) { return &run->data; }
const dae_train_state *dae_train_run_state(const dae_train_run *run) { return &run->state; }
const dae_train_config *dae_train_run_config(const dae_train_run *run) { return &run->cfg; }
int dae_train_run_images(const dae_train_run *run) { return run->n_train; }
int dae_train_run_first_epoch(const dae_train_run *run) { return run->first_epoch; }
double dae_train_run_seconds(const dae_train_run *run) { return run->seconds; }

void dae_train_run_free(dae_train_run *run) {
    if (run == NULL) return;
    dae_train_request_free(&run->req);
    dae_train_state_free(&run->state);
    dae_model_free(&run->model);
    dae_dataset_free(&run->data);
    free(run);
}

dae_status dae_train_run_estimate(const dae_train_request *req, const char *data_dir, int threads,
                                  dae_train_estimate *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    dae_dataset_info info;
    dae_model m = {0};
    dae_status st = dae_dataset_info_read(data_dir, req->dataset, &info, err, errlen);
    if (st == DAE_ERR_IO) st = DAE_ERR_NOT_FOUND;
    if (st == DAE_OK && req->base_model != NULL)
        st = dae_model_load(&m, req->base_model, err, errlen);
    else if (st == DAE_OK)
        st = dae_model_init(&m, req->architecture != NULL ? req->architecture : dae_model_default_spec(), err, errlen);
    if (st != DAE_OK) return st;
    dae_train_config cfg = req->cfg;
    cfg.threads = threads;
    int n_train = dae_limit_count(cfg.limit, info.train_count);
    out->dataset_bytes = info.bytes;
    /* The run's buffers, and the copy of the parameters a save writes from. */
    out->run_bytes = dae_train_memory_bytes(&m, &cfg, n_train) + sizeof(float) * m.n_params;
    out->batch = cfg.batch_size < n_train ? cfg.batch_size : n_train;
    dae_model_free(&m);
    return DAE_OK;
}
