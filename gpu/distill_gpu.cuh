// gpu/distill_gpu.cuh: TMD's training stages on the GPU, B samples at a time. Mirrors cpu/distill_cpu.h (the oracle;
// its configs, defaults and host-side time sampling are used as they are: one definition):
//   Stage 1, TM-MF (Section 3.1, App. A.2): tmmf_gpu_step
//   Stage 2, DMD2-v with flow-head rollout (Section 3.2, App. A.3): dmd_gpu_generate, dmd_gpu_student_step (VSD
//     through the rollout), dmd_gpu_critic_step (the fake score's denoising score matching)
// Randomness is split the way a parity test needs it: the host draws every scalar (outer step, dropout, s, r, t)
// in double into a *Draw struct, in the CPU reference's order (tmmf_draw / dmd_draw); the noise tensors are
// arguments (the trainer fills them from the Philox stream, the parity test uploads the CPU's). Each step returns
// its losses per sample (checked finite on the host before any backward) and ACCUMULATES parameter gradients scaled
// by `scale` (1/batch for a mean over the batch).
#pragma once
#include "tmd_gpu.cuh"          // the student, head, rollout
#include "../cpu/distill_cpu.h" // TmmfConfig, DmdConfig and defaults, shifted_time, T_MIN/T_MAX
#include "disc_gpu.cuh"         // the Conv3D discriminator heads

// per-sample scalars of one TM-MF step
typedef struct {
    int B;
    double t[TMD_MAX_BATCH], s[TMD_MAX_BATCH], r[TMD_MAX_BATCH];
    int dropped[TMD_MAX_BATCH];
} TmmfDraw;

// draws sample b's scalars exactly as cpu/distill_cpu.h tmmf_sample does, writing its noise x1, y1 [numel] (host
// floats) from the same stream when given (NULL: skipped, so the trainer can take its noise from Philox instead;
// the CPU's order then no longer matters)
static void tmmf_draw_sample(TmmfDraw* d, int b, const TmmfConfig* cf, Rng* rng, float* x1, float* y1, size_t numel) {
    double tg[65], sg[65];
    outer_grid(tg, cf->M, cf->gamma_outer);
    inner_grid(sg, cf->N, cf->gamma_inner);
    int i = 1 + (int)(rng_uniform(rng) * cf->M);
    if (i > cf->M) i = cf->M;
    d->t[b] = tg[i];
    if (x1)
        for (size_t k = 0; k < numel; k++) x1[k] = (float)rng_normal(rng);
    d->dropped[b] = rng_uniform(rng) < cf->p_drop;
    if (y1)
        for (size_t k = 0; k < numel; k++) y1[k] = (float)rng_normal(rng);
    double s = shifted_time(rng, cf->gamma_s);
    int kk = 0;
    for (int j = 0; j <= cf->N; j++)
        if (sg[j] <= s) kk = j;
    double r = sg[kk];
    if (cf->tm_only || rng_uniform(rng) < cf->p_tm) r = s;
    d->s[b] = s;
    d->r[b] = r;
}

typedef struct {
    int B;
    size_t numel, n;        // per sample, whole batch
    size_t nctx;            // context elements per sample: text_len·text_dim
    WanGpuAct bb, bb_u;     // backbone: conditional (training), unconditional (forward only, the guidance)
    TmdGpuHeadAct h, h_aux; // the trained head evaluation; a scratch one (guidance, JVP: no gradients)
    float *xt, *y, *ys, *v, *vg, *u, *uhat, *yp, *up, *um, *dhead, *dm, *dc, *ctx_in, *ctx_u;
    double *err2, *red; // device: [B], [B·TMD_RED_BLOCKS]
    Comm* agree;        // NULL, or the ranks that must run the same evaluations (train_tmd --fsdp: tmmf_gpu_agree_)
} TmmfGpuWork;

// A fully sharded student gathers its units collectively, so every rank must run the same evaluations in the same
// order. Which evaluations a step runs depends on its samples (the guided one only if a sample is not dropped, the
// JVP's forward and backward differences only where s ± δ stays inside [r, T_MAX]), so with w->agree each flag
// becomes the OR over the ranks: a rank whose own samples do not need an evaluation runs it anyway and weights it 0
// (its coefficients stay 0: the same bits), and a non-finite loss on any rank skips the backward on every rank. The
// flags travel as doubles through w->red (sums of 0 and 1: exact).
static void tmmf_gpu_agree_(TmmfGpuWork* w, int* flags, int n) {
    if (!w->agree) return;
    double h[4];
    for (int i = 0; i < n; i++) h[i] = flags[i] ? 1.0 : 0.0;
    cudaStream_t s = w->bb.stream;
    cudaCheck(cudaMemcpyAsync(w->red, h, sizeof(double) * n, cudaMemcpyHostToDevice, s));
    comm_all_reduce(w->agree, w->red, (size_t)n, COMM_F64, s);
    cudaCheck(cudaMemcpyAsync(h, w->red, sizeof(double) * n, cudaMemcpyDeviceToHost, s));
    cudaCheck(cudaStreamSynchronize(s));
    for (int i = 0; i < n; i++) flags[i] = h[i] > 0;
}

static float* tmd_dalloc_(size_t n, const char* what) {
    return (float*)cuda_malloc_named(sizeof(float) * (n ? n : 1), what, WAN_GPU_OOM_HINT);
}

// cp: context parallelism, the group sharing each sample (NULL: none; gpu/cp_gpu.cuh): the backbones and the head
// evaluations hold this rank's tokens, every output (u, and so the loss and its normaliser) is the whole sample's on
// every rank of the group, and the gradients are this rank's tokens' part (summed by the step's all-reduce)
static void tmmf_gpu_work_init(TmmfGpuWork* w, const StudentConfig* sc, int B, int T, int Hl, int Wl, Comm* cp = NULL) {
    memset(w, 0, sizeof(*w));
    const WanConfig* c = &sc->wan;
    char err[ST_ERRLEN];
    if (B > TMD_MAX_BATCH) {
        fprintf(stderr, "TM-MF: batch %d > %d\n", B, TMD_MAX_BATCH);
        exit(1);
    }
    // the backbone's L − H blocks only; the unconditional pass borrows the conditional one's block set when it is free
    WanGpuActOpts o;
    memset(&o, 0, sizeof(o));
    o.blocks = c->num_layers - sc->head_blocks;
    o.cp = cp;
    if (wan_gpu_act_init_opts(&w->bb, c, B, c->in_dim, T, Hl, Wl, 1, &o, err)) {
        fprintf(stderr, "TM-MF: %s\n", err);
        exit(1);
    }
    o.share = w->bb.recompute ? &w->bb : NULL;
    if (wan_gpu_act_init_opts(&w->bb_u, c, B, c->in_dim, T, Hl, Wl, 0, &o, err)) {
        fprintf(stderr, "TM-MF: %s\n", err);
        exit(1);
    }
    head_gpu_act_init(&w->h, sc, &w->bb);
    head_gpu_act_init(&w->h_aux, sc, &w->bb);
    w->B = B;
    w->numel = (size_t)c->out_dim * T * Hl * Wl;
    w->n = B * w->numel;
    w->nctx = (size_t)c->text_len * c->text_dim;
    float** lat[] = {&w->xt, &w->y, &w->ys, &w->v, &w->vg, &w->u, &w->uhat, &w->yp, &w->up, &w->um, &w->dhead};
    for (size_t i = 0; i < sizeof(lat) / sizeof(lat[0]); i++) *lat[i] = tmd_dalloc_(w->n, "TM-MF latents");
    w->dm = tmd_dalloc_((size_t)B * w->bb.g.L * c->dim, "TM-MF feature gradient");
    w->dc = tmd_dalloc_((size_t)B * c->text_len * c->dim, "TM-MF context gradient");
    w->ctx_in = tmd_dalloc_(B * w->nctx, "TM-MF contexts");
    w->ctx_u = tmd_dalloc_(B * w->nctx, "TM-MF contexts");
    w->err2 = (double*)cuda_malloc_named(sizeof(double) * B, "TM-MF losses", WAN_GPU_OOM_HINT);
    w->red = (double*)cuda_malloc_named(sizeof(double) * B * TMD_RED_BLOCKS, "TM-MF reductions", WAN_GPU_OOM_HINT);
}
static void tmmf_gpu_work_free(TmmfGpuWork* w) {
    wan_gpu_act_free(&w->bb);
    wan_gpu_act_free(&w->bb_u);
    head_gpu_act_free(&w->h);
    head_gpu_act_free(&w->h_aux);
    float* f[] = {w->xt, w->y,  w->ys,    w->v,  w->vg, w->u,      w->uhat, w->yp,
                  w->up, w->um, w->dhead, w->dm, w->dc, w->ctx_in, w->ctx_u};
    for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++) cudaCheck(cudaFree(f[i]));
    cudaCheck(cudaFree(w->err2));
    cudaCheck(cudaFree(w->red));
}

typedef struct {
    double loss[TMD_MAX_BATCH], mse[TMD_MAX_BATCH];
    int finite;
} TmmfGpuStats;

// u = y1 − head (Eq. 14) of the head evaluation a at (s, r) on the backbone bb
static void tmd_gpu_avg_velocity(float* u, TmdGpuHeadAct* a, const TmdGpuStudent* S, const WanGpuAct* bb,
                                 const float* m, const float* y, const double* s, const double* r, const float* y1,
                                 size_t n) {
    head_gpu_forward(a, S, bb, m, y, s, r);
    combine3(u, coef3_all(1, 1, -1, 0), y1, a->out, NULL, 1, n, bb->stream);
}

// One TM-MF step on B samples: loss_b = ‖u_θ − û‖² / sg(‖u_θ − û‖² + c), û = sg(v_g − (s − r)·du/ds) (App. A.2;
// cpu/distill_cpu.h tmmf_sample and tmmf_target line for line). x, x1, y1 [B, C, T, Hl, Wl]; ctx [B, text_len,
// text_dim] (zero-padded); ctx_u: the unconditional context of one sample [text_len, text_dim] (NULL: zeros, the
// world's empty caption). with_grads 0: losses only.
static TmmfGpuStats tmmf_gpu_step(TmdGpuStudent* S, TmmfGpuWork* w, const TmmfDraw* d, const float* x, const float* x1,
                                  const float* y1, const float* ctx, const float* ctx_u, const TmmfConfig* cf,
                                  double scale, int with_grads) {
    TmmfGpuStats st;
    memset(&st, 0, sizeof(st));
    const StudentConfig* sc = &S->sc;
    int B = w->B, Lb = sc->wan.num_layers - sc->head_blocks;
    cudaStream_t s_ = w->bb.stream;
    size_t n = w->n, nc = w->nctx;
    Coef3 k = coef3_all(B, 0, 0, 0);
    double tv[TMD_MAX_BATCH], svp[TMD_MAX_BATCH], svm[TMD_MAX_BATCH];
    // outer state from real data (Algorithm 2): x_t = (1 − t)·x + t·x1
    for (int b = 0; b < B; b++) {
        k.a[b] = (float)(1 - d->t[b]);
        k.b[b] = (float)d->t[b];
        tv[b] = 1000.0 * d->t[b];
    }
    combine3(w->xt, k, x, x1, NULL, B, w->numel, s_);
    // the context each sample trains on (condition dropout 0.1: the unconditional one) and the unconditional one
    for (int b = 0; b < B; b++) {
        float* dst_u = w->ctx_u + b * nc;
        if (ctx_u)
            cudaCheck(cudaMemcpyAsync(dst_u, ctx_u, sizeof(float) * nc, cudaMemcpyDeviceToDevice, s_));
        else
            cudaCheck(cudaMemsetAsync(dst_u, 0, sizeof(float) * nc, s_));
        cudaCheck(cudaMemcpyAsync(w->ctx_in + b * nc, d->dropped[b] ? dst_u : ctx + b * nc, sizeof(float) * nc,
                                  cudaMemcpyDeviceToDevice, s_));
    }
    wan_gpu_forward_blocks(&w->bb, &S->w, w->xt, tv, w->ctx_in, Lb);
    const float* m = wan_gpu_xs(&w->bb, Lb);
    // y = x1 − x, y_s = (1 − s)·y + s·y1, v = y1 − y
    combine3(w->y, coef3_all(1, 1, -1, 0), x1, x, NULL, 1, n, s_);
    for (int b = 0; b < B; b++) {
        k.a[b] = (float)(1 - d->s[b]);
        k.b[b] = (float)d->s[b];
        k.c[b] = 0;
    }
    combine3(w->ys, k, w->y, y1, NULL, B, w->numel, s_);
    combine3(w->v, coef3_all(1, 1, -1, 0), y1, w->y, NULL, 1, n, s_);
    // the trained evaluation u = u_θ(y_s, s, r; m)
    tmd_gpu_avg_velocity(w->u, &w->h, S, &w->bb, m, w->ys, d->s, d->r, y1, n);
    // guided velocity v_g = w·v + (1 − w)·u_θ(y_s, s, s; m_∅) (sg); w = 1 for dropped samples
    int any_guided = 0;
    for (int b = 0; b < B; b++) any_guided |= !d->dropped[b] && cf->cfg != 1;
    tmmf_gpu_agree_(w, &any_guided, 1);
    if (any_guided) {
        wan_gpu_forward_blocks(&w->bb_u, &S->w, w->xt, tv, w->ctx_u, Lb);
        tmd_gpu_avg_velocity(w->up, &w->h_aux, S, &w->bb_u, wan_gpu_xs(&w->bb_u, Lb), w->ys, d->s, d->s, y1, n);
        for (int b = 0; b < B; b++) {
            double wb = d->dropped[b] ? 1.0 : cf->cfg;
            k.a[b] = (float)wb;
            k.b[b] = (float)(1 - wb);
            k.c[b] = 0;
        }
        combine3(w->vg, k, w->v, w->up, NULL, B, w->numel, s_);
    } else {
        cudaCheck(cudaMemcpyAsync(w->vg, w->v, sizeof(float) * n, cudaMemcpyDeviceToDevice, s_));
    }
    const float* tangent = cf->plain_tangent ? w->v : w->vg; // the JVP's tangent: the guided velocity (tmd_method.md)
    // û = v_g − (s − r)·du/ds, du/ds by central difference along (tangent, 1), one-sided at the boundaries
    Coef3 kp = coef3_all(B, 0, 0, 0), k0 = coef3_all(B, 1, 0, 0);
    int any_fwd = 0, any_bwd = 0;
    for (int b = 0; b < B; b++) {
        double s = d->s[b], r = d->r[b], dl = cf->delta;
        svp[b] = s + dl;
        svm[b] = s - dl;
        kp.a[b] = 1;
        if (r >= s) continue;
        int fwd = s + dl <= T_MAX, bwd = s - dl >= r;
        double q = (s - r) / (fwd && bwd ? 2 * dl : dl);
        if (fwd && bwd) {
            kp.b[b] = (float)-q;
            kp.c[b] = (float)q;
        } // −q·(u₊ − u₋)
        else if (fwd) {
            kp.b[b] = (float)-q;
            k0.b[b] = (float)q;
        } // −q·(u₊ − u)
        else if (bwd) {
            kp.c[b] = (float)q;
            k0.b[b] = (float)-q;
        } // −q·(u − u₋)
        any_fwd |= fwd;
        any_bwd |= bwd;
    }
    int any_jvp[2] = {any_fwd, any_bwd};
    tmmf_gpu_agree_(w, any_jvp, 2);
    any_fwd = any_jvp[0];
    any_bwd = any_jvp[1];
    cudaCheck(cudaMemsetAsync(w->up, 0, sizeof(float) * n, s_));
    cudaCheck(cudaMemsetAsync(w->um, 0, sizeof(float) * n, s_));
    for (int b = 0; b < B; b++) {
        k.a[b] = 1;
        k.b[b] = (float)cf->delta;
        k.c[b] = 0;
    }
    if (any_fwd) {
        combine3(w->yp, k, w->ys, tangent, NULL, B, w->numel, s_);
        tmd_gpu_avg_velocity(w->up, &w->h_aux, S, &w->bb, m, w->yp, svp, d->r, y1, n);
    }
    for (int b = 0; b < B; b++) k.b[b] = (float)-cf->delta;
    if (any_bwd) {
        combine3(w->yp, k, w->ys, tangent, NULL, B, w->numel, s_);
        tmd_gpu_avg_velocity(w->um, &w->h_aux, S, &w->bb, m, w->yp, svm, d->r, y1, n);
    }
    combine3(w->uhat, kp, w->vg, w->up, w->um, B, w->numel, s_);
    combine3(w->uhat, k0, w->uhat, w->u, NULL, B, w->numel, s_);
    // adaptive normalisation: err2_b = ‖u − û‖², norm_b = err2_b + c·d (sg)
    double err2[TMD_MAX_BATCH], norm[TMD_MAX_BATCH];
    sum_sq_diff(w->err2, w->red, w->u, w->uhat, B, w->numel, s_);
    cudaCheck(cudaMemcpyAsync(err2, w->err2, sizeof(double) * B, cudaMemcpyDeviceToHost, s_));
    cudaCheck(cudaStreamSynchronize(s_));
    st.finite = 1;
    for (int b = 0; b < B; b++) {
        norm[b] = err2[b] + cf->c_norm * (double)w->numel;
        st.loss[b] = err2[b] / norm[b];
        st.mse[b] = err2[b] / w->numel;
        if (!isfinite(st.loss[b])) st.finite = 0;
    }
    int bad = !st.finite;
    if (with_grads) tmmf_gpu_agree_(w, &bad, 1);
    if (bad) st.finite = 0;
    if (!with_grads || !st.finite) return st; // a non-finite loss: the caller skips the step and reports it
    // d loss / d head = −2(u − û)/norm (u = y1 − head)
    for (int b = 0; b < B; b++) {
        k.a[b] = (float)(-scale * 2 / norm[b]);
        k.b[b] = (float)(scale * 2 / norm[b]);
        k.c[b] = 0;
    }
    combine3(w->dhead, k, w->u, w->uhat, NULL, B, w->numel, s_);
    cudaCheck(cudaMemsetAsync(w->dm, 0, sizeof(float) * B * w->bb.g.L * sc->wan.dim, s_));
    cudaCheck(cudaMemsetAsync(w->dc, 0, sizeof(float) * B * sc->wan.text_len * sc->wan.dim, s_));
    head_gpu_backward(S, 1, w->dm, w->dc, NULL, w->dhead, &w->h, &w->bb);
    // gradients reach the backbone: the main feature is not detached (Section 3.1)
    wan_gpu_backward_blocks(&S->dP, NULL, NULL, w->dm, Lb, NULL, w->dc, &w->bb, &S->w);
    return st;
}

// ---------------------------------------------------------------------------------------------------------
// Stage 2: DMD2-v with the flow-head rollout (App. A.3; cpu/distill_cpu.h dmd_student_sample, dmd_critic_sample).
// The GAN terms (gan_weight > 0) need the discriminator attached to the work (dmd_gpu_work_attach_disc): the
// generator's loss mean_h softplus(−D_h) reaches x̂ through the frozen teacher's backward with injected feature
// gradients; the discriminator's loss mean_h softplus(−D_h(real)) + softplus(D_h(fake)) is taken at the fake score's t
// and ε (FastGen's gan_use_same_t_noise; gan_own_noise is CPU-only and refused here).

// per-sample scalars of one Stage 2 step: the outer time t_i of the student and t_dmd
typedef struct {
    int B;
    double t_i[TMD_MAX_BATCH], t[TMD_MAX_BATCH];
} DmdDraw;

// sample b's draws in cpu/distill_cpu.h's order (dmd_generate, then t_dmd and ε); noise NULL: skipped
static void dmd_draw_sample(DmdDraw* d, int b, const DmdConfig* cf, Rng* rng, float* x1, float* y1, float* eps,
                            size_t numel) {
    double tg[65];
    outer_grid(tg, cf->M, cf->gamma_outer);
    int i = 1 + (int)(rng_uniform(rng) * cf->M);
    if (i > cf->M) i = cf->M;
    d->t_i[b] = tg[i];
    if (x1)
        for (size_t k = 0; k < numel; k++) x1[k] = (float)rng_normal(rng);
    if (y1)
        for (size_t k = 0; k < numel; k++) y1[k] = (float)rng_normal(rng);
    d->t[b] = shifted_time(rng, cf->gamma_dmd);
    if (eps)
        for (size_t k = 0; k < numel; k++) eps[k] = (float)rng_normal(rng);
}

// the generator x̂ = g_θ(x_{t_i}, t_i) with gradients: TMD (backbone, rollout, x̂ = x_t − t·ŷ, or x1 − ŷ with
// xhat_eq15) or the plain Wan student of the DMD2-v baseline (x̂ = x_t − t·v)
typedef struct {
    int tmd, xhat_eq15, B;
    size_t numel, n;
    TmdGpuStudent* S; // tmd
    WanGpuModel* P;   // baseline
    WanGpuAct bb;     // backbone (tmd: its L − H blocks) or the whole model (baseline), planned for training
    TmdGpuRollout ro;
    float *xt, *xhat, *dyhat, *dm, *dc;
    double t[TMD_MAX_BATCH];
} GenGpu;

// cp: context parallelism (NULL: none; as tmmf_gpu_work_init): x̂ is the whole sample's on every rank of the group
static void gen_gpu_init(GenGpu* G, int tmd, const StudentConfig* sc, int B, int T, int Hl, int Wl, int N,
                         double gamma_inner, Comm* cp = NULL) {
    memset(G, 0, sizeof(*G));
    char err[ST_ERRLEN];
    G->tmd = tmd;
    G->B = B;
    WanGpuActOpts o;
    memset(&o, 0, sizeof(o));
    o.blocks = tmd ? sc->wan.num_layers - sc->head_blocks : 0;
    o.cp = cp;
    if (wan_gpu_act_init_opts(&G->bb, &sc->wan, B, sc->wan.in_dim, T, Hl, Wl, 1, &o, err)) {
        fprintf(stderr, "generator: %s\n", err);
        exit(1);
    }
    if (tmd) rollout_gpu_init(&G->ro, sc, &G->bb, N, gamma_inner);
    G->numel = (size_t)sc->wan.out_dim * T * Hl * Wl;
    G->n = B * G->numel;
    G->xt = tmd_dalloc_(G->n, "generator latents");
    G->xhat = tmd_dalloc_(G->n, "generator latents");
    G->dyhat = tmd_dalloc_(G->n, "generator latents");
    G->dm = tmd_dalloc_((size_t)B * G->bb.g.L * sc->wan.dim, "generator feature gradient");
    G->dc = tmd_dalloc_((size_t)B * sc->wan.text_len * sc->wan.dim, "generator context gradient");
}
static void gen_gpu_free(GenGpu* G) {
    wan_gpu_act_free(&G->bb);
    if (G->tmd) rollout_gpu_free(&G->ro);
    float* f[] = {G->xt, G->xhat, G->dyhat, G->dm, G->dc};
    for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++) cudaCheck(cudaFree(f[i]));
}

// x̂ into G->xhat from the state already in G->xt at the times G->t (KD: x_t is the noise itself at T_MAX)
static void gen_gpu_forward_xt(GenGpu* G, const float* y1, const float* x1, const float* ctx) {
    cudaStream_t st = G->bb.stream;
    int B = G->B;
    Coef3 k = coef3_all(B, 0, 0, 0);
    double tv[TMD_MAX_BATCH];
    for (int b = 0; b < B; b++) tv[b] = 1000.0 * G->t[b];
    const float* out;
    if (G->tmd) {
        int Lb = G->S->sc.wan.num_layers - G->S->sc.head_blocks;
        wan_gpu_forward_blocks(&G->bb, &G->S->w, G->xt, tv, ctx, Lb);
        out = rollout_gpu_forward(&G->ro, G->S, &G->bb, wan_gpu_xs(&G->bb, Lb), y1);
    } else {
        wan_gpu_forward(&G->bb, &G->P->w, G->xt, tv, ctx);
        out = G->bb.out;
    }
    for (int b = 0; b < B; b++) {
        int eq15 = G->tmd && G->xhat_eq15;
        k.a[b] = eq15 ? 0.f : 1.f;
        k.b[b] = -(eq15 ? 1.f : (float)G->t[b]);
        k.c[b] = eq15 ? 1.f : 0.f;
    }
    combine3(G->xhat, k, G->xt, out, x1, B, G->numel, st); // x̂ = x_t − t·ŷ  (or x1 − ŷ)
}

// x_t = (1 − t_i)·x + t_i·x1 from real data (no backward simulation), then x̂ into G->xhat
static void gen_gpu_forward(GenGpu* G, const DmdDraw* d, const float* x, const float* x1, const float* y1,
                            const float* ctx) {
    cudaStream_t st = G->bb.stream;
    int B = G->B;
    Coef3 k = coef3_all(B, 0, 0, 0);
    for (int b = 0; b < B; b++) {
        G->t[b] = d->t_i[b];
        k.a[b] = (float)(1 - d->t_i[b]);
        k.b[b] = (float)d->t_i[b];
    }
    combine3(G->xt, k, x, x1, NULL, B, G->numel, st);
    gen_gpu_forward_xt(G, y1, x1, ctx);
}

// dxhat = d x̂ → the student's gradients (through every inner step, then the backbone) or the baseline's
static void gen_gpu_backward(GenGpu* G, const float* dxhat) {
    cudaStream_t st = G->bb.stream;
    int B = G->B;
    Coef3 k = coef3_all(B, 0, 0, 0);
    for (int b = 0; b < B; b++) k.a[b] = G->tmd && G->xhat_eq15 ? -1.f : (float)-G->t[b]; // d x̂ / d ŷ (or d v)
    combine3(G->dyhat, k, dxhat, dxhat, NULL, B, G->numel, st);
    if (G->tmd) {
        const StudentConfig* sc = &G->S->sc;
        int Lb = sc->wan.num_layers - sc->head_blocks;
        cudaCheck(cudaMemsetAsync(G->dm, 0, sizeof(float) * B * G->bb.g.L * sc->wan.dim, st));
        cudaCheck(cudaMemsetAsync(G->dc, 0, sizeof(float) * B * sc->wan.text_len * sc->wan.dim, st));
        rollout_gpu_backward(G->S, G->dm, G->dc, G->dyhat, &G->ro, &G->bb);
        wan_gpu_backward_blocks(&G->S->dP, NULL, NULL, G->dm, Lb, NULL, G->dc, &G->bb, &G->S->w);
    } else {
        wan_gpu_backward(&G->P->dP, NULL, NULL, G->dyhat, &G->bb, &G->P->w);
    }
}

// The critic side's DiT passes in two activation plans (the memory a step needs is their size, not four):
//   a_train (training): the fake score fk AND the conditional teacher tc. The student step runs the fake score first
//     and takes what it needs of its output (g_fake) before the teacher runs in the same plan (the GAN loss then
//     backpropagates through the teacher's graph); the critic step finishes the fake score's backward before the
//     teacher's features on x̂_t are made there. fk and tc point at a_train.
//   a_fwd (forward only): the unconditional teacher tu and, with the GAN terms, the teacher on real data treal, keeping
//     the discriminator's feature levels. tu and treal point at a_fwd.
// Both borrow the block set and the backward scratch of the lender given to dmd_gpu_work_init (the generator's
// backbone) when it recomputes (gpu/act_plan.h: borrowed work sets).
typedef struct {
    int B;
    size_t numel, n, nctx;
    WanGpuAct a_train, a_fwd; // the two plans (above)
    WanGpuAct *tc, *tu, *fk;  // teacher cond, teacher uncond (forward only), fake score (training: its DSM backward)
    const WanGpuAct* lender;  // whose block set and scratch the plans borrow (NULL: their own)
    float *xhat_t, *gt, *gf, *e, *dxhat, *ctx_u;
    double *sums, *red; // device [B], [B·TMD_RED_BLOCKS]
    // the GAN terms (dmd_gpu_work_attach_disc; D NULL: none)
    DiscGpuModel* D;
    const WanGpuWeights* T; // the discriminator; the frozen teacher the critic step reads
    int top;                // teacher blocks the features need (last feature layer + 1)
    WanGpuAct* treal;       // the teacher on real data (forward only, keeping the feature levels)
    DiscGpuAct dfake, dreal;
    float *xr, *dxt, *dfeat_buf; // real x_t [B, ...], d x̂_t through the teacher, feature gradients [heads, B·L, D]
    float* dfeat[WAN_MAX_LAYERS + 1];
    // context parallelism (dmd_gpu_disc_views_init_): the heads' whole-sequence views of the fake and real features
    WanGpuAct* fview[2];                   // [0] of tc, [1] of treal: their grids whole, their levels the gathered copies
    float *fwhole, *dfwhole, *ftmp;        // [2][heads, B·L, D] the gathered levels, [heads, B·L, D] their gradients,
                                           // [B·L, D] the gather's scratch
    float* dfeat_whole[WAN_MAX_LAYERS + 1]; // dfwhole's levels, as dfeat's
} DmdGpuWork;

// Context parallelism with the GAN terms: the Conv3D heads read the whole latent grid of a feature level, a CP plan
// holds this rank's tokens of it. Each level the heads read is all-gathered over the group into a whole copy (gather,
// not halo exchange: the strided and multiscale heads' windows cross any token split; README), and the heads run on a
// view of the plan whose grid is whole and whose residual levels are those copies. Every rank of the group so runs
// the heads on the same features: the same logits and losses, the same discriminator gradient on every rank (the
// trainer scales it by 1/ranks, not 1/groups, so the world's all-reduce makes the groups' mean), and the same whole
// feature gradients, of which each rank hands its tokens' rows to the teacher's backward (dmd_gpu_disc_dfeat_rows_).
static void dmd_gpu_disc_views_init_(DmdGpuWork* w) {
    const WanCp* cp = w->a_train.cp;
    const DiscConfig* dc = &w->D->dc;
    size_t LD = (size_t)cp->lay.B * cp->lay.L * w->a_train.cfg.dim; // a whole level
    w->fwhole = tmd_dalloc_(2 * dc->n_heads * LD, "GAN gathered features");
    w->dfwhole = tmd_dalloc_(dc->n_heads * LD, "GAN gathered feature gradients");
    w->ftmp = tmd_dalloc_(LD, "GAN feature gather");
    for (int l = 0; l <= WAN_MAX_LAYERS; l++) w->dfeat_whole[l] = NULL;
    for (int side = 0; side < 2; side++) {
        const WanGpuAct* plan = side ? w->treal : w->tc;
        WanGpuAct* v = w->fview[side] = (WanGpuAct*)malloc(sizeof(WanGpuAct));
        *v = *plan; // the config, batch, stream and block count; the grid and the levels replaced:
        v->g = plan->cp->g;
        v->g_out = plan->cp->g_out;
        v->cp = NULL;
        v->xs = w->fwhole + (size_t)side * dc->n_heads * LD;
        for (int h = 0; h < dc->n_heads; h++) v->slot[dc->layers[h] + 1] = h; // wan_gpu_xs(v, level) = the copy
    }
    for (int h = 0; h < dc->n_heads; h++) w->dfeat_whole[dc->layers[h] + 1] = w->dfwhole + h * LD;
}
// the plan the heads read: side 0 the fake features (tc), 1 the real ones (treal); with CP their whole views
static const WanGpuAct* dmd_gpu_disc_plan_(const DmdGpuWork* w, int side) {
    return w->fview[side] ? w->fview[side] : side ? w->treal : w->tc;
}
// after the teacher's forward on that side: its feature levels gathered into the view (CP), then the plan to read
static const WanGpuAct* dmd_gpu_disc_features_(DmdGpuWork* w, int side) {
    if (!w->fview[side]) return dmd_gpu_disc_plan_(w, side);
    const WanGpuAct* plan = side ? w->treal : w->tc;
    const DiscConfig* dc = &w->D->dc;
    for (int h = 0; h < dc->n_heads; h++)
        cp_gpu_gather_rows(plan->cp, wan_gpu_xs(w->fview[side], dc->layers[h] + 1), w->ftmp,
                           wan_gpu_xs(plan, dc->layers[h] + 1), (size_t)plan->cfg.dim, plan->stream);
    return w->fview[side];
}
// where the heads' backward writes the feature gradients (zeroed here): the levels of the features they read
static float* const* dmd_gpu_disc_dfeat_(DmdGpuWork* w) {
    const DiscConfig* dc = &w->D->dc;
    size_t LD = (size_t)w->B * w->tc->g.L * w->tc->cfg.dim;
    cudaCheck(cudaMemsetAsync(w->dfeat_buf, 0, sizeof(float) * dc->n_heads * LD, w->tc->stream));
    if (!w->fview[0]) return w->dfeat;
    cudaCheck(cudaMemsetAsync(w->dfwhole, 0, sizeof(float) * dc->n_heads * LD * w->tc->cp->lay.K2, w->tc->stream));
    return w->dfeat_whole;
}
// CP: this rank's tokens' rows of the whole feature gradients into dfeat (the teacher's backward on its tokens)
static void dmd_gpu_disc_dfeat_rows_(DmdGpuWork* w) {
    if (!w->fview[0]) return;
    const CpLayout* p = &w->tc->cp->lay;
    const DiscConfig* dc = &w->D->dc;
    for (int h = 0; h < dc->n_heads; h++) {
        int l = dc->layers[h] + 1;
        cp_copy_rows_gpu(w->dfeat[l], p->Lr, 0, w->dfeat_whole[l], p->L, cp_first_token(p), p->Lr, p->B,
                         (size_t)w->tc->cfg.dim, w->tc->stream);
    }
}

// the forward-only plan a_fwd, keeping levels keep[0..n_keep) (the discriminator's features), borrowing when it can
static void dmd_gpu_fwd_plan_(DmdGpuWork* w, const int* keep, int n_keep) {
    WanGpuActOpts o;
    memset(&o, 0, sizeof(o));
    char err[ST_ERRLEN];
    o.share = w->lender ? w->lender : w->a_train.recompute ? &w->a_train : NULL;
    o.cp = w->a_train.cp ? w->a_train.cp->comm : NULL; // the training plan's group
    o.n_keep = n_keep;
    for (int k = 0; k < n_keep; k++) o.keep[k] = keep[k];
    const WanGpuAct* a = &w->a_train;
    if (wan_gpu_act_init_opts(&w->a_fwd, &a->cfg, a->B, a->g.C, a->g.T, a->g.Hl, a->g.Wl, 0, &o, err)) {
        fprintf(stderr, "DMD2-v: %s\n", err);
        exit(1);
    }
}

// lender: a training plan of the same shapes whose block set and scratch the critic side's plans may borrow (the
// generator's backbone, G->bb; used only when it recomputes; NULL: none). cp: context parallelism (NULL: none; the
// lender's group when it has one): the fake score's and the teacher's outputs are the whole sample's on every rank
static void dmd_gpu_work_init(DmdGpuWork* w, const WanConfig* c, int B, int T, int Hl, int Wl, const WanGpuAct* lender,
                              Comm* cp = NULL) {
    memset(w, 0, sizeof(*w));
    char err[ST_ERRLEN];
    w->lender =
        lender && lender->training && lender->recompute && !lender->borrowed && wan_gpu_recompute ? lender : NULL;
    WanGpuActOpts o;
    memset(&o, 0, sizeof(o));
    o.share = w->lender;
    o.cp = cp;
    if (wan_gpu_act_init_opts(&w->a_train, c, B, c->in_dim, T, Hl, Wl, 1, &o, err)) {
        fprintf(stderr, "DMD2-v: %s\n", err);
        exit(1);
    }
    dmd_gpu_fwd_plan_(w, NULL, 0);
    w->fk = w->tc = &w->a_train;
    w->tu = &w->a_fwd;
    w->B = B;
    w->numel = (size_t)c->out_dim * T * Hl * Wl;
    w->n = B * w->numel;
    w->nctx = (size_t)c->text_len * c->text_dim;
    float** f[] = {&w->xhat_t, &w->gt, &w->gf, &w->e, &w->dxhat};
    for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++) *f[i] = tmd_dalloc_(w->n, "DMD2-v latents");
    w->ctx_u = tmd_dalloc_(B * w->nctx, "DMD2-v contexts");
    w->sums = (double*)cuda_malloc_named(sizeof(double) * B, "DMD2-v losses", WAN_GPU_OOM_HINT);
    w->red = (double*)cuda_malloc_named(sizeof(double) * B * TMD_RED_BLOCKS, "DMD2-v reductions", WAN_GPU_OOM_HINT);
}
// attaches the discriminator D (its n_heads 0: nothing to attach) and the frozen teacher T: re-plans a_fwd to keep
// the feature levels (tu and the teacher on real data), and adds the heads' activations and the feature gradients
static void dmd_gpu_work_attach_disc(DmdGpuWork* w, DiscGpuModel* D, const WanGpuWeights* T) {
    const DiscConfig* dc = &D->dc;
    if (dc->n_heads <= 0) return;
    WanConfig c = w->a_train.cfg;
    PatchGrid g = w->a_train.g;
    w->D = D;
    w->T = T;
    w->top = 0;
    for (int h = 0; h < dc->n_heads; h++) {
        if (dc->layers[h] < 0 || dc->layers[h] >= c.num_layers) {
            fprintf(stderr, "DMD2-v discriminator: feature layer %d of a %d-block teacher; use layers 0..%d\n",
                    dc->layers[h], c.num_layers, c.num_layers - 1);
            exit(1);
        }
        if (dc->layers[h] + 1 > w->top) w->top = dc->layers[h] + 1;
    }
    int keep[DISC_MAX_HEADS];
    for (int h = 0; h < dc->n_heads; h++) keep[h] = dc->layers[h] + 1;
    wan_gpu_act_free(&w->a_fwd);
    dmd_gpu_fwd_plan_(w, keep, dc->n_heads);
    w->treal = &w->a_fwd;
    if (w->a_train.cp) dmd_gpu_disc_views_init_(w); // the heads read whole features: gathered over the group
    disc_gpu_act_init(&w->dfake, dc, dmd_gpu_disc_plan_(w, 0));
    disc_gpu_act_init(&w->dreal, dc, dmd_gpu_disc_plan_(w, 1), &w->dfake); // the real side borrows the fake's scratch
    size_t LD = (size_t)w->B * g.L * c.dim;
    w->xr = tmd_dalloc_(w->n, "DMD2-v real x_t");
    w->dxt = tmd_dalloc_(w->n, "DMD2-v GAN latent gradient");
    w->dfeat_buf = tmd_dalloc_(dc->n_heads * LD, "GAN feature gradients");
    for (int l = 0; l <= c.num_layers; l++) w->dfeat[l] = NULL;
    for (int h = 0; h < dc->n_heads; h++)
        w->dfeat[dc->layers[h] + 1] = w->dfeat_buf + h * LD; // layers are distinct (disc_layers_for)
}
static void dmd_gpu_work_free(DmdGpuWork* w) {
    if (w->D) {
        disc_gpu_act_free(&w->dfake);
        disc_gpu_act_free(&w->dreal);
        cudaCheck(cudaFree(w->xr));
        cudaCheck(cudaFree(w->dxt));
        cudaCheck(cudaFree(w->dfeat_buf));
        if (w->fview[0]) {
            free(w->fview[0]);
            free(w->fview[1]);
            cudaCheck(cudaFree(w->fwhole));
            cudaCheck(cudaFree(w->dfwhole));
            cudaCheck(cudaFree(w->ftmp));
        }
    }
    wan_gpu_act_free(&w->a_train);
    wan_gpu_act_free(&w->a_fwd);
    float* f[] = {w->xhat_t, w->gt, w->gf, w->e, w->dxhat, w->ctx_u};
    for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++) cudaCheck(cudaFree(f[i]));
    cudaCheck(cudaFree(w->sums));
    cudaCheck(cudaFree(w->red));
}

typedef struct {
    double vsd[TMD_MAX_BATCH], dsm[TMD_MAX_BATCH], gan_g[TMD_MAX_BATCH], gan_d[TMD_MAX_BATCH];
    int finite;
} DmdGpuStats;

static void dmd_gpu_require_disc_(const DmdGpuWork* w, const DmdConfig* cf) {
    if (cf->gan_weight > 0 && !w->D) {
        fprintf(stderr,
                "DMD2-v on the GPU: gan_weight %g but no discriminator attached; call dmd_gpu_work_attach_disc, "
                "or run with --gan-weight 0 (VSD and the fake score only)\n",
                cf->gan_weight);
        exit(1);
    }
    if (cf->gan_weight > 0 && cf->gan_own_noise) {
        fprintf(
            stderr,
            "DMD2-v on the GPU: gan_own_noise 1 (the discriminator's own t and noise) is only in the CPU reference; "
            "use gan_own_noise 0 (the fake score's t and noise, FastGen's setting)\n");
        exit(1);
    }
}

// x̂_t = (1 − t)·x̂ + t·ε at the step's t_dmd
static void dmd_gpu_noise_(DmdGpuWork* w, const DmdDraw* d, const float* xhat, const float* eps, double* tv) {
    Coef3 k = coef3_all(w->B, 0, 0, 0);
    for (int b = 0; b < w->B; b++) {
        k.a[b] = (float)(1 - d->t[b]);
        k.b[b] = (float)d->t[b];
        tv[b] = 1000.0 * d->t[b];
    }
    combine3(w->xhat_t, k, xhat, eps, NULL, w->B, w->numel, w->a_train.stream);
}

static void dmd_gpu_fill_uncond_(DmdGpuWork* w, const float* ctx_u) {
    for (int b = 0; b < w->B; b++) {
        if (ctx_u)
            cudaCheck(cudaMemcpyAsync(w->ctx_u + b * w->nctx, ctx_u, sizeof(float) * w->nctx, cudaMemcpyDeviceToDevice,
                                      w->a_train.stream));
        else
            cudaCheck(cudaMemsetAsync(w->ctx_u + b * w->nctx, 0, sizeof(float) * w->nctx, w->a_train.stream));
    }
}

// student update on B samples: the VSD gradient (Eq. 11) through the generator. T: the frozen teacher, F: the fake
// score (read only here). ctx_u: the negative prompt of one sample (NULL: zeros).
static DmdGpuStats dmd_gpu_student_step(GenGpu* G, DmdGpuWork* w, const WanGpuWeights* T, const WanGpuWeights* F,
                                        const DmdDraw* d, const float* x, const float* x1, const float* y1,
                                        const float* eps, const float* ctx, const float* ctx_u, const DmdConfig* cf,
                                        double scale) {
    dmd_gpu_require_disc_(w, cf);
    DmdGpuStats st;
    memset(&st, 0, sizeof(st));
    int B = w->B;
    cudaStream_t s_ = w->a_train.stream;
    size_t ne = w->numel;
    double tv[TMD_MAX_BATCH], norm[TMD_MAX_BATCH], sq[TMD_MAX_BATCH];
    gen_gpu_forward(G, d, x, x1, y1, ctx);
    dmd_gpu_noise_(w, d, G->xhat, eps, tv);
    dmd_gpu_fill_uncond_(w, ctx_u);
    // the fake score's x0 (conditional), then the teacher's with CFG (negative prompt): g = x̂_t − t·v (Eq. 17). The
    // fake score first: it shares its plan with the conditional teacher, whose graph the GAN loss below reads
    Coef3 k = coef3_all(B, 0, 0, 0);
    wan_gpu_forward(w->fk, F, w->xhat_t, tv, ctx);
    for (int b = 0; b < B; b++) {
        k.a[b] = 1;
        k.b[b] = (float)-d->t[b];
        k.c[b] = 0;
    }
    combine3(w->gf, k, w->xhat_t, w->fk->out, NULL, B, ne, s_); // g_fake
    wan_gpu_forward(w->tu, T, w->xhat_t, tv, w->ctx_u);
    wan_gpu_forward(w->tc, T, w->xhat_t, tv, ctx);
    for (int b = 0; b < B; b++) {
        double t = d->t[b];
        k.a[b] = 1;
        k.b[b] = (float)(-t * (1 - cf->cfg));
        k.c[b] = (float)(-t * cf->cfg);
    }
    combine3(w->gt, k, w->xhat_t, w->tu->out, w->tc->out, B, ne, s_); // g_teacher = x̂_t − t·(v_∅ + w·(v_c − v_∅))
    // normaliser mean|x̂ − g_teacher| + 1e-6 (or the paper's mean|g_fake − g_teacher|), VSD_EPS as the CPU
    sum_abs_diff(w->sums, w->red, cf->vsd_l1_norm ? w->gf : G->xhat, w->gt, B, ne, s_);
    cudaCheck(cudaMemcpyAsync(norm, w->sums, sizeof(double) * B, cudaMemcpyDeviceToHost, s_));
    sum_sq_diff(w->sums, w->red, w->gf, w->gt, B, ne, s_);
    cudaCheck(cudaMemcpyAsync(sq, w->sums, sizeof(double) * B, cudaMemcpyDeviceToHost, s_));
    cudaCheck(cudaStreamSynchronize(s_));
    st.finite = 1;
    for (int b = 0; b < B; b++) {
        norm[b] = norm[b] / ne + VSD_EPS;
        st.vsd[b] = 0.5 * sq[b] / (norm[b] * norm[b]) / ne; // 0.5·mean(grad²), grad = (g_fake − g_teacher)/norm
        if (!isfinite(st.vsd[b])) st.finite = 0;
        k.a[b] = (float)(scale / (ne * norm[b]));
        k.b[b] = -k.a[b];
        k.c[b] = 0;
    }
    if (!st.finite) return st;
    combine3(w->dxhat, k, w->gf, w->gt, NULL, B, ne, s_); // d/dx̂ of 0.5·mean((x̂ − sg(x̂ − grad))²) = grad/numel
    // GAN generator loss mean_h softplus(−D_h): gradient through the frozen teacher's features into x̂_t, then x̂
    if (cf->gan_weight > 0 && w->D) {
        const DiscConfig* dc = &w->D->dc;
        int nh = dc->n_heads;
        disc_gpu_forward(&w->dfake, &w->D->P, dc, dmd_gpu_disc_features_(w, 0));
        double dlogit[TMD_MAX_BATCH * DISC_MAX_HEADS];
        for (int b = 0; b < B; b++) {
            for (int h = 0; h < nh; h++) {
                double l = w->dfake.logit[b * nh + h];
                st.gan_g[b] += softplus(-l) / nh;
                dlogit[b * nh + h] = -sigmoid(-l) / nh * cf->gan_weight * scale;
            }
            if (!isfinite(st.gan_g[b])) st.finite = 0;
        }
        if (!st.finite) return st;
        disc_gpu_backward(NULL, dmd_gpu_disc_dfeat_(w), dlogit, &w->dfake, &w->D->P, dc, dmd_gpu_disc_plan_(w, 0));
        dmd_gpu_disc_dfeat_rows_(w);
        cudaCheck(cudaMemsetAsync(w->dxt, 0, sizeof(float) * w->n, s_));
        wan_gpu_backward_blocks(NULL, w->dxt, NULL, NULL, w->top, w->dfeat, NULL, w->tc, T);
        for (int b = 0; b < B; b++) {
            k.a[b] = 1;
            k.b[b] = (float)(1 - d->t[b]);
            k.c[b] = 0;
        }
        combine3(w->dxhat, k, w->dxhat, w->dxt, NULL, B, ne, s_); // d x̂ += (1 − t)·d x̂_t
    }
    gen_gpu_backward(G, w->dxhat);
    return st;
}

// critic update on B samples: the fake score's denoising score matching ‖x̂_t − t·v_fake − x̂‖² on the detached x̂
// into Fm's gradients and, with gan_weight > 0, the discriminator's loss into w->D's gradients (cpu/distill_cpu.h
// dmd_critic_sample)
static DmdGpuStats dmd_gpu_critic_step(GenGpu* G, DmdGpuWork* w, WanGpuModel* Fm, const DmdDraw* d, const float* x,
                                       const float* x1, const float* y1, const float* eps, const float* ctx,
                                       const DmdConfig* cf, double scale) {
    dmd_gpu_require_disc_(w, cf);
    DmdGpuStats st;
    memset(&st, 0, sizeof(st));
    int B = w->B;
    cudaStream_t s_ = w->a_train.stream;
    size_t ne = w->numel;
    double tv[TMD_MAX_BATCH], sq[TMD_MAX_BATCH];
    gen_gpu_forward(G, d, x, x1, y1, ctx); // detached: no backward into the generator
    dmd_gpu_noise_(w, d, G->xhat, eps, tv);
    wan_gpu_forward(w->fk, &Fm->w, w->xhat_t, tv, ctx);
    Coef3 k = coef3_all(B, 0, 0, 0);
    for (int b = 0; b < B; b++) {
        k.a[b] = 1;
        k.b[b] = (float)-d->t[b];
        k.c[b] = -1;
    }
    combine3(w->e, k, w->xhat_t, w->fk->out, G->xhat, B, ne, s_); // e = g_fake − x̂
    sum_sq_diff(w->sums, w->red, w->e, NULL, B, ne, s_);
    cudaCheck(cudaMemcpyAsync(sq, w->sums, sizeof(double) * B, cudaMemcpyDeviceToHost, s_));
    cudaCheck(cudaStreamSynchronize(s_));
    st.finite = 1;
    for (int b = 0; b < B; b++) {
        st.dsm[b] = sq[b] / ne;
        if (!isfinite(st.dsm[b])) st.finite = 0;
        k.a[b] = (float)(-d->t[b] * 2 * scale / ne);
        k.b[b] = 0;
        k.c[b] = 0;
    }
    if (!st.finite) return st;
    combine3(w->dxhat, k, w->e, w->e, NULL, B, ne, s_); // d v_fake = −t·2e/numel·scale
    wan_gpu_backward(&Fm->dP, NULL, NULL, w->dxhat, w->fk, &Fm->w);
    // discriminator: teacher features on real x_t = (1 − t)·x + t·ε and on fake x̂_t, the same t and ε as the fake score
    if (cf->gan_weight > 0 && w->D) {
        const DiscConfig* dc = &w->D->dc;
        int nh = dc->n_heads;
        for (int b = 0; b < B; b++) {
            k.a[b] = (float)(1 - d->t[b]);
            k.b[b] = (float)d->t[b];
            k.c[b] = 0;
        }
        combine3(w->xr, k, x, eps, NULL, B, ne, s_);
        wan_gpu_forward_blocks(w->tc, w->T, w->xhat_t, tv, ctx, w->top);
        wan_gpu_forward_blocks(w->treal, w->T, w->xr, tv, ctx, w->top);
        // train mode (dropout), keyed by each sample's t as the CPU's dmd_critic_sample; eval mode again after it
        for (int b = 0; b < B; b++) {
            w->dfake.dropout_key[b] = disc_dropout_key_for(d->t[b], 0);
            w->dreal.dropout_key[b] = disc_dropout_key_for(d->t[b], 1);
        }
        disc_gpu_forward(&w->dfake, &w->D->P, dc, dmd_gpu_disc_features_(w, 0));
        disc_gpu_forward(&w->dreal, &w->D->P, dc, dmd_gpu_disc_features_(w, 1));
        double dlf[TMD_MAX_BATCH * DISC_MAX_HEADS], dlr[TMD_MAX_BATCH * DISC_MAX_HEADS];
        for (int b = 0; b < B; b++) {
            for (int h = 0; h < nh; h++) {
                double lr = w->dreal.logit[b * nh + h], lf = w->dfake.logit[b * nh + h];
                st.gan_d[b] += (softplus(-lr) + softplus(lf)) / nh;
                dlr[b * nh + h] = -sigmoid(-lr) / nh * scale;
                dlf[b * nh + h] = sigmoid(lf) / nh * scale;
            }
            if (!isfinite(st.gan_d[b])) st.finite = 0;
        }
        if (!st.finite) {
            memset(w->dfake.dropout_key, 0, sizeof(w->dfake.dropout_key));
            memset(w->dreal.dropout_key, 0, sizeof(w->dreal.dropout_key));
            return st;
        }
        disc_gpu_backward(&w->D->dP, NULL, dlr, &w->dreal, &w->D->P, dc, dmd_gpu_disc_plan_(w, 1));
        disc_gpu_backward(&w->D->dP, NULL, dlf, &w->dfake, &w->D->P, dc, dmd_gpu_disc_plan_(w, 0));
        memset(w->dfake.dropout_key, 0, sizeof(w->dfake.dropout_key));
        memset(w->dreal.dropout_key, 0, sizeof(w->dreal.dropout_key));
    }
    return st;
}
