/*
 * op_arith.c: broadcasting arithmetic and elementwise math as differentiable
 * ops.
 *
 * Forwards are the kernels of elementwise.c. A binary op's result has the
 * broadcast shape of its inputs, so each input gradient is computed at that
 * shape and then summed back to the input's own shape (ff_sum_to_shape, the
 * adjoint of broadcasting). Derivatives that are more than one kernel call
 * (pow, maximum/minimum, the divisor of div, and the unary rules) run as one
 * fused pass: dst = g * f'(...), with the switch on the rule outside the loop.
 *
 * Parameters (ff_params):
 *   add sub mul div pow maximum minimum   none
 *   neg exp log sqrt abs                  none
 *   clamp   f[0] lower bound, f[1] upper bound (-INFINITY / INFINITY for none)
 *   where   aux[0] the condition (nonzero picks input 1, zero input 2); it
 *           broadcasts with both inputs and gets no gradient
 *
 * Saved for backward:
 *   mul div pow maximum minimum   a, b
 *   exp sqrt                      the result
 *   log abs clamp                 the input
 *   where                         the condition
 */
#include <math.h>
#include "ff_autograd.h"
#include "ff_ops.h"

#define ALWAYS_INLINE static inline __attribute__((always_inline))

/* gcc -O2 vectorises a flat loop only when its trip count is a known
 * multiple of the vector width: run the bulk in multiples of 16, then a tail. */
static inline int64_t bulk(int64_t n)
{
    return n & ~(int64_t)15;
}

static ff_status status_of(const ff_tensor *t)
{
    return t ? FF_OK : ff_last_status();
}

/* Read back saved tensors 0..n-1 into out[]. */
static ff_status saved_all(const ff_ctx *ctx, int n, ff_tensor **out)
{
    for (int k = 0; k < n; k++) {
        ff_status st = ff_ctx_saved(ctx, k, &out[k]);
        if (st != FF_OK)
            return st;
    }
    return FF_OK;
}

/* gin[k] = g summed back to input k's shape (g: the gradient at the result's shape).
 * Takes over the caller's reference to g. */
static ff_status reduce_to_input(ff_ctx *ctx, int k, ff_tensor *g, ff_tensor **gin)
{
    if (!g)
        return ff_last_status();
    gin[k] = ff_sum_to_shape(g, &ctx->in_shape[k]);
    ff_tensor_release(g);
    return status_of(gin[k]);
}

/* ---- fused binary derivatives: dst = g * d(a, b), at the broadcast shape ---- */

typedef enum {
    BD_DIV_B,  /* d(a/b)/db = -a/b^2 */
    BD_POW_A,  /* d(a^b)/da = b a^(b-1) */
    BD_POW_B,  /* d(a^b)/db = a^b log a */
    BD_WINS    /* 1 where a > b, 1/2 on ties, else 0 (maximum's selector) */
} bdkind;

typedef float (*bdfn)(float a, float b);

/* -(a/b)/b rather than -a/(b*b): b*b overflows for |b| > 1.8e19. */
static inline float bd_div_b(float a, float b) { return -(a / b) / b; }
/* torch's rule: 0 where b == 0, so 0^0 does not give 0 * inf. */
static inline float bd_pow_a(float a, float b) { return b == 0 ? 0.0f : b * powf(a, b - 1.0f); }
/* torch's rule: 0 where a == 0 and b >= 0 (the limit of a^b log a as a -> 0+). */
static inline float bd_pow_b(float a, float b)
{
    return a == 0 && b >= 0 ? 0.0f : powf(a, b) * logf(a);
}
/* Ties split half and half, so maximum(x, x) passes the whole gradient. */
static inline float bd_wins(float a, float b) { return a > b ? 1.0f : a == b ? 0.5f : 0.0f; }

/* dst is a fresh tensor, so it never overlaps the operands it reads. */
ALWAYS_INLINE void bd_flat(int64_t n, float *restrict o, const float *restrict g,
                           const float *restrict a, const float *restrict b, bdfn d)
{
    int64_t m = bulk(n);
    for (int64_t i = 0; i < m; i++)
        o[i] = g[i] * d(a[i], b[i]);
    for (int64_t i = m; i < n; i++)
        o[i] = g[i] * d(a[i], b[i]);
}

ALWAYS_INLINE void bd_loop(int64_t n, float **p, const int64_t *s, bdfn d)
{
    if (s[0] == 1 && s[1] == 1 && s[2] == 1 && s[3] == 1) {
        bd_flat(n, p[0], p[1], p[2], p[3], d);
        return;
    }
    for (int64_t i = 0; i < n; i++)
        p[0][i * s[0]] = p[1][i * s[1]] * d(p[2][i * s[2]], p[3][i * s[3]]);
}

/* One innermost run of ff_loop over (dst, g, a, b). */
static void bd_run(int64_t len, float **p, const int64_t *s, void *ctx)
{
    switch (*(const bdkind *)ctx) {
    case BD_DIV_B: bd_loop(len, p, s, bd_div_b); break;
    case BD_POW_A: bd_loop(len, p, s, bd_pow_a); break;
    case BD_POW_B: bd_loop(len, p, s, bd_pow_b); break;
    case BD_WINS: bd_loop(len, p, s, bd_wins); break;
    }
}

/* g * d(a, b) at g's (the result's) shape; a and b broadcast to it. */
static ff_tensor *binary_deriv(bdkind kind, const ff_tensor *g, const ff_tensor *a,
                               const ff_tensor *b)
{
    ff_tensor *dst = ff_tensor_empty(g->shape, g->ndim);
    ff_tensor *ea = ff_tensor_expand((ff_tensor *)a, g->shape, g->ndim);
    ff_tensor *eb = ff_tensor_expand((ff_tensor *)b, g->shape, g->ndim);
    ff_status st = dst && ea && eb ? FF_OK : ff_last_status();
    if (st == FF_OK) {
        ff_tensor *ops[4] = {dst, (ff_tensor *)g, ea, eb};
        st = ff_loop(4, ops, bd_run, &kind);
    }
    ff_tensor_release(ea);
    ff_tensor_release(eb);
    if (st != FF_OK) {
        ff_tensor_release(dst);
        return NULL;
    }
    return dst;
}

/* ---- fused unary derivatives: dst = g * d(x), same shape ---- */

typedef enum {
    UD_EXP,    /* x is the result y: dy/dx = y */
    UD_LOG,    /* 1/x */
    UD_SQRT,   /* x is the result y: 1/(2y) */
    UD_ABS,    /* sign(x), 0 at 0 */
    UD_CLAMP   /* 1 where lo <= x <= hi */
} udkind;

typedef struct {
    float lo, hi;
} udargs;

typedef float (*udfn)(float g, float x, udargs a);

static inline float ud_exp(float g, float y, udargs a) { return g * y; }
static inline float ud_log(float g, float x, udargs a) { return g / x; }
static inline float ud_sqrt(float g, float y, udargs a) { return g / (2.0f * y); }
static inline float ud_abs(float g, float x, udargs a)
{
    return x > 0 ? g : x < 0 ? -g : 0.0f;
}
/* torch's rule: the bounds themselves pass the gradient. */
static inline float ud_clamp(float g, float x, udargs a)
{
    return x >= a.lo && x <= a.hi ? g : 0.0f;
}

ALWAYS_INLINE void ud_loop(int64_t n, float *restrict o, const float *restrict g,
                           const float *restrict x, udargs a, udfn d)
{
    int64_t m = bulk(n);
    for (int64_t i = 0; i < m; i++)
        o[i] = d(g[i], x[i], a);
    for (int64_t i = m; i < n; i++)
        o[i] = d(g[i], x[i], a);
}

/* g * d(x) for g and x of one shape (made contiguous first). */
static ff_tensor *unary_deriv(udkind kind, const ff_tensor *g, const ff_tensor *x, udargs a)
{
    ff_tensor *gc = ff_tensor_contiguous((ff_tensor *)g);
    ff_tensor *xc = ff_tensor_contiguous((ff_tensor *)x);
    ff_tensor *dst = ff_tensor_empty(x->shape, x->ndim);
    if (gc && xc && dst) {
        int64_t n = ff_tensor_numel(dst);
        float *o = ff_tensor_data(dst);
        const float *gp = ff_tensor_data(gc), *xp = ff_tensor_data(xc);
        switch (kind) {
        case UD_EXP: ud_loop(n, o, gp, xp, a, ud_exp); break;
        case UD_LOG: ud_loop(n, o, gp, xp, a, ud_log); break;
        case UD_SQRT: ud_loop(n, o, gp, xp, a, ud_sqrt); break;
        case UD_ABS: ud_loop(n, o, gp, xp, a, ud_abs); break;
        case UD_CLAMP: ud_loop(n, o, gp, xp, a, ud_clamp); break;
        }
    } else {
        ff_tensor_release(dst);
        dst = NULL;
    }
    ff_tensor_release(gc);
    ff_tensor_release(xc);
    return dst;
}

/* The usual one-input backward: gin[0] = g * d(saved tensor 0). */
static ff_status unary_backward(ff_ctx *ctx, udkind kind, udargs a, const ff_tensor *g,
                                ff_tensor **gin)
{
    ff_tensor *x;
    ff_status st = ff_ctx_saved(ctx, 0, &x);
    if (st != FF_OK)
        return st;
    gin[0] = unary_deriv(kind, g, x, a);
    return status_of(gin[0]);
}

static const udargs no_args = {0, 0};

/* ---- add, sub: the gradient itself, negated for sub's second input ---- */

ff_tensor *ff_fwd_add(ff_ctx *ctx, ff_tensor *const *in)
{
    return ff_binary(FF_ADD, in[0], in[1]);
}

/* d(a+b) = g, g */
ff_status ff_bwd_add(ff_ctx *ctx, const ff_tensor *g, ff_tensor **gin)
{
    for (int k = 0; k < 2; k++) {
        if (!ctx->needs_grad[k])
            continue;
        ff_status st = reduce_to_input(ctx, k, ff_tensor_retain((ff_tensor *)g), gin);
        if (st != FF_OK)
            return st;
    }
    return FF_OK;
}

ff_tensor *ff_fwd_sub(ff_ctx *ctx, ff_tensor *const *in)
{
    return ff_binary(FF_SUB, in[0], in[1]);
}

/* d(a-b) = g, -g (negated after the sum: it is usually smaller) */
ff_status ff_bwd_sub(ff_ctx *ctx, const ff_tensor *g, ff_tensor **gin)
{
    ff_status st = FF_OK;
    if (ctx->needs_grad[0])
        st = reduce_to_input(ctx, 0, ff_tensor_retain((ff_tensor *)g), gin);
    if (st == FF_OK && ctx->needs_grad[1]) {
        ff_tensor *s = ff_sum_to_shape(g, &ctx->in_shape[1]);
        gin[1] = s ? ff_unary(FF_NEG, s) : NULL;
        ff_tensor_release(s);
        st = status_of(gin[1]);
    }
    return st;
}

/* ---- mul, div ---- */

static ff_tensor *save_both(ff_ctx *ctx, ff_tensor *const *in, ff_tensor *out)
{
    if (out) {
        ff_ctx_save(ctx, in[0]);
        ff_ctx_save(ctx, in[1]);
    }
    return out;
}

ff_tensor *ff_fwd_mul(ff_ctx *ctx, ff_tensor *const *in)
{
    return save_both(ctx, in, ff_binary(FF_MUL, in[0], in[1]));
}

/* d(ab) = g b, g a */
ff_status ff_bwd_mul(ff_ctx *ctx, const ff_tensor *g, ff_tensor **gin)
{
    ff_tensor *s[2];
    ff_status st = saved_all(ctx, 2, s);
    for (int k = 0; k < 2 && st == FF_OK; k++)
        if (ctx->needs_grad[k])
            st = reduce_to_input(ctx, k, ff_binary(FF_MUL, g, s[1 - k]), gin);
    return st;
}

ff_tensor *ff_fwd_div(ff_ctx *ctx, ff_tensor *const *in)
{
    return save_both(ctx, in, ff_binary(FF_DIV, in[0], in[1]));
}

/* d(a/b) = g/b, -g a/b^2 */
ff_status ff_bwd_div(ff_ctx *ctx, const ff_tensor *g, ff_tensor **gin)
{
    ff_tensor *s[2];
    ff_status st = saved_all(ctx, 2, s);
    if (st == FF_OK && ctx->needs_grad[0])
        st = reduce_to_input(ctx, 0, ff_binary(FF_DIV, g, s[1]), gin);
    if (st == FF_OK && ctx->needs_grad[1])
        st = reduce_to_input(ctx, 1, binary_deriv(BD_DIV_B, g, s[0], s[1]), gin);
    return st;
}

/* ---- pow ---- */

ff_tensor *ff_fwd_pow(ff_ctx *ctx, ff_tensor *const *in)
{
    return save_both(ctx, in, ff_binary(FF_POW, in[0], in[1]));
}

/* d(a^b) = g b a^(b-1), g a^b log a (the latter only when asked: a log per element) */
ff_status ff_bwd_pow(ff_ctx *ctx, const ff_tensor *g, ff_tensor **gin)
{
    ff_tensor *s[2];
    ff_status st = saved_all(ctx, 2, s);
    if (st == FF_OK && ctx->needs_grad[0])
        st = reduce_to_input(ctx, 0, binary_deriv(BD_POW_A, g, s[0], s[1]), gin);
    if (st == FF_OK && ctx->needs_grad[1])
        st = reduce_to_input(ctx, 1, binary_deriv(BD_POW_B, g, s[0], s[1]), gin);
    return st;
}

/* ---- maximum, minimum: the gradient goes to the winner, split on ties ---- */

ff_tensor *ff_fwd_maximum(ff_ctx *ctx, ff_tensor *const *in)
{
    return save_both(ctx, in, ff_binary(FF_MAXIMUM, in[0], in[1]));
}

/* Input k gets g where it won: for maximum where it is above the other
 * input, for minimum where the other is above it (the same selector with
 * the operands swapped). */
static ff_status extreme_backward(ff_ctx *ctx, const ff_tensor *g, ff_tensor **gin, bool is_max)
{
    ff_tensor *s[2];
    ff_status st = saved_all(ctx, 2, s);
    for (int k = 0; k < 2 && st == FF_OK; k++) {
        if (!ctx->needs_grad[k])
            continue;
        const ff_tensor *self = s[k], *other = s[1 - k];
        st = reduce_to_input(ctx, k,
                             is_max ? binary_deriv(BD_WINS, g, self, other)
                                    : binary_deriv(BD_WINS, g, other, self),
                             gin);
    }
    return st;
}

/* d max(a,b) = g [a > b] + g/2 [a = b], and symmetrically for b */
ff_status ff_bwd_maximum(ff_ctx *ctx, const ff_tensor *g, ff_tensor **gin)
{
    return extreme_backward(ctx, g, gin, true);
}

ff_tensor *ff_fwd_minimum(ff_ctx *ctx, ff_tensor *const *in)
{
    return save_both(ctx, in, ff_binary(FF_MINIMUM, in[0], in[1]));
}

/* d min(a,b) = g [a < b] + g/2 [a = b], and symmetrically for b */
ff_status ff_bwd_minimum(ff_ctx *ctx, const ff_tensor *g, ff_tensor **gin)
{
    return extreme_backward(ctx, g, gin, false);
}

/* ---- neg, exp, log, sqrt, abs ---- */

ff_tensor *ff_fwd_neg(ff_ctx *ctx, ff_tensor *const *in)
{
    return ff_unary(FF_NEG, in[0]);
}

/* d(-x) = -g */
ff_status ff_bwd_neg(ff_ctx *ctx, const ff_tensor *g, ff_tensor **gin)
{
    gin[0] = ff_unary(FF_NEG, g);
    return status_of(gin[0]);
}

/* Forward of a unary kernel, saving its input or its result. */
static ff_tensor *unary_saving(ff_ctx *ctx, ff_unop op, ff_tensor *x, bool save_result)
{
    ff_tensor *y = ff_unary(op, x);
    if (y)
        ff_ctx_save(ctx, save_result ? y : x);
    return y;
}

ff_tensor *ff_fwd_exp(ff_ctx *ctx, ff_tensor *const *in)
{
    return unary_saving(ctx, FF_EXP, in[0], true);
}

/* d exp(x) = g exp(x) = g y */
ff_status ff_bwd_exp(ff_ctx *ctx, const ff_tensor *g, ff_tensor **gin)
{
    return unary_backward(ctx, UD_EXP, no_args, g, gin);
}

ff_tensor *ff_fwd_log(ff_ctx *ctx, ff_tensor *const *in)
{
    return unary_saving(ctx, FF_LOG, in[0], false);
}

/* d log(x) = g / x */
ff_status ff_bwd_log(ff_ctx *ctx, const ff_tensor *g, ff_tensor **gin)
{
    return unary_backward(ctx, UD_LOG, no_args, g, gin);
}

ff_tensor *ff_fwd_sqrt(ff_ctx *ctx, ff_tensor *const *in)
{
    return unary_saving(ctx, FF_SQRT, in[0], true);
}

/* d sqrt(x) = g / (2 sqrt(x)) = g / (2y); inf at 0, as torch */
ff_status ff_bwd_sqrt(ff_ctx *ctx, const ff_tensor *g, ff_tensor **gin)
{
    return unary_backward(ctx, UD_SQRT, no_args, g, gin);
}

ff_tensor *ff_fwd_abs(ff_ctx *ctx, ff_tensor *const *in)
{
    return unary_saving(ctx, FF_ABS, in[0], false);
}

/* d|x| = g sign(x), 0 at 0 */
ff_status ff_bwd_abs(ff_ctx *ctx, const ff_tensor *g, ff_tensor **gin)
{
    return unary_backward(ctx, UD_ABS, no_args, g, gin);
}

/* ---- clamp ---- */

ff_tensor *ff_fwd_clamp(ff_ctx *ctx, ff_tensor *const *in)
{
    ff_tensor *y = ff_clamp(in[0], (float)ctx->p.f[0], (float)ctx->p.f[1]);
    if (y)
        ff_ctx_save(ctx, in[0]);
    return y;
}

/* d clamp(x) = g [lo <= x <= hi] */
ff_status ff_bwd_clamp(ff_ctx *ctx, const ff_tensor *g, ff_tensor **gin)
{
    udargs a = {(float)ctx->p.f[0], (float)ctx->p.f[1]};
    return unary_backward(ctx, UD_CLAMP, a, g, gin);
}

/* ---- where ---- */

ff_tensor *ff_fwd_where(ff_ctx *ctx, ff_tensor *const *in)
{
    const ff_tensor *cond = ctx->p.aux[0];
    if (!cond)
        return ff_error(FF_ERR_ARG, "where: the condition tensor (aux[0]) is missing"), NULL;
    ff_tensor *y = ff_where(cond, in[0], in[1]);
    if (y)
        ff_ctx_save(ctx, cond);
    return y;
}

/* d where(c, a, b) = g [c != 0], g [c = 0], each summed back to its input */
ff_status ff_bwd_where(ff_ctx *ctx, const ff_tensor *g, ff_tensor **gin)
{
    ff_tensor *cond;
    ff_status st = ff_ctx_saved(ctx, 0, &cond);
    if (st != FF_OK)
        return st;
    ff_tensor *zero = ff_tensor_scalar(0.0f);
    if (!zero)
        return ff_last_status();
    if (ctx->needs_grad[0])
        st = reduce_to_input(ctx, 0, ff_where(cond, g, zero), gin);
    if (st == FF_OK && ctx->needs_grad[1])
        st = reduce_to_input(ctx, 1, ff_where(cond, zero, g), gin);
    ff_tensor_release(zero);
    return st;
}
