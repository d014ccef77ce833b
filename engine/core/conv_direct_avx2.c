/*
 * conv_direct_avx2.c: the direct convolution loop for avx2 (8 floats per
 * vector, tiles of 4 output channels); see conv_direct.h.
 * Built with its own -m flags (Makefile) and called only after
 * ff_cd_select has checked the CPU runs them.
 */
#include <stdbool.h>
#define CD_VL 8
#define CD_OB 4
#define CD_OV 1
#define CD_NAME ff_cd_avx2
#define CD_ISA "avx2"
#include "conv_direct_kernel.h"
