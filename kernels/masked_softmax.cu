// Fused scale + key-padding mask + softmax over attention scores (src/ops/masked_softmax.rs):
// one block per query row of `len` keys; row r belongs to batch r / rows_per_batch, whose mask
// (u32, nonzero = token) says which keys count. Masked keys get probability 0; a row with no
// key at all is uniform, as the additive dtype-minimum bias of the reference gives. Saves the
// scale and bias passes and their two [B, heads, T, T] temporaries.
#include "common.cuh"

template <typename T>
__device__ void masked_softmax_impl(const T *scores, const uint32_t *mask, T *out, uint32_t rows,
                                    uint32_t len, uint32_t rows_per_batch, float scale) {
    __shared__ float buf[TR_MAX_BLOCK];
    for (uint32_t row = blockIdx.x; row < rows; row += gridDim.x) {
        const T *s = scores + (size_t)row * len;
        const uint32_t *m = mask + (size_t)(row / rows_per_batch) * len;
        T *o = out + (size_t)row * len;
        float mx = -INFINITY, kept = 0.0f;
        for (uint32_t j = threadIdx.x; j < len; j += blockDim.x) {
            if (m[j]) {
                mx = fmaxf(mx, tr_f32(s[j]) * scale);
                kept += 1.0f;
            }
        }
        mx = tr_block_max(mx, buf);
        if (tr_block_sum(kept, buf) == 0.0f) {
            for (uint32_t j = threadIdx.x; j < len; j += blockDim.x) tr_store(o + j, 1.0f / (float)len);
            continue;
        }
        float sum = 0.0f;
        for (uint32_t j = threadIdx.x; j < len; j += blockDim.x) {
            sum += m[j] ? tr_exp(tr_f32(s[j]) * scale - mx) : 0.0f;
        }
        float inv = 1.0f / tr_block_sum(sum, buf);
        for (uint32_t j = threadIdx.x; j < len; j += blockDim.x) {
            tr_store(o + j, m[j] ? tr_exp(tr_f32(s[j]) * scale - mx) * inv : 0.0f);
        }
    }
}

#define TR_MASKED_SOFTMAX(NAME, T)                                                            \
    extern "C" __global__ void NAME(const T *scores, const uint32_t *mask, T *out,             \
                                    uint32_t rows, uint32_t len, uint32_t rows_per_batch,      \
                                    float scale) {                                            \
        masked_softmax_impl<T>(scores, mask, out, rows, len, rows_per_batch, scale);          \
    }

TR_FOR_FLOAT_TYPES(TR_MASKED_SOFTMAX, masked_softmax)
