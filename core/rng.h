/* rng.h - a small seeded random generator (xoshiro256**, seeded through
 * splitmix64). A generator is identified by (seed, stream): training derives
 * one stream per image and epoch, so results never depend on which thread
 * draws them. */
#ifndef DAE_RNG_H
#define DAE_RNG_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t s[4];
    float spare_normal; /* second Box-Muller value, valid when has_spare */
    int has_spare;
} dae_rng;

/* Seeds r deterministically from a seed and a stream number. */
void dae_rng_seed(dae_rng *r, uint64_t seed, uint64_t stream);

/* Next raw 64-bit value. */
uint64_t dae_rng_next(dae_rng *r);

/* Uniform float in [0, 1) with 24 random bits. */
float dae_rng_uniform(dae_rng *r);

/* Uniform double in [0, 1) with 53 random bits. */
double dae_rng_uniform_double(dae_rng *r);

/* Standard normal N(0,1) by the Box-Muller transform (double precision
 * inside, so the tails are right). */
float dae_rng_normal(dae_rng *r);

/* Fills out[0..n) with standard normal values: Box-Muller on pairs of
 * uniforms, with float polynomial log/sin/cos (relative error < 1e-6)
 * that the compiler vectorises. About ten times faster than n calls of
 * dae_rng_normal; a different (equally valid) sequence. */
void dae_rng_normal_fill(dae_rng *r, float *out, size_t n);

/* Uniform integer in [0, n) without modulo bias; n > 0. */
uint64_t dae_rng_below(dae_rng *r, uint64_t n);

#endif
