/* cmd_eval.c - `dae eval`: the test-set quality of a model and of the noisy
 * input it gets, under two protocols: raw (the noise as given, unclipped
 * floats, as the original notebook) and png (the same noise clipped to
 * [0, 1] and quantised to 8 bits, as an uploaded PNG carries). With
 * --sweep, the png protocol at several Gaussian sigmas for several models,
 * as a table and, with --sweep-svg, a chart; with --save-noisy, the noisy
 * test images each sigma fed the models, so another client (the HTTP
 * service's, tools/http_sweep.py) can send the very same pixels. A table
 * for people, --json for machines. */
#include <cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "fileio.h"
#include "gemm.h"
#include "plot.h"

static const char NAME[] = "eval";

/* Most models and sigmas of one sweep: a table still fits a wide terminal. */
enum { MAX_MODELS = 16, MAX_SIGMAS = 16, SIGMA_TEXT_LEN = 16 };

/* One noise the models are evaluated at, and the qualities found: a
 * protocol of plain `dae eval` ("raw", "png"), or a sigma of a sweep (its
 * text as given, so the noise parses exactly as `--noise gaussian:TEXT`
 * does, with the png protocol). */
typedef struct {
    char text[SIGMA_TEXT_LEN];
    double sigma;
    dae_noise_spec noise;
    char noise_text[DAE_NOISE_TEXT_LEN];
    dae_quality noisy, denoised[MAX_MODELS];
} eval_case;

/* A model of the command line: its path, its name in tables and charts
 * (the file's base name without .safetensors, cut to DAE_NAME_MAX bytes)
 * and the model. */
typedef struct {
    const char *path;
    char name[DAE_NAME_MAX + 1];
    dae_model m;
} eval_model;

/* Adds {"mse", "psnr", "ssim"} of q to parent under key (to an array when
 * key is NULL); cJSON prints a non-finite number as null. */
static void add_quality(cJSON *parent, const char *key, const dae_quality *q) {
    cJSON *o = cJSON_CreateObject();
    if (key != NULL) cJSON_AddItemToObject(parent, key, o);
    else cJSON_AddItemToArray(parent, o);
    cJSON_AddNumberToObject(o, "mse", dae_quality_mse(q));
    cJSON_AddNumberToObject(o, "psnr", dae_quality_psnr(q));
    cJSON_AddNumberToObject(o, "ssim", dae_quality_ssim(q));
}

/* Prints root as JSON and deletes it. Returns 0, or -1 when out of memory. */
static int print_json(cJSON *root) {
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    if (text == NULL) return -1;
    printf("%s\n", text);
    free(text);
    return 0;
}

/* Parses the --sweep list ("0.05,0.1,0.5": 1 to MAX_SIGMAS plain decimals
 * in (0, 10], increasing) into rows with the png protocol's noise. Returns
 * the count, or 0 after writing a sentence naming the bad item to err. */
static int parse_sigmas(const char *list, eval_case *rows, char *err, size_t errlen) {
    int n = 0;
    for (const char *item = list;; n++) {
        size_t len = strcspn(item, ",");
        if (n == MAX_SIGMAS) {
            snprintf(err, errlen, "more than %d sigmas", MAX_SIGMAS);
            return 0;
        }
        if (len == 0) {
            snprintf(err, errlen, "item %d is empty", n + 1);
            return 0;
        }
        size_t digits = strspn(item, "0123456789"), dot = item[digits] == '.';
        size_t fraction = dot ? strspn(item + digits + 1, "0123456789") : 0;
        if (digits + dot + fraction != len || digits + fraction == 0 || len >= SIGMA_TEXT_LEN) {
            snprintf(err, errlen, "\"%.*s\" is not a plain decimal number such as 0.25", (int)(len < 40 ? len : 40),
                     item);
            return 0;
        }
        eval_case *r = &rows[n];
        memcpy(r->text, item, len);
        r->text[len] = '\0';
        r->sigma = strtod(r->text, NULL);
        if (!(r->sigma > 0 && r->sigma <= DAE_NOISE_SIGMA_MAX)) {
            snprintf(err, errlen, "%.*s is outside (0, %g]", SIGMA_TEXT_LEN, r->text, (double)DAE_NOISE_SIGMA_MAX);
            return 0;
        }
        if (n > 0 && !(r->sigma > rows[n - 1].sigma)) {
            snprintf(err, errlen, "%.*s does not come after %.*s: sigmas must increase", SIGMA_TEXT_LEN, r->text,
                     SIGMA_TEXT_LEN, rows[n - 1].text);
            return 0;
        }
        /* As `--noise gaussian:TEXT` and its png row: parse, then clip and quantise. */
        char spec[DAE_NOISE_TEXT_LEN];
        snprintf(spec, sizeof spec, "gaussian:%.*s", SIGMA_TEXT_LEN, r->text);
        if (dae_noise_parse(spec, &r->noise, err, errlen) != DAE_OK) return 0;
        r->noise.clip = r->noise.quantize = 1;
        dae_noise_format(&r->noise, r->noise_text, sizeof r->noise_text);
        if (item[len] == '\0') return n + 1;
        item += len + 1;
    }
}

/* Splits the --model list, copied into buf (as long as it), into models[]
 * with their names. Returns the count, or 0 after writing the problem to
 * err (an empty item, too many). */
static int split_models(const char *list, char *buf, eval_model *models, char *err, size_t errlen) {
    strcpy(buf, list);
    int n = 0;
    for (char *item = buf;; n++) {
        char *comma = strchr(item, ',');
        if (comma != NULL) *comma = '\0';
        if (n == MAX_MODELS) {
            snprintf(err, errlen, "more than %d models", MAX_MODELS);
            return 0;
        }
        if (*item == '\0') {
            snprintf(err, errlen, "model %d is empty", n + 1);
            return 0;
        }
        const char *slash = strrchr(item, '/'), *base = slash ? slash + 1 : item;
        size_t len = strlen(base), ext = strlen(".safetensors");
        if (len > ext && strcmp(base + len - ext, ".safetensors") == 0) len -= ext;
        models[n].path = item;
        snprintf(models[n].name, sizeof models[n].name, "%.*s", (int)len, base);
        if (comma == NULL) return n + 1;
        item = comma + 1;
    }
}

/* ------------------------------------------------------------ output */

/* Prints the qualities of the two protocols as a table, or as JSON.
 * Returns 0, or -1 when out of memory. */
static int print_protocols(const eval_case *protos, const char *model_path, const char *dataset, int count,
                            int json) {
    if (json) {
        cJSON *root = cJSON_CreateObject();
        cJSON_AddStringToObject(root, "model", model_path);
        cJSON_AddStringToObject(root, "dataset", dataset);
        cJSON_AddNumberToObject(root, "test_images", count);
        cJSON_AddStringToObject(root, "noise", protos[0].noise_text);
        cJSON_AddNumberToObject(root, "seed", (double)DAE_EVAL_SEED);
        for (int p = 0; p < 2; p++) {
            cJSON *o = cJSON_AddObjectToObject(root, protos[p].text);
            cJSON_AddStringToObject(o, "noise", protos[p].noise_text);
            add_quality(o, "noisy", &protos[p].noisy);
            add_quality(o, "denoised", &protos[p].denoised[0]);
        }
        return print_json(root);
    }
    printf("model    %s\n", model_path);
    printf("dataset  %s, %d test images, evaluation seed %llu\n\n", dataset, count, (unsigned long long)DAE_EVAL_SEED);
    printf("%-9s %-30s %-9s %10s %10s %8s\n", "protocol", "noise", "image", "MSE", "PSNR dB", "SSIM");
    for (int p = 0; p < 2; p++) {
        const dae_quality *q[2] = {&protos[p].noisy, &protos[p].denoised[0]};
        const char *what[2] = {"noisy", "denoised"};
        for (int k = 0; k < 2; k++)
            printf("%-9s %-30s %-9s %10.5f %10.2f %8.4f\n", protos[p].text, protos[p].noise_text, what[k],
                   dae_quality_mse(q[k]), dae_quality_psnr(q[k]), dae_quality_ssim(q[k]));
    }
    return 0;
}

/* Prints the sweep: one row per sigma, a PSNR and SSIM column pair for the
 * noisy input and for each model; or the same as JSON. Returns 0, or -1
 * when out of memory. */
static int print_sweep(const eval_case *rows, int n_rows, const eval_model *models, int n_models,
                        const char *dataset, int count, int json) {
    if (json) {
        cJSON *root = cJSON_CreateObject();
        cJSON_AddStringToObject(root, "dataset", dataset);
        cJSON_AddNumberToObject(root, "test_images", count);
        cJSON_AddNumberToObject(root, "seed", (double)DAE_EVAL_SEED);
        cJSON_AddStringToObject(root, "protocol", "png");
        cJSON *ms = cJSON_AddArrayToObject(root, "models");
        for (int k = 0; k < n_models; k++) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "name", models[k].name);
            cJSON_AddStringToObject(o, "path", models[k].path);
            cJSON_AddItemToArray(ms, o);
        }
        cJSON *sweep = cJSON_AddArrayToObject(root, "sweep");
        for (int i = 0; i < n_rows; i++) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddItemToArray(sweep, o);
            cJSON_AddNumberToObject(o, "sigma", rows[i].sigma);
            cJSON_AddStringToObject(o, "noise", rows[i].noise_text);
            add_quality(o, "noisy", &rows[i].noisy);
            cJSON *d = cJSON_AddArrayToObject(o, "denoised"); /* in the order of "models" */
            for (int k = 0; k < n_models; k++) add_quality(d, NULL, &rows[i].denoised[k]);
        }
        return print_json(root);
    }
    printf("dataset  %s, %d test images, evaluation seed %llu\n", dataset, count, (unsigned long long)DAE_EVAL_SEED);
    printf("noise    gaussian:SIGMA:clip:quantize (png protocol)\n");
    for (int k = 0; k < n_models; k++) printf("model    %s  %s\n", models[k].name, models[k].path);
    /* A column pair is as wide as its name, at least 16. */
    int width[MAX_MODELS + 1];
    for (int k = 0; k <= n_models; k++) {
        int len = (int)strlen(k == 0 ? "noisy input" : models[k - 1].name);
        width[k] = len > 16 ? len : 16;
    }
    printf("\n%-6s", "");
    for (int k = 0; k <= n_models; k++) printf("   %*s", width[k], k == 0 ? "noisy input" : models[k - 1].name);
    printf("\n%-6s", "sigma");
    for (int k = 0; k <= n_models; k++) printf("   %*s %7s", width[k] - 8, "PSNR dB", "SSIM");
    printf("\n");
    for (int i = 0; i < n_rows; i++) {
        printf("%-6s", rows[i].text);
        for (int k = 0; k <= n_models; k++) {
            const dae_quality *q = k == 0 ? &rows[i].noisy : &rows[i].denoised[k - 1];
            printf("   %*.2f %7.4f", width[k] - 8, dae_quality_psnr(q), dae_quality_ssim(q));
        }
        printf("\n");
    }
    return 0;
}

/* The sweep as a chart (plot.h): PSNR against sigma, a line with markers
 * per model and a dashed one for the noisy input. Returns a malloc'd
 * document or NULL when out of memory. */
static char *sweep_svg(const eval_case *rows, int n_rows, const eval_model *models, int n_models,
                       const char *dataset, int count) {
    double x[MAX_SIGMAS], y[MAX_MODELS + 1][MAX_SIGMAS];
    dae_plot_line lines[MAX_MODELS + 1];
    for (int k = 0; k <= n_models; k++) {
        for (int i = 0; i < n_rows; i++) {
            x[i] = rows[i].sigma;
            y[k][i] = dae_quality_psnr(k < n_models ? &rows[i].denoised[k] : &rows[i].noisy);
        }
        lines[k] = (dae_plot_line){k < n_models ? models[k].name : "noisy input", x, y[k], (size_t)n_rows,
                                   k < n_models ? NULL : "#888888", 2.5, 1.0, k < n_models, k == n_models};
    }
    char title[160];
    snprintf(title, sizeof title, "PSNR against noise - %s, %d test images", dataset, count);
    dae_plot_axes axes = {title, "Gaussian noise \xcf\x83 (clipped, quantised to 8 bits)", "PSNR (dB)", 0, 1, 0};
    return dae_lines_svg(&axes, lines, (size_t)n_models + 1);
}

/* ------------------------------------------------------------ noisy images */

/* The file --save-noisy writes for sigma text under dir,
 * "DIR/noisy-TEXT-images-idx3-ubyte", malloc'd (NULL when out of memory). */
static char *noisy_path(const char *dir, const char *text) {
    const char *fmt = "%s/noisy-%s-images-idx3-ubyte";
    size_t len = (size_t)snprintf(NULL, 0, fmt, dir, text) + 1;
    char *path = malloc(len);
    if (path != NULL) snprintf(path, len, fmt, dir, text);
    return path;
}

/* Writes the noisy versions of the first count test images under row r's
 * noise to path, atomically, as an IDX image file (uint8, as the data
 * sets). Each is made by dae_noise_pixels, as dae_evaluate makes it, so
 * these are the pixels the models were given; the png protocol quantised
 * them to k/255, so x*255 rounds back to k exactly. Returns DAE_OK, or an
 * error naming path. */
static dae_status save_noisy(const eval_case *r, const dae_idx_images *test, int count, const char *path,
                             char *err, size_t errlen) {
    size_t n = (size_t)test->rows * (size_t)test->cols, len = 16 + n * (size_t)count;
    uint8_t *file = malloc(len);
    float *clean = malloc(sizeof(float) * n), *noisy = malloc(sizeof(float) * n);
    dae_status st = DAE_OK;
    if (file == NULL || clean == NULL || noisy == NULL) {
        st = dae_fail(err, errlen, DAE_ERR_NOMEM, "%s: out of memory for %d noisy images", path, count);
        goto done;
    }
    const uint32_t header[4] = {DAE_IDX_MAGIC_IMAGES, (uint32_t)count, (uint32_t)test->rows, (uint32_t)test->cols};
    for (int k = 0; k < 4; k++)
        for (int b = 0; b < 4; b++) file[4 * k + b] = (uint8_t)(header[k] >> (24 - 8 * b)); /* big-endian */
    for (int i = 0; i < count; i++) {
        uint8_t *out = file + 16 + (size_t)i * n;
        dae_noise_pixels(&r->noise, test->pixels + (size_t)i * n, clean, noisy, n, DAE_EVAL_SEED, (uint64_t)i);
        for (size_t j = 0; j < n; j++) out[j] = (uint8_t)lrintf(noisy[j] * 255.0f);
    }
    st = dae_file_write_atomic(path, file, len, err, errlen);
done:
    free(file);
    free(clean);
    free(noisy);
    return st;
}

/* ------------------------------------------------------------ command */

int cmd_eval(int argc, char **argv) {
    const char *model_list = NULL, *dataset = NULL, *data_dir = NULL, *noise_text = NULL;
    const char *sweep_list = NULL, *svg_path = NULL, *noisy_dir = NULL;
    int limit = 0, json = 0, threads = dae_online_cpus();
    cli_flag flags[] = {
        {"model", CLI_STRING, &model_list, 0, 0, "FILE[,FILE...]",
         "weights file or checkpoint (required); several with --sweep", 0},
        {"dataset", CLI_STRING, &dataset, 0, 0, "NAME", "data set whose test images to use (required)", 0},
        CLI_FLAG_DATA_DIR(&data_dir),
        {"limit", CLI_INT, &limit, 0, 0x7fffffff, "N", "use only the first N test images (default 0 = all)", 0},
        {"noise", CLI_STRING, &noise_text, 0, 0, "SPEC", "noise of the raw protocol (default gaussian:0.5)", 0},
        {"sweep", CLI_STRING, &sweep_list, 0, 0, "S1,S2,...",
         "png protocol at these Gaussian sigmas instead (up to 16, increasing)", 0},
        {"sweep-svg", CLI_STRING, &svg_path, 0, 0, "FILE", "with --sweep: also draw PSNR against sigma as SVG", 0},
        {"save-noisy", CLI_STRING, &noisy_dir, 0, 0, "DIR",
         "with --sweep: also write each sigma's noisy test images to DIR/noisy-SIGMA-images-idx3-ubyte", 0},
        CLI_FLAG_THREADS(&threads),
        {"json", CLI_BOOL, &json, 0, 0, NULL, "print JSON instead of a table", 0},
    };
    cli_command cmd = {NAME, "--model FILE --dataset NAME [flags]",
                       "Prints the mean per-image MSE, PSNR and SSIM over the test set of the model's output and of\n"
                       "its noisy input, against the clean images, under two protocols: raw (the noise as given)\n"
                       "and png (the same noise clipped to [0, 1] and quantised to 8 bits). The noise of image i\n"
                       "is drawn from a fixed evaluation seed and i, so numbers compare across runs and tools.\n"
                       "--sweep prints the png protocol's PSNR and SSIM at each Gaussian sigma for each model.",
                       flags, (int)(sizeof flags / sizeof flags[0]), 0, 0, "model,dataset"};
    const char *pos[1];
    int n_pos;
    int rc = cli_parse(&cmd, argc, argv, pos, &n_pos);
    if (rc != CLI_CONTINUE) return rc;
    char err[DAE_ERR_LEN] = "";
    /* Without --sweep: the raw and the png protocol of one noise. */
    eval_case rows[MAX_SIGMAS] = {{.text = "raw"}, {.text = "png"}};
    int n_rows = 2;
    if (sweep_list == NULL) {
        if (svg_path != NULL) return cli_usage_error(NAME, "--sweep-svg needs --sweep");
        if (noisy_dir != NULL) return cli_usage_error(NAME, "--save-noisy needs --sweep");
        if (strchr(model_list, ',') != NULL) return cli_usage_error(NAME, "--model: several models need --sweep");
        if (noise_text == NULL) noise_text = "gaussian:0.5";
        if (dae_noise_parse(noise_text, &rows[0].noise, err, sizeof err) != DAE_OK)
            return cli_usage_error(NAME, "--noise: %s", err);
        rows[1].noise = rows[0].noise;
        rows[1].noise.clip = rows[1].noise.quantize = 1;
        for (int p = 0; p < 2; p++) dae_noise_format(&rows[p].noise, rows[p].noise_text, sizeof rows[p].noise_text);
    } else {
        if (noise_text != NULL) return cli_usage_error(NAME, "--noise and --sweep cannot be combined");
        if ((n_rows = parse_sigmas(sweep_list, rows, err, sizeof err)) == 0)
            return cli_usage_error(NAME, "--sweep: %s", err);
    }

    eval_model models[MAX_MODELS] = {0};
    char *model_buf = malloc(strlen(model_list) + 1);
    int n_models = 0, exit_code = CLI_EXIT_FAILURE;
    dae_dataset data = {0};
    dae_pool *pool = NULL;
    char *svg = NULL, *path = NULL;
    if (model_buf == NULL) {
        cli_error(NAME, "out of memory");
        goto done;
    }
    if ((n_models = split_models(model_list, model_buf, models, err, sizeof err)) == 0) {
        exit_code = cli_usage_error(NAME, "--model: %s", err);
        goto done;
    }
    if (svg_path != NULL && cli_check_output(NAME, svg_path) != 0) goto done;
    for (int k = 0; k < n_models; k++) {
        int clash = cli_check_distinct(NAME, "--sweep-svg", svg_path, "--model", models[k].path, 1);
        if (clash != 0) {
            exit_code = clash;
            goto done;
        }
    }
    if (noisy_dir != NULL) { /* fail before the long evaluation, not after */
        if ((path = noisy_path(noisy_dir, rows[0].text)) == NULL) {
            cli_error(NAME, "out of memory");
            goto done;
        }
        if (cli_check_output(NAME, path) != 0) goto done;
    }
    for (int k = 0; k < n_models; k++) {
        if (dae_model_open(models[k].path, &models[k].m, NULL, err, sizeof err) != DAE_OK) {
            cli_error(NAME, "%s", err);
            goto done;
        }
    }
    rc = cli_load_dataset(NAME, data_dir, dataset, &models[0].m, &data);
    if (rc != 0) {
        exit_code = rc;
        goto done;
    }
    const dae_idx_images *test = &data.test_images;
    for (int k = 0; k < n_models; k++) {
        if (dae_model_check_images(&models[k].m, test, models[k].path, dataset, err, sizeof err) != DAE_OK) {
            cli_error(NAME, "%s", err);
            goto done;
        }
    }
    int count = dae_limit_count(limit, test->count);
    if (count < 1) {
        cli_error(NAME, "%s: the data set has no test images", dataset);
        goto done;
    }
    if (threads > 1) {
        dae_gemm_single_threaded();
        if ((pool = dae_pool_new(threads)) == NULL) {
            cli_error(NAME, "cannot start %d threads", threads);
            goto done;
        }
    }
    /* Each call draws the same noise (the evaluation seed), so the noisy
     * input's quality is the same for every model: keep the first. */
    for (int i = 0; i < n_rows; i++) {
        for (int k = 0; k < n_models; k++) {
            dae_quality other, *noisy = k > 0 ? &other : &rows[i].noisy;
            if (dae_evaluate(&models[k].m, pool, test->pixels, count, &rows[i].noise, DAE_EVAL_SEED,
                             &rows[i].denoised[k], noisy, err, sizeof err) != DAE_OK) {
                cli_error(NAME, "%s", err);
                goto done;
            }
        }
    }
    if ((sweep_list ? print_sweep(rows, n_rows, models, n_models, dataset, count, json)
                    : print_protocols(rows, models[0].path, dataset, count, json)) != 0) {
        cli_error(NAME, "out of memory");
        goto done;
    }
    if (fflush(stdout) != 0) {
        cli_error(NAME, "cannot write the results to standard output");
        goto done;
    }
    if (svg_path != NULL) {
        if ((svg = sweep_svg(rows, n_rows, models, n_models, dataset, count)) == NULL) {
            cli_error(NAME, "%s: out of memory", svg_path);
            goto done;
        }
        if (dae_file_write_atomic(svg_path, svg, strlen(svg), err, sizeof err) != DAE_OK) {
            cli_error(NAME, "%s", err);
            goto done;
        }
    }
    for (int i = 0; noisy_dir != NULL && i < n_rows; i++) {
        free(path);
        if ((path = noisy_path(noisy_dir, rows[i].text)) == NULL) {
            cli_error(NAME, "out of memory");
            goto done;
        }
        if (save_noisy(&rows[i], test, count, path, err, sizeof err) != DAE_OK) {
            cli_error(NAME, "%s", err);
            goto done;
        }
    }
    exit_code = 0;
done:
    free(path);
    free(svg);
    dae_pool_free(pool);
    dae_dataset_free(&data);
    for (int k = 0; k < n_models; k++) dae_model_free(&models[k].m);
    free(model_buf);
    return exit_code;
}
