/*
 * ff_rng.h: the seedable random number generator.
 *
 * Algorithm (fixed, so a seed gives the same numbers on every machine):
 *  - state: xoshiro256** (Blackman & Vigna 2018), four 64-bit words;
 *  - seeding: the four words are the first four outputs of splitmix64
 *    started at the seed;
 *  - uniform double in [0,1): (next() >> 11) * 2^-53;
 *  - uniform float in [lo,hi): lo + (hi-lo) * u, u as above, rounded to float;
 *  - normal: Box-Muller on two uniforms u1, u2 (u1 replaced by 1-u1 so it is
 *    never 0): r = sqrt(-2 ln u1), values r*cos(2 pi u2) then r*sin(2 pi u2),
 *    consumed pairwise in element order (an odd tail drops its sin value);
 *  - integer in [lo,hi]: Lemire's multiply-shift with rejection (unbiased);
 *  - bernoulli(p): 1 if the uniform double < p, else 0.
 * Tensors are filled in row-major order whatever their strides.
 */
#ifndef FF_RNG_H
#define FF_RNG_H

#include "ff_tensor.h"

typedef struct ff_rng {
    uint64_t s[4];
} ff_rng;

void ff_rng_seed(ff_rng *g, uint64_t seed);
uint64_t ff_rng_next(ff_rng *g);
double ff_rng_uniform(ff_rng *g);
/* Unbiased integer in [0, range); range >= 1. */
uint64_t ff_rng_below(ff_rng *g, uint64_t range);

/* The process-wide default generator (seeded with 0 at start). */
ff_rng *ff_rng_default(void);

/* In-place fills; g NULL means the default generator. */
ff_status ff_rand_(ff_tensor *t, ff_rng *g, double lo, double hi);
ff_status ff_randn_(ff_tensor *t, ff_rng *g, double mean, double std);
ff_status ff_randint_(ff_tensor *t, ff_rng *g, int64_t lo, int64_t hi); /* inclusive */
ff_status ff_bernoulli_(ff_tensor *t, ff_rng *g, double p);

#endif
