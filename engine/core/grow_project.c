/*
 * grow_project.c: the projection of Firefly's step 1, in place, after every
 * optimiser step: split directions onto ||v_i|| <= eps, gated neurons onto
 * |e_j| <= eps and ||(u_j, b_j, o_j)|| <= 1 (lib/firefly/grow/methods/
 * firefly.lua, see ff_grow_project_rows and ff_grow_project_neurons in
 * ff_ops.h).
 *
 * Why in C: composed, the projection is about fifteen tensor ops per
 * candidate group (norm, pow, sum, sqrt, clamp, div), each allocating its
 * result, run after every batch of step 1: ~6 % of an MLP's growth step.
 *
 * The same bits as the composition, which tests/lua/test_grow_project.lua
 * keeps as the reference: every value goes through the float or double
 * operations the ops would apply, in their order. Squares are powf(x, 2)
 * (what t:pow(2) computes; it differs from x * x on a few floats in 10^4),
 * sums are reduce.c's: in double, a row (the last dim) in eight partial
 * sums combined pairwise, a column (dim 1 of (out, k)) one after the other.
 * (reduce.c sums a row longer than 2^16 floats in chunks, FF_SUM_CHUNK:
 * for such rows, 65536 inputs per neuron and up, the bits may differ from
 * the composition's in the last place.)
 */
#include <math.h>
#include <stdlib.h>
#include "ff_ops.h"

#define ALWAYS_INLINE static inline __attribute__((always_inline))

typedef double (*termfn)(float x);
static inline double t_plain(float x) { return x; }
static inline double t_sq(float x) { return (double)x * x; }     /* norm's square */
static inline double t_powsq(float x) { return powf(x, 2.0f); }  /* pow(2)'s, as float */

/* reduce.c's row_sum: eight partial sums, combined pairwise */
ALWAYS_INLINE double row_sum8(const float *x, int64_t n, termfn g)
{
    double acc[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++)
            acc[k] += g(x[i + k]);
    for (int k = 0; i < n; i++, k++)
        acc[k] += g(x[i]);
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

/* op clamp's scalar rule (elementwise.c), keeping a NaN */
static inline float clamp_lo(float x, float lo) { return x < lo ? lo : x; }
static inline float clamp_both(float x, float lo, float hi)
{
    float y = x < lo ? lo : x;
    return y > hi ? hi : y;
}

static ff_status check_float(const char *fn, const ff_tensor *t, int arg, const char *name)
{
    char s[FF_SHAPE_STRLEN];
    if (!t)
        return ff_error(FF_ERR_ARG, "%s: argument #%d (%s) is required", fn, arg, name);
    if (!ff_tensor_is_contiguous(t))
        return ff_error(FF_ERR_ARG, "%s: argument #%d (%s, shape %s) must be contiguous", fn, arg,
                        name, ff_shape_str(t->shape, t->ndim, s, sizeof s));
    return FF_OK;
}

ff_status ff_grow_project_rows(ff_tensor *v, double eps)
{
    ff_status st = check_float("grow_project_rows", v, 1, "v");
    if (st)
        return st;
    if (v->ndim < 1)
        return ff_error(FF_ERR_SHAPE, "grow_project_rows: argument #1 (v) must have a row dim, got a "
                                      "scalar");
    if (!(eps > 0))
        return ff_error(FF_ERR_ARG, "grow_project_rows: eps must be positive, got %g", eps);
    int64_t m = v->shape[0], len = m ? ff_tensor_numel(v) / m : 0;
    float e = (float)eps, *d = ff_tensor_data(v);
    /* rows:mul_((rows:norm(2, 2, true):clamp(eps, nil)):pow(-1) * eps) */
    for (int64_t i = 0; i < m; i++) {
        float *row = d + i * len;
        float norm = len ? (float)sqrt(row_sum8(row, len, t_sq)) : 0.0f;
        float f = powf(clamp_lo(norm, e), -1.0f) * e;
        for (int64_t j = 0; j < len; j++)
            row[j] = row[j] * f;
    }
    ff_tensor_bump_version(v);
    return FF_OK;
}

ff_status ff_grow_project_neurons(ff_tensor *e, ff_tensor *u, ff_tensor *b, ff_tensor *o,
                                  double eps)
{
    static const char fn[] = "grow_project_neurons";
    ff_status st;
    if ((st = check_float(fn, e, 1, "e")) || (st = check_float(fn, u, 2, "u")) ||
        (st = check_float(fn, b, 3, "b")) || (st = check_float(fn, o, 4, "o")))
        return st;
    char se[FF_SHAPE_STRLEN], sx[FF_SHAPE_STRLEN];
    ff_shape_str(e->shape, e->ndim, se, sizeof se);
    if (e->ndim != 1)
        return ff_error(FF_ERR_SHAPE, "%s: argument #1 (e) has shape %s, expected one step per "
                                      "neuron (k)", fn, se);
    int64_t k = e->shape[0];
    if (u->ndim < 1 || u->shape[0] != k)
        return ff_error(FF_ERR_SHAPE, "%s: argument #2 (u) has shape %s, expected %lld rows to "
                                      "match argument #1 (e, %s)", fn,
                        ff_shape_str(u->shape, u->ndim, sx, sizeof sx), (long long)k, se);
    if (b->ndim != 1 || b->shape[0] != k)
        return ff_error(FF_ERR_SHAPE, "%s: argument #3 (b) has shape %s, expected %s to match "
                                      "argument #1 (e)", fn,
                        ff_shape_str(b->shape, b->ndim, sx, sizeof sx), se);
    int64_t on = ff_tensor_numel(o), out = o->ndim >= 2 ? o->shape[0] : 0;
    if (o->ndim < 2 || k == 0 || out == 0 || on % (out * k))
        return ff_error(FF_ERR_SHAPE, "%s: argument #4 (o) has shape %s, expected (out, k x n, ...) "
                                      "with k = %lld (argument #1, e)", fn,
                        ff_shape_str(o->shape, o->ndim, sx, sizeof sx), (long long)k);
    if (!(eps > 0))
        return ff_error(FF_ERR_ARG, "%s: eps must be positive, got %g", fn, eps);
    int64_t fan = ff_tensor_numel(u) / k, sp = on / (out * k);
    /* per neuron: o's column sum (double), then the norm; o's cells of a
     * single neuron (k = 1), which reduce.c sums as a row */
    double *colsum = calloc((size_t)k, sizeof *colsum);
    float *norm = malloc(sizeof *norm * (size_t)(k + (k == 1 ? out : 0)));
    if (!colsum || !norm) {
        free(colsum);
        free(norm);
        return ff_error(FF_ERR_MEM, "%s: out of memory", fn);
    }
    float *ocell = k == 1 ? norm + 1 : NULL;
    float *ed = ff_tensor_data(e), *ud = ff_tensor_data(u), *bd = ff_tensor_data(b);
    float *od = ff_tensor_data(o), ef = (float)eps;
    /* e:clamp_(-eps, eps) */
    for (int64_t j = 0; j < k; j++)
        ed[j] = clamp_both(ed[j], -ef, ef);
    /* o:pow(2):sum(3):sum(1): each (i, j)'s spatial sum rounded to float,
     * then summed over i; reduce.c sums a column one row after the other,
     * but a single column (k = 1) as a row, in eight partial sums */
    for (int64_t i = 0; i < out; i++)
        for (int64_t j = 0; j < k; j++) {
            float cell = (float)row_sum8(od + (i * k + j) * sp, sp, t_powsq);
            if (ocell)
                ocell[i] = cell;
            else
                colsum[j] += cell;
        }
    if (ocell)
        colsum[0] = row_sum8(ocell, out, t_plain);
    /* (u:pow(2):sum(2) + b:pow(2) + o's):sqrt():clamp(1, nil) */
    for (int64_t j = 0; j < k; j++) {
        float us = (float)row_sum8(ud + j * fan, fan, t_powsq), bs = powf(bd[j], 2.0f);
        norm[j] = clamp_lo(sqrtf((us + bs) + (float)colsum[j]), 1.0f);
    }
    /* u, b, o divided by their neuron's norm, in memory order */
    for (int64_t j = 0; j < k; j++) {
        for (int64_t i = 0; i < fan; i++)
            ud[j * fan + i] = ud[j * fan + i] / norm[j];
        bd[j] = bd[j] / norm[j];
    }
    for (int64_t i = 0; i < out; i++)
        for (int64_t j = 0; j < k; j++)
            for (int64_t s = 0; s < sp; s++)
                od[(i * k + j) * sp + s] = od[(i * k + j) * sp + s] / norm[j];
    free(norm);
    free(colsum);
    ff_tensor_bump_version(e);
    ff_tensor_bump_version(u);
    ff_tensor_bump_version(b);
    ff_tensor_bump_version(o);
    return FF_OK;
}
