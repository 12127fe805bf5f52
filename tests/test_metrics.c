/* test_metrics.c - MSE and PSNR on hand-computed cases, SSIM identities,
 * the separable SSIM against the naive one and against PyTorch reference
 * values (tests/fixtures/ssim_ref.txt, made by tests/ref/make_ssim_refs.py),
 * and the dae_quality accumulator. Run from the repo root. */
#include <criterion/criterion.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"
#include "noise.h"
#include "rng.h"
#include "test_util.h"

#define SSIM_REF_PATH "tests/fixtures/ssim_ref.txt"

/* ---- Helpers ---------------------------------------------------------- */

/* Returns a malloc'ed h x w image of seeded uniform values in [lo, hi). */
static float *random_image(int h, int w, float lo, float hi, uint64_t seed) {
    return uniform_floats((size_t)h * (size_t)w, lo, hi, seed, 77);
}

/* Returns a malloc'ed copy of x with seeded Gaussian noise (sigma) added
 * and clipped to [0, 1]. */
static float *noisy_copy(const float *x, int h, int w, float sigma, uint64_t seed) {
    size_t n = (size_t)h * (size_t)w;
    float *p = malloc(n * sizeof *p);
    cr_assert_not_null(p);
    dae_noise_spec s = {.kind = DAE_NOISE_GAUSSIAN, .level = sigma, .clip = 1};
    dae_noise_apply(&s, x, p, n, seed, 0);
    return p;
}

/* ---- MSE and PSNR ----------------------------------------------------- */

Test(metrics, mse_by_hand) {
    float a[4] = {0, 0, 0, 0}, b[4] = {1, 0, 0, 0};
    cr_expect_eq(dae_metrics_mse(a, b, 4), 0.25);
    cr_expect_eq(dae_metrics_mse(b, a, 4), 0.25);
    float c[4] = {0.5f, 0.5f, 0.5f, 0.5f}, d[4] = {0.25f, 0.75f, 0.25f, 0.75f};
    cr_expect_eq(dae_metrics_mse(c, d, 4), 0.0625);
    float e[3] = {0.0f, 0.5f, 1.0f}, f[3] = {0.125f, 0.25f, 0.5f};
    /* (1/64 + 1/16 + 1/4) / 3 = 21/192 */
    cr_expect_float_eq(dae_metrics_mse(e, f, 3), 21.0 / 192.0, 1e-15);
    cr_expect_eq(dae_metrics_mse(e, e, 3), 0.0);
    cr_expect(isnan(dae_metrics_mse(e, f, 0)));
}

Test(metrics, mse_accumulates_in_double) {
    /* 1e6 pixels each off by 2^-12: a float running sum would drift. */
    enum { N = 1000000 };
    float *a = calloc(N, sizeof *a), *b = malloc(N * sizeof *b);
    cr_assert(a && b);
    for (size_t i = 0; i < N; i++) b[i] = 1.0f / 4096.0f;
    cr_expect_float_eq(dae_metrics_mse(a, b, N), 1.0 / (4096.0 * 4096.0), 1e-18);
    free(a);
    free(b);
}

Test(metrics, psnr_by_hand) {
    float a[4] = {0, 0, 0, 0}, b[4] = {1, 0, 0, 0};
    cr_expect_float_eq(dae_metrics_psnr(a, b, 4), 10.0 * log10(4.0), 1e-12); /* 6.0206 dB */
    float c[4] = {0.5f, 0.5f, 0.5f, 0.5f}, d[4] = {0.25f, 0.75f, 0.25f, 0.75f};
    cr_expect_float_eq(dae_metrics_psnr(c, d, 4), 10.0 * log10(16.0), 1e-12); /* 12.04 dB */
    float ones[4] = {1, 1, 1, 1};
    cr_expect_float_eq(dae_metrics_psnr(a, ones, 4), 0.0, 1e-12);
    /* mse 1e-4 -> 40 dB */
    float e[1] = {0.5f}, f[1] = {0.51f};
    double mse = ((double)0.51f - 0.5) * ((double)0.51f - 0.5);
    cr_expect_float_eq(dae_metrics_psnr(e, f, 1), -10.0 * log10(mse), 1e-9);
    cr_expect_float_eq(dae_metrics_psnr(e, f, 1), 40.0, 1e-4);
}

Test(metrics, psnr_cap) {
    float a[4] = {0.25f, 0.5f, 0.75f, 1.0f};
    cr_expect_eq(dae_metrics_psnr(a, a, 4), 100.0);
    cr_expect_eq(dae_metrics_psnr(a, a, 4), DAE_METRICS_PSNR_MAX);
    /* One float ulp apart: mse ~ 1e-15, uncapped PSNR ~ 150 dB; capped. */
    float b[4] = {0.25f, 0.5f, 0.75f, nextafterf(1.0f, 0.0f)};
    cr_expect_eq(dae_metrics_psnr(a, b, 4), 100.0);
    cr_expect(isnan(dae_metrics_psnr(a, b, 0)));
}

/* ---- SSIM ------------------------------------------------------------- */

Test(metrics, ssim_identity_is_one) {
    int sizes[][2] = {{11, 11}, {28, 28}, {32, 20}, {11, 40}, {40, 11}};
    for (int k = 0; k < 5; k++) {
        int h = sizes[k][0], w = sizes[k][1];
        float *x = random_image(h, w, 0.0f, 1.0f, (uint64_t)k);
        cr_expect_float_eq(dae_metrics_ssim(x, x, h, w), 1.0, 1e-12, "%dx%d", h, w);
        cr_expect_float_eq(dae_metrics_ssim_naive(x, x, h, w), 1.0, 1e-12, "%dx%d", h, w);
        free(x);
    }
    /* constant images too (zero variance: only C2/C2) */
    float c[28 * 28];
    for (int i = 0; i < 28 * 28; i++) c[i] = 0.3f;
    cr_expect_float_eq(dae_metrics_ssim(c, c, 28, 28), 1.0, 1e-12);
}

Test(metrics, ssim_symmetric) {
    float *a = random_image(28, 28, 0.0f, 1.0f, 1);
    float *b = noisy_copy(a, 28, 28, 0.3f, 2);
    cr_expect_eq(dae_metrics_ssim(a, b, 28, 28), dae_metrics_ssim(b, a, 28, 28));
    cr_expect_eq(dae_metrics_ssim_naive(a, b, 28, 28), dae_metrics_ssim_naive(b, a, 28, 28));
    free(a);
    free(b);
}

Test(metrics, ssim_constant_images_by_hand) {
    /* Constant a and b: no variance, so SSIM = (2ab + C1) / (a^2 + b^2 + C1). */
    enum { H = 20, W = 15 };
    float a[H * W], b[H * W];
    for (int i = 0; i < H * W; i++) a[i] = 0.25f, b[i] = 0.5f;
    double c1 = 0.01 * 0.01;
    double want = (2 * 0.25 * 0.5 + c1) / (0.25 * 0.25 + 0.5 * 0.5 + c1);
    cr_expect_float_eq(dae_metrics_ssim(a, b, H, W), want, 1e-9);
}

Test(metrics, ssim_too_small_is_nan) {
    float x[11 * 11] = {0};
    cr_expect(isnan(dae_metrics_ssim(x, x, 10, 11)));
    cr_expect(isnan(dae_metrics_ssim(x, x, 11, 10)));
    cr_expect(isnan(dae_metrics_ssim(x, x, 0, 0)));
    cr_expect(isnan(dae_metrics_ssim(x, x, -5, 30)));
    cr_expect(isnan(dae_metrics_ssim_naive(x, x, 10, 11)));
    cr_expect_eq(dae_metrics_ssim_scratch_len(10, 40), 0);
    cr_expect(!isnan(dae_metrics_ssim(x, x, 11, 11)));
}

Test(metrics, ssim_separable_matches_naive) {
    int sizes[][2] = {{11, 11}, {12, 11}, {11, 13}, {28, 28}, {32, 20}, {20, 32}, {64, 48}};
    for (int k = 0; k < 7; k++) {
        int h = sizes[k][0], w = sizes[k][1];
        float *a = random_image(h, w, 0.1f, 0.9f, 100 + (uint64_t)k);
        const float sigmas[] = {0.02f, 0.1f, 0.5f};
        for (int s = 0; s < 3; s++) {
            float *b = noisy_copy(a, h, w, sigmas[s], (uint64_t)(k * 10 + s));
            double fast = dae_metrics_ssim(a, b, h, w);
            double naive = dae_metrics_ssim_naive(a, b, h, w);
            cr_expect_float_eq(fast, naive, 1e-12, "%dx%d sigma %g: %.15f vs %.15f",
                               h, w, (double)sigmas[s], fast, naive);
            cr_expect(fast >= -1.0 && fast <= 1.0);
            free(b);
        }
        free(a);
    }
}

Test(metrics, ssim_scratch_variant_and_reuse) {
    float *a = random_image(32, 20, 0.0f, 1.0f, 5);
    float *b = noisy_copy(a, 32, 20, 0.2f, 6);
    size_t len = dae_metrics_ssim_scratch_len(32, 20);
    cr_expect_eq(len, 5 * 32 * 10 + 5 * 10);
    double *scratch = malloc(len * sizeof *scratch);
    cr_assert_not_null(scratch);
    double first = dae_metrics_ssim_scratch(a, b, 32, 20, scratch);
    double again = dae_metrics_ssim_scratch(a, b, 32, 20, scratch);
    cr_expect_eq(first, again);
    cr_expect_eq(first, dae_metrics_ssim(a, b, 32, 20));
    free(scratch);
    free(a);
    free(b);
}

Test(metrics, ssim_falls_with_noise) {
    float *a = random_image(28, 28, 0.2f, 0.8f, 8);
    double prev = 1.0;
    const float sigmas[] = {0.01f, 0.05f, 0.1f, 0.2f, 0.4f};
    for (int s = 0; s < 5; s++) {
        /* same seed: the same noise pattern, scaled */
        dae_noise_spec spec = {.kind = DAE_NOISE_GAUSSIAN, .level = sigmas[s]};
        float b[28 * 28];
        dae_noise_apply(&spec, a, b, 28 * 28, 3, 3);
        double v = dae_metrics_ssim(a, b, 28, 28);
        cr_expect(v < prev, "sigma %g: ssim %f not below %f", (double)sigmas[s], v, prev);
        prev = v;
    }
    free(a);
}

/* Reads one whitespace-separated list of n floats; returns 1 on success. */
static int read_floats(FILE *f, float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (fscanf(f, "%f", &x[i]) != 1) return 0;
    return 1;
}

Test(metrics, ssim_matches_pytorch_reference) {
    FILE *f = fopen(SSIM_REF_PATH, "r");
    cr_assert_not_null(f, "cannot open %s (run the tests from the repo root)", SSIM_REF_PATH);
    char line[256];
    int cases = 0, sizes_28 = 0, sizes_32x20 = 0;
    /* skip the '#' header lines */
    long pos = ftell(f);
    while (fgets(line, sizeof line, f) && line[0] == '#') pos = ftell(f);
    fseek(f, pos, SEEK_SET);
    char name[64];
    int h, w;
    double want;
    while (fscanf(f, "%63s %d %d %lf", name, &h, &w, &want) == 4) {
        cr_assert(h >= 11 && w >= 11 && h <= 256 && w <= 256, "%s: bad size %dx%d", name, h, w);
        size_t n = (size_t)h * (size_t)w;
        float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b);
        cr_assert(a && b);
        cr_assert(read_floats(f, a, n) && read_floats(f, b, n), "%s: short pixel data", name);
        double got = dae_metrics_ssim(a, b, h, w);
        double naive = dae_metrics_ssim_naive(a, b, h, w);
        cr_expect(fabs(got - want) <= 1e-6, "%s (%dx%d): ssim %.12f, pytorch %.12f",
                  name, h, w, got, want);
        cr_expect(fabs(naive - want) <= 1e-6, "%s: naive ssim %.12f, pytorch %.12f",
                  name, naive, want);
        cr_expect(fabs(dae_metrics_ssim(b, a, h, w) - want) <= 1e-6, "%s: swapped", name);
        sizes_28 += h == 28 && w == 28;
        sizes_32x20 += h == 32 && w == 20;
        cases++;
        free(a);
        free(b);
    }
    cr_expect(feof(f) || (fscanf(f, " ") == 0 && feof(f)), "trailing junk in %s", SSIM_REF_PATH);
    fclose(f);
    cr_expect(cases >= 4 && sizes_28 >= 2 && sizes_32x20 >= 2,
              "%s holds %d cases (%d of 28x28, %d of 32x20)", SSIM_REF_PATH, cases,
              sizes_28, sizes_32x20);
}

/* ---- Accumulator ------------------------------------------------------ */

Test(metrics, quality_empty_is_nan) {
    dae_quality q = {0};
    cr_expect(isnan(dae_quality_mse(&q)));
    cr_expect(isnan(dae_quality_psnr(&q)));
    cr_expect(isnan(dae_quality_ssim(&q)));
}

Test(metrics, quality_means_of_per_image_values) {
    enum { K = 6, H = 28, W = 28, N = H * W };
    float *clean[K], *test[K];
    double mse = 0, psnr = 0, ssim = 0;
    for (int k = 0; k < K; k++) {
        clean[k] = random_image(H, W, 0.0f, 1.0f, 200 + (uint64_t)k);
        /* image 0 is perfect (PSNR capped at 100), the rest noisier and noisier */
        test[k] = noisy_copy(clean[k], H, W, 0.05f * (float)k, 300 + (uint64_t)k);
        mse += dae_metrics_mse(clean[k], test[k], N);
        psnr += dae_metrics_psnr(clean[k], test[k], N);
        ssim += dae_metrics_ssim(clean[k], test[k], H, W);
    }
    dae_quality all = {0}, left = {0}, right = {0};
    for (int k = 0; k < K; k++) {
        dae_quality_add(&all, clean[k], test[k], H, W);
        dae_quality_add(k < 2 ? &left : &right, clean[k], test[k], H, W);
    }
    cr_expect_eq(all.count, K);
    cr_expect_float_eq(dae_quality_mse(&all), mse / K, 1e-15);
    cr_expect_float_eq(dae_quality_psnr(&all), psnr / K, 1e-12);
    cr_expect_float_eq(dae_quality_ssim(&all), ssim / K, 1e-15);
    /* mean per-image PSNR, not PSNR of the mean MSE */
    cr_expect(fabs(dae_quality_psnr(&all) - (-10.0 * log10(mse / K))) > 1.0);

    dae_quality_merge(&left, &right);
    cr_expect_eq(left.count, K);
    cr_expect_float_eq(dae_quality_mse(&left), dae_quality_mse(&all), 1e-15);
    cr_expect_float_eq(dae_quality_psnr(&left), dae_quality_psnr(&all), 1e-12);
    cr_expect_float_eq(dae_quality_ssim(&left), dae_quality_ssim(&all), 1e-15);

    dae_quality empty = {0};
    dae_quality_merge(&left, &empty);
    cr_expect_eq(left.count, K);
    for (int k = 0; k < K; k++) {
        free(clean[k]);
        free(test[k]);
    }
}
