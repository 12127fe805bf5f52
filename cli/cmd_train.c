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
#include "dataset_import.h"
#include "fileio.h"
#include "plot.h"
#include "train_run.h"

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
    const dae_train_run *run;
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
    double epoch_frac = p->steps_per_epoch > 0 ? (double)p->step / p->steps_per_epoch : 1.0;
    enum { BAR = 28 };
    char bar[BAR + 1];
    int filled = (int)(epoch_frac * BAR);
    for (int i = 0; i < BAR; i++) bar[i] = i < filled ? '#' : '.';
    bar[BAR] = '\0';
    char eta_text[32];
    format_duration(eta_text, sizeof eta_text, p->eta_s);
    fprintf(stderr, "\r\033[Kepoch %d/%d [%s] %3.0f%%  %.0f img/s  loss %.5f  ETA %s", p->epoch, p->epochs, bar,
            p->run_fraction * 100.0, p->images_per_s, p->loss, eta_text);
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
        if (dae_checkpoint_save(ui->checkpoint, dae_train_run_model(ui->run), dae_train_run_state(ui->run),
                                ui->checkpoint_err,
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
        doc = dae_loss_svg(title, sx, sy, n, ex, ey, ne);
    }
    free(sx), free(ex), free(sy), free(ey);
    return doc;
}

/* ------------------------------------------------------------ command */

enum { MAX_FLAGS = 32, HELP_LEN = 160 };

/* The flags of the training parameters, made from their table
 * (train_request.h) with the defaults in their help lines, after the
 * flags only `dae train` has. Values go into req->cfg; the noise spec's
 * text into *noise_text. Returns the number of flags. */
static int param_flags(cli_flag *flags, int n, dae_train_request *req, const char **noise_text,
                       char help[][HELP_LEN]) {
    for (int i = 0; i < DAE_TRAIN_N_PARAMS && n < MAX_FLAGS - 2; i++) {
        const dae_train_param *p = &DAE_TRAIN_PARAMS[i];
        if (!(p->where & DAE_PARAM_CLI)) continue;
        void *value = (char *)&req->cfg + p->offset;
        cli_kind kind = p->kind == DAE_PARAM_INT     ? CLI_INT
                        : p->kind == DAE_PARAM_U64   ? CLI_U64
                        : p->kind == DAE_PARAM_FLOAT ? CLI_FLOAT
                                                     : CLI_STRING;
        if (p->kind == DAE_PARAM_NOISE) value = noise_text;
        int is_eval_limit = p->offset == offsetof(dae_train_config, eval_limit);
        if (is_eval_limit)
            flags[n++] = (cli_flag){"eval", CLI_BOOL, &req->cfg.eval_each_epoch, 0, 0, NULL,
                                    "evaluate on the test set after every epoch", 0};
        char def[DAE_NOISE_TEXT_LEN];
        dae_train_param_default_text(p, def, sizeof def);
        snprintf(help[n], HELP_LEN, "%s%s (default %s)", p->help, is_eval_limit ? ", with --eval" : "", def);
        flags[n] = (cli_flag){p->flag, kind, value, p->min, p->max, p->meta, help[n], 0};
        n++;
        if (p->offset == offsetof(dae_train_config, learning_rate))
            flags[n++] = (cli_flag){"lr", kind, value, p->min, p->max, p->meta, "same as --learning-rate", 0};
    }
    return n;
}

int cmd_train(int argc, char **argv) {
    const char *dataset = NULL, *data_dir = NULL, *out = NULL, *noise_text = NULL, *resume = NULL;
    const char *checkpoint = NULL, *architecture = NULL, *base_model = NULL, *csv_path = NULL, *svg_path = NULL;
    dae_train_request req;
    memset(&req, 0, sizeof req);
    dae_train_config_default(&req.cfg);
    req.cfg.threads = dae_online_cpus();
    cli_flag flags[MAX_FLAGS];
    static char help[MAX_FLAGS][HELP_LEN];
    int n = 0;
    flags[n++] = (cli_flag){"dataset", CLI_STRING, &dataset, 0, 0, "NAME|PATH",
                            "data set under the data directory (mnist, fashion-mnist, ...), or a tar, tar.gz or zip "
                            "archive or a folder of clean images to train on (required)", 0};
    flags[n++] = (cli_flag)CLI_FLAG_DATA_DIR(&data_dir);
    flags[n++] = (cli_flag){"out", CLI_STRING, &out, 0, 0, "FILE", "where to write the weights (.safetensors; required)", 0};
    n = param_flags(flags, n, &req, &noise_text, help);
    const cli_flag own[] = {
        {"resume", CLI_STRING, &resume, 0, 0, "CHECKPOINT", "continue from a checkpoint of --checkpoint", 0},
        {"checkpoint", CLI_STRING, &checkpoint, 0, 0, "FILE", "save a checkpoint (weights + Adam state) after every epoch", 0},
        {"architecture", CLI_STRING, &architecture, 0, 0, "FILE|NAME", "JSON architecture spec, or a built-in one: ae (the reference network, the default) or unet", 0},
        {"base-model", CLI_STRING, &base_model, 0, 0, "FILE", "fine-tune: start from this model's network and weights", 0},
        {"loss-csv", CLI_STRING, &csv_path, 0, 0, "FILE", "write the loss of every step and epoch as CSV", 0},
        {"loss-svg", CLI_STRING, &svg_path, 0, 0, "FILE", "write the loss curve as an SVG plot", 0},
    };
    for (size_t i = 0; i < sizeof own / sizeof own[0] && n < MAX_FLAGS; i++) flags[n++] = own[i];
    cli_command cmd = {NAME, "--dataset NAME --out FILE [flags]",
                       "Trains the denoising autoencoder on NAME's training images (noisy input, clean target, MSE\n"
                       "loss, Adam) and writes the weights as safetensors with the training facts as metadata.\n"
                       "Same seed and thread count give the same weights; --resume continues a run exactly\n"
                       "(pass the same flags as the run that wrote the checkpoint).",
                       flags, n, 0, 0, "dataset,out"};
    const char *pos[1];
    int n_pos;
    int rc = cli_parse(&cmd, argc, argv, pos, &n_pos);
    if (rc != CLI_CONTINUE) return rc;
    if (resume != NULL && architecture != NULL)
        return cli_usage_error(NAME, "--resume takes the architecture from the checkpoint; drop --architecture");
    if (base_model != NULL && (resume != NULL || architecture != NULL))
        return cli_usage_error(NAME, "--base-model gives the network and the starting weights; drop --%s",
                               resume != NULL ? "resume" : "architecture");
    const char *dir = cli_data_dir(data_dir);
    int import = dae_import_is_path(dataset, dir);
    if (import) { /* the images of an archive or a folder, named by its file name in the metadata */
        const char *slash = strrchr(dataset, '/');
        snprintf(req.dataset, sizeof req.dataset, "%s", slash != NULL && slash[1] != '\0' ? slash + 1 : dataset);
    } else {
        if (strlen(dataset) >= sizeof req.dataset) return cli_usage_error(NAME, "--dataset: the name is too long");
        snprintf(req.dataset, sizeof req.dataset, "%s", dataset);
    }
    char err[DAE_ERR_LEN] = "";
    if (noise_text != NULL && dae_noise_parse(noise_text, &req.cfg.noise, err, sizeof err) != DAE_OK)
        return cli_usage_error(NAME, "--noise: %s", err);
    if (dae_train_config_check(&req.cfg, err, sizeof err) != DAE_OK) return cli_usage_error(NAME, "%s", err);
    static const char *const output_flags[] = {"--out", "--checkpoint", "--loss-csv", "--loss-svg"};
    const char *outputs[] = {out, checkpoint, csv_path, svg_path};
    for (int i = 0; i < 4; i++)
        if (outputs[i] != NULL && cli_check_output(NAME, outputs[i]) != 0) return CLI_EXIT_FAILURE;
    /* No output may replace another, nor an input; but a checkpoint may
     * go on where the run resumed from. */
    static const char *const input_flags[] = {"--resume", "--base-model", "--architecture", "--dataset"};
    const char *spec_file = architecture != NULL && dae_model_named_spec(architecture) == NULL ? architecture : NULL;
    const char *inputs[] = {resume, base_model, spec_file, import ? dataset : NULL};
    for (int i = 0; i < 4; i++) {
        for (int j = i + 1; j < 4; j++)
            if ((rc = cli_check_distinct(NAME, output_flags[i], outputs[i], output_flags[j], outputs[j], 0)) != 0)
                return rc;
        for (int j = 0; j < 4; j++)
            if (!(i == 1 && j == 0) &&
                (rc = cli_check_distinct(NAME, output_flags[i], outputs[i], input_flags[j], inputs[j], 1)) != 0)
                return rc;
    }
    if (dir == NULL && !import)
        return cli_usage_error(NAME, "no data directory: pass --data-dir DIR or set DAE_DATA_DIR");

    dae_train_run *run = NULL;
    train_ui ui = {0};
    int exit_code = CLI_EXIT_FAILURE;
    char *csv = NULL, *svg = NULL;
    if (architecture != NULL) {
        char *spec = NULL;
        size_t len;
        if (dae_model_named_spec(architecture) == NULL &&
            dae_file_read(architecture, 1 << 20, (uint8_t **)&spec, &len, err, sizeof err) != DAE_OK) {
            cli_error(NAME, "%s (the built-in architectures: %s)", err, dae_model_arch_names());
            goto done;
        }
        dae_status st = dae_train_request_set_architecture(&req, spec != NULL ? spec : architecture, architecture,
                                                           err, sizeof err);
        free(spec);
        if (st != DAE_OK) {
            cli_error(NAME, "%s", err);
            goto done;
        }
    }
    if ((base_model != NULL && (req.base_model = strdup(base_model)) == NULL) ||
        (import && (req.import_path = strdup(dataset)) == NULL)) {
        cli_error(NAME, "out of memory");
        goto done;
    }
    if (dae_train_run_open(&run, &req, dir, resume, err, sizeof err) != DAE_OK) {
        cli_error(NAME, "%s", err);
        goto done;
    }
    const dae_train_config *cfg = dae_train_run_config(run);
    const dae_train_state *state = dae_train_run_state(run);
    char noise_canon[DAE_NOISE_TEXT_LEN];
    dae_noise_format(&cfg->noise, noise_canon, sizeof noise_canon);

    ui.tty = isatty(STDERR_FILENO);
    ui.first_epoch = dae_train_run_first_epoch(run);
    ui.checkpoint = checkpoint;
    ui.run = run;
    if (resume != NULL) fprintf(stderr, "resuming %s after epoch %d\n", resume, ui.first_epoch);
    if (ui.first_epoch >= cfg->epochs)
        fprintf(stderr, "the checkpoint already holds %d epochs; nothing to train (raise --epochs)\n", ui.first_epoch);
    else
        fprintf(stderr, "training on %s: %d images, epochs %d to %d, batch %d, lr %g, weight decay %g, noise %s, seed %llu, %d threads\n",
                dataset, dae_train_run_images(run), ui.first_epoch + 1, cfg->epochs, cfg->batch_size,
                (double)cfg->learning_rate, (double)cfg->weight_decay, noise_canon, (unsigned long long)cfg->seed,
                cfg->threads);

    struct sigaction sa, old_int, old_term;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    atomic_store(&cancel_flag, 0);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    dae_status st = dae_train_run_train(run, on_progress, &ui, &cancel_flag, err, sizeof err);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    if (ui.bar_shown) fputs("\r\033[K", stderr);
    if (ui.checkpoint_err[0] != '\0') {
        cli_error(NAME, "%s", ui.checkpoint_err);
        goto done;
    }
    if (st == DAE_ERR_CANCELLED) {
        int saved = checkpoint != NULL && state->epochs_done > ui.first_epoch;
        cli_error(NAME, "interrupted in epoch %d; nothing written to %s%s%s", state->epochs_done + 1, out,
                  saved ? ", last checkpoint in " : "", saved ? checkpoint : "");
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
    if (csv_path != NULL && (csv = loss_csv(&ui)) == NULL) {
        cli_error(NAME, "%s: out of memory", csv_path);
        goto done;
    }
    if (svg_path != NULL && (svg = loss_svg(&ui, dataset)) == NULL) {
        cli_error(NAME, "%s: out of memory", svg_path);
        goto done;
    }
    const char *extra_keys[] = {"resumed_from"}, *extra_values[] = {resume};
    if (dae_train_run_save(run, out, DAE_VERSION, extra_keys, extra_values, resume != NULL, err, sizeof err) != DAE_OK) {
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
    fprintf(stderr, "wrote %s (%zu parameters, %d epochs, %.1f s)\n", out, dae_train_run_model(run)->n_params,
            state->epochs_done, dae_train_run_seconds(run));
    exit_code = 0;
done:
    free(csv);
    free(svg);
    free(ui.steps);
    free(ui.epochs);
    dae_train_run_free(run);
    dae_train_request_free(&req);
    return exit_code;
}
