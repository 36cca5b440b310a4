// dev/cuda/attention.cu: kernels/attention.cuh (flash forward, deterministic flash backward, naive materialising
// version) and, built with -DENABLE_CUDNN, cuDNN's fused SDPA (kernels/attention_cudnn.h), against a CPU twin in
// double, then timed at the Wan2.1 1.3B 480p sizes. Design: dev/cuda/attention.md.
// Build and run: `make -C dev/cuda attention && dev/cuda/attention` (with cuDNN where dev/cuda/Makefile finds it), or
//   nvcc -std=c++17 -O3 -arch=sm_90 -Xcompiler -Wall -I. dev/cuda/attention.cu -o dev/cuda/attention && dev/cuda/attention
//   usage: dev/cuda/attention [SEED] [--quick] [--no-time] [--small]   (--quick: no 32,760-token case, no timing;
//          --small: the four cases under 200 tokens only, untimed: for compute-sanitizer, which slows kernels ~100x)
// Standalone rather than on dev_common.cuh: that header pulls in cpu/layers.h, whose `#pragma omp` lines warn under
// the build line above (no -fopenmp) and GCC 12 cannot silence them; the conventions are the same (seed printed and
// repeatable, |gpu − ref| ≤ rtol·|ref| + atol·max|ref| per element, NaN fails, exit 1 on any failure).
//
// (1) the mma.sync / ldmatrix fragment helpers on one warp with small integers: exact, so a layout mistake cannot hide.
// (2) at each size, on fresh random data: flash vs naive vs CPU twin for out, lse, dq, dk, dv; outputs poisoned with
//     NaN before the run (every element must be written); flash run twice, bitwise equal (deterministic backward).
//     The CPU twin is the math of attention_forward / attention_backward in cpu/layers.h, in double, on the bf16
//     inputs' exact values. At 32,760 tokens it checks random query rows (out, lse, dq) and the naive version
//     checks one whole head (all five tensors). cuDNN (when built in): the same checks as flash (NaN-poisoned, twice
//     bitwise equal: its deterministic backward, vs the CPU twin) and cuDNN vs flash over every element.
// Tolerances (bf16 outputs; P and dS are rounded to bf16 before their second matmul, as in FlashAttention-2):
//   out rtol 1e-2 + 5e-3·max|ref|, dq dk dv 2e-2 + 1e-2·max|ref|, lse (fp32) 1e-5 + 1e-5·max|ref|; norm rel 1e-2 / 2e-2.
//   A host emulation of these kernels measured at most 1.2e-3 (out) and 3.2e-3 (dq, dk) of max|ref| at rtol 1e-2.
// (3) timing: CUDA events, 3 warm-ups, median of 25, TFLOP/s by the FlashAttention convention against the measured
//     800 TFLOP/s bf16 ceiling and the FlashAttention-2/3 numbers of the FlashAttention-3 paper.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <time.h>
#include <unistd.h>
#include <vector>
#include <algorithm>
#include "../../kernels/attention.cuh"   // flash and naive attention, forward and backward (with common.cuh)
#ifdef ENABLE_CUDNN
#include "../../kernels/attention_cudnn.h"   // cuDNN's fused attention (attention_cudnn.o)
#endif

// ---------------------------------------------------------------------------------------------------------
// seeded random numbers (splitmix64, Box-Muller)

static uint64_t rng_state;
static uint64_t rng_next() {
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static double rng_uniform() { return ((rng_next() >> 11) + 0.5) * (1.0 / 9007199254740992.0); }   // (0, 1)
static float rng_normal() { return (float)(sqrt(-2.0 * log(rng_uniform())) * cos(6.283185307179586 * rng_uniform())); }

// N(0, sigma²) rounded to bf16; f keeps the exact value of every bf16 for the CPU twin
static void fill_normal(std::vector<bf16>& b, std::vector<float>& f, size_t n, float sigma) {
    b.resize(n); f.resize(n);
    for (size_t i = 0; i < n; i++) { b[i] = __float2bfloat16(sigma * rng_normal()); f[i] = __bfloat162float(b[i]); }
}

// ---------------------------------------------------------------------------------------------------------
// device buffers

static const char* KNOBS = "run with --quick to skip the 32,760-token case";
template <typename T> static T* upload(const std::vector<T>& h) {
    T* d = (T*)cuda_malloc_named(h.size() * sizeof(T), "test input", KNOBS);
    cudaCheck(cudaMemcpy(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice));
    return d;
}
template <typename T> static T* alloc_poisoned(size_t n) {   // all-ones bytes: NaN in bf16 and fp32
    T* d = (T*)cuda_malloc_named(n * sizeof(T), "test output", KNOBS);
    cudaCheck(cudaMemset(d, 0xFF, n * sizeof(T)));
    return d;
}
template <typename T> static std::vector<float> download(const T* d, size_t n) {
    std::vector<T> h(n);
    cudaCheck(cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost));
    std::vector<float> f(n);
    for (size_t i = 0; i < n; i++) f[i] = to_float(h[i]);
    return f;
}

// ---------------------------------------------------------------------------------------------------------
// checks

static int g_failures = 0;
struct Tol { double rtol, atol_frac, norm; };
static const Tol TOL_OUT = {1e-2, 5e-3, 1e-2}, TOL_GRAD = {2e-2, 1e-2, 2e-2}, TOL_LSE = {1e-5, 1e-5, 1e-5};

// value pairs collected for one tensor and one comparison
struct Pairs { std::vector<float> got; std::vector<double> ref; void add(float g, double r) { got.push_back(g); ref.push_back(r); } };

// passes when |got − ref| ≤ rtol·|ref| + atol_frac·max|ref| for every element, the norm-wise relative error is at
// most tol.norm, and something was compared; a NaN never passes
static void check(const char* what, const Pairs& p, Tol tol) {
    const size_t n = p.ref.size();
    double maxref = 0, max_abs = 0, max_rel = 0, num = 0, den = 0;
    size_t bad = 0, worst = 0;
    for (size_t i = 0; i < n; i++) maxref = fmax(maxref, fabs(p.ref[i]));
    const double atol = tol.atol_frac * maxref;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)p.got[i] - p.ref[i]);
        if (!(e <= tol.rtol * fabs(p.ref[i]) + atol)) { if (bad == 0) worst = i; bad++; }
        if (!(e <= max_abs)) max_abs = e;   // NaN propagates into the report
        if (fabs(p.ref[i]) > atol && !(e / fabs(p.ref[i]) <= max_rel)) max_rel = e / fabs(p.ref[i]);
        num += e * e; den += p.ref[i] * p.ref[i];
    }
    const double norm = den > 0 ? sqrt(num / den) : sqrt(num);
    const bool ok = n > 0 && bad == 0 && norm <= tol.norm;
    printf("    %-22s n %9zu  max abs %.2e  max rel %.2e  norm rel %.2e  (rtol %.0e + %.0e·max|ref| %.2e, norm %.0e)  %s\n", what, n,
           max_abs, max_rel, norm, tol.rtol, tol.atol_frac, maxref, tol.norm, ok ? "ok" : "FAIL");
    if (!ok) {
        g_failures++;
        if (bad) printf("      %zu of %zu elements out of tolerance; first at %zu: got %.8g ref %.8g\n", bad, n, worst, (double)p.got[worst], p.ref[worst]);
    }
}
static void check_true(const char* what, bool ok) {
    printf("    %-60s %s\n", what, ok ? "ok" : "FAIL");
    if (!ok) g_failures++;
}

// ---------------------------------------------------------------------------------------------------------
// (1) fragment helpers, one warp, exact: entries in {-2..2} keep every product and sum exact in fp32, and C1's
// entries (|C1| ≤ 128) exact in bf16. A [32 m][32 k]; Bnk [32 n][32 k]; Bkn [32 k][32 n] (row-major, as in smem).
//   C1 = A·Bnkᵀ (load_frag_a, load_frag_b_nk)   C2 = A·Bkn (load_frag_b_kn)   C3 = bf16(C1)·Bkn (c_to_a_frag)

__global__ void fragment_test_kernel(float* c1, float* c2, float* c3, const bf16* A, const bf16* Bnk, const bf16* Bkn) {
    constexpr int LD = 40;   // 80-byte rows: 16-byte aligned, as ldmatrix needs
    __shared__ __align__(16) bf16 sA[32 * LD], sBnk[32 * LD], sBkn[32 * LD];
    const int lane = threadIdx.x, g = lane >> 2, t = lane & 3;
    for (int i = lane; i < 32 * 32; i += 32) {
        sA[(i / 32) * LD + i % 32] = A[i];
        sBnk[(i / 32) * LD + i % 32] = Bnk[i];
        sBkn[(i / 32) * LD + i % 32] = Bkn[i];
    }
    __syncwarp();
#pragma unroll
    for (int mt = 0; mt < 2; mt++) {   // 16-row block of the outputs
        float acc1[4][4], acc2[4][4], acc3[4][4];   // n8 tiles 0..3 of the 32 output columns
        for (int nt = 0; nt < 4; nt++)
            for (int i = 0; i < 4; i++) acc1[nt][i] = acc2[nt][i] = acc3[nt][i] = 0.f;
#pragma unroll
        for (int kd = 0; kd < 2; kd++) {
            uint32_t a[4], b0[2], b1[2];
            load_frag_a(a, sA, LD, mt * 16, kd * 16, lane);
#pragma unroll
            for (int nt = 0; nt < 4; nt += 2) {
                load_frag_b_nk(b0, b1, sBnk, LD, nt * 8, kd * 16, lane);
                mma_bf16_16816(acc1[nt], a, b0);
                mma_bf16_16816(acc1[nt + 1], a, b1);
                load_frag_b_kn(b0, b1, sBkn, LD, kd * 16, nt * 8, lane);
                mma_bf16_16816(acc2[nt], a, b0);
                mma_bf16_16816(acc2[nt + 1], a, b1);
            }
        }
#pragma unroll
        for (int kk = 0; kk < 2; kk++) {   // C1's columns are C3's reduction index
            uint32_t pa[4], b0[2], b1[2];
            c_to_a_frag(pa, acc1[2 * kk], acc1[2 * kk + 1]);
#pragma unroll
            for (int nt = 0; nt < 4; nt += 2) {
                load_frag_b_kn(b0, b1, sBkn, LD, kk * 16, nt * 8, lane);
                mma_bf16_16816(acc3[nt], pa, b0);
                mma_bf16_16816(acc3[nt + 1], pa, b1);
            }
        }
        for (int nt = 0; nt < 4; nt++)
            for (int i = 0; i < 4; i++) {   // C fragment: rows g (i < 2) and g+8, columns 2t, 2t+1
                const int row = mt * 16 + g + 8 * (i >> 1), col = nt * 8 + 2 * t + (i & 1);
                c1[row * 32 + col] = acc1[nt][i];
                c2[row * 32 + col] = acc2[nt][i];
                c3[row * 32 + col] = acc3[nt][i];
            }
    }
}

static bool fragment_test() {
    printf("\n(1) mma.sync / ldmatrix fragment helpers, one warp, exact integer data\n");
    std::vector<bf16> A(1024), Bnk(1024), Bkn(1024);
    std::vector<double> a(1024), bnk(1024), bkn(1024);
    for (int i = 0; i < 1024; i++) {
        a[i] = (double)(int)(rng_next() % 5) - 2; bnk[i] = (double)(int)(rng_next() % 5) - 2; bkn[i] = (double)(int)(rng_next() % 5) - 2;
        A[i] = __float2bfloat16((float)a[i]); Bnk[i] = __float2bfloat16((float)bnk[i]); Bkn[i] = __float2bfloat16((float)bkn[i]);
    }
    bf16 *dA = upload(A), *dBnk = upload(Bnk), *dBkn = upload(Bkn);
    float* dc = alloc_poisoned<float>(3 * 1024);
    fragment_test_kernel<<<1, 32>>>(dc, dc + 1024, dc + 2048, dA, dBnk, dBkn);
    cudaCheck(cudaGetLastError());
    cudaCheck(cudaDeviceSynchronize());
    std::vector<float> c = download(dc, 3 * 1024);
    long bad[3] = {0, 0, 0};
    for (int m = 0; m < 32; m++)
        for (int n = 0; n < 32; n++) {
            double r1 = 0, r2 = 0, r3 = 0;
            for (int kx = 0; kx < 32; kx++) { r1 += a[m * 32 + kx] * bnk[n * 32 + kx]; r2 += a[m * 32 + kx] * bkn[kx * 32 + n]; }
            for (int kx = 0; kx < 32; kx++) {
                double c1 = 0;
                for (int j = 0; j < 32; j++) c1 += a[m * 32 + j] * bnk[kx * 32 + j];
                r3 += c1 * bkn[kx * 32 + n];
            }
            bad[0] += c[m * 32 + n] != r1; bad[1] += c[1024 + m * 32 + n] != r2; bad[2] += c[2048 + m * 32 + n] != r3;
        }
    const char* what[3] = {"C1 = A·Bᵀ  (load_frag_a, load_frag_b_nk): wrong elements", "C2 = A·B   (load_frag_b_kn, .trans):     wrong elements",
                           "C3 = C1·B  (accumulators as A, c_to_a_frag): wrong elements"};
    for (int i = 0; i < 3; i++) {
        char line[128];
        snprintf(line, sizeof(line), "%s %ld of 1024", what[i], bad[i]);
        check_true(line, bad[i] == 0);
    }
    cudaCheck(cudaFree(dA)); cudaCheck(cudaFree(dBnk)); cudaCheck(cudaFree(dBkn)); cudaCheck(cudaFree(dc));
    return bad[0] + bad[1] + bad[2] == 0;
}

// ---------------------------------------------------------------------------------------------------------
// CPU twin: attention_forward / attention_backward of cpu/layers.h in double, one query row (out, lse, dq and δ)
// or one key row (dk, dv, given every query row's lse and δ) at a time, so that large sizes can be sampled.

struct Problem { int B, Nq, Nk, H, d; std::vector<float> q, k, v, dout; };
static size_t q_off(const Problem& p, int b, int i, int h) { return (((size_t)b * p.Nq + i) * p.H + h) * p.d; }
static size_t k_off(const Problem& p, int b, int j, int h) { return (((size_t)b * p.Nk + j) * p.H + h) * p.d; }
static double dot(const float* x, const float* y, int n) { double s = 0; for (int e = 0; e < n; e++) s += (double)x[e] * y[e]; return s; }

static void cpu_query_row(const Problem& p, int b, int i, int h, double* o, double* lse, double* delta, double* dq, std::vector<double>& P) {
    const int d = p.d;
    const double scale = 1 / sqrt((double)d);
    const float* qi = &p.q[q_off(p, b, i, h)];
    const float* gi = &p.dout[q_off(p, b, i, h)];
    P.resize(p.Nk);
    double mx = -INFINITY;
    for (int j = 0; j < p.Nk; j++) { P[j] = scale * dot(qi, &p.k[k_off(p, b, j, h)], d); mx = std::max(mx, P[j]); }
    double sum = 0;
    for (int j = 0; j < p.Nk; j++) sum += exp(P[j] - mx);
    *lse = mx + log(sum);
    for (int e = 0; e < d; e++) o[e] = 0;
    for (int j = 0; j < p.Nk; j++) {
        P[j] = exp(P[j] - *lse);
        const float* vj = &p.v[k_off(p, b, j, h)];
        for (int e = 0; e < d; e++) o[e] += P[j] * vj[e];
    }
    double dl = 0;   // δ = Σ_j P·dP = dout·out
    for (int e = 0; e < d; e++) dl += gi[e] * o[e];
    *delta = dl;
    for (int e = 0; e < d; e++) dq[e] = 0;
    for (int j = 0; j < p.Nk; j++) {
        const double ds = P[j] * (dot(gi, &p.v[k_off(p, b, j, h)], d) - dl) * scale;
        const float* kj = &p.k[k_off(p, b, j, h)];
        for (int e = 0; e < d; e++) dq[e] += ds * kj[e];
    }
}

static void cpu_key_row(const Problem& p, int b, int j, int h, const double* lse, const double* delta, double* dk, double* dv) {
    const int d = p.d;
    const double scale = 1 / sqrt((double)d);
    const float* kj = &p.k[k_off(p, b, j, h)];
    const float* vj = &p.v[k_off(p, b, j, h)];
    for (int e = 0; e < d; e++) dk[e] = dv[e] = 0;
    for (int i = 0; i < p.Nq; i++) {
        const float* qi = &p.q[q_off(p, b, i, h)];
        const float* gi = &p.dout[q_off(p, b, i, h)];
        const double P = exp(scale * dot(qi, kj, d) - lse[i]);
        const double ds = P * (dot(gi, vj, d) - delta[i]) * scale;
        for (int e = 0; e < d; e++) { dk[e] += ds * qi[e]; dv[e] += P * gi[e]; }
    }
}

// ---------------------------------------------------------------------------------------------------------
// (2) one size: flash vs naive vs CPU

struct Case {
    const char* name;
    int B, Nq, Nk, H, d;
    float sigma_qk;   // std of q and k entries: 1 gives logits of std 1, 2 gives std 4 (a peaky softmax)
    int cpu_heads;    // CPU twin over every row and key of this many heads (first and last included), 0: all heads
    int cpu_rows;     // > 0: instead this many random query rows (out, lse, dq), and the naive version on one head
};

struct DeviceOut { bf16 *out, *dq, *dk, *dv; float *lse, *delta; };
static DeviceOut alloc_outputs(int B, int Nq, int Nk, int H, int d) {
    const size_t nq = (size_t)B * Nq * H * d, nk = (size_t)B * Nk * H * d, nl = (size_t)B * H * Nq;
    DeviceOut o;
    o.out = alloc_poisoned<bf16>(nq); o.dq = alloc_poisoned<bf16>(nq); o.dk = alloc_poisoned<bf16>(nk); o.dv = alloc_poisoned<bf16>(nk);
    o.lse = alloc_poisoned<float>(nl); o.delta = alloc_poisoned<float>(nl);
    return o;
}
static void free_outputs(DeviceOut& o) {
    cudaCheck(cudaFree(o.out)); cudaCheck(cudaFree(o.dq)); cudaCheck(cudaFree(o.dk)); cudaCheck(cudaFree(o.dv));
    cudaCheck(cudaFree(o.lse)); cudaCheck(cudaFree(o.delta));
}
struct HostOut { std::vector<float> out, lse, dq, dk, dv; };
static HostOut download_outputs(const DeviceOut& o, size_t nq, size_t nk, size_t nl) {
    return HostOut{download(o.out, nq), download(o.lse, nl), download(o.dq, nq), download(o.dk, nk), download(o.dv, nk)};
}

static void run_case(const Case& c) {
    printf("\n(2) %s: B %d  Nq %d  Nk %d  H %d  d %d;  q, k ~ N(0, %.0f²), v, dout ~ N(0, 1)\n", c.name, c.B, c.Nq, c.Nk, c.H, c.d, c.sigma_qk);
    Problem p{c.B, c.Nq, c.Nk, c.H, c.d, {}, {}, {}, {}};
    const size_t nq = (size_t)c.B * c.Nq * c.H * c.d, nk = (size_t)c.B * c.Nk * c.H * c.d, nl = (size_t)c.B * c.H * c.Nq;
    std::vector<bf16> hq, hk, hv, hdo;
    fill_normal(hq, p.q, nq, c.sigma_qk);
    fill_normal(hk, p.k, nk, c.sigma_qk);
    fill_normal(hv, p.v, nk, 1.f);
    fill_normal(hdo, p.dout, nq, 1.f);
    bf16 *q = upload(hq), *k = upload(hk), *v = upload(hv), *dout = upload(hdo);

    // flash, twice into separately poisoned buffers
    DeviceOut f1 = alloc_outputs(c.B, c.Nq, c.Nk, c.H, c.d), f2 = alloc_outputs(c.B, c.Nq, c.Nk, c.H, c.d);
    for (DeviceOut* f : {&f1, &f2}) {
        attention_forward_flash(f->out, f->lse, q, k, v, c.B, c.Nq, c.Nk, c.H, c.d, 0);
        attention_backward_flash(f->dq, f->dk, f->dv, f->delta, dout, f->out, f->lse, q, k, v, c.B, c.Nq, c.Nk, c.H, c.d, 0);
    }
    cudaCheck(cudaDeviceSynchronize());
    HostOut fl = download_outputs(f1, nq, nk, nl);
    {
        HostOut fl2 = download_outputs(f2, nq, nk, nl);
        long nonfinite = 0;
        for (const std::vector<float>* t : {&fl.out, &fl.lse, &fl.dq, &fl.dk, &fl.dv})
            for (float x : *t) nonfinite += !isfinite(x);
        const bool same = fl.out == fl2.out && fl.lse == fl2.lse && fl.dq == fl2.dq && fl.dk == fl2.dk && fl.dv == fl2.dv;
        check_true("flash: every output element written (NaN-poisoned first)", nonfinite == 0);
        check_true("flash: forward + backward twice, bitwise equal", same);
    }
    free_outputs(f2);

    // cuDNN, twice into separately poisoned buffers (have_cu = 0: not built in, switched off, or not this shape)
    HostOut cu;
    int have_cu = 0;
#ifdef ENABLE_CUDNN
    {
        DeviceOut u1 = alloc_outputs(c.B, c.Nq, c.Nk, c.H, c.d), u2 = alloc_outputs(c.B, c.Nq, c.Nk, c.H, c.d);
        have_cu = 1;
        for (DeviceOut* u : {&u1, &u2}) {
            have_cu &= attention_forward_cudnn(u->out, u->lse, q, k, v, c.B, c.Nq, c.Nk, c.H, c.d, 0);
            have_cu &= attention_backward_cudnn(u->dq, u->dk, u->dv, dout, u->out, u->lse, q, k, v, c.B, c.Nq, c.Nk, c.H, c.d, 0);
        }
        cudaCheck(cudaDeviceSynchronize());
        if (have_cu) {
            cu = download_outputs(u1, nq, nk, nl);
            HostOut cu2 = download_outputs(u2, nq, nk, nl);
            long nonfinite = 0;
            for (const std::vector<float>* t : {&cu.out, &cu.lse, &cu.dq, &cu.dk, &cu.dv})
                for (float x : *t) nonfinite += !isfinite(x);
            check_true("cuDNN: every output element written (NaN-poisoned first)", nonfinite == 0);
            check_true("cuDNN: forward + backward twice, bitwise equal (deterministic backward)",
                       cu.out == cu2.out && cu.lse == cu2.lse && cu.dq == cu2.dq && cu.dk == cu2.dk && cu.dv == cu2.dv);
            Pairs out, lse, dq, dk, dv;   // cuDNN vs flash, every element
            for (size_t i = 0; i < nq; i++) { out.add(cu.out[i], fl.out[i]); dq.add(cu.dq[i], fl.dq[i]); }
            for (size_t i = 0; i < nk; i++) { dk.add(cu.dk[i], fl.dk[i]); dv.add(cu.dv[i], fl.dv[i]); }
            for (size_t i = 0; i < nl; i++) lse.add(cu.lse[i], fl.lse[i]);
            check("out  cuDNN vs flash", out, TOL_OUT); check("lse  cuDNN vs flash", lse, TOL_LSE);
            check("dq   cuDNN vs flash", dq, TOL_GRAD); check("dk   cuDNN vs flash", dk, TOL_GRAD); check("dv   cuDNN vs flash", dv, TOL_GRAD);
        } else {
            printf("    cuDNN: not run for this shape (the line above says why)\n");
        }
        free_outputs(u1); free_outputs(u2);
    }
#endif

    // naive (fp32 scores): over everything, or over one head copied out of the interleaved layout when too big
    const bool sliced = c.cpu_rows > 0;
    const int nh = sliced ? 1 : c.H, hsel = sliced ? c.H / 2 : 0;
    const size_t nqn = (size_t)c.B * c.Nq * nh * c.d, nkn = (size_t)c.B * c.Nk * nh * c.d, nln = (size_t)c.B * nh * c.Nq;
    HostOut nv;
    {
        const bf16 *nq_in = q, *nk_in = k, *nv_in = v, *ndo = dout;
        bf16* slices = NULL;
        if (sliced) {   // [B·N, H, d] -> [B·N, 1, d] for head hsel
            slices = (bf16*)cuda_malloc_named((2 * nqn + 2 * nkn) * sizeof(bf16), "naive head slices", KNOBS);
            bf16* dst[4] = {slices, slices + nqn, slices + 2 * nqn, slices + 2 * nqn + nkn};
            const bf16* src[4] = {q, dout, k, v};
            for (int s = 0; s < 4; s++)
                cudaCheck(cudaMemcpy2D(dst[s], c.d * sizeof(bf16), src[s] + (size_t)hsel * c.d, (size_t)c.H * c.d * sizeof(bf16),
                                       c.d * sizeof(bf16), (size_t)c.B * (s < 2 ? c.Nq : c.Nk), cudaMemcpyDeviceToDevice));
            nq_in = dst[0]; ndo = dst[1]; nk_in = dst[2]; nv_in = dst[3];
        }
        const size_t nscores = (size_t)c.B * nh * c.Nq * c.Nk;
        float *att = alloc_poisoned<float>(nscores), *dS = alloc_poisoned<float>(nscores);
        DeviceOut n = alloc_outputs(c.B, c.Nq, c.Nk, nh, c.d);
        attention_forward_naive<bf16>(n.out, n.lse, att, nq_in, nk_in, nv_in, c.B, c.Nq, c.Nk, nh, c.d, 0);
        attention_backward_naive<bf16>(n.dq, n.dk, n.dv, dS, ndo, att, nq_in, nk_in, nv_in, c.B, c.Nq, c.Nk, nh, c.d, 0);
        cudaCheck(cudaDeviceSynchronize());
        nv = download_outputs(n, nqn, nkn, nln);
        free_outputs(n);
        cudaCheck(cudaFree(att)); cudaCheck(cudaFree(dS));
        if (slices) cudaCheck(cudaFree(slices));
    }
    {   // flash vs naive over everything the naive computed
        Pairs out, lse, dq, dk, dv;
        for (int b = 0; b < c.B; b++)
            for (int hn = 0; hn < nh; hn++) {
                const int h = sliced ? hsel : hn;
                for (int i = 0; i < c.Nq; i++) {
                    const size_t fo = q_off(p, b, i, h), no = (((size_t)b * c.Nq + i) * nh + hn) * c.d;
                    for (int e = 0; e < c.d; e++) { out.add(fl.out[fo + e], nv.out[no + e]); dq.add(fl.dq[fo + e], nv.dq[no + e]); }
                    lse.add(fl.lse[((size_t)b * c.H + h) * c.Nq + i], nv.lse[((size_t)b * nh + hn) * c.Nq + i]);
                }
                for (int j = 0; j < c.Nk; j++) {
                    const size_t fo = k_off(p, b, j, h), no = (((size_t)b * c.Nk + j) * nh + hn) * c.d;
                    for (int e = 0; e < c.d; e++) { dk.add(fl.dk[fo + e], nv.dk[no + e]); dv.add(fl.dv[fo + e], nv.dv[no + e]); }
                }
            }
        if (sliced) printf("    flash vs naive over head %d, every row and key:\n", hsel);
        check("out  flash vs naive", out, TOL_OUT); check("lse  flash vs naive", lse, TOL_LSE);
        check("dq   flash vs naive", dq, TOL_GRAD); check("dk   flash vs naive", dk, TOL_GRAD); check("dv   flash vs naive", dv, TOL_GRAD);
    }

    // CPU twin (double)
    Pairs fo, fl_, fq, fk, fv, no_, nl_, nq_, nk_, nv_;   // flash vs cpu, naive vs cpu
    Pairs uo, ul, uq, uk, uv;                             // cuDNN vs cpu
    std::vector<double> o(c.d), dqr(c.d), dkr(c.d), dvr(c.d), P;
    if (!sliced) {
        const int nheads = c.cpu_heads ? std::min(c.cpu_heads, c.H) : c.H;
        printf("    CPU twin over %d of %d heads, every query row and key row:\n", nheads, c.H);
        std::vector<double> lse(c.Nq), delta(c.Nq);
        for (int b = 0; b < c.B; b++)
            for (int hi = 0; hi < nheads; hi++) {
                const int h = nheads == c.H ? hi : (nheads == 1 ? 0 : hi * (c.H - 1) / (nheads - 1));
                for (int i = 0; i < c.Nq; i++) {
                    cpu_query_row(p, b, i, h, o.data(), &lse[i], &delta[i], dqr.data(), P);
                    const size_t off = q_off(p, b, i, h), lo = ((size_t)b * c.H + h) * c.Nq + i;
                    for (int e = 0; e < c.d; e++) {
                        fo.add(fl.out[off + e], o[e]); fq.add(fl.dq[off + e], dqr[e]);
                        no_.add(nv.out[off + e], o[e]); nq_.add(nv.dq[off + e], dqr[e]);
                    }
                    fl_.add(fl.lse[lo], lse[i]); nl_.add(nv.lse[lo], lse[i]);
                    if (have_cu) {
                        for (int e = 0; e < c.d; e++) { uo.add(cu.out[off + e], o[e]); uq.add(cu.dq[off + e], dqr[e]); }
                        ul.add(cu.lse[lo], lse[i]);
                    }
                }
                for (int j = 0; j < c.Nk; j++) {
                    cpu_key_row(p, b, j, h, lse.data(), delta.data(), dkr.data(), dvr.data());
                    const size_t off = k_off(p, b, j, h);
                    for (int e = 0; e < c.d; e++) {
                        fk.add(fl.dk[off + e], dkr[e]); fv.add(fl.dv[off + e], dvr[e]);
                        nk_.add(nv.dk[off + e], dkr[e]); nv_.add(nv.dv[off + e], dvr[e]);
                    }
                    if (have_cu)
                        for (int e = 0; e < c.d; e++) { uk.add(cu.dk[off + e], dkr[e]); uv.add(cu.dv[off + e], dvr[e]); }
                }
            }
        check("out  naive vs cpu", no_, TOL_OUT); check("lse  naive vs cpu", nl_, TOL_LSE);
        check("dq   naive vs cpu", nq_, TOL_GRAD); check("dk   naive vs cpu", nk_, TOL_GRAD); check("dv   naive vs cpu", nv_, TOL_GRAD);
        check("out  flash vs cpu", fo, TOL_OUT); check("lse  flash vs cpu", fl_, TOL_LSE);
        check("dq   flash vs cpu", fq, TOL_GRAD); check("dk   flash vs cpu", fk, TOL_GRAD); check("dv   flash vs cpu", fv, TOL_GRAD);
        if (have_cu) {
            check("out  cuDNN vs cpu", uo, TOL_OUT); check("lse  cuDNN vs cpu", ul, TOL_LSE);
            check("dq   cuDNN vs cpu", uq, TOL_GRAD); check("dk   cuDNN vs cpu", uk, TOL_GRAD); check("dv   cuDNN vs cpu", uv, TOL_GRAD);
        }
    } else {
        printf("    CPU twin over %d random query rows, the last row included (out, lse, dq; a key row would need all %d rows):\n",
               c.cpu_rows, c.Nq);
        double lse, delta;
        for (int r = 0; r < c.cpu_rows; r++) {
            const int b = (int)(rng_next() % c.B), h = (int)(rng_next() % c.H);
            const int i = r == 0 ? c.Nq - 1 : (int)(rng_next() % c.Nq);
            cpu_query_row(p, b, i, h, o.data(), &lse, &delta, dqr.data(), P);
            const size_t off = q_off(p, b, i, h);
            for (int e = 0; e < c.d; e++) { fo.add(fl.out[off + e], o[e]); fq.add(fl.dq[off + e], dqr[e]); }
            fl_.add(fl.lse[((size_t)b * c.H + h) * c.Nq + i], lse);
            if (have_cu) {
                for (int e = 0; e < c.d; e++) { uo.add(cu.out[off + e], o[e]); uq.add(cu.dq[off + e], dqr[e]); }
                ul.add(cu.lse[((size_t)b * c.H + h) * c.Nq + i], lse);
            }
        }
        check("out  flash vs cpu", fo, TOL_OUT); check("lse  flash vs cpu", fl_, TOL_LSE); check("dq   flash vs cpu", fq, TOL_GRAD);
        if (have_cu) { check("out  cuDNN vs cpu", uo, TOL_OUT); check("lse  cuDNN vs cpu", ul, TOL_LSE); check("dq   cuDNN vs cpu", uq, TOL_GRAD); }
    }
    free_outputs(f1);
    cudaCheck(cudaFree(q)); cudaCheck(cudaFree(k)); cudaCheck(cudaFree(v)); cudaCheck(cudaFree(dout));
}

// ---------------------------------------------------------------------------------------------------------
// (3) timing

static const int WARMUP = 3, REPS = 25;
template <typename F> static float median_ms(F launch) {
    cudaEvent_t e0, e1;
    cudaCheck(cudaEventCreate(&e0)); cudaCheck(cudaEventCreate(&e1));
    for (int i = 0; i < WARMUP; i++) launch();
    cudaCheck(cudaDeviceSynchronize());
    std::vector<float> ms(REPS);
    for (int i = 0; i < REPS; i++) {
        cudaCheck(cudaEventRecord(e0));
        launch();
        cudaCheck(cudaEventRecord(e1));
        cudaCheck(cudaEventSynchronize(e1));
        cudaCheck(cudaEventElapsedTime(&ms[i], e0, e1));
    }
    cudaCheck(cudaEventDestroy(e0)); cudaCheck(cudaEventDestroy(e1));
    std::sort(ms.begin(), ms.end());
    return ms[REPS / 2];
}

static const double PEAK_TFLOPS = 800.0;   // dense bf16 matmul (a bf16 8192^3 cuBLAS GEMM measures ~790 on an H100)

template <int D>
static void time_size(const char* name, int B, int Nq, int Nk, int H) {
    const size_t nq = (size_t)B * Nq * H * D, nk = (size_t)B * Nk * H * D, nl = (size_t)B * H * Nq;
    std::vector<bf16> hq, hk, hv, hdo;
    std::vector<float> unused;
    fill_normal(hq, unused, nq, 1.f); fill_normal(hk, unused, nk, 1.f); fill_normal(hv, unused, nk, 1.f); fill_normal(hdo, unused, nq, 1.f);
    bf16 *q = upload(hq), *k = upload(hk), *v = upload(hv), *dout = upload(hdo);
    bf16 *out = alloc_poisoned<bf16>(nq), *dq = alloc_poisoned<bf16>(nq), *dk = alloc_poisoned<bf16>(nk), *dv = alloc_poisoned<bf16>(nk);
    float *lse = alloc_poisoned<float>(nl), *delta = alloc_poisoned<float>(nl);

    const float t_fwd = median_ms([&] { attention_forward_flash(out, lse, q, k, v, B, Nq, Nk, H, D, 0); });
    const float t_bwd = median_ms([&] { attention_backward_flash(dq, dk, dv, delta, dout, out, lse, q, k, v, B, Nq, Nk, H, D, 0); });
    const float t_pre = median_ms([&] { attention_backward_preprocess(delta, dout, out, B, Nq, H, D, 0); });
    const float t_dkdv = median_ms([&] { attention_backward_dkdv_flash_launch<D>(dk, dv, dout, lse, delta, q, k, v, B, Nq, Nk, H, 0); });
    const float t_dq = median_ms([&] { attention_backward_dq_flash_launch<D>(dq, dout, lse, delta, q, k, v, B, Nq, Nk, H, 0); });
    const double tf = attention_forward_flops(B, Nq, Nk, H, D) / (t_fwd * 1e-3) / 1e12;
    const double tb = attention_backward_flops(B, Nq, Nk, H, D) / (t_bwd * 1e-3) / 1e12;
    printf("  %-36s fwd %8.3f ms %6.1f TFLOP/s (%4.1f%% of %.0f) | bwd %8.3f ms %6.1f TFLOP/s (%4.1f%%)\n", name, t_fwd, tf,
           100 * tf / PEAK_TFLOPS, PEAK_TFLOPS, t_bwd, tb, 100 * tb / PEAK_TFLOPS);
    printf("  %-36s bwd = preprocess %.3f + dK/dV %.3f + dQ %.3f ms (these execute 1.4x the conventional backward FLOPs)\n", "",
           t_pre, t_dkdv, t_dq);
    const size_t nscores = (size_t)B * H * Nq * Nk;
    if (nscores * sizeof(float) <= ((size_t)4 << 30)) {   // the naive version where its two score buffers fit (not 32,760²)
        float *att = alloc_poisoned<float>(nscores), *dS = alloc_poisoned<float>(nscores);
        const float n_fwd = median_ms([&] { attention_forward_naive<bf16>(out, lse, att, q, k, v, B, Nq, Nk, H, D, 0); });
        const float n_bwd = median_ms([&] { attention_backward_naive<bf16>(dq, dk, dv, dS, dout, att, q, k, v, B, Nq, Nk, H, D, 0); });
        const double nf = attention_forward_flops(B, Nq, Nk, H, D) / (n_fwd * 1e-3) / 1e12;
        const double nb = attention_backward_flops(B, Nq, Nk, H, D) / (n_bwd * 1e-3) / 1e12;
        printf("  %-36s naive fwd %8.3f ms %6.1f TFLOP/s | bwd %8.3f ms %6.1f TFLOP/s (fp32 CUDA cores, scores in memory)\n", "",
               n_fwd, nf, n_bwd, nb);
        cudaCheck(cudaFree(att)); cudaCheck(cudaFree(dS));
    }
#ifdef ENABLE_CUDNN
    if (attention_forward_cudnn(out, lse, q, k, v, B, Nq, Nk, H, D, 0) &&
        attention_backward_cudnn(dq, dk, dv, dout, out, lse, q, k, v, B, Nq, Nk, H, D, 0)) {   // graphs built before timing
        const float u_fwd = median_ms([&] { attention_forward_cudnn(out, lse, q, k, v, B, Nq, Nk, H, D, 0); });
        const float u_bwd = median_ms([&] { attention_backward_cudnn(dq, dk, dv, dout, out, lse, q, k, v, B, Nq, Nk, H, D, 0); });
        const double uf = attention_forward_flops(B, Nq, Nk, H, D) / (u_fwd * 1e-3) / 1e12;
        const double ub = attention_backward_flops(B, Nq, Nk, H, D) / (u_bwd * 1e-3) / 1e12;
        printf("  %-36s cuDNN fwd %8.3f ms %6.1f TFLOP/s (%4.1f%%) | bwd %8.3f ms %6.1f TFLOP/s (%4.1f%%) | flash/cuDNN time fwd %.2fx bwd %.2fx\n",
               "", u_fwd, uf, 100 * uf / PEAK_TFLOPS, u_bwd, ub, 100 * ub / PEAK_TFLOPS, t_fwd / u_fwd, t_bwd / u_bwd);
    } else {
        printf("  %-36s cuDNN: not run for this shape\n", "");
    }
#endif
    if (Nq == 32760 && Nk == 32760 && H == 12 && D == 128)
        printf("  %-36s 30 layers x fwd = %.0f ms of self-attention per 1.3B forward (283 TFLOP per 1.3B forward: 354 ms for the whole pass at 800)\n",
               "", 30 * t_fwd);
    const void* bufs[] = {q, k, v, dout, out, dq, dk, dv, lse, delta};
    for (const void* b : bufs) cudaCheck(cudaFree((void*)b));
}

// ---------------------------------------------------------------------------------------------------------

int main(int argc, char** argv) {
    bool quick = false, timing = true, seeded = false, small = false;
    uint64_t seed = ((uint64_t)time(NULL) * 1000003ull) ^ (uint64_t)getpid();
    for (int i = 1; i < argc; i++) {
        char* end = NULL;
        if (!strcmp(argv[i], "--quick")) quick = true;
        else if (!strcmp(argv[i], "--no-time")) timing = false;
        else if (!strcmp(argv[i], "--small")) small = quick = true;
        else if (!seeded && (seed = strtoull(argv[i], &end, 10), end != argv[i] && *end == 0)) seeded = true;
        else {
            fprintf(stderr, "usage: %s [SEED] [--quick] [--no-time] [--small]\n"
                    "  SEED        seed of the random inputs (default: a new one each run, printed)\n"
                    "  --quick     skip the 32,760-token case and the timings\n"
                    "  --no-time   run the checks only\n"
                    "  --small     only the cases under 200 tokens, untimed (for compute-sanitizer)\n", argv[0]);
            return 2;
        }
    }
    require_gpu(argv[0]);
    rng_state = seed;
#ifdef ENABLE_CUDNN
    const char* with = attention_cudnn_enabled() ? ", cuDNN SDPA" : ", cuDNN built in but off (TMD_CUDNN=0)";
#else
    const char* with = " (built without cuDNN)";
#endif
    printf("attention: flash (mma.sync bf16) and naive%s, forward and backward  seed %llu (repeat with: %s %llu%s)\n",
           with, (unsigned long long)seed, argv[0], (unsigned long long)seed, quick ? " --quick" : "");
    if (!fragment_test()) {
        printf("attention: the fragment helpers are wrong; every flash kernel uses them, so fix them first\n");
        return 1;
    }
    const Case cases[] = {
        {"tiny", 1, 30, 30, 2, 64, 1.f, 0, 0},
        {"tiny", 1, 30, 30, 2, 128, 1.f, 0, 0},
        {"tails: fewer keys than a tile", 1, 17, 3, 3, 64, 1.f, 0, 0},
        {"tails: one past the 128-row and 64-key tiles", 1, 129, 65, 2, 128, 2.f, 0, 0},
        {"odd, batch 2", 2, 1000, 77, 3, 64, 1.f, 0, 0},
        {"odd, peaky softmax", 1, 1000, 77, 3, 128, 2.f, 0, 0},
        {"cross-attention (512 text keys)", 1, 4096, 512, 12, 128, 1.f, 2, 0},
        {"world preset self-attention", 1, 2304, 2304, 6, 64, 1.f, 1, 0},
        {"world preset cross-attention", 1, 2304, 16, 6, 64, 1.f, 2, 0},
        {"Wan2.1 1.3B 480p self-attention", 1, 32760, 32760, 12, 128, 1.f, 0, 96},
    };
    for (const Case& c : cases)
        if (!(quick && c.Nq > 10000) && !(small && c.Nq > 200)) run_case(c);
    if (timing && !quick) {
        printf("\n(3) timing: median of %d after %d warm-ups; FLOPs fwd 4·B·Nq·Nk·d·H, bwd 2.5x fwd\n", REPS, WARMUP);
        printf("  FlashAttention-3 paper, H100, d 128, non-causal, 16k tokens: FlashAttention-2 fwd 370 / bwd 322, cuDNN 595 / 516, "
               "FlashAttention-3 648 / 561 TFLOP/s\n");
        time_size<128>("1.3B 480p self  L 32760 H 12 d 128", 1, 32760, 32760, 12);
        time_size<128>("1.3B 480p cross Nq 32760 Nk 512", 1, 32760, 512, 12);
        time_size<64>("world self L 2304 H 6 d 64", 1, 2304, 2304, 6);
    }
    cudaCheck(cudaDeviceSynchronize());
    if (g_failures) { printf("\nattention: %d check(s) FAILED\n", g_failures); return 1; }
    printf("\nattention: all checks passed\n");
    return 0;
}
