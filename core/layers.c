/* layers.c - conv2d, conv_transpose2d, relu, sigmoid, the graph's joins and
 * MSE: im2col + GEMM kernels and their naive oracles. Layout notes are in
 * layers.h. */
#include "layers.h"

#include <limits.h>
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "gemm.h"
#include "hot.h"


/* Keeps GCC from turning the short copy loops of im2col (3 floats for a
 * one-channel 3x3 kernel) into calls to memcpy, which cost more than the
 * copy itself. */
#if defined(__GNUC__) && !defined(__clang__)
#define NO_MEMCPY_IDIOM __attribute__((optimize("no-tree-loop-distribute-patterns")))
#else
#define NO_MEMCPY_IDIOM
#endif

/* Lets GCC fuse a product and its sum into one multiply-add (ISO C mode,
 * -std=c11, keeps them apart) in a kernel and the helpers inlined into it. */
#if defined(__GNUC__) && !defined(__clang__)
#define FUSED_MADD __attribute__((optimize("fp-contract=fast")))
#else
#define FUSED_MADD
#endif

/* ---------------------------------------------------------------- im2col */

/* Geometry of a gather: the image (B, H, W, C) and the grid of kernel
 * positions (OH x OW) that walks it. */
typedef struct {
    int batch, h, w, c;
    int oh, ow, kh, kw, sh, sw, ph, pw;
} patch_geom;

/* Moves `count` runs of kw*c floats between col (one run every k floats)
 * and the image (one every `step`): gathers them into col, or adds them
 * into the image when add. Neighbouring positions' runs overlap in the
 * image when the stride is less than the kernel, so the adds go a kernel
 * column at a time: a load never waits for a store it half overlaps.
 * Inlined with kw, c and add as constants. */
static inline __attribute__((always_inline)) void move_runs(float *restrict col, size_t k, float *restrict img,
                                                            size_t step, int count, int kw, int c, int add) {
    if (add) {
        for (int j = 0; j < kw; j++)
            for (int n = 0; n < count; n++)
                for (int t = 0; t < c; t++) img[n * step + j * c + t] += col[n * k + j * c + t];
        return;
    }
    for (int n = 0; n < count; n++)
        for (int t = 0; t < kw * c; t++) col[n * k + t] = img[n * step + t];
}

/* The positions inner to a row (their runs lie wholly inside the image),
 * ox_lo to ox_hi: patch_walk moves them a kernel column at a time. */
static void inner_positions(const patch_geom *p, int *ox_lo, int *ox_hi) {
    int span = p->w + p->pw - p->kw; /* the last inner position's left edge, at most */
    int lo = (p->pw + p->sw - 1) / p->sw, hi = span < 0 ? 0 : span / p->sw + 1;
    if (hi > p->ow) hi = p->ow;
    if (lo > hi) lo = hi;
    *ox_lo = lo, *ox_hi = hi;
}

/* im2col (add 0: col (B*OH*OW, KH*KW*C) gathers the patch under each
 * kernel position of img (B,H,W,C), zeros where it leaves the image) and
 * its adjoint (add 1: every entry of col added into the img position it
 * came from). A kernel row of a patch is one run of KW*C floats when it
 * lies inside the image: the positions whose runs all lie inside, ox_lo to
 * ox_hi, move a whole output row's runs in one go, with the run length a
 * constant for the networks' 1- and 16-channel 3x3 kernels; only the
 * border positions go pixel by pixel. */
static inline __attribute__((always_inline)) void patch_walk(float *restrict col, float *restrict img,
                                                             const patch_geom *p, int add) {
    int run = p->kw * p->c;
    size_t k = (size_t)p->kh * run, step = (size_t)p->sw * p->c;
    int ox_lo, ox_hi;
    inner_positions(p, &ox_lo, &ox_hi);
    for (int b = 0; b < p->batch; b++) {
        float *image = img + (size_t)b * p->h * p->w * p->c;
        for (int oy = 0; oy < p->oh; oy++) {
            float *rows = col + ((size_t)b * p->oh + oy) * p->ow * k;
            for (int i = 0; i < p->kh; i++) {
                int y = oy * p->sh - p->ph + i;
                float *first = rows + (size_t)i * run;
                if (y < 0 || y >= p->h) {
                    if (!add)
                        for (int ox = 0; ox < p->ow; ox++)
                            for (int t = 0; t < run; t++) first[ox * k + t] = 0.0f;
                    continue;
                }
                float *line = image + (size_t)y * p->w * p->c;
                int inner = ox_hi - ox_lo;
                float *at = line + ((ptrdiff_t)ox_lo * p->sw - p->pw) * p->c;
                if (p->kw == 3 && p->c == 1) move_runs(first + ox_lo * k, k, at, step, inner, 3, 1, add);
                else if (p->kw == 3 && p->c == 16) move_runs(first + ox_lo * k, k, at, step, inner, 3, 16, add);
                else move_runs(first + ox_lo * k, k, at, step, inner, p->kw, p->c, add);
                for (int ox = 0; ox < p->ow; ox++) {
                    if (ox == ox_lo) ox = ox_hi;
                    if (ox >= p->ow) break;
                    float *dst = first + ox * k;
                    for (int j = 0; j < p->kw; j++) {
                        int x = ox * p->sw - p->pw + j;
                        float *d = dst + j * p->c;
                        if (x >= 0 && x < p->w)
                            move_runs(d, 0, line + (size_t)x * p->c, 0, 1, 1, p->c, add);
                        else if (!add)
                            for (int t = 0; t < p->c; t++) d[t] = 0.0f;
                    }
                }
            }
        }
    }
}

/* Gathers src (B,H,W,C) into col (B*OH*OW, KH*KW*C): the patch under each
 * kernel position, zeros where it leaves the image. */
HOT NO_MEMCPY_IDIOM static void im2col(float *restrict col, const float *restrict src, const patch_geom *p) {
    patch_walk(col, (float *)src, p, 0); /* read only: add is 0 */
}

/* The adjoint of im2col: adds every entry of col into the dst (B,H,W,C)
 * position it was gathered from. dst must be initialised by the caller. */
HOT NO_MEMCPY_IDIOM static void col2im_add(float *restrict dst, const float *restrict col, const patch_geom *p) {
    patch_walk((float *)col, dst, p, 1); /* read only: add is 1 */
}

/* The most entries of col2im's tables: one per image column (row) and
 * kernel column (row). */
enum { GATHER_TABLE_MAX = 2048 };

/* Sixteen channels as one vector (four SSE registers in the baseline
 * build); uvec16 for loads at any float's address. */
typedef float vec16 __attribute__((vector_size(64)));
typedef float uvec16 __attribute__((vector_size(64), aligned(4)));
typedef int ivec16 __attribute__((vector_size(64)));

/* max(x, 0) with (x > 0.0f ? x : 0.0f)'s bits (dae_relu_forward's), and
 * x where keep > 0, else +0 (a ReLU's backward, dae_relu_backward's bits,
 * on the gradient x of its output keep, done where x is stored), for
 * code that runs only where AVX-512 is in use: GCC 12 compiles a
 * comparison of 16 floats without it to a compare and branch per lane
 * (layers_lanes.inc holds 8-float copies of the code that runs
 * elsewhere). Macros: a function returning a 64-byte vector has a
 * different ABI per target. */
#define RELU16(x) ((vec16)((ivec16)(x) & ((x) > 0.0f)))
#define KEPT(x, keep) ((vec16)((ivec16)(x) & (*(const uvec16 *)(keep) > 0.0f)))

/* Eight floats: the vector of layers_lanes.inc's code where AVX-512 is not in use. */
typedef float vec8 __attribute__((vector_size(32)));
typedef float uvec8 __attribute__((vector_size(32), aligned(4)));
typedef int ivec8 __attribute__((vector_size(32)));

/* Sixteen zeros: the entry a position of a stride-2 gather does not have. */
static const float zero16[16] __attribute__((aligned(64)));

/* True when the gather is the identity: one kernel position covering the
 * whole image with no padding (the reference network's 7x7 bottleneck), so
 * col is the image itself. */
static int patch_is_whole_image(const patch_geom *p) {
    return p->oh == 1 && p->ow == 1 && p->kh == p->h && p->kw == p->w && p->ph == 0 && p->pw == 0;
}

/* dbias[c] += sum over rows of dy (rows, channels), in partial sums over
 * interleaved rows (16 for one channel, a vector's worth; 4 for more),
 * added together at the end: one running sum made every add wait for the
 * previous one, 3% of a training epoch. */
HOT static void sum_rows(float *restrict dbias, const float *restrict dy, size_t rows, int channels) {
    enum { ONE_LANES = 16, ROW_LANES = 4 };
    if (channels == 1) {
        float acc[ONE_LANES] = {0};
        size_t r = 0;
        for (; r + ONE_LANES <= rows; r += ONE_LANES)
            for (int l = 0; l < ONE_LANES; l++) acc[l] += dy[r + l];
        for (int l = 0; r < rows; r++, l++) acc[l] += dy[r];
        float sum = 0.0f;
        for (int l = 0; l < ONE_LANES; l++) sum += acc[l];
        dbias[0] += sum;
        return;
    }
    if (channels % 16 == 0) { /* the same sums, each in registers */
        for (int c0 = 0; c0 < channels; c0 += 16) {
            vec16 acc[ROW_LANES] = {{0}};
            const float *d = dy + c0;
            size_t r = 0;
            for (; r + ROW_LANES <= rows; r += ROW_LANES)
                for (int l = 0; l < ROW_LANES; l++) acc[l] += *(const uvec16 *)(d + (r + l) * channels);
            for (int l = 0; r < rows; r++, l++) acc[l] += *(const uvec16 *)(d + r * channels);
            *(uvec16 *)(dbias + c0) += (acc[0] + acc[1]) + (acc[2] + acc[3]);
        }
        return;
    }
    float acc[ROW_LANES][channels];
    for (int l = 0; l < ROW_LANES; l++)
        for (int c = 0; c < channels; c++) acc[l][c] = 0.0f;
    size_t r = 0;
    for (; r + ROW_LANES <= rows; r += ROW_LANES)
        for (int l = 0; l < ROW_LANES; l++)
            for (int c = 0; c < channels; c++) acc[l][c] += dy[(r + l) * channels + c];
    for (int l = 0; r < rows; r++, l++)
        for (int c = 0; c < channels; c++) acc[l][c] += dy[r * channels + c];
    for (int c = 0; c < channels; c++) dbias[c] += (acc[0][c] + acc[1][c]) + (acc[2][c] + acc[3][c]);
}

/* ---------------------------------------------------------------- conv2d */

/* The gather of a conv2d: its input walked by its output grid. */
static patch_geom conv_patches(const dae_conv_geom *g) {
    patch_geom p = {g->batch, g->in_h, g->in_w, g->in_c, g->out_h, g->out_w,
                    g->k_h, g->k_w, g->stride_h, g->stride_w, g->pad_h, g->pad_w};
    return p;
}

/* The scatter of a conv_transpose2d: its output walked by its input grid. */
static patch_geom conv_transpose_patches(const dae_conv_geom *g) {
    patch_geom p = {g->batch, g->out_h, g->out_w, g->out_c, g->in_h, g->in_w,
                    g->k_h, g->k_w, g->stride_h, g->stride_w, g->pad_h, g->pad_w};
    return p;
}

int dae_conv_weight_grad_is_outer(const dae_conv_geom *g, int transposed) {
    patch_geom p = transposed ? conv_transpose_patches(g) : conv_patches(g);
    return patch_is_whole_image(&p);
}

/* im2col buffers are filled and used a few images at a time: a chunk's
 * col (at most this many floats, 256 KB) is still in L2 when the GEMM and
 * col2im read it, where a whole batch's (7 MB for the U-Net's 14x14 ->
 * 28x28 transposed convolution at batch 64) goes to memory and back
 * (measured: that layer at 40 GFLOP/s whole-batch, 70 in chunks). */
enum { COL_CHUNK_FLOATS = 1 << 16 };

static int chunk_images(size_t col_per_image) {
    size_t n = COL_CHUNK_FLOATS / (col_per_image ? col_per_image : 1);
    return n < 1 ? 1 : n > (size_t)1 << 20 ? 1 << 20 : (int)n;
}

/* A convolution's image zero-padded so that every kernel position lies
 * inside it: hp x wp pixels. Its weight rearranged for the product from
 * the padded image takes PATCHES_WEIGHT_MAX floats (48 KB) of stack at
 * most. */
enum { PATCHES_WEIGHT_MAX = 12288 };

static void patches_padded_size(const dae_conv_geom *g, int *hp, int *wp) {
    *hp = (g->out_h - 1) * g->stride_h + g->k_h, *wp = (g->out_w - 1) * g->stride_w + g->k_w;
}

/* One output channel from at least 16 channels in (the U-Net's last layer:
 * 16 + 1 in, 3x3): the channels in whole vectors (in_c rounded down to
 * 16, the head) are dotted with the weight where a zero-padded copy of the
 * image lies (dae_gemm_patches_dot), and the few left (the tail) are
 * added a plane at a time, each tap a row of products along contiguous
 * pixels. The taps product below spent 15% of a U-Net image on this layer
 * (6% of its FLOPs): 9 taps padded to a product 16 columns wide, then
 * sums reading one float in 16. The copy assembles the channels from the
 * concatenation's parts, so the bits are the same whichever parts the
 * input comes in. col holds the padded head, the tail's planes, then the
 * tail's sums. */
static int conv2d_by_dots(const dae_conv_geom *g, const patch_geom *p) {
    int head = g->in_c / 16 * 16;
    return g->out_c == 1 && head > 0 && !patch_is_whole_image(p) &&
           (size_t)g->k_h * g->k_w * head <= PATCHES_WEIGHT_MAX;
}

static size_t conv2d_dots_col_size(const dae_conv_geom *g) {
    int hp, wp;
    patches_padded_size(g, &hp, &wp);
    return (size_t)hp * wp * g->in_c + (size_t)g->out_h * wp; /* the padded image, then the tail's sums */
}

typedef float uvec4 __attribute__((vector_size(16), aligned(4)));

/* dst[0, len) = src[0, len) in vectors of 16, 8 and 4 floats, then
 * floats: a padded image's rows are short (28 floats for a 28 x 28 image
 * of one channel), where a call to memcpy a row cost more than its
 * copy. */
static inline __attribute__((always_inline)) void copy_row(float *restrict dst, const float *restrict src,
                                                           size_t len) {
    size_t k = 0;
    for (; k + 16 <= len; k += 16) *(uvec16 *)(dst + k) = *(const uvec16 *)(src + k);
    if (k + 8 <= len) *(uvec8 *)(dst + k) = *(const uvec8 *)(src + k), k += 8;
    if (k + 4 <= len) *(uvec4 *)(dst + k) = *(const uvec4 *)(src + k), k += 4;
    for (; k < len; k++) dst[k] = src[k];
}

/* Channels [c0, c0 + n) of image b of the parts' concatenation into the
 * inside of its zero-padded copy dst (pixels of n floats, hp x wp of
 * patches_padded_size, the image's corner at (pad_h, pad_w)); the
 * padding, the same for every image, is the caller's to zero once. */
HOT NO_MEMCPY_IDIOM static void pad_channels(float *restrict dst, const float *const *parts, const int *channels,
                                            int n_parts, const dae_conv_geom *g, int b, int c0, int n) {
    int hp, wp, y0 = g->pad_h, x0 = g->pad_w;
    patches_padded_size(g, &hp, &wp);
    int rows = g->in_h < hp - y0 ? g->in_h : hp - y0, cols = g->in_w < wp - x0 ? g->in_w : wp - x0;
    size_t image = (size_t)g->in_h * g->in_w;
    for (int i = 0, pc = 0; i < n_parts; pc += channels[i], i++) {
        int from = c0 > pc ? c0 : pc, to = c0 + n < pc + channels[i] ? c0 + n : pc + channels[i];
        if (from >= to) continue;
        int ci = channels[i], m = to - from;
        for (int y = 0; y < rows; y++) {
            const float *src = parts[i] + ((size_t)b * image + (size_t)y * g->in_w) * ci + (from - pc);
            float *d = dst + ((size_t)(y0 + y) * wp + x0) * n + (from - c0);
            if (m == ci && m == n) {
                copy_row(d, src, (size_t)cols * n);
                continue;
            }
            /* a few channels a pixel (training's joined input): loops, not
             * a call to memcpy a pixel */
            if (m == 16)
                for (int x = 0; x < cols; x++) *(uvec16 *)(d + (size_t)x * n) = *(const uvec16 *)(src + (size_t)x * ci);
            else if (m == 1)
                for (int x = 0; x < cols; x++) d[(size_t)x * n] = src[(size_t)x * ci];
            else
                for (int x = 0; x < cols; x++)
                    for (int k = 0; k < m; k++) d[(size_t)x * n + k] = src[(size_t)x * ci + k];
        }
    }
}

/* Zeroes the border of a padded image (pixels of n floats, as
 * pad_channels fills it): what pad_channels leaves, once for a batch.
 * Zeroing all of it was 1.7% of a U-Net image at batch 1. */
HOT NO_MEMCPY_IDIOM static void zero_border(float *restrict dst, const dae_conv_geom *g, int n) {
    int hp, wp, y0 = g->pad_h, x0 = g->pad_w;
    patches_padded_size(g, &hp, &wp);
    int rows = g->in_h < hp - y0 ? g->in_h : hp - y0, cols = g->in_w < wp - x0 ? g->in_w : wp - x0;
    size_t row = (size_t)wp * n, left = (size_t)x0 * n, right = (size_t)(wp - x0 - cols) * n;
    memset(dst, 0, sizeof(float) * y0 * row);
    for (int y = y0; y < y0 + rows; y++) {
        float *r = dst + (size_t)y * row, *after = r + (size_t)(x0 + cols) * n;
        for (size_t k = 0; k < left; k++) r[k] = 0.0f;
        for (size_t k = 0; k < right; k++) after[k] = 0.0f;
    }
    memset(dst + (size_t)(y0 + rows) * row, 0, sizeof(float) * (hp - y0 - rows) * row);
}

/* tail (OH, wp) += a tail channel's plane (zero-padded, rows of wp) through
 * its kh x kw taps w (a tap every `tap` floats). At stride 1 each output
 * row runs on into the padding, so that a tap is one run of OH*wp
 * products along the plane (the last columns of each row, past OW, are
 * not outputs). */
HOT static void add_plane(float *restrict tail, const float *restrict plane, int wp, const float *restrict w,
                          int tap, const dae_conv_geom *g) {
    for (int i = 0; i < g->k_h; i++)
        for (int j = 0; j < g->k_w; j++) {
            float wv = w[(size_t)(i * g->k_w + j) * tap];
            if (g->stride_h == 1 && g->stride_w == 1) {
                const float *r = plane + (size_t)i * wp + j;
                size_t n = (size_t)(g->out_h - 1) * wp + g->out_w;
                for (size_t q = 0; q < n; q++) tail[q] += wv * r[q];
                continue;
            }
            for (int oy = 0; oy < g->out_h; oy++) {
                const float *r = plane + (size_t)(oy * g->stride_h + i) * wp + j;
                float *t = tail + (size_t)oy * wp;
                for (int ox = 0; ox < g->out_w; ox++) t[ox] += wv * r[ox * g->stride_w];
            }
        }
}

/* out (OH, OW) = the dots + the tail (rows of wp) + bias, then max(0, .)
 * when relu. */
HOT static void finish_dots(float *restrict out, const float *restrict tail, int wp, float bias, int relu,
                            const dae_conv_geom *g) {
    for (int oy = 0; oy < g->out_h; oy++) {
        float *o = out + (size_t)oy * g->out_w;
        const float *t = tail + (size_t)oy * wp;
        for (int ox = 0; ox < g->out_w; ox++) {
            float v = o[ox] + t[ox] + bias;
            o[ox] = relu && v < 0.0f ? 0.0f : v;
        }
    }
}

/* prepared, or, when it is NULL, the weight prepared by prepare
 * (dae_conv2d_prepare, dae_conv_transpose2d_prepare) into scratch. */
static const float *weight_prepared(const float *prepared,
                                    void (*prepare)(float *, const float *, const dae_conv_geom *),
                                    const float *weight, const dae_conv_geom *g, float *scratch) {
    if (prepared != NULL) return prepared;
    prepare(scratch, weight, g);
    return scratch;
}

static void conv2d_forward_by_dots(float *out, const float *const *parts, const int *channels, int n_parts,
                                   const float *weight, const float *prepared, const float *bias,
                                   const dae_conv_geom *g, int relu, float *col) {
    int hp, wp, head = g->in_c / 16 * 16;
    patches_padded_size(g, &hp, &wp);
    float own[PATCHES_WEIGHT_MAX] __attribute__((aligned(64)));
    const float *wd = weight_prepared(prepared, dae_conv2d_prepare, weight, g, own);
    size_t plane = (size_t)hp * wp;
    float *padded = col, *planes = col + plane * head, *tail = planes + plane * (g->in_c - head);
    size_t out_image = (size_t)g->out_h * g->out_w;
    /* the head as its part lies: a 3x3 "same" convolution whose first
     * part is the head and whose one other channel, if any, is a part of
     * its own (the U-Net's: the decoder's 16 channels, then the input),
     * where copying them padded and summing the tail a plane at a time
     * were 3.9% and 3.5% of an image */
    if (g->k_h == 3 && g->k_w == 3 && g->stride_h == 1 && g->stride_w == 1 && g->pad_h == 1 && g->pad_w == 1 &&
        g->out_h == g->in_h && g->out_w == g->in_w && channels[0] == head && g->in_c - head <= 1) {
        const float *input = g->in_c > head ? parts[1] : NULL; /* the tail's channel */
        float tail_w[9];
        for (int t = 0; input != NULL && t < 9; t++) tail_w[t] = weight[(size_t)t * g->in_c + head];
        for (int b = 0; b < g->batch; b++)
            dae_gemm_same3_dot(g->in_h, g->in_w, head, parts[0] + b * out_image * head, wd,
                               input != NULL ? input + b * out_image : NULL, tail_w, bias[0], relu,
                               out + b * out_image);
        return;
    }
    zero_border(padded, g, head); /* each image fills the inside */
    for (int c = head; c < g->in_c; c++) zero_border(planes + (size_t)(c - head) * plane, g, 1);
    for (int b = 0; b < g->batch; b++) {
        float *o = out + b * out_image;
        pad_channels(padded, parts, channels, n_parts, g, b, 0, head);
        dae_gemm_patches_dot(g->out_h, g->out_w, g->k_h, g->k_w, g->stride_h, g->stride_w, head, padded, wp, wd, o);
        memset(tail, 0, sizeof(float) * g->out_h * wp);
        for (int c = head; c < g->in_c; c++) {
            float *p = planes + (size_t)(c - head) * plane;
            pad_channels(p, parts, channels, n_parts, g, b, c, 1);
            add_plane(tail, p, wp, weight + c, g->in_c, g);
        }
        finish_dots(o, tail, wp, bias[0], relu, g);
    }
}

/* Few output channels (the U-Net's last layer has one): the convolution
 * as a channel mix, then a shifted sum. taps (KH*KW*OC, B*H*W) = weight
 * (OC*KH*KW, IC) in^T holds, per kernel tap (oc, i, j), every input
 * pixel's contribution through that tap, as one plane the shape of the
 * input; out = the sum of the planes, each shifted by its tap. The GEMM
 * reads the input once, where im2col would copy each input value KH*KW
 * times to feed a GEMM only OC columns wide (8x the time for 17 channels in,
 * 1 out, 3x3 on 28x28), and the shifted sums run along contiguous rows.
 * The forward pass keeps the taps pixel-major instead, (B*H*W, TAPS_PAD)
 * with the taps padded to whole vectors, so the engine's own kernel makes
 * them straight from the input (no transpose, no packing: the BLAS's
 * packing and kernel were 11% of a U-Net image for 6% of its FLOPs). */
enum { TAPS_MAX_OUT_C = 4, TAPS_VECTOR = 16 };

/* Taps per pixel in the forward's pixel-major layout: OC*KH*KW rounded up
 * to whole vectors. */
static size_t taps_padded(const dae_conv_geom *g) {
    size_t n = (size_t)g->out_c * g->k_h * g->k_w;
    return (n + TAPS_VECTOR - 1) / TAPS_VECTOR * TAPS_VECTOR;
}

static int conv2d_by_taps(const dae_conv_geom *g, const patch_geom *p) {
    return g->out_c <= TAPS_MAX_OUT_C && !patch_is_whole_image(p);
}

/* The scratch of the input gradient by phases (conv2d_backward_by_phases),
 * or 0 where it does not go by them. */
static size_t conv2d_backward_phases_scratch(const dae_conv_geom *g);

size_t dae_conv2d_col_size(const dae_conv_geom *g) {
    patch_geom p = conv_patches(g);
    if (conv2d_by_taps(g, &p)) { /* the forward's weight and taps, which hold more than the backward's planes */
        size_t taps = ((size_t)g->in_c + (size_t)g->batch * g->in_h * g->in_w) * taps_padded(g);
        size_t dots = conv2d_by_dots(g, &p) ? conv2d_dots_col_size(g) : 0;
        return taps > dots ? taps : dots;
    }
    size_t taps = (size_t)g->batch * g->out_h * g->out_w * g->k_h * g->k_w * g->in_c;
    size_t phases = conv2d_backward_phases_scratch(g);
    return taps > phases ? taps : phases;
}

/* The output columns [*lo, *hi) whose kernel column j lands inside the
 * input: x = ox*stride - pad + j in [0, in_w). */
static void tap_columns(const dae_conv_geom *g, int j, int *lo, int *hi) {
    int s = g->stride_w, off = j - g->pad_w;
    *lo = off >= 0 ? 0 : (-off + s - 1) / s;
    *hi = g->in_w - 1 - off < 0 ? 0 : (g->in_w - 1 - off) / s + 1;
    if (*hi > g->out_w) *hi = g->out_w;
}

/* acc[ox] += taps[(ox*stride + off) * step] over [lo, hi): one output row's
 * sum of one tap, read from the pixel-major taps of an input row. */
HOT static void add_shifted(float *restrict acc, const float *restrict taps, int lo, int hi, int stride, int off,
                            size_t step) {
    for (int ox = lo; ox < hi; ox++) acc[ox] += taps[(size_t)(ox * stride + off) * step];
}

/* The backward's placing: row[ox*stride + off] = d[ox*oc_n] over
 * [lo, hi), one output row's gradients (channel oc of oc_n) placed in a
 * tap plane's row; again the contiguous case is the one that vectorises. */
HOT static void place_shifted(float *restrict row, const float *restrict d, int lo, int hi, int stride, int off,
                              int oc_n) {
    if (stride == 1 && oc_n == 1) {
        for (int ox = lo; ox < hi; ox++) row[ox + off] = d[ox];
    } else {
        for (int ox = lo; ox < hi; ox++) row[ox * stride + off] = d[(size_t)ox * oc_n];
    }
}

/* C (rows, n) = A B, A being the one or two parts side by side from row
 * row0 on (rows, sum of channels) and B (sum of channels, n). */
static void parts_product(int rows, int n, const float *const *parts, const int *channels, int n_parts,
                          size_t row0, const float *b, float *c) {
    const float *a = parts[0] + row0 * channels[0];
    if (n_parts == 1) {
        dae_gemm_bias(0, rows, n, channels[0], a, channels[0], b, n, c, n, NULL, 0);
        return;
    }
    dae_gemm_bias_split(rows, n, channels[0], a, channels[0], channels[1], parts[1] + row0 * channels[1],
                        channels[1], b, n, c, n, NULL, 0);
}

/* Images [b0, b0 + batch): out (batch, OH, OW, OC) from the parts; wt is
 * weight^T padded, (IC, TAPS_PAD). */
static void conv2d_taps_forward_chunk(float *out, const float *const *parts, const int *channels, int n_parts,
                                      int b0, const float *wt, const float *bias, const dae_conv_geom *g,
                                      int batch, int relu, float *taps) {
    int oc_n = g->out_c, n_pad = (int)taps_padded(g);
    size_t image = (size_t)g->in_h * g->in_w;
    /* An image at a time, as every product of a forward pass: an image's
     * outputs must not depend on the batch it came in. */
    for (int b = 0; b < batch; b++)
        parts_product((int)image, n_pad, parts, channels, n_parts, (b0 + b) * image, wt, taps + b * image * n_pad);
    float acc[g->out_w];
    for (int b = 0; b < batch; b++)
        for (int oy = 0; oy < g->out_h; oy++)
            for (int oc = 0; oc < oc_n; oc++) {
                for (int ox = 0; ox < g->out_w; ox++) acc[ox] = 0.0f;
                for (int i = 0; i < g->k_h; i++) {
                    int y = oy * g->stride_h - g->pad_h + i;
                    if (y < 0 || y >= g->in_h) continue;
                    for (int j = 0; j < g->k_w; j++) {
                        int lo, hi;
                        tap_columns(g, j, &lo, &hi);
                        const float *row = taps + ((size_t)b * g->in_h + y) * g->in_w * n_pad +
                                           (size_t)(oc * g->k_h + i) * g->k_w + j;
                        add_shifted(acc, row, lo, hi, g->stride_w, j - g->pad_w, (size_t)n_pad);
                    }
                }
                float *dst = out + ((size_t)(b0 + b) * g->out_h + oy) * g->out_w * oc_n + oc;
                for (int ox = 0; ox < g->out_w; ox++) {
                    float v = acc[ox] + bias[oc];
                    dst[(size_t)ox * oc_n] = relu && v < 0.0f ? 0.0f : v;
                }
            }
}

int dae_conv2d_takes_parts(const dae_conv_geom *g) {
    patch_geom p = conv_patches(g);
    return conv2d_by_taps(g, &p);
}

/* col holds weight^T padded (IC, TAPS_PAD), then a chunk's taps (or the
 * padded image of conv2d_forward_by_dots). */
void dae_conv2d_forward_parts(float *out, const float *const *parts, const int *channels, int n_parts,
                              const float *weight, const float *prepared, const float *bias,
                              const dae_conv_geom *g, int relu, float *col) {
    patch_geom p = conv_patches(g);
    if (conv2d_by_dots(g, &p)) {
        conv2d_forward_by_dots(out, parts, channels, n_parts, weight, prepared, bias, g, relu, col);
        return;
    }
    size_t in_pixels = (size_t)g->in_h * g->in_w, n_pad = taps_padded(g);
    const float *wt = weight_prepared(prepared, dae_conv2d_prepare, weight, g, col);
    float *taps = col + (size_t)g->in_c * n_pad;
    int per = chunk_images(in_pixels * n_pad);
    for (int b0 = 0; b0 < g->batch; b0 += per) {
        int nb = g->batch - b0 < per ? g->batch - b0 : per;
        conv2d_taps_forward_chunk(out, parts, channels, n_parts, b0, wt, bias, g, nb, relu, taps);
    }
}

/* The adjoint, per chunk of images [b0, b0 + batch): dtaps = each output
 * gradient placed in every tap plane at the pixel its tap read (zero
 * elsewhere); per part q, its columns of dweight += dtaps part and
 * dins[q] = dtaps^T (its columns of weight). */
static void conv2d_taps_backward_chunk(float *const *dins, float *dweight, const float *dout,
                                       const float *const *parts, const int *channels, int n_parts,
                                       const float *weight, const dae_conv_geom *g, int b0, int batch,
                                       float *dtaps) {
    int n_taps = g->out_c * g->k_h * g->k_w, oc_n = g->out_c;
    size_t plane = (size_t)batch * g->in_h * g->in_w;
    memset(dtaps, 0, sizeof(float) * plane * n_taps);
    for (int b = 0; b < batch; b++)
        for (int oy = 0; oy < g->out_h; oy++)
            for (int oc = 0; oc < oc_n; oc++) {
                const float *d = dout + ((size_t)(b0 + b) * g->out_h + oy) * g->out_w * oc_n + oc;
                for (int i = 0; i < g->k_h; i++) {
                    int y = oy * g->stride_h - g->pad_h + i;
                    if (y < 0 || y >= g->in_h) continue;
                    for (int j = 0; j < g->k_w; j++) {
                        int lo, hi, off = j - g->pad_w;
                        tap_columns(g, j, &lo, &hi);
                        float *row = dtaps + (size_t)((oc * g->k_h + i) * g->k_w + j) * plane +
                                     ((size_t)b * g->in_h + y) * g->in_w;
                        place_shifted(row, d, lo, hi, g->stride_w, off, oc_n);
                    }
                }
            }
    size_t row0 = (size_t)b0 * g->in_h * g->in_w;
    for (int q = 0, c_first = 0; q < n_parts; c_first += channels[q++]) {
        int c = channels[q];
        dae_gemm(0, 0, n_taps, c, (int)plane, 1.0f, dtaps, (int)plane, parts[q] + row0 * c, c, 1.0f,
                 dweight + c_first, g->in_c);
        if (dins[q] != NULL)
            dae_gemm(1, 0, (int)plane, c, n_taps, 1.0f, dtaps, (int)plane, weight + c_first, g->in_c, 0.0f,
                     dins[q] + row0 * c, c);
    }
}

/* The backward of a ReLU whose output is x, in place on its gradient dx:
 * for the paths that do not take it where they store dx. */
static void relu_backward_after(float *dx, const float *x, const dae_conv_geom *g, int channels) {
    dae_relu_backward(dx, dx, x, (size_t)g->batch * g->in_h * g->in_w * channels);
}

/* The taps backward over the batch, then the ReLU's backward on dins[q]
 * for each bit q of relu_parts (dae_conv2d_backward_parts). */
static void conv2d_taps_backward(float *const *dins, float *dweight, const float *dout, const float *const *parts,
                                 const int *channels, int n_parts, const float *weight, const dae_conv_geom *g,
                                 float *dtaps, unsigned relu_parts) {
    int per = chunk_images((size_t)g->in_h * g->in_w * g->out_c * g->k_h * g->k_w);
    for (int b0 = 0; b0 < g->batch; b0 += per) {
        int nb = g->batch - b0 < per ? g->batch - b0 : per;
        conv2d_taps_backward_chunk(dins, dweight, dout, parts, channels, n_parts, weight, g, b0, nb, dtaps);
    }
    for (int q = 0; q < n_parts; q++)
        if (dins[q] != NULL && (relu_parts >> q & 1)) relu_backward_after(dins[q], parts[q], g, channels[q]);
}

/* A convolution reads its patches where the image lies: dae_gemm_patches
 * multiplies straight from a zero-padded copy of each image, where
 * im2col copied every patch out for the product (for the one-channel
 * first layer, 9 floats a pixel for a product only 9 long: 1.42 -> 0.78
 * us an image at batch 64, one core). The same bits. The padded image
 * takes col's room, which holds at least an image's im2col. */

static int conv2d_by_patches(const dae_conv_geom *g, const patch_geom *p) {
    int hp, wp;
    patches_padded_size(g, &hp, &wp);
    size_t taps = (size_t)g->k_h * g->k_w;
    /* the kernel the im2col product would take, so the bits are its */
    int broadcast = dae_gemm_bias_path(1, g->out_c, (int)taps * g->in_c) == DAE_GEMM_BROADCAST;
    return !patch_is_whole_image(p) && g->out_c % 16 == 0 && broadcast &&
           taps * g->in_c * g->out_c <= PATCHES_WEIGHT_MAX && (size_t)hp * wp <= (size_t)g->out_h * g->out_w * taps;
}

/* A convolution whose kernel covers its whole input (the 7x7
 * bottleneck; no other path takes it) is one product of the images by
 * the weight: a single image's is a matrix-vector product bound by
 * reading the weight, which a packed copy (dae_gemm_pack) makes one
 * stream. The floats of that copy, 0 when the product is not packed. */
static size_t conv2d_packed_size(const dae_conv_geom *g, const patch_geom *p) {
    return patch_is_whole_image(p) ? dae_gemm_packed_size(1, g->out_c, g->k_h * g->k_w * g->in_c) : 0;
}

/* The weight prepared by the path the forward pass takes (layers.h). */
size_t dae_conv2d_prepared_size(const dae_conv_geom *g) {
    patch_geom p = conv_patches(g);
    size_t taps = (size_t)g->k_h * g->k_w;
    if (conv2d_by_dots(g, &p)) return taps * (size_t)(g->in_c / 16 * 16);
    if (conv2d_by_taps(g, &p)) return (size_t)g->in_c * taps_padded(g);
    if (conv2d_by_patches(g, &p)) return taps * g->in_c * g->out_c;
    return conv2d_packed_size(g, &p);
}

void dae_conv2d_prepare(float *prepared, const float *weight, const dae_conv_geom *g) {
    patch_geom p = conv_patches(g);
    int taps = g->k_h * g->k_w, k = taps * g->in_c;
    if (conv2d_by_dots(g, &p)) { /* the head channels, tap by tap */
        int head = g->in_c / 16 * 16;
        for (int t = 0; t < taps; t++)
            memcpy(prepared + (size_t)t * head, weight + (size_t)t * g->in_c, sizeof(float) * head);
    } else if (conv2d_by_taps(g, &p)) { /* weight^T padded, (IC, TAPS_PAD) */
        size_t n_taps = (size_t)g->out_c * taps, n_pad = taps_padded(g);
        for (int c = 0; c < g->in_c; c++)
            for (size_t t = 0; t < n_pad; t++)
                prepared[c * n_pad + t] = t < n_taps ? weight[t * g->in_c + c] : 0.0f;
    } else if (conv2d_by_patches(g, &p)) { /* weight^T, (K, OC) */
        dae_gemm_transpose(g->out_c, k, weight, k, prepared);
    } else if (conv2d_packed_size(g, &p) > 0) {
        dae_gemm_pack(1, g->out_c, k, weight, prepared);
    }
}

static void conv2d_forward_by_patches(float *out, const float *in, const float *weight, const float *prepared,
                                      const float *bias, const dae_conv_geom *g, int relu, float *padded) {
    int c = g->in_c, hp, wp;
    patches_padded_size(g, &hp, &wp);
    float own[PATCHES_WEIGHT_MAX] __attribute__((aligned(64)));
    const float *wt = weight_prepared(prepared, dae_conv2d_prepare, weight, g, own);
    zero_border(padded, g, c); /* each image fills the inside */
    size_t out_image = (size_t)g->out_h * g->out_w * g->out_c;
    for (int b = 0; b < g->batch; b++) {
        pad_channels(padded, &in, &c, 1, g, b, 0, c);
        dae_gemm_patches(g->out_h, g->out_w, g->k_h, g->k_w, g->stride_h, g->stride_w, c, padded, wp, wt, g->out_c,
                         out + b * out_image, bias, relu);
    }
}

void dae_conv2d_forward(float *out, const float *in, const float *weight, const float *prepared,
                        const float *bias, const dae_conv_geom *g, int relu, float *col) {
    /* per chunk: col (P=b*OH*OW, K=KH*KW*IC), weight (OC, K): out (P, OC) = col weight^T */
    int k = g->k_h * g->k_w * g->in_c;
    patch_geom p = conv_patches(g);
    if (conv2d_by_taps(g, &p)) {
        dae_conv2d_forward_parts(out, &in, &g->in_c, 1, weight, prepared, bias, g, relu, col);
        return;
    }
    if (conv2d_by_patches(g, &p)) {
        conv2d_forward_by_patches(out, in, weight, prepared, bias, g, relu, col);
        return;
    }
    size_t in_image = (size_t)g->in_h * g->in_w * g->in_c, out_pixels = (size_t)g->out_h * g->out_w;
    int whole = patch_is_whole_image(&p);
    int per = whole ? g->batch : chunk_images(out_pixels * k);
    for (int b0 = 0; b0 < g->batch; b0 += per) {
        int nb = g->batch - b0 < per ? g->batch - b0 : per, rows = nb * (int)out_pixels;
        const float *patches = in + b0 * in_image;
        float *y = out + b0 * out_pixels * g->out_c;
        if (!whole) {
            p.batch = nb;
            im2col(col, patches, &p);
            patches = col;
        }
        if (whole && prepared != NULL) /* packed: conv2d_packed_size */
            dae_gemm_bias_packed(1, rows, g->out_c, k, patches, k, prepared, y, g->out_c, bias, relu);
        else dae_gemm_bias(1, rows, g->out_c, k, patches, k, weight, k, y, g->out_c, bias, relu);
    }
}

/* ------------------------------------- a one-channel image's backward */

/* A convolution between a one-channel image and features whose channels
 * are whole vectors: the networks' first layer (1 -> 16) and the seed
 * network's last (16 -> 1, transposed). Their backward products are only
 * kh*kw = 9 wide: im2col copied the image in runs of 3 floats and the
 * kernels filled 9 lanes of 16. Here the channels stay in the lanes and
 * the taps are read from a zero-padded copy of each image (col's room):
 * per 16 channels, a tap's weight gradient is a sum of feature vectors
 * times the tap's pixel, and a feature gradient a sum of the taps' pixels
 * times their weight vectors. v is a conv2d from the image (in_c 1) to the
 * features' grid (out_c n): the layer itself, or a transposed layer's
 * adjoint (adjoint_view). */
enum { ONE_CHANNEL_TAPS_MAX = 25 };

static int one_channel_image(const dae_conv_geom *v) {
    int hp, wp;
    patches_padded_size(v, &hp, &wp);
    patch_geom p = conv_patches(v);
    size_t taps = (size_t)v->k_h * v->k_w;
    return v->in_c == 1 && v->out_c % 16 == 0 && !patch_is_whole_image(&p) && taps <= ONE_CHANNEL_TAPS_MAX &&
           taps * v->out_c <= PATCHES_WEIGHT_MAX && (size_t)hp * wp <= (size_t)v->out_h * v->out_w * taps;
}

/* A convolution's adjoint: from its output (the image) to its input's
 * grid, channels channels (a conv_transpose2d's is a conv2d, a conv2d's a
 * conv_transpose2d). */
static dae_conv_geom adjoint_view(const dae_conv_geom *g, int channels) {
    dae_conv_geom v = *g;
    v.in_c = g->out_c, v.in_h = g->out_h, v.in_w = g->out_w;
    v.out_c = channels, v.out_h = g->in_h, v.out_w = g->in_w;
    v.out_pad_h = v.out_pad_w = 0;
    return v;
}

/* A conv_transpose2d to one channel whose parts' channels are whole
 * vectors. */
static int transposed_to_one_channel(const dae_conv_geom *g, const int *channels, int n_parts) {
    if (g->out_c != 1) return 0;
    for (int q = 0; q < n_parts; q++) {
        dae_conv_geom v = adjoint_view(g, channels[q]);
        if (!one_channel_image(&v)) return 0;
    }
    return 1;
}

/* Defined with their vector code (layers_lanes.inc), after the points'. */
static void col2im(float *restrict dst, const float *restrict col, const patch_geom *p, const float *restrict bias,
                   int relu);
static void one_channel_backward(float *restrict dw, float *restrict dfeat, const float *restrict feat,
                                 const float *image, const float *restrict wt, const dae_conv_geom *v,
                                 float *restrict padded, int feat_relu);

/* A conv2d to one channel at stride 1 keeping the image's size (the
 * U-Net's last layer: 16 + 1 channels in, 3x3, padding 1). Its adjoint
 * is the conv2d from the output gradient, a one-channel image, to the
 * input's grid through the flipped kernel: one_channel_backward's, with
 * the channels in the lanes, for each part whose channels are whole
 * vectors. A part of a few channels whose gradient is not wanted (the
 * network's input) keeps the taps backward for its columns of dweight.
 * The taps backward placed the output gradient in 9 tap planes and ran
 * the BLAS on products 9 and 16 wide: 5% of a U-Net training epoch. */
static int conv2d_to_one_channel_by_adjoint(const dae_conv_geom *g, float *const *dins, const int *channels,
                                            int n_parts) {
    if (g->out_c != 1 || g->stride_h != 1 || g->stride_w != 1 || 2 * g->pad_h != g->k_h - 1 ||
        2 * g->pad_w != g->k_w - 1)
        return 0;
    int vectors = 0;
    for (int q = 0; q < n_parts; q++) {
        dae_conv_geom v = adjoint_view(g, channels[q]);
        if (one_channel_image(&v)) vectors++;
        else if (dins[q] != NULL) return 0;
    }
    return vectors > 0;
}

/* acc[t] += one image's output gradient dout (out_h x out_w) times its
 * padded channel at tap t's offset, 16 pixels of a row at a time (a
 * row's last vector masked: read on into the next row, but for the
 * batch's last row, copied); kh and kw constants when inlined. */
static inline __attribute__((always_inline)) FUSED_MADD void one_channel_rows_taps_sum(vec16 *restrict acc,
                                                                                       const float *restrict dout,
                                                                                       const float *restrict padded,
                                                                                       int wp, const dae_conv_geom *g,
                                                                                       int last_image, int kh, int kw) {
    ivec16 live; /* a row's last vector's lanes inside the row */
    for (int l = 0; l < 16; l++) live[l] = l < (g->out_w - 1) % 16 + 1 ? -1 : 0;
    for (int y = 0; y < g->out_h; y++) {
        const float *d_row = dout + (size_t)y * g->out_w;
        for (int x = 0; x < g->out_w; x += 16) {
            int n = g->out_w - x < 16 ? g->out_w - x : 16;
            vec16 d = {0};
            if (n == 16) {
                d = *(const uvec16 *)(d_row + x);
            } else if (!last_image || y + 1 < g->out_h) {
                d = *(const uvec16 *)(d_row + x);
                d = (vec16)((ivec16)d & live);
            } else {
                memcpy(&d, d_row + x, sizeof(float) * n);
            }
            const float *px = padded + (size_t)y * wp + x;
            for (int i = 0; i < kh; i++)
                for (int j = 0; j < kw; j++) acc[i * kw + j] += d * *(const uvec16 *)(px + (size_t)i * wp + j);
        }
    }
}

/* The weight gradient of a part of a few channels whose own gradient is
 * not wanted (the network's input, as the U-Net's last layer reads it):
 * per channel, each tap's a sum over the batch of the output gradient's
 * rows times the padded channel's rows at the tap's offset, 16 pixels at
 * a time. The taps backward placed the output gradient in 9 planes and
 * multiplied them with the BLAS for these 9 numbers: ~2% of a U-Net
 * training epoch. col holds the padded channel and a vector's overrun. */
HOT FUSED_MADD static void conv2d_to_one_channel_weight_grad(float *dweight, const float *dout, const float *part,
                                                             int channels, int c_first, const dae_conv_geom *g,
                                                             float *col) {
    int hp, wp, taps = g->k_h * g->k_w;
    patches_padded_size(g, &hp, &wp);
    memset(col + (size_t)hp * wp, 0, sizeof(float) * 16); /* the last rows' loads overrun: zeros */
    zero_border(col, g, 1);
    for (int c = 0; c < channels; c++) {
        vec16 acc[ONE_CHANNEL_TAPS_MAX] = {0};
        for (int b = 0; b < g->batch; b++) {
            pad_channels(col, &part, &channels, 1, g, b, c, 1);
            const float *d = dout + (size_t)b * g->out_h * g->out_w;
            int last = b == g->batch - 1;
            if (g->k_h == 3 && g->k_w == 3) one_channel_rows_taps_sum(acc, d, col, wp, g, last, 3, 3);
            else one_channel_rows_taps_sum(acc, d, col, wp, g, last, g->k_h, g->k_w);
        }
        for (int t = 0; t < taps; t++) {
            float sum = 0.0f;
            for (int l = 0; l < 16; l++) sum += acc[t][l];
            dweight[(size_t)t * g->in_c + c_first + c] += sum;
        }
    }
}

static void conv2d_to_one_channel_backward(float *const *dins, float *dweight, const float *dout,
                                           const float *const *parts, const int *channels, int n_parts,
                                           const float *weight, const dae_conv_geom *g, float *col,
                                           unsigned relu_parts) {
    int taps = g->k_h * g->k_w, hp, wp;
    for (int q = 0, c_first = 0; q < n_parts; c_first += channels[q++]) {
        int n = channels[q], relu = dins[q] != NULL && (relu_parts >> q & 1);
        dae_conv_geom v = adjoint_view(g, n);
        if (!one_channel_image(&v)) { /* a few channels */
            if (dins[q] == NULL && taps <= ONE_CHANNEL_TAPS_MAX)
                conv2d_to_one_channel_weight_grad(dweight, dout, parts[q], n, c_first, g, col);
            else
                conv2d_taps_backward(dins + q, dweight + c_first, dout, parts + q, channels + q, 1,
                                     weight + c_first, g, col, (unsigned)relu);
            continue;
        }
        /* tap t of the adjoint is the layer's tap taps - 1 - t; dw (n, taps)
         * after the padded image in col */
        patches_padded_size(&v, &hp, &wp);
        float wt[PATCHES_WEIGHT_MAX] __attribute__((aligned(64))), *dw = col + (size_t)hp * wp;
        for (int t = 0; t < taps; t++)
            for (int c = 0; c < n; c++) wt[t * n + c] = weight[(size_t)(taps - 1 - t) * g->in_c + c_first + c];
        memset(dw, 0, sizeof(float) * n * taps);
        one_channel_backward(dw, dins[q], parts[q], dout, wt, &v, col, relu);
        for (int t = 0; t < taps; t++)
            for (int c = 0; c < n; c++) dweight[(size_t)(taps - 1 - t) * g->in_c + c_first + c] += dw[c * taps + t];
    }
}

void dae_conv2d_backward_parts(float *const *dins, float *dweight, float *dbias, const float *dout,
                               const float *const *parts, const int *channels, int n_parts, const float *weight,
                               const dae_conv_geom *g, float *col, unsigned relu_parts) {
    sum_rows(dbias, dout, (size_t)g->batch * g->out_h * g->out_w, g->out_c);
    if (conv2d_to_one_channel_by_adjoint(g, dins, channels, n_parts)) {
        conv2d_to_one_channel_backward(dins, dweight, dout, parts, channels, n_parts, weight, g, col, relu_parts);
        return;
    }
    conv2d_taps_backward(dins, dweight, dout, parts, channels, n_parts, weight, g, col, relu_parts);
}

/* The backward of a conv2d at stride 2 with a 3x3 kernel and padding 1
 * by the transposed convolution's phases, when they run: 1 when it ran
 * (below, after the phases). */
static int conv2d_backward_by_phases(float *din, float *dweight, const float *dout, const float *in,
                                     const float *weight, const dae_conv_geom *g, int in_relu, float *col);

void dae_conv2d_backward(float *din, float *dweight, float *dbias,
                         const float *dout, const float *in,
                         const float *weight, const dae_conv_geom *g,
                         float *col, int in_relu) {
    /* per chunk: dweight (OC, K) += dout^T col; dcol (P, K) = dout weight;
     * din = col2im(dcol) */
    int k = g->k_h * g->k_w * g->in_c;
    in_relu = in_relu && din != NULL;
    patch_geom p = conv_patches(g);
    if (conv2d_by_taps(g, &p)) {
        dae_conv2d_backward_parts(&din, dweight, dbias, dout, &in, &g->in_c, 1, weight, g, col, in_relu);
        return;
    }
    sum_rows(dbias, dout, (size_t)g->batch * g->out_h * g->out_w, g->out_c);
    if (din == NULL && one_channel_image(g)) { /* the network's input: its weight gradient alone */
        one_channel_backward(dweight, NULL, dout, in, NULL, g, col, 0);
        return;
    }
    if (conv2d_backward_by_phases(din, dweight, dout, in, weight, g, in_relu, col)) return;
    size_t in_image = (size_t)g->in_h * g->in_w * g->in_c, out_pixels = (size_t)g->out_h * g->out_w;
    int whole = patch_is_whole_image(&p);
    int per = whole ? g->batch : chunk_images(out_pixels * k);
    for (int b0 = 0; b0 < g->batch; b0 += per) {
        int nb = g->batch - b0 < per ? g->batch - b0 : per, rows = nb * (int)out_pixels;
        const float *patches = in + b0 * in_image, *dy = dout + b0 * out_pixels * g->out_c;
        float *dx = din == NULL ? NULL : din + b0 * in_image;
        p.batch = nb;
        if (!whole) {
            im2col(col, patches, &p);
            patches = col;
        }
        if (dweight != NULL) dae_gemm_tn_acc(g->out_c, k, rows, dy, g->out_c, patches, k, dweight, k);
        if (dx == NULL) continue;
        dae_gemm_bias(0, rows, k, g->out_c, dy, g->out_c, weight, k, whole ? dx : col, k, NULL, 0);
        if (!whole) col2im(dx, col, &p, NULL, 0);
    }
    if (in_relu) relu_backward_after(din, in, g, g->in_c);
}

/* ------------------------------- conv_transpose2d 3x3 stride 2 by points */

/* A transposed convolution with a 3x3 kernel, stride 2 and padding 1 (the
 * U-Net's decoder) makes each output from 1, 2 or 4 taps. Along one
 * axis, input pixels d0, d1 (a tile: x[2t], x[2t+1]) and the next, d2
 * (zero past the edge), give the outputs
 *   y[4t] = d0 w1,  y[4t+1] = d0 w2 + d1 w0,  y[4t+2] = d1 w1,
 *   y[4t+3] = d1 w2 + d2 w0,
 * and the odd pair is Winograd's F(2,2): with m1 = (d0 - d1) w2,
 * m2 = d1 (w0 + w2), m3 = (d2 - d1) w0, y[4t+1] = m1 + m2 and
 * y[4t+3] = m2 + m3: 5 products where the taps take 6. Per axis that is
 * four kinds of point, each a pixel combination with a filter:
 *   A: d0 and d1 with w1;  B: d0 - d1 with w2;  C: d1 with w0 + w2;
 *   D: d2 - d1 with w0,
 * and across both axes 16 kinds, each one product over the tiles'
 * channels, 25 products a tile where the taps take 36 (-31%). AA is the
 * input itself, multiplied where it lies (the concatenation's parts
 * too); the other 15 kinds' combinations (21 a tile) are made first. The
 * sums differ from the taps' in rounding only (the PyTorch fixtures'
 * tolerances hold). A row of each product is one tile's, so an image's
 * outputs are the same bits in any batch. The U-Net's 14 -> 28 layer by
 * points took its image from 43.1 to 38.7 us at batch 16 (one core of a
 * Zen 4, whose AVX-512 multiply-adds run as two 256-bit halves). Where
 * they run at full width (a Xeon with two 512-bit FMA ports), multiply-
 * adds are cheap next to the loads and stores the points add, and the
 * taps won: the layer 14.4 -> 12.9 us an image at batch 1, 15.7 -> 12.8
 * at batch 64; there the phases below run (points_pay), faster still.
 * An input of odd size ends in half tiles, which the kinds that are zero
 * there skip (points_layout): the 7 -> 14 layers multiply 309 points an
 * input and output channel where the taps take 441 (-30%): each
 * network's image 0-2.5% faster (AVX2, one core; README). */
enum { POINT_A, POINT_B, POINT_C, POINT_D, POINT_KINDS };
/* The most channels in. */
enum { POINTS_CHANNELS_MAX = 256 };

/* Per axis, point kind k's sub-rows (A: d0 and d1; the others one) and
 * which pixels of d0, d1, d2 it adds and subtracts (-1: none). */
static const int point_rows[POINT_KINDS] = {2, 1, 1, 1};
static const int point_plus[POINT_KINDS][2] = {{0, 1}, {0, -1}, {1, -1}, {2, -1}};
static const int point_minus[POINT_KINDS] = {-1, 1, -1, 1};
/* The kernel taps summed into each kind's filter. */
static const int point_taps[POINT_KINDS][2] = {{1, -1}, {2, -1}, {0, 2}, {0, -1}};

/* *choice: -1 until first asked, then `now` as it was at that ask, kept,
 * so that a process never changes a layer's way under a model (its
 * scratch's size follows it). */
static int first_choice(_Atomic int *choice, int now) {
    int kept = atomic_load_explicit(choice, memory_order_relaxed);
    if (kept < 0) atomic_store_explicit(choice, kept = now, memory_order_relaxed);
    return kept;
}

/* Whether points are taken where they apply: the choice for the CPU and
 * the instruction set in use at the first ask (DAE_ISA=avx2 takes them,
 * as an AVX2 machine does), unless dae_conv_transpose2d_set_points chose. */
static _Atomic int points_wanted = -1;

void dae_conv_transpose2d_set_points(int on) {
    atomic_store_explicit(&points_wanted, on < 0 ? -1 : on != 0, memory_order_relaxed);
}

static int points_pay(void) {
    return first_choice(&points_wanted, !(dae_gemm_isa() == DAE_ISA_AVX512 && dae_cpu_full_width_avx512()));
}

static int conv_transpose2d_by_points(const dae_conv_geom *g) {
    return points_pay() && g->k_h == 3 && g->k_w == 3 && g->stride_h == 2 && g->stride_w == 2 && g->pad_h == 1 &&
           g->pad_w == 1 && g->in_c % 16 == 0 && g->out_c % 16 == 0 &&
           g->in_c <= POINTS_CHANNELS_MAX;
}

/* The rows a chunk of nb images' points take. Along an axis of n pixels
 * there are (n + 1) / 2 tiles; with n odd the last is half a tile (d1 and
 * d2 zero), where C and D are zeros and its outputs (the first two) need
 * only A and B: C and D skip it, along y and along x. So the made kinds
 * fall in 4 classes by whether they skip half tiles along y (2) and along
 * x (1); tiles_y[s] and tiles_x[s] are an image's tiles along y and x for
 * kinds A and B (s = 0) and for C and D (s = 1). A class's rows (the made
 * combinations' and the products' alike) go tile by tile, a tile's rows
 * of the class's kinds together (point_class_rows, point_kind_offset), so
 * that a tile's transforms find them all at constant offsets from one
 * place a class; a sub-row of a kind over the tiles is a product of its
 * own, of rows point_class_rows[s] apart. Class s's rows start at
 * first[s], tiles[s] tiles of them; total is all classes' rows. */
typedef struct {
    int tiles_y[2], tiles_x[2], tiles[4];
    size_t first[4], total;
} points_layout;

static inline int point_skips_half(int kind) { return kind >= POINT_C; }

/* The rows kind k = f * POINT_KINDS + h (f along y, h along x) has a
 * tile: A's two sub-rows by the other's. Called with k constant in
 * unrolled loops, so it folds to a constant. */
static inline int point_kind_rows(int k) { return point_rows[k / POINT_KINDS] * point_rows[k % POINT_KINDS]; }

/* A kind's class: whether it skips half tiles along y (2) and along x
 * (1). Folds to a constant for a constant kind. */
static inline int point_kind_class(int k) {
    return 2 * point_skips_half(k / POINT_KINDS) + point_skips_half(k % POINT_KINDS);
}

/* A tile's rows of each class: its made kinds' rows (point_kind_rows) one
 * after another in the order of k, kind k's from point_kind_offset[k]. */
static const int point_class_rows[4] = {5, 6, 6, 4};
static const int point_kind_offset[POINT_KINDS * POINT_KINDS] = {0, 0, 0, 2, 2, 4, 4, 5, 0, 2, 0, 1, 3, 5, 2, 3};

static points_layout points_layout_of(const dae_conv_geom *g, int nb) {
    points_layout lay = {.tiles_y = {(g->in_h + 1) / 2, g->in_h / 2}, .tiles_x = {(g->in_w + 1) / 2, g->in_w / 2}};
    for (int s = 0; s < 4; s++) {
        lay.first[s] = lay.total;
        lay.tiles[s] = nb * lay.tiles_y[s >> 1] * lay.tiles_x[s & 1];
        lay.total += (size_t)lay.tiles[s] * point_class_rows[s];
    }
    return lay;
}

/* The floats of scratch an image's points take: the made combinations
 * (in_c floats a row) and their products (out_c), and AA's products (the
 * input's pixels, out_c each). */
static size_t points_image_floats(const dae_conv_geom *g) {
    return points_layout_of(g, 1).total * (g->in_c + g->out_c) + (size_t)g->in_h * g->in_w * g->out_c;
}

static size_t points_weight_floats(const dae_conv_geom *g) { return (size_t)16 * g->in_c * g->out_c; }

static int points_chunk_images(const dae_conv_geom *g) {
    size_t per = points_image_floats(g);
    size_t n = 2 * COL_CHUNK_FLOATS / per;
    return n < 1 ? 1 : n > (size_t)g->batch ? g->batch : (int)n;
}

static size_t points_col_size(const dae_conv_geom *g) {
    return points_weight_floats(g) + (size_t)points_chunk_images(g) * points_image_floats(g);
}

/* Per axis, each of a tile's 4 outputs as the sum of one or two (kind,
 * sub-row) points (-1: none); in 2-D, output (i, j) sums the products of
 * output i's points along y and output j's along x. */
static const int point_outputs[4][2][2] = {
    {{POINT_A, 0}, {-1, 0}}, {{POINT_B, 0}, {POINT_C, 0}}, {{POINT_A, 1}, {-1, 0}}, {{POINT_C, 0}, {POINT_D, 0}}};

/* at[s] = the first of tile (b, ty, tx)'s rows of class s, or -1 where
 * the class's kinds skip it. Returns whether no kind skips the tile. */
static inline int points_tile_at(ptrdiff_t *at, const points_layout *lay, int b, int ty, int tx) {
    for (int s = 0; s < 4; s++) {
        int sy = s >> 1, sx = s & 1;
        ptrdiff_t tile = ((ptrdiff_t)b * lay->tiles_y[sy] + ty) * lay->tiles_x[sx] + tx;
        int there = ty < lay->tiles_y[sy] && tx < lay->tiles_x[sx];
        at[s] = there ? (ptrdiff_t)lay->first[s] + tile * point_class_rows[s] : -1;
    }
    return at[3] >= 0;
}

/* wt (16 kinds, IC, OC) = each kind's filter: the sum of its taps of
 * weight (IC, 3, 3, OC), along y, then along x; OC in whole vectors. */
HOT static void points_weights(float *restrict wt, const float *restrict weight, int ic_n, int oc_n) {
    size_t kind = (size_t)ic_n * oc_n;
    for (int ic = 0; ic < ic_n; ic++)
        for (int c = 0; c < oc_n; c += 16) {
            const float *w = weight + (size_t)ic * 9 * oc_n + c;
            vec16 tap[3][3];
            for (int i = 0; i < 3; i++)
                for (int j = 0; j < 3; j++) tap[i][j] = *(const uvec16 *)(w + (i * 3 + j) * oc_n);
#pragma GCC unroll 4
            for (int f = 0; f < POINT_KINDS; f++) {
                vec16 col[3];
                for (int j = 0; j < 3; j++)
                    col[j] = point_taps[f][1] < 0 ? tap[point_taps[f][0]][j]
                                                  : tap[point_taps[f][0]][j] + tap[point_taps[f][1]][j];
#pragma GCC unroll 4
                for (int h = 0; h < POINT_KINDS; h++) {
                    vec16 v = point_taps[h][1] < 0 ? col[point_taps[h][0]] : col[point_taps[h][0]] + col[point_taps[h][1]];
                    *(uvec16 *)(wt + (f * POINT_KINDS + h) * kind + (size_t)ic * oc_n + c) = v;
                }
            }
        }
}

/* col2im's gather, the one-channel backward and the points' inputs and
 * outputs, for vectors of 16 channels (cloned for AVX-512 and baseline
 * only: they run where AVX-512 is in use) and of 8 (elsewhere); the file
 * undefines its parameters at its end. */
#define LANES 16
#define VEC vec16
#define UVEC uvec16
#define IVEC ivec16
#define LN(name) name##16
#define LANES_HOT HOT_AVX512
#include "layers_lanes.inc"
#define LANES 8
#define VEC vec8
#define UVEC uvec8
#define IVEC ivec8
#define LN(name) name##8
#define LANES_HOT HOT
#include "layers_lanes.inc"
/* The copy of layers_lanes.inc's function `name` for the instruction set
 * in use. */
#define BY_LANES(name) (dae_gemm_isa() == DAE_ISA_AVX512 ? name##16 : name##8)

/* The first output position (>= 0) whose kernel of taps taps at stride
 * covers input offset at (at - o * stride < taps). */
static inline int covering_first(int at, int taps, int stride) {
    int over = at - taps + 1; /* o * stride >= over */
    return over <= 0 ? 0 : (over + stride - 1) / stride;
}

/* dst = relu(col2im(col) + bias): what zeroing dst, col2im_add and
 * dae_add_bias make, with the same bits (each position's entries are
 * added in col2im_add's order), but written as a gather: dst is written
 * once, where the scatter zeroed it, added into it 9 times a position for
 * a 3x3 kernel and read it again for the bias (together 10.3% of a U-Net
 * forward pass at batch 16, the gather 8.0%). bias may be NULL. Channels
 * not in whole vectors (the seed network's last layer, whose scatter is
 * faster than a scalar gather) and images too large for the tables
 * scatter. The gather (layers_lanes.inc) goes 16 channels at a time
 * where AVX-512 is in use, 8 elsewhere. */
static void col2im(float *restrict dst, const float *restrict col, const patch_geom *p, const float *restrict bias,
                   int relu) {
    int run = p->kw * p->c;
    size_t k = (size_t)p->kh * run;
    if (p->c % 16 != 0 || (size_t)p->w * p->kw > GATHER_TABLE_MAX || (size_t)p->h * p->kh > GATHER_TABLE_MAX ||
        (size_t)p->oh * p->ow * k > INT_MAX) {
        size_t pixels = (size_t)p->batch * p->h * p->w;
        memset(dst, 0, sizeof(float) * pixels * p->c);
        col2im_add(dst, col, p);
        dae_add_bias(dst, (size_t)p->c, pixels, p->c, bias, relu);
        return;
    }
    /* Per image column x, its entries' offsets within an output row of
     * col: the inner positions' by kernel column, then the border ones'
     * by position, as patch_walk adds them. Per image row y, the offsets
     * of its kernel rows' entries, by position. */
    int x_off[GATHER_TABLE_MAX], x_start[p->w + 1], y_off[GATHER_TABLE_MAX], y_start[p->h + 1];
    int ox_lo, ox_hi, n = 0;
    inner_positions(p, &ox_lo, &ox_hi);
    for (int x = 0; x < p->w; x++) {
        x_start[x] = n;
        for (int j = 0; j < p->kw; j++) {
            int left = x + p->pw - j;
            if (left >= 0 && left % p->sw == 0 && left / p->sw >= ox_lo && left / p->sw < ox_hi)
                x_off[n++] = (int)((size_t)(left / p->sw) * k) + j * p->c;
        }
        /* the border positions whose kernel covers x: ox from the first
         * with j = x + pw - ox * sw < kw to the last with j >= 0 (the
         * tables are made for every call: looping over every ox took
         * longer than the gather at batch 1) */
        int ox_first = covering_first(x + p->pw, p->kw, p->sw), ox_end = (x + p->pw) / p->sw + 1;
        if (ox_end > p->ow) ox_end = p->ow;
        for (int ox = ox_first; ox < ox_end; ox++) {
            if (ox >= ox_lo && ox < ox_hi) continue;
            x_off[n++] = (int)((size_t)ox * k) + (x + p->pw - ox * p->sw) * p->c;
        }
    }
    x_start[p->w] = n;
    n = 0;
    for (int y = 0; y < p->h; y++) {
        y_start[y] = n;
        int oy_end = (y + p->ph) / p->sh + 1;
        if (oy_end > p->oh) oy_end = p->oh;
        for (int oy = covering_first(y + p->ph, p->kh, p->sh); oy < oy_end; oy++)
            y_off[n++] = (int)((size_t)oy * p->ow * k) + (y + p->ph - oy * p->sh) * run;
    }
    y_start[p->h] = n;
    /* every position has 1 or 2 kernel rows and 1 or 2 columns */
    int two_by_two = 1;
    for (int x = 0; x < p->w; x++) two_by_two &= (unsigned)(x_start[x + 1] - x_start[x] - 1) <= 1;
    for (int y = 0; y < p->h; y++) two_by_two &= (unsigned)(y_start[y + 1] - y_start[y] - 1) <= 1;
    BY_LANES(gather)(dst, col, p, k, y_off, y_start, x_off, x_start, bias, relu, two_by_two);
}

/* The backward pass against the images (B, H, W, 1), 16 channels at a
 * time (8 where AVX-512 is not in use), each image padded once: dw (n,
 * taps) += the weight gradient from the features feat (B, OH, OW, n),
 * summed over the batch's pixels in order; when dfeat is not NULL, dfeat
 * (B, OH, OW, n) = per pixel the sum over its taps of the tap's pixel
 * times wt[t] (taps, n), eight pixels at a time (one_channel_pixels_row),
 * zero where feat is not positive when feat_relu (feat a ReLU's output:
 * its backward done here). */
static void one_channel_backward(float *restrict dw, float *restrict dfeat, const float *restrict feat,
                                 const float *image, const float *restrict wt, const dae_conv_geom *v,
                                 float *restrict padded, int feat_relu) {
    BY_LANES(one_channel_backward)(dw, dfeat, feat, image, wt, v, padded, feat_relu);
}

/* The forward pass by points: a chunk of images at a time, the 16 kinds'
 * products on the engine's kernels. */
static void conv_transpose2d_forward_by_points(float *out, const float *const *parts, const int *channels,
                                               int n_parts, const float *weight, const float *prepared,
                                               const float *bias, const dae_conv_geom *g, int relu, float *col) {
    int ic_n = g->in_c, oc_n = g->out_c, per = points_chunk_images(g);
    size_t in_pixels = (size_t)g->in_h * g->in_w, out_image = (size_t)g->out_h * g->out_w * oc_n;
    const float *wt = weight_prepared(prepared, dae_conv_transpose2d_prepare, weight, g, col);
    float *u = col + points_weight_floats(g);
    for (int b0 = 0; b0 < g->batch; b0 += per) {
        int nb = g->batch - b0 < per ? g->batch - b0 : per;
        points_layout lay = points_layout_of(g, nb);
        float *prod = u + lay.total * ic_n, *aa = prod + lay.total * oc_n;
        BY_LANES(points_inputs)(u, &lay, parts, channels, n_parts, g, b0, nb);
        parts_product(nb * (int)in_pixels, oc_n, parts, channels, n_parts, b0 * in_pixels, wt, aa);
        for (int k = 1; k < POINT_KINDS * POINT_KINDS; k++) {
            int s = point_kind_class(k), step = point_class_rows[s];
            for (int sub = 0; sub < point_kind_rows(k); sub++) {
                size_t row = lay.first[s] + point_kind_offset[k] + sub;
                dae_gemm_bias(0, lay.tiles[s], oc_n, ic_n, u + row * ic_n, step * ic_n, wt + (size_t)k * ic_n * oc_n,
                              oc_n, prod + row * oc_n, step * oc_n, NULL, 0);
            }
        }
        BY_LANES(points_outputs)(out + b0 * out_image, prod, aa, &lay, bias, g, nb, relu);
    }
}

/* ----------------------- conv_transpose2d to one channel, 3x3, stride 2 */

/* The seed network's last layer (16 -> 1 channels, 14x14 -> 28x28) made
 * each input pixel's 9 taps as a product 9 columns wide, then scattered
 * them into the output a float at a time: 14-24 GFLOP/s. By rows instead:
 * an image's channels go to planes (transposed through the registers),
 * and an input row's 9 tap rows are vectors along the row (its pixels in
 * the lanes), sums over the channels of a plane's row times a weight. With
 * padding 1, output row 2m takes input row m's centre taps (kh 1), row
 * 2m+1 input row m+1's top taps (kh 0) and row m's bottom ones (kh 2);
 * within a row, column 2n takes pixel n's centre tap (kw 1) and 2n+1
 * pixel n+1's left tap (kw 0) and pixel n's right one (kw 2): two vectors
 * interleaved. An input row fits a vector: at most 16 pixels. Where
 * AVX-512 is not in use, GCC 12 kept the 16-float tap rows in memory and
 * the taps ran faster (AVX2 build, DAE_ISA=avx2, one core: the seed
 * network's image 35.8 -> 32.4 us at batch 1, 31.1 -> 27.9 at batch 64);
 * there a row goes as two vectors of 8 (one_channel_rows_image8).
 * Chosen from the instruction set in use at the first ask: by rows with
 * AVX2 or AVX-512, by the taps with SSE2 alone. */
enum { ROW_PIXELS_MAX = 16 };

static _Atomic int rows_wanted = -1;

void dae_conv_transpose2d_set_rows(int on) {
    atomic_store_explicit(&rows_wanted, on < 0 ? -1 : on != 0, memory_order_relaxed);
}

static int conv_transpose2d_to_one_channel_by_rows(const dae_conv_geom *g) {
    return first_choice(&rows_wanted, dae_gemm_isa() != DAE_ISA_SSE2) && g->out_c == 1 && g->k_h == 3 &&
           g->k_w == 3 && g->stride_h == 2 && g->stride_w == 2 && g->pad_h == 1 && g->pad_w == 1 &&
           g->in_w <= ROW_PIXELS_MAX;
}

/* Scratch floats: one image's planes, and a vector's worth past the last
 * row that the row loads overrun (masked off). */
static size_t one_channel_rows_col_size(const dae_conv_geom *g) {
    return (size_t)g->in_c * g->in_h * g->in_w + ROW_PIXELS_MAX;
}

/* t[kh*3 + kw] = input row iy's tap (kh, kw) along the row: the sum over
 * channels of plane c's row times weight (IC, 3, 3) at c. */
static inline __attribute__((always_inline)) void one_channel_tap_rows(vec16 *restrict t, const float *restrict planes,
                                                                       const float *restrict weight, ivec16 live,
                                                                       const dae_conv_geom *g, int iy) {
    size_t plane = (size_t)g->in_h * g->in_w;
    for (int k = 0; k < 9; k++) t[k] = (vec16){0};
    for (int c = 0; c < g->in_c; c++) {
        vec16 p = *(const uvec16 *)(planes + c * plane + (size_t)iy * g->in_w);
        p = (vec16)((ivec16)p & live);
        const float *w = weight + (size_t)c * 9;
#pragma GCC unroll 9
        for (int k = 0; k < 9; k++) t[k] += p * w[k];
    }
}

/* Input row taps t's share of an output row through kernel row kh:
 * *even (columns 2n) += tap (kh, 1); *odd (2n+1) += tap (kh, 0) of the
 * next pixel + tap (kh, 2). */
static inline __attribute__((always_inline)) void one_channel_row_share(vec16 *even, vec16 *odd, const vec16 *t,
                                                                        int kh) {
    vec16 zero = {0}, left = t[kh * 3];
    vec16 next = __builtin_shufflevector(left, zero, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16);
    *even += t[kh * 3 + 1];
    *odd += next + t[kh * 3 + 2];
}

/* Writes output row y from its even and odd columns, + bias, then max(0, .)
 * when relu. The rows are written in order, so when two whole vectors fit
 * in the room floats left of the image they are stored whole, and the
 * next rows write over what lands past this one: copying out_w floats
 * was a fifth of the seed network's last layer's forward. */
static inline __attribute__((always_inline)) void one_channel_row_store(float *restrict out, vec16 even, vec16 odd,
                                                                        float bias, int relu, int out_w,
                                                                        size_t room) {
    vec16 lo = __builtin_shufflevector(even, odd, 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    vec16 hi = __builtin_shufflevector(even, odd, 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    lo += bias, hi += bias;
    if (relu) lo = RELU16(lo), hi = RELU16(hi);
    if (room >= 2 * ROW_PIXELS_MAX) {
        *(uvec16 *)out = lo;
        *(uvec16 *)(out + 16) = hi;
        return;
    }
    float row[2 * ROW_PIXELS_MAX] __attribute__((aligned(64)));
    *(vec16 *)row = lo;
    *(vec16 *)(row + 16) = hi;
    memcpy(out, row, sizeof(float) * out_w);
}

/* One image: out (OH, OW) from its planes (IC planes of H*W). Its
 * products fused into their sums: half the instructions, the seed
 * network's last layer's forward 1.25 -> 0.97 us an image (batch 32, one
 * core), its outputs moving in their last bits. */
HOT_AVX512 FUSED_MADD static void one_channel_rows_image16(float *restrict out, const float *restrict planes,
                                                    const float *restrict weight, float bias, const dae_conv_geom *g,
                                                    int relu) {
    ivec16 live;
    for (int l = 0; l < 16; l++) live[l] = l < g->in_w ? -1 : 0;
    vec16 t[9] = {{0}}, prev[9] = {{0}};
    for (int iy = 0; iy <= g->in_h; iy++) {
        if (iy < g->in_h) one_channel_tap_rows(t, planes, weight, live, g, iy);
        int y = 2 * iy - 1; /* odd: input row iy's top taps and row iy - 1's bottom ones */
        if (iy > 0 && y < g->out_h) {
            vec16 even = {0}, odd = {0};
            if (iy < g->in_h) one_channel_row_share(&even, &odd, t, 0);
            one_channel_row_share(&even, &odd, prev, 2);
            one_channel_row_store(out + (size_t)y * g->out_w, even, odd, bias, relu, g->out_w,
                                  (size_t)(g->out_h - y) * g->out_w);
        }
        if (iy == g->in_h) break;
        if (y + 1 < g->out_h) { /* even: input row iy's centre taps */
            vec16 even = {0}, odd = {0};
            one_channel_row_share(&even, &odd, t, 1);
            one_channel_row_store(out + (size_t)(y + 1) * g->out_w, even, odd, bias, relu, g->out_w,
                                  (size_t)(g->out_h - y - 1) * g->out_w);
        }
        for (int k = 0; k < 9; k++) prev[k] = t[k];
    }
}

/* one_channel_rows_image16 where AVX-512 is not in use: a row's 16 pixels
 * as two vectors of 8, and each input row's 9 tap rows kept in memory
 * (L1), where the next pixel's tap is a load one float on; zeros past
 * the row's pixels, so the 16th pixel's next is +0, as the 16-lane
 * shuffle brings in. Every output sums the same terms in the same order
 * as there (the same bits where both fuse their multiply-adds). Against
 * the taps' product and scatter on the AVX2 path (`make AVX2_PATH=1`,
 * DAE_ISA=avx2, one core, alternating, 3 rounds in each of two hours),
 * the seed network's image took 3-12% less at batch 1 (23.0-24.5 against
 * 24.5-25.3 us, then 26.5-27.4 against 29.5-30.6) and 0-14% less at
 * batch 64 (18.5-21.1 against 19.8-21.4, then 20.6-20.7 against
 * 22.9-24.1); its training step moved by -5% to +2%. */
enum { TAP_ROW = ROW_PIXELS_MAX + 8 };

/* t[k] (k = kh*3 + kw) = input row iy's tap (kh, kw) along the row,
 * pixels [0, in_w), as one_channel_tap_rows sums them; the vectors past
 * in_w are left as they are (zeros). */
static inline __attribute__((always_inline)) void one_channel_tap_rows8(float (*restrict t)[TAP_ROW],
                                                                        const float *restrict planes,
                                                                        const float *restrict weight,
                                                                        const dae_conv_geom *g, int iy) {
    size_t plane = (size_t)g->in_h * g->in_w;
    for (int x0 = 0; x0 < g->in_w; x0 += 8) {
        vec8 acc[9] = {{0}};
        ivec8 live;
        for (int l = 0; l < 8; l++) live[l] = x0 + l < g->in_w ? -1 : 0;
        for (int c = 0; c < g->in_c; c++) {
            vec8 p = *(const uvec8 *)(planes + c * plane + (size_t)iy * g->in_w + x0);
            p = (vec8)((ivec8)p & live);
            const float *w = weight + (size_t)c * 9;
#pragma GCC unroll 9
            for (int k = 0; k < 9; k++) acc[k] += p * w[k];
        }
#pragma GCC unroll 9
        for (int k = 0; k < 9; k++) *(vec8 *)(t[k] + x0) = acc[k];
    }
}

/* one_channel_row_share on 8 pixels from x0 of the tap rows t. */
static inline __attribute__((always_inline)) void one_channel_row_share8(vec8 *even, vec8 *odd, float (*t)[TAP_ROW],
                                                                         int kh, int x0) {
    *even += *(const vec8 *)(t[kh * 3 + 1] + x0);
    *odd += *(const uvec8 *)(t[kh * 3] + x0 + 1) + *(const vec8 *)(t[kh * 3 + 2] + x0);
}

/* one_channel_row_store from the two halves of even and odd. */
static inline __attribute__((always_inline)) void one_channel_row_store8(float *restrict out, const vec8 *even,
                                                                         const vec8 *odd, float bias, int relu,
                                                                         int out_w, size_t room) {
    float row[2 * ROW_PIXELS_MAX] __attribute__((aligned(32)));
    float *d = room >= 2 * ROW_PIXELS_MAX ? out : row;
    for (int h = 0; h < 2; h++) {
        vec8 lo = __builtin_shufflevector(even[h], odd[h], 0, 8, 1, 9, 2, 10, 3, 11);
        vec8 hi = __builtin_shufflevector(even[h], odd[h], 4, 12, 5, 13, 6, 14, 7, 15);
        lo += bias, hi += bias;
        if (relu) lo = (vec8)((ivec8)lo & (lo > 0.0f)), hi = (vec8)((ivec8)hi & (hi > 0.0f));
        *(uvec8 *)(d + 16 * h) = lo;
        *(uvec8 *)(d + 16 * h + 8) = hi;
    }
    if (d == row) memcpy(out, row, sizeof(float) * out_w);
}

HOT FUSED_MADD static void one_channel_rows_image8(float *restrict out, const float *restrict planes,
                                                   const float *restrict weight, float bias, const dae_conv_geom *g,
                                                   int relu) {
    /* input rows iy and iy - 1, by parity; zeros past the row's pixels */
    float taps[2][9][TAP_ROW] __attribute__((aligned(32))) = {{{0}}};
    for (int iy = 0; iy <= g->in_h; iy++) {
        float(*t)[TAP_ROW] = taps[iy % 2], (*prev)[TAP_ROW] = taps[(iy + 1) % 2];
        if (iy < g->in_h) one_channel_tap_rows8(t, planes, weight, g, iy);
        int y = 2 * iy - 1; /* odd: input row iy's top taps and row iy - 1's bottom ones */
        if (iy > 0 && y < g->out_h) {
            vec8 even[2] = {{0}}, odd[2] = {{0}};
            for (int h = 0; h < 2; h++) {
                if (iy < g->in_h) one_channel_row_share8(&even[h], &odd[h], t, 0, 8 * h);
                one_channel_row_share8(&even[h], &odd[h], prev, 2, 8 * h);
            }
            one_channel_row_store8(out + (size_t)y * g->out_w, even, odd, bias, relu, g->out_w,
                                   (size_t)(g->out_h - y) * g->out_w);
        }
        if (iy == g->in_h) break;
        if (y + 1 < g->out_h) { /* even: input row iy's centre taps */
            vec8 even[2] = {{0}}, odd[2] = {{0}};
            for (int h = 0; h < 2; h++) one_channel_row_share8(&even[h], &odd[h], t, 1, 8 * h);
            one_channel_row_store8(out + (size_t)(y + 1) * g->out_w, even, odd, bias, relu, g->out_w,
                                   (size_t)(g->out_h - y - 1) * g->out_w);
        }
    }
}

static void conv_transpose2d_to_one_channel_forward(float *out, const float *const *parts, const int *channels,
                                                    int n_parts, const float *weight, const float *bias,
                                                    const dae_conv_geom *g, int relu, float *planes) {
    size_t pixels = (size_t)g->in_h * g->in_w, out_image = (size_t)g->out_h * g->out_w;
    memset(planes + (size_t)g->in_c * pixels, 0, sizeof(float) * ROW_PIXELS_MAX); /* the overrun, finite */
    for (int b = 0; b < g->batch; b++) {
        for (int q = 0, c_first = 0; q < n_parts; c_first += channels[q++])
            dae_gemm_transpose((int)pixels, channels[q], parts[q] + (size_t)b * pixels * channels[q], channels[q],
                               planes + (size_t)c_first * pixels);
        BY_LANES(one_channel_rows_image)(out + b * out_image, planes, weight, bias[0], g, relu);
    }
}

/* ------------------------------- a stride-2 3x3 transposed conv by phases */

/* The networks' 3x3 transposed convolutions at stride 2, padding 1, to
 * whole vectors of channels (7 -> 14 and the U-Net's 14 -> 28), where
 * 512-bit multiply-adds run at full width and the points above do not
 * pay: an output row's even and odd columns are summed in registers
 * straight from the input, by the taps of the one-channel rows above (row
 * 2m: input row m through kernel row 1; row 2m+1: row m through kernel
 * row 2, then row m+1 through kernel row 0; column 2n: pixel n's kernel
 * column 1; column 2n+1: pixel n's column 2, then pixel n+1's column 0).
 * The taps product wrote every input pixel's 9 x OC products (113 KB for
 * the 14 -> 28 layer at batch 1, past L1) for col2im's gather to read
 * back; here only the outputs are written. Every output sums its terms
 * in one order, so an image's bits do not depend on its batch or on the
 * parts its input comes in. A tile is PHASE_TILE pixels of an input row:
 * their even and odd outputs' 16 channels in 2 x PHASE_TILE registers.
 * Odd rows go two at a time by Winograd's F(2,2) (phases_odd_pair): the
 * U-Net's 7 -> 14 layer alone, one core, batch 1, 5.73 -> 5.06 us, its 14
 * -> 28 10.92 -> 10.65 (best of 5 alternating runs). Along the rows too
 * (pairs of odd columns), the differences doubled the loads (20 for 20
 * multiply-adds an input channel, against 11 for 21): 5.1 -> 8.1 and
 * 11.1 -> 16.0 us. */
enum { PHASE_TILE = 7 };

/* TILE(T) with T, the pixels of a tile, a constant: 1 to PHASE_TILE. */
#define PHASE_TILES(pixels, TILE)                                                                                  \
    switch (pixels) {                                                                                              \
    case 1: TILE(1); break;                                                                                        \
    case 2: TILE(2); break;                                                                                        \
    case 3: TILE(3); break;                                                                                        \
    case 4: TILE(4); break;                                                                                        \
    case 5: TILE(5); break;                                                                                        \
    case 6: TILE(6); break;                                                                                        \
    default: TILE(PHASE_TILE); break;                                                                              \
    }

static int conv_transpose2d_by_phases(const dae_conv_geom *g) {
    return !points_pay() && g->k_h == 3 && g->k_w == 3 && g->stride_h == 2 && g->stride_w == 2 && g->pad_h == 1 &&
           g->pad_w == 1 && g->out_c % 16 == 0;
}

/* The forward's tiles below, inlined for 7 widths of each kind of row and
 * cloned for three instruction sets, made RTL's global CSE (gcse, and
 * its rerun after reload) take 280 of the file's 345 s to compile at -O3
 * (-ftime-report), the longest step of every build. Without those two
 * passes here the file takes 70 s, with the same FMAs, and the forward
 * runs as fast: the seed network's 7 -> 14 layer, one core, best of 10
 * alternating, 2.43 -> 2.41 us at batch 1, 2.45 -> 2.45 at batch 64;
 * 14 -> 28 (32 -> 16 channels) 10.35 -> 10.47. */
#pragma GCC push_options
#pragma GCC optimize("no-gcse", "no-gcse-after-reload")

/* e[t], o[t] += the products of pixels j0 .. j0 + T - 1 of an input row
 * (x: pixel j0 of the first part; the parts' pixels at the same index)
 * through kernel row w (at the tile's 16 channels, an input channel's
 * taps k floats apart: the weight (IC, 3, 3, OC), k = 9 OC, or
 * phases_sums' (IC, 3, OC), k = 3 OC); right: whether pixel j0 + T exists
 * to add its column-0 product into o[T - 1]. */
static inline __attribute__((always_inline)) FUSED_MADD void phases_row(vec16 *e, vec16 *o, int T, int right,
                                                                        const float *const *parts,
                                                                        const int *channels, int n_parts,
                                                                        size_t pixel, const float *w, int k,
                                                                        int oc) {
    for (int q = 0; q < n_parts; w += (size_t)channels[q++] * k) {
        int ch = channels[q];
        const float *x = parts[q] + pixel * ch;
        for (int c = 0; c < ch; c++) {
            const float *wc = w + (size_t)c * k;
            vec16 w0 = *(const uvec16 *)wc, w1 = *(const uvec16 *)(wc + oc), w2 = *(const uvec16 *)(wc + 2 * oc);
#pragma GCC unroll 8
            for (int t = 0; t < T; t++) {
                float s = x[(size_t)t * ch + c];
                e[t] += s * w1;
                o[t] += s * w2;
                if (t > 0) o[t - 1] += s * w0;
            }
            if (right) o[T - 1] += x[(size_t)T * ch + c] * w0;
        }
    }
}

/* Output row y's tile (2 T pixels from column 2 j0; e the even columns',
 * o the odd ones'), 16 channels from v: bias, max(0, .) when relu, zero
 * where keep (out's layout, or NULL) is not positive, stored. */
static inline __attribute__((always_inline)) void phases_store(float *restrict out, const vec16 *e, const vec16 *o,
                                                               int T, int y, int j0, const float *bias,
                                                               const dae_conv_geom *g, int v, int relu,
                                                               const float *keep) {
    vec16 b = bias != NULL ? *(const uvec16 *)(bias + v) : (vec16){0};
    size_t at = ((size_t)y * g->out_w + 2 * j0) * g->out_c + v;
    float *d = out + at;
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) {
        size_t e_at = (size_t)2 * t * g->out_c, o_at = (size_t)(2 * t + 1) * g->out_c;
        vec16 even = e[t] + b, odd = o[t] + b;
        if (relu) even = RELU16(even), odd = RELU16(odd);
        *(uvec16 *)(d + e_at) = keep != NULL ? KEPT(even, keep + at + e_at) : even;
        if (2 * (j0 + t) + 1 < g->out_w) *(uvec16 *)(d + o_at) = keep != NULL ? KEPT(odd, keep + at + o_at) : odd;
    }
}

/* An input image's parts: the first pixel of image b at index `image`
 * of each (B, H, W, channels[q]) part; the differences of a pair of its
 * rows (2, W, channels[q]: phases_differences) in diffs. */
typedef struct {
    const float *const *parts, *const *diffs;
    const int *channels;
    int n_parts;
    size_t image;
} phases_input;

/* One tile of output row y from its input rows, the taps' way: row 2m
 * input row m through kernel row 1; row 2m + 1 row m through kernel row
 * 2, then row m + 1 through kernel row 0. */
static inline __attribute__((always_inline)) FUSED_MADD void phases_tile(float *restrict out, int T, int y, int j0,
                                                                         const phases_input *in,
                                                                         const float *weight, const float *bias,
                                                                         const dae_conv_geom *g, int v, int relu,
                                                                         const float *keep) {
    vec16 e[PHASE_TILE], o[PHASE_TILE];
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) e[t] = o[t] = (vec16){0};
    int m = y / 2, k = 9 * g->out_c, oc = g->out_c, right = j0 + T < g->in_w;
    const float *w = weight + v;
    size_t row = in->image + (size_t)m * g->in_w + j0;
    if (y % 2 == 0) {
        phases_row(e, o, T, right, in->parts, in->channels, in->n_parts, row, w + 3 * oc, k, oc);
    } else {
        phases_row(e, o, T, right, in->parts, in->channels, in->n_parts, row, w + 6 * oc, k, oc);
        if (m + 1 < g->in_h)
            phases_row(e, o, T, right, in->parts, in->channels, in->n_parts, row + g->in_w, w, k, oc);
    }
    phases_store(out, e, o, T, y, j0, bias, g, v, relu, keep);
}

/* One tile of odd output rows 2m + 1 and 2m + 3 by Winograd's F(2,2)
 * across the rows: with R_m input row m and K_i kernel row i,
 *   row 2m + 1 = R_m K2 + R_{m+1} K0     = (R_m - R_{m+1}) K2 + R_{m+1} (K0 + K2)
 *   row 2m + 3 = R_{m+1} K2 + R_{m+2} K0 = R_{m+1} (K0 + K2) - (R_{m+1} - R_{m+2}) K0
 * three row products for four, each the taps' own (phases_row): a
 * quarter of the odd rows' multiply-adds and loads, a sixth of the
 * layer's. sums: K0 + K2 (phases_sums). */
static inline __attribute__((always_inline)) FUSED_MADD void phases_odd_pair(float *restrict out, int T, int m,
                                                                             int j0, const phases_input *in,
                                                                             const float *weight, const float *sums,
                                                                             const float *bias,
                                                                             const dae_conv_geom *g, int v,
                                                                             int relu, const float *keep) {
    vec16 e[PHASE_TILE], o[PHASE_TILE], shared_e[PHASE_TILE], shared_o[PHASE_TILE];
    int k = 9 * g->out_c, oc = g->out_c, right = j0 + T < g->in_w;
    const float *w = weight + v;
    size_t next_row = in->image + (size_t)(m + 1) * g->in_w + j0; /* R_{m+1} in the parts */
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) e[t] = o[t] = (vec16){0};
    phases_row(e, o, T, right, in->parts, in->channels, in->n_parts, next_row, sums + v, 3 * oc, oc);
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) shared_e[t] = e[t], shared_o[t] = o[t], e[t] = o[t] = (vec16){0};
    __asm__ volatile("" ::: "memory"); /* shared_e, shared_o go to memory: the next sums need the registers */
    phases_row(e, o, T, right, in->diffs, in->channels, in->n_parts, j0, w + 6 * oc, k, oc);
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) e[t] += shared_e[t], o[t] += shared_o[t];
    __asm__ volatile("" ::: "memory");
    phases_store(out, e, o, T, 2 * m + 1, j0, bias, g, v, relu, keep);
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) e[t] = o[t] = (vec16){0};
    phases_row(e, o, T, right, in->diffs, in->channels, in->n_parts, (size_t)g->in_w + j0, w, k, oc);
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) e[t] = shared_e[t] - e[t], o[t] = shared_o[t] - o[t];
    phases_store(out, e, o, T, 2 * m + 3, j0, bias, g, v, relu, keep);
}

/* The floats of K0 + K2 (IC, 3, OC): the phases' prepared weight. */
static size_t phases_sums_floats(const dae_conv_geom *g) { return (size_t)3 * g->in_c * g->out_c; }

/* The floats of scratch the phases take: K0 + K2, when the weight comes
 * unprepared, then the differences of a pair of rows. */
static size_t phases_scratch_floats(const dae_conv_geom *g) {
    return phases_sums_floats(g) + (size_t)2 * g->in_w * g->in_c;
}

/* sums (IC, 3, OC) = kernel row 0 + kernel row 2 of weight (IC, 3, 3, OC). */
static void phases_sums(float *restrict sums, const float *restrict weight, const dae_conv_geom *g) {
    size_t row = (size_t)3 * g->out_c;
    for (size_t c = 0; c < (size_t)g->in_c; c++)
        for (size_t i = 0; i < row; i++) sums[c * row + i] = weight[(3 * c) * row + i] + weight[(3 * c + 2) * row + i];
}

/* diff (2, W, C) = input rows m and m + 1 (x: row m, (W, C)) each less
 * the next, where it is one of the h rows (else the row itself). Made
 * where the pair's products read them, they stay in L1: an image's made
 * at once went out to L2 (0.5 us of the 14 -> 28 layer's 12). */
static inline __attribute__((always_inline)) void phases_differences(float *restrict diff, const float *restrict x,
                                                                     int m, int h, int w, int c) {
    size_t row = (size_t)w * c, last = m + 2 < h ? 2 * row : row;
    for (size_t i = 0; i < last; i++) diff[i] = x[i] - x[i + row];
    for (size_t i = last; i < 2 * row; i++) diff[i] = x[i];
}

/* sums: K0 + K2 of weight (phases_sums); diff: 2 W IC floats of scratch. */
HOT_AVX512 FUSED_MADD static void conv_transpose2d_forward_by_phases(float *restrict out, const float *const *parts,
                                                              const int *channels, int n_parts,
                                                              const float *restrict weight, const float *restrict sums,
                                                              const float *restrict bias, const dae_conv_geom *g,
                                                              int relu, const float *keep, float *restrict diff) {
    size_t in_image = (size_t)g->in_h * g->in_w, out_image = (size_t)g->out_h * g->out_w * g->out_c;
    const float *diffs[DAE_MAX_PARTS];
    for (int q = 0, c_first = 0; q < n_parts; c_first += channels[q++])
        diffs[q] = diff + (size_t)2 * g->in_w * c_first;
    for (int b = 0; b < g->batch; b++) {
        phases_input in = {parts, diffs, channels, n_parts, b * in_image};
        float *o = out + b * out_image;
        const float *ko = keep != NULL ? keep + b * out_image : NULL;
#define PHASES_TILE(T) phases_tile(o, T, y, j0, &in, weight, bias, g, v, relu, ko)
#define PHASES_ROW(row)                                                                                            \
    for (int y = (row), j0 = 0; j0 < g->in_w; j0 += PHASE_TILE) PHASE_TILES(g->in_w - j0, PHASES_TILE)
#define PHASES_PAIR(T) phases_odd_pair(o, T, m, j0, &in, weight, sums, bias, g, v, relu, ko)
        for (int v = 0; v < g->out_c; v += 16)
            for (int m = 0; m < g->in_h; m += 2) {
                /* rows 2m .. 2m + 3, those in the output: even, the odd pair (or the
                 * last odd row alone), even */
                PHASES_ROW(2 * m);
                if (2 * m + 3 < g->out_h) {
                    float *d = diff;
                    for (int q = 0; q < n_parts; d += (size_t)2 * g->in_w * channels[q++])
                        phases_differences(d, parts[q] + (b * in_image + (size_t)m * g->in_w) * channels[q], m,
                                           g->in_h, g->in_w, channels[q]);
                    for (int j0 = 0; j0 < g->in_w; j0 += PHASE_TILE) PHASE_TILES(g->in_w - j0, PHASES_PAIR)
                } else if (2 * m + 1 < g->out_h) {
                    PHASES_ROW(2 * m + 1);
                }
                if (2 * m + 2 < g->out_h) PHASES_ROW(2 * m + 2);
            }
#undef PHASES_PAIR
#undef PHASES_ROW
#undef PHASES_TILE
    }
}

#pragma GCC pop_options

/* The backward by phases, where the forward goes by them and the parts'
 * channels are whole vectors: both gradients read the output gradient
 * where it lies. The taps backward copied each input pixel's 9 x OC
 * output gradients into col (im2col: 113 KB an image for the 14 -> 28
 * layer) for two products to read back, the input gradient's by the
 * parts' 16 channels at a time, loading a value for each multiply-add.
 * The U-Net's 14 -> 28 layer's backward at batch 32 (one core) 31.1-32.4
 * -> 26.0-26.8 us an image, its 7 -> 14 13.2-13.7 -> 12.1-12.2, the seed
 * network's 7 -> 14 7.2-7.4 -> 6.0-6.3; training the U-Net 3% less CPU.
 *
 * The weight gradient: dweight (IC, 3, 3, OC) += per input pixel (m, n)
 * its channels times the output gradients under its taps (row 2m - 1 +
 * kh, column 2n - 1 + kw; zero outside the output). A tile is 8 channels
 * of one part by a kernel row's 3 taps of 16 output channels, 24 sums in
 * registers, loaded from dweight and stored back after each image: each
 * sum takes the products gemm_tn_acc's tile took from col, in the same
 * order, less those of rows outside the output (zeros, which leave the
 * sum as it is), so the bits are the taps backward's. */
enum { PHASE_GRAD_ROWS = 8 };

static int conv_transpose2d_backward_by_phases(const dae_conv_geom *g, const int *channels, int n_parts) {
    if (!conv_transpose2d_by_phases(g) || (size_t)9 * g->out_c * g->in_c > PATCHES_WEIGHT_MAX) return 0;
    for (int q = 0; q < n_parts; q++)
        if (channels[q] % 16 != 0) return 0;
    return 1;
}

/* acc[r][kw] += x[r] (broadcast) times the three taps' vectors t0 t1 t2. */
static inline __attribute__((always_inline)) FUSED_MADD void phases_grad_pixel(vec16 (*acc)[3],
                                                                               const float *restrict x, vec16 t0,
                                                                               vec16 t1, vec16 t2) {
#pragma GCC unroll 8
    for (int r = 0; r < PHASE_GRAD_ROWS; r++) {
        float s = x[r];
        acc[r][0] += s * t0;
        acc[r][1] += s * t1;
        acc[r][2] += s * t2;
    }
}

HOT_AVX512 FUSED_MADD static void conv_transpose2d_weight_grad(float *restrict dweight, const float *restrict dout,
                                                        const float *const *parts, const int *channels,
                                                        int n_parts, const dae_conv_geom *g) {
    int oc_n = g->out_c, k = 9 * oc_n, last = g->in_w - 1, last_right = 2 * last + 1 < g->out_w;
    vec16 zero = {0};
    for (int b = 0; b < g->batch; b++) /* an image at a time, in cache across the tiles */
        for (int q = 0, c_first = 0; q < n_parts; c_first += channels[q++]) {
            int cq = channels[q];
            const float *image = parts[q] + (size_t)b * g->in_h * g->in_w * cq;
            for (int c0 = 0; c0 < cq; c0 += PHASE_GRAD_ROWS)
                for (int kh = 0; kh < 3; kh++)
                    for (int v = 0; v < oc_n; v += 16) {
                        float *dw = dweight + (size_t)(c_first + c0) * k + (size_t)kh * 3 * oc_n + v;
                        vec16 acc[PHASE_GRAD_ROWS][3];
                        for (int r = 0; r < PHASE_GRAD_ROWS; r++)
                            for (int j = 0; j < 3; j++) acc[r][j] = *(const uvec16 *)(dw + (size_t)r * k + j * oc_n);
                        for (int m = 0; m < g->in_h; m++) {
                            int y = 2 * m - 1 + kh;
                            if (y < 0 || y >= g->out_h) continue;
                            const float *row = dout + ((size_t)b * g->out_h + y) * g->out_w * oc_n + v;
                            const float *x = image + (size_t)m * g->in_w * cq + c0;
                            /* pixel 0 has no column -1; the last has column
                             * 2n + 1 only when the output does */
                            const float *t = row;
                            phases_grad_pixel(acc, x, zero, *(const uvec16 *)t,
                                              last > 0 || last_right ? *(const uvec16 *)(t + oc_n) : zero);
                            for (int n = 1; n < last; n++) {
                                t = row + (size_t)(2 * n) * oc_n;
                                phases_grad_pixel(acc, x + (size_t)n * cq, *(const uvec16 *)(t - oc_n),
                                                  *(const uvec16 *)t, *(const uvec16 *)(t + oc_n));
                            }
                            if (last > 0) {
                                t = row + (size_t)(2 * last) * oc_n;
                                phases_grad_pixel(acc, x + (size_t)last * cq, *(const uvec16 *)(t - oc_n),
                                                  *(const uvec16 *)t, last_right ? *(const uvec16 *)(t + oc_n) : zero);
                            }
                        }
                        for (int r = 0; r < PHASE_GRAD_ROWS; r++)
                            for (int j = 0; j < 3; j++) *(uvec16 *)(dw + (size_t)r * k + j * oc_n) = acc[r][j];
                    }
        }
}

/* The input gradient: input pixel (m, n) channel c sums the output
 * gradients at rows 2m - 1 + kh, columns 2n - 1 + kw (those inside the
 * output) times weight (c, kh, kw, oc), over kh, kw and oc in that order.
 * A tile is PHASE_TILE pixels of an input row by PHASE_VECTORS vectors of
 * 16 channels (of one part or of two side by side), each output gradient
 * broadcast against the transposed weight's vectors. */
enum { PHASE_VECTORS = 2 };

/* One tile: T pixels of input row m from n0, V vectors of channels whose
 * gradients go to dst[v] (pixel n0's 16 channels, a pixel every step[v]
 * floats); wt (9 * OC, IC) at the first vector's channels; dout one
 * image's. */
static inline __attribute__((always_inline)) FUSED_MADD void phases_back_tile(float *const *dst,
                                                                              const float *const *keep,
                                                                              const int *step, int T, int V,
                                                                              const float *dout, const float *wt,
                                                                              int m, int n0,
                                                                              const dae_conv_geom *g) {
    vec16 acc[PHASE_TILE][PHASE_VECTORS];
#pragma GCC unroll 8
    for (int t = 0; t < T; t++)
#pragma GCC unroll 2
        for (int v = 0; v < V; v++) acc[t][v] = (vec16){0};
    int oc_n = g->out_c;
    for (int kh = 0; kh < 3; kh++) {
        int y = 2 * m - 1 + kh;
        if (y < 0 || y >= g->out_h) continue;
        for (int kw = 0; kw < 3; kw++) {
            /* pixels t_lo .. t_hi - 1 have column 2(n0 + t) - 1 + kw inside */
            int t_lo = n0 == 0 && kw == 0, t_hi = 2 * (n0 + T - 1) - 1 + kw < g->out_w ? T : T - 1;
            const float *row = dout + (size_t)y * g->out_w * oc_n;
            const float *w = wt + (size_t)(kh * 3 + kw) * oc_n * g->in_c;
            for (int oc = 0; oc < oc_n; oc++) {
                vec16 wv[PHASE_VECTORS];
#pragma GCC unroll 2
                for (int v = 0; v < V; v++) wv[v] = *(const uvec16 *)(w + (size_t)oc * g->in_c + v * 16);
#pragma GCC unroll 8
                for (int t = 0; t < T; t++) {
                    if (t < t_lo || t >= t_hi) continue;
                    float s = row[(size_t)(2 * (n0 + t) - 1 + kw) * oc_n + oc];
#pragma GCC unroll 2
                    for (int v = 0; v < V; v++) acc[t][v] += s * wv[v];
                }
            }
        }
    }
#pragma GCC unroll 8
    for (int t = 0; t < T; t++)
#pragma GCC unroll 2
        for (int v = 0; v < V; v++)
            *(uvec16 *)(dst[v] + (size_t)t * step[v]) =
                keep != NULL ? KEPT(acc[t][v], keep[v] + (size_t)t * step[v]) : acc[t][v];
}

/* dins[q] (B, H, W, channels[q]) = the input gradient of the parts whose
 * gradient is wanted; wt the weight transposed, (9 * OC, IC). With keeps
 * (or NULL), zero where keeps[q] (dins[q]'s layout: a ReLU's output) is
 * not positive. */
HOT_AVX512 FUSED_MADD static void conv_transpose2d_input_grad(float *const *dins, const float *const *keeps,
                                                       const float *dout, const int *channels, int n_parts,
                                                       const float *restrict wt, const dae_conv_geom *g) {
    /* the vectors wanted: their part, and their first channel within the
     * part and within the input */
    enum { MOST = PATCHES_WEIGHT_MAX / (9 * 16) / 16 }; /* the weight's bound with OC >= 16 */
    int part[MOST], first[MOST], column[MOST], n_vec = 0;
    for (int q = 0, c_first = 0; q < n_parts; c_first += channels[q++])
        for (int c = 0; dins[q] != NULL && c < channels[q]; c += 16)
            part[n_vec] = q, first[n_vec] = c, column[n_vec] = c_first + c, n_vec++;
    size_t in_image = (size_t)g->in_h * g->in_w, out_image = (size_t)g->out_h * g->out_w * g->out_c;
    for (int b = 0; b < g->batch; b++)
        for (int m = 0; m < g->in_h; m++)
            for (int n0 = 0; n0 < g->in_w; n0 += PHASE_TILE)
                for (int u = 0; u < n_vec; u += PHASE_VECTORS) {
                    int V = n_vec - u < PHASE_VECTORS ? n_vec - u : PHASE_VECTORS;
                    float *dst[PHASE_VECTORS];
                    const float *keep[PHASE_VECTORS];
                    int step[PHASE_VECTORS];
                    for (int v = 0; v < V; v++) {
                        int q = part[u + v];
                        size_t at = (b * in_image + (size_t)m * g->in_w + n0) * channels[q] + first[u + v];
                        step[v] = channels[q];
                        dst[v] = dins[q] + at;
                        keep[v] = keeps != NULL ? keeps[q] + at : NULL;
                    }
                    const float *d = dout + b * out_image, *w = wt + column[u];
                    const float *const *kp = keeps != NULL ? keep : NULL;
#define BACK_TILE(T) phases_back_tile(dst, kp, step, T, PHASE_VECTORS, d, w, m, n0, g)
#define BACK_TILE_ONE(T) phases_back_tile(dst, kp, step, T, 1, d, w, m, n0, g)
                    if (V == PHASE_VECTORS) {
                        PHASE_TILES(g->in_w - n0, BACK_TILE)
                    } else {
                        PHASE_TILES(g->in_w - n0, BACK_TILE_ONE)
                    }
#undef BACK_TILE
#undef BACK_TILE_ONE
                }
}

/* A conv2d at stride 2 with a 3x3 kernel and padding 1 (the encoders'
 * 14 -> 7) is the adjoint of the transposed convolution with the same
 * weight: its weight (OC, 3, 3, IC) is that one's (IC' = OC, 3, 3, OC' =
 * IC), and its output the transposed one's input. Its backward goes by
 * the phases where theirs does: the input gradient is the transposed
 * convolution's forward pass of the output gradient, the weight gradient
 * that one's weight gradient with the image and the output gradient in
 * each other's place (the same products in the same order as from
 * im2col's copy: the same bits), without the copy, the product into col
 * and col2im's gather. */
static dae_conv_geom transposed_view(const dae_conv_geom *g) {
    dae_conv_geom t = adjoint_view(g, g->in_c);
    t.out_pad_h = g->in_h - (2 * g->out_h - 1), t.out_pad_w = g->in_w - (2 * g->out_w - 1);
    return t;
}

static int conv2d_goes_by_phases(const dae_conv_geom *g, dae_conv_geom *t) {
    if (g->k_h != 3 || g->k_w != 3 || g->stride_h != 2 || g->stride_w != 2 || g->pad_h != 1 || g->pad_w != 1)
        return 0;
    *t = transposed_view(g);
    return conv_transpose2d_backward_by_phases(t, &t->in_c, 1);
}

static size_t conv2d_backward_phases_scratch(const dae_conv_geom *g) {
    dae_conv_geom t;
    return conv2d_goes_by_phases(g, &t) ? phases_scratch_floats(&t) : 0;
}

static int conv2d_backward_by_phases(float *din, float *dweight, const float *dout, const float *in,
                                     const float *weight, const dae_conv_geom *g, int in_relu, float *col) {
    dae_conv_geom t;
    if (!conv2d_goes_by_phases(g, &t)) return 0;
    conv_transpose2d_weight_grad(dweight, in, &dout, &g->out_c, 1, &t);
    if (din != NULL) {
        phases_sums(col, weight, &t);
        conv_transpose2d_forward_by_phases(din, &dout, &g->out_c, 1, weight, col, NULL, &t, 0, in_relu ? in : NULL,
                                           col + phases_sums_floats(&t));
    }
    return 1;
}

/* ------------------------------------------------------ conv_transpose2d */

size_t dae_conv_transpose2d_col_size(const dae_conv_geom *g) {
    size_t taps = (size_t)g->batch * g->in_h * g->in_w * g->k_h * g->k_w * g->out_c; /* also the backward's */
    size_t points = conv_transpose2d_by_points(g) ? points_col_size(g) : 0;
    size_t rows = conv_transpose2d_to_one_channel_by_rows(g) ? one_channel_rows_col_size(g) : 0;
    size_t phases = conv_transpose2d_by_phases(g) ? phases_scratch_floats(g) : 0;
    size_t most = taps > points ? taps : points;
    most = most > rows ? most : rows;
    return most > phases ? most : phases;
}

/* A transposed convolution from one pixel (the 7x7 bottleneck's way
 * back) is one product of the images by the weight, its output the
 * image: packed as a whole-image conv2d's (conv2d_packed_size). */
static size_t conv_transpose2d_packed_size(const dae_conv_geom *g) {
    patch_geom p = conv_transpose_patches(g);
    if (conv_transpose2d_by_points(g) || conv_transpose2d_to_one_channel_by_rows(g) || conv_transpose2d_by_phases(g) ||
        !patch_is_whole_image(&p))
        return 0;
    return dae_gemm_packed_size(0, g->k_h * g->k_w * g->out_c, g->in_c);
}

size_t dae_conv_transpose2d_prepared_size(const dae_conv_geom *g) {
    if (conv_transpose2d_by_points(g)) return points_weight_floats(g);
    if (conv_transpose2d_by_phases(g)) return phases_sums_floats(g);
    return conv_transpose2d_packed_size(g);
}

void dae_conv_transpose2d_prepare(float *prepared, const float *weight, const dae_conv_geom *g) {
    if (conv_transpose2d_by_points(g)) points_weights(prepared, weight, g->in_c, g->out_c);
    else if (conv_transpose2d_by_phases(g)) phases_sums(prepared, weight, g);
    else if (conv_transpose2d_packed_size(g) > 0) dae_gemm_pack(0, g->k_h * g->k_w * g->out_c, g->in_c, weight, prepared);
}

int dae_conv_prepared_is_packed(const dae_conv_geom *g, int transposed) {
    if (transposed) return conv_transpose2d_packed_size(g) > 0;
    patch_geom p = conv_patches(g);
    return conv2d_packed_size(g, &p) > 0;
}

void dae_conv_transpose2d_forward(float *out, const float *in, const float *weight, const float *prepared,
                                  const float *bias, const dae_conv_geom *g, int relu, float *col) {
    dae_conv_transpose2d_forward_parts(out, &in, &g->in_c, 1, weight, prepared, bias, g, relu, col);
}

void dae_conv_transpose2d_forward_parts(float *out, const float *const *parts, const int *channels, int n_parts,
                                        const float *weight, const float *prepared, const float *bias,
                                        const dae_conv_geom *g, int relu, float *col) {
    /* per chunk: in (P=b*H*W, IC), weight (IC, K=KH*KW*OC): col (P, K) =
     * in weight; out = col2im(col) + bias, the output playing the image. */
    if (conv_transpose2d_by_points(g)) {
        conv_transpose2d_forward_by_points(out, parts, channels, n_parts, weight, prepared, bias, g, relu, col);
        return;
    }
    if (conv_transpose2d_to_one_channel_by_rows(g)) {
        conv_transpose2d_to_one_channel_forward(out, parts, channels, n_parts, weight, bias, g, relu, col);
        return;
    }
    if (conv_transpose2d_by_phases(g)) {
        const float *sums = weight_prepared(prepared, dae_conv_transpose2d_prepare, weight, g, col);
        conv_transpose2d_forward_by_phases(out, parts, channels, n_parts, weight, sums, bias, g, relu, NULL,
                                           col + phases_sums_floats(g));
        return;
    }
    int k = g->k_h * g->k_w * g->out_c;
    patch_geom p = conv_transpose_patches(g);
    size_t in_pixels = (size_t)g->in_h * g->in_w, out_image = (size_t)g->out_h * g->out_w * g->out_c;
    int whole = patch_is_whole_image(&p);
    int per = whole ? g->batch : chunk_images(in_pixels * k);
    for (int b0 = 0; b0 < g->batch; b0 += per) {
        int nb = g->batch - b0 < per ? g->batch - b0 : per, rows = nb * (int)in_pixels;
        float *y = out + b0 * out_image;
        if (whole && prepared != NULL && n_parts == 1) /* packed: conv_transpose2d_packed_size */
            dae_gemm_bias_packed(0, rows, k, g->in_c, parts[0] + b0 * in_pixels * g->in_c, g->in_c, prepared, y, k,
                                 NULL, 0);
        else parts_product(rows, k, parts, channels, n_parts, b0 * in_pixels, weight, whole ? y : col);
        if (whole) {
            dae_add_bias(y, (size_t)g->out_c, (size_t)nb * g->out_h * g->out_w, g->out_c, bias, relu);
        } else {
            p.batch = nb;
            col2im(y, col, &p, bias, relu);
        }
    }
}

/* dae_conv_transpose2d_backward_parts, with each part's ReLU backward
 * (parts[q] its output) on dins[q] when in_relu. */
static void conv_transpose2d_backward(float *const *dins, float *dweight, float *dbias, const float *dout,
                                      const float *const *parts, const int *channels, int n_parts,
                                      const float *weight, const dae_conv_geom *g, float *col, int in_relu) {
    /* per chunk: dcol (P, K) = im2col(dout); per part q, its rows of
     * dweight (IC, K) += part^T dcol and dins[q] (P, channels[q]) = dcol
     * (its rows of weight)^T. */
    int k = g->k_h * g->k_w * g->out_c;
    sum_rows(dbias, dout, (size_t)g->batch * g->out_h * g->out_w, g->out_c);
    if (transposed_to_one_channel(g, channels, n_parts)) {
        for (int q = 0, c_first = 0; q < n_parts; c_first += channels[q++]) {
            dae_conv_geom v = adjoint_view(g, channels[q]);
            float wt[PATCHES_WEIGHT_MAX] __attribute__((aligned(64)));
            if (dins[q] != NULL) dae_gemm_transpose(channels[q], k, weight + (size_t)c_first * k, k, wt);
            one_channel_backward(dweight + (size_t)c_first * k, dins[q], parts[q], dout, wt, &v, col, in_relu);
        }
        return;
    }
    if (conv_transpose2d_backward_by_phases(g, channels, n_parts)) {
        conv_transpose2d_weight_grad(dweight, dout, parts, channels, n_parts, g);
        int any_dins = 0;
        for (int q = 0; q < n_parts; q++) any_dins |= dins[q] != NULL;
        if (any_dins) {
            float wt[PATCHES_WEIGHT_MAX] __attribute__((aligned(64)));
            dae_gemm_transpose(g->in_c, k, weight, k, wt);
            conv_transpose2d_input_grad(dins, in_relu ? parts : NULL, dout, channels, n_parts, wt, g);
        }
        return;
    }
    patch_geom p = conv_transpose_patches(g);
    size_t in_pixels = (size_t)g->in_h * g->in_w, out_image = (size_t)g->out_h * g->out_w * g->out_c;
    int whole = patch_is_whole_image(&p);
    int per = whole ? g->batch : chunk_images(in_pixels * k);
    for (int b0 = 0; b0 < g->batch; b0 += per) {
        int nb = g->batch - b0 < per ? g->batch - b0 : per, rows = nb * (int)in_pixels;
        const float *dcol = dout + b0 * out_image;
        if (!whole) {
            p.batch = nb;
            im2col(col, dcol, &p);
            dcol = col;
        }
        for (int q = 0, c_first = 0; q < n_parts; c_first += channels[q++]) {
            int c = channels[q];
            size_t row0 = b0 * in_pixels * c;
            if (dweight != NULL)
                dae_gemm_tn_acc(c, k, rows, parts[q] + row0, c, dcol, k, dweight + (size_t)c_first * k, k);
            if (dins[q] != NULL)
                dae_gemm_bias(1, rows, c, k, dcol, k, weight + (size_t)c_first * k, k, dins[q] + row0, c, NULL, 0);
        }
    }
    for (int q = 0; q < n_parts && in_relu; q++)
        if (dins[q] != NULL) relu_backward_after(dins[q], parts[q], g, channels[q]);
}

void dae_conv_transpose2d_backward(float *din, float *dweight, float *dbias,
                                   const float *dout, const float *in,
                                   const float *weight, const dae_conv_geom *g,
                                   float *col, int in_relu) {
    conv_transpose2d_backward(&din, dweight, dbias, dout, &in, &g->in_c, 1, weight, g, col, in_relu);
}

void dae_conv_transpose2d_backward_parts(float *const *dins, float *dweight, float *dbias, const float *dout,
                                         const float *const *parts, const int *channels, int n_parts,
                                         const float *weight, const dae_conv_geom *g, float *col) {
    conv_transpose2d_backward(dins, dweight, dbias, dout, parts, channels, n_parts, weight, g, col, 0);
}

/* ---------------------------------------------------------- weight layout */

void dae_weight_from_torch(float *dst, const float *src, int a, int c, int kh, int kw) {
    for (int i = 0; i < a; i++)
        for (int ch = 0; ch < c; ch++)
            for (int y = 0; y < kh; y++)
                for (int x = 0; x < kw; x++)
                    dst[(((size_t)i * kh + y) * kw + x) * c + ch] = src[(((size_t)i * c + ch) * kh + y) * kw + x];
}

void dae_weight_to_torch(float *dst, const float *src, int a, int c, int kh, int kw) {
    for (int i = 0; i < a; i++)
        for (int ch = 0; ch < c; ch++)
            for (int y = 0; y < kh; y++)
                for (int x = 0; x < kw; x++)
                    dst[(((size_t)i * c + ch) * kh + y) * kw + x] = src[(((size_t)i * kh + y) * kw + x) * c + ch];
}

/* ---------------------------------------------------------- naive oracles */

/* Index of (b, y, x, c) in a (B, H, W, C) tensor. */
static size_t at(int b, int y, int x, int c, int h, int w, int channels) {
    return (((size_t)b * h + y) * w + x) * channels + c;
}

/* Index of a conv2d weight (oc, i, j, ic) in (OC, KH, KW, IC). */
static size_t conv_w(const dae_conv_geom *g, int oc, int i, int j, int ic) {
    return (((size_t)oc * g->k_h + i) * g->k_w + j) * g->in_c + ic;
}

/* Index of a conv_transpose2d weight (ic, i, j, oc) in (IC, KH, KW, OC). */
static size_t convt_w(const dae_conv_geom *g, int ic, int i, int j, int oc) {
    return (((size_t)ic * g->k_h + i) * g->k_w + j) * g->out_c + oc;
}

void dae_conv2d_forward_naive(float *out, const float *in, const float *weight,
                              const float *bias, const dae_conv_geom *g) {
    for (int b = 0; b < g->batch; b++)
        for (int oy = 0; oy < g->out_h; oy++)
            for (int ox = 0; ox < g->out_w; ox++)
                for (int oc = 0; oc < g->out_c; oc++) {
                    double s = bias[oc];
                    for (int i = 0; i < g->k_h; i++)
                        for (int j = 0; j < g->k_w; j++) {
                            int y = oy * g->stride_h - g->pad_h + i;
                            int x = ox * g->stride_w - g->pad_w + j;
                            if (y < 0 || y >= g->in_h || x < 0 || x >= g->in_w) continue;
                            for (int ic = 0; ic < g->in_c; ic++)
                                s += (double)in[at(b, y, x, ic, g->in_h, g->in_w, g->in_c)] *
                                     weight[conv_w(g, oc, i, j, ic)];
                        }
                    out[at(b, oy, ox, oc, g->out_h, g->out_w, g->out_c)] = (float)s;
                }
}

void dae_conv2d_backward_naive(float *din, float *dweight, float *dbias,
                               const float *dout, const float *in,
                               const float *weight, const dae_conv_geom *g) {
    if (din) memset(din, 0, sizeof(float) * (size_t)g->batch * g->in_h * g->in_w * g->in_c);
    for (int b = 0; b < g->batch; b++)
        for (int oy = 0; oy < g->out_h; oy++)
            for (int ox = 0; ox < g->out_w; ox++)
                for (int oc = 0; oc < g->out_c; oc++) {
                    float d = dout[at(b, oy, ox, oc, g->out_h, g->out_w, g->out_c)];
                    dbias[oc] += d;
                    for (int i = 0; i < g->k_h; i++)
                        for (int j = 0; j < g->k_w; j++) {
                            int y = oy * g->stride_h - g->pad_h + i;
                            int x = ox * g->stride_w - g->pad_w + j;
                            if (y < 0 || y >= g->in_h || x < 0 || x >= g->in_w) continue;
                            for (int ic = 0; ic < g->in_c; ic++) {
                                size_t wi = conv_w(g, oc, i, j, ic);
                                size_t xi = at(b, y, x, ic, g->in_h, g->in_w, g->in_c);
                                dweight[wi] += d * in[xi];
                                if (din) din[xi] += d * weight[wi];
                            }
                        }
                }
}

void dae_conv_transpose2d_forward_naive(float *out, const float *in,
                                        const float *weight, const float *bias,
                                        const dae_conv_geom *g) {
    size_t positions = (size_t)g->batch * g->out_h * g->out_w;
    for (size_t p = 0; p < positions; p++)
        for (int oc = 0; oc < g->out_c; oc++) out[p * g->out_c + oc] = bias[oc];
    /* Each input pixel scatters its kernel-weighted value over the output. */
    for (int b = 0; b < g->batch; b++)
        for (int iy = 0; iy < g->in_h; iy++)
            for (int ix = 0; ix < g->in_w; ix++)
                for (int ic = 0; ic < g->in_c; ic++) {
                    float v = in[at(b, iy, ix, ic, g->in_h, g->in_w, g->in_c)];
                    for (int i = 0; i < g->k_h; i++)
                        for (int j = 0; j < g->k_w; j++) {
                            int y = iy * g->stride_h - g->pad_h + i;
                            int x = ix * g->stride_w - g->pad_w + j;
                            if (y < 0 || y >= g->out_h || x < 0 || x >= g->out_w) continue;
                            for (int oc = 0; oc < g->out_c; oc++)
                                out[at(b, y, x, oc, g->out_h, g->out_w, g->out_c)] +=
                                    v * weight[convt_w(g, ic, i, j, oc)];
                        }
                }
}

void dae_conv_transpose2d_backward_naive(float *din, float *dweight,
                                         float *dbias, const float *dout,
                                         const float *in, const float *weight,
                                         const dae_conv_geom *g) {
    size_t positions = (size_t)g->batch * g->out_h * g->out_w;
    for (size_t p = 0; p < positions; p++)
        for (int oc = 0; oc < g->out_c; oc++) dbias[oc] += dout[p * g->out_c + oc];
    for (int b = 0; b < g->batch; b++)
        for (int iy = 0; iy < g->in_h; iy++)
            for (int ix = 0; ix < g->in_w; ix++)
                for (int ic = 0; ic < g->in_c; ic++) {
                    size_t xi = at(b, iy, ix, ic, g->in_h, g->in_w, g->in_c);
                    double s = 0.0;
                    for (int i = 0; i < g->k_h; i++)
                        for (int j = 0; j < g->k_w; j++) {
                            int y = iy * g->stride_h - g->pad_h + i;
                            int x = ix * g->stride_w - g->pad_w + j;
                            if (y < 0 || y >= g->out_h || x < 0 || x >= g->out_w) continue;
                            for (int oc = 0; oc < g->out_c; oc++) {
                                size_t wi = convt_w(g, ic, i, j, oc);
                                float d = dout[at(b, y, x, oc, g->out_h, g->out_w, g->out_c)];
                                dweight[wi] += d * in[xi];
                                s += (double)d * weight[wi];
                            }
                        }
                    if (din) din[xi] = (float)s;
                }
}

/* ------------------------------------------------- activations and loss */

HOT void dae_relu_forward(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

HOT void dae_relu_backward(float *dx, const float *dy, const float *y, size_t n) {
    for (size_t i = 0; i < n; i++) dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}

/* no-trapping-math lets GCC turn the clamp's comparisons below into
 * min/max and vectorise the loop, and run dae_grad_add's add whatever the
 * condition, which without AVX-512's masks it ran a float at a time (4.8%
 * of a U-Net training step on AVX2); dae sets no floating-point traps. */
#pragma GCC push_options
#pragma GCC optimize("no-trapping-math")

HOT void dae_grad_add(float *dx, const float *dy, const float *y, size_t n) {
    if (y == NULL)
        for (size_t i = 0; i < n; i++) dx[i] += dy[i];
    else
        for (size_t i = 0; i < n; i++) dx[i] = y[i] > 0.0f ? dx[i] + dy[i] : 0.0f;
}

/* e^x, written so that a loop of it vectorises (libm's expf, called once
 * per pixel, was 8% of a batch of the seed network): x clamped to [-87,
 * 88] (where e^x stays a normal float), x = n ln2 + r with n rounded to
 * nearest by the 1.5 * 2^23 trick and ln2 split in two (Cody-Waite), so
 * |r| <= ln2/2; e^r by its Taylor series to r^8 (truncation below 3e-9
 * relative); 2^n written into the exponent bits. */
static inline float exp_vectorisable(float x) {
    x = x > -87.0f ? x : -87.0f;
    x = x < 88.0f ? x : 88.0f;
    const float round = 12582912.0f; /* 1.5 * 2^23 */
    float n = (x * 1.44269504f + round) - round;
    float r = (x - n * 0.693145751953125f) - n * 1.42860677e-6f;
    float p = 1.0f + r * (1.0f + r * (0.5f + r * (1.0f / 6 + r * (1.0f / 24 + r * (1.0f / 120 + r * (1.0f / 720 +
              r * (1.0f / 5040 + r * (1.0f / 40320))))))));
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

HOT void dae_sigmoid_forward(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = 1.0f / (1.0f + exp_vectorisable(-x[i]));
}
#pragma GCC pop_options

HOT void dae_sigmoid_backward(float *dx, const float *dy, const float *y, size_t n) {
    for (size_t i = 0; i < n; i++) dx[i] = dy[i] * y[i] * (1.0f - y[i]);
}

/* ------------------------------------------------------- graph layers */

/* The per-pixel runs are short (16 floats, or 1 for the image): plain
 * loops, not a memcpy call per pixel (which was 4% of a U-Net pass). */
HOT NO_MEMCPY_IDIOM void dae_concat_forward(float *out, const float *const *inputs, const int *channels,
                                            int n_inputs, size_t pixels) {
    int c_total = 0;
    for (int k = 0; k < n_inputs; k++) c_total += channels[k];
    for (int k = 0, c_first = 0; k < n_inputs; c_first += channels[k], k++) {
        const float *in = inputs[k];
        int c = channels[k];
        for (size_t p = 0; p < pixels; p++) {
            float *dst = out + p * c_total + c_first;
            const float *src = in + p * c;
            for (int i = 0; i < c; i++) dst[i] = src[i];
        }
    }
}

HOT NO_MEMCPY_IDIOM void dae_concat_backward(float *din, const float *dout, size_t pixels, int c_total,
                                             int c_first, int c, int accumulate) {
    for (size_t p = 0; p < pixels; p++) {
        const float *src = dout + p * c_total + c_first;
        float *dst = din + p * c;
        if (accumulate) {
            for (int i = 0; i < c; i++) dst[i] += src[i];
        } else {
            for (int i = 0; i < c; i++) dst[i] = src[i];
        }
    }
}

HOT void dae_add_forward(float *out, const float *const *inputs, int n_inputs, size_t n) {
    memmove(out, inputs[0], n * sizeof(float));
    for (int k = 1; k < n_inputs; k++) {
        const float *in = inputs[k];
        for (size_t i = 0; i < n; i++) out[i] += in[i];
    }
}

HOT void dae_residual_forward(float *out, const float *x, const float *f, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float v = x[i] - f[i];
        out[i] = v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v;
    }
}

HOT void dae_residual_backward(float *df, const float *dout, const float *x, const float *f, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float v = x[i] - f[i];
        df[i] = v >= 0.0f && v <= 1.0f ? -dout[i] : 0.0f;
    }
}

/* In 8 running sums of interleaved values, added together at the end:
 * one running sum made every add wait for the one before (1% of a
 * training step). */
HOT double dae_mse_loss_forward(const float *pred, const float *target, size_t n) {
    enum { LANES = 8 };
    double acc[LANES] = {0};
    size_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int l = 0; l < LANES; l++) {
            double d = (double)pred[i + l] - target[i + l];
            acc[l] += d * d;
        }
    for (int l = 0; i < n; i++, l++) {
        double d = (double)pred[i] - target[i];
        acc[l] += d * d;
    }
    double s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    return n ? s / (double)n : 0.0;
}

HOT void dae_mse_loss_backward(float *dpred, const float *pred, const float *target,
                           size_t n, size_t denom) {
    float scale = 2.0f / (float)denom;
    for (size_t i = 0; i < n; i++) dpred[i] = scale * (pred[i] - target[i]);
}
