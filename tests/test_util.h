/* test_util.h - helpers shared by the Criterion tests: loading PyTorch
 * fixtures, layout conversion, and array comparison that reports the
 * worst element. */
#ifndef DAE_TEST_UTIL_H
#define DAE_TEST_UTIL_H

#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors.h"

#define FIXTURES "tests/fixtures"

/* Loads a fixture file or fails the test naming it. */
static inline void fixture_load(const char *path, dae_st_file *f) {
    char err[DAE_ERR_LEN] = "";
    dae_status st = dae_st_load(path, f, err, sizeof err);
    cr_assert_eq(st, DAE_OK, "fixture %s: %s (run `make refs`)", path, err);
}

/* The named tensor of a fixture; fails the test when absent. */
static inline const dae_st_tensor *fixture_tensor(const dae_st_file *f, const char *name) {
    const dae_st_tensor *t = dae_st_find(f, name);
    cr_assert_not_null(t, "fixture tensor %s missing", name);
    return t;
}

/* An integer from a fixture's metadata. */
static inline int fixture_int(const dae_st_file *f, const char *key) {
    const char *v = dae_st_meta(f, key);
    cr_assert_not_null(v, "fixture metadata %s missing", key);
    return atoi(v);
}

/* Copies images (B, C, plane) to (B, plane, C): NCHW -> NHWC. */
static inline void nchw_to_nhwc(float *dst, const float *src, int batch, int c, size_t plane) {
    for (int b = 0; b < batch; b++)
        for (int ch = 0; ch < c; ch++)
            for (size_t p = 0; p < plane; p++)
                dst[((size_t)b * plane + p) * c + ch] = src[((size_t)b * c + ch) * plane + p];
}

/* Copies images (B, plane, C) to (B, C, plane): NHWC -> NCHW. */
static inline void nhwc_to_nchw(float *dst, const float *src, int batch, int c, size_t plane) {
    for (int b = 0; b < batch; b++)
        for (int ch = 0; ch < c; ch++)
            for (size_t p = 0; p < plane; p++)
                dst[((size_t)b * c + ch) * plane + p] = src[((size_t)b * plane + p) * c + ch];
}

/* Largest |got - want| over n values; *where gets its index. */
static inline double max_abs_diff(const float *got, const float *want, size_t n, size_t *where) {
    double worst = 0.0;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - want[i]);
        if (d > worst || isnan(d)) worst = isnan(d) ? INFINITY : d, at = i;
    }
    if (where) *where = at;
    return worst;
}

/* Asserts max abs difference <= tol, printing the worst element. */
#define assert_close(got, want, n, tol, what)                                                   \
    do {                                                                                        \
        size_t at_;                                                                             \
        double d_ = max_abs_diff((got), (want), (n), &at_);                                     \
        cr_assert(d_ <= (tol), "%s: max abs diff %.3g > %.1g at [%zu]: got %.8g want %.8g",     \
                  (what), d_, (double)(tol), at_, (double)(got)[at_], (double)(want)[at_]);     \
    } while (0)

#endif
