// kernels/bench_prof.cuh: where a --bench run's GPU time goes, by kernel class (train_tmd --bench, sample_tmd --bench).
// Off unless a program turns it on (bench_prof.enabled = 1): then every attention call (forward, backward) and every
// cuBLASLt GEMM is bracketed by a pair of CUDA events on its stream, with the FLOPs it does; bench_prof_report sums the
// pairs per class and prints the time, its share of the measured total, the achieved TFLOP/s and the fraction of the
// device's peak. Everything else on the stream (norms, modulation, RoPE, residual adds, the discriminator's
// convolutions, AdamW, losses, copies) is the total minus the classes, reported as one line without a rate.
// Off, each hook is one predictable branch; normal runs record nothing.
//
// Peaks (a table per device name; other devices print "peak unknown"): H100 SXM bf16 dense 989 TFLOP/s by the spec
// sheet, ~790 a reference figure for a bf16 8192³ GEMM (not measured by this code), HBM3 3.35 TB/s; H100 PCIe 756 / 2.0
// TB/s; H200 989 / 4.8 TB/s; A100 SXM 312 / 2.0 TB/s. The fraction is of the spec peak.
#pragma once
#include <stdio.h>
#include <string.h>
#include <cuda_runtime.h>
#include "common.cuh"

// PROF_DISC: the discriminator's forward and backward calls (gpu/disc_gpu.cuh disc_gpu_forward / disc_gpu_backward),
// its GEMMs included: a bracket opened inside another (a GEMM inside the discriminator) records no pair of its own and
// adds its FLOPs to the open one, so no time is counted twice and the discriminator's rate is its GEMMs' FLOPs over
// its whole time (im2col, GroupNorm and the reductions included)
enum { PROF_ATTN_FWD, PROF_ATTN_BWD, PROF_GEMM, PROF_DISC, PROF_CLASSES };
static const char* const PROF_NAMES[PROF_CLASSES] = {"attention forward", "attention backward", "GEMM (cuBLASLt)",
                                                     "discriminator"};
#define PROF_PAIRS 2048 // event pairs in flight before a harvest (a harvest waits for the stream)

typedef struct {
    int enabled, n, created;
    int open; // the slot of the bracket now open, or -1 (brackets do not overlap; an inner one folds into it)
    cudaEvent_t ev[2 * PROF_PAIRS];
    int cls[PROF_PAIRS];
    double flops[PROF_PAIRS];
    double ms[PROF_CLASSES], fl[PROF_CLASSES];
    long calls[PROF_CLASSES];
} BenchProf;
static BenchProf bench_prof = {0, 0, 0, -1};

// sums the recorded pairs into their classes and empties the pool (waits for the last pair)
static void bench_prof_harvest(void) {
    if (bench_prof.n == 0) return;
    cudaCheck(cudaEventSynchronize(bench_prof.ev[2 * bench_prof.n - 1]));
    for (int i = 0; i < bench_prof.n; i++) {
        float ms = 0;
        cudaCheck(cudaEventElapsedTime(&ms, bench_prof.ev[2 * i], bench_prof.ev[2 * i + 1]));
        bench_prof.ms[bench_prof.cls[i]] += ms;
        bench_prof.fl[bench_prof.cls[i]] += bench_prof.flops[i];
        bench_prof.calls[bench_prof.cls[i]]++;
    }
    bench_prof.n = 0;
}

// opens a pair of class cls on stream s; returns its slot (or -1 when off; inside an open bracket −2 − that bracket's
// slot, which bench_prof_end credits with the FLOPs), to pass to bench_prof_end
static inline int bench_prof_begin(int cls, cudaStream_t s) {
    if (!bench_prof.enabled) return -1;
    if (bench_prof.open >= 0) return -2 - bench_prof.open;
    if (!bench_prof.created) {
        for (int i = 0; i < 2 * PROF_PAIRS; i++) cudaCheck(cudaEventCreate(&bench_prof.ev[i]));
        bench_prof.created = 1;
    }
    if (bench_prof.n == PROF_PAIRS) bench_prof_harvest();
    const int slot = bench_prof.n++;
    bench_prof.cls[slot] = cls;
    bench_prof.flops[slot] = 0;
    bench_prof.open = slot;
    cudaCheck(cudaEventRecord(bench_prof.ev[2 * slot], s));
    return slot;
}
static inline void bench_prof_end(int slot, double flops, cudaStream_t s) {
    if (slot == -1) return;
    if (slot <= -2) {
        bench_prof.flops[-2 - slot] += flops;
        return;
    } // folded into the open bracket
    bench_prof.flops[slot] += flops;
    bench_prof.open = -1;
    cudaCheck(cudaEventRecord(bench_prof.ev[2 * slot + 1], s));
}

// forgets everything measured so far (e.g. the warm-up)
static void bench_prof_reset(void) {
    bench_prof_harvest();
    memset(bench_prof.ms, 0, sizeof(bench_prof.ms));
    memset(bench_prof.fl, 0, sizeof(bench_prof.fl));
    memset(bench_prof.calls, 0, sizeof(bench_prof.calls));
}

// the device's spec peaks: bf16 dense tensor TFLOP/s and memory TB/s; 0 when the name is not in the table
static void bench_prof_peaks(const char* name, double* tflops, double* tbs) {
    *tflops = 0;
    *tbs = 0;
    if (strstr(name, "H200")) {
        *tflops = 989;
        *tbs = 4.8;
    } else if (strstr(name, "H100") && strstr(name, "PCIe")) {
        *tflops = 756;
        *tbs = 2.0;
    } else if (strstr(name, "H100")) {
        *tflops = 989;
        *tbs = 3.35;
    } // SXM (HBM3)
    else if (strstr(name, "A100")) {
        *tflops = 312;
        *tbs = 2.0;
    }
}

// per class: ms per unit (a step or a pass: total_ms and the classes are divided by units), share, TFLOP/s, % of peak
static void bench_prof_report(FILE* f, const char* what, double total_ms, int units) {
    bench_prof_harvest();
    cudaDeviceProp p;
    int dev = 0;
    cudaCheck(cudaGetDevice(&dev));
    cudaCheck(cudaGetDeviceProperties(&p, dev));
    double peak, bw;
    bench_prof_peaks(p.name, &peak, &bw);
    if (units < 1) units = 1;
    fprintf(f, "bench: where the time goes, %s (mean of %d; %s: ", what, units, p.name);
    if (peak > 0)
        fprintf(f,
                "bf16 dense peak %.0f TFLOP/s by spec, ~790 a reference figure for a bf16 8192^3 GEMM, not measured by "
                "this code; memory %.2f TB/s)\n",
                peak, bw);
    else
        fprintf(f, "peak unknown, not in kernels/bench_prof.cuh's table)\n");
    double classes = 0;
    for (int c = 0; c < PROF_CLASSES; c++) {
        if (bench_prof.calls[c] == 0) {
            fprintf(f, "bench:   %-34s (no calls bracketed)\n", PROF_NAMES[c]);
            continue;
        }
        const double ms = bench_prof.ms[c] / units,
                     tf = bench_prof.ms[c] > 0 ? bench_prof.fl[c] / (bench_prof.ms[c] * 1e-3) / 1e12 : 0;
        classes += ms;
        fprintf(f, "bench:   %-34s %9.2f ms %5.1f%%  %6ld calls  %7.1f TFLOP/s", PROF_NAMES[c], ms,
                total_ms > 0 ? 100 * ms / total_ms : 0, bench_prof.calls[c] / units, tf);
        if (peak > 0)
            fprintf(f, "  %5.1f%% of peak\n", 100 * tf / peak);
        else
            fprintf(f, "\n");
    }
    const double rest = total_ms - classes;
    fprintf(
        f,
        "bench:   %-34s %9.2f ms %5.1f%%  (norms, modulation, RoPE, residuals, AdamW, losses, what is not bracketed "
        "above; host gaps in a wall-clock total: no rate)\n",
        "everything else", rest, total_ms > 0 ? 100 * rest / total_ms : 0);
    double all_fl = 0;
    for (int c = 0; c < PROF_CLASSES; c++) all_fl += bench_prof.fl[c];
    const double tf_all = total_ms > 0 ? all_fl / units / (total_ms * 1e-3) / 1e12 : 0;
    fprintf(f, "bench:   %-34s %9.2f ms        matmul FLOPs over the whole time: %.1f TFLOP/s", "total", total_ms,
            tf_all);
    if (peak > 0)
        fprintf(f, " (%.1f%% of peak)\n", 100 * tf_all / peak);
    else
        fprintf(f, "\n");
}
