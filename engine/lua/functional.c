/*
 * functional.c: activations, softmax, losses and the fused split
 * candidates of growth for Lua.
 *
 * Activations, softmax and split_act are Tensor methods (so `x:relu()`
 * and, through the Lua library's copy of every method, `ff.relu(x)`); the
 * losses and act_d2 are module functions. Every call goes through autograd (lf_apply)
 * with the op's ff_params, as documented in engine/core/op_act.c,
 * op_loss.c and op_grow.c; this file only converts Lua's conventions: 1-based dims and
 * labels, option tables, defaults.
 *
 * Rule for every function here (as in tensor.c): check every argument
 * before taking any engine reference, because luaL_error longjmps.
 */
#include <math.h>
#include <string.h>
#include "lf.h"

/* ---- activations ---- */

/* x:<act>([p0 [, p1]]) with the given defaults for the optional numbers. */
static int activation(lua_State *L, ff_opcode op, int nparams, double d0, double d1)
{
    ff_tensor *x = lf_checktensor(L, 1);
    ff_params p = {0};
    if (nparams > 0)
        p.f[0] = luaL_optnumber(L, 2, d0);
    if (nparams > 1)
        p.f[1] = luaL_optnumber(L, 3, d1);
    lf_pushtensor(L, lf_apply(L, op, &x, 1, &p, NULL));
    return 1;
}

static int f_relu(lua_State *L) { return activation(L, FF_OP_RELU, 0, 0, 0); }
static int f_leaky_relu(lua_State *L) { return activation(L, FF_OP_LEAKY_RELU, 1, 0.01, 0); }
static int f_elu(lua_State *L) { return activation(L, FF_OP_ELU, 1, 1.0, 0); }
static int f_gelu(lua_State *L) { return activation(L, FF_OP_GELU, 0, 0, 0); }
static int f_silu(lua_State *L) { return activation(L, FF_OP_SILU, 0, 0, 0); }
static int f_tanh(lua_State *L) { return activation(L, FF_OP_TANH, 0, 0, 0); }
static int f_sigmoid(lua_State *L) { return activation(L, FF_OP_SIGMOID, 0, 0, 0); }
static int f_rbf(lua_State *L) { return activation(L, FF_OP_RBF, 0, 0, 0); }

static int f_softplus(lua_State *L)
{
    lf_checktensor(L, 1);
    double beta = luaL_optnumber(L, 2, 1.0);
    if (beta == 0 || !isfinite(beta))
        return luaL_error(L, "softplus: beta must be a non-zero number, got %f", beta);
    return activation(L, FF_OP_SOFTPLUS, 2, 1.0, 20.0);
}

/* ---- softmax ---- */

/* x:softmax(dim): the dim is required (as torch now requires it). A scalar
 * counts as having one dim of size 1. */
static int softmax_like(lua_State *L, ff_opcode op, const char *what)
{
    ff_tensor *x = lf_checktensor(L, 1);
    ff_params p = {.i = {lf_checkdim(L, 2, x->ndim > 0 ? x->ndim : 1, what)}};
    lf_pushtensor(L, lf_apply(L, op, &x, 1, &p, NULL));
    return 1;
}

static int f_softmax(lua_State *L) { return softmax_like(L, FF_OP_SOFTMAX, "softmax"); }
static int f_log_softmax(lua_State *L) { return softmax_like(L, FF_OP_LOG_SOFTMAX, "log_softmax"); }

/* ---- loss options ---- */

typedef struct {
    int reduction;          /* 0 none, 1 mean, 2 sum (ff_params i[0]) */
    double label_smoothing;
} loss_opts;

static const char *const reduction_names[] = {"none", "mean", "sum", NULL};

/* The options table at arg (nil or absent: the defaults), checked by
 * options.c: a typo is an error naming the nearest known key, not a no-op. */
static loss_opts checkopts(lua_State *L, int arg, const char *what, bool smoothing)
{
    static const char *const with_smoothing[] = {"reduction", "label_smoothing", NULL};
    static const char *const plain[] = {"reduction", NULL};
    loss_opts o = {1, 0.0};
    int opts = lf_opt_table(L, arg, what, smoothing ? with_smoothing : plain);
    if (!opts)
        return o;
    if (lua_getfield(L, opts, "reduction") != LUA_TNIL) {
        const char *v = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
        int k = 0;
        while (v && reduction_names[k] && strcmp(v, reduction_names[k]) != 0)
            k++;
        if (!v || !reduction_names[k])
            luaL_error(L, "%s: reduction must be \"mean\", \"sum\" or \"none\", got %s%s%s",
                       what, v ? "\"" : "", v ? v : luaL_typename(L, -1), v ? "\"" : "");
        o.reduction = k;
    }
    lua_pop(L, 1);
    if (smoothing && lua_getfield(L, opts, "label_smoothing") != LUA_TNIL) {
        if (lua_type(L, -1) != LUA_TNUMBER)
            luaL_error(L, "%s: label_smoothing must be a number, got %s", what, luaL_typename(L, -1));
        o.label_smoothing = lua_tonumber(L, -1);
        if (!(o.label_smoothing >= 0 && o.label_smoothing <= 1))
            luaL_error(L, "%s: label_smoothing must be in [0, 1], got %f", what, o.label_smoothing);
    }
    lua_pop(L, 1);
    return o;
}

/* ---- losses ---- */

/* fn(input, labels [, opts]) with 1-based labels (a tensor or a table);
 * they become 0-based for the core, which checks their range. */
static int labelled_loss(lua_State *L, ff_opcode op, const char *what, bool smoothing)
{
    ff_tensor *x = lf_checktensor(L, 1);
    if (!lf_totensor(L, 2) && !lua_istable(L, 2))
        luaL_typeerror(L, 2, "tensor or table of class indices");
    loss_opts o = checkopts(L, 3, what, smoothing);
    ff_tensor *labels = lf_checkindex(L, 2, what); /* a reference: nothing may raise now */
    ff_params p = {.i = {o.reduction}, .f = {o.label_smoothing}, .aux = {labels}};
    ff_tensor *r = lf_apply(L, op, &x, 1, &p, NULL);
    ff_tensor_release(labels);
    lf_pushtensor(L, r);
    return 1;
}

/* ff.cross_entropy(logits (N, C), labels (N) [, {reduction=, label_smoothing=}]) */
static int f_cross_entropy(lua_State *L)
{
    return labelled_loss(L, FF_OP_CROSS_ENTROPY, "cross_entropy", true);
}

/* ff.nll_loss(logp (N, C), labels (N) [, {reduction=}]) */
static int f_nll_loss(lua_State *L)
{
    return labelled_loss(L, FF_OP_NLL_LOSS, "nll_loss", false);
}

/* fn(input, target [, opts]): two tensors, both differentiable. */
static int pair_loss(lua_State *L, ff_opcode op, const char *what)
{
    ff_tensor *in[2] = {lf_checktensor(L, 1), lf_checktensor(L, 2)};
    loss_opts o = checkopts(L, 3, what, false);
    ff_params p = {.i = {o.reduction}};
    lf_pushtensor(L, lf_apply(L, op, in, 2, &p, NULL));
    return 1;
}

/* ff.mse_loss(input, target [, {reduction=}]) */
static int f_mse_loss(lua_State *L) { return pair_loss(L, FF_OP_MSE_LOSS, "mse_loss"); }

/* ff.bce_with_logits(logits, target [, {reduction=}]) */
static int f_bce_with_logits(lua_State *L)
{
    return pair_loss(L, FF_OP_BCE_WITH_LOGITS, "bce_with_logits");
}

/* ---- second derivatives ---- */

/* ff.act_d2(name, x [, param]): f''(x), not recorded; param is elu's alpha
 * or softplus's beta (default 1). */
static int f_act_d2(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    ff_tensor *x = lf_checktensor(L, 2), *r;
    double param = luaL_optnumber(L, 3, 1.0);
    LF_RETRY(L, r, ff_act_d2(name, x, param));
    lf_pushtensor(L, r);
    return 1;
}

/* ---- growth: split candidates ---- */

/* The default parameter of each activation that has one (as the
 * activation methods above take it), else NAN: none. */
static double act_default_param(int act)
{
    switch (act) {
    case FF_ACT_LEAKY_RELU: return 0.01;
    case FF_ACT_ELU: return 1.0;
    case FF_ACT_SOFTPLUS: return 1.0;
    default: return NAN;
    }
}

/* Raise "split_act: unknown activation ..." with the known names. */
static int unknown_act(lua_State *L, int idx)
{
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int k = 0; k < FF_ACT_COUNT; k++) {
        luaL_addstring(&b, k ? ", " : "");
        luaL_addstring(&b, ff_act_name((ff_act)k));
    }
    luaL_pushresult(&b);
    if (lua_type(L, idx) == LUA_TSTRING)
        return luaL_error(L, "split_act: unknown activation \"%s\" (known: %s)",
                          lua_tostring(L, idx), lua_tostring(L, -1));
    return luaL_error(L, "split_act: option act must be an activation name (%s), got %s",
                      lua_tostring(L, -1), luaL_typename(L, idx));
}

/* opts[key] is present (opts 0: no table). */
static bool has_key(lua_State *L, int opts, const char *key)
{
    if (!opts)
        return false;
    bool has = lua_getfield(L, opts, key) != LUA_TNIL;
    lua_pop(L, 1);
    return has;
}

/* z:split_act(s [, {act = "relu", param =, threshold = 20, scale =, shift =,
 * gain =, pair = false}]): the candidate of every neuron split into z + s
 * and z - s (op_grow.c), s times gain per channel when given. param is the activation's parameter (leaky_relu's
 * slope, elu's alpha, softplus's beta), threshold softplus's; giving
 * either to an activation without it is an error, not a silent no-op. */
static int f_split_act(lua_State *L)
{
    ff_tensor *in[5] = {lf_checktensor(L, 1), lf_checktensor(L, 2), NULL, NULL, NULL};
    int act = FF_ACT_RELU;
    bool pair = false, has_param = false, has_threshold = false;
    double param = 0, threshold = 20;
    static const char *const known[] = {"act",   "param", "threshold", "scale",
                                        "shift", "gain",  "pair",      NULL};
    int opts = lf_opt_table(L, 3, "split_act", known);
    if (has_key(L, opts, "act")) {
        lua_getfield(L, opts, "act");
        act = lua_type(L, -1) == LUA_TSTRING ? ff_act_lookup(lua_tostring(L, -1)) : -1;
        if (act < 0)
            return unknown_act(L, lua_gettop(L));
        lua_pop(L, 1);
    }
    has_param = has_key(L, opts, "param");
    has_threshold = has_key(L, opts, "threshold");
    param = lf_opt_number(L, opts, "split_act", "param", 0);
    threshold = lf_opt_number(L, opts, "split_act", "threshold", 20);
    /* borrowed: the options table keeps them alive during the call */
    in[2] = lf_opt_tensor(L, opts, "split_act", "scale");
    in[3] = lf_opt_tensor(L, opts, "split_act", "shift");
    in[4] = lf_opt_tensor(L, opts, "split_act", "gain");
    pair = lf_opt_boolean(L, opts, "split_act", "pair", false);
    double def = act_default_param(act);
    if (has_param && isnan(def))
        return luaL_error(L, "split_act: activation %s takes no param", ff_act_name((ff_act)act));
    if (has_threshold && act != FF_ACT_SOFTPLUS)
        return luaL_error(L, "split_act: option threshold is softplus's, not %s's",
                          ff_act_name((ff_act)act));
    ff_params p = {.i = {act, pair}, .f = {has_param ? param : isnan(def) ? 0 : def, threshold}};
    lf_pushtensor(L, lf_apply(L, FF_OP_SPLIT_ACT, in, 5, &p, NULL));
    return 1;
}

/* ---- registration ---- */

static const luaL_Reg methods[] = {
    {"relu", f_relu}, {"leaky_relu", f_leaky_relu}, {"elu", f_elu}, {"gelu", f_gelu},
    {"silu", f_silu}, {"tanh", f_tanh}, {"sigmoid", f_sigmoid}, {"softplus", f_softplus},
    {"rbf", f_rbf}, {"softmax", f_softmax}, {"log_softmax", f_log_softmax},
    {"split_act", f_split_act},
    {NULL, NULL}};

static const luaL_Reg module_fns[] = {
    {"cross_entropy", f_cross_entropy}, {"nll_loss", f_nll_loss}, {"mse_loss", f_mse_loss},
    {"bce_with_logits", f_bce_with_logits}, {"act_d2", f_act_d2},
    {NULL, NULL}};

void lf_open_functional(lua_State *L)
{
    lf_addmethods(L, methods);
    luaL_setfuncs(L, module_fns, 0);
}
