// The sensitivity reduction of src/ops/sensitivity.rs: label probabilities [N, 1+K, L] of each
// input and its K perturbed copies -> features [N, 5]. One thread per input: K and L are small
// (8 copies, 4 labels), N is the batch, and a sequential loop per input keeps the operation
// order of the CPU op, so the two differ only by the device's logf.
#include "common.cuh"

#define TR_SENSITIVITY_FEATURES 5

template <typename T>
__device__ void sensitivity_impl(const T *probs, T *out, uint32_t n, uint32_t k1, uint32_t l,
                                 float threshold) {
    for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        float f[TR_SENSITIVITY_FEATURES];
        tr_sensitivity_row(probs + (size_t)i * k1 * l, (int)k1, (int)l, threshold, f);
        for (int j = 0; j < TR_SENSITIVITY_FEATURES; ++j) {
            tr_store(out + (size_t)i * TR_SENSITIVITY_FEATURES + j, f[j]);
        }
    }
}

#define TR_SENSITIVITY(NAME, T)                                                              \
    extern "C" __global__ void NAME(const T *probs, T *out, uint32_t n, uint32_t k1,          \
                                    uint32_t l, float threshold) {                           \
        sensitivity_impl<T>(probs, out, n, k1, l, threshold);                                \
    }

TR_SENSITIVITY(sensitivity_f32, float)
TR_SENSITIVITY(sensitivity_f64, double)
#if defined(__CUDACC__) && !defined(TREMBLE_EMU)
TR_SENSITIVITY(sensitivity_f16, __half)
TR_SENSITIVITY(sensitivity_bf16, __nv_bfloat16)
#endif
