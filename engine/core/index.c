/*
 * index.c: joining (cat, stack) and indexing along a dim (index_select,
 * index_add_, gather, scatter_, scatter_add_).
 *
 * The five indexing ops are one kernel. Each is a walk over a shape where
 * three operands move together: the dense side (the result, or the source),
 * the indexed tensor with its stride along `dim` set to 0, and the index.
 * At each element the index value picks the position along `dim`. For
 * gather and scatter the walk has the index's shape; index_select and
 * index_add_ are the same walk with the 1-D index laid along `dim` (stride 0
 * elsewhere). Building these operands as stack headers over the tensors'
 * storage lets ff_loop do the walking, merge dims and hand out long runs.
 *
 * Indices are checked before anything is written, so a failed in-place op
 * leaves its target untouched.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ff_ops.h"

/* ---- argument checks ---- */

static ff_status check_dim(const char *fn, const ff_tensor *t, int dim)
{
    if (dim >= 0 && dim < t->ndim)
        return FF_OK;
    return ff_error(FF_ERR_RANGE, "%s: dim %lld out of range for a tensor of rank %d", fn,
                    (long long)dim + 1, t->ndim);
}

/* Writing through a stride-0 dim would store several results in one place. */
static ff_status check_writable(const char *fn, const ff_tensor *t)
{
    if (ff_tensor_numel(t) == 0) /* an empty tensor's strides may be 0 */
        return FF_OK;
    for (int i = 0; i < t->ndim; i++)
        if (t->stride[i] == 0 && t->shape[i] > 1) {
            char s[FF_SHAPE_STRLEN];
            return ff_error(FF_ERR_ARG,
                            "%s: cannot write into a tensor of shape %s with expanded dim %d "
                            "(stride 0); clone() it first",
                            fn, ff_shape_str(t->shape, t->ndim, s, sizeof s), i + 1);
        }
    return FF_OK;
}

/* Shape s printed with "N" in place of dim (N: any size). */
static char *shape_str_free_dim(const int64_t *shape, int ndim, int dim, char *buf, size_t len)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < ndim && used < len; i++) {
        const char *sep = i ? "x" : "";
        if (i == dim)
            used += (size_t)snprintf(buf + used, len - used, "%sN", sep);
        else
            used += (size_t)snprintf(buf + used, len - used, "%s%lld", sep, (long long)shape[i]);
    }
    return buf;
}

typedef struct {
    int64_t size;   /* valid values are 0 .. size-1 */
    bool bad;
    float first_bad;
} index_scan;

static void scan_run(int64_t len, float **p, const int64_t *s, void *ctx)
{
    index_scan *sc = ctx;
    if (sc->bad)
        return;
    for (int64_t i = 0; i < len; i++) {
        float v = p[0][i * s[0]];
        if (!(v >= 0.0f && (double)v < (double)sc->size && v == floorf(v))) {
            sc->bad = true, sc->first_bad = v;
            return;
        }
    }
}

/* Every value of `index` must be an integer in 0 .. size-1 (size of `dim`). */
static ff_status check_indices(const char *fn, const ff_tensor *index, int dim, int64_t size)
{
    index_scan sc = {size, false, 0.0f};
    ff_tensor *ops[1] = {(ff_tensor *)index};
    ff_status st = ff_loop(1, ops, scan_run, &sc);
    if (st != FF_OK || !sc.bad)
        return st;
    float v = sc.first_bad;
    /* values are printed 1-based, as the user wrote them */
    if (isnan(v) || (isfinite(v) && v != floorf(v)))
        return ff_error(FF_ERR_ARG, "%s: index must be an integer, got %.9g", fn,
                        (double)v + 1.0);
    return ff_error(FF_ERR_RANGE, "%s: index %.9g out of range for dim %lld of size %lld", fn,
                    (double)v + 1.0, (long long)dim + 1, (long long)size);
}

/* ---- the indexing kernel ---- */

typedef enum { GS_READ, GS_WRITE, GS_ADD } gs_mode;

typedef struct {
    gs_mode mode;
    int64_t dim_stride; /* the indexed tensor's stride along dim */
} gs_ctx;

/* p[0] dense side, p[1] indexed tensor at position 0 along dim, p[2] index. */
static void gs_run(int64_t len, float **p, const int64_t *s, void *ctx)
{
    const gs_ctx *g = ctx;
    float *d = p[0], *x = p[1];
    const float *ix = p[2];
    if (s[2] == 0) { /* one index value for the whole run: a block copy or add */
        x += (int64_t)ix[0] * g->dim_stride;
        if (g->mode != GS_ADD && s[0] == 1 && s[1] == 1) {
            if (g->mode == GS_READ)
                memcpy(d, x, (size_t)len * sizeof(float));
            else
                memcpy(x, d, (size_t)len * sizeof(float));
            return;
        }
        for (int64_t i = 0; i < len; i++) {
            float *xi = x + i * s[1], *di = d + i * s[0];
            if (g->mode == GS_READ)
                *di = *xi;
            else if (g->mode == GS_WRITE)
                *xi = *di;
            else
                *xi += *di;
        }
        return;
    }
    for (int64_t i = 0; i < len; i++) {
        float *xi = x + i * s[1] + (int64_t)ix[i * s[2]] * g->dim_stride, *di = d + i * s[0];
        if (g->mode == GS_READ)
            *di = *xi;
        else if (g->mode == GS_WRITE)
            *xi = *di;
        else
            *xi += *di;
    }
}

/* A header over t's storage with the walk's shape and the given strides.
 * It lives on the caller's stack and takes no reference: ff_loop only reads
 * storage, offset, shape and strides. */
static ff_tensor walk_header(const ff_tensor *t, const int64_t *shape, const int64_t *stride,
                             int ndim)
{
    ff_tensor h = {.storage = t->storage, .offset = t->offset, .ndim = ndim, .refcount = 1};
    for (int i = 0; i < ndim; i++)
        h.shape[i] = shape[i], h.stride[i] = stride[i];
    return h;
}

/* Walk `shape` (x's rank): dense has that shape (strides dense->stride), x
 * is read or written at the index's position along dim, idx_stride gives the
 * index's strides over the walk. */
static ff_status gs_apply(gs_mode mode, const ff_tensor *dense, const ff_tensor *x, int dim,
                          const ff_tensor *index, const int64_t *idx_stride,
                          const int64_t *shape)
{
    int64_t xs[FF_MAX_DIMS];
    memcpy(xs, x->stride, sizeof xs);
    xs[dim] = 0;
    ff_tensor hd = walk_header(dense, shape, dense->stride, x->ndim);
    ff_tensor hx = walk_header(x, shape, xs, x->ndim);
    ff_tensor hi = walk_header(index, shape, idx_stride, x->ndim);
    ff_tensor *ops[3] = {&hd, &hx, &hi};
    gs_ctx g = {mode, x->stride[dim]};
    return ff_loop(3, ops, gs_run, &g);
}

/* Index strides for index_select / index_add_: the 1-D index along dim. */
static void along_dim_strides(const ff_tensor *index, int ndim, int dim, int64_t *stride)
{
    for (int i = 0; i < ndim; i++)
        stride[i] = 0;
    stride[dim] = index->stride[0];
}

/* The in-place ops read src and index while writing a: copy either when it
 * shares a's storage, so no write changes what is still to be read. */
static ff_status unalias(const ff_tensor *a, const ff_tensor *t, ff_tensor **hold)
{
    *hold = t->storage == a->storage ? ff_tensor_clone(t) : ff_tensor_retain((ff_tensor *)t);
    return *hold ? FF_OK : ff_last_status();
}

/* ---- index_select / index_add_ ---- */

static ff_status check_index_1d(const char *fn, const ff_tensor *a, int dim,
                                const ff_tensor *index)
{
    if (check_dim(fn, a, dim) != FF_OK)
        return ff_last_status();
    if (index->ndim != 1) {
        char s[FF_SHAPE_STRLEN];
        return ff_error(FF_ERR_SHAPE, "%s: index must be 1-D, got shape %s", fn,
                        ff_shape_str(index->shape, index->ndim, s, sizeof s));
    }
    return check_indices(fn, index, dim, a->shape[dim]);
}

ff_tensor *ff_index_select(const ff_tensor *a, int dim, const ff_tensor *index)
{
    if (check_index_1d("index_select", a, dim, index) != FF_OK)
        return NULL;
    int64_t shape[FF_MAX_DIMS], istride[FF_MAX_DIMS];
    memcpy(shape, a->shape, sizeof shape);
    shape[dim] = index->shape[0];
    ff_tensor *out = ff_tensor_empty(shape, a->ndim);
    if (!out)
        return NULL;
    if (dim == 0 && ff_tensor_is_contiguous(a) && ff_tensor_is_contiguous(index)) {
        /* Whole rows of a contiguous tensor: one memcpy each. This is every
         * mini-batch the DataLoader draws. */
        int64_t row = a->shape[0] ? ff_tensor_numel(a) / a->shape[0] : 0;
        const float *src = ff_tensor_data(a), *ix = ff_tensor_data(index);
        float *dst = ff_tensor_data(out);
        for (int64_t k = 0; k < index->shape[0]; k++)
            memcpy(dst + k * row, src + (int64_t)ix[k] * row, (size_t)row * sizeof(float));
        return out;
    }
    along_dim_strides(index, a->ndim, dim, istride);
    gs_apply(GS_READ, out, a, dim, index, istride, shape);
    return out;
}

ff_status ff_index_add_(ff_tensor *a, int dim, const ff_tensor *index, const ff_tensor *src)
{
    ff_tensor_bump_version(a); /* autograd checks saved tensors by it */
    if (check_index_1d("index_add_", a, dim, index) != FF_OK ||
        check_writable("index_add_", a) != FF_OK)
        return ff_last_status();
    int64_t shape[FF_MAX_DIMS], istride[FF_MAX_DIMS];
    memcpy(shape, a->shape, sizeof shape);
    shape[dim] = index->shape[0];
    if (src->ndim != a->ndim || memcmp(src->shape, shape, (size_t)a->ndim * sizeof *shape)) {
        char s1[FF_SHAPE_STRLEN], s2[FF_SHAPE_STRLEN], s3[FF_SHAPE_STRLEN];
        return ff_error(FF_ERR_SHAPE,
                        "index_add_: src has shape %s, expected %s (the tensor's shape %s "
                        "with dim %lld sized by the index)",
                        ff_shape_str(src->shape, src->ndim, s1, sizeof s1),
                        ff_shape_str(shape, a->ndim, s2, sizeof s2),
                        ff_shape_str(a->shape, a->ndim, s3, sizeof s3), (long long)dim + 1);
    }
    ff_tensor *s = NULL, *ix = NULL;
    ff_status st = unalias(a, src, &s);
    if (st == FF_OK)
        st = unalias(a, index, &ix);
    if (st == FF_OK) {
        along_dim_strides(ix, a->ndim, dim, istride);
        st = gs_apply(GS_ADD, s, a, dim, ix, istride, shape);
    }
    ff_tensor_release(s), ff_tensor_release(ix);
    return st;
}

/* ---- gather / scatter_ / scatter_add_ ---- */

/* index has a's rank; index sizes <= a's except along dim, and <= src's in
 * every dim (src NULL for gather). Then the index values. */
static ff_status check_gs(const char *fn, const ff_tensor *a, int dim, const ff_tensor *index,
                          const ff_tensor *src)
{
    if (check_dim(fn, a, dim) != FF_OK)
        return ff_last_status();
    bool ok = index->ndim == a->ndim && (!src || src->ndim == a->ndim);
    for (int i = 0; ok && i < a->ndim; i++)
        ok = (i == dim || index->shape[i] <= a->shape[i]) &&
             (!src || index->shape[i] <= src->shape[i]);
    if (!ok) {
        char si[FF_SHAPE_STRLEN], sa[FF_SHAPE_STRLEN], ss[FF_SHAPE_STRLEN] = "";
        if (src)
            ff_shape_str(src->shape, src->ndim, ss, sizeof ss);
        return ff_error(FF_ERR_SHAPE,
                        "%s: index has shape %s, expected the tensor's rank with sizes <= %s "
                        "except in dim %lld%s%s",
                        fn, ff_shape_str(index->shape, index->ndim, si, sizeof si),
                        ff_shape_str(a->shape, a->ndim, sa, sizeof sa), (long long)dim + 1,
                        src ? " and <= src's " : "", ss);
    }
    return check_indices(fn, index, dim, a->shape[dim]);
}

ff_tensor *ff_gather(const ff_tensor *a, int dim, const ff_tensor *index)
{
    if (check_gs("gather", a, dim, index, NULL) != FF_OK)
        return NULL;
    ff_tensor *out = ff_tensor_empty(index->shape, index->ndim);
    if (out)
        gs_apply(GS_READ, out, a, dim, index, index->stride, index->shape);
    return out;
}

static ff_status scatter(const char *fn, gs_mode mode, ff_tensor *a, int dim,
                         const ff_tensor *index, const ff_tensor *src)
{
    if (check_gs(fn, a, dim, index, src) != FF_OK || check_writable(fn, a) != FF_OK)
        return ff_last_status();
    ff_tensor *s = NULL, *ix = NULL;
    ff_status st = unalias(a, src, &s);
    if (st == FF_OK)
        st = unalias(a, index, &ix);
    if (st == FF_OK)
        st = gs_apply(mode, s, a, dim, ix, ix->stride, ix->shape);
    ff_tensor_release(s), ff_tensor_release(ix);
    return st;
}

ff_status ff_scatter_(ff_tensor *a, int dim, const ff_tensor *index, const ff_tensor *src)
{
    ff_tensor_bump_version(a); /* autograd checks saved tensors by it */
    return scatter("scatter_", GS_WRITE, a, dim, index, src);
}

ff_status ff_scatter_add_(ff_tensor *a, int dim, const ff_tensor *index, const ff_tensor *src)
{
    ff_tensor_bump_version(a); /* autograd checks saved tensors by it */
    return scatter("scatter_add_", GS_ADD, a, dim, index, src);
}

/* ---- cat / stack ---- */

/* Same rank as ts[0], same sizes except along dim. */
static ff_status check_cat(ff_tensor *const *ts, int n, int dim, int64_t *shape)
{
    if (n < 1)
        return ff_error(FF_ERR_ARG, "cat: expected at least one tensor, got %d", n);
    const ff_tensor *t0 = ts[0];
    if (check_dim("cat", t0, dim) != FF_OK)
        return ff_last_status();
    memcpy(shape, t0->shape, sizeof t0->shape);
    shape[dim] = 0;
    for (int k = 0; k < n; k++) {
        const ff_tensor *t = ts[k];
        bool ok = t->ndim == t0->ndim;
        for (int i = 0; ok && i < t0->ndim; i++)
            ok = i == dim || t->shape[i] == t0->shape[i];
        if (!ok) {
            char s[FF_SHAPE_STRLEN], e[FF_SHAPE_STRLEN];
            return ff_error(FF_ERR_SHAPE,
                            "cat: tensor #%d has shape %s, expected %s (sizes must match "
                            "except in dim %lld)",
                            k + 1, ff_shape_str(t->shape, t->ndim, s, sizeof s),
                            shape_str_free_dim(t0->shape, t0->ndim, dim, e, sizeof e), (long long)dim + 1);
        }
        shape[dim] += t->shape[dim];
    }
    return ff_shape_check("cat", shape, t0->ndim);
}

/* Contiguous input: `outer` blocks of `len` floats, each landing `row`
 * floats after the previous one in out. */
static void cat_blocks(float *dst, const float *src, int64_t outer, int64_t len, int64_t row)
{
    for (int64_t o = 0; o < outer; o++)
        memcpy(dst + o * row, src + o * len, (size_t)len * sizeof(float));
}

static ff_tensor *cat_into(ff_tensor *out, ff_tensor *const *ts, int n, int dim)
{
    int64_t outer = 1, inner = 1, at = 0;
    for (int i = 0; i < dim; i++)
        outer *= out->shape[i];
    for (int i = dim + 1; i < out->ndim; i++)
        inner *= out->shape[i];
    int64_t row = out->shape[dim] * inner;
    for (int k = 0; k < n; k++) {
        const ff_tensor *t = ts[k];
        int64_t len = t->shape[dim];
        if (ff_tensor_numel(t) == 0) {
            /* nothing to copy */
        } else if (ff_tensor_is_contiguous(t)) {
            cat_blocks(ff_tensor_data(out) + at * inner, ff_tensor_data(t), outer,
                       len * inner, row);
        } else {
            ff_tensor *part = ff_tensor_narrow(out, dim, at, len);
            ff_status st = part ? ff_tensor_copy_(part, t) : ff_last_status();
            ff_tensor_release(part);
            if (st != FF_OK) {
                ff_tensor_release(out);
                return NULL;
            }
        }
        at += len;
    }
    return out;
}

ff_tensor *ff_cat(ff_tensor *const *ts, int n, int dim)
{
    int64_t shape[FF_MAX_DIMS];
    if (check_cat(ts, n, dim, shape) != FF_OK)
        return NULL;
    ff_tensor *out = ff_tensor_empty(shape, ts[0]->ndim);
    return out ? cat_into(out, ts, n, dim) : NULL;
}

static ff_status check_stack(ff_tensor *const *ts, int n, int dim)
{
    if (n < 1)
        return ff_error(FF_ERR_ARG, "stack: expected at least one tensor, got %d", n);
    const ff_tensor *t0 = ts[0];
    if (dim < 0 || dim > t0->ndim || t0->ndim == FF_MAX_DIMS)
        return ff_error(FF_ERR_RANGE, "stack: dim %lld out of range for tensors of rank %d", (long long)dim + 1,
                        t0->ndim);
    for (int k = 1; k < n; k++)
        if (!ff_shape_equal(ts[k], t0)) {
            char s[FF_SHAPE_STRLEN], e[FF_SHAPE_STRLEN];
            return ff_error(FF_ERR_SHAPE,
                            "stack: tensor #%d has shape %s, expected %s (all tensors must have "
                            "the same shape)",
                            k + 1, ff_shape_str(ts[k]->shape, ts[k]->ndim, s, sizeof s),
                            ff_shape_str(t0->shape, t0->ndim, e, sizeof e));
        }
    return FF_OK;
}

/* Stacking is cat of the inputs with a size-1 dim inserted at dim. */
ff_tensor *ff_stack(ff_tensor *const *ts, int n, int dim)
{
    if (check_stack(ts, n, dim) != FF_OK)
        return NULL;
    ff_tensor **views = calloc((size_t)n, sizeof *views);
    if (!views)
        return ff_error(FF_ERR_MEM, "stack: out of memory for %d tensors", n), NULL;
    ff_tensor *out = NULL;
    int made = 0;
    while (made < n && (views[made] = ff_tensor_unsqueeze(ts[made], dim)))
        made++;
    if (made == n)
        out = ff_cat(views, n, dim);
    for (int k = 0; k < made; k++)
        ff_tensor_release(views[k]);
    free(views);
    return out;
}
