/*
 * conv_direct.c: choosing, planning and packing for the direct convolution
 * kernels (the loops themselves: conv_direct_kernel.h).
 */
#include <stdbool.h>
#include <string.h>
#include "conv_direct.h"
#include "kernels.h"

const ff_cd_kernel *ff_cd_select(int which)
{
    if ((which == FF_CD_AUTO || which == FF_CD_AVX512) && ff_cpu_avx512())
        return &ff_cd_avx512;
    if (which != FF_CD_PORTABLE && ff_cpu_avx2())
        return &ff_cd_avx2;
    return &ff_cd_portable;
}

static int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

void ff_cd_plan(ff_cd_geom *g, const ff_cd_kernel *k)
{
    /* A tile reads rows up to its second row + kh - 1 (the second may be
     * one past the last output row) and columns up to its last vector's
     * end + kw - 1. */
    g->Hp = g->OH + g->kh;
    g->Wp = (g->OW <= k->vl ? k->vl : round_up(g->OW, 2 * (int64_t)k->vl)) + g->kw - 1;
}

size_t ff_cd_xpad_floats(const ff_cd_geom *g)
{
    return (size_t)(g->C * g->Hp * g->Wp);
}

size_t ff_cd_wpack_floats(const ff_cd_geom *g, const ff_cd_kernel *k)
{
    return (size_t)(round_up(g->O, k->ob) * g->C * g->kh * g->kw);
}

size_t ff_cd_bpack_floats(const ff_cd_geom *g, const ff_cd_kernel *k)
{
    return (size_t)round_up(g->O, k->ob);
}

void ff_cd_pack(const ff_cd_geom *g, const ff_cd_kernel *k, const float *w, const float *b,
                int64_t bs, float *wpack, float *bpack)
{
    int64_t kk = g->kh * g->kw, ob = k->ob, Op = round_up(g->O, ob);
    for (int64_t o = 0; o < Op; o++) {
        bpack[o] = b && o < g->O ? b[o * bs] : 0.0f;
        float *dst = wpack + (o / ob) * ob * g->C * kk + o % ob;
        for (int64_t ch = 0; ch < g->C; ch++)
            for (int64_t t = 0; t < kk; t++)
                dst[(ch * kk + t) * ob] = o < g->O ? w[(o * g->C + ch) * kk + t] : 0.0f;
    }
}
