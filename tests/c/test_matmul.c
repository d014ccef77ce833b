/* test_matmul.c: matmul and addmm_ against a naive loop, over every layout. */
#include <string.h>
#include "harness.h"

/* Deterministic values in [-1, 1) that differ from one tensor to the next. */
static ff_tensor *filled(const int64_t *shape, int ndim, unsigned seed)
{
    ff_tensor *t = ff_tensor_empty(shape, ndim);
    if (!t)
        return NULL;
    uint32_t x = seed * 2654435761u + 12345u;
    float *d = ff_tensor_data(t);
    for (int64_t i = 0; i < ff_tensor_numel(t); i++) {
        x = x * 1664525u + 1013904223u;
        d[i] = (float)(x >> 8) / (float)(1u << 23) - 1.0f;
    }
    return t;
}

static ff_tensor *filled2(int64_t r, int64_t c, unsigned seed)
{
    int64_t s[2] = {r, c};
    return filled(s, 2, seed);
}

static ff_tensor *filled3(int64_t b, int64_t r, int64_t c, unsigned seed)
{
    int64_t s[3] = {b, r, c};
    return filled(s, 3, seed);
}

/* Element (i, j) of matrix `batch` of a 2-D or 3-D tensor, any strides. */
static float at(const ff_tensor *t, int64_t batch, int64_t i, int64_t j)
{
    const float *d = ff_tensor_data(t);
    if (t->ndim == 2)
        return d[i * t->stride[0] + j * t->stride[1]];
    int64_t b = t->shape[0] == 1 ? 0 : batch;
    return d[b * t->stride[0] + i * t->stride[1] + j * t->stride[2]];
}

/* Largest |out - a.b| over the batch, computed in double by the definition. */
static double max_err(const ff_tensor *a, const ff_tensor *b, const ff_tensor *out)
{
    int64_t batch = out->ndim == 3 ? out->shape[0] : 1;
    int64_t n = a->shape[a->ndim - 2], k = a->shape[a->ndim - 1], m = b->shape[b->ndim - 1];
    double worst = 0;
    for (int64_t q = 0; q < batch; q++)
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < m; j++) {
                double s = 0;
                for (int64_t p = 0; p < k; p++)
                    s += (double)at(a, q, i, p) * at(b, q, p, j);
                double e = fabs(s - at(out, q, i, j));
                worst = e > worst ? e : worst;
            }
    return worst;
}

static bool has_shape(const ff_tensor *t, int ndim, int64_t s0, int64_t s1, int64_t s2)
{
    int64_t want[3] = {s0, s1, s2};
    if (!t || t->ndim != ndim)
        return false;
    for (int i = 0; i < ndim; i++)
        if (t->shape[i] != want[i])
            return false;
    return true;
}

TEST(matmul_2d_matches_naive)
{
    int64_t sizes[][3] = {{3, 4, 5}, {1, 7, 1}, {37, 19, 23}, {64, 65, 66}};
    for (int c = 0; c < 4; c++) {
        ff_tensor *a = filled2(sizes[c][0], sizes[c][1], 1);
        ff_tensor *b = filled2(sizes[c][1], sizes[c][2], 2);
        ff_tensor *o = ff_matmul(a, b);
        CHECK(has_shape(o, 2, sizes[c][0], sizes[c][2], 0));
        if (o)
            CHECK(max_err(a, b, o) < 1e-4);
        ff_tensor_release(a), ff_tensor_release(b), ff_tensor_release(o);
    }
}

/* out = matmul(a, b) must allocate only its own result (3 blocks: header,
 * storage, data): a copy of an operand would be a 4th allocation, which
 * the injected failure turns into an error. */
static ff_tensor *matmul_without_copies(const ff_tensor *a, const ff_tensor *b)
{
    ff_mem_fail_after(4);
    ff_tensor *o = ff_matmul(a, b);
    ff_mem_fail_after(0);
    return o;
}

TEST(matmul_transposed_views_go_to_blas_uncopied)
{
    ff_tensor *at_ = filled2(6, 5, 3), *bt = filled2(7, 6, 4); /* stored transposed */
    ff_tensor *a = filled2(5, 6, 5), *b = filled2(6, 7, 6);
    ff_tensor *ta = ff_tensor_transpose(at_, 0, 1), *tb = ff_tensor_transpose(bt, 0, 1);
    REQUIRE(ta && tb);
    const ff_tensor *lhs[4] = {a, ta, a, ta}, *rhs[4] = {b, b, tb, tb};
    for (int c = 0; c < 4; c++) {
        ff_tensor *o = matmul_without_copies(lhs[c], rhs[c]);
        CHECK(has_shape(o, 2, 5, 7, 0));
        if (o)
            CHECK(max_err(lhs[c], rhs[c], o) < 1e-5);
        ff_tensor_release(o);
    }
    /* a narrowed matrix keeps its rows contiguous: lda = full row length */
    ff_tensor *na = ff_tensor_narrow(a, 1, 1, 4), *nb = ff_tensor_narrow(b, 0, 2, 4);
    ff_tensor *o = matmul_without_copies(na, nb);
    CHECK(o && max_err(na, nb, o) < 1e-5);
    ff_tensor_release(o), ff_tensor_release(na), ff_tensor_release(nb);
    ff_tensor_release(at_), ff_tensor_release(bt), ff_tensor_release(a);
    ff_tensor_release(b), ff_tensor_release(ta), ff_tensor_release(tb);
}

TEST(matmul_copies_layouts_blas_cannot_read)
{
    /* every other element of each row: strides (2k, 2), neither layout */
    ff_tensor *base = filled3(4, 3, 2, 7), *b = filled2(3, 5, 8);
    ff_tensor *a = ff_tensor_select(base, 2, 1);
    REQUIRE(a && a->stride[1] == 2);
    ff_tensor *o = ff_matmul(a, b);
    CHECK(o && max_err(a, b, o) < 1e-5);
    ff_tensor_release(o);
    /* an expanded operand: every row the same, row stride 0 */
    int64_t s[2] = {1, 3}, full[2] = {4, 3};
    ff_tensor *row = filled(s, 2, 9), *e = ff_tensor_expand(row, full, 2);
    REQUIRE(e && e->stride[0] == 0);
    o = ff_matmul(e, b);
    CHECK(o && max_err(e, b, o) < 1e-5);
    ff_tensor_release(o), ff_tensor_release(e), ff_tensor_release(row);
    ff_tensor_release(a), ff_tensor_release(base), ff_tensor_release(b);
}

TEST(matmul_batched_and_broadcast)
{
    ff_tensor *a = filled3(4, 3, 5, 10), *b = filled3(4, 5, 2, 11);
    ff_tensor *a1 = filled3(1, 3, 5, 12), *b1 = filled3(1, 5, 2, 13);
    ff_tensor *a2 = filled2(3, 5, 14), *b2 = filled2(5, 2, 15);
    ff_tensor *abt = filled3(4, 5, 3, 16), *at_ = ff_tensor_transpose(abt, 1, 2);
    REQUIRE(at_);
    const ff_tensor *lhs[7] = {a, a1, a, a, a2, at_, at_};
    const ff_tensor *rhs[7] = {b, b, b1, b2, b, b, b2};
    for (int c = 0; c < 7; c++) {
        ff_tensor *o = ff_matmul(lhs[c], rhs[c]);
        CHECK(has_shape(o, 3, 4, 3, 2));
        if (o)
            CHECK(max_err(lhs[c], rhs[c], o) < 1e-5);
        ff_tensor_release(o);
    }
    /* rows narrowed out of each matrix: not one tall matrix, so no folding */
    ff_tensor *tall = filled3(4, 6, 5, 17), *na = ff_tensor_narrow(tall, 1, 2, 3);
    REQUIRE(na && na->stride[0] == 30);
    ff_tensor *on = ff_matmul(na, b2);
    CHECK(has_shape(on, 3, 4, 3, 2) && max_err(na, b2, on) < 1e-5);
    ff_tensor_release(on), ff_tensor_release(na), ff_tensor_release(tall);
    /* batch 1 with batch 1 stays 3-D */
    ff_tensor *o = ff_matmul(a1, b1);
    CHECK(has_shape(o, 3, 1, 3, 2) && max_err(a1, b1, o) < 1e-5);
    ff_tensor_release(o);
    ff_tensor_release(a), ff_tensor_release(b), ff_tensor_release(a1), ff_tensor_release(b1);
    ff_tensor_release(a2), ff_tensor_release(b2), ff_tensor_release(abt);
    ff_tensor_release(at_);
}

TEST(matmul_one_dimensional_operands)
{
    ff_tensor *m = filled2(3, 4, 20), *v4 = filled2(1, 4, 21), *v3 = filled2(1, 3, 22);
    int64_t s1[1] = {4}, s3[1] = {3};
    ff_tensor *x = ff_tensor_view(v4, s1, 1), *y = ff_tensor_view(v3, s3, 1);
    REQUIRE(x && y);
    ff_tensor *mv = ff_matmul(m, x);  /* (3,4).(4) -> (3) */
    ff_tensor *vm = ff_matmul(y, m);  /* (3).(3,4) -> (4) */
    ff_tensor *vv = ff_matmul(x, x);  /* (4).(4) -> scalar */
    REQUIRE(has_shape(mv, 1, 3, 0, 0) && has_shape(vm, 1, 4, 0, 0) && vv && vv->ndim == 0);
    double dot = 0;
    for (int p = 0; p < 4; p++)
        dot += (double)ff_tensor_data(x)[p] * ff_tensor_data(x)[p];
    CHECK_NEAR(ff_tensor_data(vv)[0], dot, 1e-5);
    for (int i = 0; i < 3; i++) {
        double s = 0;
        for (int p = 0; p < 4; p++)
            s += (double)at(m, 0, i, p) * ff_tensor_data(x)[p];
        CHECK_NEAR(ff_tensor_data(mv)[i], s, 1e-5);
    }
    for (int j = 0; j < 4; j++) {
        double s = 0;
        for (int p = 0; p < 3; p++)
            s += (double)ff_tensor_data(y)[p] * at(m, 0, p, j);
        CHECK_NEAR(ff_tensor_data(vm)[j], s, 1e-5);
    }
    /* a strided vector (a column, stride 4) goes to BLAS as a transposed
     * row; a vector against a batch gives one row per matrix */
    ff_tensor *bat = filled3(2, 4, 5, 23);
    ff_tensor *rowv = ff_tensor_select(m, 0, 1);        /* contiguous row of m */
    ff_tensor *colv = ff_tensor_select(m, 1, 2);        /* stride 4 */
    REQUIRE(rowv && colv && colv->stride[0] == 4);
    ff_tensor *vb = matmul_without_copies(colv, m);     /* (3).(3,4) */
    ff_tensor *vbat = ff_matmul(rowv, bat);             /* (4).(2,4,5) -> (2,5) */
    CHECK(has_shape(vb, 1, 4, 0, 0) && has_shape(vbat, 2, 2, 5, 0));
    if (vb)
        for (int j = 0; j < 4; j++) {
            double s = 0;
            for (int p = 0; p < 3; p++)
                s += (double)at(m, 0, p, 2) * at(m, 0, p, j);
            CHECK_NEAR(ff_tensor_data(vb)[j], s, 1e-5);
        }
    if (vbat)
        for (int q = 0; q < 2; q++)
            for (int j = 0; j < 5; j++) {
                double s = 0;
                for (int p = 0; p < 4; p++)
                    s += (double)at(m, 0, 1, p) * at(bat, q, p, j);
                CHECK_NEAR(ff_tensor_data(vbat)[q * 5 + j], s, 1e-5);
            }
    ff_tensor_release(mv), ff_tensor_release(vm), ff_tensor_release(vv);
    ff_tensor_release(bat), ff_tensor_release(rowv);
    ff_tensor_release(colv), ff_tensor_release(vb), ff_tensor_release(vbat);
    ff_tensor_release(x), ff_tensor_release(y);
    ff_tensor_release(m), ff_tensor_release(v4), ff_tensor_release(v3);
}

TEST(matmul_empty_sizes)
{
    ff_tensor *a = filled2(3, 0, 30), *b = filled2(0, 4, 31);
    ff_tensor *o = ff_matmul(a, b); /* k = 0: a sum of nothing */
    REQUIRE(has_shape(o, 2, 3, 4, 0));
    bool zeros = true;
    for (int i = 0; i < 12; i++)
        zeros = zeros && ff_tensor_data(o)[i] == 0.0f;
    CHECK(zeros);
    ff_tensor *n0 = filled2(0, 3, 32), *f = filled2(3, 4, 33), *m0 = filled2(3, 0, 34);
    ff_tensor *b0 = filled3(0, 2, 3, 35);
    ff_tensor *on = ff_matmul(n0, f), *om = ff_matmul(f, b), *ob = ff_matmul(b0, f);
    CHECK(has_shape(on, 2, 0, 4, 0));
    CHECK(om == NULL); /* 3x4 . 0x4 does not fit */
    ff_tensor *ft = ff_tensor_transpose(f, 0, 1); /* 4x3 */
    ff_tensor *om2 = ff_matmul(ft, m0);           /* (4,3).(3,0) -> 4x0 */
    CHECK(has_shape(om2, 2, 4, 0, 0));
    CHECK(has_shape(ob, 3, 0, 2, 4));
    ff_tensor_release(a), ff_tensor_release(b), ff_tensor_release(o);
    ff_tensor_release(n0), ff_tensor_release(f), ff_tensor_release(m0), ff_tensor_release(b0);
    ff_tensor_release(on), ff_tensor_release(ob), ff_tensor_release(ft), ff_tensor_release(om2);
}

TEST(matmul_error_messages)
{
    ff_tensor *a = filled2(3, 4, 40), *b = filled2(5, 2, 41);
    CHECK(ff_matmul(a, b) == NULL && ff_last_status() == FF_ERR_SHAPE &&
          strstr(ff_last_error(),
                 "matmul: argument #2 has shape 5x2, expected 4xN to match argument #1 (3x4)"));
    ff_tensor *b3 = filled3(2, 5, 2, 42);
    CHECK(ff_matmul(a, b3) == NULL && strstr(ff_last_error(), "expected Bx4xN"));
    ff_tensor *a3 = filled3(3, 3, 5, 43);
    CHECK(ff_matmul(a3, b3) == NULL && strstr(ff_last_error(), "batch sizes differ") &&
          strstr(ff_last_error(), "3x3x5") && strstr(ff_last_error(), "2x5x2"));
    int64_t s4[4] = {1, 2, 3, 4};
    ff_tensor *r4 = filled(s4, 4, 44), *sc = ff_tensor_scalar(2);
    CHECK(ff_matmul(r4, a) == NULL && strstr(ff_last_error(), "argument #1 has shape 1x2x3x4"));
    CHECK(ff_matmul(a, sc) == NULL && strstr(ff_last_error(), "argument #2 has shape scalar"));
    ff_tensor_release(a), ff_tensor_release(b), ff_tensor_release(b3), ff_tensor_release(a3);
    ff_tensor_release(r4), ff_tensor_release(sc);
}

/* c0 is c before the call; checks c == beta*c0 + alpha*a.b elementwise. */
static double addmm_err(const ff_tensor *c, const ff_tensor *c0, float beta, float alpha,
                        const ff_tensor *a, const ff_tensor *b)
{
    double worst = 0;
    for (int64_t i = 0; i < c->shape[0]; i++)
        for (int64_t j = 0; j < c->shape[1]; j++) {
            double s = 0;
            for (int64_t p = 0; p < a->shape[1]; p++)
                s += (double)at(a, 0, i, p) * at(b, 0, p, j);
            double want = beta * (double)at(c0, 0, i, j) + alpha * s;
            double e = fabs(want - at(c, 0, i, j));
            worst = e > worst ? e : worst;
        }
    return worst;
}

TEST(addmm_alpha_beta_and_layouts)
{
    ff_tensor *a = filled2(4, 6, 50), *bt = filled2(5, 6, 51), *c = filled2(4, 5, 52);
    ff_tensor *b = ff_tensor_transpose(bt, 0, 1);
    ff_tensor *c0 = ff_tensor_clone(c);
    REQUIRE(b && c0);
    CHECK(ff_addmm_(c, 0.5f, -2.0f, a, b) == FF_OK);
    CHECK(addmm_err(c, c0, 0.5f, -2.0f, a, b) < 1e-5);
    /* beta = 0 overwrites, even NaN */
    ff_tensor_fill_(c, NAN);
    ff_tensor_fill_(c0, 0.0f);
    CHECK(ff_addmm_(c, 0.0f, 1.0f, a, b) == FF_OK);
    CHECK(addmm_err(c, c0, 0.0f, 1.0f, a, b) < 1e-5);
    ff_tensor_release(a), ff_tensor_release(bt), ff_tensor_release(b);
    ff_tensor_release(c), ff_tensor_release(c0);
}

/* Largest elementwise difference of two contiguous tensors of one shape. */
static double max_diff(const ff_tensor *x, const ff_tensor *y)
{
    double worst = 0;
    for (int64_t i = 0; i < ff_tensor_numel(x); i++) {
        double e = fabs((double)ff_tensor_data(x)[i] - ff_tensor_data(y)[i]);
        worst = e > worst ? e : worst;
    }
    return worst;
}

TEST(addmm_k0_aliasing_and_errors)
{
    ff_tensor *c = filled2(3, 3, 60), *c0 = ff_tensor_clone(c);
    ff_tensor *a0 = filled2(3, 0, 61), *b0 = filled2(0, 3, 62);
    CHECK(ff_addmm_(c, 2.0f, 1.0f, a0, b0) == FF_OK);
    CHECK_NEAR(ff_tensor_data(c)[4], 2.0f * ff_tensor_data(c0)[4], 1e-6);
    /* c = c + c.c reads c while writing it: the operand must be copied */
    ff_tensor_copy_(c, c0);
    CHECK(ff_addmm_(c, 1.0f, 1.0f, c, c) == FF_OK);
    CHECK(addmm_err(c, c0, 1.0f, 1.0f, c0, c0) < 1e-5);
    ff_tensor *ct = ff_tensor_transpose(c, 0, 1), *b = filled2(3, 3, 63);
    /* large enough that BLAS works in blocks and would read rows it has
     * already written, had the aliased operand not been copied */
    ff_tensor *big = filled2(600, 600, 66), *big0 = ff_tensor_clone(big), *x = filled2(600, 600, 67);
    CHECK(ff_addmm_(big, 1.0f, 1.0f, x, big) == FF_OK);
    ff_tensor *want = ff_tensor_clone(big0);
    ff_addmm_(want, 1.0f, 1.0f, x, big0);
    CHECK(max_diff(want, big) < 1e-3);
    ff_tensor_copy_(big, big0);
    CHECK(ff_addmm_(big, 1.0f, 1.0f, big, x) == FF_OK);
    ff_tensor_copy_(want, big0);
    ff_addmm_(want, 1.0f, 1.0f, big0, x);
    CHECK(max_diff(want, big) < 1e-3);
    ff_tensor_release(big), ff_tensor_release(big0), ff_tensor_release(x);
    ff_tensor_release(want);
    CHECK(ff_addmm_(ct, 1.0f, 1.0f, b, b) == FF_ERR_STATE &&
          strstr(ff_last_error(), "must be contiguous"));
    ff_tensor *b2 = filled2(4, 3, 64);
    CHECK(ff_addmm_(c, 1.0f, 1.0f, b, b2) == FF_ERR_SHAPE &&
          strstr(ff_last_error(), "b has shape 4x3, expected 3xN to match a (3x3)"));
    ff_tensor *c2 = filled2(2, 3, 65);
    CHECK(ff_addmm_(c2, 1.0f, 1.0f, b, b) == FF_ERR_SHAPE &&
          strstr(ff_last_error(), "c has shape 2x3, expected 3x3"));
    ff_tensor_release(c), ff_tensor_release(c0), ff_tensor_release(a0), ff_tensor_release(b0);
    ff_tensor_release(ct), ff_tensor_release(b), ff_tensor_release(b2), ff_tensor_release(c2);
}

TEST(blas_threads_set_and_get)
{
    int was = ff_blas_threads();
    ff_blas_set_threads(1);
    CHECK(ff_blas_threads() == 1);
    ff_blas_set_threads(0); /* clamped to 1, not an OpenBLAS default */
    CHECK(ff_blas_threads() == 1);
    ff_blas_set_threads(was);
    CHECK(ff_blas_threads() == was);
}
