/*
 * ff_autograd.h: define-by-run reverse-mode autograd and the op table.
 *
 * Every differentiable operation is one entry of a single table (name,
 * arity, forward, backward), generated from FF_OP_LIST below, so an op cannot
 * be added without a backward (the table would not link) and a test walks the
 * table to gradient-check every entry.
 *
 * ff_apply(op, inputs, params) runs the op's forward; when grad mode is on
 * and an input requires a gradient it also records a node on the result:
 * the op, copies of its parameters, the tensors its backward needs (saved
 * with the version of their storage) and one edge per input (the input's
 * own node, or the input itself when it is a leaf). The graph therefore
 * follows tensor lifetimes: a result keeps its history alive, and dropping
 * the result frees it (iteratively: a 100,000-op chain is fine).
 *
 * ff_backward walks the graph in topological order (iteratively), calling
 * each op's backward with the gradient of its output and accumulating input
 * gradients; leaves accumulate into t->grad. Saved tensors are freed after
 * backward unless retain_graph is set.
 *
 * Rules:
 *  - Kernels (ff_binary, ff_sum, ...) never record; backward functions are
 *    written with kernels. There are no higher-order gradients.
 *  - Every in-place kernel bumps its storage's version; a backward that
 *    finds a saved tensor modified since it was saved fails with an error
 *    rather than returning a wrong gradient.
 *  - Optional inputs (a missing bias) are NULL entries of the input array.
 */
#ifndef FF_AUTOGRAD_H
#define FF_AUTOGRAD_H

#include "ff_tensor.h"
#include "ff_rng.h"

/*
 * The op table. X(ID, name, arity): arity -1 is variadic (cat, stack);
 * optional inputs count in the arity and may be NULL. The meaning of each
 * op's ff_params is documented beside its forward, in engine/core/op_*.c.
 */
#define FF_OP_LIST(X)                                                              \
    /* op_arith.c: broadcasting arithmetic and elementwise math */                 \
    X(ADD, add, 2) X(SUB, sub, 2) X(MUL, mul, 2) X(DIV, div, 2) X(POW, pow, 2)     \
    X(MAXIMUM, maximum, 2) X(MINIMUM, minimum, 2) X(NEG, neg, 1) X(EXP, exp, 1)    \
    X(LOG, log, 1) X(SQRT, sqrt, 1) X(ABS, abs, 1) X(CLAMP, clamp, 1)              \
    X(WHERE, where, 2)                                                             \
    /* op_act.c: activations */                                                    \
    X(RELU, relu, 1) X(LEAKY_RELU, leaky_relu, 1) X(ELU, elu, 1) X(GELU, gelu, 1)  \
    X(SILU, silu, 1) X(TANH, tanh, 1) X(SIGMOID, sigmoid, 1)                       \
    X(SOFTPLUS, softplus, 1) X(RBF, rbf, 1)                                        \
    /* op_reduce.c: reductions */                                                  \
    X(SUM, sum, 1) X(MEAN, mean, 1) X(MAX, max, 1) X(MIN, min, 1) X(VAR, var, 1)   \
    X(NORM, norm, 1)                                                               \
    /* op_shape.c: views, joins and indexing */                                    \
    X(RESHAPE, reshape, 1) X(SQUEEZE, squeeze, 1) X(UNSQUEEZE, unsqueeze, 1)       \
    X(TRANSPOSE, transpose, 1) X(PERMUTE, permute, 1) X(NARROW, narrow, 1)         \
    X(SELECT, select, 1) X(EXPAND, expand, 1) X(CONTIGUOUS, contiguous, 1)         \
    X(CAT, cat, -1) X(STACK, stack, -1) X(INDEX_SELECT, index_select, 1)           \
    X(GATHER, gather, 1)                                                           \
    /* op_linalg.c: products */                                                    \
    X(MATMUL, matmul, 2) X(LINEAR, linear, 3)                                      \
    /* op_conv.c and op_pool.c: convolution and pooling (NCHW) */                  \
    X(CONV2D, conv2d, 3) X(MAX_POOL2D, max_pool2d, 1) X(AVG_POOL2D, avg_pool2d, 1) \
    X(ADAPTIVE_AVG_POOL2D, adaptive_avg_pool2d, 1)                                 \
    /* op_norm.c: normalisation */                                                 \
    X(BATCH_NORM, batch_norm, 3) X(LAYER_NORM, layer_norm, 3)                      \
    /* op_loss.c: softmax and losses */                                            \
    X(SOFTMAX, softmax, 1) X(LOG_SOFTMAX, log_softmax, 1)                          \
    X(CROSS_ENTROPY, cross_entropy, 1) X(NLL_LOSS, nll_loss, 1)                    \
    X(MSE_LOSS, mse_loss, 2) X(BCE_WITH_LOGITS, bce_with_logits, 2)                \
    /* op_dropout.c */                                                             \
    X(DROPOUT, dropout, 1)                                                         \
    /* op_grow.c: growth candidates, fused */                                      \
    X(SPLIT_ACT, split_act, 5)

typedef enum {
#define FF_OP_ENUM(ID, name, arity) FF_OP_##ID,
    FF_OP_LIST(FF_OP_ENUM)
#undef FF_OP_ENUM
    FF_OP_COUNT
} ff_opcode;

/* Parameters of one op call; their meaning is per op. */
#define FF_PARAM_INTS 16
typedef struct ff_params {
    int64_t i[FF_PARAM_INTS]; /* dims, sizes, flags */
    int ni;                   /* how many of i[] are used (shapes, dim lists) */
    double f[4];              /* slopes, epsilons, momenta, ... */
    /* Non-differentiable tensors (indices, labels, conditions, running
     * statistics): borrowed during forward only; forward saves what its
     * backward needs. */
    ff_tensor *aux[3];
    ff_rng *rng;              /* random ops; NULL means the default */
} ff_params;

typedef struct ff_shape {
    int ndim;
    int64_t size[FF_MAX_DIMS];
} ff_shape;

#define FF_MAX_SAVED 6

typedef struct ff_saved {
    ff_tensor *t;       /* a header of its own, sharing storage, no history */
    uint64_t version;   /* storage version when saved */
} ff_saved;

/* What forward leaves for backward. */
typedef struct ff_ctx {
    ff_opcode op;
    ff_params p;          /* aux[] and rng are cleared after forward */
    int n_in;
    ff_shape *in_shape;   /* n_in entries; ndim -1 for a NULL input */
    bool *needs_grad;     /* n_in entries: which input gradients to compute */
    bool recording;       /* false: forward need not save anything */
    ff_saved saved[FF_MAX_SAVED];
    int n_saved;
    ff_shape out_shape;
    ff_tensor *extra;     /* optional second, non-differentiable result */
} ff_ctx;

typedef ff_tensor *(*ff_forward_fn)(ff_ctx *ctx, ff_tensor *const *in);
/* Sets gin[k] to a new tensor of in_shape[k] for each k with needs_grad[k]
 * (gin[] arrives all NULL); gout has out_shape. */
typedef ff_status (*ff_backward_fn)(ff_ctx *ctx, const ff_tensor *gout, ff_tensor **gin);

typedef struct ff_opdef {
    const char *name;
    int arity;
    ff_forward_fn forward;
    ff_backward_fn backward;
} ff_opdef;

extern const ff_opdef ff_ops[FF_OP_COUNT];

/* Forward and backward of every op, defined in engine/core/op_*.c. */
#define FF_OP_DECL(ID, name, arity)                                       \
    ff_tensor *ff_fwd_##name(ff_ctx *ctx, ff_tensor *const *in);          \
    ff_status ff_bwd_##name(ff_ctx *ctx, const ff_tensor *gout, ff_tensor **gin);
FF_OP_LIST(FF_OP_DECL)
#undef FF_OP_DECL

/* ---- running ops ---- */

/* Run op on n inputs (entries may be NULL for optional inputs). Returns the
 * result (a new reference) and, when extra is not NULL, the op's second
 * result (e.g. max's indices) or NULL. Records a node when grad mode is on
 * and some input requires a gradient. */
ff_tensor *ff_apply(ff_opcode op, ff_tensor *const *in, int n, const ff_params *p,
                    ff_tensor **extra);

/* Save t for backward (a no-op unless recording). Saved tensors are read
 * back with ff_ctx_saved, which fails if t was modified in place since. */
void ff_ctx_save(ff_ctx *ctx, const ff_tensor *t);
ff_status ff_ctx_saved(const ff_ctx *ctx, int k, ff_tensor **out); /* borrowed */

/* The gradient g of a broadcast result, summed back to `shape` (the
 * adjoint of broadcasting). New reference. */
ff_tensor *ff_sum_to_shape(const ff_tensor *g, const ff_shape *shape);
void ff_shape_of(const ff_tensor *t, ff_shape *s);

/* ---- grad mode ---- */
bool ff_grad_enabled(void);
bool ff_set_grad_enabled(bool on); /* returns the previous mode */

/* ---- tensors and gradients ---- */

/* Only leaves (tensors no op produced) may change requires_grad. */
ff_status ff_tensor_set_requires_grad(ff_tensor *t, bool on);
static inline bool ff_tensor_requires_grad(const ff_tensor *t) { return t->requires_grad; }
static inline bool ff_tensor_is_leaf(const ff_tensor *t) { return t->grad_fn == NULL; }
/* A new header on the same storage, with no history. */
ff_tensor *ff_tensor_detach(ff_tensor *t);
/* Keep the gradient of a non-leaf in t->grad during backward. */
ff_status ff_tensor_retain_grad(ff_tensor *t);
/* The accumulated gradient (borrowed; NULL if none) and its reset. */
static inline ff_tensor *ff_tensor_grad(const ff_tensor *t) { return t->grad; }
void ff_tensor_set_grad(ff_tensor *t, ff_tensor *grad); /* takes a reference; NULL clears */
/* The name of the op that produced t, or NULL for a leaf. */
const char *ff_tensor_grad_fn_name(const ff_tensor *t);

/*
 * Gradient hooks: fn(ctx, grad, &replacement) runs when t's gradient is
 * complete in a backward pass, before it is accumulated or propagated; it
 * may set *replacement to a new tensor of grad's shape to replace it. A
 * failing hook aborts the backward pass with its status. free_ctx (may be
 * NULL) runs when the hook is dropped with its tensor or node.
 */
typedef ff_status (*ff_hook_fn)(void *ctx, const ff_tensor *grad, ff_tensor **replacement);
ff_status ff_tensor_register_hook(ff_tensor *t, ff_hook_fn fn, void *ctx,
                                  void (*free_ctx)(void *));

/* Backpropagate from root. grad NULL means 1 for a one-element root (an
 * error otherwise); else grad must have root's shape. */
ff_status ff_backward(ff_tensor *root, const ff_tensor *grad, bool retain_graph);

/* ---- op profile ----
 * While on, every op's forward (in ff_apply) and backward (in ff_backward)
 * adds its wall time and one call to that op's counters; off, the cost is
 * one branch per op. The counters are process-wide and, like the rest of
 * the API, not meant to be driven from several threads at once. */
typedef struct {
    int64_t calls[2];  /* [0] forward, [1] backward */
    double seconds[2];
} ff_profile_entry;

void ff_profile_set(bool on); /* counters keep running totals: see reset */
bool ff_profile_is_on(void);
void ff_profile_reset(void);
const ff_profile_entry *ff_profile_entries(void); /* FF_OP_COUNT entries, by opcode */

/* ---- the node (internal to the engine; exposed for tests) ---- */
typedef struct ff_hook {
    ff_hook_fn fn;
    void *ctx;
    void (*free_ctx)(void *);
    struct ff_hook *next;
} ff_hook;

typedef struct ff_edge {
    struct ff_node *node; /* the input's node, retained */
    ff_tensor *leaf;      /* or the input itself when a leaf needing grad, retained */
} ff_edge;

typedef struct ff_node {
    ff_ctx ctx;
    int refcount;
    ff_edge *next;        /* ctx.n_in entries */
    ff_tensor *out;       /* weak: the result, while it lives (for retain_grad) */
    ff_hook *hooks;       /* hooks on the result's gradient */
    bool released;        /* saved tensors freed by a backward pass */
    /* backward bookkeeping */
    uint64_t epoch;       /* the backward pass that last visited the node */
    int pending;          /* edges into the node not yet processed */
    ff_tensor *grad;      /* gradient of the result, being accumulated */
} ff_node;

void ff_node_release(ff_node *n); /* iterative over chains */

#endif
