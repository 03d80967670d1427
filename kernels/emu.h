// A small CUDA emulation for running the kernels' real source on CPU threads in tests: each
// block runs on its own set of blockDim.x std::threads (blocks one after another), threadIdx is
// thread-local, __shared__ memory is a function-local static (one block at a time, so shared by
// exactly that block's threads) and __syncthreads is a barrier. Enough to catch wrong indexing,
// strides and phase ordering; it says nothing about races, timing or warp-level behaviour.
#pragma once
#include <stdint.h>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static

struct tr_dim3 {
    unsigned x, y, z;
};
extern thread_local tr_dim3 threadIdx;
extern tr_dim3 blockIdx, blockDim, gridDim;
void __syncthreads();
