/*
 * generator.c: the firefly.Generator type, a seedable random stream whose
 * algorithm is fixed (see ff_rng.h), so a seed reproduces results anywhere.
 */
#include <string.h>
#include "lf.h"

static ff_rng *checkgen(lua_State *L, int arg)
{
    return luaL_checkudata(L, arg, LF_GENERATOR);
}

ff_rng *lf_optgenerator(lua_State *L, int arg)
{
    if (lua_isnoneornil(L, arg))
        return ff_rng_default();
    return checkgen(L, arg);
}

static uint64_t checkseed(lua_State *L, int arg)
{
    /* Any integer is a seed; negative ones reinterpret their bits. */
    return (uint64_t)luaL_checkinteger(L, arg);
}

/* ff.Generator([seed]) */
static int g_new(lua_State *L)
{
    uint64_t seed = lua_isnoneornil(L, 1) ? 0 : checkseed(L, 1);
    ff_rng *g = lua_newuserdatauv(L, sizeof *g, 0);
    ff_rng_seed(g, seed);
    luaL_setmetatable(L, LF_GENERATOR);
    return 1;
}

static int g_seed(lua_State *L)
{
    ff_rng_seed(checkgen(L, 1), checkseed(L, 2));
    lua_settop(L, 1);
    return 1;
}

/* The state as a string of 32 bytes (little-endian words), for checkpoints. */
static int g_get_state(lua_State *L)
{
    ff_rng *g = checkgen(L, 1);
    unsigned char buf[32];
    for (int w = 0; w < 4; w++)
        for (int b = 0; b < 8; b++)
            buf[w * 8 + b] = (unsigned char)(g->s[w] >> (8 * b));
    lua_pushlstring(L, (const char *)buf, sizeof buf);
    return 1;
}

static int g_set_state(lua_State *L)
{
    ff_rng *g = checkgen(L, 1);
    size_t len;
    const unsigned char *buf = (const unsigned char *)luaL_checklstring(L, 2, &len);
    if (len != 32)
        return luaL_error(L, "set_state: state must be 32 bytes (from get_state), got %d",
                          (int)len);
    uint64_t s[4] = {0};
    for (int w = 0; w < 4; w++)
        for (int b = 0; b < 8; b++)
            s[w] |= (uint64_t)buf[w * 8 + b] << (8 * b);
    if (!(s[0] | s[1] | s[2] | s[3]))
        return luaL_error(L, "set_state: the all-zero state is not a valid xoshiro256** state");
    memcpy(g->s, s, sizeof s);
    lua_settop(L, 1);
    return 1;
}

/* g:random() -> uniform double in [0,1); g:random(n) -> integer in [1, n]. */
static int g_random(lua_State *L)
{
    ff_rng *g = checkgen(L, 1);
    if (lua_isnoneornil(L, 2)) {
        lua_pushnumber(L, ff_rng_uniform(g));
        return 1;
    }
    lua_Integer n = luaL_checkinteger(L, 2);
    luaL_argcheck(L, n >= 1, 2, "upper bound must be >= 1");
    lua_pushinteger(L, (lua_Integer)ff_rng_below(g, (uint64_t)n) + 1);
    return 1;
}

static int g_tostring(lua_State *L)
{
    lua_pushfstring(L, "Generator (xoshiro256**) %p", (void *)checkgen(L, 1));
    return 1;
}

/* ff.manual_seed(n): reseed the default generator. */
static int g_manual_seed(lua_State *L)
{
    ff_rng_seed(ff_rng_default(), checkseed(L, 1));
    return 0;
}

/* ff.default_generator(): the default stream as a Generator whose state is
 * a copy (so reading it never disturbs the stream). */
static int g_default_state(lua_State *L)
{
    ff_rng *g = lua_newuserdatauv(L, sizeof *g, 0);
    *g = *ff_rng_default();
    luaL_setmetatable(L, LF_GENERATOR);
    return 1;
}

static int g_set_default_state(lua_State *L)
{
    *ff_rng_default() = *checkgen(L, 1);
    return 0;
}

static const luaL_Reg gen_methods[] = {
    {"seed", g_seed}, {"get_state", g_get_state}, {"set_state", g_set_state},
    {"random", g_random}, {NULL, NULL}};

static const luaL_Reg module_fns[] = {
    {"Generator", g_new}, {"manual_seed", g_manual_seed},
    {"get_rng_state", g_default_state}, {"set_rng_state", g_set_default_state},
    {NULL, NULL}};

void lf_open_generator(lua_State *L)
{
    luaL_newmetatable(L, LF_GENERATOR);
    luaL_newlib(L, gen_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, g_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
    luaL_setfuncs(L, module_fns, 0);
}
