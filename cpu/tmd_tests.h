// cpu/tmd_tests.h: tests of the TMD pieces on the CPU reference (cpu/tmd_cpu.h, cpu/distill_cpu.h):
// the student equals the teacher at initialisation, the inner-step sign, effective NFE, and finite-difference
// gradient checks of the flow head (both fusions, time conditioning), the N-step rollout, the TM-MF loss with its
// stop-gradients, denoising score matching, the discriminator loss, the GAN generator loss through the frozen
// teacher, and the VSD gradient's fixed point.
#pragma once
#include "distill_cpu.h"
#include "distill_run.h"   // the KD warm-up's teacher pairs and the run's defaults
#include "../lib/testing.h"
#include <unistd.h>

// a small random teacher: tiny preset, `layers` blocks, latent [3, 2, 8, 8] with 4x4 patches (8 tokens)
static void tmdt_setup(StudentConfig* sc, WanGrid* g, int layers, int H, int fusion) {
    char err[ST_ERRLEN];
    wan_preset(&sc->wan, "tiny", err);
    sc->wan.num_layers = layers; sc->wan.dim = 32; sc->wan.num_heads = 2; sc->wan.ffn_dim = 48; sc->wan.freq_dim = 32;
    sc->head_blocks = H; sc->fusion = fusion; sc->fuse_ffn_dim = 40;
    wan_grid(g, &sc->wan, 3, 2, 8, 8, err);
}

static void tmdt_random_teacher(const WanConfig* c, double* buf, uint64_t seed) {
    Rng r = rng_make(seed);
    WanTensor* tl = (WanTensor*)malloc(sizeof(WanTensor) * WAN_MAX_TENSORS);
    int nt = wan_layout(c, tl, NULL, NULL, NULL);
    for (int i = 0; i < nt; i++) {
        double std = strstr(tl[i].name, "modulation") ? 0.3
                     : tl[i].ndim == 1                ? 0.1
                                                      : 1.0 / sqrt((double)(tl[i].numel / tl[i].shape[0]));
        double mean = strstr(tl[i].name, "norm") && strstr(tl[i].name, "weight") ? 1 : 0;
        for (size_t k = 0; k < tl[i].numel; k++) buf[tl[i].offset + k] = mean + std * rng_normal(&r);
    }
    free(tl);
}

// makes every zero-initialised extra non-zero, so gradient checks exercise every path
static void tmdt_perturb_extras(const StudentConfig* sc, double* buf, uint64_t seed, double std) {
    size_t nw = wan_num_params(&sc->wan), nx; student_extra_layout(sc, NULL, NULL, NULL, &nx);
    Rng r = rng_make(seed);
    for (size_t i = 0; i < nx; i++) buf[nw + i] += std * rng_normal(&r);
}

static void test_student_init(void) {
    printf("\n[tmd] the decoupled student equals the teacher at initialisation\n");
    for (int fusion = 0; fusion < 2; fusion++) {
        StudentConfig sc; WanGrid g; tmdt_setup(&sc, &g, 3, 1, fusion);
        size_t nw = wan_num_params(&sc.wan), ns = student_num_params(&sc);
        double* tb = (double*)calloc(nw, sizeof(double)); double* sb = (double*)calloc(ns, sizeof(double));
        tmdt_random_teacher(&sc.wan, tb, 3);
        student_init(&sc, sb, tb, 4);
        WanParams T; wan_carve(&sc.wan, &T, tb);
        StudentParams S; student_carve(&sc, &S, sb);
        Rng r = rng_make(5);
        size_t n = (size_t)3 * 2 * 8 * 8;
        double* x = (double*)malloc(sizeof(double) * n);
        double* y = (double*)malloc(sizeof(double) * n);
        double ctx[4 * 32]; for (int i = 0; i < 4 * 32; i++) ctx[i] = rng_normal(&r);
        for (size_t i = 0; i < n; i++) { x[i] = rng_normal(&r); y[i] = rng_normal(&r); }
        double t = 0.731;
        WanAct ta; wan_act_init(&ta, &sc.wan, &g); wan_forward(&ta, &T, x, 1000 * t, ctx, 4);
        WanAct bb; wan_act_init(&bb, &sc.wan, &g);
        const double* m = student_backbone_forward(&bb, &S, &sc, x, t, ctx, 4);
        HeadAct h; head_act_init(&h, &sc, &g);
        head_forward(&h, &S, &sc, &g, m, bb.text.c, bb.rope, y, t, t);   // s = r = t, any inner state y
        double maxd = 0, maxv = 0;
        for (size_t i = 0; i < n; i++) {
            maxd = fmax(maxd, fabs(h.out[i] - ta.out[i]));
            maxv = fmax(maxv, fabs(ta.out[i]));
        }
        printf("  %s fusion: head(y_s, s=t, r=t; m(x_t, t)) vs teacher v(x_t, t): max diff %.3e (max |v| %.3f)\n",
               fusion ? "concat" : "gated", maxd, maxv);
        if (fusion == FUSION_GATED) EXPECT(maxd == 0, "gated student differs from the teacher by %.3e at init", maxd);
        else
            EXPECT(maxd > 0 && maxd < 0.1 * maxv,
                   "concat student at init: diff %.3e should be small but non-zero (0.01-scale y half)", maxd);
        // and a different y changes nothing for gated (q = 0 at init), something for concat
        head_act_free(&h); wan_act_free(&bb); wan_act_free(&ta); free(tb); free(sb); free(x); free(y);
    }
}

static void test_inner_step_and_nfe(void) {
    printf("\n[tmd] inner step sign, grids, effective NFE (Eq. 16)\n");
    // a one-step inner flow from s = 1 to r = 0 returns head: y_0 = y1 − 1·(y1 − head) = head. With s_N = 0.999 the
    // rollout gives 0.001·y1 + 0.999·head; check the implemented rollout against that.
    StudentConfig sc; WanGrid g; tmdt_setup(&sc, &g, 2, 1, FUSION_GATED);
    size_t nw = wan_num_params(&sc.wan), ns = student_num_params(&sc);
    double* tb = (double*)calloc(nw, sizeof(double)); double* sb = (double*)calloc(ns, sizeof(double));
    tmdt_random_teacher(&sc.wan, tb, 8); student_init(&sc, sb, tb, 9); tmdt_perturb_extras(&sc, sb, 10, 0.2);
    StudentParams S; student_carve(&sc, &S, sb);
    Rng r = rng_make(11);
    size_t n = (size_t)3 * 2 * 8 * 8;
    double* x = (double*)malloc(sizeof(double) * n);
    double* y1 = (double*)malloc(sizeof(double) * n);
    for (size_t i = 0; i < n; i++) { x[i] = rng_normal(&r); y1[i] = rng_normal(&r); }
    WanAct bb; wan_act_init(&bb, &sc.wan, &g);
    const double* m = student_backbone_forward(&bb, &S, &sc, x, 0.5, NULL, 0);
    Rollout ro; rollout_init(&ro, &sc, &g, 1, 10);
    const double* yhat = rollout_forward(&ro, &S, &sc, &g, m, bb.text.c, bb.rope, y1);
    double maxd = 0;
    for (size_t i = 0; i < n; i++) maxd = fmax(maxd, fabs(yhat[i] - (0.001 * y1[i] + 0.999 * ro.steps[0].out[i])));
    printf("  N=1 rollout: |y_hat - (0.001 y1 + 0.999 head)| max %.2e (s grid %.3f -> %.3f)\n", maxd, ro.s[1], ro.s[0]);
    EXPECT(maxd < 1e-14 && ro.s[1] == 0.999 && ro.s[0] == 0, "inner step: %.3e", maxd);
    rollout_free(&ro);
    double t[3]; outer_grid(t, 2, 10);
    printf("  outer grid M=2, shift 10: %.4f %.4f %.4f\n", t[0], t[1], t[2]);
    EXPECT(fabs(t[1] - time_shift(0.4995, 10)) < 1e-12 && t[2] == 0.999 && t[0] == 0, "outer grid");
    double e1 = effective_nfe(2, 2, 5, 30), e2 = effective_nfe(1, 4, 5, 40), e3 = effective_nfe(1, 2, 5, 30);
    printf("  effective NFE: M2 N2 H5 L30 = %.3f, M1 N4 H5 L40 = %.3f, M1 N2 H5 L30 = %.3f\n", e1, e2, e3);
    EXPECT(fabs(e1 - 7.0 / 3.0) < 1e-12 && fabs(e2 - 1.375) < 1e-12 && fabs(e3 - 7.0 / 6.0) < 1e-12, "effective NFE");
    wan_act_free(&bb); free(tb); free(sb); free(x); free(y1);
}

// ---- flow head gradient check: loss = Σ head_θ(y_s, s, r; m)·gout

typedef struct {
    const StudentConfig* sc;
    const WanGrid* g;
    StudentParams* S;
    HeadAct* h;
    double *m, *c, *rope, *y, *gout;
    double s, r;
    size_t n;
} HeadCase;
static double head_loss(void* p) {
    HeadCase* k = (HeadCase*)p;
    head_forward(k->h, k->S, k->sc, k->g, k->m, k->c, k->rope, k->y, k->s, k->r);
    double l = 0; for (size_t i = 0; i < k->n; i++) l += k->h->out[i] * k->gout[i];
    return l;
}

static void check_param_tensors(const char* prefix, const StudentConfig* sc, double* buf, double* gbuf, LossFn f,
                                void* ctx, const char* const* names, int n_names, int per) {
    WanTensor* tl = (WanTensor*)malloc(sizeof(WanTensor) * WAN_MAX_TENSORS);
    int nt = wan_layout(&sc->wan, tl, NULL, NULL, NULL);
    size_t nw = wan_num_params(&sc->wan);
    int ne = student_extra_layout(sc, tl + nt, NULL, NULL, NULL);
    for (int i = nt; i < nt + ne; i++) tl[i].offset += nw;
    for (int i = 0; i < nt + ne; i++) {
        int want = names == NULL;
        for (int j = 0; j < n_names && !want; j++) want = strstr(tl[i].name, names[j]) != NULL;
        if (!want) continue;
        char nm[160]; snprintf(nm, sizeof(nm), "%s %s", prefix, tl[i].name);
        gradcheck(nm, buf + tl[i].offset, (long)tl[i].numel, gbuf + tl[i].offset, f, ctx, per);
    }
    free(tl);
}

static void test_head_grads(void) {
    for (int fusion = 0; fusion < 2; fusion++) {
        StudentConfig sc; WanGrid g; tmdt_setup(&sc, &g, 3, 2, fusion);
        printf("\n[tmd gradcheck] flow head, %s fusion: head_θ(y_s, s, r; m) w.r.t. y_s, m, context, every head and "
               "extra tensor\n",
               fusion ? "concat" : "gated");
        size_t nw = wan_num_params(&sc.wan), ns = student_num_params(&sc), LD = (size_t)g.L * sc.wan.dim,
               n = (size_t)3 * 2 * 8 * 8;
        double* tb = (double*)calloc(nw, sizeof(double));
        double* sb = (double*)calloc(ns, sizeof(double));
        double* gb = (double*)calloc(ns, sizeof(double));
        tmdt_random_teacher(&sc.wan, tb, 21); student_init(&sc, sb, tb, 22); tmdt_perturb_extras(&sc, sb, 23, 0.2);
        StudentParams S, dS; student_carve(&sc, &S, sb); student_carve(&sc, &dS, gb);
        Rng r = rng_make(24);
        WanAct bb; wan_act_init(&bb, &sc.wan, &g);
        double* x = (double*)malloc(sizeof(double) * n); for (size_t i = 0; i < n; i++) x[i] = rng_normal(&r);
        double ctx[3 * 32]; for (int i = 0; i < 3 * 32; i++) ctx[i] = rng_normal(&r);
        student_backbone_forward(&bb, &S, &sc, x, 0.6, ctx, 3);
        HeadAct h; head_act_init(&h, &sc, &g);
        HeadCase k = {&sc,
                      &g,
                      &S,
                      &h,
                      (double*)malloc(sizeof(double) * LD),
                      bb.text.c,
                      bb.rope,
                      (double*)malloc(sizeof(double) * n),
                      (double*)malloc(sizeof(double) * n),
                      0.83,
                      0.41,
                      n};
        memcpy(k.m, wan_xs(&bb, sc.wan.num_layers - sc.head_blocks), sizeof(double) * LD);
        for (size_t i = 0; i < n; i++) { k.y[i] = rng_normal(&r); k.gout[i] = rng_normal(&r); }
        head_loss(&k);
        double* dm = (double*)calloc(LD, sizeof(double));
        double* dc = (double*)calloc((size_t)sc.wan.text_len * sc.wan.dim, sizeof(double));
        double* dy = (double*)calloc(n, sizeof(double));
        head_backward(&dS, dm, dc, dy, k.gout, &h, &S, &sc, &g, k.c, k.rope);
        gradcheck("head d(y_s)", k.y, (long)n, dy, head_loss, &k, 16);
        gradcheck("head d(m)", k.m, (long)LD, dm, head_loss, &k, 16);
        gradcheck("head d(text context c)", k.c, (long)sc.wan.text_len * sc.wan.dim, dc, head_loss, &k, 16);
        const char* names[] = {"flow_head.", "patch_embedding",     "time_embedding", "time_projection",
                               "blocks.1.",  "blocks.2.modulation", "blocks.2.ffn.0", "head."};
        check_param_tensors("head", &sc, sb, gb, head_loss, &k, names, 8, 6);
        // the backbone's blocks receive nothing from the head
        double z = 0;
        for (size_t i = 0; i < (size_t)sc.wan.dim * sc.wan.dim; i++) z += fabs(dS.w.blocks[0].self_attn_q_weight[i]);
        EXPECT(z == 0, "head backward touched a backbone block");
        head_act_free(&h); wan_act_free(&bb);
        free(tb); free(sb); free(gb); free(x); free(k.m); free(k.y); free(k.gout); free(dm); free(dc); free(dy);
    }
}

// ---- generator (backbone + N-step rollout) gradient check: loss = Σ x̂·gout

typedef struct { Generator* G; const WanGrid* g; double *xt, *ctx, *y1, *x1, *gout; int Lt; double t; } GenCase;
static double gen_loss(void* p) {
    GenCase* k = (GenCase*)p;
    const double* xh = generator_forward(k->G, k->g, k->xt, k->t, k->ctx, k->Lt, k->y1, k->x1);
    double l = 0; for (size_t i = 0; i < k->G->numel; i++) l += xh[i] * k->gout[i];
    return l;
}

static void test_rollout_grads(void) {
    StudentConfig sc; WanGrid g; tmdt_setup(&sc, &g, 3, 2, FUSION_GATED);
    int N = 3;
    printf("\n[tmd gradcheck] backpropagation through the %d-step rollout: x̂ = x_t − t·INNERFLOW(m(x_t, t))"
           " w.r.t. x_t and parameters\n", N);
    size_t nw = wan_num_params(&sc.wan), ns = student_num_params(&sc), n = (size_t)3 * 2 * 8 * 8;
    double* tb = (double*)calloc(nw, sizeof(double));
    double* sb = (double*)calloc(ns, sizeof(double));
    double* gb = (double*)calloc(ns, sizeof(double));
    tmdt_random_teacher(&sc.wan, tb, 31); student_init(&sc, sb, tb, 32); tmdt_perturb_extras(&sc, sb, 33, 0.2);
    StudentParams S, dS; student_carve(&sc, &S, sb); student_carve(&sc, &dS, gb);
    Generator G; generator_init(&G, 1, &sc, &g, N, 10); G.S = &S;
    Rng r = rng_make(34);
    GenCase k = {&G,
                 &g,
                 (double*)malloc(sizeof(double) * n),
                 (double*)malloc(sizeof(double) * 3 * 32),
                 (double*)malloc(sizeof(double) * n),
                 (double*)malloc(sizeof(double) * n),
                 (double*)malloc(sizeof(double) * n),
                 3,
                 0.9};
    for (size_t i = 0; i < n; i++) {
        k.xt[i] = rng_normal(&r);
        k.y1[i] = rng_normal(&r);
        k.x1[i] = rng_normal(&r);
        k.gout[i] = rng_normal(&r);
    }
    for (int i = 0; i < 96; i++) k.ctx[i] = rng_normal(&r);
    gen_loss(&k);
    generator_backward(&G, &dS, NULL, &g, k.gout);
    const char* names[] = {"flow_head.",
                           "blocks.0.self_attn.q.weight",
                           "blocks.1.modulation",
                           "blocks.2.cross_attn.k.weight",
                           "time_embedding.0.weight",
                           "patch_embedding.weight",
                           "text_embedding.0.weight",
                           "head.head.weight"};
    check_param_tensors("rollout", &sc, sb, gb, gen_loss, &k, names, 8, 6);
    // a rollout that drops the gradient through earlier inner steps must NOT pass the same check
    memset(gb, 0, sizeof(double) * ns);
    G.rollout_grad = 0; gen_loss(&k); generator_backward(&G, &dS, NULL, &g, k.gout); G.rollout_grad = 1;
    WanTensor tl[16]; int nt = wan_layout(&sc.wan, NULL, NULL, NULL, NULL); (void)nt;
    student_extra_layout(&sc, tl, NULL, NULL, NULL);
    size_t off = nw + tl[4].offset;  // flow_head.fusion.modulation
    double num[8], ana[8], worst = 0, maxb = 0;
    for (int i = 0; i < 8; i++) {
        size_t j = off + (size_t)i * 7; double x0 = sb[j];
        sb[j] = x0 + GC_H; double fp = gen_loss(&k); sb[j] = x0 - GC_H; double fm = gen_loss(&k); sb[j] = x0;
        num[i] = (fp - fm) / (2 * GC_H); ana[i] = gb[j]; maxb = fmax(maxb, fabs(num[i]));
    }
    for (int i = 0; i < 8; i++) worst = fmax(worst, fabs(num[i] - ana[i]) / fmax(fabs(num[i]), 1e-3 * maxb));
    printf("  last-step-only gradient vs full rollout finite differences: max rel %.2e (must be far from 0)\n", worst);
    EXPECT(worst > 1e-2, "truncated rollout gradient agreed with the full one (%.2e): the check cannot tell them apart",
           worst);
    generator_free(&G);
    free(tb); free(sb); free(gb); free(k.xt); free(k.ctx); free(k.y1); free(k.x1); free(k.gout);
}

// ---- TM-MF with frozen targets: the analytic gradient is that of ‖u_θ − û‖² / (n0 + c) with û, n0 held fixed

typedef struct {
    const StudentConfig* sc;
    const WanGrid* g;
    StudentParams *S, *dS;
    TmmfWork* w;
    double *x, *ctx;
    TmmfConfig cf;
    uint64_t seed;
} TmmfCase;
static double tmmf_loss(void* p) {
    TmmfCase* k = (TmmfCase*)p; Rng r = rng_make(k->seed);
    return tmmf_sample(NULL, k->S, k->sc, k->g, k->w, k->x, k->ctx, 3, NULL, 0, &k->cf, &r, 1).loss;
}

static void test_tmmf_grads(void) {
    StudentConfig sc; WanGrid g; tmdt_setup(&sc, &g, 3, 2, FUSION_GATED);
    printf("\n[tmd gradcheck] TM-MF loss with stop-gradients on the target and the normaliser (guidance 3, r < s, JVP "
           "by central difference)\n");
    size_t nw = wan_num_params(&sc.wan), ns = student_num_params(&sc), n = (size_t)3 * 2 * 8 * 8;
    double* tb = (double*)calloc(nw, sizeof(double));
    double* sb = (double*)calloc(ns, sizeof(double));
    double* gb = (double*)calloc(ns, sizeof(double));
    tmdt_random_teacher(&sc.wan, tb, 41); student_init(&sc, sb, tb, 42); tmdt_perturb_extras(&sc, sb, 43, 0.2);
    StudentParams S, dS; student_carve(&sc, &S, sb); student_carve(&sc, &dS, gb);
    TmmfWork w; tmmf_work_init(&w, &sc, &g);
    TmmfCase k = {&sc,
                  &g,
                  &S,
                  &dS,
                  &w,
                  (double*)malloc(sizeof(double) * n),
                  (double*)malloc(sizeof(double) * 96),
                  tmmf_defaults(2),
                  0};
    k.cf.p_tm = 0; k.cf.p_drop = 0; k.cf.c_norm = 1;
    Rng r = rng_make(44);
    for (size_t i = 0; i < n; i++) k.x[i] = rng_normal(&r);
    for (int i = 0; i < 96; i++) k.ctx[i] = rng_normal(&r);
    // pick a seed whose (s, r) has r < s, so the JVP term is live
    TmmfStats st; memset(&st, 0, sizeof(st));
    for (k.seed = 100; k.seed < 200; k.seed++) {
        w.have_target = 0;
        w.keep_target = 0;
        Rng rr = rng_make(k.seed);
        st = tmmf_sample(NULL, &S, &sc, &g, &w, k.x, k.ctx, 3, NULL, 0, &k.cf, &rr, 1);
        if (st.r < st.s - 0.05) break;
    }
    printf("  sample: t_i %.3f, s %.4f, r %.4f, loss %.4f, mse %.4f\n", st.t, st.s, st.r, st.loss, st.mse);
    EXPECT(st.r < st.s, "no seed gave r < s");
    w.have_target = 0; w.keep_target = 1;
    Rng rr = rng_make(k.seed);
    tmmf_sample(&dS, &S, &sc, &g, &w, k.x, k.ctx, 3, NULL, 0, &k.cf, &rr,
                1); // computes and freezes û and the normaliser
    const char* names[] = {"flow_head.",          "blocks.0.self_attn.v.weight", "blocks.1.ffn.2.weight",
                           "blocks.2.modulation", "time_embedding.2.weight",     "text_embedding.2.weight",
                           "head.modulation"};
    // the normalised loss is O(1) while single-weight gradients are ~1e-6: a larger step keeps the roundoff
    // (1e-16/h) below them, and the truncation error (h^2 times the third derivative) stays ~1e-10
    gc_h = 1e-3;
    check_param_tensors("tmmf", &sc, sb, gb, tmmf_loss, &k, names, 7, 6);
    gc_h = GC_H;
    // the stop-gradient matters: the gradient of the un-frozen loss differs
    w.have_target = 0; w.keep_target = 0;
    size_t j = wan_num_params(&sc.wan) + 5;  // an entry of flow_head.delta_time_embedding.0.weight
    double x0 = sb[j];
    sb[j] = x0 + GC_H; double fp = tmmf_loss(&k); sb[j] = x0 - GC_H; double fm = tmmf_loss(&k); sb[j] = x0;
    double full = (fp - fm) / (2 * GC_H);
    printf("  d loss / d %s[5]: with stop-gradients %.6e, differentiating through target and normaliser %.6e\n",
           "delta_time_embedding.0.weight", gb[j], full);
    EXPECT(fabs(full - gb[j]) > 1e-6 * fabs(gb[j]), "stop-gradient made no difference");
    tmmf_work_free(&w);
    free(tb); free(sb); free(gb); free(k.x); free(k.ctx);
}

// ---- DMD2-v critics and the GAN generator path

typedef struct {
    Generator* G;
    WanParams *T, *F;
    DiscParams* D;
    DiscConfig* dc;
    DmdWork* w;
    const WanGrid* g;
    double *x, *ctx;
    DmdConfig cf;
    int which;
} CriticCase;
static double critic_loss(void* p) {
    CriticCase* k = (CriticCase*)p; Rng r = rng_make(77);
    // the discriminator part runs only when a gradient target is given: hand it a throwaway one
    DiscParams scratch;
    size_t nd = disc_carve(k->dc, NULL, NULL);
    double* sbuf = (double*)calloc(nd, sizeof(double));
    disc_carve(k->dc, &scratch, sbuf);
    DmdStats st =
        dmd_critic_sample(k->G, NULL, &scratch, k->w, k->T, k->F, k->D, k->dc, k->g, k->x, k->ctx, 3, &k->cf, &r, 1);
    free(sbuf);
    return k->which == 0 ? st.dsm : st.gan_d;
}

typedef struct {
    WanAct* ta;
    WanParams* T;
    DiscParams* D;
    DiscConfig* dc;
    DiscAct* da;
    double* z;
    double* ctx;
    int top;
} GanCase;
static double gan_gen_loss(void* p) {
    GanCase* k = (GanCase*)p;
    wan_forward_blocks(k->ta, k->T, k->z, 700.0, k->ctx, 3, k->top);
    disc_forward(k->da, k->D, k->dc, k->ta);
    double l = 0; for (int h = 0; h < k->dc->n_heads; h++) l += softplus(-k->da->logit[h]) / k->dc->n_heads;
    return l;
}

static void check_critic_noise(Generator* G, DmdWork* w, WanParams* T, WanParams* F, DiscParams* D, DiscConfig* dc,
                               const WanGrid* g, const double* x, const double* ctx);
static void test_dmd_grads(void) {
    StudentConfig sc; WanGrid g; tmdt_setup(&sc, &g, 3, 1, FUSION_GATED);
    printf("\n[tmd gradcheck] DMD2-v: denoising score matching (fake score), discriminator loss (Conv3D heads), GAN "
           "generator loss through the frozen teacher\n");
    size_t nw = wan_num_params(&sc.wan), ns = student_num_params(&sc), n = (size_t)3 * 2 * 8 * 8;
    double* tb = (double*)calloc(nw, sizeof(double));
    double* fb = (double*)calloc(nw, sizeof(double));
    double* gfb = (double*)calloc(nw, sizeof(double));
    double* sb = (double*)calloc(ns, sizeof(double));
    tmdt_random_teacher(&sc.wan, tb, 51); memcpy(fb, tb, sizeof(double) * nw);
    for (size_t i = 0; i < nw; i++) fb[i] += 0.05 * sin(1.7 * i);   // the fake score has drifted from the teacher
    student_init(&sc, sb, tb, 52); tmdt_perturb_extras(&sc, sb, 53, 0.2);
    WanParams T, F, dF; wan_carve(&sc.wan, &T, tb); wan_carve(&sc.wan, &F, fb); wan_carve(&sc.wan, &dF, gfb);
    StudentParams S; student_carve(&sc, &S, sb);
    DiscConfig dc = disc_config(&sc.wan, 4, 4, 8, 8, 6); dc.n_heads = 2; dc.layers[0] = 0; dc.layers[1] = 2;
    size_t nd = disc_carve(&dc, NULL, NULL);
    double* db = (double*)calloc(nd, sizeof(double)); double* gdb = (double*)calloc(nd, sizeof(double));
    disc_init(&dc, db, 54);
    Rng r = rng_make(55); for (size_t i = 0; i < nd; i++) db[i] += 0.05 * rng_normal(&r);
    DiscParams D, dD; disc_carve(&dc, &D, db); disc_carve(&dc, &dD, gdb);
    Generator G; generator_init(&G, 1, &sc, &g, 2, 10); G.S = &S;
    DmdWork w; dmd_work_init(&w, &sc.wan, &g, &dc);
    CriticCase k = {&G,
                    &T,
                    &F,
                    &D,
                    &dc,
                    &w,
                    &g,
                    (double*)malloc(sizeof(double) * n),
                    (double*)malloc(sizeof(double) * 96),
                    dmd_defaults(2),
                    0};
    for (size_t i = 0; i < n; i++) k.x[i] = rng_normal(&r);
    for (int i = 0; i < 96; i++) k.ctx[i] = rng_normal(&r);
    Rng r1 = rng_make(77);
    dmd_critic_sample(&G, &dF, &dD, &w, &T, &F, &D, &dc, &g, k.x, k.ctx, 3, &k.cf, &r1, 1);
    WanTensor* tl = (WanTensor*)malloc(sizeof(WanTensor) * WAN_MAX_TENSORS);
    int nt = wan_layout(&sc.wan, tl, NULL, NULL, NULL);
    // the DSM loss is O(1) next to gradient entries as small as 1e-5 (norm3): at h = 1e-5 the roundoff 1e-16/h
    // reaches 1e-5 relative on them (measured: it grows 10x at h = 1e-6 and drops 20x at h = 1e-4, so it is
    // roundoff, not truncation); h = 1e-4 keeps the truncation error (h^2 times the third derivative) near 1e-11
    k.which = 0; gc_h = 1e-4;
    for (int i = 0; i < nt; i++) {
        if (!strstr(tl[i].name, "blocks.1.") && !strstr(tl[i].name, "head.") &&
            !strstr(tl[i].name, "time_projection") && !strstr(tl[i].name, "patch_embedding"))
            continue;
        char nm[160]; snprintf(nm, sizeof(nm), "dsm %s", tl[i].name);
        gradcheck(nm, fb + tl[i].offset, (long)tl[i].numel, gfb + tl[i].offset, critic_loss, &k, 5);
    }
    k.which = 1; gc_h = GC_H;
    for (int h = 0; h < dc.n_heads; h++) {   // every tensor of both heads: four (conv, GroupNorm) pairs and the MLP
        char nm[96];
        for (int c = 0; c < DISC_CONVS; c++) {
            long nw_ =
                (long)dc.width[c] * disc_conv_in(&dc, c) * DISC_KERNEL[c][0] * DISC_KERNEL[c][1] * DISC_KERNEL[c][2];
            snprintf(nm, sizeof(nm), "disc head %d conv %d weight", h, c);
            gradcheck(nm, D.conv_w[h][c], nw_, dD.conv_w[h][c], critic_loss, &k, 8);
            snprintf(nm, sizeof(nm), "disc head %d conv %d bias", h, c);
            gradcheck(nm, D.conv_b[h][c], dc.width[c], dD.conv_b[h][c], critic_loss, &k, 4);
            snprintf(nm, sizeof(nm), "disc head %d groupnorm %d weight, bias", h, c);
            gradcheck(nm, D.norm_w[h][c], 2L * dc.width[c], dD.norm_w[h][c], critic_loss, &k, 8);
        }
        snprintf(nm, sizeof(nm), "disc head %d mlp", h);
        gradcheck(nm, D.mlp_0_w[h], (long)dc.hidden * dc.width[3] + 2 * dc.hidden + 1, dD.mlp_0_w[h], critic_loss, &k,
                  12);
    }
    // GAN generator loss: d/dz through the frozen teacher (features at blocks 0 and 2)
    WanAct ta; wan_act_init(&ta, &sc.wan, &g);
    DiscAct da; disc_act_init(&da, &dc, &g);
    GanCase gk = {&ta, &T, &D, &dc, &da, (double*)malloc(sizeof(double) * n), k.ctx, 3};
    for (size_t i = 0; i < n; i++) gk.z[i] = rng_normal(&r);
    gan_gen_loss(&gk);
    double dlogit[DISC_MAX_HEADS]; for (int h = 0; h < dc.n_heads; h++) dlogit[h] = -sigmoid(-da.logit[h]) / dc.n_heads;
    memset(w.dfeat_buf, 0, sizeof(double) * (size_t)(sc.wan.num_layers + 1) * g.L * sc.wan.dim);
    disc_backward(NULL, w.dfeat, dlogit, &da, &D, &dc, &ta);
    double* dz = (double*)calloc(n, sizeof(double));
    WanParams scratch; wan_carve(&sc.wan, &scratch, w.scratch_grad);
    wan_backward_blocks(&scratch, dz, NULL, NULL, 3, w.dfeat, NULL, &ta, &T);
    gradcheck("GAN generator loss d(x̂_t) through the teacher", gk.z, (long)n, dz, gan_gen_loss, &gk, 24);
    check_critic_noise(&G, &w, &T, &F, &D, &dc, &g, k.x, k.ctx);
    {   // the multiscale head in the critic step: train mode (dropout keyed by t), forward and backward with one mask
        DiscConfig mc = disc_config_multiscale(&sc.wan, 24, g.T, g.Hl, g.Wl); mc.n_heads = 2; mc.layers[0] = 0; mc.layers[1] = 2;
        size_t nm = disc_num_params(&mc);
        double* mb = (double*)calloc(nm, sizeof(double)); double* gmb = (double*)calloc(nm, sizeof(double));
        disc_init(&mc, mb, 56); for (size_t i = 0; i < nm; i++) mb[i] += 0.05 * rng_normal(&r);
        DiscParams M, dM; disc_carve(&mc, &M, mb); disc_carve(&mc, &dM, gmb);
        DmdWork wm; dmd_work_init(&wm, &sc.wan, &g, &mc);
        CriticCase km = k; km.D = &M; km.dc = &mc; km.w = &wm; km.which = 1;
        Rng r5 = rng_make(77);
        DmdStats sm = dmd_critic_sample(&G, NULL, &dM, &wm, &T, &F, &M, &mc, &g, k.x, k.ctx, 3, &k.cf, &r5, 1);
        int dropped = 0;   // over both heads, fake and real
        for (int q = 0; q < 4; q++)
            for (int j = 0; j < mc.hidden; j++) dropped += disc_dropout_factor(disc_dropout_key_for(sm.t_disc, q / 2), q % 2, j) == 0;
        printf("  multiscale head (scales 1, 2 on this grid) in the critic step: loss %.6f, %d of 4 x %d hidden units dropped "
               "(2 heads, fake and real); eval mode again after it: %s\n", sm.gan_d, dropped, mc.hidden,
               wm.dfake.dropout_key == 0 && wm.dreal.dropout_key == 0 ? "yes" : "no");
        EXPECT(dropped > 0, "no unit dropped: the gradient check below would not see the mask");
        EXPECT(wm.dfake.dropout_key == 0 && wm.dreal.dropout_key == 0, "the critic step left the heads in train mode");
        gradcheck("critic, multiscale head 0 scale 2 3x3x3 conv weight", M.conv_w[0][3], (long)disc_conv_numel(&mc, 3), dM.conv_w[0][3],
                  critic_loss, &km, 8);
        for (int h = 0; h < 2; h++)   // every entry of mlp.2's weight: a dropped unit's gradient is 0
            gradcheck(h ? "critic, multiscale head 1 mlp.2" : "critic, multiscale head 0 mlp.2", M.mlp_2_w[h], mc.hidden + 1, dM.mlp_2_w[h],
                      critic_loss, &km, 64);
        dmd_work_free(&wm); free(mb); free(gmb);
    }
    // VSD: when the fake score equals the teacher (and guidance is 1), the gradient on x̂ vanishes
    DmdConfig c1 = dmd_defaults(2); c1.cfg = 1; c1.gan_weight = 0;
    double* gsb = (double*)calloc(ns, sizeof(double)); StudentParams dS; student_carve(&sc, &dS, gsb);
    Rng r3 = rng_make(5);
    DmdStats st = dmd_student_sample(&G, &dS, NULL, &w, &T, &T, &D, &dc, &g, k.x, k.ctx, 3, NULL, 0, &c1, &r3, 1);
    double gmax = 0; for (size_t i = 0; i < ns; i++) gmax = fmax(gmax, fabs(gsb[i]));
    printf("  VSD with fake score = teacher, guidance 1: loss %.2e, max |student gradient| %.2e\n", st.vsd, gmax);
    EXPECT(st.vsd < 1e-24 && gmax < 1e-12,
           "VSD fixed point: loss %.3e, gradient %.3e (only rounding of v_u + (v_c - v_u) may remain)", st.vsd, gmax);
    Rng r4 = rng_make(5);
    st = dmd_student_sample(&G, &dS, NULL, &w, &T, &F, &D, &dc, &g, k.x, k.ctx, 3, NULL, 0, &c1, &r4, 1);
    gmax = 0; for (size_t i = 0; i < ns; i++) gmax = fmax(gmax, fabs(gsb[i]));
    printf("  VSD with a drifted fake score: loss %.2e, max |student gradient| %.2e\n", st.vsd, gmax);
    EXPECT(st.vsd > 0 && gmax > 0, "VSD gave no gradient with a drifted fake score");
    disc_act_free(&da); wan_act_free(&ta); dmd_work_free(&w); generator_free(&G);
    free(tl);
    free(tb);
    free(fb);
    free(gfb);
    free(sb);
    free(db);
    free(gdb);
    free(k.x);
    free(k.ctx);
    free(gk.z);
    free(dz);
    free(gsb);
}

// ---- KD warm-up: loss mean (x̂(noise) − x_teacher)² through a one-step student, TMD and the plain baseline

typedef struct { Generator* G; const WanGrid* g; double *noise, *target, *ctx; } KdCase;
static double kd_loss(void* p) {
    KdCase* k = (KdCase*)p; Rng r = rng_make(3);
    double* y1 = (double*)malloc(sizeof(double) * k->G->numel);
    for (size_t i = 0; i < k->G->numel; i++) y1[i] = rng_normal(&r);
    const double* xh = generator_forward(k->G, k->g, k->noise, 0.999, k->ctx, 3, y1, k->noise);
    double l = 0; for (size_t i = 0; i < k->G->numel; i++) { double e = xh[i] - k->target[i]; l += e * e; }
    free(y1);
    return l / k->G->numel;
}

static void test_kd_grads(void) {
    printf(
        "\n[tmd gradcheck] KD warm-up: mean (x̂ − x_teacher)² of a one-step student from pure noise (TMD and plain)\n");
    for (int tmd = 1; tmd >= 0; tmd--) {
        StudentConfig sc; WanGrid g; tmdt_setup(&sc, &g, 2, 1, FUSION_GATED);
        size_t nw = wan_num_params(&sc.wan), ns = student_num_params(&sc), n = (size_t)3 * 2 * 8 * 8;
        double* tb = (double*)calloc(nw, sizeof(double));
        double* sb = (double*)calloc(ns, sizeof(double));
        double* gb = (double*)calloc(ns, sizeof(double));
        tmdt_random_teacher(&sc.wan, tb, 61); student_init(&sc, sb, tb, 62); tmdt_perturb_extras(&sc, sb, 63, 0.2);
        if (!tmd) memcpy(sb, tb, sizeof(double) * nw);
        StudentParams S, dS; student_carve(&sc, &S, sb); student_carve(&sc, &dS, gb);
        WanParams P, dP; wan_carve(&sc.wan, &P, sb); wan_carve(&sc.wan, &dP, gb);
        Generator G; generator_init(&G, tmd, &sc, &g, 2, 10); G.S = &S; G.P = &P;
        Rng r = rng_make(64);
        KdCase k = {&G, &g, (double*)malloc(sizeof(double) * n), (double*)malloc(sizeof(double) * n),
                    (double*)malloc(sizeof(double) * 96)};
        for (size_t i = 0; i < n; i++) { k.noise[i] = rng_normal(&r); k.target[i] = 0.5 * rng_normal(&r); }
        for (int i = 0; i < 96; i++) k.ctx[i] = rng_normal(&r);
        Rng r3 = rng_make(3);
        double l0 = kd_sample(&G, tmd ? &dS : NULL, tmd ? NULL : &dP, &g, k.noise, k.target, k.ctx, 3, 0.999, &r3, 1);
        double l1 = kd_loss(&k);
        EXPECT(fabs(l0 - l1) < 1e-12, "kd_sample and the test disagree on the loss: %.6e vs %.6e", l0, l1);
        const char* names[] = {"blocks.0.ffn.0.weight", "blocks.1.modulation", "head.head.weight",
                               "flow_head.fusion.ffn.2.weight"};
        check_param_tensors(tmd ? "kd tmd" : "kd dmd2-v", &sc, sb, gb, kd_loss, &k, names, tmd ? 4 : 3, 6);
        generator_free(&G); free(tb); free(sb); free(gb); free(k.noise); free(k.target); free(k.ctx);
    }
}


// ---- the student at initialisation with s ≠ t (fix 9): head_θ(y_s, s, r; m(x_t, t)) equals a "mixed-time teacher"
// whose first L − H blocks run at t and whose last H blocks and output head run at s, for any y_s and r (gated
// fusion: exactly). So the student equals the teacher only at s = t; in a rollout from s_N = 0.999 at an outer time
// t < 0.999 the untrained head is the teacher re-timed to s, which is what Stage 1 starts from.
static void test_student_init_s_ne_t(void) {
    printf("\n[tmd] the student at initialisation with s != t: the teacher with its last H blocks re-timed to s\n");
    StudentConfig sc; WanGrid g; tmdt_setup(&sc, &g, 3, 2, FUSION_GATED);
    size_t nw = wan_num_params(&sc.wan), ns = student_num_params(&sc), n = (size_t)3 * 2 * 8 * 8,
           LD = (size_t)g.L * sc.wan.dim;
    double* tb = (double*)calloc(nw, sizeof(double)); double* sb = (double*)calloc(ns, sizeof(double));
    tmdt_random_teacher(&sc.wan, tb, 3); student_init(&sc, sb, tb, 4);
    WanParams T; wan_carve(&sc.wan, &T, tb);
    StudentParams S; student_carve(&sc, &S, sb);
    Rng r = rng_make(6);
    double* x = (double*)malloc(sizeof(double) * n);
    double* y = (double*)malloc(sizeof(double) * n);
    double* y2 = (double*)malloc(sizeof(double) * n);
    double ctx[4 * 32]; for (int i = 0; i < 4 * 32; i++) ctx[i] = rng_normal(&r);
    for (size_t i = 0; i < n; i++) { x[i] = rng_normal(&r); y[i] = rng_normal(&r); y2[i] = rng_normal(&r); }
    double t = 0.62, s = 0.93, r1 = 0.41, r2 = 0.0;
    int D = sc.wan.dim, H = sc.head_blocks, Lb = sc.wan.num_layers - H;
    // the mixed-time teacher, built from the teacher's own layers: blocks 0..Lb−1 at t, then e(s) for the rest
    WanAct ta; wan_act_init(&ta, &sc.wan, &g);
    wan_forward_blocks(&ta, &T, x, 1000 * t, ctx, 4, Lb);
    HeadAct mix; head_act_init(&mix, &sc, &g);
    time_mlp_forward(mix.e_s, mix.sin_s, mix.h1_s, mix.a1_s, T.time_embedding_0_weight, T.time_embedding_0_bias,
                     T.time_embedding_2_weight, T.time_embedding_2_bias, 1000 * s, sc.wan.freq_dim, D);
    silu_forward(mix.se_h, mix.e_s, D);
    linear_forward(mix.e0_h, mix.se_h, T.time_projection_1_weight, T.time_projection_1_bias, 1, D, 6 * D);
    memcpy(mix.xs, wan_xs(&ta, Lb), sizeof(double) * LD);
    for (int k = 0; k < H; k++)
        wan_block_forward(mix.xs + (size_t)(k + 1) * LD, &mix.blocks[k], &T.blocks[Lb + k], &sc.wan,
                          mix.xs + (size_t)k * LD, mix.e0_h, ta.text.c, ta.rope, g.L);
    wan_head_forward(mix.out, &mix.head, &T, &sc.wan, &g, mix.xs + (size_t)H * LD, mix.e_s);
    // the student's head at (y, s, r1) and (y2, s, r2), and the teacher at t
    WanAct bb; wan_act_init(&bb, &sc.wan, &g);
    const double* m = student_backbone_forward(&bb, &S, &sc, x, t, ctx, 4);
    HeadAct h; head_act_init(&h, &sc, &g);
    double* out1 = (double*)malloc(sizeof(double) * n);
    head_forward(&h, &S, &sc, &g, m, bb.text.c, bb.rope, y, s, r1); memcpy(out1, h.out, sizeof(double) * n);
    head_forward(&h, &S, &sc, &g, m, bb.text.c, bb.rope, y2, s, r2);
    WanAct tt; wan_act_init(&tt, &sc.wan, &g); wan_forward(&tt, &T, x, 1000 * t, ctx, 4);
    double dmix = 0, dyr = 0, dteach = 0, vmax = 0;
    for (size_t i = 0; i < n; i++) {
        dmix = fmax(dmix, fabs(out1[i] - mix.out[i])); dyr = fmax(dyr, fabs(out1[i] - h.out[i]));
        dteach = fmax(dteach, fabs(out1[i] - tt.out[i])); vmax = fmax(vmax, fabs(tt.out[i]));
    }
    printf("  t %.2f, s %.2f: head vs mixed-time teacher max diff %.2e; (y, r=%.2f) vs (y', r=%.2f) %.2e; vs teacher "
           "v(x_t, t) %.3f (max |v| %.3f)\n",
           t, s, dmix, r1, r2, dyr, dteach, vmax);
    EXPECT(dmix == 0, "the gated student at init differs from the mixed-time teacher by %.3e", dmix);
    EXPECT(dyr == 0, "at init the head depends on y_s or r (%.3e): the fusion's gate or e_Δ is not zero", dyr);
    EXPECT(dteach > 1e-3 * vmax,
           "at s != t the head should differ from the teacher at t (%.3e): the test cannot see the time", dteach);
    head_act_free(&h); head_act_free(&mix); wan_act_free(&bb); wan_act_free(&ta); wan_act_free(&tt);
    free(tb); free(sb); free(x); free(y); free(y2); free(out1);
}

// ---- times (fix 5): clamped after the shift; the outer grid as FastGen's Wan configs list it
static void test_time_grids(void) {
    printf("\n[tmd] sampled times are clamped to [0.001, 0.999] after the shift; outer grids match FastGen's Wan "
           "t_lists\n");
    Rng r = rng_make(8);
    double lo = 1, hi = 0; int at_top = 0;
    for (int i = 0; i < 20000; i++) {
        double t = shifted_time(&r, 5);
        lo = fmin(lo, t);
        hi = fmax(hi, t);
        at_top += t == T_MAX;
    }
    printf("  shift_5(U(0.001, 0.999)) over 20000 draws: min %.5f max %.5f, %d clamped to 0.999 (unclamped "
           "shift_5(0.999) = %.5f)\n",
           lo, hi, at_top, time_shift(0.999, 5));
    EXPECT(lo >= T_MIN && hi <= T_MAX, "a sampled time left [0.001, 0.999]: min %.6f max %.6f", lo, hi);
    EXPECT(at_top > 0, "no draw reached the clamp: the test cannot tell clamped from unclamped");
    // FastGen's configs list t_list values cut to three decimals: WanT2V 1.3B 2-step [0.999, 0.908, 0] (γ 10),
    // 4-step [0.999, 0.937, 0.833, 0.624, 0] (γ 5), 14B 2-step [0.999, 0.833, 0] (γ 5)
    struct {
        int M;
        double gamma;
        double list[5];
    } cases[] = {{2, 10, {0, 0.908, 0.999}}, {4, 5, {0, 0.624, 0.833, 0.937, 0.999}}, {2, 5, {0, 0.833, 0.999}}};
    for (int c = 0; c < 3; c++) {
        double t[65]; outer_grid(t, cases[c].M, cases[c].gamma);
        double worst = 0;
        for (int i = 0; i <= cases[c].M; i++) {
            double d = t[i] - cases[c].list[i];
            if (d < 0 || d >= 1e-3) worst = fmax(worst, fabs(d) + 1);
            else worst = fmax(worst, d);
        }
        printf("  M %d, shift %g: t =", cases[c].M, cases[c].gamma);
        for (int i = cases[c].M; i >= 0; i--) printf(" %.5f", t[i]);
        printf("  (FastGen, cut to 3 decimals: ");
        for (int i = cases[c].M; i >= 0; i--) printf("%s%.3f", i == cases[c].M ? "" : " ", cases[c].list[i]);
        printf(")\n");
        EXPECT(worst < 1e-3, "outer grid M %d, shift %g does not cut to FastGen's list", cases[c].M, cases[c].gamma);
    }
    EXPECT(outer_shift_default(1) == 10 && outer_shift_default(2) == 10 && outer_shift_default(3) == 10 &&
               outer_shift_default(4) == 5 && outer_shift_default(8) == 5,
           "default t_student shift: 10 for M <= 3 (Table 7; Table 11 at 3 steps), 5 for M >= 4 (App. B.6)");
}

// ---- the TM-MF target's fixed point (fix 1), in closed form. Inner data y ~ N(μ, σ²I), noise y1 ~ N(0, I),
// y_s = (1 − s)·y + s·y1: the marginal velocity is linear,
//   v(y, s) = a(s)·(y − (1 − s)μ) − μ,  a = (s − (1 − s)σ²)/V(s),  V(s) = (1 − s)²σ² + s²,
// and its flow map is Φ_{s→r}(y) = (1 − r)μ + sqrt(V(r)/V(s))·(y − (1 − s)μ), so the average velocity
// u(y, s, r) = (y − Φ_{s→r}(y))/(s − r) is exact. With conditional mean μ_c and unconditional mean μ_u, the guided
// field w·v_c + (1 − w)·v_u is the field of mean μ_g = w·μ_c + (1 − w)·μ_u (v is linear in μ). Its exact average
// velocity must be a fixed point of the implemented target (up to the O(δ²) of the central difference), fed the
// conditional velocity v_c (the expectation of y1 − y given y_s: the target is linear in v).
typedef struct { int n; double sigma; const double *mu_g, *mu_u; } GaussField;
static double gauss_V(double sigma, double s) { return (1 - s) * (1 - s) * sigma * sigma + s * s; }
static void gauss_velocity(double* v, const double* y, const double* mu, double sigma, double s, int n) {
    double a = (s - (1 - s) * sigma * sigma) / gauss_V(sigma, s);
    for (int i = 0; i < n; i++) v[i] = a * (y[i] - (1 - s) * mu[i]) - mu[i];
}
static void gauss_avg_velocity(double* u, const double* y, const double* mu, double sigma, double s, double r, int n) {
    if (r == s) { gauss_velocity(u, y, mu, sigma, s, n); return; }
    double k = sqrt(gauss_V(sigma, r) / gauss_V(sigma, s));
    for (int i = 0; i < n; i++) u[i] = (y[i] - ((1 - r) * mu[i] + k * (y[i] - (1 - s) * mu[i]))) / (s - r);
}
static void gauss_cond(void* p, double* u, const double* y, double s, double r) {
    GaussField* f = (GaussField*)p;
    gauss_avg_velocity(u, y, f->mu_g, f->sigma, s, r, f->n);
}
static void gauss_uncond(void* p, double* u, const double* y, double s, double r) {
    GaussField* f = (GaussField*)p;
    gauss_avg_velocity(u, y, f->mu_u, f->sigma, s, r, f->n);
}

static void test_tmmf_fixed_point(void) {
    printf(
        "\n[tmd] TM-MF target (closed-form Gaussian): the guided field's exact average velocity is its fixed point\n");
    enum { n = 8 };
    double mu_c[n], mu_u[n], mu_g[n], ys[n], vc[n], u[n], uhat[n], tan_[n], scratch[3 * n], chk[n];
    double w = 3, sigma = 0.5, s = 0.7, r = 0.3;
    Rng rr = rng_make(12);
    for (int i = 0; i < n; i++) {
        mu_c[i] = rng_normal(&rr);
        mu_u[i] = 0.3 * rng_normal(&rr);
        mu_g[i] = w * mu_c[i] + (1 - w) * mu_u[i];
        ys[i] = rng_normal(&rr);
    }
    GaussField f = {n, sigma, mu_g, mu_u};
    // the closed form itself: u(y, s, s − h) → v(y, s) as h → 0
    gauss_avg_velocity(u, ys, mu_g, sigma, s, s - 1e-7, n); gauss_velocity(chk, ys, mu_g, sigma, s, n);
    double cf_err = 0; for (int i = 0; i < n; i++) cf_err = fmax(cf_err, fabs(u[i] - chk[i]));
    printf("  closed form: |u(y, s, s - 1e-7) - v(y, s)| max %.2e\n", cf_err);
    EXPECT(cf_err < 1e-5, "the closed-form flow map does not integrate its velocity (%.3e)", cf_err);
    gauss_velocity(vc, ys, mu_c, sigma, s, n);
    gauss_avg_velocity(u, ys, mu_g, sigma, s, r, n);
    double umax = 0; for (int i = 0; i < n; i++) umax = fmax(umax, fabs(u[i]));
    double err[2][2];   // [plain][delta, delta/2]
    for (int plain = 0; plain < 2; plain++) for (int hh = 0; hh < 2; hh++) {
        double delta = hh ? 2.5e-3 : 5e-3;
        tmmf_target(uhat, tan_, ys, vc, u, s, r, w, delta, plain, gauss_cond, gauss_uncond, &f, scratch, n);
        double e = 0; for (int i = 0; i < n; i++) e = fmax(e, fabs(uhat[i] - u[i]));
        err[plain][hh] = e / umax;
    }
    printf("  |û - u_exact| / max|u|: guided tangent %.2e (δ = 5e-3), %.2e (δ/2, ratio %.2f: central difference O(δ²));"
           " plain tangent v: %.2e (%.0fx larger)\n",
           err[0][0], err[0][1], err[0][0] / err[0][1], err[1][0], err[1][0] / err[0][0]);
    EXPECT(err[0][0] < 1e-4, "the guided field's average velocity is not a fixed point of the target: %.3e", err[0][0]);
    EXPECT(err[0][0] / err[0][1] > 3 && err[0][0] / err[0][1] < 5,
           "the fixed-point residual does not shrink as δ² (ratio %.2f)", err[0][0] / err[0][1]);
    EXPECT(err[1][0] > 1e-2, "the plain tangent should miss the fixed point (%.3e): the test cannot tell them apart",
           err[1][0]);
}

// ---- the VSD normaliser's epsilon (fix 7): FastGen adds 1e-6 to mean|x̂ − g_teacher|
static void test_vsd_eps(void) {
    printf("\n[tmd] VSD normaliser: (g_fake - g_teacher) / (mean|x̂ - g_teacher| + 1e-6)\n");
    enum { n = 16 };
    double xhat[n], gt[n], gf[n], grad[n];
    for (int i = 0; i < n; i++) { gt[i] = 0; xhat[i] = 1e-9; gf[i] = 2e-9; }   // a student at the teacher's x0
    double norm = vsd_gradient(grad, xhat, gt, gf, n, 0);
    double want = 2e-9 / (1e-9 + 1e-6), worst = 0;
    for (int i = 0; i < n; i++) worst = fmax(worst, fabs(grad[i] - want) / want);
    printf("  |x̂ - g_teacher| = 1e-9, |g_fake - g_teacher| = 2e-9: normaliser %.4e, gradient %.4e (with eps 1e-12 it "
           "would be %.4f)\n",
           norm, grad[0], 2e-9 / (1e-9 + 1e-12));
    EXPECT(worst < 1e-9 && fabs(norm - (1e-9 + 1e-6)) < 1e-9 * norm, "VSD gradient %.6e, want %.6e", grad[0], want);
}

// ---- the discriminator (fixes 6, 8): feature layers per preset (Table 7) and the Wan-scale head's size
static void test_disc_config(void) {
    printf("\n[tmd] discriminator: feature layers per preset (Table 7) and the Conv3D head's parameter count\n");
    char err[ST_ERRLEN];
    WanConfig c13, c14; wan_preset(&c13, "wan2.1-t2v-1.3b", err); wan_preset(&c14, "wan2.1-t2v-14b", err);
    int l13[3], l14[3], lt[3];
    int n13 = disc_layers_for(c13.num_layers, l13), n14 = disc_layers_for(c14.num_layers, l14),
        nt = disc_layers_for(4, lt);
    printf("  layers: 1.3B (%d blocks) %d %d %d; 14B (%d blocks) %d %d %d; tiny (4 blocks)", c13.num_layers, l13[0],
           l13[1], l13[2], c14.num_layers, l14[0], l14[1], l14[2]);
    for (int i = 0; i < nt; i++) printf(" %d", lt[i]);
    printf("\n");
    EXPECT(n13 == 3 && l13[0] == 15 && l13[1] == 22 && l13[2] == 29, "1.3B feature layers: Table 7 lists (15, 22, 29)");
    EXPECT(n14 == 3 && l14[0] == 19 && l14[1] == 29 && l14[2] == 39, "14B feature layers: Table 7 lists (19, 29, 39)");
    EXPECT(nt == 2 && lt[0] == 2 && lt[1] == 3, "tiny (4 blocks): the scaled rule gives (2, 3)");
    // FastGen's conv3d head widths (512, 512, 1024, 1024; MLP 512) on 1.3B features unpatchified to 1536/4 channels
    DiscConfig d13 = disc_config(&c13, 512, 512, 1024, 1024, 512), d14 = disc_config(&c14, 512, 512, 1024, 1024, 512);
    size_t per = 0;   // the same count, layer by layer, independently of disc_carve
    for (int k = 0; k < DISC_CONVS; k++) {
        size_t ic = k ? (size_t)d13.width[k - 1] : (size_t)d13.in_ch, oc = d13.width[k];
        per += oc * ic * DISC_KERNEL[k][0] * DISC_KERNEL[k][1] * DISC_KERNEL[k][2] + 3 * oc;
    }
    per += (size_t)d13.hidden * d13.width[3] + 2 * d13.hidden + 1;
    size_t n13p = disc_num_params(&d13), n14p = disc_num_params(&d14);
    printf("  Wan2.1 1.3B: features [%d, T, H, W], %d heads, %.2fM parameters (%.2fM per head); 14B: [%d, T, H, W], "
           "%.2fM\n",
           d13.in_ch, d13.n_heads, n13p / 1e6, n13p / 1e6 / d13.n_heads, d14.in_ch, n14p / 1e6);
    printf("  (the paper's Table 7 says 68M and 172M; FastGen's estimate for this head is ~65M per head; see "
           "cpu/disc_cpu.h)\n");
    EXPECT(d13.in_ch == 384 && n13p == 3 * per,
           "1.3B discriminator: %zu parameters, the layer-by-layer count says 3 x %zu", n13p, per);
}

// ---- the multiscale head (FastGen's multiscale_down_mlp_large): every tensor and the feature gradient by central
// differences, in train mode (a fixed dropout mask) on a grid whose axes leave pooling remainders (T 5, H 10, W 12:
// scale 4 keeps 1 x 2 x 3 cells), and the parameter count at Wan scale
typedef struct { DiscAct* da; DiscParams* D; DiscConfig* dc; WanAct* ta; double c[DISC_MAX_HEADS]; } MsCase;
static double ms_loss(void* p) {
    MsCase* k = (MsCase*)p;
    disc_forward(k->da, k->D, k->dc, k->ta);
    double l = 0; for (int h = 0; h < k->dc->n_heads; h++) l += k->c[h] * k->da->logit[h];
    return l;
}
static void test_disc_multiscale(void) {
    printf("\n[tmd gradcheck] discriminator, multiscale head (FastGen multiscale_down_mlp_large): every layer of two heads "
           "and d(features), train mode\n");
    char err[ST_ERRLEN];
    WanConfig c; wan_preset(&c, "tiny", err);
    c.num_layers = 2; c.dim = 32; c.num_heads = 2; c.ffn_dim = 48; c.freq_dim = 32; c.patch[1] = c.patch[2] = 2;
    WanGrid g; EXPECT(!wan_grid(&g, &c, 3, 5, 10, 12, err), "grid: %s", err);
    DiscConfig dc = disc_config_multiscale(&c, 12, g.T, g.Hl, g.Wl);
    dc.n_heads = 2; dc.layers[0] = 0; dc.layers[1] = 1;
    printf("  C0 %d, scales", dc.in_ch); for (int i = 0; i < dc.n_scales; i++) printf(" %d", dc.scales[i]);
    printf(", hidden %d, %zu parameters\n", dc.hidden, disc_num_params(&dc));
    EXPECT(dc.in_ch == 8 && dc.n_scales == 3 && dc.scales[2] == 4, "scales on a 5x10x12 grid: want 1, 2, 4");
    size_t nd = disc_num_params(&dc);
    double* db = (double*)calloc(nd, sizeof(double)); double* gdb = (double*)calloc(nd, sizeof(double));
    disc_init(&dc, db, 61);
    Rng r = rng_make(62); for (size_t i = 0; i < nd; i++) db[i] += 0.05 * rng_normal(&r);   // GroupNorm affine off 1, 0
    DiscParams D, dD; disc_carve(&dc, &D, db); disc_carve(&dc, &dD, gdb);
    WanAct ta; wan_act_init(&ta, &c, &g);
    size_t LD = (size_t)g.L * c.dim;
    for (size_t i = 0; i < (size_t)(c.num_layers + 1) * LD; i++) ta.xs[i] = rng_normal(&r);
    DiscAct da; disc_act_init(&da, &dc, &g);
    da.dropout_key = 0x5eed;
    int dropped = 0; for (int j = 0; j < dc.hidden; j++) dropped += disc_dropout_factor(da.dropout_key, 0, j) == 0;
    printf("  dropout (key 0x5eed, head 0): %d of %d hidden units dropped\n", dropped, dc.hidden);
    EXPECT(dropped > 0 && dropped < dc.hidden / 2, "dropout mask dropped %d of %d", dropped, dc.hidden);
    MsCase k = {&da, &D, &dc, &ta, {0.7, -1.3}};
    ms_loss(&k);
    double dl[DISC_MAX_HEADS] = {0.7, -1.3};
    double* dfb = (double*)calloc((size_t)(c.num_layers + 1) * LD, sizeof(double));
    double* dfeat[8] = {0}; for (int l = 0; l <= c.num_layers; l++) dfeat[l] = dfb + (size_t)l * LD;
    disc_backward(&dD, dfeat, dl, &da, &D, &dc, &ta);
    for (int h = 0; h < dc.n_heads; h++) {
        char nm[96];
        for (int kk = 0; kk < disc_n_convs(&dc); kk++) {
            int s = dc.scales[kk / 2], oc = disc_conv_out(&dc, kk);
            snprintf(nm, sizeof(nm), "head %d scale %d %s conv weight", h, s, kk % 2 ? "3x3x3" : "1x1x1");
            gradcheck(nm, D.conv_w[h][kk], (long)disc_conv_numel(&dc, kk), dD.conv_w[h][kk], ms_loss, &k, 6);
            snprintf(nm, sizeof(nm), "head %d scale %d %s conv bias, groupnorm weight, bias", h, s, kk % 2 ? "3x3x3" : "1x1x1");
            gradcheck(nm, D.conv_b[h][kk], 3L * oc, dD.conv_b[h][kk], ms_loss, &k, 6);
        }
        snprintf(nm, sizeof(nm), "head %d mlp (both Linears)", h);
        gradcheck(nm, D.mlp_0_w[h], (long)dc.hidden * disc_feat_dim(&dc) + 2 * dc.hidden + 1, dD.mlp_0_w[h], ms_loss, &k, 16);
        // the feature gradients are ~1e-7 (each GroupNorm divides by its group's spread over hundreds of voxels) next to a
        // loss of ~0.2: at h = 1e-5 the loss's roundoff (~1e-17/h) is 3e-5 of them; h = 1e-4 cuts that tenfold while
        // the truncation (h² times the third derivative) stays far below
        snprintf(nm, sizeof(nm), "head %d: d(features of block %d) through the whole head", h, dc.layers[h]);
        gc_h = 1e-4;
        gradcheck(nm, wan_xs(&ta, dc.layers[h] + 1), (long)LD, dfeat[dc.layers[h] + 1], ms_loss, &k, 16);
        gc_h = GC_H;
    }
    // eval mode (key 0) is a different function from train mode: the mask is really applied
    double lt = ms_loss(&k); da.dropout_key = 0; double le = ms_loss(&k);
    printf("  loss train mode %.6f, eval mode %.6f\n", lt, le);
    EXPECT(lt != le, "dropout changed nothing");
    // the Wan-scale count: FastGen's layer list, counted here independently of disc_carve
    WanConfig c13, c14; wan_preset(&c13, "wan2.1-t2v-1.3b", err); wan_preset(&c14, "wan2.1-t2v-14b", err);
    DiscConfig m13 = disc_config_multiscale(&c13, 1024, 21, 60, 104), m14 = disc_config_multiscale(&c14, 1024, 21, 60, 104);
    size_t C = 384, per = 5 * (C * C + C + 2 * C + 27 * C * C + C + 2 * C) + 5 * C * 1024 + 1024 + 1024 + 1;
    printf("  Wan2.1 1.3B: %d heads, %zu parameters (%.2fM; the paper's Table 7: 68M); 14B: %zu (%.1fM; the paper: 172M)\n",
           m13.n_heads, disc_num_params(&m13), disc_num_params(&m13) / 1e6, disc_num_params(&m14), disc_num_params(&m14) / 1e6);
    EXPECT(m13.n_scales == 5 && disc_num_params(&m13) == 3 * per && disc_num_params(&m13) == 67870467,
           "1.3B multiscale: %zu parameters, the layer list says 3 x %zu = 67,870,467", disc_num_params(&m13), per);
    EXPECT(disc_num_params(&m14) == 707910147, "14B multiscale: %zu parameters, want 707,910,147", disc_num_params(&m14));
    disc_act_free(&da); wan_act_free(&ta); free(db); free(gdb); free(dfb);
}

// ---- critic step noise (fix 2): the discriminator sees the fake score's t and ε, for real and fake alike
static void check_critic_noise(Generator* G, DmdWork* w, WanParams* T, WanParams* F, DiscParams* D, DiscConfig* dc,
                               const WanGrid* g, const double* x, const double* ctx) {
    for (int own = 0; own < 2; own++) {
        DmdConfig cf = dmd_defaults(2); cf.gan_own_noise = own;
        size_t nd = disc_carve(dc, NULL, NULL);
        double* sbuf = (double*)calloc(nd, sizeof(double));
        DiscParams scratch;
        disc_carve(dc, &scratch, sbuf);
        Rng r = rng_make(91);
        DmdStats st = dmd_critic_sample(G, NULL, &scratch, w, T, F, D, dc, g, x, ctx, 3, &cf, &r, 1);
        double de = 0, dw = 0, td = st.t_disc;
        for (size_t k = 0; k < w->numel; k++) {
            double ef = (w->xhat_t[k] - (1 - td) * G->xhat[k]) / td, er = (w->xt[k] - (1 - td) * x[k]) / td;
            de = fmax(de, fabs(ef - er)); dw = fmax(dw, fabs(ef - w->eps[k]));
        }
        printf("  %s: fake-score t %.4f, discriminator t %.4f; |ε_fake - ε_real| max %.2e\n",
               own ? "own draws (earlier choice)" : "same t and ε (default)", st.t, td, de);
        if (!own)
            EXPECT(td == st.t && de < 1e-9 && dw < 1e-9,
                   "discriminator noise differs from the fake score's: t %.6f vs %.6f, ε diff %.3e", td, st.t, de);
        else EXPECT(td != st.t && de > 0.1, "gan_own_noise drew the same t and ε: the check cannot fail");
        free(sbuf);
    }
}


// ---- KD warm-up (fix 4) and gradient clipping (fix 3). The teacher ODE pairs are the teacher's own many-step CFG
// samples from seeded noise and captions; a run from the cached pairs equals one that makes them; KD lowers the
// one-step baseline's distance to them. Clipping per network follows FastGen: student 10, nothing else.
static void test_kd_warmup(void) {
    printf("\n[tmd] KD warm-up from cached teacher ODE pairs; per-network gradient clipping\n");
    DistillOpts o = distill_defaults();
    printf("  max gradient norm: student %g, fake score %g, discriminator %g, Stage 1 %g (0: none)\n", o.clip_student,
           o.clip_fake, o.clip_disc, o.clip_tmmf);
    EXPECT(o.clip_student == 10 && o.clip_fake == 0 && o.clip_disc == 0 && o.clip_tmmf == 0,
           "clipping defaults differ from FastGen's (student 10, others none)");
    char path[512]; const char* td = getenv("TMPDIR");
    snprintf(path, sizeof(path), "%s/tmd_kd_%d.npy", td && *td ? td : "/tmp", (int)getpid());
    o.teacher_steps = 40;
    o.eval_n = 2;
    o.kd_pairs = 3;
    o.teacher_eval_steps = 4;
    o.kd_steps = 30;
    o.kd_batch = 3;
    o.kd_cache = path;
    DistillWorld W;
    if (distill_world_init(&W, &o)) { EXPECT(0, "distill_world_init failed"); return; }
    size_t n = W.numel;
    distill_kd_pairs(&W, &o);   // makes and saves
    double* made = (double*)malloc(sizeof(double) * n * o.kd_pairs);
    memcpy(made, W.kd_target, sizeof(double) * n * o.kd_pairs);
    W.kd_n = 0; distill_kd_pairs(&W, &o);   // loads
    double dcache = 0, dteach = 0, dnoise = 0;
    for (size_t k = 0; k < n * o.kd_pairs; k++) dcache = fmax(dcache, fabs(made[k] - W.kd_target[k]));
    double* x = (double*)malloc(sizeof(double) * n);
    for (int i = 0; i < o.kd_pairs; i++) {   // the pair is the teacher's sample from that pair's noise and caption
        memcpy(x, W.kd_noise + (size_t)i * n, sizeof(double) * n);
        distill_teacher_sample(&W, &o, x, W.kd_ctx + (size_t)i * W.nctx, o.teacher_eval_steps, SOLVER_UNIPC, o.cfg_eval);
        for (size_t k = 0; k < n; k++) {
            dteach = fmax(dteach, fabs((float)x[k] - W.kd_target[(size_t)i * n + k]));
            dnoise = fmax(dnoise, fabs(x[k] - W.kd_noise[(size_t)i * n + k]));
        }
    }
    printf("  %d pairs: cached vs made max diff %.1e; pair vs a fresh teacher sample %.1e (the sample moved %.2f from "
           "its noise)\n",
           o.kd_pairs, dcache, dteach, dnoise);
    EXPECT(dcache == 0 && dteach == 0 && dnoise > 0.1, "KD pairs: cache %.3e, teacher %.3e, noise %.3e", dcache, dteach,
           dnoise);
    // KD on the plain one-step student lowers its distance to the pairs
    StudentConfig sc = distill_student_config(&W, &o);
    double* base = (double*)malloc(sizeof(double) * W.nw); memcpy(base, W.teacher, sizeof(double) * W.nw);
    WanParams P; wan_carve(&W.wan, &P, base);
    Generator G; generator_init(&G, 0, &sc, &W.g, o.N, o.gamma_inner); G.P = &P;
    double before = 0, after = 0;
    for (int pass = 0; pass < 2; pass++) {
        if (pass) distill_kd(&W, &o, 0, base);
        double e2 = 0;
        for (int i = 0; i < o.kd_pairs; i++) {
            generator_forward(&G, &W.g, W.kd_noise + (size_t)i * n, T_MAX, W.kd_ctx + (size_t)i * W.nctx, W.wc.text_len,
                              NULL, NULL);
            for (size_t k = 0; k < n; k++) { double e = G.xhat[k] - W.kd_target[(size_t)i * n + k]; e2 += e * e; }
        }
        *(pass ? &after : &before) = e2 / (n * o.kd_pairs);
    }
    printf("  one-step DMD2-v student vs the pairs: mse %.4f before KD, %.4f after %d steps\n", before, after,
           o.kd_steps);
    EXPECT(after < 0.8 * before, "KD did not move the one-step student towards the teacher pairs: %.4f -> %.4f", before,
           after);
    generator_free(&G); free(base); free(made); free(x);
    distill_world_free(&W); remove(path);
}

static void test_tmd(void) {
    test_student_init();
    test_student_init_s_ne_t();
    test_time_grids();
    test_tmmf_fixed_point();
    test_vsd_eps();
    test_disc_config();
    test_kd_warmup();
    test_inner_step_and_nfe();
    test_head_grads();
    test_rollout_grads();
    test_tmmf_grads();
    test_dmd_grads();
    test_kd_grads();
}
