/* util.c: argument conversion and error plumbing shared by the binding. */
#include <math.h>
#include "lf.h"

int lf_raise(lua_State *L)
{
    return luaL_error(L, "%s", ff_last_error());
}

void lf_check(lua_State *L, ff_status st)
{
    if (st != FF_OK)
        lf_raise(L);
}

ff_tensor *lf_totensor(lua_State *L, int arg)
{
    lf_tensor *u = luaL_testudata(L, arg, LF_TENSOR);
    return u ? u->t : NULL;
}

ff_tensor *lf_checktensor(lua_State *L, int arg)
{
    lf_tensor *u = luaL_checkudata(L, arg, LF_TENSOR);
    if (!u->t)
        luaL_argerror(L, arg, "tensor is closed");
    return u->t;
}

void lf_checkoperands(lua_State *L, int arg, int n, ff_tensor **out)
{
    /* every argument checked before any becomes a reference: a type error
     * longjmps, and must not leak the ones already made */
    for (int k = 0; k < n; k++)
        if (lua_type(L, arg + k) != LUA_TNUMBER && !lf_totensor(L, arg + k))
            luaL_typeerror(L, arg + k, "tensor or number");
    for (int k = 0; k < n; k++) {
        out[k] = lua_type(L, arg + k) == LUA_TNUMBER
                     ? ff_tensor_scalar((float)lua_tonumber(L, arg + k))
                     : ff_tensor_retain(lf_checktensor(L, arg + k));
        if (!out[k]) {
            while (k > 0)
                ff_tensor_release(out[--k]);
            lf_raise(L);
        }
    }
}

/* Engine memory is invisible to Lua's collector: a userdata of 16 bytes may
 * hold a gigabyte. So the binding runs a full collection whenever the bytes
 * allocated since the last one exceed a quarter of what survived it (at
 * least 32 MiB). Paced by allocation rather than by a limit on live bytes,
 * garbage stays small even beside a large data set, buffers are reused
 * while still in cache, and peak memory stays near the true working set.
 * A full collection is cheap here: the Lua heap is small next to the
 * tensors it holds. */
#define LF_GC_FLOOR ((size_t)32 << 20)
static size_t gc_mark;      /* ff_mem_total_bytes() at the last collection */
static size_t gc_survivors; /* live bytes right after it */

void lf_gc_account(lua_State *L)
{
    size_t since = ff_mem_total_bytes() - gc_mark;
    size_t budget = gc_survivors / 4 > LF_GC_FLOOR ? gc_survivors / 4 : LF_GC_FLOOR;
    if (since <= budget)
        return;
    lua_gc(L, LUA_GCCOLLECT);
    gc_mark = ff_mem_total_bytes();
    gc_survivors = ff_mem_live_bytes();
}

void lf_pushtensor(lua_State *L, ff_tensor *t)
{
    if (!t)
        lf_raise(L);
    /* Inert first: if setting the metatable failed, __gc sees NULL. The
     * user value caches the userdata of t.grad (so t.grad == t.grad). */
    lf_tensor *u = lua_newuserdatauv(L, sizeof *u, 1);
    u->t = NULL;
    luaL_setmetatable(L, LF_TENSOR);
    u->t = t;
    lf_gc_account(L);
}

int lf_checkdim(lua_State *L, int arg, int ndim, const char *what)
{
    lua_Integer d = luaL_checkinteger(L, arg);
    if (d >= 1 && d <= ndim)
        return (int)d - 1;
    if (d < 0 && d >= -ndim)
        return (int)(ndim + d);
    if (ndim == 0)
        return luaL_error(L, "%s: dim %d out of range for a tensor of rank 0", what, (int)d);
    return luaL_error(L, "%s: dim %d out of range for a tensor of rank %d (expected 1..%d or -%d..-1)",
                      what, (int)d, ndim, ndim, ndim);
}

int lf_optdim(lua_State *L, int arg, int ndim, const char *what, int def)
{
    if (lua_isnoneornil(L, arg))
        return def;
    return lf_checkdim(L, arg, ndim, what);
}

static int64_t checksize(lua_State *L, int arg, lua_Integer v, const char *what)
{
    if (v < 0 && v != -1)
        luaL_error(L, "%s: size %d is negative", what, (int)v);
    (void)arg;
    return (int64_t)v;
}

int lf_checkshape(lua_State *L, int arg, int64_t *shape, int *next, const char *what)
{
    int n = 0;
    if (lua_istable(L, arg)) {
        lua_Integer len = luaL_len(L, arg);
        if (len > FF_MAX_DIMS)
            luaL_error(L, "%s: a tensor has at most %d dims, got %d", what, FF_MAX_DIMS, (int)len);
        for (n = 0; n < len; n++) {
            lua_geti(L, arg, n + 1);
            int ok;
            lua_Integer v = lua_tointegerx(L, -1, &ok);
            if (!ok)
                luaL_error(L, "%s: shape entry %d is not an integer (%s)", what, n + 1,
                           luaL_typename(L, -1));
            shape[n] = checksize(L, arg, v, what);
            lua_pop(L, 1);
        }
        if (next)
            *next = arg + 1;
        return n;
    }
    while (lua_type(L, arg + n) == LUA_TNUMBER) {
        if (n == FF_MAX_DIMS)
            luaL_error(L, "%s: a tensor has at most %d dims", what, FF_MAX_DIMS);
        int ok;
        lua_Integer v = lua_tointegerx(L, arg + n, &ok);
        if (!ok)
            luaL_argerror(L, arg + n, "size must be an integer");
        shape[n] = checksize(L, arg + n, v, what);
        n++;
    }
    if (next)
        *next = arg + n;
    return n;
}

void lf_check_no_more(lua_State *L, int arg, const char *what)
{
    for (int i = arg; i <= lua_gettop(L); i++) {
        if (lua_isnil(L, i))
            continue;
        if (i == 1)
            luaL_error(L, "%s: argument #1 must be a size or a shape table, got %s", what, luaL_typename(L, i));
        luaL_error(L, "%s: unexpected argument #%d (%s)", what, i, luaL_typename(L, i));
    }
}

ff_tensor *lf_checkindex(lua_State *L, int arg, const char *what)
{
    ff_tensor *idx;
    if (lua_istable(L, arg)) {
        lua_Integer n = luaL_len(L, arg);
        int64_t len = n;
        idx = ff_tensor_empty(&len, 1);
        if (!idx)
            lf_raise(L);
        float *d = ff_tensor_data(idx);
        for (lua_Integer i = 0; i < n; i++) {
            lua_geti(L, arg, i + 1);
            d[i] = (float)lua_tonumber(L, -1) - 1.0f;
            if (lua_type(L, -1) != LUA_TNUMBER) {
                ff_tensor_release(idx);
                luaL_error(L, "%s: index entry %d is not a number", what, (int)i + 1);
            }
            lua_pop(L, 1);
        }
        return idx;
    }
    ff_tensor *t = lf_totensor(L, arg);
    if (!t)
        luaL_typeerror(L, arg, "index tensor or table");
    ff_tensor *one = ff_tensor_scalar(1.0f);
    if (!one)
        lf_raise(L);
    idx = ff_binary(FF_SUB, t, one);
    ff_tensor_release(one);
    if (!idx)
        lf_raise(L);
    return idx;
}

void lf_indices_to_lua(lua_State *L, ff_tensor *t)
{
    ff_tensor *one = ff_tensor_scalar(1.0f);
    ff_status st = one ? ff_binary_(FF_ADD, t, one) : ff_last_status();
    ff_tensor_release(one);
    if (st != FF_OK) {
        ff_tensor_release(t);
        lf_raise(L);
    }
}

ff_tensor *lf_apply(lua_State *L, ff_opcode op, ff_tensor *const *in, int n,
                    const ff_params *p, ff_tensor **extra)
{
    ff_tensor *r;
    LF_RETRY(L, r, ff_apply(op, in, n, p, extra));
    return r;
}

void lf_check_inplace(lua_State *L, const ff_tensor *t, const char *what)
{
    if (t->requires_grad && ff_grad_enabled())
        luaL_error(L, "%s: cannot modify in place a tensor that requires grad (autograd needs its "
                      "values); use an out-of-place op, or ff.no_grad for updates such as optimiser steps",
                   what);
}

void lf_addmethods(lua_State *L, const luaL_Reg *fns)
{
    lua_getfield(L, -1, "Tensor");
    luaL_setfuncs(L, fns, 0);
    lua_pop(L, 1);
}
