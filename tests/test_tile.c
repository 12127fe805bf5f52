/* test_tile.c - tiling and blending: a tile-sized image is exactly one
 * forward pass; any size comes back the same size; an identity network
 * gives the input back (tile placement, mirror padding and the weight
 * normalisation all right); a 3x3 box-filter network gives the whole-image
 * convolution (the window hides tile edges); colour and alpha; batching
 * tiles of several planes through one pass; the denoising pipeline in
 * ranges that span channels. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gemm.h"
#include "pages.h"
#include "rng.h"
#include "test_util.h"
#include "tile.h"

/* A one-layer network: a conv2d over a tile of h x w with a k x k kernel
 * (padding k/2) whose weights are all weight and whose bias is bias. */
static void one_conv_model(dae_model *m, int h, int w, int k, float weight, float bias) {
    char spec[256], err[DAE_ERR_LEN] = "";
    snprintf(spec, sizeof spec,
             "{\"input\":[1,%d,%d],\"layers\":[{\"type\":\"conv2d\",\"in_channels\":1,\"out_channels\":1,"
             "\"kernel_size\":%d,\"padding\":%d}]}",
             h, w, k, k / 2);
    cr_assert_eq(dae_model_init(m, spec, err, sizeof err), DAE_OK, "%s", err);
    cr_assert_eq(m->n_params, (size_t)k * k + 1);
    for (int i = 0; i < k * k; i++) m->params[i] = weight;
    m->params[k * k] = bias;
    dae_model_params_changed(m);
}

static void default_model(dae_model *m) {
    char err[DAE_ERR_LEN] = "";
    cr_assert_eq(dae_model_init(m, dae_model_default_spec(), err, sizeof err), DAE_OK, "%s", err);
    dae_model_init_params(m, 11);
}

static float *random_plane(int w, int h, uint64_t seed) {
    float *p = malloc(sizeof(float) * (size_t)w * h);
    dae_rng r;
    dae_rng_seed(&r, seed, 3);
    for (int i = 0; i < w * h; i++) p[i] = dae_rng_uniform(&r);
    return p;
}

/* Denoises a w x h plane on the calling thread with a workspace of batch
 * max_batch; returns the new output plane. */
static float *denoise(const dae_model *m, const float *in, int w, int h, int max_batch) {
    dae_workspace *ws = dae_workspace_new(m, max_batch, 0);
    cr_assert_not_null(ws);
    float *out = malloc(sizeof(float) * (size_t)w * h);
    char err[DAE_ERR_LEN] = "";
    cr_assert_eq(dae_denoise_plane(m, NULL, &ws, in, out, w, h, err, sizeof err), DAE_OK, "%s", err);
    dae_workspace_free(ws);
    return out;
}

Test(tile, one_tile_is_bit_identical_to_the_forward_pass) {
    dae_model m;
    default_model(&m);
    float *in = random_plane(28, 28, 1);
    float want[28 * 28];
    dae_workspace *ws = dae_workspace_new(&m, 1, 0);
    dae_model_forward(&m, ws, in, want, 1);
    dae_workspace_free(ws);
    float *got = denoise(&m, in, 28, 28, 16);
    cr_assert_arr_eq(got, want, sizeof want, "a 28x28 plane must be exactly one forward pass");
    free(got);

    /* The same through a pool of two threads. */
    dae_gemm_single_threaded();
    dae_pool *pool = dae_pool_new(2);
    dae_workspace *wss[2] = {dae_workspace_new(&m, 4, 0), dae_workspace_new(&m, 4, 0)};
    float out[28 * 28];
    char err[DAE_ERR_LEN] = "";
    cr_assert_eq(dae_denoise_plane(&m, pool, wss, in, out, 28, 28, err, sizeof err), DAE_OK, "%s", err);
    cr_assert_arr_eq(out, want, sizeof want);
    dae_workspace_free(wss[0]);
    dae_workspace_free(wss[1]);
    dae_pool_free(pool);
    free(in);
    dae_model_free(&m);
}

Test(tile, any_size_comes_back_the_same_size_in_range) {
    dae_model m;
    default_model(&m);
    static const int sizes[][2] = {{1, 1}, {27, 29}, {28, 28}, {300, 200}, {29, 28}, {1, 100}, {57, 2}};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        int w = sizes[s][0], h = sizes[s][1];
        float *in = random_plane(w, h, (uint64_t)s);
        /* Guard cells after the plane catch writes past its end. */
        float *out = malloc(sizeof(float) * ((size_t)w * h + 8));
        for (int i = 0; i < 8; i++) out[w * h + i] = -7.0f;
        dae_workspace *ws = dae_workspace_new(&m, 32, 0);
        char err[DAE_ERR_LEN] = "";
        cr_assert_eq(dae_denoise_plane(&m, NULL, &ws, in, out, w, h, err, sizeof err), DAE_OK, "%dx%d: %s", w, h,
                     err);
        for (int i = 0; i < w * h; i++)
            cr_assert(out[i] >= 0.0f && out[i] <= 1.0f, "%dx%d: pixel %d is %g", w, h, i, (double)out[i]);
        for (int i = 0; i < 8; i++) cr_assert_eq(out[w * h + i], -7.0f, "%dx%d: wrote past the end", w, h);
        dae_workspace_free(ws);
        free(in);
        free(out);
    }
    dae_model_free(&m);
}

Test(tile, grid_geometry) {
    dae_model m;
    default_model(&m);
    dae_tile_plan p;
    char err[DAE_ERR_LEN] = "";
    cr_assert_eq(dae_tile_plan_init(&p, &m, 300, 200, err, sizeof err), DAE_OK, "%s", err);
    cr_assert_eq(p.stride_x, 14);
    cr_assert_eq(p.cols, 21); /* ceil(272 / 14) + 1: origins 0, 13.6, 27.2, ... rounded, to 272 */
    cr_assert_eq(p.rows, 14); /* ceil(172 / 14) + 1: 0, 13.23, ... to 172 */
    cr_assert_eq(p.count, 21 * 14);
    int x, y, prev = -1;
    for (int i = 0; i < p.cols; i++) {
        dae_tile_origin(&p, i, &x, &y);
        cr_assert_eq(y, 0);
        cr_assert(x > prev && (prev < 0 || x - prev <= 14), "origin %d after %d", x, prev);
        prev = x;
    }
    dae_tile_origin(&p, 19, &x, &y);
    cr_assert_eq(x, 258); /* 19 * 272 / 20 = 258.4 */
    dae_tile_origin(&p, 21, &x, &y);
    cr_assert_eq(x, 0);
    cr_assert_eq(y, 13);
    dae_tile_origin(&p, p.count - 1, &x, &y);
    cr_assert_eq(x, 272);
    cr_assert_eq(y, 172);
    dae_tile_plan_free(&p);

    cr_assert_eq(dae_tile_plan_init(&p, &m, 1, 1, err, sizeof err), DAE_OK);
    cr_assert_eq(p.count, 1);
    dae_tile_origin(&p, 0, &x, &y);
    cr_assert_eq(x, -13, "a 1x1 plane sits in the middle of its tile");
    cr_assert_eq(p.win_x[0], 1.0f);
    cr_assert_eq(p.inv_x[0], 1.0f);
    dae_tile_plan_free(&p);

    cr_assert_eq(dae_tile_plan_init(&p, &m, 0, 5, err, sizeof err), DAE_ERR_INVALID);
    cr_assert_null(p.buffer_);
    dae_model_free(&m);

    /* A model with a 3-channel input cannot tile planes. */
    dae_model rgb;
    cr_assert_eq(dae_model_init(&rgb,
                                "{\"input\":[3,8,8],\"layers\":[{\"type\":\"conv2d\",\"in_channels\":3,"
                                "\"out_channels\":3,\"kernel_size\":1}]}",
                                err, sizeof err),
                 DAE_OK, "%s", err);
    cr_assert_eq(dae_tile_plan_init(&p, &rgb, 10, 10, err, sizeof err), DAE_ERR_INVALID);
    cr_assert(strstr(err, "single-channel") != NULL);
    dae_model_free(&rgb);
}

/* The identity network must give back every plane exactly (up to float
 * rounding in the normalisation): any misplaced tile, bad mirror index or
 * wrong weight sum shows. Tiles of 28, 16 and an odd 13x15. */
Test(tile, identity_network_gives_the_input_back) {
    static const int tiles[][2] = {{28, 28}, {16, 16}, {13, 15}};
    static const int sizes[][2] = {{1, 1}, {27, 29}, {28, 28}, {300, 200}, {29, 31}, {5, 90}, {101, 3}};
    for (size_t t = 0; t < 3; t++) {
        dae_model m;
        one_conv_model(&m, tiles[t][0], tiles[t][1], 1, 1.0f, 0.0f);
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
            int w = sizes[s][0], h = sizes[s][1];
            float *in = random_plane(w, h, 100 + s);
            float *out = denoise(&m, in, w, h, 7);
            char what[64];
            snprintf(what, sizeof what, "tile %dx%d, plane %dx%d", tiles[t][0], tiles[t][1], w, h);
            assert_close(out, in, (size_t)w * h, 1e-6, what);
            free(in);
            free(out);
        }
        dae_model_free(&m);
    }
}

Test(tile, constant_network_gives_a_seamless_constant) {
    dae_model m;
    one_conv_model(&m, 28, 28, 1, 0.0f, 0.3f);
    float *in = random_plane(250, 130, 4);
    float *out = denoise(&m, in, 250, 130, 64);
    for (int i = 0; i < 250 * 130; i++) cr_assert_float_eq(out[i], 0.3f, 1e-6, "pixel %d: %g", i, (double)out[i]);
    free(in);
    free(out);
    dae_model_free(&m);
}

/* A 3x3 box filter with zero padding is wrong at every tile edge (it sees
 * zeros there instead of the neighbours). The blend window must hide
 * that: the result must match the box filter over the whole image, whose
 * zero padding is at the image border, where the tiles' padding also is. */
Test(tile, window_hides_tile_edges) {
    dae_model m;
    one_conv_model(&m, 28, 28, 3, 1.0f / 9.0f, 0.0f);
    const int w = 97, h = 75;
    float *in = random_plane(w, h, 8);
    float *out = denoise(&m, in, w, h, 16);
    double worst = 0.0;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            double sum = 0.0;
            for (int dy = -1; dy <= 1; dy++)
                for (int dx = -1; dx <= 1; dx++)
                    if (y + dy >= 0 && y + dy < h && x + dx >= 0 && x + dx < w) sum += in[(y + dy) * w + x + dx];
            double d = fabs(sum / 9.0 - out[y * w + x]);
            if (d > worst) worst = d;
        }
    /* A tile edge carries weight ~0.003 against ~1 for the tile it sits in
     * the middle of (measured: 0.0019); flat weights give 0.24. */
    cr_assert_lt(worst, 4e-3, "largest error %g", worst);
    free(in);
    free(out);
    dae_model_free(&m);
}

Test(tile, pool_gives_the_same_result) {
    dae_model m;
    default_model(&m);
    float *in = random_plane(90, 61, 9);
    float *want = denoise(&m, in, 90, 61, 64);
    dae_gemm_single_threaded();
    dae_pool *pool = dae_pool_new(2);
    dae_workspace *wss[2] = {dae_workspace_new(&m, 5, 0), dae_workspace_new(&m, 3, 0)};
    float *got = malloc(sizeof(float) * 90 * 61);
    char err[DAE_ERR_LEN] = "";
    cr_assert_eq(dae_denoise_plane(&m, pool, wss, in, got, 90, 61, err, sizeof err), DAE_OK, "%s", err);
    assert_close(got, want, 90 * 61, 1e-6, "pool vs one thread");
    dae_workspace_free(wss[0]);
    dae_workspace_free(wss[1]);
    dae_pool_free(pool);
    free(in);
    free(want);
    free(got);
    dae_model_free(&m);
}

/* Tiles of two planes of different sizes share one forward pass, as the
 * server batches requests; each plane comes out as when done alone. */
Test(tile, tiles_of_two_planes_share_one_batch) {
    dae_model m;
    default_model(&m);
    const int w1 = 40, h1 = 30, w2 = 17, h2 = 50;
    float *a = random_plane(w1, h1, 21), *b = random_plane(w2, h2, 22);
    dae_tile_plan pa, pb;
    char err[DAE_ERR_LEN] = "";
    cr_assert_eq(dae_tile_plan_init(&pa, &m, w1, h1, err, sizeof err), DAE_OK);
    cr_assert_eq(dae_tile_plan_init(&pb, &m, w2, h2, err, sizeof err), DAE_OK);
    int n = pa.count + pb.count;
    size_t tile = 28 * 28;
    float *batch = malloc(sizeof(float) * tile * n), *outs = malloc(sizeof(float) * tile * n);
    /* Interleave: b's tiles first, then a's. */
    dae_tile_extract(&pb, b, 0, pb.count, batch);
    dae_tile_extract(&pa, a, 0, pa.count, batch + tile * pb.count);
    dae_workspace *ws = dae_workspace_new(&m, n, 0);
    dae_model_forward(&m, ws, batch, outs, n);
    float *acc_a = calloc((size_t)w1 * h1, sizeof(float)), *acc_b = calloc((size_t)w2 * h2, sizeof(float));
    /* Accumulate in two pieces to show ranges work. */
    dae_tile_accumulate(&pa, outs + tile * pb.count, 0, 2, acc_a);
    dae_tile_accumulate(&pa, outs + tile * (pb.count + 2), 2, pa.count - 2, acc_a);
    dae_tile_accumulate(&pb, outs, 0, pb.count, acc_b);
    dae_tile_finish(&pa, acc_a);
    dae_tile_finish(&pb, acc_b);
    float *want_a = denoise(&m, a, w1, h1, 3), *want_b = denoise(&m, b, w2, h2, 64);
    assert_close(acc_a, want_a, (size_t)w1 * h1, 1e-6, "plane a");
    assert_close(acc_b, want_b, (size_t)w2 * h2, 1e-6, "plane b");
    dae_workspace_free(ws);
    dae_tile_plan_free(&pa);
    dae_tile_plan_free(&pb);
    free(a), free(b), free(batch), free(outs), free(acc_a), free(acc_b), free(want_a), free(want_b);
    dae_model_free(&m);
}

/* ------------------------------------------------------------ images */

static dae_image random_image(int w, int h, int channels, uint64_t seed) {
    dae_image img;
    char err[DAE_ERR_LEN] = "";
    cr_assert_eq(dae_image_alloc(&img, w, h, channels, err, sizeof err), DAE_OK);
    dae_rng r;
    dae_rng_seed(&r, seed, 0);
    for (size_t i = 0; i < (size_t)w * h * channels; i++) img.pixels[i] = (uint8_t)dae_rng_below(&r, 256);
    return img;
}

Test(tile, colour_channels_are_independent_gray_planes_and_alpha_passes) {
    dae_model m;
    default_model(&m);
    dae_workspace *ws = dae_workspace_new(&m, 16, 0);
    char err[DAE_ERR_LEN] = "";
    const int w = 45, h = 33;
    dae_image rgba = random_image(w, h, 4, 5);
    /* Gray images holding each colour channel alone. */
    dae_image gray[3], gray_out[3];
    for (int c = 0; c < 3; c++) {
        cr_assert_eq(dae_image_alloc(&gray[c], w, h, 1, err, sizeof err), DAE_OK);
        for (int i = 0; i < w * h; i++) gray[c].pixels[i] = rgba.pixels[i * 4 + c];
        cr_assert_eq(dae_denoise_image(&m, NULL, &ws, &gray[c], &gray_out[c], err, sizeof err), DAE_OK, "%s", err);
        cr_assert_eq(gray_out[c].channels, 1);
    }
    dae_image out;
    cr_assert_eq(dae_denoise_image(&m, NULL, &ws, &rgba, &out, err, sizeof err), DAE_OK, "%s", err);
    cr_assert_eq(out.width, w);
    cr_assert_eq(out.height, h);
    cr_assert_eq(out.channels, 4);
    int changed = 0;
    for (int i = 0; i < w * h; i++) {
        for (int c = 0; c < 3; c++) {
            cr_assert_eq(out.pixels[i * 4 + c], gray_out[c].pixels[i], "pixel %d channel %d", i, c);
            changed += out.pixels[i * 4 + c] != rgba.pixels[i * 4 + c];
        }
        cr_assert_eq(out.pixels[i * 4 + 3], rgba.pixels[i * 4 + 3], "alpha of pixel %d", i);
    }
    cr_assert_gt(changed, w * h, "the model did something");
    dae_image_free(&out);

    /* Gray + alpha and RGB keep their channel count. */
    dae_image ga = random_image(20, 20, 2, 6), rgb = random_image(30, 10, 3, 7);
    cr_assert_eq(dae_denoise_image(&m, NULL, &ws, &ga, &out, err, sizeof err), DAE_OK);
    cr_assert_eq(out.channels, 2);
    for (int i = 0; i < 400; i++) cr_assert_eq(out.pixels[i * 2 + 1], ga.pixels[i * 2 + 1]);
    dae_image_free(&out);
    cr_assert_eq(dae_denoise_image(&m, NULL, &ws, &rgb, &out, err, sizeof err), DAE_OK);
    cr_assert_eq(out.channels, 3);
    dae_image_free(&out);

    for (int c = 0; c < 3; c++) dae_image_free(&gray[c]), dae_image_free(&gray_out[c]);
    dae_image_free(&ga);
    dae_image_free(&rgb);
    dae_image_free(&rgba);
    dae_workspace_free(ws);
    dae_model_free(&m);
}

Test(tile, identity_network_keeps_8_bit_images_exactly) {
    dae_model m;
    one_conv_model(&m, 28, 28, 1, 1.0f, 0.0f);
    dae_workspace *ws = dae_workspace_new(&m, 8, 0);
    char err[DAE_ERR_LEN] = "";
    dae_image img = random_image(61, 47, 4, 12), out;
    cr_assert_eq(dae_denoise_image(&m, NULL, &ws, &img, &out, err, sizeof err), DAE_OK, "%s", err);
    cr_assert_arr_eq(out.pixels, img.pixels, (size_t)61 * 47 * 4);
    dae_image_free(&out);
    dae_image_free(&img);
    dae_workspace_free(ws);
    dae_model_free(&m);
}

/* The pipeline driven in ranges that span channels, extracted and
 * accumulated in pieces as the server's batcher drives it, gives the
 * bytes dae_denoise_image gives (one tile per forward pass on both sides,
 * so the passes are the same). */
Test(tile, pipeline_in_ranges_spanning_channels_matches_denoise_image) {
    dae_model m;
    default_model(&m);
    dae_workspace *ws = dae_workspace_new(&m, 1, 0);
    char err[DAE_ERR_LEN] = "";
    const int w = 45, h = 33;
    const size_t bytes = (size_t)w * h * 4, tile = 28 * 28;
    dae_image in = random_image(w, h, 4, 31), want, img;
    cr_assert_eq(dae_denoise_image(&m, NULL, &ws, &in, &want, err, sizeof err), DAE_OK, "%s", err);
    cr_assert_eq(dae_image_alloc(&img, w, h, 4, err, sizeof err), DAE_OK);
    memcpy(img.pixels, in.pixels, bytes);
    dae_denoise_pipe p;
    cr_assert_eq(dae_denoise_begin(&p, &m, &img, err, sizeof err), DAE_OK, "%s", err);
    cr_assert_eq(p.colours, 3);
    cr_assert_eq(p.plan.count, 6);
    cr_assert_eq(p.tiles, 3 * p.plan.count);
    enum { STEP = 5 }; /* does not divide a plane's 6 tiles: ranges span channels */
    float *tiles = malloc(sizeof(float) * tile * STEP), *outs = malloc(sizeof(float) * tile * STEP);
    for (int first = 0; first < p.tiles; first += STEP) {
        int n = p.tiles - first < STEP ? p.tiles - first : STEP, half = n / 2;
        dae_denoise_extract(&p, first, n, tiles);
        for (int k = 0; k < n; k++) dae_model_forward(&m, ws, tiles + k * tile, outs + k * tile, 1);
        dae_denoise_accumulate(&p, first, half, outs);
        dae_denoise_accumulate(&p, first + half, n - half, outs + half * tile);
    }
    dae_denoise_finish(&p);
    cr_assert_null(p.acc, "finish frees the planes");
    cr_assert_arr_eq(img.pixels, want.pixels, bytes);
    dae_denoise_free(&p);
    dae_denoise_free(&p); /* safe twice */
    free(tiles), free(outs);
    dae_image_free(&img);
    dae_image_free(&want);
    dae_image_free(&in);
    dae_workspace_free(ws);
    dae_model_free(&m);
}

/* The denoiser's planes and the image buffers ask for their pages at once
 * (pages.h): that keeps what a buffer holds, wherever it starts and ends,
 * and a buffer too small, or none, is left alone. */
Test(pages, prefault_keeps_what_a_buffer_holds) {
    size_t n = (size_t)1 << 20;
    unsigned char *b = malloc(n + 3);
    cr_assert_not_null(b);
    for (size_t i = 0; i < n + 3; i++) b[i] = (unsigned char)(i * 131 + 7);
    dae_prefault(b + 3, n);        /* not page-aligned at either end */
    dae_prefault(b, DAE_PREFAULT_MIN - 1);
    dae_prefault(NULL, n);
    for (size_t i = 0; i < n + 3; i++) cr_assert_eq(b[i], (unsigned char)(i * 131 + 7), "byte %zu changed", i);
    free(b);
}
