/* test_rng.c - the seeded generator: reproducibility, uniform range, and
 * the distribution of both normal generators. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"

Test(rng, same_seed_and_stream_repeat_and_others_differ) {
    dae_rng a, b, c;
    dae_rng_seed(&a, 1, 2);
    dae_rng_seed(&b, 1, 2);
    dae_rng_seed(&c, 1, 3);
    int same_as_other = 0;
    for (int i = 0; i < 1000; i++) {
        uint64_t x = dae_rng_next(&a);
        cr_assert_eq(x, dae_rng_next(&b));
        same_as_other += x == dae_rng_next(&c);
    }
    cr_assert_lt(same_as_other, 2);
}

Test(rng, uniforms_and_bounded_integers_stay_in_range) {
    dae_rng r;
    dae_rng_seed(&r, 5, 0);
    long counts[7] = {0};
    for (int i = 0; i < 70000; i++) {
        float u = dae_rng_uniform(&r);
        double d = dae_rng_uniform_double(&r);
        cr_assert(u >= 0.0f && u < 1.0f && d >= 0.0 && d < 1.0);
        counts[dae_rng_below(&r, 7)]++;
    }
    for (int k = 0; k < 7; k++) cr_assert(labs(counts[k] - 10000) < 500, "bucket %d: %ld", k, counts[k]);
}

/* Moments and tail frequencies of n normal draws, each within about five
 * standard errors of N(0,1)'s. */
static void check_normal_sample(const float *z, size_t n, const char *what) {
    double s1 = 0, s2 = 0, s3 = 0, s4 = 0;
    long beyond2 = 0, beyond3 = 0;
    for (size_t i = 0; i < n; i++) {
        double x = z[i];
        cr_assert(isfinite(x), "%s: non-finite draw", what);
        s1 += x, s2 += x * x, s3 += x * x * x, s4 += x * x * x * x;
        beyond2 += fabs(x) > 2.0;
        beyond3 += fabs(x) > 3.0;
    }
    double mean = s1 / n, var = s2 / n - mean * mean, skew = s3 / n, kurt = s4 / n;
    cr_assert(fabs(mean) < 5 / sqrt(n), "%s: mean %g", what, mean);
    cr_assert(fabs(var - 1) < 5 * sqrt(2.0 / n), "%s: variance %g", what, var);
    cr_assert(fabs(skew) < 5 * sqrt(15.0 / n), "%s: third moment %g", what, skew);
    cr_assert(fabs(kurt - 3) < 5 * sqrt(96.0 / n), "%s: fourth moment %g", what, kurt);
    double p2 = 0.0455003, p3 = 0.0026998;
    cr_assert(fabs((double)beyond2 / n - p2) < 5 * sqrt(p2 / n), "%s: P(|z|>2) = %g", what, (double)beyond2 / n);
    cr_assert(fabs((double)beyond3 / n - p3) < 5 * sqrt(p3 / n), "%s: P(|z|>3) = %g", what, (double)beyond3 / n);
}

Test(rng, normal_draws_follow_the_standard_normal) {
    enum { N = 1 << 21 };
    float *z = malloc(N * sizeof(float));
    dae_rng r;
    dae_rng_seed(&r, 11, 0);
    for (size_t i = 0; i < N; i++) z[i] = dae_rng_normal(&r);
    check_normal_sample(z, N, "dae_rng_normal");
    dae_rng_seed(&r, 11, 1);
    dae_rng_normal_fill(&r, z, N);
    check_normal_sample(z, N, "dae_rng_normal_fill");
    free(z);
}

/* Each pair of dae_rng_normal_fill's normals is Box-Muller of one draw of
 * the generator: u1 from its top 24 bits (+ 1, so never 0), u2 from the
 * next 24, z = sqrt(-2 ln u1) (cos, sin)(2 pi u2). Against that formula in
 * double, value by value, for lengths that end anywhere in a vector and
 * in a block (the fill's loops run over whole vectors of pairs). */
Test(rng, normal_fill_is_box_muller_of_each_draw) {
    static const size_t lengths[] = {1, 2, 15, 16, 17, 31, 32, 33, 255, 256, 257, 301, 784};
    for (size_t t = 0; t < sizeof lengths / sizeof lengths[0]; t++) {
        size_t n = lengths[t];
        float z[784];
        dae_rng fill, draws;
        dae_rng_seed(&fill, 7, n);
        dae_rng_seed(&draws, 7, n);
        dae_rng_normal_fill(&fill, z, n);
        for (size_t i = 0; i < n; i += 2) {
            uint64_t v = dae_rng_next(&draws);
            double u1 = (double)((v >> 40) + 1) / 16777216.0, u2 = (double)((v >> 16) & 0xffffff) / 16777216.0;
            double radius = sqrt(-2.0 * log(u1)), angle = 6.283185307179586 * u2;
            double want[2] = {radius * cos(angle), radius * sin(angle)};
            for (size_t k = 0; k < 2 && i + k < n; k++)
                cr_assert(fabs(z[i + k] - want[k]) < 1e-5, "length %zu, value %zu: %.8f, Box-Muller %.8f", n, i + k,
                          (double)z[i + k], want[k]);
        }
    }
}

Test(rng, normal_fill_is_reproducible_for_odd_lengths) {
    float a[301], b[301];
    dae_rng r;
    dae_rng_seed(&r, 3, 4);
    dae_rng_normal_fill(&r, a, 301);
    dae_rng_seed(&r, 3, 4);
    dae_rng_normal_fill(&r, b, 301);
    cr_assert_eq(memcmp(a, b, sizeof a), 0);
    /* Whole pairs are drawn: the first 300 of 301 equal a fill of 300. */
    dae_rng_seed(&r, 3, 4);
    dae_rng_normal_fill(&r, b, 300);
    cr_assert_eq(memcmp(a, b, 300 * sizeof(float)), 0);
}
