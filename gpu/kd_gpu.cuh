// gpu/kd_gpu.cuh: the KD warm-up of a one-step student on the GPU (paper Table 4 and App. A.3: the one-step DMD2-v
// baseline starts from knowledge distillation on teacher ODE pairs). The twin of cpu/distill_run.h distill_kd_pairs and
// distill_kd; the oracle of one step is cpu/distill_cpu.h kd_sample (gpu/tmd_gpu_tests.cuh checks it):
//   kd_pairs_make    P teacher ODE pairs: the noise z ~ N(0, I) from the run's Philox stream, a caption of the run's
//                    data per pair (gpu/kd_pairs.h kd_pairs_captions: the built-in world's training captions, or a
//                    latent dataset's contexts), and the teacher's many-step CFG sample from z: cpu/teacher_cpu.h's
//                    UniPC over the GPU teacher against the unconditional context the stages use (the world's empty
//                    caption, the dataset's negative prompt) with gpu/stage_plan.h kd_defaults' sampler: the built-in
//                    world's evaluation sampler (as the CPU's KD pairs), or a Wan2.1 teacher's own (UniPC 50 steps,
//                    shift 5, Table 7's CFG 5 with skip-layer guidance at block 10: the unconditional forward without
//                    that block, gpu/wan_gpu.cuh wan_gpu_forward_skipping)
//   kd_pairs_get     the pairs of a run: loaded from their cache file when it was made with this run's data and
//                    settings, else made and written there atomically (gpu/train_state.h); a cache of another world or
//                    dataset or of other settings is refused by name (gpu/kd_pairs.h kd_pairs_check)
//   kd_gpu_step      one KD step on B pairs: x̂ = g_θ(z, T_MAX) (x_t is the noise itself, t = T_MAX), loss_b = mean (x̂ −
//                    x_teacher)², the gradient of Σ_b scale·loss_b ACCUMULATED into the student's gradients through the
//                    same generator as Stage 2 (gpu/distill_gpu.cuh GenGpu: a plain Wan student or the TMD student with
//                    gradients through every inner step)
// The noise, captions and teacher samples are all in the cache, so a rerun or a resumed run reads the very same pairs.
#pragma once
#include "distill_gpu.cuh" // GenGpu (the one-step generator), T_MAX, combine3, sum_sq_diff
#include "teacher_gpu.cuh" // wan_gpu_velocity over teacher_sample
#include "train_state.h"   // TsBuffer, TsMeta, ts_save, ts_load
#include "kd_pairs.h"      // KdPairs, KdPairSettings, the captions from the run's data, the cache's metadata
#include "../lib/timer.h"  // now_s

#define KD_PAIR_CHUNK 16 // pairs the teacher samples at a time at most (the evaluation's batch)

// the pairs the teacher can sample at once: KD_PAIR_CHUNK, halved while the forward arena and the chunk's latents and
// contexts do not fit the free device memory less a 1 GiB margin (the teacher is already on the device); 0 with a
// message when not even one fits. The built-in worlds' chunks fit whole; a Wan2.1 1.3B 480p sample alone needs ~9 GiB
// of activations (gpu/act_plan.h), so there the chunk shrinks to what the GPU holds.
static int kd_pairs_chunk(const WanConfig* c, int T, int Hl, int Wl, size_t numel, size_t nctx, int P, char* err) {
    size_t free_b = 0, total_b = 0;
    cudaCheck(cudaMemGetInfo(&free_b, &total_b));
    int L = (T / c->patch[0]) * (Hl / c->patch[1]) * (Wl / c->patch[2]);
    double avail = (double)free_b - 1024.0 * 1024.0 * 1024.0, need = 0;
    for (int chunk = P < KD_PAIR_CHUNK ? P : KD_PAIR_CHUNK; chunk >= 1; chunk /= 2) {
        need = (double)act_wan_bytes(c, chunk, L, 0, 0, wan_gpu_use_flash(c), sizeof(floatX)) +
               4.0 * chunk * (numel + 2.0 * nctx);
        if (need <= avail) return chunk;
    }
    snprintf(err, ST_ERRLEN,
             "KD pairs: the teacher's forward on one pair needs %.2f GiB and %.2f GiB are free (less a 1 GiB margin); "
             "a GPU with more memory, or shorter latents, are needed",
             need / 1073741824.0, avail / 1073741824.0);
    return 0;
}

// the teacher's samples for the pairs whose noise and captions kp holds, `chunk` pairs at a time (the last chunk
// zero-padded, its padding dropped), with CFG against `uncond` [nctx] (NULL: the empty caption, zeros)
static int kd_pairs_sample(KdPairs* kp, const WanGpuModel* T, int Tl, int Hl, int Wl, const float* uncond,
                           const KdPairSettings* s, int chunk, char* err) {
    const WanConfig* c = &T->w.cfg;
    size_t numel = kp->numel, nctx = kp->nctx;
    int P = kp->P;
    if (chunk > P) chunk = P;
    if (chunk < 1 || chunk > TMD_MAX_BATCH) {
        snprintf(err, ST_ERRLEN, "KD pairs: a chunk of %d pairs; expected 1 .. %d", chunk, TMD_MAX_BATCH);
        return -1;
    }
    WanGpuAct a;
    if (wan_gpu_act_init(&a, c, chunk, c->in_dim, Tl, Hl, Wl, 0, err)) return -1;
    size_t nx = numel * chunk;
    float *xd, *cd, *cu;
    cudaCheck(cudaMalloc(&xd, sizeof(float) * nx));
    cudaCheck(cudaMalloc(&cd, sizeof(float) * nctx * chunk));
    cudaCheck(cudaMalloc(&cu, sizeof(float) * nctx * chunk));
    if (!uncond)
        cudaCheck(cudaMemset(cu, 0, sizeof(float) * nctx * chunk)); // the empty caption
    else
        for (int b = 0; b < chunk; b++)
            cudaCheck(cudaMemcpy(cu + (size_t)b * nctx, uncond, sizeof(float) * nctx, cudaMemcpyHostToDevice));
    float* stage = (float*)xmalloc(nx, sizeof(float), "KD pairs: staging");
    real* x = (real*)xmalloc(nx, sizeof(real), "KD pairs: sample");
    if (s->skip_layer >= c->num_layers) {
        snprintf(err, ST_ERRLEN,
                 "KD pairs: skip-layer guidance at block %d of a teacher of %d blocks; give --kd-skip-layer -1 "
                 "(none) or a block below %d",
                 s->skip_layer, c->num_layers, c->num_layers);
        return -1;
    }
    WanGpuVelocity vel = {&a, &T->w, cd, cu, xd, stage, nx, s->skip_layer >= 0, s->skip_layer};
    SampleOpts so = {s->steps,     s->shift,   s->cfg,
                     SOLVER_UNIPC, GRID_UNIPC, 0}; // as cpu/distill_run.h distill_teacher_sample
    int rc = 0;
    for (int i0 = 0; i0 < P && !rc; i0 += chunk) {
        int n = P - i0 < chunk ? P - i0 : chunk;
        cudaCheck(cudaMemset(cd, 0, sizeof(float) * nctx * chunk));
        cudaCheck(cudaMemcpy(cd, kp->ctx + (size_t)i0 * nctx, sizeof(float) * nctx * n, cudaMemcpyHostToDevice));
        for (size_t k = 0; k < nx; k++) x[k] = k < numel * n ? (real)kp->noise[(size_t)i0 * numel + k] : 0;
        int nfe = 0;
        if (teacher_sample(x, nx, wan_gpu_velocity, &vel, &so, &nfe, err)) rc = -1;
        for (size_t k = 0; k < numel * n; k++) kp->target[(size_t)i0 * numel + k] = (float)x[k];
    }
    free(stage);
    free(x);
    cudaCheck(cudaFree(xd));
    cudaCheck(cudaFree(cd));
    cudaCheck(cudaFree(cu));
    wan_gpu_act_free(&a);
    return rc;
}

// the run's pairs from td (opened with stream KD_STREAM, see gpu/kd_pairs.h kd_pairs_captions): from `path` when it
// holds pairs of this data, these settings and this teacher; made and saved there when it does not exist; refused
// (-1, with what differs and what to do) when it exists otherwise or cannot be read. The captions are drawn first
// either way (a dataset's fingerprint is of the contexts the pairs take). On success kp holds the pairs.
static int kd_pairs_get(KdPairs* kp, const char* path, const WanGpuModel* T, const float* teacher_host, TrainData* td,
                        const KdPairSettings* s, char* err) {
    const WanConfig* c = &T->w.cfg;
    size_t numel = td->numel, nctx = td->nctx;
    kd_pairs_alloc(kp, s->pairs, numel, nctx);
    uint64_t ch = 0;
    if (kd_pairs_captions(kp->ctx, td, s->pairs, &ch, err)) {
        kd_pairs_free(kp);
        return -1;
    }
    TsMeta want;
    kd_pairs_meta(&want, c, td, s, kd_teacher_hash(teacher_host, wan_num_params(c)), ch);
    FILE* f = fopen(path, "rb");
    if (f) {
        fclose(f);
        if (kd_pairs_load(kp, path, &want, err)) {
            kd_pairs_free(kp);
            return -1;
        }
        printf("KD: %d teacher pairs loaded from %s\n", s->pairs, path);
        return 0;
    }
    double t0 = now_s();
    // the noise: Philox (seed·1000003 + KD_STREAM, 0), in the data's latent shape
    float* z;
    cudaCheck(cudaMalloc(&z, sizeof(float) * (size_t)s->pairs * numel));
    normal_fill(z, (size_t)s->pairs * numel, s->seed * 1000003 + KD_STREAM, 0, 0.f, 1.f, 0);
    cudaCheck(cudaMemcpy(kp->noise, z, sizeof(float) * (size_t)s->pairs * numel, cudaMemcpyDeviceToHost));
    cudaCheck(cudaFree(z));
    int chunk = kd_pairs_chunk(c, td->T, td->H, td->W, numel, nctx, s->pairs, err);
    if (!chunk || kd_pairs_sample(kp, T, td->T, td->H, td->W, td->negative, s, chunk, err)) {
        kd_pairs_free(kp);
        return -1;
    }
    printf("KD: %d teacher pairs (UniPC %d steps, CFG %g against %s, shift %g, %d at a time) in %.1f s\n", s->pairs,
           s->steps, s->cfg, td->negative ? "the negative prompt" : "the empty caption", s->shift, chunk, now_s() - t0);
    TsBuffer b[3] = {{"kd.noise", kp->noise, (size_t)kp->P * kp->numel},
                     {"kd.target", kp->target, (size_t)kp->P * kp->numel},
                     {"kd.context", kp->ctx, (size_t)kp->P * kp->nctx}};
    if (ts_save(path, b, 3, &want, err)) {
        kd_pairs_free(kp);
        return -1;
    }
    printf("KD: pairs saved to %s\n", path);
    return 0;
}

// ---------------------------------------------------------------------------------------------------------
// the KD step

typedef struct {
    int B, P;
    size_t numel, nctx;
    float *noise, *target, *ctx; // device: every pair, [P·numel], [P·numel], [P·nctx]
    float *zb, *tb, *cb;         // device: the step's pairs [B·numel], [B·numel], [B·nctx]
    float* dxhat;                // device [B·numel]: d loss / d x̂
    double *sums, *red;          // device [B], [B·TMD_RED_BLOCKS]
} KdGpuWork;

// kp NULL: no pairs on the device (the caller passes its own batch to kd_gpu_step)
static void kd_gpu_work_init(KdGpuWork* w, const KdPairs* kp, int B, size_t numel, size_t nctx) {
    memset(w, 0, sizeof(*w));
    if (B > TMD_MAX_BATCH) {
        fprintf(stderr, "KD: batch %d > %d\n", B, TMD_MAX_BATCH);
        exit(1);
    }
    w->B = B;
    w->numel = numel;
    w->nctx = nctx;
    if (kp) {
        w->P = kp->P;
        w->noise = tmd_dalloc_((size_t)kp->P * numel, "KD pairs (noise)");
        w->target = tmd_dalloc_((size_t)kp->P * numel, "KD pairs (teacher samples)");
        w->ctx = tmd_dalloc_((size_t)kp->P * nctx, "KD pairs (captions)");
        cudaCheck(cudaMemcpy(w->noise, kp->noise, sizeof(float) * kp->P * numel, cudaMemcpyHostToDevice));
        cudaCheck(cudaMemcpy(w->target, kp->target, sizeof(float) * kp->P * numel, cudaMemcpyHostToDevice));
        cudaCheck(cudaMemcpy(w->ctx, kp->ctx, sizeof(float) * kp->P * nctx, cudaMemcpyHostToDevice));
    }
    w->zb = tmd_dalloc_(B * numel, "KD batch");
    w->tb = tmd_dalloc_(B * numel, "KD batch");
    w->cb = tmd_dalloc_(B * nctx, "KD batch");
    w->dxhat = tmd_dalloc_(B * numel, "KD latent gradient");
    w->sums = (double*)cuda_malloc_named(sizeof(double) * B, "KD losses", WAN_GPU_OOM_HINT);
    w->red = (double*)cuda_malloc_named(sizeof(double) * B * TMD_RED_BLOCKS, "KD reductions", WAN_GPU_OOM_HINT);
}
static void kd_gpu_work_free(KdGpuWork* w) {
    float* f[] = {w->noise, w->target, w->ctx, w->zb, w->tb, w->cb, w->dxhat};
    for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++)
        if (f[i]) cudaCheck(cudaFree(f[i]));
    cudaCheck(cudaFree(w->sums));
    cudaCheck(cudaFree(w->red));
}

// the step's pairs into zb, tb, cb: pair (step·B + b) mod P for sample b (cpu/distill_run.h distill_kd's order)
static void kd_gpu_batch(KdGpuWork* w, uint64_t step, cudaStream_t st) {
    for (int b = 0; b < w->B; b++) {
        size_t i = (size_t)((step * (uint64_t)w->B + (uint64_t)b) % (uint64_t)w->P);
        cudaCheck(cudaMemcpyAsync(w->zb + b * w->numel, w->noise + i * w->numel, sizeof(float) * w->numel,
                                  cudaMemcpyDeviceToDevice, st));
        cudaCheck(cudaMemcpyAsync(w->tb + b * w->numel, w->target + i * w->numel, sizeof(float) * w->numel,
                                  cudaMemcpyDeviceToDevice, st));
        cudaCheck(cudaMemcpyAsync(w->cb + b * w->nctx, w->ctx + i * w->nctx, sizeof(float) * w->nctx,
                                  cudaMemcpyDeviceToDevice, st));
    }
}

typedef struct {
    double mse[TMD_MAX_BATCH];
    int finite;
} KdGpuStats;

// one KD step on B pairs (cpu/distill_cpu.h kd_sample): z, x_teacher [B, C, T, Hl, Wl]; y1 the inner noise (TMD; unused
// by a plain student); ctx [B, text_len, text_dim] zero-padded. The losses are checked finite before any backward.
static KdGpuStats kd_gpu_step(GenGpu* G, KdGpuWork* w, const float* z, const float* x_teacher, const float* y1,
                              const float* ctx, double scale) {
    KdGpuStats st;
    memset(&st, 0, sizeof(st));
    int B = G->B;
    cudaStream_t s_ = G->bb.stream;
    size_t ne = G->numel;
    double sq[TMD_MAX_BATCH];
    for (int b = 0; b < B; b++) G->t[b] = T_MAX;
    cudaCheck(cudaMemcpyAsync(G->xt, z, sizeof(float) * B * ne, cudaMemcpyDeviceToDevice, s_));
    gen_gpu_forward_xt(G, y1, z, ctx); // x̂ = z − T_MAX·ŷ (x1 = z for Eq. 15)
    sum_sq_diff(w->sums, w->red, G->xhat, x_teacher, B, ne, s_);
    cudaCheck(cudaMemcpyAsync(sq, w->sums, sizeof(double) * B, cudaMemcpyDeviceToHost, s_));
    cudaCheck(cudaStreamSynchronize(s_));
    st.finite = 1;
    Coef3 k = coef3_all(B, 0, 0, 0);
    for (int b = 0; b < B; b++) {
        st.mse[b] = sq[b] / ne;
        if (!isfinite(st.mse[b])) st.finite = 0;
        k.a[b] = (float)(2 * scale / ne);
        k.b[b] = -k.a[b];
    }
    if (!st.finite) return st; // a non-finite loss: the caller skips the step and reports it
    combine3(w->dxhat, k, G->xhat, x_teacher, NULL, B, ne, s_); // d/dx̂ of scale·mean (x̂ − x_teacher)²
    gen_gpu_backward(G, w->dxhat);
    return st;
}
