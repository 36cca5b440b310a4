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
template <> __host__ __device__ inline __nv_bfloat16 from_float<__nv_bfloat16>(float f) { return __float2bfloat16_rn(f); }

// T -> float (exact)
__host__ __device__ inline float to_float(float x) { return x; }
__host__ __device__ inline float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
