// cpu/distill_run.h: the whole method end to end on the CPU reference, in the built-in tiny world:
//   teacher (flow matching) → Stage 1 TM-MF → Stage 2 DMD2-v with rollout → sample → score (toy VBench)
// and the DMD2-v baseline next to it (KD-warmed at M = 1). `./test_tmd distill` runs it with any settings and prints
// the table; cpu/ablate.h reuses its pieces (the world, Stage 1, KD, Stage 2, evaluation) for the paper's ablations.
#pragma once
#include "teacher_cpu.h"
#include "distill_cpu.h"
#include "distill_table.h"   // DistillRow, distill_print: the table the GPU pipeline prints too
#include "../world/world.h"
#include "../world/text.h"
#include "../world/score.h"
#include "../world/png.h"
#include "../lib/npy.h"
#include "../lib/flags.h"
#include "../lib/timer.h"
#include <time.h>

typedef struct {
    uint64_t seed;        // the distillation's draws: student init, Stage 1 and 2 streams, KD pairs' order
    uint64_t world_seed;  // the teacher (init, data, its draws), the evaluation set, its reference and its noise
    int teacher_steps, teacher_batch; double teacher_lr;
    int tmmf_steps, tmmf_batch; double tmmf_lr; int tm_only; int plain_tangent;
    int fidelity;         // also every row's per-caption distance to the distillation target (the teacher at cfg_dmd)
    int cond_k, target_k; // clips per evaluation caption: of every row, of the target
    int xhat_eq15;        // probe: Stage 2's x̂ = x1 − ŷ (the paper's Eq. 15) instead of x_t − t·ŷ
    int backsim;          // probe: Stage 2's x_{t_i} by backward simulation instead of from real data
    int outer_sde;        // probe: fresh noise between the TMD sampler's outer steps (the paper's are deterministic)
    double head_lr_scale; // the flow head's new parameters (s − r embedding, fusion) learn at lr × this, Stage 1 and 2
    int dmd_iters, dmd_batch; double student_lr, fake_lr, disc_lr; int update_every; double gan_weight; int rollout;
    int gan_own_noise;
    double clip_student, clip_fake, clip_disc, clip_tmmf;  // max gradient norm per network; 0: no clipping
    int kd_pairs, kd_steps, kd_batch; double kd_lr;        // KD warm-up of one-step students (teacher ODE pairs)
    int kd_tmd;           // also KD-warm the one-step TMD student (the paper warms only the DMD2-v baseline)
    int M, N, H, fusion;
    int per_m; // 1: a separate student for every M in 1..M (the paper's protocol); 0: one at M, sampled at 1..M
    double gamma_outer;   // t_student shift; 0: the default for each M (outer_shift_default: 10, or 5 for M >= 4)
    double gamma_inner, gamma_dmd, cfg_dmd, cfg_tmmf;
    int baseline;        // also distill the DMD2-v baseline student (same Stage 2 settings; KD-warmed at M = 1)
    int eval_n;          // clips scored per row
    int teacher_eval_steps; double cfg_eval, shift_eval;
    int disc_hidden;
    const char* sheet;   // contact sheet path (NULL: none)
    const char* teacher_cache;  // load the teacher from here if the file exists, else train it and save it here
    const char* kd_cache;       // the same for the KD pairs' teacher samples (.npy)
} DistillOpts;

// The tiny run's settings. The VSD guidance cfg_dmd is the tiny teacher's own best guidance, 2 (= cfg_eval: UniPC
// 16 steps scores 58.2 at CFG 2, 47.2 at CFG 5), as Table 7's CFG 5 is Wan's own best: so the distribution Stage 2
// distils toward is the teacher row the table shows, and "closer to the target" and "closer to the teacher the table
// scores" are one question, as on Wan. At CFG 5 the tiny target is oversaturated, and a student that matched it
// would lose toy-VBench points for its fidelity (dev/results/ablations-cpu.md, "The VSD guidance"). Gradient clipping follows FastGen (student 10; fake score, discriminator and Stage 1
// none) and the tiny run keeps it: at this scale the student's Stage 2 gradient norm stays below 10 (the log's
// "max |g_student|": about 6 in the first 100 iterations, 2 to 4 after), so the clip is a guard against outlier
// steps, as in FastGen, not a change to the updates.
static DistillOpts distill_defaults(void) {
    DistillOpts o;
    memset(&o, 0, sizeof(o));
    o.seed = 1; o.world_seed = 1;
    o.teacher_steps = 1500; o.teacher_batch = 4; o.teacher_lr = 3e-3;
    o.tmmf_steps = 400; o.tmmf_batch = 4; o.tmmf_lr = 3e-4; o.head_lr_scale = 1;
    o.dmd_iters = 500; o.dmd_batch = 2; o.student_lr = 1e-4; o.fake_lr = 1e-4; o.disc_lr = 1e-4; o.update_every = 5;
    o.gan_weight = 0.03; o.rollout = 1;
    o.clip_student = 10; o.clip_fake = 0; o.clip_disc = 0; o.clip_tmmf = 0;
    o.kd_pairs = 128; o.kd_steps = 200; o.kd_batch = 4; o.kd_lr = 7e-4;
    o.M = 2; o.N = 2; o.H = 1; o.fusion = FUSION_GATED; o.per_m = 1;
    o.gamma_outer = 0; o.gamma_inner = 10; o.gamma_dmd = 5; o.cfg_dmd = 2; o.cfg_tmmf = 3;
    o.fidelity = 1; o.cond_k = 8; o.target_k = 8;
    o.baseline = 1; o.eval_n = 16; o.teacher_eval_steps = 16; o.cfg_eval = 2; o.shift_eval = 3;
    o.disc_hidden = 16;
    return o;
}
static double distill_outer_shift(const DistillOpts* o, int M) {
    return o->gamma_outer > 0 ? o->gamma_outer : outer_shift_default(M);
}


// a training batch from the world's endless stream: clips → double, context rows = text_len (zero rows past the
// caption)
typedef struct {
    WorldConfig wc;
    WRng rng;
    int B;
    float *clipf, *ctxf;
    double *x, *ctx;
    size_t numel, nctx;
} WorldStream;
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
        if (strstr(nm, "modulation"))
            for (size_t k = 0; k < t->numel; k++) p[k] = rng_normal(&r) / sqrt((double)c->dim);
        else if (strstr(nm, "norm")) for (size_t k = 0; k < t->numel; k++) p[k] = strstr(nm, "bias") ? 0 : 1;
        else if (t->ndim == 1) for (size_t k = 0; k < t->numel; k++) p[k] = 0;
        else if (!strncmp(nm, "head.head", 9)) for (size_t k = 0; k < t->numel; k++) p[k] = 0;
        else if (!strncmp(nm, "text_embedding", 14) || !strncmp(nm, "time_embedding", 14))
            for (size_t k = 0; k < t->numel; k++) p[k] = 0.02 * rng_normal(&r);
        else {
            double fan_out = (double)t->shape[0], fan_in = (double)(t->numel / (size_t)t->shape[0]);
            double a = sqrt(6.0 / (fan_in + fan_out));
            for (size_t k = 0; k < t->numel; k++) p[k] = a * (2 * rng_uniform(&r) - 1);
        }
    }
    free(tl);
}

// samples draws d0..d0+nd-1 of each of n captions into clips [n, nd, 3, T, H, W] (caption-major) with `fn`, draw d of
// caption i from the noise of rng_make(base + i) for d = 0 (the table's clip) and base + 100000 d + i after, clamped
// as a decoder would; returns ms per clip. fn(x in/out, caption i, draw d, user): d also picks the sampler's own
// draws (a TMD student's inner noise)
typedef void (*SampleFn)(double* x, int i, int draw, void* user);
#define DISTILL_MAX_DRAWS 32
static double sample_clips(float* clips, int n, int d0, int nd, size_t numel, SampleFn fn, void* user, uint64_t base) {
    double* x = (double*)malloc(sizeof(double) * numel);
    double t0 = now_s();
    for (int i = 0; i < n; i++)
        for (int d = d0; d < d0 + nd; d++) {
            Rng r = rng_make(base + 100000 * (uint64_t)d + (uint64_t)i);
            for (size_t k = 0; k < numel; k++) x[k] = rng_normal(&r);
            fn(x, i, d, user);
            float* c = clips + ((size_t)i * nd + (d - d0)) * numel;
            for (size_t k = 0; k < numel; k++) c[k] = (float)fmax(-1.0, fmin(1.0, x[k])); // decoder clamp
        }
    free(x);
    return (now_s() - t0) * 1e3 / ((double)n * nd);
}

// the distillation target of the per-caption columns: target_k analysed clips for each of n_cap evaluation captions
typedef struct { const ScoreClip* clips; int n_cap, k; } DistillTarget;

// samples one clip per eval caption with `fn` (draw 0), scores them with the toy VBench (and the bootstrap standard
// error of its total over captions), fills a table row; with a target (NULL: none) also cond_k - 1 further draws per
// caption and the row's per-caption distance to the target and its diversity (world/score.h score_cond)
static void eval_row(DistillRow* row, const char* name, double nfe, SampleFn fn, void* user, const WorldSet* ev,
                     const ScoreRef* ref, const DistillTarget* target, int cond_k, const WorldConfig* wc,
                     uint64_t seed, float* keep) {
    size_t numel = world_clip_numel(wc);
    float* clips = (float*)malloc(sizeof(float) * numel * ev->n);
    ScoreClip* per = (ScoreClip*)malloc(sizeof(ScoreClip) * ev->n);
    double ms = sample_clips(clips, ev->n, 0, 1, numel, fn, user, seed * 1000003);   // the same noise for every row
    WorldScore ws; char err[ST_ERRLEN];
    memset(row, 0, sizeof(*row));
    snprintf(row->name, sizeof(row->name), "%s", name);
    row->nfe = nfe; row->ms_per_sample = ms;
    if (score_clips(&ws, clips, ev->n, wc->T, wc->H, wc->W, (const char* const*)ev->captions, ref, wc, per, err)) {
        fprintf(stderr, "distill: scoring %s failed: %s\n", name, err); row->total = -1;
    } else {
        row->quality = 100 * ws.quality;
        row->semantic = 100 * ws.semantic;
        row->total = 100 * ws.total;
        row->frechet = ws.raw[SC_FRECHET];
        row->total_se = 100 * score_total_se(per, ev->n, ref);
        double other = 0;   // pixels of no colour class: blur, desaturated or wrong hues
        for (int i = 0; i < ev->n; i++) other += per[i].feat[SC_OTHER] / ev->n;
        printf("  %-34s semantic: colour %.2f shape %.2f count %.2f motion %.2f; 'other' pixels %.3f\n", name,
               ws.raw[SC_COLOUR], ws.raw[SC_SHAPE], ws.raw[SC_COUNT], ws.raw[SC_MOTION], other);
    }
    if (target && row->total >= 0 && target->n_cap == ev->n && cond_k >= 2 && ev->n <= DISTILL_MAX_CAPS) {
        // draws 1..cond_k-1 of every caption next to draw 0 (the clip the toy VBench scored)
        float* more = (float*)malloc(sizeof(float) * numel * ev->n * (cond_k - 1));
        ScoreClip* all = (ScoreClip*)malloc(sizeof(ScoreClip) * ev->n * cond_k);
        sample_clips(more, ev->n, 1, cond_k - 1, numel, fn, user, seed * 1000003);
        for (int i = 0; i < ev->n; i++) {
            all[i * cond_k] = per[i];
            for (int d = 1; d < cond_k; d++)
                score_clip(&all[i * cond_k + d], more + ((size_t)i * (cond_k - 1) + d - 1) * numel, wc->T, wc->H, wc->W,
                           NULL);
        }
        CondScore cs;
        if (score_cond(&cs, row->cond_cap, all, cond_k, target->clips, target->k, ev->n, err))
            fprintf(stderr, "distill: %s: %s\n", name, err);
        else {
            row->n_cap = ev->n;
            row->cond = cs.dist; row->cond_se = cs.dist_se;
            row->diversity = cs.diversity; row->diversity_se = cs.diversity_se;
        }
        free(more); free(all);
    }
    if (keep) memcpy(keep, clips, sizeof(float) * numel * (ev->n < DISTILL_SHEET_CLIPS ? ev->n : DISTILL_SHEET_CLIPS));
    free(clips); free(per);
}

// ---- the world every run shares: the teacher, the evaluation set and its Fréchet reference

typedef struct {
    WorldConfig wc; WanConfig wan; WanGrid g;
    size_t nw, numel, nctx;
    double* teacher; WanParams TP;       // F32-rounded, as a checkpoint keeps it
    WorldSet ev, refset; ScoreRef ref;
    DistillTarget target_set; const DistillTarget* target;   // the distillation target (NULL: not made)
    WanAct act; double* ctxbuf;
    int kd_n; double *kd_noise, *kd_target, *kd_ctx;   // KD pairs (made on first use)
} DistillWorld;

static StudentConfig distill_student_config(const DistillWorld* W, const DistillOpts* o) {
    StudentConfig sc; memset(&sc, 0, sizeof(sc));
    sc.wan = W->wan; sc.head_blocks = o->H; sc.fusion = o->fusion; sc.fuse_ffn_dim = W->wan.ffn_dim;
    return sc;
}

// trains the teacher (flow matching with condition dropout) or loads it from o->teacher_cache; 0 on success
static int distill_world_init(DistillWorld* W, const DistillOpts* o) {
    char err[ST_ERRLEN];
    memset(W, 0, sizeof(*W));
    W->wc = world_config_tiny();
    wan_preset(&W->wan, "tiny", err);
    if (wan_grid(&W->g, &W->wan, W->wc.C, W->wc.T, W->wc.H, W->wc.W, err)) {
        fprintf(stderr, "distill: %s\n", err);
        return -1;
    }
    W->nw = wan_num_params(&W->wan);
    W->numel = world_clip_numel(&W->wc);
    W->nctx = (size_t)W->wc.text_len * W->wc.text_dim;
    printf("\n[distill] tiny world %dx%dx%dx%d, DiT D %d, %d layers, %d tokens\n", W->wc.C, W->wc.T, W->wc.H, W->wc.W,
           W->wan.dim, W->wan.num_layers, W->g.L);
    W->teacher = (double*)malloc(sizeof(double) * W->nw);
    wan_init_train(&W->wan, W->teacher, o->world_seed);
    wan_act_init(&W->act, &W->wan, &W->g);
    int teacher_steps = o->teacher_steps;
    if (o->teacher_cache) {
        FILE* f = fopen(o->teacher_cache, "rb");
        if (f) {
            fclose(f);
            WanConfig lc = W->wan; double* lb = NULL;
            if (wan_load(o->teacher_cache, &lc, 0, 0, &lb, err)) {
                fprintf(stderr, "distill: cached teacher: %s\n", err);
            } else {
                memcpy(W->teacher, lb, sizeof(double) * W->nw);
                free(lb);
                teacher_steps = 0;
                printf("  teacher loaded from %s\n", o->teacher_cache);
            }
        }
    }
    double* gt = (double*)calloc(W->nw, sizeof(double));
    AdamW ot; adamw_init(&ot, W->nw, o->teacher_lr, 0.9, 0.99, 1e-8, 0.01, err);
    WorldStream ws; stream_init(&ws, &W->wc, o->world_seed, o->teacher_batch);
    FlowMatchOpts fo = {0.1, 1.0, 0};
    Rng rng = rng_make(o->world_seed * 17);
    const double* ctxp[64]; int rows_c[64];
    double t0 = now_s(), acc = 0; int na = 0;
    for (int step = 0; step < teacher_steps; step++) {
        stream_next(&ws);
        for (int b = 0; b < ws.B; b++) { ctxp[b] = ws.ctx + (size_t)b * ws.nctx; rows_c[b] = W->wc.text_len; }
        FlowMatchBatch fb = {ws.B, W->wc.C, W->wc.T, W->wc.H, W->wc.W, ws.x, ctxp, rows_c};
        double loss, gn;
        ot.lr = o->teacher_lr * fmin(1.0, (step + 1) / 50.0);   // linear warm-up
        if (teacher_train_step(&loss, &gn, &ot, W->teacher, gt, &W->act, &fb, &fo, 1.0, &rng, err) < 0) {
            fprintf(stderr, "distill: %s\n", err);
            break;
        }
        acc += loss; na++;
        if ((step + 1) % 100 == 0 || step + 1 == teacher_steps) {
            double el = now_s() - t0;
            printf("  teacher step %4d/%d  flow-matching loss %.4f  (%.3f s/step, ETA %.0f s)\n", step + 1,
                   teacher_steps, acc / na, el / (step + 1), el / (step + 1) * (teacher_steps - step - 1));
            acc = 0; na = 0;
        }
    }
    stream_free(&ws); adamw_free(&ot); free(gt);
    // the teacher is kept as a checkpoint keeps it (F32), so a run from a cached teacher equals one that trains it
    for (size_t i = 0; i < W->nw; i++) W->teacher[i] = (float)W->teacher[i];
    if (o->teacher_cache && teacher_steps > 0) {
        const char* meta[] = {"note", "tiny-world teacher trained by ./test_tmd distill"};
        if (wan_save(o->teacher_cache, &W->wan, W->teacher, meta, 1, err)) fprintf(stderr, "distill: %s\n", err);
        else printf("  teacher saved to %s\n", o->teacher_cache);
    }
    wan_carve(&W->wan, &W->TP, W->teacher);
    world_generate(&W->wc, WORLD_ANY, o->eval_n, o->world_seed + 1000, &W->ev);
    world_generate(&W->wc, WORLD_TRAIN, 64, o->world_seed + 2000, &W->refset);
    score_ref_init(&W->ref, W->refset.clips, W->refset.n, W->wc.T, W->wc.H, W->wc.W, err);
    W->ctxbuf = (double*)malloc(sizeof(double) * W->nctx);
    return 0;
}

static void distill_world_free(DistillWorld* W) {
    free(W->teacher); free(W->ctxbuf); free(W->kd_noise); free(W->kd_target); free(W->kd_ctx);
    free((void*)W->target_set.clips);
    wan_act_free(&W->act); world_set_free(&W->ev); world_set_free(&W->refset);
}

// the teacher's reference sampler (UniPC, CFG) on caption row ctx from noise x (overwritten)
static void distill_teacher_sample(DistillWorld* W, const DistillOpts* o, double* x, const double* ctx, int steps,
                                   int solver, double cfg) {
    WanVelocity wv; memset(&wv, 0, sizeof(wv));
    wv.act = &W->act;
    wv.P = &W->TP;
    wv.ctx_cond = ctx;
    wv.rows_cond = W->wc.text_len;
    wv.ctx_uncond = NULL;
    wv.rows_uncond = 0;
    SampleOpts so = {steps, o->shift_eval, cfg, solver, GRID_UNIPC, 0};
    int nfe; char err[ST_ERRLEN];
    if (teacher_sample(x, W->numel, wan_velocity, &wv, &so, &nfe, err))
        fprintf(stderr, "distill: teacher sampling: %s\n", err);
}

// ---- evaluation: every row samples the evaluation captions from the same noise (world_seed)

// the teacher on caption i of `set` at guidance cfg
typedef struct { DistillWorld* W; const DistillOpts* o; const WorldSet* set; int steps, solver; double cfg; } TeacherRowCtx;
static void teacher_row_fn(double* x, int i, int draw, void* user) {
    (void)draw;
    TeacherRowCtx* t = (TeacherRowCtx*)user;
    for (size_t k = 0; k < t->W->nctx; k++) t->W->ctxbuf[k] = t->set->context[(size_t)i * t->W->nctx + k];
    distill_teacher_sample(t->W, t->o, x, t->W->ctxbuf, t->steps, t->solver, t->cfg);
}

typedef struct {
    DistillWorld* W;
    const StudentParams* S;
    const StudentConfig* sc;
    int M, N;
    double go, gi;
    uint64_t seed;
    int outer_sde;
} TmdRowCtx;
static void tmd_row_fn(double* x, int i, int draw, void* user) {
    TmdRowCtx* t = (TmdRowCtx*)user; DistillWorld* W = t->W;
    for (size_t k = 0; k < W->nctx; k++) W->ctxbuf[k] = W->ev.context[(size_t)i * W->nctx + k];
    Rng r = rng_make(t->seed * 7919 + i + 100000 * (uint64_t)draw);   // the inner flow's noise, per draw
    tmd_sample(x, t->S, t->sc, &W->g, W->ctxbuf, W->ev.text_len, t->M, t->N, t->go, t->gi, t->outer_sde, &r);
}

typedef struct { DistillWorld* W; const WanParams* P; int M; double go; } DmdRowCtx;
static void dmd_row_fn(double* x, int i, int draw, void* user) {
    (void)draw;
    DmdRowCtx* t = (DmdRowCtx*)user; DistillWorld* W = t->W;
    for (size_t k = 0; k < W->nctx; k++) W->ctxbuf[k] = W->ev.context[(size_t)i * W->nctx + k];
    dmd_sample(x, t->P, &W->wan, &W->g, W->ctxbuf, W->ev.text_len, t->M, t->go);
}

// the distillation target: what Stage 2's VSD gradient pulls the students toward is the teacher's distribution at the
// guidance cfg_dmd (Eq. 11 with CFG). The per-caption columns compare every row with target_k of the teacher's
// many-step samples at cfg_dmd for each evaluation caption, from noise no table row uses (draws 50 and up).
static void distill_target_init(DistillWorld* W, const DistillOpts* o) {
    int n = W->ev.n, k = o->target_k;
    float* clips = (float*)malloc(sizeof(float) * W->numel * n * k);
    ScoreClip* cs = (ScoreClip*)malloc(sizeof(ScoreClip) * n * k);
    TeacherRowCtx tc = {W, o, &W->ev, o->teacher_eval_steps, SOLVER_UNIPC, o->cfg_dmd};
    double t0 = now_s();
    sample_clips(clips, n, 50, k, W->numel, teacher_row_fn, &tc, o->world_seed * 1000003);
    for (int i = 0; i < n * k; i++) score_clip(&cs[i], clips + (size_t)i * W->numel, W->wc.T, W->wc.H, W->wc.W, NULL);
    W->target_set.clips = cs; W->target_set.n_cap = n; W->target_set.k = k;
    W->target = &W->target_set;
    printf("  distillation target: %d teacher samples per evaluation caption (UniPC %d steps, CFG %g), %.0f s\n", k,
           o->teacher_eval_steps, o->cfg_dmd, now_s() - t0);
    free(clips);
}

// the teacher's rows: UniPC many-step CFG, and Euler at 1, 2, 4 steps; returns the count (the real clips first)
static int distill_teacher_rows(DistillWorld* W, const DistillOpts* o, DistillRow* r, float* sheet) {
    char err[ST_ERRLEN], nm[48]; int nr = 0;
    size_t per = W->numel * DISTILL_SHEET_CLIPS;
    WorldScore s;
    score_clips(&s, W->ev.clips, W->ev.n, W->wc.T, W->wc.H, W->wc.W, (const char* const*)W->ev.captions, &W->ref,
                &W->wc, NULL, err);
    memset(&r[nr], 0, sizeof(DistillRow)); snprintf(r[nr].name, sizeof(r[nr].name), "real clips");
    r[nr].quality = 100 * s.quality;
    r[nr].semantic = 100 * s.semantic;
    r[nr].total = 100 * s.total;
    r[nr].frechet = s.raw[SC_FRECHET];
    if (sheet) memcpy(sheet, W->ev.clips, sizeof(float) * per);
    nr++;
    TeacherRowCtx tc = {W, o, &W->ev, o->teacher_eval_steps, SOLVER_UNIPC, o->cfg_eval};
    snprintf(nm, sizeof(nm), "teacher UniPC %d steps, CFG %g", o->teacher_eval_steps, o->cfg_eval);
    eval_row(&r[nr], nm, 2.0 * o->teacher_eval_steps, teacher_row_fn, &tc, &W->ev, &W->ref, W->target, o->cond_k, &W->wc, o->world_seed,
             sheet ? sheet + per * nr : NULL);
    nr++;
    if (W->target && o->cfg_dmd != o->cfg_eval) {   // the target itself, a second draw: the per-caption floor
        TeacherRowCtx td = {W, o, &W->ev, o->teacher_eval_steps, SOLVER_UNIPC, o->cfg_dmd};
        snprintf(nm, sizeof(nm), "teacher UniPC %d steps, CFG %g", o->teacher_eval_steps, o->cfg_dmd);
        eval_row(&r[nr], nm, 2.0 * o->teacher_eval_steps, teacher_row_fn, &td, &W->ev, &W->ref, W->target, o->cond_k,
                 &W->wc, o->world_seed, sheet ? sheet + per * nr : NULL);
        nr++;
    }
    int euler_steps[3] = {1, 2, 4};
    for (int k = 0; k < 3; k++) {
        tc.steps = euler_steps[k]; tc.solver = SOLVER_EULER;
        snprintf(nm, sizeof(nm), "teacher Euler %d step%s, CFG %g", euler_steps[k], euler_steps[k] > 1 ? "s" : "",
                 o->cfg_eval);
        eval_row(&r[nr], nm, 2.0 * euler_steps[k], teacher_row_fn, &tc, &W->ev, &W->ref, W->target, o->cond_k, &W->wc, o->world_seed,
                 sheet ? sheet + per * nr : NULL);
        nr++;
    }
    return nr;
}

static void distill_eval_tmd(DistillWorld* W, const DistillOpts* o, const StudentConfig* sc, const double* stu, int M,
                             const char* name, DistillRow* row, float* keep) {
    StudentParams S; student_carve(sc, &S, (double*)stu);
    TmdRowCtx c = {W, &S, sc, M, o->N, distill_outer_shift(o, M), o->gamma_inner, o->world_seed, o->outer_sde};
    eval_row(row, name, effective_nfe(M, o->N, o->H, W->wan.num_layers), tmd_row_fn, &c, &W->ev, &W->ref, W->target, o->cond_k, &W->wc,
             o->world_seed, keep);
}
static void distill_eval_dmd(DistillWorld* W, const DistillOpts* o, const double* base, int M, const char* name,
                             DistillRow* row, float* keep) {
    WanParams P; wan_carve(&W->wan, &P, (double*)base);
    DmdRowCtx c = {W, &P, M, distill_outer_shift(o, M)};
    eval_row(row, name, M, dmd_row_fn, &c, &W->ev, &W->ref, W->target, o->cond_k, &W->wc, o->world_seed, keep);
}

// ---- Stage 1: TM-MF (or TM) from the teacher into stu [student_num_params]

static void distill_stage1(DistillWorld* W, const DistillOpts* o, int M, double* stu) {
    char err[ST_ERRLEN];
    StudentConfig sc = distill_student_config(W, o);
    size_t ns = student_num_params(&sc);
    double* gs = (double*)calloc(ns, sizeof(double));
    student_init(&sc, stu, W->teacher, o->seed + 5);
    StudentParams S, dS; student_carve(&sc, &S, stu); student_carve(&sc, &dS, gs);
    TmmfWork tw; tmmf_work_init(&tw, &sc, &W->g);
    TmmfConfig tc = tmmf_defaults(M);
    tc.N = o->N;
    tc.gamma_outer = distill_outer_shift(o, M);
    tc.gamma_inner = o->gamma_inner;
    tc.cfg = o->cfg_tmmf; tc.tm_only = o->tm_only; tc.plain_tangent = o->plain_tangent;
    AdamW om; adamw_init(&om, ns, o->tmmf_lr, 0.9, 0.99, 1e-8, 0.01, err);
    om.scaled_from = W->nw; om.lr_scale = o->head_lr_scale;
    WorldStream ws; stream_init(&ws, &W->wc, o->seed + 3, o->tmmf_batch);
    Rng rng = rng_make(o->seed * 17 + 1);
    double t0 = now_s(), acc = 0, mse = 0; int na = 0;
    for (int step = 0; step < o->tmmf_steps; step++) {
        stream_next(&ws);
        memset(gs, 0, sizeof(double) * ns);
        for (int b = 0; b < ws.B; b++) {
            TmmfStats st = tmmf_sample(&dS, &S, &sc, &W->g, &tw, ws.x + (size_t)b * ws.numel,
                                       ws.ctx + (size_t)b * ws.nctx, W->wc.text_len, NULL, 0, &tc, &rng, 1.0 / ws.B);
            acc += st.loss; mse += st.mse; na++;
        }
        double gn;
        if (adamw_step(&om, stu, gs, o->clip_tmmf, &gn))
            fprintf(stderr, "  tm-mf step %d skipped (non-finite gradient)\n", step + 1);
        if ((step + 1) % 100 == 0 || step + 1 == o->tmmf_steps) {
            double el = now_s() - t0;
            printf("  %s M%d step %4d/%d  loss %.4f  mse %.4f  (%.3f s/step, ETA %.0f s)\n",
                   o->tm_only ? "TM" : "TM-MF", M, step + 1, o->tmmf_steps, acc / na, mse / na, el / (step + 1),
                   el / (step + 1) * (o->tmmf_steps - step - 1));
            acc = 0; mse = 0; na = 0;
        }
    }
    if (sc.fusion == FUSION_GATED) {   // how far Stage 1 opened the fusion (both gates start closed-ish: g = 0)
        double ga = 0; int D = sc.wan.dim;
        for (int i = 0; i < D; i++) ga += fabs(S.x.fuse_modulation[2 * D + i]) / D;
        printf("  flow-head fusion after Stage 1: mean |own gate| %.4f, global gate sigmoid(a) %.4f\n", ga,
               1 / (1 + exp(-S.x.fuse_gate[0])));
    }
    stream_free(&ws); adamw_free(&om); tmmf_work_free(&tw); free(gs);
}

// ---- KD warm-up: teacher ODE pairs (noise, the teacher's many-step CFG sample from it, a training caption), made
// once and cached like the teacher; then regress the one-step student onto them (paper Table 4, App. A.3)

static void distill_kd_pairs(DistillWorld* W, const DistillOpts* o) {
    if (W->kd_n == o->kd_pairs && W->kd_target) return;
    char err[ST_ERRLEN];
    int P = o->kd_pairs; size_t n = W->numel;
    free(W->kd_noise); free(W->kd_target); free(W->kd_ctx);
    W->kd_noise = (double*)malloc(sizeof(double) * n * P); W->kd_target = (double*)malloc(sizeof(double) * n * P);
    W->kd_ctx = (double*)malloc(sizeof(double) * W->nctx * P);
    // noise and captions come from their own seeded streams, so only the teacher's samples need caching
    WorldStream ws; stream_init(&ws, &W->wc, o->world_seed + 6, 1);
    Rng r = rng_make(o->world_seed * 131 + 7);
    for (int i = 0; i < P; i++) {
        stream_next(&ws);
        memcpy(W->kd_ctx + (size_t)i * W->nctx, ws.ctx, sizeof(double) * W->nctx);
        for (size_t k = 0; k < n; k++) W->kd_noise[(size_t)i * n + k] = rng_normal(&r);
    }
    stream_free(&ws);
    int64_t shape[5] = {P, W->wc.C, W->wc.T, W->wc.H, W->wc.W};
    float* f = NULL;
    if (o->kd_cache) {
        FILE* fp = fopen(o->kd_cache, "rb");
        if (fp) {
            fclose(fp);
            if (npy_read_shape(o->kd_cache, &f, 5, shape, err)) {
                fprintf(stderr, "distill: KD cache %s: %s (making the pairs again)\n", o->kd_cache, err);
                f = NULL;
            } else printf("  KD pairs loaded from %s\n", o->kd_cache);
        }
    }
    if (!f) {
        f = (float*)malloc(sizeof(float) * n * P);
        double t0 = now_s();
        for (int i = 0; i < P; i++) {
            double* x = W->kd_target + (size_t)i * n;
            memcpy(x, W->kd_noise + (size_t)i * n, sizeof(double) * n);
            distill_teacher_sample(W, o, x, W->kd_ctx + (size_t)i * W->nctx, o->teacher_eval_steps, SOLVER_UNIPC, o->cfg_eval);
            for (size_t k = 0; k < n; k++) f[(size_t)i * n + k] = (float)x[k];
        }
        printf("  KD: %d teacher pairs (UniPC %d steps, CFG %g) in %.0f s\n", P, o->teacher_eval_steps, o->cfg_eval,
               now_s() - t0);
        if (o->kd_cache) {
            if (npy_write(o->kd_cache, f, 5, shape, err)) fprintf(stderr, "distill: %s\n", err);
            else printf("  KD pairs saved to %s\n", o->kd_cache);
        }
    }
    // kept as the cache keeps them (F32), so a cached run equals a fresh one
    for (size_t k = 0; k < n * P; k++) W->kd_target[k] = f[k];
    free(f);
    W->kd_n = P;
}

// KD on a one-step student (tmd: StudentParams layout, else plain Wan); returns the last logged loss
static double distill_kd(DistillWorld* W, const DistillOpts* o, int tmd, double* student) {
    char err[ST_ERRLEN];
    distill_kd_pairs(W, o);
    StudentConfig sc = distill_student_config(W, o);
    size_t np = tmd ? student_num_params(&sc) : W->nw;
    double* gp = (double*)calloc(np, sizeof(double));
    StudentParams S, dS; WanParams P, dP;
    if (tmd) {
        student_carve(&sc, &S, student);
        student_carve(&sc, &dS, gp);
    } else {
        wan_carve(&W->wan, &P, student);
        wan_carve(&W->wan, &dP, gp);
    }
    Generator G; generator_init(&G, tmd, &sc, &W->g, o->N, o->gamma_inner); G.S = &S; G.P = &P;
    AdamW opt; adamw_init(&opt, np, o->kd_lr, 0.9, 0.99, 1e-8, 0.01, err);
    Rng rng = rng_make(o->seed * 37 + (uint64_t)tmd);
    double acc = 0, last = 0; int na = 0;
    for (int step = 0; step < o->kd_steps; step++) {
        memset(gp, 0, sizeof(double) * np);
        for (int b = 0; b < o->kd_batch; b++) {
            int i = (int)(((size_t)step * o->kd_batch + b) % (size_t)W->kd_n);
            acc += kd_sample(&G, tmd ? &dS : NULL, tmd ? NULL : &dP, &W->g, W->kd_noise + (size_t)i * W->numel,
                             W->kd_target + (size_t)i * W->numel, W->kd_ctx + (size_t)i * W->nctx, W->wc.text_len,
                             T_MAX, &rng, 1.0 / o->kd_batch);
            na++;
        }
        double gn;
        if (adamw_step(&opt, student, gp, o->clip_student, &gn))
            fprintf(stderr, "  KD step %d skipped (non-finite gradient)\n", step + 1);
        if ((step + 1) % 100 == 0 || step + 1 == o->kd_steps) {
            last = acc / na;
            printf("  KD %s step %4d/%d  mse %.4f\n", tmd ? "TMD" : "DMD2-v", step + 1, o->kd_steps, last);
            acc = 0;
            na = 0;
        }
    }
    adamw_free(&opt); generator_free(&G); free(gp);
    return last;
}

// ---- Stage 2: DMD2-v with rollout (tmd) or the plain DMD2-v baseline, trained for M outer steps

typedef struct { double vsd, gan_g, dsm, gan_d; } DmdLog;

static void distill_stage2(DistillWorld* W, const DistillOpts* o, int M, int tmd, double* student_buf) {
    const char* label = tmd ? "TMD" : "DMD2-v";
    StudentConfig scv = distill_student_config(W, o); const StudentConfig* sc = &scv;
    const WanGrid* g = &W->g;
    size_t nw = W->nw, n_student = tmd ? student_num_params(sc) : nw;
    WanParams T; wan_carve(&sc->wan, &T, W->teacher);
    double* fake = (double*)malloc(sizeof(double) * nw);
    memcpy(fake, W->teacher, sizeof(double) * nw); // fake score = teacher at init
    double* gfake = (double*)calloc(nw, sizeof(double));
    double* gstu = (double*)calloc(n_student, sizeof(double));
    WanParams F, dF; wan_carve(&sc->wan, &F, fake); wan_carve(&sc->wan, &dF, gfake);
    // the Conv3D heads at a small width for the tiny world; feature layers from the per-preset table
    DiscConfig dc =
        disc_config(&sc->wan, o->disc_hidden / 2, o->disc_hidden / 2, o->disc_hidden, o->disc_hidden, o->disc_hidden);
    size_t nd = disc_carve(&dc, NULL, NULL);
    double* disc = (double*)calloc(nd, sizeof(double)); double* gdisc = (double*)calloc(nd, sizeof(double));
    disc_init(&dc, disc, o->seed + 99);
    DiscParams D, dD; disc_carve(&dc, &D, disc); disc_carve(&dc, &dD, gdisc);
    StudentParams S, dS; WanParams P, dP;
    if (tmd) { student_carve(sc, &S, student_buf); student_carve(sc, &dS, gstu); }
    else { wan_carve(&sc->wan, &P, student_buf); wan_carve(&sc->wan, &dP, gstu); }
    Generator G; generator_init(&G, tmd, sc, g, o->N, o->gamma_inner); G.S = &S; G.P = &P; G.rollout_grad = o->rollout; G.xhat_eq15 = o->xhat_eq15;
    DmdWork w; dmd_work_init(&w, &sc->wan, g, &dc);
    DmdConfig cf = dmd_defaults(M);
    cf.gamma_outer = distill_outer_shift(o, M);
    cf.gamma_dmd = o->gamma_dmd;
    cf.cfg = o->cfg_dmd;
    cf.gan_weight = o->gan_weight; cf.gan_own_noise = o->gan_own_noise; cf.backsim = o->backsim;
    AdamW os, of, od; char err[ST_ERRLEN];
    adamw_init(&os, n_student, o->student_lr, 0.9, 0.99, 1e-8, 0.01, err);
    if (tmd) { os.scaled_from = nw; os.lr_scale = o->head_lr_scale; }
    adamw_init(&of, nw, o->fake_lr, 0.9, 0.99, 1e-8, 0.01, err);
    adamw_init(&od, nd, o->disc_lr, 0.9, 0.99, 1e-8, 0.01, err);
    WorldStream ws; stream_init(&ws, &W->wc, o->seed + 4, o->dmd_batch);
    Rng rng = rng_make(o->seed * 31 + (uint64_t)tmd);
    DmdLog lg = {0, 0, 0, 0}; int nl_s = 0, nl_c = 0; double gn_max = 0;
    double t0 = now_s();
    for (int it = 0; it < o->dmd_iters; it++) {
        stream_next(&ws);
        int student_step = it % o->update_every == 0;   // counts optimizer steps (one per iteration here)
        if (student_step) memset(gstu, 0, sizeof(double) * n_student);
        else {
            memset(gfake, 0, sizeof(double) * nw);
            memset(gdisc, 0, sizeof(double) * nd);
        }
        for (int b = 0; b < ws.B; b++) {
            const double* x = ws.x + (size_t)b * ws.numel; const double* ctx = ws.ctx + (size_t)b * ws.nctx;
            if (student_step) {
                DmdStats st = dmd_student_sample(&G, tmd ? &dS : NULL, tmd ? NULL : &dP, &w, &T, &F, &D, &dc, g, x, ctx,
                                                 sc->wan.text_len, NULL, 0, &cf, &rng, 1.0 / ws.B);
                lg.vsd += st.vsd; lg.gan_g += st.gan_g; nl_s++;
            } else {
                DmdStats st = dmd_critic_sample(&G, &dF, &dD, &w, &T, &F, &D, &dc, g, x, ctx, sc->wan.text_len, &cf,
                                                &rng, 1.0 / ws.B);
                lg.dsm += st.dsm; lg.gan_d += st.gan_d; nl_c++;
            }
        }
        double gn;
        if (student_step) {
            if (adamw_step(&os, student_buf, gstu, o->clip_student, &gn))
                fprintf(stderr, "  %s: student step skipped (non-finite gradient)\n", label);
            else gn_max = fmax(gn_max, gn);
        } else {
            if (adamw_step(&of, fake, gfake, o->clip_fake, &gn))
                fprintf(stderr, "  %s: fake-score step skipped\n", label);
            if (adamw_step(&od, disc, gdisc, o->clip_disc, &gn))
                fprintf(stderr, "  %s: discriminator step skipped\n", label);
        }
        if ((it + 1) % 100 == 0 || it + 1 == o->dmd_iters) {
            double el = now_s() - t0;
            printf("  %s M%d iter %4d/%d  vsd %.4f  gan_g %.3f  dsm %.4f  gan_d %.3f  max |g_student| %.2f  (%.2f "
                   "s/iter, ETA %.0f s)\n",
                   label, M, it + 1, o->dmd_iters, nl_s ? lg.vsd / nl_s : 0, nl_s ? lg.gan_g / nl_s : 0,
                   nl_c ? lg.dsm / nl_c : 0, nl_c ? lg.gan_d / nl_c : 0, gn_max, el / (it + 1),
                   el / (it + 1) * (o->dmd_iters - it - 1));
            memset(&lg, 0, sizeof(lg)); nl_s = nl_c = 0; gn_max = 0;
        }
    }
    stream_free(&ws);
    adamw_free(&os); adamw_free(&of); adamw_free(&od);
    dmd_work_free(&w); generator_free(&G);
    free(fake); free(gfake); free(gstu); free(disc); free(gdisc);
}

// ---- the whole table: teacher rows, TMD (Stage 1, Stage 2) and the DMD2-v baseline (KD-warmed at M = 1) for
// M = 1..o->M (one student per M when per_m, else one student at o->M sampled at every M); returns the row count
static int distill_run(const DistillOpts* o, DistillRow* rows) {
    DistillWorld W;
    if (distill_world_init(&W, o)) return 0;
    if (o->fidelity) distill_target_init(&W, o);
    StudentConfig sc = distill_student_config(&W, o);
    size_t ns = student_num_params(&sc), per = W.numel * DISTILL_SHEET_CLIPS;
    printf("  student: M 1..%d (%s), N %d, H %d (%s fusion), t_student shift %s\n", o->M,
           o->per_m ? "one student per M" : "one student", o->N, o->H, o->fusion ? "concat" : "gated",
           o->gamma_outer > 0 ? "fixed" : "10 (5 for M >= 4)");
    float* sheet = o->sheet ? (float*)calloc(per * DISTILL_MAX_ROWS, sizeof(float)) : NULL;
#define KEEP (sheet ? sheet + per * nr : NULL)
    int nr = distill_teacher_rows(&W, o, rows, sheet);
    double* stu = (double*)malloc(sizeof(double) * ns);
    char nm[48];
    for (int M = o->per_m ? 1 : o->M; M <= o->M; M++) {
        distill_stage1(&W, o, M, stu);
        if (M == o->M) {
            snprintf(nm, sizeof(nm), "TMD M%d N%d H%d after Stage 1", M, o->N, o->H);
            distill_eval_tmd(&W, o, &sc, stu, M, nm, &rows[nr], KEEP);
            nr++;
        }
        if (M == 1 && o->kd_tmd) distill_kd(&W, o, 1, stu);
        distill_stage2(&W, o, M, 1, stu);
        for (int Me = o->per_m ? M : 1; Me <= M; Me++) {
            snprintf(nm, sizeof(nm), "TMD M%d N%d H%d", Me, o->N, o->H);
            distill_eval_tmd(&W, o, &sc, stu, Me, nm, &rows[nr], KEEP); nr++;
        }
    }
    if (o->baseline) {
        double* base = (double*)malloc(sizeof(double) * W.nw);
        for (int M = o->per_m ? 1 : o->M; M <= o->M; M++) {
            memcpy(base, W.teacher, sizeof(double) * W.nw);
            if (M == 1) distill_kd(&W, o, 0, base);   // the paper's one-step DMD2-v baseline is KD-warmed (Table 4)
            distill_stage2(&W, o, M, 0, base);
            for (int Me = o->per_m ? M : 1; Me <= M; Me++) {
                snprintf(nm, sizeof(nm), "DMD2-v M%d%s", Me, Me == 1 && M == 1 ? " (KD)" : "");
                distill_eval_dmd(&W, o, base, Me, nm, &rows[nr], KEEP); nr++;
            }
        }
        free(base);
    }
#undef KEEP
    if (o->sheet) {  // the first clips of every row (row 0: the real clips), captioned "row: caption"
        char err[ST_ERRLEN];
        char** caps = (char**)malloc(sizeof(char*) * nr * DISTILL_SHEET_CLIPS);
        for (int i = 0; i < nr * DISTILL_SHEET_CLIPS; i++) {
            caps[i] = (char*)malloc(160);
            snprintf(caps[i], 160, "%s: %s", rows[i / DISTILL_SHEET_CLIPS].name,
                     W.ev.captions[i % DISTILL_SHEET_CLIPS]);
        }
        if (png_write_sheet(o->sheet, sheet, nr * DISTILL_SHEET_CLIPS, W.wc.T, W.wc.H, W.wc.W, (const char* const*)caps,
                            0, err))
            fprintf(stderr, "distill: %s\n", err);
        else printf("  contact sheet: %s\n", o->sheet);
        for (int i = 0; i < nr * DISTILL_SHEET_CLIPS; i++) free(caps[i]);
        free(caps);
    }
    free(sheet); free(stu);
    distill_world_free(&W);
    return nr;
}

// the flags of `./test_tmd distill` (and of the ablation harness), from one table: 0 ok, 1 help printed, 2 bad flags
static int distill_parse_flags(DistillOpts* o, int argc, char** argv, int first, const char* synopsis) {
    int seed = (int)o->seed, world_seed = (int)o->world_seed;
    const int BIG = 100000000; // step and iteration counts: any a CPU can run
    Flag flags[] = {
        FLAG_INT_R("--seed", &seed, 0, INT_MAX, "seed of the distillation's draws (student init, Stage 1 and 2 streams)"),
        FLAG_INT_R("--world-seed", &world_seed, 0, INT_MAX, "seed of the teacher, the evaluation set and its noise"),
        FLAG_INT_R("--teacher-steps", &o->teacher_steps, 0, BIG, "teacher flow-matching steps"),
        FLAG_INT_R("--teacher-batch", &o->teacher_batch, 1, 4096, "teacher batch size"),
        FLAG_DOUBLE_R("--teacher-lr", &o->teacher_lr, 0, 1, "teacher learning rate (AdamW)"),
        FLAG_INT_R("--tmmf-steps", &o->tmmf_steps, 0, BIG, "Stage 1 steps"),
        FLAG_INT_R("--tmmf-batch", &o->tmmf_batch, 1, 4096, "Stage 1 batch size"),
        FLAG_DOUBLE_R("--tmmf-lr", &o->tmmf_lr, 0, 1, "Stage 1 learning rate"),
        FLAG_INT_R("--fidelity", &o->fidelity, 0, 1, "also score every row by its per-caption distance to the distillation target (the teacher's samples at --cfg-dmd) and its diversity"),
        FLAG_INT_R("--cond-k", &o->cond_k, 2, DISTILL_MAX_DRAWS, "per-caption distance: clips per evaluation caption of every row (noises)"),
        FLAG_INT_R("--target-k", &o->target_k, 2, DISTILL_MAX_DRAWS, "per-caption distance: the target's clips per evaluation caption"),
        FLAG_INT_R("--xhat-eq15", &o->xhat_eq15, 0, 1, "probe: Stage 2's TMD sample x^ = x1 - y^ (the paper's Eq. 15) instead of x_t - t y^ (the sampler's)"),
        FLAG_INT_R("--backsim", &o->backsim, 0, 1, "probe: Stage 2 draws x_{t_i} by backward simulation (DMD2) instead of from real data (paper)"),
        FLAG_SWITCH("--outer-sde", &o->outer_sde, "probe: TMD sampler re-noises with fresh noise between outer steps (paper: deterministic)"),
        FLAG_DOUBLE_R("--head-lr-scale", &o->head_lr_scale, 0, 1000, "learning-rate factor of the flow head's new parameters (s - r embedding, fusion)"),
        FLAG_BOOL("--tm-only", &o->tm_only, "Stage 1 as plain TM (r = s always) instead of TM-MF"),
        FLAG_BOOL("--plain-tangent", &o->plain_tangent,
                  "TM-MF derivative along the conditional v instead of the guided v_g"),
        FLAG_DOUBLE_R("--cfg-tmmf", &o->cfg_tmmf, 0, 100, "guidance scale of the TM-MF target velocity"),
        FLAG_INT_R("--dmd-iters", &o->dmd_iters, 0, BIG, "Stage 2 iterations (student + critic)"),
        FLAG_INT_R("--dmd-batch", &o->dmd_batch, 1, 4096, "Stage 2 batch size"),
        FLAG_DOUBLE_R("--student-lr", &o->student_lr, 0, 1, "Stage 2 student learning rate"),
        FLAG_DOUBLE_R("--fake-lr", &o->fake_lr, 0, 1, "fake score learning rate"),
        FLAG_DOUBLE_R("--disc-lr", &o->disc_lr, 0, 1, "discriminator learning rate"),
        FLAG_DOUBLE_R("--clip-student", &o->clip_student, 0, 1e6, "student max gradient norm, Stage 2 and KD (0: none)"),
        FLAG_DOUBLE_R("--clip-fake", &o->clip_fake, 0, 1e6, "fake score max gradient norm (0: none)"),
        FLAG_DOUBLE_R("--clip-disc", &o->clip_disc, 0, 1e6, "discriminator max gradient norm (0: none)"),
        FLAG_DOUBLE_R("--clip-tmmf", &o->clip_tmmf, 0, 1e6, "Stage 1 max gradient norm (0: none)"),
        FLAG_INT_R("--update-every", &o->update_every, 1, BIG, "the student is updated every k-th iteration"),
        FLAG_DOUBLE_R("--gan-weight", &o->gan_weight, 0, 1000, "GAN loss weight lambda"),
        FLAG_BOOL("--gan-own-noise", &o->gan_own_noise,
                  "the discriminator draws its own t and noise (default: the fake score's)"),
        FLAG_BOOL("--rollout", &o->rollout, "backpropagate through all N inner steps"),
        FLAG_DOUBLE_R("--cfg-dmd", &o->cfg_dmd, 0, 100, "teacher guidance in the VSD gradient (the distillation target; tiny default 2, the teacher's best, as Table 7's 5 is Wan's)"),
        FLAG_DOUBLE_R("--shift-student", &o->gamma_outer, 0, 100, "t_student shift of the outer grid (0: outer_shift_default: 10, or 5 for M >= 4)"),
        FLAG_DOUBLE_R("--shift-inner", &o->gamma_inner, 0.01, 100, "shift of the inner grid"),
        FLAG_DOUBLE_R("--shift-dmd", &o->gamma_dmd, 0.01, 100, "t_dmd shift (1: none)"),
        FLAG_INT_R("--kd-pairs", &o->kd_pairs, 1, BIG, "KD warm-up: teacher ODE pairs"),
        FLAG_INT_R("--kd-steps", &o->kd_steps, 0, BIG, "KD warm-up steps (0: none)"),
        FLAG_INT_R("--kd-batch", &o->kd_batch, 1, 4096, "KD batch size"),
        FLAG_DOUBLE_R("--kd-lr", &o->kd_lr, 0, 1, "KD learning rate"),
        FLAG_BOOL("--kd-tmd", &o->kd_tmd, "also KD-warm the one-step TMD student"),
        FLAG_STR("--kd-cache", &o->kd_cache,
                 "load the KD pairs' teacher samples from this .npy if it exists, else make and save them"),
        FLAG_INT_R("--M", &o->M, 1, 64, "outer steps of the students"),
        FLAG_BOOL("--per-m", &o->per_m, "one student per M in 1..M (0: one student at M, sampled at 1..M)"),
        FLAG_INT_R("--N", &o->N, 1, 64, "inner (flow head) steps"),
        FLAG_INT_R("--H", &o->H, 1, 3, "flow head blocks"),
        FLAG_INT_R("--fusion", &o->fusion, 0, 1, "0: gated fusion, 1: concat fusion"),
        FLAG_BOOL("--baseline", &o->baseline, "also distill the DMD2-v baseline"),
        FLAG_INT_R("--eval-n", &o->eval_n, 1, 64, "clips scored per table row"),
        FLAG_INT("--teacher-eval-steps", &o->teacher_eval_steps,
                 "steps of the teacher's reference sampler (UniPC; also the KD pairs)"),
        FLAG_DOUBLE_R("--cfg-eval", &o->cfg_eval, 0, 100, "teacher guidance when sampling"),
        FLAG_DOUBLE_R("--shift-eval", &o->shift_eval, 0.01, 100, "teacher sampler shift"),
        FLAG_STR("--sheet", &o->sheet, "write a PNG contact sheet of every row's first clips"),
        FLAG_STR("--teacher-cache", &o->teacher_cache,
                 "load the teacher from this file if it exists, else train and save it there"),
        FLAG_END};
    int rc = flags_parse(flags, argc, argv, first, synopsis);
    if (rc) return rc == 1 ? 1 : 2;
    o->seed = (uint64_t)seed; o->world_seed = (uint64_t)world_seed;
    if (o->M < 1 || o->M > 64 || o->N < 1 || o->N > 64 || o->H < 1 || o->H > 3) {
        fprintf(stderr,
                "error: need 1 <= M, N <= 64 and 1 <= H <= 3 (the tiny DiT has 4 blocks); found M %d, N %d, H %d\n",
                o->M, o->N, o->H);
        return 2;
    }
    if (o->kd_pairs < 1 || o->kd_batch < 1 || o->eval_n < 1 || o->eval_n > 64) {
        fprintf(stderr, "error: need --kd-pairs, --kd-batch >= 1 and 1 <= --eval-n <= 64; found %d, %d, %d\n",
                o->kd_pairs, o->kd_batch, o->eval_n);
        return 2;
    }
    return 0;
}
