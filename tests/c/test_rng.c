/* test_rng.c: randn's fast path gives the reference's floats bit for bit. */
#include <stdlib.h>
#include <string.h>
#include "harness.h"

/* The loop randn used before the batched fast path, kept verbatim as the
 * reference: seeded results users have recorded come from it. */
static void normal_fill_reference(float *d, int64_t n, ff_rng *g, const double *a)
{
    const double two_pi = 6.283185307179586476925286766559;
    for (int64_t i = 0; i < n; i += 2) {
        double u1 = 1.0 - ff_rng_uniform(g); /* in (0, 1]: log is finite */
        double u2 = ff_rng_uniform(g);
        double r = sqrt(-2.0 * log(u1));
        d[i] = (float)(a[0] + a[1] * r * cos(two_pi * u2));
        if (i + 1 < n)
            d[i + 1] = (float)(a[0] + a[1] * r * sin(two_pi * u2));
    }
}

/* Fills n values with both, from one seed; returns the mismatches and
 * checks both generators end in the same state. */
static int64_t compare(uint64_t seed, int64_t n, double mean, double std)
{
    int64_t shape[1] = {n};
    ff_tensor *t = ff_tensor_empty(shape, 1);
    float *ref = malloc((size_t)(n ? n : 1) * sizeof *ref);
    if (!t || !ref) {
        ff_tensor_release(t);
        free(ref);
        return -1;
    }
    ff_rng g, h;
    ff_rng_seed(&g, seed);
    ff_rng_seed(&h, seed);
    double a[2] = {mean, std};
    int64_t bad = ff_randn_(t, &g, mean, std) == FF_OK ? 0 : n + 1;
    normal_fill_reference(ref, n, &h, a);
    bad += memcmp(g.s, h.s, sizeof g.s) != 0;
    const float *d = ff_tensor_data(t);
    for (int64_t i = 0; i < n; i++)
        bad += memcmp(&d[i], &ref[i], sizeof *d) != 0;
    ff_tensor_release(t);
    free(ref);
    return bad;
}

TEST(rng_randn_fast_matches_reference_sizes)
{
    /* Sizes around the batch (128 pairs) and odd tails. */
    const int64_t sizes[] = {0, 1, 2, 3, 5, 127, 255, 256, 257, 258, 511, 1000, 4097};
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++)
        for (uint64_t seed = 0; seed < 20; seed++)
            CHECK(compare(seed, sizes[k], 0.0, 1.0) == 0);
}

TEST(rng_randn_fast_matches_reference_many)
{
    /* 3 million values on the standard normal and on shifted, scaled and
     * degenerate ones (std 0: every value is the mean, rounded). */
    const double ms[][2] = {{0, 1}, {0, 0.01}, {3, 0.5}, {-2, 1e-3}, {1e3, 2e-2},
                            {0.1, 0}, {1e-20, 1e20}, {-7.5, 3}};
    for (size_t k = 0; k < sizeof ms / sizeof *ms; k++)
        for (uint64_t seed = 100; seed < 103; seed++)
            CHECK(compare(seed * 7919 + k, 125001, ms[k][0], ms[k][1]) == 0);
}

TEST(rng_randn_strided_same_sequence)
{
    /* A transposed view is filled in row-major order: the same values as a
     * contiguous tensor of its shape from the same seed. */
    int64_t shape[2] = {37, 29};
    ff_tensor *base = ff_tensor_empty(shape, 2);
    REQUIRE(base);
    ff_tensor *tv = ff_tensor_transpose(base, 0, 1);
    int64_t tshape[2] = {29, 37};
    ff_tensor *c = ff_tensor_empty(tshape, 2);
    REQUIRE(tv && c);
    ff_rng g;
    ff_rng_seed(&g, 5);
    CHECK(ff_randn_(tv, &g, 0.5, 2.0) == FF_OK);
    ff_rng_seed(&g, 5);
    CHECK(ff_randn_(c, &g, 0.5, 2.0) == FF_OK);
    ff_tensor *tc = ff_tensor_contiguous(tv);
    REQUIRE(tc);
    CHECK(memcmp(ff_tensor_data(tc), ff_tensor_data(c), 29 * 37 * sizeof(float)) == 0);
    ff_tensor_release(tc);
    ff_tensor_release(c);
    ff_tensor_release(tv);
    ff_tensor_release(base);
}
