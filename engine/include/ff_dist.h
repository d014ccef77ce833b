/*
 * ff_dist.h: data-parallel collectives over MPI (Open MPI 4.1), for
 * training and growing one network on several processes.
 *
 * The engine never links MPI: ff_dist_init loads libmpi at run time
 * (dlopen), so a plain process neither loads it nor pays its start-up.
 * Ranks are 0-based, as in MPI. Before init (or in a plain process) the
 * world is one rank and every collective is a copy or nothing.
 *
 * Every collective is a non-blocking MPI call waited on with a deadline
 * (ff_dist_set_timeout): a rank that died or took another path makes the
 * others fail with a message instead of hanging. MPI's own errors come
 * back (MPI_ERRORS_RETURN) and become FF_ERR_STATE with the call named.
 * Buffers are borrowed; nothing here allocates tensors (ff_dist_scratch is
 * the one buffer of its own).
 */
#ifndef FF_DIST_H
#define FF_DIST_H

#include <stdbool.h>
#include "ff_base.h"

typedef enum { FF_DIST_SUM, FF_DIST_MAX, FF_DIST_MIN } ff_dist_op;

/* True when this process was started by mpirun (Open MPI's or a PMIx
 * launcher's environment variables are set): the module then calls
 * ff_dist_init as it opens. */
bool ff_dist_launched(void);

/* Load libmpi and initialise MPI; idempotent. Unless OPENBLAS_NUM_THREADS
 * or OMP_NUM_THREADS is set, the engine's thread count becomes the cores
 * divided by the ranks on this node (at least 1), so ranks sharing a
 * machine never oversubscribe it. Error when libmpi cannot be loaded. */
ff_status ff_dist_init(void);
bool ff_dist_active(void);       /* init succeeded and finalize not yet run */
int ff_dist_rank(void);          /* 0 when not active */
int ff_dist_size(void);          /* 1 when not active */

/* Deadline of every collective in seconds (default 600, or the
 * FF_DIST_TIMEOUT environment variable); <= 0 waits forever. */
void ff_dist_set_timeout(double seconds);
double ff_dist_timeout(void);

ff_status ff_dist_barrier(const char *who);
/* In place over n values on every rank; float buffers go in buckets of at
 * most 1 Mi values, all in flight at once. */
ff_status ff_dist_allreduce_f32(const char *who, float *buf, int64_t n, ff_dist_op op);
ff_status ff_dist_allreduce_f64(const char *who, double *buf, int64_t n, ff_dist_op op);
/* The same allreduce (sum/max/min, in buckets of at most 1 Mi values),
 * posted now and finished by ff_dist_wait_posted: buf must stay untouched
 * until then. Every rank must post the same sizes in the same order.
 * ff_dist_progress drives posted requests without waiting (MPI moves data
 * only inside MPI calls when it has no progress thread); wait_posted waits
 * for all of them with the deadline. */
ff_status ff_dist_post_allreduce_f32(const char *who, float *buf, int64_t n, ff_dist_op op);
ff_status ff_dist_progress(const char *who);
ff_status ff_dist_wait_posted(const char *who);
/* root's n values to every rank; error when root is not in 0..size-1. */
ff_status ff_dist_broadcast_f32(const char *who, float *buf, int64_t n, int root);
/* out (n * size values) = every rank's n values of in, in rank order. */
ff_status ff_dist_allgather_f32(const char *who, const float *in, int64_t n, float *out);
ff_status ff_dist_allgather_i64(const char *who, const int64_t *in, int64_t n, int64_t *out);

/* A call's signature (n integers: an op code, a root, a shape...) compared
 * across ranks with one small allgather before the data moves: a mismatch
 * is an error on every rank naming the first rank that differs and both
 * signatures as `what` describes them, so a wrong call fails everywhere
 * instead of hanging or mixing data. n <= 64. */
ff_status ff_dist_agree(const char *who, const int64_t *sig, int n,
                        void (*describe)(const int64_t *sig, int n, char *buf, size_t len));

/* A buffer of at least n floats that lives as long as the process (grown
 * when asked for more): collectives over many tensors copy them into it.
 * NULL (with the error set) when out of memory. Not reentrant: one user
 * at a time. */
float *ff_dist_scratch(int64_t n);

/* Bytes this rank sent through allreduce and the seconds spent waiting in
 * collectives since the last reset (for the benchmark). */
void ff_dist_stats(double *allreduce_bytes, double *seconds, bool reset);

/* Normal end: MPI_Finalize (a collective: every rank must reach it). */
void ff_dist_finalize(void);
/* A failed rank ends the whole job (MPI_Abort) so no other rank waits. */
void ff_dist_abort(int code);

#endif
