/*
 * op_act.c: activations as differentiable ops, and their second derivatives
 * (ff_act_d2) for the splitting rules of growth.
 *
 * Each activation is three scalar functions: its value, its gradient g f'
 * (of the input, or of the result where that is cheaper: tanh, sigmoid)
 * and its second derivative. Inputs are made contiguous and every pass is
 * one flat loop; the switch on the activation sits outside the loops and
 * each scalar function is inlined into its own loop. The piecewise-linear
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
 */
#include <math.h>
#include <string.h>
#include "ff_autograd.h"
#include "ff_ops.h"

#define ALWAYS_INLINE static inline __attribute__((always_inline))

/* gcc -O2 vectorises a flat loop only when its trip count is a known
 * multiple of the vector width: run the bulk in multiples of 16, then a tail. */
static inline int64_t bulk(int64_t n)
{
    return n & ~(int64_t)15;
}

typedef struct {
    float p0, p1; /* slope / alpha / beta, threshold */
} aparams;

/* ---- scalar definitions ----
 * For each activation: f_ its value, gd_ the gradient g f'(.) (of the input
 * x, or of the result y for tanh and sigmoid), d2_ its second derivative.
 * gd_ returns the product, not f', because gcc pushes a multiply into the
 * arms of a select (g * (c ? 1 : s) becomes c ? g : g*s) and then cannot
 * vectorise the loop; selects between plain values it can. */

/* c ? a : b without a branch: the activations' selects depend on the sign
 * of the data, which a branch predictor guesses wrong half the time. */
static inline float blendf(bool c, float a, float b)
{
    uint32_t m = -(uint32_t)c, ai, bi;
    memcpy(&ai, &a, sizeof ai);
    memcpy(&bi, &b, sizeof bi);
    uint32_t r = (ai & m) | (bi & ~m);
    float out;
    memcpy(&out, &r, sizeof out);
    return out;
}

/* 1 / (1 + e^-x), with exp's argument kept <= 0 (no overflow) and e^x / (1 + e^x)
 * for negative x (no cancellation). */
static inline float sigm(float x)
{
    float e = expf(-fabsf(x));
    float r = 1.0f / (1.0f + e);
    return blendf(x >= 0, r, e * r);
}

/* tanh |x| = -t / (t + 2) with t = e^(-2|x|) - 1, sign restored: expm1 keeps
 * small x exact, and this is faster than glibc's tanhf. */
static inline float tanh1(float x)
{
    float t = expm1f(-2.0f * fabsf(x));
    return copysignf(-t / (t + 2.0f), x);
}

#define INV_SQRT2 0.70710678118654752440f
#define INV_SQRT2PI 0.39894228040143267794f

/* Phi(x) through erfc: 1 + erf(x) cancels to 0 for large negative x. */
static inline float normal_cdf(float x) { return 0.5f * erfcf(-x * INV_SQRT2); }
static inline float normal_pdf(float x) { return INV_SQRT2PI * expf(-0.5f * x * x); }

/* relu(x) = max(x, 0); NaN stays NaN. relu' = [x > 0] (0 at the kink, as torch). */
static inline float f_relu(float x, aparams p) { return x < 0 ? 0.0f : x; }
static inline float gd_relu(float g, float x, aparams p) { return x > 0 ? g : 0.0f; }
static inline float d2_relu(float x, aparams p) { return 0.0f; }

/* leaky_relu(x) = x for x > 0, slope x otherwise, written as a sum of two
 * selects so that no arm holds arithmetic (see above); NaN stays NaN. */
static inline float f_leaky_relu(float x, aparams p)
{
    return (x > 0 ? x : 0.0f) + p.p0 * (x > 0 ? 0.0f : x);
}
static inline float gd_leaky_relu(float g, float x, aparams p)
{
    return (x > 0 ? g : 0.0f) + p.p0 * (x > 0 ? 0.0f : g);
}
static inline float d2_leaky_relu(float x, aparams p) { return 0.0f; }

/* elu(x) = x for x > 0, alpha (e^x - 1) otherwise (expm1 keeps small x
 * exact); elu' = alpha e^x there; elu'' = alpha e^x there too. */
static inline float f_elu(float x, aparams p) { return x > 0 ? x : p.p0 * expm1f(x); }
static inline float gd_elu(float g, float x, aparams p) { return x > 0 ? g : g * p.p0 * expf(x); }
static inline float d2_elu(float x, aparams p) { return x > 0 ? 0.0f : p.p0 * expf(x); }

/* gelu(x) = x Phi(x); gelu' = Phi + x phi; gelu'' = phi (2 - x^2). */
static inline float f_gelu(float x, aparams p) { return x * normal_cdf(x); }
static inline float gd_gelu(float g, float x, aparams p)
{
    return g * (normal_cdf(x) + x * normal_pdf(x));
}
static inline float d2_gelu(float x, aparams p) { return normal_pdf(x) * (2.0f - x * x); }

/* silu(x) = x s(x); silu' = s (1 + x (1 - s)); silu'' = s (1 - s) (2 + x (1 - 2s)). */
static inline float f_silu(float x, aparams p) { return x * sigm(x); }
static inline float gd_silu(float g, float x, aparams p)
{
    float s = sigm(x);
    return g * s * (1.0f + x * (1.0f - s));
}
static inline float d2_silu(float x, aparams p)
{
    float s = sigm(x);
    return s * (1.0f - s) * (2.0f + x * (1.0f - 2.0f * s));
}

/* tanh' = 1 - y^2 from the result y; tanh'' = -2 t (1 - t^2). */
static inline float f_tanh(float x, aparams p) { return tanh1(x); }
static inline float gd_tanh(float g, float y, aparams p) { return g * (1.0f - y * y); }
static inline float d2_tanh(float x, aparams p)
{
    float t = tanh1(x);
    return -2.0f * t * (1.0f - t * t);
}

/* sigmoid' = y (1 - y) from the result y; sigmoid'' = s (1 - s) (1 - 2s). */
static inline float f_sigmoid(float x, aparams p) { return sigm(x); }
static inline float gd_sigmoid(float g, float y, aparams p) { return g * y * (1.0f - y); }
static inline float d2_sigmoid(float x, aparams p)
{
    float s = sigm(x);
    return s * (1.0f - s) * (1.0f - 2.0f * s);
}

/* softplus(x) = log(1 + e^(bx)) / b, as max(z, 0) + log1p(e^-|z|) with
 * z = bx (no overflow for any threshold); x itself above the threshold.
 * softplus' = s(bx) (1 above the threshold). */
static inline float f_softplus(float x, aparams p)
{
    float z = p.p0 * x;
    return z > p.p1 ? x : (fmaxf(z, 0.0f) + log1pf(expf(-fabsf(z)))) / p.p0;
}
static inline float gd_softplus(float g, float x, aparams p)
{
    float z = p.p0 * x;
    return z > p.p1 ? g : g * sigm(z);
}
/* The smooth function's b s(bx) (1 - s(bx)), threshold ignored: splitting
 * rules want the curvature of softplus itself (beyond the threshold it is
 * below b e^-threshold anyway). */
static inline float d2_softplus(float x, aparams p)
{
    float s = sigm(p.p0 * x);
    return p.p0 * s * (1.0f - s);
}

/* rbf(x) = e^(-x^2/2); rbf' = -x rbf; rbf'' = (x^2 - 1) rbf. */
static inline float f_rbf(float x, aparams p) { return expf(-0.5f * x * x); }
static inline float gd_rbf(float g, float x, aparams p) { return -g * x * expf(-0.5f * x * x); }
static inline float d2_rbf(float x, aparams p) { return (x * x - 1.0f) * expf(-0.5f * x * x); }

/* ---- the table: kind, name ---- */

#define ACTS(X)                                                                 \
    X(A_RELU, relu) X(A_LEAKY_RELU, leaky_relu) X(A_ELU, elu) X(A_GELU, gelu)   \
    X(A_SILU, silu) X(A_TANH, tanh) X(A_SIGMOID, sigmoid)                       \
    X(A_SOFTPLUS, softplus) X(A_RBF, rbf)

typedef enum {
#define X(e, name) e,
    ACTS(X)
#undef X
    A_COUNT
} actkind;

static const char *const act_names[A_COUNT] = {
#define X(e, name) [e] = #name,
    ACTS(X)
#undef X
};

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

static void run_value(actkind k, int64_t n, float *o, const float *x, aparams p)
{
    switch (k) {
#define X(e, name) case e: map_t(n, o, x, p, f_##name); break;
        ACTS(X)
#undef X
    default: break;
    }
}

static void run_d2(actkind k, int64_t n, float *o, const float *x, aparams p)
{
    switch (k) {
#define X(e, name) case e: map_t(n, o, x, p, d2_##name); break;
        ACTS(X)
#undef X
    default: break;
    }
}

static void run_grad(actkind k, int64_t n, float *o, const float *g, const float *s, aparams p)
{
    switch (k) {
#define X(e, name) case e: grad_t(n, o, g, s, p, gd_##name); break;
        ACTS(X)
#undef X
    default: break;
    }
}

/* ---- forward and backward, shared by every activation ---- */

typedef void (*runfn)(actkind k, int64_t n, float *o, const float *x, aparams p);

/* run_value or run_d2 over x, as a new contiguous tensor; *xc_out receives
 * the contiguous input (a new reference) when xc_out is not NULL. */
static ff_tensor *act_map(actkind k, runfn run, const ff_tensor *x, aparams p,
                          ff_tensor **xc_out)
{
    ff_tensor *xc = ff_tensor_contiguous((ff_tensor *)x);
    ff_tensor *y = xc ? ff_tensor_empty(x->shape, x->ndim) : NULL;
    if (y)
        run(k, ff_tensor_numel(y), ff_tensor_data(y), ff_tensor_data(xc), p);
    if (xc_out && y)
        *xc_out = xc;
    else
        ff_tensor_release(xc);
    return y;
}

/* Saves the result (tanh, sigmoid) or the contiguous input: a private copy
 * when the input was not contiguous, so backward need not copy again. */
static ff_tensor *act_forward(ff_ctx *ctx, actkind k, const ff_tensor *x, aparams p,
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
static ff_status act_backward(ff_ctx *ctx, actkind k, aparams p, const ff_tensor *g,
                              ff_tensor **gin)
{
    ff_tensor *s;
    ff_status st = ff_ctx_saved(ctx, 0, &s);
    if (st != FF_OK)
        return st;
    ff_tensor *gc = ff_tensor_contiguous((ff_tensor *)g);
    ff_tensor *sc = gc ? ff_tensor_contiguous(s) : NULL;
    ff_tensor *dst = sc ? ff_tensor_empty(s->shape, s->ndim) : NULL;
    if (dst)
        run_grad(k, ff_tensor_numel(dst), ff_tensor_data(dst), ff_tensor_data(gc),
                 ff_tensor_data(sc), p);
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
    return act_forward(ctx, A_RELU, in[0], params_of(ctx), false);
}

/* d relu = g [x > 0] (0 at the kink, as torch) */
ff_status ff_bwd_relu(ff_ctx *ctx, const ff_tensor *g, ff_tensor **gin)
{
    return act_backward(ctx, A_RELU, params_of(ctx), g, gin);
}

ff_tensor *ff_fwd_leaky_relu(ff_ctx *ctx, ff_tensor *const *in)
{
    return act_forward(ctx, A_LEAKY_RELU, in[0], params_of(ctx), false);
}

/* d leaky_relu = g (x > 0 ? 1 : slope) */
ff_status ff_bwd_leaky_relu(ff_ctx *ctx, const ff_tensor *g, ff_tensor **gin)
{
    return act_backward(ctx, A_LEAKY_RELU, params_of(ctx), g, gin);
}

ff_tensor *ff_fwd_elu(ff_ctx *ctx, ff_tensor *const *in)
{
    return act_forward(ctx, A_ELU, in[0], params_of(ctx), false);
}

/* d elu = g (x > 0 ? 1 : alpha e^x) */
ff_status ff_bwd_elu(ff_ctx *ctx, const ff_tensor *g, ff_tensor **gin)
{
    return act_backward(ctx, A_ELU, params_of(ctx), g, gin);
}

ff_tensor *ff_fwd_gelu(ff_ctx *ctx, ff_tensor *const *in)
{
    return act_forward(ctx, A_GELU, in[0], params_of(ctx), false);
}

/* d gelu = g (Phi(x) + x phi(x)) */
ff_status ff_bwd_gelu(ff_ctx *ctx, const ff_tensor *g, ff_tensor **gin)
{
    return act_backward(ctx, A_GELU, params_of(ctx), g, gin);
}

ff_tensor *ff_fwd_silu(ff_ctx *ctx, ff_tensor *const *in)
{
    return act_forward(ctx, A_SILU, in[0], params_of(ctx), false);
}

/* d silu = g s(x) (1 + x (1 - s(x))) */
ff_status ff_bwd_silu(ff_ctx *ctx, const ff_tensor *g, ff_tensor **gin)
{
    return act_backward(ctx, A_SILU, params_of(ctx), g, gin);
}

ff_tensor *ff_fwd_tanh(ff_ctx *ctx, ff_tensor *const *in)
{
    return act_forward(ctx, A_TANH, in[0], params_of(ctx), true);
}

/* d tanh = g (1 - y^2) */
ff_status ff_bwd_tanh(ff_ctx *ctx, const ff_tensor *g, ff_tensor **gin)
{
    return act_backward(ctx, A_TANH, params_of(ctx), g, gin);
}

ff_tensor *ff_fwd_sigmoid(ff_ctx *ctx, ff_tensor *const *in)
{
    return act_forward(ctx, A_SIGMOID, in[0], params_of(ctx), true);
}

/* d sigmoid = g y (1 - y) */
ff_status ff_bwd_sigmoid(ff_ctx *ctx, const ff_tensor *g, ff_tensor **gin)
{
    return act_backward(ctx, A_SIGMOID, params_of(ctx), g, gin);
}

ff_tensor *ff_fwd_softplus(ff_ctx *ctx, ff_tensor *const *in)
{
    double beta = ctx->p.f[0];
    if (!(beta != 0 && isfinite(beta)))
        return ff_error(FF_ERR_ARG, "softplus: beta must be a non-zero number, got %g", beta),
               NULL;
    return act_forward(ctx, A_SOFTPLUS, in[0], params_of(ctx), false);
}

/* d softplus = g s(beta x) (g above the threshold) */
ff_status ff_bwd_softplus(ff_ctx *ctx, const ff_tensor *g, ff_tensor **gin)
{
    return act_backward(ctx, A_SOFTPLUS, params_of(ctx), g, gin);
}

ff_tensor *ff_fwd_rbf(ff_ctx *ctx, ff_tensor *const *in)
{
    return act_forward(ctx, A_RBF, in[0], params_of(ctx), false);
}

/* d rbf = -g x e^(-x^2/2) */
ff_status ff_bwd_rbf(ff_ctx *ctx, const ff_tensor *g, ff_tensor **gin)
{
    return act_backward(ctx, A_RBF, params_of(ctx), g, gin);
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
    int k = 0;
    while (k < A_COUNT && !(act && strcmp(act, act_names[k]) == 0))
        k++;
    if (k == A_COUNT)
        return ff_error(FF_ERR_ARG,
                        "act_d2: unknown activation \"%s\" (known: relu, leaky_relu, elu, gelu, "
                        "silu, tanh, sigmoid, softplus, rbf)",
                        act ? act : "(null)"),
               NULL;
    if (k == A_SOFTPLUS && !(param != 0 && isfinite(param)))
        return ff_error(FF_ERR_ARG, "act_d2: softplus beta must be a non-zero number, got %g",
                        param),
               NULL;
    if (k == A_RELU || k == A_LEAKY_RELU)
        return ff_tensor_zeros(x->shape, x->ndim);
    aparams p = {(float)param, 20.0f};
    return act_map((actkind)k, run_d2, x, p, NULL);
}
