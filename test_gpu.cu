// test_gpu.cu: the GPU model against the CPU reference (its oracle) at a tiny size. `make test` runs it when nvcc is
// found; on a machine without a usable GPU it prints one line saying the checks were skipped and exits 0.
//   ./test_gpu                  forward output, every parameter gradient, the latent and context gradients, the
//                               partial backward (backbone with injected feature and context gradients), one AdamW
//                               step; then per-block activation recompute against keeping every activation (memcmp,
//                               every training pass: gpu/recompute_tests.cuh) and the TMD steps, each also with
//                               recompute on
//   ./test_gpu --recompute 1    the whole-model parity above with recompute on
//   ./test_gpu --frozen-only    only the frozen-model check (also in the default run): a frozen model, which keeps fp32
//                               only for the tensors read in fp32 in the bf16 build, = a trainable one, bit for bit
//   ./test_gpu --umt5-only      only the umT5 text encoder against the CPU reference (gpu/umt5_gpu_tests.cuh; also in
//                               the default run; --umt5-small leaves out the 500-token peer case)
//   ./test_gpu --help           flags (a preset instead of the built-in tiny parity config, the batch, the seed)
// The CPU reference runs in double, one sample at a time; the GPU runs the whole batch at once. Every comparison prints
// max abs error, max |reference| and their ratio, the relative error of the tensor as a whole, against a tolerance:
//   fp32 build (PRECISION=FP32): 1e-5 (the issue's bar; fp32 math in a different order than the double reference,
//     ~1e-7 per operation, through a few hundred operations in series; the fp32 build is compiled without
//     --use_fast_math, whose approximate tanh/exp/division would sit on this tolerance by themselves).
//   bf16 build: 5e-2. Every floatX tensor is rounded to 8 significant bits (relative error up to 2^-9 ≈ 2e-3 each);
//     a block's path has ~10 such roundings in series (LN out, q/k/v, RMSNorm out, RoPE, attention out, o-proj, FFN
//     hidden, ...), two blocks and the text embedding about 25: as independent errors they add to ~√25·2e-3 ≈ 1e-2
//     of the tensor's scale, and gradients (products of two rounded operands: activations and output gradients)
//     about twice that. 5e-2 leaves a factor ~2.5 over that estimate and is still 20x below what a wrong formula
//     gives (a sign or a missing term is O(1)). The AdamW step is fp32 in both builds (1e-5).
#define WAN_REAL double
#include "wan.h"                   // config, presets, parameter layout
#include "lib/flags.h"             // flag table: parser and usage
#include "lib/rng.h"               // splitmix64 for the random parameters and inputs
#include "lib/testing.h"           // EXPECT, expect_close_scaled
#include "lib/random_params.h"     // random_params: the tests' one recipe for parameters
#include "cpu/wan_cpu.h"           // the CPU reference: the oracle
#include "cpu/teacher_cpu.h"       // adamw_step: the optimizer's oracle
#include "gpu/wan_gpu.cuh"         // the model under test
#include "kernels/adamw.cuh"       // the GPU AdamW
#include "gpu/tmd_gpu_tests.cuh"   // TMD: the student and its training steps vs the CPU reference
#include "gpu/vae_gpu_tests.cuh"   // the VAE decoder vs the CPU reference
#include "gpu/umt5_gpu_tests.cuh"  // the umT5 text encoder vs the CPU reference
#include "gpu/recompute_tests.cuh" // activation recompute: bit-identical gradients with and without it
#include "gpu/shard_gpu.cuh"       // the sharded optimizer step: one rank equals the plain step

#ifdef ENABLE_FP32
#define PARITY_TOL 1e-5
#else
#define PARITY_TOL 5e-2
#endif

// the built-in parity config: every dimension distinct, two blocks, head dim 16, 32 tokens per sample, small enough for
// a functional simulator (a few hundred thousand threads per forward+backward)
static const WanConfig PARITY_CONFIG = {"parity", 64, 96, 32, 4, 2, 3, 3, {1, 2, 2}, 6, 24, 1e-6};

static double* dalloc(size_t n) {
    double* p = (double*)calloc(n ? n : 1, sizeof(double));
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    return p;
}
static float* falloc(size_t n) {
    float* p = (float*)calloc(n ? n : 1, sizeof(float));
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    return p;
}
static float* to_device(const double* h, size_t n) {
    float* f = falloc(n);
    for (size_t i = 0; i < n; i++) f[i] = (float)h[i];
    float* d;
    cudaCheck(cudaMalloc(&d, sizeof(float) * (n ? n : 1)));
    cudaCheck(cudaMemcpy(d, f, sizeof(float) * n, cudaMemcpyHostToDevice));
    free(f);
    return d;
}
static double* from_device(const float* d, size_t n) {
    float* f = falloc(n);
    double* h = dalloc(n);
    cudaCheck(cudaDeviceSynchronize());
    cudaCheck(cudaMemcpy(f, d, sizeof(float) * n, cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < n; i++) h[i] = f[i];
    free(f);
    return h;
}
static float* device_zeros(size_t n) {
    float* d;
    cudaCheck(cudaMalloc(&d, sizeof(float) * (n ? n : 1)));
    cudaCheck(cudaMemset(d, 0, sizeof(float) * (n ? n : 1)));
    return d;
}

// every parameter tensor of two gradient buffers, one line each
static void compare_params(const WanConfig* c, const char* what, const double* gpu, const double* cpu, double tol) {
    WanTensor* tl = (WanTensor*)malloc(sizeof(WanTensor) * WAN_MAX_TENSORS);
    int nt = wan_layout(c, tl, NULL, NULL, NULL);
    for (int i = 0; i < nt; i++) {
        char name[160];
        snprintf(name, sizeof(name), "%s %s", what, tl[i].name);
        expect_close_scaled(name, gpu + tl[i].offset, cpu + tl[i].offset, (long)tl[i].numel, tol);
    }
    free(tl);
}

// the GPU's context gradient [B, text_len, text_dim] against the CPU's per-sample [Lt_b, text_dim] (caption rows only:
// the CPU reference does not differentiate the constant padding)
static void compare_ctx_grad(const char* name, const double* gpu, double* const* cpu, const int* Lt, int B,
                             const WanConfig* c, double tol) {
    size_t rows = 0;
    for (int b = 0; b < B; b++) rows += Lt[b];
    double* g = dalloc(rows * c->text_dim);
    double* r = dalloc(rows * c->text_dim);
    size_t o = 0;
    for (int b = 0; b < B; b++) {
        memcpy(g + o, gpu + (size_t)b * c->text_len * c->text_dim, sizeof(double) * Lt[b] * c->text_dim);
        memcpy(r + o, cpu[b], sizeof(double) * Lt[b] * c->text_dim);
        o += (size_t)Lt[b] * c->text_dim;
    }
    expect_close_scaled(name, g, r, (long)(rows * c->text_dim), tol);
    free(g);
    free(r);
}

// A frozen model (the Stage 2 teacher's form) against a trainable one of the same weights. In the bf16 build the
// frozen one keeps fp32 only for the tensors the GPU reads in fp32 (gpu/frozen_weights.h): its other P views must be
// NULL (a missed reader then faults instead of reading stale memory), its fp32 tensors and its whole floatX copy must
// be the trainable model's bits, and the forward and the input gradients (the GAN loss's path: dW NULL, d latent and d
// context) must be bit for bit the same. The fp32 build keeps everything (P == X): the same comparisons hold.
// the sharded optimizer on one rank (the identity layout, gpu/shard_gpu.cuh) against train_tmd's plain step (the norm
// over the whole gradient, the clip factor, adamw_update over the whole buffer): weights, moments and the bf16 copy bit
// for bit after three clipped steps. Several ranks: dev/mpi/shard_step_test.c on host buffers (make test-mpi).
static void test_shard_opt_one_rank(const WanConfig* c, uint64_t seed) {
    printf("\n[shard] the sharded optimizer step on one rank against the plain AdamW step, bit for bit\n");
    char err[256];
    ShardLayout L;
    EXPECT(shard_layout_wan(&L, c, 0, 1, 64, err, sizeof(err)) == 0, "%s", err);
    size_t n = L.numel;
    Rng r = rng_make(seed);
    float* h = falloc(n);
    float *p[2], *g, *m[2], *v[2];
    floatX* x[2];
    for (size_t i = 0; i < n; i++) h[i] = (float)(0.1 * rng_normal(&r)); // the gradient, the same for both
    cudaCheck(cudaMalloc(&g, sizeof(float) * n));
    cudaCheck(cudaMemcpy(g, h, sizeof(float) * n, cudaMemcpyHostToDevice));
    for (size_t i = 0; i < n; i++) h[i] = (float)rng_normal(&r); // the weights, two copies
    for (int k = 0; k < 2; k++) {
        cudaCheck(cudaMalloc(&p[k], sizeof(float) * n));
        cudaCheck(cudaMemcpy(p[k], h, sizeof(float) * n, cudaMemcpyHostToDevice));
        m[k] = device_zeros(n);
        v[k] = device_zeros(n);
        cudaCheck(cudaMalloc(&x[k], sizeof(floatX) * n));
    }
    free(h);
    Comm one;
    memset(&one, 0, sizeof(one));
    one.world = 1;
    one.host.world = 1; // one rank: no collective runs, MPI untouched
    ShardOpt o;
    shard_opt_init(&o, &one, &L, p[1], g, m[1], v[1], 0);
    double* scratch;
    cudaCheck(cudaMalloc(&scratch, sizeof(double) * (ADAMW_NORM_BLOCKS + 1)));
    double gn0 = 0, gn1 = 0;
    for (long step = 1; step <= 3; step++) {
        // train_tmd.cu tmd_adamw_ with gscale 1, clip 1 (the gradient's norm is ~0.1·sqrt(n): clipping active)
        adamw_grad_norm_squared(scratch, scratch + 1, g, n, 0);
        double n2;
        cudaCheck(cudaMemcpy(&n2, scratch, sizeof(double), cudaMemcpyDeviceToHost));
        gn0 = sqrt(n2);
        double k = fmin(1.0, 1.0 / (gn0 + 1e-6));
#ifdef ENABLE_FP32
        floatX* cx = NULL;
#else
        floatX* cx = x[0];
#endif
        adamw_update(p[0], cx, m[0], v[0], g, n, (float)1e-3, 0.9f, 0.99f, 1e-8f, (float)0.01, (float)k, step, 0);
        shard_opt_step(&o, &one, p[1], x[1], g, 1e-3, 0.01, 1.0, step, 1.0, scratch, &gn1, 0);
    }
    size_t differ = 0;
    float* a = falloc(n);
    float* b = falloc(n);
    float* bufs[3][2] = {{p[0], p[1]}, {m[0], m[1]}, {v[0], v[1]}};
    for (int q = 0; q < 3; q++) {
        cudaCheck(cudaMemcpy(a, bufs[q][0], sizeof(float) * n, cudaMemcpyDeviceToHost));
        cudaCheck(cudaMemcpy(b, bufs[q][1], sizeof(float) * n, cudaMemcpyDeviceToHost));
        differ += memcmp(a, b, sizeof(float) * n) != 0;
    }
#ifndef ENABLE_FP32
    floatX* ax = (floatX*)a;
    floatX* bx = (floatX*)b;
    cudaCheck(cudaMemcpy(ax, x[0], sizeof(floatX) * n, cudaMemcpyDeviceToHost));
    cudaCheck(cudaMemcpy(bx, x[1], sizeof(floatX) * n, cudaMemcpyDeviceToHost));
    differ += memcmp(ax, bx, sizeof(floatX) * n) != 0;
#endif
    printf("  %zu params, 3 clipped steps (norm %.4f): weights, m, v%s %s\n", n, gn1,
           sizeof(floatX) == 2 ? ", bf16 copy" : "", differ ? "DIFFER" : "bit-identical");
    EXPECT(differ == 0 && gn0 == gn1,
           "the one-rank sharded step differs from the plain one in %zu buffers (norms %.17g vs %.17g)", differ, gn1,
           gn0);
    shard_opt_free(&o);
    free(a);
    free(b);
    for (int k = 0; k < 2; k++) {
        cudaCheck(cudaFree(p[k]));
        cudaCheck(cudaFree(m[k]));
        cudaCheck(cudaFree(v[k]));
        cudaCheck(cudaFree(x[k]));
    }
    cudaCheck(cudaFree(g));
    cudaCheck(cudaFree(scratch));
}

static void test_frozen_model(const WanConfig* c, int B, int T, int H, int W, uint64_t seed) {
    printf("\n[frozen] a frozen model against a trainable one of the same weights: its views, the forward and the "
           "input gradients, bit for bit\n");
    char err[ST_ERRLEN];
    size_t np = wan_num_params(c);
    double* pd = dalloc(np);
    random_params(c, pd, seed);
    float* hp = falloc(np);
    for (size_t i = 0; i < np; i++) hp[i] = (float)pd[i];
    WanGpuModel full, fz;
    wan_gpu_model_init(&full, c, hp, 1, "trainable");
    wan_gpu_model_init(&fz, c, hp, 0, "frozen");
    WanTensor* tl = (WanTensor*)malloc(sizeof(WanTensor) * WAN_MAX_TENSORS);
    int nt = wan_layout(c, tl, NULL, NULL, NULL), t = 0, n_fp32 = 0, n_null = 0, wrong_null = 0, wrong_bits = 0;
    size_t floats = 0;
    // the P views field by field, in layout order (the trainable model's view names the tensor by its offset)
    for (size_t f = 0; f < sizeof(WanParamsF); f += sizeof(float*)) {
        float *pf, *pz;
        memcpy(&pf, (char*)&full.w.P + f, sizeof(pf));
        memcpy(&pz, (char*)&fz.w.P + f, sizeof(pz));
        if (!pf) {
            wrong_null += pz != NULL;
            continue;
        }
        const WanTensor* tt = &tl[t++];
#ifdef ENABLE_FP32
        int want = 1;
#else
        int want = wan_gpu_reads_fp32(tt->name);
#endif
        if ((pz != NULL) != want) {
            wrong_null++;
            printf("  %s: P view %s, want %s\n", tt->name, pz ? "set" : "NULL", want ? "set" : "NULL");
            continue;
        }
        if (!pz) {
            n_null++;
            continue;
        }
        n_fp32++;
        floats += tt->numel;
        float* back = falloc(tt->numel);
        cudaCheck(cudaMemcpy(back, pz, sizeof(float) * tt->numel, cudaMemcpyDeviceToHost));
        if (memcmp(back, hp + tt->offset, sizeof(float) * tt->numel)) {
            wrong_bits++;
            printf("  %s: fp32 view differs from the uploaded weights\n", tt->name);
        }
        free(back);
    }
    printf("  P views: %d tensors set (%zu floats, %s), %d NULL (what the GEMMs read from the %s copy)\n", n_fp32,
           floats, n_fp32 == nt ? "all of them" : "the ones read in fp32", n_null, FLOATX_NAME);
    EXPECT(t == nt && wrong_null == 0 && wrong_bits == 0,
           "frozen model's P views: %d of %d tensors seen, %d set/NULL wrongly, %d with other bits", t, nt, wrong_null,
           wrong_bits);
#ifndef ENABLE_FP32
    EXPECT(n_null > 0 && fz.n_fp32 == floats && fz.n_fp32 < np,
           "a frozen bf16 model should keep fp32 for a part only: %zu of %zu", fz.n_fp32, np);
#endif
    {
        floatX* xf = (floatX*)malloc(sizeof(floatX) * np);
        floatX* xz = (floatX*)malloc(sizeof(floatX) * np);
        cudaCheck(cudaMemcpy(xf, full.params_x, sizeof(floatX) * np, cudaMemcpyDeviceToHost));
        cudaCheck(cudaMemcpy(xz, fz.params_x, sizeof(floatX) * np, cudaMemcpyDeviceToHost));
        int same = !memcmp(xf, xz, sizeof(floatX) * np);
        printf("  %s copy of %zu parameters: %s\n", FLOATX_NAME, np, same ? "the same bits" : "DIFFERS");
        EXPECT(same, "the frozen model's %s copy is not the trainable model's", FLOATX_NAME);
        free(xf);
        free(xz);
    }
    // the forward and the backward into the latent and the context, with no parameter gradient (the frozen path)
    WanGpuAct a;
    if (wan_gpu_act_init(&a, c, B, c->in_dim, T, H, W, 1, err)) {
        fprintf(stderr, "error: %s\n", err);
        exit(2);
    }
    size_t nx = (size_t)c->in_dim * T * H * W, no = (size_t)c->out_dim * T * H * W,
           nctx = (size_t)c->text_len * c->text_dim;
    Rng r = rng_make(seed + 1);
    double* x = dalloc(B * nx);
    double* dout = dalloc(B * no);
    double* ctx = dalloc(B * nctx);
    double* ts = dalloc(B);
    for (size_t i = 0; i < B * nx; i++) x[i] = rng_normal(&r);
    for (size_t i = 0; i < B * no; i++) dout[i] = rng_normal(&r);
    for (size_t i = 0; i < B * nctx; i++) ctx[i] = rng_normal(&r);
    for (int b = 0; b < B; b++) ts[b] = 1000.0 * rng_uniform(&r);
    float* d_x = to_device(x, B * nx);
    float* d_dout = to_device(dout, B * no);
    float* d_ctx = to_device(ctx, B * nctx);
    float* d_dx = device_zeros(B * nx);
    float* d_dctx = device_zeros(B * nctx);
    float* got[2][3];
    const WanGpuModel* ms[2] = {&full, &fz};
    for (int k = 0; k < 2; k++) {
        cudaCheck(cudaMemset(d_dx, 0, sizeof(float) * B * nx));
        cudaCheck(cudaMemset(d_dctx, 0, sizeof(float) * B * nctx));
        wan_gpu_forward(&a, &ms[k]->w, d_x, ts, d_ctx);
        wan_gpu_backward(NULL, d_dx, d_dctx, d_dout, &a, &ms[k]->w);
        cudaCheck(cudaDeviceSynchronize());
        size_t n[3] = {B * no, B * nx, B * nctx};
        const float* src[3] = {a.out, d_dx, d_dctx};
        for (int j = 0; j < 3; j++) {
            got[k][j] = falloc(n[j]);
            cudaCheck(cudaMemcpy(got[k][j], src[j], sizeof(float) * n[j], cudaMemcpyDeviceToHost));
        }
    }
    const char* what[3] = {"forward: velocity", "backward: d latent", "backward: d context"};
    size_t n[3] = {B * no, B * nx, B * nctx};
    for (int j = 0; j < 3; j++) {
        size_t diff = 0;
        double mx = 0;
        for (size_t i = 0; i < n[j]; i++) {
            if (memcmp(&got[0][j][i], &got[1][j][i], sizeof(float))) diff++;
            mx = fmax(mx, fabs((double)got[0][j][i]));
        }
        printf("  %-28s frozen = trainable: %zu of %zu values differ (max |value| %.3e)  %s\n", what[j], diff, n[j], mx,
               diff == 0 && mx > 0 ? "ok" : "FAIL");
        EXPECT(diff == 0 && mx > 0, "%s: the frozen model gives other bits (%zu of %zu differ) or nothing (max %.3e)",
               what[j], diff, n[j], mx);
        free(got[0][j]);
        free(got[1][j]);
    }
    wan_gpu_act_free(&a);
    wan_gpu_model_free(&full);
    wan_gpu_model_free(&fz);
    cudaCheck(cudaFree(d_x));
    cudaCheck(cudaFree(d_dout));
    cudaCheck(cudaFree(d_ctx));
    cudaCheck(cudaFree(d_dx));
    cudaCheck(cudaFree(d_dctx));
    free(tl);
    free(pd);
    free(hp);
    free(x);
    free(dout);
    free(ctx);
    free(ts);
}

int main(int argc, char** argv) {
    const char* preset = NULL;
    int B = 2, seed = 1234, T = 2, H = 8, W = 8, vae_only = 0, vae_small = 0, umt5_only = 0, umt5_small = 0,
        vae_encoder_only = 0, recompute = 0, frozen_only = 0, disc_only = 0, slg_only = 0;
    Flag flags[] = {
        FLAG_STR("--preset", &preset,
                 "a wan.h preset instead of the built-in parity config (tiny: the CPU tests' model)"),
        FLAG_INT("--batch", &B, "samples per batch (the GPU runs them at once; the CPU one by one)"),
        FLAG_INT("--frames", &T, "latent frames"),
        FLAG_INT("--height", &H, "latent height"),
        FLAG_INT("--width", &W, "latent width"),
        FLAG_INT("--seed", &seed, "random parameters and inputs"),
        FLAG_SWITCH("--vae-only", &vae_only, "only the VAE decoder's and encoder's checks (e.g. under a simulator)"),
        FLAG_SWITCH("--vae-small", &vae_small,
                    "the VAE checks at the simulator's sizes (decoder: 3 latent frames of 2x2; encoder: 9 frames of "
                    "16x16 and 8x8)"),
        FLAG_SWITCH("--vae-encoder-only", &vae_encoder_only,
                    "only the VAE encoder's checks (with --vae-small at the simulator's sizes)"),
        FLAG_SWITCH("--disc-only", &disc_only,
                    "only the discriminator heads' checks, multiscale and strided (e.g. under a simulator)"),
        FLAG_SWITCH("--umt5-only", &umt5_only, "only the umT5 encoder's checks (e.g. under a simulator)"),
        FLAG_SWITCH("--umt5-small", &umt5_small,
                    "the umT5 checks without the 500-token peer case (the simulator's sizes)"),
        FLAG_SWITCH(
            "--frozen-only", &frozen_only,
            "only the frozen-model check (a frozen model = a trainable one, bit for bit; e.g. under a simulator)"),
        FLAG_SWITCH("--slg-only", &slg_only,
                    "only the KD pairs' teacher samples with skip-layer guidance, GPU vs CPU (e.g. under a simulator)"),
        FLAG_INT(
            "--recompute", &recompute,
            "1: the whole-model parity with per-block activation recompute on (the recompute checks run either way)"),
        FLAG_END};
    int rc =
        flags_parse(flags, argc, argv, 1, "usage: ./test_gpu [flags]   (GPU vs CPU parity; skipped without a GPU)");
    if (rc) return rc == 1 ? 0 : 2;

    int ndev = 0;
    cudaError_t e = cudaGetDeviceCount(&ndev);
    if (e != cudaSuccess || ndev == 0) {
        printf("GPU parity (test_gpu): skipped (no GPU: %s)\n", e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
        return 0;
    }
    cudaDeviceProp prop;
    cudaCheck(cudaGetDeviceProperties(&prop, 0));
    if (prop.major < 8) {
        printf("GPU parity (test_gpu): skipped (%s is compute capability %d.%d; the programs are built for sm_80 and "
               "newer)\n",
               prop.name, prop.major, prop.minor);
        return 0;
    }
    if (umt5_only) {
        printf("GPU parity: %s, the umT5 encoder only\n", prop.name);
        test_umt5_gpu(umt5_small);
        printf("\nGPU parity: %d passed, %d failed\n", tests_passed, tests_failed);
        gemm_free();
        return tests_failed ? 1 : 0;
    }
    if (vae_only || vae_encoder_only) {
        printf("GPU parity: %s, the VAE %s only\n", prop.name, vae_only ? "decoder and encoder" : "encoder");
        if (vae_only) test_vae_gpu(vae_small);
        test_vae_gpu_encoder(vae_small);
        printf("\nGPU parity: %d passed, %d failed\n", tests_passed, tests_failed);
        return tests_failed ? 1 : 0;
    }
    char err[ST_ERRLEN];
    WanConfig c = PARITY_CONFIG;
    if (preset && wan_preset(&c, preset, err)) {
        fprintf(stderr, "error: %s\n", err);
        return 2;
    }
    if (wan_config_check(&c, err)) {
        fprintf(stderr, "error: %s\n", err);
        return 2;
    }
    if (B < 1) {
        fprintf(stderr, "error: --batch must be >= 1, found %d\n", B);
        return 2;
    }
    printf(
        "GPU parity: %s vs the CPU reference (double), config '%s', batch %d, latent [%d, %d, %d, %d], %s, GEMM: %s, "
        "attention: %s, tolerance %.0e\n",
        prop.name, c.name, B, c.in_dim, T, H, W, FLOATX_NAME, WAN_GPU_GEMM_NAME,
        wan_gpu_use_flash(&c) ? "flash" : "naive", PARITY_TOL);
    gemm_init();
    if (recompute != 0 && recompute != 1) {
        fprintf(stderr, "error: --recompute must be 0 or 1, found %d\n", recompute);
        return 2;
    }
    wan_gpu_recompute = recompute;
    if (recompute) printf("per-block activation recompute: on\n");
    if (slg_only) {
        test_kd_pairs_slg_parity((uint64_t)seed + 17, PARITY_TOL);
        printf("\nGPU parity: %d passed, %d failed\n", tests_passed, tests_failed);
        gemm_free();
        return tests_failed ? 1 : 0;
    }
    if (disc_only) {
        test_disc_gpu_parity(B, (uint64_t)seed + 17, PARITY_TOL, DISC_MULTISCALE);
        test_disc_gpu_parity(B, (uint64_t)seed + 19, PARITY_TOL, DISC_STRIDED);
        printf("\nGPU parity: %d passed, %d failed\n", tests_passed, tests_failed);
        gemm_free();
        return tests_failed ? 1 : 0;
    }
    if (frozen_only) {
        test_frozen_model(&c, B, T, H, W, (uint64_t)seed + 17);
        printf("\nGPU parity: %d passed, %d failed\n", tests_passed, tests_failed);
        gemm_free();
        return tests_failed ? 1 : 0;
    }

    // ---- the CPU reference: params, inputs, forward and backward per sample
    size_t np = wan_num_params(&c);
    double* params = dalloc(np);
    random_params(&c, params, (uint64_t)seed);
    WanParams P, dP;
    double* grads = dalloc(np);
    wan_carve(&c, &P, params);
    wan_carve(&c, &dP, grads);
    WanGrid g;
    if (wan_grid(&g, &c, c.in_dim, T, H, W, err)) {
        fprintf(stderr, "error: %s\n", err);
        return 2;
    }
    size_t nx = (size_t)c.in_dim * T * H * W, no = (size_t)c.out_dim * T * H * W,
           nctx = (size_t)c.text_len * c.text_dim;
    Rng r = rng_make((uint64_t)seed + 1);
    double* x = dalloc(B * nx);
    double* dout = dalloc(B * no);
    double* ctx = dalloc(B * nctx); // ctx: padded [B, text_len, text_dim]
    double* tsteps = dalloc(B);
    int* Lt = (int*)calloc(B, sizeof(int));
    for (size_t i = 0; i < B * nx; i++) x[i] = rng_normal(&r);
    for (size_t i = 0; i < B * no; i++) dout[i] = rng_normal(&r);
    for (int b = 0; b < B; b++) {
        tsteps[b] = 1000.0 * rng_uniform(&r);                  // fractional, as in training
        Lt[b] = b % 3 == 1 ? 0 : 1 + (b * 5 + 3) % c.text_len; // sample 1 has the empty caption
        for (size_t i = 0; i < (size_t)Lt[b] * c.text_dim; i++) ctx[b * nctx + i] = rng_normal(&r);
    }
    double* out_cpu = dalloc(B * no);
    double* dx_cpu = dalloc(B * nx);
    double** dctx_cpu = (double**)calloc(B, sizeof(double*));
    WanAct act;
    wan_act_init(&act, &c, &g);
    for (int b = 0; b < B; b++) {
        dctx_cpu[b] = dalloc(nctx);
        wan_forward(&act, &P, x + b * nx, tsteps[b], ctx + b * nctx, Lt[b]);
        memcpy(out_cpu + b * no, act.out, sizeof(double) * no);
        wan_backward(&dP, dx_cpu + b * nx, dctx_cpu[b], dout + b * no, &act, &P);
    }

    // ---- the GPU: the same params and inputs, the whole batch at once
    float* hp = falloc(np);
    for (size_t i = 0; i < np; i++) hp[i] = (float)params[i];
    WanGpuModel m;
    wan_gpu_model_init(&m, &c, hp, 1, "parity");
    free(hp);
    WanGpuAct a;
    if (wan_gpu_act_init(&a, &c, B, c.in_dim, T, H, W, 1, err)) {
        fprintf(stderr, "error: %s\n", err);
        return 2;
    }
    wan_gpu_act_print_plan(&a, stdout);
    float* d_x = to_device(x, B * nx);
    float* d_dout = to_device(dout, B * no);
    float* d_ctx = to_device(ctx, B * nctx);
    float* d_dx = device_zeros(B * nx);
    float* d_dctx = device_zeros(B * nctx);

    printf("\n[forward] velocity of %d samples\n", B);
    wan_gpu_forward(&a, &m.w, d_x, tsteps, d_ctx);
    double* out_gpu = from_device(a.out, B * no);
    expect_close_scaled("forward: velocity [B, C, T, H, W]", out_gpu, out_cpu, (long)(B * no), PARITY_TOL);

    printf("\n[backward] every parameter gradient (summed over the batch), the latent's and the context's\n");
    wan_gpu_backward(&m.dP, d_dx, d_dctx, d_dout, &a, &m.w);
    double* grads_gpu = from_device(m.grads, np);
    compare_params(&c, "d", grads_gpu, grads, PARITY_TOL);
    double* dx_gpu = from_device(d_dx, B * nx);
    expect_close_scaled("d latent [B, C, T, H, W]", dx_gpu, dx_cpu, (long)(B * nx), PARITY_TOL);
    double* dctx_gpu = from_device(d_dctx, B * nctx);
    compare_ctx_grad("d context (caption rows)", dctx_gpu, dctx_cpu, Lt, B, &c, PARITY_TOL);

    // ---- skip-layer guidance's unconditional forward (the KD pairs' teacher): block 1 left out
    int skip = c.num_layers > 1 ? 1 : 0;
    printf("\n[forward, block %d skipped] skip-layer guidance (cpu/wan_cpu.h wan_forward_skipping)\n", skip);
    double* skip_cpu = dalloc(B * no);
    for (int b = 0; b < B; b++) {
        wan_forward_skipping(&act, &P, x + b * nx, tsteps[b], ctx + b * nctx, Lt[b], skip);
        memcpy(skip_cpu + b * no, act.out, sizeof(double) * no);
    }
    wan_gpu_forward_skipping(&a, &m.w, d_x, tsteps, d_ctx, skip);
    double* skip_gpu = from_device(a.out, B * no);
    expect_close_scaled("forward without one block: velocity", skip_gpu, skip_cpu, (long)(B * no), PARITY_TOL);
    free(skip_cpu);
    free(skip_gpu);

    // ---- the partial forms: backbone = embeddings + the first L − 1 blocks, with a gradient at its top, one injected
    // at the residual level after block 0, and a text-context gradient from another reader (the TMD student's flow
    // head)
    printf("\n[partial] backbone (first %d blocks): top gradient, feature gradient at xs[1], context gradient from "
           "outside\n",
           c.num_layers - 1);
    int nb = c.num_layers - 1, L = g.L, D = c.dim;
    size_t LD = (size_t)L * D, LcD = (size_t)c.text_len * D;
    double* dtop = dalloc(B * LD);
    double* dfeat1 = dalloc(B * LD);
    double* dcx = dalloc(B * LcD);
    for (size_t i = 0; i < B * LD; i++) {
        dtop[i] = rng_normal(&r);
        dfeat1[i] = rng_normal(&r);
    }
    for (size_t i = 0; i < B * LcD; i++) dcx[i] = rng_normal(&r);
    memset(grads, 0, sizeof(double) * np);
    memset(dx_cpu, 0, sizeof(double) * B * nx);
    double* feat_cpu = dalloc(B * LD);
    for (int b = 0; b < B; b++) {
        memset(dctx_cpu[b], 0, sizeof(double) * nctx);
        wan_forward_blocks(&act, &P, x + b * nx, tsteps[b], ctx + b * nctx, Lt[b], nb);
        memcpy(feat_cpu + b * LD, wan_xs(&act, nb), sizeof(double) * LD);
        real* dfeat[WAN_MAX_LAYERS + 1] = {0};
        dfeat[1] = dfeat1 + b * LD;
        wan_backward_blocks(&dP, dx_cpu + b * nx, dctx_cpu[b], dtop + b * LD, nb, dfeat, dcx + b * LcD, &act, &P);
    }
    cudaCheck(cudaMemset(m.grads, 0, sizeof(float) * np));
    cudaCheck(cudaMemset(d_dx, 0, sizeof(float) * B * nx));
    cudaCheck(cudaMemset(d_dctx, 0, sizeof(float) * B * nctx));
    wan_gpu_forward_blocks(&a, &m.w, d_x, tsteps, d_ctx, nb);
    double* feat_gpu = from_device(wan_gpu_xs(&a, nb), B * LD);
    expect_close_scaled("backbone feature xs[L-1]", feat_gpu, feat_cpu, (long)(B * LD), PARITY_TOL);
    float* d_dtop = to_device(dtop, B * LD);
    float* d_dfeat1 = to_device(dfeat1, B * LD);
    float* d_dcx = to_device(dcx, B * LcD);
    float* dfeat_d[WAN_MAX_LAYERS + 1] = {0};
    dfeat_d[1] = d_dfeat1;
    wan_gpu_backward_blocks(&m.dP, d_dx, d_dctx, d_dtop, nb, dfeat_d, d_dcx, &a, &m.w);
    double* grads_gpu2 = from_device(m.grads, np);
    compare_params(&c, "partial d", grads_gpu2, grads, PARITY_TOL);
    double* dx_gpu2 = from_device(d_dx, B * nx);
    expect_close_scaled("partial d latent", dx_gpu2, dx_cpu, (long)(B * nx), PARITY_TOL);
    double* dctx_gpu2 = from_device(d_dctx, B * nctx);
    compare_ctx_grad("partial d context (caption rows)", dctx_gpu2, dctx_cpu, Lt, B, &c, PARITY_TOL);

    // ---- one AdamW step (fp32 on the device, double on the host) from the same gradients: the CPU's, rounded to fp32.
    // Clipping is active (max norm below the gradient's norm), and weight decay is on.
    printf("\n[AdamW] one step from the same gradients, clipped to half the gradient norm, weight decay 0.1\n");
    float* hg = falloc(np);
    for (size_t i = 0; i < np; i++) {
        hg[i] = (float)grads[i];
        grads[i] = hg[i];
    }
    cudaCheck(cudaMemcpy(m.grads, hg, sizeof(float) * np, cudaMemcpyHostToDevice));
    free(hg);
    double lr = 1e-3, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.1;
    AdamW opt;
    if (adamw_init(&opt, np, lr, b1, b2, eps, wd, err)) {
        fprintf(stderr, "error: %s\n", err);
        return 1;
    }
    double norm_cpu = grad_global_norm(grads, np), max_norm = 0.5 * norm_cpu, gn;
    double* p_before = dalloc(np);
    for (size_t i = 0; i < np; i++) params[i] = (float)params[i]; // the GPU's master weights are these fp32 values
    memcpy(p_before, params, sizeof(double) * np);
    EXPECT(adamw_step(&opt, params, grads, max_norm, &gn) == 0, "the CPU AdamW step was skipped");
    double *d_norm, *d_scratch, norm2_gpu;
    cudaCheck(cudaMalloc(&d_norm, sizeof(double)));
    cudaCheck(cudaMalloc(&d_scratch, sizeof(double) * ADAMW_NORM_BLOCKS));
    adamw_grad_norm_squared(d_norm, d_scratch, m.grads, np, 0);
    cudaCheck(cudaMemcpy(&norm2_gpu, d_norm, sizeof(double), cudaMemcpyDeviceToHost));
    double norm_gpu = sqrt(norm2_gpu);
    printf("  gradient norm: GPU %.9e  CPU %.9e  rel %.3e\n", norm_gpu, norm_cpu, fabs(norm_gpu - norm_cpu) / norm_cpu);
    EXPECT(fabs(norm_gpu - norm_cpu) <= 1e-10 * norm_cpu, "gradient norm differs: GPU %.12e CPU %.12e", norm_gpu,
           norm_cpu);
    double clip = fmin(1.0, max_norm / (norm_gpu + 1e-6));
#ifdef ENABLE_FP32
    floatX* copy = NULL; // the fp32 build has no separate copy
#else
    floatX* copy = m.params_x;
#endif
    adamw_update(m.params, copy, m.opt_m, m.opt_v, m.grads, np, lr, b1, b2, eps, wd, clip, 1, 0);
    double* p_gpu = from_device(m.params, np);
    double* m_gpu = from_device(m.opt_m, np);
    double* v_gpu = from_device(m.opt_v, np);
    // The update itself (p' − p, ~lr) is what AdamW computes. The GPU computes p' = fl(fl(p·decay) − fl(step)) in fp32:
    // two roundings at the magnitude of p, half an ulp each (6e-8·|p|: ~1e-4 of the update when |p| ~ 1, lr = 1e-3),
    // so each element's bound is one fp32 ulp of p' plus 1e-5 of the update's scale for the rest of the fp32
    // arithmetic; printed as the worst error / bound (pass: <= 1).
    double worst = 0, maxup = 0;
    for (size_t i = 0; i < np; i++) maxup = fmax(maxup, fabs(params[i] - p_before[i]));
    for (size_t i = 0; i < np; i++) {
        double err = fabs((p_gpu[i] - p_before[i]) - (params[i] - p_before[i]));
        double bound = ldexp(1.0, ilogb(fabs(p_gpu[i]) > 0 ? fabs(p_gpu[i]) : 1e-30) - 23) + 1e-5 * maxup;
        worst = fmax(worst, isfinite(err) ? err / bound : INFINITY);
    }
    printf("  %-44s worst |error| / (fp32 ulp of p' + 1e-5 max|update|) = %.3f (max|update| %.3e)  %s\n",
           "AdamW update p' - p, per element", worst, maxup, worst <= 1 ? "ok" : "FAIL");
    EXPECT(worst <= 1, "AdamW update: an element is off by %.3f times its bound", worst);
    expect_close_scaled("AdamW parameters p'", p_gpu, params, (long)np, 1e-6);
    expect_close_scaled("AdamW first moment m", m_gpu, opt.m, (long)np, 1e-5);
    expect_close_scaled("AdamW second moment v", v_gpu, opt.v, (long)np, 1e-5);
#ifndef ENABLE_FP32
    { // the bf16 copy must be the rounded new master weights
        size_t bad = 0;
        floatX* cx = (floatX*)malloc(sizeof(floatX) * np);
        cudaCheck(cudaMemcpy(cx, m.params_x, sizeof(floatX) * np, cudaMemcpyDeviceToHost));
        for (size_t i = 0; i < np; i++)
            if (to_float(cx[i]) != to_float(from_float<floatX>((float)p_gpu[i]))) bad++;
        free(cx);
        printf("  bf16 copy = round(master): %zu of %zu differ\n", bad, np);
        EXPECT(bad == 0, "the bf16 weight copy is not the rounded master weights (%zu differ)", bad);
    }
#endif

    test_shard_opt_one_rank(&c, (uint64_t)seed + 23);
    test_frozen_model(&c, B, T, H, W, (uint64_t)seed + 17);
    test_recompute_wan_gpu(&c, B, T, H, W, (uint64_t)seed + 11);
    test_tmd_gpu(B, (uint64_t)seed, PARITY_TOL, 1);
    test_vae_gpu(vae_small);
    test_vae_gpu_encoder(vae_small);
    test_umt5_gpu(umt5_small);
    printf("\nGPU parity: %d passed, %d failed\n", tests_passed, tests_failed);
    gemm_free();
    return tests_failed ? 1 : 0;
}
