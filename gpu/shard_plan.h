// gpu/shard_plan.h: the memory plan of one distillation step PER RANK when K ranks shard every model (fully sharded
// data parallelism, lib/shard.h) and K2 of them split each sample's tokens (context parallelism, Ulysses), as plain C
// arithmetic: a layer over gpu/distill_plan.h's single-GPU plan, which it reads twice.
//   states       every model's persistent buffers at its shard size (lib/shard.h: units padded to K equal aligned
//                slices): the trainable ones' fp32 master, AdamW m and v, fp32 gradients and the bf16 copy the gathers
//                read (18 B, the fake score 14 B: it borrows the student's gradient shard as on one GPU); the frozen
//                teacher's bf16 shard and the tensors it reads in fp32 (gpu/frozen_weights.h shard_layout_wan_fp32: a
//                layout of their own, sharded the same way, padding included); the
//                discriminator's fp32 shard (16 B), one unit per head
//   gathered     the working weights of one unit (a block, the embeddings, the head), all-gathered just before it runs,
//                fp32 and bf16 (gpu/fsdp_gpu.cuh): ONE pair shared by the step's models (they run one after another),
//                the running unit's and the prefetched next one's, each the largest unit of any model (the frozen
//                teacher's fp32 part: only its fp32-read tensors); and one pair of fp32 unit gradients (the
//                embeddings' and the running unit's, reduce-scattered as soon as the unit is done), the largest of the
//                trainable models' (lib/shard.h shard_fsdp_shared_buffers: the list gpu/fsdp_gpu.cuh allocates)
//   activations  distill_plan's items for a sample of L/K2 tokens (every DiT arena, the latents and the rollout states
//                are token-wise, so they split); the captions are replicated (cross-attention stays local); the
//                discriminator's features are gathered over the K2 ranks and its heads run on the whole sample (the
//                convolutions' windows cross any token split; a halo exchange would save the gathered copy but not
//                the heads' own activations), so its items stay at the whole sample, plus the gathered features
//   all-to-all   Ulysses: q, k, v and the attention output switch from sequence- to head-sharded and back: 4
//                receive buffers of [B, L/K2, D] in the forward, 4 more for their gradients in the backward
//   NCCL         its channel buffers and streams, an estimate (SHARD_PLAN_NCCL_GIB), with more than one rank
// Not yet run on hardware. The gathered units and unit gradients are what gpu/fsdp_gpu.cuh allocates (lib/shard.h's
// list); train_tmd --fsdp checks its step against this plan (train_tmd.cu plan_step_sharded), --plan prints it.
#pragma once
#include <math.h>
#include "distill_plan.h"
#include "../lib/shard.h"

#define SHARD_PLAN_ALIGN 64 // slice alignment (elements): 128-byte bf16 and 256-byte fp32 slices
#define SHARD_PLAN_NCCL_GIB                                                                                            \
    0.5 // NCCL's buffers per rank (channels x peers x NCCL_BUFFSIZE, 4 MiB by default): an estimate
#define SHARD_PLAN_RESERVE_GIB                                                                                         \
    1.0 // the CUDA context and library workspaces (train_tmd.cu's reserve for the single-GPU plan)

typedef struct {
    int ranks; // K: every model sharded over all of them
    int cp;    // K2: ranks per sample (context parallelism); K / K2 data-parallel groups, each of `batch` samples
    double gpu_bytes; // one GPU's memory
} ShardPlanInput;

// the shard layouts of the step's models: student (with the flow head's extras), the plain Wan model (fake score,
// frozen teacher), the discriminator (one unit per head)
static int shard_plan_layouts(const PlanInput* in, int K, ShardLayout* student, ShardLayout* wan, ShardLayout* disc,
                              char* err, size_t errlen) {
    if (shard_layout_wan(student, &in->wan, in->student_extra, K, SHARD_PLAN_ALIGN, err, errlen)) return -1;
    if (shard_layout_wan(wan, &in->wan, 0, K, SHARD_PLAN_ALIGN, err, errlen)) return -1;
    memset(disc, 0, sizeof(*disc));
    if (in->disc_heads > 0) {
        size_t per[SHARD_MAX_UNITS];
        const char* names[SHARD_MAX_UNITS];
        if (in->disc_heads > SHARD_MAX_UNITS) {
            snprintf(err, errlen, "%d discriminator heads, at most %d", in->disc_heads, SHARD_MAX_UNITS);
            return -1;
        }
        for (int h = 0; h < in->disc_heads; h++) {
            per[h] = in->disc_params / (size_t)in->disc_heads;
            names[h] = "disc.head";
        }
        per[in->disc_heads - 1] += in->disc_params % (size_t)in->disc_heads;
        if (shard_layout_init(disc, names, per, in->disc_heads, K, SHARD_PLAN_ALIGN, err, errlen)) return -1;
    }
    return 0;
}

// the shared buffers of the step's FSDP providers (lib/shard.h's list, what gpu/fsdp_gpu.cuh fsdp_buffers_init
// allocates), split into the gathered weights and the unit gradients
static void shard_plan_provider_(const ShardFsdpModel* m, int n, int fp32, double* gathered, double* grads) {
    ShardBuf b[SHARD_FSDP_MAX_BUFS];
    int nb = shard_fsdp_shared_buffers(m, n, fp32, b);
    for (int i = 0; i < nb; i++) *(b[i].kind == 'e' || b[i].kind == 'g' ? grads : gathered) += (double)b[i].bytes;
}

// 0 and the per-rank plan of `stage` (distill_plan's numbering) on sp->ranks ranks, sp->cp per sample; -1 and a message
// when the layout is impossible (cp not dividing the ranks, the heads or the tokens)
static int shard_plan(MemPlan* p, const PlanInput* in, int stage, const ShardPlanInput* sp, char* err, size_t errlen) {
    memset(p, 0, sizeof(*p));
    const WanConfig* c = &in->wan;
    int K = sp->ranks, K2 = sp->cp, L = plan_tokens(in);
    if (K < 1 || K2 < 1 || K % K2) {
        snprintf(err, errlen,
                 "--ranks %d --cp %d: expected ranks >= 1 and cp a divisor of the ranks (K / cp data-parallel groups)",
                 K, K2);
        return -1;
    }
    if (c->num_heads % K2 || L % K2) {
        int n = snprintf(err, errlen,
                         "--cp %d: the all-to-all splits the %d heads and the %d tokens evenly, so cp must divide both "
                         "(for %s at this size:",
                         K2, c->num_heads, L, c->name);
        for (int d = 1; d <= c->num_heads && n > 0 && (size_t)n < errlen; d++)
            if (c->num_heads % d == 0 && L % d == 0) n += snprintf(err + n, errlen - (size_t)n, " %d", d);
        if (n > 0 && (size_t)n < errlen) snprintf(err + n, errlen - (size_t)n, ")");
        return -1;
    }
    MemPlan whole, split;
    distill_plan(&whole, in, stage);
    // the split sample: a latent grid of L/K2 tokens (one patch high, L/K2 patches wide) with the same patch, so every
    // token-wise buffer is 1/K2 of the whole's; the caption rows do not depend on it
    PlanInput cpin = *in;
    if (K2 > 1) {
        cpin.T = c->patch[0];
        cpin.Hl = c->patch[1];
        cpin.Wl = c->patch[2] * (L / K2);
    }
    distill_plan(&split, &cpin, stage);
    ShardLayout ls, lw, ld, lf;
    if (shard_plan_layouts(in, K, &ls, &lw, &ld, err, errlen)) return -1;
    if (shard_layout_wan_fp32(&lf, &lw, c, err, errlen)) return -1; // the frozen teacher's fp32-read tensors
    double xb = in->fp32 ? 4 : 2, bpp = plan_trainable_bytes_per_param(in);
    char what[128];
    double gathered = 0, unit_grads = 0;
    ShardFsdpModel users[4]; // the models sharing the FSDP buffers (lib/shard.h shard_fsdp_shared_buffers)
    int providers = 0;
    for (int i = 0; i < split.n; i++) {
        const PlanItem* it = &split.item[i];
        if (!strcmp(it->name, "student (trainable)") || !strcmp(it->name, "teacher (trainable)")) {
            const ShardLayout* l = !strcmp(it->name, "student (trainable)") ? &ls : &lw;
            snprintf(what, sizeof(what), "%.1fM of %.3fB params a rank x %g B (master, grad, AdamW m+v%s)",
                     l->shard_numel / 1e6, l->numel / 1e9, bpp, in->fp32 ? "" : ", bf16 shard");
            plan_add(p, it->name, (double)l->shard_numel * bpp, what);
            users[providers++] = shard_fsdp_model(l, NULL, 1);
        } else if (!strcmp(it->name, "fake score (trainable)")) {
            snprintf(what, sizeof(what),
                     "%.1fM params a rank x %g B (master, AdamW m+v%s; the student's gradient shard)",
                     lw.shard_numel / 1e6, plan_fake_score_bytes_per_param(in), in->fp32 ? "" : ", bf16 shard");
            plan_add(p, it->name, (double)lw.shard_numel * plan_fake_score_bytes_per_param(in), what);
            users[providers++] = shard_fsdp_model(&lw, NULL, 1);
        } else if (!strcmp(it->name, "teacher (frozen)")) {
            // one rank: the whole frozen model (gpu/wan_gpu.cuh: the fp32 build keeps fp32 only); sharded: the floatX
            // slices and the fp32-read layout's slices (both builds: gpu/fsdp_gpu.cuh's frozen packed provider)
            double f32 = K == 1 ? (in->fp32 ? 0 : (double)wan_gpu_fp32_params(c) * 4.0) : (double)lf.shard_numel * 4.0;
            snprintf(what, sizeof(what), "%.1fM params a rank x %g B + %.2fM fp32-read x 4 B (%s)",
                     lw.shard_numel / 1e6, xb, f32 / 4e6, in->fp32 ? "fp32" : "bf16");
            plan_add(p, it->name, (double)lw.shard_numel * xb + f32, what);
            users[providers++] = shard_fsdp_model(&lw, &lf, 0);
        } else if (!strcmp(it->name, "discriminator (trainable)")) {
            snprintf(what, sizeof(what), "%.2fM params a rank x 16 B (fp32 weights, grad, AdamW m+v), %d heads",
                     ld.shard_numel / 1e6, in->disc_heads);
            plan_add(p, it->name, (double)ld.shard_numel * 16.0, what);
        } else if (!strcmp(it->name, "GAN feature gradients") || !strcmp(it->name, "discriminator activations")) {
            int j = 0;
            while (j < whole.n - 1 && strcmp(whole.item[j].name, it->name)) j++;
            snprintf(what, sizeof(what), "%s%s", whole.item[j].what, K2 > 1 ? " (the whole sample, gathered)" : "");
            plan_add(p, it->name, whole.item[j].bytes, what);
        } else {
            snprintf(what, sizeof(what), "%s", it->what);
            if (K2 > 1 && strcmp(it->name, "captions")) {
                size_t n = strlen(what);
                snprintf(what + n, sizeof(what) - n, "; %d of %d tokens", L / K2, L);
            }
            plan_add(p, it->name, it->bytes, what);
        }
    }
    shard_plan_provider_(users, providers, in->fp32, &gathered, &unit_grads);
    if (K > 1) {
        snprintf(
            what, sizeof(what),
            "2 units (running, prefetched) shared by %d models, fp32%s, the largest unit padded (gpu/fsdp_gpu.cuh)",
            providers, in->fp32 ? "" : " + bf16");
        plan_add(p, "gathered weights", gathered, what);
        if (unit_grads > 0)
            plan_add(p, "unit gradients (fp32)", unit_grads,
                     "the embeddings' and the running unit's, shared by the trainable models, padded to K slices");
        plan_add(p, "NCCL buffers", SHARD_PLAN_NCCL_GIB * PLAN_GIB, "channel buffers and streams (an estimate)");
    }
    if (K2 > 1) {
        double BLD = (double)in->batch * (L / K2) * c->dim;
        snprintf(what, sizeof(what), "q, k, v, attention out and their gradients: 8 x [%d, %d, %d] x %g B", in->batch,
                 L / K2, c->dim, xb);
        plan_add(p, "cp all-to-all buffers", 8.0 * BLD * xb, what);
        if (in->disc_heads > 0 && stage == 2) {
            snprintf(what, sizeof(what),
                     "%d feature levels of the whole sample [%d, %d, %d] fp32 (the discriminator's input)",
                     in->disc_heads, in->batch, L, c->dim);
            plan_add(p, "gathered GAN features", (double)in->disc_heads * in->batch * L * c->dim * 4.0, what);
        }
    }
    return 0;
}

// 0 when the per-rank plan fits the GPU (after SHARD_PLAN_RESERVE_GIB); else 1 and a message with the numbers
static int shard_plan_check(const MemPlan* p, const ShardPlanInput* sp, char* err, size_t errlen) {
    double reserve = SHARD_PLAN_RESERVE_GIB * PLAN_GIB;
    if (p->total + reserve <= sp->gpu_bytes) return 0;
    int big = 0;
    for (int i = 1; i < p->n; i++)
        if (p->item[i].bytes > p->item[big].bytes) big = i;
    snprintf(err, errlen,
             "the step needs %.2f GiB a rank (+%.2f GiB reserved) on %d ranks (cp %d), but a GPU has %.2f GiB; the "
             "largest item is %s "
             "(%.2f GiB). More ranks shard the states thinner (--ranks), more context parallelism splits the "
             "activations (--cp), or lower --batch",
             p->total / PLAN_GIB, reserve / PLAN_GIB, sp->ranks, sp->cp, sp->gpu_bytes / PLAN_GIB, p->item[big].name,
             p->item[big].bytes / PLAN_GIB);
    return 1;
}

// sums of the plan's items by kind: the sharded states, the activations (everything else but the gathered units,
// the all-to-all and NCCL), for the summary tables
static double shard_plan_states(const MemPlan* p) {
    double s = 0;
    for (int i = 0; i < p->n; i++)
        if (strstr(p->item[i].name, "(trainable)") || strstr(p->item[i].name, "(frozen)")) s += p->item[i].bytes;
    return s;
}
