// kernels/layernorm.cuh: LayerNorm over the model dim C, in fp32, in the two forms Wan uses (official wan/modules/model.py):
//
//   layernorm_modulate_*   norm1 / norm2 / head norm: no affine, fused with the AdaLN modulation
//                            out = LN(x)·(1 + scale[b]) + shift[b]          (x fp32, out Tout = floatX or float)
//   layernorm_affine_*     norm3 (before cross-attention): out = LN(x)·w + b
//
// Shapes: x [N, C] fp32 with N = B·L rows (B samples of L tokens); mean, rstd [N] fp32; out [N, C].
// Modulation rows live inside mod [B, 6, C] (or head mod [B, 2, C]): shift of sample b is shift[b·mod_stride + c],
// likewise scale, so pass shift = mod + k·C, scale = mod + k'·C, mod_stride = 6·C (or 2·C for the head).
// LN(x) = (x − mean)·rstd, mean and variance over C (two passes), rstd = 1/sqrt(var + eps).
//
// Overwritten: out, mean, rstd (forward); scratch (backward).
// Accumulated (+=): dx, dshift, dscale, dw, db (fp32 gradients: the residual stream and parameters).
//
// Both forms are one kernel: out = xhat·(γ_off + γ[g]) + β[g] with γ_off = 1, γ = scale, β = shift per sample
// (modulate) or γ_off = 0, γ = w, β = b shared by all rows (affine). The backward sums dγ, dβ over the rows of
// each group without atomics (kernels/reduce.cuh): one block per chunk of REDUCE_ROWS_PER_CHUNK rows keeps its
// column sums in shared memory (thread t owns columns t, t + blockDim, ...), writes them to scratch, and a second
// pass adds the chunks in a fixed order.
// Version 1 (the simple one), checked and timed by dev/cuda/layernorm.cu; not yet run on a GPU (dev/cuda/README.md).
#pragma once
#include "common.cuh"
#include "precision.cuh"
#include "reduce.cuh"

#define LN_FWD_THREADS 256   // 8 rows per block, one warp per row
#define LN_BWD_THREADS 256   // one block per chunk of rows

// ---------------------------------------------------------------------------------------------------------
// forward: one warp per row. The row (6 KB at C = 1536) is read three times; the 2nd and 3rd reads hit L1.

template <typename Tout>
__global__ void layernorm_forward_kernel(Tout* out, float* mean, float* rstd, const float* x, const float* gamma,
                                         const float* beta, int g_stride, float g_off, int rows_per_group, int N, int C, float eps) {
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= N) return;                                   // whole warps leave together
    const float* xr = x + (size_t)row * C;
    float s = 0.f;
    for (int c = lane; c < C; c += 32) s += xr[c];
    float m = warp_sum(s) / C;
    float v = 0.f;
    for (int c = lane; c < C; c += 32) { float d = xr[c] - m; v += d * d; }
    float r = rsqrtf(warp_sum(v) / C + eps);
    int g = row / rows_per_group;
    const float* gam = gamma + (size_t)g * g_stride;
    const float* bet = beta + (size_t)g * g_stride;
    Tout* o = out + (size_t)row * C;
    for (int c = lane; c < C; c += 32) o[c] = from_float<Tout>((xr[c] - m) * r * (g_off + gam[c]) + bet[c]);
    if (lane == 0) { mean[row] = m; rstd[row] = r; }
}

// ---------------------------------------------------------------------------------------------------------
// backward: grid (nchunks, G), block LN_BWD_THREADS, dynamic shared 2·C floats.
// inverts out = xhat·γ' + β with γ' = γ_off + γ[g], xhat = (x − mean)·rstd:
//   dxhat = dout·γ' ;  dx += rstd·(dxhat − mean_c(dxhat) − xhat·mean_c(dxhat·xhat))
//   dγ[g] += Σ_rows dout·xhat ;  dβ[g] += Σ_rows dout          (partials per chunk: [G, nchunks, 2, C])

template <typename Tdout>
__global__ void layernorm_backward_kernel(float* dx, float* partials, const Tdout* dout, const float* x, const float* mean,
                                          const float* rstd, const float* gamma, int g_stride, float g_off,
                                          int rows_per_group, int C) {
    extern __shared__ float acc[];                          // [0, C): Σ dout·xhat, [C, 2C): Σ dout, this chunk
    __shared__ float red[64];
    int g = blockIdx.y, nchunks = gridDim.x;
    const float* gam = gamma + (size_t)g * g_stride;
    for (int c = threadIdx.x; c < C; c += blockDim.x) { acc[c] = 0.f; acc[C + c] = 0.f; }
    int r0 = blockIdx.x * REDUCE_ROWS_PER_CHUNK, r1 = min(r0 + REDUCE_ROWS_PER_CHUNK, rows_per_group);
    for (int r = r0; r < r1; r++) {
        size_t n = (size_t)g * rows_per_group + r;
        const float* xr = x + n * C;
        const Tdout* gr = dout + n * C;
        float m = mean[n], rs = rstd[n];
        float s1 = 0.f, s2 = 0.f;
        for (int c = threadIdx.x; c < C; c += blockDim.x) {
            float xh = (xr[c] - m) * rs, dxh = to_float(gr[c]) * (g_off + gam[c]);
            s1 += dxh; s2 += dxh * xh;
        }
        float2 s = block_sum2(s1, s2, red);
        float mean_dxh = s.x / C, mean_dxh_xh = s.y / C;
        float* dxr = dx + n * C;
        for (int c = threadIdx.x; c < C; c += blockDim.x) {
            float dy = to_float(gr[c]), xh = (xr[c] - m) * rs, dxh = dy * (g_off + gam[c]);
            dxr[c] += rs * (dxh - mean_dxh - xh * mean_dxh_xh);
            acc[c] += dy * xh; acc[C + c] += dy;              // only this thread touches column c: no race
        }
    }
    float* p = partials + ((size_t)g * nchunks + blockIdx.x) * 2 * C;
    for (int c = threadIdx.x; c < C; c += blockDim.x) { p[c] = acc[c]; p[C + c] = acc[C + c]; }
}

// ---------------------------------------------------------------------------------------------------------
// launchers

template <typename Tout>
static void layernorm_forward_(Tout* out, float* mean, float* rstd, const float* x, const float* gamma, const float* beta,
                               int g_stride, float g_off, int rows_per_group, int N, int C, float eps, cudaStream_t stream) {
    int rows_per_block = LN_FWD_THREADS / 32;
    layernorm_forward_kernel<Tout><<<(N + rows_per_block - 1) / rows_per_block, LN_FWD_THREADS, 0, stream>>>(
        out, mean, rstd, x, gamma, beta, g_stride, g_off, rows_per_group, N, C, eps);
    cudaCheck(cudaGetLastError());
}

// scratch the backward needs, in floats: G groups of rows_per_group rows each
static inline size_t layernorm_backward_scratch_floats(int G, int rows_per_group, int C) {
    return (size_t)G * reduce_num_chunks(rows_per_group) * 2 * C;
}

template <typename Tdout>
static void layernorm_backward_(float* dx, float* dgamma, float* dbeta, int d_stride, float* scratch, const Tdout* dout,
                                const float* x, const float* mean, const float* rstd, const float* gamma, int g_stride,
                                float g_off, int G, int rows_per_group, int C, cudaStream_t stream) {
    int nchunks = reduce_num_chunks(rows_per_group);
    size_t smem = 2 * (size_t)C * sizeof(float);
    if (smem > 48 * 1024) cudaCheck(cudaFuncSetAttribute(layernorm_backward_kernel<Tdout>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    layernorm_backward_kernel<Tdout><<<dim3(nchunks, G), LN_BWD_THREADS, smem, stream>>>(
        dx, scratch, dout, x, mean, rstd, gamma, g_stride, g_off, rows_per_group, C);
    cudaCheck(cudaGetLastError());
    if (dgamma) column_partials_reduce(dgamma, d_stride, scratch, 2 * C, nchunks, C, G, stream);
    if (dbeta) column_partials_reduce(dbeta, d_stride, scratch + C, 2 * C, nchunks, C, G, stream);
}

// out [B·L, C] = LN(x)·(1 + scale[b]) + shift[b]. Tout = floatX for the block norms (the GEMM casts to bf16 anyway),
// float for the head, which the official code runs in fp32.
template <typename Tout>
static void layernorm_modulate_forward(Tout* out, float* mean, float* rstd, const float* x, const float* shift, const float* scale,
                                       int mod_stride, int B, int L, int C, float eps, cudaStream_t stream) {
    layernorm_forward_(out, mean, rstd, x, scale, shift, mod_stride, 1.f, L, B * L, C, eps, stream);
}

// inverts out = LN(x)·(1 + scale[b]) + shift[b]:
//   dx += LN'ᵀ(dout·(1 + scale[b])) ; dscale[b] += Σ_{tokens of b} dout·LN(x) ; dshift[b] += Σ_{tokens of b} dout
// dshift, dscale use the same mod_stride as shift, scale (so they can point into d(mod) [B, 6, C]); either may be
// NULL. scratch: layernorm_backward_scratch_floats(B, L, C) floats.
template <typename Tdout>
static void layernorm_modulate_backward(float* dx, float* dshift, float* dscale, float* scratch, const Tdout* dout, const float* x,
                                        const float* mean, const float* rstd, const float* scale, int mod_stride, int B, int L, int C,
                                        cudaStream_t stream) {
    layernorm_backward_(dx, dscale, dshift, mod_stride, scratch, dout, x, mean, rstd, scale, mod_stride, 1.f, B, L, C, stream);
}

// out [N, C] = LN(x)·w + b   (w, b [C] fp32)
template <typename Tout>
static void layernorm_affine_forward(Tout* out, float* mean, float* rstd, const float* x, const float* w, const float* b,
                                     int N, int C, float eps, cudaStream_t stream) {
    layernorm_forward_(out, mean, rstd, x, w, b, 0, 0.f, N, N, C, eps, stream);
}

// inverts out = LN(x)·w + b:  dx += LN'ᵀ(dout·w) ; dw += Σ_n dout·LN(x) ; db += Σ_n dout   (dw, db may be NULL)
// scratch: layernorm_backward_scratch_floats(1, N, C) floats.
template <typename Tdout>
static void layernorm_affine_backward(float* dx, float* dw, float* db, float* scratch, const Tdout* dout, const float* x,
                                      const float* mean, const float* rstd, const float* w, int N, int C, cudaStream_t stream) {
    layernorm_backward_(dx, dw, db, 0, scratch, dout, x, mean, rstd, w, 0, 0.f, 1, N, C, stream);
}
