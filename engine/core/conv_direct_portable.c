/*
 * conv_direct_portable.c: the direct convolution loop for portable (4 floats per
 * vector, tiles of 4 output channels); see conv_direct.h.
 * Plain C vectors (SSE2 on x86-64): the fallback for any CPU.
 */
#include <stdbool.h>
#define CD_VL 4
#define CD_OB 4
#define CD_OV 1
#define CD_NAME ff_cd_portable
#define CD_ISA "portable"
#include "conv_direct_kernel.h"
