/* modelfile.c - model weights and training checkpoints as safetensors
 * files: the engine's named tensors (model.h) written with dae_st_save and
 * read back with dae_st_load, and the one loader that accepts either kind. */
#include "modelfile.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fileio.h"
#include "safetensors.h"

/* ------------------------------------------------------------ weights */

dae_status dae_model_save(const dae_model *m, const char *path,
                          const char *const *meta_keys, const char *const *meta_values,
                          int n_meta, char *err, size_t errlen) {
    dae_st_tensor tensors[DAE_MAX_LAYERS * 2];
    char names[DAE_MAX_LAYERS * 2][DAE_TENSOR_NAME_LEN];
    const char *keys[64], *values[64];
    if (n_meta > 62)
        return dae_fail(err, errlen, DAE_ERR_INVALID, "%s: too many metadata entries", path);
    float *torch_values = malloc(sizeof(float) * m->n_params);
    if (torch_values == NULL) return dae_fail(err, errlen, DAE_ERR_NOMEM, "%s: out of memory", path);
    int n = dae_model_describe_tensors(m, "", m->params, torch_values, tensors, names);
    keys[0] = "format", values[0] = "dae-weights-1";
    keys[1] = "architecture", values[1] = m->spec;
    for (int i = 0; i < n_meta; i++) keys[i + 2] = meta_keys[i], values[i + 2] = meta_values[i];
    dae_status st = dae_st_save(path, tensors, n, keys, values, n_meta + 2, err, errlen);
    free(torch_values);
    return st;
}

dae_status dae_model_load(dae_model *m, const char *path, char *err, size_t errlen) {
    dae_st_file f = {0};
    memset(m, 0, sizeof *m);
    dae_status st = dae_st_load(path, &f, err, errlen);
    if (st != DAE_OK) return st;
    char detail[DAE_ERR_LEN];
    st = dae_model_from_safetensors(m, &f, detail, sizeof detail);
    if (st != DAE_OK) dae_fail(err, errlen, st, "%s: %s", path, detail);
    dae_st_free(&f);
    return st;
}

/* ------------------------------------------------------------ checkpoints */

dae_status dae_checkpoint_save(const char *path, const dae_model *m, const dae_train_state *s,
                               char *err, size_t errlen) {
    int n = dae_model_tensor_count(m);
    dae_st_tensor tensors[DAE_MAX_LAYERS * 6];
    char names[DAE_MAX_LAYERS * 6][DAE_TENSOR_NAME_LEN];
    float *torch_values = malloc(sizeof(float) * m->n_params * 3);
    if (torch_values == NULL) return dae_fail(err, errlen, DAE_ERR_NOMEM, "%s: out of memory", path);
    dae_model_describe_tensors(m, "model.", m->params, torch_values, tensors, names);
    dae_model_describe_tensors(m, "adam.exp_avg.", s->adam.m, torch_values + m->n_params, tensors + n, names + n);
    dae_model_describe_tensors(m, "adam.exp_avg_sq.", s->adam.v, torch_values + 2 * m->n_params, tensors + 2 * n,
                               names + 2 * n);
    char step[32], epochs[32], lr[32], wd[32];
    snprintf(step, sizeof step, "%ld", s->adam.step);
    snprintf(epochs, sizeof epochs, "%d", s->epochs_done);
    snprintf(lr, sizeof lr, "%.9g", (double)s->adam.lr);
    snprintf(wd, sizeof wd, "%.9g", (double)s->adam.weight_decay);
    const char *keys[] = {"format", "architecture", "adam_step", "epochs_done", "learning_rate", "weight_decay"};
    const char *values[] = {"dae-checkpoint-1", m->spec, step, epochs, lr, wd};
    dae_status st = dae_st_save(path, tensors, 3 * n, keys, values, 6, err, errlen);
    free(torch_values);
    return st;
}

/* Reads a non-negative integer metadata value. */
static int meta_long(const dae_st_file *f, const char *key, long *out) {
    const char *v = dae_st_meta(f, key);
    char *end;
    if (v == NULL) return 0;
    long x = strtol(v, &end, 10);
    if (end == v || *end != '\0' || x < 0) return 0;
    *out = x;
    return 1;
}

/* Builds m and s from a parsed checkpoint; detail says what is wrong
 * (without the path). On failure both are freed and zeroed. */
static dae_status checkpoint_from_st(const dae_st_file *f, dae_model *m, dae_train_state *s, char *detail,
                                     size_t detail_len) {
    dae_status st = DAE_OK;
    memset(m, 0, sizeof *m);
    memset(s, 0, sizeof *s);
    const char *format = dae_st_meta(f, "format");
    const char *spec = dae_st_meta(f, "architecture");
    long step = 0, epochs = 0;
    if (format == NULL || strcmp(format, "dae-checkpoint-1") != 0 || spec == NULL ||
        !meta_long(f, "adam_step", &step) || !meta_long(f, "epochs_done", &epochs) || epochs > 100000) {
        st = dae_fail(detail, detail_len, DAE_ERR_FORMAT,
                      "not a dae checkpoint (needs format, architecture, adam_step and epochs_done metadata)");
    }
    if (st == DAE_OK) st = dae_model_init(m, spec, detail, detail_len);
    if (st == DAE_OK) st = dae_adam_init(&s->adam, m->n_params, 1e-3f, 0.0f, detail, detail_len);
    if (st == DAE_OK) st = dae_model_read_tensors(m, f, "model.", m->params, detail, detail_len);
    if (st == DAE_OK) dae_model_params_changed(m);
    if (st == DAE_OK) st = dae_model_read_tensors(m, f, "adam.exp_avg.", s->adam.m, detail, detail_len);
    if (st == DAE_OK) st = dae_model_read_tensors(m, f, "adam.exp_avg_sq.", s->adam.v, detail, detail_len);
    if (st != DAE_OK) {
        dae_train_state_free(s);
        dae_model_free(m);
        return st;
    }
    s->adam.step = step;
    s->epochs_done = (int)epochs;
    return DAE_OK;
}

dae_status dae_checkpoint_load(const char *path, dae_model *m, dae_train_state *s,
                               char *err, size_t errlen) {
    dae_st_file f = {0};
    char detail[DAE_ERR_LEN];
    memset(m, 0, sizeof *m);
    memset(s, 0, sizeof *s);
    dae_status st = dae_st_load(path, &f, err, errlen);
    if (st != DAE_OK) return st;
    st = checkpoint_from_st(&f, m, s, detail, sizeof detail);
    dae_st_free(&f);
    if (st != DAE_OK) return dae_fail(err, errlen, st, "%s: %s", path, detail);
    return DAE_OK;
}

/* ------------------------------------------------------------ either kind */

dae_status dae_model_parse(const uint8_t *buf, size_t len, const char *name, dae_model *m, dae_model_info *info,
                           char *err, size_t errlen) {
    dae_st_file f = {0};
    char detail[DAE_ERR_LEN] = "";
    memset(m, 0, sizeof *m);
    if (info != NULL) memset(info, 0, sizeof *info);
    dae_status st = dae_st_parse_named(buf, len, name, &f, err, errlen);
    if (st != DAE_OK) return st;
    const char *format = dae_st_meta(&f, "format");
    int checkpoint = format != NULL && strcmp(format, "dae-checkpoint-1") == 0;
    if (checkpoint) {
        dae_train_state s;
        st = checkpoint_from_st(&f, m, &s, detail, sizeof detail);
        if (st == DAE_OK) dae_train_state_free(&s);
    } else {
        st = dae_model_from_safetensors(m, &f, detail, sizeof detail);
    }
    if (st != DAE_OK) {
        dae_st_free(&f);
        return dae_fail(err, errlen, st, "%s: %s", name, detail);
    }
    if (info != NULL) {
        /* The metadata moves from f to info: no copy. */
        info->kind = checkpoint ? DAE_MODEL_FILE_CHECKPOINT : DAE_MODEL_FILE_WEIGHTS;
        info->meta.meta_keys = f.meta_keys, info->meta.meta_values = f.meta_values;
        info->meta.n_meta = f.n_meta;
        f.meta_keys = f.meta_values = NULL;
        f.n_meta = 0;
    }
    dae_st_free(&f);
    return DAE_OK;
}

dae_status dae_model_open(const char *path, dae_model *m, dae_model_info *info, char *err, size_t errlen) {
    uint8_t *buf = NULL;
    size_t len = 0;
    memset(m, 0, sizeof *m);
    if (info != NULL) memset(info, 0, sizeof *info);
    dae_status st = dae_file_read(path, SIZE_MAX - 1, &buf, &len, err, errlen);
    if (st != DAE_OK) return st;
    st = dae_model_parse(buf, len, path, m, info, err, errlen);
    free(buf);
    return st;
}
