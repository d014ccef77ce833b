/*
 * op_shape.c: views, joins and indexing as differentiable ops.
 *
 * Forwards are the kernels of tensor.c and index.c; every backward maps the
 * output gradient back onto the input's shape: reshape it, transpose it
 * back, or scatter it into zeros at the elements the view selected.
 *
 * Parameters (ff_params):
 *   reshape      i[0..ni-1] the new shape (one entry may be -1)
 *   squeeze      i[0] the dim, or -1 for every size-1 dim
 *   unsqueeze    i[0] the position of the new dim
 *   transpose    i[0], i[1] the two dims
 *   permute      i[0..ni-1] the permutation
 *   narrow       i[0] dim, i[1] start, i[2] length
 *   select       i[0] dim, i[1] index
 *   expand       i[0..ni-1] the target shape
 *   contiguous   i[0] = 1 to copy even a contiguous input (clone)
 *   cat, stack   i[0] the dim
 *   index_select i[0] the dim, aux[0] the 0-based index (1-D)
 *   gather       i[0] the dim, aux[0] the 0-based index (rank of the input)
 */
#include <string.h>
#include "ff_autograd.h"
#include "ff_ops.h"

/* ---- small helpers ---- */

static ff_tensor *grad_reshaped(const ff_tensor *g, const ff_shape *s)
{
    return ff_tensor_reshape((ff_tensor *)g, s->size, s->ndim);
}

/* zeros of the input's shape with g copied into the window view(z) */
static ff_tensor *grad_into_window(const ff_tensor *g, const ff_shape *s,
                                   ff_tensor *(*window)(ff_tensor *, const ff_params *),
                                   const ff_params *p)
{
    ff_tensor *z = ff_tensor_zeros(s->size, s->ndim);
    if (!z)
        return NULL;
    ff_tensor *w = window(z, p);
    ff_status st = w ? ff_tensor_copy_(w, g) : ff_last_status();
    ff_tensor_release(w);
    if (st != FF_OK) {
        ff_tensor_release(z);
        return NULL;
    }
    return z;
}

/* ---- reshape, squeeze, unsqueeze: same elements, other shape ---- */

ff_tensor *ff_fwd_reshape(ff_ctx *ctx, ff_tensor *const *in)
{
    return ff_tensor_reshape(in[0], ctx->p.i, ctx->p.ni);
}

ff_status ff_bwd_reshape(ff_ctx *ctx, const ff_tensor *g, ff_tensor **gin)
{
    gin[0] = grad_reshaped(g, &ctx->in_shape[0]);
    return gin[0] ? FF_OK : ff_last_status();
}

ff_tensor *ff_fwd_squeeze(ff_ctx *ctx, ff_tensor *const *in)
{
    return ff_tensor_squeeze(in[0], (int)ctx->p.i[0]);
}

ff_status ff_bwd_squeeze(ff_ctx *ctx, const ff_tensor *g, ff_tensor **gin)
{
    return ff_bwd_reshape(ctx, g, gin);
}

ff_tensor *ff_fwd_unsqueeze(ff_ctx *ctx, ff_tensor *const *in)
{
    return ff_tensor_unsqueeze(in[0], (int)ctx->p.i[0]);
}

ff_status ff_bwd_unsqueeze(ff_ctx *ctx, const ff_tensor *g, ff_tensor **gin)
{
    return ff_bwd_reshape(ctx, g, gin);
}

/* ---- transpose, permute: the inverse reordering ---- */

ff_tensor *ff_fwd_transpose(ff_ctx *ctx, ff_tensor *const *in)
{
    return ff_tensor_transpose(in[0], (int)ctx->p.i[0], (int)ctx->p.i[1]);
}

ff_status ff_bwd_transpose(ff_ctx *ctx, const ff_tensor *g, ff_tensor **gin)
{
    ff_tensor *t = ff_tensor_transpose((ff_tensor *)g, (int)ctx->p.i[0], (int)ctx->p.i[1]);
    gin[0] = t ? ff_tensor_contiguous(t) : NULL;
    ff_tensor_release(t);
    return gin[0] ? FF_OK : ff_last_status();
}

ff_tensor *ff_fwd_permute(ff_ctx *ctx, ff_tensor *const *in)
{
    int perm[FF_MAX_DIMS];
    for (int k = 0; k < ctx->p.ni && k < FF_MAX_DIMS; k++) {
        /* The backward indexes by i[k] itself, so a value that only its int
         * cast makes valid (2^40 -> 0) must be refused here (fuzz_ops). */
        if (ctx->p.i[k] < 0 || ctx->p.i[k] >= FF_MAX_DIMS)
            return ff_error(FF_ERR_RANGE, "permute: dim %d of the permutation is out of range "
                            "for a tensor of rank %d", k + 1, in[0]->ndim), NULL;
        perm[k] = (int)ctx->p.i[k];
    }
    return ff_tensor_permute(in[0], perm, ctx->p.ni);
}

ff_status ff_bwd_permute(ff_ctx *ctx, const ff_tensor *g, ff_tensor **gin)
{
    int inverse[FF_MAX_DIMS];
    for (int k = 0; k < ctx->p.ni; k++)
        inverse[ctx->p.i[k]] = k;
    ff_tensor *t = ff_tensor_permute((ff_tensor *)g, inverse, ctx->p.ni);
    gin[0] = t ? ff_tensor_contiguous(t) : NULL;
    ff_tensor_release(t);
    return gin[0] ? FF_OK : ff_last_status();
}

/* ---- narrow, select: the gradient lands in the window, zeros elsewhere ---- */

static ff_tensor *narrow_window(ff_tensor *z, const ff_params *p)
{
    return ff_tensor_narrow(z, (int)p->i[0], p->i[1], p->i[2]);
}

static ff_tensor *select_window(ff_tensor *z, const ff_params *p)
{
    return ff_tensor_select(z, (int)p->i[0], p->i[1]);
}

ff_tensor *ff_fwd_narrow(ff_ctx *ctx, ff_tensor *const *in)
{
    return narrow_window(in[0], &ctx->p);
}

ff_status ff_bwd_narrow(ff_ctx *ctx, const ff_tensor *g, ff_tensor **gin)
{
    gin[0] = grad_into_window(g, &ctx->in_shape[0], narrow_window, &ctx->p);
    return gin[0] ? FF_OK : ff_last_status();
}

ff_tensor *ff_fwd_select(ff_ctx *ctx, ff_tensor *const *in)
{
    return select_window(in[0], &ctx->p);
}

ff_status ff_bwd_select(ff_ctx *ctx, const ff_tensor *g, ff_tensor **gin)
{
    gin[0] = grad_into_window(g, &ctx->in_shape[0], select_window, &ctx->p);
    return gin[0] ? FF_OK : ff_last_status();
}

/* ---- expand: broadcasting's adjoint sums the repeats ---- */

ff_tensor *ff_fwd_expand(ff_ctx *ctx, ff_tensor *const *in)
{
    return ff_tensor_expand(in[0], ctx->p.i, ctx->p.ni);
}

ff_status ff_bwd_expand(ff_ctx *ctx, const ff_tensor *g, ff_tensor **gin)
{
    gin[0] = ff_sum_to_shape(g, &ctx->in_shape[0]);
    return gin[0] ? FF_OK : ff_last_status();
}

/* ---- contiguous / clone: identity ---- */

ff_tensor *ff_fwd_contiguous(ff_ctx *ctx, ff_tensor *const *in)
{
    return ctx->p.i[0] ? ff_tensor_clone(in[0]) : ff_tensor_contiguous(in[0]);
}

ff_status ff_bwd_contiguous(ff_ctx *ctx, const ff_tensor *g, ff_tensor **gin)
{
    gin[0] = ff_tensor_clone(g);
    return gin[0] ? FF_OK : ff_last_status();
}

/* ---- cat, stack: each input gets its slice of the gradient ---- */

ff_tensor *ff_fwd_cat(ff_ctx *ctx, ff_tensor *const *in)
{
    return ff_cat(in, ctx->n_in, (int)ctx->p.i[0]);
}

ff_status ff_bwd_cat(ff_ctx *ctx, const ff_tensor *g, ff_tensor **gin)
{
    int dim = (int)ctx->p.i[0];
    int64_t start = 0;
    for (int k = 0; k < ctx->n_in; k++) {
        int64_t len = ctx->in_shape[k].size[dim];
        if (ctx->needs_grad[k]) {
            ff_tensor *w = ff_tensor_narrow((ff_tensor *)g, dim, start, len);
            gin[k] = w ? ff_tensor_contiguous(w) : NULL;
            ff_tensor_release(w);
            if (!gin[k])
                return ff_last_status();
        }
        start += len;
    }
    return FF_OK;
}

ff_tensor *ff_fwd_stack(ff_ctx *ctx, ff_tensor *const *in)
{
    return ff_stack(in, ctx->n_in, (int)ctx->p.i[0]);
}

ff_status ff_bwd_stack(ff_ctx *ctx, const ff_tensor *g, ff_tensor **gin)
{
    int dim = (int)ctx->p.i[0];
    for (int k = 0; k < ctx->n_in; k++) {
        if (!ctx->needs_grad[k])
            continue;
        ff_tensor *w = ff_tensor_select((ff_tensor *)g, dim, k);
        gin[k] = w ? ff_tensor_contiguous(w) : NULL;
        ff_tensor_release(w);
        if (!gin[k])
            return ff_last_status();
    }
    return FF_OK;
}

/* ---- index_select, gather: adjoints are index_add_ and scatter_add_ ---- */

ff_tensor *ff_fwd_index_select(ff_ctx *ctx, ff_tensor *const *in)
{
    /* aux[] is optional in ff_params, so its absence is checked here, as
     * where() does (fuzz_ops passed a NULL index). */
    if (!ctx->p.aux[0])
        return ff_error(FF_ERR_ARG, "index_select: the index (aux[0]) is missing"), NULL;
    ff_tensor *r = ff_index_select(in[0], (int)ctx->p.i[0], ctx->p.aux[0]);
    if (r)
        ff_ctx_save(ctx, ctx->p.aux[0]);
    return r;
}

/* zeros of the input's shape, then the gradient added at the saved index:
 * index_add_ for index_select, scatter_add_ for gather. */
static ff_status grad_by_index(ff_ctx *ctx, const ff_tensor *g, ff_tensor **gin,
                               ff_status (*add)(ff_tensor *, int, const ff_tensor *,
                                                const ff_tensor *))
{
    ff_tensor *index;
    ff_status st = ff_ctx_saved(ctx, 0, &index);
    if (st != FF_OK)
        return st;
    const ff_shape *s = &ctx->in_shape[0];
    gin[0] = ff_tensor_zeros(s->size, s->ndim);
    if (!gin[0])
        return ff_last_status();
    return add(gin[0], (int)ctx->p.i[0], index, g);
}

ff_status ff_bwd_index_select(ff_ctx *ctx, const ff_tensor *g, ff_tensor **gin)
{
    return grad_by_index(ctx, g, gin, ff_index_add_);
}

ff_tensor *ff_fwd_gather(ff_ctx *ctx, ff_tensor *const *in)
{
    /* aux[] is optional in ff_params, so its absence is checked here, as
     * where() does (fuzz_ops passed a NULL index). */
    if (!ctx->p.aux[0])
        return ff_error(FF_ERR_ARG, "gather: the index (aux[0]) is missing"), NULL;
    ff_tensor *r = ff_gather(in[0], (int)ctx->p.i[0], ctx->p.aux[0]);
    if (r)
        ff_ctx_save(ctx, ctx->p.aux[0]);
    return r;
}

ff_status ff_bwd_gather(ff_ctx *ctx, const ff_tensor *g, ff_tensor **gin)
{
    return grad_by_index(ctx, g, gin, ff_scatter_add_);
}
