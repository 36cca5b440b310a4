// dev/cuda/rmsnorm.cu: kernels/rmsnorm.cuh against its CPU twin, cpu/layers.h rmsnorm_forward / rmsnorm_backward, in double.
//
// At each size (N rows × C = the model dim, all heads together):
//   forward    out = x·rstd·w   floatX, rtol TOL_X;  rstd fp32, rtol 1e-5
//   backward   dinp floatX (overwritten), rtol TOL_X;  dw (+= into random values) fp32 sum over N rows, rtol 1e-4;
//              bitwise repeatable; in place (dinp == dout) gives the same bits
// Timing at the Wan sizes, bytes moved per call (X = sizeof(floatX)):
//   forward:  x X·N·C read + out X·N·C written + rstd 4·N
//   backward: dout, x X·N·C each read + dinp X·N·C written + rstd 4·N + partials C floats per 32 rows, written and read
#include "dev_common.cuh"
#include "../../kernels/rmsnorm.cuh"

typedef struct { int N, C, time; } Size;

static void test_size(Size s, HostRng* rng) {
    if (dev_skip((size_t)s.N * s.C, "this size")) return;
    const int N = s.N, C = s.C;
    const size_t NC = (size_t)N * C;
    const float eps = 1e-6f;
    printf("\n  N %d  C %d\n", N, C);

    // q/k projections: rows of different scales
    std::vector<float> x(NC);
    for (int n = 0; n < N; n++) {
        float sd = (float)(0.2 + 3 * host_rng_uniform(rng));
        for (int c = 0; c < C; c++) x[(size_t)n * C + c] = sd * (float)host_rng_normal(rng);
    }
    round_to<floatX>(x);
    std::vector<float> w = rand_uniform(C, rng, 0.5f, 1.5f);
    std::vector<float> dout = rand_uniform(NC, rng, -1.f, 1.f); round_to<floatX>(dout);
    std::vector<float> dw0 = rand_uniform(C, rng, -1.f, 1.f);

    floatX *d_x = dev_upload<floatX>(x), *d_dout = dev_upload<floatX>(dout), *d_dout2 = dev_upload<floatX>(dout);
    floatX *d_out = dev_alloc<floatX>(NC), *d_dinp = dev_alloc<floatX>(NC);
    float *d_w = dev_upload<float>(w), *d_rstd = dev_alloc<float>(N), *d_dw = dev_upload<float>(dw0), *d_dw2 = dev_upload<float>(dw0);
    float* d_scratch = dev_alloc<float>(rmsnorm_backward_scratch_floats(N, C));

    std::vector<double> xd = to_double(x), wd = to_double(w), doutd = to_double(dout);
    std::vector<double> out_ref(NC), rstd_ref(N), dinp_ref(NC, 0.0), dw_ref = to_double(dw0);
    rmsnorm_forward(out_ref.data(), rstd_ref.data(), xd.data(), wd.data(), N, C, (double)eps);
    rmsnorm_backward(dinp_ref.data(), dw_ref.data(), doutd.data(), xd.data(), wd.data(), rstd_ref.data(), N, C);

    dev_poison(d_out, NC * sizeof(floatX)); dev_poison(d_rstd, N * 4);
    rmsnorm_forward(d_out, d_rstd, d_x, d_w, N, C, eps, 0);
    printf("  forward\n");
    check("out", dev_download(d_out, NC), out_ref, TOL_X, 1e-5);
    check("rstd", dev_download(d_rstd, N), rstd_ref, 1e-5, 1e-6);

    dev_poison(d_dinp, NC * sizeof(floatX));
    rmsnorm_backward(d_dinp, d_dw, d_scratch, d_dout, d_x, d_w, d_rstd, N, C, 0);
    printf("  backward\n");
    check("dinp", dev_download(d_dinp, NC), dinp_ref, TOL_X, 1e-5);
    check("dw (+=)", dev_download(d_dw, C), dw_ref, 1e-4, 1e-4);
    rmsnorm_backward(d_dout2, d_dw2, d_scratch, d_dout2, d_x, d_w, d_rstd, N, C, 0);   // in place: dinp == dout
    check_true("in place and bitwise repeatable", dev_same_bits(d_dinp, d_dout2, NC * sizeof(floatX)) && dev_same_bits(d_dw, d_dw2, C * 4));

    if (s.time) {
        size_t X = sizeof(floatX), nchunks = reduce_num_chunks(N);
        float ms = bench_ms([&] { rmsnorm_forward(d_out, d_rstd, d_x, d_w, N, C, eps, 0); });
        report_bw("forward", 2.0 * NC * X + 4.0 * N, ms);
        ms = bench_ms([&] { rmsnorm_backward(d_dinp, d_dw, d_scratch, d_dout, d_x, d_w, d_rstd, N, C, 0); });
        report_bw("backward", 3.0 * NC * X + 4.0 * N + 2.0 * nchunks * C * 4, ms);
    }
    floatX* xb[] = {d_x, d_dout, d_dout2, d_out, d_dinp};
    for (floatX* p : xb) cudaCheck(cudaFree(p));
    float* fb[] = {d_w, d_rstd, d_dw, d_dw2, d_scratch};
    for (float* p : fb) cudaCheck(cudaFree(p));
}

int main(int argc, char** argv) {
    HostRng rng = {dev_init(argc, argv, "rmsnorm: RMSNorm across all heads; forward and backward")};
    Size sizes[] = {
        {7, 19, 0},         // C below one warp
        {45, 1000, 0},      // C not a multiple of 32, rows not a multiple of 8 or 32
        {300, 1536, 0},
        {512, 1536, 0},     // the cross-attention keys: 512 text rows
        {77, 5120, 0},      // Wan 14B width
        {32760, 1536, 1},   // Wan 1.3B q or k, 480x832x81
        {8190, 5120, 1},    // Wan 14B width, a quarter of the tokens
    };
    for (Size s : sizes) test_size(s, &rng);
    return dev_finish("rmsnorm");
}
