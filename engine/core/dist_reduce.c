/*
 * dist_reduce.c: the gradient reducer of data-parallel training (the
 * binding engine/lua/dist_reduce.c makes it core.dist.reducer; see
 * dist.lua's dist.GradReducer for the user side).
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
#include "ff_autograd.h"
#include "ff_dist.h"
#include "ff_dist_reduce.h"

static const char *const who = "dist.reducer";

/* A hook's context, one per parameter tensor for its life: a later reducer
 * over the same tensor takes it over instead of adding a hook (the engine
 * has no way to remove one). */
typedef struct slot {
    ff_dist_reducer *r; /* NULL when no reducer owns the tensor */
    int index;
} slot;

struct ff_dist_reducer {
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
};

typedef ff_dist_reducer reducer;

static ff_status post_ready(reducer *r)
{
    while (r->next_post < r->nb && r->b_have[r->next_post] == r->b_need[r->next_post]) {
        int b = r->next_post++;
        r->b_posted[b] = true;
        ff_status st = ff_dist_post_allreduce_f32(who, r->buf + r->b_off[b], r->b_len[b],
                                                  FF_DIST_SUM);
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
    return ff_dist_progress(who);
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

void ff_dist_reducer_free(reducer *r)
{
    if (!r)
        return;
    for (int i = 0; r->params && i < r->n; i++) {
        if (r->slots && r->slots[i] && r->slots[i]->r == r)
            r->slots[i]->r = NULL;
        ff_tensor_release(r->params[i]); /* NULL for entries not yet retained */
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
    free(r);
}

/* The per-parameter and per-bucket arrays (at most n buckets). */
static ff_status alloc_arrays(reducer *r)
{
    size_t k = (size_t)(r->n > 0 ? r->n : 1);
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
        !r->b_off || !r->b_len || !r->b_need || !r->b_have || !r->b_posted || !r->b_stale)
        return ff_error(FF_ERR_MEM, "%s: out of memory", who);
    return FF_OK;
}

/* Buckets over the parameters reversed: the backward's order. */
static void lay_out(reducer *r, int64_t per)
{
    int b = -1;
    int64_t off = 0;
    for (int i = r->n - 1; i >= 0; i--) {
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
}

/* Our hook on every parameter that requires a gradient. */
static ff_status attach_hooks(reducer *r)
{
    r->slots = calloc((size_t)(r->n > 0 ? r->n : 1), sizeof *r->slots);
    if (!r->slots)
        return ff_error(FF_ERR_MEM, "%s: out of memory", who);
    for (int i = 0; i < r->n; i++) {
        if (!r->params[i]->requires_grad)
            continue;
        slot *s = slot_of(r->params[i]);
        if (!s)
            return ff_error(FF_ERR_MEM, "%s: out of memory for a gradient hook", who);
        s->r = r;
        s->index = i;
        r->slots[i] = s;
    }
    return FF_OK;
}

ff_dist_reducer *ff_dist_reducer_new(ff_tensor *const *params, int n, int64_t bucket_values,
                                     bool overlap)
{
    if (bucket_values < 1) {
        ff_error(FF_ERR_ARG, "%s: bucket size must be at least 1 value, got %d", who,
                 (int)bucket_values);
        return NULL;
    }
    reducer *r = calloc(1, sizeof *r);
    if (!r) {
        ff_error(FF_ERR_MEM, "%s: out of memory", who);
        return NULL;
    }
    r->n = n;
    if (alloc_arrays(r) != FF_OK)
        goto fail;
    for (int i = 0; i < n; i++) {
        r->params[i] = ff_tensor_retain(params[i]);
        r->expected[i] = 1;
    }
    lay_out(r, bucket_values);
    r->buf = malloc(sizeof(float) * (size_t)(r->total > 0 ? r->total : 1));
    if (!r->buf) {
        ff_error(FF_ERR_MEM, "%s: out of memory for %lld values", who, (long long)r->total);
        goto fail;
    }
    r->overlap = overlap && ff_dist_size() > 1;
    if (r->overlap && attach_hooks(r) != FF_OK)
        goto fail;
    return r;
fail:
    ff_dist_reducer_free(r);
    return NULL;
}

void ff_dist_reducer_begin(reducer *r, float scale)
{
    r->scale = scale;
    memset(r->count, 0, sizeof *r->count * (size_t)r->n);
    memset(r->filled, 0, sizeof *r->filled * (size_t)r->n);
    memset(r->b_have, 0, sizeof *r->b_have * (size_t)r->nb);
    memset(r->b_posted, 0, sizeof *r->b_posted * (size_t)r->nb);
    memset(r->b_stale, 0, sizeof *r->b_stale * (size_t)r->nb);
    r->next_post = 0;
    r->armed = r->overlap;
}

/* The extras' buffer: a slot per bucket for its stale mark, then every
 * extra's values; it grows to the largest step seen. */
static ff_status reserve_extras(reducer *r, ff_tensor *const *extras, int ne, int64_t *n_extra)
{
    int64_t m = r->nb;
    for (int i = 0; i < ne; i++) {
        if (!extras[i] || !ff_tensor_is_contiguous(extras[i]))
            return ff_error(FF_ERR_ARG, "%s: extra %d must be a contiguous tensor", who, i + 1);
        m += ff_tensor_numel(extras[i]);
    }
    if (m > r->n_extra) {
        float *p = realloc(r->extra, sizeof *p * (size_t)m);
        if (!p)
            return ff_error(FF_ERR_MEM, "%s: out of memory", who);
        r->extra = p;
        r->n_extra = m;
    }
    *n_extra = m;
    return FF_OK;
}

/* The gradients no hook took (all of them without overlap), then every
 * bucket not yet posted. */
static ff_status fill_rest(reducer *r)
{
    for (int i = 0; i < r->n; i++) {
        if (r->filled[i])
            continue;
        const ff_tensor *g = ff_tensor_grad(r->params[i]);
        if (g && (!ff_tensor_is_contiguous(g) || !ff_shape_equal(g, r->params[i])))
            return ff_error(FF_ERR_ARG,
                            "%s: the gradient of parameter %d must be contiguous and of its shape",
                            who, i + 1);
        fill(r, i, NULL, g ? ff_tensor_data(g) : NULL);
    }
    return post_ready(r);
}

/* Extras: the stale marks (unscaled), then scale x each extra; reduced
 * with them, then every posted bucket waited for. */
static ff_status reduce_extras(reducer *r, ff_tensor *const *extras, int ne, int64_t n_extra)
{
    int64_t at = 0;
    for (int b = 0; b < r->nb; b++)
        r->extra[at++] = r->b_stale[b] ? 1.0f : 0.0f;
    for (int i = 0; i < ne; i++) {
        const float *p = ff_tensor_data(extras[i]);
        for (int64_t j = 0, k = ff_tensor_numel(extras[i]); j < k; j++)
            r->extra[at++] = p[j] * r->scale;
    }
    ff_status st = ff_dist_post_allreduce_f32(who, r->extra, n_extra, FF_DIST_SUM);
    ff_status w = ff_dist_wait_posted(who);
    return st != FF_OK ? st : w;
}

/* A bucket some rank filled too early: again, from the final gradients. */
static ff_status redo_stale(reducer *r)
{
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
        ff_status st = ff_dist_post_allreduce_f32(who, r->buf + r->b_off[b], r->b_len[b],
                                                  FF_DIST_SUM);
        if (st != FF_OK)
            return st;
        again = true;
        r->redone++;
    }
    return again ? ff_dist_wait_posted(who) : FF_OK;
}

/* The sums back into the gradients and the extras. */
static void copy_back(reducer *r, ff_tensor *const *extras, int ne)
{
    for (int i = 0; i < r->n; i++) {
        ff_tensor *g = ff_tensor_grad(r->params[i]);
        if (!g)
            continue;
        memcpy(ff_tensor_data(g), r->buf + r->off[i], sizeof(float) * (size_t)ff_tensor_numel(g));
        ff_tensor_bump_version(g);
    }
    int64_t at = r->nb;
    for (int i = 0; i < ne; i++) {
        int64_t k = ff_tensor_numel(extras[i]);
        memcpy(ff_tensor_data(extras[i]), r->extra + at, sizeof(float) * (size_t)k);
        ff_tensor_bump_version(extras[i]);
        at += k;
    }
}

ff_status ff_dist_reducer_finish(reducer *r, ff_tensor *const *extras, int ne)
{
    r->armed = false;
    r->early = r->next_post;
    r->redone = 0;
    int64_t n_extra = 0;
    ff_status st = reserve_extras(r, extras, ne, &n_extra);
    if (st == FF_OK)
        st = fill_rest(r);
    if (st == FF_OK)
        st = reduce_extras(r, extras, ne, n_extra);
    if (st == FF_OK)
        st = redo_stale(r);
    if (st != FF_OK)
        return st;
    copy_back(r, extras, ne);
    return FF_OK;
}

void ff_dist_reducer_get_layout(const reducer *r, ff_dist_reducer_layout *out)
{
    out->buckets = r->nb;
    out->values = r->total;
    out->early = r->early;
    out->redone = r->redone;
    out->overlap = r->overlap;
}
