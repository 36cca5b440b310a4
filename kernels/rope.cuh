// kernels/rope.cuh: 3D rotary position embedding, interleaved pairs, per-axis frequency tables
// (official model.py rope_params / rope_apply, cpu/layers.h rope_table / rope_apply).
//
// Head dim d has c = d/2 complex pairs (x[2p], x[2p+1]). The pairs are split over the three grid axes:
// frame cf = c − 2·(c/3), height ch = c/3, width ch (22, 21, 21 for d = 128), and each axis uses its own
// sub-dimension in the exponent:
//   p <  cf          θ = f · 10000^(−2p / (2cf))
//   p <  cf + ch     θ = i · 10000^(−2(p − cf) / (2ch))
//   otherwise        θ = j · 10000^(−2(p − cf − ch) / (2ch))
// for the token n = (f·Hp + i)·Wp + j of a (Fp, Hp, Wp) patch grid.
//
//   rope_table_host    cs [L, c, 2] fp32 = (cos θ, sin θ), computed in double on the host, stored fp32.
//                      Built once per grid (then uploaded); overwritten.
//   rope_forward       out = x·e^{iθ}:  out[2p] = x[2p]·cos − x[2p+1]·sin ; out[2p+1] = x[2p]·sin + x[2p+1]·cos
//   rope_backward      inverts the rotation: dinp = R(−θ)·dout (the same kernel with sin negated)
// x, out, dinp, dout [B·L, H, d] (T = floatX for q, k); token n of the batch uses table row n mod L.
// Overwritten: out, dinp. In place is allowed (out == inp, dinp == dout): each pair is read before it is written
// by the same thread.
// The official code rotates the fp32 RMSNorm output in float64 and rounds to bf16 once; here the input is the
// floatX RMSNorm output (a second rounding in the bf16 build).
// Rotation: version 1 (the simple one), checked and timed by dev/cuda/rope.cu; not yet run on a GPU
// (dev/cuda/README.md); version 2 (one block per token row, 128-bit loads, no 64-bit division) where head_dim allows,
// bit-identical to it. The forward of the DiT block runs RMSNorm + RoPE fused (kernels/rmsnorm.cuh
// rmsnorm_rope_forward); the backward runs rope_backward then rmsnorm_backward (it reads q_pre and rstd, which the
// fused forward still writes). Table: on the host (version 2; version 1 built it on the device with the same double
// math).
#pragma once
#include <math.h>
#include "common.cuh"
#include "precision.cuh"

// the table, on the host: cs [Fp·Hp·Wp, head_dim/2, 2] fp32, computed in double (built once per grid, then uploaded).
// No device code needs pow/sin/cos in double: those calls compile to device functions that need a call stack, which
// a functional simulator cannot run, and the table is tiny next to the activations.
static inline void rope_table_host(float* cs, int Fp, int Hp, int Wp, int head_dim) {
    int half = head_dim / 2, ch = half / 3, cf = half - 2 * ch;
    for (int f = 0; f < Fp; f++)
        for (int i = 0; i < Hp; i++)
            for (int j = 0; j < Wp; j++)
                for (int p = 0; p < half; p++) {
                    size_t idx = (((size_t)f * Hp + i) * Wp + j) * half + p;
                    double th;
                    if (p < cf)
                        th = f * pow(10000.0, -2.0 * p / (2 * cf));
                    else if (p < cf + ch)
                        th = i * pow(10000.0, -2.0 * (p - cf) / (2 * ch));
                    else
                        th = j * pow(10000.0, -2.0 * (p - cf - ch) / (2 * ch));
                    cs[2 * idx] = (float)cos(th);
                    cs[2 * idx + 1] = (float)sin(th);
                }
}

// pair q of the flat [B·L, H, c] pair array sits at elements 2q, 2q+1 of x; its token is q / (H·c)
template <typename T>
__global__ void rope_rotate_kernel(T* out, const T* inp, const float* cs, size_t npairs, int L, int H, int half,
                                   float sin_sign) {
    size_t q = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (q >= npairs) return;
    int p = (int)(q % half);
    size_t n = q / ((size_t)H * half);
    const float* t = cs + ((n % L) * half + p) * 2;
    float co = t[0], si = sin_sign * t[1];
    float a = to_float(inp[2 * q]), b = to_float(inp[2 * q + 1]);
    out[2 * q] = from_float<T>(a * co - b * si);
    out[2 * q + 1] = from_float<T>(a * si + b * co);
}

// version 2 of the rotation: one block per token row n (its table row n mod L: one 32-bit modulo per row), each thread
// FLOATX_VEC16 consecutive elements (a 128-bit load and store; the pairs of one load lie in one head when head_dim is a
// multiple of FLOATX_VEC16). The arithmetic is version 1's, so the results are bit-identical to it.
__global__ void rope_rotate_v2_kernel(floatX* out, const floatX* inp, const float* cs, int L, int head_dim, int C,
                                      float sin_sign) {
    const size_t base = (size_t)blockIdx.x * C;
    const float* tab = cs + (size_t)(blockIdx.x % L) * head_dim; // [head_dim/2, 2]
    for (int c = FLOATX_VEC16 * threadIdx.x; c < C; c += FLOATX_VEC16 * blockDim.x) {
        float o[FLOATX_VEC16];
        floatx_load16(inp + base + c, o);
        const int p0 = (c % head_dim) / 2;
#pragma unroll
        for (int i = 0; i < FLOATX_VEC16 / 2; i++) {
            const float co = tab[2 * (p0 + i)], si = sin_sign * tab[2 * (p0 + i) + 1], a = o[2 * i], b = o[2 * i + 1];
            o[2 * i] = a * co - b * si;
            o[2 * i + 1] = a * si + b * co;
        }
        floatx_store16(out + base + c, o);
    }
}

// version 2 for floatX rows that fit it (head_dim a multiple of FLOATX_VEC16, 16-byte aligned, at most 2^31 − 1
// rows), version 1 otherwise
template <typename T>
static void rope_rotate_(T* out, const T* inp, const float* cs, int N, int L, int H, int head_dim, float sin_sign,
                         cudaStream_t stream) {
    const int C = H * head_dim;
    if (sizeof(T) == sizeof(floatX) && head_dim % FLOATX_VEC16 == 0 && ((uintptr_t)out | (uintptr_t)inp) % 16 == 0 &&
        N > 0 && L > 0) {
        const int t = C / FLOATX_VEC16 >= 128 ? 128 : ((C / FLOATX_VEC16 + 31) / 32) * 32;
        rope_rotate_v2_kernel<<<N, t, 0, stream>>>((floatX*)out, (const floatX*)inp, cs, L, head_dim, C, sin_sign);
        cudaCheck(cudaGetLastError());
        return;
    }
    size_t npairs = (size_t)N * H * (head_dim / 2);
    rope_rotate_kernel<T>
        <<<(unsigned)((npairs + 255) / 256), 256, 0, stream>>>(out, inp, cs, npairs, L, H, head_dim / 2, sin_sign);
    cudaCheck(cudaGetLastError());
}

// out [N = B·L, H, d] = RoPE(inp)
template <typename T>
static void rope_forward(T* out, const T* inp, const float* cs, int N, int L, int H, int head_dim,
                         cudaStream_t stream) {
    rope_rotate_(out, inp, cs, N, L, H, head_dim, 1.f, stream);
}

// inverts out = R(θ)·x:  dinp = R(−θ)·dout   (overwritten)
template <typename T>
static void rope_backward(T* dinp, const T* dout, const float* cs, int N, int L, int H, int head_dim,
                          cudaStream_t stream) {
    rope_rotate_(dinp, dout, cs, N, L, H, head_dim, -1.f, stream);
}
