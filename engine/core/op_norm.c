/*
 * op_norm.c: batch normalisation and layer normalisation.
 *
 * batch_norm
 *   Inputs: x (N, C, ...) of rank >= 2, weight (C) or NULL, bias (C) or NULL.
 *   Parameters: i[0] training (1) or eval (0); f[0] momentum in [0, 1]
 *   (torch's default 0.1); f[1] eps >= 0 (1e-5); aux[0] running_mean (C)
 *   and aux[1] running_var (C), both or neither.
 *   Training normalises by the batch statistics over the M = N*(spatial)
 *   values of each channel (mean and biased variance in one pass over
 *   memory: per-row two-pass sums merged by Chan's update, in double)
 *   and, when running statistics are given, updates them in place: running = (1-m)*running + m*batch, with the
 *   unbiased variance (M/(M-1) times the biased one) as torch does. That
 *   update is not differentiated. Eval mode normalises by the running
 *   statistics (an error when absent).
 *   i[1] relu: when 1, the result is relu(batch_norm(x)), fused (below).
 *   Saved: the per-channel mean and 1/sqrt(var+eps) actually used; x
 *   (contiguous) when dx in training or dweight is needed, or relu; weight
 *   when dx is, or relu; bias with relu.
 *
 * layer_norm
 *   Inputs: x (..., D1..Dk), weight and bias of shape (D1..Dk) or NULL.
 *   Parameters: i[0] = k, the number of trailing dims normalised (1..rank);
 *   f[0] eps >= 0.
 *   Each row of M = D1*..*Dk values is normalised by its own mean and
 *   biased variance (two passes, double accumulators).
 *   Saved: the per-row mean and 1/sqrt(var+eps); x when dx or dweight is
 *   needed; weight when dx is.
 *
 * Backward, with x̂ = (x - mean)·invstd and ĝ = gy·weight (weight 1 when
 * absent), means taken over the M values normalised together:
 *   dx = invstd·(ĝ - mean(ĝ) - x̂·mean(ĝ·x̂))   (training batch norm, layer norm)
 *   dx = invstd·ĝ                               (eval batch norm: an affine map)
 *   dweight = Σ gy·x̂,  dbias = Σ gy            (over everything but the channel)
 * With relu, gy in these formulas is relu's backward of the output's
 * gradient.
 * Threads: batch norm over (N, C, S) with S > 1 splits its channels over
 * the engine's threads (ff_par_run); each channel is still summed in the
 * same order, so results do not depend on the thread count. Layer norm
 * and the (N, C) batch norm run on the calling thread.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "ff_autograd.h"
#include "ff_ops.h"
#include "act_scalar.h"
#include "kernels.h"
#include "parallel.h"

/* ---- row kernels ----
 * gcc -O2 (its "very cheap" vector cost model) vectorises a loop only when
 * its trip count is a known multiple of the vector width: maps run their
 * bulk in multiples of 8, then a scalar tail (as elementwise.c does).
 * Sums keep eight named double partial sums, which gcc holds in vector
 * registers without reordering any one sum.
 *
 * Each kernel is built twice, for AVX2 and for the baseline (SSE2), and
 * the loader picks one for the CPU (FF_CLONES: gcc's target_clones). The
 * sums are bound by converting floats to doubles and adding them, two per
 * SSE2 instruction and four per AVX2 one (a 12.8 MB sum: 1.4 -> 0.5 ms on
 * one thread); the lanes hold the same named partial sums, and AVX2 alone
 * brings no fused multiply-add to contract a·b + c, so both builds give
 * the same bits (tested against the baseline build's values). FF_CLONES
 * is in kernels.h. */

static inline int64_t bulk8(int64_t n) { return n & ~(int64_t)7; }

#define FOLD8(a) (((a##0 + a##1) + (a##2 + a##3)) + ((a##4 + a##5) + (a##6 + a##7)))

/* Σ x: shared with op_conv.c through kernels.h */
FF_CLONES double ff_kernel_sum(const float *x, int64_t n)
{
    double a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        a0 += x[i], a1 += x[i + 1], a2 += x[i + 2], a3 += x[i + 3];
        a4 += x[i + 4], a5 += x[i + 5], a6 += x[i + 6], a7 += x[i + 7];
    }
    for (; i < n; i++)
        a0 += x[i];
    return FOLD8(a);
}

#define row_sum ff_kernel_sum

/* Σ (x - m)² */
FF_CLONES static double row_sqdev(const float *x, int64_t n, double m)
{
    double a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0;
    int64_t i = 0;
#define SQ(k) ((x[i + k] - m) * (x[i + k] - m))
    for (; i + 8 <= n; i += 8) {
        a0 += SQ(0), a1 += SQ(1), a2 += SQ(2), a3 += SQ(3);
        a4 += SQ(4), a5 += SQ(5), a6 += SQ(6), a7 += SQ(7);
    }
    for (; i < n; i++)
        a0 += SQ(0);
#undef SQ
    return FOLD8(a);
}

/* Σ g·(x - m) */
FF_CLONES static double row_dotdev(const float *g, const float *x, int64_t n, double m)
{
    double a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0;
    int64_t i = 0;
#define GD(k) (g[i + k] * (x[i + k] - m))
    for (; i + 8 <= n; i += 8) {
        a0 += GD(0), a1 += GD(1), a2 += GD(2), a3 += GD(3);
        a4 += GD(4), a5 += GD(5), a6 += GD(6), a7 += GD(7);
    }
    for (; i < n; i++)
        a0 += GD(0);
#undef GD
    return FOLD8(a);
}

/* y = a·x + b over a run */
FF_CLONES static void row_affine(float *restrict y, const float *restrict x, int64_t n, float a, float b)
{
    int64_t m = bulk8(n);
    for (int64_t i = 0; i < m; i++)
        y[i] = a * x[i] + b;
    for (int64_t i = m; i < n; i++)
        y[i] = a * x[i] + b;
}

/* dx = a·g + b·(x - m) + c over a run (x - m first: x may sit far from 0) */
FF_CLONES static void row_affine2(float *restrict dx, const float *restrict g, const float *restrict x,
                        int64_t n, float a, float b, float m, float c)
{
    int64_t k = bulk8(n);
    for (int64_t i = 0; i < k; i++)
        dx[i] = a * g[i] + b * (x[i] - m) + c;
    for (int64_t i = k; i < n; i++)
        dx[i] = a * g[i] + b * (x[i] - m) + c;
}

/* y *= w */
static void row_mul(float *restrict y, const float *restrict w, int64_t n)
{
    int64_t k = bulk8(n);
    for (int64_t i = 0; i < k; i++)
        y[i] *= w[i];
    for (int64_t i = k; i < n; i++)
        y[i] *= w[i];
}

/* y += b */
static void row_add(float *restrict y, const float *restrict b, int64_t n)
{
    int64_t k = bulk8(n);
    for (int64_t i = 0; i < k; i++)
        y[i] += b[i];
    for (int64_t i = k; i < n; i++)
        y[i] += b[i];
}

/* acc += a·b elementwise in double (b NULL: acc += a) */
static void acc_f64(double *restrict acc, const float *restrict a, const float *restrict b,
                    int64_t n)
{
    int64_t k = bulk8(n);
    if (b) {
        for (int64_t i = 0; i < k; i++)
            acc[i] += (double)a[i] * b[i];
        for (int64_t i = k; i < n; i++)
            acc[i] += (double)a[i] * b[i];
    } else {
        for (int64_t i = 0; i < k; i++)
            acc[i] += a[i];
        for (int64_t i = k; i < n; i++)
            acc[i] += a[i];
    }
}

/* ---- helpers ---- */

static ff_tensor *shaped(const ff_shape *s)
{
    return ff_tensor_empty(s->size, s->ndim);
}

/* Element i of a 1-D tensor of any stride; def when t is NULL. */
static float at1(const ff_tensor *t, int64_t i, float def)
{
    return t ? ff_tensor_data(t)[i * t->stride[0]] : def;
}

/* The next saved tensor, in forward's order, when it was saved. */
static ff_status next_saved(const ff_ctx *ctx, int *k, bool was_saved, ff_tensor **t)
{
    *t = NULL;
    return was_saved ? ff_ctx_saved(ctx, (*k)++, t) : FF_OK;
}

static ff_status check_eps(const char *fn, double eps)
{
    if (!(eps >= 0) || !isfinite(eps))
        return ff_error(FF_ERR_ARG, "%s: eps must be finite and >= 0, got %g", fn, eps);
    return FF_OK;
}

/* ======================================================================
 * batch_norm: x read as (N, C, S), S the product of the spatial dims.
 * ====================================================================== */

typedef struct {
    int64_t N, C, S, M; /* M = N*S values per channel */
    bool training;
} bn_geom;

static void bn_geometry(const int64_t *shape, int ndim, const ff_params *p, bn_geom *g)
{
    g->N = shape[0], g->C = shape[1], g->S = 1;
    for (int d = 2; d < ndim; d++)
        g->S *= shape[d];
    g->M = g->N * g->S;
    g->training = p->i[0] != 0;
}

static ff_status bn_check_vec(const ff_tensor *t, const char *what, int64_t C, const ff_tensor *x)
{
    if (!t || (t->ndim == 1 && t->shape[0] == C))
        return FF_OK;
    char st[FF_SHAPE_STRLEN], sx[FF_SHAPE_STRLEN];
    return ff_error(FF_ERR_SHAPE, "batch_norm: %s has shape %s, expected %lld (the channels of input %s)",
                    what, ff_shape_str(t->shape, t->ndim, st, sizeof st), (long long)C,
                    ff_shape_str(x->shape, x->ndim, sx, sizeof sx));
}

/* Checks the arguments and fills g. */
static ff_status bn_check(ff_tensor *const *in, const ff_params *p, bn_geom *g)
{
    const ff_tensor *x = in[0], *rm = p->aux[0], *rv = p->aux[1];
    char sx[FF_SHAPE_STRLEN];
    ff_shape_str(x->shape, x->ndim, sx, sizeof sx);
    if (x->ndim < 2)
        return ff_error(FF_ERR_SHAPE, "batch_norm: input has shape %s, expected at least 2 dims (N x C x ...)", sx);
    bn_geometry(x->shape, x->ndim, p, g);
    ff_status st;
    if ((st = bn_check_vec(in[1], "weight", g->C, x)) || (st = bn_check_vec(in[2], "bias", g->C, x)) ||
        (st = bn_check_vec(rm, "running_mean", g->C, x)) || (st = bn_check_vec(rv, "running_var", g->C, x)))
        return st;
    if (!rm != !rv)
        return ff_error(FF_ERR_ARG, "batch_norm: give both running_mean and running_var, or neither");
    if (!g->training && !rm)
        return ff_error(FF_ERR_ARG, "batch_norm: eval mode needs running_mean and running_var");
    if (g->training && g->M <= 1)
        return ff_error(FF_ERR_SHAPE, "batch_norm: expected more than 1 value per channel when training, got input %s", sx);
    if (!(p->f[0] >= 0 && p->f[0] <= 1))
        return ff_error(FF_ERR_ARG, "batch_norm: momentum must be in [0, 1], got %g", p->f[0]);
    return check_eps("batch_norm", p->f[1]);
}

/* ---- the channel loops ----
 * Forward is one split loop over channels (ff_par_run): each thread takes
 * the statistics of its channels, then normalises them; backward likewise
 * takes its channels' gradient sums, then their dx. A channel's sums run
 * over n in the same order whatever the split, so results do not depend
 * on the thread count, and they are the bits of the former loops (one
 * split loop per kernel). Tried and dropped: blocks of channels small
 * enough to stay in L2 between the two passes (x read from memory once):
 * reading 128 rows of 3 KB 100 KB apart per channel was slower than
 * streaming all channels row by row (batch norm 128x32x28x28 forward 3.7
 * -> 5.0 ms, backward 4.5 -> 6.9 ms on 1 thread).
 *
 * relu (p->i[1]): y = relu(batch_norm(x)) in the same passes, which saves
 * relu's own pass over memory each way and its saved output. Backward
 * needs relu's mask [y > 0], which it recomputes from x, the saved
 * statistics, weight and bias with the forward's own float expression
 * (BN_VALUE), so it reads no third array; the masked gradient is the value
 * relu's backward would have passed on, so the fused op gives the bits of
 * batch_norm then relu (tested). */

/* What the channel loops read and write. */
typedef struct {
    const bn_geom *g;
    bool relu, stats_here; /* stats_here: forward computes the batch statistics */
    double eps;
    const float *x, *gy;
    float *stats;          /* [mean (C), invstd (C)] */
    const ff_tensor *w, *b;
    double *mean, *var;    /* forward: the batch statistics, for the running ones */
    double *sg, *sgx;      /* backward: Σ gr and Σ gr·(x - mean) */
    float *y;              /* forward's output, backward's dx */
} bn_job;

/* Threads for the channel loops: 1 for (N, C) inputs, whose channels are
 * single floats strided across rows (the notes at the top). */
static int bn_threads(const bn_geom *g)
{
    return g->S > 1 ? ff_par_threads(g->C, g->N * g->S) : 1;
}

/* The normalisation of channel c as y = scale·x + shift. */
static void bn_affine(const bn_job *j, int64_t c, float *scale, float *shift)
{
    int64_t C = j->g->C;
    *scale = at1(j->w, c, 1.0f) * j->stats[C + c];
    *shift = at1(j->b, c, 0.0f) - j->stats[c] * *scale;
}

/* batch norm's value at one element, the one expression forward writes
 * and backward's relu mask re-evaluates */
#define BN_VALUE(x, a, b) ((a) * (x) + (b))

static const aparams no_params = {0, 0};

/* The kernels below are plain functions over restrict pointers with no
 * flags inside the loops: gcc -O2 vectorises neither a loop with a branch
 * on a flag nor one whose pointers lost restrict by inlining (measured:
 * scalar code with a data-dependent branch, 10x slower). gr is relu's
 * backward of gy at y = a·x + b: the gradient reaching the batch norm
 * (gy itself without relu). */

/* y = relu(a·x + b) over a run */
FF_CLONES static void row_affine_relu(float *restrict y, const float *restrict x, int64_t n, float a, float b)
{
    int64_t m = bulk8(n);
    for (int64_t i = 0; i < m; i++)
        y[i] = f_relu(BN_VALUE(x[i], a, b), no_params);
    for (int64_t i = m; i < n; i++)
        y[i] = f_relu(BN_VALUE(x[i], a, b), no_params);
}

/* gd_relu's value, written with blendf: gcc leaves the select inside the
 * partial sums as a branch on the data's sign otherwise */
#define GHAT(i) blendf(BN_VALUE(x[i], a, b) > 0, g[i], 0.0f)

/* Σ gr, in the eight partial sums of ff_kernel_sum */
FF_CLONES static double row_gsum_relu(const float *restrict g, const float *restrict x, int64_t n, float a,
                            float b)
{
    double a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        a0 += GHAT(i), a1 += GHAT(i + 1), a2 += GHAT(i + 2), a3 += GHAT(i + 3);
        a4 += GHAT(i + 4), a5 += GHAT(i + 5), a6 += GHAT(i + 6), a7 += GHAT(i + 7);
    }
    for (; i < n; i++)
        a0 += GHAT(i);
    return FOLD8(a);
}

/* Σ gr·(x - m), in the partial sums of row_dotdev */
FF_CLONES static double row_gdot_relu(const float *restrict g, const float *restrict x, int64_t n, double m,
                            float a, float b)
{
    double a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0;
    int64_t i = 0;
#define GD(k) (GHAT(i + k) * (x[i + k] - m))
    for (; i + 8 <= n; i += 8) {
        a0 += GD(0), a1 += GD(1), a2 += GD(2), a3 += GD(3);
        a4 += GD(4), a5 += GD(5), a6 += GD(6), a7 += GD(7);
    }
    for (; i < n; i++)
        a0 += GD(0);
#undef GD
    return FOLD8(a);
}

/* dx = k·gr + bb·(x - m) + cc over a run (row_affine2 of gr) */
FF_CLONES static void row_gdx_relu(float *restrict dx, const float *restrict g, const float *restrict x,
                         int64_t n, float k, float bb, float m, float cc, float a, float b)
{
    int64_t e = bulk8(n);
    for (int64_t i = 0; i < e; i++)
        dx[i] = k * GHAT(i) + bb * (x[i] - m) + cc;
    for (int64_t i = e; i < n; i++)
        dx[i] = k * GHAT(i) + bb * (x[i] - m) + cc;
}

/* dx = k·gr + 0 over a run (row_affine of gr: eval mode) */
FF_CLONES static void row_gscale_relu(float *restrict dx, const float *restrict g, const float *restrict x,
                            int64_t n, float k, float a, float b)
{
    int64_t e = bulk8(n);
    for (int64_t i = 0; i < e; i++)
        dx[i] = k * GHAT(i) + 0.0f;
    for (int64_t i = e; i < n; i++)
        dx[i] = k * GHAT(i) + 0.0f;
}
#undef GHAT

/* Channels [b0, b1) of the (N, C, S > 1) statistics, in one pass over
 * memory: each row's own mean and squared deviations while the row is in
 * L1, merged into its channel's running (mean, M2) by Chan's pairwise
 * update, which is as stable as two passes. */
static void stats_channels(bn_job *j, int64_t b0, int64_t b1)
{
    int64_t N = j->g->N, C = j->g->C, S = j->g->S, M = j->g->M;
    double *mean = j->mean + b0, *m2 = j->var + b0; /* zeroed by the caller */
    for (int64_t n = 0; n < N; n++) {
        double cnt = (double)(n * S), tot = cnt + (double)S;
        for (int64_t c = b0; c < b1; c++) {
            const float *r = j->x + (n * C + c) * S;
            double mr = row_sum(r, S) / (double)S, q = row_sqdev(r, S, mr);
            double d = mr - mean[c - b0];
            mean[c - b0] += d * ((double)S / tot);
            m2[c - b0] += q + d * d * (cnt * (double)S / tot);
        }
    }
    for (int64_t c = b0; c < b1; c++) {
        double var = m2[c - b0] / (double)M;
        j->var[c] = var;
        j->stats[c] = (float)mean[c - b0];
        j->stats[C + c] = (float)(1.0 / sqrt(var + j->eps));
    }
}

static void apply_channels(bn_job *j, int64_t b0, int64_t b1)
{
    int64_t N = j->g->N, C = j->g->C, S = j->g->S;
    for (int64_t n = 0; n < N; n++)
        for (int64_t c = b0; c < b1; c++) {
            float scale, shift;
            bn_affine(j, c, &scale, &shift);
            int64_t off = (n * C + c) * S;
            if (j->relu)
                row_affine_relu(j->y + off, j->x + off, S, scale, shift);
            else
                row_affine(j->y + off, j->x + off, S, scale, shift);
        }
}

static void fwd_range(void *arg, int t, int64_t c0, int64_t c1)
{
    bn_job *j = arg;
    if (j->stats_here)
        stats_channels(j, c0, c1);
    apply_channels(j, c0, c1);
}

/* mean and biased variance of every channel of an (N, C) input: C running
 * sums, walking rows. */
static void bn_stats_nc(const bn_geom *g, const float *x, double *mean, double *var)
{
    int64_t N = g->N, C = g->C;
    memset(mean, 0, sizeof(double) * (size_t)C);
    memset(var, 0, sizeof(double) * (size_t)C);
    for (int64_t n = 0; n < N; n++)
        for (int64_t c = 0; c < C; c++)
            mean[c] += x[n * C + c];
    for (int64_t c = 0; c < C; c++)
        mean[c] /= (double)g->M;
    for (int64_t n = 0; n < N; n++)
        for (int64_t c = 0; c < C; c++) {
            double d = x[n * C + c] - mean[c];
            var[c] += d * d;
        }
    for (int64_t c = 0; c < C; c++)
        var[c] /= (double)g->M;
}

/* running = (1-m)·running + m·batch, the variance unbiased; not recorded. */
static void bn_update_running(const bn_geom *g, ff_tensor *rm, ff_tensor *rv, double m,
                              const double *mean, const double *var)
{
    float *pm = ff_tensor_data(rm), *pv = ff_tensor_data(rv);
    int64_t sm = rm->stride[0], sv = rv->stride[0];
    double bessel = (double)g->M / (double)(g->M - 1);
    for (int64_t c = 0; c < g->C; c++) {
        pm[c * sm] = (float)((1 - m) * pm[c * sm] + m * mean[c]);
        pv[c * sv] = (float)((1 - m) * pv[c * sv] + m * var[c] * bessel);
    }
    ff_tensor_bump_version(rm);
    ff_tensor_bump_version(rv);
}

/* Forward: y, and stats = [mean (C), invstd (C)] as used (the batch's in
 * training, else the running ones); NULL on failure (error set). */
static ff_tensor *bn_forward(const bn_geom *g, const float *x, ff_tensor *const *in,
                             const ff_params *p, float *y)
{
    int64_t two_c = 2 * g->C;
    ff_tensor *stats = ff_tensor_empty(&two_c, 1);
    double *mean = malloc(sizeof(double) * 2 * (size_t)g->C + 1);
    if (!stats || !mean) {
        ff_tensor_release(stats);
        free(mean);
        if (stats)
            ff_error(FF_ERR_MEM, "batch_norm: out of memory");
        return NULL;
    }
    double *var = mean + g->C, eps = p->f[1];
    float *s = ff_tensor_data(stats);
    bn_job j = {.g = g, .relu = p->i[1] != 0, .eps = eps, .x = x, .stats = s, .w = in[1],
                .b = in[2], .mean = mean, .var = var, .y = y};
    if (g->training && g->S > 1) {
        j.stats_here = true;
        memset(mean, 0, sizeof(double) * 2 * (size_t)g->C);
    } else {
        if (g->training)
            bn_stats_nc(g, x, mean, var);
        else
            for (int64_t c = 0; c < g->C; c++)
                mean[c] = at1(p->aux[0], c, 0), var[c] = at1(p->aux[1], c, 0);
        for (int64_t c = 0; c < g->C; c++) {
            s[c] = (float)mean[c];
            s[g->C + c] = (float)(1.0 / sqrt(var[c] + eps));
        }
    }
    ff_par_run(bn_threads(g), g->C, fwd_range, &j);
    if (g->training && p->aux[0])
        bn_update_running(g, p->aux[0], p->aux[1], p->f[0], mean, var);
    free(mean);
    return stats;
}

/* What backward reads: x for dx in training, for dweight, and for relu's
 * mask; w for dx and the mask; b for the mask. */
static bool bn_saves_x(const ff_ctx *ctx)
{
    return (ctx->needs_grad[0] && ctx->p.i[0]) || ctx->needs_grad[1] || ctx->p.i[1];
}

static bool bn_saves_w(const ff_ctx *ctx, bool has_w)
{
    return has_w && (ctx->needs_grad[0] || ctx->p.i[1]);
}

static bool bn_saves_b(const ff_ctx *ctx, bool has_b)
{
    return has_b && ctx->p.i[1];
}

ff_tensor *ff_fwd_batch_norm(ff_ctx *ctx, ff_tensor *const *in)
{
    bn_geom g = {0};
    if (bn_check(in, &ctx->p, &g) != FF_OK)
        return NULL;
    ff_tensor *x = ff_tensor_contiguous(in[0]);
    ff_tensor *y = x ? ff_tensor_empty(x->shape, x->ndim) : NULL;
    ff_tensor *stats = y ? bn_forward(&g, ff_tensor_data(x), in, &ctx->p, ff_tensor_data(y)) : NULL;
    if (stats) {
        ff_ctx_save(ctx, stats);
        ff_ctx_save(ctx, bn_saves_x(ctx) ? x : NULL);
        ff_ctx_save(ctx, bn_saves_w(ctx, in[1] != NULL) ? in[1] : NULL);
        ff_ctx_save(ctx, bn_saves_b(ctx, in[2] != NULL) ? in[2] : NULL);
    } else {
        ff_tensor_release(y);
        y = NULL;
    }
    ff_tensor_release(stats);
    ff_tensor_release(x);
    return y;
}

/* Channels [b0, b1): sg = Σ gr and, when x is there, sgx = Σ gr·(x - mean). */
static void sums_channels(bn_job *j, int64_t b0, int64_t b1)
{
    bool relu = j->relu;
    int64_t N = j->g->N, C = j->g->C, S = j->g->S;
    const float *gy = j->gy, *x = j->x, *st = j->stats;
    double *sg = j->sg + b0, *sgx = j->sgx + b0; /* zeroed by the caller */
    for (int64_t n = 0; n < N; n++)
        for (int64_t c = b0; c < b1; c++) {
            int64_t off = (n * C + c) * S;
            float a = 0, b = 0;
            if (relu)
                bn_affine(j, c, &a, &b);
            /* two vectorised passes over a row: the second reads it from L1 */
            if (relu) {
                sg[c - b0] += row_gsum_relu(gy + off, x + off, S, a, b);
                sgx[c - b0] += row_gdot_relu(gy + off, x + off, S, st[c], a, b);
            } else {
                sg[c - b0] += row_sum(gy + off, S);
                if (x)
                    sgx[c - b0] += row_dotdev(gy + off, x + off, S, st[c]);
            }
        }
}

/* dx = kk·gr + bb·(x - mean) + cc per channel: in training, with
 * kk = w·invstd, bb = -kk·invstd²·sgx/M, cc = -kk·sg/M (the formula in the
 * top comment, expanded); in eval, dx = kk·gr. */
static void dx_channels(bn_job *j, int64_t b0, int64_t b1, bool with_x)
{
    bool relu = j->relu;
    const bn_geom *g = j->g;
    int64_t N = g->N, C = g->C, S = g->S;
    for (int64_t n = 0; n < N; n++) /* in memory order: one stream per array */
        for (int64_t c = b0; c < b1; c++) {
            double mean = j->stats[c], inv = j->stats[C + c], k = at1(j->w, c, 1.0f) * inv;
            double bb = with_x ? -k * inv * inv * j->sgx[c] / (double)g->M : 0;
            double cc = with_x ? -k * j->sg[c] / (double)g->M : 0;
            float a = 0, b = 0;
            if (relu)
                bn_affine(j, c, &a, &b);
            int64_t off = (n * C + c) * S;
            float *dx = j->y + off;
            const float *gy = j->gy + off, *x = j->x ? j->x + off : NULL;
            if (relu && with_x)
                row_gdx_relu(dx, gy, x, S, (float)k, (float)bb, (float)mean, (float)cc, a, b);
            else if (relu)
                row_gscale_relu(dx, gy, x, S, (float)k, a, b);
            else if (with_x)
                row_affine2(dx, gy, x, S, (float)k, (float)bb, (float)mean, (float)cc);
            else
                row_affine(dx, gy, S, (float)k, 0.0f);
        }
}

/* Backward over channels [c0, c1), block by block: the sums, then dx
 * (j->y; NULL when dx is not wanted) while the block is in L2. */
static void bwd_range(void *arg, int t, int64_t c0, int64_t c1)
{
    bn_job *j = arg;
    sums_channels(j, c0, c1);
    if (j->y) /* dx's mean terms in training only */
        dx_channels(j, c0, c1, j->g->training);
}

ff_status ff_bwd_batch_norm(ff_ctx *ctx, const ff_tensor *gout, ff_tensor **gin)
{
    ff_tensor *stats, *x, *w, *b;
    ff_status st;
    int k = 0;
    bool has_w = ctx->in_shape[1].ndim >= 0, has_b = ctx->in_shape[2].ndim >= 0;
    if ((st = next_saved(ctx, &k, true, &stats)) || (st = next_saved(ctx, &k, bn_saves_x(ctx), &x)) ||
        (st = next_saved(ctx, &k, bn_saves_w(ctx, has_w), &w)) ||
        (st = next_saved(ctx, &k, bn_saves_b(ctx, has_b), &b)))
        return st;
    bn_geom g;
    bn_geometry(ctx->in_shape[0].size, ctx->in_shape[0].ndim, &ctx->p, &g);
    for (int i = 0; i < 3; i++) /* the caller releases them on failure */
        if (ctx->needs_grad[i] && !(gin[i] = shaped(&ctx->in_shape[i])))
            return ff_last_status();
    ff_tensor *gc = ff_tensor_contiguous((ff_tensor *)gout);
    if (!gc)
        return ff_last_status();
    double *sg = calloc(2 * (size_t)g.C + 1, sizeof(double)), *sgx = sg + g.C;
    if (!sg) {
        ff_tensor_release(gc);
        return ff_error(FF_ERR_MEM, "backward of batch_norm: out of memory");
    }
    float *s = ff_tensor_data(stats);
    /* x is saved for dx in training, dweight and relu's mask; dx reads it
     * only in training */
    bn_job j = {.g = &g, .relu = ctx->p.i[1] != 0, .x = x ? ff_tensor_data(x) : NULL,
                .gy = ff_tensor_data(gc), .stats = s, .w = w, .b = b, .sg = sg, .sgx = sgx,
                .y = gin[0] ? ff_tensor_data(gin[0]) : NULL};
    ff_par_run(bn_threads(&g), g.C, bwd_range, &j);
    for (int64_t c = 0; c < g.C; c++) {
        if (gin[1]) /* dweight = Σ gr·x̂ = invstd·Σ gr·(x - mean) */
            ff_tensor_data(gin[1])[c] = (float)(sgx[c] * s[g.C + c]);
        if (gin[2]) /* dbias = Σ gr */
            ff_tensor_data(gin[2])[c] = (float)sg[c];
    }
    free(sg);
    ff_tensor_release(gc);
    return FF_OK;
}

/* ======================================================================
 * layer_norm: x read as R rows of M values.
 * ====================================================================== */

typedef struct {
    int64_t R, M;
} ln_geom;

static void ln_geometry(const int64_t *shape, int ndim, int k, ln_geom *g)
{
    g->R = 1, g->M = 1;
    for (int d = 0; d < ndim; d++)
        *(d < ndim - k ? &g->R : &g->M) *= shape[d];
}

/* weight or bias: NULL, or exactly the normalised trailing shape of x. */
static ff_status ln_check_affine(const ff_tensor *t, const char *what, const ff_tensor *x, int k)
{
    if (!t)
        return FF_OK;
    bool ok = t->ndim == k;
    for (int d = 0; ok && d < k; d++)
        ok = t->shape[d] == x->shape[x->ndim - k + d];
    if (ok)
        return FF_OK;
    char st[FF_SHAPE_STRLEN], sw[FF_SHAPE_STRLEN], sx[FF_SHAPE_STRLEN];
    return ff_error(FF_ERR_SHAPE, "layer_norm: %s has shape %s, expected %s (the last %d dims of input %s)",
                    what, ff_shape_str(t->shape, t->ndim, st, sizeof st),
                    ff_shape_str(x->shape + x->ndim - k, k, sw, sizeof sw), k,
                    ff_shape_str(x->shape, x->ndim, sx, sizeof sx));
}

static ff_status ln_check(ff_tensor *const *in, const ff_params *p)
{
    const ff_tensor *x = in[0];
    int64_t k = p->i[0];
    if (k < 1 || k > x->ndim) {
        char sx[FF_SHAPE_STRLEN];
        return ff_error(FF_ERR_ARG, "layer_norm: cannot normalise the last %lld dims of input %s (expected 1..%d)",
                        (long long)k, ff_shape_str(x->shape, x->ndim, sx, sizeof sx), x->ndim);
    }
    ff_status st;
    if ((st = ln_check_affine(in[1], "weight", x, (int)k)) || (st = ln_check_affine(in[2], "bias", x, (int)k)))
        return st;
    return check_eps("layer_norm", p->f[0]);
}

/* For each row: mean, invstd (into stats: R means then R invstds), then
 * y = x̂·w + b. w, b contiguous or NULL. */
static void ln_forward(const ln_geom *g, const float *x, const float *w, const float *b,
                       double eps, float *stats, float *y)
{
    int64_t M = g->M;
    for (int64_t r = 0; r < g->R; r++) {
        const float *xr = x + r * M;
        float *yr = y + r * M;
        double mean = M ? row_sum(xr, M) / (double)M : 0;
        double var = M ? row_sqdev(xr, M, mean) / (double)M : 0;
        float inv = (float)(1.0 / sqrt(var + eps)), m = (float)mean;
        stats[r] = m, stats[g->R + r] = inv;
        row_affine(yr, xr, M, inv, -m * inv); /* x̂, then the affine map */
        if (w)
            row_mul(yr, w, M);
        if (b)
            row_add(yr, b, M);
    }
}

static bool ln_saves_x(const ff_ctx *ctx)
{
    return ctx->needs_grad[0] || ctx->needs_grad[1];
}

ff_tensor *ff_fwd_layer_norm(ff_ctx *ctx, ff_tensor *const *in)
{
    if (ln_check(in, &ctx->p) != FF_OK)
        return NULL;
    ln_geom g;
    ln_geometry(in[0]->shape, in[0]->ndim, (int)ctx->p.i[0], &g);
    int64_t two_r = 2 * g.R;
    ff_tensor *x = ff_tensor_contiguous(in[0]);
    ff_tensor *w = in[1] ? ff_tensor_contiguous(in[1]) : NULL;
    ff_tensor *b = in[2] ? ff_tensor_contiguous(in[2]) : NULL;
    ff_tensor *stats = ff_tensor_empty(&two_r, 1);
    ff_tensor *y = x ? ff_tensor_empty(x->shape, x->ndim) : NULL;
    if (y && stats && (w || !in[1]) && (b || !in[2])) {
        ln_forward(&g, ff_tensor_data(x), w ? ff_tensor_data(w) : NULL, b ? ff_tensor_data(b) : NULL,
                   ctx->p.f[0], ff_tensor_data(stats), ff_tensor_data(y));
        ff_ctx_save(ctx, stats);
        ff_ctx_save(ctx, ln_saves_x(ctx) ? x : NULL);
        ff_ctx_save(ctx, ctx->needs_grad[0] ? w : NULL);
    } else {
        ff_tensor_release(y);
        y = NULL;
    }
    ff_tensor_release(x), ff_tensor_release(w), ff_tensor_release(b), ff_tensor_release(stats);
    return y;
}

/* One row of the backward. xh and gh are M floats of scratch; dwacc and
 * dbacc (M doubles, or NULL) accumulate over rows. x is NULL when only
 * dbias is wanted (forward saved no x then). */
static void ln_row_backward(int64_t M, const float *gy, const float *x, const float *w, float mean,
                            float inv, float *dx, float *xh, float *gh, double *dwacc, double *dbacc)
{
    if (dbacc) /* dbias += gy */
        acc_f64(dbacc, gy, NULL, M);
    if (!x)
        return;
    row_affine(xh, x, M, inv, -mean * inv);
    memcpy(gh, gy, sizeof(float) * (size_t)M);
    if (w)
        row_mul(gh, w, M);
    if (dx) { /* dx = invstd·(ĝ - mean(ĝ) - x̂·mean(ĝ·x̂)) */
        double a = row_sum(gh, M) / (double)M, b = row_dotdev(gh, xh, M, 0.0) / (double)M;
        row_affine2(dx, gh, xh, M, inv, (float)(-inv * b), 0.0f, (float)(-inv * a));
    }
    if (dwacc) /* dweight += gy·x̂ */
        acc_f64(dwacc, gy, xh, M);
}

ff_status ff_bwd_layer_norm(ff_ctx *ctx, const ff_tensor *gout, ff_tensor **gin)
{
    ff_tensor *stats, *x, *w;
    ff_status st;
    int k = 0;
    if ((st = next_saved(ctx, &k, true, &stats)) || (st = next_saved(ctx, &k, ln_saves_x(ctx), &x)) ||
        (st = next_saved(ctx, &k, ctx->needs_grad[0] && ctx->in_shape[1].ndim >= 0, &w)))
        return st;
    ln_geom g;
    ln_geometry(ctx->in_shape[0].size, ctx->in_shape[0].ndim, (int)ctx->p.i[0], &g);
    for (int i = 0; i < 3; i++) /* the caller releases them on failure */
        if (ctx->needs_grad[i] && !(gin[i] = shaped(&ctx->in_shape[i])))
            return ff_last_status();
    ff_tensor *gc = ff_tensor_contiguous((ff_tensor *)gout);
    if (!gc)
        return ff_last_status();
    int64_t M = g.M;
    size_t nacc = (gin[1] ? 1 : 0) + (gin[2] ? 1 : 0);
    char *buf = calloc(1, sizeof(float) * 2 * (size_t)M + sizeof(double) * nacc * (size_t)M + 8);
    if (!buf) {
        ff_tensor_release(gc);
        return ff_error(FF_ERR_MEM, "backward of layer_norm: out of memory");
    }
    double *acc = (double *)buf; /* doubles first: aligned */
    double *dwacc = gin[1] ? acc : NULL, *dbacc = gin[2] ? acc + (gin[1] ? M : 0) : NULL;
    float *xh = (float *)(acc + nacc * (size_t)M), *gh = xh + M;
    const float *s = ff_tensor_data(stats), *gy = ff_tensor_data(gc);
    const float *xd = x ? ff_tensor_data(x) : NULL;
    const float *wd = w ? ff_tensor_data(w) : NULL;
    float *dx = gin[0] ? ff_tensor_data(gin[0]) : NULL;
    for (int64_t r = 0; r < g.R; r++)
        ln_row_backward(M, gy + r * M, xd ? xd + r * M : NULL, wd, s[r], s[g.R + r], dx ? dx + r * M : NULL,
                        xh, gh, dwacc, dbacc);
    for (int64_t j = 0; j < M; j++) {
        if (dwacc)
            ff_tensor_data(gin[1])[j] = (float)dwacc[j];
        if (dbacc)
            ff_tensor_data(gin[2])[j] = (float)dbacc[j];
    }
    free(buf);
    ff_tensor_release(gc);
    return FF_OK;
}
