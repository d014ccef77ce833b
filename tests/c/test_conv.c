/*
 * test_conv.c: the nn ops (linear, conv2d, pools, batch_norm, layer_norm,
 * dropout) against naive references, and their backward against central
 * finite differences of L = Σ y·r for a fixed random r, through ff_apply
 * and ff_backward as autograd runs them.
 */
#include <string.h>
#include "harness.h"

/* ---- tensors ---- */

static ff_tensor *randn(const int64_t *shape, int ndim, uint64_t seed)
{
    ff_rng g;
    ff_rng_seed(&g, seed);
    ff_tensor *t = ff_tensor_empty(shape, ndim);
    if (t)
        ff_randn_(t, &g, 0.0, 1.0);
    return t;
}

static ff_tensor *randn4(int64_t a, int64_t b, int64_t c, int64_t d, uint64_t seed)
{
    int64_t s[4] = {a, b, c, d};
    return randn(s, 4, seed);
}

static ff_tensor *randn1(int64_t a, uint64_t seed)
{
    return randn(&a, 1, seed);
}

/* Pointer to element `flat` (row-major over t's shape) of any layout. */
static float *elem(ff_tensor *t, int64_t flat)
{
    int64_t idx[FF_MAX_DIMS];
    for (int d = t->ndim - 1; d >= 0; d--) {
        idx[d] = flat % t->shape[d];
        flat /= t->shape[d];
    }
    return ff_tensor_data(t) + ff_tensor_offset_of(t, idx);
}

static double dot_all(ff_tensor *a, ff_tensor *b)
{
    double s = 0;
    for (int64_t i = 0; i < ff_tensor_numel(a); i++)
        s += (double)*elem(a, i) * *elem(b, i);
    return s;
}

/* ---- finite differences ---- */

typedef struct {
    ff_opcode op;
    ff_tensor **in;
    int n;
    ff_params p;
    const ff_rng *rng_state; /* restored before every run (dropout's mask) */
} op_call;

static ff_tensor *run(const op_call *c)
{
    ff_params p = c->p;
    ff_rng g;
    if (c->rng_state) {
        g = *c->rng_state;
        p.rng = &g;
    }
    return ff_apply(c->op, c->in, c->n, &p, NULL);
}

/* L(in) = Σ run(in)·r, without recording. */
static double loss(const op_call *c, ff_tensor *r)
{
    bool was = ff_set_grad_enabled(false);
    ff_tensor *y = run(c);
    ff_set_grad_enabled(was);
    if (!y)
        return NAN;
    double s = dot_all(y, r);
    ff_tensor_release(y);
    return s;
}

/* Analytic gradients of every non-NULL input against central differences
 * with step h; returns the worst |analytic - numeric| / (atol + rtol·|numeric|). */
static double gradcheck(const op_call *c, double h, double atol, double rtol)
{
    for (int k = 0; k < c->n; k++)
        if (c->in[k])
            ff_tensor_set_requires_grad(c->in[k], true);
    ff_tensor *y = run(c);
    if (!y)
        return INFINITY;
    ff_tensor *r = randn(y->shape, y->ndim, 99);
    ff_status st = ff_backward(y, r, false);
    ff_tensor_release(y);
    double worst = st == FF_OK ? 0 : INFINITY;
    for (int k = 0; k < c->n && st == FF_OK; k++) {
        ff_tensor *t = c->in[k];
        if (!t)
            continue;
        ff_tensor *g = ff_tensor_grad(t);
        if (!g || !ff_shape_equal(g, t)) {
            worst = INFINITY;
            break;
        }
        int64_t n = ff_tensor_numel(t), step = n > 60 ? n / 60 + 1 : 1;
        for (int64_t i = 0; i < n; i += step) {
            float *v = elem(t, i), v0 = *v;
            *v = v0 + (float)h;
            double fp = loss(c, r);
            *v = v0 - (float)h;
            double fm = loss(c, r);
            *v = v0;
            double num = (fp - fm) / (2 * h), ana = *elem(g, i);
            double e = fabs(num - ana) / (atol + rtol * fabs(num));
            if (e > worst)
                worst = e;
            if (e > 1)
                fprintf(stderr, "  %s input %d element %lld: analytic %g numeric %g\n",
                        ff_ops[c->op].name, k + 1, (long long)i, ana, num);
        }
    }
    for (int k = 0; k < c->n; k++)
        if (c->in[k]) {
            ff_tensor_set_grad(c->in[k], NULL);
            ff_tensor_set_requires_grad(c->in[k], false);
        }
    ff_tensor_release(r);
    return worst;
}

static ff_params conv_params(int s, int pad, int dil, int groups)
{
    ff_params p = {0};
    p.i[0] = p.i[1] = s;
    p.i[2] = p.i[3] = pad;
    p.i[4] = p.i[5] = dil;
    p.i[6] = groups;
    return p;
}

/* ---- conv2d ---- */

/* y by the definition, in double. */
static double naive_conv_err(ff_tensor *x, ff_tensor *w, ff_tensor *b, const ff_params *p,
                             ff_tensor *y)
{
    int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    int64_t O = w->shape[0], kh = w->shape[2], kw = w->shape[3], G = p->i[6];
    int64_t Cg = C / G, Og = O / G, OH = y->shape[2], OW = y->shape[3];
    double worst = 0;
    for (int64_t n = 0; n < N; n++)
        for (int64_t o = 0; o < O; o++)
            for (int64_t i = 0; i < OH; i++)
                for (int64_t j = 0; j < OW; j++) {
                    double s = b ? *elem(b, o) : 0;
                    for (int64_t c = 0; c < Cg; c++)
                        for (int64_t u = 0; u < kh; u++)
                            for (int64_t v = 0; v < kw; v++) {
                                int64_t ih = i * p->i[0] - p->i[2] + u * p->i[4];
                                int64_t iw = j * p->i[1] - p->i[3] + v * p->i[5];
                                if (ih < 0 || ih >= H || iw < 0 || iw >= W)
                                    continue;
                                int64_t ci = (o / Og) * Cg + c;
                                s += (double)*elem(x, ((n * C + ci) * H + ih) * W + iw) *
                                     *elem(w, ((o * Cg + c) * kh + u) * kw + v);
                            }
                    double e = fabs(s - *elem(y, ((n * O + o) * OH + i) * OW + j));
                    worst = e > worst ? e : worst;
                }
    return worst;
}

typedef struct {
    int64_t N, C, H, W, O, k;
    int s, pad, dil, groups;
    bool bias;
} conv_case;

static const conv_case conv_cases[] = {
    {2, 3, 7, 6, 4, 3, 1, 0, 1, 1, true},  /* plain */
    {2, 3, 7, 6, 4, 3, 2, 1, 1, 1, true},  /* stride 2, padding 1 */
    {1, 2, 9, 8, 3, 3, 1, 2, 2, 1, false}, /* dilation 2, no bias */
    {2, 4, 6, 6, 6, 3, 1, 1, 1, 2, true},  /* groups 2 */
    {2, 4, 6, 5, 4, 3, 1, 1, 1, 4, true},  /* depthwise */
    {1, 3, 7, 7, 6, 3, 2, 1, 1, 3, false}, /* depthwise x2, stride 2 */
    {2, 4, 5, 5, 3, 1, 1, 0, 1, 1, true},  /* 1x1: no im2col */
    {1, 2, 5, 6, 2, 2, 3, 1, 1, 1, true},  /* even kernel, stride 3 */
    {2, 2, 1, 5, 3, 3, 1, 1, 1, 1, true},  /* same padding, one-row input */
    {1, 2, 2, 6, 2, 5, 1, 2, 1, 1, false}, /* same padding, 5x5 kernel on 2x6 */
};

TEST(conv2d_matches_definition)
{
    for (size_t t = 0; t < sizeof conv_cases / sizeof conv_cases[0]; t++) {
        const conv_case *cc = &conv_cases[t];
        ff_params p = conv_params(cc->s, cc->pad, cc->dil, cc->groups);
        ff_tensor *x = randn4(cc->N, cc->C, cc->H, cc->W, 1 + t);
        ff_tensor *w = randn4(cc->O, cc->C / cc->groups, cc->k, cc->k, 2 + t);
        ff_tensor *b = cc->bias ? randn1(cc->O, 3 + t) : NULL;
        ff_tensor *in[3] = {x, w, b};
        ff_tensor *y = ff_apply(FF_OP_CONV2D, in, 3, &p, NULL);
        CHECK(y != NULL);
        if (y)
            CHECK(naive_conv_err(x, w, b, &p, y) < 1e-4);
        ff_tensor_release(y), ff_tensor_release(x), ff_tensor_release(w), ff_tensor_release(b);
    }
}

TEST(conv2d_gradients)
{
    for (size_t t = 0; t < sizeof conv_cases / sizeof conv_cases[0]; t++) {
        const conv_case *cc = &conv_cases[t];
        op_call c = {FF_OP_CONV2D, NULL, 3, conv_params(cc->s, cc->pad, cc->dil, cc->groups), NULL};
        ff_tensor *in[3] = {randn4(cc->N, cc->C, cc->H, cc->W, 10 + t),
                            randn4(cc->O, cc->C / cc->groups, cc->k, cc->k, 20 + t),
                            cc->bias ? randn1(cc->O, 30 + t) : NULL};
        c.in = in;
        double e = gradcheck(&c, 1e-2, 2e-3, 2e-2);
        if (e > 1)
            fprintf(stderr, "  conv case %zu: error ratio %g\n", t, e);
        CHECK(e <= 1);
        for (int k = 0; k < 3; k++)
            ff_tensor_release(in[k]);
    }
}

/* A larger batch and larger planes, for both ways of computing dx (stride 1:
 * a convolution of gy; stride 2: col2im), with dw accumulated over 7 samples. */
TEST(conv2d_larger_batch)
{
    ff_params ps[2] = {conv_params(1, 1, 1, 1), conv_params(2, 1, 1, 1)}; /* dx as conv; col2im */
    int64_t hw[2] = {40, 80};
    for (int t = 0; t < 2; t++) {
        ff_tensor *in[3] = {randn4(7, 2, hw[t], hw[t], 40 + t), randn4(3, 2, 3, 3, 41), randn1(3, 42)};
        ff_tensor *y = ff_apply(FF_OP_CONV2D, in, 3, &ps[t], NULL);
        CHECK(y != NULL);
        if (y)
            CHECK(naive_conv_err(in[0], in[1], in[2], &ps[t], y) < 1e-4);
        ff_tensor_release(y);
        op_call c = {FF_OP_CONV2D, in, 3, ps[t], NULL};
        CHECK(gradcheck(&c, 1e-2, 5e-3, 2e-2) <= 1);
        for (int k = 0; k < 3; k++)
            ff_tensor_release(in[k]);
    }
}

TEST(conv2d_noncontiguous_input)
{
    ff_tensor *base = randn4(2, 3, 6, 7, 5);
    ff_tensor *x = ff_tensor_transpose(base, 2, 3); /* 2x3x7x6, not contiguous */
    ff_tensor *w = randn4(4, 3, 3, 3, 6), *b = randn1(4, 7);
    ff_params p = conv_params(1, 1, 1, 1);
    ff_tensor *in[3] = {x, w, b};
    ff_tensor *y = ff_apply(FF_OP_CONV2D, in, 3, &p, NULL);
    REQUIRE(y != NULL);
    CHECK(naive_conv_err(x, w, b, &p, y) < 1e-4);
    ff_tensor_release(y);
    op_call c = {FF_OP_CONV2D, in, 3, p, NULL};
    CHECK(gradcheck(&c, 1e-2, 2e-3, 2e-2) <= 1);
    ff_tensor_release(x), ff_tensor_release(base), ff_tensor_release(w), ff_tensor_release(b);
}

TEST(conv2d_errors)
{
    ff_tensor *x = randn4(1, 3, 5, 5, 1), *w = randn4(4, 2, 3, 3, 2);
    ff_tensor *in[3] = {x, w, NULL};
    ff_params p = conv_params(1, 0, 1, 1);
    CHECK(ff_apply(FF_OP_CONV2D, in, 3, &p, NULL) == NULL);
    CHECK(strstr(ff_last_error(), "conv2d: weight has shape 4x2x3x3, expected 4x3x3x3") != NULL);
    p = conv_params(1, 0, 1, 2);
    CHECK(ff_apply(FF_OP_CONV2D, in, 3, &p, NULL) == NULL);
    CHECK(strstr(ff_last_error(), "not divisible by groups") != NULL);
    ff_tensor_release(w);
    w = randn4(4, 3, 7, 7, 2);
    in[1] = w;
    p = conv_params(1, 0, 1, 1);
    CHECK(ff_apply(FF_OP_CONV2D, in, 3, &p, NULL) == NULL);
    CHECK(strstr(ff_last_error(), "output size") != NULL);
    p = conv_params(0, 0, 1, 1);
    CHECK(ff_apply(FF_OP_CONV2D, in, 3, &p, NULL) == NULL);
    CHECK(strstr(ff_last_error(), "stride") != NULL);
    ff_tensor_release(x), ff_tensor_release(w);
}

/* ---- linear ---- */

TEST(linear_values_and_gradients)
{
    int64_t xs[3] = {2, 3, 5}, ws[2] = {4, 5};
    ff_tensor *x = randn(xs, 3, 1), *w = randn(ws, 2, 2), *b = randn1(4, 3);
    ff_tensor *in[3] = {x, w, b};
    ff_params p = {0};
    ff_tensor *y = ff_apply(FF_OP_LINEAR, in, 3, &p, NULL);
    REQUIRE(y != NULL);
    CHECK(y->ndim == 3 && y->shape[2] == 4);
    double worst = 0;
    for (int64_t r = 0; r < 6; r++)
        for (int64_t o = 0; o < 4; o++) {
            double s = *elem(b, o);
            for (int64_t i = 0; i < 5; i++)
                s += (double)*elem(x, r * 5 + i) * *elem(w, o * 5 + i);
            double e = fabs(s - *elem(y, r * 4 + o));
            worst = e > worst ? e : worst;
        }
    CHECK(worst < 1e-5);
    ff_tensor_release(y);
    op_call c = {FF_OP_LINEAR, in, 3, p, NULL};
    CHECK(gradcheck(&c, 1e-2, 1e-3, 1e-2) <= 1);
    in[2] = NULL; /* no bias */
    CHECK(gradcheck(&c, 1e-2, 1e-3, 1e-2) <= 1);
    ff_tensor *xt = ff_tensor_transpose(w, 0, 1); /* a transposed 2-D input, 5x4 */
    ff_tensor *w2 = randn(ws, 2, 4);
    ff_tensor *w3 = ff_tensor_transpose(w2, 0, 1); /* 5x4 weight: out 5, in 4 */
    ff_tensor *in2[3] = {xt, w3, NULL};
    op_call c2 = {FF_OP_LINEAR, in2, 3, p, NULL};
    CHECK(gradcheck(&c2, 1e-2, 1e-3, 1e-2) <= 1);
    ff_tensor_release(xt), ff_tensor_release(w2), ff_tensor_release(w3);
    ff_tensor_release(x), ff_tensor_release(w), ff_tensor_release(b);
}

/* ---- pools ---- */

static ff_params pool_params(int k, int s, int pad)
{
    ff_params p = {0};
    p.i[0] = p.i[1] = k;
    p.i[2] = p.i[3] = s;
    p.i[4] = p.i[5] = pad;
    return p;
}

TEST(pool_values)
{
    /* 1x1x4x4 of 0..15; 2x2 max pool stride 2 picks 5, 7, 13, 15 */
    ff_tensor *a = ff_tensor_arange(0, 16, 1);
    int64_t s[4] = {1, 1, 4, 4};
    ff_tensor *x = ff_tensor_view(a, s, 4);
    ff_tensor *in[1] = {x};
    ff_params p = pool_params(2, 2, 0);
    ff_tensor *y = ff_apply(FF_OP_MAX_POOL2D, in, 1, &p, NULL);
    REQUIRE(y != NULL);
    CHECK(*elem(y, 0) == 5 && *elem(y, 1) == 7 && *elem(y, 2) == 13 && *elem(y, 3) == 15);
    ff_tensor_release(y);
    /* avg 3x3 stride 1 padding 1: corner = (0+1+4+5)/9 */
    p = pool_params(3, 1, 1);
    y = ff_apply(FF_OP_AVG_POOL2D, in, 1, &p, NULL);
    REQUIRE(y != NULL);
    CHECK_NEAR(*elem(y, 0), 10.0 / 9, 1e-6);
    CHECK_NEAR(*elem(y, 5), 45.0 / 9, 1e-6);
    ff_tensor_release(y);
    /* adaptive to 3x3 over 4: windows [0,2) [1,3) [2,4) */
    p = (ff_params){0};
    p.i[0] = p.i[1] = 3;
    y = ff_apply(FF_OP_ADAPTIVE_AVG_POOL2D, in, 1, &p, NULL);
    REQUIRE(y != NULL);
    CHECK_NEAR(*elem(y, 0), (0 + 1 + 4 + 5) / 4.0, 1e-6);
    CHECK_NEAR(*elem(y, 4), (5 + 6 + 9 + 10) / 4.0, 1e-6);
    ff_tensor_release(y);
    ff_tensor_release(x), ff_tensor_release(a);
}

TEST(pool_gradients)
{
    ff_tensor *x = randn4(2, 3, 7, 6, 8);
    ff_tensor *in[1] = {x};
    ff_params ps[] = {pool_params(2, 2, 0), pool_params(3, 2, 1), pool_params(3, 1, 1),
                      pool_params(2, 3, 1)};
    for (size_t i = 0; i < sizeof ps / sizeof ps[0]; i++) {
        op_call c = {FF_OP_MAX_POOL2D, in, 1, ps[i], NULL};
        CHECK(gradcheck(&c, 1e-3, 1e-3, 1e-2) <= 1);
        c.op = FF_OP_AVG_POOL2D;
        CHECK(gradcheck(&c, 1e-2, 1e-3, 1e-2) <= 1);
    }
    int64_t sizes[][2] = {{1, 1}, {3, 2}, {4, 4}, {9, 5}};
    for (size_t i = 0; i < 4; i++) {
        ff_params p = {0};
        p.i[0] = sizes[i][0], p.i[1] = sizes[i][1];
        op_call c = {FF_OP_ADAPTIVE_AVG_POOL2D, in, 1, p, NULL};
        CHECK(gradcheck(&c, 1e-2, 1e-3, 1e-2) <= 1);
    }
    ff_tensor_release(x);
}

/* ---- batch_norm ---- */

static ff_params bn_params(bool training, ff_tensor *rm, ff_tensor *rv)
{
    ff_params p = {0};
    p.i[0] = training;
    p.f[0] = 0.1, p.f[1] = 1e-5;
    p.aux[0] = rm, p.aux[1] = rv;
    return p;
}

TEST(batch_norm_running_stats)
{
    /* channel values {1, 2, 3, 6}: mean 3, biased var 3.5, unbiased 14/3 */
    float data[8] = {1, 10, 2, 20, 3, 30, 6, 60};
    int64_t s[2] = {4, 2};
    ff_tensor *x = ff_tensor_from_data(data, s, 2);
    ff_tensor *rm = ff_tensor_zeros(&s[1], 1), *rv = ff_tensor_ones(&s[1], 1);
    ff_tensor *in[3] = {x, NULL, NULL};
    ff_params p = bn_params(true, rm, rv);
    ff_tensor *y = ff_apply(FF_OP_BATCH_NORM, in, 3, &p, NULL);
    REQUIRE(y != NULL);
    CHECK_NEAR(*elem(rm, 0), 0.3, 1e-6);
    CHECK_NEAR(*elem(rm, 1), 3.0, 1e-5);
    CHECK_NEAR(*elem(rv, 0), 0.9 + 0.1 * 14.0 / 3, 1e-6);
    CHECK_NEAR(*elem(y, 0), (1 - 3) / sqrt(3.5 + 1e-5), 1e-5);
    ff_tensor_release(y);
    p = bn_params(false, rm, rv); /* eval: (x - 0.3)/sqrt(rv + eps) */
    y = ff_apply(FF_OP_BATCH_NORM, in, 3, &p, NULL);
    REQUIRE(y != NULL);
    CHECK_NEAR(*elem(y, 0), (1 - 0.3) / sqrt(0.9 + 0.1 * 14.0 / 3 + 1e-5), 1e-5);
    ff_tensor_release(y);
    p = bn_params(false, NULL, NULL);
    CHECK(ff_apply(FF_OP_BATCH_NORM, in, 3, &p, NULL) == NULL);
    CHECK(strstr(ff_last_error(), "eval mode needs running_mean") != NULL);
    ff_tensor_release(x), ff_tensor_release(rm), ff_tensor_release(rv);
}

TEST(batch_norm_gradients)
{
    int64_t s2[2] = {5, 3};
    ff_tensor *xs[3] = {randn(s2, 2, 1), randn4(3, 4, 3, 2, 2), NULL};
    int64_t s3[3] = {2, 4, 5};
    xs[2] = randn(s3, 3, 3);
    for (int t = 0; t < 3; t++) {
        int64_t C = xs[t]->shape[1];
        ff_tensor *w = randn1(C, 4), *b = randn1(C, 5);
        ff_tensor *rm = randn1(C, 6), *rv = ff_tensor_full(&C, 1, 1.5f);
        for (int training = 0; training <= 1; training++) {
            ff_tensor *in[3] = {xs[t], w, b};
            op_call c = {FF_OP_BATCH_NORM, in, 3, bn_params(training, rm, rv), NULL};
            CHECK(gradcheck(&c, 1e-2, 2e-3, 2e-2) <= 1);
            in[1] = in[2] = NULL;
            CHECK(gradcheck(&c, 1e-2, 2e-3, 2e-2) <= 1);
        }
        ff_tensor_release(w), ff_tensor_release(b), ff_tensor_release(rm), ff_tensor_release(rv);
        ff_tensor_release(xs[t]);
    }
}

/* ---- layer_norm ---- */

TEST(layer_norm_values_and_gradients)
{
    int64_t xs[3] = {2, 3, 4}, ws[2] = {3, 4};
    ff_tensor *x = randn(xs, 3, 1), *w = randn(ws, 2, 2), *b = randn(ws, 2, 3);
    ff_params p = {0};
    p.i[0] = 2, p.f[0] = 1e-5;
    ff_tensor *in[3] = {x, NULL, NULL};
    ff_tensor *y = ff_apply(FF_OP_LAYER_NORM, in, 3, &p, NULL);
    REQUIRE(y != NULL);
    double m = 0, v = 0; /* first row of 12 values: mean 0, variance 1 after */
    for (int i = 0; i < 12; i++)
        m += *elem(y, i) / 12.0;
    for (int i = 0; i < 12; i++)
        v += (*elem(y, i) - m) * (*elem(y, i) - m) / 12.0;
    CHECK_NEAR(m, 0, 1e-6);
    CHECK_NEAR(v, 1, 1e-3);
    ff_tensor_release(y);
    in[1] = w, in[2] = b;
    op_call c = {FF_OP_LAYER_NORM, in, 3, p, NULL};
    CHECK(gradcheck(&c, 1e-2, 2e-3, 2e-2) <= 1);
    c.p.i[0] = 1;
    ff_tensor *w1 = randn1(4, 7);
    in[1] = w1, in[2] = NULL;
    CHECK(gradcheck(&c, 1e-2, 2e-3, 2e-2) <= 1);
    ff_tensor_release(w1);
    ff_tensor_release(x), ff_tensor_release(w), ff_tensor_release(b);
}

/* ---- dropout ---- */

TEST(dropout_mask_and_gradient)
{
    int64_t s = 10000;
    ff_tensor *x = ff_tensor_ones(&s, 1);
    ff_rng g;
    ff_rng_seed(&g, 42);
    ff_params p = {0};
    p.f[0] = 0.3, p.i[0] = 1;
    p.rng = &g;
    ff_tensor *in[1] = {x};
    ff_tensor *y = ff_apply(FF_OP_DROPOUT, in, 1, &p, NULL);
    REQUIRE(y != NULL);
    int64_t kept = 0;
    for (int64_t i = 0; i < s; i++) {
        float v = *elem(y, i);
        CHECK(v == 0 || fabs(v - 1 / 0.7) < 1e-6);
        kept += v != 0;
    }
    CHECK(kept > 6800 && kept < 7200);
    ff_tensor_release(y);
    ff_tensor *x2 = randn4(2, 3, 4, 5, 3);
    ff_rng g2;
    ff_rng_seed(&g2, 7);
    in[0] = x2;
    op_call c = {FF_OP_DROPOUT, in, 1, p, &g2};
    CHECK(gradcheck(&c, 1e-2, 1e-3, 1e-2) <= 1);
    c.p.i[0] = 0; /* eval: identity */
    CHECK(gradcheck(&c, 1e-2, 1e-3, 1e-2) <= 1);
    ff_tensor_release(x), ff_tensor_release(x2);
}
