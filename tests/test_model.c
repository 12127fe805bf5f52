/* test_model.c - architecture specs, parameter layout and initialisation,
 * whole training steps against PyTorch, Adam, and weights files. */
#include <criterion/criterion.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <unistd.h>

#include "adam.h"
#include "gemm.h"
#include "model.h"
#include "modelfile.h"
#include "test_util.h"

static void build_default(dae_model *m) {
    char err[DAE_ERR_LEN] = "";
    cr_assert_eq(dae_model_init(m, dae_model_default_spec(), err, sizeof err), DAE_OK, "%s", err);
}

Test(model, default_spec_is_the_reference_network) {
    dae_model m;
    build_default(&m);
    cr_assert_eq(m.n_layers, 11);
    cr_assert_eq(dae_model_tensor_count(&m), 12);
    /* 160 + 4640 + 100416 + 100384 + 4624 + 145 */
    cr_assert_eq(m.n_params, 210369);
    static const char *const names[] = {"encoder.0.weight", "encoder.0.bias", "encoder.2.weight",
                                        "encoder.2.bias", "encoder.4.weight", "encoder.4.bias",
                                        "decoder.0.weight", "decoder.0.bias", "decoder.2.weight",
                                        "decoder.2.bias", "decoder.4.weight", "decoder.4.bias"};
    static const int64_t shapes[12][4] = {{16, 1, 3, 3}, {16}, {32, 16, 3, 3}, {32}, {64, 32, 7, 7}, {64},
                                          {64, 32, 7, 7}, {32}, {32, 16, 3, 3}, {16}, {16, 1, 3, 3}, {1}};
    for (int i = 0; i < 12; i++) {
        char name[64];
        int ndim;
        int64_t shape[4];
        size_t offset, count;
        dae_model_tensor_info(&m, i, name, sizeof name, &ndim, shape, &offset, &count);
        cr_assert_str_eq(name, names[i]);
        for (int d = 0; d < ndim; d++) cr_assert_eq(shape[d], shapes[i][d], "%s dim %d", name, d);
    }
    cr_assert_float_eq(dae_model_forward_macs(&m), 708736.0, 0.5);
    /* The canonical spec parses back to the same network. */
    dae_model again;
    char err[DAE_ERR_LEN];
    cr_assert_eq(dae_model_init(&again, m.spec, err, sizeof err), DAE_OK, "%s", err);
    cr_assert_str_eq(again.spec, m.spec);
    dae_model_free(&again);
    dae_model_free(&m);
}

/* The U-Net of the built-in "unet" spec: the shape the issue gives. */
Test(model, unet_spec_is_the_skip_network) {
    dae_model m;
    char err[DAE_ERR_LEN] = "";
    cr_assert_eq(dae_model_init(&m, dae_model_named_spec("unet"), err, sizeof err), DAE_OK, "%s", err);
    cr_assert_eq(m.n_params, 219610);
    cr_assert(m.residual);
    cr_assert_eq(dae_model_tensor_count(&m), 14);
    /* 3.86 MFLOP: 1.93 M multiply-adds */
    cr_assert_float_eq(dae_model_forward_macs(&m), 1929424.0, 0.5);
    cr_assert_eq(m.n_layers, 15);
    const dae_layer *out_concat = &m.layers[13];
    cr_assert_str_eq(out_concat->name, "out.0");
    cr_assert_eq(out_concat->kind, DAE_LAYER_CONCAT);
    cr_assert_eq(out_concat->n_inputs, 2);
    cr_assert_str_eq(m.layers[out_concat->inputs[0]].name, "d1.2");
    cr_assert_eq(out_concat->inputs[1], DAE_NETWORK_INPUT);
    cr_assert_eq(out_concat->out_c, 17);
    /* e1's ReLU is read by e2 and by d1's concat, so it keeps its own
     * memory only if the conv's output has other readers: here it has not. */
    cr_assert(m.layers[1].in_place && m.layers[0].relu_fused);
    dae_model again;
    cr_assert_eq(dae_model_init(&again, m.spec, err, sizeof err), DAE_OK, "%s", err);
    cr_assert_str_eq(again.spec, m.spec);
    cr_assert_null(dae_model_named_spec("resnet"));
    dae_model_free(&again);
    dae_model_free(&m);
}

/* Graph specs that cannot work are refused, naming the layer and why. */
Test(model, bad_graph_specs_are_rejected_with_the_reason) {
#define CONV11 "{\"type\":\"conv2d\",\"in_channels\":1,\"out_channels\":1,\"kernel_size\":1}"
    static const struct { const char *spec, *needle; } cases[] = {
        {"{\"a\":[" CONV11 ",{\"type\":\"relu\",\"inputs\":[\"b\"]}]}", "a.1: input \"b\" is neither"},
        {"{\"a\":[" CONV11 ",{\"type\":\"relu\",\"inputs\":[\"a.1\"]}]}", "a.1: input \"a.1\""},
        {"{\"a\":[" CONV11 ",{\"type\":\"relu\",\"inputs\":[\"a\"]}]}", "a.1: input \"a\" is neither"},
        {"{\"a\":[" CONV11 "],\"b\":[{\"type\":\"concat\",\"inputs\":[\"a\"]}]}", "concat takes two or more"},
        {"{\"a\":[" CONV11 "],\"b\":[{\"type\":\"relu\",\"inputs\":[\"a\",\"input\"]}]}", "relu takes one input, not 2"},
        {"{\"a\":[{\"type\":\"conv2d\",\"in_channels\":1,\"out_channels\":2,\"kernel_size\":1},"
         "{\"type\":\"add\",\"inputs\":[\"a.0\",\"input\"]}]}", "add needs the same shape"},
        {"{\"a\":[{\"type\":\"conv2d\",\"in_channels\":1,\"out_channels\":1,\"kernel_size\":2,\"stride\":2},"
         "{\"type\":\"concat\",\"inputs\":[\"a.0\",\"input\"]}]}", "concat needs the same height and width"},
        {"{\"a\":[" CONV11 ",{\"type\":\"relu\",\"inputs\":[\"input\"]}]}", "a.0: its output is never used"},
        {"{\"a\":[" CONV11 "],\"b\":[{\"type\":\"relu\",\"inputs\":7}]}", "\"inputs\" must be a list"},
        {"{\"output\":\"noise\",\"a\":[" CONV11 "]}", "\"output\" must be \"direct\" or \"residual\""},
        {"{\"a\":[" CONV11 "],\"a\":[" CONV11 "]}", "group \"a\" is given twice"},
    };
#undef CONV11
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        dae_model m;
        char err[DAE_ERR_LEN] = "";
        cr_assert_eq(dae_model_init(&m, cases[i].spec, err, sizeof err), DAE_ERR_INVALID, "accepted %s",
                     cases[i].spec);
        cr_assert(strstr(err, cases[i].needle) != NULL, "spec %s: message \"%s\" lacks \"%s\"", cases[i].spec,
                  err, cases[i].needle);
        cr_assert_null(m.params);
    }
}

Test(model, bad_specs_are_rejected_with_the_reason) {
    static const struct { const char *spec, *needle; } cases[] = {
        {"{", "not valid JSON"},
        {"42", "object or list"},
        {"[]", "no layers"},
        {"[{\"type\":\"relu\"}]", "no convolution"},
        {"[{\"type\":\"dense\"}]", "unknown type"},
        {"[{\"type\":\"conv2d\",\"in_channels\":1,\"out_channels\":1,\"kernel_size\":3,\"padding\":1,\"strides\":1}]", "unknown field \"strides\""},
        {"[{\"type\":\"conv2d\",\"in_channels\":2,\"out_channels\":1,\"kernel_size\":3,\"padding\":1}]", "in_channels is 2"},
        {"[{\"type\":\"conv2d\",\"in_channels\":1,\"out_channels\":1,\"kernel_size\":3}]", "26x26"},
        {"[{\"type\":\"conv2d\",\"in_channels\":1,\"out_channels\":1,\"kernel_size\":0}]", "kernel_size"},
        {"[{\"type\":\"conv2d\",\"in_channels\":1,\"out_channels\":1,\"kernel_size\":[3,3,3]}]", "[h, w]"},
        {"[{\"type\":\"conv2d\",\"in_channels\":1,\"out_channels\":1,\"kernel_size\":3.5}]", "integer"},
        {"[{\"type\":\"conv2d\",\"in_channels\":1,\"out_channels\":1,\"kernel_size\":40}]", "output"},
        {"[{\"type\":\"conv_transpose2d\",\"in_channels\":1,\"out_channels\":1,\"kernel_size\":3,\"stride\":2,\"output_padding\":2}]", "smaller than stride"},
        {"[{\"type\":\"conv2d\",\"in_channels\":1,\"out_channels\":1,\"kernel_size\":1,\"output_padding\":1}]", "conv_transpose2d only"},
        {"{\"input\":[1,28],\"layers\":[]}", "\"input\""},
        {"{\"bad-name\":[{\"type\":\"relu\"}]}", "group name"},
        {"[{\"in_channels\":1}]", "missing \"type\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        dae_model m;
        char err[DAE_ERR_LEN] = "";
        cr_assert_eq(dae_model_init(&m, cases[i].spec, err, sizeof err), DAE_ERR_INVALID, "accepted %s",
                     cases[i].spec);
        cr_assert(strstr(err, cases[i].needle) != NULL, "spec %s: message \"%s\" lacks \"%s\"", cases[i].spec,
                  err, cases[i].needle);
        cr_assert_null(m.params);
    }
}

Test(model, other_architectures_build_and_run) {
    const char *spec = "{\"input\":[3,16,12],\"net\":[{\"type\":\"conv2d\",\"in_channels\":3,"
                       "\"out_channels\":8,\"kernel_size\":[3,5],\"stride\":2,\"padding\":[1,2]},"
                       "{\"type\":\"relu\"},{\"type\":\"conv_transpose2d\",\"in_channels\":8,"
                       "\"out_channels\":3,\"kernel_size\":[3,5],\"stride\":2,\"padding\":[1,2],"
                       "\"output_padding\":1},{\"type\":\"sigmoid\"}]}";
    dae_model m;
    char err[DAE_ERR_LEN] = "";
    cr_assert_eq(dae_model_init(&m, spec, err, sizeof err), DAE_OK, "%s", err);
    dae_model_init_params(&m, 1);
    dae_workspace *ws = dae_workspace_new(&m, 4, 1);
    size_t n = dae_model_image_size(&m) * 4;
    float *x = malloc(n * 4), *y = malloc(n * 4), *y2 = malloc(n * 4), *g = calloc(m.n_params, 4);
    for (size_t i = 0; i < n; i++) x[i] = (float)(i % 17) / 17.0f;
    double sse = dae_model_train_pass(&m, ws, x, x, 4, n, g, y);
    cr_assert(sse > 0.0 && isfinite(sse));
    dae_workspace *ws2 = dae_workspace_new(&m, 4, 0);
    dae_model_forward(&m, ws2, x, y2, 4);
    assert_close(y2, y, n, 0.0, "inference and training forward agree");
    free(x), free(y), free(y2), free(g);
    dae_workspace_free(ws);
    dae_workspace_free(ws2);
    dae_model_free(&m);
}

/* An image's outputs are the same bits alone and in batches of any size,
 * for both shipped networks: what the server's answers rest on (a
 * /denoise answer does not depend on what it was batched with, and a v2
 * batch equals the same images sent one by one). */
Test(model, outputs_do_not_depend_on_the_batch) {
    static const char *const archs[] = {"ae", "unet"};
    for (int a = 0; a < 2; a++) {
        dae_model m;
        char err[DAE_ERR_LEN] = "";
        cr_assert_eq(dae_model_init(&m, dae_model_named_spec(archs[a]), err, sizeof err), DAE_OK, "%s", err);
        dae_model_init_params(&m, 7);
        enum { N = 70 };
        size_t img = dae_model_image_size(&m);
        float *x = malloc(sizeof(float) * img * N), *all = malloc(sizeof(float) * img * N), *one = malloc(sizeof(float) * img);
        for (size_t i = 0; i < img * N; i++) x[i] = (float)((i * 2654435761u) % 1000) / 999.0f;
        dae_workspace *ws = dae_workspace_new(&m, N, 0);
        dae_model_forward(&m, ws, x, all, N);
        for (int i = 0; i < N; i++) {
            dae_model_forward(&m, ws, x + img * i, one, 1);
            cr_assert(memcmp(one, all + img * i, sizeof(float) * img) == 0,
                      "%s: image %d alone differs from the same image in a batch of %d", archs[a], i, N);
        }
        dae_workspace_free(ws);
        free(x), free(all), free(one);
        dae_model_free(&m);
    }
}

/* A copy of a model, and the model after its weights were written and
 * written back, answer as the model does: the weights the forward pass
 * prepares from params follow them (dae_model_params_changed). */
Test(model, prepared_weights_follow_the_params) {
    static const char *const archs[] = {"ae", "unet"};
    for (int a = 0; a < 2; a++) {
        dae_model m, copy;
        char err[DAE_ERR_LEN] = "";
        cr_assert_eq(dae_model_init(&m, dae_model_named_spec(archs[a]), err, sizeof err), DAE_OK, "%s", err);
        cr_assert_gt(m.n_prepared, 0, "%s prepares no weight", archs[a]);
        dae_model_init_params(&m, 11);
        cr_assert_eq(dae_model_clone(&copy, &m, err, sizeof err), DAE_OK, "%s", err);
        enum { N = 3 };
        size_t img = dae_model_image_size(&m);
        float *x = malloc(sizeof(float) * img * N), *y = malloc(sizeof(float) * img * N),
              *z = malloc(sizeof(float) * img * N), *saved = malloc(sizeof(float) * m.n_params);
        for (size_t i = 0; i < img * N; i++) x[i] = (float)((i * 2654435761u) % 1000) / 999.0f;
        dae_workspace *ws = dae_workspace_new(&m, N, 0);
        dae_model_forward(&m, ws, x, y, N);
        dae_model_forward(&copy, ws, x, z, N);
        cr_assert(memcmp(y, z, sizeof(float) * img * N) == 0, "%s: the copy answers otherwise", archs[a]);
        memcpy(saved, m.params, sizeof(float) * m.n_params);
        dae_model_init_params(&m, 12);
        dae_model_forward(&m, ws, x, z, N);
        cr_assert(memcmp(y, z, sizeof(float) * img * N) != 0, "%s: new weights, the same answer", archs[a]);
        memcpy(m.params, saved, sizeof(float) * m.n_params);
        dae_model_params_changed(&m);
        dae_model_forward(&m, ws, x, z, N);
        cr_assert(memcmp(y, z, sizeof(float) * img * N) == 0, "%s: its weights back, another answer", archs[a]);
        dae_workspace_free(ws);
        free(x), free(y), free(z), free(saved);
        dae_model_free(&copy);
        dae_model_free(&m);
    }
}

/* Inference multiplies the U-Net's concatenations' inputs where they lie,
 * and so does training, whose backward pass reads them there too; the
 * forward passes give the same bits. */
Test(model, inference_skips_the_concatenations_copies_with_the_same_bits) {
    dae_model m;
    char err[DAE_ERR_LEN] = "";
    cr_assert_eq(dae_model_init(&m, dae_model_named_spec("unet"), err, sizeof err), DAE_OK, "%s", err);
    dae_model_init_params(&m, 9);
    enum { N = 6 };
    size_t img = dae_model_image_size(&m);
    float *x = malloc(sizeof(float) * img * N), *inferred = malloc(sizeof(float) * img * N),
          *trained = malloc(sizeof(float) * img * N), *grads = calloc(m.n_params, sizeof(float));
    for (size_t i = 0; i < img * N; i++) x[i] = (float)((i * 2654435761u) % 1000) / 999.0f;
    dae_workspace *inference = dae_workspace_new(&m, N, 0), *training = dae_workspace_new(&m, N, 1);
    dae_model_forward(&m, inference, x, inferred, N);
    dae_model_train_pass(&m, training, x, x, N, img * N, grads, trained);
    cr_assert(memcmp(inferred, trained, sizeof(float) * img * N) == 0,
              "inference without the concatenations' copies differs from training's forward");
    dae_workspace_free(inference), dae_workspace_free(training);
    free(x), free(inferred), free(trained), free(grads);
    dae_model_free(&m);
}

Test(model, initialisation_follows_pytorch_bounds) {
    dae_model m;
    build_default(&m);
    dae_model_init_params(&m, 42);
    for (int i = 0; i < m.n_layers; i++) {
        const dae_layer *l = &m.layers[i];
        if (l->kind != DAE_LAYER_CONV2D && l->kind != DAE_LAYER_CONV_TRANSPOSE2D) continue;
        int fan_in = (l->kind == DAE_LAYER_CONV2D ? l->in_c : l->out_c) * l->k_h * l->k_w;
        double bound = 1.0 / sqrt(fan_in), lo = 0, hi = 0, sum_sq = 0;
        size_t n = l->weight_count + (size_t)l->out_c;
        for (size_t j = 0; j < n; j++) {
            double v = m.params[l->weight_offset + j];
            lo = fmin(lo, v), hi = fmax(hi, v), sum_sq += v * v;
        }
        cr_assert(lo >= -bound && hi <= bound, "%s outside +-%g", l->name, bound);
        if (n >= 1000) { /* U(-b, b) has variance b^2/3 */
            double var = sum_sq / n;
            cr_assert(fabs(var - bound * bound / 3) < 0.1 * bound * bound / 3, "%s variance %g", l->name, var);
        }
    }
    dae_model other;
    build_default(&other);
    dae_model_init_params(&other, 42);
    cr_assert_eq(memcmp(m.params, other.params, m.n_params * 4), 0, "same seed, same parameters");
    dae_model_free(&other);
    dae_model_free(&m);
}

/* Adam against PyTorch (AVX-512 multiplies by reciprocals where the
 * other instruction sets divide). */
static void adam_vs_pytorch(dae_isa isa, dae_rng *r, void *ctx) {
    (void)r, (void)ctx;
    dae_st_file f = {0};
    fixture_load(FIXTURES "/ref/adam.safetensors", &f);
    const dae_st_tensor *p0 = fixture_tensor(&f, "param0");
    size_t n = p0->numel;
    float *p = malloc(n * 4);
    memcpy(p, p0->data, n * 4);
    dae_adam adam;
    cr_assert_eq(dae_adam_init(&adam, n, 1e-3f, 1e-5f, NULL, 0), DAE_OK);
    for (int step = 1; step <= 3; step++) {
        char name[32], what[64];
        snprintf(name, sizeof name, "grad%d", step);
        dae_adam_step(&adam, p, fixture_tensor(&f, name)->data);
        snprintf(name, sizeof name, "param%d", step);
        snprintf(what, sizeof what, "%s on %s", name, dae_isa_name(isa));
        assert_close(p, fixture_tensor(&f, name)->data, n, 1e-6, what); /* ~4 float ulps at 2.5 */
    }
    dae_adam_free(&adam);
    free(p);
    dae_st_free(&f);
}

Test(model, adam_matches_pytorch) { cr_assert(on_every_isa(0, adam_vs_pytorch, NULL) >= 1); }

enum { ADAM_AGREE_N = 4099 };

/* Two steps from parameters at 0 on gradients ctx[0]: within 4 ulps of
 * ctx[1], the portable update's. */
static void adam_vs_portable(dae_isa isa, dae_rng *r, void *ctx) {
    (void)r;
    float *const *io = ctx, *got = calloc(ADAM_AGREE_N, 4);
    cr_assert(got);
    dae_adam a;
    cr_assert_eq(dae_adam_init(&a, ADAM_AGREE_N, 1e-3f, 0.0f, NULL, 0), DAE_OK);
    dae_adam_step(&a, got, io[0]);
    dae_adam_step(&a, got, io[0]);
    for (size_t i = 0; i < ADAM_AGREE_N; i++)
        cr_assert(fabsf(got[i] - io[1][i]) <= 4 * FLT_EPSILON * fabsf(io[1][i]), "%s: parameter %zu: %g, not %g",
                  dae_isa_name(isa), i, got[i], io[1][i]);
    dae_adam_free(&a);
    free(got);
}

/* Every instruction set's update agrees with the portable one's to a
 * few float ulps where the update is all there is (parameters starting
 * at 0, so that PyTorch's comparison above cannot hide an update off by
 * 1e-4 of itself), zero gradients included. */
Test(model, adam_updates_agree_on_every_isa) {
    float *grads = uniform_floats(ADAM_AGREE_N, -1.0f, 1.0f, 11, 0), *want = calloc(ADAM_AGREE_N, 4);
    cr_assert(want);
    for (size_t i = 0; i < ADAM_AGREE_N; i += 7) grads[i] = 0.0f;
    dae_isa before = dae_gemm_isa();
    cr_assert_eq(dae_gemm_set_isa(DAE_ISA_SSE2), 0);
    dae_adam ref;
    cr_assert_eq(dae_adam_init(&ref, ADAM_AGREE_N, 1e-3f, 0.0f, NULL, 0), DAE_OK);
    dae_adam_step(&ref, want, grads);
    dae_adam_step(&ref, want, grads);
    dae_adam_free(&ref);
    dae_gemm_set_isa(before);
    float *io[2] = {grads, want};
    cr_assert(on_every_isa(0, adam_vs_portable, io) >= 1);
    free(grads), free(want);
}

/* The data-parallel update (the threads' gradients summed in order,
 * applied, zeroed, each thread a range of the parameters) gives the same
 * bits as summing them first and updating all the parameters at once:
 * no parameter's arithmetic depends on where a range ends, inside or on
 * the sums' blocks and the vectors. */
static void summed_adam_vs_plain(dae_isa isa, dae_rng *r, void *ctx) {
    (void)isa, (void)r, (void)ctx;
    enum { N = 5000, MAX_GRADS = 3 };
    static const size_t bounds[] = {0, 1000, 1024, 3333, N};
    float *p1 = uniform_floats(N, -0.5f, 0.5f, 7, 0), *p2 = malloc(N * 4), *sum = malloc(N * 4);
    cr_assert(p2 && sum);
    memcpy(p2, p1, N * 4);
    dae_adam plain, summed;
    cr_assert_eq(dae_adam_init(&plain, N, 1e-3f, 1e-5f, NULL, 0), DAE_OK);
    cr_assert_eq(dae_adam_init(&summed, N, 1e-3f, 1e-5f, NULL, 0), DAE_OK);
    for (int n_grads = 1; n_grads <= MAX_GRADS; n_grads++) {
        float *grads[MAX_GRADS];
        for (int t = 0; t < n_grads; t++) grads[t] = uniform_floats(N, -0.5f, 0.5f, 8 + (uint64_t)n_grads, t);
        for (size_t i = 0; i < N; i++) {
            sum[i] = grads[0][i];
            for (int t = 1; t < n_grads; t++) sum[i] += grads[t][i];
        }
        dae_adam_begin_step(&plain);
        dae_adam_begin_step(&summed);
        dae_adam_update_range(&plain, p1, sum, 0, N);
        for (size_t b = 0; b + 1 < sizeof bounds / sizeof bounds[0]; b++)
            dae_adam_update_sum_range(&summed, p2, grads, n_grads, bounds[b], bounds[b + 1]);
        cr_assert_eq(memcmp(p1, p2, N * 4), 0, "%d gradient buffers: the parameters differ", n_grads);
        cr_assert_eq(memcmp(plain.m, summed.m, N * 4), 0, "%d gradient buffers: the moments differ", n_grads);
        cr_assert_eq(memcmp(plain.v, summed.v, N * 4), 0, "%d gradient buffers: the squares differ", n_grads);
        for (int t = 0; t < n_grads; t++) {
            for (size_t i = 0; i < N; i++) cr_assert_eq(grads[t][i], 0.0f, "buffer %d not zeroed at %zu", t, i);
            free(grads[t]);
        }
    }
    dae_adam_free(&plain);
    dae_adam_free(&summed);
    free(p1), free(p2), free(sum);
}

Test(model, adam_of_summed_gradients_is_the_same_update_and_zeroes_them) {
    cr_assert(on_every_isa(0, summed_adam_vs_plain, NULL) >= 1);
}

/* The update of a weight whose gradient is a sum of outer products
 * (dae_adam_update_outer), in column ranges cut inside and on the
 * kernels' tiles, over ragged parts of a batch, rows and columns not
 * multiples of a tile: the bits of dae_adam_update_range from the
 * gradient summed image by image in batch order (a fused multiply-add
 * where AVX-512 or AVX2 runs, a multiply then an add on SSE2). */
static void outer_adam_vs_plain(dae_isa isa, dae_rng *r, void *ctx) {
    (void)r, (void)ctx;
    enum { ROWS = 11, COLS = 70, N = ROWS * COLS, IMAGES = 9, OFFSET = 5 };
    static const int bounds[] = {0, 16, 48, 64, COLS};
    static const int batches[] = {5, 0, 4};
    float *rows = uniform_floats(IMAGES * ROWS, -1.0f, 1.0f, 21, 0),
          *cols = uniform_floats(IMAGES * COLS, -1.0f, 1.0f, 21, 1),
          *p1 = uniform_floats(OFFSET + N, -0.5f, 0.5f, 21, 2), *p2 = malloc((OFFSET + N) * 4), *grad = calloc(OFFSET + N, 4);
    cr_assert(p2 && grad);
    memcpy(p2, p1, (OFFSET + N) * 4);
    dae_outer_part parts[3];
    for (int q = 0, first = 0; q < 3; first += batches[q++])
        parts[q] = (dae_outer_part){rows + first * ROWS, cols + first * COLS, batches[q]};
    dae_adam plain, outer;
    cr_assert_eq(dae_adam_init(&plain, OFFSET + N, 1e-3f, 1e-5f, NULL, 0), DAE_OK);
    cr_assert_eq(dae_adam_init(&outer, OFFSET + N, 1e-3f, 1e-5f, NULL, 0), DAE_OK);
    for (int step = 1; step <= 2; step++) {
        for (int i = 0; i < ROWS; i++)
            for (int j = 0; j < COLS; j++) {
                float g = 0.0f;
                for (int b = 0; b < IMAGES; b++)
                    g = isa != DAE_ISA_SSE2 ? fmaf(rows[b * ROWS + i], cols[b * COLS + j], g)
                                            : g + rows[b * ROWS + i] * cols[b * COLS + j];
                grad[OFFSET + i * COLS + j] = g;
            }
        dae_adam_begin_step(&plain);
        dae_adam_begin_step(&outer);
        dae_adam_update_range(&plain, p1, grad, OFFSET, OFFSET + N);
        for (size_t b = 0; b + 1 < sizeof bounds / sizeof bounds[0]; b++)
            dae_adam_update_outer(&outer, p2, OFFSET, ROWS, COLS, bounds[b], bounds[b + 1], parts, 3);
        cr_assert_eq(memcmp(p1, p2, (OFFSET + N) * 4), 0, "%s, step %d: the parameters differ", dae_isa_name(isa), step);
        cr_assert_eq(memcmp(plain.m, outer.m, (OFFSET + N) * 4), 0, "%s: the moments differ", dae_isa_name(isa));
        cr_assert_eq(memcmp(plain.v, outer.v, (OFFSET + N) * 4), 0, "%s: the squares differ", dae_isa_name(isa));
    }
    dae_adam_free(&plain);
    dae_adam_free(&outer);
    free(rows), free(cols), free(p1), free(p2), free(grad);
}

Test(model, adam_of_an_outer_product_gradient_is_the_update_of_its_sum) {
    cr_assert(on_every_isa(0, outer_adam_vs_plain, NULL) >= 1);
}

/* A training-steps fixture's network (its "architecture" metadata or the
 * reference network) at PyTorch's initial weights (its "init." tensors). */
static void fixture_model(const char *fixture, dae_st_file *f, dae_model *m) {
    char err[DAE_ERR_LEN] = "";
    fixture_load(fixture, f);
    const char *spec = dae_st_meta(f, "architecture");
    cr_assert_eq(dae_model_init(m, spec != NULL ? spec : dae_model_default_spec(), err, sizeof err), DAE_OK, "%s",
                 err);
    cr_assert_eq(dae_model_read_tensors(m, f, "init.", m->params, err, sizeof err), DAE_OK, "%s", err);
    dae_model_params_changed(m);
}

/* A training pass with the outer layers' weight gradients left apart
 * (the trainer's) makes every other gradient with the plain pass's bits,
 * leaves the outer weights' entries as they were, and gives factors whose
 * outer products sum to the plain pass's gradient of those weights. */
static void check_outer_apart(const dae_model *m, const float *noisy, const float *clean, int batch, int want_outer,
                              const char *what) {
    size_t n = dae_model_image_size(m) * (size_t)batch;
    dae_workspace *ws = dae_workspace_new(m, batch, 1);
    float *plain = calloc(m->n_params, 4), *apart = calloc(m->n_params, 4);
    cr_assert(ws && plain && apart);
    for (int i = 0; i < m->n_layers; i++) { /* what the pass must leave as it is, where it would add */
        int rows, cols;
        if (dae_model_outer_layer(m, i, &rows, &cols))
            for (size_t k = 0; k < m->layers[i].weight_count; k++) apart[m->layers[i].weight_offset + k] = 7.0f;
    }
    double sse = dae_model_train_pass(m, ws, noisy, clean, batch, n, plain, NULL);
    cr_assert_eq(dae_model_train_pass_outer_apart(m, ws, noisy, clean, batch, n, apart), sse);
    int outer = 0;
    for (int i = 0; i < m->n_layers; i++) {
        const dae_layer *l = &m->layers[i];
        int rows, cols;
        if (!dae_model_outer_layer(m, i, &rows, &cols)) continue;
        outer++;
        cr_assert_eq((size_t)rows * cols, l->weight_count);
        const float *a, *b;
        dae_model_outer_factors(m, ws, i, &a, &b);
        float *want = plain + l->weight_offset, *got = malloc(l->weight_count * 4);
        cr_assert(got);
        double scale = 0.0;
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++) {
                double sum = 0.0;
                for (int k = 0; k < batch; k++) sum += (double)a[k * rows + r] * b[(size_t)k * cols + c];
                got[(size_t)r * cols + c] = (float)sum;
                scale = fmax(scale, fabs(sum));
            }
        assert_close(got, want, l->weight_count, 1e-6 * scale, l->name);
        for (size_t k = 0; k < l->weight_count; k++) {
            cr_assert_eq(apart[l->weight_offset + k], 7.0f, "%s: weight gradient %zu written", l->name, k);
            apart[l->weight_offset + k] = plain[l->weight_offset + k];
        }
        free(got);
    }
    cr_assert_eq(outer, want_outer, "%s: %d outer layers", what, outer);
    cr_assert_eq(memcmp(apart, plain, m->n_params * 4), 0, "%s: the other gradients differ", what);
    free(plain), free(apart);
    dae_workspace_free(ws);
}

/* Both shipped networks, on PyTorch's fixture batch. */
Test(model, outer_weight_gradients_apart_match_the_plain_pass) {
    static const char *const fixtures[] = {FIXTURES "/ref/train_steps.safetensors",
                                           FIXTURES "/ref/train_steps_unet.safetensors"};
    for (int k = 0; k < 2; k++) {
        dae_st_file f = {0};
        dae_model m;
        fixture_model(fixtures[k], &f, &m);
        check_outer_apart(&m, fixture_tensor(&f, "step1.noisy")->data, fixture_tensor(&f, "step1.clean")->data,
                          fixture_int(&f, "batch"), 2, fixtures[k]);
        dae_model_free(&m);
        dae_st_free(&f);
    }
}

/* Outer layers only, the first reading the network's input itself (its
 * factor is the caller's images). */
Test(model, outer_layers_reading_the_input_apart_match_the_plain_pass) {
    enum { BATCH = 5 };
    char err[DAE_ERR_LEN] = "";
    dae_model m;
    cr_assert_eq(dae_model_init(&m, OUTER_ONLY_SPEC, err, sizeof err), DAE_OK, "%s", err);
    dae_model_init_params(&m, 5);
    float *noisy = uniform_floats(BATCH * 784, 0.0f, 1.0f, 31, 0), *clean = uniform_floats(BATCH * 784, 0.0f, 1.0f, 31, 1);
    check_outer_apart(&m, noisy, clean, BATCH, 2, "outer layers only");
    free(noisy), free(clean);
    dae_model_free(&m);
}

/* Two whole training steps of a network from PyTorch's initial weights
 * (the fixture's "init." tensors, its "architecture" metadata or the
 * reference network): output, loss, every gradient, and the parameters
 * after Adam. */
static void check_training_steps(const char *fixture) {
    dae_st_file f = {0};
    dae_model m;
    fixture_model(fixture, &f, &m);
    char err[DAE_ERR_LEN] = "";
    int batch = fixture_int(&f, "batch");
    size_t n = dae_model_image_size(&m) * (size_t)batch;
    dae_workspace *ws = dae_workspace_new(&m, batch, 1);
    dae_adam adam;
    cr_assert_eq(dae_adam_init(&adam, m.n_params, 1e-3f, 1e-5f, NULL, 0), DAE_OK);
    float *grads = malloc(m.n_params * 4), *values = malloc(m.n_params * 4), *out = malloc(n * 4);
    for (int step = 1; step <= 2; step++) {
        char name[96];
        snprintf(name, sizeof name, "step%d.noisy", step);
        const float *noisy = fixture_tensor(&f, name)->data;
        snprintf(name, sizeof name, "step%d.clean", step);
        const float *clean = fixture_tensor(&f, name)->data;
        memset(grads, 0, m.n_params * 4);
        double sse = dae_model_train_pass(&m, ws, noisy, clean, batch, n, grads, out);
        snprintf(name, sizeof name, "step%d.output", step);
        assert_close(out, fixture_tensor(&f, name)->data, n, 1e-5, name);
        snprintf(name, sizeof name, "step%d.loss", step);
        double loss = sse / (double)n, want = fixture_tensor(&f, name)->data[0];
        cr_assert(fabs(loss - want) <= 1e-6, "%s: step %d loss %.8f, PyTorch %.8f", fixture, step, loss, want);
        if (step == 1) {
            snprintf(name, sizeof name, "step%d.grad.", step);
            cr_assert_eq(dae_model_read_tensors(&m, &f, name, values, err, sizeof err), DAE_OK, "%s", err);
            double scale = 0;
            for (size_t i = 0; i < m.n_params; i++) scale = fmax(scale, fabs(values[i]));
            assert_close(grads, values, m.n_params, 1e-5 * fmax(scale, 1e-3), "step 1 gradients");
        }
        dae_adam_step(&adam, m.params, grads);
        dae_model_params_changed(&m);
        snprintf(name, sizeof name, "step%d.param.", step);
        cr_assert_eq(dae_model_read_tensors(&m, &f, name, values, err, sizeof err), DAE_OK, "%s", err);
        assert_close(m.params, values, m.n_params, 1e-5, name);
    }
    /* Inference gives the training pass's output: the first step's input
     * through the final weights, both ways. */
    dae_workspace *infer = dae_workspace_new(&m, batch, 0);
    float *y = malloc(n * 4);
    const float *noisy = fixture_tensor(&f, "step1.noisy")->data, *clean = fixture_tensor(&f, "step1.clean")->data;
    dae_model_forward(&m, infer, noisy, y, batch);
    dae_model_train_pass(&m, ws, noisy, clean, batch, n, grads, out);
    assert_close(y, out, n, 0.0, "inference and training forward agree");
    free(y), free(grads), free(values), free(out);
    dae_workspace_free(infer);
    dae_adam_free(&adam);
    dae_workspace_free(ws);
    dae_model_free(&m);
    dae_st_free(&f);
}

Test(model, training_steps_match_pytorch) { check_training_steps(FIXTURES "/ref/train_steps.safetensors"); }

/* The U-Net: concatenations of skips and the input, a residual output. */
Test(model, unet_training_steps_match_pytorch) { check_training_steps(FIXTURES "/ref/train_steps_unet.safetensors"); }

/* A small graph with what the U-Net lacks: add, a layer read by three
 * others, inputs named "group.index", activations after joins, two input
 * channels, rectangular kernels. */
Test(model, graph_training_steps_match_pytorch) {
    check_training_steps(FIXTURES "/ref/train_steps_graph.safetensors");
}

/* Concatenations of two that training reads where they lie (a transposed
 * convolution's and a conv2d's, one of the network input) and one it
 * copies, an input of which a later layer reads again. */
Test(model, joins_training_steps_match_pytorch) {
    check_training_steps(FIXTURES "/ref/train_steps_joins.safetensors");
}

/* A state_dict saved from PyTorch with the architecture in its metadata
 * loads as that network. */
Test(model, pytorch_files_load_with_their_architecture) {
    dae_model m;
    char err[DAE_ERR_LEN] = "";
    cr_assert_eq(dae_model_load(&m, FIXTURES "/ref/reference_init.safetensors", err, sizeof err), DAE_OK, "%s", err);
    dae_model reference;
    build_default(&reference);
    cr_assert_str_eq(m.spec, reference.spec);
    dae_model_free(&reference);
    dae_model_free(&m);
    cr_assert_eq(dae_model_load(&m, FIXTURES "/ref/unet_init.safetensors", err, sizeof err), DAE_OK, "%s", err);
    dae_model unet;
    cr_assert_eq(dae_model_init(&unet, dae_model_named_spec("unet"), err, sizeof err), DAE_OK, "%s", err);
    cr_assert_str_eq(m.spec, unet.spec);
    dae_st_file f = {0};
    fixture_load(FIXTURES "/ref/train_steps_unet.safetensors", &f);
    cr_assert_eq(dae_model_read_tensors(&unet, &f, "init.", unet.params, err, sizeof err), DAE_OK, "%s", err);
    cr_assert_eq(memcmp(m.params, unet.params, m.n_params * 4), 0, "the same weights as the fixture's");
    dae_st_free(&f);
    dae_model_free(&unet);
    dae_model_free(&m);
}

/* A temporary directory for files a test writes; removed by the caller. */
static void temp_dir(char *dir, size_t len) {
    snprintf(dir, len, "/tmp/dae-test-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

Test(model, weights_round_trip_with_metadata) {
    dae_model m, back;
    build_default(&m);
    dae_model_init_params(&m, 5);
    char dir[64], path[128], err[DAE_ERR_LEN] = "";
    temp_dir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/w.safetensors", dir);
    const char *keys[] = {"dataset"}, *values[] = {"mnist"};
    cr_assert_eq(dae_model_save(&m, path, keys, values, 1, err, sizeof err), DAE_OK, "%s", err);
    cr_assert_eq(dae_model_load(&back, path, err, sizeof err), DAE_OK, "%s", err);
    cr_assert_eq(back.n_params, m.n_params);
    cr_assert_eq(memcmp(back.params, m.params, m.n_params * 4), 0);
    cr_assert_str_eq(back.spec, m.spec);
    dae_st_file f = {0};
    fixture_load(path, &f);
    cr_assert_str_eq(dae_st_meta(&f, "dataset"), "mnist");
    cr_assert_str_eq(dae_st_meta(&f, "format"), "dae-weights-1");
    dae_st_free(&f);
    unlink(path);
    rmdir(dir);
    dae_model_free(&back);
    dae_model_free(&m);
}

/* Writes the default model's tensors with one changed, then expects the
 * load to fail with a message containing needle. */
static void expect_rejected(int drop, int reshape, int extra, const char *needle) {
    dae_model m;
    build_default(&m);
    dae_st_tensor t[13];
    char names[13][DAE_TENSOR_NAME_LEN];
    float *torch_values = malloc(m.n_params * 4);
    int n = dae_model_describe_tensors(&m, "", m.params, torch_values, t, names);
    if (drop) memmove(&t[3], &t[4], sizeof(t[0]) * (size_t)(--n - 3));
    if (reshape) t[0].shape[0] = 8, t[0].numel /= 2;
    if (extra) t[n] = t[n - 1], t[n].name = "decoder.9.bias", n++;
    char dir[64], path[128], err[DAE_ERR_LEN] = "";
    temp_dir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/bad.safetensors", dir);
    cr_assert_eq(dae_st_save(path, t, n, NULL, NULL, 0, err, sizeof err), DAE_OK, "%s", err);
    dae_model back;
    cr_assert_eq(dae_model_load(&back, path, err, sizeof err), DAE_ERR_FORMAT);
    cr_assert(strstr(err, needle) != NULL && strstr(err, path) != NULL, "message: %s", err);
    cr_assert_null(back.params);
    unlink(path);
    rmdir(dir);
    free(torch_values);
    dae_model_free(&m);
}

Test(model, weights_with_wrong_tensors_are_rejected) {
    expect_rejected(1, 0, 0, "missing tensor \"encoder.2.bias\"");
    expect_rejected(0, 1, 0, "has shape (8,1,3,3), the architecture needs (16,1,3,3)");
    expect_rejected(0, 0, 1, "unexpected tensor \"decoder.9.bias\"");
}

/* Subnormal weights (below 1.2e-38: where weight decay leaves a dead
 * unit's weights) count as zeros in the forward pass and Adam's update,
 * which takes them to 0: on Intel's cores every multiply-add with one
 * took a microcode assist (an image through the shipped U-Net, 15% of
 * whose weights were subnormal, took 1 ms in the daemon). The caller's
 * floating-point mode is left as it was. */
static int keeps_subnormals(float tiny) {
    volatile float a = tiny, one = 1.0f;
    float product = a * one;
    return memcmp(&product, &tiny, sizeof tiny) == 0;
}

Test(model, subnormal_weights_count_as_zeros_and_the_callers_mode_stays) {
    static const char spec[] = "{\"encoder\":[{\"type\":\"conv2d\",\"in_channels\":1,\"out_channels\":1,"
                               "\"kernel_size\":3,\"padding\":1}],\"decoder\":[]}";
    dae_model m;
    char err[DAE_ERR_LEN] = "";
    cr_assert_eq(dae_model_init(&m, spec, err, sizeof err), DAE_OK, "%s", err);
    cr_assert_eq(m.n_params, 10u);
    const float tiny = 1e-39f; /* subnormal */
    cr_assert(fpclassify(tiny) == FP_SUBNORMAL);
    for (int i = 0; i < 9; i++) m.params[i] = tiny;
    m.params[9] = 0.0f; /* the bias */
    dae_model_params_changed(&m);
    size_t img = dae_model_image_size(&m);
    float *x = malloc(sizeof(float) * img), *y = malloc(sizeof(float) * img);
    for (size_t i = 0; i < img; i++) x[i] = 1.0f;
    dae_workspace *ws = dae_workspace_new(&m, 1, 0);
    dae_model_forward(&m, ws, x, y, 1);
    for (size_t i = 0; i < img; i++) cr_assert(y[i] == 0.0f, "pixel %zu is %g, not 0", i, (double)y[i]);
    cr_assert(keeps_subnormals(tiny), "the caller's subnormals are flushed after the forward pass");

    dae_adam adam;
    cr_assert_eq(dae_adam_init(&adam, m.n_params, 1e-3f, 1e-5f, err, sizeof err), DAE_OK, "%s", err);
    float grads[10] = {0};
    dae_adam_step(&adam, m.params, grads);
    for (int i = 0; i < 9; i++) cr_assert(m.params[i] == 0.0f, "weight %d is %g after a step, not 0", i, (double)m.params[i]);
    cr_assert(keeps_subnormals(tiny), "the caller's subnormals are flushed after Adam's step");
    dae_adam_free(&adam);
    dae_workspace_free(ws);
    free(x), free(y);
    dae_model_free(&m);
}
