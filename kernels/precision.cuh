// kernels/precision.cuh: the activation element type `floatX` and the conversions every kernel uses.
//
// Precision map (what the official code keeps in fp32 under autocast):
//   floatX (bf16 by default): GEMM inputs, weights copies and outputs; attention operands; the gradients that
//                             flow into a GEMM backward.
//   float always:             the residual stream and its gradient, LayerNorm/RMSNorm statistics, AdaLN
//                             modulation and gates, the time embedding, master weights, parameter gradients,
//                             Adam moments, latents, losses.
// Build with -DENABLE_FP32 for the all-fp32 build (floatX = float), the one that checks the bf16 build.
#pragma once
#include <cuda_bf16.h>

#ifdef ENABLE_FP32
typedef float floatX;
#define FLOATX_NAME "fp32"
#else
typedef __nv_bfloat16 floatX;
#define FLOATX_NAME "bf16"
#endif

// float -> T, round to nearest even (host and device, so tests round their inputs exactly like the kernels)
template <typename T> __host__ __device__ inline T from_float(float f);
template <> __host__ __device__ inline float from_float<float>(float f) { return f; }
template <> __host__ __device__ inline __nv_bfloat16 from_float<__nv_bfloat16>(float f) {
    return __float2bfloat16_rn(f);
}

// T -> float (exact)
__host__ __device__ inline float to_float(float x) { return x; }
__host__ __device__ inline float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

// 128-bit loads and stores of FLOATX_VEC16 consecutive elements (8 bf16 or 4 fp32) as floats; p 16-byte aligned
#define FLOATX_VEC16 (16 / (int)sizeof(floatX))
#ifdef __CUDACC__
__device__ inline void floatx_load16(const float* p, float* o) {
    const float4 v = *reinterpret_cast<const float4*>(p);
    o[0] = v.x;
    o[1] = v.y;
    o[2] = v.z;
    o[3] = v.w;
}
__device__ inline void floatx_load16(const __nv_bfloat16* p, float* o) {
    const uint4 r = *reinterpret_cast<const uint4*>(p);
    const unsigned u[4] = {r.x, r.y, r.z, r.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const float2 f = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&u[i]));
        o[2 * i] = f.x;
        o[2 * i + 1] = f.y;
    }
}
__device__ inline void floatx_store16(float* p, const float* o) {
    *reinterpret_cast<float4*>(p) = make_float4(o[0], o[1], o[2], o[3]);
}
__device__ inline void floatx_store16(__nv_bfloat16* p, const float* o) {
    unsigned u[4];
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const __nv_bfloat162 h = __floats2bfloat162_rn(o[2 * i], o[2 * i + 1]);
        u[i] = *reinterpret_cast<const unsigned*>(&h);
    }
    *reinterpret_cast<uint4*>(p) = make_uint4(u[0], u[1], u[2], u[3]);
}

#endif
