/* main.c: runs every registered C test and prints "N passed, N failed". */
#include <string.h>
#include "harness.h"

#define MAX_TESTS 2048

static struct { const char *name, *file; ff_test_fn fn; } tests[MAX_TESTS];
static int ntests, failures_in_test;

void ff_test_register(const char *name, const char *file, ff_test_fn fn)
{
    if (ntests < MAX_TESTS)
        tests[ntests++] = (typeof(tests[0])){name, file, fn};
}

void ff_test_fail(const char *file, int line, const char *expr)
{
    failures_in_test++;
    fprintf(stderr, "  %s:%d: CHECK failed: %s", file, line, expr);
    if (ff_last_error()[0])
        fprintf(stderr, "  (last error: %s)", ff_last_error());
    fputc('\n', stderr);
}

int main(int argc, char **argv)
{
    const char *filter = argc > 1 ? argv[1] : NULL;
    int passed = 0, failed = 0;
    for (int i = 0; i < ntests; i++) {
        if (filter && !strstr(tests[i].name, filter))
            continue;
        failures_in_test = 0;
        size_t live = ff_mem_live_bytes();
        tests[i].fn();
        /* Every test releases what it made: a leak is a failure. */
        if (ff_mem_live_bytes() != live) {
            fprintf(stderr, "  %s: leaked %zd bytes of engine memory\n", tests[i].name,
                    (ssize_t)(ff_mem_live_bytes() - live));
            failures_in_test++;
        }
        if (failures_in_test) {
            fprintf(stderr, "FAIL %s (%s)\n", tests[i].name, tests[i].file);
            failed++;
        } else {
            passed++;
        }
    }
    printf("c tests: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
