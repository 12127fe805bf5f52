/* bench_core.c - engine speed on this machine: forward images/s at batch
 * 1, 64 and 1024, and training images/s at batch 64, for 1 and 2 threads,
 * with the achieved GFLOP/s, for one or more built-in architectures side
 * by side (model.h: ae, the notebook's network; unet, the shipped one).
 * Reports the median of several repetitions.
 *
 *   build/bench_core [--arch ae,unet] [--reps N] [--train-images N] [--threads N] [--forward-only]
 *   build/bench_core --sgemm-peak [--reps N] [--threads N]
 *   build/bench_core --products [--reps N]
 *
 * Images are synthetic (speed does not depend on pixel values), so the
 * benchmark needs no data set. --sgemm-peak instead times OpenBLAS's sgemm
 * on 2048 x 2048 matrices with 1 and 2 BLAS threads: the peak the engine's
 * GEMMs are held against (bench/compare.sh). --products times the
 * networks' forward products at batch 64 (dae_gemm_bias, the engine's own
 * kernels, for the instruction set in use) against OpenBLAS's sgemm on the
 * same shapes, one thread: how near the kernels run to the BLAS. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gemm.h"
#include "model.h"
#include "rng.h"
#include "train.h"
#include "timing.h"

/* Median seconds per image of forward passes over `batch` images with the
 * pool's threads; each repetition runs at least ~0.1 s of work. */
static double time_forward(const dae_model *m, dae_pool *pool, int batch, int reps) {
    int threads = dae_pool_size(pool);
    size_t n = dae_model_image_size(m);
    float *in = malloc(sizeof(float) * n * batch), *out = malloc(sizeof(float) * n * batch);
    dae_rng r;
    dae_rng_seed(&r, 1, 0);
    for (size_t i = 0; i < n * (size_t)batch; i++) in[i] = dae_rng_uniform(&r);
    dae_workspace *ws[64];
    int share = (batch + threads - 1) / threads;
    for (int t = 0; t < threads; t++) ws[t] = dae_workspace_new(m, share, 0);
    double *per_image = malloc(sizeof(double) * reps);
    int inner = 1;
    for (;;) { /* calibrate: enough passes for 0.1 s */
        double t0 = bench_now_s();
        for (int i = 0; i < inner; i++) dae_forward_parallel(m, pool, ws, in, out, batch);
        if (bench_now_s() - t0 > 0.1 || inner > 1 << 20) break;
        inner *= 2;
    }
    for (int rep = 0; rep < reps; rep++) {
        double t0 = bench_now_s();
        for (int i = 0; i < inner; i++) dae_forward_parallel(m, pool, ws, in, out, batch);
        per_image[rep] = (bench_now_s() - t0) / ((double)inner * batch);
    }
    double med = bench_median(per_image, reps);
    for (int t = 0; t < threads; t++) dae_workspace_free(ws[t]);
    free(in), free(out), free(per_image);
    return med;
}

/* Median images/s of training epochs over `count` synthetic images. */
static double time_training(const dae_model *proto, int threads, int count, int reps) {
    dae_dataset data = {0};
    data.train_images.count = count;
    data.train_images.rows = data.train_images.cols = 28;
    data.train_images.pixels = malloc((size_t)count * 784);
    dae_rng r;
    dae_rng_seed(&r, 2, 0);
    for (size_t i = 0; i < (size_t)count * 784; i++) data.train_images.pixels[i] = (uint8_t)dae_rng_below(&r, 256);
    double *rates = malloc(sizeof(double) * reps);
    for (int rep = 0; rep < reps; rep++) {
        dae_model m;
        char err[DAE_ERR_LEN];
        dae_model_clone(&m, proto, err, sizeof err);
        dae_train_config cfg;
        dae_train_config_default(&cfg);
        cfg.epochs = 1;
        cfg.threads = threads;
        dae_train_state s;
        dae_train_state_init(&s, &m, &cfg, err, sizeof err);
        double t0 = bench_now_s();
        if (dae_train(&m, &s, &data, &cfg, err, sizeof err) != DAE_OK) {
            fprintf(stderr, "bench: training failed: %s\n", err);
            exit(1);
        }
        rates[rep] = count / (bench_now_s() - t0);
        dae_train_state_free(&s);
        dae_model_free(&m);
    }
    double med = bench_median(rates, reps);
    free(rates);
    free(data.train_images.pixels);
    return med;
}

/* Median GFLOP/s of C (m, n) = A (m, k) B (k, n) by the engine's kernels
 * (blas 0: dae_gemm_bias, ReLU'd with a bias, as a layer runs it) or by
 * OpenBLAS (1); each repetition at least 0.05 s. */
static double time_product(int m, int n, int k, int blas, int reps) {
    float *a = malloc(sizeof(float) * m * k), *b = malloc(sizeof(float) * k * n);
    float *c = malloc(sizeof(float) * m * n), *bias = malloc(sizeof(float) * n);
    dae_rng r;
    dae_rng_seed(&r, 4, 0);
    for (size_t i = 0; i < (size_t)m * k; i++) a[i] = dae_rng_uniform(&r);
    for (size_t i = 0; i < (size_t)k * n; i++) b[i] = dae_rng_uniform(&r) - 0.5f;
    for (int i = 0; i < n; i++) bias[i] = 0.01f * i;
    double *gflops = malloc(sizeof(double) * reps);
    for (int rep = -1; rep < reps; rep++) { /* -1: the warm-up */
        long calls = 0;
        double t0 = bench_now_s(), t;
        do {
            if (blas) dae_gemm(0, 0, m, n, k, 1.0f, a, k, b, n, 0.0f, c, n);
            else dae_gemm_bias(0, m, n, k, a, k, b, n, c, n, bias, 1);
            calls++;
        } while ((t = bench_now_s() - t0) < 0.05);
        if (rep >= 0) gflops[rep] = 2.0 * m * n * (double)k * calls / t / 1e9;
    }
    double med = bench_median(gflops, reps);
    free(a), free(b), free(c), free(bias), free(gflops);
    return med;
}

/* Median GFLOP/s of OpenBLAS's sgemm on n x n matrices with `threads`
 * BLAS threads. Leaves OpenBLAS single-threaded again, as the engine
 * needs it. */
static double time_sgemm(int n, int threads, int reps) {
    openblas_set_num_threads(threads);
    double g = time_product(n, n, n, 1, reps);
    dae_gemm_single_threaded();
    return g;
}

/* Prints the sgemm peak for 1 and 2 threads (or only_threads), total and
 * per core. */
static void bench_sgemm_peak(int reps, int only_threads) {
    enum { N = 2048 };
    printf("sgemm peak: %s, core %s, %dx%d matrices, median of %d repetitions\n\n", openblas_get_config(),
           openblas_get_corename(), N, N, reps);
    printf("%-6s %-8s %14s %14s\n", "", "threads", "GFLOP/s", "per core");
    int first = only_threads ? only_threads : 1, last = only_threads ? only_threads : 2;
    for (int threads = first; threads <= last; threads++) {
        double g = time_sgemm(N, threads, reps);
        printf("%-6s %-8d %14.1f %14.1f\n", "sgemm", threads, g, g / threads);
        fflush(stdout);
    }
}

/* Prints the engine's and OpenBLAS's GFLOP/s on the networks' forward
 * products at batch 64, one thread, each as one matrix product: the
 * convolution over its im2col, the transposed ones before their col2im.
 * (Some layers take other paths on some machines: the patches read in
 * place, the phases, the points.) */
static void bench_products(int reps) {
    static const struct {
        const char *what;
        int m, n, k;
    } shapes[] = {
        {"conv 14 -> 7, 16 -> 32 channels", 64 * 49, 32, 144},
        {"transposed 7 -> 14, 32 -> 16 (ae)", 64 * 49, 144, 32},
        {"transposed 7 -> 14, 64 -> 16 (unet)", 64 * 49, 144, 64},
        {"transposed 14 -> 28, 32 -> 16 (unet)", 64 * 196, 144, 32},
        {"transposed 1 -> 7, 64 -> 32", 64, 1568, 64},
    };
    printf("the networks' forward products at batch 64, one thread, median of %d repetitions;\n"
           "the engine's kernels for %s, OpenBLAS's for %s\n\n",
           reps, dae_isa_name(dae_gemm_isa()), openblas_get_corename());
    printf("%-38s %18s %14s %14s\n", "product", "m x n x k", "dae GFLOP/s", "sgemm GFLOP/s");
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        char dims[32];
        snprintf(dims, sizeof dims, "%d x %d x %d", shapes[i].m, shapes[i].n, shapes[i].k);
        double dae = time_product(shapes[i].m, shapes[i].n, shapes[i].k, 0, reps);
        double blas = time_product(shapes[i].m, shapes[i].n, shapes[i].k, 1, reps);
        printf("%-38s %18s %14.1f %14.1f\n", shapes[i].what, dims, dae, blas);
        fflush(stdout);
    }
}

/* Prints one architecture's rows of the table. */
static void bench_arch(const char *arch, int reps, int train_images, int only_threads, int forward_only) {
    dae_model m;
    char err[DAE_ERR_LEN];
    if (dae_model_init(&m, dae_model_named_spec(arch), err, sizeof err) != DAE_OK) {
        fprintf(stderr, "bench: %s\n", err);
        exit(1);
    }
    dae_model_init_params(&m, 0);
    double fwd_flop = 2.0 * dae_model_forward_macs(&m), train_flop = 3.0 * fwd_flop;
    printf("%s: %zu parameters, %.3f MFLOP forward per image\n", arch, m.n_params, fwd_flop / 1e6);
    int first = only_threads ? only_threads : 1, last = only_threads ? only_threads : 2;
    for (int threads = first; threads <= last; threads++) {
        dae_pool *pool = dae_pool_new(threads);
        static const int batches[] = {1, 64, 1024};
        for (int i = 0; i < 3; i++) {
            double s = time_forward(&m, pool, batches[i], reps);
            char what[32];
            snprintf(what, sizeof what, "forward, batch %d", batches[i]);
            printf("%-6s %-8d %-26s %14.0f %12.2f %10.1f\n", arch, threads, what, 1.0 / s, s * 1e6,
                   fwd_flop / s / 1e9);
        }
        dae_pool_free(pool);
        if (forward_only) continue;
        double rate = time_training(&m, threads, train_images, reps);
        printf("%-6s %-8d %-26s %14.0f %12.2f %10.1f   (%.2f s per 60,000-image epoch)\n", arch, threads,
               "training, batch 64", rate, 1e6 / rate, train_flop * rate / 1e9, 60000.0 / rate);
        fflush(stdout);
    }
    dae_model_free(&m);
}

int main(int argc, char **argv) {
    int reps = 5, train_images = 12800, only_threads = 0, forward_only = 0, sgemm_peak = 0, products = 0;
    char archs[64] = "ae";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc) reps = atoi(argv[++i]);
        else if (strcmp(argv[i], "--train-images") == 0 && i + 1 < argc) train_images = atoi(argv[++i]);
        else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) only_threads = atoi(argv[++i]);
        else if (strcmp(argv[i], "--arch") == 0 && i + 1 < argc) snprintf(archs, sizeof archs, "%s", argv[++i]);
        else if (strcmp(argv[i], "--forward-only") == 0) forward_only = 1;
        else if (strcmp(argv[i], "--sgemm-peak") == 0) sgemm_peak = 1;
        else if (strcmp(argv[i], "--products") == 0) products = 1;
        else {
            fprintf(stderr,
                    "usage: %s [--arch NAME[,NAME]] [--reps N] [--train-images N] [--threads N] [--forward-only]\n"
                    "       %s --sgemm-peak [--reps N] [--threads N]\n       %s --products [--reps N]\n",
                    argv[0], argv[0], argv[0]);
            return 2;
        }
    }
    if (reps < 1 || train_images < 64 || only_threads < 0 || only_threads > 64) {
        fprintf(stderr, "bench: --reps must be >= 1, --train-images >= 64, --threads from 1 to 64\n");
        return 2;
    }
    if (sgemm_peak) {
        bench_sgemm_peak(reps, only_threads);
        return 0;
    }
    dae_gemm_single_threaded(); /* the engine's products, and the BLAS's beside them */
    if (products) {
        bench_products(reps);
        return 0;
    }
    const char *names[8];
    int n_archs = 0;
    for (char *a = strtok(archs, ","); a != NULL && n_archs < 8; a = strtok(NULL, ",")) {
        if (dae_model_named_spec(a) == NULL) {
            fprintf(stderr, "bench: --arch: unknown architecture \"%s\" (%s)\n", a, dae_model_arch_names());
            return 2;
        }
        names[n_archs++] = a;
    }
    printf("dae engine benchmark, %s kernels, median of %d repetitions\n\n", dae_isa_name(dae_gemm_isa()), reps);
    printf("%-6s %-8s %-26s %14s %12s %10s\n", "arch", "threads", "measure", "images/s", "us/image", "GFLOP/s");
    for (int i = 0; i < n_archs; i++) {
        bench_arch(names[i], reps, train_images, only_threads, forward_only);
        printf("\n");
    }
    return 0;
}
