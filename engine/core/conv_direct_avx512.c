/*
 * conv_direct_avx512.c: the direct convolution loop for avx512 (16 floats per
 * vector, tiles of 8 output channels); see conv_direct.h.
 * Built with its own -m flags (Makefile) and called only after
 * ff_cd_select has checked the CPU runs them.
 */
#include <stdbool.h>
#define CD_VL 16
#define CD_OB 8
#define CD_OV 2
#define CD_NAME ff_cd_avx512
#define CD_ISA "avx512"
#include "conv_direct_kernel.h"
