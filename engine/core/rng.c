/*
 * rng.c: xoshiro256** seeded by splitmix64, and the fills built on it.
 * The algorithm is part of the API (see ff_rng.h): changing anything here
 * changes every seeded result users have recorded.
 */
#include <math.h>
#include "ff_rng.h"

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void ff_rng_seed(ff_rng *g, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++)
        g->s[i] = splitmix64(&x);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t ff_rng_next(ff_rng *g)
{
    uint64_t *s = g->s;
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

double ff_rng_uniform(ff_rng *g)
{
    return (double)(ff_rng_next(g) >> 11) * 0x1.0p-53;
}

uint64_t ff_rng_below(ff_rng *g, uint64_t range)
{
    /* Lemire 2019: multiply-shift, rejecting the short first interval. */
    unsigned __int128 m = (unsigned __int128)ff_rng_next(g) * range;
    uint64_t low = (uint64_t)m;
    if (low < range) {
        uint64_t threshold = -range % range;
        while (low < threshold) {
            m = (unsigned __int128)ff_rng_next(g) * range;
            low = (uint64_t)m;
        }
    }
    return (uint64_t)(m >> 64);
}

ff_rng *ff_rng_default(void)
{
    static ff_rng g;
    static int seeded;
    if (!seeded) {
        ff_rng_seed(&g, 0);
        seeded = 1;
    }
    return &g;
}

/* Fill t element by element in row-major order: a contiguous temporary is
 * filled then copied, so strided tensors see the same sequence. */
typedef void (*fill_fn)(float *d, int64_t n, ff_rng *g, const double *arg);

static ff_status fill_with(ff_tensor *t, ff_rng *g, fill_fn fn, const double *arg)
{
    if (!g)
        g = ff_rng_default();
    if (ff_tensor_is_contiguous(t)) {
        fn(ff_tensor_data(t), ff_tensor_numel(t), g, arg);
        return FF_OK;
    }
    ff_tensor *tmp = ff_tensor_empty(t->shape, t->ndim);
    if (!tmp)
        return ff_last_status();
    fn(ff_tensor_data(tmp), ff_tensor_numel(tmp), g, arg);
    ff_status st = ff_tensor_copy_(t, tmp);
    ff_tensor_release(tmp);
    return st;
}

static void uniform_fill(float *d, int64_t n, ff_rng *g, const double *a)
{
    for (int64_t i = 0; i < n; i++)
        d[i] = (float)(a[0] + (a[1] - a[0]) * ff_rng_uniform(g));
}

static void normal_fill(float *d, int64_t n, ff_rng *g, const double *a)
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

static void int_fill(float *d, int64_t n, ff_rng *g, const double *a)
{
    int64_t lo = (int64_t)a[0];
    uint64_t range = (uint64_t)((int64_t)a[1] - lo) + 1;
    for (int64_t i = 0; i < n; i++)
        d[i] = (float)(lo + (int64_t)ff_rng_below(g, range));
}

static void bernoulli_fill(float *d, int64_t n, ff_rng *g, const double *a)
{
    for (int64_t i = 0; i < n; i++)
        d[i] = ff_rng_uniform(g) < a[0] ? 1.0f : 0.0f;
}

ff_status ff_rand_(ff_tensor *t, ff_rng *g, double lo, double hi)
{
    ff_tensor_bump_version(t); /* autograd checks saved tensors by it */
    if (!(lo <= hi) || !isfinite(lo) || !isfinite(hi))
        return ff_error(FF_ERR_ARG, "rand: need finite lo <= hi, got %g and %g", lo, hi);
    double a[2] = {lo, hi};
    return fill_with(t, g, uniform_fill, a);
}

ff_status ff_randn_(ff_tensor *t, ff_rng *g, double mean, double std)
{
    ff_tensor_bump_version(t); /* autograd checks saved tensors by it */
    if (!(std >= 0) || !isfinite(mean) || !isfinite(std))
        return ff_error(FF_ERR_ARG, "randn: need a finite mean and std >= 0, got %g and %g",
                        mean, std);
    double a[2] = {mean, std};
    return fill_with(t, g, normal_fill, a);
}

ff_status ff_randint_(ff_tensor *t, ff_rng *g, int64_t lo, int64_t hi)
{
    ff_tensor_bump_version(t); /* autograd checks saved tensors by it */
    /* floats hold integers exactly up to 2^24 */
    const int64_t lim = (int64_t)1 << 24;
    if (lo > hi || lo < -lim || hi > lim)
        return ff_error(FF_ERR_ARG, "randint: need lo <= hi within +-2^24, got %lld and %lld",
                        (long long)lo, (long long)hi);
    double a[2] = {(double)lo, (double)hi};
    return fill_with(t, g, int_fill, a);
}

ff_status ff_bernoulli_(ff_tensor *t, ff_rng *g, double p)
{
    ff_tensor_bump_version(t); /* autograd checks saved tensors by it */
    if (!(p >= 0 && p <= 1))
        return ff_error(FF_ERR_ARG, "bernoulli: probability must be in [0, 1], got %g", p);
    double a[1] = {p};
    return fill_with(t, g, bernoulli_fill, a);
}
