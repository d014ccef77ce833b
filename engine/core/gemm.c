/*
 * gemm.c: choosing the engine's sgemm kernel and splitting a product over
 * the engine's threads (the loops themselves: gemm_kernel.h).
 */
#include "gemm.h"
#include "kernels.h"
#include "parallel.h"

const ff_gemm_kernel *ff_gemm_select(int which)
{
    if ((which == FF_GEMM_K_AUTO || which == FF_GEMM_K_AVX512) && ff_cpu_avx512())
        return &ff_gemm_avx512;
    if (which != FF_GEMM_K_PORTABLE && ff_cpu_avx2())
        return &ff_gemm_avx2;
    return &ff_gemm_portable;
}

typedef struct {
    const ff_gemm_kernel *kern;
    bool ta, tb, by_rows, ct;
    int64_t m, n, k, lda, ldb, ldc;
    float alpha, beta;
    const float *a, *b;
    float *c;
} gemm_job;

/* Tiles [t0, t1) of the split dimension, as a block of C. */
static void gemm_range(void *arg, int t, int64_t t0, int64_t t1)
{
    const gemm_job *g = arg;
    int64_t i0 = 0, i1 = g->m, j0 = 0, j1 = g->n;
    if (g->by_rows) {
        i0 = t0 * g->kern->mr;
        i1 = t1 * g->kern->mr < g->m ? t1 * g->kern->mr : g->m;
    } else {
        j0 = t0 * g->kern->nr;
        j1 = t1 * g->kern->nr < g->n ? t1 * g->kern->nr : g->n;
    }
    g->kern->block(g->ta, g->tb, g->k, g->alpha, g->a, g->lda, g->b, g->ldb, g->beta, g->c, g->ldc,
                   i0, i1, j0, j1, g->ct);
}

/* The share of a tiling's tiles that is real work. */
static double fill_of(const ff_gemm_kernel *kern, int64_t m, int64_t n)
{
    int64_t tm = (m + kern->mr - 1) / kern->mr, tn = (n + kern->nr - 1) / kern->nr;
    return (double)m * n / ((double)tm * kern->mr * tn * kern->nr);
}

void ff_gemm_run(const ff_gemm_kernel *kern, int nt, bool ta, bool tb, int64_t m, int64_t n,
                 int64_t k, float alpha, const float *a, int64_t lda, const float *b,
                 int64_t ldb, float beta, float *c, int64_t ldc)
{
    /* A C narrower than a tile (128 x 10 fills 31% of 12 x 32 tiles) as
     * its transpose (83%): op(B)ᵀ op(A)ᵀ, stored transposed. */
    bool ct = n < kern->nr && fill_of(kern, n, m) > 1.25 * fill_of(kern, m, n);
    if (ct) {
        const float *t = a;
        a = b, b = t;
        int64_t tl = lda;
        lda = ldb, ldb = tl;
        bool tt = ta;
        ta = !tb, tb = !tt;
        tl = m;
        m = n, n = tl;
    }
    int64_t tm = (m + kern->mr - 1) / kern->mr, tn = (n + kern->nr - 1) / kern->nr;
    /* A thread packs all of the operand it does not split: split columns
     * (each thread packs all of A, m x k) unless B (k x n) is the smaller
     * one to repeat, or there are too few column tiles to go round. */
    bool by_rows = (tn < nt) || (n < m && tm >= nt);
    gemm_job g = {kern, ta, tb, by_rows, ct, m, n, k, lda, ldb, ldc, alpha, beta, a, b, c};
    int64_t tiles = by_rows ? tm : tn;
    if (nt > tiles)
        nt = (int)tiles;
    if (nt <= 1)
        gemm_range(&g, 0, 0, tiles);
    else
        ff_par_run(nt, tiles, gemm_range, &g);
}
