// kernels/random.cuh: counter-based Gaussian noise on the GPU (Philox4x32-10, Salmon et al., SC'11)
//
//   philox4x32_10(ctr, key)   4 random 32-bit words from a 128-bit counter and a 64-bit key; no state
//   normal_fill               out[i] = mean + std·z(seed, offset + i), i < n, fp32
//
// Element e of a stream (e = offset + i) takes word e mod 4 of the Philox block with counter (e/4 as 64 bits, 0, 0)
// and key = seed; words 0,1 and 2,3 of a block are Box–Muller pairs, computed in double (lib/philox.h: the same bits on
// the host and the device) then rounded to fp32.
// So the value of element e depends only on (seed, e): not on the grid, the block size or how a fill is split into
// calls. A training step that needs several noise tensors gives each its own offset range (or seed) and saves
// (seed, next offset) in the checkpoint to resume bit-exactly.
// Overwritten: out [n].
// Version 1 (the simple one), checked and timed by dev/cuda/random.cu; not yet run on a GPU (dev/cuda/README.md).
#pragma once
#include <stdint.h>
#include "common.cuh"
#include "../lib/philox.h" // Box–Muller from two words, IEEE-exact on the host and the device

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u // golden ratio
#define PHILOX_W1 0xBB67AE85u // sqrt(3) − 1

// ten rounds of: two 32x32→64 multiplies, mix the high halves with the other words and the key, bump the key
__host__ __device__ inline uint4 philox4x32_10(uint4 ctr, uint2 key) {
    for (int round = 0; round < 10; round++) {
        uint64_t p0 = (uint64_t)PHILOX_M0 * ctr.x, p1 = (uint64_t)PHILOX_M1 * ctr.z;
        uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0, hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
        ctr = make_uint4(hi1 ^ ctr.y ^ key.x, lo1, hi0 ^ ctr.w ^ key.y, lo0);
        key.x += PHILOX_W0;
        key.y += PHILOX_W1;
    }
    return ctr;
}

// the 4 normals of Philox block `blk` for `seed`: words 0,1 and 2,3 are Box–Muller pairs (lib/philox.h: the same
// doubles on the host and the device)
__host__ __device__ inline void philox_normal4(double z[4], uint64_t seed, uint64_t blk) {
    uint4 r = philox4x32_10(make_uint4((uint32_t)blk, (uint32_t)(blk >> 32), 0u, 0u),
                            make_uint2((uint32_t)seed, (uint32_t)(seed >> 32)));
    philox_box_muller(r.x, r.y, z);
    philox_box_muller(r.z, r.w, z + 2);
}

// one thread per Philox block of 4 stream elements; grid-stride so any grid gives the same values
__global__ void normal_fill_kernel(float* out, size_t n, uint64_t seed, uint64_t offset, float mean, float std) {
    uint64_t first = offset / 4, last = (offset + n - 1) / 4; // Philox blocks touched by [offset, offset + n)
    for (uint64_t blk = first + (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; blk <= last;
         blk += (uint64_t)gridDim.x * blockDim.x) {
        double z[4];
        philox_normal4(z, seed, blk);
        for (int w = 0; w < 4; w++) {
            uint64_t e = blk * 4 + w;
            if (e >= offset && e < offset + n) out[e - offset] = (float)fma((double)std, z[w], (double)mean);
        }
    }
}

// out [n] fp32 = mean + std·N(0, 1), element i from stream position offset + i of `seed`
static inline void normal_fill(float* out, size_t n, uint64_t seed, uint64_t offset, float mean, float std,
                               cudaStream_t stream) {
    if (n == 0) return;
    uint64_t blocks4 = (offset + n - 1) / 4 - offset / 4 + 1;
    unsigned grid = (unsigned)((blocks4 + 255) / 256 < 4096 ? (blocks4 + 255) / 256 : 4096);
    normal_fill_kernel<<<grid, 256, 0, stream>>>(out, n, seed, offset, mean, std);
    cudaCheck(cudaGetLastError());
}
