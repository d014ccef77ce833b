/*
 * blas_threads.c: the engine's thread count (OpenBLAS's) and how OpenBLAS's
 * idle threads wait.
 *
 * After a multi-threaded product, OpenBLAS's worker threads spin (calling
 * sched_yield) until they have been idle for 2^THREAD_TIMEOUT cycles, 2^28
 * by default: about 0.1 s. The engine's own split loops (parallel.c) and
 * conv2d run on threads of their own between products, and a spinning
 * worker takes a core from them: small-VGG inference on 2 threads ran at
 * 80-84 ms per batch with the default and 48-50 ms with a timeout of 2^20
 * cycles (about 0.4 ms), measured alternately in one session. Products
 * called back to back (an MLP's layers) stay well inside 0.4 ms, so their
 * workers never sleep between them.
 *
 * OpenBLAS reads OPENBLAS_THREAD_TIMEOUT from the environment when it loads
 * and applies it when its thread pool starts, so ff_blas_init sets the
 * variable (when the user has not), has OpenBLAS read its environment
 * again, and shuts the pool down: the next product starts it with the new
 * timeout. The three entry points are exported by OpenBLAS but not in
 * cblas.h; they are weak here, so another BLAS without them just keeps its
 * own behaviour.
 */
#include <cblas.h>
#include <stdbool.h>
#include <stdlib.h>
#include "ff_ops.h"

#define FF_BLAS_THREAD_TIMEOUT "20" /* 2^20 cycles */

void openblas_read_env(void) __attribute__((weak));
int blas_thread_shutdown_(void) __attribute__((weak));

void ff_blas_init(void)
{
    static bool done = false;
    if (done)
        return;
    done = true;
    if (getenv("OPENBLAS_THREAD_TIMEOUT") || !openblas_read_env || !blas_thread_shutdown_)
        return;
    setenv("OPENBLAS_THREAD_TIMEOUT", FF_BLAS_THREAD_TIMEOUT, 0);
    int n = openblas_get_num_threads();
    openblas_read_env();
    blas_thread_shutdown_();
    openblas_set_num_threads(n);
}

void ff_blas_set_threads(int n)
{
    openblas_set_num_threads(n < 1 ? 1 : n);
}

int ff_blas_threads(void)
{
    return openblas_get_num_threads();
}
