// Fused bias add + GELU(erf) after a bias-free matmul (src/ops/bias_gelu.rs): one element per
// thread, grid-stride; the bias is indexed by column. Saves candle's separate bias add and
// activation passes over the [tokens, intermediate] tensor, the largest of the encoder.
#include "common.cuh"

template <typename T>
__device__ void bias_gelu_impl(const T *x, const T *bias, T *out, uint32_t n, uint32_t cols) {
    for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        tr_store(out + i, tr_gelu(tr_f32(x[i]) + tr_f32(bias[i % cols])));
    }
}

#define TR_BIAS_GELU(NAME, T)                                                                 \
    extern "C" __global__ void NAME(const T *x, const T *bias, T *out, uint32_t n,             \
                                    uint32_t cols) {                                          \
        bias_gelu_impl<T>(x, bias, out, n, cols);                                             \
    }

TR_FOR_FLOAT_TYPES(TR_BIAS_GELU, bias_gelu)
