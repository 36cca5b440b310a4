// kernels/umt5.cuh: the small kernels of the umT5 text encoder on the GPU (gpu/umt5_gpu.cuh); the Linear layers are
// kernels/gemm.cuh (or gemm_tiled.cuh). Each kernel is the twin of a loop of cpu/umt5_cpu.h (named on each kernel),
// and the whole encoder is checked against that CPU reference (gpu/umt5_gpu_tests.cuh), not each kernel on its own.
// Tokens are rows: a batch of B prompts padded to L positions is [B·L, width], prompt b's token i at row b·L + i.
// Every kernel overwrites its output.
//
//   umt5_rmsnorm          T5's RMSNorm: out = w · x / sqrt(mean(x²) + eps), no mean subtraction, no bias; fp32 in
//                         (the residual stream), floatX out (a GEMM input) or fp32 out (the final norm, in place)
//   umt5_attention        softmax_j(q_i·k_j + bias[bucket(j − i), h]) v_j per head, no 1/sqrt(d_kv) scale, keys
//                         j >= len[b] of a padded prompt masked out (they get no weight)
//   umt5_gated_gelu       g = gelu_tanh(a) · b from the fused wi_0 | wi_1 GEMM output [N, 2F] -> [N, F]
#pragma once
#include "common.cuh"
#include "precision.cuh"
#include "reduce.cuh" // warp_sum, block_sum, block_max

#define UMT5_ATTN_THREADS 128

// cpu umt5_rmsnorm: one warp per row; the sum of squares in fp32 (a fixed order: deterministic)
template <typename Tout>
__global__ void umt5_rmsnorm_kernel(Tout* out, const float* x, const float* w, int N, int C, float eps) {
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= N) return;
    const float* xr = x + (size_t)row * C;
    float s = 0.f;
    for (int c = lane; c < C; c += 32) s = fmaf(xr[c], xr[c], s);
    float r = rsqrtf(warp_sum(s) / C + eps);
    Tout* o = out + (size_t)row * C; // may be x itself: each lane reads x[c] before it writes out[c]
    for (int c = lane; c < C; c += 32) o[c] = from_float<Tout>(w[c] * (xr[c] * r));
}
// out [N, C] = w · x / sqrt(mean_c(x²) + eps); out may be x (Tout = float)
template <typename Tout>
static void umt5_rmsnorm(Tout* out, const float* x, const float* w, int N, int C, float eps, cudaStream_t stream) {
    int rows_per_block = 256 / 32;
    umt5_rmsnorm_kernel<Tout><<<(N + rows_per_block - 1) / rows_per_block, 256, 0, stream>>>(out, x, w, N, C, eps);
    cudaCheck(cudaGetLastError());
}

// cpu umt5_encode's attention loop: one block per (query i, head h, prompt b). qkv [B·L, 3·H·dk] (q | k | v per row),
// bias [num_buckets, H] (this layer's table), bucket [2L + 1]: the bucket of r = j − i at bucket[r + L], lens [B].
// Shared memory: dk + L + 32 floats. Naive (the scores of one query in shared memory, K and V read from global memory
// by every query): see gpu/umt5_gpu.cuh for the arithmetic of what it costs.
__global__ void __launch_bounds__(UMT5_ATTN_THREADS)
    umt5_attention_kernel(floatX* out, const floatX* qkv, const float* bias, const int* bucket, const int* lens, int L,
                          int H, int dk) {
    extern __shared__ float sm[];
    float *qs = sm, *p = sm + dk, *red = p + L;
    const int i = blockIdx.x, h = blockIdx.y, b = blockIdx.z, tid = threadIdx.x, inner = H * dk, len = lens[b];
    const floatX* rows = qkv + (size_t)b * L * 3 * inner; // this prompt's rows
    for (int e = tid; e < dk; e += blockDim.x) qs[e] = to_float(rows[(size_t)i * 3 * inner + h * dk + e]);
    __syncthreads();
    float mx = -INFINITY;
    for (int j = tid; j < len; j += blockDim.x) { // keys j >= len are the padding: masked (no score, no weight)
        const floatX* kj = rows + (size_t)j * 3 * inner + inner + h * dk;
        float s = 0.f;
        for (int e = 0; e < dk; e++) s = fmaf(qs[e], to_float(kj[e]), s);
        s += bias[bucket[j - i + L] * H + h];
        p[j] = s;
        mx = fmaxf(mx, s);
    }
    mx = block_max(mx, red);
    float ls = 0.f;
    for (int j = tid; j < len; j += blockDim.x) {
        float e = expf(p[j] - mx);
        p[j] = e;
        ls += e;
    }
    float l = block_sum(ls, red); // its barriers also publish p[] to every thread
    for (int e = tid; e < dk; e += blockDim.x) {
        const floatX* v = rows + 2 * inner + h * dk + e;
        float a = 0.f;
        for (int j = 0; j < len; j++) a = fmaf(p[j], to_float(v[(size_t)j * 3 * inner]), a);
        out[((size_t)b * L + i) * inner + h * dk + e] = from_float<floatX>(a / l);
    }
}
// out [B·L, H·dk] = per prompt and head softmax(q kᵀ + bias) v over the prompt's lens[b] keys (lens on the device)
static void umt5_attention(floatX* out, const floatX* qkv, const float* bias, const int* bucket, const int* lens, int B,
                           int L, int H, int dk, cudaStream_t stream) {
    size_t smem = sizeof(float) * ((size_t)dk + L + 32);
    if (smem > 48 * 1024)
        cudaCheck(cudaFuncSetAttribute(umt5_attention_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    umt5_attention_kernel<<<dim3((unsigned)L, (unsigned)H, (unsigned)B), UMT5_ATTN_THREADS, smem, stream>>>(
        out, qkv, bias, bucket, lens, L, H, dk);
    cudaCheck(cudaGetLastError());
}

// cpu umt5_encode's `a[i] = umt5_gelu_tanh(a[i]) * b[i]`: ab [N, 2F] (wi_0 n | wi_1 n per row) -> g [N, F]
__global__ void umt5_gated_gelu_kernel(floatX* g, const floatX* ab, int F, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    size_t row = i / F, f = i % F;
    float a = to_float(ab[row * 2 * F + f]), b = to_float(ab[row * 2 * F + F + f]);
    g[i] = from_float<floatX>(0.5f * a * (1.f + tanhf(0.7978845608028654f * (a + 0.044715f * a * a * a))) * b);
}
static void umt5_gated_gelu(floatX* g, const floatX* ab, int N, int F, cudaStream_t stream) {
    size_t n = (size_t)N * F;
    umt5_gated_gelu_kernel<<<(unsigned)((n + 255) / 256), 256, 0, stream>>>(g, ab, F, n);
    cudaCheck(cudaGetLastError());
}
