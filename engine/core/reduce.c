/*
 * reduce.c: sum, mean, max/min (with indices), argmax/argmin, var, norm.
 *
 * Every reduction reads a contiguous input (a non-contiguous one is copied
 * first, which keeps the kernels simple and the order of summation fixed) as
 * `outer` blocks of `n` rows of `inner` elements, and reduces the rows:
 *  - inner == 1 (the last dim, or all elements): each output is one
 *    contiguous run, summed with eight partial sums;
 *  - inner > 1: the rows of a block are added into `inner` running sums,
 *    walking memory in order.
 * Sums are taken in double. The order depends only on the shape, so results
 * are the same from run to run and whatever the thread count.
 *
 * Threads: a long contiguous run (inner == 1, a full reduction above all)
 * is summed in chunks of FF_SUM_CHUNK elements, each with its own eight
 * partial sums, and the chunks' sums are then added in chunk order. The
 * chunks are split over the engine's threads, but a chunk is summed by the
 * same code whichever thread takes it and the fold is always sequential,
 * so the bits do not depend on the split: a sum of 12.8 MB was one
 * single-threaded stream (1.6 ms, a quarter of a batch norm + relu step
 * on 2 threads) before. A run of at most one chunk is summed exactly as it
 * was before chunks. Extremes and column sums (inner > 1) stay on one
 * thread.
 */
#include <math.h>
#include <stdlib.h>
#include "ff_ops.h"
#include "kernels.h"
#include "parallel.h"

/* Elements per chunk of a long run (a multiple of 8, so every chunk but
 * the last has no scalar tail). */
#define FF_SUM_CHUNK ((int64_t)1 << 16)


#define ALWAYS_INLINE static inline __attribute__((always_inline))

/* ---- the reduced layout ---- */

typedef struct {
    ff_tensor *src;          /* contiguous input: a new reference */
    const float *x;
    int64_t outer, n, inner; /* src read as outer x n x inner; n is reduced */
    ff_tensor *out;          /* contiguous, outer x inner elements */
} reduction;

static ff_status check_dim(const char *fn, const ff_tensor *a, int dim)
{
    if (dim >= a->ndim)
        return ff_error(FF_ERR_RANGE, "%s: dim %lld out of range for a tensor of rank %d", fn,
                        (long long)dim + 1, a->ndim);
    return FF_OK;
}

/* The result's shape: dim removed (size 1 with keepdim); dim < 0 removes all. */
static int reduced_shape(const ff_tensor *a, int dim, bool keepdim, int64_t *shape)
{
    int nd = 0;
    for (int i = 0; i < a->ndim; i++) {
        if (dim >= 0 && i != dim)
            shape[nd++] = a->shape[i];
        else if (keepdim)
            shape[nd++] = 1;
    }
    return nd;
}

/* Max and min have no value for an empty set. */
static ff_status check_not_empty(const char *fn, const ff_tensor *a, int dim)
{
    char buf[FF_SHAPE_STRLEN];
    if (dim >= 0 && a->shape[dim] == 0)
        return ff_error(FF_ERR_SHAPE, "%s: cannot reduce empty dim %lld of a tensor of shape %s",
                        fn, (long long)dim + 1, ff_shape_str(a->shape, a->ndim, buf, sizeof buf));
    if (dim < 0 && ff_tensor_numel(a) == 0)
        return ff_error(FF_ERR_SHAPE, "%s: cannot reduce a tensor with no elements (shape %s)",
                        fn, ff_shape_str(a->shape, a->ndim, buf, sizeof buf));
    return FF_OK;
}

/* Check dim, make the input contiguous and allocate the result. */
static ff_status reduction_begin(reduction *r, const char *fn, const ff_tensor *a, int dim,
                                 bool keepdim)
{
    int64_t shape[FF_MAX_DIMS];
    ff_status st = check_dim(fn, a, dim);
    if (st != FF_OK)
        return st;
    int nd = reduced_shape(a, dim, keepdim, shape);
    r->outer = 1, r->n = 1, r->inner = 1;
    for (int i = 0; i < a->ndim; i++) {
        if (dim < 0 || i == dim)
            r->n *= a->shape[i];
        else if (i < dim)
            r->outer *= a->shape[i];
        else
            r->inner *= a->shape[i];
    }
    /* An empty result has nothing to compute; without this, the loops would
     * still walk all n rows of each block: 2^40 of them for a fuzzed
     * 2^40 x 0 input reduced over dim 1. */
    if (r->inner == 0)
        r->outer = 0;
    r->out = ff_tensor_empty(shape, nd);
    if (!r->out)
        return ff_last_status();
    r->src = ff_tensor_contiguous((ff_tensor *)a);
    if (!r->src) {
        ff_tensor_release(r->out);
        return ff_last_status();
    }
    r->x = ff_tensor_data(r->src);
    return FF_OK;
}

/* Release the input; on failure the result too. */
static ff_tensor *reduction_end(reduction *r, ff_status st)
{
    ff_tensor_release(r->src);
    if (st != FF_OK) {
        ff_tensor_release(r->out);
        return NULL;
    }
    return r->out;
}

static const float *block_of(const reduction *r, int64_t o)
{
    return r->x + o * r->n * r->inner;
}

static float *out_of(const reduction *r, int64_t o)
{
    return ff_tensor_data(r->out) + o * r->inner;
}

/* Scratch doubles for the running sums of one block (count * inner). */
static double *scratch_new(const reduction *r, int count)
{
    return ff_alloc((size_t)(count * r->inner) * sizeof(double));
}

static void scratch_free(const reduction *r, double *p, int count)
{
    ff_free(p, (size_t)(count * r->inner) * sizeof(double));
}

/* ---- sums of g(x) ----
 * g is one of: x, |x|, x^2, (x - c)^2 (var), (|x| / c)^p (norm, c = max |x|). */

typedef enum { G_SUM, G_ABS, G_SQ, G_DEV2, G_POWP } gkind;

typedef double (*gfn)(float x, double c, double p);
static inline double g_sum(float x, double c, double p) { return x; }
static inline double g_abs(float x, double c, double p) { return fabs((double)x); }
static inline double g_sq(float x, double c, double p) { return (double)x * x; }
static inline double g_dev2(float x, double c, double p) { double d = x - c; return d * d; }
static inline double g_powp(float x, double c, double p) { return pow(fabs((double)x) / c, p); }

/* Eight partial sums break the chain of dependent adds (gcc turns them into
 * vector adds) and keep the order fixed: it depends only on n. */
ALWAYS_INLINE double row_sum_t(const float *restrict x, int64_t n, double c, double p, gfn g)
{
    double acc[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++)
            acc[k] += g(x[i + k], c, p);
    for (int k = 0; i < n; i++, k++)
        acc[k] += g(x[i], c, p);
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

/* Built for AVX2 and for the baseline (FF_CLONES, kernels.h): the
 * float-to-double conversions and adds run four lanes wide instead of two
 * (a 12.8 MB sum on one thread: 1.4 -> 0.5 ms); the lanes hold the same
 * eight partial sums and AVX2 brings no fused multiply-add, so both give
 * the same bits (tested). */
FF_CLONES static double row_sum(gkind g, const float *x, int64_t n, double c, double p)
{
    switch (g) {
    case G_SUM: return row_sum_t(x, n, c, p, g_sum);
    case G_ABS: return row_sum_t(x, n, c, p, g_abs);
    case G_SQ: return row_sum_t(x, n, c, p, g_sq);
    case G_DEV2: return row_sum_t(x, n, c, p, g_dev2);
    case G_POWP: return row_sum_t(x, n, c, p, g_powp);
    }
    return 0;
}

/* A long run in chunks (see the top comment): chunk k's sum goes to
 * part[k]; the caller folds them in order. */
typedef struct {
    gkind g;
    const float *x;
    int64_t n;
    double c, p, *part;
} chunk_job;

static void chunk_range(void *arg, int t, int64_t k0, int64_t k1)
{
    const chunk_job *j = arg;
    for (int64_t k = k0; k < k1; k++) {
        int64_t i0 = k * FF_SUM_CHUNK, len = j->n - i0 < FF_SUM_CHUNK ? j->n - i0 : FF_SUM_CHUNK;
        j->part[k] = row_sum(j->g, j->x + i0, len, j->c, j->p);
    }
}

static double run_sum(gkind g, const float *x, int64_t n, double c, double p)
{
    if (n <= FF_SUM_CHUNK)
        return row_sum(g, x, n, c, p);
    int64_t nk = (n + FF_SUM_CHUNK - 1) / FF_SUM_CHUNK;
    double stack[64], *part = nk <= 64 ? stack : malloc(sizeof(double) * (size_t)nk);
    double s = 0;
    if (!part) { /* the same chunks and fold, on this thread */
        for (int64_t k = 0; k < nk; k++) {
            int64_t i0 = k * FF_SUM_CHUNK, len = n - i0 < FF_SUM_CHUNK ? n - i0 : FF_SUM_CHUNK;
            s += row_sum(g, x + i0, len, c, p);
        }
        return s;
    }
    chunk_job j = {g, x, n, c, p, part};
    ff_par_run(ff_par_threads(nk, FF_SUM_CHUNK), nk, chunk_range, &j);
    for (int64_t k = 0; k < nk; k++)
        s += part[k];
    if (part != stack)
        free(part);
    return s;
}

/* acc[j] += g(x[j]) for one row of a block. The loops run in multiples of 8
 * then a tail, because gcc -O2 vectorises only trip counts known to be a
 * multiple of the vector width. */
ALWAYS_INLINE void col_add_t(double *restrict acc, const float *restrict x, int64_t inner,
                             const double *restrict c, double p, gfn g)
{
    int64_t m = inner & ~(int64_t)7;
    for (int64_t j = 0; j < m; j++)
        acc[j] += g(x[j], c ? c[j] : 0, p);
    for (int64_t j = m; j < inner; j++)
        acc[j] += g(x[j], c ? c[j] : 0, p);
}

static void col_add(gkind g, double *acc, const float *x, int64_t inner, const double *c,
                    double p)
{
    switch (g) {
    case G_SUM: col_add_t(acc, x, inner, NULL, p, g_sum); break;
    case G_ABS: col_add_t(acc, x, inner, NULL, p, g_abs); break;
    case G_SQ: col_add_t(acc, x, inner, NULL, p, g_sq); break;
    case G_DEV2: col_add_t(acc, x, inner, c, p, g_dev2); break;
    case G_POWP: col_add_t(acc, x, inner, c, p, g_powp); break;
    }
}

/* acc[j] = sum over the n rows of block o of g(x, c[j]); c may be NULL for
 * the kinds that do not use it. */
static void block_sum(const reduction *r, int64_t o, gkind g, const double *c, double p,
                      double *acc)
{
    const float *x = block_of(r, o);
    if (r->inner == 1) {
        acc[0] = run_sum(g, x, r->n, c ? c[0] : 0, p);
        return;
    }
    for (int64_t j = 0; j < r->inner; j++)
        acc[j] = 0;
    for (int64_t i = 0; i < r->n; i++)
        col_add(g, acc, x + i * r->inner, r->inner, c, p);
}

/* ---- extremes ----
 * The first occurrence wins ties; a NaN wins over numbers, and the first NaN
 * stays (as torch). */

typedef enum { E_MAX, E_MIN, E_ABSMAX } emode;

typedef float (*keyfn)(float);
typedef bool (*betterfn)(float v, float best);
static inline float key_id(float x) { return x; }
static inline float key_abs(float x) { return fabsf(x); }
static inline bool better_max(float v, float best) { return v > best || v != v; }
static inline bool better_min(float v, float best) { return v < best || v != v; }

ALWAYS_INLINE void row_extreme_t(const float *x, int64_t n, float *val, float *idx, keyfn key,
                                 betterfn better)
{
    float best = key(x[0]);
    int64_t at = 0;
    /* better() takes a NaN, and nothing beats the first NaN: stop there
     * (or do not start). Testing best each step instead costs 2.5x. */
    for (int64_t i = best == best ? 1 : n; i < n; i++) {
        float v = key(x[i]);
        if (better(v, best)) {
            best = v, at = i;
            if (v != v)
                break;
        }
    }
    *val = best;
    if (idx)
        *idx = (float)at;
}

ALWAYS_INLINE void col_extreme_t(const float *x, int64_t n, int64_t inner, float *val,
                                 float *idx, keyfn key, betterfn better)
{
    for (int64_t j = 0; j < inner; j++)
        val[j] = key(x[j]);
    if (idx)
        for (int64_t j = 0; j < inner; j++)
            idx[j] = 0;
    for (int64_t i = 1; i < n; i++) {
        const float *row = x + i * inner;
        for (int64_t j = 0; j < inner; j++) {
            float v = key(row[j]);
            if (val[j] == val[j] && better(v, val[j])) {
                val[j] = v;
                if (idx)
                    idx[j] = (float)i;
            }
        }
    }
}

/* Values and (when idx is not NULL) 0-based positions along the reduced dim
 * for block o; n >= 1. */
static void block_extreme(const reduction *r, int64_t o, emode m, float *val, float *idx)
{
    const float *x = block_of(r, o);
    bool row = r->inner == 1;
    switch (m) {
    case E_MAX:
        if (row)
            row_extreme_t(x, r->n, val, idx, key_id, better_max);
        else
            col_extreme_t(x, r->n, r->inner, val, idx, key_id, better_max);
        break;
    case E_MIN:
        if (row)
            row_extreme_t(x, r->n, val, idx, key_id, better_min);
        else
            col_extreme_t(x, r->n, r->inner, val, idx, key_id, better_min);
        break;
    case E_ABSMAX:
        if (row)
            row_extreme_t(x, r->n, val, idx, key_abs, better_max);
        else
            col_extreme_t(x, r->n, r->inner, val, idx, key_abs, better_max);
        break;
    }
}

/* ---- sum, mean ---- */

static ff_tensor *sum_or_mean(const char *fn, const ff_tensor *a, int dim, bool keepdim,
                              bool mean)
{
    reduction r;
    if (reduction_begin(&r, fn, a, dim, keepdim) != FF_OK)
        return NULL;
    double *acc = scratch_new(&r, 1);
    if (!acc)
        return reduction_end(&r, ff_last_status());
    for (int64_t o = 0; o < r.outer; o++) {
        block_sum(&r, o, G_SUM, NULL, 0, acc);
        float *dst = out_of(&r, o);
        /* an empty mean is 0/0 = NaN */
        for (int64_t j = 0; j < r.inner; j++)
            dst[j] = (float)(mean ? acc[j] / (double)r.n : acc[j]);
    }
    scratch_free(&r, acc, 1);
    return reduction_end(&r, FF_OK);
}

ff_tensor *ff_sum(const ff_tensor *a, int dim, bool keepdim)
{
    return sum_or_mean("sum", a, dim, keepdim, false);
}

ff_tensor *ff_mean(const ff_tensor *a, int dim, bool keepdim)
{
    return sum_or_mean("mean", a, dim, keepdim, true);
}

/* ---- max, min, argmax, argmin ---- */

/* Values (returned) and, when indices is not NULL, positions. */
static ff_tensor *extreme(const char *fn, const ff_tensor *a, int dim, bool keepdim,
                          emode m, ff_tensor **indices)
{
    if (indices)
        *indices = NULL;
    if (check_dim(fn, a, dim) != FF_OK || check_not_empty(fn, a, dim) != FF_OK)
        return NULL;
    reduction r;
    if (reduction_begin(&r, fn, a, dim, keepdim) != FF_OK)
        return NULL;
    ff_tensor *idx = ff_tensor_empty(r.out->shape, r.out->ndim);
    if (!idx)
        return reduction_end(&r, ff_last_status());
    for (int64_t o = 0; o < r.outer; o++)
        block_extreme(&r, o, m, out_of(&r, o), ff_tensor_data(idx) + o * r.inner);
    if (indices)
        *indices = idx;
    else
        ff_tensor_release(idx);
    return reduction_end(&r, FF_OK);
}

ff_tensor *ff_max(const ff_tensor *a, int dim, bool keepdim, ff_tensor **indices)
{
    return extreme("max", a, dim, keepdim, E_MAX, indices);
}

ff_tensor *ff_min(const ff_tensor *a, int dim, bool keepdim, ff_tensor **indices)
{
    return extreme("min", a, dim, keepdim, E_MIN, indices);
}

static ff_tensor *arg_extreme(const char *fn, const ff_tensor *a, int dim, bool keepdim,
                              emode m)
{
    ff_tensor *idx;
    ff_tensor *val = extreme(fn, a, dim, keepdim, m, &idx);
    ff_tensor_release(val);
    return val ? idx : NULL;
}

ff_tensor *ff_argmax(const ff_tensor *a, int dim, bool keepdim)
{
    return arg_extreme("argmax", a, dim, keepdim, E_MAX);
}

ff_tensor *ff_argmin(const ff_tensor *a, int dim, bool keepdim)
{
    return arg_extreme("argmin", a, dim, keepdim, E_MIN);
}

/* ---- var ---- */

ff_tensor *ff_var(const ff_tensor *a, int dim, bool unbiased, bool keepdim)
{
    reduction r;
    if (reduction_begin(&r, "var", a, dim, keepdim) != FF_OK)
        return NULL;
    double *acc = scratch_new(&r, 2);
    if (!acc)
        return reduction_end(&r, ff_last_status());
    double *mean = acc + r.inner;
    /* n - 1 <= 0 has no unbiased estimate: NaN, as torch */
    double denom = (double)r.n - (unbiased ? 1 : 0);
    for (int64_t o = 0; o < r.outer; o++) {
        /* two passes: the mean, then squared deviations from it */
        block_sum(&r, o, G_SUM, NULL, 0, acc);
        for (int64_t j = 0; j < r.inner; j++)
            mean[j] = acc[j] / (double)r.n;
        block_sum(&r, o, G_DEV2, mean, 0, acc);
        float *dst = out_of(&r, o);
        for (int64_t j = 0; j < r.inner; j++)
            dst[j] = denom > 0 ? (float)(acc[j] / denom) : NAN;
    }
    scratch_free(&r, acc, 2);
    return reduction_end(&r, FF_OK);
}

/* ---- norm ---- */

/* General p: scaled by m = max |x| so that |x|^p cannot overflow;
 * ||x||_p = m * (sum (|x|/m)^p)^(1/p). 0, inf and NaN maxima are the norm. */
static void norm_general(const reduction *r, double p, double *acc)
{
    double *scale = acc + r->inner;
    for (int64_t o = 0; o < r->outer; o++) {
        float *dst = out_of(r, o);
        block_extreme(r, o, E_ABSMAX, dst, NULL);
        for (int64_t j = 0; j < r->inner; j++)
            scale[j] = dst[j] > 0 && isfinite(dst[j]) ? dst[j] : 1.0;
        block_sum(r, o, G_POWP, scale, p, acc);
        for (int64_t j = 0; j < r->inner; j++)
            if (dst[j] > 0 && isfinite(dst[j]))
                dst[j] = (float)(scale[j] * pow(acc[j], 1.0 / p));
    }
}

/* p in {1, 2, inf} without the scaling pass: sums of |x| and x^2 in double
 * cannot overflow for float inputs. */
static void norm_simple(const reduction *r, double p, double *acc)
{
    for (int64_t o = 0; o < r->outer; o++) {
        float *dst = out_of(r, o);
        if (isinf(p)) {
            block_extreme(r, o, E_ABSMAX, dst, NULL);
            continue;
        }
        block_sum(r, o, p == 1 ? G_ABS : G_SQ, NULL, p, acc);
        for (int64_t j = 0; j < r->inner; j++)
            dst[j] = (float)(p == 1 ? acc[j] : sqrt(acc[j]));
    }
}

ff_tensor *ff_norm(const ff_tensor *a, double p, int dim, bool keepdim)
{
    if (!(p > 0))
        return ff_error(FF_ERR_ARG, "norm: p must be positive (or inf), got %g", p), NULL;
    reduction r;
    if (reduction_begin(&r, "norm", a, dim, keepdim) != FF_OK)
        return NULL;
    if (r.n == 0) { /* the norm of nothing is 0, for every p */
        ff_status st = ff_tensor_fill_(r.out, 0.0f);
        return reduction_end(&r, st);
    }
    double *acc = scratch_new(&r, 2); /* sums and scales */
    if (!acc)
        return reduction_end(&r, ff_last_status());
    if (p == 1 || p == 2 || isinf(p))
        norm_simple(&r, p, acc);
    else
        norm_general(&r, p, acc);
    scratch_free(&r, acc, 2);
    return reduction_end(&r, FF_OK);
}
