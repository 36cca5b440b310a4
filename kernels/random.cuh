// kernels/random.cuh: counter-based Gaussian noise on the GPU (Philox4x32-10, Salmon et al., SC'11)
//
//   philox4x32_10(ctr, key)   4 random 32-bit words from a 128-bit counter and a 64-bit key; no state
//   normal_fill               out[i] = mean + std·z(seed, offset + i), i < n, fp32
//
// Element e of a stream (e = offset + i) takes word e mod 4 of the Philox block with counter (e/4 as 64 bits, 0, 0)
// and key = seed; words 0,1 and 2,3 of a block are Box–Muller pairs, computed in double then rounded to fp32.
// So the value of element e depends only on (seed, e): not on the grid, the block size or how a fill is split into
// calls. A training step that needs several noise tensors gives each its own offset range (or seed) and saves
// (seed, next offset) in the checkpoint to resume bit-exactly.
// Overwritten: out [n].
// Version 1 (the simple one), checked and timed by dev/cuda/random.cu; not yet run on a GPU (dev/cuda/README.md).
#pragma once
#include <stdint.h>
#include "common.cuh"

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u   // golden ratio
#define PHILOX_W1 0xBB67AE85u   // sqrt(3) − 1

// ten rounds of: two 32x32→64 multiplies, mix the high halves with the other words and the key, bump the key
__host__ __device__ inline uint4 philox4x32_10(uint4 ctr, uint2 key) {
    for (int round = 0; round < 10; round++) {
        uint64_t p0 = (uint64_t)PHILOX_M0 * ctr.x, p1 = (uint64_t)PHILOX_M1 * ctr.z;
        uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0, hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
        ctr = make_uint4(hi1 ^ ctr.y ^ key.x, lo1, hi0 ^ ctr.w ^ key.y, lo0);
        key.x += PHILOX_W0; key.y += PHILOX_W1;
    }
    return ctr;
}

// a 32-bit word -> uniform in (0, 1): never 0, so log() is finite
__host__ __device__ inline double philox_uniform(uint32_t u) { return ((double)u + 0.5) * (1.0 / 4294967296.0); }

// the 4 normals of Philox block `blk` for `seed`
__host__ __device__ inline void philox_normal4(double z[4], uint64_t seed, uint64_t blk) {
    uint4 r = philox4x32_10(make_uint4((uint32_t)blk, (uint32_t)(blk >> 32), 0u, 0u), make_uint2((uint32_t)seed, (uint32_t)(seed >> 32)));
    const double two_pi = 6.283185307179586476925286766559;
    double r0 = sqrt(-2.0 * log(philox_uniform(r.x))), a0 = two_pi * philox_uniform(r.y);
    double r1 = sqrt(-2.0 * log(philox_uniform(r.z))), a1 = two_pi * philox_uniform(r.w);
    z[0] = r0 * cos(a0); z[1] = r0 * sin(a0);
    z[2] = r1 * cos(a1); z[3] = r1 * sin(a1);
}

// one thread per Philox block of 4 stream elements; grid-stride so any grid gives the same values
__global__ void normal_fill_kernel(float* out, size_t n, uint64_t seed, uint64_t offset, float mean, float std) {
    uint64_t first = offset / 4, last = (offset + n - 1) / 4;            // Philox blocks touched by [offset, offset + n)
    for (uint64_t blk = first + (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; blk <= last; blk += (uint64_t)gridDim.x * blockDim.x) {
        double z[4];
        philox_normal4(z, seed, blk);
        for (int w = 0; w < 4; w++) {
            uint64_t e = blk * 4 + w;
            if (e >= offset && e < offset + n) out[e - offset] = (float)(mean + std * z[w]);
        }
    }
}

// out [n] fp32 = mean + std·N(0, 1), element i from stream position offset + i of `seed`
static inline void normal_fill(float* out, size_t n, uint64_t seed, uint64_t offset, float mean, float std, cudaStream_t stream) {
    if (n == 0) return;
    uint64_t blocks4 = (offset + n - 1) / 4 - offset / 4 + 1;
    unsigned grid = (unsigned)((blocks4 + 255) / 256 < 4096 ? (blocks4 + 255) / 256 : 4096);
    normal_fill_kernel<<<grid, 256, 0, stream>>>(out, n, seed, offset, mean, std);
    cudaCheck(cudaGetLastError());
}
