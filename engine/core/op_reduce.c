/*
 * op_reduce.c: reductions as differentiable ops.
 *
 * Forwards are the kernels of reduce.c. Backward spreads the result's
 * gradient back over the reduced elements. Like the kernels, it reads the
 * input as `outer` blocks of `n` rows of `inner` elements (n is the reduced
 * dim; outer = inner = 1 and n = every element when all dims are reduced),
 * and the result and its gradient as outer x inner: the same row-major order
 * whether or not keepdim kept the reduced dim. So every backward is a loop
 * over (o, i, j) with contiguous operands: along j when inner > 1, along i
 * with the result's entry fixed when inner == 1.
 *
 * Parameters (ff_params):
 *   sum, mean   i[0] dim (-1: all dims), i[1] keepdim
 *   max, min    i[0] dim (-1: all dims), i[1] keepdim; with a dim, ctx->extra
 *               is the 0-based indices tensor (the op's second result)
 *   var         i[0] dim (-1: all dims), i[1] keepdim, i[2] unbiased
 *   norm        f[0] p (> 0, INFINITY for max |x|), i[0] dim (-1: all dims),
 *               i[1] keepdim
 *
 * Saved for backward:
 *   sum, mean   nothing (shapes only)
 *   max, min    the indices (the gradient goes to that position only: the
 *               first extreme on ties, as the indices say)
 *   var         the input
 *   norm        the input and the result
 */
#include <math.h>
#include "ff_autograd.h"
#include "ff_ops.h"
#include "parallel.h"

#define ALWAYS_INLINE static inline __attribute__((always_inline))

/* ---- layout ---- */

typedef struct {
    int64_t outer, n, inner;
} rlayout;

static rlayout layout_of(const ff_shape *s, int dim)
{
    rlayout l = {1, 1, 1};
    for (int i = 0; i < s->ndim; i++) {
        if (dim < 0 || i == dim)
            l.n *= s->size[i];
        else if (i < dim)
            l.outer *= s->size[i];
        else
            l.inner *= s->size[i];
    }
    return l;
}

/* The reduced dim as forward and backward both read it: -1 (all) for any
 * negative i[0], and a dim beyond any rank (an error in the kernel) for one
 * past int. Casting i[0] to int in one place and not the other made
 * forward reduce dim 0 for i[0] = INT64_MIN and backward all dims, reading
 * past the gradient (fuzz_ops). */
static int dim_of(const ff_ctx *ctx)
{
    int64_t d = ctx->p.i[0];
    return d < 0 ? -1 : d > FF_MAX_DIMS ? FF_MAX_DIMS : (int)d;
}

static ff_tensor *empty_input_shaped(const ff_ctx *ctx)
{
    return ff_tensor_empty(ctx->in_shape[0].size, ctx->in_shape[0].ndim);
}

/* ---- sum, mean: every element of a row gets the row's gradient (/ n) ---- */

/* Rows [r0, r1) of the spread: row r (of outer * n) is the gradient row
 * of block r / n, scaled. Pure writes, so any split gives the same bits. */
typedef struct {
    const float *g;
    float *o;
    int64_t n, inner;
    float scale;
} spread_job;

static void spread_range(void *arg, int t, int64_t r0, int64_t r1)
{
    const spread_job *j = arg;
    int64_t n = j->n, inner = j->inner;
    for (int64_t r = r0; r < r1;) {
        int64_t b = r / n, end = (b + 1) * n < r1 ? (b + 1) * n : r1;
        const float *gb = j->g + b * inner;
        float *o = j->o + r * inner;
        if (inner == 1) {
            float v = gb[0] * j->scale;
            for (int64_t i = 0; i < end - r; i++)
                o[i] = v;
        } else {
            for (int64_t i = 0; i < end - r; i++)
                for (int64_t k = 0; k < inner; k++)
                    o[i * inner + k] = gb[k] * j->scale;
        }
        r = end;
    }
}

static ff_tensor *spread_scaled(const ff_ctx *ctx, const ff_tensor *g, float scale)
{
    rlayout l = layout_of(&ctx->in_shape[0], dim_of(ctx));
    ff_tensor *gc = ff_tensor_contiguous((ff_tensor *)g);
    ff_tensor *dst = gc ? empty_input_shaped(ctx) : NULL;
    if (dst) {
        spread_job j = {ff_tensor_data(gc), ff_tensor_data(dst), l.n, l.inner, scale};
        int64_t rows = l.outer * l.n;
        ff_par_run(ff_par_threads(rows, l.inner + 1), rows, spread_range, &j);
    }
    ff_tensor_release(gc);
    return dst;
}

ff_tensor *ff_fwd_sum(ff_ctx *ctx, ff_tensor *const *in)
{
    return ff_sum(in[0], dim_of(ctx), ctx->p.i[1] != 0);
}

/* d sum = g at every summed element */
ff_status ff_bwd_sum(ff_ctx *ctx, const ff_tensor *g, ff_tensor **gin)
{
    gin[0] = spread_scaled(ctx, g, 1.0f);
    return gin[0] ? FF_OK : ff_last_status();
}

ff_tensor *ff_fwd_mean(ff_ctx *ctx, ff_tensor *const *in)
{
    return ff_mean(in[0], dim_of(ctx), ctx->p.i[1] != 0);
}

/* d mean = g / n at every averaged element */
ff_status ff_bwd_mean(ff_ctx *ctx, const ff_tensor *g, ff_tensor **gin)
{
    rlayout l = layout_of(&ctx->in_shape[0], dim_of(ctx));
    gin[0] = spread_scaled(ctx, g, (float)(1.0 / (double)l.n));
    return gin[0] ? FF_OK : ff_last_status();
}

/* ---- max, min: the gradient goes to the position of the extreme ---- */

/* With a dim, the indices are also the op's second result. The caller may
 * change that tensor (the Lua binding makes it 1-based in place), so when
 * recording, backward keeps the original and the caller gets a copy. */
static ff_tensor *extreme_forward(ff_ctx *ctx, ff_tensor *x, bool is_max)
{
    int dim = dim_of(ctx);
    bool keep = ctx->p.i[1] != 0;
    ff_tensor *idx = NULL;
    ff_tensor *y = is_max ? ff_max(x, dim, keep, &idx) : ff_min(x, dim, keep, &idx);
    if (!y)
        return NULL;
    ff_ctx_save(ctx, idx);
    if (dim < 0) {
        ff_tensor_release(idx);
        return y;
    }
    if (ctx->recording) {
        ff_tensor *copy = ff_tensor_clone(idx);
        ff_tensor_release(idx);
        if (!copy) {
            ff_tensor_release(y);
            return NULL;
        }
        idx = copy;
    }
    ctx->extra = idx;
    return y;
}

/* zeros, with g[o, j] placed at row idx[o, j] of block o */
static ff_status extreme_backward(ff_ctx *ctx, const ff_tensor *g, ff_tensor **gin)
{
    ff_tensor *idx;
    ff_status st = ff_ctx_saved(ctx, 0, &idx);
    if (st != FF_OK)
        return st;
    rlayout l = layout_of(&ctx->in_shape[0], dim_of(ctx));
    ff_tensor *gc = ff_tensor_contiguous((ff_tensor *)g);
    ff_tensor *ic = gc ? ff_tensor_contiguous(idx) : NULL;
    ff_tensor *dst = ic ? ff_tensor_zeros(ctx->in_shape[0].size, ctx->in_shape[0].ndim) : NULL;
    if (dst) {
        const float *gp = ff_tensor_data(gc), *ip = ff_tensor_data(ic);
        float *o = ff_tensor_data(dst);
        for (int64_t b = 0; b < l.outer; b++)
            for (int64_t j = 0; j < l.inner; j++) {
                int64_t at = b * l.inner + j;
                o[(b * l.n + (int64_t)ip[at]) * l.inner + j] = gp[at];
            }
    }
    ff_tensor_release(gc);
    ff_tensor_release(ic);
    gin[0] = dst;
    return dst ? FF_OK : ff_last_status();
}

ff_tensor *ff_fwd_max(ff_ctx *ctx, ff_tensor *const *in)
{
    return extreme_forward(ctx, in[0], true);
}

/* d max = g at the arg max, 0 elsewhere */
ff_status ff_bwd_max(ff_ctx *ctx, const ff_tensor *g, ff_tensor **gin)
{
    return extreme_backward(ctx, g, gin);
}

ff_tensor *ff_fwd_min(ff_ctx *ctx, ff_tensor *const *in)
{
    return extreme_forward(ctx, in[0], false);
}

/* d min = g at the arg min, 0 elsewhere */
ff_status ff_bwd_min(ff_ctx *ctx, const ff_tensor *g, ff_tensor **gin)
{
    return extreme_backward(ctx, g, gin);
}

/* ---- var, norm: dst = f(g, x, r) with r the row's statistic ---- */

typedef enum {
    S_VAR,    /* r = the mean: c g (x - r) */
    S_NORM1,  /* g sign(x) */
    S_NORM2,  /* g x / r, 0 where r = 0 */
    S_NORMP,  /* g sign(x) (|x| / r)^(p-1), 0 where x = 0 or r = 0 */
    S_NORMINF /* g sign(x) [|x| = r] / ties (g arrives divided by the ties) */
} skind;

typedef struct {
    float c, p;
} sargs;

typedef float (*sfn)(float g, float x, float r, sargs a);

static inline float sign1(float x) { return x > 0 ? 1.0f : x < 0 ? -1.0f : 0.0f; }

static inline float s_var(float g, float x, float r, sargs a) { return a.c * g * (x - r); }
static inline float s_norm1(float g, float x, float r, sargs a) { return g * sign1(x); }
static inline float s_norm2(float g, float x, float r, sargs a) { return r > 0 ? g * x / r : 0.0f; }
/* (|x|/r)^(p-1) <= 1 for p >= 1: no overflow where |x|^(p-1) / r^(p-1) would. */
static inline float s_normp(float g, float x, float r, sargs a)
{
    return x == 0 || !(r > 0) ? 0.0f : g * sign1(x) * powf(fabsf(x) / r, a.p - 1.0f);
}
/* A NaN element is "the max" too (as torch), so NaN propagates. */
static inline float s_norminf(float g, float x, float r, sargs a)
{
    return fabsf(x) == r || x != x ? g * sign1(x) : 0.0f;
}

ALWAYS_INLINE void spread_t(rlayout l, float *restrict o, const float *restrict g,
                            const float *restrict x, const float *restrict r, sargs a, sfn f)
{
    for (int64_t b = 0; b < l.outer; b++) {
        const float *gb = g + b * l.inner, *rb = r + b * l.inner;
        const float *xb = x + b * l.n * l.inner;
        float *ob = o + b * l.n * l.inner;
        if (l.inner == 1) {
            float gs = gb[0], rs = rb[0];
            for (int64_t i = 0; i < l.n; i++)
                ob[i] = f(gs, xb[i], rs, a);
            continue;
        }
        for (int64_t i = 0; i < l.n; i++)
            for (int64_t j = 0; j < l.inner; j++)
                ob[i * l.inner + j] = f(gb[j], xb[i * l.inner + j], rb[j], a);
    }
}

static void spread_run(skind k, rlayout l, float *o, const float *g, const float *x,
                       const float *r, sargs a)
{
    switch (k) {
    case S_VAR: spread_t(l, o, g, x, r, a, s_var); break;
    case S_NORM1: spread_t(l, o, g, x, r, a, s_norm1); break;
    case S_NORM2: spread_t(l, o, g, x, r, a, s_norm2); break;
    case S_NORMP: spread_t(l, o, g, x, r, a, s_normp); break;
    case S_NORMINF: spread_t(l, o, g, x, r, a, s_norminf); break;
    }
}

/* gin = f(g, x, r) over the input's shape; g and r have the result's
 * elements (any layout), x the input's. */
static ff_tensor *spread(const ff_ctx *ctx, skind k, sargs a, const ff_tensor *g,
                         const ff_tensor *x, const ff_tensor *r)
{
    rlayout l = layout_of(&ctx->in_shape[0], dim_of(ctx));
    ff_tensor *gc = ff_tensor_contiguous((ff_tensor *)g);
    ff_tensor *xc = gc ? ff_tensor_contiguous((ff_tensor *)x) : NULL;
    ff_tensor *rc = xc ? ff_tensor_contiguous((ff_tensor *)r) : NULL;
    ff_tensor *dst = rc ? empty_input_shaped(ctx) : NULL;
    if (dst)
        spread_run(k, l, ff_tensor_data(dst), ff_tensor_data(gc), ff_tensor_data(xc),
                   ff_tensor_data(rc), a);
    ff_tensor_release(gc);
    ff_tensor_release(xc);
    ff_tensor_release(rc);
    return dst;
}

ff_tensor *ff_fwd_var(ff_ctx *ctx, ff_tensor *const *in)
{
    ff_tensor *y = ff_var(in[0], dim_of(ctx), ctx->p.i[2] != 0, ctx->p.i[1] != 0);
    if (y)
        ff_ctx_save(ctx, in[0]);
    return y;
}

/* d var = g 2 (x - mean) / (n - unbiased) */
ff_status ff_bwd_var(ff_ctx *ctx, const ff_tensor *g, ff_tensor **gin)
{
    ff_tensor *x;
    ff_status st = ff_ctx_saved(ctx, 0, &x);
    if (st != FF_OK)
        return st;
    int dim = dim_of(ctx);
    rlayout l = layout_of(&ctx->in_shape[0], dim);
    ff_tensor *mean = ff_mean(x, dim, true);
    if (!mean)
        return ff_last_status();
    /* n - 1 = 0 gives an infinite c and a NaN gradient, as the NaN result */
    sargs a = {(float)(2.0 / ((double)l.n - (ctx->p.i[2] ? 1 : 0))), 0};
    gin[0] = spread(ctx, S_VAR, a, g, x, mean);
    ff_tensor_release(mean);
    return gin[0] ? FF_OK : ff_last_status();
}

ff_tensor *ff_fwd_norm(ff_ctx *ctx, ff_tensor *const *in)
{
    ff_tensor *y = ff_norm(in[0], ctx->p.f[0], dim_of(ctx), ctx->p.i[1] != 0);
    if (y) {
        ff_ctx_save(ctx, in[0]);
        ff_ctx_save(ctx, y);
    }
    return y;
}

/* g / (the number of elements with |x| = max |x| in each row): torch's
 * inf-norm gradient splits evenly among ties. New tensor, result-shaped. */
static ff_tensor *divide_by_ties(const ff_ctx *ctx, const ff_tensor *g, const ff_tensor *x,
                                 const ff_tensor *r)
{
    rlayout l = layout_of(&ctx->in_shape[0], dim_of(ctx));
    ff_tensor *gd = ff_tensor_clone(g);
    ff_tensor *xc = gd ? ff_tensor_contiguous((ff_tensor *)x) : NULL;
    ff_tensor *rc = xc ? ff_tensor_contiguous((ff_tensor *)r) : NULL;
    ff_tensor *count = rc ? ff_tensor_zeros(rc->shape, rc->ndim) : NULL;
    if (count) {
        const float *xp = ff_tensor_data(xc), *rp = ff_tensor_data(rc);
        float *cp = ff_tensor_data(count), *gp = ff_tensor_data(gd);
        for (int64_t b = 0; b < l.outer; b++)
            for (int64_t i = 0; i < l.n; i++)
                for (int64_t j = 0; j < l.inner; j++) {
                    float v = xp[(b * l.n + i) * l.inner + j];
                    cp[b * l.inner + j] += fabsf(v) == rp[b * l.inner + j] || v != v;
                }
        for (int64_t k = 0; k < l.outer * l.inner; k++)
            gp[k] = cp[k] > 0 ? gp[k] / cp[k] : 0.0f;
    }
    ff_tensor_release(xc);
    ff_tensor_release(rc);
    if (!count) {
        ff_tensor_release(gd);
        return NULL;
    }
    ff_tensor_release(count);
    return gd;
}

/* d ||x||_p = g sign(x) |x|^(p-1) / ||x||^(p-1): p = 1 g sign(x); p = 2 g x / ||x||
 * (0 at 0, not NaN); p = inf g sign(x) at the maxima, split evenly */
ff_status ff_bwd_norm(ff_ctx *ctx, const ff_tensor *g, ff_tensor **gin)
{
    ff_tensor *x, *r;
    ff_status st = ff_ctx_saved(ctx, 0, &x);
    if (st == FF_OK)
        st = ff_ctx_saved(ctx, 1, &r);
    if (st != FF_OK)
        return st;
    double p = ctx->p.f[0];
    sargs a = {0, (float)p};
    if (isinf(p)) {
        ff_tensor *gd = divide_by_ties(ctx, g, x, r);
        gin[0] = gd ? spread(ctx, S_NORMINF, a, gd, x, r) : NULL;
        ff_tensor_release(gd);
    } else {
        skind k = p == 1 ? S_NORM1 : p == 2 ? S_NORM2 : S_NORMP;
        gin[0] = spread(ctx, k, a, g, x, r);
    }
    return gin[0] ? FF_OK : ff_last_status();
}
