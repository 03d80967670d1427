// Host twin of the kernels: their .cu source compiled by the host C++ compiler under emu.h,
// with C entry points that launch them on emulated blocks. Linked into the crate for the tests
// in src/ops (see kernels/README.md); nothing on the scoring path calls it.
#define TREMBLE_EMU
#include "emu.h"

#include <barrier>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

thread_local tr_dim3 threadIdx = {0, 0, 0};
tr_dim3 blockIdx = {0, 0, 0}, blockDim = {1, 1, 1}, gridDim = {1, 1, 1};
static std::barrier<> *block_barrier = nullptr;

void __syncthreads() { block_barrier->arrive_and_wait(); }

// Launches share the grid globals and the kernels' static shared memory: one at a time.
static std::mutex launch_lock;

// Runs `kernel` on a grid of `grid` blocks of `block` threads, one block at a time.
static void emu_launch(unsigned grid, unsigned block, const std::function<void()> &kernel) {
    std::lock_guard<std::mutex> guard(launch_lock);
    gridDim = {grid, 1, 1};
    blockDim = {block, 1, 1};
    for (unsigned b = 0; b < grid; ++b) {
        blockIdx = {b, 0, 0};
        std::barrier<> barrier((std::ptrdiff_t)block);
        block_barrier = &barrier;
        std::vector<std::thread> threads;
        for (unsigned t = 0; t < block; ++t) {
            threads.emplace_back([t, &kernel] {
                threadIdx = {t, 0, 0};
                kernel();
            });
        }
        for (auto &th : threads) th.join();
        block_barrier = nullptr;
    }
}

#include "bias_gelu.cu"
#include "layer_norm.cu"
#include "masked_softmax.cu"
#include "mean_pool.cu"
#include "perturb_tokens.cu"
#include "sensitivity.cu"

extern "C" {

void tremble_emu_sensitivity_f32(const float *probs, float *out, uint32_t n, uint32_t k1,
                                 uint32_t l, float threshold, uint32_t grid, uint32_t block) {
    emu_launch(grid, block, [&] { sensitivity_f32(probs, out, n, k1, l, threshold); });
}

void tremble_emu_perturb_tokens(const uint32_t *ids, uint32_t *out, uint32_t n, uint32_t len,
                                uint32_t copies, uint32_t edit, double rate, uint64_t seed,
                                uint32_t copy0, const uint32_t *special, uint32_t n_special,
                                uint32_t mask_id, uint32_t vocab, uint32_t pad_id,
                                uint32_t block) {
    emu_launch(n * copies, block, [&] {
        perturb_tokens(ids, out, n, len, copies, edit, rate, seed, copy0, special, n_special,
                       mask_id, vocab, pad_id);
    });
}

void tremble_emu_layer_norm_f32(const float *x, const float *r, const float *w, const float *b,
                                float *out, uint32_t rows, uint32_t h, uint32_t residual,
                                float eps, uint32_t grid, uint32_t block) {
    emu_launch(grid, block, [&] { layer_norm_f32(x, r, w, b, out, rows, h, residual, eps); });
}

void tremble_emu_bias_gelu_f32(const float *x, const float *bias, float *out, uint32_t n,
                               uint32_t cols, uint32_t grid, uint32_t block) {
    emu_launch(grid, block, [&] { bias_gelu_f32(x, bias, out, n, cols); });
}

void tremble_emu_masked_softmax_f32(const float *scores, const uint32_t *mask, float *out,
                                    uint32_t rows, uint32_t len, uint32_t rows_per_batch,
                                    float scale, uint32_t grid, uint32_t block) {
    emu_launch(grid, block,
               [&] { masked_softmax_f32(scores, mask, out, rows, len, rows_per_batch, scale); });
}

void tremble_emu_mean_pool_f32(const float *x, const uint32_t *mask, float *out, uint32_t batch,
                               uint32_t len, uint32_t h, uint32_t grid, uint32_t block) {
    emu_launch(grid, block, [&] { mean_pool_f32(x, mask, out, batch, len, h); });
}

// The per-element helpers on their own, for bit-for-bit checks against the Rust twins.
uint64_t tremble_emu_mix(uint64_t z) { return tr_mix(z); }
uint32_t tremble_emu_edit_count(double rate, uint32_t n) { return tr_edit_count(rate, n); }
float tremble_emu_gelu(float x) { return tr_gelu(x); }
float tremble_emu_exp(float x) { return tr_exp(x); }
}
