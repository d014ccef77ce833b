/*
 * kernels.h: small loops shared by several files of the core (internal:
 * not part of the public API in engine/include).
 */
#ifndef FF_KERNELS_H
#define FF_KERNELS_H

#include <stdint.h>

/* Σ x[0..n) accumulated in double over eight lanes (vectorisable, and
 * the same order whatever the caller). Defined in op_norm.c. */
double ff_kernel_sum(const float *x, int64_t n);

#endif
