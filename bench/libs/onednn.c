/* onednn.c - a network's forward pass on oneDNN's primitives against the
 * engine's, same weights, same images, one thread (bench/libs/run.sh
 * builds and runs it).
 *
 *   onednn [--batch N[,N...]] [--reps N] MODEL.safetensors...
 *
 * Each model's layers become oneDNN primitives as the spec gives them:
 * convolutions and transposed ones (deconvolutions) with a following
 * ReLU or sigmoid fused as a post-op, concatenations, sums; the
 * activations in whatever layout oneDNN picks for them (format "any",
 * reordered where a primitive wants another); the residual output's
 * clamp(input - net, 0, 1) by dae_residual_forward, as dae applies it.
 * The outputs are checked against dae_model_forward's before anything is
 * timed. Figures: median microseconds an image of several repetitions,
 * the two engines taking turns. oneDNN picks its instruction set unless
 * ONEDNN_MAX_CPU_ISA caps it (run.sh --avx2: AVX2). */
#include <math.h>
#include <oneapi/dnnl/dnnl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../timing.h"
#include "gemm.h"
#include "model.h"
#include "modelfile.h"
#include "rng.h"

enum { MAX_STEPS = 4 * DAE_MAX_LAYERS, MAX_BATCHES = 8 };

static void check(dnnl_status_t st, const char *what) {
    if (st != dnnl_success) {
        fprintf(stderr, "onednn: %s failed (oneDNN status %d)\n", what, (int)st);
        exit(1);
    }
}

typedef struct {
    dnnl_primitive_t prim;
    int n_args;
    dnnl_exec_arg_t args[DAE_MAX_INPUTS + 1];
} step;

typedef struct {
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    step steps[MAX_STEPS];
    int n_steps;
    dnnl_memory_t input, output; /* NCHW */
    dnnl_memory_t outs[DAE_MAX_LAYERS];
    const char *impl[DAE_MAX_LAYERS]; /* the implementation oneDNN took, per convolution */
} network;

static void add_step(network *net, dnnl_primitive_desc_t pd, int n_args, const dnnl_exec_arg_t *args) {
    if (net->n_steps == MAX_STEPS) {
        fprintf(stderr, "onednn: too many primitives\n");
        exit(1);
    }
    step *s = &net->steps[net->n_steps++];
    check(dnnl_primitive_create(&s->prim, pd), "dnnl_primitive_create");
    s->n_args = n_args;
    memcpy(s->args, args, sizeof(dnnl_exec_arg_t) * n_args);
}

static const dnnl_memory_desc_t *desc_of(dnnl_memory_t m) {
    const dnnl_memory_desc_t *md;
    check(dnnl_memory_get_memory_desc(m, &md), "dnnl_memory_get_memory_desc");
    return md;
}

static dnnl_memory_t memory_of(network *net, const dnnl_memory_desc_t *md) {
    dnnl_memory_t m;
    check(dnnl_memory_create(&m, md, net->engine, DNNL_MEMORY_ALLOCATE), "dnnl_memory_create");
    return m;
}

/* mem as `want` lays it out: itself, or a new memory a reorder step fills. */
static dnnl_memory_t laid_out(network *net, dnnl_memory_t mem, const dnnl_memory_desc_t *want) {
    if (dnnl_memory_desc_equal(desc_of(mem), want)) return mem;
    dnnl_primitive_desc_t pd;
    check(dnnl_reorder_primitive_desc_create(&pd, desc_of(mem), net->engine, want, net->engine, NULL), "reorder");
    dnnl_memory_t to = memory_of(net, want);
    dnnl_exec_arg_t args[] = {{DNNL_ARG_FROM, mem}, {DNNL_ARG_TO, to}};
    add_step(net, pd, 2, args);
    dnnl_primitive_desc_destroy(pd);
    return to;
}

/* A reorder run now, for weights. */
static void reorder_now(network *net, dnnl_memory_t from, dnnl_memory_t to) {
    dnnl_primitive_desc_t pd;
    dnnl_primitive_t p;
    check(dnnl_reorder_primitive_desc_create(&pd, desc_of(from), net->engine, desc_of(to), net->engine, NULL),
          "reorder");
    check(dnnl_primitive_create(&p, pd), "dnnl_primitive_create");
    dnnl_exec_arg_t args[] = {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}};
    check(dnnl_primitive_execute(p, net->stream, 2, args), "reorder");
    check(dnnl_stream_wait(net->stream), "dnnl_stream_wait");
    dnnl_primitive_destroy(p);
    dnnl_primitive_desc_destroy(pd);
}

static dnnl_memory_t input_of(network *net, int index) {
    return index == DAE_NETWORK_INPUT ? net->input : net->outs[index];
}

/* Layer i, a convolution or a transposed one, with the activation after
 * it fused when it alone reads it (*fused: that activation's index, or
 * -1). */
static void add_convolution(network *net, const dae_model *m, int i, int batch, int *fused) {
    const dae_layer *l = &m->layers[i];
    int transposed = l->kind == DAE_LAYER_CONV_TRANSPOSE2D;
    dnnl_dims_t src_dims = {batch, l->in_c, l->in_h, l->in_w}, dst_dims = {batch, l->out_c, l->out_h, l->out_w};
    dnnl_dims_t w_dims = {l->out_c, l->in_c, l->k_h, l->k_w}, b_dims = {l->out_c};
    dnnl_dims_t strides = {l->stride_h, l->stride_w}, pad_l = {l->pad_h, l->pad_w};
    /* A transposed convolution's output padding is oneDNN's right padding
     * made smaller by it. */
    dnnl_dims_t pad_r = {l->pad_h - l->out_pad_h, l->pad_w - l->out_pad_w};
    dnnl_memory_desc_t src_md, dst_md, w_md, b_md;
    check(dnnl_memory_desc_init_by_tag(&src_md, 4, src_dims, dnnl_f32, dnnl_format_tag_any), "memory desc");
    check(dnnl_memory_desc_init_by_tag(&dst_md, 4, dst_dims, dnnl_f32, dnnl_format_tag_any), "memory desc");
    check(dnnl_memory_desc_init_by_tag(&w_md, 4, w_dims, dnnl_f32, dnnl_format_tag_any), "memory desc");
    check(dnnl_memory_desc_init_by_tag(&b_md, 1, b_dims, dnnl_f32, dnnl_x), "memory desc");
    dnnl_primitive_attr_t attr;
    check(dnnl_primitive_attr_create(&attr), "attr");
    *fused = -1;
    const dae_layer *next = i + 1 < m->n_layers ? &m->layers[i + 1] : NULL;
    if (next != NULL && (next->kind == DAE_LAYER_RELU || next->kind == DAE_LAYER_SIGMOID) && next->inputs[0] == i &&
        l->consumers == 1) {
        dnnl_post_ops_t po;
        check(dnnl_post_ops_create(&po), "post ops");
        check(dnnl_post_ops_append_eltwise(po, 1.0f,
                                           next->kind == DAE_LAYER_RELU ? dnnl_eltwise_relu : dnnl_eltwise_logistic,
                                           0.0f, 0.0f),
              "post op");
        check(dnnl_primitive_attr_set_post_ops(attr, po), "post ops");
        dnnl_post_ops_destroy(po);
        *fused = i + 1;
    }
    dnnl_primitive_desc_t pd;
    if (transposed) {
        dnnl_deconvolution_desc_t d;
        check(dnnl_deconvolution_forward_desc_init(&d, dnnl_forward_inference, dnnl_deconvolution_direct, &src_md,
                                                   &w_md, &b_md, &dst_md, strides, pad_l, pad_r),
              "deconvolution desc");
        check(dnnl_primitive_desc_create(&pd, &d, attr, net->engine, NULL), "deconvolution");
    } else {
        dnnl_convolution_desc_t d;
        check(dnnl_convolution_forward_desc_init(&d, dnnl_forward_inference, dnnl_convolution_direct, &src_md, &w_md,
                                                 &b_md, &dst_md, strides, pad_l, pad_r),
              "convolution desc");
        check(dnnl_primitive_desc_create(&pd, &d, attr, net->engine, NULL), "convolution");
    }
    dnnl_primitive_attr_destroy(attr);
    check(dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &net->impl[i]), "impl info");

    /* The weight as PyTorch lays it: (out, in, kh, kw), or for the
     * transposed (in, out, kh, kw), oneDNN's "iohw". */
    int a = transposed ? l->in_c : l->out_c, c = transposed ? l->out_c : l->in_c;
    float *torch_w = malloc(sizeof(float) * l->weight_count);
    dae_weight_to_torch(torch_w, m->params + l->weight_offset, a, c, l->k_h, l->k_w);
    dnnl_memory_desc_t plain_md;
    check(dnnl_memory_desc_init_by_tag(&plain_md, 4, w_dims, dnnl_f32, transposed ? dnnl_iohw : dnnl_oihw), "desc");
    dnnl_memory_t plain_w, w = memory_of(net, dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0));
    check(dnnl_memory_create(&plain_w, &plain_md, net->engine, torch_w), "dnnl_memory_create");
    reorder_now(net, plain_w, w);
    dnnl_memory_destroy(plain_w);
    free(torch_w);
    dnnl_memory_t bias = memory_of(net, &b_md);
    void *bias_data;
    check(dnnl_memory_get_data_handle(bias, &bias_data), "data handle");
    memcpy(bias_data, m->params + l->bias_offset, sizeof(float) * l->out_c);

    dnnl_memory_t src =
        laid_out(net, input_of(net, l->inputs[0]), dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0));
    dnnl_memory_t dst = memory_of(net, dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0));
    dnnl_exec_arg_t args[] = {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, w}, {DNNL_ARG_BIAS, bias}, {DNNL_ARG_DST, dst}};
    add_step(net, pd, 4, args);
    dnnl_primitive_desc_destroy(pd);
    net->outs[i] = dst;
}

static void add_activation(network *net, const dae_layer *l, int i) {
    dnnl_memory_t src = input_of(net, l->inputs[0]);
    dnnl_eltwise_desc_t d;
    check(dnnl_eltwise_forward_desc_init(&d, dnnl_forward_inference,
                                         l->kind == DAE_LAYER_RELU ? dnnl_eltwise_relu : dnnl_eltwise_logistic,
                                         desc_of(src), 0.0f, 0.0f),
          "eltwise desc");
    dnnl_primitive_desc_t pd;
    check(dnnl_primitive_desc_create(&pd, &d, NULL, net->engine, NULL), "eltwise");
    dnnl_memory_t dst = memory_of(net, dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0));
    dnnl_exec_arg_t args[] = {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, dst}};
    add_step(net, pd, 2, args);
    dnnl_primitive_desc_destroy(pd);
    net->outs[i] = dst;
}

static void add_concat(network *net, const dae_layer *l, int i) {
    dnnl_memory_desc_t mds[DAE_MAX_INPUTS];
    dnnl_exec_arg_t args[DAE_MAX_INPUTS + 1];
    for (int q = 0; q < l->n_inputs; q++) {
        dnnl_memory_t in = input_of(net, l->inputs[q]);
        mds[q] = *desc_of(in);
        args[q] = (dnnl_exec_arg_t){DNNL_ARG_MULTIPLE_SRC + q, in};
    }
    dnnl_primitive_desc_t pd;
    check(dnnl_concat_primitive_desc_create(&pd, NULL, l->n_inputs, 1, mds, NULL, net->engine), "concat");
    dnnl_memory_t dst = memory_of(net, dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0));
    args[l->n_inputs] = (dnnl_exec_arg_t){DNNL_ARG_DST, dst};
    add_step(net, pd, l->n_inputs + 1, args);
    dnnl_primitive_desc_destroy(pd);
    net->outs[i] = dst;
}

/* A sum of two or more: a chain of binary adds in the first input's layout. */
static void add_sum(network *net, const dae_layer *l, int i) {
    dnnl_memory_t acc = input_of(net, l->inputs[0]);
    for (int q = 1; q < l->n_inputs; q++) {
        dnnl_memory_t other = laid_out(net, input_of(net, l->inputs[q]), desc_of(acc));
        dnnl_binary_desc_t d;
        check(dnnl_binary_desc_init(&d, dnnl_binary_add, desc_of(acc), desc_of(other), desc_of(acc)), "binary desc");
        dnnl_primitive_desc_t pd;
        check(dnnl_primitive_desc_create(&pd, &d, NULL, net->engine, NULL), "binary");
        dnnl_memory_t dst = memory_of(net, desc_of(acc));
        dnnl_exec_arg_t args[] = {{DNNL_ARG_SRC_0, acc}, {DNNL_ARG_SRC_1, other}, {DNNL_ARG_DST, dst}};
        add_step(net, pd, 3, args);
        dnnl_primitive_desc_destroy(pd);
        acc = dst;
    }
    net->outs[i] = acc;
}

static void network_build(network *net, const dae_model *m, int batch) {
    memset(net, 0, sizeof *net);
    check(dnnl_engine_create(&net->engine, dnnl_cpu, 0), "dnnl_engine_create");
    check(dnnl_stream_create(&net->stream, net->engine, dnnl_stream_default_flags), "dnnl_stream_create");
    dnnl_dims_t io_dims = {batch, m->in_c, m->in_h, m->in_w};
    dnnl_memory_desc_t io_md;
    check(dnnl_memory_desc_init_by_tag(&io_md, 4, io_dims, dnnl_f32, dnnl_nchw), "memory desc");
    net->input = memory_of(net, &io_md);
    for (int i = 0; i < m->n_layers; i++) {
        const dae_layer *l = &m->layers[i];
        int fused;
        switch (l->kind) {
        case DAE_LAYER_CONV2D:
        case DAE_LAYER_CONV_TRANSPOSE2D:
            add_convolution(net, m, i, batch, &fused);
            if (fused >= 0) net->outs[fused] = net->outs[i], i = fused;
            break;
        case DAE_LAYER_RELU:
        case DAE_LAYER_SIGMOID:
            add_activation(net, l, i);
            break;
        case DAE_LAYER_CONCAT:
            add_concat(net, l, i);
            break;
        case DAE_LAYER_ADD:
            add_sum(net, l, i);
            break;
        }
    }
    net->output = laid_out(net, net->outs[m->n_layers - 1], &io_md);
}

static void network_free(network *net) {
    for (int s = 0; s < net->n_steps; s++) dnnl_primitive_destroy(net->steps[s].prim);
    /* The memories die with the process: a benchmark builds a few. */
    dnnl_stream_destroy(net->stream);
    dnnl_engine_destroy(net->engine);
}

/* out = the network on `in` (batch images, NCHW), with the residual
 * output's clamp when the model has one. */
static void network_run(network *net, const dae_model *m, const float *in, float *out, size_t floats) {
    void *x, *y;
    check(dnnl_memory_get_data_handle(net->input, &x), "data handle");
    check(dnnl_memory_get_data_handle(net->output, &y), "data handle");
    memcpy(x, in, sizeof(float) * floats);
    for (int s = 0; s < net->n_steps; s++)
        check(dnnl_primitive_execute(net->steps[s].prim, net->stream, net->steps[s].n_args, net->steps[s].args),
              "execute");
    check(dnnl_stream_wait(net->stream), "dnnl_stream_wait");
    if (m->residual) dae_residual_forward(out, in, y, floats);
    else memcpy(out, y, sizeof(float) * floats);
}

/* Seconds an image of oneDNN's network, or of dae_model_forward when net
 * is NULL: the runs that fill at least 0.1 s. */
static double time_engine(network *net, const dae_model *m, dae_workspace *ws, const float *in, float *out,
                          int batch) {
    size_t floats = dae_model_image_size(m) * batch;
    long runs = 0;
    double t0 = bench_now_s(), t;
    do {
        if (net != NULL) network_run(net, m, in, out, floats);
        else dae_model_forward(m, ws, in, out, batch);
        runs++;
    } while ((t = bench_now_s() - t0) < 0.1);
    return t / runs / batch;
}

static void bench_model(const char *path, const int *batches, int n_batches, int reps) {
    dae_model m;
    char err[DAE_ERR_LEN];
    if (dae_model_load(&m, path, err, sizeof err) != DAE_OK) {
        fprintf(stderr, "onednn: %s\n", err);
        exit(1);
    }
    for (int bi = 0; bi < n_batches; bi++) {
        int batch = batches[bi];
        size_t floats = dae_model_image_size(&m) * batch;
        float *in = malloc(sizeof(float) * floats), *want = malloc(sizeof(float) * floats);
        float *got = malloc(sizeof(float) * floats);
        dae_rng r;
        dae_rng_seed(&r, 7, 0);
        for (size_t i = 0; i < floats; i++) in[i] = dae_rng_uniform(&r);
        dae_workspace *ws = dae_workspace_new(&m, batch, 0);
        network net;
        network_build(&net, &m, batch);
        dae_model_forward(&m, ws, in, want, batch);
        network_run(&net, &m, in, got, floats);
        double diff = 0;
        for (size_t i = 0; i < floats; i++) diff = fmax(diff, fabs((double)got[i] - want[i]));
        if (bi == 0) {
            printf("%s: oneDNN's implementations:", path);
            for (int i = 0; i < m.n_layers; i++)
                if (net.impl[i] != NULL) printf(" %s %s;", m.layers[i].name, net.impl[i]);
            printf("\n");
        }
        double *t = malloc(sizeof(double) * 2 * reps);
        time_engine(&net, &m, ws, in, got, batch); /* the warm-ups */
        time_engine(NULL, &m, ws, in, want, batch);
        for (int rep = 0; rep < reps; rep++) {
            t[rep] = time_engine(NULL, &m, ws, in, want, batch);
            t[reps + rep] = time_engine(&net, &m, ws, in, got, batch);
        }
        double dae_us = bench_median(t, reps) * 1e6, dnnl_us = bench_median(t + reps, reps) * 1e6;
        printf("%-40s %6d %12.2f %12.2f %8.1fx %12.1e%s\n", path, batch, dae_us, dnnl_us, dnnl_us / dae_us, diff,
               diff <= 1e-4 ? "" : "  OUTPUTS DIFFER");
        fflush(stdout);
        free(t), free(in), free(want), free(got);
        network_free(&net);
        dae_workspace_free(ws);
    }
    dae_model_free(&m);
}

int main(int argc, char **argv) {
    int reps = 5, batches[MAX_BATCHES] = {1, 64}, n_batches = 2, first_model = argc;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc) reps = atoi(argv[++i]);
        else if (strcmp(argv[i], "--batch") == 0 && i + 1 < argc) {
            n_batches = 0;
            for (char *s = argv[++i]; *s != '\0' && n_batches < MAX_BATCHES; s += strcspn(s, ","), s += *s == ',')
                batches[n_batches++] = atoi(s);
        } else if (argv[i][0] == '-') {
            first_model = argc;
            break;
        } else {
            first_model = i;
            break;
        }
    }
    if (first_model == argc || reps < 1) {
        fprintf(stderr, "usage: %s [--batch N[,N...]] [--reps N] MODEL.safetensors...\n", argv[0]);
        return 2;
    }
    for (int b = 0; b < n_batches; b++)
        if (batches[b] < 1) {
            fprintf(stderr, "onednn: a batch is at least 1\n");
            return 2;
        }
    dae_gemm_single_threaded();
    const dnnl_version_t *v = dnnl_version();
    printf("one thread, median us an image of %d repetitions, the engines taking turns; dae's kernels for %s, "
           "oneDNN %d.%d.%d (its implementations name their instruction set)\n\n",
           reps, dae_isa_name(dae_gemm_isa()), v->major, v->minor, v->patch);
    printf("%-40s %6s %12s %12s %9s %12s\n", "model", "batch", "dae", "oneDNN", "ratio", "max |diff|");
    for (int i = first_model; i < argc; i++) bench_model(argv[i], batches, n_batches, reps);
    return 0;
}
