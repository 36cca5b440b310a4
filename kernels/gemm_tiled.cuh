// kernels/gemm_tiled.cuh: the Linear layers as one simple in-repo tiled GEMM (the `make GEMM=own` build), with the
// same functions and semantics as kernels/gemm.cuh (cuBLASLt), so a program includes one or the other:
//
//   matmul_forward    out [N, OC] = inp [N, IC] · weight [OC, IC]ᵀ (+ bias [OC]) (then GELU-tanh when gelu = 1)
//   matmul_backward   dinp [N, IC] = dout · weight               (then ⊙ gelu'(pre_gelu) when pre_gelu is given)
//                     dweight [OC, IC] += doutᵀ · inp ;  dbias [OC] += Σ_n dout
//
// Why it exists: to run the whole model where cuBLAS cannot (a functional simulator such as GPGPU-Sim, a debugger),
// and as a second opinion when a cuBLASLt result is in doubt. It is not fast: 16×16 output tiles, a 16-deep K slice
// staged in shared memory, one output element per thread, fp32 accumulation in a fixed k order (deterministic).
// Overwritten: out, pre_gelu (forward); dinp unless accumulate_dinp. Accumulated (+=): dweight, dbias.
// Every product is C[m, n] = Σ_k A(m, k)·B(k, n) with A(m, k) = a[m·sam + k·sak] and B(k, n) = b[k·sbk + n·sbn]
// (row-major operands read with the strides of a transposed or plain view):
//   forward  C = out  [N, OC]:  A = inp [N, IC] (sam IC, sak 1),   B(k, n) = weight[n, k] (sbk 1, sbn IC)
//   dinp     C = dinp [N, IC]:  A = dout [N, OC] (sam OC, sak 1),  B(k, n) = weight[k, n] (sbk IC, sbn 1)
//   dweight  C = dW  [OC, IC]:  A(m, k) = dout[k, m] (sam 1, sak OC), B = inp [N, IC] (sbk IC, sbn 1)
#pragma once
#include <stdio.h>
#include "common.cuh"
#include "precision.cuh"
#include "reduce.cuh"

#define GEMM_TILE 16

static inline void gemm_init(void) {} // nothing to set up: no library handle, no workspace
static inline void gemm_free(void) {}

__device__ inline float gemm_gelu_tanh(float x) {
    return 0.5f * x * (1.f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
}
__device__ inline float gemm_gelu_tanh_grad(float x) {
    float th = tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x));
    return 0.5f * (1.f + th) + 0.5f * x * (1.f - th * th) * 0.7978845608028654f * (1.f + 3.f * 0.044715f * x * x);
}

// C [M, N] row-major (ldc = N), Tc = the output type. Epilogue, in order: + bias[n]; store the pre-activation to aux
// and apply GELU (epi_gelu = 1); multiply by gelu'(aux[m, n]) (epi_gelu = 2, the DGELU of a backward); then
// C = acc + beta·C. grid (ceil(N/16), ceil(M/16)), block (16, 16).
template <typename Tab, typename Tc>
__global__ void gemm_tiled_kernel(Tc* c, const Tab* a, long long sam, long long sak, const Tab* b, long long sbk,
                                  long long sbn, int M, int N, int K, float beta, const Tab* bias, Tab* aux,
                                  int epi_gelu) {
    __shared__ float as[GEMM_TILE][GEMM_TILE + 1], bs[GEMM_TILE][GEMM_TILE + 1];
    int tx = threadIdx.x, ty = threadIdx.y;
    int m = blockIdx.y * GEMM_TILE + ty, n = blockIdx.x * GEMM_TILE + tx;
    float acc = 0.f;
    for (int k0 = 0; k0 < K; k0 += GEMM_TILE) {
        int am = blockIdx.y * GEMM_TILE + ty, ak = k0 + tx; // as[ty][tx] = A(am, ak)
        as[ty][tx] = (am < M && ak < K) ? to_float(a[am * sam + ak * sak]) : 0.f;
        int bk = k0 + ty, bn = blockIdx.x * GEMM_TILE + tx; // bs[ty][tx] = B(bk, bn)
        bs[ty][tx] = (bk < K && bn < N) ? to_float(b[bk * sbk + bn * sbn]) : 0.f;
        __syncthreads();
        for (int kk = 0; kk < GEMM_TILE; kk++) acc += as[ty][kk] * bs[kk][tx];
        __syncthreads();
    }
    if (m >= M || n >= N) return;
    size_t i = (size_t)m * N + n;
    if (bias) acc += to_float(bias[n]);
    if (epi_gelu == 1) {
        if (aux) aux[i] = from_float<Tab>(acc);
        acc = gemm_gelu_tanh(acc);
    }
    if (epi_gelu == 2) acc *= gemm_gelu_tanh_grad(to_float(aux[i]));
    if (beta != 0.f) acc += beta * to_float(c[i]);
    c[i] = from_float<Tc>(acc);
}

template <typename Tab, typename Tc>
static void gemm_tiled(Tc* c, const Tab* a, long long sam, long long sak, const Tab* b, long long sbk, long long sbn,
                       int M, int N, int K, float beta, const Tab* bias, Tab* aux, int epi_gelu, cudaStream_t stream) {
    dim3 grid((N + GEMM_TILE - 1) / GEMM_TILE, (M + GEMM_TILE - 1) / GEMM_TILE), block(GEMM_TILE, GEMM_TILE);
    gemm_tiled_kernel<Tab, Tc>
        <<<grid, block, 0, stream>>>(c, a, sam, sak, b, sbk, sbn, M, N, K, beta, bias, aux, epi_gelu);
    cudaCheck(cudaGetLastError());
}

// out [N, OC] = inp [N, IC] · weight [OC, IC]ᵀ + bias (bias may be NULL); gelu = 1 applies GELU-tanh after the bias
// and, when pre_gelu is not NULL, stores the pre-activation there [N, OC] for the backward.
template <typename T>
static void matmul_forward(T* out, T* pre_gelu, const T* inp, const T* weight, const T* bias, int N, int IC, int OC,
                           int gelu, cudaStream_t stream) {
    gemm_tiled<T, T>(out, inp, IC, 1, weight, 1, IC, N, OC, IC, 0.f, bias, gelu ? pre_gelu : (T*)NULL, gelu ? 1 : 0,
                     stream);
}

static inline size_t matmul_backward_scratch_floats(int N, int OC) { return column_sum_scratch_floats(N, OC); }

// inverts out = inp·weightᵀ + bias (and out = gelu(...) of the layer before, through pre_gelu):
//   dinp  = dout·weight            (⊙ gelu'(pre_gelu) when pre_gelu != NULL; += when accumulate_dinp)
//   dweight += doutᵀ·inp   [OC, IC] fp32 ;   dbias += Σ_n dout   [OC] fp32
// Any of dinp, dweight, dbias may be NULL. scratch: matmul_backward_scratch_floats(N, OC) floats when dbias is set.
template <typename T>
static void matmul_backward(T* dinp, float* dweight, float* dbias, float* scratch, const T* dout, const T* inp,
                            const T* weight, const T* pre_gelu, int N, int IC, int OC, int accumulate_dinp,
                            cudaStream_t stream) {
    if (dinp) {
        if (pre_gelu && accumulate_dinp) {
            fprintf(stderr, "matmul_backward: pre_gelu (DGELU) cannot accumulate into dinp\n");
            exit(1);
        }
        gemm_tiled<T, T>(dinp, dout, OC, 1, weight, IC, 1, N, IC, OC, accumulate_dinp ? 1.f : 0.f, (const T*)NULL,
                         (T*)pre_gelu, pre_gelu ? 2 : 0, stream);
    }
    if (dweight)
        gemm_tiled<T, float>(dweight, dout, 1, OC, inp, IC, 1, OC, IC, N, 1.f, (const T*)NULL, (T*)NULL, 0, stream);
    if (dbias) column_sum(dbias, scratch, dout, N, OC, stream);
}
