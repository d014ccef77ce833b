/*
 * fuzz_idx.c: ff_idx_read (io_data.c) on arbitrary files.
 * Input: a flag byte (bit 0: gzip the rest), then the file's bytes.
 * A success must give a tensor whose size matches the header's dims; a
 * failure a message and no tensor; nothing may leak either way.
 */
#include "fuzz_data.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    atexit(fz_cleanup);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t live = ff_mem_live_bytes();
    const char *path = fz_write_data(data + 1, size - 1, data[0] & 1);
    ff_tensor *t = (ff_tensor *)1;
    fz_clear_error();
    if (ff_idx_read(path, &t) != FF_OK) {
        if (t)
            abort();
        fz_check_failed("ff_idx_read");
    } else {
        /* The file was exactly header + data: the sizes must agree. */
        const uint8_t *h = data + 1;
        if (!(data[0] & 1) && (size - 1 < 4 || t->ndim != h[3]))
            abort();
        volatile float sink = 0;
        for (int64_t i = 0; i < ff_tensor_numel(t); i++)
            sink += ff_tensor_data(t)[i];
        (void)sink;
        ff_tensor_release(t);
    }
    fz_check_live(live, "ff_idx_read");
    return 0;
}
