/*
 * ff_ops.h: tensor operations (forward computations).
 *
 * Ownership as in ff_tensor.h: `ff_tensor *` results are new references,
 * NULL on failure with ff_last_error() set; arguments are borrowed.
 * Inputs may have any layout (views, transposes, expanded dims); results are
 * contiguous. Dims are 0-based; index tensors hold 0-based integer values
 * stored as floats (exact up to 2^24).
 *
 * Broadcasting follows NumPy/torch: shapes are aligned at their last dim;
 * two sizes fit when equal or when one is 1; missing leading dims count as 1.
 */
#ifndef FF_OPS_H
#define FF_OPS_H

#include "ff_tensor.h"

/* ---- broadcasting ---- */
/* Broadcast shape of a and b into out (FF_MAX_DIMS entries), rank in *ndim. */
ff_status ff_broadcast_shape(const char *fn, const ff_tensor *a, const ff_tensor *b,
                             int64_t *out, int *ndim);

/* ---- elementwise binary (broadcasting) ---- */
typedef enum {
    FF_ADD, FF_SUB, FF_MUL, FF_DIV, FF_POW, FF_MAXIMUM, FF_MINIMUM,
    /* comparisons give 1.0 where true, 0.0 where false */
    FF_EQ, FF_NE, FF_LT, FF_LE, FF_GT, FF_GE,
    FF_BINOP_COUNT
} ff_binop;

const char *ff_binop_name(ff_binop op);   /* "add", "sub", ... */
ff_tensor *ff_binary(ff_binop op, const ff_tensor *a, const ff_tensor *b);
/* a = a op b, with b broadcast to a's shape (a's shape never changes). */
ff_status ff_binary_(ff_binop op, ff_tensor *a, const ff_tensor *b);

/* ---- elementwise unary ---- */
typedef enum {
    FF_NEG, FF_EXP, FF_LOG, FF_SQRT, FF_ABS, FF_SIGN,
    FF_UNOP_COUNT
} ff_unop;

const char *ff_unop_name(ff_unop op);
ff_tensor *ff_unary(ff_unop op, const ff_tensor *a);
ff_status ff_unary_(ff_unop op, ff_tensor *a);

/* min(max(a, lo), hi); pass -INFINITY / INFINITY for a one-sided clamp.
 * Error when lo > hi. NaN stays NaN. */
ff_tensor *ff_clamp(const ff_tensor *a, float lo, float hi);
ff_status ff_clamp_(ff_tensor *a, float lo, float hi);

/* cond != 0 ? a : b, all three broadcast together. */
ff_tensor *ff_where(const ff_tensor *cond, const ff_tensor *a, const ff_tensor *b);

/* ---- reductions ----
 * dim >= 0 reduces that dim (kept with size 1 when keepdim); dim < 0 reduces
 * every element to a rank-0 result (keepdim then keeps all dims as size 1).
 * Sums accumulate in double, in a fixed order, so results do not depend on
 * threads. Reducing an empty dim: sum gives 0, mean NaN, max/min an error. */
ff_tensor *ff_sum(const ff_tensor *a, int dim, bool keepdim);
ff_tensor *ff_mean(const ff_tensor *a, int dim, bool keepdim);
/* Max/min values; when indices is not NULL it receives a new tensor of the
 * same shape holding the 0-based position along dim (first one on ties;
 * the flat row-major position when dim < 0). NaN wins over numbers. */
ff_tensor *ff_max(const ff_tensor *a, int dim, bool keepdim, ff_tensor **indices);
ff_tensor *ff_min(const ff_tensor *a, int dim, bool keepdim, ff_tensor **indices);
ff_tensor *ff_argmax(const ff_tensor *a, int dim, bool keepdim);
ff_tensor *ff_argmin(const ff_tensor *a, int dim, bool keepdim);
/* Variance with Bessel's correction when unbiased (n-1 in the denominator). */
ff_tensor *ff_var(const ff_tensor *a, int dim, bool unbiased, bool keepdim);
/* p-norm (p > 0; p = INFINITY gives max |x|). */
ff_tensor *ff_norm(const ff_tensor *a, double p, int dim, bool keepdim);

/* ---- matrix products (cblas_sgemm) ----
 * matmul(a, b):
 *   (n,k)·(k,m) -> (n,m);   (B,n,k)·(B,k,m) -> (B,n,m), a batch of 1 broadcasts;
 *   (B,n,k)·(k,m) and (n,k)·(B,k,m) -> (B,n,m);
 *   1-D operands as in NumPy: (k)·(k,m) -> (m), (n,k)·(k) -> (n), (k)·(k) -> scalar.
 * Transposed views (stride 1 on the first of the last two dims) go to BLAS as
 * transposed operands without a copy. */
ff_tensor *ff_matmul(const ff_tensor *a, const ff_tensor *b);
/* c = beta*c + alpha*(a·b) for 2-D a (n,k), b (k,m), c (n,m) contiguous.
 * The building block of fused linear layers and of their backward. */
ff_status ff_addmm_(ff_tensor *c, float beta, float alpha,
                    const ff_tensor *a, const ff_tensor *b);

/* The engine's threads: OpenBLAS's count, which the non-product kernels
 * also split their loops over (engine/core/parallel.h). OpenBLAS reads
 * OPENBLAS_NUM_THREADS once at load; ff_blas_set_threads changes it at run
 * time. ff_blas_init, once before the first product, makes OpenBLAS's idle
 * threads sleep after about half a millisecond instead of spinning 0.1 s
 * (unless the environment sets OPENBLAS_THREAD_TIMEOUT): see blas_threads.c. */
void ff_blas_init(void);
void ff_blas_set_threads(int n);
int ff_blas_threads(void);

/* Which code computes conv2d (op_conv.c). FF_CONV_AUTO (the default): the
 * direct kernel (conv_direct.h) for stride 1, dilation 1, one group and a
 * kernel larger than 1x1, on a CPU with AVX2 or AVX-512; im2col + sgemm for
 * the rest. FF_CONV_IM2COL: always im2col + sgemm (the reference path).
 * FF_CONV_DIRECT*: the direct kernel wherever it applies, with the widest
 * instruction set the CPU has, or at most AVX2, or plain C vectors (for
 * tests; a set the CPU lacks falls back to the next narrower). The direct
 * kernel sums in another order than sgemm: results agree to rounding, and
 * stay the same bits on any thread count. The weight gradient always uses
 * im2col + sgemm. ff_conv_kernel_name: "im2col" or the direct kernel that
 * a 3x3 stride-1 convolution would run now ("avx512", "avx2", "portable"). */
typedef enum {
    FF_CONV_AUTO, FF_CONV_IM2COL, FF_CONV_DIRECT, FF_CONV_DIRECT_AVX2, FF_CONV_DIRECT_PORTABLE
} ff_conv_algo;
void ff_conv_set_algo(ff_conv_algo a);
ff_conv_algo ff_conv_get_algo(void);
const char *ff_conv_kernel_name(void);

/* Which code computes matrix products (matmul, addmm_, and so linear and
 * every op built on them). FF_GEMM_AUTO (the default): the engine's own
 * sgemm (engine/core/gemm.h) on a CPU with AVX-512, for products
 * with C at least 8 x 8 and 2^15 multiply-adds, where it was measured
 * faster than OpenBLAS's AVX2 kernel; OpenBLAS for the rest. FF_GEMM_BLAS: OpenBLAS
 * always (its bits). FF_GEMM_OWN*: the own sgemm for every product, with
 * the widest instruction set the CPU has, or at most AVX2, or plain C
 * vectors (for tests; a set the CPU lacks falls back to the next
 * narrower). The own sgemm sums in another order than OpenBLAS: results
 * agree to rounding, and are the same bits on any thread count. The
 * environment variable FF_GEMM ("auto", "blas", "own") sets the starting
 * value. ff_gemm_kernel_name: "blas" or the own kernel that a 128 x 256 x
 * 256 product would run now ("avx512", "avx2", "portable"). */
typedef enum {
    FF_GEMM_AUTO, FF_GEMM_BLAS, FF_GEMM_OWN, FF_GEMM_OWN_AVX2, FF_GEMM_OWN_PORTABLE
} ff_gemm_algo;
void ff_gemm_set_algo(ff_gemm_algo a);
ff_gemm_algo ff_gemm_get_algo(void);
const char *ff_gemm_kernel_name(void);

/* ---- fused optimiser steps (optim.c) ----
 * One update of every parameter, in place, by the rules of
 * lib/firefly/optim (torch's SGD, Adam, AdamW, RMSprop), with the same
 * float operations in the same order: the same bits as the Lua rules.
 * Entry i: the parameter (contiguous), its gradient (its shape), the state
 * buffers the kind reads (contiguous, the parameter's shape; NULL where
 * unused) and its step count including this step (>= 1). Buffers:
 *   SGD      buf[0] momentum (when momentum != 0); fresh: set it to the
 *            gradient (plus decay) instead of updating it (a first step)
 *   Adam(W)  buf[0] exp_avg, buf[1] exp_avg_sq
 *   RMSprop  buf[0] square_avg, buf[1] momentum (momentum > 0),
 *            buf[2] grad_avg (centered)
 * With check_finite, every gradient is checked first: *bad is the index
 * of the first with a NaN or an infinity and nothing is updated; else
 * *bad = -1. Errors (shapes, layout): FF_ERR_SHAPE / FF_ERR_ARG, nothing
 * updated. */
typedef enum { FF_OPTIM_SGD, FF_OPTIM_ADAM, FF_OPTIM_ADAMW, FF_OPTIM_RMSPROP } ff_optim_kind;
typedef struct {
    ff_optim_kind kind;
    double lr, momentum, dampening, weight_decay, eps, beta1, beta2, alpha;
    bool nesterov, centered;
} ff_optim_hyper;
typedef struct {
    ff_tensor *param;
    const ff_tensor *grad;
    ff_tensor *buf[3];
    int64_t step;
    bool fresh;
} ff_optim_entry;
ff_status ff_optim_step(const ff_optim_hyper *h, const ff_optim_entry *e, int n, bool check_finite,
                        int *bad);

/* ---- Firefly step 1's projection (grow_project.c) ----
 * In place, after each optimiser step of step 1 (under no-grad), with the
 * same bits as the composition in lib/firefly/grow/methods/firefly.lua:
 *   ff_grow_project_rows     every row of v (dim 0; the rest flattened) to
 *                            L2 norm <= eps (a longer row is scaled by
 *                            eps / its norm)
 *   ff_grow_project_neurons  k gated neurons: e (k) clamped to [-eps, eps];
 *                            then (u_j, b_j, o_j) to L2 norm <= 1, with u
 *                            (k, ...) neuron j's incoming weights in row j,
 *                            b (k) its bias, o (out, k x n, ...) its
 *                            outgoing weights in the block j of n along
 *                            dim 2
 * All contiguous. Errors (nothing changed): FF_ERR_SHAPE, FF_ERR_ARG (eps
 * not positive, a non-contiguous tensor), FF_ERR_MEM. */
ff_status ff_grow_project_rows(ff_tensor *v, double eps);
ff_status ff_grow_project_neurons(ff_tensor *e, ff_tensor *u, ff_tensor *b, ff_tensor *o,
                                  double eps);

/* ---- joining and indexing ---- */
/* Concatenate along dim; all other sizes must agree. n >= 1. */
ff_tensor *ff_cat(ff_tensor *const *ts, int n, int dim);
/* Stack n tensors of one shape along a new dim (0 <= dim <= rank). */
ff_tensor *ff_stack(ff_tensor *const *ts, int n, int dim);
/* Entries of a at positions index (1-D) along dim. */
ff_tensor *ff_index_select(const ff_tensor *a, int dim, const ff_tensor *index);
/* a[..., index[i], ...] += src[..., i, ...] along dim (index_select's adjoint). */
ff_status ff_index_add_(ff_tensor *a, int dim, const ff_tensor *index,
                        const ff_tensor *src);
/* out[i][j] = a[index[i][j]][j] (dim 0), etc.; index has a's rank, and each
 * of its sizes is <= a's except along dim. The result has index's shape. */
ff_tensor *ff_gather(const ff_tensor *a, int dim, const ff_tensor *index);
/* a[index[i][j]][j] = src[i][j] (dim 0), etc.; src at least index's size. */
ff_status ff_scatter_(ff_tensor *a, int dim, const ff_tensor *index,
                      const ff_tensor *src);
/* Same with +=, the adjoint of gather. */
ff_status ff_scatter_add_(ff_tensor *a, int dim, const ff_tensor *index,
                          const ff_tensor *src);

/* Second derivative f''(x) of the activation named act ("relu", "leaky_relu",
 * "elu", "gelu", "silu", "tanh", "sigmoid", "softplus", "rbf"), elementwise,
 * as a new contiguous tensor; nothing is recorded for autograd. param is
 * alpha for elu and beta for softplus, ignored otherwise. relu and
 * leaky_relu give zeros. Unknown names: an error listing the known ones. */
ff_tensor *ff_act_d2(const char *act, const ff_tensor *x, double param);

/* ---- activations chosen by a parameter ----
 * The activations above, plus the identity, as a kind: for ops that take
 * the activation as a parameter (split_act). Their parameters p0, p1, as
 * the activation ops take them: leaky_relu's negative slope (torch's
 * default 0.01), elu's alpha (1), softplus's beta (1, non-zero) and
 * threshold (20); the others have none and ignore them. */
typedef enum {
    FF_ACT_RELU, FF_ACT_LEAKY_RELU, FF_ACT_ELU, FF_ACT_GELU, FF_ACT_SILU, FF_ACT_TANH,
    FF_ACT_SIGMOID, FF_ACT_SOFTPLUS, FF_ACT_RBF, FF_ACT_IDENTITY,
    FF_ACT_COUNT
} ff_act;

const char *ff_act_name(ff_act act);  /* "relu", ..., "identity"; NULL out of range */
int ff_act_lookup(const char *name);  /* the kind called name, or -1 */

/* ---- growth: split candidates ----
 * Every neuron split in two children with pre-activations z + s and z - s,
 * through the neuron's per-channel affine map (a batch norm in evaluation
 * mode) a x + b and its activation f, with u+ = a (z + s) + b and
 * u- = a (z - s) + b:
 *   pair false:  (f(u+) + f(u-)) / 2                   shape of z
 *   pair true:   f(u+) then f(u-), joined along dim 0   (2N, C [, H, W])
 * (pair is for a max pool that follows: pool the 2N batch, then average
 * the halves). One pass, no temporaries.
 *   z      (N, C) or (N, C, H, W), any layout
 *   s      z's exact shape
 *   scale  (C) or NULL (1), broadcast over channel dim 1 of z
 *   shift  (C) or NULL (0)
 *   gain   (C) or NULL (1): s is gain·s per channel (growth's gates)
 *   act    the activation, p0 and p1 its parameters (see ff_act)
 * A new contiguous tensor; nothing is recorded. Recorded for autograd,
 * with gradients for z, s, scale, shift and gain, it is
 *   ff_apply(FF_OP_SPLIT_ACT, (ff_tensor *[]){z, s, scale, shift, gain}, 5, &p, NULL)
 * with p.i[0] = act, p.i[1] = pair, p.f[0] = p0, p.f[1] = p1.
 * Errors (before any allocation): z of another rank, s of another shape,
 * scale, shift or gain not of shape (C), an unknown act, softplus's beta 0. */
ff_tensor *ff_split_act(const ff_tensor *z, const ff_tensor *s, const ff_tensor *scale,
                        const ff_tensor *shift, const ff_tensor *gain, ff_act act, double p0,
                        double p1, bool pair);

/* ---- linear algebra: not autograd ops (nothing is recorded) ---- */

/* Eigenpairs of symmetric matrices, by LAPACK ssyevr (engine/core/eigh.c).
 *   A        (..., d, d), any layout; only the lower triangle is read (the
 *            entries A[i][j] with i >= j), the rest is ignored
 *   k        how many eigenpairs, 1 <= k <= d
 *   largest  false: the k smallest eigenvalues; true: the k largest
 * On success *values is a new (..., k) tensor, ascending along its last dim
 * (also for largest), and *vectors a new (..., d, k) tensor whose column j
 * is a unit eigenvector of values[..., j]; each vector's sign is fixed so
 * that its entry of largest magnitude (the first one on ties) is positive.
 * Errors (nothing allocated, both outputs NULL): rank < 2, a non-square
 * matrix, k out of range, a NaN or infinity in a lower triangle, sizes past
 * LAPACK's 32-bit integers, and LAPACK's own failure (info != 0). */
ff_status ff_eigh(const ff_tensor *A, int64_t k, bool largest, ff_tensor **values,
                  ff_tensor **vectors);

/* im2col: the patches a convolution reads (engine/core/op_conv.c, the same
 * im2col as conv2d's forward). x (N, C, H, W), any layout; a kh x kw kernel
 * with stride, padding and dilation {h, w} as for conv2d. Returns a new
 * (N, C*kh*kw, L) tensor, L = OH*OW, row (c*kh + i)*kw + j holding input
 * channel c at kernel tap (i, j) for every output position (torch's unfold
 * layout), zeros where the tap reads padding, so that
 *   conv2d(x, w)[n] == w.view(O, C*kh*kw) · unfold(x)[n]   (as O x L).
 * Errors: x not of rank 4, a kernel, stride or dilation < 1, padding < 0,
 * an output size < 1. */
ff_tensor *ff_unfold(const ff_tensor *x, const int64_t kernel[2], const int64_t stride[2],
                     const int64_t padding[2], const int64_t dilation[2]);

#endif
