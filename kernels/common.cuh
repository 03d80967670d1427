// Shared by every kernel and by the host twin (kernels/emu.cpp): integer RNG and per-row math
// as __host__ __device__ functions, so the same source runs on the GPU and, compiled by the
// host C++ compiler, on the CPU, where tests compare it bit for bit with the Rust twins.
#pragma once

#if defined(TREMBLE_EMU)
#include "emu.h"
#elif !defined(__CUDACC__)
#define __host__
#define __device__
#define __forceinline__ inline
#endif

#include <stdint.h>
#include <math.h>
#include <string.h>

#define TR_HD __host__ __device__ __forceinline__

// SplitMix64's increment, the golden ratio in 64 bits (src/perturb/mod.rs GOLDEN).
#define TR_GOLDEN 0x9E3779B97F4A7C15ull

// SplitMix64's finalizer (src/rng.rs mix).
TR_HD uint64_t tr_mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// The (r+1)-th SplitMix64 output from state t, computed directly (counter-based).
TR_HD uint64_t tr_counter(uint64_t t, uint32_t r) {
    return tr_mix(t + (uint64_t)(r + 1) * TR_GOLDEN);
}

// The stream of one (input, edit, copy) (src/perturb/mod.rs stream).
TR_HD uint64_t tr_stream(uint64_t input_hash, uint64_t tag, uint64_t copy) {
    return tr_mix(input_hash ^ tr_mix(tag * TR_GOLDEN + copy));
}

// One FNV-1a step over an id's four little-endian bytes.
TR_HD uint64_t tr_fnv_id(uint64_t h, uint32_t id) {
    for (int b = 0; b < 4; ++b) {
        h = (h ^ (uint64_t)((id >> (8 * b)) & 0xFF)) * 0x100000001B3ull;
    }
    return h;
}

// High 64 bits of a 64x64-bit product.
TR_HD uint64_t tr_mulhi(uint64_t a, uint64_t b) {
#if defined(__CUDA_ARCH__)
    return __umul64hi(a, b);
#else
    return (uint64_t)(((unsigned __int128)a * b) >> 64);
#endif
}

// ceil(rate * n), forgiving float noise (src/perturb/mod.rs edit_count); IEEE double on both
// sides, so host and device agree exactly.
TR_HD uint32_t tr_edit_count(double rate, uint32_t n) {
    if (!(rate > 0.0) || n == 0) return 0;
    double x = fmin(rate, 1.0) * (double)n;
    double nearest = round(x);
    double count = fabs(x - nearest) <= 1e-9 * fmax(nearest, 1.0) ? nearest : ceil(x);
    uint32_t c = (uint32_t)count;
    return c < n ? c : n;
}

// Whether `id` is the mask id or one of the sorted `special` ids.
TR_HD bool tr_is_protected(uint32_t id, const uint32_t *special, uint32_t n_special, uint32_t mask_id) {
    if (id == mask_id) return true;
    uint32_t lo = 0, hi = n_special;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (special[mid] < id) lo = mid + 1; else hi = mid;
    }
    return lo < n_special && special[lo] == id;
}

// Salt of the substitute-value stream (src/perturb/tokens.rs VALUE_SALT).
#define TR_VALUE_SALT 0xD1B54A32D192ED03ull

// The replacement of the token with ordinal r (src/perturb/tokens.rs substitute).
TR_HD uint32_t tr_substitute(uint64_t t, uint32_t r, uint32_t original, uint32_t vocab,
                             const uint32_t *special, uint32_t n_special, uint32_t mask_id) {
    uint64_t v = tr_counter(t ^ TR_VALUE_SALT, r);
    uint32_t id = (uint32_t)tr_mulhi(v, (uint64_t)vocab);
    while (tr_is_protected(id, special, n_special, mask_id) || id == original) {
        id = id + 1 == vocab ? 0 : id + 1;
    }
    return id;
}

// Jensen-Shannon divergence of two label rows in nats (src/ops/sensitivity.rs jsd).
#define TR_JS_EPS 1e-12f

// Loads as f32 and stores from f32, whatever the storage dtype (the host twin only
// instantiates float).
TR_HD float tr_f32(float x) { return x; }
TR_HD float tr_f32(double x) { return (float)x; }
__device__ __forceinline__ void tr_store(float *o, float v) { *o = v; }
__device__ __forceinline__ void tr_store(double *o, float v) { *o = (double)v; }
#if defined(__CUDACC__) && !defined(TREMBLE_EMU)
#include <cuda_fp16.h>
#include <cuda_bf16.h>
TR_HD float tr_f32(__half x) { return __half2float(x); }
TR_HD float tr_f32(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ void tr_store(__half *o, float v) { *o = __float2half_rn(v); }
__device__ __forceinline__ void tr_store(__nv_bfloat16 *o, float v) { *o = __float2bfloat16_rn(v); }
#endif

template <typename T>
TR_HD float tr_jsd(const T *p, const T *q, int l) {
    float kl_p = 0.0f, kl_q = 0.0f;
    for (int i = 0; i < l; ++i) {
        float a = tr_f32(p[i]), b = tr_f32(q[i]);
        float ln_m = logf((a + b) * 0.5f + TR_JS_EPS);
        kl_p += a * (logf(a + TR_JS_EPS) - ln_m);
        kl_q += b * (logf(b + TR_JS_EPS) - ln_m);
    }
    float js = (kl_p + kl_q) * 0.5f;
    return js > 0.0f ? js : 0.0f;
}

// The five sensitivity features of one input's [1+K, L] block `p` (src/ops/sensitivity.rs
// features), in the same operation order so the host build matches the Rust twin bit for bit.
template <typename T>
TR_HD void tr_sensitivity_row(const T *p, int k1, int l, float threshold, float *out) {
    float k = (float)(k1 - 1);
    float a0 = 1.0f - tr_f32(p[0]);
    bool decision0 = a0 >= threshold;
    float sum_delta = 0.0f, flips = 0.0f, max_delta = 0.0f, js = 0.0f;
    for (int v = 1; v < k1; ++v) {
        float a = 1.0f - tr_f32(p[v * l]);
        sum_delta += a - a0;
        flips += (float)((a >= threshold) != decision0);
        max_delta = fmaxf(max_delta, fabsf(a - a0));
        js += tr_jsd(p, p + v * l, l);
    }
    float mean_delta = sum_delta / k;
    float var = 0.0f;
    for (int v = 1; v < k1; ++v) {
        float d = 1.0f - tr_f32(p[v * l]) - a0 - mean_delta;
        var += d * d;
    }
    var /= k;
    out[0] = a0 + mean_delta;
    out[1] = sqrtf(var);
    out[2] = flips / k;
    out[3] = max_delta;
    out[4] = js / k;
}

// erf(x) in f32 as a rational function of x (odd numerator of degree 13, even denominator of
// degree 8; the coefficients of Eigen's float erf), clamped at |x| = 4 where erf rounds to +-1
// in f32: max abs error about 4e-7, no exp, so the CPU twin vectorizes
// (src/ops/bias_gelu.rs erf, the same operations in the same order).
TR_HD float tr_erf(float x) {
    x = x < -4.0f ? -4.0f : (x > 4.0f ? 4.0f : x);
    float x2 = x * x;
    float p = -2.72614225801306e-10f;
    p = p * x2 + 2.77068142495902e-08f;
    p = p * x2 + -2.10102402082508e-06f;
    p = p * x2 + -5.69250639462346e-05f;
    p = p * x2 + -7.34990630326855e-04f;
    p = p * x2 + -2.95459980854025e-03f;
    p = p * x2 + -1.60960333262415e-02f;
    float q = -1.45660718464996e-05f;
    q = q * x2 + -2.13374055278905e-04f;
    q = q * x2 + -1.68282697438203e-03f;
    q = q * x2 + -7.37332916720468e-03f;
    q = q * x2 + -1.42647390514189e-02f;
    return x * p / q;
}

// GELU with the exact (erf) form BERT uses.
TR_HD float tr_gelu(float x) { return 0.5f * x * (1.0f + tr_erf(x * 0.70710678118654752f)); }

// exp(x) in f32 for x <= 0 (softmax logits minus their maximum): Cody-Waite reduction by
// ln 2 and the degree-6 polynomial of Cephes' expf, rounded with the 1.5 * 2^23 trick and scaled
// by writing the exponent bits; relative error about 2e-7, and inputs below -87 give the
// smallest normal float instead of 0. No libm call, so the CPU twin (src/ops/masked_softmax.rs
// exp) vectorizes; same operations in the same order.
TR_HD float tr_exp(float x) {
    x = x < -87.0f ? -87.0f : (x > 0.0f ? 0.0f : x);
    float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    float y = p * (r * r) + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
#if defined(__CUDA_ARCH__)
    return y * __int_as_float(bits);
#else
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return y * scale;
#endif
}

// Largest block the row kernels take; their shared reduction buffers have this many slots.
#define TR_MAX_BLOCK 1024

// Sum of `v` over the block, returned to every thread. blockDim.x must be a power of two;
// `buf` is shared memory of at least blockDim.x floats.
__device__ __forceinline__ float tr_block_sum(float v, float *buf) {
    buf[threadIdx.x] = v;
    __syncthreads();
    for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) buf[threadIdx.x] += buf[threadIdx.x + s];
        __syncthreads();
    }
    float total = buf[0];
    __syncthreads();
    return total;
}

// Maximum of `v` over the block, as tr_block_sum.
__device__ __forceinline__ float tr_block_max(float v, float *buf) {
    buf[threadIdx.x] = v;
    __syncthreads();
    for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) buf[threadIdx.x] = fmaxf(buf[threadIdx.x], buf[threadIdx.x + s]);
        __syncthreads();
    }
    float m = buf[0];
    __syncthreads();
    return m;
}

// Instantiates KERNEL_MACRO for f32, and for f16 and bf16 where nvcc compiles (the host twin
// has no half types).
#if defined(__CUDACC__) && !defined(TREMBLE_EMU)
#define TR_FOR_FLOAT_TYPES(M, STEM) M(STEM##_f32, float) M(STEM##_f16, __half) M(STEM##_bf16, __nv_bfloat16)
#else
#define TR_FOR_FLOAT_TYPES(M, STEM) M(STEM##_f32, float)
#endif
