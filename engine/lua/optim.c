/*
 * optim.c: the fused optimiser step for lib/firefly/optim (internal: the
 * optimisers call it; users call opt:step()).
 *
 *   core._optim_step(kind, opts, entries, check_finite) -> nil | i
 *       kind "SGD", "Adam", "AdamW" or "RMSprop"; opts the optimiser
 *       (fields lr, momentum, dampening, nesterov, weight_decay, betas,
 *       eps, alpha, centered, read when present); entries a flat list, 7
 *       values per parameter: param, grad, buffer 1, 2, 3 (false when
 *       unused), step count (>= 1), fresh (SGD: start the momentum
 *       buffer). Returns the 1-based index of the first parameter whose
 *       gradient is not finite (nothing is updated then), else nil.
 *       See ff_optim_step (ff_ops.h) for the rules.
 *
 * Every argument is read before any engine call, as luaL_error longjmps;
 * the entries only borrow the tensors Lua holds.
 */
#include <string.h>
#include "lf.h"

#define ENTRY_FIELDS 7
#define MAX_ENTRIES 4096

static double num_field(lua_State *L, int t, const char *k)
{
    lua_getfield(L, t, k);
    double v = lua_type(L, -1) == LUA_TNUMBER ? lua_tonumber(L, -1) : 0.0;
    lua_pop(L, 1);
    return v;
}

static bool bool_field(lua_State *L, int t, const char *k)
{
    lua_getfield(L, t, k);
    bool v = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

static int l_optim_step(lua_State *L)
{
    static const char *const kinds[] = {"SGD", "Adam", "AdamW", "RMSprop", NULL};
    static const ff_optim_kind kind_of[] = {FF_OPTIM_SGD, FF_OPTIM_ADAM, FF_OPTIM_ADAMW,
                                            FF_OPTIM_RMSPROP};
    int k = luaL_checkoption(L, 1, NULL, kinds);
    luaL_checktype(L, 2, LUA_TTABLE);
    luaL_checktype(L, 3, LUA_TTABLE);
    bool check = lua_toboolean(L, 4);
    ff_optim_hyper h = {.kind = kind_of[k]};
    h.lr = num_field(L, 2, "lr"), h.momentum = num_field(L, 2, "momentum");
    h.dampening = num_field(L, 2, "dampening"), h.weight_decay = num_field(L, 2, "weight_decay");
    h.eps = num_field(L, 2, "eps"), h.alpha = num_field(L, 2, "alpha");
    h.nesterov = bool_field(L, 2, "nesterov"), h.centered = bool_field(L, 2, "centered");
    lua_getfield(L, 2, "betas");
    if (lua_istable(L, -1)) {
        lua_geti(L, -1, 1), lua_geti(L, -2, 2);
        h.beta1 = lua_tonumber(L, -2), h.beta2 = lua_tonumber(L, -1);
        lua_pop(L, 2);
    }
    lua_pop(L, 1);
    lua_Integer len = luaL_len(L, 3);
    if (len % ENTRY_FIELDS || len / ENTRY_FIELDS > MAX_ENTRIES)
        return luaL_argerror(L, 3, "expected 7 values per parameter (at most 4096 parameters)");
    int n = (int)(len / ENTRY_FIELDS);
    ff_optim_entry *e = lua_newuserdatauv(L, sizeof *e * (size_t)(n > 0 ? n : 1), 0);
    for (int i = 0; i < n; i++) {
        memset(&e[i], 0, sizeof e[i]);
        lua_Integer base = (lua_Integer)i * ENTRY_FIELDS;
        for (int f = 0; f < 5; f++) {
            lua_geti(L, 3, base + f + 1);
            ff_tensor *t = lua_toboolean(L, -1) ? lf_totensor(L, -1) : NULL;
            if (lua_toboolean(L, -1) && !t)
                return luaL_error(L, "optim_step: entry %d field %d is not a tensor", i + 1, f + 1);
            lua_pop(L, 1);
            if (f == 0)
                e[i].param = t;
            else if (f == 1)
                e[i].grad = t;
            else
                e[i].buf[f - 2] = t;
        }
        lua_geti(L, 3, base + 6);
        e[i].step = (int64_t)lua_tointeger(L, -1);
        lua_geti(L, 3, base + 7);
        e[i].fresh = lua_toboolean(L, -1);
        lua_pop(L, 2);
    }
    int bad;
    lf_check(L, ff_optim_step(&h, e, n, check, &bad));
    if (bad < 0)
        lua_pushnil(L);
    else
        lua_pushinteger(L, bad + 1);
    return 1;
}

static const luaL_Reg optim_fns[] = {{"_optim_step", l_optim_step}, {NULL, NULL}};

void lf_open_optim(lua_State *L)
{
    luaL_setfuncs(L, optim_fns, 0);
}
