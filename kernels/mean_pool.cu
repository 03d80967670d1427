// Masked mean pooling (src/ops/mean_pool.rs): [B, T, H] hidden states and a [B, T] u32 mask ->
// [B, H], one thread per output element (adjacent threads read adjacent features, so loads
// coalesce), the token count clamped at 1e-9 so an all-padding row pools to zeros.
#include "common.cuh"

template <typename T>
__device__ void mean_pool_impl(const T *x, const uint32_t *mask, T *out, uint32_t batch,
                               uint32_t len, uint32_t h) {
    uint32_t n = batch * h;
    for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        uint32_t b = i / h, f = i % h;
        const uint32_t *m = mask + (size_t)b * len;
        const T *xb = x + (size_t)b * len * h + f;
        float sum = 0.0f, count = 0.0f;
        for (uint32_t t = 0; t < len; ++t) {
            if (m[t]) {
                sum += tr_f32(xb[(size_t)t * h]);
                count += 1.0f;
            }
        }
        tr_store(out + i, sum / fmaxf(count, 1e-9f));
    }
}

#define TR_MEAN_POOL(NAME, T)                                                                 \
    extern "C" __global__ void NAME(const T *x, const uint32_t *mask, T *out, uint32_t batch,  \
                                    uint32_t len, uint32_t h) {                               \
        mean_pool_impl<T>(x, mask, out, batch, len, h);                                       \
    }

TR_FOR_FLOAT_TYPES(TR_MEAN_POOL, mean_pool)
