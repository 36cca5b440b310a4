// dev/cuda/fm_loss.cu: kernels/fm_loss.cuh against its CPU twin, the loss loop of cpu/teacher_cpu.h flow_matching_loss,
// in double.
//
//   forward    loss[b] = mean_i (pred − target)²  (double, summed in double): rel err ≤ 1e-10; bitwise repeatable
//   backward   dpred = dscale·w[b]·(pred − target)  fp32, rtol 1e-6: with w = NULL and dscale = 2/(B·n) (the teacher's
//              batch mean) and with per-sample weights (TM-MF's adaptive normalisation)
// Timing on a batch of 4 Wan latents (16 × 21 × 60 × 104), bytes moved per call: forward 8·B·n, backward 12·B·n.
#include "dev_common.cuh"
#include "../../kernels/fm_loss.cuh"

static void test_size(int B, size_t n, int time, HostRng* rng) {
    if (dev_skip((size_t)B * n, "this size")) return;
    printf("\n  B %d  n %zu\n", B, n);
    size_t total = (size_t)B * n;
    std::vector<float> pred = rand_normal(total, rng, 0.f, 1.f), target = rand_normal(total, rng, 0.f, 1.5f);
    std::vector<float> w = rand_uniform(B, rng, 0.1f, 2.f);
    float *d_pred = dev_upload<float>(pred), *d_target = dev_upload<float>(target), *d_w = dev_upload<float>(w);
    float* d_dpred = dev_alloc<float>(total);
    double *d_loss = dev_alloc<double>(2 * B), *d_scratch = dev_alloc<double>((size_t)B * FM_LOSS_BLOCKS);

    fm_loss_forward(d_loss, d_scratch, d_pred, d_target, B, n, 0);
    fm_loss_forward(d_loss + B, d_scratch, d_pred, d_target, B, n, 0);
    std::vector<double> loss(2 * B);
    cudaCheck(cudaMemcpy(loss.data(), d_loss, 2 * B * sizeof(double), cudaMemcpyDeviceToHost));
    bool ok = true;
    double worst = 0;
    for (int b = 0; b < B; b++) {
        double se = 0;
        for (size_t i = 0; i < n; i++) { double d = (double)pred[b * n + i] - target[b * n + i]; se += d * d; }
        double ref = se / n, rel = fabs(loss[b] - ref) / ref;
        worst = fmax(worst, rel);
        ok = ok && rel <= 1e-10 && loss[b] == loss[B + b];
    }
    printf("    loss per sample: max rel err %.2e (tol 1e-10)\n", worst);
    check_true("loss within tol, bitwise repeatable", ok);

    float dscale = 2.f / (float)total;
    std::vector<double> ref(total);
    for (size_t i = 0; i < total; i++) ref[i] = (double)dscale * ((double)pred[i] - target[i]);
    dev_poison(d_dpred, total * 4);
    fm_loss_backward(d_dpred, d_pred, d_target, NULL, dscale, B, n, 0);
    check("dpred, batch mean", dev_download(d_dpred, total), ref, 1e-6, 1e-7);
    for (size_t i = 0; i < total; i++) ref[i] = (double)(2.f / B) * w[i / n] * ((double)pred[i] - target[i]);
    dev_poison(d_dpred, total * 4);
    fm_loss_backward(d_dpred, d_pred, d_target, d_w, 2.f / B, B, n, 0);
    check("dpred, per-sample weights", dev_download(d_dpred, total), ref, 1e-6, 1e-7);

    if (time) {
        float ms = bench_ms([&] { fm_loss_forward(d_loss, d_scratch, d_pred, d_target, B, n, 0); });
        report_bw("forward (loss)", 8.0 * total, ms);
        ms = bench_ms([&] { fm_loss_backward(d_dpred, d_pred, d_target, NULL, dscale, B, n, 0); });
        report_bw("backward (dpred)", 12.0 * total, ms);
    }
    float* fb[] = {d_pred, d_target, d_w, d_dpred};
    for (float* p : fb) cudaCheck(cudaFree(p));
    cudaCheck(cudaFree(d_loss)); cudaCheck(cudaFree(d_scratch));
}

int main(int argc, char** argv) {
    HostRng rng = {dev_init(argc, argv, "fm_loss: flow-matching MSE loss and gradient")};
    test_size(1, 7, 0, &rng);                          // fewer elements than threads
    test_size(3, 1000003, 0, &rng);
    test_size(2, (size_t)16 * 21 * 60 * 104, 0, &rng); // Wan latent, 480x832x81
    test_size(4, (size_t)16 * 21 * 60 * 104, 1, &rng);
    return dev_finish("fm_loss");
}
