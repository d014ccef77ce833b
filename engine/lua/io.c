/*
 * io.c: the file layer of checkpoints for Lua (ff.io_write_atomic,
 * ff.io_read_header, ff.io_read_tensor). Thin wrappers over ff_io.h; the
 * format itself (JSON header, object trees) is lib/firefly/io.lua.
 */
#include <stdlib.h>
#include "lf.h"

#define LF_IOBUF "firefly.io.buffer"

/* ff.io_write_atomic(path, header, {tensors...}): header is the JSON text
 * (padded here); the tensors' data follow it in list order. */
static int io_write_atomic(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    size_t hlen;
    const char *header = luaL_checklstring(L, 2, &hlen);
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_settop(L, 3);
    lua_Integer n = luaL_len(L, 3);
    if (n < 0 || n > (1 << 24))
        return luaL_error(L, "io_write_atomic: bad tensor count %d", (int)n);
    /* Borrowed pointers in a userdata array: the list keeps them alive. */
    ff_tensor **ts = lua_newuserdatauv(L, sizeof *ts * (size_t)(n > 0 ? n : 1), 0);
    for (lua_Integer i = 0; i < n; i++) {
        lua_geti(L, 3, i + 1);
        ff_tensor *t = lf_totensor(L, -1);
        if (!t)
            return luaL_error(L, "io_write_atomic: entry %d of the list is %s, expected a tensor",
                              (int)i + 1, luaL_typename(L, -1));
        ts[i] = lf_checktensor(L, -1); /* errors on a closed tensor */
        lua_pop(L, 1);
    }
    ff_status st;
    /* The only allocation is the copy of a non-contiguous tensor. */
    st = ff_io_write_atomic(path, header, hlen, ts, (int)n);
    if (st == FF_ERR_MEM) {
        lua_gc(L, LUA_GCCOLLECT);
        st = ff_io_write_atomic(path, header, hlen, ts, (int)n);
    }
    lf_check(L, st);
    return 0;
}

/* The header buffer is malloc'ed by the core; a box with __gc frees it
 * even if pushing the string raises a memory error. */
static int iobuf_gc(lua_State *L)
{
    char **box = luaL_checkudata(L, 1, LF_IOBUF);
    free(*box);
    *box = NULL;
    return 0;
}

/* ff.io_read_header(path) -> json, data_start, file_size */
static int io_read_header(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    char **box = lua_newuserdatauv(L, sizeof *box, 0);
    *box = NULL;
    luaL_setmetatable(L, LF_IOBUF);
    size_t len = 0;
    int64_t data_start = 0, file_size = 0;
    lf_check(L, ff_io_read_header(path, box, &len, &data_start, &file_size));
    lua_pushlstring(L, *box, len);
    free(*box);
    *box = NULL;
    lua_pushinteger(L, (lua_Integer)data_start);
    lua_pushinteger(L, (lua_Integer)file_size);
    return 3;
}

/* ff.io_read_tensor(path, data_start, begin, end, shape) -> tensor */
static int io_read_tensor(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    lua_Integer data_start = luaL_checkinteger(L, 2);
    lua_Integer begin = luaL_checkinteger(L, 3);
    lua_Integer end = luaL_checkinteger(L, 4);
    luaL_checktype(L, 5, LUA_TTABLE);
    int64_t shape[FF_MAX_DIMS];
    int ndim = lf_checkshape(L, 5, shape, NULL, "io_read_tensor");
    for (int i = 0; i < ndim; i++)
        if (shape[i] < 0)
            return luaL_error(L, "io_read_tensor: shape entry %d is negative", i + 1);
    ff_tensor *t = NULL;
    ff_status st = ff_io_read_tensor(path, data_start, begin, end, shape, ndim, &t);
    if (st == FF_ERR_MEM) {
        lua_gc(L, LUA_GCCOLLECT);
        st = ff_io_read_tensor(path, data_start, begin, end, shape, ndim, &t);
    }
    lf_check(L, st);
    lf_pushtensor(L, t);
    return 1;
}

static const luaL_Reg io_fns[] = {
    {"io_write_atomic", io_write_atomic}, {"io_read_header", io_read_header},
    {"io_read_tensor", io_read_tensor}, {NULL, NULL}};

void lf_open_io(lua_State *L)
{
    luaL_newmetatable(L, LF_IOBUF);
    lua_pushcfunction(L, iobuf_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    luaL_setfuncs(L, io_fns, 0);
}
