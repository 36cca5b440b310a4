// kernels/reduce.cuh: deterministic sums. No float atomics anywhere: every sum is taken in an order fixed by
// the problem's sizes alone, so the same inputs give the same bits on every run (and for any number of SMs).
//
//   warp_sum, block_sum, block_sum2   sums over a warp / a block, the result in every thread
//   block_max                         the max over a block (softmax's), the result in every thread
//   column_partials_reduce            out[g, c] += Σ_p partials[g, p, c]: the second pass of the column sums
//                                     (dγ, dβ, dgate, dbias) whose first pass writes one row of partials per block
//   column_sum                        out[c] += Σ_n in[n, c] for a [rows, C] matrix (the dbias of a Linear)
//
// The column-sum pattern used by layernorm, rmsnorm, residual and gemm (dbias): the rows of each group g
// (a sample, or all tokens) are cut into chunks of a fixed number of rows (REDUCE_ROWS_PER_CHUNK); one block
// sums its chunk per column into partials [G, nchunks, C] (overwritten), then column_partials_reduce adds the
// chunks up in a fixed order and ACCUMULATES (+=) into the gradient.
#pragma once
#include "common.cuh"
#include "precision.cuh"

#define REDUCE_ROWS_PER_CHUNK 32

static inline int reduce_num_chunks(int rows_per_group) {
    return (rows_per_group + REDUCE_ROWS_PER_CHUNK - 1) / REDUCE_ROWS_PER_CHUNK;
}

// a butterfly: every lane ends with the same bits (each step adds the same two numbers in every lane pair)
template <typename T> __device__ inline T warp_sum(T v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// sum over the block, returned to every thread. blockDim.x must be a multiple of 32 (at most 1024) and every
// thread of the block must call it. shared: 32 elements of scratch.
template <typename T> __device__ inline T block_sum(T v, T* shared) {
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
    v = warp_sum(v);
    __syncthreads(); // the previous call may still be reading `shared`
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    v = lane < nwarps ? shared[lane] : (T)0;
    return warp_sum(v); // every warp sums the same values in the same order
}

// the max over the block, returned to every thread (block_sum's pattern and rules; shared: 32 floats)
__device__ inline float block_max(float v, float* shared) {
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    __syncthreads();
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    v = lane < nwarps ? shared[lane] : -INFINITY;
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// two sums at once (one pair of barriers). shared: 64 floats.
__device__ inline float2 block_sum2(float a, float b, float* shared) {
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
    a = warp_sum(a);
    b = warp_sum(b);
    __syncthreads();
    if (lane == 0) {
        shared[warp] = a;
        shared[32 + warp] = b;
    }
    __syncthreads();
    a = lane < nwarps ? shared[lane] : 0.f;
    b = lane < nwarps ? shared[32 + lane] : 0.f;
    return make_float2(warp_sum(a), warp_sum(b));
}

// out[g·out_stride + c] += Σ_{p < nparts} partials[(g·nparts + p)·part_stride + c]   for c < C, g < G
// block (32, 8): x = a column of a 32-wide tile, y = one of 8 interleaved subsequences of p; the 8 subtotals
// are then added in order y = 0..7. grid (ceil(C/32), G).
__global__ void column_partials_reduce_kernel(float* out, int out_stride, const float* partials, int part_stride,
                                              int nparts, int C) {
    __shared__ float sub[8][33];
    int c = blockIdx.x * 32 + threadIdx.x, g = blockIdx.y;
    float s = 0.f;
    if (c < C)
        for (int p = threadIdx.y; p < nparts; p += 8) s += partials[((size_t)g * nparts + p) * part_stride + c];
    sub[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && c < C) {
        float t = 0.f;
        for (int k = 0; k < 8; k++) t += sub[k][threadIdx.x];
        out[(size_t)g * out_stride + c] += t;
    }
}

static inline void column_partials_reduce(float* out, int out_stride, const float* partials, int part_stride,
                                          int nparts, int C, int G, cudaStream_t stream) {
    dim3 grid((C + 31) / 32, G), block(32, 8);
    column_partials_reduce_kernel<<<grid, block, 0, stream>>>(out, out_stride, partials, part_stride, nparts, C);
    cudaCheck(cudaGetLastError());
}

// partials[p, c] = Σ_{rows of chunk p} in[n, c]. grid (nchunks, ceil(C/256)), block 256: thread = one column
template <typename T> __global__ void column_sum_partials_kernel(float* partials, const T* in, int rows, int C) {
    int c = blockIdx.y * blockDim.x + threadIdx.x;
    if (c >= C) return;
    int r0 = blockIdx.x * REDUCE_ROWS_PER_CHUNK, r1 = min(r0 + REDUCE_ROWS_PER_CHUNK, rows);
    float s = 0.f;
    for (int r = r0; r < r1; r++) s += to_float(in[(size_t)r * C + c]);
    partials[(size_t)blockIdx.x * C + c] = s;
}

static inline size_t column_sum_scratch_floats(int rows, int C) { return (size_t)reduce_num_chunks(rows) * C; }

// out[c] += Σ_n in[n, c], in [rows, C]. scratch: column_sum_scratch_floats(rows, C) floats (overwritten)
template <typename T>
static void column_sum(float* out, float* scratch, const T* in, int rows, int C, cudaStream_t stream) {
    int nchunks = reduce_num_chunks(rows);
    column_sum_partials_kernel<T><<<dim3(nchunks, (C + 255) / 256), 256, 0, stream>>>(scratch, in, rows, C);
    cudaCheck(cudaGetLastError());
    column_partials_reduce(out, 0, scratch, C, nchunks, C, 1, stream);
}
