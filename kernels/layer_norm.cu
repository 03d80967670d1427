// Fused residual add + LayerNorm (src/ops/layer_norm.rs): one block per row of h, the row read
// three times (mean, variance, output) instead of materialising x + r, block reductions in
// shared memory. Weight and bias have the input's dtype; arithmetic is f32.
#include "common.cuh"

template <typename T>
__device__ void layer_norm_impl(const T *x, const T *r, const T *w, const T *b, T *out,
                                uint32_t rows, uint32_t h, uint32_t residual, float eps) {
    __shared__ float buf[TR_MAX_BLOCK];
    for (uint32_t row = blockIdx.x; row < rows; row += gridDim.x) {
        const T *xr = x + (size_t)row * h;
        const T *rr = r + (size_t)row * h;
        float s = 0.0f;
        for (uint32_t j = threadIdx.x; j < h; j += blockDim.x) {
            s += tr_f32(xr[j]) + (residual ? tr_f32(rr[j]) : 0.0f);
        }
        float mean = tr_block_sum(s, buf) / (float)h;
        float q = 0.0f;
        for (uint32_t j = threadIdx.x; j < h; j += blockDim.x) {
            float d = tr_f32(xr[j]) + (residual ? tr_f32(rr[j]) : 0.0f) - mean;
            q += d * d;
        }
        float inv = 1.0f / sqrtf(tr_block_sum(q, buf) / (float)h + eps);
        for (uint32_t j = threadIdx.x; j < h; j += blockDim.x) {
            float d = tr_f32(xr[j]) + (residual ? tr_f32(rr[j]) : 0.0f) - mean;
            tr_store(out + (size_t)row * h + j, d * inv * tr_f32(w[j]) + tr_f32(b[j]));
        }
    }
}

#define TR_LAYER_NORM(NAME, T)                                                                \
    extern "C" __global__ void NAME(const T *x, const T *r, const T *w, const T *b, T *out,    \
                                    uint32_t rows, uint32_t h, uint32_t residual, float eps) { \
        layer_norm_impl<T>(x, r, w, b, out, rows, h, residual, eps);                          \
    }

TR_FOR_FLOAT_TYPES(TR_LAYER_NORM, layer_norm)
