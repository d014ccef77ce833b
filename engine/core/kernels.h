/*
 * kernels.h: small loops shared by several files of the core (internal:
 * not part of the public API in engine/include).
 */
#ifndef FF_KERNELS_H
#define FF_KERNELS_H

#include <stdint.h>

/* A function built twice, for AVX2 and for the baseline, the loader
 * picking one for the CPU (gcc's target_clones), for loops bound by
 * instructions that the wider vectors halve. Only for code whose two
 * builds give the same bits: AVX2 alone brings no fused multiply-add
 * (op_norm.c and reduce.c say why their sums qualify). One build under
 * clang and the sanitizers, whose ifunc support the fuzz build lacks. */
#if defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define FF_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define FF_CLONES
#endif

/* Σ x[0..n) accumulated in double over eight lanes (vectorisable, and
 * the same order whatever the caller). Defined in op_norm.c. */
double ff_kernel_sum(const float *x, int64_t n);

#endif
