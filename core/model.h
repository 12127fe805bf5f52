/* model.h - a network built from an architecture spec, its parameters,
 * forward and backward passes, and its parameters as named tensors (weights
 * files are io/modelfile.h's).
 *
 * The spec is JSON: an object whose "input" is [C, H, W] (default
 * [1, 28, 28]), whose "output" is "direct" (default) or "residual", and
 * whose other members are named groups, each a list of layers, e.g.
 * {"encoder": [...], "decoder": [...]}. A layer is
 * {"type": "conv2d" | "conv_transpose2d", "in_channels", "out_channels",
 *  "kernel_size", "stride", "padding", "output_padding"} (sizes an integer
 * or [h, w]), {"type": "relu" | "sigmoid"}, or {"type": "concat" | "add"}
 * (channels side by side as torch.cat(dim=1); an element-wise sum).
 * Layer j of group G has the PyTorch name "G.j", so the parameters are named
 * exactly as the module's state_dict(): "encoder.0.weight", ...
 * A plain JSON list of layers is one group named "layers".
 *
 * Layers run in spec order and each reads the previous layer's output,
 * unless it names its "inputs": a list of "input" (the network's input),
 * "G" (the last layer of group G) or "G.j", all earlier than itself; concat
 * and add take two or more, the others one. The network's result is the
 * last layer's output, or with "output": "residual" clamp(input - it, 0, 1):
 * the network predicts the noise and subtracts it.
 *
 * A dae_model is read-only once built: any number of threads may run
 * forward passes on it at once, each with its own dae_workspace. Whoever
 * writes its params (loading, training) calls dae_model_params_changed
 * before the next pass. */
#ifndef DAE_MODEL_H
#define DAE_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "dae_status.h"
#include "layers.h"
#include "tensors.h"

#define DAE_MAX_LAYERS 48
#define DAE_MAX_INPUTS 8
#define DAE_LAYER_NAME_LEN 48
/* The index dae_layer.inputs gives the network's own input. */
#define DAE_NETWORK_INPUT (-1)

typedef enum {
    DAE_LAYER_CONV2D,
    DAE_LAYER_CONV_TRANSPOSE2D,
    DAE_LAYER_RELU,
    DAE_LAYER_SIGMOID,
    DAE_LAYER_CONCAT,
    DAE_LAYER_ADD,
} dae_layer_kind;

typedef struct {
    dae_layer_kind kind;
    char name[DAE_LAYER_NAME_LEN]; /* "encoder.0" */
    int n_inputs;
    int inputs[DAE_MAX_INPUTS];    /* earlier layers' indices, or DAE_NETWORK_INPUT */
    int in_c, in_h, in_w;          /* one image's input (a concat's: its channels summed) */
    int out_c, out_h, out_w;       /* one image's output */
    int k_h, k_w, stride_h, stride_w, pad_h, pad_w, out_pad_h, out_pad_w;
    size_t weight_offset, weight_count; /* into dae_model.params (convs) */
    size_t bias_offset;                 /* bias has out_c values */
    size_t prepared_offset, prepared_count; /* into dae_model.prepared (convs) */
    int prepared_packed; /* the prepared weight is the weight packed (dae_conv_prepared_is_packed) */
    int consumers;   /* later layers reading this one's output */
    int in_place;    /* an activation that works on its input's memory (its
                        input has no other reader) */
    int relu_fused;  /* a convolution that applies the ReLU reading it, or
                        that ReLU, which then has nothing left to do */
    int outer_rows;  /* a convolution whose weight gradient is a sum of outer
                        products (dae_model_outer_layer): its weight's rows */
} dae_layer;

typedef struct {
    dae_layer layers[DAE_MAX_LAYERS];
    int n_layers;
    int in_c, in_h, in_w;
    int residual;  /* output = clamp(input - last layer, 0, 1) */
    size_t n_params;
    float *params; /* owned; each conv's weight (engine layout, layers.h)
                      then bias, in layer order */
    size_t n_prepared;
    float *prepared; /* owned; each conv's weight as its forward pass
                        multiplies it (dae_conv2d_prepare), from params */
    char *spec;    /* owned; canonical JSON of the architecture */
    int training;  /* set by dae_train while its steps write params: the
                      packed prepared weights are then neither made nor
                      read (packing 0.8 MB a step would cost more than the
                      forward gains; the bits are the same) */
} dae_model;

/* The reference network of the original notebook, as spec JSON. */
const char *dae_model_default_spec(void);

/* The spec of a built-in architecture by name: "ae" (the notebook's
 * network, the default) or "unet" (its encoder and decoder with U-Net skips
 * and a residual output); NULL for another name. dae_model_arch_names()
 * lists them for help texts. */
const char *dae_model_named_spec(const char *name);
const char *dae_model_arch_names(void);

/* The spec's name of a layer kind ("conv2d", ..., "concat", "add"). */
const char *dae_layer_kind_name(dae_layer_kind kind);

/* Parses spec_json, checks every layer's hyper-parameters and that shapes
 * chain from the input back to the input's shape, and allocates zeroed
 * parameters. On failure m is left empty and err names the layer and field. */
dae_status dae_model_init(dae_model *m, const char *spec_json, char *err, size_t errlen);

/* The bytes m's weights take: its parameters and prepared weights, in
 * one block rounded up to whole 2 MB pages when large (model.c). */
size_t dae_model_weights_bytes(const dae_model *m);

/* Frees what m owns; safe on a zeroed or already freed model. */
void dae_model_free(dae_model *m);

/* Draws every weight and bias from U(-1/sqrt(fan_in), 1/sqrt(fan_in)), as
 * PyTorch's default initialisation (fan_in = weight.size(1) * KH * KW, i.e.
 * in_channels*KH*KW for conv2d and out_channels*KH*KW for the transposed). */
void dae_model_init_params(dae_model *m, uint64_t seed);

/* Remakes what the forward pass derives from the weights (m->prepared)
 * after m->params were written; the passes read it. The model's own
 * functions (init, init_params, clone, from_safetensors) and training's
 * steps call it; anything else that writes params must. */
void dae_model_params_changed(dae_model *m);

/* Copies src's architecture and parameters into a new model dst. */
dae_status dae_model_clone(dae_model *dst, const dae_model *src, char *err, size_t errlen);

/* The named tensors of the state_dict, in order: 2 per convolution. */
int dae_model_tensor_count(const dae_model *m);
/* Describes tensor i: name ("encoder.0.weight"), dims and shape, and where
 * its values live in params. */
void dae_model_tensor_info(const dae_model *m, int i, char *name, size_t name_len,
                           int *ndim, int64_t shape[4], size_t *offset, size_t *count);

/* Floats of one image at the input (in_c*in_h*in_w). */
size_t dae_model_image_size(const dae_model *m);

/* Multiply-adds of one image's forward pass. */
double dae_model_forward_macs(const dae_model *m);

/* ------------------------------------------------------------ workspaces */

/* Scratch memory for passes of up to max_batch images: activations, im2col
 * buffers and, when for_training, per-activation gradients. One workspace
 * serves one thread at a time. Returns NULL when out of memory. */
typedef struct dae_workspace dae_workspace;
dae_workspace *dae_workspace_new(const dae_model *m, int max_batch, int for_training);

/* The bytes dae_workspace_new(m, max_batch, for_training) allocates,
 * computed without allocating (0 for max_batch < 1). */
size_t dae_workspace_bytes(const dae_model *m, int max_batch, int for_training);
void dae_workspace_free(dae_workspace *ws);
int dae_workspace_max_batch(const dae_workspace *ws);

/* out = network(in) for batch images laid out NCHW (batch x C x H x W).
 * batch <= the workspace's max_batch; allocates nothing. */
void dae_model_forward(const dae_model *m, dae_workspace *ws, const float *in,
                       float *out, int batch);

/* One training pass over batch images: forward on noisy, MSE against clean,
 * backward. Adds dL/dparams into grads (n_params floats), where L is the
 * mean over loss_denom values (the whole step's element count, so threads
 * holding parts of a batch add up to the full gradient). Returns the sum of
 * squared errors of these images. ws must be made for_training. When out is
 * not NULL the network's output is copied there. */
double dae_model_train_pass(const dae_model *m, dae_workspace *ws, const float *noisy,
                            const float *clean, int batch, size_t loss_denom,
                            float *grads, float *out);

/* 1 when layer i's weight gradient is a sum of outer products over the
 * batch (dae_conv_weight_grad_is_outer; not a layer reading a
 * concatenation where its parts lie): the weight is *rows x *cols, each image's term its rows-vector times its cols-vector.
 * The 7x7 bottleneck's two layers: 95% of the seed network's parameters,
 * 91% of the U-Net's. */
int dae_model_outer_layer(const dae_model *m, int i, int *rows, int *cols);

/* dae_model_train_pass on one part of the batch (batch <= the
 * workspace's max_batch) without the weight gradients of the outer
 * layers: their entries of grads are left as they are, and
 * dae_model_outer_factors gives what each is the sum of, for the caller
 * to form where it applies it (dae_adam_update_outer). */
double dae_model_train_pass_outer_apart(const dae_model *m, dae_workspace *ws, const float *noisy,
                                        const float *clean, int batch, size_t loss_denom, float *grads);

/* Outer layer i's factors from ws's last dae_model_train_pass_outer_apart:
 * rows (batch, rows) and cols (batch, cols), batch-major; valid until the
 * workspace's next pass (and while that pass's noisy images are). */
void dae_model_outer_factors(const dae_model *m, const dae_workspace *ws, int i, const float **rows,
                             const float **cols);

/* ------------------------------------------------------------ named tensors
 *
 * A model's parameters as the PyTorch state_dict's named tensors
 * (tensors.h); reading and writing them as files is io/modelfile.h's. */

/* Builds a model from a parsed safetensors file: the architecture comes
 * from its "architecture" metadata, or is the default network when absent
 * (a file saved from PyTorch). Every tensor of the architecture must be
 * there with its exact shape, and nothing else. */
dae_status dae_model_from_safetensors(dae_model *m, const dae_st_file *f, char *err, size_t errlen);

/* Longest tensor name, with a prefix such as "adam.exp_avg_sq.". */
#define DAE_TENSOR_NAME_LEN 96

/* Describes values (laid out as m->params, in the engine's weight layout)
 * as the model's state_dict tensors named prefix + name, into tensors[] and
 * names[] (both with room for dae_model_tensor_count(m) entries); returns
 * the count. The values are converted to PyTorch's layouts into
 * torch_values (n_params floats), which the tensors point into. */
int dae_model_describe_tensors(const dae_model *m, const char *prefix, const float *values,
                               float *torch_values, dae_st_tensor *tensors,
                               char (*names)[DAE_TENSOR_NAME_LEN]);

/* Copies the tensors named prefix + name from f (PyTorch layouts) into
 * values (laid out as m->params, engine layout), checking that each exists
 * with its exact shape. */
dae_status dae_model_read_tensors(const dae_model *m, const dae_st_file *f, const char *prefix,
                                  float *values, char *err, size_t errlen);

#endif
