/* rng.c - xoshiro256** seeded by splitmix64, plus uniform and normal draws. */
#include "rng.h"

#include <math.h>

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

uint64_t dae_rng_next(dae_rng *r) {
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
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
