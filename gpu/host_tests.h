// gpu/host_tests.h: the GPU programs' plain-C pieces, tested on the CPU: the distillation table, the VBench suite logic
// (lib/vbench.h, tests in lib/vbench_tests.h) and the memory plan of a distillation step (gpu/distill_plan.h) against
// the presets.
#pragma once
#include "../lib/vbench_tests.h"
#include "distill_plan.h"
#include "train_state.h"
#include "../cpu/tmd_cpu.h"       // student_extra_layout: the student's parameters beyond the Wan layout
#include "../cpu/disc_cpu.h"      // disc_config, disc_num_params: the discriminator heads' size
#include "../cpu/distill_table.h" // the table ./train_tmd and ./test_tmd distill print
#include "../lib/shard.h"         // the shard layout of a model's flat buffer over K ranks
#include "shard_plan.h"           // the per-rank plan on many GPUs (./train_tmd --plan)
#include "train_data.h"           // Table 7: the 1.3B and 14B students and discriminator sizes the plan targets use
#include "../cpu/distill_run.h"   // distill_defaults: the CPU reference's method, which the world's stage table follows
#include "stage_plan.h"           // train_tmd's stage table, its configs for M and the pipeline's stages
#include "multirank_tests.h"      // a multi-rank run's checkpoint, resume layout and data split

// the plan for a preset at a latent grid, with the student's extras counted by the CPU reference's own layout
// and the discriminator heads dc (NULL: none)
static PlanInput plan_input_for(const char* preset, int T, int Hl, int Wl, int N, int H, const DiscConfig* dc) {
    PlanInput in;
    memset(&in, 0, sizeof(in));
    char err[ST_ERRLEN];
    wan_preset(&in.wan, preset, err);
    in.T = T;
    in.Hl = Hl;
    in.Wl = Wl;
    in.batch = 1;
    in.N = N;
    in.H = H;
    in.recompute = 1;
    in.fuse_ffn_dim = in.wan.ffn_dim;
    StudentConfig sc;
    sc.wan = in.wan;
    sc.head_blocks = H;
    sc.fusion = FUSION_GATED;
    sc.fuse_ffn_dim = in.wan.ffn_dim;
    student_extra_layout(&sc, NULL, NULL, NULL, &in.student_extra);
    if (dc && dc->n_heads > 0) {
        in.disc = *dc;
        in.disc_params = disc_num_params(dc);
        in.disc_heads = dc->n_heads;
        for (int h = 0; h < dc->n_heads; h++)
            if (dc->layers[h] + 1 > in.disc_top) in.disc_top = dc->layers[h] + 1;
    }
    return in;
}

static double plan_item(const MemPlan* p, const char* name) {
    for (int i = 0; i < p->n; i++)
        if (!strcmp(p->item[i].name, name)) return p->item[i].bytes;
    return -1;
}

// the plan's activation items against the arenas the allocation code asks for: gpu/distill_gpu.cuh's works allocate
// these WanGpuActs and flow-head evaluations (listed here from the code, not from the plan), each sized by
// gpu/act_plan.h's lists, which the allocator carves and checks its arena against
static double plan_expected_student_act(const PlanInput* in, int stage) {
    size_t xb = in->fp32 ? 4 : 2;
    int B = in->batch, L = plan_tokens(in), fl = !in->naive_attention, rc = in->recompute;
    int nl = in->wan.num_layers, Lb = nl - in->H;
    double head = (double)act_head_eval_bytes(&in->wan, B, L, in->fuse_ffn_dim, in->H, !in->fusion_concat, rc, fl, xb);
    double bb = (double)act_wan_bytes_ex(&in->wan, B, L, 1, rc, fl, xb, Lb, 0, 0); // the backbone: L − H blocks
    if (stage ==
        1) // tmmf_gpu_work_init: bb, bb_u (forward, L − H blocks, borrowing bb's set when it recomputes), h, h_aux
        return bb + (double)act_wan_bytes_ex(&in->wan, B, L, 0, rc, fl, xb, Lb, 0, rc) + 2 * head;
    if (in->baseline)
        return (double)act_wan_bytes_ex(&in->wan, B, L, 1, rc, fl, xb, nl, 0, 0); // gen_gpu_init: the whole model
    return bb + (rc ? 1 : in->N) * head; // gen_gpu_init: bb, rollout_gpu_init's evaluations (one when recomputing)
}

// the frozen teacher's item against the tensors the GPU reads in fp32, counted here from the config by hand (per block
// modulation 6D, four RMSNorm weights 4D, norm3 2D; the patch and time embeddings, the time projection, the head),
// for every preset in both builds; and the predicate's verdict on a few names either way
static void test_frozen_plan(void) {
    char err[ST_ERRLEN];
    for (int k = 0; k < WAN_NUM_PRESETS; k++) {
        WanConfig pc;
        wan_preset(&pc, WAN_PRESETS[k].name, err);
        DiscConfig dk = disc_config(&pc, 8, 8, 8, 8, 8);
        PlanInput in = plan_input_for(WAN_PRESETS[k].name, 1, 8, 8, 2, 1, &dk);
        const WanConfig* c = &in.wan;
        double D = c->dim, P = wan_patch_numel(c), n = (double)wan_num_params(c);
        double n32 = c->num_layers * 12 * D + (D * c->in_dim * P + D) + (D * c->freq_dim + D + D * D + D) +
                     (6 * D * D + 6 * D) + (c->out_dim * P * D + c->out_dim * P + 2 * D);
        EXPECT((double)wan_gpu_fp32_params(c) == n32,
               "%s: the predicate counts %zu parameters read in fp32, by hand %.0f", c->name, wan_gpu_fp32_params(c),
               n32);
        for (int fp32 = 0; fp32 <= 1; fp32++) {
            in.fp32 = fp32;
            MemPlan p;
            distill_plan(&p, &in, 2);
            double want = fp32 ? 4 * n : 2 * n + 4 * n32;
            EXPECT(plan_item(&p, "teacher (frozen)") == want, "%s, %s: frozen teacher %.0f bytes, want %.0f", c->name,
                   fp32 ? "fp32" : "bf16", plan_item(&p, "teacher (frozen)"), want);
        }
        if (!strcmp(c->name, "wan2.1-t2v-1.3b"))
            printf("  frozen 1.3B teacher (bf16 build): %.0f params x 2 B + %.0f read in fp32 x 4 B = %.3f GiB (a full "
                   "fp32 copy too: %.3f GiB)\n",
                   n, n32, (2 * n + 4 * n32) / PLAN_GIB, 6 * n / PLAN_GIB);
    }
    const char* fp32_names[] = {"patch_embedding.weight",
                                "time_embedding.2.bias",
                                "time_projection.1.weight",
                                "blocks.0.modulation",
                                "blocks.29.self_attn.norm_k.weight",
                                "blocks.7.norm3.bias",
                                "blocks.3.cross_attn.norm_q.weight",
                                "head.head.weight",
                                "head.modulation"};
    const char* x_names[] = {"text_embedding.0.weight", "blocks.0.self_attn.q.weight",    "blocks.12.cross_attn.o.bias",
                             "blocks.2.ffn.0.weight",   "blocks.5.self_attn.norm_q.bias", "blocks.norm3.weight"};
    int bad = 0;
    for (size_t i = 0; i < sizeof(fp32_names) / sizeof(fp32_names[0]); i++)
        if (!wan_gpu_reads_fp32(fp32_names[i])) {
            bad++;
            printf("  %s: not read in fp32?\n", fp32_names[i]);
        }
    for (size_t i = 0; i < sizeof(x_names) / sizeof(x_names[0]); i++)
        if (wan_gpu_reads_fp32(x_names[i])) {
            bad++;
            printf("  %s: read in fp32?\n", x_names[i]);
        }
    EXPECT(bad == 0, "the fp32 predicate misjudges %d names", bad);
    printf("  frozen weights = the floatX copy + fp32 for the tensors read in fp32, for %d presets in both builds\n",
           WAN_NUM_PRESETS);
}

// the discriminator's items at the 1.3B and 14B shapes (480p x 81 frames: latent 21 x 60 x 104), both heads and both
// builds: the plan's bytes = what gpu/disc_gpu.cuh carves (disc_act_bytes, which disc_gpu_act_init checks its carve
// against), and the multiscale scratch = the buffers the backward uses, counted here by hand from the shapes
static void test_disc_plan(void) {
    char err[ST_ERRLEN];
    const char* names[2] = {"wan2.1-t2v-1.3b", "wan2.1-t2v-14b"};
    int checked = 0;
    for (int k = 0; k < 2; k++) {
        WanConfig c;
        wan_preset(&c, names[k], err);
        for (int kind = 0; kind < 2; kind++)
            for (int fp32 = 0; fp32 <= 1; fp32++) {
                DiscConfig dc =
                    kind ? disc_config_multiscale(&c, 1024, 21, 60, 104) : disc_config(&c, 512, 512, 1024, 1024, 512);
                PlanInput in = plan_input_for(names[k], 21, 60, 104, 4, 5, &dc);
                in.fp32 = fp32;
                MemPlan p;
                distill_plan(&p, &in, 2);
                size_t LD = (size_t)plan_tokens(&in) * c.dim, xb = fp32 ? 4 : 2;
                double want = (double)disc_act_bytes(&dc, 1, 21, 60, 104, LD, xb, 0) +
                              (double)disc_act_bytes(&dc, 1, 21, 60, 104, LD, xb, 1);
                EXPECT(plan_item(&p, "discriminator activations") == want,
                       "%s, %s head: plan %.0f bytes, the allocations %.0f", names[k], kind ? "multiscale" : "strided",
                       plan_item(&p, "discriminator activations"), want);
                EXPECT(plan_item(&p, "discriminator (trainable)") == 16.0 * (double)disc_num_params(&dc),
                       "%s: discriminator weights", names[k]);
                double gan =
                    (3.0 * 32760 * c.dim + 2.0 * 16 * 21 * 60 * 104) * 4; // dfeat_buf (3 heads), real x_t and d x_t
                EXPECT(plan_item(&p, "GAN feature gradients") == gan, "%s: GAN feature gradients %.0f, want %.0f",
                       names[k], plan_item(&p, "GAN feature gradients"), gan);
                double gen = (32760.0 * c.dim + (double)c.text_len * c.dim) * 4; // G->dm, G->dc
                EXPECT(plan_item(&p, "generator feature gradients") == gen, "%s: generator feature gradients",
                       names[k]);
                if (kind) { // by hand: the scratch's maps, slices, weights and sums, each rounded to 256 bytes
                    size_t C = (size_t)dc.in_ch, S = 21 * 60 * 104, S2 = 10 * 30 * 52, R = 8192, nch = (S + 255) / 256;
                    size_t hand = 5 * act_round(S * C * xb) + 2 * act_round(S * 5 * C * xb) +
                                  2 * act_round(S2 * C * xb) + act_round(R * 27 * C * xb) + act_round(5 * C * C * xb) +
                                  2 * act_round(27 * C * C * xb) + act_round(5 * C * C * 4) +
                                  act_round(27 * C * C * 4) + 2 * act_round(nch * C * 4) + 9 * act_round(C * 4) +
                                  act_round(5 * C * 4) + act_round(1024 * 4);
                    size_t keep = act_round(3 * 5 * C * 4) + 2 * act_round(3 * 1024 * 4) +
                                  act_round(3 * 4); // pool, h1, LeakyReLU(h1), logits
                    DiscDims z = disc_dims(&dc, 1, 21, 60, 104);
                    EXPECT(disc_ms_scratch_bytes(z, xb) == hand && disc_ms_keep_bytes(z, xb) == keep,
                           "%s: multiscale scratch %zu bytes, by hand %zu; kept %zu, by hand %zu", names[k],
                           disc_ms_scratch_bytes(z, xb), hand, disc_ms_keep_bytes(z, xb), keep);
                    if (!fp32)
                        printf("  %s multiscale head (C0 %zu, %.2fM parameters): activations %.2f GiB (scratch %.2f "
                               "GiB, shared by real and fake)\n",
                               names[k], C, disc_num_params(&dc) / 1e6, want / PLAN_GIB, hand / PLAN_GIB);
                } else if (!fp32)
                    printf("  %s strided head (%.2fM parameters): activations %.2f GiB\n", names[k],
                           disc_num_params(&dc) / 1e6, want / PLAN_GIB);
                checked++;
            }
    }
    printf("  discriminator items = gpu/disc_plan.h's allocations: %d plans (1.3B, 14B; multiscale, strided; bf16, "
           "fp32)\n",
           checked);
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
            WanConfig pc;
            wan_preset(&pc, presets[k], err);
            DiscConfig dk = disc_config(&pc, 8, 8, 8, 8, 8);
            dk.n_heads = 2;
            dk.layers[0] = 0;
            dk.layers[1] = 1;
            PlanInput in =
                plan_input_for(presets[k], grids[k][0], grids[k][1], grids[k][2], 2, 1, (v & 1) ? &dk : NULL);
            in.recompute = (v >> 1) & 1;
            in.baseline = (v >> 2) & 1;
            in.fp32 = (v >> 3) & 1;
            in.naive_attention = (v >> 4) & 1;
            in.batch = 1 + (v & 1);
            size_t xb = in.fp32 ? 4 : 2;
            int L = plan_tokens(&in), fl = !in.naive_attention, gan = in.disc_heads > 0;
            for (int stage = 1; stage <= 2; stage++) {
                MemPlan p;
                distill_plan(&p, &in, stage);
                double want = plan_expected_student_act(&in, stage), got = plan_item(&p, "student activations");
                double crit = -1, want_crit = 0;
                if (stage == 2) { // dmd_gpu_work_init: a_train (training), a_fwd (forward; attach_disc: keeping the
                                  // feature levels)
                    crit = plan_item(
                        &p, "teacher + fake score activations"); // both borrow the generator's set when recomputing
                    want_crit = (double)act_wan_bytes_ex(&in.wan, in.batch, L, 1, in.recompute, fl, xb,
                                                         in.wan.num_layers, 0, in.recompute) +
                                (double)act_wan_bytes_ex(&in.wan, in.batch, L, 0, in.recompute, fl, xb,
                                                         in.wan.num_layers, gan ? in.disc_heads : 0, in.recompute);
                }
                checked++;
                if (got != want || crit != (stage == 2 ? want_crit : -1)) {
                    bad++;
                    EXPECT(0,
                           "%s, variant %d, stage %d: the plan's activations %.0f / %.0f bytes, the allocations %.0f / "
                           "%.0f",
                           presets[k], v, stage, got, crit, want, stage == 2 ? want_crit : -1);
                }
            }
        }
    printf("  activation items = the works' allocations (gpu/act_plan.h): %d plans checked, %d differ\n", checked, bad);
    EXPECT(checked == 128 && bad == 0, "%d of %d plans differ from the allocations", bad, checked);
    // what recompute changes, buffer for buffer: a training arena drops all block sets but one, a flow-head evaluation
    // all of its own, and a recomputing training arena is the forward-only arena plus the backward's scratch
    {
        PlanInput in = plan_input_for("world", 9, 32, 32, 2, 2, NULL);
        int L = plan_tokens(&in);
        ActDims z = act_dims(&in.wan, 1, L, 1, in.fuse_ffn_dim, in.H, 1);
        size_t set = act_block_set_bytes(z, 2), keep = act_wan_bytes(&in.wan, 1, L, 1, 0, 1, 2),
               rec = act_wan_bytes(&in.wan, 1, L, 1, 1, 1, 2);
        size_t fwd = act_wan_bytes(&in.wan, 1, L, 0, 0, 1, 2);
        size_t hk = act_head_eval_bytes(&in.wan, 1, L, in.fuse_ffn_dim, in.H, 1, 0, 1, 2),
               hr = act_head_eval_bytes(&in.wan, 1, L, in.fuse_ffn_dim, in.H, 1, 1, 1, 2);
        EXPECT(keep - rec == (size_t)(in.wan.num_layers - 1) * set,
               "world: keeping every block costs %zu bytes more than recompute; want %d block sets of %zu", keep - rec,
               in.wan.num_layers - 1, set);
        EXPECT(hk - hr == (size_t)in.H * set,
               "world: a flow-head evaluation keeps %zu bytes more without recompute; want %d block sets", hk - hr,
               in.H);
        size_t level = act_round((size_t)L * in.wan.dim * 4), pre = act_round((size_t)L * in.wan.ffn_dim * 2);
        EXPECT(rec - fwd == act_scratch_bytes(z, 2) + (size_t)(in.wan.num_layers - 1) * level + pre,
               "world: a recomputing training arena is the forward arena + the backward scratch + %d more residual "
               "levels + the FFN's "
               "GELU pre-activation (a forward-only block set has none)",
               in.wan.num_layers - 1);
        size_t lent = act_wan_bytes_ex(&in.wan, 1, L, 1, 1, 1, 2, in.wan.num_layers, 0, 1);
        EXPECT(rec - lent == set + act_scratch_bytes(z, 2),
               "world: borrowing the work sets saves one block set and the scratch");
        printf("  world, bf16, flash, batch 1 (%d tokens): training arena %.2f MiB keeping every block, %.2f MiB with "
               "recompute (block set %.2f MiB)\n",
               L, keep / 1048576.0, rec / 1048576.0, set / 1048576.0);
    }
    // Wan2.1 1.3B at 480p x 81 frames (latent 21 x 60 x 104: 32,760 tokens), TMD-N4H5, bf16, flash attention
    // the discriminator: the head train_tmd builds at Wan scale, FastGen's multiscale_down_mlp_large (cpu/disc_cpu.h)
    WanConfig c13;
    wan_preset(&c13, "wan2.1-t2v-1.3b", err);
    DiscConfig dc13 = disc_config_multiscale(&c13, 1024, 21, 60, 104);
    size_t disc_1b3 = disc_num_params(&dc13);
    PlanInput in = plan_input_for("wan2.1-t2v-1.3b", 21, 60, 104, 4, 5, &dc13);
    EXPECT(plan_tokens(&in) == 32760, "1.3B at 480p x 81 frames: %d tokens, want 32760", plan_tokens(&in));
    MemPlan p2, p1;
    distill_plan(&p2, &in, 2);
    distill_plan(&p1, &in, 1);
    plan_print(&p1, "Wan2.1 1.3B, Stage 1 (TM-MF, TMD-N4H5), batch 1, 32,760 tokens, bf16, recompute", stdout);
    plan_print(&p2, "Wan2.1 1.3B, Stage 2 (DMD2-v, TMD-N4H5), batch 1, 32,760 tokens, bf16, recompute", stdout);
    double sum = 0;
    for (int i = 0; i < p2.n; i++) sum += p2.item[i].bytes;
    EXPECT(sum == p2.total, "plan total %.0f is not the sum of its items %.0f", p2.total, sum);
    double Pw = (double)wan_num_params(&in.wan);
    EXPECT(plan_item(&p2, "fake score (trainable)") == 14.0 * Pw &&
               plan_item(&p2, "student (trainable)") == 18.0 * (Pw + (double)in.student_extra) &&
               plan_item(&p2, "discriminator (trainable)") == 16.0 * (double)disc_1b3,
           "weights: 18 B per trainable parameter, 14 B for the fake score (its gradients are the student's buffer), "
           "16 B for "
           "the discriminator (fp32, no copy) (1.3B has %.0f parameters, the student %zu more)",
           Pw, in.student_extra);
    // the attention workspace: without cuDNN's report, the stated bound (the self-attention backward's fp32 dQ and two
    // row vectors: 12 heads x 32,760 tokens x (128 + 2) x 4 B), inside the plan; none on the naive path; cuDNN's figure
    // when given
    {
        double ws = plan_item(&p2, "attention workspace"), want = 12.0 * 32760 * (128 + 2) * 4;
        EXPECT(ws >= want && ws < want + 256, "1.3B attention workspace %.0f B, want the bound %.0f", ws, want);
        PlanInput rep = in;
        rep.attn_workspace = 123456789.0;
        MemPlan pr;
        distill_plan(&pr, &rep, 2);
        EXPECT(plan_item(&pr, "attention workspace") == 123456789.0 && pr.total - p2.total == 123456789.0 - ws,
               "the plan must hold cuDNN's reported workspace");
        PlanInput nv = in;
        nv.naive_attention = 1;
        MemPlan pn;
        distill_plan(&pn, &nv, 1);
        EXPECT(plan_item(&pn, "attention workspace") < 0, "the naive attention has no workspace item");
    }
    test_frozen_plan();
    test_disc_plan();
    double gib80 = 80.0 * PLAN_GIB, reserve = 2.0 * PLAN_GIB;
    // Stage 1 fits one 80 GB GPU with recompute and not without it (the refusal names the activations)
    EXPECT(plan_check(&p1, gib80, reserve, err, sizeof(err)) == 0,
           "the 1.3B Stage 1 step with recompute should fit one 80 GB GPU: %s", err);
    PlanInput nr = in;
    nr.recompute = 0;
    MemPlan r1, r;
    distill_plan(&r1, &nr, 1);
    distill_plan(&r, &nr, 2);
    EXPECT(plan_check(&r1, gib80, reserve, err, sizeof(err)) != 0 && strstr(err, "activations"),
           "1.3B Stage 1 without recompute should refuse naming the activations: %s", err);
    printf("  1.3B Stage 1 without recompute -> %s\n", err);
    // Stage 2 as the code allocates it: with recompute the generator's backbone (its residual stream), one flow-head
    // evaluation, the critic side's two plans borrowing the backbone's work sets; printed here, asserted to fit below
    EXPECT(p2.total < 0.5 * r.total, "recompute should at least halve the 1.3B Stage 2 step (%.1f vs %.1f GiB)",
           p2.total / PLAN_GIB, r.total / PLAN_GIB);
    // the requirement: the 1.3B Stage 2 step fits one 80 GB GPU. An H100 80GB reports 81,559 MiB in all
    // (nvidia-smi), of which the CUDA context takes about half a GiB: 79.0 GiB free, 2 GiB of it kept for cuBLASLt
    double h100_free = 79.0 * PLAN_GIB;
    int fits2 = plan_check(&p2, h100_free, reserve, err, sizeof(err)) == 0;
    printf("  1.3B: Stage 1 %.2f GiB (without recompute %.2f), Stage 2 %.2f GiB (without %.2f); an H100 80GB has about "
           "79.0 GiB free (2 GiB "
           "reserved): Stage 2 %s\n",
           p1.total / PLAN_GIB, r1.total / PLAN_GIB, p2.total / PLAN_GIB, r.total / PLAN_GIB,
           fits2 ? "fits" : "does NOT fit");
    EXPECT(fits2, "the 1.3B Stage 2 step with recompute should fit one 80 GB GPU: %s", err);
    // --recompute auto: on exactly when the plan without it does not fit (1.3B Stage 1 on 80 GB), off when it fits
    // (the world preset); on and off are taken as given
    char why[256], need[32];
    PlanInput ch = in;
    snprintf(need, sizeof(need), "needs %.2f GiB", r1.total / PLAN_GIB); // the reason names the plan without recompute
    EXPECT(plan_choose_recompute(&ch, 1, -1, gib80, reserve, why, sizeof(why)) == 1 && ch.recompute == 1 &&
               strstr(why, need),
           "auto, 1.3B Stage 1 on 80 GB: recompute should be on: %s", why);
    printf("  1.3B Stage 1, 80 GB: %s\n", why);
    PlanInput wc = plan_input_for("world", 9, 32, 32, 2, 2, NULL);
    EXPECT(plan_choose_recompute(&wc, 1, -1, gib80, reserve, why, sizeof(why)) == 0 && wc.recompute == 0,
           "auto, the world preset on 80 GB: recompute should be off: %s", why);
    printf("  world Stage 1, 80 GB: %s\n", why);
    EXPECT(plan_choose_recompute(&wc, 2, 1, gib80, reserve, why, sizeof(why)) == 1 && wc.recompute == 1 &&
               plan_choose_recompute(&ch, 2, 0, gib80, reserve, why, sizeof(why)) == 0 && ch.recompute == 0,
           "--recompute on / off must be taken as given");
    // the naive attention at 32,760 tokens does not fit either (its scores alone are heads x L^2 x 4 B = 48 GiB)
    PlanInput na = in;
    na.naive_attention = 1;
    MemPlan s;
    distill_plan(&s, &na, 2);
    EXPECT(plan_check(&s, gib80, reserve, err, sizeof(err)) != 0,
           "1.3B with the naive attention should refuse (%.1f GiB)", s.total / PLAN_GIB);
    // the 14B does not fit one GPU: the refusal names the student's weights
    WanConfig c14;
    wan_preset(&c14, "wan2.1-t2v-14b", err);
    DiscConfig dc14 = disc_config_multiscale(&c14, 1024, 21, 60, 104);
    PlanInput big = plan_input_for("wan2.1-t2v-14b", 21, 60, 104, 4, 5, &dc14);
    MemPlan b14;
    distill_plan(&b14, &big, 2);
    EXPECT(plan_check(&b14, gib80, reserve, err, sizeof(err)) != 0 && strstr(err, "student"),
           "14B should refuse naming the student: %s", err);
    printf("  14B -> %s\n", err);
    // the built-in world on one GPU fits easily, even with the naive attention in fp32
    WanConfig cw;
    wan_preset(&cw, "world", err);
    DiscConfig dw = disc_config(&cw, 32, 32, 64, 64, 64);
    PlanInput w = plan_input_for("world", 9, 32, 32, 4, 2, &dw);
    w.naive_attention = 1;
    w.fp32 = 1;
    MemPlan pw;
    distill_plan(&pw, &w, 2);
    EXPECT(plan_check(&pw, 16.0 * PLAN_GIB, reserve, err, sizeof(err)) == 0, "the world preset should fit 16 GiB: %s",
           err);
    printf("  world preset (fp32, naive attention): Stage 2 %.3f GiB\n", pw.total / PLAN_GIB);
    // the KD warm-up (stage 3): the pairs on the device are P x (noise + teacher sample + caption) in fp32, counted
    // here from the shapes (1.3B: latent 16 x 21 x 60 x 104, caption 512 x 4096); the plain and the TMD student fit
    PlanInput k = in;
    k.kd_pairs = 128;
    PlanInput kp = k;
    kp.student_extra = 0;
    MemPlan kd_tmd, kd_plain;
    distill_plan(&kd_tmd, &k, 3);
    distill_plan(&kd_plain, &kp, 3);
    double pairs_want = 128.0 * (2.0 * 16 * 21 * 60 * 104 + 512.0 * 4096) * 4;
    EXPECT(plan_item(&kd_plain, "KD pairs") == pairs_want && plan_item(&kd_tmd, "KD pairs") == pairs_want,
           "KD pairs: plan %.0f (plain) / %.0f (TMD) bytes, want 128 x (2 latents + caption) x 4 B = %.0f",
           plan_item(&kd_plain, "KD pairs"), plan_item(&kd_tmd, "KD pairs"), pairs_want);
    sum = 0;
    for (int i = 0; i < kd_tmd.n; i++) sum += kd_tmd.item[i].bytes;
    EXPECT(sum == kd_tmd.total, "KD plan total %.0f is not the sum of its items %.0f", kd_tmd.total, sum);
    EXPECT(plan_item(&kd_plain, "student (trainable)") == 18.0 * Pw &&
               plan_item(&kd_plain, "fake score (trainable)") < 0 && plan_item(&kd_plain, "teacher (frozen)") < 0,
           "KD on the plain student: its 18 B per parameter and no fake score or teacher on the device");
    EXPECT(plan_check(&kd_plain, gib80, reserve, err, sizeof(err)) == 0 &&
               plan_check(&kd_tmd, gib80, reserve, err, sizeof(err)) == 0,
           "the 1.3B KD warm-up must fit one 80 GB GPU: %s", err);
    EXPECT(kd_tmd.total < p2.total, "KD of the TMD student (%.1f GiB) should need less than its Stage 2 (%.1f GiB)",
           kd_tmd.total / PLAN_GIB, p2.total / PLAN_GIB);
    PlanInput k2 = kp;
    k2.kd_pairs = 256;
    MemPlan kd2;
    distill_plan(&kd2, &k2, 3);
    EXPECT(plan_item(&kd2, "KD pairs") == 2 * pairs_want && kd2.total - kd_plain.total == pairs_want,
           "256 pairs: the pairs item x2, nothing else changes");
    printf("  1.3B KD warm-up, 128 pairs (%.2f GiB of them): plain student %.2f GiB, TMD student %.2f GiB\n",
           pairs_want / PLAN_GIB, kd_plain.total / PLAN_GIB, kd_tmd.total / PLAN_GIB);
}

// a toy training run with train_tmd's discipline (weights, AdamW moments, host stream in the checkpoint): noisy
// AdamW on a quadratic, `steps` steps, resuming from `ckpt` after `stop_at` steps when stop_at > 0
static void ts_toy_run(float* w, int steps, int stop_at, const char* ckpt, char* err, int* rc) {
    enum { n = 37 };
    float m[n], v[n];
    memset(m, 0, sizeof(m));
    memset(v, 0, sizeof(v));
    Rng r = rng_make(99);
    uint64_t step = 0;
    for (int i = 0; i < n; i++) w[i] = (float)(0.1 * i);
    TsBuffer bufs[3] = {{"toy.params", w, n}, {"toy.adam_m", m, n}, {"toy.adam_v", v, n}};
    *rc = 0;
    for (;;) {
        if (stop_at > 0 && step == (uint64_t)stop_at) { // checkpoint, forget everything, reload
            TsMeta meta;
            memset(&meta, 0, sizeof(meta));
            ts_meta_u64(&meta, "step", step);
            ts_meta_u64(&meta, "rng_seed", r.seed);
            ts_meta_u64(&meta, "rng_counter", r.counter);
            ts_meta_set(&meta, "stage", "toy");
            if ((*rc = ts_save(ckpt, bufs, 3, &meta, err))) return;
            memset(w, 0, sizeof(float) * n);
            memset(m, 0, sizeof(m));
            memset(v, 0, sizeof(v));
            r = rng_make(0);
            step = 0;
            TsMeta have, want;
            memset(&want, 0, sizeof(want));
            ts_meta_set(&want, "stage", "toy");
            if ((*rc = ts_load(ckpt, bufs, 3, &have, err)) || (*rc = ts_check_settings(&have, &want, ckpt, err)))
                return;
            if ((*rc = ts_meta_get_u64(&have, "step", &step, ckpt, err)) ||
                (*rc = ts_meta_get_u64(&have, "rng_seed", &r.seed, ckpt, err)) ||
                (*rc = ts_meta_get_u64(&have, "rng_counter", &r.counter, ckpt, err)))
                return;
            stop_at = 0;
        }
        if (step == (uint64_t)steps) return;
        step++;
        for (int i = 0; i < n; i++) {
            float g = w[i] - 1.0f + (float)(0.3 * rng_normal(&r));
            m[i] = 0.9f * m[i] + 0.1f * g;
            v[i] = 0.99f * v[i] + 0.01f * g * g;
            w[i] -= 0.05f * (m[i] / (1.0f - powf(0.9f, (float)step))) /
                    (sqrtf(v[i] / (1.0f - powf(0.99f, (float)step))) + 1e-8f);
        }
    }
}

static void test_train_state(const char* tmpdir) {
    printf("\n[checkpoint] train_tmd's training state: round trip, resume = uninterrupted, refusals\n");
    char path[1024], err[ST_ERRLEN];
    snprintf(path, sizeof(path), "%s/state.safetensors", tmpdir);
    float a[40], b[40];
    int rc;
    ts_toy_run(a, 20, 0, path, err, &rc);
    ts_toy_run(b, 20, 7, path, err, &rc);
    EXPECT(rc == 0, "resume: %s", err);
    EXPECT(!memcmp(a, b, sizeof(float) * 37),
           "20 steps with a checkpoint and reload at step 7 differ from 20 uninterrupted steps");
    printf("  toy AdamW run, 20 steps: checkpoint + reload at step 7 equals the uninterrupted run bit for bit: %s\n",
           memcmp(a, b, sizeof(float) * 37) ? "NO" : "yes");
    // a run without the host stream in the checkpoint would differ (the test can fail)
    float c[40];
    ts_toy_run(c, 7, 0, path, err, &rc);
    TsBuffer one[1] = {{"toy.params", b, 37}};
    TsMeta meta;
    EXPECT(ts_load(path, one, 1, &meta, err) == 0 && !memcmp(b, c, sizeof(float) * 37),
           "the checkpoint at step 7 holds the weights of step 7");
    TsBuffer wrong[1] = {{"toy.params", b, 36}};
    EXPECT(ts_load(path, wrong, 1, &meta, err) != 0 && strstr(err, "toy.params") && strstr(err, "37"),
           "size mismatch: %s", err);
    printf("  wrong size -> %s\n", err);
    TsBuffer missing[1] = {{"student.params", b, 37}};
    EXPECT(ts_load(path, missing, 1, &meta, err) != 0 && strstr(err, "student.params"), "missing buffer: %s", err);
    TsMeta want;
    memset(&want, 0, sizeof(want));
    ts_meta_set(&want, "stage", "stage2");
    ts_load(path, one, 1, &meta, err);
    EXPECT(ts_check_settings(&meta, &want, path, err) != 0 && strstr(err, "stage"), "settings mismatch: %s", err);
    printf("  other settings -> %s\n", err);
    // the pipeline's decision per stage (./train_tmd with no --stage): start, resume, skip
    uint64_t done = 0;
    char missing_path[1100];
    snprintf(missing_path, sizeof(missing_path), "%s/no-such-stage.safetensors", tmpdir);
    EXPECT(ts_stage_action(missing_path, 20, &done, err) == TS_FRESH, "a stage without a checkpoint starts fresh");
    EXPECT(ts_stage_action(path, 20, &done, err) == TS_RESUME && done == 7,
           "a checkpoint at step 7 of 20 resumes (got step %llu)", (unsigned long long)done);
    EXPECT(ts_stage_action(path, 7, &done, err) == TS_DONE && ts_stage_action(path, 5, &done, err) == TS_DONE,
           "a checkpoint at step 7 completes a run of 7 (or fewer) steps");
    printf("  pipeline: no checkpoint -> start; step 7 of 20 -> resume; step 7 of 7 -> skip\n");
    TsMeta nostep;
    memset(&nostep, 0, sizeof(nostep));
    ts_meta_set(&nostep, "stage", "toy");
    char nostep_path[1100];
    snprintf(nostep_path, sizeof(nostep_path), "%s/nostep.safetensors", tmpdir);
    EXPECT(ts_save(nostep_path, one, 1, &nostep, err) == 0, "write: %s", err);
    EXPECT(ts_stage_action(nostep_path, 20, &done, err) == TS_BAD && strstr(err, "step"),
           "a checkpoint without a step must be refused: %s", err);
    printf("  no step in the checkpoint -> %s\n", err);
    FILE* f = fopen(path, "r+b");
    if (f) {
        fseek(f, 0, SEEK_END);
        long sz = ftell(f);
        fclose(f);
        if (truncate(path, sz - 8) != 0) sz = 0;
    }
    EXPECT(ts_load(path, one, 1, &meta, err) != 0, "a truncated checkpoint must be refused");
    EXPECT(ts_stage_action(path, 20, &done, err) == TS_BAD,
           "the pipeline must refuse a truncated checkpoint, not restart over it");
    printf("  truncated file -> %s\n", err);
}

// the table ./train_tmd prints (the CPU reference's printer): the world preset's TMD rows carry Eq. 16's effective
// NFE, M·(1 + (N − 1)·H/L) = 7/6 at M 1 and 7/3 at M 2 for N 2, H 2 of L 12 blocks; rows without a sampler show "-"
static void test_distill_table(const char* tmpdir) {
    printf("\n[table] the distillation table's rows (./train_tmd's pipeline, ./test_tmd distill)\n");
    WanConfig w;
    char err[ST_ERRLEN];
    wan_preset(&w, "world", err);
    EXPECT(w.num_layers == 12, "the world preset has %d blocks; the expected NFE below assume 12", w.num_layers);
    EXPECT(fabs(effective_nfe(1, 2, 2, w.num_layers) - 7.0 / 6) < 1e-12 &&
               fabs(effective_nfe(2, 2, 2, w.num_layers) - 7.0 / 3) < 1e-12,
           "effective NFE %.6f, %.6f; want 7/6, 7/3", effective_nfe(1, 2, 2, w.num_layers),
           effective_nfe(2, 2, 2, w.num_layers));
    DistillRow r[3];
    memset(r, 0, sizeof(r));
    snprintf(r[0].name, sizeof(r[0].name), "real clips");
    r[0].total = 81.25;
    snprintf(r[1].name, sizeof(r[1].name), "TMD M2 N2 H2");
    r[1].nfe = effective_nfe(2, 2, 2, w.num_layers);
    r[1].total = 70.04;
    r[1].ms_per_sample = 12.34;
    snprintf(r[2].name, sizeof(r[2].name), "DMD2-v M1 (no KD yet)");
    r[2].nfe = 1;
    r[2].total = 60;
    char path[1100];
    snprintf(path, sizeof(path), "%s/table.txt", tmpdir);
    FILE* f = fopen(path, "w+");
    EXPECT(f != NULL, "cannot write %s", path);
    if (!f) return;
    distill_fprint(f, r, 3);
    rewind(f);
    char line[8][256];
    int nl = 0;
    while (nl < 8 && fgets(line[nl], sizeof(line[nl]), f)) nl++;
    fclose(f);
    EXPECT(nl == 5, "a blank line, the header and one line per row: want 5 lines, found %d", nl);
    if (nl < 5) return;
    EXPECT(strstr(line[1], "eff.NFE") && strstr(line[1], "ms/sample"), "header: %s", line[1]);
    EXPECT(strstr(line[2], "real clips") && strstr(line[2], " - ") && strstr(line[2], "81.2"),
           "the real clips: no NFE, no time: %s", line[2]);
    EXPECT(strstr(line[3], "TMD M2 N2 H2") && strstr(line[3], "2.33") && strstr(line[3], "70.0") &&
               strstr(line[3], "12.3"),
           "TMD row: %s", line[3]);
    EXPECT(strstr(line[4], "DMD2-v M1 (no KD yet)") && strstr(line[4], "1.00"), "DMD2-v row: %s", line[4]);
    EXPECT(!strstr(line[1], "target"), "no row has a distance to the distillation target, yet the header names one: %s",
           line[1]);
    printf("  %s", line[3]);
    // with the per-caption distance to the distillation target on one row (./test_tmd distill): three last columns,
    // "-" where unmeasured, and the total's standard error beside it where measured
    r[1].n_cap = 16;
    r[1].cond = 3.14159;
    r[1].cond_se = 0.27;
    r[1].diversity = 0.875;
    r[1].total_se = 1.5;
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

// every element of the layout owned exactly once: each (rank, shard index) slot taken by at most one element, the
// slots no element takes are exactly the padding, every unit's slices equal and aligned, the unit boundaries where
// they were asked for; and a scatter to K shards followed by every unit's gather gives the flat buffer back
static int shard_check_layout(const ShardLayout* L, const char* what) {
    int bad = 0;
    size_t K = (size_t)L->K, slots = K * L->shard_numel;
    unsigned char* used = (unsigned char*)calloc(slots, 1);
    size_t twice = 0, off_unit = 0, misaligned = 0;
    for (int u = 0; u < L->n_units; u++) {
        const ShardUnit* x = &L->unit[u];
        if (u > 0 && x->offset != L->unit[u - 1].offset + L->unit[u - 1].numel) off_unit++;
        if (L->K > 1 && x->slice % (size_t)L->align) misaligned++;
        if (shard_padded(L, u) < x->numel || (L->K > 1 && shard_padded(L, u) - x->numel >= K * (size_t)L->align))
            misaligned++;
    }
    for (size_t g = 0; g < L->numel; g++) {
        int r;
        size_t loc;
        shard_owner(L, g, &r, &loc);
        int u = shard_unit_of(L, g);
        // the slot lies inside the element's own unit's slice of its rank
        if (r < 0 || (size_t)r >= K || loc < L->unit[u].shard_offset ||
            loc >= L->unit[u].shard_offset + L->unit[u].slice) {
            off_unit++;
            continue;
        }
        size_t slot = (size_t)r * L->shard_numel + loc;
        if (used[slot]++) twice++;
    }
    size_t free_slots = 0;
    for (size_t i = 0; i < slots; i++) free_slots += !used[i];
    size_t owned = 0;
    for (int r = 0; r < L->K; r++) owned += shard_owned(L, r);
    EXPECT(!twice && !off_unit && !misaligned,
           "%s: %zu slots owned twice, %zu elements outside their unit's slice, %zu misaligned or over-padded units",
           what, twice, off_unit, misaligned);
    EXPECT(free_slots == shard_padding(L) && owned == L->numel,
           "%s: %zu slots unowned, the padding is %zu; %zu owned, %zu elements", what, free_slots, shard_padding(L),
           owned, L->numel);
    // scatter + gather round trip over distinct values
    float* flat = (float*)malloc(sizeof(float) * L->numel);
    float* back = (float*)calloc(L->numel, sizeof(float));
    float** sh = (float**)malloc(sizeof(float*) * K);
    for (size_t g = 0; g < L->numel; g++) flat[g] = (float)(g + 1);
    for (size_t r = 0; r < K; r++) {
        sh[r] = (float*)malloc(sizeof(float) * L->shard_numel);
        shard_scatter_host(L, (int)r, flat, sh[r], sizeof(float));
    }
    for (int u = 0; u < L->n_units; u++) shard_unit_gather_host(L, u, (const void* const*)sh, back, sizeof(float));
    size_t nonzero_pad = 0;
    for (size_t r = 0; r < K; r++)
        for (size_t i = 0; i < L->shard_numel; i++) nonzero_pad += !used[r * L->shard_numel + i] && sh[r][i] != 0;
    EXPECT(!memcmp(flat, back, sizeof(float) * L->numel) && !nonzero_pad,
           "%s: scatter + gather differs from the flat buffer, or %zu padding slots not zero", what, nonzero_pad);
    bad = twice || off_unit || misaligned || free_slots != shard_padding(L) || owned != L->numel ||
          memcmp(flat, back, sizeof(float) * L->numel) || nonzero_pad;
    for (size_t r = 0; r < K; r++) free(sh[r]);
    free(sh);
    free(flat);
    free(back);
    free(used);
    return bad;
}

static void test_shard_layout(void) {
    printf("\n[shard] the fully sharded layout of a flat parameter buffer over K ranks (lib/shard.h)\n");
    char err[ST_ERRLEN];
    int Ks[] = {1, 2, 3, 8, 16, 64};
    // every element of the small presets, the student's extras and the discriminator's heads, enumerated
    const char* small[] = {"tiny", "world"};
    for (int p = 0; p < 2; p++) {
        PlanInput in = plan_input_for(small[p], 1, 8, 8, 2, 1, NULL);
        for (int k = 0; k < 6; k++) {
            if (p == 1 && Ks[k] != 3) continue; // the world's 31M elements once (K 3: slices the world does not divide)
            ShardLayout L;
            char what[96];
            EXPECT(shard_layout_wan(&L, &in.wan, in.student_extra, Ks[k], 64, err, sizeof(err)) == 0, "%s", err);
            snprintf(what, sizeof(what), "%s student, K %d", small[p], Ks[k]);
            int bad = shard_check_layout(&L, what);
            // the units: embed, one per block starting at blocks.l's first tensor, head, flow_head
            WanTensor* t = (WanTensor*)malloc(sizeof(WanTensor) * WAN_MAX_TENSORS);
            size_t nw;
            int nt = wan_layout(&in.wan, t, NULL, NULL, &nw);
            int found = 0;
            for (int i = 0; i < nt; i++) {
                int l;
                char rest[96];
                if (sscanf(t[i].name, "blocks.%d.%95s", &l, rest) == 2 && !strcmp(rest, "self_attn.q.weight"))
                    found += L.unit[1 + l].offset == t[i].offset;
                if (!strcmp(t[i].name, "head.head.weight"))
                    found += L.unit[1 + in.wan.num_layers].offset == t[i].offset;
            }
            free(t);
            EXPECT(L.n_units == in.wan.num_layers + 3 && found == in.wan.num_layers + 1 &&
                       L.unit[L.n_units - 1].offset == nw && L.numel == nw + in.student_extra,
                   "%s: %d units, %d boundaries at their tensors (want %d units: embed, %d blocks, head, flow_head)",
                   what, L.n_units, found, in.wan.num_layers + 3, in.wan.num_layers);
            if (Ks[k] == 3 && p == 1)
                printf(
                    "  %s: %d units, every element owned once, %zu padding elements, scatter + gather round trip%s\n",
                    what, L.n_units, shard_padding(&L), bad ? " FAILED" : " ok");
        }
        DiscConfig dc = disc_config(&in.wan, 8, 8, 16, 16, 16), one = dc;
        one.n_heads = 1;
        size_t per = disc_num_params(&one), sizes[DISC_MAX_HEADS];
        const char* names[DISC_MAX_HEADS];
        for (int h = 0; h < dc.n_heads; h++) {
            sizes[h] = per;
            names[h] = "disc.head";
        }
        for (int k = 0; k < 6; k++) {
            ShardLayout L;
            char what[96];
            snprintf(what, sizeof(what), "%s discriminator (%d heads), K %d", small[p], dc.n_heads, Ks[k]);
            EXPECT(shard_layout_init(&L, names, sizes, dc.n_heads, Ks[k], 64, err, sizeof(err)) == 0 &&
                       L.numel == disc_num_params(&dc),
                   "%s", what);
            shard_check_layout(&L, what);
        }
    }
    // K = 1 is the identity layout: shard index = flat index, no padding
    {
        PlanInput in = plan_input_for("world", 1, 8, 8, 2, 1, NULL);
        ShardLayout L;
        shard_layout_wan(&L, &in.wan, in.student_extra, 1, 64, err, sizeof(err));
        size_t moved = 0;
        for (size_t g = 0; g < L.numel; g++) {
            int r;
            size_t loc;
            shard_owner(&L, g, &r, &loc);
            moved += r != 0 || loc != g;
        }
        EXPECT(!moved && L.shard_numel == L.numel && shard_padding(&L) == 0,
               "K 1: %zu elements not at their own index, %zu padding", moved, shard_padding(&L));
        printf("  K 1: the identity layout (%zu elements at their own index, no padding)\n", L.numel);
    }
    // the Wan2.1 presets: each block a unit of 8D^2 + 2FD + F + 21D parameters (counted by hand from wan.h's block),
    // each rank's shard 1/K of the model plus at most K*align padding per unit
    const char* big[] = {"wan2.1-t2v-1.3b", "wan2.1-t2v-14b"};
    int Kb[] = {1, 2, 8, 16, 64};
    for (int p = 0; p < 2; p++) {
        PlanInput in = plan_input_for(big[p], 21, 60, 104, 2, 5, NULL);
        double D = in.wan.dim, F = in.wan.ffn_dim, block = 8 * D * D + 2 * F * D + F + 21 * D;
        printf("  %s student (%.4fB params, flow head %.1fM):", big[p],
               (double)(wan_num_params(&in.wan) + in.student_extra) / 1e9, (double)in.student_extra / 1e6);
        for (int k = 0; k < 5; k++) {
            ShardLayout L;
            shard_layout_wan(&L, &in.wan, in.student_extra, Kb[k], 64, err, sizeof(err));
            size_t owned = 0;
            for (int r = 0; r < Kb[k]; r++) owned += shard_owned(&L, r);
            EXPECT((double)L.unit[1].numel == block && (double)L.unit[in.wan.num_layers].numel == block,
                   "%s: block unit %zu, by hand %.0f", big[p], L.unit[1].numel, block);
            EXPECT(owned == L.numel && L.shard_numel * (size_t)Kb[k] == L.numel + shard_padding(&L) &&
                       shard_padding(&L) < (size_t)L.n_units * (size_t)Kb[k] * 64 &&
                       (Kb[k] > 1 || shard_padding(&L) == 0),
                   "%s K %d: shard %zu, padding %zu, owned %zu of %zu", big[p], Kb[k], L.shard_numel, shard_padding(&L),
                   owned, L.numel);
            printf(" K %d: %.1fM/rank%s", Kb[k], (double)L.shard_numel / 1e6, k < 4 ? "," : "\n");
        }
    }
}

// the frozen bf16-only model's fp32-read layout (gpu/frozen_weights.h shard_layout_wan_fp32, gpu/fsdp_gpu.cuh's frozen
// provider): per unit exactly the tensors the predicate names, counted by hand from the config (a block 12 D: the
// modulation 6 D, four RMSNorm weights, norm3's weight and bias; the embeddings: the patch embedding, the time
// embedding and projection; the head: all of it); every such tensor inside the unit it belongs to in the whole layout;
// the packed host copy in that order; and the shared buffers' list of one model equal to a model's own pair
static void test_frozen_fp32_layout(void) {
    printf("\n[frozen fp32 layout] a sharded frozen model's fp32-read tensors as a layout of their own\n");
    char err[256];
    const char* names[] = {"wan2.1-t2v-1.3b", "wan2.1-t2v-14b"};
    int Ks[] = {1, 2, 16};
    for (int k = 0; k < 2; k++) {
        WanConfig c;
        wan_preset(&c, names[k], err);
        double D = c.dim, P = wan_patch_numel(&c);
        double emb = (D * c.in_dim * P + D) + (D * c.freq_dim + D + D * D + D) + (6 * D * D + 6 * D),
               head = c.out_dim * P * D + c.out_dim * P + 2 * D;
        for (int ki = 0; ki < 3; ki++) {
            ShardLayout L, Lf;
            EXPECT(shard_layout_wan(&L, &c, 0, Ks[ki], 64, err, sizeof(err)) == 0, "%s", err);
            EXPECT(shard_layout_wan_fp32(&Lf, &L, &c, err, sizeof(err)) == 0, "%s", err);
            int bad = Lf.n_units != L.n_units || Lf.K != L.K || Lf.numel != wan_gpu_fp32_params(&c);
            for (int u = 0; u < Lf.n_units; u++) {
                double want = u == 0 ? emb : u == L.n_units - 1 ? head : 12 * D;
                if ((double)Lf.unit[u].numel != want) {
                    bad = 1;
                    printf("  %s K %d: unit %s has %zu fp32-read elements, by hand %.0f\n", c.name, Ks[ki],
                           Lf.unit[u].name, Lf.unit[u].numel, want);
                }
            }
            EXPECT(!bad, "%s over %d ranks: the fp32-read layout (%d units, %zu elements) is not the predicate's",
                   c.name, Ks[ki], Lf.n_units, Lf.numel);
            // every fp32-read tensor packed inside its own unit of Lf (the provider's views rebase by unit)
            WanTensor* t = (WanTensor*)malloc(sizeof(WanTensor) * WAN_MAX_TENSORS);
            int nt = wan_layout(&c, t, NULL, NULL, NULL), outside = 0;
            size_t packed = 0;
            for (int i = 0; i < nt; i++) {
                if (!wan_gpu_reads_fp32(t[i].name)) continue;
                int u = shard_unit_of(&L, t[i].offset);
                const ShardUnit* y = &Lf.unit[u];
                outside += packed < y->offset || packed + t[i].numel > y->offset + y->numel;
                packed += t[i].numel;
            }
            free(t);
            EXPECT(!outside && packed == Lf.numel, "%s: %d fp32-read tensors packed outside their unit", c.name,
                   outside);
            // sharded: 2 B a parameter + 4 B for each fp32-read one (plus padding), not 6
            if (Ks[ki] == 16 && k == 1)
                printf("  %s over 16 ranks: %.1fM fp32-read of %.1fM params a rank; frozen slices %.3f GiB (a full "
                       "fp32 shard too: %.3f GiB)\n",
                       c.name, Lf.shard_numel / 1e6, L.shard_numel / 1e6,
                       (2.0 * L.shard_numel + 4.0 * Lf.shard_numel) / PLAN_GIB, 6.0 * L.shard_numel / PLAN_GIB);
            // the shared list: one trainable model alone is the model's own pair; adding the frozen one adds nothing
            // to the fp32 pair (its fp32 part is smaller than a block) and nothing to the gradients
            ShardBuf a[SHARD_FSDP_MAX_BUFS], b2[SHARD_FSDP_MAX_BUFS];
            ShardFsdpModel two[2] = {shard_fsdp_model(&L, NULL, 1), shard_fsdp_model(&L, &Lf, 0)};
            int na = shard_fsdp_buffers(&L, 1, 0, a), nb = shard_fsdp_shared_buffers(two, 2, 0, b2), same = na == nb;
            for (int i = 0; same && i < na; i++) same = a[i].bytes == b2[i].bytes && a[i].kind == b2[i].kind;
            EXPECT(na == 6 && same && a[0].bytes == 4 * L.max_unit_padded && a[2].bytes == 2 * L.max_unit_padded &&
                       a[4].bytes == 4 * shard_padded(&L, 0),
                   "%s K %d: the shared list of a trainable and a frozen model (%d buffers) is not one model's (%d)",
                   c.name, Ks[ki], nb, na);
            // the fp32 build: a frozen packed model alone needs its fp32 part and a copy pair, no gradients
            ShardFsdpModel fz = shard_fsdp_model(&L, &Lf, 0);
            int nf = shard_fsdp_shared_buffers(&fz, 1, 1, a);
            EXPECT(nf == 4 && a[0].bytes == 4 * Lf.max_unit_padded && a[2].bytes == 4 * L.max_unit_padded,
                   "%s: the fp32 build's frozen packed buffers (%d)", c.name, nf);
        }
        // the packed host copy: element j of the packed buffer is the j-th fp32-read element in layout order
        if (k == 0) {
            size_t n = wan_num_params(&c), n32 = wan_gpu_fp32_params(&c);
            float* flat = (float*)malloc(sizeof(float) * n);
            float* pk = (float*)malloc(sizeof(float) * n32);
            for (size_t i = 0; i < n; i++) flat[i] = (float)(i % 8388608);
            wan_fp32_pack_host(&c, flat, pk);
            WanTensor* t = (WanTensor*)malloc(sizeof(WanTensor) * WAN_MAX_TENSORS);
            int nt = wan_layout(&c, t, NULL, NULL, NULL), wrong = 0;
            size_t o = 0;
            for (int i = 0; i < nt; i++)
                if (wan_gpu_reads_fp32(t[i].name)) {
                    wrong += pk[o] != flat[t[i].offset] || pk[o + t[i].numel - 1] != flat[t[i].offset + t[i].numel - 1];
                    o += t[i].numel;
                }
            free(t);
            free(flat);
            free(pk);
            EXPECT(!wrong && o == n32, "%s: %d fp32-read tensors packed out of place", c.name, wrong);
        }
    }
}

// the per-rank plan (gpu/shard_plan.h, ./train_tmd --plan): one rank is the single-GPU plan exactly; the states are
// the shard layouts' sizes; the activations at cp K2 are those of a sample of L/K2 tokens on ANOTHER latent grid (the
// plan re-grids the sample, this check does not); the targets fit or are refused; bad layouts are refused
static void test_shard_plan(void) {
    printf(
        "\n[shard plan] the per-rank memory plan on K GPUs, cp K2 per sample (gpu/shard_plan.h, ./train_tmd --plan)\n");
    char err[512];
    const char* big[] = {"wan2.1-t2v-1.3b", "wan2.1-t2v-14b"};
    int Ns[] = {2, 4};
    for (int b = 0; b < 2; b++) {
        WanConfig wc;
        wan_preset(&wc, big[b], err);
        DiscConfig dc = disc_config_multiscale(&wc, 1024, 21, 60, 104); // the head train_tmd builds at Wan scale
        PlanInput in = plan_input_for(big[b], 21, 60, 104, Ns[b], 5, &dc);
        for (int stage = 1; stage <= 2; stage++) {
            MemPlan one, sh;
            ShardPlanInput sp1 = {1, 1, 80 * PLAN_GIB};
            distill_plan(&one, &in, stage);
            EXPECT(shard_plan(&sh, &in, stage, &sp1, err, sizeof(err)) == 0 && sh.total == one.total && sh.n == one.n,
                   "%s stage %d: 1 rank %.6f GiB in %d items, the single-GPU plan %.6f GiB in %d", big[b], stage,
                   sh.total / PLAN_GIB, sh.n, one.total / PLAN_GIB, one.n);
            // K = 16, cp 4: the states from the layouts, the student's activations from another grid of L/4 tokens
            ShardPlanInput sp = {16, 4, 80 * PLAN_GIB};
            EXPECT(shard_plan(&sh, &in, stage, &sp, err, sizeof(err)) == 0, "%s", err);
            ShardLayout ls, lw, ld;
            shard_plan_layouts(&in, 16, &ls, &lw, &ld, err, sizeof(err));
            EXPECT(plan_item(&sh, "student (trainable)") == 18.0 * ls.shard_numel && ls.shard_numel * 16 >= ls.numel &&
                       ls.shard_numel * 16 < ls.numel + (size_t)ls.n_units * 16 * SHARD_PLAN_ALIGN,
                   "%s: student shard %.0f bytes, 18 x %zu elements (1/16 of %zu + padding)", big[b],
                   plan_item(&sh, "student (trainable)"), ls.shard_numel, ls.numel);
            PlanInput q = in;
            q.T = 21;
            q.Hl = 30;
            q.Wl = 52; // 21 x 15 x 26 = 8190 = 32760 / 4 tokens
            EXPECT(plan_tokens(&q) * 4 == plan_tokens(&in), "the check's grid has %d tokens, want %d", plan_tokens(&q),
                   plan_tokens(&in) / 4);
            EXPECT(plan_item(&sh, "student activations") == plan_expected_student_act(&q, stage),
                   "%s stage %d: student activations at cp 4 %.0f, of 8190 tokens %.0f", big[b], stage,
                   plan_item(&sh, "student activations"), plan_expected_student_act(&q, stage));
            if (stage == 2) {
                MemPlan whole;
                distill_plan(&whole, &in, 2);
                ShardLayout lf; // the teacher's fp32-read tensors: per block 12 D, the embeddings' and the head's
                EXPECT(shard_layout_wan_fp32(&lf, &lw, &in.wan, err, sizeof(err)) == 0, "%s", err);
                double fs = (double)lw.shard_numel * 14.0, fz = 2.0 * lw.shard_numel + 4.0 * lf.shard_numel;
                EXPECT(plan_item(&sh, "fake score (trainable)") == fs && plan_item(&sh, "teacher (frozen)") == fz &&
                           plan_item(&sh, "discriminator (trainable)") == 16.0 * ld.shard_numel,
                       "%s: fake score %.0f (want %.0f), teacher %.0f (want %.0f), discriminator", big[b],
                       plan_item(&sh, "fake score (trainable)"), fs, plan_item(&sh, "teacher (frozen)"), fz);
                EXPECT(plan_item(&sh, "discriminator activations") == plan_item(&whole, "discriminator activations"),
                       "the discriminator runs on the whole (gathered) sample");
                // what gpu/fsdp_gpu.cuh allocates for the step (lib/shard.h shard_fsdp_shared_buffers), from the
                // layouts' units: ONE pair shared by the student, the fake score and the frozen teacher, fp32 for the
                // largest unit any of them gathers in fp32 (the teacher: its fp32-read part only) and bf16 for the
                // largest whole unit; one pair of unit gradients for the larger trainable embeddings and unit
                double us = 0, uw = 0, uf = 0;
                for (int u = 0; u < ls.n_units; u++) us = fmax(us, 16.0 * ls.unit[u].slice);
                for (int u = 0; u < lw.n_units; u++) uw = fmax(uw, 16.0 * lw.unit[u].slice);
                for (int u = 0; u < lf.n_units; u++) uf = fmax(uf, 16.0 * lf.unit[u].slice);
                double gw = 2 * 4.0 * fmax(fmax(us, uw), uf) + 2 * 2.0 * fmax(us, uw),
                       ug = 4.0 * fmax(16.0 * ls.unit[0].slice, 16.0 * lw.unit[0].slice) + 4.0 * fmax(us, uw);
                EXPECT(plan_item(&sh, "gathered weights") == gw && plan_item(&sh, "unit gradients (fp32)") == ug &&
                           us == (double)ls.unit[1].slice * 16,
                       "%s: gathered weights %.0f (want %.0f: 2 x (4 + 2) B x the largest unit, shared), unit "
                       "gradients %.0f (want %.0f)",
                       big[b], plan_item(&sh, "gathered weights"), gw, plan_item(&sh, "unit gradients (fp32)"), ug);
            }
        }
    }
    // the targets, 480p x 81 frames, batch 1 per group, bf16, recompute, Table 7's students and discriminator
    // size
    typedef struct {
        const char* preset;
        int stage, K, cp, batch;
        double gib;
        int fits;
    } Target;
    const Target tg[] = {{"wan2.1-t2v-14b", 1, 16, 4, 1, 80, 1},   {"wan2.1-t2v-14b", 2, 16, 4, 1, 80, 1},
                         {"wan2.1-t2v-14b", 2, 1, 1, 1, 80, 0},    {"wan2.1-t2v-14b", 1, 1, 1, 1, 80, 0},
                         {"wan2.1-t2v-14b", 2, 8, 4, 1, 140.4, 1}, {"wan2.1-t2v-14b", 2, 8, 4, 1, 80, 0},
                         {"wan2.1-t2v-1.3b", 2, 2, 1, 1, 80, 1},   {"wan2.1-t2v-1.3b", 2, 2, 1, 2, 80, 1}};
    for (int i = 0; i < (int)(sizeof(tg) / sizeof(tg[0])); i++) {
        WanConfig wc;
        Table7 t7;
        wan_preset(&wc, tg[i].preset, err);
        table7_for(&wc, &t7);
        DiscConfig dc = disc_config_multiscale(&wc, 1024, 21, 60, 104); // the head train_tmd builds at Wan scale (auto)
        PlanInput in = plan_input_for(tg[i].preset, 21, 60, 104, t7.N, t7.H, tg[i].stage == 2 ? &dc : NULL);
        in.batch = tg[i].batch;
        ShardPlanInput sp = {tg[i].K, tg[i].cp, tg[i].gib * PLAN_GIB};
        MemPlan p;
        EXPECT(shard_plan(&p, &in, tg[i].stage, &sp, err, sizeof(err)) == 0, "%s", err);
        int refused = shard_plan_check(&p, &sp, err, sizeof(err));
        EXPECT(refused == !tg[i].fits, "%s stage %d on %d x %g GiB, cp %d, batch %d: %.2f GiB a rank, want it to %s",
               tg[i].preset, tg[i].stage, tg[i].K, tg[i].gib, tg[i].cp, tg[i].batch, p.total / PLAN_GIB,
               tg[i].fits ? "fit" : "be refused");
        EXPECT(!refused || (strstr(err, "GiB a rank") && strstr(err, "--ranks")),
               "the refusal names the numbers and what to change: %s", err);
        printf("  %-15s stage %d, %2d x %5.1f GiB, cp %d, batch %d: %6.2f GiB a rank (states %5.2f), %s\n",
               tg[i].preset, tg[i].stage, tg[i].K, tg[i].gib, tg[i].cp, tg[i].batch, p.total / PLAN_GIB,
               shard_plan_states(&p) / PLAN_GIB, refused ? "refused" : "fits");
    }
    // impossible layouts: cp not dividing the ranks, the heads (40 for 14B) or the tokens
    PlanInput in = plan_input_for("wan2.1-t2v-14b", 21, 60, 104, 4, 5, NULL);
    MemPlan p;
    ShardPlanInput bad1 = {16, 3, 80 * PLAN_GIB}, bad2 = {12, 3, 80 * PLAN_GIB};
    EXPECT(shard_plan(&p, &in, 2, &bad1, err, sizeof(err)) != 0 && strstr(err, "divisor of the ranks"),
           "cp 3 of 16 ranks: %s", err);
    EXPECT(shard_plan(&p, &in, 2, &bad2, err, sizeof(err)) != 0 && strstr(err, "40 heads"), "cp 3 of 40 heads: %s",
           err);
    printf("  cp 3 on 12 ranks -> %s\n", err);
}

// train_tmd's stages (gpu/stage_plan.h): the outer grid it trains on is the one its samplers sample on, for every M;
// the single stages' defaults are the pipeline's, the CPU reference's and Table 7's; the pipeline trains the paper's
// two DMD2-v baselines (M = 1 KD-warmed, M >= 2 without KD)
static void test_stage_plan(void) {
    printf("\n[stages] train_tmd's stage table, its outer grid for M, the pipeline's stages\n");
    char err[ST_ERRLEN];
    // 1. the trainers' t_student grid (Stage 1, Stage 2 and the baselines: stage_tmmf_config, stage_dmd_config, as
    // train_tmd_distill builds them) against the samplers' (sample_tmd.cu and gpu/eval_gpu.cuh: outer_shift_default)
    int bad = 0;
    for (int M = 1; M <= 8; M++) {
        TmmfConfig tc = stage_tmmf_config(M, 2, NULL);
        DmdConfig dc = stage_dmd_config(M, 0.03, 5);
        double ts[65], td[65], tsamp[65];
        outer_grid(ts, tc.M, tc.gamma_outer);
        outer_grid(td, dc.M, dc.gamma_outer);
        outer_grid(tsamp, M, outer_shift_default(M));
        for (int i = 0; i <= M; i++)
            if (ts[i] != tsamp[i] || td[i] != tsamp[i] || tc.M != M || dc.M != M) bad++;
    }
    EXPECT(bad == 0, "the trainers' outer grid differs from the samplers' at %d points (M = 1..8)", bad);
    { // at M = 4 both are FastGen's 4-step list [0.999, 0.937, 0.833, 0.624] (γ 5, App. B.6), cut to 3 decimals
        TmmfConfig tc = stage_tmmf_config(4, 2, NULL);
        DmdConfig dc = stage_dmd_config(4, 0.03, 5);
        double ts[5], td[5], want[5] = {0, 0.624, 0.833, 0.937, 0.999}, worst = 0;
        outer_grid(ts, 4, tc.gamma_outer);
        outer_grid(td, 4, dc.gamma_outer);
        for (int i = 0; i <= 4; i++)
            worst = fmax(worst,
                         fmax(fabs(floor(ts[i] * 1000) / 1000 - want[i]), fabs(floor(td[i] * 1000) / 1000 - want[i])));
        printf("  M 4: Stage 1 trains at t = %.3f %.3f %.3f %.3f, Stage 2 at %.3f %.3f %.3f %.3f (FastGen: 0.624 0.833 "
               "0.937 0.999)\n",
               ts[1], ts[2], ts[3], ts[4], td[1], td[2], td[3], td[4]);
        EXPECT(worst < 1e-9, "M 4: the trainers' outer grid is not FastGen's 4-step list (worst %.3g)", worst);
        TmmfConfig t3 = stage_tmmf_config(3, 2, NULL);
        EXPECT(t3.gamma_outer == 10, "M 3: t_student shift %g, want 10 (Table 7's default; Table 11 at 3 steps)",
               t3.gamma_outer);
    }
    // 2. the world's table is the CPU reference's method (cpu/distill_run.h distill_defaults)
    DistillOpts o = distill_defaults();
    StageDefaults s1 = stage_defaults(STAGE_STAGE1, 2, NULL), s2 = stage_defaults(STAGE_STAGE2, 2, NULL),
                  b1 = stage_defaults(STAGE_BASELINE, 1, NULL);
    StageDefaults kd = stage_defaults(STAGE_KD, 1, NULL);
    printf("  world: Stage 1 lr %g clip %g (CPU %g, %g); Stage 2 lr %g / fake %g clip %g (CPU %g / %g, %g)\n", s1.lr,
           s1.clip_student, o.tmmf_lr, o.clip_tmmf, s2.lr, s2.lr_fake, s2.clip_student, o.student_lr, o.fake_lr,
           o.clip_student);
    EXPECT(s1.lr == o.tmmf_lr && s1.clip_student == o.clip_tmmf,
           "world Stage 1: lr %g clip %g, the CPU reference's %g, %g", s1.lr, s1.clip_student, o.tmmf_lr, o.clip_tmmf);
    EXPECT(s2.lr == o.student_lr && s2.lr_fake == o.fake_lr && s2.clip_student == o.clip_student && b1.lr == s2.lr &&
               b1.clip_student == s2.clip_student,
           "world Stage 2 / baseline: lr %g, fake %g, clip %g; the CPU reference's %g, %g, %g", s2.lr, s2.lr_fake,
           s2.clip_student, o.student_lr, o.fake_lr, o.clip_student);
    EXPECT(kd.clip_student == o.clip_student, "world KD clip %g, the CPU's student clip %g", kd.clip_student,
           o.clip_student);
    EXPECT(stage_cfg_dmd(NULL) == o.cfg_dmd, "world VSD guidance %g, the CPU reference's %g", stage_cfg_dmd(NULL),
           o.cfg_dmd);
    // a single stage resolves through the same table (no flags given: the table; a flag given: the flag)
    StageDefaults r1 = stage_resolve(STAGE_STAGE1, 2, NULL, -1, -1, -1, -1, -1),
                  r2 = stage_resolve(STAGE_STAGE2, 2, NULL, -1, -1, -1, -1, -1);
    StageDefaults rg = stage_resolve(STAGE_STAGE2, 2, NULL, 7, 3, 2e-4, 2e-4, 1);
    EXPECT(!memcmp(&r1, &s1, sizeof(r1)) && !memcmp(&r2, &s2, sizeof(r2)), "a stage with no flags is not the table's");
    EXPECT(rg.steps == 7 && rg.batch == 3 && rg.lr == 2e-4 && rg.lr_fake == 2e-4 && rg.clip_student == 1,
           "the given flags did not win");
    // Table 7 (1.3B, 14B) and the KD warm-up's settings, the teacher's trajectories sampled as Wan2.1 samples
    WanConfig c13, c14;
    Table7 t13, t14;
    wan_preset(&c13, "wan2.1-t2v-1.3b", err);
    wan_preset(&c14, "wan2.1-t2v-14b", err);
    EXPECT(table7_for(&c13, &t13) && table7_for(&c14, &t14), "Table 7 not found for the presets");
    StageDefaults w1 = stage_defaults(STAGE_STAGE1, 2, &t13), w2 = stage_defaults(STAGE_STAGE2, 2, &t13),
                  wb1 = stage_defaults(STAGE_BASELINE, 1, &t13);
    StageDefaults k13 = stage_defaults(STAGE_KD, 1, &t13), k14 = stage_defaults(STAGE_KD, 1, &t14);
    EXPECT(w1.steps == 3000 && w1.lr == 3e-5 && w1.clip_student == 0,
           "1.3B Stage 1: %d steps, lr %g, clip %g; Table 7: 3k, 3e-5, none", w1.steps, w1.lr, w1.clip_student);
    EXPECT(w2.steps == 4000 && wb1.steps == 12000 && w2.lr == 1e-5 && w2.lr_fake == 1e-5,
           "1.3B DMD2-v: %d (M 2) / %d (M 1) iterations, lr %g / %g", w2.steps, wb1.steps, w2.lr, w2.lr_fake);
    EXPECT(k13.steps == 10000 && k14.steps == 5000 && k13.lr == 7e-5 && k14.lr == 7e-5,
           "KD: %d / %d iterations at lr %g / %g; Table 7: 10k / 5k at 7e-5", k13.steps, k14.steps, k13.lr, k14.lr);
    EXPECT(stage_cfg_dmd(&t13) == 5 && stage_cfg_dmd(&t14) == 5, "Table 7's VSD guidance: %g / %g, want 5",
           stage_cfg_dmd(&t13), stage_cfg_dmd(&t14));
    KdDefaults kw = kd_defaults(&t13), kt = kd_defaults(NULL);
    printf("  Wan2.1 1.3B KD pairs: %d, UniPC %d steps, CFG %g, shift %g, skip-layer %d; world: %d, %d, %g, %g, %d\n",
           kw.pairs, kw.sampler_steps, kw.cfg, kw.shift, kw.skip_layer, kt.pairs, kt.sampler_steps, kt.cfg, kt.shift,
           kt.skip_layer);
    EXPECT(kw.pairs == 10000 && kw.cfg == 5 && kw.skip_layer == 10 && kw.sampler_steps == 50 && kw.shift == 5,
           "Wan KD pairs: %d at CFG %g, skip-layer %d, %d steps, shift %g; want 10k, 5, 10 (Table 7), 50, 5 (Wan2.1 "
           "generate.py)",
           kw.pairs, kw.cfg, kw.skip_layer, kw.sampler_steps, kw.shift);
    EXPECT(kt.skip_layer < 0 && kt.cfg == o.cfg_eval && kt.shift == o.shift_eval &&
               kt.sampler_steps == o.teacher_eval_steps && kt.pairs == o.kd_pairs,
           "world KD pairs differ from the CPU reference's (its evaluation sampler, %d pairs)", o.kd_pairs);
    // 3. the pipeline's stages
    PipeStage st[PIPE_MAX_STAGES];
    int n = pipeline_stages(st, 2, 1, 0, 1);
    printf("  pipeline, M 2, KD on:");
    for (int i = 0; i < n; i++)
        printf(" %s%s%s%s", st[i].label, st[i].from[0] ? "(<- " : "", st[i].from, st[i].from[0] ? ")" : "");
    printf("\n");
    int i_kd = -1, i_b1 = -1, i_b2 = -1, i_s2 = -1;
    for (int i = 0; i < n; i++) {
        if (st[i].kind == STAGE_KD) i_kd = i;
        if (st[i].kind == STAGE_STAGE2) i_s2 = i;
        if (st[i].kind == STAGE_BASELINE && st[i].M == 1) i_b1 = i;
        if (st[i].kind == STAGE_BASELINE && st[i].M == 2) i_b2 = i;
        for (int j = 0; j < i; j++) EXPECT(strcmp(st[i].ckpt, st[j].ckpt), "two stages write %s", st[i].ckpt);
    }
    EXPECT(n == 6 && st[0].kind == STAGE_TEACHER && st[1].kind == STAGE_STAGE1,
           "M 2, KD on: %d stages, want teacher, stage1, stage2, kd, baseline_m1, baseline_m2", n);
    EXPECT(i_kd >= 0 && i_b1 > i_kd && !strcmp(st[i_b1].from, st[i_kd].ckpt) && !st[i_kd].tmd,
           "the M = 1 baseline does not start from its KD warm-up");
    EXPECT(i_b2 >= 0 && st[i_b2].from[0] == 0,
           "the M = 2 baseline must start from the teacher, without KD (found '%s')",
           i_b2 >= 0 ? st[i_b2].from : "no such stage");
    EXPECT(i_s2 >= 0 && !strcmp(st[i_s2].from, "stage1.safetensors") && st[i_s2].M == 2,
           "Stage 2 starts from Stage 1 at M 2");
    n = pipeline_stages(st, 1, 0, 0, 0);
    EXPECT(n == 3 && st[2].kind == STAGE_BASELINE && st[2].M == 1 && st[2].from[0] == 0,
           "M 1, no KD, given teacher: stage1, stage2, baseline_m1 from the teacher");
    n = pipeline_stages(st, 2, 1, 1, 0);
    EXPECT(n == 6 && st[1].kind == STAGE_KD && st[1].tmd && !strcmp(st[2].from, "kd_tmd.safetensors"),
           "--kd-tmd: Stage 2 starts from the TMD student's KD warm-up");
}

static void test_gpu_host(const char* tmpdir) {
    test_distill_table(tmpdir);
    test_vbench(tmpdir);
    test_distill_plan();
    test_train_state(tmpdir);
    test_multirank(tmpdir);
    test_shard_layout();
    test_frozen_fp32_layout();
    test_shard_plan();
    test_stage_plan();
}
