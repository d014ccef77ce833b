/*
 * gemm.h: the engine's own single-precision matrix product (internal: not
 * part of the public API in engine/include).
 *
 * Why: OpenBLAS is pinned to its Haswell (AVX2) kernels on these machines
 * (OPENBLAS_CORETYPE, see tests/bench/README.md), about 107 GFLOP/s on one
 * thread, while the CPU runs AVX-512 at full width. The products of an MLP
 * step (128 x 784 x 256 and its transposes) are most of its time.
 *
 * The design is GotoBLAS/BLIS's: B is packed in panels of kc rows x NR
 * columns, A in panels of MR rows x kc columns (both zero-padded to whole
 * panels, whatever the transposes), and a register-blocked micro-kernel
 * keeps an MR x NR tile of C in vector registers while it walks kc.
 * The same code is compiled three times (gemm_kernel.h included by
 * gemm_avx512.c, gemm_avx2.c, gemm_portable.c with their own vector width
 * and flags) and chosen at run time by what the CPU supports.
 *
 * Bits: each element of C is summed in one fixed order (k-blocks of
 * FF_GEMM_KC in order, k in order inside a block, fused multiply-adds
 * where the instruction set has them), and threads split C into whole
 * tiles, so the result is the same bits on any thread count. Across
 * kernels, and against OpenBLAS, the bits differ (another order).
 */
#ifndef FF_GEMM_H
#define FF_GEMM_H

#include <stdbool.h>
#include <stdint.h>

/* k is cut into blocks of this many: a B micro-panel (KC x NR floats) stays
 * in L1 while the A panels stream past it from L2. Part of the summation
 * order, so the same for every kernel and every thread count. */
#define FF_GEMM_KC 256

typedef struct ff_gemm_kernel {
    const char *name; /* "avx512", "avx2", "portable" */
    int mr, nr;       /* the register tile: rows x columns of C */
    /* C (m x n, row stride ldc) = alpha*op(A)*op(B) + beta*C on the block
     * of rows [i0, i1) and columns [j0, j1) of C only (i0 a multiple of mr,
     * j0 of nr: the tiles fall where they would in the whole product), for
     * the thread split; op(X) is X or its transpose (ta, tb), row-major
     * storage with leading dimension ld. beta = 0 never reads C. With ct,
     * element (i, j) is stored at c[j*ldc + i] instead: the caller computes
     * C = (op(B)ᵀ op(A)ᵀ)ᵀ, which sums every element in the same order (a
     * product's factors commute exactly), for a C narrower than a tile. */
    void (*block)(bool ta, bool tb, int64_t k, float alpha, const float *a, int64_t lda,
                  const float *b, int64_t ldb, float beta, float *c, int64_t ldc, int64_t i0,
                  int64_t i1, int64_t j0, int64_t j1, bool ct);
} ff_gemm_kernel;

extern const ff_gemm_kernel ff_gemm_avx512, ff_gemm_avx2, ff_gemm_portable;

/* Which kernel: FF_GEMM_K_AUTO picks the widest the CPU runs; the others
 * force one (a kernel the CPU cannot run falls back to the next narrower). */
enum { FF_GEMM_K_AUTO, FF_GEMM_K_AVX512, FF_GEMM_K_AVX2, FF_GEMM_K_PORTABLE };
const ff_gemm_kernel *ff_gemm_select(int which);

/* The whole product on nt threads (the engine's pool, parallel.h): C is
 * split into runs of whole column tiles, or of row tiles when C has fewer
 * column tiles than threads. A C narrower than a tile of columns and
 * taller than one is computed transposed (ct above), which fills the
 * tiles better: the same bits. Sizes >= 1. */
void ff_gemm_run(const ff_gemm_kernel *kern, int nt, bool ta, bool tb, int64_t m, int64_t n,
                 int64_t k, float alpha, const float *a, int64_t lda, const float *b,
                 int64_t ldb, float beta, float *c, int64_t ldc);

/* One product C = alpha*op(A)*op(B) + beta*C with the kernel matmul would
 * choose for its shape: the own kernel on OpenBLAS's thread count (one
 * below FF_GEMM_SERIAL_WORK multiply-adds), or OpenBLAS. For the
 * products of other ops (a convolution's per sample, op_conv.c), which
 * set OpenBLAS to one thread while they split their own loop over the
 * engine's threads. Defined in matmul.c. */
void ff_sgemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float *a,
              int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc);

#endif
