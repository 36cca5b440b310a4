// kernels/timestep.cuh: the sinusoidal time embedding (official sinusoidal_embedding_1d; cpu/layers.h sinusoid_forward)
//
//   out[b] = [cos(t_b·ω_0), …, cos(t_b·ω_{h−1}) | sin(t_b·ω_0), …, sin(t_b·ω_{h−1})],  ω_k = 10000^(−k/h), h =
//   freq_dim/2
//
// cos first, then sin. Computed in double (the official code's float64), stored fp32.
// Shapes: t [B] double (the model timestep, 1000·σ, possibly fractional in training), out [B, freq_dim] fp32.
// Overwritten: out. No backward: the timestep is an input nobody trains through (the gradient stops at
// time_embedding's first Linear, whose dW needs only this output).
// Host code (version 2; version 1 was a device kernel doing the same double math), checked by dev/cuda/timestep.cu.
#pragma once
#include <math.h>
#include "common.cuh"

// out [B, freq_dim] fp32 (host memory; the model uploads it); t [B] host doubles; freq_dim even. On the host because
// time stays in double on the host, the table is a few KB, and pow/cos/sin in double would compile to device functions
// that need a call stack (which a functional simulator cannot run).
static inline void timestep_sinusoid_host(float* out, const double* t, int B, int freq_dim) {
    int half = freq_dim / 2;
    for (int b = 0; b < B; b++)
        for (int k = 0; k < half; k++) {
            double a = t[b] * pow(10000.0, -(double)k / half);
            out[(size_t)b * freq_dim + k] = (float)cos(a);
            out[(size_t)b * freq_dim + half + k] = (float)sin(a);
        }
}
