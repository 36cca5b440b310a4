// gpu/wan_gpu.cuh: the Wan2.1 DiT on the GPU, forward and backward, B samples at a time. It mirrors cpu/wan_cpu.h
// name for name (wan_gpu_time_* ↔ wan_time_*, ...), and the CPU reference is its oracle (test_gpu.cu):
//   wan_gpu_time_*        host sinusoid (double) → time_embedding (Linear, SiLU, Linear) = e → SiLU → time_projection =
//   e0 wan_gpu_text_*        context [B, text_len, text_dim] (zero-padded) → Linear, GELU-tanh, Linear = c [B·text_len,
//   D] wan_gpu_patch_embed_* latent [B, C, T, Hl, Wl] → tokens [B·L, D] (fp32: the first residual stream)
//   wan_gpu_block_*       one DiT block on the residual stream
//   wan_gpu_head_*        LN, modulation by e, Linear, unpatchify
//   wan_gpu_forward_blocks / wan_gpu_backward_blocks: embeddings + the first n blocks (the TMD backbone when
//   n = L − H) with injected feature gradients; wan_gpu_forward / wan_gpu_backward: the whole model.
//
// Memory (llm.c's way): a WanGpuModel holds the fp32 master weights, the floatX copy the GEMMs read, the fp32 gradients
// and the AdamW moments, each ONE allocation carved by the layout of wan.h (WanParamsF / WanParamsX are WanParams'
// typed twins). A frozen model (bf16 build) keeps the floatX copy and fp32 only for the few tensors read in fp32
// (gpu/frozen_weights.h); a trainable one may borrow another's gradient buffer (wan_gpu_model_init_borrowing). A
// WanGpuAct holds every activation and the backward's scratch as ONE allocation planned from (config, batch, latent
// shape, training, recompute) by the buffer lists of gpu/act_plan.h, which the memory plan (gpu/distill_plan.h) sums
// too; wan_gpu_act_print_plan prints the bytes of each buffer. With per-block recompute (wan_gpu_recompute) a training
// plan keeps the residual stream and one block set, rebuilt block by block in the backward. An allocation that does not
// fit exits naming the buffer, the bytes asked, the bytes free and what to change.
//
// Precision (kernels/precision.cuh): floatX (bf16, or fp32 with -DENABLE_FP32) for the block GEMMs' inputs, weights
// copies and outputs and the attention operands; fp32 for the residual stream, norms' statistics and weights,
// modulation, the time embedding, the patch embedding and the head (the official code keeps e, e0 and the head in
// fp32), gradients of the residual stream and of every parameter, and the text-context gradient.
// Attention: cuDNN's fused SDPA where the build found cuDNN (-DENABLE_CUDNN, kernels/attention_cudnn.h; a shape cuDNN
// refuses, or TMD_CUDNN=0, takes the flash kernels), else
// the flash kernels (bf16 build, head dim 64 or 128) unless built with -DATTN_NAIVE; the naive kernels
// (which keep the probabilities [B, H, L, Lk]) otherwise. GEMMs: cuBLASLt, or the in-repo tiled kernel with
// -DGEMM_OWN (kernels/gemm_tiled.cuh). Deterministic: no float atomics anywhere.
//
// Conventions: forwards OVERWRITE their outputs. Backwards ACCUMULATE (+=) into parameter gradients (dW, NULL for a
// frozen model: no parameter gradient is computed) and into input gradients (NULL when not wanted), except the
// residual-stream gradient of a block, which is updated IN PLACE (d x_out in, d x_in out: the identity path of the
// residual means the CPU's dx_in += dx_out + ... is the same buffer here). Everything runs on a->stream, in order.
#pragma once
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../wan.h"                  // config, parameter layout (WAN_DEFINE_PARAMS, wan_carve_view)
#include "act_plan.h"                // the activation buffers as lists: the carve below and the memory plan read them
#include "frozen_weights.h"          // which tensors are read in fp32: a frozen model keeps fp32 only for those
#include "../kernels/common.cuh"     // cudaCheck, cuda_malloc_named
#include "../kernels/precision.cuh"  // floatX
#include "../kernels/reduce.cuh"     // deterministic column sums
#include "../kernels/layernorm.cuh"  // LN + AdaLN modulation, affine LN
#include "../kernels/rmsnorm.cuh"    // q/k RMSNorm
#include "../kernels/rope.cuh"       // 3D RoPE (table built on the host)
#include "../kernels/gelu.cuh"       // SiLU (time embedding)
#include "../kernels/residual.cuh"   // gated residual adds
#include "../kernels/timestep.cuh"   // time sinusoid (host)
#include "../kernels/patchify.cuh"   // latent <-> tokens
#include "../kernels/attention.cuh"  // flash and naive attention
#include "../kernels/bench_prof.cuh" // --bench: time per kernel class (off otherwise)
#include "cp_gpu.cuh"                // context parallelism: the group, the all-to-all's layouts
#ifdef ENABLE_CUDNN
#include "../kernels/attention_cudnn.h" // cuDNN's fused attention (attention_cudnn.o), the flash path's default
#endif
#ifdef GEMM_OWN
#include "../kernels/gemm_tiled.cuh" // Linear layers: the in-repo tiled GEMM
#define WAN_GPU_GEMM_NAME "in-repo tiled GEMM"
#else
#include "../kernels/gemm.cuh" // Linear layers: cuBLASLt
#define WAN_GPU_GEMM_NAME "cuBLASLt"
#endif

WAN_DEFINE_PARAMS(WanParamsF, WanBlockF, float)  // fp32 views: master weights, gradients, AdamW moments
WAN_DEFINE_PARAMS(WanParamsX, WanBlockX, floatX) // floatX views: the copy the block GEMMs read

// ---------------------------------------------------------------------------------------------------------
// weights and the model

// views of one set of Wan weights: P over the fp32 master weights, X over their floatX copy (X == P's memory in the
// fp32 build). A TMD student carves these over the front of its own buffer (Wan parameters first, extras after).
// units: NULL when P and X view the whole model (every model but a fully sharded one), else the provider below
typedef struct WanGpuWeights_ {
    WanConfig cfg;
    WanParamsF P;
    WanParamsX X;
    struct WanGpuUnits_* units;
} WanGpuWeights;

// Fully sharded weights (gpu/fsdp_gpu.cuh): no rank holds the whole model; the loops below ask for each UNIT just
// before it runs (lib/shard.h's Wan units: 0 the embeddings, 1 + l block l, num_layers + 1 the head) and get views in
// which only that unit's tensors are set, and a trainable model's backward hands each unit's gradient back when it is
// done.
typedef struct WanGpuUnits_ {
    const WanGpuWeights* (*gather)(struct WanGpuUnits_* self, int unit,
                                   int backward); // the unit's weights, readable on the stream
    WanParamsF* (*grads)(struct WanGpuUnits_* self,
                         int unit);                    // where the unit's backward accumulates (zeroed when it opens)
    void (*done)(struct WanGpuUnits_* self, int unit); // the unit's backward is finished: its gradient reduce-scattered
} WanGpuUnits;
static const WanGpuWeights* wan_gpu_unit_(const WanGpuWeights* W, int u, int backward) {
    return W->units ? W->units->gather(W->units, u, backward) : W;
}
static WanParamsF* wan_gpu_unit_grads_(const WanGpuWeights* W, WanParamsF* dW, int u) {
    return dW && W->units ? W->units->grads(W->units, u) : dW;
}
static void wan_gpu_unit_done_(const WanGpuWeights* W, const WanParamsF* dW, int u) {
    if (dW && W->units) W->units->done(W->units, u);
}

// carves params [n] fp32 and params_x [n] floatX (device memory, wan_num_params(c) elements) into w
static void wan_gpu_weights_view(WanGpuWeights* w, const WanConfig* c, float* params, floatX* params_x) {
    w->cfg = *c;
    w->units = NULL;
    wan_carve_view(c, &w->P, sizeof(w->P), params, sizeof(float));
    wan_carve_view(c, &w->X, sizeof(w->X), params_x, sizeof(floatX));
}

typedef struct {
    const char* name; // "teacher", "fake score", ...: names its buffers in the memory plan and OOM errors
    WanGpuWeights w;
    size_t n;           // parameters
    size_t n_fp32;      // floats in params: n, except a frozen model in the bf16 build (below)
    float* params;      // [n] fp32 master weights. A frozen model in the bf16 build: [n_fp32], only the tensors the
                        // GPU reads in fp32 (gpu/frozen_weights.h), packed in layout order; w.P's other views are NULL
    floatX* params_x;   // [n] floatX copy (== params in the fp32 build)
    float* grads;       // [n] fp32, NULL when frozen; owned, or borrowed from another model (grads_borrowed)
    int grads_borrowed; // 1: grads is another model's buffer (wan_gpu_model_init_borrowing), not freed here
    float* opt_m;       // [n] AdamW first moment, NULL when frozen (opt_m and opt_v: one allocation)
    float* opt_v;       // [n] AdamW second moment
    WanParamsF dP;      // view of grads
    long step;          // AdamW steps taken
} WanGpuModel;

static const char* WAN_GPU_OOM_HINT = "lower --batch, use a smaller latent (fewer frames or a lower resolution), "
                                      "or turn on activation recompute (--recompute on)";

// Per-block activation recompute for every training plan made after it is set (the programs' --recompute; the
// tests switch it): a training WanGpuAct then keeps only the residual stream (each block's input) and one block's
// activations, and wan_gpu_backward_blocks re-runs each block's forward into that one set just before its backward.
// The TMD flow head's evaluations planned on such a backbone do the same with the backbone's set (gpu/tmd_gpu.cuh).
// The kernels are deterministic, so the gradients are bit-identical with and without it (test_gpu checks).
static int wan_gpu_recompute = 0;

__global__ void wan_gpu_cast_kernel_f2x(floatX* out, const float* in, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = from_float<floatX>(in[i]);
}
static void wan_gpu_cast_to_x(floatX* out, const float* in, size_t n, cudaStream_t s) {
    if (n == 0) return;
    wan_gpu_cast_kernel_f2x<<<(unsigned)((n + 255) / 256), 256, 0, s>>>(out, in, n);
    cudaCheck(cudaGetLastError());
}

// rewrites the floatX copy from the master weights (after loading or an optimizer step; AdamW does it itself). A
// frozen model of the bf16 build has no full master weights to cast from.
static void wan_gpu_model_refresh_copy(WanGpuModel* m, cudaStream_t s) {
#ifndef ENABLE_FP32
    if (m->n_fp32 != m->n) {
        fprintf(stderr, "wan_gpu_model_refresh_copy: %s is frozen (fp32 for %zu of %zu parameters only)\n", m->name,
                m->n_fp32, m->n);
        exit(1);
    }
    wan_gpu_cast_to_x(m->params_x, m->params, m->n, s);
#else
    (void)m;
    (void)s;
#endif
}

#ifndef ENABLE_FP32
// A frozen model in the bf16 build: the floatX copy of every tensor (what the block GEMMs read) and fp32 only for the
// tensors the GPU reads in fp32 (wan_gpu_reads_fp32), packed in layout order; every other view of P stays NULL, so a
// reader that was missed fails loudly instead of reading stale memory. Uploaded tensor by tensor through one staging
// buffer of the largest tensor (no full-size fp32 buffer on the device); the copy is the same cast as for a trainable
// model, so the floatX bits are the same. host_params NULL: zeros.
static void wan_gpu_model_frozen_upload_(WanGpuModel* m, const WanConfig* c, const float* host_params,
                                         const char* name) {
    WanTensor* tl = (WanTensor*)malloc(sizeof(WanTensor) * WAN_MAX_TENSORS);
    if (!tl) {
        fprintf(stderr, "wan_gpu_model_init: out of host memory for the layout table\n");
        exit(1);
    }
    int nt = wan_layout(c, tl, NULL, NULL, NULL);
    size_t big = 0;
    m->n_fp32 = 0;
    for (int i = 0; i < nt; i++) {
        if (tl[i].numel > big) big = tl[i].numel;
        if (wan_gpu_reads_fp32(tl[i].name)) m->n_fp32 += tl[i].numel;
    }
    char what[128];
    snprintf(what, sizeof(what), "%s weights read in fp32", name);
    m->params =
        (float*)cuda_malloc_named((m->n_fp32 ? m->n_fp32 : 1) * sizeof(float), what, "use a smaller model (--preset)");
    snprintf(what, sizeof(what), "%s weight copy (%s)", name, FLOATX_NAME);
    m->params_x = (floatX*)cuda_malloc_named(m->n * sizeof(floatX), what, "use a smaller model (--preset)");
    m->w.cfg = *c;
    wan_carve_view(c, &m->w.X, sizeof(m->w.X), m->params_x, sizeof(floatX));
    memset(&m->w.P, 0, sizeof(m->w.P));
    float* stage = NULL;
    if (host_params)
        stage = (float*)cuda_malloc_named(big * sizeof(float), "weight upload staging (fp32, the largest tensor)",
                                          "use a smaller model (--preset)");
    // every pointer field of the views, in struct order = layout order (wan.h WAN_DEFINE_PARAMS, wan_layout_): the
    // i-th field set in X is tensor i; P gets the same field for the tensors read in fp32
    size_t off32 = 0;
    int t = 0;
    for (size_t f = 0; f < sizeof(WanParamsX); f += sizeof(floatX*)) {
        floatX* px;
        memcpy(&px, (char*)&m->w.X + f, sizeof(px));
        if (!px) continue;
        if (t >= nt || (size_t)(px - m->params_x) != tl[t].offset) {
            fprintf(stderr, "wan_gpu_model_init: the views' field order is not wan.h's layout order (tensor %d)\n", t);
            exit(1);
        }
        const WanTensor* T = &tl[t++];
        float* pf = NULL;
        if (wan_gpu_reads_fp32(T->name)) {
            pf = m->params + off32;
            off32 += T->numel;
            memcpy((char*)&m->w.P + f, &pf, sizeof(pf));
        }
        if (!host_params || T->numel == 0) continue;
        float* src = pf ? pf : stage; // fp32 tensors go straight to their place, the others through the staging buffer
        cudaCheck(cudaMemcpy(src, host_params + T->offset, T->numel * sizeof(float), cudaMemcpyHostToDevice));
        wan_gpu_cast_to_x(px, src, T->numel, 0); // same stream as the next copy into the staging buffer: in order
    }
    if (t != nt || off32 != m->n_fp32) {
        fprintf(stderr, "wan_gpu_model_init: %d of %d tensors, %zu of %zu fp32 elements placed\n", t, nt, off32,
                m->n_fp32);
        exit(1);
    }
    if (!host_params) {
        cudaCheck(cudaMemset(m->params, 0, m->n_fp32 * sizeof(float)));
        cudaCheck(cudaMemset(m->params_x, 0, m->n * sizeof(floatX)));
    }
    cudaCheck(cudaDeviceSynchronize());
    if (stage) cudaCheck(cudaFree(stage));
    free(tl);
    printf("[memory] %-12s weights %8.1f MiB %s copy + %.1f MiB fp32 (%zu parameters read in fp32), frozen\n", name,
           m->n * sizeof(floatX) / 1048576.0, FLOATX_NAME, m->n_fp32 * sizeof(float) / 1048576.0, m->n_fp32);
}
#endif

// allocates the model on the device and uploads host_params [n] fp32 (layout order; NULL: zeros). trainable: also
// AdamW moments and gradients, the latter in borrowed_grads when given (at least n floats, another model's, not freed
// here; wan_gpu_model_init_borrowing). A frozen model in the bf16 build keeps fp32 only for the tensors read in fp32
// (wan_gpu_model_frozen_upload_). Prints one line per model.
static void wan_gpu_model_init_(WanGpuModel* m, const WanConfig* c, const float* host_params, int trainable,
                                float* borrowed_grads, size_t borrowed_n, const char* name) {
    memset(m, 0, sizeof(*m));
    m->name = name;
    m->n = wan_num_params(c);
    char what[128];
    size_t bytes = m->n * sizeof(float);
    if (borrowed_grads && (!trainable || borrowed_n < m->n)) {
        fprintf(
            stderr,
            "wan_gpu_model_init: %s borrows a gradient buffer of %zu floats; it needs %zu (and must be trainable)\n",
            name, borrowed_n, m->n);
        exit(1);
    }
#ifndef ENABLE_FP32
    if (!trainable) {
        wan_gpu_model_frozen_upload_(m, c, host_params, name);
        return;
    }
#endif
    m->n_fp32 = m->n;
    snprintf(what, sizeof(what), "%s master weights (fp32)", name);
    m->params = (float*)cuda_malloc_named(bytes, what, "use a smaller model (--preset)");
    if (host_params)
        cudaCheck(cudaMemcpy(m->params, host_params, bytes, cudaMemcpyHostToDevice));
    else
        cudaCheck(cudaMemset(m->params, 0, bytes));
#ifdef ENABLE_FP32
    m->params_x = m->params;
#else
    snprintf(what, sizeof(what), "%s weight copy (%s)", name, FLOATX_NAME);
    m->params_x = (floatX*)cuda_malloc_named(m->n * sizeof(floatX), what, "use a smaller model (--preset)");
#endif
    wan_gpu_weights_view(&m->w, c, m->params, m->params_x);
    wan_gpu_model_refresh_copy(m, 0);
    printf("[memory] %-12s weights %8.1f MiB fp32", name, bytes / 1048576.0);
#ifndef ENABLE_FP32
    printf(" + %.1f MiB %s copy", m->n * sizeof(floatX) / 1048576.0, FLOATX_NAME);
#endif
    if (trainable) {
        if (borrowed_grads) {
            m->grads = borrowed_grads;
            m->grads_borrowed = 1;
        } else {
            snprintf(what, sizeof(what), "%s gradients (fp32)", name);
            m->grads = (float*)cuda_malloc_named(bytes, what, "use a smaller model, or freeze it");
        }
        cudaCheck(cudaMemset(m->grads, 0, bytes));
        wan_carve_view(c, &m->dP, sizeof(m->dP), m->grads, sizeof(float));
        snprintf(what, sizeof(what), "%s AdamW moments (2 x fp32)", name);
        m->opt_m = (float*)cuda_malloc_named(2 * bytes, what, "use a smaller model, or freeze it");
        m->opt_v = m->opt_m + m->n;
        cudaCheck(cudaMemset(m->opt_m, 0, 2 * bytes));
        if (borrowed_grads)
            printf(" + gradients borrowed (%zu floats, not owned) + %.1f MiB AdamW", borrowed_n, 2 * bytes / 1048576.0);
        else
            printf(" + %.1f MiB gradients + %.1f MiB AdamW", bytes / 1048576.0, 2 * bytes / 1048576.0);
    }
    printf("\n");
}

static void wan_gpu_model_init(WanGpuModel* m, const WanConfig* c, const float* host_params, int trainable,
                               const char* name) {
    wan_gpu_model_init_(m, c, host_params, trainable, NULL, 0, name);
}

// a trainable model whose gradients live in grads [grads_n >= n floats], a buffer another model owns and whose
// iterations are disjoint from this one's (Stage 2: the fake score in the student's buffer, train_tmd.cu). The
// buffer is zeroed here; the caller zeroes it before each of this model's iterations as before.
static void wan_gpu_model_init_borrowing(WanGpuModel* m, const WanConfig* c, const float* host_params, float* grads,
                                         size_t grads_n, const char* name) {
    wan_gpu_model_init_(m, c, host_params, 1, grads, grads_n, name);
}

static void wan_gpu_model_free(WanGpuModel* m) {
    cudaCheck(cudaFree(m->params));
#ifndef ENABLE_FP32
    cudaCheck(cudaFree(m->params_x));
#endif
    if (m->grads && !m->grads_borrowed) cudaCheck(cudaFree(m->grads));
    if (m->opt_m) cudaCheck(cudaFree(m->opt_m));
    memset(m, 0, sizeof(*m));
}

// ---------------------------------------------------------------------------------------------------------
// glue kernels (one line of math each; checked through the whole-model parity in test_gpu.cu)

// mod[b, i] = param[i] + e[b·E + i mod E], i < M: a block's modulation (M = E = 6D) or the head's (M = 2D, E = D)
__global__ void wan_gpu_mod_forward_kernel(float* mod, const float* param, const float* e, int B, int M, int E) {
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= B * M) return;
    int b = idx / M, i = idx % M;
    mod[idx] = param[i] + e[(size_t)b * E + i % E];
}
// inverts it: dparam[i] += Σ_b dmod[b, i] (dparam may be NULL)
__global__ void wan_gpu_mod_backward_param_kernel(float* dparam, const float* dmod, int B, int M) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= M) return;
    float s = 0.f;
    for (int b = 0; b < B; b++) s += dmod[(size_t)b * M + i];
    dparam[i] += s;
}
// de[b, j] += Σ_{i ≡ j mod E} dmod[b, i]
__global__ void wan_gpu_mod_backward_e_kernel(float* de, const float* dmod, int B, int M, int E) {
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= B * E) return;
    int b = idx / E, j = idx % E;
    float s = 0.f;
    for (int i = j; i < M; i += E) s += dmod[(size_t)b * M + i];
    de[idx] += s;
}
// dst[i] += src[i]
template <typename T> __global__ void wan_gpu_add_kernel(float* dst, const T* src, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) dst[i] += to_float(src[i]);
}
template <typename T> static void wan_gpu_add(float* dst, const T* src, size_t n, cudaStream_t s) {
    if (n == 0) return;
    wan_gpu_add_kernel<T><<<(unsigned)((n + 255) / 256), 256, 0, s>>>(dst, src, n);
    cudaCheck(cudaGetLastError());
}
static void wan_gpu_mod_forward(float* mod, const float* param, const float* e, int B, int M, int E, cudaStream_t s) {
    wan_gpu_mod_forward_kernel<<<(B * M + 255) / 256, 256, 0, s>>>(mod, param, e, B, M, E);
    cudaCheck(cudaGetLastError());
}
static void wan_gpu_mod_backward(float* dparam, float* de, const float* dmod, int B, int M, int E, cudaStream_t s) {
    if (dparam) {
        wan_gpu_mod_backward_param_kernel<<<(M + 255) / 256, 256, 0, s>>>(dparam, dmod, B, M);
        cudaCheck(cudaGetLastError());
    }
    if (de) {
        wan_gpu_mod_backward_e_kernel<<<(B * E + 255) / 256, 256, 0, s>>>(de, dmod, B, M, E);
        cudaCheck(cudaGetLastError());
    }
}

// ---------------------------------------------------------------------------------------------------------
// the activation plan: one allocation carved twice (a sizing pass, then the real one), every buffer named

#define WAN_GPU_PLAN_MAX 96
typedef struct {
    const char* name;
    size_t bytes;
    int count;
} WanGpuPlanEntry;
typedef struct {
    char* base;
    size_t used;
    WanGpuPlanEntry e[WAN_GPU_PLAN_MAX];
    int ne;
} WanGpuArena;

// n elements of T, 256-byte aligned (cuBLASLt and the flash kernels' 16-byte loads want aligned rows)
// (act_round; n = 0: the buffer is absent on this path, NULL)
template <typename T> static T* wan_gpu_take(WanGpuArena* a, size_t n, const char* name) {
    if (n == 0) return NULL;
    size_t bytes = act_round(n * sizeof(T));
    T* p = a->base ? (T*)(a->base + a->used) : NULL;
    a->used += bytes;
    if (!a->base) {
        int i = 0;
        while (i < a->ne && strcmp(a->e[i].name, name)) i++;
        if (i == a->ne && a->ne < WAN_GPU_PLAN_MAX) {
            a->e[i].name = name;
            a->e[i].bytes = 0;
            a->e[i].count = 0;
            a->ne++;
        }
        if (i < WAN_GPU_PLAN_MAX) {
            a->e[i].bytes += bytes;
            a->e[i].count++;
        }
    }
    return p;
}

typedef struct {
    float* sin; // [B, freq_dim] [cos | sin] of the model timestep (computed on the host in double)
    float* h1;  // [B, D] time_embedding.0 output (pre-SiLU)
    float* a1;  // [B, D] SiLU(h1)
    float* e;   // [B, D] time_embedding.2 output: the head's conditioning
    float* se;  // [B, D] SiLU(e)
    float* e0;  // [B, 6D] time_projection output: the blocks' modulation
} WanGpuTimeAct;

typedef struct {
    float* ctx;    // [B, text_len, text_dim] fp32 input, zero-padded (kept: the first Linear's dW reads it)
    floatX* ctx_x; // [B, text_len, text_dim] floatX copy (the GEMM input)
    floatX* h1;    // [B·text_len, D] pre-GELU
    floatX* a1;    // [B·text_len, D]
    floatX* c;     // [B·text_len, D] the context every cross-attention reads
} WanGpuTextAct;

typedef struct {
    const float* x_in;          // [N, D] the caller's residual buffer (kept for the backward), N = B·L
    float* mod;                 // [B, 6D] modulation + e0: shift, scale, gate; shift, scale, gate
    float *ln1_mean, *ln1_rstd; // [N]
    floatX* h1;                 // [N, D] LN(x)·(1 + scale) + shift
    floatX *q_pre, *k_pre, *v;  // [N, D] projections (q_pre, k_pre kept for the RMSNorm backward)
    float *q_rstd, *k_rstd;     // [N]
    floatX *q, *k;              // [N, D] RMSNorm then RoPE (in place): the attention operands
    float* att;                 // [B, H, L, L] probabilities (naive attention only)
    float* lse;                 // [B, H, L] row logsumexp (the flash backward reads it)
    floatX* ao;                 // [N, D] attention output
    floatX* sa;                 // [N, D] self_attn.o output
    float* x1;                  // [N, D] x + sa·gate
    float *ln3_mean, *ln3_rstd; // [N]
    floatX* y3;                 // [N, D] norm3(x1)
    floatX* cq_pre;             // [N, D]
    float* cq_rstd;             // [N]
    floatX* cq;                 // [N, D]
    floatX* ck_pre;             // [B·Lc, D]
    float* ck_rstd;             // [B·Lc]
    floatX *ck, *cv;            // [B·Lc, D]
    float* catt;                // [B, H, L, Lc] (naive only)
    float* clse;                // [B, H, L]
    floatX* cao;                // [N, D] cross-attention output
    floatX* ca;                 // [N, D] cross_attn.o output
    float* x2;                  // [N, D] x1 + ca
    float *ln2_mean, *ln2_rstd; // [N]
    floatX* h2;                 // [N, D]
    floatX* f1;                 // [N, F] ffn.0 pre-GELU
    floatX* f1a;                // [N, F] GELU(f1)
    floatX* f2;                 // [N, D] ffn.2 output
    const WanCp* cp;            // context parallelism (NULL: none): N = B·Lr, self-attention on the group's heads:
    floatX *qh, *kh, *vh, *aoh; //   [B, L, Hk·d] q, k, v and the attention output, head-sharded
    float* atth;                //   [B, Hk, L, L] probabilities (naive only; att is then unused)
} WanGpuBlockAct;

typedef struct {
    float* mod;         // [B, 2D] head.modulation + e: shift, scale
    float *mean, *rstd; // [N]
    float* hm;          // [N, D] LN(x)·(1 + scale) + shift
    float* y;           // [N, out_dim·pt·ph·pw]
} WanGpuHeadAct;

// the backward's scratch, shared by every layer (the layers run one after another on one stream)
typedef struct {
    float* g;                  // [N, D] gradient of the residual stream (updated in place block by block)
    float* dc;                 // [B·Lc, D] gradient of the text context c, summed over the blocks
    float* de0;                // [B, 6D]
    float* de;                 // [B, D]
    float* dmod;               // [B, 6D] one block's (or the head's [B, 2D]) modulation gradient
    floatX *t1, *t2, *t3;      // [N, D]
    floatX* tF;                // [N, F]
    floatX *dk, *dv;           // [N, D] self-attention key/value gradients
    floatX *dck, *dcv, *dtext; // [B·Lc, D]
    floatX* dctx_x;            // [B·Lc, text_dim]
    float* dS;                 // [B, H, L, max(L, Lc)] (naive only)
    float* delta;              // [B, H, L] (flash only)
    float *tg1, *tg2;          // [B, D] time-embedding gradients
    float* dhm;                // [N, D] head
    float* dy;                 // [N, out_dim·P] head
    float* dpatch;             // [N, in_dim·P] patch embedding (only for the latent's gradient)
    float* red;                // reductions' partial sums (the largest any layer needs)
} WanGpuScratch;

typedef struct WanGpuAct_ {
    WanConfig cfg;
    int B, training, flash; // batch; planned for a backward; flash attention
    int recompute;          // training with one block set, rebuilt per block in the backward (wan_gpu_recompute)
    PatchGrid g;            // the input grid (C = in_dim); token count g.L (context parallelism: this rank's, L / cp)
    WanCp* cp;              // context parallelism (WanGpuActOpts.cp; NULL: none): the group, the whole grids, buffers
    PatchGrid g_out;        // the same grid with C = out_dim
    float* rope;            // [L, head_dim/2, 2] (host-built table)
    float* patches;         // [N, in_dim·P] fp32
    float* xs;   // [nslots, N, D] residual stream: level 0 the patch embedding, level l+1 after block l (wan_gpu_xs)
    int nblocks; // the blocks this plan runs (training: its residual levels 0..nblocks are kept)
    int nslots,
        slot[WAN_MAX_LAYERS + 1]; // level → slot of xs (training: the identity; forward only: l mod 2 or a kept slot)
    int borrowed;                 // the block set and the backward scratch are a lender's (WanGpuActOpts.share)
    float* out;                   // [B, out_dim, T, Hl, Wl] the velocity
    WanGpuTimeAct time;
    WanGpuTextAct text;
    WanGpuBlockAct
        blocks[WAN_MAX_LAYERS]; // training: one set per block; forward only or recompute: all share blocks[0]'s memory
    WanGpuHeadAct head;
    WanGpuScratch s; // NULL pointers when !training
    WanGpuArena arena;
    char* base; // the one allocation
    cudaStream_t stream;
} WanGpuAct;

// the residual stream at level l (the input of block l; level n is the output of block n − 1). A forward-only plan
// holds, after a forward of n blocks, level n and the levels it was asked to keep (WanGpuActOpts.keep), nothing else.
static float* wan_gpu_xs(const WanGpuAct* a, int l) {
    if (l < 0 || l > a->nblocks) {
        fprintf(stderr, "wan_gpu_xs: level %d of a plan that runs %d blocks\n", l, a->nblocks);
        exit(1);
    }
    return a->xs + (size_t)a->slot[l] * a->B * a->g.L * a->cfg.dim;
}

// how a plan is made beyond its size (wan_gpu_act_init_opts; all zero: the whole model, its own work sets)
typedef struct {
    const struct WanGpuAct_*
        share;  // lender of the block set and the backward scratch (same config, batch, grid); NULL: own
    int blocks; // the blocks it runs (0: all); a training plan keeps levels 0..blocks
    int n_keep, keep[WAN_MAX_LAYERS + 1]; // forward only: residual levels kept for readers after the forward
    Comm* cp;                             // context parallelism: the group sharing each sample (NULL or one rank: none)
} WanGpuActOpts;

static size_t wan_gpu_max_(size_t a, size_t b) { return a > b ? a : b; }

// Carving helpers, public so that other models built from these pieces (the TMD student's flow head, run N times with
// every step's activations kept) plan their own buffers the same way: call them in a sizing pass (ar->base NULL) and a
// carving pass over one allocation of ar->used bytes, exactly as wan_gpu_act_init does.

// the list entries' types (gpu/act_plan.h): f32 → float, fx → floatX
typedef float act_type_f32;
typedef floatX act_type_fx;
#define WAN_GPU_TAKE_(type, field, n, name) field = wan_gpu_take<act_type_##type>(ar, (size_t)(n), name);

// one block's activations for B samples of L tokens; flash: the attention path (WanGpuAct.flash); training 0: a
// forward-only set (no FFN pre-activation, f1 NULL: the block forward then writes none)
static void wan_gpu_block_act_carve(WanGpuBlockAct* k, WanGpuArena* ar, const WanConfig* c, int B, int L, int flash,
                                    int training = 1) {
    ActDims z = act_dims(c, B, L, flash, 0, 0, 1);
    z.training = training;
    WAN_BLOCK_ACT_BUFFERS(WAN_GPU_TAKE_, k, z)
}

// the head's activations for B samples of L tokens
static void wan_gpu_head_act_carve(WanGpuHeadAct* h, WanGpuArena* ar, const WanConfig* c, int B, int L) {
    ActDims z = act_dims(c, B, L, 1, 0, 0, 1);
    WAN_HEAD_ACT_BUFFERS(WAN_GPU_TAKE_, h, z)
}

// the backward's scratch for B samples of L tokens (shared by every layer that runs on the same stream)
static void wan_gpu_scratch_carve(WanGpuScratch* s, WanGpuArena* ar, const WanConfig* c, int B_, int L_, int flash) {
    ActDims z = act_dims(c, B_, L_, flash, 0, 0, 1);
    // the list's reduction buffer must cover every reduction the layers run (the kernels' own counts)
    size_t B = B_, L = L_, D = c->dim, F = c->ffn_dim, Lc = c->text_len, N = B * L, Pout = z.Pout;
    size_t red = layernorm_backward_scratch_floats((int)B, (int)L, (int)D);
    red = wan_gpu_max_(red, rmsnorm_backward_scratch_floats((int)N, (int)D));
    red = wan_gpu_max_(red, rmsnorm_backward_scratch_floats((int)(B * Lc), (int)D));
    red = wan_gpu_max_(red, residual_backward_scratch_floats((int)B, (int)L, (int)D));
    red = wan_gpu_max_(red, matmul_backward_scratch_floats((int)N, (int)wan_gpu_max_(wan_gpu_max_(F, D), Pout)));
    red = wan_gpu_max_(red, matmul_backward_scratch_floats((int)(B * Lc), (int)D));
    red = wan_gpu_max_(red, matmul_backward_scratch_floats((int)B, (int)(6 * D)));
    if (z.red < red) {
        fprintf(stderr, "wan_gpu_scratch_carve: gpu/act_plan.h plans %zu reduction floats, the kernels need %zu\n",
                z.red, red);
        exit(1);
    }
    WAN_SCRATCH_BUFFERS(WAN_GPU_TAKE_, s, z)
}

static void wan_gpu_act_carve_(WanGpuAct* a, const WanGpuAct* share) {
    const WanConfig* c = &a->cfg;
    WanGpuArena* ar = &a->arena;
    ActDims z = act_dims(c, a->B, a->g.L, a->flash, 0, 0, 1);
    z.slots = (size_t)a->nslots;
    WAN_ACT_STREAM_BUFFERS(WAN_GPU_TAKE_, a, z)
    int nsets = act_block_sets(a->nblocks, a->training, a->recompute);
    if (share)
        a->blocks[0] = share->blocks[0]; // the lender's one set (gpu/act_plan.h: borrowed work sets)
    else
        for (int l = 0; l < nsets; l++)
            wan_gpu_block_act_carve(&a->blocks[l], ar, c, a->B, a->g.L, a->flash, a->training);
    for (int l = share ? 1 : nsets; l < c->num_layers; l++)
        a->blocks[l] = a->blocks[0]; // forward only or recompute: one set, reused by every block
    wan_gpu_head_act_carve(&a->head, ar, c, a->B, a->g.L);
    if (a->training && share)
        a->s = share->s;
    else if (a->training)
        wan_gpu_scratch_carve(&a->s, ar, c, a->B, a->g.L, a->flash);
}

// the level → slot map of a plan (gpu/act_plan.h: residual levels); -1 with a message for a bad keep list
static int wan_gpu_stream_map_(WanGpuAct* a, const WanGpuActOpts* o, char* err) {
    a->nslots = act_stream_slots(a->training, a->nblocks, a->training ? 0 : o->n_keep);
    for (int l = 0; l <= a->nblocks; l++) a->slot[l] = a->training ? l : (l & 1);
    if (a->training) return 0;
    for (int k = 0; k < o->n_keep; k++) {
        int l = o->keep[k];
        if (l < 0 || l > a->nblocks || a->slot[l] >= 2) {
            snprintf(err, ST_ERRLEN, "keep list: level %d is out of 0..%d or listed twice", l, a->nblocks);
            return -1;
        }
        a->slot[l] = 2 + k;
    }
    return 0;
}

// a lender must have a block set that holds nothing between calls (forward only, or recomputing) and, for a training
// borrower, a backward scratch; and the same shapes
static int wan_gpu_share_ok_(const WanGpuAct* a, const WanGpuAct* sh, char* err) {
    const WanConfig *c = &a->cfg, *d = &sh->cfg;
    if (sh->borrowed) {
        snprintf(err, ST_ERRLEN, "a plan that borrows its work sets cannot lend them; lend from the owner");
        return -1;
    }
    if (sh->training && !sh->recompute) {
        snprintf(err, ST_ERRLEN,
                 "the lender keeps every block's activations (no recompute): its block sets are not free to share");
        return -1;
    }
    if (a->training && (!sh->training || !a->recompute)) {
        snprintf(err, ST_ERRLEN, "a training plan borrows only from a training plan, both recomputing");
        return -1;
    }
    if (sh->B != a->B || sh->g.L != a->g.L || sh->flash != a->flash || c->dim != d->dim || c->ffn_dim != d->ffn_dim ||
        c->num_heads != d->num_heads || c->text_len != d->text_len || c->text_dim != d->text_dim ||
        c->out_dim != d->out_dim || wan_patch_numel(c) != wan_patch_numel(d) || c->in_dim != d->in_dim) {
        snprintf(err, ST_ERRLEN, "the lender's shapes differ (batch %d vs %d, %d vs %d tokens, or the config)", sh->B,
                 a->B, sh->g.L, a->g.L);
        return -1;
    }
    return 0;
}

// the attention path this build and config take
static int wan_gpu_use_flash(const WanConfig* c) {
#if defined(ENABLE_FP32) || defined(ATTN_NAIVE)
    (void)c;
    return 0;
#else
    int d = wan_head_dim(c);
    return d == 64 || d == 128;
#endif
}

// context parallelism (WanGpuActOpts.cp, gpu/cp_gpu.cuh): the plan holds this rank's Lr = L / cp tokens of every
// sample (a->g.L = Lr; the whole grids in a->cp), and a->cp's buffers beside the arena: the all-to-all's layouts, the
// head-sharded q, k, v and attention output of every block set (and the naive attention's [B, Hk, L, L]), the whole
// latent's patches and the gathered output. The forward's output a->out is the WHOLE velocity on every rank of the
// group (the head's rows all-gathered: an out_dim·P-float row a token, small next to a block's activations), so every
// loss downstream is computed identically on every rank of the group, none needs a reduction over it. The backward's
// gradients are this rank's tokens' part: the parameters', de, dctx and dx (dx: zero outside this rank's tokens) are
// summed over the group by the caller (comm_all_reduce on the group, or the world's all-reduce of the gradients).
static int wan_gpu_cp_layout_(WanGpuAct* a, const WanGpuActOpts* o, char* err) {
    if (o->share && (!o->share->cp || o->share->cp->comm != o->cp)) {
        snprintf(err, ST_ERRLEN, "a context-parallel plan borrows work sets only from a plan of the same group");
        return -1;
    }
    WanCp* cp = (WanCp*)calloc(1, sizeof(WanCp));
    if (cp_layout_init(&cp->lay, o->cp->world, o->cp->rank, a->B, a->g.L, a->cfg.num_heads, wan_head_dim(&a->cfg), err,
                       ST_ERRLEN)) {
        free(cp);
        return -1;
    }
    cp->comm = o->cp;
    cp->g = a->g;
    cp->g_out = a->g_out;
    a->g.L = a->g_out.L = cp->lay.Lr;
    a->cp = cp;
    return 0;
}

static void wan_gpu_cp_alloc_(WanGpuAct* a) {
    WanCp* cp = a->cp;
    const CpLayout* p = &cp->lay;
    size_t nloc = (size_t)p->B * p->Lr * p->H * p->d, BL = (size_t)p->B * p->L,
           att = a->flash ? 0 : (size_t)p->B * p->Hk * p->L * p->L;
    size_t Pin = (size_t)a->g.P, Pout = (size_t)a->g_out.P, tr = a->training ? 1 : 0;
    int nsets =
        a->borrowed ? 0 : act_block_sets(a->nblocks, a->training, a->recompute); // borrowed: the lender's block set
    WanGpuArena ar;
    memset(&ar, 0, sizeof(ar));
    for (int pass = 0; pass < 2; pass++) {
        if (pass) {
            cp->base = (char*)cuda_malloc_named(ar.used, "context-parallel buffers", WAN_GPU_OOM_HINT);
            memset(&ar, 0, sizeof(ar));
            ar.base = cp->base;
        }
        cp->send = wan_gpu_take<floatX>(&ar, nloc, "cp.a2a");
        cp->recv = wan_gpu_take<floatX>(&ar, nloc, "cp.a2a");
        cp->dqh = wan_gpu_take<floatX>(&ar, tr * nloc, "cp.bwd");
        cp->dkh = wan_gpu_take<floatX>(&ar, tr * nloc, "cp.bwd");
        cp->dvh = wan_gpu_take<floatX>(&ar, tr * nloc, "cp.bwd");
        cp->daoh = wan_gpu_take<floatX>(&ar, tr * nloc, "cp.bwd");
        cp->dS = wan_gpu_take<float>(&ar, tr * att, "cp.bwd");
        cp->patches = wan_gpu_take<float>(&ar, BL * Pin, "cp.latent");
        cp->y_all = wan_gpu_take<float>(&ar, BL * Pout, "cp.latent");
        cp->y = wan_gpu_take<float>(&ar, BL * Pout, "cp.latent");
        cp->out = wan_gpu_take<float>(&ar, BL * Pout, "cp.latent");
        for (int l = 0; l < nsets; l++) {
            WanGpuBlockAct* k = &a->blocks[l];
            k->qh = wan_gpu_take<floatX>(&ar, nloc, "cp.block");
            k->kh = wan_gpu_take<floatX>(&ar, nloc, "cp.block");
            k->vh = wan_gpu_take<floatX>(&ar, nloc, "cp.block");
            k->aoh = wan_gpu_take<floatX>(&ar, nloc, "cp.block");
            k->atth = wan_gpu_take<float>(&ar, att, "cp.block");
        }
    }
    for (int l = 0; l < WAN_MAX_LAYERS; l++) {
        WanGpuBlockAct* k = &a->blocks[l];
        if (l >= nsets) {
            k->qh = a->blocks[0].qh;
            k->kh = a->blocks[0].kh;
            k->vh = a->blocks[0].vh;
            k->aoh = a->blocks[0].aoh;
            k->atth = a->blocks[0].atth;
        }
        k->cp = cp;
    }
    a->out = cp->out;
}

// the attention workspace a step of B samples of L tokens needs, as cuDNN reports it for the block's two shapes
// (self- and cross-attention); 0 where cuDNN does not run them (the plan then holds gpu/act_plan.h's stated bound;
// the own kernels need none)
static size_t wan_gpu_attn_workspace(const WanConfig* c, int B, int L) {
#ifdef ENABLE_CUDNN
    if (!wan_gpu_use_flash(c)) return 0;
    const size_t s = attention_cudnn_workspace_for(B, L, L, c->num_heads, wan_head_dim(c));
    const size_t x = attention_cudnn_workspace_for(B, L, c->text_len, c->num_heads, wan_head_dim(c));
    return s > x ? s : x;
#else
    (void)c;
    (void)B;
    (void)L;
    return 0;
#endif
}

// the attention workspace allocated so far (cuDNN's; the own kernels hold none)
static size_t wan_gpu_attn_workspace_held(void) {
#ifdef ENABLE_CUDNN
    return attention_cudnn_workspace_bytes();
#else
    return 0;
#endif
}

// Plans and allocates the activations for B latents [C, T, Hl, Wl]. training: keep every block's activations (or,
// with wan_gpu_recompute set, only the blocks' inputs and one block set to rebuild them in) and the backward's
// scratch; otherwise a forward-only plan (one block's activations, reused; two residual levels and o->keep's). o
// (NULL: the defaults): the blocks the plan runs, and a lender whose block set and scratch it uses instead of its own
// (gpu/act_plan.h: borrowed work sets; the lender must outlive it). The bytes are gpu/act_plan.h's act_wan_bytes_ex,
// which the memory plan (gpu/distill_plan.h) sums. Returns -1 with a message if the latent does not fit the config
// or the options are inconsistent. Exits naming the buffer if the device memory does not suffice.
static int wan_gpu_act_init_opts(WanGpuAct* a, const WanConfig* c, int B, int C, int T, int Hl, int Wl, int training,
                                 const WanGpuActOpts* o, char* err) {
    static const WanGpuActOpts none = {0};
    if (!o) o = &none;
    memset(a, 0, sizeof(*a));
    if (B < 1 || C != c->in_dim || T <= 0 || Hl <= 0 || Wl <= 0 || T % c->patch[0] || Hl % c->patch[1] ||
        Wl % c->patch[2]) {
        snprintf(err, ST_ERRLEN,
                 "latent batch [%d, %d, %d, %d, %d] does not fit config '%s': expected B >= 1, %d channels and T, H, W "
                 "divisible by the patch (%d, %d, %d)",
                 B, C, T, Hl, Wl, c->name, c->in_dim, c->patch[0], c->patch[1], c->patch[2]);
        return -1;
    }
    a->cfg = *c;
    a->B = B;
    a->training = training;
    a->flash = wan_gpu_use_flash(c);
    a->recompute = training && wan_gpu_recompute;
    a->g = patch_grid(B, C, T, Hl, Wl, c->patch[0], c->patch[1], c->patch[2]);
    a->g_out = patch_grid(B, c->out_dim, T, Hl, Wl, c->patch[0], c->patch[1], c->patch[2]);
    if (o->cp && o->cp->world > 1 && wan_gpu_cp_layout_(a, o, err)) return -1;
    a->nblocks = o->blocks > 0 ? o->blocks : c->num_layers;
    if (a->nblocks > c->num_layers) {
        snprintf(err, ST_ERRLEN, "a plan of %d blocks for a %d-block model", a->nblocks, c->num_layers);
        return -1;
    }
    if (wan_gpu_stream_map_(a, o, err)) return -1;
    if (o->share && wan_gpu_share_ok_(a, o->share, err)) return -1;
    a->borrowed = o->share != NULL;
    wan_gpu_act_carve_(a, o->share); // sizing pass
    char what[160];
    size_t planned = act_wan_bytes_ex(c, B, a->g.L, training, a->recompute, a->flash, sizeof(floatX), a->nblocks,
                                      training ? 0 : o->n_keep, a->borrowed);
    if (a->arena.used != planned) { // the carve and gpu/act_plan.h read the same lists; only a bug gets here
        fprintf(stderr, "wan_gpu_act_init: the carve takes %zu bytes, gpu/act_plan.h plans %zu\n", a->arena.used,
                planned);
        exit(1);
    }
    snprintf(what, sizeof(what), "activations (%s, batch %d, %d tokens, %s attention)",
             training ? (a->recompute ? "training, recompute" : "training") : "forward only", B, a->g.L,
             a->flash ? "flash" : "naive");
    a->base = (char*)cuda_malloc_named(a->arena.used, what, WAN_GPU_OOM_HINT);
    size_t total = a->arena.used;
    a->arena.base = a->base;
    a->arena.used = 0;
    wan_gpu_act_carve_(a, o->share); // carving pass
    if (a->arena.used != total) {
        fprintf(stderr, "wan_gpu_act_init: the two planning passes disagree (%zu vs %zu bytes)\n", total,
                a->arena.used);
        exit(1);
    }
    size_t hd = (size_t)wan_head_dim(c);
    float* rope = (float*)malloc(sizeof(float) * a->g.Fp * a->g.Hp * a->g.Wp * hd);
    rope_table_host(rope, a->g.Fp, a->g.Hp, a->g.Wp, wan_head_dim(c));
    if (a->cp)
        cp_table_slice(rope, rope, &a->cp->lay,
                       hd); // RoPE from each token's GLOBAL position: this rank's rows (in place: they move down)
    cudaCheck(cudaMemcpy(a->rope, rope, sizeof(float) * a->g.L * hd, cudaMemcpyHostToDevice));
    free(rope);
    if (a->cp) wan_gpu_cp_alloc_(a);
    return 0;
}

// the whole model, its own work sets (training: every residual level; forward only: two alternating levels)
static int wan_gpu_act_init(WanGpuAct* a, const WanConfig* c, int B, int C, int T, int Hl, int Wl, int training,
                            char* err) {
    return wan_gpu_act_init_opts(a, c, B, C, T, Hl, Wl, training, NULL, err);
}

static void wan_gpu_act_free(WanGpuAct* a) {
    cudaCheck(cudaFree(a->base));
    if (a->cp) {
        cudaCheck(cudaFree(a->cp->base));
        free(a->cp);
    }
    memset(a, 0, sizeof(*a));
}

// the memory plan: bytes per buffer (summed over the blocks) and the total
static void wan_gpu_act_print_plan(const WanGpuAct* a, FILE* f) {
    fprintf(f, "activation plan (%s, batch %d, %d tokens per sample, %s attention, %s, GEMM: %s):\n",
            a->training ? (a->recompute ? "training, per-block recompute" : "training") : "forward only", a->B, a->g.L,
            a->flash ? "flash" : "naive", FLOATX_NAME, WAN_GPU_GEMM_NAME);
    for (int i = 0; i < a->arena.ne; i++)
        fprintf(f, "  %-28s %4d buffers %12.2f MiB\n", a->arena.e[i].name, a->arena.e[i].count,
                a->arena.e[i].bytes / 1048576.0);
    fprintf(f, "  %-28s %17s %12.2f MiB\n", "total", "", a->arena.used / 1048576.0);
}

// ---------------------------------------------------------------------------------------------------------
// time embedding (fp32)

// t: [B] model timesteps (1000·σ) on the host, in double
static void wan_gpu_time_forward(WanGpuTimeAct* a, const WanGpuWeights* W, const double* t, int B, cudaStream_t s) {
    const WanConfig* c = &W->cfg;
    int D = c->dim;
    float* sin = (float*)malloc(sizeof(float) * B * c->freq_dim);
    timestep_sinusoid_host(sin, t, B, c->freq_dim);
    cudaCheck(cudaMemcpyAsync(a->sin, sin, sizeof(float) * B * c->freq_dim, cudaMemcpyHostToDevice, s));
    cudaCheck(cudaStreamSynchronize(s)); // the host buffer is freed next
    free(sin);
    const WanParamsF* P = &W->P;
    matmul_forward<float>(a->h1, NULL, a->sin, P->time_embedding_0_weight, P->time_embedding_0_bias, B, c->freq_dim, D,
                          0, s);
    silu_forward<float>(a->a1, a->h1, (size_t)B * D, s);
    matmul_forward<float>(a->e, NULL, a->a1, P->time_embedding_2_weight, P->time_embedding_2_bias, B, D, D, 0, s);
    silu_forward<float>(a->se, a->e, (size_t)B * D, s);
    matmul_forward<float>(a->e0, NULL, a->se, P->time_projection_1_weight, P->time_projection_1_bias, B, D, 6 * D, 0,
                          s);
}

// de [B, D]: gradient w.r.t. e from the head (may be NULL); de0 [B, 6D] from the blocks (may be NULL). dW += only.
static void wan_gpu_time_backward(WanParamsF* dW, const WanGpuTimeAct* a, const WanGpuWeights* W, const float* de,
                                  const float* de0, int B, WanGpuScratch* sc, cudaStream_t s) {
    if (!dW) return; // nothing upstream of the timestep is trainable
    const WanConfig* c = &W->cfg;
    int D = c->dim;
    size_t BD = (size_t)B * D;
    const WanParamsF* P = &W->P;
    float *g_e = sc->tg1, *g_tmp = sc->tg2;
    if (de)
        cudaCheck(cudaMemcpyAsync(g_e, de, sizeof(float) * BD, cudaMemcpyDeviceToDevice, s));
    else
        cudaCheck(cudaMemsetAsync(g_e, 0, sizeof(float) * BD, s));
    if (de0) {
        matmul_backward<float>(g_tmp, dW->time_projection_1_weight, dW->time_projection_1_bias, sc->red, de0, a->se,
                               P->time_projection_1_weight, NULL, B, D, 6 * D, 0, s); // g_tmp = d se
        silu_backward<float>(g_tmp, g_tmp, a->e, BD, s);                              // g_tmp = d e (this path)
        wan_gpu_add<float>(g_e, g_tmp, BD, s);
    }
    matmul_backward<float>(g_tmp, dW->time_embedding_2_weight, dW->time_embedding_2_bias, sc->red, g_e, a->a1,
                           P->time_embedding_2_weight, NULL, B, D, D, 0, s); // g_tmp = d a1
    silu_backward<float>(g_tmp, g_tmp, a->h1, BD, s);                        // g_tmp = d h1
    matmul_backward<float>(NULL, dW->time_embedding_0_weight, dW->time_embedding_0_bias, sc->red, g_tmp, a->sin,
                           P->time_embedding_0_weight, NULL, B, c->freq_dim, D, 0, s);
}

// ---------------------------------------------------------------------------------------------------------
// text embedding

// ctx: [B, text_len, text_dim] fp32 on the device, rows past each caption zero (the empty caption: all zeros)
static void wan_gpu_text_forward(WanGpuTextAct* a, const WanGpuWeights* W, const float* ctx, int B, cudaStream_t s) {
    const WanConfig* c = &W->cfg;
    int D = c->dim, Nc = B * c->text_len;
    size_t n = (size_t)Nc * c->text_dim;
    if (ctx != a->ctx) cudaCheck(cudaMemcpyAsync(a->ctx, ctx, sizeof(float) * n, cudaMemcpyDeviceToDevice, s));
    wan_gpu_cast_to_x(a->ctx_x, a->ctx, n, s);
    matmul_forward<floatX>(a->a1, a->h1, a->ctx_x, W->X.text_embedding_0_weight, W->X.text_embedding_0_bias, Nc,
                           c->text_dim, D, 1, s);
    matmul_forward<floatX>(a->c, NULL, a->a1, W->X.text_embedding_2_weight, W->X.text_embedding_2_bias, Nc, D, D, 0, s);
}

// dc [B·text_len, D] fp32; dctx (+=) [B, text_len, text_dim] fp32 (may be NULL; every row, padding included)
static void wan_gpu_text_backward(WanParamsF* dW, float* dctx, const WanGpuTextAct* a, const WanGpuWeights* W,
                                  const float* dc, int B, WanGpuScratch* sc, cudaStream_t s) {
    if (!dW && !dctx) return;
    const WanConfig* c = &W->cfg;
    int D = c->dim, Nc = B * c->text_len;
    floatX *g = sc->dtext, *g_h1 = sc->dck;
    wan_gpu_cast_to_x(g, dc, (size_t)Nc * D, s);
    matmul_backward<floatX>(g_h1, dW ? dW->text_embedding_2_weight : NULL, dW ? dW->text_embedding_2_bias : NULL,
                            sc->red, g, a->a1, W->X.text_embedding_2_weight, a->h1, Nc, D, D, 0,
                            s); // g_h1 = d h1 (through GELU)
    matmul_backward<floatX>(dctx ? sc->dctx_x : NULL, dW ? dW->text_embedding_0_weight : NULL,
                            dW ? dW->text_embedding_0_bias : NULL, sc->red, g_h1, a->ctx_x,
                            W->X.text_embedding_0_weight, NULL, Nc, c->text_dim, D, 0, s);
    if (dctx) wan_gpu_add<floatX>(dctx, sc->dctx_x, (size_t)Nc * c->text_dim, s);
}

// ---------------------------------------------------------------------------------------------------------
// patch embedding (fp32): tokens [N, D] = patchify(x) · W_peᵀ + b_pe

static void wan_gpu_patch_embed_forward(float* tokens, float* patches, const WanGpuWeights* W, const PatchGrid* g,
                                        const float* x, cudaStream_t s) {
    int K = g->P;
    patchify_forward<float>(patches, x, *g, s);
    matmul_forward<float>(tokens, NULL, patches, W->P.patch_embedding_weight, W->P.patch_embedding_bias, g->B * g->L, K,
                          W->cfg.dim, 0, s);
}

// dx (+=) [B, C, T, Hl, Wl] may be NULL
static void wan_gpu_patch_embed_backward(WanParamsF* dW, float* dx, const float* dtokens, const float* patches,
                                         const WanGpuWeights* W, const PatchGrid* g, WanGpuScratch* sc,
                                         cudaStream_t s) {
    if (!dW && !dx) return;
    int K = g->P;
    matmul_backward<float>(dx ? sc->dpatch : NULL, dW ? dW->patch_embedding_weight : NULL,
                           dW ? dW->patch_embedding_bias : NULL, sc->red, dtokens, patches, W->P.patch_embedding_weight,
                           NULL, g->B * g->L, K, W->cfg.dim, 0, s);
    if (dx) patchify_backward<float>(dx, sc->dpatch, *g, s);
}

// ---------------------------------------------------------------------------------------------------------
// one DiT block (official wan/modules/model.py WanAttentionBlock; cpu/wan_cpu.h wan_block_forward):
//   mod = modulation + e0                                     [B, 6D]: shift, scale, gate; shift, scale, gate
//   x1  = x  + SelfAttn(LN(x)·(1 + mod1) + mod0) · mod2       q, k RMSNorm over D, 3D RoPE on q, k
//   x2  = x1 + CrossAttn(LN_affine(x1; norm3), c)             no modulation, no gate, all text_len keys
//   out = x2 + FFN(LN(x2)·(1 + mod4) + mod3) · mod5           Linear, GELU-tanh, Linear

static void wan_gpu_attention_forward_(floatX* out, float* lse, float* att, const floatX* q, const floatX* k,
                                       const floatX* v, int flash, int B, int Nq, int Nk, int H, int d, cudaStream_t s);
static void wan_gpu_attention_backward_(floatX* dq, floatX* dk, floatX* dv, WanGpuScratch* sc, const floatX* dout,
                                        const floatX* out, const float* lse, const float* att, const floatX* q,
                                        const floatX* k, const floatX* v, int flash, int B, int Nq, int Nk, int H,
                                        int d, cudaStream_t s);
// the dispatch below, bracketed for --bench (kernels/bench_prof.cuh)
static void wan_gpu_attention_forward(floatX* out, float* lse, float* att, const floatX* q, const floatX* k,
                                      const floatX* v, int flash, int B, int Nq, int Nk, int H, int d, cudaStream_t s) {
    const int prof = bench_prof_begin(PROF_ATTN_FWD, s);
    wan_gpu_attention_forward_(out, lse, att, q, k, v, flash, B, Nq, Nk, H, d, s);
    bench_prof_end(prof, attention_forward_flops(B, Nq, Nk, H, d), s);
}
static void wan_gpu_attention_backward(floatX* dq, floatX* dk, floatX* dv, WanGpuScratch* sc, const floatX* dout,
                                       const floatX* out, const float* lse, const float* att, const floatX* q,
                                       const floatX* k, const floatX* v, int flash, int B, int Nq, int Nk, int H, int d,
                                       cudaStream_t s) {
    const int prof = bench_prof_begin(PROF_ATTN_BWD, s);
    wan_gpu_attention_backward_(dq, dk, dv, sc, dout, out, lse, att, q, k, v, flash, B, Nq, Nk, H, d, s);
    bench_prof_end(prof, attention_backward_flops(B, Nq, Nk, H, d), s);
}

static void wan_gpu_attention_forward_(floatX* out, float* lse, float* att, const floatX* q, const floatX* k,
                                       const floatX* v, int flash, int B, int Nq, int Nk, int H, int d,
                                       cudaStream_t s) {
#if !defined(ENABLE_FP32) && !defined(ATTN_NAIVE)
    if (flash) {
#ifdef ENABLE_CUDNN
        if (attention_forward_cudnn(out, lse, q, k, v, B, Nq, Nk, H, d, s)) return; // 0: not this shape, or TMD_CUDNN=0
#endif
        attention_forward_flash(out, lse, q, k, v, B, Nq, Nk, H, d, s);
        return;
    }
#else
    (void)flash;
#endif
    attention_forward_naive<floatX>(out, lse, att, q, k, v, B, Nq, Nk, H, d, s);
}

static void wan_gpu_attention_backward_(floatX* dq, floatX* dk, floatX* dv, WanGpuScratch* sc, const floatX* dout,
                                        const floatX* out, const float* lse, const float* att, const floatX* q,
                                        const floatX* k, const floatX* v, int flash, int B, int Nq, int Nk, int H,
                                        int d, cudaStream_t s) {
#if !defined(ENABLE_FP32) && !defined(ATTN_NAIVE)
    if (flash) {
        // lse is the natural-log logsumexp whichever path wrote it, so either backward runs on either forward
#ifdef ENABLE_CUDNN
        if (attention_backward_cudnn(dq, dk, dv, dout, out, lse, q, k, v, B, Nq, Nk, H, d, s)) return;
#endif
        attention_backward_flash(dq, dk, dv, sc->delta, dout, out, lse, q, k, v, B, Nq, Nk, H, d, s);
        return;
    }
#else
    (void)flash;
    (void)out;
    (void)lse;
#endif
    attention_backward_naive<floatX>(dq, dk, dv, sc->dS, dout, att, q, k, v, B, Nq, Nk, H, d, s);
}

// Bytes the memory-bound passes of one block's forward move (everything but the GEMMs and the attention), by
// arithmetic: E = N·D elements (1.3B at 480p × 81 frames: N = 32760, D = 1536, E = 50.3 M), bf16 floatX (2 bytes),
// fp32 stream (4 bytes); the per-row statistics (8·N) and the modulation vectors are left out (< 1 MB).
//   pass                         unfused (before)                     fused (now)
//   LN1 + modulation             x 4E read, h1 2E written      6E     6E (LN1 stays alone: its input is the block's)
//   q, k RMSNorm                 2 × (2E read + 2E written)    8E     } 2 × (2E read + 2E written) = 8E: RMSNorm and
//   q, k RoPE                    2 × (2E read + 2E written)    8E     } RoPE in one pass (rmsnorm_rope_forward)
//   x1 = x + sa·gate1            4E + 2E read, 4E written     10E     } x1 and norm3(x1) in one pass: x 4E + sa 2E
//   norm3(x1)                    x1 4E read, y3 2E written     6E     } read, x1 4E + y3 2E written = 12E
//   cross q RMSNorm              2E read + 2E written          4E     4E
//   x2 = x1 + ca                 4E + 2E read, 4E written     10E     } x2 and LN2 + modulation in one pass: 12E
//   LN2 + modulation             x2 4E read, h2 2E written     6E     }
//   out = x2 + f2·gate2          4E + 2E read, 4E written     10E     10E
//   GELU pre-activation f1       2·N·F written (the GEMM's    0.59 GB written only by a training plan (a forward-
//                                aux output), every forward           only plan carves no f1)
//   total                        68E = 3.42 GB + 0.59 GB              52E = 2.62 GB (inference; training + 0.59 GB)
// (Before residual_forward_out, three copies of x added 24E: the 92E ≈ 4.6 GB of the review.) At the H100's 3.35 TB/s
// that is ≈ 1.20 ms → ≈ 0.78 ms per block, ≈ 36 → ≈ 23 ms per 30-block forward: arithmetic, not measured.
// x_out [N, D] fp32 may not alias x_in; NULL: the output is not written (the backward's recompute of the activations,
// which needs everything but the last residual add). l: the block's index in W. e0: [B, 6D] fp32; ctx: [B·text_len, D]
// floatX; rope: the grid's table; flash: the attention path (WanGpuAct.flash); g: the token grid.
static void wan_gpu_block_forward(float* x_out, WanGpuBlockAct* a, const WanGpuWeights* W, int l, const float* x_in,
                                  const float* e0, const floatX* ctx, const float* rope, int flash, const PatchGrid* g,
                                  cudaStream_t s) {
    const WanConfig* c = &W->cfg;
    int B = g->B, L = g->L, D = c->dim, F = c->ffn_dim, H = c->num_heads, d = wan_head_dim(c), Lc = c->text_len,
        N = B * L, Nc = B * Lc;
    float eps = (float)c->eps;
    const WanBlockF* Bf = &W->P.blocks[l];
    const WanBlockX* Bx = &W->X.blocks[l];
    a->x_in = x_in;
    wan_gpu_mod_forward(a->mod, Bf->modulation, e0, B, 6 * D, 6 * D, s);
    const float *shift1 = a->mod, *scale1 = a->mod + D, *gate1 = a->mod + 2 * D, *shift2 = a->mod + 3 * D,
                *scale2 = a->mod + 4 * D, *gate2 = a->mod + 5 * D;
    // self-attention
    layernorm_modulate_forward<floatX>(a->h1, a->ln1_mean, a->ln1_rstd, x_in, shift1, scale1, 6 * D, B, L, D, eps, s);
    matmul_forward<floatX>(a->q_pre, NULL, a->h1, Bx->self_attn_q_weight, Bx->self_attn_q_bias, N, D, D, 0, s);
    matmul_forward<floatX>(a->k_pre, NULL, a->h1, Bx->self_attn_k_weight, Bx->self_attn_k_bias, N, D, D, 0, s);
    matmul_forward<floatX>(a->v, NULL, a->h1, Bx->self_attn_v_weight, Bx->self_attn_v_bias, N, D, D, 0, s);
    rmsnorm_rope_forward(a->q, a->q_rstd, a->q_pre, Bf->self_attn_norm_q_weight, rope, N, L, H, d, eps,
                         s); // RMSNorm and RoPE, one pass
    rmsnorm_rope_forward(a->k, a->k_rstd, a->k_pre, Bf->self_attn_norm_k_weight, rope, N, L, H, d, eps, s);
    if (a->cp) { // context parallelism: the group's q, k, v to this rank's heads over whole sequences, and back
        const CpLayout* p = &a->cp->lay;
        cp_gpu_seq_to_heads(a->cp, a->qh, a->q, s);
        cp_gpu_seq_to_heads(a->cp, a->kh, a->k, s);
        cp_gpu_seq_to_heads(a->cp, a->vh, a->v, s);
        wan_gpu_attention_forward(a->aoh, a->lse, a->atth, a->qh, a->kh, a->vh, flash, B, p->L, p->L, p->Hk, d, s);
        cp_gpu_heads_to_seq(a->cp, a->ao, a->aoh, s);
    } else
        wan_gpu_attention_forward(a->ao, a->lse, a->att, a->q, a->k, a->v, flash, B, L, L, H, d, s);
    matmul_forward<floatX>(a->sa, NULL, a->ao, Bx->self_attn_o_weight, Bx->self_attn_o_bias, N, D, D, 0, s);
    // cross-attention; x1 = x_in + sa·gate1 and norm3(x1) in one pass
    residual_layernorm_affine_forward<floatX, floatX>(a->y3, a->ln3_mean, a->ln3_rstd, a->x1, x_in, a->sa, gate1, 6 * D,
                                                      Bf->norm3_weight, Bf->norm3_bias, B, L, D, eps, s);
    matmul_forward<floatX>(a->cq_pre, NULL, a->y3, Bx->cross_attn_q_weight, Bx->cross_attn_q_bias, N, D, D, 0, s);
    rmsnorm_forward(a->cq, a->cq_rstd, a->cq_pre, Bf->cross_attn_norm_q_weight, N, D, eps, s);
    matmul_forward<floatX>(a->ck_pre, NULL, ctx, Bx->cross_attn_k_weight, Bx->cross_attn_k_bias, Nc, D, D, 0, s);
    rmsnorm_forward(a->ck, a->ck_rstd, a->ck_pre, Bf->cross_attn_norm_k_weight, Nc, D, eps, s);
    matmul_forward<floatX>(a->cv, NULL, ctx, Bx->cross_attn_v_weight, Bx->cross_attn_v_bias, Nc, D, D, 0, s);
    wan_gpu_attention_forward(a->cao, a->clse, a->catt, a->cq, a->ck, a->cv, flash, B, L, Lc, H, d, s);
    matmul_forward<floatX>(a->ca, NULL, a->cao, Bx->cross_attn_o_weight, Bx->cross_attn_o_bias, N, D, D, 0, s);
    // FFN; x2 = x1 + ca and its modulated norm in one pass
    residual_layernorm_modulate_forward<floatX, floatX>(a->h2, a->ln2_mean, a->ln2_rstd, a->x2, a->x1, a->ca,
                                                        (const float*)NULL, shift2, scale2, 6 * D, B, L, D, eps, s);
    // the pre-activation f1 only where a backward will read it (a forward-only plan carves none: NULL, not written)
    matmul_forward<floatX>(a->f1a, a->f1, a->h2, Bx->ffn_0_weight, Bx->ffn_0_bias, N, D, F, 1, s);
    matmul_forward<floatX>(a->f2, NULL, a->f1a, Bx->ffn_2_weight, Bx->ffn_2_bias, N, F, D, 0, s);
    if (!x_out) return;
    residual_forward_out<floatX>(x_out, a->x2, a->f2, gate2, 6 * D, B, L, D, s);
}

// dx [N, D] fp32: d x_out on entry, d x_in on return (in place). dW: the block's gradients (NULL: frozen).
// de0 (+=) [B, 6D] may be NULL; dctx (+=) [B·text_len, D] fp32 may be NULL.
static void wan_gpu_block_backward(WanBlockF* dW, float* dx, float* de0, float* dctx, const WanGpuBlockAct* a,
                                   const WanGpuWeights* W, int l, const floatX* ctx, const float* rope, int flash,
                                   const PatchGrid* g, WanGpuScratch* sc, cudaStream_t s) {
    const WanConfig* c = &W->cfg;
    int B = g->B, L = g->L, D = c->dim, F = c->ffn_dim, H = c->num_heads, d = wan_head_dim(c), Lc = c->text_len,
        N = B * L, Nc = B * Lc;
    const WanBlockF* Bf = &W->P.blocks[l];
    const WanBlockX* Bx = &W->X.blocks[l];
#define DW(field) (dW ? dW->field : (float*)NULL)
    if (!a->f1) {
        fprintf(stderr,
                "wan_gpu_block_backward: block %d's activations come from a forward-only set (no FFN pre-activation)\n",
                l);
        exit(1);
    }
    float* dmod = sc->dmod;
    cudaCheck(cudaMemsetAsync(dmod, 0, sizeof(float) * 6 * D * B, s));
    const float *scale1 = a->mod + D, *gate1 = a->mod + 2 * D, *scale2 = a->mod + 4 * D, *gate2 = a->mod + 5 * D;
    floatX *t1 = sc->t1, *t2 = sc->t2, *t3 = sc->t3;
    // FFN: out = x2 + f2·gate2
    residual_backward<floatX>(t1, dmod + 5 * D, sc->red, dx, a->f2, gate2, 6 * D, B, L, D, s); // t1 = d f2
    matmul_backward<floatX>(sc->tF, DW(ffn_2_weight), DW(ffn_2_bias), sc->red, t1, a->f1a, Bx->ffn_2_weight, a->f1, N,
                            F, D, 0, s); // tF = d f1
    matmul_backward<floatX>(t2, DW(ffn_0_weight), DW(ffn_0_bias), sc->red, sc->tF, a->h2, Bx->ffn_0_weight, NULL, N, D,
                            F, 0, s); // t2 = d h2
    layernorm_modulate_backward<floatX>(dx, dmod + 3 * D, dmod + 4 * D, sc->red, t2, a->x2, a->ln2_mean, a->ln2_rstd,
                                        scale2, 6 * D, B, L, D, s);
    // cross-attention: x2 = x1 + ca  →  d ca = dx
    wan_gpu_cast_to_x(t1, dx, (size_t)N * D, s); // t1 = d ca
    matmul_backward<floatX>(t2, DW(cross_attn_o_weight), DW(cross_attn_o_bias), sc->red, t1, a->cao,
                            Bx->cross_attn_o_weight, NULL, N, D, D, 0, s); // t2 = d cao
    wan_gpu_attention_backward(t3, sc->dck, sc->dcv, sc, t2, a->cao, a->clse, a->catt, a->cq, a->ck, a->cv, flash, B, L,
                               Lc, H, d, s);
    rmsnorm_backward(t3, DW(cross_attn_norm_q_weight), sc->red, t3, a->cq_pre, Bf->cross_attn_norm_q_weight, a->cq_rstd,
                     N, D, s); // t3 = d cq_pre
    rmsnorm_backward(sc->dck, DW(cross_attn_norm_k_weight), sc->red, sc->dck, a->ck_pre, Bf->cross_attn_norm_k_weight,
                     a->ck_rstd, Nc, D, s);
    floatX* dtext = dctx ? sc->dtext : NULL;
    matmul_backward<floatX>(dtext, DW(cross_attn_k_weight), DW(cross_attn_k_bias), sc->red, sc->dck, ctx,
                            Bx->cross_attn_k_weight, NULL, Nc, D, D, 0, s);
    matmul_backward<floatX>(dtext, DW(cross_attn_v_weight), DW(cross_attn_v_bias), sc->red, sc->dcv, ctx,
                            Bx->cross_attn_v_weight, NULL, Nc, D, D, 1, s);
    if (dctx) wan_gpu_add<floatX>(dctx, dtext, (size_t)Nc * D, s);
    matmul_backward<floatX>(t1, DW(cross_attn_q_weight), DW(cross_attn_q_bias), sc->red, t3, a->y3,
                            Bx->cross_attn_q_weight, NULL, N, D, D, 0, s); // t1 = d y3
    layernorm_affine_backward<floatX>(dx, DW(norm3_weight), DW(norm3_bias), sc->red, t1, a->x1, a->ln3_mean,
                                      a->ln3_rstd, Bf->norm3_weight, N, D, s); // dx = d x1
    // self-attention: x1 = x_in + sa·gate1
    residual_backward<floatX>(t1, dmod + 2 * D, sc->red, dx, a->sa, gate1, 6 * D, B, L, D, s); // t1 = d sa
    matmul_backward<floatX>(t2, DW(self_attn_o_weight), DW(self_attn_o_bias), sc->red, t1, a->ao,
                            Bx->self_attn_o_weight, NULL, N, D, D, 0, s); // t2 = d ao
    if (a->cp) { // the backward of each all-to-all is the reverse one
        const WanCp* cp = a->cp;
        const CpLayout* p = &cp->lay;
        WanGpuScratch sh = *sc;
        sh.dS = cp->dS; // the naive attention's [B, Hk, L, L] score gradients
        cp_gpu_seq_to_heads(cp, cp->daoh, t2, s);
        wan_gpu_attention_backward(cp->dqh, cp->dkh, cp->dvh, &sh, cp->daoh, a->aoh, a->lse, a->atth, a->qh, a->kh,
                                   a->vh, flash, B, p->L, p->L, p->Hk, d, s);
        cp_gpu_heads_to_seq(cp, t3, cp->dqh, s);
        cp_gpu_heads_to_seq(cp, sc->dk, cp->dkh, s);
        cp_gpu_heads_to_seq(cp, sc->dv, cp->dvh, s);
    } else
        wan_gpu_attention_backward(t3, sc->dk, sc->dv, sc, t2, a->ao, a->lse, a->att, a->q, a->k, a->v, flash, B, L, L,
                                   H, d, s);
    rope_backward<floatX>(t3, t3, rope, N, L, H, d, s);
    rope_backward<floatX>(sc->dk, sc->dk, rope, N, L, H, d, s);
    rmsnorm_backward(t3, DW(self_attn_norm_q_weight), sc->red, t3, a->q_pre, Bf->self_attn_norm_q_weight, a->q_rstd, N,
                     D, s); // t3 = d q_pre
    rmsnorm_backward(sc->dk, DW(self_attn_norm_k_weight), sc->red, sc->dk, a->k_pre, Bf->self_attn_norm_k_weight,
                     a->k_rstd, N, D, s);
    matmul_backward<floatX>(t1, DW(self_attn_q_weight), DW(self_attn_q_bias), sc->red, t3, a->h1,
                            Bx->self_attn_q_weight, NULL, N, D, D, 0, s); // t1 = d h1
    matmul_backward<floatX>(t1, DW(self_attn_k_weight), DW(self_attn_k_bias), sc->red, sc->dk, a->h1,
                            Bx->self_attn_k_weight, NULL, N, D, D, 1, s);
    matmul_backward<floatX>(t1, DW(self_attn_v_weight), DW(self_attn_v_bias), sc->red, sc->dv, a->h1,
                            Bx->self_attn_v_weight, NULL, N, D, D, 1, s);
    layernorm_modulate_backward<floatX>(dx, dmod, dmod + D, sc->red, t1, a->x_in, a->ln1_mean, a->ln1_rstd, scale1,
                                        6 * D, B, L, D, s); // dx = d x_in
    // mod = modulation + e0
    wan_gpu_mod_backward(DW(modulation), de0, dmod, B, 6 * D, 6 * D, s);
#undef DW
}

// ---------------------------------------------------------------------------------------------------------
// head (fp32): y = Linear(LN(x)·(1 + scale) + shift), (shift, scale) = head.modulation + e; then unpatchify

// out: [B, out_dim, T, Hl, Wl]; x [N, D]; e [B, D]; g_out: the output grid (C = out_dim)
static void wan_gpu_head_forward(float* out, WanGpuHeadAct* a, const WanGpuWeights* W, const PatchGrid* g_out,
                                 const float* x, const float* e, cudaStream_t s) {
    const WanConfig* c = &W->cfg;
    int B = g_out->B, L = g_out->L, D = c->dim, Po = g_out->P;
    wan_gpu_mod_forward(a->mod, W->P.head_modulation, e, B, 2 * D, D, s);
    layernorm_modulate_forward<float>(a->hm, a->mean, a->rstd, x, a->mod, a->mod + D, 2 * D, B, L, D, (float)c->eps, s);
    matmul_forward<float>(a->y, NULL, a->hm, W->P.head_head_weight, W->P.head_head_bias, B * L, D, Po, 0, s);
    if (out)
        unpatchify_forward<float>(out, a->y, *g_out, s); // NULL: the rows a->y only (context parallelism gathers them)
}

// dout [B, out_dim, T, Hl, Wl]; dx (+=) [N, D]; de (+=) [B, D] may be NULL
static void wan_gpu_head_backward(WanParamsF* dW, float* dx, float* de, const float* dout, const WanGpuHeadAct* a,
                                  const WanGpuWeights* W, const PatchGrid* g_out, const float* x, WanGpuScratch* sc,
                                  cudaStream_t s) {
    const WanConfig* c = &W->cfg;
    int B = g_out->B, L = g_out->L, D = c->dim, Po = g_out->P;
    if (dout)
        unpatchify_backward<float>(sc->dy, dout, *g_out,
                                   s); // NULL: sc->dy holds the rows' gradient (context parallelism)
    matmul_backward<float>(sc->dhm, dW ? dW->head_head_weight : NULL, dW ? dW->head_head_bias : NULL, sc->red, sc->dy,
                           a->hm, W->P.head_head_weight, NULL, B * L, D, Po, 0, s);
    cudaCheck(cudaMemsetAsync(sc->dmod, 0, sizeof(float) * 2 * D * B, s));
    layernorm_modulate_backward<float>(dx, sc->dmod, sc->dmod + D, sc->red, sc->dhm, x, a->mean, a->rstd, a->mod + D,
                                       2 * D, B, L, D, s);
    wan_gpu_mod_backward(dW ? dW->head_modulation : NULL, de, sc->dmod, B, 2 * D, D, s);
}

// ---------------------------------------------------------------------------------------------------------
// the whole model and its partial forms

// embeddings and the first n blocks: afterwards wan_gpu_xs(a, n) holds the residual stream after block n−1 (the TMD
// backbone's feature when n = L − H). x [B, C, T, Hl, Wl] fp32 (device); t [B] model timesteps (host, double);
// ctx [B, text_len, text_dim] fp32 (device, zero-padded).
// skip: a block left out, its input passed on unchanged (skip-layer guidance, cpu/wan_cpu.h wan_forward_skipping); -1
// none
static void wan_gpu_forward_blocks_skipping_(WanGpuAct* a, const WanGpuWeights* W, const float* x, const double* t,
                                             const float* ctx, int n, int skip) {
    cudaStream_t s = a->stream;
    if (n > a->nblocks) {
        fprintf(stderr, "wan_gpu_forward_blocks: %d blocks asked of a plan for %d\n", n, a->nblocks);
        exit(1);
    }
    const WanGpuWeights* We = wan_gpu_unit_(W, 0, 0);
    wan_gpu_time_forward(&a->time, We, t, a->B, s);
    wan_gpu_text_forward(&a->text, We, ctx, a->B, s);
    if (a->cp) { // the whole latent's patches, this rank's rows embedded
        const CpLayout* p = &a->cp->lay;
        patchify_forward<float>(a->cp->patches, x, a->cp->g, s);
        cp_copy_rows_gpu(a->patches, p->Lr, 0, a->cp->patches, p->L, cp_first_token(p), p->Lr, p->B, (size_t)a->g.P, s);
        matmul_forward<float>(wan_gpu_xs(a, 0), NULL, a->patches, We->P.patch_embedding_weight,
                              We->P.patch_embedding_bias, p->B * p->Lr, a->g.P, a->cfg.dim, 0, s);
    } else
        wan_gpu_patch_embed_forward(wan_gpu_xs(a, 0), a->patches, We, &a->g, x, s);
    for (int l = 0; l < n; l++) {
        if (l == skip) {
            cudaCheck(cudaMemcpyAsync(wan_gpu_xs(a, l + 1), wan_gpu_xs(a, l),
                                      sizeof(float) * a->B * a->g.L * a->cfg.dim, cudaMemcpyDeviceToDevice, s));
            continue;
        }
        wan_gpu_block_forward(wan_gpu_xs(a, l + 1), &a->blocks[l], wan_gpu_unit_(W, 1 + l, 0), l, wan_gpu_xs(a, l),
                              a->time.e0, a->text.c, a->rope, a->flash, &a->g, s);
    }
}
static void wan_gpu_forward_blocks(WanGpuAct* a, const WanGpuWeights* W, const float* x, const double* t,
                                   const float* ctx, int n) {
    wan_gpu_forward_blocks_skipping_(a, W, x, t, ctx, n, -1);
}

// WanModel.forward for B samples → a->out [B, out_dim, T, Hl, Wl], block `skip` left out (-1: none)
static void wan_gpu_forward_skipping(WanGpuAct* a, const WanGpuWeights* W, const float* x, const double* t,
                                     const float* ctx, int skip) {
    wan_gpu_forward_blocks_skipping_(a, W, x, t, ctx, a->cfg.num_layers, skip);
    wan_gpu_head_forward(a->cp ? NULL : a->out, &a->head, wan_gpu_unit_(W, a->cfg.num_layers + 1, 0), &a->g_out,
                         wan_gpu_xs(a, a->cfg.num_layers), a->time.e, a->stream);
    if (a->cp) { // the group's rows [K2][B][Lr][P] gathered, in token order, unpatchified: the whole velocity on every
                 // rank
        const WanCp* cp = a->cp;
        const CpLayout* p = &cp->lay;
        cudaStream_t s = a->stream;
        size_t rows = (size_t)p->B * p->Lr * a->g_out.P;
        comm_all_gather(cp->comm, cp->y_all, a->head.y, rows, COMM_F32, s);
        cp_transpose12_gpu<float>(cp->y, cp->y_all, (size_t)p->K2, (size_t)p->B, (size_t)p->Lr * a->g_out.P, s);
        unpatchify_forward<float>(a->out, cp->y, cp->g_out, s);
    }
}
// WanModel.forward for B samples → a->out [B, out_dim, T, Hl, Wl]
static void wan_gpu_forward(WanGpuAct* a, const WanGpuWeights* W, const float* x, const double* t, const float* ctx) {
    wan_gpu_forward_skipping(a, W, x, t, ctx, -1);
}

static void wan_gpu_require_training_(const WanGpuAct* a, const char* fn) {
    if (!a->training) {
        fprintf(stderr, "%s: the activations were planned forward-only; call wan_gpu_act_init with training = 1\n", fn);
        exit(1);
    }
}

// backward of wan_gpu_forward_blocks(..., n): dtop [N, D] = d xs[n] (may be NULL); dfeat[l] (l = 0..n; the array and
// its entries may be NULL) adds a gradient [N, D] at the residual level xs[l] (features someone else read, e.g. the
// discriminator); dc_extra [B·text_len, D] fp32 is the text context's gradient from other readers (the flow head).
// Accumulates into dW (NULL: frozen), dx [B, C, T, Hl, Wl] (may be NULL), dctx [B, text_len, text_dim] (may be NULL).
static void wan_gpu_backward_blocks(WanParamsF* dW, float* dx, float* dctx, const float* dtop, int n,
                                    float* const* dfeat, const float* dc_extra, WanGpuAct* a, const WanGpuWeights* W) {
    wan_gpu_require_training_(a, "wan_gpu_backward_blocks");
    cudaStream_t s = a->stream;
    const WanConfig* c = &a->cfg;
    int B = a->B, D = c->dim;
    size_t ND = (size_t)B * a->g.L * D, NcD = (size_t)B * c->text_len * D;
    WanGpuScratch* sc = &a->s;
    if (dtop == sc->g) {
    } // wan_gpu_backward: the head wrote it there
    else if (dtop)
        cudaCheck(cudaMemcpyAsync(sc->g, dtop, sizeof(float) * ND, cudaMemcpyDeviceToDevice, s));
    else
        cudaCheck(cudaMemsetAsync(sc->g, 0, sizeof(float) * ND, s));
    if (dc_extra)
        cudaCheck(cudaMemcpyAsync(sc->dc, dc_extra, sizeof(float) * NcD, cudaMemcpyDeviceToDevice, s));
    else
        cudaCheck(cudaMemsetAsync(sc->dc, 0, sizeof(float) * NcD, s));
    cudaCheck(cudaMemsetAsync(sc->de0, 0, sizeof(float) * 6 * D * B, s));
    int need_dc = dW != NULL || dctx != NULL;
    for (int l = n - 1; l >= 0; l--) {
        if (dfeat && dfeat[l + 1]) wan_gpu_add<float>(sc->g, dfeat[l + 1], ND, s);
        const WanGpuWeights* Wl = wan_gpu_unit_(W, 1 + l, 1); // one gather serves the recompute and the backward
        WanParamsF* dWl = wan_gpu_unit_grads_(W, dW, 1 + l);
        if (a->recompute) // the activations of block l, rebuilt from its kept input xs[l] into the one shared set
            wan_gpu_block_forward(NULL, &a->blocks[l], Wl, l, wan_gpu_xs(a, l), a->time.e0, a->text.c, a->rope,
                                  a->flash, &a->g, s);
        wan_gpu_block_backward(dWl ? &dWl->blocks[l] : NULL, sc->g, sc->de0, need_dc ? sc->dc : NULL, &a->blocks[l], Wl,
                               l, a->text.c, a->rope, a->flash, &a->g, sc, s);
        wan_gpu_unit_done_(W, dW, 1 + l);
    }
    if (dfeat && dfeat[0]) wan_gpu_add<float>(sc->g, dfeat[0], ND, s);
    const WanGpuWeights* We = wan_gpu_unit_(W, 0, 1);
    WanParamsF* dWe = wan_gpu_unit_grads_(W, dW, 0);
    if (a->cp && dx) { // this rank's rows of the patches' gradient, scattered into the whole latent's (zero elsewhere)
        const CpLayout* p = &a->cp->lay;
        int P = a->g.P;
        matmul_backward<float>(sc->dpatch, dWe ? dWe->patch_embedding_weight : NULL,
                               dWe ? dWe->patch_embedding_bias : NULL, sc->red, sc->g, a->patches,
                               We->P.patch_embedding_weight, NULL, p->B * p->Lr, P, D, 0, s);
        cudaCheck(cudaMemsetAsync(a->cp->patches, 0, sizeof(float) * p->B * p->L * P, s));
        cp_copy_rows_gpu(a->cp->patches, p->L, cp_first_token(p), sc->dpatch, p->Lr, 0, p->Lr, p->B, (size_t)P, s);
        patchify_backward<float>(dx, a->cp->patches, a->cp->g, s);
    } else
        wan_gpu_patch_embed_backward(dWe, dx, sc->g, a->patches, We, &a->g, sc, s);
    wan_gpu_time_backward(dWe, &a->time, We, NULL, sc->de0, B, sc, s);
    wan_gpu_text_backward(dWe, dctx, &a->text, We, sc->dc, B, sc, s);
    wan_gpu_unit_done_(W, dW, 0);
}

// dout [B, out_dim, T, Hl, Wl] → dW (+=, NULL: frozen), dx (+=, may be NULL), dctx (+=, [B, text_len, text_dim], may be
// NULL)
static void wan_gpu_backward(WanParamsF* dW, float* dx, float* dctx, const float* dout, WanGpuAct* a,
                             const WanGpuWeights* W) {
    wan_gpu_require_training_(a, "wan_gpu_backward");
    cudaStream_t s = a->stream;
    const WanConfig* c = &a->cfg;
    int B = a->B, D = c->dim;
    size_t ND = (size_t)B * a->g.L * D;
    WanGpuScratch* sc = &a->s;
    cudaCheck(cudaMemsetAsync(sc->g, 0, sizeof(float) * ND, s));
    cudaCheck(cudaMemsetAsync(sc->de, 0, sizeof(float) * D * B, s));
    if (a->cp) { // d out is the whole latent's on every rank (the losses are): this rank's rows of it
        const CpLayout* p = &a->cp->lay;
        int P = a->g_out.P;
        unpatchify_backward<float>(a->cp->y, dout, a->cp->g_out, s);
        cp_copy_rows_gpu(sc->dy, p->Lr, 0, a->cp->y, p->L, cp_first_token(p), p->Lr, p->B, (size_t)P, s);
    }
    wan_gpu_head_backward(wan_gpu_unit_grads_(W, dW, c->num_layers + 1), sc->g, sc->de, a->cp ? NULL : dout, &a->head,
                          wan_gpu_unit_(W, c->num_layers + 1, 1), &a->g_out, wan_gpu_xs(a, c->num_layers), sc, s);
    wan_gpu_unit_done_(W, dW, c->num_layers + 1);
    // the head's path through e; the blocks' path through e0 below (a sharded model's embeddings stay open until then)
    wan_gpu_time_backward(wan_gpu_unit_grads_(W, dW, 0), &a->time, wan_gpu_unit_(W, 0, 1), sc->de, NULL, B, sc, s);
    wan_gpu_backward_blocks(dW, dx, dctx, sc->g, c->num_layers, NULL, NULL, a, W); // dtop is already in place
}

// the start every GPU program shares: a GPU must exist before a checkpoint that may be tens of GB is read; then the
// model from --preset / --weights (wan.h), its config and parameter count printed. params is NULL for a bare preset.
static int wan_gpu_program_model(const char* program, WanConfig* c, real** params, const char* preset,
                                 const char* weights, int heads) {
    require_gpu(program);
    char err[ST_ERRLEN];
    int rc = wan_model_from_flags(c, params, preset, weights, heads, "world", err);
    if (rc) {
        fprintf(stderr, "error: %s\n", err);
        return rc;
    }
    wan_config_print(c, stdout);
    wan_print_count(c, stdout);
    return 0;
}
