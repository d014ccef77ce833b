/*
 * tensor.c: tensor lifetime, shapes, views and the strided loop.
 *
 * A tensor is a window (offset, shape, strides) on a refcounted storage.
 * Views make new windows on the same storage; nothing here copies except
 * contiguous/clone/reshape of a non-contiguous tensor.
 */
#include <stdio.h>
#include <string.h>
#include "ff_tensor.h"

/* autograd.c: drops a tensor's gradient, history and hooks */
void ff_tensor_free_autograd(ff_tensor *t);

/* ---- storage ---- */

static ff_storage *storage_new(int64_t numel)
{
    ff_storage *s = ff_alloc(sizeof *s);
    if (!s)
        return NULL;
    s->data = ff_alloc((size_t)numel * sizeof(float));
    if (!s->data) {
        ff_free(s, sizeof *s);
        return NULL;
    }
    s->numel = numel;
    s->refcount = 1;
    s->version = 0; /* read by ff_ctx_saved: valgrind saw it uninitialised */
    return s;
}

static void storage_release(ff_storage *s)
{
    if (s && --s->refcount == 0) {
        ff_free(s->data, (size_t)s->numel * sizeof(float));
        ff_free(s, sizeof *s);
    }
}

/* ---- lifetime ---- */

/* A tensor header on an existing storage (retained). */
static ff_tensor *tensor_wrap(ff_storage *s, int64_t offset, const int64_t *shape,
                              const int64_t *stride, int ndim)
{
    ff_tensor *t = ff_alloc(sizeof *t);
    if (!t)
        return NULL;
    memset(t, 0, sizeof *t);
    t->storage = s;
    s->refcount++;
    t->offset = offset;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) {
        t->shape[i] = shape[i];
        t->stride[i] = stride[i];
    }
    t->refcount = 1;
    return t;
}

ff_tensor *ff_tensor_retain(ff_tensor *t)
{
    if (t)
        t->refcount++;
    return t;
}

void ff_tensor_release(ff_tensor *t)
{
    if (t && --t->refcount == 0) {
        if (t->grad || t->grad_fn || t->hooks)
            ff_tensor_free_autograd(t);
        storage_release(t->storage);
        ff_free(t, sizeof *t);
    }
}

/* ---- shape helpers ---- */

int64_t ff_tensor_numel(const ff_tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= t->shape[i];
    return n;
}

bool ff_tensor_is_contiguous(const ff_tensor *t)
{
    int64_t expected = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        if (t->shape[i] != 1 && t->stride[i] != expected)
            return false;
        expected *= t->shape[i];
    }
    return true;
}

char *ff_shape_str(const int64_t *shape, int ndim, char *buf, size_t len)
{
    if (ndim == 0) {
        snprintf(buf, len, "scalar");
        return buf;
    }
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < ndim && used < len; i++)
        used += (size_t)snprintf(buf + used, len - used, i ? "x%lld" : "%lld",
                                 (long long)shape[i]);
    return buf;
}

bool ff_shape_equal(const ff_tensor *a, const ff_tensor *b)
{
    if (a->ndim != b->ndim)
        return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i])
            return false;
    return true;
}

int64_t ff_tensor_offset_of(const ff_tensor *t, const int64_t *idx)
{
    int64_t off = 0;
    for (int i = 0; i < t->ndim; i++)
        off += idx[i] * t->stride[i];
    return off;
}

/* Largest element count we accept: its byte size must fit in a signed
 * 64-bit value with room to spare, so no size computation can overflow. */
#define FF_MAX_NUMEL ((int64_t)1 << 60)

ff_status ff_shape_check(const char *fn, const int64_t *shape, int ndim)
{
    if (ndim < 0 || ndim > FF_MAX_DIMS)
        return ff_error(FF_ERR_ARG, "%s: a tensor has at most %d dims, got %d", fn,
                        FF_MAX_DIMS, ndim);
    /* n is the product of the non-zero sizes: a zero size makes the tensor
     * empty but not its strides, which are products of the later sizes, so
     * 0 x 2^32 x 2^32 x 2^32 (from a fuzzed IDX header) would overflow them. */
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return ff_error(FF_ERR_ARG, "%s: size of dim %d is negative (%lld)", fn,
                            i + 1, (long long)shape[i]);
        if (shape[i] > 0 && n > FF_MAX_NUMEL / shape[i])
            return ff_error(FF_ERR_MEM, "%s: shape is too large to allocate", fn);
        if (shape[i] > 0)
            n *= shape[i];
    }
    return FF_OK;
}

static void contiguous_strides(const int64_t *shape, int ndim, int64_t *stride)
{
    int64_t s = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        stride[i] = s;
        s *= shape[i];
    }
}

/* ---- creation ---- */

ff_tensor *ff_tensor_empty(const int64_t *shape, int ndim)
{
    if (ff_shape_check("empty", shape, ndim) != FF_OK)
        return NULL;
    int64_t stride[FF_MAX_DIMS], numel = 1;
    for (int i = 0; i < ndim; i++)
        numel *= shape[i];
    contiguous_strides(shape, ndim, stride);
    ff_storage *s = storage_new(numel);
    if (!s) {
        char buf[FF_SHAPE_STRLEN];
        ff_error(FF_ERR_MEM, "out of memory allocating a tensor of shape %s (%lld bytes)",
                 ff_shape_str(shape, ndim, buf, sizeof buf),
                 (long long)(numel * (int64_t)sizeof(float)));
        return NULL;
    }
    ff_tensor *t = tensor_wrap(s, 0, shape, stride, ndim);
    storage_release(s); /* the tensor holds the only reference */
    return t;
}


/* ---- views ---- */

/* i + 1 for a 1-based message, saturating: callers may pass INT64_MAX. */
static long long plus1(int64_t i) { return i == INT64_MAX ? (long long)i : (long long)i + 1; }

static ff_status check_dim(const char *fn, const ff_tensor *t, int dim)
{
    if (dim < 0 || dim >= t->ndim)
        return ff_error(FF_ERR_RANGE, "%s: dim %lld out of range for a tensor of rank %d",
                        fn, (long long)dim + 1, t->ndim);
    return FF_OK;
}

static ff_tensor *view_of(ff_tensor *t, int64_t offset, const int64_t *shape,
                          const int64_t *stride, int ndim)
{
    return tensor_wrap(t->storage, offset, shape, stride, ndim);
}

ff_tensor *ff_tensor_alias(ff_tensor *t)
{
    return view_of(t, t->offset, t->shape, t->stride, t->ndim);
}

ff_tensor *ff_tensor_narrow(ff_tensor *t, int dim, int64_t start, int64_t length)
{
    if (check_dim("narrow", t, dim) != FF_OK)
        return NULL;
    if (start < 0 || length < 0 || length > t->shape[dim] - start) {
        char buf[FF_SHAPE_STRLEN];
        ff_error(FF_ERR_RANGE,
                 "narrow: %lld elements from %lld are out of range for dim %lld of a tensor of shape %s",
                 (long long)length, plus1(start), (long long)dim + 1,
                 ff_shape_str(t->shape, t->ndim, buf, sizeof buf));
        return NULL;
    }
    int64_t shape[FF_MAX_DIMS];
    memcpy(shape, t->shape, sizeof shape);
    shape[dim] = length;
    return view_of(t, t->offset + start * t->stride[dim], shape, t->stride, t->ndim);
}

ff_tensor *ff_tensor_select(ff_tensor *t, int dim, int64_t index)
{
    if (check_dim("select", t, dim) != FF_OK)
        return NULL;
    if (index < 0 || index >= t->shape[dim]) {
        char buf[FF_SHAPE_STRLEN];
        ff_error(FF_ERR_RANGE, "select: index %lld out of range for dim %lld of a tensor of shape %s",
                 plus1(index), (long long)dim + 1,
                 ff_shape_str(t->shape, t->ndim, buf, sizeof buf));
        return NULL;
    }
    int64_t shape[FF_MAX_DIMS], stride[FF_MAX_DIMS];
    int k = 0;
    for (int i = 0; i < t->ndim; i++) {
        if (i == dim)
            continue;
        shape[k] = t->shape[i];
        stride[k++] = t->stride[i];
    }
    return view_of(t, t->offset + index * t->stride[dim], shape, stride, t->ndim - 1);
}

ff_tensor *ff_tensor_transpose(ff_tensor *t, int dim0, int dim1)
{
    if (check_dim("transpose", t, dim0) != FF_OK || check_dim("transpose", t, dim1) != FF_OK)
        return NULL;
    int64_t shape[FF_MAX_DIMS], stride[FF_MAX_DIMS];
    memcpy(shape, t->shape, sizeof shape);
    memcpy(stride, t->stride, sizeof stride);
    shape[dim0] = t->shape[dim1], shape[dim1] = t->shape[dim0];
    stride[dim0] = t->stride[dim1], stride[dim1] = t->stride[dim0];
    return view_of(t, t->offset, shape, stride, t->ndim);
}

ff_tensor *ff_tensor_permute(ff_tensor *t, const int *perm, int n)
{
    if (n != t->ndim)
        return ff_error(FF_ERR_ARG, "permute: got %d dims for a tensor of rank %d", n, t->ndim),
               NULL;
    bool seen[FF_MAX_DIMS] = {false};
    int64_t shape[FF_MAX_DIMS], stride[FF_MAX_DIMS];
    for (int i = 0; i < n; i++) {
        if (check_dim("permute", t, perm[i]) != FF_OK)
            return NULL;
        if (seen[perm[i]])
            return ff_error(FF_ERR_ARG, "permute: dim %d appears twice", perm[i] + 1), NULL;
        seen[perm[i]] = true;
        shape[i] = t->shape[perm[i]];
        stride[i] = t->stride[perm[i]];
    }
    return view_of(t, t->offset, shape, stride, n);
}

/* Resolve a requested shape (one entry may be -1) against numel. */
static ff_status infer_shape(const char *fn, const ff_tensor *t, const int64_t *req,
                             int ndim, int64_t *out)
{
    int infer = -1;
    int64_t known = 1, nz = 1; /* nz: the product of the non-zero sizes */
    if (ndim < 0 || ndim > FF_MAX_DIMS)
        return ff_error(FF_ERR_ARG, "%s: a tensor has at most %d dims, got %d", fn,
                        FF_MAX_DIMS, ndim);
    for (int i = 0; i < ndim; i++) {
        if (req[i] == -1) {
            if (infer >= 0)
                return ff_error(FF_ERR_ARG, "%s: only one size may be -1", fn);
            infer = i;
        } else if (req[i] < 0) {
            return ff_error(FF_ERR_ARG, "%s: size of dim %d is negative (%lld)", fn, i + 1,
                            (long long)req[i]);
        } else {
            /* Checked on nz, not known: after a 0, known stays 0 and
             * 0 x 2^40 x 2^40 would pass with overflowing strides (as in
             * ff_shape_check; found by fuzz_ops). */
            if (req[i] > 0 && nz > ((int64_t)1 << 60) / req[i])
                return ff_error(FF_ERR_MEM, "%s: shape is too large", fn);
            if (req[i] > 0)
                nz *= req[i];
            known *= req[i];
        }
        out[i] = req[i];
    }
    int64_t numel = ff_tensor_numel(t);
    if (infer >= 0 && known != 0 && numel % known == 0)
        out[infer] = numel / known;
    else if (infer >= 0)
        out[infer] = -1; /* cannot be inferred: reported below */
    int64_t total = 1;
    for (int i = 0; i < ndim; i++)
        total *= out[i];
    if (total != numel || (infer >= 0 && out[infer] < 0)) {
        char a[FF_SHAPE_STRLEN], b[FF_SHAPE_STRLEN];
        return ff_error(FF_ERR_SHAPE, "%s: cannot view a tensor of shape %s (%lld elements) as %s",
                        fn, ff_shape_str(t->shape, t->ndim, a, sizeof a), (long long)numel,
                        ff_shape_str(req, ndim, b, sizeof b));
    }
    return FF_OK;
}

ff_tensor *ff_tensor_view(ff_tensor *t, const int64_t *req, int ndim)
{
    int64_t shape[FF_MAX_DIMS], stride[FF_MAX_DIMS];
    if (infer_shape("view", t, req, ndim, shape) != FF_OK)
        return NULL;
    if (!ff_tensor_is_contiguous(t)) {
        char a[FF_SHAPE_STRLEN];
        ff_error(FF_ERR_STATE,
                 "view: tensor of shape %s is not contiguous; use reshape() or contiguous() first",
                 ff_shape_str(t->shape, t->ndim, a, sizeof a));
        return NULL;
    }
    contiguous_strides(shape, ndim, stride);
    return view_of(t, t->offset, shape, stride, ndim);
}

ff_tensor *ff_tensor_reshape(ff_tensor *t, const int64_t *req, int ndim)
{
    int64_t shape[FF_MAX_DIMS];
    if (infer_shape("reshape", t, req, ndim, shape) != FF_OK)
        return NULL;
    ff_tensor *c = ff_tensor_contiguous(t);
    if (!c)
        return NULL;
    ff_tensor *v = ff_tensor_view(c, shape, ndim);
    ff_tensor_release(c);
    return v;
}

ff_tensor *ff_tensor_expand(ff_tensor *t, const int64_t *shape, int ndim)
{
    if (ff_shape_check("expand", shape, ndim) != FF_OK)
        return NULL;
    if (ndim < t->ndim)
        goto bad;
    int64_t stride[FF_MAX_DIMS];
    int lead = ndim - t->ndim;
    for (int i = 0; i < ndim; i++) {
        if (i < lead) {
            stride[i] = 0;
            continue;
        }
        int64_t have = t->shape[i - lead];
        if (have == shape[i])
            stride[i] = t->stride[i - lead];
        else if (have == 1)
            stride[i] = 0;
        else
            goto bad;
    }
    return view_of(t, t->offset, shape, stride, ndim);
bad:;
    char a[FF_SHAPE_STRLEN], b[FF_SHAPE_STRLEN];
    ff_error(FF_ERR_SHAPE, "expand: cannot broadcast shape %s to %s",
             ff_shape_str(t->shape, t->ndim, a, sizeof a), ff_shape_str(shape, ndim, b, sizeof b));
    return NULL;
}

ff_tensor *ff_tensor_squeeze(ff_tensor *t, int dim)
{
    if (dim >= 0 && check_dim("squeeze", t, dim) != FF_OK)
        return NULL;
    int64_t shape[FF_MAX_DIMS], stride[FF_MAX_DIMS];
    int k = 0;
    for (int i = 0; i < t->ndim; i++) {
        bool drop = t->shape[i] == 1 && (dim < 0 || dim == i);
        if (!drop) {
            shape[k] = t->shape[i];
            stride[k++] = t->stride[i];
        }
    }
    return view_of(t, t->offset, shape, stride, k);
}

ff_tensor *ff_tensor_unsqueeze(ff_tensor *t, int dim)
{
    if (dim < 0 || dim > t->ndim || t->ndim == FF_MAX_DIMS)
        return ff_error(FF_ERR_RANGE, "unsqueeze: dim %lld out of range for a tensor of rank %d",
                        (long long)dim + 1, t->ndim), NULL;
    int64_t shape[FF_MAX_DIMS], stride[FF_MAX_DIMS];
    int k = 0;
    for (int i = 0; i <= t->ndim; i++) {
        if (i == dim) {
            shape[k] = 1;
            /* any stride works for a size-1 dim; keep the layout contiguous */
            stride[k++] = i < t->ndim ? t->stride[i] * t->shape[i] : 1;
        }
        if (i < t->ndim) {
            shape[k] = t->shape[i];
            stride[k++] = t->stride[i];
        }
    }
    return view_of(t, t->offset, shape, stride, t->ndim + 1);
}
