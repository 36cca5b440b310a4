// dev/cuda/patchify.cu: kernels/patchify.cuh against its CPU twins, cpu/layers.h patchify_* and unpatchify_*, in double.
//
// At each latent shape [B, C, T, Hl, Wl] and patch (pt, ph, pw):
//   patchify            p [B·L, C·pt·ph·pw] floatX (channel slowest): rtol TOL_X (only the rounding to floatX)
//   patchify backward   dx += scatter(dp) fp32: rtol 1e-6
//   unpatchify          out (channel fastest) from fp32 y: exact; from floatX y: exact (no arithmetic)
//   unpatchify backward dy = gather(dout) fp32: exact
// Shapes not divisible by the patch leave latent positions outside every token: unpatchify must write 0 there and the
// backward add nothing (the twin never touches them).
// Timing at the Wan latents (480p and 720p, 81 frames), bytes moved per call (n = latent elements, X = sizeof(floatX)):
//   patchify 4n + X·n;  patchify backward 8n + X·n;  unpatchify (fp32) 8n;  unpatchify backward 8n
#include "dev_common.cuh"
#include "../../kernels/patchify.cuh"

typedef struct { int B, C, T, Hl, Wl, pt, ph, pw, time; } Size;

static void test_size(Size s, HostRng* rng) {
    if (dev_skip((size_t)s.B * s.C * s.T * s.Hl * s.Wl, "this size")) return;
    PatchGrid g = patch_grid(s.B, s.C, s.T, s.Hl, s.Wl, s.pt, s.ph, s.pw);
    const size_t nx = (size_t)s.B * s.C * s.T * s.Hl * s.Wl, nlat = nx / s.B, np = (size_t)s.B * g.L * g.P, npat = np / s.B;
    printf("\n  latent [%d, %d, %d, %d, %d]  patch (%d, %d, %d)  grid %d x %d x %d  L %d  P %d\n", s.B, s.C, s.T, s.Hl, s.Wl, s.pt,
           s.ph, s.pw, g.Fp, g.Hp, g.Wp, g.L, g.P);

    std::vector<float> x = rand_normal(nx, rng, 0.f, 1.f), dx0 = rand_uniform(nx, rng, -1.f, 1.f), dout = rand_normal(nx, rng, 0.f, 1.f);
    std::vector<float> dp = rand_uniform(np, rng, -1.f, 1.f); round_to<floatX>(dp);
    std::vector<float> y = rand_normal(np, rng, 0.f, 1.f);
    std::vector<float> yx = y; round_to<floatX>(yx);
    float *d_x = dev_upload<float>(x), *d_dx = dev_upload<float>(dx0), *d_dout = dev_upload<float>(dout), *d_y = dev_upload<float>(y);
    float *d_out = dev_alloc<float>(nx), *d_dy = dev_alloc<float>(np);
    floatX *d_p = dev_alloc<floatX>(np), *d_dp = dev_upload<floatX>(dp), *d_yx = dev_upload<floatX>(yx);

    std::vector<double> xd = to_double(x), dpd = to_double(dp), yd = to_double(y), yxd = to_double(yx), doutd = to_double(dout);
    std::vector<double> p_ref(np, 0.0), dx_ref = to_double(dx0), out_ref(nx, 0.0), outx_ref(nx, 0.0), dy_ref(np, 0.0);
    for (int b = 0; b < s.B; b++) {
        patchify_forward(&p_ref[b * npat], &xd[b * nlat], s.C, s.T, s.Hl, s.Wl, s.pt, s.ph, s.pw);
        patchify_backward(&dx_ref[b * nlat], &dpd[b * npat], s.C, s.T, s.Hl, s.Wl, s.pt, s.ph, s.pw);
        unpatchify_forward(&out_ref[b * nlat], &yd[b * npat], s.C, s.T, s.Hl, s.Wl, s.pt, s.ph, s.pw);
        unpatchify_forward(&outx_ref[b * nlat], &yxd[b * npat], s.C, s.T, s.Hl, s.Wl, s.pt, s.ph, s.pw);
        unpatchify_backward(&dy_ref[b * npat], &doutd[b * nlat], s.C, s.T, s.Hl, s.Wl, s.pt, s.ph, s.pw);
    }
    dev_poison(d_p, np * sizeof(floatX)); dev_poison(d_out, nx * 4); dev_poison(d_dy, np * 4);
    patchify_forward(d_p, d_x, g, 0);
    check("patchify", dev_download(d_p, np), p_ref, TOL_X, 0);
    patchify_backward(d_dx, d_dp, g, 0);
    check("patchify backward (dx +=)", dev_download(d_dx, nx), dx_ref, 1e-6, 0);
    unpatchify_forward(d_out, d_y, g, 0);
    check("unpatchify (fp32 y)", dev_download(d_out, nx), out_ref, 0, 0);
    dev_poison(d_out, nx * 4);
    unpatchify_forward(d_out, d_yx, g, 0);
    check("unpatchify (floatX y)", dev_download(d_out, nx), outx_ref, 0, 0);
    unpatchify_backward(d_dy, d_dout, g, 0);
    check("unpatchify backward (dy)", dev_download(d_dy, np), dy_ref, 0, 0);

    if (s.time) {
        size_t X = sizeof(floatX);
        float ms = bench_ms([&] { patchify_forward(d_p, d_x, g, 0); });
        report_bw("patchify", (double)nx * (4 + X), ms);
        ms = bench_ms([&] { patchify_backward(d_dx, d_dp, g, 0); });
        report_bw("patchify backward", (double)nx * (8 + X), ms);
        ms = bench_ms([&] { unpatchify_forward(d_out, d_y, g, 0); });
        report_bw("unpatchify (fp32)", 8.0 * nx, ms);
        ms = bench_ms([&] { unpatchify_backward(d_dy, d_dout, g, 0); });
        report_bw("unpatchify backward", 8.0 * nx, ms);
    }
    float* fb[] = {d_x, d_dx, d_dout, d_y, d_out, d_dy};
    for (float* p : fb) cudaCheck(cudaFree(p));
    floatX* xb[] = {d_p, d_dp, d_yx};
    for (floatX* p : xb) cudaCheck(cudaFree(p));
}

int main(int argc, char** argv) {
    HostRng rng = {dev_init(argc, argv, "patchify: latent <-> tokens, forward and backward")};
    Size sizes[] = {
        {2, 3, 4, 16, 16, 1, 4, 4, 0},       // the tiny preset's clip
        {1, 16, 5, 14, 18, 1, 2, 2, 0},      // odd grid 5 x 7 x 9
        {2, 3, 5, 7, 9, 2, 2, 2, 0},         // leftovers on every axis
        {1, 16, 21, 60, 104, 1, 2, 2, 1},    // Wan 480x832x81: 32760 tokens
        {1, 16, 21, 90, 160, 1, 2, 2, 1},    // Wan 1280x720x81: 75600 tokens
    };
    for (Size s : sizes) test_size(s, &rng);
    return dev_finish("patchify");
}
