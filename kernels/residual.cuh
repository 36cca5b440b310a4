// kernels/residual.cuh: the residual adds of a Wan block (official model.py WanAttentionBlock, cpu/layers.h
// gated_add_*)
//
//   x = x + SelfAttn(h)·gate_msa        gate from mod [B, 6, C], chunk 2
//   x = x + CrossAttn(...)              no gate (pass gate = NULL)
//   x = x + FFN(h)·gate_ffn             chunk 5
//
//   x_out = x_in + y·gate               residual_forward_out: the copy and the add in one pass (version 2, below)
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
__global__ void residual_forward_kernel(float* x, const T* y, const float* gate, int mod_stride, int L, int C,
                                        size_t total) {
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
__global__ void residual_backward_kernel(T* dy, float* partials, const float* dx, const T* y, const float* gate,
                                         int mod_stride, int L, int C) {
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
static void residual_forward(float* x, const T* y, const float* gate, int mod_stride, int B, int L, int C,
                             cudaStream_t stream) {
    size_t total = (size_t)B * L * C;
    residual_forward_kernel<T>
        <<<(unsigned)((total + 255) / 256), 256, 0, stream>>>(x, y, gate, mod_stride, L, C, total);
    cudaCheck(cudaGetLastError());
}

// Version 2 of the forward, out of place: x_out = x_in + y·gate[b] in one pass, where version 1 needed a copy of x_in
// first (cudaMemcpy, 8 bytes per element more: 1.2 GB per 1.3B block at 480p over its three adds). One block per row
// (gridDim.x = rows, up to 2^31 − 1), each thread 4 consecutive columns: 128-bit loads of x_in and the gate, a 64-bit
// (bf16) or 128-bit (fp32) load of y, a 128-bit store; the sample b = n / L is one 32-bit division per thread, not a
// 64-bit division per element. The arithmetic is version 1's expression, x + y·g, element by element, so the result
// is bit-identical to copy-then-add (dev/cuda/residual.cu checks that bitwise).
__device__ inline void residual_load4(const float* p, float* o) {
    const float4 v = *reinterpret_cast<const float4*>(p);
    o[0] = v.x;
    o[1] = v.y;
    o[2] = v.z;
    o[3] = v.w;
}
__device__ inline void residual_load4(const __nv_bfloat16* p, float* o) {
    const uint2 r = *reinterpret_cast<const uint2*>(p); // 4 bf16, the lower-indexed in the low half of each word
    const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&r.x));
    const float2 b = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&r.y));
    o[0] = a.x;
    o[1] = a.y;
    o[2] = b.x;
    o[3] = b.y;
}
template <typename T>
__global__ void residual_forward_out_kernel(float* x_out, const float* x_in, const T* y, const float* gate,
                                            int mod_stride, int L, int C) {
    const int n = blockIdx.x;
    const size_t row = (size_t)n * C;
    const float* g = gate ? gate + (size_t)(n / L) * mod_stride : NULL;
    for (int c = 4 * threadIdx.x; c < C; c += 4 * blockDim.x) {
        float4 x = *reinterpret_cast<const float4*>(x_in + row + c);
        float yv[4];
        residual_load4(y + row + c, yv);
        const float4 gv = g ? *reinterpret_cast<const float4*>(g + c) : make_float4(1.f, 1.f, 1.f, 1.f);
        x.x = x.x + yv[0] * gv.x;
        x.y = x.y + yv[1] * gv.y;
        x.z = x.z + yv[2] * gv.z;
        x.w = x.w + yv[3] * gv.w;
        *reinterpret_cast<float4*>(x_out + row + c) = x;
    }
}

// x_out [B·L, C] = x_in + y·gate[b] (gate NULL: plain add); x_out may be x_in. Shapes the vector path cannot take
// (C or mod_stride not a multiple of 4, misaligned pointers, more than 2^31 − 1 rows) take copy-then-add (version 1).
template <typename T>
static void residual_forward_out(float* x_out, const float* x_in, const T* y, const float* gate, int mod_stride, int B,
                                 int L, int C, cudaStream_t stream) {
    const size_t rows = (size_t)B * L;
    const uintptr_t align =
        (uintptr_t)x_out | (uintptr_t)x_in | (uintptr_t)gate | (uintptr_t)(gate ? mod_stride : 0) * 4;
    const bool vec =
        C % 4 == 0 && align % 16 == 0 && (uintptr_t)y % (4 * sizeof(T)) == 0 && rows <= 0x7fffffff && rows > 0;
    if (!vec) {
        if (x_out != x_in)
            cudaCheck(cudaMemcpyAsync(x_out, x_in, sizeof(float) * rows * C, cudaMemcpyDeviceToDevice, stream));
        residual_forward<T>(x_out, y, gate, mod_stride, B, L, C, stream);
        return;
    }
    const int threads = C / 4 >= 128 ? 128 : ((C / 4 + 31) / 32) * 32;
    residual_forward_out_kernel<T><<<(unsigned)rows, threads, 0, stream>>>(x_out, x_in, y, gate, mod_stride, L, C);
    cudaCheck(cudaGetLastError());
}

static inline size_t residual_backward_scratch_floats(int B, int L, int C) {
    return (size_t)B * reduce_num_chunks(L) * C;
}

// inverts x += y·gate[b]:  dy = dx·gate (overwritten; dx itself is the gradient of x_in too)
//                          dgate[b·mod_stride + c] += Σ_{tokens of b} dx·y   (dgate NULL: not needed, or no gate)
// scratch: residual_backward_scratch_floats(B, L, C) floats (unused when dgate is NULL)
template <typename T>
static void residual_backward(T* dy, float* dgate, float* scratch, const float* dx, const T* y, const float* gate,
                              int mod_stride, int B, int L, int C, cudaStream_t stream) {
    int nchunks = reduce_num_chunks(L);
    dim3 grid(nchunks, (C + 255) / 256, B);
    residual_backward_kernel<T><<<grid, 256, 0, stream>>>(dy, dgate ? scratch : NULL, dx, y, gate, mod_stride, L, C);
    cudaCheck(cudaGetLastError());
    if (dgate) column_partials_reduce(dgate, mod_stride, scratch, C, nchunks, C, B, stream);
}
