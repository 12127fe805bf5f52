/* cmd_train.c - `dae train`: trains a model on an IDX data set with the
 * reference hyper-parameters as defaults, shows progress (a live bar on a
 * terminal, one line per epoch otherwise), saves checkpoints, and writes
 * the weights with their training facts as metadata, plus the loss curve
 * as CSV and SVG. */
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "clock.h"
#include "fileio.h"
#include "plot.h"

static const char NAME[] = "train";

/* Raised by SIGINT/SIGTERM and by a failed checkpoint; dae_train stops at
 * the next step. A process-wide flag because a signal handler sets it. */
static atomic_int cancel_flag;

static void on_signal(int sig) {
    (void)sig;
    atomic_store(&cancel_flag, 1);
}

/* ------------------------------------------------------------ progress */

typedef struct {
    long step;
    float loss;
} step_point;

typedef struct {
    long step; /* optimiser step at the end of the epoch */
    double loss, seconds;
    int has_test;
    double mse, psnr, ssim;
} epoch_point;

typedef struct {
    int tty;
    int first_epoch;        /* epochs done before this run */
    double last_draw, epoch_start;
    int bar_shown;
    step_point *steps;
    size_t n_steps, cap_steps;
    epoch_point *epochs;
    size_t n_epochs;
    int oom;
    const char *checkpoint; /* save after every epoch when not NULL */
    const dae_model *model;
    const dae_train_state *state;
    char checkpoint_err[DAE_ERR_LEN];
} train_ui;

/* Formats seconds as h:mm:ss or m:ss. */
static void format_duration(char *buf, size_t len, double s) {
    if (!(s >= 0) || s > 1e7) {
        snprintf(buf, len, "--:--");
        return;
    }
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, len, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else snprintf(buf, len, "%ld:%02ld", t / 60, t % 60);
}

/* Redraws the progress line in place: epoch, bar of the epoch, percent of
 * the whole run, throughput, the step's loss and the time left. */
static void draw_bar(train_ui *ui, const dae_train_progress *p) {
    long run_steps = (long)(p->epochs - ui->first_epoch) * p->steps_per_epoch;
    long done = (long)(p->epoch - 1 - ui->first_epoch) * p->steps_per_epoch + p->step;
    double frac = run_steps > 0 ? (double)done / run_steps : 1.0;
    double eta = done > 0 ? p->elapsed_s / done * (run_steps - done) : -1.0;
    double epoch_frac = p->steps_per_epoch > 0 ? (double)p->step / p->steps_per_epoch : 1.0;
    enum { BAR = 28 };
    char bar[BAR + 1];
    int filled = (int)(epoch_frac * BAR);
    for (int i = 0; i < BAR; i++) bar[i] = i < filled ? '#' : '.';
    bar[BAR] = '\0';
    char eta_text[32];
    format_duration(eta_text, sizeof eta_text, eta);
    fprintf(stderr, "\r\033[Kepoch %d/%d [%s] %3.0f%%  %.0f img/s  loss %.5f  ETA %s", p->epoch, p->epochs, bar,
            frac * 100.0, p->images_per_s, p->loss, eta_text);
    fflush(stderr);
    ui->bar_shown = 1;
}

/* dae_train's progress callback, on the training thread after every step:
 * logs the step's loss; at an epoch's end logs the epoch, prints its line
 * and saves the checkpoint (a failure raises the cancel flag, so training
 * stops and the error is reported); otherwise redraws the bar on a
 * terminal at most ten times a second. Never fails; when the log cannot
 * grow, ui->oom is set. */
static void on_progress(const dae_train_progress *p, void *user) {
    train_ui *ui = user;
    if (ui->n_steps == ui->cap_steps && !ui->oom) {
        size_t cap = ui->cap_steps ? ui->cap_steps * 2 : 1024;
        step_point *grown = realloc(ui->steps, cap * sizeof *grown);
        if (grown == NULL) ui->oom = 1;
        else ui->steps = grown, ui->cap_steps = cap;
    }
    if (ui->n_steps < ui->cap_steps) ui->steps[ui->n_steps++] = (step_point){p->total_steps, (float)p->loss};
    double now = dae_now_s();
    if (!p->epoch_done) {
        if (ui->tty && now - ui->last_draw >= 0.1) {
            draw_bar(ui, p);
            ui->last_draw = now;
        }
        return;
    }
    epoch_point e = {p->total_steps, p->epoch_loss, p->elapsed_s - ui->epoch_start, p->has_test,
                     p->test_mse, p->test_psnr, p->test_ssim};
    ui->epoch_start = p->elapsed_s;
    epoch_point *grown = realloc(ui->epochs, (ui->n_epochs + 1) * sizeof *grown);
    if (grown == NULL) ui->oom = 1;
    else ui->epochs = grown, ui->epochs[ui->n_epochs++] = e;
    if (ui->bar_shown) fputs("\r\033[K", stderr);
    ui->bar_shown = 0;
    fprintf(stderr, "epoch %d/%d  loss %.5f  %.0f img/s  %.1f s", p->epoch, p->epochs, p->epoch_loss,
            p->images_per_s, e.seconds);
    if (p->has_test)
        fprintf(stderr, "  test mse %.5f  psnr %.2f dB  ssim %.4f", p->test_mse, p->test_psnr, p->test_ssim);
    fputc('\n', stderr);
    if (ui->checkpoint != NULL && ui->checkpoint_err[0] == '\0') {
        if (dae_checkpoint_save(ui->checkpoint, ui->model, ui->state, ui->checkpoint_err,
                                sizeof ui->checkpoint_err) != DAE_OK) {
            if (ui->checkpoint_err[0] == '\0') snprintf(ui->checkpoint_err, sizeof ui->checkpoint_err, "%s: failed",
                                                        ui->checkpoint);
            atomic_store(&cancel_flag, 1);
        }
    }
    fflush(stderr);
}

/* ------------------------------------------------------------ outputs */

/* The loss log as CSV: one row per step; the epoch's mean loss and test
 * metrics on the row of its last step. Returns a malloc'd string or NULL. */
static char *loss_csv(const train_ui *ui) {
    char *doc = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&doc, &len);
    if (f == NULL) return NULL;
    fputs("step,epoch,loss,epoch_mean_loss,test_mse,test_psnr,test_ssim\n", f);
    size_t e = 0;
    int epoch = ui->first_epoch + 1;
    for (size_t i = 0; i < ui->n_steps; i++) {
        fprintf(f, "%ld,%d,%.9g", ui->steps[i].step, epoch, (double)ui->steps[i].loss);
        if (e < ui->n_epochs && ui->epochs[e].step == ui->steps[i].step) {
            const epoch_point *ep = &ui->epochs[e++];
            fprintf(f, ",%.9g", ep->loss);
            if (ep->has_test) fprintf(f, ",%.9g,%.9g,%.9g", ep->mse, ep->psnr, ep->ssim);
            else fputs(",,,", f);
            epoch++;
        } else {
            fputs(",,,,", f);
        }
        fputc('\n', f);
    }
    if (fclose(f) != 0) {
        free(doc);
        return NULL;
    }
    return doc;
}

/* The loss log as an SVG chart (plot.h). Returns a malloc'd string or NULL. */
static char *loss_svg(const train_ui *ui, const char *dataset) {
    size_t n = ui->n_steps, ne = ui->n_epochs;
    long *sx = malloc(sizeof(long) * (n + 1)), *ex = malloc(sizeof(long) * (ne + 1));
    float *sy = malloc(sizeof(float) * (n + 1));
    double *ey = malloc(sizeof(double) * (ne + 1));
    char *doc = NULL;
    if (sx && ex && sy && ey) {
        for (size_t i = 0; i < n; i++) sx[i] = ui->steps[i].step, sy[i] = ui->steps[i].loss;
        for (size_t i = 0; i < ne; i++) ex[i] = ui->epochs[i].step, ey[i] = ui->epochs[i].loss;
        char title[160];
        snprintf(title, sizeof title, "dae training loss - %s", dataset);
        doc = cli_loss_svg(title, sx, sy, n, ex, ey, ne);
    }
    free(sx), free(ex), free(sy), free(ey);
    return doc;
}

/* ------------------------------------------------------------ command */

int cmd_train(int argc, char **argv) {
    const char *dataset = NULL, *data_dir = NULL, *out = NULL, *noise_text = "gaussian:0.5", *resume = NULL;
    const char *checkpoint = NULL, *architecture = NULL, *csv_path = NULL, *svg_path = NULL;
    int epochs = 10, batch = 64, threads = dae_online_cpus(), limit = 0, eval = 0, eval_limit = 0;
    double lr = 1e-3, wd = 1e-5;
    uint64_t seed = 0;
    cli_flag flags[] = {
        {"dataset", CLI_STRING, &dataset, 0, 0, "NAME", "data set under the data directory: mnist, fashion-mnist, ... (required)", 0},
        CLI_FLAG_DATA_DIR(&data_dir),
        {"out", CLI_STRING, &out, 0, 0, "FILE", "where to write the weights (.safetensors; required)", 0},
        {"epochs", CLI_INT, &epochs, 1, 10000, "N", "train until N epochs are done (default 10)", 0},
        {"batch-size", CLI_INT, &batch, 1, 65536, "N", "images per optimiser step (default 64)", 0},
        {"learning-rate", CLI_DOUBLE, &lr, 1e-12, 1, "X", "Adam learning rate (default 1e-3)", 0},
        {"lr", CLI_DOUBLE, &lr, 1e-12, 1, "X", "same as --learning-rate", 0},
        {"weight-decay", CLI_DOUBLE, &wd, 0, 1, "X", "Adam weight decay, added to the gradient (default 1e-5)", 0},
        {"noise", CLI_STRING, &noise_text, 0, 0, "SPEC",
         "gaussian:S[:clip][:quantize], salt-pepper:P, speckle:S (default gaussian:0.5)", 0},
        {"seed", CLI_U64, &seed, 0, 0, "N", "seed of initialisation, shuffling and noise (default 0)", 0},
        {"threads", CLI_INT, &threads, 1, 64, "N", "threads over the batch (default: online CPUs)", 0},
        {"limit", CLI_INT, &limit, 0, 0x7fffffff, "N", "use only the first N training images (default 0 = all)", 0},
        {"eval", CLI_BOOL, &eval, 0, 0, NULL, "evaluate on the test set after every epoch", 0},
        {"eval-limit", CLI_INT, &eval_limit, 0, 0x7fffffff, "N", "test images for --eval (default 0 = all)", 0},
        {"resume", CLI_STRING, &resume, 0, 0, "CHECKPOINT", "continue from a checkpoint of --checkpoint", 0},
        {"checkpoint", CLI_STRING, &checkpoint, 0, 0, "FILE", "save a checkpoint (weights + Adam state) after every epoch", 0},
        {"architecture", CLI_STRING, &architecture, 0, 0, "FILE", "JSON architecture spec (default: the reference network)", 0},
        {"loss-csv", CLI_STRING, &csv_path, 0, 0, "FILE", "write the loss of every step and epoch as CSV", 0},
        {"loss-svg", CLI_STRING, &svg_path, 0, 0, "FILE", "write the loss curve as an SVG plot", 0},
    };
    cli_command cmd = {NAME, "--dataset NAME --out FILE [flags]",
                       "Trains the denoising autoencoder on NAME's training images (noisy input, clean target, MSE\n"
                       "loss, Adam) and writes the weights as safetensors with the training facts as metadata.\n"
                       "Same seed and thread count give the same weights; --resume continues a run exactly\n"
                       "(pass the same flags as the run that wrote the checkpoint).",
                       flags, (int)(sizeof flags / sizeof flags[0]), 0, 0};
    const char *pos[1];
    int n_pos;
    int rc = cli_parse(&cmd, argc, argv, pos, &n_pos);
    if (rc != CLI_CONTINUE) return rc;
    if (dataset == NULL) return cli_usage_error(NAME, "--dataset is required");
    if (out == NULL) return cli_usage_error(NAME, "--out is required");
    if (resume != NULL && architecture != NULL)
        return cli_usage_error(NAME, "--resume takes the architecture from the checkpoint; drop --architecture");
    char err[DAE_ERR_LEN] = "";
    dae_train_config cfg;
    dae_train_config_default(&cfg);
    if (dae_noise_parse(noise_text, &cfg.noise, err, sizeof err) != DAE_OK)
        return cli_usage_error(NAME, "--noise: %s", err);
    cfg.epochs = epochs, cfg.batch_size = batch, cfg.learning_rate = (float)lr, cfg.weight_decay = (float)wd;
    cfg.seed = seed, cfg.threads = threads, cfg.limit = limit;
    cfg.eval_each_epoch = eval, cfg.eval_limit = eval_limit;
    if (dae_train_config_check(&cfg, err, sizeof err) != DAE_OK) return cli_usage_error(NAME, "%s", err);
    const char *outputs[] = {out, checkpoint, csv_path, svg_path};
    for (int i = 0; i < 4; i++)
        if (outputs[i] != NULL && cli_check_output(NAME, outputs[i]) != 0) return CLI_EXIT_FAILURE;

    dae_dataset data;
    rc = cli_load_dataset(NAME, data_dir, dataset, &data);
    if (rc != 0) return rc;
    dae_model m = {0};
    dae_train_state state = {0};
    train_ui ui = {0};
    int exit_code = CLI_EXIT_FAILURE;
    char *csv = NULL, *svg = NULL;
    if (resume != NULL) {
        if (dae_checkpoint_load(resume, &m, &state, err, sizeof err) != DAE_OK) {
            cli_error(NAME, "%s", err);
            goto done;
        }
    } else {
        char *spec = NULL;
        if (architecture != NULL) {
            size_t len;
            if (dae_file_read(architecture, 1 << 20, (uint8_t **)&spec, &len, err, sizeof err) != DAE_OK) {
                cli_error(NAME, "%s", err);
                goto done;
            }
        }
        char detail[DAE_ERR_LEN] = "";
        dae_status st = dae_model_init(&m, spec != NULL ? spec : dae_model_default_spec(), detail, sizeof detail);
        free(spec);
        if (st != DAE_OK) {
            cli_error(NAME, "%s: %s", architecture != NULL ? architecture : "default architecture", detail);
            goto done;
        }
        dae_model_init_params(&m, seed);
        if (dae_train_state_init(&state, &m, &cfg, err, sizeof err) != DAE_OK) {
            cli_error(NAME, "%s", err);
            goto done;
        }
    }
    const dae_idx_images *train = &data.train_images;
    if (m.in_c != 1 || m.in_h != train->rows || m.in_w != train->cols) {
        cli_error(NAME, "%s: the model takes %dx%dx%d images, data set %s has %dx%d gray images",
                  resume != NULL ? resume : architecture != NULL ? architecture : "model", m.in_c, m.in_h, m.in_w,
                  dataset, train->rows, train->cols);
        goto done;
    }
    int n_train = limit > 0 && limit < train->count ? limit : train->count;
    char noise_canon[DAE_NOISE_TEXT_LEN];
    dae_noise_format(&cfg.noise, noise_canon, sizeof noise_canon);

    ui.tty = isatty(STDERR_FILENO);
    ui.first_epoch = state.epochs_done;
    ui.checkpoint = checkpoint;
    ui.model = &m;
    ui.state = &state;
    cfg.progress = on_progress;
    cfg.user = &ui;
    cfg.progress_every = 1;
    cfg.cancel = &cancel_flag;
    if (resume != NULL) fprintf(stderr, "resuming %s after epoch %d\n", resume, state.epochs_done);
    if (state.epochs_done >= epochs)
        fprintf(stderr, "the checkpoint already holds %d epochs; nothing to train (raise --epochs)\n",
                state.epochs_done);
    else
        fprintf(stderr, "training on %s: %d images, epochs %d to %d, batch %d, lr %g, weight decay %g, noise %s, seed %llu, %d threads\n",
                dataset, n_train, state.epochs_done + 1, epochs, batch, lr, wd, noise_canon,
                (unsigned long long)seed, threads);

    struct sigaction sa, old_int, old_term;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    atomic_store(&cancel_flag, 0);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    double start = dae_now_s();
    dae_status st = dae_train(&m, &state, &data, &cfg, err, sizeof err);
    double seconds = dae_now_s() - start;
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    if (ui.bar_shown) fputs("\r\033[K", stderr);
    if (ui.checkpoint_err[0] != '\0') {
        cli_error(NAME, "%s", ui.checkpoint_err);
        goto done;
    }
    if (st == DAE_ERR_CANCELLED) {
        cli_error(NAME, "interrupted in epoch %d; nothing written to %s%s%s", state.epochs_done + 1, out,
                  checkpoint != NULL && state.epochs_done > ui.first_epoch ? ", last checkpoint in " : "",
                  checkpoint != NULL && state.epochs_done > ui.first_epoch ? checkpoint : "");
        goto done;
    }
    if (st != DAE_OK) {
        cli_error(NAME, "%s: %s", dataset, err);
        goto done;
    }
    if (ui.oom) {
        cli_error(NAME, "out of memory for the loss log");
        goto done;
    }

    /* Final test metrics: those of the last epoch, or computed now when no
     * epoch ran in this process. */
    int has_test = 0;
    double mse = 0, psnr = 0, ssim = 0;
    if (eval && ui.n_epochs > 0 && ui.epochs[ui.n_epochs - 1].has_test) {
        const epoch_point *e = &ui.epochs[ui.n_epochs - 1];
        has_test = 1, mse = e->mse, psnr = e->psnr, ssim = e->ssim;
    } else if (eval) {
        dae_quality q = {0}, qn = {0};
        const dae_idx_images *test = &data.test_images;
        int n_test = eval_limit > 0 && eval_limit < test->count ? eval_limit : test->count;
        if (dae_evaluate(&m, NULL, test->pixels, n_test, &cfg.noise, DAE_EVAL_SEED, &q, &qn, err, sizeof err) !=
            DAE_OK) {
            cli_error(NAME, "%s", err);
            goto done;
        }
        has_test = 1, mse = dae_quality_mse(&q), psnr = dae_quality_psnr(&q), ssim = dae_quality_ssim(&q);
    }

    if (csv_path != NULL && (csv = loss_csv(&ui)) == NULL) {
        cli_error(NAME, "%s: out of memory", csv_path);
        goto done;
    }
    if (svg_path != NULL && (svg = loss_svg(&ui, dataset)) == NULL) {
        cli_error(NAME, "%s: out of memory", svg_path);
        goto done;
    }

    const dae_idx_images *test = &data.test_images;
    dae_train_facts facts = {
        .dataset = dataset, .program_version = DAE_VERSION, .train_images = n_train, .threads = threads,
        .seconds = seconds, .has_loss = ui.n_epochs > 0,
        .final_loss = ui.n_epochs > 0 ? ui.epochs[ui.n_epochs - 1].loss : 0.0,
        .test_images = !has_test ? 0 : eval_limit > 0 && eval_limit < test->count ? eval_limit : test->count,
        .test_mse = mse, .test_psnr = psnr, .test_ssim = ssim,
    };
    dae_train_meta meta;
    dae_train_meta_init(&meta, &cfg, &state, &facts);
    if (resume != NULL) dae_train_meta_add(&meta, "resumed_from", resume);
    if (dae_model_save(&m, out, meta.keys, meta.values, meta.n, err, sizeof err) != DAE_OK) {
        cli_error(NAME, "%s", err);
        goto done;
    }
    if (csv != NULL && dae_file_write_atomic(csv_path, csv, strlen(csv), err, sizeof err) != DAE_OK) {
        cli_error(NAME, "%s", err);
        goto done;
    }
    if (svg != NULL && dae_file_write_atomic(svg_path, svg, strlen(svg), err, sizeof err) != DAE_OK) {
        cli_error(NAME, "%s", err);
        goto done;
    }
    fprintf(stderr, "wrote %s (%zu parameters, %d epochs, %.1f s)\n", out, m.n_params, state.epochs_done, seconds);
    exit_code = 0;
done:
    free(csv);
    free(svg);
    free(ui.steps);
    free(ui.epochs);
    dae_train_state_free(&state);
    dae_model_free(&m);
    dae_dataset_free(&data);
    return exit_code;
}
