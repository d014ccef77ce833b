/*
 * op_grow.c: fused ops for the candidates of Firefly growth.
 *
 * split_act
 *   Growth splits every existing neuron in two children whose
 *   pre-activations are z + s and z - s (s the split perturbation). After
 *   the neuron's per-neuron layers, a per-channel affine map a x + b (a
 *   batch norm in evaluation mode) and an activation f, the candidate is
 *     mean:  (f(u+) + f(u-)) / 2        with u± = a (z ± s) + b, z's shape
 *     pair:  f(u+), then f(u-), along the batch dim: (2N, C [, H, W])
 *   (pair is for a max pool that follows: the caller pools the 2N batch
 *   once, then averages the halves.)
 *   Why one op: composed, this is ten elementwise ops (six without the
 *   affine map), each allocating a tensor of z's size and half of them
 *   saving one for backward, on the largest tensors of a growth phase
 *   (every neuron of a unit at once).
 *   Fused, forward writes only its result and saves only its inputs;
 *   backward recomputes u± (a multiply-add, cheaper than reading a saved
 *   tensor back from memory).
 *
 *   Inputs: z (N, C) or (N, C, H, W), any layout; s of z's exact shape;
 *   scale (C) or NULL (1) and shift (C) or NULL (0), over dim 1 of z;
 *   gain (C) or NULL (1): s is taken as gain·s (per channel; growth's
 *   gates, α + y_i, which otherwise cost a product of s's size in forward
 *   and two in backward, with a sum over the batch).
 *   Parameters (ff_params): i[0] the activation (ff_act, ff_ops.h); i[1]
 *   0 mean, 1 pair; f[0], f[1] the activation's parameters, as op_act.c
 *   takes them (leaky_relu's slope, elu's alpha, softplus's beta and
 *   threshold). The scalar functions are op_act.c's own (act_scalar.h).
 *   Saved: z and s (contiguous), scale, shift and gain when given.
 *
 * Backward, with g+ = g- = g/2 (mean) or the two halves of g (pair), and
 * d+ = g+ f'(u+), d- = g- f'(u-):
 *   dz = a (d+ + d-),   ds = a (d+ - d-),
 *   dscale = Σ d+ (z + s) + d- (z - s),   dshift = Σ d+ + d-
 * the sums over everything but the channel: each term in float (as the
 * product it is), accumulated in double. With a gain k, s above is k s
 * (as float, the product the composition s * k computes), ds is the
 * gradient for k s times k, and dgain = Σ ds' s with ds' that gradient.
 *
 * Layout: z is read as R runs of L values sharing their walk through the
 * channels: (N, C) and spatial size 1 as N runs of C values, a and b one
 * per value; (N, C, H, W) as N*C runs of H*W values of one channel, a and
 * b one per run. Every loop is flat over a run (RUN_LOOP), with the
 * activation, the mode and the layout constant inside it (one
 * instantiation each), as in op_act.c.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "ff_autograd.h"
#include "ff_ops.h"
#include "act_scalar.h"
#include "kernels.h"

/* The identity, for a neuron without an activation (op_act.c has no op
 * for it, so act_scalar.h does not list it). */
static inline float f_identity(float x, aparams p) { return x; }
static inline float gd_identity(float g, float x, aparams p) { return g; }

typedef float (*actfn)(float x, aparams p);
typedef float (*gradfn)(float g, float v, aparams p);

/* for i in [0, n): BODY, in blocks of 16 with a constant inner trip count,
 * then a tail. gcc -O2 vectorises a loop only when its trip count is a
 * known multiple of the vector width; op_act.c's bound n & ~15 (bulk())
 * says so too, but gcc 12 forgets it when it hoists that bound out of
 * branches that all compute it, as this file's variants of a loop do. */
#define RUN_LOOP(n, ...)                                                       \
    do {                                                                       \
        int64_t nb_ = (n) / 16;                                                \
        for (int64_t j_ = 0; j_ < nb_; j_++)                                   \
            for (int64_t k_ = 0; k_ < 16; k_++) {                              \
                int64_t i = 16 * j_ + k_;                                      \
                __VA_ARGS__                                                    \
            }                                                                  \
        for (int64_t i = 16 * nb_; i < (n); i++) {                             \
            __VA_ARGS__                                                        \
        }                                                                      \
    } while (0)

/* ---- geometry and checks ---- */

typedef struct {
    int64_t C;      /* channels */
    int64_t R, L;   /* runs, values per run */
    int64_t numel;  /* of z */
    bool per_value; /* a run walks the channels (spatial size 1) */
} sa_geom;

static void sa_geometry(const int64_t *shape, int ndim, sa_geom *g)
{
    int64_t S = ndim == 4 ? shape[2] * shape[3] : 1;
    g->C = shape[1];
    g->numel = shape[0] * g->C * S;
    g->per_value = S == 1;
    g->R = g->per_value ? shape[0] : shape[0] * g->C;
    g->L = g->per_value ? g->C : S;
}

/* scale or shift: NULL, or one value per channel of z. */
static ff_status sa_check_vec(const ff_tensor *t, const char *what, const ff_tensor *z)
{
    if (!t || (t->ndim == 1 && t->shape[0] == z->shape[1]))
        return FF_OK;
    char st[FF_SHAPE_STRLEN], sz[FF_SHAPE_STRLEN];
    /* named, not numbered: in Lua, scale and shift are options */
    return ff_error(FF_ERR_SHAPE,
                    "split_act: %s has shape %s, expected %lld (one per channel: dim 2 of "
                    "argument #1 (z), %s)",
                    what, ff_shape_str(t->shape, t->ndim, st, sizeof st), (long long)z->shape[1],
                    ff_shape_str(z->shape, z->ndim, sz, sizeof sz));
}

static ff_status sa_check(ff_tensor *const *in, const ff_params *p)
{
    const ff_tensor *z = in[0], *s = in[1];
    if (!z || !s)
        return ff_error(FF_ERR_ARG, "split_act: argument #%d (%s) is required", z ? 2 : 1,
                        z ? "s" : "z");
    char sz[FF_SHAPE_STRLEN], ss[FF_SHAPE_STRLEN];
    ff_shape_str(z->shape, z->ndim, sz, sizeof sz);
    if (z->ndim != 2 && z->ndim != 4)
        return ff_error(FF_ERR_SHAPE,
                        "split_act: argument #1 (z) has shape %s, expected 2 dims (N x C) or 4 "
                        "(N x C x H x W)",
                        sz);
    if (!ff_shape_equal(s, z))
        return ff_error(FF_ERR_SHAPE,
                        "split_act: argument #2 (s) has shape %s, expected %s to match argument "
                        "#1 (z)",
                        ff_shape_str(s->shape, s->ndim, ss, sizeof ss), sz);
    ff_status st;
    if ((st = sa_check_vec(in[2], "scale", z)) || (st = sa_check_vec(in[3], "shift", z)) ||
        (st = sa_check_vec(in[4], "gain", z)))
        return st;
    if (p->i[0] < 0 || p->i[0] >= FF_ACT_COUNT)
        return ff_error(FF_ERR_ARG, "split_act: unknown activation kind %lld (expected 0..%d, see ff_act)",
                        (long long)p->i[0], FF_ACT_COUNT - 1);
    if (p->i[1] != 0 && p->i[1] != 1)
        return ff_error(FF_ERR_ARG, "split_act: mode must be 0 (mean) or 1 (pair), got %lld",
                        (long long)p->i[1]);
    if (p->i[0] == FF_ACT_SOFTPLUS && !(p->f[0] != 0 && isfinite(p->f[0])))
        return ff_error(FF_ERR_ARG, "split_act: softplus beta must be a non-zero number, got %g",
                        p->f[0]);
    return FF_OK;
}

/* av[c], bv[c]: scale and shift of every channel (1 and 0 when absent). */
static void sa_affine(int64_t C, const ff_tensor *a, const ff_tensor *b, float *av, float *bv)
{
    for (int64_t c = 0; c < C; c++) {
        av[c] = a ? ff_tensor_data(a)[c * a->stride[0]] : 1.0f;
        bv[c] = b ? ff_tensor_data(b)[c * b->stride[0]] : 0.0f;
    }
}

/* gv[c]: the gain of every channel, or NULL without one. */
static void sa_gain(int64_t C, const ff_tensor *k, float *gv)
{
    for (int64_t c = 0; k && c < C; c++)
        gv[c] = ff_tensor_data(k)[c * k->stride[0]];
}

/* se = gain·s over a run: the float product the composition computes */
static void gain_run(int64_t n, float *restrict se, const float *restrict s,
                     const float *restrict gv, float g0, bool per_value)
{
    if (per_value)
        RUN_LOOP(n, se[i] = s[i] * gv[i];);
    else
        RUN_LOOP(n, se[i] = s[i] * g0;);
}

/* ---- run kernels ----
 * a and b point at the run's values (per_value) or at its one value. */

/* mean: o = (f(u+) + f(u-)) / 2;  pair: o = f(u+), o2 = f(u-) */
ALWAYS_INLINE void fwd_run(int64_t n, float *restrict o, float *restrict o2,
                           const float *restrict z, const float *restrict s,
                           const float *restrict a, const float *restrict b, bool per_value,
                           bool pair, aparams p, actfn f)
{
    float a0 = a[0], b0 = b[0];
#define BODY                                                                   \
    {                                                                          \
        float ai = per_value ? a[i] : a0, bi = per_value ? b[i] : b0;          \
        float up = ai * (z[i] + s[i]) + bi, um = ai * (z[i] - s[i]) + bi;      \
        if (pair)                                                              \
            o[i] = f(up, p), o2[i] = f(um, p);                                 \
        else                                                                   \
            o[i] = 0.5f * (f(up, p) + f(um, p));                               \
    }
    RUN_LOOP(n, BODY);
#undef BODY
}

/* g f'(u), from u or from f(u) (tanh, sigmoid: see act_scalar.h) */
ALWAYS_INLINE float dact(float g, float u, aparams p, actfn f, gradfn gd, bool from_result)
{
    return gd(g, from_result ? f(u, p) : u, p);
}

/* d = g f'(u) with u = a (z + s) + b, or a (z - s) + b when minus, over a
 * run. Written so that relu's loop is one select, as op_act.c's: the sum
 * and difference of d+ and d- are a pass of their own (comb_run), and mean
 * mode's halving of g comes after (exact), for gcc turns a sum of two
 * selects, or a select of a product, into branches and vectorises neither. */
ALWAYS_INLINE void bwd_t(int64_t n, float *restrict d, const float *restrict g,
                         const float *restrict z, const float *restrict s,
                         const float *restrict a, const float *restrict b, bool per_value,
                         bool minus, aparams p, actfn f, gradfn gd, bool from_result)
{
    float a0 = a[0], b0 = b[0];
#define BODY                                                                   \
    {                                                                          \
        float ai = per_value ? a[i] : a0, bi = per_value ? b[i] : b0;          \
        float u = ai * (minus ? z[i] - s[i] : z[i] + s[i]) + bi;               \
        d[i] = dact(g[i], u, p, f, gd, from_result);                           \
    }
    RUN_LOOP(n, BODY);
#undef BODY
}

/* One dispatch function per pass and layout (and mode, forward), each a
 * switch over the activations with the layout and mode constant in its
 * loops; as in op_act.c, forward and backward stay apart so that gcc does
 * not merge an activation's loops into one with branches inside. */
#define FWD_DISPATCH(fname, PER_VALUE, PAIR)                                              \
    static void fname(ff_act k, int64_t n, float *o, float *o2, const float *z,           \
                      const float *s, const float *a, const float *b, aparams p)          \
    {                                                                                     \
        const bool per_value = PER_VALUE, pair = PAIR;                                    \
        switch (k) {                                                                      \
            FF_ACTS(FWD_CASE)                                                             \
        case FF_ACT_IDENTITY:                                                             \
            fwd_run(n, o, o2, z, s, a, b, per_value, pair, p, f_identity);                \
            break;                                                                        \
        default: break;                                                                   \
        }                                                                                 \
    }
#define FWD_CASE(e, name, res)                                                            \
    case FF_ACT_##e: fwd_run(n, o, o2, z, s, a, b, per_value, pair, p, f_##name); break;

#define BWD_DISPATCH(fname, PER_VALUE)                                                    \
    static void fname(ff_act k, int64_t n, float *dp, float *dm, const float *gp,         \
                      const float *gm, const float *z, const float *s, const float *a,    \
                      const float *b, aparams p)                                          \
    {                                                                                     \
        const bool per_value = PER_VALUE;                                                 \
        switch (k) {                                                                      \
            FF_ACTS(BWD_CASE)                                                             \
        case FF_ACT_IDENTITY:                                                             \
            bwd_t(n, dp, gp, z, s, a, b, per_value, false, p, f_identity, gd_identity, 0); \
            bwd_t(n, dm, gm, z, s, a, b, per_value, true, p, f_identity, gd_identity, 0);  \
            break;                                                                        \
        default: break;                                                                   \
        }                                                                                 \
    }
#define BWD_CASE(e, name, res)                                                            \
    case FF_ACT_##e:                                                                      \
        bwd_t(n, dp, gp, z, s, a, b, per_value, false, p, f_##name, gd_##name, res);      \
        bwd_t(n, dm, gm, z, s, a, b, per_value, true, p, f_##name, gd_##name, res);       \
        break;

FWD_DISPATCH(fwd_value_mean, true, false)
FWD_DISPATCH(fwd_value_pair, true, true)
FWD_DISPATCH(fwd_run_mean, false, false)
FWD_DISPATCH(fwd_run_pair, false, true)
BWD_DISPATCH(bwd_value, true)
BWD_DISPATCH(bwd_run, false)

typedef void (*fwd_fn)(ff_act k, int64_t n, float *o, float *o2, const float *z,
                       const float *s, const float *a, const float *b, aparams p);
typedef void (*bwd_fn)(ff_act k, int64_t n, float *dp, float *dm, const float *gp,
                       const float *gm, const float *z, const float *s, const float *a,
                       const float *b, aparams p);

static fwd_fn fwd_for(bool per_value, bool pair)
{
    return per_value ? (pair ? fwd_value_pair : fwd_value_mean)
                     : (pair ? fwd_run_pair : fwd_run_mean);
}

/* Over a run: q = dp + dm and r = dp - dm, then dz = a q and ds = a r
 * (with_dz, with_ds: which are wanted; a per value, or one a for the run),
 * and in place of dp and dm the terms of dshift and dscale: q, and
 * q z + r s = dp (z + s) + dm (z - s). */
ALWAYS_INLINE void comb_t(int64_t n, float *restrict dz, float *restrict ds,
                          float *restrict dp, float *restrict dm, const float *restrict z,
                          const float *restrict s, const float *restrict a, bool per_value,
                          bool with_dz, bool with_ds)
{
    float a0 = a[0];
#define BODY                                                                   \
    {                                                                          \
        float ai = per_value ? a[i] : a0, q = dp[i] + dm[i], r = dp[i] - dm[i]; \
        if (with_dz)                                                           \
            dz[i] = ai * q;                                                    \
        if (with_ds)                                                           \
            ds[i] = ai * r;                                                    \
        dp[i] = q, dm[i] = q * z[i] + r * s[i];                                \
    }
    RUN_LOOP(n, BODY);
#undef BODY
}

/* dz or ds may be NULL (not wanted). */
static void comb_run(int64_t n, float *dz, float *ds, float *dp, float *dm, const float *z,
                     const float *s, const float *a, bool per_value)
{
    switch (4 * per_value + 2 * (dz != NULL) + (ds != NULL)) {
    case 0: comb_t(n, dz, ds, dp, dm, z, s, a, false, false, false); break;
    case 1: comb_t(n, dz, ds, dp, dm, z, s, a, false, false, true); break;
    case 2: comb_t(n, dz, ds, dp, dm, z, s, a, false, true, false); break;
    case 3: comb_t(n, dz, ds, dp, dm, z, s, a, false, true, true); break;
    case 4: comb_t(n, dz, ds, dp, dm, z, s, a, true, false, false); break;
    case 5: comb_t(n, dz, ds, dp, dm, z, s, a, true, false, true); break;
    case 6: comb_t(n, dz, ds, dp, dm, z, s, a, true, true, false); break;
    default: comb_t(n, dz, ds, dp, dm, z, s, a, true, true, true); break;
    }
}

/* acc[i] += x[i] in double (a run walking the channels) */
static void acc_f64(int64_t n, double *restrict acc, const float *restrict x)
{
    RUN_LOOP(n, acc[i] += x[i];);
}

/* ---- forward ---- */

/* Checks, then the result; saves the inputs when ctx is not NULL. */
static ff_tensor *sa_forward(ff_tensor *const *in, const ff_params *p, ff_ctx *ctx)
{
    if (sa_check(in, p) != FF_OK)
        return NULL;
    const ff_tensor *z0 = in[0];
    sa_geom g;
    sa_geometry(z0->shape, z0->ndim, &g);
    bool pair = p->i[1] == 1;
    int64_t shape[FF_MAX_DIMS];
    memcpy(shape, z0->shape, sizeof shape);
    if (pair)
        shape[0] *= 2;
    ff_tensor *z = ff_tensor_contiguous(in[0]);
    ff_tensor *s = z ? ff_tensor_contiguous(in[1]) : NULL;
    ff_tensor *y = s ? ff_tensor_empty(shape, z0->ndim) : NULL;
    const ff_tensor *gain = in[4];
    /* scale, shift, gain per channel; gain·s of one run */
    float *ab = y ? malloc(sizeof(float) * (3 * (size_t)g.C + (gain ? (size_t)g.L : 0) + 1)) : NULL;
    if (y && !ab) {
        ff_error(FF_ERR_MEM, "split_act: out of memory");
        ff_tensor_release(y);
        y = NULL;
    }
    if (y) {
        float *av = ab, *bv = ab + g.C, *gv = bv + g.C, *se = gv + g.C, *yd = ff_tensor_data(y);
        const float *zd = ff_tensor_data(z), *sd = ff_tensor_data(s);
        aparams ap = {(float)p->f[0], (float)p->f[1]};
        sa_affine(g.C, in[2], in[3], av, bv);
        sa_gain(g.C, gain, gv);
        fwd_fn run = fwd_for(g.per_value, pair);
        for (int64_t r = 0; r < g.R; r++) {
            int64_t off = r * g.L, c = g.per_value ? 0 : r % g.C;
            const float *sr = sd + off;
            if (gain) {
                gain_run(g.L, se, sr, gv, gv[c], g.per_value);
                sr = se;
            }
            run((ff_act)p->i[0], g.L, yd + off, yd + g.numel + off, zd + off, sr, av + c,
                bv + c, ap);
        }
        if (ctx) {
            ff_ctx_save(ctx, z);
            ff_ctx_save(ctx, s);
            ff_ctx_save(ctx, in[2]);
            ff_ctx_save(ctx, in[3]);
            ff_ctx_save(ctx, in[4]);
        }
    }
    free(ab);
    ff_tensor_release(z);
    ff_tensor_release(s);
    return y;
}

ff_tensor *ff_fwd_split_act(ff_ctx *ctx, ff_tensor *const *in)
{
    return sa_forward(in, &ctx->p, ctx);
}

ff_tensor *ff_split_act(const ff_tensor *z, const ff_tensor *s, const ff_tensor *scale,
                        const ff_tensor *shift, const ff_tensor *gain, ff_act act, double p0,
                        double p1, bool pair)
{
    ff_params p = {.i = {act, pair}, .f = {p0, p1}};
    ff_tensor *in[5] = {(ff_tensor *)z, (ff_tensor *)s, (ff_tensor *)scale, (ff_tensor *)shift,
                        (ff_tensor *)gain};
    return sa_forward(in, &p, NULL);
}

/* ---- backward ---- */

ff_status ff_bwd_split_act(ff_ctx *ctx, const ff_tensor *gout, ff_tensor **gin)
{
    ff_tensor *z, *s, *a = NULL, *b = NULL, *kg = NULL;
    ff_status st;
    int n = 0; /* saved in forward's order; absent scale or shift were not */
    if ((st = ff_ctx_saved(ctx, n++, &z)) || (st = ff_ctx_saved(ctx, n++, &s)) ||
        (ctx->in_shape[2].ndim >= 0 && (st = ff_ctx_saved(ctx, n++, &a))) ||
        (ctx->in_shape[3].ndim >= 0 && (st = ff_ctx_saved(ctx, n++, &b))) ||
        (ctx->in_shape[4].ndim >= 0 && (st = ff_ctx_saved(ctx, n++, &kg))))
        return st;
    sa_geom g;
    sa_geometry(ctx->in_shape[0].size, ctx->in_shape[0].ndim, &g);
    for (int i = 0; i < 5; i++) /* the caller releases them on failure */
        if (ctx->needs_grad[i] &&
            !(gin[i] = ff_tensor_empty(ctx->in_shape[i].size, ctx->in_shape[i].ndim)))
            return ff_last_status();
    ff_tensor *gc = ff_tensor_contiguous((ff_tensor *)gout);
    if (!gc)
        return ff_last_status();
    /* doubles first (aligned): the sums of dscale, dshift and dgain per
     * channel; then a, b, k·a and the gain per channel, and dp, dm, gain·s
     * and its gradient of one run */
    size_t C = (size_t)g.C, L = (size_t)g.L;
    char *buf = calloc(1, sizeof(double) * 3 * C + sizeof(float) * (4 * C + 4 * L) + 8);
    if (!buf) {
        ff_tensor_release(gc);
        return ff_error(FF_ERR_MEM, "backward of split_act: out of memory");
    }
    double *dscale = gin[2] ? (double *)buf : NULL, *dshift = gin[3] ? (double *)buf + C : NULL;
    double *dgain = gin[4] ? (double *)buf + 2 * C : NULL;
    float *av = (float *)((double *)buf + 3 * C), *bv = av + C, *kav = bv + C; /* k·a */
    float *gv = kav + C, *dp = gv + C, *dm = dp + L, *se = dm + L, *dse = se + L;
    sa_affine(g.C, a, b, av, bv);
    sa_gain(g.C, kg, gv);
    /* dp and dm below are g f'(u±) with g whole (mean mode) or its halves
     * (pair): in mean mode d± is half of them, and k = 1/2 scales what is
     * made of them (exactly: a power of two) */
    bool pair = ctx->p.i[1] == 1;
    float k = pair ? 1.0f : 0.5f;
    for (int64_t c = 0; c < g.C; c++)
        kav[c] = k * av[c];
    aparams ap = {(float)ctx->p.f[0], (float)ctx->p.f[1]};
    const float *zd = ff_tensor_data(z), *sd = ff_tensor_data(s), *gy = ff_tensor_data(gc);
    float *dz = gin[0] ? ff_tensor_data(gin[0]) : NULL, *ds = gin[1] ? ff_tensor_data(gin[1]) : NULL;
    bwd_fn run = g.per_value ? bwd_value : bwd_run;
    for (int64_t r = 0; r < g.R; r++) {
        int64_t off = r * g.L, c = g.per_value ? 0 : r % g.C;
        const float *gp = gy + off, *gm = pair ? gy + g.numel + off : gp;
        const float *sr = sd + off;
        float *dsr = ds ? ds + off : NULL;
        if (kg) { /* the pass on gain·s; its gradient in dse, then ds and dgain */
            gain_run(g.L, se, sr, gv, gv[c], g.per_value);
            sr = se;
            dsr = ds || dgain ? dse : NULL;
        }
        run((ff_act)ctx->p.i[0], g.L, dp, dm, gp, gm, zd + off, sr, av + c, bv + c, ap);
        comb_run(g.L, dz ? dz + off : NULL, dsr, dp, dm, zd + off, sr, kav + c, g.per_value);
        if (kg && dgain) { /* dgain = Σ dse s, each term in float */
            gain_run(g.L, se, sd + off, dse, 1.0f, true);
            if (g.per_value)
                acc_f64(g.L, dgain, se);
            else
                dgain[c] += ff_kernel_sum(se, g.L);
        }
        if (kg && ds)
            gain_run(g.L, ds + off, dse, gv, gv[c], g.per_value);
        /* dp, dm now hold the terms of dshift and dscale */
        if (g.per_value) {
            if (dshift)
                acc_f64(g.L, dshift, dp);
            if (dscale)
                acc_f64(g.L, dscale, dm);
        } else {
            if (dshift)
                dshift[c] += ff_kernel_sum(dp, g.L);
            if (dscale)
                dscale[c] += ff_kernel_sum(dm, g.L);
        }
    }
    for (int64_t c = 0; c < g.C; c++) {
        if (dscale)
            ff_tensor_data(gin[2])[c] = (float)(k * dscale[c]);
        if (dshift)
            ff_tensor_data(gin[3])[c] = (float)(k * dshift[c]);
        if (dgain)
            ff_tensor_data(gin[4])[c] = (float)dgain[c];
    }
    free(buf);
    ff_tensor_release(gc);
    return FF_OK;
}
