// dev/cuda/conv3d.cu: kernels/conv3d.cuh (the VAE decoder's convolutions) against its CPU twin, cpu/vae_cpu.h
// vae_conv_frame, in double.
//
//   causal 3x3x3 with 2, 1 and 0 cache frames (a later chunk, the second, the first), the upsample3d time_conv
//   (3,1,1) C -> 2C, the up-sampling Conv2d 3x3 read through the fused nearest x2, a 1x1x1 (shortcut / post_quant),
//   the encoder's down-sampling Conv2d 3x3 stride 2 (down2: zero pad right and bottom), sizes that are not multiples
//   of the 64 x 64 tile; fp32 in, fp32 accumulation: rtol 1e-5 + 1e-5 max|ref|.
// Timing (skipped with CONV3D_SMALL=1, e.g. under a simulator) at the decoder's largest convs for 480x832: the
// full-resolution resblock conv (96 -> 96, 4 frames of 480x832), the middle (384 -> 384, 1 frame of 60x104) and the
// last up-sampling conv (192 -> 96, 4 frames up to 480x832), reported in TFLOP/s of fp32 FMA (2 FLOP each).
#include "dev_common.cuh"
#include "../../kernels/conv3d.cuh"
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wvla"
#include "../../cpu/vae_cpu.h"
#pragma GCC diagnostic pop

// the twin: frames [cache; x] in one double array, then vae_conv_frame per output frame
static std::vector<double> conv_twin(const std::vector<float>& x, const std::vector<float>& cache, const std::vector<float>& w,
                                     const std::vector<float>& b, const Conv3dShape& s) {
    int Hi = s.up2 ? s.H / 2 : s.down2 ? 2 * s.H : s.H, Wi = s.up2 ? s.W / 2 : s.down2 ? 2 * s.W : s.W, F = s.nc + s.T;
    size_t pl = (size_t)Hi * Wi;
    std::vector<double> seq((size_t)s.Cin * F * pl), wd(w.begin(), w.end()), bd(b.begin(), b.end()), out((size_t)s.Cout * s.T * s.H * s.W);
    for (int c = 0; c < s.Cin; c++)
        for (int f = 0; f < F; f++)
            for (size_t i = 0; i < pl; i++)
                seq[((size_t)c * F + f) * pl + i] = f < s.nc ? cache[((size_t)c * s.nc + f) * pl + i] : x[((size_t)c * s.T + f - s.nc) * pl + i];
    for (int t = 0; t < s.T; t++) {
        const double* in[8];
        for (int kt = 0; kt < s.KT; kt++) { int f = s.nc + t + kt - (s.KT - 1); in[kt] = f >= 0 ? seq.data() + (size_t)f * pl : NULL; }
        vae_conv_frame(out.data() + (size_t)t * s.H * s.W, (size_t)s.T * s.H * s.W, in, (size_t)F * pl, s.Cin, Hi, Wi, s.up2, wd.data(), bd.data(),
                       s.Cout, s.KT, s.KH, s.KW, s.down2 ? 2 : 1, s.down2 ? 0 : (s.KH - 1) / 2, s.down2 ? 0 : (s.KW - 1) / 2, s.H, s.W);
    }
    return out;
}

static void test_conv(const char* name, Conv3dShape s, HostRng* rng, int time_it) {
    int Hi = s.up2 ? s.H / 2 : s.down2 ? 2 * s.H : s.H, Wi = s.up2 ? s.W / 2 : s.down2 ? 2 * s.W : s.W;
    size_t nx = (size_t)s.Cin * s.T * Hi * Wi, nc = (size_t)s.Cin * s.nc * Hi * Wi, nw = (size_t)s.Cout * s.Cin * s.KT * s.KH * s.KW;
    size_t no = (size_t)s.Cout * s.T * s.H * s.W;
    double flops = 2.0 * (double)no * s.Cin * s.KT * s.KH * s.KW;
    printf("\n  %s  Cin %d Cout %d  T %d  %dx%d%s  kernel (%d,%d,%d)  cache %d  (%.3g GFLOP)\n", name, s.Cin, s.Cout, s.T, s.H, s.W,
           s.up2 ? " (from x2 up-sampled input)" : s.down2 ? " (stride 2 from 2x the size, pad right/bottom)" : "", s.KT, s.KH, s.KW, s.nc, flops * 1e-9);
    float* d_x = dev_alloc<float>(nx); float* d_c = dev_alloc<float>(nc + 1); float* d_w = dev_alloc<float>(nw);
    float* d_b = dev_alloc<float>(s.Cout); float* d_o = dev_alloc<float>(no);
    if (!time_it) {
        std::vector<float> x = rand_normal(nx, rng, 0.f, 1.f), c = rand_normal(nc, rng, 0.f, 1.f);
        std::vector<float> w = rand_normal(nw, rng, 0.f, 1.f / sqrtf((float)(s.Cin * s.KT * s.KH * s.KW))), b = rand_normal(s.Cout, rng, 0.f, 0.1f);
        dev_set(d_x, x); if (nc) dev_set(d_c, c); dev_set(d_w, w); dev_set(d_b, b);
        dev_poison(d_o, no * sizeof(float));
        conv3d_forward(d_o, d_x, s.nc ? d_c : NULL, d_w, d_b, s, 0);
        check("forward vs vae_conv_frame (double)", dev_download(d_o, no), conv_twin(x, c, w, b, s), 1e-5, 1e-5);
    } else {
        dev_fill_uniform(d_x, nx, rng, -1.f, 1.f); dev_fill_uniform(d_c, nc + 1, rng, -1.f, 1.f);
        dev_fill_uniform(d_w, nw, rng, -0.05f, 0.05f); dev_fill_uniform(d_b, s.Cout, rng, -0.1f, 0.1f);
        float ms = bench_ms([&] { conv3d_forward(d_o, d_x, s.nc ? d_c : NULL, d_w, d_b, s, 0); });
        report_flops("forward (fp32 CUDA cores)", flops, ms);
    }
    float* bufs[] = {d_x, d_c, d_w, d_b, d_o};
    for (float* p : bufs) cudaCheck(cudaFree(p));
}

int main(int argc, char** argv) {
    HostRng rng = {dev_init(argc, argv, "conv3d: the VAE decoder's causal Conv3d / Conv2d forward (fp32)")};
    //                                      Cin Cout T  H   W  KT KH KW nc up2
    test_conv("causal 3x3x3, later chunk", {8, 12, 4, 6, 10, 3, 3, 3, 2, 0}, &rng, 0);
    test_conv("causal 3x3x3, second chunk", {8, 12, 1, 6, 10, 3, 3, 3, 1, 0}, &rng, 0);
    test_conv("causal 3x3x3, first chunk", {5, 70, 2, 9, 7, 3, 3, 3, 0, 0}, &rng, 0);
    test_conv("upsample3d time_conv (3,1,1)", {8, 16, 2, 5, 6, 3, 1, 1, 2, 0}, &rng, 0);
    test_conv("upsample conv 3x3, fused nearest x2", {8, 4, 2, 12, 20, 1, 3, 3, 0, 1}, &rng, 0);
    test_conv("1x1x1 (shortcut, post_quant)", {16, 16, 3, 7, 9, 1, 1, 1, 0, 0}, &rng, 0);
    test_conv("causal 3x3x3, 65 channels, 1 frame", {65, 66, 1, 13, 11, 3, 3, 3, 2, 0}, &rng, 0);
    test_conv("encoder down-sampling 3x3 stride 2", {8, 8, 4, 6, 10, 1, 3, 3, 0, 0, 1}, &rng, 0);
    test_conv("downsample3d time_conv as stride 1", {8, 8, 4, 6, 10, 3, 1, 1, 2, 0, 0}, &rng, 0);
    const char* small = getenv("CONV3D_SMALL");
    if (!(small && atoi(small))) {
        test_conv("480p full-res resblock conv", {96, 96, 4, 480, 832, 3, 3, 3, 2, 0}, &rng, 1);
        test_conv("480p middle conv", {384, 384, 1, 60, 104, 3, 3, 3, 2, 0}, &rng, 1);
        test_conv("480p last up-sampling conv", {192, 96, 4, 480, 832, 1, 3, 3, 0, 1}, &rng, 1);
    } else printf("\n  (CONV3D_SMALL=1: timing sizes skipped)\n");
    return dev_finish("conv3d");
}
