/*
 * alloc.c: aligned buffers with a live-byte count, and a small cache of
 * large freed buffers.
 *
 * The count lets the Lua binding step its garbage collector by engine memory
 * (a tensor userdata is a few dozen bytes to Lua but may own gigabytes).
 *
 * The cache exists because training and growth loops free and re-allocate
 * buffers of the same sizes every step: handing a large block back to the
 * OS and faulting it in again costs more than the arithmetic done in it
 * (measured: a 10^7-element add took 3.7x a plain loop, all of it in
 * mmap/munmap and page faults). Blocks of at least FF_CACHE_MIN bytes are
 * kept, up to FF_CACHE_CAP bytes in all, and reused for a request of the
 * same rounded size. Cached bytes are not live bytes.
 *
 * Buffers under FF_CACHE_MIN go to malloc, and glibc's defaults fault them
 * in again every step: it gives the heap's top back to the OS past 128 KiB
 * free (trim) and serves blocks from its mmap threshold up (128 KiB at
 * start, adapting up to 32 MiB) with mmap/munmap. The first allocation
 * fixes both thresholds (tune_malloc below); measured on a growth step,
 * page faults were 9-10 % of its CPU time.
 */
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include "ff_base.h"

#define FF_ALIGN 64
#define FF_CACHE_MIN ((size_t)256 << 10)
#define FF_CACHE_CAP ((size_t)256 << 20)
#define FF_CACHE_SLOTS 64

static atomic_size_t live_bytes;
static atomic_size_t peak_bytes;
static atomic_size_t total_bytes; /* ever allocated: paces the Lua collector */
static long fail_countdown; /* testing hook; 0 = off */
static size_t alloc_limit;   /* largest single buffer; 0 = none */

static struct {
    pthread_mutex_t lock;
    void *ptr[FF_CACHE_SLOTS];
    size_t size[FF_CACHE_SLOTS];
    int n;
    size_t bytes;
} cache = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* Under AddressSanitizer every buffer is exactly its size and nothing is
 * cached: rounding would hide an overflow of up to 60 bytes (15 floats) and
 * a cached block would hide a use after free, which are what the sanitizer
 * and fuzz builds are for. */
#if defined(__SANITIZE_ADDRESS__)
#define FF_ALLOC_EXACT 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FF_ALLOC_EXACT 1
#endif
#endif

/* Sizes are rounded up so that near sizes share cache entries: to the
 * alignment, and large ones to 4 KiB pages. */
static size_t rounded_size(size_t nbytes)
{
#ifdef FF_ALLOC_EXACT
    return nbytes == 0 ? 1 : nbytes;
#else
    size_t unit = nbytes >= FF_CACHE_MIN ? 4096 : FF_ALIGN;
    size_t r = (nbytes + unit - 1) / unit * unit;
    return r < nbytes ? 0 : (r == 0 ? FF_ALIGN : r);
#endif
}

__attribute__((unused)) static void *cache_take(size_t size)
{
    void *p = NULL;
    pthread_mutex_lock(&cache.lock);
    for (int i = cache.n - 1; i >= 0; i--)
        if (cache.size[i] == size) {
            p = cache.ptr[i];
            cache.bytes -= size;
            cache.ptr[i] = cache.ptr[--cache.n];
            cache.size[i] = cache.size[cache.n];
            break;
        }
    pthread_mutex_unlock(&cache.lock);
    return p;
}

/* Keep p for reuse; returns 0 when the cache is full (caller frees). */
__attribute__((unused)) static int cache_put(void *p, size_t size)
{
    int kept = 0;
    pthread_mutex_lock(&cache.lock);
    /* Make room by dropping the oldest entries (the front of the array). */
    while (cache.n > 0 && (cache.n == FF_CACHE_SLOTS || cache.bytes + size > FF_CACHE_CAP)) {
        free(cache.ptr[0]);
        cache.bytes -= cache.size[0];
        for (int i = 1; i < cache.n; i++)
            cache.ptr[i - 1] = cache.ptr[i], cache.size[i - 1] = cache.size[i];
        cache.n--;
    }
    if (size <= FF_CACHE_CAP) {
        cache.ptr[cache.n] = p;
        cache.size[cache.n++] = size;
        cache.bytes += size;
        kept = 1;
    }
    pthread_mutex_unlock(&cache.lock);
    return kept;
}

void ff_mem_release_cache(void)
{
    pthread_mutex_lock(&cache.lock);
    for (int i = 0; i < cache.n; i++)
        free(cache.ptr[i]);
    cache.n = 0;
    cache.bytes = 0;
    pthread_mutex_unlock(&cache.lock);
}

/* Fixed malloc thresholds: a heap top of up to FF_TRIM_KEEP bytes stays
 * mapped, and blocks under FF_MMAP_FROM come from the heap, so a step that
 * frees and re-allocates the same sizes reuses pages already faulted in.
 * The trim threshold only keeps what the process has already touched, so
 * peak RSS moves little; the mmap threshold is glibc's own upper limit for
 * its adaptive one (32 MiB on 64-bit), reached from the start instead of
 * after the first large frees. A user's MALLOC_TRIM_THRESHOLD_,
 * MALLOC_MMAP_THRESHOLD_ or MALLOC_TOP_PAD_ (or the glibc.malloc tunables)
 * wins: the setting is then left as the environment made it. */
#define FF_TRIM_KEEP ((size_t)256 << 20)
#define FF_MMAP_FROM ((size_t)32 << 20)

static void tune_malloc(void)
{
#if defined(M_TRIM_THRESHOLD) && !defined(FF_ALLOC_EXACT)
    const char *tunables = getenv("GLIBC_TUNABLES");
    int env_malloc = tunables && strstr(tunables, "glibc.malloc.");
    if (!env_malloc && !getenv("MALLOC_TRIM_THRESHOLD_") && !getenv("MALLOC_TOP_PAD_"))
        mallopt(M_TRIM_THRESHOLD, (int)FF_TRIM_KEEP);
    if (!env_malloc && !getenv("MALLOC_MMAP_THRESHOLD_"))
        mallopt(M_MMAP_THRESHOLD, (int)FF_MMAP_FROM);
#endif
}

static pthread_once_t tune_once = PTHREAD_ONCE_INIT;

static void count_alloc(size_t nbytes)
{
    atomic_fetch_add(&total_bytes, nbytes);
    size_t now = atomic_fetch_add(&live_bytes, nbytes) + nbytes;
    size_t peak = atomic_load(&peak_bytes);
    while (now > peak && !atomic_compare_exchange_weak(&peak_bytes, &peak, now))
        ;
}

void *ff_alloc(size_t nbytes)
{
    pthread_once(&tune_once, tune_malloc);
    if (fail_countdown > 0 && --fail_countdown == 0) {
        ff_error(FF_ERR_MEM, "out of memory allocating %zu bytes (injected failure)", nbytes);
        return NULL;
    }
    if (alloc_limit && nbytes > alloc_limit) {
        ff_error(FF_ERR_MEM, "out of memory allocating %zu bytes (over the limit of %zu)", nbytes, alloc_limit);
        return NULL;
    }
    size_t size = rounded_size(nbytes);
    if (size == 0) {
        ff_error(FF_ERR_MEM, "out of memory: %zu bytes overflows", nbytes);
        return NULL;
    }
#ifdef FF_ALLOC_EXACT
    /* posix_memalign: aligned_alloc wants a multiple of the alignment. */
    void *p = NULL;
    if (posix_memalign(&p, FF_ALIGN, size) != 0)
        p = NULL;
#else
    void *p = size >= FF_CACHE_MIN ? cache_take(size) : NULL;
    if (!p)
        p = aligned_alloc(FF_ALIGN, size);
    if (!p) { /* cached blocks may be what is missing */
        ff_mem_release_cache();
        p = aligned_alloc(FF_ALIGN, size);
    }
#endif
    if (!p) {
        ff_error(FF_ERR_MEM, "out of memory allocating %zu bytes", nbytes);
        return NULL;
    }
    count_alloc(nbytes);
    return p;
}

void ff_free(void *p, size_t nbytes)
{
    if (!p)
        return;
    atomic_fetch_sub(&live_bytes, nbytes);
#ifndef FF_ALLOC_EXACT
    size_t size = rounded_size(nbytes);
    if (size >= FF_CACHE_MIN && cache_put(p, size))
        return;
#endif
    free(p);
}

size_t ff_mem_live_bytes(void) { return atomic_load(&live_bytes); }
size_t ff_mem_peak_bytes(void) { return atomic_load(&peak_bytes); }
size_t ff_mem_total_bytes(void) { return atomic_load(&total_bytes); }
void ff_mem_reset_peak(void) { atomic_store(&peak_bytes, atomic_load(&live_bytes)); }
size_t ff_mem_cached_bytes(void)
{
    pthread_mutex_lock(&cache.lock);
    size_t b = cache.bytes;
    pthread_mutex_unlock(&cache.lock);
    return b;
}
void ff_mem_fail_after(long n) { fail_countdown = n; }

void ff_mem_set_limit(size_t nbytes) { alloc_limit = nbytes; }
