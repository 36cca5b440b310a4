// sample_tmd.cu: sampling on the GPU. Modes (--mode):
//   teacher   the teacher: Euler or the official UniPC bh2 (--solver), timestep shift, classifier-free guidance with the
//             negative prompt (or the empty caption); the solvers are cpu/teacher_cpu.h's, driving the GPU model
//   tmd       the TMD student (M outer × N inner steps, Algorithm 1) from a train_tmd stage checkpoint (--student)
//   dmd2v     a plain Wan student with the DMD2-v multi-step sampler (--weights); both print the effective NFE (Eq. 16)
//             and the DiT time per sample; --prompts FILE makes a VBench-style suite (lib/vbench.h): files
//             {prompt}-{i}.npy (latents; {prompt}-{i}.mp4 with --vae), 5 per prompt (25 for temporal_flickering
//             prompts with --info), a manifest with every seed, resumable
// --vae FILE: every sample is also decoded by the Wan2.1 VAE on the GPU and written as NAME.mp4 (NAME-b.mp4 in a batch)
// through ffmpeg; --decode LATENT.npy --vae FILE decodes existing latents without sampling; --encode VIDEO --vae FILE
// encodes a video (.npy [3, T, H, W] in [-1, 1], or .mp4) into its latent on the GPU (real videos into a dataset).
// Prompts are encoded by the built-in world's text encoder (the model must fit a built-in world; real umT5 contexts
// are a later issue). Output: the latents as .npy [batch, C, T, H, W] fp32 (the world's clips are in [-1, 1]).
#include "wan.h"                    // config, presets, parameter layout, safetensors weights I/O
#include "lib/flags.h"              // flag table: parser and usage from one place
#include "lib/npy.h"                // writing the samples
#include "world/world.h"            // the built-in world's text encoder and clip shapes
#include "kernels/common.cuh"       // cudaCheck, require_gpu, named allocations
#include "gpu/wan_gpu.cuh"          // the DiT on the GPU
#include "gpu/teacher_gpu.cuh"      // wan_gpu_velocity over cpu/teacher_cpu.h's solvers
#include "gpu/tmd_gpu.cuh"          // the TMD student and its sampler, the DMD2-v sampler
#include "gpu/train_state.h"        // reading the student from a train_tmd checkpoint
#include "lib/vbench.h"             // the VBench suite: names, seeds, manifest, resume
#include "gpu/video_out.cuh"        // --vae: latents -> the GPU VAE decoder -> mp4
#include "cpu/vae_cli.h"            // --encode: vae_read_mp4 (a video file's frames through ffmpeg)
#include "world/png.h"              // the built-in world's clips: a PNG contact sheet and an mp4

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
    if (!params) { params = (real*)malloc(sizeof(real) * np); wan_gpu_bench_weights(c, params, seed); }
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

// --vae: the B latents x [B, C, T, h, w] (host, the shape vo was made for) -> NAME.mp4 or NAME-b.mp4 beside out
static int videos_from_latents(VideoOut* vo, const float* x, int B, const char* out) {
    char err[ST_ERRLEN];
    size_t per = (size_t)vo->v.c.z_dim * vo->T * vo->g.h * vo->g.w;
    for (int b = 0; b < B; b++) {
        char mp4[4096]; video_out_name(mp4, sizeof(mp4), out, b, B);
        if (video_out_write(vo, x + b * per, mp4, err)) { fprintf(stderr, "error: %s\n", err); return 1; }
    }
    return 0;
}

// The built-in world's models make RGB clips [B, 3, T, H, W] in [-1, 1] directly (no VAE): beside OUT.npy also
// OUT.png (a contact sheet, one row of frames per sample, the caption under it) and OUT.mp4 when ffmpeg is on the
// PATH (one line when it is not). Latent-space models (Wan presets) get their video from --vae instead.
static int world_clip_outputs(const char* out, const float* x, int B, const WorldConfig* wc, const char* caption, int fps) {
    if (wc->C != 3) return 0;
    char err[ST_ERRLEN], base[4000], path[4096];
    size_t n = strlen(out);
    if (n >= sizeof(base)) { fprintf(stderr, "error: --out path too long (%zu bytes)\n", n); return 1; }
    memcpy(base, out, n + 1);
    if (n > 4 && !strcmp(base + n - 4, ".npy")) base[n - 4] = 0;
    const char** caps = (const char**)malloc(sizeof(char*) * B);
    for (int b = 0; b < B; b++) caps[b] = caption;
    snprintf(path, sizeof(path), "%s.png", base);
    int rc = png_write_sheet(path, x, B, wc->T, wc->H, wc->W, caps, 0, err);
    if (rc) fprintf(stderr, "error: %s\n", err);
    else printf("wrote %s (contact sheet)\n", path);
    snprintf(path, sizeof(path), "%s.mp4", base);
    int m = rc ? 0 : png_write_mp4(path, x, B, wc->T, wc->H, wc->W, caps, fps, err);
    if (m == 2) printf("no mp4: ffmpeg is not on the PATH (install ffmpeg for %s; the .npy and .png are written)\n", path);
    else if (m) { fprintf(stderr, "error: %s\n", err); rc = 1; }
    else if (!rc) printf("wrote %s\n", path);
    free(caps);
    return rc;
}

// --decode: latents already on disk (sample_tmd's [B, C, T, h, w] or one [C, T, h, w]) -> mp4 beside --out
static int decode_latents(const VideoOutOpts* vopt, const char* path, const char* out) {
    char err[ST_ERRLEN];
    if (!vopt->vae) { fprintf(stderr, "error: --decode needs --vae FILE (the Wan2.1 VAE: diffusers' vae/diffusion_pytorch_model.safetensors)\n"); return 2; }
    if (!mp4_have_ffmpeg()) { fprintf(stderr, "error: --decode writes mp4 and needs ffmpeg on the PATH (install ffmpeg; ./test_tmd vae decode writes .npy without it)\n"); return 2; }
    float* z = NULL; int nd = 0; int64_t sh[ST_MAXDIM];
    if (npy_read(path, &z, &nd, sh, err)) { fprintf(stderr, "error: %s\n", err); return 1; }
    if (nd != 4 && nd != 5) {
        char got[256]; st_shape_str(got, nd, sh);
        fprintf(stderr, "error: %s: shape %s; expected latents [B, C, T, h, w] (what sample_tmd writes) or one latent [C, T, h, w]\n", path, got);
        free(z); return 1;
    }
    const int64_t* d = sh + (nd == 5);
    require_gpu("sample_tmd");
    VideoOut vo;
    if (video_out_init(&vo, vopt, (int)d[0], (int)d[1], (int)d[2], (int)d[3], err)) { fprintf(stderr, "error: %s\n", err); free(z); return 2; }
    int rc = videos_from_latents(&vo, z, nd == 5 ? (int)sh[0] : 1, out);
    video_out_free(&vo); free(z);
    return rc;
}

// --encode: a video (.npy [3, T, H, W] in [-1, 1], or an .mp4 read through ffmpeg) -> the VAE encoder on the GPU ->
// its latent [z_dim, T', H/8, W/8] written to --out (.npy): the DiT's normalized latent, or the VAE's own with --vae-raw
static int encode_video(const VideoOutOpts* vopt, const char* path, const char* out) {
    char err[ST_ERRLEN];
    if (!vopt->vae) { fprintf(stderr, "error: --encode needs --vae FILE (the Wan2.1 VAE: diffusers' vae/diffusion_pytorch_model.safetensors)\n"); return 2; }
    float* x = NULL; int T = 0, H = 0, W = 0;
    if (st_ends_with(path, ".mp4")) {
        double* xd = NULL;
        if (vae_read_mp4(path, &xd, &T, &H, &W, err)) { fprintf(stderr, "error: %s\n", err); return 1; }
        size_t n = (size_t)3 * T * H * W;
        x = (float*)malloc(sizeof(float) * n);
        for (size_t i = 0; i < n; i++) x[i] = (float)xd[i];
        free(xd);
    } else {
        int nd = 0; int64_t sh[ST_MAXDIM];
        if (npy_read(path, &x, &nd, sh, err)) { fprintf(stderr, "error: %s\n", err); return 1; }
        if (nd != 4 || sh[0] != 3) {
            char got[256]; st_shape_str(got, nd, sh);
            fprintf(stderr, "error: %s: video of shape %s, expected [3, T, H, W] in [-1, 1] (RGB first, no batch axis), or an .mp4\n", path, got);
            free(x); return 1;
        }
        T = (int)sh[1]; H = (int)sh[2]; W = (int)sh[3];
    }
    Vae v;
    if (vae_load(&v, vopt->vae, NULL, err)) { fprintf(stderr, "error: %s\n", err); free(x); return 1; }
    int s = vae_spatial_factor(&v.c), Tl = vae_encoded_frames(&v.c, T);
    if (T < 1 || (T - 1) % VAE_CHUNK || H < s || W < s || H % s || W % s) {   // before any GPU work
        fprintf(stderr, "error: %s: video [3, %d, %d, %d]; the encoder takes 1 + 4k frames (1, 5, ..., 81) of a multiple of %d pixels "
                "on each side; trim the video to %d frames and crop it to %dx%d\n", path, T, H, W, s, T < 1 ? 1 : 1 + (T - 1) / VAE_CHUNK * VAE_CHUNK,
                H / s * s, W / s * s);
        free(x); vae_free(&v); return 2;
    }
    if (!vopt->raw && v.c.z_dim != 16) { fprintf(stderr, "error: this VAE has z_dim %d; the DiT's normalization is Wan2.1's (z_dim 16): add --vae-raw\n", v.c.z_dim); free(x); vae_free(&v); return 2; }
    require_gpu("sample_tmd");
    VaeGpu g;
    if (vae_gpu_init_encoder(&g, &v, H, W, err)) { fprintf(stderr, "error: %s\n", err); free(x); vae_free(&v); return 1; }
    size_t nz = (size_t)v.c.z_dim * Tl * (H / s) * (W / s);
    float* z = (float*)malloc(sizeof(float) * nz);
    printf("encode: video [3, %d, %d, %d] -> latent [%d, %d, %d, %d] (%s)\n", T, H, W, v.c.z_dim, Tl, H / s, W / s, vopt->raw ? "the VAE's own" : "normalized, as the DiT sees it");
    double t0 = now_s();
    int rc = vae_gpu_encode(&g, z, x, T, !vopt->raw, stdout, err);
    if (rc) fprintf(stderr, "error: %s\n", err);
    else {
        printf("encoded %d frames in %.2f s\n", T, now_s() - t0);
        vae_gpu_print_plan(&g, stdout);
        int64_t shape[4] = {v.c.z_dim, Tl, H / s, W / s};
        if ((rc = npy_write(out, z, 4, shape, err))) fprintf(stderr, "error: %s\n", err);
        else printf("wrote %s\n", out);
    }
    vae_gpu_free(&g); vae_free(&v); free(x); free(z);
    return rc ? 1 : 0;
}

// ---------------------------------------------------------------------------------------------------------
// the distilled students: TMD (Algorithm 1) and DMD2-v (App. A.3), one prompt or a VBench suite

typedef struct {
    int tmd, M, N, B;
    double gamma_outer;
    TmdGpuStudent* S; WanGpuModel* P;
    WanGpuAct a; TmdGpuRollout ro;
    WorldConfig wc; TextEncoder te;
    float *x, *y1, *ctx; float* hctx; float* hx;
    size_t n, nctx;
    double ms_total; int samples;
    VideoOut* vo;   // --vae with ffmpeg: the suite's files are mp4 (NULL: latents)
} StudentSampler;

// B samples of `prompt` from the Philox stream `seed` into s->hx (host); times the DiT part
static void student_sample(StudentSampler* s, const char* prompt, uint64_t seed) {
    memset(s->hctx, 0, sizeof(float) * s->nctx * s->B);
    text_encode(&s->te, prompt, s->hctx, NULL);
    for (int b = 1; b < s->B; b++) memcpy(s->hctx + b * s->nctx, s->hctx, sizeof(float) * s->nctx);
    cudaCheck(cudaMemcpy(s->ctx, s->hctx, sizeof(float) * s->nctx * s->B, cudaMemcpyHostToDevice));
    uint64_t offset = 0;
    normal_fill(s->x, s->n, seed, offset, 0.f, 1.f, 0); offset += s->n;
    cudaEvent_t e0, e1; cudaCheck(cudaEventCreate(&e0)); cudaCheck(cudaEventCreate(&e1));
    cudaCheck(cudaEventRecord(e0));
    if (s->tmd) tmd_gpu_sample(s->x, s->S, &s->a, &s->ro, s->y1, s->ctx, s->M, s->gamma_outer, seed, &offset);
    else dmd_gpu_sample(s->x, &s->P->w, &s->a, s->ctx, s->M, s->gamma_outer);
    cudaCheck(cudaEventRecord(e1)); cudaCheck(cudaEventSynchronize(e1));
    float ms; cudaCheck(cudaEventElapsedTime(&ms, e0, e1));
    s->ms_total += ms; s->samples += s->B;
    cudaCheck(cudaEventDestroy(e0)); cudaCheck(cudaEventDestroy(e1));
    cudaCheck(cudaMemcpy(s->hx, s->x, sizeof(float) * s->n, cudaMemcpyDeviceToHost));
}

// VbGenerateFn: one video of the suite, batch 1, noise from the job's seed, prompt from the (extended) line
static int student_vbench_video(void* ctx, const VbSuite* suite, const VbJob* job, const char* path, char* err) {
    StudentSampler* s = (StudentSampler*)ctx;
    student_sample(s, suite->gen_prompt[job->line], job->seed);
    if (s->vo) return video_out_write(s->vo, s->hx, path, err);
    int64_t shape[4] = {s->wc.C, s->wc.T, s->wc.H, s->wc.W};
    return npy_write(path, s->hx, 4, shape, err);
}

static int sample_students(const char* mode, const WanConfig* c, real* params, const char* student, const char* prompt, int batch, int M, int N,
                           int H, int seed, const char* out, const char* prompts, const char* extended, const char* info,
                           const VideoOutOpts* vopt, int world_fps) {
    char err[ST_ERRLEN];
    StudentSampler s; memset(&s, 0, sizeof(s));
    s.tmd = !strcmp(mode, "tmd"); s.M = M; s.N = N; s.B = prompts ? 1 : batch;
    s.gamma_outer = M >= 3 ? 5.0 : 10.0;   // App. B.6: γ = 10, 5 for M >= 3 (FastGen's outer grid)
    if (teacher_gpu_world_for(&s.wc, c, err)) { fprintf(stderr, "error: %s\n", err); return 2; }
    if (M < 1 || M > 64 || N < 1 || N > 64) { fprintf(stderr, "error: need 1 <= --M, --N <= 64\n"); return 2; }
    gemm_init();
    StudentConfig sc; sc.wan = *c; sc.head_blocks = H; sc.fusion = FUSION_GATED; sc.fuse_ffn_dim = c->ffn_dim;
    TmdGpuStudent S; WanGpuModel P;
    if (s.tmd) {
        if (!student) { fprintf(stderr, "error: --mode tmd needs --student FILE (a checkpoint of ./train_tmd --stage stage1 or stage2)\n"); return 2; }
        if (H < 1 || H >= c->num_layers) { fprintf(stderr, "error: --head-blocks %d: expected 1 .. %d\n", H, c->num_layers - 1); return 2; }
        size_t ns = student_num_params(&sc);
        float* hs = (float*)malloc(sizeof(float) * ns);
        TsBuffer b[1] = {{"student.params", hs, ns}}; TsMeta meta;
        if (ts_load(student, b, 1, &meta, err)) { fprintf(stderr, "error: %s\n", err); return 2; }
        tmd_gpu_student_init(&S, &sc, hs); free(hs); s.S = &S;
    } else {
        size_t nw = wan_num_params(c);
        float* hp = NULL;
        if (student) {   // a ./train_tmd --stage baseline checkpoint (the config comes from --weights or --preset)
            hp = (float*)malloc(sizeof(float) * nw);
            TsBuffer b[1] = {{"student.params", hp, nw}}; TsMeta meta;
            if (ts_load(student, b, 1, &meta, err)) { fprintf(stderr, "error: %s\n", err); return 2; }
        } else if (!params) { fprintf(stderr, "error: --mode dmd2v needs --student (a train_tmd --stage baseline checkpoint) or --weights (a Wan checkpoint)\n"); return 2; }
        wan_gpu_model_init(&P, c, hp ? hp : params, 0, "DMD2-v student"); s.P = &P;
        free(hp);
    }
    if (wan_gpu_act_init(&s.a, c, s.B, s.wc.C, s.wc.T, s.wc.H, s.wc.W, 0, err)) { fprintf(stderr, "error: %s\n", err); return 2; }
    if (s.tmd) rollout_gpu_init(&s.ro, &sc, &s.a, N, 10.0);
    s.te = world_text_encoder(&s.wc);
    s.nctx = (size_t)c->text_len * c->text_dim; s.n = world_clip_numel(&s.wc) * s.B;
    cudaCheck(cudaMalloc(&s.x, sizeof(float) * s.n)); cudaCheck(cudaMalloc(&s.y1, sizeof(float) * s.n)); cudaCheck(cudaMalloc(&s.ctx, sizeof(float) * s.nctx * s.B));
    s.hctx = (float*)malloc(sizeof(float) * s.nctx * s.B); s.hx = (float*)malloc(sizeof(float) * s.n);
    double nfe = s.tmd ? effective_nfe(M, N, H, c->num_layers) : (double)M;
    int rc = 0;
    VideoOut vo;
    if (vopt->vae) {   // checked before sampling; with --prompts the suite's files become mp4 (with ffmpeg; .npy without)
        if (video_out_init(&vo, vopt, s.wc.C, s.wc.T, s.wc.H, s.wc.W, err)) { fprintf(stderr, "error: %s\n", err); return 2; }
        if (prompts && vo.ffmpeg) s.vo = &vo;
    }
    if (prompts) {
        VbSuite suite; VbReport rep;
        if (vb_suite_load(&suite, prompts, extended, info, err)) { fprintf(stderr, "error: %s\n", err); return 2; }
        char gen[256]; snprintf(gen, sizeof(gen), "sample_tmd --mode %s M=%d N=%d H=%d config=%s student=%s", mode, M, N, H, c->name, s.tmd ? student : "--weights");
        rc = vb_run(&suite, out, s.vo ? ".mp4" : ".npy", (uint64_t)seed, gen, student_vbench_video, &s, 0, &rep, err);
        printf("VBench suite in %s: %d videos planned, %d already there, %d made now (%d duplicate prompt lines)\n", out, rep.planned, rep.already, rep.made, rep.duplicates);
        if (rc) fprintf(stderr, "error: %s\n", err);
        vb_suite_free(&suite);
    } else {
        student_sample(&s, prompt, (uint64_t)seed);
        int64_t shape[5] = {s.B, s.wc.C, s.wc.T, s.wc.H, s.wc.W};
        if (npy_write(out, s.hx, 5, shape, err)) { fprintf(stderr, "error: %s\n", err); rc = 1; }
        else printf("wrote %s [%d, %d, %d, %d, %d]\n", out, s.B, s.wc.C, s.wc.T, s.wc.H, s.wc.W);
        if (!rc && vopt->vae) rc = videos_from_latents(&vo, s.hx, s.B, out);
        if (!rc && !vopt->vae) rc = world_clip_outputs(out, s.hx, s.B, &s.wc, prompt, world_fps);
    }
    if (vopt->vae) video_out_free(&vo);
    if (s.samples) printf("%s M %d%s: effective NFE %.3f; DiT time %.2f ms per sample on this device (batch %d)\n", mode, M,
                          s.tmd ? "" : " (DMD2-v)", nfe, s.ms_total / s.samples, s.B);
    if (s.tmd) { rollout_gpu_free(&s.ro); tmd_gpu_student_free(&S); } else wan_gpu_model_free(&P);
    wan_gpu_act_free(&s.a); gemm_free();
    cudaCheck(cudaFree(s.x)); cudaCheck(cudaFree(s.y1)); cudaCheck(cudaFree(s.ctx)); free(s.hctx); free(s.hx);
    return rc;
}

int main(int argc, char** argv) {
    const char* preset = NULL;
    const char* weights = NULL;
    const char* mode = "teacher";
    const char* prompt = "big red circle moving right slow on black";   // a caption of the built-in world's grammar (world_caption)
    const char* negative = "";
    const char* solver = "unipc";
    const char* out = "samples.npy";
    int heads = 0, batch = 4, steps = 16, seed = 1, bench = 0, lat_t = 0, lat_h = 0, lat_w = 0;
    double shift = 3.0, cfg = 2.0;
    const char* student = NULL; const char* prompts = NULL; const char* extended = NULL; const char* info = NULL;
    int M = 2, N = 2, H = 2;
    const char* decode = NULL; const char* encode = NULL;
    VideoOutOpts vopt = {NULL, 0, 0};
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
        FLAG_STR("--student", &student, "tmd: the student checkpoint (./train_tmd --stage stage1 or stage2); dmd2v: a --stage baseline checkpoint"),
        FLAG_INT("--M", &M, "tmd, dmd2v: outer steps"),
        FLAG_INT("--N", &N, "tmd: inner (flow-head) steps"),
        FLAG_INT("--head-blocks", &H, "tmd: H, the flow head's DiT blocks (as trained)"),
        FLAG_STR("--prompts", &prompts, "tmd, dmd2v: a prompt file (one a line): a VBench-style suite into the directory --out"),
        FLAG_STR("--extended", &extended, "with --prompts: generate from these prompts (line for line), name files by the originals"),
        FLAG_STR("--info", &info, "with --prompts: VBench_full_info.json (25 videos for temporal_flickering prompts)"),
        FLAG_STR("--vae", &vopt.vae, "the Wan2.1 VAE (.safetensors): decode every sample on the GPU to NAME.mp4 (NAME-b.mp4 in a batch; "
                 "{prompt}-{i}.mp4 with --prompts) through ffmpeg"),
        FLAG_SWITCH("--vae-raw", &vopt.raw, "the latents (read by --vae/--decode, written by --encode) are the VAE's own (diffusers' decode input), not the DiT's normalized ones"),
        FLAG_INT_R("--fps", &vopt.fps, 0, 240, "frames per second of the mp4 (0: 16 for --vae videos as Wan2.1 makes them, 4 for the built-in world's clips)"),
        FLAG_STR("--decode", &decode, "instead of sampling: decode these latents (.npy [B, C, T, h, w] or [C, T, h, w]) with --vae to mp4 beside --out"),
        FLAG_STR("--encode", &encode, "instead of sampling: encode this video (.npy [3, T, H, W] in [-1, 1], or .mp4) with --vae on the GPU into its "
                 "latent .npy at --out (normalized as the DiT sees it; --vae-raw: the VAE's own)"),
        FLAG_END};
    int rc = flags_parse(flags, argc, argv, 1, "usage: ./sample_tmd [flags]");
    int world_fps = vopt.fps ? vopt.fps : 4;
    if (!vopt.fps) vopt.fps = 16;
    if (rc) return rc == 1 ? 0 : 2;
    if (strcmp(mode, "teacher") && strcmp(mode, "tmd") && strcmp(mode, "dmd2v")) { fprintf(stderr, "error: --mode '%s': expected teacher, tmd or dmd2v\n", mode); return 2; }
    if (strcmp(solver, "unipc") && strcmp(solver, "euler")) { fprintf(stderr, "error: --solver '%s': expected unipc or euler\n", solver); return 2; }
    if (batch < 1 || steps < 1) { fprintf(stderr, "error: need --batch >= 1 and --steps >= 1\n"); return 2; }
    if (decode) return decode_latents(&vopt, decode, out);
    if (encode) return encode_video(&vopt, encode, out);
    WanConfig c; real* params;
    rc = wan_gpu_program_model("sample_tmd", &c, &params, preset, weights, heads);
    if (rc) return rc;
    if (strcmp(mode, "teacher")) {
        rc = sample_students(mode, &c, params, student, prompt, batch, M, N, H, seed, out, prompts, extended, info, &vopt, world_fps);
        free(params); return rc;
    }
    if (bench > 0) return bench_forward(&c, params, batch, lat_t, lat_h, lat_w, bench, (uint64_t)seed);
    if (!params) { fprintf(stderr, "error: sampling needs --weights (a trained teacher, e.g. from ./train_tmd)\n"); return 2; }
    WorldConfig wc; char err[ST_ERRLEN];
    if (teacher_gpu_world_for(&wc, &c, err)) { fprintf(stderr, "error: %s\n", err); free(params); return 2; }

    gemm_init();
    VideoOut vo;   // --vae: checked before sampling
    if (vopt.vae && video_out_init(&vo, &vopt, wc.C, wc.T, wc.H, wc.W, err)) { fprintf(stderr, "error: %s\n", err); free(params); return 2; }
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
    if (vopt.vae) { rc = videos_from_latents(&vo, x, batch, out); video_out_free(&vo); if (rc) return rc; }
    else if (world_clip_outputs(out, x, batch, &wc, prompt, world_fps)) return 1;
    wan_gpu_act_free(&a); wan_gpu_model_free(&m); gemm_free();
    cudaCheck(cudaFree(d_cond)); cudaCheck(cudaFree(d_uncond)); cudaCheck(cudaFree(d_x));
    free(hc); free(hu); free(x); free(stage);
    return 0;
}
