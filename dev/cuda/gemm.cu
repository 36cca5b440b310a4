// dev/cuda/gemm.cu: kernels/gemm.cuh (cuBLASLt) against its CPU twin, cpu/layers.h linear_forward / linear_backward, in
// double. Small sizes compare every element; Wan sizes compare 4096 random elements of each output (the same sums,
// taken only where sampled) and every element of dbias.
//
// At each (N, IC, OC), inputs rounded to T:
//   forward              out = inp·Wᵀ + b                          T: rtol TOL_X + atol (5e-3 bf16, 5e-5 fp32)·max|ref|
//   forward, GELU        out = gelu_tanh(inp·Wᵀ + b), pre_gelu = inp·Wᵀ + b   (same tolerance; the fp32 build also
//                        tells cuBLASLt's GELU apart from the erf form, which differs by up to 1e-3)
//   backward dinp        dinp = dout·W (overwritten), dinp += dout·W (accumulate), dinp = (dout·W)·gelu'(pre) (DGELU)
//   backward dW, db      dW += doutᵀ·inp, db += Σ_n dout  fp32 (+= into random values): rtol 1e-4 + 1e-4·max|ref|;
//                        bitwise repeatable
// The bf16 path accumulates in fp32 but may keep split-K partial sums in bf16; the absolute part of the tolerance
// allows one bf16 rounding of a partial of the output's typical size.
// Also T = float in the bf16 build: the head and time-embedding Linears that the official code runs in fp32.
// Built with -DGEMM_OWN (make gemm_own, gemm_own_fp32) the same checks run against the in-repo tiled GEMM
// (kernels/gemm_tiled.cuh), which needs no cuBLAS (so a functional simulator can run it).
// Timing at the Wan 1.3B / 14B block shapes (32760 tokens): TFLOP/s = 2·N·IC·OC / time, against ~800 TFLOP/s dense
// bf16 (a bf16 8192^3 cuBLAS GEMM measures ~790 on an H100). Each GEMM reads N·IC + OC·IC + N·OC elements at least.
#include "dev_common.cuh"
#ifdef GEMM_OWN
#include "../../kernels/gemm_tiled.cuh"   // the gemm_own build: the in-repo tiled GEMM, same functions
#else
#include "../../kernels/gemm.cuh"
#endif

#define SAMPLES 4096

typedef struct { int r, c; } Pos;

static double gelu_d(double x) { return 0.5 * x * (1 + tanh(GELU_K * (x + 0.044715 * x * x * x))); }
static double gelu_grad_d(double x) {
    double th = tanh(GELU_K * (x + 0.044715 * x * x * x));
    return 0.5 * (1 + th) + 0.5 * x * (1 - th * th) * GELU_K * (1 + 3 * 0.044715 * x * x);
}

// every position of a rows × cols output, or SAMPLES random ones
static std::vector<Pos> positions(int rows, int cols, int full, HostRng* rng) {
    std::vector<Pos> p;
    if (full) { for (int r = 0; r < rows; r++) for (int c = 0; c < cols; c++) p.push_back({r, c}); }
    else for (int s = 0; s < SAMPLES; s++) p.push_back({(int)(host_rng_next(rng) % rows), (int)(host_rng_next(rng) % cols)});
    return p;
}
static std::vector<float> gather(const std::vector<float>& m, int cols, const std::vector<Pos>& p) {
    std::vector<float> g(p.size());
    for (size_t k = 0; k < p.size(); k++) g[k] = m[(size_t)p[k].r * cols + p[k].c];
    return g;
}

template <typename T>
static void test_gemm(int N, int IC, int OC, int gelu, int time, HostRng* rng) {
    if (dev_skip((size_t)N * (IC > OC ? IC : OC), "this size")) return;
    const char* tname = sizeof(T) == 4 ? "fp32" : "bf16";
    const int full = (double)N * IC * OC <= (double)(1 << 26);
    const double rtol = sizeof(T) == 4 ? 1e-5 : 1e-2, afrac = sizeof(T) == 4 ? 5e-5 : 5e-3;
    printf("\n  N %d  IC %d  OC %d  (%s%s, %s check)\n", N, IC, OC, tname, gelu ? ", GELU" : "", full ? "full" : "sampled");
    const size_t nI = (size_t)N * IC, nW = (size_t)OC * IC, nO = (size_t)N * OC;
    const float ws = 1.f / sqrtf((float)IC);
    std::vector<float> inp = rand_uniform(nI, rng, -1.f, 1.f), W = rand_uniform(nW, rng, -2 * ws, 2 * ws), b = rand_uniform(OC, rng, -.5f, .5f);
    std::vector<float> dout = rand_uniform(nO, rng, -1.f, 1.f), pre = rand_uniform(nI, rng, -3.f, 3.f), dinp0 = rand_uniform(nI, rng, -1.f, 1.f);
    round_to<T>(inp); round_to<T>(W); round_to<T>(b); round_to<T>(dout); round_to<T>(pre); round_to<T>(dinp0);
    std::vector<float> dW0 = rand_uniform(nW, rng, -1.f, 1.f), db0 = rand_uniform(OC, rng, -1.f, 1.f);

    T *d_inp = dev_upload<T>(inp), *d_W = dev_upload<T>(W), *d_b = dev_upload<T>(b), *d_dout = dev_upload<T>(dout), *d_pre = dev_upload<T>(pre);
    T *d_out = dev_alloc<T>(nO), *d_preout = dev_alloc<T>(nO), *d_dinp = dev_alloc<T>(nI);
    float *d_dW = dev_upload<float>(dW0), *d_db = dev_upload<float>(db0), *d_dW2 = dev_upload<float>(dW0), *d_db2 = dev_upload<float>(db0);
    float* d_scratch = dev_alloc<float>(matmul_backward_scratch_floats(N, OC));

    // ---- references at the checked positions
    std::vector<Pos> po = positions(N, OC, full, rng), pi = positions(N, IC, full, rng), pw = positions(OC, IC, full, rng);
    std::vector<double> acc(po.size()), dI(pi.size()), dW(pw.size()), db(OC);
    if (full) {   // cpu/layers.h itself
        std::vector<double> id = to_double(inp), wd = to_double(W), bd = to_double(b), gd = to_double(dout), o(nO), di(nI, 0.0), dw = to_double(dW0), dbb = to_double(db0);
        linear_forward(o.data(), id.data(), wd.data(), bd.data(), N, IC, OC);
        linear_backward(di.data(), dw.data(), dbb.data(), gd.data(), id.data(), wd.data(), N, IC, OC);
        for (size_t k = 0; k < po.size(); k++) acc[k] = o[(size_t)po[k].r * OC + po[k].c];
        for (size_t k = 0; k < pi.size(); k++) dI[k] = di[(size_t)pi[k].r * IC + pi[k].c];
        for (size_t k = 0; k < pw.size(); k++) dW[k] = dw[(size_t)pw[k].r * IC + pw[k].c];
        db = dbb;
    } else {      // the same sums, only where sampled
#pragma omp parallel for
        for (size_t k = 0; k < po.size(); k++) {
            double s = b[po[k].c];
            for (int i = 0; i < IC; i++) s += (double)inp[(size_t)po[k].r * IC + i] * W[(size_t)po[k].c * IC + i];
            acc[k] = s;
        }
#pragma omp parallel for
        for (size_t k = 0; k < pi.size(); k++) {
            double s = 0;
            for (int o = 0; o < OC; o++) s += (double)dout[(size_t)pi[k].r * OC + o] * W[(size_t)o * IC + pi[k].c];
            dI[k] = s;
        }
#pragma omp parallel for
        for (size_t k = 0; k < pw.size(); k++) {
            double s = dW0[(size_t)pw[k].r * IC + pw[k].c];
            for (int n = 0; n < N; n++) s += (double)dout[(size_t)n * OC + pw[k].r] * inp[(size_t)n * IC + pw[k].c];
            dW[k] = s;
        }
#pragma omp parallel for
        for (int o = 0; o < OC; o++) {
            double s = db0[o];
            for (int n = 0; n < N; n++) s += dout[(size_t)n * OC + o];
            db[o] = s;
        }
    }

    // ---- forward
    dev_poison(d_out, nO * sizeof(T)); dev_poison(d_preout, nO * sizeof(T));
    matmul_forward<T>(d_out, NULL, d_inp, d_W, d_b, N, IC, OC, 0, 0);
    check("out = inp·Wᵀ + b", gather(dev_download(d_out, nO), OC, po), acc, rtol, afrac);
    if (gelu) {
        std::vector<double> g(acc.size());
        for (size_t k = 0; k < acc.size(); k++) g[k] = gelu_d(acc[k]);
        dev_poison(d_out, nO * sizeof(T));
        matmul_forward<T>(d_out, d_preout, d_inp, d_W, d_b, N, IC, OC, 1, 0);
        check("out = gelu(inp·Wᵀ + b)", gather(dev_download(d_out, nO), OC, po), g, rtol, afrac);
        check("pre_gelu (aux)", gather(dev_download(d_preout, nO), OC, po), acc, rtol, afrac);
    }
    // ---- backward: dinp
    dev_poison(d_dinp, nI * sizeof(T));
    matmul_backward<T>(d_dinp, NULL, NULL, NULL, d_dout, d_inp, d_W, NULL, N, IC, OC, 0, 0);
    check("dinp = dout·W", gather(dev_download(d_dinp, nI), IC, pi), dI, rtol, afrac);
    {
        std::vector<double> r(dI.size());
        for (size_t k = 0; k < dI.size(); k++) r[k] = dinp0[(size_t)pi[k].r * IC + pi[k].c] + dI[k];
        dev_set(d_dinp, dinp0);
        matmul_backward<T>(d_dinp, NULL, NULL, NULL, d_dout, d_inp, d_W, NULL, N, IC, OC, 1, 0);
        check("dinp += dout·W", gather(dev_download(d_dinp, nI), IC, pi), r, rtol, afrac);
    }
    if (IC % 8 == 0) {
        std::vector<double> r(dI.size());
        for (size_t k = 0; k < dI.size(); k++) r[k] = dI[k] * gelu_grad_d(pre[(size_t)pi[k].r * IC + pi[k].c]);
        dev_poison(d_dinp, nI * sizeof(T));
        matmul_backward<T>(d_dinp, NULL, NULL, NULL, d_dout, d_inp, d_W, d_pre, N, IC, OC, 0, 0);
        check("dinp = (dout·W)·gelu'(pre) (DGELU)", gather(dev_download(d_dinp, nI), IC, pi), r, rtol, afrac);
    }
    // ---- backward: dW, db
    matmul_backward<T>(NULL, d_dW, d_db, d_scratch, d_dout, d_inp, d_W, NULL, N, IC, OC, 0, 0);
    check("dW += doutᵀ·inp (fp32)", gather(dev_download(d_dW, nW), IC, pw), dW, 1e-4, 1e-4);
    check("db += Σ dout (fp32)", dev_download(d_db, OC), db, 1e-4, 1e-4);
    matmul_backward<T>(NULL, d_dW2, d_db2, d_scratch, d_dout, d_inp, d_W, NULL, N, IC, OC, 0, 0);
    check_true("dW, db bitwise repeatable", dev_same_bits(d_dW, d_dW2, nW * 4) && dev_same_bits(d_db, d_db2, OC * 4));

    if (time) {
        double flops = 2.0 * N * IC * OC;
        float ms = bench_ms([&] { matmul_forward<T>(d_out, gelu ? d_preout : NULL, d_inp, d_W, d_b, N, IC, OC, gelu, 0); });
        report_flops(gelu ? "forward (+bias, GELU, aux)" : "forward (+bias)", flops, ms);
        ms = bench_ms([&] { matmul_backward<T>(d_dinp, NULL, NULL, NULL, d_dout, d_inp, d_W, NULL, N, IC, OC, 0, 0); });
        report_flops("backward dinp", flops, ms);
        ms = bench_ms([&] { matmul_backward<T>(NULL, d_dW, NULL, NULL, d_dout, d_inp, d_W, NULL, N, IC, OC, 0, 0); });
        report_flops("backward dW (fp32 +=)", flops, ms);
        ms = bench_ms([&] { column_sum(d_db, d_scratch, d_dout, N, OC, 0); });
        report_bw("backward dbias (column sum)", (double)nO * sizeof(T) + 2.0 * reduce_num_chunks(N) * OC * 4, ms);
    }
    T* tb[] = {d_inp, d_W, d_b, d_dout, d_pre, d_out, d_preout, d_dinp};
    for (T* p : tb) cudaCheck(cudaFree(p));
    float* fb[] = {d_dW, d_db, d_dW2, d_db2, d_scratch};
    for (float* p : fb) cudaCheck(cudaFree(p));
}

int main(int argc, char** argv) {
#ifdef GEMM_OWN
    HostRng rng = {dev_init(argc, argv, "gemm_own: in-repo tiled GEMM Linear forward (bias, GELU) and backward (dinp, DGELU, dW, dbias)")};
#else
    HostRng rng = {dev_init(argc, argv, "gemm: cuBLASLt Linear forward (bias, GELU) and backward (dinp, DGELU, dW, dbias)")};
#endif
    gemm_init();
    test_gemm<floatX>(7, 24, 40, 1, 0, &rng);
    test_gemm<floatX>(33, 72, 136, 1, 0, &rng);
    test_gemm<floatX>(45, 999, 77, 0, 0, &rng);        // odd widths: unaligned rows, no GELU (needs OC % 8 == 0)
    test_gemm<floatX>(300, 64, 1536, 0, 0, &rng);      // patch embedding: 64 = 16·1·2·2 inputs per token
    test_gemm<floatX>(512, 4096, 1536, 1, 0, &rng);    // text embedding fc1 (sampled)
    test_gemm<float>(257, 1536, 64, 0, 0, &rng);       // the head, in fp32 as the official code runs it
    test_gemm<float>(3, 256, 1536, 0, 0, &rng);        // time embedding fc1, fp32
    test_gemm<floatX>(32760, 1536, 1536, 0, 1, &rng);  // Wan 1.3B q, k, v, o projections
    test_gemm<floatX>(32760, 1536, 8960, 1, 1, &rng);  // Wan 1.3B FFN up, GELU fused
    test_gemm<floatX>(32760, 8960, 1536, 0, 1, &rng);  // Wan 1.3B FFN down
    test_gemm<floatX>(32760, 5120, 13824, 1, 1, &rng); // Wan 14B FFN up
    gemm_free();
    return dev_finish("gemm");
}
