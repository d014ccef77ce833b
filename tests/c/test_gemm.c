/*
 * test_gemm.c: the engine's own sgemm (engine/core/gemm.h). Every kernel
 * this CPU runs (avx512, avx2, portable) against cblas_sgemm and a double
 * reference, to a bound relative to sum_p |a_ip||b_pj| (the kernels sum
 * in another order), on shapes at every edge: 1, MR +- 1, NR +- 1, past an
 * A block (MC rows) and a B panel (NC columns), K = 1, K across k-blocks
 * and not a multiple of one; every transpose, leading dimensions wider
 * than the matrix, alpha and beta (beta = 0 never reads C: NaN there does
 * not survive). The same bits on 1, 2 and 3 threads, split by rows or by
 * columns. Through ff_matmul and ff_addmm_: transposed and sliced views,
 * batches, and the setting (ff_gemm_set_algo) choosing the code.
 */
#include <cblas.h>
#include <float.h>
#include <stdlib.h>
#include <string.h>
#include "harness.h"
#include "../../engine/core/gemm.h"

static void fill(float *d, int64_t n, unsigned seed)
{
    uint32_t x = seed * 2654435761u + 777u;
    for (int64_t i = 0; i < n; i++) {
        x = x * 1664525u + 1013904223u;
        d[i] = (float)(x >> 8) / (float)(1u << 23) - 1.0f;
    }
}

typedef struct {
    int64_t m, n, k;
    bool ta, tb;
    int64_t pad; /* extra floats in each leading dimension */
    float alpha, beta;
} prod;

/* Runs p with kernel kern on nt threads and checks it against cblas_sgemm
 * and a double reference; the result is left in *out (m x n, ldc = n +
 * pad) when out is not NULL. */
static bool check_prod(const ff_gemm_kernel *kern, int nt, const prod *p, float **out)
{
    int64_t m = p->m, n = p->n, k = p->k;
    int64_t ar = p->ta ? k : m, ac = p->ta ? m : k, br = p->tb ? n : k, bc = p->tb ? k : n;
    int64_t lda = ac + p->pad, ldb = bc + p->pad, ldc = n + p->pad;
    float *a = malloc(sizeof(float) * (size_t)(ar * lda)), *b = malloc(sizeof(float) * (size_t)(br * ldb));
    size_t cb = sizeof(float) * (size_t)(m * ldc);
    float *c = malloc(cb), *r = malloc(cb), *o = malloc(cb); /* o: C before */
    bool ok = a && b && c && r && o;
    if (ok) {
        fill(a, ar * lda, (unsigned)(m * 7 + k));
        fill(b, br * ldb, (unsigned)(n * 5 + k + 1));
        fill(c, m * ldc, 3);
        if (p->beta == 0.0f) /* beta = 0 must not read C */
            for (int64_t i = 0; i < m * ldc; i += 3)
                c[i] = NAN;
        memcpy(r, c, cb);
        memcpy(o, c, cb);
        ff_gemm_run(kern, nt, p->ta, p->tb, m, n, k, p->alpha, a, lda, b, ldb, p->beta, c, ldc);
        cblas_sgemm(CblasRowMajor, p->ta ? CblasTrans : CblasNoTrans,
                    p->tb ? CblasTrans : CblasNoTrans, (int)m, (int)n, (int)k, p->alpha, a,
                    (int)lda, b, (int)ldb, p->beta, r, (int)ldc);
        for (int64_t i = 0; i < m && ok; i++)
            for (int64_t j = 0; j < n && ok; j++) {
                double s = 0, sa = 0;
                for (int64_t q = 0; q < k; q++) {
                    double x = p->ta ? a[q * lda + i] : a[i * lda + q];
                    double y = p->tb ? b[j * ldb + q] : b[q * ldb + j];
                    s += x * y, sa += fabs(x * y);
                }
                double want = p->alpha * s, got = c[i * ldc + j], blas = r[i * ldc + j];
                double c0 = p->beta != 0.0f ? o[i * ldc + j] : 0.0;
                want += p->beta * c0;
                double tol = (double)(k + 4) * FLT_EPSILON *
                             (fabs(p->alpha) * sa + fabs(p->beta * c0)) + 1e-30;
                if (!(fabs(got - want) <= tol && fabs(got - blas) <= 2 * tol)) {
                    fprintf(stderr, "  gemm %s nt %d: %lldx%lldx%lld ta %d tb %d pad %lld "
                            "alpha %g beta %g: C[%lld][%lld] = %g, want %g, cblas %g\n",
                            kern->name, nt, (long long)m, (long long)n, (long long)k, p->ta,
                            p->tb, (long long)p->pad, p->alpha, p->beta, (long long)i,
                            (long long)j, got, want, blas);
                    ok = false;
                }
            }
        /* the padding of C's rows is untouched */
        for (int64_t i = 0; i < m && ok; i++)
            for (int64_t j = n; j < ldc; j++)
                ok &= memcmp(&c[i * ldc + j], &r[i * ldc + j], sizeof(float)) == 0;
    }
    free(a), free(b), free(r), free(o);
    if (out && ok)
        *out = c;
    else
        free(c);
    return ok;
}

/* The kernels this CPU runs (each at most once). */
static int kernels(const ff_gemm_kernel **ks)
{
    int n = 0;
    int which[3] = {FF_GEMM_K_AVX512, FF_GEMM_K_AVX2, FF_GEMM_K_PORTABLE};
    for (int w = 0; w < 3; w++) {
        const ff_gemm_kernel *k = ff_gemm_select(which[w]);
        bool seen = false;
        for (int i = 0; i < n; i++)
            seen |= ks[i] == k;
        if (!seen)
            ks[n++] = k;
    }
    return n;
}

TEST(gemm_kernels_match_cblas_at_every_edge)
{
    const ff_gemm_kernel *ks[3];
    int nk = kernels(ks);
    CHECK(nk >= 1 && ks[nk - 1] == &ff_gemm_portable);
    int checked = 0;
    for (int q = 0; q < nk; q++) {
        int64_t MR = ks[q]->mr, NR = ks[q]->nr;
        int64_t ms[] = {1, MR - 1, MR, MR + 1, 2 * MR + 3, MR * 16 + 1};
        int64_t ns[] = {1, NR - 1, NR, NR + 1, 3 * NR + 5};
        int64_t kks[] = {1, 7, FF_GEMM_KC, FF_GEMM_KC + 1, 2 * FF_GEMM_KC + 37};
        int c = 0;
        for (size_t im = 0; im < sizeof ms / sizeof *ms; im++)
            for (size_t in = 0; in < sizeof ns / sizeof *ns; in++)
                for (size_t ik = 0; ik < sizeof kks / sizeof *kks; ik++, c++) {
                    /* every transpose, padding and alpha/beta in turn */
                    static const float alphas[] = {1.0f, -0.5f, 2.0f}, betas[] = {0.0f, 1.0f, 0.75f};
                    prod p = {ms[im], ns[in], kks[ik], c & 1, (c >> 1) & 1, (c % 3 == 0) ? 3 : 0,
                              alphas[c % 3], betas[(c / 3) % 3]};
                    if (p.m * p.n * p.k > 4000000) /* keep the double reference fast */
                        p.k = 7;
                    CHECK(check_prod(ks[q], 1, &p, NULL));
                    checked++;
                }
        /* a B panel is GK_NC = 3072 columns: one product crosses it */
        prod wide = {3, 3100, 5, false, true, 1, 1.0f, 0.0f};
        CHECK(check_prod(ks[q], 1, &wide, NULL));
    }
    CHECK(checked == nk * 6 * 5 * 5);
}

TEST(gemm_same_bits_on_any_thread_count)
{
    const ff_gemm_kernel *ks[3];
    int nk = kernels(ks);
    /* wide C (split by columns), tall C (by rows), one too thin to split,
     * one narrower than a tile (computed as its transpose) */
    prod ps[] = {{70, 200, 300, false, true, 0, 1.0f, 0.0f},
                 {301, 40, 257, true, false, 2, 0.5f, 1.0f},
                 {5, 3, 40, false, false, 0, 1.0f, 0.25f},
                 {200, 10, 300, true, true, 1, 1.0f, 0.0f}}; /* narrow: computed transposed */
    for (int q = 0; q < nk; q++)
        for (size_t i = 0; i < sizeof ps / sizeof *ps; i++) {
            float *c1 = NULL, *c2 = NULL, *c3 = NULL;
            CHECK(check_prod(ks[q], 1, &ps[i], &c1));
            CHECK(check_prod(ks[q], 2, &ps[i], &c2));
            CHECK(check_prod(ks[q], 3, &ps[i], &c3));
            size_t bytes = sizeof(float) * (size_t)(ps[i].m * (ps[i].n + ps[i].pad));
            CHECK(c1 && c2 && c3 && memcmp(c1, c2, bytes) == 0 && memcmp(c1, c3, bytes) == 0);
            free(c1), free(c2), free(c3);
        }
}

static ff_tensor *randt(const int64_t *shape, int nd, unsigned seed)
{
    ff_tensor *t = ff_tensor_empty(shape, nd);
    if (t)
        fill(ff_tensor_data(t), ff_tensor_numel(t), seed);
    return t;
}

static double max_abs_diff(const ff_tensor *x, const ff_tensor *y)
{
    double e = 0;
    for (int64_t i = 0; i < ff_tensor_numel(x); i++)
        e = fmax(e, fabs((double)ff_tensor_data(x)[i] - ff_tensor_data(y)[i]));
    return e;
}

static const ff_gemm_algo own_algos[] = {FF_GEMM_OWN, FF_GEMM_OWN_AVX2, FF_GEMM_OWN_PORTABLE};

TEST(gemm_setting_routes_matmul_and_addmm)
{
    /* a (2, 37, 50), b's transpose view (50, 45), a batch of the same b;
     * a slice of a wider matrix */
    int64_t sa[3] = {2, 37, 50}, sb[2] = {45, 50}, sw[2] = {50, 90}, sc[2] = {37, 45};
    ff_tensor *a = randt(sa, 3, 1), *b = randt(sb, 2, 2), *w = randt(sw, 2, 3);
    ff_tensor *bt = ff_tensor_transpose(b, 0, 1), *ws = ff_tensor_narrow(w, 1, 20, 45);
    ff_tensor *a0 = ff_tensor_select(a, 0, 1);
    REQUIRE(a && b && w && bt && ws && a0);
    CHECK(ff_gemm_get_algo() == FF_GEMM_AUTO);
    ff_gemm_set_algo(FF_GEMM_BLAS);
    CHECK(strcmp(ff_gemm_kernel_name(), "blas") == 0);
    ff_tensor *r1 = ff_matmul(a, bt), *r2 = ff_matmul(a0, ws);
    ff_tensor *r3 = randt(sc, 2, 9);
    REQUIRE(r1 && r2 && r3 && ff_addmm_(r3, 0.5f, -2.0f, a0, bt) == FF_OK);
    for (size_t i = 0; i < sizeof own_algos / sizeof *own_algos; i++) {
        ff_gemm_set_algo(own_algos[i]);
        CHECK(strcmp(ff_gemm_kernel_name(), "blas") != 0);
        ff_tensor *o1 = ff_matmul(a, bt), *o2 = ff_matmul(a0, ws), *o3 = randt(sc, 2, 9);
        REQUIRE(o1 && o2 && o3);
        CHECK(ff_addmm_(o3, 0.5f, -2.0f, a0, bt) == FF_OK);
        /* |a| and |b| < 1, k = 50: sums of 50 terms below 1 each */
        CHECK(max_abs_diff(o1, r1) < 1e-5);
        CHECK(max_abs_diff(o2, r2) < 1e-5);
        CHECK(max_abs_diff(o3, r3) < 3e-5);
        CHECK(max_abs_diff(o1, r1) > 0 || max_abs_diff(o2, r2) > 0 ||
              max_abs_diff(o3, r3) > 0); /* another summation order: not BLAS's bits */
        ff_tensor_release(o1), ff_tensor_release(o2), ff_tensor_release(o3);
    }
    ff_gemm_set_algo(FF_GEMM_AUTO);
    ff_tensor_release(r1), ff_tensor_release(r2), ff_tensor_release(r3);
    ff_tensor_release(a), ff_tensor_release(b), ff_tensor_release(w);
    ff_tensor_release(bt), ff_tensor_release(ws), ff_tensor_release(a0);
}

TEST(gemm_matmul_same_bits_on_one_and_two_threads)
{
    /* big enough to be split (n*m*k >= 2^21) */
    int64_t sa[2] = {128, 300}, sb[2] = {300, 200};
    ff_tensor *a = randt(sa, 2, 4), *b = randt(sb, 2, 5);
    REQUIRE(a && b);
    int before = ff_blas_threads();
    for (size_t i = 0; i < sizeof own_algos / sizeof *own_algos; i++) {
        ff_gemm_set_algo(own_algos[i]);
        ff_blas_set_threads(1);
        ff_tensor *o1 = ff_matmul(a, b);
        ff_blas_set_threads(2);
        ff_tensor *o2 = ff_matmul(a, b);
        REQUIRE(o1 && o2);
        CHECK(memcmp(ff_tensor_data(o1), ff_tensor_data(o2), sizeof(float) * 128 * 200) == 0);
        ff_tensor_release(o1), ff_tensor_release(o2);
    }
    ff_blas_set_threads(before);
    ff_gemm_set_algo(FF_GEMM_AUTO);
    ff_tensor_release(a), ff_tensor_release(b);
}
