/*
 * linalg.c: linear-algebra functions that are not autograd ops, for Lua.
 *
 *   ff.linalg.eigh(A [, {k = d, largest = false}]) -> values, vectors
 *       eigenpairs of symmetric matrices (..., d, d), lower triangle read:
 *       values (..., k) ascending, vectors (..., d, k), column j for
 *       values[..., j] (engine/core/eigh.c, LAPACK ssyevr)
 *   ff.unfold(x, kernel [, {stride = 1, padding = 0, dilation = 1}])
 *       im2col of x (N, C, H, W) to (N, C*kh*kw, L), torch's layout;
 *       kernel and each option a number or {h, w} (engine/core/op_conv.c)
 *
 * Both return tensors without gradient history: nothing is recorded, so
 * a backward pass stops at them.
 *
 * Rule for every function here: check every argument before taking any
 * engine reference, because luaL_error longjmps.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include "lf.h"

/* ---- eigh ---- */

static int l_eigh(lua_State *L)
{
    static const char *const known[] = {"k", "largest", NULL};
    const char *fn = "linalg.eigh";
    ff_tensor *A = lf_checktensor(L, 1);
    int opts = lf_opt_table(L, 2, fn, known);
    int64_t d = A->ndim >= 1 ? A->shape[A->ndim - 1] : 0, k = d;
    bool largest = false;
    /* (the core checks k's range against A) */
    k = (int64_t)lf_opt_integer(L, opts, fn, "k", (lua_Integer)(d > INT32_MAX ? INT32_MAX : d));
    largest = lf_opt_boolean(L, opts, fn, "largest", false);
    ff_tensor *values, *vectors;
    ff_status st = ff_eigh(A, k, largest, &values, &vectors);
    if (st == FF_ERR_MEM) {
        lua_gc(L, LUA_GCCOLLECT);
        st = ff_eigh(A, k, largest, &values, &vectors);
    }
    if (st)
        return lf_raise(L);
    lf_pushtensor(L, values);
    lf_pushtensor(L, vectors);
    return 2;
}

/* ---- unfold ---- */


static int l_unfold(lua_State *L)
{
    static const char *const known[] = {"stride", "padding", "dilation", NULL};
    const char *fn = "unfold";
    ff_tensor *x = lf_checktensor(L, 1);
    int64_t kernel[2], stride[2] = {1, 1}, pad[2] = {0, 0}, dil[2] = {1, 1};
    if (lua_isnoneornil(L, 2))
        return luaL_error(L, "%s: argument #2 (kernel) must be a number or a pair {kh, kw}, got %s",
                          fn, luaL_typename(L, 2));
    lf_check_pair(L, 2, fn, "kernel", kernel);
    int opts = lf_opt_table(L, 3, fn, known);
    lf_opt_pair(L, opts, fn, "stride", stride);
    lf_opt_pair(L, opts, fn, "padding", pad);
    lf_opt_pair(L, opts, fn, "dilation", dil);
    ff_tensor *r;
    LF_RETRY(L, r, ff_unfold(x, kernel, stride, pad, dil));
    lf_pushtensor(L, r);
    return 1;
}

/* ---- registration ---- */

static const luaL_Reg linalg_fns[] = {{"eigh", l_eigh}, {NULL, NULL}};

void lf_open_linalg(lua_State *L)
{
    luaL_newlib(L, linalg_fns);
    lua_setfield(L, -2, "linalg");
    lua_pushcfunction(L, l_unfold);
    lua_setfield(L, -2, "unfold");
}
