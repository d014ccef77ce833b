/*
 * data.c: the data-set readers and the augmentation kernel as module
 * functions: ff.read_idx, ff.read_cifar, ff.random_crop_flip. The data sets
 * themselves (Fashion-MNIST, CIFAR, CSV, synthetic, DataLoader) are pure Lua
 * in lib/firefly/data.lua, built on these.
 */
#include "lf.h"

/* A reader's status, retried once after a full collection when memory ran
 * out (garbage tensors may hold what the data set needs). */
#define LF_RETRY_STATUS(L, st, expr)                                         \
    do {                                                                     \
        (st) = (expr);                                                       \
        if ((st) == FF_ERR_MEM) {                                            \
            lua_gc((L), LUA_GCCOLLECT);                                      \
            (st) = (expr);                                                   \
        }                                                                    \
    } while (0)

/* Class labels are 0-based in the files, 1-based in Lua. */
static void labels_to_lua(ff_tensor *t)
{
    float *d = ff_tensor_data(t);
    int64_t n = ff_tensor_numel(t);
    for (int64_t i = 0; i < n; i++)
        d[i] += 1.0f;
}

/* ff.read_idx(path) -> tensor of the file's shape, raw values */
static int d_read_idx(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    ff_tensor *t = NULL;
    ff_status st;
    LF_RETRY_STATUS(L, st, ff_idx_read(path, &t));
    lf_check(L, st);
    lf_pushtensor(L, t);
    return 1;
}

/* ff.read_cifar(path [, variant=10]) -> images, labels [, coarse];
 * labels 1-based */
static int d_read_cifar(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    lua_Integer variant = luaL_optinteger(L, 2, 10);
    if (variant != 10 && variant != 100)
        return luaL_error(L, "read_cifar: variant must be 10 or 100, got %d", (int)variant);
    ff_tensor *im = NULL, *lab = NULL, *co = NULL;
    ff_status st;
    LF_RETRY_STATUS(L, st, ff_cifar_read(path, (int)variant, &im, &lab, &co));
    lf_check(L, st);
    /* Owned by Lua from here on, so nothing leaks if a push fails. */
    lf_pushtensor(L, im);
    labels_to_lua(lab);
    lf_pushtensor(L, lab);
    if (!co)
        return 2;
    labels_to_lua(co);
    lf_pushtensor(L, co);
    return 3;
}

/* ff.random_crop_flip(x, pad [, flip=false [, gen]]) */
static int d_random_crop_flip(lua_State *L)
{
    ff_tensor *x = lf_checktensor(L, 1);
    lua_Integer pad = luaL_checkinteger(L, 2);
    if (pad < 0 || pad > 65536)
        return luaL_error(L, "random_crop_flip: padding %d out of range 0..65536", (int)pad);
    bool flip = lua_toboolean(L, 3);
    ff_rng *g = lf_optgenerator(L, 4);
    ff_tensor *r;
    LF_RETRY(L, r, ff_augment_crop_flip(x, (int)pad, flip, g));
    lf_pushtensor(L, r);
    return 1;
}

static const luaL_Reg module_fns[] = {
    {"read_idx", d_read_idx}, {"read_cifar", d_read_cifar},
    {"random_crop_flip", d_random_crop_flip},
    {NULL, NULL}};

void lf_open_data(lua_State *L)
{
    luaL_setfuncs(L, module_fns, 0);
}
