// train_tmd.cu: training on the GPU. With no arguments, the whole distillation of the built-in world on one GPU
// (train_tmd_pipeline: teacher, Stage 1, Stage 2, the KD-warmed DMD2-v baseline, then the Table-1-style evaluation of
// gpu/eval_gpu.cuh), each stage checkpointed in --run-dir and skipped or resumed on a rerun. One stage (--stage):
//   teacher   the teacher's flow matching on the built-in world (this file + gpu/teacher_gpu.cuh; the CPU oracle is
//             cpu/teacher_cpu.h): σ = shift_γ(u), condition dropout 0.1 to the empty caption, x_σ = (1 − σ)·x + σ·x1,
//             loss = mean (v − (x1 − x))², AdamW (β = 0.9, 0.99, weight decay 0.01, linear warm-up, clip 1.0)
//   stage1    TMD Stage 1, TM-MF (paper Algorithm 2, first loop) } the TMD student on the GPU: gpu/tmd_gpu.cuh and
//   stage2    TMD Stage 2, DMD2-v with flow-head rollout         } gpu/distill_gpu.cuh; train_tmd_distill below
//             (with --gan-weight > 0, Stage 2 and the baseline also train the Conv3D discriminator heads of
//             gpu/disc_gpu.cuh on the frozen teacher's features: the GAN terms of cpu/distill_run.h distill_stage2)
//   kd        the KD warm-up of a one-step student (paper Table 4; this file's train_tmd_kd + gpu/kd_gpu.cuh; the CPU
//             oracle is cpu/distill_run.h distill_kd): teacher ODE pairs (Philox noise, the teacher's UniPC CFG sample,
//             a training caption of the built-in world or, with --data, a context of the dataset with its negative
//             prompt as CFG's unconditional input; a Wan2.1 teacher samples as Table 7 says, CFG 5 with skip-layer
//             guidance at block 10) made once and cached, then mean (g_θ(z, T_MAX) − x_teacher)² with AdamW; the
//             baseline's plain Wan student from the teacher, or with --kd-tmd 1 the TMD student from --student
//   baseline  the DMD2-v baseline: the same Stage 2 loop with a plain Wan student started from its KD warm-up
//   (--student;
//             without it, from the teacher). The pipeline trains the paper's two (Table 4): M = 1 KD-warmed
//             (run/baseline_m1.safetensors; --kd-steps 0: no warm-up) and M = --M without KD (run/baseline_m2...)
// Every stage's steps, batch, learning rates and clipping come from one table per scale (gpu/stage_plan.h: the
// built-in world's, or Table 7's for a Wan2.1 teacher on --data), printed at start; a flag given wins.
// The model comes from --preset (random init, official init_weights) or --weights (a checkpoint: official Wan2.1 or
// diffusers names); the trained teacher is written with wan.h's writer (F32, config in __metadata__).
#include <time.h>
#include "wan.h"               // config, presets, parameter layout, safetensors weights I/O
#include "lib/flags.h"         // flag table: parser and usage from one place
#include "lib/timer.h"         // now_s: the wall clock of the logs
#include "world/world.h"       // the built-in world: clips and captions for training
#include "kernels/common.cuh"  // cudaCheck, require_gpu, named allocations
#include "gpu/wan_gpu.cuh"     // the DiT on the GPU
#include "gpu/teacher_gpu.cuh" // flow-matching step, AdamW, Wan's initialisation
#include "gpu/distill_gpu.cuh" // TMD: the student, TM-MF and DMD2-v steps (and gpu/tmd_gpu.cuh)
#include "gpu/train_state.h"   // checkpoints: every buffer and stream of a run, atomic, resumable bit for bit
#include "gpu/comm.cuh"        // the collectives: NCCL, or MPI staged through the host (mpirun -np K ./train_tmd ...)
#include "gpu/shard_gpu.cuh"   // the sharded optimizer step of a multi-rank run
#include "gpu/fsdp_gpu.cuh"    // --fsdp: the Wan models fully sharded, each unit gathered as the DiT reaches it
#include "gpu/distill_plan.h"  // the memory plan of a step, printed and checked before allocating
#include "gpu/shard_plan.h"    // the per-rank plan on many GPUs (sharded states, split sequence): --plan
#include "gpu/eval_gpu.cuh"    // the pipeline's table: every row sampled on the GPU, scored by the toy VBench
#include "gpu/train_data.h"    // (x, c) ~ p_data: the built-in world or a latent dataset (--data); Table 7's defaults
#include "gpu/kd_gpu.cuh"      // the KD warm-up: teacher ODE pairs (made once, cached) and the KD step
#include "gpu/stage_plan.h"    // the stages' defaults (world, Table 7), their configs for M, the pipeline's stages
#include <sys/stat.h>          // mkdir: the run directory

// ---------------------------------------------------------------------------------------------------------
// TMD: paper Algorithm 2 on the built-in world. Stage 1 trains the decoupled student with TM-MF; Stage 2 runs
// DMD2-v with the flow-head rollout (student every `update_every`-th iteration, the fake score otherwise).
typedef struct {
    const char* stage;
    const char* student;
    const char* resume;
    const char* out;
    int steps, batch, seed, log_every, save_every, M, N, H, update_every;
    int accum; // micro-batches per optimizer step (0: Table 7's global batch, or 1)
    int bench, lat_t, lat_h,
        lat_w; // --bench: steps on synthetic latents [T, H, W], timed, memory measured, nothing saved
    double lr, lr_fake, wd, clip_student; // the student's and the fake score's learning rates
    double gan_weight, disc_lr;
    int disc_width;   // Stage 2's GAN terms (gan_weight 0: no discriminator at all)
    double cfg_dmd;   // the teacher's guidance in the VSD gradient (-1: gpu/stage_plan.h stage_cfg_dmd)
    int disc_head;    // --disc-head: -1 auto, DISC_STRIDED, DISC_MULTISCALE
    const char* data; // a latent dataset (lib/latent_data.h); NULL: the built-in world
    int cp;           // --cp: context parallelism, ranks sharing each sample (1: none)
    int fsdp;         // --fsdp: every Wan model of the step fully sharded (gpu/fsdp_gpu.cuh; distill_fsdp_init below)
} TmdRun;

static int recompute_mode =
    -1; // --recompute: -1 auto, 0 off, 1 on (gpu/distill_plan.h plan_choose_recompute; sets wan_gpu_recompute)

// the memory plan of one step of `stage` (distill_plan's numbering), printed and checked against the free device
// memory before anything is allocated; --recompute decides the activations' mode (auto: on only when it must).
// Returns 0, or 1 with the refusal in err.
static int plan_step(PlanInput* pin, int stage, const char* title, int verbose, char* err, size_t errlen) {
#ifdef ENABLE_FP32
    pin->fp32 = 1;
#endif
    // the attention workspace as cuDNN reports it for this step's shapes (allocated by the query, so it is counted
    // back into the free memory); 0 without cuDNN: the plan's stated bound
    if (pin->attn_workspace == 0)
        pin->attn_workspace = (double)wan_gpu_attn_workspace(&pin->wan, pin->batch, plan_tokens(pin));
    size_t free_b = 0, total_b = 0;
    cudaCheck(cudaMemGetInfo(&free_b, &total_b));
    free_b += wan_gpu_attn_workspace_held();
    char why[256];
    wan_gpu_recompute =
        plan_choose_recompute(pin, stage, recompute_mode, (double)free_b, 1.0 * PLAN_GIB, why, sizeof(why));
    MemPlan plan;
    distill_plan(&plan, pin, stage);
    if (verbose) {
        printf("%s\n", why);
        plan_print(&plan, title, stdout);
    }
    return plan_check(&plan, (double)free_b, 1.0 * PLAN_GIB, err, errlen);
}

// --fsdp: the same, per rank (gpu/shard_plan.h, the arithmetic of --plan: every model's states at their shard size
// over K ranks, the shared gathered units, the activations at L/K2 tokens with --cp K2, the all-to-all and NCCL
// buffers), checked against this rank's free memory. The recompute choice is made on the whole-sample single-GPU
// step (on whenever that step would not fit: the conservative side). Returns 0, or 1 with the refusal in err; total:
// the plan's bytes.
static int plan_step_sharded(PlanInput* pin, int stage, int K, int K2, const char* title, int verbose, double* total,
                             char* err, size_t errlen) {
#ifdef ENABLE_FP32
    pin->fp32 = 1;
#endif
    if (pin->attn_workspace == 0)
        pin->attn_workspace = (double)wan_gpu_attn_workspace(&pin->wan, pin->batch, plan_tokens(pin) / K2);
    size_t free_b = 0, total_b = 0;
    cudaCheck(cudaMemGetInfo(&free_b, &total_b));
    free_b += wan_gpu_attn_workspace_held();
    char why[256];
    wan_gpu_recompute =
        plan_choose_recompute(pin, stage, recompute_mode, (double)free_b, 1.0 * PLAN_GIB, why, sizeof(why));
    ShardPlanInput sp = {K, K2, (double)free_b};
    MemPlan plan;
    if (shard_plan(&plan, pin, stage, &sp, err, errlen)) return 1;
    *total = plan.total;
    if (verbose) {
        printf("%s\n", why);
        plan_print(&plan, title, stdout);
    }
    return shard_plan_check(&plan, &sp, err, errlen);
}

// g holds the gradient summed over the data-parallel ranks; gscale = 1/ranks makes it their mean (1 on one GPU)
static void tmd_adamw_(float* p, floatX* copy, float* m, float* v, float* g, size_t n, double lr, double wd,
                       double clip, long step, double gscale, double* scratch, double* gnorm, cudaStream_t s) {
    adamw_grad_norm_squared(scratch, scratch + 1, g, n, s);
    double n2;
    cudaCheck(cudaMemcpy(&n2, scratch, sizeof(double), cudaMemcpyDeviceToHost));
    *gnorm = sqrt(n2) * gscale;
    double k = clip > 0 ? fmin(1.0, clip / (*gnorm + 1e-6)) : 1.0; // per-network clipping (FastGen: the student at 10)
    k *= gscale;
#ifdef ENABLE_FP32
    copy = NULL;
#endif
    adamw_update(p, copy, m, v, g, n, (float)lr, 0.9f, 0.99f, 1e-8f, (float)wd, (float)k, step,
                 s); // Table 7: betas 0.9, 0.99
}

// one model's optimizer step: on one rank the plain step on the whole buffer (g as it is); on several, g is this rank's
// gradient and the step is sharded (gpu/shard_gpu.cuh: reduce-scatter, the norm from the slices, AdamW on 1/K, gathers)
static void train_update_(Comm* dp, ShardOpt* so, float* p, floatX* x, float* m, float* v, float* g, size_t n,
                          double lr, double wd, double clip, long step, double gscale, double* scratch, double* gnorm,
                          cudaStream_t s) {
    if (dp->world == 1) {
        tmd_adamw_(p, x, m, v, g, n, lr, wd, clip, step, gscale, scratch, gnorm, s);
        return;
    }
    shard_opt_step(so, dp, p, x, g, lr, wd, clip, step, gscale, scratch, gnorm, s);
}

// a data-parallel rank's share of the global batch's noise: the step's K·B samples take the stream positions
// [offset, offset + K·nB) of `seed`, data rank r's B samples [nB] from offset + r·nB (kernels/random.cuh: an element's
// value depends only on its position), and the offset moves past the whole batch; one rank: the plain normal_fill.
// (rank, world): the data-parallel ones (with --cp, the group's index and the group count: a group's ranks draw alike)
static void rank_normal_fill(float* out, size_t nB, uint64_t seed, uint64_t* offset, int rank, int world,
                             cudaStream_t s) {
    normal_fill(out, nB, seed, *offset + (uint64_t)rank * nB, 0.f, 1.f, s);
    *offset += (uint64_t)world * nB;
}

// an error that one rank can meet alone (a file, the device's memory): on one rank the message and rc as always; with
// several, the message and every rank taken down with it (comm_abort: MPI_Abort), never the others left waiting in
// the next collective
static int distill_fail(Comm* dp, const char* msg, int rc) {
    if (dp->world > 1) comm_abort(dp, msg);
    fprintf(stderr, "error: %s\n", msg);
    return rc;
}

// --fsdp: one Wan model of the step held fully sharded (ZeRO-3): this rank's slices (lib/shard.h's layout over the
// ranks, 64-element aligned) of the fp32 master weights, their floatX copy and, trainable, the summed gradient and the
// AdamW moments, a ShardOpt over them (shard_opt_step with grads and params NULL steps the slices as they are: the
// norm from the slices' partial sums, AdamW on 1/K), and the unit provider (gpu/fsdp_gpu.cuh) the DiT's loops gather
// each unit through (the model's w.units). No rank holds a whole model on the device; the host keeps the
// consolidated copies a checkpoint holds (as without --fsdp). The frozen teacher is sharded bf16-only: its floatX
// slices and, as a layout of their own, the slices of the tensors the GPU reads in fp32 (gpu/frozen_weights.h
// shard_layout_wan_fp32: norms, modulation, time projection), 2 bytes a parameter plus 4 for each fp32-read one. The
// step's models gather into ONE shared pair of unit buffers (gpu/fsdp_gpu.cuh FsdpBuffers, DistillRun.fb).
typedef struct {
    ShardOpt o;      // L, master, master_x, g, m, v (aliased 0: on one rank too, the slices are this struct's buffers)
    ShardLayout L32; // the frozen teacher: its fp32-read tensors' layout (o.L is the whole model's; o's buffers unused)
    float* z32;      // [L32.shard_numel] the frozen teacher's fp32-read slices
    floatX* zx;      // [o.L.shard_numel] the frozen teacher's floatX slices
    FsdpWan f;       // the provider over them
    FsdpHeld extras; // the TMD student's flow-head extras, held whole for the step (gpu/fsdp_gpu.cuh); else unused
    int g_borrowed;  // o.g is another model's slice buffer (the fake score's in the student's, as without --fsdp)
} FsdpModel;

// a model as slices of host [numel] (the consolidated weights; hm, hv its
// moments, trainable only) over dp's ranks: each rank copies its slices of the host buffers (shard_scatter_host: the
// padding zero), the floatX copy cast from the master slices (the same cast as a whole model's); g_borrow: the
// gradient slices in another model's buffer (at least L.shard_numel floats), NULL: owned. extra: the TMD student's
// elements after the Wan layout (its flow-head unit, held: FsdpHeld). Wire it into a model with fsdp_model_wan_ or
// tmd_gpu_student_view_sharded
// the model's layouts before anything is allocated (the shared buffers are sized from every model's): the whole
// layout over dp's ranks (64-element aligned), and for a frozen model its fp32-read tensors' layout
static void fsdp_model_layout_(FsdpModel* z, Comm* dp, const WanConfig* c, size_t extra, int trainable) {
    memset(z, 0, sizeof(*z));
    char err[256];
    if (shard_layout_wan(&z->o.L, c, extra, dp->world, 64, err, sizeof(err)) ||
        (!trainable && shard_layout_wan_fp32(&z->L32, &z->o.L, c, err, sizeof(err))))
        comm_abort(dp, err);
}

// the frozen teacher's slices from host [numel]: the fp32-read tensors packed (wan_fp32_pack_host) and sliced by L32,
// the floatX slices cast on the device from the fp32 slices of the whole layout (the same cast as a whole model's)
static void fsdp_model_frozen_(FsdpModel* z, Comm* dp, const WanConfig* c, const float* host, const char* name,
                               cudaStream_t s, FsdpBuffers* B) {
    const ShardLayout* L = &z->o.L;
    size_t ns = L->shard_numel, n32 = z->L32.shard_numel, big = ns > n32 ? ns : n32;
    float* h = (float*)malloc(sizeof(float) * big);
    float* packed = (float*)malloc(sizeof(float) * z->L32.numel);
    if (!h || !packed) comm_abort(dp, "--fsdp: out of host memory for the teacher's slices");
    char what[128];
    wan_fp32_pack_host(c, host, packed);
    shard_scatter_host(&z->L32, dp->rank, packed, h, sizeof(float));
    snprintf(what, sizeof(what), "%s fp32-read tensors (fp32 slices)", name);
    z->z32 = (float*)cuda_malloc_named(sizeof(float) * n32, what, "more ranks");
    cudaCheck(cudaMemcpy(z->z32, h, sizeof(float) * n32, cudaMemcpyHostToDevice));
    shard_scatter_host(L, dp->rank, host, h, sizeof(float));
    float* d = (float*)cuda_malloc_named(sizeof(float) * ns, "the teacher's fp32 slices (while casting)", "more ranks");
    cudaCheck(cudaMemcpy(d, h, sizeof(float) * ns, cudaMemcpyHostToDevice));
#ifdef ENABLE_FP32
    z->zx = d; // the fp32 build: the copy is fp32 itself
#else
    snprintf(what, sizeof(what), "%s weight copy (%s slices)", name, FLOATX_NAME);
    z->zx = (floatX*)cuda_malloc_named(sizeof(floatX) * ns, what, "more ranks");
    wan_gpu_cast_to_x(z->zx, d, ns, s);
    cudaCheck(cudaStreamSynchronize(s));
    cudaCheck(cudaFree(d));
#endif
    free(h);
    free(packed);
    fsdp_wan_init_shared(&z->f, dp, L, &z->L32, c, z->z32, z->zx, NULL, s, B);
    printf("[memory] %-12s fully sharded over %d rank%s, %s only: %zu of %zu elements a rank (%zu units) + %zu of %zu "
           "fp32-read, %.1f MiB of slices\n",
           name, dp->world, dp->world > 1 ? "s" : "", FLOATX_NAME, ns, L->numel, (size_t)L->n_units, n32,
           z->L32.numel, (sizeof(floatX) * ns + sizeof(float) * n32) / 1048576.0);
}

static void fsdp_model_init_(FsdpModel* z, Comm* dp, const WanConfig* c, const float* host, const float* hm,
                             const float* hv, int trainable, float* g_borrow, const char* name, cudaStream_t s,
                             FsdpBuffers* B) {
    if (!trainable) {
        fsdp_model_frozen_(z, dp, c, host, name, s, B);
        return;
    }
    char what[128];
    ShardLayout* L = &z->o.L;
    size_t ns = L->shard_numel, bytes = sizeof(float) * ns;
    float* h = (float*)malloc(bytes);
    if (!h) comm_abort(dp, "--fsdp: out of host memory for a model's slices");
    const float* src[3] = {host, hm, hv};
    float** dst[3] = {&z->o.master, &z->o.m, &z->o.v};
    const char* kind[3] = {"master weights (fp32 slices)", "AdamW m (slices)", "AdamW v (slices)"};
    for (int b = 0; b < (trainable ? 3 : 1); b++) {
        snprintf(what, sizeof(what), "%s %s", name, kind[b]);
        *dst[b] = (float*)cuda_malloc_named(bytes, what, "more ranks");
        shard_scatter_host(L, dp->rank, src[b], h, sizeof(float));
        cudaCheck(cudaMemcpy(*dst[b], h, bytes, cudaMemcpyHostToDevice));
    }
    free(h);
#ifndef ENABLE_FP32
    snprintf(what, sizeof(what), "%s weight copy (%s slices)", name, FLOATX_NAME);
    z->o.master_x = (floatX*)cuda_malloc_named(sizeof(floatX) * ns, what, "more ranks");
    wan_gpu_cast_to_x(z->o.master_x, z->o.master, ns, s);
#endif
    if (trainable && g_borrow) {
        z->o.g = g_borrow;
        z->g_borrowed = 1;
    } else if (trainable) {
        snprintf(what, sizeof(what), "%s gradients (fp32 slices)", name);
        z->o.g = (float*)cuda_malloc_named(bytes, what, "more ranks");
        cudaCheck(cudaMemset(z->o.g, 0, bytes));
    }
#ifdef ENABLE_FP32
    const floatX* xs = z->o.master;
#else
    const floatX* xs = z->o.master_x;
#endif
    fsdp_wan_init_shared(&z->f, dp, L, NULL, c, z->o.master, xs, z->o.g, s, B);
    if (L->n_units > c->num_layers + 2) fsdp_held_init(&z->extras, &z->f, L->n_units - 1); // the student's extras
    printf("[memory] %-12s fully sharded over %d rank%s: %zu of %zu elements a rank (%zu units), %.1f MiB of slices\n",
           name, dp->world, dp->world > 1 ? "s" : "", ns, L->numel, (size_t)L->n_units,
           (bytes * (g_borrow ? 3 : 4) + (sizeof(floatX) == 2 ? sizeof(floatX) * ns : 0)) / 1048576.0);
}

// a plain Wan model m over the sharded z: its w asks z's provider for every unit; m->dP stays all NULL (its address
// marks the model trainable; the provider hands out the gradient views)
static void fsdp_model_wan_(FsdpModel* z, WanGpuModel* m, const WanConfig* c, const char* name) {
    memset(m, 0, sizeof(*m));
    m->name = name;
    m->n = z->o.L.numel;
    m->w.cfg = *c;
    m->w.units = &z->f.hook;
}

// the gradients of a sharded model to zero before its step: the summed slices (its backward adds each unit's into
// them) and the held extras' buffer
static void fsdp_model_zero_grad_(FsdpModel* z, cudaStream_t s) {
    cudaCheck(cudaMemsetAsync(z->o.g, 0, sizeof(float) * z->o.L.shard_numel, s));
    if (z->extras.w) fsdp_held_zero_grad(&z->extras);
}

// one optimizer step of a sharded model on the summed gradient's slices its backward reduce-scattered (the held
// extras' reduce-scattered here), with train_update_'s arithmetic (gpu/shard_gpu.cuh shard_opt_step: the norm from the
// slices' partial sums, all-reduced, AdamW on the slices), then its gathers released and the extras gathered again
// (the slices changed)
static void fsdp_model_step_(Comm* dp, FsdpModel* z, double lr, double wd, double clip, long step, double gscale,
                             double* scratch, double* gnorm, cudaStream_t s) {
    if (z->extras.w) fsdp_held_reduce(&z->extras);
    shard_opt_step(&z->o, dp, NULL, NULL, NULL, lr, wd, clip, step, gscale, scratch, gnorm, s);
    fsdp_wan_release(&z->f);
    if (z->extras.w) fsdp_held_gather(&z->extras);
}

// the checkpoint's host copies of a sharded model (weights, and trainable its moments) consolidated on rank 0 (every
// rank calls it: collectives)
static void fsdp_model_consolidate_(FsdpModel* z, float* host, float* hm, float* hv) {
    fsdp_wan_consolidate(&z->f, z->o.master, host);
    if (z->o.m) fsdp_wan_consolidate(&z->f, z->o.m, hm);
    if (z->o.v) fsdp_wan_consolidate(&z->f, z->o.v, hv);
}

static void fsdp_model_free_(FsdpModel* z) {
    if (z->z32) { // the frozen teacher
        fsdp_wan_free(&z->f);
        cudaCheck(cudaFree(z->z32));
        cudaCheck(cudaFree(z->zx));
        memset(z, 0, sizeof(*z));
        return;
    }
    if (!z->o.master) return;
    fsdp_held_free(&z->extras);
    fsdp_wan_free(&z->f);
    if (z->g_borrowed) z->o.g = NULL;
    shard_opt_free(&z->o);
    memset(z, 0, sizeof(*z));
}

// One run of Stage 1, Stage 2 or the DMD2-v baseline (train_tmd_distill below): its settings, the host copies of what
// a checkpoint holds, the models on the device, the counters and streams, the batch and work buffers, the log's sums.
// distill_setup fills it, the steps of the loop read and advance it, distill_teardown frees it.
typedef struct { // the trained student, whichever it is: the TMD student or the baseline's plain Wan model
    float *params, *grads, *opt_m, *opt_v;
    floatX* params_x;
    long* step;
} TrainedView;
typedef struct {
    const TmdRun* o;
    const WanConfig* c;
    char err[ST_ERRLEN];
    int baseline, stage2, stage_id; // stage_id: 1 Stage 1, 2 Stage 2, 3 the baseline (the streams' salt)
    Comm dp;                        // every rank (one without mpirun): the gradients' all-reduce, sharding, aborts
    Comm cpg;                       // --cp: the ranks sharing each sample (distill_cp_split; unused with cp 1)
    int drank, dworld;              // data parallelism: this rank's group and the groups (dp's rank, world at cp 1)
    TrainData td;                   // x, c ~ p_data: the world's stream or --data's latents, this rank's share
    StudentConfig sc;
    size_t nw, ns, nd;  // parameters: the teacher's (= the fake score's), the student's, the discriminator's
    size_t numel, nctx; // floats of one latent, of one context
    int B, A;           // the micro-batch, micro-batches per optimizer step
    int gan;            // Stage 2's GAN terms: the discriminator of dcfg
    DiscConfig dcfg;
    double gscale, mscale; // 1/ranks (the all-reduced gradient's mean), 1/(B·A) (the step's mean)
    float *hs, *hm, *hv;   // the host copies a checkpoint holds: the student, its AdamW moments,
    float *hf, *hfm, *hfv; // the fake score, its moments,
    float *hd, *hdm, *hdv; // the discriminator, its moments
    TsMeta want;           // the settings a checkpoint is written with and resumed against
    TsBuffer bufs[9];
    int nbufs;
    uint64_t step, s_steps, f_steps, d_steps; // iterations, and the optimizer steps of each network
    uint64_t rng_seed, rng_counter, philox_seed, philox_offset, data; // the streams' states (data: the data stream's)
    double plan_total; // the plan's bytes (--bench compares what the device reports against it)
    TmdGpuStudent S;   // the trained student: the TMD student,
    WanGpuModel Pm;    // or the baseline's plain Wan model;
    TrainedView V;     // V views whichever it is
    WanGpuModel T, F;  // Stage 2: the frozen teacher and the fake score
    DiscGpuModel D;    // the discriminator (with the GAN terms) and its AdamW moments dm, dv
    float *dm, *dv;
    long d_step;
    ShardOpt so_v, so_f, so_d; // several ranks: each model's optimizer sharded over them
    int fsdp;                  // --fsdp: the Wan models below held as slices (zv, zf, zt), not whole
    FsdpModel zv, zf, zt;      // --fsdp: the student's, the fake score's and the teacher's slices and providers
    FsdpBuffers fb;            // --fsdp: the one pair of gathered units and unit gradients they share
    Rng rng;                   // the host stream of the draws (t_i, (s, r), t)
    float *clips, *ctx;        // one micro-batch on the host
    float *x_d, *ctx_d, *x1, *y1, *eps;
    double* scratch;
    Table7 t7;
    int has_t7;
    TmmfConfig tcf;
    DmdConfig dcf;
    float* neg_d;   // the unconditional context: the negative prompt's (--data), else zeros
    TmmfGpuWork tw; // Stage 1's work buffers, or Stage 2's generator and DMD2-v buffers
    GenGpu G;
    DmdGpuWork dw;
    cudaStream_t s0;
    double t0, acc_a, acc_b, acc_g, acc_d, gn; // the log: interval sums, the student's last gradient norm
    int na, nb;
    long skipped;
    double tb, bench_ms[2][64], bench_total_ms; // --bench: step times after the first, [critic, student]
    int nbench[2];
} DistillRun;

// one optimizer step's loss sums over its micro-batches (Stage 1: loss, mse; Stage 2: vsd, gan_g or dsm, gan_d)
typedef struct {
    int finite;
    double la, lb, lg, ld;
} StepSums;

// setup, --cp K2: the world's ranks in groups of K2 consecutive ones (lib/cp.h cp_groups_init), each group sharing
// its samples' tokens (gpu/cp_gpu.cuh); the groups are the data-parallel ranks: the data, the noise and the draws are
// split over them (drank, dworld), so a group's ranks draw the same samples. Without --cp, every rank is its own
// group. 0, or 2 with the error printed (every rank)
static int distill_cp_split(DistillRun* run) {
    int K2 = run->o->cp > 1 ? run->o->cp : 1, K = run->dp.world;
    CpGroups g; // lib/cp.h: rank r at place r mod K2 of group r / K2
    if (cp_groups_init(&g, K, K2, run->dp.rank, run->err, sizeof(run->err)))
        return distill_fail(&run->dp, run->err, 2);
    run->drank = g.group;
    run->dworld = g.groups;
    if (K2 == 1) return 0;
    comm_split(&run->dp, &run->cpg, g.group, g.place);
    if (run->dp.rank == 0)
        printf("context parallelism: %d ranks, %d group%s of %d sharing each sample's tokens (the data split over %d "
               "data-parallel rank%s)\n",
               K, run->dworld, run->dworld > 1 ? "s" : "", K2, run->dworld, run->dworld > 1 ? "s" : "");
    return 0;
}

// setup, --cp: the tokens and the heads must split evenly over the group (lib/cp.h cp_layout_init), refused before
// anything is allocated. 0, or 2 with the error printed
static int distill_cp_check(DistillRun* run) {
    const WanConfig* c = run->c;
    const TrainData* td = &run->td;
    if (run->o->cp <= 1) return 0;
    CpLayout lay;
    int L = (td->T / c->patch[0]) * (td->H / c->patch[1]) * (td->W / c->patch[2]);
    if (cp_layout_init(&lay, run->o->cp, run->cpg.rank, run->B, L, c->num_heads, wan_head_dim(c), run->err,
                       sizeof(run->err)))
        return distill_fail(&run->dp, run->err, 2);
    return 0;
}

// setup, the stage and its sizes: the data (this rank's share), the student's and the discriminator's configs, the
// micro-batch and the gradient accumulation. 0, or 2 with the error printed
static int distill_config(DistillRun* run, const TmdRun* o, const WanConfig* c) {
    char* err = run->err;
    run->o = o;
    run->c = c;
    run->baseline = !strcmp(o->stage, "baseline");
    run->stage2 = run->baseline || !strcmp(o->stage, "stage2");
    run->stage_id = run->baseline ? 3 : run->stage2 ? 2 : 1;
    run->fsdp = o->fsdp;
    comm_init(&run->dp, NULL, NULL); // data parallelism: one rank without mpirun
    if (run->dp.rank > 0 && !freopen("/dev/null", "w", stdout))
        comm_abort(&run->dp, "cannot silence stdout"); // rank 0 logs; every rank's stderr stays
    if (distill_cp_split(run)) return 2;
    if (o->bench
            ? train_data_open_synthetic(&run->td, c, o->lat_t, o->lat_h, o->lat_w, (uint64_t)o->seed, err)
            : train_data_open(&run->td, o->data, c, (uint64_t)o->seed, run->stage_id, run->drank, run->dworld, err))
        return distill_fail(&run->dp, err, 2);
    StudentConfig* sc = &run->sc;
    sc->wan = *c;
    sc->head_blocks = o->H;
    sc->fusion = FUSION_GATED;
    sc->fuse_ffn_dim = c->ffn_dim;
    if (o->H < 1 || o->H >= c->num_layers) {
        fprintf(stderr, "error: --head-blocks %d: expected 1 .. %d\n", o->H, c->num_layers - 1);
        return 2;
    }
    if (o->batch > TMD_MAX_BATCH) {
        fprintf(stderr, "error: --batch %d: at most %d\n", o->batch, TMD_MAX_BATCH);
        return 2;
    }
    run->nw = wan_num_params(c);
    run->ns = run->baseline ? run->nw : student_num_params(sc);
    run->numel = run->td.numel;
    run->nctx = run->td.nctx;
    int B = run->B = o->batch;
    // the discriminator heads (Stage 2 with gan_weight > 0) on the preset's feature layers (disc_layers_for), PyTorch's
    // default init: FastGen's multiscale_down_mlp_large (cpu/disc_cpu.h; auto: where the latent grid has all five of
    // its pooling scales, i.e. Wan scale) or cpu/distill_run.h's strided Conv3D stack, widths W/2, W/2, W, W, MLP
    // hidden W
    int gan = run->gan = run->stage2 && o->gan_weight > 0;
    const TrainData* td = &run->td;
    int ms = o->disc_head == DISC_MULTISCALE || (o->disc_head < 0 && disc_multiscale_fits(td->T, td->H, td->W));
    if (gan && ms)
        run->dcfg = disc_config_multiscale(c, 1024, td->T, td->H, td->W);
    else if (gan)
        run->dcfg = disc_config(c, o->disc_width / 2, o->disc_width / 2, o->disc_width, o->disc_width, o->disc_width);
    run->nd = gan ? disc_num_params(&run->dcfg) : 0;
    if (distill_cp_check(run)) return 2;
    // the world's all-reduce sums every rank's gradient: a CP group's ranks hold parts of one gradient (their tokens'),
    // so 1/dworld makes the sum the mean over the data-parallel groups (1/ranks without --cp)
    run->gscale = 1.0 / run->dworld;
    // gradient accumulation: A micro-batches of B per optimizer step; 0 asks for Table 7's global batch over the ranks
    Table7 t7a;
    int A = o->accum;
    if (A < 1) A = table7_for(c, &t7a) ? (t7a.global_batch + run->dworld * B - 1) / (run->dworld * B) : 1;
    run->A = A;
    run->mscale = 1.0 / ((double)B * A);
    if (A > 1 && run->dp.rank == 0)
        printf("gradient accumulation: %d micro-batches of %d per optimizer step%s: a batch of %d per step\n", A, B,
               run->dworld > 1 ? " on each data-parallel rank" : "", A * B * run->dworld);
    return 0;
}

// setup, the host copies: the student starts as the teacher (student_init) or, for Stage 2, from Stage 1's checkpoint
// (--student, distill_load_student), the fake score as the teacher, the discriminator from its seed; what a checkpoint
// of this run holds (its settings, its buffers) and every stream's seed: (seed, stage, rank), rank 0's a single GPU's
static void distill_host_init(DistillRun* run, float* teacher) {
    const TmdRun* o = run->o;
    const WanConfig* c = run->c;
    size_t ns = run->ns, nw = run->nw, nd = run->nd;
    run->hs = (float*)malloc(sizeof(float) * ns);
    run->hm = (float*)calloc(ns, sizeof(float));
    run->hv = (float*)calloc(ns, sizeof(float));
    run->hf = (float*)malloc(sizeof(float) * nw);
    run->hfm = (float*)calloc(nw, sizeof(float));
    run->hfv = (float*)calloc(nw, sizeof(float));
    if (run->baseline)
        memcpy(run->hs, teacher, sizeof(float) * nw); // the baseline's student starts as the teacher
    else
        student_init(&run->sc, run->hs, teacher, (uint64_t)o->seed);
    memcpy(run->hf, teacher, sizeof(float) * nw); // the fake score starts as the teacher
    if (run->gan) {
        run->hd = (float*)malloc(sizeof(float) * nd);
        run->hdm = (float*)calloc(nd, sizeof(float));
        run->hdv = (float*)calloc(nd, sizeof(float));
        disc_init(&run->dcfg, run->hd, (uint64_t)o->seed + 99); // cpu/distill_run.h's seed
    }
    TsMeta* want = &run->want;
    ts_meta_set(want, "stage", o->stage);
    ts_meta_set(want, "config", c->name);
    if (o->data) {
        char dd[256];
        train_data_describe(&run->td, dd, sizeof(dd));
        ts_meta_set(want, "data", dd);
    }
    ts_meta_u64(want, "M", o->M);
    ts_meta_u64(want, "N", o->N);
    ts_meta_u64(want, "head_blocks", o->H);
    ts_meta_u64(want, "batch",
                (uint64_t)run->B * run->dworld); // the global batch (gpu/train_state.h ts_check_layout)
    if (run->A > 1)
        ts_meta_u64(want, "accum", (uint64_t)run->A); // (absent: 1, as checkpoints written before accumulation)
    if (run->stage2) {
        char gw[32];
        snprintf(gw, sizeof(gw), "%.17g", o->gan_weight);
        ts_meta_set(want, "gan_weight", gw);
        ts_meta_u64(want, "disc_width", run->gan ? (uint64_t)o->disc_width : 0);
    }
    TsBuffer bufs[9] = {
        {"student.params", run->hs, ns},    {"student.adam_m", run->hm, ns},     {"student.adam_v", run->hv, ns},
        {"fake_score.params", run->hf, nw}, {"fake_score.adam_m", run->hfm, nw}, {"fake_score.adam_v", run->hfv, nw},
        {"disc.params", run->hd, nd},       {"disc.adam_m", run->hdm, nd},       {"disc.adam_v", run->hdv, nd}};
    memcpy(run->bufs, bufs, sizeof(bufs));
    run->nbufs = run->gan ? 9 : run->stage2 ? 6 : 3;
    // every stream is seeded by (seed, stage) and is the global batch's, the same on every rank (each keeps its own
    // samples: train_data_next, rank_normal_fill, distill_draw_batch), so K ranks of batch B are one rank of batch K·B
    // and the checkpoint holds one set of streams
    run->step = run->s_steps = run->f_steps = run->d_steps = 0;
    run->rng_seed = (uint64_t)o->seed * 31 + run->stage_id;
    run->rng_counter = 0;
    run->philox_seed = (uint64_t)o->seed * 1000003 + run->stage_id;
    run->philox_offset = run->data = 0;
}

// setup, Stage 2's student (and the baseline's KD-warmed one): the weights of the Stage 1 (or KD) checkpoint --student
static int distill_load_student(DistillRun* run) {
    const TmdRun* o = run->o;
    char* err = run->err;
    if (run->stage2 && !o->resume && !o->bench && (!run->baseline || o->student)) {
        if (!o->student) {
            fprintf(stderr,
                    "error: --stage stage2 needs --student FILE (the checkpoint ./train_tmd --stage stage1 wrote)\n");
            return 2;
        }
        TsMeta m1;
        TsBuffer b1[1] = {{"student.params", run->hs, run->ns}};
        if (ts_load(o->student, b1, 1, &m1, err)) return distill_fail(&run->dp, err, 2);
        const char* from = ts_meta_get(&m1, "stage");
        printf("student from %s (%s, step %s)\n", o->student,
               from && !strncmp(from, "kd", 2) ? "KD warm-up" : "Stage 1",
               ts_meta_get(&m1, "step") ? ts_meta_get(&m1, "step") : "?");
    }
    return 0;
}

// setup, --resume: every buffer, counter and stream of the checkpoint, its settings checked against this run's
static int distill_resume(DistillRun* run) {
    const TmdRun* o = run->o;
    char* err = run->err;
    if (o->resume) {
        TsMeta have;
        uint64_t ranks_before = 1; // the rank count that wrote it (absent: 1)
        if (ts_load(o->resume, run->bufs, run->nbufs, &have, err) ||
            ts_check_layout(&have, run->dworld, run->B, o->resume, err) ||
            ts_check_settings(&have, &run->want, o->resume, err) ||
            ts_meta_get_u64(&have, "step", &run->step, o->resume, err) ||
            ts_meta_get_u64(&have, "student_steps", &run->s_steps, o->resume, err) ||
            ts_meta_get_u64(&have, "fake_steps", &run->f_steps, o->resume, err) ||
            ts_meta_get_u64(&have, "rng_seed", &run->rng_seed, o->resume, err) ||
            ts_meta_get_u64(&have, "rng_counter", &run->rng_counter, o->resume, err) ||
            ts_meta_get_u64(&have, "philox_seed", &run->philox_seed, o->resume, err) ||
            ts_meta_get_u64(&have, "philox_offset", &run->philox_offset, o->resume, err) ||
            ts_meta_get_u64(&have, "data_stream", &run->data, o->resume, err) ||
            (run->gan && ts_meta_get_u64(&have, "disc_steps", &run->d_steps, o->resume, err)) ||
            (ts_meta_get(&have, "ranks") && ts_meta_get_u64(&have, "ranks", &ranks_before, o->resume, err)))
            return distill_fail(&run->dp, err, 2);
        const char* ha = ts_meta_get(&have, "accum"); // absent: 1 (want names it only when > 1)
        if ((ha ? strtoull(ha, NULL, 10) : 1) != (unsigned long long)run->A) {
            fprintf(stderr,
                    "error: %s: this run has accum = %d but the checkpoint was written with %s; resume with the same "
                    "--accum, or start a new run\n",
                    o->resume, run->A, ha ? ha : "1");
            return 2;
        }
        train_data_set_state(&run->td, run->data);
        printf("resumed %s at step %llu", o->resume, (unsigned long long)run->step);
        if (ranks_before != (uint64_t)run->dp.world)
            printf(" (written by %llu rank%s, re-sharded over %d)", (unsigned long long)ranks_before,
                   ranks_before > 1 ? "s" : "", run->dp.world);
        printf("\n");
    }
    return 0;
}

// setup, the memory plan of the step before anything is allocated (the DiT arenas exactly as gpu/wan_gpu.cuh and
// gpu/tmd_gpu.cuh allocate them, with or without per-block recompute), refused with the numbers when the device cannot
// hold it (1)
static int distill_plan_memory(DistillRun* run) {
    const TmdRun* o = run->o;
    const WanConfig* c = run->c;
    const TrainData* td = &run->td;
    int stage = run->stage2 ? 2 : 1;
    PlanInput pin = stage_plan_input(c, stage, td->T, td->H, td->W, run->B, o->N, o->H, run->baseline,
                                     run->gan ? &run->dcfg : NULL, 0, !wan_gpu_use_flash(c));
    char title[200];
    if (o->fsdp) { // every model sharded over the ranks (and the tokens over --cp): the per-rank plan
        int K2 = o->cp > 1 ? o->cp : 1;
        snprintf(title, sizeof(title), "%s, %s, batch %d, %s, one rank of %d (--fsdp, cp %d)", o->stage, c->name,
                 run->B, FLOATX_NAME, run->dp.world, K2);
        if (plan_step_sharded(&pin, stage, run->dp.world, K2, title, run->dp.rank == 0, &run->plan_total, run->err,
                              sizeof(run->err)))
            return distill_fail(&run->dp, run->err, 1);
        return 0;
    }
    snprintf(title, sizeof(title), "%s, %s, batch %d, %s", o->stage, c->name, run->B, FLOATX_NAME);
    if (plan_step(&pin, stage, title, run->dp.rank == 0, run->err, sizeof(run->err)))
        return distill_fail(&run->dp, run->err, 1);
    MemPlan mp;
    distill_plan(&mp, &pin, stage);
    run->plan_total = mp.total;
    return 0;
}

// setup with --fsdp, the models as this rank's slices (fsdp_model_init_ from the host copies: a fresh start's,
// --student's or --resume's consolidated buffers, whatever rank count wrote them): the trained student (V views its
// slices), and Stage 2's frozen teacher and fake score, whose gradient slices live in the student's (its layout's first
// units are the fake score's, slice for slice: the borrowing of the whole path, distill_models_init)
static void distill_fsdp_init(DistillRun* run, float* teacher) {
    const WanConfig* c = run->c;
    TrainedView* V = &run->V;
    FsdpModel* zv = &run->zv;
    // every rank must issue the same gathers in the same order: TM-MF's per-sample branches are agreed over the ranks
    // (distill_work_init sets tw.agree: gpu/distill_gpu.cuh tmmf_gpu_agree_), Stage 2's and the baseline's steps
    // branch on the global draws alone
    // the layouts first: the shared buffers hold the largest unit of any of them (lib/shard.h
    // shard_fsdp_shared_buffers, the list gpu/shard_plan.h counts)
    fsdp_model_layout_(zv, &run->dp, c, run->ns - run->nw, 1);
    ShardFsdpModel users[3];
    int nu = 0;
    users[nu++] = shard_fsdp_model(&zv->o.L, NULL, 1);
    if (run->stage2) {
        fsdp_model_layout_(&run->zt, &run->dp, c, 0, 0);
        fsdp_model_layout_(&run->zf, &run->dp, c, 0, 1);
        users[nu++] = shard_fsdp_model(&run->zt.o.L, &run->zt.L32, 0);
        users[nu++] = shard_fsdp_model(&run->zf.o.L, NULL, 1);
    }
    fsdp_buffers_init(&run->fb, &run->dp, users, nu);
    printf("[memory] --fsdp: the %d models share one pair of gathered units (2 x %zu fp32, 2 x %zu %s) and unit "
           "gradients (%zu + %zu fp32)\n",
           nu, run->fb.wide, run->fb.narrow, FLOATX_NAME, run->fb.emb_grad, run->fb.grad);
    fsdp_model_init_(zv, &run->dp, c, run->hs, run->hm, run->hv, 1, NULL, run->baseline ? "DMD2-v student" : "student",
                     run->s0, &run->fb);
    memset(V, 0, sizeof(*V)); // no whole buffers: distill_update, distill_save and distill_zero_grads take the slices
    if (run->baseline) {
        fsdp_model_wan_(zv, &run->Pm, c, "DMD2-v student");
        V->step = &run->Pm.step;
    } else {
        tmd_gpu_student_view_sharded(&run->S, &run->sc, &zv->f.hook, zv->extras.w, zv->extras.g);
        V->step = &run->S.step;
    }
    if (run->stage2) {
        fsdp_model_init_(&run->zt, &run->dp, c, teacher, NULL, NULL, 0, NULL, "teacher", run->s0, &run->fb);
        fsdp_model_wan_(&run->zt, &run->T, c, "teacher");
        fsdp_model_init_(&run->zf, &run->dp, c, run->hf, run->hfm, run->hfv, 1, run->zv.o.g, "fake score", run->s0,
                         &run->fb);
        fsdp_model_wan_(&run->zf, &run->F, c, "fake score");
    }
}

// setup, the models on the device: the trained student (V views it) with its moments; Stage 2's frozen teacher and
// fake score; the discriminator with its AdamW moments and its attachment to the Stage 2 work (distill_work_init)
static void distill_models_init(DistillRun* run, float* teacher) {
    const WanConfig* c = run->c;
    size_t ns = run->ns, nw = run->nw, nd = run->nd;
    TrainedView* V = &run->V;
    gemm_init();
    if (run->fsdp)
        distill_fsdp_init(run, teacher); // the student, the teacher and the fake score as this rank's slices
    else if (run->baseline) {
        WanGpuModel* Pm = &run->Pm;
        wan_gpu_model_init(Pm, c, run->hs, 1, "DMD2-v student");
        V->params = Pm->params;
        V->params_x = Pm->params_x;
        V->grads = Pm->grads;
        V->opt_m = Pm->opt_m;
        V->opt_v = Pm->opt_v;
        V->step = &Pm->step;
    } else {
        TmdGpuStudent* S = &run->S;
        tmd_gpu_student_init(S, &run->sc, run->hs);
        V->params = S->params;
        V->params_x = S->params_x;
        V->grads = S->grads;
        V->opt_m = S->opt_m;
        V->opt_v = S->opt_v;
        V->step = &S->step;
    }
    if (!run->fsdp) {
        cudaCheck(cudaMemcpy(V->opt_m, run->hm, sizeof(float) * ns, cudaMemcpyHostToDevice));
        cudaCheck(cudaMemcpy(V->opt_v, run->hv, sizeof(float) * ns, cudaMemcpyHostToDevice));
    }
    *V->step = (long)run->s_steps;
    // the frozen teacher and the fake score: Stage 2 only (Stage 1's guided velocity is the student's own:
    // tmmf_gpu_step)
    if (run->stage2 && !run->fsdp) {
        WanGpuModel* F = &run->F;
        wan_gpu_model_init(&run->T, c, teacher, 0, "teacher");
        // The fake score's gradients live in the student's buffer (V.grads: ns >= nw floats; the baseline's student Pm
        // has exactly nw). Every iteration below is the student's or the critic's, never both: the student's zeroes
        // V.grads, accumulates the student's gradient (dmd_gpu_student_step reads the fake score's weights F.w only,
        // and the GAN term goes through the frozen teacher with no parameter gradient), all-reduces and steps; the
        // critic's zeroes F.grads (the buffer's first nw floats), accumulates the fake score's (dmd_gpu_critic_step
        // runs the generator forward only; the discriminator's go to D.grads), all-reduces and steps. Each gradient is
        // read only by its own iteration's all-reduce and AdamW (which also gives the logged norm), and the checkpoint
        // holds weights and moments, no gradients. So one buffer serves both, in turn: nw x 4 bytes less on the device.
        wan_gpu_model_init_borrowing(F, c, run->hf, V->grads, ns, "fake score");
        cudaCheck(cudaMemcpy(F->opt_m, run->hfm, sizeof(float) * nw, cudaMemcpyHostToDevice));
        cudaCheck(cudaMemcpy(F->opt_v, run->hfv, sizeof(float) * nw, cudaMemcpyHostToDevice));
    }
    if (run->stage2) run->F.step = (long)run->f_steps;
    run->d_step = (long)run->d_steps;
    if (run->gan) {
        disc_gpu_model_init(&run->D, &run->dcfg, run->hd);
        run->dm = (float*)cuda_malloc_named(sizeof(float) * nd, "discriminator AdamW m", WAN_GPU_OOM_HINT);
        run->dv = (float*)cuda_malloc_named(sizeof(float) * nd, "discriminator AdamW v", WAN_GPU_OOM_HINT);
        cudaCheck(cudaMemcpy(run->dm, run->hdm, sizeof(float) * nd, cudaMemcpyHostToDevice));
        cudaCheck(cudaMemcpy(run->dv, run->hdv, sizeof(float) * nd, cudaMemcpyHostToDevice));
    }
}

// setup, several ranks: each model's optimizer sharded over them (lib/shard.h layouts; the discriminator one unit per
// head)
static void distill_shard_init(DistillRun* run) {
    Comm* dp = &run->dp;
    if (dp->world > 1) {
        ShardLayout lv, lf, ld;
        if (shard_layout_wan(&lv, run->c, run->ns - run->nw, dp->world, 64, run->err, sizeof(run->err)) ||
            shard_layout_wan(&lf, run->c, 0, dp->world, 64, run->err, sizeof(run->err)))
            comm_abort(dp, run->err);
        TrainedView* V = &run->V;
        if (!run->fsdp) shard_opt_init(&run->so_v, dp, &lv, V->params, V->grads, V->opt_m, V->opt_v, 0);
        if (run->stage2 && !run->fsdp)
            shard_opt_init(&run->so_f, dp, &lf, run->F.params, run->F.grads, run->F.opt_m, run->F.opt_v, 0);
        if (run->gan) {
            size_t per[DISC_MAX_HEADS];
            const char* names[DISC_MAX_HEADS];
            for (int h = 0; h < run->dcfg.n_heads; h++) {
                per[h] = run->nd / (size_t)run->dcfg.n_heads;
                names[h] = "disc.head";
            }
            if (shard_layout_init(&ld, names, per, run->dcfg.n_heads, dp->world, 64, run->err, sizeof(run->err)) ||
                ld.numel != run->nd)
                comm_abort(dp, "the discriminator's heads are not of one size");
            shard_opt_init(&run->so_d, dp, &ld, run->D.params, run->D.grads, run->dm, run->dv, 0);
        }
    }
}

// setup, the step's inputs and work: the host stream of the draws, the micro-batch's buffers, TM-MF's and DMD2-v's
// settings (t_student shift outer_shift_default(M), the samplers'; App. A.2's c; the VSD guidance), the unconditional
// context, Stage 1's or Stage 2's work buffers
static void distill_work_init(DistillRun* run) {
    const TmdRun* o = run->o;
    const TrainData* td = &run->td;
    size_t numel = run->numel, nctx = run->nctx;
    int B = run->B;
    Rng rng = {run->rng_seed, run->rng_counter};
    run->rng = rng;
    run->clips = (float*)malloc(sizeof(float) * numel * B);
    run->ctx = (float*)malloc(sizeof(float) * nctx * B);
    cudaCheck(cudaMalloc(&run->x_d, sizeof(float) * numel * B));
    cudaCheck(cudaMalloc(&run->ctx_d, sizeof(float) * nctx * B));
    cudaCheck(cudaMalloc(&run->x1, sizeof(float) * numel * B));
    cudaCheck(cudaMalloc(&run->y1, sizeof(float) * numel * B));
    cudaCheck(cudaMalloc(&run->eps, sizeof(float) * numel * B));
    cudaCheck(cudaMalloc(&run->scratch, sizeof(double) * (ADAMW_NORM_BLOCKS + 1)));
    run->has_t7 = table7_for(run->c, &run->t7);
    const Table7* t7 = run->has_t7 ? &run->t7 : NULL;
    run->tcf = stage_tmmf_config(o->M, o->N, t7); // t_student shift outer_shift_default(M), the samplers'; App. A.2's c
    // the unconditional context: the negative prompt's (--data), else zeros (the world's empty caption)
    if (td->negative) {
        cudaCheck(cudaMalloc(&run->neg_d, sizeof(float) * nctx));
        cudaCheck(cudaMemcpy(run->neg_d, td->negative, sizeof(float) * nctx, cudaMemcpyHostToDevice));
    }
    run->dcf = stage_dmd_config(o->M, run->gan ? o->gan_weight : 0, o->update_every);
    run->dcf.cfg = o->cfg_dmd >= 0 ? o->cfg_dmd : stage_cfg_dmd(t7); // the world: the CPU reference's 2; Table 7: 5
    Comm* cp = o->cp > 1 ? &run->cpg : NULL; // --cp: every DiT pass of the step on this rank's tokens
    if (!run->stage2) {
        tmmf_gpu_work_init(&run->tw, &run->sc, B, td->T, td->H, td->W, cp);
        if (run->fsdp && run->dp.world > 1) run->tw.agree = &run->dp; // the same evaluations (unit gathers) on every rank
    } else {
        GenGpu* G = &run->G;
        gen_gpu_init(G, !run->baseline, &run->sc, B, td->T, td->H, td->W, o->N, run->tcf.gamma_inner, cp);
        G->S = &run->S;
        G->P = &run->Pm;
        dmd_gpu_work_init(&run->dw, run->c, B, td->T, td->H, td->W, &G->bb, cp);
        if (run->gan) dmd_gpu_work_attach_disc(&run->dw, &run->D, &run->T.w);
    }
    run->s0 = 0;
}

// setup, the run's settings, printed before the first step
static void distill_print_settings(const DistillRun* run) {
    const TmdRun* o = run->o;
    const DmdConfig* dcf = &run->dcf;
    int stage2 = run->stage2;
    printf("%s: %d steps, batch %d, M %d, N %d, H %d (effective NFE at M: %.3f), lr %g, wd %g, student clip %g%s\n",
           run->baseline ? (o->student ? "DMD2-v baseline (KD-warmed)" : "DMD2-v baseline (no KD)")
           : stage2      ? "Stage 2 DMD2-v"
                         : "Stage 1 TM-MF",
           o->steps, run->B, o->M, o->N, o->H, effective_nfe(o->M, o->N, o->H, run->c->num_layers), o->lr, o->wd,
           o->clip_student, stage2 ? ", student every update_every-th iteration" : "");
    if (stage2)
        printf("VSD: teacher guidance %g against %s, t_dmd shift %g, t_student shift %g\n", dcf->cfg,
               run->td.negative ? "the negative prompt" : "the empty caption", dcf->gamma_dmd, dcf->gamma_outer);
    if (stage2 && run->gan)
        printf(
            "GAN terms: weight %g, discriminator %s (%zu parameters), lr %g (AdamW 0.9, 0.99, wd 0.01, no clipping)\n",
            o->gan_weight, disc_kind_name(&run->dcfg), run->nd, o->disc_lr);
    else if (stage2)
        printf("GAN terms: off (--gan-weight 0)\n");
}

// setup (Algorithm 2's models, optimizers, data and sharding): the stage's sizes, the host copies, --student and
// --resume, the memory plan, the models on the device, the sharded optimizers, the work buffers. 0, or the exit code of
// a refusal (printed)
static int distill_setup(DistillRun* run, const TmdRun* o, const WanConfig* c, float* teacher) {
    int rc;
    if ((rc = distill_config(run, o, c))) return rc;
    distill_host_init(run, teacher);
    if ((rc = distill_load_student(run)) || (rc = distill_resume(run)) || (rc = distill_plan_memory(run))) return rc;
    distill_models_init(run, teacher);
    distill_shard_init(run);
    distill_work_init(run);
    distill_print_settings(run);
    return 0;
}

// the iteration's gradients start at zero: the student's on its turn (every Stage 1 step), else the critic's (the
// fake score's and the discriminator's)
static void distill_zero_grads(DistillRun* run, int student_turn) {
    if (student_turn && run->fsdp) // --fsdp: the gradient's slices (the backward adds each unit's into them)
        fsdp_model_zero_grad_(&run->zv, run->s0);
    else if (student_turn)
        cudaCheck(cudaMemsetAsync(run->V.grads, 0, sizeof(float) * run->ns, run->s0));
    else {
        if (run->fsdp)
            fsdp_model_zero_grad_(&run->zf, run->s0);
        else
            cudaCheck(cudaMemsetAsync(run->F.grads, 0, sizeof(float) * run->nw, run->s0));
        if (run->gan) cudaCheck(cudaMemsetAsync(run->D.grads, 0, sizeof(float) * run->nd, run->s0));
    }
}

// --cp: the ranks of a group must hold the same samples and draws: their collectives pair up only while every rank takes
// the same branches (TM-MF's guided pass and difference quotients depend on each sample's draws), so a mismatch would
// hang the group. A checksum of n bytes compared over the group (one all-reduce of a double) turns it into an error.
static void distill_cp_same(DistillRun* run, const void* bytes, size_t n, const char* what) {
    if (run->o->cp <= 1) return;
    uint64_t h = 1469598103934665603ull; // FNV-1a
    for (size_t i = 0; i < n; i++) h = (h ^ ((const unsigned char*)bytes)[i]) * 1099511628211ull;
    double c = (double)(h >> 24), sum = c; // < 2^40: K2 of them sum exactly in a double
    cudaCheck(cudaMemcpy(run->scratch, &sum, sizeof(double), cudaMemcpyHostToDevice));
    comm_all_reduce(&run->cpg, run->scratch, 1, COMM_F64, run->s0);
    cudaCheck(cudaMemcpy(&sum, run->scratch, sizeof(double), cudaMemcpyDeviceToHost));
    if (sum != c * run->cpg.world) {
        snprintf(run->err, sizeof(run->err),
                 "context parallelism: the ranks of group %d hold different %s at step %llu (a checksum differs); a "
                 "group's ranks must draw the same samples (lib/cp.h cp_groups_init: the data, the noise and the draws "
                 "are split by the group, not the rank)",
                 run->drank, what, (unsigned long long)run->step + 1);
        comm_abort(&run->dp, run->err);
    }
}

// Algorithm 2, "Given x ~ p_data, x1 ~ N(0, I)": micro-batch k's clips and captions, x1, the inner noise y1 and, in
// Stage 2, ε for x̂_t (Philox). 0, or 1 with the error printed
static int distill_draw_batch(DistillRun* run, int k) {
    const TmdRun* o = run->o;
    int B = run->B;
    cudaStream_t s0 = run->s0;
    // x, c ~ p_data (--bench: one synthetic batch, made once: the steps time the GPU, not the host's normals)
    if ((!o->bench || (run->step == 0 && k == 0)) && train_data_next(&run->td, B, run->clips, run->ctx, run->err))
        return distill_fail(&run->dp, run->err, 1);
    distill_cp_same(run, run->clips, sizeof(float) * run->numel * B, "data samples");
    cudaCheck(cudaMemcpy(run->x_d, run->clips, sizeof(float) * run->numel * B, cudaMemcpyHostToDevice));
    cudaCheck(cudaMemcpy(run->ctx_d, run->ctx, sizeof(float) * run->nctx * B, cudaMemcpyHostToDevice));
    size_t nB = run->numel * B;
    uint64_t* off = &run->philox_offset;
    rank_normal_fill(run->x1, nB, run->philox_seed, off, run->drank, run->dworld, s0); // x1 ~ N(0, I)
    rank_normal_fill(run->y1, nB, run->philox_seed, off, run->drank, run->dworld, s0); // y1 ~ N(0, I) (inner noise)
    if (run->stage2) rank_normal_fill(run->eps, nB, run->philox_seed, off, run->drank, run->dworld, s0); // ε for x̂_t
    return 0;
}

// Algorithm 2, stage_one (Stage 1, Sec. 3.1): t_i from the outer grid, x_{t_i} = (1 − t_i)x + t_i x1, y = x1 − x,
// (s, r) on the inner grid, loss ‖u_θ − û‖²/sg(‖u_θ − û‖² + c), û = v_g − (s − r)·du/ds (Eq. 14, App. A.2); the
// student's gradient accumulated
static void tmmf_accumulate(DistillRun* run, StepSums* l) {
    int B = run->B, A = run->A;
    TmmfDraw d, other; // the global batch's draws; this data-parallel rank keeps its B
    memset(&d, 0, sizeof(d));
    d.B = B;
    for (int g = 0; g < run->dworld * B; g++) {
        int b = g - run->drank * B, mine = b >= 0 && b < B;
        tmmf_draw_sample(mine ? &d : &other, mine ? b : 0, &run->tcf, &run->rng, NULL, NULL, 0);
    }
    distill_cp_same(run, &d, sizeof(d), "draws (t, s, r, dropout)");
    TmmfGpuStats st = tmmf_gpu_step(&run->S, &run->tw, &d, run->x_d, run->x1, run->y1, run->ctx_d, run->neg_d,
                                    &run->tcf, run->mscale, 1);
    l->finite &= st.finite;
    for (int b = 0; b < B; b++) {
        l->la += st.loss[b] / (B * A);
        l->lb += st.mse[b] / (B * A);
    }
}

// Stage 2's draws (Sec. 3.2): each sample's t_i (x_{t_i} from real data) and the VSD loss's t, from the host stream
static void dmd_draw(DistillRun* run, DmdDraw* d) {
    DmdDraw other; // the global batch's draws; this data-parallel rank keeps its B
    int B = run->B;
    memset(d, 0, sizeof(*d));
    d->B = B;
    for (int g = 0; g < run->dworld * B; g++) {
        int b = g - run->drank * B, mine = b >= 0 && b < B;
        dmd_draw_sample(mine ? d : &other, mine ? b : 0, &run->dcf, &run->rng, NULL, NULL, NULL, 0);
    }
    distill_cp_same(run, d, sizeof(*d), "draws (t_i, t)");
}

// Algorithm 2, else (Stage 2, Sec. 3.2): x̂ = x_{t_i} − t_i·INNERFLOW(m_θ(x_{t_i})) (Eq. 15, 17) and L = VSD(x̂) +
// λ·Discriminator(x̂): the VSD gradient (g_fake − g_teacher)/mean|x̂ − g_teacher| through every inner step (Eq. 11)
// and the GAN term through the frozen teacher's features; the student's gradient accumulated
static void generator_accumulate(DistillRun* run, StepSums* l) {
    int B = run->B, A = run->A;
    DmdDraw d;
    dmd_draw(run, &d);
    DmdGpuStats st = dmd_gpu_student_step(&run->G, &run->dw, &run->T.w, &run->F.w, &d, run->x_d, run->x1, run->y1,
                                          run->eps, run->ctx_d, run->neg_d, &run->dcf, run->mscale);
    l->finite &= st.finite;
    for (int b = 0; b < B; b++) {
        l->la += st.vsd[b] / (B * A);
        l->lg += st.gan_g[b] / (B * A);
    }
}

// DMD2's critic (the iterations between the student's): the fake score's denoising score matching on the detached x̂
// and, with the GAN terms, the discriminator's loss on teacher features of real and fake x_t (one step each); the fake
// score's and the discriminator's gradients accumulated
static void critic_accumulate(DistillRun* run, StepSums* l) {
    int B = run->B, A = run->A;
    DmdDraw d;
    dmd_draw(run, &d);
    DmdGpuStats st = dmd_gpu_critic_step(&run->G, &run->dw, &run->F, &d, run->x_d, run->x1, run->y1, run->eps,
                                         run->ctx_d, &run->dcf, run->mscale);
    l->finite &= st.finite;
    for (int b = 0; b < B; b++) {
        l->lb += st.dsm[b] / (B * A);
        l->ld += st.gan_d[b] / (B * A);
    }
}

// Algorithm 2, θ = step(θ, ∇θ L): AdamW on the network whose turn it was (on the critic's turn the fake score and the
// discriminator; FastGen clips only the student), with several ranks sharded; no update on any rank when a loss of any
// rank was not finite (its gradients stay unused). The loss sums go to the log's interval sums
static void distill_update(DistillRun* run, int student_turn, const StepSums* l) {
    const TmdRun* o = run->o;
    Comm* dp = &run->dp;
    cudaStream_t s0 = run->s0;
    int finite = l->finite;
    StepSums mean = *l;
    // every rank skips the update together (the sharded step is a collective): any rank's non-finite loss; the logged
    // losses are the means over the ranks (each rank's is the mean over its B; --cp: a group's ranks hold the same
    // losses, bit for bit, from the whole outputs every one of them holds, so this is the groups' mean)
    if (dp->world > 1) {
        double r[5] = {(double)finite, l->la, l->lb, l->lg, l->ld};
        cudaCheck(cudaMemcpy(run->scratch, r, sizeof(r), cudaMemcpyHostToDevice));
        comm_all_reduce(dp, run->scratch, 5, COMM_F64, s0);
        cudaCheck(cudaMemcpy(r, run->scratch, sizeof(r), cudaMemcpyDeviceToHost));
        finite = r[0] == (double)dp->world;
        mean.la = r[1] / dp->world, mean.lb = r[2] / dp->world, mean.lg = r[3] / dp->world, mean.ld = r[4] / dp->world;
    }
    l = &mean;
    if (!finite) { // a micro-batch's loss was not finite: no update (its gradients stay unused)
        run->skipped++;
        if (!run->stage2)
            fprintf(stderr, "Stage 1 step %llu skipped: non-finite loss\n", (unsigned long long)run->step + 1);
    } else if (!run->stage2) {
        TmdGpuStudent* S = &run->S;
        S->step++;
        if (run->fsdp)
            fsdp_model_step_(dp, &run->zv, o->lr, o->wd, o->clip_student, S->step, run->gscale, run->scratch, &run->gn,
                             s0);
        else
            train_update_(dp, &run->so_v, S->params, S->params_x, S->opt_m, S->opt_v, S->grads, run->ns, o->lr, o->wd,
                          o->clip_student, S->step, run->gscale, run->scratch, &run->gn, s0);
        run->acc_a += l->la;
        run->acc_b += l->lb;
        run->na++;
        run->nb++;
    } else if (student_turn) {
        TrainedView* V = &run->V;
        ++*V->step;
        if (run->fsdp)
            fsdp_model_step_(dp, &run->zv, o->lr, o->wd, o->clip_student, *V->step, run->gscale, run->scratch, &run->gn,
                             s0);
        else
            train_update_(dp, &run->so_v, V->params, V->params_x, V->opt_m, V->opt_v, V->grads, run->ns, o->lr, o->wd,
                          o->clip_student, *V->step, run->gscale, run->scratch, &run->gn, s0);
        run->acc_a += l->la;
        run->acc_g += l->lg;
        run->na++;
    } else {
        WanGpuModel* F = &run->F;
        F->step++;
        double gf;
        if (run->fsdp)
            fsdp_model_step_(dp, &run->zf, o->lr_fake, o->wd, 0, F->step, run->gscale, run->scratch, &gf, s0);
        else
            train_update_(dp, &run->so_f, F->params, F->params_x, F->opt_m, F->opt_v, F->grads, run->nw, o->lr_fake,
                          o->wd, 0, F->step, run->gscale, run->scratch, &gf, s0);
        if (run->gan) {
            run->d_step++;
            // --cp: every rank of a group holds the group's whole discriminator gradient (the heads read the gathered
            // features: gpu/distill_gpu.cuh), so 1/ranks (not 1/groups) makes the world's sum the groups' mean
            double gd, dscale = run->gscale / (o->cp > 1 ? o->cp : 1); // FastGen clips only the student
            train_update_(dp, &run->so_d, run->D.params, NULL, run->dm, run->dv, run->D.grads, run->nd, o->disc_lr,
                          0.01, 0, run->d_step, dscale, run->scratch, &gd, s0);
        }
        run->acc_b += l->lb;
        run->acc_d += l->ld;
        run->nb++;
    }
}

// --bench, after each step: its wall time (synchronized), by kind; the device memory in use after the first step;
// from the second step on, the time per kernel class (kernels/bench_prof.cuh)
static void distill_bench_step(DistillRun* run, int student_turn) {
    cudaCheck(cudaDeviceSynchronize());
    double ms = 1e3 * (now_s() - run->tb);
    uint64_t step = run->step;
    if (step == 1) {
        size_t fr = 0, tot = 0;
        cudaCheck(cudaMemGetInfo(&fr, &tot));
        printf(
            "bench: device memory in use after the first step %.2f GiB of %.2f GiB (the plan: %.2f GiB for the step, "
            "+ the CUDA context and library workspaces)\n",
            (double)(tot - fr) / PLAN_GIB, (double)tot / PLAN_GIB, run->plan_total / PLAN_GIB);
    }
    if (step > 1 && run->nbench[student_turn] < 64) run->bench_ms[student_turn][run->nbench[student_turn]++] = ms;
    if (step > 1) run->bench_total_ms += ms;
    if (step == 1) { // from step 2: time per kernel class
        bench_prof.enabled = 1;
        bench_prof_reset();
    }
    printf("bench: step %llu (%s) %.1f ms%s\n", (unsigned long long)step,
           !run->stage2   ? "TM-MF"
           : student_turn ? "student"
                          : "critic",
           ms, step == 1 ? " (the first: warm-up, not counted)" : "");
}

// the log, on rank 0 every --log-every steps and at the last: the interval's mean losses, the student's last gradient
// norm, the time per step
static void distill_log(DistillRun* run) {
    const TmdRun* o = run->o;
    uint64_t step = run->step;
    if (run->dp.rank == 0 && (step % (uint64_t)o->log_every == 0 || step == (uint64_t)o->steps)) {
        cudaCheck(cudaDeviceSynchronize());
        double el = now_s() - run->t0, per = el / (double)o->log_every;
        // interval means; "-" where the interval had no step of that kind (Stage 2 alternates student and critic)
        // the grad norm is the student's last step's ("-" where the interval had none: a resumed run's first log)
        char va[32] = "-", vb[32] = "-", vg[32] = "-", vd[32] = "-", vn[32] = "-", ganlog[80] = "";
        if (run->na) {
            snprintf(va, sizeof(va), "%.4f", run->acc_a / run->na);
            snprintf(vg, sizeof(vg), "%.3f", run->acc_g / run->na);
            snprintf(vn, sizeof(vn), "%.3f", run->gn);
        }
        if (run->nb) {
            snprintf(vb, sizeof(vb), "%.4f", run->acc_b / run->nb);
            snprintf(vd, sizeof(vd), "%.3f", run->acc_d / run->nb);
        }
        if (run->gan) snprintf(ganlog, sizeof(ganlog), "  gan_g %s  gan_d %s", vg, vd);
        printf("%s step %6llu/%d  %s %s  %s %s%s  grad norm %s  %.1f ms/step  ETA %.0f s  skipped %ld\n",
               run->stage2 ? "DMD2-v" : "TM-MF", (unsigned long long)step, o->steps, run->stage2 ? "vsd" : "loss", va,
               run->stage2 ? "dsm" : "mse", vb, ganlog, vn, 1e3 * per, per * (double)(o->steps - (int)step),
               run->skipped);
        run->acc_a = run->acc_b = run->acc_g = run->acc_d = 0;
        run->na = run->nb = 0;
        run->t0 = now_s();
    }
}

// the checkpoint, every --save-every steps and at the last (not with --bench): every model's weights and moments,
// the step counters and every stream, written atomically by rank 0. 0, or 1 with the error printed
static int distill_save(DistillRun* run) {
    const TmdRun* o = run->o;
    Comm* dp = &run->dp;
    uint64_t step = run->step;
    size_t ns = run->ns, nw = run->nw, nd = run->nd;
    TrainedView* V = &run->V;
    WanGpuModel* F = &run->F;
    int save_now =
        !o->bench && ((o->save_every > 0 && step % (uint64_t)o->save_every == 0) || step == (uint64_t)o->steps);
    if (save_now && run->fsdp) { // --fsdp: the slices consolidated into the host copies on rank 0 (collectives)
        fsdp_model_consolidate_(&run->zv, run->hs, run->hm, run->hv);
        if (run->stage2) fsdp_model_consolidate_(&run->zf, run->hf, run->hfm, run->hfv);
    }
    if (save_now && dp->world > 1) { // the moments' slices into the models' whole buffers (every rank: collectives)
        if (!run->fsdp) shard_opt_gather_moments(&run->so_v, dp, V->opt_m, V->opt_v, run->s0);
        if (run->stage2 && !run->fsdp) shard_opt_gather_moments(&run->so_f, dp, F->opt_m, F->opt_v, run->s0);
        if (run->gan) shard_opt_gather_moments(&run->so_d, dp, run->dm, run->dv, run->s0);
    }
    if (dp->rank == 0 && save_now) {
        if (!run->fsdp) {
            cudaCheck(cudaMemcpy(run->hs, V->params, sizeof(float) * ns, cudaMemcpyDeviceToHost));
            cudaCheck(cudaMemcpy(run->hm, V->opt_m, sizeof(float) * ns, cudaMemcpyDeviceToHost));
            cudaCheck(cudaMemcpy(run->hv, V->opt_v, sizeof(float) * ns, cudaMemcpyDeviceToHost));
        }
        if (run->stage2 && !run->fsdp) {
            cudaCheck(cudaMemcpy(run->hf, F->params, sizeof(float) * nw, cudaMemcpyDeviceToHost));
            cudaCheck(cudaMemcpy(run->hfm, F->opt_m, sizeof(float) * nw, cudaMemcpyDeviceToHost));
            cudaCheck(cudaMemcpy(run->hfv, F->opt_v, sizeof(float) * nw, cudaMemcpyDeviceToHost));
        }
        if (run->gan) {
            cudaCheck(cudaMemcpy(run->hd, run->D.params, sizeof(float) * nd, cudaMemcpyDeviceToHost));
            cudaCheck(cudaMemcpy(run->hdm, run->dm, sizeof(float) * nd, cudaMemcpyDeviceToHost));
            cudaCheck(cudaMemcpy(run->hdv, run->dv, sizeof(float) * nd, cudaMemcpyDeviceToHost));
        }
        TsMeta meta = run->want;
        ts_meta_u64(&meta, "step", step);
        ts_meta_u64(&meta, "student_steps", (uint64_t)*V->step);
        ts_meta_u64(&meta, "fake_steps", (uint64_t)F->step);
        ts_meta_u64(&meta, "rng_seed", run->rng.seed);
        ts_meta_u64(&meta, "rng_counter", run->rng.counter);
        ts_meta_u64(&meta, "philox_seed", run->philox_seed);
        ts_meta_u64(&meta, "philox_offset", run->philox_offset);
        ts_meta_u64(&meta, "data_stream", train_data_state(&run->td));
        if (run->gan) ts_meta_u64(&meta, "disc_steps", (uint64_t)run->d_step);
        ts_meta_u64(&meta, "ranks", (uint64_t)run->dp.world); // the layout that wrote it (the file is the same for any)
        if (ts_save(o->out, run->bufs, run->nbufs, &meta, run->err)) return distill_fail(&run->dp, run->err, 1);
        printf("wrote %s (step %llu)\n", o->out, (unsigned long long)step);
    }
    return 0;
}

// --bench, at the end: the median step time of each kind (the first step excluded), then where the time went
// (kernels/bench_prof.cuh: the steps after the first, all kinds together)
static void distill_bench_report(DistillRun* run) {
    const TmdRun* o = run->o;
    const TrainData* td = &run->td;
    const WanConfig* c = run->c;
    for (int k = 1; o->bench && k >= 0; k--) { // the median step time of each kind (the first step excluded)
        int n = run->nbench[k];
        double* v = run->bench_ms[k];
        if (!n) continue;
        for (int i = 1; i < n; i++)
            for (int j = i; j > 0 && v[j] < v[j - 1]; j--) {
                double q = v[j];
                v[j] = v[j - 1];
                v[j - 1] = q;
            }
        printf("bench: %s, %s, batch %d x %d micro-batches, latent [%d, %d, %d, %d] (%d tokens), %s, recompute %s: "
               "median %.1f ms per step (min %.1f, max %.1f, %d steps)\n",
               o->stage,
               !run->stage2 ? "TM-MF step"
               : k          ? "student step"
                            : "critic step",
               run->B, run->A, c->in_dim, td->T, td->H, td->W,
               (td->T / c->patch[0]) * (td->H / c->patch[1]) * (td->W / c->patch[2]), FLOATX_NAME,
               wan_gpu_recompute ? "on" : "off", v[n / 2], v[0], v[n - 1], n);
    }
    if (o->bench && o->steps > 1) { // kernels/bench_prof.cuh: the steps after the first, all kinds together
        char what[96];
        snprintf(what, sizeof(what), "one %s step (wall time, host gaps in 'everything else')", o->stage);
        bench_prof_report(stdout, what, run->bench_total_ms / (o->steps - 1), o->steps - 1);
        bench_prof.enabled = 0;
    }
}

// teardown: every device and host buffer of the run freed, the collectives finalized
static void distill_teardown(DistillRun* run) {
    if (!run->stage2)
        tmmf_gpu_work_free(&run->tw);
    else {
        gen_gpu_free(&run->G);
        dmd_gpu_work_free(&run->dw);
        if (!run->fsdp) wan_gpu_model_free(&run->F);
        if (!run->fsdp) wan_gpu_model_free(&run->T);
    }
    fsdp_model_free_(&run->zf); // --fsdp (else nothing): the fake score's first (its gradient slices are the student's)
    fsdp_model_free_(&run->zt);
    fsdp_model_free_(&run->zv);
    if (run->fsdp) fsdp_buffers_free(&run->fb);
    if (run->gan) {
        disc_gpu_model_free(&run->D);
        cudaCheck(cudaFree(run->dm));
        cudaCheck(cudaFree(run->dv));
    }
    if (run->baseline && !run->fsdp)
        wan_gpu_model_free(&run->Pm);
    else if (!run->baseline && !run->fsdp)
        tmd_gpu_student_free(&run->S);
    shard_opt_free(&run->so_v);
    shard_opt_free(&run->so_f);
    shard_opt_free(&run->so_d);
    gemm_free();
    if (run->o->cp > 1) comm_finalize(&run->cpg);
    comm_finalize(&run->dp);
    cudaCheck(cudaFree(run->x_d));
    cudaCheck(cudaFree(run->ctx_d));
    cudaCheck(cudaFree(run->x1));
    cudaCheck(cudaFree(run->y1));
    cudaCheck(cudaFree(run->eps));
    cudaCheck(cudaFree(run->scratch));
    if (run->neg_d) cudaCheck(cudaFree(run->neg_d));
    train_data_free(&run->td);
    free(run->clips);
    free(run->ctx);
    free(run->hs);
    free(run->hm);
    free(run->hv);
    free(run->hf);
    free(run->hfm);
    free(run->hfv);
    free(run->hd);
    free(run->hdm);
    free(run->hdv);
}

// TMD, paper Algorithm 2 (the student update step of both stages) as a loop of optimizer steps, each of one network:
// Stage 1 the student (TM-MF); Stage 2 and the baseline the student every update_every-th iteration (DMD2-v with the
// flow-head rollout), the critic (fake score and discriminator) otherwise. Each step's gradients are summed over A
// micro-batches of B samples (each scaled 1/(B·A): the mean over the step's batch) and, with several ranks, all-reduced
static int train_tmd_distill(const TmdRun* o, const WanConfig* c, float* teacher) {
    DistillRun run;
    memset(&run, 0, sizeof(run));
    int rc = distill_setup(&run, o, c, teacher); // models, optimizers, data, sharding
    if (rc) return rc;
    run.t0 = now_s();
    while (run.step < (uint64_t)o->steps) {
        // whose step: Stage 1 always the student's; Stage 2 the student's every update_every-th, else the critic's
        int student_turn = !run.stage2 || run.step % (uint64_t)o->update_every == 0;
        distill_zero_grads(&run, student_turn);
        StepSums l = {1, 0, 0, 0, 0};
        if (o->bench) { // --bench: the step's wall time from here
            cudaCheck(cudaDeviceSynchronize());
            run.tb = now_s();
        }
        for (int k = 0; k < run.A; k++) {              // A micro-batches, their gradients summed
            if (distill_draw_batch(&run, k)) return 1; // given x ~ p_data, x1 ~ N(0, I) (and y1, ε)
            if (!run.stage2)                           // stage_one: L = MeanFlow(u, v, s, r) (Eq. 9, 13, 14)
                tmmf_accumulate(&run, &l);
            else if (student_turn) // else: x̂ = x1 − INNERFLOW(m), L = VSD(x̂) + λ·Discriminator(x̂) (Eq. 11, 15)
                generator_accumulate(&run, &l);
            else // DMD2's critic: the fake score's denoising score matching, the discriminator's loss
                critic_accumulate(&run, &l);
        }
        distill_update(&run, student_turn, &l); // θ = step(θ, ∇θ L)
        run.step++;
        if (o->bench) distill_bench_step(&run, student_turn);
        distill_log(&run);
        if (distill_save(&run)) return 1; // the checkpoint (--save-every, the last step)
    }
    distill_bench_report(&run);
    if (run.fsdp) // the unit all-gathers each provider issued (prefetches included; a flow head re-gathers its units
                  // at each of its evaluations)
        printf("fsdp: unit all-gathers over the run: student %ld (+ its held extras once a step), fake score %ld, "
               "teacher %ld\n",
               run.zv.f.gathers, run.zf.f.gathers, run.zt.f.gathers);
    distill_teardown(&run);
    printf("%s: done, %llu steps, %ld skipped\n", o->stage, (unsigned long long)run.step, run.skipped);
    return 0;
}

// ---------------------------------------------------------------------------------------------------------
// the KD warm-up of a one-step student (paper Table 4 and App. A.3: the one-step DMD2-v baseline starts from knowledge
// distillation on teacher ODE pairs; --kd-tmd warms the TMD student too): the pairs are made once by the GPU teacher
// from the run's data (the built-in world's captions, or --data's contexts and negative prompt, in its latent shape)
// and cached (gpu/kd_gpu.cuh), then x̂ = g_θ(z, T_MAX) is regressed onto the teacher's sample, loss mean (x̂ −
// x_teacher)², AdamW as the other stages with the student's clipping (cpu/distill_run.h distill_kd, its oracle
// kd_sample)
typedef struct {
    const char* out;
    const char* resume;
    const char* student;
    const char* pairs_path;
    int tmd; // 0: the baseline's plain Wan student (from the teacher); 1: the TMD student (from --student)
    int steps, batch, pairs, seed, log_every, save_every, N, H;
    double lr, wd, clip;
    int sampler_steps;
    double cfg, shift; // the pairs' teacher sampler (UniPC; gpu/stage_plan.h kd_defaults: the world's evaluation
    int skip_layer;    // sampler, as the CPU's; a Wan2.1 teacher's own); skip-layer guidance's block (-1: none)
    const char* data;  // the pairs' captions: a latent dataset's contexts (--data); NULL: the built-in world's
} KdRun;

static int train_tmd_kd(const KdRun* o, const WanConfig* c, float* teacher) {
    char err[ST_ERRLEN];
    TrainData td; // the pairs' captions and latent shape: the built-in world's training stream or --data's contexts
                  // (stream KD_STREAM)
    if (train_data_open(&td, o->data, c, (uint64_t)o->seed, KD_STREAM, 0, 1, err)) {
        fprintf(stderr, "error: %s\n", err);
        return 2;
    }
    StudentConfig sc;
    sc.wan = *c;
    sc.head_blocks = o->H;
    sc.fusion = FUSION_GATED;
    sc.fuse_ffn_dim = c->ffn_dim;
    if (o->tmd && (o->H < 1 || o->H >= c->num_layers)) {
        fprintf(stderr, "error: --head-blocks %d: expected 1 .. %d\n", o->H, c->num_layers - 1);
        return 2;
    }
    if (o->batch > TMD_MAX_BATCH) {
        fprintf(stderr, "error: --kd-batch %d: at most %d\n", o->batch, TMD_MAX_BATCH);
        return 2;
    }
    if (comm_env_world() > 1) {
        fprintf(stderr, "error: the KD warm-up runs on one GPU (it is not data-parallel); run it without mpirun\n");
        return 2;
    }
    size_t nw = wan_num_params(c), ns = o->tmd ? student_num_params(&sc) : nw, numel = td.numel, nctx = td.nctx;
    int B = o->batch;
    const char* stage = o->tmd ? "kd-tmd" : "kd";
    float* hs = (float*)malloc(sizeof(float) * ns);
    float* hm = (float*)calloc(ns, sizeof(float));
    float* hv = (float*)calloc(ns, sizeof(float));
    if (!o->tmd)
        memcpy(hs, teacher, sizeof(float) * nw); // the baseline's student starts as the teacher
    else if (!o->resume) {                       // the TMD student: Stage 1's
        if (!o->student) {
            fprintf(stderr, "error: the KD warm-up of the TMD student (--kd-tmd 1) needs --student FILE (the "
                            "checkpoint ./train_tmd --stage stage1 wrote)\n");
            return 2;
        }
        TsMeta m1;
        TsBuffer b1[1] = {{"student.params", hs, ns}};
        if (ts_load(o->student, b1, 1, &m1, err)) {
            fprintf(stderr, "error: %s\n", err);
            return 2;
        }
        printf("student from %s (Stage 1, step %s)\n", o->student,
               ts_meta_get(&m1, "step") ? ts_meta_get(&m1, "step") : "?");
    }
    TsMeta want;
    memset(&want, 0, sizeof(want));
    ts_meta_set(&want, "stage", stage);
    ts_meta_set(&want, "config", c->name);
    ts_meta_u64(&want, "batch", B);
    ts_meta_u64(&want, "kd_pairs", o->pairs);
    if (o->data) {
        char dd[256];
        train_data_describe(&td, dd, sizeof(dd));
        ts_meta_set(&want, "data", dd);
    }
    if (o->tmd) {
        ts_meta_u64(&want, "N", o->N);
        ts_meta_u64(&want, "head_blocks", o->H);
    }
    TsBuffer bufs[3] = {{"student.params", hs, ns}, {"student.adam_m", hm, ns}, {"student.adam_v", hv, ns}};
    uint64_t step = 0, s_steps = 0, philox_seed = (uint64_t)o->seed * 1000003 + KD_STREAM + 1 + o->tmd,
             philox_offset = 0;
    if (o->resume) {
        TsMeta have;
        if (ts_load(o->resume, bufs, 3, &have, err) || ts_check_settings(&have, &want, o->resume, err) ||
            ts_meta_get_u64(&have, "step", &step, o->resume, err) ||
            ts_meta_get_u64(&have, "student_steps", &s_steps, o->resume, err) ||
            ts_meta_get_u64(&have, "philox_seed", &philox_seed, o->resume, err) ||
            ts_meta_get_u64(&have, "philox_offset", &philox_offset, o->resume, err)) {
            fprintf(stderr, "error: %s\n", err);
            return 2;
        }
        printf("resumed %s at step %llu\n", o->resume, (unsigned long long)step);
    }
    { // the memory plan of a KD step (the teacher that makes the pairs comes and goes before it), refused when it
      // cannot fit
        PlanInput pin =
            stage_plan_input(c, 3, td.T, td.H, td.W, B, o->N, o->H, !o->tmd, NULL, o->pairs, !wan_gpu_use_flash(c));
        char title[160];
        snprintf(title, sizeof(title), "%s, %s, batch %d, %s", stage, c->name, B, FLOATX_NAME);
        if (plan_step(&pin, 3, title, 1, err, sizeof(err))) {
            fprintf(stderr, "error: %s\n", err);
            return 1;
        }
    }
    gemm_init();
    // the teacher ODE pairs: read from the cache, or made by the frozen teacher (on the device only for that) and
    // cached
    KdPairs kp;
    {
        WanGpuModel T;
        wan_gpu_model_init(&T, c, teacher, 0, "teacher");
        KdPairSettings ps = {o->pairs, o->sampler_steps, o->cfg, o->shift, (uint64_t)o->seed, o->skip_layer};
        int rc = kd_pairs_get(&kp, o->pairs_path, &T, teacher, &td, &ps, err);
        wan_gpu_model_free(&T);
        if (rc) {
            fprintf(stderr, "error: %s\n", err);
            return 2;
        }
    }
    TmdGpuStudent S;
    WanGpuModel Pm;
    memset(&S, 0, sizeof(S));
    memset(&Pm, 0, sizeof(Pm));
    struct {
        float *params, *grads, *opt_m, *opt_v;
        floatX* params_x;
        long* step;
    } V;
    if (!o->tmd) {
        wan_gpu_model_init(&Pm, c, hs, 1, "DMD2-v student");
        V.params = Pm.params;
        V.params_x = Pm.params_x;
        V.grads = Pm.grads;
        V.opt_m = Pm.opt_m;
        V.opt_v = Pm.opt_v;
        V.step = &Pm.step;
    } else {
        tmd_gpu_student_init(&S, &sc, hs);
        V.params = S.params;
        V.params_x = S.params_x;
        V.grads = S.grads;
        V.opt_m = S.opt_m;
        V.opt_v = S.opt_v;
        V.step = &S.step;
    }
    cudaCheck(cudaMemcpy(V.opt_m, hm, sizeof(float) * ns, cudaMemcpyHostToDevice));
    cudaCheck(cudaMemcpy(V.opt_v, hv, sizeof(float) * ns, cudaMemcpyHostToDevice));
    *V.step = (long)s_steps;
    GenGpu G;
    gen_gpu_init(&G, o->tmd, &sc, B, td.T, td.H, td.W, o->N, tmmf_defaults(1).gamma_inner);
    G.S = &S;
    G.P = &Pm;
    KdGpuWork w;
    kd_gpu_work_init(&w, &kp, B, numel, nctx);
    kd_pairs_free(&kp);
    float* y1 = NULL;
    double* scratch;
    if (o->tmd) cudaCheck(cudaMalloc(&y1, sizeof(float) * numel * B));
    cudaCheck(cudaMalloc(&scratch, sizeof(double) * (ADAMW_NORM_BLOCKS + 1)));
    printf("KD warm-up of the %s: %d steps, batch %d, %d teacher pairs, lr %g, wd %g, clip %g: x_hat = g(z, t = %.3f) "
           "regressed onto the teacher's sample\n",
           o->tmd ? "one-step TMD student" : "DMD2-v baseline's student", o->steps, B, o->pairs, o->lr, o->wd, o->clip,
           T_MAX);
    cudaStream_t s0 = 0;
    double t0 = now_s(), acc = 0, gn = 0, first = NAN, last = NAN;
    int na = 0;
    long skipped = 0;
    while (step < (uint64_t)o->steps) {
        kd_gpu_batch(&w, step, s0); // pairs (step·B + b) mod P
        if (o->tmd) {
            normal_fill(y1, numel * B, philox_seed, philox_offset, 0.f, 1.f, s0);
            philox_offset += numel * B;
        } // inner noise
        cudaCheck(cudaMemsetAsync(V.grads, 0, sizeof(float) * ns, s0));
        KdGpuStats st = kd_gpu_step(&G, &w, w.zb, w.tb, y1, w.cb, 1.0 / B); // ∇ mean_b mean (g_θ(z_b) − x_teacher,b)²
        if (!st.finite) {
            skipped++;
            fprintf(stderr, "KD step %llu skipped: non-finite loss\n", (unsigned long long)step + 1);
        } else {
            ++*V.step;
            tmd_adamw_(V.params, V.params_x, V.opt_m, V.opt_v, V.grads, ns, o->lr, o->wd, o->clip, *V.step, 1.0,
                       scratch, &gn, s0);
            for (int b = 0; b < B; b++) acc += st.mse[b] / B;
            na++;
        }
        step++;
        if (step % (uint64_t)o->log_every == 0 || step == (uint64_t)o->steps) {
            cudaCheck(cudaDeviceSynchronize());
            double el = now_s() - t0, per = el / (double)o->log_every;
            last = na ? acc / na : NAN;
            if (isnan(first)) first = last;
            printf("KD step %6llu/%d  mse %.4f  grad norm %.3f  %.1f ms/step  ETA %.0f s  skipped %ld\n",
                   (unsigned long long)step, o->steps, last, gn, 1e3 * per, per * (double)(o->steps - (int)step),
                   skipped);
            acc = 0;
            na = 0;
            t0 = now_s();
        }
        if ((o->save_every > 0 && step % (uint64_t)o->save_every == 0) || step == (uint64_t)o->steps) {
            cudaCheck(cudaMemcpy(hs, V.params, sizeof(float) * ns, cudaMemcpyDeviceToHost));
            cudaCheck(cudaMemcpy(hm, V.opt_m, sizeof(float) * ns, cudaMemcpyDeviceToHost));
            cudaCheck(cudaMemcpy(hv, V.opt_v, sizeof(float) * ns, cudaMemcpyDeviceToHost));
            TsMeta meta = want;
            ts_meta_u64(&meta, "step", step);
            ts_meta_u64(&meta, "student_steps", (uint64_t)*V.step);
            ts_meta_u64(&meta, "philox_seed", philox_seed);
            ts_meta_u64(&meta, "philox_offset", philox_offset);
            if (ts_save(o->out, bufs, 3, &meta, err)) {
                fprintf(stderr, "error: %s\n", err);
                return 1;
            }
            printf("wrote %s (step %llu)\n", o->out, (unsigned long long)step);
        }
    }
    kd_gpu_work_free(&w);
    gen_gpu_free(&G);
    if (o->tmd)
        tmd_gpu_student_free(&S);
    else
        wan_gpu_model_free(&Pm);
    if (y1) cudaCheck(cudaFree(y1));
    cudaCheck(cudaFree(scratch));
    gemm_free();
    free(hs);
    free(hm);
    free(hv);
    train_data_free(&td);
    printf("%s: done, %llu steps, %ld skipped; mse %.4f in the first logged interval, %.4f in the last\n", stage,
           (unsigned long long)step, skipped, first, last);
    return 0;
}

// ---------------------------------------------------------------------------------------------------------
// the teacher: flow matching on the built-in world. params [wan_num_params(c)] host: the start (NULL: official
// init_weights from seed), overwritten with the trained teacher, which is also written to `out`
typedef struct {
    int steps, batch, seed, log_every, save_every, warmup;
    double lr, wd, max_grad_norm, p_drop, shift;
    const char* out;
} TeacherRun;

static int train_teacher(const TeacherRun* o, const WanConfig* c, real* params) {
    char err[ST_ERRLEN];
    WorldConfig wc;
    if (teacher_gpu_world_for(&wc, c, err)) {
        fprintf(stderr, "error: %s\n", err);
        return 2;
    }
    if (comm_env_world() > 1) {
        fprintf(stderr,
                "error: the teacher's training runs on one GPU (it is not data-parallel); run it without mpirun\n");
        return 2;
    }
    int batch = o->batch, steps = o->steps;
    size_t np = wan_num_params(c);
    { // the step's memory plan; --recompute decides the activations' mode (auto: on only when needed)
        PlanInput pin;
        memset(&pin, 0, sizeof(pin));
        pin.wan = *c;
        pin.T = wc.T;
        pin.Hl = wc.H;
        pin.Wl = wc.W;
        pin.batch = batch;
        pin.naive_attention = !wan_gpu_use_flash(c);
        if (plan_step(&pin, 0, "teacher flow matching", 1, err, sizeof(err))) {
            fprintf(stderr, "error: %s\n", err);
            return 1;
        }
    }
    gemm_init();
    WanGpuModel m;
    wan_gpu_model_init(&m, c, params, 1, "teacher");
    TeacherGpu t;
    if (teacher_gpu_init(&t, &m, batch, wc.C, wc.T, wc.H, wc.W, (uint64_t)o->seed * 17, err)) {
        fprintf(stderr, "error: %s\n", err);
        return 1;
    }
    wan_gpu_act_print_plan(&t.a, stdout);
    printf("teacher: %d steps, batch %d clips [%d, %d, %d, %d] of world '%s', lr %g (warm-up %d), wd %g, clip %g, "
           "p_drop %g, shift %g\n",
           steps, batch, wc.C, wc.T, wc.H, wc.W, wc.name, o->lr, o->warmup, o->wd, o->max_grad_norm, o->p_drop,
           o->shift);
    size_t numel = world_clip_numel(&wc), nctx = (size_t)wc.text_len * wc.text_dim;
    float* clips = (float*)malloc(sizeof(float) * numel * batch);
    float* ctx = (float*)malloc(sizeof(float) * nctx * batch);
    WRng stream = wrng_seed((uint64_t)o->seed, 0, 0);
    FlowMatchOpts fo = {o->p_drop, o->shift, 0};
    TeacherGpuOpt opt = {o->lr, 0.9, 0.99, 1e-8, o->wd, o->max_grad_norm};
    double t0 = now_s(), acc = 0;
    int na = 0;
    for (int step = 0; step < steps; step++) {
        world_sample_batch(&wc, &stream, WORLD_TRAIN, batch, clips, ctx, NULL, NULL);
        opt.lr = o->lr * fmin(1.0, (step + 1) / (double)(o->warmup > 0 ? o->warmup : 1)); // linear warm-up
        double loss, gn = 0;
        int r = teacher_gpu_step(&t, clips, ctx, &fo, &opt, &loss, &gn, err);
        if (r < 0) {
            fprintf(stderr, "error: %s\n", err);
            return 1;
        }
        if (r == 0) {
            acc += loss;
            na++;
        }
        if ((step + 1) % o->log_every == 0 || step + 1 == steps) {
            double el = now_s() - t0;
            printf("teacher step %5d/%d  flow-matching loss %.5f  grad norm %.3f  lr %.2e  skipped %ld  %.1f ms/step  "
                   "ETA %.0f s\n",
                   step + 1, steps, na ? acc / na : NAN, gn, opt.lr, t.skipped, 1e3 * el / (step + 1),
                   el / (step + 1) * (steps - step - 1));
            acc = 0;
            na = 0;
        }
        if ((o->save_every > 0 && (step + 1) % o->save_every == 0) || step + 1 == steps) {
            cudaCheck(cudaMemcpy(params, m.params, sizeof(float) * np, cudaMemcpyDeviceToHost));
            char stepstr[32];
            snprintf(stepstr, sizeof(stepstr), "%ld", m.step);
            const char* meta[] = {"note", "teacher trained by ./train_tmd on the built-in world", "step", stepstr};
            if (wan_save(o->out, c, params, meta, 2, err)) {
                fprintf(stderr, "error: %s\n", err);
                return 1;
            }
            printf("wrote %s (step %ld)\n", o->out, m.step);
        }
    }
    teacher_gpu_free(&t);
    wan_gpu_model_free(&m);
    gemm_free();
    free(clips);
    free(ctx);
    return 0;
}

// ---------------------------------------------------------------------------------------------------------
// the whole distillation with no arguments: teacher, Stage 1, Stage 2, the DMD2-v baseline, the table. Each stage's
// checkpoint is in the run directory; a finished one is skipped, one that stopped part-way resumes from its last save.
typedef struct {
    const char* run_dir;
    const char* sheet;
    TeacherRun teacher;
    int have_teacher;                   // have_teacher: --weights gave it, no teacher stage
    TmdRun stage1, stage2, baseline[2]; // stage, steps and settings (baseline: [0] at M = 1, [1] at Stage 2's M);
                                        // out/student/resume filled in here
    KdRun kd;
    int kd_tmd; // the KD warm-up (kd.steps 0: none); kd_tmd: also the TMD student's
    int eval_n, eval_steps;
    double cfg_eval, shift_eval;
    int seed;
} Pipeline;

static void run_path(char* dst, size_t n, const Pipeline* p, const char* file) {
    snprintf(dst, n, "%s/%s", p->run_dir, file);
}

// one distillation stage of the pipeline into the run directory's `ckpt`: skipped when that checkpoint is complete,
// resumed when it is part-way
static int pipeline_stage(const TmdRun* base, const Pipeline* p, const WanConfig* c, float* teacher, const char* label,
                          const char* ckpt, const char* student) {
    char path[1024], err[ST_ERRLEN];
    uint64_t done = 0;
    run_path(path, sizeof(path), p, ckpt);
    int act = ts_stage_action(path, (uint64_t)base->steps, &done, err);
    if (act == TS_BAD) {
        fprintf(stderr, "error: %s (delete it to restart the stage)\n", err);
        return 2;
    }
    if (act == TS_DONE) {
        printf("\n== %s: %s is complete (step %llu), skipped\n", label, path, (unsigned long long)done);
        return 0;
    }
    int have = act == TS_RESUME;
    TmdRun r = *base;
    r.out = path;
    r.student = student;
    r.resume = have ? path : NULL;
    printf("\n== %s: %d steps at M %d -> %s%s%s%s\n", label, r.steps, r.M, path, have ? " (resuming)" : "",
           student ? ", from " : "", student ? student : "");
    return train_tmd_distill(&r, c, teacher);
}

// the KD warm-up of the baseline's student (tmd 0) or of the TMD student from `student` (tmd 1), like pipeline_stage
static int pipeline_kd(const Pipeline* p, const WanConfig* c, float* teacher, int tmd, const char* student,
                       const char* path) {
    char err[ST_ERRLEN];
    uint64_t done = 0;
    const char* name = tmd ? "kd-tmd" : "kd";
    int act = ts_stage_action(path, (uint64_t)p->kd.steps, &done, err);
    if (act == TS_BAD) {
        fprintf(stderr, "error: %s (delete it to restart the stage)\n", err);
        return 2;
    }
    if (act == TS_DONE) {
        printf("\n== %s: %s is complete (step %llu), skipped\n", name, path, (unsigned long long)done);
        return 0;
    }
    KdRun r = p->kd;
    r.tmd = tmd;
    r.out = path;
    r.student = student;
    r.resume = act == TS_RESUME ? path : NULL;
    printf("\n== %s: KD warm-up, %d steps -> %s%s\n", name, r.steps, path, r.resume ? " (resuming)" : "");
    return train_tmd_kd(&r, c, teacher);
}

// the students' parameters from a stage checkpoint into a fresh host buffer (NULL with a message)
static float* load_student(const char* path, size_t n) {
    char err[ST_ERRLEN];
    TsMeta meta;
    float* h = (float*)malloc(sizeof(float) * n);
    TsBuffer b[1] = {{"student.params", h, n}};
    if (ts_load(path, b, 1, &meta, err)) {
        fprintf(stderr, "error: %s\n", err);
        free(h);
        return NULL;
    }
    return h;
}

// step 5: every row from the same noise, scored by the toy VBench; the table as cpu/distill_run.h prints it
static int pipeline_evaluate(const Pipeline* p, const WanConfig* c, float* teacher) {
    char err[ST_ERRLEN], path[1024], nm[48];
    WorldConfig wc;
    if (teacher_gpu_world_for(&wc, c, err)) {
        fprintf(stderr, "error: %s\n", err);
        return 2;
    }
    const TmdRun* t2 = &p->stage2;
    StudentConfig sc;
    sc.wan = *c;
    sc.head_blocks = t2->H;
    sc.fusion = FUSION_GATED;
    sc.fuse_ffn_dim = c->ffn_dim;
    size_t ns = student_num_params(&sc), nw = wan_num_params(c);
    gemm_init();
    EvalGpu e;
    if (eval_gpu_init(&e, c, &wc, p->eval_n, (uint64_t)p->seed, p->sheet != NULL, err)) {
        fprintf(stderr, "error: %s\n", err);
        return 2;
    }
    printf("\n== evaluation: %d captions of world '%s', every row from the same noise\n", e.n, wc.name);
    DistillRow rows[DISTILL_MAX_ROWS];
    int nr = 0;
    eval_gpu_real_row(&e, &rows[nr++]);
    WanGpuModel T;
    wan_gpu_model_init(&T, c, teacher, 0, "teacher");
    eval_gpu_teacher_row(&e, &rows[nr], nr, &T, p->eval_steps, SOLVER_UNIPC, p->shift_eval, p->cfg_eval);
    nr++;
    for (int k = 1; k <= 4; k *= 2) {
        eval_gpu_teacher_row(&e, &rows[nr], nr, &T, k, SOLVER_EULER, p->shift_eval, p->cfg_eval);
        nr++;
    }
    wan_gpu_model_free(&T);
    // TMD: after Stage 1 at M, then the Stage 2 student at every M' = 1..M (one student trained at M)
    const char* tmd_ckpt[2] = {"stage1.safetensors", "stage2.safetensors"};
    for (int k = 0; k < 2; k++) {
        run_path(path, sizeof(path), p, tmd_ckpt[k]);
        float* h = load_student(path, ns);
        if (!h) return 2;
        TmdGpuStudent S;
        tmd_gpu_student_init(&S, &sc, h);
        free(h);
        TmdGpuRollout ro;
        rollout_gpu_init(&ro, &sc, &e.a, t2->N, tmmf_defaults(1).gamma_inner);
        for (int M = k ? 1 : t2->M; M <= t2->M; M++) {
            snprintf(nm, sizeof(nm), k ? "TMD M%d N%d H%d" : "TMD M%d N%d H%d after Stage 1", M, t2->N, t2->H);
            eval_gpu_student_row(&e, &rows[nr], nr, nm, &S, &ro, NULL, M,
                                 effective_nfe(M, t2->N, t2->H, c->num_layers));
            nr++;
        }
        rollout_gpu_free(&ro);
        tmd_gpu_student_free(&S);
    }
    // the paper's DMD2-v baselines (gpu/stage_plan.h pipeline_stages), each sampled at its own M: M = 1 KD-warmed
    // (unless --kd-steps 0), M >= 2 without KD
    PipeStage st[PIPE_MAX_STAGES];
    int nst = pipeline_stages(st, t2->M, p->kd.steps > 0, 0, 0);
    for (int i = 0; i < nst; i++) {
        if (st[i].kind != STAGE_BASELINE) continue;
        run_path(path, sizeof(path), p, st[i].ckpt);
        float* hb = load_student(path, nw);
        if (!hb) return 2;
        WanGpuModel P;
        wan_gpu_model_init(&P, c, hb, 0, "DMD2-v student");
        free(hb);
        snprintf(nm, sizeof(nm),
                 st[i].M > 1     ? "DMD2-v M%d"
                 : st[i].from[0] ? "DMD2-v M%d (KD)"
                                 : "DMD2-v M%d (no KD)",
                 st[i].M);
        eval_gpu_student_row(&e, &rows[nr], nr, nm, NULL, NULL, &P, st[i].M, (double)st[i].M);
        nr++;
        wan_gpu_model_free(&P);
    }
    distill_print(rows, nr);
    printf(
        "  (ms/sample: the device time of a batch of %d over %d; the teacher rows include the host solver's copies)\n",
        e.n, e.n);
    if (p->sheet) {
        if (eval_gpu_sheet(&e, rows, nr, p->sheet, err))
            fprintf(stderr, "error: %s\n", err);
        else
            printf("  contact sheet: %s\n", p->sheet);
    }
    eval_gpu_free(&e);
    gemm_free();
    return 0;
}

static int train_tmd_pipeline(Pipeline* p, const WanConfig* c, real* teacher) {
    char path[1024], err[ST_ERRLEN];
    double t0 = now_s();
    if (mkdir(p->run_dir, 0777) && errno != EEXIST) {
        fprintf(stderr, "error: cannot create the run directory %s: %s\n", p->run_dir, strerror(errno));
        return 1;
    }
    run_path(path, sizeof(path), p, "teacher.safetensors");
    if (!p->have_teacher) { // 1. the teacher
        FILE* f = fopen(path, "rb");
        if (f) {
            fclose(f);
            WanConfig lc = *c;
            real* lb = NULL;
            if (wan_load(path, &lc, 0, 0, &lb, err)) {
                fprintf(stderr, "error: %s (delete it to retrain the teacher)\n", err);
                return 2;
            }
            memcpy(teacher, lb, sizeof(real) * wan_num_params(c));
            free(lb);
            printf("\n== teacher: %s exists, skipped\n", path);
        } else {
            TeacherRun t = p->teacher;
            t.out = path;
            printf("\n== teacher: %d steps -> %s\n", t.steps, path);
            int rc = train_teacher(&t, c, teacher);
            if (rc) return rc;
        }
    }
    // 2. Stage 1 TM-MF, (--kd-tmd: the TMD student's KD warm-up), 3. Stage 2 DMD2-v with the rollout, 4. the DMD2-v
    // baselines: KD warm-up and the one-step student, then the M-step student without KD (gpu/stage_plan.h)
    PipeStage st[PIPE_MAX_STAGES];
    int nst = pipeline_stages(st, p->stage2.M, p->kd.steps > 0, p->kd_tmd, 0);
    int rc = 0;
    for (int i = 0; i < nst && !rc; i++) {
        char from[1024];
        run_path(from, sizeof(from), p, st[i].from);
        const char* student = st[i].from[0] ? from : NULL;
        if (st[i].kind == STAGE_KD) {
            run_path(path, sizeof(path), p, st[i].ckpt);
            rc = pipeline_kd(p, c, teacher, st[i].tmd, student, path);
        } else if (st[i].kind == STAGE_STAGE1)
            rc = pipeline_stage(&p->stage1, p, c, teacher, st[i].label, st[i].ckpt, student);
        else if (st[i].kind == STAGE_STAGE2)
            rc = pipeline_stage(&p->stage2, p, c, teacher, st[i].label, st[i].ckpt, student);
        else if (st[i].kind == STAGE_BASELINE)
            rc = pipeline_stage(&p->baseline[st[i].M == 1 ? 0 : 1], p, c, teacher, st[i].label, st[i].ckpt, student);
    }
    if (!rc && !p->stage1.data) rc = pipeline_evaluate(p, c, teacher); // 5. the table (the built-in world's scorer)
    if (!rc) printf("\npipeline done in %.0f s (run directory %s)\n", now_s() - t0, p->run_dir);
    return rc;
}

// --plan: the per-rank memory plan of one step of `stage` on K GPUs of gpu_gib GiB, K2 of them per sample, from host
// arithmetic only (gpu/shard_plan.h: no CUDA call, so it runs on any machine), then the same step's total at other
// rank counts. A Wan2.1 preset takes Table 7's N, H and discriminator size for the flags not given, and 480p x 81
// frames (latent 21 x 60 x 104) without --latent-*. Returns 0 when the step fits, 1 (with the numbers) when not.
static int train_tmd_plan(int argc, char** argv, const char* preset, const char* stage, int batch, TmdRun o, int kd_tmd,
                          int kd_pairs, int K, int K2, double gpu_gib, const char* recompute) {
    char err[ST_ERRLEN];
    WanConfig c;
    Table7 t7;
    if (!preset) {
        fprintf(stderr, "error: --plan needs --preset (wan2.1-t2v-14b, wan2.1-t2v-1.3b, world, tiny)\n");
        return 2;
    }
    if (wan_preset(&c, preset, err)) {
        fprintf(stderr, "error: %s\n", err);
        return 2;
    }
    if (!stage) stage = "stage2";
    int id = !strcmp(stage, "teacher")                                ? 0
             : !strcmp(stage, "stage1")                               ? 1
             : !strcmp(stage, "stage2") || !strcmp(stage, "baseline") ? 2
             : !strcmp(stage, "kd")                                   ? 3
                                                                      : -1;
    if (id < 0) {
        fprintf(stderr, "error: --plan --stage '%s': expected teacher, stage1, stage2, baseline or kd\n", stage);
        return 2;
    }
    int t7ok = table7_for(&c, &t7);
    if (t7ok && !flag_given(argc, argv, "--N")) o.N = t7.N;
    if (t7ok && !flag_given(argc, argv, "--head-blocks")) o.H = t7.H;
    if (t7ok && !flag_given(argc, argv, "--disc-width")) o.disc_width = table7_disc_width(&c, t7.disc_params, NULL);
    if (!flag_given(argc, argv, "--batch")) batch = 1;
    if (o.lat_t <= 0 || o.lat_h <= 0 || o.lat_w <= 0) {
        if (!t7ok) {
            fprintf(
                stderr,
                "error: --plan for %s needs the latent grid: --latent-frames T --latent-height H --latent-width W\n",
                c.name);
            return 2;
        }
        o.lat_t = 21;
        o.lat_h = 60;
        o.lat_w = 104; // 480p x 81 frames through the Wan VAE (4x temporal, 8x spatial)
    }
    if (o.lat_t % c.patch[0] || o.lat_h % c.patch[1] || o.lat_w % c.patch[2] || batch < 1 || o.H < 1 ||
        o.H >= c.num_layers || o.N < 1) {
        fprintf(stderr,
                "error: --plan: the latent grid %d x %d x %d must divide into patches (%d, %d, %d), --batch >= 1, --N "
                ">= 1, --head-blocks 1 .. %d\n",
                o.lat_t, o.lat_h, o.lat_w, c.patch[0], c.patch[1], c.patch[2], c.num_layers - 1);
        return 2;
    }
    int baseline = !strcmp(stage, "baseline"), kd = id == 3;
    StudentConfig sc;
    sc.wan = c;
    sc.head_blocks = o.H;
    sc.fusion = FUSION_GATED;
    sc.fuse_ffn_dim = c.ffn_dim;
    PlanInput pin;
    memset(&pin, 0, sizeof(pin));
    pin.wan = c;
    pin.T = o.lat_t;
    pin.Hl = o.lat_h;
    pin.Wl = o.lat_w;
    pin.batch = batch;
    pin.N = o.N;
    pin.H = o.H;
    pin.student_extra = baseline || id == 0 || (kd && !kd_tmd) ? 0 : student_num_params(&sc) - wan_num_params(&c);
    pin.baseline = baseline;
    pin.fuse_ffn_dim = sc.fuse_ffn_dim;
    pin.recompute = strcmp(recompute, "off") != 0;
    pin.naive_attention = !wan_gpu_use_flash(&c);
    pin.kd_pairs = kd ? kd_pairs : 0;
#ifdef ENABLE_FP32
    pin.fp32 = 1;
#endif
    if (id == 2 && o.gan_weight > 0) {
        // the head the training path builds (train_tmd_distill): multiscale where the grid has all its scales (auto)
        int ms = o.disc_head == DISC_MULTISCALE || (o.disc_head < 0 && disc_multiscale_fits(o.lat_t, o.lat_h, o.lat_w));
        DiscConfig dcfg =
            ms ? disc_config_multiscale(&c, 1024, o.lat_t, o.lat_h, o.lat_w)
               : disc_config(&c, o.disc_width / 2, o.disc_width / 2, o.disc_width, o.disc_width, o.disc_width);
        pin.disc_params = disc_num_params(&dcfg);
        pin.disc_heads = dcfg.n_heads;
        pin.disc = dcfg;
        for (int h = 0; h < dcfg.n_heads; h++)
            if (dcfg.layers[h] + 1 > pin.disc_top) pin.disc_top = dcfg.layers[h] + 1;
    }
    ShardPlanInput sp = {K, K2, gpu_gib * PLAN_GIB};
    MemPlan p;
    if (shard_plan(&p, &pin, id, &sp, err, sizeof(err))) {
        fprintf(stderr, "error: %s\n", err);
        return 2;
    }
    char title[256];
    snprintf(title, sizeof(title),
             "%s, %s, one rank of %d (cp %d: %d data-parallel group%s of batch %d), latent %d x %d x %d (%d tokens, %d "
             "a rank), N %d H %d, %s, recompute %s",
             stage, c.name, K, K2, K / K2, K / K2 > 1 ? "s" : "", batch, o.lat_t, o.lat_h, o.lat_w, plan_tokens(&pin),
             plan_tokens(&pin) / K2, o.N, o.H, pin.fp32 ? "fp32" : "bf16", pin.recompute ? "on" : "off");
    plan_print(&p, title, stdout);
    printf(
        "  sharded states %.2f GiB, the rest %.2f GiB; %.2f GiB reserved (CUDA context, workspaces); a GPU: %.2f GiB\n",
        shard_plan_states(&p) / PLAN_GIB, (p.total - shard_plan_states(&p)) / PLAN_GIB, SHARD_PLAN_RESERVE_GIB,
        gpu_gib);
    printf("the same step on other rank counts, GiB a rank (ranks/cp: cp %d where it divides the ranks, else 1):\n ",
           K2);
    int Ks[] = {1, 2, 4, 8, 16, 32, 64};
    for (int k = 0; k < 7; k++) {
        ShardPlanInput q = {Ks[k], Ks[k] % K2 ? 1 : K2, sp.gpu_bytes};
        MemPlan m;
        char e2[ST_ERRLEN];
        if (shard_plan(&m, &pin, id, &q, e2, sizeof(e2))) continue;
        printf(" %d/%d: %.1f%s", Ks[k], q.cp, m.total / PLAN_GIB,
               shard_plan_check(&m, &q, e2, sizeof(e2)) ? " (does not fit)" : "");
    }
    printf("\n");
    if (shard_plan_check(&p, &sp, err, sizeof(err))) {
        fprintf(stderr, "error: %s\n", err);
        return 1;
    }
    printf("fits: %.2f GiB a rank of %.2f GiB (%.2f GiB free after the reserve)\n", p.total / PLAN_GIB, gpu_gib,
           gpu_gib - SHARD_PLAN_RESERVE_GIB - p.total / PLAN_GIB);
    return 0;
}

int main(int argc, char** argv) {
    const char* preset = NULL;
    const char* weights = NULL;
    const char* stage = NULL;
    const char* out = NULL;
    int heads = 0, steps = -1, batch = -1, seed = 1, log_every = 10, save_every = -1, warmup = 50;
    double lr = -1, wd = 0.01, max_grad_norm = 1.0, p_drop = 0.1, shift = 1.0;
    TmdRun tr;
    memset(&tr, 0, sizeof(tr));
    tr.M = 2;
    tr.N = 2;
    tr.H = 2;
    tr.update_every = 5;
    tr.clip_student = -1;
    tr.accum = 1;
    tr.gan_weight = 0.03;
    tr.disc_lr = 1e-4;
    tr.disc_width = 64;
    tr.disc_head = -1;
    tr.cfg_dmd = -1; // paper's λ; cpu/distill_run.h's lr; width 64 for the world's 96 input channels (tiny: 16 for 4,
                     // Wan 1.3B: 512 for 384)
    // every stage's steps, batch, learning rates, clipping and the KD pairs' sampler: -1 takes gpu/stage_plan.h's table
    // (the built-in world: cpu/distill_run.h's method, the step counts sized for the README's goal of < 30 minutes on
    // one H100 for the whole run, UNMEASURED so far; a Wan2.1 teacher on --data: Table 7), printed at start
    const char* recompute = "auto";
    const char* disc_head = "auto";
    Pipeline pl;
    memset(&pl, 0, sizeof(pl));
    pl.run_dir = "run";
    pl.sheet = NULL;
    pl.eval_n = 16;
    pl.eval_steps = 16;
    pl.cfg_eval = 2;
    pl.shift_eval = 3;
    int teacher_steps = -1, tmmf_steps = -1, dmd_iters = -1, tmmf_batch = -1, dmd_batch = -1;
    double tmmf_lr = -1, student_lr = -1, fake_lr = -1;
    int kd_pairs = -1, kd_steps = -1, kd_batch = -1, kd_tmd = 0, kd_sampler_steps = -1, kd_skip_layer = -2;
    double kd_lr = -1, kd_cfg = -1, kd_shift = -1;
    const char* kd_cache = NULL;
    int plan_only = 0, plan_ranks = 1, plan_cp = 1;
    double plan_gpu_gib = 80; // --plan (gpu/shard_plan.h)
    Flag flags[] = {
        FLAG_STR("--stage", &stage,
                 "run one stage only: teacher (flow matching on the built-in world); stage1, stage2: the TMD stages; "
                 "kd: the KD warm-up of a one-step student; baseline: DMD2-v. Without it: the whole pipeline"),
        FLAG_STR("--run-dir", &pl.run_dir,
                 "pipeline: the directory of every stage's checkpoint (a rerun continues where the last one stopped)"),
        FLAG_STR(
            "--preset", &preset,
            "model preset: wan2.1-t2v-1.3b, wan2.1-t2v-14b, world, tiny (none: world, or inferred from --weights)"),
        FLAG_STR("--data", &tr.data,
                 "a latent dataset: a file (./test_tmd pack; world/README.md) or a directory (./sample_tmd --dataset): "
                 "Stage 1, Stage 2 and the baseline train on its latents and contexts, the KD warm-up's teacher pairs "
                 "take its contexts, CFG uses its negative prompt; needs --weights (the teacher), no table; a Wan2.1 "
                 "1.3B/14B teacher gets the paper's Table 7 defaults"),
        FLAG_STR("--weights", &weights,
                 "the teacher (stage1/stage2/baseline, the pipeline: no teacher stage) or the teacher's start (--stage "
                 "teacher): a Wan2.1 checkpoint (.safetensors, index.json or directory)"),
        FLAG_INT("--heads", &heads, "attention heads when the checkpoint does not say (0: infer)"),
        FLAG_INT("--steps", &steps, "single stage: optimizer steps (-1: the stage table's, printed at start)"),
        FLAG_INT("--batch", &batch,
                 "teacher (also the pipeline's) and a single stage: clips per step (-1: the stage table's)"),
        FLAG_DOUBLE("--lr", &lr,
                    "single stage: AdamW learning rate (-1: the stage table's; teacher: after the warm-up, also the "
                    "pipeline's; stage2/baseline: given, also the fake score's)"),
        FLAG_INT("--warmup", &warmup, "teacher: steps of linear learning-rate warm-up"),
        FLAG_DOUBLE("--wd", &wd, "AdamW decoupled weight decay"),
        FLAG_DOUBLE("--max-grad-norm", &max_grad_norm, "teacher: global gradient-norm clipping (<= 0: off)"),
        FLAG_DOUBLE("--p-drop", &p_drop, "teacher: condition dropout to the empty caption (classifier-free guidance)"),
        FLAG_DOUBLE("--shift", &shift, "teacher: training timestep shift: sigma = shift_gamma(u), u ~ U(0, 1)"),
        FLAG_INT("--seed", &seed,
                 "initialisation, data stream, timesteps and noise (pipeline: also the evaluation set and its noise)"),
        FLAG_INT("--log-every", &log_every, "print the mean loss every N steps"),
        FLAG_INT("--save-every", &save_every,
                 "also write the checkpoint every N steps (-1: single stage 0, only at the end; pipeline Stage "
                 "1/2/baseline 100)"),
        FLAG_STR(
            "--out", &out,
            "single stage: where its checkpoint is written (default teacher.safetensors, stage1.safetensors, ...)"),
        FLAG_STR("--student", &tr.student,
                 "--stage stage2 (and kd with --kd-tmd 1): the Stage 1 checkpoint the student starts from; --stage "
                 "baseline: the KD checkpoint (none: the teacher)"),
        FLAG_STR("--resume", &tr.resume,
                 "--stage stage1/stage2/kd/baseline: continue the run of this checkpoint (same settings; bit-identical "
                 "to no interruption). The pipeline resumes by itself"),
        FLAG_INT("--M", &tr.M,
                 "TMD and DMD2-v: outer steps the students are trained for (the pipeline: TMD sampled at M' = 1..M, "
                 "the DMD2-v baselines at M = 1 and M)"),
        FLAG_INT("--N", &tr.N, "TMD: inner (flow-head) steps"),
        FLAG_INT("--head-blocks", &tr.H, "TMD: H, the DiT blocks of the flow head"),
        FLAG_INT_R("--accum", &tr.accum, 0, 4096,
                   "stage1/stage2/baseline (and the pipeline's): micro-batches per optimizer step, gradients summed "
                   "(the step's batch: ranks x batch x N); 0: Table 7's global batch of 64 over ranks x batch (the "
                   "default with --data on a Wan2.1 teacher)"),
        FLAG_INT_R("--bench", &tr.bench, 0, 64,
                   "with --stage stage1/stage2/baseline: run N steps on one synthetic batch (N(0, 1) latents of "
                   "--latent-frames/height/width and contexts; random teacher weights without --weights), print each "
                   "step's wall time, the median per kind after the first, and the device memory in use against the "
                   "plan; nothing saved"),
        FLAG_SWITCH("--fsdp", &tr.fsdp,
                    "stage1/stage2/baseline: fully sharded data parallelism over the mpirun ranks: every Wan model of "
                    "the step (student, fake score, teacher) kept as this rank's 1/ranks slices of its weights, "
                    "gradients and AdamW moments, each block gathered as the DiT reaches it; one consolidated "
                    "checkpoint as without it (README: Multi-GPU)"),
        FLAG_INT("--latent-frames", &tr.lat_t, "--bench: latent T (1.3B/14B at 480p x 81 frames: 21)"),
        FLAG_INT("--latent-height", &tr.lat_h, "--bench: latent H (480p: 60)"),
        FLAG_INT("--latent-width", &tr.lat_w, "--bench: latent W (480p: 104)"),
        FLAG_INT("--update-every", &tr.update_every,
                 "stage2/baseline: the student is updated every k-th iteration, the fake score otherwise"),
        FLAG_DOUBLE("--clip-student", &tr.clip_student,
                    "the student's gradient-norm clipping in every stage given (0: off; -1: the stage table's: Stage 1 "
                    "off, Stage 2, baseline and KD 10, as FastGen and the CPU reference)"),
        FLAG_DOUBLE_R(
            "--cfg-dmd", &tr.cfg_dmd, -1, 100,
            "stage2/baseline: the teacher's guidance in the VSD gradient, i.e. the distillation target (-1: the stage "
            "table's: the world 2, its teacher's best guidance as in the CPU reference; a Wan2.1 teacher Table 7's 5)"),
        FLAG_DOUBLE_R(
            "--gan-weight", &tr.gan_weight, 0, 1000,
            "stage2/baseline: the GAN loss weight lambda (paper: 0.03; 0: no discriminator at all, nothing allocated)"),
        FLAG_DOUBLE_R(
            "--disc-lr", &tr.disc_lr, 0, 1,
            "stage2/baseline: the discriminator's AdamW learning rate (betas 0.9, 0.99, wd 0.01, no clipping)"),
        FLAG_INT_R("--disc-width", &tr.disc_width, 2, 4096,
                   "stage2/baseline: the strided head's width W, even: convolutions W/2, W/2, W, W, MLP hidden W (the "
                   "CPU tiny run: 16)"),
        FLAG_STR("--disc-head", &disc_head,
                 "stage2/baseline: the discriminator head: multiscale (FastGen's multiscale_down_mlp_large, the "
                 "paper's 68M at 1.3B), strided (the Conv3D stack of --disc-width), auto (multiscale where the latent "
                 "grid is >= 16 on every axis, i.e. Wan scale; else strided)"),
        FLAG_INT("--teacher-steps", &teacher_steps, "pipeline: teacher flow-matching steps (-1: the stage table's)"),
        FLAG_INT("--tmmf-steps", &tmmf_steps, "pipeline: Stage 1 (TM-MF) steps (-1: the stage table's)"),
        FLAG_INT("--tmmf-batch", &tmmf_batch, "pipeline: Stage 1 batch (-1: the stage table's)"),
        FLAG_DOUBLE("--tmmf-lr", &tmmf_lr, "pipeline: Stage 1 learning rate (-1: the stage table's)"),
        FLAG_INT("--dmd-iters", &dmd_iters,
                 "pipeline: Stage 2 and baseline iterations, student + fake score (-1: the stage table's for each M)"),
        FLAG_INT("--dmd-batch", &dmd_batch, "pipeline: Stage 2 and baseline batch (-1: the stage table's)"),
        FLAG_DOUBLE("--student-lr", &student_lr,
                    "pipeline: Stage 2 and baseline student learning rate (-1: the stage table's)"),
        FLAG_DOUBLE("--fake-lr", &fake_lr, "pipeline: the fake score's learning rate (-1: the stage table's)"),
        FLAG_INT_R("--kd-steps", &kd_steps, -1, INT_MAX,
                   "KD warm-up steps (pipeline: before the one-step baseline's DMD2-v, 0: none; --stage kd: its steps; "
                   "-1: the stage table's: the world 200, Table 7's 10k (1.3B) / 5k (14B))"),
        FLAG_INT_R("--kd-pairs", &kd_pairs, -1, INT_MAX,
                   "KD warm-up: teacher ODE pairs: noise in the data's latent shape, a caption (the built-in world's "
                   "or --data's context), the teacher's UniPC CFG sample against the empty caption or --data's "
                   "negative prompt (-1: the stage table's: the world 128, Table 7's 10k)"),
        FLAG_INT_R("--kd-batch", &kd_batch, -1, TMD_MAX_BATCH, "KD warm-up: pairs per step (-1: the stage table's)"),
        FLAG_DOUBLE_R("--kd-lr", &kd_lr, -1, 1,
                      "KD warm-up: AdamW learning rate, betas 0.9, 0.99, --wd, the student's clipping (-1: the stage "
                      "table's: the world 3e-4, Table 7's 7e-5)"),
        FLAG_INT_R("--kd-sampler-steps", &kd_sampler_steps, -1, 10000,
                   "KD pairs: the teacher's UniPC steps (-1: the world's evaluation sampler's 16; a Wan2.1 teacher's "
                   "50, as Wan2.1's generate.py)"),
        FLAG_DOUBLE_R("--kd-cfg", &kd_cfg, -1, 100,
                      "KD pairs: the teacher's CFG scale (-1: the world's evaluation 2; Table 7's 5)"),
        FLAG_DOUBLE_R("--kd-shift", &kd_shift, -1, 100,
                      "KD pairs: the teacher sampler's shift (-1: the world's evaluation 3; Wan2.1 T2V's 5)"),
        FLAG_INT_R("--kd-skip-layer", &kd_skip_layer, -2, 1000,
                   "KD pairs: skip-layer guidance, the block dropped from the unconditional forward (FastGen's SLG; "
                   "-1: none; -2: the stage table's: the world none, Table 7's 10)"),
        FLAG_BOOL("--kd-tmd", &kd_tmd,
                  "KD: also KD-warm the TMD student after Stage 1 (pipeline); --stage kd: warm the TMD student of "
                  "--student instead of the baseline's"),
        FLAG_STR("--kd-cache", &kd_cache,
                 "KD: the teacher pairs' file, made once and reused when its data (world, or --data's dataset) and "
                 "settings match (default RUN_DIR/kd_pairs.safetensors; --stage kd: kd_pairs.safetensors)"),
        FLAG_INT("--eval-n", &pl.eval_n, "pipeline: captions sampled and scored per table row (3 .. 64)"),
        FLAG_INT("--teacher-eval-steps", &pl.eval_steps, "pipeline: steps of the teacher's reference row (UniPC)"),
        FLAG_DOUBLE("--cfg-eval", &pl.cfg_eval, "pipeline: the teacher's guidance when sampling"),
        FLAG_DOUBLE("--shift-eval", &pl.shift_eval, "pipeline: the teacher sampler's shift"),
        FLAG_STR("--sheet", &pl.sheet, "pipeline: the contact sheet PNG (none: RUN_DIR/table.png)"),
        FLAG_STR("--recompute", &recompute,
                 "per-block activation recompute in every training step: auto (on when the step's memory plan without "
                 "it does not fit the GPU's free memory), on, off"),
        FLAG_SWITCH("--plan", &plan_only,
                    "print the per-rank memory plan of one --stage step (default stage2) of --preset on --ranks GPUs "
                    "of --gpu-mem GiB, --cp per sample, and exit: 0 when it fits, 1 when not; host arithmetic only, no "
                    "GPU needed (a Wan2.1 preset: Table 7's N, H, discriminator; 480p x 81 frames unless --latent-*; "
                    "--batch per data-parallel group, default 1; --recompute off to plan without)"),
        FLAG_INT_R("--ranks", &plan_ranks, 1, 65536,
                   "--plan: GPUs every model is sharded over (fully sharded data parallelism)"),
        FLAG_INT_R("--cp", &plan_cp, 1, 1024,
                   "context parallelism: GPUs that split each sample's tokens (divides the ranks, the heads and the "
                   "tokens): with --plan, of --ranks; with one --stage stage1, stage2 or baseline, of mpirun -np K "
                   "(K/cp data-parallel groups, each sharing its samples' tokens)"),
        FLAG_DOUBLE_R("--gpu-mem", &plan_gpu_gib, 1, 1e6,
                      "--plan: one GPU's memory in GiB (an H100 80GB has 79.6 GiB, an H200 140.4)"),
        FLAG_END};
    int rc = flags_parse(flags, argc, argv, 1,
                         "usage: ./train_tmd [flags]   (no flags: the whole distillation of the built-in world)");
    if (rc) return rc == 1 ? 0 : 2;
    if (stage && strcmp(stage, "teacher") && strcmp(stage, "stage1") && strcmp(stage, "stage2") &&
        strcmp(stage, "kd") && strcmp(stage, "baseline")) {
        fprintf(stderr,
                "error: --stage '%s': expected teacher, stage1, stage2, kd or baseline (or no --stage: the whole "
                "pipeline)\n",
                stage);
        return 2;
    }
    if (tr.fsdp && (!stage || !strcmp(stage, "teacher") || !strcmp(stage, "kd"))) {
        fprintf(stderr,
                "error: --fsdp shards the distillation stages only (--stage stage1, stage2 or baseline); found "
                "%s%s: run it without --fsdp\n",
                stage ? "--stage " : "the whole pipeline", stage ? stage : "");
        return 2;
    }
    if (stage && !strcmp(stage, "kd") && (steps >= 0 || lr >= 0 || kd_steps == 0)) {
        fprintf(stderr,
                "error: --stage kd takes --kd-steps >= 1, --kd-batch and --kd-lr (found --steps %d, --lr %g, "
                "--kd-steps %d)\n",
                steps, lr, kd_steps);
        return 2;
    }
    if (steps < -1 || batch < -1 || batch == 0 || log_every < 1 || save_every < -1 || warmup < 0 ||
        teacher_steps < -1 || tmmf_steps < -1 || dmd_iters < -1 || tmmf_batch < -1 || tmmf_batch == 0 ||
        dmd_batch < -1 || dmd_batch == 0 || kd_batch == 0 || kd_pairs == 0 || kd_sampler_steps == 0 || tr.M < 1 ||
        tr.N < 1 || tr.update_every < 1) {
        fprintf(stderr, "error: need --steps, --teacher-steps, --tmmf-steps, --dmd-iters, --save-every, --warmup >= 0 "
                        "and --batch, --tmmf-batch, "
                        "--dmd-batch, --kd-batch, --kd-pairs, --kd-sampler-steps, --log-every, --M, --N, "
                        "--update-every >= 1 (-1: the stage table's)\n");
        return 2;
    }
    if (strcmp(recompute, "auto") && strcmp(recompute, "on") && strcmp(recompute, "off")) {
        fprintf(stderr, "error: --recompute '%s': expected auto, on or off\n", recompute);
        return 2;
    }
    recompute_mode = !strcmp(recompute, "on") ? 1 : !strcmp(recompute, "off") ? 0 : -1;
    if (!strcmp(disc_head, "multiscale"))
        tr.disc_head = DISC_MULTISCALE;
    else if (!strcmp(disc_head, "strided"))
        tr.disc_head = DISC_STRIDED;
    else if (strcmp(disc_head, "auto")) {
        fprintf(stderr, "error: --disc-head %s: expected multiscale, strided or auto\n", disc_head);
        return 2;
    }
    if (plan_only)
        return train_tmd_plan(argc, argv, preset, stage, batch, tr, kd_tmd, kd_pairs, plan_ranks, plan_cp, plan_gpu_gib,
                              recompute);
    int cp_stage = stage && (!strcmp(stage, "stage1") || !strcmp(stage, "stage2") || !strcmp(stage, "baseline"));
    if (flag_given(argc, argv, "--ranks") || flag_given(argc, argv, "--gpu-mem")) {
        fprintf(stderr, "error: --ranks and --gpu-mem go with --plan (a training run takes its ranks from mpirun -np "
                        "K)\n");
        return 2;
    }
    if (flag_given(argc, argv, "--cp") && !cp_stage) {
        fprintf(stderr,
                "error: --cp goes with --plan or one --stage stage1, stage2 or baseline (their steps split each "
                "sample's tokens over the group); %s%s runs each sample on one rank: drop --cp\n",
                stage ? "--stage " : "the pipeline", stage ? stage : "");
        return 2;
    }
    tr.cp = plan_cp; // the distillation stages' context parallelism (train_tmd_distill: distill_cp_split)
    if (tr.bench && (!stage || (strcmp(stage, "stage1") && strcmp(stage, "stage2") && strcmp(stage, "baseline")) ||
                     tr.data || tr.resume || steps >= 0)) {
        fprintf(stderr, "error: --bench N times N steps of one --stage stage1, stage2 or baseline on synthetic data: "
                        "no --data, --resume or --steps\n");
        return 2;
    }
    if (tr.bench && (tr.lat_t <= 0 || tr.lat_h <= 0 || tr.lat_w <= 0)) {
        fprintf(stderr, "error: --bench needs the latent shape: --latent-frames T --latent-height H --latent-width W "
                        "(480p x 81 frames: 21 60 104)\n");
        return 2;
    }
    if (tr.disc_width % 2) {
        fprintf(stderr,
                "error: --disc-width %d: expected an even width (the first two convolutions have W/2 channels)\n",
                tr.disc_width);
        return 2;
    }
    if (!stage && (teacher_steps == 0 || tmmf_steps == 0 || dmd_iters == 0)) {
        fprintf(stderr,
                "error: the pipeline needs --teacher-steps, --tmmf-steps, --dmd-iters >= 1 (found %d, %d, %d): every "
                "stage writes the "
                "checkpoint the next one reads; give a trained teacher with --weights instead\n",
                teacher_steps, tmmf_steps, dmd_iters);
        return 2;
    }
    if (!stage &&
        8 + tr.M > DISTILL_MAX_ROWS) { // real, 4 teacher rows, TMD after Stage 1, TMD at M' = 1..M, two baselines
        fprintf(stderr, "error: --M %d: the pipeline's table has %d rows for M = %d and holds %d; use --M <= %d\n",
                tr.M, 8 + tr.M, tr.M, DISTILL_MAX_ROWS, DISTILL_MAX_ROWS - 8);
        return 2;
    }
    if (!stage && (steps >= 0 || out || tr.student || tr.resume)) {
        fprintf(stderr, "error: --steps, --out, --student and --resume are for one --stage; the pipeline takes "
                        "--teacher-steps, --tmmf-steps, "
                        "--dmd-iters and resumes from --run-dir by itself\n");
        return 2;
    }
    Table7 t7;
    const Table7* t7p = NULL; // the stage table's scale: a Wan2.1 teacher on --data (Table 7), else the built-in world
    if (tr.data) { // a real teacher distilled from a latent dataset: no teacher stage; Table 7 for the flags not given
        char err[ST_ERRLEN];
        WanConfig pc;
        if (!weights || (stage && !strcmp(stage, "teacher"))) {
            fprintf(stderr, "error: --data trains the students of a given teacher: add --weights TEACHER (and no "
                            "--stage teacher)\n");
            return 2;
        }
        if ((rc = train_data_peek_config(&pc, preset, weights, heads, err))) {
            fprintf(stderr, "error: %s\n", err);
            return rc;
        }
        TrainData probe; // the file against the model now, before the weights are read
        if (train_data_open(&probe, tr.data, &pc, 0, 1, 0, 1, err)) {
            fprintf(stderr, "error: %s\n", err);
            return 2;
        }
        printf("data: %s, %lld samples, latents [%d, %d, %d, %d]\n", tr.data, (long long)probe.ld.n, probe.ld.C,
               probe.T, probe.H, probe.W);
        train_data_free(&probe);
        if (table7_for(
                &pc,
                &t7)) { // the architecture's and the discriminator's; every stage's own come from the stage table below
            t7p = &t7;
            Table7Set set[] = {
                {"--M", &tr.M, NULL, (double)t7.M},
                {"--N", &tr.N, NULL, (double)t7.N},
                {"--head-blocks", &tr.H, NULL, (double)t7.H},
                {"--disc-lr", NULL, &tr.disc_lr, t7.disc_lr},
                {"--disc-width", &tr.disc_width, NULL, (double)table7_disc_width(&pc, t7.disc_params, NULL)},
                {"--accum", &tr.accum, NULL, 0}}; // 0: the global batch over the ranks (train_tmd_distill)
            table7_apply(&t7, set, stage && !strcmp(stage, "kd") ? 5 : 6, argc, argv,
                         stdout); // --stage kd takes no --accum
        }
    }
    // every stage's settings from one table (gpu/stage_plan.h), the flags given in their place; printed first
    stage_defaults_print(stdout, tr.M, t7p);
    int kind = stage ? stage_kind(stage) : -1;
    StageDefaults st_teacher = stage_resolve(STAGE_TEACHER, 0, NULL, stage ? steps : teacher_steps, batch, lr, -1, -1);
    StageDefaults st1 = stage_resolve(STAGE_STAGE1, tr.M, t7p, stage ? steps : tmmf_steps, stage ? batch : tmmf_batch,
                                      stage ? lr : tmmf_lr, -1, tr.clip_student);
    StageDefaults st2 = stage_resolve(STAGE_STAGE2, tr.M, t7p, stage ? steps : dmd_iters, stage ? batch : dmd_batch,
                                      stage ? lr : student_lr, stage ? lr : fake_lr, tr.clip_student);
    StageDefaults stb[2]; // the baselines: [0] at M = 1 (or the single stage's --M), [1] at Stage 2's M
    for (int k = 0; k < 2; k++)
        stb[k] = stage_resolve(STAGE_BASELINE,
                               stage ? tr.M
                               : k   ? tr.M
                                     : 1,
                               t7p, stage ? steps : dmd_iters, stage ? batch : dmd_batch, stage ? lr : student_lr,
                               stage ? lr : fake_lr, tr.clip_student);
    StageDefaults stk = stage_resolve(STAGE_KD, 1, t7p, kd_steps, kd_batch, kd_lr, -1, tr.clip_student);
    KdDefaults kdd = kd_defaults(t7p);
    if (kd_pairs > 0) kdd.pairs = kd_pairs;
    if (kd_sampler_steps > 0) kdd.sampler_steps = kd_sampler_steps;
    if (kd_cfg >= 0) kdd.cfg = kd_cfg;
    if (kd_shift >= 0) kdd.shift = kd_shift;
    if (kd_skip_layer >= -1) kdd.skip_layer = kd_skip_layer;
    if (kd_shift == 0) {
        fprintf(stderr, "error: --kd-shift 0: expected a shift > 0 (1: none; -1: the stage table's)\n");
        return 2;
    }
    if (stk.batch > TMD_MAX_BATCH) {
        fprintf(stderr, "error: --kd-batch %d: at most %d\n", stk.batch, TMD_MAX_BATCH);
        return 2;
    }
    const StageDefaults* one = kind == STAGE_TEACHER    ? &st_teacher
                               : kind == STAGE_STAGE1   ? &st1
                               : kind == STAGE_STAGE2   ? &st2
                               : kind == STAGE_BASELINE ? &stb[0]
                                                        : NULL;
    if (one) {
        steps = one->steps;
        batch = one->batch;
        lr = one->lr;
        tr.clip_student = one->clip_student;
    } else {
        batch = st_teacher.batch;
        lr = st_teacher.lr;
        steps = st_teacher.steps;
    } // the pipeline's teacher (--stage kd: unused)
    TeacherRun tch = {steps, batch,         seed,   log_every, save_every < 0 ? 0 : save_every,  warmup, lr,
                      wd,    max_grad_norm, p_drop, shift,     out ? out : "teacher.safetensors"};
    char sheet[1024], kd_file[1024];
    if (!stage) { // the pipeline's plan, printed before anything needs the GPU
        snprintf(sheet, sizeof(sheet), "%s/table.png", pl.run_dir);
        if (!pl.sheet) pl.sheet = sheet;
        pl.seed = seed;
        pl.have_teacher = weights != NULL;
        pl.teacher = tch;
        pl.teacher.save_every = 0;
        TmdRun d = tr;
        d.seed = seed;
        d.log_every = log_every;
        d.save_every = save_every < 0 ? 100 : save_every;
        d.wd = wd;
        pl.stage1 = d;
        pl.stage1.stage = "stage1";
        pl.stage1.steps = st1.steps;
        pl.stage1.batch = st1.batch;
        pl.stage1.lr = pl.stage1.lr_fake = st1.lr;
        pl.stage1.clip_student = st1.clip_student;
        pl.stage2 = d;
        pl.stage2.stage = "stage2";
        pl.stage2.steps = st2.steps;
        pl.stage2.batch = st2.batch;
        pl.stage2.lr = st2.lr;
        pl.stage2.lr_fake = st2.lr_fake;
        pl.stage2.clip_student = st2.clip_student;
        for (int k = 0; k < 2; k++) {
            pl.baseline[k] = d;
            pl.baseline[k].stage = "baseline";
            pl.baseline[k].M = k ? tr.M : 1;
            pl.baseline[k].steps = stb[k].steps;
            pl.baseline[k].batch = stb[k].batch;
            pl.baseline[k].lr = stb[k].lr;
            pl.baseline[k].lr_fake = stb[k].lr_fake;
            pl.baseline[k].clip_student = stb[k].clip_student;
        }
        snprintf(kd_file, sizeof(kd_file), "%s/kd_pairs.safetensors", pl.run_dir);
        KdRun k = {NULL,
                   NULL,
                   NULL,
                   kd_cache ? kd_cache : kd_file,
                   0,
                   stk.steps,
                   stk.batch,
                   kdd.pairs,
                   seed,
                   log_every,
                   d.save_every,
                   tr.N,
                   tr.H,
                   stk.lr,
                   wd,
                   stk.clip_student,
                   kdd.sampler_steps,
                   kdd.cfg,
                   kdd.shift,
                   kdd.skip_layer,
                   tr.data};
        pl.kd = k;
        pl.kd_tmd = kd_tmd;
        char gan_plan[160] = "no GAN terms (--gan-weight 0)", slg[48] = "";
        if (tr.gan_weight > 0)
            snprintf(gan_plan, sizeof(gan_plan), "GAN weight %g (discriminator width %d, lr %g)", tr.gan_weight,
                     tr.disc_width, tr.disc_lr);
        if (kdd.skip_layer >= 0) snprintf(slg, sizeof(slg), ", skip-layer guidance at block %d", kdd.skip_layer);
        printf("train_tmd: the whole distillation of %s, checkpoints in %s/ (a rerun continues where this one stops)\n",
               tr.data ? "the teacher on --data" : "the built-in world", pl.run_dir);
        if (weights)
            printf("  1. teacher      from --weights %s (no teacher stage)\n", weights);
        else
            printf("  1. teacher      flow matching, %d steps, batch %d, lr %g (skipped when %s/teacher.safetensors "
                   "exists)\n",
                   tch.steps, tch.batch, tch.lr, pl.run_dir);
        printf("  2. Stage 1      TM-MF, %d steps, batch %d, lr %g, %s, M %d N %d H %d\n", st1.steps, st1.batch, st1.lr,
               st1.clip_student > 0 ? "the student clipped" : "unclipped", tr.M, tr.N, tr.H);
        printf("  3. Stage 2      DMD2-v with the flow-head rollout, %d iterations (student every %d-th), batch %d, lr "
               "%g / fake %g, clip %g, %s\n",
               st2.steps, tr.update_every, st2.batch, st2.lr, st2.lr_fake, st2.clip_student, gan_plan);
        if (kd_tmd && stk.steps > 0)
            printf("     (--kd-tmd)   KD warm-up of the TMD student after Stage 1, as below\n");
        if (stk.steps > 0)
            printf("  4. baseline M1  KD warm-up of a plain Wan student at one step (%s/kd.safetensors): %d steps, "
                   "batch %d, lr %g on %d teacher ODE pairs (UniPC %d steps, "
                   "CFG %g against %s%s, %s; cached in %s), then DMD2-v at M 1: %d iterations "
                   "(%s/baseline_m1.safetensors)\n",
                   pl.run_dir, stk.steps, stk.batch, stk.lr, kdd.pairs, kdd.sampler_steps, kdd.cfg,
                   tr.data ? "the negative prompt" : "the empty caption", slg,
                   tr.data ? "the dataset's contexts" : "the world's captions", pl.kd.pairs_path, stb[0].steps,
                   pl.run_dir);
        else
            printf(
                "  4. baseline M1  DMD2-v on a plain Wan student at M 1, %d iterations, no KD warm-up (--kd-steps 0)\n",
                stb[0].steps);
        if (tr.M > 1)
            printf("     baseline M%d  DMD2-v on a plain Wan student at M %d, %d iterations, without KD (paper Table "
                   "4; %s/baseline_m%d.safetensors)\n",
                   tr.M, tr.M, stb[1].steps, pl.run_dir, tr.M);
        if (tr.data)
            printf("  data           %s: latents and contexts, its negative prompt for CFG (no table: sample with "
                   "./sample_tmd)\n",
                   tr.data);
        else
            printf("  5. table        %d captions per row from the same noise, toy VBench scores, contact sheet %s\n",
                   pl.eval_n, pl.sheet);
        int world = comm_env_world();
        if (world > 1) {
            fprintf(stderr,
                    "error: the pipeline runs on one GPU; run the stages under mpirun one at a time with --stage\n");
            return 2;
        }
    }
    WanConfig c;
    real* params;
    rc = wan_gpu_program_model("train_tmd", &c, &params, preset, weights, heads);
    if (rc) return rc;
    if (!params && (!stage || !strcmp(stage, "teacher"))) {
        params = (real*)malloc(sizeof(real) * wan_num_params(&c));
        wan_gpu_init_train(&c, params, (uint64_t)seed);
        printf("initialised %s from scratch (official init_weights), seed %d\n", c.name, seed);
    }
    if (!stage)
        rc = train_tmd_pipeline(&pl, &c, params);
    else if (!strcmp(stage, "teacher"))
        rc = train_teacher(&tch, &c, params);
    else {
        // one TMD stage: the student (gpu/tmd_gpu.cuh) built from this teacher, Stage 1 TM-MF or Stage 2 DMD2-v
        if (!weights && !tr.bench) {
            fprintf(stderr,
                    "error: --stage %s needs the teacher: --weights teacher.safetensors (./train_tmd --stage teacher "
                    "writes it)\n",
                    stage);
            free(params);
            return 2;
        }
        if (!params) { // --bench without --weights: the official init with a small random head (timing does not depend
                       // on the values)
            params = (real*)malloc(sizeof(real) * wan_num_params(&c));
            wan_gpu_bench_weights(&c, params, (uint64_t)seed);
            printf("--bench: random teacher weights for %s (official init, a small random head), seed %d\n", c.name,
                   seed);
        }
        if (!strcmp(stage, "kd")) {
            KdRun k = {out ? out : (kd_tmd ? "kd_tmd.safetensors" : "kd.safetensors"),
                       tr.resume,
                       tr.student,
                       kd_cache ? kd_cache : "kd_pairs.safetensors",
                       kd_tmd,
                       stk.steps,
                       stk.batch,
                       kdd.pairs,
                       seed,
                       log_every,
                       save_every < 0 ? 0 : save_every,
                       tr.N,
                       tr.H,
                       stk.lr,
                       wd,
                       stk.clip_student,
                       kdd.sampler_steps,
                       kdd.cfg,
                       kdd.shift,
                       kdd.skip_layer,
                       tr.data};
            rc = train_tmd_kd(&k, &c, params);
        } else {
            char bout[64];
            snprintf(bout, sizeof(bout), "baseline_m%d.safetensors", tr.M);
            tr.stage = stage;
            tr.out = out ? out
                         : (!strcmp(stage, "stage1")   ? "stage1.safetensors"
                            : !strcmp(stage, "stage2") ? "stage2.safetensors"
                                                       : bout);
            tr.steps = tr.bench ? tr.bench : steps;
            tr.batch = batch;
            tr.seed = seed;
            tr.log_every = log_every;
            tr.save_every = save_every < 0 ? 0 : save_every;
            tr.lr = lr;
            tr.lr_fake = one->lr_fake;
            tr.wd = wd; // the stage table's (a given --lr is the fake score's too)
            rc = train_tmd_distill(&tr, &c, params);
        }
    }
    free(params);
    return rc;
}
