/* rng.c - xoshiro256** seeded by splitmix64, plus uniform and normal draws. */
#include "rng.h"

#include <math.h>
#include <string.h>

#include "hot.h"

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

void dae_rng_seed(dae_rng *r, uint64_t seed, uint64_t stream) {
    uint64_t x = seed ^ splitmix64(&stream);
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
    r->has_spare = 0;
    r->spare_normal = 0.0f;
}

/* xoshiro256**'s output: its scrambling of the state's word s[1]. */
static inline uint64_t scramble(uint64_t s1) { return rotl(s1 * 5, 7) * 9; }

/* One step of xoshiro256**'s state. */
static inline void advance(uint64_t *s) {
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
}

uint64_t dae_rng_next(dae_rng *r) {
    uint64_t result = scramble(r->s[1]);
    advance(r->s);
    return result;
}

float dae_rng_uniform(dae_rng *r) {
    return (float)(dae_rng_next(r) >> 40) * (1.0f / 16777216.0f);
}

double dae_rng_uniform_double(dae_rng *r) {
    return (double)(dae_rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
}

float dae_rng_normal(dae_rng *r) {
    if (r->has_spare) {
        r->has_spare = 0;
        return r->spare_normal;
    }
    double u1 = 1.0 - dae_rng_uniform_double(r); /* (0, 1]: log is finite */
    double u2 = dae_rng_uniform_double(r);
    double radius = sqrt(-2.0 * log(u1));
    double angle = 6.283185307179586 * u2;
    r->spare_normal = (float)(radius * sin(angle));
    r->has_spare = 1;
    return (float)(radius * cos(angle));
}

uint64_t dae_rng_below(dae_rng *r, uint64_t n) {
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t v;
    do v = dae_rng_next(r); while (v >= limit);
    return v % n;
}

/* ------------------------------------------------------- vectorised normals */

/* Natural log of u in (0, 1]: u = m * 2^e with m in [sqrt(1/2), sqrt(2)),
 * ln m = 2 atanh(t), t = (m - 1) / (m + 1), |t| < 0.172, series to t^9. */
static inline float log_unit(float u) {
    uint32_t bits;
    memcpy(&bits, &u, 4);
    int e = (int)((bits >> 23) & 0xff) - 127;
    bits = (bits & 0x007fffffu) | 0x3f800000u; /* m in [1, 2) */
    float m;
    memcpy(&m, &bits, 4);
    /* halved above sqrt(2) by taking 1 from its exponent, exact as m *
     * 0.5f: a multiply under that condition, which might trap, kept GCC
     * 12 from vectorising the loop without AVX-512's masks */
    int big = m > 1.41421356f;
    bits -= (uint32_t)big << 23;
    memcpy(&m, &bits, 4);
    e += big;
    float t = (m - 1.0f) / (m + 1.0f), t2 = t * t;
    float series = t * (2.0f + t2 * (2.0f / 3 + t2 * (2.0f / 5 + t2 * (2.0f / 7 + t2 * (2.0f / 9)))));
    return (float)e * 0.693147181f + series;
}

/* cos and sin of 2 pi f for f in [0, 1): quadrant from 4f, then Taylor
 * series on [0, pi/2) (error below 4e-8), rotated into the quadrant. */
static inline void sincos_turn(float f, float *c, float *s) {
    float q4 = f * 4.0f;
    int q = (int)q4;
    float x = (q4 - (float)q) * 1.57079633f, x2 = x * x;
    float sn = x * (1.0f + x2 * (-1.0f / 6 + x2 * (1.0f / 120 + x2 * (-1.0f / 5040 + x2 * (1.0f / 362880 + x2 * (-1.0f / 39916800))))));
    float cs = 1.0f + x2 * (-0.5f + x2 * (1.0f / 24 + x2 * (-1.0f / 720 + x2 * (1.0f / 40320 + x2 * (-1.0f / 3628800 + x2 * (1.0f / 479001600))))));
    /* turned by q quarters: (cs, sn), (-sn, cs), (-cs, -sn), (sn, -cs); an
     * odd q swaps the two and negates the cosine, q >= 2 negates both. In
     * bit operations: GCC 12 vectorised the chain of selects by quadrant
     * only with AVX-512's masks, and ran it a lane at a time on AVX2. */
    uint32_t cb, sb, odd = 0u - (uint32_t)(q & 1), flip = (uint32_t)(q & 2) << 30;
    memcpy(&cb, &cs, 4);
    memcpy(&sb, &sn, 4);
    uint32_t cq = ((cb & ~odd) | ((sb ^ 0x80000000u) & odd)) ^ flip, sq = ((sb & ~odd) | (cb & odd)) ^ flip;
    memcpy(c, &cq, 4);
    memcpy(s, &sq, 4);
}

HOT void dae_rng_normal_fill(dae_rng *r, float *out, size_t n) {
    enum { BLOCK = 128 };
    uint64_t state[4] = {r->s[0], r->s[1], r->s[2], r->s[3]}; /* a copy in registers */
    while (n > 0) {
        size_t pairs = (n + 1) / 2 < BLOCK ? (n + 1) / 2 : BLOCK;
        /* The generator's steps are a serial chain, so this loop does only
         * them (dae_rng_next's), keeping the word each draw scrambles; the
         * scrambling and the conversions run in vectors below. The same
         * bits as a dae_rng_next a pair; a 784-pixel image's normals 1.26
         * -> 0.84 us (one core, AVX-512), the chain with the scrambling
         * and conversions in it having been most of the time. */
        uint64_t word[BLOCK];
        for (size_t i = 0; i < pairs; i++) {
            word[i] = state[1];
            advance(state);
        }
        /* The loops below run over whole vectors: a last block of a few
         * pairs (784 pixels end in 8) went through the compiler's scalar
         * remainder, as slow as a whole block of 128. The extra lanes'
         * words are zero and their values never written. */
        size_t lanes = (pairs + 15) / 16 * 16;
        for (size_t i = pairs; i < lanes; i++) word[i] = 0;
        float u1[BLOCK], u2[BLOCK];
        for (size_t i = 0; i < lanes; i++) {
            uint64_t v = scramble(word[i]);
            /* Two 24-bit uniforms from one draw; u1 in (0, 1] so log is
             * finite. Both integers are below 2^25: exact as floats. */
            u1[i] = (float)(int32_t)((v >> 40) + 1) * (1.0f / 16777216.0f);
            u2[i] = (float)(int32_t)((v >> 16) & 0xffffff) * (1.0f / 16777216.0f);
        }
        float a[BLOCK], b[BLOCK];
        for (size_t i = 0; i < lanes; i++) {
            float radius = sqrtf(-2.0f * log_unit(u1[i]));
            float c, s;
            sincos_turn(u2[i], &c, &s);
            a[i] = radius * c;
            b[i] = radius * s;
        }
        size_t whole = n / 2 < pairs ? n / 2 : pairs; /* pairs written whole */
        for (size_t i = 0; i < whole; i++) {
            out[2 * i] = a[i];
            out[2 * i + 1] = b[i];
        }
        if (whole < pairs) out[2 * whole] = a[whole]; /* n odd: the last pair's first value */
        size_t written = whole * 2 + (whole < pairs);
        out += written;
        n -= written;
    }
    for (int k = 0; k < 4; k++) r->s[k] = state[k];
}
