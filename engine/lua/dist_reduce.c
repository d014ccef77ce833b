/*
 * dist_reduce.c: the gradient reducer of data-parallel training,
 * core.dist.reducer(params [, bucket_values [, overlap]]) (see dist.lua's
 * dist.GradReducer for the user side).
 *
 * Every step sums scale x each parameter's gradient over ranks. The
 * gradients go into one buffer kept for the reducer's life (a buffer
 * allocated per step was fresh pages each time, which cost Open MPI's
 * shared-memory transport far more than the data: see ff_dist_scratch),
 * laid out in the order the backward produces them (the parameters
 * reversed) and cut into buckets of about bucket_values floats.
 *
 * With overlap on, a gradient hook on every parameter copies its gradient
 * into the buffer as soon as the backward delivers it, and a bucket whose
 * gradients are all in is posted (MPI_Iallreduce) while the backward goes
 * on; every hook also drives MPI's progress. Buckets are posted strictly
 * in index order, so every rank posts the same calls in the same order
 * whatever its timing (a rank without rows posts them all at the end).
 * Without overlap the same buckets are posted after the backward: the same
 * MPI calls on the same values, so both give the same bits.
 *
 * A hook cannot know that a gradient is final when the parameter is used
 * more than once: it counts arrivals and takes the count seen in the last
 * step as final (1 at first). A later arrival marks its bucket stale; the
 * ranks learn of stale buckets in the reduction of the extras and reduce
 * those buckets again from the final gradients, so the result never
 * depends on the guess.
 */
#include <stdlib.h>
#include <string.h>
#include "lf.h"
#include "ff_autograd.h"
#include "ff_dist.h"
#include "dist_reduce.h"

#define REDUCER_MT "firefly.dist.Reducer"

struct reducer;

/* A hook's context, one per parameter tensor for its life: a later reducer
 * over the same tensor takes it over instead of adding a hook (the engine
 * has no way to remove one). */
typedef struct slot {
    struct reducer *r; /* NULL when no reducer owns the tensor */
    int index;
} slot;

typedef struct reducer {
    int n, nb;
    ff_tensor **params; /* retained */
    slot **slots;       /* per parameter; NULL without overlap */
    int64_t *off;       /* parameter i's place in buf */
    int *bucket;        /* parameter i's bucket */
    int *count, *expected;
    bool *filled;
    int64_t *b_off, *b_len;
    int *b_need, *b_have;
    bool *b_posted, *b_stale;
    float *buf, *extra;
    int64_t total, n_extra;
    int next_post;
    int early, redone; /* last step: buckets posted during the backward, reduced again */
    bool armed, overlap;
    float scale;
} reducer;

static ff_status post_ready(reducer *r)
{
    while (r->next_post < r->nb && r->b_have[r->next_post] == r->b_need[r->next_post]) {
        int b = r->next_post++;
        r->b_posted[b] = true;
        ff_status st = ff_dist_post_allreduce_f32("dist.reducer", r->buf + r->b_off[b],
                                                  r->b_len[b], FF_DIST_SUM);
        if (st != FF_OK)
            return st;
    }
    return FF_OK;
}

/* scale x (old + g) into parameter i's place: the value the engine's
 * accumulation (old + g, one float add) leaves in .grad, scaled as the
 * copy after the backward scales it. */
static void fill(reducer *r, int i, const float *old, const float *g)
{
    float *dst = r->buf + r->off[i], s = r->scale;
    int64_t k = ff_tensor_numel(r->params[i]);
    if (!g)
        memset(dst, 0, sizeof *dst * (size_t)k);
    else if (old)
        for (int64_t j = 0; j < k; j++)
            dst[j] = (old[j] + g[j]) * s;
    else
        for (int64_t j = 0; j < k; j++)
            dst[j] = g[j] * s;
    r->filled[i] = true;
    r->b_have[r->bucket[i]]++;
}

static ff_status on_grad(void *ctx, const ff_tensor *grad, ff_tensor **replacement)
{
    (void)replacement;
    slot *s = ctx;
    reducer *r = s->r;
    if (!r || !r->armed)
        return FF_OK;
    int i = s->index;
    int c = ++r->count[i];
    if (c > r->expected[i]) { /* used more often than last step */
        r->expected[i] = c;
        if (r->filled[i])
            r->b_stale[r->bucket[i]] = true;
    }
    if (c == r->expected[i] && !r->filled[i]) {
        const ff_tensor *old = ff_tensor_grad(r->params[i]);
        if (ff_tensor_is_contiguous(grad) && ff_shape_equal(grad, r->params[i]) &&
            (!old || ff_tensor_is_contiguous(old))) {
            fill(r, i, old ? ff_tensor_data(old) : NULL, ff_tensor_data(grad));
            ff_status st = post_ready(r);
            if (st != FF_OK)
                return st;
        }
    }
    return ff_dist_progress("dist.reducer");
}

static void free_slot(void *ctx) { free(ctx); }

/* The slot of our hook on t, or a new hook and slot. */
static slot *slot_of(ff_tensor *t)
{
    for (ff_hook *h = t->hooks; h; h = h->next)
        if (h->fn == on_grad)
            return h->ctx;
    slot *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    if (ff_tensor_register_hook(t, on_grad, s, free_slot) != FF_OK) {
        free(s);
        return NULL;
    }
    return s;
}

static reducer *check_reducer(lua_State *L)
{
    reducer *r = luaL_checkudata(L, 1, REDUCER_MT);
    if (!r->params)
        luaL_error(L, "dist.reducer: the reducer was closed");
    return r;
}

static void release(reducer *r)
{
    for (int i = 0; r->params && i < r->n; i++) {
        if (r->slots && r->slots[i] && r->slots[i]->r == r)
            r->slots[i]->r = NULL;
        ff_tensor_release(r->params[i]);
    }
    free(r->params);
    free(r->slots);
    free(r->off);
    free(r->bucket);
    free(r->count);
    free(r->expected);
    free(r->filled);
    free(r->b_off);
    free(r->b_len);
    free(r->b_need);
    free(r->b_have);
    free(r->b_posted);
    free(r->b_stale);
    free(r->buf);
    free(r->extra);
    memset(r, 0, sizeof *r);
}

static int r_gc(lua_State *L)
{
    release(luaL_checkudata(L, 1, REDUCER_MT));
    return 0;
}

/* reducer(params [, bucket_values = 65536 [, overlap = false]]) */
int lf_dist_reducer(lua_State *L)
{
    const char *who = "dist.reducer";
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_Integer per = luaL_optinteger(L, 2, 65536);
    if (per < 1)
        return luaL_error(L, "%s: bucket size must be at least 1 value, got %d", who, (int)per);
    bool overlap = lua_toboolean(L, 3);
    int n = (int)luaL_len(L, 1);
    reducer *r = lua_newuserdatauv(L, sizeof *r, 0);
    memset(r, 0, sizeof *r);
    luaL_setmetatable(L, REDUCER_MT);
    r->n = n;
    size_t k = (size_t)(n > 0 ? n : 1);
    r->params = calloc(k, sizeof *r->params);
    r->off = calloc(k, sizeof *r->off);
    r->bucket = calloc(k, sizeof *r->bucket);
    r->count = calloc(k, sizeof *r->count);
    r->expected = calloc(k, sizeof *r->expected);
    r->filled = calloc(k, sizeof *r->filled);
    r->b_off = calloc(k, sizeof *r->b_off);
    r->b_len = calloc(k, sizeof *r->b_len);
    r->b_need = calloc(k, sizeof *r->b_need);
    r->b_have = calloc(k, sizeof *r->b_have);
    r->b_posted = calloc(k, sizeof *r->b_posted);
    r->b_stale = calloc(k, sizeof *r->b_stale);
    if (!r->params || !r->off || !r->bucket || !r->count || !r->expected || !r->filled ||
        !r->b_off || !r->b_len || !r->b_need || !r->b_have || !r->b_posted || !r->b_stale) {
        release(r);
        return luaL_error(L, "%s: out of memory", who);
    }
    for (int i = 0; i < n; i++) {
        lua_geti(L, 1, i + 1);
        ff_tensor *t = lf_totensor(L, -1);
        if (!t) {
            release(r);
            return luaL_error(L, "%s: entry %d of the list is a %s, expected a tensor", who, i + 1,
                              luaL_typename(L, -1));
        }
        r->params[i] = ff_tensor_retain(t);
        r->expected[i] = 1;
        lua_pop(L, 1);
    }
    /* the parameters reversed: the backward's order */
    int b = -1;
    int64_t off = 0;
    for (int i = n - 1; i >= 0; i--) {
        if (b < 0 || r->b_len[b] >= per) {
            b++;
            r->b_off[b] = off;
        }
        int64_t m = ff_tensor_numel(r->params[i]);
        r->off[i] = off;
        r->bucket[i] = b;
        r->b_len[b] += m;
        r->b_need[b]++;
        off += m;
    }
    r->nb = b + 1;
    r->total = off;
    r->buf = malloc(sizeof(float) * (size_t)(off > 0 ? off : 1));
    if (!r->buf) {
        release(r);
        return luaL_error(L, "%s: out of memory for %lld values", who, (long long)off);
    }
    r->overlap = overlap && ff_dist_size() > 1;
    if (r->overlap) {
        r->slots = calloc(k, sizeof *r->slots);
        for (int i = 0; r->slots && i < n; i++) {
            if (!r->params[i]->requires_grad)
                continue;
            slot *s = slot_of(r->params[i]);
            if (!s) {
                release(r);
                return luaL_error(L, "%s: out of memory for a gradient hook", who);
            }
            s->r = r;
            s->index = i;
            r->slots[i] = s;
        }
        if (!r->slots) {
            release(r);
            return luaL_error(L, "%s: out of memory", who);
        }
    }
    return 1;
}

/* r:begin(scale): before the backward; its gradients are weighted by scale. */
static int r_begin(lua_State *L)
{
    reducer *r = check_reducer(L);
    r->scale = (float)luaL_checknumber(L, 2);
    memset(r->count, 0, sizeof *r->count * (size_t)r->n);
    memset(r->filled, 0, sizeof *r->filled * (size_t)r->n);
    memset(r->b_have, 0, sizeof *r->b_have * (size_t)r->nb);
    memset(r->b_posted, 0, sizeof *r->b_posted * (size_t)r->nb);
    memset(r->b_stale, 0, sizeof *r->b_stale * (size_t)r->nb);
    r->next_post = 0;
    r->armed = r->overlap;
    return 0;
}

/* r:finish(extras): after the backward. Every parameter's .grad (which the
 * caller made present and contiguous) becomes the sum over ranks of scale
 * x its gradient, and each tensor of the list extras (contiguous, float32)
 * the sum of scale x its values. */
static int r_finish(lua_State *L)
{
    const char *who = "dist.reducer";
    reducer *r = check_reducer(L);
    luaL_checktype(L, 2, LUA_TTABLE);
    r->armed = false;
    r->early = r->next_post;
    r->redone = 0;
    int ne = (int)luaL_len(L, 2);
    int64_t n_extra = r->nb;
    for (int i = 1; i <= ne; i++) {
        lua_geti(L, 2, i);
        ff_tensor *t = lf_totensor(L, -1);
        if (!t || !ff_tensor_is_contiguous(t))
            return luaL_error(L, "%s: extra %d must be a contiguous tensor", who, i);
        n_extra += ff_tensor_numel(t);
        lua_pop(L, 1);
    }
    if (n_extra > r->n_extra) {
        float *p = realloc(r->extra, sizeof *p * (size_t)n_extra);
        if (!p)
            return luaL_error(L, "%s: out of memory", who);
        r->extra = p;
        r->n_extra = n_extra;
    }
    for (int i = 0; i < r->n; i++) {
        if (r->filled[i])
            continue;
        const ff_tensor *g = ff_tensor_grad(r->params[i]);
        if (g && (!ff_tensor_is_contiguous(g) || !ff_shape_equal(g, r->params[i])))
            return luaL_error(L, "%s: the gradient of parameter %d must be contiguous and of its shape",
                              who, i + 1);
        fill(r, i, NULL, g ? ff_tensor_data(g) : NULL);
    }
    lf_check(L, post_ready(r));
    /* extras: the stale marks (unscaled), then scale x each extra */
    int64_t at = 0;
    for (int b = 0; b < r->nb; b++)
        r->extra[at++] = r->b_stale[b] ? 1.0f : 0.0f;
    for (int i = 1; i <= ne; i++) {
        lua_geti(L, 2, i);
        ff_tensor *t = lf_totensor(L, -1);
        const float *p = ff_tensor_data(t);
        for (int64_t j = 0, k = ff_tensor_numel(t); j < k; j++)
            r->extra[at++] = p[j] * r->scale;
        lua_pop(L, 1);
    }
    ff_status st = ff_dist_post_allreduce_f32(who, r->extra, n_extra, FF_DIST_SUM);
    ff_status w = ff_dist_wait_posted(who);
    lf_check(L, st != FF_OK ? st : w);
    /* a bucket some rank filled too early: again, from the final gradients */
    bool again = false;
    for (int b = 0; b < r->nb; b++) {
        if (!(r->extra[b] > 0))
            continue;
        for (int i = 0; i < r->n; i++) {
            if (r->bucket[i] != b)
                continue;
            const ff_tensor *g = ff_tensor_grad(r->params[i]);
            r->b_have[b]--;
            fill(r, i, NULL, g ? ff_tensor_data(g) : NULL);
        }
        lf_check(L, ff_dist_post_allreduce_f32(who, r->buf + r->b_off[b], r->b_len[b], FF_DIST_SUM));
        again = true;
        r->redone++;
    }
    if (again)
        lf_check(L, ff_dist_wait_posted(who));
    for (int i = 0; i < r->n; i++) {
        ff_tensor *g = ff_tensor_grad(r->params[i]);
        if (!g)
            continue;
        memcpy(ff_tensor_data(g), r->buf + r->off[i], sizeof(float) * (size_t)ff_tensor_numel(g));
        ff_tensor_bump_version(g);
    }
    at = r->nb;
    for (int i = 1; i <= ne; i++) {
        lua_geti(L, 2, i);
        ff_tensor *t = lf_totensor(L, -1);
        int64_t k = ff_tensor_numel(t);
        memcpy(ff_tensor_data(t), r->extra + at, sizeof(float) * (size_t)k);
        ff_tensor_bump_version(t);
        at += k;
        lua_pop(L, 1);
    }
    return 0;
}

/* r:layout() -> {buckets =, values =, overlap =, early =, redone =}: the
 * buckets, the values in them, and in the last step how many buckets were
 * posted during the backward and how many were reduced again (tests). */
static int r_layout(lua_State *L)
{
    reducer *r = check_reducer(L);
    lua_createtable(L, 0, 5);
    lua_pushinteger(L, r->early);
    lua_setfield(L, -2, "early");
    lua_pushinteger(L, r->redone);
    lua_setfield(L, -2, "redone");
    lua_pushinteger(L, r->nb);
    lua_setfield(L, -2, "buckets");
    lua_pushinteger(L, r->total);
    lua_setfield(L, -2, "values");
    lua_pushboolean(L, r->overlap);
    lua_setfield(L, -2, "overlap");
    return 1;
}

static int r_close(lua_State *L)
{
    release(luaL_checkudata(L, 1, REDUCER_MT));
    return 0;
}

void lf_dist_reducer_open(lua_State *L)
{
    static const luaL_Reg methods[] = {{"begin", r_begin}, {"finish", r_finish},
                                       {"layout", r_layout}, {"close", r_close}, {NULL, NULL}};
    if (luaL_newmetatable(L, REDUCER_MT)) {
        luaL_newlib(L, methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, r_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
}
