/*
 * op_pool.c: 2-D pooling over the last two dims (NCHW, or CHW unbatched).
 *
 * Inputs: x (N, C, H, W) or (C, H, W); every leading index is one plane.
 * Parameters (ff_params):
 *   max_pool2d           i[0], i[1] kernel (h, w) >= 1; i[2], i[3] stride >= 1;
 *                        i[4], i[5] padding, 0 <= padding <= kernel/2 (as torch)
 *   avg_pool2d           the same; padding counts as zeros in the average
 *                        (torch's count_include_pad = true)
 *   adaptive_avg_pool2d  i[0], i[1] output size (oh, ow) >= 1
 * Output: (..., OH, OW), OH = (H + 2*ph - kh) / sh + 1 for the fixed-kernel
 * pools (an error when < 1).
 * Saved: max_pool2d saves the argmax of every window (its position in the
 * input plane, h*W + w, as a float: exact up to 2^24, checked); the average
 * pools save nothing (their backward needs only shapes).
 *
 * Every pool is described by one table of windows: output row oh reads
 * input rows [h0[oh], h1[oh]) and output column ow reads columns
 * [w0[ow], w1[ow]), already clipped to the input, so the loops have no
 * padding branches. Max pooling's padding is -inf, so clipping is exact;
 * average pooling divides by kh*kw whatever the clipping (padding adds
 * zeros); adaptive pooling divides by its window's own area, with torch's
 * windows [floor(i*H/oh), ceil((i+1)*H/oh)).
 *
 * Max pooling with a 2x2 kernel, stride 2 and no padding (the usual
 * halving) has its own plane loop, with the window unrolled. Its planes
 * are split over the engine's threads (ff_par_run); each is computed
 * alone, so results do not depend on the thread count.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "ff_autograd.h"
#include "ff_ops.h"
#include "parallel.h"

typedef struct {
    int64_t planes, H, W, OH, OW;
    int64_t *h0, *h1, *w0, *w1; /* one allocation, owned */
    double div;                 /* > 0: every window divides by it; 0: by its area */
    bool halving;               /* kernel 2x2, stride 2, no padding */
} pool_geom;

static void geom_free(pool_geom *g)
{
    free(g->h0);
    g->h0 = NULL;
}

/* Largest output side of adaptive pooling: far beyond any image, small
 * enough that window arithmetic cannot overflow and that the window table
 * (16 bytes per output row and column) stays a few MiB: at 2^30 a fuzzed
 * size asked malloc for 17 GB before the output's own size was refused. */
#define POOL_MAX_OUT ((int64_t)1 << 20)

static ff_status geom_alloc(pool_geom *g, const char *fn)
{
    if ((uint64_t)g->OH + (uint64_t)g->OW > SIZE_MAX / (2 * sizeof(int64_t)) - 1)
        return ff_error(FF_ERR_MEM, "%s: output of %lldx%lld is too large", fn,
                        (long long)g->OH, (long long)g->OW);
    g->h0 = malloc(sizeof(int64_t) * 2 * (size_t)(g->OH + g->OW) + 1);
    if (!g->h0)
        return ff_error(FF_ERR_MEM, "%s: out of memory", fn);
    g->h1 = g->h0 + g->OH, g->w0 = g->h1 + g->OH, g->w1 = g->w0 + g->OW;
    return FF_OK;
}

static void sizes_of(const int64_t *shape, int ndim, pool_geom *g)
{
    g->H = shape[ndim - 2], g->W = shape[ndim - 1];
    g->planes = 1;
    for (int d = 0; d < ndim - 2; d++)
        g->planes *= shape[d];
}

/* Windows of a kernel k sliding by s over in + 2p: [o*s - p, o*s - p + k)
 * clipped to [0, in). */
static void sliding(int64_t *lo, int64_t *hi, int64_t out, int64_t in, int64_t k, int64_t s,
                    int64_t p)
{
    for (int64_t o = 0; o < out; o++) {
        int64_t a = o * s - p, b = a + k;
        lo[o] = a < 0 ? 0 : a;
        hi[o] = b > in ? in : b;
    }
}

/* torch's adaptive windows: [floor(o*in/out), ceil((o+1)*in/out)). */
static void adaptive(int64_t *lo, int64_t *hi, int64_t out, int64_t in)
{
    for (int64_t o = 0; o < out; o++) {
        lo[o] = o * in / out;
        hi[o] = ((o + 1) * in + out - 1) / out;
    }
}

/* Planes must not be empty: a max over no element has no argmax. */
static ff_status check_input(const char *fn, const int64_t *shape, int ndim)
{
    char s[FF_SHAPE_STRLEN];
    if (ndim != 3 && ndim != 4)
        return ff_error(FF_ERR_SHAPE,
                        "%s: input has shape %s, expected 4 dims (N x C x H x W) or 3 (C x H x W)",
                        fn, ff_shape_str(shape, ndim, s, sizeof s));
    if (shape[ndim - 1] < 1 || shape[ndim - 2] < 1)
        return ff_error(FF_ERR_SHAPE, "%s: input has shape %s, expected non-empty planes", fn,
                        ff_shape_str(shape, ndim, s, sizeof s));
    return FF_OK;
}

/* Windows of max_pool2d / avg_pool2d; checks the parameters when `check`. */
static ff_status geom_sliding(const char *fn, const int64_t *shape, int ndim, const ff_params *p,
                              bool check, pool_geom *g)
{
    const int64_t *i = p->i;
    int64_t kh = i[0], kw = i[1], sh = i[2], sw = i[3], ph = i[4], pw = i[5];
    g->h0 = NULL;
    if (check) {
        ff_status st = check_input(fn, shape, ndim);
        if (st != FF_OK)
            return st;
        if (kh < 1 || kw < 1)
            return ff_error(FF_ERR_ARG, "%s: kernel must be >= 1, got %lldx%lld", fn,
                            (long long)kh, (long long)kw);
        if (sh < 1 || sw < 1)
            return ff_error(FF_ERR_ARG, "%s: stride must be >= 1, got %lldx%lld", fn,
                            (long long)sh, (long long)sw);
        /* ph > kh / 2 is 2 * ph > kh without the overflow of a huge ph. */
        if (ph < 0 || pw < 0 || ph > kh / 2 || pw > kw / 2)
            return ff_error(FF_ERR_ARG,
                            "%s: padding must be between 0 and half the kernel, got %lldx%lld for kernel %lldx%lld",
                            fn, (long long)ph, (long long)pw, (long long)kh, (long long)kw);
    }
    sizes_of(shape, ndim, g);
    int64_t spanh = g->H + 2 * ph - kh, spanw = g->W + 2 * pw - kw;
    g->OH = spanh < 0 ? 0 : spanh / sh + 1;
    g->OW = spanw < 0 ? 0 : spanw / sw + 1;
    if (check && (g->OH < 1 || g->OW < 1)) {
        char s[FF_SHAPE_STRLEN];
        return ff_error(FF_ERR_SHAPE,
                        "%s: output size is %lldx%lld (<= 0) for input %s with kernel %lldx%lld and padding %lldx%lld",
                        fn, (long long)g->OH, (long long)g->OW, ff_shape_str(shape, ndim, s, sizeof s),
                        (long long)kh, (long long)kw, (long long)ph, (long long)pw);
    }
    ff_status st = geom_alloc(g, fn);
    if (st != FF_OK)
        return st;
    sliding(g->h0, g->h1, g->OH, g->H, kh, sh, ph);
    sliding(g->w0, g->w1, g->OW, g->W, kw, sw, pw);
    g->div = (double)kh * (double)kw;
    g->halving = kh == 2 && kw == 2 && sh == 2 && sw == 2 && ph == 0 && pw == 0;
    return FF_OK;
}

static ff_status geom_adaptive(const int64_t *shape, int ndim, const ff_params *p, bool check,
                               pool_geom *g)
{
    const char *fn = "adaptive_avg_pool2d";
    g->h0 = NULL;
    if (check) {
        ff_status st = check_input(fn, shape, ndim);
        if (st != FF_OK)
            return st;
        if (p->i[0] < 1 || p->i[1] < 1)
            return ff_error(FF_ERR_ARG, "%s: output size must be >= 1, got %lldx%lld", fn,
                            (long long)p->i[0], (long long)p->i[1]);
        /* The windows compute (o + 1) * H; a fuzzed output size of 2^63
         * overflowed it and the window table's size. */
        int64_t H = shape[ndim - 2], W = shape[ndim - 1], th, tw;
        if (p->i[0] > POOL_MAX_OUT || p->i[1] > POOL_MAX_OUT ||
            __builtin_mul_overflow(p->i[0] + 1, H, &th) ||
            __builtin_mul_overflow(p->i[1] + 1, W, &tw) || th > INT64_MAX - p->i[0] ||
            tw > INT64_MAX - p->i[1])
            return ff_error(FF_ERR_ARG, "%s: output size %lldx%lld is too large (at most %lld)",
                            fn, (long long)p->i[0], (long long)p->i[1], (long long)POOL_MAX_OUT);
    }
    sizes_of(shape, ndim, g);
    g->OH = p->i[0], g->OW = p->i[1];
    ff_status st = geom_alloc(g, fn);
    if (st != FF_OK)
        return st;
    adaptive(g->h0, g->h1, g->OH, g->H);
    adaptive(g->w0, g->w1, g->OW, g->W);
    g->div = 0;
    return FF_OK;
}

static ff_tensor *output_of(const int64_t *shape, int ndim, const pool_geom *g)
{
    int64_t s[FF_MAX_DIMS];
    memcpy(s, shape, sizeof(int64_t) * (size_t)ndim);
    s[ndim - 2] = g->OH, s[ndim - 1] = g->OW;
    return ff_tensor_empty(s, ndim);
}

/* ---- max ---- */

/* Position (h*W + w) of the first NaN of window (oh, ow). */
static int64_t first_nan(const pool_geom *g, const float *x, int64_t oh, int64_t ow)
{
    for (int64_t h = g->h0[oh]; h < g->h1[oh]; h++)
        for (int64_t w = g->w0[ow]; w < g->w1[ow]; w++)
            if (isnan(x[h * g->W + w]))
                return h * g->W + w;
    return -1; /* not reached: called only when the window holds a NaN */
}

/* The max of window (oh, ow) into y[o] and its position h*W + w in the
 * plane into idx[o] (the first on ties; a NaN wins, as in torch); idx may
 * be NULL. The update is a select, not a branch: on real data the
 * comparison is a coin flip, and mispredicted branches were measured at
 * most of the time. */
static inline void max_window(const pool_geom *g, const float *restrict x, int64_t oh,
                              int64_t ow, float *restrict y, float *restrict idx)
{
    int64_t W = g->W, o = oh * g->OW + ow;
    int64_t at = g->h0[oh] * W + g->w0[ow];
    float best = -INFINITY;
    bool nan = false;
    for (int64_t h = g->h0[oh]; h < g->h1[oh]; h++)
        for (int64_t w = g->w0[ow]; w < g->w1[ow]; w++) {
            float v = x[h * W + w];
            bool gt = v > best;
            best = gt ? v : best;
            at = gt ? h * W + w : at;
            nan |= v != v;
        }
    if (nan) {
        best = NAN;
        at = first_nan(g, x, oh, ow);
    }
    y[o] = best;
    if (idx)
        idx[o] = (float)at;
}

static void max_plane(const pool_geom *g, const float *restrict x, float *restrict y,
                      float *restrict idx)
{
    for (int64_t oh = 0; oh < g->OH; oh++)
        for (int64_t ow = 0; ow < g->OW; ow++)
            max_window(g, x, oh, ow, y, idx);
}

/* The halving pool on four windows side by side, in GCC/clang vector
 * types (plain SSE2 on x86-64): the scalar loop's data-dependent
 * selects compiled to branches that mispredicted on real data (10 ns per
 * window, measured). */
typedef float v4f __attribute__((vector_size(16)));
typedef int32_t v4i __attribute__((vector_size(16)));

static inline v4f sel(v4i m, v4f a, v4f b) { return (v4f)((m & (v4i)a) | (~m & (v4i)b)); }

/* Windows ow..ow+3 of output row oh: y, idx (may be NULL); false when a
 * window holds a NaN (nothing written: the scalar loop handles those). */
static inline bool max4_halving(const float *r0, int64_t W, int64_t at, float *y, float *idx)
{
    v4f p, q, u, v;
    memcpy(&p, r0, 16), memcpy(&q, r0 + 4, 16), memcpy(&u, r0 + W, 16), memcpy(&v, r0 + W + 4, 16);
    v4f a = __builtin_shufflevector(p, q, 0, 2, 4, 6), b = __builtin_shufflevector(p, q, 1, 3, 5, 7);
    v4f c = __builtin_shufflevector(u, v, 0, 2, 4, 6), d = __builtin_shufflevector(u, v, 1, 3, 5, 7);
    v4i nan = (a != a) | (b != b) | (c != c) | (d != d);
    if (nan[0] | nan[1] | nan[2] | nan[3])
        return false;
    v4f best = a, k = {0, 0, 0, 0}; /* k: the winner's offset in its window */
    v4i m = b > best;
    best = sel(m, b, best), k = sel(m, (v4f){1, 1, 1, 1}, k);
    m = c > best;
    best = sel(m, c, best), k = sel(m, (v4f){(float)W, (float)W, (float)W, (float)W}, k);
    m = d > best;
    float w1 = (float)(W + 1);
    best = sel(m, d, best), k = sel(m, (v4f){w1, w1, w1, w1}, k);
    memcpy(y, &best, 16);
    if (idx) { /* positions < 2^24 (checked by the caller): exact in float */
        float f = (float)at;
        v4f pos = (v4f){f, f + 2, f + 4, f + 6} + k;
        memcpy(idx, &pos, 16);
    }
    return true;
}

/* max_plane for the halving pool: every window is x[2oh..2oh+1][2ow..2ow+1],
 * inside the plane; the same results (first max on ties, a NaN wins). */
static void max_plane_halving(const pool_geom *g, const float *restrict x, float *restrict y,
                              float *restrict idx)
{
    int64_t W = g->W, OW = g->OW;
    for (int64_t oh = 0; oh < g->OH; oh++) {
        int64_t ow = 0;
        /* a group reads input columns up to 2ow+7: inside the row when
         * 2ow + 8 <= W */
        for (; 2 * ow + 8 <= W && ow + 4 <= OW; ow += 4) {
            int64_t at = 2 * oh * W + 2 * ow, o = oh * OW + ow;
            if (!max4_halving(x + at, W, at, y + o, idx ? idx + o : NULL))
                break;
        }
        for (; ow < OW; ow++) /* the rest of the row, or a group with a NaN on */
            max_window(g, x, oh, ow, y, idx);
    }
}

typedef struct {
    const pool_geom *g;
    const float *x;
    float *y, *idx;
} max_job;

static void max_range(void *arg, int t, int64_t c0, int64_t c1)
{
    max_job *j = arg;
    const pool_geom *g = j->g;
    int64_t HW = g->H * g->W, P = g->OH * g->OW;
    for (int64_t c = c0; c < c1; c++) {
        float *id = j->idx ? j->idx + c * P : NULL;
        if (g->halving)
            max_plane_halving(g, j->x + c * HW, j->y + c * P, id);
        else
            max_plane(g, j->x + c * HW, j->y + c * P, id);
    }
}

ff_tensor *ff_fwd_max_pool2d(ff_ctx *ctx, ff_tensor *const *in)
{
    const char *fn = "max_pool2d";
    pool_geom g;
    if (geom_sliding(fn, in[0]->shape, in[0]->ndim, &ctx->p, true, &g) != FF_OK)
        return NULL;
    if (g.H * g.W > (1 << 24)) {
        geom_free(&g);
        return ff_error(FF_ERR_SHAPE, "%s: planes of %lldx%lld exceed the 2^24 positions its indices can hold",
                        fn, (long long)g.H, (long long)g.W), NULL;
    }
    ff_tensor *x = ff_tensor_contiguous(in[0]);
    ff_tensor *y = x ? output_of(x->shape, x->ndim, &g) : NULL;
    /* the argmax is only needed by backward: none in inference */
    ff_tensor *idx = y && ctx->recording ? output_of(x->shape, x->ndim, &g) : NULL;
    if (y && (idx || !ctx->recording)) {
        max_job j = {&g, ff_tensor_data(x), ff_tensor_data(y), idx ? ff_tensor_data(idx) : NULL};
        ff_par_run(ff_par_threads(g.planes, g.H * g.W), g.planes, max_range, &j);
        ff_ctx_save(ctx, idx);
    } else {
        ff_tensor_release(y);
        y = NULL;
    }
    ff_tensor_release(idx);
    ff_tensor_release(x);
    geom_free(&g);
    return y;
}

typedef struct {
    int64_t HW, P;
    const float *gy, *idx;
    float *dx;
} max_bwd_job;

static void max_bwd_range(void *arg, int t, int64_t c0, int64_t c1)
{
    max_bwd_job *j = arg;
    int64_t HW = j->HW, P = j->P;
    memset(j->dx + c0 * HW, 0, (size_t)((c1 - c0) * HW) * sizeof(float));
    for (int64_t c = c0; c < c1; c++)
        for (int64_t o = 0; o < P; o++)
            j->dx[c * HW + (int64_t)j->idx[c * P + o]] += j->gy[c * P + o];
}

/* dx[argmax of window o] += gy[o]; zeros elsewhere. */
ff_status ff_bwd_max_pool2d(ff_ctx *ctx, const ff_tensor *gout, ff_tensor **gin)
{
    ff_tensor *idx;
    ff_status st = ff_ctx_saved(ctx, 0, &idx);
    if (st != FF_OK)
        return st;
    const ff_shape *s = &ctx->in_shape[0];
    ff_tensor *gc = ff_tensor_contiguous((ff_tensor *)gout);
    gin[0] = gc ? ff_tensor_empty(s->size, s->ndim) : NULL; /* zeroed by max_bwd_range */
    if (!gin[0]) {
        ff_tensor_release(gc);
        return ff_last_status();
    }
    int64_t HW = s->size[s->ndim - 2] * s->size[s->ndim - 1];
    int64_t P = gc->shape[gc->ndim - 2] * gc->shape[gc->ndim - 1];
    int64_t planes = P ? ff_tensor_numel(gc) / P : 0;
    if (P == 0) /* no windows (an empty batch): the planes count is 0 */
        memset(ff_tensor_data(gin[0]), 0, (size_t)ff_tensor_numel(gin[0]) * sizeof(float));
    max_bwd_job j = {HW, P, ff_tensor_data(gc), ff_tensor_data(idx), ff_tensor_data(gin[0])};
    ff_par_run(ff_par_threads(planes, HW + 2 * P), planes, max_bwd_range, &j);
    ff_tensor_release(gc);
    return FF_OK;
}

/* ---- averages (avg_pool2d and adaptive_avg_pool2d share these) ---- */

static double window_div(const pool_geom *g, int64_t oh, int64_t ow)
{
    return g->div > 0 ? g->div : (double)((g->h1[oh] - g->h0[oh]) * (g->w1[ow] - g->w0[ow]));
}

static void avg_plane(const pool_geom *g, const float *restrict x, float *restrict y)
{
    for (int64_t oh = 0; oh < g->OH; oh++)
        for (int64_t ow = 0; ow < g->OW; ow++) {
            double s = 0;
            for (int64_t h = g->h0[oh]; h < g->h1[oh]; h++)
                for (int64_t w = g->w0[ow]; w < g->w1[ow]; w++)
                    s += x[h * g->W + w];
            y[oh * g->OW + ow] = (float)(s / window_div(g, oh, ow));
        }
}

/* dx[window o] += gy[o] / divisor of o. */
static void avg_plane_backward(const pool_geom *g, const float *restrict gy, float *restrict dx)
{
    for (int64_t oh = 0; oh < g->OH; oh++)
        for (int64_t ow = 0; ow < g->OW; ow++) {
            float v = (float)(gy[oh * g->OW + ow] / window_div(g, oh, ow));
            for (int64_t h = g->h0[oh]; h < g->h1[oh]; h++)
                for (int64_t w = g->w0[ow]; w < g->w1[ow]; w++)
                    dx[h * g->W + w] += v;
        }
}

/* Forward of both average pools; consumes g. */
static ff_tensor *avg_forward(ff_tensor *xin, pool_geom *g)
{
    ff_tensor *x = ff_tensor_contiguous(xin);
    ff_tensor *y = x ? output_of(x->shape, x->ndim, g) : NULL;
    if (y) {
        const float *xd = ff_tensor_data(x);
        float *yd = ff_tensor_data(y);
        int64_t HW = g->H * g->W, P = g->OH * g->OW;
        for (int64_t c = 0; c < g->planes; c++)
            avg_plane(g, xd + c * HW, yd + c * P);
    }
    ff_tensor_release(x);
    geom_free(g);
    return y;
}

/* Backward of both average pools; consumes g. */
static ff_status avg_backward(const ff_tensor *gout, const ff_shape *s, pool_geom *g,
                              ff_tensor **gin)
{
    ff_tensor *gc = ff_tensor_contiguous((ff_tensor *)gout);
    gin[0] = gc ? ff_tensor_zeros(s->size, s->ndim) : NULL;
    if (gin[0]) {
        const float *gy = ff_tensor_data(gc);
        float *dx = ff_tensor_data(gin[0]);
        int64_t HW = g->H * g->W, P = g->OH * g->OW;
        for (int64_t c = 0; c < g->planes; c++)
            avg_plane_backward(g, gy + c * P, dx + c * HW);
    }
    ff_tensor_release(gc);
    geom_free(g);
    return gin[0] ? FF_OK : ff_last_status();
}

ff_tensor *ff_fwd_avg_pool2d(ff_ctx *ctx, ff_tensor *const *in)
{
    pool_geom g;
    if (geom_sliding("avg_pool2d", in[0]->shape, in[0]->ndim, &ctx->p, true, &g) != FF_OK)
        return NULL;
    return avg_forward(in[0], &g);
}

ff_status ff_bwd_avg_pool2d(ff_ctx *ctx, const ff_tensor *gout, ff_tensor **gin)
{
    const ff_shape *s = &ctx->in_shape[0];
    pool_geom g;
    ff_status st = geom_sliding("avg_pool2d", s->size, s->ndim, &ctx->p, false, &g);
    return st != FF_OK ? st : avg_backward(gout, s, &g, gin);
}

ff_tensor *ff_fwd_adaptive_avg_pool2d(ff_ctx *ctx, ff_tensor *const *in)
{
    pool_geom g;
    if (geom_adaptive(in[0]->shape, in[0]->ndim, &ctx->p, true, &g) != FF_OK)
        return NULL;
    return avg_forward(in[0], &g);
}

ff_status ff_bwd_adaptive_avg_pool2d(ff_ctx *ctx, const ff_tensor *gout, ff_tensor **gin)
{
    const ff_shape *s = &ctx->in_shape[0];
    pool_geom g;
    ff_status st = geom_adaptive(s->size, s->ndim, &ctx->p, false, &g);
    return st != FF_OK ? st : avg_backward(gout, s, &g, gin);
}
