/*
 * test_eigh.c: ff_eigh (LAPACK ssyevr) by its defining properties, A·v = λv
 * with orthonormal v, on batches, views and partial spectra; only the lower
 * triangle read; the sign rule; errors with nothing allocated. And
 * ff_unfold against the definition of im2col.
 */
#include <string.h>
#include "harness.h"

/* A batch of symmetric matrices with random entries (both triangles). */
static ff_tensor *symmetric(int64_t batch, int64_t d, uint64_t seed)
{
    ff_rng g;
    ff_rng_seed(&g, seed);
    int64_t s[3] = {batch, d, d};
    ff_tensor *t = ff_tensor_empty(s, 3);
    if (!t)
        return NULL;
    ff_randn_(t, &g, 0.0, 1.0);
    float *a = ff_tensor_data(t);
    for (int64_t b = 0; b < batch; b++, a += d * d)
        for (int64_t i = 0; i < d; i++)
            for (int64_t j = 0; j < i; j++)
                a[j * d + i] = a[i * d + j];
    return t;
}

/* Largest |A v_j - λ_j v_j| and |VᵀV - I| over matrix b of the batch. */
static double residual(const float *a, const float *vals, const float *vecs, int64_t d, int64_t k)
{
    double worst = 0;
    for (int64_t j = 0; j < k; j++)
        for (int64_t i = 0; i < d; i++) {
            double s = 0;
            for (int64_t p = 0; p < d; p++)
                s += (double)a[i * d + p] * vecs[p * k + j];
            double e = fabs(s - (double)vals[j] * vecs[i * k + j]);
            worst = e > worst ? e : worst;
        }
    for (int64_t j = 0; j < k; j++)
        for (int64_t l = 0; l < k; l++) {
            double s = 0;
            for (int64_t p = 0; p < d; p++)
                s += (double)vecs[p * k + j] * vecs[p * k + l];
            double e = fabs(s - (j == l));
            worst = e > worst ? e : worst;
        }
    return worst;
}

TEST(eigh_known_matrix)
{
    float data[9] = {2, 1, 0, 1, 2, 0, 0, 0, 5};
    int64_t s[2] = {3, 3};
    ff_tensor *A = ff_tensor_from_data(data, s, 2), *w, *v;
    REQUIRE(A);
    REQUIRE(ff_eigh(A, 3, false, &w, &v) == FF_OK);
    CHECK(w->ndim == 1 && w->shape[0] == 3);
    CHECK(v->ndim == 2 && v->shape[0] == 3 && v->shape[1] == 3);
    const float *wv = ff_tensor_data(w), *vv = ff_tensor_data(v);
    CHECK_NEAR(wv[0], 1, 1e-5);
    CHECK_NEAR(wv[1], 3, 1e-5);
    CHECK_NEAR(wv[2], 5, 1e-5);
    /* λ = 1: (1, -1, 0)/√2, its largest entry (the first on ties) positive */
    CHECK_NEAR(vv[0 * 3 + 0], sqrt(0.5), 1e-5);
    CHECK_NEAR(vv[1 * 3 + 0], -sqrt(0.5), 1e-5);
    CHECK_NEAR(vv[2 * 3 + 2], 1, 1e-5);
    CHECK(residual(data, wv, vv, 3, 3) < 1e-5);
    ff_tensor_release(w), ff_tensor_release(v), ff_tensor_release(A);
}

TEST(eigh_batched_partial_spectra)
{
    int64_t d = 12;
    ff_tensor *A = symmetric(3, d, 7), *w, *v, *ws, *vs, *wl, *vl;
    REQUIRE(A);
    REQUIRE(ff_eigh(A, d, false, &w, &v) == FF_OK);
    REQUIRE(ff_eigh(A, 2, false, &ws, &vs) == FF_OK);
    REQUIRE(ff_eigh(A, 3, true, &wl, &vl) == FF_OK);
    CHECK(ws->ndim == 2 && ws->shape[0] == 3 && ws->shape[1] == 2);
    CHECK(vs->ndim == 3 && vs->shape[1] == d && vs->shape[2] == 2);
    for (int64_t b = 0; b < 3; b++) {
        const float *a = ff_tensor_data(A) + b * d * d;
        const float *all = ff_tensor_data(w) + b * d;
        CHECK(residual(a, all, ff_tensor_data(v) + b * d * d, d, d) < 1e-4);
        CHECK(residual(a, ff_tensor_data(ws) + b * 2, ff_tensor_data(vs) + b * d * 2, d, 2) < 1e-4);
        CHECK(residual(a, ff_tensor_data(wl) + b * 3, ff_tensor_data(vl) + b * d * 3, d, 3) < 1e-4);
        for (int64_t j = 0; j + 1 < d; j++)
            CHECK(all[j] <= all[j + 1]);
        /* the smallest two and the largest three, ascending */
        CHECK_NEAR(ff_tensor_data(ws)[b * 2 + 1], all[1], 1e-4);
        CHECK_NEAR(ff_tensor_data(wl)[b * 3 + 0], all[d - 3], 1e-4);
        CHECK_NEAR(ff_tensor_data(wl)[b * 3 + 2], all[d - 1], 1e-4);
    }
    ff_tensor_release(w), ff_tensor_release(v), ff_tensor_release(ws);
    ff_tensor_release(vs), ff_tensor_release(wl), ff_tensor_release(vl);
    ff_tensor_release(A);
}

TEST(eigh_reads_the_lower_triangle_of_any_layout)
{
    int64_t d = 6;
    ff_tensor *A = symmetric(1, d, 3), *w0, *v0, *w1, *v1, *w2, *v2;
    REQUIRE(A);
    REQUIRE(ff_eigh(A, 2, false, &w0, &v0) == FF_OK);
    /* garbage above the diagonal is never read */
    ff_tensor *B = ff_tensor_clone(A);
    REQUIRE(B);
    float *b = ff_tensor_data(B);
    for (int64_t i = 0; i < d; i++)
        for (int64_t j = i + 1; j < d; j++)
            b[i * d + j] = (j % 2) ? NAN : 1e6f;
    REQUIRE(ff_eigh(B, 2, false, &w1, &v1) == FF_OK);
    /* a transposed view of a symmetric matrix is the same matrix */
    ff_tensor *T = ff_tensor_transpose(A, 1, 2);
    REQUIRE(T && !ff_tensor_is_contiguous(T));
    REQUIRE(ff_eigh(T, 2, false, &w2, &v2) == FF_OK);
    for (int64_t i = 0; i < 2; i++) {
        CHECK(ff_tensor_data(w1)[i] == ff_tensor_data(w0)[i]);
        CHECK_NEAR(ff_tensor_data(w2)[i], ff_tensor_data(w0)[i], 1e-5);
    }
    for (int64_t i = 0; i < 2 * d; i++) {
        CHECK(ff_tensor_data(v1)[i] == ff_tensor_data(v0)[i]);
        CHECK_NEAR(ff_tensor_data(v2)[i], ff_tensor_data(v0)[i], 1e-4);
    }
    ff_tensor_release(w0), ff_tensor_release(v0), ff_tensor_release(w1), ff_tensor_release(v1);
    ff_tensor_release(w2), ff_tensor_release(v2), ff_tensor_release(T), ff_tensor_release(B);
    ff_tensor_release(A);
}

TEST(eigh_errors_allocate_nothing)
{
    ff_tensor *w = (ff_tensor *)1, *v = (ff_tensor *)1;
    int64_t s1 = 3, s2[2] = {3, 4}, s3[2] = {3, 3}, s0[2] = {0, 0};
    ff_tensor *vec = ff_tensor_ones(&s1, 1), *rect = ff_tensor_ones(s2, 2);
    ff_tensor *sq = ff_tensor_ones(s3, 2), *empty = ff_tensor_ones(s0, 2);
    REQUIRE(vec && rect && sq && empty);
    CHECK(ff_eigh(vec, 1, false, &w, &v) == FF_ERR_SHAPE && !w && !v);
    CHECK(strstr(ff_last_error(), "at least 2 dims"));
    CHECK(ff_eigh(rect, 1, false, &w, &v) == FF_ERR_SHAPE && !w && !v);
    CHECK(strstr(ff_last_error(), "linalg.eigh: A must be square, got 3x4"));
    CHECK(ff_eigh(empty, 1, false, &w, &v) == FF_ERR_SHAPE);
    CHECK(ff_eigh(sq, 0, false, &w, &v) == FF_ERR_ARG);
    CHECK(ff_eigh(sq, 4, true, &w, &v) == FF_ERR_ARG);
    CHECK(strstr(ff_last_error(), "k must be in 1..3"));
    ff_tensor_data(sq)[3] = INFINITY; /* (2, 1): in the lower triangle */
    CHECK(ff_eigh(sq, 1, false, &w, &v) == FF_ERR_ARG && !w && !v);
    CHECK(strstr(ff_last_error(), "an infinity at (2, 1)"));
    ff_tensor_data(sq)[3] = NAN;
    CHECK(ff_eigh(sq, 1, false, &w, &v) == FF_ERR_ARG);
    CHECK(strstr(ff_last_error(), "a NaN"));
    ff_tensor_release(vec), ff_tensor_release(rect), ff_tensor_release(sq);
    ff_tensor_release(empty);
}

TEST(eigh_empty_batch)
{
    int64_t s[3] = {0, 4, 4};
    ff_tensor *A = ff_tensor_zeros(s, 3), *w, *v;
    REQUIRE(A);
    REQUIRE(ff_eigh(A, 2, false, &w, &v) == FF_OK);
    CHECK(w->ndim == 2 && w->shape[0] == 0 && w->shape[1] == 2);
    CHECK(v->ndim == 3 && v->shape[0] == 0 && v->shape[1] == 4 && v->shape[2] == 2);
    ff_tensor_release(w), ff_tensor_release(v), ff_tensor_release(A);
}

/* ---- unfold ---- */

/* x[n][c][h][w] of a contiguous (N, C, H, W) tensor, 0 outside. */
static float pixel(const ff_tensor *x, int64_t n, int64_t c, int64_t h, int64_t w)
{
    const int64_t *s = x->shape;
    if (h < 0 || h >= s[2] || w < 0 || w >= s[3])
        return 0.0f;
    return ff_tensor_data(x)[((n * s[1] + c) * s[2] + h) * s[3] + w];
}

TEST(unfold_matches_the_definition)
{
    ff_rng g;
    ff_rng_seed(&g, 11);
    int64_t s[4] = {2, 3, 7, 6};
    ff_tensor *x = ff_tensor_empty(s, 4);
    REQUIRE(x);
    ff_randn_(x, &g, 0.0, 1.0);
    int64_t k[2] = {3, 2}, st[2] = {2, 1}, pad[2] = {1, 0}, dil[2] = {1, 2};
    ff_tensor *u = ff_unfold(x, k, st, pad, dil);
    REQUIRE(u);
    int64_t OH = (7 + 2 - 1 * 2 - 1) / 2 + 1, OW = (6 - 2 * 1 - 1) / 1 + 1;
    CHECK(u->ndim == 3 && u->shape[0] == 2 && u->shape[1] == 3 * 3 * 2 && u->shape[2] == OH * OW);
    double worst = 0;
    for (int64_t n = 0; n < 2; n++)
        for (int64_t c = 0; c < 3; c++)
            for (int64_t i = 0; i < 3; i++)
                for (int64_t j = 0; j < 2; j++)
                    for (int64_t oh = 0; oh < OH; oh++)
                        for (int64_t ow = 0; ow < OW; ow++) {
                            int64_t row = (c * 3 + i) * 2 + j, col = oh * OW + ow;
                            float want = pixel(x, n, c, oh * 2 - 1 + i, ow + 2 * j);
                            float got = ff_tensor_data(u)[(n * u->shape[1] + row) * u->shape[2] + col];
                            worst = fmax(worst, fabs(want - got));
                        }
    CHECK(worst == 0);
    int64_t zero[2] = {0, 1};
    CHECK(!ff_unfold(x, zero, st, pad, dil) && strstr(ff_last_error(), "unfold: kernel must be >= 1"));
    int64_t big[2] = {9, 9};
    CHECK(!ff_unfold(x, big, st, pad, dil) && strstr(ff_last_error(), "output size"));
    ff_tensor_release(u), ff_tensor_release(x);
}
