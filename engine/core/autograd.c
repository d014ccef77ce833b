/*
 * autograd.c: recording ops (ff_apply), the graph's lifetime, and the
 * backward pass. The derivative rules live with their ops (op_*.c); this
 * file only moves gradients along edges.
 */
#include <stdlib.h>
#include <string.h>
#include "ff_autograd.h"
#include "ff_ops.h"
#include "profile.h"

static _Thread_local bool grad_disabled;

bool ff_grad_enabled(void) { return !grad_disabled; }

bool ff_set_grad_enabled(bool on)
{
    bool was = !grad_disabled;
    grad_disabled = !on;
    return was;
}

void ff_shape_of(const ff_tensor *t, ff_shape *s)
{
    s->ndim = t->ndim;
    memcpy(s->size, t->shape, sizeof s->size);
}

/* ---- hooks ---- */

static void hooks_free(ff_hook *h)
{
    while (h) {
        ff_hook *next = h->next;
        if (h->free_ctx)
            h->free_ctx(h->ctx);
        free(h);
        h = next;
    }
}

/* Appended, so hooks run in registration order. */
static ff_status hook_append(ff_hook **list, ff_hook_fn fn, void *ctx, void (*free_ctx)(void *))
{
    ff_hook *h = malloc(sizeof *h);
    if (!h)
        return ff_error(FF_ERR_MEM, "register_hook: out of memory");
    *h = (ff_hook){fn, ctx, free_ctx, NULL};
    while (*list)
        list = &(*list)->next;
    *list = h;
    return FF_OK;
}

ff_status ff_tensor_register_hook(ff_tensor *t, ff_hook_fn fn, void *ctx,
                                  void (*free_ctx)(void *))
{
    if (!t->requires_grad)
        return ff_error(FF_ERR_STATE,
                        "register_hook: the tensor does not require grad, so no gradient reaches it");
    /* A non-leaf's hooks live on its node: the gradient arrives there. */
    return hook_append(t->grad_fn ? &t->grad_fn->hooks : &t->hooks, fn, ctx, free_ctx);
}

void ff_tensor_free_autograd(ff_tensor *t);
void ff_tensor_free_autograd(ff_tensor *t)
{
    if (t->grad_fn && t->grad_fn->out == t)
        t->grad_fn->out = NULL;
    ff_node_release(t->grad_fn);
    ff_tensor_release(t->grad);
    hooks_free(t->hooks);
}

/* ---- nodes ---- */

static void ctx_release_saved(ff_ctx *ctx)
{
    for (int k = 0; k < ctx->n_saved; k++)
        ff_tensor_release(ctx->saved[k].t);
    ctx->n_saved = 0;
    ff_tensor_release(ctx->extra);
    ctx->extra = NULL;
}

static ff_node *node_new(ff_opcode op, int n, const ff_params *p)
{
    /* one block: the node, then its per-input arrays */
    size_t size = sizeof(ff_node) + (size_t)n * (sizeof(ff_edge) + sizeof(ff_shape) + sizeof(bool));
    ff_node *node = calloc(1, size);
    if (!node) {
        ff_error(FF_ERR_MEM, "%s: out of memory recording the op", ff_ops[op].name);
        return NULL;
    }
    node->refcount = 1;
    node->next = (ff_edge *)(node + 1);
    node->ctx.in_shape = (ff_shape *)(node->next + n);
    node->ctx.needs_grad = (bool *)(node->ctx.in_shape + n);
    node->ctx.op = op;
    node->ctx.n_in = n;
    if (p)
        node->ctx.p = *p;
    return node;
}

/* Releasing the last reference to a node releases its input nodes, which
 * may release theirs: a chain as long as a training run. A worklist keeps
 * the C stack flat. */
void ff_node_release(ff_node *n)
{
    if (!n || --n->refcount > 0)
        return;
    size_t cap = 16, len = 0;
    ff_node **work = malloc(cap * sizeof *work), *inline_one[1];
    if (!work) { /* fall back to one at a time (still correct, just recursive) */
        work = inline_one;
        cap = 1;
    }
    work[len++] = n;
    while (len > 0) {
        ff_node *cur = work[--len];
        for (int k = 0; k < cur->ctx.n_in; k++) {
            ff_tensor_release(cur->next[k].leaf);
            ff_node *in = cur->next[k].node;
            if (in && --in->refcount == 0) {
                if (len == cap && work != inline_one) {
                    ff_node **grown = realloc(work, 2 * cap * sizeof *work);
                    if (grown)
                        work = grown, cap *= 2;
                }
                if (len < cap)
                    work[len++] = in;
                else { /* no memory to defer: release now */
                    in->refcount = 1;
                    ff_node_release(in);
                }
            }
        }
        ctx_release_saved(&cur->ctx);
        ff_tensor_release(cur->grad);
        hooks_free(cur->hooks);
        if (cur->out)
            cur->out->grad_fn = NULL; /* cannot happen while out holds us; defensive */
        free(cur);
    }
    if (work != inline_one)
        free(work);
}

/* ---- saving for backward ---- */

void ff_ctx_save(ff_ctx *ctx, const ff_tensor *t)
{
    if (!ctx->recording || !t)
        return;
    /* Callers stay within FF_MAX_SAVED; an overflow is a bug in an op. */
    if (ctx->n_saved >= FF_MAX_SAVED)
        return;
    ff_tensor *h = ff_tensor_detach((ff_tensor *)t);
    ctx->saved[ctx->n_saved].t = h; /* NULL on OOM: reported by ff_ctx_saved */
    ctx->saved[ctx->n_saved].version = t->storage->version;
    ctx->n_saved++;
}

ff_status ff_ctx_saved(const ff_ctx *ctx, int k, ff_tensor **out)
{
    const char *name = ff_ops[ctx->op].name;
    if (k < 0 || k >= ctx->n_saved || !ctx->saved[k].t)
        return ff_error(FF_ERR_STATE,
                        "backward of %s: saved tensor %d is missing (graph already freed? use retain_graph)",
                        name, k + 1);
    const ff_saved *s = &ctx->saved[k];
    if (s->t->storage->version != s->version)
        return ff_error(FF_ERR_STATE,
                        "backward of %s: a tensor it saved was modified in place after the op ran; "
                        "compute on a clone() instead",
                        name);
    *out = s->t;
    return FF_OK;
}

/* ---- running ops ---- */

static bool needs_recording(ff_tensor *const *in, int n)
{
    if (grad_disabled)
        return false;
    for (int k = 0; k < n; k++)
        if (in[k] && in[k]->requires_grad)
            return true;
    return false;
}

/* Which inputs an op may be given as NULL (an omitted bias, weight, scale
 * or shift); every other input is required. Checked here, once, because the
 * forwards dereference their required inputs unchecked (fuzz_ops found
 * bce_with_logits doing so with a NULL target). */
static bool input_optional(ff_opcode op, int k)
{
    switch (op) {
    case FF_OP_LINEAR:
    case FF_OP_CONV2D:
        return k == 2;
    case FF_OP_BATCH_NORM:
    case FF_OP_LAYER_NORM:
        return k >= 1;
    case FF_OP_SPLIT_ACT:
        return true; /* it checks z and s itself, naming them */
    default:
        return false;
    }
}

ff_tensor *ff_apply(ff_opcode op, ff_tensor *const *in, int n, const ff_params *p,
                    ff_tensor **extra)
{
    if (extra)
        *extra = NULL;
    if ((unsigned)op >= FF_OP_COUNT)
        return ff_error(FF_ERR_ARG, "apply: unknown op %d", (int)op), NULL;
    const ff_opdef *def = &ff_ops[op];
    if (def->arity >= 0 ? n != def->arity : n < 1)
        return ff_error(FF_ERR_ARG, "%s: expected %d inputs, got %d", def->name, def->arity, n),
               NULL;
    for (int k = 0; k < n; k++)
        if (!in[k] && !input_optional(op, k))
            return ff_error(FF_ERR_ARG, "%s: input %d is missing", def->name, k + 1), NULL;
    ff_node *node = node_new(op, n, p);
    if (!node)
        return NULL;
    ff_ctx *ctx = &node->ctx;
    ctx->recording = needs_recording(in, n);
    for (int k = 0; k < n; k++) {
        if (in[k])
            ff_shape_of(in[k], &ctx->in_shape[k]);
        else
            ctx->in_shape[k].ndim = -1;
        ctx->needs_grad[k] = ctx->recording && in[k] && in[k]->requires_grad;
    }
    double t0 = prof_begin();
    ff_tensor *out = def->forward(ctx, in);
    prof_end(op, 0, t0);
    /* aux tensors were borrowed for the forward only */
    memset(ctx->p.aux, 0, sizeof ctx->p.aux);
    ctx->p.rng = NULL;
    if (!out) {
        node->refcount = 1;
        ff_node_release(node);
        return NULL;
    }
    if (extra) {
        *extra = ctx->extra;
        ctx->extra = NULL;
    }
    if (!ctx->recording) {
        ff_node_release(node);
        return out;
    }
    for (int k = 0; k < n; k++) {
        if (!ctx->needs_grad[k])
            continue;
        if (in[k]->grad_fn) {
            node->next[k].node = in[k]->grad_fn;
            in[k]->grad_fn->refcount++;
        } else {
            node->next[k].leaf = ff_tensor_retain(in[k]);
        }
    }
    /* A forward may hand back an input itself (contiguous() of a contiguous
     * tensor); history must go on a header of its own. */
    if (out->refcount > 1 || out->grad_fn || out->requires_grad) {
        ff_tensor *own = ff_tensor_alias(out);
        ff_tensor_release(out);
        if (!own) {
            ff_node_release(node);
            return NULL;
        }
        out = own;
    }
    ff_shape_of(out, &ctx->out_shape);
    out->grad_fn = node;
    out->requires_grad = true;
    node->out = out;
    return out;
}

/* ---- tensors ---- */

ff_status ff_tensor_set_requires_grad(ff_tensor *t, bool on)
{
    if (t->grad_fn)
        return ff_error(FF_ERR_STATE,
                        "requires_grad: only leaf tensors can change it (this one was made by %s); "
                        "use detach()",
                        ff_tensor_grad_fn_name(t));
    t->requires_grad = on;
    return FF_OK;
}

ff_tensor *ff_tensor_detach(ff_tensor *t)
{
    return ff_tensor_alias(t);
}

ff_status ff_tensor_retain_grad(ff_tensor *t)
{
    if (!t->requires_grad)
        return ff_error(FF_ERR_STATE, "retain_grad: the tensor does not require grad");
    t->retains_grad = true; /* a leaf keeps its gradient anyway */
    return FF_OK;
}

void ff_tensor_set_grad(ff_tensor *t, ff_tensor *grad)
{
    ff_tensor_release(t->grad);
    t->grad = grad;
}

const char *ff_tensor_grad_fn_name(const ff_tensor *t)
{
    return t->grad_fn ? ff_ops[t->grad_fn->ctx.op].name : NULL;
}

/* ---- broadcasting adjoint ---- */

ff_tensor *ff_sum_to_shape(const ff_tensor *g, const ff_shape *shape)
{
    ff_tensor *cur = ff_tensor_retain((ff_tensor *)g);
    /* leading dims the input did not have */
    while (cur && cur->ndim > shape->ndim) {
        ff_tensor *next = ff_sum(cur, 0, false);
        ff_tensor_release(cur);
        cur = next;
    }
    /* dims where the input had size 1 */
    for (int d = 0; cur && d < shape->ndim; d++) {
        if (shape->size[d] == 1 && cur->shape[d] != 1) {
            ff_tensor *next = ff_sum(cur, d, true);
            ff_tensor_release(cur);
            cur = next;
        }
    }
    if (cur && !ff_tensor_is_contiguous(cur)) {
        ff_tensor *c = ff_tensor_contiguous(cur);
        ff_tensor_release(cur);
        cur = c;
    }
    return cur;
}
