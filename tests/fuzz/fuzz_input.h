/*
 * fuzz_input.h: what the libFuzzer targets share: a reader that turns the
 * fuzzer's bytes into small decisions (running dry gives zeros, so every
 * input is a valid program), a scratch file for the readers that take a
 * path, and the check that a failed call left a message.
 *
 * Header-only (static functions) because each target is one translation
 * unit linked against the engine; nothing here is part of the engine.
 */
#ifndef FUZZ_INPUT_H
#define FUZZ_INPUT_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "ff.h"

typedef struct {
    const uint8_t *p;
    size_t n;
} fz_in;

static inline unsigned fz_byte(fz_in *in)
{
    if (in->n == 0)
        return 0;
    in->n--;
    return *in->p++;
}

/* A value in 0..k-1 (k >= 1). */
static inline unsigned fz_below(fz_in *in, unsigned k) { return fz_byte(in) % k; }

static inline uint32_t fz_u32(fz_in *in)
{
    uint32_t v = 0;
    for (int b = 0; b < 4; b++)
        v = v << 8 | fz_byte(in);
    return v;
}

/* Sizes, dims and indices: mostly small, sometimes just outside the valid
 * range (negative, one past), rarely extreme; that is where bounds checks
 * live. */
static inline int64_t fz_small(fz_in *in)
{
    unsigned b = fz_byte(in);
    if (b < 200)
        return (int64_t)(b % 12) - 2; /* -2..9 */
    static const int64_t edge[] = {-1, 0, 1, 16, 63, 64, 255, 1 << 20, INT32_MAX,
                                   (int64_t)INT32_MAX + 1, INT64_MAX, INT64_MIN,
                                   INT64_MIN + 1, -1000, 1 << 30, (int64_t)1 << 40};
    return edge[b % (sizeof edge / sizeof edge[0])];
}

static inline double fz_float(fz_in *in)
{
    static const double vals[] = {0.0, 1.0, -1.0, 0.5, 2.0, 1e-5, 0.1, 0.9, -0.0, 3.0,
                                  1e30, -1e30, 1e-40, 65536.0, NAN, INFINITY, -INFINITY};
    return vals[fz_below(in, sizeof vals / sizeof vals[0])];
}

/* ---- a scratch file for the readers, which take a path ---- */

static char fz_path[64];

/* Replace the scratch file's contents with data[0..n); returns its path. */
static inline const char *fz_write_file(const void *data, size_t n)
{
    if (!fz_path[0]) {
        snprintf(fz_path, sizeof fz_path, "/tmp/ff_fuzz_XXXXXX");
        int fd = mkstemp(fz_path);
        if (fd < 0) {
            perror("fuzz: mkstemp");
            abort();
        }
        close(fd);
    }
    FILE *f = fopen(fz_path, "wb");
    if (!f || (n && fwrite(data, 1, n, f) != n) || fclose(f) != 0) {
        perror("fuzz: cannot write the scratch file");
        abort();
    }
    return fz_path;
}

/* The file is removed at exit (libFuzzer exits through exit()). */
static void fz_cleanup(void)
{
    if (fz_path[0])
        unlink(fz_path);
}

/* A failed call must leave a message: a NULL or an error status without
 * one is a bug (the binding would raise an empty error). */
static inline void fz_check_failed(const char *what)
{
    if (ff_last_status() == FF_OK || !ff_last_error()[0]) {
        fprintf(stderr, "fuzz: %s failed without an error message (status %d)\n", what,
                (int)ff_last_status());
        abort();
    }
}

/* Clear the error state before a call, so fz_check_failed sees only the
 * call's own error. */
static inline void fz_clear_error(void) { ff_error(FF_OK, "%s", ""); }

/* The engine must give back every byte it took for one input. */
static inline void fz_check_live(size_t before, const char *what)
{
    if (ff_mem_live_bytes() != before) {
        fprintf(stderr, "fuzz: %s leaked %zd bytes of engine memory\n", what,
                (ssize_t)(ff_mem_live_bytes() - before));
        abort();
    }
}

#endif
