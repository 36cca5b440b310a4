// kernels/rmsnorm.cuh: RMSNorm across all heads (norm_q, norm_k of self- and cross-attention; official model.py WanRMSNorm)
//
//   out = x·rstd·w ,  rstd = 1/sqrt(mean_c(x²) + eps) over the whole model dim C = H·d (not per head)
//
// Shapes: inp, out [N, C] floatX (inp is the q or k GEMM output, out feeds RoPE / attention); w [C] fp32;
// rstd [N] fp32. Statistic and product in fp32, one rounding to floatX at the end. (The official code rounds
// x·rstd to bf16 before multiplying by w; this rounds once, a difference below bf16 resolution.)
//
// Overwritten: out, rstd (forward); dinp, scratch (backward). dinp may alias dout.
// Accumulated (+=): dw (fp32 parameter gradient).
// dw is summed without atomics: per-chunk column sums in shared memory, then a fixed-order pass (kernels/reduce.cuh).
// Version 1 (the simple one), checked and timed by dev/cuda/rmsnorm.cu; not yet run on a GPU (dev/cuda/README.md).
#pragma once
#include "common.cuh"
#include "precision.cuh"
#include "reduce.cuh"

#define RMS_FWD_THREADS 256   // one warp per row
#define RMS_BWD_THREADS 256   // one block per chunk of rows

__global__ void rmsnorm_forward_kernel(floatX* out, float* rstd, const floatX* inp, const float* w, int N, int C, float eps) {
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= N) return;
    const floatX* x = inp + (size_t)row * C;
    float s = 0.f;
    for (int c = lane; c < C; c += 32) { float v = to_float(x[c]); s += v * v; }
    float r = rsqrtf(warp_sum(s) / C + eps);
    floatX* o = out + (size_t)row * C;
    for (int c = lane; c < C; c += 32) o[c] = from_float<floatX>(to_float(x[c]) * r * w[c]);
    if (lane == 0) rstd[row] = r;
}

// inverts y = x·rstd·w:  dx = rstd·(dy·w − x·rstd²·mean_c(dy·w·x)) ;  dw += Σ_n dy·x·rstd
// grid nchunks, block RMS_BWD_THREADS, dynamic shared C floats; partials [nchunks, C]
__global__ void rmsnorm_backward_kernel(floatX* dinp, float* partials, const floatX* dout, const floatX* inp, const float* w,
                                        const float* rstd, int N, int C) {
    extern __shared__ float acc[];                          // [C]: Σ dy·x·rstd over this chunk's rows
    __shared__ float red[32];
    for (int c = threadIdx.x; c < C; c += blockDim.x) acc[c] = 0.f;
    int r0 = blockIdx.x * REDUCE_ROWS_PER_CHUNK, r1 = min(r0 + REDUCE_ROWS_PER_CHUNK, N);
    for (int n = r0; n < r1; n++) {
        const floatX* x = inp + (size_t)n * C;
        const floatX* g = dout + (size_t)n * C;
        float r = rstd[n];
        float s = 0.f;
        for (int c = threadIdx.x; c < C; c += blockDim.x) s += to_float(g[c]) * w[c] * to_float(x[c]);
        float mean_gwx = block_sum(s, red) / C;
        floatX* dx = dinp + (size_t)n * C;
        for (int c = threadIdx.x; c < C; c += blockDim.x) {
            float dy = to_float(g[c]), xv = to_float(x[c]);   // read both before the write: dinp may alias dout
            dx[c] = from_float<floatX>(r * (dy * w[c] - xv * r * r * mean_gwx));
            acc[c] += dy * xv * r;                            // only this thread touches column c
        }
    }
    float* p = partials + (size_t)blockIdx.x * C;
    for (int c = threadIdx.x; c < C; c += blockDim.x) p[c] = acc[c];
}

// out [N, C] = x·rstd·w
static inline void rmsnorm_forward(floatX* out, float* rstd, const floatX* inp, const float* w, int N, int C, float eps, cudaStream_t stream) {
    int rows_per_block = RMS_FWD_THREADS / 32;
    rmsnorm_forward_kernel<<<(N + rows_per_block - 1) / rows_per_block, RMS_FWD_THREADS, 0, stream>>>(out, rstd, inp, w, N, C, eps);
    cudaCheck(cudaGetLastError());
}

static inline size_t rmsnorm_backward_scratch_floats(int N, int C) { return (size_t)reduce_num_chunks(N) * C; }

// inverts out = x·rstd·w: dinp = ∂out/∂x ᵀ·dout (overwritten), dw += Σ_n dout·x·rstd (dw may be NULL: a frozen norm)
// scratch: rmsnorm_backward_scratch_floats(N, C) floats
static inline void rmsnorm_backward(floatX* dinp, float* dw, float* scratch, const floatX* dout, const floatX* inp, const float* w,
                                    const float* rstd, int N, int C, cudaStream_t stream) {
    int nchunks = reduce_num_chunks(N);
    size_t smem = (size_t)C * sizeof(float);
    if (smem > 48 * 1024) cudaCheck(cudaFuncSetAttribute(rmsnorm_backward_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    rmsnorm_backward_kernel<<<nchunks, RMS_BWD_THREADS, smem, stream>>>(dinp, scratch, dout, inp, w, rstd, N, C);
    cudaCheck(cudaGetLastError());
    if (dw) column_partials_reduce(dw, 0, scratch, C, nchunks, C, 1, stream);
}
