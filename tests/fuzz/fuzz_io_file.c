/*
 * fuzz_io_file.c: the checkpoint (safetensors) reader of io_file.c.
 *
 * The input is the whole file. ff_io_read_header must accept it or fail
 * with a message. The JSON header is interpreted in Lua (lib/firefly/io.lua,
 * fuzzed by tests/lua/test_io_untrusted.lua); here a tiny scanner pulls out
 * every "shape":[...] and "data_offsets":[a,b] pair it can find, as a lying
 * header would give them to the Lua side, and ff_io_read_tensor is driven
 * with them. Its checks against the real file size are what stands between a
 * crafted header and an out-of-bounds read or a huge allocation. A few
 * hostile offset/shape combinations taken from the input's last bytes are
 * tried as well.
 */
#include <ctype.h>
#include "fuzz_input.h"

/* Parse up to max integers of a JSON-like list starting at s ('[').
 * Returns the count, or -1 if the text is not a list of integers. */
static int parse_list(const char *s, int64_t *out, int max)
{
    if (*s != '[')
        return -1;
    s++;
    int n = 0;
    for (;;) {
        while (isspace((unsigned char)*s))
            s++;
        if (*s == ']')
            return n;
        char *end;
        long long v = strtoll(s, &end, 10);
        if (end == s || n == max)
            return -1;
        out[n++] = v;
        s = end;
        while (isspace((unsigned char)*s))
            s++;
        if (*s == ',')
            s++;
        else if (*s != ']')
            return -1;
    }
}

static void read_one(const char *path, int64_t data_start, int64_t b, int64_t e,
                     const int64_t *shape, int ndim)
{
    ff_tensor *t = (ff_tensor *)1;
    fz_clear_error();
    ff_status st = ff_io_read_tensor(path, data_start, b, e, shape, ndim, &t);
    if (st != FF_OK) {
        if (t)
            abort(); /* the contract: *out is NULL on failure */
        fz_check_failed("ff_io_read_tensor");
        return;
    }
    /* Success means the range was really in the file: touch every float. */
    volatile float sink = 0;
    for (int64_t i = 0; i < ff_tensor_numel(t); i++)
        sink += ff_tensor_data(t)[i];
    (void)sink;
    ff_tensor_release(t);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    atexit(fz_cleanup);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t live = ff_mem_live_bytes();
    const char *path = fz_write_file(data, size);
    char *json = NULL;
    size_t len = 0;
    int64_t data_start = 0, file_size = 0;
    fz_clear_error();
    if (ff_io_read_header(path, &json, &len, &data_start, &file_size) != FF_OK) {
        if (json)
            abort(); /* outputs are unchanged on failure */
        fz_check_failed("ff_io_read_header");
        return 0;
    }
    /* The contract: the header lies inside the file and is NUL-terminated. */
    if (data_start != 8 + (int64_t)len || data_start > file_size ||
        file_size != (int64_t)size || json[len] != 0)
        abort();

    /* Every entry the header claims, as the Lua side would read it. */
    int64_t shape[FF_MAX_DIMS + 2];
    int ndim = -1, entries = 0;
    for (const char *s = json; *s && entries < 64; s++) {
        if (!strncmp(s, "\"shape\":", 8)) {
            ndim = parse_list(s + 8, shape, FF_MAX_DIMS + 2);
        } else if (!strncmp(s, "\"data_offsets\":", 15)) {
            int64_t off[2];
            if (parse_list(s + 15, off, 2) == 2 && ndim >= 0) {
                read_one(path, data_start, off[0], off[1], shape, ndim);
                entries++;
            }
        }
    }

    /* Hostile ranges: from the input's last 9 bytes (begin, length, rank). */
    if (size >= 9) {
        const uint8_t *t = data + size - 9;
        int64_t b = (int64_t)(t[0] | t[1] << 8 | t[2] << 16) - 4;
        int64_t n = (int64_t)(t[3] | t[4] << 8) % 4096;
        int64_t big[] = {n, INT64_MAX / 4, (int64_t)1 << 40, -n, 0};
        int64_t s1[1] = {big[t[5] % 5]};
        /* Wrapping sums on purpose (computed unsigned: no UB here). */
        read_one(path, data_start, b, (int64_t)((uint64_t)b + 4 * (uint64_t)s1[0]), s1, 1);
        read_one(path, data_start + (int8_t)t[6], b, b + 4 * n, &n, 1);
        int64_t s2[2] = {(int64_t)t[7] % 7, (int64_t)t[8] % 7};
        read_one(path, data_start, b, b + 4 * s2[0] * s2[1], s2, 2);
        read_one(path, data_start, INT64_MAX - 3, INT64_MAX, (int64_t[]){1}, 1);
    }
    free(json);
    fz_check_live(live, "reading a checkpoint");
    return 0;
}
