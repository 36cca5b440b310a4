// kernels/vae.cuh: the small kernels of the Wan2.1 VAE decoder and encoder on the GPU (gpu/vae_gpu.cuh), fp32
// throughout; the convolutions are kernels/conv3d.cuh. Each one is the twin of a loop of cpu/vae_cpu.h (named on each
// kernel), and the whole decoder is checked against that CPU reference (gpu/vae_gpu_tests.cuh), not each kernel on its
// own. Tensors are [C][T][H][W] (channel stride T*H*W) as on the CPU. Every kernel overwrites its output, except
// vae_residual_add (x += y) and vae_cache_shift (the cache is updated in place).
//
//   vae_rms_norm_silu     RMS_norm over channels (F.normalize * sqrt(C) * gamma), optionally followed by SiLU
//   vae_residual_add      x += y (the residual of a ResidualBlock and of the attention block)
//   vae_frame_attention   per frame, one head over the H*W pixels: softmax(q k^T / sqrt(C)) v
//   vae_time_interleave   upsample3d's time_conv output [2C][T] -> [C][2T] (frame 2t = channels [0, C), 2t+1 = [C, 2C))
//   vae_cache_shift       the feature cache of a causal conv: the last 2 frames of [cache, x] (cpu vae_cache_push)
//   vae_clamp_video       the decoded video to [-1, 1]
//   vae_time_stride2      the encoder's downsample3d time_conv (stride 2 in time): the odd frames of a stride-1 conv
#pragma once
#include "common.cuh"
#include "reduce.cuh" // block_sum, block_max

#define VAE_THREADS 256
static inline unsigned vae_grid_(size_t n) { return (unsigned)((n + VAE_THREADS - 1) / VAE_THREADS); }

// cpu vae_norm: one thread per pixel (t, y, x), the channel sum in a fixed order (deterministic)
__global__ void vae_rms_norm_silu_kernel(float* out, const float* x, const float* gamma, int C, size_t n, int silu) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float ss = 0.f;
    for (int c = 0; c < C; c++) {
        float v = x[(size_t)c * n + i];
        ss = fmaf(v, v, ss);
    }
    float inv = 1.f / fmaxf(sqrtf(ss), 1e-12f), sc = sqrtf((float)C);
    for (int c = 0; c < C; c++) {
        float v = x[(size_t)c * n + i] * inv * (gamma[c] * sc);
        out[(size_t)c * n + i] = silu ? v / (1.f + expf(-v)) : v;
    }
}
// out [C][n] = rms_norm(x [C][n]) (then SiLU when silu); out may be x
static void vae_rms_norm_silu(float* out, const float* x, const float* gamma, int C, size_t n, int silu,
                              cudaStream_t stream) {
    vae_rms_norm_silu_kernel<<<vae_grid_(n), VAE_THREADS, 0, stream>>>(out, x, gamma, C, n, silu);
    cudaCheck(cudaGetLastError());
}

__global__ void vae_residual_add_kernel(float* x, const float* y, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] += y[i];
}
// x[i] += y[i] (accumulates)
static void vae_residual_add(float* x, const float* y, size_t n, cudaStream_t stream) {
    vae_residual_add_kernel<<<vae_grid_(n), VAE_THREADS, 0, stream>>>(x, y, n);
    cudaCheck(cudaGetLastError());
}

#define VAE_ATTN_TILE 1024 // keys per pass: the scores of one tile sit in shared memory
// cpu vae_attention: one block per (query pixel i, frame t). The keys are taken a tile at a time with the running max
// and sum of the softmax (the online softmax), so shared memory is C + C + VAE_ATTN_TILE floats whatever H*W is.
// qkv [3C][T][L] (q, k, v in that order, as to_qkv's output), out [C][T][L].
// Not fast (every query block reads all of K and V; the middle block runs once per latent frame at 1/8 resolution, a
// small part of the decoder's FLOPs next to the full-resolution convolutions); correct and deterministic.
__global__ void __launch_bounds__(VAE_THREADS)
    vae_frame_attention_kernel(float* out, const float* qkv, int C, int T, int L, float scale) {
    extern __shared__ float sm[];
    float *qs = sm, *acc = sm + C, *s = sm + 2 * C, *red = s + VAE_ATTN_TILE;
    const int i = blockIdx.x, t = blockIdx.y, tid = threadIdx.x;
    const size_t cs = (size_t)T * L; // channel stride
    const float* q = qkv + (size_t)t * L;
    const float* k = q + (size_t)C * cs;
    const float* v = k + (size_t)C * cs;
    for (int c = tid; c < C; c += blockDim.x) {
        qs[c] = q[(size_t)c * cs + i];
        acc[c] = 0.f;
    }
    __syncthreads();
    float m = -INFINITY, l = 0.f;
    for (int j0 = 0; j0 < L; j0 += VAE_ATTN_TILE) {
        int nt = L - j0 < VAE_ATTN_TILE ? L - j0 : VAE_ATTN_TILE;
        float lm = -INFINITY;
        for (int j = tid; j < nt; j += blockDim.x) {
            float d = 0.f;
            for (int c = 0; c < C; c++) d = fmaf(qs[c], k[(size_t)c * cs + j0 + j], d);
            s[j] = d * scale;
            lm = fmaxf(lm, s[j]);
        }
        float m_new = fmaxf(m, block_max(lm, red));
        float corr = expf(m - m_new); // 0 on the first tile (m = -inf)
        float ls = 0.f;
        for (int j = tid; j < nt; j += blockDim.x) {
            float p = expf(s[j] - m_new);
            s[j] = p;
            ls += p;
        }
        l = l * corr + block_sum(ls, red); // block_sum's barriers also publish s[] to every thread
        for (int c = tid; c < C; c += blockDim.x) {
            float a = acc[c] * corr;
            const float* vc = v + (size_t)c * cs + j0;
            for (int j = 0; j < nt; j++) a = fmaf(s[j], vc[j], a);
            acc[c] = a;
        }
        m = m_new;
        __syncthreads(); // s[] is rewritten by the next tile
    }
    for (int c = tid; c < C; c += blockDim.x) out[(size_t)c * cs + (size_t)t * L + i] = acc[c] / l;
}
// out [C][T][L] = per-frame softmax(q k^T / sqrt(C)) v from qkv [3C][T][L]
static void vae_frame_attention(float* out, const float* qkv, int C, int T, int L, cudaStream_t stream) {
    size_t smem = sizeof(float) * (2 * (size_t)C + VAE_ATTN_TILE + 32);
    if (smem > 48 * 1024)
        cudaCheck(
            cudaFuncSetAttribute(vae_frame_attention_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    vae_frame_attention_kernel<<<dim3((unsigned)L, (unsigned)T), VAE_THREADS, smem, stream>>>(out, qkv, C, T, L,
                                                                                              1.f / sqrtf((float)C));
    cudaCheck(cudaGetLastError());
}

// cpu vae_resample's interleave: out[c][2t + h][p] = tc[h*C + c][t][p]
__global__ void vae_time_interleave_kernel(float* out, const float* tc, int C, int T, size_t plane) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x, n = (size_t)C * 2 * T * plane;
    if (i >= n) return;
    size_t p = i % plane, r = i / plane;
    int f = (int)(r % (2 * T)), c = (int)(r / (2 * T)), h = f % 2, t = f / 2;
    out[i] = tc[(((size_t)h * C + c) * T + t) * plane + p];
}
// tc [2C][T][plane] -> out [C][2T][plane]; out must not alias tc
static void vae_time_interleave(float* out, const float* tc, int C, int T, size_t plane, cudaStream_t stream) {
    size_t n = (size_t)C * 2 * T * plane;
    vae_time_interleave_kernel<<<vae_grid_(n), VAE_THREADS, 0, stream>>>(out, tc, C, T, plane);
    cudaCheck(cudaGetLastError());
}

// cpu vae_cache_push. The GPU cache is always [C][2][plane] with its frames right-aligned (slot 1 the newest) and zeros
// where the CPU's cache has no frame yet: a zero frame is exactly the causal zero padding, so the convolution can read
// 2 cache frames every time (kernels/conv3d.cuh nc = 2). One thread per (c, p) reads and writes only its own two
// elements, so the update in place is race-free: slot 0 <- (T >= 2 ? x[T-2] : slot 1), slot 1 <- x[T-1].
__global__ void vae_cache_shift_kernel(float* cache, const float* x, int C, int T, size_t plane) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)C * plane) return;
    size_t p = i % plane, c = i / plane;
    float* k = cache + c * 2 * plane + p;
    const float* xc = x + c * T * plane + p;
    k[0] = T >= 2 ? xc[(size_t)(T - 2) * plane] : k[plane];
    k[plane] = xc[(size_t)(T - 1) * plane];
}
// cache [C][2][plane] <- the last 2 frames of [cache, x [C][T][plane]] (updated in place)
static void vae_cache_shift(float* cache, const float* x, int C, int T, size_t plane, cudaStream_t stream) {
    vae_cache_shift_kernel<<<vae_grid_((size_t)C * plane), VAE_THREADS, 0, stream>>>(cache, x, C, T, plane);
    cudaCheck(cudaGetLastError());
}

__global__ void vae_clamp_video_kernel(float* x, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] = fminf(1.f, fmaxf(-1.f, x[i]));
}
// x = clamp(x, -1, 1) in place (cpu vae_decode's clamp)
static void vae_clamp_video(float* x, size_t n, cudaStream_t stream) {
    vae_clamp_video_kernel<<<vae_grid_(n), VAE_THREADS, 0, stream>>>(x, n);
    cudaCheck(cudaGetLastError());
}

// cpu vae_resample's downsample3d time_conv ((3,1,1), stride 2 in time, no padding, over [last frame of the previous
// chunk, y]) as the odd output frames of the stride-1 causal conv over [cache, y] (kernels/conv3d.cuh, 2 cache frames:
// output frame u reads frames u-2, u-1, u, so u = 2t + 1 reads the CPU's 2t-1, 2t, 2t+1 with frame -1 the cache's
// last). out[c][t][p] = full[c][2t + 1][p], t < To
__global__ void vae_time_stride2_kernel(float* out, const float* full, int C, int T, int To, size_t plane) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x, n = (size_t)C * To * plane;
    if (i >= n) return;
    size_t p = i % plane, r = i / plane;
    int t = (int)(r % To), c = (int)(r / To);
    out[i] = full[((size_t)c * T + 2 * t + 1) * plane + p];
}
// full [C][T][plane] -> out [C][To][plane] (its odd frames); out must not alias full
static inline void vae_time_stride2(float* out, const float* full, int C, int T, int To, size_t plane,
                                    cudaStream_t stream) {
    size_t n = (size_t)C * To * plane;
    vae_time_stride2_kernel<<<vae_grid_(n), VAE_THREADS, 0, stream>>>(out, full, C, T, To, plane);
    cudaCheck(cudaGetLastError());
}
