/* model.c - architecture spec parsing, parameter layout and initialisation,
 * the workspace's buffers, forward/backward over a batch through the layer
 * graph, and parameters as named tensors. */
#include "model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef __linux__
#include <sys/mman.h>
#endif

#include <cJSON.h>

#include "denormals.h"
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

/* The notebook's encoder and decoder with U-Net skips: each decoder stage
 * also sees the encoder's output of its size, the last convolution sees
 * the input itself, and the network predicts the noise (residual output),
 * so a clean image passes through untouched instead of through a
 * 64-number bottleneck. */
static const char UNET_SPEC[] =
    "{\"input\":[1,28,28],\"output\":\"residual\","
    "\"e1\":[{\"type\":\"conv2d\",\"in_channels\":1,\"out_channels\":16,\"kernel_size\":3,\"stride\":2,\"padding\":1},"
    "{\"type\":\"relu\"}],"
    "\"e2\":[{\"type\":\"conv2d\",\"in_channels\":16,\"out_channels\":32,\"kernel_size\":3,\"stride\":2,\"padding\":1},"
    "{\"type\":\"relu\"}],"
    "\"z\":[{\"type\":\"conv2d\",\"in_channels\":32,\"out_channels\":64,\"kernel_size\":7}],"
    "\"g\":[{\"type\":\"conv_transpose2d\",\"in_channels\":64,\"out_channels\":32,\"kernel_size\":7},"
    "{\"type\":\"relu\"}],"
    "\"d2\":[{\"type\":\"concat\",\"inputs\":[\"g\",\"e2\"]},"
    "{\"type\":\"conv_transpose2d\",\"in_channels\":64,\"out_channels\":16,\"kernel_size\":3,\"stride\":2,\"padding\":1,\"output_padding\":1},"
    "{\"type\":\"relu\"}],"
    "\"d1\":[{\"type\":\"concat\",\"inputs\":[\"d2\",\"e1\"]},"
    "{\"type\":\"conv_transpose2d\",\"in_channels\":32,\"out_channels\":16,\"kernel_size\":3,\"stride\":2,\"padding\":1,\"output_padding\":1},"
    "{\"type\":\"relu\"}],"
    "\"out\":[{\"type\":\"concat\",\"inputs\":[\"d1\",\"input\"]},"
    "{\"type\":\"conv2d\",\"in_channels\":17,\"out_channels\":1,\"kernel_size\":3,\"padding\":1}]}";

static const struct {
    const char *name, *spec;
} NAMED_SPECS[] = {{"ae", DEFAULT_SPEC}, {"unet", UNET_SPEC}};

/* Largest kernel, stride, padding and image side a spec may ask for. */
enum { MAX_KERNEL = 64, MAX_STRIDE = 64, MAX_SIDE = 4096, MAX_CHANNELS = 4096 };

const char *dae_model_default_spec(void) { return DEFAULT_SPEC; }

const char *dae_model_named_spec(const char *name) {
    for (size_t i = 0; i < sizeof NAMED_SPECS / sizeof NAMED_SPECS[0]; i++)
        if (strcmp(NAMED_SPECS[i].name, name) == 0) return NAMED_SPECS[i].spec;
    return NULL;
}

const char *dae_model_arch_names(void) { return "ae, unet"; }

static int is_conv(const dae_layer *l) {
    return l->kind == DAE_LAYER_CONV2D || l->kind == DAE_LAYER_CONV_TRANSPOSE2D;
}

static const char *const KIND_NAMES[] = {"conv2d", "conv_transpose2d", "relu", "sigmoid", "concat", "add"};

const char *dae_layer_kind_name(dae_layer_kind kind) { return KIND_NAMES[kind]; }

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

/* The shape of one image at layer k's output, or at the network's input. */
static void node_shape(const dae_model *m, int k, int *c, int *h, int *w) {
    if (k == DAE_NETWORK_INPUT) {
        *c = m->in_c, *h = m->in_h, *w = m->in_w;
    } else {
        *c = m->layers[k].out_c, *h = m->layers[k].out_h, *w = m->layers[k].out_w;
    }
}

/* Length of the group part of a layer name ("encoder" of "encoder.3"). */
static size_t group_len(const char *layer_name) {
    return (size_t)(strrchr(layer_name, '.') - layer_name);
}

/* The layer a name of "inputs" refers to among those parsed so far:
 * "input", "G.j", or "G" for the latest layer of group G; -2 when none. */
static int find_node(const dae_model *m, const char *name) {
    if (strcmp(name, "input") == 0) return DAE_NETWORK_INPUT;
    int found = -2;
    int whole_group = strchr(name, '.') == NULL;
    for (int i = 0; i < m->n_layers; i++) {
        const char *ln = m->layers[i].name;
        if (strcmp(ln, name) == 0) return i;
        if (whole_group && group_len(ln) == strlen(name) && strncmp(ln, name, strlen(name)) == 0) found = i;
    }
    return found;
}

/* Fills l->inputs from the layer's "inputs" (default: the layer before it,
 * or the network's input for the first). */
static dae_status read_inputs(const cJSON *obj, dae_model *m, dae_layer *l, char *err, size_t errlen) {
    const cJSON *inputs = cJSON_GetObjectItemCaseSensitive(obj, "inputs");
    if (inputs == NULL) {
        l->n_inputs = 1;
        l->inputs[0] = m->n_layers - 1; /* DAE_NETWORK_INPUT for the first layer */
        return DAE_OK;
    }
    int n = cJSON_GetArraySize(inputs);
    if (!cJSON_IsArray(inputs) || n < 1 || n > DAE_MAX_INPUTS)
        return dae_fail(err, errlen, DAE_ERR_INVALID,
                        "architecture: %s: \"inputs\" must be a list of 1 to %d layer names", l->name,
                        DAE_MAX_INPUTS);
    l->n_inputs = 0;
    for (const cJSON *it = inputs->child; it != NULL; it = it->next) {
        int k = cJSON_IsString(it) ? find_node(m, it->valuestring) : -2;
        if (k >= 0 && strchr(it->valuestring, '.') == NULL &&
            strncmp(l->name, it->valuestring, group_len(l->name)) == 0 && group_len(l->name) == strlen(it->valuestring))
            k = -2; /* its own group, whose last layer is not before it */
        if (k == -2)
            return dae_fail(err, errlen, DAE_ERR_INVALID,
                            "architecture: %s: input \"%s\" is neither \"input\" nor an earlier layer "
                            "(\"group\" for its last layer, or \"group.index\")",
                            l->name, cJSON_IsString(it) ? it->valuestring : "?");
        l->inputs[l->n_inputs++] = k;
    }
    return DAE_OK;
}

/* Checks a concat's or an add's inputs and sets its shapes: the same
 * height and width (an add: the same channels too). */
static dae_status join_shapes(const dae_model *m, dae_layer *l, char *err, size_t errlen) {
    if (l->n_inputs < 2)
        return dae_fail(err, errlen, DAE_ERR_INVALID, "architecture: %s: %s takes two or more \"inputs\"",
                        l->name, KIND_NAMES[l->kind]);
    int c0, h0, w0;
    node_shape(m, l->inputs[0], &c0, &h0, &w0);
    l->in_c = 0;
    for (int q = 0; q < l->n_inputs; q++) {
        int c, h, w;
        node_shape(m, l->inputs[q], &c, &h, &w);
        if (h != h0 || w != w0 || (l->kind == DAE_LAYER_ADD && c != c0))
            return dae_fail(err, errlen, DAE_ERR_INVALID,
                            "architecture: %s: its inputs are %dx%dx%d and %dx%dx%d; %s needs the same %s",
                            l->name, c0, h0, w0, c, h, w, KIND_NAMES[l->kind],
                            l->kind == DAE_LAYER_ADD ? "shape" : "height and width");
        l->in_c += c;
    }
    if (l->kind == DAE_LAYER_ADD) l->in_c = c0;
    l->out_c = l->in_c;
    return DAE_OK;
}

/* Fills layer l (the next one of m): its kind, inputs, hyper-parameters
 * and shapes, from one layer object. */
static dae_status parse_layer(const cJSON *obj, dae_model *m, dae_layer *l, char *err, size_t errlen) {
    static const char *const conv_keys[] = {"type", "inputs", "in_channels", "out_channels", "kernel_size",
                                            "stride", "padding", "output_padding", NULL};
    static const char *const plain_keys[] = {"type", "inputs", NULL};
    if (!cJSON_IsObject(obj))
        return dae_fail(err, errlen, DAE_ERR_INVALID, "architecture: %s: a layer must be an object", l->name);
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(obj, "type");
    if (!cJSON_IsString(type))
        return dae_fail(err, errlen, DAE_ERR_INVALID, "architecture: %s: missing \"type\"", l->name);
    int kind = -1;
    for (int k = 0; k < (int)(sizeof KIND_NAMES / sizeof KIND_NAMES[0]); k++)
        if (strcmp(type->valuestring, KIND_NAMES[k]) == 0) kind = k;
    if (kind < 0)
        return dae_fail(err, errlen, DAE_ERR_INVALID,
                        "architecture: %s: unknown type \"%s\" (conv2d, conv_transpose2d, relu, sigmoid, "
                        "concat, add)", l->name, type->valuestring);
    l->kind = (dae_layer_kind)kind;
    dae_status st = check_keys(obj, is_conv(l) ? conv_keys : plain_keys, l->name, err, errlen);
    if (st == DAE_OK) st = read_inputs(obj, m, l, err, errlen);
    if (st != DAE_OK) return st;
    int c, h, w;
    node_shape(m, l->inputs[0], &c, &h, &w);
    l->in_c = c, l->in_h = h, l->in_w = w;
    l->out_c = c, l->out_h = h, l->out_w = w;
    if (l->kind == DAE_LAYER_CONCAT || l->kind == DAE_LAYER_ADD) return join_shapes(m, l, err, errlen);
    if (l->n_inputs != 1)
        return dae_fail(err, errlen, DAE_ERR_INVALID, "architecture: %s: %s takes one input, not %d",
                        l->name, KIND_NAMES[l->kind], l->n_inputs);
    if (!is_conv(l)) return DAE_OK;
    int in_ch[2], out_ch[2], k[2], s[2], p[2], op[2];
    st = read_pair(obj, "in_channels", -1, 1, MAX_CHANNELS, in_ch, l->name, err, errlen);
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
                        "architecture: %s: in_channels is %d but its input gives %d channels",
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
    for (int i = 0; i < m->n_layers; i++)
        if (group_len(m->layers[i].name) == strlen(group) && strncmp(m->layers[i].name, group, strlen(group)) == 0)
            return dae_fail(err, errlen, DAE_ERR_INVALID, "architecture: group \"%s\" is given twice", group);
    int index = 0;
    for (const cJSON *item = list->child; item != NULL; item = item->next, index++) {
        if (m->n_layers == DAE_MAX_LAYERS)
            return dae_fail(err, errlen, DAE_ERR_INVALID, "architecture: more than %d layers", DAE_MAX_LAYERS);
        dae_layer *l = &m->layers[m->n_layers];
        memset(l, 0, sizeof *l);
        snprintf(l->name, sizeof l->name, "%s.%d", group, index);
        dae_status st = parse_layer(item, m, l, err, errlen);
        if (st != DAE_OK) return st;
        m->n_layers++;
    }
    return DAE_OK;
}

/* Writes the name "inputs" uses for layer k into buf: "input", the group's
 * name for a group's last layer, else the layer's own name. */
static void node_name(const dae_model *m, int k, char *buf, size_t len) {
    if (k == DAE_NETWORK_INPUT) {
        snprintf(buf, len, "input");
        return;
    }
    const char *name = m->layers[k].name;
    size_t group = group_len(name);
    int last_of_group = k == m->n_layers - 1 || group_len(m->layers[k + 1].name) != group ||
                        strncmp(m->layers[k + 1].name, name, group) != 0;
    snprintf(buf, len, "%.*s", last_of_group ? (int)group : (int)strlen(name), name);
}

/* Adds layer i's canonical JSON object to array. */
static void add_layer_json(cJSON *array, const dae_model *m, int i) {
    const dae_layer *l = &m->layers[i];
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", KIND_NAMES[l->kind]);
    if (l->n_inputs != 1 || l->inputs[0] != i - 1) {
        cJSON *inputs = cJSON_AddArrayToObject(o, "inputs");
        for (int q = 0; q < l->n_inputs; q++) {
            char name[DAE_LAYER_NAME_LEN];
            node_name(m, l->inputs[q], name, sizeof name);
            cJSON_AddItemToArray(inputs, cJSON_CreateString(name));
        }
    }
    if (is_conv(l)) {
        cJSON_AddNumberToObject(o, "in_channels", l->in_c);
        cJSON_AddNumberToObject(o, "out_channels", l->out_c);
        const char *keys[] = {"kernel_size", "stride", "padding", "output_padding"};
        int values[4][2] = {{l->k_h, l->k_w}, {l->stride_h, l->stride_w},
                            {l->pad_h, l->pad_w}, {l->out_pad_h, l->out_pad_w}};
        int defaults[4] = {-1, 1, 0, 0};
        for (int k = 0; k < 4; k++) {
            if (values[k][0] == defaults[k] && values[k][1] == defaults[k]) continue;
            if (values[k][0] == values[k][1]) {
                cJSON_AddNumberToObject(o, keys[k], values[k][0]);
            } else {
                cJSON_AddItemToObject(o, keys[k], cJSON_CreateIntArray(values[k], 2));
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
    if (m->residual) cJSON_AddStringToObject(root, "output", "residual");
    cJSON *group = NULL;
    for (int i = 0; i < m->n_layers; i++) {
        const char *name = m->layers[i].name;
        if (i == 0 || group_len(m->layers[i - 1].name) != group_len(name) ||
            strncmp(m->layers[i - 1].name, name, group_len(name)) != 0) {
            char group_name[DAE_LAYER_NAME_LEN];
            snprintf(group_name, sizeof group_name, "%.*s", (int)group_len(name), name);
            group = cJSON_AddArrayToObject(root, group_name);
        }
        add_layer_json(group, m, i);
    }
    char *text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return text;
}

/* Reads the spec's "input" and "output" members into m. */
static dae_status read_input_output(dae_model *m, const cJSON *root, char *err, size_t errlen) {
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
        if (!cJSON_IsArray(input) || n != 3 || !dims[0] || !dims[1] || !dims[2] || dims[0] > MAX_CHANNELS)
            return dae_fail(err, errlen, DAE_ERR_INVALID,
                            "architecture: \"input\" must be [channels, height, width] of positive integers");
        m->in_c = dims[0], m->in_h = dims[1], m->in_w = dims[2];
    }
    const cJSON *output = cJSON_GetObjectItemCaseSensitive(root, "output");
    if (output != NULL) {
        if (!cJSON_IsString(output) ||
            (strcmp(output->valuestring, "direct") != 0 && strcmp(output->valuestring, "residual") != 0))
            return dae_fail(err, errlen, DAE_ERR_INVALID,
                            "architecture: \"output\" must be \"direct\" or \"residual\"");
        m->residual = strcmp(output->valuestring, "residual") == 0;
    }
    return DAE_OK;
}

/* Counts each layer's readers and decides what may share memory: an
 * activation whose input has no other reader works in place, and a ReLU
 * in place on a convolution is done by the convolution. Every layer but the
 * last must be read, or it is a mistake in the spec. */
static int relu_in_place(const dae_layer *l) { return l->kind == DAE_LAYER_RELU && l->in_place; }

static dae_status link_layers(dae_model *m, char *err, size_t errlen) {
    for (int i = 0; i < m->n_layers; i++)
        for (int q = 0; q < m->layers[i].n_inputs; q++)
            if (m->layers[i].inputs[q] != DAE_NETWORK_INPUT) m->layers[m->layers[i].inputs[q]].consumers++;
    for (int i = 0; i < m->n_layers; i++) {
        dae_layer *l = &m->layers[i];
        if (l->consumers == 0 && i < m->n_layers - 1)
            return dae_fail(err, errlen, DAE_ERR_INVALID,
                            "architecture: %s: its output is never used (only the last layer's is the result)",
                            l->name);
        int k = l->inputs[0];
        l->in_place = (l->kind == DAE_LAYER_RELU || l->kind == DAE_LAYER_SIGMOID) &&
                      k != DAE_NETWORK_INPUT && m->layers[k].consumers == 1;
        if (relu_in_place(l) && is_conv(&m->layers[k]))
            l->relu_fused = m->layers[k].relu_fused = 1;
    }
    return DAE_OK;
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

/* The floats params take in the weights' block: whole vectors, so the
 * prepared weights after them start on one. */
static size_t params_floats(size_t n_params) { return (n_params + 15) / 16 * 16; }

/* The weights (params, then the prepared weights), zeroed, in one block.
 * From WEIGHTS_HUGE_MIN bytes up, the block is whole 2 MB pages that the
 * kernel is asked to back with transparent huge pages: a huge page is
 * contiguous in physical memory, so the weights' cache lines spread evenly
 * over the L2's sets, where 4 KB pages put wherever the kernel found room
 * crowded some sets and evicted weights the next image needed. The U-Net's
 * 7x7 bottleneck and its transpose (400 KB of weights each, read once an
 * image) took 5.7 and 6.1 us at batch 1 on a 2 MB L2 against 2.8 alone;
 * in a huge page 3.3 and 3.1 (a Xeon with AVX-512, one core). Without
 * huge pages (refused, or not Linux) the block is ordinary memory. */
enum { HUGE_PAGE_BYTES = 2 << 20, WEIGHTS_HUGE_MIN = 256 << 10 };

/* The bytes a block of floats weights takes: whole huge pages from
 * WEIGHTS_HUGE_MIN up. */
static size_t weights_block_bytes(size_t floats) {
    size_t bytes = floats * sizeof(float);
#ifdef MADV_HUGEPAGE
    if (bytes >= WEIGHTS_HUGE_MIN) return (bytes + HUGE_PAGE_BYTES - 1) / HUGE_PAGE_BYTES * HUGE_PAGE_BYTES;
#endif
    return bytes;
}

static float *alloc_weights(size_t floats) {
    size_t bytes = weights_block_bytes(floats);
#ifdef MADV_HUGEPAGE
    if (bytes >= WEIGHTS_HUGE_MIN) {
        void *p = NULL;
        if (posix_memalign(&p, HUGE_PAGE_BYTES, bytes) != 0) return NULL;
        madvise(p, bytes, MADV_HUGEPAGE); /* a hint: on failure, 4 KB pages */
        memset(p, 0, bytes);
        return p;
    }
#endif
    return calloc(floats > 0 ? floats : 1, sizeof(float));
}

static int concat_split(const dae_model *m, int i, int for_training);

/* Layer i's weight's rows when its weight gradient is a sum of outer
 * products over the batch and its input is not a concatenation read
 * where its parts lie; else 0. */
static int outer_rows(const dae_model *m, int i) {
    const dae_layer *l = &m->layers[i];
    int transposed = l->kind == DAE_LAYER_CONV_TRANSPOSE2D;
    dae_conv_geom g = layer_geom(l, 1);
    if ((i > 0 && concat_split(m, i - 1, 1)) || !dae_conv_weight_grad_is_outer(&g, transposed)) return 0;
    return transposed ? l->in_c : l->out_c;
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
        st = read_input_output(m, root, err, errlen);
        for (const cJSON *g = root->child; g != NULL && st == DAE_OK; g = g->next)
            if (strcmp(g->string, "input") != 0 && strcmp(g->string, "output") != 0)
                st = parse_group(m, g->string, g, err, errlen);
    } else {
        st = dae_fail(err, errlen, DAE_ERR_INVALID, "architecture: must be a JSON object or list");
    }
    cJSON_Delete(root);
    if (st == DAE_OK && m->n_layers == 0) st = dae_fail(err, errlen, DAE_ERR_INVALID, "architecture: no layers");
    if (st == DAE_OK) st = link_layers(m, err, errlen);
    if (st != DAE_OK) {
        m->n_layers = 0;
        return st;
    }
    const dae_layer *last = &m->layers[m->n_layers - 1];
    if (last->out_c != m->in_c || last->out_h != m->in_h || last->out_w != m->in_w)
        return dae_fail(err, errlen, DAE_ERR_INVALID,
                        "architecture: the output is %dx%dx%d but an autoencoder must give back its "
                        "input's shape %dx%dx%d", last->out_c, last->out_h, last->out_w,
                        m->in_c, m->in_h, m->in_w);
    size_t offset = 0, prepared = 0;
    int convs = 0;
    for (int i = 0; i < m->n_layers; i++) {
        dae_layer *l = &m->layers[i];
        if (!is_conv(l)) continue;
        convs++;
        l->weight_offset = offset;
        l->weight_count = (size_t)l->in_c * l->out_c * l->k_h * l->k_w;
        l->bias_offset = offset + l->weight_count;
        offset = l->bias_offset + l->out_c;
        dae_conv_geom g = layer_geom(l, 1);
        l->prepared_offset = prepared;
        l->prepared_count = l->kind == DAE_LAYER_CONV2D ? dae_conv2d_prepared_size(&g)
                                                        : dae_conv_transpose2d_prepared_size(&g);
        l->prepared_packed = dae_conv_prepared_is_packed(&g, l->kind == DAE_LAYER_CONV_TRANSPOSE2D);
        prepared += (l->prepared_count + 15) / 16 * 16; /* each a whole number of vectors */
        l->outer_rows = outer_rows(m, i);
    }
    if (convs == 0)
        return dae_fail(err, errlen, DAE_ERR_INVALID, "architecture: no convolution, nothing to learn");
    m->n_params = offset;
    m->n_prepared = prepared;
    m->params = alloc_weights(params_floats(offset) + prepared);
    m->prepared = m->params != NULL ? m->params + params_floats(offset) : NULL;
    m->spec = canonical_spec(m);
    if (m->params == NULL || m->spec == NULL) {
        dae_model_free(m);
        return dae_fail(err, errlen, DAE_ERR_NOMEM, "architecture: out of memory for %zu parameters", offset);
    }
    dae_model_params_changed(m);
    return DAE_OK;
}

void dae_model_params_changed(dae_model *m) {
    for (int i = 0; i < m->n_layers; i++) {
        const dae_layer *l = &m->layers[i];
        if (!is_conv(l) || l->prepared_count == 0 || (m->training && l->prepared_packed)) continue;
        dae_conv_geom g = layer_geom(l, 1);
        float *prepared = m->prepared + l->prepared_offset;
        const float *w = m->params + l->weight_offset;
        if (l->kind == DAE_LAYER_CONV2D) dae_conv2d_prepare(prepared, w, &g);
        else dae_conv_transpose2d_prepare(prepared, w, &g);
    }
}

size_t dae_model_weights_bytes(const dae_model *m) {
    return weights_block_bytes(params_floats(m->n_params) + m->n_prepared);
}

void dae_model_free(dae_model *m) {
    free(m->params); /* and the prepared weights after them */
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
    dae_model_params_changed(m);
}

dae_status dae_model_clone(dae_model *dst, const dae_model *src, char *err, size_t errlen) {
    dae_status st = dae_model_init(dst, src->spec, err, errlen);
    if (st == DAE_OK) {
        memcpy(dst->params, src->params, sizeof(float) * src->n_params);
        dae_model_params_changed(dst);
    }
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

/* How a workspace lays out its memory, worked out from the model alone so
 * that dae_workspace_bytes and dae_workspace_new agree: a list of buffers
 * (floats per image) and which one holds each layer's output and, when
 * training, its gradient. Inference reuses a buffer once every reader of
 * its layer has run (a chain needs two); training keeps every output for
 * the backward pass. */
enum { MAX_BUFFERS = 2 * DAE_MAX_LAYERS + 3 };

typedef struct {
    int n_buffers;
    size_t buffer_size[MAX_BUFFERS];
    int value[DAE_MAX_LAYERS]; /* the buffer of each layer's output */
    int grad[DAE_MAX_LAYERS];  /* training: the buffer of its gradient */
    int scratch;   /* training: an input gradient on its way to being added
                      to one already there; also the residual output */
    int input, target; /* the input and the training target in (B,H,W,C),
                          when C > 1; else -1 */
    size_t col;        /* im2col floats for the workspace's largest batch */
    /* the concatenations never copied: their reader takes their inputs
     * where they lie (concat_split) */
    int split[DAE_MAX_LAYERS];
} ws_plan;

struct dae_workspace {
    int max_batch;
    int for_training;
    ws_plan plan;
    float *buffers[MAX_BUFFERS];
    float *col;
    const float *input; /* the last training pass's input (NHWC) */
};

static size_t layer_out_size(const dae_layer *l) {
    return (size_t)l->out_c * l->out_h * l->out_w;
}

/* The layer whose memory layer i's output lives in (itself, or the first
 * layer of a run of in-place activations). */
static int memory_owner(const dae_model *m, int i) {
    while (m->layers[i].in_place) i = m->layers[i].inputs[0];
    return i;
}

static int add_buffer(ws_plan *p, size_t size) {
    p->buffer_size[p->n_buffers] = size;
    return p->n_buffers++;
}

/* True when concatenation i need not be copied: its one reader is the
 * next layer, a convolution that takes its inputs where they lie
 * (dae_*_forward_parts, and in training dae_*_backward_parts, which
 * writes their gradients where they lie). Training also needs each
 * input's gradient to begin there: no later layer reads the memory of
 * any of them, and no input is given twice. */
static int concat_split(const dae_model *m, int i, int for_training) {
    const dae_layer *l = &m->layers[i];
    if (l->kind != DAE_LAYER_CONCAT || i + 1 >= m->n_layers || l->n_inputs > DAE_MAX_PARTS) return 0;
    for (int j = 0; j < m->n_layers; j++)
        for (int q = 0; q < m->layers[j].n_inputs; q++)
            if (m->layers[j].inputs[q] == i && j != i + 1) return 0;
    if (for_training)
        for (int q = 0; q < l->n_inputs; q++) {
            int k = l->inputs[q];
            if (k == DAE_NETWORK_INPUT) continue;
            for (int r = 0; r < q; r++)
                if (l->inputs[r] == k) return 0;
            for (int j = i + 2; j < m->n_layers; j++)
                for (int r = 0; r < m->layers[j].n_inputs; r++) {
                    int kr = m->layers[j].inputs[r];
                    if (kr != DAE_NETWORK_INPUT && memory_owner(m, kr) == memory_owner(m, k)) return 0;
                }
        }
    const dae_layer *reader = &m->layers[i + 1];
    dae_conv_geom g = layer_geom(reader, 1);
    return reader->kind == DAE_LAYER_CONV_TRANSPOSE2D ||
           (reader->kind == DAE_LAYER_CONV2D && dae_conv2d_takes_parts(&g));
}

/* Inference: gives each layer that owns memory a buffer that is free when
 * it runs (the smallest big enough, else one grown), and frees the buffers
 * whose last reader has run. A split concatenation gets none, and its
 * inputs are read by its reader. */
static void plan_inference(const dae_model *m, ws_plan *p) {
    int last_read[DAE_MAX_LAYERS], busy[MAX_BUFFERS] = {0};
    for (int i = 0; i < m->n_layers; i++) {
        last_read[i] = i;
        p->split[i] = concat_split(m, i, 0);
    }
    for (int i = 0; i < m->n_layers; i++)
        for (int q = 0; q < m->layers[i].n_inputs; q++) {
            int k = m->layers[i].inputs[q], read_at = p->split[i] ? i + 1 : i;
            if (k == DAE_NETWORK_INPUT) continue;
            int owner = memory_owner(m, k);
            if (last_read[owner] < read_at) last_read[owner] = read_at;
        }
    last_read[memory_owner(m, m->n_layers - 1)] = m->n_layers; /* the result */
    for (int i = 0; i < m->n_layers; i++) {
        const dae_layer *l = &m->layers[i];
        if (p->split[i]) {
            p->value[i] = -1;
        } else if (l->in_place) {
            p->value[i] = p->value[l->inputs[0]];
        } else {
            size_t need = layer_out_size(l);
            int best = -1;
            for (int b = 0; b < p->n_buffers; b++) {
                if (busy[b] || b == p->input) continue;
                int fits = p->buffer_size[b] >= need, best_fits = best >= 0 && p->buffer_size[best] >= need;
                if (best < 0 || (fits && (!best_fits || p->buffer_size[b] < p->buffer_size[best])) ||
                    (!fits && !best_fits && p->buffer_size[b] > p->buffer_size[best]))
                    best = b;
            }
            if (best < 0) best = add_buffer(p, need);
            if (p->buffer_size[best] < need) p->buffer_size[best] = need;
            p->value[i] = best;
            busy[best] = 1;
        }
        for (int j = 0; j <= i; j++)
            if (!m->layers[j].in_place && !p->split[j] && last_read[j] == i) busy[p->value[j]] = 0;
    }
}

static void plan_workspace(const dae_model *m, int for_training, int max_batch, ws_plan *p) {
    memset(p, 0, sizeof *p);
    p->input = p->target = p->scratch = -1;
    size_t image = dae_model_image_size(m), biggest = image;
    for (int i = 0; i < m->n_layers; i++) {
        const dae_layer *l = &m->layers[i];
        /* col for the whole batch: a layer's scratch may be a few images'
         * (chunks) plus what the batch shares (weights) */
        dae_conv_geom g = layer_geom(l, max_batch);
        if (layer_out_size(l) > biggest) biggest = layer_out_size(l);
        if (l->kind == DAE_LAYER_CONV2D && dae_conv2d_col_size(&g) > p->col) p->col = dae_conv2d_col_size(&g);
        if (l->kind == DAE_LAYER_CONV_TRANSPOSE2D && dae_conv_transpose2d_col_size(&g) > p->col)
            p->col = dae_conv_transpose2d_col_size(&g);
    }
    if (m->in_c > 1) {
        p->input = add_buffer(p, image);
        if (for_training) p->target = add_buffer(p, image);
    }
    if (!for_training) {
        plan_inference(m, p);
        return;
    }
    for (int i = 0; i < m->n_layers; i++) {
        const dae_layer *l = &m->layers[i];
        p->split[i] = concat_split(m, i, 1);
        if (p->split[i]) {
            p->value[i] = p->grad[i] = -1;
            continue;
        }
        p->value[i] = l->in_place ? p->value[l->inputs[0]] : add_buffer(p, layer_out_size(l));
        p->grad[i] = l->in_place ? p->grad[l->inputs[0]] : add_buffer(p, layer_out_size(l));
    }
    p->scratch = add_buffer(p, biggest);
}

/* Bytes of n floats as alloc_floats allocates them. */
static size_t floats_bytes(size_t n) {
    size_t bytes = (n * sizeof(float) + 63) / 64 * 64;
    return bytes ? bytes : 64;
}

static float *alloc_floats(size_t n) {
    return aligned_alloc(64, floats_bytes(n));
}

void dae_workspace_free(dae_workspace *ws) {
    if (ws == NULL) return;
    for (int b = 0; b < ws->plan.n_buffers; b++) free(ws->buffers[b]);
    free(ws->col);
    free(ws);
}

size_t dae_workspace_bytes(const dae_model *m, int max_batch, int for_training) {
    if (max_batch < 1) return 0;
    ws_plan p;
    plan_workspace(m, for_training, max_batch, &p);
    size_t bytes = sizeof(dae_workspace) + floats_bytes(p.col);
    for (int b = 0; b < p.n_buffers; b++) bytes += floats_bytes(p.buffer_size[b] * (size_t)max_batch);
    return bytes;
}

dae_workspace *dae_workspace_new(const dae_model *m, int max_batch, int for_training) {
    if (max_batch < 1) return NULL;
    dae_workspace *ws = calloc(1, sizeof *ws);
    if (ws == NULL) return NULL;
    ws->max_batch = max_batch;
    ws->for_training = for_training;
    plan_workspace(m, for_training, max_batch, &ws->plan);
    int ok = (ws->col = alloc_floats(ws->plan.col)) != NULL;
    for (int b = 0; b < ws->plan.n_buffers && ok; b++)
        ok = (ws->buffers[b] = alloc_floats(ws->plan.buffer_size[b] * (size_t)max_batch)) != NULL;
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

/* Layer k's output in the workspace, or the network's input x0. */
static float *node_value(const dae_workspace *ws, int k, const float *x0) {
    return k == DAE_NETWORK_INPUT ? (float *)x0 : ws->buffers[ws->plan.value[k]];
}

/* The outputs layer l reads and their channels. */
static void layer_inputs(const dae_model *m, const dae_workspace *ws, const dae_layer *l, const float *x0,
                         const float **ins, int *channels) {
    for (int q = 0; q < l->n_inputs; q++) {
        int k = l->inputs[q];
        ins[q] = node_value(ws, k, x0);
        channels[q] = k == DAE_NETWORK_INPUT ? m->in_c : m->layers[k].out_c;
    }
}

/* Runs every layer on x0 (NHWC) and returns the last layer's output, which
 * lives in the workspace. */
static const float *run_forward(const dae_model *m, dae_workspace *ws, const float *x0, int batch) {
    const int *split = ws->plan.split;
    for (int i = 0; i < m->n_layers; i++) {
        if (split[i]) continue; /* the next layer reads its inputs */
        const dae_layer *l = &m->layers[i];
        /* whose inputs l reads: its own, or the split concatenation's */
        const dae_layer *joined = i > 0 && split[i - 1] ? &m->layers[i - 1] : l;
        size_t n = layer_out_size(l) * (size_t)batch;
        float *y = node_value(ws, i, x0);
        const float *x = joined == l ? node_value(ws, l->inputs[0], x0) : NULL;
        dae_conv_geom g = layer_geom(l, batch);
        const float *w = m->params + l->weight_offset, *bias = m->params + l->bias_offset;
        int unprepared = l->prepared_count == 0 || (m->training && l->prepared_packed);
        const float *wp = unprepared ? NULL : m->prepared + l->prepared_offset;
        const float *ins[DAE_MAX_INPUTS];
        int channels[DAE_MAX_INPUTS];
        layer_inputs(m, ws, joined, x0, ins, channels);
        switch (l->kind) {
        case DAE_LAYER_CONV2D:
            if (joined != l)
                dae_conv2d_forward_parts(y, ins, channels, joined->n_inputs, w, wp, bias, &g, l->relu_fused,
                                         ws->col);
            else dae_conv2d_forward(y, x, w, wp, bias, &g, l->relu_fused, ws->col);
            break;
        case DAE_LAYER_CONV_TRANSPOSE2D:
            if (joined != l)
                dae_conv_transpose2d_forward_parts(y, ins, channels, joined->n_inputs, w, wp, bias, &g,
                                                   l->relu_fused, ws->col);
            else dae_conv_transpose2d_forward(y, x, w, wp, bias, &g, l->relu_fused, ws->col);
            break;
        case DAE_LAYER_RELU:
            if (l->relu_fused) break;
            if (y != x) memcpy(y, x, n * sizeof(float));
            dae_relu_forward(y, n);
            break;
        case DAE_LAYER_SIGMOID:
            if (y != x) memcpy(y, x, n * sizeof(float));
            dae_sigmoid_forward(y, n);
            break;
        case DAE_LAYER_CONCAT:
            dae_concat_forward(y, ins, channels, l->n_inputs, (size_t)l->out_h * l->out_w * batch);
            break;
        case DAE_LAYER_ADD: dae_add_forward(y, ins, l->n_inputs, n); break;
        }
    }
    return node_value(ws, m->n_layers - 1, x0);
}

/* The network's input in NHWC: in itself for one channel. */
static const float *input_nhwc(const dae_model *m, dae_workspace *ws, const float *in, int batch) {
    if (m->in_c == 1) return in;
    convert_images(ws->buffers[ws->plan.input], in, batch, m->in_c, (size_t)m->in_h * m->in_w, 0);
    return ws->buffers[ws->plan.input];
}

/* Writes the network's result y (NHWC, in the workspace) to out (NCHW). */
static void output_nchw(const dae_model *m, float *out, const float *y, int batch) {
    size_t plane = (size_t)m->in_h * m->in_w;
    if (m->in_c == 1)
        memcpy(out, y, plane * batch * sizeof(float));
    else
        convert_images(out, y, batch, m->in_c, plane, 1);
}

/* A batch runs in sub-batches whose buffers in the workspace (the
 * activations, and in training every layer's output and gradient, kept
 * for the backward pass) come to at most SUB_BATCH_FLOATS (2 MB), split
 * evenly: each sub-batch goes through the whole network while its
 * activations are in the caches. Inference: an image's outputs are the
 * same bits in any batch, so the split changes nothing else. A U-Net
 * workspace is 12 MB for 64 images, 200 MB for 1024, which layer by layer
 * went through memory; in sub-batches of 21-26 (one core, 3 rounds
 * alternating, medians): batch 64 46.5 -> 41.5 us an image, batch 1024
 * 58.7 -> 41.6, 16 unchanged; the seed network's 1024 21.6 -> 17.8.
 * Training: the split depends only on the model and the batch, so a step
 * stays bit-reproducible, the weight gradients adding up sub-batch by
 * sub-batch; a U-Net image holds 58k floats against 24k for the seed
 * network. A U-Net thread's 32 images of a batch of 64 on two threads run
 * in 4 sub-batches of 8 (2 of 16 at 4 MB): with the concatenations'
 * copies gone, 95.3 -> 81.7 and 101.9 -> 91.7 us an image against the
 * copies at 4 MB (two runs, medians of 8 rounds alternating); the seed
 * network's 2 of 16 (1 of 32 at 4 MB) took the same time (40.5 and 40.7
 * us, 10 rounds). */
enum { SUB_BATCH_FLOATS = 1 << 19 };

/* How many sub-batches a batch runs in; sub-batch c of n is images
 * [batch * c / n, batch * (c + 1) / n). */
static int sub_batches(const dae_workspace *ws, int batch) {
    size_t per_image = 0;
    for (int b = 0; b < ws->plan.n_buffers; b++) per_image += ws->plan.buffer_size[b];
    size_t n = ((size_t)batch * per_image + SUB_BATCH_FLOATS - 1) / SUB_BATCH_FLOATS;
    return n < 1 ? 1 : n > (size_t)batch ? batch : (int)n;
}

static void forward_part(const dae_model *m, dae_workspace *ws, const float *in, float *out, int batch) {
    const float *x0 = input_nhwc(m, ws, in, batch);
    float *y = (float *)run_forward(m, ws, x0, batch);
    /* Nothing reads the last layer's output after this: the residual
     * output may take its place. */
    if (m->residual) dae_residual_forward(y, x0, y, dae_model_image_size(m) * batch);
    output_nchw(m, out, y, batch);
}

void dae_model_forward(const dae_model *m, dae_workspace *ws, const float *in,
                       float *out, int batch) {
    dae_fp_mode caller = dae_denormals_off();
    size_t n = dae_model_image_size(m);
    int subs = sub_batches(ws, batch);
    for (int c = 0; c < subs; c++) {
        int lo = (int)((long long)batch * c / subs), hi = (int)((long long)batch * (c + 1) / subs);
        forward_part(m, ws, in + (size_t)lo * n, out + (size_t)lo * n, hi - lo);
    }
    dae_fp_mode_restore(caller);
}

/* Where the gradient flowing into layer k goes: straight into its buffer
 * when nothing is there yet, else into scratch (*add set) for the caller to
 * add. started[] tracks, per memory owner, whether a sum has begun. */
static float *grad_destination(const dae_model *m, dae_workspace *ws, int k, int *started, int *add) {
    int owner = memory_owner(m, k);
    *add = started[owner];
    started[owner] = 1;
    return *add ? ws->buffers[ws->plan.scratch] : ws->buffers[ws->plan.grad[k]];
}

/* Finishes a gradient grad_destination sent to scratch: adds n values,
 * and when relu_out is not NULL (layer k a ReLU in place, this its last
 * share) the ReLU's backward with them. */
static void grad_add(dae_workspace *ws, int k, size_t n, const float *relu_out) {
    dae_grad_add(ws->buffers[ws->plan.grad[k]], ws->buffers[ws->plan.scratch], relu_out, n);
}

/* Backward through the layers, last to first: each layer's gradient is
 * complete when it is reached (its readers all come later), and it passes
 * its share to its inputs, adding where an input has several readers. */
static void run_backward(const dae_model *m, dae_workspace *ws, const float *x0, int batch, float *grads,
                         int outer_apart) {
    int started[DAE_MAX_LAYERS] = {0};
    int shares[DAE_MAX_LAYERS] = {0};    /* readers whose gradient a layer has had */
    int relu_done[DAE_MAX_LAYERS] = {0}; /* by the convolution reading it or the last share's add */
    started[memory_owner(m, m->n_layers - 1)] = 1;
    const int *split = ws->plan.split;
    for (int i = m->n_layers - 1; i >= 0; i--) {
        if (split[i]) continue; /* the next layer's backward took its inputs */
        const dae_layer *l = &m->layers[i];
        const float *g = ws->buffers[ws->plan.grad[i]], *y = node_value(ws, i, x0);
        if (i > 0 && split[i - 1]) { /* a convolution reading a concatenation's inputs where they lie */
            const dae_layer *joined = &m->layers[i - 1];
            const float *ins[DAE_MAX_INPUTS];
            float *dins[DAE_MAX_INPUTS];
            int channels[DAE_MAX_INPUTS];
            unsigned relu_parts = 0; /* a conv2d's parts whose ReLU's backward it takes */
            layer_inputs(m, ws, joined, x0, ins, channels);
            for (int q = 0; q < joined->n_inputs; q++) {
                int k = joined->inputs[q];
                dins[q] = k == DAE_NETWORK_INPUT ? NULL : ws->buffers[ws->plan.grad[k]];
                if (k != DAE_NETWORK_INPUT) {
                    started[memory_owner(m, k)] = 1; /* its sum begins here (concat_split) */
                    shares[k]++;
                    if (l->kind == DAE_LAYER_CONV2D && relu_in_place(&m->layers[k]) &&
                        shares[k] == m->layers[k].consumers) {
                        relu_parts |= 1u << q;
                        relu_done[k] = 1;
                    }
                }
            }
            dae_conv_geom geom = layer_geom(l, batch);
            const float *w = m->params + l->weight_offset;
            float *gw = grads + l->weight_offset, *gb = grads + l->bias_offset;
            if (l->kind == DAE_LAYER_CONV2D)
                dae_conv2d_backward_parts(dins, gw, gb, g, ins, channels, joined->n_inputs, w, &geom, ws->col,
                                          relu_parts);
            else
                dae_conv_transpose2d_backward_parts(dins, gw, gb, g, ins, channels, joined->n_inputs, w, &geom,
                                                    ws->col);
            continue;
        }
        size_t count = layer_out_size(l) * (size_t)batch;
        int k = l->inputs[0], add = 0;
        if (l->in_place) { /* its input's gradient is the same memory */
            if (relu_done[i]) continue;
            float *gi = ws->buffers[ws->plan.grad[i]];
            if (l->kind == DAE_LAYER_RELU) dae_relu_backward(gi, gi, y, count);
            else dae_sigmoid_backward(gi, gi, y, count);
            continue;
        }
        if (l->kind == DAE_LAYER_CONCAT || l->kind == DAE_LAYER_ADD) {
            size_t pixels = (size_t)l->out_h * l->out_w * batch;
            for (int q = 0, c_first = 0; q < l->n_inputs; q++) {
                int kq = l->inputs[q];
                int c = kq == DAE_NETWORK_INPUT ? m->in_c : m->layers[kq].out_c;
                if (kq != DAE_NETWORK_INPUT) {
                    int owner = memory_owner(m, kq);
                    float *din = ws->buffers[ws->plan.grad[kq]];
                    if (l->kind == DAE_LAYER_CONCAT)
                        dae_concat_backward(din, g, pixels, l->out_c, c_first, c, started[owner]);
                    else if (started[owner])
                        dae_grad_add(din, g, NULL, count);
                    else
                        memcpy(din, g, count * sizeof(float));
                    started[owner] = 1;
                    shares[kq]++;
                }
                c_first += c;
            }
            continue;
        }
        size_t in_count = k == DAE_NETWORK_INPUT ? 0 : layer_out_size(&m->layers[k]) * (size_t)batch;
        float *din = k == DAE_NETWORK_INPUT ? NULL : grad_destination(m, ws, k, started, &add);
        dae_conv_geom geom = layer_geom(l, batch);
        const float *x = node_value(ws, k, x0), *w = m->params + l->weight_offset;
        float *gw = grads + l->weight_offset, *gb = grads + l->bias_offset;
        if (outer_apart && l->outer_rows > 0) gw = NULL;
        /* When layer k is a ReLU in place and this is its gradient's last
         * share, the ReLU's backward goes with it: in the convolution's
         * kernels as they store din when this is the only share, or in the
         * add of scratch. */
        if (k != DAE_NETWORK_INPUT) shares[k]++;
        int relu_last = k != DAE_NETWORK_INPUT && relu_in_place(&m->layers[k]) && shares[k] == m->layers[k].consumers;
        int in_relu = relu_last && !add && is_conv(l);
        if (in_relu || (relu_last && add)) relu_done[k] = 1;
        switch (l->kind) {
        case DAE_LAYER_CONV2D: dae_conv2d_backward(din, gw, gb, g, x, w, &geom, ws->col, in_relu); break;
        case DAE_LAYER_CONV_TRANSPOSE2D:
            dae_conv_transpose2d_backward(din, gw, gb, g, x, w, &geom, ws->col, in_relu);
            break;
        case DAE_LAYER_RELU:
            if (din != NULL) dae_relu_backward(din, g, y, count);
            break;
        case DAE_LAYER_SIGMOID:
            if (din != NULL) dae_sigmoid_backward(din, g, y, count);
            break;
        default: break;
        }
        if (add) grad_add(ws, k, in_count, relu_last ? x : NULL);
    }
}

/* One training pass over a sub-batch. */
static double train_part(const dae_model *m, dae_workspace *ws, const float *noisy, const float *clean,
                         int batch, size_t loss_denom, float *grads, float *out, int outer_apart) {
    const float *x0 = input_nhwc(m, ws, noisy, batch);
    ws->input = x0;
    const float *y = run_forward(m, ws, x0, batch);
    const float *target = clean;
    size_t plane = (size_t)m->in_h * m->in_w, n = dae_model_image_size(m) * batch;
    if (m->in_c > 1) {
        convert_images(ws->buffers[ws->plan.target], clean, batch, m->in_c, plane, 0);
        target = ws->buffers[ws->plan.target];
    }
    float *g = ws->buffers[ws->plan.grad[m->n_layers - 1]];
    const float *result = y;
    if (m->residual) { /* scratch is free until the backward pass */
        float *r = ws->buffers[ws->plan.scratch];
        dae_residual_forward(r, x0, y, n);
        result = r;
    }
    if (out != NULL) output_nchw(m, out, result, batch);
    double sse = dae_mse_loss_forward(result, target, n) * (double)n;
    dae_mse_loss_backward(g, result, target, n, loss_denom);
    if (m->residual) dae_residual_backward(g, g, x0, y, n);
    run_backward(m, ws, x0, batch, grads, outer_apart);
    return sse;
}

double dae_model_train_pass(const dae_model *m, dae_workspace *ws, const float *noisy,
                            const float *clean, int batch, size_t loss_denom,
                            float *grads, float *out) {
    dae_fp_mode caller = dae_denormals_off();
    size_t n = dae_model_image_size(m);
    int subs = sub_batches(ws, batch);
    double sse = 0.0;
    for (int c = 0; c < subs; c++) {
        int lo = (int)((long long)batch * c / subs), hi = (int)((long long)batch * (c + 1) / subs);
        sse += train_part(m, ws, noisy + (size_t)lo * n, clean + (size_t)lo * n, hi - lo, loss_denom, grads,
                          out == NULL ? NULL : out + (size_t)lo * n, 0);
    }
    dae_fp_mode_restore(caller);
    return sse;
}

int dae_model_outer_layer(const dae_model *m, int i, int *rows, int *cols) {
    const dae_layer *l = &m->layers[i];
    if (l->outer_rows == 0) return 0;
    *rows = l->outer_rows;
    *cols = (int)(l->weight_count / (size_t)l->outer_rows);
    return 1;
}

double dae_model_train_pass_outer_apart(const dae_model *m, dae_workspace *ws, const float *noisy,
                                        const float *clean, int batch, size_t loss_denom, float *grads) {
    dae_fp_mode caller = dae_denormals_off();
    double sse = train_part(m, ws, noisy, clean, batch, loss_denom, grads, NULL, 1);
    dae_fp_mode_restore(caller);
    return sse;
}

void dae_model_outer_factors(const dae_model *m, const dae_workspace *ws, int i, const float **rows,
                             const float **cols) {
    const dae_layer *l = &m->layers[i];
    const float *in = node_value(ws, l->inputs[0], ws->input), *dout = ws->buffers[ws->plan.grad[i]];
    *rows = l->kind == DAE_LAYER_CONV2D ? dout : in;
    *cols = l->kind == DAE_LAYER_CONV2D ? in : dout;
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
    if (st == DAE_OK) dae_model_params_changed(m);
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
