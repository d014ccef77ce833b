/*
 * act_scalar.h: the scalar definitions of the activations (internal: not
 * part of the public API in engine/include), shared by op_act.c (one
 * activation per op) and op_grow.c (an activation chosen by a parameter,
 * inside the fused split_act), so each formula is written once.
 *
 * FF_ACTS(X) lists them as X(KIND, name, from_result): KIND is the suffix
 * of the public ff_act enum (ff_ops.h), name the suffix of its scalar
 * functions, and from_result is 1 when gd_<name> reads the result y = f(x)
 * instead of the input x (tanh, sigmoid: cheaper there). The identity is
 * not listed: no op of op_act.c computes it.
 *
 * Loops over these functions should be flat and run their bulk in
 * multiples of 16 (bulk() below; op_grow.c's RUN_LOOP), with the switch on
 * the activation outside the loop, so that each scalar function is inlined
 * into its own loop.
 */
#ifndef FF_ACT_SCALAR_H
#define FF_ACT_SCALAR_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

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

/* ---- the list: kind, name, gd_ from the result ---- */

#define FF_ACTS(X)                                                                \
    X(RELU, relu, 0) X(LEAKY_RELU, leaky_relu, 0) X(ELU, elu, 0) X(GELU, gelu, 0) \
    X(SILU, silu, 0) X(TANH, tanh, 1) X(SIGMOID, sigmoid, 1)                      \
    X(SOFTPLUS, softplus, 0) X(RBF, rbf, 0)

#endif
