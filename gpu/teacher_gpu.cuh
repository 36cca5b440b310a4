// gpu/teacher_gpu.cuh: the teacher on the GPU (cpu/teacher_cpu.h is its oracle, and shares its solvers):
//   teacher_gpu_step      one flow-matching training step on a batch: σ = shift_γ(u), condition dropout to the empty
//                         caption, x_σ = (1 − σ)·x + σ·x1, loss = mean (v − (x1 − x))², AdamW (decoupled weight decay,
//                         global-norm clipping, a non-finite loss or gradient skips the step)
//   wan_gpu_velocity      a VelocityFn (cpu/teacher_cpu.h) that runs the GPU model on a batch: the CPU solvers
//                         (teacher_sample: Euler and the official UniPC bh2, shift, CFG with the negative prompt or
//                         the empty caption) drive the GPU model unchanged. The latent stays on the host between
//                         steps (one upload and one download per model evaluation: 2 MB for a 1.3B 480p latent).
// Random draws, in the CPU's order: per sample u (σ) then d (dropout) from the host Rng; the noise x1 from the
// device's counter-based Philox stream (seed, offset), so a step's noise depends on (seed, offset) only.
#pragma once
#include "../cpu/teacher_cpu.h" // shift_sigma, FlowMatchOpts, SampleOpts, teacher_sample, VelocityFn, AdamW hyperparameters
#include "wan_gpu.cuh"          // the model
#include "../kernels/adamw.cuh"   // AdamW, global gradient norm
#include "../kernels/fm_loss.cuh" // the flow-matching MSE
#include "../kernels/random.cuh"  // Philox normals
#include "../world/world.h"       // the built-in world (its configs: which world fits a model)

// x_σ[b, i] = (1 − σ_b)·x[b, i] + σ_b·x1[b, i] ;  target[b, i] = x1[b, i] − x[b, i]
__global__ void teacher_gpu_noise_kernel(float* xs, float* target, const float* x, const float* x1, const float* sigma,
                                         size_t n, size_t total) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    float s = sigma[i / n];
    xs[i] = (1.f - s) * x[i] + s * x1[i];
    target[i] = x1[i] - x[i];
}

typedef struct {
    double lr, beta1, beta2, eps, weight_decay,
        max_grad_norm; // AdamW (torch semantics); max_grad_norm <= 0: no clipping
} TeacherGpuOpt;

// the training state of one teacher: its model (trainable), the activation plan, and the step's buffers
typedef struct {
    WanGpuModel* m;
    WanGpuAct a; // training plan for [B, C, T, H, W]
    int B;
    size_t n;                                         // elements per latent
    float *x, *x1, *xs, *target, *dout, *ctx, *sigma; // device: [B, n] ×5, [B, text_len, text_dim], [B]
    double *loss, *scratch;                           // device: [B], max(B·FM_LOSS_BLOCKS, ADAMW_NORM_BLOCKS)
    uint64_t noise_seed, noise_offset;
    Rng rng; // σ and dropout draws
    long skipped;
} TeacherGpu;

static int teacher_gpu_init(TeacherGpu* t, WanGpuModel* m, int B, int C, int T, int H, int W, uint64_t seed,
                            char* err) {
    memset(t, 0, sizeof(*t));
    if (!m->grads) {
        snprintf(err, ST_ERRLEN, "teacher_gpu_init: model '%s' was created frozen; pass trainable = 1", m->name);
        return -1;
    }
    if (m->w.cfg.out_dim != m->w.cfg.in_dim) {
        snprintf(err, ST_ERRLEN, "flow matching needs out_dim == in_dim (config '%s': %d, %d)", m->w.cfg.name,
                 m->w.cfg.in_dim, m->w.cfg.out_dim);
        return -1;
    }
    if (wan_gpu_act_init(&t->a, &m->w.cfg, B, C, T, H, W, 1, err)) return -1;
    t->m = m;
    t->B = B;
    t->n = (size_t)C * T * H * W;
    size_t Bn = (size_t)B * t->n, nctx = (size_t)B * m->w.cfg.text_len * m->w.cfg.text_dim;
    float* buf =
        (float*)cuda_malloc_named(sizeof(float) * (5 * Bn + nctx + B),
                                  "teacher step buffers (x, x1, x_sigma, target, dv, context)", WAN_GPU_OOM_HINT);
    t->x = buf;
    t->x1 = t->x + Bn;
    t->xs = t->x1 + Bn;
    t->target = t->xs + Bn;
    t->dout = t->target + Bn;
    t->ctx = t->dout + Bn;
    t->sigma = t->ctx + nctx;
    size_t ns = (size_t)B * FM_LOSS_BLOCKS > ADAMW_NORM_BLOCKS ? (size_t)B * FM_LOSS_BLOCKS : ADAMW_NORM_BLOCKS;
    t->loss = (double*)cuda_malloc_named(sizeof(double) * (B + 1 + ns), "teacher loss scratch", WAN_GPU_OOM_HINT);
    t->scratch = t->loss + B + 1;
    t->noise_seed = seed ^ 0x5eed0001ull;
    t->noise_offset = 0;
    t->rng = rng_make(seed);
    return 0;
}

static void teacher_gpu_free(TeacherGpu* t) {
    wan_gpu_act_free(&t->a);
    cudaCheck(cudaFree(t->x));
    cudaCheck(cudaFree(t->loss));
    memset(t, 0, sizeof(*t));
}

// One training step on x [B, n] (host, clean latents) with contexts ctx [B, text_len, text_dim] (host, zero-padded;
// NULL: every caption empty). Returns 0 when the step was taken, 1 when it was skipped (non-finite loss or gradient:
// printed, parameters untouched), -1 on bad options. *loss: the batch mean; *grad_norm: ‖g‖ before clipping.
static int teacher_gpu_step(TeacherGpu* t, const float* x, const float* ctx, const FlowMatchOpts* o,
                            const TeacherGpuOpt* opt, double* loss, double* grad_norm, char* err) {
    WanGpuModel* m = t->m;
    const WanConfig* c = &m->w.cfg;
    cudaStream_t s = t->a.stream;
    int B = t->B;
    if (!(o->p_drop >= 0 && o->p_drop <= 1) || !(o->shift > 0)) {
        snprintf(err, ST_ERRLEN, "flow matching: p_drop %g must lie in [0, 1] and shift %g must be > 0", o->p_drop,
                 o->shift);
        return -1;
    }
    size_t Bn = (size_t)B * t->n, nctx = (size_t)c->text_len * c->text_dim;
    double* tsteps = (double*)malloc(sizeof(double) * B);
    float* sig = (float*)malloc(sizeof(float) * B);
    int* dropped = (int*)malloc(sizeof(int) * B);
    for (int b = 0; b < B; b++) { // the CPU's order: u, then d, per sample
        double sigma = shift_sigma(rng_uniform(&t->rng), o->shift);
        dropped[b] = rng_uniform(&t->rng) < o->p_drop;
        sig[b] = (float)sigma;
        tsteps[b] = teacher_model_timestep(sigma, o->truncate_t);
    }
    cudaCheck(cudaMemcpy(t->x, x, sizeof(float) * Bn, cudaMemcpyHostToDevice));
    cudaCheck(cudaMemcpy(t->sigma, sig, sizeof(float) * B, cudaMemcpyHostToDevice));
    if (ctx) cudaCheck(cudaMemcpy(t->ctx, ctx, sizeof(float) * B * nctx, cudaMemcpyHostToDevice));
    for (int b = 0; b < B; b++)
        if (!ctx || dropped[b]) cudaCheck(cudaMemset(t->ctx + b * nctx, 0, sizeof(float) * nctx)); // the empty caption
    normal_fill(t->x1, Bn, t->noise_seed, t->noise_offset, 0.f, 1.f, s);
    t->noise_offset += Bn;
    teacher_gpu_noise_kernel<<<(unsigned)((Bn + 255) / 256), 256, 0, s>>>(t->xs, t->target, t->x, t->x1, t->sigma, t->n,
                                                                          Bn);
    cudaCheck(cudaGetLastError());
    wan_gpu_forward(&t->a, &m->w, t->xs, tsteps, t->ctx);
    fm_loss_forward(t->loss, t->scratch, t->a.out, t->target, B, t->n, s);
    double* lb = (double*)malloc(sizeof(double) * B);
    cudaCheck(cudaMemcpy(lb, t->loss, sizeof(double) * B, cudaMemcpyDeviceToHost));
    double total = 0;
    int bad = -1;
    for (int b = 0; b < B; b++) {
        total += lb[b];
        if (!isfinite(lb[b]) && bad < 0) bad = b;
    }
    *loss = total / B;
    int rc = 0;
    if (bad >= 0) {
        snprintf(err, ST_ERRLEN, "non-finite loss for sample %d of %d (sigma %.6f, %s caption)", bad, B, sig[bad],
                 dropped[bad] ? "empty" : "conditional");
        fprintf(stderr, "teacher step %ld skipped: %s\n", m->step + 1, err);
        t->skipped++;
        rc = 1;
    } else {
        cudaCheck(cudaMemsetAsync(m->grads, 0, sizeof(float) * m->n, s));
        fm_loss_backward(t->dout, t->a.out, t->target, NULL, (float)(2.0 / (double)Bn), B, t->n, s); // d mean(·)²
        wan_gpu_backward(&m->dP, NULL, NULL, t->dout, &t->a, &m->w);
        adamw_grad_norm_squared(t->loss + B, t->scratch, m->grads, m->n, s);
        double n2;
        cudaCheck(cudaMemcpy(&n2, t->loss + B, sizeof(double), cudaMemcpyDeviceToHost));
        double gn = sqrt(n2);
        if (grad_norm) *grad_norm = gn;
        if (!isfinite(gn)) {
            snprintf(err, ST_ERRLEN, "non-finite gradient norm %g (loss %g)", gn, *loss);
            fprintf(stderr, "teacher step %ld skipped: %s\n", m->step + 1, err);
            t->skipped++;
            rc = 1;
        } else {
            double clip =
                opt->max_grad_norm > 0 ? fmin(1.0, opt->max_grad_norm / (gn + 1e-6)) : 1.0; // torch clip_grad_norm_
            m->step++;
#ifdef ENABLE_FP32
            floatX* copy = NULL;
#else
            floatX* copy = m->params_x;
#endif
            adamw_update(m->params, copy, m->opt_m, m->opt_v, m->grads, m->n, opt->lr, opt->beta1, opt->beta2, opt->eps,
                         opt->weight_decay, clip, m->step, s);
        }
    }
    free(tsteps);
    free(sig);
    free(dropped);
    free(lb);
    return rc;
}

// ---------------------------------------------------------------------------------------------------------
// sampling: the CPU solvers over the GPU model

typedef struct {
    WanGpuAct* a; // a plan (forward-only is enough) for the batch's latent shape
    const WanGpuWeights* W;
    const float* ctx_cond;   // [B, text_len, text_dim] device, zero-padded: the prompts
    const float* ctx_uncond; // [B, text_len, text_dim] device: the negative prompts, or zeros (the empty caption)
    float* x;                // [B, n] device staging
    float* stage;            // [B, n] host staging (fp32)
    size_t n;                // B·elements per latent
    int slg, slg_block; // skip-layer guidance: the unconditional forward leaves out block slg_block (cpu/teacher_cpu.h
                        // WanVelocity)
} WanGpuVelocity;

// VelocityFn: v, x [B·n] on the host; every sample of the batch at the same σ (the solvers step the batch together)
static void wan_gpu_velocity(real* v, const real* x, double sigma, double t_model, int cond, void* user) {
    (void)sigma;
    WanGpuVelocity* w = (WanGpuVelocity*)user;
    for (size_t i = 0; i < w->n; i++) w->stage[i] = (float)x[i];
    cudaCheck(cudaMemcpy(w->x, w->stage, sizeof(float) * w->n, cudaMemcpyHostToDevice));
    double* t = (double*)malloc(sizeof(double) * w->a->B);
    for (int b = 0; b < w->a->B; b++) t[b] = t_model;
    wan_gpu_forward_skipping(w->a, w->W, w->x, t, cond ? w->ctx_cond : w->ctx_uncond,
                             !cond && w->slg ? w->slg_block : -1);
    free(t);
    cudaCheck(cudaMemcpy(w->stage, w->a->out, sizeof(float) * w->n, cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < w->n; i++) v[i] = (real)w->stage[i];
}

// ---------------------------------------------------------------------------------------------------------
// Wan's own initialisation (official init_weights; the recipe of cpu/distill_run.h wan_init_train, which fills double
// buffers): Linear weights Xavier-uniform, biases 0, text and time embeddings N(0, 0.02), the output head zero, the
// modulation tables N(0, 1)/sqrt(D), norm weights 1. buf [wan_num_params(c)] host fp32.
static void wan_gpu_init_train(const WanConfig* c, float* buf, uint64_t seed) {
    Rng r = rng_make(seed);
    WanTensor* tl = (WanTensor*)malloc(sizeof(WanTensor) * WAN_MAX_TENSORS);
    int nt = wan_layout(c, tl, NULL, NULL, NULL);
    for (int i = 0; i < nt; i++) {
        const WanTensor* t = &tl[i];
        float* p = buf + t->offset;
        const char* nm = t->name;
        if (strstr(nm, "modulation"))
            for (size_t k = 0; k < t->numel; k++) p[k] = (float)(rng_normal(&r) / sqrt((double)c->dim));
        else if (strstr(nm, "norm"))
            for (size_t k = 0; k < t->numel; k++) p[k] = strstr(nm, "bias") ? 0.f : 1.f;
        else if (t->ndim == 1)
            for (size_t k = 0; k < t->numel; k++) p[k] = 0.f;
        else if (!strncmp(nm, "head.head", 9))
            for (size_t k = 0; k < t->numel; k++) p[k] = 0.f;
        else if (!strncmp(nm, "text_embedding", 14) || !strncmp(nm, "time_embedding", 14))
            for (size_t k = 0; k < t->numel; k++) p[k] = (float)(0.02 * rng_normal(&r));
        else {
            double fan_out = (double)t->shape[0], fan_in = (double)(t->numel / (size_t)t->shape[0]);
            double a = sqrt(6.0 / (fan_in + fan_out));
            for (size_t k = 0; k < t->numel; k++) p[k] = (float)(a * (2 * rng_uniform(&r) - 1));
        }
    }
    free(tl);
}

// weights for timing only (sample_tmd --bench, train_tmd --bench): the official init with the zero head replaced by
// small random values, so the output is not identically zero
static void wan_gpu_bench_weights(const WanConfig* c, float* buf, uint64_t seed) {
    wan_gpu_init_train(c, buf, seed);
    WanTensor* tl = (WanTensor*)malloc(sizeof(WanTensor) * WAN_MAX_TENSORS);
    int nt = wan_layout(c, tl, NULL, NULL, NULL);
    Rng r = rng_make(seed + 1);
    for (int i = 0; i < nt; i++)
        if (!strncmp(tl[i].name, "head.head", 9))
            for (size_t k = 0; k < tl[i].numel; k++) buf[tl[i].offset + k] = (float)(0.01 * rng_normal(&r));
    free(tl);
}

// the built-in world whose clips and captions fit the model (in_dim, text_len, text_dim); -1 with a message
static int teacher_gpu_world_for(WorldConfig* wc, const WanConfig* c, char* err) {
    WorldConfig cands[2] = {world_config_gpu(), world_config_tiny()};
    for (int i = 0; i < 2; i++)
        if (cands[i].C == c->in_dim && cands[i].text_len == c->text_len && cands[i].text_dim == c->text_dim) {
            *wc = cands[i];
            return 0;
        }
    snprintf(err, ST_ERRLEN,
             "model config '%s' (in_dim %d, text_len %d, text_dim %d) fits no built-in world: expected (3, 16, 64) "
             "for world 'gpu' (preset world) or (3, 12, 32) for world 'tiny' (preset tiny)",
             c->name, c->in_dim, c->text_len, c->text_dim);
    return -1;
}
