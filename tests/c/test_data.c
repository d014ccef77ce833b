/* test_data.c: IDX and CIFAR readers and the crop/flip kernel, through the
 * C API (the Lua suite tests/lua/test_data.lua covers the rest). */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>
#include "harness.h"

/* Write bytes to a fresh temporary file (gzipped when gz); the path goes in
 * buf. Returns 0 on success. */
static int write_tmp(char *buf, size_t len, const void *bytes, size_t n, int gz)
{
    snprintf(buf, len, "/tmp/ff_test_data_XXXXXX");
    int fd = mkstemp(buf);
    if (fd < 0)
        return -1;
    if (!gz) {
        ssize_t w = write(fd, bytes, n);
        close(fd);
        return w == (ssize_t)n ? 0 : -1;
    }
    close(fd);
    gzFile f = gzopen(buf, "wb");
    if (!f)
        return -1;
    int w = n ? gzwrite(f, bytes, (unsigned)n) : 0;
    gzclose(f);
    return w == (int)n ? 0 : -1;
}

/* An IDX file of unsigned bytes: shape (rank nd) then data. */
static size_t idx_u8(unsigned char *out, const uint32_t *shape, int nd, const unsigned char *d,
                     size_t n)
{
    size_t k = 0;
    out[k++] = 0;
    out[k++] = 0;
    out[k++] = 0x08;
    out[k++] = (unsigned char)nd;
    for (int i = 0; i < nd; i++) {
        out[k++] = (unsigned char)(shape[i] >> 24);
        out[k++] = (unsigned char)(shape[i] >> 16);
        out[k++] = (unsigned char)(shape[i] >> 8);
        out[k++] = (unsigned char)shape[i];
    }
    memcpy(out + k, d, n);
    return k + n;
}

TEST(data_idx_roundtrip_raw_and_gzip)
{
    unsigned char d[24], file[64];
    for (int i = 0; i < 24; i++)
        d[i] = (unsigned char)(i * 11);
    uint32_t shape[3] = {2, 3, 4};
    size_t n = idx_u8(file, shape, 3, d, sizeof d);
    for (int gz = 0; gz <= 1; gz++) {
        char path[64];
        REQUIRE(write_tmp(path, sizeof path, file, n, gz) == 0);
        ff_tensor *t = NULL;
        CHECK(ff_idx_read(path, &t) == FF_OK);
        unlink(path);
        REQUIRE(t);
        CHECK(t->ndim == 3 && t->shape[0] == 2 && t->shape[1] == 3 && t->shape[2] == 4);
        const float *v = ff_tensor_data(t);
        for (int i = 0; i < 24; i++)
            CHECK(v[i] == (float)d[i]);
        ff_tensor_release(t);
    }
}

TEST(data_idx_errors_leave_nothing)
{
    unsigned char d[24] = {0}, file[64];
    uint32_t shape[3] = {2, 3, 4};
    size_t n = idx_u8(file, shape, 3, d, sizeof d);
    char path[64];
    ff_tensor *t = (ff_tensor *)1;

    REQUIRE(write_tmp(path, sizeof path, file, n - 14, 0) == 0);
    CHECK(ff_idx_read(path, &t) == FF_ERR_IO);
    CHECK(t == NULL);
    CHECK(strstr(ff_last_error(), "truncated: header says 2x3x4 (24 bytes) but the data has 10 bytes"));
    CHECK(strstr(ff_last_error(), path));
    unlink(path);

    unsigned char longer[80];
    memcpy(longer, file, n);
    memset(longer + n, 7, 5);
    REQUIRE(write_tmp(path, sizeof path, longer, n + 5, 1) == 0);
    CHECK(ff_idx_read(path, &t) == FF_ERR_IO);
    CHECK(strstr(ff_last_error(), "trailing data") && strstr(ff_last_error(), "(5 too many)"));
    unlink(path);

    file[1] = 3;
    REQUIRE(write_tmp(path, sizeof path, file, n, 0) == 0);
    CHECK(ff_idx_read(path, &t) == FF_ERR_IO);
    CHECK(strstr(ff_last_error(), "not an IDX file"));
    unlink(path);

    uint32_t huge[8] = {0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu, 1, 1, 1, 1};
    n = idx_u8(file, huge, 8, d, 4);
    REQUIRE(write_tmp(path, sizeof path, file, n, 0) == 0);
    CHECK(ff_idx_read(path, &t) == FF_ERR_IO);
    CHECK(strstr(ff_last_error(), "overflow"));
    unlink(path);

    CHECK(ff_idx_read("/nonexistent/x.idx", &t) == FF_ERR_IO);
    CHECK(strstr(ff_last_error(), "idx: /nonexistent/x.idx: cannot open"));
    CHECK(ff_idx_read(path, NULL) == FF_ERR_ARG);
}

static size_t cifar_file(unsigned char *out, int variant, int nrec)
{
    int rec = variant == 10 ? 3073 : 3074;
    for (int r = 0; r < nrec; r++) {
        unsigned char *p = out + (size_t)r * rec;
        if (variant == 100) {
            p[0] = (unsigned char)(r + 1);  /* coarse */
            p[1] = (unsigned char)(50 + r); /* fine */
        } else {
            p[0] = (unsigned char)(9 - r);
        }
        for (int j = 0; j < 3072; j++)
            p[rec - 3072 + j] = (unsigned char)(j + 3 * r);
    }
    return (size_t)nrec * rec;
}

TEST(data_cifar_both_variants)
{
    static unsigned char file[3 * 3074 + 1];
    for (int variant = 10; variant <= 100; variant += 90) {
        size_t n = cifar_file(file, variant, 3);
        char path[64];
        REQUIRE(write_tmp(path, sizeof path, file, n, variant == 100) == 0);
        ff_tensor *im = NULL, *lab = NULL, *co = NULL;
        CHECK(ff_cifar_read(path, variant, &im, &lab, &co) == FF_OK);
        REQUIRE(im && lab);
        CHECK(im->ndim == 4 && im->shape[0] == 3 && im->shape[1] == 3 && im->shape[3] == 32);
        const float *px = ff_tensor_data(im), *l = ff_tensor_data(lab);
        CHECK(px[3072 + 1023] == (float)((1023 + 3) % 256));
        if (variant == 10) {
            CHECK(co == NULL);
            CHECK(l[0] == 9 && l[2] == 7);
        } else {
            REQUIRE(co);
            CHECK(l[1] == 51 && ff_tensor_data(co)[2] == 3);
        }
        ff_tensor_release(im);
        ff_tensor_release(lab);
        ff_tensor_release(co);
        /* without the coarse output */
        CHECK(ff_cifar_read(path, variant, &im, &lab, NULL) == FF_OK);
        ff_tensor_release(im);
        ff_tensor_release(lab);
        unlink(path);
    }
}

TEST(data_cifar_bad_size_and_labels)
{
    static unsigned char file[3 * 3074 + 1];
    size_t n = cifar_file(file, 10, 3);
    char path[64];
    REQUIRE(write_tmp(path, sizeof path, file, n + 1, 0) == 0);
    ff_tensor *im = (ff_tensor *)1, *lab = (ff_tensor *)1;
    CHECK(ff_cifar_read(path, 10, &im, &lab, NULL) == FF_ERR_IO);
    CHECK(im == NULL && lab == NULL);
    CHECK(strstr(ff_last_error(), "not a whole number of CIFAR-10 records"));
    unlink(path);
    file[3073] = 10; /* second record's label */
    REQUIRE(write_tmp(path, sizeof path, file, n, 0) == 0);
    CHECK(ff_cifar_read(path, 10, &im, &lab, NULL) == FF_ERR_IO);
    CHECK(strstr(ff_last_error(), "record 2 has a label 10, expected 0..9"));
    CHECK(ff_cifar_read(path, 20, &im, &lab, NULL) == FF_ERR_ARG);
    unlink(path);
}

TEST(data_augment_crop_flip)
{
    int64_t shape[4] = {1, 1, 2, 3};
    float v[6] = {1, 2, 3, 4, 5, 6};
    ff_tensor *x = ff_tensor_from_data(v, shape, 4);
    REQUIRE(x);
    ff_rng g;
    ff_rng_seed(&g, 1);
    ff_tensor *same = ff_augment_crop_flip(x, 0, false, &g);
    REQUIRE(same);
    CHECK(memcmp(ff_tensor_data(same), v, sizeof v) == 0);
    ff_tensor_release(same);

    /* Find a seed whose single draw flips, and check the mirror image. */
    for (uint64_t seed = 0; seed < 64; seed++) {
        ff_rng_seed(&g, seed);
        if (ff_rng_below(&g, 2) != 1)
            continue;
        ff_rng_seed(&g, seed);
        ff_tensor *f = ff_augment_crop_flip(x, 0, true, &g);
        REQUIRE(f);
        const float *o = ff_tensor_data(f);
        CHECK(o[0] == 3 && o[1] == 2 && o[2] == 1 && o[3] == 6 && o[5] == 4);
        ff_tensor_release(f);
        break;
    }
    /* A pad larger than the image leaves only zeros or the image's values. */
    ff_tensor *p = ff_augment_crop_flip(x, 100, true, &g);
    REQUIRE(p);
    for (int i = 0; i < 6; i++)
        CHECK(ff_tensor_data(p)[i] >= 0 && ff_tensor_data(p)[i] <= 6);
    ff_tensor_release(p);

    int64_t s2[2] = {2, 3};
    ff_tensor *flat = ff_tensor_zeros(s2, 2);
    CHECK(ff_augment_crop_flip(flat, 1, true, &g) == NULL);
    CHECK(strstr(ff_last_error(), "rank >= 3"));
    CHECK(ff_augment_crop_flip(x, -1, true, &g) == NULL);
    ff_tensor_release(flat);
    ff_tensor_release(x);
}
