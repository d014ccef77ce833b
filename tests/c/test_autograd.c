/* test_autograd.c: the graph machinery through the C API: recording,
 * backward, accumulation, freeing (no leaks, no recursion), saved-tensor
 * versions, hooks and the op table. */
#include <string.h>
#include "harness.h"

static ff_tensor *leaf(int64_t r, int64_t c, uint64_t seed)
{
    int64_t s[2] = {r, c};
    ff_tensor *t = ff_tensor_empty(s, 2);
    ff_rng g;
    ff_rng_seed(&g, seed);
    ff_randn_(t, &g, 0, 1);
    ff_tensor_set_requires_grad(t, true);
    return t;
}

static ff_tensor *mm(ff_tensor *a, ff_tensor *b)
{
    ff_tensor *in[2] = {a, b};
    return ff_apply(FF_OP_MATMUL, in, 2, NULL, NULL);
}

TEST(op_table_is_complete)
{
    for (int k = 0; k < FF_OP_COUNT; k++) {
        CHECK(ff_ops[k].name && ff_ops[k].name[0]);
        CHECK(ff_ops[k].forward && ff_ops[k].backward);
        for (int j = 0; j < k; j++)
            CHECK(strcmp(ff_ops[k].name, ff_ops[j].name) != 0);
    }
    CHECK(strcmp(ff_ops[FF_OP_MATMUL].name, "matmul") == 0);
}

TEST(records_only_when_needed)
{
    ff_tensor *a = leaf(2, 3, 1), *b = leaf(3, 2, 2);
    ff_tensor *c = mm(a, b);
    REQUIRE(c);
    CHECK(c->requires_grad && c->grad_fn && !ff_tensor_is_leaf(c));
    CHECK(strcmp(ff_tensor_grad_fn_name(c), "matmul") == 0);
    bool was = ff_set_grad_enabled(false);
    ff_tensor *d = mm(a, b);
    ff_set_grad_enabled(was);
    CHECK(d && !d->requires_grad && !d->grad_fn);
    ff_tensor_set_requires_grad(b, false);
    ff_tensor *e = mm(a, b);
    CHECK(e->requires_grad && !e->grad_fn->ctx.needs_grad[1] && e->grad_fn->ctx.needs_grad[0]);
    ff_tensor *ts[] = {a, b, c, d, e};
    for (int i = 0; i < 5; i++)
        ff_tensor_release(ts[i]);
}

TEST(backward_matches_hand_gradient)
{
    /* y = sum(A·B); dA = 1·Bᵀ, dB = Aᵀ·1 */
    ff_tensor *a = leaf(2, 3, 3), *b = leaf(3, 4, 4);
    ff_tensor *c = mm(a, b);
    int64_t s[2] = {2, 4};
    ff_tensor *ones = ff_tensor_ones(s, 2);
    REQUIRE(ff_backward(c, ones, false) == FF_OK);
    REQUIRE(a->grad && b->grad);
    for (int i = 0; i < 2; i++)
        for (int k = 0; k < 3; k++) {
            double want = 0;
            for (int j = 0; j < 4; j++)
                want += ff_tensor_data(b)[k * 4 + j];
            CHECK_NEAR(ff_tensor_data(a->grad)[i * 3 + k], want, 1e-5);
        }
    /* a second pass through a freed graph is refused */
    CHECK(ff_backward(c, ones, false) == FF_ERR_STATE && strstr(ff_last_error(), "retain_graph"));
    ff_tensor *ts[] = {a, b, c, ones};
    for (int i = 0; i < 4; i++)
        ff_tensor_release(ts[i]);
}

TEST(diamond_accumulates_once_per_path)
{
    /* y = sum(x·I + x·I) -> dx = 2 */
    ff_tensor *x = leaf(2, 2, 5);
    int64_t s[2] = {2, 2};
    ff_tensor *eye = ff_tensor_eye(2, 2);
    ff_tensor *h = mm(x, eye);
    ff_tensor *in[2] = {h, h};
    ff_tensor *y = ff_apply(FF_OP_CAT, in, 2, &(ff_params){.i = {0}}, NULL);
    REQUIRE(y);
    int64_t s2[2] = {4, 2};
    ff_tensor *ones = ff_tensor_ones(s2, 2);
    REQUIRE(ff_backward(y, ones, false) == FF_OK);
    for (int i = 0; i < 4; i++)
        CHECK(ff_tensor_data(x->grad)[i] == 2.0f);
    (void)s;
    ff_tensor *ts[] = {x, eye, h, y, ones};
    for (int i = 0; i < 5; i++)
        ff_tensor_release(ts[i]);
}

TEST(long_chain_frees_without_recursion)
{
    ff_tensor *x = leaf(1, 1, 6);
    ff_tensor *y = ff_tensor_retain(x);
    for (int i = 0; i < 200000; i++) {
        ff_params p = {.i = {1}}; /* clone */
        ff_tensor *next = ff_apply(FF_OP_CONTIGUOUS, &y, 1, &p, NULL);
        ff_tensor_release(y);
        y = next;
    }
    REQUIRE(y);
    CHECK(ff_backward(y, NULL, false) == FF_OK);
    CHECK(x->grad && ff_tensor_data(x->grad)[0] == 1.0f);
    ff_tensor_release(y); /* frees 200,000 nodes iteratively */
    ff_tensor_release(x);
}

TEST(saved_tensor_modified_in_place_is_refused)
{
    ff_tensor *a = leaf(2, 2, 7);
    int64_t s[2] = {2, 2};
    ff_tensor *b = ff_tensor_ones(s, 2); /* saved for dA */
    ff_tensor *c = mm(a, b);
    ff_tensor_fill_(b, 3.0f);
    CHECK(ff_backward(c, b, false) == FF_ERR_STATE && strstr(ff_last_error(), "modified in place"));
    ff_tensor *ts[] = {a, b, c};
    for (int i = 0; i < 3; i++)
        ff_tensor_release(ts[i]);
}

static int hook_calls;
static ff_status doubling_hook(void *ctx, const ff_tensor *g, ff_tensor **repl)
{
    (void)ctx;
    hook_calls++;
    ff_tensor *two = ff_tensor_scalar(2.0f);
    *repl = ff_binary(FF_MUL, g, two);
    ff_tensor_release(two);
    return FF_OK;
}
static void count_free(void *ctx) { (*(int *)ctx)++; }

TEST(hooks_replace_and_are_freed)
{
    int freed = 0;
    ff_tensor *a = leaf(1, 2, 8), *b = leaf(2, 1, 9);
    CHECK(ff_tensor_register_hook(a, doubling_hook, &freed, count_free) == FF_OK);
    ff_tensor *c = mm(a, b);
    hook_calls = 0;
    CHECK(ff_backward(c, NULL, false) == FF_OK);
    CHECK(hook_calls == 1);
    CHECK_NEAR(ff_tensor_data(a->grad)[1], 2 * ff_tensor_data(b)[1], 1e-6);
    ff_tensor_release(c);
    ff_tensor_release(b);
    ff_tensor_release(a);
    CHECK(freed == 1);
}

TEST(forward_failure_records_nothing)
{
    ff_tensor *a = leaf(2, 3, 10), *b = leaf(2, 3, 11);
    CHECK(mm(a, b) == NULL && strstr(ff_last_error(), "matmul"));
    ff_tensor_release(a);
    ff_tensor_release(b);
}
