// gpu/tmd_gpu.cuh: the TMD student on the GPU (paper Section 3, App. A.1), its inner flow and samplers. It mirrors
// cpu/tmd_cpu.h name for name (head_gpu_* ↔ head_*, rollout_gpu_* ↔ rollout_*, tmd_gpu_sample ↔ tmd_sample), and
// the CPU reference is its oracle (gpu/tmd_gpu_tests.cuh):
//   the decoupled student: backbone = embeddings + the first L − H blocks (gpu/wan_gpu.cuh, the main feature m);
//     flow head = gated (or concat) fusion of the inner state y_s with m, the last H blocks and the output head,
//     conditioned on e(s) + e_Δ(s − r)
//   the inner flow (paper Eq. 13-14, MeanFlow's sign): u = y1 − head, y_r = y_s − (s − r)·u, backpropagated through
//   every inner step samplers: TMD (Algorithm 1) and DMD2-v multi-step; effective NFE (Eq. 16) from cpu/tmd_cpu.h
// The time grids, the student's extra parameter layout and its initialisation are the CPU reference's own
// (cpu/tmd_cpu.h: one definition); the student's weights are one buffer [Wan parameters | extras], fp32 master,
// floatX copy, fp32 gradients and AdamW moments, so a checkpoint is one write and AdamW one flat call.
// The fusion and both time MLPs run in fp32 (small next to the blocks; the head and the time embedding are fp32 in
// the official code too). Conventions as gpu/wan_gpu.cuh: forwards overwrite, backwards accumulate (+=).
#pragma once
#include "wan_gpu.cuh"           // the DiT on the GPU: blocks, head, partial forward/backward
#include "../cpu/tmd_cpu.h"      // StudentConfig, student_extra_layout, time grids, effective_nfe
#include "tmd_math.cuh"          // combine3, per-sample reductions
#include "../kernels/random.cuh" // Philox normals for the inner noise y1

// ---------------------------------------------------------------------------------------------------------
// the student's weights

// fp32 views of the extras (field order of StudentExtra in cpu/tmd_cpu.h)
typedef struct {
    float *delta_time_0_weight, *delta_time_0_bias, *delta_time_2_weight,
        *delta_time_2_bias;                                           // [D, freq], [D], [D, D], [D]
    float* fuse_modulation;                                           // [3, D]
    float *fuse_0_weight, *fuse_0_bias, *fuse_2_weight, *fuse_2_bias; // [Ff, D], [Ff], [D, Ff], [D]
    float* fuse_gate;                                                 // [1]
    float *concat_weight, *concat_bias;                               // [D, 2D], [D]
} StudentExtraF;

// carves X over base (the extras' part of a buffer) by the names of cpu/tmd_cpu.h's layout
static void student_extra_view(const StudentConfig* sc, StudentExtraF* X, float* base) {
    static const struct {
        const char* name;
        size_t off;
    } map[] = {{"flow_head.delta_time_embedding.0.weight", offsetof(StudentExtraF, delta_time_0_weight)},
               {"flow_head.delta_time_embedding.0.bias", offsetof(StudentExtraF, delta_time_0_bias)},
               {"flow_head.delta_time_embedding.2.weight", offsetof(StudentExtraF, delta_time_2_weight)},
               {"flow_head.delta_time_embedding.2.bias", offsetof(StudentExtraF, delta_time_2_bias)},
               {"flow_head.fusion.modulation", offsetof(StudentExtraF, fuse_modulation)},
               {"flow_head.fusion.ffn.0.weight", offsetof(StudentExtraF, fuse_0_weight)},
               {"flow_head.fusion.ffn.0.bias", offsetof(StudentExtraF, fuse_0_bias)},
               {"flow_head.fusion.ffn.2.weight", offsetof(StudentExtraF, fuse_2_weight)},
               {"flow_head.fusion.ffn.2.bias", offsetof(StudentExtraF, fuse_2_bias)},
               {"flow_head.fusion.gate", offsetof(StudentExtraF, fuse_gate)},
               {"flow_head.fusion.concat.weight", offsetof(StudentExtraF, concat_weight)},
               {"flow_head.fusion.concat.bias", offsetof(StudentExtraF, concat_bias)}};
    WanTensor tl[16];
    int n = student_extra_layout(sc, tl, NULL, NULL, NULL);
    memset(X, 0, sizeof(*X));
    for (int i = 0; i < n; i++) {
        size_t k = 0;
        while (k < sizeof(map) / sizeof(map[0]) && strcmp(map[k].name, tl[i].name)) k++;
        if (k == sizeof(map) / sizeof(map[0])) {
            fprintf(stderr, "student_extra_view: no field for tensor '%s'\n", tl[i].name);
            exit(1);
        }
        *(float**)((char*)X + map[k].off) = base + tl[i].offset;
    }
}

typedef struct {
    StudentConfig sc;
    size_t n, nw;     // all parameters; the Wan part (the front of every buffer)
    float* params;    // [n] fp32 master weights
    floatX* params_x; // [n] floatX copy (== params in the fp32 build)
    float* grads;     // [n] fp32
    float* opt_m;     // [n] AdamW moments (opt_m and opt_v: one allocation)
    float* opt_v;
    WanGpuWeights w;     // the Wan views of params / params_x
    WanParamsF dP;       // the Wan view of grads
    StudentExtraF X, dX; // the extras' views of params and grads
    long step;
} TmdGpuStudent;

// allocates the student and uploads host_params [n] (student_init's buffer, fp32)
static void tmd_gpu_student_init(TmdGpuStudent* S, const StudentConfig* sc, const float* host_params) {
    memset(S, 0, sizeof(*S));
    S->sc = *sc;
    S->n = student_num_params(sc);
    S->nw = wan_num_params(&sc->wan);
    size_t bytes = S->n * sizeof(float);
    S->params = (float*)cuda_malloc_named(bytes, "student master weights (fp32)", "use a smaller model (--preset)");
    cudaCheck(cudaMemcpy(S->params, host_params, bytes, cudaMemcpyHostToDevice));
#ifdef ENABLE_FP32
    S->params_x = S->params;
#else
    S->params_x = (floatX*)cuda_malloc_named(S->n * sizeof(floatX), "student weight copy (" FLOATX_NAME ")",
                                             "use a smaller model (--preset)");
    wan_gpu_cast_to_x(S->params_x, S->params, S->n, 0);
#endif
    S->grads = (float*)cuda_malloc_named(bytes, "student gradients (fp32)", "use a smaller model (--preset)");
    S->opt_m =
        (float*)cuda_malloc_named(2 * bytes, "student AdamW moments (2 x fp32)", "use a smaller model (--preset)");
    S->opt_v = S->opt_m + S->n;
    cudaCheck(cudaMemset(S->grads, 0, bytes));
    cudaCheck(cudaMemset(S->opt_m, 0, 2 * bytes));
    wan_gpu_weights_view(&S->w, &sc->wan, S->params, S->params_x);
    wan_carve_view(&sc->wan, &S->dP, sizeof(S->dP), S->grads, sizeof(float));
    student_extra_view(sc, &S->X, S->params + S->nw);
    student_extra_view(sc, &S->dX, S->grads + S->nw);
    printf("[memory] student      weights %8.1f MiB fp32 (%zu Wan + %zu flow-head extras) + gradients + AdamW\n",
           bytes / 1048576.0, S->nw, S->n - S->nw);
}

// a fully sharded student (train_tmd --fsdp): no buffer of its own; its Wan units come from the provider units
// (gpu/fsdp_gpu.cuh: w.units, each unit gathered as the loops below reach it, dP's address only marks it trainable)
// and its extras from extras_w / extras_g (the flow-head unit held whole on every rank for the step, [extras] fp32
// weights and gradient, laid out as the extras' part of a whole student's buffer)
static void tmd_gpu_student_view_sharded(TmdGpuStudent* S, const StudentConfig* sc, struct WanGpuUnits_* units,
                                         float* extras_w, float* extras_g) {
    memset(S, 0, sizeof(*S));
    S->sc = *sc;
    S->n = student_num_params(sc);
    S->nw = wan_num_params(&sc->wan);
    S->w.cfg = sc->wan;
    S->w.units = units;
    student_extra_view(sc, &S->X, extras_w);
    student_extra_view(sc, &S->dX, extras_g);
}

static void tmd_gpu_student_free(TmdGpuStudent* S) {
    cudaCheck(cudaFree(S->params));
#ifndef ENABLE_FP32
    cudaCheck(cudaFree(S->params_x));
#endif
    cudaCheck(cudaFree(S->grads));
    cudaCheck(cudaFree(S->opt_m));
    memset(S, 0, sizeof(*S));
}

// ---------------------------------------------------------------------------------------------------------
// one flow-head evaluation: head_θ(y_s, s, r; m) for B samples (cpu/tmd_cpu.h head_forward, line for line)
//   e_h  = time_embedding(sin(1000 s)) + delta_time_embedding(sin(1000 (s − r)))       [B, D]
//   e0_h = time_projection(SiLU(e_h))                                                  [B, 6D]
//   p    = patch_embedding(y_s)                                                        [N, D]
//   gated:  q = FFN_f(LN(p)·(1 + scale) + shift)·gate_f,  h = m + sigmoid(a)·q      (G = sigmoid(a)·gate_f [B, D])
//   concat: h = W_c·[m, p] + b_c
//   head_θ = Head(Blocks_{L−H..L−1}(h; e0_h, c); e_h)

typedef struct {
    int B, L;
    float *sin_s, *h1_s, *a1_s, *e_s;      // [B, freq], [B, D] x3: time embedding of s (the Wan time MLP's weights)
    float *sin_d, *h1_d, *a1_d, *e_d;      // the same for s − r (delta_time_embedding)
    float *e_h, *se_h, *e0_h;              // [B, D], [B, D], [B, 6D]
    float *patches, *p;                    // [N, in·P], [N, D]
    float *fmod, *G;                       // [B, 3D] fusion shift, scale, gate; [B, D] sigmoid(a)·gate
    float *fmean, *frstd;                  // [N]
    float *fh, *ff1, *ff1a, *ff2;          // [N, D], [N, Ff] x2, [N, D]
    float* cat;                            // [N, 2D] (concat fusion)
    float* xs;                             // [H + 1, N, D]: xs[0] fused feature, xs[k] after head block k − 1
    WanGpuBlockAct blocks[WAN_MAX_LAYERS]; // its own H sets, or all the backbone's one set (recompute)
    int recompute; // the backbone's one set is free to use (it recomputes, or runs forward only): the
                   // blocks run in it, and the backward rebuilds each block from xs
    WanGpuHeadAct head;
    float* out; // [B, out_dim, T, Hl, Wl] head_θ
    // backward scratch (this evaluation's own; the blocks and the output head use the backbone's WanGpuScratch)
    float *g, *dfh, *dff, *dff2, *dp, *dcat, *dmodf, *de_h, *de0_h, *dse, *da, *dh, *red;
    WanGpuArena arena;
    char* base;
    char* cp_base; // context parallelism (the backbone's WanGpuAct.cp): the whole output and the blocks' CP buffers
} TmdGpuHeadAct;

static void head_gpu_carve_(TmdGpuHeadAct* a, const StudentConfig* sc, const WanGpuAct* bb) {
    const WanConfig* c = &sc->wan;
    WanGpuArena* ar = &a->arena;
    ActDims z = act_dims(c, a->B, a->L, bb->flash, sc->fuse_ffn_dim, sc->head_blocks, sc->fusion == FUSION_GATED);
    TMD_HEAD_EVAL_BUFFERS(WAN_GPU_TAKE_, a, z) // gpu/act_plan.h
    for (int k = 0; k < sc->head_blocks; k++) {
        if (a->recompute)
            a->blocks[k] = bb->blocks[0]; // the backbone's one set: nothing kept here, rebuilt in the backward
        else
            wan_gpu_block_act_carve(&a->blocks[k], ar, c, a->B, a->L, bb->flash); // gpu/wan_gpu.cuh's own plan
    }
    wan_gpu_head_act_carve(&a->head, ar, c, a->B, a->L);
    size_t red = layernorm_backward_scratch_floats(a->B, a->L, c->dim); // what the fusion's reductions need
    red = wan_gpu_max_(red, residual_backward_scratch_floats(a->B, a->L, c->dim));
    red =
        wan_gpu_max_(red, matmul_backward_scratch_floats(a->B * a->L, (int)wan_gpu_max_(sc->fuse_ffn_dim, 2 * c->dim)));
    red = wan_gpu_max_(red, matmul_backward_scratch_floats(a->B, 6 * c->dim));
    if (z.head_red < red) {
        fprintf(stderr, "head_gpu_carve_: gpu/act_plan.h plans %zu reduction floats, the kernels need %zu\n",
                z.head_red, red);
        exit(1);
    }
}

// context parallelism (the backbone bb's WanGpuActOpts.cp, gpu/cp_gpu.cuh): the evaluation holds this rank's
// Lr = L / cp tokens (a->L is bb's, already Lr), as the backbone's feature m does. Everything before the blocks is
// per token or per sample (the patch embedding of this rank's rows of y, the fusion with m's rows, the time MLPs), the
// blocks attend over the group as the backbone's do, and the head's rows are all-gathered: a->out is the WHOLE
// output on every rank of the group (as a CP DiT's out), in a buffer beside the arena. Own block sets (no recompute)
// get the head-sharded buffers gpu/wan_gpu.cuh gives its own (the recompute's borrowed set has them already).
static void head_gpu_cp_alloc_(TmdGpuHeadAct* a, const StudentConfig* sc, const WanGpuAct* bb) {
    const WanCp* cp = bb->cp;
    const CpLayout* p = &cp->lay;
    size_t nloc = (size_t)p->B * p->Lr * p->H * p->d, att = bb->flash ? 0 : (size_t)p->B * p->Hk * p->L * p->L;
    int nsets = a->recompute ? 0 : sc->head_blocks;
    WanGpuArena ar;
    memset(&ar, 0, sizeof(ar));
    for (int pass = 0; pass < 2; pass++) {
        if (pass) {
            a->cp_base = (char*)cuda_malloc_named(ar.used, "flow-head context-parallel buffers", WAN_GPU_OOM_HINT);
            memset(&ar, 0, sizeof(ar));
            ar.base = a->cp_base;
        }
        a->out = wan_gpu_take<float>(&ar, (size_t)p->B * p->L * cp->g_out.P, "head.cp.out");
        for (int k = 0; k < nsets; k++) {
            WanGpuBlockAct* b = &a->blocks[k];
            b->qh = wan_gpu_take<floatX>(&ar, nloc, "head.cp.block");
            b->kh = wan_gpu_take<floatX>(&ar, nloc, "head.cp.block");
            b->vh = wan_gpu_take<floatX>(&ar, nloc, "head.cp.block");
            b->aoh = wan_gpu_take<floatX>(&ar, nloc, "head.cp.block");
            b->atth = wan_gpu_take<float>(&ar, att, "head.cp.block");
            b->cp = cp;
        }
    }
}

// the patch embedding p of y [B, C, T, Hl, Wl] (a CP backbone: this rank's tokens' rows of it)
static void head_gpu_patch_embed_(TmdGpuHeadAct* a, const WanGpuWeights* W, const WanGpuAct* bb, const float* y,
                                  cudaStream_t st) {
    PatchGrid g = bb->g;
    if (!bb->cp) {
        wan_gpu_patch_embed_forward(a->p, a->patches, W, &g, y, st);
        return;
    }
    cp_gpu_patch_rows(bb->cp, a->patches, y, st);
    matmul_forward<float>(a->p, NULL, a->patches, W->P.patch_embedding_weight, W->P.patch_embedding_bias, a->B * a->L,
                          g.P, W->cfg.dim, 0, st);
}
// its backward from a->dp: dP (+=, may be NULL), dy (+=, may be NULL; a CP backbone: zero outside this rank's tokens)
static void head_gpu_patch_embed_backward_(WanParamsF* dP, float* dy, TmdGpuHeadAct* a, const WanGpuWeights* W,
                                           const WanGpuAct* bb, WanGpuScratch* sc, cudaStream_t st) {
    PatchGrid g = bb->g;
    if (!bb->cp || !dy) {
        wan_gpu_patch_embed_backward(dP, dy, a->dp, a->patches, W, &g, sc, st);
        return;
    }
    matmul_backward<float>(sc->dpatch, dP ? dP->patch_embedding_weight : NULL, dP ? dP->patch_embedding_bias : NULL,
                           sc->red, a->dp, a->patches, W->P.patch_embedding_weight, NULL, a->B * a->L, g.P,
                           W->cfg.dim, 0, st);
    cp_gpu_patch_rows_backward(bb->cp, dy, sc->dpatch, st);
}

// plans one head evaluation for the backbone activations bb (same batch, grid and attention path)
static void head_gpu_act_init(TmdGpuHeadAct* a, const StudentConfig* sc, const WanGpuAct* bb) {
    memset(a, 0, sizeof(*a));
    a->B = bb->B;
    a->L = bb->g.L;
    a->recompute = bb->recompute || !bb->training;
    head_gpu_carve_(a, sc, bb);
    size_t total = a->arena.used;
    size_t planned = act_head_eval_bytes(&sc->wan, a->B, a->L, sc->fuse_ffn_dim, sc->head_blocks,
                                         sc->fusion == FUSION_GATED, a->recompute, bb->flash, sizeof(floatX));
    if (total != planned) {
        fprintf(stderr, "head_gpu_act_init: the carve takes %zu bytes, gpu/act_plan.h plans %zu\n", total, planned);
        exit(1);
    }
    a->base = (char*)cuda_malloc_named(total, "flow-head activations", WAN_GPU_OOM_HINT);
    a->arena.base = a->base;
    a->arena.used = 0;
    a->arena.ne = 0;
    head_gpu_carve_(a, sc, bb);
    if (bb->cp) head_gpu_cp_alloc_(a, sc, bb);
}
static void head_gpu_act_free(TmdGpuHeadAct* a) {
    cudaCheck(cudaFree(a->base));
    if (a->cp_base) cudaCheck(cudaFree(a->cp_base));
    memset(a, 0, sizeof(*a));
}

// fmod[b] = (fuse_mod[0] + e0_h[b, 3], fuse_mod[1] + e0_h[b, 4], fuse_mod[2]);  G[b] = sigmoid(a)·fmod[b, 2]
__global__ void fusion_mod_kernel(float* fmod, float* G, const float* fuse_mod, const float* e0_h, const float* gate_a,
                                  int B, int D) {
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= B * D) return;
    int b = idx / D, i = idx % D;
    float sg = 1.f / (1.f + expf(-gate_a[0]));
    fmod[(size_t)b * 3 * D + i] = fuse_mod[i] + e0_h[(size_t)b * 6 * D + 3 * D + i];
    fmod[(size_t)b * 3 * D + D + i] = fuse_mod[D + i] + e0_h[(size_t)b * 6 * D + 4 * D + i];
    fmod[(size_t)b * 3 * D + 2 * D + i] = fuse_mod[2 * D + i];
    G[idx] = sg * fuse_mod[2 * D + i];
}
// inverts fusion_mod_kernel: dmodf[b, 2] += sigmoid(a)·dG[b]; dfuse_mod[i] += Σ_b dmodf[b, i]; de0_h[b, 3..4] +=
// dmodf[b, 0..1]
__global__ void fusion_mod_backward_kernel(float* dfuse_mod, float* de0_h, float* dmodf, const float* dG,
                                           const float* gate_a, int B, int D) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= 3 * D) return;
    float sg = 1.f / (1.f + expf(-gate_a[0]));
    float s = 0.f;
    for (int b = 0; b < B; b++) {
        float* dm = dmodf + (size_t)b * 3 * D;
        if (i >= 2 * D) dm[i] += sg * dG[(size_t)b * D + i - 2 * D];
        s += dm[i];
        if (i < 2 * D) de0_h[(size_t)b * 6 * D + 3 * D + i] += dm[i];
    }
    if (dfuse_mod) dfuse_mod[i] += s;
}
// d a += σ(a)(1 − σ(a))·Σ_{b,i} dG[b, i]·gate_f[i]   (one block, fixed order)
__global__ void fusion_gate_backward_kernel(float* dgate_a, const float* dG, const float* fuse_mod, const float* gate_a,
                                            int B, int D) {
    __shared__ float red[32];
    float s = 0.f;
    for (int k = threadIdx.x; k < B * D; k += blockDim.x) s += dG[k] * fuse_mod[2 * D + k % D];
    s = block_sum(s, red);
    if (threadIdx.x == 0) {
        float sg = 1.f / (1.f + expf(-gate_a[0]));
        dgate_a[0] += s * sg * (1.f - sg);
    }
}
// cat [N, 2D] = [m | p]  and its inverse dm += dcat[:, :D], dp += dcat[:, D:]
__global__ void concat_kernel(float* cat, const float* m, const float* p, size_t N, int D) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N * 2 * D) return;
    size_t n = i / (2 * D);
    int j = (int)(i % (2 * D));
    cat[i] = j < D ? m[n * D + j] : p[n * D + j - D];
}
__global__ void concat_backward_kernel(float* dm, float* dp, const float* dcat, size_t N, int D) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N * D) return;
    size_t n = i / D;
    int j = (int)(i % D);
    dm[i] += dcat[n * 2 * D + j];
    dp[i] += dcat[n * 2 * D + D + j];
}
static unsigned tmd_blocks_(size_t n) { return (unsigned)((n + 255) / 256); }

// Linear, SiLU, Linear on the host-built sinusoid of t [B] (host doubles, already ×1000)
static void time_mlp_gpu_forward(float* e, float* sin, float* h1, float* a1, const float* w0, const float* b0,
                                 const float* w2, const float* b2, const double* t, int B, int freq_dim, int D,
                                 cudaStream_t s) {
    float* hs = (float*)malloc(sizeof(float) * B * freq_dim);
    timestep_sinusoid_host(hs, t, B, freq_dim);
    cudaCheck(cudaMemcpyAsync(sin, hs, sizeof(float) * B * freq_dim, cudaMemcpyHostToDevice, s));
    cudaCheck(cudaStreamSynchronize(s));
    free(hs);
    matmul_forward<float>(h1, NULL, sin, w0, b0, B, freq_dim, D, 0, s);
    silu_forward<float>(a1, h1, (size_t)B * D, s);
    matmul_forward<float>(e, NULL, a1, w2, b2, B, D, D, 0, s);
}
// de [B, D] → dw0, db0, dw2, db2 (+=; all NULL: nothing to do). da, dh: [B, D] scratch
static void time_mlp_gpu_backward(float* dw0, float* db0, float* dw2, float* db2, float* da, float* dh, float* red,
                                  const float* de, const float* sin, const float* h1, const float* a1, const float* w2,
                                  int B, int freq_dim, int D, cudaStream_t s) {
    if (!dw0 && !dw2) return;
    matmul_backward<float>(da, dw2, db2, red, de, a1, w2, NULL, B, D, D, 0, s);
    silu_backward<float>(dh, da, h1, (size_t)B * D, s);
    matmul_backward<float>(NULL, dw0, db0, red, dh, sin, NULL, NULL, B, freq_dim, D, 0, s);
}

// m [N, D] the main feature; bb: the backbone's activations (its text context c, RoPE table, grid, attention path);
// y [B, C, T, Hl, Wl]; s, r [B] host doubles. head_θ lands in a->out.
static void head_gpu_forward(TmdGpuHeadAct* a, const TmdGpuStudent* S, const WanGpuAct* bb, const float* m,
                             const float* y, const double* s_, const double* r_) {
    const StudentConfig* sc = &S->sc;
    const WanConfig* c = &sc->wan;
    const WanGpuWeights* W = &S->w;
    const StudentExtraF* X = &S->X;
    cudaStream_t st = bb->stream;
    int B = a->B, L = a->L, D = c->dim, Ff = sc->fuse_ffn_dim, Lb = c->num_layers - sc->head_blocks;
    size_t N = (size_t)B * L, ND = N * D;
    double ts[TMD_MAX_BATCH], td[TMD_MAX_BATCH];
    for (int b = 0; b < B; b++) {
        ts[b] = 1000.0 * s_[b];
        td[b] = 1000.0 * (s_[b] - r_[b]);
    }
    // the units it reads: the embeddings (0) first, then the last H blocks and the head (a fully sharded student's
    // are gathered here, once per evaluation; the whole model's are W itself)
    const WanGpuWeights* We = wan_gpu_unit_(W, 0, 0);
    time_mlp_gpu_forward(a->e_s, a->sin_s, a->h1_s, a->a1_s, We->P.time_embedding_0_weight, We->P.time_embedding_0_bias,
                         We->P.time_embedding_2_weight, We->P.time_embedding_2_bias, ts, B, c->freq_dim, D, st);
    time_mlp_gpu_forward(a->e_d, a->sin_d, a->h1_d, a->a1_d, X->delta_time_0_weight, X->delta_time_0_bias,
                         X->delta_time_2_weight, X->delta_time_2_bias, td, B, c->freq_dim, D, st);
    combine3(a->e_h, coef3_all(1, 1, 1, 0), a->e_s, a->e_d, NULL, 1, (size_t)B * D, st);
    silu_forward<float>(a->se_h, a->e_h, (size_t)B * D, st);
    matmul_forward<float>(a->e0_h, NULL, a->se_h, We->P.time_projection_1_weight, We->P.time_projection_1_bias, B, D,
                          6 * D, 0, st);
    PatchGrid g = bb->g;
    head_gpu_patch_embed_(a, We, bb, y, st);
    float* h = a->xs;
    if (sc->fusion == FUSION_GATED) {
        fusion_mod_kernel<<<tmd_blocks_((size_t)B * D), 256, 0, st>>>(a->fmod, a->G, X->fuse_modulation, a->e0_h,
                                                                      X->fuse_gate, B, D);
        cudaCheck(cudaGetLastError());
        layernorm_modulate_forward<float>(a->fh, a->fmean, a->frstd, a->p, a->fmod, a->fmod + D, 3 * D, B, L, D,
                                          (float)c->eps, st);
        matmul_forward<float>(a->ff1, NULL, a->fh, X->fuse_0_weight, X->fuse_0_bias, (int)N, D, Ff, 0, st);
        gelu_forward<float>(a->ff1a, a->ff1, N * Ff, st);
        matmul_forward<float>(a->ff2, NULL, a->ff1a, X->fuse_2_weight, X->fuse_2_bias, (int)N, Ff, D, 0, st);
        cudaCheck(cudaMemcpyAsync(h, m, sizeof(float) * ND, cudaMemcpyDeviceToDevice, st));
        residual_forward<float>(h, a->ff2, a->G, D, B, L, D, st); // h = m + sigmoid(a)·gate_f·ff2
    } else {
        concat_kernel<<<tmd_blocks_(N * 2 * D), 256, 0, st>>>(a->cat, m, a->p, N, D);
        cudaCheck(cudaGetLastError());
        matmul_forward<float>(h, NULL, a->cat, X->concat_weight, X->concat_bias, (int)N, 2 * D, D, 0, st);
    }
    for (int k = 0; k < sc->head_blocks; k++)
        wan_gpu_block_forward(a->xs + (size_t)(k + 1) * ND, &a->blocks[k], wan_gpu_unit_(W, 1 + Lb + k, 0), Lb + k,
                              a->xs + (size_t)k * ND, a->e0_h, bb->text.c, bb->rope, bb->flash, &g, st);
    PatchGrid go = bb->g_out;
    wan_gpu_head_forward(bb->cp ? NULL : a->out, &a->head, wan_gpu_unit_(W, c->num_layers + 1, 0), &go,
                         a->xs + (size_t)sc->head_blocks * ND, a->e_h, st);
    if (bb->cp) cp_gpu_gather_out(bb->cp, a->out, a->head.y, st); // the group's rows: the whole head_θ on every rank
}

// dout = d head_θ → S's gradients (+=; with_grads 0: none), dm (+=, [N, D]), dc (+=, [B·text_len, D] fp32, may be
// NULL), dy (+=, [B, C, T, Hl, Wl], may be NULL). bb must be planned for training (its backward scratch is used).
// A CP backbone: dout is the whole output's gradient (the same on every rank), of which this rank reads its tokens'
// rows; the parameter gradients, dc and dy are this rank's tokens' part (dy zero elsewhere), dm is its rows' own.
static void head_gpu_backward(TmdGpuStudent* S, int with_grads, float* dm, float* dc, float* dy, const float* dout,
                              TmdGpuHeadAct* a, WanGpuAct* bb) {
    const StudentConfig* sc = &S->sc;
    const WanConfig* c = &sc->wan;
    const WanGpuWeights* W = &S->w;
    const StudentExtraF* X = &S->X;
    WanParamsF* dP = with_grads ? &S->dP : NULL;
    StudentExtraF* dX = with_grads ? &S->dX : NULL;
    cudaStream_t st = bb->stream;
    int B = a->B, L = a->L, D = c->dim, Ff = sc->fuse_ffn_dim, H = sc->head_blocks, Lb = c->num_layers - H;
    size_t N = (size_t)B * L, ND = N * D;
    PatchGrid g = bb->g, go = bb->g_out;
    wan_gpu_require_training_(bb, "head_gpu_backward");
    WanGpuScratch* sc_ = &bb->s;
    cudaCheck(cudaMemsetAsync(a->g, 0, sizeof(float) * ND, st));
    cudaCheck(cudaMemsetAsync(a->de_h, 0, sizeof(float) * B * D, st));
    cudaCheck(cudaMemsetAsync(a->de0_h, 0, sizeof(float) * B * 6 * D, st));
    // a fully sharded student's units: the head's and each block's gathered, their gradients opened and, when their
    // backward is done, reduce-scattered (every evaluation: N per rollout); the embeddings' stay open across every
    // evaluation until the backbone's backward (wan_gpu_backward_blocks) closes them, as the whole model's
    // gradient buffer sums them (the whole model: all of this is W and dP themselves)
    if (bb->cp) cp_gpu_out_rows_backward(bb->cp, sc_->dy, dout, st); // this rank's rows of d head_θ
    const WanGpuWeights* Wh = wan_gpu_unit_(W, c->num_layers + 1, 1);
    wan_gpu_head_backward(wan_gpu_unit_grads_(W, dP, c->num_layers + 1), a->g, a->de_h, bb->cp ? NULL : dout, &a->head,
                          Wh, &go, a->xs + (size_t)H * ND, sc_, st);
    wan_gpu_unit_done_(W, dP, c->num_layers + 1);
    for (int k = H - 1; k >= 0; k--) {
        const WanGpuWeights* Wl = wan_gpu_unit_(W, 1 + Lb + k, 1); // one gather serves the recompute and the backward
        WanParamsF* dWl = wan_gpu_unit_grads_(W, dP, 1 + Lb + k);
        if (a->recompute) // block k's activations, rebuilt from its kept input xs[k] into the backbone's one set
            wan_gpu_block_forward(NULL, &a->blocks[k], Wl, Lb + k, a->xs + (size_t)k * ND, a->e0_h, bb->text.c,
                                  bb->rope, bb->flash, &g, st);
        wan_gpu_block_backward(dWl ? &dWl->blocks[Lb + k] : NULL, a->g, a->de0_h, dc, &a->blocks[k], Wl, Lb + k,
                               bb->text.c, bb->rope, bb->flash, &g, sc_, st);
        wan_gpu_unit_done_(W, dP, 1 + Lb + k);
    }
    // a->g = d h (the fused feature)
    cudaCheck(cudaMemsetAsync(a->dp, 0, sizeof(float) * ND, st));
    if (sc->fusion == FUSION_GATED) {
        wan_gpu_add<float>(dm, a->g, ND, st);                            // h = m + G·ff2
        cudaCheck(cudaMemsetAsync(a->dh, 0, sizeof(float) * B * D, st)); // dG
        residual_backward<float>(a->dff2, a->dh, a->red, a->g, a->ff2, a->G, D, B, L, D, st);
        matmul_backward<float>(a->dff, dX ? dX->fuse_2_weight : NULL, dX ? dX->fuse_2_bias : NULL, a->red, a->dff2,
                               a->ff1a, X->fuse_2_weight, NULL, (int)N, Ff, D, 0, st);
        gelu_backward<float>(a->dff, a->dff, a->ff1, N * Ff, st);
        matmul_backward<float>(a->dfh, dX ? dX->fuse_0_weight : NULL, dX ? dX->fuse_0_bias : NULL, a->red, a->dff,
                               a->fh, X->fuse_0_weight, NULL, (int)N, D, Ff, 0, st);
        cudaCheck(cudaMemsetAsync(a->dmodf, 0, sizeof(float) * B * 3 * D, st));
        layernorm_modulate_backward<float>(a->dp, a->dmodf, a->dmodf + D, a->red, a->dfh, a->p, a->fmean, a->frstd,
                                           a->fmod + D, 3 * D, B, L, D, st);
        if (dX) {
            fusion_gate_backward_kernel<<<1, 256, 0, st>>>(dX->fuse_gate, a->dh, X->fuse_modulation, X->fuse_gate, B,
                                                           D);
            cudaCheck(cudaGetLastError());
        }
        fusion_mod_backward_kernel<<<tmd_blocks_((size_t)3 * D), 256, 0, st>>>(
            dX ? dX->fuse_modulation : NULL, a->de0_h, a->dmodf, a->dh, X->fuse_gate, B, D);
        cudaCheck(cudaGetLastError());
    } else {
        matmul_backward<float>(a->dcat, dX ? dX->concat_weight : NULL, dX ? dX->concat_bias : NULL, a->red, a->g,
                               a->cat, X->concat_weight, NULL, (int)N, 2 * D, D, 0, st);
        concat_backward_kernel<<<tmd_blocks_(ND), 256, 0, st>>>(dm, a->dp, a->dcat, N, D);
        cudaCheck(cudaGetLastError());
    }
    const WanGpuWeights* We = wan_gpu_unit_(W, 0, 1);
    WanParamsF* dPe = wan_gpu_unit_grads_(W, dP, 0); // not closed here: the backbone's backward closes it
    head_gpu_patch_embed_backward_(dPe, dy, a, We, bb, sc_, st);
    // e0_h = TP(SiLU(e_h)); e_h = e_s + e_d
    matmul_backward<float>(a->dse, dPe ? dPe->time_projection_1_weight : NULL, dPe ? dPe->time_projection_1_bias : NULL,
                           a->red, a->de0_h, a->se_h, We->P.time_projection_1_weight, NULL, B, D, 6 * D, 0, st);
    silu_backward<float>(a->dse, a->dse, a->e_h, (size_t)B * D, st);
    wan_gpu_add<float>(a->de_h, a->dse, (size_t)B * D, st);
    if (dPe)
        time_mlp_gpu_backward(dPe->time_embedding_0_weight, dPe->time_embedding_0_bias, dPe->time_embedding_2_weight,
                              dPe->time_embedding_2_bias, a->da, a->dh, a->red, a->de_h, a->sin_s, a->h1_s, a->a1_s,
                              We->P.time_embedding_2_weight, B, c->freq_dim, D, st);
    if (dX)
        time_mlp_gpu_backward(dX->delta_time_0_weight, dX->delta_time_0_bias, dX->delta_time_2_weight,
                              dX->delta_time_2_bias, a->da, a->dh, a->red, a->de_h, a->sin_d, a->h1_d, a->a1_d,
                              X->delta_time_2_weight, B, c->freq_dim, D, st);
}

// ---------------------------------------------------------------------------------------------------------
// the inner flow (Algorithm 1's INNERFLOW) for the rollout backward (Section 3.2): grid s_j = shift_10(j/N), s_N
// clamped to 0.999 (cpu/tmd_cpu.h inner_grid). Every state y_j is kept. On a backbone that keeps every activation,
// so is every step's evaluation (N of them); on a recomputing backbone there is ONE evaluation, and the backward
// re-runs step j's from the kept y_j (and m, s_j, s_{j−1}) before its backward: the same kernels on the same inputs,
// so the same bits, for one more flow-head forward per step but one evaluation's memory instead of N
// (gpu/act_plan.h act_rollout_evals). A forward-only backbone (sampling) needs one as well.

typedef struct {
    int N, B;
    double s[65];
    int n_evals;             // N, or 1 (act_rollout_evals)
    TmdGpuHeadAct steps[64]; // steps[j − 1] evaluates at (s_j, s_{j−1}); with one evaluation, steps[0] serves every j
    const float* m;          // the main feature of the last forward (the re-runs read it; the backbone keeps it)
    float* ys;               // [N + 1, B·numel]: ys[N] = y1, ys[j − 1] = the state after the step from s_j
    float* dyb;              // [2, B·numel] backward: d y and the head's cotangent
    size_t numel;            // per batch: B·C·T·Hl·Wl
} TmdGpuRollout;

static TmdGpuHeadAct* rollout_gpu_eval(TmdGpuRollout* ro, int j) { return &ro->steps[ro->n_evals == 1 ? 0 : j - 1]; }

static void rollout_gpu_init(TmdGpuRollout* ro, const StudentConfig* sc, const WanGpuAct* bb, int N, double gamma) {
    memset(ro, 0, sizeof(*ro));
    if (N < 1 || N > 64) {
        fprintf(stderr, "rollout: %d inner steps; expected 1..64\n", N);
        exit(1);
    }
    ro->N = N;
    ro->B = bb->B;
    inner_grid(ro->s, N, gamma);
    ro->n_evals = act_rollout_evals(N, bb->training, bb->recompute);
    ro->numel = (size_t)bb->B * sc->wan.out_dim * bb->g.T * bb->g.Hl * bb->g.Wl;
    ro->ys = (float*)cuda_malloc_named(sizeof(float) * (N + 1) * ro->numel, "rollout states", WAN_GPU_OOM_HINT);
    ro->dyb = (float*)cuda_malloc_named(sizeof(float) * 2 * ro->numel, "rollout gradients", WAN_GPU_OOM_HINT);
    for (int j = 0; j < ro->n_evals; j++) head_gpu_act_init(&ro->steps[j], sc, bb);
}
static void rollout_gpu_free(TmdGpuRollout* ro) {
    for (int j = 0; j < ro->n_evals; j++) head_gpu_act_free(&ro->steps[j]);
    cudaCheck(cudaFree(ro->ys));
    cudaCheck(cudaFree(ro->dyb));
}
static float* rollout_gpu_y(const TmdGpuRollout* ro, int j) { return ro->ys + (size_t)j * ro->numel; }

// y ← y1; for j = N..1: y ← y − (s_j − s_{j−1})·(y1 − head(y, s_j, s_{j−1}; m)); returns ŷ = rollout_gpu_y(ro, 0)
static const float* rollout_gpu_forward(TmdGpuRollout* ro, const TmdGpuStudent* S, const WanGpuAct* bb, const float* m,
                                        const float* y1) {
    cudaStream_t st = bb->stream;
    cudaCheck(cudaMemcpyAsync(rollout_gpu_y(ro, ro->N), y1, sizeof(float) * ro->numel, cudaMemcpyDeviceToDevice, st));
    double sv[TMD_MAX_BATCH], rv[TMD_MAX_BATCH];
    ro->m = m;
    for (int j = ro->N; j >= 1; j--) {
        for (int b = 0; b < ro->B; b++) {
            sv[b] = ro->s[j];
            rv[b] = ro->s[j - 1];
        }
        TmdGpuHeadAct* a = rollout_gpu_eval(ro, j);
        head_gpu_forward(a, S, bb, m, rollout_gpu_y(ro, j), sv, rv);
        double ds = ro->s[j] - ro->s[j - 1];
        combine3(rollout_gpu_y(ro, j - 1), coef3_all(1, 1, -ds, ds), rollout_gpu_y(ro, j), y1, a->out, 1, ro->numel,
                 st); // y_r = y_s − (s − r)·u
    }
    return rollout_gpu_y(ro, 0);
}

// dyhat = d ŷ → S's gradients (+=), dm (+=), dc (+=): through all N inner steps (y_{j−1} = y_j − ds·y1 + ds·head(y_j))
static void rollout_gpu_backward(TmdGpuStudent* S, float* dm, float* dc, const float* dyhat, TmdGpuRollout* ro,
                                 WanGpuAct* bb) {
    cudaStream_t st = bb->stream;
    float* dy = ro->dyb;
    float* dhead = ro->dyb + ro->numel;
    cudaCheck(cudaMemcpyAsync(dy, dyhat, sizeof(float) * ro->numel, cudaMemcpyDeviceToDevice, st));
    double sv[TMD_MAX_BATCH], rv[TMD_MAX_BATCH];
    for (int j = 1; j <= ro->N; j++) {
        double ds = ro->s[j] - ro->s[j - 1];
        TmdGpuHeadAct* a = rollout_gpu_eval(ro, j);
        if (ro->n_evals == 1 && j > 1) { // one evaluation: it holds step 1's (the forward's last); rebuild step j's
            for (int b = 0; b < ro->B; b++) {
                sv[b] = ro->s[j];
                rv[b] = ro->s[j - 1];
            }
            head_gpu_forward(a, S, bb, ro->m, rollout_gpu_y(ro, j), sv, rv);
        }
        // (a CP backbone: dy's rows of this rank's tokens are whole, the others lack the other ranks' head paths; each
        // step's head backward reads only this rank's rows of dhead, and ŷ's gradient goes nowhere else)
        combine3(dhead, coef3_all(1, ds, 0, 0), dy, dy, NULL, 1, ro->numel, st);
        head_gpu_backward(S, 1, dm, dc, j < ro->N ? dy : NULL, dhead, a, bb); // d y_j = dy (identity) + head path
    }
}

// ---------------------------------------------------------------------------------------------------------
// samplers: x [B, C, T, Hl, Wl] (device) holds the initial noise and is overwritten with the sample; ctx
// [B, text_len, text_dim] (device); y1 noise from the Philox stream (seed, offset), one fresh tensor per outer step.

// TMD (Algorithm 1): for i = M..1: m = backbone(x, t_i); x ← x − (t_i − t_{i−1})·INNERFLOW(m)
static void tmd_gpu_sample(float* x, const TmdGpuStudent* S, WanGpuAct* bb, TmdGpuRollout* ro, float* y1,
                           const float* ctx, int M, double gamma_outer, uint64_t seed, uint64_t* offset) {
    double t[65], tv[TMD_MAX_BATCH];
    outer_grid(t, M, gamma_outer);
    int Lb = S->sc.wan.num_layers - S->sc.head_blocks;
    for (int i = M; i >= 1; i--) {
        for (int b = 0; b < bb->B; b++) tv[b] = 1000.0 * t[i];
        wan_gpu_forward_blocks(bb, &S->w, x, tv, ctx, Lb);
        normal_fill(y1, ro->numel, seed, *offset, 0.f, 1.f, bb->stream);
        *offset += ro->numel;
        const float* yhat = rollout_gpu_forward(ro, S, bb, wan_gpu_xs(bb, Lb), y1);
        combine3(x, coef3_all(1, 1, -(t[i] - t[i - 1]), 0), x, yhat, NULL, 1, ro->numel, bb->stream); // Eq. 4
    }
}

// DMD2-v deterministic multi-step sampler for a plain Wan student: x_{t'} = (t'/t)·x_t + (1 − t'/t)·(x_t − t·v)
static void dmd_gpu_sample(float* x, const WanGpuWeights* W, WanGpuAct* a, const float* ctx, int M,
                           double gamma_outer) {
    double t[65], tv[TMD_MAX_BATCH];
    outer_grid(t, M, gamma_outer);
    size_t n = (size_t)a->B * W->cfg.out_dim * a->g.T * a->g.Hl * a->g.Wl;
    for (int i = M; i >= 1; i--) {
        for (int b = 0; b < a->B; b++) tv[b] = 1000.0 * t[i];
        wan_gpu_forward(a, W, x, tv, ctx);
        double k = t[i - 1] / t[i];
        combine3(x, coef3_all(1, 1, -(1 - k) * t[i], 0), x, a->out, NULL, 1, n, a->stream); // k·x + (1 − k)·(x − t·v)
    }
}
