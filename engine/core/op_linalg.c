/*
 * op_linalg.c: matmul as a differentiable op.
 *
 * For C = A·B the gradients are dA = dC·Bᵀ and dB = Aᵀ·dC. Every case of
 * ff_matmul reduces to that one rule: 1-D operands are promoted to a row
 * (a) or a column (b) and the output gradient to match, batched products use
 * the batched kernel on transposed views (no copies: BLAS takes them as
 * transposed operands), and an operand broadcast over the batch gets its
 * gradient summed back (ff_sum_to_shape).
 *
 * Parameters: none.
 */
#include "ff_autograd.h"
#include "ff_ops.h"

ff_tensor *ff_fwd_matmul(ff_ctx *ctx, ff_tensor *const *in)
{
    ff_tensor *r = ff_matmul(in[0], in[1]);
    if (r) {
        /* dA needs B, dB needs A */
        ff_ctx_save(ctx, ctx->needs_grad[1] ? in[0] : NULL);
        ff_ctx_save(ctx, ctx->needs_grad[0] ? in[1] : NULL);
    }
    return r;
}

/* t with its last two dims swapped (a view). */
static ff_tensor *mT(ff_tensor *t)
{
    return ff_tensor_transpose(t, t->ndim - 2, t->ndim - 1);
}

/* The shape an operand takes in the product: a 1-D a is a row (1,k), a
 * 1-D b a column (k,1). */
static ff_shape promoted(const ff_shape *s, int which)
{
    ff_shape p = *s;
    if (s->ndim == 1) {
        p.ndim = 2;
        p.size[which == 0 ? 1 : 0] = s->size[0];
        p.size[which == 0 ? 0 : 1] = 1;
    }
    return p;
}

/* The gradient of operand `which`: the product summed back over broadcast
 * batch dims, reshaped to the operand's own shape. Consumes prod. */
static ff_tensor *finish(ff_tensor *prod, const ff_ctx *ctx, int which)
{
    if (!prod)
        return NULL;
    ff_shape ps = promoted(&ctx->in_shape[which], which);
    ff_tensor *summed = ff_sum_to_shape(prod, &ps);
    ff_tensor_release(prod);
    if (!summed)
        return NULL;
    const ff_shape *orig = &ctx->in_shape[which];
    ff_tensor *r = ff_tensor_reshape(summed, orig->size, orig->ndim);
    ff_tensor_release(summed);
    return r;
}

/* Unsqueeze t at dim (consumes t). */
static ff_tensor *unsq(ff_tensor *t, int dim)
{
    if (!t)
        return NULL;
    ff_tensor *u = ff_tensor_unsqueeze(t, dim);
    ff_tensor_release(t);
    return u;
}

ff_status ff_bwd_matmul(ff_ctx *ctx, const ff_tensor *gout, ff_tensor **gin)
{
    ff_tensor *a = NULL, *b = NULL;
    ff_status st;
    int k = 0; /* saved in forward's order, skipping what was not needed */
    if (ctx->needs_grad[1] && (st = ff_ctx_saved(ctx, k++, &a)) != FF_OK)
        return st;
    if (ctx->needs_grad[0] && (st = ff_ctx_saved(ctx, k++, &b)) != FF_OK)
        return st;
    bool a1 = ctx->in_shape[0].ndim == 1, b1 = ctx->in_shape[1].ndim == 1;
    /* the output gradient gets back the dims a 1-D operand removed */
    ff_tensor *g = ff_tensor_retain((ff_tensor *)gout);
    if (a1)
        g = unsq(g, g->ndim - (b1 ? 0 : 1));
    if (b1 && g)
        g = unsq(g, g->ndim);
    ff_tensor *pa = a ? (a1 ? ff_tensor_unsqueeze(a, 0) : ff_tensor_retain(a)) : NULL;
    ff_tensor *pb = b ? (b1 ? ff_tensor_unsqueeze(b, 1) : ff_tensor_retain(b)) : NULL;
    st = FF_OK;
    if (!g || (a && !pa) || (b && !pb))
        st = ff_last_status();
    if (st == FF_OK && ctx->needs_grad[0]) { /* dA = g·Bᵀ */
        ff_tensor *bt = mT(pb);
        gin[0] = bt ? finish(ff_matmul(g, bt), ctx, 0) : NULL;
        ff_tensor_release(bt);
        if (!gin[0])
            st = ff_last_status();
    }
    if (st == FF_OK && ctx->needs_grad[1]) { /* dB = Aᵀ·g */
        ff_tensor *at = mT(pa);
        gin[1] = at ? finish(ff_matmul(at, g), ctx, 1) : NULL;
        ff_tensor_release(at);
        if (!gin[1])
            st = ff_last_status();
    }
    ff_tensor_release(g);
    ff_tensor_release(pa);
    ff_tensor_release(pb);
    return st;
}
