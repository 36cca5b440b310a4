// dev/cuda/adamw.cu: kernels/adamw.cuh against its CPU twin, the loop of cpu/teacher_cpu.h adamw_step, in double.
//
// Two consecutive steps (k = 10, 11, mid-training moments, a clipping factor, weight decay) over a flat buffer:
//   params fp32 rtol 1e-6 (+1e-7·max);  m, v fp32 rtol 1e-5;  the floatX copy equals the rounded master weights
//   exactly and the twin within TOL_X
//   adamw_grad_norm_squared: Σ g² in double, rtol 1e-10, bitwise repeatable
// Timing over the parameter count of Wan 1.3B (1,418,996,800; buffers filled on the device), bytes moved per call:
//   update: params, grads, m, v read (16 B) + params, m, v written (12 B) + the floatX copy written (X B) per parameter
//   grad norm: 4 B per parameter
#include "dev_common.cuh"
#include "../../kernels/adamw.cuh"

// the twin: adamw_step's loop (cpu/teacher_cpu.h) with the clip factor as grad_scale
static void adamw_twin(std::vector<double>& p, std::vector<double>& m, std::vector<double>& v, const std::vector<double>& g, double lr,
                       double b1, double b2, double eps, double wd, double grad_scale, long step) {
    double bc1 = 1 - pow(b1, (double)step), bc2 = 1 - pow(b2, (double)step), decay = 1 - lr * wd;
    for (size_t i = 0; i < p.size(); i++) {
        double gi = grad_scale * g[i];
        m[i] = b1 * m[i] + (1 - b1) * gi;
        v[i] = b2 * v[i] + (1 - b2) * gi * gi;
        p[i] = p[i] * decay - lr * (m[i] / bc1) / (sqrt(v[i] / bc2) + eps);
    }
}

static void test_size(size_t n, HostRng* rng) {
    if (dev_skip(n, "this size")) return;
    printf("\n  n %zu\n", n);
    const float lr = 1e-3f, b1 = 0.9f, b2 = 0.99f, eps = 1e-8f, wd = 0.01f, scale = 0.5f;
    std::vector<float> p = rand_uniform(n, rng, -1.f, 1.f), m = rand_uniform(n, rng, -1e-2f, 1e-2f), v = rand_uniform(n, rng, 0.f, 1e-4f);
    float *d_p = dev_upload<float>(p), *d_m = dev_upload<float>(m), *d_v = dev_upload<float>(v), *d_g = dev_alloc<float>(n);
    floatX* d_copy = dev_alloc<floatX>(n);
    std::vector<double> pr = to_double(p), mr = to_double(m), vr = to_double(v);
    std::vector<float> g;
    for (long step = 10; step <= 11; step++) {
        g = rand_uniform(n, rng, -2e-2f, 2e-2f);
        dev_set(d_g, g);
        dev_poison(d_copy, n * sizeof(floatX));
        adamw_update(d_p, d_copy, d_m, d_v, d_g, n, lr, b1, b2, eps, wd, scale, step, 0);
        adamw_twin(pr, mr, vr, to_double(g), lr, b1, b2, eps, wd, scale, step);
    }
    std::vector<float> p_gpu = dev_download(d_p, n), copy_gpu = dev_download(d_copy, n);
    check("params after 2 steps", p_gpu, pr, 1e-6, 1e-7);
    check("m", dev_download(d_m, n), mr, 1e-5, 1e-6);
    check("v", dev_download(d_v, n), vr, 1e-5, 1e-6);
    check("floatX copy vs twin", copy_gpu, pr, TOL_X, 1e-7);
    bool same = true;
    for (size_t i = 0; i < n; i++) same = same && copy_gpu[i] == to_float(from_float<floatX>(p_gpu[i]));
    check_true("floatX copy = rounded params", same);

    double* d_norm = dev_alloc<double>(2);
    double* d_scr = dev_alloc<double>(ADAMW_NORM_BLOCKS);
    adamw_grad_norm_squared(d_norm, d_scr, d_g, n, 0);
    adamw_grad_norm_squared(d_norm + 1, d_scr, d_g, n, 0);
    double norm[2], ref = 0;
    cudaCheck(cudaMemcpy(norm, d_norm, sizeof(norm), cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < n; i++) ref += (double)g[i] * g[i];
    printf("    grad norm squared: gpu %.17g  twin %.17g  rel err %.2e (tol 1e-10)\n", norm[0], ref, fabs(norm[0] - ref) / ref);
    check_true("grad norm squared within tol, repeatable", fabs(norm[0] - ref) <= 1e-10 * ref && norm[0] == norm[1]);
    float* fb[] = {d_p, d_m, d_v, d_g};
    for (float* q : fb) cudaCheck(cudaFree(q));
    cudaCheck(cudaFree(d_copy)); cudaCheck(cudaFree(d_norm)); cudaCheck(cudaFree(d_scr));
}

static void time_size(size_t n, HostRng* rng) {
    printf("\n  n %zu (timing only; buffers filled on the device)\n", n);
    float *d_p = dev_alloc<float>(n), *d_m = dev_alloc<float>(n), *d_v = dev_alloc<float>(n), *d_g = dev_alloc<float>(n);
    floatX* d_copy = dev_alloc<floatX>(n);
    double *d_norm = dev_alloc<double>(1), *d_scr = dev_alloc<double>(ADAMW_NORM_BLOCKS);
    dev_fill_uniform(d_p, n, rng, -1.f, 1.f); dev_fill_uniform(d_m, n, rng, -1e-2f, 1e-2f);
    dev_fill_uniform(d_v, n, rng, 0.f, 1e-4f); dev_fill_uniform(d_g, n, rng, -2e-2f, 2e-2f);
    long step = 10;
    float ms = bench_ms([&] { adamw_update(d_p, d_copy, d_m, d_v, d_g, n, 1e-5f, 0.9f, 0.99f, 1e-8f, 0.01f, 1.f, step++, 0); });
    report_bw("update (with floatX copy)", (double)n * (28 + sizeof(floatX)), ms);
    ms = bench_ms([&] { adamw_grad_norm_squared(d_norm, d_scr, d_g, n, 0); });
    report_bw("grad norm squared", 4.0 * n, ms);
    float* fb[] = {d_p, d_m, d_v, d_g};
    for (float* q : fb) cudaCheck(cudaFree(q));
    cudaCheck(cudaFree(d_copy)); cudaCheck(cudaFree(d_norm)); cudaCheck(cudaFree(d_scr));
}

int main(int argc, char** argv) {
    HostRng rng = {dev_init(argc, argv, "adamw: AdamW update over a flat buffer, gradient norm")};
    test_size(1, &rng);
    test_size(1000003, &rng);       // not a multiple of the block
    test_size(50000017, &rng);      // larger than L2
    time_size(1418996800ull, &rng); // Wan 1.3B parameters: 26.5 GB of optimizer state on the device
    return dev_finish("adamw");
}
