/* noise.c - parsing, formatting and applying the noise models of noise.h.
 * All randomness comes from one dae_rng seeded per call with
 * (seed, stream), so applying noise has no state beyond its arguments. */
#include "noise.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hot.h"
#include "rng.h"

/* ---- Names and levels ------------------------------------------------- */

#define KINDS_ALLOWED "gaussian, salt-pepper, speckle"
#define OPTIONS_ALLOWED "clip, quantize"

const char *dae_noise_kind_str(dae_noise_kind kind) {
    switch (kind) {
    case DAE_NOISE_GAUSSIAN: return "gaussian";
    case DAE_NOISE_SALT_PEPPER: return "salt-pepper";
    case DAE_NOISE_SPECKLE: return "speckle";
    }
    return "unknown";
}

/* Looks up a kind by its name (the len bytes at name, not NUL-terminated);
 * returns 1 and sets *kind when the name is known, else 0. */
static int kind_from_name(const char *name, size_t len, dae_noise_kind *kind) {
    static const dae_noise_kind all[] = {
        DAE_NOISE_GAUSSIAN, DAE_NOISE_SALT_PEPPER, DAE_NOISE_SPECKLE,
    };
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        const char *s = dae_noise_kind_str(all[i]);
        if (strlen(s) == len && memcmp(s, name, len) == 0) {
            *kind = all[i];
            return 1;
        }
    }
    return 0;
}

int dae_noise_is_range(const dae_noise_spec *spec) {
    return spec->level_max > spec->level;
}

/* Largest level a kind accepts (the smallest is always 0). */
static float level_limit(dae_noise_kind kind) {
    return kind == DAE_NOISE_SALT_PEPPER ? 1.0f : DAE_NOISE_SIGMA_MAX;
}

/* What the level of a kind means, for error messages. */
static const char *level_name(dae_noise_kind kind) {
    return kind == DAE_NOISE_SALT_PEPPER ? "amount" : "sigma";
}

/* Converts decimal text to a level the one way both parse and format use,
 * so a formatted level always parses back to the same float. */
static float level_from_text(const char *text, char **end) {
    return (float)strtod(text, end);
}

/* Reads the level in the len bytes at s. Only plain decimals are numbers
 * here (digits, '.', sign, exponent): strtod's "inf", "nan", hex floats and
 * leading blanks are refused. Returns 0 when the text is not a number, -1
 * when it is one but overflows a double, else 1 with the value in *value. */
static int parse_level(const char *s, size_t len, double *value) {
    int digits = 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c >= '0' && c <= '9') digits++;
        else if (!strchr(".+-eE", c)) return 0;
    }
    if (digits == 0) return 0;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end != s + len) return 0;
    if (errno == ERANGE && fabs(v) > 1.0) return -1;
    *value = v;
    return 1;
}

/* Reads one level, the n bytes at p inside text (the whole spec, for
 * messages), as a float in [0, limit of kind] into *out; `part` names it in
 * the messages ("level", "range start", "range end"). */
static dae_status read_level(const char *text, const char *p, size_t n, dae_noise_kind kind,
                             const char *part, float *out, char *err, size_t errlen) {
    float max = level_limit(kind);
    const char *what = level_name(kind);
    if (n == 0)
        return dae_fail(err, errlen, DAE_ERR_INVALID,
                        "noise spec \"%s\": missing %s (%s, a number from 0 to %g)",
                        text, part, what, (double)max);
    double v = 0.0;
    int got = parse_level(p, n, &v);
    if (got == 0)
        return dae_fail(err, errlen, DAE_ERR_INVALID,
                        "noise spec \"%s\": %s \"%.*s\" is not a number "
                        "(%s, a decimal from 0 to %g)",
                        text, part, (int)n, p, what, (double)max);
    if (got < 0 || !(v >= 0.0 && v <= (double)max))
        return dae_fail(err, errlen, DAE_ERR_INVALID,
                        "noise spec \"%s\": %s %.*s is out of range "
                        "(allowed: 0 to %g)",
                        text, what, (int)n, p, (double)max);
    *out = level_from_text(p, NULL);
    if (*out == 0.0f) *out = 0.0f; /* "-0" is plain 0 */
    return DAE_OK;
}

/* Finds the '-' that splits a range LO-HI in the n bytes at p: the first
 * one that is neither the leading sign nor an exponent's sign (1e-3).
 * Returns its offset, or n when the text is a single level. */
static size_t range_dash(const char *p, size_t n) {
    for (size_t i = 1; i < n; i++)
        if (p[i] == '-' && p[i - 1] != 'e' && p[i - 1] != 'E') return i;
    return n;
}

/* ---- Text form -------------------------------------------------------- */

/* Parses KIND:LEVEL[:OPTION]... left to right, building the spec in a local
 * and copying it to *out only once all of it is valid; every error names the
 * part at fault and what is allowed there (see noise.h). */
dae_status dae_noise_parse(const char *text, dae_noise_spec *out,
                           char *err, size_t errlen) {
    if (text == NULL || text[0] == '\0')
        return dae_fail(err, errlen, DAE_ERR_INVALID,
                        "empty noise spec: expected KIND:LEVEL[:clip][:quantize] "
                        "with KIND one of " KINDS_ALLOWED);

    /* KIND */
    const char *p = text;
    size_t n = strcspn(p, ":");
    dae_noise_spec spec = {0};
    if (!kind_from_name(p, n, &spec.kind))
        return dae_fail(err, errlen, DAE_ERR_INVALID,
                        "noise spec \"%s\": unknown kind \"%.*s\" (allowed: "
                        KINDS_ALLOWED ")", text, (int)n, p);

    /* LEVEL, or LO-HI */
    p += n;
    if (*p == ':') p++;
    n = strcspn(p, ":");
    if (n == 0)
        return dae_fail(err, errlen, DAE_ERR_INVALID,
                        "noise spec \"%s\": missing level after \"%s:\" "
                        "(%s, a number from 0 to %g)",
                        text, dae_noise_kind_str(spec.kind), level_name(spec.kind),
                        (double)level_limit(spec.kind));
    /* A range only when the text before the dash is a number, so that a
     * junk level such as "0x1p-1" is named whole. */
    size_t dash = range_dash(p, n);
    double lo_value;
    dae_status st;
    if (dash == n || parse_level(p, dash, &lo_value) == 0) {
        st = read_level(text, p, n, spec.kind, "level", &spec.level, err, errlen);
        if (st != DAE_OK) return st;
    } else {
        float hi;
        st = read_level(text, p, dash, spec.kind, "range start", &spec.level, err, errlen);
        if (st != DAE_OK) return st;
        st = read_level(text, p + dash + 1, n - dash - 1, spec.kind, "range end", &hi, err, errlen);
        if (st != DAE_OK) return st;
        if (hi < spec.level)
            return dae_fail(err, errlen, DAE_ERR_INVALID,
                            "noise spec \"%s\": range %.*s goes down "
                            "(LO-HI needs LO <= HI)", text, (int)n, p);
        /* LO == HI is a fixed level, stored as parse stores one (noise.h). */
        if (hi > spec.level) spec.level_max = hi;
    }

    /* OPTIONs */
    for (p += n; *p == ':';) {
        p++;
        n = strcspn(p, ":");
        int *flag = NULL;
        if (n == 4 && memcmp(p, "clip", 4) == 0) flag = &spec.clip;
        else if (n == 8 && memcmp(p, "quantize", 8) == 0) flag = &spec.quantize;
        if (n == 0)
            return dae_fail(err, errlen, DAE_ERR_INVALID,
                            "noise spec \"%s\": empty option after ':' "
                            "(allowed: " OPTIONS_ALLOWED ")", text);
        if (flag == NULL)
            return dae_fail(err, errlen, DAE_ERR_INVALID,
                            "noise spec \"%s\": unknown option \"%.*s\" "
                            "(allowed: " OPTIONS_ALLOWED ")", text, (int)n, p);
        if (*flag)
            return dae_fail(err, errlen, DAE_ERR_INVALID,
                            "noise spec \"%s\": option \"%.*s\" given twice",
                            text, (int)n, p);
        *flag = 1;
        p += n;
    }
    *out = spec;
    return DAE_OK;
}

/* Writes into num (len bytes) the shortest %g text of level (at least 2
 * digits, so 10 is "10", not "1e+01") that reads back as the same float;
 * 9 digits always suffice. */
static void format_level(float level, char *num, size_t len) {
    for (int digits = 2; digits <= 9; digits++) {
        snprintf(num, len, "%.*g", digits, (double)level);
        if (level_from_text(num, NULL) == level) break;
    }
}

/* Writes spec as text into the caller's buf; cannot fail (truncates). */
void dae_noise_format(const dae_noise_spec *spec, char *buf, size_t len) {
    char lo[48], hi[48] = "";
    format_level(spec->level, lo, sizeof lo);
    if (dae_noise_is_range(spec)) {
        hi[0] = '-';
        format_level(spec->level_max, hi + 1, sizeof hi - 1);
    }
    snprintf(buf, len, "%s:%s%s%s%s", dae_noise_kind_str(spec->kind), lo, hi,
             spec->clip ? ":clip" : "", spec->quantize ? ":quantize" : "");
}

/* ---- Applying noise --------------------------------------------------- */

/* Adds the spec's noise to n pixels with a generator seeded from
 * (seed, stream), then clips and/or quantizes; allocates nothing. */
/* Normals are drawn in blocks of this many (dae_rng_normal_fill). */
enum { NORMAL_BLOCK = 256 };

void dae_noise_apply(const dae_noise_spec *spec, const float *clean,
                     float *noisy, size_t n, uint64_t seed, uint64_t stream) {
    dae_rng rng;
    dae_rng_seed(&rng, seed, stream);
    float level = spec->level;
    if (dae_noise_is_range(spec)) {
        /* One level for the whole image, drawn first so the noise after it
         * is the fixed-level noise of that level. The clamp guards against
         * rounding up past the top. */
        double u = dae_rng_uniform_double(&rng);
        level = (float)((double)spec->level + ((double)spec->level_max - (double)spec->level) * u);
        if (level > spec->level_max) level = spec->level_max;
    }

    /* Each loop reads clean[i] before writing noisy[i], so in-place works. */
    switch (spec->kind) {
    case DAE_NOISE_GAUSSIAN:
        for (size_t start = 0; start < n; start += NORMAL_BLOCK) {
            float z[NORMAL_BLOCK];
            size_t count = n - start < NORMAL_BLOCK ? n - start : NORMAL_BLOCK;
            dae_rng_normal_fill(&rng, z, count);
            for (size_t i = 0; i < count; i++) noisy[start + i] = clean[start + i] + level * z[i];
        }
        break;
    case DAE_NOISE_SALT_PEPPER: {
        /* One uniform draw per pixel: below amount the pixel is replaced,
         * and the lower half of that interval picks pepper (0). */
        const double amount = level, half = 0.5 * amount;
        for (size_t i = 0; i < n; i++) {
            double u = dae_rng_uniform_double(&rng);
            noisy[i] = u < amount ? (u < half ? 0.0f : 1.0f) : clean[i];
        }
        break;
    }
    case DAE_NOISE_SPECKLE:
        for (size_t start = 0; start < n; start += NORMAL_BLOCK) {
            float z[NORMAL_BLOCK];
            size_t count = n - start < NORMAL_BLOCK ? n - start : NORMAL_BLOCK;
            dae_rng_normal_fill(&rng, z, count);
            for (size_t i = 0; i < count; i++) {
                float x = clean[start + i];
                noisy[start + i] = x + x * (level * z[i]);
            }
        }
        break;
    default:
        if (noisy != clean) memmove(noisy, clean, n * sizeof *noisy);
        break;
    }

    if (spec->quantize) {
        for (size_t i = 0; i < n; i++) {
            float x = noisy[i];
            x = x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x);
            noisy[i] = roundf(x * 255.0f) / 255.0f;
        }
    } else if (spec->clip) {
        for (size_t i = 0; i < n; i++) {
            float x = noisy[i];
            noisy[i] = x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x);
        }
    }
}

HOT void dae_noise_pixels(const dae_noise_spec *spec, const uint8_t *px, float *clean, float *noisy, size_t n,
                          uint64_t seed, uint64_t stream) {
    for (size_t i = 0; i < n; i++) clean[i] = px[i] * (1.0f / 255.0f);
    dae_noise_apply(spec, clean, noisy, n, seed, stream);
}
