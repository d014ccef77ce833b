/*
 * options.c: the one checker of the option tables every binding file reads
 * ({stride = 2}, {padding = {1, 0}}, {retain_graph = true}), with the
 * errors they raise. A misspelt key is an error naming the nearest known
 * one, in the message shape of lib/firefly/options.lua (the Lua side's
 * checker, same rule for "near"):
 *
 *   conv2d: unknown option 'strides' (did you mean 'stride'?)
 *   backward: unknown option 'retain_grpah' (did you mean 'retain_graph'?)
 *   batch_norm: unknown option 'foo' (known: weight, bias, ...)
 */
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include "lf.h"

/* Keys longer than this are compared by their first LF_KEY_MAX letters
 * (no option name comes close). */
#define LF_KEY_MAX 48

/* Edit distance, case-insensitive (insertions, deletions, substitutions,
 * adjacent swaps), as options.lua's. */
static int distance(const char *a, const char *b)
{
    int la = (int)strnlen(a, LF_KEY_MAX), lb = (int)strnlen(b, LF_KEY_MAX);
    int d[LF_KEY_MAX + 1][LF_KEY_MAX + 1];
    for (int i = 0; i <= la; i++)
        d[i][0] = i;
    for (int j = 0; j <= lb; j++)
        d[0][j] = j;
    for (int i = 1; i <= la; i++) {
        for (int j = 1; j <= lb; j++) {
            int ca = tolower((unsigned char)a[i - 1]), cb = tolower((unsigned char)b[j - 1]);
            int v = d[i - 1][j - 1] + (ca != cb);
            if (d[i - 1][j] + 1 < v)
                v = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < v)
                v = d[i][j - 1] + 1;
            if (i > 1 && j > 1 && ca == tolower((unsigned char)b[j - 2]) &&
                tolower((unsigned char)a[i - 2]) == cb && d[i - 2][j - 2] + 1 < v)
                v = d[i - 2][j - 2] + 1;
            d[i][j] = v;
        }
    }
    return d[la][lb];
}

/* The known name nearest to `name`, or NULL when none is a plausible typo
 * (at most a third of the name's letters, at least 2; when one of the two
 * starts with the other, of 3 letters or more, they count as distance 1:
 * 'epsilon' for 'eps', 'retain' for 'retain_graph'). */
static const char *nearest(const char *name, const char *const *known)
{
    const char *best = NULL;
    int best_d = 0;
    size_t n = strlen(name);
    for (int i = 0; known[i]; i++) {
        int d = distance(name, known[i]);
        size_t k = strlen(known[i]), shorter = n < k ? n : k;
        if (shorter >= 3 && strncasecmp(known[i], name, shorter) == 0 && d > 1)
            d = 1;
        if (!best || d < best_d)
            best = known[i], best_d = d;
    }
    int limit = (int)n / 3 > 2 ? (int)n / 3 : 2;
    return best && best_d <= limit ? best : NULL;
}

void lf_unknown_option(lua_State *L, const char *fn, const char *key, const char *const *known)
{
    const char *near = nearest(key, known);
    if (near)
        luaL_error(L, "%s: unknown option '%s' (did you mean '%s'?)", fn, key, near);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int i = 0; known[i]; i++) {
        luaL_addstring(&b, i ? ", " : "");
        luaL_addstring(&b, known[i]);
    }
    luaL_pushresult(&b);
    luaL_error(L, "%s: unknown option '%s' (known: %s)", fn, key, lua_tostring(L, -1));
}

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
            lf_unknown_option(L, fn, key, known);
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

/* ---- typed values: opts[key], or def when opts is 0 or the key absent ---- */

lua_Integer lf_opt_integer(lua_State *L, int opts, const char *fn, const char *key, lua_Integer def)
{
    if (!opts)
        return def;
    lua_Integer v = def;
    if (lua_getfield(L, opts, key) != LUA_TNIL) {
        int ok;
        v = lua_tointegerx(L, -1, &ok);
        if (!ok)
            luaL_error(L, "%s: option %s must be an integer, got %s", fn, key,
                       lua_type(L, -1) == LUA_TNUMBER ? "a fraction" : luaL_typename(L, -1));
        if (v > INT32_MAX || v < INT32_MIN)
            luaL_error(L, "%s: option %s %I is out of range", fn, key, v);
    }
    lua_pop(L, 1);
    return v;
}

double lf_opt_number(lua_State *L, int opts, const char *fn, const char *key, double def)
{
    if (!opts)
        return def;
    double v = def;
    if (lua_getfield(L, opts, key) != LUA_TNIL) {
        if (lua_type(L, -1) != LUA_TNUMBER)
            luaL_error(L, "%s: option %s must be a number, got %s", fn, key, luaL_typename(L, -1));
        v = lua_tonumber(L, -1);
    }
    lua_pop(L, 1);
    return v;
}

bool lf_opt_boolean(lua_State *L, int opts, const char *fn, const char *key, bool def)
{
    if (!opts)
        return def;
    bool v = def;
    if (lua_getfield(L, opts, key) != LUA_TNIL) {
        if (!lua_isboolean(L, -1))
            luaL_error(L, "%s: option %s must be a boolean, got %s", fn, key, luaL_typename(L, -1));
        v = lua_toboolean(L, -1);
    }
    lua_pop(L, 1);
    return v;
}

ff_tensor *lf_opt_tensor(lua_State *L, int opts, const char *fn, const char *key)
{
    if (!opts)
        return NULL;
    ff_tensor *t = NULL;
    if (lua_getfield(L, opts, key) != LUA_TNIL) {
        t = lf_totensor(L, -1);
        if (!t)
            luaL_error(L, "%s: option %s must be an open tensor, got %s", fn, key,
                       luaL_typename(L, -1));
    }
    lua_pop(L, 1);
    return t;
}
