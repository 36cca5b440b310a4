// dev/cuda/rope.cu: kernels/rope.cuh against its CPU twin, cpu/layers.h rope_table / rope_forward / rope_backward, in double.
//
// At each size (patch grid Fp×Hp×Wp, B samples, H heads of dim d):
//   table      cs [L, d/2, 2] fp32 from host double math (rope_table_host), rtol 1e-6 (+1e-6 abs): one fp32 rounding
//   forward    out = R(θ)·x   floatX, rtol TOL_X (the twin uses the double table: this also covers the fp32 table)
//   backward   dinp = R(−θ)·dout   floatX, rtol TOL_X;  in place gives the same bits;  backward(forward(x)) ≈ x
//   version 2  (one block per token row, 128-bit loads) bit for bit version 1's kernel, forward and backward
//   fused      rmsnorm_rope_forward: RoPE(x·rstd·w) in one pass vs the CPU twin (cpu/layers.h rmsnorm_forward, then
//              rope_forward), rtol TOL_X; vs rmsnorm_forward then rope_forward on the GPU: bit for bit in the fp32 build
//              (the same arithmetic), in bf16 within 2·TOL_X (the unfused pair rounds the product once more); rstd bitwise
// Timing at the Wan sizes, bytes moved per call (X = sizeof(floatX), N = B·L tokens, D = H·d):
//   rotate: x X·N·D read + out X·N·D written + the table 4·L·d read once (its rows are reused by every head)
#include "dev_common.cuh"
#include "../../kernels/rmsnorm.cuh"   // includes kernels/rope.cuh; rmsnorm_rope_forward, the fused q/k pass

typedef struct { int Fp, Hp, Wp, B, H, d, time; } Size;

static void test_size(Size s, HostRng* rng) {
    if (dev_skip((size_t)s.Fp * s.Hp * s.Wp * s.B * s.H * s.d, "this size")) return;
    const int L = s.Fp * s.Hp * s.Wp, B = s.B, H = s.H, d = s.d, N = B * L;
    const size_t ND = (size_t)N * H * d, T = (size_t)L * d;   // T: table floats, L·(d/2)·2
    printf("\n  grid %d x %d x %d (L %d)  B %d  H %d  d %d\n", s.Fp, s.Hp, s.Wp, L, B, H, d);

    std::vector<float> x = rand_uniform(ND, rng, -2.f, 2.f); round_to<floatX>(x);
    std::vector<float> dout = rand_uniform(ND, rng, -1.f, 1.f); round_to<floatX>(dout);
    floatX *d_x = dev_upload<floatX>(x), *d_dout = dev_upload<floatX>(dout), *d_dout2 = dev_upload<floatX>(dout);
    floatX *d_out = dev_alloc<floatX>(ND), *d_dinp = dev_alloc<floatX>(ND);
    float* d_cs = dev_alloc<float>(T);

    std::vector<double> cs_ref(T);
    rope_table(cs_ref.data(), s.Fp, s.Hp, s.Wp, d);
    std::vector<float> cs_host(T, NAN);
    rope_table_host(cs_host.data(), s.Fp, s.Hp, s.Wp, d);
    dev_poison(d_cs, T * 4);
    dev_set(d_cs, cs_host);
    check("table (cos, sin)", dev_download(d_cs, T), cs_ref, 1e-6, 1e-6);

    std::vector<double> xd = to_double(x), doutd = to_double(dout), out_ref(ND), dinp_ref(ND, 0.0);
    size_t per_sample = (size_t)L * H * d;
    for (int b = 0; b < B; b++) {
        rope_forward(&out_ref[b * per_sample], &xd[b * per_sample], cs_ref.data(), L, H, d);
        rope_backward(&dinp_ref[b * per_sample], &doutd[b * per_sample], cs_ref.data(), L, H, d);
    }
    dev_poison(d_out, ND * sizeof(floatX)); dev_poison(d_dinp, ND * sizeof(floatX));
    rope_forward(d_out, d_x, d_cs, N, L, H, d, 0);
    rope_backward(d_dinp, d_dout, d_cs, N, L, H, d, 0);
    check("forward", dev_download(d_out, ND), out_ref, TOL_X, 1e-5);
    check("backward", dev_download(d_dinp, ND), dinp_ref, TOL_X, 1e-5);
    rope_backward(d_dout2, d_dout2, d_cs, N, L, H, d, 0);
    check_true("in place, bitwise equal", dev_same_bits(d_dinp, d_dout2, ND * sizeof(floatX)));
    // R(−θ)·R(θ)·x = x up to two roundings, each relative to the pair's size (hence the absolute part)
    rope_backward(d_out, d_out, d_cs, N, L, H, d, 0);
    check("backward(forward(x)) = x", dev_download(d_out, ND), xd, 2 * TOL_X, TOL_X);

    // version 2 (rope_forward / rope_backward where head_dim allows) against version 1's kernel, launched directly
    {
        const size_t npairs = ND / 2;
        const int v2 = d % FLOATX_VEC16 == 0;
        rope_forward(d_out, d_x, d_cs, N, L, H, d, 0);
        rope_rotate_kernel<floatX><<<(unsigned)((npairs + 255) / 256), 256>>>(d_dinp, d_x, d_cs, npairs, L, H, d / 2, 1.f);
        cudaCheck(cudaGetLastError());
        bool same = dev_same_bits(d_out, d_dinp, ND * sizeof(floatX));
        rope_backward(d_out, d_dout, d_cs, N, L, H, d, 0);
        rope_rotate_kernel<floatX><<<(unsigned)((npairs + 255) / 256), 256>>>(d_dinp, d_dout, d_cs, npairs, L, H, d / 2, -1.f);
        cudaCheck(cudaGetLastError());
        same = same && dev_same_bits(d_out, d_dinp, ND * sizeof(floatX));
        printf("  rotation %s\n", v2 ? "version 2 (128-bit, one block per row)" : "version 1 (head_dim not a multiple of the vector width)");
        check_true("bitwise equal to version 1's kernel (forward, backward)", same);
    }
    // RMSNorm over D = H·d and RoPE in one pass (the self-attention's q and k)
    const int C = H * d;
    const float eps = 1e-6f;
    std::vector<float> w = rand_uniform(C, rng, 0.5f, 1.5f);
    float *d_w = dev_upload<float>(w), *d_rstd = dev_alloc<float>(N), *d_rstd2 = dev_alloc<float>(N);
    {
        std::vector<double> wd = to_double(w), nrm(ND), rstd_ref(N), ref(ND);
        rmsnorm_forward(nrm.data(), rstd_ref.data(), xd.data(), wd.data(), N, C, (double)eps);
        for (int b = 0; b < B; b++) rope_forward(&ref[b * per_sample], &nrm[b * per_sample], cs_ref.data(), L, H, d);
        printf("  RMSNorm + RoPE in one pass (%s)\n", rmsnorm_v2_threads(N, C, d, 0) ? "version 2" : "fallback: rmsnorm_forward then rope_forward");
        dev_poison(d_out, ND * sizeof(floatX)); dev_poison(d_rstd, N * 4);
        rmsnorm_rope_forward(d_out, d_rstd, d_x, d_w, d_cs, N, L, H, d, eps, 0);
        check("out = RoPE(x·rstd·w)", dev_download(d_out, ND), ref, TOL_X, 1e-5);
        check("rstd", dev_download(d_rstd, N), rstd_ref, 1e-5, 1e-6);
        rmsnorm_forward(d_dinp, d_rstd2, d_x, d_w, N, C, eps, 0);
        rope_forward(d_dinp, d_dinp, d_cs, N, L, H, d, 0);
        check_true("rstd bitwise equal to rmsnorm_forward's", dev_same_bits(d_rstd, d_rstd2, N * 4));
#ifdef ENABLE_FP32
        check_true("out bitwise equal to rmsnorm_forward then rope_forward", dev_same_bits(d_out, d_dinp, ND * sizeof(floatX)));
#else
        check("out vs rmsnorm_forward then rope_forward (one rounding fewer)", dev_download(d_out, ND), to_double(dev_download(d_dinp, ND)),
              2 * TOL_X, 1e-5);
#endif
    }

    if (s.time) {
        size_t X = sizeof(floatX);
        float ms = bench_ms([&] { rope_forward(d_out, d_x, d_cs, N, L, H, d, 0); });
        report_bw("forward (and backward)", 2.0 * ND * X + 4.0 * T, ms);
        ms = bench_ms([&] { rmsnorm_rope_forward(d_out, d_rstd, d_x, d_w, d_cs, N, L, H, d, eps, 0); });
        report_bw("RMSNorm + RoPE, fused", 2.0 * ND * X + 4.0 * N + 4.0 * T, ms);
        ms = bench_ms([&] { rmsnorm_forward(d_out, d_rstd, d_x, d_w, N, C, eps, 0); rope_forward(d_out, d_out, d_cs, N, L, H, d, 0); });
        report_bw("the same unfused (2 passes)", 4.0 * ND * X + 4.0 * N + 4.0 * T, ms);
    }
    cudaCheck(cudaFree(d_w)); cudaCheck(cudaFree(d_rstd)); cudaCheck(cudaFree(d_rstd2));
    floatX* xb[] = {d_x, d_dout, d_dout2, d_out, d_dinp};
    for (floatX* p : xb) cudaCheck(cudaFree(p));
    cudaCheck(cudaFree(d_cs));
}

int main(int argc, char** argv) {
    HostRng rng = {dev_init(argc, argv, "rope: 3D RoPE table, rotation and its inverse")};
    Size sizes[] = {
        {2, 3, 5, 2, 2, 12, 0},       // smallest split: 6 pairs = 2 + 2 + 2
        {3, 4, 7, 1, 3, 64, 0},       // head dim 64 (the built-in world preset): 32 pairs = 12 + 10 + 10
        {5, 6, 9, 2, 4, 128, 0},      // head dim 128: 22 + 21 + 21
        {21, 30, 52, 1, 12, 128, 1},  // Wan 1.3B, 480x832x81: L 32760, D 1536
        {21, 30, 52, 1, 40, 128, 1},  // Wan 14B heads at 480p: D 5120
    };
    for (Size s : sizes) test_size(s, &rng);
    return dev_finish("rope");
}
