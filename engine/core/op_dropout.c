/*
 * op_dropout.c: inverted dropout.
 *
 * Inputs: x of any shape.
 * Parameters (ff_params):
 *   dropout  f[0] p, the probability of zeroing an element, in [0, 1];
 *            i[0] training (1) or eval (0); rng the generator (NULL: the
 *            default one).
 * In training with p > 0, each element is kept with probability 1 - p
 * (ff_bernoulli_, so a seeded generator gives the same mask anywhere) and
 * scaled by 1/(1-p), so the expected output is x and eval needs no
 * rescaling; p = 1 gives zeros without drawing. In eval, or with p = 0, the
 * result is a copy of x.
 * Saved: the scaled mask m (training with p > 0).
 * Backward: dx = gy·m (training with p > 0), else dx = gy.
 */
#include "ff_autograd.h"
#include "ff_ops.h"

static bool drops(const ff_params *p)
{
    return p->i[0] != 0 && p->f[0] > 0;
}

/* The scaled mask: 1/(1-p) where kept, 0 where dropped. */
static ff_tensor *mask_new(const ff_tensor *x, double p, ff_rng *rng)
{
    if (p >= 1)
        return ff_tensor_zeros(x->shape, x->ndim);
    ff_tensor *m = ff_tensor_empty(x->shape, x->ndim);
    if (!m)
        return NULL;
    if (ff_bernoulli_(m, rng ? rng : ff_rng_default(), 1.0 - p) != FF_OK) {
        ff_tensor_release(m);
        return NULL;
    }
    float *d = ff_tensor_data(m), scale = (float)(1.0 / (1.0 - p));
    int64_t n = ff_tensor_numel(m);
    for (int64_t i = 0; i < n; i++)
        d[i] *= scale;
    return m;
}

ff_tensor *ff_fwd_dropout(ff_ctx *ctx, ff_tensor *const *in)
{
    double p = ctx->p.f[0];
    if (!(p >= 0 && p <= 1))
        return ff_error(FF_ERR_ARG, "dropout: probability must be in [0, 1], got %g", p), NULL;
    if (!drops(&ctx->p))
        return ff_tensor_clone(in[0]);
    ff_tensor *m = mask_new(in[0], p, ctx->p.rng);
    ff_tensor *y = m ? ff_binary(FF_MUL, in[0], m) : NULL;
    if (y)
        ff_ctx_save(ctx, m);
    ff_tensor_release(m);
    return y;
}

ff_status ff_bwd_dropout(ff_ctx *ctx, const ff_tensor *gout, ff_tensor **gin)
{
    if (!drops(&ctx->p)) { /* dx = gy */
        gin[0] = ff_tensor_clone(gout);
        return gin[0] ? FF_OK : ff_last_status();
    }
    ff_tensor *m;
    ff_status st = ff_ctx_saved(ctx, 0, &m);
    if (st != FF_OK)
        return st;
    gin[0] = ff_binary(FF_MUL, gout, m); /* dx = gy·m */
    return gin[0] ? FF_OK : ff_last_status();
}
