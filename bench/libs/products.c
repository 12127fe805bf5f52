/* products.c - the engine's product kernels against the libraries made for
 * small matrix products: libxsmm (JIT), OpenBLAS and BLIS, on the shapes
 * the networks multiply, one thread (bench/libs/run.sh builds and runs it).
 *
 *   products [--reps N] [--blis-arch NAME]
 *
 * Each row is C (m, n) = A (m, k) B (k, n), row-major, with A's rows lda
 * floats apart and C's ldc (the Winograd points' products read every
 * other row of a tile's points); `calls` such products make one image's
 * (or one batch's) work, timed as a whole. The figures are median GFLOP/s
 * of several repetitions, engines taking turns within each; "bits" says
 * whether each library's C is dae's to the bit. The instruction set is
 * each library's choice unless the environment forces one (run.sh --avx2:
 * DAE_ISA=avx2, LIBXSMM_TARGET=hsw, OPENBLAS_CORETYPE=Haswell). BLIS
 * takes the kernels --blis-arch names (skx, zen3, haswell, ...: its
 * configurations), else its choice for the CPU, which may be its generic
 * C for one it does not know. */
/* OpenBLAS's cblas.h first: blis.h declares BLIS's own CBLAS under the
 * same guard. */
#include <cblas.h>
#include <blis.h>
#include <libxsmm.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../timing.h"
#include "gemm.h"
#include "rng.h"

typedef struct {
    const char *what;
    int m, n, k, lda, ldc, calls;
} shape;

/* bench_core --products's: each layer's product at batch 64 as one matrix
 * product (the convolution over its im2col, the transposed ones before
 * their col2im). The rest: the U-Net's transposed 3x3 layers by Winograd
 * points, as the AVX2 path runs them (layers.c), at batch 1 and in the
 * chunks of a batch of 16 (the server's --max-batch): 16 kinds of point,
 * some of them two sub-rows, each product over a tile's points of one
 * kind. */
static const shape SHAPES[] = {
    {"conv 14 -> 7, 16 -> 32, batch 64", 64 * 49, 32, 144, 144, 32, 1},
    {"transposed 7 -> 14, 64 -> 16, batch 64", 64 * 49, 144, 64, 64, 144, 1},
    {"transposed 14 -> 28, 32 -> 16, batch 64", 64 * 196, 144, 32, 32, 144, 1},
    {"transposed 1 -> 7, 64 -> 32, batch 64", 64, 1568, 64, 64, 1568, 1},
    {"points 14 -> 28, batch 1 (12 of 21)", 49, 16, 32, 192, 96, 12},
    {"points 14 -> 28, batch 1 (5 of 21)", 49, 16, 32, 160, 80, 5},
    {"points 14 -> 28, batch 1 (4 of 21)", 49, 16, 32, 128, 64, 4},
    {"points 7 -> 14, batch 1 (12 of 21)", 12, 16, 64, 384, 96, 12},
    {"points 7 -> 14, batch 1 (5 of 21)", 16, 16, 64, 320, 80, 5},
    {"points 7 -> 14, batch 1 (4 of 21)", 9, 16, 64, 256, 64, 4},
    {"points 14 -> 28, batch 16 (2 images)", 98, 16, 32, 192, 96, 12},
    {"points 7 -> 14, batch 16 (6 images)", 72, 16, 64, 384, 96, 12},
};
enum { N_SHAPES = sizeof SHAPES / sizeof SHAPES[0] };

enum { DAE, XSMM, OPENBLAS, BLIS, N_ENGINES };
static const char *const ENGINE_NAMES[N_ENGINES] = {"dae", "libxsmm", "OpenBLAS", "BLIS"};

/* libxsmm's kernels are column-major: C^T (n, m) = B^T (n, k) A^T (k, m),
 * so its "m" is our n and its "n" a block of our rows. A kernel takes at
 * most XSMM_ROWS rows at a time (it is made for small blocks; a caller
 * of a tall product loops over them, as here): xsmm_block whole blocks,
 * xsmm_tail the m % XSMM_ROWS rows left (NULL where there are none). */
enum { XSMM_ROWS = 64 };

typedef struct {
    const shape *s;
    float *a, *b, *c;
    libxsmm_smmfunction xsmm_block, xsmm_tail;
} product;

static float *filled(size_t n, dae_rng *r) {
    float *p = malloc(sizeof(float) * n);
    if (p == NULL) {
        fprintf(stderr, "products: out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < n; i++) p[i] = dae_rng_uniform(r) - 0.5f;
    return p;
}

static libxsmm_smmfunction xsmm_kernel(const shape *s, int rows) {
    int m = s->n, n = rows, k = s->k, lda = s->n, ldb = s->lda, ldc = s->ldc, flags = LIBXSMM_GEMM_FLAG_NONE;
    float alpha = 1.0f, beta = 0.0f;
    return rows > 0 ? libxsmm_smmdispatch(m, n, k, &lda, &ldb, &ldc, &alpha, &beta, &flags, NULL) : NULL;
}

/* The floats of C the products write (and the padding between). */
static size_t c_floats(const shape *s) { return (size_t)s->m * s->ldc + (size_t)s->calls * s->n; }

static void product_init(product *p, const shape *s, dae_rng *r) {
    p->s = s;
    /* Each call's operands lie apart, as the kinds' do. */
    p->a = filled((size_t)s->m * s->lda + (size_t)s->calls * s->k, r);
    p->b = filled((size_t)s->calls * s->k * s->n, r);
    p->c = calloc(c_floats(s), sizeof(float));
    p->xsmm_block = xsmm_kernel(s, s->m >= XSMM_ROWS ? XSMM_ROWS : 0);
    p->xsmm_tail = xsmm_kernel(s, s->m % XSMM_ROWS);
}

/* Whether libxsmm made the kernels p needs (none for a block over its
 * size limit). */
static int has_xsmm(const product *p) {
    const shape *s = p->s;
    return (s->m < XSMM_ROWS || p->xsmm_block != NULL) && (s->m % XSMM_ROWS == 0 || p->xsmm_tail != NULL);
}

static void product_free(product *p) { free(p->a), free(p->b), free(p->c); }

/* One image's (or batch's) products by engine e into c. */
static void product_run(const product *p, int e, float *c) {
    const shape *s = p->s;
    for (int call = 0; call < s->calls; call++) {
        /* Call j reads the tile's point j (an offset of k floats in A's
         * rows) and writes its column block of C, as the kinds do. */
        const float *a = p->a + (size_t)call * s->k, *b = p->b + (size_t)call * s->k * s->n;
        float *cc = c + (size_t)call * s->n;
        switch (e) {
        case DAE:
            dae_gemm_bias(0, s->m, s->n, s->k, a, s->lda, b, s->n, cc, s->ldc, NULL, 0);
            break;
        case XSMM:
            for (int row = 0; row < s->m; row += XSMM_ROWS)
                (s->m - row >= XSMM_ROWS ? p->xsmm_block : p->xsmm_tail)(b, a + (size_t)row * s->lda,
                                                                         cc + (size_t)row * s->ldc);
            break;
        case OPENBLAS:
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, s->m, s->n, s->k, 1.0f, a, s->lda, b, s->n, 0.0f,
                        cc, s->ldc);
            break;
        case BLIS: {
            float one = 1.0f, zero = 0.0f;
            bli_sgemm(BLIS_NO_TRANSPOSE, BLIS_NO_TRANSPOSE, s->m, s->n, s->k, &one, (float *)a, s->lda, 1, (float *)b,
                      s->n, 1, &zero, cc, s->ldc, 1);
            break;
        }
        }
    }
}

/* Seconds per run of engine e: the runs that fill at least 20 ms. */
static double time_runs(const product *p, int e) {
    long runs = 0;
    double t0 = bench_now_s(), t;
    do {
        product_run(p, e, p->c);
        runs++;
    } while ((t = bench_now_s() - t0) < 0.02);
    return t / runs;
}

/* Max |C_e - ref| (ref: dae's C) and whether they are the same bits. */
static double difference(const product *p, int e, const float *ref, int *same_bits) {
    size_t size = c_floats(p->s);
    float *mine = calloc(size, sizeof(float));
    product_run(p, e, mine);
    double most = 0;
    *same_bits = memcmp(mine, ref, size * sizeof(float)) == 0;
    for (size_t i = 0; i < size; i++) most = fmax(most, fabs((double)mine[i] - ref[i]));
    free(mine);
    return most;
}

/* Makes BLIS take its configuration `name`: BLIS_ARCH_TYPE holds its
 * number, read at BLIS's first use. */
static int blis_take_arch(const char *name) {
    for (int id = 0; id < BLIS_NUM_ARCHS; id++)
        if (strcmp(bli_arch_string((arch_t)id), name) == 0) {
            char number[16];
            snprintf(number, sizeof number, "%d", id);
            return setenv("BLIS_ARCH_TYPE", number, 1);
        }
    return -1;
}

int main(int argc, char **argv) {
    int reps = 7;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc) reps = atoi(argv[++i]);
        else if (strcmp(argv[i], "--blis-arch") == 0 && i + 1 < argc) {
            if (blis_take_arch(argv[++i]) != 0) {
                fprintf(stderr, "products: BLIS has no configuration %s\n", argv[i]);
                return 2;
            }
        } else {
            fprintf(stderr, "usage: %s [--reps N] [--blis-arch NAME]\n", argv[0]);
            return 2;
        }
    }
    if (reps < 1) reps = 1;
    libxsmm_init();
    bli_thread_set_num_threads(1);
    dae_gemm_single_threaded();
    printf("one thread, median GFLOP/s of %d repetitions, engines taking turns; dae's kernels for %s, "
           "libxsmm %s's for %s, %s (core %s), BLIS %s's for %s\n\n",
           reps, dae_isa_name(dae_gemm_isa()), LIBXSMM_VERSION, libxsmm_get_target_arch(), openblas_get_config(),
           openblas_get_corename(), bli_info_get_version_str(), bli_arch_string(bli_arch_query_id()));
    printf("%-42s %22s %5s", "product", "m x n x k (lda, ldc)", "calls");
    for (int e = 0; e < N_ENGINES; e++) printf(" %9s", ENGINE_NAMES[e]);
    printf("  bits of libxsmm, OpenBLAS, BLIS\n");
    dae_rng r;
    dae_rng_seed(&r, 6, 0);
    double *samples = malloc(sizeof(double) * reps * N_ENGINES);
    for (int i = 0; i < N_SHAPES; i++) {
        const shape *s = &SHAPES[i];
        product p;
        product_init(&p, s, &r);
        double flop = 2.0 * s->m * s->n * (double)s->k * s->calls;
        int no_xsmm = !has_xsmm(&p);
        for (int e = 0; e < N_ENGINES; e++) {
            if (e == XSMM && no_xsmm) continue;
            time_runs(&p, e); /* the warm-up */
        }
        for (int rep = 0; rep < reps; rep++)
            for (int e = 0; e < N_ENGINES; e++)
                samples[e * reps + rep] = e == XSMM && no_xsmm ? NAN : flop / time_runs(&p, e) / 1e9;
        char dims[48];
        snprintf(dims, sizeof dims, "%dx%dx%d (%d, %d)", s->m, s->n, s->k, s->lda, s->ldc);
        printf("%-42s %22s %5d", s->what, dims, s->calls);
        for (int e = 0; e < N_ENGINES; e++) printf(" %9.1f", bench_median(samples + e * reps, reps));
        printf(" ");
        float *ref = calloc(c_floats(s), sizeof(float));
        product_run(&p, DAE, ref);
        for (int e = XSMM; e < N_ENGINES; e++) {
            if (e == XSMM && no_xsmm) {
                printf(" -");
                continue;
            }
            int same;
            double diff = difference(&p, e, ref, &same);
            printf(" %s", same ? "same" : "");
            if (!same) printf("%.1e", diff);
        }
        printf("\n");
        fflush(stdout);
        free(ref);
        product_free(&p);
    }
    free(samples);
    libxsmm_finalize();
    return 0;
}
