// kernels/attention_cudnn.h: cuDNN's fused attention (SDPA through cudnn-frontend graphs), the default attention of the
// bf16 build where cuDNN and cudnn-frontend are found (make: [deps] cuDNN; -DENABLE_CUDNN). The graphs live in their
// own translation unit, kernels/attention_cudnn.cpp (C++17, cudnn-frontend is header-only C++ and slow to compile),
// linked into the programs; this header is the C-style interface they call.
//
// The same math, shapes and conventions as the flash kernels of kernels/attention.cuh (which stay the fallback and
// the cross-check): non-causal, no mask, scale 1/√d,
//   q, out, dq, dout  [B, Nq, H, d] bf16      k, v, dk, dv  [B, Nk, H, d] bf16      lse  [B, H, Nq] fp32
// lse is cuDNN's "Stats" output, log Σ_j exp(S_ij) in natural log, the same quantity the flash forward writes, so the
// flash backward can run on cuDNN's forward and the other way round. Every function OVERWRITES its outputs.
//
// Each call returns 1 when cuDNN ran it and 0 when the caller must run its own kernel instead: cuDNN is switched off
// (environment TMD_CUDNN=0, or no handle), or cuDNN cannot run this shape (checked once per shape when its graph is
// built; one line on stderr names the shape and cuDNN's reason). Graphs are built once per shape and direction and
// cached; the backward asks for cuDNN's deterministic algorithm (the project's runs resume and recompute bit-exactly).
// The workspace grows to the largest graph's need (cudaMalloc; one line says how much). The memory plan counts it:
// a program asks attention_cudnn_workspace_for the step's shapes before it plans (gpu/distill_plan.h "attention
// workspace"; without cuDNN the plan holds a stated upper bound, gpu/act_plan.h act_attn_workspace_bound).
#pragma once
#include <cuda_runtime.h>
#include <cuda_bf16.h>

int attention_forward_cudnn(__nv_bfloat16* out, float* lse, const __nv_bfloat16* q, const __nv_bfloat16* k,
                            const __nv_bfloat16* v, int B, int Nq, int Nk, int H, int d, cudaStream_t stream);

// inverts out = softmax(q·kᵀ/√d)·v, recomputing P from lse: dq, dk, dv OVERWRITTEN
int attention_backward_cudnn(__nv_bfloat16* dq, __nv_bfloat16* dk, __nv_bfloat16* dv, const __nv_bfloat16* dout,
                             const __nv_bfloat16* out, const float* lse, const __nv_bfloat16* q, const __nv_bfloat16* k,
                             const __nv_bfloat16* v, int B, int Nq, int Nk, int H, int d, cudaStream_t stream);

// 1 when the calls above will try cuDNN (built in and not switched off by TMD_CUDNN=0); the first call prints one line
int attention_cudnn_enabled(void);

// the cuDNN workspace in bytes (0 before the first graph)
size_t attention_cudnn_workspace_bytes(void);

// the larger of the forward's and the backward's workspace for one shape, as cudnn-frontend reports it (the graphs are
// built and cached now, and the workspace grown to it); 0 when cuDNN is off or cannot run the shape
size_t attention_cudnn_workspace_for(int B, int Nq, int Nk, int H, int d);
