/*
 * bench_core.c: the engine's core ops against the fastest plain reference.
 *
 *   matmul 512/1024 square    ff_matmul       vs cblas_sgemm into a reused buffer
 *   matmul at the MLP's shape ff_matmul       vs cblas_sgemm (128x784 by 784x256)
 *   (ff_matmul runs the engine's own sgemm where ff_gemm_set_algo's auto
 *   rule picks it: the row names the code, "avx512" or "blas")
 *   add/mul of 1e7 elements   ff_binary       vs a plain C loop into a reused buffer
 *   t + scalar                ff_binary(t, rank-0 tensor) vs the same loop with a constant
 *   add, ref mallocs too      ff_binary       vs the loop into a buffer malloc'd per call
 *
 * Each case runs both sides once to warm up, then REPS times interleaved
 * (ff, ref, ref, ff, ...: the order alternates so drift during a run hits
 * both sides alike), and reports medians. The machine is shared and noisy:
 * only ratios inside one run mean anything. ff allocates and frees its
 * result on every call; the references write into a buffer allocated once,
 * so the ratio includes the cost of allocation (page faults for big outputs).
 *
 * Usage: bench_core [json-path]   (default build/bench/core.json)
 */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "ff.h"

#define REPS 15          /* >= 11, odd so the median is one sample */
#define EW_N 10000000    /* elements for the elementwise cases */
#define MAX_CASES 16

typedef struct {
    char name[64];
    double ff_ms, ref_ms;
    double work;         /* flops or bytes per call */
    const char *unit;    /* "GFLOP/s" or "GB/s" */
} bench_case;

static bench_case cases[MAX_CASES];
static int ncases;

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

static int cmp_double(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return v[n / 2];
}

typedef void (*bench_fn)(void *ctx);

static double time_once(bench_fn fn, void *ctx)
{
    double t0 = now_ms();
    fn(ctx);
    return now_ms() - t0;
}

/* Warm up both sides, then time them interleaved; record the medians. */
static void measure(const char *name, bench_fn ff, bench_fn ref, void *ctx, double work,
                    const char *unit)
{
    double tf[REPS], tr[REPS];
    ff(ctx), ref(ctx);
    for (int r = 0; r < REPS; r++) {
        if (r % 2) {
            tf[r] = time_once(ff, ctx);
            tr[r] = time_once(ref, ctx);
        } else {
            tr[r] = time_once(ref, ctx);
            tf[r] = time_once(ff, ctx);
        }
    }
    if (ncases == MAX_CASES)
        return;
    bench_case *c = &cases[ncases++];
    snprintf(c->name, sizeof c->name, "%s", name);
    c->ff_ms = median(tf, REPS);
    c->ref_ms = median(tr, REPS);
    c->work = work;
    c->unit = unit;
}

static void die(const char *what)
{
    fprintf(stderr, "bench_core: %s: %s\n", what, ff_last_error());
    exit(1);
}

/* Deterministic values in [-1, 1); contents do not affect speed. */
static ff_tensor *filled(const int64_t *shape, int ndim, unsigned seed)
{
    ff_tensor *t = ff_tensor_empty(shape, ndim);
    if (!t)
        die("allocating an input");
    uint32_t x = seed * 2654435761u + 1u;
    float *d = ff_tensor_data(t);
    for (int64_t i = 0; i < ff_tensor_numel(t); i++) {
        x = x * 1664525u + 1013904223u;
        d[i] = (float)(x >> 8) / (float)(1u << 23) - 1.0f;
    }
    return t;
}

/* ---- matmul ---- */

typedef struct {
    ff_tensor *a, *b;
    float *c;    /* the reference's output, allocated once */
    int n, k, m; /* a (n x k) times b (k x m) */
} mm_ctx;

static void mm_ff(void *p)
{
    mm_ctx *m = p;
    ff_tensor *o = ff_matmul(m->a, m->b);
    if (!o)
        die("ff_matmul");
    ff_tensor_release(o);
}

static void mm_ref(void *p)
{
    mm_ctx *m = p;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m->n, m->m, m->k, 1.0f,
                ff_tensor_data(m->a), m->k, ff_tensor_data(m->b), m->m, 0.0f, m->c, m->m);
}

/* Guard against timing a wrong path: both sides must agree. */
static void mm_verify(mm_ctx *m)
{
    ff_tensor *o = ff_matmul(m->a, m->b);
    if (!o)
        die("ff_matmul");
    mm_ref(m);
    double worst = 0;
    for (int64_t i = 0; i < (int64_t)m->n * m->m; i++)
        worst = fmax(worst, fabs((double)ff_tensor_data(o)[i] - m->c[i]));
    ff_tensor_release(o);
    if (worst > 1e-3) {
        fprintf(stderr, "bench_core: matmul %d differs from sgemm by %g\n", m->n, worst);
        exit(1);
    }
}

static void bench_matmul(int n, int k, int mm, int threads)
{
    int64_t sa[2] = {n, k}, sb[2] = {k, mm};
    mm_ctx m = {filled(sa, 2, 1), filled(sb, 2, 2), malloc(sizeof(float) * (size_t)n * mm), n, k,
                mm};
    if (!m.c)
        die("malloc");
    ff_blas_set_threads(threads);
    mm_verify(&m);
    char name[64];
    if (n == k && k == mm)
        snprintf(name, sizeof name, "matmul %dx%d %s, %d thread%s", n, n, ff_gemm_kernel_name(),
                 threads, threads > 1 ? "s" : "");
    else
        snprintf(name, sizeof name, "matmul %dx%dx%d %s, %d thr", n, k, mm, ff_gemm_kernel_name(),
                 threads);
    measure(name, mm_ff, mm_ref, &m, 2.0 * n * k * mm, "GFLOP/s");
    ff_tensor_release(m.a), ff_tensor_release(m.b);
    free(m.c);
}

/* ---- elementwise ---- */

typedef struct {
    ff_binop op;
    ff_tensor *a, *b;   /* b is rank 0 for the scalar case */
    float *out;         /* the reference's output, allocated once */
} ew_ctx;

static void ew_ff(void *p)
{
    ew_ctx *e = p;
    ff_tensor *o = ff_binary(e->op, e->a, e->b);
    if (!o)
        die("ff_binary");
    ff_tensor_release(o);
}

/* The plain loops gcc would produce from the obvious C. */
static void ew_ref(void *p)
{
    ew_ctx *e = p;
    const float *restrict a = ff_tensor_data(e->a), *restrict b = ff_tensor_data(e->b);
    float *restrict o = e->out;
    int64_t n = ff_tensor_numel(e->a);
    if (e->b->ndim == 0) {
        float s = b[0];
        for (int64_t i = 0; i < n; i++)
            o[i] = a[i] + s;
    } else if (e->op == FF_ADD) {
        for (int64_t i = 0; i < n; i++)
            o[i] = a[i] + b[i];
    } else {
        for (int64_t i = 0; i < n; i++)
            o[i] = a[i] * b[i];
    }
}

/* The same loop into a buffer malloc'd and freed per call, as ff does: the
 * gap between this row and the one above is the price of allocation. */
static void ew_ref_alloc(void *p)
{
    ew_ctx e = *(ew_ctx *)p;
    e.out = malloc(sizeof(float) * (size_t)ff_tensor_numel(e.a));
    if (!e.out)
        die("malloc");
    ew_ref(&e);
    free(e.out);
}

static void bench_elementwise(void)
{
    int64_t s[1] = {EW_N};
    ff_tensor *a = filled(s, 1, 3), *b = filled(s, 1, 4), *sc = ff_tensor_scalar(0.5f);
    float *out = malloc(sizeof(float) * EW_N);
    if (!sc || !out)
        die("allocating elementwise inputs");
    double bytes3 = 3.0 * sizeof(float) * EW_N, bytes2 = 2.0 * sizeof(float) * EW_N;
    ew_ctx add = {FF_ADD, a, b, out}, mul = {FF_MUL, a, b, out}, adds = {FF_ADD, a, sc, out};
    measure("add 1e7 (t + t)", ew_ff, ew_ref, &add, bytes3, "GB/s");
    measure("mul 1e7 (t * t)", ew_ff, ew_ref, &mul, bytes3, "GB/s");
    measure("add 1e7 (t + scalar)", ew_ff, ew_ref, &adds, bytes2, "GB/s");
    measure("add 1e7, ref mallocs too", ew_ff, ew_ref_alloc, &add, bytes3, "GB/s");
    ff_tensor_release(a), ff_tensor_release(b), ff_tensor_release(sc);
    free(out);
}

/* ---- report ---- */

static double rate(double work, double ms)
{
    return work / (ms * 1e-3) / 1e9;
}

static void print_table(const char *coretype)
{
    printf("OPENBLAS_CORETYPE=%s, %d repetitions, medians\n", coretype, REPS);
    printf("%-34s %10s %10s %7s %9s %9s %s\n", "case", "ff ms", "ref ms", "ff/ref", "ff rate",
           "ref rate", "unit");
    for (int i = 0; i < ncases; i++) {
        const bench_case *c = &cases[i];
        printf("%-34s %10.3f %10.3f %7.3f %9.1f %9.1f %s\n", c->name, c->ff_ms, c->ref_ms,
               c->ff_ms / c->ref_ms, rate(c->work, c->ff_ms), rate(c->work, c->ref_ms), c->unit);
    }
}

static int write_json(const char *path, const char *coretype)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        perror(path);
        return 1;
    }
    fprintf(f, "{\n  \"bench\": \"core\",\n  \"openblas_coretype\": \"%s\",\n", coretype);
    fprintf(f, "  \"repetitions\": %d,\n  \"cases\": [\n", REPS);
    for (int i = 0; i < ncases; i++) {
        const bench_case *c = &cases[i];
        fprintf(f,
                "    {\"case\": \"%s\", \"ff_ms\": %.4f, \"ref_ms\": %.4f, \"ratio\": %.4f, "
                "\"ff_rate\": %.2f, \"ref_rate\": %.2f, \"unit\": \"%s\"}%s\n",
                c->name, c->ff_ms, c->ref_ms, c->ff_ms / c->ref_ms, rate(c->work, c->ff_ms),
                rate(c->work, c->ref_ms), c->unit, i + 1 < ncases ? "," : "");
    }
    fprintf(f, "  ]\n}\n");
    return fclose(f) != 0;
}

int main(int argc, char **argv)
{
    const char *json = argc > 1 ? argv[1] : "build/bench/core.json";
    const char *coretype = getenv("OPENBLAS_CORETYPE");
    coretype = coretype ? coretype : "unset";
    /* As the engine runs OpenBLAS (the Lua module calls it at load): idle
     * OpenBLAS workers sleep after ~0.5 ms instead of spinning 0.1 s. */
    ff_blas_init();
    int threads0 = ff_blas_threads();
    for (int threads = 1; threads <= 2; threads++)
    {
        for (int n = 512; n <= 1024; n *= 2)
            bench_matmul(n, n, n, threads);
        bench_matmul(128, 784, 256, threads); /* the MLP's first layer */
    }
    ff_blas_set_threads(threads0);
    bench_elementwise();
    print_table(coretype);
    if (write_json(json, coretype))
        return 1;
    printf("wrote %s\n", json);
    return 0;
}
