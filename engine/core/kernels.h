/*
 * kernels.h: CPU checks and small loops shared by several files of the core (internal:
 * not part of the public API in engine/include).
 */
#ifndef FF_KERNELS_H
#define FF_KERNELS_H

#include <stdbool.h>
#include <stdint.h>

/* What the CPU runs, for kernels compiled once per instruction set and
 * chosen at run time (conv_direct.c, gemm.c). __builtin_cpu_supports
 * reads a table libgcc fills once; the answer never changes within a
 * process. AVX-512 and AVX2 kernels both use fused multiply-adds. */
static inline bool ff_cpu_avx512(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma");
#else
    return false;
#endif
}

static inline bool ff_cpu_avx2(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return false;
#endif
}

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
