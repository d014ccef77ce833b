/* test_reduce.c: sum, mean, max/min, argmax/argmin, var and norm against
 * double-precision reference loops, on every dim, views, and empty dims. */
#include <stdlib.h>
#include <string.h>
#include "harness.h"

/* ---- helpers ---- */

/* Values in -3..3 by 0.25 (plenty of ties for max/min), from a fixed LCG. */
static ff_tensor *filled(const int64_t *shape, int ndim, uint32_t seed)
{
    ff_tensor *t = ff_tensor_empty(shape, ndim);
    float *d = ff_tensor_data(t);
    for (int64_t i = 0; i < ff_tensor_numel(t); i++) {
        seed = seed * 1664525u + 1013904223u;
        d[i] = (float)((int)(seed >> 24) % 25 - 12) * 0.25f;
    }
    return t;
}

static bool next_index(int64_t *idx, const int64_t *shape, int ndim)
{
    for (int i = ndim - 1; i >= 0; i--) {
        if (++idx[i] < shape[i])
            return true;
        idx[i] = 0;
    }
    return false;
}

static float elem(const ff_tensor *t, const int64_t *idx)
{
    return ff_tensor_data(t)[ff_tensor_offset_of(t, idx)];
}

typedef enum {
    R_SUM, R_MEAN, R_MAX, R_MIN, R_ARGMAX, R_ARGMIN, R_VAR, R_VAR_BIASED,
    R_NORM1, R_NORM2, R_NORM3, R_NORM_INF, R_COUNT
} rkind;

static const char *const rnames[R_COUNT] = {
    "sum", "mean", "max", "min", "argmax", "argmin", "var", "var(biased)",
    "norm1", "norm2", "norm3", "norm_inf",
};

static ff_tensor *run(rkind k, const ff_tensor *a, int dim, bool keepdim)
{
    switch (k) {
    case R_SUM: return ff_sum(a, dim, keepdim);
    case R_MEAN: return ff_mean(a, dim, keepdim);
    case R_MAX: return ff_max(a, dim, keepdim, NULL);
    case R_MIN: return ff_min(a, dim, keepdim, NULL);
    case R_ARGMAX: return ff_argmax(a, dim, keepdim);
    case R_ARGMIN: return ff_argmin(a, dim, keepdim);
    case R_VAR: return ff_var(a, dim, true, keepdim);
    case R_VAR_BIASED: return ff_var(a, dim, false, keepdim);
    case R_NORM1: return ff_norm(a, 1, dim, keepdim);
    case R_NORM2: return ff_norm(a, 2, dim, keepdim);
    case R_NORM3: return ff_norm(a, 3, dim, keepdim);
    case R_NORM_INF: return ff_norm(a, INFINITY, dim, keepdim);
    default: return NULL;
    }
}

/* The reference on a list of values in reduction order. */
static double ref_of(rkind k, const double *v, int64_t n)
{
    double s = 0, best = v[0];
    int64_t at = 0;
    switch (k) {
    case R_SUM:
    case R_MEAN:
        for (int64_t i = 0; i < n; i++)
            s += v[i];
        return k == R_SUM ? s : s / n;
    case R_MAX:
    case R_ARGMAX:
    case R_MIN:
    case R_ARGMIN:
        for (int64_t i = 1; i < n && !isnan(best); i++) {
            bool better = (k == R_MAX || k == R_ARGMAX) ? v[i] > best : v[i] < best;
            if (better || isnan(v[i]))
                best = v[i], at = i;
        }
        return k == R_MAX || k == R_MIN ? best : (double)at;
    case R_VAR:
    case R_VAR_BIASED: {
        double m = ref_of(R_MEAN, v, n);
        for (int64_t i = 0; i < n; i++)
            s += (v[i] - m) * (v[i] - m);
        double d = k == R_VAR ? n - 1 : n;
        return d > 0 ? s / d : NAN;
    }
    case R_NORM1:
    case R_NORM2:
    case R_NORM3: {
        double p = k == R_NORM1 ? 1 : k == R_NORM2 ? 2 : 3;
        for (int64_t i = 0; i < n; i++)
            s += pow(fabs(v[i]), p);
        return pow(s, 1 / p);
    }
    case R_NORM_INF:
        for (int64_t i = 0; i < n; i++)
            s = isnan(v[i]) || isnan(s) ? NAN : fmax(s, fabs(v[i]));
        return s;
    default:
        return NAN;
    }
}

static bool close_to(float got, double want)
{
    if (isnan(want) || isnan(got))
        return isnan(want) && isnan(got);
    return fabs((double)got - want) <= 1e-5 * fmax(1.0, fabs(want));
}

/* Checks shape and every value of reduction k of a over dim; returns the
 * number of problems. The values along the reduced dim are gathered in order
 * (row-major over all elements when dim < 0) and fed to ref_of. */
static int check_reduction(rkind k, const ff_tensor *a, int dim, bool keepdim)
{
    ff_tensor *out = run(k, a, dim, keepdim);
    if (!out)
        return 1;
    int bad = 0;
    /* expected shape */
    int64_t shape[FF_MAX_DIMS], kept[FF_MAX_DIMS];
    int nd = 0, nk = 0;
    for (int i = 0; i < a->ndim; i++) {
        if (dim >= 0 && i != dim)
            shape[nd++] = a->shape[i], kept[nk++] = i;
        else if (keepdim)
            shape[nd++] = 1;
    }
    bad += out->ndim != nd || !ff_tensor_is_contiguous(out);
    for (int i = 0; i < nd && !bad; i++)
        bad += out->shape[i] != shape[i];
    if (bad) {
        ff_tensor_release(out);
        return bad;
    }
    int64_t total = ff_tensor_numel(a), n = dim >= 0 ? a->shape[dim] : total;
    double *v = malloc((size_t)(n > 0 ? n : 1) * sizeof *v);
    int64_t oshape[FF_MAX_DIMS], oidx[FF_MAX_DIMS] = {0};
    for (int i = 0; i < nk; i++)
        oshape[i] = a->shape[kept[i]];
    for (int64_t j = 0; j < ff_tensor_numel(out); j++) {
        int64_t idx[FF_MAX_DIMS] = {0};
        if (dim >= 0) {
            for (int i = 0; i < nk; i++)
                idx[kept[i]] = oidx[i];
            for (int64_t r = 0; r < n; r++) {
                idx[dim] = r;
                v[r] = elem(a, idx);
            }
            next_index(oidx, oshape, nk);
        } else {
            int64_t r = 0;
            do
                v[r++] = elem(a, idx);
            while (next_index(idx, a->shape, a->ndim));
        }
        bad += !close_to(ff_tensor_data(out)[j], ref_of(k, v, n));
    }
    free(v);
    ff_tensor_release(out);
    return bad;
}

/* Every reduction, every dim (and all), with and without keepdim. */
static int check_all(const ff_tensor *a)
{
    int bad = 0;
    for (int k = 0; k < R_COUNT; k++)
        for (int dim = -1; dim < a->ndim; dim++)
            for (int keep = 0; keep < 2; keep++) {
                int b = check_reduction((rkind)k, a, dim, keep);
                if (b)
                    fprintf(stderr, "  %s dim %d keepdim %d: %d wrong\n", rnames[k], dim, keep, b);
                bad += b;
            }
    return bad;
}

/* ---- every reduction on every dim ---- */

TEST(reduce_every_dim_of_a_3d_tensor)
{
    int64_t s[3] = {3, 4, 5};
    ff_tensor *a = filled(s, 3, 1);
    CHECK(check_all(a) == 0);
    ff_tensor_release(a);
}

TEST(reduce_views_transposed_permuted_narrowed_expanded)
{
    int64_t s[3] = {3, 4, 5};
    ff_tensor *a = filled(s, 3, 2);
    int perm[3] = {2, 0, 1};
    ff_tensor *p = ff_tensor_permute(a, perm, 3);     /* 5x3x4 */
    ff_tensor *t = ff_tensor_transpose(a, 0, 2);      /* 5x4x3 */
    ff_tensor *n = ff_tensor_narrow(a, 1, 1, 2);      /* 3x2x5 */
    int64_t row[3] = {1, 4, 5}, e[3] = {3, 4, 5};
    ff_tensor *r = filled(row, 3, 3), *x = ff_tensor_expand(r, e, 3);
    CHECK(check_all(p) == 0);
    CHECK(check_all(t) == 0);
    CHECK(check_all(n) == 0);
    CHECK(check_all(x) == 0);
    int64_t m[2] = {6, 7};
    ff_tensor *b = filled(m, 2, 4), *bt = ff_tensor_transpose(b, 0, 1);
    CHECK(check_all(bt) == 0);
    ff_tensor *ts[] = {a, p, t, n, r, x, b, bt};
    for (int i = 0; i < 8; i++)
        ff_tensor_release(ts[i]);
}

TEST(reduce_rank_0_and_rank_1)
{
    ff_tensor *s = ff_tensor_scalar(-2.5f);
    CHECK(check_all(s) == 0);
    ff_tensor *m = ff_max(s, -1, false, NULL);
    CHECK(m && m->ndim == 0 && ff_tensor_data(m)[0] == -2.5f);
    CHECK(ff_sum(s, 0, false) == NULL &&
          strstr(ff_last_error(), "sum: dim 1 out of range for a tensor of rank 0"));
    int64_t n[1] = {37}; /* not a multiple of the 8 partial sums */
    ff_tensor *v = filled(n, 1, 5);
    CHECK(check_all(v) == 0);
    ff_tensor_release(s), ff_tensor_release(m), ff_tensor_release(v);
}

TEST(reduce_large_rows_and_columns)
{
    /* long rows (the partial-sum path) and wide columns (the running-sum
     * path, with a tail past the vector bulk) */
    int64_t s[2] = {13, 1031};
    ff_tensor *a = filled(s, 2, 6);
    for (int k = 0; k < R_COUNT; k++)
        for (int dim = -1; dim < 2; dim++)
            CHECK(check_reduction((rkind)k, a, dim, false) == 0);
    int64_t big[1] = {1000003};
    ff_tensor *b = filled(big, 1, 7);
    double want = 0;
    for (int64_t i = 0; i < big[0]; i++)
        want += ff_tensor_data(b)[i];
    ff_tensor *sum = ff_sum(b, 0, false), *again = ff_sum(b, -1, false);
    REQUIRE(sum && again);
    CHECK_NEAR(ff_tensor_data(sum)[0], want, 1e-3);
    CHECK(memcmp(ff_tensor_data(sum), ff_tensor_data(again), sizeof(float)) == 0);
    ff_tensor_release(a), ff_tensor_release(b), ff_tensor_release(sum), ff_tensor_release(again);
}

/* ---- keepdim ---- */

TEST(reduce_keepdim_shapes)
{
    int64_t s[3] = {2, 3, 4};
    ff_tensor *a = filled(s, 3, 8);
    ff_tensor *k1 = ff_sum(a, 1, true), *k0 = ff_mean(a, -1, true), *n1 = ff_var(a, 2, true, false);
    REQUIRE(k1 && k0 && n1);
    CHECK(k1->ndim == 3 && k1->shape[0] == 2 && k1->shape[1] == 1 && k1->shape[2] == 4);
    CHECK(k0->ndim == 3 && k0->shape[0] == 1 && k0->shape[1] == 1 && k0->shape[2] == 1);
    CHECK(n1->ndim == 2 && n1->shape[0] == 2 && n1->shape[1] == 3);
    ff_tensor *idx = NULL, *mx = ff_max(a, 0, true, &idx);
    REQUIRE(mx && idx);
    CHECK(idx->ndim == 3 && idx->shape[0] == 1 && idx->shape[2] == 4 && ff_shape_equal(mx, idx));
    ff_tensor *ts[] = {a, k1, k0, n1, idx, mx};
    for (int i = 0; i < 6; i++)
        ff_tensor_release(ts[i]);
}

/* ---- empty dims ---- */

TEST(reduce_empty_dims)
{
    int64_t s[3] = {2, 0, 3};
    ff_tensor *a = ff_tensor_zeros(s, 3);
    ff_tensor *sm = ff_sum(a, 1, false), *mn = ff_mean(a, 1, false), *vr = ff_var(a, 1, true, false),
              *nm = ff_norm(a, 2, 1, false), *ni = ff_norm(a, INFINITY, 1, false),
              *n3 = ff_norm(a, 3, -1, false), *all = ff_sum(a, -1, false),
              *mall = ff_mean(a, -1, false);
    REQUIRE(sm && mn && vr && nm && ni && n3 && all && mall);
    CHECK(sm->ndim == 2 && sm->shape[0] == 2 && sm->shape[1] == 3);
    int ok = 1;
    for (int i = 0; i < 6; i++)
        ok &= ff_tensor_data(sm)[i] == 0 && isnan(ff_tensor_data(mn)[i]) &&
              isnan(ff_tensor_data(vr)[i]) && ff_tensor_data(nm)[i] == 0 &&
              ff_tensor_data(ni)[i] == 0;
    CHECK(ok);
    CHECK(ff_tensor_data(all)[0] == 0 && isnan(ff_tensor_data(mall)[0]) && ff_tensor_data(n3)[0] == 0);
    /* max/min have no value on an empty dim */
    ff_tensor *idx = (ff_tensor *)1;
    CHECK(ff_max(a, 1, false, &idx) == NULL && idx == NULL && ff_last_status() == FF_ERR_SHAPE);
    CHECK(strstr(ff_last_error(), "max:") && strstr(ff_last_error(), "2x0x3") &&
          strstr(ff_last_error(), "dim 2"));
    CHECK(ff_argmin(a, -1, false) == NULL && strstr(ff_last_error(), "argmin:") &&
          strstr(ff_last_error(), "2x0x3"));
    CHECK(ff_min(a, -1, true, NULL) == NULL && strstr(ff_last_error(), "min:"));
    /* reducing a non-empty dim of an empty tensor is fine: the result is empty */
    ff_tensor *m0 = ff_max(a, 0, false, NULL), *m2 = ff_argmax(a, 2, true);
    REQUIRE(m0 && m2);
    CHECK(m0->ndim == 2 && m0->shape[0] == 0 && m0->shape[1] == 3);
    CHECK(m2->ndim == 3 && m2->shape[1] == 0 && m2->shape[2] == 1);
    ff_tensor *ts[] = {a, sm, mn, vr, nm, ni, n3, all, mall, m0, m2};
    for (int i = 0; i < 11; i++)
        ff_tensor_release(ts[i]);
}

/* ---- indices ---- */

TEST(reduce_indices_ties_nan_and_flat)
{
    int64_t s4[1] = {4};
    float tie[4] = {1, 3, 3, 2}, nan1[4] = {2, NAN, 5, NAN}, nan0[4] = {NAN, 9, NAN, -9};
    ff_tensor *t = ff_tensor_from_data(tie, s4, 1), *n = ff_tensor_from_data(nan1, s4, 1),
              *z = ff_tensor_from_data(nan0, s4, 1);
    ff_tensor *i1 = ff_argmax(t, 0, false), *i2 = ff_argmin(t, 0, false);
    CHECK(ff_tensor_data(i1)[0] == 1 && ff_tensor_data(i2)[0] == 0);
    ff_tensor *ix = NULL, *mx = ff_max(n, 0, false, &ix), *iy = NULL, *my = ff_min(n, -1, false, &iy);
    REQUIRE(mx && ix && my && iy);
    CHECK(isnan(ff_tensor_data(mx)[0]) && ff_tensor_data(ix)[0] == 1);
    CHECK(isnan(ff_tensor_data(my)[0]) && ff_tensor_data(iy)[0] == 1);
    ff_tensor *iz = ff_argmin(z, 0, false), *iw = ff_argmax(z, -1, false);
    CHECK(ff_tensor_data(iz)[0] == 0 && ff_tensor_data(iw)[0] == 0); /* the first NaN */
    /* along dim 0 of a contiguous matrix (the column path): ties and NaN */
    int64_t s23[2] = {3, 3};
    float m[9] = {1, 5, NAN,
                  4, 5, 2,
                  4, NAN, NAN};
    ff_tensor *a = ff_tensor_from_data(m, s23, 2), *ci = NULL, *cv = ff_max(a, 0, false, &ci);
    REQUIRE(cv && ci);
    CHECK(ff_tensor_data(cv)[0] == 4 && ff_tensor_data(ci)[0] == 1);       /* tie: first */
    CHECK(isnan(ff_tensor_data(cv)[1]) && ff_tensor_data(ci)[1] == 2);     /* NaN wins */
    CHECK(isnan(ff_tensor_data(cv)[2]) && ff_tensor_data(ci)[2] == 0);     /* the first NaN */
    ff_tensor *cmin = ff_argmin(a, 0, false);
    CHECK(ff_tensor_data(cmin)[0] == 0 && ff_tensor_data(cmin)[1] == 2 && ff_tensor_data(cmin)[2] == 0);
    /* dim < 0: the flat row-major position, also through a transposed view */
    int64_t s2x3[2] = {2, 3};
    float b[6] = {0, 5, 1,
                  2, 3, 4};
    ff_tensor *bb = ff_tensor_from_data(b, s2x3, 2), *bt = ff_tensor_transpose(bb, 0, 1);
    ff_tensor *f1 = ff_argmax(bb, -1, false), *f2 = ff_argmax(bt, -1, false),
              *f3 = ff_argmin(bt, -1, true);
    REQUIRE(f1 && f2 && f3);
    CHECK(f1->ndim == 0 && ff_tensor_data(f1)[0] == 1);
    CHECK(ff_tensor_data(f2)[0] == 2); /* bt = [[0,2],[5,3],[1,4]] */
    CHECK(f3->ndim == 2 && ff_tensor_data(f3)[0] == 0);
    ff_tensor *ts[] = {t, n, z, i1, i2, ix, mx, iy, my, iz, iw, a, ci, cv, cmin, bb, bt, f1, f2, f3};
    for (int i = 0; i < 20; i++)
        ff_tensor_release(ts[i]);
}

/* ---- var and norm values ---- */

TEST(reduce_var_values)
{
    int64_t s4[1] = {4}, s1[1] = {1};
    float x[4] = {1, 2, 3, 4}, off[4] = {10001, 10002, 10003, 10004};
    ff_tensor *a = ff_tensor_from_data(x, s4, 1), *b = ff_tensor_from_data(off, s4, 1),
              *one = ff_tensor_full(s1, 1, 7.0f);
    ff_tensor *vu = ff_var(a, 0, true, false), *vb = ff_var(a, -1, false, false),
              *vo = ff_var(b, 0, true, false), *v1 = ff_var(one, 0, true, false),
              *v1b = ff_var(one, 0, false, false);
    REQUIRE(vu && vb && vo && v1 && v1b);
    CHECK_NEAR(ff_tensor_data(vu)[0], 5.0 / 3, 1e-6);
    CHECK_NEAR(ff_tensor_data(vb)[0], 1.25, 1e-6);
    CHECK_NEAR(ff_tensor_data(vo)[0], 5.0 / 3, 1e-6); /* two-pass: no cancellation */
    CHECK(isnan(ff_tensor_data(v1)[0]) && ff_tensor_data(v1b)[0] == 0);
    ff_tensor *ts[] = {a, b, one, vu, vb, vo, v1, v1b};
    for (int i = 0; i < 8; i++)
        ff_tensor_release(ts[i]);
}

TEST(reduce_norm_values_and_errors)
{
    int64_t s2[1] = {2}, s3[1] = {3};
    float big[2] = {3e30f, 4e30f}, huge[2] = {1e30f, 1e30f}, x[3] = {3, -4, 0},
          nx[3] = {1, NAN, 2};
    ff_tensor *b = ff_tensor_from_data(big, s2, 1), *h = ff_tensor_from_data(huge, s2, 1),
              *a = ff_tensor_from_data(x, s3, 1), *n = ff_tensor_from_data(nx, s3, 1);
    ff_tensor *n2 = ff_norm(b, 2, -1, false), *n3 = ff_norm(h, 12, 0, false),
              *n1 = ff_norm(a, 1, 0, false), *ni = ff_norm(a, INFINITY, 0, false),
              *nn = ff_norm(n, INFINITY, 0, false), *nh = ff_norm(a, 0.5, 0, false);
    REQUIRE(n2 && n3 && n1 && ni && nn && nh);
    CHECK(isfinite(ff_tensor_data(n2)[0]));
    CHECK_NEAR(ff_tensor_data(n2)[0] / 1e30, 5.0, 1e-5);           /* squares overflow float */
    CHECK_NEAR(ff_tensor_data(n3)[0] / 1e30, pow(2.0, 1.0 / 12), 1e-5); /* x^12 overflows double */
    CHECK(ff_tensor_data(n1)[0] == 7 && ff_tensor_data(ni)[0] == 4 && isnan(ff_tensor_data(nn)[0]));
    CHECK_NEAR(ff_tensor_data(nh)[0], pow(sqrt(3.0) + 2, 2), 1e-4);
    CHECK(ff_norm(a, 0, 0, false) == NULL && ff_last_status() == FF_ERR_ARG &&
          strstr(ff_last_error(), "norm: p must be positive"));
    CHECK(ff_norm(a, -2, 0, false) == NULL && ff_norm(a, NAN, 0, false) == NULL &&
          ff_norm(a, -INFINITY, -1, false) == NULL);
    ff_tensor *ts[] = {b, h, a, n, n2, n3, n1, ni, nn, nh};
    for (int i = 0; i < 10; i++)
        ff_tensor_release(ts[i]);
}

TEST(reduce_nan_propagates_through_sums)
{
    int64_t s[2] = {2, 3};
    float x[6] = {1, NAN, 2, 3, 4, 5};
    ff_tensor *a = ff_tensor_from_data(x, s, 2);
    ff_tensor *r = ff_sum(a, 1, false), *c = ff_mean(a, 0, false), *v = ff_var(a, 1, true, false);
    REQUIRE(r && c && v);
    CHECK(isnan(ff_tensor_data(r)[0]) && ff_tensor_data(r)[1] == 12);
    CHECK(ff_tensor_data(c)[0] == 2 && isnan(ff_tensor_data(c)[1]) && ff_tensor_data(c)[2] == 3.5f);
    CHECK(isnan(ff_tensor_data(v)[0]) && ff_tensor_data(v)[1] == 1);
    ff_tensor_release(a), ff_tensor_release(r), ff_tensor_release(c), ff_tensor_release(v);
}

/* ---- errors ---- */

TEST(reduce_dim_errors)
{
    int64_t s[2] = {2, 3};
    ff_tensor *a = ff_tensor_zeros(s, 2), *ix = (ff_tensor *)1;
    CHECK(ff_sum(a, 2, false) == NULL && ff_last_status() == FF_ERR_RANGE);
    CHECK(strcmp(ff_last_error(), "sum: dim 3 out of range for a tensor of rank 2") == 0);
    CHECK(ff_mean(a, 5, true) == NULL && strstr(ff_last_error(), "mean: dim 6 out of range"));
    CHECK(ff_max(a, 2, false, &ix) == NULL && ix == NULL && strstr(ff_last_error(), "max: dim 3"));
    CHECK(ff_argmin(a, 2, false) == NULL && strstr(ff_last_error(), "argmin: dim 3"));
    CHECK(ff_var(a, 2, true, false) == NULL && strstr(ff_last_error(), "var: dim 3"));
    CHECK(ff_norm(a, 2, 2, false) == NULL && strstr(ff_last_error(), "norm: dim 3"));
    ff_tensor_release(a);
}

TEST(reduce_survives_allocation_failures)
{
    int64_t s[2] = {4, 5};
    ff_tensor *a = filled(s, 2, 9), *t = ff_tensor_transpose(a, 0, 1);
    for (int k = 1; k <= 5; k++)
        for (int r = 0; r < R_COUNT; r++) {
            ff_mem_fail_after(k);
            ff_tensor *out = run((rkind)r, t, 1, false);
            ff_mem_fail_after(0);
            CHECK(out != NULL || ff_last_status() == FF_ERR_MEM);
            ff_tensor_release(out);
        }
    ff_tensor *ix = NULL;
    ff_mem_fail_after(3);
    ff_tensor *m = ff_max(t, 0, false, &ix);
    ff_mem_fail_after(0);
    CHECK((m == NULL) == (ix == NULL));
    ff_tensor_release(m), ff_tensor_release(ix);
    ff_tensor_release(a), ff_tensor_release(t);
}
