/*
 * matmul.c: matrix products on OpenBLAS (matmul, addmm_); its thread count is
 * in blas_threads.c.
 *
 * The whole point of this file is to hand BLAS the operands' own memory.
 * A matrix whose rows are contiguous goes as it is; one whose columns are
 * contiguous (a transposed view) goes as a transposed operand; only other
 * layouts (expanded, sliced both ways) are copied first. The result is
 * written by sgemm with beta = 0, so it is never zeroed beforehand.
 *
 * Which sgemm: OpenBLAS, or the engine's own (gemm.h) where that was
 * measured faster (ff_gemm_set_algo in ff_ops.h says where).
 */
#include <cblas.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include "ff_ops.h"
#include "gemm.h"

/* One operand as BLAS sees it: `batch` matrices of rows x cols, matrix b at
 * data + b*bstride (bstride 0 when one matrix serves the whole batch). */
typedef struct {
    const float *data;
    int64_t batch, rows, cols, bstride;
    enum CBLAS_TRANSPOSE trans;
    int64_t ld;
} ff_mat;

/* Pick a BLAS layout for a rows x cols matrix with row stride sr and column
 * stride sc; false when none fits and the matrix must be copied. Strides of
 * size-1 dims do not matter, so they are not looked at. */
static bool mat_layout(ff_mat *m, int64_t sr, int64_t sc)
{
    int64_t r = m->rows, c = m->cols;
    if ((c == 1 || sc == 1) && (r == 1 || sr >= c)) {
        m->trans = CblasNoTrans;
        m->ld = r == 1 ? c : sr;
    } else if ((r == 1 || sr == 1) && (c == 1 || sc >= r)) {
        m->trans = CblasTrans;
        m->ld = c == 1 ? r : sc;
    } else {
        return false;
    }
    return m->ld <= INT_MAX; /* blasint is int in this OpenBLAS build */
}

/* Describe t as operand `arg` (1 = left, 2 = right). A 1-D left operand is
 * a row (1 x k), a 1-D right operand a column (k x 1), as in NumPy. Returns
 * false when the layout needs a copy. */
static bool mat_from(ff_mat *m, const ff_tensor *t, int arg)
{
    int64_t sr, sc;
    m->data = ff_tensor_data(t);
    m->batch = 1;
    m->bstride = 0;
    if (t->ndim == 1 && arg == 1) {
        m->rows = 1, m->cols = t->shape[0];
        sr = 0, sc = t->stride[0];
    } else if (t->ndim == 1) {
        m->rows = t->shape[0], m->cols = 1;
        sr = t->stride[0], sc = 0;
    } else {
        int d = t->ndim - 2;
        m->rows = t->shape[d], m->cols = t->shape[d + 1];
        sr = t->stride[d], sc = t->stride[d + 1];
        if (t->ndim == 3) {
            m->batch = t->shape[0];
            m->bstride = t->shape[0] == 1 ? 0 : t->stride[0];
        }
    }
    return mat_layout(m, sr, sc);
}

/* *hold = t itself (retained) when BLAS can read it in place, else a
 * contiguous copy; `copy` forces the copy (for operands aliasing the output). */
static ff_status mat_prepare(ff_mat *m, const ff_tensor *t, int arg, bool copy,
                             ff_tensor **hold)
{
    if (!copy && mat_from(m, t, arg)) {
        *hold = ff_tensor_retain((ff_tensor *)t);
        return FF_OK;
    }
    *hold = ff_tensor_clone(t);
    if (!*hold)
        return ff_last_status();
    if (!mat_from(m, *hold, arg)) /* only when a size exceeds INT_MAX */
        return ff_error(FF_ERR_ARG, "matmul: sizes exceed BLAS's 32-bit limit");
    return FF_OK;
}

#define FF_GEMM_SERIAL_WORK ((int64_t)1 << 21)

/* -1: not yet read from the environment (FF_GEMM). */
static int gemm_algo = -1;

static const char *const gemm_algo_env[] = {"auto", "blas", "own", NULL};

ff_gemm_algo ff_gemm_get_algo(void)
{
    if (gemm_algo < 0) {
        const char *e = getenv("FF_GEMM");
        int a = FF_GEMM_AUTO;
        for (int i = 0; e && gemm_algo_env[i]; i++)
            if (strcmp(e, gemm_algo_env[i]) == 0)
                a = i;
        gemm_algo = a;
    }
    return (ff_gemm_algo)gemm_algo;
}

void ff_gemm_set_algo(ff_gemm_algo a) { gemm_algo = (int)a; }

/* The own kernel for an n x m x k product under the setting, or NULL for
 * OpenBLAS. Under FF_GEMM_AUTO: only with AVX-512 (the AVX2 kernel was
 * measured slower than OpenBLAS's, which is AVX2 too), and only for C with
 * at least 8 rows and 8 columns and products of at least 2^15
 * multiply-adds: below, OpenBLAS's small-matrix and vector paths win (a
 * 16^3 product 0.2 us against 0.5, 100 x 100 by 100 x 1 1.9 us against 5)
 * while from 128 x 256 by 256 x 10 on the own kernel is ahead (7 us
 * against 11); tests/bench/README.md, "own sgemm", has the numbers. */
static const ff_gemm_kernel *gemm_kernel_for(int64_t n, int64_t m, int64_t k)
{
    switch (ff_gemm_get_algo()) {
    case FF_GEMM_BLAS: return NULL;
    case FF_GEMM_OWN: return ff_gemm_select(FF_GEMM_K_AUTO);
    case FF_GEMM_OWN_AVX2: return ff_gemm_select(FF_GEMM_K_AVX2);
    case FF_GEMM_OWN_PORTABLE: return ff_gemm_select(FF_GEMM_K_PORTABLE);
    default: {
        const ff_gemm_kernel *kern = ff_gemm_select(FF_GEMM_K_AUTO);
        if (kern != &ff_gemm_avx512 || n < 8 || m < 8 || n * m * k < ((int64_t)1 << 15))
            return NULL;
        return kern;
    }
    }
}

const char *ff_gemm_kernel_name(void)
{
    const ff_gemm_kernel *kern = gemm_kernel_for(128, 256, 256);
    return kern ? kern->name : "blas";
}

void ff_sgemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float *a,
              int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc)
{
    const ff_gemm_kernel *kern = gemm_kernel_for(m, n, k);
    if (kern)
        ff_gemm_run(kern, m * n * k < FF_GEMM_SERIAL_WORK ? 1 : ff_blas_threads(), ta, tb, m, n,
                    k, alpha, a, lda, b, ldb, beta, c, ldc);
    else
        cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                    (int)m, (int)n, (int)k, alpha, a, (int)lda, b, (int)ldb, beta, c, (int)ldc);
}

/* C (batch x n x m, contiguous) = beta*C + alpha*A.B, one sgemm per matrix.
 * When every product shares B and A's matrices are stacked rows, the batch
 * is one tall product, which BLAS runs faster than many small ones. */
static void gemm_batch(const ff_mat *A, const ff_mat *B, float *C, int64_t batch,
                       float alpha, float beta)
{
    int64_t n = A->rows, m = B->cols, k = A->cols;
    if (batch > 1 && B->bstride == 0 && A->trans == CblasNoTrans &&
        A->bstride == n * A->ld && batch * n <= INT_MAX) {
        n *= batch;
        batch = 1;
    }
    /* OpenBLAS splits a product over its threads from n*m*k = 2^18 on;
     * up to FF_GEMM_SERIAL_WORK the split costs more than it saves (a
     * 128x256 by 256x10 product: ~9 us on one thread, slower on two), so
     * such products run on one (a variable write in OpenBLAS, no thread
     * is stopped). Such a product's bits are then one thread's on any
     * thread count. The own kernel follows the same rule (its bits are
     * the same on any thread count anyway). */
    bool serial = n * m * k < FF_GEMM_SERIAL_WORK;
    int nt = ff_blas_threads();
    const ff_gemm_kernel *kern = gemm_kernel_for(n, m, k);
    if (kern) {
        for (int64_t i = 0; i < batch; i++)
            ff_gemm_run(kern, serial ? 1 : nt, A->trans == CblasTrans, B->trans == CblasTrans, n,
                        m, k, alpha, A->data + i * A->bstride, A->ld, B->data + i * B->bstride,
                        B->ld, beta, C + i * n * m, m);
        return;
    }
    if (serial && nt > 1)
        ff_blas_set_threads(1);
    for (int64_t i = 0; i < batch; i++)
        cblas_sgemm(CblasRowMajor, A->trans, B->trans, (int)n, (int)m, (int)k, alpha,
                    A->data + i * A->bstride, (int)A->ld, B->data + i * B->bstride,
                    (int)B->ld, beta, C + i * n * m, (int)m);
    if (serial && nt > 1)
        ff_blas_set_threads(nt);
}

static ff_status check_rank(const char *fn, const ff_tensor *t, int arg, int lo, int hi)
{
    if (t->ndim >= lo && t->ndim <= hi)
        return FF_OK;
    char s[FF_SHAPE_STRLEN];
    return ff_error(FF_ERR_SHAPE, "%s: argument #%d has shape %s, expected %d to %d dims", fn,
                    arg, ff_shape_str(t->shape, t->ndim, s, sizeof s), lo, hi);
}

/* Inner sizes must agree: a's last dim against b's first matrix dim. */
static ff_status check_inner(const char *fn, const ff_tensor *a, const ff_tensor *b)
{
    int64_t k = a->shape[a->ndim - 1];
    int64_t kb = b->shape[b->ndim == 1 ? 0 : b->ndim - 2];
    if (k == kb)
        return FF_OK;
    char sa[FF_SHAPE_STRLEN], sb[FF_SHAPE_STRLEN], want[48];
    const char *fmt = b->ndim == 1 ? "%lld" : b->ndim == 2 ? "%lldxN" : "Bx%lldxN";
    snprintf(want, sizeof want, fmt, (long long)k);
    return ff_error(FF_ERR_SHAPE, "%s: argument #2 has shape %s, expected %s to match argument #1 (%s)",
                    fn, ff_shape_str(b->shape, b->ndim, sb, sizeof sb), want,
                    ff_shape_str(a->shape, a->ndim, sa, sizeof sa));
}

/* Batch size of the product (1 when neither is 3-D); -1 after an error. */
static int64_t batch_of(const ff_tensor *a, const ff_tensor *b)
{
    int64_t ba = a->ndim == 3 ? a->shape[0] : 1, bb = b->ndim == 3 ? b->shape[0] : 1;
    if (ba == bb || bb == 1)
        return ba;
    if (ba == 1)
        return bb;
    char sa[FF_SHAPE_STRLEN], sb[FF_SHAPE_STRLEN];
    ff_error(FF_ERR_SHAPE,
             "matmul: batch sizes differ: argument #1 has shape %s, argument #2 has shape %s "
             "(a batch of 1 broadcasts)",
             ff_shape_str(a->shape, a->ndim, sa, sizeof sa),
             ff_shape_str(b->shape, b->ndim, sb, sizeof sb));
    return -1;
}

/* Result shape: (batch,) n, m, where the dims 1-D operands lack are dropped. */
static int result_shape(const ff_tensor *a, const ff_tensor *b, int64_t batch, int64_t *shape)
{
    int nd = 0;
    if (a->ndim == 3 || b->ndim == 3)
        shape[nd++] = batch;
    if (a->ndim > 1)
        shape[nd++] = a->shape[a->ndim - 2];
    if (b->ndim > 1)
        shape[nd++] = b->shape[b->ndim - 1];
    return nd;
}

/* BLAS takes int sizes: n, k and m must fit whatever the layout. */
static bool fits_blas(const ff_tensor *a, const ff_tensor *b)
{
    int64_t n = a->ndim > 1 ? a->shape[a->ndim - 2] : 1, k = a->shape[a->ndim - 1];
    int64_t m = b->ndim > 1 ? b->shape[b->ndim - 1] : 1;
    if (n <= INT_MAX && k <= INT_MAX && m <= INT_MAX)
        return true;
    ff_error(FF_ERR_ARG, "matmul: sizes exceed BLAS's 32-bit limit");
    return false;
}

ff_tensor *ff_matmul(const ff_tensor *a, const ff_tensor *b)
{
    if (check_rank("matmul", a, 1, 1, 3) || check_rank("matmul", b, 2, 1, 3) ||
        check_inner("matmul", a, b))
        return NULL;
    int64_t batch = batch_of(a, b), shape[3];
    if (batch < 0)
        return NULL;
    int nd = result_shape(a, b, batch, shape);
    if (!fits_blas(a, b))
        return NULL;
    ff_tensor *out = ff_tensor_empty(shape, nd);
    if (!out || ff_tensor_numel(out) == 0)
        return out;
    int64_t k = a->shape[a->ndim - 1];
    if (k == 0) { /* an empty sum: BLAS would be asked for lda >= 1 */
        memset(ff_tensor_data(out), 0, (size_t)ff_tensor_numel(out) * sizeof(float));
        return out;
    }
    ff_mat A, B;
    ff_tensor *ha = NULL, *hb = NULL;
    if (mat_prepare(&A, a, 1, false, &ha) || mat_prepare(&B, b, 2, false, &hb)) {
        ff_tensor_release(ha), ff_tensor_release(hb), ff_tensor_release(out);
        return NULL;
    }
    gemm_batch(&A, &B, ff_tensor_data(out), batch, 1.0f, 0.0f);
    ff_tensor_release(ha), ff_tensor_release(hb);
    return out;
}

/* Shapes of addmm_: a (n,k), b (k,m), c (n,m), c contiguous. */
static ff_status addmm_check(const ff_tensor *c, const ff_tensor *a, const ff_tensor *b)
{
    char sa[FF_SHAPE_STRLEN], sb[FF_SHAPE_STRLEN], sc[FF_SHAPE_STRLEN];
    ff_shape_str(a->shape, a->ndim, sa, sizeof sa);
    ff_shape_str(b->shape, b->ndim, sb, sizeof sb);
    ff_shape_str(c->shape, c->ndim, sc, sizeof sc);
    if (a->ndim != 2 || b->ndim != 2 || c->ndim != 2)
        return ff_error(FF_ERR_SHAPE, "addmm_: c, a and b must be 2-D, got c %s, a %s, b %s",
                        sc, sa, sb);
    if (a->shape[1] != b->shape[0])
        return ff_error(FF_ERR_SHAPE, "addmm_: b has shape %s, expected %lldxN to match a (%s)",
                        sb, (long long)a->shape[1], sa);
    if (c->shape[0] != a->shape[0] || c->shape[1] != b->shape[1])
        return ff_error(FF_ERR_SHAPE, "addmm_: c has shape %s, expected %lldx%lld for a (%s) times b (%s)",
                        sc, (long long)a->shape[0], (long long)b->shape[1], sa, sb);
    if (!ff_tensor_is_contiguous(c))
        return ff_error(FF_ERR_STATE, "addmm_: c (shape %s) must be contiguous", sc);
    return FF_OK;
}

/* c *= beta, with beta = 0 clearing c (so NaN or Inf in c do not survive). */
static void scale_(ff_tensor *c, float beta)
{
    float *p = ff_tensor_data(c);
    int64_t n = ff_tensor_numel(c);
    if (beta == 0.0f)
        memset(p, 0, (size_t)n * sizeof(float));
    else if (beta != 1.0f)
        for (int64_t i = 0; i < n; i++)
            p[i] *= beta;
}

ff_status ff_addmm_(ff_tensor *c, float beta, float alpha, const ff_tensor *a,
                    const ff_tensor *b)
{
    ff_tensor_bump_version(c); /* autograd checks saved tensors by it */
    ff_status st = addmm_check(c, a, b);
    if (st != FF_OK || ff_tensor_numel(c) == 0)
        return st;
    if (a->shape[1] == 0) { /* a.b is all zeros */
        scale_(c, beta);
        return FF_OK;
    }
    if (c->shape[0] > INT_MAX || c->shape[1] > INT_MAX || a->shape[1] > INT_MAX)
        return ff_error(FF_ERR_ARG, "addmm_: sizes exceed BLAS's 32-bit limit");
    ff_mat A, B;
    ff_tensor *ha = NULL, *hb = NULL;
    /* BLAS must not read what it writes: copy an operand sharing c's storage. */
    st = mat_prepare(&A, a, 1, a->storage == c->storage, &ha);
    if (st == FF_OK)
        st = mat_prepare(&B, b, 2, b->storage == c->storage, &hb);
    if (st == FF_OK)
        gemm_batch(&A, &B, ff_tensor_data(c), 1, alpha, beta);
    ff_tensor_release(ha), ff_tensor_release(hb);
    return st;
}

