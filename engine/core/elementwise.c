/*
 * elementwise.c: broadcasting, elementwise binary and unary ops, clamp, where.
 *
 * Every op runs its elements in one of a few layouts:
 *  - both operands contiguous with as many elements as the result;
 *  - one operand a single element (the Lua binding turns `t + 2` into a
 *    rank-0 tensor, so this path is hot);
 *  - in place, the same two with the result written over argument #1;
 *  - the general case: ff_loop on broadcast views, whose innermost runs drop
 *    back to the layouts above when their strides allow (a row vector added
 *    to a matrix is contiguous run by run; a column vector is a scalar per run).
 * The switch on the op sits outside the loops, and the scalar function of
 * each op is inlined into one plain loop per (op, layout), so that gcc -O2
 * vectorises them. The flat layouts of large tensors split their range over
 * the engine's threads (ff_par_run_aligned, cut at multiples of 64 so each
 * element takes the same vector or scalar path whatever the split); the
 * strided general case runs on the calling thread.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "ff_ops.h"
#include "parallel.h"

/* The loop templates below take the op's scalar function as a constant
 * argument; forcing them inline turns each call into a specialised loop. */
#define ALWAYS_INLINE static inline __attribute__((always_inline))

/* gcc -O2 (its "very-cheap" vector cost model) vectorises a loop only when
 * the trip count is a known multiple of the vector width, so each flat loop
 * runs its bulk in multiples of 16 and then a scalar tail. */
static inline int64_t bulk(int64_t n)
{
    return n & ~(int64_t)15;
}

/* ---- broadcasting ---- */

static ff_status broadcast_shapes(const char *fn, const int64_t *sa, int na,
                                  const int64_t *sb, int nb, int64_t *out, int *nout)
{
    int n = na > nb ? na : nb;
    for (int i = 0; i < n; i++) {
        /* aligned at the last dim; missing leading dims count as 1 */
        int ia = i - (n - na), ib = i - (n - nb);
        int64_t x = ia >= 0 ? sa[ia] : 1, y = ib >= 0 ? sb[ib] : 1;
        if (x != y && x != 1 && y != 1) {
            char s1[FF_SHAPE_STRLEN], s2[FF_SHAPE_STRLEN];
            return ff_error(FF_ERR_SHAPE, "%s: shapes %s and %s do not broadcast (dim %d: %lld vs %lld)",
                            fn, ff_shape_str(sa, na, s1, sizeof s1),
                            ff_shape_str(sb, nb, s2, sizeof s2), i + 1, (long long)x,
                            (long long)y);
        }
        out[i] = x == 1 ? y : x;
    }
    *nout = n;
    return FF_OK;
}

ff_status ff_broadcast_shape(const char *fn, const ff_tensor *a, const ff_tensor *b,
                             int64_t *out, int *ndim)
{
    return broadcast_shapes(fn, a->shape, a->ndim, b->shape, b->ndim, out, ndim);
}

/* True when b broadcasts to exactly `shape` (b's rank may not exceed it). */
static bool broadcasts_to(const ff_tensor *b, const int64_t *shape, int ndim)
{
    if (b->ndim > ndim)
        return false;
    int lead = ndim - b->ndim;
    for (int i = 0; i < b->ndim; i++)
        if (b->shape[i] != 1 && b->shape[i] != shape[lead + i])
            return false;
    return true;
}

/* In-place writes into a stride-0 dim would hit one element many times. */
static ff_status check_writable(const char *fn, const ff_tensor *t)
{
    if (ff_tensor_numel(t) == 0) /* an empty tensor's strides may be 0 */
        return FF_OK;
    for (int i = 0; i < t->ndim; i++)
        if (t->shape[i] > 1 && t->stride[i] == 0)
            return ff_error(FF_ERR_ARG, "%s: cannot write in place into an expanded tensor",
                            fn);
    return FF_OK;
}

/* Contiguous with exactly n elements: its data can be read as a flat run of
 * the result (shapes may differ by size-1 dims). */
static bool flat_run(const ff_tensor *t, int64_t n)
{
    return ff_tensor_numel(t) == n && ff_tensor_is_contiguous(t);
}

/* ---- binary ops: scalar definitions, in one table ---- */

static inline float b_add(float x, float y) { return x + y; }
static inline float b_sub(float x, float y) { return x - y; }
static inline float b_mul(float x, float y) { return x * y; }
static inline float b_div(float x, float y) { return x / y; }
static inline float b_pow(float x, float y) { return powf(x, y); }
/* NaN in either operand gives NaN (as torch); `|` keeps it branch-free. */
static inline float b_maximum(float x, float y) { return (x > y) | (x != x) ? x : y; }
static inline float b_minimum(float x, float y) { return (x < y) | (x != x) ? x : y; }
static inline float b_eq(float x, float y) { return x == y ? 1.0f : 0.0f; }
static inline float b_ne(float x, float y) { return x != y ? 1.0f : 0.0f; }
static inline float b_lt(float x, float y) { return x < y ? 1.0f : 0.0f; }
static inline float b_le(float x, float y) { return x <= y ? 1.0f : 0.0f; }
static inline float b_gt(float x, float y) { return x > y ? 1.0f : 0.0f; }
static inline float b_ge(float x, float y) { return x >= y ? 1.0f : 0.0f; }

#define BINOPS(X)                                                              \
    X(FF_ADD, "add", b_add) X(FF_SUB, "sub", b_sub) X(FF_MUL, "mul", b_mul)    \
    X(FF_DIV, "div", b_div) X(FF_POW, "pow", b_pow)                            \
    X(FF_MAXIMUM, "maximum", b_maximum) X(FF_MINIMUM, "minimum", b_minimum)    \
    X(FF_EQ, "eq", b_eq) X(FF_NE, "ne", b_ne) X(FF_LT, "lt", b_lt)             \
    X(FF_LE, "le", b_le) X(FF_GT, "gt", b_gt) X(FF_GE, "ge", b_ge)

static const char *const binop_names[] = {
#define X(e, name, f) [e] = name,
    BINOPS(X)
#undef X
};
_Static_assert(sizeof binop_names / sizeof binop_names[0] == FF_BINOP_COUNT,
               "every ff_binop needs a name and a kernel");

const char *ff_binop_name(ff_binop op)
{
    return (unsigned)op < FF_BINOP_COUNT ? binop_names[op] : "?";
}

/* ---- binary ops: loops ---- */

typedef float (*binfn)(float, float);

typedef enum {
    L_VV,      /* o[i] = f(a[i], b[i]) */
    L_VS,      /* o[i] = f(a[i], s) */
    L_SV,      /* o[i] = f(s, b[i]) */
    L_IO_VV,   /* a[i] = f(a[i], b[i]) */
    L_IO_VS,   /* a[i] = f(a[i], s) */
    L_STRIDED  /* any strides; o may be a (in place) */
} bin_layout;

typedef struct {
    int64_t n;
    float *o;
    const float *a, *b;
    float s;                /* the single element of L_VS / L_SV / L_IO_VS */
    int64_t so, sa, sb;     /* strides of L_STRIDED */
} bin_run;

ALWAYS_INLINE void loop_vv(int64_t n, float *restrict o, const float *restrict a,
                           const float *restrict b, binfn f)
{
    int64_t m = bulk(n);
    for (int64_t i = 0; i < m; i++)
        o[i] = f(a[i], b[i]);
    for (int64_t i = m; i < n; i++)
        o[i] = f(a[i], b[i]);
}

ALWAYS_INLINE void loop_vs(int64_t n, float *restrict o, const float *restrict a, float s,
                           binfn f)
{
    int64_t m = bulk(n);
    for (int64_t i = 0; i < m; i++)
        o[i] = f(a[i], s);
    for (int64_t i = m; i < n; i++)
        o[i] = f(a[i], s);
}

ALWAYS_INLINE void loop_sv(int64_t n, float *restrict o, float s, const float *restrict b,
                           binfn f)
{
    int64_t m = bulk(n);
    for (int64_t i = 0; i < m; i++)
        o[i] = f(s, b[i]);
    for (int64_t i = m; i < n; i++)
        o[i] = f(s, b[i]);
}

/* In place, out and a are one array, so they get one (restrict) pointer. */
ALWAYS_INLINE void loop_io_vv(int64_t n, float *restrict a, const float *restrict b, binfn f)
{
    int64_t m = bulk(n);
    for (int64_t i = 0; i < m; i++)
        a[i] = f(a[i], b[i]);
    for (int64_t i = m; i < n; i++)
        a[i] = f(a[i], b[i]);
}

ALWAYS_INLINE void loop_io_vs(int64_t n, float *restrict a, float s, binfn f)
{
    int64_t m = bulk(n);
    for (int64_t i = 0; i < m; i++)
        a[i] = f(a[i], s);
    for (int64_t i = m; i < n; i++)
        a[i] = f(a[i], s);
}

/* No restrict: o and a may be the same elements. */
ALWAYS_INLINE void loop_strided(int64_t n, float *o, int64_t so, const float *a, int64_t sa,
                                const float *b, int64_t sb, binfn f)
{
    for (int64_t i = 0; i < n; i++)
        o[i * so] = f(a[i * sa], b[i * sb]);
}

ALWAYS_INLINE void run_layout(bin_layout l, const bin_run *r, binfn f)
{
    switch (l) {
    case L_VV: loop_vv(r->n, r->o, r->a, r->b, f); break;
    case L_VS: loop_vs(r->n, r->o, r->a, r->s, f); break;
    case L_SV: loop_sv(r->n, r->o, r->s, r->b, f); break;
    case L_IO_VV: loop_io_vv(r->n, r->o, r->b, f); break;
    case L_IO_VS: loop_io_vs(r->n, r->o, r->s, f); break;
    case L_STRIDED: loop_strided(r->n, r->o, r->so, r->a, r->sa, r->b, r->sb, f); break;
    }
}

static void binary_kernel(ff_binop op, bin_layout l, const bin_run *r)
{
    switch (op) {
#define X(e, name, f) case e: run_layout(l, r, f); break;
        BINOPS(X)
#undef X
    default: break;
    }
}

/* A flat layout (not L_STRIDED) over threads: each range is the same
 * layout on offset pointers. */
typedef struct {
    ff_binop op;
    bin_layout l;
    const bin_run *r;
} bin_job;

static void binary_range(void *arg, int t, int64_t i0, int64_t i1)
{
    const bin_job *j = arg;
    bin_run r = *j->r;
    r.n = i1 - i0, r.o += i0;
    r.a = j->l == L_SV ? r.a : r.a + i0; /* L_IO_*: a is o, and unused */
    r.b = j->l == L_VV || j->l == L_SV || j->l == L_IO_VV ? r.b + i0 : r.b;
    binary_kernel(j->op, j->l, &r);
}

static void binary_flat(ff_binop op, bin_layout l, const bin_run *r)
{
    bin_job j = {op, l, r};
    ff_par_run_aligned(ff_par_threads(r->n, 3), r->n, 64, binary_range, &j);
}

/* One innermost run of ff_loop over (out, a, b); out == a when in place. */
static void binary_run(int64_t len, float **p, const int64_t *s, void *ctx)
{
    ff_binop op = *(const ff_binop *)ctx;
    bin_run r = {.n = len, .o = p[0], .a = p[1], .b = p[2],
                 .so = s[0], .sa = s[1], .sb = s[2]};
    bool in_place = p[0] == p[1] && s[0] == s[1];
    bin_layout l = L_STRIDED;
    if (s[0] == 1 && s[1] == 1 && s[2] == 1) {
        l = in_place ? L_IO_VV : L_VV;
    } else if (s[0] == 1 && s[1] == 1 && s[2] == 0) {
        l = in_place ? L_IO_VS : L_VS;
        r.s = *r.b;
    } else if (!in_place && s[0] == 1 && s[1] == 0 && s[2] == 1) {
        l = L_SV;
        r.s = *r.a;
    }
    binary_kernel(op, l, &r);
}

/* ff_loop over (out, a, b) with a and b expanded to out's shape. */
static ff_status binary_loop(ff_binop op, ff_tensor *out, const ff_tensor *a,
                             const ff_tensor *b)
{
    ff_tensor *ea = ff_tensor_expand((ff_tensor *)a, out->shape, out->ndim);
    ff_tensor *eb = ea ? ff_tensor_expand((ff_tensor *)b, out->shape, out->ndim) : NULL;
    ff_status st = ff_last_status();
    if (ea && eb) {
        ff_tensor *ops[3] = {out, ea, eb};
        st = ff_loop(3, ops, binary_run, &op);
    }
    ff_tensor_release(ea);
    ff_tensor_release(eb);
    return st;
}

static ff_status check_binop(const char *fn, ff_binop op)
{
    if ((unsigned)op >= FF_BINOP_COUNT)
        return ff_error(FF_ERR_ARG, "%s: unknown binary op %d", fn, (int)op);
    return FF_OK;
}

ff_tensor *ff_binary(ff_binop op, const ff_tensor *a, const ff_tensor *b)
{
    if (check_binop("binary", op) != FF_OK)
        return NULL;
    int64_t shape[FF_MAX_DIMS];
    int ndim;
    if (broadcast_shapes(binop_names[op], a->shape, a->ndim, b->shape, b->ndim, shape,
                         &ndim) != FF_OK)
        return NULL;
    ff_tensor *out = ff_tensor_empty(shape, ndim);
    if (!out)
        return NULL;
    int64_t n = ff_tensor_numel(out);
    bin_run r = {.n = n, .o = ff_tensor_data(out), .a = ff_tensor_data(a),
                 .b = ff_tensor_data(b)};
    bool fa = flat_run(a, n), fb = flat_run(b, n);
    if (fa && fb) {
        binary_flat(op, L_VV, &r);
    } else if (fa && ff_tensor_numel(b) == 1) {
        r.s = *r.b;
        binary_flat(op, L_VS, &r);
    } else if (fb && ff_tensor_numel(a) == 1) {
        r.s = *r.a;
        binary_flat(op, L_SV, &r);
    } else if (binary_loop(op, out, a, b) != FF_OK) {
        ff_tensor_release(out);
        return NULL;
    }
    return out;
}

ff_status ff_binary_(ff_binop op, ff_tensor *a, const ff_tensor *b)
{
    ff_tensor_bump_version(a); /* autograd checks saved tensors by it */
    ff_status st = check_binop("binary_", op);
    if (st != FF_OK)
        return st;
    char fn[32];
    snprintf(fn, sizeof fn, "%s_", binop_names[op]);
    if ((st = check_writable(fn, a)) != FF_OK)
        return st;
    if (!broadcasts_to(b, a->shape, a->ndim)) {
        char s1[FF_SHAPE_STRLEN], s2[FF_SHAPE_STRLEN];
        return ff_error(FF_ERR_SHAPE, "%s: argument #2 of shape %s does not broadcast to %s",
                        fn, ff_shape_str(b->shape, b->ndim, s1, sizeof s1),
                        ff_shape_str(a->shape, a->ndim, s2, sizeof s2));
    }
    /* b may overlap a (a += a:t()): then read it from a private copy, or
     * the loop would read elements it has already overwritten. */
    ff_tensor *copy = NULL;
    if (b->storage == a->storage) {
        if (!(copy = ff_tensor_clone(b)))
            return ff_last_status();
        b = copy;
    }
    int64_t n = ff_tensor_numel(a);
    bin_run r = {.n = n, .o = ff_tensor_data(a), .a = ff_tensor_data(a),
                 .b = ff_tensor_data(b)};
    if (ff_tensor_is_contiguous(a) && flat_run(b, n)) {
        binary_flat(op, L_IO_VV, &r);
    } else if (ff_tensor_is_contiguous(a) && ff_tensor_numel(b) == 1) {
        r.s = *r.b;
        binary_flat(op, L_IO_VS, &r);
    } else {
        st = binary_loop(op, a, a, b);
    }
    ff_tensor_release(copy);
    return st;
}

/* ---- unary ops ---- */

static inline float u_neg(float x) { return -x; }
static inline float u_exp(float x) { return expf(x); }
static inline float u_log(float x) { return logf(x); }
static inline float u_sqrt(float x) { return sqrtf(x); }
static inline float u_abs(float x) { return fabsf(x); }
/* 0 and NaN are their own sign. */
static inline float u_sign(float x) { return x > 0 ? 1.0f : x < 0 ? -1.0f : x; }

#define UNOPS(X)                                                               \
    X(FF_NEG, "neg", u_neg) X(FF_EXP, "exp", u_exp) X(FF_LOG, "log", u_log)    \
    X(FF_SQRT, "sqrt", u_sqrt) X(FF_ABS, "abs", u_abs) X(FF_SIGN, "sign", u_sign)

static const char *const unop_names[] = {
#define X(e, name, f) [e] = name,
    UNOPS(X)
#undef X
};
_Static_assert(sizeof unop_names / sizeof unop_names[0] == FF_UNOP_COUNT,
               "every ff_unop needs a name and a kernel");

const char *ff_unop_name(ff_unop op)
{
    return (unsigned)op < FF_UNOP_COUNT ? unop_names[op] : "?";
}

typedef float (*unfn)(float);

typedef enum {
    U_V,       /* o[i] = f(a[i]) */
    U_IO,      /* a[i] = f(a[i]) */
    U_STRIDED  /* any strides; o may be a */
} un_layout;

ALWAYS_INLINE void uloop_v(int64_t n, float *restrict o, const float *restrict a, unfn f)
{
    int64_t m = bulk(n);
    for (int64_t i = 0; i < m; i++)
        o[i] = f(a[i]);
    for (int64_t i = m; i < n; i++)
        o[i] = f(a[i]);
}

ALWAYS_INLINE void uloop_io(int64_t n, float *restrict a, unfn f)
{
    int64_t m = bulk(n);
    for (int64_t i = 0; i < m; i++)
        a[i] = f(a[i]);
    for (int64_t i = m; i < n; i++)
        a[i] = f(a[i]);
}

ALWAYS_INLINE void uloop_strided(int64_t n, float *o, int64_t so, const float *a,
                                 int64_t sa, unfn f)
{
    for (int64_t i = 0; i < n; i++)
        o[i * so] = f(a[i * sa]);
}

ALWAYS_INLINE void urun_layout(un_layout l, int64_t n, float *o, int64_t so, const float *a,
                               int64_t sa, unfn f)
{
    switch (l) {
    case U_V: uloop_v(n, o, a, f); break;
    case U_IO: uloop_io(n, o, f); break;
    case U_STRIDED: uloop_strided(n, o, so, a, sa, f); break;
    }
}

static void unary_kernel(ff_unop op, un_layout l, int64_t n, float *o, int64_t so,
                         const float *a, int64_t sa)
{
    switch (op) {
#define X(e, name, f) case e: urun_layout(l, n, o, so, a, sa, f); break;
        UNOPS(X)
#undef X
    default: break;
    }
}

/* U_V or U_IO over threads (o = a for U_IO). */
typedef struct {
    ff_unop op;
    un_layout l;
    float *o;
    const float *a;
} un_job;

static void unary_range(void *arg, int t, int64_t i0, int64_t i1)
{
    const un_job *j = arg;
    unary_kernel(j->op, j->l, i1 - i0, j->o + i0, 1, j->a + i0, 1);
}

static void unary_flat(ff_unop op, un_layout l, int64_t n, float *o, const float *a)
{
    un_job j = {op, l, o, a};
    ff_par_run_aligned(ff_par_threads(n, 2), n, 64, unary_range, &j);
}

/* A run of ff_loop over (out, a), or over (a) alone when in place. */
static void unary_run(int64_t len, float **p, const int64_t *s, void *ctx)
{
    ff_unop op = *(const ff_unop *)ctx;
    if (s[0] == 1 && s[1] == 1)
        unary_kernel(op, U_V, len, p[0], 1, p[1], 1);
    else
        unary_kernel(op, U_STRIDED, len, p[0], s[0], p[1], s[1]);
}

static void unary_run_io(int64_t len, float **p, const int64_t *s, void *ctx)
{
    ff_unop op = *(const ff_unop *)ctx;
    unary_kernel(op, s[0] == 1 ? U_IO : U_STRIDED, len, p[0], s[0], p[0], s[0]);
}

static ff_status check_unop(const char *fn, ff_unop op)
{
    if ((unsigned)op >= FF_UNOP_COUNT)
        return ff_error(FF_ERR_ARG, "%s: unknown unary op %d", fn, (int)op);
    return FF_OK;
}

ff_tensor *ff_unary(ff_unop op, const ff_tensor *a)
{
    if (check_unop("unary", op) != FF_OK)
        return NULL;
    ff_tensor *out = ff_tensor_empty(a->shape, a->ndim);
    if (!out)
        return NULL;
    if (ff_tensor_is_contiguous(a)) {
        unary_flat(op, U_V, ff_tensor_numel(a), ff_tensor_data(out), ff_tensor_data(a));
        return out;
    }
    ff_tensor *ops[2] = {out, (ff_tensor *)a};
    if (ff_loop(2, ops, unary_run, &op) != FF_OK) {
        ff_tensor_release(out);
        return NULL;
    }
    return out;
}

ff_status ff_unary_(ff_unop op, ff_tensor *a)
{
    ff_tensor_bump_version(a); /* autograd checks saved tensors by it */
    ff_status st = check_unop("unary_", op);
    if (st != FF_OK)
        return st;
    char fn[32];
    snprintf(fn, sizeof fn, "%s_", unop_names[op]);
    if ((st = check_writable(fn, a)) != FF_OK)
        return st;
    if (ff_tensor_is_contiguous(a)) {
        float *d = ff_tensor_data(a);
        unary_flat(op, U_IO, ff_tensor_numel(a), d, d);
        return FF_OK;
    }
    return ff_loop(1, &a, unary_run_io, &op);
}

/* ---- clamp ---- */

typedef struct { float lo, hi; } bounds;

/* `x < lo ? lo : x` keeps a NaN x (comparisons with NaN are false) and maps
 * onto the max/min instructions, so the loop vectorises. */
static inline float clamp1(float x, float lo, float hi)
{
    float y = x < lo ? lo : x;
    return y > hi ? hi : y;
}

static void clamp_flat(int64_t n, float *restrict o, const float *restrict a, bounds b)
{
    int64_t m = bulk(n);
    for (int64_t i = 0; i < m; i++)
        o[i] = clamp1(a[i], b.lo, b.hi);
    for (int64_t i = m; i < n; i++)
        o[i] = clamp1(a[i], b.lo, b.hi);
}

static void clamp_flat_io(int64_t n, float *restrict a, bounds b)
{
    int64_t m = bulk(n);
    for (int64_t i = 0; i < m; i++)
        a[i] = clamp1(a[i], b.lo, b.hi);
    for (int64_t i = m; i < n; i++)
        a[i] = clamp1(a[i], b.lo, b.hi);
}

/* A run of ff_loop over (out, a); out == a when in place. */
static void clamp_run(int64_t len, float **p, const int64_t *s, void *ctx)
{
    bounds b = *(const bounds *)ctx;
    float *o = p[0];
    const float *a = p[1];
    if (o != a && s[0] == 1 && s[1] == 1) {
        clamp_flat(len, o, a, b);
        return;
    }
    for (int64_t i = 0; i < len; i++)
        o[i * s[0]] = clamp1(a[i * s[1]], b.lo, b.hi);
}

static ff_status check_bounds(const char *fn, float lo, float hi)
{
    if (lo != lo || hi != hi)
        return ff_error(FF_ERR_ARG, "%s: bounds must be numbers, got %g and %g", fn, lo, hi);
    if (lo > hi)
        return ff_error(FF_ERR_ARG, "%s: lower bound %g is greater than upper bound %g", fn,
                        lo, hi);
    return FF_OK;
}

ff_tensor *ff_clamp(const ff_tensor *a, float lo, float hi)
{
    if (check_bounds("clamp", lo, hi) != FF_OK)
        return NULL;
    ff_tensor *out = ff_tensor_empty(a->shape, a->ndim);
    if (!out)
        return NULL;
    bounds b = {lo, hi};
    if (ff_tensor_is_contiguous(a)) {
        clamp_flat(ff_tensor_numel(a), ff_tensor_data(out), ff_tensor_data(a), b);
        return out;
    }
    ff_tensor *ops[2] = {out, (ff_tensor *)a};
    if (ff_loop(2, ops, clamp_run, &b) != FF_OK) {
        ff_tensor_release(out);
        return NULL;
    }
    return out;
}

ff_status ff_clamp_(ff_tensor *a, float lo, float hi)
{
    ff_tensor_bump_version(a); /* autograd checks saved tensors by it */
    ff_status st = check_bounds("clamp_", lo, hi);
    if (st == FF_OK)
        st = check_writable("clamp_", a);
    if (st != FF_OK)
        return st;
    bounds b = {lo, hi};
    if (ff_tensor_is_contiguous(a)) {
        clamp_flat_io(ff_tensor_numel(a), ff_tensor_data(a), b);
        return FF_OK;
    }
    ff_tensor *ops[2] = {a, a};
    return ff_loop(2, ops, clamp_run, &b);
}

/* ---- where ---- */

/* Both values are loaded unconditionally so that the select vectorises. */
static inline float where1(float c, float x, float y)
{
    return c != 0 ? x : y;
}

static void where_flat(int64_t n, float *restrict o, const float *restrict c,
                       const float *restrict a, const float *restrict b)
{
    int64_t m = bulk(n);
    for (int64_t i = 0; i < m; i++)
        o[i] = where1(c[i], a[i], b[i]);
    for (int64_t i = m; i < n; i++)
        o[i] = where1(c[i], a[i], b[i]);
}

/* A run of ff_loop over (out, cond, a, b). */
static void where_run(int64_t len, float **p, const int64_t *s, void *ctx)
{
    if (s[0] == 1 && s[1] == 1 && s[2] == 1 && s[3] == 1) {
        where_flat(len, p[0], p[1], p[2], p[3]);
        return;
    }
    for (int64_t i = 0; i < len; i++)
        p[0][i * s[0]] = where1(p[1][i * s[1]], p[2][i * s[2]], p[3][i * s[3]]);
}

ff_tensor *ff_where(const ff_tensor *cond, const ff_tensor *a, const ff_tensor *b)
{
    int64_t s1[FF_MAX_DIMS], shape[FF_MAX_DIMS];
    int n1, ndim;
    if (broadcast_shapes("where", cond->shape, cond->ndim, a->shape, a->ndim, s1, &n1) != FF_OK ||
        broadcast_shapes("where", s1, n1, b->shape, b->ndim, shape, &ndim) != FF_OK) {
        /* name all three shapes: the pairwise message may show an intermediate */
        char x[FF_SHAPE_STRLEN], y[FF_SHAPE_STRLEN], z[FF_SHAPE_STRLEN];
        ff_error(FF_ERR_SHAPE, "where: shapes %s (condition), %s and %s do not broadcast",
                 ff_shape_str(cond->shape, cond->ndim, x, sizeof x),
                 ff_shape_str(a->shape, a->ndim, y, sizeof y),
                 ff_shape_str(b->shape, b->ndim, z, sizeof z));
        return NULL;
    }
    ff_tensor *out = ff_tensor_empty(shape, ndim);
    if (!out)
        return NULL;
    int64_t n = ff_tensor_numel(out);
    if (flat_run(cond, n) && flat_run(a, n) && flat_run(b, n)) {
        where_flat(n, ff_tensor_data(out), ff_tensor_data(cond), ff_tensor_data(a),
                   ff_tensor_data(b));
        return out;
    }
    ff_tensor *ops[4] = {out, NULL, NULL, NULL};
    const ff_tensor *in[3] = {cond, a, b};
    ff_status st = FF_OK;
    for (int k = 0; k < 3 && st == FF_OK; k++)
        if (!(ops[k + 1] = ff_tensor_expand((ff_tensor *)in[k], shape, ndim)))
            st = ff_last_status();
    if (st == FF_OK)
        st = ff_loop(4, ops, where_run, NULL);
    for (int k = 1; k < 4; k++)
        ff_tensor_release(ops[k]);
    if (st != FF_OK) {
        ff_tensor_release(out);
        return NULL;
    }
    return out;
}
