/*
 * lf.h: shared helpers of the Lua binding, the only C that sees Lua.
 *
 * The binding converts between Lua's conventions (1-based dims and indices,
 * -1 for the last dim, errors raised with luaL_error) and the core's (0-based,
 * status codes). Nothing else happens here: no computation.
 */
#ifndef LF_H
#define LF_H

#include <lua.h>
#include <lauxlib.h>
#include "ff.h"

#define LF_TENSOR "firefly.Tensor"
#define LF_GENERATOR "firefly.Generator"

/* Entry point: require "firefly.core". */
int luaopen_firefly_core(lua_State *L);

/* Per-type registration, called by luaopen_firefly_core with the module
 * table on top of the stack. */
void lf_open_tensor(lua_State *L);
void lf_open_generator(lua_State *L);
void lf_open_autograd(lua_State *L);   /* autograd.c */
void lf_open_functional(lua_State *L); /* functional.c: activations, softmax, losses */
void lf_open_nn(lua_State *L);         /* nn.c: linear, conv, pooling, norms, dropout */
void lf_open_data(lua_State *L);       /* data.c: data-set readers, augmentation */
void lf_open_io(lua_State *L);         /* io.c: safetensors files (checkpoints) */
void lf_open_linalg(lua_State *L);     /* linalg.c: ff.linalg (eigh), ff.unfold */
void lf_open_onnx(lua_State *L);       /* onnx.c: ff.onnx_encode (ONNX export) */
void lf_open_optim(lua_State *L);      /* optim.c: the fused optimiser step */
void lf_open_grow(lua_State *L);       /* grow.c: growth helpers (step 1's projection) */
void lf_open_dist(lua_State *L);       /* dist.c: core.dist, collectives over MPI */

/* The methods table of firefly.Tensor is the module's `Tensor` field; a
 * binding file adds methods with lf_addmethods(L, fns) while the module
 * table is on top of the stack. */
void lf_addmethods(lua_State *L, const luaL_Reg *fns);

/* ---- tensors ---- */
typedef struct lf_tensor {
    ff_tensor *t; /* NULL once released (__close) */
} lf_tensor;

/* The tensor at arg (error if not a tensor, or already closed). */
ff_tensor *lf_checktensor(lua_State *L, int arg);
ff_tensor *lf_totensor(lua_State *L, int arg); /* NULL if not a tensor */
/* n tensors-or-numbers from arg on (a number becomes a new rank-0 tensor)
 * as new references in out[], which the caller releases. All are checked
 * before any reference is taken. */
void lf_checkoperands(lua_State *L, int arg, int n, ff_tensor **out);
/* Push t, taking over the caller's reference. A NULL t raises the core's
 * error instead (so `lf_pushtensor(L, ff_op(...))` is the whole pattern). */
void lf_pushtensor(lua_State *L, ff_tensor *t);
/* Raise the core's last error as a Lua error. */
int lf_raise(lua_State *L);
/* Raise unless st is FF_OK. */
void lf_check(lua_State *L, ff_status st);

/* Re-evaluate expr once after a full collection when it failed for lack of
 * memory: garbage tensors may be holding the memory it needs. */
#define LF_RETRY(L, var, expr)                                               \
    do {                                                                     \
        (var) = (expr);                                                      \
        if (!(var) && ff_last_status() == FF_ERR_MEM) {                      \
            lua_gc((L), LUA_GCCOLLECT);                                      \
            (var) = (expr);                                                  \
        }                                                                    \
    } while (0)

/* Run op through autograd (ff_apply), after a full collection and a retry
 * when memory ran out. Returns the result or NULL (the core's error set);
 * does not raise, so callers release their own references first, then
 * lf_pushtensor the result. */
ff_tensor *lf_apply(lua_State *L, ff_opcode op, ff_tensor *const *in, int n,
                    const ff_params *p, ff_tensor **extra);
/* Error unless t may be modified in place: not while autograd tracks it. */
void lf_check_inplace(lua_State *L, const ff_tensor *t, const char *what);

/* ---- dims, shapes, indices ---- */
/* A Lua dim at arg (1..n or -n..-1) converted to 0-based for a tensor of
 * rank n; `what` names the function in the error. */
int lf_checkdim(lua_State *L, int arg, int ndim, const char *what);
/* As lf_checkdim, nil giving `def` (already 0-based; -1 means "all dims"). */
int lf_optdim(lua_State *L, int arg, int ndim, const char *what, int def);
/* A shape given as numbers from arg on, or as one table at arg. Returns the
 * rank; stops at the first non-number (its position in *next). */
int lf_checkshape(lua_State *L, int arg, int64_t *shape, int *next, const char *what);
/* Error naming `what` and the position for any non-nil argument from arg
 * on: an argument a function does not read must not be ignored silently
 * (ff.zeros("a") would be a scalar). */
void lf_check_no_more(lua_State *L, int arg, const char *what);
/* An index argument (a tensor or a table of integers, 1-based) as a new
 * tensor of 0-based values. */
ff_tensor *lf_checkindex(lua_State *L, int arg, const char *what);
/* Turn a tensor of 0-based indices into 1-based ones, in place. */
void lf_indices_to_lua(lua_State *L, ff_tensor *t);

/* ---- option tables and size pairs (options.c) ---- */
/* The options table at arg (0 when none or nil), an error for any key not
 * in the NULL-terminated `known`. */
int lf_opt_table(lua_State *L, int arg, const char *fn, const char *const *known);
/* Raise "fn: unknown option 'key' (did you mean 'x'?)", or the known keys
 * when none is near: the one message for a misspelt key in C and Lua. */
void lf_unknown_option(lua_State *L, const char *fn, const char *key, const char *const *known);
/* opts[key] checked as an integer (|v| < 2^31), a number, a boolean or an
 * open tensor (borrowed: the table keeps it alive during the call); `def`
 * (NULL for tensors) when opts is 0 or the key is absent. */
lua_Integer lf_opt_integer(lua_State *L, int opts, const char *fn, const char *key, lua_Integer def);
double lf_opt_number(lua_State *L, int opts, const char *fn, const char *key, double def);
bool lf_opt_boolean(lua_State *L, int opts, const char *fn, const char *key, bool def);
ff_tensor *lf_opt_tensor(lua_State *L, int opts, const char *fn, const char *key);
/* An integer size at idx within int32, or an error naming `what`. */
int64_t lf_check_int(lua_State *L, int idx, const char *fn, const char *what);
/* The value at idx as a pair: a number n is (n, n), a table {a, b}. */
void lf_check_pair(lua_State *L, int idx, const char *fn, const char *what, int64_t *out);
/* opts[key] as a pair into out (left as it is when absent or opts is 0). */
void lf_opt_pair(lua_State *L, int opts, const char *fn, const char *key, int64_t *out);

/* t.grad for the tensor at idx (autograd.c), and t.grad = value. */
int lf_push_grad(lua_State *L, int idx);
int lf_set_grad(lua_State *L, int idx, int value);

/* ---- generators ---- */
/* The generator at arg, or the default one when arg is none/nil. */
ff_rng *lf_optgenerator(lua_State *L, int arg);

/* ---- engine memory seen by the Lua GC ---- */
/* Called after every allocation the binding makes. */
void lf_gc_account(lua_State *L);

#endif
