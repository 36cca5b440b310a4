// dev/cuda/gelu.cu: kernels/gelu.cuh against its CPU twins, cpu/layers.h gelu_* and silu_*, in double.
//
//   GELU-tanh forward / backward on floatX (the FFN hidden layer, the text embedding): rtol TOL_X (+1e-6·max|ref|)
//   SiLU forward / backward on fp32 (the time embedding) rtol 1e-5, and on floatX rtol TOL_X
//   backward in place (dinp == dout) gives the same bits
// Inputs uniform in [−6, 6] (both tails and the bend). Timing at the FFN size of Wan 1.3B (32760 × 8960) and 14B
// (8190 × 13824, a quarter of the tokens), bytes moved per call (X = sizeof(floatX)): forward 2·X·n, backward 3·X·n.
#include "dev_common.cuh"
#include "../../kernels/gelu.cuh"

template <typename T> static void test_act(const char* name, size_t n, int time, HostRng* rng, double rtol, int which_gelu) {
    if (dev_skip(n, name)) return;
    printf("\n  %s  n %zu  (%s)\n", name, n, sizeof(T) == 4 ? "fp32" : "bf16");
    std::vector<float> x = rand_uniform(n, rng, -6.f, 6.f); round_to<T>(x);
    std::vector<float> dout = rand_uniform(n, rng, -1.f, 1.f); round_to<T>(dout);
    T *d_x = dev_upload<T>(x), *d_dout = dev_upload<T>(dout), *d_dout2 = dev_upload<T>(dout);
    T *d_out = dev_alloc<T>(n), *d_dinp = dev_alloc<T>(n);
    std::vector<double> xd = to_double(x), doutd = to_double(dout), out_ref(n), dinp_ref(n, 0.0);
    dev_poison(d_out, n * sizeof(T)); dev_poison(d_dinp, n * sizeof(T));
    if (which_gelu) {
        gelu_forward(out_ref.data(), xd.data(), n);
        gelu_backward(dinp_ref.data(), doutd.data(), xd.data(), n);
        gelu_forward(d_out, d_x, n, 0);
        gelu_backward(d_dinp, d_dout, d_x, n, 0);
        gelu_backward(d_dout2, d_dout2, d_x, n, 0);
    } else {
        silu_forward(out_ref.data(), xd.data(), n);
        silu_backward(dinp_ref.data(), doutd.data(), xd.data(), n);
        silu_forward(d_out, d_x, n, 0);
        silu_backward(d_dinp, d_dout, d_x, n, 0);
        silu_backward(d_dout2, d_dout2, d_x, n, 0);
    }
    check("forward", dev_download(d_out, n), out_ref, rtol, 1e-6);
    check("backward", dev_download(d_dinp, n), dinp_ref, rtol, 1e-6);
    check_true("backward in place, bitwise equal", dev_same_bits(d_dinp, d_dout2, n * sizeof(T)));
    if (time) {
        float ms = bench_ms([&] { if (which_gelu) gelu_forward(d_out, d_x, n, 0); else silu_forward(d_out, d_x, n, 0); });
        report_bw("forward", 2.0 * n * sizeof(T), ms);
        ms = bench_ms([&] { if (which_gelu) gelu_backward(d_dinp, d_dout, d_x, n, 0); else silu_backward(d_dinp, d_dout, d_x, n, 0); });
        report_bw("backward", 3.0 * n * sizeof(T), ms);
    }
    T* bufs[] = {d_x, d_dout, d_dout2, d_out, d_dinp};
    for (T* p : bufs) cudaCheck(cudaFree(p));
}

int main(int argc, char** argv) {
    HostRng rng = {dev_init(argc, argv, "gelu: GELU-tanh and SiLU, forward and backward")};
    test_act<floatX>("gelu", 1000003, 0, &rng, TOL_X, 1);                      // not a multiple of the block
    test_act<floatX>("gelu, text embedding 512 x 1536", 512 * 1536, 0, &rng, TOL_X, 1);
    test_act<floatX>("gelu, Wan 1.3B FFN 32760 x 8960", (size_t)32760 * 8960, 1, &rng, TOL_X, 1);
    test_act<floatX>("gelu, Wan 14B FFN 8190 x 13824", (size_t)8190 * 13824, 1, &rng, TOL_X, 1);   // a quarter of the tokens
    test_act<float>("silu, time embedding 1 x 1536", 1536, 0, &rng, 1e-5, 0);  // launch-bound: not timed
    test_act<float>("silu, time embedding 7 x 5120", 7 * 5120, 0, &rng, 1e-5, 0);
    test_act<floatX>("silu", 100003, 0, &rng, TOL_X, 0);
    return dev_finish("gelu");
}
