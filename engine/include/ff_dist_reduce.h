/*
 * ff_dist_reduce.h: the gradient reducer of data-parallel training (see
 * engine/core/dist_reduce.c for how it works, dist.lua's dist.GradReducer
 * for the user side).
 *
 * Every step sums scale x each parameter's gradient over ranks, in buckets
 * posted in the backward's order, optionally while the backward runs.
 * Every rank must make the same calls on the same parameter shapes.
 */
#ifndef FF_DIST_REDUCE_H
#define FF_DIST_REDUCE_H

#include <stdbool.h>
#include <stdint.h>
#include "ff_base.h"
#include "ff_tensor.h"

typedef struct ff_dist_reducer ff_dist_reducer;

/* What r:layout() reports: the buckets, the values in them, and in the
 * last step how many buckets were posted during the backward and how many
 * were reduced again (tests). */
typedef struct ff_dist_reducer_layout {
    int buckets, early, redone;
    int64_t values;
    bool overlap;
} ff_dist_reducer_layout;

/* A reducer over the n tensors params (retained; none may be NULL), cut
 * into buckets of about bucket_values floats (>= 1). With overlap (and
 * more than one rank) a gradient hook on every parameter that requires a
 * gradient posts buckets during the backward. NULL on error (FF_ERR_ARG,
 * FF_ERR_MEM), message in ff_last_error(). Free with ff_dist_reducer_free. */
ff_dist_reducer *ff_dist_reducer_new(ff_tensor *const *params, int n, int64_t bucket_values,
                                     bool overlap);
/* Releases the parameters and detaches the hooks; NULL is a no-op. */
void ff_dist_reducer_free(ff_dist_reducer *r);

/* Before the backward; its gradients are weighted by scale. */
void ff_dist_reducer_begin(ff_dist_reducer *r, float scale);
/* After the backward. Every parameter's .grad (which the caller made
 * present and contiguous) becomes the sum over ranks of scale x its
 * gradient, and each of the n_extras tensors extras (contiguous, float32;
 * an entry may be NULL, which is an error) the sum of scale x its values.
 * FF_ERR_ARG for a bad extra or gradient, FF_ERR_MEM, or MPI's error. */
ff_status ff_dist_reducer_finish(ff_dist_reducer *r, ff_tensor *const *extras, int n_extras);

void ff_dist_reducer_get_layout(const ff_dist_reducer *r, ff_dist_reducer_layout *out);

#endif
