// gpu/distill_plan.h: the memory plan of one distillation step on one GPU, as plain C arithmetic (so the CPU tests
// check it against the presets, and train_tmd prints it before allocating anything).
//   Stage 1 (TM-MF): the student trainable; the guidance and the JVP's two evaluations run without gradients.
//   Stage 2 (DMD2-v): the student and the fake score trainable, the teacher frozen, the discriminator heads
//     trainable; the peak is the student update (generator graph + the frozen teacher's graph for the GAN loss).
//   KD warm-up (gpu/kd_gpu.cuh): the one-step student trainable and its generator graph; the teacher ODE pairs (noise,
//     teacher sample, caption) all on the device. The teacher that makes the pairs runs before, forward only.
// Bytes per parameter: a trainable network keeps fp32 master weights (4), fp32 gradients (4), AdamW m and v (8)
// and, in the bf16 build, a bf16 working copy (2); a frozen one only its working copy (2, or 4 in the fp32 build).
// Activations (per sample, elements; L tokens, D width, F FFN width, Lt text rows): a DiT block that keeps what
// its backward needs holds 21·L·D + 2·L·F + 3·Lt·D activations (LN outputs, q, k, v, roped q and k, attention
// outputs and projections, residuals, the FFN's two hidden tensors; plan_block_elems lists them) plus fp32
// statistics; with recompute a block
// keeps only its input (L·D) and one block at a time is rebuilt in the backward, next to its gradient scratch
// (two fp32 residual gradients, one F-wide and three D-wide activation gradients). Flash attention keeps no
// L×L scores; the naive attention path keeps heads·L·L fp32 probabilities in every block it holds.
// These counts are this plan's model of the buffers; where gpu/wan_gpu.cuh carves its own, its printed plan is the
// authority for the DiT passes and this one for the sum over networks and passes.
#pragma once
#include <stdio.h>
#include <stddef.h>
#include <string.h>
#include "../wan.h"

#define PLAN_MAX_ITEMS 24
#define PLAN_GIB (1024.0 * 1024.0 * 1024.0)

typedef struct { char name[48]; double bytes; char what[128]; } PlanItem;
typedef struct { PlanItem item[PLAN_MAX_ITEMS]; int n; double total; } MemPlan;

typedef struct {
    WanConfig wan;          // the teacher's architecture (student and fake score share it)
    int T, Hl, Wl;          // latent grid (21 x 60 x 104 for 480p x 81 frames: 32,760 tokens with 1x2x2 patches)
    int batch;              // samples per micro-step on this GPU
    int N, H;               // inner steps of the rollout, flow-head blocks
    size_t student_extra;   // parameters the student adds to the Wan layout (cpu/tmd_cpu.h student_extra_layout)
    size_t disc_params;     // parameters of all discriminator heads (cpu/disc_cpu.h disc_num_params)
    int disc_top;           // blocks of the frozen teacher the GAN features need (last feature layer + 1)
    int disc_heads;         // feature layers, one head each
    int disc_width1;        // output channels of the first conv (its activations dominate the heads')
    int recompute;          // 1: blocks keep only their inputs
    int naive_attention;    // 1: the naive attention path (materialised scores)
    int fp32;               // 1: the all-fp32 build
    int kd_pairs;           // KD warm-up: teacher ODE pairs kept on the device
} PlanInput;

static void plan_add(MemPlan* p, const char* name, double bytes, const char* what) {
    if (p->n >= PLAN_MAX_ITEMS) return;
    PlanItem* it = &p->item[p->n++];
    snprintf(it->name, sizeof(it->name), "%s", name); snprintf(it->what, sizeof(it->what), "%s", what);
    it->bytes = bytes; p->total += bytes;
}

static int plan_tokens(const PlanInput* in) {
    const WanConfig* c = &in->wan;
    return (in->T / c->patch[0]) * (in->Hl / c->patch[1]) * (in->Wl / c->patch[2]);
}
static double plan_trainable_bytes_per_param(const PlanInput* in) { return in->fp32 ? 16.0 : 18.0; }
static double plan_act_bytes(const PlanInput* in) { return in->fp32 ? 4.0 : 2.0; }

// one block's kept activations, element counts mirroring cpu/wan_cpu.h's WanBlockAct buffer for buffer:
// acts = 21·L·D (LN outputs, q/k/v before and after RMSNorm and RoPE, attention outputs and projections, the two
// residuals, cross-attention q, outputs and projection, FFN input and output) + 2·L·F (FFN hidden before and after
// GELU) + 3·Lt·D (cross-attention k before and after RMSNorm, v) + 6·D (modulation); stats = 9·L + Lt (LayerNorm
// mean and rstd, RMSNorm rstd) + the attention: heads·(L·L + L·Lt) probabilities on the naive path, or 2·heads·L
// log-sum-exp values on the flash path.
typedef struct { double acts, stats; } PlanBlock;
static PlanBlock plan_block_elems(const PlanInput* in) {
    double L = plan_tokens(in), D = in->wan.dim, F = in->wan.ffn_dim, Lt = in->wan.text_len, heads = in->wan.num_heads;
    PlanBlock b;
    b.acts = 21 * L * D + 2 * L * F + 3 * Lt * D + 6 * D;
    b.stats = 9 * L + Lt + (in->naive_attention ? heads * (L * L + L * Lt) : 2 * heads * L);
    return b;
}
static double plan_block_bytes(const PlanInput* in) { PlanBlock b = plan_block_elems(in); return b.acts * plan_act_bytes(in) + b.stats * 4.0; }
static double plan_block_scratch_bytes(const PlanInput* in) {
    double L = plan_tokens(in), D = in->wan.dim, F = in->wan.ffn_dim;
    return 2 * L * D * 4.0 + (L * F + 3 * L * D) * plan_act_bytes(in);
}
// what `blocks` blocks of one graph keep until their backward
static double plan_graph_bytes(const PlanInput* in, double blocks) {
    double L = plan_tokens(in), D = in->wan.dim;
    return blocks * (in->recompute ? L * D * plan_act_bytes(in) : plan_block_bytes(in));
}
// the discriminator heads' activations (gpu/disc_gpu.cuh DiscGpuAct, fp32), for real and fake features: the
// unpatchified feature (L·D values) and conv 1's (kernel (3,4,4), stride (1,2,2), padding 1) output, GroupNorm xhat,
// GroupNorm output and LeakyReLU output; the later convs are at least 8x smaller and are counted as a quarter more
static double plan_disc_act_bytes(const PlanInput* in) {
    const WanConfig* c = &in->wan;
    double Fp = in->T / c->patch[0], Hp = in->Hl / c->patch[1], Wp = in->Wl / c->patch[2];
    double out1 = in->disc_width1 * Fp * ((int)(Hp + 2 - 4) / 2 + 1) * ((int)(Wp + 2 - 4) / 2 + 1);
    return in->disc_heads * 2 * (4 * out1 * 1.25 + Fp * Hp * Wp * c->dim) * 4.0;
}

// the KD warm-up's pairs on the device: noise and teacher sample (fp32 latents) and the caption (fp32 umT5 rows)
static double plan_kd_pairs_bytes(const PlanInput* in) {
    const WanConfig* c = &in->wan;
    double latent = (double)c->out_dim * in->T * in->Hl * in->Wl;
    return (double)in->kd_pairs * (2 * latent + (double)c->text_len * c->text_dim) * 4.0;
}

// Stage 1 plan (stage 1), Stage 2 plan (stage 2) or the KD warm-up's plan (stage 3: a TMD student when student_extra
// > 0, else the plain Wan student of the DMD2-v baseline) of one micro-step
static void distill_plan(MemPlan* p, const PlanInput* in, int stage) {
    memset(p, 0, sizeof(*p));
    const WanConfig* c = &in->wan;
    double Pw = (double)wan_num_params(c), Ps = Pw + (double)in->student_extra, B = in->batch;
    double L = plan_tokens(in), D = c->dim, latent = (double)c->out_dim * in->T * in->Hl * in->Wl;
    int Lb = c->num_layers - in->H;
    char what[128];
    snprintf(what, sizeof(what), "%.3fB params x %g B (master, grad, AdamW m+v%s)", Ps / 1e9, plan_trainable_bytes_per_param(in), in->fp32 ? "" : ", bf16 copy");
    plan_add(p, "student (trainable)", Ps * plan_trainable_bytes_per_param(in), what);
    if (stage == 2) {
        snprintf(what, sizeof(what), "%.3fB params x %g B", Pw / 1e9, plan_trainable_bytes_per_param(in));
        plan_add(p, "fake score (trainable)", Pw * plan_trainable_bytes_per_param(in), what);
        snprintf(what, sizeof(what), "%.3fB params x %g B (working copy only)", Pw / 1e9, plan_act_bytes(in));
        plan_add(p, "teacher (frozen)", Pw * plan_act_bytes(in), what);
        snprintf(what, sizeof(what), "%.1fM params x %g B, %d heads", (double)in->disc_params / 1e6, plan_trainable_bytes_per_param(in), in->disc_heads);
        plan_add(p, "discriminator (trainable)", (double)in->disc_params * plan_trainable_bytes_per_param(in), what);
    }
    if (stage == 3) {
        snprintf(what, sizeof(what), "%d pairs: noise and teacher sample (fp32), caption (%d x %d fp32)", in->kd_pairs, c->text_len, c->text_dim);
        plan_add(p, "KD pairs", plan_kd_pairs_bytes(in), what);
    }
    // the graph kept through the step's largest backward (KD: the generator's; a plain student is the whole DiT)
    int kd_tmd = stage == 3 && in->student_extra > 0;
    double graph_blocks = stage == 1 ? Lb + in->H : stage == 2 ? Lb + (double)in->N * in->H + in->disc_top : kd_tmd ? Lb + (double)in->N * in->H : c->num_layers;
    snprintf(what, sizeof(what), "%s: %g blocks x %d samples%s", stage == 1 ? "backbone + one head evaluation" : stage == 2 ? "backbone + N x head rollout + teacher to the GAN features"
             : kd_tmd ? "backbone + N x head rollout" : "the one-step student", graph_blocks, in->batch, in->recompute ? ", inputs only (recompute)" : ", every activation");
    plan_add(p, "saved activations", B * plan_graph_bytes(in, graph_blocks), what);
    if (stage == 2 || kd_tmd) plan_add(p, "fused head inputs", B * in->N * L * D * plan_act_bytes(in), "the fusion's input m and p(y_s) of every inner step");
    plan_add(p, "block working set", B * plan_block_bytes(in) * (in->recompute ? 1 : 0) + B * plan_block_scratch_bytes(in),
             in->recompute ? "one block rebuilt in the backward + its gradient scratch" : "gradient scratch of one block");
    if (stage == 2) {
        plan_add(p, "GAN feature gradients", B * in->disc_heads * L * D * 4.0, "fp32 gradient at every feature layer");
        plan_add(p, "discriminator activations", B * plan_disc_act_bytes(in), "unpatchified features, conv outputs, GroupNorm, LeakyReLU; real and fake");
    }
    plan_add(p, "latents and noise", B * latent * 4.0 * (stage == 1 ? 12 : stage == 2 ? 16 : 8), "x, x1, y1, x_t, eps, x_hat and their gradients (fp32)");
    plan_add(p, "text context", B * (double)in->wan.text_len * (c->text_dim + 2 * D) * 4.0, "umT5 rows, the embedded context and its gradient");
}

static void plan_print(const MemPlan* p, const char* title, FILE* f) {
    fprintf(f, "memory plan: %s\n", title);
    for (int i = 0; i < p->n; i++) fprintf(f, "  %-28s %9.2f GiB  %s\n", p->item[i].name, p->item[i].bytes / PLAN_GIB, p->item[i].what);
    fprintf(f, "  %-28s %9.2f GiB\n", "total", p->total / PLAN_GIB);
}

// 0 when the plan fits `free_bytes` after `reserve_bytes` (CUDA context, cuBLAS workspace); otherwise 1 and a
// message naming the numbers and what to change
static int plan_check(const MemPlan* p, double free_bytes, double reserve_bytes, char* err, size_t errlen) {
    if (p->total + reserve_bytes <= free_bytes) return 0;
    int big = 0; for (int i = 1; i < p->n; i++) if (p->item[i].bytes > p->item[big].bytes) big = i;
    snprintf(err, errlen, "the step needs %.2f GiB (+%.2f GiB reserved) but the GPU has %.2f GiB free; the largest item is %s (%.2f GiB). "
             "Lower --batch, use the flash attention, or a smaller preset (activation recompute and sharding over GPUs are not implemented yet)",
             p->total / PLAN_GIB, reserve_bytes / PLAN_GIB, free_bytes / PLAN_GIB, p->item[big].name, p->item[big].bytes / PLAN_GIB);
    return 1;
}
