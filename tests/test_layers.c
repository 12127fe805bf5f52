/* test_layers.c - every layer against PyTorch fixtures (tests/ref/
 * make_refs.py), the im2col kernels against the naive oracles, and
 * gradients against central finite differences. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "gemm.h"
#include "layers.h"
#include "rng.h"
#include "test_util.h"

/* The geometry recorded in a layer fixture's metadata. */
static dae_conv_geom fixture_geom(const dae_st_file *f) {
    dae_conv_geom g = {
        .batch = fixture_int(f, "batch"), .in_c = fixture_int(f, "in_c"),
        .in_h = fixture_int(f, "in_h"), .in_w = fixture_int(f, "in_w"),
        .out_c = fixture_int(f, "out_c"), .out_h = fixture_int(f, "out_h"),
        .out_w = fixture_int(f, "out_w"), .k_h = fixture_int(f, "k_h"), .k_w = fixture_int(f, "k_w"),
        .stride_h = fixture_int(f, "stride_h"), .stride_w = fixture_int(f, "stride_w"),
        .pad_h = fixture_int(f, "pad_h"), .pad_w = fixture_int(f, "pad_w"),
        .out_pad_h = fixture_int(f, "out_pad_h"), .out_pad_w = fixture_int(f, "out_pad_w"),
    };
    return g;
}

/* Runs one fixture through the im2col kernels (naive = 0) or the naive
 * ones and compares y, dx, dweight and dbias with PyTorch's. */
static void check_layer_fixture(const char *name, int naive) {
    char path[256];
    snprintf(path, sizeof path, FIXTURES "/ref/layer_%s.safetensors", name);
    dae_st_file f = {0};
    fixture_load(path, &f);
    dae_conv_geom g = fixture_geom(&f);
    int transposed = strcmp(dae_st_meta(&f, "kind"), "conv_transpose2d") == 0;
    size_t in_plane = (size_t)g.in_h * g.in_w, out_plane = (size_t)g.out_h * g.out_w;
    size_t n_in = (size_t)g.batch * g.in_c * in_plane, n_out = (size_t)g.batch * g.out_c * out_plane;
    const dae_st_tensor *w = fixture_tensor(&f, "weight"), *b = fixture_tensor(&f, "bias");
    float *x = malloc(n_in * sizeof(float)), *dy = malloc(n_out * sizeof(float));
    float *y = malloc(n_out * sizeof(float)), *dx = malloc(n_in * sizeof(float));
    float *y_nchw = malloc(n_out * sizeof(float)), *dx_nchw = malloc(n_in * sizeof(float));
    float *dw = calloc(w->numel, sizeof(float)), *db = calloc(b->numel, sizeof(float));
    float *weight = malloc(w->numel * sizeof(float)), *dw_torch = malloc(w->numel * sizeof(float));
    int wa = transposed ? g.in_c : g.out_c, wc = transposed ? g.out_c : g.in_c;
    dae_weight_from_torch(weight, w->data, wa, wc, g.k_h, g.k_w);
    size_t col_len = transposed ? dae_conv_transpose2d_col_size(&g) : dae_conv2d_col_size(&g);
    float *col = malloc(col_len * sizeof(float));
    nchw_to_nhwc(x, fixture_tensor(&f, "x")->data, g.batch, g.in_c, in_plane);
    nchw_to_nhwc(dy, fixture_tensor(&f, "dy")->data, g.batch, g.out_c, out_plane);

    if (transposed && naive) {
        dae_conv_transpose2d_forward_naive(y, x, weight, b->data, &g);
        dae_conv_transpose2d_backward_naive(dx, dw, db, dy, x, weight, &g);
    } else if (transposed) {
        dae_conv_transpose2d_forward(y, x, weight, NULL, b->data, &g, 0, col);
        dae_conv_transpose2d_backward(dx, dw, db, dy, x, weight, &g, col, 0);
    } else if (naive) {
        dae_conv2d_forward_naive(y, x, weight, b->data, &g);
        dae_conv2d_backward_naive(dx, dw, db, dy, x, weight, &g);
    } else {
        dae_conv2d_forward(y, x, weight, NULL, b->data, &g, 0, col);
        dae_conv2d_backward(dx, dw, db, dy, x, weight, &g, col, 0);
    }
    nhwc_to_nchw(y_nchw, y, g.batch, g.out_c, out_plane);
    nhwc_to_nchw(dx_nchw, dx, g.batch, g.in_c, in_plane);
    dae_weight_to_torch(dw_torch, dw, wa, wc, g.k_h, g.k_w);
    char what[300];
    snprintf(what, sizeof what, "%s%s y", name, naive ? " (naive)" : "");
    assert_close(y_nchw, fixture_tensor(&f, "y")->data, n_out, 1e-5, what);
    snprintf(what, sizeof what, "%s%s dx", name, naive ? " (naive)" : "");
    assert_close(dx_nchw, fixture_tensor(&f, "dx")->data, n_in, 1e-5, what);
    /* Weight gradients sum over batch*positions terms of size ~1: compare
     * relative to their magnitude (1e-5 of the largest gradient). */
    const dae_st_tensor *dw_ref = fixture_tensor(&f, "dweight"), *db_ref = fixture_tensor(&f, "dbias");
    double scale = 1.0;
    for (size_t i = 0; i < dw_ref->numel; i++) scale = fmax(scale, fabs(dw_ref->data[i]));
    snprintf(what, sizeof what, "%s%s dweight", name, naive ? " (naive)" : "");
    assert_close(dw_torch, dw_ref->data, w->numel, 1e-5 * scale, what);
    scale = 1.0;
    for (size_t i = 0; i < db_ref->numel; i++) scale = fmax(scale, fabs(db_ref->data[i]));
    snprintf(what, sizeof what, "%s%s dbias", name, naive ? " (naive)" : "");
    assert_close(db, db_ref->data, b->numel, 1e-5 * scale, what);
    free(x), free(dy), free(y), free(dx), free(y_nchw), free(dx_nchw), free(dw), free(db), free(col);
    free(weight), free(dw_torch);
    dae_st_free(&f);
}

static const char *const CASES[] = {
    "enc0", "enc2", "enc4", "dec0", "dec2", "dec4",
    "conv_k5_s1_p2", "conv_k3_s3_p0_rect", "conv_k2_s1_p0", "conv_k3x5_s2x1_p1x2",
    "convt_k4_s2_p1", "convt_k3_s3_p0_op2", "convt_k5_s1_p2", "convt_k3x2_s2x3_p1x0_op1x2",
};

Test(layers, conv_kernels_match_pytorch) {
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) check_layer_fixture(CASES[i], 0);
}

Test(layers, naive_kernels_match_pytorch) {
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) check_layer_fixture(CASES[i], 1);
}

Test(layers, activations_and_loss_match_pytorch) {
    dae_st_file f = {0};
    fixture_load(FIXTURES "/ref/activations.safetensors", &f);
    const dae_st_tensor *x = fixture_tensor(&f, "x"), *dy = fixture_tensor(&f, "dy");
    size_t n = x->numel;
    float *y = malloc(n * sizeof(float)), *dx = malloc(n * sizeof(float));
    memcpy(y, x->data, n * sizeof(float));
    dae_relu_forward(y, n);
    assert_close(y, fixture_tensor(&f, "relu_y")->data, n, 0.0, "relu");
    dae_relu_backward(dx, dy->data, y, n);
    assert_close(dx, fixture_tensor(&f, "relu_dx")->data, n, 0.0, "relu backward");
    memcpy(y, x->data, n * sizeof(float));
    dae_sigmoid_forward(y, n);
    assert_close(y, fixture_tensor(&f, "sigmoid_y")->data, n, 1e-6, "sigmoid");
    dae_sigmoid_backward(dx, dy->data, y, n);
    assert_close(dx, fixture_tensor(&f, "sigmoid_dx")->data, n, 1e-6, "sigmoid backward");
    const float *target = fixture_tensor(&f, "target")->data;
    double loss = dae_mse_loss_forward(x->data, target, n);
    cr_assert_float_eq(loss, fixture_tensor(&f, "mse_loss")->data[0], 1e-5 * loss, "mse %g", loss);
    dae_mse_loss_backward(dx, x->data, target, n, n);
    assert_close(dx, fixture_tensor(&f, "mse_dx")->data, n, 1e-7, "mse backward");
    free(y), free(dx);
    dae_st_free(&f);
}

/* Fills n floats with U(-1, 1) from a stream. */
static void fill_random(float *p, size_t n, uint64_t stream) {
    dae_rng r;
    dae_rng_seed(&r, 99, stream);
    for (size_t i = 0; i < n; i++) p[i] = 2.0f * dae_rng_uniform(&r) - 1.0f;
}

/* A random geometry: kernel 1..5, stride 1..3, padding < kernel. */
static dae_conv_geom random_geom(dae_rng *r, int transposed) {
    dae_conv_geom g = {0};
    g.batch = 1 + (int)dae_rng_below(r, 3);
    g.in_c = 1 + (int)dae_rng_below(r, 4);
    g.out_c = 1 + (int)dae_rng_below(r, 8); /* both sides of the tap-plane conv2d's limit */
    g.k_h = 1 + (int)dae_rng_below(r, 5), g.k_w = 1 + (int)dae_rng_below(r, 5);
    g.stride_h = 1 + (int)dae_rng_below(r, 3), g.stride_w = 1 + (int)dae_rng_below(r, 3);
    g.pad_h = (int)dae_rng_below(r, (uint64_t)g.k_h), g.pad_w = (int)dae_rng_below(r, (uint64_t)g.k_w);
    g.in_h = g.k_h + (int)dae_rng_below(r, 8), g.in_w = g.k_w + (int)dae_rng_below(r, 8);
    if (transposed) {
        g.out_pad_h = (int)dae_rng_below(r, (uint64_t)g.stride_h);
        g.out_pad_w = (int)dae_rng_below(r, (uint64_t)g.stride_w);
        g.out_h = (g.in_h - 1) * g.stride_h - 2 * g.pad_h + g.k_h + g.out_pad_h;
        g.out_w = (g.in_w - 1) * g.stride_w - 2 * g.pad_w + g.k_w + g.out_pad_w;
    } else {
        g.out_h = (g.in_h + 2 * g.pad_h - g.k_h) / g.stride_h + 1;
        g.out_w = (g.in_w + 2 * g.pad_w - g.k_w) / g.stride_w + 1;
    }
    return g;
}

/* The forward given its weight prepared once (dae_*_prepare, as a model
 * keeps it) gives y, the bits of the forward preparing its own, and the
 * prepare writes no more than its size. */
static void check_prepared_forward(const dae_conv_geom *g, int transposed, int relu, const float *x, const float *w,
                                   const float *b, const float *y, float *col, const char *what) {
    size_t ny = (size_t)g->out_c * g->batch * g->out_h * g->out_w;
    size_t np = transposed ? dae_conv_transpose2d_prepared_size(g) : dae_conv2d_prepared_size(g);
    float *prepared = malloc((np + 1) * 4), *y3 = malloc(ny * 4);
    prepared[np] = 12345.0f;
    if (transposed) {
        dae_conv_transpose2d_prepare(prepared, w, g);
        dae_conv_transpose2d_forward(y3, x, w, np > 0 ? prepared : NULL, b, g, relu, col);
    } else {
        dae_conv2d_prepare(prepared, w, g);
        dae_conv2d_forward(y3, x, w, np > 0 ? prepared : NULL, b, g, relu, col);
    }
    cr_assert_eq(prepared[np], 12345.0f, "%s: the prepared weight overran its %zu floats", what, np);
    cr_assert(memcmp(y3, y, ny * 4) == 0, "%s: the forward on the prepared weight differs", what);
    free(prepared), free(y3);
}

/* Runs the fast and naive kernels of one geometry on random values and
 * checks that y, dx, dweight and dbias agree to 1e-5 and 1e-4 times
 * tol_scale (for sums of many terms, whose values are larger); `what`
 * names the case. */
static void check_against_naive(const dae_conv_geom *gp, int transposed, int relu, double tol_scale,
                                const char *what) {
    dae_conv_geom g = *gp;
    size_t nx = (size_t)g.in_c * g.batch * g.in_h * g.in_w, ny = (size_t)g.out_c * g.batch * g.out_h * g.out_w;
    size_t nw = (size_t)g.in_c * g.out_c * g.k_h * g.k_w;
    size_t ncol = transposed ? dae_conv_transpose2d_col_size(&g) : dae_conv2d_col_size(&g);
    float *x = malloc(nx * 4), *w = malloc(nw * 4), *b = malloc(g.out_c * 4), *dy = malloc(ny * 4);
    float *y1 = malloc(ny * 4), *y2 = malloc(ny * 4), *dx1 = malloc(nx * 4), *dx2 = malloc(nx * 4);
    float *dw1 = calloc(nw, 4), *dw2 = calloc(nw, 4), *db1 = calloc(g.out_c, 4), *db2 = calloc(g.out_c, 4);
    float *col = malloc(ncol * 4);
    fill_random(x, nx, 1), fill_random(w, nw, 2), fill_random(b, g.out_c, 3), fill_random(dy, ny, 4);
    if (transposed) {
        dae_conv_transpose2d_forward(y1, x, w, NULL, b, &g, relu, col);
        dae_conv_transpose2d_forward_naive(y2, x, w, b, &g);
        dae_conv_transpose2d_backward(dx1, dw1, db1, dy, x, w, &g, col, 0);
        dae_conv_transpose2d_backward_naive(dx2, dw2, db2, dy, x, w, &g);
    } else {
        dae_conv2d_forward(y1, x, w, NULL, b, &g, relu, col);
        dae_conv2d_forward_naive(y2, x, w, b, &g);
        dae_conv2d_backward(dx1, dw1, db1, dy, x, w, &g, col, 0);
        dae_conv2d_backward_naive(dx2, dw2, db2, dy, x, w, &g);
    }
    if (relu) dae_relu_forward(y2, ny);
    assert_close(y1, y2, ny, 1e-5 * tol_scale, what);
    check_prepared_forward(&g, transposed, relu, x, w, b, y1, col, what);
    assert_close(dx1, dx2, nx, 1e-5 * tol_scale, what);
    assert_close(dw1, dw2, nw, 1e-4 * tol_scale, what);
    assert_close(db1, db2, (size_t)g.out_c, 1e-4 * tol_scale, what);
    /* The input a ReLU's output: the input gradient masked where it is
     * stored, the bits of dae_relu_backward after the plain backward. */
    float *masked = malloc(nx * 4), *dx3 = malloc(nx * 4), *dw3 = calloc(nw, 4), *db3 = calloc(g.out_c, 4);
    dae_relu_backward(masked, dx1, x, nx);
    if (transposed) dae_conv_transpose2d_backward(dx3, dw3, db3, dy, x, w, &g, col, 1);
    else dae_conv2d_backward(dx3, dw3, db3, dy, x, w, &g, col, 1);
    cr_expect(memcmp(dx3, masked, nx * 4) == 0, "%s: the input gradient with the ReLU's backward differs", what);
    free(masked), free(dx3), free(dw3), free(db3);
    if (!transposed) { /* without the input gradient (a network's first layer) */
        memset(dw1, 0, nw * 4), memset(db1, 0, g.out_c * 4);
        dae_conv2d_backward(NULL, dw1, db1, dy, x, w, &g, col, 0);
        assert_close(dw1, dw2, nw, 1e-4 * tol_scale, what);
        assert_close(db1, db2, (size_t)g.out_c, 1e-4 * tol_scale, what);
    }
    free(x), free(w), free(b), free(dy), free(y1), free(y2), free(dx1), free(dx2);
    free(dw1), free(dw2), free(db1), free(db2), free(col);
}

/* The fast and naive kernels agree on 200 random geometries. */
Test(layers, im2col_kernels_match_naive_on_random_shapes) {
    dae_rng r;
    dae_rng_seed(&r, 7, 0);
    for (int trial = 0; trial < 200; trial++) {
        int transposed = trial % 2;
        dae_conv_geom g = random_geom(&r, transposed);
        if (g.out_h < 1 || g.out_w < 1) continue;
        int relu = trial % 4 >= 2; /* the fused ReLU against a separate one */
        char what[200];
        snprintf(what, sizeof what, "trial %d %s%s k%dx%d s%dx%d p%dx%d op%dx%d in %dx%d", trial,
                 transposed ? "convT" : "conv", relu ? "+relu" : "", g.k_h, g.k_w, g.stride_h, g.stride_w, g.pad_h, g.pad_w,
                 g.out_pad_h, g.out_pad_w, g.in_h, g.in_w);
        check_against_naive(&g, transposed, relu, 1.0, what);
    }
}

/* Random geometries with 16 or 32 channels on the side a gather writes
 * (out_c of a transposed convolution, in_c of a convolution) and, with
 * one_channel, a single channel on the other, against the naive oracle.
 * Sums of up to 800 terms: 4 times the tolerances of the few-channel
 * shapes. */
static void check_channels_in_vectors(uint64_t seed, int trials, int one_channel) {
    dae_rng r;
    dae_rng_seed(&r, seed, 0);
    for (int trial = 0; trial < trials; trial++) {
        int transposed = trial % 2, relu = trial % 4 >= 2;
        dae_conv_geom g = random_geom(&r, transposed);
        if (g.out_h < 1 || g.out_w < 1) continue;
        int channels = 16 * (1 + (int)dae_rng_below(&r, 2));
        if (transposed) g.out_c = channels;
        else g.in_c = channels;
        if (one_channel) { /* the image's side: one channel; the features': the vectors */
            g.in_c = transposed ? channels : 1;
            g.out_c = transposed ? 1 : channels;
        }
        char what[200];
        snprintf(what, sizeof what, "trial %d %s%s batch %d, %d -> %d channels, k%dx%d s%dx%d p%dx%d op%dx%d in %dx%d",
                 trial, transposed ? "convT" : "conv", relu ? "+relu" : "", g.batch, g.in_c, g.out_c, g.k_h, g.k_w,
                 g.stride_h, g.stride_w, g.pad_h, g.pad_w, g.out_pad_h, g.out_pad_w, g.in_h, g.in_w);
        check_against_naive(&g, transposed, relu, 4.0, what);
    }
}

/* The gather that finishes a transposed convolution's forward pass and a
 * convolution's input gradient takes channels 16 at a time: random
 * geometries with channels in vectors on the side it writes, and one
 * image too wide for its tables, which scatters instead. */
Test(layers, im2col_kernels_match_naive_with_channels_in_vectors) {
    check_channels_in_vectors(11, 60, 0);
    dae_conv_geom wide = {.batch = 1, .in_c = 2, .in_h = 2, .in_w = 700, .out_c = 16, .out_h = 2, .out_w = 700,
                          .k_h = 3, .k_w = 3, .stride_h = 1, .stride_w = 1, .pad_h = 1, .pad_w = 1};
    check_against_naive(&wide, 1, 1, 4.0, "convT 700 wide, 16 channels");
}

/* The backward passes between a one-channel image and features of 16 or
 * 32 channels (the networks' first layer, the seed network's last) read
 * the image's taps from a padded copy: the two networks' layers, then
 * random geometries, against the naive oracle (the conv2d with and
 * without its input gradient, in check_against_naive). */
Test(layers, one_channel_image_backward_matches_naive) {
    dae_conv_geom first = {.batch = 5, .in_c = 1, .in_h = 28, .in_w = 28, .out_c = 16, .out_h = 14, .out_w = 14,
                           .k_h = 3, .k_w = 3, .stride_h = 2, .stride_w = 2, .pad_h = 1, .pad_w = 1};
    dae_conv_geom last = {.batch = 5, .in_c = 16, .in_h = 14, .in_w = 14, .out_c = 1, .out_h = 28, .out_w = 28,
                          .k_h = 3, .k_w = 3, .stride_h = 2, .stride_w = 2, .pad_h = 1, .pad_w = 1,
                          .out_pad_h = 1, .out_pad_w = 1};
    check_against_naive(&first, 0, 1, 4.0, "the first layer, 1 -> 16");
    check_against_naive(&last, 1, 0, 4.0, "the seed network's last layer, 16 -> 1");
    check_channels_in_vectors(97, 80, 1);
}

/* A transposed convolution to one channel, 3x3 at stride 2 and padding 1
 * (the seed network's last layer), runs by rows: each input row's tap
 * rows in a vector's lanes (16, or two vectors of 8 where AVX-512 is not
 * in use), interleaved into the output's. On every ISA, random sizes up
 * to the 16 pixels a row may have, channels, output paddings and
 * batches, against the naive oracle. */
static void one_channel_rows_vs_naive(dae_isa isa, dae_rng *r, void *ctx) {
    (void)ctx;
    for (int trial = 0; trial < 60; trial++) {
        dae_conv_geom g = {.batch = 1 + (int)dae_rng_below(r, 3), .in_c = 1 + (int)dae_rng_below(r, 40),
                           .in_h = 1 + (int)dae_rng_below(r, 10), .in_w = 1 + (int)dae_rng_below(r, 16),
                           .out_c = 1, .k_h = 3, .k_w = 3, .stride_h = 2, .stride_w = 2, .pad_h = 1, .pad_w = 1};
        if (trial == 0) g.in_c = 16, g.in_h = g.in_w = 14; /* the seed network's */
        g.out_pad_h = (int)dae_rng_below(r, 2), g.out_pad_w = (int)dae_rng_below(r, 2);
        g.out_h = 2 * g.in_h - 1 + g.out_pad_h, g.out_w = 2 * g.in_w - 1 + g.out_pad_w;
        char what[160];
        snprintf(what, sizeof what, "%s, trial %d batch %d, %d channels, %dx%d in, output padding %dx%d",
                 dae_isa_name(isa), trial, g.batch, g.in_c, g.in_h, g.in_w, g.out_pad_h, g.out_pad_w);
        check_against_naive(&g, 1, trial % 2, 4.0, what);
    }
}

Test(layers, conv_transpose_to_one_channel_by_rows_matches_naive_on_every_isa) {
    dae_conv_transpose2d_set_rows(1);
    cr_assert(on_every_isa(101, one_channel_rows_vs_naive, NULL) >= 1);
}

/* The U-Net's layers at a batch of 11: the kernels work a few images at a
 * time (a chunk's scratch stays in cache), so this runs several chunks and
 * a ragged last one through each path: im2col, the scatter of the
 * transposed convolution, and the tap planes of few output channels. With
 * up to 576 terms per output the values reach 10 (and the weight
 * gradients 100), so the tolerances are 10 times the random shapes'. */
/* Geometries where the kernel overhangs the image on both sides, so no
 * kernel position lies wholly inside: every run is a border run. */
Test(layers, im2col_kernels_match_naive_when_no_position_lies_inside) {
    static const int cases[][5] = {/* in, kernel, stride, pad, transposed */
                                   {1, 7, 1, 3, 1}, {2, 5, 2, 2, 1}, {1, 3, 1, 1, 0}, {2, 5, 1, 2, 0}, {3, 7, 2, 3, 0}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        dae_conv_geom g = {.batch = 2, .in_c = 3, .out_c = 5};
        g.in_h = g.in_w = cases[i][0];
        g.k_h = g.k_w = cases[i][1];
        g.stride_h = g.stride_w = cases[i][2];
        g.pad_h = g.pad_w = cases[i][3];
        int transposed = cases[i][4];
        g.out_h = g.out_w = transposed ? (g.in_h - 1) * g.stride_h - 2 * g.pad_h + g.k_h
                                       : (g.in_h + 2 * g.pad_h - g.k_h) / g.stride_h + 1;
        cr_assert(g.out_h >= 1);
        char what[80];
        snprintf(what, sizeof what, "%s in %d k %d s %d p %d", transposed ? "convT" : "conv", g.in_h, g.k_h,
                 g.stride_h, g.pad_h);
        check_against_naive(&g, transposed, 0, 1.0, what);
    }
}

/* A network's layer by name, for the tests on the networks' own shapes. */
typedef struct {
    const char *name;
    int transposed;
    dae_conv_geom g;
} network_layer;

Test(layers, kernels_match_naive_across_chunks) {
    static const network_layer cases[] = {
        {"e1.0", 0, {11, 1, 28, 28, 16, 14, 14, 3, 3, 2, 2, 1, 1, 0, 0}},
        {"e2.0", 0, {11, 16, 14, 14, 32, 7, 7, 3, 3, 2, 2, 1, 1, 0, 0}},
        {"d2.1", 1, {11, 64, 7, 7, 16, 14, 14, 3, 3, 2, 2, 1, 1, 1, 1}},
        {"d1.1", 1, {11, 32, 14, 14, 16, 28, 28, 3, 3, 2, 2, 1, 1, 1, 1}},
        {"out.1", 0, {11, 17, 28, 28, 1, 28, 28, 3, 3, 1, 1, 1, 1, 0, 0}},
        {"out.1 with 3 channels out", 0, {11, 17, 28, 28, 3, 28, 28, 3, 3, 1, 1, 1, 1, 0, 0}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        for (int relu = 0; relu < 2; relu++) {
            char what[100];
            snprintf(what, sizeof what, "%s%s, batch 11", cases[i].name, relu ? "+relu" : "");
            check_against_naive(&cases[i].g, cases[i].transposed, relu, 10.0, what);
        }
}

/* The 7x7 bottleneck's two layers keep their weight packed (layers.h):
 * the forward on it is the bits of the forward on the weight as it lies
 * (check_prepared_forward) and matches the oracle, for one image and a
 * few, on every ISA; a 3x3 layer's prepared weight is no packing. */
static void bottleneck_vs_naive(dae_isa isa, dae_rng *r, void *ctx) {
    static const network_layer cases[] = {
        {"z.0", 0, {1, 32, 7, 7, 64, 1, 1, 7, 7, 1, 1, 0, 0, 0, 0}},
        {"g.0", 1, {1, 64, 1, 1, 32, 7, 7, 7, 7, 1, 1, 0, 0, 0, 0}},
    };
    (void)r, (void)ctx;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        dae_conv_geom g = cases[i].g;
        cr_assert(dae_conv_prepared_is_packed(&g, cases[i].transposed), "%s is not packed", cases[i].name);
        for (g.batch = 1; g.batch <= 5; g.batch += 4) {
            char what[100];
            snprintf(what, sizeof what, "%s %s, batch %d", dae_isa_name(isa), cases[i].name, g.batch);
            check_against_naive(&g, cases[i].transposed, 1, 10.0, what);
        }
    }
    dae_conv_geom e2 = {1, 16, 14, 14, 32, 7, 7, 3, 3, 2, 2, 1, 1, 0, 0};
    cr_assert(!dae_conv_prepared_is_packed(&e2, 0));
}

Test(layers, bottleneck_forward_on_its_packed_weight_matches_naive_on_every_isa) {
    cr_assert(on_every_isa(83, bottleneck_vs_naive, NULL) >= 1);
}

/* L = sum(y * r) for the naive forward; used by the finite differences. */
static double probe_loss(const float *x, const float *w, const float *b, const float *r,
                         const dae_conv_geom *g, int transposed, float *y) {
    if (transposed) dae_conv_transpose2d_forward_naive(y, x, w, b, g);
    else dae_conv2d_forward_naive(y, x, w, b, g);
    size_t ny = (size_t)g->out_c * g->batch * g->out_h * g->out_w;
    double s = 0.0;
    for (size_t i = 0; i < ny; i++) s += (double)y[i] * r[i];
    return s;
}

/* Central differences on every input, weight and bias value of a small
 * conv and transposed conv agree with the backward pass. The layers are
 * linear, so with step 1e-2 the float error dominates: 2e-3 relative. */
static void check_finite_differences(int transposed) {
    dae_conv_geom g = {.batch = 2, .in_c = 2, .in_h = 5, .in_w = 4, .out_c = 3, .k_h = 3, .k_w = 2,
                       .stride_h = 2, .stride_w = 1, .pad_h = 1, .pad_w = 1, .out_pad_h = transposed};
    if (transposed) {
        g.out_h = (g.in_h - 1) * 2 - 2 + 3 + 1, g.out_w = (g.in_w - 1) - 2 + 2;
    } else {
        g.out_h = (g.in_h + 2 - 3) / 2 + 1, g.out_w = (g.in_w + 2 - 2) + 1;
    }
    size_t nx = 2 * 2 * 5 * 4, nw = 2 * 3 * 3 * 2, ny = (size_t)3 * 2 * g.out_h * g.out_w;
    float x[80], w[36], b[3], dx[80], dw[36] = {0}, db[3] = {0};
    float *r = malloc(ny * 4), *y = malloc(ny * 4), *col = malloc(4096 * 4);
    fill_random(x, nx, 11), fill_random(w, nw, 12), fill_random(b, 3, 13), fill_random(r, ny, 14);
    if (transposed) dae_conv_transpose2d_backward(dx, dw, db, r, x, w, &g, col, 0);
    else dae_conv2d_backward(dx, dw, db, r, x, w, &g, col, 0);
    struct { float *p; float *grad; size_t n; const char *name; } groups[] = {
        {x, dx, nx, "input"}, {w, dw, nw, "weight"}, {b, db, 3, "bias"}};
    const float h = 1e-2f;
    for (int k = 0; k < 3; k++) {
        for (size_t i = 0; i < groups[k].n; i++) {
            float saved = groups[k].p[i];
            groups[k].p[i] = saved + h;
            double up = probe_loss(x, w, b, r, &g, transposed, y);
            groups[k].p[i] = saved - h;
            double down = probe_loss(x, w, b, r, &g, transposed, y);
            groups[k].p[i] = saved;
            double numeric = (up - down) / (2.0 * h), analytic = groups[k].grad[i];
            cr_assert(fabs(numeric - analytic) <= 2e-3 * fmax(1.0, fabs(numeric)),
                      "%s d%s[%zu]: finite difference %.6f, backward %.6f",
                      transposed ? "convT" : "conv", groups[k].name, i, numeric, analytic);
        }
    }
    free(r), free(y), free(col);
}

Test(layers, conv2d_gradients_match_finite_differences) { check_finite_differences(0); }
Test(layers, conv_transpose2d_gradients_match_finite_differences) { check_finite_differences(1); }

/* Sigmoid's gradient by central differences (in double around float). */
Test(layers, sigmoid_gradient_matches_finite_differences) {
    for (float v = -6.0f; v <= 6.0f; v += 0.37f) {
        float y = v, up = v + 1e-3f, down = v - 1e-3f, dx, one = 1.0f;
        dae_sigmoid_forward(&y, 1), dae_sigmoid_forward(&up, 1), dae_sigmoid_forward(&down, 1);
        dae_sigmoid_backward(&dx, &one, &y, 1);
        double numeric = ((double)up - down) / 2e-3;
        cr_assert(fabs(numeric - dx) < 1e-4, "sigmoid'(%g): fd %g backward %g", v, numeric, dx);
    }
}

/* The BLAS path and the naive matrix multiply agree for every transpose
 * combination, with alpha and beta. */
Test(layers, gemm_matches_naive) {
    enum { M = 7, N = 9, K = 5 };
    float a[M * K], b[K * N], c1[M * N], c2[M * N];
    fill_random(a, M * K, 21), fill_random(b, K * N, 22);
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            fill_random(c1, M * N, 23), fill_random(c2, M * N, 23);
            dae_gemm(ta, tb, M, N, K, 0.5f, a, ta ? M : K, b, tb ? K : N, 2.0f, c1, N);
            dae_gemm_naive(ta, tb, M, N, K, 0.5f, a, ta ? M : K, b, tb ? K : N, 2.0f, c2, N);
            assert_close(c1, c2, M * N, 1e-5, "gemm");
        }
}

/* The vectorised sigmoid agrees with 1 / (1 + e^-x) in double precision
 * to float rounding over the whole range, saturating cleanly, and keeps
 * small outputs relatively accurate (a dark pixel's value). */
Test(layers, sigmoid_matches_double_precision) {
    enum { N = 200001 };
    float *in = malloc(sizeof(float) * N), *y = malloc(sizeof(float) * N);
    cr_assert(in && y);
    for (int i = 0; i < N; i++) in[i] = -100.0f + 200.0f * (float)i / (N - 1);
    in[0] = -INFINITY, in[N - 1] = INFINITY;
    memcpy(y, in, sizeof(float) * N);
    dae_sigmoid_forward(y, N);
    double worst_abs = 0.0, worst_rel = 0.0;
    for (int i = 0; i < N; i++) {
        double want = 1.0 / (1.0 + exp(-(double)in[i])), d = fabs(y[i] - want);
        cr_assert(y[i] >= 0.0f && y[i] <= 1.0f, "sigmoid(%g) = %g", in[i], y[i]);
        if (d > worst_abs) worst_abs = d;
        if (want > 1e-30 && d / want > worst_rel) worst_rel = d / want;
    }
    cr_assert(worst_abs <= 1.2e-7, "max abs error %.3g", worst_abs);
    cr_assert(worst_rel <= 1e-6, "max relative error %.3g (outputs above 1e-30)", worst_rel);
    free(in), free(y);
}

/* dae_gemm_bias's oracle: the naive product, then bias and ReLU. */
static void gemm_bias_oracle(int trans_b, int m, int n, int k, const float *a, int lda, const float *b, int ldb,
                             float *c, int ldc, const float *bias, int relu) {
    dae_gemm_naive(0, trans_b, m, n, k, 1.0f, a, lda, b, ldb, 0.0f, c, ldc);
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            float v = c[(size_t)i * ldc + j] + (bias ? bias[j] : 0.0f);
            c[(size_t)i * ldc + j] = relu && v < 0.0f ? 0.0f : v;
        }
}

/* One product through dae_gemm_bias and the oracle, with padded leading
 * dimensions; the padding of C must come back untouched. Returns the
 * path that ran it (dae_gemm_path). */
static int check_gemm_bias(int trans_b, int m, int n, int k, int with_bias, int relu, uint64_t seed) {
    int lda = k + 3, ldb = (trans_b ? k : n) + 5, ldc = n + 2;
    size_t b_rows = trans_b ? (size_t)n : (size_t)k;
    float *a = uniform_floats((size_t)m * lda, -1.0f, 1.0f, seed, 1);
    float *b = uniform_floats(b_rows * ldb, -1.0f, 1.0f, seed, 2);
    float *bias = with_bias ? uniform_floats((size_t)n, -0.5f, 0.5f, seed, 3) : NULL;
    float *got = malloc(sizeof(float) * m * ldc), *want = malloc(sizeof(float) * m * ldc);
    cr_assert(got && want);
    for (size_t i = 0; i < (size_t)m * ldc; i++) got[i] = want[i] = 1234.5f; /* sentinel in the padding */
    dae_gemm_bias(trans_b, m, n, k, a, lda, b, ldb, got, ldc, bias, relu);
    gemm_bias_oracle(trans_b, m, n, k, a, lda, b, ldb, want, ldc, bias, relu);
    char what[160];
    snprintf(what, sizeof what, "gemm_bias %s trans_b %d m %d n %d k %d bias %d relu %d", dae_isa_name(dae_gemm_isa()),
             trans_b, m, n, k, with_bias, relu);
    /* sums of k products of values in [-1, 1]: float rounding grows with k */
    assert_close(got, want, (size_t)m * ldc, 1e-6 * (k + 8), what);
    free(a), free(b), free(bias), free(got), free(want);
    return dae_gemm_bias_path(trans_b, n, k);
}

/* The engine's own kernels, on every instruction set this CPU has, agree
 * with the naive oracle on random shapes: many and few rows, columns that
 * are and are not whole vectors, with and without bias and ReLU, both B
 * layouts, on each path (broadcast, dot product, the BLAS for huge k).
 * One ISA's share: the edge shapes, then random ones, each product counted
 * by the path that ran it (ctx: int[3]). */
static void gemm_bias_vs_naive(dae_isa isa, dae_rng *r, void *ctx) {
    static const int edge[][3] = {
        {1, 1, 1}, {1, 16, 9}, {2, 17, 144}, {3, 33, 25}, {4, 64, 16}, {5, 1, 7}, {8, 100, 17}, {9, 15, 31},
        {17, 48, 9}, {4096, 16, 9}, {4097, 16, 9}, {784, 32, 144}, {3, 64, 1568}, {70, 64, 1568}, {5, 9, 800},
        {441, 64, 144},
    };
    int *by_path = ctx;
    (void)isa;
    for (int t = 0; t < 200; t++) {
        int m, n, k;
        if (t < (int)(sizeof edge / sizeof edge[0])) m = edge[t][0], n = edge[t][1], k = edge[t][2];
        else {
            m = 1 + (int)(dae_rng_uniform(r) * (t % 3 ? 40 : 600));
            n = 1 + (int)(dae_rng_uniform(r) * 80);
            k = 1 + (int)(dae_rng_uniform(r) * (t % 5 ? 200 : 700));
        }
        by_path[check_gemm_bias(t % 2, m, n, k, t % 3 != 0, t % 4 < 2, 1000 + (uint64_t)t)]++;
    }
}

Test(layers, gemm_bias_matches_naive_on_every_isa) {
    int by_path[3] = {0, 0, 0};
    int tested = on_every_isa(77, gemm_bias_vs_naive, by_path);
    cr_assert(tested >= 1 && by_path[DAE_GEMM_BROADCAST] > 0 && by_path[DAE_GEMM_DOT] > 0 && by_path[DAE_GEMM_BLAS] > 0,
              "%d isas; products by broadcast %d, dot %d, BLAS %d", tested, by_path[DAE_GEMM_BROADCAST],
              by_path[DAE_GEMM_DOT], by_path[DAE_GEMM_BLAS]);
}

/* A product on a packed B (dae_gemm_pack) is the bits of dae_gemm_bias on
 * B as it lies, and so within rounding of the oracle, on every ISA: the
 * bottleneck's shapes at batches 1 (a single image's tiles), a tile and
 * a few more rows, random shapes of whole groups (columns in 8s or 16s,
 * depth in 16s), padded leading dimensions whose padding stays
 * untouched. Shapes that are not whole groups are not packed. */
static void packed_vs_as_it_lies(dae_isa isa, dae_rng *r, void *ctx) {
    static const int shapes[][4] = {{1, 1, 64, 1568}, {3, 1, 64, 1568}, {7, 1, 64, 1568}, {70, 1, 64, 1568},
                                    {1, 0, 1568, 64}, {5, 0, 1568, 64}, {9, 0, 1568, 64},  {2, 0, 80, 32}};
    int *packed_runs = ctx;
    for (int t = 0; t < 40; t++) {
        int m, tb, n, k;
        if (t < (int)(sizeof shapes / sizeof shapes[0])) {
            m = shapes[t][0], tb = shapes[t][1], n = shapes[t][2], k = shapes[t][3];
        } else {
            tb = t % 2, m = 1 + (int)dae_rng_below(r, 12);
            n = tb ? 8 * (1 + (int)dae_rng_below(r, 10)) : 16 * (5 + (int)dae_rng_below(r, 8));
            k = tb ? 16 * (30 + (int)dae_rng_below(r, 80)) : 1 + (int)dae_rng_below(r, 70);
        }
        size_t floats = dae_gemm_packed_size(tb, n, k);
        if (floats == 0) continue; /* a k * n small enough for the broadcast kernel's copy */
        int lda = k + 3, ldc = n + 2;
        float *a = uniform_floats((size_t)m * lda, -1, 1, 7, (uint64_t)t);
        float *b = uniform_floats((size_t)n * k, -1, 1, 7, 99);
        float *bias = t % 3 ? uniform_floats((size_t)n, -0.5f, 0.5f, 7, 98) : NULL;
        float *packed = malloc(sizeof(float) * (floats + 1)), *got = malloc(sizeof(float) * m * ldc);
        float *want = malloc(sizeof(float) * m * ldc), *oracle = malloc(sizeof(float) * m * ldc);
        packed[floats] = 12345.0f;
        dae_gemm_pack(tb, n, k, b, packed);
        cr_assert_eq(packed[floats], 12345.0f, "the packed B overran its %zu floats", floats);
        for (size_t i = 0; i < (size_t)m * ldc; i++) got[i] = want[i] = oracle[i] = 1234.5f;
        dae_gemm_bias_packed(tb, m, n, k, a, lda, packed, got, ldc, bias, t % 4 < 2);
        dae_gemm_bias(tb, m, n, k, a, lda, b, tb ? k : n, want, ldc, bias, t % 4 < 2);
        gemm_bias_oracle(tb, m, n, k, a, lda, b, tb ? k : n, oracle, ldc, bias, t % 4 < 2);
        char what[160];
        snprintf(what, sizeof what, "packed %s trans_b %d m %d n %d k %d", dae_isa_name(isa), tb, m, n, k);
        assert_close(got, oracle, (size_t)m * ldc, 1e-6 * (k + 8), what);
        cr_assert(memcmp(got, want, sizeof(float) * m * ldc) == 0, "%s: not the bits of B as it lies", what);
        (*packed_runs)++;
        free(a), free(b), free(bias), free(packed), free(got), free(want), free(oracle);
    }
    cr_assert_eq(dae_gemm_packed_size(1, 60, 1568), 0, "60 columns are not whole groups of 8");
    cr_assert_eq(dae_gemm_packed_size(1, 64, 1570), 0, "a depth of 1570 is not whole runs of 16");
    cr_assert_eq(dae_gemm_packed_size(0, 1570, 64), 0, "1570 columns are not whole vectors");
}

Test(layers, packed_products_are_the_bits_of_the_weight_as_it_lies_on_every_isa) {
    int packed_runs = 0;
    int tested = on_every_isa(81, packed_vs_as_it_lies, &packed_runs);
    cr_assert(tested >= 1 && packed_runs >= 8 * tested, "%d isas, %d packed products", tested, packed_runs);
}

/* The weight-gradient product C += A^T B agrees with the naive oracle on
 * every instruction set: the networks' shapes (long sums over a batch's
 * pixels, wide rows of 7x7 kernels, the 9 columns of a one-channel 3x3
 * kernel, summed transposed), columns that are and are not whole vectors,
 * rows a tile and a few more (split in two tiles), sums longer than a
 * chunk, padded leading dimensions whose padding stays untouched. */
static void gemm_tn_acc_vs_naive(dae_isa isa, dae_rng *r, void *ctx) {
    static const int shapes[][3] = {{32, 144, 1568}, {64, 1568, 32}, {16, 16, 6272}, {9, 16, 300},
                                    {16, 9, 777},    {1, 16, 1},     {5, 48, 257},   {7, 80, 513},
                                    {32, 7, 100},    {48, 20, 300},  {11, 33, 40},   {64, 1568, 16}};
    (void)ctx;
    for (int t = 0; t < 40; t++) {
        int m, n, k, ns = (int)(sizeof shapes / sizeof shapes[0]);
        if (t < ns) m = shapes[t][0], n = shapes[t][1], k = shapes[t][2];
        else {
            m = 1 + (int)dae_rng_below(r, 70), n = 16 * (1 + (int)dae_rng_below(r, 8));
            k = 1 + (int)dae_rng_below(r, 900);
            if (t % 4 == 0) n += 1 + (int)dae_rng_below(r, 15);
        }
        int lda = m + 3, ldb = n + 5, ldc = n + 2;
        float *a = uniform_floats((size_t)k * lda, -1, 1, 400 + (uint64_t)t, 1);
        float *b = uniform_floats((size_t)k * ldb, -1, 1, 400 + (uint64_t)t, 2);
        float *got = uniform_floats((size_t)m * ldc, -1, 1, 400 + (uint64_t)t, 3);
        float *want = malloc(sizeof(float) * m * ldc);
        cr_assert(want);
        memcpy(want, got, sizeof(float) * m * ldc);
        dae_gemm_tn_acc(m, n, k, a, lda, b, ldb, got, ldc);
        dae_gemm_naive(1, 0, m, n, k, 1.0f, a, lda, b, ldb, 1.0f, want, ldc);
        char what[120];
        snprintf(what, sizeof what, "gemm_tn_acc %s m %d n %d k %d", dae_isa_name(isa), m, n, k);
        assert_close(got, want, (size_t)m * ldc, 1e-6 * (k + 8), what);
        for (int i = 0; i < m; i++)
            for (int j = n; j < ldc; j++)
                cr_assert_eq(got[(size_t)i * ldc + j], want[(size_t)i * ldc + j], "%s: padding changed", what);
        free(a), free(b), free(got), free(want);
    }
}

Test(layers, gemm_tn_acc_matches_naive_on_every_isa) { cr_assert(on_every_isa(79, gemm_tn_acc_vs_naive, NULL) >= 1); }

/* A convolution reads its patches where the image lies
 * (dae_gemm_patches): on every ISA its outputs are the bits of the im2col
 * product it replaced, dae_gemm_bias over the patches copied out (zeros
 * outside the image), for both networks' first two layers' shapes and
 * random ones with 1, 2 or 16 channels in and 16 to 64 out; and within
 * the naive oracle's tolerance with the backward pass. ctx counts the
 * geometries that take the padded image (the others keep im2col). */
static void conv_patches_vs_im2col(dae_isa isa, dae_rng *r, void *ctx) {
    int *padded = ctx;
    for (int t = 0; t < 40; t++) {
        dae_conv_geom g = {.batch = 1 + (int)dae_rng_below(r, 3), .in_c = 1, .in_h = 28, .in_w = 28, .out_c = 16,
                           .out_h = 14, .out_w = 14, .k_h = 3, .k_w = 3, .stride_h = 2, .stride_w = 2,
                           .pad_h = 1, .pad_w = 1};
        if (t == 1) g.in_c = 16, g.in_h = g.in_w = 14, g.out_c = 32, g.out_h = g.out_w = 7;
        if (t > 1) {
            static const int in_channels[] = {1, 2, 16};
            g = random_geom(r, 0);
            g.in_c = in_channels[dae_rng_below(r, 3)], g.out_c = 16 * (1 + (int)dae_rng_below(r, 4));
        }
        if (g.out_h < 1 || g.out_w < 1) continue;
        int c = g.in_c, k = g.k_h * g.k_w * c;
        int hp = (g.out_h - 1) * g.stride_h + g.k_h, wp = (g.out_w - 1) * g.stride_w + g.k_w;
        size_t pixels = (size_t)g.batch * g.out_h * g.out_w, ny = pixels * g.out_c;
        int whole = g.out_h == 1 && g.out_w == 1 && g.k_h == g.in_h && g.k_w == g.in_w && !g.pad_h && !g.pad_w;
        *padded += !whole && (size_t)hp * wp <= (size_t)g.out_h * g.out_w * g.k_h * g.k_w &&
                   dae_gemm_bias_path(1, g.out_c, k) == DAE_GEMM_BROADCAST;
        size_t nx = (size_t)g.batch * g.in_h * g.in_w * c;
        float *x = malloc(sizeof(float) * nx), *w = malloc(sizeof(float) * g.out_c * k);
        float *b = malloc(sizeof(float) * g.out_c), *patches = malloc(sizeof(float) * pixels * k);
        float *y1 = malloc(sizeof(float) * ny), *y2 = malloc(sizeof(float) * ny);
        float *col = malloc(sizeof(float) * dae_conv2d_col_size(&g));
        fill_random(x, nx, 21), fill_random(w, (size_t)g.out_c * k, 22), fill_random(b, (size_t)g.out_c, 23);
        for (size_t px = 0; px < pixels; px++) {
            int img = (int)(px / ((size_t)g.out_h * g.out_w)), oy = (int)(px / g.out_w % g.out_h);
            int ox = (int)(px % g.out_w);
            for (int i = 0; i < g.k_h; i++)
                for (int j = 0; j < g.k_w; j++)
                    for (int ch = 0; ch < c; ch++) {
                        int y = oy * g.stride_h - g.pad_h + i, xx = ox * g.stride_w - g.pad_w + j;
                        int inside = y >= 0 && y < g.in_h && xx >= 0 && xx < g.in_w;
                        patches[px * k + (i * g.k_w + j) * c + ch] =
                            inside ? x[(((size_t)img * g.in_h + y) * g.in_w + xx) * c + ch] : 0.0f;
                    }
        }
        for (int relu = 0; relu < 2; relu++) {
            dae_conv2d_forward(y1, x, w, NULL, b, &g, relu, col);
            dae_gemm_bias(1, (int)pixels, g.out_c, k, patches, k, w, k, y2, g.out_c, b, relu);
            cr_assert(memcmp(y1, y2, sizeof(float) * ny) == 0,
                      "%s, trial %d, relu %d: batch %d, %d -> %d channels, k%dx%d s%dx%d p%dx%d in %dx%d: not the "
                      "im2col product's bits", dae_isa_name(isa), t, relu, g.batch, c, g.out_c, g.k_h, g.k_w,
                      g.stride_h, g.stride_w, g.pad_h, g.pad_w, g.in_h, g.in_w);
        }
        if (t % 8 == 0) check_against_naive(&g, 0, t % 16 == 0, 4.0, "patches read where the image lies");
        free(x), free(w), free(b), free(patches), free(y1), free(y2), free(col);
    }
}

Test(layers, conv_patches_are_the_im2col_product_on_every_isa) {
    int padded = 0;
    cr_assert(on_every_isa(81, conv_patches_vs_im2col, &padded) >= 1);
    cr_assert(padded >= 20, "only %d geometries took the padded image", padded);
}

/* A convolution to one channel from 16 or more (dae_gemm_patches_dot for
 * the channels in whole vectors, planes for the rest): on every ISA it
 * agrees with the naive oracle, forward and backward, for the U-Net's last
 * layer and random geometries (rows narrower and wider than a vector,
 * strides 1 and 2, 16 to 50 channels); and the input given as two parts
 * split anywhere gives the same bits as the concatenation. */
static void one_channel_conv_vs_naive(dae_isa isa, dae_rng *r, void *ctx) {
    (void)ctx;
    for (int t = 0; t < 30; t++) {
        dae_conv_geom g = {.batch = 2, .in_c = 17, .in_h = 28, .in_w = 28, .out_c = 1, .out_h = 28, .out_w = 28,
                           .k_h = 3, .k_w = 3, .stride_h = 1, .stride_w = 1, .pad_h = 1, .pad_w = 1};
        if (t > 0) {
            static const int in_channels[] = {16, 17, 19, 32, 33, 50};
            g = random_geom(r, 0);
            g.stride_h = 1 + (int)dae_rng_below(r, 2), g.stride_w = 1 + (int)dae_rng_below(r, 2);
            g.in_h = g.k_h + (int)dae_rng_below(r, 24), g.in_w = g.k_w + (int)dae_rng_below(r, 40);
            g.out_h = (g.in_h + 2 * g.pad_h - g.k_h) / g.stride_h + 1;
            g.out_w = (g.in_w + 2 * g.pad_w - g.k_w) / g.stride_w + 1;
            g.in_c = in_channels[dae_rng_below(r, 6)], g.out_c = 1;
        }
        char what[160];
        snprintf(what, sizeof what, "%s, trial %d: %d channels, k%dx%d s%dx%d p%dx%d in %dx%d",
                 dae_isa_name(isa), t, g.in_c, g.k_h, g.k_w, g.stride_h, g.stride_w, g.pad_h, g.pad_w, g.in_h,
                 g.in_w);
        check_against_naive(&g, 0, t % 2, 4.0, what);
        size_t pixels = (size_t)g.batch * g.in_h * g.in_w, out_n = (size_t)g.batch * g.out_h * g.out_w;
        int channels[2] = {1 + (int)dae_rng_below(r, (uint64_t)g.in_c - 1), 0};
        channels[1] = g.in_c - channels[0];
        float *x1 = uniform_floats(pixels * channels[0], -1, 1, 500 + (uint64_t)t, 1);
        float *x2 = uniform_floats(pixels * channels[1], -1, 1, 500 + (uint64_t)t, 2);
        float *w = uniform_floats((size_t)g.in_c * g.k_h * g.k_w, -1, 1, 500 + (uint64_t)t, 3);
        float *b = uniform_floats(1, -1, 1, 500 + (uint64_t)t, 4);
        float *x = malloc(sizeof(float) * pixels * g.in_c), *col = malloc(sizeof(float) * dae_conv2d_col_size(&g));
        float *y1 = malloc(sizeof(float) * out_n), *y2 = malloc(sizeof(float) * out_n);
        const float *parts[2] = {x1, x2};
        dae_concat_forward(x, parts, channels, 2, pixels);
        dae_conv2d_forward(y1, x, w, NULL, b, &g, 0, col);
        dae_conv2d_forward_parts(y2, parts, channels, 2, w, NULL, b, &g, 0, col);
        cr_assert(memcmp(y1, y2, sizeof(float) * out_n) == 0, "%s split %d+%d: not the concatenation's bits", what,
                  channels[0], channels[1]);
        free(x1), free(x2), free(w), free(b), free(x), free(col), free(y1), free(y2);
    }
}

Test(layers, one_channel_conv_by_dots_matches_naive_on_every_isa) {
    cr_assert(on_every_isa(83, one_channel_conv_vs_naive, NULL) >= 1);
}

/* A 3x3 "same" convolution to one channel whose first part holds the
 * channels in whole vectors (the U-Net's last layer: the decoder's 16,
 * then the input's 1) dots that part where it lies, leaving out the
 * products past the image's edges: on every ISA, for rows of 1 to 40
 * pixels (one group of 16 outputs, several, a ragged one) and 1 to 20
 * rows, it agrees with the naive oracle (the input as one tensor of 16 or
 * 32 channels), and with the tail in a second part it gives the bits of
 * the padded copy (the input as one tensor of head + tail channels). */
static void same_conv_as_it_lies_vs_padded(dae_isa isa, dae_rng *r, void *ctx) {
    (void)ctx;
    for (int t = 0; t < 24; t++) {
        int head = 16 * (1 + (int)dae_rng_below(r, 2)), tail = (int)dae_rng_below(r, 3);
        dae_conv_geom g = {.batch = 1 + (int)dae_rng_below(r, 3), .in_c = head, .out_c = 1, .k_h = 3, .k_w = 3,
                           .stride_h = 1, .stride_w = 1, .pad_h = 1, .pad_w = 1};
        g.in_h = g.out_h = 1 + (int)dae_rng_below(r, 20), g.in_w = g.out_w = 1 + (int)dae_rng_below(r, 40);
        if (t == 0) g.in_h = g.out_h = g.in_w = g.out_w = 28, tail = 1; /* the U-Net's */
        char what[160];
        snprintf(what, sizeof what, "%s, trial %d: %d + %d channels, batch %d, %dx%d", dae_isa_name(isa), t, head,
                 tail, g.batch, g.in_h, g.in_w);
        check_against_naive(&g, 0, t % 2, 4.0, what);
        if (tail == 0) continue;
        g.in_c = head + tail;
        size_t pixels = (size_t)g.batch * g.in_h * g.in_w, out_n = (size_t)g.batch * g.out_h * g.out_w;
        int channels[2] = {head, tail};
        float *x1 = uniform_floats(pixels * head, -1, 1, 700 + (uint64_t)t, 1);
        float *x2 = uniform_floats(pixels * tail, -1, 1, 700 + (uint64_t)t, 2);
        float *w = uniform_floats((size_t)g.in_c * 9, -1, 1, 700 + (uint64_t)t, 3);
        float *b = uniform_floats(1, -1, 1, 700 + (uint64_t)t, 4);
        float *x = malloc(sizeof(float) * pixels * g.in_c), *col = malloc(sizeof(float) * dae_conv2d_col_size(&g));
        float *y1 = malloc(sizeof(float) * out_n), *y2 = malloc(sizeof(float) * out_n);
        const float *parts[2] = {x1, x2};
        dae_concat_forward(x, parts, channels, 2, pixels);
        dae_conv2d_forward(y1, x, w, NULL, b, &g, t % 2, col);
        dae_conv2d_forward_parts(y2, parts, channels, 2, w, NULL, b, &g, t % 2, col);
        cr_assert(memcmp(y1, y2, sizeof(float) * out_n) == 0, "%s: not the padded copy's bits", what);
        free(x1), free(x2), free(w), free(b), free(x), free(col), free(y1), free(y2);
    }
}

Test(layers, same_conv_to_one_channel_reads_its_head_where_it_lies) {
    cr_assert(on_every_isa(89, same_conv_as_it_lies_vs_padded, NULL) >= 1);
}

/* A reader of a concatenation with its input in two parts: trial t's
 * geometry and how many channels each part has. */
typedef struct {
    int transposed, t;
    dae_conv_geom g;
    int channels[2];
} split_case;

/* Runs check on the U-Net's three readers of a concatenation and a
 * transposed convolution to one channel (backward by the one-channel
 * loops), then on
 * random geometries of the transposed convolution and of the conv2d that
 * takes parts, split at random, to `trials` trials from rng seed `seed`;
 * ran[transposed] counts the cases of each kind. */
static void for_each_split(uint64_t seed, int trials, void (*check)(const split_case *), int ran[2]) {
    static const split_case fixed[] = {
        {1, 0, {5, 64, 7, 7, 16, 14, 14, 3, 3, 2, 2, 1, 1, 1, 1}, {32, 32}},
        {1, 1, {5, 32, 14, 14, 16, 28, 28, 3, 3, 2, 2, 1, 1, 1, 1}, {16, 16}},
        {0, 2, {5, 17, 28, 28, 1, 28, 28, 3, 3, 1, 1, 1, 1, 0, 0}, {16, 1}},
        {1, 3, {5, 32, 14, 14, 1, 28, 28, 3, 3, 2, 2, 1, 1, 1, 1}, {16, 16}},
    };
    const int n_fixed = (int)(sizeof fixed / sizeof fixed[0]);
    dae_rng r;
    dae_rng_seed(&r, seed, 0);
    ran[0] = ran[1] = 0;
    for (int t = 0; t < trials; t++) {
        split_case c;
        if (t < n_fixed) {
            c = fixed[t];
        } else {
            c.transposed = t % 2, c.t = t;
            c.g = random_geom(&r, c.transposed);
            c.g.in_c += 1; /* two parts at least one channel each */
            c.channels[0] = 1 + (int)dae_rng_below(&r, (uint64_t)c.g.in_c - 1);
            c.channels[1] = c.g.in_c - c.channels[0];
            if (!c.transposed && !dae_conv2d_takes_parts(&c.g)) continue;
        }
        ran[c.transposed]++;
        check(&c);
    }
}

/* A split case's random data (from seed base + trial): the two parts, the
 * concatenated input, a weight, `extra` (the bias, as many floats as
 * out_c, or the output gradient, as many as the output: the larger),
 * and col for either pass. */
typedef struct {
    size_t pixels, out_n, wn;
    float *x1, *x2, *x, *w, *extra, *col;
    const float *parts[2];
} split_data;

static split_data split_data_new(const split_case *c, uint64_t base) {
    const dae_conv_geom *g = &c->g;
    uint64_t seed = base + (uint64_t)c->t;
    split_data d;
    d.pixels = (size_t)g->batch * g->in_h * g->in_w, d.out_n = (size_t)g->batch * g->out_h * g->out_w * g->out_c;
    d.wn = (size_t)g->in_c * g->out_c * g->k_h * g->k_w;
    size_t ncol = c->transposed ? dae_conv_transpose2d_col_size(g) : dae_conv2d_col_size(g);
    d.x1 = uniform_floats(d.pixels * c->channels[0], -1, 1, seed, 1);
    d.x2 = uniform_floats(d.pixels * c->channels[1], -1, 1, seed, 2);
    d.w = uniform_floats(d.wn, -1, 1, seed, 3);
    d.extra = uniform_floats(d.out_n, -1, 1, seed, 4);
    d.x = malloc(sizeof(float) * d.pixels * g->in_c), d.col = malloc(sizeof(float) * ncol);
    d.parts[0] = d.x1, d.parts[1] = d.x2;
    dae_concat_forward(d.x, d.parts, c->channels, 2, d.pixels);
    return d;
}

static void split_data_free(split_data *d) {
    free(d->x1), free(d->x2), free(d->x), free(d->w), free(d->extra), free(d->col);
}

/* The backward passes over the two parts where they lie (what training
 * runs for the U-Net's three readers of a concatenation) agree with the
 * backward on the concatenated input: each part's input gradient with its
 * channels of the joined one, and the weight and bias gradients. */
static void backward_split_vs_joined(const split_case *c) {
    dae_conv_geom g = c->g;
    const int *channels = c->channels;
    split_data d = split_data_new(c, 700);
    size_t pixels = d.pixels, wn = d.wn;
    const float *x = d.x, *w = d.w, *dy = d.extra;
    const float *const *parts = d.parts;
    float *col = d.col;
    float *dx = malloc(sizeof(float) * pixels * g.in_c), *dx_parts = malloc(sizeof(float) * pixels * g.in_c);
    float *dx1 = malloc(sizeof(float) * pixels * channels[0]), *dx2 = malloc(sizeof(float) * pixels * channels[1]);
    float *dw = calloc(wn, sizeof(float)), *dw_parts = calloc(wn, sizeof(float));
    float *db = calloc((size_t)g.out_c, sizeof(float)), *db_parts = calloc((size_t)g.out_c, sizeof(float));
    float *dins[2] = {dx1, dx2};
    if (c->transposed) {
        dae_conv_transpose2d_backward(dx, dw, db, dy, x, w, &g, col, 0);
        dae_conv_transpose2d_backward_parts(dins, dw_parts, db_parts, dy, parts, channels, 2, w, &g, col);
    } else {
        dae_conv2d_backward(dx, dw, db, dy, x, w, &g, col, 0);
        dae_conv2d_backward_parts(dins, dw_parts, db_parts, dy, parts, channels, 2, w, &g, col, 0);
    }
    const float *dparts[2] = {dx1, dx2};
    dae_concat_forward(dx_parts, dparts, channels, 2, pixels);
    char what[200];
    snprintf(what, sizeof what, "%s %d+%d channels in, %d out, k %dx%d, stride %dx%d",
             c->transposed ? "convT" : "conv", channels[0], channels[1], g.out_c, g.k_h, g.k_w, g.stride_h,
             g.stride_w);
    assert_close(dx_parts, dx, pixels * g.in_c, 1e-5, what);
    assert_close(dw_parts, dw, wn, 1e-4, what);
    cr_assert(memcmp(db_parts, db, sizeof(float) * g.out_c) == 0, "%s: the bias gradients differ", what);
    /* without the second part's gradient (the network's input, as the
     * U-Net's last layer reads it): the first part's and the weight's */
    float *dx1_alone = malloc(sizeof(float) * pixels * channels[0]), *dins_first[2] = {dx1_alone, NULL};
    memset(dw_parts, 0, sizeof(float) * wn), memset(db_parts, 0, sizeof(float) * g.out_c);
    if (c->transposed)
        dae_conv_transpose2d_backward_parts(dins_first, dw_parts, db_parts, dy, parts, channels, 2, w, &g, col);
    else
        dae_conv2d_backward_parts(dins_first, dw_parts, db_parts, dy, parts, channels, 2, w, &g, col, 0);
    strcat(what, ", the second part's gradient not wanted");
    assert_close(dx1_alone, dx1, pixels * channels[0], 1e-5, what);
    assert_close(dw_parts, dw, wn, 1e-4, what);
    if (!c->transposed) { /* the parts taken as ReLU outputs: their backward done with the parts' */
        size_t n1 = pixels * channels[0], n2 = pixels * channels[1];
        float *relu1 = malloc(sizeof(float) * n1), *relu2 = malloc(sizeof(float) * n2);
        float *first_relu[2] = {relu1, NULL}, *both_relu[2] = {relu1, relu2};
        dae_conv2d_backward_parts(first_relu, dw_parts, db_parts, dy, parts, channels, 2, w, &g, col, 3u);
        dae_relu_backward(dx1_alone, dx1_alone, d.x1, n1); /* (the one-channel adjoint's, when it runs) */
        cr_assert(memcmp(relu1, dx1_alone, sizeof(float) * n1) == 0,
                  "%s: the first part's ReLU backward taken in the backward differs from the ReLU's own after it",
                  what);
        dae_conv2d_backward_parts(both_relu, dw_parts, db_parts, dy, parts, channels, 2, w, &g, col, 3u);
        dae_relu_backward(dx1, dx1, d.x1, n1);
        dae_relu_backward(dx2, dx2, d.x2, n2);
        cr_assert(memcmp(relu1, dx1, sizeof(float) * n1) == 0 && memcmp(relu2, dx2, sizeof(float) * n2) == 0,
                  "%s, both parts' gradients: a ReLU backward taken in the backward differs from the ReLU's own "
                  "after it", what);
        free(relu1), free(relu2);
    }
    free(dx1_alone);
    free(dx), free(dx_parts), free(dx1), free(dx2), free(dw), free(dw_parts), free(db), free(db_parts);
    split_data_free(&d);
}

Test(layers, backward_parts_equal_the_backward_on_the_concatenation) {
    int ran[2];
    for_each_split(91, 200, backward_split_vs_joined, ran);
    cr_assert(ran[0] >= 15 && ran[1] >= 60, "conv2d %d, convT %d geometries", ran[0], ran[1]);
}

/* The 3x3 stride-2 transposed convolution by points (Winograd's F(2,2)
 * on the odd outputs) or by phases (even and odd columns summed in
 * registers, layers.c): on every ISA it agrees with the naive oracle,
 * forward and backward, for the U-Net's 14 -> 28 and 7 -> 14 layers and
 * random geometries (sizes 1 to 16, odd ones too: the points' half
 * tiles; output padding 0 or 1, 16 to 64 channels in, 16 or 32 out,
 * with and without the ReLU); and each image's outputs are the same bits
 * alone as in a batch of 5. */
static void stride2_conv_transpose_vs_naive(dae_isa isa, dae_rng *r, void *ctx) {
    (void)ctx;
    for (int t = 0; t < 20; t++) {
        dae_conv_geom g = {.batch = 2, .in_c = 32, .in_h = 14, .in_w = 14, .out_c = 16, .out_h = 28, .out_w = 28,
                           .k_h = 3, .k_w = 3, .stride_h = 2, .stride_w = 2, .pad_h = 1, .pad_w = 1,
                           .out_pad_h = 1, .out_pad_w = 1};
        if (t == 1) g.in_c = 64, g.in_h = g.in_w = 7, g.out_h = g.out_w = 14;
        if (t > 1) {
            g.in_h = 1 + (int)dae_rng_below(r, 16), g.in_w = 1 + (int)dae_rng_below(r, 16);
            g.out_pad_h = (int)dae_rng_below(r, 2), g.out_pad_w = (int)dae_rng_below(r, 2);
            g.out_h = 2 * g.in_h - 1 + g.out_pad_h, g.out_w = 2 * g.in_w - 1 + g.out_pad_w;
            g.in_c = 16 * (1 + (int)dae_rng_below(r, 4)), g.out_c = 16 * (1 + (int)dae_rng_below(r, 2));
        }
        char what[160];
        snprintf(what, sizeof what, "%s, trial %d: %d -> %d channels, in %dx%d, output padding %dx%d",
                 dae_isa_name(isa), t, g.in_c, g.out_c, g.in_h, g.in_w, g.out_pad_h, g.out_pad_w);
        check_against_naive(&g, 1, t % 2, 4.0, what);
        g.batch = 5;
        size_t in_n = (size_t)g.in_h * g.in_w * g.in_c, out_n = (size_t)g.out_h * g.out_w * g.out_c;
        float *x = uniform_floats(in_n * g.batch, -1, 1, 600 + (uint64_t)t, 1);
        float *w = uniform_floats((size_t)g.in_c * 9 * g.out_c, -1, 1, 600 + (uint64_t)t, 2);
        float *b = uniform_floats((size_t)g.out_c, -1, 1, 600 + (uint64_t)t, 3);
        float *col = malloc(sizeof(float) * dae_conv_transpose2d_col_size(&g));
        float *all = malloc(sizeof(float) * out_n * g.batch), *one = malloc(sizeof(float) * out_n);
        dae_conv_transpose2d_forward(all, x, w, NULL, b, &g, 1, col);
        dae_conv_geom g1 = g;
        g1.batch = 1;
        for (int i = 0; i < g.batch; i++) {
            dae_conv_transpose2d_forward(one, x + i * in_n, w, NULL, b, &g1, 1, col);
            cr_assert(memcmp(one, all + i * out_n, sizeof(float) * out_n) == 0,
                      "%s: image %d alone is not its bits in a batch of %d", what, i, g.batch);
        }
        free(x), free(w), free(b), free(col), free(all), free(one);
    }
}

Test(layers, conv_transpose_by_points_matches_naive_on_every_isa) {
    dae_conv_transpose2d_set_points(1); /* whichever way this CPU goes */
    cr_assert(on_every_isa(89, stride2_conv_transpose_vs_naive, NULL) >= 1);
}

Test(layers, conv_transpose_by_phases_matches_naive_on_every_isa) {
    dae_conv_transpose2d_set_points(0);
    cr_assert(on_every_isa(97, stride2_conv_transpose_vs_naive, NULL) >= 1);
}

/* A conv2d at stride 2, 3x3, padding 1 whose backward goes by the
 * transposed convolution's phases (its adjoint): it agrees with the naive
 * oracle, forward and backward, for the encoders' 14 -> 7 layer and random
 * sizes 1 to 16, odd ones too, 16 to 48 channels in and out. */
Test(layers, conv2d_stride2_backward_by_phases_matches_naive) {
    dae_conv_transpose2d_set_points(0);
    dae_rng r;
    dae_rng_seed(&r, 101, 0);
    for (int t = 0; t < 24; t++) {
        dae_conv_geom g = {.batch = 2, .in_c = 16, .in_h = 14, .in_w = 14, .out_c = 32, .k_h = 3, .k_w = 3,
                           .stride_h = 2, .stride_w = 2, .pad_h = 1, .pad_w = 1};
        if (t > 0) {
            g.in_h = 1 + (int)dae_rng_below(&r, 16), g.in_w = 1 + (int)dae_rng_below(&r, 16);
            g.in_c = 16 * (1 + (int)dae_rng_below(&r, 3)), g.out_c = 16 * (1 + (int)dae_rng_below(&r, 3));
        }
        g.out_h = (g.in_h - 1) / 2 + 1, g.out_w = (g.in_w - 1) / 2 + 1;
        char what[160];
        snprintf(what, sizeof what, "trial %d: %d -> %d channels, in %dx%d", t, g.in_c, g.out_c, g.in_h, g.in_w);
        check_against_naive(&g, 0, t % 2, 4.0, what);
    }
}

/* A row of C is the same bits whatever the number of rows: each row
 * alone equals that row of the whole product, on every ISA and both
 * kernels (what makes an image's outputs independent of its batch). */
static void rows_alone_vs_among_others(dae_isa isa, dae_rng *r, void *ctx) {
    static const int shapes[][4] = {{0, 300, 32, 144}, {1, 300, 16, 9}, {1, 37, 64, 1568},
                                    {0, 50, 33, 64},   {0, 9, 1573, 64}}; /* the last: one row's wide tiles */
    (void)r, (void)ctx;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int tb = shapes[s][0], m = shapes[s][1], n = shapes[s][2], k = shapes[s][3];
        float *a = uniform_floats((size_t)m * k, -1, 1, 5, 1), *b = uniform_floats((size_t)n * k, -1, 1, 5, 2);
        float *bias = uniform_floats((size_t)n, -0.5f, 0.5f, 5, 3);
        float *all = malloc(sizeof(float) * m * n), *one = malloc(sizeof(float) * n);
        dae_gemm_bias(tb, m, n, k, a, k, b, tb ? k : n, all, n, bias, 1);
        for (int i = 0; i < m; i++) {
            dae_gemm_bias(tb, 1, n, k, a + (size_t)i * k, k, b, tb ? k : n, one, n, bias, 1);
            cr_assert(memcmp(one, all + (size_t)i * n, sizeof(float) * n) == 0,
                      "%s trans_b %d %dx%dx%d: row %d alone differs from the same row among %d",
                      dae_isa_name(isa), tb, m, n, k, i, m);
        }
        free(a), free(b), free(bias), free(all), free(one);
    }
}

Test(layers, gemm_bias_rows_do_not_depend_on_the_batch) {
    cr_assert(on_every_isa(0, rows_alone_vs_among_others, NULL) >= 1);
}

/* DAE_ISA's names parse; an unknown one is refused. */
Test(layers, isa_names_parse) {
    for (int isa = 0; isa < DAE_ISA_COUNT; isa++) {
        dae_isa got;
        cr_assert_eq(dae_isa_parse(dae_isa_name((dae_isa)isa), &got), 0);
        cr_assert_eq(got, isa);
    }
    dae_isa got;
    cr_assert_eq(dae_isa_parse("avx1024", &got), -1);
    cr_assert(dae_isa_supported(DAE_ISA_SSE2));
}

/* The tensor name's shape as (batch, c, plane) of an NCHW fixture. */
static void nchw_dims(const dae_st_tensor *t, int *batch, int *c, size_t *plane) {
    *batch = (int)t->shape[0], *c = (int)t->shape[1];
    *plane = (size_t)(t->shape[2] * t->shape[3]);
}

/* An NCHW fixture tensor in the engine's NHWC layout (malloc'd). */
static float *fixture_nhwc(const dae_st_file *f, const char *name) {
    const dae_st_tensor *t = fixture_tensor(f, name);
    int batch, c;
    size_t plane;
    nchw_dims(t, &batch, &c, &plane);
    float *out = malloc(t->numel * sizeof(float));
    nchw_to_nhwc(out, t->data, batch, c, plane);
    return out;
}

/* Concatenation of a (2,3,5,4) and a (2,2,5,4) tensor along channels. */
Test(layers, concat_matches_pytorch) {
    dae_st_file f = {0};
    fixture_load(FIXTURES "/ref/graph_ops.safetensors", &f);
    const dae_st_tensor *ta = fixture_tensor(&f, "concat.a"), *tb = fixture_tensor(&f, "concat.b");
    int batch, ca, cb;
    size_t plane;
    nchw_dims(ta, &batch, &ca, &plane);
    nchw_dims(tb, &batch, &cb, &plane);
    float *a = fixture_nhwc(&f, "concat.a"), *b = fixture_nhwc(&f, "concat.b");
    float *y_want = fixture_nhwc(&f, "concat.y"), *dy = fixture_nhwc(&f, "concat.dy");
    float *da_want = fixture_nhwc(&f, "concat.da"), *db_want = fixture_nhwc(&f, "concat.db");
    size_t pixels = plane * (size_t)batch, ny = pixels * (size_t)(ca + cb);
    float *y = malloc(ny * 4), *da = malloc(ta->numel * 4), *db = malloc(tb->numel * 4);
    const float *ins[2] = {a, b};
    int channels[2] = {ca, cb};
    dae_concat_forward(y, ins, channels, 2, pixels);
    assert_close(y, y_want, ny, 0.0, "concat forward");
    dae_concat_backward(da, dy, pixels, ca + cb, 0, ca, 0);
    dae_concat_backward(db, dy, pixels, ca + cb, ca, cb, 0);
    assert_close(da, da_want, ta->numel, 0.0, "concat da");
    assert_close(db, db_want, tb->numel, 0.0, "concat db");
    /* accumulate adds to what is there: twice the gradient */
    dae_concat_backward(da, dy, pixels, ca + cb, 0, ca, 1);
    for (size_t i = 0; i < ta->numel; i++) cr_assert_float_eq(da[i], 2 * da_want[i], 1e-6);
    free(a), free(b), free(y_want), free(dy), free(da_want), free(db_want), free(y), free(da), free(db);
    dae_st_free(&f);
}

/* The sum of three tensors, and the gradient each receives. */
Test(layers, add_matches_pytorch) {
    dae_st_file f = {0};
    fixture_load(FIXTURES "/ref/graph_ops.safetensors", &f);
    const dae_st_tensor *y_want = fixture_tensor(&f, "add.y");
    size_t n = y_want->numel;
    const float *ins[3] = {fixture_tensor(&f, "add.a")->data, fixture_tensor(&f, "add.b")->data,
                           fixture_tensor(&f, "add.c")->data};
    float *y = malloc(n * 4);
    dae_add_forward(y, ins, 3, n);
    assert_close(y, y_want->data, n, 1e-6, "add forward");
    /* PyTorch hands every input the output's gradient unchanged. */
    const char *grads[] = {"add.da", "add.db", "add.dc"};
    for (int k = 0; k < 3; k++)
        assert_close(fixture_tensor(&f, grads[k])->data, fixture_tensor(&f, "add.dy")->data, n, 0.0, grads[k]);
    free(y);
    dae_st_free(&f);
}

/* clamp(x - f, 0, 1) and its gradient with respect to f, including the
 * points exactly at the bounds. */
Test(layers, residual_output_matches_pytorch) {
    dae_st_file f = {0};
    fixture_load(FIXTURES "/ref/graph_ops.safetensors", &f);
    const dae_st_tensor *x = fixture_tensor(&f, "residual.x");
    size_t n = x->numel;
    const float *pred = fixture_tensor(&f, "residual.f")->data;
    float *y = malloc(n * 4), *df = malloc(n * 4);
    dae_residual_forward(y, x->data, pred, n);
    assert_close(y, fixture_tensor(&f, "residual.y")->data, n, 0.0, "residual forward");
    dae_residual_backward(df, fixture_tensor(&f, "residual.dy")->data, x->data, pred, n);
    assert_close(df, fixture_tensor(&f, "residual.df")->data, n, 0.0, "residual df");
    free(y), free(df);
    dae_st_free(&f);
}

/* A product of two matrices side by side, each read where it lies, is the
 * bits of the product of the joined matrix on every ISA: what lets
 * inference skip a concatenation's copy. The U-Net's three shapes, ragged
 * columns, and one too long for the padded copy of ragged columns, where
 * the BLAS runs and only the tolerance holds. */
static void split_vs_joined(dae_isa isa, dae_rng *r, void *ctx) {
    static const int shapes[][4] = {{196, 144, 16, 16}, {49, 144, 32, 32}, {784, 16, 16, 1},
                                    {37, 20, 5, 9},     {9, 1, 1, 1},      {10, 33, 300, 300}};
    (void)ctx;
    for (int t = 0; t < 60; t++) {
        int m, n, k1, k2, ns = (int)(sizeof shapes / sizeof shapes[0]);
        if (t < ns) m = shapes[t][0], n = shapes[t][1], k1 = shapes[t][2], k2 = shapes[t][3];
        else {
            m = 1 + (int)dae_rng_below(r, 60), n = 1 + (int)dae_rng_below(r, 80);
            k1 = 1 + (int)dae_rng_below(r, 70), k2 = 1 + (int)dae_rng_below(r, 70);
        }
        int k = k1 + k2, relu = t % 2;
        float *a1 = uniform_floats((size_t)m * k1, -1, 1, 300 + (uint64_t)t, 1);
        float *a2 = uniform_floats((size_t)m * k2, -1, 1, 300 + (uint64_t)t, 2);
        float *b = uniform_floats((size_t)k * n, -1, 1, 300 + (uint64_t)t, 3);
        float *bias = uniform_floats((size_t)n, -1, 1, 300 + (uint64_t)t, 4);
        float *joined = malloc(sizeof(float) * m * k), *c1 = malloc(sizeof(float) * m * n),
              *c2 = malloc(sizeof(float) * m * n);
        for (int i = 0; i < m; i++) {
            memcpy(joined + (size_t)i * k, a1 + (size_t)i * k1, sizeof(float) * k1);
            memcpy(joined + (size_t)i * k + k1, a2 + (size_t)i * k2, sizeof(float) * k2);
        }
        dae_gemm_bias(0, m, n, k, joined, k, b, n, c1, n, bias, relu);
        dae_gemm_bias_split(m, n, k1, a1, k1, k2, a2, k2, b, n, c2, n, bias, relu);
        if (dae_gemm_bias_path(0, n, k) == DAE_GEMM_BROADCAST)
            cr_assert(memcmp(c1, c2, sizeof(float) * m * n) == 0, "%s %dx%dx(%d+%d): split differs from joined",
                      dae_isa_name(isa), m, n, k1, k2);
        else
            assert_close(c2, c1, (size_t)m * n, 1e-4, "BLAS split");
        free(a1), free(a2), free(b), free(bias), free(joined), free(c1), free(c2);
    }
}

Test(layers, gemm_bias_split_equals_the_joined_product_on_every_isa) {
    cr_assert(on_every_isa(78, split_vs_joined, NULL) >= 1);
}

/* The forwards on the two parts where they lie equal the forwards on the
 * concatenated input bit for bit (for_each_split's cases). */
static void forward_split_vs_joined(const split_case *c) {
    dae_conv_geom g = c->g;
    const int *channels = c->channels;
    split_data d = split_data_new(c, 400);
    size_t out_n = d.out_n;
    const float *x = d.x, *w = d.w, *b = d.extra;
    const float *const *parts = d.parts;
    float *col = d.col;
    float *y1 = malloc(sizeof(float) * out_n), *y2 = malloc(sizeof(float) * out_n);
    int relu = c->t % 3 == 0;
    if (c->transposed) {
        dae_conv_transpose2d_forward(y1, x, w, NULL, b, &g, relu, col);
        dae_conv_transpose2d_forward_parts(y2, parts, channels, 2, w, NULL, b, &g, relu, col);
    } else {
        dae_conv2d_forward(y1, x, w, NULL, b, &g, relu, col);
        dae_conv2d_forward_parts(y2, parts, channels, 2, w, NULL, b, &g, relu, col);
    }
    cr_assert(memcmp(y1, y2, sizeof(float) * out_n) == 0,
              "%s %d+%d channels in, %d out, k %dx%d, stride %dx%d: parts differ from the concatenation",
              c->transposed ? "convT" : "conv", channels[0], channels[1], g.out_c, g.k_h, g.k_w, g.stride_h,
              g.stride_w);
    free(y1), free(y2);
    split_data_free(&d);
}

Test(layers, forward_parts_equal_the_forward_on_the_concatenation) {
    int ran[2];
    for_each_split(79, 300, forward_split_vs_joined, ran);
    cr_assert(ran[0] >= 20 && ran[1] >= 100, "conv2d %d, convT %d geometries", ran[0], ran[1]);
}
