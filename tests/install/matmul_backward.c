/* A C user of the installed engine (tests/lua/test_module.lua builds it
 * with `pkg-config --cflags --libs firefly`): C = A B, s = sum(C), ds/dA. */
#include <stdio.h>
#include <ff.h>

int main(void)
{
    const float a[] = {1, 2, 3, 4, 5, 6}, b[] = {1, 0, 0, 1, 1, 1};
    ff_tensor *A = ff_tensor_from_data(a, (const int64_t[]){2, 3}, 2);
    ff_tensor *B = ff_tensor_from_data(b, (const int64_t[]){3, 2}, 2);
    ff_tensor_set_requires_grad(A, true);
    ff_tensor *C = ff_apply(FF_OP_MATMUL, (ff_tensor *[]){A, B}, 2, NULL, NULL);
    ff_params all = {.i = {-1, 0}};
    ff_tensor *s = C ? ff_apply(FF_OP_SUM, (ff_tensor *[]){C}, 1, &all, NULL) : NULL;
    if (s == NULL || ff_backward(s, NULL, false) != FF_OK) {
        fprintf(stderr, "error: %s\n", ff_last_error());
        return 1;
    }
    const float *g = ff_tensor_data(ff_tensor_grad(A));
    printf("sum %g grad %g %g %g %g %g %g\n", ff_tensor_data(s)[0], g[0], g[1], g[2], g[3], g[4], g[5]);
    ff_tensor_release(s);
    ff_tensor_release(C);
    ff_tensor_release(B);
    ff_tensor_release(A);
    return 0;
}
