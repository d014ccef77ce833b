/*
 * test_op_grads.c: the backward of every op of op_arith.c, op_act.c,
 * op_reduce.c, op_loss.c and op_grow.c against central finite differences, through
 * ff_apply and ff_backward (the Lua gradchecks cover the same ops through
 * the binding). Also: exact gradients where differences cannot see them
 * (ties, zeros), the second results of max/min, label checks, act_d2.
 *
 * The check: y = op(inputs), backward with a fixed random gradient R of
 * y's shape, so each input gets d sum(R * y) / d input; differences of
 * sum(R * y) in double with a step h (float32 inputs of order 1).
 */
#include <stdlib.h>
#include <string.h>
#include "harness.h"

#define H 2e-3
#define TOL 1e-2

/* ---- inputs ---- */

/* scale * N(0,1) + offset, from its own seed. */
static ff_tensor *randn_t(const int64_t *shape, int ndim, uint64_t seed, float scale,
                          float offset)
{
    ff_rng g;
    ff_rng_seed(&g, seed);
    ff_tensor *t = ff_tensor_empty(shape, ndim);
    if (t)
        ff_randn_(t, &g, offset, scale);
    return t;
}

/* Uniform in [lo, hi). */
static ff_tensor *rand_t(const int64_t *shape, int ndim, uint64_t seed, float lo, float hi)
{
    ff_rng g;
    ff_rng_seed(&g, seed);
    ff_tensor *t = ff_tensor_empty(shape, ndim);
    if (t)
        ff_rand_(t, &g, lo, hi);
    return t;
}

/* Values i * step + start in row-major order: distinct, so no ties. */
static ff_tensor *ramp_t(const int64_t *shape, int ndim, float start, float step)
{
    ff_tensor *t = ff_tensor_empty(shape, ndim);
    for (int64_t i = 0; t && i < ff_tensor_numel(t); i++)
        ff_tensor_data(t)[i] = start + step * (float)i;
    return t;
}

/* Shuffle a contiguous tensor's values (fixed LCG), keeping them distinct. */
static void shuffle(ff_tensor *t, uint32_t seed)
{
    float *d = ff_tensor_data(t);
    for (int64_t i = ff_tensor_numel(t) - 1; i > 0; i--) {
        seed = seed * 1664525u + 1013904223u;
        int64_t j = (int64_t)(seed >> 8) % (i + 1);
        float v = d[i];
        d[i] = d[j];
        d[j] = v;
    }
}

static void release_all(ff_tensor **ts, int n)
{
    for (int k = 0; k < n; k++)
        ff_tensor_release(ts[k]);
}

/* ---- the check ---- */

static bool next_index(int64_t *idx, const int64_t *shape, int ndim)
{
    for (int i = ndim - 1; i >= 0; i--) {
        if (++idx[i] < shape[i])
            return true;
        idx[i] = 0;
    }
    return false;
}

static float *elem_ptr(const ff_tensor *t, const int64_t *idx)
{
    return ff_tensor_data(t) + ff_tensor_offset_of(t, idx);
}

/* sum(R * op(in)) in double, nothing recorded. NAN on failure. */
static double objective(ff_opcode op, ff_tensor **in, int n, const ff_params *p,
                        const ff_tensor *r)
{
    bool was = ff_set_grad_enabled(false);
    ff_tensor *y = ff_apply(op, in, n, p, NULL);
    ff_set_grad_enabled(was);
    if (!y)
        return NAN;
    double s = 0;
    const float *yp = ff_tensor_data(y), *rp = ff_tensor_data(r);
    for (int64_t i = 0; i < ff_tensor_numel(y); i++)
        s += (double)yp[i] * rp[i];
    ff_tensor_release(y);
    return s;
}

/* Compare input k's gradient with differences, element by element. */
static bool check_input(ff_opcode op, ff_tensor **in, int n, const ff_params *p,
                        const ff_tensor *r, int k, double tol)
{
    ff_tensor *x = in[k], *g = x->grad;
    if (!g || !ff_shape_equal(g, x)) {
        fprintf(stderr, "  %s: input %d has %s\n", ff_ops[op].name, k + 1,
                g ? "a gradient of the wrong shape" : "no gradient");
        return false;
    }
    int64_t idx[FF_MAX_DIMS] = {0};
    bool ok = true;
    if (ff_tensor_numel(x) == 0)
        return true;
    do {
        float *e = elem_ptr(x, idx), orig = *e;
        *e = orig + (float)H;
        double fp = objective(op, in, n, p, r);
        *e = orig - (float)H;
        double fm = objective(op, in, n, p, r);
        *e = orig;
        double num = (fp - fm) / (2 * H), ana = *elem_ptr(g, idx);
        if (!(fabs(num - ana) <= tol * (1 + fabs(num)))) {
            fprintf(stderr, "  %s: input %d at flat %lld: autograd %.6g, differences %.6g\n",
                    ff_ops[op].name, k + 1, (long long)ff_tensor_offset_of(x, idx), ana, num);
            ok = false;
        }
    } while (next_index(idx, x->shape, x->ndim));
    return ok;
}

/* Gradcheck op on in[0..n-1]; inputs with requires_grad are checked. */
static bool gradcheck_tol(ff_opcode op, ff_tensor **in, int n, const ff_params *p, double tol)
{
    ff_tensor *y = ff_apply(op, in, n, p, NULL);
    if (!y) {
        fprintf(stderr, "  %s: forward failed: %s\n", ff_ops[op].name, ff_last_error());
        return false;
    }
    ff_tensor *r = randn_t(y->shape, y->ndim, 99, 1, 0);
    ff_status st = ff_backward(y, r, false);
    ff_tensor_release(y);
    bool ok = st == FF_OK;
    if (!ok)
        fprintf(stderr, "  %s: backward failed: %s\n", ff_ops[op].name, ff_last_error());
    for (int k = 0; ok && k < n; k++)
        if (in[k] && in[k]->requires_grad)
            ok = check_input(op, in, n, p, r, k, tol);
    for (int k = 0; k < n; k++)
        if (in[k])
            ff_tensor_set_grad(in[k], NULL);
    ff_tensor_release(r);
    return ok;
}

static bool gradcheck(ff_opcode op, ff_tensor **in, int n, const ff_params *p)
{
    return gradcheck_tol(op, in, n, p, TOL);
}

static ff_tensor *leaf(ff_tensor *t)
{
    if (t)
        ff_tensor_set_requires_grad(t, true);
    return t;
}

/* A transposed (non-contiguous) view requiring grad; releases t. */
static ff_tensor *leaf_t(ff_tensor *t)
{
    ff_tensor *v = ff_tensor_transpose(t, 0, 1);
    ff_tensor_release(t);
    return leaf(v);
}

/* gradcheck a binary op on fresh inputs of the two shapes */
static bool check_binary(ff_opcode op, const int64_t *sa, int na, const int64_t *sb, int nb,
                         float lo_b, uint64_t seed)
{
    ff_tensor *in[2] = {leaf(randn_t(sa, na, seed, 1, 0)),
                        leaf(rand_t(sb, nb, seed + 1, lo_b, lo_b + 1.5f))};
    bool ok = in[0] && in[1] && gradcheck(op, in, 2, NULL);
    release_all(in, 2);
    return ok;
}

/* ---- arithmetic ---- */

static const int64_t S34[] = {3, 4}, S4[] = {4}, S31[] = {3, 1}, S14[] = {1, 4};
static const int64_t S234[] = {2, 3, 4};

TEST(grad_add_sub_mul_div_broadcast)
{
    ff_opcode ops[] = {FF_OP_ADD, FF_OP_SUB, FF_OP_MUL, FF_OP_DIV};
    for (int k = 0; k < 4; k++) {
        /* the divisor stays in [0.5, 2) */
        CHECK(check_binary(ops[k], S34, 2, S4, 1, 0.5f, 10 + k));
        CHECK(check_binary(ops[k], S31, 2, S14, 2, 0.5f, 20 + k));
        CHECK(check_binary(ops[k], S4, 1, S234, 3, 0.5f, 30 + k));
        CHECK(check_binary(ops[k], S34, 2, NULL, 0, 0.5f, 40 + k)); /* rank 0 */
    }
}

TEST(grad_non_contiguous_inputs)
{
    ff_tensor *in[2] = {leaf_t(randn_t(S34, 2, 1, 1, 0)), leaf_t(rand_t(S34, 2, 2, 0.5f, 2))};
    CHECK(!ff_tensor_is_contiguous(in[0]));
    CHECK(gradcheck(FF_OP_MUL, in, 2, NULL));
    CHECK(gradcheck(FF_OP_DIV, in, 2, NULL));
    CHECK(gradcheck(FF_OP_EXP, in, 1, NULL));
    release_all(in, 2);
}

TEST(grad_pow)
{
    /* positive bases, both inputs differentiable */
    ff_tensor *in[2] = {leaf(rand_t(S34, 2, 3, 0.5f, 2.0f)), leaf(randn_t(S4, 1, 4, 1, 0))};
    CHECK(gradcheck(FF_OP_POW, in, 2, NULL));
    release_all(in, 2);
    /* exponent alone differentiable: the base gets no gradient */
    ff_tensor *e[2] = {rand_t(S31, 2, 5, 0.5f, 2.0f), leaf(randn_t(S14, 2, 6, 1, 0))};
    CHECK(gradcheck(FF_OP_POW, e, 2, NULL));
    CHECK(e[0]->grad == NULL);
    release_all(e, 2);
}

TEST(grad_pow_at_zero_is_finite)
{
    /* x^2 at 0: 0; x^0: 0 (not 0 * inf); d/db 0^b for b >= 0: 0 (not 0 * -inf) */
    float av[3] = {0, 0, 0}, bv[3] = {2, 0, 1};
    int64_t s3 = 3;
    ff_tensor *in[2] = {leaf(ff_tensor_from_data(av, &s3, 1)), leaf(ff_tensor_from_data(bv, &s3, 1))};
    ff_tensor *y = ff_apply(FF_OP_POW, in, 2, NULL, NULL);
    ff_tensor *ones = ff_tensor_ones(&s3, 1);
    REQUIRE(y && ones && ff_backward(y, ones, false) == FF_OK);
    for (int i = 0; i < 3; i++) {
        CHECK(isfinite(ff_tensor_data(in[0]->grad)[i]));
        CHECK(ff_tensor_data(in[1]->grad)[i] == 0);
    }
    CHECK(ff_tensor_data(in[0]->grad)[2] == 1); /* d x^1 = 1 */
    ff_tensor_release(ones);
    ff_tensor_release(y);
    release_all(in, 2);
}

TEST(grad_maximum_minimum)
{
    /* distinct values: ramps shuffled differently, offset by a half step */
    ff_tensor *a = ramp_t(S34, 2, -1.0f, 0.17f), *b = ramp_t(S34, 2, -0.95f, 0.17f);
    shuffle(a, 1);
    shuffle(b, 2);
    ff_tensor *in[2] = {leaf(a), leaf(b)};
    CHECK(gradcheck(FF_OP_MAXIMUM, in, 2, NULL));
    CHECK(gradcheck(FF_OP_MINIMUM, in, 2, NULL));
    release_all(in, 2);
    ff_tensor *c[2] = {leaf(ramp_t(S34, 2, -1.0f, 0.17f)), leaf(ramp_t(S4, 1, -0.5f, 0.31f))};
    CHECK(gradcheck(FF_OP_MAXIMUM, c, 2, NULL));
    CHECK(gradcheck(FF_OP_MINIMUM, c, 2, NULL));
    release_all(c, 2);
}

TEST(grad_maximum_ties_split)
{
    ff_tensor *x = leaf(ramp_t(S4, 1, 0, 1));
    ff_tensor *in[2] = {x, x};
    ff_opcode ops[2] = {FF_OP_MAXIMUM, FF_OP_MINIMUM};
    for (int k = 0; k < 2; k++) {
        ff_tensor *y = ff_apply(ops[k], in, 2, NULL, NULL);
        ff_tensor *ones = ff_tensor_ones(S4, 1);
        REQUIRE(y && ones && ff_backward(y, ones, false) == FF_OK);
        for (int i = 0; i < 4; i++)
            CHECK(ff_tensor_data(x->grad)[i] == 1); /* half and half, accumulated */
        ff_tensor_set_grad(x, NULL);
        ff_tensor_release(ones);
        ff_tensor_release(y);
    }
    ff_tensor_release(x);
}

TEST(grad_unary_math)
{
    ff_tensor *pos = leaf(rand_t(S34, 2, 7, 0.5f, 2.0f)), *any = leaf(randn_t(S234, 3, 8, 1, 0));
    CHECK(gradcheck(FF_OP_NEG, &any, 1, NULL));
    CHECK(gradcheck(FF_OP_EXP, &any, 1, NULL));
    CHECK(gradcheck(FF_OP_LOG, &pos, 1, NULL));
    CHECK(gradcheck(FF_OP_SQRT, &pos, 1, NULL));
    ff_tensor_release(any);
    /* |x| away from the kink at 0 */
    ff_tensor *away = ramp_t(S34, 2, -1.05f, 0.2f);
    shuffle(away, 3);
    leaf(away);
    CHECK(gradcheck(FF_OP_ABS, &away, 1, NULL));
    ff_tensor_release(away);
    ff_tensor_release(pos);
}

TEST(grad_clamp)
{
    /* values in -1.05, -0.85, ... none within H of the bounds -0.5 and 0.5 */
    ff_tensor *x = ramp_t(S34, 2, -1.05f, 0.2f);
    shuffle(x, 4);
    leaf(x);
    ff_params p = {.f = {-0.5, 0.5}};
    CHECK(gradcheck(FF_OP_CLAMP, &x, 1, &p));
    ff_params lo = {.f = {-0.5, INFINITY}}, hi = {.f = {-INFINITY, 0.5}};
    CHECK(gradcheck(FF_OP_CLAMP, &x, 1, &lo));
    CHECK(gradcheck(FF_OP_CLAMP, &x, 1, &hi));
    ff_tensor_release(x);
    /* torch's rule at the bounds themselves: the gradient passes */
    float v[3] = {-1, 0, 1};
    int64_t s3 = 3;
    ff_tensor *b = leaf(ff_tensor_from_data(v, &s3, 1)), *ones = ff_tensor_ones(&s3, 1);
    ff_params q = {.f = {-1, 1}};
    ff_tensor *y = ff_apply(FF_OP_CLAMP, &b, 1, &q, NULL);
    REQUIRE(y && ff_backward(y, ones, false) == FF_OK);
    for (int i = 0; i < 3; i++)
        CHECK(ff_tensor_data(b->grad)[i] == 1);
    release_all((ff_tensor *[]){y, b, ones}, 3);
}

TEST(grad_where)
{
    float cv[12] = {1, 0, 0, 1, 1, 1, 0, 0, 0, 1, 0, 1};
    ff_tensor *cond = ff_tensor_from_data(cv, S34, 2);
    ff_tensor *in[2] = {leaf(randn_t(S34, 2, 9, 1, 0)), leaf(randn_t(S4, 1, 10, 1, 0))};
    ff_params p = {.aux = {cond}};
    CHECK(gradcheck(FF_OP_WHERE, in, 2, &p));
    /* the condition broadcasts too: a (3,1) condition picks whole rows */
    ff_tensor *rows = ff_tensor_from_data((float[]){1, 0, 1}, S31, 2);
    ff_params q = {.aux = {rows}};
    CHECK(gradcheck(FF_OP_WHERE, in, 2, &q));
    release_all((ff_tensor *[]){cond, rows, in[0], in[1]}, 4);
}

/* ---- activations ---- */

TEST(grad_activations)
{
    struct { ff_opcode op; double f0, f1; } acts[] = {
        {FF_OP_RELU, 0, 0}, {FF_OP_LEAKY_RELU, 0.1, 0}, {FF_OP_ELU, 1.3, 0},
        {FF_OP_GELU, 0, 0}, {FF_OP_SILU, 0, 0}, {FF_OP_TANH, 0, 0},
        {FF_OP_SIGMOID, 0, 0}, {FF_OP_SOFTPLUS, 1, 20}, {FF_OP_SOFTPLUS, 2, 3},
        {FF_OP_SOFTPLUS, -0.5, 20}, {FF_OP_RBF, 0, 0}};
    /* -2.05 .. 1.95 by 0.1 (+/- shuffled): nothing within H of the kinks at 0,
     * nor of softplus's threshold at x = 1.5 for beta 2, threshold 3 */
    int64_t s[2] = {5, 8};
    ff_tensor *x = ramp_t(s, 2, -2.05f, 0.1f);
    shuffle(x, 5);
    leaf(x);
    ff_tensor *xt = ff_tensor_transpose(x, 0, 1);
    for (size_t k = 0; k < sizeof acts / sizeof acts[0]; k++) {
        ff_params p = {.f = {acts[k].f0, acts[k].f1}};
        CHECK(gradcheck(acts[k].op, &x, 1, &p));
        leaf(xt); /* a non-contiguous leaf of its own */
        CHECK(gradcheck(acts[k].op, &xt, 1, &p));
    }
    ff_tensor_release(xt);
    ff_tensor_release(x);
}

TEST(act_values_and_errors)
{
    float v[3] = {-1, 0, 2};
    int64_t s3 = 3;
    ff_tensor *x = ff_tensor_from_data(v, &s3, 1);
    ff_params sp = {.f = {0, 20}};
    CHECK(ff_apply(FF_OP_SOFTPLUS, &x, 1, &sp, NULL) == NULL);
    CHECK(strstr(ff_last_error(), "softplus: beta") != NULL);
    /* softplus above the threshold is x itself; large inputs do not overflow */
    ff_params big = {.f = {1, 1000}};
    float w[2] = {100, -100};
    int64_t s2 = 2;
    ff_tensor *z = ff_tensor_from_data(w, &s2, 1);
    ff_tensor *y = ff_apply(FF_OP_SOFTPLUS, &z, 1, &big, NULL);
    REQUIRE(y);
    CHECK_NEAR(ff_tensor_data(y)[0], 100, 1e-4);
    CHECK(ff_tensor_data(y)[1] >= 0 && ff_tensor_data(y)[1] < 1e-30);
    ff_tensor *s = ff_apply(FF_OP_SIGMOID, &z, 1, NULL, NULL);
    REQUIRE(s);
    CHECK(ff_tensor_data(s)[0] == 1 && ff_tensor_data(s)[1] >= 0);
    release_all((ff_tensor *[]){x, z, y, s}, 4);
}

/* f'' by central differences of f' (f' from backward with a gradient of ones). */
static bool check_d2(ff_opcode op, const char *name, double param, const ff_tensor *x0)
{
    ff_params p = {.f = {param, 20}};
    ff_tensor *x = ff_tensor_clone(x0);
    ff_tensor *d2 = ff_act_d2(name, x, param);
    if (!d2)
        return false;
    bool ok = true;
    for (int64_t i = 0; i < ff_tensor_numel(x); i++) {
        double d[2];
        for (int sgn = 0; sgn < 2; sgn++) {
            float *e = ff_tensor_data(x) + i, orig = *e;
            *e = orig + (float)(sgn ? -H : H);
            leaf(x);
            ff_tensor *y = ff_apply(op, &x, 1, &p, NULL);
            ff_tensor *ones = ff_tensor_ones(x->shape, x->ndim);
            ff_backward(y, ones, false);
            d[sgn] = ff_tensor_data(x->grad)[i];
            ff_tensor_set_grad(x, NULL);
            ff_tensor_release(ones);
            ff_tensor_release(y);
            *e = orig;
        }
        double num = (d[0] - d[1]) / (2 * H), ana = ff_tensor_data(d2)[i];
        if (!(fabs(num - ana) <= TOL * (1 + fabs(num)))) {
            fprintf(stderr, "  act_d2 %s at %g: %g, differences %g\n", name,
                    ff_tensor_data(x)[i], ana, num);
            ok = false;
        }
    }
    ff_tensor_release(d2);
    ff_tensor_release(x);
    return ok;
}

TEST(act_d2_matches_differences_of_the_derivative)
{
    ff_tensor *x = ramp_t(S234, 3, -2.45f, 0.2f); /* nothing near 0 */
    CHECK(check_d2(FF_OP_ELU, "elu", 1.5, x));
    CHECK(check_d2(FF_OP_GELU, "gelu", 0, x));
    CHECK(check_d2(FF_OP_SILU, "silu", 0, x));
    CHECK(check_d2(FF_OP_TANH, "tanh", 0, x));
    CHECK(check_d2(FF_OP_SIGMOID, "sigmoid", 0, x));
    CHECK(check_d2(FF_OP_SOFTPLUS, "softplus", 1, x));
    CHECK(check_d2(FF_OP_SOFTPLUS, "softplus", 3, x));
    CHECK(check_d2(FF_OP_RBF, "rbf", 0, x));
    CHECK(check_d2(FF_OP_RELU, "relu", 0, x));
    CHECK(check_d2(FF_OP_LEAKY_RELU, "leaky_relu", 0.1, x));
    ff_tensor *bad = ff_act_d2("swish", x, 1);
    CHECK(bad == NULL && strstr(ff_last_error(), "known: relu, leaky_relu") != NULL);
    ff_tensor_release(x);
}

/* ---- growth: split_act ---- */

/* z, s, scale, shift for split_act with the pre-activations u+ = a (z + s)
 * + b and u- = a (z - s) + b chosen first: evenly spaced over [-2.2, 2.2]
 * and shuffled apart, which for the sizes below keeps them at least 0.025
 * from 0 (relu's kink) and from softplus's threshold at 1.6 (beta 2,
 * threshold 3.2). The differences move u by at most
 * max(|a|, |z ± s|, 1) H < 0.01. Without affine, a = 1 and b = 0 and
 * in[2], in[3] are NULL. With gain, in[4] is a gain k in [0.8, 1.25] per
 * channel and s is divided by it (k s is the step above; a difference in
 * k moves u by at most 1.5 H 4.4 / 0.8 < 0.02); else in[4] is NULL. */
static void split_inputs(const int64_t *shape, int ndim, bool affine, bool gain, uint64_t seed,
                         ff_tensor **in)
{
    int64_t n = 1, C = shape[1], S = ndim == 4 ? shape[2] * shape[3] : 1;
    for (int d = 0; d < ndim; d++)
        n *= shape[d];
    float step = 4.4f / (float)(n - 1); /* -2.2 .. 2.2; 0.2 or less apart */
    ff_tensor *up = ramp_t(shape, ndim, -2.2f, step), *um = ramp_t(shape, ndim, -2.2f, step);
    shuffle(up, (uint32_t)seed);
    shuffle(um, (uint32_t)seed + 7);
    ff_tensor *a = affine ? rand_t(&C, 1, seed + 1, 0.5f, 1.5f) : NULL;
    ff_tensor *b = affine ? randn_t(&C, 1, seed + 2, 0.5f, 0) : NULL;
    ff_tensor *k = gain ? rand_t(&C, 1, seed + 3, 0.8f, 1.25f) : NULL;
    if (a)
        ff_tensor_data(a)[0] *= -1; /* a batch norm's weight may be negative */
    in[0] = ff_tensor_empty(shape, ndim);
    in[1] = ff_tensor_empty(shape, ndim);
    for (int64_t i = 0; i < n; i++) {
        int64_t c = (i / S) % C;
        float ac = a ? ff_tensor_data(a)[c] : 1, bc = b ? ff_tensor_data(b)[c] : 0;
        float p = ff_tensor_data(up)[i], m = ff_tensor_data(um)[i];
        ff_tensor_data(in[0])[i] = (0.5f * (p + m) - bc) / ac;
        ff_tensor_data(in[1])[i] = 0.5f * (p - m) / ac / (k ? ff_tensor_data(k)[c] : 1);
    }
    in[2] = a, in[3] = b, in[4] = k;
    for (int j = 0; j < 5; j++)
        leaf(in[j]);
    ff_tensor_release(up);
    ff_tensor_release(um);
}

TEST(grad_split_act)
{
    struct { ff_act act; double f0, f1; } acts[] = {
        {FF_ACT_RELU, 0, 0}, {FF_ACT_LEAKY_RELU, 0.1, 0}, {FF_ACT_ELU, 1.3, 0},
        {FF_ACT_GELU, 0, 0}, {FF_ACT_SILU, 0, 0}, {FF_ACT_TANH, 0, 0},
        {FF_ACT_SIGMOID, 0, 0}, {FF_ACT_SOFTPLUS, 1, 20}, {FF_ACT_SOFTPLUS, 2, 3.2},
        {FF_ACT_RBF, 0, 0}, {FF_ACT_IDENTITY, 0, 0}};
    /* runs shorter than 16 and longer (the kernels' vector blocks and tails);
     * (N, C) walks the channels in a run, (N, C, H, W) one channel per run */
    static const int64_t s2[] = {3, 4}, s2l[] = {2, 17}, s4[] = {2, 3, 2, 2}, s4l[] = {1, 2, 4, 5};
    const int64_t *shapes[4] = {s2, s2l, s4, s4l};
    int ranks[4] = {2, 2, 4, 4};
    for (size_t k = 0; k < sizeof acts / sizeof acts[0]; k++)
        for (int r = 0; r < 4; r++)
            for (int affine = 0; affine < 4; affine++)
                for (int pair = 0; pair < 2; pair++) {
                    ff_tensor *in[5]; /* affine 2, 3: with a gain */
                    split_inputs(shapes[r], ranks[r], affine & 1, affine >= 2, 50 + k, in);
                    ff_params p = {.i = {acts[k].act, pair}, .f = {acts[k].f0, acts[k].f1}};
                    bool ok = gradcheck(FF_OP_SPLIT_ACT, in, 5, &p);
                    if (!ok)
                        fprintf(stderr, "  split_act %s, shape %d, affine %d, gain %d, pair %d\n",
                                ff_act_name(acts[k].act), r + 1, affine & 1, affine >= 2, pair);
                    CHECK(ok);
                    release_all(in, 5);
                }
}

TEST(grad_split_act_some_inputs_and_layouts)
{
    static const int64_t s4[] = {2, 3, 2, 2}, s2[] = {4, 3};
    ff_params p = {.i = {FF_ACT_TANH, 0}};
    /* only scale and shift differentiable (z and s need no gradient) */
    ff_tensor *in[5];
    split_inputs(s4, 4, true, false, 70, in);
    ff_tensor_set_requires_grad(in[0], false);
    ff_tensor_set_requires_grad(in[1], false);
    CHECK(gradcheck(FF_OP_SPLIT_ACT, in, 5, &p));
    CHECK(in[0]->grad == NULL && in[1]->grad == NULL);
    release_all(in, 5);
    /* only the gain differentiable (growth's step 2: the gates alone) */
    for (int layout = 0; layout < 2; layout++) {
        split_inputs(layout ? s4 : s2, layout ? 4 : 2, true, true, 72 + layout, in);
        for (int k = 0; k < 4; k++)
            ff_tensor_set_requires_grad(in[k], false);
        CHECK(gradcheck(FF_OP_SPLIT_ACT, in, 5, &p));
        CHECK(in[1]->grad == NULL);
        release_all(in, 5);
    }
    /* z and s as transposed (non-contiguous) views of the same values, pair mode */
    split_inputs(s2, 2, true, true, 71, in);
    for (int k = 0; k < 2; k++) {
        ff_tensor *t = ff_tensor_transpose(in[k], 0, 1), *c = ff_tensor_clone(t);
        ff_tensor_release(in[k]);
        in[k] = leaf(ff_tensor_transpose(c, 0, 1));
        release_all((ff_tensor *[]){t, c}, 2);
        CHECK(!ff_tensor_is_contiguous(in[k]));
    }
    ff_params q = {.i = {FF_ACT_RELU, 1}};
    CHECK(gradcheck(FF_OP_SPLIT_ACT, in, 5, &q));
    release_all(in, 5);
}

TEST(split_act_values_and_errors)
{
    /* z + s = 1.5, -1; z - s = 0.5, -3; a = 2, 1; b = 0, 1 */
    int64_t s12[2] = {1, 2}, c2 = 2, c3 = 3, s13[2] = {1, 3}, s3 = 3;
    ff_tensor *z = ff_tensor_from_data((float[]){1, -2}, s12, 2);
    ff_tensor *s = ff_tensor_from_data((float[]){0.5f, 1}, s12, 2);
    ff_tensor *a = ff_tensor_from_data((float[]){2, 1}, &c2, 1);
    ff_tensor *b = ff_tensor_from_data((float[]){0, 1}, &c2, 1);
    ff_tensor *mean = ff_split_act(z, s, NULL, NULL, NULL, FF_ACT_RELU, 0, 0, false);
    ff_tensor *pair = ff_split_act(z, s, a, b, NULL, FF_ACT_IDENTITY, 0, 0, true);
    REQUIRE(mean && pair);
    CHECK(ff_tensor_data(mean)[0] == 1 && ff_tensor_data(mean)[1] == 0);
    CHECK(pair->ndim == 2 && pair->shape[0] == 2 && pair->shape[1] == 2);
    float want[4] = {3, 0, 1, -2}; /* u+ then u- */
    for (int i = 0; i < 4; i++)
        CHECK(ff_tensor_data(pair)[i] == want[i]);
    /* through ff_apply, the same values */
    ff_params p = {.i = {FF_ACT_IDENTITY, 1}};
    ff_tensor *y = ff_apply(FF_OP_SPLIT_ACT, (ff_tensor *[]){z, s, a, b, NULL}, 5, &p, NULL);
    REQUIRE(y);
    for (int i = 0; i < 4; i++)
        CHECK(ff_tensor_data(y)[i] == want[i]);
    /* errors, before any allocation */
    ff_tensor *s_bad = ff_tensor_zeros(s13, 2), *c_bad = ff_tensor_ones(&c3, 1);
    ff_tensor *v3 = ff_tensor_zeros(&s3, 1);
    CHECK(ff_split_act(z, s_bad, NULL, NULL, NULL, FF_ACT_RELU, 0, 0, false) == NULL);
    CHECK(strcmp(ff_last_error(),
                 "split_act: argument #2 (s) has shape 1x3, expected 1x2 to match argument #1 (z)") == 0);
    CHECK(ff_split_act(z, s, c_bad, NULL, NULL, FF_ACT_RELU, 0, 0, false) == NULL);
    CHECK(strcmp(ff_last_error(), "split_act: scale has shape 3, expected 2 (one per channel: "
                                  "dim 2 of argument #1 (z), 1x2)") == 0);
    CHECK(ff_split_act(z, s, NULL, c_bad, NULL, FF_ACT_RELU, 0, 0, false) == NULL);
    CHECK(strstr(ff_last_error(), "split_act: shift has shape 3") != NULL);
    CHECK(ff_split_act(z, s, NULL, NULL, c_bad, FF_ACT_RELU, 0, 0, false) == NULL);
    CHECK(strstr(ff_last_error(), "split_act: gain has shape 3") != NULL);
    /* a gain k: the values of s scaled by k (z + k s = 1 + 1, -2 + 3) */
    ff_tensor *kg = ff_tensor_from_data((float[]){2, 3}, &c2, 1);
    ff_tensor *gained = ff_split_act(z, s, NULL, NULL, kg, FF_ACT_IDENTITY, 0, 0, true);
    REQUIRE(gained);
    float want_k[4] = {2, 1, 0, -5};
    for (int i = 0; i < 4; i++)
        CHECK(ff_tensor_data(gained)[i] == want_k[i]);
    release_all((ff_tensor *[]){kg, gained}, 2);
    CHECK(ff_split_act(v3, v3, NULL, NULL, NULL, FF_ACT_RELU, 0, 0, false) == NULL);
    CHECK(strstr(ff_last_error(), "split_act: argument #1 (z) has shape 3, expected 2 dims") != NULL);
    CHECK(ff_split_act(z, s, NULL, NULL, NULL, FF_ACT_COUNT, 0, 0, false) == NULL);
    CHECK(strstr(ff_last_error(), "split_act: unknown activation kind") != NULL);
    CHECK(ff_split_act(z, s, NULL, NULL, NULL, FF_ACT_SOFTPLUS, 0, 20, false) == NULL);
    CHECK(strstr(ff_last_error(), "split_act: softplus beta must be a non-zero number") != NULL);
    ff_params bad_mode = {.i = {FF_ACT_RELU, 2}};
    CHECK(ff_apply(FF_OP_SPLIT_ACT, (ff_tensor *[]){z, s, NULL, NULL, NULL}, 5, &bad_mode, NULL) == NULL);
    CHECK(strstr(ff_last_error(), "split_act: mode must be 0 (mean) or 1 (pair)") != NULL);
    CHECK(ff_apply(FF_OP_SPLIT_ACT, (ff_tensor *[]){z, NULL, NULL, NULL, NULL}, 5, NULL, NULL) == NULL);
    CHECK(strstr(ff_last_error(), "split_act: argument #2 (s) is required") != NULL);
    /* names of the kinds */
    CHECK(strcmp(ff_act_name(FF_ACT_IDENTITY), "identity") == 0 && ff_act_name(FF_ACT_COUNT) == NULL);
    CHECK(ff_act_lookup("softplus") == FF_ACT_SOFTPLUS && ff_act_lookup("swish") == -1);
    release_all((ff_tensor *[]){z, s, a, b, mean, pair, y, s_bad, c_bad, v3}, 10);
}

/* ---- reductions ---- */

TEST(grad_sum_mean_var)
{
    ff_tensor *x = leaf(randn_t(S234, 3, 11, 1, 0));
    ff_tensor *xt = ff_tensor_transpose(x, 0, 2);
    leaf(xt);
    ff_opcode ops[3] = {FF_OP_SUM, FF_OP_MEAN, FF_OP_VAR};
    for (int k = 0; k < 3; k++)
        for (int dim = -1; dim < 3; dim++)
            for (int keep = 0; keep < 2; keep++)
                for (int unb = 0; unb < 2; unb++) {
                    ff_params p = {.i = {dim, keep, unb}};
                    CHECK(gradcheck(ops[k], &x, 1, &p));
                    CHECK(gradcheck(ops[k], &xt, 1, &p));
                }
    ff_tensor_release(xt);
    ff_tensor_release(x);
}

TEST(grad_max_min)
{
    ff_tensor *x = ramp_t(S234, 3, -1.15f, 0.1f); /* distinct: no ties */
    shuffle(x, 6);
    leaf(x);
    ff_opcode ops[2] = {FF_OP_MAX, FF_OP_MIN};
    for (int k = 0; k < 2; k++)
        for (int dim = -1; dim < 3; dim++)
            for (int keep = 0; keep < 2; keep++) {
                ff_params p = {.i = {dim, keep}};
                CHECK(gradcheck(ops[k], &x, 1, &p));
            }
    ff_tensor_release(x);
}

TEST(max_indices_are_a_second_result)
{
    float v[6] = {1, 5, 5, 2, 0, 2}; /* ties: the first position wins */
    int64_t s[2] = {2, 3};
    ff_tensor *x = leaf(ff_tensor_from_data(v, s, 2)), *idx = NULL;
    ff_params p = {.i = {1, 0}};
    ff_tensor *y = ff_apply(FF_OP_MAX, &x, 1, &p, &idx);
    REQUIRE(y && idx);
    CHECK(ff_tensor_data(idx)[0] == 1 && ff_tensor_data(idx)[1] == 0);
    /* the caller may rewrite its indices (Lua makes them 1-based) */
    ff_tensor *one = ff_tensor_scalar(1);
    CHECK(ff_binary_(FF_ADD, idx, one) == FF_OK);
    ff_tensor *g = ff_tensor_ones(y->shape, y->ndim);
    REQUIRE(ff_backward(y, g, false) == FF_OK);
    float want[6] = {0, 1, 0, 1, 0, 0};
    for (int i = 0; i < 6; i++)
        CHECK(ff_tensor_data(x->grad)[i] == want[i]);
    /* over all elements: no second result, the first maximum gets it */
    ff_tensor_set_grad(x, NULL);
    ff_params all = {.i = {-1, 0}};
    ff_tensor *extra = NULL, *m = ff_apply(FF_OP_MAX, &x, 1, &all, &extra);
    REQUIRE(m);
    CHECK(extra == NULL);
    CHECK(ff_backward(m, NULL, false) == FF_OK);
    for (int i = 0; i < 6; i++)
        CHECK(ff_tensor_data(x->grad)[i] == (i == 1));
    release_all((ff_tensor *[]){x, idx, y, one, g, m}, 6);
}

TEST(grad_norm)
{
    /* -1.13 .. 1.17: distinct |x| (no ties for p = inf), none near 0 */
    ff_tensor *x = ramp_t(S234, 3, -1.13f, 0.1f);
    shuffle(x, 7);
    leaf(x);
    double ps[5] = {1, 2, 3, 0.7, INFINITY};
    for (int k = 0; k < 5; k++)
        for (int dim = -1; dim < 3; dim++)
            for (int keep = 0; keep < 2; keep++) {
                ff_params p = {.i = {dim, keep}, .f = {ps[k]}};
                CHECK(gradcheck(FF_OP_NORM, &x, 1, &p));
            }
    ff_tensor_release(x);
}

TEST(grad_norm_special_points)
{
    /* p = 2 at the zero vector: 0, not NaN */
    ff_tensor *z = leaf(ff_tensor_zeros(S4, 1));
    ff_params p2 = {.i = {-1, 0}, .f = {2}};
    ff_tensor *y = ff_apply(FF_OP_NORM, &z, 1, &p2, NULL);
    REQUIRE(y && ff_backward(y, NULL, false) == FF_OK);
    for (int i = 0; i < 4; i++)
        CHECK(ff_tensor_data(z->grad)[i] == 0);
    /* p = inf with two tied maxima: split evenly, signs kept */
    float v[4] = {-3, 1, 3, 2};
    ff_tensor *t = leaf(ff_tensor_from_data(v, S4, 1));
    ff_params pi = {.i = {-1, 0}, .f = {INFINITY}};
    ff_tensor *n = ff_apply(FF_OP_NORM, &t, 1, &pi, NULL);
    REQUIRE(n && ff_backward(n, NULL, false) == FF_OK);
    float want[4] = {-0.5f, 0, 0.5f, 0};
    for (int i = 0; i < 4; i++)
        CHECK(ff_tensor_data(t->grad)[i] == want[i]);
    release_all((ff_tensor *[]){z, y, t, n}, 4);
}

/* ---- softmax and losses ---- */

TEST(grad_softmax_log_softmax)
{
    ff_tensor *x = leaf(randn_t(S234, 3, 12, 2, 0));
    ff_tensor *xt = ff_tensor_transpose(x, 1, 2);
    leaf(xt);
    for (int dim = 0; dim < 3; dim++) {
        ff_params p = {.i = {dim}};
        CHECK(gradcheck(FF_OP_SOFTMAX, &x, 1, &p));
        CHECK(gradcheck(FF_OP_LOG_SOFTMAX, &x, 1, &p));
        CHECK(gradcheck(FF_OP_SOFTMAX, &xt, 1, &p));
        CHECK(gradcheck(FF_OP_LOG_SOFTMAX, &xt, 1, &p));
    }
    ff_params bad = {.i = {3}};
    CHECK(ff_apply(FF_OP_SOFTMAX, &x, 1, &bad, NULL) == NULL);
    CHECK(strstr(ff_last_error(), "softmax: dim 4 out of range") != NULL);
    ff_tensor_release(xt);
    ff_tensor_release(x);
}

TEST(softmax_is_stable)
{
    float v[3] = {1000, 1001, -1000};
    int64_t s3 = 3;
    ff_tensor *x = ff_tensor_from_data(v, &s3, 1);
    ff_params p = {.i = {0}};
    ff_tensor *y = ff_apply(FF_OP_SOFTMAX, &x, 1, &p, NULL);
    ff_tensor *l = ff_apply(FF_OP_LOG_SOFTMAX, &x, 1, &p, NULL);
    REQUIRE(y && l);
    CHECK_NEAR(ff_tensor_data(y)[0] + ff_tensor_data(y)[1], 1, 1e-6);
    CHECK_NEAR(ff_tensor_data(l)[1], -log1p(exp(-1.0)), 1e-5);
    CHECK_NEAR(ff_tensor_data(l)[2], -2001 - log1p(exp(-1.0)), 1e-2);
    release_all((ff_tensor *[]){x, y, l}, 3);
}

TEST(softmax_empty_and_scalar)
{
    /* zero-size dims anywhere: empty results and gradients, no failure */
    int64_t shapes[3][3] = {{2, 0, 1}, {0, 3, 1}, {2, 3, 0}};
    for (int k = 0; k < 3; k++)
        for (int dim = 0; dim < 3; dim++) {
            ff_tensor *x = leaf(ff_tensor_zeros(shapes[k], 3));
            ff_params p = {.i = {dim}};
            ff_tensor *y = ff_apply(FF_OP_LOG_SOFTMAX, &x, 1, &p, NULL);
            ff_tensor *g = y ? ff_tensor_ones(y->shape, y->ndim) : NULL;
            CHECK(y && g && ff_backward(y, g, false) == FF_OK);
            CHECK(x->grad && ff_shape_equal(x->grad, x));
            release_all((ff_tensor *[]){x, y, g}, 3);
        }
    /* a scalar is one element along "dim 1": softmax 1, log_softmax 0 */
    ff_tensor *s = ff_tensor_scalar(3);
    ff_params p = {.i = {0}};
    ff_tensor *y = ff_apply(FF_OP_SOFTMAX, &s, 1, &p, NULL);
    ff_tensor *l = ff_apply(FF_OP_LOG_SOFTMAX, &s, 1, &p, NULL);
    REQUIRE(y && l);
    CHECK(y->ndim == 0 && ff_tensor_data(y)[0] == 1 && ff_tensor_data(l)[0] == 0);
    release_all((ff_tensor *[]){s, y, l}, 3);
}

static const int64_t S53[] = {5, 3};

TEST(grad_cross_entropy_nll)
{
    float lv[5] = {0, 2, 1, 1, 0};
    int64_t n5 = 5;
    ff_tensor *labels = ff_tensor_from_data(lv, &n5, 1);
    ff_tensor *x = leaf(randn_t(S53, 2, 13, 1.5f, 0));
    ff_tensor *xt = leaf_t(randn_t((int64_t[]){3, 5}, 2, 14, 1.5f, 0));
    double smooth[2] = {0, 0.2};
    for (int red = 0; red < 3; red++) {
        for (int s = 0; s < 2; s++) {
            ff_params p = {.i = {red}, .f = {smooth[s]}, .aux = {labels}};
            CHECK(gradcheck(FF_OP_CROSS_ENTROPY, &x, 1, &p));
            CHECK(gradcheck(FF_OP_CROSS_ENTROPY, &xt, 1, &p));
        }
        ff_params q = {.i = {red}, .aux = {labels}};
        CHECK(gradcheck(FF_OP_NLL_LOSS, &x, 1, &q));
        CHECK(gradcheck(FF_OP_NLL_LOSS, &xt, 1, &q));
    }
    release_all((ff_tensor *[]){labels, x, xt}, 3);
}

TEST(cross_entropy_values)
{
    /* row 0: logits 1,2,3, label 3; row 1: 0.5,0.1,-1, label 1 */
    float xv[6] = {1, 2, 3, 0.5f, 0.1f, -1}, lv[2] = {2, 0};
    int64_t s[2] = {2, 3}, n2 = 2;
    ff_tensor *x = ff_tensor_from_data(xv, s, 2), *labels = ff_tensor_from_data(lv, &n2, 1);
    double lse0 = log(exp(1.0) + exp(2.0) + exp(3.0)), lse1 = log(exp(0.5) + exp(0.1) + exp(-1.0));
    double l0 = lse0 - 3, l1 = lse1 - 0.5;
    ff_params none = {.i = {0}, .aux = {labels}}, sum = {.i = {2}, .aux = {labels}};
    ff_params smooth = {.i = {1}, .f = {0.3}, .aux = {labels}};
    ff_tensor *a = ff_apply(FF_OP_CROSS_ENTROPY, &x, 1, &none, NULL);
    ff_tensor *b = ff_apply(FF_OP_CROSS_ENTROPY, &x, 1, &sum, NULL);
    ff_tensor *c = ff_apply(FF_OP_CROSS_ENTROPY, &x, 1, &smooth, NULL);
    REQUIRE(a && b && c);
    CHECK(a->ndim == 1 && a->shape[0] == 2 && b->ndim == 0);
    CHECK_NEAR(ff_tensor_data(a)[0], l0, 1e-5);
    CHECK_NEAR(ff_tensor_data(a)[1], l1, 1e-5);
    CHECK_NEAR(ff_tensor_data(b)[0], l0 + l1, 1e-5);
    /* smoothing: 0.7 * nll + 0.3 * mean over classes of -log p */
    double u0 = (3 * lse0 - 6) / 3, u1 = (3 * lse1 - (0.5 + 0.1 - 1)) / 3;
    CHECK_NEAR(ff_tensor_data(c)[0], (0.7 * (l0 + l1) + 0.3 * (u0 + u1)) / 2, 1e-5);
    release_all((ff_tensor *[]){x, labels, a, b, c}, 5);
}

TEST(label_checks)
{
    ff_tensor *x = randn_t(S53, 2, 15, 1, 0);
    struct { float v[5]; int64_t n; const char *msg; } bad[] = {
        {{0, 1, 3, 0, 0}, 5, "cross_entropy: label 4 out of range for 3 classes"},
        {{0, -1, 0, 0, 0}, 5, "cross_entropy: label 0 out of range for 3 classes"},
        {{0, 0.5f, 0, 0, 0}, 5, "cross_entropy: label 1.5 at position 2 is not an integer"},
        {{0, 0, 0, 0}, 4, "cross_entropy: labels have shape 4, expected 5 (one per row of the 5x3 input)"},
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        ff_tensor *labels = ff_tensor_from_data(bad[k].v, &bad[k].n, 1);
        ff_params p = {.i = {1}, .aux = {labels}};
        CHECK(ff_apply(FF_OP_CROSS_ENTROPY, &x, 1, &p, NULL) == NULL);
        CHECK(strcmp(ff_last_error(), bad[k].msg) == 0);
        ff_tensor_release(labels);
    }
    ff_tensor *ok = ff_tensor_zeros((int64_t[]){5}, 1);
    ff_params red = {.i = {3}, .aux = {ok}}, sm = {.i = {1}, .f = {1.5}, .aux = {ok}};
    CHECK(ff_apply(FF_OP_NLL_LOSS, &x, 1, &red, NULL) == NULL);
    CHECK(strstr(ff_last_error(), "nll_loss: reduction must be") != NULL);
    CHECK(ff_apply(FF_OP_CROSS_ENTROPY, &x, 1, &sm, NULL) == NULL);
    CHECK(strstr(ff_last_error(), "label_smoothing must be in [0, 1]") != NULL);
    ff_tensor *x3 = ff_tensor_zeros(S234, 3);
    ff_params p = {.i = {1}, .aux = {ok}};
    CHECK(ff_apply(FF_OP_CROSS_ENTROPY, &x3, 1, &p, NULL) == NULL);
    CHECK(strstr(ff_last_error(), "input must be 2-D (N x C), got shape 2x3x4") != NULL);
    release_all((ff_tensor *[]){x, ok, x3}, 3);
}

TEST(grad_mse_bce)
{
    for (int red = 0; red < 3; red++) {
        ff_params p = {.i = {red}};
        ff_tensor *m[2] = {leaf(randn_t(S34, 2, 16, 1, 0)), leaf(randn_t(S4, 1, 17, 1, 0))};
        CHECK(gradcheck(FF_OP_MSE_LOSS, m, 2, &p));
        release_all(m, 2);
        ff_tensor *b[2] = {leaf(randn_t(S34, 2, 18, 2, 0)), leaf(rand_t(S34, 2, 19, 0, 1))};
        CHECK(gradcheck(FF_OP_BCE_WITH_LOGITS, b, 2, &p));
        release_all(b, 2);
        ff_tensor *t[2] = {leaf_t(randn_t(S34, 2, 20, 2, 0)), leaf_t(rand_t(S34, 2, 21, 0, 1))};
        CHECK(gradcheck(FF_OP_BCE_WITH_LOGITS, t, 2, &p));
        release_all(t, 2);
    }
}

TEST(mse_bce_values)
{
    float xv[2] = {100, -100}, yv[2] = {1, 0};
    int64_t n2 = 2;
    ff_tensor *in[2] = {ff_tensor_from_data(xv, &n2, 1), ff_tensor_from_data(yv, &n2, 1)};
    ff_params mean = {.i = {1}};
    ff_tensor *b = ff_apply(FF_OP_BCE_WITH_LOGITS, in, 2, &mean, NULL);
    ff_tensor *m = ff_apply(FF_OP_MSE_LOSS, in, 2, &mean, NULL);
    REQUIRE(b && m);
    CHECK(ff_tensor_data(b)[0] >= 0 && ff_tensor_data(b)[0] < 1e-30); /* stable: no inf - inf */
    CHECK_NEAR(ff_tensor_data(m)[0], (99.0 * 99 + 100.0 * 100) / 2, 1e-2);
    ff_tensor *bad = ff_tensor_zeros(S4, 1);
    ff_tensor *pair[2] = {in[0], bad};
    CHECK(ff_apply(FF_OP_BCE_WITH_LOGITS, pair, 2, &mean, NULL) == NULL);
    CHECK(strstr(ff_last_error(), "bce_with_logits: target has shape 4") != NULL);
    CHECK(ff_apply(FF_OP_MSE_LOSS, pair, 2, &mean, NULL) == NULL);
    CHECK(strstr(ff_last_error(), "mse_loss: shapes 2 and 4 do not broadcast") != NULL);
    release_all((ff_tensor *[]){in[0], in[1], b, m, bad}, 5);
}
