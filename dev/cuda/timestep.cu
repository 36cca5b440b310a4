// dev/cuda/timestep.cu: kernels/timestep.cuh against its CPU twin, cpu/layers.h sinusoid_forward (double).
//
//   out [B, freq_dim] = [cos(t·ω_k) | sin(t·ω_k)] fp32 from double math: rtol 1e-6 + 1e-7 abs (one fp32 rounding)
// Timesteps: fractional ones in [0, 1000] (training feeds 1000·σ) and integers (the sampler truncates).
// The kernel is launch-bound (a few KB); the timing says so rather than claiming a bandwidth. Bytes: 8·B + 4·B·freq_dim.
#include "dev_common.cuh"
#include "../../kernels/timestep.cuh"

static void test_size(int B, int freq_dim, int time, HostRng* rng) {
    if (dev_skip((size_t)B * freq_dim, "this size")) return;
    printf("\n  B %d  freq_dim %d\n", B, freq_dim);
    std::vector<double> t(B);
    for (int b = 0; b < B; b++) t[b] = b % 2 ? floor(1000.0 * host_rng_uniform(rng)) : 1000.0 * host_rng_uniform(rng);
    if (B > 2) { t[0] = 0.0; t[1] = 999.0; }
    double* d_t = (double*)cuda_malloc_named(B * sizeof(double), "timesteps", "use a smaller B");
    cudaCheck(cudaMemcpy(d_t, t.data(), B * sizeof(double), cudaMemcpyHostToDevice));
    float* d_out = dev_alloc<float>((size_t)B * freq_dim);
    std::vector<double> ref((size_t)B * freq_dim);
    for (int b = 0; b < B; b++) sinusoid_forward(&ref[(size_t)b * freq_dim], t[b], freq_dim);
    dev_poison(d_out, (size_t)B * freq_dim * 4);
    timestep_sinusoid_forward(d_out, d_t, B, freq_dim, 0);
    check("sinusoid [cos | sin]", dev_download(d_out, (size_t)B * freq_dim), ref, 1e-6, 1e-7);
    if (time) {
        float ms = bench_ms([&] { timestep_sinusoid_forward(d_out, d_t, B, freq_dim, 0); });
        report_bw("sinusoid (launch-bound)", 8.0 * B + 4.0 * B * freq_dim, ms);
    }
    cudaCheck(cudaFree(d_t)); cudaCheck(cudaFree(d_out));
}

int main(int argc, char** argv) {
    HostRng rng = {dev_init(argc, argv, "timestep: sinusoidal time embedding")};
    test_size(1, 256, 0, &rng);
    test_size(37, 256, 0, &rng);   // Wan freq_dim
    test_size(5, 64, 0, &rng);     // the tiny preset
    test_size(3, 10, 0, &rng);     // half = 5, odd
    test_size(64, 256, 1, &rng);
    return dev_finish("timestep");
}
