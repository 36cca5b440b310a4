// gpu/stage_plan.h: train_tmd's stages and their defaults, plain C (tested on the CPU in `make test`, group "gpuhost"):
//   stage_defaults     ONE table of defaults per stage (steps, batch, learning rates, the student's clipping) at two
//                      scales: the built-in world's (the CPU reference's method, cpu/distill_run.h distill_defaults,
//                      with step counts sized for one GPU) and a Wan2.1 teacher's (--data: the paper's Table 7). The
//                      pipeline and every single --stage read the same table; stage_defaults_print prints it at start.
//   kd_defaults        the KD warm-up's teacher pairs per scale: how many, and the teacher sampler that makes them
//   stage_tmmf_config  Stage 1's settings for a student of M outer steps } t_student shift: outer_shift_default(M)
//   stage_dmd_config   Stage 2's (and the baseline's) settings          } (cpu/tmd_cpu.h), the samplers' too
//   pipeline_stages    the pipeline's stages in order: the checkpoint each writes, the one it starts from, its M. The
//                      paper's two DMD2-v baselines (Table 4): M = 1 KD-warmed, M >= 2 without KD.
//   stage_plan_input   the memory plan's input for one step as train_tmd builds it (gpu/distill_plan.h prints it);
//   stage_plan_main    `./test_tmd plan`: that plan on the host for a preset at Table 7's settings, the printout the
//                      README quotes (train_tmd prints the same plan on a GPU before it allocates)
#pragma once
#include "train_data.h"         // Table7, table7_for
#include "distill_plan.h"       // PlanInput, distill_plan, plan_print, plan_choose_recompute
#include "../cpu/distill_cpu.h" // TmmfConfig, DmdConfig, tmmf_defaults, dmd_defaults (and cpu/tmd_cpu.h)
#include "../lib/flags.h"       // stage_plan_main's flags

enum { STAGE_TEACHER, STAGE_STAGE1, STAGE_STAGE2, STAGE_KD, STAGE_BASELINE, STAGE_KINDS };
static const char* const STAGE_NAMES[STAGE_KINDS] = {"teacher", "stage1", "stage2", "kd", "baseline"};

// the --stage name's kind, or -1
static int stage_kind(const char* name) {
    for (int k = 0; k < STAGE_KINDS; k++)
        if (name && !strcmp(name, STAGE_NAMES[k])) return k;
    return -1;
}

typedef struct {
    int steps, batch;    // optimizer steps (Stage 2: iterations, student and critic), samples per step
    double lr, lr_fake;  // AdamW: the trained network's; lr_fake the fake score's (Stage 2, baseline)
    double clip_student; // the student's max gradient norm (0: none)
} StageDefaults;

// kind's defaults for a student of M outer steps: t7 NULL the built-in world, else a Wan2.1 teacher's Table 7.
// Clipping follows FastGen and the CPU reference: the student at 10 in Stage 2, the baseline and KD; nothing in
// Stage 1 (FastGen's MeanFlow config and cpu/distill_run.h clip_tmmf 0), nothing for the fake score.
static StageDefaults stage_defaults(int kind, int M, const Table7* t7) {
    StageDefaults d;
    memset(&d, 0, sizeof(d));
    switch (kind) {
    case STAGE_TEACHER: // the built-in world only (a Wan2.1 teacher is given with --weights)
        d.steps = 3000;
        d.batch = 8;
        d.lr = 3e-4;
        break;
    case STAGE_STAGE1: // cpu/distill_run.h: lr 3e-4, unclipped; Table 7: 3k iterations, 3e-5 (1.3B) / 1e-5 (14B)
        if (t7) {
            d.steps = t7->stage1_steps;
            d.batch = 1;
            d.lr = t7->stage1_lr;
        } else {
            d.steps = 1000;
            d.batch = 8;
            d.lr = 3e-4;
        }
        d.lr_fake = d.lr;
        break;
    case STAGE_STAGE2:
    case STAGE_BASELINE: // cpu/distill_run.h: student and fake score 1e-4; Table 7: 1e-5, 12k (M = 1) / 4k (M >= 2)
                         // iterations (1.3B)
        if (t7) {
            d.steps = M == 1 ? t7->stage2_steps_m1 : t7->stage2_steps_m2;
            d.batch = 1;
            d.lr = t7->student_lr;
            d.lr_fake = t7->fake_lr;
        } else {
            d.steps = 1500;
            d.batch = 4;
            d.lr = 1e-4;
            d.lr_fake = 1e-4;
        }
        d.clip_student = 10;
        break;
    case STAGE_KD: // Table 7's KD: lr 7e-5, 10k (1.3B) / 5k (14B) iterations; the batch: Table 7 gives none for KD
                   // (FastGen's Wan KD config: 2 per GPU); 1 here, the stage neither accumulates nor runs on ranks.
                   // The world: cpu/distill_run.h's 200 steps of 4; its lr 7e-4 goes with the CPU teacher's 3e-3,
                   // this world's teacher trains at 3e-4, so KD takes Stage 1's 3e-4 (UNMEASURED on a GPU)
        if (t7) {
            d.steps = t7->kd_steps;
            d.batch = 1;
            d.lr = t7->kd_lr;
        } else {
            d.steps = 200;
            d.batch = 4;
            d.lr = 3e-4;
        }
        d.clip_student = 10;
        break;
    }
    return d;
}

// the KD warm-up's teacher pairs: how many, and the teacher sampler that makes them (UniPC, CFG against the
// unconditional context, the σ grid's shift), with skip-layer guidance: skip_layer >= 0 drops that block from the
// unconditional forward (cpu/teacher_cpu.h WanVelocity.slg). skip_layer -1: none.
typedef struct {
    int pairs, sampler_steps;
    double cfg, shift;
    int skip_layer;
} KdDefaults;

// t7 NULL: the built-in world keeps its own settings: cpu/distill_run.h's 128 pairs sampled as its evaluation samples
// the teacher (16 UniPC steps, CFG 2, shift 3: the tiny teachers' best, no skip-layer guidance: the world DiT has
// fewer than 11 blocks). A Wan2.1 teacher: Table 7's 10k trajectories at CFG 5 with skip-layer 10, sampled as the
// teacher is (official Wan2.1 generate.py for T2V: UniPC, sample_steps 50, sample_shift 5.0, sample_guide_scale 5.0).
static KdDefaults kd_defaults(const Table7* t7) {
    KdDefaults k;
    if (t7) {
        k.pairs = t7->kd_trajectories;
        k.sampler_steps = 50;
        k.cfg = t7->kd_cfg;
        k.shift = 5.0;
        k.skip_layer = t7->kd_skip_layer;
    } else {
        k.pairs = 128;
        k.sampler_steps = 16;
        k.cfg = 2;
        k.shift = 3;
        k.skip_layer = -1;
    }
    return k;
}

// the table, one line per stage, as a run starts (M: the TMD students' outer steps)
static void stage_defaults_print(FILE* f, int M, const Table7* t7) {
    fprintf(f, "stage defaults (%s; a flag given on the command line wins):\n",
            t7 ? t7->name : "the built-in world, cpu/distill_run.h's method");
    for (int k = 0; k < STAGE_KINDS; k++) {
        if (t7 && k == STAGE_TEACHER) continue;
        int Ms[2] = {k == STAGE_BASELINE ? 1 : M, M}, nm = k == STAGE_BASELINE && M > 1 ? 2 : 1;
        for (int i = 0; i < nm; i++) {
            StageDefaults d = stage_defaults(k, Ms[i], t7);
            char at[16] = "", fake[32] = "", clip[24] = "unclipped";
            if (k == STAGE_STAGE2 || k == STAGE_BASELINE) {
                snprintf(at, sizeof(at), " M %d", Ms[i]);
                snprintf(fake, sizeof(fake), ", fake score %g", d.lr_fake);
            }
            if (d.clip_student > 0) snprintf(clip, sizeof(clip), "clip %g", d.clip_student);
            fprintf(f, "  %-9s%-5s %6d steps x batch %d, lr %g%s, %s\n", STAGE_NAMES[k], at, d.steps, d.batch, d.lr,
                    fake, k == STAGE_TEACHER ? "clip --max-grad-norm" : clip);
        }
    }
    KdDefaults kd = kd_defaults(t7);
    char slg[48] = "no skip-layer guidance";
    if (kd.skip_layer >= 0) snprintf(slg, sizeof(slg), "skip-layer guidance at block %d", kd.skip_layer);
    fprintf(f, "  kd pairs         %d teacher samples: UniPC %d steps, CFG %g, shift %g, %s\n", kd.pairs,
            kd.sampler_steps, kd.cfg, kd.shift, slg);
}

// Stage 1's settings for a student of M outer steps with N inner steps (c_norm: Table 7's c = d or 1e-5·d)
static TmmfConfig stage_tmmf_config(int M, int N, const Table7* t7) {
    TmmfConfig c = tmmf_defaults(M);
    c.N = N;
    if (t7) c.c_norm = t7->c_norm; // App. A.2
    return c;
}
// Stage 2's and the baseline's settings for a student of M outer steps
static DmdConfig stage_dmd_config(int M, double gan_weight, int update_every) {
    DmdConfig c = dmd_defaults(M);
    c.gan_weight = gan_weight;
    c.update_every = update_every;
    return c;
}

// the teacher's guidance in the VSD gradient (the distillation target): Table 7's 5 for a Wan2.1 teacher (Wan's own
// best CFG); the built-in world's teacher at its own best, 2, as the CPU reference distills (cpu/distill_run.h
// distill_defaults, where the reason is measured)
#define STAGE_WORLD_CFG_DMD 2.0
static double stage_cfg_dmd(const Table7* t7) { return t7 ? 5.0 : STAGE_WORLD_CFG_DMD; }

// ---------------------------------------------------------------------------------------------------------
// the pipeline's stages in order

typedef struct {
    int kind;       // STAGE_*
    char label[32]; // printed: stage1, kd-tmd, baseline_m1, ...
    char ckpt[48];  // the checkpoint it writes, in the run directory
    char from[48];  // the checkpoint its student starts from ("": the teacher, or student_init from it)
    int M;          // the student's outer steps (Stage 1/2, baselines); KD: 1
    int tmd;        // KD: 1 warms the TMD student (--kd-tmd), 0 the baseline's plain Wan student
} PipeStage;
#define PIPE_MAX_STAGES 8

// the stages for TMD students of M outer steps: the teacher (train_teacher: no --weights), Stage 1, (--kd-tmd: its KD
// warm-up), Stage 2, then the paper's DMD2-v baselines (Table 4): the one-step student KD-warmed (kd_on: --kd-steps >
// 0), and for M >= 2 a student of M steps WITHOUT KD ("KD warm-up ... tends to introduce coarse-grained artifacts" in
// multi-step generation, Sec. 3.2; cpu/distill_run.h trains its baselines so). Returns the count.
static int pipeline_stages(PipeStage* s, int M, int kd_on, int kd_tmd, int train_teacher) {
    int n = 0;
#define PIPE_ADD(k, lab, ck, fr, m, t)                                                                                 \
    do {                                                                                                               \
        PipeStage* p_ = &s[n++];                                                                                       \
        memset(p_, 0, sizeof(*p_));                                                                                    \
        p_->kind = (k);                                                                                                \
        p_->M = (m);                                                                                                   \
        p_->tmd = (t);                                                                                                 \
        snprintf(p_->label, sizeof(p_->label), "%s", lab);                                                             \
        snprintf(p_->ckpt, sizeof(p_->ckpt), "%s", ck);                                                                \
        snprintf(p_->from, sizeof(p_->from), "%s", fr);                                                                \
    } while (0)
    if (train_teacher) PIPE_ADD(STAGE_TEACHER, "teacher", "teacher.safetensors", "", 0, 0);
    PIPE_ADD(STAGE_STAGE1, "stage1", "stage1.safetensors", "", M, 0);
    if (kd_on && kd_tmd) PIPE_ADD(STAGE_KD, "kd-tmd", "kd_tmd.safetensors", "stage1.safetensors", 1, 1);
    PIPE_ADD(STAGE_STAGE2, "stage2", "stage2.safetensors",
             kd_on && kd_tmd ? "kd_tmd.safetensors" : "stage1.safetensors", M, 0);
    if (kd_on) PIPE_ADD(STAGE_KD, "kd", "kd.safetensors", "", 1, 0);
    PIPE_ADD(STAGE_BASELINE, "baseline_m1", "baseline_m1.safetensors", kd_on ? "kd.safetensors" : "", 1, 0);
    if (M > 1) {
        char lab[32], ck[48];
        snprintf(lab, sizeof(lab), "baseline_m%d", M);
        snprintf(ck, sizeof(ck), "baseline_m%d.safetensors", M);
        PIPE_ADD(STAGE_BASELINE, lab, ck, "", M, 0);
    }
#undef PIPE_ADD
    return n;
}

// kind's settings for a student of M steps: the table's, with each flag given on the command line in its place
// (steps, batch < 0, lr, lr_fake, clip < 0: not given). The pipeline and the single stages both resolve through here.
static StageDefaults stage_resolve(int kind, int M, const Table7* t7, int steps, int batch, double lr, double lr_fake,
                                   double clip) {
    StageDefaults d = stage_defaults(kind, M, t7);
    if (steps >= 0) d.steps = steps;
    if (batch >= 0) d.batch = batch;
    if (lr >= 0) d.lr = lr;
    if (lr_fake >= 0) d.lr_fake = lr_fake;
    if (clip >= 0) d.clip_student = clip;
    return d;
}

// ---------------------------------------------------------------------------------------------------------
// the memory plan of one step

// stage (distill_plan's numbering: 1 Stage 1, 2 Stage 2 or the baseline, 3 KD) of a student of N inner steps and H
// flow-head blocks (baseline or KD of the plain student: no flow head) at latent [T, Hl, Wl] x batch B; d: the
// discriminator heads (NULL: no GAN terms); kd_pairs: the KD pairs kept on the device
static PlanInput stage_plan_input(const WanConfig* c, int stage, int T, int Hl, int Wl, int B, int N, int H,
                                  int plain_student, const DiscConfig* d, int kd_pairs, int naive_attention) {
    PlanInput pin;
    memset(&pin, 0, sizeof(pin));
    StudentConfig sc;
    sc.wan = *c;
    sc.head_blocks = H;
    sc.fusion = FUSION_GATED;
    sc.fuse_ffn_dim = c->ffn_dim;
    pin.wan = *c;
    pin.T = T;
    pin.Hl = Hl;
    pin.Wl = Wl;
    pin.batch = B;
    pin.N = N;
    pin.H = H;
    if (!plain_student) student_extra_layout(&sc, NULL, NULL, NULL, &pin.student_extra);
    pin.baseline = stage == 2 && plain_student;
    pin.fuse_ffn_dim = sc.fuse_ffn_dim;
    pin.fusion_concat = sc.fusion != FUSION_GATED;
    if (d && stage == 2) { // the heads, their activations and the frozen teacher up to the last feature layer
        pin.disc_params = disc_num_params(d);
        pin.disc_heads = d->n_heads;
        pin.disc = *d;
        for (int h = 0; h < d->n_heads; h++)
            if (d->layers[h] + 1 > pin.disc_top) pin.disc_top = d->layers[h] + 1;
    }
    if (stage == 3) pin.kd_pairs = kd_pairs;
    pin.naive_attention = naive_attention;
    return pin;
}

// `./test_tmd plan`: the memory plans ./train_tmd --data prints for a Wan2.1 teacher at Table 7's settings (M, N, H,
// the discriminator width nearest Table 7's count, batch 1, the KD pairs), here on the host for an assumed GPU size
static int stage_plan_main(int argc, char** argv) {
    const char* preset = "wan2.1-t2v-1.3b";
    const char* recompute = "auto";
    int T = 21, Hl = 60, Wl = 104, fp32 = 0, naive = 0, kd_pairs = -1, N = -1, H = -1;
    double gib = 79.0, reserve = 1.0;
    Flag flags[] = {
        FLAG_STR("--preset", &preset,
                 "wan2.1-t2v-1.3b or wan2.1-t2v-14b (Table 7's settings); other presets: the world's stage table, no "
                 "discriminator count"),
        FLAG_INT_R("--latent-frames", &T, 1, 1000, "latent T (480p x 81 frames: 21)"),
        FLAG_INT_R("--latent-height", &Hl, 1, 1000, "latent H (480p: 60)"),
        FLAG_INT_R("--latent-width", &Wl, 1, 1000, "latent W (480p: 104)"),
        FLAG_INT_R("--N", &N, -1, 64, "inner steps (-1: Table 7's headline student)"),
        FLAG_INT_R("--head-blocks", &H, -1, 64, "flow-head blocks (-1: Table 7's)"),
        FLAG_INT_R("--kd-pairs", &kd_pairs, -1, 1000000, "KD pairs on the device (-1: Table 7's 10k trajectories)"),
        FLAG_DOUBLE_R("--gpu-gib", &gib, 1, 10000,
                      "free device memory assumed (an H100 80GB: about 79 GiB free after the CUDA context)"),
        FLAG_DOUBLE_R("--reserve-gib", &reserve, 0, 100, "kept free for the libraries' workspaces (train_tmd: 1 GiB)"),
        FLAG_STR("--recompute", &recompute, "auto (on when the plan without it does not fit --gpu-gib), on, off"),
        FLAG_SWITCH("--fp32", &fp32, "the all-fp32 build (default: bf16)"),
        FLAG_SWITCH("--naive-attention", &naive, "the naive attention path"),
        FLAG_END};
    int rc =
        flags_parse(flags, argc, argv, 2,
                    "usage: ./test_tmd plan [flags]   (the memory plan of every train_tmd stage, as it prints them)");
    if (rc) return rc == 1 ? 0 : 2;
    char err[ST_ERRLEN];
    WanConfig c;
    Table7 t7;
    if (wan_preset(&c, preset, err)) {
        fprintf(stderr, "error: %s\n", err);
        return 2;
    }
    int mode = !strcmp(recompute, "on") ? 1 : !strcmp(recompute, "off") ? 0 : !strcmp(recompute, "auto") ? -1 : -2;
    if (mode == -2) {
        fprintf(stderr, "error: --recompute '%s': expected auto, on or off\n", recompute);
        return 2;
    }
    int has = table7_for(&c, &t7);
    if (N < 0) N = has ? t7.N : 2;
    if (H < 0) H = has ? t7.H : 2;
    if (H < 1 || H >= c.num_layers) {
        fprintf(stderr, "error: --head-blocks %d: expected 1 .. %d\n", H, c.num_layers - 1);
        return 2;
    }
    KdDefaults kd = kd_defaults(has ? &t7 : NULL);
    if (kd_pairs < 0) kd_pairs = kd.pairs;
    // the head train_tmd builds (--disc-head auto): FastGen's multiscale head where the latent grid has all five of its
    // pooling scales (Wan scale), else the strided stack at the width nearest Table 7's count (or the world's 64)
    int ms = disc_multiscale_fits(T, Hl, Wl), width = has ? table7_disc_width(&c, t7.disc_params, NULL) : 64;
    DiscConfig dc =
        ms ? disc_config_multiscale(&c, 1024, T, Hl, Wl) : disc_config(&c, width / 2, width / 2, width, width, width);
    printf("./test_tmd plan: %s at latent [%d, %d, %d], batch 1, %s, %s attention; %s: TMD-N%dH%d, discriminator %s "
           "(%zu parameters in %d heads), "
           "%d KD pairs; %.1f GiB free assumed, %.1f reserved\n",
           c.name, T, Hl, Wl, fp32 ? "fp32" : "bf16", naive ? "naive" : "flash",
           has ? t7.name : "no Table 7 for this preset", N, H, disc_kind_name(&dc), disc_num_params(&dc), dc.n_heads,
           kd_pairs, gib, reserve);
    struct {
        int stage, plain;
        const char* name;
    } steps[] = {{1, 0, "Stage 1 (TM-MF)"},
                 {2, 0, "Stage 2 (DMD2-v with the rollout)"},
                 {2, 1, "DMD2-v baseline"},
                 {3, 1, "KD warm-up of the baseline's student"}};
    for (int k = 0; k < 4; k++) {
        PlanInput pin = stage_plan_input(&c, steps[k].stage, T, Hl, Wl, 1, N, H, steps[k].plain, &dc, kd_pairs, naive);
        pin.fp32 = fp32;
        char why[256], title[200];
        plan_choose_recompute(&pin, steps[k].stage, mode, gib * PLAN_GIB, reserve * PLAN_GIB, why, sizeof(why));
        MemPlan p;
        distill_plan(&p, &pin, steps[k].stage);
        snprintf(title, sizeof(title), "%s, %s, batch 1, %s", steps[k].name, c.name, fp32 ? "fp32" : "bf16");
        printf("%s\n", why);
        plan_print(&p, title, stdout);
        if (plan_check(&p, gib * PLAN_GIB, reserve * PLAN_GIB, err, sizeof(err)))
            printf("  does not fit: %s\n", err);
        else
            printf("  fits %.1f GiB (%.1f reserved)\n", gib, reserve);
    }
    return 0;
}
