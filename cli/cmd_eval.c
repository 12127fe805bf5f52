/* cmd_eval.c - `dae eval`: the test-set quality of a model and of the noisy
 * input it gets, under two protocols: raw (the noise as given, unclipped
 * floats, as the original notebook) and png (the same noise clipped to
 * [0, 1] and quantised to 8 bits, as an uploaded PNG carries). A table for
 * people, --json for machines. */
#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli.h"
#include "gemm.h"

static const char NAME[] = "eval";

typedef struct {
    const char *name;
    dae_noise_spec noise;
    char noise_text[DAE_NOISE_TEXT_LEN];
    dae_quality denoised, noisy;
} protocol;

/* Adds {"mse", "psnr", "ssim"} of q to parent under key; cJSON prints a
 * non-finite number as null. */
static void add_quality(cJSON *parent, const char *key, const dae_quality *q) {
    cJSON *o = cJSON_AddObjectToObject(parent, key);
    cJSON_AddNumberToObject(o, "mse", dae_quality_mse(q));
    cJSON_AddNumberToObject(o, "psnr", dae_quality_psnr(q));
    cJSON_AddNumberToObject(o, "ssim", dae_quality_ssim(q));
}

int cmd_eval(int argc, char **argv) {
    const char *model_path = NULL, *dataset = NULL, *data_dir = NULL, *noise_text = "gaussian:0.5";
    int limit = 0, json = 0, threads = dae_online_cpus();
    cli_flag flags[] = {
        {"model", CLI_STRING, &model_path, 0, 0, "FILE", "weights file or checkpoint (required)", 0},
        {"dataset", CLI_STRING, &dataset, 0, 0, "NAME", "data set whose test images to use (required)", 0},
        CLI_FLAG_DATA_DIR(&data_dir),
        {"limit", CLI_INT, &limit, 0, 0x7fffffff, "N", "use only the first N test images (default 0 = all)", 0},
        {"noise", CLI_STRING, &noise_text, 0, 0, "SPEC", "noise of the raw protocol (default gaussian:0.5)", 0},
        CLI_FLAG_THREADS(&threads),
        {"json", CLI_BOOL, &json, 0, 0, NULL, "print JSON instead of a table", 0},
    };
    cli_command cmd = {NAME, "--model FILE --dataset NAME [flags]",
                       "Prints the mean per-image MSE, PSNR and SSIM over the test set of the model's output and of\n"
                       "its noisy input, against the clean images, under two protocols: raw (the noise as given)\n"
                       "and png (the same noise clipped to [0, 1] and quantised to 8 bits). The noise of image i\n"
                       "is drawn from a fixed evaluation seed and i, so numbers compare across runs and tools.",
                       flags, (int)(sizeof flags / sizeof flags[0]), 0, 0, "model,dataset"};
    const char *pos[1];
    int n_pos;
    int rc = cli_parse(&cmd, argc, argv, pos, &n_pos);
    if (rc != CLI_CONTINUE) return rc;
    char err[DAE_ERR_LEN] = "";
    protocol protos[2] = {{.name = "raw"}, {.name = "png"}};
    if (dae_noise_parse(noise_text, &protos[0].noise, err, sizeof err) != DAE_OK)
        return cli_usage_error(NAME, "--noise: %s", err);
    protos[1].noise = protos[0].noise;
    protos[1].noise.clip = protos[1].noise.quantize = 1;
    for (int p = 0; p < 2; p++) dae_noise_format(&protos[p].noise, protos[p].noise_text, sizeof protos[p].noise_text);

    dae_model m;
    if (dae_model_open(model_path, &m, NULL, err, sizeof err) != DAE_OK) return cli_error(NAME, "%s", err);
    dae_dataset data;
    rc = cli_load_dataset(NAME, data_dir, dataset, &data);
    if (rc != 0) {
        dae_model_free(&m);
        return rc;
    }
    const dae_idx_images *test = &data.test_images;
    int exit_code = CLI_EXIT_FAILURE;
    dae_pool *pool = NULL;
    if (dae_model_check_images(&m, test, model_path, dataset, err, sizeof err) != DAE_OK) {
        cli_error(NAME, "%s", err);
        goto done;
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
    for (int p = 0; p < 2; p++) {
        if (dae_evaluate(&m, pool, test->pixels, count, &protos[p].noise, DAE_EVAL_SEED, &protos[p].denoised,
                         &protos[p].noisy, err, sizeof err) != DAE_OK) {
            cli_error(NAME, "%s", err);
            goto done;
        }
    }
    if (json) {
        cJSON *root = cJSON_CreateObject();
        cJSON_AddStringToObject(root, "model", model_path);
        cJSON_AddStringToObject(root, "dataset", dataset);
        cJSON_AddNumberToObject(root, "test_images", count);
        cJSON_AddStringToObject(root, "noise", protos[0].noise_text);
        cJSON_AddNumberToObject(root, "seed", (double)DAE_EVAL_SEED);
        for (int p = 0; p < 2; p++) {
            cJSON *o = cJSON_AddObjectToObject(root, protos[p].name);
            cJSON_AddStringToObject(o, "noise", protos[p].noise_text);
            add_quality(o, "noisy", &protos[p].noisy);
            add_quality(o, "denoised", &protos[p].denoised);
        }
        char *text = cJSON_Print(root);
        cJSON_Delete(root);
        if (text == NULL) {
            cli_error(NAME, "out of memory");
            goto done;
        }
        printf("%s\n", text);
        free(text);
    } else {
        printf("model    %s\n", model_path);
        printf("dataset  %s, %d test images, evaluation seed %llu\n\n", dataset, count,
               (unsigned long long)DAE_EVAL_SEED);
        printf("%-9s %-30s %-9s %10s %10s %8s\n", "protocol", "noise", "image", "MSE", "PSNR dB", "SSIM");
        for (int p = 0; p < 2; p++) {
            const dae_quality *q[2] = {&protos[p].noisy, &protos[p].denoised};
            const char *what[2] = {"noisy", "denoised"};
            for (int k = 0; k < 2; k++)
                printf("%-9s %-30s %-9s %10.5f %10.2f %8.4f\n", protos[p].name, protos[p].noise_text, what[k],
                       dae_quality_mse(q[k]), dae_quality_psnr(q[k]), dae_quality_ssim(q[k]));
        }
    }
    if (fflush(stdout) != 0) {
        cli_error(NAME, "cannot write the results to standard output");
        goto done;
    }
    exit_code = 0;
done:
    dae_pool_free(pool);
    dae_dataset_free(&data);
    dae_model_free(&m);
    return exit_code;
}
