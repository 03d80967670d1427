// Seeded token-level perturbation of id batches (src/perturb/tokens.rs, src/ops/perturb_tokens.rs):
// ids [N, S] -> copies [N, C, S]. One block per (input, copy). The scheme is counter-based, so
// every choice is a pure function of (seed, the input's editable ids, edit, copy, ordinal) and
// the block reproduces the CPU twin bit for bit:
//   1. thread 0 numbers the editable positions (not special, not the mask id), hashes their ids
//      (FNV-1a) and derives the stream t and the edit count m;
//   2. every thread keys its editable ordinals, key(r) = counter(t, r);
//   3. a position is edited when fewer than m keys are smaller than its own (keys are distinct);
//   4. substitute / mask write in place; drop compacts the kept ids left and pads with `pad_id`.
#include "common.cuh"

// Longest sequence a block handles: the shared key table is 8 bytes per position.
#define TR_PERTURB_MAX_LEN 1024

extern "C" __global__ void perturb_tokens(const uint32_t *ids, uint32_t *out, uint32_t n,
                                          uint32_t len, uint32_t copies, uint32_t edit,
                                          double rate, uint64_t seed, uint32_t copy0,
                                          const uint32_t *special, uint32_t n_special,
                                          uint32_t mask_id, uint32_t vocab, uint32_t pad_id) {
    __shared__ uint64_t keys[TR_PERTURB_MAX_LEN];
    __shared__ uint32_t ordinal[TR_PERTURB_MAX_LEN];
    __shared__ uint8_t hit[TR_PERTURB_MAX_LEN];
    __shared__ uint64_t stream_state;
    __shared__ uint32_t editable, edits;

    uint32_t row = blockIdx.x / copies;
    uint32_t copy = blockIdx.x % copies;
    if (row >= n || len > TR_PERTURB_MAX_LEN) return;
    const uint32_t *x = ids + (size_t)row * len;
    uint32_t *y = out + ((size_t)row * copies + copy) * len;

    if (threadIdx.x == 0) {
        uint64_t h = 0xCBF29CE484222325ull ^ tr_mix(seed);
        uint32_t e = 0;
        for (uint32_t i = 0; i < len; ++i) {
            if (tr_is_protected(x[i], special, n_special, mask_id)) {
                ordinal[i] = UINT32_MAX;
            } else {
                ordinal[i] = e++;
                h = tr_fnv_id(h, x[i]);
            }
        }
        // Tags 101 / 102 / 103: substitute / drop / mask (TokenEdit::tag).
        stream_state = tr_stream(tr_mix(h), 101 + (uint64_t)edit, (uint64_t)copy0 + copy);
        editable = e;
        edits = tr_edit_count(rate, e);
    }
    __syncthreads();
    uint64_t t = stream_state;
    uint32_t e = editable, m = edits;
    for (uint32_t r = threadIdx.x; r < e; r += blockDim.x) keys[r] = tr_counter(t, r);
    __syncthreads();
    for (uint32_t i = threadIdx.x; i < len; i += blockDim.x) {
        uint32_t r = ordinal[i];
        uint8_t h = 0;
        if (r != UINT32_MAX && m > 0) {
            uint64_t mine = keys[r];
            uint32_t smaller = 0;
            for (uint32_t s = 0; s < e && smaller < m; ++s) smaller += keys[s] < mine;
            h = smaller < m;
        }
        hit[i] = h;
        if (edit != 1) {
            uint32_t v = x[i];
            if (h) {
                v = edit == 0 ? tr_substitute(t, r, x[i], vocab, special, n_special, mask_id)
                              : mask_id;
            }
            y[i] = v;
        }
    }
    if (edit == 1) {
        __syncthreads();
        if (threadIdx.x == 0) {
            uint32_t o = 0;
            for (uint32_t i = 0; i < len; ++i) {
                if (!hit[i]) y[o++] = x[i];
            }
            for (; o < len; ++o) y[o] = pad_id;
        }
    }
}
