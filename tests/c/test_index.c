/* test_index.c: cat, stack, index_select/index_add_, gather/scatter_/scatter_add_. */
#include <string.h>
#include "harness.h"

static ff_tensor *from(const float *data, int64_t s0, int64_t s1)
{
    int64_t s[2] = {s0, s1};
    return ff_tensor_from_data(data, s, s1 < 0 ? 1 : 2);
}

/* 0, 1, 2, ... in a fresh contiguous tensor. */
static ff_tensor *iota(const int64_t *shape, int ndim)
{
    ff_tensor *t = ff_tensor_empty(shape, ndim);
    for (int64_t i = 0; t && i < ff_tensor_numel(t); i++)
        ff_tensor_data(t)[i] = (float)i;
    return t;
}

/* t (contiguous) holds exactly want[0..n). */
static bool holds(const ff_tensor *t, const float *want, int64_t n)
{
    if (!t || !ff_tensor_is_contiguous(t) || ff_tensor_numel(t) != n)
        return false;
    for (int64_t i = 0; i < n; i++)
        if (ff_tensor_data(t)[i] != want[i])
            return false;
    return true;
}

/* Sum of x*y over all elements, any layouts of equal shape. */
static double dot(const ff_tensor *x, const ff_tensor *y)
{
    ff_tensor *cx = ff_tensor_clone(x), *cy = ff_tensor_clone(y);
    double s = 0;
    for (int64_t i = 0; i < ff_tensor_numel(cx); i++)
        s += (double)ff_tensor_data(cx)[i] * ff_tensor_data(cy)[i];
    ff_tensor_release(cx), ff_tensor_release(cy);
    return s;
}

/* ---- cat / stack ---- */

TEST(cat_along_each_dim)
{
    const float a[] = {1, 2, 3, 4, 5, 6}, b[] = {7, 8, 9, 10};
    ff_tensor *ta = from(a, 2, 3), *tb = from(b, 2, 2), *tc = from(b, 1, 4);
    ff_tensor *tb3 = from(a, 1, 3);
    ff_tensor *row[2] = {ta, tb3}, *col[2] = {ta, tb};
    ff_tensor *r = ff_cat(row, 2, 0), *c = ff_cat(col, 2, 1);
    const float wr[] = {1, 2, 3, 4, 5, 6, 1, 2, 3}, wc[] = {1, 2, 3, 7, 8, 4, 5, 6, 9, 10};
    CHECK(holds(r, wr, 9) && r->shape[0] == 3 && r->shape[1] == 3);
    CHECK(holds(c, wc, 10) && c->shape[0] == 2 && c->shape[1] == 5);
    ff_tensor *one[1] = {tc}, *o = ff_cat(one, 1, 1);
    CHECK(holds(o, b, 4) && o->storage != tc->storage);
    ff_tensor_release(ta), ff_tensor_release(tb), ff_tensor_release(tc), ff_tensor_release(tb3);
    ff_tensor_release(r), ff_tensor_release(c), ff_tensor_release(o);
}

TEST(cat_non_contiguous_and_empty_inputs)
{
    int64_t s[3] = {2, 3, 2}, e[3] = {2, 0, 2};
    ff_tensor *x = iota(s, 3);                         /* 2x3x2 */
    ff_tensor *base = iota(s, 3);
    ff_tensor *p = ff_tensor_transpose(base, 1, 2);    /* 2x2x3, not contiguous */
    ff_tensor *pt = ff_tensor_transpose(p, 1, 2);      /* 2x3x2 again, strided */
    ff_tensor *ptn = ff_tensor_narrow(pt, 1, 1, 2);    /* 2x2x2, offset view */
    ff_tensor *emp = ff_tensor_zeros(e, 3);
    REQUIRE(x && p && pt && ptn && emp);
    ff_tensor *ts[3] = {x, emp, ptn};
    ff_tensor *r = ff_cat(ts, 3, 1);                   /* 2x5x2 */
    const float want[] = {0, 1, 2, 3, 4, 5, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 8, 9, 10, 11};
    CHECK(holds(r, want, 20) && r->shape[1] == 5);
    /* along the last dim, mixing a strided view */
    ff_tensor *ts2[2] = {ptn, ptn};
    ff_tensor *r2 = ff_cat(ts2, 2, 2);
    const float want2[] = {2, 3, 2, 3, 4, 5, 4, 5, 8, 9, 8, 9, 10, 11, 10, 11};
    CHECK(holds(r2, want2, 16) && r2->shape[2] == 4);
    ff_tensor *ts3[2] = {emp, emp};
    ff_tensor *r3 = ff_cat(ts3, 2, 1);
    CHECK(r3 && r3->shape[1] == 0 && ff_tensor_numel(r3) == 0);
    ff_tensor_release(x), ff_tensor_release(base), ff_tensor_release(p);
    ff_tensor_release(pt), ff_tensor_release(ptn), ff_tensor_release(emp);
    ff_tensor_release(r), ff_tensor_release(r2), ff_tensor_release(r3);
}

TEST(cat_errors)
{
    int64_t s1[2] = {2, 3}, s2[2] = {3, 4}, s3[3] = {2, 3, 1};
    ff_tensor *a = ff_tensor_zeros(s1, 2), *b = ff_tensor_zeros(s2, 2), *c = ff_tensor_zeros(s3, 3);
    ff_tensor *ab[2] = {a, b}, *ac[2] = {a, c};
    CHECK(ff_cat(ab, 2, 1) == NULL && ff_last_status() == FF_ERR_SHAPE &&
          strstr(ff_last_error(),
                 "cat: tensor #2 has shape 3x4, expected 2xN (sizes must match except in dim 2)"));
    CHECK(ff_cat(ac, 2, 0) == NULL && strstr(ff_last_error(), "tensor #2 has shape 2x3x1"));
    CHECK(ff_cat(ab, 2, 2) == NULL && strstr(ff_last_error(), "dim 3 out of range"));
    CHECK(ff_cat(ab, 0, 0) == NULL && strstr(ff_last_error(), "at least one"));
    ff_tensor_release(a), ff_tensor_release(b), ff_tensor_release(c);
}

TEST(stack_new_dim)
{
    const float a[] = {1, 2, 3, 4}, b[] = {5, 6, 7, 8};
    ff_tensor *ta = from(a, 2, 2), *tb = from(b, 2, 2);
    ff_tensor *tbt = ff_tensor_transpose(tb, 0, 1);
    ff_tensor *ts[2] = {ta, tbt};
    ff_tensor *s0 = ff_stack(ts, 2, 0), *s1 = ff_stack(ts, 2, 1), *s2 = ff_stack(ts, 2, 2);
    const float w0[] = {1, 2, 3, 4, 5, 7, 6, 8}, w1[] = {1, 2, 5, 7, 3, 4, 6, 8},
                w2[] = {1, 5, 2, 7, 3, 6, 4, 8};
    CHECK(holds(s0, w0, 8) && s0->ndim == 3 && s0->shape[0] == 2);
    CHECK(holds(s1, w1, 8) && s1->shape[1] == 2);
    CHECK(holds(s2, w2, 8) && s2->shape[2] == 2);
    int64_t sz[2] = {2, 3};
    ff_tensor *bad = ff_tensor_zeros(sz, 2), *tsb[2] = {ta, bad};
    CHECK(ff_stack(tsb, 2, 0) == NULL && strstr(ff_last_error(), "stack: tensor #2 has shape 2x3, expected 2x2"));
    CHECK(ff_stack(ts, 2, 3) == NULL && strstr(ff_last_error(), "dim 4 out of range"));
    ff_tensor_release(ta), ff_tensor_release(tb), ff_tensor_release(tbt), ff_tensor_release(bad);
    ff_tensor_release(s0), ff_tensor_release(s1), ff_tensor_release(s2);
}

/* ---- index_select / index_add_ ---- */

TEST(index_select_dims_repeats_and_layouts)
{
    int64_t s[2] = {4, 3};
    ff_tensor *a = iota(s, 2);                         /* rows 0..3 of 3 */
    const float iv[] = {2, 0, 2, 3};
    ff_tensor *ix = from(iv, 4, -1);
    ff_tensor *r0 = ff_index_select(a, 0, ix);
    const float w0[] = {6, 7, 8, 0, 1, 2, 6, 7, 8, 9, 10, 11};
    CHECK(holds(r0, w0, 12) && r0->shape[0] == 4 && r0->shape[1] == 3);
    const float jv[] = {1, 1, 0};
    ff_tensor *jx = from(jv, 3, -1);
    ff_tensor *r1 = ff_index_select(a, 1, jx);
    const float w1[] = {1, 1, 0, 4, 4, 3, 7, 7, 6, 10, 10, 9};
    CHECK(holds(r1, w1, 12) && r1->shape[1] == 3);
    /* transposed input and a strided index (a column of a 2-D tensor) */
    ff_tensor *at_ = ff_tensor_transpose(a, 0, 1);     /* 3x4 */
    const float cols[] = {3, 9, 1, 9};                 /* column 0: 3, 1 */
    ff_tensor *c2 = from(cols, 2, 2), *sx = ff_tensor_select(c2, 1, 0);
    REQUIRE(sx && sx->stride[0] == 2);
    ff_tensor *r2 = ff_index_select(at_, 1, sx);       /* columns 3, 1 of a^T */
    const float w2[] = {9, 3, 10, 4, 11, 5};
    CHECK(holds(r2, w2, 6) && r2->shape[0] == 3 && r2->shape[1] == 2);
    int64_t z[1] = {0};
    ff_tensor *none = ff_tensor_empty(z, 1), *r3 = ff_index_select(a, 0, none);
    CHECK(r3 && r3->shape[0] == 0 && r3->shape[1] == 3);
    ff_tensor_release(a), ff_tensor_release(ix), ff_tensor_release(jx), ff_tensor_release(at_);
    ff_tensor_release(c2), ff_tensor_release(sx), ff_tensor_release(none);
    ff_tensor_release(r0), ff_tensor_release(r1), ff_tensor_release(r2), ff_tensor_release(r3);
}

TEST(index_select_errors)
{
    int64_t s[2] = {10, 2};
    ff_tensor *a = iota(s, 2);
    const float big[] = {3, 10}, frac[] = {1.5f, 0}, neg[] = {-1, 0}, nan_[] = {NAN, 0};
    ff_tensor *ib = from(big, 2, -1), *ifr = from(frac, 2, -1), *ing = from(neg, 2, -1);
    ff_tensor *inan = from(nan_, 2, -1), *i2 = from(big, 1, 2);
    CHECK(ff_index_select(a, 0, ib) == NULL && ff_last_status() == FF_ERR_RANGE &&
          strstr(ff_last_error(), "index_select: index 11 out of range for dim 1 of size 10"));
    CHECK(ff_index_select(a, 0, ifr) == NULL && ff_last_status() == FF_ERR_ARG &&
          strstr(ff_last_error(), "index_select: index must be an integer, got 2.5"));
    CHECK(ff_index_select(a, 0, ing) == NULL && strstr(ff_last_error(), "index 0 out of range"));
    CHECK(ff_index_select(a, 0, inan) == NULL && strstr(ff_last_error(), "must be an integer"));
    CHECK(ff_index_select(a, 0, i2) == NULL && strstr(ff_last_error(), "must be 1-D, got shape 1x2"));
    CHECK(ff_index_select(a, 2, ib) == NULL && strstr(ff_last_error(), "dim 3 out of range"));
    ff_tensor_release(a), ff_tensor_release(ib), ff_tensor_release(ifr), ff_tensor_release(ing);
    ff_tensor_release(inan), ff_tensor_release(i2);
}

TEST(index_add_accumulates_duplicates)
{
    int64_t s[2] = {4, 2}, ss[2] = {3, 2};
    ff_tensor *a = ff_tensor_zeros(s, 2), *src = iota(ss, 2);   /* src rows (0,1) (2,3) (4,5) */
    const float iv[] = {1, 3, 1};
    ff_tensor *ix = from(iv, 3, -1);
    CHECK(ff_index_add_(a, 0, ix, src) == FF_OK);
    const float w[] = {0, 0, 4, 6, 0, 0, 2, 3};
    CHECK(holds(a, w, 8));
    /* along dim 1, into a transposed view of a */
    ff_tensor *at_ = ff_tensor_transpose(a, 0, 1);             /* 2x4 */
    const float jv[] = {0, 0};
    ff_tensor *jx = from(jv, 2, -1), *src2 = ff_tensor_ones(s + 1, 1);
    int64_t s22[2] = {2, 2};
    ff_tensor *src3 = ff_tensor_ones(s22, 2);
    CHECK(ff_index_add_(at_, 1, jx, src3) == FF_OK);           /* a row 0 += 2 */
    const float w2[] = {2, 2, 4, 6, 0, 0, 2, 3};
    CHECK(holds(a, w2, 8));
    CHECK(ff_index_add_(a, 0, ix, src2) == FF_ERR_SHAPE && strstr(ff_last_error(), "src has shape 2, expected 3x2"));
    ff_tensor_release(a), ff_tensor_release(src), ff_tensor_release(ix), ff_tensor_release(at_);
    ff_tensor_release(jx), ff_tensor_release(src2), ff_tensor_release(src3);
}

TEST(index_add_is_the_adjoint_of_index_select)
{
    int64_t s[3] = {3, 4, 2};
    ff_tensor *a = iota(s, 3);
    /* repeated indices, valid for every dim (sizes 3, 4, 2) */
    const float iv[] = {1, 0, 1, 1, 0};
    ff_tensor *ix = from(iv, 5, -1);
    ff_tensor *at_ = ff_tensor_transpose(a, 0, 2); /* a non-contiguous source too */
    for (int dim = 0; dim < 6; dim++) {
        ff_tensor *src = dim < 3 ? a : at_;
        ff_tensor *y = ff_index_select(src, dim % 3, ix);
        REQUIRE(y);
        ff_tensor *g = ff_tensor_clone(y);
        for (int64_t i = 0; i < ff_tensor_numel(g); i++)
            ff_tensor_data(g)[i] = (float)((i * 7) % 5) - 2.0f;
        ff_tensor *z = ff_tensor_zeros(src->shape, src->ndim);
        CHECK(ff_index_add_(z, dim % 3, ix, g) == FF_OK);
        CHECK_NEAR(dot(y, g), dot(src, z), 1e-6);
        ff_tensor_release(y), ff_tensor_release(g), ff_tensor_release(z);
    }
    ff_tensor_release(a), ff_tensor_release(ix), ff_tensor_release(at_);
}

/* ---- gather / scatter ---- */

TEST(gather_dims_0_and_1)
{
    const float av[] = {1, 2, 3, 4, 5, 6}; /* 2x3 */
    ff_tensor *a = from(av, 2, 3);
    const float i0[] = {1, 0, 1, 0, 0, 0}; /* 2x3 over dim 0 */
    ff_tensor *ix0 = from(i0, 2, 3), *g0 = ff_gather(a, 0, ix0);
    const float w0[] = {4, 2, 6, 1, 2, 3};
    CHECK(holds(g0, w0, 6));
    const float i1[] = {2, 2, 0, 1}; /* 2x2 over dim 1 */
    ff_tensor *ix1 = from(i1, 2, 2), *g1 = ff_gather(a, 1, ix1);
    const float w1[] = {3, 3, 4, 5};
    CHECK(holds(g1, w1, 4) && g1->shape[0] == 2 && g1->shape[1] == 2);
    /* a transposed source and a transposed index */
    ff_tensor *at_ = ff_tensor_transpose(a, 0, 1);      /* 3x2: (1 4)(2 5)(3 6) */
    ff_tensor *ixt = ff_tensor_transpose(ix1, 0, 1);    /* (2 0)(2 1) over dim 0 */
    ff_tensor *gt = ff_gather(at_, 0, ixt);
    const float wt[] = {3, 4, 3, 5};
    CHECK(holds(gt, wt, 4));
    ff_tensor_release(a), ff_tensor_release(ix0), ff_tensor_release(g0);
    ff_tensor_release(ix1), ff_tensor_release(g1), ff_tensor_release(at_);
    ff_tensor_release(ixt), ff_tensor_release(gt);
}

TEST(scatter_and_scatter_add_dims_0_and_1)
{
    int64_t s[2] = {3, 3};
    ff_tensor *a = ff_tensor_zeros(s, 2);
    const float iv[] = {2, 0, 1, 0, 2, 1}, sv[] = {1, 2, 3, 4, 5, 6};
    ff_tensor *ix = from(iv, 2, 3), *src = from(sv, 2, 3);
    CHECK(ff_scatter_(a, 0, ix, src) == FF_OK);   /* a[ix[i][j]][j] = src[i][j] */
    const float w0[] = {4, 2, 0, 0, 0, 6, 1, 5, 0}; /* 6 overwrote 3 */
    CHECK(holds(a, w0, 9));
    ff_tensor_fill_(a, 0);
    CHECK(ff_scatter_(a, 1, ix, src) == FF_OK);   /* a[i][ix[i][j]] = src[i][j] */
    const float w1[] = {2, 3, 1, 4, 6, 5, 0, 0, 0};
    CHECK(holds(a, w1, 9));
    /* duplicates accumulate in scatter_add_ */
    const float dv[] = {0, 0, 0, 1, 0, 1};
    ff_tensor *dx = from(dv, 2, 3);
    ff_tensor_fill_(a, 0);
    CHECK(ff_scatter_add_(a, 1, dx, src) == FF_OK);
    const float w2[] = {6, 0, 0, 5, 10, 0, 0, 0, 0};
    CHECK(holds(a, w2, 9));
    ff_tensor_fill_(a, 1);
    CHECK(ff_scatter_add_(a, 0, dx, src) == FF_OK);
    const float w3[] = {2, 8, 4, 5, 1, 7, 1, 1, 1};
    CHECK(holds(a, w3, 9));
    /* src larger than index: only its leading block is read */
    int64_t big[2] = {3, 4};
    ff_tensor *sbig = iota(big, 2);
    const float one[] = {1};
    ff_tensor *i11 = from(one, 1, 1);
    ff_tensor_fill_(a, 0);
    CHECK(ff_scatter_(a, 0, i11, sbig) == FF_OK && ff_tensor_data(a)[3] == 0.0f);
    /* src is the target itself: every read must see the values before the call */
    const float cyc[] = {1, 2, 0}, v3[] = {10, 11, 12}, wcyc[] = {12, 10, 11};
    ff_tensor *ic = from(cyc, 3, 1), *t3 = from(v3, 3, 1);
    CHECK(ff_scatter_(t3, 0, ic, t3) == FF_OK && holds(t3, wcyc, 3));
    ff_tensor_release(a), ff_tensor_release(ix), ff_tensor_release(src), ff_tensor_release(dx);
    ff_tensor_release(sbig), ff_tensor_release(i11), ff_tensor_release(ic), ff_tensor_release(t3);
}

TEST(scatter_add_is_the_adjoint_of_gather)
{
    int64_t s[2] = {4, 5};
    ff_tensor *a = iota(s, 2);
    for (int dim = 0; dim < 2; dim++) {
        int64_t ishape[2] = {dim == 0 ? 6 : 4, dim == 0 ? 3 : 6};
        ff_tensor *ix = ff_tensor_empty(ishape, 2);
        for (int64_t i = 0; i < ff_tensor_numel(ix); i++)
            ff_tensor_data(ix)[i] = (float)((i * 3 + 1) % s[dim]);
        ff_tensor *y = ff_gather(a, dim, ix);
        REQUIRE(y);
        ff_tensor *g = ff_tensor_clone(y);
        for (int64_t i = 0; i < ff_tensor_numel(g); i++)
            ff_tensor_data(g)[i] = (float)((i * 5) % 7) - 3.0f;
        ff_tensor *z = ff_tensor_zeros(s, 2);
        CHECK(ff_scatter_add_(z, dim, ix, g) == FF_OK);
        CHECK_NEAR(dot(y, g), dot(a, z), 1e-6);
        ff_tensor_release(ix), ff_tensor_release(y), ff_tensor_release(g), ff_tensor_release(z);
    }
    ff_tensor_release(a);
}

TEST(gather_scatter_errors_leave_target_untouched)
{
    int64_t s[2] = {3, 2};
    ff_tensor *a = iota(s, 2);
    const float fr[] = {0, 1.5f}, oor[] = {0, 3}, ok[] = {0, 1};
    ff_tensor *ifr = from(fr, 1, 2), *ior = from(oor, 1, 2), *iok = from(ok, 1, 2);
    CHECK(ff_gather(a, 0, ifr) == NULL && strstr(ff_last_error(), "gather: index must be an integer, got 2.5"));
    CHECK(ff_gather(a, 0, ior) == NULL && strstr(ff_last_error(), "gather: index 4 out of range for dim 1 of size 3"));
    ff_tensor *src = ff_tensor_ones(s, 2);
    CHECK(ff_scatter_add_(a, 0, ior, src) == FF_ERR_RANGE);
    const float w[] = {0, 1, 2, 3, 4, 5};
    CHECK(holds(a, w, 6));
    int64_t r1[1] = {2}, big[2] = {4, 2};
    ff_tensor *i1 = ff_tensor_zeros(r1, 1), *ibig = ff_tensor_zeros(big, 2);
    CHECK(ff_gather(a, 0, i1) == NULL && strstr(ff_last_error(), "index has shape 2"));
    CHECK(ff_gather(a, 1, ibig) == NULL && strstr(ff_last_error(), "except in dim 2"));
    ff_tensor *gbig = ff_gather(a, 0, ibig); /* larger along dim itself is fine */
    CHECK(gbig && gbig->shape[0] == 4);
    ff_tensor_release(gbig);
    int64_t s1[2] = {1, 1};
    ff_tensor *tiny = ff_tensor_ones(s1, 2);
    CHECK(ff_scatter_(a, 0, iok, tiny) == FF_ERR_SHAPE && strstr(ff_last_error(), "src's"));
    /* writing through an expanded dim */
    ff_tensor *row = ff_tensor_zeros(s1, 2), *e = ff_tensor_expand(row, s, 2);
    CHECK(ff_scatter_(e, 0, iok, src) == FF_ERR_ARG && strstr(ff_last_error(), "expanded dim 1"));
    const float iv[] = {0};
    ff_tensor *ix = from(iv, 1, -1);
    CHECK(ff_index_add_(e, 1, ix, tiny) == FF_ERR_ARG && strstr(ff_last_error(), "stride 0"));
    ff_tensor_release(a), ff_tensor_release(ifr), ff_tensor_release(ior), ff_tensor_release(iok);
    ff_tensor_release(src), ff_tensor_release(i1), ff_tensor_release(ibig), ff_tensor_release(tiny);
    ff_tensor_release(row), ff_tensor_release(e), ff_tensor_release(ix);
}
