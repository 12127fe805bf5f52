/* cmd_info.c - `dae info`: what a weights file or training checkpoint
 * holds: the architecture layer by layer with shapes, the parameter count
 * and every metadata entry. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const char NAME[] = "info";

/* Formats tensor i's shape as "16x1x3x3". */
static void tensor_shape(const dae_model *m, int i, char *buf, size_t len) {
    char name[DAE_TENSOR_NAME_LEN];
    int ndim;
    int64_t shape[4];
    size_t offset, count;
    dae_model_tensor_info(m, i, name, sizeof name, &ndim, shape, &offset, &count);
    size_t used = 0;
    buf[0] = '\0';
    for (int d = 0; d < ndim && used < len; d++)
        used += (size_t)snprintf(buf + used, len - used, "%s%lld", d ? "x" : "", (long long)shape[d]);
}

int cmd_info(int argc, char **argv) {
    cli_command cmd = {NAME, "FILE",
                       "Prints the architecture (each layer with its input and output shape and its tensors), the\n"
                       "parameter count and all metadata of a weights file (ours or one saved from PyTorch) or of\n"
                       "a training checkpoint.",
                       NULL, 0, 1, 1, NULL};
    const char *pos[1];
    int n_pos;
    int rc = cli_parse(&cmd, argc, argv, pos, &n_pos);
    if (rc != CLI_CONTINUE) return rc;
    const char *path = pos[0];
    char err[DAE_ERR_LEN] = "";
    dae_model m;
    dae_model_info info;
    if (dae_model_open(path, &m, &info, err, sizeof err) != DAE_OK) return cli_error(NAME, "%s", err);
    const dae_st_file *f = &info.meta;
    const char *format = dae_st_meta(f, "format");
    int checkpoint = info.kind == DAE_MODEL_FILE_CHECKPOINT;

    printf("file        %s\n", path);
    printf("kind        %s (%s)\n", checkpoint ? "training checkpoint" : "weights",
           format != NULL ? format : "no format metadata: a file saved outside dae");
    printf("input       %dx%dx%d\n", m.in_c, m.in_h, m.in_w);
    printf("output      %s\n", m.residual ? "residual: the input minus the last layer, clamped to [0, 1]"
                                          : "the last layer");
    printf("parameters  %zu (%.2f MB as float32)\n", m.n_params, m.n_params * 4.0 / 1e6);
    printf("forward     %.3f M multiply-adds per image\n", dae_model_forward_macs(&m) / 1e6);
    printf("layers\n");
    int tensor = 0;
    for (int i = 0; i < m.n_layers; i++) {
        const dae_layer *l = &m.layers[i];
        char in[32], out[32], hyper[64] = "", tensors[96] = "";
        snprintf(in, sizeof in, "%dx%dx%d", l->in_c, l->in_h, l->in_w);
        snprintf(out, sizeof out, "%dx%dx%d", l->out_c, l->out_h, l->out_w);
        if (l->kind == DAE_LAYER_CONV2D || l->kind == DAE_LAYER_CONV_TRANSPOSE2D) {
            int used = snprintf(hyper, sizeof hyper, "k%dx%d s%d p%d", l->k_h, l->k_w, l->stride_h, l->pad_h);
            if (l->out_pad_h || l->out_pad_w) snprintf(hyper + used, sizeof hyper - (size_t)used, " op%d", l->out_pad_h);
            char w[32], b[32];
            tensor_shape(&m, tensor, w, sizeof w);
            tensor_shape(&m, tensor + 1, b, sizeof b);
            snprintf(tensors, sizeof tensors, "weight %s, bias %s", w, b);
            tensor += 2;
        }
        if (l->n_inputs != 1 || l->inputs[0] != i - 1) { /* not simply the layer above */
            int used = snprintf(hyper, sizeof hyper, "of");
            for (int q = 0; q < l->n_inputs && used < (int)sizeof hyper; q++)
                used += snprintf(hyper + used, sizeof hyper - (size_t)used, "%s%s", q ? ", " : " ",
                                 l->inputs[q] == DAE_NETWORK_INPUT ? "input" : m.layers[l->inputs[q]].name);
        }
        if (tensors[0] != '\0' || hyper[0] != '\0')
            printf("  %-11s %-17s %-10s -> %-10s %-16s %s\n", l->name, dae_layer_kind_name(l->kind), in, out, hyper, tensors);
        else
            printf("  %-11s %-17s %-10s -> %s\n", l->name, dae_layer_kind_name(l->kind), in, out);
    }
    printf("metadata\n");
    if (f->n_meta == 0) printf("  (none)\n");
    /* The architecture spec, long and already shown above, goes last. */
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < f->n_meta; i++) {
            int is_arch = strcmp(f->meta_keys[i], "architecture") == 0;
            if (is_arch == (pass == 1)) printf("  %-15s %s\n", f->meta_keys[i], f->meta_values[i]);
        }
    dae_st_free(&info.meta);
    dae_model_free(&m);
    if (fflush(stdout) != 0) return cli_error(NAME, "cannot write to standard output");
    return 0;
}
