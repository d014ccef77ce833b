/*
 * fuzz_data.h: the input of the data-set reader targets. The first byte
 * chooses how the rest reaches the reader: as it is, or gzip-compressed
 * first (so that the fuzzer explores valid gzip streams of crafted
 * contents, and not only corrupt ones), plus target-specific flag bits.
 */
#ifndef FUZZ_DATA_H
#define FUZZ_DATA_H

#include <zlib.h>
#include "fuzz_input.h"

/* Write data[0..n) to the scratch file, gzip-compressed when gz is set. */
static const char *fz_write_data(const uint8_t *data, size_t n, int gz)
{
    if (!gz)
        return fz_write_file(data, n);
    z_stream z;
    memset(&z, 0, sizeof z);
    /* windowBits 16 + 15: a gzip wrapper, as the files on disk have. */
    if (deflateInit2(&z, 6, Z_DEFLATED, 16 + 15, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        abort();
    size_t cap = deflateBound(&z, n);
    unsigned char *out = malloc(cap ? cap : 1);
    if (!out)
        abort();
    z.next_in = (unsigned char *)data;
    z.avail_in = (unsigned)n;
    z.next_out = out;
    z.avail_out = (unsigned)cap;
    if (deflate(&z, Z_FINISH) != Z_STREAM_END)
        abort();
    const char *path = fz_write_file(out, cap - z.avail_out);
    deflateEnd(&z);
    free(out);
    return path;
}

#endif
