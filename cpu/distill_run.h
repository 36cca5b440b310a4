// cpu/distill_run.h: the whole method end to end on the CPU reference, in the built-in tiny world:
//   teacher (flow matching) → Stage 1 TM-MF → Stage 2 DMD2-v with rollout → sample → score (toy VBench)
// and the DMD2-v baseline next to it. `make test` runs it at small settings and checks the paper's claim in
// miniature (the distilled student at M steps beats the teacher's own Euler sampler at M steps and comes close
// to the teacher's many-step CFG samples); `./test_tmd distill` runs it with any settings and prints the table.
#pragma once
#include "teacher_cpu.h"
#include "distill_cpu.h"
#include "../world/world.h"
#include "../world/text.h"
#include "../world/score.h"
#include "../world/png.h"
#include <time.h>

typedef struct {
    uint64_t seed;
    int teacher_steps, teacher_batch; double teacher_lr;
    int tmmf_steps, tmmf_batch; double tmmf_lr; int tm_only;
    int dmd_iters, dmd_batch; double student_lr, fake_lr, disc_lr; int update_every; double gan_weight; int rollout;
    int M, N, H, fusion;
    double gamma_outer, gamma_inner, gamma_dmd, cfg_dmd, cfg_tmmf;
    int baseline;        // also distill the DMD2-v baseline student (same Stage 2 settings)
    int eval_n;          // clips scored per row
    int teacher_eval_steps; double cfg_eval, shift_eval;
    int disc_hidden;
    const char* sheet;   // contact sheet path (NULL: none)
    const char* teacher_cache;  // load the teacher from here if the file exists, else train it and save it here
} DistillOpts;

static DistillOpts distill_defaults(void) {
    DistillOpts o;
    memset(&o, 0, sizeof(o));
    o.seed = 1;
    o.teacher_steps = 1500; o.teacher_batch = 4; o.teacher_lr = 3e-3;
    o.tmmf_steps = 400; o.tmmf_batch = 4; o.tmmf_lr = 3e-4;
    o.dmd_iters = 500; o.dmd_batch = 2; o.student_lr = 1e-4; o.fake_lr = 1e-4; o.disc_lr = 1e-4; o.update_every = 5;
    o.gan_weight = 0.03; o.rollout = 1;
    o.M = 2; o.N = 2; o.H = 1; o.fusion = FUSION_GATED;
    o.gamma_outer = 10; o.gamma_inner = 10; o.gamma_dmd = 5; o.cfg_dmd = 5; o.cfg_tmmf = 3;
    o.baseline = 1; o.eval_n = 16; o.teacher_eval_steps = 16; o.cfg_eval = 2; o.shift_eval = 3;
    o.disc_hidden = 16;
    return o;
}

typedef struct { char name[48]; double nfe, quality, semantic, total, ms_per_sample; } DistillRow;
#define DISTILL_SHEET_CLIPS 3   // clips per row in the contact sheet
#define DISTILL_MAX_ROWS 16

static double dr_now(void) { struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts); return ts.tv_sec + 1e-9 * ts.tv_nsec; }

// a training batch from the world's endless stream: clips → double, context rows = text_len (zero rows past the caption)
typedef struct { WorldConfig wc; WRng rng; int B; float *clipf, *ctxf; double *x, *ctx; size_t numel, nctx; } WorldStream;
static void stream_init(WorldStream* s, const WorldConfig* wc, uint64_t seed, int B) {
    s->wc = *wc; s->rng = wrng_seed(seed, 7, 0); s->B = B;
    s->numel = world_clip_numel(wc); s->nctx = (size_t)wc->text_len * wc->text_dim;
    s->clipf = (float*)malloc(sizeof(float) * s->numel * B); s->ctxf = (float*)malloc(sizeof(float) * s->nctx * B);
    s->x = (double*)malloc(sizeof(double) * s->numel * B); s->ctx = (double*)malloc(sizeof(double) * s->nctx * B);
}
static void stream_next(WorldStream* s) {
    world_sample_batch(&s->wc, &s->rng, WORLD_TRAIN, s->B, s->clipf, s->ctxf, NULL, NULL);
    for (size_t i = 0; i < s->numel * s->B; i++) s->x[i] = s->clipf[i];
    for (size_t i = 0; i < s->nctx * s->B; i++) s->ctx[i] = s->ctxf[i];
}
static void stream_free(WorldStream* s) { free(s->clipf); free(s->ctxf); free(s->x); free(s->ctx); }

// Wan's own initialisation (official init_weights): Linear weights Xavier-uniform, biases 0, text and time embeddings
// N(0, 0.02), the output head zero, the modulation tables N(0, 1)/sqrt(D), norm weights 1
static void wan_init_train(const WanConfig* c, double* buf, uint64_t seed) {
    Rng r = rng_make(seed);
    WanTensor* tl = (WanTensor*)malloc(sizeof(WanTensor) * WAN_MAX_TENSORS);
    int nt = wan_layout(c, tl, NULL, NULL, NULL);
    for (int i = 0; i < nt; i++) {
        const WanTensor* t = &tl[i]; double* p = buf + t->offset;
        const char* nm = t->name;
        if (strstr(nm, "modulation")) for (size_t k = 0; k < t->numel; k++) p[k] = rng_normal(&r) / sqrt((double)c->dim);
        else if (strstr(nm, "norm")) for (size_t k = 0; k < t->numel; k++) p[k] = strstr(nm, "bias") ? 0 : 1;
        else if (t->ndim == 1) for (size_t k = 0; k < t->numel; k++) p[k] = 0;
        else if (!strncmp(nm, "head.head", 9)) for (size_t k = 0; k < t->numel; k++) p[k] = 0;
        else if (!strncmp(nm, "text_embedding", 14) || !strncmp(nm, "time_embedding", 14)) for (size_t k = 0; k < t->numel; k++) p[k] = 0.02 * rng_normal(&r);
        else {
            double fan_out = (double)t->shape[0], fan_in = (double)(t->numel / (size_t)t->shape[0]);
            double a = sqrt(6.0 / (fan_in + fan_out));
            for (size_t k = 0; k < t->numel; k++) p[k] = a * (2 * rng_uniform(&r) - 1);
        }
    }
    free(tl);
}

// samples one clip per eval caption with `fn`, scores them, fills a table row. fn(x in/out, i, user)
typedef void (*SampleFn)(double* x, int i, void* user);
static void eval_row(DistillRow* row, const char* name, double nfe, SampleFn fn, void* user, const WorldSet* ev, const ScoreRef* ref,
                     const WorldConfig* wc, uint64_t seed, float* keep) {
    size_t numel = world_clip_numel(wc);
    float* clips = (float*)malloc(sizeof(float) * numel * ev->n);
    double* x = (double*)malloc(sizeof(double) * numel);
    double t0 = dr_now();
    for (int i = 0; i < ev->n; i++) {
        Rng r = rng_make(seed * 1000003 + i);              // the same initial noise for every row
        for (size_t k = 0; k < numel; k++) x[k] = rng_normal(&r);
        fn(x, i, user);
        for (size_t k = 0; k < numel; k++) clips[(size_t)i * numel + k] = (float)fmax(-1.0, fmin(1.0, x[k]));   // decoder clamp
    }
    double ms = (dr_now() - t0) * 1e3 / ev->n;
    WorldScore ws; char err[ST_ERRLEN];
    memset(row, 0, sizeof(*row));
    snprintf(row->name, sizeof(row->name), "%s", name);
    row->nfe = nfe; row->ms_per_sample = ms;
    if (score_clips(&ws, clips, ev->n, wc->T, wc->H, wc->W, (const char* const*)ev->captions, ref, wc, NULL, err)) {
        fprintf(stderr, "distill: scoring %s failed: %s\n", name, err); row->total = -1;
    } else { row->quality = 100 * ws.quality; row->semantic = 100 * ws.semantic; row->total = 100 * ws.total; }
    if (keep) memcpy(keep, clips, sizeof(float) * numel * (ev->n < DISTILL_SHEET_CLIPS ? ev->n : DISTILL_SHEET_CLIPS));
    free(clips); free(x);
}

// ---- the samplers each row uses

typedef struct { WanVelocity wv; WanAct* act; const WorldSet* ev; double* ctx; SampleOpts so; } TeacherRowCtx;
static void teacher_row_fn(double* x, int i, void* user) {
    TeacherRowCtx* t = (TeacherRowCtx*)user;
    size_t nc = (size_t)t->ev->text_len * t->ev->text_dim;
    for (size_t k = 0; k < nc; k++) t->ctx[k] = t->ev->context[(size_t)i * nc + k];
    t->wv.ctx_cond = t->ctx; t->wv.rows_cond = t->ev->text_len; t->wv.ctx_uncond = NULL; t->wv.rows_uncond = 0;
    int nfe; char err[ST_ERRLEN];
    const WanGrid* g = &t->act->g;
    if (teacher_sample(x, (size_t)g->C * g->T * g->Hl * g->Wl, wan_velocity, &t->wv, &t->so, &nfe, err)) fprintf(stderr, "distill: teacher sampling: %s\n", err);
}

typedef struct { const StudentParams* S; const StudentConfig* sc; const WanGrid* g; const WorldSet* ev; double* ctx; int M, N; double go, gi; uint64_t seed; } TmdRowCtx;
static void tmd_row_fn(double* x, int i, void* user) {
    TmdRowCtx* t = (TmdRowCtx*)user;
    size_t nc = (size_t)t->ev->text_len * t->ev->text_dim;
    for (size_t k = 0; k < nc; k++) t->ctx[k] = t->ev->context[(size_t)i * nc + k];
    Rng r = rng_make(t->seed * 7919 + i);
    tmd_sample(x, t->S, t->sc, t->g, t->ctx, t->ev->text_len, t->M, t->N, t->go, t->gi, &r);
}

typedef struct { const WanParams* P; const WanConfig* c; const WanGrid* g; const WorldSet* ev; double* ctx; int M; double go; } DmdRowCtx;
static void dmd_row_fn(double* x, int i, void* user) {
    DmdRowCtx* t = (DmdRowCtx*)user;
    size_t nc = (size_t)t->ev->text_len * t->ev->text_dim;
    for (size_t k = 0; k < nc; k++) t->ctx[k] = t->ev->context[(size_t)i * nc + k];
    dmd_sample(x, t->P, t->c, t->g, t->ctx, t->ev->text_len, t->M, t->go);
}

// ---- Stage 2 for either student type

typedef struct { double vsd, gan_g, dsm, gan_d; } DmdLog;

static void run_dmd(const char* label, int tmd, const DistillOpts* o, const StudentConfig* sc, const WanGrid* g, double* student_buf,
                    size_t n_student, const double* teacher_buf, WorldStream* ws) {
    size_t nw = wan_num_params(&sc->wan);
    WanParams T; wan_carve(&sc->wan, &T, (double*)teacher_buf);
    double* fake = (double*)malloc(sizeof(double) * nw); memcpy(fake, teacher_buf, sizeof(double) * nw);   // fake score = teacher at init
    double* gfake = (double*)calloc(nw, sizeof(double));
    double* gstu = (double*)calloc(n_student, sizeof(double));
    WanParams F, dF; wan_carve(&sc->wan, &F, fake); wan_carve(&sc->wan, &dF, gfake);
    DiscConfig dc; memset(&dc, 0, sizeof(dc));
    dc.dim = sc->wan.dim; dc.hidden = o->disc_hidden; dc.k = 3;
    // feature layers: the paper's (15, 22, 29) of 30 blocks, scaled to this depth (the last block always included)
    int L = sc->wan.num_layers; int want[3] = {(15 * L) / 30, (22 * L) / 30, L - 1};
    for (int i = 0; i < 3; i++) { int dup = 0; for (int j = 0; j < dc.n_heads; j++) dup |= dc.layers[j] == want[i]; if (!dup) dc.layers[dc.n_heads++] = want[i]; }
    size_t nd = disc_carve(&dc, NULL, NULL);
    double* disc = (double*)calloc(nd, sizeof(double)); double* gdisc = (double*)calloc(nd, sizeof(double));
    disc_init(&dc, disc, o->seed + 99);
    DiscParams D, dD; disc_carve(&dc, &D, disc); disc_carve(&dc, &dD, gdisc);
    StudentParams S, dS; WanParams P, dP;
    if (tmd) { student_carve(sc, &S, student_buf); student_carve(sc, &dS, gstu); }
    else { wan_carve(&sc->wan, &P, student_buf); wan_carve(&sc->wan, &dP, gstu); }
    Generator G; generator_init(&G, tmd, sc, g, o->N, o->gamma_inner); G.S = &S; G.P = &P; G.rollout_grad = o->rollout;
    DmdWork w; dmd_work_init(&w, &sc->wan, g, &dc);
    DmdConfig cf = dmd_defaults(); cf.M = o->M; cf.gamma_outer = o->gamma_outer; cf.gamma_dmd = o->gamma_dmd; cf.cfg = o->cfg_dmd; cf.gan_weight = o->gan_weight;
    AdamW os, of, od; char err[ST_ERRLEN];
    adamw_init(&os, n_student, o->student_lr, 0.9, 0.99, 1e-8, 0.01, err);
    adamw_init(&of, nw, o->fake_lr, 0.9, 0.99, 1e-8, 0.01, err);
    adamw_init(&od, nd, o->disc_lr, 0.9, 0.99, 1e-8, 0.01, err);
    Rng rng = rng_make(o->seed * 31 + (uint64_t)tmd);
    DmdLog lg = {0, 0, 0, 0}; int nl_s = 0, nl_c = 0;
    double t0 = dr_now();
    for (int it = 0; it < o->dmd_iters; it++) {
        stream_next(ws);
        int student_step = it % o->update_every == 0;   // counts optimizer steps (one per iteration here)
        if (student_step) memset(gstu, 0, sizeof(double) * n_student); else { memset(gfake, 0, sizeof(double) * nw); memset(gdisc, 0, sizeof(double) * nd); }
        for (int b = 0; b < ws->B; b++) {
            const double* x = ws->x + (size_t)b * ws->numel; const double* ctx = ws->ctx + (size_t)b * ws->nctx;
            if (student_step) {
                DmdStats st = dmd_student_sample(&G, tmd ? &dS : NULL, tmd ? NULL : &dP, &w, &T, &F, &D, &dc, g, x, ctx, sc->wan.text_len, NULL, 0, &cf, &rng, 1.0 / ws->B);
                lg.vsd += st.vsd; lg.gan_g += st.gan_g; nl_s++;
            } else {
                DmdStats st = dmd_critic_sample(&G, &dF, &dD, &w, &T, &F, &D, &dc, g, x, ctx, sc->wan.text_len, &cf, &rng, 1.0 / ws->B);
                lg.dsm += st.dsm; lg.gan_d += st.gan_d; nl_c++;
            }
        }
        double gn;
        if (student_step) { if (adamw_step(&os, student_buf, gstu, 1.0, &gn)) fprintf(stderr, "  %s: student step skipped (non-finite gradient)\n", label); }
        else { if (adamw_step(&of, fake, gfake, 1.0, &gn)) fprintf(stderr, "  %s: fake-score step skipped\n", label);
               if (adamw_step(&od, disc, gdisc, 1.0, &gn)) fprintf(stderr, "  %s: discriminator step skipped\n", label); }
        if ((it + 1) % 50 == 0 || it + 1 == o->dmd_iters) {
            double el = dr_now() - t0;
            printf("  %s iter %4d/%d  vsd %.4f  gan_g %.3f  dsm %.4f  gan_d %.3f  (%.2f s/iter, ETA %.0f s)\n", label, it + 1, o->dmd_iters,
                   nl_s ? lg.vsd / nl_s : 0, nl_s ? lg.gan_g / nl_s : 0, nl_c ? lg.dsm / nl_c : 0, nl_c ? lg.gan_d / nl_c : 0,
                   el / (it + 1), el / (it + 1) * (o->dmd_iters - it - 1));
            memset(&lg, 0, sizeof(lg)); nl_s = nl_c = 0;
        }
    }
    adamw_free(&os); adamw_free(&of); adamw_free(&od);
    dmd_work_free(&w); generator_free(&G);
    free(fake); free(gfake); free(gstu); free(disc); free(gdisc);
}

// runs everything; fills rows (at most 12) and returns their count
static int distill_run(const DistillOpts* o, DistillRow* rows) {
    char err[ST_ERRLEN];
    WorldConfig wc = world_config_tiny();
    StudentConfig sc; memset(&sc, 0, sizeof(sc));
    wan_preset(&sc.wan, "tiny", err);
    sc.head_blocks = o->H; sc.fusion = o->fusion; sc.fuse_ffn_dim = sc.wan.ffn_dim;
    WanGrid g; if (wan_grid(&g, &sc.wan, wc.C, wc.T, wc.H, wc.W, err)) { fprintf(stderr, "distill: %s\n", err); return 0; }
    size_t nw = wan_num_params(&sc.wan), ns = student_num_params(&sc);
    printf("\n[distill] tiny world %dx%dx%dx%d, DiT D %d, %d layers, %d tokens; student M %d, N %d, H %d (%s fusion)\n", wc.C, wc.T, wc.H, wc.W,
           sc.wan.dim, sc.wan.num_layers, g.L, o->M, o->N, o->H, o->fusion ? "concat" : "gated");
    // ---- teacher: flow matching with condition dropout
    double* teacher = (double*)malloc(sizeof(double) * nw); double* gt = (double*)calloc(nw, sizeof(double));
    wan_init_train(&sc.wan, teacher, o->seed);
    WanAct act; wan_act_init(&act, &sc.wan, &g);
    AdamW ot; adamw_init(&ot, nw, o->teacher_lr, 0.9, 0.99, 1e-8, 0.01, err);
    WorldStream ws; stream_init(&ws, &wc, o->seed, o->teacher_batch);
    int teacher_steps = o->teacher_steps;
    if (o->teacher_cache) {
        FILE* f = fopen(o->teacher_cache, "rb");
        if (f) {
            fclose(f);
            WanConfig lc = sc.wan; double* lb = NULL;
            if (wan_load(o->teacher_cache, &lc, 0, 0, &lb, err)) { fprintf(stderr, "distill: cached teacher: %s\n", err); }
            else { memcpy(teacher, lb, sizeof(double) * nw); free(lb); teacher_steps = 0; printf("  teacher loaded from %s\n", o->teacher_cache); }
        }
    }
    FlowMatchOpts fo = {0.1, 1.0, 0};
    Rng rng = rng_make(o->seed * 17);
    const double* ctxp[64]; int rows_c[64];
    double t0 = dr_now(), acc = 0; int na = 0;
    for (int step = 0; step < teacher_steps; step++) {
        stream_next(&ws);
        for (int b = 0; b < ws.B; b++) { ctxp[b] = ws.ctx + (size_t)b * ws.nctx; rows_c[b] = wc.text_len; }
        FlowMatchBatch fb = {ws.B, wc.C, wc.T, wc.H, wc.W, ws.x, ctxp, rows_c};
        double loss, gn;
        ot.lr = o->teacher_lr * fmin(1.0, (step + 1) / 50.0);   // linear warm-up
        if (teacher_train_step(&loss, &gn, &ot, teacher, gt, &act, &fb, &fo, 1.0, &rng, err) < 0) { fprintf(stderr, "distill: %s\n", err); break; }
        acc += loss; na++;
        if ((step + 1) % 100 == 0 || step + 1 == o->teacher_steps) {
            double el = dr_now() - t0;
            printf("  teacher step %4d/%d  flow-matching loss %.4f  (%.3f s/step, ETA %.0f s)\n", step + 1, o->teacher_steps, acc / na, el / (step + 1), el / (step + 1) * (o->teacher_steps - step - 1));
            acc = 0; na = 0;
        }
    }
    stream_free(&ws);
    // the teacher is kept as a checkpoint keeps it (F32), so a run from a cached teacher equals one that trains it
    for (size_t i = 0; i < nw; i++) teacher[i] = (float)teacher[i];
    if (o->teacher_cache && teacher_steps > 0) {
        const char* meta[] = {"note", "tiny-world teacher trained by ./test_tmd distill"};
        if (wan_save(o->teacher_cache, &sc.wan, teacher, meta, 1, err)) fprintf(stderr, "distill: %s\n", err);
        else printf("  teacher saved to %s\n", o->teacher_cache);
    }
    // ---- evaluation set and the Fréchet reference
    WorldSet ev, refset; world_generate(&wc, WORLD_ANY, o->eval_n, o->seed + 1000, &ev); world_generate(&wc, WORLD_TRAIN, 64, o->seed + 2000, &refset);
    ScoreRef ref; score_ref_init(&ref, refset.clips, refset.n, wc.T, wc.H, wc.W, err);
    int nr = 0;
    DistillRow* r = rows;
    size_t numel = world_clip_numel(&wc);
    float* sheet = (float*)calloc(numel * DISTILL_SHEET_CLIPS * DISTILL_MAX_ROWS, sizeof(float));
#define KEEP (sheet + numel * DISTILL_SHEET_CLIPS * nr)
    WanParams TP; wan_carve(&sc.wan, &TP, teacher);
    double* ctxbuf = (double*)malloc(sizeof(double) * ws.nctx);
    { // real clips, for scale
        WorldScore s; score_clips(&s, ev.clips, ev.n, wc.T, wc.H, wc.W, (const char* const*)ev.captions, &ref, &wc, NULL, err);
        memset(&r[nr], 0, sizeof(DistillRow)); snprintf(r[nr].name, sizeof(r[nr].name), "real clips");
        r[nr].quality = 100 * s.quality; r[nr].semantic = 100 * s.semantic; r[nr].total = 100 * s.total; nr++;
    }
    TeacherRowCtx tctx; memset(&tctx, 0, sizeof(tctx));
    tctx.act = &act; tctx.wv.act = &act; tctx.wv.P = &TP; tctx.ev = &ev; tctx.ctx = ctxbuf;
    tctx.so.steps = o->teacher_eval_steps; tctx.so.shift = o->shift_eval; tctx.so.guidance = o->cfg_eval; tctx.so.solver = SOLVER_UNIPC; tctx.so.grid = GRID_UNIPC; tctx.so.truncate_t = 0;
    char nm[48];
    snprintf(nm, sizeof(nm), "teacher UniPC %d steps, CFG %g", o->teacher_eval_steps, o->cfg_eval);
    eval_row(&r[nr], nm, 2.0 * o->teacher_eval_steps, teacher_row_fn, &tctx, &ev, &ref, &wc, o->seed, KEEP); nr++;
    int euler_steps[3] = {1, 2, 4};
    for (int k = 0; k < 3; k++) {
        tctx.so.steps = euler_steps[k]; tctx.so.solver = SOLVER_EULER;
        snprintf(nm, sizeof(nm), "teacher Euler %d step%s, CFG %g", euler_steps[k], euler_steps[k] > 1 ? "s" : "", o->cfg_eval);
        eval_row(&r[nr], nm, 2.0 * euler_steps[k], teacher_row_fn, &tctx, &ev, &ref, &wc, o->seed, KEEP); nr++;
    }
    // ---- Stage 1: TM-MF (or TM). Each stage draws from its own stream, so a run from a cached teacher equals one
    // that trains it.
    rng = rng_make(o->seed * 17 + 1);
    double* stu = (double*)malloc(sizeof(double) * ns); double* gs = (double*)calloc(ns, sizeof(double));
    student_init(&sc, stu, teacher, o->seed + 5);
    StudentParams S, dS; student_carve(&sc, &S, stu); student_carve(&sc, &dS, gs);
    TmmfWork tw; tmmf_work_init(&tw, &sc, &g);
    TmmfConfig tc = tmmf_defaults(); tc.M = o->M; tc.N = o->N; tc.gamma_outer = o->gamma_outer; tc.gamma_inner = o->gamma_inner; tc.cfg = o->cfg_tmmf; tc.tm_only = o->tm_only;
    AdamW om; adamw_init(&om, ns, o->tmmf_lr, 0.9, 0.99, 1e-8, 0.01, err);
    stream_init(&ws, &wc, o->seed + 3, o->tmmf_batch);
    t0 = dr_now(); acc = 0; na = 0; double mse = 0;
    for (int step = 0; step < o->tmmf_steps; step++) {
        stream_next(&ws);
        memset(gs, 0, sizeof(double) * ns);
        for (int b = 0; b < ws.B; b++) {
            TmmfStats st = tmmf_sample(&dS, &S, &sc, &g, &tw, ws.x + (size_t)b * ws.numel, ws.ctx + (size_t)b * ws.nctx, wc.text_len, NULL, 0, &tc, &rng, 1.0 / ws.B);
            acc += st.loss; mse += st.mse; na++;
        }
        double gn; if (adamw_step(&om, stu, gs, 1.0, &gn)) fprintf(stderr, "  tm-mf step %d skipped (non-finite gradient)\n", step + 1);
        if ((step + 1) % 50 == 0 || step + 1 == o->tmmf_steps) {
            double el = dr_now() - t0;
            printf("  %s step %4d/%d  loss %.4f  mse %.4f  (%.3f s/step, ETA %.0f s)\n", o->tm_only ? "TM" : "TM-MF", step + 1, o->tmmf_steps, acc / na, mse / na,
                   el / (step + 1), el / (step + 1) * (o->tmmf_steps - step - 1));
            acc = 0; mse = 0; na = 0;
        }
    }
    stream_free(&ws); adamw_free(&om); tmmf_work_free(&tw);
    TmdRowCtx mctx = {&S, &sc, &g, &ev, ctxbuf, o->M, o->N, o->gamma_outer, o->gamma_inner, o->seed};
    double nfe = effective_nfe(o->M, o->N, o->H, sc.wan.num_layers);
    snprintf(nm, sizeof(nm), "TMD M%d N%d H%d after Stage 1", o->M, o->N, o->H);
    eval_row(&r[nr], nm, nfe, tmd_row_fn, &mctx, &ev, &ref, &wc, o->seed, KEEP); nr++;
    // ---- Stage 2: DMD2-v with rollout
    stream_init(&ws, &wc, o->seed + 4, o->dmd_batch);
    run_dmd("TMD", 1, o, &sc, &g, stu, ns, teacher, &ws);
    for (int M = 1; M <= o->M; M++) {
        mctx.M = M;
        snprintf(nm, sizeof(nm), "TMD M%d N%d H%d", M, o->N, o->H);
        eval_row(&r[nr], nm, effective_nfe(M, o->N, o->H, sc.wan.num_layers), tmd_row_fn, &mctx, &ev, &ref, &wc, o->seed, KEEP); nr++;
    }
    stream_free(&ws);
    if (o->baseline) {
        double* base = (double*)malloc(sizeof(double) * nw); memcpy(base, teacher, sizeof(double) * nw);
        stream_init(&ws, &wc, o->seed + 4, o->dmd_batch);
        run_dmd("DMD2-v", 0, o, &sc, &g, base, nw, teacher, &ws);
        stream_free(&ws);
        WanParams BP; wan_carve(&sc.wan, &BP, base);
        DmdRowCtx bctx = {&BP, &sc.wan, &g, &ev, ctxbuf, o->M, o->gamma_outer};
        for (int M = 1; M <= o->M; M++) {
            bctx.M = M; snprintf(nm, sizeof(nm), "DMD2-v M%d", M);
            eval_row(&r[nr], nm, M, dmd_row_fn, &bctx, &ev, &ref, &wc, o->seed, KEEP); nr++;
        }
        free(base);
    }
    if (o->sheet) {  // the first clips of every row (row 0: the real clips), captioned "row: caption"
        memcpy(sheet, ev.clips, sizeof(float) * numel * DISTILL_SHEET_CLIPS);
        char** caps = (char**)malloc(sizeof(char*) * nr * DISTILL_SHEET_CLIPS);
        for (int i = 0; i < nr * DISTILL_SHEET_CLIPS; i++) {
            caps[i] = (char*)malloc(160);
            snprintf(caps[i], 160, "%s: %s", r[i / DISTILL_SHEET_CLIPS].name, ev.captions[i % DISTILL_SHEET_CLIPS]);
        }
        if (png_write_sheet(o->sheet, sheet, nr * DISTILL_SHEET_CLIPS, wc.T, wc.H, wc.W, (const char* const*)caps, 0, err)) fprintf(stderr, "distill: %s\n", err);
        else printf("  contact sheet: %s\n", o->sheet);
        for (int i = 0; i < nr * DISTILL_SHEET_CLIPS; i++) free(caps[i]);
        free(caps);
    }
#undef KEEP
    free(sheet);
    free(stu); free(gs); free(teacher); free(gt); free(ctxbuf);
    wan_act_free(&act); adamw_free(&ot);
    world_set_free(&ev); world_set_free(&refset);
    return nr;
}

static void distill_print(const DistillRow* r, int n) {
    printf("\n  %-34s %8s %8s %9s %8s %10s\n", "sampler", "eff.NFE", "quality", "semantic", "total", "ms/sample");
    for (int i = 0; i < n; i++) {
        if (r[i].nfe > 0) printf("  %-34s %8.2f %8.1f %9.1f %8.1f %10.1f\n", r[i].name, r[i].nfe, r[i].quality, r[i].semantic, r[i].total, r[i].ms_per_sample);
        else printf("  %-34s %8s %8.1f %9.1f %8.1f %10s\n", r[i].name, "-", r[i].quality, r[i].semantic, r[i].total, "-");
    }
}
