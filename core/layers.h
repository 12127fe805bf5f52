/* layers.h - the network's layers as forward/backward pairs: convolutions,
 * activations, the graph's joins (concat, add, residual output) and the loss.
 *
 * Activation layout: every tensor is (B, H, W, C) - channels innermost - so
 * the patch under a kernel row is one contiguous run of memory and every
 * convolution over a whole batch is one matrix multiply whose rows are
 * output positions. For one channel (the network's input and output) this
 * is the same memory as PyTorch's NCHW.
 *
 * Weight layout (the engine's; files keep PyTorch's, see model.h):
 *   conv2d            (OC, KH, KW, IC)   PyTorch: (OC, IC, KH, KW)
 *   conv_transpose2d  (IC, KH, KW, OC)   PyTorch: (IC, OC, KH, KW)
 * i.e. the weight is the matrix the GEMM needs, with no repacking per call.
 * Backward functions ADD into weight and bias gradients (so they can be
 * zeroed once per step) and OVERWRITE the input gradient.
 *
 * Every optimised kernel has a *_naive twin with direct loops: the oracle in
 * the tests. */
#ifndef DAE_LAYERS_H
#define DAE_LAYERS_H

#include <stddef.h>

/* The shape of one convolution (or transposed convolution) over a batch.
 * For conv2d, out = (in + 2*pad - k) / stride + 1; for conv_transpose2d,
 * out = (in - 1) * stride - 2*pad + k + out_pad. */
typedef struct {
    int batch;
    int in_c, in_h, in_w;
    int out_c, out_h, out_w;
    int k_h, k_w;
    int stride_h, stride_w;
    int pad_h, pad_w;
    int out_pad_h, out_pad_w; /* conv_transpose2d only */
} dae_conv_geom;

/* Converts a weight between PyTorch's layout and the engine's (see the top
 * of this file): conv2d (OC,IC,KH,KW) <-> (OC,KH,KW,IC); conv_transpose2d
 * (IC,OC,KH,KW) <-> (IC,KH,KW,OC). Both are the same permutation of the
 * last three dimensions: (A, C, KH, KW) <-> (A, KH, KW, C), with
 * c = weight.size(1) and a = weight.size(0). dst and src must not overlap. */
void dae_weight_from_torch(float *dst, const float *src, int a, int c, int kh, int kw);
void dae_weight_to_torch(float *dst, const float *src, int a, int c, int kh, int kw);

/* Floats of scratch the conv functions need in `col`:
 * conv2d: batch*out_h*out_w * k_h*k_w*in_c, or batch*in_h*in_w *
 * k_h*k_w*out_c for up to 4 output channels (one plane per kernel tap);
 * conv_transpose2d: batch*in_h*in_w * k_h*k_w*out_c, or for a 3x3 kernel
 * at stride 2 (by Winograd points) its filters and a few images' points,
 * or to one channel (by rows) an image's channel planes, if that is
 * more. The kernels use it a few images at a time, so this is more than
 * they touch. */
size_t dae_conv2d_col_size(const dae_conv_geom *g);
size_t dae_conv_transpose2d_col_size(const dae_conv_geom *g);

/* The weight as a forward pass multiplies it. Some paths rearrange the
 * weight first: transposed for the product from padded images, transposed
 * and padded for the taps, the head channels tap by tap for the dots,
 * Winograd points' filters, the phases' kernel rows 0 + 2 (below, and
 * layers.c). *_prepared_size is its floats, 0 when the forward multiplies
 * the weight as it is; *_prepare makes it. A caller that runs a layer
 * many times on one weight makes it once and passes it to the forward as
 * `prepared`; with NULL the forward makes it itself at every call
 * (2.5-4.6% of an image at batch 1). */
size_t dae_conv2d_prepared_size(const dae_conv_geom *g);
void dae_conv2d_prepare(float *prepared, const float *weight, const dae_conv_geom *g);
size_t dae_conv_transpose2d_prepared_size(const dae_conv_geom *g);
void dae_conv_transpose2d_prepare(float *prepared, const float *weight, const dae_conv_geom *g);

/* 1 when the layer's prepared weight is its weight packed for the
 * product (the 7x7 bottleneck's two layers, layers.c): the forward
 * given NULL then multiplies the weight as it lies, the same bits,
 * rather than packing its own. Training, which changes the weight every
 * step, leaves it so (model.h). */
int dae_conv_prepared_is_packed(const dae_conv_geom *g, int transposed);

/* A 3x3 stride-2 transposed convolution with padding 1 (channels in and
 * out in 16s, up to 256 in) goes by Winograd points (fewer multiply-adds,
 * more loads and stores: layers.c) unless the CPU runs 512-bit
 * multiply-adds at full width (dae_cpu_full_width_avx512) and AVX-512 is
 * in use (dae_gemm_isa), where the phases are faster. 1 or 0 forces the
 * choice, -1 gives it back to the CPU. The sizes of prepared weights and
 * scratch follow it: change it only before making a model or workspace
 * (tests, measurements). */
void dae_conv_transpose2d_set_points(int on);

/* A 3x3 stride-2 transposed convolution to one channel of rows up to 16
 * pixels (the seed network's last layer) goes by rows (each input row's
 * taps along the row in a vector's lanes: layers.c) where AVX2 or
 * AVX-512 is in use, else by the taps' product and its scatter. 1 or 0
 * forces the choice, -1 gives it back to the instruction set; as for the
 * points, change it only before making a model or workspace. */
void dae_conv_transpose2d_set_rows(int on);

/* out (B,OH,OW,OC) = conv(in (B,H,W,IC), weight (OC,KH,KW,IC)) + bias (OC),
 * then max(0, .) when relu is set (a following ReLU layer, fused);
 * prepared is the weight's dae_conv2d_prepare, or NULL. */
void dae_conv2d_forward(float *out, const float *in, const float *weight, const float *prepared,
                        const float *bias, const dae_conv_geom *g, int relu, float *col);
/* din (B,H,W,IC) = input gradient (skipped when din is NULL);
 * dweight += dL/dweight; dbias += dL/dbias; dout is (B,OH,OW,OC).
 * in_relu: in is a ReLU's output (read by nothing else) and din becomes
 * the gradient of that ReLU's input, zero where in is not positive: the
 * bits of dae_relu_backward on din, done where the kernels store din. */
void dae_conv2d_backward(float *din, float *dweight, float *dbias,
                         const float *dout, const float *in,
                         const float *weight, const dae_conv_geom *g,
                         float *col, int in_relu);

/* 1 when the weight gradient is a sum of outer products over the batch:
 * a conv2d whose kernel covers its whole unpadded input (the networks'
 * 7x7 bottleneck; weight rows: the output channels, columns: the input
 * image), a conv_transpose2d (transposed) from one pixel (rows: the
 * input channels, columns: the output image). Their backward (one input,
 * not parts) then takes dweight NULL and leaves that gradient to the
 * caller (dae_adam_update_outer). */
int dae_conv_weight_grad_is_outer(const dae_conv_geom *g, int transposed);

/* out (B,OH,OW,OC) = conv_transpose(in (B,H,W,IC), weight (IC,KH,KW,OC))
 * + bias, then max(0, .) when relu is set. */
void dae_conv_transpose2d_forward(float *out, const float *in, const float *weight, const float *prepared,
                                  const float *bias, const dae_conv_geom *g, int relu, float *col);
/* The forward of a layer whose input is a concatenation, given as its
 * n_parts inputs (parts[q] (B,H,W,channels[q]), joined as
 * dae_concat_forward joins them, channels adding up to IC; one or two,
 * DAE_MAX_PARTS), each multiplied where it lies: the bits of the forward
 * on the concatenated input, without copying it. A conv2d takes parts
 * when dae_conv2d_takes_parts (few output channels). */
#define DAE_MAX_PARTS 2
int dae_conv2d_takes_parts(const dae_conv_geom *g);
void dae_conv2d_forward_parts(float *out, const float *const *parts, const int *channels, int n_parts,
                              const float *weight, const float *prepared, const float *bias,
                              const dae_conv_geom *g, int relu, float *col);
void dae_conv_transpose2d_forward_parts(float *out, const float *const *parts, const int *channels, int n_parts,
                                        const float *weight, const float *prepared, const float *bias,
                                        const dae_conv_geom *g, int relu, float *col);
/* The backward of such a layer, its input given as the same parts:
 * dins[q] (B,H,W,channels[q]) = the part's input gradient (skipped when
 * NULL); dweight and dbias added to as by dae_*_backward. Training reads
 * a concatenation where its inputs lie too, and writes their gradients
 * where they lie. A conv2d's backward takes parts when
 * dae_conv2d_takes_parts; for each bit q of relu_parts, parts[q] is an
 * in-place ReLU's output and dins[q] gets that ReLU's backward too (the
 * one-channel adjoint does it as it stores dins[q]). */
void dae_conv2d_backward_parts(float *const *dins, float *dweight, float *dbias, const float *dout,
                               const float *const *parts, const int *channels, int n_parts, const float *weight,
                               const dae_conv_geom *g, float *col, unsigned relu_parts);
void dae_conv_transpose2d_backward_parts(float *const *dins, float *dweight, float *dbias, const float *dout,
                                         const float *const *parts, const int *channels, int n_parts,
                                         const float *weight, const dae_conv_geom *g, float *col);

/* As dae_conv2d_backward, in_relu too. */
void dae_conv_transpose2d_backward(float *din, float *dweight, float *dbias,
                                   const float *dout, const float *in,
                                   const float *weight, const dae_conv_geom *g,
                                   float *col, int in_relu);

void dae_conv2d_forward_naive(float *out, const float *in, const float *weight,
                              const float *bias, const dae_conv_geom *g);
void dae_conv2d_backward_naive(float *din, float *dweight, float *dbias,
                               const float *dout, const float *in,
                               const float *weight, const dae_conv_geom *g);
void dae_conv_transpose2d_forward_naive(float *out, const float *in,
                                        const float *weight, const float *bias,
                                        const dae_conv_geom *g);
void dae_conv_transpose2d_backward_naive(float *din, float *dweight,
                                         float *dbias, const float *dout,
                                         const float *in, const float *weight,
                                         const dae_conv_geom *g);

/* In place: x = max(x, 0). Backward: dx = dy where y > 0 else 0, from the
 * layer's output y (as PyTorch does); dx may alias dy. */
void dae_relu_forward(float *x, size_t n);
void dae_relu_backward(float *dx, const float *dy, const float *y, size_t n);
/* dx += dy, then, when y is not NULL, the backward of the ReLU whose
 * output is y on the sum (dx = y > 0 ? dx + dy : 0): a gradient's last
 * share added where a ReLU's output has several readers. */
void dae_grad_add(float *dx, const float *dy, const float *y, size_t n);

/* In place: x = 1 / (1 + exp(-x)). Backward: dx = dy * y * (1 - y). */
void dae_sigmoid_forward(float *x, size_t n);
void dae_sigmoid_backward(float *dx, const float *dy, const float *y, size_t n);

/* ------------------------------------------------------- graph layers
 *
 * A concatenation joins its inputs' channels per pixel, in order: with the
 * channels innermost, output pixel p is input 0's C0 channels of p, then
 * input 1's C1, ... (torch.cat(dim=1) in NCHW). */

/* out (pixels, c_total) = inputs[k] (pixels, channels[k]) side by side. */
void dae_concat_forward(float *out, const float *const *inputs, const int *channels, int n_inputs,
                        size_t pixels);
/* The gradient of one input, din (pixels, c) = the channels [c_first,
 * c_first + c) of dout (pixels, c_total); added to din when accumulate. */
void dae_concat_backward(float *din, const float *dout, size_t pixels, int c_total, int c_first, int c,
                         int accumulate);

/* out = inputs[0] + inputs[1] + ..., n values each. Its backward hands
 * dout to every input unchanged. */
void dae_add_forward(float *out, const float *const *inputs, int n_inputs, size_t n);

/* The residual output: out = clamp(x - f, 0, 1), the input minus the
 * predicted noise. Backward: df = -dout where 0 <= x - f <= 1, else 0
 * (PyTorch's clamp passes the gradient at the bounds); df may alias dout. */
void dae_residual_forward(float *out, const float *x, const float *f, size_t n);
void dae_residual_backward(float *df, const float *dout, const float *x, const float *f, size_t n);

/* Mean squared error over n values; dpred = 2 * (pred - target) / denom,
 * where denom is the element count of the whole batch (a thread that holds
 * part of the batch passes the full count). */
double dae_mse_loss_forward(const float *pred, const float *target, size_t n);
void dae_mse_loss_backward(float *dpred, const float *pred, const float *target,
                           size_t n, size_t denom);

#endif
