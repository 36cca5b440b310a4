// sample_tmd.cu: sampling on the GPU. Modes (--mode):
//   teacher   the teacher: Euler or the official UniPC bh2 (--solver), timestep shift, classifier-free guidance with
//   the
//             negative prompt (or the empty caption); the solvers are cpu/teacher_cpu.h's, driving the GPU model
//   tmd       the TMD student (M outer × N inner steps, Algorithm 1) from a train_tmd stage checkpoint (--student)
//   dmd2v     a plain Wan student with the DMD2-v multi-step sampler (--weights); both print the effective NFE (Eq. 16)
//             and the DiT time per sample; --prompts FILE makes a VBench-style suite (lib/vbench.h): files
//             {prompt}-{i}.npy (latents; {prompt}-{i}.mp4 with --vae), 5 per prompt (25 for temporal_flickering
//             prompts with --info), a manifest with every seed, resumable
// --vae FILE: every sample is also decoded by the Wan2.1 VAE on the GPU and written as NAME.mp4 (NAME-b.mp4 in a batch)
// through ffmpeg; --decode LATENT.npy --vae FILE decodes existing latents without sampling; --encode VIDEO --vae FILE
// encodes a video (.npy [3, T, H, W] in [-1, 1], or .mp4) into its latent on the GPU (real videos into a dataset).
// Prompts: a model that fits a built-in world uses the world's text encoder; a real Wan2.1 model (--wan DIR, a
// diffusers folder, or --weights/--text-encoder/--tokenizer/--vae one by one) gets umT5 contexts (tokenizer ->
// umT5 -> [512, 4096] zero-padded, cpu/prompt_ctx.h), cached on disk by the encoder's fingerprint and the prompt
// (--ctx-cache), encoded before the DiT is loaded; every check (the parts, tokenizer vs encoder, encoder width vs
// the DiT's text_dim, the prompt file) runs before any GPU work. With --wan the teacher defaults to the official
// Wan2.1 sampler (UniPC, 50 steps, shift 5, CFG 5, the official negative prompt) and the VAE makes an mp4; each
// stage prints its time and the GPU memory in use.
// --dataset DIR (--mode teacher --prompts FILE): the paper's training data, the teacher's samples with their
// contexts and the negative prompt's, in shards with a manifest, resumable, split over mpirun ranks
// (lib/latent_data.h "Dataset directories"); ./train_tmd --data DIR reads it. With --kd-pairs P, then the KD warm-up's
// teacher ODE pairs from that dataset, as train_tmd --stage kd --data DIR would make them (gpu/kd_dataset.h): chunks,
// resumable and split over the ranks, assembled to DIR/kd_pairs.safetensors for train_tmd --kd-cache.
// Output: the latents as .npy [batch, C, T, H, W] fp32 (the world's clips are in [-1, 1]).
#include "wan.h"               // config, presets, parameter layout, safetensors weights I/O
#include "lib/flags.h"         // flag table: parser and usage from one place
#include "lib/npy.h"           // writing the samples
#include "world/world.h"       // the built-in world's text encoder and clip shapes
#include "kernels/common.cuh"  // cudaCheck, require_gpu, named allocations
#include "gpu/wan_gpu.cuh"     // the DiT on the GPU
#include "gpu/teacher_gpu.cuh" // wan_gpu_velocity over cpu/teacher_cpu.h's solvers
#include "gpu/tmd_gpu.cuh"     // the TMD student and its sampler, the DMD2-v sampler
#include "gpu/train_state.h"   // reading the student from a train_tmd checkpoint
#include "lib/vbench.h"        // the VBench suite: names, seeds, manifest, resume
#include "gpu/video_out.cuh"   // --vae: latents -> the GPU VAE decoder -> mp4
#include "cpu/vae_cli.h"       // --encode: vae_read_mp4 (a video file's frames through ffmpeg)
#include "world/png.h"         // the built-in world's clips: a PNG contact sheet and an mp4
#include "cpu/prompt_ctx.h"    // real prompts: tokenizer -> umT5 -> context, the on-disk cache, the checks
#include "lib/latent_data.h"   // --dataset: shards, manifest, resume, rank split
#include "gpu/train_data.h"    // train_data_peek_config (the DiT's config from its header), flag_given
#include "gpu/kd_gpu.cuh" // --kd-pairs: the teacher's ODE pairs (kd_pairs_sample, kd_pairs_chunk), as train_tmd makes them
#include "gpu/kd_dataset.h" // --kd-pairs: the pairs beside the dataset in chunks (resume, rank split), assembled for train_tmd
#include "gpu/stage_plan.h" // kd_defaults: the pairs' sampler, as train_tmd's stage table

// The official Wan2.1 negative prompt (Wan-Video/Wan2.1 wan/configs/shared_config.py, sample_neg_prompt, at 9737cba;
// the official code feeds this Chinese text, the paper's Table 8 prints an English translation of it).
static const char* WAN_NEGATIVE_PROMPT = "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体"
                                         "发灰，最差质量，低质量，JPEG压缩残留，丑陋的，残缺的，"
                                         "多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，"
                                         "手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走";

// The umT5 encoder on the GPU (gpu/umt5_gpu.cuh: bf16 weights, fp32 accumulation; checked against the CPU reference
// in fp32 under a simulator), opened at the first cache miss and freed before the DiT loads. A build with
// NVEXTRA=-DUMT5_ON_GPU=0 encodes with the CPU reference instead (double precision: exact, ~15 CPU-s a prompt).
// The adapter below is the whole seam: cpu/prompt_ctx.h's PcBackend over umt5_gpu_*.
#ifndef UMT5_ON_GPU
#define UMT5_ON_GPU 1
#endif
#if UMT5_ON_GPU
#include "gpu/umt5_gpu.cuh"
#define UMT5_GPU_BATCH 16 // prompts per encoder call (issue 21's target is stated at batch 16)
static Umt5Gpu umt5_gpu_state;
static int umt5_gpu_be_open(void* e, const char* weights, int text_len, int* max_batch, char* err) {
    *max_batch = UMT5_GPU_BATCH;
    return umt5_gpu_open((Umt5Gpu*)e, weights, UMT5_GPU_BATCH, text_len, err);
}
static int umt5_gpu_be_encode(void* e, const int* const* ids, const int* lens, int B, float* out, char* err) {
    return umt5_gpu_encode((Umt5Gpu*)e, ids, lens, B, out, err);
}
static void umt5_gpu_be_close(void* e) { umt5_gpu_close((Umt5Gpu*)e); }
static const PcBackend UMT5_BACKEND = {umt5_gpu_be_open, umt5_gpu_be_encode, umt5_gpu_be_close, &umt5_gpu_state,
                                       "umT5 on the GPU (gpu/umt5_gpu.cuh)"};
static const PcBackend* umt5_backend(void) { return &UMT5_BACKEND; }
#else
static const PcBackend* umt5_backend(void) { return NULL; } // NULL: cpu/prompt_ctx.h's CPU reference
#endif

// one stage's line: its wall time and the GPU memory in use after it
static double stage_t0;
static void stage_begin(void) { stage_t0 = pc_now(); }
static void stage_end(const char* name) {
    size_t fr = 0, tot = 0;
    if (cudaMemGetInfo(&fr, &tot) != cudaSuccess) {
        (void)cudaGetLastError();
        fr = tot = 0;
    }
    printf("stage %-26s %8.3f s   GPU memory in use %.2f of %.2f GiB\n", name, pc_now() - stage_t0,
           (double)(tot - fr) / (1 << 30), (double)tot / (1 << 30));
    fflush(stdout);
}

// where a sample's context comes from, and the latent shape: the built-in world (its encoder, its clip shape), or a
// real model (cpu/prompt_ctx.h's contexts, the latent grid of --latent-frames/height/width). wc describes the
// latent [C, T, H, W] either way (for a real model only C, T, H, W, text_len and text_dim are set).
typedef struct {
    PromptCtx* pc; // NULL: the world's encoder
    TextEncoder te;
    WorldConfig wc;
    size_t nctx;
} Conditioning;

static int cond_init(Conditioning* k, PromptCtx* pc, const WanConfig* c, int T, int H, int W, char* err) {
    memset(k, 0, sizeof(*k));
    k->pc = pc;
    k->nctx = (size_t)c->text_len * c->text_dim;
    if (!pc) {
        if (teacher_gpu_world_for(&k->wc, c, err)) return 1;
        k->te = world_text_encoder(&k->wc);
        return 0;
    }
    k->wc.name = "latent";
    k->wc.C = c->in_dim;
    k->wc.text_len = c->text_len;
    k->wc.text_dim = c->text_dim;
    k->wc.T = T ? T : 21;
    k->wc.H = H ? H : 60;
    k->wc.W = W ? W : 104; // Wan2.1 480p: 81 frames of 480 x 832
    if (k->wc.T % c->patch[0] || k->wc.H % c->patch[1] || k->wc.W % c->patch[2]) {
        snprintf(err, ST_ERRLEN,
                 "latent [%d, %d, %d] (--latent-frames/height/width) is not a multiple of the patch [%d, %d, %d]",
                 k->wc.T, k->wc.H, k->wc.W, c->patch[0], c->patch[1], c->patch[2]);
        return 1;
    }
    return 0;
}

// prompt's context [text_len, text_dim] (zero rows after *rows when non-NULL)
static int cond_context(Conditioning* k, const char* prompt, float* ctx, int* rows, char* err) {
    if (k->pc) return pc_context(k->pc, prompt, ctx, rows, err);
    memset(ctx, 0, sizeof(float) * k->nctx);
    if (prompt[0]) text_encode(&k->te, prompt, ctx, NULL); // the world's empty caption: zeros
    if (rows) *rows = k->wc.text_len;
    return 0;
}

// --bench: the median wall time of one forward pass of the whole model on a batch (forward-only activation plan,
// the build's GEMM and attention), after two warm-up passes. Weights: the checkpoint, or official init_weights with the
// zero head replaced by small random values (timing does not depend on the values).
static int bench_forward(const WanConfig* c, real* params, int B, int T, int H, int W, int reps, uint64_t seed) {
    char err[ST_ERRLEN];
    WorldConfig wc;
    if (T == 0 || H == 0 || W == 0) {
        if (teacher_gpu_world_for(&wc, c, err)) {
            fprintf(stderr, "error: %s; or give --latent-frames/height/width\n", err);
            return 2;
        }
        T = wc.T;
        H = wc.H;
        W = wc.W;
    }
    size_t np = wan_num_params(c);
    if (!params) {
        params = (real*)malloc(sizeof(real) * np);
        wan_gpu_bench_weights(c, params, seed);
    }
    gemm_init();
    WanGpuModel m;
    wan_gpu_model_init(&m, c, params, 0, "model");
    free(params);
    WanGpuAct a;
    if (wan_gpu_act_init(&a, c, B, c->in_dim, T, H, W, 0, err)) {
        fprintf(stderr, "error: %s\n", err);
        return 2;
    }
    wan_gpu_act_print_plan(&a, stdout);
    size_t nx = (size_t)B * c->in_dim * T * H * W, nctx = (size_t)B * c->text_len * c->text_dim;
    float *x, *ctx;
    cudaCheck(cudaMalloc(&x, sizeof(float) * nx));
    cudaCheck(cudaMalloc(&ctx, sizeof(float) * nctx));
    normal_fill(x, nx, seed, 0, 0.f, 1.f, 0);
    normal_fill(ctx, nctx, seed, nx, 0.f, 1.f, 0);
    double* t = (double*)malloc(sizeof(double) * B);
    for (int b = 0; b < B; b++) t[b] = 500.0;
    for (int i = 0; i < 2; i++) wan_gpu_forward(&a, &m.w, x, t, ctx);
    cudaCheck(cudaDeviceSynchronize());
    cudaEvent_t e0, e1;
    cudaCheck(cudaEventCreate(&e0));
    cudaCheck(cudaEventCreate(&e1));
    float* ms = (float*)malloc(sizeof(float) * reps);
    for (int i = 0; i < reps; i++) {
        cudaCheck(cudaEventRecord(e0));
        wan_gpu_forward(&a, &m.w, x, t, ctx);
        cudaCheck(cudaEventRecord(e1));
        cudaCheck(cudaEventSynchronize(e1));
        cudaCheck(cudaEventElapsedTime(&ms[i], e0, e1));
    }
    for (int i = 1; i < reps; i++)
        for (int j = i; j > 0 && ms[j] < ms[j - 1]; j--) {
            float q = ms[j];
            ms[j] = ms[j - 1];
            ms[j - 1] = q;
        }
    printf("bench: forward of '%s', batch %d, latent [%d, %d, %d, %d] (%d tokens), %s, GEMM %s, %s attention: median "
           "%.4f s "
           "(min %.4f, max %.4f) over %d passes\n",
           c->name, B, c->in_dim, T, H, W, a.g.L, FLOATX_NAME, WAN_GPU_GEMM_NAME, a.flash ? "flash" : "naive",
           ms[reps / 2] / 1e3, ms[0] / 1e3, ms[reps - 1] / 1e3, reps);
    // where the time goes: the same passes again with every attention and GEMM call bracketed (kernels/bench_prof.cuh),
    // apart from the timed ones so the brackets do not touch the median above
    bench_prof.enabled = 1;
    bench_prof_reset();
    cudaCheck(cudaEventRecord(e0));
    for (int i = 0; i < reps; i++) wan_gpu_forward(&a, &m.w, x, t, ctx);
    cudaCheck(cudaEventRecord(e1));
    cudaCheck(cudaEventSynchronize(e1));
    float total = 0;
    cudaCheck(cudaEventElapsedTime(&total, e0, e1));
    bench_prof_report(stdout, "one forward pass", total / reps, reps);
    bench_prof.enabled = 0;
    cudaCheck(cudaEventDestroy(e0));
    cudaCheck(cudaEventDestroy(e1));
    free(ms);
    free(t);
    cudaCheck(cudaFree(x));
    cudaCheck(cudaFree(ctx));
    wan_gpu_act_free(&a);
    wan_gpu_model_free(&m);
    gemm_free();
    return 0;
}

// --vae: the B latents x [B, C, T, h, w] (host, the shape vo was made for) -> NAME.mp4 or NAME-b.mp4 beside out
static int videos_from_latents(VideoOut* vo, const float* x, int B, const char* out) {
    char err[ST_ERRLEN];
    size_t per = (size_t)vo->v.c.z_dim * vo->T * vo->g.h * vo->g.w;
    for (int b = 0; b < B; b++) {
        char mp4[4096];
        video_out_name(mp4, sizeof(mp4), out, b, B);
        if (video_out_write(vo, x + b * per, mp4, err)) {
            fprintf(stderr, "error: %s\n", err);
            return 1;
        }
    }
    return 0;
}

// The built-in world's models make RGB clips [B, 3, T, H, W] in [-1, 1] directly (no VAE): beside OUT.npy also
// OUT.png (a contact sheet, one row of frames per sample, the caption under it) and OUT.mp4 when ffmpeg is on the
// PATH (one line when it is not). Latent-space models (Wan presets) get their video from --vae instead.
static int world_clip_outputs(const char* out, const float* x, int B, const WorldConfig* wc, const char* caption,
                              int fps) {
    if (wc->C != 3) return 0;
    char err[ST_ERRLEN], base[4000], path[4096];
    size_t n = strlen(out);
    if (n >= sizeof(base)) {
        fprintf(stderr, "error: --out path too long (%zu bytes)\n", n);
        return 1;
    }
    memcpy(base, out, n + 1);
    if (n > 4 && !strcmp(base + n - 4, ".npy")) base[n - 4] = 0;
    const char** caps = (const char**)malloc(sizeof(char*) * B);
    for (int b = 0; b < B; b++) caps[b] = caption;
    snprintf(path, sizeof(path), "%s.png", base);
    int rc = png_write_sheet(path, x, B, wc->T, wc->H, wc->W, caps, 0, err);
    if (rc)
        fprintf(stderr, "error: %s\n", err);
    else
        printf("wrote %s (contact sheet)\n", path);
    snprintf(path, sizeof(path), "%s.mp4", base);
    int m = rc ? 0 : png_write_mp4(path, x, B, wc->T, wc->H, wc->W, caps, fps, err);
    if (m == 2)
        printf("no mp4: ffmpeg is not on the PATH (install ffmpeg for %s; the .npy and .png are written)\n", path);
    else if (m) {
        fprintf(stderr, "error: %s\n", err);
        rc = 1;
    } else if (!rc)
        printf("wrote %s\n", path);
    free(caps);
    return rc;
}

// --decode: latents already on disk (sample_tmd's [B, C, T, h, w] or one [C, T, h, w]) -> mp4 beside --out
static int decode_latents(const VideoOutOpts* vopt, const char* path, const char* out) {
    char err[ST_ERRLEN];
    if (!vopt->vae) {
        fprintf(
            stderr,
            "error: --decode needs --vae FILE (the Wan2.1 VAE: diffusers' vae/diffusion_pytorch_model.safetensors)\n");
        return 2;
    }
    if (!mp4_have_ffmpeg()) {
        fprintf(stderr, "error: --decode writes mp4 and needs ffmpeg on the PATH (install ffmpeg; ./test_tmd vae "
                        "decode writes .npy without it)\n");
        return 2;
    }
    float* z = NULL;
    int nd = 0;
    int64_t sh[ST_MAXDIM];
    if (npy_read(path, &z, &nd, sh, err)) {
        fprintf(stderr, "error: %s\n", err);
        return 1;
    }
    if (nd != 4 && nd != 5) {
        char got[256];
        st_shape_str(got, nd, sh);
        fprintf(stderr,
                "error: %s: shape %s; expected latents [B, C, T, h, w] (what sample_tmd writes) or one latent [C, T, "
                "h, w]\n",
                path, got);
        free(z);
        return 1;
    }
    const int64_t* d = sh + (nd == 5);
    require_gpu("sample_tmd");
    VideoOut vo;
    if (video_out_init(&vo, vopt, (int)d[0], (int)d[1], (int)d[2], (int)d[3], err)) {
        fprintf(stderr, "error: %s\n", err);
        free(z);
        return 2;
    }
    int rc = videos_from_latents(&vo, z, nd == 5 ? (int)sh[0] : 1, out);
    video_out_free(&vo);
    free(z);
    return rc;
}

// --encode: a video (.npy [3, T, H, W] in [-1, 1], or an .mp4 read through ffmpeg) -> the VAE encoder on the GPU ->
// its latent [z_dim, T', H/8, W/8] written to --out (.npy): the DiT's normalized latent, or the VAE's own with
// --vae-raw
static int encode_video(const VideoOutOpts* vopt, const char* path, const char* out) {
    char err[ST_ERRLEN];
    if (!vopt->vae) {
        fprintf(
            stderr,
            "error: --encode needs --vae FILE (the Wan2.1 VAE: diffusers' vae/diffusion_pytorch_model.safetensors)\n");
        return 2;
    }
    float* x = NULL;
    int T = 0, H = 0, W = 0;
    if (st_ends_with(path, ".mp4")) {
        double* xd = NULL;
        if (vae_read_mp4(path, &xd, &T, &H, &W, err)) {
            fprintf(stderr, "error: %s\n", err);
            return 1;
        }
        size_t n = (size_t)3 * T * H * W;
        x = (float*)malloc(sizeof(float) * n);
        for (size_t i = 0; i < n; i++) x[i] = (float)xd[i];
        free(xd);
    } else {
        int nd = 0;
        int64_t sh[ST_MAXDIM];
        if (npy_read(path, &x, &nd, sh, err)) {
            fprintf(stderr, "error: %s\n", err);
            return 1;
        }
        if (nd != 4 || sh[0] != 3) {
            char got[256];
            st_shape_str(got, nd, sh);
            fprintf(stderr,
                    "error: %s: video of shape %s, expected [3, T, H, W] in [-1, 1] (RGB first, no batch axis), or an "
                    ".mp4\n",
                    path, got);
            free(x);
            return 1;
        }
        T = (int)sh[1];
        H = (int)sh[2];
        W = (int)sh[3];
    }
    Vae v;
    if (vae_load(&v, vopt->vae, NULL, err)) {
        fprintf(stderr, "error: %s\n", err);
        free(x);
        return 1;
    }
    int s = vae_spatial_factor(&v.c), Tl = vae_encoded_frames(&v.c, T);
    if (T < 1 || (T - 1) % VAE_CHUNK || H < s || W < s || H % s || W % s) { // before any GPU work
        fprintf(stderr,
                "error: %s: video [3, %d, %d, %d]; the encoder takes 1 + 4k frames (1, 5, ..., 81) of a multiple of %d "
                "pixels "
                "on each side; trim the video to %d frames and crop it to %dx%d\n",
                path, T, H, W, s, T < 1 ? 1 : 1 + (T - 1) / VAE_CHUNK * VAE_CHUNK, H / s * s, W / s * s);
        free(x);
        vae_free(&v);
        return 2;
    }
    if (!vopt->raw && v.c.z_dim != 16) {
        fprintf(stderr, "error: this VAE has z_dim %d; the DiT's normalization is Wan2.1's (z_dim 16): add --vae-raw\n",
                v.c.z_dim);
        free(x);
        vae_free(&v);
        return 2;
    }
    require_gpu("sample_tmd");
    VaeGpu g;
    if (vae_gpu_init_encoder(&g, &v, H, W, err)) {
        fprintf(stderr, "error: %s\n", err);
        free(x);
        vae_free(&v);
        return 1;
    }
    size_t nz = (size_t)v.c.z_dim * Tl * (H / s) * (W / s);
    float* z = (float*)malloc(sizeof(float) * nz);
    printf("encode: video [3, %d, %d, %d] -> latent [%d, %d, %d, %d] (%s)\n", T, H, W, v.c.z_dim, Tl, H / s, W / s,
           vopt->raw ? "the VAE's own" : "normalized, as the DiT sees it");
    double t0 = now_s();
    int rc = vae_gpu_encode(&g, z, x, T, !vopt->raw, stdout, err);
    if (rc)
        fprintf(stderr, "error: %s\n", err);
    else {
        printf("encoded %d frames in %.2f s\n", T, now_s() - t0);
        vae_gpu_print_plan(&g, stdout);
        int64_t shape[4] = {v.c.z_dim, Tl, H / s, W / s};
        if ((rc = npy_write(out, z, 4, shape, err)))
            fprintf(stderr, "error: %s\n", err);
        else
            printf("wrote %s\n", out);
    }
    vae_gpu_free(&g);
    vae_free(&v);
    free(x);
    free(z);
    return rc ? 1 : 0;
}

// ---------------------------------------------------------------------------------------------------------
// the distilled students: TMD (Algorithm 1) and DMD2-v (App. A.3), one prompt or a VBench suite

typedef struct {
    int tmd, M, N, B;
    double gamma_outer;
    TmdGpuStudent* S;
    WanGpuModel* P;
    WanGpuAct a;
    TmdGpuRollout ro;
    WorldConfig wc;
    Conditioning* cond; // wc: the latent shape (cond->wc)
    float *x, *y1, *ctx;
    float* hctx;
    float* hx;
    size_t n, nctx;
    double ms_total;
    int samples;
    VideoOut* vo; // --vae with ffmpeg: the suite's files are mp4 (NULL: latents)
} StudentSampler;

// B samples of `prompt` from the Philox stream `seed` into s->hx (host); times the DiT part
static int student_sample(StudentSampler* s, const char* prompt, uint64_t seed, char* err) {
    if (cond_context(s->cond, prompt, s->hctx, NULL, err)) return 1;
    for (int b = 1; b < s->B; b++) memcpy(s->hctx + b * s->nctx, s->hctx, sizeof(float) * s->nctx);
    cudaCheck(cudaMemcpy(s->ctx, s->hctx, sizeof(float) * s->nctx * s->B, cudaMemcpyHostToDevice));
    uint64_t offset = 0;
    normal_fill(s->x, s->n, seed, offset, 0.f, 1.f, 0);
    offset += s->n;
    cudaEvent_t e0, e1;
    cudaCheck(cudaEventCreate(&e0));
    cudaCheck(cudaEventCreate(&e1));
    cudaCheck(cudaEventRecord(e0));
    if (s->tmd)
        tmd_gpu_sample(s->x, s->S, &s->a, &s->ro, s->y1, s->ctx, s->M, s->gamma_outer, seed, &offset);
    else
        dmd_gpu_sample(s->x, &s->P->w, &s->a, s->ctx, s->M, s->gamma_outer);
    cudaCheck(cudaEventRecord(e1));
    cudaCheck(cudaEventSynchronize(e1));
    float ms;
    cudaCheck(cudaEventElapsedTime(&ms, e0, e1));
    s->ms_total += ms;
    s->samples += s->B;
    cudaCheck(cudaEventDestroy(e0));
    cudaCheck(cudaEventDestroy(e1));
    cudaCheck(cudaMemcpy(s->hx, s->x, sizeof(float) * s->n, cudaMemcpyDeviceToHost));
    return 0;
}

// VbGenerateFn: one video of the suite, batch 1, noise from the job's seed, prompt from the (extended) line
static int student_vbench_video(void* ctx, const VbSuite* suite, const VbJob* job, const char* path, char* err) {
    StudentSampler* s = (StudentSampler*)ctx;
    if (student_sample(s, suite->gen_prompt[job->line], job->seed, err)) return 1;
    if (s->vo) return video_out_write(s->vo, s->hx, path, err);
    int64_t shape[4] = {s->wc.C, s->wc.T, s->wc.H, s->wc.W};
    return npy_write(path, s->hx, 4, shape, err);
}

static int sample_students(const char* mode, const WanConfig* c, real* params, const char* student, const char* prompt,
                           int batch, int M, int N, int H, int seed, const char* out, const char* prompts,
                           const char* extended, const char* info, const VideoOutOpts* vopt, int world_fps,
                           Conditioning* cond) {
    char err[ST_ERRLEN];
    StudentSampler s;
    memset(&s, 0, sizeof(s));
    s.tmd = !strcmp(mode, "tmd");
    s.M = M;
    s.N = N;
    s.B = prompts ? 1 : batch;
    s.gamma_outer = outer_shift_default(M); // the trainers' (cpu/tmd_cpu.h: 10, or 5 for M >= 4)
    s.cond = cond;
    s.wc = cond->wc;
    if (M < 1 || M > 64 || N < 1 || N > 64) {
        fprintf(stderr, "error: need 1 <= --M, --N <= 64\n");
        return 2;
    }
    gemm_init();
    StudentConfig sc;
    sc.wan = *c;
    sc.head_blocks = H;
    sc.fusion = FUSION_GATED;
    sc.fuse_ffn_dim = c->ffn_dim;
    TmdGpuStudent S;
    WanGpuModel P;
    if (s.tmd) {
        if (!student) {
            fprintf(stderr,
                    "error: --mode tmd needs --student FILE (a checkpoint of ./train_tmd --stage stage1 or stage2)\n");
            return 2;
        }
        if (H < 1 || H >= c->num_layers) {
            fprintf(stderr, "error: --head-blocks %d: expected 1 .. %d\n", H, c->num_layers - 1);
            return 2;
        }
        size_t ns = student_num_params(&sc);
        float* hs = (float*)malloc(sizeof(float) * ns);
        TsBuffer b[1] = {{"student.params", hs, ns}};
        TsMeta meta;
        if (ts_load(student, b, 1, &meta, err)) {
            fprintf(stderr, "error: %s\n", err);
            return 2;
        }
        tmd_gpu_student_init(&S, &sc, hs);
        free(hs);
        s.S = &S;
    } else {
        size_t nw = wan_num_params(c);
        float* hp = NULL;
        if (student) { // a ./train_tmd --stage baseline checkpoint (the config comes from --weights or --preset)
            hp = (float*)malloc(sizeof(float) * nw);
            TsBuffer b[1] = {{"student.params", hp, nw}};
            TsMeta meta;
            if (ts_load(student, b, 1, &meta, err)) {
                fprintf(stderr, "error: %s\n", err);
                return 2;
            }
        } else if (!params) {
            fprintf(stderr, "error: --mode dmd2v needs --student (a train_tmd --stage baseline checkpoint) or "
                            "--weights (a Wan checkpoint)\n");
            return 2;
        }
        wan_gpu_model_init(&P, c, hp ? hp : params, 0, "DMD2-v student");
        s.P = &P;
        free(hp);
    }
    if (wan_gpu_act_init(&s.a, c, s.B, s.wc.C, s.wc.T, s.wc.H, s.wc.W, 0, err)) {
        fprintf(stderr, "error: %s\n", err);
        return 2;
    }
    if (s.tmd) rollout_gpu_init(&s.ro, &sc, &s.a, N, 10.0);
    s.nctx = (size_t)c->text_len * c->text_dim;
    s.n = world_clip_numel(&s.wc) * s.B;
    cudaCheck(cudaMalloc(&s.x, sizeof(float) * s.n));
    cudaCheck(cudaMalloc(&s.y1, sizeof(float) * s.n));
    cudaCheck(cudaMalloc(&s.ctx, sizeof(float) * s.nctx * s.B));
    s.hctx = (float*)malloc(sizeof(float) * s.nctx * s.B);
    s.hx = (float*)malloc(sizeof(float) * s.n);
    double nfe = s.tmd ? effective_nfe(M, N, H, c->num_layers) : (double)M;
    int rc = 0;
    VideoOut vo;
    if (vopt->vae) { // checked before sampling; with --prompts the suite's files become mp4 (with ffmpeg; .npy without)
        if (video_out_init(&vo, vopt, s.wc.C, s.wc.T, s.wc.H, s.wc.W, err)) {
            fprintf(stderr, "error: %s\n", err);
            return 2;
        }
        if (prompts && vo.ffmpeg) s.vo = &vo;
    }
    if (prompts) {
        VbSuite suite;
        VbReport rep;
        if (vb_suite_load(&suite, prompts, extended, info, err)) {
            fprintf(stderr, "error: %s\n", err);
            return 2;
        }
        char gen[256];
        snprintf(gen, sizeof(gen), "sample_tmd --mode %s M=%d N=%d H=%d config=%s student=%s", mode, M, N, H, c->name,
                 s.tmd ? student : "--weights");
        rc = vb_run(&suite, out, s.vo ? ".mp4" : ".npy", (uint64_t)seed, gen, student_vbench_video, &s, 0, &rep, err);
        printf("VBench suite in %s: %d videos planned, %d already there, %d made now (%d duplicate prompt lines)\n",
               out, rep.planned, rep.already, rep.made, rep.duplicates);
        if (rc) fprintf(stderr, "error: %s\n", err);
        vb_suite_free(&suite);
    } else {
        stage_begin();
        if (student_sample(&s, prompt, (uint64_t)seed, err)) {
            fprintf(stderr, "error: %s\n", err);
            return 1;
        }
        stage_end(s.tmd ? "DiT (TMD student)" : "DiT (DMD2-v student)");
        int64_t shape[5] = {s.B, s.wc.C, s.wc.T, s.wc.H, s.wc.W};
        if (npy_write(out, s.hx, 5, shape, err)) {
            fprintf(stderr, "error: %s\n", err);
            rc = 1;
        } else
            printf("wrote %s [%d, %d, %d, %d, %d]\n", out, s.B, s.wc.C, s.wc.T, s.wc.H, s.wc.W);
        if (!rc && vopt->vae) {
            stage_begin();
            rc = videos_from_latents(&vo, s.hx, s.B, out);
            stage_end("VAE decode + mp4");
        }
        if (!rc && !vopt->vae) rc = world_clip_outputs(out, s.hx, s.B, &s.wc, prompt, world_fps);
    }
    if (vopt->vae) video_out_free(&vo);
    if (s.samples)
        printf("%s M %d%s: effective NFE %.3f; DiT time %.2f ms per sample on this device (batch %d)\n", mode, M,
               s.tmd ? "" : " (DMD2-v)", nfe, s.ms_total / s.samples, s.B);
    if (s.tmd) {
        rollout_gpu_free(&s.ro);
        tmd_gpu_student_free(&S);
    } else
        wan_gpu_model_free(&P);
    wan_gpu_act_free(&s.a);
    gemm_free();
    cudaCheck(cudaFree(s.x));
    cudaCheck(cudaFree(s.y1));
    cudaCheck(cudaFree(s.ctx));
    free(s.hctx);
    free(s.hx);
    return rc;
}

// ---------------------------------------------------------------------------------------------------------
// the teacher: one prompt (a batch of samples), or the dataset recipe

typedef struct {
    WanGpuModel m;
    WanGpuAct a;
    int B;
    size_t per, n, nctx;
    float *d_cond, *d_uncond, *d_x, *stage, *hc, *hu;
    SampleOpts so;
    Conditioning* cond;
    int C, T, H, W;
    double dit_s;
} TeacherRun;

static int teacher_run_init(TeacherRun* t, const WanConfig* c, real* params, int B, Conditioning* cond,
                            const SampleOpts* so, char* err) {
    memset(t, 0, sizeof(*t));
    t->B = B;
    t->cond = cond;
    t->so = *so;
    t->C = cond->wc.C;
    t->T = cond->wc.T;
    t->H = cond->wc.H;
    t->W = cond->wc.W;
    wan_gpu_model_init(&t->m, c, params, 0, "teacher");
    if (wan_gpu_act_init(&t->a, c, B, t->C, t->T, t->H, t->W, 0, err)) return 1;
    wan_gpu_act_print_plan(&t->a, stdout);
    t->nctx = (size_t)c->text_len * c->text_dim;
    t->per = (size_t)t->C * t->T * t->H * t->W;
    t->n = t->per * B;
    t->hc = (float*)calloc(t->nctx * B, sizeof(float));
    t->hu = (float*)calloc(t->nctx * B, sizeof(float));
    t->stage = (float*)malloc(sizeof(float) * t->n);
    cudaCheck(cudaMalloc(&t->d_cond, sizeof(float) * t->nctx * B));
    cudaCheck(cudaMalloc(&t->d_uncond, sizeof(float) * t->nctx * B));
    cudaCheck(cudaMalloc(&t->d_x, sizeof(float) * t->n));
    return 0;
}
static void teacher_run_free(TeacherRun* t) {
    wan_gpu_act_free(&t->a);
    wan_gpu_model_free(&t->m);
    cudaCheck(cudaFree(t->d_cond));
    cudaCheck(cudaFree(t->d_uncond));
    cudaCheck(cudaFree(t->d_x));
    free(t->hc);
    free(t->hu);
    free(t->stage);
}

// the B samples of t->hc (prompts) against t->hu (negative prompts) from the noise in x [B, per] (overwritten by the
// samples); *nfe model evaluations
static int teacher_run_sample(TeacherRun* t, float* x, int* nfe, char* err) {
    cudaCheck(cudaMemcpy(t->d_cond, t->hc, sizeof(float) * t->nctx * t->B, cudaMemcpyHostToDevice));
    cudaCheck(cudaMemcpy(t->d_uncond, t->hu, sizeof(float) * t->nctx * t->B, cudaMemcpyHostToDevice));
    WanGpuVelocity vel = {&t->a, &t->m.w, t->d_cond, t->d_uncond, t->d_x, t->stage,
                          t->n,  0,       0}; // no skip-layer guidance
    double t0 = pc_now();
    int rc = teacher_sample(x, t->n, wan_gpu_velocity, &vel, &t->so, nfe, err);
    cudaCheck(cudaDeviceSynchronize());
    t->dit_s += pc_now() - t0;
    return rc;
}

// --dataset: LdsSource's callbacks over the teacher
typedef struct {
    TeacherRun* t;
    const char* negative;
    char err[ST_ERRLEN];
} DatasetMaker;

static int dataset_latents(void* user, const LdsPlan* p, int64_t first, int count, float* latents, char* err) {
    DatasetMaker* dm = (DatasetMaker*)user;
    TeacherRun* t = dm->t;
    float* x = (float*)malloc(sizeof(float) * t->n);
    for (int b = 0; b < t->B;
         b++) { // a short last batch repeats its last sample in the spare slots (their results are dropped)
        int64_t i = first + (b < count ? b : count - 1);
        if (cond_context(t->cond, p->prompt[i], t->hc + b * t->nctx, NULL, err) ||
            cond_context(t->cond, dm->negative, t->hu + b * t->nctx, NULL, err)) {
            free(x);
            return 1;
        }
        Rng r = rng_make(p->seed[i]);
        for (size_t k = 0; k < t->per; k++) x[b * t->per + k] = (float)rng_normal(&r);
    }
    int nfe = 0;
    int rc = teacher_run_sample(t, x, &nfe, err);
    if (!rc) memcpy(latents, x, sizeof(float) * t->per * count);
    free(x);
    return rc;
}
static int dataset_context(void* user, const char* prompt, float* ctx, int* rows, char* err) {
    return cond_context(((DatasetMaker*)user)->t->cond, prompt, ctx, rows, err);
}

// the dataset's fingerprint: the teacher's weight files, the text encoder's fingerprint (or the world's name), the
// sampler, the latent shape, the negative prompt
static int dataset_fingerprint(char* out, const char* weights, const Conditioning* cond, const SampleOpts* so,
                               const char* negative, char* err) {
    StSet set;
    if (st_set_open(&set, weights, err)) return 1;
    uint64_t h = CC_FNV_START;
    int rc = 0;
    for (int i = 0; i < set.n_files && !rc; i++) rc = cc_file_fingerprint(&h, set.files[i].path, err);
    st_set_close(&set);
    if (rc) return 1;
    char s[512];
    snprintf(s, sizeof(s), "encoder %016llx world %s | solver %d steps %d shift %.17g cfg %.17g | latent %d %d %d %d",
             cond->pc ? (unsigned long long)cond->pc->cache.fingerprint : 0ull, cond->pc ? "-" : cond->wc.name,
             (int)so->solver, so->steps, so->shift, so->guidance, cond->wc.C, cond->wc.T, cond->wc.H, cond->wc.W);
    h = cc_fnv(h, s, strlen(s));
    h = cc_fnv(h, negative, strlen(negative) + 1);
    snprintf(out, 40, "%016llx", (unsigned long long)h);
    return 0;
}

// --dataset --kd-pairs: the KD warm-up's teacher pairs beside the dataset (gpu/kd_dataset.h), the noise and the
// teacher's samples on the GPU exactly as train_tmd's kd_pairs_get makes them (Philox stream, kd_pairs_sample: UniPC
// with CFG against the dataset's negative prompt, skip-layer guidance)
typedef struct {
    TeacherRun* t;
    KdPairSettings s;
    int T, H, W;
} KdMaker;
static int kd_noise_gpu(void* u, uint64_t seed, uint64_t offset, size_t n, float* out, char* err) {
    (void)u;
    (void)err;
    float* d;
    cudaCheck(cudaMalloc(&d, sizeof(float) * n));
    normal_fill(d, n, seed, offset, 0.f, 1.f, 0);
    cudaCheck(cudaMemcpy(out, d, sizeof(float) * n, cudaMemcpyDeviceToHost));
    cudaCheck(cudaFree(d));
    return 0;
}
static int kd_teacher_gpu(void* u, KdPairs* kp, const float* negative, char* err) {
    KdMaker* m = (KdMaker*)u;
    double t0 = pc_now();
    int chunk = kd_pairs_chunk(&m->t->m.w.cfg, m->T, m->H, m->W, kp->numel, kp->nctx, kp->P, err);
    int rc = !chunk || kd_pairs_sample(kp, &m->t->m, m->T, m->H, m->W, negative, &m->s, chunk, err) ? 1 : 0;
    m->t->dit_s += pc_now() - t0;
    return rc;
}

// the KD pairs of a finished dataset directory: this rank's chunks, then the assembled file (under mpirun a rank
// first waits for the other ranks' dataset shards: the pairs' captions are drawn from the whole dataset)
static int dataset_kd_pairs(const char* dir, const LdsPlan* plan, TeacherRun* t, const WanConfig* c,
                            const KdPairSettings* ks, uint64_t teacher_hash, int chunk, int rank, int world) {
    char err[ST_ERRLEN], path[1200];
    for (int waited = 0;; waited += 10) {
        int missing = 0;
        struct stat sb;
        for (int k = 0; k < plan->n_shards; k++) {
            lds_shard_path(path, sizeof(path), dir, k);
            missing += stat(path, &sb) != 0;
        }
        if (!missing) break;
        if (world == 1) {
            fprintf(stderr, "error: KD pairs: %s lacks %d of its %d shards\n", dir, missing, plan->n_shards);
            return 1;
        }
        if (waited % 600 == 0) {
            printf("KD pairs: waiting for the other ranks' %d dataset shards (the pairs' captions come from the whole "
                   "dataset)\n",
                   missing);
            fflush(stdout);
        }
        sleep(10);
    }
    TrainData td;
    KdDsPlan kp;
    KdDsReport rep;
    if (train_data_open(&td, dir, c, ks->seed, KD_STREAM, 0, 1, err)) {
        fprintf(stderr, "error: %s\n", err);
        return 1;
    }
    if (kd_ds_plan_make(&kp, &td, c, ks, teacher_hash, chunk, err)) {
        fprintf(stderr, "error: %s\n", err);
        train_data_free(&td);
        return 1;
    }
    char slg[48] = "no skip-layer guidance";
    if (ks->skip_layer >= 0) snprintf(slg, sizeof(slg), "skip-layer guidance at block %d", ks->skip_layer);
    printf("KD pairs %s: %d teacher ODE pairs in %d chunks of %d, rank %d of %d; UniPC %d steps, CFG %g against the "
           "negative prompt, shift %g, %s; "
           "captions drawn as train_tmd --stage kd --data %s --seed %llu draws them\n",
           dir, kp.P, kp.n_chunks, kp.S, rank, world, ks->steps, ks->cfg, ks->shift, slg, dir,
           (unsigned long long)ks->seed);
    KdMaker m = {t, *ks, td.T, td.H, td.W};
    KdDsSource src = {kd_noise_gpu, kd_teacher_gpu, &m};
    int rc = kd_ds_run(dir, &kp, &td, rank, world, &src, &rep, err);
    if (rc)
        fprintf(stderr, "error: %s\n", err);
    else if (rep.assembled == 1)
        printf("KD pairs %s/" KD_DS_PAIRS_FILE ": already there, this run's; nothing to do\n", dir);
    else
        printf("KD pairs %s: rank %d of %d: %d of %d chunks are this rank's, %d were already there, %d made now; %s\n",
               dir, rank, world, rep.mine, rep.chunks, rep.already, rep.made,
               rep.assembled
                   ? "all there: assembled " KD_DS_PAIRS_FILE " for train_tmd --kd-cache"
                   : "other ranks' chunks still missing (the last rank to finish, or a rerun, assembles them)");
    kd_ds_plan_free(&kp);
    train_data_free(&td);
    return rc;
}

// --kd-pairs: the pairs' sampler as train_tmd resolves it for this teacher (gpu/stage_plan.h kd_defaults; a flag
// given wins), checked against the teacher's config and against pairs already in dir before any GPU work
static int kd_settings(KdPairSettings* k, const char* dir, const WanConfig* dc, const char* kd_weights, int heads,
                       int pairs, int seed, int steps, double cfg, double shift, int skip_layer) {
    char err[ST_ERRLEN];
    WanConfig kc =
        *dc; // the pairs' teacher: the dataset's, or --kd-weights (it must take the dataset's latents and contexts)
    if (kd_weights) {
        if (train_data_peek_config(&kc, NULL, kd_weights, heads, err)) {
            fprintf(stderr, "error: --kd-weights: %s\n", err);
            return 1;
        }
        if (kc.in_dim != dc->in_dim || kc.out_dim != dc->out_dim || kc.text_len != dc->text_len ||
            kc.text_dim != dc->text_dim || kc.patch[0] != dc->patch[0] || kc.patch[1] != dc->patch[1] ||
            kc.patch[2] != dc->patch[2]) {
            fprintf(stderr,
                    "error: --kd-weights %s: in/out %d/%d, text [%d, %d], patch (%d, %d, %d), but the dataset's "
                    "teacher has %d/%d, [%d, %d], (%d, %d, %d); "
                    "the KD pairs' teacher must take the dataset's latents and contexts\n",
                    kd_weights, kc.in_dim, kc.out_dim, kc.text_len, kc.text_dim, kc.patch[0], kc.patch[1], kc.patch[2],
                    dc->in_dim, dc->out_dim, dc->text_len, dc->text_dim, dc->patch[0], dc->patch[1], dc->patch[2]);
            return 1;
        }
    }
    const WanConfig* c = &kc;
    Table7 t7;
    KdDefaults kdd = kd_defaults(table7_for(c, &t7) ? &t7 : NULL);
    k->pairs = pairs;
    k->seed = (uint64_t)seed;
    k->steps = steps > 0 ? steps : kdd.sampler_steps;
    k->cfg = cfg >= 0 ? cfg : kdd.cfg;
    k->shift = shift >= 0 ? shift : kdd.shift;
    k->skip_layer = skip_layer >= -1 ? skip_layer : kdd.skip_layer;
    if (k->skip_layer >= c->num_layers) {
        fprintf(stderr, "error: --kd-skip-layer %d: the teacher has %d blocks; give -1 (none) or a block below %d\n",
                k->skip_layer, c->num_layers, c->num_layers);
        return 1;
    }
    if (kd_ds_precheck(dir, k, err)) {
        fprintf(stderr, "error: %s\n", err);
        return 1;
    } // pairs of other settings already there
    return 0;
}

static int env_int(const char* a, const char* b, int dflt) {
    const char* v = getenv(a);
    if (!v) v = getenv(b);
    return v ? atoi(v) : dflt;
}

int main(int argc, char** argv) {
    const char* preset = NULL;
    const char* weights = NULL;
    const char* mode = "teacher";
    const char* prompt = NULL;
    const char* negative = NULL;
    const char* solver = "unipc";
    const char* out = "samples.npy";
    int heads = 0, batch = 4, steps = 16, seed = 1, bench = 0, lat_t = 0, lat_h = 0, lat_w = 0;
    double shift = 3.0, cfg = 2.0;
    const char* student = NULL;
    const char* prompts = NULL;
    const char* extended = NULL;
    const char* info = NULL;
    int M = 2, N = 2, H = 2;
    const char* decode = NULL;
    const char* encode = NULL;
    VideoOutOpts vopt = {NULL, 0, 0};
    const char* wan = NULL;
    const char* text_encoder = NULL;
    const char* tokenizer = NULL;
    const char* ctx_cache = NULL;
    const char* dataset = NULL;
    int shard_size = 64;
    int kd_pairs = 0, kd_sampler_steps = -1, kd_skip_layer = -2;
    double kd_cfg = -1, kd_shift = -1; // --dataset --kd-pairs: -1 (-2): train_tmd's stage table
    const char* kd_weights = NULL;     // --kd-weights: the KD pairs' teacher when it is not the dataset's
    Flag flags[] = {
        FLAG_STR("--mode", &mode, "teacher; tmd, dmd2v: the distilled students"),
        FLAG_STR("--wan", &wan,
                 "a diffusers Wan2.1 folder (transformer/, text_encoder/, tokenizer/, vae/): real prompts through "
                 "umT5, the official "
                 "sampler as the teacher's defaults (UniPC, 50 steps, shift 5, CFG 5), an mp4 through its VAE"),
        FLAG_STR(
            "--preset", &preset,
            "model preset: wan2.1-t2v-1.3b, wan2.1-t2v-14b, world, tiny (none: world, or inferred from --weights)"),
        FLAG_STR(
            "--weights", &weights,
            "the checkpoint to sample (.safetensors, index.json or directory; default with --wan: its transformer/)"),
        FLAG_STR("--text-encoder", &text_encoder,
                 "umT5 encoder weights (a folder, index.json or .safetensors; default with --wan: its text_encoder/); "
                 "gives real prompts"),
        FLAG_STR("--tokenizer", &tokenizer, "SentencePiece model (default with --wan: its tokenizer/spiece.model)"),
        FLAG_STR("--ctx-cache", &ctx_cache,
                 "where real prompts' contexts are cached (default $HOME/.cache/tmd/contexts; 'none': no cache)"),
        FLAG_INT("--heads", &heads, "attention heads when the checkpoint does not say (0: infer)"),
        FLAG_STR("--prompt", &prompt,
                 "the prompt (built-in world: a caption of its grammar, default 'big red circle moving right slow on "
                 "black')"),
        FLAG_STR("--negative", &negative,
                 "the negative prompt of CFG (default: the official Wan2.1 one for a real model, the empty caption for "
                 "the built-in world)"),
        FLAG_INT("--batch", &batch, "samples, each from its own noise (--dataset: samples per teacher batch)"),
        FLAG_STR("--solver", &solver, "unipc (official bh2 predictor-corrector) or euler"),
        FLAG_INT("--steps", &steps, "solver steps (real model: 50)"),
        FLAG_DOUBLE("--shift", &shift, "timestep shift of the sigma grid (real model: 5)"),
        FLAG_DOUBLE("--cfg", &cfg, "guidance scale w (1: no unconditional pass; real model: 5)"),
        FLAG_INT("--seed", &seed, "initial noise (--dataset, --prompts: the base of every sample's seed)"),
        FLAG_STR("--out", &out, "where the samples are written (.npy; mp4 beside it with a VAE)"),
        FLAG_INT("--bench", &bench,
                 "instead of sampling: time N forward passes of the model (random weights without --weights)"),
        FLAG_INT(
            "--latent-frames", &lat_t,
            "latent T of a real model's samples and of --bench (0: 21, i.e. 81 frames; the built-in world: its own)"),
        FLAG_INT("--latent-height", &lat_h, "latent H (0: 60, i.e. 480 px)"),
        FLAG_INT("--latent-width", &lat_w, "latent W (0: 104, i.e. 832 px)"),
        FLAG_STR(
            "--student", &student,
            "tmd: the student checkpoint (./train_tmd --stage stage1 or stage2); dmd2v: a --stage baseline checkpoint"),
        FLAG_INT("--M", &M, "tmd, dmd2v: outer steps"),
        FLAG_INT("--N", &N, "tmd: inner (flow-head) steps"),
        FLAG_INT("--head-blocks", &H, "tmd: H, the flow head's DiT blocks (as trained)"),
        FLAG_STR("--prompts", &prompts,
                 "a prompt file (one a line): tmd, dmd2v: a VBench-style suite into the directory --out; teacher: the "
                 "prompts of --dataset"),
        FLAG_STR("--extended", &extended,
                 "with --prompts: generate from these prompts (line for line), name files by the originals"),
        FLAG_STR("--info", &info, "with --prompts: VBench_full_info.json (25 videos for temporal_flickering prompts)"),
        FLAG_STR("--dataset", &dataset,
                 "teacher with --prompts: write the teacher's samples, contexts and the negative prompt's as a dataset "
                 "directory "
                 "for ./train_tmd --data (shards + manifest; resumable; under mpirun each rank makes its share)"),
        FLAG_INT_R("--shard-size", &shard_size, 1, 1 << 20,
                   "--dataset: samples per shard file (and KD pairs per chunk file with --kd-pairs)"),
        FLAG_INT_R("--kd-pairs", &kd_pairs, 0, INT_MAX,
                   "--dataset: also make the KD warm-up's P teacher ODE pairs from the finished dataset, as train_tmd "
                   "--stage kd "
                   "--data DIR --seed SEED makes them (same --seed): chunks (resumable, split over mpirun ranks), "
                   "assembled to DIR/kd_pairs.safetensors for "
                   "train_tmd --kd-cache (0: none)"),
        FLAG_STR("--kd-weights", &kd_weights,
                 "--kd-pairs: the teacher of the train_tmd run the pairs are for (its --weights), when it is not the "
                 "dataset's "
                 "(e.g. a 1.3B distilled on a 14B-made dataset; default: the dataset's teacher)"),
        FLAG_INT_R("--kd-sampler-steps", &kd_sampler_steps, -1, 10000,
                   "--kd-pairs: the teacher's UniPC steps (-1: train_tmd's stage table: 50 for a Wan2.1 teacher, 16 "
                   "otherwise)"),
        FLAG_DOUBLE_R(
            "--kd-cfg", &kd_cfg, -1, 100,
            "--kd-pairs: the teacher's CFG scale (-1: the stage table's: Table 7's 5 for Wan2.1, 2 otherwise)"),
        FLAG_DOUBLE_R("--kd-shift", &kd_shift, -1, 100,
                      "--kd-pairs: the teacher sampler's shift (-1: the stage table's: 5 for Wan2.1, 3 otherwise)"),
        FLAG_INT_R("--kd-skip-layer", &kd_skip_layer, -2, 1000,
                   "--kd-pairs: skip-layer guidance, the block dropped from the unconditional forward (-1: none; "
                   "-2: the stage table's: Table 7's 10 for Wan2.1, none otherwise)"),
        FLAG_STR("--vae", &vopt.vae,
                 "the Wan2.1 VAE (.safetensors): decode every sample on the GPU to NAME.mp4 (NAME-b.mp4 in a batch; "
                 "{prompt}-{i}.mp4 with --prompts) through ffmpeg (default with --wan: its vae/)"),
        FLAG_SWITCH("--vae-raw", &vopt.raw,
                    "the latents (read by --vae/--decode, written by --encode) are the VAE's own (diffusers' decode "
                    "input), not the DiT's normalized ones"),
        FLAG_INT_R("--fps", &vopt.fps, 0, 240,
                   "frames per second of the mp4 (0: 16 for --vae videos as Wan2.1 makes them, 4 for the built-in "
                   "world's clips)"),
        FLAG_STR("--decode", &decode,
                 "instead of sampling: decode these latents (.npy [B, C, T, h, w] or [C, T, h, w]) with --vae to mp4 "
                 "beside --out"),
        FLAG_STR("--encode", &encode,
                 "instead of sampling: encode this video (.npy [3, T, H, W] in [-1, 1], or .mp4) with --vae on the GPU "
                 "into its "
                 "latent .npy at --out (normalized as the DiT sees it; --vae-raw: the VAE's own)"),
        FLAG_END};
    int rc = flags_parse(flags, argc, argv, 1, "usage: ./sample_tmd [flags]");
    int world_fps = vopt.fps ? vopt.fps : 4;
    if (!vopt.fps) vopt.fps = 16;
    if (rc) return rc == 1 ? 0 : 2;
    if (strcmp(mode, "teacher") && strcmp(mode, "tmd") && strcmp(mode, "dmd2v")) {
        fprintf(stderr, "error: --mode '%s': expected teacher, tmd or dmd2v\n", mode);
        return 2;
    }
    if (strcmp(solver, "unipc") && strcmp(solver, "euler")) {
        fprintf(stderr, "error: --solver '%s': expected unipc or euler\n", solver);
        return 2;
    }
    if (batch < 1 || steps < 1) {
        fprintf(stderr, "error: need --batch >= 1 and --steps >= 1\n");
        return 2;
    }
    if (decode) return decode_latents(&vopt, decode, out);
    if (encode) return encode_video(&vopt, encode, out);
    char err[ST_ERRLEN];
    int real_prompts = wan || text_encoder || tokenizer;
    if (prompt && prompts) {
        fprintf(stderr, "error: give --prompt or --prompts, not both\n");
        return 2;
    }
    if (dataset && (strcmp(mode, "teacher") || !prompts)) {
        fprintf(stderr, "error: --dataset makes the teacher's dataset: --mode teacher --prompts FILE --dataset DIR\n");
        return 2;
    }
    if (kd_weights && !kd_pairs) {
        fprintf(stderr, "error: --kd-weights is the teacher of --kd-pairs: add --kd-pairs P\n");
        return 2;
    }
    if (kd_pairs && !dataset) {
        fprintf(stderr, "error: --kd-pairs makes the KD pairs beside a dataset: add --dataset DIR (with --mode teacher "
                        "--prompts FILE)\n");
        return 2;
    }
    if (!strcmp(mode, "teacher") && prompts && !dataset) {
        fprintf(stderr,
                "error: the teacher takes --prompts only with --dataset DIR (a VBench suite: --mode tmd or dmd2v)\n");
        return 2;
    }
    if (real_prompts && !prompt && !prompts && !bench) {
        fprintf(stderr, "error: a real model needs --prompt \"...\" or --prompts FILE\n");
        return 2;
    }
    if (!prompt)
        prompt =
            "big red circle moving right slow on black"; // a caption of the built-in world's grammar (world_caption)

    // 1. real prompts: the parts, the DiT's config from its header, the checks, every prompt encoded (and cached)
    //    before any GPU memory goes to the DiT
    PromptCtx pc;
    Conditioning cond;
    WanConfig pcfg;
    KdPairSettings kd_set;
    memset(&kd_set, 0, sizeof(kd_set)); // --kd-pairs
    int rank = env_int("OMPI_COMM_WORLD_RANK", "PMI_RANK", 0),
        world = env_int("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", 1); // mpirun's
    char** lines = NULL;
    int n_lines = 0;
    if (prompts && vb_read_lines(extended ? extended : prompts, &lines, &n_lines, err)) {
        fprintf(stderr, "error: %s\n", err);
        return 2;
    }
    if (real_prompts && !bench) {
        WanParts parts;
        if (wan_parts_find(&parts, wan, weights, text_encoder, tokenizer, vopt.vae, preset ? "et" : "det", err)) {
            fprintf(stderr, "error: %s\n", err);
            return 2;
        }
        if (!weights && parts.transformer[0]) weights = strdup(parts.transformer);
        if (!vopt.vae && parts.vae[0] && !dataset) vopt.vae = strdup(parts.vae);
        if ((rc = train_data_peek_config(&pcfg, preset, weights, heads, err))) {
            fprintf(stderr, "error: %s\n", err);
            return 2;
        }
        if (kd_pairs && kd_settings(&kd_set, dataset, &pcfg, kd_weights, heads, kd_pairs, seed, kd_sampler_steps,
                                    kd_cfg, kd_shift, kd_skip_layer))
            return 2; // before umT5's GPU work
        if (!negative) negative = WAN_NEGATIVE_PROMPT;
        if (!strcmp(mode, "teacher")) { // the official Wan2.1 sampler (generate.py: t2v 50 steps, shift 5.0, guide
                                        // scale 5.0, UniPC)
            if (!flag_given(argc, argv, "--steps")) steps = 50;
            if (!flag_given(argc, argv, "--shift")) shift = 5.0;
            if (!flag_given(argc, argv, "--cfg")) cfg = 5.0;
        }
        char root[1024];
        if (ctx_cache && !strcmp(ctx_cache, "none"))
            root[0] = 0;
        else if (ctx_cache)
            snprintf(root, sizeof(root), "%s", ctx_cache);
        else
            snprintf(root, sizeof(root), "%s/.cache/tmd/contexts", getenv("HOME") ? getenv("HOME") : ".");
        stage_begin();
        if (pc_open(&pc, parts.text_encoder, parts.tokenizer, root, pcfg.text_len, pcfg.text_dim, umt5_backend(),
                    err)) {
            fprintf(stderr, "error: %s\n", err);
            return 2;
        }
        printf("prompts: tokenizer %s (%d pieces), text encoder %s, contexts [%d, %d], cache %s\n", parts.tokenizer,
               pc.sp.n_pieces, parts.text_encoder, pcfg.text_len, pcfg.text_dim, root[0] ? pc.cache.dir : "off");
        // this run's prompts: the one prompt, the suite's generation prompts, or this rank's share of the dataset; and
        // the negative
        const char** todo = (const char**)malloc(sizeof(char*) * (size_t)(n_lines + 2));
        int n_todo = 0;
        todo[n_todo++] = negative;
        if (!prompts) todo[n_todo++] = prompt;
        for (int i = 0; i < n_lines; i++)
            if (!dataset || lds_shard_mine(i / shard_size, rank, world)) todo[n_todo++] = lines[i];
        if (pc_encode(&pc, todo, n_todo, NULL, NULL, err)) {
            fprintf(stderr, "error: %s\n", err);
            return 1;
        }
        free(todo);
        pc_release_encoder(&pc);
        printf("prompts: %d contexts (%d from the cache, %d encoded in %.2f s)%s\n", n_todo, pc.hits, pc.misses,
               pc.encode_s,
               pc.truncated_prompts ? "; some prompts were cut to the context length (warnings above)" : "");
        stage_end("tokenizer + umT5");
    }
    if (!negative) negative = "";
    SampleOpts so = {steps, shift, cfg, strcmp(solver, "euler") ? SOLVER_UNIPC : SOLVER_EULER, GRID_UNIPC, 1};
    LdsPlan plan;
    memset(&plan, 0, sizeof(plan));
    if (dataset) { // the plan, and a directory of another model or plan refused, before any GPU work
        char fp[40], info_s[1024];
        if (!weights) {
            fprintf(stderr, "error: --dataset needs the teacher: --wan DIR or --weights FILE\n");
            return 2;
        }
        if (!real_prompts && (rc = train_data_peek_config(&pcfg, preset, weights, heads, err))) {
            fprintf(stderr, "error: %s\n", err);
            return 2;
        }
        if (cond_init(&cond, real_prompts ? &pc : NULL, &pcfg, lat_t, lat_h, lat_w, err) ||
            dataset_fingerprint(fp, weights, &cond, &so, negative, err)) {
            fprintf(stderr, "error: %s\n", err);
            return 2;
        }
        snprintf(info_s, sizeof(info_s),
                 "sample_tmd --mode teacher: weights %s, %s %d steps, shift %g, cfg %g, latent [%d, %d, %d, %d], seed "
                 "%d, prompts %s",
                 weights, solver, steps, shift, cfg, cond.wc.C, cond.wc.T, cond.wc.H, cond.wc.W, seed, prompts);
        if (lds_plan_make(&plan, (const char* const*)lines, n_lines, (uint64_t)seed, shard_size, fp, info_s, err) ||
            lds_manifest_sync(dataset, &plan, err)) {
            fprintf(stderr, "error: %s\n", err);
            return 2;
        }
        if (kd_pairs && !real_prompts &&
            kd_settings(&kd_set, dataset, &pcfg, kd_weights, heads, kd_pairs, seed, kd_sampler_steps, kd_cfg, kd_shift,
                        kd_skip_layer))
            return 2;
        int ndev = 0; // under mpirun: one GPU per rank
        if (cudaGetDeviceCount(&ndev) == cudaSuccess && ndev > 1) cudaCheck(cudaSetDevice(rank % ndev));
    }

    // 2. the DiT
    WanConfig c;
    real* params;
    stage_begin();
    rc = wan_gpu_program_model("sample_tmd", &c, &params, preset, weights, heads);
    if (rc) return rc;
    if (bench > 0) return bench_forward(&c, params, batch, lat_t, lat_h, lat_w, bench, (uint64_t)seed);
    if (cond_init(&cond, real_prompts ? &pc : NULL, &c, lat_t, lat_h, lat_w, err)) {
        fprintf(stderr, "error: %s%s\n", err,
                real_prompts ? "" : "; a real model needs --wan DIR or --text-encoder and --tokenizer");
        free(params);
        return 2;
    }
    if (strcmp(mode, "teacher")) {
        rc = sample_students(mode, &c, params, student, prompt, batch, M, N, H, seed, out, prompts, extended, info,
                             &vopt, world_fps, &cond);
        free(params);
        if (real_prompts) pc_close(&pc);
        return rc;
    }
    if (!params) {
        fprintf(stderr, "error: sampling needs --weights (a trained teacher, e.g. from ./train_tmd)\n");
        return 2;
    }
    gemm_init();
    const WorldConfig* wc = &cond.wc;
    TeacherRun t;

    if (dataset) { // 3'. the paper's dataset recipe
        if (teacher_run_init(&t, &c, params, batch, &cond, &so, err)) {
            fprintf(stderr, "error: %s\n", err);
            return 1;
        }
        uint64_t teacher_hash = kd_teacher_hash(
            params, wan_num_params(&c)); // --kd-pairs: the fingerprint train_tmd takes of the same weights
        free(params);
        stage_end("DiT load");
        float* neg = (float*)malloc(sizeof(float) * t.nctx);
        int neg_rows = 0;
        if (cond_context(&cond, negative, neg, &neg_rows, err)) {
            fprintf(stderr, "error: %s\n", err);
            return 1;
        }
        DatasetMaker dm;
        memset(&dm, 0, sizeof(dm));
        dm.t = &t;
        dm.negative = negative;
        LdsSource src = {wc->C, wc->T, wc->H,    wc->W,           c.text_dim,      c.text_len,
                         batch, neg,   neg_rows, dataset_latents, dataset_context, &dm};
        printf("dataset %s: %lld prompts in %d shards of %d, rank %d of %d; the teacher: %s %d steps, shift %g, cfg "
               "%g, negative prompt: %s\n",
               dataset, (long long)plan.n, plan.n_shards, shard_size, rank, world, solver, steps, shift, cfg,
               negative == WAN_NEGATIVE_PROMPT ? "the official Wan2.1 one"
               : negative[0]                   ? negative
                                               : "the empty caption");
        LdsReport rep;
        stage_begin();
        rc = lds_run(dataset, &plan, rank, world, &src, &rep, err);
        if (rc) fprintf(stderr, "error: %s\n", err);
        printf("dataset %s: rank %d of %d: %d of %d shards are this rank's, %d were already there, %d made now; DiT "
               "time %.2f s\n",
               dataset, rank, world, rep.mine, rep.shards, rep.already, rep.made, t.dit_s);
        stage_end("teacher (dataset)");
        if (!rc && kd_pairs) {
            stage_begin();
            t.dit_s = 0;
            WanConfig kc = c;
            if (kd_weights) { // the pairs' teacher takes the dataset teacher's place on the device
                real* kp = NULL;
                teacher_run_free(&t);
                printf("KD pairs: the teacher from --kd-weights %s\n", kd_weights);
                if ((rc = wan_gpu_program_model("sample_tmd", &kc, &kp, NULL, kd_weights, heads)) || !kp) {
                    free(neg);
                    return rc ? rc : 2;
                }
                teacher_hash = kd_teacher_hash(kp, wan_num_params(&kc));
                if (teacher_run_init(&t, &kc, kp, batch, &cond, &so, err)) {
                    fprintf(stderr, "error: %s\n", err);
                    free(kp);
                    return 1;
                }
                free(kp);
            }
            rc = dataset_kd_pairs(dataset, &plan, &t, &kc, &kd_set, teacher_hash, shard_size, rank, world);
            printf("KD pairs: DiT time %.2f s\n", t.dit_s);
            stage_end("teacher (KD pairs)");
        }
        free(neg);
        lds_plan_free(&plan);
        teacher_run_free(&t);
        gemm_free();
        if (real_prompts) pc_close(&pc);
        vb_free_lines(lines, n_lines);
        return rc ? 1 : 0;
    }

    // 3. the teacher on one prompt: a batch of samples, then the VAE and the mp4
    VideoOut vo; // --vae: checked before sampling
    if (vopt.vae && video_out_init(&vo, &vopt, wc->C, wc->T, wc->H, wc->W, err)) {
        fprintf(stderr, "error: %s\n", err);
        free(params);
        return 2;
    }
    if (teacher_run_init(&t, &c, params, batch, &cond, &so, err)) {
        fprintf(stderr, "error: %s\n", err);
        return 1;
    }
    free(params);
    stage_end("DiT load");
    // the prompt for every sample; the negative prompt (or the world's empty caption: zeros) for the uncond pass
    if (cond_context(&cond, prompt, t.hc, NULL, err) || cond_context(&cond, negative, t.hu, NULL, err)) {
        fprintf(stderr, "error: %s\n", err);
        return 1;
    }
    for (int b = 1; b < batch; b++) {
        memcpy(t.hc + b * t.nctx, t.hc, sizeof(float) * t.nctx);
        memcpy(t.hu + b * t.nctx, t.hu, sizeof(float) * t.nctx);
    }
    float* x = (float*)malloc(sizeof(float) * t.n);
    Rng r = rng_make((uint64_t)seed);
    for (size_t i = 0; i < t.n; i++) x[i] = (float)rng_normal(&r);
    int nfe = 0;
    printf("sampling %d x '%s' (negative: %s), %s %d steps, shift %g, cfg %g\n", batch, prompt,
           negative == WAN_NEGATIVE_PROMPT ? "the official Wan2.1 one"
           : negative[0]                   ? negative
                                           : "the empty caption",
           solver, steps, shift, cfg);
    stage_begin();
    rc = teacher_run_sample(&t, x, &nfe, err);
    if (rc) {
        fprintf(stderr, "error: %s\n", err);
        return 1;
    }
    stage_end("DiT (teacher)");
    int64_t shape[5] = {batch, wc->C, wc->T, wc->H, wc->W};
    if (npy_write(out, x, 5, shape, err)) {
        fprintf(stderr, "error: %s\n", err);
        return 1;
    }
    printf("wrote %s [%d, %d, %d, %d, %d] (%d model evaluations)\n", out, batch, wc->C, wc->T, wc->H, wc->W, nfe);
    teacher_run_free(&t); // the VAE gets the DiT's room
    if (vopt.vae) {
        stage_begin();
        rc = videos_from_latents(&vo, x, batch, out);
        video_out_free(&vo);
        stage_end("VAE decode + mp4");
        if (rc) return rc;
    } else if (world_clip_outputs(out, x, batch, wc, prompt, world_fps))
        return 1;
    gemm_free();
    free(x);
    if (real_prompts) pc_close(&pc);
    if (lines) vb_free_lines(lines, n_lines);
    return 0;
}
