/* create.c: tensors made from values: constants, ranges, identity, data. */
#include <math.h>
#include <string.h>
#include "ff_tensor.h"

/* Largest element count a range may have (as in ff_shape_check). */
#define FF_MAX_NUMEL ((int64_t)1 << 60)

ff_tensor *ff_tensor_full(const int64_t *shape, int ndim, float value)
{
    ff_tensor *t = ff_tensor_empty(shape, ndim);
    if (t) {
        float *d = ff_tensor_data(t);
        int64_t n = ff_tensor_numel(t);
        for (int64_t i = 0; i < n; i++)
            d[i] = value;
    }
    return t;
}

ff_tensor *ff_tensor_zeros(const int64_t *shape, int ndim)
{
    return ff_tensor_full(shape, ndim, 0.0f);
}

ff_tensor *ff_tensor_ones(const int64_t *shape, int ndim)
{
    return ff_tensor_full(shape, ndim, 1.0f);
}

ff_tensor *ff_tensor_scalar(float value)
{
    return ff_tensor_full(NULL, 0, value);
}

ff_tensor *ff_tensor_from_data(const float *data, const int64_t *shape, int ndim)
{
    ff_tensor *t = ff_tensor_empty(shape, ndim);
    if (t)
        memcpy(ff_tensor_data(t), data, (size_t)ff_tensor_numel(t) * sizeof(float));
    return t;
}

ff_tensor *ff_tensor_arange(double start, double end, double step)
{
    if (step == 0 || step != step)
        return ff_error(FF_ERR_ARG, "arange: step must be non-zero, got %g", step), NULL;
    if (start != start || end != end)
        return ff_error(FF_ERR_ARG, "arange: start and end must be numbers, got %g and %g",
                        start, end), NULL;
    double count = ceil((end - start) / step);
    if (count < 0)
        count = 0;
    if (count > (double)FF_MAX_NUMEL)
        return ff_error(FF_ERR_MEM, "arange: %g elements is too many", count), NULL;
    int64_t n = (int64_t)count;
    ff_tensor *t = ff_tensor_empty(&n, 1);
    if (t) {
        float *d = ff_tensor_data(t);
        for (int64_t i = 0; i < n; i++)
            d[i] = (float)(start + (double)i * step);
    }
    return t;
}

ff_tensor *ff_tensor_linspace(double start, double end, int64_t n)
{
    if (n < 0)
        return ff_error(FF_ERR_ARG, "linspace: count must be >= 0, got %lld", (long long)n),
               NULL;
    ff_tensor *t = ff_tensor_empty(&n, 1);
    if (t) {
        float *d = ff_tensor_data(t);
        double step = n > 1 ? (end - start) / (double)(n - 1) : 0.0;
        for (int64_t i = 0; i < n; i++)
            d[i] = (float)(start + (double)i * step);
        if (n > 1)
            d[n - 1] = (float)end; /* exact endpoint, whatever the rounding */
    }
    return t;
}

ff_tensor *ff_tensor_eye(int64_t n, int64_t m)
{
    int64_t shape[2] = {n, m};
    ff_tensor *t = ff_tensor_zeros(shape, 2);
    if (t) {
        float *d = ff_tensor_data(t);
        for (int64_t i = 0; i < n && i < m; i++)
            d[i * m + i] = 1.0f;
    }
    return t;
}
