/* test_elementwise.c: broadcasting, binary and unary ops, clamp and where,
 * against double-precision reference loops written here. */
#include <string.h>
#include "harness.h"

/* ---- helpers ---- */

/* Values in -3..3 by 0.5 (ties, zeros and negatives), from a fixed LCG. */
static ff_tensor *filled(const int64_t *shape, int ndim, uint32_t seed)
{
    ff_tensor *t = ff_tensor_empty(shape, ndim);
    float *d = ff_tensor_data(t);
    for (int64_t i = 0; i < ff_tensor_numel(t); i++) {
        seed = seed * 1664525u + 1013904223u;
        d[i] = (float)((int)(seed >> 24) % 13 - 6) * 0.5f;
    }
    return t;
}

static ff_tensor *from(const float *v, const int64_t *shape, int ndim)
{
    return ff_tensor_from_data(v, shape, ndim);
}

/* Row-major odometer; false after the last index. */
static bool next_index(int64_t *idx, const int64_t *shape, int ndim)
{
    for (int i = ndim - 1; i >= 0; i--) {
        if (++idx[i] < shape[i])
            return true;
        idx[i] = 0;
    }
    return false;
}

/* Element of t at the broadcast index idx (of rank ndim >= t's). */
static float at_broadcast(const ff_tensor *t, const int64_t *idx, int ndim)
{
    int64_t ti[FF_MAX_DIMS];
    int lead = ndim - t->ndim;
    for (int i = 0; i < t->ndim; i++)
        ti[i] = t->shape[i] == 1 ? 0 : idx[lead + i];
    return ff_tensor_data(t)[ff_tensor_offset_of(t, ti)];
}

/* float result vs double reference: NaN matches NaN, infinities match
 * exactly, other values to a relative 1e-6. */
static bool same(float got, double want)
{
    if (isnan(want) || isnan(got))
        return isnan(want) && isnan(got);
    if (isinf(want) || isinf(got))
        return (double)got == want;
    return fabs((double)got - want) <= 1e-6 * fmax(1.0, fabs(want));
}

static double ref_binary(ff_binop op, double x, double y)
{
    switch (op) {
    case FF_ADD: return x + y;
    case FF_SUB: return x - y;
    case FF_MUL: return x * y;
    case FF_DIV: return x / y;
    case FF_POW: return pow(x, y);
    case FF_MAXIMUM: return isnan(x) || isnan(y) ? NAN : x > y ? x : y;
    case FF_MINIMUM: return isnan(x) || isnan(y) ? NAN : x < y ? x : y;
    case FF_EQ: return x == y;
    case FF_NE: return x != y;
    case FF_LT: return x < y;
    case FF_LE: return x <= y;
    case FF_GT: return x > y;
    case FF_GE: return x >= y;
    default: return NAN;
    }
}

static double ref_unary(ff_unop op, double x)
{
    switch (op) {
    case FF_NEG: return -x;
    case FF_EXP: return exp(x);
    case FF_LOG: return log(x);
    case FF_SQRT: return sqrt(x);
    case FF_ABS: return fabs(x);
    case FF_SIGN: return isnan(x) ? NAN : x > 0 ? 1 : x < 0 ? -1 : 0;
    default: return NAN;
    }
}

/* out must be a op b, with the shape `shape`; returns the number of wrong
 * elements (the shape counts as one). */
static int check_binary_result(ff_binop op, const ff_tensor *out, const ff_tensor *a,
                               const ff_tensor *b, const int64_t *shape, int ndim)
{
    if (!out || out->ndim != ndim || !ff_tensor_is_contiguous(out))
        return 1;
    for (int i = 0; i < ndim; i++)
        if (out->shape[i] != shape[i])
            return 1;
    int bad = 0;
    int64_t idx[FF_MAX_DIMS] = {0};
    if (ff_tensor_numel(out) == 0)
        return 0;
    int64_t k = 0;
    do {
        double want = ref_binary(op, at_broadcast(a, idx, ndim), at_broadcast(b, idx, ndim));
        bad += !same(ff_tensor_data(out)[k++], want);
    } while (next_index(idx, shape, ndim));
    return bad;
}

/* Every binop on (a, b), checked against the reference. */
static int check_all_binops(const ff_tensor *a, const ff_tensor *b, const int64_t *shape,
                            int ndim)
{
    int bad = 0;
    for (int op = 0; op < FF_BINOP_COUNT; op++) {
        ff_tensor *out = ff_binary((ff_binop)op, a, b);
        int wrong = check_binary_result((ff_binop)op, out, a, b, shape, ndim);
        if (wrong)
            fprintf(stderr, "  %s: %d wrong\n", ff_binop_name((ff_binop)op), wrong);
        bad += wrong;
        ff_tensor_release(out);
    }
    return bad;
}

/* ---- broadcasting ---- */

TEST(broadcast_shape_rules)
{
    int64_t s234[3] = {2, 3, 4}, s4[1] = {4}, s31[2] = {3, 1}, s14[2] = {1, 4},
            s23[2] = {2, 3}, s43[2] = {4, 3};
    ff_tensor *a = ff_tensor_zeros(s234, 3), *v = ff_tensor_zeros(s4, 1),
              *c = ff_tensor_zeros(s31, 2), *r = ff_tensor_zeros(s14, 2),
              *sc = ff_tensor_scalar(1), *x = ff_tensor_zeros(s23, 2),
              *y = ff_tensor_zeros(s43, 2);
    int64_t out[FF_MAX_DIMS];
    int nd = -1;
    CHECK(ff_broadcast_shape("t", a, a, out, &nd) == FF_OK && nd == 3 && out[2] == 4);
    CHECK(ff_broadcast_shape("t", sc, a, out, &nd) == FF_OK && nd == 3 && out[0] == 2 &&
          out[1] == 3 && out[2] == 4);
    CHECK(ff_broadcast_shape("t", a, sc, out, &nd) == FF_OK && nd == 3);
    CHECK(ff_broadcast_shape("t", sc, sc, out, &nd) == FF_OK && nd == 0);
    CHECK(ff_broadcast_shape("t", v, a, out, &nd) == FF_OK && nd == 3 && out[0] == 2);
    CHECK(ff_broadcast_shape("t", c, r, out, &nd) == FF_OK && nd == 2 && out[0] == 3 &&
          out[1] == 4);
    CHECK(ff_broadcast_shape("t", c, a, out, &nd) == FF_OK && nd == 3 && out[1] == 3 &&
          out[2] == 4);
    CHECK(ff_broadcast_shape("t", x, a, out, &nd) == FF_ERR_SHAPE &&
          strstr(ff_last_error(), "2x3 and 2x3x4 do not broadcast (dim 2: 2 vs 3)"));
    CHECK(ff_broadcast_shape("add", x, y, out, &nd) == FF_ERR_SHAPE);
    CHECK(strcmp(ff_last_error(), "add: shapes 2x3 and 4x3 do not broadcast (dim 1: 2 vs 4)") == 0);
    CHECK(ff_broadcast_shape("mul", x, v, out, &nd) == FF_ERR_SHAPE);
    CHECK(strcmp(ff_last_error(), "mul: shapes 2x3 and 4 do not broadcast (dim 2: 3 vs 4)") == 0);
    ff_tensor *ts[] = {a, v, c, r, sc, x, y};
    for (int i = 0; i < 7; i++)
        ff_tensor_release(ts[i]);
}

TEST(binary_broadcast_error_messages)
{
    int64_t s23[2] = {2, 3}, s43[2] = {4, 3}, s3[1] = {5};
    ff_tensor *x = ff_tensor_zeros(s23, 2), *y = ff_tensor_zeros(s43, 2), *z = ff_tensor_zeros(s3, 1);
    CHECK(ff_binary(FF_ADD, x, y) == NULL && ff_last_status() == FF_ERR_SHAPE);
    CHECK(strcmp(ff_last_error(), "add: shapes 2x3 and 4x3 do not broadcast (dim 1: 2 vs 4)") == 0);
    CHECK(ff_binary(FF_GE, z, x) == NULL && strstr(ff_last_error(), "ge: shapes 5 and 2x3") &&
          strstr(ff_last_error(), "dim 2: 5 vs 3"));
    CHECK(ff_binary((ff_binop)99, x, x) == NULL && ff_last_status() == FF_ERR_ARG);
    CHECK(ff_binary_((ff_binop)-1, x, x) == FF_ERR_ARG);
    CHECK(strcmp(ff_binop_name(FF_MAXIMUM), "maximum") == 0 &&
          strcmp(ff_binop_name(FF_ADD), "add") == 0 && strcmp(ff_binop_name(FF_GE), "ge") == 0);
    CHECK(strcmp(ff_binop_name(FF_BINOP_COUNT), "?") == 0);
    ff_tensor_release(x), ff_tensor_release(y), ff_tensor_release(z);
}

/* ---- binary ops in every layout ---- */

TEST(binary_same_shape_contiguous)
{
    int64_t s[3] = {2, 3, 4}, big[1] = {1031}; /* 1031: vector bulk plus a tail */
    ff_tensor *a = filled(s, 3, 1), *b = filled(s, 3, 2);
    CHECK(check_all_binops(a, b, s, 3) == 0);
    ff_tensor *c = filled(big, 1, 3), *d = filled(big, 1, 4);
    CHECK(check_all_binops(c, d, big, 1) == 0);
    /* same element count, shapes differing by size-1 dims: 1x1031 with 1031 */
    int64_t row[2] = {1, 1031};
    ff_tensor *e = ff_tensor_view(c, row, 2);
    CHECK(check_all_binops(e, d, row, 2) == 0);
    ff_tensor_release(a), ff_tensor_release(b), ff_tensor_release(c);
    ff_tensor_release(d), ff_tensor_release(e);
}

TEST(binary_scalar_both_sides)
{
    int64_t s[3] = {2, 3, 4}, big[2] = {3, 1031}, one[1] = {1};
    ff_tensor *a = filled(s, 3, 5), *g = filled(big, 2, 6);
    float vals[] = {2.5f, -1.5f, 0.0f, NAN};
    for (int k = 0; k < 4; k++) {
        ff_tensor *sc = ff_tensor_scalar(vals[k]);
        CHECK(check_all_binops(a, sc, s, 3) == 0); /* t op s */
        CHECK(check_all_binops(sc, a, s, 3) == 0); /* s op t: order matters for sub, div, pow */
        CHECK(check_all_binops(g, sc, big, 2) == 0);
        CHECK(check_all_binops(sc, g, big, 2) == 0);
        ff_tensor_release(sc);
    }
    /* a one-element rank-1 tensor is a scalar too */
    ff_tensor *o = ff_tensor_full(one, 1, 3.0f);
    CHECK(check_all_binops(o, a, s, 3) == 0);
    /* rank-0 with rank-0 stays rank 0 */
    ff_tensor *x = ff_tensor_scalar(2), *y = ff_tensor_scalar(5);
    CHECK(check_all_binops(x, y, NULL, 0) == 0);
    ff_tensor_release(a), ff_tensor_release(g), ff_tensor_release(o);
    ff_tensor_release(x), ff_tensor_release(y);
}

TEST(binary_row_col_and_leading_dims)
{
    int64_t m[2] = {5, 1031}, row[1] = {1031}, col[2] = {5, 1}, r2[2] = {1, 7}, c2[2] = {6, 1},
            o2[2] = {6, 7}, s234[3] = {2, 3, 4}, s4[1] = {4}, s31[2] = {3, 1}, s134[3] = {1, 3, 4},
            s211[3] = {2, 1, 1};
    ff_tensor *a = filled(m, 2, 7), *r = filled(row, 1, 8), *c = filled(col, 2, 9);
    CHECK(check_all_binops(a, r, m, 2) == 0);  /* row vector: contiguous runs */
    CHECK(check_all_binops(r, a, m, 2) == 0);
    CHECK(check_all_binops(a, c, m, 2) == 0);  /* column vector: a scalar per run */
    CHECK(check_all_binops(c, a, m, 2) == 0);
    ff_tensor *x = filled(r2, 2, 10), *y = filled(c2, 2, 11);
    CHECK(check_all_binops(x, y, o2, 2) == 0); /* outer: 1x7 with 6x1 */
    ff_tensor *t = filled(s234, 3, 12), *v = filled(s4, 1, 13), *w = filled(s31, 2, 14),
              *u = filled(s134, 3, 15), *z = filled(s211, 3, 16);
    CHECK(check_all_binops(t, v, s234, 3) == 0); /* missing leading dims */
    CHECK(check_all_binops(w, t, s234, 3) == 0);
    CHECK(check_all_binops(u, z, s234, 3) == 0);
    ff_tensor *sc = ff_tensor_scalar(-2);
    CHECK(check_all_binops(sc, z, s211, 3) == 0); /* rank 0 with rank 3 */
    ff_tensor *ts[] = {a, r, c, x, y, t, v, w, u, z, sc};
    for (int i = 0; i < 11; i++)
        ff_tensor_release(ts[i]);
}

TEST(binary_non_contiguous_operands)
{
    int64_t s[2] = {4, 3}, s34[2] = {3, 4}, big[3] = {3, 5, 7};
    ff_tensor *base = filled(s, 2, 17), *b = filled(s34, 2, 18);
    ff_tensor *at = ff_tensor_transpose(base, 0, 1); /* 3x4 view, strides (1, 3) */
    CHECK(check_all_binops(at, b, s34, 2) == 0);
    CHECK(check_all_binops(b, at, s34, 2) == 0);
    CHECK(check_all_binops(at, at, s34, 2) == 0);
    ff_tensor *sc = ff_tensor_scalar(1.5f);
    CHECK(check_all_binops(at, sc, s34, 2) == 0);
    ff_tensor *g = filled(big, 3, 19);
    int perm[3] = {2, 0, 1};
    ff_tensor *p = ff_tensor_permute(g, perm, 3);   /* 7x3x5 */
    ff_tensor *n = ff_tensor_narrow(g, 2, 1, 5);    /* 3x5x5 */
    int64_t ps[3] = {7, 3, 5}, ns[3] = {3, 5, 5}, row5[1] = {5};
    ff_tensor *q = filled(ps, 3, 20), *r5 = filled(row5, 1, 21);
    CHECK(check_all_binops(p, q, ps, 3) == 0);
    CHECK(check_all_binops(n, r5, ns, 3) == 0);
    CHECK(check_all_binops(r5, n, ns, 3) == 0);
    /* an expanded (stride-0) operand */
    int64_t e[2] = {3, 4};
    ff_tensor *r4 = filled(s34 + 1, 1, 22), *ex = ff_tensor_expand(r4, e, 2);
    CHECK(check_all_binops(ex, at, s34, 2) == 0);
    ff_tensor *ts[] = {base, b, at, sc, g, p, n, q, r5, r4, ex};
    for (int i = 0; i < 11; i++)
        ff_tensor_release(ts[i]);
}

TEST(binary_empty_tensors)
{
    int64_t s03[2] = {0, 3}, s3[1] = {3};
    ff_tensor *a = ff_tensor_zeros(s03, 2), *b = filled(s3, 1, 23), *sc = ff_tensor_scalar(1);
    ff_tensor *c = ff_binary(FF_ADD, a, b), *d = ff_binary(FF_MUL, sc, a);
    REQUIRE(c && d);
    CHECK(c->ndim == 2 && c->shape[0] == 0 && c->shape[1] == 3 && ff_tensor_numel(d) == 0);
    CHECK(ff_binary_(FF_ADD, a, b) == FF_OK);
    ff_tensor_release(a), ff_tensor_release(b), ff_tensor_release(sc);
    ff_tensor_release(c), ff_tensor_release(d);
}

/* ---- specific values ---- */

TEST(binary_reference_values)
{
    int64_t s[1] = {4};
    float xa[4] = {2, -3, 0.5f, 4}, xb[4] = {3, 2, -2, 0.5f};
    ff_tensor *a = from(xa, s, 1), *b = from(xb, s, 1);
    struct { ff_binop op; float want[4]; } cases[] = {
        {FF_ADD, {5, -1, -1.5f, 4.5f}},   {FF_SUB, {-1, -5, 2.5f, 3.5f}},
        {FF_MUL, {6, -6, -1, 2}},         {FF_DIV, {2.0f / 3, -1.5f, -0.25f, 8}},
        {FF_POW, {8, 9, 4, 2}},           {FF_MAXIMUM, {3, 2, 0.5f, 4}},
        {FF_MINIMUM, {2, -3, -2, 0.5f}},  {FF_EQ, {0, 0, 0, 0}},
        {FF_NE, {1, 1, 1, 1}},            {FF_LT, {1, 1, 0, 0}},
        {FF_LE, {1, 1, 0, 0}},            {FF_GT, {0, 0, 1, 1}},
        {FF_GE, {0, 0, 1, 1}},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        ff_tensor *c = ff_binary(cases[k].op, a, b);
        REQUIRE(c);
        for (int i = 0; i < 4; i++)
            CHECK_NEAR(ff_tensor_data(c)[i], cases[k].want[i], 1e-6);
        ff_tensor_release(c);
    }
    ff_tensor *e = ff_binary(FF_LE, a, a), *f = ff_binary(FF_LT, a, a);
    CHECK(ff_tensor_data(e)[1] == 1.0f && ff_tensor_data(f)[1] == 0.0f);
    ff_tensor_release(a), ff_tensor_release(b), ff_tensor_release(e), ff_tensor_release(f);
}

TEST(binary_nan_handling)
{
    int64_t s[1] = {3};
    float xa[3] = {NAN, 1, NAN}, xb[3] = {1, NAN, NAN};
    ff_tensor *a = from(xa, s, 1), *b = from(xb, s, 1), *n = ff_tensor_scalar(NAN),
              *one = ff_tensor_scalar(1);
    ff_tensor *mx = ff_binary(FF_MAXIMUM, a, b), *mn = ff_binary(FF_MINIMUM, a, b);
    for (int i = 0; i < 3; i++)
        CHECK(isnan(ff_tensor_data(mx)[i]) && isnan(ff_tensor_data(mn)[i]));
    ff_tensor *eq = ff_binary(FF_EQ, a, b), *ne = ff_binary(FF_NE, a, b),
              *lt = ff_binary(FF_LT, a, b), *ge = ff_binary(FF_GE, a, b);
    for (int i = 0; i < 3; i++) {
        CHECK(ff_tensor_data(eq)[i] == 0.0f && ff_tensor_data(ne)[i] == 1.0f);
        CHECK(ff_tensor_data(lt)[i] == 0.0f && ff_tensor_data(ge)[i] == 0.0f);
    }
    /* scalar NaN on either side of maximum/minimum */
    ff_tensor *m1 = ff_binary(FF_MAXIMUM, one, n), *m2 = ff_binary(FF_MINIMUM, n, one);
    CHECK(isnan(ff_tensor_data(m1)[0]) && isnan(ff_tensor_data(m2)[0]));
    int64_t big[1] = {40};
    ff_tensor *z = ff_tensor_full(big, 1, 5.0f), *m3 = ff_binary(FF_MAXIMUM, z, n),
              *m4 = ff_binary(FF_MINIMUM, n, z);
    int ok = 1;
    for (int i = 0; i < 40; i++)
        ok &= isnan(ff_tensor_data(m3)[i]) && isnan(ff_tensor_data(m4)[i]);
    CHECK(ok);
    ff_tensor *ts[] = {a, b, n, one, mx, mn, eq, ne, lt, ge, m1, m2, z, m3, m4};
    for (int i = 0; i < 15; i++)
        ff_tensor_release(ts[i]);
}

TEST(binary_pow_follows_powf)
{
    int64_t s[1] = {8};
    float xa[8] = {-8, 0, 0, 2, -2, INFINITY, 1, NAN}, xb[8] = {1.0f / 3, -1, 0, -INFINITY,
                                                                3, -1, NAN, 0};
    ff_tensor *a = from(xa, s, 1), *b = from(xb, s, 1), *c = ff_binary(FF_POW, a, b);
    REQUIRE(c);
    for (int i = 0; i < 8; i++) {
        float want = powf(xa[i], xb[i]);
        CHECK(isnan(want) ? isnan(ff_tensor_data(c)[i]) : ff_tensor_data(c)[i] == want);
    }
    ff_tensor_release(a), ff_tensor_release(b), ff_tensor_release(c);
}

/* ---- in place ---- */

TEST(binary_inplace_every_op)
{
    int64_t s[2] = {5, 1031}, row[1] = {1031}, col[2] = {5, 1};
    ff_tensor *b = filled(row, 1, 31), *c = filled(col, 2, 32), *sc = ff_tensor_scalar(-1.5f);
    const ff_tensor *rhs[3] = {b, c, sc};
    for (int op = 0; op < FF_BINOP_COUNT; op++) {
        for (int k = 0; k < 3; k++) {
            ff_tensor *a = filled(s, 2, 33), *orig = ff_tensor_clone(a);
            CHECK(ff_binary_((ff_binop)op, a, rhs[k]) == FF_OK);
            CHECK(a->shape[0] == 5 && a->shape[1] == 1031);
            int wrong = check_binary_result((ff_binop)op, a, orig, rhs[k], s, 2);
            if (wrong)
                fprintf(stderr, "  %s_ with rhs %d: %d wrong\n", ff_binop_name((ff_binop)op), k,
                        wrong);
            CHECK(wrong == 0);
            ff_tensor_release(a), ff_tensor_release(orig);
        }
    }
    ff_tensor_release(b), ff_tensor_release(c), ff_tensor_release(sc);
}

TEST(binary_inplace_on_views)
{
    int64_t s[2] = {3, 5}, col[2] = {3, 1};
    ff_tensor *base = filled(s, 2, 41), *orig = ff_tensor_clone(base);
    ff_tensor *v = ff_tensor_narrow(base, 1, 1, 3);  /* columns 2..4 */
    ff_tensor *c = filled(col, 2, 42);
    CHECK(ff_binary_(FF_SUB, v, c) == FF_OK);
    int ok = 1;
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 5; j++) {
            float before = ff_tensor_data(orig)[i * 5 + j], now = ff_tensor_data(base)[i * 5 + j];
            float want = j >= 1 && j <= 3 ? before - ff_tensor_data(c)[i] : before;
            ok &= now == want;
        }
    CHECK(ok);
    /* a transposed view, scalar and row operands */
    ff_tensor *t = ff_tensor_transpose(base, 0, 1);  /* 5x3 */
    ff_tensor *two = ff_tensor_scalar(2), *snap = ff_tensor_clone(base);
    CHECK(ff_binary_(FF_MUL, t, two) == FF_OK);
    ok = 1;
    for (int i = 0; i < 15; i++)
        ok &= ff_tensor_data(base)[i] == 2 * ff_tensor_data(snap)[i];
    CHECK(ok);
    int64_t r3[1] = {3};
    ff_tensor *r = filled(r3, 1, 43), *snap2 = ff_tensor_clone(t);
    CHECK(ff_binary_(FF_MAXIMUM, t, r) == FF_OK);
    int64_t ts[2] = {5, 3};
    ff_tensor *tc = ff_tensor_contiguous(t);
    CHECK(check_binary_result(FF_MAXIMUM, tc, snap2, r, ts, 2) == 0);
    ff_tensor *xs[] = {base, orig, v, c, t, two, snap, r, snap2, tc};
    for (int i = 0; i < 10; i++)
        ff_tensor_release(xs[i]);
}

TEST(binary_inplace_aliasing)
{
    /* a += a^T reads elements the loop has already written unless b is copied */
    int64_t s[2] = {3, 3};
    ff_tensor *a = filled(s, 2, 51), *orig = ff_tensor_clone(a);
    ff_tensor *at = ff_tensor_transpose(a, 0, 1);
    CHECK(ff_binary_(FF_ADD, a, at) == FF_OK);
    int ok = 1;
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++)
            ok &= ff_tensor_data(a)[i * 3 + j] ==
                  ff_tensor_data(orig)[i * 3 + j] + ff_tensor_data(orig)[j * 3 + i];
    CHECK(ok);
    /* a *= a */
    ff_tensor *snap = ff_tensor_clone(a);
    CHECK(ff_binary_(FF_MUL, a, a) == FF_OK);
    ok = 1;
    for (int i = 0; i < 9; i++)
        ok &= ff_tensor_data(a)[i] == ff_tensor_data(snap)[i] * ff_tensor_data(snap)[i];
    CHECK(ok);
    /* overlapping shifted windows: x[i] = old[i+1] - old[i] */
    int64_t n[1] = {100};
    ff_tensor *base = filled(n, 1, 52), *old = ff_tensor_clone(base);
    ff_tensor *x = ff_tensor_narrow(base, 0, 0, 99), *y = ff_tensor_narrow(base, 0, 1, 99);
    CHECK(ff_binary_(FF_SUB, y, x) == FF_OK);
    ok = 1;
    for (int i = 0; i < 99; i++)
        ok &= ff_tensor_data(base)[i + 1] == ff_tensor_data(old)[i + 1] - ff_tensor_data(old)[i];
    CHECK(ok && ff_tensor_data(base)[0] == ff_tensor_data(old)[0]);
    /* a scalar that is an element of a itself */
    ff_tensor *e = ff_tensor_select(base, 0, 5), *snap2 = ff_tensor_clone(base);
    CHECK(ff_binary_(FF_SUB, base, e) == FF_OK);
    ok = 1;
    for (int i = 0; i < 100; i++)
        ok &= ff_tensor_data(base)[i] == ff_tensor_data(snap2)[i] - ff_tensor_data(snap2)[5];
    CHECK(ok);
    ff_tensor *ts[] = {a, orig, at, snap, base, old, x, y, e, snap2};
    for (int i = 0; i < 10; i++)
        ff_tensor_release(ts[i]);
}

TEST(binary_inplace_errors)
{
    int64_t s35[2] = {3, 5}, s25[2] = {2, 5}, s135[3] = {1, 3, 5}, r4[1] = {4}, e[2] = {3, 4};
    ff_tensor *a = ff_tensor_zeros(s35, 2), *b = ff_tensor_ones(s25, 2),
              *c = ff_tensor_ones(s135, 3), *r = ff_tensor_ones(r4, 1);
    CHECK(ff_binary_(FF_ADD, a, b) == FF_ERR_SHAPE);
    CHECK(strcmp(ff_last_error(), "add_: argument #2 of shape 2x5 does not broadcast to 3x5") == 0);
    /* a's shape never changes, so b may not add leading dims */
    CHECK(ff_binary_(FF_MUL, a, c) == FF_ERR_SHAPE && strstr(ff_last_error(), "mul_: argument #2 of shape 1x3x5"));
    ff_tensor *ex = ff_tensor_expand(r, e, 2), *sc = ff_tensor_scalar(1);
    CHECK(ff_binary_(FF_ADD, ex, sc) == FF_ERR_ARG);
    CHECK(strcmp(ff_last_error(), "add_: cannot write in place into an expanded tensor") == 0);
    CHECK(ff_tensor_data(r)[0] == 1.0f);
    ff_tensor *ts[] = {a, b, c, r, ex, sc};
    for (int i = 0; i < 6; i++)
        ff_tensor_release(ts[i]);
}

TEST(binary_survives_allocation_failures)
{
    int64_t s[2] = {4, 3}, c[2] = {3, 1};
    ff_tensor *base = filled(s, 2, 61), *t = ff_tensor_transpose(base, 0, 1),
              *b = filled(c, 2, 62);
    for (int k = 1; k <= 6; k++) {
        ff_mem_fail_after(k);
        ff_tensor *r = ff_binary(FF_ADD, t, b);
        ff_mem_fail_after(0);
        CHECK(r != NULL || ff_last_status() == FF_ERR_MEM);
        ff_tensor_release(r);
        ff_mem_fail_after(k);
        ff_status st = ff_binary_(FF_ADD, t, t); /* aliased: needs a copy */
        ff_mem_fail_after(0);
        CHECK(st == FF_OK || st == FF_ERR_MEM);
        ff_mem_fail_after(k);
        st = ff_binary_(FF_MUL, t, b);
        ff_mem_fail_after(0);
        CHECK(st == FF_OK || st == FF_ERR_MEM);
    }
    ff_tensor_release(base), ff_tensor_release(t), ff_tensor_release(b);
}

/* ---- unary ---- */

static int check_unary_result(ff_unop op, const ff_tensor *out, const ff_tensor *a)
{
    if (!out || !ff_shape_equal(out, a))
        return 1;
    int bad = 0;
    int64_t idx[FF_MAX_DIMS] = {0}, k = 0;
    if (ff_tensor_numel(a) == 0)
        return 0;
    do {
        double x = ff_tensor_data(a)[ff_tensor_offset_of(a, idx)];
        bad += !same(ff_tensor_data(out)[ff_tensor_offset_of(out, idx)], ref_unary(op, x));
        k++;
    } while (next_index(idx, a->shape, a->ndim));
    return bad;
}

TEST(unary_every_op_every_layout)
{
    int64_t s[2] = {7, 149};
    ff_tensor *a = filled(s, 2, 71);
    float specials[] = {0.0f, -0.0f, NAN, INFINITY, -INFINITY, -1.0f, 1e-30f, 88.0f};
    for (int i = 0; i < 8; i++)
        ff_tensor_data(a)[i * 13] = specials[i];
    ff_tensor *t = ff_tensor_transpose(a, 0, 1);
    for (int op = 0; op < FF_UNOP_COUNT; op++) {
        ff_tensor *o1 = ff_unary((ff_unop)op, a), *o2 = ff_unary((ff_unop)op, t);
        CHECK(check_unary_result((ff_unop)op, o1, a) == 0);
        CHECK(check_unary_result((ff_unop)op, o2, t) == 0);
        ff_tensor *c = ff_tensor_clone(a), *e = ff_tensor_clone(a),
                  *et = ff_tensor_transpose(e, 0, 1);
        CHECK(ff_unary_((ff_unop)op, c) == FF_OK);
        CHECK(check_unary_result((ff_unop)op, c, a) == 0);
        CHECK(ff_unary_((ff_unop)op, et) == FF_OK);
        CHECK(check_unary_result((ff_unop)op, et, t) == 0);
        ff_tensor *d = ff_tensor_clone(a), *dv = ff_tensor_narrow(d, 1, 3, 100);
        ff_tensor *av = ff_tensor_narrow(a, 1, 3, 100);
        CHECK(ff_unary_((ff_unop)op, dv) == FF_OK);
        CHECK(check_unary_result((ff_unop)op, dv, av) == 0);
        CHECK(ff_tensor_data(d)[2] == ff_tensor_data(a)[2] ||
              (isnan(ff_tensor_data(d)[2]) && isnan(ff_tensor_data(a)[2])));
        ff_tensor *xs[] = {o1, o2, c, e, et, d, dv, av};
        for (int i = 0; i < 8; i++)
            ff_tensor_release(xs[i]);
    }
    ff_tensor_release(a), ff_tensor_release(t);
}

TEST(unary_reference_values)
{
    int64_t s[1] = {6};
    float x[6] = {-2, 0, -0.0f, 3, NAN, 4};
    ff_tensor *a = from(x, s, 1);
    ff_tensor *sg = ff_unary(FF_SIGN, a), *ab = ff_unary(FF_ABS, a), *ng = ff_unary(FF_NEG, a),
              *sq = ff_unary(FF_SQRT, a), *lg = ff_unary(FF_LOG, a), *ex = ff_unary(FF_EXP, a);
    REQUIRE(sg && ab && ng && sq && lg && ex);
    float *g = ff_tensor_data(sg);
    CHECK(g[0] == -1 && g[1] == 0 && g[2] == 0 && g[3] == 1 && isnan(g[4]) && g[5] == 1);
    CHECK(ff_tensor_data(ab)[0] == 2 && ff_tensor_data(ng)[3] == -3 && ff_tensor_data(ng)[0] == 2);
    CHECK(isnan(ff_tensor_data(sq)[0]) && ff_tensor_data(sq)[5] == 2);
    CHECK(isinf(ff_tensor_data(lg)[1]) && ff_tensor_data(lg)[1] < 0 && isnan(ff_tensor_data(lg)[0]));
    CHECK(ff_tensor_data(ex)[1] == 1 && isnan(ff_tensor_data(ex)[4]));
    CHECK_NEAR(ff_tensor_data(ex)[3], exp(3.0), 1e-5);
    CHECK(strcmp(ff_unop_name(FF_SQRT), "sqrt") == 0 && strcmp(ff_unop_name(FF_SIGN), "sign") == 0);
    CHECK(ff_unary((ff_unop)42, a) == NULL && ff_last_status() == FF_ERR_ARG);
    ff_tensor *ts[] = {a, sg, ab, ng, sq, lg, ex};
    for (int i = 0; i < 7; i++)
        ff_tensor_release(ts[i]);
}

TEST(unary_inplace_expanded_is_an_error)
{
    int64_t r[1] = {4}, e[2] = {3, 4};
    ff_tensor *v = ff_tensor_ones(r, 1), *ex = ff_tensor_expand(v, e, 2);
    CHECK(ff_unary_(FF_EXP, ex) == FF_ERR_ARG);
    CHECK(strcmp(ff_last_error(), "exp_: cannot write in place into an expanded tensor") == 0);
    CHECK(ff_tensor_data(v)[0] == 1.0f);
    /* a size-1 dim with stride 0 is not an expansion */
    int64_t one[2] = {1, 4};
    ff_tensor *ok = ff_tensor_expand(v, one, 2);
    CHECK(ff_unary_(FF_NEG, ok) == FF_OK && ff_tensor_data(v)[3] == -1.0f);
    ff_tensor_release(v), ff_tensor_release(ex), ff_tensor_release(ok);
}

/* ---- clamp ---- */

TEST(clamp_values_nan_and_one_sided)
{
    int64_t s[1] = {8};
    float x[8] = {-2, -0.5f, 0, 0.5f, 2, NAN, INFINITY, -INFINITY};
    ff_tensor *a = from(x, s, 1), *c = ff_clamp(a, -1, 1);
    REQUIRE(c);
    float want[8] = {-1, -0.5f, 0, 0.5f, 1, NAN, 1, -1};
    for (int i = 0; i < 8; i++)
        CHECK(isnan(want[i]) ? isnan(ff_tensor_data(c)[i]) : ff_tensor_data(c)[i] == want[i]);
    ff_tensor *lo = ff_clamp(a, 0, INFINITY), *hi = ff_clamp(a, -INFINITY, 0);
    CHECK(ff_tensor_data(lo)[0] == 0 && ff_tensor_data(lo)[6] == INFINITY);
    CHECK(ff_tensor_data(hi)[4] == 0 && ff_tensor_data(hi)[7] == -INFINITY && isnan(ff_tensor_data(hi)[5]));
    CHECK(ff_clamp(a, 2, 1) == NULL && ff_last_status() == FF_ERR_ARG &&
          strstr(ff_last_error(), "clamp: lower bound 2 is greater than upper bound 1"));
    CHECK(ff_clamp_(a, 1, -1) == FF_ERR_ARG && strstr(ff_last_error(), "clamp_:"));
    CHECK(ff_clamp_(a, -1, 1) == FF_OK);
    for (int i = 0; i < 8; i++)
        CHECK(isnan(want[i]) ? isnan(ff_tensor_data(a)[i]) : ff_tensor_data(a)[i] == want[i]);
    ff_tensor_release(a), ff_tensor_release(c), ff_tensor_release(lo), ff_tensor_release(hi);
}

TEST(clamp_non_contiguous_and_large)
{
    int64_t s[2] = {9, 131};
    ff_tensor *a = filled(s, 2, 81), *t = ff_tensor_transpose(a, 0, 1);
    ff_tensor *c = ff_clamp(t, -1, 0.5f);
    REQUIRE(c);
    int ok = 1;
    for (int i = 0; i < 131; i++)
        for (int j = 0; j < 9; j++) {
            float v = ff_tensor_data(a)[j * 131 + i];
            ok &= ff_tensor_data(c)[i * 9 + j] == fminf(fmaxf(v, -1), 0.5f);
        }
    CHECK(ok);
    ff_tensor *snap = ff_tensor_clone(a);
    CHECK(ff_clamp_(t, -0.5f, 1) == FF_OK);
    ok = 1;
    for (int i = 0; i < 9 * 131; i++)
        ok &= ff_tensor_data(a)[i] == fminf(fmaxf(ff_tensor_data(snap)[i], -0.5f), 1);
    CHECK(ok);
    int64_t r[1] = {4}, e[2] = {2, 4};
    ff_tensor *v = ff_tensor_ones(r, 1), *ex = ff_tensor_expand(v, e, 2);
    CHECK(ff_clamp_(ex, 0, 1) == FF_ERR_ARG && strstr(ff_last_error(), "expanded"));
    ff_tensor *ts[] = {a, t, c, snap, v, ex};
    for (int i = 0; i < 6; i++)
        ff_tensor_release(ts[i]);
}

/* ---- where ---- */

TEST(where_broadcasts_three_ways)
{
    int64_t sc[2] = {3, 1}, sa[2] = {1, 4};
    float cv[3] = {1, 0, NAN}, av[4] = {10, 20, 30, 40};
    ff_tensor *c = from(cv, sc, 2), *a = from(av, sa, 2), *b = ff_tensor_scalar(-1);
    ff_tensor *w = ff_where(c, a, b);
    REQUIRE(w && w->ndim == 2 && w->shape[0] == 3 && w->shape[1] == 4);
    int ok = 1;
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 4; j++)  /* NaN is not zero: it selects a */
            ok &= ff_tensor_data(w)[i * 4 + j] == (i == 1 ? -1.0f : av[j]);
    CHECK(ok);
    /* same shapes, contiguous */
    int64_t n[1] = {37};
    ff_tensor *cc = filled(n, 1, 91), *x = filled(n, 1, 92), *y = filled(n, 1, 93);
    ff_tensor *w2 = ff_where(cc, x, y);
    REQUIRE(w2);
    ok = 1;
    for (int i = 0; i < 37; i++)
        ok &= ff_tensor_data(w2)[i] ==
              (ff_tensor_data(cc)[i] != 0 ? ff_tensor_data(x)[i] : ff_tensor_data(y)[i]);
    CHECK(ok);
    /* a transposed operand */
    int64_t s34[2] = {3, 4}, s43[2] = {4, 3};
    ff_tensor *base = filled(s43, 2, 94), *bt = ff_tensor_transpose(base, 0, 1),
              *cond = filled(s34, 2, 95), *w3 = ff_where(cond, bt, a);
    REQUIRE(w3);
    ok = 1;
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 4; j++)
            ok &= ff_tensor_data(w3)[i * 4 + j] ==
                  (ff_tensor_data(cond)[i * 4 + j] != 0 ? ff_tensor_data(base)[j * 3 + i] : av[j]);
    CHECK(ok);
    int64_t bad[1] = {5};
    ff_tensor *z = ff_tensor_zeros(bad, 1);
    CHECK(ff_where(c, a, z) == NULL && ff_last_status() == FF_ERR_SHAPE &&
          strstr(ff_last_error(), "where: shapes 3x1 (condition), 1x4 and 5 do not broadcast"));
    ff_tensor *ts[] = {c, a, b, w, cc, x, y, w2, base, bt, cond, w3, z};
    for (int i = 0; i < 13; i++)
        ff_tensor_release(ts[i]);
}
