/* cmd_forward.c - `dae forward`: runs the model on a tensor of images read
 * from a safetensors file and writes the raw float outputs, for checking
 * the engine against PyTorch (tools/check_pytorch.py) and for batch
 * inference on prepared data. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "safetensors.h"

static const char NAME[] = "forward";

int cmd_forward(int argc, char **argv) {
    const char *model_flag = NULL, *name = "input";
    int threads = dae_online_cpus();
    cli_flag flags[] = {
        CLI_FLAG_MODEL(&model_flag),
        {"tensor", CLI_STRING, &name, 0, 0, "NAME", "the input tensor's name (default input)", 0},
        CLI_FLAG_THREADS(&threads),
    };
    cli_command cmd = {NAME, "IN.safetensors OUT.safetensors [flags]",
                       "Runs the network on the images of IN's tensor (N x C x H x W, float32, the model's\n"
                       "input shape) and writes its outputs, same shape, as the tensor \"output\" of OUT.",
                       flags, (int)(sizeof flags / sizeof flags[0]), 2, 2, NULL};
    const char *pos[2];
    int n_pos;
    int rc = cli_parse(&cmd, argc, argv, pos, &n_pos);
    if (rc != CLI_CONTINUE) return rc;
    if (cli_check_output(NAME, pos[1]) != 0) return CLI_EXIT_FAILURE;

    char err[DAE_ERR_LEN] = "";
    dae_model m;
    char model_file[PATH_MAX];
    if ((rc = cli_open_model(NAME, model_flag, &m, model_file, sizeof model_file, "OUT", pos[1])) != 0) return rc;
    dae_st_file in = {0};
    if (dae_st_load(pos[0], &in, err, sizeof err) != DAE_OK) {
        dae_model_free(&m);
        return cli_error(NAME, "%s", err);
    }
    const dae_st_tensor *t = dae_st_find(&in, name);
    rc = 0;
    if (t == NULL) {
        rc = cli_error(NAME, "%s: no tensor named \"%s\"", pos[0], name);
    } else if (t->ndim != 4 || t->shape[1] != m.in_c || t->shape[2] != m.in_h || t->shape[3] != m.in_w ||
               t->shape[0] < 1 || t->shape[0] > 1000000) {
        rc = cli_error(NAME, "%s: tensor \"%s\" must be N x %d x %d x %d with 1 <= N <= 1000000", pos[0], name,
                       m.in_c, m.in_h, m.in_w);
    }
    dae_pool *pool = NULL;
    dae_workspace **ws = NULL;
    float *out = NULL;
    if (rc == 0) rc = cli_workers_new(NAME, &m, threads, 64, &pool, &ws);
    if (rc == 0 && (out = malloc(t->numel * sizeof(float))) == NULL) rc = cli_error(NAME, "out of memory");
    if (rc == 0) {
        dae_forward_parallel(&m, pool, ws, t->data, out, (int)t->shape[0]);
        dae_st_tensor result = {.name = "output", .ndim = 4, .numel = t->numel, .data = out};
        memcpy(result.shape, t->shape, sizeof result.shape);
        const char *keys[] = {"model"}, *values[] = {model_file};
        if (dae_st_save(pos[1], &result, 1, keys, values, 1, err, sizeof err) != DAE_OK) rc = cli_error(NAME, "%s", err);
    }
    free(out);
    if (ws != NULL) cli_workers_free(pool, ws, threads);
    dae_st_free(&in);
    dae_model_free(&m);
    return rc;
}
