/*
 * parallel.c: a loop's index range split over a small persistent pool of
 * threads (see parallel.h for the contract).
 *
 * Why a pool: creating and joining a thread per split loop cost 23-60 us
 * on these VMs, sometimes 150-250 us, and a training step runs dozens of
 * split loops (batch norm + relu alone: eight). A worker that is still
 * awake takes a new range in about a microsecond.
 *
 * Why it never competes with OpenBLAS: a worker waits for its next range
 * by polling (yielding its core at every check) for FF_POOL_SPIN_S after
 * its last one, then sleeps on a futex until the next dispatch wakes it.
 * Split loops come in bursts (an op's forward, its backward) separated by
 * products, so a worker spins across the short gaps inside a burst and is
 * asleep while OpenBLAS's own threads run a product. The yield in the
 * poll gives the core to any runnable thread (OpenBLAS's spinning worker
 * yields too), so two polling threads share a core instead of stealing it.
 *
 * Each worker has its own slot (a sequence number, the futex word, and the
 * range to run): a dispatch writes only the slots of the workers it uses,
 * so workers beyond a loop's thread count stay asleep and no worker can
 * mistake one dispatch's range for another's.
 *
 * One dispatch at a time: the caller holds pool_lock for the whole loop,
 * taken with trylock, so a nested call (a range that itself splits a loop)
 * or a second thread calling at the same time runs its ranges one after
 * the other on its own thread: the same ranges, the same results, no
 * deadlock.
 *
 * fork: the child has none of the parent's workers; an atfork handler
 * forgets them (the child starts new ones on first use), and holding
 * pool_lock across fork means no dispatch is half-done in the child.
 * Exit and dlclose (the Lua module core.so): a destructor wakes the
 * workers with the quit flag and joins them, so no thread is left running
 * code of an unmapped library.
 */
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include "ff_ops.h"
#include "parallel.h"

/* Below this many floats touched a loop stays on one thread: with the pool
 * a dispatch costs a few microseconds when the worker is awake, but ~60 us
 * when it sleeps (a futex wake on these VMs), the time to stream some 2 MB;
 * 4 MB of work gains clearly either way. */
#define FF_PAR_MIN_WORK ((int64_t)1 << 20)

/* How long an idle worker polls before it sleeps, and how long the caller
 * polls for the workers' ranges before it sleeps. */
#define FF_POOL_SPIN_S 200e-6
#define FF_POOL_WAIT_SPIN_S 2e-3

typedef struct {
    ff_range_fn fn;
    void *arg;
    int t;
    int64_t i0, i1;
} range_job;

typedef struct {
    _Atomic uint32_t seq;  /* bumped per dispatch to this worker; futex word */
    atomic_int sleeping;   /* the worker is (about to be) in futex_wait */
    uint32_t born;         /* seq when the worker was started */
    range_job job;         /* written before seq is bumped */
} pool_slot;

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static pool_slot slots[FF_PAR_MAX]; /* [1, FF_PAR_MAX): slot 0 is the caller's */
static pthread_t workers[FF_PAR_MAX];
static int nworkers;                /* workers 1..nworkers are running */
static atomic_bool quit;
static _Atomic uint32_t pending;    /* ranges of this dispatch not yet done; futex word */
static atomic_int caller_sleeping;
static atomic_long stat_dispatches, stat_inline, stat_started;

static long futex(_Atomic uint32_t *w, int op, uint32_t val)
{
    return syscall(SYS_futex, (uint32_t *)w, op | FUTEX_PRIVATE_FLAG, val, NULL, NULL, 0);
}

static double seconds_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* Polls *w until it differs from `old` for up to `spin` seconds, yielding
 * the core every few checks; returns true when it changed. */
static bool poll_change(_Atomic uint32_t *w, uint32_t old, double spin)
{
    double until = 0;
    for (int k = 0;; k++) {
        if (atomic_load_explicit(w, memory_order_acquire) != old)
            return true;
        cpu_relax();
        if ((k & 31) == 31) {
            double now = seconds_now();
            if (until == 0)
                until = now + spin;
            else if (now > until)
                return false;
            sched_yield();
        }
    }
}

static void *worker_main(void *p)
{
    pool_slot *s = p;
    /* Not seq's value now: the dispatch that started us may have bumped
     * it already, and that range is ours. */
    uint32_t seen = s->born;
    for (;;) {
        if (!poll_change(&s->seq, seen, FF_POOL_SPIN_S)) {
            /* Dekker with the dispatcher (both seq_cst): either it sees
             * sleeping and wakes us, or we see its new seq here. */
            atomic_store(&s->sleeping, 1);
            while (atomic_load(&s->seq) == seen && !atomic_load(&quit))
                futex(&s->seq, FUTEX_WAIT, seen);
            atomic_store(&s->sleeping, 0);
        }
        if (atomic_load(&quit))
            return NULL;
        seen = atomic_load_explicit(&s->seq, memory_order_acquire);
        range_job j = s->job;
        j.fn(j.arg, j.t, j.i0, j.i1);
        if (atomic_fetch_sub(&pending, 1) == 1 && atomic_load(&caller_sleeping))
            futex(&pending, FUTEX_WAKE, 1);
    }
}

/* Starts workers up to index nt - 1 (pool_lock held); returns how many
 * are running, which may be fewer when pthread_create fails. Workers
 * block every signal: a Ctrl-C is the interpreter's main thread's. */
static int grow_pool(int nt)
{
    if (nworkers >= nt - 1)
        return nworkers;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    while (nworkers < nt - 1) {
        int w = nworkers + 1;
        slots[w].born = atomic_load(&slots[w].seq);
        if (pthread_create(&workers[w], NULL, worker_main, &slots[w]) != 0)
            break;
        nworkers = w;
        atomic_fetch_add(&stat_started, 1);
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return nworkers;
}

/* The caller, its own range done, waits until every worker's range is. */
static void wait_workers(void)
{
    double until = 0;
    for (int k = 0; atomic_load_explicit(&pending, memory_order_acquire) != 0; k++) {
        cpu_relax();
        if ((k & 31) != 31)
            continue;
        double now = seconds_now();
        if (until == 0) {
            until = now + FF_POOL_WAIT_SPIN_S;
        }
        else if (now > until) {
            atomic_store(&caller_sleeping, 1);
            uint32_t p;
            while ((p = atomic_load(&pending)) != 0)
                futex(&pending, FUTEX_WAIT, p);
            atomic_store(&caller_sleeping, 0);
            return;
        }
        sched_yield();
    }
}

static void run_inline(int nt, range_job *jobs)
{
    for (int t = 0; t < nt; t++)
        jobs[t].fn(jobs[t].arg, jobs[t].t, jobs[t].i0, jobs[t].i1);
}

/* Runs jobs[0..nt) with jobs[0] on the calling thread; ranges no worker
 * can take run here too, so the work is always done. */
static void run_jobs(int nt, range_job *jobs)
{
    if (pthread_mutex_trylock(&pool_lock) != 0) {
        atomic_fetch_add(&stat_inline, 1);
        run_inline(nt, jobs);
        return;
    }
    int nw = grow_pool(nt);
    int used = nw < nt - 1 ? nw : nt - 1; /* workers 1..used */
    atomic_store(&pending, (uint32_t)used);
    for (int w = 1; w <= used; w++) {
        slots[w].job = jobs[w];
        atomic_fetch_add(&slots[w].seq, 1);
        if (atomic_load(&slots[w].sleeping))
            futex(&slots[w].seq, FUTEX_WAKE, 1);
    }
    atomic_fetch_add(&stat_dispatches, 1);
    jobs[0].fn(jobs[0].arg, jobs[0].t, jobs[0].i0, jobs[0].i1);
    for (int t = used + 1; t < nt; t++)
        jobs[t].fn(jobs[t].arg, jobs[t].t, jobs[t].i0, jobs[t].i1);
    wait_workers();
    pthread_mutex_unlock(&pool_lock);
}

/* ---- fork and exit ---- */

static void atfork_prepare(void) { pthread_mutex_lock(&pool_lock); }
static void atfork_parent(void) { pthread_mutex_unlock(&pool_lock); }

static void atfork_child(void)
{
    /* The workers did not come along: forget them (their slots are idle,
     * pending is 0 since no dispatch was running) and start afresh. */
    nworkers = 0;
    for (int w = 0; w < FF_PAR_MAX; w++)
        atomic_store(&slots[w].sleeping, 0);
    pthread_mutex_unlock(&pool_lock);
}

__attribute__((constructor)) static void pool_init(void)
{
    pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

bool ff_par_shutdown(void)
{
    if (pthread_mutex_trylock(&pool_lock) != 0)
        return false; /* a dispatch is running (exit from another thread) */
    atomic_store(&quit, true);
    for (int w = 1; w <= nworkers; w++) {
        atomic_fetch_add(&slots[w].seq, 1);
        futex(&slots[w].seq, FUTEX_WAKE, 1);
    }
    for (int w = 1; w <= nworkers; w++)
        pthread_join(workers[w], NULL);
    nworkers = 0;
    atomic_store(&quit, false);
    pthread_mutex_unlock(&pool_lock);
    return true;
}

__attribute__((destructor)) static void pool_fini(void)
{
    ff_par_shutdown();
}

void ff_par_stats(ff_par_stat *s)
{
    s->workers = nworkers;
    s->started = atomic_load(&stat_started);
    s->dispatches = atomic_load(&stat_dispatches);
    s->inline_runs = atomic_load(&stat_inline);
}

/* ---- the split ---- */

int ff_par_threads(int64_t n, int64_t cost)
{
    int nt = ff_blas_threads();
    nt = nt > FF_PAR_MAX ? FF_PAR_MAX : nt;
    nt = nt > n ? (int)n : nt;
    if (cost > 0 && n > 0 && n <= FF_PAR_MIN_WORK / cost)
        return 1;
    return nt < 1 ? 1 : nt;
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
        jobs[t] = (range_job){fn, arg, t, u0 * align, i1};
    }
    run_jobs(nt, jobs);
}

void ff_par_run(int nt, int64_t n, ff_range_fn fn, void *arg)
{
    ff_par_run_aligned(nt, n, 1, fn, arg);
}
