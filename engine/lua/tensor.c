/*
 * tensor.c: the firefly.Tensor type: metatable, indexing, operators, methods.
 *
 * Rule for every function here: check every argument before taking any
 * engine reference, because luaL_error longjmps and would leak it.
 */
#include <math.h>
#include <string.h>
#include "lf.h"

/* Push op applied to one tensor with parameters p (recorded by autograd). */
static int push1(lua_State *L, ff_opcode op, ff_tensor *t, const ff_params *p)
{
    lf_pushtensor(L, lf_apply(L, op, &t, 1, p, NULL));
    return 1;
}

/* ---- lifetime ---- */

static int t_gc(lua_State *L)
{
    lf_tensor *u = luaL_checkudata(L, 1, LF_TENSOR);
    ff_tensor_release(u->t); /* idempotent: __close then __gc */
    u->t = NULL;
    return 0;
}

/* ---- element access: t[i], t[{i, j}] ---- */

/* Lua index (1-based, negative from the end) to 0-based, with a clear error. */
static int64_t checkpos(lua_State *L, lua_Integer i, const ff_tensor *t, int dim)
{
    int64_t n = t->shape[dim];
    if (i >= 1 && i <= n)
        return i - 1;
    if (i < 0 && i >= -n)
        return n + i;
    char buf[FF_SHAPE_STRLEN];
    luaL_error(L, "index %d out of range for dim %d of a tensor of shape %s", (int)i, dim + 1,
               ff_shape_str(t->shape, t->ndim, buf, sizeof buf));
    return 0;
}

/* The view addressed by key (a number or a table of numbers), as a new
 * reference; *full is set when it addresses one element of t (then the
 * result is that element as a rank-0 view). */
static ff_tensor *addressed(lua_State *L, ff_tensor *t, int key)
{
    int64_t pos[FF_MAX_DIMS];
    int n;
    if (lua_type(L, key) == LUA_TNUMBER) {
        if (t->ndim == 0)
            luaL_error(L, "cannot index a scalar tensor; use item()");
        pos[0] = checkpos(L, luaL_checkinteger(L, key), t, 0);
        n = 1;
    } else {
        n = (int)luaL_len(L, key);
        if (n > t->ndim) {
            char buf[FF_SHAPE_STRLEN];
            luaL_error(L, "%d indices given for a tensor of shape %s", n,
                       ff_shape_str(t->shape, t->ndim, buf, sizeof buf));
        }
        for (int k = 0; k < n; k++) {
            lua_geti(L, key, k + 1);
            if (!lua_isinteger(L, -1))
                luaL_error(L, "index entry %d must be an integer, got %s", k + 1,
                           luaL_typename(L, -1));
            pos[k] = checkpos(L, lua_tointeger(L, -1), t, k);
            lua_pop(L, 1);
        }
    }
    ff_tensor *v = ff_tensor_retain(t);
    for (int k = 0; k < n && v; k++) {
        ff_params p = {.i = {0, pos[k]}};
        ff_tensor *next = lf_apply(L, FF_OP_SELECT, &v, 1, &p, NULL);
        ff_tensor_release(v);
        v = next;
    }
    if (!v)
        lf_raise(L);
    return v;
}

static int t_index(lua_State *L)
{
    int kt = lua_type(L, 2);
    if (kt == LUA_TSTRING) {
        const char *key = lua_tostring(L, 2);
        if (key[0] == 'g' && strcmp(key, "grad") == 0)
            return lf_push_grad(L, 1);
        lua_pushvalue(L, 2);
        lua_gettable(L, lua_upvalueindex(1)); /* methods */
        return 1;
    }
    ff_tensor *t = lf_checktensor(L, 1);
    if (kt != LUA_TNUMBER && kt != LUA_TTABLE)
        return luaL_error(L, "tensor index must be a number, a table of numbers or a method name, got %s",
                          luaL_typename(L, 2));
    ff_tensor *v = addressed(L, t, 2);
    if (v->ndim == 0) {
        lua_pushnumber(L, ff_tensor_data(v)[0]);
        ff_tensor_release(v);
        return 1;
    }
    lf_pushtensor(L, v);
    return 1;
}

static int t_newindex(lua_State *L)
{
    ff_tensor *t = lf_checktensor(L, 1);
    int kt = lua_type(L, 2);
    if (kt == LUA_TSTRING && strcmp(lua_tostring(L, 2), "grad") == 0)
        return lf_set_grad(L, 1, 3);
    if (kt != LUA_TNUMBER && kt != LUA_TTABLE)
        return luaL_error(L, "cannot set field '%s' of a tensor", luaL_tolstring(L, 2, NULL));
    int vt = lua_type(L, 3);
    if (vt != LUA_TNUMBER && !lf_totensor(L, 3))
        return luaL_typeerror(L, 3, "number or tensor");
    lf_check_inplace(L, t, "tensor assignment");
    ff_tensor *v = addressed(L, t, 2);
    ff_status st = vt == LUA_TNUMBER ? ff_tensor_fill_(v, (float)lua_tonumber(L, 3))
                                     : ff_tensor_copy_(v, lf_checktensor(L, 3));
    ff_tensor_release(v);
    lf_check(L, st);
    return 0;
}

static int t_len(lua_State *L)
{
    ff_tensor *t = lf_checktensor(L, 1);
    if (t->ndim == 0)
        return luaL_error(L, "a scalar tensor has no length; use numel()");
    lua_pushinteger(L, t->shape[0]);
    return 1;
}

/* Until the Lua library installs its printer (lib/firefly/tensor.lua). */
static int t_tostring(lua_State *L)
{
    ff_tensor *t = lf_checktensor(L, 1);
    char buf[FF_SHAPE_STRLEN];
    lua_pushfstring(L, "[Tensor %s]", ff_shape_str(t->shape, t->ndim, buf, sizeof buf));
    return 1;
}

/* ---- shape queries ---- */

static void pushshape(lua_State *L, const int64_t *v, int n)
{
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        lua_pushinteger(L, v[i]);
        lua_rawseti(L, -2, i + 1);
    }
}

static int t_size(lua_State *L)
{
    ff_tensor *t = lf_checktensor(L, 1);
    if (lua_isnoneornil(L, 2)) {
        pushshape(L, t->shape, t->ndim);
        return 1;
    }
    lua_pushinteger(L, t->shape[lf_checkdim(L, 2, t->ndim, "size")]);
    return 1;
}

static int t_stride(lua_State *L)
{
    ff_tensor *t = lf_checktensor(L, 1);
    if (lua_isnoneornil(L, 2)) {
        pushshape(L, t->stride, t->ndim);
        return 1;
    }
    lua_pushinteger(L, t->stride[lf_checkdim(L, 2, t->ndim, "stride")]);
    return 1;
}

static int t_dim(lua_State *L)
{
    lua_pushinteger(L, lf_checktensor(L, 1)->ndim);
    return 1;
}

static int t_numel(lua_State *L)
{
    lua_pushinteger(L, ff_tensor_numel(lf_checktensor(L, 1)));
    return 1;
}

static int t_is_contiguous(lua_State *L)
{
    lua_pushboolean(L, ff_tensor_is_contiguous(lf_checktensor(L, 1)));
    return 1;
}

static int t_item(lua_State *L)
{
    ff_tensor *t = lf_checktensor(L, 1);
    if (ff_tensor_numel(t) != 1) {
        char buf[FF_SHAPE_STRLEN];
        return luaL_error(L, "item: tensor of shape %s has %d elements, expected 1",
                          ff_shape_str(t->shape, t->ndim, buf, sizeof buf),
                          (int)ff_tensor_numel(t));
    }
    int64_t zero[FF_MAX_DIMS] = {0};
    lua_pushnumber(L, ff_tensor_data(t)[ff_tensor_offset_of(t, zero)]);
    return 1;
}

static void totable_rec(lua_State *L, const ff_tensor *t, int dim, const float *p)
{
    if (dim == t->ndim) {
        lua_pushnumber(L, *p);
        return;
    }
    luaL_checkstack(L, 4, "totable");
    lua_createtable(L, (int)t->shape[dim], 0);
    for (int64_t i = 0; i < t->shape[dim]; i++) {
        totable_rec(L, t, dim + 1, p + i * t->stride[dim]);
        lua_rawseti(L, -2, i + 1);
    }
}

static int t_totable(lua_State *L)
{
    ff_tensor *t = lf_checktensor(L, 1);
    totable_rec(L, t, 0, ff_tensor_data(t));
    return 1;
}

/* ---- views and copies ---- */

/* view, reshape, expand: a shape from the arguments. view refuses what it
 * cannot do without a copy; reshape copies then. */
static int t_view_like(lua_State *L, const char *what, ff_opcode op, bool need_contiguous)
{
    ff_tensor *t = lf_checktensor(L, 1);
    ff_params p = {0};
    p.ni = lf_checkshape(L, 2, p.i, NULL, what);
    if (need_contiguous && !ff_tensor_is_contiguous(t)) {
        char buf[FF_SHAPE_STRLEN];
        return luaL_error(L, "view: tensor of shape %s is not contiguous; use reshape() or contiguous() first",
                          ff_shape_str(t->shape, t->ndim, buf, sizeof buf));
    }
    return push1(L, op, t, &p);
}

static int t_view(lua_State *L) { return t_view_like(L, "view", FF_OP_RESHAPE, true); }
static int t_reshape(lua_State *L) { return t_view_like(L, "reshape", FF_OP_RESHAPE, false); }
static int t_expand(lua_State *L) { return t_view_like(L, "expand", FF_OP_EXPAND, false); }

static int t_narrow(lua_State *L)
{
    ff_tensor *t = lf_checktensor(L, 1);
    int dim = lf_checkdim(L, 2, t->ndim, "narrow");
    lua_Integer start = luaL_checkinteger(L, 3), len = luaL_checkinteger(L, 4);
    ff_params p = {.i = {dim, start - 1, len}};
    return push1(L, FF_OP_NARROW, t, &p);
}

static int t_select(lua_State *L)
{
    ff_tensor *t = lf_checktensor(L, 1);
    int dim = lf_checkdim(L, 2, t->ndim, "select");
    int64_t i = checkpos(L, luaL_checkinteger(L, 3), t, dim);
    ff_params p = {.i = {dim, i}};
    return push1(L, FF_OP_SELECT, t, &p);
}

static int t_transpose(lua_State *L)
{
    ff_tensor *t = lf_checktensor(L, 1);
    int d0 = lf_checkdim(L, 2, t->ndim, "transpose");
    int d1 = lf_checkdim(L, 3, t->ndim, "transpose");
    ff_params p = {.i = {d0, d1}};
    return push1(L, FF_OP_TRANSPOSE, t, &p);
}

static int t_t(lua_State *L)
{
    ff_tensor *t = lf_checktensor(L, 1);
    if (t->ndim != 2) {
        char buf[FF_SHAPE_STRLEN];
        return luaL_error(L, "t: expected a 2-D tensor, got shape %s; use transpose(d1, d2)",
                          ff_shape_str(t->shape, t->ndim, buf, sizeof buf));
    }
    ff_params p = {.i = {0, 1}};
    return push1(L, FF_OP_TRANSPOSE, t, &p);
}

static int t_permute(lua_State *L)
{
    ff_tensor *t = lf_checktensor(L, 1);
    int perm[FF_MAX_DIMS], n = 0;
    if (lua_istable(L, 2)) {
        n = (int)luaL_len(L, 2);
        if (n != t->ndim)
            return luaL_error(L, "permute: got %d dims for a tensor of rank %d", n, t->ndim);
        for (int i = 0; i < n; i++) {
            lua_geti(L, 2, i + 1);
            perm[i] = lf_checkdim(L, -1, t->ndim, "permute");
            lua_pop(L, 1);
        }
    } else {
        n = lua_gettop(L) - 1;
        if (n != t->ndim)
            return luaL_error(L, "permute: got %d dims for a tensor of rank %d", n, t->ndim);
        for (int i = 0; i < n; i++)
            perm[i] = lf_checkdim(L, i + 2, t->ndim, "permute");
    }
    ff_params p = {.ni = n};
    for (int i = 0; i < n; i++)
        p.i[i] = perm[i];
    return push1(L, FF_OP_PERMUTE, t, &p);
}

static int t_squeeze(lua_State *L)
{
    ff_tensor *t = lf_checktensor(L, 1);
    int dim = lf_optdim(L, 2, t->ndim, "squeeze", -1);
    ff_params p = {.i = {dim}};
    return push1(L, FF_OP_SQUEEZE, t, &p);
}

static int t_unsqueeze(lua_State *L)
{
    ff_tensor *t = lf_checktensor(L, 1);
    /* rank+1 positions: 1..n+1, or -1 for "after the last" */
    int dim = lf_checkdim(L, 2, t->ndim + 1, "unsqueeze");
    ff_params p = {.i = {dim}};
    return push1(L, FF_OP_UNSQUEEZE, t, &p);
}

static int t_contiguous(lua_State *L)
{
    ff_params p = {.i = {0}};
    return push1(L, FF_OP_CONTIGUOUS, lf_checktensor(L, 1), &p);
}

static int t_clone(lua_State *L)
{
    ff_params p = {.i = {1}}; /* copy even when contiguous */
    return push1(L, FF_OP_CONTIGUOUS, lf_checktensor(L, 1), &p);
}

static int t_copy_(lua_State *L)
{
    ff_tensor *t = lf_checktensor(L, 1);
    lf_check_inplace(L, t, "copy_");
    lf_check(L, ff_tensor_copy_(t, lf_checktensor(L, 2)));
    lua_settop(L, 1);
    return 1;
}

static int t_fill_(lua_State *L)
{
    ff_tensor *t = lf_checktensor(L, 1);
    lf_check_inplace(L, t, "fill_");
    lf_check(L, ff_tensor_fill_(t, (float)luaL_checknumber(L, 2)));
    lua_settop(L, 1);
    return 1;
}

static int t_zero_(lua_State *L)
{
    lf_check_inplace(L, lf_checktensor(L, 1), "zero_");
    lf_check(L, ff_tensor_fill_(lf_checktensor(L, 1), 0.0f));
    lua_settop(L, 1);
    return 1;
}

static int t_equal(lua_State *L)
{
    ff_tensor *a = lf_checktensor(L, 1), *b = lf_checktensor(L, 2);
    bool same = ff_shape_equal(a, b);
    if (same) {
        ff_tensor *ne = ff_binary(FF_NE, a, b);
        if (!ne)
            return lf_raise(L);
        ff_tensor *s = ff_sum(ne, -1, false);
        ff_tensor_release(ne);
        if (!s)
            return lf_raise(L);
        same = ff_tensor_data(s)[0] == 0.0f;
        ff_tensor_release(s);
    }
    lua_pushboolean(L, same);
    return 1;
}

/* ---- elementwise ---- */

/* Differentiable binary ops go through autograd; comparisons (opcode
 * FF_OP_COUNT here) are plain kernels: their gradient is zero. */
static const ff_opcode binop_grad_op[FF_BINOP_COUNT] = {
    [FF_ADD] = FF_OP_ADD, [FF_SUB] = FF_OP_SUB, [FF_MUL] = FF_OP_MUL, [FF_DIV] = FF_OP_DIV,
    [FF_POW] = FF_OP_POW, [FF_MAXIMUM] = FF_OP_MAXIMUM, [FF_MINIMUM] = FF_OP_MINIMUM,
    [FF_EQ] = FF_OP_COUNT, [FF_NE] = FF_OP_COUNT, [FF_LT] = FF_OP_COUNT, [FF_LE] = FF_OP_COUNT,
    [FF_GT] = FF_OP_COUNT, [FF_GE] = FF_OP_COUNT};

static int binop(lua_State *L, ff_binop op)
{
    ff_tensor *in[2], *r;
    lf_checkoperands(L, 1, 2, in);
    ff_opcode gop = binop_grad_op[op];
    if (gop != FF_OP_COUNT)
        r = lf_apply(L, gop, in, 2, NULL, NULL);
    else
        LF_RETRY(L, r, ff_binary(op, in[0], in[1]));
    ff_tensor_release(in[0]);
    ff_tensor_release(in[1]);
    lf_pushtensor(L, r);
    return 1;
}

static int binop_(lua_State *L, ff_binop op)
{
    ff_tensor *a = lf_checktensor(L, 1), *b;
    lf_check_inplace(L, a, ff_binop_name(op));
    lf_checkoperands(L, 2, 1, &b);
    ff_status st = ff_binary_(op, a, b);
    ff_tensor_release(b);
    lf_check(L, st);
    lua_settop(L, 1);
    return 1;
}

#define BINOPS(X) X(add, FF_ADD) X(sub, FF_SUB) X(mul, FF_MUL) X(div, FF_DIV) \
    X(pow, FF_POW) X(maximum, FF_MAXIMUM) X(minimum, FF_MINIMUM) X(eq, FF_EQ)  \
    X(ne, FF_NE) X(lt, FF_LT) X(le, FF_LE) X(gt, FF_GT) X(ge, FF_GE)
#define DEFINE_BINOP(name, op)                                                \
    static int t_##name(lua_State *L) { return binop(L, op); }                \
    static int t_##name##_(lua_State *L) { return binop_(L, op); }
BINOPS(DEFINE_BINOP)

static const ff_opcode unop_grad_op[FF_UNOP_COUNT] = {
    [FF_NEG] = FF_OP_NEG, [FF_EXP] = FF_OP_EXP, [FF_LOG] = FF_OP_LOG, [FF_SQRT] = FF_OP_SQRT,
    [FF_ABS] = FF_OP_ABS, [FF_SIGN] = FF_OP_COUNT};

static int unop(lua_State *L, ff_unop op)
{
    ff_tensor *t = lf_checktensor(L, 1), *r;
    if (unop_grad_op[op] != FF_OP_COUNT)
        return push1(L, unop_grad_op[op], t, NULL);
    LF_RETRY(L, r, ff_unary(op, t));
    lf_pushtensor(L, r);
    return 1;
}

static int unop_(lua_State *L, ff_unop op)
{
    lf_check_inplace(L, lf_checktensor(L, 1), ff_unop_name(op));
    lf_check(L, ff_unary_(op, lf_checktensor(L, 1)));
    lua_settop(L, 1);
    return 1;
}

#define UNOPS(X) X(neg, FF_NEG) X(exp, FF_EXP) X(log, FF_LOG) X(sqrt, FF_SQRT) \
    X(abs, FF_ABS) X(sign, FF_SIGN)
#define DEFINE_UNOP(name, op)                                                 \
    static int t_##name(lua_State *L) { return unop(L, op); }                 \
    static int t_##name##_(lua_State *L) { return unop_(L, op); }
UNOPS(DEFINE_UNOP)

static void checkbounds(lua_State *L, float *lo, float *hi)
{
    *lo = (float)luaL_optnumber(L, 2, -INFINITY);
    *hi = (float)luaL_optnumber(L, 3, INFINITY);
}

static int t_clamp(lua_State *L)
{
    ff_tensor *t = lf_checktensor(L, 1);
    float lo, hi;
    checkbounds(L, &lo, &hi);
    if (lo > hi)
        return luaL_error(L, "clamp: lower bound %f is above upper bound %f", lo, hi);
    ff_params p = {.f = {lo, hi}};
    return push1(L, FF_OP_CLAMP, t, &p);
}

static int t_clamp_(lua_State *L)
{
    ff_tensor *t = lf_checktensor(L, 1);
    float lo, hi;
    checkbounds(L, &lo, &hi);
    lf_check_inplace(L, t, "clamp_");
    lf_check(L, ff_clamp_(t, lo, hi));
    lua_settop(L, 1);
    return 1;
}

/* ---- reductions ---- */

/* sum, mean: (dim or all, keepdim) */
static int reduce(lua_State *L, const char *what, ff_opcode op)
{
    ff_tensor *t = lf_checktensor(L, 1);
    ff_params p = {.i = {lf_optdim(L, 2, t->ndim, what, -1), lua_toboolean(L, 3)}};
    return push1(L, op, t, &p);
}

static int t_sum(lua_State *L) { return reduce(L, "sum", FF_OP_SUM); }
static int t_mean(lua_State *L) { return reduce(L, "mean", FF_OP_MEAN); }

/* max, min: values only over all elements; values and 1-based positions
 * along a dim. */
static int extreme(lua_State *L, const char *what, ff_opcode op)
{
    ff_tensor *t = lf_checktensor(L, 1), *idx = NULL;
    bool with_dim = !lua_isnoneornil(L, 2);
    ff_params p = {.i = {lf_optdim(L, 2, t->ndim, what, -1), lua_toboolean(L, 3)}};
    ff_tensor *v = lf_apply(L, op, &t, 1, &p, &idx);
    if (!v || !with_dim) {
        ff_tensor_release(idx);
        lf_pushtensor(L, v);
        return 1;
    }
    lf_pushtensor(L, v);
    if (!idx)
        return luaL_error(L, "%s: no indices returned", what);
    lf_indices_to_lua(L, idx);
    lf_pushtensor(L, idx);
    return 2;
}

static int t_max(lua_State *L) { return extreme(L, "max", FF_OP_MAX); }
static int t_min(lua_State *L) { return extreme(L, "min", FF_OP_MIN); }

static int argextreme(lua_State *L, const char *what,
                      ff_tensor *(*fn)(const ff_tensor *, int, bool))
{
    ff_tensor *t = lf_checktensor(L, 1);
    int dim = lf_optdim(L, 2, t->ndim, what, -1);
    ff_tensor *r = fn(t, dim, lua_toboolean(L, 3));
    if (!r)
        return lf_raise(L);
    lf_indices_to_lua(L, r);
    lf_pushtensor(L, r);
    return 1;
}

static int t_argmax(lua_State *L) { return argextreme(L, "argmax", ff_argmax); }
static int t_argmin(lua_State *L) { return argextreme(L, "argmin", ff_argmin); }

static int t_var(lua_State *L)
{
    ff_tensor *t = lf_checktensor(L, 1);
    int dim = lf_optdim(L, 2, t->ndim, "var", -1);
    bool unbiased = lua_isnoneornil(L, 3) ? true : lua_toboolean(L, 3);
    ff_params p = {.i = {dim, lua_toboolean(L, 4), unbiased}};
    return push1(L, FF_OP_VAR, t, &p);
}

static int t_norm(lua_State *L)
{
    ff_tensor *t = lf_checktensor(L, 1);
    double pn = luaL_optnumber(L, 2, 2.0);
    int dim = lf_optdim(L, 3, t->ndim, "norm", -1);
    if (!(pn > 0))
        return luaL_error(L, "norm: p must be > 0, got %f", pn);
    ff_params p = {.i = {dim, lua_toboolean(L, 4)}, .f = {pn}};
    return push1(L, FF_OP_NORM, t, &p);
}

/* ---- products and indexing ---- */

static int t_matmul(lua_State *L)
{
    ff_tensor *in[2] = {lf_checktensor(L, 1), lf_checktensor(L, 2)};
    lf_pushtensor(L, lf_apply(L, FF_OP_MATMUL, in, 2, NULL, NULL));
    return 1;
}

static int t_index_select(lua_State *L)
{
    ff_tensor *t = lf_checktensor(L, 1);
    int dim = lf_checkdim(L, 2, t->ndim, "index_select");
    ff_tensor *idx = lf_checkindex(L, 3, "index_select");
    ff_params p = {.i = {dim}, .aux = {idx}};
    ff_tensor *r = lf_apply(L, FF_OP_INDEX_SELECT, &t, 1, &p, NULL);
    ff_tensor_release(idx);
    lf_pushtensor(L, r);
    return 1;
}

static int t_gather(lua_State *L)
{
    ff_tensor *t = lf_checktensor(L, 1);
    int dim = lf_checkdim(L, 2, t->ndim, "gather");
    ff_tensor *idx = lf_checkindex(L, 3, "gather");
    ff_params p = {.i = {dim}, .aux = {idx}};
    ff_tensor *r = lf_apply(L, FF_OP_GATHER, &t, 1, &p, NULL);
    ff_tensor_release(idx);
    lf_pushtensor(L, r);
    return 1;
}

typedef ff_status (*inplace_index_fn)(ff_tensor *, int, const ff_tensor *, const ff_tensor *);

/* t:fn_(dim, index, src); returns t. */
static int index_inplace(lua_State *L, const char *what, inplace_index_fn fn)
{
    ff_tensor *t = lf_checktensor(L, 1);
    lf_check_inplace(L, t, what);
    int dim = lf_checkdim(L, 2, t->ndim, what);
    ff_tensor *src = lf_checktensor(L, 4);
    ff_tensor *idx = lf_checkindex(L, 3, what);
    ff_status st = fn(t, dim, idx, src);
    ff_tensor_release(idx);
    lf_check(L, st);
    lua_settop(L, 1);
    return 1;
}

static int t_index_add_(lua_State *L) { return index_inplace(L, "index_add_", ff_index_add_); }
static int t_scatter_(lua_State *L) { return index_inplace(L, "scatter_", ff_scatter_); }
static int t_scatter_add_(lua_State *L)
{
    return index_inplace(L, "scatter_add_", ff_scatter_add_);
}

/* t:scatter(dim, index, src): scatter_ into a copy. */
static int t_scatter(lua_State *L)
{
    ff_tensor *t = lf_checktensor(L, 1);
    lf_checkdim(L, 2, t->ndim, "scatter");
    lf_checktensor(L, 4);
    lf_pushtensor(L, ff_tensor_clone(t)); /* a plain copy: scatter is not differentiable */
    lua_replace(L, 1);
    return index_inplace(L, "scatter", ff_scatter_);
}

/* ---- random fills ---- */

static int t_uniform_(lua_State *L)
{
    ff_tensor *t = lf_checktensor(L, 1);
    lf_check_inplace(L, t, "uniform_");
    double lo = luaL_optnumber(L, 2, 0.0), hi = luaL_optnumber(L, 3, 1.0);
    lf_check(L, ff_rand_(t, lf_optgenerator(L, 4), lo, hi));
    lua_settop(L, 1);
    return 1;
}

static int t_normal_(lua_State *L)
{
    ff_tensor *t = lf_checktensor(L, 1);
    lf_check_inplace(L, t, "normal_");
    double mean = luaL_optnumber(L, 2, 0.0), std = luaL_optnumber(L, 3, 1.0);
    lf_check(L, ff_randn_(t, lf_optgenerator(L, 4), mean, std));
    lua_settop(L, 1);
    return 1;
}

static int t_random_(lua_State *L)
{
    ff_tensor *t = lf_checktensor(L, 1);
    lf_check_inplace(L, t, "random_");
    lua_Integer lo = luaL_checkinteger(L, 2), hi = luaL_checkinteger(L, 3);
    lf_check(L, ff_randint_(t, lf_optgenerator(L, 4), lo, hi));
    lua_settop(L, 1);
    return 1;
}

static int t_bernoulli_(lua_State *L)
{
    ff_tensor *t = lf_checktensor(L, 1);
    lf_check_inplace(L, t, "bernoulli_");
    double p = luaL_optnumber(L, 2, 0.5);
    lf_check(L, ff_bernoulli_(t, lf_optgenerator(L, 3), p));
    lua_settop(L, 1);
    return 1;
}

/* ---- registration ---- */

#define REG_BINOP(name, op) {#name, t_##name}, {#name "_", t_##name##_},
#define REG_UNOP(name, op) {#name, t_##name}, {#name "_", t_##name##_},

static const luaL_Reg methods[] = {
    {"size", t_size}, {"shape", t_size}, {"stride", t_stride}, {"dim", t_dim},
    {"numel", t_numel}, {"is_contiguous", t_is_contiguous}, {"item", t_item},
    {"totable", t_totable}, {"view", t_view}, {"reshape", t_reshape},
    {"expand", t_expand}, {"narrow", t_narrow}, {"select", t_select},
    {"transpose", t_transpose}, {"t", t_t}, {"permute", t_permute},
    {"squeeze", t_squeeze}, {"unsqueeze", t_unsqueeze}, {"contiguous", t_contiguous},
    {"clone", t_clone}, {"copy_", t_copy_}, {"fill_", t_fill_}, {"zero_", t_zero_},
    {"equal", t_equal},
    BINOPS(REG_BINOP)
    UNOPS(REG_UNOP)
    {"clamp", t_clamp}, {"clamp_", t_clamp_},
    {"sum", t_sum}, {"mean", t_mean}, {"max", t_max}, {"min", t_min},
    {"argmax", t_argmax}, {"argmin", t_argmin}, {"var", t_var}, {"norm", t_norm},
    {"matmul", t_matmul}, {"index_select", t_index_select}, {"gather", t_gather},
    {"index_add_", t_index_add_}, {"scatter", t_scatter}, {"scatter_", t_scatter_},
    {"scatter_add_", t_scatter_add_},
    {"uniform_", t_uniform_}, {"normal_", t_normal_}, {"random_", t_random_},
    {"bernoulli_", t_bernoulli_},
    {"close", t_gc},
    {NULL, NULL}};

static const luaL_Reg metamethods[] = {
    {"__add", t_add}, {"__sub", t_sub}, {"__mul", t_mul}, {"__div", t_div},
    {"__pow", t_pow}, {"__unm", t_neg}, {"__len", t_len}, {"__newindex", t_newindex},
    {"__tostring", t_tostring}, {"__gc", t_gc}, {"__close", t_gc},
    {NULL, NULL}};

void lf_open_tensor(lua_State *L)
{
    luaL_newmetatable(L, LF_TENSOR);
    luaL_setfuncs(L, metamethods, 0);
    /* The methods table is also the module's `Tensor`, so the Lua library
     * can add methods written in Lua. */
    luaL_newlib(L, methods);
    lua_pushvalue(L, -1);
    lua_setfield(L, -4, "Tensor");
    lua_pushcclosure(L, t_index, 1);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
}
