// gpu/distill_plan.h: the memory plan of one distillation step on one GPU, as plain C arithmetic (so the CPU tests
// check it against the presets, and train_tmd prints it before allocating anything).
//   Stage 1 (TM-MF): the student trainable; the guidance and the JVP's two evaluations run without gradients.
//   Stage 2 (DMD2-v): the student and the fake score trainable, the teacher frozen, the discriminator heads
//     trainable; the peak is the student update (generator graph + the frozen teacher's graph for the GAN loss).
//   KD warm-up (gpu/kd_gpu.cuh): the one-step student trainable and its generator graph; the teacher ODE pairs (noise,
//     teacher sample, caption) all on the device. The teacher that makes the pairs runs before, forward only.
// Bytes per parameter: a trainable network keeps fp32 master weights (4), fp32 gradients (4), AdamW m and v (8)
// and, in the bf16 build, a bf16 working copy (2); the Stage 2 fake score has no gradient buffer of its own (it
// borrows the student's: train_tmd.cu says why that is safe). A frozen one keeps, in the bf16 build, the bf16 copy the
// GEMMs read (2) and fp32 only for the tensors read in fp32 (4 each: gpu/frozen_weights.h, the predicate the
// allocator uses too), in the fp32 build its fp32 weights (4) (gpu/wan_gpu.cuh wan_gpu_model_init).
// Activations: the DiT arenas are counted from gpu/act_plan.h's buffer lists, the same lists gpu/wan_gpu.cuh and
// gpu/tmd_gpu.cuh carve their allocations from (act_wan_bytes_ex, act_head_eval_bytes; the allocator checks its arena
// against them), for exactly the arenas the stage's work allocates (gpu/distill_gpu.cuh: tmmf_gpu_work_init,
// gen_gpu_init, dmd_gpu_work_init, dmd_gpu_work_attach_disc). With recompute a training arena keeps the residual
// stream (every block's input, fp32) and ONE block set, which the step's other arenas borrow (with its backward
// scratch), and the rollout one flow-head evaluation, re-run per inner step in the backward; without, one set per
// block and each flow-head evaluation of the rollout its own H sets. A forward-only arena keeps two residual levels
// (and the discriminator's feature levels). Flash attention keeps no L×L scores; the naive path keeps heads·L·L fp32
// probabilities in every block set. The latents, noise and discriminator activations are this plan's estimates.
#pragma once
#include <stdio.h>
#include <stddef.h>
#include <string.h>
#include "../wan.h"
#include "act_plan.h"       // the DiT's activation buffers: the lists the allocator carves
#include "frozen_weights.h" // the tensors a frozen model keeps in fp32: what the allocator keeps
#include "disc_plan.h"      // the discriminator heads' buffers: what gpu/disc_gpu.cuh carves

#define PLAN_MAX_ITEMS 24
#define PLAN_GIB       (1024.0 * 1024.0 * 1024.0)

typedef struct {
    char name[48];
    double bytes;
    char what[128];
} PlanItem;
typedef struct {
    PlanItem item[PLAN_MAX_ITEMS];
    int n;
    double total;
} MemPlan;

typedef struct {
    WanConfig wan;        // the teacher's architecture (student and fake score share it)
    int T, Hl, Wl;        // latent grid (21 x 60 x 104 for 480p x 81 frames: 32,760 tokens with 1x2x2 patches)
    int batch;            // samples per micro-step on this GPU
    int N, H;             // inner steps of the rollout, flow-head blocks
    size_t student_extra; // parameters the student adds to the Wan layout (cpu/tmd_cpu.h student_extra_layout)
    size_t disc_params;   // parameters of all discriminator heads (cpu/disc_cpu.h disc_num_params)
    int disc_top;         // blocks of the frozen teacher the GAN features need (last feature layer + 1)
    int disc_heads;       // feature layers, one head each
    DiscConfig disc;      // the heads as built (cpu/disc_cpu.h; n_heads 0: none): their activations are counted from it
    int recompute;     // 1: per-block activation recompute (training arenas keep the blocks' inputs and one block set)
    int fuse_ffn_dim;  // the student's gated-fusion FFN width (cpu/tmd_cpu.h StudentConfig)
    int fusion_concat; // 1: the concat fusion instead of the gated one
    int baseline;      // 1: the DMD2-v baseline (a plain Wan student: no flow head, no rollout)
    int naive_attention;   // 1: the naive attention path (materialised scores)
    int fp32;              // 1: the all-fp32 build
    int kd_pairs;          // KD warm-up: teacher ODE pairs kept on the device
    double attn_workspace; // the attention's workspace in bytes (cuDNN's, as it reports it); 0: the stated bound
                           // act_attn_workspace_bound (flash attention; the naive path needs none)
} PlanInput;

static void plan_add(MemPlan* p, const char* name, double bytes, const char* what) {
    if (p->n >= PLAN_MAX_ITEMS) return;
    PlanItem* it = &p->item[p->n++];
    snprintf(it->name, sizeof(it->name), "%s", name);
    snprintf(it->what, sizeof(it->what), "%s", what);
    it->bytes = bytes;
    p->total += bytes;
}

static int plan_tokens(const PlanInput* in) {
    const WanConfig* c = &in->wan;
    return (in->T / c->patch[0]) * (in->Hl / c->patch[1]) * (in->Wl / c->patch[2]);
}
static double plan_trainable_bytes_per_param(const PlanInput* in) { return in->fp32 ? 16.0 : 18.0; }
// the fake score: master weights, AdamW m and v and (bf16) the copy; its gradients are the student's buffer
static double plan_fake_score_bytes_per_param(const PlanInput* in) { return plan_trainable_bytes_per_param(in) - 4.0; }
// a frozen Wan model of the plan's config, exactly as allocated
static double plan_frozen_bytes(const PlanInput* in) { return wan_gpu_frozen_bytes(&in->wan, in->fp32); }
static size_t plan_floatx_bytes(const PlanInput* in) { return in->fp32 ? 4 : 2; }

// one WanGpuAct of the step, in bytes, as allocated: training (planned for a backward) or forward only, running
// `blocks` blocks (0: all), keeping n_keep extra levels (forward only), borrowing the step's free block set (and
// scratch) when recompute makes one free (gpu/distill_gpu.cuh: the TM-MF unconditional pass, the critic side's plans)
static double plan_wan_arena(const PlanInput* in, int training, int blocks, int n_keep, int borrows) {
    return (double)act_wan_bytes_ex(&in->wan, in->batch, plan_tokens(in), training, in->recompute, !in->naive_attention,
                                    plan_floatx_bytes(in), blocks > 0 ? blocks : in->wan.num_layers, n_keep,
                                    borrows && in->recompute);
}
// one flow-head evaluation planned on a training backbone (its block set is the backbone's when it recomputes)
static double plan_head_eval(const PlanInput* in) {
    return (double)act_head_eval_bytes(&in->wan, in->batch, plan_tokens(in), in->fuse_ffn_dim, in->H,
                                       !in->fusion_concat, in->recompute, !in->naive_attention, plan_floatx_bytes(in));
}
// the generator's graph (gpu/distill_gpu.cuh gen_gpu_init): the TMD backbone's L − H blocks and the rollout's
// evaluations, or the plain student's whole model
static double plan_generator(const PlanInput* in, int tmd) {
    if (!tmd) return plan_wan_arena(in, 1, 0, 0, 0);
    return plan_wan_arena(in, 1, in->wan.num_layers - in->H, 0, 0) +
           act_rollout_evals(in->N, 1, in->recompute) * plan_head_eval(in);
}
// the discriminator heads' activations for real and fake features, exactly as gpu/disc_gpu.cuh allocates them
// (gpu/disc_plan.h disc_act_bytes; the multiscale head's real side borrows the fake side's scratch)
static double plan_disc_act_bytes(const PlanInput* in) {
    size_t LD = (size_t)plan_tokens(in) * in->wan.dim, xb = plan_floatx_bytes(in);
    return (double)disc_act_bytes(&in->disc, in->batch, in->T, in->Hl, in->Wl, LD, xb, 0) +
           (double)disc_act_bytes(&in->disc, in->batch, in->T, in->Hl, in->Wl, LD, xb, 1);
}

// the KD warm-up's pairs on the device: noise and teacher sample (fp32 latents) and the caption (fp32 umT5 rows)
static double plan_kd_pairs_bytes(const PlanInput* in) {
    const WanConfig* c = &in->wan;
    double latent = (double)c->out_dim * in->T * in->Hl * in->Wl;
    return (double)in->kd_pairs * (2 * latent + (double)c->text_len * c->text_dim) * 4.0;
}

// the attention's one workspace, shared by every attention call of the step (kernels/attention_cudnn.cpp): what cuDNN
// reported (in->attn_workspace), else the stated bound; none on the naive path
static void plan_attn_workspace(MemPlan* p, const PlanInput* in) {
    if (in->naive_attention) return;
    double ws = in->attn_workspace > 0 ? in->attn_workspace
                                       : (double)act_attn_workspace_bound(&in->wan, in->batch, plan_tokens(in));
    plan_add(p, "attention workspace", ws,
             in->attn_workspace > 0 ? "cuDNN's fused SDPA, the size cudnn-frontend reports for the step's shapes"
                                    : "estimate, not cuDNN's figure (fp32 dQ + 2 row vectors of the attention backward)");
}

// Stage 1 plan (stage 1), Stage 2 plan (stage 2) or the KD warm-up's plan (stage 3: a TMD student when student_extra
// > 0, else the plain Wan student of the DMD2-v baseline) of one micro-step; stage 0: the teacher's flow-matching step
// (gpu/teacher_gpu.cuh: the model trainable, one training arena, five latents per sample and the captions)
static void distill_plan(MemPlan* p, const PlanInput* in, int stage) {
    memset(p, 0, sizeof(*p));
    const WanConfig* c = &in->wan;
    double Pw = (double)wan_num_params(c), Ps = Pw + (double)in->student_extra, B = in->batch;
    double L = plan_tokens(in), D = c->dim, latent = (double)c->out_dim * in->T * in->Hl * in->Wl;
    char what[128];
    if (stage == 0) {
        snprintf(what, sizeof(what), "%.3fB params x %g B (master, grad, AdamW m+v%s)", Pw / 1e9,
                 plan_trainable_bytes_per_param(in), in->fp32 ? "" : ", bf16 copy");
        plan_add(p, "teacher (trainable)", Pw * plan_trainable_bytes_per_param(in), what);
        plan_add(p, "teacher activations", plan_wan_arena(in, 1, 0, 0, 0),
                 in->recompute ? "the whole model (training); per-block recompute"
                               : "the whole model (training); every block's activations kept");
        plan_add(p, "latents and captions", B * (latent * 5 + (double)c->text_len * c->text_dim + 1) * 4.0,
                 "x, x1, x_sigma, target, dv, the captions (fp32)");
        plan_attn_workspace(p, in);
        return;
    }
    snprintf(what, sizeof(what), "%.3fB params x %g B (master, grad, AdamW m+v%s)", Ps / 1e9,
             plan_trainable_bytes_per_param(in), in->fp32 ? "" : ", bf16 copy");
    plan_add(p, "student (trainable)", Ps * plan_trainable_bytes_per_param(in), what);
    if (stage == 2) {
        snprintf(what, sizeof(what), "%.3fB params x %g B (master, AdamW m+v%s; gradients shared with the student)",
                 Pw / 1e9, plan_fake_score_bytes_per_param(in), in->fp32 ? "" : ", bf16 copy");
        plan_add(p, "fake score (trainable)", Pw * plan_fake_score_bytes_per_param(in), what);
        if (in->fp32)
            snprintf(what, sizeof(what), "%.3fB params x 4 B (fp32 weights)", Pw / 1e9);
        else
            snprintf(what, sizeof(what), "%.3fB params x 2 B (bf16 copy) + %.2fM read in fp32 x 4 B", Pw / 1e9,
                     (double)wan_gpu_fp32_params(c) / 1e6);
        plan_add(p, "teacher (frozen)", plan_frozen_bytes(in), what);
        // the heads are fp32 in both builds (gpu/disc_gpu.cuh: weights and gradients; train_tmd.cu: AdamW m and v), no
        // copy
        snprintf(what, sizeof(what), "%.1fM params x 16 B (fp32 weights, grad, AdamW m+v), %d heads",
                 (double)in->disc_params / 1e6, in->disc_heads);
        plan_add(p, "discriminator (trainable)", (double)in->disc_params * 16.0, what);
    }
    if (stage == 3) {
        snprintf(what, sizeof(what), "%d pairs: noise and teacher sample (fp32), caption (%d x %d fp32)", in->kd_pairs,
                 c->text_len, c->text_dim);
        plan_add(p, "KD pairs", plan_kd_pairs_bytes(in), what);
    }
    // the DiT arenas the stage's work allocates (gpu/distill_gpu.cuh, gpu/kd_gpu.cuh), each as gpu/act_plan.h sizes it
    const char* mode = in->recompute ? "per-block recompute" : "every block's activations kept";
    int Lb = c->num_layers - in->H, evals = act_rollout_evals(in->N, 1, in->recompute);
    if (stage == 1) { // tmmf_gpu_work_init: the backbone (training) and the unconditional one (forward only), two head
                      // evaluations
        snprintf(what, sizeof(what),
                 "backbone (training) + unconditional backbone (forward) + 2 flow-head evaluations; %s", mode);
        plan_add(p, "student activations",
                 plan_wan_arena(in, 1, Lb, 0, 0) + plan_wan_arena(in, 0, Lb, 0, 1) + 2 * plan_head_eval(in), what);
    } else if (stage == 3) { // gen_gpu_init only: the one-step student's graph, no teacher or fake score on the device
        int kd_tmd = in->student_extra > 0;
        if (!kd_tmd)
            snprintf(what, sizeof(what), "the plain student's whole model (training); %s", mode);
        else
            snprintf(what, sizeof(what), "backbone (training) + %d flow-head evaluation%s (rollout of %d); %s", evals,
                     evals > 1 ? "s" : "", in->N, mode);
        plan_add(p, "student activations", plan_generator(in, kd_tmd), what);
        if (kd_tmd)
            plan_add(p, "rollout states", B * latent * 4.0 * (in->N + 3),
                     "y_N..y_0 and the rollout's two gradients (fp32)");
    } else {
        // gen_gpu_init: the student's graph (backbone and the rollout's head evaluations, or the baseline's whole
        // model)
        if (in->baseline)
            snprintf(what, sizeof(what), "the baseline student's whole model (training); %s", mode);
        else
            snprintf(what, sizeof(what), "backbone (training) + %d flow-head evaluation%s (rollout of %d); %s", evals,
                     evals > 1 ? "s" : "", in->N, mode);
        plan_add(p, "student activations", plan_generator(in, !in->baseline), what);
        // dmd_gpu_work_init (+ attach_disc): a_train (fake score and teacher cond, training), a_fwd (teacher uncond and
        // on real data, forward only, keeping the feature levels)
        int gan = in->disc_heads > 0;
        snprintf(what, sizeof(what), "fake score = teacher cond (training), teacher uncond%s (forward)",
                 gan ? " = on real data" : "");
        plan_add(p, "teacher + fake score activations",
                 plan_wan_arena(in, 1, 0, 0, 1) + plan_wan_arena(in, 0, 0, gan ? in->disc_heads : 0, 1), what);
        if (!in->baseline)
            plan_add(p, "rollout states", B * latent * 4.0 * (in->N + 3),
                     "y_N..y_0 and the rollout's two gradients (fp32)");
    }
    if (stage == 2 || stage == 3) // gen_gpu_init: the generator's feature and context gradients (G->dm, G->dc)
        plan_add(p, "generator feature gradients", B * (L * D + (double)c->text_len * D) * 4.0,
                 "d of the backbone's output and of the context (fp32)");
    if (stage == 2 && in->disc.n_heads > 0) { // dmd_gpu_work_attach_disc
        plan_add(p, "GAN feature gradients", (B * in->disc.n_heads * L * D + 2 * B * latent) * 4.0,
                 "fp32 gradient at every feature layer; real x_t and d x_t (fp32)");
        plan_add(p, "discriminator activations", plan_disc_act_bytes(in),
                 in->disc.kind == DISC_MULTISCALE
                     ? "multiscale: per-sample vectors + one head's maps (scratch shared by real and fake)"
                     : "strided: every map of every head, real and fake (fp32)");
    }
    plan_attn_workspace(p, in);
    plan_add(p, "latents and noise",
             B * latent * 4.0 *
                 (stage == 1   ? 12
                  : stage == 2 ? 16
                               : 8),
             "x, x1, y1, x_t, eps, x_hat and their gradients (fp32)");
    plan_add(p, "captions", B * (double)in->wan.text_len * c->text_dim * 4.0 * (stage == 3 ? 1 : 2),
             stage == 3 ? "the batch's umT5 rows (fp32)" : "the step's conditional and unconditional umT5 rows (fp32)");
}

static void plan_print(const MemPlan* p, const char* title, FILE* f) {
    fprintf(f, "memory plan: %s\n", title);
    for (int i = 0; i < p->n; i++)
        fprintf(f, "  %-34s %9.2f GiB  %s\n", p->item[i].name, p->item[i].bytes / PLAN_GIB, p->item[i].what);
    fprintf(f, "  %-34s %9.2f GiB\n", "total", p->total / PLAN_GIB);
}

// 0 when the plan fits `free_bytes` after `reserve_bytes` (CUDA context, cuBLAS workspace); otherwise 1 and a
// message naming the numbers and what to change
static int plan_check(const MemPlan* p, double free_bytes, double reserve_bytes, char* err, size_t errlen) {
    if (p->total + reserve_bytes <= free_bytes) return 0;
    int big = 0;
    for (int i = 1; i < p->n; i++)
        if (p->item[i].bytes > p->item[big].bytes) big = i;
    snprintf(err, errlen,
             "the step needs %.2f GiB (+%.2f GiB reserved) but the GPU has %.2f GiB free; the largest item is %s (%.2f "
             "GiB). "
             "Lower --batch, turn on --recompute, use the flash attention, or a smaller preset; ./train_tmd --plan "
             "--ranks K --cp K2 prints the step on K GPUs (the optimizer state is sharded over ranks today, the "
             "weights and gradients not yet)",
             p->total / PLAN_GIB, reserve_bytes / PLAN_GIB, free_bytes / PLAN_GIB, p->item[big].name,
             p->item[big].bytes / PLAN_GIB);
    return 1;
}

// --recompute: mode 1 on, 0 off, -1 auto: on exactly when the plan of this stage without it does not fit
// free_bytes − reserve_bytes. Returns the choice (what in->recompute is set to) and says why in `why`.
static int plan_choose_recompute(PlanInput* in, int stage, int mode, double free_bytes, double reserve_bytes, char* why,
                                 size_t whylen) {
    if (mode >= 0) {
        in->recompute = mode;
        snprintf(why, whylen, "per-block activation recompute %s (--recompute %s)", mode ? "on" : "off",
                 mode ? "on" : "off");
        return mode;
    }
    MemPlan without;
    in->recompute = 0;
    distill_plan(&without, in, stage);
    in->recompute = without.total + reserve_bytes > free_bytes;
    snprintf(why, whylen,
             "per-block activation recompute %s (--recompute auto: the step needs %.2f GiB without it, %.2f GiB free, "
             "%.2f reserved)",
             in->recompute ? "on" : "off", without.total / PLAN_GIB, free_bytes / PLAN_GIB, reserve_bytes / PLAN_GIB);
    return in->recompute;
}
