/*
 * harness.h: a tiny C test harness. TEST(name) { ... } registers itself at
 * load time (no central list to edit); CHECK records a failure and goes on,
 * REQUIRE records it and leaves the test.
 */
#ifndef FF_HARNESS_H
#define FF_HARNESS_H

#include <math.h>
#include <stdio.h>
#include "ff.h"

typedef void (*ff_test_fn)(void);
void ff_test_register(const char *name, const char *file, ff_test_fn fn);
void ff_test_fail(const char *file, int line, const char *expr);

#define TEST(name)                                                        \
    static void name(void);                                               \
    __attribute__((constructor)) static void register_##name(void)        \
    {                                                                     \
        ff_test_register(#name, __FILE__, name);                          \
    }                                                                     \
    static void name(void)

#define CHECK(cond)                                                       \
    do {                                                                  \
        if (!(cond))                                                      \
            ff_test_fail(__FILE__, __LINE__, #cond);                      \
    } while (0)

#define REQUIRE(cond)                                                     \
    do {                                                                  \
        if (!(cond)) {                                                    \
            ff_test_fail(__FILE__, __LINE__, #cond);                      \
            return;                                                       \
        }                                                                 \
    } while (0)

#define CHECK_NEAR(a, b, tol) CHECK(fabs((double)(a) - (double)(b)) <= (tol))

#endif
