// dev/cuda/layernorm.cu: kernels/layernorm.cuh against its CPU twin, cpu/layers.h layernorm_forward + modulate_forward
// (and their backwards), in double.
//
// At each size (B samples × L tokens × C):
//   modulate forward    out = LN(x)·(1 + scale[b]) + shift[b]   floatX, rtol TOL_X;  mean, rstd fp32, rtol 1e-5
//   modulate backward   dx (+= into random values) fp32 rtol 1e-5;  d shift, d scale (+= into d mod [B, 6, C]; the
//                       other four chunks must stay untouched) fp32 sums over L tokens, rtol 1e-4;  bitwise repeatable
//   affine forward      out = LN(x)·w + b;  affine backward dx, dw, db (sums over all B·L tokens), same tolerances
//   residual + LN       x_out = x_in + y·gate[b] and the modulated or affine LN of x_out in one pass: vs the CPU twin,
//                       and bit for bit vs residual_forward_out + layernorm_*_forward (version 2 where C allows it)
// Timing at the Wan sizes, bytes moved per call (N = B·L rows, X = sizeof(floatX)):
//   forward:  x 4·N·C read + out X·N·C written + mean, rstd 8·N written
//   residual + LN fused: x_in 4·N·C + y X·N·C read, x_out 4·N·C + out X·N·C written (unfused: x_out read back, 4·N·C more)
//   backward: dout X·N·C + x 4·N·C read, dx 8·N·C read and written, mean, rstd 8·N read,
//             partials 2C floats per 32-row chunk written once and read once
#include "dev_common.cuh"
#include "../../kernels/layernorm.cuh"

typedef struct { int B, L, C, time; } Size;

static void test_size(Size s, HostRng* rng) {
    if (dev_skip((size_t)s.B * s.L * s.C, "this size")) return;
    const int B = s.B, L = s.L, C = s.C;
    const size_t N = (size_t)B * L, NC = N * C, M = (size_t)B * 6 * C;
    const float eps = 1e-6f;
    printf("\n  B %d  L %d  C %d\n", B, L, C);

    // a residual stream with a per-row offset and spread, which LayerNorm must remove
    std::vector<float> x(NC);
    for (size_t n = 0; n < N; n++) {
        float off = (float)(4 * host_rng_uniform(rng) - 2), sd = (float)(0.5 + 2.5 * host_rng_uniform(rng));
        for (int c = 0; c < C; c++) x[n * C + c] = off + sd * (float)host_rng_normal(rng);
    }
    std::vector<float> mod = rand_uniform(M, rng, -0.5f, 0.5f);       // [B, 6, C]: shift = chunk 0, scale = chunk 1
    std::vector<float> w = rand_uniform(C, rng, 0.5f, 1.5f), bias = rand_uniform(C, rng, -0.5f, 0.5f);
    std::vector<float> dout = rand_uniform(NC, rng, -1.f, 1.f); round_to<floatX>(dout);
    std::vector<float> dx0 = rand_uniform(NC, rng, -1.f, 1.f);        // gradient already in the stream: kernels add to it
    std::vector<float> dmod0 = rand_uniform(M, rng, -1.f, 1.f);
    std::vector<float> dw0 = rand_uniform(C, rng, -1.f, 1.f), db0 = rand_uniform(C, rng, -1.f, 1.f);

    float *d_x = dev_upload<float>(x), *d_mod = dev_upload<float>(mod), *d_w = dev_upload<float>(w), *d_b = dev_upload<float>(bias);
    floatX* d_dout = dev_upload<floatX>(dout);
    floatX* d_out = dev_alloc<floatX>(NC);
    float *d_mean = dev_alloc<float>(N), *d_rstd = dev_alloc<float>(N);
    float *d_dx = dev_upload<float>(dx0), *d_dmod = dev_upload<float>(dmod0), *d_dw = dev_upload<float>(dw0), *d_db = dev_upload<float>(db0);
    float *d_dx2 = dev_upload<float>(dx0), *d_dmod2 = dev_upload<float>(dmod0);
    size_t scratch_n = std::max(layernorm_backward_scratch_floats(B, L, C), layernorm_backward_scratch_floats(1, (int)N, C));
    float* d_scratch = dev_alloc<float>(scratch_n);

    // ---- modulate: CPU twin, sample by sample (layers.h takes one shift/scale vector)
    std::vector<double> xd = to_double(x), modd = to_double(mod), doutd = to_double(dout);
    std::vector<double> xhat(NC), out_ref(NC), mean_ref(N), rstd_ref(N);
    for (int b = 0; b < B; b++) {
        size_t o = (size_t)b * L * C;
        layernorm_forward(&xhat[o], &mean_ref[(size_t)b * L], &rstd_ref[(size_t)b * L], &xd[o], NULL, NULL, L, C, (double)eps);
        modulate_forward(&out_ref[o], &xhat[o], &modd[(size_t)b * 6 * C], &modd[(size_t)b * 6 * C + C], L, C);
    }
    dev_poison(d_out, NC * sizeof(floatX)); dev_poison(d_mean, N * 4); dev_poison(d_rstd, N * 4);
    layernorm_modulate_forward<floatX>(d_out, d_mean, d_rstd, d_x, d_mod, d_mod + C, 6 * C, B, L, C, eps, 0);
    printf("  modulate forward\n");
    check("out", dev_download(d_out, NC), out_ref, TOL_X, 1e-5);
    check("mean", dev_download(d_mean, N), mean_ref, 1e-5, 1e-5);
    check("rstd", dev_download(d_rstd, N), rstd_ref, 1e-5, 1e-6);

    std::vector<double> dx_ref = to_double(dx0), dmod_ref = to_double(dmod0), dxhat((size_t)L * C);
    for (int b = 0; b < B; b++) {
        size_t o = (size_t)b * L * C;
        std::fill(dxhat.begin(), dxhat.end(), 0.0);
        modulate_backward(dxhat.data(), &dmod_ref[(size_t)b * 6 * C], &dmod_ref[(size_t)b * 6 * C + C], &doutd[o], &xhat[o],
                          &modd[(size_t)b * 6 * C + C], L, C);
        layernorm_backward(&dx_ref[o], NULL, NULL, dxhat.data(), &xd[o], NULL, &mean_ref[(size_t)b * L], &rstd_ref[(size_t)b * L], L, C);
    }
    layernorm_modulate_backward<floatX>(d_dx, d_dmod, d_dmod + C, d_scratch, d_dout, d_x, d_mean, d_rstd, d_mod + C, 6 * C, B, L, C, 0);
    printf("  modulate backward\n");
    check("dx (+=)", dev_download(d_dx, NC), dx_ref, 1e-5, 1e-5);
    check("d mod (+= shift, scale chunks)", dev_download(d_dmod, M), dmod_ref, 1e-4, 1e-4);
    layernorm_modulate_backward<floatX>(d_dx2, d_dmod2, d_dmod2 + C, d_scratch, d_dout, d_x, d_mean, d_rstd, d_mod + C, 6 * C, B, L, C, 0);
    check_true("bitwise repeatable (dx, d mod)", dev_same_bits(d_dx, d_dx2, NC * 4) && dev_same_bits(d_dmod, d_dmod2, M * 4));

    // ---- affine (norm3): all B·L rows share w, b
    std::vector<double> wd = to_double(w), bd = to_double(bias);
    layernorm_forward(out_ref.data(), mean_ref.data(), rstd_ref.data(), xd.data(), wd.data(), bd.data(), (int)N, C, (double)eps);
    dev_poison(d_out, NC * sizeof(floatX)); dev_poison(d_mean, N * 4); dev_poison(d_rstd, N * 4);
    layernorm_affine_forward<floatX>(d_out, d_mean, d_rstd, d_x, d_w, d_b, (int)N, C, eps, 0);
    printf("  affine forward\n");
    check("out", dev_download(d_out, NC), out_ref, TOL_X, 1e-5);
    check("mean", dev_download(d_mean, N), mean_ref, 1e-5, 1e-5);
    check("rstd", dev_download(d_rstd, N), rstd_ref, 1e-5, 1e-6);

    dx_ref = to_double(dx0);
    std::vector<double> dw_ref = to_double(dw0), db_ref = to_double(db0);
    layernorm_backward(dx_ref.data(), dw_ref.data(), db_ref.data(), doutd.data(), xd.data(), wd.data(), mean_ref.data(), rstd_ref.data(), (int)N, C);
    dev_set(d_dx, dx0);
    layernorm_affine_backward<floatX>(d_dx, d_dw, d_db, d_scratch, d_dout, d_x, d_mean, d_rstd, d_w, (int)N, C, 0);
    printf("  affine backward\n");
    check("dx (+=)", dev_download(d_dx, NC), dx_ref, 1e-5, 1e-5);
    check("dw (+=)", dev_download(d_dw, C), dw_ref, 1e-4, 1e-4);
    check("db (+=)", dev_download(d_db, C), db_ref, 1e-4, 1e-4);

    // ---- the gated residual add fused with the norm after it (layernorm_residual_forward_): x_out = x_in + y·gate[b],
    // then the modulated (FFN's norm2) or the affine (norm3) LN of x_out. Against the CPU twin in double, and bit for bit
    // against the unfused pair residual_forward_out + layernorm_*_forward (out, mean, rstd and x_out), out of place and
    // in place (x_out = x_in). gate: chunk 2 of mod.
    std::vector<float> y = rand_uniform(NC, rng, -2.f, 2.f); round_to<floatX>(y);
    {
        const std::vector<double> yd = to_double(y);
        floatX *d_y = dev_upload<floatX>(y), *d_out2 = dev_alloc<floatX>(NC);
        float *d_xo = dev_alloc<float>(NC), *d_xo2 = dev_alloc<float>(NC), *d_mean2 = dev_alloc<float>(N), *d_rstd2 = dev_alloc<float>(N);
        const int v2 = layernorm_v2_threads((int)N, C, 0) > 0;
        for (int form = 0; form < 2; form++)          // 0: modulate (shift chunk 0, scale chunk 1), 1: affine (w, b)
            for (int gated = 1; gated >= 0; gated--) {
                const float* gate = gated ? d_mod + 2 * C : NULL;
                std::vector<double> xr = xd;          // x_out in double
                for (size_t n = 0; n < N; n++)
                    for (int c = 0; c < C; c++) xr[n * C + c] += yd[n * C + c] * (gated ? modd[(n / L) * 6 * C + 2 * C + c] : 1.0);
                std::vector<double> ref(NC), m_ref(N), r_ref(N);
                if (form == 0)
                    for (int b = 0; b < B; b++) {
                        size_t o = (size_t)b * L * C;
                        layernorm_forward(&xhat[o], &m_ref[(size_t)b * L], &r_ref[(size_t)b * L], &xr[o], NULL, NULL, L, C, (double)eps);
                        modulate_forward(&ref[o], &xhat[o], &modd[(size_t)b * 6 * C], &modd[(size_t)b * 6 * C + C], L, C);
                    }
                else layernorm_forward(ref.data(), m_ref.data(), r_ref.data(), xr.data(), wd.data(), bd.data(), (int)N, C, (double)eps);
                printf("  residual + %s LN in one pass (%s, %s)\n", form ? "affine" : "modulated", gated ? "gated" : "plain add",
                       v2 ? "version 2" : "fallback: residual_forward_out + version 1");
                auto fused = [&](float* xo, const float* xi) {
                    if (form == 0) residual_layernorm_modulate_forward<floatX, floatX>(d_out, d_mean, d_rstd, xo, xi, d_y, gate, d_mod, d_mod + C,
                                                                                       6 * C, B, L, C, eps, 0);
                    else residual_layernorm_affine_forward<floatX, floatX>(d_out, d_mean, d_rstd, xo, xi, d_y, gate, 6 * C, d_w, d_b, B, L, C, eps, 0);
                };
                dev_poison(d_out, NC * sizeof(floatX)); dev_poison(d_mean, N * 4); dev_poison(d_rstd, N * 4); dev_poison(d_xo, NC * 4);
                fused(d_xo, d_x);
                check("x_out", dev_download(d_xo, NC), xr, 1e-5, 1e-6);
                check("out", dev_download(d_out, NC), ref, TOL_X, 1e-5);
                check("mean", dev_download(d_mean, N), m_ref, 1e-5, 1e-5);
                check("rstd", dev_download(d_rstd, N), r_ref, 1e-5, 1e-6);
                residual_forward_out<floatX>(d_xo2, d_x, d_y, gate, 6 * C, B, L, C, 0);
                if (form == 0) layernorm_modulate_forward<floatX>(d_out2, d_mean2, d_rstd2, d_xo2, d_mod, d_mod + C, 6 * C, B, L, C, eps, 0);
                else layernorm_affine_forward<floatX>(d_out2, d_mean2, d_rstd2, d_xo2, d_w, d_b, (int)N, C, eps, 0);
                check_true("bitwise equal to the unfused pair (x_out, out, mean, rstd)",
                           dev_same_bits(d_xo, d_xo2, NC * 4) && dev_same_bits(d_out, d_out2, NC * sizeof(floatX)) &&
                           dev_same_bits(d_mean, d_mean2, N * 4) && dev_same_bits(d_rstd, d_rstd2, N * 4));
                dev_set(d_xo, x);
                fused(d_xo, d_xo);
                check_true("in place (x_out = x_in): bitwise equal too", dev_same_bits(d_xo, d_xo2, NC * 4) &&
                           dev_same_bits(d_out, d_out2, NC * sizeof(floatX)));
            }
        if (s.time) {
            const size_t X = sizeof(floatX);
            float ms = bench_ms([&] { residual_layernorm_modulate_forward<floatX, floatX>(d_out, d_mean, d_rstd, d_xo, d_x, d_y, d_mod + 2 * C,
                                                                                          d_mod, d_mod + C, 6 * C, B, L, C, eps, 0); });
            report_bw("residual + modulated LN, fused", (double)NC * (4 + X + 4 + X) + 8.0 * N, ms);
            ms = bench_ms([&] {
                residual_forward_out<floatX>(d_xo2, d_x, d_y, d_mod + 2 * C, 6 * C, B, L, C, 0);
                layernorm_modulate_forward<floatX>(d_out2, d_mean2, d_rstd2, d_xo2, d_mod, d_mod + C, 6 * C, B, L, C, eps, 0);
            });
            report_bw("the same unfused (2 passes)", (double)NC * (4 + X + 4 + 4 + X) + 8.0 * N, ms);
        }
        float* fb[] = {d_xo, d_xo2, d_mean2, d_rstd2};
        for (float* p : fb) cudaCheck(cudaFree(p));
        cudaCheck(cudaFree(d_y)); cudaCheck(cudaFree(d_out2));
    }

    if (s.time) {
        size_t X = sizeof(floatX), nchunks = reduce_num_chunks(L);
        float ms = bench_ms([&] { layernorm_modulate_forward<floatX>(d_out, d_mean, d_rstd, d_x, d_mod, d_mod + C, 6 * C, B, L, C, eps, 0); });
        report_bw("modulate forward", (double)NC * (4 + X) + 8.0 * N, ms);
        ms = bench_ms([&] { layernorm_modulate_backward<floatX>(d_dx, d_dmod, d_dmod + C, d_scratch, d_dout, d_x, d_mean, d_rstd, d_mod + C,
                                                                6 * C, B, L, C, 0); });
        report_bw("modulate backward", (double)NC * (X + 4 + 8) + 8.0 * N + 2.0 * B * nchunks * 2 * C * 4, ms);
    }
    float* bufs[] = {d_x, d_mod, d_w, d_b, d_mean, d_rstd, d_dx, d_dmod, d_dw, d_db, d_dx2, d_dmod2, d_scratch};
    for (float* p : bufs) cudaCheck(cudaFree(p));
    cudaCheck(cudaFree(d_dout)); cudaCheck(cudaFree(d_out));
}

int main(int argc, char** argv) {
    HostRng rng = {dev_init(argc, argv, "layernorm: LN + AdaLN modulation, affine LN; forward and backward")};
    Size sizes[] = {
        {1, 5, 19, 0},        // C below one warp
        {2, 37, 96, 0},
        {1, 45, 1000, 0},     // C not a multiple of 32, rows not a multiple of 8 or 32
        {3, 100, 1536, 0},
        {2, 77, 5120, 0},     // Wan 14B width (40 KB of shared memory in the backward)
        {1, 40, 6500, 0},     // over 48 KB of shared memory: the opt-in path
        {1, 32760, 1536, 1},  // Wan 1.3B, 480x832x81
        {1, 8190, 5120, 1},   // Wan 14B width, a quarter of the tokens
    };
    for (Size s : sizes) test_size(s, &rng);
    return dev_finish("layernorm");
}
