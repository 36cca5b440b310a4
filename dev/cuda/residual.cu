// dev/cuda/residual.cu: kernels/residual.cuh against its CPU twin, cpu/layers.h gated_add_forward / gated_add_backward,
// in double.
//
// At each size (B samples × L tokens × C), with the gate taken from chunk 2 of mod [B, 6, C]:
//   forward    x += y·gate[b]   fp32 stream, rtol 1e-5;  and with gate = NULL (the cross-attention add)
//   backward   dy = dx·gate  floatX, rtol TOL_X;  dgate (+= into d mod; the other chunks must stay untouched) fp32 sums
//              over L tokens, rtol 1e-4;  bitwise repeatable;  gate = NULL: dy = dx
//   forward out of place (version 2, residual_forward_out: x_out = x_in + y·gate): vs the CPU twin, and bitwise equal
//              to version 1's copy-then-add, gated and plain, in place too (x_out = x_in); C = 19 takes the fallback
// Timing at the Wan sizes, bytes moved per call (N = B·L, X = sizeof(floatX)):
//   forward:  x 8·N·C read and written + y X·N·C read (version 2 the same; version 1's copy before it 8·N·C more)
//   backward: dx 4·N·C + y X·N·C read, dy X·N·C written, partials C floats per 32-row chunk written and read
#include "dev_common.cuh"
#include "../../kernels/residual.cuh"

typedef struct { int B, L, C, time; } Size;

static void test_size(Size s, HostRng* rng) {
    if (dev_skip((size_t)s.B * s.L * s.C, "this size")) return;
    const int B = s.B, L = s.L, C = s.C;
    const size_t N = (size_t)B * L, NC = N * C, M = (size_t)B * 6 * C;
    printf("\n  B %d  L %d  C %d\n", B, L, C);

    std::vector<float> x0 = rand_uniform(NC, rng, -4.f, 4.f);
    std::vector<float> y = rand_uniform(NC, rng, -2.f, 2.f); round_to<floatX>(y);
    std::vector<float> mod = rand_uniform(M, rng, -1.f, 1.f);
    std::vector<float> dx = rand_uniform(NC, rng, -1.f, 1.f);
    std::vector<float> dmod0 = rand_uniform(M, rng, -1.f, 1.f);
    float *d_x = dev_upload<float>(x0), *d_mod = dev_upload<float>(mod), *d_dx = dev_upload<float>(dx);
    float *d_dmod = dev_upload<float>(dmod0), *d_dmod2 = dev_upload<float>(dmod0);
    floatX *d_y = dev_upload<floatX>(y), *d_dy = dev_alloc<floatX>(NC), *d_dy2 = dev_alloc<floatX>(NC);
    float* d_scratch = dev_alloc<float>(residual_backward_scratch_floats(B, L, C));

    std::vector<double> x_ref = to_double(x0), yd = to_double(y), modd = to_double(mod), dxd = to_double(dx);
    std::vector<double> dy_ref(NC, 0.0), dmod_ref = to_double(dmod0);
    for (int b = 0; b < B; b++) {
        size_t o = (size_t)b * L * C;
        const double* gate = &modd[(size_t)b * 6 * C + 2 * C];
        gated_add_forward(&x_ref[o], &yd[o], gate, L, C);
        gated_add_backward(&dy_ref[o], &dmod_ref[(size_t)b * 6 * C + 2 * C], &dxd[o], &yd[o], gate, L, C);
    }
    printf("  gated\n");
    residual_forward(d_x, d_y, d_mod + 2 * C, 6 * C, B, L, C, 0);
    check("x += y·gate", dev_download(d_x, NC), x_ref, 1e-5, 1e-6);
    dev_poison(d_dy, NC * sizeof(floatX));
    residual_backward(d_dy, d_dmod + 2 * C, d_scratch, d_dx, d_y, d_mod + 2 * C, 6 * C, B, L, C, 0);
    check("dy = dx·gate", dev_download(d_dy, NC), dy_ref, TOL_X, 1e-6);
    check("d mod (+= gate chunk)", dev_download(d_dmod, M), dmod_ref, 1e-4, 1e-4);
    residual_backward(d_dy2, d_dmod2 + 2 * C, d_scratch, d_dx, d_y, d_mod + 2 * C, 6 * C, B, L, C, 0);
    check_true("bitwise repeatable (dy, d mod)", dev_same_bits(d_dy, d_dy2, NC * sizeof(floatX)) && dev_same_bits(d_dmod, d_dmod2, M * 4));

    // no gate: x += y, dy = dx
    printf("  plain add (gate NULL)\n");
    x_ref = to_double(x0);
    for (size_t i = 0; i < NC; i++) x_ref[i] += yd[i];
    dev_set(d_x, x0);
    residual_forward(d_x, d_y, (const float*)NULL, 0, B, L, C, 0);
    check("x += y", dev_download(d_x, NC), x_ref, 1e-5, 1e-6);
    dev_poison(d_dy, NC * sizeof(floatX));
    residual_backward(d_dy, (float*)NULL, d_scratch, d_dx, d_y, (const float*)NULL, 0, B, L, C, 0);
    check("dy = dx", dev_download(d_dy, NC), dxd, TOL_X, 1e-6);

    // version 2: x_out = x_in + y·gate in one pass, against the CPU twin and bitwise against copy-then-add
    {
        float *d_out = dev_alloc<float>(NC), *d_ref = dev_alloc<float>(NC), *d_in = dev_upload<float>(x0);
        for (int gated = 1; gated >= 0; gated--) {
            const float* gate = gated ? d_mod + 2 * C : NULL;
            std::vector<double> ref = to_double(x0);
            for (int b = 0; b < B; b++)
                for (int l = 0; l < L; l++)
                    for (int c = 0; c < C; c++) {
                        const size_t i = ((size_t)b * L + l) * C + c;
                        ref[i] += yd[i] * (gated ? modd[(size_t)b * 6 * C + 2 * C + c] : 1.0);
                    }
            printf("  version 2, out of place (%s, C %% 4 %s)\n", gated ? "gated" : "plain", C % 4 ? "!= 0: the copy-then-add fallback" : "== 0: 128-bit path");
            dev_poison(d_out, NC * sizeof(float));
            residual_forward_out(d_out, d_in, d_y, gate, gated ? 6 * C : 0, B, L, C, 0);
            check("x_out = x_in + y·gate", dev_download(d_out, NC), ref, 1e-5, 1e-6);
            dev_set(d_ref, x0);
            residual_forward(d_ref, d_y, gate, gated ? 6 * C : 0, B, L, C, 0);
            check_true("bitwise equal to copy-then-add (version 1)", dev_same_bits(d_out, d_ref, NC * 4));
            dev_set(d_x, x0);
            residual_forward_out(d_x, d_x, d_y, gate, gated ? 6 * C : 0, B, L, C, 0);
            check_true("in place (x_out = x_in): bitwise equal too", dev_same_bits(d_x, d_ref, NC * 4));
        }
        if (s.time) {
            const size_t X = sizeof(floatX);
            float ms = bench_ms([&] { residual_forward_out(d_out, d_in, d_y, d_mod + 2 * C, 6 * C, B, L, C, 0); });
            report_bw("forward out of place (version 2)", (double)NC * (8 + X), ms);
            ms = bench_ms([&] {
                cudaCheck(cudaMemcpyAsync(d_ref, d_in, NC * 4, cudaMemcpyDeviceToDevice, 0));
                residual_forward(d_ref, d_y, d_mod + 2 * C, 6 * C, B, L, C, 0);
            });
            report_bw("copy then add (version 1), same work", (double)NC * (8 + X), ms);
        }
        cudaCheck(cudaFree(d_out)); cudaCheck(cudaFree(d_ref)); cudaCheck(cudaFree(d_in));
    }

    if (s.time) {
        size_t X = sizeof(floatX), nchunks = reduce_num_chunks(L);
        float ms = bench_ms([&] { residual_forward(d_x, d_y, d_mod + 2 * C, 6 * C, B, L, C, 0); });
        report_bw("forward (gated)", (double)NC * (8 + X), ms);
        ms = bench_ms([&] { residual_backward(d_dy, d_dmod + 2 * C, d_scratch, d_dx, d_y, d_mod + 2 * C, 6 * C, B, L, C, 0); });
        report_bw("backward (gated)", (double)NC * (4 + 2 * X) + 2.0 * B * nchunks * C * 4, ms);
    }
    float* fb[] = {d_x, d_mod, d_dx, d_dmod, d_dmod2, d_scratch};
    for (float* p : fb) cudaCheck(cudaFree(p));
    floatX* xb[] = {d_y, d_dy, d_dy2};
    for (floatX* p : xb) cudaCheck(cudaFree(p));
}

int main(int argc, char** argv) {
    HostRng rng = {dev_init(argc, argv, "residual: gated residual add, forward and backward")};
    Size sizes[] = {
        {1, 5, 19, 0},
        {2, 45, 1000, 0},      // C not a multiple of 256, L not a multiple of 32
        {3, 100, 1536, 0},
        {2, 77, 5120, 0},
        {1, 32760, 1536, 1},   // Wan 1.3B, 480x832x81
        {1, 8190, 5120, 1},    // Wan 14B width, a quarter of the tokens
    };
    for (Size s : sizes) test_size(s, &rng);
    return dev_finish("residual");
}
