/*
 * copy.c: the strided loop every elementwise kernel runs on, and the copies
 * built on it (contiguous, clone, copy_, fill_, element get/set).
 */
#include <string.h>
#include "ff_tensor.h"

ff_status ff_loop(int n, ff_tensor *const *ops, ff_loop_fn fn, void *ctx)
{
    if (n < 1 || n > FF_LOOP_MAX_OPS)
        return ff_error(FF_ERR_ARG, "loop: %d operands (1..%d)", n, FF_LOOP_MAX_OPS);
    const ff_tensor *t0 = ops[0];
    for (int k = 1; k < n; k++)
        if (!ff_shape_equal(t0, ops[k]))
            return ff_error(FF_ERR_SHAPE, "loop: operands differ in shape");
    if (ff_tensor_numel(t0) == 0)
        return FF_OK;

    /* Merge dims outermost-to-innermost into runs: dim i folds into the
     * previous kept dim when, for every operand, stepping the previous dim
     * once equals stepping dim i through its whole extent. Size-1 dims
     * vanish. What remains is walked with an odometer. */
    int64_t shape[FF_MAX_DIMS], stride[FF_LOOP_MAX_OPS][FF_MAX_DIMS];
    int d = 0;
    for (int i = 0; i < t0->ndim; i++) {
        if (t0->shape[i] == 1)
            continue;
        bool merge = d > 0;
        for (int k = 0; k < n && merge; k++)
            merge = stride[k][d - 1] == ops[k]->stride[i] * t0->shape[i];
        if (merge) {
            shape[d - 1] *= t0->shape[i];
            for (int k = 0; k < n; k++)
                stride[k][d - 1] = ops[k]->stride[i];
        } else {
            shape[d] = t0->shape[i];
            for (int k = 0; k < n; k++)
                stride[k][d] = ops[k]->stride[i];
            d++;
        }
    }
    float *base[FF_LOOP_MAX_OPS], *ptr[FF_LOOP_MAX_OPS];
    int64_t inner[FF_LOOP_MAX_OPS];
    for (int k = 0; k < n; k++) {
        base[k] = ff_tensor_data(ops[k]);
        inner[k] = d > 0 ? stride[k][d - 1] : 1;
    }
    if (d == 0) { /* a single element */
        fn(1, base, inner, ctx);
        return FF_OK;
    }
    int64_t len = shape[d - 1];
    int64_t count[FF_MAX_DIMS] = {0};
    for (;;) {
        for (int k = 0; k < n; k++) {
            int64_t off = 0;
            for (int i = 0; i < d - 1; i++)
                off += count[i] * stride[k][i];
            ptr[k] = base[k] + off;
        }
        fn(len, ptr, inner, ctx);
        int i = d - 2;
        while (i >= 0 && ++count[i] == shape[i])
            count[i--] = 0;
        if (i < 0)
            break;
    }
    return FF_OK;
}

static void copy_run(int64_t len, float **p, const int64_t *s, void *ctx)
{
    (void)ctx;
    float *dst = p[0];
    const float *src = p[1];
    if (s[0] == 1 && s[1] == 1) {
        memcpy(dst, src, (size_t)len * sizeof(float));
        return;
    }
    for (int64_t i = 0; i < len; i++)
        dst[i * s[0]] = src[i * s[1]];
}

static bool shares_storage(const ff_tensor *a, const ff_tensor *b)
{
    return a->storage == b->storage;
}

ff_status ff_tensor_copy_(ff_tensor *dst, const ff_tensor *src)
{
    ff_tensor_bump_version(dst); /* autograd checks saved tensors by it */
    ff_tensor *from = ff_tensor_expand((ff_tensor *)src, dst->shape, dst->ndim);
    if (!from) {
        char a[FF_SHAPE_STRLEN], b[FF_SHAPE_STRLEN];
        return ff_error(FF_ERR_SHAPE, "copy_: source of shape %s does not broadcast to %s",
                        ff_shape_str(src->shape, src->ndim, a, sizeof a),
                        ff_shape_str(dst->shape, dst->ndim, b, sizeof b));
    }
    /* Overlapping windows would read elements already overwritten. */
    if (shares_storage(dst, src)) {
        ff_tensor *tmp = ff_tensor_clone(from);
        ff_tensor_release(from);
        if (!tmp)
            return ff_last_status();
        from = ff_tensor_expand(tmp, dst->shape, dst->ndim);
        ff_tensor_release(tmp);
        if (!from)
            return ff_last_status();
    }
    ff_tensor *ops[2] = {dst, from};
    ff_status st = ff_loop(2, ops, copy_run, NULL);
    ff_tensor_release(from);
    return st;
}

ff_tensor *ff_tensor_clone(const ff_tensor *t)
{
    ff_tensor *c = ff_tensor_empty(t->shape, t->ndim);
    if (!c)
        return NULL;
    ff_tensor *ops[2] = {c, (ff_tensor *)t};
    ff_loop(2, ops, copy_run, NULL);
    return c;
}

ff_tensor *ff_tensor_contiguous(ff_tensor *t)
{
    if (ff_tensor_is_contiguous(t))
        return ff_tensor_retain(t);
    return ff_tensor_clone(t);
}

static void fill_run(int64_t len, float **p, const int64_t *s, void *ctx)
{
    float v = *(const float *)ctx;
    for (int64_t i = 0; i < len; i++)
        p[0][i * s[0]] = v;
}

ff_status ff_tensor_fill_(ff_tensor *t, float value)
{
    ff_tensor_bump_version(t); /* autograd checks saved tensors by it */
    return ff_loop(1, &t, fill_run, &value);
}

static ff_status check_index(const char *fn, const ff_tensor *t, const int64_t *idx)
{
    for (int i = 0; i < t->ndim; i++)
        if (idx[i] < 0 || idx[i] >= t->shape[i]) {
            char buf[FF_SHAPE_STRLEN];
            return ff_error(FF_ERR_RANGE,
                            "%s: index %lld out of range for dim %d of a tensor of shape %s",
                            fn, (long long)idx[i] + 1, i + 1,
                            ff_shape_str(t->shape, t->ndim, buf, sizeof buf));
        }
    return FF_OK;
}

ff_status ff_tensor_get(const ff_tensor *t, const int64_t *idx, float *out)
{
    ff_status st = check_index("get", t, idx);
    if (st == FF_OK)
        *out = ff_tensor_data(t)[ff_tensor_offset_of(t, idx)];
    return st;
}

ff_status ff_tensor_set(ff_tensor *t, const int64_t *idx, float value)
{
    ff_tensor_bump_version(t); /* autograd checks saved tensors by it */
    ff_status st = check_index("set", t, idx);
    if (st == FF_OK)
        ff_tensor_data(t)[ff_tensor_offset_of(t, idx)] = value;
    return st;
}
