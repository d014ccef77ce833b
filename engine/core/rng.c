/*
 * rng.c: xoshiro256** seeded by splitmix64, and the fills built on it.
 * The algorithm is part of the API (see ff_rng.h): changing anything here
 * changes every seeded result users have recorded.
 */
#include <math.h>
#include <string.h>
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

/* inline for the fills' loops, which call it per value */
static inline __attribute__((always_inline)) uint64_t xoshiro_next(uint64_t *s)
{
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

uint64_t ff_rng_next(ff_rng *g) { return xoshiro_next(g->s); }

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

/* Box-Muller, value by value as the algorithm in ff_rng.h defines it
 * (glibc's log, sqrt and sincos). normal_fill below gives the same floats
 * faster; this is what it falls back to. */
static void normal_pair_exact(double u1, double u2, const double *a, float out[2])
{
    const double two_pi = 6.283185307179586476925286766559;
    double r = sqrt(-2.0 * log(u1));
    out[0] = (float)(a[0] + a[1] * r * cos(two_pi * u2));
    out[1] = (float)(a[0] + a[1] * r * sin(two_pi * u2));
}

/*
 * The fast path. Drawing normals was ~6 % of a growth step, nearly all of
 * it in glibc's log and sincos, one call each per pair. Here the same
 * formula runs over a batch of pairs with inline polynomials that the
 * compiler vectorises (no calls, no branches):
 *  - log: u1 = 2^e m with m in [sqrt(1/2), sqrt(2)), log m = 2 atanh(s),
 *    s = (m-1)/(m+1), |s| <= 0.172, the series to s^17 (truncation under
 *    2^-50 relative); e ln 2 in two parts (fdlibm's split);
 *  - sin, cos: x = 2 pi u2 reduced by k pi/2 (k <= 4) in three exact
 *    Cody-Waite steps (fdlibm's pio2_1..3), then fdlibm's minimax kernels
 *    on |x| <= pi/4 + tiny, quadrant by k mod 4.
 * Each value is then a few double ulps from glibc's, whose own errors are
 * under 1 ulp; FF_NORMAL_SLACK (2^-40 of the magnitudes, far above both)
 * bounds the difference of the two final doubles. Rounding to float is
 * monotonic, so when y - slack and y + slack round to the same float,
 * glibc's value rounds to it too; otherwise (about 2^-16 of the values:
 * the slack against a float's 2^-24 spacing) the pair is recomputed by
 * normal_pair_exact. The output is the reference's bit for bit (tested
 * against a copy of the old loop on many seeds, sizes, means and stds).
 */
#define FF_NORMAL_BATCH 128 /* pairs; a constant trip count vectorises at -O2 */
#ifndef FF_NORMAL_SLACK /* a test may set 0 to see the fallback matter */
#define FF_NORMAL_SLACK 0x1p-40
#endif

static double ln_batch_one(double u)
{
    /* u in (0, 1]: positive, normal (>= 2^-53) */
    uint64_t bits;
    memcpy(&bits, &u, sizeof bits);
    /* musl's split, without a branch: shifting the bits by 1 - sqrt(1/2)'s
     * pattern moves the exponent step to sqrt(2), so m = u / 2^e lands in
     * [sqrt(1/2), sqrt(2)) */
    const uint64_t off = 0x3ff0000000000000ULL - 0x3fe6a09e667f3bcdULL;
    uint64_t ib = bits + off;
    uint64_t mbits = (ib & 0x000fffffffffffffULL) + 0x3fe6a09e667f3bcdULL;
    uint64_t ebits = (ib >> 52) | 0x4330000000000000ULL; /* 2^52 + biased e, exactly */
    double m, e;
    memcpy(&m, &mbits, sizeof m);
    memcpy(&e, &ebits, sizeof e);
    e = (e - 0x1p52) - 1023.0;
    double s = (m - 1.0) / (m + 1.0), z = s * s;
    double p = 2.0 / 17;
    p = 2.0 / 15 + z * p;
    p = 2.0 / 13 + z * p;
    p = 2.0 / 11 + z * p;
    p = 2.0 / 9 + z * p;
    p = 2.0 / 7 + z * p;
    p = 2.0 / 5 + z * p;
    p = 2.0 / 3 + z * p;
    double lm = 2.0 * s + s * z * p;
    const double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
    return e * ln2_hi + (e * ln2_lo + lm);
}

/* sin and cos of x in [0, 2 pi) */
static void sincos_batch_one(double x, double *sn, double *cs)
{
    const double pio2_1 = 1.57079632673412561417e+00, pio2_2 = 6.07710050630396597660e-11,
                 pio2_3 = 2.02226624871116645580e-21, pio2_3t = 8.47842766036889956997e-32;
    const double inv_pio2 = 6.36619772367581382433e-01;
    double k = (double)(int)(x * inv_pio2 + 0.5); /* 0..4 */
    double r = ((x - k * pio2_1) - k * pio2_2) - k * pio2_3;
    r -= k * pio2_3t;
    double z = r * r, w = z * z;
    const double S1 = -1.66666666666666324348e-01, S2 = 8.33333333332248946124e-03,
                 S3 = -1.98412698298579493134e-04, S4 = 2.75573137070700676789e-06,
                 S5 = -2.50507602534068634195e-08, S6 = 1.58969099521155010221e-10;
    double sr = S2 + z * (S3 + z * (S4 + z * (S5 + z * S6)));
    double sv = r + z * r * (S1 + z * sr);
    const double C1 = 4.16666666666666019037e-02, C2 = -1.38888888888741095749e-03,
                 C3 = 2.48015872894767294178e-05, C4 = -2.75573143513906633035e-07,
                 C5 = 2.08757232129817482790e-09, C6 = -1.13596475577881948265e-11;
    double cr = z * (C1 + z * (C2 + z * C3)) + w * w * (C4 + z * (C5 + z * C6));
    double hz = 0.5 * z, cw = 1.0 - hz;
    double cv = cw + (((1.0 - cw) - hz) + z * cr);
    int q = (int)k & 3;
    double s0 = (q & 1) ? cv : sv, c0 = (q & 1) ? sv : cv;
    *sn = (q & 2) ? -s0 : s0;
    *cs = ((q + 1) & 2) ? -c0 : c0;
}

static void normal_fill(float *d, int64_t n, ff_rng *g, const double *a)
{
    const double two_pi = 6.283185307179586476925286766559;
    double u1[FF_NORMAL_BATCH], u2[FF_NORMAL_BATCH], r[FF_NORMAL_BATCH];
    double c[FF_NORMAL_BATCH], sn[FF_NORMAL_BATCH];
    for (int64_t i = 0; i < n; i += 2 * FF_NORMAL_BATCH) {
        int64_t pairs = (n - i + 1) / 2;
        int m = pairs < FF_NORMAL_BATCH ? (int)pairs : FF_NORMAL_BATCH;
        uint64_t st[4] = {g->s[0], g->s[1], g->s[2], g->s[3]};
        for (int j = 0; j < m; j++) { /* ff_rng_uniform, inline */
            u1[j] = 1.0 - (double)(xoshiro_next(st) >> 11) * 0x1.0p-53; /* (0, 1]: finite log */
            u2[j] = (double)(xoshiro_next(st) >> 11) * 0x1.0p-53;
        }
        memcpy(g->s, st, sizeof st);
        for (int j = m; j < FF_NORMAL_BATCH; j++)
            u1[j] = 1.0, u2[j] = 0.0; /* unused lanes, kept finite */
        for (int j = 0; j < FF_NORMAL_BATCH; j++)
            r[j] = -2.0 * ln_batch_one(u1[j]);
        for (int j = 0; j < FF_NORMAL_BATCH; j++)
            sincos_batch_one(two_pi * u2[j], &sn[j], &c[j]);
        for (int j = 0; j < m; j++) {
            double rr = a[1] * sqrt(r[j] > 0 ? r[j] : 0.0);
            double p0 = rr * c[j], p1 = rr * sn[j];
            double y0 = a[0] + p0, y1 = a[0] + p1;
            double b0 = (fabs(a[0]) + fabs(p0)) * FF_NORMAL_SLACK;
            double b1 = (fabs(a[0]) + fabs(p1)) * FF_NORMAL_SLACK;
            float f[2] = {(float)y0, (float)y1};
            if ((float)(y0 - b0) != f[0] || (float)(y0 + b0) != f[0] ||
                (float)(y1 - b1) != f[1] || (float)(y1 + b1) != f[1])
                normal_pair_exact(u1[j], u2[j], a, f);
            d[i + 2 * j] = f[0];
            if (i + 2 * j + 1 < n)
                d[i + 2 * j + 1] = f[1];
        }
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
