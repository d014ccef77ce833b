/*
 * test_conv_direct.c: the direct convolution kernels (conv_direct.h), each
 * instruction set this CPU runs, against the im2col + sgemm reference:
 * forward against the definition in double, dx and dw against the
 * reference's gradients, to float rounding (the kernels sum in another
 * order). Geometries cover a tile's edges: widths of one, two and several
 * vectors and their tails, odd output heights (narrow planes pair rows),
 * output channels that do not fill a tile, one input channel, padding 0-2,
 * non-3x3 kernels (dw by sgemm), and padding beyond the kernel (dx by
 * col2im).
 */
#include <string.h>
#include "harness.h"

static ff_tensor *randn_shape(int64_t a, int64_t b, int64_t c, int64_t d, int nd, uint64_t seed)
{
    int64_t s[4] = {a, b, c, d};
    ff_rng g;
    ff_rng_seed(&g, seed);
    ff_tensor *t = ff_tensor_empty(s, nd);
    if (t)
        ff_randn_(t, &g, 0.0, 1.0);
    return t;
}

typedef struct {
    int64_t N, C, H, W, O, kh, kw, pad;
} geo;

static const geo geos[] = {
    {2, 3, 7, 6, 5, 3, 3, 1},   /* narrow: row pairs, odd height */
    {2, 4, 9, 28, 9, 3, 3, 1},  /* two AVX-512 vectors, a tail; 9 outputs */
    {1, 2, 5, 70, 3, 3, 3, 1},  /* several vector pairs, a tail */
    {3, 1, 12, 12, 17, 3, 3, 1},/* one input channel, 17 outputs */
    {2, 5, 8, 17, 4, 3, 3, 0},  /* no padding */
    {2, 3, 6, 6, 6, 3, 3, 2},   /* padding 2 */
    {2, 3, 6, 9, 4, 5, 5, 2},   /* 5x5 */
    {1, 2, 6, 7, 3, 2, 3, 1},   /* 2x3 kernel */
    {2, 3, 5, 7, 2, 3, 3, 3},   /* padding past the kernel: dx by col2im */
    {2, 2, 4, 16, 33, 3, 3, 1}, /* exactly one vector wide; 33 outputs */
};

static const ff_conv_algo algos[] = {FF_CONV_DIRECT, FF_CONV_DIRECT_AVX2, FF_CONV_DIRECT_PORTABLE};

/* y, dx, dw of conv2d(x, w, b) under algo, for the gradient seed r. */
static bool conv_run(ff_conv_algo algo, const geo *g, ff_tensor **out)
{
    ff_conv_set_algo(algo);
    ff_tensor *x = randn_shape(g->N, g->C, g->H, g->W, 4, 1);
    ff_tensor *w = randn_shape(g->O, g->C, g->kh, g->kw, 4, 2);
    ff_tensor *b = randn_shape(g->O, 0, 0, 0, 1, 3);
    ff_tensor_set_requires_grad(x, true), ff_tensor_set_requires_grad(w, true);
    ff_params p = {0};
    p.i[0] = p.i[1] = 1, p.i[2] = p.i[3] = g->pad, p.i[4] = p.i[5] = 1, p.i[6] = 1;
    ff_tensor *in[3] = {x, w, b};
    ff_tensor *y = ff_apply(FF_OP_CONV2D, in, 3, &p, NULL);
    bool ok = y != NULL;
    if (ok) {
        ff_tensor *r = randn_shape(y->shape[0], y->shape[1], y->shape[2], y->shape[3], 4, 4);
        ok = ff_backward(y, r, false) == FF_OK;
        ff_tensor_release(r);
    }
    out[0] = y;
    out[1] = ok ? ff_tensor_retain(ff_tensor_grad(x)) : NULL;
    out[2] = ok ? ff_tensor_retain(ff_tensor_grad(w)) : NULL;
    ff_tensor_release(x), ff_tensor_release(w), ff_tensor_release(b);
    ff_conv_set_algo(FF_CONV_AUTO);
    return ok && out[1] && out[2];
}

/* max |a - b| / max |b| */
static double rel_err(ff_tensor *a, ff_tensor *b)
{
    const float *pa = ff_tensor_data(a), *pb = ff_tensor_data(b);
    double e = 0, m = 1e-30;
    for (int64_t i = 0; i < ff_tensor_numel(b); i++) {
        e = fmax(e, fabs((double)pa[i] - pb[i]));
        m = fmax(m, fabs((double)pb[i]));
    }
    return e / m;
}

TEST(conv_direct_matches_im2col)
{
    for (size_t k = 0; k < sizeof geos / sizeof geos[0]; k++) {
        ff_tensor *ref[3], *got[3];
        REQUIRE(conv_run(FF_CONV_IM2COL, &geos[k], ref));
        for (size_t a = 0; a < sizeof algos / sizeof algos[0]; a++) {
            CHECK(conv_run(algos[a], &geos[k], got));
            for (int i = 0; i < 3 && got[i]; i++) {
                CHECK(ff_shape_equal(got[i], ref[i]));
                double e = rel_err(got[i], ref[i]);
                if (e > 2e-6)
                    fprintf(stderr, "  geometry %zu, algo %d, %s: relative error %g\n", k,
                            (int)algos[a], i == 0 ? "y" : i == 1 ? "dx" : "dw", e);
                CHECK(e <= 2e-6);
            }
            for (int i = 0; i < 3; i++)
                ff_tensor_release(got[i]);
        }
        for (int i = 0; i < 3; i++)
            ff_tensor_release(ref[i]);
    }
}

/* The setting is global, read at each call; AUTO names what it runs. */
TEST(conv_direct_algo_setting)
{
    CHECK(ff_conv_get_algo() == FF_CONV_AUTO);
    ff_conv_set_algo(FF_CONV_IM2COL);
    CHECK(strcmp(ff_conv_kernel_name(), "im2col") == 0);
    ff_conv_set_algo(FF_CONV_DIRECT_PORTABLE);
    CHECK(strcmp(ff_conv_kernel_name(), "portable") == 0);
    ff_conv_set_algo(FF_CONV_DIRECT_AVX2);
    const char *n = ff_conv_kernel_name();
    CHECK(strcmp(n, "avx2") == 0 || strcmp(n, "portable") == 0);
    ff_conv_set_algo(FF_CONV_AUTO);
    n = ff_conv_kernel_name();
    CHECK(strcmp(n, "avx512") == 0 || strcmp(n, "avx2") == 0 || strcmp(n, "im2col") == 0);
}
