/*
 * op_loss.c: softmax, log_softmax and the losses as differentiable ops.
 *
 * Softmax and log_softmax read their input as `outer` blocks of `n` rows of
 * `inner` elements (n along dim) and subtract each slice's maximum before
 * exponentiating, so inputs of 1000 (or -1000) are fine. cross_entropy is
 * fused: one pass per row gives the loss and, when recording, the softmax
 * that its backward (softmax - target) needs; it never builds log_softmax
 * and nll_loss nodes. Sums are taken in double.
 *
 * Losses reduce with i[0]: 0 none (per-sample / per-element results),
 * 1 mean, 2 sum (rank-0 results). Labels are 0-based class indices stored
 * as floats, checked to be integers in 0..C-1; messages print them 1-based,
 * as Lua users wrote them.
 *
 * Parameters (ff_params):
 *   softmax, log_softmax   i[0] dim (0 for a rank-0 input)
 *   cross_entropy   input logits (N, C); aux[0] labels (N); i[0] reduction;
 *                   f[0] label smoothing s in [0, 1] (target (1-s) onehot + s/C)
 *   nll_loss        input log-probabilities (N, C); aux[0] labels (N); i[0] reduction
 *   mse_loss        inputs input, target (broadcastable; both get gradients);
 *                   i[0] reduction (the mean is over the broadcast shape)
 *   bce_with_logits inputs logits x, targets y of one shape; i[0] reduction
 *
 * Saved for backward:
 *   softmax, log_softmax   the result
 *   cross_entropy          the softmax (N, C) and the labels
 *   nll_loss               the labels
 *   mse_loss               input - target (the broadcast difference)
 *   bce_with_logits        x and y (contiguous)
 */
#include <math.h>
#include "ff_autograd.h"
#include "ff_ops.h"

enum { RED_NONE = 0, RED_MEAN = 1, RED_SUM = 2 };

/* ---- shared helpers ---- */

typedef struct {
    int64_t outer, n, inner;
} rlayout;

static rlayout layout_of(const int64_t *shape, int ndim, int dim)
{
    rlayout l = {1, 1, 1};
    for (int i = 0; i < ndim; i++) {
        if (i == dim)
            l.n = shape[i];
        else if (i < dim)
            l.outer *= shape[i];
        else
            l.inner *= shape[i];
    }
    return l;
}

static ff_status check_reduction(const char *fn, int64_t red)
{
    if (red < RED_NONE || red > RED_SUM)
        return ff_error(FF_ERR_ARG, "%s: reduction must be 0 (none), 1 (mean) or 2 (sum), got %lld",
                        fn, (long long)red);
    return FF_OK;
}

/* The reduced loss as a rank-0 tensor. */
static ff_tensor *reduced(int64_t red, double total, int64_t count)
{
    return ff_tensor_scalar((float)(red == RED_MEAN ? total / (double)count : total));
}

/* Each element's weight in the gradient: the output gradient itself
 * (reduction none), or the one gradient of the reduced result, divided by
 * the count for a mean. */
typedef struct {
    ff_tensor *held;
    const float *v;
    int64_t step; /* 1 for none, 0 for the reduced scalar */
    float scale;
} lweights;

static ff_status weights_of(const ff_ctx *ctx, const ff_tensor *g, int64_t count, lweights *w)
{
    *w = (lweights){.held = ff_tensor_contiguous((ff_tensor *)g),
                    .step = ctx->p.i[0] == RED_NONE ? 1 : 0,
                    .scale = ctx->p.i[0] == RED_MEAN ? (float)(1.0 / (double)count) : 1.0f};
    if (!w->held)
        return ff_last_status();
    w->v = ff_tensor_data(w->held);
    return FF_OK;
}

static inline float weight_at(const lweights *w, int64_t i)
{
    return w->v[i * w->step] * w->scale;
}

static ff_status saved2(const ff_ctx *ctx, ff_tensor **a, ff_tensor **b)
{
    ff_status st = ff_ctx_saved(ctx, 0, a);
    return st == FF_OK ? ff_ctx_saved(ctx, 1, b) : st;
}

/* ---- softmax, log_softmax ---- */

static ff_status check_dim(const char *fn, const ff_tensor *x, int64_t dim)
{
    int rank = x->ndim > 0 ? x->ndim : 1; /* a scalar has one element along "dim 1" */
    if (dim < 0 || dim >= rank)
        /* dim is an unchecked parameter: INT64_MAX + 1 would overflow. */
        return ff_error(FF_ERR_RANGE, "%s: dim %lld out of range for a tensor of rank %d", fn,
                        dim == INT64_MAX ? (long long)dim : (long long)dim + 1, x->ndim);
    return FF_OK;
}

/* One contiguous slice: y = softmax(x) or log_softmax(x). */
static void softmax_row(const float *x, float *y, int64_t n, bool log_out)
{
    float m = -INFINITY;
    for (int64_t i = 0; i < n; i++)
        m = x[i] > m ? x[i] : m;
    double s = 0;
    for (int64_t i = 0; i < n; i++) {
        float e = expf(x[i] - m);
        y[i] = e;
        s += e;
    }
    if (log_out) {
        float ls = (float)log(s);
        for (int64_t i = 0; i < n; i++)
            y[i] = (x[i] - m) - ls;
    } else {
        float inv = (float)(1.0 / s);
        for (int64_t i = 0; i < n; i++)
            y[i] *= inv;
    }
}

/* One block of n rows of `inner` columns, softmax down each column, walking
 * memory in order; mx and acc are scratch of `inner` entries. */
static void softmax_block(const float *x, float *y, int64_t n, int64_t inner, bool log_out,
                          float *mx, double *acc)
{
    for (int64_t j = 0; j < inner; j++)
        mx[j] = -INFINITY, acc[j] = 0;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < inner; j++)
            mx[j] = x[i * inner + j] > mx[j] ? x[i * inner + j] : mx[j];
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < inner; j++) {
            float e = expf(x[i * inner + j] - mx[j]);
            y[i * inner + j] = e;
            acc[j] += e;
        }
    for (int64_t j = 0; j < inner; j++)
        acc[j] = log_out ? log(acc[j]) : 1.0 / acc[j];
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < inner; j++) {
            int64_t k = i * inner + j;
            y[k] = log_out ? (x[k] - mx[j]) - (float)acc[j] : y[k] * (float)acc[j];
        }
}

static bool layout_empty(rlayout l)
{
    return l.outer == 0 || l.n == 0 || l.inner == 0;
}

static ff_status softmax_kernel(rlayout l, const float *x, float *y, bool log_out)
{
    if (layout_empty(l))
        return FF_OK;
    if (l.inner == 1) {
        for (int64_t b = 0; b < l.outer; b++)
            softmax_row(x + b * l.n, y + b * l.n, l.n, log_out);
        return FF_OK;
    }
    /* scratch: each column's running sum and maximum */
    size_t nacc = (size_t)l.inner * sizeof(double), nmx = (size_t)l.inner * sizeof(float);
    double *acc = ff_alloc(nacc);
    float *mx = acc ? ff_alloc(nmx) : NULL;
    if (mx)
        for (int64_t b = 0; b < l.outer; b++)
            softmax_block(x + b * l.n * l.inner, y + b * l.n * l.inner, l.n, l.inner, log_out,
                          mx, acc);
    ff_status st = mx ? FF_OK : ff_last_status();
    if (acc)
        ff_free(acc, nacc);
    if (mx)
        ff_free(mx, nmx);
    return st;
}

static ff_tensor *softmax_forward(ff_ctx *ctx, const ff_tensor *x, bool log_out)
{
    const char *fn = log_out ? "log_softmax" : "softmax";
    int64_t dim = ctx->p.i[0];
    if (check_dim(fn, x, dim) != FF_OK)
        return NULL;
    ff_tensor *xc = ff_tensor_contiguous((ff_tensor *)x);
    ff_tensor *y = xc ? ff_tensor_empty(x->shape, x->ndim) : NULL;
    ff_status st = y ? softmax_kernel(layout_of(x->shape, x->ndim, (int)dim), ff_tensor_data(xc),
                                      ff_tensor_data(y), log_out)
                     : ff_last_status();
    ff_tensor_release(xc);
    if (st != FF_OK) {
        ff_tensor_release(y);
        return NULL;
    }
    ff_ctx_save(ctx, y);
    return y;
}

/* softmax: gx = y (g - sum g y); log_softmax: gx = g - e^y sum g. One slice. */
static void softmax_grad_row(const float *g, const float *y, float *gx, int64_t n, bool log_out)
{
    double s = 0;
    for (int64_t i = 0; i < n; i++)
        s += log_out ? g[i] : (double)g[i] * y[i];
    float sf = (float)s;
    for (int64_t i = 0; i < n; i++)
        gx[i] = log_out ? g[i] - expf(y[i]) * sf : y[i] * (g[i] - sf);
}

static void softmax_grad_block(const float *g, const float *y, float *gx, int64_t n,
                               int64_t inner, bool log_out, double *acc)
{
    for (int64_t j = 0; j < inner; j++)
        acc[j] = 0;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < inner; j++) {
            int64_t k = i * inner + j;
            acc[j] += log_out ? g[k] : (double)g[k] * y[k];
        }
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < inner; j++) {
            int64_t k = i * inner + j;
            float s = (float)acc[j];
            gx[k] = log_out ? g[k] - expf(y[k]) * s : y[k] * (g[k] - s);
        }
}

static ff_status softmax_grad_kernel(rlayout l, const float *g, const float *y, float *gx,
                                     bool log_out)
{
    if (layout_empty(l))
        return FF_OK;
    if (l.inner == 1) {
        for (int64_t b = 0; b < l.outer; b++)
            softmax_grad_row(g + b * l.n, y + b * l.n, gx + b * l.n, l.n, log_out);
        return FF_OK;
    }
    size_t bytes = (size_t)l.inner * sizeof(double);
    double *acc = ff_alloc(bytes);
    if (!acc)
        return ff_last_status();
    for (int64_t b = 0; b < l.outer; b++) {
        int64_t off = b * l.n * l.inner;
        softmax_grad_block(g + off, y + off, gx + off, l.n, l.inner, log_out, acc);
    }
    ff_free(acc, bytes);
    return FF_OK;
}

static ff_status softmax_backward(ff_ctx *ctx, const ff_tensor *g, ff_tensor **gin, bool log_out)
{
    ff_tensor *y;
    ff_status st = ff_ctx_saved(ctx, 0, &y);
    if (st != FF_OK)
        return st;
    ff_tensor *gc = ff_tensor_contiguous((ff_tensor *)g);
    ff_tensor *yc = gc ? ff_tensor_contiguous(y) : NULL;
    ff_tensor *gx = yc ? ff_tensor_empty(y->shape, y->ndim) : NULL;
    st = gx ? softmax_grad_kernel(layout_of(y->shape, y->ndim, (int)ctx->p.i[0]),
                                  ff_tensor_data(gc), ff_tensor_data(yc), ff_tensor_data(gx),
                                  log_out)
            : ff_last_status();
    ff_tensor_release(gc);
    ff_tensor_release(yc);
    if (st != FF_OK) {
        ff_tensor_release(gx);
        return st;
    }
    gin[0] = gx;
    return FF_OK;
}

ff_tensor *ff_fwd_softmax(ff_ctx *ctx, ff_tensor *const *in)
{
    return softmax_forward(ctx, in[0], false);
}

/* d softmax = y (g - sum(g y)) along dim */
ff_status ff_bwd_softmax(ff_ctx *ctx, const ff_tensor *g, ff_tensor **gin)
{
    return softmax_backward(ctx, g, gin, false);
}

ff_tensor *ff_fwd_log_softmax(ff_ctx *ctx, ff_tensor *const *in)
{
    return softmax_forward(ctx, in[0], true);
}

/* d log_softmax = g - e^y sum(g) along dim */
ff_status ff_bwd_log_softmax(ff_ctx *ctx, const ff_tensor *g, ff_tensor **gin)
{
    return softmax_backward(ctx, g, gin, true);
}

/* ---- labels ---- */

/* The labels of an (N, C) input, checked (rank 1, N entries, integers in
 * 0..C-1), as a contiguous tensor (new reference). */
static ff_tensor *checked_labels(const char *fn, const ff_tensor *x, const ff_tensor *labels)
{
    char a[FF_SHAPE_STRLEN], b[FF_SHAPE_STRLEN];
    if (x->ndim != 2)
        return ff_error(FF_ERR_SHAPE, "%s: input must be 2-D (N x C), got shape %s", fn,
                        ff_shape_str(x->shape, x->ndim, a, sizeof a)),
               NULL;
    if (!labels)
        return ff_error(FF_ERR_ARG, "%s: the labels (aux[0]) are missing", fn), NULL;
    int64_t n = x->shape[0], c = x->shape[1];
    if (labels->ndim != 1 || labels->shape[0] != n)
        return ff_error(FF_ERR_SHAPE,
                        "%s: labels have shape %s, expected %lld (one per row of the %s input)", fn,
                        ff_shape_str(labels->shape, labels->ndim, a, sizeof a), (long long)n,
                        ff_shape_str(x->shape, x->ndim, b, sizeof b)),
               NULL;
    ff_tensor *lc = ff_tensor_contiguous((ff_tensor *)labels);
    if (!lc)
        return NULL;
    const float *v = ff_tensor_data(lc);
    for (int64_t i = 0; i < n; i++) {
        ff_status st = FF_OK;
        if (v[i] != floorf(v[i]) || isinf(v[i]))
            st = ff_error(FF_ERR_ARG, "%s: label %g at position %lld is not an integer", fn,
                          (double)v[i] + 1, (long long)i + 1);
        else if (v[i] < 0 || v[i] >= (float)c)
            st = ff_error(FF_ERR_RANGE, "%s: label %g out of range for %lld classes", fn,
                          (double)v[i] + 1, (long long)c);
        if (st != FF_OK) {
            ff_tensor_release(lc);
            return NULL;
        }
    }
    return lc;
}

/* ---- cross_entropy ---- */

/* The loss of one row of logits x (C entries) with label y and smoothing s:
 * -(1-s) log p_y - (s/C) sum_c log p_c, with log p = x - lse. When p is not
 * NULL it receives the softmax. */
static double ce_row(const float *x, int64_t c, int64_t y, double s, float *p)
{
    float m = -INFINITY;
    for (int64_t k = 0; k < c; k++)
        m = x[k] > m ? x[k] : m;
    double sum = 0;
    if (p) {
        for (int64_t k = 0; k < c; k++) {
            p[k] = expf(x[k] - m);
            sum += p[k];
        }
        float inv = (float)(1.0 / sum);
        for (int64_t k = 0; k < c; k++)
            p[k] *= inv;
    } else {
        for (int64_t k = 0; k < c; k++)
            sum += expf(x[k] - m);
    }
    double lse = m + log(sum);
    double loss = -(1 - s) * (x[y] - lse);
    if (s > 0) {
        double sx = 0;
        for (int64_t k = 0; k < c; k++)
            sx += x[k];
        loss -= s / (double)c * (sx - (double)c * lse);
    }
    return loss;
}

static ff_status check_smoothing(const char *fn, double s)
{
    if (!(s >= 0 && s <= 1))
        return ff_error(FF_ERR_ARG, "%s: label_smoothing must be in [0, 1], got %g", fn, s);
    return FF_OK;
}

/* Per-row losses of an (N, C) input (out: N entries, or NULL); returns their
 * total. probs (N x C) receives the softmax when not NULL. */
static double ce_rows(const ff_tensor *xc, const ff_tensor *labels, double s, float *out,
                      float *probs)
{
    int64_t n = xc->shape[0], c = xc->shape[1];
    const float *x = ff_tensor_data(xc), *y = ff_tensor_data(labels);
    double total = 0;
    for (int64_t i = 0; i < n; i++) {
        double loss = ce_row(x + i * c, c, (int64_t)y[i], s, probs ? probs + i * c : NULL);
        total += loss;
        if (out)
            out[i] = (float)loss;
    }
    return total;
}

ff_tensor *ff_fwd_cross_entropy(ff_ctx *ctx, ff_tensor *const *in)
{
    const char *fn = "cross_entropy";
    int64_t red = ctx->p.i[0];
    if (check_reduction(fn, red) != FF_OK || check_smoothing(fn, ctx->p.f[0]) != FF_OK)
        return NULL;
    ff_tensor *labels = checked_labels(fn, in[0], ctx->p.aux[0]);
    if (!labels)
        return NULL;
    int64_t n = in[0]->shape[0], c = in[0]->shape[1];
    int64_t pshape[2] = {n, c};
    ff_tensor *xc = ff_tensor_contiguous(in[0]), *probs = NULL, *out = NULL;
    bool ok = xc != NULL;
    /* the softmax is only needed by backward */
    if (ok && ctx->recording)
        ok = (probs = ff_tensor_empty(pshape, 2)) != NULL;
    if (ok && red == RED_NONE)
        ok = (out = ff_tensor_empty(&n, 1)) != NULL;
    if (ok) {
        double total = ce_rows(xc, labels, ctx->p.f[0], out ? ff_tensor_data(out) : NULL,
                               probs ? ff_tensor_data(probs) : NULL);
        if (red != RED_NONE)
            out = reduced(red, total, n);
    }
    if (out) {
        ff_ctx_save(ctx, probs);
        ff_ctx_save(ctx, labels);
    }
    ff_tensor_release(xc);
    ff_tensor_release(probs);
    ff_tensor_release(labels);
    return out;
}

/* d ce / dx = w_n (softmax(x) - target), target = (1-s) onehot(y) + s/C */
ff_status ff_bwd_cross_entropy(ff_ctx *ctx, const ff_tensor *g, ff_tensor **gin)
{
    ff_tensor *probs, *labels;
    ff_status st = saved2(ctx, &probs, &labels);
    if (st != FF_OK)
        return st;
    int64_t n = probs->shape[0], c = probs->shape[1];
    double s = ctx->p.f[0];
    lweights w;
    if ((st = weights_of(ctx, g, n, &w)) != FF_OK)
        return st;
    gin[0] = ff_tensor_empty(probs->shape, 2);
    if (gin[0]) {
        const float *p = ff_tensor_data(probs), *y = ff_tensor_data(labels);
        float *gx = ff_tensor_data(gin[0]), uniform = (float)(s / (double)c);
        for (int64_t i = 0; i < n; i++) {
            float wi = weight_at(&w, i);
            for (int64_t k = 0; k < c; k++)
                gx[i * c + k] = wi * (p[i * c + k] - uniform);
            gx[i * c + (int64_t)y[i]] -= wi * (float)(1 - s);
        }
    }
    ff_tensor_release(w.held);
    return gin[0] ? FF_OK : ff_last_status();
}

/* ---- nll_loss ---- */

ff_tensor *ff_fwd_nll_loss(ff_ctx *ctx, ff_tensor *const *in)
{
    const char *fn = "nll_loss";
    int64_t red = ctx->p.i[0];
    if (check_reduction(fn, red) != FF_OK)
        return NULL;
    const ff_tensor *x = in[0];
    ff_tensor *labels = checked_labels(fn, x, ctx->p.aux[0]);
    if (!labels)
        return NULL;
    int64_t n = x->shape[0];
    ff_tensor *out = red == RED_NONE ? ff_tensor_empty(&n, 1) : NULL;
    if (out || red != RED_NONE) {
        /* N elements only: read them through the strides, no copy */
        const float *xp = ff_tensor_data(x), *y = ff_tensor_data(labels);
        double total = 0;
        for (int64_t i = 0; i < n; i++) {
            float loss = -xp[i * x->stride[0] + (int64_t)y[i] * x->stride[1]];
            total += loss;
            if (out)
                ff_tensor_data(out)[i] = loss;
        }
        if (red != RED_NONE)
            out = reduced(red, total, n);
    }
    if (out)
        ff_ctx_save(ctx, labels);
    ff_tensor_release(labels);
    return out;
}

/* d nll / dx[n, y_n] = -w_n, 0 elsewhere */
ff_status ff_bwd_nll_loss(ff_ctx *ctx, const ff_tensor *g, ff_tensor **gin)
{
    ff_tensor *labels;
    ff_status st = ff_ctx_saved(ctx, 0, &labels);
    if (st != FF_OK)
        return st;
    const ff_shape *s = &ctx->in_shape[0];
    int64_t n = s->size[0], c = s->size[1];
    lweights w;
    if ((st = weights_of(ctx, g, n, &w)) != FF_OK)
        return st;
    gin[0] = ff_tensor_zeros(s->size, s->ndim);
    if (gin[0]) {
        const float *y = ff_tensor_data(labels);
        float *gx = ff_tensor_data(gin[0]);
        for (int64_t i = 0; i < n; i++)
            gx[i * c + (int64_t)y[i]] = -weight_at(&w, i);
    }
    ff_tensor_release(w.held);
    return gin[0] ? FF_OK : ff_last_status();
}

/* ---- mse_loss ---- */

ff_tensor *ff_fwd_mse_loss(ff_ctx *ctx, ff_tensor *const *in)
{
    const char *fn = "mse_loss";
    int64_t red = ctx->p.i[0], shape[FF_MAX_DIMS];
    int ndim;
    if (check_reduction(fn, red) != FF_OK ||
        ff_broadcast_shape(fn, in[0], in[1], shape, &ndim) != FF_OK)
        return NULL;
    ff_tensor *d = ff_binary(FF_SUB, in[0], in[1]);
    if (!d)
        return NULL;
    int64_t n = ff_tensor_numel(d);
    const float *dp = ff_tensor_data(d);
    ff_tensor *out;
    if (red == RED_NONE) {
        out = ff_tensor_empty(d->shape, d->ndim);
        for (int64_t i = 0; out && i < n; i++)
            ff_tensor_data(out)[i] = dp[i] * dp[i];
    } else {
        double total = 0;
        for (int64_t i = 0; i < n; i++)
            total += (double)dp[i] * dp[i];
        out = reduced(red, total, n);
    }
    if (out)
        ff_ctx_save(ctx, d);
    ff_tensor_release(d);
    return out;
}

/* d mse = 2 (a - b) w, and its negation for b; each summed back to its input */
ff_status ff_bwd_mse_loss(ff_ctx *ctx, const ff_tensor *g, ff_tensor **gin)
{
    ff_tensor *d;
    ff_status st = ff_ctx_saved(ctx, 0, &d);
    if (st != FF_OK)
        return st;
    int64_t n = ff_tensor_numel(d);
    lweights w;
    if ((st = weights_of(ctx, g, n, &w)) != FF_OK)
        return st;
    ff_tensor *full = ff_tensor_empty(d->shape, d->ndim);
    if (full) {
        const float *dp = ff_tensor_data(d);
        float *o = ff_tensor_data(full);
        for (int64_t i = 0; i < n; i++)
            o[i] = 2.0f * dp[i] * weight_at(&w, i);
    }
    ff_tensor_release(w.held);
    if (!full)
        return ff_last_status();
    if (ctx->needs_grad[0] && !(gin[0] = ff_sum_to_shape(full, &ctx->in_shape[0])))
        st = ff_last_status();
    if (st == FF_OK && ctx->needs_grad[1]) {
        ff_tensor *s = ff_sum_to_shape(full, &ctx->in_shape[1]);
        gin[1] = s ? ff_unary(FF_NEG, s) : NULL;
        ff_tensor_release(s);
        st = gin[1] ? FF_OK : ff_last_status();
    }
    ff_tensor_release(full);
    return st;
}

/* ---- bce_with_logits ---- */

/* max(x, 0) - x y + log(1 + e^-|x|): never exponentiates a positive number. */
static inline float bce1(float x, float y)
{
    return fmaxf(x, 0.0f) - x * y + log1pf(expf(-fabsf(x)));
}

static inline float sigm(float x)
{
    float e = expf(-fabsf(x));
    return x >= 0 ? 1.0f / (1.0f + e) : e / (1.0f + e);
}

ff_tensor *ff_fwd_bce_with_logits(ff_ctx *ctx, ff_tensor *const *in)
{
    const char *fn = "bce_with_logits";
    int64_t red = ctx->p.i[0];
    if (check_reduction(fn, red) != FF_OK)
        return NULL;
    if (!ff_shape_equal(in[0], in[1])) {
        char a[FF_SHAPE_STRLEN], b[FF_SHAPE_STRLEN];
        ff_error(FF_ERR_SHAPE, "%s: target has shape %s, expected the input's shape %s", fn,
                 ff_shape_str(in[1]->shape, in[1]->ndim, a, sizeof a),
                 ff_shape_str(in[0]->shape, in[0]->ndim, b, sizeof b));
        return NULL;
    }
    ff_tensor *xc = ff_tensor_contiguous(in[0]);
    ff_tensor *yc = xc ? ff_tensor_contiguous(in[1]) : NULL;
    ff_tensor *out = NULL;
    if (yc) {
        int64_t n = ff_tensor_numel(xc);
        const float *x = ff_tensor_data(xc), *y = ff_tensor_data(yc);
        if (red == RED_NONE) {
            out = ff_tensor_empty(xc->shape, xc->ndim);
            for (int64_t i = 0; out && i < n; i++)
                ff_tensor_data(out)[i] = bce1(x[i], y[i]);
        } else {
            double total = 0;
            for (int64_t i = 0; i < n; i++)
                total += bce1(x[i], y[i]);
            out = reduced(red, total, n);
        }
    }
    if (out) {
        ff_ctx_save(ctx, xc);
        ff_ctx_save(ctx, yc);
    }
    ff_tensor_release(xc);
    ff_tensor_release(yc);
    return out;
}

/* d bce / dx = (sigmoid(x) - y) w; d bce / dy = -x w */
ff_status ff_bwd_bce_with_logits(ff_ctx *ctx, const ff_tensor *g, ff_tensor **gin)
{
    ff_tensor *x, *y;
    ff_status st = saved2(ctx, &x, &y);
    if (st != FF_OK)
        return st;
    int64_t n = ff_tensor_numel(x);
    lweights w;
    if ((st = weights_of(ctx, g, n, &w)) != FF_OK)
        return st;
    const float *xp = ff_tensor_data(x), *yp = ff_tensor_data(y);
    for (int k = 0; k < 2 && st == FF_OK; k++) {
        if (!ctx->needs_grad[k])
            continue;
        if (!(gin[k] = ff_tensor_empty(x->shape, x->ndim))) {
            st = ff_last_status();
            break;
        }
        float *o = ff_tensor_data(gin[k]);
        for (int64_t i = 0; i < n; i++)
            o[i] = weight_at(&w, i) * (k == 0 ? sigm(xp[i]) - yp[i] : -xp[i]);
    }
    ff_tensor_release(w.held);
    return st;
}
