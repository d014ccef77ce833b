/*
 * backward.c: the backward pass. Nodes reachable from the root are found
 * with an explicit stack (never recursion: graphs of 10^5 ops are normal in
 * a long REPL session), counted by incoming edges, then processed in Kahn
 * order so each node runs once, with its gradient complete.
 */
#include <stdlib.h>
#include "ff_autograd.h"
#include "ff_ops.h"
#include "profile.h"

/* A growable array of nodes. */
typedef struct {
    ff_node **v;
    size_t len, cap;
} node_list;

static ff_status list_push(node_list *l, ff_node *n)
{
    if (l->len == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        ff_node **v = realloc(l->v, cap * sizeof *v);
        if (!v)
            return ff_error(FF_ERR_MEM, "backward: out of memory walking the graph");
        l->v = v, l->cap = cap;
    }
    l->v[l->len++] = n;
    return FF_OK;
}

static uint64_t epoch_counter;

/* Every node reachable from root, each once, with pending = its number of
 * incoming edges from reachable nodes. */
static ff_status collect(ff_node *root, node_list *all)
{
    uint64_t epoch = ++epoch_counter;
    node_list stack = {0};
    root->epoch = epoch;
    root->pending = 0;
    ff_status st = list_push(&stack, root);
    while (st == FF_OK && stack.len > 0) {
        ff_node *n = stack.v[--stack.len];
        st = list_push(all, n);
        for (int k = 0; k < n->ctx.n_in && st == FF_OK; k++) {
            ff_node *m = n->next[k].node;
            if (!m)
                continue;
            if (m->epoch != epoch) {
                m->epoch = epoch;
                m->pending = 0;
                st = list_push(&stack, m);
            }
            m->pending++;
        }
    }
    free(stack.v);
    return st;
}

/* Hooks may replace the gradient; *g is updated in place. */
static ff_status run_hooks(ff_hook *h, ff_tensor **g)
{
    for (; h; h = h->next) {
        ff_tensor *repl = NULL;
        ff_status st = h->fn(h->ctx, *g, &repl);
        if (st != FF_OK) {
            ff_tensor_release(repl);
            return st;
        }
        if (repl) {
            if (!ff_shape_equal(repl, *g)) {
                char a[FF_SHAPE_STRLEN], b[FF_SHAPE_STRLEN];
                ff_error(FF_ERR_SHAPE, "hook: returned a gradient of shape %s, expected %s",
                         ff_shape_str(repl->shape, repl->ndim, a, sizeof a),
                         ff_shape_str((*g)->shape, (*g)->ndim, b, sizeof b));
                ff_tensor_release(repl);
                return FF_ERR_SHAPE;
            }
            ff_tensor_release(*g);
            *g = repl;
        }
    }
    return FF_OK;
}

/* t->grad += g. The first time, t->grad takes g itself when nothing else
 * can see it (its only reference is the caller's `owned` one and its storage
 * is its own): later accumulation writes into it in place, so a gradient
 * still shared with another input's (add returns one tensor for both) or
 * viewing another tensor's storage is copied instead. */
static ff_status accumulate_into(ff_tensor *t, ff_tensor *g, int owned)
{
    if (!t->grad) {
        bool exclusive = g->refcount == owned && g->storage->refcount == 1 &&
                         ff_tensor_is_contiguous(g) && !g->grad_fn && !g->requires_grad;
        t->grad = exclusive ? ff_tensor_retain(g) : ff_tensor_clone(g);
        return t->grad ? FF_OK : ff_last_status();
    }
    return ff_binary_(FF_ADD, t->grad, g);
}

/* g: one reference held by the caller (the input-gradient array). */
static ff_status leaf_receive(ff_tensor *leaf, ff_tensor *g)
{
    ff_tensor *given = ff_tensor_retain(g);
    ff_status st = run_hooks(leaf->hooks, &g);
    /* references we know of: ours, and the caller's unless a hook replaced g */
    if (st == FF_OK)
        st = accumulate_into(leaf, g, g == given ? 2 : 1);
    ff_tensor_release(g);
    return st;
}

/* A node's gradient arrives from one consumer; sum when several. */
static ff_status node_receive(ff_node *n, ff_tensor *g)
{
    if (!n->grad) {
        n->grad = ff_tensor_retain(g);
        return FF_OK;
    }
    ff_tensor *sum = ff_binary(FF_ADD, n->grad, g);
    if (!sum)
        return ff_last_status();
    ff_tensor_release(n->grad);
    n->grad = sum;
    return FF_OK;
}

static ff_status check_input_grad(const ff_node *n, int k, const ff_tensor *g)
{
    const ff_shape *s = &n->ctx.in_shape[k];
    const char *name = ff_ops[n->ctx.op].name;
    if (!g)
        return ff_error(FF_ERR_STATE, "backward of %s: no gradient for input %d", name, k + 1);
    bool same = g->ndim == s->ndim;
    for (int d = 0; same && d < s->ndim; d++)
        same = g->shape[d] == s->size[d];
    if (!same) {
        char a[FF_SHAPE_STRLEN], b[FF_SHAPE_STRLEN];
        return ff_error(FF_ERR_SHAPE, "backward of %s: gradient of input %d has shape %s, expected %s",
                        name, k + 1, ff_shape_str(g->shape, g->ndim, a, sizeof a),
                        ff_shape_str(s->size, s->ndim, b, sizeof b));
    }
    return FF_OK;
}

/* Run one node: hooks and retain_grad on its result's gradient, its
 * backward, then hand each input gradient along its edge. Ready inputs are
 * pushed on `ready`. */
static ff_status process(ff_node *n, bool retain_graph, node_list *ready)
{
    ff_tensor *g = n->grad;
    n->grad = NULL;
    ff_status st = run_hooks(n->hooks, &g);
    if (st == FF_OK && n->out && n->out->retains_grad)
        st = accumulate_into(n->out, g, 0); /* g goes on to the backward: always copy */
    if (st == FF_OK && n->released)
        st = ff_error(FF_ERR_STATE,
                      "backward: the graph through %s was freed by an earlier backward; "
                      "pass retain_graph = true to the first one",
                      ff_ops[n->ctx.op].name);
    int n_in = n->ctx.n_in;
    ff_tensor *stack_gin[4] = {NULL}, **gin = stack_gin;
    if (st == FF_OK && n_in > 4 && !(gin = calloc((size_t)n_in, sizeof *gin)))
        st = ff_error(FF_ERR_MEM, "backward: out of memory");
    if (st == FF_OK) {
        double t0 = prof_begin();
        st = ff_ops[n->ctx.op].backward(&n->ctx, g, gin);
        prof_end(n->ctx.op, 1, t0);
    }
    for (int k = 0; k < n_in && st == FF_OK; k++) {
        if (!n->ctx.needs_grad[k])
            continue;
        st = check_input_grad(n, k, gin[k]);
        if (st != FF_OK)
            break;
        if (n->next[k].leaf) {
            st = leaf_receive(n->next[k].leaf, gin[k]);
        } else if (n->next[k].node) {
            ff_node *m = n->next[k].node;
            st = node_receive(m, gin[k]);
            if (st == FF_OK && --m->pending == 0)
                st = list_push(ready, m);
        }
    }
    if (gin)
        for (int k = 0; k < n_in; k++)
            ff_tensor_release(gin[k]);
    if (gin != stack_gin)
        free(gin);
    ff_tensor_release(g);
    if (st == FF_OK && !retain_graph) {
        for (int k = 0; k < n->ctx.n_saved; k++)
            ff_tensor_release(n->ctx.saved[k].t);
        n->ctx.n_saved = 0;
        n->released = true;
    }
    return st;
}

static ff_tensor *initial_grad(const ff_tensor *root, const ff_tensor *grad)
{
    char a[FF_SHAPE_STRLEN], b[FF_SHAPE_STRLEN];
    if (!grad) {
        if (ff_tensor_numel(root) != 1) {
            ff_error(FF_ERR_SHAPE,
                     "backward: an implicit gradient needs a one-element result, got shape %s; "
                     "pass a gradient of that shape",
                     ff_shape_str(root->shape, root->ndim, a, sizeof a));
            return NULL;
        }
        return ff_tensor_ones(root->shape, root->ndim);
    }
    if (!ff_shape_equal(root, grad)) {
        ff_error(FF_ERR_SHAPE, "backward: gradient has shape %s, expected %s (the result's shape)",
                 ff_shape_str(grad->shape, grad->ndim, a, sizeof a),
                 ff_shape_str(root->shape, root->ndim, b, sizeof b));
        return NULL;
    }
    return ff_tensor_clone(grad);
}

ff_status ff_backward(ff_tensor *root, const ff_tensor *grad, bool retain_graph)
{
    if (!root->requires_grad)
        return ff_error(FF_ERR_STATE,
                        "backward: the tensor does not require grad (nothing it was computed from "
                        "has requires_grad set)");
    ff_tensor *g0 = initial_grad(root, grad);
    if (!g0)
        return ff_last_status();
    if (!root->grad_fn) { /* a leaf: its own gradient */
        ff_status st = leaf_receive(root, g0);
        ff_tensor_release(g0);
        return st;
    }
    node_list all = {0}, ready = {0};
    ff_node *rootn = root->grad_fn;
    ff_status st = collect(rootn, &all);
    rootn->grad = g0;
    if (st == FF_OK)
        st = list_push(&ready, rootn);
    while (st == FF_OK && ready.len > 0)
        st = process(ready.v[--ready.len], retain_graph, &ready);
    /* After a failure, drop the partial gradients so the next pass starts
     * clean. */
    for (size_t i = 0; i < all.len; i++) {
        ff_tensor_release(all.v[i]->grad);
        all.v[i]->grad = NULL;
        all.v[i]->pending = 0;
    }
    if (all.len == 0) { /* collect failed before listing the root */
        ff_tensor_release(rootn->grad);
        rootn->grad = NULL;
    }
    free(all.v);
    free(ready.v);
    return st;
}
