/*
 * nn.c: Lua functions for linear layers, convolution, pooling, flattening,
 * normalisation and dropout. Each one checks its arguments, fills the op's
 * ff_params (documented in engine/core/op_*.c) and runs it through
 * autograd with lf_apply.
 *
 *   ff.linear(x, W [, b])                      y = x·Wᵀ + b over the last dim
 *   ff.conv2d(x, W [, b] [, opts])             opts: stride = 1, padding = 0,
 *                                              dilation = 1 (each a number or
 *                                              {h, w}), groups = 1
 *   ff.max_pool2d(x, kernel [, opts])          kernel a number or {kh, kw};
 *   ff.avg_pool2d(x, kernel [, opts])          opts: stride = kernel, padding = 0
 *                                              (avg counts padding as zeros)
 *   ff.adaptive_avg_pool2d(x, size)            size a number or {oh, ow}
 *   ff.flatten(x [, start_dim = 2 [, end_dim = -1]])
 *                                              merges dims start..end (1-based);
 *                                              the default keeps the batch dim
 *   ff.batch_norm(x [, opts])                  opts: weight, bias, running_mean,
 *                                              running_var (tensors), training =
 *                                              true, momentum = 0.1, eps = 1e-5;
 *                                              training updates the running
 *                                              statistics in place; relu = true
 *                                              returns relu(batch_norm(x)) in the
 *                                              same passes (the same bits)
 *   ff.layer_norm(x, shape [, opts])           shape: the trailing dims to
 *                                              normalise, {D1, ..., Dk}, or a
 *                                              number for the last dim alone (as
 *                                              torch's normalized_shape);
 *                                              opts: weight, bias, eps = 1e-5
 *   ff.dropout(x, p [, training = true [, generator]])
 *
 * Options tables go through options.c (unknown keys are errors naming the
 * nearest known one). Every function checks all its arguments before the
 * op runs: luaL_error
 * longjmps, and nothing here holds an engine reference until lf_apply.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include "lf.h"


/* An optional tensor argument: nil or a tensor. */
static ff_tensor *opt_tensor_arg(lua_State *L, int arg)
{
    return lua_isnoneornil(L, arg) ? NULL : lf_checktensor(L, arg);
}

/* Push the op's result (lf_apply holds no reference of ours). */
static int apply_push(lua_State *L, ff_opcode op, ff_tensor *const *in, int n, const ff_params *p)
{
    lf_pushtensor(L, lf_apply(L, op, in, n, p, NULL));
    return 1;
}

/* ---- linear ---- */

static int m_linear(lua_State *L)
{
    ff_tensor *in[3] = {lf_checktensor(L, 1), lf_checktensor(L, 2), opt_tensor_arg(L, 3)};
    ff_params p = {0};
    return apply_push(L, FF_OP_LINEAR, in, 3, &p);
}

/* ---- conv2d ---- */

static int m_conv2d(lua_State *L)
{
    static const char *const known[] = {"stride", "padding", "dilation", "groups", NULL};
    const char *fn = "conv2d";
    ff_tensor *x = lf_checktensor(L, 1), *w = lf_checktensor(L, 2), *b = NULL;
    int opts_arg = 4;
    if (lua_istable(L, 3)) /* (x, W, opts): no bias */
        opts_arg = 3;
    else if (!lua_isnoneornil(L, 3) && !lf_totensor(L, 3))
        return luaL_error(L, "%s: argument #3 must be a bias tensor, nil or an options table, got %s",
                          fn, luaL_typename(L, 3));
    else
        b = opt_tensor_arg(L, 3);
    int opts = lf_opt_table(L, opts_arg, fn, known);
    ff_params p = {0};
    int64_t stride[2] = {1, 1}, pad[2] = {0, 0}, dil[2] = {1, 1};
    lf_opt_pair(L, opts, fn, "stride", stride);
    lf_opt_pair(L, opts, fn, "padding", pad);
    lf_opt_pair(L, opts, fn, "dilation", dil);
    p.i[0] = stride[0], p.i[1] = stride[1];
    p.i[2] = pad[0], p.i[3] = pad[1];
    p.i[4] = dil[0], p.i[5] = dil[1];
    p.i[6] = lf_opt_integer(L, opts, fn, "groups", 1);
    ff_tensor *in[3] = {x, w, b};
    return apply_push(L, FF_OP_CONV2D, in, 3, &p);
}

/* ---- pooling ---- */

static int pool(lua_State *L, ff_opcode op, const char *fn)
{
    static const char *const known[] = {"stride", "padding", NULL};
    ff_tensor *x = lf_checktensor(L, 1);
    int64_t kernel[2];
    lf_check_pair(L, 2, fn, "kernel", kernel);
    int opts = lf_opt_table(L, 3, fn, known);
    int64_t stride[2] = {kernel[0], kernel[1]}, pad[2] = {0, 0};
    lf_opt_pair(L, opts, fn, "stride", stride);
    lf_opt_pair(L, opts, fn, "padding", pad);
    ff_params p = {0};
    p.i[0] = kernel[0], p.i[1] = kernel[1];
    p.i[2] = stride[0], p.i[3] = stride[1];
    p.i[4] = pad[0], p.i[5] = pad[1];
    return apply_push(L, op, &x, 1, &p);
}

static int m_max_pool2d(lua_State *L) { return pool(L, FF_OP_MAX_POOL2D, "max_pool2d"); }
static int m_avg_pool2d(lua_State *L) { return pool(L, FF_OP_AVG_POOL2D, "avg_pool2d"); }

static int m_adaptive_avg_pool2d(lua_State *L)
{
    ff_tensor *x = lf_checktensor(L, 1);
    int64_t size[2];
    lf_check_pair(L, 2, "adaptive_avg_pool2d", "output size", size);
    ff_params p = {0};
    p.i[0] = size[0], p.i[1] = size[1];
    return apply_push(L, FF_OP_ADAPTIVE_AVG_POOL2D, &x, 1, &p);
}

/* ---- flatten: a reshape (a view of contiguous data) ---- */

static int m_flatten(lua_State *L)
{
    ff_tensor *x = lf_checktensor(L, 1);
    if (x->ndim == 0)
        return luaL_error(L, "flatten: cannot flatten a scalar tensor");
    int start = lf_optdim(L, 2, x->ndim, "flatten", x->ndim > 1 ? 1 : 0);
    int end = lf_optdim(L, 3, x->ndim, "flatten", x->ndim - 1);
    if (end < start)
        return luaL_error(L, "flatten: end_dim %d comes before start_dim %d", end + 1, start + 1);
    ff_params p = {0};
    int n = 0;
    for (int d = 0; d < x->ndim; d++) {
        if (d <= start || d > end)
            p.i[n++] = x->shape[d];
        else
            p.i[n - 1] *= x->shape[d];
    }
    p.ni = n;
    return apply_push(L, FF_OP_RESHAPE, &x, 1, &p);
}

/* ---- normalisation ---- */

static int m_batch_norm(lua_State *L)
{
    static const char *const known[] = {"weight", "bias", "running_mean", "running_var",
                                        "training", "momentum", "eps", "relu", NULL};
    const char *fn = "batch_norm";
    ff_tensor *x = lf_checktensor(L, 1);
    int opts = lf_opt_table(L, 2, fn, known);
    ff_params p = {0};
    ff_tensor *w = lf_opt_tensor(L, opts, fn, "weight"), *b = lf_opt_tensor(L, opts, fn, "bias");
    p.aux[0] = lf_opt_tensor(L, opts, fn, "running_mean");
    p.aux[1] = lf_opt_tensor(L, opts, fn, "running_var");
    p.i[0] = lf_opt_boolean(L, opts, fn, "training", true);
    p.f[0] = lf_opt_number(L, opts, fn, "momentum", 0.1);
    p.f[1] = lf_opt_number(L, opts, fn, "eps", 1e-5);
    p.i[1] = lf_opt_boolean(L, opts, fn, "relu", false);
    if (p.i[0] && p.aux[0])
        lf_check_inplace(L, p.aux[0], "batch_norm (updating running_mean)");
    if (p.i[0] && p.aux[1])
        lf_check_inplace(L, p.aux[1], "batch_norm (updating running_var)");
    ff_tensor *in[3] = {x, w, b};
    return apply_push(L, FF_OP_BATCH_NORM, in, 3, &p);
}

static int m_layer_norm(lua_State *L)
{
    static const char *const known[] = {"weight", "bias", "eps", NULL};
    const char *fn = "layer_norm";
    ff_tensor *x = lf_checktensor(L, 1);
    int64_t shape[FF_MAX_DIMS];
    int k;
    if (lua_type(L, 2) == LUA_TNUMBER) {
        k = 1;
        shape[0] = lf_check_int(L, 2, fn, "normalized shape");
    } else if (lua_istable(L, 2)) {
        k = lf_checkshape(L, 2, shape, NULL, fn);
    } else {
        return luaL_error(L, "%s: argument #2 must be the normalised shape (a number or a table), got %s",
                          fn, luaL_typename(L, 2));
    }
    bool match = k >= 1 && k <= x->ndim;
    for (int d = 0; match && d < k; d++)
        match = shape[d] == x->shape[x->ndim - k + d];
    if (!match) {
        char ss[FF_SHAPE_STRLEN], sx[FF_SHAPE_STRLEN];
        return luaL_error(L, "%s: normalized shape %s does not match the last dims of input %s", fn,
                          ff_shape_str(shape, k, ss, sizeof ss),
                          ff_shape_str(x->shape, x->ndim, sx, sizeof sx));
    }
    int opts = lf_opt_table(L, 3, fn, known);
    ff_params p = {0};
    p.i[0] = k;
    p.f[0] = lf_opt_number(L, opts, fn, "eps", 1e-5);
    ff_tensor *in[3] = {x, lf_opt_tensor(L, opts, fn, "weight"), lf_opt_tensor(L, opts, fn, "bias")};
    return apply_push(L, FF_OP_LAYER_NORM, in, 3, &p);
}

/* ---- dropout ---- */

static int m_dropout(lua_State *L)
{
    ff_tensor *x = lf_checktensor(L, 1);
    ff_params p = {0};
    p.f[0] = luaL_checknumber(L, 2);
    if (!lua_isnoneornil(L, 3) && !lua_isboolean(L, 3))
        return luaL_typeerror(L, 3, "boolean (training)");
    p.i[0] = lua_isnoneornil(L, 3) ? 1 : lua_toboolean(L, 3);
    p.rng = lf_optgenerator(L, 4);
    return apply_push(L, FF_OP_DROPOUT, &x, 1, &p);
}

/* ff.set_conv_algo(name): which code computes conv2d (ff_conv_algo in
 * ff_ops.h): "auto" (the default), "im2col" (the reference: im2col + sgemm
 * everywhere), "direct" (the direct kernel wherever it applies), and for
 * tests "direct_avx2" and "direct_portable". Returns the previous name. */
static const char *const conv_algo_names[] = {"auto", "im2col", "direct", "direct_avx2",
                                              "direct_portable", NULL};

static int m_set_conv_algo(lua_State *L)
{
    int a = luaL_checkoption(L, 1, NULL, conv_algo_names);
    lua_pushstring(L, conv_algo_names[ff_conv_get_algo()]);
    ff_conv_set_algo((ff_conv_algo)a);
    return 1;
}

/* ff.conv_algo() -> the setting, and the kernel a 3x3 stride-1 convolution
 * runs under it ("im2col", "avx512", "avx2" or "portable"). */
static int m_conv_algo(lua_State *L)
{
    lua_pushstring(L, conv_algo_names[ff_conv_get_algo()]);
    lua_pushstring(L, ff_conv_kernel_name());
    return 2;
}

/* ff.set_gemm(name): which code computes matrix products (ff_gemm_algo in
 * ff_ops.h): "auto" (the default), "blas" (OpenBLAS everywhere: its bits),
 * "own" (the engine's sgemm everywhere), and for tests "own_avx2" and
 * "own_portable". Returns the previous name. */
static const char *const gemm_algo_names[] = {"auto", "blas", "own", "own_avx2", "own_portable",
                                              NULL};

static int m_set_gemm(lua_State *L)
{
    int a = luaL_checkoption(L, 1, NULL, gemm_algo_names);
    lua_pushstring(L, gemm_algo_names[ff_gemm_get_algo()]);
    ff_gemm_set_algo((ff_gemm_algo)a);
    return 1;
}

/* ff.gemm() -> the setting, and the code a 128 x 256 x 256 product runs
 * under it ("blas", "avx512", "avx2" or "portable"). */
static int m_gemm(lua_State *L)
{
    lua_pushstring(L, gemm_algo_names[ff_gemm_get_algo()]);
    lua_pushstring(L, ff_gemm_kernel_name());
    return 2;
}

static const luaL_Reg nn_fns[] = {
    {"set_conv_algo", m_set_conv_algo},
    {"conv_algo", m_conv_algo},
    {"set_gemm", m_set_gemm},
    {"gemm", m_gemm},
    {"linear", m_linear},
    {"conv2d", m_conv2d},
    {"max_pool2d", m_max_pool2d},
    {"avg_pool2d", m_avg_pool2d},
    {"adaptive_avg_pool2d", m_adaptive_avg_pool2d},
    {"flatten", m_flatten},
    {"batch_norm", m_batch_norm},
    {"layer_norm", m_layer_norm},
    {"dropout", m_dropout},
    {NULL, NULL}};

void lf_open_nn(lua_State *L)
{
    luaL_setfuncs(L, nn_fns, 0);
}
