/*
 * ff_tensor.h: float32 tensors, their storage, views and creation.
 *
 * Conventions of the whole C API:
 *  - Dims and indices are 0-based here; the Lua binding converts from the
 *    1-based values users write.
 *  - Row-major, shapes outermost first (as torch and NumPy).
 *  - Ownership: a function that returns `ff_tensor *` returns a NEW reference
 *    that the caller releases with ff_tensor_release(); NULL means failure and
 *    ff_last_error() says why. Arguments are borrowed. Functions returning
 *    ff_status never take or give references.
 *  - A view (narrow, select, transpose, reshape of contiguous data, expand)
 *    shares its storage; writes through a view are seen by the base.
 */
#ifndef FF_TENSOR_H
#define FF_TENSOR_H

#include <stdbool.h>
#include "ff_base.h"

#define FF_MAX_DIMS 8

/* Refcounted float buffer; shared by a tensor and all its views. */
typedef struct ff_storage {
    float *data;
    int64_t numel;
    int refcount;
    uint64_t version;              /* bumped by every in-place write */
} ff_storage;

struct ff_node;
struct ff_hook;

typedef struct ff_tensor {
    ff_storage *storage;
    int64_t offset;                /* in elements, into storage->data */
    int ndim;                      /* 0 (a scalar) .. FF_MAX_DIMS */
    int64_t shape[FF_MAX_DIMS];
    int64_t stride[FF_MAX_DIMS];   /* in elements; 0 for an expanded dim */
    int refcount;
    /* autograd (see ff_autograd.h); all zero for a plain tensor */
    bool requires_grad;
    bool retains_grad;             /* keep a non-leaf's gradient in grad */
    struct ff_tensor *grad;        /* accumulated gradient, owned */
    struct ff_node *grad_fn;       /* the op that made this tensor, owned */
    struct ff_hook *hooks;         /* gradient hooks of a leaf, owned */
} ff_tensor;

/* ---- lifetime ---- */
ff_tensor *ff_tensor_retain(ff_tensor *t);   /* returns t; NULL-safe */
void ff_tensor_release(ff_tensor *t);        /* NULL-safe */
/* Every in-place kernel calls this on the tensor it writes, so autograd can
 * tell a saved tensor was modified (see ff_autograd.h). */
static inline void ff_tensor_bump_version(ff_tensor *t) { t->storage->version++; }

/* ---- shape helpers ---- */
int64_t ff_tensor_numel(const ff_tensor *t);
bool ff_tensor_is_contiguous(const ff_tensor *t);
static inline float *ff_tensor_data(const ff_tensor *t)
{
    return t->storage->data + t->offset;
}
/* Writes "2x3x4" ("scalar" for rank 0) into buf; returns buf. */
char *ff_shape_str(const int64_t *shape, int ndim, char *buf, size_t len);
#define FF_SHAPE_STRLEN 160
/* Offset (in elements, from the tensor's first element) of a full index. */
int64_t ff_tensor_offset_of(const ff_tensor *t, const int64_t *idx);
bool ff_shape_equal(const ff_tensor *a, const ff_tensor *b);
/* Check a shape (rank, non-negative dims, no overflow of the element count);
 * `fn` names the calling function in the message. */
ff_status ff_shape_check(const char *fn, const int64_t *shape, int ndim);

/* ---- creation (contiguous results) ---- */
ff_tensor *ff_tensor_empty(const int64_t *shape, int ndim);   /* uninitialised */
ff_tensor *ff_tensor_full(const int64_t *shape, int ndim, float value);
ff_tensor *ff_tensor_zeros(const int64_t *shape, int ndim);
ff_tensor *ff_tensor_ones(const int64_t *shape, int ndim);
ff_tensor *ff_tensor_scalar(float value);                     /* rank 0 */
ff_tensor *ff_tensor_from_data(const float *data, const int64_t *shape, int ndim);
/* start, start+step, ... while < end (> end for a negative step). */
ff_tensor *ff_tensor_arange(double start, double end, double step);
/* n evenly spaced values from start to end inclusive. */
ff_tensor *ff_tensor_linspace(double start, double end, int64_t n);
ff_tensor *ff_tensor_eye(int64_t n, int64_t m);

/* ---- views (share storage) ---- */
/* A new header on exactly the same elements (no autograd history). */
ff_tensor *ff_tensor_alias(ff_tensor *t);
/* Elements [start, start+length) along dim. */
ff_tensor *ff_tensor_narrow(ff_tensor *t, int dim, int64_t start, int64_t length);
/* Index `index` along dim; the result has one dim fewer. */
ff_tensor *ff_tensor_select(ff_tensor *t, int dim, int64_t index);
ff_tensor *ff_tensor_transpose(ff_tensor *t, int dim0, int dim1);
/* Dims reordered: result dim i is input dim perm[i]. */
ff_tensor *ff_tensor_permute(ff_tensor *t, const int *perm, int n);
/* Same elements, new shape; one entry may be -1 (inferred). A view when t is
 * contiguous; otherwise an error that suggests contiguous(). */
ff_tensor *ff_tensor_view(ff_tensor *t, const int64_t *shape, int ndim);
/* Like view, but copies when t is not contiguous. */
ff_tensor *ff_tensor_reshape(ff_tensor *t, const int64_t *shape, int ndim);
/* Broadcast view: size-1 dims (and missing leading dims) get stride 0. */
ff_tensor *ff_tensor_expand(ff_tensor *t, const int64_t *shape, int ndim);
ff_tensor *ff_tensor_squeeze(ff_tensor *t, int dim);   /* dim -1: all size-1 dims */
ff_tensor *ff_tensor_unsqueeze(ff_tensor *t, int dim); /* 0 <= dim <= ndim */

/* ---- copies ---- */
ff_tensor *ff_tensor_contiguous(ff_tensor *t);  /* t itself (retained) if already */
ff_tensor *ff_tensor_clone(const ff_tensor *t); /* always a fresh contiguous copy */
/* dst[...] = src[...], src broadcast to dst's shape. */
ff_status ff_tensor_copy_(ff_tensor *dst, const ff_tensor *src);
ff_status ff_tensor_fill_(ff_tensor *t, float value);
/* Element access by full index (bounds checked). */
ff_status ff_tensor_get(const ff_tensor *t, const int64_t *idx, float *out);
ff_status ff_tensor_set(ff_tensor *t, const int64_t *idx, float value);

/* ---- strided loops (for kernels) ----
 * Runs fn over n operands of one shape (expand them first), in row-major
 * order, one innermost run at a time: fn(len, ptrs, inner_strides, ctx) with
 * ptrs[k] pointing at operand k's first element of the run. Dims that are
 * contiguous across all operands are merged, so a contiguous tensor is one
 * call with stride 1. */
#define FF_LOOP_MAX_OPS 4
typedef void (*ff_loop_fn)(int64_t len, float **ptrs, const int64_t *strides,
                           void *ctx);
ff_status ff_loop(int n, ff_tensor *const *ops, ff_loop_fn fn, void *ctx);

#endif
