/*
 * gemm_portable.c: the engine's sgemm loops for portable (4 floats per vector,
 * register tiles of 6 rows x 2 vectors); see gemm.h.
 * Built with its own -m flags (Makefile) and called only after
 * ff_gemm_select has checked the CPU runs them.
 */
#include <stdbool.h>
#define GK_VL 4
#define GK_MR 6
#define GK_NV 2
#define GK_NAME ff_gemm_portable
#define GK_ISA "portable"
#include "gemm_kernel.h"
