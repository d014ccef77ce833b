/*
 * fuzz_ops.c: random programs over the C API. The input is a byte code:
 * each step picks a command (create, view, in-place write, a kernel, an op
 * through ff_apply with random parameters, backward, a hook, release, grad
 * mode) and its arguments, over 8 tensor slots.
 *
 * The property: every call either succeeds or returns NULL / an error status
 * with a message; it never crashes, reads or writes out of bounds (ASan), or
 * hits undefined behaviour (UBSan). After each success the result is checked
 * (its view lies inside its storage, every element is read) and after
 * backward every gradient has its tensor's shape. At the end all engine
 * memory must be back (ff_mem_live_bytes).
 *
 * Shapes stay small (dims 0..4, rank 0..4, results over MAX_KEEP elements are
 * dropped), so one input runs in microseconds; parameters are small numbers
 * with occasional extremes (see fz_small), which is where checks are missing.
 */
#include "fuzz_input.h"

#define SLOTS 8
#define MAX_STEPS 48
#define MAX_KEEP 4096 /* elements; bigger results are released at once */

static ff_tensor *slot[SLOTS];

/* ---- invariants ---- */

/* A view must lie inside its storage, and every element must be readable
 * (read only up to MAX_KEEP elements: an expanded view may have 2^40). */
static void check_tensor(const ff_tensor *t, const char *what)
{
    if (t->ndim < 0 || t->ndim > FF_MAX_DIMS || t->refcount < 1 || !t->storage) {
        fprintf(stderr, "fuzz: %s: bad tensor header\n", what);
        abort();
    }
    int64_t numel = 1, lo = t->offset, hi = t->offset;
    for (int i = 0; i < t->ndim; i++) {
        if (t->shape[i] < 0) {
            fprintf(stderr, "fuzz: %s: negative size\n", what);
            abort();
        }
        numel *= t->shape[i];
    }
    if (numel == 0)
        return;
    for (int i = 0; i < t->ndim; i++) {
        int64_t reach = (t->shape[i] - 1) * t->stride[i];
        if (reach < 0)
            lo += reach;
        else
            hi += reach;
    }
    if (lo < 0 || hi >= t->storage->numel) {
        fprintf(stderr, "fuzz: %s: view [%lld, %lld] outside its storage of %lld\n", what,
                (long long)lo, (long long)hi, (long long)t->storage->numel);
        abort();
    }
    int64_t idx[FF_MAX_DIMS] = {0};
    volatile float sink = 0;
    for (int64_t k = 0; k < numel && k < MAX_KEEP; k++) {
        sink += ff_tensor_data(t)[ff_tensor_offset_of(t, idx)];
        for (int i = t->ndim - 1; i >= 0 && ++idx[i] == t->shape[i]; i--)
            idx[i] = 0;
    }
    (void)sink;
}

static void check_grads(void)
{
    for (int s = 0; s < SLOTS; s++) {
        ff_tensor *t = slot[s];
        if (t && t->grad) {
            if (!ff_shape_equal(t->grad, t)) {
                fprintf(stderr, "fuzz: a gradient does not have its tensor's shape\n");
                abort();
            }
            check_tensor(t->grad, "gradient");
        }
    }
}

/* Store a call's result in slot s (or drop it when large); NULL must come
 * with a message. */
static void put(int s, ff_tensor *r, const char *what)
{
    if (!r) {
        fz_check_failed(what);
        return;
    }
    check_tensor(r, what);
    if (ff_tensor_numel(r) > MAX_KEEP) {
        ff_tensor_release(r);
        return;
    }
    ff_tensor_release(slot[s]);
    slot[s] = r;
}

static void status(ff_status st, const char *what)
{
    if (st != FF_OK)
        fz_check_failed(what);
}

static ff_tensor *pick(fz_in *in) { return slot[fz_below(in, SLOTS)]; }

/* Convolution parameters go in unclamped: sizes near 2^62 once overflowed
 * op_conv.c's out_size (corpus/fuzz_ops/fuzz_ops-unfold-out-size-overflow). */
static int64_t conv_param(int64_t v) { return v; }

/* FUZZ_TRACE=1 prints each op and its inputs' shapes: to see what a saved
 * crash or timeout input does. */
static void trace(const char *what, ff_tensor *const *ts, int n)
{
    static int on = -1;
    if (on < 0)
        on = getenv("FUZZ_TRACE") != NULL;
    if (!on)
        return;
    fprintf(stderr, "%s", what);
    for (int k = 0; k < n; k++) {
        char b[FF_SHAPE_STRLEN];
        fprintf(stderr, " %s", ts[k] ? ff_shape_str(ts[k]->shape, ts[k]->ndim, b, sizeof b) : "-");
    }
    fputc('\n', stderr);
}

/* ---- commands ---- */

static void cmd_create(fz_in *in, int s)
{
    int ndim = (int)fz_below(in, 5);
    int64_t shape[FF_MAX_DIMS + 1] = {0};
    if (fz_below(in, 16) == 0) {
        /* Hostile sizes: negative, overflowing or a bad rank must be refused
         * (a genuine multi-gigabyte request is not a bug: skipped). */
        if (fz_below(in, 2))
            ndim = (int)fz_small(in);
        int nd = ndim < 0 ? 0 : ndim > FF_MAX_DIMS ? FF_MAX_DIMS + 1 : ndim;
        bool bad = nd != ndim || nd > FF_MAX_DIMS, overflow = false;
        int64_t numel = 1;
        for (int i = 0; i < nd; i++) {
            shape[i] = fz_small(in);
            bad = bad || shape[i] < 0;
            /* As ff_shape_check: the product of the non-zero sizes (the
             * largest stride) must stay within 2^60. */
            overflow = overflow || (shape[i] > 0 &&
                                    (__builtin_mul_overflow(numel, shape[i], &numel) ||
                                     numel > ((int64_t)1 << 60)));
        }
        if (!bad && !overflow)
            return;
        fz_clear_error();
        ff_tensor *t = ff_tensor_zeros(shape, ndim);
        if (t) {
            fprintf(stderr, "fuzz: a tensor of an invalid shape was created\n");
            abort();
        }
        fz_check_failed("ff_tensor_zeros (bad shape)");
        return;
    }
    for (int i = 0; i < ndim; i++)
        shape[i] = (int64_t)fz_below(in, 5);
    ff_tensor *t = ff_tensor_empty(shape, ndim);
    if (!t) {
        fz_check_failed("ff_tensor_empty");
        return;
    }
    float *d = ff_tensor_data(t);
    unsigned mode = fz_below(in, 4);
    ff_rng g;
    ff_rng_seed(&g, fz_byte(in));
    for (int64_t i = 0; i < ff_tensor_numel(t); i++) {
        switch (mode) {
        case 0: d[i] = (float)(ff_rng_uniform(&g) * 4 - 2); break;
        case 1: d[i] = (float)(i % 7) - 1; break;           /* index-like */
        case 2: d[i] = (float)fz_float(in); break;          /* specials */
        default: d[i] = (float)(int)ff_rng_below(&g, 4); break; /* labels */
        }
    }
    if (fz_below(in, 2))
        ff_tensor_set_requires_grad(t, true);
    put(s, t, "create");
}

static void cmd_view(fz_in *in, int s)
{
    ff_tensor *t = pick(in);
    if (!t)
        return;
    fz_clear_error();
    int64_t shape[FF_MAX_DIMS];
    int n;
    switch (fz_below(in, 11)) {
    case 0:
        put(s, ff_tensor_narrow(t, (int)fz_small(in), fz_small(in), fz_small(in)), "narrow");
        break;
    case 1: put(s, ff_tensor_select(t, (int)fz_small(in), fz_small(in)), "select"); break;
    case 2: put(s, ff_tensor_transpose(t, (int)fz_small(in), (int)fz_small(in)), "transpose"); break;
    case 3: {
        int perm[FF_MAX_DIMS];
        n = (int)fz_below(in, 6);
        for (int i = 0; i < n; i++)
            perm[i] = (int)fz_small(in);
        put(s, ff_tensor_permute(t, perm, n), "permute");
        break;
    }
    case 4: case 5: case 6:
        n = (int)fz_below(in, 5);
        for (int i = 0; i < n; i++)
            shape[i] = fz_small(in);
        put(s,
            (n = fz_below(in, 3)) == 0   ? ff_tensor_view(t, shape, n)
            : n == 1                     ? ff_tensor_reshape(t, shape, n)
                                         : ff_tensor_expand(t, shape, n),
            "view/reshape/expand");
        break;
    case 7: put(s, ff_tensor_squeeze(t, (int)fz_small(in)), "squeeze"); break;
    case 8: put(s, ff_tensor_unsqueeze(t, (int)fz_small(in)), "unsqueeze"); break;
    case 9: put(s, ff_tensor_contiguous(t), "contiguous"); break;
    default: put(s, ff_tensor_detach(t), "detach"); break;
    }
}

/* In-place writes: they bump versions, so a later backward over a saved
 * tensor must notice. */
static void cmd_inplace(fz_in *in)
{
    ff_tensor *a = pick(in), *b = pick(in);
    if (!a)
        return;
    fz_clear_error();
    switch (fz_below(in, 8)) {
    case 0: status(ff_tensor_fill_(a, (float)fz_float(in)), "fill_"); break;
    case 1: if (b) status(ff_tensor_copy_(a, b), "copy_"); break;
    case 2: if (b) status(ff_binary_((ff_binop)fz_below(in, FF_BINOP_COUNT), a, b), "binary_"); break;
    case 3: status(ff_unary_((ff_unop)fz_below(in, FF_UNOP_COUNT), a), "unary_"); break;
    case 4: status(ff_clamp_(a, (float)fz_float(in), (float)fz_float(in)), "clamp_"); break;
    case 5: {
        ff_tensor *idx = pick(in);
        if (b && idx)
            status(fz_below(in, 2) ? ff_scatter_(a, (int)fz_small(in), idx, b)
                                   : ff_scatter_add_(a, (int)fz_small(in), idx, b),
                   "scatter_");
        break;
    }
    case 6: {
        ff_tensor *idx = pick(in);
        if (b && idx)
            status(ff_index_add_(a, (int)fz_small(in), idx, b), "index_add_");
        break;
    }
    default: {
        ff_tensor *c = pick(in);
        if (b && c)
            status(ff_addmm_(a, (float)fz_float(in), (float)fz_float(in), b, c), "addmm_");
        break;
    }
    }
}

/* Kernels called directly (no autograd). */
static void cmd_kernel(fz_in *in, int s)
{
    ff_tensor *a = pick(in), *b = pick(in);
    if (!a)
        return;
    trace("kernel", (ff_tensor *[]){a, b}, 2);
    fz_clear_error();
    int dim = (int)fz_small(in);
    bool keep = fz_below(in, 2);
    switch (fz_below(in, 14)) {
    case 0: if (b) put(s, ff_binary((ff_binop)fz_below(in, FF_BINOP_COUNT), a, b), "binary"); break;
    case 1: put(s, ff_unary((ff_unop)fz_below(in, FF_UNOP_COUNT), a), "unary"); break;
    case 2: put(s, ff_sum(a, dim, keep), "sum"); break;
    case 3: put(s, ff_mean(a, dim, keep), "mean"); break;
    case 4: {
        ff_tensor *ix = NULL;
        ff_tensor *r = fz_below(in, 2) ? ff_max(a, dim, keep, &ix) : ff_min(a, dim, keep, &ix);
        if (ix)
            check_tensor(ix, "max indices");
        ff_tensor_release(ix);
        put(s, r, "max/min");
        break;
    }
    case 5: put(s, fz_below(in, 2) ? ff_argmax(a, dim, keep) : ff_argmin(a, dim, keep), "argmax"); break;
    case 6: put(s, ff_var(a, dim, fz_below(in, 2), keep), "var"); break;
    case 7: put(s, ff_norm(a, fz_float(in), dim, keep), "norm"); break;
    case 8: if (b) put(s, ff_matmul(a, b), "matmul"); break;
    case 9: case 10: {
        ff_tensor *ts[3] = {a, b, pick(in)};
        int n = (int)fz_below(in, 4);
        bool ok = true;
        for (int i = 0; i < n; i++)
            ok = ok && ts[i];
        if (ok)
            put(s, fz_below(in, 2) ? ff_cat(ts, n, dim) : ff_stack(ts, n, dim), "cat/stack");
        break;
    }
    case 11: if (b) put(s, fz_below(in, 2) ? ff_index_select(a, dim, b) : ff_gather(a, dim, b), "index"); break;
    case 12: {
        int64_t k[2] = {fz_small(in), fz_small(in)}, st[2] = {fz_small(in), fz_small(in)};
        int64_t pd[2] = {fz_small(in), fz_small(in)}, dl[2] = {fz_small(in), fz_small(in)};
        for (int q = 0; q < 2; q++)
            k[q] = conv_param(k[q]), st[q] = conv_param(st[q]), pd[q] = conv_param(pd[q]),
            dl[q] = conv_param(dl[q]);
        put(s, ff_unfold(a, k, st, pd, dl), "unfold");
        break;
    }
    default: put(s, ff_clamp(a, (float)fz_float(in), (float)fz_float(in)), "clamp"); break;
    }
}

/* Any op of the table through ff_apply, with random parameters. */
static void cmd_apply(fz_in *in, int s)
{
    ff_opcode op = (ff_opcode)fz_below(in, FF_OP_COUNT);
    int arity = ff_ops[op].arity;
    int n = arity >= 0 ? arity : 1 + (int)fz_below(in, 3);
    if (fz_below(in, 32) == 0)
        n = (int)fz_small(in) & 7; /* a wrong count must be refused */
    ff_tensor *inputs[8] = {0};
    for (int k = 0; k < n; k++)
        inputs[k] = fz_below(in, 8) ? pick(in) : NULL; /* NULL: an omitted input */
    if (n > 0 && !inputs[0])
        inputs[0] = slot[0];
    ff_params p;
    memset(&p, 0, sizeof p);
    p.ni = (int)fz_below(in, 9);
    int nint = (int)fz_below(in, 7);
    for (int k = 0; k < nint; k++)
        p.i[k] = op == FF_OP_CONV2D ? conv_param(fz_small(in)) : fz_small(in);
    for (int k = 0; k < 4; k++)
        p.f[k] = fz_below(in, 2) ? fz_float(in) : 0.0;
    if (fz_below(in, 2))
        p.f[1] = 1e-5; /* epsilons: the usual value, so norm layers get past their checks */
    for (int k = 0; k < 3; k++)
        p.aux[k] = fz_below(in, 3) ? NULL : pick(in);
    ff_tensor *extra = NULL;
    fz_clear_error();
    /* inputs[] may hold NULL for a required input: ff_apply must refuse. */
    bool any_null = false;
    for (int k = 0; k < n; k++)
        any_null = any_null || !inputs[k];
    if (getenv("FUZZ_TRACE"))
        fprintf(stderr, "  i = %lld %lld %lld %lld, ni %d, f0 %g\n", (long long)p.i[0],
                (long long)p.i[1], (long long)p.i[2], (long long)p.i[3], p.ni, p.f[0]);
    trace(ff_ops[op].name, inputs, n);
    ff_tensor *r = ff_apply(op, inputs, n, &p, fz_below(in, 2) ? &extra : NULL);
    if (extra)
        check_tensor(extra, "apply extra");
    ff_tensor_release(extra);
    (void)any_null;
    put(s, r, ff_ops[op].name);
}

static void cmd_backward(fz_in *in)
{
    ff_tensor *root = pick(in);
    if (!root)
        return;
    ff_tensor *g = NULL;
    switch (fz_below(in, 3)) {
    case 0: break;
    case 1: g = ff_tensor_ones(root->shape, root->ndim); break;
    default: g = ff_tensor_retain(pick(in)); break; /* maybe the wrong shape */
    }
    fz_clear_error();
    status(ff_backward(root, g, fz_below(in, 2)), "backward");
    ff_tensor_release(g);
    check_grads();
}

/* Gradient hooks: keep the gradient, replace it, replace it with the wrong
 * shape (must be refused), or fail. */
static ff_status hook(void *ctx, const ff_tensor *grad, ff_tensor **replacement)
{
    switch ((intptr_t)ctx) {
    case 1: *replacement = ff_tensor_zeros(grad->shape, grad->ndim); return FF_OK;
    case 2: *replacement = ff_tensor_scalar(1); return FF_OK;
    case 3: return ff_error(FF_ERR_STATE, "fuzz: hook fails on purpose");
    default: return FF_OK;
    }
}

static void cmd_hook(fz_in *in)
{
    ff_tensor *t = pick(in);
    if (!t)
        return;
    fz_clear_error();
    status(ff_tensor_register_hook(t, hook, (void *)(intptr_t)fz_below(in, 4), NULL), "hook");
}

static void release_all(void)
{
    for (int s = 0; s < SLOTS; s++) {
        ff_tensor_release(slot[s]);
        slot[s] = NULL;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_in in = {data, size};
    /* a huge but legitimate result is an error here, not a malloc past
     * libFuzzer's -malloc_limit_mb */
    ff_mem_set_limit((size_t)512 << 20);
    size_t live = ff_mem_live_bytes();
    ff_rng_seed(ff_rng_default(), 1); /* dropout: a reproducible stream */
    bool grad_mode = ff_set_grad_enabled(true);
    for (int step = 0; step < MAX_STEPS && in.n > 0; step++) {
        int s = (int)fz_below(&in, SLOTS);
        switch (fz_below(&in, 16)) {
        case 0: case 1: case 2: cmd_create(&in, s); break;
        case 3: case 4: cmd_view(&in, s); break;
        case 5: cmd_inplace(&in); break;
        case 6: case 7: cmd_kernel(&in, s); break;
        case 8: case 9: case 10: case 11: cmd_apply(&in, s); break;
        case 12: case 13: cmd_backward(&in); break;
        case 14: cmd_hook(&in); break;
        default:
            if (fz_below(&in, 2)) {
                ff_tensor_release(slot[s]);
                slot[s] = NULL;
            } else {
                ff_set_grad_enabled(!ff_grad_enabled());
            }
            break;
        }
    }
    release_all();
    ff_set_grad_enabled(grad_mode);
    fz_check_live(live, "the program");
    return 0;
}
