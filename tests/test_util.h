/* test_util.h - helpers shared by the Criterion tests: loading PyTorch
 * fixtures, layout conversion, array comparison that reports the worst
 * element, seeded random arrays, temporary directories, and a counter that
 * waits for callbacks from other threads, and a check run on every
 * instruction set the CPU has. */
#ifndef DAE_TEST_UTIL_H
#define DAE_TEST_UTIL_H

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <ftw.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gemm.h"
#include "rng.h"
#include "safetensors.h"

/* A test's time limit in seconds (Criterion's .timeout), except under
 * AddressSanitizer: there Criterion's timer bookkeeping (BoxFort's
 * timeout requests, 48 bytes each) is now and then lost when timed tests
 * overlap, and LeakSanitizer fails the run on Criterion's own leak. The
 * sanitizer run is bounded by `timeout` in the Makefile instead. */
#ifdef __SANITIZE_ADDRESS__
#define TEST_TIME_LIMIT(seconds) 0
#else
#define TEST_TIME_LIMIT(seconds) (seconds)
#endif

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

/* Returns a malloc'ed array of n values uniform in [lo, hi), drawn from
 * stream `stream` of seed `seed`, so each test's data is reproducible. */
static inline float *uniform_floats(size_t n, float lo, float hi, uint64_t seed, uint64_t stream) {
    float *p = malloc(n * sizeof *p);
    cr_assert_not_null(p);
    dae_rng r;
    dae_rng_seed(&r, seed, stream);
    for (size_t i = 0; i < n; i++) p[i] = lo + (hi - lo) * dae_rng_uniform(&r);
    return p;
}

/* Makes a fresh directory $TMPDIR/dae_test_<tag>_XXXXXX (or under /tmp);
 * the caller removes it, and what it holds, with test_rm_tree. */
static inline char *test_tmpdir(const char *tag) {
    const char *tmp = getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp";
    size_t n = strlen(tmp) + strlen(tag) + 32;
    char *d = malloc(n);
    cr_assert_not_null(d);
    snprintf(d, n, "%s/dae_test_%s_XXXXXX", tmp, tag);
    cr_assert_not_null(mkdtemp(d), "cannot make %s", d);
    return d;
}

/* An AF_INET or AF_INET6 address from its text; fails the test for
 * anything else. */
static inline struct sockaddr_storage test_addr(const char *text) {
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, text, &v4->sin_addr) == 1) v4->sin_family = AF_INET;
    else if (inet_pton(AF_INET6, text, &v6->sin6_addr) == 1) v6->sin6_family = AF_INET6;
    else cr_assert_fail("%s is not an address", text);
    return ss;
}

/* Returns a malloc'ed "a/b". */
static inline char *path_join(const char *a, const char *b) {
    size_t n = strlen(a) + strlen(b) + 2;
    char *p = malloc(n);
    cr_assert_not_null(p);
    snprintf(p, n, "%s/%s", a, b);
    return p;
}

/* test_rm_tree's callback: removes each entry, contents before directories. */
static inline int test_rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb; (void)flag; (void)ftw;
    return remove(path);
}

/* Removes dir and everything below it, then frees the string. */
static inline void test_rm_tree(char *dir) {
    nftw(dir, test_rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    free(dir);
}

/* Counts callbacks that finish on other threads (the inference workers'
 * `done`), so a test can wait until all n it started have come back.
 * Initialise with TEST_WAITER_INIT. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
} test_waiter;

#define TEST_WAITER_INIT {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0}

static inline void test_waiter_done(test_waiter *w) {
    pthread_mutex_lock(&w->mu);
    w->done++;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static inline void test_waiter_wait(test_waiter *w, int n) {
    pthread_mutex_lock(&w->mu);
    while (w->done < n) pthread_cond_wait(&w->cv, &w->mu);
    pthread_mutex_unlock(&w->mu);
}

/* Waits at most seconds for n callbacks; returns how many came. */
static inline int test_waiter_wait_s(test_waiter *w, int n, int seconds) {
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += seconds;
    pthread_mutex_lock(&w->mu);
    while (w->done < n && pthread_cond_timedwait(&w->cv, &w->mu, &until) == 0) {
    }
    int done = w->done;
    pthread_mutex_unlock(&w->mu);
    return done;
}

/* A network of two layers whose weight gradients are sums of outer
 * products (dae_model_outer_layer), the first reading the network's
 * input itself. */
#define OUTER_ONLY_SPEC                                                                                            \
    "{\"input\":[1,28,28],\"encoder\":[{\"type\":\"conv2d\",\"in_channels\":1,\"out_channels\":8,"            \
    "\"kernel_size\":28},{\"type\":\"relu\"}],\"decoder\":[{\"type\":\"conv_transpose2d\",\"in_channels\":8," \
    "\"out_channels\":1,\"kernel_size\":28},{\"type\":\"sigmoid\"}]}"

/* Runs check once for each instruction set this CPU has, with the
 * engine's kernels switched to it and r seeded from (seed, the set); puts
 * the kernels back after. Returns how many sets ran. */
static inline int on_every_isa(uint64_t seed, void (*check)(dae_isa isa, dae_rng *r, void *ctx), void *ctx) {
    dae_isa before = dae_gemm_isa();
    int ran = 0;
    for (int isa = 0; isa < DAE_ISA_COUNT; isa++) {
        if (!dae_isa_supported((dae_isa)isa)) continue;
        cr_assert_eq(dae_gemm_set_isa((dae_isa)isa), 0);
        dae_rng r;
        dae_rng_seed(&r, seed, (uint64_t)isa);
        check((dae_isa)isa, &r, ctx);
        ran++;
    }
    dae_gemm_set_isa(before);
    return ran;
}

#endif
