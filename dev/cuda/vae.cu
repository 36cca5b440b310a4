// dev/cuda/vae.cu: kernels/vae.cuh (the VAE decoder's small kernels) against their CPU twins in double, fresh random
// data every size. Version 1 of each kernel (the only one so far); the decoder as a whole is checked by test_gpu.
//   vae_rms_norm_silu      vs cpu/vae_cpu.h vae_norm (with and without SiLU)
//   vae_frame_attention    vs softmax(q k^T / sqrt(C)) v per frame in double (the core of cpu vae_attention), with one
//                          key tile and with 2 and 3 tiles of VAE_ATTN_TILE keys (the online softmax's rescaling)
//   vae_time_interleave    vs the interleave loop of cpu vae_resample
//   vae_cache_shift        vs cpu vae_cache_push over chunks of 1, 1, 3, 1 and 2 frames (the GPU cache is right-aligned
//                          with zeros where the CPU's has no frame)
//   vae_residual_add       vs the same fp32 addition on the host
//   vae_clamp_video        vs fmin(1, fmax(-1, x))
// Tolerances: fp32 in and out, rtol 1e-5 + 1e-5 max|ref| (the norm and attention sum in fp32 over C or L terms);
// interleave, cache shift, add and clamp must be exact (0).
// Timing (skipped with DEV_SMALL=1) at 480p: the norm over the full-resolution activation [96, 4, 480, 832] (GB/s)
// and the middle block's attention over one frame of 60 x 104 = 6240 pixels at C = 384 (TFLOP/s of fp32 FMA).
#include "dev_common.cuh"
#include "../../kernels/vae.cuh"
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wvla"
#include "../../cpu/vae_cpu.h"
#pragma GCC diagnostic pop

static void test_norm(int C, int T, int H, int W, int silu, HostRng* rng) {
    size_t n = (size_t)T * H * W, nx = (size_t)C * n;
    printf("\n  rms norm%s  C %d  T %d  %dx%d\n", silu ? " + SiLU" : "", C, T, H, W);
    if (dev_skip(nx, "this size")) return;
    std::vector<float> x = rand_normal(nx, rng, 0.3f, 1.f), g = rand_normal(C, rng, 1.f, 0.1f);
    std::vector<double> xd = to_double(x), gd = to_double(g), ref(nx), scratch(n);
    VaeT xt = {xd.data(), C, T, H, W}, rt = {ref.data(), 0, 0, 0, 0};
    vae_norm(&rt, &xt, gd.data(), silu, scratch.data());
    float* d_x = dev_upload<float>(x); float* d_g = dev_upload<float>(g); float* d_o = dev_alloc<float>(nx);
    dev_poison(d_o, nx * sizeof(float));
    vae_rms_norm_silu(d_o, d_x, d_g, C, n, silu, 0);
    check("forward vs vae_norm (double)", dev_download(d_o, nx), ref, 1e-5, 1e-5);
    float ms = bench_ms([&] { vae_rms_norm_silu(d_o, d_x, d_g, C, n, silu, 0); });
    report_bw("rms norm", 2.0 * nx * sizeof(float), ms);
    cudaCheck(cudaFree(d_x)); cudaCheck(cudaFree(d_g)); cudaCheck(cudaFree(d_o));
}

static void test_attention(int C, int T, int L, HostRng* rng, int time_only) {
    size_t nq = (size_t)3 * C * T * L, no = (size_t)C * T * L;
    printf("\n  frame attention  C %d  T %d  L %d (%d key tile%s)\n", C, T, L, (L + VAE_ATTN_TILE - 1) / VAE_ATTN_TILE, L > VAE_ATTN_TILE ? "s" : "");
    if (dev_skip(nq, "this size")) return;
    float* d_q = dev_alloc<float>(nq); float* d_o = dev_alloc<float>(no);
    if (!time_only) {
        std::vector<float> qkv = rand_normal(nq, rng, 0.f, 1.f);
        std::vector<double> ref(no);
        size_t cs = (size_t)T * L;
        std::vector<double> s(L);
        for (int t = 0; t < T; t++)
            for (int i = 0; i < L; i++) {
                double m = -INFINITY, z = 0;
                for (int j = 0; j < L; j++) {
                    double d = 0;
                    for (int c = 0; c < C; c++) d += (double)qkv[c * cs + (size_t)t * L + i] * qkv[(C + c) * cs + (size_t)t * L + j];
                    s[j] = d / sqrt((double)C); m = fmax(m, s[j]);
                }
                for (int j = 0; j < L; j++) { s[j] = exp(s[j] - m); z += s[j]; }
                for (int c = 0; c < C; c++) {
                    double a = 0;
                    for (int j = 0; j < L; j++) a += s[j] * qkv[(2 * C + c) * cs + (size_t)t * L + j];
                    ref[c * cs + (size_t)t * L + i] = a / z;
                }
            }
        dev_set(d_q, qkv);
        dev_poison(d_o, no * sizeof(float));
        vae_frame_attention(d_o, d_q, C, T, L, 0);
        check("forward vs softmax attention (double)", dev_download(d_o, no), ref, 1e-5, 1e-5);
    } else {
        dev_fill_uniform(d_q, nq, rng, -1.f, 1.f);
        float ms = bench_ms([&] { vae_frame_attention(d_o, d_q, C, T, L, 0); });
        report_flops("frame attention (fp32)", 4.0 * C * (double)L * L * T, ms);
    }
    cudaCheck(cudaFree(d_q)); cudaCheck(cudaFree(d_o));
}

static void test_moves(HostRng* rng) {
    printf("\n  time interleave  C 6  T 2  4x5;  residual add and clamp on it;  cache shift  C 5  3x4 over chunks of 1, 1, 3, 1, 2 frames\n");
    {   // interleave: out[c][2t + h] = tc[h*C + c][t]
        int C = 6, T = 2; size_t pl = 20, n = (size_t)2 * C * T * pl;
        std::vector<float> tc = rand_normal(n, rng, 0.f, 1.f);
        std::vector<double> ref(n);
        for (int c = 0; c < C; c++)
            for (int t = 0; t < T; t++)
                for (int h = 0; h < 2; h++)
                    for (size_t p = 0; p < pl; p++) ref[((size_t)c * 2 * T + 2 * t + h) * pl + p] = tc[(((size_t)h * C + c) * T + t) * pl + p];
        float* d_tc = dev_upload<float>(tc); float* d_o = dev_alloc<float>(n);
        vae_time_interleave(d_o, d_tc, C, T, pl, 0);
        check("interleave (exact)", dev_download(d_o, n), ref, 0, 0);
        std::vector<float> y = rand_normal(n, rng, 0.f, 1.f);
        float* d_y = dev_upload<float>(y);
        vae_residual_add(d_tc, d_y, n, 0);
        for (size_t i = 0; i < n; i++) { tc[i] = tc[i] + y[i]; ref[i] = tc[i]; }   // the same fp32 addition on the host
        check("residual add x += y (exact)", dev_download(d_tc, n), ref, 0, 0);
        vae_clamp_video(d_tc, n, 0);
        for (size_t i = 0; i < n; i++) ref[i] = fmin(1.0, fmax(-1.0, (double)tc[i]));
        check("clamp (exact)", dev_download(d_tc, n), ref, 0, 0);
        cudaCheck(cudaFree(d_y));
        cudaCheck(cudaFree(d_tc)); cudaCheck(cudaFree(d_o));
    }
    {   // cache: the CPU's [C][2][pl] holds its n frames left-aligned; the GPU's holds them right-aligned over zeros
        int C = 5, H = 3, W = 4, chunks[5] = {1, 1, 3, 1, 2}; size_t pl = (size_t)H * W;
        VaeCache k; memset(&k, 0, sizeof(k));
        float* d_k = dev_alloc<float>((size_t)C * 2 * pl);
        cudaCheck(cudaMemset(d_k, 0, sizeof(float) * C * 2 * pl));
        bool same = true;
        for (int i = 0; i < 5; i++) {
            int T = chunks[i];
            std::vector<float> x = rand_normal((size_t)C * T * pl, rng, 0.f, 1.f);
            std::vector<double> xd = to_double(x);
            VaeT xt = {xd.data(), C, T, H, W};
            vae_cache_push(&k, &xt, 2);
            float* d_x = dev_upload<float>(x);
            vae_cache_shift(d_k, d_x, C, T, pl, 0);
            std::vector<float> got = dev_download(d_k, (size_t)C * 2 * pl);
            for (int c = 0; c < C; c++)
                for (int j = 0; j < 2; j++)
                    for (size_t p = 0; p < pl; p++) {
                        int cj = j - (2 - k.n);   // the CPU slot this GPU slot holds; < 0: a zero frame
                        double want = cj >= 0 ? vae_cache_frame(&k, c, cj)[p] : 0.0;
                        same &= (double)got[((size_t)c * 2 + j) * pl + p] == want;
                    }
            cudaCheck(cudaFree(d_x));
        }
        check_true("cache shift vs vae_cache_push (exact)", same);
        vae_cache_free(&k);
        cudaCheck(cudaFree(d_k));
    }
}

int main(int argc, char** argv) {
    HostRng rng = {dev_init(argc, argv, "vae: the VAE decoder's small kernels (fp32): RMS norm, frame attention, moves")};
    test_norm(12, 3, 5, 7, 1, &rng);
    test_norm(33, 1, 9, 4, 0, &rng);
    test_attention(16, 2, 40, &rng, 0);
    test_attention(8, 1, VAE_ATTN_TILE + 76, &rng, 0);
    test_attention(40, 1, 2 * VAE_ATTN_TILE + 52, &rng, 0);
    test_moves(&rng);
    test_norm(96, 4, 480, 832, 1, &rng);          // 480p, the full-resolution stage (timed)
    test_attention(384, 1, 60 * 104, &rng, 1);    // 480p, the middle block (timed)
    return dev_finish("vae");
}
