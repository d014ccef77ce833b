/* test_io.c: the safetensors byte layer: atomic writes (including failures
 * half-way, which must leave the old file and no temporary behind) and
 * size-checked reads. The format-level checks are in tests/lua/test_io.lua. */
#include <dirent.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include "harness.h"

static char dir[64];

static void make_dir(void)
{
    snprintf(dir, sizeof dir, "/tmp/ff_test_io_XXXXXX");
    if (!mkdtemp(dir))
        dir[0] = 0;
}

/* Number of entries in dir (besides . and ..). */
static int dir_entries(void)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            n++;
    closedir(d);
    return n;
}

static void remove_dir(void)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    char p[512];
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            if (rmdir(p) != 0)
                unlink(p);
        }
    closedir(d);
    rmdir(dir);
}

static void write_bytes(const char *path, const void *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (f) {
        fwrite(b, 1, n, f);
        fclose(f);
    }
}

static long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

static ff_tensor *range_tensor(int64_t r, int64_t c)
{
    int64_t s[2] = {r, c};
    ff_tensor *t = ff_tensor_empty(s, 2);
    for (int64_t i = 0; i < r * c; i++)
        ff_tensor_data(t)[i] = (float)i + 0.5f;
    return t;
}

TEST(io_write_read_round_trip)
{
    make_dir();
    REQUIRE(dir[0]);
    char path[128];
    snprintf(path, sizeof path, "%s/a.safetensors", dir);
    ff_tensor *a = range_tensor(2, 3);
    ff_tensor *at = ff_tensor_transpose(a, 0, 1); /* non-contiguous: copied */
    const char *h = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
                    "\"b\":{\"dtype\":\"F32\",\"shape\":[3,2],\"data_offsets\":[24,48]}}";
    ff_tensor *ts[2] = {a, at};
    CHECK(ff_io_write_atomic(path, h, strlen(h), ts, 2) == FF_OK);
    char *json = NULL;
    size_t len = 0;
    int64_t start = 0, size = 0;
    REQUIRE(ff_io_read_header(path, &json, &len, &start, &size) == FF_OK);
    CHECK(len % 8 == 0 && len >= strlen(h) && len < strlen(h) + 8);
    CHECK(memcmp(json, h, strlen(h)) == 0);
    for (size_t i = strlen(h); i < len; i++)
        CHECK(json[i] == ' ');
    CHECK(start == 8 + (int64_t)len && size == start + 48 && size == file_size(path));
    free(json);
    int64_t s2[2] = {3, 2};
    ff_tensor *b = NULL;
    REQUIRE(ff_io_read_tensor(path, start, 24, 48, s2, 2, &b) == FF_OK);
    ff_tensor *atc = ff_tensor_contiguous(at);
    CHECK(memcmp(ff_tensor_data(b), ff_tensor_data(atc), 24) == 0);
    /* The wrong size, a range past the end, and a short header length. */
    ff_tensor *bad = NULL;
    CHECK(ff_io_read_tensor(path, start, 24, 44, s2, 2, &bad) != FF_OK && !bad);
    CHECK(strstr(ff_last_error(), "needs 24"));
    CHECK(ff_io_read_tensor(path, start, 32, 56, s2, 2, &bad) != FF_OK && !bad);
    CHECK(strstr(ff_last_error(), "beyond"));
    CHECK(ff_io_read_tensor(path, start, -4, 20, s2, 2, &bad) != FF_OK && !bad);
    ff_tensor_release(b), ff_tensor_release(atc), ff_tensor_release(at), ff_tensor_release(a);
    CHECK(dir_entries() == 1); /* no temporary left */
    remove_dir();
}

TEST(io_read_rejects_bad_files)
{
    make_dir();
    REQUIRE(dir[0]);
    char path[128];
    snprintf(path, sizeof path, "%s/bad", dir);
    char *json = NULL;
    size_t len = 0;
    int64_t start = 0, size = 0;
    CHECK(ff_io_read_header(path, &json, &len, &start, &size) == FF_ERR_IO);
    CHECK(strstr(ff_last_error(), path) && strstr(ff_last_error(), "No such file"));
    write_bytes(path, "abc", 3);
    CHECK(ff_io_read_header(path, &json, &len, &start, &size) == FF_ERR_IO);
    CHECK(strstr(ff_last_error(), "shorter than"));
    unsigned char huge[16] = {0, 0, 0, 0, 0, 0, 0, 0x80, '{', '}'};
    write_bytes(path, huge, 10);
    CHECK(ff_io_read_header(path, &json, &len, &start, &size) == FF_ERR_IO);
    CHECK(strstr(ff_last_error(), "exceeds the limit"));
    unsigned char lie[16] = {100, 0, 0, 0, 0, 0, 0, 0, '{', '}'};
    write_bytes(path, lie, 10);
    CHECK(ff_io_read_header(path, &json, &len, &start, &size) == FF_ERR_IO);
    CHECK(strstr(ff_last_error(), "truncated"));
    CHECK(json == NULL);
    CHECK(ff_io_read_header(dir, &json, &len, &start, &size) == FF_ERR_IO); /* a directory */
    remove_dir();
}

TEST(io_write_failures_keep_the_old_file)
{
    make_dir();
    REQUIRE(dir[0]);
    char path[128];
    snprintf(path, sizeof path, "%s/ckpt", dir);
    write_bytes(path, "old contents", 12);
    ff_tensor *a = range_tensor(4, 4);
    ff_tensor *at = ff_tensor_transpose(a, 0, 1);
    ff_tensor *ts[2] = {a, at};
    const char *h = "{}";

    /* The copy of the second (non-contiguous) tensor fails after the first
     * tensor's bytes were written. */
    ff_mem_fail_after(1);
    CHECK(ff_io_write_atomic(path, h, 2, ts, 2) != FF_OK);
    ff_mem_fail_after(0);
    CHECK(file_size(path) == 12 && dir_entries() == 1);

    /* The disk fills up (a file size limit) in the middle of the data. */
    struct rlimit old, small = {.rlim_cur = 4096};
    getrlimit(RLIMIT_FSIZE, &old);
    small.rlim_max = old.rlim_max;
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    ff_tensor *big = range_tensor(100, 100); /* 40,000 bytes */
    ff_tensor *bs[1] = {big};
    if (setrlimit(RLIMIT_FSIZE, &small) == 0) {
        CHECK(ff_io_write_atomic(path, h, 2, bs, 1) == FF_ERR_IO);
        CHECK(strstr(ff_last_error(), "File too large") && strstr(ff_last_error(), ".tmp."));
        setrlimit(RLIMIT_FSIZE, &old);
    }
    signal(SIGXFSZ, prev);
    CHECK(file_size(path) == 12 && dir_entries() == 1);

    /* The target is a directory: the rename fails. */
    char sub[160];
    snprintf(sub, sizeof sub, "%s/sub", dir);
    REQUIRE(mkdir(sub, 0755) == 0);
    CHECK(ff_io_write_atomic(sub, h, 2, ts, 2) == FF_ERR_IO);
    CHECK(strstr(ff_last_error(), "rename"));
    CHECK(dir_entries() == 2);

    /* A missing directory: the message names the path and errno text. */
    char nodir[160];
    snprintf(nodir, sizeof nodir, "%s/missing/x", dir);
    CHECK(ff_io_write_atomic(nodir, h, 2, ts, 2) == FF_ERR_IO);
    CHECK(strstr(ff_last_error(), nodir) && strstr(ff_last_error(), "No such file"));

    /* A success replaces the file. */
    CHECK(ff_io_write_atomic(path, h, 2, ts, 2) == FF_OK);
    CHECK(file_size(path) == 8 + 8 + 128 && dir_entries() == 2);
    ff_tensor_release(big), ff_tensor_release(at), ff_tensor_release(a);
    remove_dir();
}
