/*
 * ff_base.h: status codes, error messages and engine memory accounting.
 *
 * The engine never aborts and never longjmps on a user error: a function that
 * can fail returns a status (or NULL) and leaves a message in ff_last_error().
 * Messages name the function, the argument and the shapes, in the terms the
 * user sees, e.g. "matmul: argument #2 has shape 5x2, expected 4xN to match
 * argument #1 (3x4)".
 *
 * Although the C API is 0-based, messages print dims and indices 1-based:
 * they are read by users of the Lua module, who wrote them that way.
 */
#ifndef FF_BASE_H
#define FF_BASE_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    FF_OK = 0,
    FF_ERR_ARG,   /* bad argument value or type */
    FF_ERR_SHAPE, /* shapes do not fit together */
    FF_ERR_RANGE, /* index or dim out of range */
    FF_ERR_MEM,   /* allocation failed or size overflows */
    FF_ERR_IO,    /* file could not be read or written, or is corrupt */
    FF_ERR_STATE  /* operation not valid in the current state */
} ff_status;

/* Format a message into the error buffer; returns `code` so callers can
 * `return ff_error(FF_ERR_SHAPE, "...")`. The buffer is per thread. */
ff_status ff_error(ff_status code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* The message of the last failure on this thread ("" if none). */
const char *ff_last_error(void);

/* The code of the last failure on this thread. */
ff_status ff_last_status(void);

/*
 * Engine memory. Every tensor buffer comes from ff_alloc, so the engine knows
 * how many bytes are live; the Lua binding uses this to step its collector,
 * because the Lua GC cannot see C memory on its own (torch7's classic leak).
 */
void *ff_alloc(size_t nbytes);      /* 64-byte aligned; NULL + error on failure */
void ff_free(void *p, size_t nbytes);
size_t ff_mem_live_bytes(void);     /* bytes currently held by tensors */
size_t ff_mem_peak_bytes(void);     /* high-water mark since start */
size_t ff_mem_total_bytes(void);    /* bytes ever allocated (a running count) */
void ff_mem_reset_peak(void);       /* the high-water mark restarts from now */
/* Large freed buffers are cached for reuse (training loops free and ask for
 * the same sizes every step); these are not live bytes. */
size_t ff_mem_cached_bytes(void);
void ff_mem_release_cache(void);    /* give cached buffers back to the OS */

/* Testing hook: make the n-th next allocation fail (0 disables). */
void ff_mem_fail_after(long n);

/* The largest single buffer ff_alloc hands out (0: no limit, the
 * default); a larger request fails with FF_ERR_MEM as if memory ran out.
 * The fuzzers set it so that a legitimate but huge tensor (a sum over a
 * 2^40-element expanded view keeps 2^31 of them) is an error, not a
 * malloc past their memory limit. */
void ff_mem_set_limit(size_t nbytes);

#endif
