// kernels/timestep.cuh: the sinusoidal time embedding (official sinusoidal_embedding_1d; cpu/layers.h sinusoid_forward)
//
//   out[b] = [cos(t_b·ω_0), …, cos(t_b·ω_{h−1}) | sin(t_b·ω_0), …, sin(t_b·ω_{h−1})],  ω_k = 10000^(−k/h), h = freq_dim/2
//
// cos first, then sin. Computed in double (the official code's float64), stored fp32.
// Shapes: t [B] double (the model timestep, 1000·σ, possibly fractional in training), out [B, freq_dim] fp32.
// Overwritten: out. No backward: the timestep is an input nobody trains through (the gradient stops at
// time_embedding's first Linear, whose dW needs only this output).
// Version 1 (the simple one), checked and timed by dev/cuda/timestep.cu; not yet run on a GPU (dev/cuda/README.md).
#pragma once
#include <math.h>
#include "common.cuh"

// one thread per (sample, frequency)
__global__ void timestep_sinusoid_kernel(float* out, const double* t, int B, int half) {
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= B * half) return;
    int b = idx / half, k = idx % half;
    double a = t[b] * pow(10000.0, -(double)k / half);
    out[(size_t)b * 2 * half + k] = (float)cos(a);
    out[(size_t)b * 2 * half + half + k] = (float)sin(a);
}

// the same on the host, in double, stored fp32: what the model uses (time stays in double on the host; no device code
// needs pow in double, which a functional simulator cannot run). out [B, freq_dim]; t [B] host doubles.
static inline void timestep_sinusoid_host(float* out, const double* t, int B, int freq_dim) {
    int half = freq_dim / 2;
    for (int b = 0; b < B; b++)
        for (int k = 0; k < half; k++) {
            double a = t[b] * pow(10000.0, -(double)k / half);
            out[(size_t)b * freq_dim + k] = (float)cos(a);
            out[(size_t)b * freq_dim + half + k] = (float)sin(a);
        }
}

// out [B, freq_dim]; freq_dim must be even
static inline void timestep_sinusoid_forward(float* out, const double* t, int B, int freq_dim, cudaStream_t stream) {
    int half = freq_dim / 2;
    timestep_sinusoid_kernel<<<(B * half + 255) / 256, 256, 0, stream>>>(out, t, B, half);
    cudaCheck(cudaGetLastError());
}
