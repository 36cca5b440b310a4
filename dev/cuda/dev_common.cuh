// dev/cuda/dev_common.cuh: what every kernel check in dev/cuda shares.
//   - the CPU twins: cpu/layers.h itself, in double (the same oracle the CPU reference tests use)
//   - fresh random inputs (a new seed each run, printed; `./prog SEED` repeats a run), rounded to floatX where the
//     kernel reads floatX so the twin sees exactly the kernel's inputs
//   - check(): max abs / max rel / normwise error against a stated tolerance, NaN fails, failures counted so the
//     program exits non-zero
//   - bench_ms(): CUDA events, warm-up, median of DEV_REPS runs; report_bw / report_flops against the H100 ceilings
#pragma once
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <math.h>
#include <time.h>
#include <unistd.h>
#include <vector>
#include <algorithm>
#include "../../kernels/common.cuh"
#include "../../lib/rng.h"  // splitmix64: the host draws
#include "../../kernels/precision.cuh"

typedef double real;   // the CPU reference's element type: the twins run in double
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#include "../../cpu/layers.h"
#pragma GCC diagnostic pop

// ceilings (H100 SXM): HBM datasheet bandwidth; dense bf16 matmul as a bf16 8192^3 cuBLAS GEMM measures it (~790 TFLOP/s)
#ifndef HBM_GBPS
#define HBM_GBPS 3350.0
#endif
#ifndef PEAK_TFLOPS
#define PEAK_TFLOPS 800.0
#endif
#ifndef DEV_REPS
#define DEV_REPS 25
#endif

// relative tolerance of a value stored as floatX: bf16 keeps 8 significant bits (half an ulp ≤ 2^-8 = 3.9e-3)
#define TOL_X (sizeof(floatX) == 2 ? 1e-2 : 1e-5)

// ---------------------------------------------------------------------------------------------------------
// host random numbers: splitmix64

typedef struct { uint64_t s; } HostRng;
static inline uint64_t host_rng_next(HostRng* r) {
    return splitmix64(&r->s);
}
static inline double host_rng_uniform(HostRng* r) { return (double)(host_rng_next(r) >> 11) * (1.0 / 9007199254740992.0); }
static inline double host_rng_normal(HostRng* r) {
    double u1 = host_rng_uniform(r), u2 = host_rng_uniform(r);
    return sqrt(-2.0 * log(u1 + 1e-300)) * cos(6.283185307179586 * u2);
}

static inline std::vector<float> rand_uniform(size_t n, HostRng* r, float lo, float hi) {
    std::vector<float> v(n);
    for (size_t i = 0; i < n; i++) v[i] = (float)(lo + (hi - lo) * host_rng_uniform(r));
    return v;
}
static inline std::vector<float> rand_normal(size_t n, HostRng* r, float mean, float std) {
    std::vector<float> v(n);
    for (size_t i = 0; i < n; i++) v[i] = (float)(mean + std * host_rng_normal(r));
    return v;
}
// round in place to what a T holds, so the twin reads the kernel's exact inputs
template <typename T> static void round_to(std::vector<float>& v) { for (auto& x : v) x = to_float(from_float<T>(x)); }
static inline std::vector<double> to_double(const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); }

// ---------------------------------------------------------------------------------------------------------
// device buffers

template <typename T> static T* dev_upload(const std::vector<float>& h) {
    std::vector<T> t(h.size());
    for (size_t i = 0; i < h.size(); i++) t[i] = from_float<T>(h[i]);
    T* d = (T*)cuda_malloc_named(h.size() * sizeof(T) + 16, "test input", "run with smaller sizes");
    cudaCheck(cudaMemcpy(d, t.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice));
    return d;
}
template <typename T> static T* dev_alloc(size_t n) { return (T*)cuda_malloc_named(n * sizeof(T) + 16, "test buffer", "run with smaller sizes"); }
template <typename T> static std::vector<float> dev_download(const T* d, size_t n) {
    std::vector<T> t(n);
    cudaCheck(cudaMemcpy(t.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost));
    std::vector<float> h(n);
    for (size_t i = 0; i < n; i++) h[i] = to_float(t[i]);
    return h;
}
template <typename T> static void dev_set(T* d, const std::vector<float>& h) {
    std::vector<T> t(h.size());
    for (size_t i = 0; i < h.size(); i++) t[i] = from_float<T>(h[i]);
    cudaCheck(cudaMemcpy(d, t.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice));
}
// uniform [lo, hi) straight on the device, for buffers too large to draw on the host (timing-only sizes)
template <typename T> __global__ void dev_fill_uniform_kernel(T* d, size_t n, uint64_t seed, float lo, float hi) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        uint64_t z = seed + 0x9E3779B97F4A7C15ull * (i + 1);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        d[i] = from_float<T>(lo + (hi - lo) * (float)((z >> 40) * (1.0 / 16777216.0)));
    }
}
template <typename T> static void dev_fill_uniform(T* d, size_t n, HostRng* r, float lo, float hi) {
    dev_fill_uniform_kernel<T><<<4096, 256>>>(d, n, host_rng_next(r), lo, hi);
    cudaCheck(cudaGetLastError());
}
// all-ones bytes are NaN in fp32 and bf16: an element the kernel forgot to write fails the check
static inline void dev_poison(void* d, size_t bytes) { cudaCheck(cudaMemset(d, 0xFF, bytes)); }
// bitwise equality of two device buffers (determinism: the same inputs twice must give the same bits)
static inline bool dev_same_bits(const void* a, const void* b, size_t bytes) {
    std::vector<unsigned char> ha(bytes), hb(bytes);
    cudaCheck(cudaMemcpy(ha.data(), a, bytes, cudaMemcpyDeviceToHost));
    cudaCheck(cudaMemcpy(hb.data(), b, bytes, cudaMemcpyDeviceToHost));
    return memcmp(ha.data(), hb.data(), bytes) == 0;
}

// ---------------------------------------------------------------------------------------------------------
// checks

static int g_failures = 0;

// passes when |gpu − ref| ≤ rtol·|ref| + atol_frac·max|ref| for every element (a NaN never passes)
static inline bool check(const char* what, const std::vector<float>& gpu, const std::vector<double>& ref, double rtol, double atol_frac) {
    size_t n = ref.size(), bad = 0, nans = 0, worst = 0;
    if (gpu.size() != n) {
        printf("    %-34s FAIL: %zu values, expected %zu\n", what, gpu.size(), n);
        g_failures++;
        return false;
    }
    double maxref = 0, max_abs = 0, max_rel = 0, num = 0, den = 0;
    for (size_t i = 0; i < n; i++) maxref = fmax(maxref, fabs(ref[i]));
    double atol = atol_frac * maxref;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)gpu[i] - ref[i]);
        if (!(e <= rtol * fabs(ref[i]) + atol)) { if (bad == 0) worst = i; bad++; }
        if (e != e) { nans++; continue; }
        max_abs = fmax(max_abs, e);
        if (fabs(ref[i]) > atol) max_rel = fmax(max_rel, e / fabs(ref[i]));
        num += e * e; den += ref[i] * ref[i];
    }
    bool ok = bad == 0;
    printf("    %-34s max abs %.2e  max rel %.2e  norm rel %.2e  (rtol %.0e + %.0e·max|ref| %.2e)  %s\n", what, max_abs, max_rel,
           den > 0 ? sqrt(num / den) : sqrt(num), rtol, atol_frac, maxref, ok ? "ok" : "FAIL");
    if (!ok) {
        printf("      %zu of %zu elements out of tolerance (%zu NaN); first at %zu: gpu %.8g ref %.8g\n", bad, n, nans, worst,
               (double)gpu[worst], ref[worst]);
        g_failures++;
    }
    return ok;
}

static inline bool check_true(const char* what, bool ok) {
    printf("    %-34s %s\n", what, ok ? "ok" : "FAIL");
    if (!ok) g_failures++;
    return ok;
}

// ---------------------------------------------------------------------------------------------------------
// small-size mode (DEV_SMALL=1 in the environment): only the sizes whose largest tensor has at most DEV_SMALL_MAX
// elements run, and nothing is timed. For a functional simulator (GPGPU-Sim runs ~2 million thread-instructions a
// second), a debugger or a quick smoke test; the checks themselves are the same.

#ifndef DEV_SMALL_MAX
#define DEV_SMALL_MAX 100000
#endif
static int g_dev_small = 0;

// true (and one line saying so) when small-size mode skips a case whose largest tensor has `elems` elements
static inline bool dev_skip(size_t elems, const char* what) {
    if (!g_dev_small || elems <= DEV_SMALL_MAX) return false;
    printf("  (small-size mode: %s skipped, %zu elements > %d)\n", what, elems, DEV_SMALL_MAX);
    return true;
}

// ---------------------------------------------------------------------------------------------------------
// timing

// median over DEV_REPS runs of fn(), each between two events, after 3 warm-up runs
template <typename F> static float bench_ms(F fn) {
    if (g_dev_small) return -1.f;   // small-size mode: no timing
    cudaEvent_t a, b;
    cudaCheck(cudaEventCreate(&a)); cudaCheck(cudaEventCreate(&b));
    for (int i = 0; i < 3; i++) fn();
    cudaCheck(cudaDeviceSynchronize());
    std::vector<float> t(DEV_REPS);
    for (int i = 0; i < DEV_REPS; i++) {
        cudaCheck(cudaEventRecord(a));
        fn();
        cudaCheck(cudaEventRecord(b));
        cudaCheck(cudaEventSynchronize(b));
        cudaCheck(cudaEventElapsedTime(&t[i], a, b));
    }
    cudaCheck(cudaEventDestroy(a)); cudaCheck(cudaEventDestroy(b));
    std::sort(t.begin(), t.end());
    return t[DEV_REPS / 2];
}

static inline void report_bw(const char* what, double bytes, float ms) {
    if (ms < 0) { printf("    time %-29s skipped (small-size mode)\n", what); return; }
    double gbs = bytes / (ms * 1e-3) / 1e9;
    printf("    time %-29s %9.4f ms  %8.1f GB/s  %5.1f%% of %.0f GB/s HBM  (%.1f MB moved)\n", what, ms, gbs, 100.0 * gbs / HBM_GBPS,
           HBM_GBPS, bytes / 1e6);
}
static inline void report_flops(const char* what, double flops, float ms) {
    if (ms < 0) { printf("    time %-29s skipped (small-size mode)\n", what); return; }
    double tf = flops / (ms * 1e-3) / 1e12;
    printf("    time %-29s %9.4f ms  %8.1f TFLOP/s  %5.1f%% of %.0f TFLOP/s\n", what, ms, tf, 100.0 * tf / PEAK_TFLOPS, PEAK_TFLOPS);
}

// ---------------------------------------------------------------------------------------------------------
// start and end of every check program

static inline uint64_t dev_init(int argc, char** argv, const char* what) {
    require_gpu(argv[0]);
    const char* small = getenv("DEV_SMALL");
    g_dev_small = small && small[0] && strcmp(small, "0") != 0;
    if (g_dev_small) printf("small-size mode (DEV_SMALL): sizes up to %d elements, no timing\n", DEV_SMALL_MAX);
    uint64_t seed = argc > 1 ? strtoull(argv[1], NULL, 10) : ((uint64_t)time(NULL) * 1000003ull) ^ (uint64_t)getpid();
    printf("%s  [floatX = %s]  seed %llu (repeat with: %s %llu)\n", what, FLOATX_NAME, (unsigned long long)seed, argv[0],
           (unsigned long long)seed);
    return seed;
}

static inline int dev_finish(const char* prog) {
    cudaCheck(cudaDeviceSynchronize());
    if (g_failures) { printf("%s: %d check(s) FAILED\n", prog, g_failures); return 1; }
    printf("%s: all checks passed\n", prog);
    return 0;
}
