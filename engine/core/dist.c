/*
 * dist.c: collectives over Open MPI, loaded at run time (see ff_dist.h).
 *
 * Why dlopen instead of linking -lmpi: linking made every start of the
 * interpreter load libmpi and its eight dependencies, about 4 ms on a
 * 12 ms start (measured with a plain `firefly -e 'require"firefly"'`),
 * for the many runs that never use MPI. mpi.h is included for the types
 * and the functions' prototypes only (each pointer has the type of the
 * function it stands for); Open MPI's predefined handles (MPI_COMM_WORLD,
 * MPI_FLOAT, MPI_SUM...) are addresses of globals in libmpi, so they are
 * looked up by their symbol names too. This ties the file to Open MPI's
 * ABI, which is the MPI that Debian ships.
 *
 * Every collective is the non-blocking form plus a polling wait with a
 * deadline: a blocking MPI call whose peer died or skipped the call waits
 * forever, which is the one failure a data-parallel job must never have.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <mpi.h>
#include "ff_dist.h"
#include "ff_ops.h"

#define BUCKET (1 << 20) /* floats per allreduce call: 4 MiB */
#define MAX_SIG 64

static struct {
    void *lib;
    bool active, tried;
    int rank, size;
    double timeout;
    double bytes, seconds;
    float *scratch; /* ff_dist_scratch's buffer, kept for the process */
    int64_t scratch_n;
    MPI_Request *posted; /* ff_dist_post_allreduce_f32's requests in flight */
    int n_posted, cap_posted;
    /* functions */
    __typeof__(MPI_Init) *init;
    __typeof__(MPI_Initialized) *initialized;
    __typeof__(MPI_Finalize) *finalize;
    __typeof__(MPI_Finalized) *finalized;
    __typeof__(MPI_Abort) *abort_;
    __typeof__(MPI_Comm_rank) *comm_rank;
    __typeof__(MPI_Comm_size) *comm_size;
    __typeof__(MPI_Comm_set_errhandler) *set_errhandler;
    __typeof__(MPI_Error_string) *error_string;
    __typeof__(MPI_Ibarrier) *ibarrier;
    __typeof__(MPI_Iallreduce) *iallreduce;
    __typeof__(MPI_Ibcast) *ibcast;
    __typeof__(MPI_Iallgather) *iallgather;
    __typeof__(MPI_Testall) *testall;
    /* predefined handles */
    MPI_Comm world;
    MPI_Datatype f32, f64, i64;
    MPI_Op sum, max, min;
    MPI_Errhandler errors_return;
} M = {.rank = 0, .size = 1, .timeout = -1};

bool ff_dist_launched(void)
{
    return getenv("OMPI_COMM_WORLD_SIZE") != NULL || getenv("PMIX_RANK") != NULL;
}

bool ff_dist_active(void) { return M.active; }
int ff_dist_rank(void) { return M.active ? M.rank : 0; }
int ff_dist_size(void) { return M.active ? M.size : 1; }

void ff_dist_set_timeout(double seconds) { M.timeout = seconds; }

double ff_dist_timeout(void)
{
    if (M.timeout < 0) {
        const char *e = getenv("FF_DIST_TIMEOUT");
        M.timeout = e && atof(e) > 0 ? atof(e) : 600;
    }
    return M.timeout;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* MPI's message for rc as an engine error naming the call. */
static ff_status mpi_fail(const char *who, const char *call, int rc)
{
    char msg[MPI_MAX_ERROR_STRING] = "unknown MPI error";
    int len = 0;
    if (M.error_string)
        M.error_string(rc, msg, &len);
    return ff_error(FF_ERR_STATE, "%s: %s failed: %s", who, call, msg);
}

/* Wait for n requests with the deadline. Polls MPI (which is what drives
 * its progress) without pause for the first millisecond, as a blocking MPI
 * call does: a pause hands the core to the scheduler, and every round of
 * the collective then waits for a time slice. Past that the other rank is
 * still computing (or busy with a checkpoint, an uneven phase), and the
 * waiting rank sleeps between polls: on a machine shared with other jobs
 * a rank that polls burns its share of the core, and the scheduler then
 * makes it wait for its next compute. A 1 ms window covers an allreduce
 * of the MLP's 1 MiB of gradients (0.2-0.4 ms) and gave 3,600-4,800
 * samples/s on two ranks against 1,600-3,500 with a 50 ms window (MLP
 * 784-256-256-10, 4 alternating pairs, load 5-10 on 2 cores). */
#define SPIN_S 1e-3

static ff_status wait_all(const char *who, const char *call, MPI_Request *req, int n)
{
    double t0 = now(), limit = ff_dist_timeout();
    for (long spins = 0;; spins++) {
        int done = 0, rc = M.testall(n, req, &done, MPI_STATUSES_IGNORE);
        if (rc != MPI_SUCCESS)
            return mpi_fail(who, call, rc);
        if (done)
            break;
        double waited = now() - t0;
        if (limit > 0 && waited > limit)
            return ff_error(FF_ERR_STATE,
                            "%s: no answer from every rank within %.0f s in %s (a rank died, "
                            "is stuck, or skipped this call); ending the job",
                            who, limit, call);
        if (waited > SPIN_S) {
            struct timespec ts = {0, 50000};
            nanosleep(&ts, NULL);
        }
    }
    M.seconds += now() - t0;
    return FF_OK;
}

#define LOAD(field, name)                                                      \
    do {                                                                       \
        *(void **)&M.field = dlsym(M.lib, name);                              \
        if (!M.field)                                                          \
            return ff_error(FF_ERR_STATE, "dist.init: libmpi has no %s (not Open MPI?)", name); \
    } while (0)
#define HANDLE(field, type, name)                                              \
    do {                                                                       \
        void *p_ = dlsym(M.lib, name);                                         \
        if (!p_)                                                               \
            return ff_error(FF_ERR_STATE, "dist.init: libmpi has no %s (not Open MPI?)", name); \
        M.field = (type)p_;                                                    \
    } while (0)

static ff_status load_mpi(void)
{
    /* RTLD_GLOBAL: Open MPI's own plugins (mca_*.so) resolve symbols of
     * libmpi and libopen-pal through the global scope. */
    M.lib = dlopen("libmpi.so.40", RTLD_NOW | RTLD_GLOBAL);
    if (!M.lib)
        M.lib = dlopen("libmpi.so", RTLD_NOW | RTLD_GLOBAL);
    if (!M.lib)
        return ff_error(FF_ERR_STATE, "dist.init: cannot load Open MPI's libmpi (%s); install "
                                      "openmpi-bin and libopenmpi-dev (make deps)", dlerror());
    LOAD(init, "MPI_Init");
    LOAD(initialized, "MPI_Initialized");
    LOAD(finalize, "MPI_Finalize");
    LOAD(finalized, "MPI_Finalized");
    LOAD(abort_, "MPI_Abort");
    LOAD(comm_rank, "MPI_Comm_rank");
    LOAD(comm_size, "MPI_Comm_size");
    LOAD(set_errhandler, "MPI_Comm_set_errhandler");
    LOAD(error_string, "MPI_Error_string");
    LOAD(ibarrier, "MPI_Ibarrier");
    LOAD(iallreduce, "MPI_Iallreduce");
    LOAD(ibcast, "MPI_Ibcast");
    LOAD(iallgather, "MPI_Iallgather");
    LOAD(testall, "MPI_Testall");
    HANDLE(world, MPI_Comm, "ompi_mpi_comm_world");
    HANDLE(f32, MPI_Datatype, "ompi_mpi_float");
    HANDLE(f64, MPI_Datatype, "ompi_mpi_double");
    HANDLE(i64, MPI_Datatype, "ompi_mpi_int64_t");
    HANDLE(sum, MPI_Op, "ompi_mpi_op_sum");
    HANDLE(max, MPI_Op, "ompi_mpi_op_max");
    HANDLE(min, MPI_Op, "ompi_mpi_op_min");
    HANDLE(errors_return, MPI_Errhandler, "ompi_mpi_errors_return");
    return FF_OK;
}

/* Ranks sharing this machine split its cores: 2 ranks on 2 cores run the
 * engine and OpenBLAS on 1 thread each instead of 4 threads fighting. */
static void share_cores(void)
{
    if (getenv("OPENBLAS_NUM_THREADS") || getenv("OMP_NUM_THREADS"))
        return;
    const char *ls = getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
    int local = ls && atoi(ls) > 0 ? atoi(ls) : 1;
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    cpu_set_t set;
    int bound = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : (int)online;
    int n = (int)(online / local);
    if (bound < n)
        n = bound; /* mpirun bound this rank to fewer cores */
    ff_blas_set_threads(n < 1 ? 1 : n);
}

/* How the process ends decides how MPI ends: a clean exit is a finalize
 * (every rank reaches it), a failed one aborts the whole job, since the
 * other ranks may be waiting in a collective this rank will never join.
 * on_exit sees the status where atexit does not; it covers the
 * interpreter, os.exit and a stock lua alike. */
static void at_exit(int status, void *arg)
{
    (void)arg;
    if (!M.active)
        return;
    if (status != 0) {
        fprintf(stderr, "firefly: rank %d of %d failed (exit status %d); ending the job on every rank\n",
                M.rank, M.size, status);
        ff_dist_abort(status);
    }
    else
        ff_dist_finalize();
}

ff_status ff_dist_init(void)
{
    if (M.active)
        return FF_OK;
    if (M.tried)
        return ff_error(FF_ERR_STATE, "dist.init: MPI was already finalized or failed to start");
    M.tried = true;
    ff_status st = load_mpi();
    if (st != FF_OK)
        return st;
    /* Open MPI's shared-memory transport moves large messages with one
     * process_vm_readv by default; containers often forbid the call (Open
     * MPI then prints "Read -1, expected ..." and loses the message), and
     * where it worked here it was slower for our sizes: an allreduce of
     * 1 MiB took 0.4-0.75 ms against 0.19-0.23 ms with copy-in/copy-out
     * (medians of 60, 2 ranks). The user's own setting wins. */
    setenv("OMPI_MCA_btl_vader_single_copy_mechanism", "none", 0);
    int flag = 0, rc;
    M.initialized(&flag);
    if (!flag && (rc = M.init(NULL, NULL)) != MPI_SUCCESS)
        return mpi_fail("dist.init", "MPI_Init", rc);
    /* errors come back as codes; the binding turns them into Lua errors */
    M.set_errhandler(M.world, M.errors_return);
    M.comm_rank(M.world, &M.rank);
    M.comm_size(M.world, &M.size);
    M.active = true;
    on_exit(at_exit, NULL);
    share_cores();
    return FF_OK;
}

ff_status ff_dist_barrier(const char *who)
{
    if (!M.active)
        return FF_OK;
    MPI_Request r;
    int rc = M.ibarrier(M.world, &r);
    if (rc != MPI_SUCCESS)
        return mpi_fail(who, "MPI_Ibarrier", rc);
    return wait_all(who, "MPI_Ibarrier", &r, 1);
}

static MPI_Op mpi_op(ff_dist_op op)
{
    return op == FF_DIST_MAX ? M.max : op == FF_DIST_MIN ? M.min : M.sum;
}

ff_status ff_dist_allreduce_f32(const char *who, float *buf, int64_t n, ff_dist_op op)
{
    if (!M.active || n == 0)
        return FF_OK;
    int64_t nb = (n + BUCKET - 1) / BUCKET;
    MPI_Request stack[16], *req = nb <= 16 ? stack : malloc(sizeof *req * (size_t)nb);
    if (!req)
        return ff_error(FF_ERR_MEM, "%s: out of memory for %lld requests", who, (long long)nb);
    ff_status st = FF_OK;
    int64_t issued = 0;
    for (; issued < nb; issued++) {
        int64_t off = issued * BUCKET, len = n - off < BUCKET ? n - off : BUCKET;
        int rc = M.iallreduce(MPI_IN_PLACE, buf + off, (int)len, M.f32, mpi_op(op), M.world,
                              &req[issued]);
        if (rc != MPI_SUCCESS) {
            st = mpi_fail(who, "MPI_Iallreduce", rc);
            break;
        }
    }
    if (issued > 0) {
        ff_status w = wait_all(who, "MPI_Iallreduce", req, (int)issued);
        if (st == FF_OK)
            st = w;
    }
    M.bytes += (double)n * sizeof(float);
    if (req != stack)
        free(req);
    return st;
}

ff_status ff_dist_allreduce_f64(const char *who, double *buf, int64_t n, ff_dist_op op)
{
    if (!M.active || n == 0)
        return FF_OK;
    if (n > INT_MAX)
        return ff_error(FF_ERR_ARG, "%s: %lld values is too many for one call", who, (long long)n);
    MPI_Request r;
    int rc = M.iallreduce(MPI_IN_PLACE, buf, (int)n, M.f64, mpi_op(op), M.world, &r);
    if (rc != MPI_SUCCESS)
        return mpi_fail(who, "MPI_Iallreduce", rc);
    M.bytes += (double)n * sizeof(double);
    return wait_all(who, "MPI_Iallreduce", &r, 1);
}

ff_status ff_dist_broadcast_f32(const char *who, float *buf, int64_t n, int root)
{
    int size = ff_dist_size();
    if (root < 0 || root >= size)
        return ff_error(FF_ERR_RANGE, "%s: root rank %d does not exist (ranks are 0..%d)", who,
                        root, size - 1);
    if (!M.active || n == 0)
        return FF_OK;
    int64_t nb = (n + BUCKET - 1) / BUCKET;
    ff_status st = FF_OK;
    for (int64_t b = 0; b < nb && st == FF_OK; b++) {
        int64_t off = b * BUCKET, len = n - off < BUCKET ? n - off : BUCKET;
        MPI_Request r;
        int rc = M.ibcast(buf + off, (int)len, M.f32, root, M.world, &r);
        st = rc != MPI_SUCCESS ? mpi_fail(who, "MPI_Ibcast", rc) : wait_all(who, "MPI_Ibcast", &r, 1);
    }
    return st;
}

static ff_status allgather(const char *who, const void *in, int64_t n, void *out,
                           MPI_Datatype type, size_t elem)
{
    if (!M.active) {
        memcpy(out, in, (size_t)n * elem);
        return FF_OK;
    }
    if (n > INT_MAX / M.size)
        return ff_error(FF_ERR_ARG, "%s: %lld values per rank is too many for one allgather", who,
                        (long long)n);
    MPI_Request r;
    int rc = M.iallgather(in, (int)n, type, out, (int)n, type, M.world, &r);
    if (rc != MPI_SUCCESS)
        return mpi_fail(who, "MPI_Iallgather", rc);
    return wait_all(who, "MPI_Iallgather", &r, 1);
}

ff_status ff_dist_allgather_f32(const char *who, const float *in, int64_t n, float *out)
{
    return allgather(who, in, n, out, M.f32, sizeof(float));
}

ff_status ff_dist_allgather_i64(const char *who, const int64_t *in, int64_t n, int64_t *out)
{
    return allgather(who, in, n, out, M.i64, sizeof(int64_t));
}

ff_status ff_dist_agree(const char *who, const int64_t *sig, int n,
                        void (*describe)(const int64_t *sig, int n, char *buf, size_t len))
{
    if (!M.active)
        return FF_OK;
    if (n < 0 || n > MAX_SIG)
        return ff_error(FF_ERR_ARG, "%s: signature of %d values (at most %d)", who, n, MAX_SIG);
    /* fixed width, so the check itself can never disagree on its size */
    int64_t mine[MAX_SIG + 1] = {n};
    memcpy(mine + 1, sig, sizeof *sig * (size_t)n);
    int64_t *all = malloc(sizeof mine * (size_t)M.size);
    if (!all)
        return ff_error(FF_ERR_MEM, "%s: out of memory", who);
    ff_status st = ff_dist_allgather_i64(who, mine, MAX_SIG + 1, all);
    /* every rank compares with rank 0, so all reach the same verdict */
    for (int r = 1; st == FF_OK && r < M.size; r++) {
        const int64_t *a = all, *b = all + (size_t)r * (MAX_SIG + 1);
        if (memcmp(a, b, sizeof mine) == 0)
            continue;
        char da[256], db[256];
        describe(a + 1, (int)a[0], da, sizeof da);
        describe(b + 1, (int)b[0], db, sizeof db);
        st = ff_error(FF_ERR_ARG, "%s: ranks disagree: rank 0 passed %s, rank %d passed %s", who,
                      da, r, db);
    }
    free(all);
    return st;
}

/* Why one buffer kept for the process: a gradient buffer allocated per
 * step (1 MiB for the MLP 784-256-256-10) is fresh pages every time, and
 * Open MPI's shared-memory transport then took 17-22 ms per allreduce
 * with its default single-copy path and 0.7 ms without, against 0.4 and
 * 0.23 ms on a buffer reused step after step (2 ranks, same bytes,
 * medians of 60, measured alternately in one session). */
float *ff_dist_scratch(int64_t n)
{
    if (n <= M.scratch_n)
        return M.scratch;
    float *p = realloc(M.scratch, sizeof *p * (size_t)(n > 0 ? n : 1));
    if (!p) {
        ff_error(FF_ERR_MEM, "dist: out of memory for a buffer of %lld values", (long long)n);
        return NULL;
    }
    M.scratch = p;
    M.scratch_n = n;
    return p;
}

ff_status ff_dist_post_allreduce_f32(const char *who, float *buf, int64_t n, ff_dist_op op)
{
    if (!M.active || n == 0)
        return FF_OK;
    for (int64_t off = 0; off < n; off += BUCKET) {
        int64_t len = n - off < BUCKET ? n - off : BUCKET;
        if (M.n_posted == M.cap_posted) {
            int cap = M.cap_posted ? 2 * M.cap_posted : 64;
            MPI_Request *p = realloc(M.posted, sizeof *p * (size_t)cap);
            if (!p)
                return ff_error(FF_ERR_MEM, "%s: out of memory for %d requests", who, cap);
            M.posted = p;
            M.cap_posted = cap;
        }
        int rc = M.iallreduce(MPI_IN_PLACE, buf + off, (int)len, M.f32, mpi_op(op), M.world,
                              &M.posted[M.n_posted]);
        if (rc != MPI_SUCCESS)
            return mpi_fail(who, "MPI_Iallreduce", rc);
        M.n_posted++;
    }
    M.bytes += (double)n * sizeof(float);
    return FF_OK;
}

ff_status ff_dist_progress(const char *who)
{
    if (!M.active || M.n_posted == 0)
        return FF_OK;
    int done = 0, rc = M.testall(M.n_posted, M.posted, &done, MPI_STATUSES_IGNORE);
    if (rc != MPI_SUCCESS)
        return mpi_fail(who, "MPI_Iallreduce", rc);
    if (done)
        M.n_posted = 0;
    return FF_OK;
}

ff_status ff_dist_wait_posted(const char *who)
{
    if (!M.active || M.n_posted == 0)
        return FF_OK;
    int n = M.n_posted;
    M.n_posted = 0; /* after a failure too: the job is ending */
    return wait_all(who, "MPI_Iallreduce", M.posted, n);
}

void ff_dist_stats(double *allreduce_bytes, double *seconds, bool reset)
{
    if (allreduce_bytes)
        *allreduce_bytes = M.bytes;
    if (seconds)
        *seconds = M.seconds;
    if (reset)
        M.bytes = M.seconds = 0;
}

void ff_dist_finalize(void)
{
    if (!M.active)
        return;
    M.active = false;
    int done = 0;
    M.finalized(&done);
    if (!done)
        M.finalize();
}

void ff_dist_abort(int code)
{
    if (!M.active)
        return;
    fflush(stdout);
    fflush(stderr);
    M.abort_(M.world, code);
}
