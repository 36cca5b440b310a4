// sample_tmd.cu: sampling on the GPU. Modes (--mode):
//   teacher   the teacher: Euler or the official UniPC bh2 (--solver), timestep shift, classifier-free guidance with the
//             negative prompt (or the empty caption); the solvers are cpu/teacher_cpu.h's, driving the GPU model
//   tmd       the TMD student (M outer × N inner steps)   } on top of gpu/wan_gpu.cuh (not in this build yet)
//   dmd2v     the DMD2-v baseline                         }
// Prompts are encoded by the built-in world's text encoder (the model must fit a built-in world; real umT5 contexts
// are a later issue). Output: the latents as .npy [batch, C, T, H, W] fp32 (the world's clips are in [-1, 1]).
#include "wan.h"                    // config, presets, parameter layout, safetensors weights I/O
#include "lib/flags.h"              // flag table: parser and usage from one place
#include "lib/npy.h"                // writing the samples
#include "world/world.h"            // the built-in world's text encoder and clip shapes
#include "kernels/common.cuh"       // cudaCheck, require_gpu, named allocations
#include "gpu/wan_gpu.cuh"          // the DiT on the GPU
#include "gpu/teacher_gpu.cuh"      // wan_gpu_velocity over cpu/teacher_cpu.h's solvers

// --bench: the median wall time of one forward pass of the whole model on a batch (forward-only activation plan,
// the build's GEMM and attention), after two warm-up passes. Weights: the checkpoint, or official init_weights with the
// zero head replaced by small random values (timing does not depend on the values).
static int bench_forward(const WanConfig* c, real* params, int B, int T, int H, int W, int reps, uint64_t seed) {
    char err[ST_ERRLEN];
    WorldConfig wc;
    if (T == 0 || H == 0 || W == 0) {
        if (teacher_gpu_world_for(&wc, c, err)) { fprintf(stderr, "error: %s; or give --latent-frames/height/width\n", err); return 2; }
        T = wc.T; H = wc.H; W = wc.W;
    }
    size_t np = wan_num_params(c);
    if (!params) {
        params = (real*)malloc(sizeof(real) * np);
        wan_gpu_init_train(c, params, seed);
        WanTensor* tl = (WanTensor*)malloc(sizeof(WanTensor) * WAN_MAX_TENSORS);
        int nt = wan_layout(c, tl, NULL, NULL, NULL);
        Rng r = rng_make(seed + 1);
        for (int i = 0; i < nt; i++)
            if (!strncmp(tl[i].name, "head.head", 9)) for (size_t k = 0; k < tl[i].numel; k++) params[tl[i].offset + k] = (real)(0.01 * rng_normal(&r));
        free(tl);
    }
    gemm_init();
    WanGpuModel m; wan_gpu_model_init(&m, c, params, 0, "model");
    free(params);
    WanGpuAct a;
    if (wan_gpu_act_init(&a, c, B, c->in_dim, T, H, W, 0, err)) { fprintf(stderr, "error: %s\n", err); return 2; }
    wan_gpu_act_print_plan(&a, stdout);
    size_t nx = (size_t)B * c->in_dim * T * H * W, nctx = (size_t)B * c->text_len * c->text_dim;
    float *x, *ctx;
    cudaCheck(cudaMalloc(&x, sizeof(float) * nx)); cudaCheck(cudaMalloc(&ctx, sizeof(float) * nctx));
    normal_fill(x, nx, seed, 0, 0.f, 1.f, 0);
    normal_fill(ctx, nctx, seed, nx, 0.f, 1.f, 0);
    double* t = (double*)malloc(sizeof(double) * B);
    for (int b = 0; b < B; b++) t[b] = 500.0;
    for (int i = 0; i < 2; i++) wan_gpu_forward(&a, &m.w, x, t, ctx);
    cudaCheck(cudaDeviceSynchronize());
    cudaEvent_t e0, e1; cudaCheck(cudaEventCreate(&e0)); cudaCheck(cudaEventCreate(&e1));
    float* ms = (float*)malloc(sizeof(float) * reps);
    for (int i = 0; i < reps; i++) {
        cudaCheck(cudaEventRecord(e0));
        wan_gpu_forward(&a, &m.w, x, t, ctx);
        cudaCheck(cudaEventRecord(e1)); cudaCheck(cudaEventSynchronize(e1));
        cudaCheck(cudaEventElapsedTime(&ms[i], e0, e1));
    }
    for (int i = 1; i < reps; i++) for (int j = i; j > 0 && ms[j] < ms[j - 1]; j--) { float q = ms[j]; ms[j] = ms[j - 1]; ms[j - 1] = q; }
    printf("bench: forward of '%s', batch %d, latent [%d, %d, %d, %d] (%d tokens), %s, GEMM %s, %s attention: median %.4f s "
           "(min %.4f, max %.4f) over %d passes\n", c->name, B, c->in_dim, T, H, W, a.g.L, FLOATX_NAME, WAN_GPU_GEMM_NAME,
           a.flash ? "flash" : "naive", ms[reps / 2] / 1e3, ms[0] / 1e3, ms[reps - 1] / 1e3, reps);
    free(ms); free(t);
    cudaCheck(cudaFree(x)); cudaCheck(cudaFree(ctx));
    wan_gpu_act_free(&a); wan_gpu_model_free(&m); gemm_free();
    return 0;
}

int main(int argc, char** argv) {
    const char* preset = NULL;
    const char* weights = NULL;
    const char* mode = "teacher";
    const char* prompt = "a big red circle moving right on a black background";
    const char* negative = "";
    const char* solver = "unipc";
    const char* out = "samples.npy";
    int heads = 0, batch = 4, steps = 16, seed = 1, bench = 0, lat_t = 0, lat_h = 0, lat_w = 0;
    double shift = 3.0, cfg = 2.0;
    Flag flags[] = {
        FLAG_STR("--mode", &mode, "teacher; tmd, dmd2v: the distilled students"),
        FLAG_STR("--preset", &preset, "model preset: wan2.1-t2v-1.3b, wan2.1-t2v-14b, world, tiny (none: world, or inferred from --weights)"),
        FLAG_STR("--weights", &weights, "the checkpoint to sample (.safetensors, index.json or directory)"),
        FLAG_INT("--heads", &heads, "attention heads when the checkpoint does not say (0: infer)"),
        FLAG_STR("--prompt", &prompt, "the caption (the built-in world's grammar)"),
        FLAG_STR("--negative", &negative, "the negative prompt of CFG (empty: the empty caption)"),
        FLAG_INT("--batch", &batch, "samples, each from its own noise"),
        FLAG_STR("--solver", &solver, "unipc (official bh2 predictor-corrector) or euler"),
        FLAG_INT("--steps", &steps, "solver steps"),
        FLAG_DOUBLE("--shift", &shift, "timestep shift of the sigma grid"),
        FLAG_DOUBLE("--cfg", &cfg, "guidance scale w (1: no unconditional pass)"),
        FLAG_INT("--seed", &seed, "initial noise"),
        FLAG_STR("--out", &out, "where the samples are written (.npy)"),
        FLAG_INT("--bench", &bench, "instead of sampling: time N forward passes of the model (random weights without --weights)"),
        FLAG_INT("--latent-frames", &lat_t, "--bench latent T (0: the built-in world's); 1.3B at 480p x 81 frames: 21"),
        FLAG_INT("--latent-height", &lat_h, "--bench latent H (480p: 60)"),
        FLAG_INT("--latent-width", &lat_w, "--bench latent W (832 px: 104)"),
        FLAG_END};
    int rc = flags_parse(flags, argc, argv, 1, "usage: ./sample_tmd [flags]");
    if (rc) return rc == 1 ? 0 : 2;
    if (strcmp(mode, "teacher") && strcmp(mode, "tmd") && strcmp(mode, "dmd2v")) { fprintf(stderr, "error: --mode '%s': expected teacher, tmd or dmd2v\n", mode); return 2; }
    if (strcmp(solver, "unipc") && strcmp(solver, "euler")) { fprintf(stderr, "error: --solver '%s': expected unipc or euler\n", solver); return 2; }
    if (batch < 1 || steps < 1) { fprintf(stderr, "error: need --batch >= 1 and --steps >= 1\n"); return 2; }
    require_gpu("sample_tmd");   // before reading a checkpoint that may be tens of GB
    char err[ST_ERRLEN];
    WanConfig c; real* params;
    rc = wan_model_from_flags(&c, &params, preset, weights, heads, "world", err);
    if (rc) { fprintf(stderr, "error: %s\n", err); return rc; }
    wan_config_print(&c, stdout);
    wan_print_count(&c, stdout);
    if (strcmp(mode, "teacher")) {
        // the students' samplers (issue 12) plug in here: TMD (M outer × N inner steps) and DMD2-v
        fprintf(stderr, "sample_tmd: --mode %s (the distilled students) is not in this build; --mode teacher samples the teacher\n", mode);
        free(params); return 1;
    }
    if (bench > 0) return bench_forward(&c, params, batch, lat_t, lat_h, lat_w, bench, (uint64_t)seed);
    if (!params) { fprintf(stderr, "error: sampling needs --weights (a trained teacher, e.g. from ./train_tmd)\n"); return 2; }
    WorldConfig wc;
    if (teacher_gpu_world_for(&wc, &c, err)) { fprintf(stderr, "error: %s\n", err); free(params); return 2; }

    gemm_init();
    WanGpuModel m; wan_gpu_model_init(&m, &c, params, 0, "teacher");
    free(params);
    WanGpuAct a;
    if (wan_gpu_act_init(&a, &c, batch, wc.C, wc.T, wc.H, wc.W, 0, err)) { fprintf(stderr, "error: %s\n", err); return 1; }
    wan_gpu_act_print_plan(&a, stdout);
    // prompts: the caption for every sample; the negative prompt (or the empty caption: zeros) for the uncond pass
    size_t nctx = (size_t)c.text_len * c.text_dim, n = world_clip_numel(&wc) * batch;
    float* hc = (float*)calloc(nctx * batch, sizeof(float)); float* hu = (float*)calloc(nctx * batch, sizeof(float));
    TextEncoder te = world_text_encoder(&wc);
    text_encode(&te, prompt, hc, NULL);
    if (negative[0]) text_encode(&te, negative, hu, NULL);
    for (int b = 1; b < batch; b++) { memcpy(hc + b * nctx, hc, sizeof(float) * nctx); memcpy(hu + b * nctx, hu, sizeof(float) * nctx); }
    float *d_cond, *d_uncond, *d_x;
    cudaCheck(cudaMalloc(&d_cond, sizeof(float) * nctx * batch)); cudaCheck(cudaMalloc(&d_uncond, sizeof(float) * nctx * batch));
    cudaCheck(cudaMalloc(&d_x, sizeof(float) * n));
    cudaCheck(cudaMemcpy(d_cond, hc, sizeof(float) * nctx * batch, cudaMemcpyHostToDevice));
    cudaCheck(cudaMemcpy(d_uncond, hu, sizeof(float) * nctx * batch, cudaMemcpyHostToDevice));
    float* x = (float*)malloc(sizeof(float) * n); float* stage = (float*)malloc(sizeof(float) * n);
    Rng r = rng_make((uint64_t)seed);
    for (size_t i = 0; i < n; i++) x[i] = (float)rng_normal(&r);
    WanGpuVelocity vel = {&a, &m.w, d_cond, d_uncond, d_x, stage, n};
    SampleOpts so = {steps, shift, cfg, strcmp(solver, "euler") ? SOLVER_UNIPC : SOLVER_EULER, GRID_UNIPC, 1};
    int nfe = 0;
    printf("sampling %d x '%s' (negative: %s), %s %d steps, shift %g, cfg %g\n", batch, prompt, negative[0] ? negative : "the empty caption",
           solver, steps, shift, cfg);
    rc = teacher_sample(x, n, wan_gpu_velocity, &vel, &so, &nfe, err);
    if (rc) { fprintf(stderr, "error: %s\n", err); return 1; }
    int64_t shape[5] = {batch, wc.C, wc.T, wc.H, wc.W};
    if (npy_write(out, x, 5, shape, err)) { fprintf(stderr, "error: %s\n", err); return 1; }
    printf("wrote %s [%d, %d, %d, %d, %d] (%d model evaluations)\n", out, batch, wc.C, wc.T, wc.H, wc.W, nfe);
    wan_gpu_act_free(&a); wan_gpu_model_free(&m); gemm_free();
    cudaCheck(cudaFree(d_cond)); cudaCheck(cudaFree(d_uncond)); cudaCheck(cudaFree(d_x));
    free(hc); free(hu); free(x); free(stage);
    return 0;
}
