/*
 * op_act.c: activations as differentiable ops, and their second derivatives
 * (ff_act_d2) for the splitting rules of growth.
 *
 * Each activation is three scalar functions: its value, its gradient g f'
 * (of the input, or of the result where that is cheaper: tanh, sigmoid)
 * and its second derivative, defined in act_scalar.h (op_grow.c's fused
 * split_act inlines the same ones). Inputs are made contiguous and every
 * pass is one flat loop; the switch on the activation sits outside the
 * loops and each scalar function is inlined into its own loop. The piecewise-linear
 * ones (relu, leaky_relu) are written so that gcc vectorises them; the
 * others are bound by expf/erfcf/expm1f calls, which gcc does not
 * vectorise at -O2; sigmoid and tanh at least avoid branching on the sign.
 *
 * Parameters (ff_params), with the defaults the Lua binding fills in:
 *   relu gelu silu tanh sigmoid rbf   none
 *   leaky_relu   f[0] negative slope (0.01)
 *   elu          f[0] alpha (1)
 *   softplus     f[0] beta (1, non-zero), f[1] threshold (20): x itself
 *                where beta*x > threshold, as torch
 *
 * Saved for backward: the result for tanh and sigmoid, the (contiguous)
 * input for the others.
 *
 * Threads: large passes split their flat range over the engine's threads
 * (ff_par_run_aligned, cut at multiples of 64 so every element takes the
 * same vector or scalar path whatever the split).
 *
 * Also here: the names of the activation kinds (ff_act_name, ff_act_lookup).
 */
#include <math.h>
#include <string.h>
#include "ff_autograd.h"
#include "ff_ops.h"
#include "act_scalar.h"
#include "parallel.h"

/* ---- names (ff_ops.h) ---- */

static const char *const act_names[FF_ACT_COUNT] = {
#define X(e, name, r) [FF_ACT_##e] = #name,
    FF_ACTS(X)
#undef X
    [FF_ACT_IDENTITY] = "identity",
};

const char *ff_act_name(ff_act act)
{
    return (unsigned)act < FF_ACT_COUNT ? act_names[act] : NULL;
}

int ff_act_lookup(const char *name)
{
    for (int k = 0; name && k < FF_ACT_COUNT; k++)
        if (strcmp(name, act_names[k]) == 0)
            return k;
    return -1;
}

/* ---- loops ----
 * One dispatch function per pass: were f and f'' instantiated under one
 * switch, gcc would merge their loops into one with a branch inside (for
 * relu, f'' is the constant 0) and vectorise neither. */

typedef float (*actfn)(float x, aparams p);
typedef float (*gradfn)(float g, float s, aparams p);

/* o[i] = f(x[i]) */
ALWAYS_INLINE void map_t(int64_t n, float *restrict o, const float *restrict x, aparams p,
                         actfn f)
{
    int64_t m = bulk(n);
    for (int64_t i = 0; i < m; i++)
        o[i] = f(x[i], p);
    for (int64_t i = m; i < n; i++)
        o[i] = f(x[i], p);
}

/* o[i] = gd(g[i], s[i]) = g[i] f'(.) */
ALWAYS_INLINE void grad_t(int64_t n, float *restrict o, const float *restrict g,
                          const float *restrict s, aparams p, gradfn gd)
{
    int64_t m = bulk(n);
    for (int64_t i = 0; i < m; i++)
        o[i] = gd(g[i], s[i], p);
    for (int64_t i = m; i < n; i++)
        o[i] = gd(g[i], s[i], p);
}

static void run_value(ff_act k, int64_t n, float *o, const float *x, aparams p)
{
    switch (k) {
#define X(e, name, r) case FF_ACT_##e: map_t(n, o, x, p, f_##name); break;
        FF_ACTS(X)
#undef X
    default: break;
    }
}

static void run_d2(ff_act k, int64_t n, float *o, const float *x, aparams p)
{
    switch (k) {
#define X(e, name, r) case FF_ACT_##e: map_t(n, o, x, p, d2_##name); break;
        FF_ACTS(X)
#undef X
    default: break;
    }
}

static void run_grad(ff_act k, int64_t n, float *o, const float *g, const float *s, aparams p)
{
    switch (k) {
#define X(e, name, r) case FF_ACT_##e: grad_t(n, o, g, s, p, gd_##name); break;
        FF_ACTS(X)
#undef X
    default: break;
    }
}

/* ---- forward and backward, shared by every activation ---- */

typedef void (*runfn)(ff_act k, int64_t n, float *o, const float *x, aparams p);

/* One flat pass, split over threads: o = run(x), or o = run_grad(g, s)
 * when run is NULL. */
typedef struct {
    ff_act k;
    runfn run;
    float *o;
    const float *x, *g;
    aparams p;
} act_job;

static void act_range(void *arg, int t, int64_t i0, int64_t i1)
{
    act_job *j = arg;
    if (j->run)
        j->run(j->k, i1 - i0, j->o + i0, j->x + i0, j->p);
    else
        run_grad(j->k, i1 - i0, j->o + i0, j->g + i0, j->x + i0, j->p);
}

static void act_pass(act_job *j, int64_t n)
{
    ff_par_run_aligned(ff_par_threads(n, j->run ? 2 : 3), n, 64, act_range, j);
}

/* run_value or run_d2 over x, as a new contiguous tensor; *xc_out receives
 * the contiguous input (a new reference) when xc_out is not NULL. */
static ff_tensor *act_map(ff_act k, runfn run, const ff_tensor *x, aparams p,
                          ff_tensor **xc_out)
{
    ff_tensor *xc = ff_tensor_contiguous((ff_tensor *)x);
    ff_tensor *y = xc ? ff_tensor_empty(x->shape, x->ndim) : NULL;
    if (y) {
        act_job j = {k, run, ff_tensor_data(y), ff_tensor_data(xc), NULL, p};
        act_pass(&j, ff_tensor_numel(y));
    }
    if (xc_out && y)
        *xc_out = xc;
    else
        ff_tensor_release(xc);
    return y;
}

/* Saves the result (tanh, sigmoid) or the contiguous input: a private copy
 * when the input was not contiguous, so backward need not copy again. */
static ff_tensor *act_forward(ff_ctx *ctx, ff_act k, const ff_tensor *x, aparams p,
                              bool save_result)
{
    ff_tensor *xc = NULL;
    ff_tensor *y = act_map(k, run_value, x, p, &xc);
    if (y)
        ff_ctx_save(ctx, save_result ? y : xc);
    ff_tensor_release(xc);
    return y;
}

/* gin[0] = g * f'(saved) */
static ff_status act_backward(ff_ctx *ctx, ff_act k, aparams p, const ff_tensor *g,
                              ff_tensor **gin)
{
    ff_tensor *s;
    ff_status st = ff_ctx_saved(ctx, 0, &s);
    if (st != FF_OK)
        return st;
    ff_tensor *gc = ff_tensor_contiguous((ff_tensor *)g);
    ff_tensor *sc = gc ? ff_tensor_contiguous(s) : NULL;
    ff_tensor *dst = sc ? ff_tensor_empty(s->shape, s->ndim) : NULL;
    if (dst) {
        act_job j = {k, NULL, ff_tensor_data(dst), ff_tensor_data(sc), ff_tensor_data(gc), p};
        act_pass(&j, ff_tensor_numel(dst));
    }
    ff_tensor_release(gc);
    ff_tensor_release(sc);
    gin[0] = dst;
    return dst ? FF_OK : ff_last_status();
}

static aparams params_of(const ff_ctx *ctx)
{
    return (aparams){(float)ctx->p.f[0], (float)ctx->p.f[1]};
}

/* ---- the ops ---- */

ff_tensor *ff_fwd_relu(ff_ctx *ctx, ff_tensor *const *in)
{
    return act_forward(ctx, FF_ACT_RELU, in[0], params_of(ctx), false);
}

/* d relu = g [x > 0] (0 at the kink, as torch) */
ff_status ff_bwd_relu(ff_ctx *ctx, const ff_tensor *g, ff_tensor **gin)
{
    return act_backward(ctx, FF_ACT_RELU, params_of(ctx), g, gin);
}

ff_tensor *ff_fwd_leaky_relu(ff_ctx *ctx, ff_tensor *const *in)
{
    return act_forward(ctx, FF_ACT_LEAKY_RELU, in[0], params_of(ctx), false);
}

/* d leaky_relu = g (x > 0 ? 1 : slope) */
ff_status ff_bwd_leaky_relu(ff_ctx *ctx, const ff_tensor *g, ff_tensor **gin)
{
    return act_backward(ctx, FF_ACT_LEAKY_RELU, params_of(ctx), g, gin);
}

ff_tensor *ff_fwd_elu(ff_ctx *ctx, ff_tensor *const *in)
{
    return act_forward(ctx, FF_ACT_ELU, in[0], params_of(ctx), false);
}

/* d elu = g (x > 0 ? 1 : alpha e^x) */
ff_status ff_bwd_elu(ff_ctx *ctx, const ff_tensor *g, ff_tensor **gin)
{
    return act_backward(ctx, FF_ACT_ELU, params_of(ctx), g, gin);
}

ff_tensor *ff_fwd_gelu(ff_ctx *ctx, ff_tensor *const *in)
{
    return act_forward(ctx, FF_ACT_GELU, in[0], params_of(ctx), false);
}

/* d gelu = g (Phi(x) + x phi(x)) */
ff_status ff_bwd_gelu(ff_ctx *ctx, const ff_tensor *g, ff_tensor **gin)
{
    return act_backward(ctx, FF_ACT_GELU, params_of(ctx), g, gin);
}

ff_tensor *ff_fwd_silu(ff_ctx *ctx, ff_tensor *const *in)
{
    return act_forward(ctx, FF_ACT_SILU, in[0], params_of(ctx), false);
}

/* d silu = g s(x) (1 + x (1 - s(x))) */
ff_status ff_bwd_silu(ff_ctx *ctx, const ff_tensor *g, ff_tensor **gin)
{
    return act_backward(ctx, FF_ACT_SILU, params_of(ctx), g, gin);
}

ff_tensor *ff_fwd_tanh(ff_ctx *ctx, ff_tensor *const *in)
{
    return act_forward(ctx, FF_ACT_TANH, in[0], params_of(ctx), true);
}

/* d tanh = g (1 - y^2) */
ff_status ff_bwd_tanh(ff_ctx *ctx, const ff_tensor *g, ff_tensor **gin)
{
    return act_backward(ctx, FF_ACT_TANH, params_of(ctx), g, gin);
}

ff_tensor *ff_fwd_sigmoid(ff_ctx *ctx, ff_tensor *const *in)
{
    return act_forward(ctx, FF_ACT_SIGMOID, in[0], params_of(ctx), true);
}

/* d sigmoid = g y (1 - y) */
ff_status ff_bwd_sigmoid(ff_ctx *ctx, const ff_tensor *g, ff_tensor **gin)
{
    return act_backward(ctx, FF_ACT_SIGMOID, params_of(ctx), g, gin);
}

ff_tensor *ff_fwd_softplus(ff_ctx *ctx, ff_tensor *const *in)
{
    double beta = ctx->p.f[0];
    if (!(beta != 0 && isfinite(beta)))
        return ff_error(FF_ERR_ARG, "softplus: beta must be a non-zero number, got %g", beta),
               NULL;
    return act_forward(ctx, FF_ACT_SOFTPLUS, in[0], params_of(ctx), false);
}

/* d softplus = g s(beta x) (g above the threshold) */
ff_status ff_bwd_softplus(ff_ctx *ctx, const ff_tensor *g, ff_tensor **gin)
{
    return act_backward(ctx, FF_ACT_SOFTPLUS, params_of(ctx), g, gin);
}

ff_tensor *ff_fwd_rbf(ff_ctx *ctx, ff_tensor *const *in)
{
    return act_forward(ctx, FF_ACT_RBF, in[0], params_of(ctx), false);
}

/* d rbf = -g x e^(-x^2/2) */
ff_status ff_bwd_rbf(ff_ctx *ctx, const ff_tensor *g, ff_tensor **gin)
{
    return act_backward(ctx, FF_ACT_RBF, params_of(ctx), g, gin);
}

/* ---- second derivatives ---- */

/*
 * f''(x) elementwise for the activation named act: a plain kernel (nothing
 * is recorded). param is alpha for elu and beta for softplus (threshold
 * ignored: the smooth function's curvature); other activations ignore it.
 * relu and leaky_relu are piecewise linear: their f'' is 0 everywhere (a
 * Dirac at the kink), so splitting methods substitute softplus for them.
 */
ff_tensor *ff_act_d2(const char *act, const ff_tensor *x, double param)
{
    int k = ff_act_lookup(act);
    if (k < 0 || k == FF_ACT_IDENTITY) /* no op of this file computes the identity */
        return ff_error(FF_ERR_ARG,
                        "act_d2: unknown activation \"%s\" (known: relu, leaky_relu, elu, gelu, "
                        "silu, tanh, sigmoid, softplus, rbf)",
                        act ? act : "(null)"),
               NULL;
    if (k == FF_ACT_SOFTPLUS && !(param != 0 && isfinite(param)))
        return ff_error(FF_ERR_ARG, "act_d2: softplus beta must be a non-zero number, got %g",
                        param),
               NULL;
    if (k == FF_ACT_RELU || k == FF_ACT_LEAKY_RELU)
        return ff_tensor_zeros(x->shape, x->ndim);
    aparams p = {(float)param, 20.0f};
    return act_map((ff_act)k, run_d2, x, p, NULL);
}
