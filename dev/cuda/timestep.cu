// dev/cuda/timestep.cu: kernels/timestep.cuh against its CPU twin, cpu/layers.h sinusoid_forward (double).
//
//   out [B, freq_dim] = [cos(t·ω_k) | sin(t·ω_k)] fp32 from double math: rtol 1e-6 + 1e-7 abs (one fp32 rounding)
// Timesteps: fractional ones in [0, 1000] (training feeds 1000·σ) and integers (the sampler truncates).
// The table is built on the host (a few KB per step; no device code needs double pow/cos/sin), so nothing is timed;
// the check goes through the device (upload, download) as the model uses it.
#include "dev_common.cuh"
#include "../../kernels/timestep.cuh"

static void test_size(int B, int freq_dim, int time, HostRng* rng) {
    if (dev_skip((size_t)B * freq_dim, "this size")) return;
    printf("\n  B %d  freq_dim %d\n", B, freq_dim);
    std::vector<double> t(B);
    for (int b = 0; b < B; b++) t[b] = b % 2 ? floor(1000.0 * host_rng_uniform(rng)) : 1000.0 * host_rng_uniform(rng);
    if (B > 2) { t[0] = 0.0; t[1] = 999.0; }
    (void)time;
    float* d_out = dev_alloc<float>((size_t)B * freq_dim);
    std::vector<double> ref((size_t)B * freq_dim);
    for (int b = 0; b < B; b++) sinusoid_forward(&ref[(size_t)b * freq_dim], t[b], freq_dim);
    std::vector<float> host((size_t)B * freq_dim, NAN);
    timestep_sinusoid_host(host.data(), t.data(), B, freq_dim);
    dev_poison(d_out, (size_t)B * freq_dim * 4);
    dev_set(d_out, host);
    check("sinusoid [cos | sin]", dev_download(d_out, (size_t)B * freq_dim), ref, 1e-6, 1e-7);
    cudaCheck(cudaFree(d_out));
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
