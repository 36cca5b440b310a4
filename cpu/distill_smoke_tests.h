// cpu/distill_smoke_tests.h: a few steps of every stage of the distillation in the tiny world, as
// cpu/distill_run.h drives them (teacher flow matching, Stage 1 TM-MF, Stage 2 DMD2-v for the TMD student and the
// baseline): every loss must be finite and every trained parameter set must move. The claim checks of the whole run
// are `make test-distill`; this is what `make test` keeps of it. Entry point: test_distill_smoke().
#pragma once
#include "distill_run.h"
#include "../lib/testing.h"

static int ds_changed_(const double* a, const double* b, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (a[i] != b[i]) return 1;
    return 0;
}
static double* ds_copy_(const double* p, size_t n) {
    double* q = (double*)xmalloc(n, sizeof(double), "a parameter snapshot");
    memcpy(q, p, n * sizeof(double));
    return q;
}
static void ds_expect_(const char* what, int finite, int moved) {
    printf("  %-52s losses %s, parameters %s\n", what, finite ? "finite" : "NOT FINITE",
           moved ? "moved" : "DID NOT MOVE");
    EXPECT(finite && moved, "%s: finite losses %d, parameters moved %d", what, finite, moved);
}

// n_iters of Stage 2 (student on even iterations, critic on odd), with the same pieces run_dmd uses
static void ds_stage2_(int tmd, const StudentConfig* sc, const WanGrid* g, double* student, size_t n_student,
                       double* teacher, WorldStream* ws, int n_iters) {
    char err[ST_ERRLEN];
    size_t nw = wan_num_params(&sc->wan);
    WanParams T, F, dF, P, dP;
    wan_carve(&sc->wan, &T, teacher);
    double* fake = ds_copy_(teacher, nw);
    double* gfake = (double*)xcalloc(nw, sizeof(double), "fake-score gradients");
    double* gstu = (double*)xcalloc(n_student, sizeof(double), "student gradients");
    wan_carve(&sc->wan, &F, fake);
    wan_carve(&sc->wan, &dF, gfake);
    DiscConfig dc = disc_config(&sc->wan, 4, 4, 8, 8, 8); // narrow heads on the preset's feature layers
    size_t nd = disc_carve(&dc, NULL, NULL);
    double* disc = (double*)xcalloc(nd, sizeof(double), "discriminator");
    double* gdisc = (double*)xcalloc(nd, sizeof(double), "discriminator gradients");
    disc_init(&dc, disc, 99);
    DiscParams D, dD;
    disc_carve(&dc, &D, disc);
    disc_carve(&dc, &dD, gdisc);
    StudentParams S, dS;
    if (tmd) {
        student_carve(sc, &S, student);
        student_carve(sc, &dS, gstu);
    } else {
        wan_carve(&sc->wan, &P, student);
        wan_carve(&sc->wan, &dP, gstu);
    }
    Generator G;
    generator_init(&G, tmd, sc, g, 2, 10);
    G.S = &S;
    G.P = &P;
    G.rollout_grad = 1;
    DmdWork w;
    dmd_work_init(&w, &sc->wan, g, &dc);
    DmdConfig cf = dmd_defaults(2);
    AdamW os, of, od;
    adamw_init(&os, n_student, 1e-3, 0.9, 0.99, 1e-8, 0.01, err);
    adamw_init(&of, nw, 1e-3, 0.9, 0.99, 1e-8, 0.01, err);
    adamw_init(&od, nd, 1e-3, 0.9, 0.99, 1e-8, 0.01, err);
    double* s0 = ds_copy_(student, n_student);
    double* f0 = ds_copy_(fake, nw);
    double* d0 = ds_copy_(disc, nd);
    Rng rng = rng_make(31 + (uint64_t)tmd);
    int finite = 1;
    for (int it = 0; it < n_iters; it++) {
        stream_next(ws);
        int student_step = it % 2 == 0;
        memset(gstu, 0, sizeof(double) * n_student);
        memset(gfake, 0, sizeof(double) * nw);
        memset(gdisc, 0, sizeof(double) * nd);
        for (int b = 0; b < ws->B; b++) {
            const double* x = ws->x + (size_t)b * ws->numel;
            const double* ctx = ws->ctx + (size_t)b * ws->nctx;
            DmdStats st;
            if (student_step)
                st = dmd_student_sample(&G, tmd ? &dS : NULL, tmd ? NULL : &dP, &w, &T, &F, &D, &dc, g, x, ctx,
                                        sc->wan.text_len, NULL, 0, &cf, &rng, 1.0 / ws->B);
            else
                st = dmd_critic_sample(&G, &dF, &dD, &w, &T, &F, &D, &dc, g, x, ctx, sc->wan.text_len, &cf, &rng,
                                       1.0 / ws->B);
            finite &= student_step ? isfinite(st.vsd) && isfinite(st.gan_g) : isfinite(st.dsm) && isfinite(st.gan_d);
        }
        double gn;
        if (student_step)
            finite &= adamw_step(&os, student, gstu, 1.0, &gn) == 0;
        else
            finite &= adamw_step(&of, fake, gfake, 1.0, &gn) == 0 && adamw_step(&od, disc, gdisc, 1.0, &gn) == 0;
    }
    char what[96];
    snprintf(what, sizeof(what), "Stage 2 DMD2-v, %s student, %d iterations", tmd ? "TMD" : "baseline", n_iters);
    ds_expect_(what, finite,
               ds_changed_(s0, student, n_student) && ds_changed_(f0, fake, nw) && ds_changed_(d0, disc, nd));
    adamw_free(&os);
    adamw_free(&of);
    adamw_free(&od);
    dmd_work_free(&w);
    generator_free(&G);
    free(fake);
    free(gfake);
    free(gstu);
    free(disc);
    free(gdisc);
    free(s0);
    free(f0);
    free(d0);
}

static void test_distill_smoke(void) {
    printf(
        "\n[smoke] a few steps of every distillation stage in the tiny world: finite losses, parameters that move\n");
    char err[ST_ERRLEN];
    WorldConfig wc = world_config_tiny();
    StudentConfig sc;
    memset(&sc, 0, sizeof(sc));
    wan_preset(&sc.wan, "tiny", err);
    sc.head_blocks = 1;
    sc.fusion = FUSION_GATED;
    sc.fuse_ffn_dim = sc.wan.ffn_dim;
    WanGrid g;
    if (wan_grid(&g, &sc.wan, wc.C, wc.T, wc.H, wc.W, err)) {
        EXPECT(0, "%s", err);
        return;
    }
    size_t nw = wan_num_params(&sc.wan), ns = student_num_params(&sc);
    // the teacher: flow matching with condition dropout
    double* teacher = (double*)xmalloc(nw, sizeof(double), "teacher");
    double* gt = (double*)xcalloc(nw, sizeof(double), "teacher gradients");
    wan_init_train(&sc.wan, teacher, 1);
    double* t0 = ds_copy_(teacher, nw);
    WanAct act;
    wan_act_init(&act, &sc.wan, &g);
    AdamW ot;
    adamw_init(&ot, nw, 3e-3, 0.9, 0.99, 1e-8, 0.01, err);
    WorldStream ws;
    stream_init(&ws, &wc, 1, 2);
    FlowMatchOpts fo = {0.1, 1.0, 0};
    Rng rng = rng_make(17);
    const double* ctxp[2];
    int rows_c[2];
    int finite = 1;
    for (int step = 0; step < 3; step++) {
        stream_next(&ws);
        for (int b = 0; b < ws.B; b++) {
            ctxp[b] = ws.ctx + (size_t)b * ws.nctx;
            rows_c[b] = wc.text_len;
        }
        FlowMatchBatch fb = {ws.B, wc.C, wc.T, wc.H, wc.W, ws.x, ctxp, rows_c};
        double loss = NAN, gn;
        finite &=
            teacher_train_step(&loss, &gn, &ot, teacher, gt, &act, &fb, &fo, 1.0, &rng, err) >= 0 && isfinite(loss);
    }
    ds_expect_("teacher flow matching, 3 steps", finite, ds_changed_(t0, teacher, nw));
    stream_free(&ws);
    // Stage 1: TM-MF from the teacher
    double* stu = (double*)xmalloc(ns, sizeof(double), "student");
    double* gs = (double*)xcalloc(ns, sizeof(double), "student gradients");
    student_init(&sc, stu, teacher, 5);
    double* s0 = ds_copy_(stu, ns);
    StudentParams S, dS;
    student_carve(&sc, &S, stu);
    student_carve(&sc, &dS, gs);
    TmmfWork tw;
    tmmf_work_init(&tw, &sc, &g);
    TmmfConfig tc = tmmf_defaults(2);
    AdamW om;
    adamw_init(&om, ns, 3e-4, 0.9, 0.99, 1e-8, 0.01, err);
    stream_init(&ws, &wc, 3, 2);
    finite = 1;
    for (int step = 0; step < 3; step++) {
        stream_next(&ws);
        memset(gs, 0, sizeof(double) * ns);
        for (int b = 0; b < ws.B; b++) {
            TmmfStats st = tmmf_sample(&dS, &S, &sc, &g, &tw, ws.x + (size_t)b * ws.numel, ws.ctx + (size_t)b * ws.nctx,
                                       wc.text_len, NULL, 0, &tc, &rng, 1.0 / ws.B);
            finite &= isfinite(st.loss) && isfinite(st.mse);
        }
        double gn;
        finite &= adamw_step(&om, stu, gs, 1.0, &gn) == 0;
    }
    ds_expect_("Stage 1 TM-MF, 3 steps", finite, ds_changed_(s0, stu, ns));
    stream_free(&ws);
    adamw_free(&om);
    tmmf_work_free(&tw);
    // Stage 2: DMD2-v with rollout, for the TMD student and the DMD2-v baseline (a copy of the teacher)
    stream_init(&ws, &wc, 4, 1);
    ds_stage2_(1, &sc, &g, stu, ns, teacher, &ws, 4);
    double* base = ds_copy_(teacher, nw);
    ds_stage2_(0, &sc, &g, base, nw, teacher, &ws, 4);
    stream_free(&ws);
    free(base);
    free(stu);
    free(gs);
    free(s0);
    free(teacher);
    free(gt);
    free(t0);
    wan_act_free(&act);
    adamw_free(&ot);
}
