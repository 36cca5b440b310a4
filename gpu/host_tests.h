// gpu/host_tests.h: the GPU programs' plain-C pieces, tested on the CPU: the VBench suite logic (lib/vbench.h,
// tests in lib/vbench_tests.h) and the memory plan of a distillation step (gpu/distill_plan.h) against the presets.
#pragma once
#include "../lib/vbench_tests.h"
#include "distill_plan.h"
#include "../cpu/tmd_cpu.h"   // student_extra_layout: the student's parameters beyond the Wan layout

// the plan for a preset at a latent grid, with the student's extras counted by the CPU reference's own layout
static PlanInput plan_input_for(const char* preset, int T, int Hl, int Wl, int N, int H, size_t disc_params, int disc_heads, int disc_top) {
    PlanInput in; memset(&in, 0, sizeof(in)); char err[ST_ERRLEN];
    wan_preset(&in.wan, preset, err);
    in.T = T; in.Hl = Hl; in.Wl = Wl; in.batch = 1; in.N = N; in.H = H; in.recompute = 1;
    StudentConfig sc; sc.wan = in.wan; sc.head_blocks = H; sc.fusion = FUSION_GATED; sc.fuse_ffn_dim = in.wan.ffn_dim;
    student_extra_layout(&sc, NULL, NULL, NULL, &in.student_extra);
    in.disc_params = disc_params; in.disc_heads = disc_heads; in.disc_top = disc_top; in.disc_width1 = 512;
    return in;
}

static double plan_item(const MemPlan* p, const char* name) { for (int i = 0; i < p->n; i++) if (!strcmp(p->item[i].name, name)) return p->item[i].bytes; return -1; }

static void test_distill_plan(void) {
    printf("\n[plan] memory plan of a distillation step (arithmetic only; what fits is decided on the device)\n");
    char err[ST_ERRLEN];
    // the plan's block equals the CPU reference's block activations buffer for buffer (naive attention keeps the
    // probabilities, as the CPU does), at the tiny preset and at the world preset
    const char* presets[2] = {"tiny", "world"};
    int grids[2][3] = {{4, 16, 16}, {9, 32, 32}};
    for (int k = 0; k < 2; k++) {
        PlanInput in = plan_input_for(presets[k], grids[k][0], grids[k][1], grids[k][2], 2, 1, 0, 0, 0);
        in.naive_attention = 1;
        WanBlockAct a; Arena ar = {NULL, 0, 0};
        wan_block_carve(&a, &ar, &in.wan, plan_tokens(&in));
        PlanBlock b = plan_block_elems(&in);
        EXPECT(b.acts + b.stats == (double)ar.cap, "%s: the plan counts %.0f elements in a block, the CPU reference carves %zu", presets[k], b.acts + b.stats, ar.cap);
        printf("  %-6s block: plan %.0f elements, CPU reference %zu (L = %d)\n", presets[k], b.acts + b.stats, ar.cap, plan_tokens(&in));
    }
    // Wan2.1 1.3B at 480p x 81 frames (latent 21 x 60 x 104: 32,760 tokens), TMD-N4H5, Stage 2, bf16, recompute
    size_t disc_1b3 = 68000000;   // the paper's discriminator size for 1.3B (App. A.3), until the CPU heads are merged
    PlanInput in = plan_input_for("wan2.1-t2v-1.3b", 21, 60, 104, 4, 5, disc_1b3, 3, 30);
    EXPECT(plan_tokens(&in) == 32760, "1.3B at 480p x 81 frames: %d tokens, want 32760", plan_tokens(&in));
    MemPlan p2, p1; distill_plan(&p2, &in, 2); distill_plan(&p1, &in, 1);
    plan_print(&p2, "Wan2.1 1.3B, Stage 2 (DMD2-v, TMD-N4H5), batch 1, 32,760 tokens, bf16, recompute", stdout);
    double sum = 0; for (int i = 0; i < p2.n; i++) sum += p2.item[i].bytes;
    EXPECT(sum == p2.total, "plan total %.0f is not the sum of its items %.0f", p2.total, sum);
    double Pw = (double)wan_num_params(&in.wan);
    EXPECT(plan_item(&p2, "fake score (trainable)") == 18.0 * Pw && plan_item(&p2, "teacher (frozen)") == 2.0 * Pw &&
           plan_item(&p2, "student (trainable)") == 18.0 * (Pw + (double)in.student_extra),
           "weights: 18 B per trainable and 2 B per frozen parameter (1.3B has %.0f parameters, the student %zu more)", Pw, in.student_extra);
    double gib80 = 80.0 * PLAN_GIB, reserve = 2.0 * PLAN_GIB;
    EXPECT(plan_check(&p2, gib80, reserve, err, sizeof(err)) == 0, "the 1.3B Stage 2 step must fit one 80 GB GPU: %s", err);
    EXPECT(p1.total < p2.total, "Stage 1 (%.1f GiB) should need less than Stage 2 (%.1f GiB)", p1.total / PLAN_GIB, p2.total / PLAN_GIB);
    printf("  1.3B: Stage 1 %.2f GiB, Stage 2 %.2f GiB of 80 GiB (2 GiB reserved)\n", p1.total / PLAN_GIB, p2.total / PLAN_GIB);
    // doubling the batch doubles every activation item and leaves the weights alone
    PlanInput in2 = in; in2.batch = 2; MemPlan q; distill_plan(&q, &in2, 2);
    EXPECT(plan_item(&q, "saved activations") == 2 * plan_item(&p2, "saved activations") && plan_item(&q, "student (trainable)") == plan_item(&p2, "student (trainable)"),
           "batch 2: activations x2, weights x1");
    // without recompute the 1.3B step does not fit, and the refusal names the activations
    PlanInput nr = in; nr.recompute = 0; MemPlan r; distill_plan(&r, &nr, 2);
    EXPECT(plan_check(&r, gib80, reserve, err, sizeof(err)) != 0 && strstr(err, "saved activations"), "1.3B without recompute should refuse naming the activations: %s", err);
    printf("  1.3B without recompute -> %s\n", err);
    // the naive attention at 32,760 tokens does not fit either (its scores alone are heads x L^2 x 4 B = 48 GiB)
    PlanInput na = in; na.naive_attention = 1; MemPlan s; distill_plan(&s, &na, 2);
    EXPECT(plan_check(&s, gib80, reserve, err, sizeof(err)) != 0, "1.3B with the naive attention should refuse (%.1f GiB)", s.total / PLAN_GIB);
    // the 14B does not fit one GPU: the refusal names the student's weights
    PlanInput big = plan_input_for("wan2.1-t2v-14b", 21, 60, 104, 4, 5, 172000000, 3, 40);
    MemPlan b14; distill_plan(&b14, &big, 2);
    EXPECT(plan_check(&b14, gib80, reserve, err, sizeof(err)) != 0 && strstr(err, "student"), "14B should refuse naming the student: %s", err);
    printf("  14B -> %s\n", err);
    // the built-in world on one GPU fits easily, even with the naive attention in fp32
    PlanInput w = plan_input_for("world", 9, 32, 32, 4, 2, 1000000, 3, 12);
    w.naive_attention = 1; w.fp32 = 1; MemPlan pw; distill_plan(&pw, &w, 2);
    EXPECT(plan_check(&pw, 16.0 * PLAN_GIB, reserve, err, sizeof(err)) == 0, "the world preset should fit 16 GiB: %s", err);
    printf("  world preset (fp32, naive attention): Stage 2 %.3f GiB\n", pw.total / PLAN_GIB);
}

static void test_gpu_host(const char* tmpdir) {
    test_vbench(tmpdir);
    test_distill_plan();
}
