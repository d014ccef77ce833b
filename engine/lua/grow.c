/*
 * grow.c: engine helpers of lib/firefly/grow (internal: growth calls them).
 *
 *   core._grow_project_rows(v, eps) -> v
 *       every row of v (dim 0) to L2 norm <= eps, in place
 *   core._grow_project_neurons(e, u, b, o, eps) -> nil
 *       gated neurons: e clamped to [-eps, eps], (u_j, b_j, o_j) to norm
 *       <= 1, in place
 * Both are step 1's projection (methods/firefly.lua), the same bits as its
 * composition of tensor ops; see ff_grow_project_* in ff_ops.h. Like any
 * in-place update of a tensor that requires grad, they run under no-grad.
 */
#include "lf.h"

static ff_tensor *inplace_arg(lua_State *L, int arg, const char *fn)
{
    ff_tensor *t = lf_checktensor(L, arg);
    lf_check_inplace(L, t, fn);
    return t;
}

static int l_grow_project_rows(lua_State *L)
{
    ff_tensor *v = inplace_arg(L, 1, "grow_project_rows");
    double eps = luaL_checknumber(L, 2);
    lf_check(L, ff_grow_project_rows(v, eps));
    lua_settop(L, 1);
    return 1;
}

static int l_grow_project_neurons(lua_State *L)
{
    static const char fn[] = "grow_project_neurons";
    ff_tensor *e = inplace_arg(L, 1, fn), *u = inplace_arg(L, 2, fn);
    ff_tensor *b = inplace_arg(L, 3, fn), *o = inplace_arg(L, 4, fn);
    double eps = luaL_checknumber(L, 5);
    lf_check(L, ff_grow_project_neurons(e, u, b, o, eps));
    return 0;
}

static const luaL_Reg grow_fns[] = {
    {"_grow_project_rows", l_grow_project_rows},
    {"_grow_project_neurons", l_grow_project_neurons},
    {NULL, NULL},
};

void lf_open_grow(lua_State *L)
{
    luaL_setfuncs(L, grow_fns, 0);
}
