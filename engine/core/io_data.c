/*
 * io_data.c: readers of data-set files (IDX, CIFAR binary) and the batch
 * augmentation kernel (random crop with zero padding, horizontal flip).
 *
 * The readers take untrusted input. Every size read from a file is checked
 * for overflow and against the file's own length before anything large is
 * allocated: a raw file's data length is known exactly from its size, and a
 * gzip stream cannot inflate by more than deflate's maximum ratio (1032:1),
 * so a header announcing more than that is refused without allocating (the
 * stream is then counted to give the exact figure in the message).
 *
 * Data is read in 1 MiB chunks and converted to float in a tight loop per
 * chunk, so the only large buffer is the result.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>
#include "ff_data.h"

#define CHUNK ((size_t)1 << 20)     /* bytes per read; a multiple of 8 */
#define GZ_MAX_RATIO 1032           /* deflate's largest expansion */
#define GZ_SLACK ((int64_t)1 << 16)

/* ---- input files ---- */

typedef struct {
    gzFile gz;
    const char *fn;    /* reader name for messages: "idx", "cifar" */
    const char *path;
    int64_t fsize;     /* size of the file on disk */
} input;

static ff_status input_open(input *in, const char *fn, const char *path)
{
    in->gz = NULL;
    in->fn = fn;
    in->path = path;
    if (!path)
        return ff_error(FF_ERR_ARG, "%s: no file name given", fn);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return ff_error(FF_ERR_IO, "%s: %s: cannot open: %s", fn, path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return ff_error(FF_ERR_IO, "%s: %s: cannot stat: %s", fn, path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return ff_error(FF_ERR_IO, "%s: %s: %s", fn, path,
                        S_ISDIR(st.st_mode) ? "is a directory, expected a file"
                                            : "not a regular file");
    }
    in->fsize = (int64_t)st.st_size;
    in->gz = gzdopen(fd, "rb");
    if (!in->gz) {
        close(fd);
        return ff_error(FF_ERR_MEM, "%s: %s: cannot allocate the gzip reader", fn, path);
    }
    /* A large buffer: fewer read calls; gzread inflates big requests
     * straight into the caller's buffer. */
    gzbuffer(in->gz, 256 * 1024);
    return FF_OK;
}

static void input_close(input *in)
{
    if (in->gz)
        gzclose_r(in->gz);
    in->gz = NULL;
}

/* Is the file stored uncompressed? (Then its length is its data length.) */
static bool input_raw(input *in)
{
    return gzdirect(in->gz) != 0;
}

/* The gzip error of a failed or short read, or NULL when the stream simply
 * ended. */
static const char *gz_problem(input *in)
{
    int err = Z_OK;
    const char *msg = gzerror(in->gz, &err);
    if (err == Z_OK || err == Z_STREAM_END)
        return NULL;
    if (err == Z_BUF_ERROR)
        return "the .gz file is cut short";
    if (!msg || !msg[0])
        return "corrupt compressed data";
    /* zlib prefixes the file's name, "<fd:3>: " after gzdopen. */
    if (msg[0] == '<') {
        const char *colon = strstr(msg, ">: ");
        if (colon)
            msg = colon + 3;
    }
    return msg;
}

/* Read up to n bytes; returns the count read (n unless the data ended), or
 * -1 with the error set when the stream is corrupt. A short count with a
 * gzip problem is also reported as corruption (via *problem) so callers can
 * mention it. */
static int64_t input_read(input *in, void *buf, size_t n, const char **problem)
{
    size_t done = 0;
    *problem = NULL;
    while (done < n) {
        size_t want = n - done > ((size_t)1 << 30) ? ((size_t)1 << 30) : n - done;
        int r = gzread(in->gz, (char *)buf + done, (unsigned)want);
        if (r < 0) {
            const char *p = gz_problem(in);
            ff_error(FF_ERR_IO, "%s: %s: corrupt gzip data: %s", in->fn, in->path,
                     p ? p : "read error");
            return -1;
        }
        done += (size_t)r;
        if ((size_t)r < want) {
            *problem = gz_problem(in);
            break;
        }
    }
    return (int64_t)done;
}

/* Count the bytes left in the stream (no storage kept); -1 on corruption
 * (error set). Bounded by the file's length times the gzip ratio. */
static int64_t input_count_rest(input *in, const char **problem)
{
    unsigned char *buf = malloc(CHUNK);
    if (!buf) {
        ff_error(FF_ERR_MEM, "%s: %s: out of memory", in->fn, in->path);
        return -1;
    }
    int64_t total = 0;
    for (;;) {
        int64_t r = input_read(in, buf, CHUNK, problem);
        if (r < 0) {
            total = -1;
            break;
        }
        total += r;
        if ((size_t)r < CHUNK)
            break;
    }
    free(buf);
    return total;
}

/* The most data bytes the rest of the file can hold. */
static int64_t input_max_data(input *in, int64_t consumed)
{
    if (input_raw(in))
        return in->fsize - consumed;
    if (in->fsize > (INT64_MAX - GZ_SLACK) / GZ_MAX_RATIO)
        return INT64_MAX;
    return in->fsize * GZ_MAX_RATIO + GZ_SLACK;
}

/* ---- IDX ---- */

static int idx_elem_size(int type)
{
    switch (type) {
    case 0x08: case 0x09: return 1;
    case 0x0B: return 2;
    case 0x0C: case 0x0D: return 4;
    case 0x0E: return 8;
    default: return 0;
    }
}

static inline uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* n elements of type from big-endian bytes to floats. */
static void idx_convert(int type, const unsigned char *restrict s, float *restrict d, size_t n)
{
    switch (type) {
    case 0x08:
        for (size_t i = 0; i < n; i++)
            d[i] = (float)s[i];
        break;
    case 0x09:
        for (size_t i = 0; i < n; i++)
            d[i] = (float)(int8_t)s[i];
        break;
    case 0x0B:
        for (size_t i = 0; i < n; i++)
            d[i] = (float)(int16_t)(uint16_t)((unsigned)s[2 * i] << 8 | s[2 * i + 1]);
        break;
    case 0x0C:
        for (size_t i = 0; i < n; i++)
            d[i] = (float)(int32_t)be32(s + 4 * i);
        break;
    case 0x0D:
        for (size_t i = 0; i < n; i++) {
            uint32_t u = be32(s + 4 * i);
            float f;
            memcpy(&f, &u, sizeof f);
            d[i] = f;
        }
        break;
    case 0x0E:
        for (size_t i = 0; i < n; i++) {
            uint64_t u = (uint64_t)be32(s + 8 * i) << 32 | be32(s + 8 * i + 4);
            double v;
            memcpy(&v, &u, sizeof v);
            d[i] = (float)v;
        }
        break;
    }
}

static ff_status idx_truncated(input *in, const char *shape, int64_t expected, int64_t got,
                               const char *problem)
{
    return ff_error(FF_ERR_IO,
                    "idx: %s: truncated: header says %s (%lld bytes) but the data has %lld bytes%s%s%s",
                    in->path, shape, (long long)expected, (long long)got,
                    problem ? " (" : "", problem ? problem : "", problem ? ")" : "");
}

static ff_status idx_read(input *in, ff_tensor **out)
{
    unsigned char hdr[4 + 4 * FF_MAX_DIMS];
    const char *problem;
    int64_t got = input_read(in, hdr, 4, &problem);
    if (got < 0)
        return FF_ERR_IO;
    if (got < 4)
        return ff_error(FF_ERR_IO, "idx: %s: too short for an IDX header (%lld bytes%s%s)",
                        in->path, (long long)got, problem ? "; " : "", problem ? problem : "");
    if (hdr[0] != 0 || hdr[1] != 0)
        return ff_error(FF_ERR_IO,
                        "idx: %s: not an IDX file: it starts with bytes 0x%02x 0x%02x, expected "
                        "0x00 0x00",
                        in->path, hdr[0], hdr[1]);
    int type = hdr[2], ndim = hdr[3];
    int esize = idx_elem_size(type);
    if (!esize)
        return ff_error(FF_ERR_IO,
                        "idx: %s: unknown data type 0x%02x (expected 0x08 unsigned byte, 0x09 "
                        "signed byte, 0x0B int16, 0x0C int32, 0x0D float32 or 0x0E float64)",
                        in->path, type);
    if (ndim < 1 || ndim > FF_MAX_DIMS)
        return ff_error(FF_ERR_IO, "idx: %s: the header gives %d dims, expected 1..%d",
                        in->path, ndim, FF_MAX_DIMS);
    int64_t hlen = 4 + 4 * (int64_t)ndim;
    got = input_read(in, hdr + 4, (size_t)(4 * ndim), &problem);
    if (got < 0)
        return FF_ERR_IO;
    if (got < 4 * ndim)
        return ff_error(FF_ERR_IO,
                        "idx: %s: truncated header: %d dims need %lld header bytes, the file has %lld%s%s",
                        in->path, ndim, (long long)hlen, (long long)(4 + got),
                        problem ? "; " : "", problem ? problem : "");

    int64_t shape[FF_MAX_DIMS];
    int64_t numel = 1;
    bool overflow = false;
    for (int i = 0; i < ndim; i++) {
        shape[i] = (int64_t)be32(hdr + 4 + 4 * i);
        if (!overflow && __builtin_mul_overflow(numel, shape[i], &numel))
            overflow = true;
    }
    char sh[FF_SHAPE_STRLEN];
    ff_shape_str(shape, ndim, sh, sizeof sh);
    int64_t nbytes;
    if (overflow || __builtin_mul_overflow(numel, (int64_t)esize, &nbytes) ||
        numel > INT64_MAX / 8)
        return ff_error(FF_ERR_IO, "idx: %s: the header's sizes %s overflow (too many elements)",
                        in->path, sh);

    /* Before allocating: can the file hold that much at all? */
    if (nbytes > input_max_data(in, hlen)) {
        int64_t have = input_count_rest(in, &problem);
        if (have < 0)
            return FF_ERR_IO;
        return idx_truncated(in, sh, nbytes, have, problem);
    }

    ff_tensor *t = ff_tensor_empty(shape, ndim);
    if (!t)
        return ff_error(ff_last_status(), "idx: %s: cannot allocate a tensor of shape %s: %s",
                        in->path, sh, ff_last_error());
    unsigned char *buf = malloc(CHUNK);
    if (!buf) {
        ff_tensor_release(t);
        return ff_error(FF_ERR_MEM, "idx: %s: out of memory", in->path);
    }
    float *dst = ff_tensor_data(t);
    int64_t done = 0;
    ff_status st = FF_OK;
    while (done < nbytes) {
        size_t want = nbytes - done < (int64_t)CHUNK ? (size_t)(nbytes - done) : CHUNK;
        int64_t r = input_read(in, buf, want, &problem);
        if (r < 0) {
            st = FF_ERR_IO;
            break;
        }
        idx_convert(type, buf, dst + done / esize, (size_t)r / (size_t)esize);
        done += r;
        if ((size_t)r < want) {
            st = idx_truncated(in, sh, nbytes, done, problem);
            break;
        }
    }
    if (st == FF_OK) {
        /* The data must end exactly here. */
        int64_t extra = input_count_rest(in, &problem);
        if (extra < 0)
            st = FF_ERR_IO;
        else if (problem)
            st = ff_error(FF_ERR_IO, "idx: %s: corrupt gzip data after the %lld data bytes: %s",
                          in->path, (long long)nbytes, problem);
        else if (extra > 0)
            st = ff_error(FF_ERR_IO,
                          "idx: %s: trailing data: header says %s (%lld bytes) but the data has "
                          "%lld bytes (%lld too many)",
                          in->path, sh, (long long)nbytes, (long long)(nbytes + extra),
                          (long long)extra);
    }
    free(buf);
    if (st != FF_OK) {
        ff_tensor_release(t);
        return st;
    }
    *out = t;
    return FF_OK;
}

ff_status ff_idx_read(const char *path, ff_tensor **out)
{
    if (!out)
        return ff_error(FF_ERR_ARG, "idx: no output tensor given");
    *out = NULL;
    input in;
    ff_status st = input_open(&in, "idx", path);
    if (st != FF_OK)
        return st;
    st = idx_read(&in, out);
    input_close(&in);
    return st;
}

/* ---- CIFAR ---- */

#define CIFAR_PIXELS 3072

static ff_status cifar_read(input *in, int variant, ff_tensor **images, ff_tensor **labels,
                            ff_tensor **coarse)
{
    int nlab = variant == 10 ? 1 : 2;
    int64_t rec = nlab + CIFAR_PIXELS;
    const char *problem = NULL;
    int64_t size;
    if (input_raw(in)) {
        size = in->fsize;
    } else {
        /* Compressed: count once, then read again from the start. */
        size = input_count_rest(in, &problem);
        if (size < 0)
            return FF_ERR_IO;
        if (problem)
            return ff_error(FF_ERR_IO, "cifar: %s: corrupt gzip data: %s", in->path, problem);
        if (gzrewind(in->gz) != 0)
            return ff_error(FF_ERR_IO, "cifar: %s: cannot rewind the gzip stream", in->path);
    }
    if (size == 0)
        return ff_error(FF_ERR_IO, "cifar: %s: empty file", in->path);
    if (size % rec != 0) {
        int64_t other = variant == 10 ? rec + 1 : rec - 1;
        bool fits_other = size % other == 0;
        return ff_error(FF_ERR_IO,
                        "cifar: %s: size %lld bytes is not a whole number of CIFAR-%d records "
                        "(%lld bytes: %s + 3072 pixel bytes); %lld records and %lld bytes left "
                        "over%s",
                        in->path, (long long)size, variant, (long long)rec,
                        variant == 10 ? "1 label byte" : "coarse and fine label bytes",
                        (long long)(size / rec), (long long)(size % rec),
                        fits_other ? (variant == 10 ? " (it fits CIFAR-100 records: variant 100?)"
                                                    : " (it fits CIFAR-10 records: variant 10?)")
                                   : "");
    }
    int64_t n = size / rec;
    int64_t ishape[4] = {n, 3, 32, 32};
    ff_tensor *im = ff_tensor_empty(ishape, 4);
    ff_tensor *lab = im ? ff_tensor_empty(&n, 1) : NULL;
    ff_tensor *co = lab && coarse && variant == 100 ? ff_tensor_empty(&n, 1) : NULL;
    int64_t per = (int64_t)(CHUNK / (size_t)rec); /* records per chunk */
    unsigned char *buf = lab ? malloc((size_t)(per * rec)) : NULL;
    ff_status st = FF_OK;
    if (!buf || (coarse && variant == 100 && !co)) {
        st = ff_error(FF_ERR_MEM, "cifar: %s: cannot allocate %lld images", in->path,
                      (long long)n);
        goto done;
    }
    float *px = ff_tensor_data(im), *lb = ff_tensor_data(lab), *cl = co ? ff_tensor_data(co) : NULL;
    int fine_max = variant == 10 ? 9 : 99;
    for (int64_t r0 = 0; r0 < n; r0 += per) {
        int64_t k = n - r0 < per ? n - r0 : per;
        int64_t got = input_read(in, buf, (size_t)(k * rec), &problem);
        if (got < 0) {
            st = FF_ERR_IO;
            goto done;
        }
        if (got < k * rec) {
            st = ff_error(FF_ERR_IO, "cifar: %s: truncated while reading: expected %lld bytes, got %lld%s%s",
                          in->path, (long long)size, (long long)(r0 * rec + got),
                          problem ? "; " : "", problem ? problem : "");
            goto done;
        }
        for (int64_t i = 0; i < k; i++) {
            const unsigned char *p = buf + i * rec;
            int c = variant == 100 ? p[0] : 0, f = p[nlab - 1];
            if (f > fine_max || c > 19) {
                st = ff_error(FF_ERR_IO,
                              "cifar: %s: record %lld has %s label %d, expected 0..%d (is it a "
                              "CIFAR-%d file?)",
                              in->path, (long long)(r0 + i + 1), c > 19 ? "coarse" : "a",
                              c > 19 ? c : f, c > 19 ? 19 : fine_max,
                              variant == 10 ? 100 : 10);
                goto done;
            }
            lb[r0 + i] = (float)f;
            if (cl)
                cl[r0 + i] = (float)c;
            const unsigned char *s = p + nlab;
            float *d = px + (r0 + i) * CIFAR_PIXELS;
            for (int j = 0; j < CIFAR_PIXELS; j++)
                d[j] = (float)s[j];
        }
    }
    /* The file may have grown since it was measured. */
    {
        unsigned char one;
        int64_t extra = input_read(in, &one, 1, &problem);
        if (extra != 0 || problem)
            st = ff_error(FF_ERR_IO, "cifar: %s: %s after %lld records", in->path,
                          extra < 0 || problem ? "corrupt data" : "unexpected data",
                          (long long)n);
    }
done:
    free(buf);
    if (st != FF_OK) {
        ff_tensor_release(im);
        ff_tensor_release(lab);
        ff_tensor_release(co);
        return st;
    }
    *images = im;
    *labels = lab;
    if (coarse)
        *coarse = co;
    return FF_OK;
}

ff_status ff_cifar_read(const char *path, int variant, ff_tensor **images,
                        ff_tensor **labels, ff_tensor **coarse)
{
    if (!images || !labels)
        return ff_error(FF_ERR_ARG, "cifar: no output tensors given");
    *images = *labels = NULL;
    if (coarse)
        *coarse = NULL;
    if (variant != 10 && variant != 100)
        return ff_error(FF_ERR_ARG, "cifar: variant must be 10 or 100, got %d", variant);
    input in;
    ff_status st = input_open(&in, "cifar", path);
    if (st != FF_OK)
        return st;
    st = cifar_read(&in, variant, images, labels, coarse);
    input_close(&in);
    return st;
}

/* ---- augmentation ---- */

#define AUG_MAX_PAD 65536

ff_tensor *ff_augment_crop_flip(const ff_tensor *x, int pad, bool flip, ff_rng *g)
{
    if (x->ndim < 3) {
        char s[FF_SHAPE_STRLEN];
        ff_error(FF_ERR_SHAPE,
                 "random_crop_flip: expected images N x C x H x W (rank >= 3), got shape %s",
                 ff_shape_str(x->shape, x->ndim, s, sizeof s));
        return NULL;
    }
    if (pad < 0 || pad > AUG_MAX_PAD) {
        ff_error(FF_ERR_ARG, "random_crop_flip: padding %d out of range 0..%d", pad, AUG_MAX_PAD);
        return NULL;
    }
    if (!g)
        g = ff_rng_default();
    ff_tensor *src = ff_tensor_contiguous((ff_tensor *)x);
    if (!src)
        return NULL;
    ff_tensor *out = ff_tensor_empty(x->shape, x->ndim);
    if (!out) {
        ff_tensor_release(src);
        return NULL;
    }
    int64_t n = x->shape[0], h = x->shape[x->ndim - 2], w = x->shape[x->ndim - 1];
    int64_t planes = 1;
    for (int i = 1; i < x->ndim - 2; i++)
        planes *= x->shape[i];
    int64_t hw = h * w;
    const float *sp = ff_tensor_data(src);
    float *dp = ff_tensor_data(out);
    for (int64_t s = 0; s < n; s++) {
        int64_t dy = 0, dx = 0;
        if (pad > 0) {
            dy = (int64_t)ff_rng_below(g, (uint64_t)(2 * pad + 1)) - pad;
            dx = (int64_t)ff_rng_below(g, (uint64_t)(2 * pad + 1)) - pad;
        }
        bool f = flip && ff_rng_below(g, 2) == 1;
        /* Output columns j whose source column lies inside the image:
         * unflipped, sj = j + dx; flipped, sj = w-1-j + dx. */
        int64_t j0, j1; /* valid j in [j0, j1) */
        if (!f) {
            j0 = dx < 0 ? -dx : 0;
            j1 = dx > 0 ? w - dx : w;
        } else {
            j0 = dx > 0 ? dx : 0;
            j1 = dx < 0 ? w + dx : w;
        }
        for (int64_t p = 0; p < planes; p++) {
            const float *sbase = sp + (s * planes + p) * hw;
            float *dbase = dp + (s * planes + p) * hw;
            for (int64_t i = 0; i < h; i++) {
                float *drow = dbase + i * w;
                int64_t si = i + dy;
                if (si < 0 || si >= h || j1 <= j0) {
                    memset(drow, 0, sizeof(float) * (size_t)w);
                    continue;
                }
                const float *srow = sbase + si * w;
                for (int64_t j = 0; j < j0; j++)
                    drow[j] = 0.0f;
                if (!f) {
                    memcpy(drow + j0, srow + j0 + dx, sizeof(float) * (size_t)(j1 - j0));
                } else {
                    for (int64_t j = j0; j < j1; j++)
                        drow[j] = srow[w - 1 + dx - j];
                }
                for (int64_t j = j1; j < w; j++)
                    drow[j] = 0.0f;
            }
        }
    }
    ff_tensor_release(src);
    return out;
}
