// gpu/kd_gpu.cuh: the KD warm-up of a one-step student on the GPU (paper Table 4 and App. A.3: the one-step DMD2-v
// baseline starts from knowledge distillation on teacher ODE pairs). The twin of cpu/distill_run.h distill_kd_pairs and
// distill_kd; the oracle of one step is cpu/distill_cpu.h kd_sample (gpu/tmd_gpu_tests.cuh checks it):
//   kd_pairs_make    P teacher ODE pairs: the noise z ~ N(0, I) from the run's Philox stream, a training caption of the
//                    built-in world per pair, and the teacher's many-step CFG sample from z: cpu/teacher_cpu.h's UniPC
//                    over the GPU teacher against the empty caption, the evaluation's steps, CFG and shift (the CPU's
//                    KD pairs use its evaluation settings too; gpu/eval_gpu.cuh eval_gpu_teacher_row samples the same way)
//   kd_pairs_get     the pairs of a run: loaded from their cache file when it was made with this run's settings, else
//                    made and written there atomically (gpu/train_state.h); a cache of other settings is refused by name
//   kd_gpu_step      one KD step on B pairs: x̂ = g_θ(z, T_MAX) (x_t is the noise itself, t = T_MAX), loss_b = mean (x̂ −
//                    x_teacher)², the gradient of Σ_b scale·loss_b ACCUMULATED into the student's gradients through the
//                    same generator as Stage 2 (gpu/distill_gpu.cuh GenGpu: a plain Wan student or the TMD student with
//                    gradients through every inner step)
// The noise, captions and teacher samples are all in the cache, so a rerun or a resumed run reads the very same pairs.
#pragma once
#include "distill_gpu.cuh"              // GenGpu (the one-step generator), T_MAX, combine3, sum_sq_diff
#include "teacher_gpu.cuh"              // wan_gpu_velocity over teacher_sample, teacher_gpu_world_for
#include "train_state.h"                // TsBuffer, TsMeta, ts_save, ts_load, ts_check_settings
#include "../world/world.h"             // the training captions

#define KD_STREAM 4                     // the KD pairs' streams: (seed, 4) next to the stages' 0 .. 3 (train_tmd.cu)
#define KD_PAIR_CHUNK 16                // pairs the teacher samples at a time (the evaluation's batch)

// the pairs on the host: noise, the teacher's sample from it, the caption (zero-padded to text_len rows)
typedef struct {
    int P; size_t numel, nctx;
    float *noise, *target, *ctx;        // [P·numel], [P·numel], [P·nctx]
} KdPairs;

// the settings that made a set of pairs (a cache that differs in any of them is refused)
typedef struct {
    int pairs, steps; double cfg, shift;   // how many; the teacher's sampler: UniPC steps, CFG, shift
    uint64_t seed;                          // the noise and captions
} KdPairSettings;

static void kd_pairs_alloc(KdPairs* kp, int P, size_t numel, size_t nctx) {
    kp->P = P; kp->numel = numel; kp->nctx = nctx;
    kp->noise = (float*)xmalloc((size_t)P * numel, sizeof(float), "KD pairs: noise");
    kp->target = (float*)xmalloc((size_t)P * numel, sizeof(float), "KD pairs: teacher samples");
    kp->ctx = (float*)xmalloc((size_t)P * nctx, sizeof(float), "KD pairs: captions");
}
static void kd_pairs_free(KdPairs* kp) { free(kp->noise); free(kp->target); free(kp->ctx); memset(kp, 0, sizeof(*kp)); }

// a fingerprint of the teacher's weights (FNV-1a over their fp32 words), so pairs of another teacher are refused
static uint64_t kd_teacher_hash(const float* w, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) { uint32_t u; memcpy(&u, &w[i], 4); h = (h ^ u) * 1099511628211ull; }
    return h;
}

static void kd_pairs_meta(TsMeta* m, const WanConfig* c, const WorldConfig* wc, const KdPairSettings* s, uint64_t teacher_hash) {
    memset(m, 0, sizeof(*m));
    char b[64];
    ts_meta_set(m, "kind", "kd_pairs"); ts_meta_set(m, "config", c->name); ts_meta_set(m, "world", wc->name);
    ts_meta_u64(m, "pairs", (uint64_t)s->pairs); ts_meta_u64(m, "sampler_steps", (uint64_t)s->steps);
    snprintf(b, sizeof(b), "%.17g", s->cfg); ts_meta_set(m, "cfg", b);
    snprintf(b, sizeof(b), "%.17g", s->shift); ts_meta_set(m, "shift", b);
    ts_meta_u64(m, "seed", s->seed);
    snprintf(b, sizeof(b), "%016llx", (unsigned long long)teacher_hash); ts_meta_set(m, "teacher_fnv1a", b);
}

// makes the pairs with the GPU teacher T, `chunk` pairs at a time (the last chunk zero-padded, its padding dropped)
static int kd_pairs_make(KdPairs* kp, const WanGpuModel* T, const WorldConfig* wc, const KdPairSettings* s, int chunk, char* err) {
    const WanConfig* c = &T->w.cfg;
    size_t numel = world_clip_numel(wc), nctx = (size_t)wc->text_len * wc->text_dim;
    int P = s->pairs;
    if (chunk > P) chunk = P;
    if (chunk < 1 || chunk > TMD_MAX_BATCH) { snprintf(err, ST_ERRLEN, "KD pairs: a chunk of %d pairs; expected 1 .. %d", chunk, TMD_MAX_BATCH); return -1; }
    kd_pairs_alloc(kp, P, numel, nctx);
    // the captions: the world's training stream (seed, KD_STREAM); the noise: Philox (seed·1000003 + KD_STREAM, 0)
    WRng stream = wrng_seed(s->seed, KD_STREAM, 0);
    float* clip = (float*)xmalloc(numel, sizeof(float), "KD pairs: clip");
    for (int i = 0; i < P; i++) world_sample_batch(wc, &stream, WORLD_TRAIN, 1, clip, kp->ctx + (size_t)i * nctx, NULL, NULL);
    free(clip);
    float* z; cudaCheck(cudaMalloc(&z, sizeof(float) * (size_t)P * numel));
    normal_fill(z, (size_t)P * numel, s->seed * 1000003 + KD_STREAM, 0, 0.f, 1.f, 0);
    cudaCheck(cudaMemcpy(kp->noise, z, sizeof(float) * (size_t)P * numel, cudaMemcpyDeviceToHost));
    cudaCheck(cudaFree(z));
    // the teacher's sample from each noise: UniPC with CFG against the empty caption, every chunk stepped together
    WanGpuAct a;
    if (wan_gpu_act_init(&a, c, chunk, wc->C, wc->T, wc->H, wc->W, 0, err)) { kd_pairs_free(kp); return -1; }
    size_t nx = numel * chunk;
    float *xd, *cd, *cu;
    cudaCheck(cudaMalloc(&xd, sizeof(float) * nx)); cudaCheck(cudaMalloc(&cd, sizeof(float) * nctx * chunk)); cudaCheck(cudaMalloc(&cu, sizeof(float) * nctx * chunk));
    cudaCheck(cudaMemset(cu, 0, sizeof(float) * nctx * chunk));   // the empty caption
    float* stage = (float*)xmalloc(nx, sizeof(float), "KD pairs: staging");
    real* x = (real*)xmalloc(nx, sizeof(real), "KD pairs: sample");
    WanGpuVelocity vel = {&a, &T->w, cd, cu, xd, stage, nx};
    SampleOpts so = {s->steps, s->shift, s->cfg, SOLVER_UNIPC, GRID_UNIPC, 0};   // as cpu/distill_run.h distill_teacher_sample
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
    free(stage); free(x);
    cudaCheck(cudaFree(xd)); cudaCheck(cudaFree(cd)); cudaCheck(cudaFree(cu));
    wan_gpu_act_free(&a);
    if (rc) kd_pairs_free(kp);
    return rc;
}

// the run's pairs: from `path` when it holds pairs of these settings and this teacher; made and saved there when it
// does not exist; refused (-1, with what differs and what to do) when it exists with other settings or cannot be read
static int kd_pairs_get(KdPairs* kp, const char* path, const WanGpuModel* T, const float* teacher_host, const WorldConfig* wc,
                        const KdPairSettings* s, int chunk, char* err) {
    const WanConfig* c = &T->w.cfg;
    TsMeta want; kd_pairs_meta(&want, c, wc, s, kd_teacher_hash(teacher_host, wan_num_params(c)));
    FILE* f = fopen(path, "rb");
    if (f) {
        fclose(f);
        size_t numel = world_clip_numel(wc), nctx = (size_t)wc->text_len * wc->text_dim;
        TsMeta have; memset(&have, 0, sizeof(have));
        kd_pairs_alloc(kp, s->pairs, numel, nctx);
        TsBuffer b[3] = {{"kd.noise", kp->noise, (size_t)s->pairs * numel}, {"kd.target", kp->target, (size_t)s->pairs * numel},
                         {"kd.context", kp->ctx, (size_t)s->pairs * nctx}};
        char why[ST_ERRLEN];
        // the settings first: a cache of another size then says which setting differs, not which buffer
        StFile sf;
        if (st_open(&sf, path, why)) { kd_pairs_free(kp); snprintf(err, ST_ERRLEN, "KD pairs cache: %.700s (delete it to make the pairs again)", why); return -1; }
        for (int k = 0; k < sf.n_meta && k < TS_MAX_META; k++) ts_meta_set(&have, sf.meta_keys[k], sf.meta_vals[k]);
        st_close(&sf);
        if (ts_check_settings(&have, &want, path, why) || ts_load(path, b, 3, &have, why)) {
            kd_pairs_free(kp);
            snprintf(err, ST_ERRLEN, "KD pairs cache: %.700s. The pairs must come from this teacher with this run's --kd-pairs, "
                     "--teacher-eval-steps, --cfg-eval, --shift-eval and --seed: delete the file (or give another --kd-cache) to make them again", why);
            return -1;
        }
        printf("KD: %d teacher pairs loaded from %s\n", s->pairs, path);
        return 0;
    }
    struct timespec t0, t1; clock_gettime(CLOCK_MONOTONIC, &t0);
    if (kd_pairs_make(kp, T, wc, s, chunk, err)) return -1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("KD: %d teacher pairs (UniPC %d steps, CFG %g, shift %g, %d at a time) in %.1f s\n", s->pairs, s->steps, s->cfg, s->shift,
           chunk < s->pairs ? chunk : s->pairs, (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec));
    TsBuffer b[3] = {{"kd.noise", kp->noise, (size_t)kp->P * kp->numel}, {"kd.target", kp->target, (size_t)kp->P * kp->numel},
                     {"kd.context", kp->ctx, (size_t)kp->P * kp->nctx}};
    if (ts_save(path, b, 3, &want, err)) { kd_pairs_free(kp); return -1; }
    printf("KD: pairs saved to %s\n", path);
    return 0;
}

// ---------------------------------------------------------------------------------------------------------
// the KD step

typedef struct {
    int B, P; size_t numel, nctx;
    float *noise, *target, *ctx;        // device: every pair, [P·numel], [P·numel], [P·nctx]
    float *zb, *tb, *cb;                // device: the step's pairs [B·numel], [B·numel], [B·nctx]
    float* dxhat;                       // device [B·numel]: d loss / d x̂
    double *sums, *red;                 // device [B], [B·TMD_RED_BLOCKS]
} KdGpuWork;

// kp NULL: no pairs on the device (the caller passes its own batch to kd_gpu_step)
static void kd_gpu_work_init(KdGpuWork* w, const KdPairs* kp, int B, size_t numel, size_t nctx) {
    memset(w, 0, sizeof(*w));
    if (B > TMD_MAX_BATCH) { fprintf(stderr, "KD: batch %d > %d\n", B, TMD_MAX_BATCH); exit(1); }
    w->B = B; w->numel = numel; w->nctx = nctx;
    if (kp) {
        w->P = kp->P;
        w->noise = tmd_dalloc_((size_t)kp->P * numel, "KD pairs (noise)"); w->target = tmd_dalloc_((size_t)kp->P * numel, "KD pairs (teacher samples)");
        w->ctx = tmd_dalloc_((size_t)kp->P * nctx, "KD pairs (captions)");
        cudaCheck(cudaMemcpy(w->noise, kp->noise, sizeof(float) * kp->P * numel, cudaMemcpyHostToDevice));
        cudaCheck(cudaMemcpy(w->target, kp->target, sizeof(float) * kp->P * numel, cudaMemcpyHostToDevice));
        cudaCheck(cudaMemcpy(w->ctx, kp->ctx, sizeof(float) * kp->P * nctx, cudaMemcpyHostToDevice));
    }
    w->zb = tmd_dalloc_(B * numel, "KD batch"); w->tb = tmd_dalloc_(B * numel, "KD batch"); w->cb = tmd_dalloc_(B * nctx, "KD batch");
    w->dxhat = tmd_dalloc_(B * numel, "KD latent gradient");
    w->sums = (double*)cuda_malloc_named(sizeof(double) * B, "KD losses", WAN_GPU_OOM_HINT);
    w->red = (double*)cuda_malloc_named(sizeof(double) * B * TMD_RED_BLOCKS, "KD reductions", WAN_GPU_OOM_HINT);
}
static void kd_gpu_work_free(KdGpuWork* w) {
    float* f[] = {w->noise, w->target, w->ctx, w->zb, w->tb, w->cb, w->dxhat};
    for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++) if (f[i]) cudaCheck(cudaFree(f[i]));
    cudaCheck(cudaFree(w->sums)); cudaCheck(cudaFree(w->red));
}

// the step's pairs into zb, tb, cb: pair (step·B + b) mod P for sample b (cpu/distill_run.h distill_kd's order)
static void kd_gpu_batch(KdGpuWork* w, uint64_t step, cudaStream_t st) {
    for (int b = 0; b < w->B; b++) {
        size_t i = (size_t)((step * (uint64_t)w->B + (uint64_t)b) % (uint64_t)w->P);
        cudaCheck(cudaMemcpyAsync(w->zb + b * w->numel, w->noise + i * w->numel, sizeof(float) * w->numel, cudaMemcpyDeviceToDevice, st));
        cudaCheck(cudaMemcpyAsync(w->tb + b * w->numel, w->target + i * w->numel, sizeof(float) * w->numel, cudaMemcpyDeviceToDevice, st));
        cudaCheck(cudaMemcpyAsync(w->cb + b * w->nctx, w->ctx + i * w->nctx, sizeof(float) * w->nctx, cudaMemcpyDeviceToDevice, st));
    }
}

typedef struct { double mse[TMD_MAX_BATCH]; int finite; } KdGpuStats;

// one KD step on B pairs (cpu/distill_cpu.h kd_sample): z, x_teacher [B, C, T, Hl, Wl]; y1 the inner noise (TMD; unused
// by a plain student); ctx [B, text_len, text_dim] zero-padded. The losses are checked finite before any backward.
static KdGpuStats kd_gpu_step(GenGpu* G, KdGpuWork* w, const float* z, const float* x_teacher, const float* y1, const float* ctx, double scale) {
    KdGpuStats st; memset(&st, 0, sizeof(st));
    int B = G->B; cudaStream_t s_ = G->bb.stream; size_t ne = G->numel;
    double sq[TMD_MAX_BATCH];
    for (int b = 0; b < B; b++) G->t[b] = T_MAX;
    cudaCheck(cudaMemcpyAsync(G->xt, z, sizeof(float) * B * ne, cudaMemcpyDeviceToDevice, s_));
    gen_gpu_forward_xt(G, y1, z, ctx);                                        // x̂ = z − T_MAX·ŷ (x1 = z for Eq. 15)
    sum_sq_diff(w->sums, w->red, G->xhat, x_teacher, B, ne, s_);
    cudaCheck(cudaMemcpyAsync(sq, w->sums, sizeof(double) * B, cudaMemcpyDeviceToHost, s_));
    cudaCheck(cudaStreamSynchronize(s_));
    st.finite = 1;
    Coef3 k = coef3_all(B, 0, 0, 0);
    for (int b = 0; b < B; b++) {
        st.mse[b] = sq[b] / ne;
        if (!isfinite(st.mse[b])) st.finite = 0;
        k.a[b] = (float)(2 * scale / ne); k.b[b] = -k.a[b];
    }
    if (!st.finite) return st;   // a non-finite loss: the caller skips the step and reports it
    combine3(w->dxhat, k, G->xhat, x_teacher, NULL, B, ne, s_);               // d/dx̂ of scale·mean (x̂ − x_teacher)²
    gen_gpu_backward(G, w->dxhat);
    return st;
}
