/*
 * op_conv.c: 2-D convolution (NCHW, cross-correlation as in torch).
 *
 * Inputs: x (N, C, H, W), w (O, C/groups, kh, kw), b (O) or NULL.
 * Parameters (ff_params):
 *   conv2d   i[0], i[1] stride (h, w) >= 1; i[2], i[3] padding (h, w) >= 0;
 *            i[4], i[5] dilation (h, w) >= 1; i[6] groups >= 1 (C and O
 *            divisible by it; groups = C is a depthwise convolution).
 * Output: (N, O, OH, OW) with OH = (H + 2*ph - dh*(kh-1) - 1) / sh + 1 (and
 * the same for OW), an error when it is < 1.
 * Saved: x (contiguous) when dw is needed, then w (contiguous) when dx is.
 *
 * Method. For each sample and group, im2col unrolls the input patches into
 * a column matrix col (K = Cg*kh*kw rows, P = OH*OW columns), so that
 *   y_g = w_g · col            (Og x K)·(K x P), one sgemm;
 *   dw_g += gy_g · colᵀ        over the batch, sgemm with beta = 1;
 *   dx: with stride 1, a convolution of gy with the flipped kernel (see
 *   dx_as_conv), else dcol = w_gᵀ · gy_g and col2im adds dcol onto dx.
 * Each sgemm is ff_sgemm (gemm.h): the engine's own kernel where matmul
 * would use it (AVX-512: 0.68-0.78x OpenBLAS's time for a 1x1 and a
 * strided 3x3 convolution's step), else OpenBLAS.
 * Per-sample products were measured as fast per flop as products batched
 * over 8 samples at the sizes of small CNNs, and keep the column buffer
 * small (one sample's; one allocation per call, reused across the batch).
 * With stride 1 and "same" padding (the common case) a row of col is the
 * flattened input plane shifted, so im2col and col2im move whole planes
 * instead of image rows (see is_flat). A 1x1 kernel with stride 1 and no
 * padding needs no im2col at all: the input is its own column matrix.
 * Depthwise convolutions (one input channel per group) are direct loops:
 * as products their inner dimension would be kh*kw (9), far too small for
 * BLAS, and im2col would cost more than the arithmetic.
 *
 * Threads: with OpenBLAS on T > 1 threads, the batch is split into T runs
 * of whole samples, each on a thread of the split-loop pool (parallel.c)
 * with OpenBLAS set to 1 thread meanwhile (see run_split), so each product
 * runs on one; otherwise (one sample) everything runs on the calling
 * thread, whose products split over the threads themselves.
 */
#include <limits.h>
#include <string.h>
#include "ff_autograd.h"
#include "ff_ops.h"
#include "conv_direct.h"
#include "gemm.h"
#include "kernels.h"
#include "parallel.h"

typedef struct {
    int64_t N, C, H, W;     /* input */
    int64_t O, kh, kw;      /* weight */
    int64_t OH, OW;         /* output */
    int64_t sh, sw, ph, pw, dh, dw, groups;
    int64_t Cg, Og;         /* channels per group, in and out */
    int64_t K, P;           /* rows (Cg*kh*kw) and columns (OH*OW) of col */
} conv_geom;

/* Output size along one axis; < 1 when the kernel does not fit. */
static int64_t out_size(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d)
{
    /* < 1 when the kernel does not fit, also when in + 2p - d(k-1) - 1
     * overflows (no real input fits such a kernel; found by fuzz_ops) */
    int64_t pad2, ext, span;
    if (__builtin_mul_overflow(p, 2, &pad2) || __builtin_mul_overflow(d, k - 1, &ext) ||
        __builtin_add_overflow(in, pad2, &span) || __builtin_sub_overflow(span, ext, &span) ||
        __builtin_sub_overflow(span, 1, &span))
        return 0;
    return span < 0 ? 0 : span / s + 1;
}

static void geometry(const int64_t *xs, const int64_t *ws, const ff_params *p, conv_geom *g)
{
    g->N = xs[0], g->C = xs[1], g->H = xs[2], g->W = xs[3];
    g->O = ws[0], g->kh = ws[2], g->kw = ws[3];
    g->sh = p->i[0], g->sw = p->i[1], g->ph = p->i[2], g->pw = p->i[3];
    g->dh = p->i[4], g->dw = p->i[5], g->groups = p->i[6];
    g->Cg = g->C / g->groups, g->Og = g->O / g->groups;
    g->OH = out_size(g->H, g->kh, g->sh, g->ph, g->dh);
    g->OW = out_size(g->W, g->kw, g->sw, g->pw, g->dw);
    g->K = g->Cg * g->kh * g->kw, g->P = g->OH * g->OW;
}

static bool is_depthwise(const conv_geom *g) { return g->groups > 1 && g->Cg == 1; }

/* The input is its own column matrix. */
static bool is_pointwise(const conv_geom *g)
{
    return g->kh == 1 && g->kw == 1 && g->sh == 1 && g->sw == 1 && g->ph == 0 && g->pw == 0;
}

/* ---- argument checks (forward only: backward sees checked shapes) ---- */

static ff_status check_params(const ff_params *p)
{
    const int64_t *i = p->i;
    if (i[0] < 1 || i[1] < 1)
        return ff_error(FF_ERR_ARG, "conv2d: stride must be >= 1, got %lldx%lld",
                        (long long)i[0], (long long)i[1]);
    if (i[2] < 0 || i[3] < 0)
        return ff_error(FF_ERR_ARG, "conv2d: padding must be >= 0, got %lldx%lld",
                        (long long)i[2], (long long)i[3]);
    if (i[4] < 1 || i[5] < 1)
        return ff_error(FF_ERR_ARG, "conv2d: dilation must be >= 1, got %lldx%lld",
                        (long long)i[4], (long long)i[5]);
    if (i[6] < 1)
        return ff_error(FF_ERR_ARG, "conv2d: groups must be >= 1, got %lld", (long long)i[6]);
    return FF_OK;
}

static ff_status check_shapes(const ff_tensor *x, const ff_tensor *w, const ff_tensor *b,
                              int64_t groups)
{
    char sx[FF_SHAPE_STRLEN], sw[FF_SHAPE_STRLEN], sb[FF_SHAPE_STRLEN];
    ff_shape_str(x->shape, x->ndim, sx, sizeof sx);
    ff_shape_str(w->shape, w->ndim, sw, sizeof sw);
    if (x->ndim != 4)
        return ff_error(FF_ERR_SHAPE, "conv2d: input has shape %s, expected 4 dims (N x C x H x W)", sx);
    if (w->ndim != 4)
        return ff_error(FF_ERR_SHAPE,
                        "conv2d: weight has shape %s, expected 4 dims (out x in/groups x kh x kw)", sw);
    int64_t C = x->shape[1], O = w->shape[0];
    if (C % groups)
        return ff_error(FF_ERR_SHAPE, "conv2d: input has %lld channels (shape %s), not divisible by groups = %lld",
                        (long long)C, sx, (long long)groups);
    if (O % groups)
        return ff_error(FF_ERR_SHAPE, "conv2d: weight has %lld output channels (shape %s), not divisible by groups = %lld",
                        (long long)O, sw, (long long)groups);
    if (w->shape[1] != C / groups)
        return ff_error(FF_ERR_SHAPE,
                        "conv2d: weight has shape %s, expected %lldx%lldx%lldx%lld for input %s "
                        "with groups = %lld (channel mismatch)",
                        sw, (long long)O, (long long)(C / groups), (long long)w->shape[2],
                        (long long)w->shape[3], sx, (long long)groups);
    if (w->shape[2] < 1 || w->shape[3] < 1 || O < 1)
        return ff_error(FF_ERR_SHAPE, "conv2d: weight has shape %s, expected non-empty kernels", sw);
    if (b && (b->ndim != 1 || b->shape[0] != O))
        return ff_error(FF_ERR_SHAPE, "conv2d: bias has shape %s, expected %lld to match weight %s",
                        ff_shape_str(b->shape, b->ndim, sb, sizeof sb), (long long)O, sw);
    return FF_OK;
}

static ff_status check_geometry(const conv_geom *g, const ff_tensor *x)
{
    char sx[FF_SHAPE_STRLEN];
    if (g->OH < 1 || g->OW < 1)
        return ff_error(FF_ERR_SHAPE,
                        "conv2d: output size is %lldx%lld (<= 0) for input %s with kernel %lldx%lld, "
                        "padding %lldx%lld, dilation %lldx%lld",
                        (long long)g->OH, (long long)g->OW,
                        ff_shape_str(x->shape, x->ndim, sx, sizeof sx), (long long)g->kh,
                        (long long)g->kw, (long long)g->ph, (long long)g->pw, (long long)g->dh,
                        (long long)g->dw);
    if (g->K > INT_MAX || g->P > INT_MAX || g->Og > INT_MAX)
        return ff_error(FF_ERR_ARG, "conv2d: sizes exceed BLAS's 32-bit limit");
    return FF_OK;
}

/* ---- small loops ----
 * gcc -O2 (its "very cheap" vector cost model) vectorises a loop only when
 * its trip count is a known multiple of the vector width, so each flat loop
 * runs its bulk in multiples of 8 and then a scalar tail (as elementwise.c
 * does); reductions keep eight named partial sums, which gcc turns into
 * vector registers without reordering any one sum. */

static inline int64_t bulk(int64_t n) { return n & ~(int64_t)7; }

/* y += a·x */
static void axpy(int64_t n, float a, const float *restrict x, float *restrict y)
{
    int64_t m = bulk(n);
    for (int64_t i = 0; i < m; i++)
        y[i] += a * x[i];
    for (int64_t i = m; i < n; i++)
        y[i] += a * x[i];
}

/* y += x */
static void add_to(int64_t n, const float *restrict x, float *restrict y)
{
    int64_t m = bulk(n);
    for (int64_t i = 0; i < m; i++)
        y[i] += x[i];
    for (int64_t i = m; i < n; i++)
        y[i] += x[i];
}

/* y = x */
static void copy(int64_t n, const float *restrict x, float *restrict y)
{
    int64_t m = bulk(n);
    for (int64_t i = 0; i < m; i++)
        y[i] = x[i];
    for (int64_t i = m; i < n; i++)
        y[i] = x[i];
}

static void fill(int64_t n, float *y, float v)
{
    int64_t m = bulk(n);
    for (int64_t i = 0; i < m; i++)
        y[i] = v;
    for (int64_t i = m; i < n; i++)
        y[i] = v;
}


/* acc += a·b elementwise, b read with stride sb */
static void mul_acc(int64_t n, const float *restrict a, const float *restrict b, int64_t sb,
                    float *restrict acc)
{
    if (sb != 1) {
        for (int64_t i = 0; i < n; i++)
            acc[i] += a[i] * b[i * sb];
        return;
    }
    int64_t m = bulk(n);
    for (int64_t i = 0; i < m; i++)
        acc[i] += a[i] * b[i];
    for (int64_t i = m; i < n; i++)
        acc[i] += a[i] * b[i];
}

/* ---- im2col and col2im ---- */

/* Outputs o in [*lo, *hi) read input o*s + off inside [0, in). Padding is
 * handled by these ranges, so the copy loops have no per-element branch. */
/* ceil(x / s) for x >= 0, s >= 1, without forming x + s - 1: offsets come
 * from the caller's padding, which may be as large as INT64_MAX. */
static int64_t ceil_div(int64_t x, int64_t s)
{
    return x / s + (x % s != 0);
}

static void valid_range(int64_t off, int64_t s, int64_t in, int64_t out, int64_t *lo, int64_t *hi)
{
    int64_t a = off >= 0 ? 0 : ceil_div(-off, s);
    int64_t b, span;
    if (off >= in)
        b = 0;
    else if (__builtin_sub_overflow(in, off, &span))
        b = out; /* past every output */
    else
        b = ceil_div(span, s);
    *lo = a < out ? a : out;
    *hi = b < out ? b : out;
    if (*hi < *lo)
        *hi = *lo;
}

/* The output window of one kernel tap (ki, kj): outputs (oh, ow) with oh
 * in [oh0, oh1) and ow in [ow0, ow1) read input (oh*sh + hoff, ow*sw + woff);
 * the others read padding. */
typedef struct {
    int64_t hoff, woff, oh0, oh1, ow0, ow1;
} tap_window;

static void tap_of(const conv_geom *g, int64_t ki, int64_t kj, tap_window *t)
{
    t->hoff = ki * g->dh - g->ph, t->woff = kj * g->dw - g->pw;
    valid_range(t->hoff, g->sh, g->H, g->OH, &t->oh0, &t->oh1);
    valid_range(t->woff, g->sw, g->W, g->OW, &t->ow0, &t->ow1);
}

/* Stride 1 with an output as wide as the input ("same" padding, the common
 * case): output t = oh*W + ow reads input t + hoff*W + woff, so a col row
 * is the flattened plane shifted: one copy, then the few positions that
 * fall in the padding between image rows are zeroed. Per-row copies would
 * cost a library call per image row, measured at 40% of the forward. */
static bool is_flat(const conv_geom *g)
{
    return g->sh == 1 && g->sw == 1 && g->OW == g->W;
}

/* [*a, *b): the run of flattened outputs from the first valid one to the
 * last; false when the tap reads only padding. */
static bool flat_run(const conv_geom *g, const tap_window *t, int64_t *a, int64_t *b)
{
    if (t->oh0 >= t->oh1 || t->ow0 >= t->ow1)
        return false;
    *a = t->oh0 * g->W + t->ow0;
    *b = (t->oh1 - 1) * g->W + t->ow1;
    return true;
}

/* Zero the positions of the run that fall between two image rows. */
static void zero_row_gaps(const conv_geom *g, const tap_window *t, float *row)
{
    int64_t W = g->W;
    for (int64_t oh = t->oh0; oh + 1 < t->oh1; oh++)
        for (int64_t q = oh * W + t->ow1; q < (oh + 1) * W + t->ow0; q++)
            row[q] = 0.0f;
}

/* One col row (P values) of tap t from one input plane. */
static void im2col_row(const conv_geom *g, const tap_window *t, const float *restrict plane,
                       float *restrict row)
{
    int64_t OW = g->OW, a, b;
    if (is_flat(g)) {
        if (!flat_run(g, t, &a, &b)) {
            memset(row, 0, (size_t)g->P * sizeof(float));
            return;
        }
        memset(row, 0, (size_t)a * sizeof(float));
        memcpy(row + a, plane + a + t->hoff * g->W + t->woff, (size_t)(b - a) * sizeof(float));
        memset(row + b, 0, (size_t)(g->P - b) * sizeof(float));
        zero_row_gaps(g, t, row);
        return;
    }
    memset(row, 0, (size_t)(t->oh0 * OW) * sizeof(float));
    memset(row + t->oh1 * OW, 0, (size_t)((g->OH - t->oh1) * OW) * sizeof(float));
    for (int64_t oh = t->oh0; oh < t->oh1; oh++) {
        float *dst = row + oh * OW;
        const float *src = plane + (oh * g->sh + t->hoff) * g->W + t->woff;
        fill(t->ow0, dst, 0.0f);
        if (g->sw == 1)
            copy(t->ow1 - t->ow0, src + t->ow0, dst + t->ow0);
        else
            for (int64_t ow = t->ow0; ow < t->ow1; ow++)
                dst[ow] = src[ow * g->sw];
        fill(OW - t->ow1, dst + t->ow1, 0.0f);
    }
}

/* plane += the adjoint of im2col_row applied to row (row is scratch: the
 * flat path zeroes its padding positions, then adds it in one run). */
static void col2im_row(const conv_geom *g, const tap_window *t, float *restrict row,
                       float *restrict plane)
{
    int64_t a, b;
    if (is_flat(g)) {
        if (flat_run(g, t, &a, &b)) {
            zero_row_gaps(g, t, row);
            add_to(b - a, row + a, plane + a + t->hoff * g->W + t->woff);
        }
        return;
    }
    for (int64_t oh = t->oh0; oh < t->oh1; oh++) {
        const float *src = row + oh * g->OW;
        float *dst = plane + (oh * g->sh + t->hoff) * g->W + t->woff;
        if (g->sw == 1)
            add_to(t->ow1 - t->ow0, src + t->ow0, dst + t->ow0);
        else
            for (int64_t ow = t->ow0; ow < t->ow1; ow++)
                dst[ow * g->sw] += src[ow];
    }
}

/* One sample's col (K x P) from its Cg planes at x. */
static void im2col(const conv_geom *g, const float *x, float *col)
{
    tap_window t;
    for (int64_t ki = 0; ki < g->kh; ki++)
        for (int64_t kj = 0; kj < g->kw; kj++) {
            tap_of(g, ki, kj, &t);
            for (int64_t c = 0; c < g->Cg; c++)
                im2col_row(g, &t, x + c * g->H * g->W, col + ((c * g->kh + ki) * g->kw + kj) * g->P);
        }
}

/* dx (one sample's Cg planes) += the adjoint of im2col applied to dcol
 * (K x P; clobbered). */
static void col2im(const conv_geom *g, float *dcol, float *dx)
{
    tap_window t;
    for (int64_t ki = 0; ki < g->kh; ki++)
        for (int64_t kj = 0; kj < g->kw; kj++) {
            tap_of(g, ki, kj, &t);
            for (int64_t c = 0; c < g->Cg; c++)
                col2im_row(g, &t, dcol + ((c * g->kh + ki) * g->kw + kj) * g->P, dx + c * g->H * g->W);
        }
}

/* ---- depthwise: direct loops over (kernel tap, output row) ---- */

/* The callback-free shape of all three depthwise loops: for every tap of
 * the kernel and every output row that reads inside the input, a run of
 * output columns [ow0, ow1) meets input columns ow*sw + woff. */
#define DW_FOR_EACH_RUN(g, ...)                                                    \
    for (int64_t ki = 0; ki < (g)->kh; ki++)                                       \
        for (int64_t kj = 0; kj < (g)->kw; kj++) {                                 \
            int64_t hoff = ki * (g)->dh - (g)->ph, woff = kj * (g)->dw - (g)->pw;  \
            int64_t oh0, oh1, ow0, ow1;                                            \
            valid_range(hoff, (g)->sh, (g)->H, (g)->OH, &oh0, &oh1);               \
            valid_range(woff, (g)->sw, (g)->W, (g)->OW, &ow0, &ow1);               \
            int64_t tap = ki * (g)->kw + kj;                                       \
            for (int64_t oh = oh0; oh < oh1; oh++) {                               \
                int64_t xrow = (oh * (g)->sh + hoff) * (g)->W + woff, yrow = oh * (g)->OW; \
                __VA_ARGS__                                                        \
            }                                                                      \
        }

/* y plane (already holding the bias) += w (kh x kw) correlated with x plane. */
static void dw_plane_forward(const conv_geom *g, const float *restrict x, const float *w,
                             float *restrict y)
{
    int64_t sw = g->sw;
    DW_FOR_EACH_RUN(g, {
        float wv = w[tap];
        const float *xr = x + xrow;
        float *yr = y + yrow;
        if (sw == 1)
            axpy(ow1 - ow0, wv, xr + ow0, yr + ow0);
        else
            for (int64_t ow = ow0; ow < ow1; ow++)
                yr[ow] += wv * xr[ow * sw];
    })
}

/* dx plane += the adjoint: each tap scatters w[tap] * gy back. */
static void dw_plane_dx(const conv_geom *g, const float *restrict gy, const float *w,
                        float *restrict dx)
{
    int64_t sw = g->sw;
    DW_FOR_EACH_RUN(g, {
        float wv = w[tap];
        const float *gr = gy + yrow;
        float *xr = dx + xrow;
        if (sw == 1)
            axpy(ow1 - ow0, wv, gr + ow0, xr + ow0);
        else
            for (int64_t ow = ow0; ow < ow1; ow++)
                xr[ow * sw] += wv * gr[ow];
    })
}

/* For each tap, acc[tap] (a row of OW partial sums) += gy plane times the
 * x values that tap read; summed once per channel, not once per row. */
static void dw_plane_dw(const conv_geom *g, const float *restrict gy, const float *restrict x,
                        float *restrict acc)
{
    int64_t sw = g->sw;
    DW_FOR_EACH_RUN(g, {
        mul_acc(ow1 - ow0, gy + yrow + ow0, x + xrow + ow0 * sw, sw, acc + tap * g->OW + ow0);
    })
}

/* ---- forward ---- */

static void forward_depthwise(const conv_geom *g, const float *x, const float *w,
                              const float *b, int64_t bs, float *y)
{
    int64_t m = g->Og, HW = g->H * g->W, kk = g->kh * g->kw;
    for (int64_t n = 0; n < g->N; n++)
        for (int64_t o = 0; o < g->O; o++) {
            float *yo = y + (n * g->O + o) * g->P;
            fill(g->P, yo, b ? b[o * bs] : 0.0f);
            dw_plane_forward(g, x + (n * g->C + o / m) * HW, w + o * kk, yo);
        }
}

/* The scratch of forward_gemm in floats: one sample's col (K x P). */
static size_t forward_scratch(const conv_geom *g)
{
    return is_pointwise(g) ? 0 : (size_t)(g->K * g->P);
}

/* y = conv(x, w) + b, one product per sample and group:
 *   y_g = w_g · col, into y seeded with the bias (beta = 1).
 * Chunks of several samples side by side in one product were tried: the
 * larger column buffer falls out of cache and the extra copies cost more
 * than the product gains, even for 7x7 outputs (measured on 1 thread). */
static void forward_gemm(const conv_geom *g, const float *x, const float *w, const float *b,
                         int64_t bs, float *y, float *col, int64_t n0, int64_t n1)
{
    int64_t HW = g->H * g->W, K = g->K, P = g->P, Og = g->Og;
    bool direct = is_pointwise(g);
    for (int64_t n = n0; n < n1; n++) {
        float *yn = y + n * g->O * P;
        for (int64_t o = 0; b && o < g->O; o++)
            fill(P, yn + o * P, b[o * bs]);
        for (int64_t grp = 0; grp < g->groups; grp++) {
            const float *xg = x + (n * g->C + grp * g->Cg) * HW;
            if (!direct)
                im2col(g, xg, col);
            ff_sgemm(false, false, Og, P, K, 1.0f, w + grp * Og * K, K, direct ? xg : col, P,
                     b ? 1.0f : 0.0f, yn + grp * Og * P, P);
        }
    }
}

/* ---- the direct kernel (conv_direct.h) ---- */

static ff_conv_algo conv_algo = FF_CONV_AUTO;

void ff_conv_set_algo(ff_conv_algo a) { conv_algo = a; }
ff_conv_algo ff_conv_get_algo(void) { return conv_algo; }

static const ff_cd_kernel *algo_kernel(void)
{
    switch (conv_algo) {
    case FF_CONV_IM2COL: return NULL;
    case FF_CONV_DIRECT_AVX2: return ff_cd_select(FF_CD_AVX2);
    case FF_CONV_DIRECT_PORTABLE: return ff_cd_select(FF_CD_PORTABLE);
    case FF_CONV_AUTO: {
        /* the portable kernel was measured slower than im2col + sgemm */
        const ff_cd_kernel *k = ff_cd_select(FF_CD_AUTO);
        return k == &ff_cd_portable ? NULL : k;
    }
    default: return ff_cd_select(FF_CD_AUTO);
    }
}

const char *ff_conv_kernel_name(void)
{
    const ff_cd_kernel *k = algo_kernel();
    return k ? k->name : "im2col";
}

/* The direct kernel for g, or NULL for im2col + sgemm. Under FF_CONV_AUTO a
 * 1x1 kernel stays with sgemm, which reads the input in place. */
static const ff_cd_kernel *direct_kernel(const conv_geom *g)
{
    if (g->sh != 1 || g->sw != 1 || g->dh != 1 || g->dw != 1 || g->groups != 1)
        return NULL;
    if (conv_algo == FF_CONV_AUTO && g->kh * g->kw == 1)
        return NULL;
    return algo_kernel();
}

/* A convolution's direct plan: the kernel (NULL: im2col + sgemm), its
 * geometry and packed weights and bias (set by direct_pack). */
typedef struct {
    const ff_cd_kernel *k;
    ff_cd_geom cg;
    float *wpack, *bpack;
} direct_plan;

static void direct_plan_of(const conv_geom *g, direct_plan *d)
{
    memset(d, 0, sizeof *d);
    d->k = direct_kernel(g);
    if (!d->k)
        return;
    d->cg = (ff_cd_geom){.C = g->C, .H = g->H, .W = g->W, .O = g->O, .kh = g->kh, .kw = g->kw,
                         .ph = g->ph, .pw = g->pw, .OH = g->OH, .OW = g->OW};
    ff_cd_plan(&d->cg, d->k);
}

/* Floats of scratch the plan needs once (packed weights and bias) */
static size_t direct_shared(const direct_plan *d)
{
    return d->k ? ff_cd_wpack_floats(&d->cg, d->k) + ff_cd_bpack_floats(&d->cg, d->k) : 0;
}

static void direct_pack(direct_plan *d, float *at, const float *w, const float *b, int64_t bs)
{
    d->wpack = at;
    d->bpack = at + ff_cd_wpack_floats(&d->cg, d->k);
    ff_cd_pack(&d->cg, d->k, w, b, bs, d->wpack, d->bpack);
}

/* Per-thread scratch of a forward pass: the padded input or one col. */
static size_t forward_scratch_of(const conv_geom *g, const direct_plan *d)
{
    return d->k ? ff_cd_xpad_floats(&d->cg) : forward_scratch(g);
}

/* Samples [n0, n1) of the forward pass by the plan's kernel or by gemm. */
static void forward_any(const conv_geom *g, const direct_plan *d, const float *x, const float *w,
                        const float *b, int64_t bs, float *y, float *scratch, int64_t n0,
                        int64_t n1)
{
    if (!d->k) {
        forward_gemm(g, x, w, b, bs, y, scratch, n0, n1);
        return;
    }
    for (int64_t n = n0; n < n1; n++)
        d->k->sample(&d->cg, x + n * g->C * g->H * g->W, d->wpack, d->bpack, y + n * g->O * g->P,
                     scratch);
}

/* ---- samples over threads ----
 * With OpenBLAS on T > 1 threads, the small per-sample products split
 * poorly and im2col runs on one thread (measured: a 32->32 3x3 forward at
 * batch 128 ran only 1.4x faster on 2 threads than on 1). So the batch is
 * split instead (ff_par_run): T threads each run whole samples (im2col,
 * then a single-threaded product), OpenBLAS set to 1 thread meanwhile so
 * that its pool stays idle, and restored after. */

/* Threads for N samples: OpenBLAS's count, at most one per sample. */
static int conv_threads(int64_t N)
{
    return ff_par_threads(N, 0);
}

/* fn over nt contiguous, non-empty ranges of [0, N) (nt <= N). */
static void run_split(int nt, int64_t N, ff_range_fn fn, void *arg)
{
    int blas = ff_blas_threads();
    if (nt > 1)
        ff_blas_set_threads(1);
    ff_par_run(nt, N, fn, arg);
    if (nt > 1)
        ff_blas_set_threads(blas);
}

typedef struct {
    const conv_geom *g;
    const direct_plan *d;
    const float *x, *w, *b;
    int64_t bs;
    float *y, *buf;
    size_t per; /* floats of scratch per thread */
} fwd_job;

static void fwd_range(void *arg, int t, int64_t n0, int64_t n1)
{
    fwd_job *j = arg;
    forward_any(j->g, j->d, j->x, j->w, j->b, j->bs, j->y,
                j->buf ? j->buf + (size_t)t * j->per : NULL, n0, n1);
}

/* The forward pass over the batch on nt threads; buf holds nt scratches. */
static void forward_split(const conv_geom *g, const direct_plan *d, int nt, const float *x,
                          const float *w, const float *b, int64_t bs, float *y, float *buf)
{
    fwd_job j = {g, d, x, w, b, bs, y, buf, forward_scratch_of(g, d)};
    run_split(nt, g->N, fwd_range, &j);
}

ff_tensor *ff_fwd_conv2d(ff_ctx *ctx, ff_tensor *const *in)
{
    ff_tensor *x = in[0], *w = in[1], *b = in[2];
    if (check_params(&ctx->p) || check_shapes(x, w, b, ctx->p.i[6]))
        return NULL;
    conv_geom g;
    geometry(x->shape, w->shape, &ctx->p, &g);
    if (check_geometry(&g, x))
        return NULL;
    int64_t yshape[4] = {g.N, g.O, g.OH, g.OW};
    ff_tensor *xc = ff_tensor_contiguous(x), *wc = ff_tensor_contiguous(w);
    ff_tensor *y = xc && wc ? ff_tensor_empty(yshape, 4) : NULL;
    bool gemm = y && ff_tensor_numel(y) > 0 && !is_depthwise(&g);
    int nt = gemm ? conv_threads(g.N) : 1;
    direct_plan d;
    direct_plan_of(&g, &d);
    size_t shared = gemm ? direct_shared(&d) : 0;
    size_t bytes = gemm ? (forward_scratch_of(&g, &d) * (size_t)nt + shared) * sizeof(float) : 0;
    float *buf = bytes ? ff_alloc(bytes) : NULL; /* one scratch per call */
    if (bytes && !buf) {
        ff_tensor_release(y);
        y = NULL;
    }
    if (y && ff_tensor_numel(y) > 0) {
        const float *bd = b ? ff_tensor_data(b) : NULL;
        int64_t bs = b ? b->stride[0] : 0;
        if (gemm && d.k)
            direct_pack(&d, buf + (bytes / sizeof(float) - shared), ff_tensor_data(wc), bd, bs);
        if (gemm)
            forward_split(&g, &d, nt, ff_tensor_data(xc), ff_tensor_data(wc), bd, bs,
                          ff_tensor_data(y), buf);
        else
            forward_depthwise(&g, ff_tensor_data(xc), ff_tensor_data(wc), bd, bs, ff_tensor_data(y));
    }
    ff_free(buf, bytes);
    if (y) {
        ff_ctx_save(ctx, ctx->needs_grad[1] ? xc : NULL); /* dw reads x */
        ff_ctx_save(ctx, ctx->needs_grad[0] ? wc : NULL); /* dx reads w */
    }
    ff_tensor_release(xc), ff_tensor_release(wc);
    return y;
}

/* ---- backward ---- */

/* db[o] = the sum of gy over the batch and the output pixels, walked in
 * memory order (channel-outer strides across samples and measured slower);
 * acc holds O doubles. */
static void bias_grad(const conv_geom *g, const float *gy, float *db, double *acc)
{
    memset(acc, 0, (size_t)g->O * sizeof(double));
    for (int64_t n = 0; n < g->N; n++)
        for (int64_t o = 0; o < g->O; o++)
            acc[o] += ff_kernel_sum(gy + (n * g->O + o) * g->P, g->P);
    for (int64_t o = 0; o < g->O; o++)
        db[o] = (float)acc[o];
}

/* dx and dw of a depthwise convolution (either may be NULL). */
static ff_status backward_depthwise(const conv_geom *g, const float *gy, const float *x,
                                    const float *w, float *dx, float *dw)
{
    int64_t m = g->Og, HW = g->H * g->W, kk = g->kh * g->kw;
    size_t acc_bytes = dw ? (size_t)(kk * g->OW) * sizeof(float) : 0;
    float *acc = dw ? ff_alloc(acc_bytes) : NULL;
    if (dw && !acc)
        return ff_last_status();
    if (dx)
        memset(dx, 0, (size_t)(g->N * g->C * HW) * sizeof(float));
    for (int64_t o = 0; o < g->O; o++) { /* channel outer: dw[o] from one acc */
        if (dw)
            memset(acc, 0, acc_bytes);
        for (int64_t n = 0; n < g->N; n++) {
            const float *go = gy + (n * g->O + o) * g->P;
            int64_t plane = (n * g->C + o / m) * HW;
            if (dx)
                dw_plane_dx(g, go, w + o * kk, dx + plane);
            if (dw)
                dw_plane_dw(g, go, x + plane, acc);
        }
        for (int64_t tap = 0; dw && tap < kk; tap++)
            dw[o * kk + tap] = (float)ff_kernel_sum(acc + tap * g->OW, g->OW);
    }
    ff_free(acc, acc_bytes);
    return FF_OK;
}

/* ---- dx of a stride-1 convolution, as a convolution ----
 * With stride 1, x[c, i, j] meets gy[o, i + ph - u·dh, j + pw - v·dw]
 * through w[o, c, u, v], so
 *   dx = conv2d(gy, w̃) with w̃[c, o, u, v] = w[o, c, kh-1-u, kw-1-v]
 * (per group), padding dh·(kh-1) - ph (and the same along w), the same
 * dilation and groups, stride 1. That runs the forward path (im2col of gy,
 * one sgemm per sample writing dx) instead of dcol = wᵀ·gy plus col2im,
 * which moves about twice the memory: OpenBLAS first zeroes the K x P
 * dcol (beta = 0), then col2im adds it into dx tap by tap (measured: the
 * backward 17-23% faster). */

static bool dx_as_conv(const conv_geom *g)
{
    return g->sh == 1 && g->sw == 1 && g->ph <= g->dh * (g->kh - 1) &&
           g->pw <= g->dw * (g->kw - 1);
}

/* The geometry of conv2d(gy, w̃): gy's channels O in, C out, output H x W. */
static void dx_geometry(const conv_geom *g, conv_geom *t)
{
    *t = *g;
    t->C = g->O, t->O = g->C, t->H = g->OH, t->W = g->OW;
    t->ph = g->dh * (g->kh - 1) - g->ph, t->pw = g->dw * (g->kw - 1) - g->pw;
    t->OH = g->H, t->OW = g->W;
    t->Cg = g->Og, t->Og = g->Cg;
    t->K = t->Cg * g->kh * g->kw, t->P = g->H * g->W;
}

/* w̃ (C, Og, kh, kw) from w (O, Cg, kh, kw): per group, in and out channels
 * swapped and the kernel turned by 180 degrees. */
static void flip_weight(const conv_geom *g, const float *w, float *wt)
{
    int64_t kk = g->kh * g->kw;
    for (int64_t grp = 0; grp < g->groups; grp++)
        for (int64_t o = 0; o < g->Og; o++)
            for (int64_t c = 0; c < g->Cg; c++) {
                const float *src = w + ((grp * g->Og + o) * g->Cg + c) * kk;
                float *dst = wt + ((grp * g->Cg + c) * g->Og + o) * kk;
                for (int64_t t = 0; t < kk; t++)
                    dst[t] = src[kk - 1 - t];
            }
}

/* ---- backward through the products ---- */

/* The scratch of backward_gemm, in floats: one sample's col for dw by
 * sgemm and dcol for dx by col2im (K x P each), or the padded x and gy of
 * the direct dw; for dx as a convolution, w̃ (and its packed form) and the
 * forward pass's scratch for it. */
typedef struct {
    size_t col, dcol, wt, fwd, dwd;
} bwd_scratch;

static void bwd_scratch_plan(const conv_geom *g, const direct_plan *dd, const conv_geom *t,
                             const direct_plan *dt, bool dx, bool dw, bool by_conv, bwd_scratch *s)
{
    size_t kp = is_pointwise(g) ? 0 : (size_t)(g->K * g->P);
    s->col = dw && !dd->k ? kp : 0;
    s->dwd = dw && dd->k ? dd->k->dw_scratch(&dd->cg) : 0;
    s->dcol = dx && !by_conv ? kp : 0;
    s->wt = by_conv ? (size_t)(g->O * g->K) + direct_shared(dt) : 0;
    s->fwd = by_conv ? forward_scratch_of(t, dt) : 0;
}

/* dw (may be NULL) and dx by col2im (may be NULL), one sample at a time:
 *   dw_g += gy_g · colᵀ (beta = 1 after the first sample),
 *   dcol = w_gᵀ · gy_g, then col2im adds dcol onto dx. */
static void backward_samples(const conv_geom *g, const float *gy, const float *x,
                             const float *w, float *dx, float *dw, float *col, float *dcol,
                             int64_t n0, int64_t n1)
{
    int64_t HW = g->H * g->W, K = g->K, P = g->P, Og = g->Og;
    bool direct = is_pointwise(g);
    for (int64_t n = n0; n < n1; n++) {
        if (dx && !direct) /* col2im accumulates */
            memset(dx + n * g->C * HW, 0, (size_t)(g->C * HW) * sizeof(float));
        for (int64_t grp = 0; grp < g->groups; grp++) {
            const float *gyg = gy + (n * g->O + grp * Og) * P;
            int64_t xoff = (n * g->C + grp * g->Cg) * HW;
            if (dw) {
                if (!direct)
                    im2col(g, x + xoff, col);
                ff_sgemm(false, true, Og, K, P, 1.0f, gyg, P, direct ? x + xoff : col, P,
                         n == n0 ? 0.0f : 1.0f, dw + grp * Og * K, K);
            }
            if (dx) {
                ff_sgemm(true, false, K, P, Og, 1.0f, w + grp * Og * K, K, gyg, P, 0.0f,
                         direct ? dx + xoff : dcol, P);
                if (!direct)
                    col2im(g, dcol, dx + xoff);
            }
        }
    }
}

typedef struct {
    const conv_geom *g, *t;
    const direct_plan *dt; /* dx as a convolution: its kernel */
    const direct_plan *dd; /* dw by the direct kernel (dd->k) or sgemm */
    const float *gy, *x, *w, *wt;
    float *dx, *dw, *buf;
    bwd_scratch s;
    size_t per, dwn; /* floats of scratch per thread; of dw */
    bool by_conv;
} bwd_job;

/* One thread's share: dw over its samples (thread 0 into dw, the others
 * into their scratch, summed after the join), dx by col2im or as a
 * convolution. */
static void bwd_range(void *arg, int t, int64_t n0, int64_t n1)
{
    bwd_job *j = arg;
    const conv_geom *g = j->g;
    float *col = j->buf + (size_t)t * j->per, *dcol = col + j->s.col, *fwd = dcol + j->s.dcol;
    float *dwd = fwd + j->s.fwd;
    float *dw = j->dw && t > 0 ? dwd + j->s.dwd : j->dw;
    bool gemm_dw = j->dw && !j->dd->k;
    if (gemm_dw || (j->dx && !j->by_conv))
        backward_samples(g, j->gy, j->x, j->w, j->by_conv ? NULL : j->dx, gemm_dw ? dw : NULL,
                         col, dcol, n0, n1);
    if (j->dw && j->dd->k) {
        const direct_plan *dd = j->dd;
        dd->k->dw_range(&dd->cg, j->x, j->gy, n0, n1, dw, dwd);
    }
    if (j->by_conv)
        forward_any(j->t, j->dt, j->gy, j->wt, NULL, 0, j->dx, fwd, n0, n1);
}

/* dx and dw (either may be NULL) of a convolution done with products, the
 * batch split over threads; one scratch allocation for all of it. */
static ff_status backward_gemm(const conv_geom *g, const float *gy, const float *x,
                               const float *w, float *dx, float *dw)
{
    conv_geom t;
    direct_plan dt = {0}, dd;
    bool by_conv = dx && dx_as_conv(g);
    if (by_conv) {
        dx_geometry(g, &t);
        direct_plan_of(&t, &dt);
    }
    direct_plan_of(g, &dd);
    if (g->kh != 3 || g->kw != 3) /* the direct dw kernel is for 3x3 only */
        dd.k = NULL;
    bwd_job j = {.g = g, .t = &t, .dt = &dt, .dd = &dd, .gy = gy, .x = x, .w = w, .dx = dx,
                 .dw = dw, .by_conv = by_conv};
    bwd_scratch_plan(g, &dd, &t, &dt, dx, dw, by_conv, &j.s);
    int nt = conv_threads(g->N);
    j.dwn = dw ? (size_t)(g->O * g->K) : 0;
    j.per = j.s.col + j.s.dcol + j.s.fwd + j.s.dwd + j.dwn;
    size_t bytes = (j.s.wt + j.per * (size_t)nt) * sizeof(float);
    float *buf = ff_alloc(bytes);
    if (!buf)
        return ff_last_status();
    float *wt = buf + j.per * (size_t)nt;
    if (by_conv) {
        flip_weight(g, w, wt);
        j.wt = wt;
        if (dt.k)
            direct_pack(&dt, wt + g->O * g->K, wt, NULL, 0);
    }
    j.buf = buf;
    run_split(nt, g->N, bwd_range, &j);
    for (int k = 1; dw && k < nt; k++) /* the other threads' partial dw */
        add_to((int64_t)j.dwn, buf + (size_t)k * j.per + j.s.col + j.s.dcol + j.s.fwd + j.s.dwd,
               dw);
    ff_free(buf, bytes);
    return FF_OK;
}

static ff_tensor *empty_of(const ff_shape *s)
{
    return ff_tensor_empty(s->size, s->ndim);
}

ff_status ff_bwd_conv2d(ff_ctx *ctx, const ff_tensor *gout, ff_tensor **gin)
{
    ff_tensor *x = NULL, *w = NULL;
    ff_status st;
    int k = 0; /* saved in forward's order, skipping what was not needed */
    if (ctx->needs_grad[1] && (st = ff_ctx_saved(ctx, k++, &x)) != FF_OK)
        return st;
    if (ctx->needs_grad[0] && (st = ff_ctx_saved(ctx, k++, &w)) != FF_OK)
        return st;
    conv_geom g;
    geometry(ctx->in_shape[0].size, ctx->in_shape[1].size, &ctx->p, &g);
    ff_tensor *gc = ff_tensor_contiguous((ff_tensor *)gout);
    if (!gc)
        return ff_last_status();
    for (int i = 0; i < 3; i++)
        if (ctx->needs_grad[i] && !(gin[i] = empty_of(&ctx->in_shape[i]))) {
            ff_tensor_release(gc);
            return ff_last_status();
        }
    const float *gy = ff_tensor_data(gc);
    if (gin[2]) {
        size_t acc_bytes = (size_t)g.O * sizeof(double);
        double *acc = ff_alloc(acc_bytes);
        if (!acc) {
            ff_tensor_release(gc);
            return ff_last_status();
        }
        bias_grad(&g, gy, ff_tensor_data(gin[2]), acc);
        ff_free(acc, acc_bytes);
    }
    float *dx = gin[0] ? ff_tensor_data(gin[0]) : NULL;
    float *dw = gin[1] ? ff_tensor_data(gin[1]) : NULL;
    const float *xd = x ? ff_tensor_data(x) : NULL, *wd = w ? ff_tensor_data(w) : NULL;
    st = FF_OK;
    if ((dx || dw) && g.N == 0) { /* no samples: the sums are empty */
        if (dw)
            memset(dw, 0, (size_t)ff_tensor_numel(gin[1]) * sizeof(float));
    } else if (is_depthwise(&g)) {
        st = backward_depthwise(&g, gy, xd, wd, dx, dw);
    } else if (dx || dw) {
        st = backward_gemm(&g, gy, xd, wd, dx, dw);
    }
    ff_tensor_release(gc);
    return st;
}

/* ---- unfold (im2col as a function; see ff_ops.h) ----
 * The splitting baselines of growth need every patch a convolution reads;
 * this is forward_gemm's own im2col, one sample at a time, written straight
 * into the (N, K, P) result. Not recorded for autograd. */
ff_tensor *ff_unfold(const ff_tensor *x, const int64_t kernel[2], const int64_t stride[2],
                     const int64_t padding[2], const int64_t dilation[2])
{
    char sx[FF_SHAPE_STRLEN];
    ff_shape_str(x->shape, x->ndim, sx, sizeof sx);
    if (x->ndim != 4)
        return ff_error(FF_ERR_SHAPE, "unfold: input has shape %s, expected 4 dims (N x C x H x W)", sx),
               NULL;
    const char *bad = kernel[0] < 1 || kernel[1] < 1 ? "kernel"
                      : stride[0] < 1 || stride[1] < 1 ? "stride"
                      : dilation[0] < 1 || dilation[1] < 1 ? "dilation" : NULL;
    if (bad) {
        const int64_t *v = bad[0] == 'k' ? kernel : bad[0] == 's' ? stride : dilation;
        return ff_error(FF_ERR_ARG, "unfold: %s must be >= 1, got %lldx%lld", bad, (long long)v[0],
                        (long long)v[1]),
               NULL;
    }
    if (padding[0] < 0 || padding[1] < 0)
        return ff_error(FF_ERR_ARG, "unfold: padding must be >= 0, got %lldx%lld",
                        (long long)padding[0], (long long)padding[1]),
               NULL;
    int64_t K;
    if (__builtin_mul_overflow(x->shape[1], kernel[0], &K) || __builtin_mul_overflow(K, kernel[1], &K))
        return ff_error(FF_ERR_MEM, "unfold: %lld channels x kernel %lldx%lld overflows",
                        (long long)x->shape[1], (long long)kernel[0], (long long)kernel[1]),
               NULL;
    int64_t OH = out_size(x->shape[2], kernel[0], stride[0], padding[0], dilation[0]);
    int64_t OW = out_size(x->shape[3], kernel[1], stride[1], padding[1], dilation[1]);
    if (OH < 1 || OW < 1)
        return ff_error(FF_ERR_SHAPE,
                        "unfold: output size is %lldx%lld (<= 0) for input %s with kernel %lldx%lld, "
                        "padding %lldx%lld, dilation %lldx%lld",
                        (long long)OH, (long long)OW, sx, (long long)kernel[0], (long long)kernel[1],
                        (long long)padding[0], (long long)padding[1], (long long)dilation[0],
                        (long long)dilation[1]),
               NULL;
    int64_t shape[3] = {x->shape[0], K, 0};
    if (__builtin_mul_overflow(OH, OW, &shape[2]) || ff_shape_check("unfold", shape, 3))
        return ff_error(FF_ERR_MEM, "unfold: the result for input %s is too large", sx), NULL;
    ff_params p = {.i = {stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1], 1}};
    int64_t ws[4] = {1, x->shape[1], kernel[0], kernel[1]};
    conv_geom g;
    geometry(x->shape, ws, &p, &g);
    ff_tensor *xc = ff_tensor_is_contiguous(x) ? NULL : ff_tensor_clone(x);
    ff_tensor *out = xc || ff_tensor_is_contiguous(x) ? ff_tensor_empty(shape, 3) : NULL;
    if (out) {
        const float *xd = ff_tensor_data(xc ? xc : x);
        for (int64_t n = 0; n < g.N; n++)
            im2col(&g, xd + n * g.C * g.H * g.W, ff_tensor_data(out) + n * g.K * g.P);
    }
    ff_tensor_release(xc);
    return out;
}
