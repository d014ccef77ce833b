/*
 * io_file.c: the byte layer of safetensors checkpoints (see ff_io.h).
 *
 * Writing is atomic: a temporary file beside the target, synced, renamed
 * over it, then the directory synced, so a crash or a full disk at any
 * moment leaves either the old file or the new one, never a torn mix.
 *
 * Reading trusts nothing in the file: every length and offset is checked
 * against the real file size (fstat) before it sizes an allocation or a
 * read, because checkpoints are downloaded and shared, and a truncated or
 * crafted file must be an error, not a crash or a 100 GB malloc.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "ff_io.h"

/* The format is little-endian; on a big-endian host the floats are swapped
 * through a bounce buffer (chosen at compile time, so the little-endian path
 * writes straight from tensor memory). */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define FF_IO_SWAP 1
#else
#define FF_IO_SWAP 0
#endif

_Static_assert(sizeof(float) == 4, "safetensors F32 needs 4-byte floats");

#define CHUNK ((size_t)1 << 20) /* bytes per write/read call on big-endian hosts */

/* ---- small helpers ---- */

/* write(2) until done, retrying short writes and EINTR. */
static int write_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n > 0) {
        size_t step = n > ((size_t)1 << 30) ? ((size_t)1 << 30) : n;
        ssize_t w = write(fd, p, step);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (w == 0) {
            errno = EIO;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* pread(2) until done; a short file gives errno = 0 and -1. */
static int pread_all(int fd, void *buf, size_t n, off_t off)
{
    char *p = buf;
    while (n > 0) {
        size_t step = n > ((size_t)1 << 30) ? ((size_t)1 << 30) : n;
        ssize_t r = pread(fd, p, step, off);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (r == 0) {
            errno = 0; /* end of file: the caller reports truncation */
            return -1;
        }
        p += r;
        off += r;
        n -= (size_t)r;
    }
    return 0;
}

#if FF_IO_SWAP
static void swap32(unsigned char *b, size_t nfloats)
{
    for (size_t i = 0; i < nfloats; i++, b += 4) {
        unsigned char t0 = b[0], t1 = b[1];
        b[0] = b[3], b[1] = b[2], b[2] = t1, b[3] = t0;
    }
}
#endif

/* Write the numel floats at data (contiguous) as little-endian. */
static int write_floats(int fd, const float *data, int64_t numel)
{
#if FF_IO_SWAP
    unsigned char *buf = malloc(CHUNK);
    if (!buf)
        return errno = ENOMEM, -1;
    size_t per = CHUNK / 4;
    for (int64_t i = 0; i < numel; i += (int64_t)per) {
        size_t k = (size_t)(numel - i) < per ? (size_t)(numel - i) : per;
        memcpy(buf, data + i, k * 4);
        swap32(buf, k);
        if (write_all(fd, buf, k * 4) != 0) {
            int e = errno;
            free(buf);
            return errno = e, -1;
        }
    }
    free(buf);
    return 0;
#else
    return write_all(fd, data, (size_t)numel * sizeof(float));
#endif
}

/* The directory part of path ("." when there is none), malloc'ed. */
static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return strdup(".");
    size_t n = slash == path ? 1 : (size_t)(slash - path);
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, path, n);
        d[n] = 0;
    }
    return d;
}

/* ---- writing ---- */

ff_status ff_io_write_atomic(const char *path, const char *header, size_t header_len,
                             ff_tensor *const *tensors, int n)
{
    if (!path || !*path)
        return ff_error(FF_ERR_ARG, "save: the path is empty");
    if (!header && header_len > 0)
        return ff_error(FF_ERR_ARG, "save: no header");
    if (header_len > FF_IO_MAX_HEADER)
        return ff_error(FF_ERR_ARG, "save: header of %zu bytes exceeds the limit of %zu bytes",
                        header_len, FF_IO_MAX_HEADER);
    if (n < 0 || (n > 0 && !tensors))
        return ff_error(FF_ERR_ARG, "save: bad tensor list");
    for (int i = 0; i < n; i++)
        if (!tensors[i])
            return ff_error(FF_ERR_ARG, "save: tensor %d of the list is missing", i + 1);

    size_t plen = strlen(path);
    char *tmp = malloc(plen + 32);
    if (!tmp)
        return ff_error(FF_ERR_MEM, "save: out of memory");
    snprintf(tmp, plen + 32, "%s.tmp.%ld", path, (long)getpid());

    /* A stale temporary of a crashed process with our pid would make
     * O_EXCL fail; it is ours by name, so remove it. O_EXCL itself keeps
     * us from writing through a symlink planted under that name. */
    unlink(tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0) {
        ff_status st = ff_error(FF_ERR_IO, "save: cannot create '%s': %s", tmp, strerror(errno));
        free(tmp);
        return st;
    }
    /* Replacing a file keeps its permissions (umask applies to new ones). */
    struct stat old;
    if (stat(path, &old) == 0 && S_ISREG(old.st_mode))
        (void)fchmod(fd, old.st_mode & 07777);

    const char *what = "write";
    int err = 0;
    size_t padded = (header_len + 7) / 8 * 8;
    unsigned char len8[8];
    for (int b = 0; b < 8; b++)
        len8[b] = (unsigned char)((uint64_t)padded >> (8 * b));
    static const char spaces[8] = "        ";
    int failed = write_all(fd, len8, 8) || write_all(fd, header, header_len) ||
                 write_all(fd, spaces, padded - header_len);
    if (failed)
        err = errno;

    for (int i = 0; i < n && !failed; i++) {
        ff_tensor *c = ff_tensor_contiguous(tensors[i]);
        if (!c) { /* out of memory for the copy: the core's message says so */
            char msg[400];
            snprintf(msg, sizeof msg, "%s", ff_last_error());
            close(fd);
            unlink(tmp);
            free(tmp);
            return ff_error(FF_ERR_MEM, "save: cannot write '%s': %s", path, msg);
        }
        if (write_floats(fd, ff_tensor_data(c), ff_tensor_numel(c)) != 0) {
            failed = 1;
            err = errno;
        }
        ff_tensor_release(c);
    }
    if (!failed && fsync(fd) != 0) {
        failed = 1;
        err = errno;
        what = "sync";
    }
    if (close(fd) != 0 && !failed) { /* NFS may report write errors only here */
        failed = 1;
        err = errno;
        what = "close";
    }
    if (failed) {
        unlink(tmp);
        ff_status st = ff_error(FF_ERR_IO, "save: cannot %s '%s': %s", what, tmp, strerror(err));
        free(tmp);
        return st;
    }
    if (rename(tmp, path) != 0) {
        err = errno;
        unlink(tmp);
        ff_status st = ff_error(FF_ERR_IO, "save: cannot rename '%s' to '%s': %s", tmp, path,
                                strerror(err));
        free(tmp);
        return st;
    }
    free(tmp);

    /* The rename is durable only once the directory entry is on disk. Some
     * file systems cannot sync a directory (EINVAL): nothing to do there. */
    char *dir = dir_of(path);
    if (!dir)
        return ff_error(FF_ERR_MEM, "save: out of memory");
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ff_status st = FF_OK;
    if (dfd >= 0) {
        if (fsync(dfd) != 0 && errno != EINVAL && errno != ENOTSUP)
            st = ff_error(FF_ERR_IO, "save: wrote '%s' but cannot sync its directory '%s': %s",
                          path, dir, strerror(errno));
        close(dfd);
    }
    free(dir);
    return st;
}

/* ---- reading ---- */

static int open_sized(const char *path, int64_t *size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        ff_error(FF_ERR_IO, "load: cannot open '%s': %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        ff_error(FF_ERR_IO, "load: cannot stat '%s': %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        ff_error(FF_ERR_IO, "load: '%s' is not a regular file", path);
        close(fd);
        return -1;
    }
    *size = (int64_t)st.st_size;
    return fd;
}

static ff_status read_error(const char *path, const char *what)
{
    if (errno == 0)
        return ff_error(FF_ERR_IO, "load: '%s' is truncated (end of file inside the %s)", path,
                        what);
    return ff_error(FF_ERR_IO, "load: cannot read the %s of '%s': %s", what, path,
                    strerror(errno));
}

ff_status ff_io_read_header(const char *path, char **json, size_t *len, int64_t *data_start,
                            int64_t *file_size)
{
    if (!path || !*path)
        return ff_error(FF_ERR_ARG, "load: the path is empty");
    int64_t size;
    int fd = open_sized(path, &size);
    if (fd < 0)
        return ff_last_status();
    if (size < 8) {
        close(fd);
        return ff_error(FF_ERR_IO,
                        "load: '%s' is not a safetensors file: %lld bytes, shorter than the "
                        "8-byte header length",
                        path, (long long)size);
    }
    unsigned char len8[8];
    if (pread_all(fd, len8, 8, 0) != 0) {
        ff_status st = read_error(path, "header length");
        close(fd);
        return st;
    }
    uint64_t n = 0;
    for (int b = 0; b < 8; b++)
        n |= (uint64_t)len8[b] << (8 * b);
    /* Both caps come before the allocation they guard. */
    if (n > FF_IO_MAX_HEADER) {
        close(fd);
        return ff_error(FF_ERR_IO,
                        "load: '%s' is corrupt or not a safetensors file: header length %llu "
                        "exceeds the limit of %zu bytes",
                        path, (unsigned long long)n, FF_IO_MAX_HEADER);
    }
    if (n > (uint64_t)(size - 8)) {
        close(fd);
        return ff_error(FF_ERR_IO,
                        "load: '%s' is truncated or corrupt: header length %llu but only %lld "
                        "bytes follow",
                        path, (unsigned long long)n, (long long)(size - 8));
    }
    if (n < 2) {
        close(fd);
        return ff_error(FF_ERR_IO, "load: '%s' is corrupt: header length %llu is too small",
                        path, (unsigned long long)n);
    }
    char *buf = malloc((size_t)n + 1);
    if (!buf) {
        close(fd);
        return ff_error(FF_ERR_MEM, "load: out of memory reading the header of '%s'", path);
    }
    if (pread_all(fd, buf, (size_t)n, 8) != 0) {
        ff_status st = read_error(path, "header");
        free(buf);
        close(fd);
        return st;
    }
    close(fd);
    buf[n] = 0;
    *json = buf;
    *len = (size_t)n;
    *data_start = 8 + (int64_t)n;
    *file_size = size;
    return FF_OK;
}

ff_status ff_io_read_tensor(const char *path, int64_t data_start, int64_t begin, int64_t end,
                            const int64_t *shape, int ndim, ff_tensor **out)
{
    *out = NULL;
    if (!path || !*path)
        return ff_error(FF_ERR_ARG, "load: the path is empty");
    if (ndim < 0 || ndim > FF_MAX_DIMS || (ndim > 0 && !shape))
        return ff_error(FF_ERR_ARG, "load: a tensor has at most %d dims, got %d", FF_MAX_DIMS,
                        ndim);
    if (ff_shape_check("load", shape, ndim) != FF_OK)
        return ff_last_status();
    int64_t numel = 1;
    for (int i = 0; i < ndim; i++)
        numel *= shape[i];
    char sbuf[FF_SHAPE_STRLEN];
    if (data_start < 8 || begin < 0 || end < begin)
        return ff_error(FF_ERR_IO, "load: '%s': bad data range [%lld, %lld) at data start %lld",
                        path, (long long)begin, (long long)end, (long long)data_start);
    /* numel passed ff_shape_check, so 4 * numel does not overflow. */
    if (end - begin != 4 * numel)
        return ff_error(FF_ERR_IO,
                        "load: '%s' is corrupt: data_offsets [%lld, %lld) hold %lld bytes, but "
                        "shape %s of F32 needs %lld",
                        path, (long long)begin, (long long)end, (long long)(end - begin),
                        ff_shape_str(shape, ndim, sbuf, sizeof sbuf), (long long)(4 * numel));
    int64_t size;
    int fd = open_sized(path, &size);
    if (fd < 0)
        return ff_last_status();
    if (data_start > size || end > size - data_start) {
        close(fd);
        return ff_error(FF_ERR_IO,
                        "load: '%s' is truncated or corrupt: data_offsets [%lld, %lld) lie "
                        "beyond the %lld bytes of data in the file",
                        path, (long long)begin, (long long)end,
                        (long long)(size > data_start ? size - data_start : 0));
    }
    ff_tensor *t = ff_tensor_empty(shape, ndim);
    if (!t) {
        close(fd);
        return ff_last_status();
    }
    if (numel > 0 &&
        pread_all(fd, ff_tensor_data(t), (size_t)numel * 4, (off_t)(data_start + begin)) != 0) {
        ff_status st = read_error(path, "tensor data");
        ff_tensor_release(t);
        close(fd);
        return st;
    }
    close(fd);
#if FF_IO_SWAP
    swap32((unsigned char *)ff_tensor_data(t), (size_t)numel);
#endif
    *out = t;
    return FF_OK;
}
