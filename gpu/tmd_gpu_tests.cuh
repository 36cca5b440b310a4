// gpu/tmd_gpu_tests.cuh: the TMD student and its training steps on the GPU against the CPU reference (double), at a
// tiny size, with the CPU's own random draws replayed on the host (tmmf_draw_sample) and uploaded, so both sides
// see the same noise, times and dropout. Included by test_gpu.cu (needs WAN_REAL double and lib/testing.h).
//   Stage 1: one TM-MF step on B samples: every sample's loss, every student gradient (Wan tensors and the
//   flow-head extras), (a) guided samples with r < s (the central-difference JVP along v_g) and (b) samples dropped
//   to the unconditional caption (a random negative prompt here) with a mix of r = s and r < s.
//   Stage 2: one DMD2-v student step (VSD through the N = 2 rollout into every student gradient) and one critic step
//   (the fake score's DSM gradients), without the GAN terms (the Conv3D heads are not on the GPU yet).
//   KD warm-up: one KD step on B teacher pairs (x̂ = g_θ(z, T_MAX) against the teacher's sample, plain Wan student and
//   TMD student through the rollout): every sample's loss and every student gradient, the pairs taken from the
//   device copy of P = 3 pairs at step 1 (pair indices wrap around: the trainer's order).
// Tolerances: the fp32 build checks at PARITY_TOL (test_gpu.cu); the bf16 build runs the same steps, the JVP included,
// at its 5e-2. The finite-difference JVP divides a difference of two bf16-rounded evaluations by 2δ = 1e-2, which
// could amplify their rounding ~100x; measured, it does not dominate at this size (s − r from 0.05 to 0.51 in the
// draws): the simulated bf16 step's worst gradient was 2.1e-2 of its tensor's max (about the same at δ = 5e-2), while
// dropping the JVP term, flipping its sign or scaling it by 1.5
// failed 106 of the 109 checks each (worst 2.3, 3.7, 0.97; dev/results/bf16-jvp-sim-20261202.txt): the tolerance
// separates a wrong JVP from bf16 rounding here.
#pragma once
#include "distill_gpu.cuh"
#include "kd_gpu.cuh"     // the KD warm-up step
#include "distill_plan.h" // the memory plan: its activation items must be what the works allocated

// a student config whose every dimension differs (D 64, F 96, fusion FFN 48, 3 blocks of which H = 1 form the head)
static const WanConfig TMD_PARITY_CONFIG = {"tmd-parity", 64, 96, 32, 4, 3, 3, 3, {1, 2, 2}, 6, 24, 1e-6};

static void tmd_random_params_(const WanConfig* c, double* buf, uint64_t seed) { // test_tmd.c's recipe
    Rng r = rng_make(seed);
    WanTensor* tl = (WanTensor*)malloc(sizeof(WanTensor) * WAN_MAX_TENSORS);
    int nt = wan_layout(c, tl, NULL, NULL, NULL);
    for (int i = 0; i < nt; i++) {
        double *p = buf + tl[i].offset, mean = 0, sd;
        if (strstr(tl[i].name, "modulation"))
            sd = 0.3;
        else if (strstr(tl[i].name, "norm") && !strstr(tl[i].name, "bias")) {
            mean = 1;
            sd = 0.1;
        } else if (tl[i].ndim == 1)
            sd = 0.1;
        else
            sd = 1.0 / sqrt((double)(tl[i].numel / (size_t)tl[i].shape[0]));
        for (size_t k = 0; k < tl[i].numel; k++) p[k] = mean + sd * rng_normal(&r);
    }
    free(tl);
}

static float* tmd_upload_(const double* h, size_t n) {
    float* f = (float*)malloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) f[i] = (float)h[i];
    float* d;
    cudaCheck(cudaMalloc(&d, sizeof(float) * (n ? n : 1)));
    cudaCheck(cudaMemcpy(d, f, sizeof(float) * n, cudaMemcpyHostToDevice));
    free(f);
    return d;
}
static double* tmd_download_(const float* d, size_t n) {
    float* f = (float*)malloc(sizeof(float) * (n ? n : 1));
    double* h = (double*)malloc(sizeof(double) * (n ? n : 1));
    cudaCheck(cudaMemcpy(f, d, sizeof(float) * n, cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < n; i++) h[i] = f[i];
    free(f);
    return h;
}

// activation recompute (gpu/wan_gpu.cuh wan_gpu_recompute) must not change a bit: the same kernels run on the same
// inputs in the same order. a: recompute off, b: on, n floats (or bytes / 4) compared with memcmp, no tolerance.
static void expect_bit_identical(const char* what, const void* a, const void* b, size_t n) {
    size_t diff = 0, first = n;
    for (size_t i = 0; i < n; i++)
        if (memcmp((const char*)a + 4 * i, (const char*)b + 4 * i, 4)) {
            diff++;
            if (first == n) first = i;
        }
    printf("  %-44s recompute on vs off: %zu of %zu words differ%s\n", what, diff, n,
           diff ? "  FAIL" : " (bit-identical)");
    EXPECT(diff == 0, "%s: %zu of %zu words differ with recompute on (first at %zu)", what, diff, n, first);
}
// the memory plan (gpu/distill_plan.h) of this step against the bytes the works' arenas really took
static void tmd_expect_plan_(const char* what, const PlanInput* in, int stage, const char* item, double allocated) {
    MemPlan p;
    distill_plan(&p, in, stage);
    double planned = -1;
    for (int i = 0; i < p.n; i++)
        if (!strcmp(p.item[i].name, item)) planned = p.item[i].bytes;
    printf("  memory plan, %-34s %s: planned %.0f bytes, allocated %.0f  %s\n", what, item, planned, allocated,
           planned == allocated ? "ok" : "FAIL");
    EXPECT(planned == allocated, "%s: the plan's '%s' is %.0f bytes, the works allocated %.0f", what, item, planned,
           allocated);
}
static PlanInput tmd_plan_input_(const StudentConfig* sc, int B, int T, int Hl, int Wl, int N, const WanGpuAct* bb) {
    PlanInput in;
    memset(&in, 0, sizeof(in));
    in.wan = sc->wan;
    in.T = T;
    in.Hl = Hl;
    in.Wl = Wl;
    in.batch = B;
    in.N = N;
    in.H = sc->head_blocks;
    in.fuse_ffn_dim = sc->fuse_ffn_dim;
    in.fusion_concat = sc->fusion != FUSION_GATED;
    in.recompute = bb->recompute;
    in.naive_attention = !bb->flash;
    in.fp32 = sizeof(floatX) == 4;
    return in;
}
static float* tmd_download_f_(const float* d, size_t n) {
    float* f = (float*)malloc(sizeof(float) * (n ? n : 1));
    cudaCheck(cudaMemcpy(f, d, sizeof(float) * n, cudaMemcpyDeviceToHost));
    return f;
}

// every tensor of the student's gradient (Wan layout, then the extras) at its own scale
static void tmd_compare_student_(const StudentConfig* sc, const char* what, const double* gpu, const double* cpu,
                                 double tol) {
    WanTensor* tl = (WanTensor*)malloc(sizeof(WanTensor) * WAN_MAX_TENSORS);
    int nt = wan_layout(&sc->wan, tl, NULL, NULL, NULL);
    size_t nw = wan_num_params(&sc->wan);
    char name[320];
    double worst = 0;
    const char* worst_name = "";
    for (int i = 0; i < nt; i++) {
        double maxd = 0, maxr = 0;
        for (size_t k = 0; k < tl[i].numel; k++) {
            maxd = fmax(maxd, fabs(gpu[tl[i].offset + k] - cpu[tl[i].offset + k]));
            maxr = fmax(maxr, fabs(cpu[tl[i].offset + k]));
        }
        double rel = maxr > 0 ? maxd / maxr : maxd;
        if (rel > worst) {
            worst = rel;
            worst_name = tl[i].name;
        }
        if (rel > tol || !isfinite(rel)) {
            snprintf(name, sizeof(name), "%.100s %.96s", what, tl[i].name);
            expect_close_scaled(name, gpu + tl[i].offset, cpu + tl[i].offset, (long)tl[i].numel, tol);
        } else
            tests_passed++;
    }
    printf("  %-44s %d Wan tensors, worst rel %.3e (%s)  (tol %.0e)\n", what, nt, worst, worst_name, tol);
    WanTensor xl[16];
    int nx = student_extra_layout(sc, xl, NULL, NULL, NULL);
    for (int i = 0; i < nx; i++) {
        snprintf(name, sizeof(name), "%.100s %.96s", what, xl[i].name);
        expect_close_scaled(name, gpu + nw + xl[i].offset, cpu + nw + xl[i].offset, (long)xl[i].numel, tol);
    }
    free(tl);
}

// one TM-MF step on B samples, GPU vs CPU; p_drop and p_tm choose the branches;
// recompute_check: run the GPU step a second time with activation recompute on; the same checks, and every bit equal
static void test_tmmf_gpu_parity(int B, uint64_t seed, double p_drop, double p_tm, double tol, const char* label,
                                 int recompute_check) {
    char err[ST_ERRLEN];
    StudentConfig sc;
    sc.wan = TMD_PARITY_CONFIG;
    sc.head_blocks = 1;
    sc.fusion = FUSION_GATED;
    sc.fuse_ffn_dim = 48;
    const WanConfig* c = &sc.wan;
    int T = 2, Hl = 4, Wl = 8;
    WanGrid g;
    if (wan_grid(&g, c, c->in_dim, T, Hl, Wl, err)) {
        fprintf(stderr, "%s\n", err);
        exit(1);
    }
    size_t nw = wan_num_params(c), ns = student_num_params(&sc), numel = (size_t)c->out_dim * T * Hl * Wl,
           nctx = (size_t)c->text_len * c->text_dim;
    // the student: a random teacher, student_init, then every extra perturbed so no path is zero
    double* teacher = (double*)calloc(nw, sizeof(double));
    tmd_random_params_(c, teacher, seed);
    double* Sb = (double*)calloc(ns, sizeof(double));
    student_init(&sc, Sb, teacher, seed + 1);
    Rng pr = rng_make(seed + 2);
    for (size_t i = nw; i < ns; i++) Sb[i] += 0.05 * rng_normal(&pr);
    StudentParams S;
    student_carve(&sc, &S, Sb);
    S.x.fuse_gate[0] = 0.3;
    // inputs: clean latents and captions of different lengths (zero-padded for the GPU)
    double* x = (double*)malloc(sizeof(double) * B * numel);
    for (size_t i = 0; i < B * numel; i++) x[i] = rng_normal(&pr);
    double* ctx = (double*)calloc(B * nctx, sizeof(double));
    int Lt[TMD_MAX_BATCH];
    for (int b = 0; b < B; b++) {
        Lt[b] = c->text_len - (b % 3);
        for (size_t i = 0; i < (size_t)Lt[b] * c->text_dim; i++) ctx[b * nctx + i] = rng_normal(&pr);
    }
    // the unconditional caption: a random one of text_len − 1 rows when samples are dropped (a negative prompt, so the
    // dropped samples' cross-attention gradients are not identically zero, as they are with the world's empty caption)
    int Lt_u = p_drop > 0 ? c->text_len - 1 : 0;
    double* ctx_u = (double*)calloc(nctx, sizeof(double));
    for (size_t i = 0; i < (size_t)Lt_u * c->text_dim; i++) ctx_u[i] = rng_normal(&pr);
    TmmfConfig cf = tmmf_defaults(2);
    cf.p_drop = p_drop;
    cf.p_tm = p_tm;
    cf.N = 3;
    // CPU: one sample at a time, each with its own stream; the same draws replayed for the GPU
    double* dS = (double*)calloc(ns, sizeof(double));
    StudentParams dSp;
    student_carve(&sc, &dSp, dS);
    TmmfWork cw;
    tmmf_work_init(&cw, &sc, &g);
    TmmfDraw d;
    memset(&d, 0, sizeof(d));
    d.B = B;
    float* x1h = (float*)malloc(sizeof(float) * B * numel);
    float* y1h = (float*)malloc(sizeof(float) * B * numel);
    double loss_cpu[TMD_MAX_BATCH];
    int replay_ok = 1, n_jvp = 0, n_drop = 0;
    for (int b = 0; b < B; b++) {
        Rng r1 = rng_make(seed * 100 + b), r2 = r1;
        tmmf_draw_sample(&d, b, &cf, &r2, x1h + b * numel, y1h + b * numel, numel);
        TmmfStats st = tmmf_sample(&dSp, &S, &sc, &g, &cw, x + b * numel, ctx + b * nctx, Lt[b], Lt_u ? ctx_u : NULL,
                                   Lt_u, &cf, &r1, 1.0 / B);
        loss_cpu[b] = st.loss;
        replay_ok &= r1.counter == r2.counter && st.s == d.s[b] && st.r == d.r[b] && st.t == d.t[b] &&
                     st.dropped == d.dropped[b];
        n_jvp += d.r[b] < d.s[b];
        n_drop += d.dropped[b];
    }
    EXPECT(replay_ok, "the host replay of the CPU's draws (t, x1, dropout, y1, s, r) went out of step");
    // GPU: recompute off, then (recompute_check) on, which must give the same bits
    float* Sf = (float*)malloc(sizeof(float) * ns);
    for (size_t i = 0; i < ns; i++) Sf[i] = (float)Sb[i];
    float* x_d = tmd_upload_(x, B * numel);
    float* ctx_d = tmd_upload_(ctx, B * nctx);
    float* ctxu_d = Lt_u ? tmd_upload_(ctx_u, nctx) : NULL;
    float *x1_d, *y1_d;
    cudaCheck(cudaMalloc(&x1_d, sizeof(float) * B * numel));
    cudaCheck(cudaMalloc(&y1_d, sizeof(float) * B * numel));
    cudaCheck(cudaMemcpy(x1_d, x1h, sizeof(float) * B * numel, cudaMemcpyHostToDevice));
    cudaCheck(cudaMemcpy(y1_d, y1h, sizeof(float) * B * numel, cudaMemcpyHostToDevice));
    int saved = wan_gpu_recompute;
    float* g_off = NULL;
    double loss_off[TMD_MAX_BATCH];
    for (int rc = 0; rc <= recompute_check; rc++) {
        wan_gpu_recompute = rc;
        TmdGpuStudent G;
        tmd_gpu_student_init(&G, &sc, Sf);
        TmmfGpuWork gw;
        tmmf_gpu_work_init(&gw, &sc, B, T, Hl, Wl);
        PlanInput pin = tmd_plan_input_(&sc, B, T, Hl, Wl, cf.N, &gw.bb);
        tmd_expect_plan_(rc ? "TM-MF, recompute on" : "TM-MF", &pin, 1, "student activations",
                         (double)(gw.bb.arena.used + gw.bb_u.arena.used + gw.h.arena.used + gw.h_aux.arena.used));
        TmmfGpuStats gs = tmmf_gpu_step(&G, &gw, &d, x_d, x1_d, y1_d, ctx_d, ctxu_d, &cf, 1.0 / B, 1);
        cudaCheck(cudaDeviceSynchronize());
        printf("  TM-MF %s%s: %d samples, %d with r < s (JVP), %d dropped; s, r =", label, rc ? ", recompute on" : "",
               B, n_jvp, n_drop);
        for (int b = 0; b < B; b++) printf(" (%.3f, %.3f)", d.s[b], d.r[b]);
        printf("\n");
        expect_close_scaled("TM-MF loss per sample", gs.loss, loss_cpu, B, tol);
        double* gg = tmd_download_(G.grads, ns);
        tmd_compare_student_(&sc, "TM-MF d", gg, dS, tol);
        free(gg);
        float* gf = tmd_download_f_(G.grads, ns);
        if (rc) {
            expect_bit_identical("TM-MF loss per sample (double)", loss_off, gs.loss, 2 * (size_t)B);
            expect_bit_identical("TM-MF student gradients", g_off, gf, ns);
            free(gf);
        } else {
            g_off = gf;
            memcpy(loss_off, gs.loss, sizeof(loss_off));
        }
        tmmf_gpu_work_free(&gw);
        tmd_gpu_student_free(&G);
    }
    wan_gpu_recompute = saved;
    free(g_off);
    // gradient accumulation (train_tmd --accum): the same B samples as B micro-batches of one, each step adding its
    // gradient scaled 1/B into the same buffer, must give the batch's gradient: the CPU reference's, which is made one
    // sample at a time exactly so
    if (recompute_check) {
        TmdGpuStudent G;
        tmd_gpu_student_init(&G, &sc, Sf);
        TmmfGpuWork gw;
        tmmf_gpu_work_init(&gw, &sc, 1, T, Hl, Wl);
        double loss_acc[TMD_MAX_BATCH];
        for (int b = 0; b < B; b++) {
            TmmfDraw d1;
            memset(&d1, 0, sizeof(d1));
            d1.B = 1;
            d1.t[0] = d.t[b];
            d1.s[0] = d.s[b];
            d1.r[0] = d.r[b];
            d1.dropped[0] = d.dropped[b];
            TmmfGpuStats g1 = tmmf_gpu_step(&G, &gw, &d1, x_d + b * numel, x1_d + b * numel, y1_d + b * numel,
                                            ctx_d + b * nctx, ctxu_d, &cf, 1.0 / B, 1);
            loss_acc[b] = g1.loss[0];
        }
        cudaCheck(cudaDeviceSynchronize());
        printf("  TM-MF %s, %d micro-batches of 1 accumulated:\n", label, B);
        expect_close_scaled("TM-MF loss per sample (accumulated)", loss_acc, loss_cpu, B, tol);
        double* gg = tmd_download_(G.grads, ns);
        tmd_compare_student_(&sc, "TM-MF d (accumulated)", gg, dS, tol);
        free(gg);
        tmmf_gpu_work_free(&gw);
        tmd_gpu_student_free(&G);
    }
    cudaCheck(cudaFree(x_d));
    cudaCheck(cudaFree(ctx_d));
    cudaCheck(cudaFree(x1_d));
    cudaCheck(cudaFree(y1_d));
    if (ctxu_d) cudaCheck(cudaFree(ctxu_d));
    free(ctx_u);
    tmmf_work_free(&cw);
    free(Sf);
    free(x1h);
    free(y1h);
    free(dS);
    free(ctx);
    free(x);
    free(Sb);
    free(teacher);
}

// every tensor of a Wan-layout gradient at its own scale (one line for the passing ones)
static void tmd_compare_wan_(const WanConfig* c, const char* what, const double* gpu, const double* cpu, double tol) {
    WanTensor* tl = (WanTensor*)malloc(sizeof(WanTensor) * WAN_MAX_TENSORS);
    int nt = wan_layout(c, tl, NULL, NULL, NULL);
    double worst = 0;
    const char* worst_name = "";
    char name[320];
    for (int i = 0; i < nt; i++) {
        double maxd = 0, maxr = 0;
        for (size_t k = 0; k < tl[i].numel; k++) {
            maxd = fmax(maxd, fabs(gpu[tl[i].offset + k] - cpu[tl[i].offset + k]));
            maxr = fmax(maxr, fabs(cpu[tl[i].offset + k]));
        }
        double rel = maxr > 0 ? maxd / maxr : maxd;
        if (rel > worst || !isfinite(rel)) {
            worst = rel;
            worst_name = tl[i].name;
        }
        if (rel > tol || !isfinite(rel)) {
            snprintf(name, sizeof(name), "%.100s %.96s", what, tl[i].name);
            expect_close_scaled(name, gpu + tl[i].offset, cpu + tl[i].offset, (long)tl[i].numel, tol);
        } else
            tests_passed++;
    }
    printf("  %-44s %d Wan tensors, worst rel %.3e (%s)  (tol %.0e)\n", what, nt, worst, worst_name, tol);
    free(tl);
}

// the discriminator's gradients, each tensor of each head against its own max |reference| (one line; a failing
// tensor prints its own)
static void tmd_compare_disc_(const DiscConfig* dc, const char* what, const double* gpu, const double* cpu,
                              double tol) {
    DiscParams gP, cP;
    disc_carve(dc, &gP, (double*)gpu);
    disc_carve(dc, &cP, (double*)cpu);
    double worst = 0;
    char name[160];
    int nt = 0;
    for (int h = 0; h < dc->n_heads; h++) {
        const double *gp[4 * DISC_MAX_CONVS + 4], *cp[4 * DISC_MAX_CONVS + 4];
        size_t nn[4 * DISC_MAX_CONVS + 4];
        int m = 0;
        for (int k = 0; k < disc_n_convs(dc); k++) {
            size_t oc = disc_conv_out(dc, k);
            gp[m] = gP.conv_w[h][k];
            cp[m] = cP.conv_w[h][k];
            nn[m++] = disc_conv_numel(dc, k);
            gp[m] = gP.conv_b[h][k];
            cp[m] = cP.conv_b[h][k];
            nn[m++] = oc;
            gp[m] = gP.norm_w[h][k];
            cp[m] = cP.norm_w[h][k];
            nn[m++] = oc;
            gp[m] = gP.norm_b[h][k];
            cp[m] = cP.norm_b[h][k];
            nn[m++] = oc;
        }
        gp[m] = gP.mlp_0_w[h];
        cp[m] = cP.mlp_0_w[h];
        nn[m++] = (size_t)dc->hidden * disc_feat_dim(dc);
        gp[m] = gP.mlp_0_b[h];
        cp[m] = cP.mlp_0_b[h];
        nn[m++] = dc->hidden;
        gp[m] = gP.mlp_2_w[h];
        cp[m] = cP.mlp_2_w[h];
        nn[m++] = dc->hidden;
        gp[m] = gP.mlp_2_b[h];
        cp[m] = cP.mlp_2_b[h];
        nn[m++] = 1;
        for (int q = 0; q < m; q++, nt++) {
            double maxd = 0, maxr = 0;
            for (size_t i = 0; i < nn[q]; i++) {
                maxd = fmax(maxd, fabs(gp[q][i] - cp[q][i]));
                maxr = fmax(maxr, fabs(cp[q][i]));
            }
            double rel = maxr > 0 ? maxd / maxr : maxd;
            if (rel > worst || !isfinite(rel)) worst = rel;
            if (maxr == 0 || rel > tol || !isfinite(rel)) { // an all-zero reference gradient would make the check empty
                snprintf(name, sizeof(name), "%.100s head %d tensor %d", what, h, q);
                EXPECT(maxr > 0, "%s: the CPU reference gradient is all zero", name);
                expect_close_scaled(name, gp[q], cp[q], (long)nn[q], tol);
            } else
                tests_passed++;
        }
    }
    printf("  %-44s %d tensors (%d heads), worst rel %.3e  (tol %.0e)\n", what, nt, dc->n_heads, worst, tol);
}

// one Stage 2 student step (VSD through the N-step rollout) and one critic step (the fake score's DSM), GPU vs CPU;
// gan: with the GAN terms (two Conv3D heads of width 8 on teacher blocks 1 and 2, GroupNorm with 2 groups): the
// generator's loss through the frozen teacher and the discriminator's loss on real and fake, at gan_weight 1 so that
// the GAN part of the student's gradient is not hidden under the VSD part (the default 0.03 would scale it down).
// recompute_check: the GPU steps a second time with activation recompute on; the same checks, and every bit equal.
static void test_dmd_gpu_parity(int B, uint64_t seed, double tol, int tmd, int gan, int recompute_check) {
    char err[ST_ERRLEN];
    StudentConfig sc;
    sc.wan = TMD_PARITY_CONFIG;
    sc.head_blocks = 1;
    sc.fusion = FUSION_GATED;
    sc.fuse_ffn_dim = 48;
    const WanConfig* c = &sc.wan;
    int T = 2, Hl = 4, Wl = 8, N = 2;
    WanGrid g;
    if (wan_grid(&g, c, c->in_dim, T, Hl, Wl, err)) {
        fprintf(stderr, "%s\n", err);
        exit(1);
    }
    size_t nw = wan_num_params(c), ns = student_num_params(&sc), numel = (size_t)c->out_dim * T * Hl * Wl,
           nctx = (size_t)c->text_len * c->text_dim;
    double* teacher = (double*)calloc(nw, sizeof(double));
    tmd_random_params_(c, teacher, seed);
    double* fake = (double*)calloc(nw, sizeof(double));
    Rng pr = rng_make(seed + 3);
    for (size_t i = 0; i < nw; i++)
        fake[i] = teacher[i] * (1 + 0.1 * rng_normal(&pr)); // the fake score has drifted from the teacher
    double* Sb = (double*)calloc(ns, sizeof(double));
    student_init(&sc, Sb, teacher, seed + 1);
    for (size_t i = nw; i < ns; i++) Sb[i] += 0.05 * rng_normal(&pr);
    StudentParams S;
    student_carve(&sc, &S, Sb);
    S.x.fuse_gate[0] = 0.3;
    WanParams Tp, Fp;
    wan_carve(c, &Tp, teacher);
    wan_carve(c, &Fp, fake);
    double* x = (double*)malloc(sizeof(double) * B * numel);
    for (size_t i = 0; i < B * numel; i++) x[i] = rng_normal(&pr);
    double* ctx = (double*)calloc(B * nctx, sizeof(double));
    int Lt[TMD_MAX_BATCH];
    for (int b = 0; b < B; b++) {
        Lt[b] = c->text_len - (b % 3);
        for (size_t i = 0; i < (size_t)Lt[b] * c->text_dim; i++) ctx[b * nctx + i] = rng_normal(&pr);
    }
    DmdConfig cf = dmd_defaults(2);
    cf.gan_weight = gan ? 1.0 : 0;
    // gan 2: the multiscale head (scales 1, 2 on this grid), whose critic pass runs in train mode (dropout keyed by t)
    DiscConfig dc = gan == 2 ? disc_config_multiscale(c, 8, T, Hl, Wl) : disc_config(c, 8, 8, 8, 8, 8);
    if (!gan) dc.n_heads = 0;
    size_t nd = disc_num_params(&dc);
    double* Db = (double*)calloc(nd ? nd : 1, sizeof(double));
    disc_init(&dc, Db, seed + 9);
    double* dD = (double*)calloc(nd ? nd : 1, sizeof(double));
    DiscParams Dp, dDp;
    disc_carve(&dc, &Dp, Db);
    disc_carve(&dc, &dDp, dD);
    // CPU
    // the baseline's plain Wan student: the teacher with drifted weights
    double* base = (double*)calloc(nw, sizeof(double));
    for (size_t i = 0; i < nw; i++) base[i] = teacher[i] * (1 + 0.05 * rng_normal(&pr));
    WanParams Bp;
    wan_carve(c, &Bp, base);
    Generator Gc;
    generator_init(&Gc, tmd, &sc, &g, N, 10.0);
    Gc.S = &S;
    Gc.P = &Bp;
    double* dB = (double*)calloc(nw, sizeof(double));
    WanParams dBp;
    wan_carve(c, &dBp, dB);
    DmdWork cw;
    dmd_work_init(&cw, c, &g, &dc);
    double* dS = (double*)calloc(ns, sizeof(double));
    StudentParams dSp;
    student_carve(&sc, &dSp, dS);
    double* dF = (double*)calloc(nw, sizeof(double));
    WanParams dFp;
    wan_carve(c, &dFp, dF);
    float* x1h = (float*)malloc(sizeof(float) * 2 * B * numel);
    float* y1h = (float*)malloc(sizeof(float) * 2 * B * numel);
    float* eh = (float*)malloc(sizeof(float) * 2 * B * numel);
    DmdDraw ds, dcr;
    memset(&ds, 0, sizeof(ds));
    memset(&dcr, 0, sizeof(dcr));
    ds.B = dcr.B = B;
    double vsd_cpu[TMD_MAX_BATCH], dsm_cpu[TMD_MAX_BATCH], gang_cpu[TMD_MAX_BATCH], gand_cpu[TMD_MAX_BATCH];
    int replay_ok = 1;
    for (int b = 0; b < B; b++) {
        Rng r1 = rng_make(seed * 10 + b), r2 = r1;
        dmd_draw_sample(&ds, b, &cf, &r2, x1h + b * numel, y1h + b * numel, eh + b * numel, numel);
        DmdStats st = dmd_student_sample(&Gc, &dSp, &dBp, &cw, &Tp, &Fp, &Dp, &dc, &g, x + b * numel, ctx + b * nctx,
                                         Lt[b], NULL, 0, &cf, &r1, 1.0 / B);
        vsd_cpu[b] = st.vsd;
        gang_cpu[b] = st.gan_g;
        replay_ok &= r1.counter == r2.counter && st.t == ds.t[b] && st.t_i == ds.t_i[b];
        Rng q1 = rng_make(seed * 10 + 50 + b), q2 = q1;
        size_t o = (size_t)(B + b) * numel;
        dmd_draw_sample(&dcr, b, &cf, &q2, x1h + o, y1h + o, eh + o, numel);
        st = dmd_critic_sample(&Gc, &dFp, gan ? &dDp : NULL, &cw, &Tp, &Fp, &Dp, &dc, &g, x + b * numel, ctx + b * nctx,
                               Lt[b], &cf, &q1, 1.0 / B);
        dsm_cpu[b] = st.dsm;
        gand_cpu[b] = st.gan_d;
        replay_ok &= q1.counter == q2.counter && st.t == dcr.t[b] && st.t_i == dcr.t_i[b];
    }
    EXPECT(replay_ok, "the host replay of the CPU's Stage 2 draws (t_i, x1, y1, t, eps) went out of step");
    // GPU: recompute off, then (recompute_check) on, which must give the same bits
    float* Sf = (float*)malloc(sizeof(float) * ns);
    for (size_t i = 0; i < ns; i++) Sf[i] = (float)Sb[i];
    float* Tf = (float*)malloc(sizeof(float) * nw);
    float* Ff = (float*)malloc(sizeof(float) * nw);
    for (size_t i = 0; i < nw; i++) {
        Tf[i] = (float)teacher[i];
        Ff[i] = (float)fake[i];
    }
    float* Bf = (float*)malloc(sizeof(float) * nw);
    for (size_t i = 0; i < nw; i++) Bf[i] = (float)base[i];
    float* Dfl = (float*)malloc(sizeof(float) * (nd ? nd : 1));
    for (size_t i = 0; i < nd; i++) Dfl[i] = (float)Db[i];
    int saved = wan_gpu_recompute;
    float *gs_off = NULL, *gf_off = NULL, *gd_off = NULL;
    DmdGpuStats gs_o, gc_o;
    for (int rc = 0; rc <= recompute_check; rc++) {
        wan_gpu_recompute = rc;
        TmdGpuStudent Sg;
        tmd_gpu_student_init(&Sg, &sc, Sf);
        WanGpuModel Tm, Fm;
        wan_gpu_model_init(&Tm, c, Tf, 0, "teacher");
        wan_gpu_model_init(&Fm, c, Ff, 1, "fake score");
        WanGpuModel Bm;
        wan_gpu_model_init(&Bm, c, Bf, 1, "DMD2-v student");
        GenGpu G;
        gen_gpu_init(&G, tmd, &sc, B, T, Hl, Wl, N, 10.0);
        G.S = &Sg;
        G.P = &Bm;
        DmdGpuWork w;
        dmd_gpu_work_init(&w, c, B, T, Hl, Wl, &G.bb);
        DiscGpuModel Dm;
        disc_gpu_model_init(&Dm, &dc, Dfl);
        if (gan) dmd_gpu_work_attach_disc(&w, &Dm, &Tm.w);
        PlanInput pin = tmd_plan_input_(&sc, B, T, Hl, Wl, N, &G.bb);
        pin.baseline = !tmd;
        pin.disc_heads = gan ? dc.n_heads : 0;
        if (gan) pin.disc = dc;
        size_t ro_bytes = 0;
        for (int j = 0; tmd && j < G.ro.n_evals; j++) ro_bytes += G.ro.steps[j].arena.used;
        tmd_expect_plan_(rc ? "DMD2-v, recompute on" : "DMD2-v", &pin, 2, "student activations",
                         (double)(G.bb.arena.used + ro_bytes));
        tmd_expect_plan_(rc ? "DMD2-v, recompute on" : "DMD2-v", &pin, 2, "teacher + fake score activations",
                         (double)(w.a_train.arena.used + w.a_fwd.arena.used));
        float* x_d = tmd_upload_(x, B * numel);
        float* ctx_d = tmd_upload_(ctx, B * nctx);
        float* nz;
        cudaCheck(cudaMalloc(&nz, sizeof(float) * 6 * B * numel));
        float *x1_d = nz, *y1_d = nz + 2 * B * numel, *e_d = nz + 4 * B * numel;
        cudaCheck(cudaMemcpy(x1_d, x1h, sizeof(float) * 2 * B * numel, cudaMemcpyHostToDevice));
        cudaCheck(cudaMemcpy(y1_d, y1h, sizeof(float) * 2 * B * numel, cudaMemcpyHostToDevice));
        cudaCheck(cudaMemcpy(e_d, eh, sizeof(float) * 2 * B * numel, cudaMemcpyHostToDevice));
        DmdGpuStats gs =
            dmd_gpu_student_step(&G, &w, &Tm.w, &Fm.w, &ds, x_d, x1_d, y1_d, e_d, ctx_d, NULL, &cf, 1.0 / B);
        size_t o = (size_t)B * numel;
        DmdGpuStats gc = dmd_gpu_critic_step(&G, &w, &Fm, &dcr, x_d, x1_d + o, y1_d + o, e_d + o, ctx_d, &cf, 1.0 / B);
        cudaCheck(cudaDeviceSynchronize());
        printf("  DMD2-v, %s%s%s: %d samples%s; student t_i, t_dmd =",
               tmd ? "TMD student" : "baseline (plain Wan student)", gan ? ", with the GAN terms" : "",
               rc ? ", recompute on" : "", B, tmd ? ", rollout N = 2" : "");
        for (int b = 0; b < B; b++) printf(" (%.3f, %.3f)", ds.t_i[b], ds.t[b]);
        printf("\n");
        expect_close_scaled("DMD2-v VSD loss per sample", gs.vsd, vsd_cpu, B, tol);
        if (gan) {
            expect_close_scaled("GAN generator loss per sample", gs.gan_g, gang_cpu, B, tol);
            expect_close_scaled("GAN discriminator loss per sample", gc.gan_d, gand_cpu, B, tol);
            double* gdd = tmd_download_(Dm.grads, nd);
            tmd_compare_disc_(&dc, "discriminator d", gdd, dD, tol);
            free(gdd);
        }
        double* gsd = tmd ? tmd_download_(Sg.grads, ns) : tmd_download_(Bm.grads, nw);
        if (tmd)
            tmd_compare_student_(&sc, "DMD2-v student d", gsd, dS, tol);
        else
            tmd_compare_wan_(c, "DMD2-v baseline student d", gsd, dB, tol);
        expect_close_scaled("fake score DSM loss per sample", gc.dsm, dsm_cpu, B, tol);
        double* gfd = tmd_download_(Fm.grads, nw);
        tmd_compare_wan_(c, "fake score d", gfd, dF, tol);
        free(gsd);
        free(gfd);
        size_t nsg = tmd ? ns : nw;
        float* gsf = tmd_download_f_(tmd ? Sg.grads : Bm.grads, nsg);
        float* gff = tmd_download_f_(Fm.grads, nw);
        float* gdf = gan ? tmd_download_f_(Dm.grads, nd) : NULL;
        if (rc) {
            expect_bit_identical("student step losses (double)", gs_o.vsd, gs.vsd, 2 * (size_t)B);
            expect_bit_identical("critic step losses (double)", gc_o.dsm, gc.dsm, 2 * (size_t)B);
            if (gan) {
                expect_bit_identical("GAN losses (double)", gs_o.gan_g, gs.gan_g, 2 * (size_t)B);
                expect_bit_identical("GAN discriminator losses (double)", gc_o.gan_d, gc.gan_d, 2 * (size_t)B);
            }
            expect_bit_identical(tmd ? "TMD student gradients" : "baseline student gradients", gs_off, gsf, nsg);
            expect_bit_identical("fake score gradients", gf_off, gff, nw);
            if (gan) expect_bit_identical("discriminator gradients", gd_off, gdf, nd);
            free(gsf);
            free(gff);
            free(gdf);
        } else {
            gs_o = gs;
            gc_o = gc;
            gs_off = gsf;
            gf_off = gff;
            gd_off = gdf;
        }
        cudaCheck(cudaFree(x_d));
        cudaCheck(cudaFree(ctx_d));
        cudaCheck(cudaFree(nz));
        dmd_gpu_work_free(&w);
        disc_gpu_model_free(&Dm);
        gen_gpu_free(&G);
        wan_gpu_model_free(&Bm);
        wan_gpu_model_free(&Tm);
        wan_gpu_model_free(&Fm);
        tmd_gpu_student_free(&Sg);
    }
    wan_gpu_recompute = saved;
    free(gs_off);
    free(gf_off);
    free(gd_off);
    free(Dfl);
    free(Db);
    free(dD);
    dmd_work_free(&cw);
    generator_free(&Gc);
    free(Bf);
    free(base);
    free(dB);
    free(Sf);
    free(Tf);
    free(Ff);
    free(x1h);
    free(y1h);
    free(eh);
    free(dS);
    free(dF);
    free(ctx);
    free(x);
    free(Sb);
    free(fake);
    free(teacher);
}

// one KD step on B pairs, GPU vs CPU (cpu/distill_cpu.h kd_sample): tmd 1 the TMD student (rollout N = 2), 0 the
// baseline's plain Wan student. The pairs are random stand-ins for teacher samples (the step does not care where they
// came from); they go to the device as a KdPairs of P = 3 and the step reads pair (1·B + b) mod 3 as the trainer does.
static void test_kd_gpu_parity(int B, uint64_t seed, double tol, int tmd) {
    char err[ST_ERRLEN];
    StudentConfig sc;
    sc.wan = TMD_PARITY_CONFIG;
    sc.head_blocks = 1;
    sc.fusion = FUSION_GATED;
    sc.fuse_ffn_dim = 48;
    const WanConfig* c = &sc.wan;
    int T = 2, Hl = 4, Wl = 8, N = 2, P = 3;
    uint64_t step = 1;
    WanGrid g;
    if (wan_grid(&g, c, c->in_dim, T, Hl, Wl, err)) {
        fprintf(stderr, "%s\n", err);
        exit(1);
    }
    size_t nw = wan_num_params(c), ns = student_num_params(&sc), numel = (size_t)c->out_dim * T * Hl * Wl,
           nctx = (size_t)c->text_len * c->text_dim;
    size_t np = tmd ? ns : nw;
    double* teacher = (double*)calloc(nw, sizeof(double));
    tmd_random_params_(c, teacher, seed);
    Rng pr = rng_make(seed + 4);
    // the student: the TMD student (student_init, extras perturbed) or the teacher with drifted weights (every value
    // float)
    double* Sb = (double*)calloc(np, sizeof(double));
    if (tmd) {
        student_init(&sc, Sb, teacher, seed + 1);
        for (size_t i = nw; i < ns; i++) Sb[i] += 0.05 * rng_normal(&pr);
    } else
        for (size_t i = 0; i < nw; i++) Sb[i] = teacher[i] * (1 + 0.05 * rng_normal(&pr));
    for (size_t i = 0; i < np; i++) Sb[i] = (float)Sb[i];
    StudentParams S;
    WanParams Wp;
    if (tmd) {
        student_carve(&sc, &S, Sb);
        S.x.fuse_gate[0] = 0.3f;
    } else
        wan_carve(c, &Wp, Sb);
    // P pairs: noise, a stand-in teacher sample, a caption of text_len − (i mod 3) rows, zero-padded
    KdPairs kp;
    kd_pairs_alloc(&kp, P, numel, nctx);
    memset(kp.ctx, 0, sizeof(float) * P * nctx);
    int Lt[8];
    double* dz = (double*)malloc(sizeof(double) * P * numel);
    double* dt = (double*)malloc(sizeof(double) * P * numel);
    double* dctx = (double*)calloc(P * nctx, sizeof(double));
    for (int i = 0; i < P; i++) {
        Lt[i] = c->text_len - i % 3;
        for (size_t k = 0; k < numel; k++) {
            kp.noise[i * numel + k] = (float)rng_normal(&pr);
            kp.target[i * numel + k] = (float)(0.5 * rng_normal(&pr));
        }
        for (size_t k = 0; k < (size_t)Lt[i] * c->text_dim; k++) kp.ctx[i * nctx + k] = (float)rng_normal(&pr);
    }
    for (size_t k = 0; k < P * numel; k++) {
        dz[k] = kp.noise[k];
        dt[k] = kp.target[k];
    }
    for (size_t k = 0; k < P * nctx; k++) dctx[k] = kp.ctx[k];
    // CPU: one sample at a time with its own stream for y1; the same y1 replayed for the GPU
    Generator Gc;
    generator_init(&Gc, tmd, &sc, &g, N, 10.0);
    Gc.S = &S;
    Gc.P = &Wp;
    double* dS = (double*)calloc(np, sizeof(double));
    StudentParams dSp;
    WanParams dWp;
    if (tmd)
        student_carve(&sc, &dSp, dS);
    else
        wan_carve(c, &dWp, dS);
    float* y1h = (float*)malloc(sizeof(float) * B * numel);
    double mse_cpu[TMD_MAX_BATCH];
    int idx[TMD_MAX_BATCH], replay_ok = 1;
    for (int b = 0; b < B; b++) {
        int i = (int)((step * B + b) % P);
        idx[b] = i;
        Rng r1 = rng_make(seed * 10 + b), r2 = r1;
        for (size_t k = 0; k < numel; k++) y1h[b * numel + k] = (float)rng_normal(&r2);
        mse_cpu[b] = kd_sample(&Gc, tmd ? &dSp : NULL, tmd ? NULL : &dWp, &g, dz + i * numel, dt + i * numel,
                               dctx + i * nctx, Lt[i], T_MAX, &r1, 1.0 / B);
        replay_ok &= r1.counter == r2.counter;
    }
    EXPECT(replay_ok, "the host replay of the CPU's KD draws (y1) went out of step");
    // GPU
    float* Sf = (float*)malloc(sizeof(float) * np);
    for (size_t i = 0; i < np; i++) Sf[i] = (float)Sb[i];
    TmdGpuStudent Sg;
    WanGpuModel Bm;
    memset(&Sg, 0, sizeof(Sg));
    memset(&Bm, 0, sizeof(Bm));
    if (tmd)
        tmd_gpu_student_init(&Sg, &sc, Sf);
    else
        wan_gpu_model_init(&Bm, c, Sf, 1, "DMD2-v student");
    GenGpu G;
    gen_gpu_init(&G, tmd, &sc, B, T, Hl, Wl, N, 10.0);
    G.S = &Sg;
    G.P = &Bm;
    KdGpuWork w;
    kd_gpu_work_init(&w, &kp, B, numel, nctx);
    kd_gpu_batch(&w, step, G.bb.stream);
    float* y1_d = tmd_dalloc_(B * numel, "KD test y1");
    cudaCheck(cudaMemcpy(y1_d, y1h, sizeof(float) * B * numel, cudaMemcpyHostToDevice));
    KdGpuStats gs = kd_gpu_step(&G, &w, w.zb, w.tb, y1_d, w.cb, 1.0 / B);
    cudaCheck(cudaDeviceSynchronize());
    printf("  KD, %s: %d samples at t = T_MAX, pairs",
           tmd ? "TMD student (rollout N = 2)" : "baseline (plain Wan student)", B);
    for (int b = 0; b < B; b++) printf(" %d", idx[b]);
    printf(" of %d\n", P);
    EXPECT(gs.finite, "KD step: non-finite loss on the GPU");
    expect_close_scaled("KD loss (mse) per sample", gs.mse, mse_cpu, B, tol);
    double* gsd = tmd_download_(tmd ? Sg.grads : Bm.grads, np);
    if (tmd)
        tmd_compare_student_(&sc, "KD TMD student d", gsd, dS, tol);
    else
        tmd_compare_wan_(c, "KD baseline student d", gsd, dS, tol);
    free(gsd);
    cudaCheck(cudaFree(y1_d));
    kd_gpu_work_free(&w);
    gen_gpu_free(&G);
    if (tmd)
        tmd_gpu_student_free(&Sg);
    else
        wan_gpu_model_free(&Bm);
    generator_free(&Gc);
    kd_pairs_free(&kp);
    free(Sf);
    free(y1h);
    free(dS);
    free(dz);
    free(dt);
    free(dctx);
    free(Sb);
    free(teacher);
}

// the KD pairs' teacher samples on the GPU (gpu/kd_gpu.cuh kd_pairs_sample, as train_tmd makes them) against the CPU
// reference's sampler (cpu/teacher_cpu.h teacher_sample over WanVelocity), with skip-layer guidance at block 1, CFG 5
// against a negative prompt, 2 UniPC steps: the whole pair, not just one forward. The CPU's sample without skip-layer
// guidance must differ (the comparison can see the skip).
static void test_kd_pairs_slg_parity(uint64_t seed, double tol) {
    char err[ST_ERRLEN];
    WanConfig cfg = TMD_PARITY_CONFIG;
    const WanConfig* c = &cfg;
    int T = 2, Hl = 4, Wl = 8, P = 2, skip = 1;
    WanGrid g;
    if (wan_grid(&g, c, c->in_dim, T, Hl, Wl, err)) {
        fprintf(stderr, "%s\n", err);
        exit(1);
    }
    size_t nw = wan_num_params(c), numel = (size_t)c->out_dim * T * Hl * Wl, nctx = (size_t)c->text_len * c->text_dim;
    double* teacher = (double*)calloc(nw, sizeof(double));
    tmd_random_params_(c, teacher, seed);
    float* Tf = (float*)malloc(sizeof(float) * nw);
    for (size_t i = 0; i < nw; i++) {
        Tf[i] = (float)teacher[i];
        teacher[i] = Tf[i];
    }
    Rng pr = rng_make(seed + 1);
    KdPairs kp;
    kd_pairs_alloc(&kp, P, numel, nctx);
    float* neg = (float*)malloc(sizeof(float) * nctx);
    for (size_t k = 0; k < P * numel; k++) kp.noise[k] = (float)rng_normal(&pr);
    for (size_t k = 0; k < P * nctx; k++) kp.ctx[k] = (float)rng_normal(&pr);
    for (size_t k = 0; k < nctx; k++) neg[k] = (float)rng_normal(&pr);
    KdPairSettings s = {P, 2, 5.0, 5.0, seed, skip};
    WanGpuModel Tm;
    wan_gpu_model_init(&Tm, c, Tf, 0, "teacher");
    int rc = kd_pairs_sample(&kp, &Tm, T, Hl, Wl, neg, &s, P, err);
    EXPECT(rc == 0, "kd_pairs_sample: %s", err);
    // the CPU, pair by pair, with the settings kd_pairs_sample uses (truncate_t 0)
    WanParams Pw;
    wan_carve(c, &Pw, teacher);
    WanAct act;
    wan_act_init(&act, c, &g);
    double* want = (double*)malloc(sizeof(double) * P * numel);
    double* plain = (double*)malloc(sizeof(double) * P * numel);
    double* ctxd = (double*)malloc(sizeof(double) * nctx);
    double* negd = (double*)malloc(sizeof(double) * nctx);
    for (size_t k = 0; k < nctx; k++) negd[k] = neg[k];
    SampleOpts so = {s.steps, s.shift, s.cfg, SOLVER_UNIPC, GRID_UNIPC, 0};
    for (int i = 0; i < P; i++) {
        for (size_t k = 0; k < nctx; k++) ctxd[k] = kp.ctx[i * nctx + k];
        for (int slg = 1; slg >= 0; slg--) {
            double* x = (slg ? want : plain) + i * numel;
            for (size_t k = 0; k < numel; k++) x[k] = kp.noise[i * numel + k];
            WanVelocity wv = {&act, &Pw, ctxd, c->text_len, negd, c->text_len, slg, skip};
            if (teacher_sample(x, numel, wan_velocity, &wv, &so, NULL, err)) EXPECT(0, "CPU teacher_sample: %s", err);
        }
    }
    double* got = (double*)malloc(sizeof(double) * P * numel);
    for (size_t k = 0; k < P * numel; k++) got[k] = kp.target[k];
    printf("  KD pairs: %d teacher samples, UniPC %d steps, CFG %g against a negative prompt, skip-layer guidance at "
           "block %d\n",
           P, s.steps, s.cfg, skip);
    expect_close_scaled("KD pairs with skip-layer guidance: GPU kd_pairs_sample vs CPU teacher_sample", got, want,
                        (long)(P * numel), tol);
    double d = 0, mx = 0;
    for (size_t k = 0; k < P * numel; k++) {
        d = fmax(d, fabs(want[k] - plain[k]));
        mx = fmax(mx, fabs(want[k]));
    }
    printf("  the CPU's samples with and without skip-layer guidance differ by %.3g (max |x| %.3g)\n", d, mx);
    EXPECT(
        d > 2 * tol * mx,
        "skip-layer guidance changed the samples by only %.3g (tolerance %.0e of %.3g): the comparison cannot see it",
        d, tol, mx);
    wan_gpu_model_free(&Tm);
    wan_act_free(&act);
    kd_pairs_free(&kp);
    free(teacher);
    free(Tf);
    free(neg);
    free(want);
    free(plain);
    free(ctxd);
    free(negd);
    free(got);
}

// recompute_check: every TM-MF and DMD2-v step also with activation recompute on, its gradients memcmp'd against the
// plain run's
// the discriminator heads alone, GPU vs CPU, on random teacher features: B samples, two heads (blocks 0 and 1) on a
// 5 x 10 x 12 latent grid of 16 channels (GroupNorm 4 groups; the multiscale head's scales 1, 2, 4, with pooling
// remainders on every axis), (a) the critic step's pass: train-mode dropout with per-sample keys, parameter gradients
// only; (b) the student step's pass: eval mode, feature gradients only
static void test_disc_gpu_parity(int B, uint64_t seed, double tol, int kind) {
    char err[ST_ERRLEN];
    WanConfig c;
    wan_preset(&c, "tiny", err);
    c.num_layers = 2;
    c.dim = 64;
    c.num_heads = 2;
    c.ffn_dim = 48;
    c.freq_dim = 32;
    c.patch[1] = c.patch[2] = 2;
    int T = 5, Hl = 10, Wl = 12;
    WanGrid g;
    if (wan_grid(&g, &c, 3, T, Hl, Wl, err)) {
        fprintf(stderr, "disc parity: %s\n", err);
        exit(1);
    }
    DiscConfig dc =
        kind == DISC_MULTISCALE ? disc_config_multiscale(&c, 12, T, Hl, Wl) : disc_config(&c, 8, 8, 8, 8, 8);
    dc.n_heads = 2;
    dc.layers[0] = 0;
    dc.layers[1] = 1;
    size_t nd = disc_num_params(&dc), LD = (size_t)g.L * c.dim, nlev = (size_t)c.num_layers + 1;
    printf("\ndiscriminator heads, GPU vs CPU: %s, %zu parameters, batch %d, features [%d, %d, %d, %d]\n",
           disc_kind_name(&dc), nd, B, dc.in_ch, T, Hl, Wl);
    double* Db = (double*)calloc(nd, sizeof(double));
    disc_init(&dc, Db, seed + 1);
    Rng r = rng_make(seed + 2);
    for (size_t i = 0; i < nd; i++)
        Db[i] = (float)(Db[i] + 0.05 * rng_normal(&r));            // GroupNorm affine off (1, 0); fp32 values
    double* feat = (double*)calloc(nlev * B * LD, sizeof(double)); // [level, b, L·D]
    for (size_t i = 0; i < nlev * B * LD; i++) feat[i] = (float)rng_normal(&r);
    double dlogit[TMD_MAX_BATCH * DISC_MAX_HEADS];
    uint64_t keys[TMD_MAX_BATCH];
    for (int i = 0; i < B * dc.n_heads; i++) dlogit[i] = rng_normal(&r);
    for (int b = 0; b < B; b++) keys[b] = 0x9e3779b97f4a7c15ull * (seed + 3 + b);
    // the CPU reference, sample by sample
    DiscParams P, dP;
    double* dD = (double*)calloc(nd, sizeof(double));
    disc_carve(&dc, &P, Db);
    disc_carve(&dc, &dP, dD);
    WanAct ta;
    wan_act_init(&ta, &c, &g);
    DiscAct da;
    disc_act_init(&da, &dc, &g);
    double *lt = (double*)calloc((size_t)B * dc.n_heads, sizeof(double)),
           *le = (double*)calloc((size_t)B * dc.n_heads, sizeof(double));
    double* dfe_cpu = (double*)calloc(nlev * B * LD, sizeof(double));
    for (int b = 0; b < B; b++) {
        for (size_t l = 0; l < nlev; l++) memcpy(wan_xs(&ta, (int)l), feat + (l * B + b) * LD, sizeof(double) * LD);
        da.dropout_key = kind == DISC_MULTISCALE ? keys[b] : 0;
        disc_forward(&da, &P, &dc, &ta);
        for (int h = 0; h < dc.n_heads; h++) lt[b * dc.n_heads + h] = da.logit[h];
        disc_backward(&dP, NULL, dlogit + b * dc.n_heads, &da, &P, &dc, &ta);
        da.dropout_key = 0;
        disc_forward(&da, &P, &dc, &ta);
        for (int h = 0; h < dc.n_heads; h++) le[b * dc.n_heads + h] = da.logit[h];
        double* dfeat[WAN_MAX_LAYERS + 1] = {0};
        double* tmp = (double*)calloc(nlev * LD, sizeof(double));
        for (size_t l = 0; l < nlev; l++) dfeat[l] = tmp + l * LD;
        disc_backward(NULL, dfeat, dlogit + b * dc.n_heads, &da, &P, &dc, &ta);
        for (size_t l = 0; l < nlev; l++) memcpy(dfe_cpu + (l * B + b) * LD, tmp + l * LD, sizeof(double) * LD);
        free(tmp);
    }
    // the GPU: a training plan holds every residual level; the features copied in
    WanGpuAct ga;
    WanGpuActOpts o;
    memset(&o, 0, sizeof(o));
    if (wan_gpu_act_init_opts(&ga, &c, B, c.in_dim, T, Hl, Wl, 1, &o, err)) {
        fprintf(stderr, "disc parity: %s\n", err);
        exit(1);
    }
    float* fb = (float*)malloc(sizeof(float) * B * LD);
    for (size_t l = 0; l < nlev; l++) {
        for (size_t i = 0; i < B * LD; i++) fb[i] = (float)feat[l * B * LD + i];
        cudaCheck(cudaMemcpy(wan_gpu_xs(&ga, (int)l), fb, sizeof(float) * B * LD, cudaMemcpyHostToDevice));
    }
    float* Df = (float*)malloc(sizeof(float) * nd);
    for (size_t i = 0; i < nd; i++) Df[i] = (float)Db[i];
    DiscGpuModel m;
    disc_gpu_model_init(&m, &dc, Df);
    DiscGpuAct a;
    disc_gpu_act_init(&a, &dc, &ga);
    for (int b = 0; b < B; b++) a.dropout_key[b] = kind == DISC_MULTISCALE ? keys[b] : 0;
    disc_gpu_forward(&a, &m.P, &dc, &ga);
    expect_close_scaled("logits, train mode (dropout)", a.logit, lt, B * dc.n_heads, tol);
    disc_gpu_backward(&m.dP, NULL, dlogit, &a, &m.P, &dc, &ga);
    double* gd = (double*)malloc(sizeof(double) * nd);
    float* gf = (float*)malloc(sizeof(float) * nd);
    cudaCheck(cudaMemcpy(gf, m.grads, sizeof(float) * nd, cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < nd; i++) gd[i] = gf[i];
    tmd_compare_disc_(&dc, "parameter gradients (critic pass) d", gd, dD, tol);
    float* dfe_d = tmd_dalloc_(nlev * B * LD, "disc test feature gradients");
    cudaCheck(cudaMemset(dfe_d, 0, sizeof(float) * nlev * B * LD));
    float* dfeat_d[WAN_MAX_LAYERS + 1] = {0};
    for (size_t l = 0; l < nlev; l++) dfeat_d[l] = dfe_d + l * B * LD;
    for (int b = 0; b < B; b++) a.dropout_key[b] = 0;
    disc_gpu_forward(&a, &m.P, &dc, &ga);
    expect_close_scaled("logits, eval mode", a.logit, le, B * dc.n_heads, tol);
    cudaCheck(cudaMemset(m.grads, 0, sizeof(float) * nd));
    disc_gpu_backward(NULL, dfeat_d, dlogit, &a, &m.P, &dc, &ga);
    float* hf = (float*)malloc(sizeof(float) * nlev * B * LD);
    double* hd = (double*)malloc(sizeof(double) * nlev * B * LD);
    cudaCheck(cudaMemcpy(hf, dfe_d, sizeof(float) * nlev * B * LD, cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < nlev * B * LD; i++) hd[i] = hf[i];
    for (int h = 0; h < dc.n_heads; h++) {
        char nm[96];
        size_t l = (size_t)dc.layers[h] + 1;
        snprintf(nm, sizeof(nm), "d(features of block %d) (student pass)", dc.layers[h]);
        expect_close_scaled(nm, hd + l * B * LD, dfe_cpu + l * B * LD, (long)(B * LD), tol);
    }
    cudaCheck(cudaMemcpy(gf, m.grads, sizeof(float) * nd, cudaMemcpyDeviceToHost));
    size_t touched = 0;
    for (size_t i = 0; i < nd; i++) touched += gf[i] != 0;
    printf("  student pass: %zu parameter gradients written (none asked for)\n", touched);
    EXPECT(touched == 0, "the student pass wrote %zu parameter gradients", touched);
    disc_gpu_act_free(&a);
    disc_gpu_model_free(&m);
    wan_gpu_act_free(&ga);
    cudaCheck(cudaFree(dfe_d));
    disc_act_free(&da);
    wan_act_free(&ta);
    free(Db);
    free(feat);
    free(dD);
    free(lt);
    free(le);
    free(dfe_cpu);
    free(fb);
    free(Df);
    free(gd);
    free(gf);
    free(hf);
    free(hd);
}

static void test_tmd_gpu(int B, uint64_t seed, double tol, int recompute_check) {
    printf("\nTMD on the GPU vs the CPU reference: one TM-MF step, one DMD2-v student and critic step, one KD step "
           "(gated fusion, H = 1)\n");
    test_tmmf_gpu_parity(B, seed, 0.0, 0.0, tol, "(a) guided, r < s", recompute_check);
    test_tmmf_gpu_parity(B, seed + 7, 1.0, 0.5, tol, "(b) dropped to a negative prompt", recompute_check);
    test_dmd_gpu_parity(B, seed, tol, 1, 0, recompute_check);
    test_dmd_gpu_parity(B, seed + 3, tol, 0, 0, recompute_check);
    test_kd_gpu_parity(B, seed + 11, tol, 0);
    test_kd_gpu_parity(B, seed + 13, tol, 1);
    test_kd_pairs_slg_parity(seed + 17, tol);
#ifdef ENABLE_FP32
    // the heads alone: fp32 build here; the bf16 build's error at this size is not measured yet (test_gpu --disc-only
    // runs these two in either build and prints it)
    test_disc_gpu_parity(B, seed + 17, tol, DISC_MULTISCALE);
    test_disc_gpu_parity(B, seed + 19, tol, DISC_STRIDED);
    // with the GAN terms: fp32 build only. In the bf16 build (simulated, this size) the losses and the student's and
    // fake score's gradients pass 5e-2, but the discriminator's gradients of the head on the last block do not (rel up
    // to 9.2e-2): bf16-rounded features pass through GroupNorm over groups of 4 values at this tiny latent, which
    // amplifies the rounding. The heads themselves are fp32 in both builds.
    test_dmd_gpu_parity(B, seed + 5, tol, 1, 1, recompute_check);
    test_dmd_gpu_parity(B, seed + 23, tol, 1, 2, recompute_check);
#endif
}
