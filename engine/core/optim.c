/*
 * optim.c: one optimiser step over every parameter in one call, with the
 * non-finite gradient check fused in front (see ff_optim_step in ff_ops.h).
 *
 * Why: the Lua optimisers compose each update from tensor ops (Adam is
 * about ten per parameter, each allocating its result and crossing into C),
 * which cost ~0.7 ms per MLP step and dominate a growth phase's step 1,
 * whose perturbations are many small tensors. Here each element is updated
 * in one pass, with the same float operations in the same order as the Lua
 * rules in lib/firefly/optim (no fused multiply-adds: this file is built
 * for the baseline instruction set), so results are the same bits.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>
#include "ff_ops.h"

/* No NaN or infinity in g: an exponent of all ones marks both. An OR of
 * integer tests vectorises; a float sum (what the Lua check does) runs as
 * one dependent chain here and cost more than the update itself. */
static bool all_finite(const float *g, int64_t n)
{
    const uint32_t *bits = (const uint32_t *)(const void *)g;
    uint32_t any = 0;
    for (int64_t i = 0; i < n; i++)
        any |= (bits[i] & 0x7f800000u) == 0x7f800000u;
    return !any;
}

static void sgd(const ff_optim_hyper *h, int64_t n, float *restrict p, const float *restrict g,
                float *restrict b, bool fresh)
{
    float wd = (float)h->weight_decay, mu = (float)h->momentum, lr = (float)h->lr;
    float damp = (float)(1 - h->dampening);
    for (int64_t i = 0; i < n; i++) {
        float gw = h->weight_decay != 0 ? g[i] + p[i] * wd : g[i], d = gw;
        if (h->momentum != 0) {
            if (fresh) {
                b[i] = gw;
            } else {
                float bm = b[i] * mu;
                b[i] = bm + (h->dampening != 0 ? gw * damp : gw);
            }
            d = h->nesterov ? gw + b[i] * mu : b[i];
        }
        p[i] = p[i] - d * lr;
    }
}

static void adam(const ff_optim_hyper *h, bool decoupled, int64_t step, int64_t n,
                 float *restrict p, const float *restrict g, float *restrict m, float *restrict v)
{
    double b1 = h->beta1, b2 = h->beta2;
    double bc1 = 1 - pow(b1, (double)step), bc2 = 1 - pow(b2, (double)step);
    float wd = (float)h->weight_decay, shrink = (float)(1 - h->lr * h->weight_decay);
    float fb1 = (float)b1, fb2 = (float)b2, c1 = (float)(1 - b1), c2 = (float)(1 - b2);
    float sbc2 = (float)sqrt(bc2), eps = (float)h->eps, step_size = (float)(h->lr / bc1);
    bool decay = h->weight_decay != 0;
    for (int64_t i = 0; i < n; i++) {
        float gw = g[i];
        if (decay) {
            if (decoupled)
                p[i] = p[i] * shrink;
            else
                gw = gw + p[i] * wd;
        }
        float mm = m[i] * fb1, vv = v[i] * fb2;
        m[i] = mm + gw * c1;
        v[i] = vv + gw * gw * c2;
        float denom = sqrtf(v[i]) / sbc2 + eps;
        p[i] = p[i] - m[i] / denom * step_size;
    }
}

static void rmsprop(const ff_optim_hyper *h, int64_t n, float *restrict p,
                    const float *restrict g, float *restrict sq, float *restrict mb,
                    float *restrict ga)
{
    float wd = (float)h->weight_decay, al = (float)h->alpha, c = (float)(1 - h->alpha);
    float eps = (float)h->eps, mu = (float)h->momentum, lr = (float)h->lr;
    for (int64_t i = 0; i < n; i++) {
        float gw = h->weight_decay != 0 ? g[i] + p[i] * wd : g[i];
        float s = sq[i] * al;
        sq[i] = s + gw * gw * c;
        float denom;
        if (h->centered) {
            float a = ga[i] * al;
            ga[i] = a + gw * c;
            float var = sq[i] - ga[i] * ga[i];
            denom = sqrtf(var < 0.0f ? 0.0f : var) + eps;
        } else {
            denom = sqrtf(sq[i]) + eps;
        }
        if (h->momentum > 0) {
            float bm = mb[i] * mu;
            mb[i] = bm + gw / denom;
            p[i] = p[i] - mb[i] * lr;
        } else {
            p[i] = p[i] - gw / denom * lr;
        }
    }
}

/* The buffers each kind reads, by slot (ff_optim_entry.buf). */
static int buffers_needed(const ff_optim_hyper *h, bool need[3])
{
    need[0] = need[1] = need[2] = false;
    switch (h->kind) {
    case FF_OPTIM_SGD: need[0] = h->momentum != 0; break;
    case FF_OPTIM_ADAM:
    case FF_OPTIM_ADAMW: need[0] = need[1] = true; break;
    case FF_OPTIM_RMSPROP:
        need[0] = true, need[1] = h->momentum > 0, need[2] = h->centered;
        break;
    default: return -1;
    }
    return 0;
}

static ff_status check_entry(const ff_optim_hyper *h, const ff_optim_entry *e, int i)
{
    char sp[FF_SHAPE_STRLEN], sg[FF_SHAPE_STRLEN];
    bool need[3];
    if (buffers_needed(h, need))
        return ff_error(FF_ERR_ARG, "optim_step: unknown optimiser kind %d", (int)h->kind);
    if (!e->param || !e->grad)
        return ff_error(FF_ERR_ARG, "optim_step: entry %d has no parameter or no gradient", i + 1);
    ff_shape_str(e->param->shape, e->param->ndim, sp, sizeof sp);
    if (!ff_tensor_is_contiguous(e->param))
        return ff_error(FF_ERR_ARG, "optim_step: parameter %d (shape %s) is not contiguous", i + 1, sp);
    if (!ff_shape_equal(e->param, e->grad))
        return ff_error(FF_ERR_SHAPE, "optim_step: gradient %d has shape %s, expected %s", i + 1,
                        ff_shape_str(e->grad->shape, e->grad->ndim, sg, sizeof sg), sp);
    for (int k = 0; k < 3; k++) {
        const ff_tensor *b = e->buf[k];
        if (!need[k])
            continue;
        if (!b || !ff_shape_equal(b, e->param) || !ff_tensor_is_contiguous(b))
            return ff_error(FF_ERR_SHAPE,
                            "optim_step: state buffer %d of parameter %d is missing, not contiguous "
                            "or not of shape %s", k + 1, i + 1, sp);
    }
    if (e->step < 1)
        return ff_error(FF_ERR_ARG, "optim_step: step count of parameter %d must be >= 1", i + 1);
    return FF_OK;
}

ff_status ff_optim_step(const ff_optim_hyper *h, const ff_optim_entry *e, int n, bool check_finite,
                        int *bad)
{
    *bad = -1;
    for (int i = 0; i < n; i++) {
        ff_status st = check_entry(h, &e[i], i);
        if (st)
            return st;
    }
    /* gradients are read in place when contiguous (as backward leaves them) */
    ff_tensor *gc[n > 0 ? n : 1];
    int made = 0;
    ff_status st = FF_OK;
    for (; made < n; made++)
        if (!(gc[made] = ff_tensor_contiguous((ff_tensor *)e[made].grad))) {
            st = ff_last_status();
            break;
        }
    for (int i = 0; st == FF_OK && check_finite && i < n; i++)
        if (!all_finite(ff_tensor_data(gc[i]), ff_tensor_numel(gc[i]))) {
            *bad = i;
            break;
        }
    for (int i = 0; st == FF_OK && *bad < 0 && i < n; i++) {
        int64_t len = ff_tensor_numel(e[i].param);
        float *p = ff_tensor_data(e[i].param);
        const float *g = ff_tensor_data(gc[i]);
        float *b[3];
        for (int k = 0; k < 3; k++)
            b[k] = e[i].buf[k] ? ff_tensor_data(e[i].buf[k]) : NULL;
        switch (h->kind) {
        case FF_OPTIM_SGD: sgd(h, len, p, g, b[0], e[i].fresh); break;
        case FF_OPTIM_ADAM: adam(h, false, e[i].step, len, p, g, b[0], b[1]); break;
        case FF_OPTIM_ADAMW: adam(h, true, e[i].step, len, p, g, b[0], b[1]); break;
        case FF_OPTIM_RMSPROP: rmsprop(h, len, p, g, b[0], b[1], b[2]); break;
        }
        ff_tensor_bump_version(e[i].param);
        for (int k = 0; k < 3; k++)
            if (e[i].buf[k])
                ff_tensor_bump_version(e[i].buf[k]);
    }
    for (int i = 0; i < made; i++)
        ff_tensor_release(gc[i]);
    return st;
}
