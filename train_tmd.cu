// train_tmd.cu: training on the GPU. Stages (--stage):
//   teacher   the teacher's flow matching on the built-in world (this file + gpu/teacher_gpu.cuh; the CPU oracle is
//             cpu/teacher_cpu.h): σ = shift_γ(u), condition dropout 0.1 to the empty caption, x_σ = (1 − σ)·x + σ·x1,
//             loss = mean (v − (x1 − x))², AdamW (β = 0.9, 0.99, weight decay 0.01, linear warm-up, clip 1.0)
//   stage1    TMD Stage 1, TM-MF (paper Algorithm 2, first loop) } the TMD student on the GPU: gpu/tmd_gpu.cuh and
//   stage2    TMD Stage 2, DMD2-v with flow-head rollout         } gpu/distill_gpu.cuh; train_tmd_distill below
//             (Stage 2 without the GAN terms so far: the Conv3D discriminator heads are CPU-only)
//   baseline  the DMD2-v baseline: the same Stage 2 loop with a plain Wan student started from the teacher (its KD
//             warm-up for one-step students is not on the GPU yet)
// The model comes from --preset (random init, official init_weights) or --weights (a checkpoint: official Wan2.1 or
// diffusers names); the trained teacher is written with wan.h's writer (F32, config in __metadata__).
#include <time.h>
#include "wan.h"                    // config, presets, parameter layout, safetensors weights I/O
#include "lib/flags.h"              // flag table: parser and usage from one place
#include "world/world.h"            // the built-in world: clips and captions for training
#include "kernels/common.cuh"       // cudaCheck, require_gpu, named allocations
#include "gpu/wan_gpu.cuh"          // the DiT on the GPU
#include "gpu/teacher_gpu.cuh"      // flow-matching step, AdamW, Wan's initialisation
#include "gpu/distill_gpu.cuh"      // TMD: the student, TM-MF and DMD2-v steps (and gpu/tmd_gpu.cuh)
#include "gpu/train_state.h"        // checkpoints: every buffer and stream of a run, atomic, resumable bit for bit
#include "gpu/nccl_dp.cuh"          // data parallelism over NCCL (mpirun -np K ./train_tmd ...)
#include "gpu/distill_plan.h"       // the memory plan of a step, printed and checked before allocating

static double now_s(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }

// ---------------------------------------------------------------------------------------------------------
// TMD: paper Algorithm 2 on the built-in world. Stage 1 trains the decoupled student with TM-MF; Stage 2 runs
// DMD2-v with the flow-head rollout (student every `update_every`-th iteration, the fake score otherwise).
typedef struct {
    const char* stage; const char* student; const char* resume; const char* out;
    int steps, batch, seed, log_every, save_every, M, N, H, update_every;
    double lr, wd, clip_student;
} TmdRun;

// g holds the gradient summed over the data-parallel ranks; gscale = 1/ranks makes it their mean (1 on one GPU)
static void tmd_adamw_(float* p, floatX* copy, float* m, float* v, float* g, size_t n, double lr, double wd, double clip, long step,
                       double gscale, double* scratch, double* gnorm, cudaStream_t s) {
    adamw_grad_norm_squared(scratch, scratch + 1, g, n, s);
    double n2; cudaCheck(cudaMemcpy(&n2, scratch, sizeof(double), cudaMemcpyDeviceToHost));
    *gnorm = sqrt(n2) * gscale;
    double k = clip > 0 ? fmin(1.0, clip / (*gnorm + 1e-6)) : 1.0;   // per-network clipping (FastGen: the student at 10)
    k *= gscale;
#ifdef ENABLE_FP32
    copy = NULL;
#endif
    adamw_update(p, copy, m, v, g, n, (float)lr, 0.9f, 0.99f, 1e-8f, (float)wd, (float)k, step, s);   // Table 7: betas 0.9, 0.99
}

static int train_tmd_distill(const TmdRun* o, const WanConfig* c, float* teacher) {
    char err[ST_ERRLEN];
    int baseline = !strcmp(o->stage, "baseline"), stage2 = baseline || !strcmp(o->stage, "stage2");
    int stage_id = baseline ? 3 : stage2 ? 2 : 1;
    WorldConfig wc;
    if (teacher_gpu_world_for(&wc, c, err)) { fprintf(stderr, "error: %s\n", err); return 2; }
    StudentConfig sc; sc.wan = *c; sc.head_blocks = o->H; sc.fusion = FUSION_GATED; sc.fuse_ffn_dim = c->ffn_dim;
    if (o->H < 1 || o->H >= c->num_layers) { fprintf(stderr, "error: --head-blocks %d: expected 1 .. %d\n", o->H, c->num_layers - 1); return 2; }
    if (o->batch > TMD_MAX_BATCH) { fprintf(stderr, "error: --batch %d: at most %d\n", o->batch, TMD_MAX_BATCH); return 2; }
    size_t nw = wan_num_params(c), ns = baseline ? nw : student_num_params(&sc), numel = world_clip_numel(&wc), nctx = (size_t)wc.text_len * wc.text_dim;
    int B = o->batch;
    DataParallel dp; dp_init(&dp);   // one rank without mpirun
    double gscale = 1.0 / dp.world;
    if (dp.world > 1 && o->resume) { fprintf(stderr, "error: --resume of a %d-rank run is not implemented (the checkpoint holds rank 0's streams only)\n", dp.world); return 2; }
    // the student starts as the teacher (student_init); Stage 2 starts from Stage 1's checkpoint (--student)
    float* hs = (float*)malloc(sizeof(float) * ns); float* hm = (float*)calloc(ns, sizeof(float)); float* hv = (float*)calloc(ns, sizeof(float));
    float* hf = (float*)malloc(sizeof(float) * nw); float* hfm = (float*)calloc(nw, sizeof(float)); float* hfv = (float*)calloc(nw, sizeof(float));
    if (baseline) memcpy(hs, teacher, sizeof(float) * nw);   // the baseline's student starts as the teacher
    else student_init(&sc, hs, teacher, (uint64_t)o->seed);
    memcpy(hf, teacher, sizeof(float) * nw);   // the fake score starts as the teacher
    TsMeta want; memset(&want, 0, sizeof(want));
    ts_meta_set(&want, "stage", o->stage); ts_meta_set(&want, "config", c->name);
    ts_meta_u64(&want, "M", o->M); ts_meta_u64(&want, "N", o->N); ts_meta_u64(&want, "head_blocks", o->H); ts_meta_u64(&want, "batch", B);
    TsBuffer bufs[6] = {{"student.params", hs, ns}, {"student.adam_m", hm, ns}, {"student.adam_v", hv, ns},
                        {"fake_score.params", hf, nw}, {"fake_score.adam_m", hfm, nw}, {"fake_score.adam_v", hfv, nw}};
    int nbufs = stage2 ? 6 : 3;
    // every stream is seeded by (seed, stage, rank); rank 0's are a single-GPU run's
    uint64_t rank_salt = (uint64_t)dp.rank * 0x9E3779B97F4A7C15ull;
    uint64_t step = 0, s_steps = 0, f_steps = 0, rng_seed = (uint64_t)o->seed * 31 + stage_id + rank_salt, rng_counter = 0;
    uint64_t philox_seed = (uint64_t)o->seed * 1000003 + stage_id + rank_salt, philox_offset = 0, data = 0;
    WRng stream = wrng_seed((uint64_t)o->seed, stage_id, (uint64_t)dp.rank);
    if (stage2 && !baseline && !o->resume) {   // the Stage 1 student
        if (!o->student) { fprintf(stderr, "error: --stage stage2 needs --student FILE (the checkpoint ./train_tmd --stage stage1 wrote)\n"); return 2; }
        TsMeta m1; TsBuffer b1[1] = {{"student.params", hs, ns}};
        if (ts_load(o->student, b1, 1, &m1, err)) { fprintf(stderr, "error: %s\n", err); return 2; }
        printf("student from %s (Stage 1, step %s)\n", o->student, ts_meta_get(&m1, "step") ? ts_meta_get(&m1, "step") : "?");
    }
    if (o->resume) {
        TsMeta have;
        if (ts_load(o->resume, bufs, nbufs, &have, err) || ts_check_settings(&have, &want, o->resume, err) ||
            ts_meta_get_u64(&have, "step", &step, o->resume, err) || ts_meta_get_u64(&have, "student_steps", &s_steps, o->resume, err) ||
            ts_meta_get_u64(&have, "fake_steps", &f_steps, o->resume, err) || ts_meta_get_u64(&have, "rng_seed", &rng_seed, o->resume, err) ||
            ts_meta_get_u64(&have, "rng_counter", &rng_counter, o->resume, err) || ts_meta_get_u64(&have, "philox_seed", &philox_seed, o->resume, err) ||
            ts_meta_get_u64(&have, "philox_offset", &philox_offset, o->resume, err) || ts_meta_get_u64(&have, "data_stream", &data, o->resume, err)) {
            fprintf(stderr, "error: %s\n", err); return 2;
        }
        stream.s = data;
        printf("resumed %s at step %llu\n", o->resume, (unsigned long long)step);
    }
    // the memory plan of the step before anything is allocated (no activation recompute: gpu/wan_gpu.cuh keeps every
    // block's activations), refused with the numbers when the device cannot hold it
    {
        PlanInput pin; memset(&pin, 0, sizeof(pin));
        pin.wan = *c; pin.T = wc.T; pin.Hl = wc.H; pin.Wl = wc.W; pin.batch = B; pin.N = o->N; pin.H = o->H;
        pin.student_extra = baseline ? 0 : ns - nw; pin.recompute = 0;
        pin.naive_attention = !wan_gpu_use_flash(c);
#ifdef ENABLE_FP32
        pin.fp32 = 1;
#endif
        MemPlan plan; distill_plan(&plan, &pin, stage2 ? 2 : 1);
        char title[160]; snprintf(title, sizeof(title), "%s, %s, batch %d, %s (upper estimate: no GAN heads yet)", o->stage, c->name, B, FLOATX_NAME);
        if (dp.rank == 0) plan_print(&plan, title, stdout);
        size_t free_b = 0, total_b = 0; cudaCheck(cudaMemGetInfo(&free_b, &total_b));
        if (plan_check(&plan, (double)free_b, 1.0 * PLAN_GIB, err, sizeof(err))) { fprintf(stderr, "error: %s\n", err); return 1; }
    }
    gemm_init();
    // the trained student: the TMD student, or the baseline's plain Wan model; V views whichever it is
    TmdGpuStudent S; WanGpuModel Pm; memset(&S, 0, sizeof(S)); memset(&Pm, 0, sizeof(Pm));
    struct { float *params, *grads, *opt_m, *opt_v; floatX* params_x; long* step; } V;
    if (baseline) { wan_gpu_model_init(&Pm, c, hs, 1, "DMD2-v student"); V.params = Pm.params; V.params_x = Pm.params_x; V.grads = Pm.grads; V.opt_m = Pm.opt_m; V.opt_v = Pm.opt_v; V.step = &Pm.step; }
    else { tmd_gpu_student_init(&S, &sc, hs); V.params = S.params; V.params_x = S.params_x; V.grads = S.grads; V.opt_m = S.opt_m; V.opt_v = S.opt_v; V.step = &S.step; }
    cudaCheck(cudaMemcpy(V.opt_m, hm, sizeof(float) * ns, cudaMemcpyHostToDevice)); cudaCheck(cudaMemcpy(V.opt_v, hv, sizeof(float) * ns, cudaMemcpyHostToDevice));
    *V.step = (long)s_steps;
    WanGpuModel T, F; memset(&F, 0, sizeof(F));
    wan_gpu_model_init(&T, c, teacher, 0, "teacher");
    if (stage2) {
        wan_gpu_model_init(&F, c, hf, 1, "fake score");
        cudaCheck(cudaMemcpy(F.opt_m, hfm, sizeof(float) * nw, cudaMemcpyHostToDevice)); cudaCheck(cudaMemcpy(F.opt_v, hfv, sizeof(float) * nw, cudaMemcpyHostToDevice));
        F.step = (long)f_steps;
    }
    Rng rng = {rng_seed, rng_counter};
    float* clips = (float*)malloc(sizeof(float) * numel * B); float* ctx = (float*)malloc(sizeof(float) * nctx * B);
    float *x_d, *ctx_d, *x1, *y1, *eps; double* scratch;
    cudaCheck(cudaMalloc(&x_d, sizeof(float) * numel * B)); cudaCheck(cudaMalloc(&ctx_d, sizeof(float) * nctx * B));
    cudaCheck(cudaMalloc(&x1, sizeof(float) * numel * B)); cudaCheck(cudaMalloc(&y1, sizeof(float) * numel * B)); cudaCheck(cudaMalloc(&eps, sizeof(float) * numel * B));
    cudaCheck(cudaMalloc(&scratch, sizeof(double) * (ADAMW_NORM_BLOCKS + 1)));
    TmmfConfig tcf = tmmf_defaults(); tcf.M = o->M; tcf.N = o->N;
    DmdConfig dcf = dmd_defaults(); dcf.M = o->M; dcf.gan_weight = 0; dcf.update_every = o->update_every;
    TmmfGpuWork tw; GenGpu G; DmdGpuWork dw;
    if (!stage2) tmmf_gpu_work_init(&tw, &sc, B, wc.T, wc.H, wc.W);
    else { gen_gpu_init(&G, !baseline, &sc, B, wc.T, wc.H, wc.W, o->N, tcf.gamma_inner); G.S = &S; G.P = &Pm; dmd_gpu_work_init(&dw, c, B, wc.T, wc.H, wc.W); }
    printf("%s: %d steps, batch %d, M %d, N %d, H %d (effective NFE at M: %.3f), lr %g, wd %g%s\n", baseline ? "DMD2-v baseline (no GAN, no KD)" : stage2 ? "Stage 2 DMD2-v (no GAN)" : "Stage 1 TM-MF",
           o->steps, B, o->M, o->N, o->H, effective_nfe(o->M, o->N, o->H, c->num_layers), o->lr, o->wd, stage2 ? ", student every update_every-th iteration" : "");
    cudaStream_t s0 = 0;
    double t0 = now_s(), acc_a = 0, acc_b = 0, gn = 0; int na = 0, nb = 0; long skipped = 0;
    while (step < (uint64_t)o->steps) {
        world_sample_batch(&wc, &stream, WORLD_TRAIN, B, clips, ctx, NULL, NULL);           // x, c ~ p_data
        cudaCheck(cudaMemcpy(x_d, clips, sizeof(float) * numel * B, cudaMemcpyHostToDevice));
        cudaCheck(cudaMemcpy(ctx_d, ctx, sizeof(float) * nctx * B, cudaMemcpyHostToDevice));
        size_t nB = numel * B;
        normal_fill(x1, nB, philox_seed, philox_offset, 0.f, 1.f, s0); philox_offset += nB;       // x1 ~ N(0, I)
        normal_fill(y1, nB, philox_seed, philox_offset, 0.f, 1.f, s0); philox_offset += nB;       // y1 ~ N(0, I) (inner noise)
        if (!stage2) {
            // Stage 1 (Sec. 3.1): t_i from the outer grid, x_{t_i} = (1 − t_i)x + t_i x1, y = x1 − x, (s, r) on the
            // inner grid, loss ‖u_θ − û‖²/sg(‖u_θ − û‖² + c), û = v_g − (s − r)·du/ds (Eq. 14, App. A.2)
            TmmfDraw d; memset(&d, 0, sizeof(d)); d.B = B;
            for (int b = 0; b < B; b++) tmmf_draw_sample(&d, b, &tcf, &rng, NULL, NULL, 0);
            cudaCheck(cudaMemsetAsync(S.grads, 0, sizeof(float) * ns, s0));
            TmmfGpuStats st = tmmf_gpu_step(&S, &tw, &d, x_d, x1, y1, ctx_d, NULL, &tcf, 1.0 / B, 1);
            if (!st.finite) { skipped++; fprintf(stderr, "Stage 1 step %llu skipped: non-finite loss\n", (unsigned long long)step + 1); }
            else {
                S.step++;
                dp_allreduce_sum(&dp, S.grads, ns, s0);
                tmd_adamw_(S.params, S.params_x, S.opt_m, S.opt_v, S.grads, ns, o->lr, o->wd, o->clip_student, S.step, gscale, scratch, &gn, s0);
                for (int b = 0; b < B; b++) { acc_a += st.loss[b] / B; acc_b += st.mse[b] / B; }
                na++; nb++;
            }
        } else {
            normal_fill(eps, nB, philox_seed, philox_offset, 0.f, 1.f, s0); philox_offset += nB;   // ε for x̂_t
            // Stage 2 (Sec. 3.2): x_{t_i} from real data, x̂ = x_{t_i} − t_i·INNERFLOW(m_θ(x_{t_i}))  (Eq. 15, 17)
            DmdDraw d; memset(&d, 0, sizeof(d)); d.B = B;
            for (int b = 0; b < B; b++) dmd_draw_sample(&d, b, &dcf, &rng, NULL, NULL, NULL, 0);
            if (step % (uint64_t)o->update_every == 0) {
                // student: VSD gradient (g_fake − g_teacher)/mean|x̂ − g_teacher| through every inner step (Eq. 11)
                cudaCheck(cudaMemsetAsync(V.grads, 0, sizeof(float) * ns, s0));
                DmdGpuStats st = dmd_gpu_student_step(&G, &dw, &T.w, &F.w, &d, x_d, x1, y1, eps, ctx_d, NULL, &dcf, 1.0 / B);
                if (!st.finite) skipped++;
                else { ++*V.step; dp_allreduce_sum(&dp, V.grads, ns, s0);
                       tmd_adamw_(V.params, V.params_x, V.opt_m, V.opt_v, V.grads, ns, o->lr, o->wd, o->clip_student, *V.step, gscale, scratch, &gn, s0);
                       for (int b = 0; b < B; b++) acc_a += st.vsd[b] / B; na++; }
            } else {
                // critic: the fake score's denoising score matching on the detached x̂ (DMD2)
                cudaCheck(cudaMemsetAsync(F.grads, 0, sizeof(float) * nw, s0));
                DmdGpuStats st = dmd_gpu_critic_step(&G, &dw, &F, &d, x_d, x1, y1, eps, ctx_d, &dcf, 1.0 / B);
                if (!st.finite) skipped++;
                else { F.step++; double gf; dp_allreduce_sum(&dp, F.grads, nw, s0);
                       tmd_adamw_(F.params, F.params_x, F.opt_m, F.opt_v, F.grads, nw, o->lr, o->wd, 0, F.step, gscale, scratch, &gf, s0);
                       for (int b = 0; b < B; b++) acc_b += st.dsm[b] / B; nb++; }
            }
        }
        step++;
        if (dp.rank == 0 && (step % (uint64_t)o->log_every == 0 || step == (uint64_t)o->steps)) {
            cudaCheck(cudaDeviceSynchronize());
            double el = now_s() - t0, per = el / (double)o->log_every;
            printf("%s step %6llu/%d  %s %.4f  %s %.4f  grad norm %.3f  %.1f ms/step  ETA %.0f s  skipped %ld\n", stage2 ? "DMD2-v" : "TM-MF",
                   (unsigned long long)step, o->steps, stage2 ? "vsd" : "loss", na ? acc_a / na : NAN, stage2 ? "dsm" : "mse", nb ? acc_b / nb : NAN,
                   gn, 1e3 * per, per * (double)(o->steps - (int)step), skipped);
            acc_a = acc_b = 0; na = nb = 0; t0 = now_s();
        }
        if (dp.rank == 0 && ((o->save_every > 0 && step % (uint64_t)o->save_every == 0) || step == (uint64_t)o->steps)) {
            cudaCheck(cudaMemcpy(hs, V.params, sizeof(float) * ns, cudaMemcpyDeviceToHost));
            cudaCheck(cudaMemcpy(hm, V.opt_m, sizeof(float) * ns, cudaMemcpyDeviceToHost)); cudaCheck(cudaMemcpy(hv, V.opt_v, sizeof(float) * ns, cudaMemcpyDeviceToHost));
            if (stage2) {
                cudaCheck(cudaMemcpy(hf, F.params, sizeof(float) * nw, cudaMemcpyDeviceToHost));
                cudaCheck(cudaMemcpy(hfm, F.opt_m, sizeof(float) * nw, cudaMemcpyDeviceToHost)); cudaCheck(cudaMemcpy(hfv, F.opt_v, sizeof(float) * nw, cudaMemcpyDeviceToHost));
            }
            TsMeta meta = want;
            ts_meta_u64(&meta, "step", step); ts_meta_u64(&meta, "student_steps", (uint64_t)*V.step); ts_meta_u64(&meta, "fake_steps", (uint64_t)F.step);
            ts_meta_u64(&meta, "rng_seed", rng.seed); ts_meta_u64(&meta, "rng_counter", rng.counter);
            ts_meta_u64(&meta, "philox_seed", philox_seed); ts_meta_u64(&meta, "philox_offset", philox_offset); ts_meta_u64(&meta, "data_stream", stream.s);
            if (ts_save(o->out, bufs, nbufs, &meta, err)) { fprintf(stderr, "error: %s\n", err); return 1; }
            printf("wrote %s (step %llu)\n", o->out, (unsigned long long)step);
        }
    }
    if (!stage2) tmmf_gpu_work_free(&tw); else { gen_gpu_free(&G); dmd_gpu_work_free(&dw); wan_gpu_model_free(&F); }
    if (baseline) wan_gpu_model_free(&Pm); else tmd_gpu_student_free(&S);
    wan_gpu_model_free(&T); gemm_free(); dp_free(&dp);
    cudaCheck(cudaFree(x_d)); cudaCheck(cudaFree(ctx_d)); cudaCheck(cudaFree(x1)); cudaCheck(cudaFree(y1)); cudaCheck(cudaFree(eps)); cudaCheck(cudaFree(scratch));
    free(clips); free(ctx); free(hs); free(hm); free(hv); free(hf); free(hfm); free(hfv);
    printf("%s: done, %llu steps, %ld skipped\n", o->stage, (unsigned long long)step, skipped);
    return 0;
}

int main(int argc, char** argv) {
    const char* preset = NULL;
    const char* weights = NULL;
    const char* stage = "teacher";
    const char* out = "teacher.safetensors";
    int heads = 0, steps = 1000, batch = 8, seed = 1, log_every = 10, save_every = 0, warmup = 50;
    double lr = 3e-4, wd = 0.01, max_grad_norm = 1.0, p_drop = 0.1, shift = 1.0;
    TmdRun tr; memset(&tr, 0, sizeof(tr));
    tr.M = 2; tr.N = 2; tr.H = 2; tr.update_every = 5; tr.clip_student = 10.0;
    Flag flags[] = {
        FLAG_STR("--stage", &stage, "teacher (flow matching on the built-in world); stage1, stage2: the TMD stages; baseline: DMD2-v"),
        FLAG_STR("--preset", &preset, "model preset: wan2.1-t2v-1.3b, wan2.1-t2v-14b, world, tiny (none: world, or inferred from --weights)"),
        FLAG_STR("--weights", &weights, "initialise from a Wan2.1 checkpoint (.safetensors, index.json or directory)"),
        FLAG_INT("--heads", &heads, "attention heads when the checkpoint does not say (0: infer)"),
        FLAG_INT("--steps", &steps, "optimizer steps"),
        FLAG_INT("--batch", &batch, "clips per step"),
        FLAG_DOUBLE("--lr", &lr, "AdamW learning rate (after the warm-up)"),
        FLAG_INT("--warmup", &warmup, "steps of linear learning-rate warm-up"),
        FLAG_DOUBLE("--wd", &wd, "AdamW decoupled weight decay"),
        FLAG_DOUBLE("--max-grad-norm", &max_grad_norm, "global gradient-norm clipping (<= 0: off)"),
        FLAG_DOUBLE("--p-drop", &p_drop, "condition dropout to the empty caption (classifier-free guidance)"),
        FLAG_DOUBLE("--shift", &shift, "training timestep shift: sigma = shift_gamma(u), u ~ U(0, 1)"),
        FLAG_INT("--seed", &seed, "initialisation, data stream, timesteps and noise"),
        FLAG_INT("--log-every", &log_every, "print the mean loss every N steps"),
        FLAG_INT("--save-every", &save_every, "also write the checkpoint every N steps (0: only at the end)"),
        FLAG_STR("--out", &out, "where the trained teacher (or the stage's checkpoint) is written (.safetensors)"),
        FLAG_STR("--student", &tr.student, "stage2: the Stage 1 checkpoint the student starts from"),
        FLAG_STR("--resume", &tr.resume, "stage1/stage2: continue the run of this checkpoint (same settings; bit-identical to no interruption)"),
        FLAG_INT("--M", &tr.M, "stage1/stage2: outer steps the student is trained for"),
        FLAG_INT("--N", &tr.N, "stage1/stage2: inner (flow-head) steps"),
        FLAG_INT("--head-blocks", &tr.H, "stage1/stage2: H, the DiT blocks of the flow head"),
        FLAG_INT("--update-every", &tr.update_every, "stage2: the student is updated every k-th iteration, the fake score otherwise"),
        FLAG_DOUBLE("--clip-student", &tr.clip_student, "stage1/stage2: the student's gradient-norm clipping (FastGen: 10; <= 0 off)"),
        FLAG_END};
    int rc = flags_parse(flags, argc, argv, 1, "usage: ./train_tmd [flags]");
    if (rc) return rc == 1 ? 0 : 2;
    if (strcmp(stage, "teacher") && strcmp(stage, "stage1") && strcmp(stage, "stage2") && strcmp(stage, "baseline")) {
        fprintf(stderr, "error: --stage '%s': expected teacher, stage1, stage2 or baseline\n", stage); return 2;
    }
    if (steps < 0 || batch < 1 || log_every < 1 || save_every < 0 || warmup < 0) {
        fprintf(stderr, "error: need --steps >= 0, --batch >= 1, --log-every >= 1, --save-every >= 0, --warmup >= 0\n"); return 2;
    }
    require_gpu("train_tmd");   // before reading a checkpoint that may be tens of GB
    char err[ST_ERRLEN];
    WanConfig c; real* params;
    rc = wan_model_from_flags(&c, &params, preset, weights, heads, "world", err);
    if (rc) { fprintf(stderr, "error: %s\n", err); return rc; }
    wan_config_print(&c, stdout);
    wan_print_count(&c, stdout);
    if (strcmp(stage, "teacher")) {
        // the TMD stages: the student (gpu/tmd_gpu.cuh) built from this teacher, Stage 1 TM-MF and Stage 2 DMD2-v
        if (!weights) { fprintf(stderr, "error: --stage %s needs the teacher: --weights teacher.safetensors (./train_tmd --stage teacher writes it)\n", stage); free(params); return 2; }
        tr.stage = stage; tr.out = strcmp(out, "teacher.safetensors") ? out : (!strcmp(stage, "stage1") ? "stage1.safetensors" : !strcmp(stage, "stage2") ? "stage2.safetensors" : "baseline.safetensors");
        tr.steps = steps; tr.batch = batch; tr.seed = seed; tr.log_every = log_every; tr.save_every = save_every; tr.lr = lr; tr.wd = wd;
        if (tr.M < 1 || tr.N < 1 || tr.update_every < 1) { fprintf(stderr, "error: need --M >= 1, --N >= 1, --update-every >= 1\n"); free(params); return 2; }
        rc = train_tmd_distill(&tr, &c, params);
        free(params); return rc;
    }

    // ---- the teacher: flow matching on the built-in world
    WorldConfig wc;
    if (teacher_gpu_world_for(&wc, &c, err)) { fprintf(stderr, "error: %s\n", err); free(params); return 2; }
    size_t np = wan_num_params(&c);
    if (!params) {
        params = (real*)malloc(sizeof(real) * np);
        wan_gpu_init_train(&c, params, (uint64_t)seed);
        printf("initialised %s from scratch (official init_weights), seed %d\n", c.name, seed);
    }
    gemm_init();
    WanGpuModel m; wan_gpu_model_init(&m, &c, params, 1, "teacher");
    TeacherGpu t;
    if (teacher_gpu_init(&t, &m, batch, wc.C, wc.T, wc.H, wc.W, (uint64_t)seed * 17, err)) { fprintf(stderr, "error: %s\n", err); return 1; }
    wan_gpu_act_print_plan(&t.a, stdout);
    printf("teacher: %d steps, batch %d clips [%d, %d, %d, %d] of world '%s', lr %g (warm-up %d), wd %g, clip %g, p_drop %g, shift %g\n",
           steps, batch, wc.C, wc.T, wc.H, wc.W, wc.name, lr, warmup, wd, max_grad_norm, p_drop, shift);
    size_t numel = world_clip_numel(&wc), nctx = (size_t)wc.text_len * wc.text_dim;
    float* clips = (float*)malloc(sizeof(float) * numel * batch);
    float* ctx = (float*)malloc(sizeof(float) * nctx * batch);
    WRng stream = wrng_seed((uint64_t)seed, 0, 0);
    FlowMatchOpts fo = {p_drop, shift, 0};
    TeacherGpuOpt opt = {lr, 0.9, 0.99, 1e-8, wd, max_grad_norm};
    double t0 = now_s(), acc = 0; int na = 0;
    for (int step = 0; step < steps; step++) {
        world_sample_batch(&wc, &stream, WORLD_TRAIN, batch, clips, ctx, NULL, NULL);
        opt.lr = lr * fmin(1.0, (step + 1) / (double)(warmup > 0 ? warmup : 1));   // linear warm-up
        double loss, gn = 0;
        int r = teacher_gpu_step(&t, clips, ctx, &fo, &opt, &loss, &gn, err);
        if (r < 0) { fprintf(stderr, "error: %s\n", err); return 1; }
        if (r == 0) { acc += loss; na++; }
        if ((step + 1) % log_every == 0 || step + 1 == steps) {
            double el = now_s() - t0;
            printf("step %5d/%d  flow-matching loss %.5f  grad norm %.3f  lr %.2e  skipped %ld  (%.1f s elapsed)\n", step + 1, steps,
                   na ? acc / na : NAN, gn, opt.lr, t.skipped, el);
            acc = 0; na = 0;
        }
        if ((save_every > 0 && (step + 1) % save_every == 0) || step + 1 == steps) {
            cudaCheck(cudaMemcpy(params, m.params, sizeof(float) * np, cudaMemcpyDeviceToHost));
            char stepstr[32]; snprintf(stepstr, sizeof(stepstr), "%ld", m.step);
            const char* meta[] = {"note", "teacher trained by ./train_tmd --stage teacher on the built-in world", "step", stepstr};
            if (wan_save(out, &c, params, meta, 2, err)) { fprintf(stderr, "error: %s\n", err); return 1; }
            printf("wrote %s (step %ld)\n", out, m.step);
        }
    }
    teacher_gpu_free(&t);
    wan_gpu_model_free(&m);
    gemm_free();
    free(clips); free(ctx); free(params);
    return 0;
}
