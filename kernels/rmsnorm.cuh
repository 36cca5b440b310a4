// kernels/rmsnorm.cuh: RMSNorm across all heads (norm_q, norm_k of self- and cross-attention; official model.py
// WanRMSNorm)
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
// Forward version 2 (one block per row in registers, 128-bit loads) where the shape allows, and rmsnorm_rope_forward:
// RMSNorm and the 3D RoPE of q or k in one pass (checked by dev/cuda/rope.cu against rmsnorm then rope).
#pragma once
#include "common.cuh"
#include "precision.cuh"
#include "reduce.cuh"
#include "rope.cuh" // rope_forward: rmsnorm_rope_forward's fallback

#define RMS_FWD_THREADS 256 // one warp per row
#define RMS_BWD_THREADS 256 // one block per chunk of rows

__global__ void rmsnorm_forward_kernel(floatX* out, float* rstd, const floatX* inp, const float* w, int N, int C,
                                       float eps) {
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= N) return;
    const floatX* x = inp + (size_t)row * C;
    float s = 0.f;
    for (int c = lane; c < C; c += 32) {
        float v = to_float(x[c]);
        s += v * v;
    }
    float r = rsqrtf(warp_sum(s) / C + eps);
    floatX* o = out + (size_t)row * C;
    for (int c = lane; c < C; c += 32) o[c] = from_float<floatX>(to_float(x[c]) * r * w[c]);
    if (lane == 0) rstd[row] = r;
}

// inverts y = x·rstd·w:  dx = rstd·(dy·w − x·rstd²·mean_c(dy·w·x)) ;  dw += Σ_n dy·x·rstd
// grid nchunks, block RMS_BWD_THREADS, dynamic shared C floats; partials [nchunks, C]
__global__ void rmsnorm_backward_kernel(floatX* dinp, float* partials, const floatX* dout, const floatX* inp,
                                        const float* w, const float* rstd, int N, int C) {
    extern __shared__ float acc[]; // [C]: Σ dy·x·rstd over this chunk's rows
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
            float dy = to_float(g[c]), xv = to_float(x[c]); // read both before the write: dinp may alias dout
            dx[c] = from_float<floatX>(r * (dy * w[c] - xv * r * r * mean_gwx));
            acc[c] += dy * xv * r; // only this thread touches column c
        }
    }
    float* p = partials + (size_t)blockIdx.x * C;
    for (int c = threadIdx.x; c < C; c += blockDim.x) p[c] = acc[c];
}

// ---------------------------------------------------------------------------------------------------------
// forward, version 2: one block per row, RMS_V2_VEC elements per 128-bit load (8 bf16 or 4 fp32), the row held in
// registers (RMS_V2_MAXV loads per thread at most), optionally followed in the same pass by the 3D RoPE of the q or k
// it normalises (kernels/rope.cuh's rotation, table cs [L, head_dim/2, 2], token n of the row taken as row mod L):
//   out = R(θ_n)·(x·rstd·w)   instead of rmsnorm_forward writing x·rstd·w and rope_forward reading it back.
// The sum of squares runs per thread over its columns in order, then over the block (block_sum): a fixed order, not
// version 1's. The rotation is rope_rotate's expression on the unrounded product, so in the fp32 build the fused form
// is bit for bit rmsnorm (version 2) then rope; in bf16 it skips one rounding of the product (dev/cuda/rmsnorm.cu).
// One 32-bit modulo per row (the token) and one per load (the pair's index in its head); no 64-bit division.
#define RMS_V2_VEC  FLOATX_VEC16
#define RMS_V2_MAXV 8

// cs NULL: no rotation
__global__ void rmsnorm_forward_v2_kernel(floatX* out, float* rstd, const floatX* inp, const float* w, const float* cs,
                                          int L, int head_dim, int C, float eps) {
    __shared__ float red[32];
    const int row = blockIdx.x;
    const size_t base = (size_t)row * C;
    float v[RMS_V2_MAXV][RMS_V2_VEC];
    float s = 0.f;
#pragma unroll
    for (int k = 0; k < RMS_V2_MAXV; k++) {
        const int c = RMS_V2_VEC * (threadIdx.x + k * blockDim.x);
        if (c < C) {
            floatx_load16(inp + base + c, v[k]);
#pragma unroll
            for (int i = 0; i < RMS_V2_VEC; i++) s += v[k][i] * v[k][i];
        }
    }
    const float r = rsqrtf(block_sum(s, red) / C + eps);
    const int half = head_dim / 2;
    const float* tab = cs ? cs + (size_t)(row % L) * half * 2 : NULL;
#pragma unroll
    for (int k = 0; k < RMS_V2_MAXV; k++) {
        const int c = RMS_V2_VEC * (threadIdx.x + k * blockDim.x);
        if (c < C) {
            float o[RMS_V2_VEC];
#pragma unroll
            for (int i = 0; i < RMS_V2_VEC; i++) o[i] = v[k][i] * r * w[c + i];
            if (tab) {
                const int p0 = (c % head_dim) / 2; // the load's first pair within its head (head_dim % RMS_V2_VEC == 0)
#pragma unroll
                for (int i = 0; i < RMS_V2_VEC / 2; i++) {
                    const float co = tab[2 * (p0 + i)], si = tab[2 * (p0 + i) + 1], a = o[2 * i], b = o[2 * i + 1];
                    o[2 * i] = a * co - b * si;
                    o[2 * i + 1] = a * si + b * co;
                }
            }
            floatx_store16(out + base + c, o);
        }
    }
    if (threadIdx.x == 0) rstd[row] = r;
}

// threads per row for version 2, or 0 when it cannot take the shape (C or head_dim not a multiple of RMS_V2_VEC,
// misaligned rows, too wide a row)
static inline int rmsnorm_v2_threads(int N, int C, int head_dim, uintptr_t align) {
    if (N <= 0 || C % RMS_V2_VEC || (head_dim > 0 && head_dim % RMS_V2_VEC) || align % 16) return 0;
    int t = 32;
    while (t < 128 && RMS_V2_VEC * t < C) t *= 2;
    while (t < 1024 && C > RMS_V2_VEC * t * RMS_V2_MAXV) t *= 2;
    return C <= RMS_V2_VEC * t * RMS_V2_MAXV ? t : 0;
}

// out [N, C] = x·rstd·w   (version 2 where the shape allows, else version 1)
static inline void rmsnorm_forward(floatX* out, float* rstd, const floatX* inp, const float* w, int N, int C, float eps,
                                   cudaStream_t stream) {
    const int t = rmsnorm_v2_threads(N, C, 0, (uintptr_t)out | (uintptr_t)inp);
    if (t) {
        rmsnorm_forward_v2_kernel<<<N, t, 0, stream>>>(out, rstd, inp, w, NULL, 1, 0, C, eps);
        cudaCheck(cudaGetLastError());
        return;
    }
    int rows_per_block = RMS_FWD_THREADS / 32;
    rmsnorm_forward_kernel<<<(N + rows_per_block - 1) / rows_per_block, RMS_FWD_THREADS, 0, stream>>>(out, rstd, inp, w,
                                                                                                      N, C, eps);
    cudaCheck(cudaGetLastError());
}

static inline size_t rmsnorm_backward_scratch_floats(int N, int C) { return (size_t)reduce_num_chunks(N) * C; }

// inverts out = x·rstd·w: dinp = ∂out/∂x ᵀ·dout (overwritten), dw += Σ_n dout·x·rstd (dw may be NULL: a frozen norm)
// scratch: rmsnorm_backward_scratch_floats(N, C) floats
static inline void rmsnorm_backward(floatX* dinp, float* dw, float* scratch, const floatX* dout, const floatX* inp,
                                    const float* w, const float* rstd, int N, int C, cudaStream_t stream) {
    int nchunks = reduce_num_chunks(N);
    size_t smem = (size_t)C * sizeof(float);
    if (smem > 48 * 1024)
        cudaCheck(
            cudaFuncSetAttribute(rmsnorm_backward_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    rmsnorm_backward_kernel<<<nchunks, RMS_BWD_THREADS, smem, stream>>>(dinp, scratch, dout, inp, w, rstd, N, C);
    cudaCheck(cudaGetLastError());
    if (dw) column_partials_reduce(dw, 0, scratch, C, nchunks, C, 1, stream);
}

// out [N = B·L, H, d] = RoPE(x·rstd·w) in one pass (version 2's kernel with the table; kernels/rope.cuh's rotation);
// rstd as rmsnorm_forward. out may not alias inp (inp is kept for the backward). Shapes version 2 cannot take run
// rmsnorm_forward then rope_forward.
static inline void rmsnorm_rope_forward(floatX* out, float* rstd, const floatX* inp, const float* w, const float* cs,
                                        int N, int L, int H, int head_dim, float eps, cudaStream_t stream) {
    const int C = H * head_dim;
    const int t = rmsnorm_v2_threads(N, C, head_dim, (uintptr_t)out | (uintptr_t)inp);
    if (!t || L <= 0) {
        rmsnorm_forward(out, rstd, inp, w, N, C, eps, stream);
        rope_forward<floatX>(out, out, cs, N, L, H, head_dim, stream);
        return;
    }
    rmsnorm_forward_v2_kernel<<<N, t, 0, stream>>>(out, rstd, inp, w, cs, L, head_dim, C, eps);
    cudaCheck(cudaGetLastError());
}
