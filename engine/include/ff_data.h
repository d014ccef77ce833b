/*
 * ff_data.h: readers of data-set files and the batch augmentation kernel.
 *
 * Files are read through zlib's gzread, which is transparent: a gzipped file
 * and the same file uncompressed give the same result. The readers are meant
 * for untrusted files (they are fuzzed): any malformed input is an FF_ERR_IO
 * (or FF_ERR_MEM) status whose message names the reader, the file and what is
 * wrong, e.g.
 *   "idx: /d/x.gz: truncated: header says 60000x28x28 (47040000 bytes) but
 *    the data has 1000 bytes"
 * Sizes are checked against the file before anything large is allocated, so
 * a header announcing terabytes fails quickly with a clear message.
 *
 * Ownership as everywhere in the C API: the tensors stored through the out
 * parameters are new references the caller releases; on failure nothing is
 * stored (the out parameters are set to NULL) and nothing leaks.
 */
#ifndef FF_DATA_H
#define FF_DATA_H

#include "ff_tensor.h"
#include "ff_rng.h"

/*
 * IDX files (the MNIST format): bytes 0x00 0x00, a type byte, a rank byte
 * (1..8), then one big-endian uint32 size per dim, then the elements in
 * row-major order, big-endian. Types: 0x08 unsigned byte, 0x09 signed byte,
 * 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64.
 *
 * *out receives a float32 tensor of the file's shape holding the raw values
 * (0..255 for unsigned bytes; int32 values beyond 2^24 and float64 values
 * are rounded to float32). The data must be exactly as long as the header
 * says: truncated data and trailing bytes are both errors.
 * Errors (FF_ERR_IO): cannot open / not a regular file, header too short,
 * bad magic, unknown type, rank outside 1..8, a size product that overflows,
 * truncated or trailing data, corrupt gzip stream. FF_ERR_MEM when a genuine
 * (complete) file is too large to allocate.
 */
ff_status ff_idx_read(const char *path, ff_tensor **out);

/*
 * CIFAR binary batches (data_batch_N.bin, test_batch.bin, train.bin,
 * test.bin). variant 10: records of 1 label byte + 3072 pixel bytes;
 * variant 100: a coarse label byte, a fine label byte, then 3072 pixel bytes.
 * Pixels are stored as 1024 red, 1024 green, 1024 blue bytes, each a 32x32
 * row-major plane, which is exactly the layout of N x 3 x 32 x 32.
 *
 * *images: N x 3 x 32 x 32 floats in 0..255.
 * *labels: N floats, the raw 0-based label (the fine label for CIFAR-100).
 * coarse: may be NULL; otherwise receives the N coarse labels (0-based) of
 *   a CIFAR-100 file, and NULL for CIFAR-10.
 * Errors (FF_ERR_IO): variant not 10 or 100, cannot open, an empty file, a
 * size that is not a whole number of records (with a hint when it would fit
 * the other variant), a label out of range (0..9, 0..99, coarse 0..19),
 * corrupt gzip stream.
 */
ff_status ff_cifar_read(const char *path, int variant, ff_tensor **images,
                        ff_tensor **labels, ff_tensor **coarse);

/*
 * Random crop with zero padding and random horizontal flip, one random
 * choice per sample, as a data-augmentation step on a batch.
 *
 * x: rank >= 3, N x ... x H x W (the last two dims are the image; dims in
 * between, such as channels, share the sample's choice). Returns a new
 * contiguous tensor of x's shape:
 *   out[n][..][i][j] = x[n][..][i + dy][j' + dx]   (0 outside the image)
 * with j' = W-1-j when sample n is flipped, else j. For each sample, in
 * order: dy = below(2 pad + 1) - pad and dx likewise (only when pad > 0),
 * then flipped = below(2) == 1 (only when flip), where below(k) is
 * ff_rng_below(g, k). g NULL means the default generator.
 * This equals torchvision's RandomCrop(size, padding=pad) followed by
 * RandomHorizontalFlip. Errors: rank < 3, pad < 0 or > 65536.
 */
ff_tensor *ff_augment_crop_flip(const ff_tensor *x, int pad, bool flip, ff_rng *g);

#endif
