/*
 * ff_io.h: the file layer of checkpoints, in the safetensors format.
 *
 * A file is: 8 bytes, the little-endian unsigned length N of the header;
 * N bytes of UTF-8 JSON (padded with spaces to a multiple of 8); then the
 * data section, the raw little-endian float32 values of every tensor, packed
 * without gaps. The JSON (which tensor lies at which offsets, and the
 * metadata) is built and checked by lib/firefly/io.lua; this layer moves
 * bytes, and checks every size it reads against the real size of the file
 * before trusting it: files come from anywhere, and a truncated or lying
 * file must give an error, never a crash or a huge allocation.
 *
 * Errors (FF_ERR_IO, FF_ERR_ARG, FF_ERR_MEM) name the path and, for system
 * calls, the errno text, e.g.
 * "save: cannot create 'ckpt/x.ff.tmp.42': No such file or directory".
 */
#ifndef FF_IO_H
#define FF_IO_H

#include "ff_tensor.h"

/* Largest header accepted by the reader and the writer (as the reference
 * safetensors implementation). */
#define FF_IO_MAX_HEADER ((size_t)100 << 20)

/*
 * Write path atomically: the 8-byte length, `header` (header_len bytes,
 * padded here with spaces to a multiple of 8; the length written is the
 * padded one), then the elements of tensors[0..n-1] in that order, each as
 * row-major little-endian float32 (a non-contiguous tensor is copied first).
 * The caller's header must give tensor i the offsets that follow from the
 * sizes of tensors 0..i-1.
 *
 * The bytes go to "<path>.tmp.<pid>" in the same directory, which is synced
 * and then renamed over path; the directory is synced after. On any failure
 * the temporary file is removed and an existing file at path is untouched.
 * tensors may be NULL when n == 0. Borrows everything.
 */
ff_status ff_io_write_atomic(const char *path, const char *header, size_t header_len,
                             ff_tensor *const *tensors, int n);

/*
 * Read the header of the safetensors file at path. On success *json is a
 * malloc'ed copy of the header (*len bytes, NUL-terminated, padding
 * included; the caller free()s it), *data_start is 8 + N (where the data
 * section begins) and *file_size the size of the file in bytes.
 * Errors: the file cannot be opened or read, is shorter than 8 bytes, or its
 * header length exceeds FF_IO_MAX_HEADER or the bytes that follow it.
 * Outputs are unchanged on failure.
 */
ff_status ff_io_read_header(const char *path, char **json, size_t *len, int64_t *data_start,
                            int64_t *file_size);

/*
 * Read one float32 tensor of the given shape from bytes [begin, end) of the
 * data section (offsets relative to data_start, as in the header).
 * Errors: a bad shape, end - begin != 4 * numel, a range outside the file
 * (checked against its size now, not the size the header claims), a read
 * error or a short read. On success *out is a NEW contiguous tensor, else
 * *out is NULL.
 */
ff_status ff_io_read_tensor(const char *path, int64_t data_start, int64_t begin, int64_t end,
                            const int64_t *shape, int ndim, ff_tensor **out);

#endif
