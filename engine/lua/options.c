/*
 * options.c: the option tables and size pairs every binding file reads
 * ({stride = 2}, {padding = {1, 0}}), with the errors they raise.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include "lf.h"

/* Error for any key of the table at arg that is not in `known`. */
static void check_keys(lua_State *L, int arg, const char *fn, const char *const *known)
{
    lua_pushnil(L);
    while (lua_next(L, arg)) {
        lua_pop(L, 1); /* the value */
        if (lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "%s: option names must be strings, got a %s key", fn,
                       luaL_typename(L, -1));
        const char *key = lua_tostring(L, -1);
        bool ok = false;
        for (int i = 0; known[i] && !ok; i++)
            ok = strcmp(key, known[i]) == 0;
        if (!ok)
            luaL_error(L, "%s: unknown option \"%s\"", fn, key);
    }
}

/* The options table at arg, checked; 0 when arg is none or nil. */
int lf_opt_table(lua_State *L, int arg, const char *fn, const char *const *known)
{
    if (lua_isnoneornil(L, arg))
        return 0;
    if (!lua_istable(L, arg))
        luaL_error(L, "%s: argument #%d must be an options table, got %s", fn, arg,
                   luaL_typename(L, arg));
    check_keys(L, arg, fn, known);
    return arg;
}

/* An integer value at idx, or an error naming `what`. Sizes, strides and
 * paddings past 2^31 make no sense and could overflow the engine's size
 * arithmetic, so they are refused here. */
int64_t lf_check_int(lua_State *L, int idx, const char *fn, const char *what)
{
    int ok;
    lua_Integer v = lua_tointegerx(L, idx, &ok);
    if (!ok)
        luaL_error(L, "%s: %s must be an integer or a pair {h, w} of integers, got %s", fn, what,
                   lua_type(L, idx) == LUA_TNUMBER ? "a fraction" : luaL_typename(L, idx));
    if (v > INT32_MAX || v < INT32_MIN)
        luaL_error(L, "%s: %s %I is out of range", fn, what, v);
    return (int64_t)v;
}

/* The value at idx as a pair: a number n is (n, n), a table {a, b}. */
void lf_check_pair(lua_State *L, int idx, const char *fn, const char *what, int64_t *out)
{
    idx = lua_absindex(L, idx);
    if (lua_istable(L, idx)) {
        if (luaL_len(L, idx) != 2)
            luaL_error(L, "%s: %s must be a number or a pair {h, w}, got a table of %d entries",
                       fn, what, (int)luaL_len(L, idx));
        for (int k = 0; k < 2; k++) {
            lua_geti(L, idx, k + 1);
            out[k] = lf_check_int(L, -1, fn, what);
            lua_pop(L, 1);
        }
    } else {
        out[0] = out[1] = lf_check_int(L, idx, fn, what);
    }
}

/* opts[key] as a pair into out (left as it is when absent). */
void lf_opt_pair(lua_State *L, int opts, const char *fn, const char *key, int64_t *out)
{
    if (!opts)
        return;
    if (lua_getfield(L, opts, key) != LUA_TNIL) {
        char what[48];
        snprintf(what, sizeof what, "option %s", key);
        lf_check_pair(L, -1, fn, what, out);
    }
    lua_pop(L, 1);
}
