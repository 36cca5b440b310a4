// train_tmd.cu: training on the GPU. Stages (--stage):
//   teacher   the teacher's flow matching on the built-in world (this file + gpu/teacher_gpu.cuh; the CPU oracle is
//             cpu/teacher_cpu.h): σ = shift_γ(u), condition dropout 0.1 to the empty caption, x_σ = (1 − σ)·x + σ·x1,
//             loss = mean (v − (x1 − x))², AdamW (β = 0.9, 0.99, weight decay 0.01, linear warm-up, clip 1.0)
//   stage1    TMD Stage 1, TM-MF (paper Algorithm 2 part 1)     } the TMD student on the GPU: gpu/tmd_gpu.cuh and
//   stage2    TMD Stage 2, DMD2-v with flow-head rollout         } gpu/distill_gpu.cuh (not in this build yet)
// The model comes from --preset (random init, official init_weights) or --weights (a checkpoint: official Wan2.1 or
// diffusers names); the trained teacher is written with wan.h's writer (F32, config in __metadata__).
#include <time.h>
#include "wan.h"                    // config, presets, parameter layout, safetensors weights I/O
#include "lib/flags.h"              // flag table: parser and usage from one place
#include "world/world.h"            // the built-in world: clips and captions for training
#include "kernels/common.cuh"       // cudaCheck, require_gpu, named allocations
#include "gpu/wan_gpu.cuh"          // the DiT on the GPU
#include "gpu/teacher_gpu.cuh"      // flow-matching step, AdamW, Wan's initialisation

static double now_s(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }

int main(int argc, char** argv) {
    const char* preset = NULL;
    const char* weights = NULL;
    const char* stage = "teacher";
    const char* out = "teacher.safetensors";
    int heads = 0, steps = 1000, batch = 8, seed = 1, log_every = 10, save_every = 0, warmup = 50;
    double lr = 3e-4, wd = 0.01, max_grad_norm = 1.0, p_drop = 0.1, shift = 1.0;
    Flag flags[] = {
        FLAG_STR("--stage", &stage, "teacher (flow matching on the built-in world); stage1, stage2: the TMD stages"),
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
        FLAG_STR("--out", &out, "where the trained teacher is written (.safetensors)"),
        FLAG_END};
    int rc = flags_parse(flags, argc, argv, 1, "usage: ./train_tmd [flags]");
    if (rc) return rc == 1 ? 0 : 2;
    if (strcmp(stage, "teacher") && strcmp(stage, "stage1") && strcmp(stage, "stage2")) {
        fprintf(stderr, "error: --stage '%s': expected teacher, stage1 or stage2\n", stage); return 2;
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
        // the TMD stages (issue 12) plug in here: the student (gpu/tmd_gpu.cuh) built from this teacher, Stage 1 TM-MF
        // and Stage 2 DMD2-v (gpu/distill_gpu.cuh), on top of gpu/wan_gpu.cuh's partial forward/backward
        fprintf(stderr, "train_tmd: --stage %s (the TMD student) is not in this build; --stage teacher trains the teacher\n", stage);
        free(params); return 1;
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
