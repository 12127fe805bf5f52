/* model.c - architecture spec parsing, parameter layout and initialisation,
 * forward/backward over a batch, and safetensors weights files. */
#include "model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "rng.h"

static const char DEFAULT_SPEC[] =
    "{\"input\":[1,28,28],"
    "\"encoder\":["
    "{\"type\":\"conv2d\",\"in_channels\":1,\"out_channels\":16,\"kernel_size\":3,\"stride\":2,\"padding\":1},"
    "{\"type\":\"relu\"},"
    "{\"type\":\"conv2d\",\"in_channels\":16,\"out_channels\":32,\"kernel_size\":3,\"stride\":2,\"padding\":1},"
    "{\"type\":\"relu\"},"
    "{\"type\":\"conv2d\",\"in_channels\":32,\"out_channels\":64,\"kernel_size\":7}],"
    "\"decoder\":["
    "{\"type\":\"conv_transpose2d\",\"in_channels\":64,\"out_channels\":32,\"kernel_size\":7},"
    "{\"type\":\"relu\"},"
    "{\"type\":\"conv_transpose2d\",\"in_channels\":32,\"out_channels\":16,\"kernel_size\":3,\"stride\":2,\"padding\":1,\"output_padding\":1},"
    "{\"type\":\"relu\"},"
    "{\"type\":\"conv_transpose2d\",\"in_channels\":16,\"out_channels\":1,\"kernel_size\":3,\"stride\":2,\"padding\":1,\"output_padding\":1},"
    "{\"type\":\"sigmoid\"}]}";

/* Largest kernel, stride, padding and image side a spec may ask for. */
enum { MAX_KERNEL = 64, MAX_STRIDE = 64, MAX_SIDE = 4096, MAX_CHANNELS = 4096 };

const char *dae_model_default_spec(void) { return DEFAULT_SPEC; }

static int is_conv(const dae_layer *l) {
    return l->kind == DAE_LAYER_CONV2D || l->kind == DAE_LAYER_CONV_TRANSPOSE2D;
}

/* ------------------------------------------------------------ spec parsing */

/* Reads member key of obj as an integer or an [h, w] pair in [lo, hi]; an
 * absent member gives def for both. Fails naming the layer and key. */
static dae_status read_pair(const cJSON *obj, const char *key, int def, int lo, int hi,
                            int out[2], const char *layer, char *err, size_t errlen) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    out[0] = out[1] = def;
    if (v == NULL) return DAE_OK;
    const cJSON *items[2] = {v, v};
    if (cJSON_IsArray(v)) {
        if (cJSON_GetArraySize(v) != 2)
            return dae_fail(err, errlen, DAE_ERR_INVALID,
                            "architecture: %s: \"%s\" must be an integer or [h, w]", layer, key);
        items[0] = cJSON_GetArrayItem(v, 0);
        items[1] = cJSON_GetArrayItem(v, 1);
    }
    for (int i = 0; i < 2; i++) {
        double d = cJSON_IsNumber(items[i]) ? items[i]->valuedouble : NAN;
        if (!(d >= lo && d <= hi) || d != floor(d))
            return dae_fail(err, errlen, DAE_ERR_INVALID,
                            "architecture: %s: \"%s\" must be an integer from %d to %d",
                            layer, key, lo, hi);
        out[i] = (int)d;
    }
    return DAE_OK;
}

/* Fails if obj has a member other than the allowed ones (a typo such as
 * "strides" must not be silently ignored). */
static dae_status check_keys(const cJSON *obj, const char *const *allowed, const char *layer,
                             char *err, size_t errlen) {
    for (const cJSON *it = obj->child; it != NULL; it = it->next) {
        int ok = 0;
        for (int i = 0; allowed[i] != NULL; i++) ok |= strcmp(it->string, allowed[i]) == 0;
        if (!ok)
            return dae_fail(err, errlen, DAE_ERR_INVALID, "architecture: %s: unknown field \"%s\"",
                            layer, it->string);
    }
    return DAE_OK;
}

/* Fills l (its kind, hyper-parameters and output shape) from one layer
 * object, given the shape arriving at it. */
static dae_status parse_layer(const cJSON *obj, dae_layer *l, int c, int h, int w,
                              char *err, size_t errlen) {
    static const char *const conv_keys[] = {"type", "in_channels", "out_channels", "kernel_size",
                                            "stride", "padding", "output_padding", NULL};
    static const char *const act_keys[] = {"type", NULL};
    if (!cJSON_IsObject(obj))
        return dae_fail(err, errlen, DAE_ERR_INVALID, "architecture: %s: a layer must be an object", l->name);
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(obj, "type");
    if (!cJSON_IsString(type))
        return dae_fail(err, errlen, DAE_ERR_INVALID, "architecture: %s: missing \"type\"", l->name);
    l->in_c = c, l->in_h = h, l->in_w = w;
    l->out_c = c, l->out_h = h, l->out_w = w;
    if (strcmp(type->valuestring, "relu") == 0 || strcmp(type->valuestring, "sigmoid") == 0) {
        l->kind = type->valuestring[0] == 'r' ? DAE_LAYER_RELU : DAE_LAYER_SIGMOID;
        return check_keys(obj, act_keys, l->name, err, errlen);
    }
    if (strcmp(type->valuestring, "conv2d") == 0) {
        l->kind = DAE_LAYER_CONV2D;
    } else if (strcmp(type->valuestring, "conv_transpose2d") == 0) {
        l->kind = DAE_LAYER_CONV_TRANSPOSE2D;
    } else {
        return dae_fail(err, errlen, DAE_ERR_INVALID,
                        "architecture: %s: unknown type \"%s\" (conv2d, conv_transpose2d, relu, sigmoid)",
                        l->name, type->valuestring);
    }
    dae_status st = check_keys(obj, conv_keys, l->name, err, errlen);
    int in_ch[2], out_ch[2], k[2], s[2], p[2], op[2];
    if (st == DAE_OK) st = read_pair(obj, "in_channels", -1, 1, MAX_CHANNELS, in_ch, l->name, err, errlen);
    if (st == DAE_OK) st = read_pair(obj, "out_channels", -1, 1, MAX_CHANNELS, out_ch, l->name, err, errlen);
    if (st == DAE_OK) st = read_pair(obj, "kernel_size", -1, 1, MAX_KERNEL, k, l->name, err, errlen);
    if (st == DAE_OK) st = read_pair(obj, "stride", 1, 1, MAX_STRIDE, s, l->name, err, errlen);
    if (st == DAE_OK) st = read_pair(obj, "padding", 0, 0, MAX_KERNEL, p, l->name, err, errlen);
    if (st == DAE_OK) st = read_pair(obj, "output_padding", 0, 0, MAX_STRIDE, op, l->name, err, errlen);
    if (st != DAE_OK) return st;
    if (in_ch[0] < 0 || out_ch[0] < 0 || k[0] < 0 || in_ch[0] != in_ch[1] || out_ch[0] != out_ch[1])
        return dae_fail(err, errlen, DAE_ERR_INVALID,
                        "architecture: %s: \"in_channels\", \"out_channels\" and \"kernel_size\" are required "
                        "(channels as one integer)", l->name);
    if (in_ch[0] != c)
        return dae_fail(err, errlen, DAE_ERR_INVALID,
                        "architecture: %s: in_channels is %d but the previous layer gives %d channels",
                        l->name, in_ch[0], c);
    l->out_c = out_ch[0];
    l->k_h = k[0], l->k_w = k[1], l->stride_h = s[0], l->stride_w = s[1];
    l->pad_h = p[0], l->pad_w = p[1], l->out_pad_h = op[0], l->out_pad_w = op[1];
    if (l->kind == DAE_LAYER_CONV2D) {
        if (op[0] || op[1])
            return dae_fail(err, errlen, DAE_ERR_INVALID,
                            "architecture: %s: output_padding is for conv_transpose2d only", l->name);
        l->out_h = (h + 2 * p[0] - k[0]) / s[0] + 1;
        l->out_w = (w + 2 * p[1] - k[1]) / s[1] + 1;
        if (h + 2 * p[0] < k[0] || w + 2 * p[1] < k[1])
            l->out_h = l->out_w = 0;
    } else {
        if (op[0] >= s[0] || op[1] >= s[1])
            return dae_fail(err, errlen, DAE_ERR_INVALID,
                            "architecture: %s: output_padding must be smaller than stride", l->name);
        l->out_h = (h - 1) * s[0] - 2 * p[0] + k[0] + op[0];
        l->out_w = (w - 1) * s[1] - 2 * p[1] + k[1] + op[1];
    }
    if (l->out_h < 1 || l->out_w < 1 || l->out_h > MAX_SIDE || l->out_w > MAX_SIDE)
        return dae_fail(err, errlen, DAE_ERR_INVALID,
                        "architecture: %s: a %dx%d input gives a %dx%d output", l->name, h, w,
                        l->out_h, l->out_w);
    return DAE_OK;
}

/* Appends the layers of one group (a JSON array) to m. */
static dae_status parse_group(dae_model *m, const char *group, const cJSON *list,
                              char *err, size_t errlen) {
    if (!cJSON_IsArray(list))
        return dae_fail(err, errlen, DAE_ERR_INVALID, "architecture: \"%s\" must be a list of layers", group);
    if (strlen(group) == 0 || strlen(group) > 24 || strspn(group, "abcdefghijklmnopqrstuvwxyz"
                                                                  "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") != strlen(group))
        return dae_fail(err, errlen, DAE_ERR_INVALID,
                        "architecture: group name \"%s\" must be 1-24 letters, digits or _", group);
    int index = 0;
    for (const cJSON *item = list->child; item != NULL; item = item->next, index++) {
        if (m->n_layers == DAE_MAX_LAYERS)
            return dae_fail(err, errlen, DAE_ERR_INVALID, "architecture: more than %d layers", DAE_MAX_LAYERS);
        dae_layer *l = &m->layers[m->n_layers];
        memset(l, 0, sizeof *l);
        snprintf(l->name, sizeof l->name, "%s.%d", group, index);
        int c = m->in_c, h = m->in_h, w = m->in_w;
        if (m->n_layers > 0) {
            const dae_layer *prev = &m->layers[m->n_layers - 1];
            c = prev->out_c, h = prev->out_h, w = prev->out_w;
        }
        dae_status st = parse_layer(item, l, c, h, w, err, errlen);
        if (st != DAE_OK) return st;
        m->n_layers++;
    }
    return DAE_OK;
}

/* Adds one layer's canonical JSON object to array. */
static void add_layer_json(cJSON *array, const dae_layer *l) {
    cJSON *o = cJSON_CreateObject();
    static const char *const kinds[] = {"conv2d", "conv_transpose2d", "relu", "sigmoid"};
    cJSON_AddStringToObject(o, "type", kinds[l->kind]);
    if (is_conv(l)) {
        cJSON_AddNumberToObject(o, "in_channels", l->in_c);
        cJSON_AddNumberToObject(o, "out_channels", l->out_c);
        const char *keys[] = {"kernel_size", "stride", "padding", "output_padding"};
        int values[4][2] = {{l->k_h, l->k_w}, {l->stride_h, l->stride_w},
                            {l->pad_h, l->pad_w}, {l->out_pad_h, l->out_pad_w}};
        int defaults[4] = {-1, 1, 0, 0};
        for (int i = 0; i < 4; i++) {
            if (values[i][0] == defaults[i] && values[i][1] == defaults[i]) continue;
            if (values[i][0] == values[i][1]) {
                cJSON_AddNumberToObject(o, keys[i], values[i][0]);
            } else {
                cJSON_AddItemToObject(o, keys[i], cJSON_CreateIntArray(values[i], 2));
            }
        }
    }
    cJSON_AddItemToArray(array, o);
}

/* Returns the canonical spec text of m's layers (malloc'd), or NULL. */
static char *canonical_spec(const dae_model *m) {
    cJSON *root = cJSON_CreateObject();
    int input[3] = {m->in_c, m->in_h, m->in_w};
    cJSON_AddItemToObject(root, "input", cJSON_CreateIntArray(input, 3));
    cJSON *group = NULL;
    char group_name[DAE_LAYER_NAME_LEN] = "";
    for (int i = 0; i < m->n_layers; i++) {
        const char *name = m->layers[i].name;
        size_t len = (size_t)(strrchr(name, '.') - name);
        if (group == NULL || strncmp(group_name, name, len) != 0 || group_name[len] != '\0') {
            memcpy(group_name, name, len);
            group_name[len] = '\0';
            group = cJSON_AddArrayToObject(root, group_name);
        }
        add_layer_json(group, &m->layers[i]);
    }
    char *text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return text;
}

dae_status dae_model_init(dae_model *m, const char *spec_json, char *err, size_t errlen) {
    memset(m, 0, sizeof *m);
    m->in_c = 1, m->in_h = 28, m->in_w = 28;
    cJSON *root = cJSON_Parse(spec_json);
    if (root == NULL)
        return dae_fail(err, errlen, DAE_ERR_INVALID, "architecture: not valid JSON");
    dae_status st = DAE_OK;
    if (cJSON_IsArray(root)) {
        st = parse_group(m, "layers", root, err, errlen);
    } else if (cJSON_IsObject(root)) {
        const cJSON *input = cJSON_GetObjectItemCaseSensitive(root, "input");
        if (input != NULL) {
            int dims[3];
            int n = cJSON_GetArraySize(input);
            for (int i = 0; i < 3 && i < n; i++) {
                const cJSON *d = cJSON_GetArrayItem(input, i);
                dims[i] = cJSON_IsNumber(d) && d->valuedouble >= 1 && d->valuedouble <= MAX_SIDE &&
                                  d->valuedouble == floor(d->valuedouble)
                              ? (int)d->valuedouble : 0;
            }
            if (!cJSON_IsArray(input) || n != 3 || !dims[0] || !dims[1] || !dims[2] || dims[0] > MAX_CHANNELS) {
                st = dae_fail(err, errlen, DAE_ERR_INVALID,
                              "architecture: \"input\" must be [channels, height, width] of positive integers");
            } else {
                m->in_c = dims[0], m->in_h = dims[1], m->in_w = dims[2];
            }
        }
        for (const cJSON *g = root->child; g != NULL && st == DAE_OK; g = g->next)
            if (strcmp(g->string, "input") != 0) st = parse_group(m, g->string, g, err, errlen);
    } else {
        st = dae_fail(err, errlen, DAE_ERR_INVALID, "architecture: must be a JSON object or list");
    }
    cJSON_Delete(root);
    if (st != DAE_OK) {
        m->n_layers = 0;
        return st;
    }
    if (m->n_layers == 0)
        return dae_fail(err, errlen, DAE_ERR_INVALID, "architecture: no layers");
    const dae_layer *last = &m->layers[m->n_layers - 1];
    if (last->out_c != m->in_c || last->out_h != m->in_h || last->out_w != m->in_w)
        return dae_fail(err, errlen, DAE_ERR_INVALID,
                        "architecture: the output is %dx%dx%d but an autoencoder must give back its "
                        "input's shape %dx%dx%d", last->out_c, last->out_h, last->out_w,
                        m->in_c, m->in_h, m->in_w);
    size_t offset = 0;
    int convs = 0;
    for (int i = 0; i < m->n_layers; i++) {
        dae_layer *l = &m->layers[i];
        if (!is_conv(l)) continue;
        convs++;
        l->weight_offset = offset;
        l->weight_count = (size_t)l->in_c * l->out_c * l->k_h * l->k_w;
        l->bias_offset = offset + l->weight_count;
        offset = l->bias_offset + l->out_c;
    }
    if (convs == 0)
        return dae_fail(err, errlen, DAE_ERR_INVALID, "architecture: no convolution, nothing to learn");
    m->n_params = offset;
    m->params = calloc(offset, sizeof(float));
    m->spec = canonical_spec(m);
    if (m->params == NULL || m->spec == NULL) {
        dae_model_free(m);
        return dae_fail(err, errlen, DAE_ERR_NOMEM, "architecture: out of memory for %zu parameters", offset);
    }
    return DAE_OK;
}

void dae_model_free(dae_model *m) {
    free(m->params);
    cJSON_free(m->spec);
    memset(m, 0, sizeof *m);
}

void dae_model_init_params(dae_model *m, uint64_t seed) {
    for (int i = 0; i < m->n_layers; i++) {
        const dae_layer *l = &m->layers[i];
        if (!is_conv(l)) continue;
        /* weight.size(1): in_channels for conv2d, out_channels transposed */
        int dim1 = l->kind == DAE_LAYER_CONV2D ? l->in_c : l->out_c;
        float bound = 1.0f / sqrtf((float)dim1 * l->k_h * l->k_w);
        dae_rng rng;
        dae_rng_seed(&rng, seed, (uint64_t)i);
        float *p = m->params + l->weight_offset;
        size_t n = l->weight_count + (size_t)l->out_c;
        for (size_t j = 0; j < n; j++) p[j] = (2.0f * dae_rng_uniform(&rng) - 1.0f) * bound;
    }
}

dae_status dae_model_clone(dae_model *dst, const dae_model *src, char *err, size_t errlen) {
    dae_status st = dae_model_init(dst, src->spec, err, errlen);
    if (st == DAE_OK) memcpy(dst->params, src->params, sizeof(float) * src->n_params);
    return st;
}

int dae_model_tensor_count(const dae_model *m) {
    int n = 0;
    for (int i = 0; i < m->n_layers; i++) n += is_conv(&m->layers[i]) ? 2 : 0;
    return n;
}

void dae_model_tensor_info(const dae_model *m, int index, char *name, size_t name_len,
                           int *ndim, int64_t shape[4], size_t *offset, size_t *count) {
    int n = 0;
    for (int i = 0; i < m->n_layers; i++) {
        const dae_layer *l = &m->layers[i];
        if (!is_conv(l)) continue;
        if (n == index) {
            snprintf(name, name_len, "%s.weight", l->name);
            *ndim = 4;
            shape[0] = l->kind == DAE_LAYER_CONV2D ? l->out_c : l->in_c;
            shape[1] = l->kind == DAE_LAYER_CONV2D ? l->in_c : l->out_c;
            shape[2] = l->k_h;
            shape[3] = l->k_w;
            *offset = l->weight_offset;
            *count = l->weight_count;
            return;
        }
        if (n + 1 == index) {
            snprintf(name, name_len, "%s.bias", l->name);
            *ndim = 1;
            shape[0] = l->out_c;
            *offset = l->bias_offset;
            *count = (size_t)l->out_c;
            return;
        }
        n += 2;
    }
}

size_t dae_model_image_size(const dae_model *m) {
    return (size_t)m->in_c * m->in_h * m->in_w;
}

double dae_model_forward_macs(const dae_model *m) {
    double macs = 0.0;
    for (int i = 0; i < m->n_layers; i++) {
        const dae_layer *l = &m->layers[i];
        if (l->kind == DAE_LAYER_CONV2D)
            macs += (double)l->out_c * l->out_h * l->out_w * l->in_c * l->k_h * l->k_w;
        else if (l->kind == DAE_LAYER_CONV_TRANSPOSE2D)
            macs += (double)l->in_c * l->in_h * l->in_w * l->out_c * l->k_h * l->k_w;
    }
    return macs;
}

/* ------------------------------------------------------------ workspaces */

struct dae_workspace {
    int max_batch;
    int for_training;
    float *act[DAE_MAX_LAYERS]; /* each layer's output, (B,H,W,C); activations alias */
    float *input;               /* the input in (B,H,W,C) when C > 1 */
    float *target;              /* the training target in (B,H,W,C) when C > 1 */
    float *col;                 /* im2col scratch */
    float *grad[2];             /* ping-pong activation gradients (training) */
    float *pool[2];             /* ping-pong activations (inference) */
};

static size_t layer_out_size(const dae_layer *l) {
    return (size_t)l->out_c * l->out_h * l->out_w;
}

static dae_conv_geom layer_geom(const dae_layer *l, int batch) {
    dae_conv_geom g = {
        .batch = batch, .in_c = l->in_c, .in_h = l->in_h, .in_w = l->in_w,
        .out_c = l->out_c, .out_h = l->out_h, .out_w = l->out_w,
        .k_h = l->k_h, .k_w = l->k_w, .stride_h = l->stride_h, .stride_w = l->stride_w,
        .pad_h = l->pad_h, .pad_w = l->pad_w, .out_pad_h = l->out_pad_h, .out_pad_w = l->out_pad_w,
    };
    return g;
}

static float *alloc_floats(size_t n) {
    size_t bytes = (n * sizeof(float) + 63) / 64 * 64;
    return aligned_alloc(64, bytes ? bytes : 64);
}

void dae_workspace_free(dae_workspace *ws) {
    if (ws == NULL) return;
    if (ws->for_training) {
        for (int i = 0; i < DAE_MAX_LAYERS; i++)
            if (ws->act[i] != NULL && (i == 0 || ws->act[i] != ws->act[i - 1])) free(ws->act[i]);
    }
    free(ws->pool[0]);
    free(ws->pool[1]);
    free(ws->input);
    free(ws->target);
    free(ws->col);
    free(ws->grad[0]);
    free(ws->grad[1]);
    free(ws);
}

/* The per-image float counts a workspace is sized from: the largest
 * activation (or the input) and the largest im2col buffer of m. */
static void workspace_sizes(const dae_model *m, size_t *biggest, size_t *col) {
    *biggest = dae_model_image_size(m);
    *col = 0;
    for (int i = 0; i < m->n_layers; i++) {
        const dae_layer *l = &m->layers[i];
        dae_conv_geom g = layer_geom(l, 1);
        if (layer_out_size(l) > *biggest) *biggest = layer_out_size(l);
        if (l->kind == DAE_LAYER_CONV2D && dae_conv2d_col_size(&g) > *col) *col = dae_conv2d_col_size(&g);
        if (l->kind == DAE_LAYER_CONV_TRANSPOSE2D && dae_conv_transpose2d_col_size(&g) > *col)
            *col = dae_conv_transpose2d_col_size(&g);
    }
}

/* Bytes of n floats as alloc_floats allocates them. */
static size_t floats_bytes(size_t n) {
    size_t bytes = (n * sizeof(float) + 63) / 64 * 64;
    return bytes ? bytes : 64;
}

size_t dae_workspace_bytes(const dae_model *m, int max_batch, int for_training) {
    if (max_batch < 1) return 0;
    /* The same arithmetic as dae_workspace_new, buffer by buffer. */
    size_t b = (size_t)max_batch, biggest, col;
    workspace_sizes(m, &biggest, &col);
    size_t bytes = sizeof(dae_workspace) + floats_bytes(col * b);
    if (m->in_c > 1) bytes += floats_bytes(dae_model_image_size(m) * b) * (for_training ? 2 : 1);
    if (for_training)
        for (int i = 0; i < m->n_layers; i++)
            if (i == 0 || is_conv(&m->layers[i])) bytes += floats_bytes(layer_out_size(&m->layers[i]) * b);
    return bytes + 2 * floats_bytes(biggest * b); /* grad[2] for training, pool[2] otherwise */
}

dae_workspace *dae_workspace_new(const dae_model *m, int max_batch, int for_training) {
    if (max_batch < 1) return NULL;
    dae_workspace *ws = calloc(1, sizeof *ws);
    if (ws == NULL) return NULL;
    ws->max_batch = max_batch;
    ws->for_training = for_training;
    size_t b = (size_t)max_batch, biggest, col;
    workspace_sizes(m, &biggest, &col);
    int ok = (ws->col = alloc_floats(col * b)) != NULL;
    if (m->in_c > 1) {
        ok = ok && (ws->input = alloc_floats(dae_model_image_size(m) * b)) != NULL;
        ok = ok && (!for_training || (ws->target = alloc_floats(dae_model_image_size(m) * b)) != NULL);
    }
    if (for_training) {
        /* Every convolution (and a leading activation) keeps its output for
         * the backward pass; activations work in place on it. */
        for (int i = 0; i < m->n_layers && ok; i++) {
            if (i > 0 && !is_conv(&m->layers[i])) {
                ws->act[i] = ws->act[i - 1];
                continue;
            }
            ok = (ws->act[i] = alloc_floats(layer_out_size(&m->layers[i]) * b)) != NULL;
        }
        ok = ok && (ws->grad[0] = alloc_floats(biggest * b)) != NULL;
        ok = ok && (ws->grad[1] = alloc_floats(biggest * b)) != NULL;
    } else {
        ok = ok && (ws->pool[0] = alloc_floats(biggest * b)) != NULL;
        ok = ok && (ws->pool[1] = alloc_floats(biggest * b)) != NULL;
    }
    if (!ok) {
        dae_workspace_free(ws);
        return NULL;
    }
    return ws;
}

int dae_workspace_max_batch(const dae_workspace *ws) { return ws->max_batch; }

/* ------------------------------------------------------ forward/backward */

/* Copies images from (B, C, plane) to (B, plane, C): NCHW -> NHWC, or back
 * when to_nchw. */
static void convert_images(float *dst, const float *src, int batch, int c, size_t plane, int to_nchw) {
    for (int b = 0; b < batch; b++) {
        const float *s = src + (size_t)b * c * plane;
        float *d = dst + (size_t)b * c * plane;
        for (int ch = 0; ch < c; ch++)
            for (size_t p = 0; p < plane; p++) {
                if (to_nchw) d[ch * plane + p] = s[p * c + ch];
                else d[p * c + ch] = s[ch * plane + p];
            }
    }
}

/* True when layer i is a ReLU that the convolution before it applies
 * (fused into its bias pass). */
static int relu_is_fused(const dae_model *m, int i) {
    return i > 0 && m->layers[i].kind == DAE_LAYER_RELU && is_conv(&m->layers[i - 1]);
}

/* Runs every layer on in (NHWC) and returns the output, which lives in the
 * workspace. In training mode each layer's output stays in ws->act. */
static const float *run_forward(const dae_model *m, dae_workspace *ws, const float *in, int batch) {
    const float *x = in;
    for (int i = 0; i < m->n_layers; i++) {
        const dae_layer *l = &m->layers[i];
        size_t n = layer_out_size(l) * (size_t)batch;
        float *y;
        if (ws->for_training) {
            y = ws->act[i];
        } else {
            y = (i > 0 && !is_conv(l)) ? (float *)x : (x == ws->pool[0] ? ws->pool[1] : ws->pool[0]);
        }
        dae_conv_geom g = layer_geom(l, batch);
        const float *w = m->params + l->weight_offset, *bias = m->params + l->bias_offset;
        int relu = relu_is_fused(m, i + 1);
        switch (l->kind) {
        case DAE_LAYER_CONV2D: dae_conv2d_forward(y, x, w, bias, &g, relu, ws->col); break;
        case DAE_LAYER_CONV_TRANSPOSE2D: dae_conv_transpose2d_forward(y, x, w, bias, &g, relu, ws->col); break;
        case DAE_LAYER_RELU:
            if (relu_is_fused(m, i)) break;
            if (y != x) memcpy(y, x, n * sizeof(float));
            dae_relu_forward(y, n);
            break;
        case DAE_LAYER_SIGMOID:
            if (y != x) memcpy(y, x, n * sizeof(float));
            dae_sigmoid_forward(y, n);
            break;
        }
        x = y;
    }
    return x;
}

/* The network's input in NHWC: in itself for one channel. */
static const float *input_nhwc(const dae_model *m, dae_workspace *ws, const float *in, int batch) {
    if (m->in_c == 1) return in;
    convert_images(ws->input, in, batch, m->in_c, (size_t)m->in_h * m->in_w, 0);
    return ws->input;
}

void dae_model_forward(const dae_model *m, dae_workspace *ws, const float *in,
                       float *out, int batch) {
    const float *y = run_forward(m, ws, input_nhwc(m, ws, in, batch), batch);
    size_t plane = (size_t)m->in_h * m->in_w;
    if (m->in_c == 1)
        memcpy(out, y, plane * batch * sizeof(float));
    else
        convert_images(out, y, batch, m->in_c, plane, 1);
}

double dae_model_train_pass(const dae_model *m, dae_workspace *ws, const float *noisy,
                            const float *clean, int batch, size_t loss_denom,
                            float *grads, float *out) {
    const float *x0 = input_nhwc(m, ws, noisy, batch);
    const float *y = run_forward(m, ws, x0, batch);
    const float *target = clean;
    size_t plane = (size_t)m->in_h * m->in_w, n = dae_model_image_size(m) * batch;
    if (m->in_c > 1) {
        convert_images(ws->target, clean, batch, m->in_c, plane, 0);
        target = ws->target;
    }
    if (out != NULL) {
        if (m->in_c == 1) memcpy(out, y, n * sizeof(float));
        else convert_images(out, y, batch, m->in_c, plane, 1);
    }
    double sse = dae_mse_loss_forward(y, target, n) * (double)n;
    float *g = ws->grad[0], *g_next = ws->grad[1];
    dae_mse_loss_backward(g, y, target, n, loss_denom);
    for (int i = m->n_layers - 1; i >= 0; i--) {
        const dae_layer *l = &m->layers[i];
        const float *x = i == 0 ? x0 : ws->act[i - 1];
        size_t count = layer_out_size(l) * (size_t)batch;
        dae_conv_geom geom = layer_geom(l, batch);
        const float *w = m->params + l->weight_offset;
        float *gw = grads + l->weight_offset, *gb = grads + l->bias_offset;
        float *din = i == 0 ? NULL : g_next;
        switch (l->kind) {
        case DAE_LAYER_RELU: dae_relu_backward(g, g, ws->act[i], count); continue;
        case DAE_LAYER_SIGMOID: dae_sigmoid_backward(g, g, ws->act[i], count); continue;
        case DAE_LAYER_CONV2D: dae_conv2d_backward(din, gw, gb, g, x, w, &geom, ws->col); break;
        case DAE_LAYER_CONV_TRANSPOSE2D:
            dae_conv_transpose2d_backward(din, gw, gb, g, x, w, &geom, ws->col);
            break;
        }
        g_next = g;
        g = din;
    }
    return sse;
}

/* ------------------------------------------------------------ named tensors */

/* Converts every conv weight of values (laid out as m->params) between the
 * engine's layout and PyTorch's; biases are copied. */
static void convert_params(const dae_model *m, float *dst, const float *src, int to_torch) {
    for (int i = 0; i < m->n_layers; i++) {
        const dae_layer *l = &m->layers[i];
        if (!is_conv(l)) continue;
        int a = l->kind == DAE_LAYER_CONV2D ? l->out_c : l->in_c;
        int c = l->kind == DAE_LAYER_CONV2D ? l->in_c : l->out_c;
        if (to_torch)
            dae_weight_to_torch(dst + l->weight_offset, src + l->weight_offset, a, c, l->k_h, l->k_w);
        else
            dae_weight_from_torch(dst + l->weight_offset, src + l->weight_offset, a, c, l->k_h, l->k_w);
        memcpy(dst + l->bias_offset, src + l->bias_offset, sizeof(float) * l->out_c);
    }
}

int dae_model_describe_tensors(const dae_model *m, const char *prefix, const float *values,
                               float *torch_values, dae_st_tensor *tensors,
                               char (*names)[DAE_TENSOR_NAME_LEN]) {
    int n = dae_model_tensor_count(m);
    convert_params(m, torch_values, values, 1);
    for (int i = 0; i < n; i++) {
        char name[DAE_TENSOR_NAME_LEN];
        size_t offset = 0, count = 0;
        dae_st_tensor *t = &tensors[i];
        memset(t, 0, sizeof *t);
        dae_model_tensor_info(m, i, name, sizeof name, &t->ndim, t->shape, &offset, &count);
        snprintf(names[i], DAE_TENSOR_NAME_LEN, "%s%s", prefix, name);
        t->name = names[i];
        t->numel = count;
        t->data = torch_values + offset;
    }
    return n;
}

/* Formats a shape as "(a,b,c)" into buf. */
static void format_shape(char *buf, size_t len, const int64_t *shape, int ndim) {
    size_t used = (size_t)snprintf(buf, len, "(");
    for (int d = 0; d < ndim && used < len; d++)
        used += (size_t)snprintf(buf + used, len - used, "%s%lld", d ? "," : "", (long long)shape[d]);
    if (used < len) snprintf(buf + used, len - used, ")");
}

dae_status dae_model_read_tensors(const dae_model *m, const dae_st_file *f, const char *prefix,
                                  float *values, char *err, size_t errlen) {
    dae_st_tensor want[DAE_MAX_LAYERS * 2];
    char names[DAE_MAX_LAYERS * 2][DAE_TENSOR_NAME_LEN];
    float *torch_values = malloc(sizeof(float) * m->n_params);
    if (torch_values == NULL) return dae_fail(err, errlen, DAE_ERR_NOMEM, "out of memory reading tensors");
    int n = dae_model_describe_tensors(m, prefix, values, torch_values, want, names);
    dae_status st = DAE_OK;
    for (int i = 0; i < n && st == DAE_OK; i++) {
        const dae_st_tensor *t = dae_st_find(f, want[i].name);
        if (t == NULL) {
            st = dae_fail(err, errlen, DAE_ERR_FORMAT,
                          "missing tensor \"%s\" required by the architecture", want[i].name);
            break;
        }
        int same = t->ndim == want[i].ndim;
        for (int d = 0; same && d < t->ndim; d++) same = t->shape[d] == want[i].shape[d];
        if (!same) {
            char got[96], need[96];
            format_shape(got, sizeof got, t->shape, t->ndim);
            format_shape(need, sizeof need, want[i].shape, want[i].ndim);
            st = dae_fail(err, errlen, DAE_ERR_FORMAT,
                          "tensor \"%s\" has shape %s, the architecture needs %s", want[i].name, got, need);
            break;
        }
        memcpy(want[i].data, t->data, t->numel * sizeof(float));
    }
    if (st == DAE_OK) convert_params(m, values, torch_values, 0);
    free(torch_values);
    return st;
}

dae_status dae_model_from_safetensors(dae_model *m, const dae_st_file *f, char *err, size_t errlen) {
    const char *spec = dae_st_meta(f, "architecture");
    dae_status st = dae_model_init(m, spec != NULL ? spec : DEFAULT_SPEC, err, errlen);
    if (st == DAE_OK) st = dae_model_read_tensors(m, f, "", m->params, err, errlen);
    /* Every tensor was found, so any extra one makes the count differ. */
    for (int i = 0; st == DAE_OK && i < f->n_tensors && f->n_tensors != dae_model_tensor_count(m); i++) {
        const char *name = f->tensors[i].name;
        const char *dot = strrchr(name, '.');
        int known = 0;
        for (int l = 0; dot != NULL && l < m->n_layers && !known; l++)
            known = is_conv(&m->layers[l]) && strlen(m->layers[l].name) == (size_t)(dot - name) &&
                    strncmp(m->layers[l].name, name, (size_t)(dot - name)) == 0 &&
                    (strcmp(dot, ".weight") == 0 || strcmp(dot, ".bias") == 0);
        if (!known)
            st = dae_fail(err, errlen, DAE_ERR_FORMAT, "unexpected tensor \"%s\" not in the architecture", name);
    }
    if (st != DAE_OK) dae_model_free(m);
    return st;
}
