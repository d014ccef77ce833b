/*
 * parallel.h: a loop's index range split over the engine's threads
 * (internal: not part of the public API in engine/include).
 *
 * The engine's thread count is OpenBLAS's (ff_blas_set_threads). Kernels
 * that are not products (batch norm, activations, pooling, elementwise)
 * split their outer loop over that many threads: the caller and workers of
 * a persistent pool, which poll briefly after a range and then sleep, so
 * no second busy-waiting pool runs beside OpenBLAS's (parallel.c says
 * how). A call returns when every range is done.
 *
 * Every range is a contiguous run of whole items, and an item is computed
 * by the same code whatever the split, so results do not depend on the
 * thread count unless the caller merges partial sums across ranges.
 */
#ifndef FF_PARALLEL_H
#define FF_PARALLEL_H

#include <stdbool.h>
#include <stdint.h>

#define FF_PAR_MAX 8

/* One thread's share: items [i0, i1) of the loop; t is its index (< nt). */
typedef void (*ff_range_fn)(void *arg, int t, int64_t i0, int64_t i1);

/* Threads for n items of about `cost` floats touched each: OpenBLAS's
 * count, at most FF_PAR_MAX and n, and 1 when the whole loop is too small
 * to pay for starting a thread. */
int ff_par_threads(int64_t n, int64_t cost);

/* fn over nt contiguous, non-empty ranges of [0, n) (1 <= nt <= n, or n = 0:
 * fn is not called); the caller's thread runs the first. */
void ff_par_run(int nt, int64_t n, ff_range_fn fn, void *arg);

/* The same with ranges cut at multiples of `align` items (the last ends at
 * n), for flat kernels whose vector bulk and scalar tail must fall at the
 * same places whatever the split. */
void ff_par_run_aligned(int nt, int64_t n, int64_t align, ff_range_fn fn, void *arg);

/* What the pool has done since the process started (for tests): workers
 * running now, workers ever started, loops handed to workers, and loops
 * run on the caller's thread alone because a dispatch was already running
 * (a nested call, or another thread's). */
typedef struct {
    int workers;
    long started, dispatches, inline_runs;
} ff_par_stat;
void ff_par_stats(ff_par_stat *s);

/* Stops and joins the pool's workers (they start again on the next split
 * loop). Runs at exit and when the library is unloaded; false, doing
 * nothing, when a dispatch is running on another thread. */
bool ff_par_shutdown(void);

#endif
