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
#include "tmd_gpu.cuh"                  // the student, head, rollout
#include "../cpu/distill_cpu.h"         // TmmfConfig, DmdConfig and defaults, shifted_time, T_MIN/T_MAX

// per-sample scalars of one TM-MF step
typedef struct { int B; double t[TMD_MAX_BATCH], s[TMD_MAX_BATCH], r[TMD_MAX_BATCH]; int dropped[TMD_MAX_BATCH]; } TmmfDraw;

// draws sample b's scalars exactly as cpu/distill_cpu.h tmmf_sample does, writing its noise x1, y1 [numel] (host
// floats) from the same stream when given (NULL: skipped, so the trainer can take its noise from Philox instead;
// the CPU's order then no longer matters)
static void tmmf_draw_sample(TmmfDraw* d, int b, const TmmfConfig* cf, Rng* rng, float* x1, float* y1, size_t numel) {
    double tg[65], sg[65];
    outer_grid(tg, cf->M, cf->gamma_outer); inner_grid(sg, cf->N, cf->gamma_inner);
    int i = 1 + (int)(rng_uniform(rng) * cf->M); if (i > cf->M) i = cf->M;
    d->t[b] = tg[i];
    if (x1) for (size_t k = 0; k < numel; k++) x1[k] = (float)rng_normal(rng);
    d->dropped[b] = rng_uniform(rng) < cf->p_drop;
    if (y1) for (size_t k = 0; k < numel; k++) y1[k] = (float)rng_normal(rng);
    double s = shifted_time(rng, cf->gamma_s);
    int kk = 0; for (int j = 0; j <= cf->N; j++) if (sg[j] <= s) kk = j;
    double r = sg[kk];
    if (cf->tm_only || rng_uniform(rng) < cf->p_tm) r = s;
    d->s[b] = s; d->r[b] = r;
}

typedef struct {
    int B; size_t numel, n;        // per sample, whole batch
    size_t nctx;                   // context elements per sample: text_len·text_dim
    WanGpuAct bb, bb_u;            // backbone: conditional (training), unconditional (forward only, the guidance)
    TmdGpuHeadAct h, h_aux;        // the trained head evaluation; a scratch one (guidance, JVP: no gradients)
    float *xt, *y, *ys, *v, *vg, *u, *uhat, *yp, *up, *um, *dhead, *dm, *dc, *ctx_in, *ctx_u;
    double *err2, *red;            // device: [B], [B·TMD_RED_BLOCKS]
} TmmfGpuWork;

static float* tmd_dalloc_(size_t n, const char* what) { return (float*)cuda_malloc_named(sizeof(float) * (n ? n : 1), what, WAN_GPU_OOM_HINT); }

static void tmmf_gpu_work_init(TmmfGpuWork* w, const StudentConfig* sc, int B, int T, int Hl, int Wl) {
    memset(w, 0, sizeof(*w));
    const WanConfig* c = &sc->wan; char err[ST_ERRLEN];
    if (B > TMD_MAX_BATCH) { fprintf(stderr, "TM-MF: batch %d > %d\n", B, TMD_MAX_BATCH); exit(1); }
    if (wan_gpu_act_init(&w->bb, c, B, c->in_dim, T, Hl, Wl, 1, err) || wan_gpu_act_init(&w->bb_u, c, B, c->in_dim, T, Hl, Wl, 0, err)) {
        fprintf(stderr, "TM-MF: %s\n", err); exit(1);
    }
    head_gpu_act_init(&w->h, sc, &w->bb); head_gpu_act_init(&w->h_aux, sc, &w->bb);
    w->B = B; w->numel = (size_t)c->out_dim * T * Hl * Wl; w->n = B * w->numel; w->nctx = (size_t)c->text_len * c->text_dim;
    float** lat[] = {&w->xt, &w->y, &w->ys, &w->v, &w->vg, &w->u, &w->uhat, &w->yp, &w->up, &w->um, &w->dhead};
    for (size_t i = 0; i < sizeof(lat) / sizeof(lat[0]); i++) *lat[i] = tmd_dalloc_(w->n, "TM-MF latents");
    w->dm = tmd_dalloc_((size_t)B * w->bb.g.L * c->dim, "TM-MF feature gradient");
    w->dc = tmd_dalloc_((size_t)B * c->text_len * c->dim, "TM-MF context gradient");
    w->ctx_in = tmd_dalloc_(B * w->nctx, "TM-MF contexts"); w->ctx_u = tmd_dalloc_(B * w->nctx, "TM-MF contexts");
    w->err2 = (double*)cuda_malloc_named(sizeof(double) * B, "TM-MF losses", WAN_GPU_OOM_HINT);
    w->red = (double*)cuda_malloc_named(sizeof(double) * B * TMD_RED_BLOCKS, "TM-MF reductions", WAN_GPU_OOM_HINT);
}
static void tmmf_gpu_work_free(TmmfGpuWork* w) {
    wan_gpu_act_free(&w->bb); wan_gpu_act_free(&w->bb_u); head_gpu_act_free(&w->h); head_gpu_act_free(&w->h_aux);
    float* f[] = {w->xt, w->y, w->ys, w->v, w->vg, w->u, w->uhat, w->yp, w->up, w->um, w->dhead, w->dm, w->dc, w->ctx_in, w->ctx_u};
    for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++) cudaCheck(cudaFree(f[i]));
    cudaCheck(cudaFree(w->err2)); cudaCheck(cudaFree(w->red));
}

typedef struct { double loss[TMD_MAX_BATCH], mse[TMD_MAX_BATCH]; int finite; } TmmfGpuStats;

// u = y1 − head (Eq. 14) of the head evaluation a at (s, r) on the backbone bb
static void tmd_gpu_avg_velocity(float* u, TmdGpuHeadAct* a, const TmdGpuStudent* S, const WanGpuAct* bb, const float* m, const float* y,
                                 const double* s, const double* r, const float* y1, size_t n) {
    head_gpu_forward(a, S, bb, m, y, s, r);
    combine3(u, coef3_all(1, 1, -1, 0), y1, a->out, NULL, 1, n, bb->stream);
}

// One TM-MF step on B samples: loss_b = ‖u_θ − û‖² / sg(‖u_θ − û‖² + c), û = sg(v_g − (s − r)·du/ds) (App. A.2;
// cpu/distill_cpu.h tmmf_sample and tmmf_target line for line). x, x1, y1 [B, C, T, Hl, Wl]; ctx [B, text_len,
// text_dim] (zero-padded); ctx_u: the unconditional context of one sample [text_len, text_dim] (NULL: zeros, the
// world's empty caption). with_grads 0: losses only.
static TmmfGpuStats tmmf_gpu_step(TmdGpuStudent* S, TmmfGpuWork* w, const TmmfDraw* d, const float* x, const float* x1, const float* y1,
                                  const float* ctx, const float* ctx_u, const TmmfConfig* cf, double scale, int with_grads) {
    TmmfGpuStats st; memset(&st, 0, sizeof(st));
    const StudentConfig* sc = &S->sc; int B = w->B, Lb = sc->wan.num_layers - sc->head_blocks;
    cudaStream_t s_ = w->bb.stream;
    size_t n = w->n, nc = w->nctx;
    Coef3 k = coef3_all(B, 0, 0, 0);
    double tv[TMD_MAX_BATCH], svp[TMD_MAX_BATCH], svm[TMD_MAX_BATCH];
    // outer state from real data (Algorithm 2): x_t = (1 − t)·x + t·x1
    for (int b = 0; b < B; b++) { k.a[b] = (float)(1 - d->t[b]); k.b[b] = (float)d->t[b]; tv[b] = 1000.0 * d->t[b]; }
    combine3(w->xt, k, x, x1, NULL, B, w->numel, s_);
    // the context each sample trains on (condition dropout 0.1: the unconditional one) and the unconditional one
    for (int b = 0; b < B; b++) {
        float* dst_u = w->ctx_u + b * nc;
        if (ctx_u) cudaCheck(cudaMemcpyAsync(dst_u, ctx_u, sizeof(float) * nc, cudaMemcpyDeviceToDevice, s_));
        else cudaCheck(cudaMemsetAsync(dst_u, 0, sizeof(float) * nc, s_));
        cudaCheck(cudaMemcpyAsync(w->ctx_in + b * nc, d->dropped[b] ? dst_u : ctx + b * nc, sizeof(float) * nc, cudaMemcpyDeviceToDevice, s_));
    }
    wan_gpu_forward_blocks(&w->bb, &S->w, w->xt, tv, w->ctx_in, Lb);
    const float* m = wan_gpu_xs(&w->bb, Lb);
    // y = x1 − x, y_s = (1 − s)·y + s·y1, v = y1 − y
    combine3(w->y, coef3_all(1, 1, -1, 0), x1, x, NULL, 1, n, s_);
    for (int b = 0; b < B; b++) { k.a[b] = (float)(1 - d->s[b]); k.b[b] = (float)d->s[b]; k.c[b] = 0; }
    combine3(w->ys, k, w->y, y1, NULL, B, w->numel, s_);
    combine3(w->v, coef3_all(1, 1, -1, 0), y1, w->y, NULL, 1, n, s_);
    // the trained evaluation u = u_θ(y_s, s, r; m)
    tmd_gpu_avg_velocity(w->u, &w->h, S, &w->bb, m, w->ys, d->s, d->r, y1, n);
    // guided velocity v_g = w·v + (1 − w)·u_θ(y_s, s, s; m_∅) (sg); w = 1 for dropped samples
    int any_guided = 0;
    for (int b = 0; b < B; b++) any_guided |= !d->dropped[b] && cf->cfg != 1;
    if (any_guided) {
        wan_gpu_forward_blocks(&w->bb_u, &S->w, w->xt, tv, w->ctx_u, Lb);
        tmd_gpu_avg_velocity(w->up, &w->h_aux, S, &w->bb_u, wan_gpu_xs(&w->bb_u, Lb), w->ys, d->s, d->s, y1, n);
        for (int b = 0; b < B; b++) { double wb = d->dropped[b] ? 1.0 : cf->cfg; k.a[b] = (float)wb; k.b[b] = (float)(1 - wb); k.c[b] = 0; }
        combine3(w->vg, k, w->v, w->up, NULL, B, w->numel, s_);
    } else {
        cudaCheck(cudaMemcpyAsync(w->vg, w->v, sizeof(float) * n, cudaMemcpyDeviceToDevice, s_));
    }
    const float* tangent = cf->plain_tangent ? w->v : w->vg;   // the JVP's tangent: the guided velocity (tmd_method.md)
    // û = v_g − (s − r)·du/ds, du/ds by central difference along (tangent, 1), one-sided at the boundaries
    Coef3 kp = coef3_all(B, 0, 0, 0), k0 = coef3_all(B, 1, 0, 0);
    int any_fwd = 0, any_bwd = 0;
    for (int b = 0; b < B; b++) {
        double s = d->s[b], r = d->r[b], dl = cf->delta;
        svp[b] = s + dl; svm[b] = s - dl;
        kp.a[b] = 1;
        if (r >= s) continue;
        int fwd = s + dl <= T_MAX, bwd = s - dl >= r;
        double q = (s - r) / (fwd && bwd ? 2 * dl : dl);
        if (fwd && bwd) { kp.b[b] = (float)-q; kp.c[b] = (float)q; }        // −q·(u₊ − u₋)
        else if (fwd) { kp.b[b] = (float)-q; k0.b[b] = (float)q; }         // −q·(u₊ − u)
        else if (bwd) { kp.c[b] = (float)q; k0.b[b] = (float)-q; }        // −q·(u − u₋)
        any_fwd |= fwd; any_bwd |= bwd;
    }
    cudaCheck(cudaMemsetAsync(w->up, 0, sizeof(float) * n, s_)); cudaCheck(cudaMemsetAsync(w->um, 0, sizeof(float) * n, s_));
    for (int b = 0; b < B; b++) { k.a[b] = 1; k.b[b] = (float)cf->delta; k.c[b] = 0; }
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
        st.loss[b] = err2[b] / norm[b]; st.mse[b] = err2[b] / w->numel;
        if (!isfinite(st.loss[b])) st.finite = 0;
    }
    if (!with_grads || !st.finite) return st;   // a non-finite loss: the caller skips the step and reports it
    // d loss / d head = −2(u − û)/norm (u = y1 − head)
    for (int b = 0; b < B; b++) { k.a[b] = (float)(-scale * 2 / norm[b]); k.b[b] = (float)(scale * 2 / norm[b]); k.c[b] = 0; }
    combine3(w->dhead, k, w->u, w->uhat, NULL, B, w->numel, s_);
    cudaCheck(cudaMemsetAsync(w->dm, 0, sizeof(float) * B * w->bb.g.L * sc->wan.dim, s_));
    cudaCheck(cudaMemsetAsync(w->dc, 0, sizeof(float) * B * sc->wan.text_len * sc->wan.dim, s_));
    head_gpu_backward(S, 1, w->dm, w->dc, NULL, w->dhead, &w->h, &w->bb);
    // gradients reach the backbone: the main feature is not detached (Section 3.1)
    wan_gpu_backward_blocks(&S->dP, NULL, NULL, w->dm, Lb, NULL, w->dc, &w->bb, &S->w);
    return st;
}
