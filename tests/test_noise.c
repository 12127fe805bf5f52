/* test_noise.c - noise specs (parse, format, errors), reproducibility of
 * dae_noise_apply, and the statistics of each noise model over ~1e6
 * pixels, with tolerances of 5 standard errors of each estimator. */
#include <criterion/criterion.h>

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "noise.h"
#include "rng.h"
#include "test_util.h"

#define BIG ((size_t)1 << 20) /* pixels in the statistics tests */

/* ---- Helpers ---------------------------------------------------------- */

/* Returns a spec parsed from text, failing the test when it does not parse. */
static dae_noise_spec parse_ok(const char *text) {
    dae_noise_spec s;
    char err[DAE_ERR_LEN] = "";
    dae_status st = dae_noise_parse(text, &s, err, sizeof err);
    cr_assert_eq(st, DAE_OK, "\"%s\" should parse, got: %s", text, err);
    return s;
}

/* Parses text expecting DAE_ERR_INVALID, and checks that the message
 * contains each of the (up to two) given words. */
static void parse_bad(const char *text, const char *word1, const char *word2) {
    dae_noise_spec s = {.kind = DAE_NOISE_SPECKLE, .level = 7.0f, .clip = 1, .quantize = 1,
                        .level_max = 8.0f}, before = s;
    char err[DAE_ERR_LEN] = "";
    dae_status st = dae_noise_parse(text, &s, err, sizeof err);
    cr_assert_eq(st, DAE_ERR_INVALID, "\"%s\" should be refused", text ? text : "(null)");
    cr_assert(memcmp(&s, &before, sizeof s) == 0, "\"%s\": out changed on error", text);
    if (word1) cr_assert(strstr(err, word1), "\"%s\": error \"%s\" lacks \"%s\"", text, err, word1);
    if (word2) cr_assert(strstr(err, word2), "\"%s\": error \"%s\" lacks \"%s\"", text, err, word2);
}

/* Returns a malloc'ed array of n copies of v. */
static float *filled(size_t n, float v) {
    float *p = malloc(n * sizeof *p);
    cr_assert_not_null(p);
    for (size_t i = 0; i < n; i++) p[i] = v;
    return p;
}

/* Mean and (population) standard deviation of x, in double. */
static void mean_std(const float *x, size_t n, double *mean, double *std) {
    double s = 0.0, ss = 0.0;
    for (size_t i = 0; i < n; i++) s += x[i];
    double m = s / (double)n;
    for (size_t i = 0; i < n; i++) ss += ((double)x[i] - m) * ((double)x[i] - m);
    *mean = m;
    *std = sqrt(ss / (double)n);
}

/* Checks that noise on a constant image c has mean c and std `std`, within
 * 5 standard errors (sd/sqrt(n) for the mean, sd/sqrt(2n) for the std of a
 * normal sample). */
static void check_normal_stats(const char *spec_text, float c, double std) {
    dae_noise_spec s = parse_ok(spec_text);
    float *x = filled(BIG, c);
    dae_noise_apply(&s, x, x, BIG, 11, 22);
    double m, sd;
    mean_std(x, BIG, &m, &sd);
    double n = (double)BIG;
    cr_expect(fabs(m - c) <= 5.0 * std / sqrt(n) + 1e-7,
              "%s on %g: mean %.6f, expected %g", spec_text, c, m, c);
    cr_expect(fabs(sd - std) <= 5.0 * std / sqrt(2.0 * n) + 1e-7,
              "%s on %g: std %.6f, expected %g", spec_text, c, sd, std);
    free(x);
}

/* ---- Parsing and formatting ------------------------------------------- */

Test(noise, parse_valid_forms) {
    struct { const char *text; dae_noise_kind kind; float level; int clip, quantize; } ok[] = {
        {"gaussian:0.5", DAE_NOISE_GAUSSIAN, 0.5f, 0, 0},
        {"gaussian:0.5:clip", DAE_NOISE_GAUSSIAN, 0.5f, 1, 0},
        {"gaussian:0.5:clip:quantize", DAE_NOISE_GAUSSIAN, 0.5f, 1, 1},
        {"gaussian:0.5:quantize", DAE_NOISE_GAUSSIAN, 0.5f, 0, 1},
        {"gaussian:0.5:quantize:clip", DAE_NOISE_GAUSSIAN, 0.5f, 1, 1},
        {"gaussian:0", DAE_NOISE_GAUSSIAN, 0.0f, 0, 0},
        {"gaussian:10", DAE_NOISE_GAUSSIAN, 10.0f, 0, 0},
        {"gaussian:.25", DAE_NOISE_GAUSSIAN, 0.25f, 0, 0},
        {"gaussian:2.5e-1", DAE_NOISE_GAUSSIAN, 0.25f, 0, 0},
        {"gaussian:-0", DAE_NOISE_GAUSSIAN, 0.0f, 0, 0},
        {"salt-pepper:0.2", DAE_NOISE_SALT_PEPPER, 0.2f, 0, 0},
        {"salt-pepper:0", DAE_NOISE_SALT_PEPPER, 0.0f, 0, 0},
        {"salt-pepper:1", DAE_NOISE_SALT_PEPPER, 1.0f, 0, 0},
        {"salt-pepper:0.2:quantize", DAE_NOISE_SALT_PEPPER, 0.2f, 0, 1},
        {"speckle:0.3", DAE_NOISE_SPECKLE, 0.3f, 0, 0},
        {"speckle:0.3:clip", DAE_NOISE_SPECKLE, 0.3f, 1, 0},
        {"speckle:0.3:quantize", DAE_NOISE_SPECKLE, 0.3f, 0, 1},
        {"speckle:0.3:clip:quantize", DAE_NOISE_SPECKLE, 0.3f, 1, 1},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        dae_noise_spec s = parse_ok(ok[i].text);
        cr_expect_eq(s.kind, ok[i].kind, "%s: kind", ok[i].text);
        cr_expect_eq(s.level, ok[i].level, "%s: level %.9g", ok[i].text, (double)s.level);
        cr_expect(!signbit(s.level), "%s: level is -0", ok[i].text);
        cr_expect_eq(s.clip, ok[i].clip, "%s: clip", ok[i].text);
        cr_expect_eq(s.quantize, ok[i].quantize, "%s: quantize", ok[i].text);
    }
}

Test(noise, parse_invalid_forms) {
    /* empty */
    parse_bad("", "empty", "gaussian, salt-pepper, speckle");
    parse_bad(NULL, "empty", NULL);
    /* unknown kind */
    parse_bad("gauss:0.5", "\"gauss\"", "gaussian, salt-pepper, speckle");
    parse_bad("Gaussian:0.5", "\"Gaussian\"", "salt-pepper");
    parse_bad("salt_pepper:0.2", "\"salt_pepper\"", "salt-pepper");
    parse_bad(":0.5", "unknown kind", "gaussian");
    /* missing level */
    parse_bad("gaussian", "missing level", "0 to 10");
    parse_bad("gaussian:", "missing level", "sigma");
    parse_bad("salt-pepper", "missing level", "0 to 1");
    parse_bad("speckle::clip", "missing level", "0 to 10");
    /* negative and out of range */
    parse_bad("gaussian:-0.1", "-0.1", "0 to 10");
    parse_bad("gaussian:10.01", "10.01", "0 to 10");
    parse_bad("gaussian:1e400", "1e400", "out of range");
    parse_bad("speckle:11", "sigma 11", "0 to 10");
    parse_bad("salt-pepper:1.5", "amount 1.5", "0 to 1)");
    parse_bad("salt-pepper:-0.2", "amount -0.2", "0 to 1)");
    /* not a number, junk after the number */
    parse_bad("gaussian:0.5x", "\"0.5x\"", "not a number");
    parse_bad("gaussian:0.5 ", "\"0.5 \"", "not a number");
    parse_bad("gaussian: 0.5", "\" 0.5\"", "not a number");
    parse_bad("gaussian:abc", "\"abc\"", "not a number");
    parse_bad("gaussian:nan", "\"nan\"", "not a number");
    parse_bad("gaussian:inf", "\"inf\"", "not a number");
    parse_bad("gaussian:0x1p-1", "\"0x1p-1\"", "not a number");
    parse_bad("gaussian:.", "\".\"", "not a number");
    parse_bad("gaussian:1e", "\"1e\"", "not a number");
    parse_bad("gaussian:0.5.1", "\"0.5.1\"", "not a number");
    /* options */
    parse_bad("gaussian:0.5:clamp", "\"clamp\"", "clip, quantize");
    parse_bad("gaussian:0.5:clip:quant", "\"quant\"", "clip, quantize");
    parse_bad("gaussian:0.5:CLIP", "\"CLIP\"", "clip, quantize");
    parse_bad("gaussian:0.5:", "empty option", "clip, quantize");
    parse_bad("gaussian:0.5:clip:", "empty option", "clip, quantize");
    parse_bad("gaussian:0.5::clip", "empty option", "clip, quantize");
    parse_bad("gaussian:0.5:clip:clip", "\"clip\"", "twice");
    parse_bad("gaussian:0.5:quantize:quantize", "\"quantize\"", "twice");
}

Test(noise, parse_without_err_buffer) {
    dae_noise_spec s;
    cr_expect_eq(dae_noise_parse("bogus", &s, NULL, 0), DAE_ERR_INVALID);
    cr_expect_eq(dae_noise_parse("gaussian:0.1", &s, NULL, 0), DAE_OK);
}

Test(noise, parse_err_truncates) {
    dae_noise_spec s;
    char err[8];
    memset(err, 'x', sizeof err);
    cr_expect_eq(dae_noise_parse("bogus:1", &s, err, sizeof err), DAE_ERR_INVALID);
    cr_expect_eq(err[sizeof err - 1], '\0');
}

Test(noise, format_canonical) {
    struct { const char *in, *out; } cases[] = {
        {"gaussian:0.5", "gaussian:0.5"},
        {"gaussian:0.50", "gaussian:0.5"},
        {"gaussian:0.1:clip", "gaussian:0.1:clip"},
        {"gaussian:.25:quantize", "gaussian:0.25:quantize"},
        {"gaussian:0.5:quantize:clip", "gaussian:0.5:clip:quantize"},
        {"gaussian:10", "gaussian:10"},
        {"gaussian:0", "gaussian:0"},
        {"gaussian:-0", "gaussian:0"},
        {"gaussian:1e-5", "gaussian:1e-05"},
        {"salt-pepper:0.2", "salt-pepper:0.2"},
        {"salt-pepper:1", "salt-pepper:1"},
        {"speckle:0.3:clip:quantize", "speckle:0.3:clip:quantize"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        dae_noise_spec s = parse_ok(cases[i].in);
        char buf[DAE_NOISE_TEXT_LEN];
        dae_noise_format(&s, buf, sizeof buf);
        cr_expect_str_eq(buf, cases[i].out, "format(parse(\"%s\"))", cases[i].in);
    }
}

Test(noise, format_parse_round_trip) {
    /* Every kind and flag combination with many levels, including floats
     * that need all 9 digits, parse back to the identical struct. */
    dae_rng r;
    dae_rng_seed(&r, 5, 5);
    const dae_noise_kind kinds[] = {DAE_NOISE_GAUSSIAN, DAE_NOISE_SALT_PEPPER, DAE_NOISE_SPECKLE};
    for (int k = 0; k < 3; k++)
        for (int flags = 0; flags < 4; flags++)
            for (int i = 0; i < 2000; i++) {
                float max = kinds[k] == DAE_NOISE_SALT_PEPPER ? 1.0f : 10.0f;
                float level = i == 0 ? 0.0f : i == 1 ? max : i == 2 ? 1e-30f
                            : i == 3 ? 1.0f / 3.0f : max * dae_rng_uniform(&r);
                dae_noise_spec s = {.kind = kinds[k], .level = level, .clip = flags & 1,
                                    .quantize = flags >> 1}, back;
                char buf[DAE_NOISE_TEXT_LEN], err[DAE_ERR_LEN] = "";
                dae_noise_format(&s, buf, sizeof buf);
                cr_assert_eq(dae_noise_parse(buf, &back, err, sizeof err), DAE_OK,
                             "\"%s\": %s", buf, err);
                cr_assert(memcmp(&s, &back, sizeof s) == 0,
                          "\"%s\" parsed to a different spec (level %.9g vs %.9g)",
                          buf, (double)back.level, (double)s.level);
            }
}

Test(noise, format_longest_fits_and_truncates) {
    dae_noise_spec s = {.kind = DAE_NOISE_SALT_PEPPER, .level = 1.0f / 3.0f, .clip = 1, .quantize = 1};
    char buf[DAE_NOISE_TEXT_LEN];
    dae_noise_format(&s, buf, sizeof buf);
    cr_expect_str_eq(buf, "salt-pepper:0.33333334:clip:quantize");
    char small[9];
    dae_noise_format(&s, small, sizeof small);
    cr_expect_str_eq(small, "salt-pep");
}

/* ---- Level ranges ----------------------------------------------------- */

Test(noise, parse_ranges) {
    struct { const char *text; dae_noise_kind kind; float level, level_max; int clip, quantize; } ok[] = {
        {"gaussian:0-0.8:clip:quantize", DAE_NOISE_GAUSSIAN, 0.0f, 0.8f, 1, 1},
        {"gaussian:0.1-0.5", DAE_NOISE_GAUSSIAN, 0.1f, 0.5f, 0, 0},
        {"gaussian:0-10", DAE_NOISE_GAUSSIAN, 0.0f, 10.0f, 0, 0},
        {"gaussian:-0-0.5", DAE_NOISE_GAUSSIAN, 0.0f, 0.5f, 0, 0},
        {"gaussian:1e-3-2.5e-1", DAE_NOISE_GAUSSIAN, 1e-3f, 0.25f, 0, 0},
        {"gaussian:.25-1E0:quantize", DAE_NOISE_GAUSSIAN, 0.25f, 1.0f, 0, 1},
        {"salt-pepper:0.1-1", DAE_NOISE_SALT_PEPPER, 0.1f, 1.0f, 0, 0},
        {"speckle:0.2-1:clip", DAE_NOISE_SPECKLE, 0.2f, 1.0f, 1, 0},
        /* LO == HI is a fixed level, stored as a plain level is */
        {"gaussian:0.3-0.3", DAE_NOISE_GAUSSIAN, 0.3f, 0.0f, 0, 0},
        {"gaussian:0-0", DAE_NOISE_GAUSSIAN, 0.0f, 0.0f, 0, 0},
        {"salt-pepper:1-1", DAE_NOISE_SALT_PEPPER, 1.0f, 0.0f, 0, 0},
        /* a plain level leaves level_max 0 */
        {"gaussian:0.5", DAE_NOISE_GAUSSIAN, 0.5f, 0.0f, 0, 0},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        dae_noise_spec s = parse_ok(ok[i].text);
        cr_expect_eq(s.kind, ok[i].kind, "%s: kind", ok[i].text);
        cr_expect_eq(s.level, ok[i].level, "%s: level %.9g", ok[i].text, (double)s.level);
        cr_expect_eq(s.level_max, ok[i].level_max, "%s: level_max %.9g", ok[i].text, (double)s.level_max);
        cr_expect(!signbit(s.level), "%s: level is -0", ok[i].text);
        cr_expect_eq(dae_noise_is_range(&s), ok[i].level_max > ok[i].level, "%s: is_range", ok[i].text);
        cr_expect_eq(s.clip, ok[i].clip, "%s: clip", ok[i].text);
        cr_expect_eq(s.quantize, ok[i].quantize, "%s: quantize", ok[i].text);
    }
}

Test(noise, parse_invalid_ranges) {
    parse_bad("gaussian:0.8-0.2", "0.8-0.2", "LO <= HI");
    parse_bad("gaussian:0.5-0.49999", "0.5-0.49999", "LO <= HI");
    parse_bad("gaussian:0-10.5", "sigma 10.5", "0 to 10");
    parse_bad("speckle:11-12", "sigma 11", "0 to 10");
    parse_bad("salt-pepper:0.5-1.5", "amount 1.5", "0 to 1)");
    parse_bad("gaussian:0--0.5", "sigma -0.5", "0 to 10");
    parse_bad("gaussian:-0.5", "sigma -0.5", "out of range");
    parse_bad("gaussian:-0.5-0.2", "sigma -0.5", "out of range");
    parse_bad("gaussian:0-", "missing range end", "0 to 10");
    parse_bad("gaussian:0-:clip", "missing range end", "sigma");
    parse_bad("gaussian:-", "\"-\"", "not a number");
    parse_bad("gaussian:x-1", "level \"x-1\"", "not a number");
    parse_bad("gaussian:1e400-2", "sigma 1e400", "out of range");
    parse_bad("gaussian:0-abc", "range end \"abc\"", "not a number");
    parse_bad("gaussian:0-0.5-0.8", "range end \"0.5-0.8\"", "not a number");
    parse_bad("gaussian:0-inf", "range end \"inf\"", "not a number");
    parse_bad("gaussian:0-1e400", "1e400", "out of range");
    parse_bad("gaussian:0-0.5:clip:clip", "\"clip\"", "twice");
}

Test(noise, format_ranges) {
    struct { const char *in, *out; } cases[] = {
        {"gaussian:0-0.8:clip:quantize", "gaussian:0-0.8:clip:quantize"},
        {"gaussian:0.50-0.80", "gaussian:0.5-0.8"},
        {"gaussian:-0-.5:quantize:clip", "gaussian:0-0.5:clip:quantize"},
        {"gaussian:0.3-0.3", "gaussian:0.3"},
        {"speckle:1e-5-10", "speckle:1e-05-10"},
        {"salt-pepper:0-1", "salt-pepper:0-1"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        dae_noise_spec s = parse_ok(cases[i].in);
        char buf[DAE_NOISE_TEXT_LEN];
        dae_noise_format(&s, buf, sizeof buf);
        cr_expect_str_eq(buf, cases[i].out, "format(parse(\"%s\"))", cases[i].in);
    }
    /* A hand-built spec with level_max below level is a fixed level. */
    dae_noise_spec s = {.kind = DAE_NOISE_GAUSSIAN, .level = 0.5f, .level_max = 0.25f};
    char buf[DAE_NOISE_TEXT_LEN];
    dae_noise_format(&s, buf, sizeof buf);
    cr_expect_str_eq(buf, "gaussian:0.5");
    /* The longest range fits DAE_NOISE_TEXT_LEN. */
    s = (dae_noise_spec){.kind = DAE_NOISE_SALT_PEPPER, .level = 1.00000085e-30f,
                         .level_max = 1.00000245e-30f, .clip = 1, .quantize = 1};
    dae_noise_format(&s, buf, sizeof buf);
    cr_expect_str_eq(buf, "salt-pepper:1.00000085e-30-1.00000245e-30:clip:quantize");
}

Test(noise, format_parse_round_trip_ranges) {
    /* Ranges of every kind and flag combination, including the limits and
     * floats that need all 9 digits, parse back to the identical struct. */
    dae_rng r;
    dae_rng_seed(&r, 6, 6);
    const dae_noise_kind kinds[] = {DAE_NOISE_GAUSSIAN, DAE_NOISE_SALT_PEPPER, DAE_NOISE_SPECKLE};
    for (int k = 0; k < 3; k++)
        for (int flags = 0; flags < 4; flags++)
            for (int i = 0; i < 2000; i++) {
                float max = kinds[k] == DAE_NOISE_SALT_PEPPER ? 1.0f : 10.0f;
                float a = max * dae_rng_uniform(&r), b = max * dae_rng_uniform(&r);
                float lo = i == 0 ? 0.0f : i == 1 ? 1e-30f : i == 2 ? 1.0f / 3.0f : fminf(a, b);
                float hi = i == 0 ? max : i == 1 ? 2e-30f : i == 2 ? 2.0f / 3.0f : fmaxf(a, b);
                if (hi == lo) continue;
                dae_noise_spec s = {.kind = kinds[k], .level = lo, .clip = flags & 1,
                                    .quantize = flags >> 1, .level_max = hi}, back;
                char buf[DAE_NOISE_TEXT_LEN], err[DAE_ERR_LEN] = "";
                dae_noise_format(&s, buf, sizeof buf);
                cr_assert_eq(dae_noise_parse(buf, &back, err, sizeof err), DAE_OK,
                             "\"%s\": %s", buf, err);
                cr_assert(memcmp(&s, &back, sizeof s) == 0,
                          "\"%s\" parsed to a different spec (%.9g-%.9g vs %.9g-%.9g)", buf,
                          (double)back.level, (double)back.level_max, (double)s.level, (double)s.level_max);
            }
}

Test(noise, kind_names) {
    cr_expect_str_eq(dae_noise_kind_str(DAE_NOISE_GAUSSIAN), "gaussian");
    cr_expect_str_eq(dae_noise_kind_str(DAE_NOISE_SALT_PEPPER), "salt-pepper");
    cr_expect_str_eq(dae_noise_kind_str(DAE_NOISE_SPECKLE), "speckle");
    cr_expect_str_eq(dae_noise_kind_str((dae_noise_kind)42), "unknown");
}

/* ---- Reproducibility -------------------------------------------------- */

static const char *const every_spec[] = {
    "gaussian:0.3", "gaussian:0.3:clip:quantize", "salt-pepper:0.4",
    "speckle:0.5", "speckle:0.5:clip",
    "gaussian:0-0.8:clip:quantize", "salt-pepper:0.1-0.5", "speckle:0.2-1",
};

Test(noise, same_seed_and_stream_same_bytes) {
    enum { N = 4096 };
    float *clean = uniform_floats(N, 0.0f, 1.0f, 1, 0);
    float a[N], b[N];
    for (size_t k = 0; k < sizeof every_spec / sizeof every_spec[0]; k++) {
        dae_noise_spec s = parse_ok(every_spec[k]);
        dae_noise_apply(&s, clean, a, N, 1234, 99);
        dae_noise_apply(&s, clean, b, N, 1234, 99);
        cr_expect(memcmp(a, b, sizeof a) == 0, "%s: repeat differs", every_spec[k]);
        dae_noise_apply(&s, clean, b, N, 1234, 100);
        cr_expect(memcmp(a, b, sizeof a) != 0, "%s: stream ignored", every_spec[k]);
        dae_noise_apply(&s, clean, b, N, 1235, 99);
        cr_expect(memcmp(a, b, sizeof a) != 0, "%s: seed ignored", every_spec[k]);
    }
    free(clean);
}

Test(noise, in_place_equals_out_of_place) {
    enum { N = 4096 };
    float *clean = uniform_floats(N, 0.0f, 1.0f, 2, 0);
    float out[N], inplace[N];
    for (size_t k = 0; k < sizeof every_spec / sizeof every_spec[0]; k++) {
        dae_noise_spec s = parse_ok(every_spec[k]);
        dae_noise_apply(&s, clean, out, N, 7, 8);
        memcpy(inplace, clean, sizeof inplace);
        dae_noise_apply(&s, inplace, inplace, N, 7, 8);
        cr_expect(memcmp(out, inplace, sizeof out) == 0, "%s: in-place differs", every_spec[k]);
    }
    free(clean);
}

Test(noise, zero_level_is_identity) {
    enum { N = 1000 };
    float *clean = uniform_floats(N, 0.0f, 1.0f, 3, 0);
    float out[N];
    const char *specs[] = {"gaussian:0", "salt-pepper:0", "speckle:0", "gaussian:0:clip"};
    for (size_t k = 0; k < 4; k++) {
        dae_noise_spec s = parse_ok(specs[k]);
        dae_noise_apply(&s, clean, out, N, 1, 1);
        cr_expect(memcmp(out, clean, sizeof out) == 0, "%s changed the image", specs[k]);
    }
    dae_noise_spec s = parse_ok("gaussian:0.5");
    dae_noise_apply(&s, NULL, NULL, 0, 1, 1); /* n == 0 touches nothing */
    free(clean);
}

struct thread_job {
    const dae_noise_spec *spec;
    const float *clean;
    float *out;
    size_t n;
    uint64_t stream;
};

static void *thread_apply(void *arg) {
    struct thread_job *j = arg;
    dae_noise_apply(j->spec, j->clean, j->out, j->n, 42, j->stream);
    return NULL;
}

Test(noise, same_output_on_any_thread) {
    enum { N = 784, T = 4 };
    float *clean = uniform_floats(N, 0.0f, 1.0f, 4, 0);
    dae_noise_spec s = parse_ok("gaussian:0.3:clip");
    float serial[T][N], threaded[T][N];
    pthread_t th[T];
    struct thread_job jobs[T];
    /* Threads start in reverse stream order to shuffle the interleaving. */
    for (int t = 0; t < T; t++) dae_noise_apply(&s, clean, serial[t], N, 42, (uint64_t)t);
    for (int t = T - 1; t >= 0; t--) {
        jobs[t] = (struct thread_job){&s, clean, threaded[t], N, (uint64_t)t};
        cr_assert_eq(pthread_create(&th[t], NULL, thread_apply, &jobs[t]), 0);
    }
    for (int t = 0; t < T; t++) pthread_join(th[t], NULL);
    cr_expect(memcmp(serial, threaded, sizeof serial) == 0);
    free(clean);
}

/* What dae_noise_apply must give for gaussian noise without clip on n <=
 * 256 pixels (one block of normals), computed the obvious way: with a range
 * one uniform draw picks the level first, a fixed level draws nothing
 * else. Writes the level used to *level. */
static void gaussian_oracle(const dae_noise_spec *spec, const float *clean, float *out, size_t n,
                            uint64_t seed, uint64_t stream, float *level) {
    cr_assert(n <= 256 && spec->kind == DAE_NOISE_GAUSSIAN && !spec->clip && !spec->quantize);
    dae_rng r;
    dae_rng_seed(&r, seed, stream);
    float l = spec->level;
    if (spec->level_max > spec->level) {
        double u = dae_rng_uniform_double(&r);
        l = (float)((double)spec->level + ((double)spec->level_max - (double)spec->level) * u);
        if (l > spec->level_max) l = spec->level_max;
    }
    float z[256];
    dae_rng_normal_fill(&r, z, n);
    for (size_t i = 0; i < n; i++) out[i] = clean[i] + l * z[i];
    *level = l;
}

Test(noise, fixed_level_draws_nothing_extra) {
    /* Bit-identical to the noise before ranges existed: the fixed level's
     * noise starts at the first draw of the (seed, stream) generator. */
    enum { N = 200 };
    float *clean = uniform_floats(N, 0.0f, 1.0f, 13, 0);
    float got[N], want[N], level;
    const dae_noise_spec hand[] = {
        parse_ok("gaussian:0.3"), parse_ok("gaussian:0.3-0.3"),
        {.kind = DAE_NOISE_GAUSSIAN, .level = 0.3f},                     /* zero level_max */
        {.kind = DAE_NOISE_GAUSSIAN, .level = 0.3f, .level_max = 0.3f},  /* level_max == level */
        {.kind = DAE_NOISE_GAUSSIAN, .level = 0.3f, .level_max = 0.1f},  /* level_max < level */
    };
    for (size_t k = 0; k < sizeof hand / sizeof hand[0]; k++)
        for (uint64_t stream = 0; stream < 8; stream++) {
            dae_noise_apply(&hand[k], clean, got, N, 77, stream);
            gaussian_oracle(&hand[k], clean, want, N, 77, stream, &level);
            cr_expect_eq(level, 0.3f);
            cr_expect(memcmp(got, want, sizeof got) == 0, "spec %zu, stream %llu differs from the oracle",
                      k, (unsigned long long)stream);
        }
    /* Salt-and-pepper: one uniform double per pixel from the first draw. */
    dae_noise_spec sp = parse_ok("salt-pepper:0.4");
    dae_noise_apply(&sp, clean, got, N, 77, 3);
    dae_rng r;
    dae_rng_seed(&r, 77, 3);
    for (size_t i = 0; i < N; i++) {
        double u = dae_rng_uniform_double(&r);
        float w = u < 0.4f ? (u < 0.5 * (double)0.4f ? 0.0f : 1.0f) : clean[i];
        cr_assert_eq(got[i], w, "salt-pepper pixel %zu", i);
    }
    free(clean);
}

Test(noise, range_draws_one_level_per_image) {
    enum { N = 200 };
    float *clean = uniform_floats(N, 0.0f, 1.0f, 14, 0);
    float got[N], want[N], level, lo = 1e9f, hi = -1e9f;
    dae_noise_spec s = parse_ok("gaussian:0.2-0.6");
    for (uint64_t stream = 0; stream < 500; stream++) {
        dae_noise_apply(&s, clean, got, N, 5, stream);
        gaussian_oracle(&s, clean, want, N, 5, stream, &level);
        cr_assert(memcmp(got, want, sizeof got) == 0, "stream %llu differs from the oracle",
                  (unsigned long long)stream);
        cr_assert(level >= 0.2f && level <= 0.6f, "stream %llu: level %.9g", (unsigned long long)stream,
                  (double)level);
        lo = fminf(lo, level);
        hi = fmaxf(hi, level);
    }
    /* 500 uniform draws come within 1% of both ends (each misses with
     * probability 0.99^500 < 0.7%; jointly fixed by the seed anyway). */
    cr_expect(lo < 0.204f && hi > 0.596f, "levels span only %.4f to %.4f", (double)lo, (double)hi);
    free(clean);
}

Test(noise, range_level_shows_in_the_noise) {
    /* Without the oracle: the std of gaussian noise on a constant image is
     * the image's level, within [0.2, 0.6] up to 5 standard errors, and it
     * differs from image to image. */
    enum { N = 4096, IMAGES = 64 };
    dae_noise_spec s = parse_ok("gaussian:0.2-0.6");
    float *x = malloc(N * sizeof *x);
    cr_assert_not_null(x);
    double lo = 1e9, hi = -1e9;
    for (uint64_t stream = 0; stream < IMAGES; stream++) {
        for (size_t i = 0; i < N; i++) x[i] = 0.5f;
        dae_noise_apply(&s, x, x, N, 21, stream);
        double m, sd;
        mean_std(x, N, &m, &sd);
        double tol = 5.0 * sd / sqrt(2.0 * N);
        cr_expect(sd >= 0.2 - tol && sd <= 0.6 + tol, "image %llu: std %.4f", (unsigned long long)stream, sd);
        lo = fmin(lo, sd);
        hi = fmax(hi, sd);
    }
    cr_expect(lo < 0.3 && hi > 0.5, "stds span only %.4f to %.4f", lo, hi);
    free(x);
}

Test(noise, range_salt_pepper_and_speckle_stay_in_range) {
    /* Salt-and-pepper 0-1 replaces a per-image fraction of the pixels, so
     * the fractions spread; speckle with a range stays reproducible. */
    enum { N = 4096 };
    float *clean = uniform_floats(N, 0.05f, 0.95f, 15, 0);
    float out[N], again[N];
    dae_noise_spec sp = parse_ok("salt-pepper:0-1");
    double lo = 1.0, hi = 0.0;
    for (uint64_t stream = 0; stream < 64; stream++) {
        dae_noise_apply(&sp, clean, out, N, 3, stream);
        size_t changed = 0;
        for (size_t i = 0; i < N; i++) changed += out[i] != clean[i];
        lo = fmin(lo, (double)changed / N);
        hi = fmax(hi, (double)changed / N);
    }
    cr_expect(lo < 0.2 && hi > 0.8, "replaced fractions span only %.3f to %.3f", lo, hi);
    dae_noise_spec sk = parse_ok("speckle:0.2-1:clip");
    dae_noise_apply(&sk, clean, out, N, 3, 4);
    dae_noise_apply(&sk, clean, again, N, 3, 4);
    cr_expect(memcmp(out, again, sizeof out) == 0);
    for (size_t i = 0; i < N; i++) cr_assert(out[i] >= 0.0f && out[i] <= 1.0f);
    free(clean);
}

/* ---- Statistics ------------------------------------------------------- */

Test(noise, gaussian_mean_and_std) {
    check_normal_stats("gaussian:0.1", 0.5f, 0.1);
    check_normal_stats("gaussian:0.5", 0.5f, 0.5);
    check_normal_stats("gaussian:2", 0.25f, 2.0);
}

Test(noise, gaussian_is_shift_invariant) {
    /* The noise added does not depend on the pixel: same draws on 0.2 and
     * 0.7 differ by exactly the 0.5 between them (up to float rounding). */
    enum { N = 1000 };
    dae_noise_spec s = parse_ok("gaussian:0.3");
    float *lo = filled(N, 0.2f), *hi = filled(N, 0.7f);
    dae_noise_apply(&s, lo, lo, N, 9, 9);
    dae_noise_apply(&s, hi, hi, N, 9, 9);
    for (size_t i = 0; i < N; i++) cr_assert_float_eq(hi[i] - lo[i], 0.5f, 1e-6f);
    free(lo);
    free(hi);
}

Test(noise, clip_keeps_unit_range) {
    dae_noise_spec raw = parse_ok("gaussian:1"), clipped = parse_ok("gaussian:1:clip");
    float *clean = uniform_floats(BIG, 0.0f, 1.0f, 5, 0);
    float *a = malloc(BIG * sizeof *a), *b = malloc(BIG * sizeof *b);
    cr_assert(a && b);
    dae_noise_apply(&raw, clean, a, BIG, 3, 4);
    dae_noise_apply(&clipped, clean, b, BIG, 3, 4);
    size_t zeros = 0, ones = 0, outside = 0;
    for (size_t i = 0; i < BIG; i++) {
        cr_assert(b[i] >= 0.0f && b[i] <= 1.0f, "pixel %zu = %g", i, (double)b[i]);
        /* clip is applied to the very same noisy value */
        float want = a[i] < 0.0f ? 0.0f : a[i] > 1.0f ? 1.0f : a[i];
        cr_assert_eq(b[i], want, "pixel %zu: %g, want %g", i, (double)b[i], (double)want);
        zeros += b[i] == 0.0f;
        ones += b[i] == 1.0f;
        outside += a[i] < 0.0f || a[i] > 1.0f;
    }
    cr_expect(outside > BIG / 4, "sigma 1 should push many pixels out (%zu)", outside);
    cr_expect(zeros > 0 && ones > 0);
    free(clean);
    free(a);
    free(b);
}

/* Checks that every value of x is exactly k/255 for an integer k in 0..255. */
static void check_8bit(const char *what, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) {
        long k = lroundf(x[i] * 255.0f);
        cr_assert(k >= 0 && k <= 255, "%s: pixel %zu = %.9g", what, i, (double)x[i]);
        cr_assert_eq(x[i], (float)k / 255.0f, "%s: pixel %zu = %.9g is not %ld/255",
                     what, i, (double)x[i], k);
    }
}

Test(noise, quantize_gives_k_over_255) {
    float *clean = uniform_floats(BIG, 0.0f, 1.0f, 6, 0);
    float *q = malloc(BIG * sizeof *q), *c = malloc(BIG * sizeof *c);
    cr_assert(q && c);
    const char *specs[] = {"gaussian:0.2:quantize", "gaussian:0.2:clip:quantize",
                           "speckle:0.5:quantize", "salt-pepper:0.3:quantize"};
    for (size_t k = 0; k < 4; k++) {
        dae_noise_spec s = parse_ok(specs[k]);
        dae_noise_apply(&s, clean, q, BIG, 8, 9);
        check_8bit(specs[k], q, BIG);
    }
    /* quantize = round(clip(x) * 255) / 255 of the same noisy values */
    dae_noise_spec sq = parse_ok("gaussian:0.2:quantize"), sc = parse_ok("gaussian:0.2:clip");
    dae_noise_apply(&sq, clean, q, BIG, 8, 9);
    dae_noise_apply(&sc, clean, c, BIG, 8, 9);
    size_t differ = 0;
    for (size_t i = 0; i < BIG; i++) {
        cr_assert_float_eq(q[i], c[i], 0.5f / 255.0f + 1e-6f, "pixel %zu", i);
        differ += q[i] != c[i];
    }
    cr_expect(differ > BIG / 2, "quantize changed only %zu pixels", differ);
    free(clean);
    free(q);
    free(c);
}

Test(noise, salt_pepper_fraction_and_values) {
    const double amount = 0.2;
    dae_noise_spec s = parse_ok("salt-pepper:0.2");
    /* Clean pixels strictly inside (0, 1), so any 0 or 1 is a replacement. */
    float *clean = uniform_floats(BIG, 0.05f, 0.95f, 7, 0);
    float *out = malloc(BIG * sizeof *out);
    cr_assert_not_null(out);
    dae_noise_apply(&s, clean, out, BIG, 10, 11);
    size_t changed = 0, zeros = 0;
    for (size_t i = 0; i < BIG; i++) {
        if (out[i] == clean[i]) continue;
        changed++;
        cr_assert(out[i] == 0.0f || out[i] == 1.0f, "pixel %zu became %g", i, (double)out[i]);
        zeros += out[i] == 0.0f;
    }
    double n = (double)BIG, frac = (double)changed / n;
    cr_expect(fabs(frac - amount) <= 5.0 * sqrt(amount * (1 - amount) / n),
              "changed fraction %.5f, expected %.2f", frac, amount);
    double half = (double)zeros / (double)changed;
    cr_expect(fabs(half - 0.5) <= 5.0 * sqrt(0.25 / (double)changed),
              "pepper share %.5f, expected 0.5", half);

    /* amount 1 replaces every pixel */
    s = parse_ok("salt-pepper:1");
    dae_noise_apply(&s, clean, out, 10000, 1, 2);
    for (size_t i = 0; i < 10000; i++) cr_assert(out[i] == 0.0f || out[i] == 1.0f);
    free(clean);
    free(out);
}

Test(noise, speckle_zero_stays_zero) {
    dae_noise_spec s = parse_ok("speckle:3");
    float *x = filled(BIG, 0.0f);
    dae_noise_apply(&s, x, x, BIG, 12, 13);
    for (size_t i = 0; i < BIG; i++) cr_assert_eq(x[i], 0.0f, "pixel %zu = %g", i, (double)x[i]);
    free(x);
}

Test(noise, speckle_std_is_c_sigma) {
    check_normal_stats("speckle:0.3", 0.5f, 0.5 * 0.3);
    check_normal_stats("speckle:0.3", 0.8f, 0.8 * 0.3);
    check_normal_stats("speckle:1", 1.0f, 1.0);
}
