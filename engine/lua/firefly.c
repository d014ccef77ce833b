/*
 * firefly.c: luaopen_firefly_core and the module-level functions: creation
 * of tensors, joining, where, threads and engine memory.
 */
#include <math.h>
#include <time.h>
#include <unistd.h>
#include "lf.h"

/* ---- ff.tensor(nested table | number) ---- */

/* Shape of a nested table, checking that it is rectangular. */
static int nested_shape(lua_State *L, int idx, int64_t *shape)
{
    int ndim = 0;
    lua_pushvalue(L, idx);
    while (lua_istable(L, -1)) {
        if (ndim == FF_MAX_DIMS)
            luaL_error(L, "tensor: nested tables deeper than %d dims", FF_MAX_DIMS);
        shape[ndim++] = (int64_t)luaL_len(L, -1);
        if (shape[ndim - 1] == 0)
            break;
        lua_geti(L, -1, 1);
        lua_remove(L, -2);
    }
    lua_pop(L, 1);
    return ndim;
}

static void nested_fill(lua_State *L, const int64_t *shape, int ndim, int dim, float **out)
{
    if (dim == ndim) {
        int ok;
        lua_Number v = lua_tonumberx(L, -1, &ok);
        if (!ok)
            luaL_error(L, "tensor: expected a number at depth %d, got %s", dim,
                       luaL_typename(L, -1));
        *(*out)++ = (float)v;
        return;
    }
    if (!lua_istable(L, -1) || (int64_t)luaL_len(L, -1) != shape[dim])
        luaL_error(L, "tensor: ragged nested table: an entry at depth %d has %s, expected %d elements",
                   dim + 1, lua_istable(L, -1) ? "another length" : luaL_typename(L, -1),
                   (int)shape[dim]);
    luaL_checkstack(L, 4, "tensor");
    for (int64_t i = 0; i < shape[dim]; i++) {
        lua_geti(L, -1, i + 1);
        nested_fill(L, shape, ndim, dim + 1, out);
        lua_pop(L, 1);
    }
}

static int m_tensor(lua_State *L)
{
    lf_check_no_more(L, 2, "tensor");
    if (lua_type(L, 1) == LUA_TNUMBER) {
        lf_pushtensor(L, ff_tensor_scalar((float)lua_tonumber(L, 1)));
        return 1;
    }
    if (!lua_istable(L, 1))
        return luaL_error(L, "tensor: argument #1 must be a number or a nested table of numbers, got %s",
                          luaL_typename(L, 1));
    int64_t shape[FF_MAX_DIMS];
    int ndim = nested_shape(L, 1, shape);
    /* Fill through a tensor already owned by Lua, so a ragged-table error
     * raised mid-way leaks nothing. */
    lf_pushtensor(L, ff_tensor_empty(shape, ndim));
    float *p = ff_tensor_data(lf_checktensor(L, -1));
    lua_pushvalue(L, 1);
    nested_fill(L, shape, ndim, 0, &p);
    lua_pop(L, 1);
    return 1;
}

/* ---- constant and range creation ---- */

static int m_full_like(lua_State *L, const char *what, int arg, float value)
{
    int64_t shape[FF_MAX_DIMS];
    int next;
    int n = lf_checkshape(L, arg, shape, &next, what);
    lf_check_no_more(L, next, what);
    ff_tensor *t;
    LF_RETRY(L, t, ff_tensor_full(shape, n, value));
    lf_pushtensor(L, t);
    return 1;
}

static int m_zeros(lua_State *L) { return m_full_like(L, "zeros", 1, 0.0f); }
static int m_ones(lua_State *L) { return m_full_like(L, "ones", 1, 1.0f); }
static int m_empty(lua_State *L) { return m_full_like(L, "empty", 1, 0.0f); }

/* ff.full(shape, value) */
static int m_full(lua_State *L)
{
    if (!lua_istable(L, 1))
        return luaL_error(L, "full: argument #1 must be a shape table, got %s", luaL_typename(L, 1));
    if (lua_type(L, 2) != LUA_TNUMBER)
        return luaL_error(L, "full: argument #2 (the value) must be a number, got %s", luaL_typename(L, 2));
    lf_check_no_more(L, 3, "full");
    float value = (float)lua_tonumber(L, 2);
    lua_settop(L, 1);
    return m_full_like(L, "full", 1, value);
}

/* ff.arange(n) = 0..n-1; ff.arange(start, stop [, step]) stop excluded. */
static int m_arange(lua_State *L)
{
    double start = 0, stop, step = 1;
    if (lua_isnoneornil(L, 2)) {
        stop = luaL_checknumber(L, 1);
    } else {
        start = luaL_checknumber(L, 1);
        stop = luaL_checknumber(L, 2);
        step = luaL_optnumber(L, 3, 1.0);
    }
    lf_check_no_more(L, 4, "arange");
    lf_pushtensor(L, ff_tensor_arange(start, stop, step));
    return 1;
}

static int m_linspace(lua_State *L)
{
    double a = luaL_checknumber(L, 1), b = luaL_checknumber(L, 2);
    lua_Integer n = luaL_checkinteger(L, 3);
    lf_check_no_more(L, 4, "linspace");
    lf_pushtensor(L, ff_tensor_linspace(a, b, n));
    return 1;
}

static int m_eye(lua_State *L)
{
    lua_Integer n = luaL_checkinteger(L, 1), m = luaL_optinteger(L, 2, n);
    lf_check_no_more(L, 3, "eye");
    if (n < 0 || m < 0)
        return luaL_error(L, "eye: sizes must be >= 0, got %d and %d", (int)n, (int)m);
    lf_pushtensor(L, ff_tensor_eye(n, m));
    return 1;
}

/* ---- random creation: shape, then an optional generator ---- */

/* Push a new tensor of the shape given from arg on; return the generator
 * that follows the shape (default when absent). */
static ff_rng *random_target(lua_State *L, int arg, const char *what, ff_tensor **t)
{
    int64_t shape[FF_MAX_DIMS];
    int next;
    int n = lf_checkshape(L, arg, shape, &next, what);
    if (!lua_isnoneornil(L, next) && !luaL_testudata(L, next, LF_GENERATOR)) {
        if (next == arg)
            luaL_error(L, "%s: argument #%d must be a size or a shape table, got %s", what, next,
                       luaL_typename(L, next));
        luaL_error(L, "%s: argument #%d (after the shape) must be an ff.Generator, got %s", what, next,
                   luaL_typename(L, next));
    }
    lf_check_no_more(L, next + 1, what);
    ff_rng *g = lf_optgenerator(L, next);
    LF_RETRY(L, *t, ff_tensor_empty(shape, n));
    lf_pushtensor(L, *t);
    return g;
}

static int m_rand(lua_State *L)
{
    ff_tensor *t;
    ff_rng *g = random_target(L, 1, "rand", &t);
    lf_check(L, ff_rand_(t, g, 0.0, 1.0));
    return 1;
}

static int m_randn(lua_State *L)
{
    ff_tensor *t;
    ff_rng *g = random_target(L, 1, "randn", &t);
    lf_check(L, ff_randn_(t, g, 0.0, 1.0));
    return 1;
}

/* ff.randint(lo, hi, shape... [, gen]): integers in [lo, hi], both included. */
static int m_randint(lua_State *L)
{
    lua_Integer lo = luaL_checkinteger(L, 1), hi = luaL_checkinteger(L, 2);
    ff_tensor *t;
    ff_rng *g = random_target(L, 3, "randint", &t);
    lf_check(L, ff_randint_(t, g, lo, hi));
    return 1;
}

/* ff.bernoulli(p, shape... [, gen]) */
static int m_bernoulli(lua_State *L)
{
    double p = luaL_checknumber(L, 1);
    ff_tensor *t;
    ff_rng *g = random_target(L, 2, "bernoulli", &t);
    lf_check(L, ff_bernoulli_(t, g, p));
    return 1;
}

/* ---- joining ---- */

/* Tensors of a Lua list as borrowed pointers, in a userdata-backed array so
 * nothing leaks on error. */
static ff_tensor **checklist(lua_State *L, int arg, int *n, const char *what)
{
    luaL_checktype(L, arg, LUA_TTABLE);
    *n = (int)luaL_len(L, arg);
    if (*n < 1)
        luaL_error(L, "%s: expected a non-empty list of tensors", what);
    ff_tensor **ts = lua_newuserdatauv(L, sizeof *ts * (size_t)*n, 0);
    for (int i = 0; i < *n; i++) {
        lua_geti(L, arg, i + 1);
        ts[i] = lf_totensor(L, -1);
        if (!ts[i])
            luaL_error(L, "%s: entry %d of the list is a %s, expected a tensor", what, i + 1,
                       luaL_typename(L, -1));
        lua_pop(L, 1); /* still referenced by the list */
    }
    return ts;
}

static int m_cat(lua_State *L)
{
    int n;
    lua_settop(L, 2); /* the list's array goes above the arguments */
    ff_tensor **ts = checklist(L, 1, &n, "cat");
    int dim = lf_optdim(L, 2, ts[0]->ndim, "cat", 0);
    if (ts[0]->ndim == 0)
        return luaL_error(L, "cat: cannot concatenate scalar tensors; use stack");
    ff_params p = {.i = {dim}};
    lf_pushtensor(L, lf_apply(L, FF_OP_CAT, ts, n, &p, NULL));
    return 1;
}

static int m_stack(lua_State *L)
{
    int n;
    lua_settop(L, 2);
    ff_tensor **ts = checklist(L, 1, &n, "stack");
    int dim = lf_optdim(L, 2, ts[0]->ndim + 1, "stack", 0);
    ff_params p = {.i = {dim}};
    lf_pushtensor(L, lf_apply(L, FF_OP_STACK, ts, n, &p, NULL));
    return 1;
}

/* ff.where(cond, a, b): a and b may be numbers. */
static int m_where(lua_State *L)
{
    ff_tensor *c = lf_checktensor(L, 1), *in[2];
    lf_checkoperands(L, 2, 2, in);
    ff_params p = {.aux = {c}};
    ff_tensor *r = lf_apply(L, FF_OP_WHERE, in, 2, &p, NULL);
    ff_tensor_release(in[0]);
    ff_tensor_release(in[1]);
    lf_pushtensor(L, r);
    return 1;
}

/* ---- threads and memory ---- */

static int m_set_num_threads(lua_State *L)
{
    lua_Integer n = luaL_checkinteger(L, 1);
    luaL_argcheck(L, n >= 1 && n <= 1024, 1, "thread count must be in 1..1024");
    ff_blas_set_threads((int)n);
    return 0;
}

static int m_get_num_threads(lua_State *L)
{
    lua_pushinteger(L, ff_blas_threads());
    return 1;
}

/* ff.memory([reset_peak]) -> bytes held by tensors now, at the peak, and
 * freed but cached for reuse; with `true`, the peak then restarts from now
 * (to measure the peak of one computation). */
static int m_memory(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)ff_mem_live_bytes());
    lua_pushinteger(L, (lua_Integer)ff_mem_peak_bytes());
    lua_pushinteger(L, (lua_Integer)ff_mem_cached_bytes());
    if (lua_toboolean(L, 1))
        ff_mem_reset_peak();
    return 3;
}

/* ff.system_memory() -> total, available bytes of physical memory: growth
 * estimates what a neighbourhood needs and refuses one that cannot fit
 * before allocating anything. */
static int m_system_memory(lua_State *L)
{
    long page = sysconf(_SC_PAGESIZE);
    long total = sysconf(_SC_PHYS_PAGES), avail = sysconf(_SC_AVPHYS_PAGES);
    lua_pushinteger(L, (lua_Integer)(total > 0 && page > 0 ? (double)total * page : 0));
    lua_pushinteger(L, (lua_Integer)(avail > 0 && page > 0 ? (double)avail * page : 0));
    return 2;
}

/* ff.clock() -> seconds on a monotonic wall clock (for timing and ETAs;
 * os.clock counts CPU time of every thread). */
static int m_clock(lua_State *L)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec * 1e-9);
    return 1;
}

/* ff.isatty(fd) -> whether file descriptor fd (1 stdout, 2 stderr) is a
 * terminal: progress displays redraw in place there and stay quiet in logs. */
static int m_isatty(lua_State *L)
{
    lua_pushboolean(L, isatty((int)luaL_optinteger(L, 1, 1)) == 1);
    return 1;
}

static const luaL_Reg module_fns[] = {
    {"tensor", m_tensor}, {"zeros", m_zeros}, {"ones", m_ones}, {"empty", m_empty},
    {"full", m_full}, {"arange", m_arange}, {"linspace", m_linspace}, {"eye", m_eye},
    {"rand", m_rand}, {"randn", m_randn}, {"randint", m_randint},
    {"bernoulli", m_bernoulli}, {"cat", m_cat}, {"stack", m_stack}, {"where", m_where},
    {"set_num_threads", m_set_num_threads}, {"get_num_threads", m_get_num_threads},
    {"memory", m_memory}, {"system_memory", m_system_memory}, {"clock", m_clock}, {"isatty", m_isatty},
    {NULL, NULL}};

int luaopen_firefly_core(lua_State *L)
{
    ff_blas_init();
    luaL_newlib(L, module_fns);
    lf_open_tensor(L);
    lf_open_generator(L);
    lf_open_autograd(L);
    lf_open_functional(L);
    lf_open_nn(L);
    lf_open_data(L);
    lf_open_io(L);
    lf_open_linalg(L);
    lf_open_onnx(L);
    lf_open_optim(L);
    lf_open_grow(L);
    lf_open_dist(L);
    lua_pushstring(L, FF_VERSION);
    lua_setfield(L, -2, "version");
    return 1;
}
