/*
 * dist.c: the binding of the collectives (ff_dist.h) as core.dist; the
 * user-facing module is lib/firefly/dist.lua.
 *
 * Every collective first agrees on its signature across ranks (the call,
 * the op, the root, the shape), so a call that differs between ranks is
 * an error on all of them, raised before any data moves, instead of a
 * hang or a silent mix of shapes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "lf.h"
#include "ff_dist.h"
#include "dist_reduce.h"

enum { SIG_ALLREDUCE = 1, SIG_BROADCAST, SIG_ALLGATHER, SIG_ALLREDUCE_LIST, SIG_NUMBERS,
       SIG_BARRIER };
static const char *const op_names[] = {"sum", "mean", "max", "min", NULL};

/* "allreduce(sum) of a 3x4 tensor" from a signature. */
static void describe(const int64_t *s, int n, char *buf, size_t len)
{
    if (n < 1) {
        snprintf(buf, len, "no call");
        return;
    }
    static const char *const calls[] = {"?", "allreduce", "broadcast", "allgather",
                                        "allreduce of a list", "allreduce of numbers", "barrier"};
    const char *call = s[0] >= 1 && s[0] <= SIG_BARRIER ? calls[s[0]] : "?";
    int k = snprintf(buf, len, "%s", call);
    if (s[0] == SIG_BARRIER || n < 3)
        return;
    if (s[0] == SIG_BROADCAST)
        k += snprintf(buf + k, len - (size_t)k, " from root %lld", (long long)s[1]);
    else if (s[0] != SIG_ALLGATHER && s[1] >= 0 && s[1] < 4)
        k += snprintf(buf + k, len - (size_t)k, "(%s)", op_names[s[1]]);
    if (s[0] == SIG_ALLREDUCE_LIST || s[0] == SIG_NUMBERS) {
        snprintf(buf + k, len - (size_t)k, " of %lld tensors, %lld values", (long long)s[2],
                 n > 3 ? (long long)s[3] : 0LL);
        return;
    }
    int ndim = (int)s[2];
    if (ndim < 0 || ndim > n - 3)
        return;
    int64_t shape[FF_MAX_DIMS];
    for (int i = 0; i < ndim && i < FF_MAX_DIMS; i++)
        shape[i] = s[3 + i];
    char sh[128];
    ff_shape_str(shape, ndim, sh, sizeof sh);
    snprintf(buf + k, len - (size_t)k, " of a tensor of shape %s", sh);
}

static void agree(lua_State *L, const char *who, const int64_t *sig, int n)
{
    lf_check(L, ff_dist_agree(who, sig, n, describe));
}

/* sig = {call, a, ndim, shape...} for tensor t. */
static int tensor_sig(int64_t *sig, int call, int64_t a, const ff_tensor *t)
{
    sig[0] = call;
    sig[1] = a;
    sig[2] = t->ndim;
    for (int i = 0; i < t->ndim; i++)
        sig[3 + i] = t->shape[i];
    return 3 + t->ndim;
}

/* A tensor that may be written in place by a collective. */
static ff_tensor *check_target(lua_State *L, int arg, const char *who)
{
    ff_tensor *t = lf_checktensor(L, arg);
    if (!ff_tensor_is_contiguous(t))
        luaL_error(L, "%s: argument #%d must be contiguous (use :contiguous() first)", who, arg);
    return t;
}

static int d_init(lua_State *L)
{
    lf_check(L, ff_dist_init());
    return 0;
}

static int d_active(lua_State *L)
{
    lua_pushboolean(L, ff_dist_active());
    return 1;
}

static int d_launched(lua_State *L)
{
    lua_pushboolean(L, ff_dist_launched());
    return 1;
}

static int d_rank(lua_State *L)
{
    lua_pushinteger(L, ff_dist_rank());
    return 1;
}

static int d_size(lua_State *L)
{
    lua_pushinteger(L, ff_dist_size());
    return 1;
}

static int d_barrier(lua_State *L)
{
    int64_t sig[1] = {SIG_BARRIER};
    agree(L, "dist.barrier", sig, 1);
    lf_check(L, ff_dist_barrier("dist.barrier"));
    return 0;
}

/* allreduce(t [, op]): t in place, returned. */
static int d_allreduce(lua_State *L)
{
    ff_tensor *t = check_target(L, 1, "dist.allreduce");
    int op = luaL_checkoption(L, 2, "sum", op_names);
    int64_t sig[3 + FF_MAX_DIMS];
    agree(L, "dist.allreduce", sig, tensor_sig(sig, SIG_ALLREDUCE, op, t));
    int64_t n = ff_tensor_numel(t);
    ff_dist_op dop = op == 2 ? FF_DIST_MAX : op == 3 ? FF_DIST_MIN : FF_DIST_SUM;
    lf_check(L, ff_dist_allreduce_f32("dist.allreduce", ff_tensor_data(t), n, dop));
    if (op == 1 && ff_dist_size() > 1) {
        float *p = ff_tensor_data(t), k = 1.0f / (float)ff_dist_size();
        for (int64_t i = 0; i < n; i++)
            p[i] *= k;
    }
    ff_tensor_bump_version(t);
    lua_settop(L, 1);
    return 1;
}

/* allreduce_list({t1, t2, ...} [, op [, scale]]): one flat buffer, so
 * many small gradients cost one collective (in 4 MiB buckets). Each
 * rank's values are multiplied by scale (1) on the way in: a rank's
 * gradient of its local mean loss, weighted by its share of the batch,
 * sums to the gradient of the global mean. */
static int d_allreduce_list(lua_State *L)
{
    const char *who = "dist.allreduce_list";
    luaL_checktype(L, 1, LUA_TTABLE);
    int op = luaL_checkoption(L, 2, "sum", op_names);
    float scale = (float)luaL_optnumber(L, 3, 1.0);
    int n = (int)luaL_len(L, 1);
    int64_t total = 0;
    for (int i = 1; i <= n; i++) {
        lua_geti(L, 1, i);
        if (!lf_totensor(L, -1))
            luaL_error(L, "%s: entry %d of the list is a %s, expected a tensor", who, i,
                       luaL_typename(L, -1));
        ff_tensor *t = check_target(L, lua_gettop(L), who);
        total += ff_tensor_numel(t);
        lua_pop(L, 1);
    }
    int64_t sig[4] = {SIG_ALLREDUCE_LIST, op, n, total};
    agree(L, who, sig, 4);
    float post = op == 1 ? 1.0f / (float)ff_dist_size() : 1.0f;
    float *buf = ff_dist_scratch(total);
    if (!buf)
        lf_check(L, ff_last_status());
    int64_t off = 0;
    for (int i = 1; i <= n; i++) {
        lua_geti(L, 1, i);
        ff_tensor *t = lf_totensor(L, -1);
        int64_t k = ff_tensor_numel(t);
        const float *p = ff_tensor_data(t);
        for (int64_t j = 0; j < k; j++)
            buf[off + j] = p[j] * scale;
        off += k;
        lua_pop(L, 1);
    }
    ff_dist_op dop = op == 2 ? FF_DIST_MAX : op == 3 ? FF_DIST_MIN : FF_DIST_SUM;
    lf_check(L, ff_dist_allreduce_f32(who, buf, total, dop));
    off = 0;
    for (int i = 1; i <= n; i++) {
        lua_geti(L, 1, i);
        ff_tensor *t = lf_totensor(L, -1);
        int64_t k = ff_tensor_numel(t);
        float *p = ff_tensor_data(t);
        for (int64_t j = 0; j < k; j++)
            p[j] = post == 1.0f ? buf[off + j] : buf[off + j] * post;
        ff_tensor_bump_version(t);
        off += k;
        lua_pop(L, 1);
    }
    lua_settop(L, 1);
    return 1;
}

/* allreduce_numbers({a, b, ...} [, op]) -> a new list: Lua numbers reduced
 * in double (loss sums, counts). */
static int d_allreduce_numbers(lua_State *L)
{
    const char *who = "dist.allreduce_numbers";
    luaL_checktype(L, 1, LUA_TTABLE);
    int op = luaL_checkoption(L, 2, "sum", op_names);
    int n = (int)luaL_len(L, 1);
    double *v = lua_newuserdatauv(L, sizeof(double) * (size_t)(n > 0 ? n : 1), 0);
    for (int i = 1; i <= n; i++) {
        lua_geti(L, 1, i);
        int ok;
        v[i - 1] = lua_tonumberx(L, -1, &ok);
        if (!ok)
            luaL_error(L, "%s: entry %d of the list is a %s, expected a number", who, i,
                       luaL_typename(L, -1));
        lua_pop(L, 1);
    }
    int64_t sig[4] = {SIG_NUMBERS, op, n, n};
    agree(L, who, sig, 4);
    ff_dist_op dop = op == 2 ? FF_DIST_MAX : op == 3 ? FF_DIST_MIN : FF_DIST_SUM;
    lf_check(L, ff_dist_allreduce_f64(who, v, n, dop));
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        lua_pushnumber(L, op == 1 ? v[i] / ff_dist_size() : v[i]);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

/* broadcast(t, root): root's values into t on every rank; t returned. */
static int d_broadcast(lua_State *L)
{
    ff_tensor *t = check_target(L, 1, "dist.broadcast");
    lua_Integer root = luaL_checkinteger(L, 2);
    int64_t sig[3 + FF_MAX_DIMS];
    agree(L, "dist.broadcast", sig, tensor_sig(sig, SIG_BROADCAST, root, t));
    if (root < 0 || root >= ff_dist_size())
        return luaL_error(L, "dist.broadcast: root rank %d does not exist (ranks are 0..%d)",
                          (int)root, ff_dist_size() - 1);
    lf_check(L, ff_dist_broadcast_f32("dist.broadcast", ff_tensor_data(t), ff_tensor_numel(t),
                                      (int)root));
    ff_tensor_bump_version(t);
    lua_settop(L, 1);
    return 1;
}

/* allgather(t) -> a new tensor size x (t's shape), rank r's t at row r+1. */
static int d_allgather(lua_State *L)
{
    ff_tensor *t = lf_checktensor(L, 1);
    int64_t sig[3 + FF_MAX_DIMS];
    agree(L, "dist.allgather", sig, tensor_sig(sig, SIG_ALLGATHER, 0, t));
    if (t->ndim >= FF_MAX_DIMS)
        return luaL_error(L, "dist.allgather: a tensor of %d dims has no room for the rank dim",
                          t->ndim);
    ff_tensor *c;
    LF_RETRY(L, c, ff_tensor_contiguous(t));
    if (!c)
        return lf_raise(L);
    lf_pushtensor(L, c); /* owned by Lua from here on */
    int64_t shape[FF_MAX_DIMS];
    shape[0] = ff_dist_size();
    memcpy(shape + 1, t->shape, sizeof(int64_t) * (size_t)t->ndim);
    ff_tensor *out;
    LF_RETRY(L, out, ff_tensor_empty(shape, t->ndim + 1));
    lf_pushtensor(L, out);
    lf_check(L, ff_dist_allgather_f32("dist.allgather", ff_tensor_data(c), ff_tensor_numel(c),
                                      ff_tensor_data(out)));
    lf_gc_account(L);
    return 1;
}

/* FNV-1a over a tensor's shape and bits: equal tensors hash equal on any
 * rank; -0.0 and 0.0, or two NaN payloads, differ, as they should. */
static int64_t tensor_hash(const ff_tensor *t)
{
    uint64_t h = 1469598103934665603ULL;
    const uint64_t prime = 1099511628211ULL;
    for (int i = 0; i < t->ndim; i++)
        h = (h ^ (uint64_t)t->shape[i]) * prime;
    int64_t n = ff_tensor_numel(t);
    const float *p = ff_tensor_data(t);
    for (int64_t i = 0; i < n; i++) {
        uint32_t b;
        memcpy(&b, p + i, sizeof b);
        h = (h ^ b) * prime;
    }
    return (int64_t)h;
}

/* mismatch({t1, t2, ...} [, who]) -> nil when every rank holds the same
 * bits in every tensor; else the position of the first tensor that
 * differs and the first rank whose copy differs from rank 0's. */
static int d_mismatch(lua_State *L)
{
    const char *who = luaL_optstring(L, 2, "dist.mismatch");
    luaL_checktype(L, 1, LUA_TTABLE);
    int n = (int)luaL_len(L, 1);
    int size = ff_dist_size();
    int64_t *mine = lua_newuserdatauv(L, sizeof(int64_t) * (size_t)(n + 1) * (size_t)(size + 1), 0);
    int64_t *all = mine + n + 1;
    mine[0] = n;
    for (int i = 1; i <= n; i++) {
        lua_geti(L, 1, i);
        ff_tensor *t = lf_totensor(L, -1);
        if (!t)
            luaL_error(L, "%s: entry %d of the list is a %s, expected a tensor", who, i,
                       luaL_typename(L, -1));
        ff_tensor *c = ff_tensor_contiguous(t);
        if (!c)
            lf_raise(L);
        mine[i] = tensor_hash(c);
        ff_tensor_release(c);
        lua_pop(L, 1);
    }
    int64_t sig[4] = {SIG_ALLREDUCE_LIST, 0, n, n};
    agree(L, who, sig, 4);
    lf_check(L, ff_dist_allgather_i64(who, mine, n + 1, all));
    for (int i = 1; i <= n; i++)
        for (int r = 1; r < size; r++)
            if (all[(size_t)r * (size_t)(n + 1) + (size_t)i] != all[i]) {
                lua_pushinteger(L, i);
                lua_pushinteger(L, r);
                return 2;
            }
    lua_pushnil(L);
    return 1;
}

static int d_set_timeout(lua_State *L)
{
    ff_dist_set_timeout(luaL_checknumber(L, 1));
    return 0;
}

static int d_timeout(lua_State *L)
{
    lua_pushnumber(L, ff_dist_timeout());
    return 1;
}

/* stats([reset]) -> bytes given to allreduce, seconds waited in collectives */
static int d_stats(lua_State *L)
{
    double bytes, secs;
    ff_dist_stats(&bytes, &secs, lua_toboolean(L, 1));
    lua_pushnumber(L, bytes);
    lua_pushnumber(L, secs);
    return 2;
}

static int d_abort(lua_State *L)
{
    const char *msg = luaL_optstring(L, 2, NULL);
    if (msg)
        fprintf(stderr, "%s\n", msg);
    ff_dist_abort((int)luaL_optinteger(L, 1, 1));
    return 0;
}

static const luaL_Reg dist_fns[] = {
    {"init", d_init}, {"active", d_active}, {"launched", d_launched}, {"rank", d_rank},
    {"size", d_size}, {"barrier", d_barrier}, {"allreduce", d_allreduce},
    {"allreduce_list", d_allreduce_list}, {"allreduce_numbers", d_allreduce_numbers},
    {"broadcast", d_broadcast}, {"allgather", d_allgather}, {"set_timeout", d_set_timeout},
    {"timeout", d_timeout}, {"stats", d_stats}, {"abort", d_abort}, {"mismatch", d_mismatch},
    {"reducer", lf_dist_reducer}, {NULL, NULL}};

void lf_open_dist(lua_State *L)
{
    /* started by mpirun: every rank knows its place before any user code */
    if (ff_dist_launched() && ff_dist_init() != FF_OK)
        luaL_error(L, "firefly: started by mpirun, but %s", ff_last_error());
    lf_dist_reducer_open(L);
    luaL_newlib(L, dist_fns);
    lua_setfield(L, -2, "dist");
}
