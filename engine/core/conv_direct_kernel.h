/*
 * conv_direct_kernel.h: the direct convolution loop (see conv_direct.h),
 * included once per instruction set by conv_direct_{avx512,avx2,portable}.c
 * after they define
 *   CD_VL    floats per vector (16, 8, 4)
 *   CD_OB    output channels per register tile of the forward loop
 *   CD_OV    vectors of output channels per tile of the weight gradient
 *   CD_NAME  the ff_cd_kernel it defines
 * The tile is CD_OB channels x 2 vectors: 2*CD_OB accumulators (16 on
 * AVX-512 out of 32 registers, 8 on AVX2 and SSE out of 16), which with two
 * FMA pipes of 4-cycle latency is the 8 independent chains they need.
 */
#include <stdbool.h>
#include <string.h>
#include "conv_direct.h"

typedef float cd_vf __attribute__((vector_size(CD_VL * sizeof(float))));
/* The same for unaligned loads and stores through float pointers (memcpy
 * into a vector was compiled as two half stores and a reload on AVX2). */
typedef float cd_vfu __attribute__((vector_size(CD_VL * sizeof(float)), aligned(sizeof(float)),
                                    may_alias));

/* Where the tile's two vectors lie: output rows r0, r1 and columns c0, c1
 * (two vectors side by side in a row wider than one vector, else the same
 * columns of two rows); lanes past OW or rows past OH are computed on the
 * padding and not stored. */
typedef struct {
    int64_t r[2], c[2];
} cd_tile;

static inline __attribute__((always_inline)) void
cd_tile_run(const ff_cd_geom *g, const cd_tile *t, const float *restrict xpad,
            const float *restrict wt, const float *restrict bt, int nvalid, float *restrict y)
{
    cd_vf acc[CD_OB][2];
#pragma GCC unroll 32
    for (int o = 0; o < CD_OB; o++)
        acc[o][0] = acc[o][1] = (cd_vf){0} + bt[o];
    int64_t plane = g->Hp * g->Wp, kk = g->kh * g->kw;
    const float *p0 = xpad + t->r[0] * g->Wp + t->c[0];
    const float *p1 = xpad + t->r[1] * g->Wp + t->c[1];
    for (int64_t ch = 0; ch < g->C; ch++) {
        const float *w = wt + ch * kk * CD_OB;
        for (int64_t ki = 0; ki < g->kh; ki++) {
            const float *q0 = p0 + ch * plane + ki * g->Wp, *q1 = p1 + ch * plane + ki * g->Wp;
            for (int64_t kj = 0; kj < g->kw; kj++, w += CD_OB) {
                cd_vf x0 = *(const cd_vfu *)(q0 + kj), x1 = *(const cd_vfu *)(q1 + kj);
#pragma GCC unroll 32
                for (int o = 0; o < CD_OB; o++) {
                    acc[o][0] += x0 * w[o];
                    acc[o][1] += x1 * w[o];
                }
            }
        }
    }
    int64_t P = g->OH * g->OW;
    for (int v = 0; v < 2; v++) {
        if (t->r[v] >= g->OH || t->c[v] >= g->OW)
            continue;
        int64_t lanes = g->OW - t->c[v] < CD_VL ? g->OW - t->c[v] : CD_VL;
        float *dst = y + t->r[v] * g->OW + t->c[v];
        for (int o = 0; o < nvalid; o++) {
            if (lanes == CD_VL)
                *(cd_vfu *)(dst + o * P) = acc[o][v];
            else
                memcpy(dst + o * P, &acc[o][v], (size_t)lanes * sizeof(float));
        }
    }
}

/* x̂: each plane copied into the middle of a zeroed Hp x Wp plane. */
static void cd_pad(const ff_cd_geom *g, const float *restrict x, float *restrict xpad)
{
    memset(xpad, 0, ff_cd_xpad_floats(g) * sizeof(float));
    for (int64_t ch = 0; ch < g->C; ch++)
        for (int64_t i = 0; i < g->H; i++)
            memcpy(xpad + (ch * g->Hp + i + g->ph) * g->Wp + g->pw, x + (ch * g->H + i) * g->W,
                   (size_t)g->W * sizeof(float));
}

static void cd_sample(const ff_cd_geom *g, const float *x, const float *wpack,
                      const float *bpack, float *y, float *xpad)
{
    cd_pad(g, x, xpad);
    int64_t kk = g->kh * g->kw;
    bool rows = g->OW <= CD_VL; /* narrow planes: a tile is two rows */
    for (int64_t o0 = 0; o0 < g->O; o0 += CD_OB) {
        const float *wt = wpack + o0 * g->C * kk, *bt = bpack + o0;
        int nvalid = g->O - o0 < CD_OB ? (int)(g->O - o0) : CD_OB;
        float *yo = y + o0 * g->OH * g->OW;
        for (int64_t r = 0; r < g->OH; r += rows ? 2 : 1)
            for (int64_t c = 0; c < g->OW; c += rows ? CD_VL : 2 * CD_VL) {
                cd_tile t = rows ? (cd_tile){{r, r + 1}, {c, c}}
                                 : (cd_tile){{r, r}, {c, c + CD_VL}};
                cd_tile_run(g, &t, xpad, wt, bt, nvalid, yo);
            }
    }
}

/* ---- the weight gradient (3x3 kernels) ----
 *   dw[o, ch, tap] = sum over samples and output pixels p of
 *                    gy[o, p] * x̂[ch, p shifted by the tap]
 * vectorised over the output channels o: gy is transposed per sample to
 * pixel-major rows gyᵀ[p, o] (zero past O up to a whole vector tile), so a
 * tile of CD_OV vectors of output channels x the 9 taps of one input
 * channel is 9*CD_OV accumulators fed, at each pixel, by CD_OV loads of
 * gyᵀ and 9 broadcast x̂ values. No horizontal sums, no wasted lanes on
 * narrow images. Each sample's sums start from zero and are then added to
 * dwᵀ[ch, tap, o] (a sum per sample, then over samples, as sgemm with
 * beta = 1 sums: one chain over a whole batch's pixels lost about 10x more
 * to rounding); dwᵀ is transposed into dw once at the end. */

#define CD_OT (CD_VL * CD_OV) /* output channels per tile */

static int64_t cd_dw_opad(const ff_cd_geom *g) { return (g->O + CD_OT - 1) / CD_OT * CD_OT; }

static void cd_transpose_gy(const ff_cd_geom *g, const float *restrict gy, float *restrict gt)
{
    int64_t P = g->OH * g->OW, Op = cd_dw_opad(g);
    for (int64_t p = 0; p < P; p++) {
        float *row = gt + p * Op;
        for (int64_t o = 0; o < g->O; o++)
            row[o] = gy[o * P + p];
        for (int64_t o = g->O; o < Op; o++)
            row[o] = 0.0f;
    }
}

static inline __attribute__((always_inline)) void
cd_dw_tile(const ff_cd_geom *g, const float *restrict gt, const float *restrict xc,
           float *restrict acc_out)
{
    int64_t Op = cd_dw_opad(g), Wp = g->Wp;
    cd_vf acc[9][CD_OV];
#pragma GCC unroll 32
    for (int t = 0; t < 9; t++)
#pragma GCC unroll 4
        for (int v = 0; v < CD_OV; v++)
            acc[t][v] = (cd_vf){0};
    for (int64_t r = 0; r < g->OH; r++) {
        const float *x0 = xc + r * Wp, *gp = gt + r * g->OW * Op;
        for (int64_t c = 0; c < g->OW; c++, gp += Op) {
            cd_vf gv[CD_OV];
#pragma GCC unroll 4
            for (int v = 0; v < CD_OV; v++)
                gv[v] = *(const cd_vfu *)(gp + v * CD_VL);
#pragma GCC unroll 32
            for (int t = 0; t < 9; t++) {
                float xv = x0[(t / 3) * Wp + c + t % 3];
#pragma GCC unroll 4
                for (int v = 0; v < CD_OV; v++)
                    acc[t][v] += gv[v] * xv;
            }
        }
    }
#pragma GCC unroll 32
    for (int t = 0; t < 9; t++)
#pragma GCC unroll 4
        for (int v = 0; v < CD_OV; v++)
            *(cd_vfu *)(acc_out + t * Op + v * CD_VL) += acc[t][v];
}

static size_t cd_dw_scratch(const ff_cd_geom *g)
{
    int64_t Op = cd_dw_opad(g);
    return ff_cd_xpad_floats(g) + (size_t)(g->OH * g->OW * Op) + (size_t)(g->C * 9 * Op);
}

/* dw (O x C x 3 x 3) = the weight gradient of samples [n0, n1) of x
 * (N x C x H x W) and gy (N x O x OH x OW); scratch of cd_dw_scratch. */
static void cd_dw_range(const ff_cd_geom *g, const float *x, const float *gy, int64_t n0,
                        int64_t n1, float *dw, float *scratch)
{
    int64_t Op = cd_dw_opad(g), P = g->OH * g->OW, plane = g->Hp * g->Wp;
    float *xpad = scratch, *gt = xpad + ff_cd_xpad_floats(g), *dwt = gt + P * Op;
    memset(dwt, 0, (size_t)(g->C * 9 * Op) * sizeof(float));
    for (int64_t n = n0; n < n1; n++) {
        cd_pad(g, x + n * g->C * g->H * g->W, xpad);
        cd_transpose_gy(g, gy + n * g->O * P, gt);
        for (int64_t o0 = 0; o0 < Op; o0 += CD_OT)
            for (int64_t ch = 0; ch < g->C; ch++)
                cd_dw_tile(g, gt + o0, xpad + ch * plane, dwt + ch * 9 * Op + o0);
    }
    for (int64_t o = 0; o < g->O; o++)
        for (int64_t ch = 0; ch < g->C; ch++)
            for (int t = 0; t < 9; t++)
                dw[(o * g->C + ch) * 9 + t] = dwt[(ch * 9 + t) * Op + o];
}

const ff_cd_kernel CD_NAME = {CD_ISA, CD_VL, CD_OB, cd_sample, cd_dw_scratch, cd_dw_range};
