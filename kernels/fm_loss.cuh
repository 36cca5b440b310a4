// kernels/fm_loss.cuh: the flow-matching MSE loss and its gradient (cpu/teacher_cpu.h flow_matching_loss)
//
//   fm_loss_forward    loss[b] = (1/n)·Σ_i (pred[b, i] − target[b, i])²       per sample, summed in double
//   fm_loss_backward   dpred[b, i] = dscale·w[b]·(pred[b, i] − target[b, i])   (w NULL: w[b] = 1)
//
// The teacher's loss is mean_b loss[b] with target = x1 − x, so its gradient is dscale = 2/(B·n), w = NULL.
// A per-sample weight covers TM-MF's adaptive normalisation ‖u − û‖² / sg(‖u − û‖² + c): w[b] = 1/(n·loss[b] + c),
// dscale = 2/B. Keep the loss on the host side to check it is finite before any backward (a non-finite step is skipped,
// not applied). Shapes: pred, target, dpred [B, n] fp32 (the unpatchified velocity); loss [B] double; w [B] fp32.
// Overwritten: loss, scratch (forward); dpred (backward: the first gradient of the backward pass).
// Deterministic: FM_LOSS_BLOCKS blocks per sample, each owns a fixed strided set of elements; one block per
// sample then adds the block sums in a fixed order.
// Version 1 (the simple one), checked and timed by dev/cuda/fm_loss.cu; not yet run on a GPU (dev/cuda/README.md).
#pragma once
#include "common.cuh"
#include "reduce.cuh"

#define FM_LOSS_BLOCKS 256 // per sample

// grid (FM_LOSS_BLOCKS, B), block 256: partials[b, blk] = Σ over the block's elements of (pred − target)²
__global__ void fm_loss_partials_kernel(double* partials, const float* pred, const float* target, size_t n) {
    __shared__ double red[32];
    const float* p = pred + (size_t)blockIdx.y * n;
    const float* t = target + (size_t)blockIdx.y * n;
    double s = 0.0;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        double d = (double)p[i] - (double)t[i];
        s += d * d;
    }
    s = block_sum(s, red);
    if (threadIdx.x == 0) partials[(size_t)blockIdx.y * gridDim.x + blockIdx.x] = s;
}

// grid B, block 256: loss[b] = Σ_blk partials[b, blk] / n
__global__ void fm_loss_final_kernel(double* loss, const double* partials, int nparts, size_t n) {
    __shared__ double red[32];
    double s = 0.0;
    for (int i = threadIdx.x; i < nparts; i += blockDim.x) s += partials[(size_t)blockIdx.x * nparts + i];
    s = block_sum(s, red);
    if (threadIdx.x == 0) loss[blockIdx.x] = s / (double)n;
}

__global__ void fm_loss_backward_kernel(float* dpred, const float* pred, const float* target, const float* w,
                                        float dscale, size_t n, size_t total) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    float s = w ? dscale * w[i / n] : dscale;
    dpred[i] = s * (pred[i] - target[i]);
}

// loss [B] (device doubles) = per-sample mean squared error. scratch: B·FM_LOSS_BLOCKS doubles.
static inline void fm_loss_forward(double* loss, double* scratch, const float* pred, const float* target, int B,
                                   size_t n, cudaStream_t stream) {
    fm_loss_partials_kernel<<<dim3(FM_LOSS_BLOCKS, B), 256, 0, stream>>>(scratch, pred, target, n);
    cudaCheck(cudaGetLastError());
    fm_loss_final_kernel<<<B, 256, 0, stream>>>(loss, scratch, FM_LOSS_BLOCKS, n);
    cudaCheck(cudaGetLastError());
}

// backward of loss[b] = (1/n)·Σ_i (pred − target)², for the objective (dscale/2)·Σ_b w_b·Σ_i (pred − target)²:
//   dpred = dscale·w[b]·(pred − target)   (overwritten)
static inline void fm_loss_backward(float* dpred, const float* pred, const float* target, const float* w, float dscale,
                                    int B, size_t n, cudaStream_t stream) {
    size_t total = (size_t)B * n;
    fm_loss_backward_kernel<<<(unsigned)((total + 255) / 256), 256, 0, stream>>>(dpred, pred, target, w, dscale, n,
                                                                                 total);
    cudaCheck(cudaGetLastError());
}
