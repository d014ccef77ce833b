/*
 * parallel.c: a loop's index range split over short-lived threads (see
 * parallel.h for why threads are created per call).
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>
#include "ff_ops.h"
#include "parallel.h"

/* Below this many floats touched a loop stays on one thread: creating and
 * joining one was measured at about 60 us on these VMs (waking a sleeping
 * thread through a condition variable costs the same), the time to stream
 * some 2 MB; 4 MB of work gains clearly. */
#define FF_PAR_MIN_WORK ((int64_t)1 << 20)

typedef struct {
    ff_range_fn fn;
    void *arg;
    int t;
    int64_t i0, i1;
    atomic_bool done;
} range_job;

static void *range_main(void *p)
{
    range_job *j = p;
    j->fn(j->arg, j->t, j->i0, j->i1);
    atomic_store_explicit(&j->done, true, memory_order_release);
    return NULL;
}

static double seconds_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The calling thread, its own share done, waits for the others' by
 * polling (yielding its core) for up to FF_PAR_POLL_S before it blocks in
 * pthread_join. Blocking at once put its core to sleep at the end of every
 * split loop, and on these VMs a core that sleeps often wakes slowly: split
 * loops ran about 30% slower for several steps after the process had been
 * idle (measured on batch norm + relu). The poll waits only for work
 * already running, so it is not a pool waiting for work. */
#define FF_PAR_POLL_S 2e-3

static void wait_for(range_job *j)
{
    double until = 0;
    for (int k = 0; !atomic_load_explicit(&j->done, memory_order_acquire); k++) {
        if ((k & 63) == 63) {
            double now = seconds_now();
            if (until == 0)
                until = now + FF_PAR_POLL_S;
            else if (now > until)
                return;
            sched_yield();
        }
    }
}

int ff_par_threads(int64_t n, int64_t cost)
{
    int nt = ff_blas_threads();
    nt = nt > FF_PAR_MAX ? FF_PAR_MAX : nt;
    nt = nt > n ? (int)n : nt;
    if (cost > 0 && n > 0 && n <= FF_PAR_MIN_WORK / cost)
        return 1;
    return nt < 1 ? 1 : nt;
}

/* Runs jobs[0..nt) with jobs[0] on the calling thread; a job whose thread
 * could not be created runs here too, so the work is always done. */
static void run_jobs(int nt, range_job *jobs)
{
    pthread_t th[FF_PAR_MAX];
    bool started[FF_PAR_MAX] = {false};
    for (int t = 1; t < nt; t++)
        started[t] = pthread_create(&th[t], NULL, range_main, &jobs[t]) == 0;
    range_main(&jobs[0]);
    for (int t = 1; t < nt; t++) {
        if (started[t]) {
            wait_for(&jobs[t]);
            pthread_join(th[t], NULL);
        }
        else
            range_main(&jobs[t]);
    }
}

void ff_par_run_aligned(int nt, int64_t n, int64_t align, ff_range_fn fn, void *arg)
{
    if (n <= 0)
        return;
    int64_t units = (n + align - 1) / align; /* the last may be partial */
    nt = nt > FF_PAR_MAX ? FF_PAR_MAX : nt;
    nt = nt > units ? (int)units : nt;
    if (nt <= 1) {
        fn(arg, 0, 0, n);
        return;
    }
    range_job jobs[FF_PAR_MAX];
    for (int t = 0; t < nt; t++) {
        int64_t u0 = units * t / nt, u1 = units * (t + 1) / nt;
        int64_t i1 = u1 * align < n ? u1 * align : n;
        jobs[t] = (range_job){fn, arg, t, u0 * align, i1, false};
    }
    run_jobs(nt, jobs);
}

void ff_par_run(int nt, int64_t n, ff_range_fn fn, void *arg)
{
    ff_par_run_aligned(nt, n, 1, fn, arg);
}
