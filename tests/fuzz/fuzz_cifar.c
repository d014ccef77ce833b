/*
 * fuzz_cifar.c: ff_cifar_read (io_data.c) on arbitrary files.
 * Input: a flag byte (bit 0: gzip the rest; bit 1: CIFAR-100, else 10;
 * bit 2: ask for the coarse labels; bit 3: an invalid variant), then the
 * file's bytes. Checks: success gives N x 3 x 32 x 32 images and N labels
 * in range; failure a message and no tensors; no leaks.
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
    unsigned flags = data[0];
    int variant = flags & 8 ? (int)(flags >> 4) : flags & 2 ? 100 : 10;
    size_t live = ff_mem_live_bytes();
    const char *path = fz_write_data(data + 1, size - 1, flags & 1);
    ff_tensor *im = (ff_tensor *)1, *lab = (ff_tensor *)1, *co = (ff_tensor *)1;
    fz_clear_error();
    ff_status st = ff_cifar_read(path, variant, &im, &lab, flags & 4 ? &co : NULL);
    if (st != FF_OK) {
        if (im || lab || (flags & 4 && co))
            abort();
        fz_check_failed("ff_cifar_read");
    } else {
        int64_t n = lab->shape[0];
        if (im->ndim != 4 || im->shape[0] != n || im->shape[1] != 3 || im->shape[2] != 32 ||
            im->shape[3] != 32 || lab->ndim != 1)
            abort();
        for (int64_t i = 0; i < n; i++)
            if (ff_tensor_data(lab)[i] < 0 || ff_tensor_data(lab)[i] > (variant == 10 ? 9 : 99))
                abort();
        if (flags & 4) {
            if ((variant == 100) != (co != NULL))
                abort();
            ff_tensor_release(co);
        }
        ff_tensor_release(im);
        ff_tensor_release(lab);
    }
    fz_check_live(live, "ff_cifar_read");
    return 0;
}
