/*
 * gemm_avx512.c: the engine's sgemm loops for avx512 (16 floats per vector,
 * register tiles of 12 rows x 2 vectors); see gemm.h.
 * Built with its own -m flags (Makefile) and called only after
 * ff_gemm_select has checked the CPU runs them.
 */
#include <stdbool.h>
#define GK_VL 16
#define GK_MR 12
#define GK_NV 2
#define GK_NAME ff_gemm_avx512
#define GK_ISA "avx512"
#include "gemm_kernel.h"
