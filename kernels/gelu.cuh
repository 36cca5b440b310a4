// kernels/gelu.cuh: the two pointwise activations of Wan (cpu/layers.h gelu_*, silu_*)
//
//   gelu_forward / gelu_backward   GELU, tanh approximation: FFN hidden [N, ffn_dim] and text embedding [Lc, D]
//                                  gelu(x) = 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))
//                                  (gemm.cuh can fuse it into the GEMM epilogue instead; this is the unfused path)
//   silu_forward / silu_backward   SiLU x·σ(x): the time embedding [B, D] and time projection input, fp32
//
// T = floatX (FFN, text embedding) or float (time embedding); math in fp32, one rounding on output.
// Overwritten: out (forward), dinp (backward). dinp may alias dout; out may alias inp.
// Shapes: any flat array of n elements.
// Version 1 (the simple one), checked and timed by dev/cuda/gelu.cu; not yet run on a GPU (dev/cuda/README.md).
#pragma once
#include "common.cuh"
#include "precision.cuh"

#define GELU_SCALE 0.7978845608028654f // sqrt(2/pi)

template <typename T> __global__ void gelu_forward_kernel(T* out, const T* inp, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float x = to_float(inp[i]);
    out[i] = from_float<T>(0.5f * x * (1.f + tanhf(GELU_SCALE * (x + 0.044715f * x * x * x))));
}

// inverts out = gelu(x):  dinp = dout·gelu'(x),  gelu'(x) = 0.5·(1 + th) + 0.5·x·(1 − th²)·√(2/π)·(1 + 3·0.044715·x²)
template <typename T> __global__ void gelu_backward_kernel(T* dinp, const T* dout, const T* inp, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float x = to_float(inp[i]);
    float th = tanhf(GELU_SCALE * (x + 0.044715f * x * x * x));
    float du = GELU_SCALE * (1.f + 3.f * 0.044715f * x * x);
    dinp[i] = from_float<T>(to_float(dout[i]) * (0.5f * (1.f + th) + 0.5f * x * (1.f - th * th) * du));
}

template <typename T> __global__ void silu_forward_kernel(T* out, const T* inp, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float x = to_float(inp[i]);
    out[i] = from_float<T>(x / (1.f + expf(-x)));
}

// inverts out = x·σ(x):  dinp = dout·σ(x)·(1 + x·(1 − σ(x)))
template <typename T> __global__ void silu_backward_kernel(T* dinp, const T* dout, const T* inp, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float x = to_float(inp[i]), s = 1.f / (1.f + expf(-x));
    dinp[i] = from_float<T>(to_float(dout[i]) * s * (1.f + x * (1.f - s)));
}

static inline unsigned pointwise_blocks(size_t n) { return (unsigned)((n + 255) / 256); }

template <typename T> static void gelu_forward(T* out, const T* inp, size_t n, cudaStream_t stream) {
    gelu_forward_kernel<T><<<pointwise_blocks(n), 256, 0, stream>>>(out, inp, n);
    cudaCheck(cudaGetLastError());
}
template <typename T> static void gelu_backward(T* dinp, const T* dout, const T* inp, size_t n, cudaStream_t stream) {
    gelu_backward_kernel<T><<<pointwise_blocks(n), 256, 0, stream>>>(dinp, dout, inp, n);
    cudaCheck(cudaGetLastError());
}
template <typename T> static void silu_forward(T* out, const T* inp, size_t n, cudaStream_t stream) {
    silu_forward_kernel<T><<<pointwise_blocks(n), 256, 0, stream>>>(out, inp, n);
    cudaCheck(cudaGetLastError());
}
template <typename T> static void silu_backward(T* dinp, const T* dout, const T* inp, size_t n, cudaStream_t stream) {
    silu_backward_kernel<T><<<pointwise_blocks(n), 256, 0, stream>>>(dinp, dout, inp, n);
    cudaCheck(cudaGetLastError());
}
