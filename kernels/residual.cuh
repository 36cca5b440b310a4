// kernels/residual.cuh: the residual adds of a Wan block (official model.py WanAttentionBlock, cpu/layers.h gated_add_*)
//
//   x = x + SelfAttn(h)·gate_msa        gate from mod [B, 6, C], chunk 2
//   x = x + CrossAttn(...)              no gate (pass gate = NULL)
//   x = x + FFN(h)·gate_ffn             chunk 5
//
// Shapes: x, dx [B·L, C] fp32 (the residual stream stays fp32 after the first gated add); y, dy [B·L, C] T
// (floatX: the output projection's GEMM output); gate of sample b is gate[b·mod_stride + c] fp32.
// Overwritten: dy, scratch. Accumulated (+=): x (forward), dgate.
// The gradient of the stream passes through unchanged (dx_in = dx_out): the caller keeps the same buffer.
// dgate is summed over tokens without atomics: each block sums a chunk of REDUCE_ROWS_PER_CHUNK rows per column
// into scratch, then a fixed-order pass adds the chunks (kernels/reduce.cuh).
// Version 1 (the simple one), checked and timed by dev/cuda/residual.cu; not yet run on a GPU (dev/cuda/README.md).
#pragma once
#include "common.cuh"
#include "precision.cuh"
#include "reduce.cuh"

// x[n, c] += y[n, c]·gate[b, c], one thread per element
template <typename T>
__global__ void residual_forward_kernel(float* x, const T* y, const float* gate, int mod_stride, int L, int C, size_t total) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    int c = (int)(i % C);
    size_t n = i / C;
    float g = gate ? gate[(n / L) * mod_stride + c] : 1.f;
    x[i] += to_float(y[i]) * g;
}

// inverts x_out = x_in + y·gate:  dy = dx·gate ;  dgate[b] += Σ_{tokens of b} dx·y
// grid (nchunks, ceil(C/256), B), block 256: thread = one column, walks the chunk's rows (coalesced across threads)
template <typename T>
__global__ void residual_backward_kernel(T* dy, float* partials, const float* dx, const T* y, const float* gate, int mod_stride,
                                         int L, int C) {
    int c = blockIdx.y * blockDim.x + threadIdx.x, b = blockIdx.z;
    if (c >= C) return;
    float g = gate ? gate[(size_t)b * mod_stride + c] : 1.f;
    int r0 = blockIdx.x * REDUCE_ROWS_PER_CHUNK, r1 = min(r0 + REDUCE_ROWS_PER_CHUNK, L);
    float acc = 0.f;
    for (int r = r0; r < r1; r++) {
        size_t i = ((size_t)b * L + r) * C + c;
        float d = dx[i];
        dy[i] = from_float<T>(d * g);
        acc += d * to_float(y[i]);
    }
    if (partials) partials[((size_t)b * gridDim.x + blockIdx.x) * C + c] = acc;
}

// x [B·L, C] += y·gate[b]   (gate NULL: plain add)
template <typename T>
static void residual_forward(float* x, const T* y, const float* gate, int mod_stride, int B, int L, int C, cudaStream_t stream) {
    size_t total = (size_t)B * L * C;
    residual_forward_kernel<T><<<(unsigned)((total + 255) / 256), 256, 0, stream>>>(x, y, gate, mod_stride, L, C, total);
    cudaCheck(cudaGetLastError());
}

static inline size_t residual_backward_scratch_floats(int B, int L, int C) { return (size_t)B * reduce_num_chunks(L) * C; }

// inverts x += y·gate[b]:  dy = dx·gate (overwritten; dx itself is the gradient of x_in too)
//                          dgate[b·mod_stride + c] += Σ_{tokens of b} dx·y   (dgate NULL: not needed, or no gate)
// scratch: residual_backward_scratch_floats(B, L, C) floats (unused when dgate is NULL)
template <typename T>
static void residual_backward(T* dy, float* dgate, float* scratch, const float* dx, const T* y, const float* gate, int mod_stride,
                              int B, int L, int C, cudaStream_t stream) {
    int nchunks = reduce_num_chunks(L);
    dim3 grid(nchunks, (C + 255) / 256, B);
    residual_backward_kernel<T><<<grid, 256, 0, stream>>>(dy, dgate ? scratch : NULL, dx, y, gate, mod_stride, L, C);
    cudaCheck(cudaGetLastError());
    if (dgate) column_partials_reduce(dgate, mod_stride, scratch, C, nchunks, C, B, stream);
}
