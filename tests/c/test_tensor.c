/* test_tensor.c: lifetime, views, copies, the strided loop and the RNG. */
#include <string.h>
#include "harness.h"

static ff_tensor *range_tensor(const int64_t *shape, int ndim)
{
    ff_tensor *t = ff_tensor_empty(shape, ndim);
    float *d = ff_tensor_data(t);
    for (int64_t i = 0; i < ff_tensor_numel(t); i++)
        d[i] = (float)i;
    return t;
}

TEST(create_shapes_and_values)
{
    int64_t s[2] = {2, 3};
    ff_tensor *z = ff_tensor_zeros(s, 2), *o = ff_tensor_ones(s, 2);
    REQUIRE(z && o);
    CHECK(ff_tensor_numel(z) == 6 && ff_tensor_is_contiguous(z));
    CHECK(ff_tensor_data(o)[5] == 1.0f && ff_tensor_data(z)[5] == 0.0f);
    ff_tensor *e = ff_tensor_eye(3, 2);
    CHECK(ff_tensor_data(e)[0] == 1 && ff_tensor_data(e)[3] == 1 && ff_tensor_data(e)[1] == 0);
    ff_tensor *a = ff_tensor_arange(0, 1, 0.25);
    CHECK(a->shape[0] == 4 && ff_tensor_data(a)[3] == 0.75f);
    ff_tensor *b = ff_tensor_arange(5, 0, -2);
    CHECK(b->shape[0] == 3 && ff_tensor_data(b)[2] == 1.0f);
    ff_tensor *l = ff_tensor_linspace(0, 1, 5);
    CHECK(ff_tensor_data(l)[4] == 1.0f && ff_tensor_data(l)[2] == 0.5f);
    ff_tensor *sc = ff_tensor_scalar(7);
    CHECK(sc->ndim == 0 && ff_tensor_numel(sc) == 1 && ff_tensor_data(sc)[0] == 7);
    ff_tensor_release(z), ff_tensor_release(o), ff_tensor_release(e);
    ff_tensor_release(a), ff_tensor_release(b), ff_tensor_release(l), ff_tensor_release(sc);
}

TEST(create_rejects_bad_sizes)
{
    int64_t neg[2] = {2, -1}, huge[3] = {1 << 30, 1 << 30, 1 << 30};
    CHECK(ff_tensor_zeros(neg, 2) == NULL && strstr(ff_last_error(), "negative"));
    CHECK(ff_tensor_zeros(huge, 3) == NULL && ff_last_status() == FF_ERR_MEM);
    CHECK(ff_tensor_zeros(neg, 9) == NULL && strstr(ff_last_error(), "at most 8"));
    CHECK(ff_tensor_arange(0, 1, 0) == NULL);
    int64_t big[1] = {(int64_t)1 << 50}; /* passes the shape check, fails malloc */
    CHECK(ff_tensor_empty(big, 1) == NULL && ff_last_status() == FF_ERR_MEM);
}

TEST(views_share_storage)
{
    int64_t s[2] = {3, 4};
    ff_tensor *t = range_tensor(s, 2);
    ff_tensor *n = ff_tensor_narrow(t, 1, 1, 2);     /* cols 2..3 */
    ff_tensor *r = ff_tensor_select(t, 0, 2);        /* row 3 */
    ff_tensor *tr = ff_tensor_transpose(t, 0, 1);
    REQUIRE(n && r && tr);
    CHECK(n->shape[0] == 3 && n->shape[1] == 2 && !ff_tensor_is_contiguous(n));
    int64_t idx[2] = {1, 0};
    float v;
    CHECK(ff_tensor_get(n, idx, &v) == FF_OK && v == 5.0f);
    CHECK(r->ndim == 1 && ff_tensor_data(r)[3] == 11.0f);
    CHECK(ff_tensor_get(tr, idx, &v) == FF_OK && v == 1.0f);
    ff_tensor_set(n, idx, 100.0f);
    CHECK(ff_tensor_data(t)[5] == 100.0f);
    int64_t bad[2] = {3, 0};
    CHECK(ff_tensor_get(t, bad, &v) == FF_ERR_RANGE && strstr(ff_last_error(), "index 4"));
    CHECK(ff_tensor_narrow(t, 1, 3, 2) == NULL && strstr(ff_last_error(), "3x4"));
    CHECK(ff_tensor_select(t, 2, 0) == NULL && strstr(ff_last_error(), "dim 3"));
    ff_tensor_release(t); /* views keep the storage alive */
    CHECK(ff_tensor_data(r)[0] == 8.0f);
    ff_tensor_release(n), ff_tensor_release(r), ff_tensor_release(tr);
}

TEST(view_reshape_expand_squeeze)
{
    int64_t s[2] = {2, 6}, v[3] = {3, -1, 2}, bad[2] = {5, -1};
    ff_tensor *t = range_tensor(s, 2);
    ff_tensor *w = ff_tensor_view(t, v, 3);
    REQUIRE(w);
    CHECK(w->shape[1] == 2 && w->storage == t->storage);
    CHECK(ff_tensor_view(t, bad, 2) == NULL && strstr(ff_last_error(), "2x6"));
    ff_tensor *tr = ff_tensor_transpose(t, 0, 1);
    int64_t flat[1] = {12};
    CHECK(ff_tensor_view(tr, flat, 1) == NULL && strstr(ff_last_error(), "contiguous"));
    ff_tensor *rs = ff_tensor_reshape(tr, flat, 1);
    REQUIRE(rs);
    CHECK(ff_tensor_data(rs)[1] == 6.0f && rs->storage != t->storage);
    int64_t es[3] = {4, 2, 6};
    ff_tensor *e = ff_tensor_expand(t, es, 3);
    REQUIRE(e);
    CHECK(e->stride[0] == 0);
    int64_t es_bad[2] = {3, 6};
    CHECK(ff_tensor_expand(t, es_bad, 2) == NULL);
    ff_tensor *u = ff_tensor_unsqueeze(t, 1);
    CHECK(u->ndim == 3 && u->shape[1] == 1 && ff_tensor_is_contiguous(u));
    ff_tensor *q = ff_tensor_squeeze(u, -1);
    CHECK(q->ndim == 2);
    int perm[3] = {2, 0, 1};
    ff_tensor *p = ff_tensor_permute(w, perm, 3);
    CHECK(p->shape[0] == 2 && p->shape[1] == 3 && p->shape[2] == 2);
    ff_tensor *tensors[] = {t, w, tr, rs, e, u, q, p};
    for (int i = 0; i < 8; i++)
        ff_tensor_release(tensors[i]);
}

TEST(copy_and_contiguous_follow_layout)
{
    int64_t s[3] = {2, 3, 4};
    ff_tensor *t = range_tensor(s, 3);
    int perm[3] = {2, 0, 1};
    ff_tensor *p = ff_tensor_permute(t, perm, 3);
    ff_tensor *c = ff_tensor_contiguous(p);
    REQUIRE(c && ff_tensor_is_contiguous(c));
    /* c[k][i][j] = t[i][j][k] */
    int ok = 1;
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 3; j++)
            for (int k = 0; k < 4; k++)
                ok &= ff_tensor_data(c)[k * 6 + i * 3 + j] == ff_tensor_data(t)[i * 12 + j * 4 + k];
    CHECK(ok);
    /* copy_ with broadcasting, and an overlapping self-copy */
    int64_t row_shape[1] = {4};
    ff_tensor *row = ff_tensor_arange(10, 14, 1);
    CHECK(ff_tensor_copy_(t, row) == FF_OK);
    CHECK(ff_tensor_data(t)[23] == 13.0f && ff_tensor_data(t)[4] == 10.0f);
    (void)row_shape;
    int64_t m[2] = {3, 3};
    ff_tensor *sq = range_tensor(m, 2);
    ff_tensor *sqt = ff_tensor_transpose(sq, 0, 1);
    CHECK(ff_tensor_copy_(sq, sqt) == FF_OK);
    CHECK(ff_tensor_data(sq)[1] == 3.0f && ff_tensor_data(sq)[3] == 1.0f);
    CHECK(ff_tensor_fill_(p, 2.5f) == FF_OK && ff_tensor_data(t)[7] == 2.5f);
    ff_tensor *tensors[] = {t, p, c, row, sq, sqt};
    for (int i = 0; i < 6; i++)
        ff_tensor_release(tensors[i]);
}

TEST(rng_is_reproducible_and_documented)
{
    ff_rng g, h;
    ff_rng_seed(&g, 42);
    ff_rng_seed(&h, 42);
    int same = 1;
    for (int i = 0; i < 100; i++)
        same &= ff_rng_next(&g) == ff_rng_next(&h);
    CHECK(same);
    /* First output of xoshiro256** seeded through splitmix64(0): pinned so the
     * documented algorithm cannot drift. */
    ff_rng_seed(&g, 0);
    CHECK(ff_rng_next(&g) == 0x99ec5f36cb75f2b4ULL);
    int64_t s[1] = {100000};
    ff_tensor *t = ff_tensor_empty(s, 1);
    ff_rng_seed(&g, 1);
    CHECK(ff_randn_(t, &g, 0, 1) == FF_OK);
    double sum = 0, sq = 0;
    for (int i = 0; i < 100000; i++)
        sum += ff_tensor_data(t)[i], sq += ff_tensor_data(t)[i] * ff_tensor_data(t)[i];
    CHECK_NEAR(sum / 1e5, 0.0, 0.02);
    CHECK_NEAR(sq / 1e5, 1.0, 0.02);
    CHECK(ff_randint_(t, &g, 3, 5) == FF_OK);
    int hit[3] = {0};
    for (int i = 0; i < 100000; i++)
        hit[(int)ff_tensor_data(t)[i] - 3]++;
    CHECK(hit[0] > 32000 && hit[1] > 32000 && hit[2] > 32000);
    CHECK(ff_bernoulli_(t, &g, 1.5) == FF_ERR_ARG);
    ff_tensor_release(t);
}
