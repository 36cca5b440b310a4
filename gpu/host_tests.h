// gpu/host_tests.h: the GPU programs' plain-C pieces, tested on the CPU: the distillation table, the VBench suite logic (lib/vbench.h,
// tests in lib/vbench_tests.h) and the memory plan of a distillation step (gpu/distill_plan.h) against the presets.
#pragma once
#include "../lib/vbench_tests.h"
#include "distill_plan.h"
#include "train_state.h"
#include "../cpu/tmd_cpu.h"   // student_extra_layout: the student's parameters beyond the Wan layout
#include "../cpu/disc_cpu.h"  // disc_config, disc_num_params: the discriminator heads' size
#include "../cpu/distill_table.h"   // the table ./train_tmd and ./test_tmd distill print

// the plan for a preset at a latent grid, with the student's extras counted by the CPU reference's own layout
static PlanInput plan_input_for(const char* preset, int T, int Hl, int Wl, int N, int H, size_t disc_params, int disc_heads, int disc_top) {
    PlanInput in; memset(&in, 0, sizeof(in)); char err[ST_ERRLEN];
    wan_preset(&in.wan, preset, err);
    in.T = T; in.Hl = Hl; in.Wl = Wl; in.batch = 1; in.N = N; in.H = H; in.recompute = 1; in.fuse_ffn_dim = in.wan.ffn_dim;
    StudentConfig sc; sc.wan = in.wan; sc.head_blocks = H; sc.fusion = FUSION_GATED; sc.fuse_ffn_dim = in.wan.ffn_dim;
    student_extra_layout(&sc, NULL, NULL, NULL, &in.student_extra);
    in.disc_params = disc_params; in.disc_heads = disc_heads; in.disc_top = disc_top; in.disc_width1 = 512;
    return in;
}

static double plan_item(const MemPlan* p, const char* name) { for (int i = 0; i < p->n; i++) if (!strcmp(p->item[i].name, name)) return p->item[i].bytes; return -1; }

// the plan's activation items against the arenas the allocation code asks for: gpu/distill_gpu.cuh's works allocate
// these WanGpuActs and flow-head evaluations (listed here from the code, not from the plan), each sized by
// gpu/act_plan.h's lists, which the allocator carves and checks its arena against
static double plan_expected_student_act(const PlanInput* in, int stage) {
    size_t xb = in->fp32 ? 4 : 2; int B = in->batch, L = plan_tokens(in), fl = !in->naive_attention, rc = in->recompute;
    int nl = in->wan.num_layers, Lb = nl - in->H;
    double head = (double)act_head_eval_bytes(&in->wan, B, L, in->fuse_ffn_dim, in->H, !in->fusion_concat, rc, fl, xb);
    double bb = (double)act_wan_bytes_ex(&in->wan, B, L, 1, rc, fl, xb, Lb, 0, 0);            // the backbone: L − H blocks
    if (stage == 1)   // tmmf_gpu_work_init: bb, bb_u (forward, L − H blocks, borrowing bb's set when it recomputes), h, h_aux
        return bb + (double)act_wan_bytes_ex(&in->wan, B, L, 0, rc, fl, xb, Lb, 0, rc) + 2 * head;
    if (in->baseline) return (double)act_wan_bytes_ex(&in->wan, B, L, 1, rc, fl, xb, nl, 0, 0);   // gen_gpu_init: the whole model
    return bb + (rc ? 1 : in->N) * head;   // gen_gpu_init: bb, rollout_gpu_init's evaluations (one when recomputing)
}

// the frozen teacher's item against the tensors the GPU reads in fp32, counted here from the config by hand (per block
// modulation 6D, four RMSNorm weights 4D, norm3 2D; the patch and time embeddings, the time projection, the head),
// for every preset in both builds; and the predicate's verdict on a few names either way
static void test_frozen_plan(void) {
    for (int k = 0; k < WAN_NUM_PRESETS; k++) {
        PlanInput in = plan_input_for(WAN_PRESETS[k].name, 1, 8, 8, 2, 1, 1000, 2, 2);
        const WanConfig* c = &in.wan;
        double D = c->dim, P = wan_patch_numel(c), n = (double)wan_num_params(c);
        double n32 = c->num_layers * 12 * D + (D * c->in_dim * P + D) + (D * c->freq_dim + D + D * D + D) + (6 * D * D + 6 * D) +
                     (c->out_dim * P * D + c->out_dim * P + 2 * D);
        EXPECT((double)wan_gpu_fp32_params(c) == n32, "%s: the predicate counts %zu parameters read in fp32, by hand %.0f", c->name, wan_gpu_fp32_params(c), n32);
        for (int fp32 = 0; fp32 <= 1; fp32++) {
            in.fp32 = fp32; MemPlan p; distill_plan(&p, &in, 2);
            double want = fp32 ? 4 * n : 2 * n + 4 * n32;
            EXPECT(plan_item(&p, "teacher (frozen)") == want, "%s, %s: frozen teacher %.0f bytes, want %.0f", c->name, fp32 ? "fp32" : "bf16", plan_item(&p, "teacher (frozen)"), want);
        }
        if (!strcmp(c->name, "wan2.1-t2v-1.3b"))
            printf("  frozen 1.3B teacher (bf16 build): %.0f params x 2 B + %.0f read in fp32 x 4 B = %.3f GiB (a full fp32 copy too: %.3f GiB)\n",
                   n, n32, (2 * n + 4 * n32) / PLAN_GIB, 6 * n / PLAN_GIB);
    }
    const char* fp32_names[] = {"patch_embedding.weight", "time_embedding.2.bias", "time_projection.1.weight", "blocks.0.modulation",
                                "blocks.29.self_attn.norm_k.weight", "blocks.7.norm3.bias", "blocks.3.cross_attn.norm_q.weight", "head.head.weight", "head.modulation"};
    const char* x_names[] = {"text_embedding.0.weight", "blocks.0.self_attn.q.weight", "blocks.12.cross_attn.o.bias", "blocks.2.ffn.0.weight",
                             "blocks.5.self_attn.norm_q.bias", "blocks.norm3.weight"};
    int bad = 0;
    for (size_t i = 0; i < sizeof(fp32_names) / sizeof(fp32_names[0]); i++) if (!wan_gpu_reads_fp32(fp32_names[i])) { bad++; printf("  %s: not read in fp32?\n", fp32_names[i]); }
    for (size_t i = 0; i < sizeof(x_names) / sizeof(x_names[0]); i++) if (wan_gpu_reads_fp32(x_names[i])) { bad++; printf("  %s: read in fp32?\n", x_names[i]); }
    EXPECT(bad == 0, "the fp32 predicate misjudges %d names", bad);
    printf("  frozen weights = the floatX copy + fp32 for the tensors read in fp32, for %d presets in both builds\n", WAN_NUM_PRESETS);
}

static void test_distill_plan(void) {
    printf("\n[plan] memory plan of a distillation step (arithmetic only; what fits is decided on the device)\n");
    char err[ST_ERRLEN];
    // the activation items are the allocations: every stage, recompute on and off, TMD and baseline, with and without
    // the GAN terms, both precisions and attention paths, at the tiny and the world preset
    const char* presets[2] = {"tiny", "world"};
    int grids[2][3] = {{4, 16, 16}, {9, 32, 32}}, checked = 0, bad = 0;
    for (int k = 0; k < 2; k++)
        for (int v = 0; v < 32; v++) {
            PlanInput in = plan_input_for(presets[k], grids[k][0], grids[k][1], grids[k][2], 2, 1, 1000, (v & 1) ? 2 : 0, 2);
            in.recompute = (v >> 1) & 1; in.baseline = (v >> 2) & 1; in.fp32 = (v >> 3) & 1; in.naive_attention = (v >> 4) & 1; in.batch = 1 + (v & 1);
            size_t xb = in.fp32 ? 4 : 2; int L = plan_tokens(&in), fl = !in.naive_attention, gan = in.disc_heads > 0;
            for (int stage = 1; stage <= 2; stage++) {
                MemPlan p; distill_plan(&p, &in, stage);
                double want = plan_expected_student_act(&in, stage), got = plan_item(&p, "student activations");
                double crit = -1, want_crit = 0;
                if (stage == 2) {   // dmd_gpu_work_init: a_train (training), a_fwd (forward; attach_disc: keeping the feature levels)
                    crit = plan_item(&p, "teacher + fake score activations");   // both borrow the generator's set when recomputing
                    want_crit = (double)act_wan_bytes_ex(&in.wan, in.batch, L, 1, in.recompute, fl, xb, in.wan.num_layers, 0, in.recompute) +
                                (double)act_wan_bytes_ex(&in.wan, in.batch, L, 0, in.recompute, fl, xb, in.wan.num_layers, gan ? in.disc_heads : 0, in.recompute);
                }
                checked++;
                if (got != want || crit != (stage == 2 ? want_crit : -1)) {
                    bad++;
                    EXPECT(0, "%s, variant %d, stage %d: the plan's activations %.0f / %.0f bytes, the allocations %.0f / %.0f", presets[k], v, stage, got, crit, want,
                           stage == 2 ? want_crit : -1);
                }
            }
        }
    printf("  activation items = the works' allocations (gpu/act_plan.h): %d plans checked, %d differ\n", checked, bad);
    EXPECT(checked == 128 && bad == 0, "%d of %d plans differ from the allocations", bad, checked);
    // what recompute changes, buffer for buffer: a training arena drops all block sets but one, a flow-head evaluation
    // all of its own, and a recomputing training arena is the forward-only arena plus the backward's scratch
    {
        PlanInput in = plan_input_for("world", 9, 32, 32, 2, 2, 0, 0, 0); int L = plan_tokens(&in);
        ActDims z = act_dims(&in.wan, 1, L, 1, in.fuse_ffn_dim, in.H, 1);
        size_t set = act_block_set_bytes(z, 2), keep = act_wan_bytes(&in.wan, 1, L, 1, 0, 1, 2), rec = act_wan_bytes(&in.wan, 1, L, 1, 1, 1, 2);
        size_t fwd = act_wan_bytes(&in.wan, 1, L, 0, 0, 1, 2);
        size_t hk = act_head_eval_bytes(&in.wan, 1, L, in.fuse_ffn_dim, in.H, 1, 0, 1, 2), hr = act_head_eval_bytes(&in.wan, 1, L, in.fuse_ffn_dim, in.H, 1, 1, 1, 2);
        EXPECT(keep - rec == (size_t)(in.wan.num_layers - 1) * set, "world: keeping every block costs %zu bytes more than recompute; want %d block sets of %zu",
               keep - rec, in.wan.num_layers - 1, set);
        EXPECT(hk - hr == (size_t)in.H * set, "world: a flow-head evaluation keeps %zu bytes more without recompute; want %d block sets", hk - hr, in.H);
        size_t level = act_round((size_t)L * in.wan.dim * 4);
        EXPECT(rec - fwd == act_scratch_bytes(z, 2) + (size_t)(in.wan.num_layers - 1) * level,
               "world: a recomputing training arena is the forward arena + the backward scratch + %d more residual levels", in.wan.num_layers - 1);
        size_t lent = act_wan_bytes_ex(&in.wan, 1, L, 1, 1, 1, 2, in.wan.num_layers, 0, 1);
        EXPECT(rec - lent == set + act_scratch_bytes(z, 2), "world: borrowing the work sets saves one block set and the scratch");
        printf("  world, bf16, flash, batch 1 (%d tokens): training arena %.2f MiB keeping every block, %.2f MiB with recompute (block set %.2f MiB)\n", L,
               keep / 1048576.0, rec / 1048576.0, set / 1048576.0);
    }
    // Wan2.1 1.3B at 480p x 81 frames (latent 21 x 60 x 104: 32,760 tokens), TMD-N4H5, bf16, flash attention
    // the discriminator: cpu/disc_cpu.h's Conv3D heads at Wan scale (widths 512, 512, 1024, 1024, hidden 512), counted by its own layout
    WanConfig c13; wan_preset(&c13, "wan2.1-t2v-1.3b", err);
    DiscConfig dc13 = disc_config(&c13, 512, 512, 1024, 1024, 512);
    size_t disc_1b3 = disc_num_params(&dc13);
    PlanInput in = plan_input_for("wan2.1-t2v-1.3b", 21, 60, 104, 4, 5, disc_1b3, dc13.n_heads, dc13.layers[dc13.n_heads - 1] + 1);
    EXPECT(plan_tokens(&in) == 32760, "1.3B at 480p x 81 frames: %d tokens, want 32760", plan_tokens(&in));
    MemPlan p2, p1; distill_plan(&p2, &in, 2); distill_plan(&p1, &in, 1);
    plan_print(&p1, "Wan2.1 1.3B, Stage 1 (TM-MF, TMD-N4H5), batch 1, 32,760 tokens, bf16, recompute", stdout);
    plan_print(&p2, "Wan2.1 1.3B, Stage 2 (DMD2-v, TMD-N4H5), batch 1, 32,760 tokens, bf16, recompute", stdout);
    double sum = 0; for (int i = 0; i < p2.n; i++) sum += p2.item[i].bytes;
    EXPECT(sum == p2.total, "plan total %.0f is not the sum of its items %.0f", p2.total, sum);
    double Pw = (double)wan_num_params(&in.wan);
    EXPECT(plan_item(&p2, "fake score (trainable)") == 14.0 * Pw && plan_item(&p2, "student (trainable)") == 18.0 * (Pw + (double)in.student_extra) &&
           plan_item(&p2, "discriminator (trainable)") == 16.0 * (double)disc_1b3,
           "weights: 18 B per trainable parameter, 14 B for the fake score (its gradients are the student's buffer), 16 B for "
           "the discriminator (fp32, no copy) (1.3B has %.0f parameters, the student %zu more)", Pw, in.student_extra);
    test_frozen_plan();
    double gib80 = 80.0 * PLAN_GIB, reserve = 2.0 * PLAN_GIB;
    // Stage 1 fits one 80 GB GPU with recompute and not without it (the refusal names the activations)
    EXPECT(plan_check(&p1, gib80, reserve, err, sizeof(err)) == 0, "the 1.3B Stage 1 step with recompute should fit one 80 GB GPU: %s", err);
    PlanInput nr = in; nr.recompute = 0; MemPlan r1, r; distill_plan(&r1, &nr, 1); distill_plan(&r, &nr, 2);
    EXPECT(plan_check(&r1, gib80, reserve, err, sizeof(err)) != 0 && strstr(err, "activations"), "1.3B Stage 1 without recompute should refuse naming the activations: %s", err);
    printf("  1.3B Stage 1 without recompute -> %s\n", err);
    // Stage 2 as the code allocates it: with recompute the generator's backbone (its residual stream), one flow-head
    // evaluation, the critic side's two plans borrowing the backbone's work sets; printed here, asserted to fit below
    EXPECT(p2.total < 0.5 * r.total, "recompute should at least halve the 1.3B Stage 2 step (%.1f vs %.1f GiB)", p2.total / PLAN_GIB, r.total / PLAN_GIB);
    // the requirement: the 1.3B Stage 2 step fits one 80 GB GPU. An H100 80GB reports 81,559 MiB in all
    // (nvidia-smi), of which the CUDA context takes about half a GiB: 79.0 GiB free, 2 GiB of it kept for cuBLASLt
    double h100_free = 79.0 * PLAN_GIB;
    int fits2 = plan_check(&p2, h100_free, reserve, err, sizeof(err)) == 0;
    printf("  1.3B: Stage 1 %.2f GiB (without recompute %.2f), Stage 2 %.2f GiB (without %.2f); an H100 80GB has about 79.0 GiB free (2 GiB "
           "reserved): Stage 2 %s\n", p1.total / PLAN_GIB, r1.total / PLAN_GIB, p2.total / PLAN_GIB, r.total / PLAN_GIB, fits2 ? "fits" : "does NOT fit");
    EXPECT(fits2, "the 1.3B Stage 2 step with recompute should fit one 80 GB GPU: %s", err);
    // --recompute auto: on exactly when the plan without it does not fit (1.3B Stage 1 on 80 GB), off when it fits
    // (the world preset); on and off are taken as given
    char why[256], need[32]; PlanInput ch = in;
    snprintf(need, sizeof(need), "needs %.2f GiB", r1.total / PLAN_GIB);   // the reason names the plan without recompute
    EXPECT(plan_choose_recompute(&ch, 1, -1, gib80, reserve, why, sizeof(why)) == 1 && ch.recompute == 1 && strstr(why, need),
           "auto, 1.3B Stage 1 on 80 GB: recompute should be on: %s", why);
    printf("  1.3B Stage 1, 80 GB: %s\n", why);
    PlanInput wc = plan_input_for("world", 9, 32, 32, 2, 2, 0, 0, 0);
    EXPECT(plan_choose_recompute(&wc, 1, -1, gib80, reserve, why, sizeof(why)) == 0 && wc.recompute == 0, "auto, the world preset on 80 GB: recompute should be off: %s", why);
    printf("  world Stage 1, 80 GB: %s\n", why);
    EXPECT(plan_choose_recompute(&wc, 2, 1, gib80, reserve, why, sizeof(why)) == 1 && wc.recompute == 1 && plan_choose_recompute(&ch, 2, 0, gib80, reserve, why, sizeof(why)) == 0 &&
           ch.recompute == 0, "--recompute on / off must be taken as given");
    // the naive attention at 32,760 tokens does not fit either (its scores alone are heads x L^2 x 4 B = 48 GiB)
    PlanInput na = in; na.naive_attention = 1; MemPlan s; distill_plan(&s, &na, 2);
    EXPECT(plan_check(&s, gib80, reserve, err, sizeof(err)) != 0, "1.3B with the naive attention should refuse (%.1f GiB)", s.total / PLAN_GIB);
    // the 14B does not fit one GPU: the refusal names the student's weights
    WanConfig c14; wan_preset(&c14, "wan2.1-t2v-14b", err);
    DiscConfig dc14 = disc_config(&c14, 512, 512, 1024, 1024, 512);
    PlanInput big = plan_input_for("wan2.1-t2v-14b", 21, 60, 104, 4, 5, disc_num_params(&dc14), dc14.n_heads, dc14.layers[dc14.n_heads - 1] + 1);
    MemPlan b14; distill_plan(&b14, &big, 2);
    EXPECT(plan_check(&b14, gib80, reserve, err, sizeof(err)) != 0 && strstr(err, "student"), "14B should refuse naming the student: %s", err);
    printf("  14B -> %s\n", err);
    // the built-in world on one GPU fits easily, even with the naive attention in fp32
    PlanInput w = plan_input_for("world", 9, 32, 32, 4, 2, 1000000, 3, 12);
    w.naive_attention = 1; w.fp32 = 1; MemPlan pw; distill_plan(&pw, &w, 2);
    EXPECT(plan_check(&pw, 16.0 * PLAN_GIB, reserve, err, sizeof(err)) == 0, "the world preset should fit 16 GiB: %s", err);
    printf("  world preset (fp32, naive attention): Stage 2 %.3f GiB\n", pw.total / PLAN_GIB);
    // the KD warm-up (stage 3): the pairs on the device are P x (noise + teacher sample + caption) in fp32, counted
    // here from the shapes (1.3B: latent 16 x 21 x 60 x 104, caption 512 x 4096); the plain and the TMD student fit
    PlanInput k = in; k.kd_pairs = 128;
    PlanInput kp = k; kp.student_extra = 0;
    MemPlan kd_tmd, kd_plain; distill_plan(&kd_tmd, &k, 3); distill_plan(&kd_plain, &kp, 3);
    double pairs_want = 128.0 * (2.0 * 16 * 21 * 60 * 104 + 512.0 * 4096) * 4;
    EXPECT(plan_item(&kd_plain, "KD pairs") == pairs_want && plan_item(&kd_tmd, "KD pairs") == pairs_want,
           "KD pairs: plan %.0f (plain) / %.0f (TMD) bytes, want 128 x (2 latents + caption) x 4 B = %.0f", plan_item(&kd_plain, "KD pairs"),
           plan_item(&kd_tmd, "KD pairs"), pairs_want);
    sum = 0; for (int i = 0; i < kd_tmd.n; i++) sum += kd_tmd.item[i].bytes;
    EXPECT(sum == kd_tmd.total, "KD plan total %.0f is not the sum of its items %.0f", kd_tmd.total, sum);
    EXPECT(plan_item(&kd_plain, "student (trainable)") == 18.0 * Pw && plan_item(&kd_plain, "fake score (trainable)") < 0 && plan_item(&kd_plain, "teacher (frozen)") < 0,
           "KD on the plain student: its 18 B per parameter and no fake score or teacher on the device");
    EXPECT(plan_check(&kd_plain, gib80, reserve, err, sizeof(err)) == 0 && plan_check(&kd_tmd, gib80, reserve, err, sizeof(err)) == 0,
           "the 1.3B KD warm-up must fit one 80 GB GPU: %s", err);
    EXPECT(kd_tmd.total < p2.total, "KD of the TMD student (%.1f GiB) should need less than its Stage 2 (%.1f GiB)", kd_tmd.total / PLAN_GIB, p2.total / PLAN_GIB);
    PlanInput k2 = kp; k2.kd_pairs = 256; MemPlan kd2; distill_plan(&kd2, &k2, 3);
    EXPECT(plan_item(&kd2, "KD pairs") == 2 * pairs_want && kd2.total - kd_plain.total == pairs_want, "256 pairs: the pairs item x2, nothing else changes");
    printf("  1.3B KD warm-up, 128 pairs (%.2f GiB of them): plain student %.2f GiB, TMD student %.2f GiB\n", pairs_want / PLAN_GIB,
           kd_plain.total / PLAN_GIB, kd_tmd.total / PLAN_GIB);
}


// a toy training run with train_tmd's discipline (weights, AdamW moments, host stream in the checkpoint): noisy
// AdamW on a quadratic, `steps` steps, resuming from `ckpt` after `stop_at` steps when stop_at > 0
static void ts_toy_run(float* w, int steps, int stop_at, const char* ckpt, char* err, int* rc) {
    enum { n = 37 };
    float m[n], v[n]; memset(m, 0, sizeof(m)); memset(v, 0, sizeof(v));
    Rng r = rng_make(99); uint64_t step = 0;
    for (int i = 0; i < n; i++) w[i] = (float)(0.1 * i);
    TsBuffer bufs[3] = {{"toy.params", w, n}, {"toy.adam_m", m, n}, {"toy.adam_v", v, n}};
    *rc = 0;
    for (;;) {
        if (stop_at > 0 && step == (uint64_t)stop_at) {   // checkpoint, forget everything, reload
            TsMeta meta; memset(&meta, 0, sizeof(meta));
            ts_meta_u64(&meta, "step", step); ts_meta_u64(&meta, "rng_seed", r.seed); ts_meta_u64(&meta, "rng_counter", r.counter);
            ts_meta_set(&meta, "stage", "toy");
            if ((*rc = ts_save(ckpt, bufs, 3, &meta, err))) return;
            memset(w, 0, sizeof(float) * n); memset(m, 0, sizeof(m)); memset(v, 0, sizeof(v)); r = rng_make(0); step = 0;
            TsMeta have, want; memset(&want, 0, sizeof(want)); ts_meta_set(&want, "stage", "toy");
            if ((*rc = ts_load(ckpt, bufs, 3, &have, err)) || (*rc = ts_check_settings(&have, &want, ckpt, err))) return;
            if ((*rc = ts_meta_get_u64(&have, "step", &step, ckpt, err)) || (*rc = ts_meta_get_u64(&have, "rng_seed", &r.seed, ckpt, err)) ||
                (*rc = ts_meta_get_u64(&have, "rng_counter", &r.counter, ckpt, err))) return;
            stop_at = 0;
        }
        if (step == (uint64_t)steps) return;
        step++;
        for (int i = 0; i < n; i++) {
            float g = w[i] - 1.0f + (float)(0.3 * rng_normal(&r));
            m[i] = 0.9f * m[i] + 0.1f * g; v[i] = 0.99f * v[i] + 0.01f * g * g;
            w[i] -= 0.05f * (m[i] / (1.0f - powf(0.9f, (float)step))) / (sqrtf(v[i] / (1.0f - powf(0.99f, (float)step))) + 1e-8f);
        }
    }
}

static void test_train_state(const char* tmpdir) {
    printf("\n[checkpoint] train_tmd's training state: round trip, resume = uninterrupted, refusals\n");
    char path[1024], err[ST_ERRLEN]; snprintf(path, sizeof(path), "%s/state.safetensors", tmpdir);
    float a[40], b[40]; int rc;
    ts_toy_run(a, 20, 0, path, err, &rc);
    ts_toy_run(b, 20, 7, path, err, &rc);
    EXPECT(rc == 0, "resume: %s", err);
    EXPECT(!memcmp(a, b, sizeof(float) * 37), "20 steps with a checkpoint and reload at step 7 differ from 20 uninterrupted steps");
    printf("  toy AdamW run, 20 steps: checkpoint + reload at step 7 equals the uninterrupted run bit for bit: %s\n", memcmp(a, b, sizeof(float) * 37) ? "NO" : "yes");
    // a run without the host stream in the checkpoint would differ (the test can fail)
    float c[40]; ts_toy_run(c, 7, 0, path, err, &rc);
    TsBuffer one[1] = {{"toy.params", b, 37}}; TsMeta meta;
    EXPECT(ts_load(path, one, 1, &meta, err) == 0 && !memcmp(b, c, sizeof(float) * 37), "the checkpoint at step 7 holds the weights of step 7");
    TsBuffer wrong[1] = {{"toy.params", b, 36}};
    EXPECT(ts_load(path, wrong, 1, &meta, err) != 0 && strstr(err, "toy.params") && strstr(err, "37"), "size mismatch: %s", err);
    printf("  wrong size -> %s\n", err);
    TsBuffer missing[1] = {{"student.params", b, 37}};
    EXPECT(ts_load(path, missing, 1, &meta, err) != 0 && strstr(err, "student.params"), "missing buffer: %s", err);
    TsMeta want; memset(&want, 0, sizeof(want)); ts_meta_set(&want, "stage", "stage2");
    ts_load(path, one, 1, &meta, err);
    EXPECT(ts_check_settings(&meta, &want, path, err) != 0 && strstr(err, "stage"), "settings mismatch: %s", err);
    printf("  other settings -> %s\n", err);
    // the pipeline's decision per stage (./train_tmd with no --stage): start, resume, skip
    uint64_t done = 0; char missing_path[1100]; snprintf(missing_path, sizeof(missing_path), "%s/no-such-stage.safetensors", tmpdir);
    EXPECT(ts_stage_action(missing_path, 20, &done, err) == TS_FRESH, "a stage without a checkpoint starts fresh");
    EXPECT(ts_stage_action(path, 20, &done, err) == TS_RESUME && done == 7, "a checkpoint at step 7 of 20 resumes (got step %llu)", (unsigned long long)done);
    EXPECT(ts_stage_action(path, 7, &done, err) == TS_DONE && ts_stage_action(path, 5, &done, err) == TS_DONE, "a checkpoint at step 7 completes a run of 7 (or fewer) steps");
    printf("  pipeline: no checkpoint -> start; step 7 of 20 -> resume; step 7 of 7 -> skip\n");
    TsMeta nostep; memset(&nostep, 0, sizeof(nostep)); ts_meta_set(&nostep, "stage", "toy");
    char nostep_path[1100]; snprintf(nostep_path, sizeof(nostep_path), "%s/nostep.safetensors", tmpdir);
    EXPECT(ts_save(nostep_path, one, 1, &nostep, err) == 0, "write: %s", err);
    EXPECT(ts_stage_action(nostep_path, 20, &done, err) == TS_BAD && strstr(err, "step"), "a checkpoint without a step must be refused: %s", err);
    printf("  no step in the checkpoint -> %s\n", err);
    FILE* f = fopen(path, "r+b"); if (f) { fseek(f, 0, SEEK_END); long sz = ftell(f); fclose(f); if (truncate(path, sz - 8) != 0) sz = 0; }
    EXPECT(ts_load(path, one, 1, &meta, err) != 0, "a truncated checkpoint must be refused");
    EXPECT(ts_stage_action(path, 20, &done, err) == TS_BAD, "the pipeline must refuse a truncated checkpoint, not restart over it");
    printf("  truncated file -> %s\n", err);
}

// the table ./train_tmd prints (the CPU reference's printer): the world preset's TMD rows carry Eq. 16's effective
// NFE, M·(1 + (N − 1)·H/L) = 7/6 at M 1 and 7/3 at M 2 for N 2, H 2 of L 12 blocks; rows without a sampler show "-"
static void test_distill_table(const char* tmpdir) {
    printf("\n[table] the distillation table's rows (./train_tmd's pipeline, ./test_tmd distill)\n");
    WanConfig w; char err[ST_ERRLEN]; wan_preset(&w, "world", err);
    EXPECT(w.num_layers == 12, "the world preset has %d blocks; the expected NFE below assume 12", w.num_layers);
    EXPECT(fabs(effective_nfe(1, 2, 2, w.num_layers) - 7.0 / 6) < 1e-12 && fabs(effective_nfe(2, 2, 2, w.num_layers) - 7.0 / 3) < 1e-12,
           "effective NFE %.6f, %.6f; want 7/6, 7/3", effective_nfe(1, 2, 2, w.num_layers), effective_nfe(2, 2, 2, w.num_layers));
    DistillRow r[3]; memset(r, 0, sizeof(r));
    snprintf(r[0].name, sizeof(r[0].name), "real clips"); r[0].total = 81.25;
    snprintf(r[1].name, sizeof(r[1].name), "TMD M2 N2 H2"); r[1].nfe = effective_nfe(2, 2, 2, w.num_layers); r[1].total = 70.04; r[1].ms_per_sample = 12.34;
    snprintf(r[2].name, sizeof(r[2].name), "DMD2-v M1 (no KD yet)"); r[2].nfe = 1; r[2].total = 60;
    char path[1100]; snprintf(path, sizeof(path), "%s/table.txt", tmpdir);
    FILE* f = fopen(path, "w+");
    EXPECT(f != NULL, "cannot write %s", path);
    if (!f) return;
    distill_fprint(f, r, 3);
    rewind(f);
    char line[8][256]; int nl = 0;
    while (nl < 8 && fgets(line[nl], sizeof(line[nl]), f)) nl++;
    fclose(f);
    EXPECT(nl == 5, "a blank line, the header and one line per row: want 5 lines, found %d", nl);
    if (nl < 5) return;
    EXPECT(strstr(line[1], "eff.NFE") && strstr(line[1], "ms/sample"), "header: %s", line[1]);
    EXPECT(strstr(line[2], "real clips") && strstr(line[2], " - ") && strstr(line[2], "81.2"), "the real clips: no NFE, no time: %s", line[2]);
    EXPECT(strstr(line[3], "TMD M2 N2 H2") && strstr(line[3], "2.33") && strstr(line[3], "70.0") && strstr(line[3], "12.3"), "TMD row: %s", line[3]);
    EXPECT(strstr(line[4], "DMD2-v M1 (no KD yet)") && strstr(line[4], "1.00"), "DMD2-v row: %s", line[4]);
    EXPECT(!strstr(line[1], "target"), "no row has a distance to the distillation target, yet the header names one: %s", line[1]);
    printf("  %s", line[3]);
    // with the per-caption distance to the distillation target on one row (./test_tmd distill): three last columns,
    // "-" where unmeasured, and the total's standard error beside it where measured
    r[1].n_cap = 16; r[1].cond = 3.14159; r[1].cond_se = 0.27; r[1].diversity = 0.875; r[1].total_se = 1.5;
    f = fopen(path, "w+");
    EXPECT(f != NULL, "cannot write %s", path);
    if (!f) return;
    distill_fprint(f, r, 3);
    rewind(f);
    nl = 0;
    while (nl < 8 && fgets(line[nl], sizeof(line[nl]), f)) nl++;
    fclose(f);
    EXPECT(nl == 5 && strstr(line[1], "to target") && strstr(line[1], "diversity") && strstr(line[1], "± se"),
           "header with the target columns: %s", nl > 1 ? line[1] : "(none)");
    if (nl < 5) return;
    EXPECT(strstr(line[3], "70.0     1.5") && strstr(line[3], "3.14    0.27       0.88\n") != NULL,
           "TMD row: total ± se, then distance, its se and diversity last: %s", line[3]);
    EXPECT(strstr(line[4], " -\n") != NULL, "an unmeasured row shows '-' in the last column: %s", line[4]);
}

static void test_gpu_host(const char* tmpdir) {
    test_distill_table(tmpdir);
    test_vbench(tmpdir);
    test_distill_plan();
    test_train_state(tmpdir);
}
