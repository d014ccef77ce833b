/*
 * autograd.c: the autograd methods of firefly.Tensor (requires_grad,
 * backward, grad, detach, hooks) and ff.no_grad / ff.ops.
 *
 * Hooks are Lua functions called from inside the C backward pass. They run
 * under lua_pcall, so a Lua error in a hook becomes a failed status that
 * unwinds the backward cleanly instead of longjmp-ing through it.
 */
#include <stdlib.h>
#include "lf.h"

/* The Lua state running the current backward pass (hooks run on it). */
static _Thread_local lua_State *backward_L;

/* Registry references of dropped hooks. The core drops hooks where no Lua
 * state is at hand (when a graph is freed), so they are unreferenced at the
 * next backward. */
static int *dead_refs;
static size_t n_dead, cap_dead;

static void free_hook(void *ctx)
{
    int ref = (int)(intptr_t)ctx;
    if (n_dead == cap_dead) {
        size_t cap = cap_dead ? 2 * cap_dead : 16;
        int *v = realloc(dead_refs, cap * sizeof *v);
        if (!v)
            return; /* a leaked registry slot, not a crash */
        dead_refs = v, cap_dead = cap;
    }
    dead_refs[n_dead++] = ref;
}

static void drain_dead_refs(lua_State *L)
{
    while (n_dead > 0)
        luaL_unref(L, LUA_REGISTRYINDEX, dead_refs[--n_dead]);
}

/* ---- requires_grad, grad, detach ---- */

/* t:requires_grad() -> boolean; t:requires_grad(flag) sets it, returns t */
static int a_requires_grad(lua_State *L)
{
    ff_tensor *t = lf_checktensor(L, 1);
    if (lua_isnone(L, 2)) {
        lua_pushboolean(L, t->requires_grad);
        return 1;
    }
    lf_check(L, ff_tensor_set_requires_grad(t, lua_toboolean(L, 2)));
    lua_settop(L, 1);
    return 1;
}

static int a_is_leaf(lua_State *L)
{
    lua_pushboolean(L, ff_tensor_is_leaf(lf_checktensor(L, 1)));
    return 1;
}

/* t:grad_fn() -> the name of the op that made t, or nil for a leaf */
static int a_grad_fn(lua_State *L)
{
    const char *name = ff_tensor_grad_fn_name(lf_checktensor(L, 1));
    if (name)
        lua_pushstring(L, name);
    else
        lua_pushnil(L);
    return 1;
}

static int a_detach(lua_State *L)
{
    lf_pushtensor(L, ff_tensor_detach(lf_checktensor(L, 1)));
    return 1;
}

static int a_retain_grad(lua_State *L)
{
    lf_check(L, ff_tensor_retain_grad(lf_checktensor(L, 1)));
    lua_settop(L, 1);
    return 1;
}

/* Push t.grad (nil if none), the same userdata each time it is unchanged. */
int lf_push_grad(lua_State *L, int idx)
{
    ff_tensor *t = lf_checktensor(L, idx);
    if (!t->grad) {
        lua_pushnil(L);
        return 1;
    }
    lua_getiuservalue(L, idx, 1);
    if (lf_totensor(L, -1) == t->grad)
        return 1;
    lua_pop(L, 1);
    lf_pushtensor(L, ff_tensor_retain(t->grad));
    lua_pushvalue(L, -1);
    lua_setiuservalue(L, idx, 1);
    return 1;
}

/* t.grad = g (a tensor of t's shape, or nil) */
int lf_set_grad(lua_State *L, int idx, int value)
{
    ff_tensor *t = lf_checktensor(L, idx);
    if (lua_isnil(L, value)) {
        ff_tensor_set_grad(t, NULL);
        return 0;
    }
    ff_tensor *g = lf_totensor(L, value);
    if (!g)
        return luaL_error(L, "grad: expected a tensor or nil, got %s", luaL_typename(L, value));
    if (!ff_shape_equal(t, g)) {
        char a[FF_SHAPE_STRLEN], b[FF_SHAPE_STRLEN];
        return luaL_error(L, "grad: a gradient of shape %s for a tensor of shape %s",
                          ff_shape_str(g->shape, g->ndim, a, sizeof a),
                          ff_shape_str(t->shape, t->ndim, b, sizeof b));
    }
    ff_tensor_set_grad(t, ff_tensor_retain(g));
    return 0;
}

/* t:zero_grad(): zero the accumulated gradient in place, if any */
static int a_zero_grad(lua_State *L)
{
    ff_tensor *t = lf_checktensor(L, 1);
    if (t->grad)
        lf_check(L, ff_tensor_fill_(t->grad, 0.0f));
    lua_settop(L, 1);
    return 1;
}

/* ---- hooks ---- */

/* Runs under lua_pcall: (handle, grad) -> replacement or nil. */
static int call_hook(lua_State *L)
{
    lua_getfield(L, 1, "active");
    if (!lua_toboolean(L, -1))
        return 0;
    lua_getfield(L, 1, "fn");
    lua_pushvalue(L, 2);
    lua_call(L, 1, 1);
    if (!lua_isnil(L, -1) && !lf_totensor(L, -1))
        return luaL_error(L, "a hook must return a tensor or nil, got %s", luaL_typename(L, -1));
    return 1;
}

static ff_status run_hook(void *ctx, const ff_tensor *grad, ff_tensor **replacement)
{
    lua_State *L = backward_L;
    if (!L)
        return ff_error(FF_ERR_STATE, "hook: called outside a Lua backward pass");
    int top = lua_gettop(L);
    lua_pushcfunction(L, call_hook);
    lua_rawgeti(L, LUA_REGISTRYINDEX, (int)(intptr_t)ctx);
    /* pushing may fail for lack of memory: do it under the same protection */
    lf_tensor *u = lua_newuserdatauv(L, sizeof *u, 1);
    u->t = NULL;
    luaL_setmetatable(L, LF_TENSOR);
    u->t = ff_tensor_retain((ff_tensor *)grad);
    ff_status st = FF_OK;
    if (lua_pcall(L, 2, 1, 0) != LUA_OK) {
        st = ff_error(FF_ERR_ARG, "hook: %s", lua_tostring(L, -1));
    } else if (lf_totensor(L, -1)) {
        *replacement = ff_tensor_retain(lf_totensor(L, -1));
    }
    lua_settop(L, top);
    return st;
}

/* t:register_hook(fn) -> handle; fn(grad) may return a replacement
 * gradient; handle:remove() turns the hook off. */
static int a_register_hook(lua_State *L)
{
    ff_tensor *t = lf_checktensor(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_createtable(L, 0, 3);
    lua_pushvalue(L, 2);
    lua_setfield(L, -2, "fn");
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, "active");
    luaL_setmetatable(L, "firefly.HookHandle");
    lua_pushvalue(L, -1);
    int ref = luaL_ref(L, LUA_REGISTRYINDEX);
    ff_status st = ff_tensor_register_hook(t, run_hook, (void *)(intptr_t)ref, free_hook);
    if (st != FF_OK) {
        luaL_unref(L, LUA_REGISTRYINDEX, ref);
        return lf_raise(L);
    }
    return 1;
}

static int hook_remove(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_pushboolean(L, 0);
    lua_setfield(L, 1, "active");
    return 0;
}

/* ---- backward ---- */

/* t:backward([grad] [, {retain_graph = bool}]) */
static int a_backward(lua_State *L)
{
    ff_tensor *t = lf_checktensor(L, 1);
    int opts = lua_istable(L, 2) ? 2 : lua_istable(L, 3) ? 3 : 0;
    ff_tensor *g = lf_totensor(L, 2);
    if (!g && !lua_isnoneornil(L, 2) && opts != 2)
        return luaL_typeerror(L, 2, "tensor, options table or nil");
    static const char *const known[] = {"retain_graph", NULL};
    opts = opts ? lf_opt_table(L, opts, "backward", known) : 0;
    bool retain = lf_opt_boolean(L, opts, "backward", "retain_graph", false);
    drain_dead_refs(L);
    lua_State *outer = backward_L; /* a hook may run a backward of its own */
    backward_L = L;
    ff_status st = ff_backward(t, g, retain);
    backward_L = outer;
    drain_dead_refs(L);
    lf_check(L, st);
    return 0;
}

/* ---- grad mode ---- */

/* ff.no_grad(fn, ...) -> fn(...)'s results, with recording off inside */
static int a_no_grad(lua_State *L)
{
    /* a function or anything callable (a module) */
    if (lua_type(L, 1) != LUA_TFUNCTION) {
        if (luaL_getmetafield(L, 1, "__call") == LUA_TNIL)
            return luaL_typeerror(L, 1, "function or callable");
        lua_pop(L, 1);
    }
    bool was = ff_set_grad_enabled(false);
    int base = lua_gettop(L);
    int st = lua_pcall(L, base - 1, LUA_MULTRET, 0);
    ff_set_grad_enabled(was);
    if (st != LUA_OK)
        return lua_error(L); /* the error object, unchanged */
    return lua_gettop(L);
}

static int a_set_grad_enabled(lua_State *L)
{
    luaL_checkany(L, 1);
    lua_pushboolean(L, ff_set_grad_enabled(lua_toboolean(L, 1)));
    return 1;
}

static int a_is_grad_enabled(lua_State *L)
{
    lua_pushboolean(L, ff_grad_enabled());
    return 1;
}

/* ff.ops() -> names of every differentiable op, in table order */
static int a_ops(lua_State *L)
{
    lua_createtable(L, FF_OP_COUNT, 0);
    for (int k = 0; k < FF_OP_COUNT; k++) {
        lua_pushstring(L, ff_ops[k].name);
        lua_rawseti(L, -2, k + 1);
    }
    return 1;
}

/* core.profile_set(on), core.profile_reset(): the op profile's switch and
 * counters (lib/firefly/profile.lua is the user's interface). */
static int a_profile_set(lua_State *L)
{
    ff_profile_set(lua_toboolean(L, 1));
    return 0;
}

static int a_profile_reset(lua_State *L)
{
    ff_profile_reset();
    return 0;
}

/* core.profile_read() -> {{op, fwd_calls, fwd_s, bwd_calls, bwd_s}, ...},
 * the ops with at least one call, in opcode order. */
static int a_profile_read(lua_State *L)
{
    const ff_profile_entry *e = ff_profile_entries();
    lua_newtable(L);
    int row = 0;
    for (int k = 0; k < FF_OP_COUNT; k++) {
        if (e[k].calls[0] == 0 && e[k].calls[1] == 0)
            continue;
        lua_createtable(L, 5, 0);
        lua_pushstring(L, ff_ops[k].name);
        lua_rawseti(L, -2, 1);
        for (int pass = 0; pass < 2; pass++) {
            lua_pushinteger(L, (lua_Integer)e[k].calls[pass]);
            lua_rawseti(L, -2, 2 + 2 * pass);
            lua_pushnumber(L, e[k].seconds[pass]);
            lua_rawseti(L, -2, 3 + 2 * pass);
        }
        lua_rawseti(L, -2, ++row);
    }
    return 1;
}

static const luaL_Reg methods[] = {
    {"requires_grad", a_requires_grad}, {"is_leaf", a_is_leaf}, {"grad_fn", a_grad_fn},
    {"detach", a_detach}, {"retain_grad", a_retain_grad}, {"zero_grad", a_zero_grad},
    {"register_hook", a_register_hook}, {"backward", a_backward},
    {NULL, NULL}};

static const luaL_Reg module_fns[] = {
    {"no_grad", a_no_grad}, {"set_grad_enabled", a_set_grad_enabled},
    {"is_grad_enabled", a_is_grad_enabled}, {"ops", a_ops},
    {"profile_set", a_profile_set}, {"profile_reset", a_profile_reset},
    {"profile_read", a_profile_read}, {NULL, NULL}};

void lf_open_autograd(lua_State *L)
{
    lf_addmethods(L, methods);
    luaL_setfuncs(L, module_fns, 0);
    luaL_newmetatable(L, "firefly.HookHandle");
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, hook_remove);
    lua_setfield(L, -2, "remove");
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
}
