// kernels/adamw.cuh: AdamW over one flat parameter buffer (torch.optim.AdamW; cpu/teacher_cpu.h adamw_step)
//
//   g ← grad_scale·g                                     (grad_scale: clipping factor and/or 1/micro-batches)
//   m ← β1·m + (1 − β1)·g ;  v ← β2·v + (1 − β2)·g²
//   p ← p·(1 − lr·wd) − lr·(m / (1 − β1^k)) / (sqrt(v / (1 − β2^k)) + eps)      k = steps taken, counting this one
//
// Shapes: params, grads, m, v [n] fp32 (one carving of the parameter layout); params_copy [n] floatX or NULL:
// the rounded copy the bf16 GEMMs read, rewritten from the new master weights when given.
// Overwritten (updated in place): params, m, v, params_copy. Read only: grads.
// Weight decay applies to every element of the call; for per-tensor decay call once per contiguous range.
//
//   adamw_grad_norm_squared   Σ g² in double into out[0] (deterministic: a fixed grid, per-block partials,
//                             one fixed-order final sum), for clipping and the non-finite-step check
// Version 1 (the simple one), checked and timed by dev/cuda/adamw.cu; not yet run on a GPU (dev/cuda/README.md).
#pragma once
#include <math.h>
#include "common.cuh"
#include "precision.cuh"
#include "reduce.cuh"

// The scalars are computed in double on the host and rounded once, as torch.optim.AdamW does with its Python-float
// hyperparameters: omb1 = 1 − β1, omb2 = 1 − β2 (not 1 − fp32(β2): fp32(0.999) is 3e-8 off, which would make
// 1 − β2 wrong by 5e-5 relative), decay = 1 − lr·wd.
__global__ void adamw_kernel(float* params, floatX* params_copy, float* m, float* v, const float* grads, size_t n,
                             float lr, float beta1, float beta2, float omb1, float omb2, float eps, float decay,
                             float bc1, float bc2, float grad_scale) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float g = grad_scale * grads[i];
    float mi = beta1 * m[i] + omb1 * g;
    float vi = beta2 * v[i] + omb2 * g * g;
    float p = params[i] * decay - lr * (mi / bc1) / (sqrtf(vi / bc2) + eps);
    m[i] = mi;
    v[i] = vi;
    params[i] = p;
    if (params_copy) params_copy[i] = from_float<floatX>(p);
}

// step: the optimizer step count k after this update (1 for the first update). Hyperparameters in double (see above).
static inline void adamw_update(float* params, floatX* params_copy, float* m, float* v, const float* grads, size_t n,
                                double lr, double beta1, double beta2, double eps, double weight_decay,
                                double grad_scale, long step, cudaStream_t stream) {
    float bc1 = (float)(1.0 - pow(beta1, (double)step)), bc2 = (float)(1.0 - pow(beta2, (double)step));
    adamw_kernel<<<(unsigned)((n + 255) / 256), 256, 0, stream>>>(
        params, params_copy, m, v, grads, n, (float)lr, (float)beta1, (float)beta2, (float)(1.0 - beta1),
        (float)(1.0 - beta2), (float)eps, (float)(1.0 - lr * weight_decay), bc1, bc2, (float)grad_scale);
    cudaCheck(cudaGetLastError());
}

// ---------------------------------------------------------------------------------------------------------
// global gradient norm: ADAMW_NORM_BLOCKS blocks stride over the buffer (the assignment of elements to threads
// depends on n only), each writes Σ g² of its elements; one block adds the partials in a fixed order.
// Squares of floats are exact in double, so the only rounding is in the sums.

#define ADAMW_NORM_BLOCKS 1024

__global__ void grad_norm_partials_kernel(double* partials, const float* g, size_t n) {
    __shared__ double red[32];
    double s = 0.0;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        double x = g[i];
        s += x * x;
    }
    s = block_sum(s, red);
    if (threadIdx.x == 0) partials[blockIdx.x] = s;
}

__global__ void grad_norm_final_kernel(double* out, const double* partials, int nparts) {
    __shared__ double red[32];
    double s = 0.0;
    for (int i = threadIdx.x; i < nparts; i += blockDim.x) s += partials[i];
    s = block_sum(s, red);
    if (threadIdx.x == 0) out[0] = s;
}

// out[0] = Σ_i grads[i]² (device double; NaN/Inf propagate). scratch: ADAMW_NORM_BLOCKS doubles.
static inline void adamw_grad_norm_squared(double* out, double* scratch, const float* grads, size_t n,
                                           cudaStream_t stream) {
    grad_norm_partials_kernel<<<ADAMW_NORM_BLOCKS, 256, 0, stream>>>(scratch, grads, n);
    cudaCheck(cudaGetLastError());
    grad_norm_final_kernel<<<1, 1024, 0, stream>>>(out, scratch, ADAMW_NORM_BLOCKS);
    cudaCheck(cudaGetLastError());
}
