/*
 * conv_direct.h: a direct convolution kernel for stride 1, dilation 1, one
 * group (internal: not part of the public API in engine/include).
 *
 * Why: im2col + sgemm spends its time on the copies (a K x P column matrix,
 * 9x the input for a 3x3 kernel, zeroed and filled per sample) and on
 * OpenBLAS packing both operands of a product whose M is only the 32 or 64
 * output channels of a small CNN. The direct kernel reads a zero-padded
 * copy of the input (1x, not 9x) and keeps a tile of output channels x two
 * vectors of output pixels in registers while it walks the input channels
 * and the kernel taps:
 *   y[o, r, c..c+VL) += x̂[ch, r + ki, c + kj .. + VL) * w[o, ch, ki, kj]
 * with x̂ the padded input, one vector load shared by the tile's channels
 * and one broadcast weight shared by its two vectors.
 *
 * The same loop is compiled three times (conv_direct_kernel.h included by
 * conv_direct_avx512.c, conv_direct_avx2.c, conv_direct_portable.c, each
 * with its own vector width and compiler flags) and chosen at run time by
 * what the CPU supports (__builtin_cpu_supports). Each output is summed
 * in the same order (channel, then tap) whatever the batch split, so the
 * result is the same bits on any thread count; across kernels the bits
 * differ (fused multiply-adds, a different order than sgemm's).
 */
#ifndef FF_CONV_DIRECT_H
#define FF_CONV_DIRECT_H

#include <stddef.h>
#include <stdint.h>

/* One sample's geometry; Hp x Wp is the padded plane (see ff_cd_plan). */
typedef struct {
    int64_t C, H, W, O, kh, kw, ph, pw, OH, OW;
    int64_t Hp, Wp;
} ff_cd_geom;

typedef struct ff_cd_kernel {
    const char *name; /* "avx512", "avx2", "portable" */
    int vl, ob;       /* floats per vector; output channels per tile */
    /* y (O x OH x OW) = conv(x (C x H x W)) + bias, from the packed weights
     * and bias of ff_cd_pack; xpad is scratch of ff_cd_xpad_floats. */
    void (*sample)(const ff_cd_geom *g, const float *x, const float *wpack,
                   const float *bpack, float *y, float *xpad);
    /* The weight gradient of a 3x3 kernel: dw (O x C x 3 x 3) = the sum
     * over samples [n0, n1) of x (N x C x H x W) and gy (N x O x OH x OW),
     * with scratch of dw_scratch(g) floats. */
    size_t (*dw_scratch)(const ff_cd_geom *g);
    void (*dw_range)(const ff_cd_geom *g, const float *x, const float *gy, int64_t n0, int64_t n1,
                     float *dw, float *scratch);
} ff_cd_kernel;

extern const ff_cd_kernel ff_cd_avx512, ff_cd_avx2, ff_cd_portable;

/* Which kernels: FF_CD_AUTO picks the widest the CPU runs; the others force
 * one (a kernel the CPU cannot run falls back to the next narrower). */
enum { FF_CD_AUTO, FF_CD_AVX512, FF_CD_AVX2, FF_CD_PORTABLE };
const ff_cd_kernel *ff_cd_select(int which);

/* The padded plane's size for kernel k (rows and columns rounded up so that
 * every vector the kernel loads lies inside it). */
void ff_cd_plan(ff_cd_geom *g, const ff_cd_kernel *k);

size_t ff_cd_xpad_floats(const ff_cd_geom *g);
size_t ff_cd_wpack_floats(const ff_cd_geom *g, const ff_cd_kernel *k);
size_t ff_cd_bpack_floats(const ff_cd_geom *g, const ff_cd_kernel *k);

/* wpack[tile][ch][tap][ob] from w (O x C x kh x kw), zero past O; bpack the
 * bias (stride bs, or zeros when b is NULL) padded the same way. */
void ff_cd_pack(const ff_cd_geom *g, const ff_cd_kernel *k, const float *w, const float *b,
                int64_t bs, float *wpack, float *bpack);

#endif
