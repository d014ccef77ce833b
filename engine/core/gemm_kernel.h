/*
 * gemm_kernel.h: packing and the register-blocked loops of the engine's
 * sgemm (see gemm.h), included once per instruction set by
 * gemm_{avx512,avx2,portable}.c after they define
 *   GK_VL    floats per vector (16, 8, 4)
 *   GK_MR    rows of C per register tile
 *   GK_NV    vectors of columns per register tile (NR = GK_NV * GK_VL)
 *   GK_NAME  the ff_gemm_kernel it defines, GK_ISA its name
 * The tile's MR x NV accumulators plus NV vectors of B and one broadcast
 * of A must fit the register file (32 on AVX-512, 16 on AVX2 and SSE),
 * and with two FMA pipes of 4-cycle latency at least 8 independent
 * accumulator chains are needed to keep them busy.
 */
#include <stdlib.h>
#include <string.h>
#include "gemm.h"

#define GK_NR (GK_NV * GK_VL)

#if GK_VL == 16 && defined(__AVX512F__)
#include <immintrin.h>
/* r[q] = column q of the 16 x 16 block r (rows r[0..15]): unpack pairs of
 * rows, then shuffle 32-bit elements, then 128-bit lanes twice. */
static inline __attribute__((always_inline)) void gk_transpose16(__m512 r[16])
{
    __m512 t[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) {
        r[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(1, 0, 1, 0));
        r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(3, 2, 3, 2));
        r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(1, 0, 1, 0));
        r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    for (int i = 0; i < 2; i++)
        for (int c = 0; c < 4; c++) {
            t[8 * i + c] = _mm512_shuffle_f32x4(r[8 * i + c], r[8 * i + 4 + c], 0x88);
            t[8 * i + 4 + c] = _mm512_shuffle_f32x4(r[8 * i + c], r[8 * i + 4 + c], 0xDD);
        }
    for (int c = 0; c < 8; c++) {
        r[c] = _mm512_shuffle_f32x4(t[c], t[8 + c], 0x88);
        r[8 + c] = _mm512_shuffle_f32x4(t[c], t[8 + c], 0xDD);
    }
}
#endif
/* Rows of A packed per block (the A block, MC x KC floats, stays in L2) and
 * columns of B per packed panel. Neither is part of the summation order. */
#define GK_MC (GK_MR * 16)
#define GK_NC 3072

typedef float gk_vf __attribute__((vector_size(GK_VL * sizeof(float))));
/* Unaligned loads and stores through float pointers (C's rows). */
typedef float gk_vfu __attribute__((vector_size(GK_VL * sizeof(float)), aligned(sizeof(float)),
                                    may_alias));

/* An MR x NR tile of C (mv x nv of it real) from an A panel (kc x MR,
 * column of the tile first) and a B panel (kc x NR); with ct the tile is
 * stored transposed (element i, j at c[j*ldc + i]: see gk_block). */
static inline __attribute__((always_inline)) void
gk_micro(int64_t kc, const float *restrict ap, const float *restrict bp, float *restrict c,
         int64_t ldc, int mv, int nv, float alpha, float beta, bool ct)
{
    gk_vf acc[GK_MR][GK_NV];
#pragma GCC unroll 64
    for (int i = 0; i < GK_MR; i++)
#pragma GCC unroll 8
        for (int v = 0; v < GK_NV; v++)
            acc[i][v] = (gk_vf){0};
    for (int64_t p = 0; p < kc; p++) {
        gk_vf bv[GK_NV];
#pragma GCC unroll 8
        for (int v = 0; v < GK_NV; v++)
            bv[v] = *(const gk_vf *)(bp + p * GK_NR + v * GK_VL);
        const float *ar = ap + p * GK_MR;
#pragma GCC unroll 64
        for (int i = 0; i < GK_MR; i++)
#pragma GCC unroll 8
            for (int v = 0; v < GK_NV; v++)
                acc[i][v] += bv[v] * ar[i];
    }
    if (mv == GK_MR && nv == GK_NR && !ct) {
#pragma GCC unroll 64
        for (int i = 0; i < GK_MR; i++)
#pragma GCC unroll 8
            for (int v = 0; v < GK_NV; v++) {
                gk_vfu *dst = (gk_vfu *)(c + i * ldc + v * GK_VL);
                if (beta == 0.0f)
                    *dst = acc[i][v] * alpha;
                else if (beta == 1.0f)
                    *dst += acc[i][v] * alpha;
                else
                    *dst = *dst * beta + acc[i][v] * alpha;
            }
        return;
    }
    /* An edge tile or a transposed one: the same arithmetic, element by
     * element. */
    float t[GK_MR][GK_NR] __attribute__((aligned(64)));
    memcpy(t, acc, sizeof t);
    for (int i = 0; i < mv; i++)
        for (int j = 0; j < nv; j++) {
            float *dst = ct ? c + j * ldc + i : c + i * ldc + j;
            if (beta == 0.0f)
                *dst = t[i][j] * alpha;
            else if (beta == 1.0f)
                *dst += t[i][j] * alpha;
            else
                *dst = *dst * beta + t[i][j] * alpha;
        }
}

/* B's rows [pc, pc + kc) and columns [jc, jc + nc) as panels of kc x NR,
 * columns past nc zero. op(B)[p][j] is b[p*ldb + j], or b[j*ldb + p].
 * Whole panels are copied a vector at a time, or (transposed) in runs of 8
 * k per column, which reads each source row's cache line once: 1.7x and
 * 2.5x faster than a memcpy per row and a column at a time. */
static void gk_pack_b(bool tb, const float *restrict b, int64_t ldb, int64_t pc, int64_t kc,
                      int64_t jc, int64_t nc, float *restrict bp)
{
    for (int64_t jp = 0; jp < nc; jp += GK_NR, bp += kc * GK_NR) {
        int64_t w = nc - jp < GK_NR ? nc - jp : GK_NR;
        if (!tb && w == GK_NR) {
            const float *src = b + pc * ldb + jc + jp;
            for (int64_t p = 0; p < kc; p++)
#pragma GCC unroll 8
                for (int v = 0; v < GK_NV; v++)
                    *(gk_vf *)(bp + p * GK_NR + v * GK_VL) =
                        *(const gk_vfu *)(src + p * ldb + v * GK_VL);
        } else if (!tb) {
            const float *src = b + pc * ldb + jc + jp;
            for (int64_t p = 0; p < kc; p++) {
                memcpy(bp + p * GK_NR, src + p * ldb, (size_t)w * sizeof(float));
                memset(bp + p * GK_NR + w, 0, (size_t)(GK_NR - w) * sizeof(float));
            }
        } else {
            const float *src = b + (jc + jp) * ldb + pc;
            int64_t p = 0;
#if GK_VL == 16 && defined(__AVX512F__)
            /* 16 x 16 blocks through registers: 35 -> 16 us for 784x256 */
            for (; w == GK_NR && p + 16 <= kc; p += 16)
                for (int h = 0; h < GK_NV; h++) {
                    __m512 r[16];
                    for (int i = 0; i < 16; i++)
                        r[i] = _mm512_loadu_ps(src + (h * 16 + i) * ldb + p);
                    gk_transpose16(r);
                    for (int q = 0; q < 16; q++)
                        _mm512_store_ps(bp + (p + q) * GK_NR + h * 16, r[q]);
                }
#endif
            for (; w == GK_NR && p + 8 <= kc; p += 8)
                for (int64_t j = 0; j < GK_NR; j++)
#pragma GCC unroll 8
                    for (int q = 0; q < 8; q++)
                        bp[(p + q) * GK_NR + j] = src[j * ldb + p + q];
            for (; p < kc; p++)
                for (int64_t j = 0; j < GK_NR; j++)
                    bp[p * GK_NR + j] = j < w ? src[j * ldb + p] : 0.0f;
        }
    }
}

/* A's rows [ic, ic + mc) and columns [pc, pc + kc) as panels of kc x MR
 * (each k's MR rows side by side), rows past mc zero. op(A)[i][p] is
 * a[i*lda + p], or a[p*lda + i]. */
static void gk_pack_a(bool ta, const float *restrict a, int64_t lda, int64_t ic, int64_t mc,
                      int64_t pc, int64_t kc, float *restrict ap)
{
    for (int64_t ip = 0; ip < mc; ip += GK_MR, ap += kc * GK_MR) {
        int64_t h = mc - ip < GK_MR ? mc - ip : GK_MR;
        if (!ta) { /* in runs of 8 k per row, as gk_pack_b */
            const float *src = a + (ic + ip) * lda + pc;
            int64_t p = 0;
            for (; h == GK_MR && p + 8 <= kc; p += 8)
                for (int64_t i = 0; i < GK_MR; i++)
#pragma GCC unroll 8
                    for (int q = 0; q < 8; q++)
                        ap[(p + q) * GK_MR + i] = src[i * lda + p + q];
            for (; p < kc; p++)
                for (int64_t i = 0; i < GK_MR; i++)
                    ap[p * GK_MR + i] = i < h ? src[i * lda + p] : 0.0f;
        } else {
            const float *src = a + pc * lda + ic + ip;
            for (int64_t p = 0; p < kc; p++) {
                memcpy(ap + p * GK_MR, src + p * lda, (size_t)h * sizeof(float));
                if (h < GK_MR)
                    memset(ap + p * GK_MR + h, 0, (size_t)(GK_MR - h) * sizeof(float));
            }
        }
    }
}

/* C's block [i0, i1) x [j0, j1) (see gemm.h). With ct the product is
 * computed transposed: the caller passes op(B)ᵀ as a and op(A)ᵀ as b, and
 * element (i, j) of that product lands at c[j*ldc + i]. */
static void gk_block(bool ta, bool tb, int64_t k, float alpha, const float *a, int64_t lda,
                     const float *b, int64_t ldb, float beta, float *c, int64_t ldc, int64_t i0,
                     int64_t i1, int64_t j0, int64_t j1, bool ct)
{
    int64_t ncmax = j1 - j0 < GK_NC ? j1 - j0 : GK_NC;
    int64_t kcmax = k < FF_GEMM_KC ? k : FF_GEMM_KC;
    int64_t mcmax = i1 - i0 < GK_MC ? i1 - i0 : GK_MC;
    size_t nb = (size_t)((ncmax + GK_NR - 1) / GK_NR * GK_NR * kcmax);
    size_t na = (size_t)((mcmax + GK_MR - 1) / GK_MR * GK_MR * kcmax);
    /* Scratch of malloc, not the engine's allocator: internal, freed here
     * (aligned_alloc wants a size that is a multiple of the alignment). */
    size_t bytes = ((nb + na) * sizeof(float) + 64 + 63) / 64 * 64;
    float *bp = aligned_alloc(64, bytes);
    if (!bp) { /* no scratch: the same product one element at a time (slow;
                * its own summation order, so other bits than the kernel's) */
        for (int64_t i = i0; i < i1; i++)
            for (int64_t j = j0; j < j1; j++) {
                float s = 0.0f;
                for (int64_t p = 0; p < k; p++)
                    s += (ta ? a[p * lda + i] : a[i * lda + p]) *
                         (tb ? b[j * ldb + p] : b[p * ldb + j]);
                float *dst = ct ? c + j * ldc + i : c + i * ldc + j;
                *dst = beta == 0.0f ? s * alpha : *dst * beta + s * alpha;
            }
        return;
    }
    float *ap = bp + (nb + 15) / 16 * 16;
    for (int64_t jc = j0; jc < j1; jc += GK_NC) {
        int64_t nc = j1 - jc < GK_NC ? j1 - jc : GK_NC;
        for (int64_t pc = 0; pc < k; pc += FF_GEMM_KC) {
            int64_t kc = k - pc < FF_GEMM_KC ? k - pc : FF_GEMM_KC;
            float be = pc == 0 ? beta : 1.0f; /* later blocks add to C */
            gk_pack_b(tb, b, ldb, pc, kc, jc, nc, bp);
            for (int64_t ic = i0; ic < i1; ic += GK_MC) {
                int64_t mc = i1 - ic < GK_MC ? i1 - ic : GK_MC;
                gk_pack_a(ta, a, lda, ic, mc, pc, kc, ap);
                for (int64_t jr = 0; jr < nc; jr += GK_NR) {
                    int nv = (int)(nc - jr < GK_NR ? nc - jr : GK_NR);
                    for (int64_t ir = 0; ir < mc; ir += GK_MR) {
                        int mv = (int)(mc - ir < GK_MR ? mc - ir : GK_MR);
                        int64_t ti = ic + ir, tj = jc + jr;
                        gk_micro(kc, ap + ir * kc, bp + jr * kc,
                                 ct ? c + tj * ldc + ti : c + ti * ldc + tj, ldc, mv, nv, alpha,
                                 be, ct);
                    }
                }
            }
        }
    }
    free(bp);
}

const ff_gemm_kernel GK_NAME = {GK_ISA, GK_MR, GK_NR, gk_block};
