/*
 * test_parallel.c: the split loops' thread pool (engine/core/parallel.c):
 * every index is run exactly once by the range ff_par_run promised, over
 * many short loops back to back (workers awake) and after pauses (workers
 * asleep on their futex); a range that splits a loop itself (nested) and
 * two threads splitting loops at once run without deadlock; the pool stops
 * and starts again; a forked child, which has none of the parent's
 * workers, still runs split loops.
 */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "harness.h"
#include "../../engine/core/parallel.h"

#define N 4099 /* not a multiple of any thread count or alignment */

typedef struct {
    _Atomic int hits[N];
    _Atomic int ranges;
    int64_t n;
    int nested_nt; /* > 0: each range also splits a small loop of its own */
    _Atomic int nested_hits;
} mark;

static void count_range(void *arg, int t, int64_t i0, int64_t i1)
{
    _Atomic int *hits = arg;
    for (int64_t i = i0; i < i1; i++)
        atomic_fetch_add(&hits[i], 1);
}

static void mark_range(void *arg, int t, int64_t i0, int64_t i1)
{
    mark *m = arg;
    atomic_fetch_add(&m->ranges, 1);
    for (int64_t i = i0; i < i1; i++)
        atomic_fetch_add(&m->hits[i], 1);
    if (m->nested_nt > 0) {
        _Atomic int inner[64];
        for (int i = 0; i < 64; i++)
            atomic_init(&inner[i], 0);
        ff_par_run(m->nested_nt, 64, count_range, inner);
        int ok = 1;
        for (int i = 0; i < 64; i++)
            ok &= atomic_load(&inner[i]) == 1;
        if (ok)
            atomic_fetch_add(&m->nested_hits, 1);
    }
}

static void mark_reset(mark *m, int64_t n)
{
    memset(m, 0, sizeof *m);
    m->n = n;
}

static int each_once(mark *m)
{
    for (int64_t i = 0; i < m->n; i++)
        if (atomic_load(&m->hits[i]) != 1)
            return 0;
    return 1;
}

/* Ranges are contiguous, in order, cut where parallel.h says. */
typedef struct {
    int64_t lo[FF_PAR_MAX], hi[FF_PAR_MAX];
} bounds;

static void record_bounds(void *arg, int t, int64_t i0, int64_t i1)
{
    bounds *b = arg;
    b->lo[t] = i0, b->hi[t] = i1;
}

TEST(test_parallel_ranges_cover_once)
{
    static mark m;
    for (int nt = 1; nt <= FF_PAR_MAX; nt++) {
        mark_reset(&m, N);
        ff_par_run(nt, N, mark_range, &m);
        CHECK(each_once(&m));
        CHECK(atomic_load(&m.ranges) == nt);
        bounds b;
        ff_par_run_aligned(nt, N, 64, record_bounds, &b);
        int units = (N + 63) / 64;
        for (int t = 0; t < nt; t++) {
            CHECK(b.lo[t] == (int64_t)units * t / nt * 64);
            CHECK(b.hi[t] == (t == nt - 1 ? N : (int64_t)units * (t + 1) / nt * 64));
        }
    }
    /* no items: fn is not called; fewer items than threads: one each */
    mark_reset(&m, 0);
    ff_par_run(4, 0, mark_range, &m);
    CHECK(atomic_load(&m.ranges) == 0);
    mark_reset(&m, 3);
    ff_par_run(8, 3, mark_range, &m);
    CHECK(each_once(&m) && atomic_load(&m.ranges) == 3);
}

TEST(test_parallel_many_short_loops)
{
    static mark m;
    ff_par_stat s0, s1;
    ff_par_stats(&s0);
    int bad = 0;
    for (int k = 0; k < 20000; k++) {
        int64_t n = 2 + k % 97;
        mark_reset(&m, n);
        ff_par_run(2 + k % 3, n, mark_range, &m);
        bad += !each_once(&m);
    }
    CHECK(bad == 0);
    ff_par_stats(&s1);
    CHECK(s1.dispatches - s0.dispatches == 20000);
    CHECK(s1.workers >= 3); /* up to 4 threads: the caller and 3 workers */
    CHECK(s1.started - s0.started <= 3); /* started once, then reused */
}

TEST(test_parallel_after_workers_sleep)
{
    static mark m;
    for (int k = 0; k < 5; k++) {
        struct timespec ts = {0, 3 * 1000 * 1000}; /* past the workers' polling */
        nanosleep(&ts, NULL);
        mark_reset(&m, N);
        ff_par_run(2, N, mark_range, &m);
        CHECK(each_once(&m));
    }
}

TEST(test_parallel_nested_runs_inline)
{
    static mark m;
    ff_par_stat s0, s1;
    ff_par_stats(&s0);
    mark_reset(&m, N);
    m.nested_nt = 2;
    ff_par_run(3, N, mark_range, &m);
    CHECK(each_once(&m));
    CHECK(atomic_load(&m.nested_hits) == 3);
    ff_par_stats(&s1);
    CHECK(s1.inline_runs - s0.inline_runs == 3);
}

static void *splitter(void *arg)
{
    static _Thread_local mark m; /* each thread its own */
    int *bad = arg;
    for (int k = 0; k < 3000; k++) {
        mark_reset(&m, 1000);
        ff_par_run(2, 1000, mark_range, &m);
        *bad += !each_once(&m);
    }
    return NULL;
}

TEST(test_parallel_two_callers)
{
    pthread_t th[2];
    int bad[2] = {0, 0};
    for (int i = 0; i < 2; i++)
        REQUIRE(pthread_create(&th[i], NULL, splitter, &bad[i]) == 0);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    CHECK(bad[0] == 0 && bad[1] == 0);
}

TEST(test_parallel_shutdown_and_restart)
{
    static mark m;
    mark_reset(&m, N);
    ff_par_run(2, N, mark_range, &m);
    ff_par_stat s;
    ff_par_stats(&s);
    CHECK(s.workers >= 1);
    CHECK(ff_par_shutdown());
    ff_par_stats(&s);
    CHECK(s.workers == 0);
    CHECK(ff_par_shutdown()); /* idempotent */
    long started = s.started;
    mark_reset(&m, N);
    ff_par_run(2, N, mark_range, &m);
    CHECK(each_once(&m));
    ff_par_stats(&s);
    CHECK(s.workers == 1 && s.started == started + 1);
}

TEST(test_parallel_fork_child)
{
    static mark m;
    mark_reset(&m, N);
    ff_par_run(2, N, mark_range, &m); /* the parent has a worker */
    fflush(NULL);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        alarm(20); /* a deadlock kills the child, and the check below fails */
        ff_par_stat s;
        ff_par_stats(&s);
        int ok = s.workers == 0;
        for (int k = 0; k < 100; k++) {
            mark_reset(&m, N);
            ff_par_run(2, N, mark_range, &m);
            ok &= each_once(&m);
        }
        ff_par_stats(&s);
        ok &= s.workers == 1;
        _exit(ok ? 0 : 1);
    }
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    mark_reset(&m, N);
    ff_par_run(2, N, mark_range, &m); /* and the parent's pool still works */
    CHECK(each_once(&m));
}
