/*
 * dist_reduce.c: the binding of the gradient reducer of data-parallel
 * training (engine/core/dist_reduce.c holds its logic),
 * core.dist.reducer(params [, bucket_values [, overlap]]) (see dist.lua's
 * dist.GradReducer for the user side).
 *
 * The userdata holds a pointer to the core reducer, NULL once closed, so
 * one idempotent release serves __gc and close.
 */
#include <stdlib.h>
#include <string.h>
#include "lf.h"
#include "ff_dist_reduce.h"
#include "dist_reduce.h"

#define REDUCER_MT "firefly.dist.Reducer"

typedef struct lf_reducer {
    ff_dist_reducer *r;
} lf_reducer;

static ff_dist_reducer *check_reducer(lua_State *L)
{
    lf_reducer *u = luaL_checkudata(L, 1, REDUCER_MT);
    if (!u->r)
        luaL_error(L, "dist.reducer: the reducer was closed");
    return u->r;
}

static int r_release(lua_State *L)
{
    lf_reducer *u = luaL_checkudata(L, 1, REDUCER_MT);
    ff_dist_reducer_free(u->r);
    u->r = NULL;
    return 0;
}

/* The tensors of the list at idx in a scratch array that the GC owns (an
 * error raised here or later leaks nothing); an entry that is no tensor is
 * NULL. Leaves the array on the stack. */
static ff_tensor **list_tensors(lua_State *L, int idx, int n)
{
    ff_tensor **ts = lua_newuserdatauv(L, sizeof *ts * (size_t)(n > 0 ? n : 1), 0);
    for (int i = 0; i < n; i++) {
        lua_geti(L, idx, i + 1);
        ts[i] = lf_totensor(L, -1);
        lua_pop(L, 1);
    }
    return ts;
}

/* reducer(params [, bucket_values = 65536 [, overlap = false]]) */
int lf_dist_reducer(lua_State *L)
{
    const char *who = "dist.reducer";
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_Integer per = luaL_optinteger(L, 2, 65536);
    if (per < 1)
        return luaL_error(L, "%s: bucket size must be at least 1 value, got %d", who, (int)per);
    bool overlap = lua_toboolean(L, 3);
    int n = (int)luaL_len(L, 1);
    lf_reducer *u = lua_newuserdatauv(L, sizeof *u, 0);
    u->r = NULL;
    luaL_setmetatable(L, REDUCER_MT);
    ff_tensor **params = list_tensors(L, 1, n);
    for (int i = 0; i < n; i++)
        if (!params[i]) {
            lua_geti(L, 1, i + 1);
            return luaL_error(L, "%s: entry %d of the list is a %s, expected a tensor", who, i + 1,
                              luaL_typename(L, -1));
        }
    u->r = ff_dist_reducer_new(params, n, (int64_t)per, overlap);
    if (!u->r)
        return lf_raise(L);
    lua_pop(L, 1); /* the scratch array */
    return 1;
}

/* r:begin(scale): before the backward; its gradients are weighted by scale. */
static int r_begin(lua_State *L)
{
    ff_dist_reducer *r = check_reducer(L);
    ff_dist_reducer_begin(r, (float)luaL_checknumber(L, 2));
    return 0;
}

/* r:finish(extras): after the backward. Every parameter's .grad (which the
 * caller made present and contiguous) becomes the sum over ranks of scale
 * x its gradient, and each tensor of the list extras (contiguous, float32)
 * the sum of scale x its values. */
static int r_finish(lua_State *L)
{
    ff_dist_reducer *r = check_reducer(L);
    luaL_checktype(L, 2, LUA_TTABLE);
    int ne = (int)luaL_len(L, 2);
    ff_tensor **extras = list_tensors(L, 2, ne);
    lf_check(L, ff_dist_reducer_finish(r, extras, ne));
    return 0;
}

/* r:layout() -> {buckets =, values =, overlap =, early =, redone =}: the
 * buckets, the values in them, and in the last step how many buckets were
 * posted during the backward and how many were reduced again (tests). */
static int r_layout(lua_State *L)
{
    ff_dist_reducer_layout l;
    ff_dist_reducer_get_layout(check_reducer(L), &l);
    lua_createtable(L, 0, 5);
    lua_pushinteger(L, l.early);
    lua_setfield(L, -2, "early");
    lua_pushinteger(L, l.redone);
    lua_setfield(L, -2, "redone");
    lua_pushinteger(L, l.buckets);
    lua_setfield(L, -2, "buckets");
    lua_pushinteger(L, l.values);
    lua_setfield(L, -2, "values");
    lua_pushboolean(L, l.overlap);
    lua_setfield(L, -2, "overlap");
    return 1;
}

void lf_dist_reducer_open(lua_State *L)
{
    static const luaL_Reg methods[] = {{"begin", r_begin}, {"finish", r_finish},
                                       {"layout", r_layout}, {"close", r_release}, {NULL, NULL}};
    if (luaL_newmetatable(L, REDUCER_MT)) {
        luaL_newlib(L, methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, r_release);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
}
