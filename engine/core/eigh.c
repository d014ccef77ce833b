/*
 * eigh.c: eigenpairs of symmetric matrices through LAPACK ssyevr (the
 * splitting baselines of growth need the smallest eigenpair of one
 * splitting matrix per neuron). Not an autograd op: nothing is recorded.
 *
 * Why ssyevr: with RANGE = 'I' it reduces A to tridiagonal form once and
 * then computes only the requested eigenpairs (bisection and inverse
 * iteration for a subset, MRRR for all of them), so the one eigenvector a
 * splitting method needs costs far less than a full decomposition.
 *
 * Layout. LAPACK is column-major: a row-major d x d matrix is its
 * transpose, so the row-major lower triangle this function reads is the
 * Fortran upper triangle (UPLO = 'U'). The eigenvectors come back as the
 * columns of Z, i.e. rows in row-major order, and are transposed into the
 * (d, k) result.
 *
 * OpenBLAS in Debian exports LAPACK, but no header declares it here: the
 * prototype is written out below, with the hidden string-length arguments
 * that gfortran passes after the others (size_t since gcc 8).
 */
#include <limits.h>
#include <math.h>
#include <string.h>
#include "ff_ops.h"

void ssyevr_(const char *jobz, const char *range, const char *uplo, const int *n, float *a,
             const int *lda, const float *vl, const float *vu, const int *il, const int *iu,
             const float *abstol, int *m, float *w, float *z, const int *ldz, int *isuppz,
             float *work, const int *lwork, int *iwork, const int *liwork, int *info,
             size_t jobz_len, size_t range_len, size_t uplo_len);

/* Scratch of one call, shared by every matrix of the batch. */
typedef struct {
    int n, il, iu, lwork, liwork;
    float *a, *w, *z, *work;
    int *isuppz, *iwork;
    size_t bytes[6];
} eigh_scratch;

static void scratch_free(eigh_scratch *s)
{
    void *p[6] = {s->a, s->w, s->z, s->work, s->isuppz, s->iwork};
    for (int i = 0; i < 6; i++)
        ff_free(p[i], s->bytes[i]);
}

/* One ssyevr call on s->a (destroyed); m receives the number found. */
static int run_ssyevr(eigh_scratch *s, int *m, int lwork, int liwork)
{
    int info = 0;
    float vl = 0, vu = 0, abstol = 0; /* abstol 0: LAPACK's default, eps·|T| */
    ssyevr_("V", "I", "U", &s->n, s->a, &s->n, &vl, &vu, &s->il, &s->iu, &abstol, m, s->w, s->z,
            &s->n, s->isuppz, s->work, &lwork, s->iwork, &liwork, &info, 1, 1, 1);
    return info;
}

/* Allocate the scratch, asking LAPACK for its workspace sizes first. */
static ff_status scratch_new(eigh_scratch *s, int n, int k, bool largest)
{
    memset(s, 0, sizeof *s);
    s->n = n;
    s->il = largest ? n - k + 1 : 1;
    s->iu = largest ? n : k;
    s->bytes[0] = (size_t)n * (size_t)n * sizeof(float);
    s->bytes[1] = (size_t)n * sizeof(float);
    s->bytes[2] = (size_t)n * (size_t)k * sizeof(float);
    s->bytes[4] = 2 * (size_t)k * sizeof(int);
    s->a = ff_alloc(s->bytes[0]);
    s->w = ff_alloc(s->bytes[1]);
    s->z = ff_alloc(s->bytes[2]);
    s->isuppz = ff_alloc(s->bytes[4]);
    if (!s->a || !s->w || !s->z || !s->isuppz)
        return scratch_free(s), ff_last_status();
    float wq = 0;
    int iq = 0, m = 0;
    s->work = &wq, s->iwork = &iq;
    int info = run_ssyevr(s, &m, -1, -1); /* a workspace query: sizes only */
    s->work = NULL, s->iwork = NULL;
    if (info != 0)
        return scratch_free(s), ff_error(FF_ERR_STATE, "linalg.eigh: LAPACK ssyevr workspace query "
                                                       "failed (info %d)", info);
    s->lwork = (int)wq > 26 * n ? (int)wq : 26 * n; /* the documented minimums */
    s->liwork = iq > 10 * n ? iq : 10 * n;
    s->bytes[3] = (size_t)s->lwork * sizeof(float);
    s->bytes[5] = (size_t)s->liwork * sizeof(int);
    s->work = ff_alloc(s->bytes[3]);
    s->iwork = ff_alloc(s->bytes[5]);
    if (!s->work || !s->iwork)
        return scratch_free(s), ff_last_status();
    return FF_OK;
}

/* Error unless the lower triangle of matrix b (d x d at src) is finite. */
static ff_status check_finite(const float *src, int64_t d, int64_t b)
{
    for (int64_t i = 0; i < d; i++)
        for (int64_t j = 0; j <= i; j++)
            if (!isfinite(src[i * d + j]))
                return ff_error(FF_ERR_ARG, "linalg.eigh: A has %s at (%lld, %lld) of matrix %lld",
                                isnan(src[i * d + j]) ? "a NaN" : "an infinity", (long long)i + 1,
                                (long long)j + 1, (long long)b + 1);
    return FF_OK;
}

/* Column j of Z (d values) into column j of the row-major (d, k) output,
 * negated if needed so its entry of largest magnitude is positive: LAPACK
 * leaves the sign arbitrary, and growth must not depend on its version. */
static void store_vector(const float *zj, int64_t d, int64_t k, int64_t j, float *out)
{
    int64_t big = 0;
    for (int64_t i = 1; i < d; i++)
        if (fabsf(zj[i]) > fabsf(zj[big]))
            big = i;
    float sign = zj[big] < 0 ? -1.0f : 1.0f;
    for (int64_t i = 0; i < d; i++)
        out[i * k + j] = sign * zj[i];
}

static ff_status check_args(const ff_tensor *A, int64_t k)
{
    char sa[FF_SHAPE_STRLEN];
    ff_shape_str(A->shape, A->ndim, sa, sizeof sa);
    if (A->ndim < 2)
        return ff_error(FF_ERR_SHAPE, "linalg.eigh: A must have at least 2 dims (..., d, d), got %s", sa);
    int64_t d = A->shape[A->ndim - 1];
    if (A->shape[A->ndim - 2] != d)
        return ff_error(FF_ERR_SHAPE, "linalg.eigh: A must be square, got %s", sa);
    if (d < 1)
        return ff_error(FF_ERR_SHAPE, "linalg.eigh: A must be at least 1x1, got %s", sa);
    if (d > 46340) /* d*d past LAPACK's 32-bit index arithmetic */
        return ff_error(FF_ERR_ARG, "linalg.eigh: A is %s, too large for LAPACK's 32-bit sizes", sa);
    if (k < 1 || k > d)
        return ff_error(FF_ERR_ARG, "linalg.eigh: k must be in 1..%lld for A of shape %s, got %lld",
                        (long long)d, sa, (long long)k);
    return FF_OK;
}

/* The outputs' shapes: A's leading dims, then (k) and (d, k). */
static ff_status new_outputs(const ff_tensor *A, int64_t k, ff_tensor **values, ff_tensor **vectors)
{
    int64_t vs[FF_MAX_DIMS], ws[FF_MAX_DIMS];
    int lead = A->ndim - 2;
    for (int i = 0; i < lead; i++)
        vs[i] = ws[i] = A->shape[i];
    vs[lead] = k;
    ws[lead] = A->shape[lead], ws[lead + 1] = k;
    *values = ff_tensor_empty(vs, lead + 1);
    *vectors = *values ? ff_tensor_empty(ws, lead + 2) : NULL;
    if (!*vectors) {
        ff_tensor_release(*values);
        *values = NULL;
        return ff_last_status();
    }
    return FF_OK;
}

ff_status ff_eigh(const ff_tensor *A, int64_t k, bool largest, ff_tensor **values,
                  ff_tensor **vectors)
{
    *values = *vectors = NULL;
    ff_status st = check_args(A, k);
    if (st)
        return st;
    int64_t d = A->shape[A->ndim - 1];
    int64_t batch = ff_tensor_numel(A) / (d * d);
    /* a strided A is copied once; a contiguous one is read in place */
    ff_tensor *copy = ff_tensor_is_contiguous(A) ? NULL : ff_tensor_clone(A);
    if (!ff_tensor_is_contiguous(A) && !copy)
        return ff_last_status();
    const float *src = ff_tensor_data(copy ? copy : A);
    for (int64_t b = 0; b < batch && !st; b++)
        st = check_finite(src + b * d * d, d, b);
    if (!st)
        st = new_outputs(A, k, values, vectors);
    eigh_scratch s;
    if (!st && batch > 0 && (st = scratch_new(&s, (int)d, (int)k, largest)) == FF_OK) {
        float *vals = ff_tensor_data(*values), *vecs = ff_tensor_data(*vectors);
        for (int64_t b = 0; b < batch && !st; b++) {
            memcpy(s.a, src + b * d * d, s.bytes[0]);
            int m = 0, info = run_ssyevr(&s, &m, s.lwork, s.liwork);
            if (info != 0 || m != k) {
                st = ff_error(FF_ERR_STATE, "linalg.eigh: LAPACK ssyevr failed on matrix %lld of "
                              "%lld (%dx%d): info %d, %d of %lld eigenpairs found",
                              (long long)b + 1, (long long)batch, (int)d, (int)d, info, m,
                              (long long)k);
                break;
            }
            memcpy(vals + b * k, s.w, (size_t)k * sizeof(float));
            for (int64_t j = 0; j < k; j++)
                store_vector(s.z + j * d, d, k, j, vecs + b * d * k);
        }
        scratch_free(&s);
    }
    ff_tensor_release(copy);
    if (st) {
        ff_tensor_release(*values), ff_tensor_release(*vectors);
        *values = *vectors = NULL;
    }
    return st;
}
