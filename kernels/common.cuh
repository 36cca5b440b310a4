// kernels/common.cuh: error-checking macros and device discovery shared by the CUDA programs.
#pragma once
#include <stdio.h>
#include <stdlib.h>
#include <cuda_runtime.h>

// every CUDA runtime call goes through this: file, line and the runtime's message, then exit
#define cudaCheck(call)                                                                                                \
    do {                                                                                                               \
        cudaError_t e_ = (call);                                                                                       \
        if (e_ != cudaSuccess) {                                                                                       \
            fprintf(stderr, "[CUDA error] %s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_));        \
            exit(1);                                                                                                   \
        }                                                                                                              \
    } while (0)

// exits with a message that says what to do when there is no usable GPU
static void require_gpu(const char* prog) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
        fprintf(stderr,
                "%s: no CUDA GPU found (%s).\n"
                "  This program needs an NVIDIA GPU. Without one, `make test` runs the CPU reference and its tests,\n"
                "  and `./test_tmd forward --help` runs a checkpoint on the CPU.\n",
                prog, e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
        exit(1);
    }
    cudaDeviceProp p;
    cudaCheck(cudaGetDeviceProperties(&p, 0));
    printf("device: %s, %.1f GiB, compute capability %d.%d\n", p.name, p.totalGlobalMem / 1073741824.0, p.major,
           p.minor);
}

// allocates or exits naming the buffer and the knobs that shrink it
static void* cuda_malloc_named(size_t bytes, const char* what, const char* knobs) {
    void* p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes);
    if (e != cudaSuccess) {
        size_t free_b = 0, total_b = 0;
        cudaMemGetInfo(&free_b, &total_b);
        fprintf(stderr, "[out of memory] %s: %.2f GiB requested, %.2f GiB free of %.2f GiB; %s\n", what,
                bytes / 1073741824.0, free_b / 1073741824.0, total_b / 1073741824.0, knobs);
        exit(1);
    }
    return p;
}
