// dev/cuda/random.cu: kernels/random.cuh, checked three independent ways.
//
//   Philox4x32-10 known-answer vectors (Random123's kat_vectors), on host and device: exact
//   the device Philox against cuRAND's own curand_Philox4x32_10 on 2^16 random (counter, key) pairs: exact
//   normal_fill against the host twin (philox_normal4 compiled for the CPU; lib/philox.h, no libm): bitwise
//   the same values for any grid and block size, and when one fill is split in two calls at an odd offset: bitwise
//   moments of 10^7 draws with mean 0.5, std 2: mean, variance and the two-sided 3σ tail within 5 standard errors
// Timing: 50M normals (a batch of 24 Wan latents); bytes moved: 4 per element written.
#include "dev_common.cuh"
#include <curand_kernel.h>
#include "../../kernels/random.cuh"

__global__ void philox_pairs_kernel(uint4* mine, uint4* curand_out, const uint4* ctr, const uint2* key, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    mine[i] = philox4x32_10(ctr[i], key[i]);
    curand_out[i] = curand_Philox4x32_10(ctr[i], key[i]);
}

int main(int argc, char** argv) {
    HostRng rng = {dev_init(argc, argv, "random: Philox4x32-10 normal noise")};

    // ---- known answers (Random123 kat_vectors: philox4x32 10 rounds)
    printf("\n  Philox4x32-10\n");
    const uint4 kat_ctr[3] = {{0u, 0u, 0u, 0u}, {~0u, ~0u, ~0u, ~0u}, {0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}};
    const uint2 kat_key[3] = {{0u, 0u}, {~0u, ~0u}, {0xa4093822u, 0x299f31d0u}};
    const uint4 kat_out[3] = {{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}, {0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu},
                              {0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}};
    const int NP = 1 << 16;
    std::vector<uint4> ctr(NP);
    std::vector<uint2> key(NP);
    for (int i = 0; i < NP; i++) {
        if (i < 3) { ctr[i] = kat_ctr[i]; key[i] = kat_key[i]; continue; }
        uint64_t a = host_rng_next(&rng), b = host_rng_next(&rng), c = host_rng_next(&rng);
        ctr[i] = make_uint4((uint32_t)a, (uint32_t)(a >> 32), (uint32_t)b, (uint32_t)(b >> 32));
        key[i] = make_uint2((uint32_t)c, (uint32_t)(c >> 32));
    }
    uint4 *d_ctr = dev_alloc<uint4>(NP), *d_mine = dev_alloc<uint4>(NP), *d_cur = dev_alloc<uint4>(NP);
    uint2* d_key = dev_alloc<uint2>(NP);
    cudaCheck(cudaMemcpy(d_ctr, ctr.data(), NP * sizeof(uint4), cudaMemcpyHostToDevice));
    cudaCheck(cudaMemcpy(d_key, key.data(), NP * sizeof(uint2), cudaMemcpyHostToDevice));
    philox_pairs_kernel<<<NP / 256, 256>>>(d_mine, d_cur, d_ctr, d_key, NP);
    cudaCheck(cudaGetLastError());
    std::vector<uint4> mine(NP), cur(NP);
    cudaCheck(cudaMemcpy(mine.data(), d_mine, NP * sizeof(uint4), cudaMemcpyDeviceToHost));
    cudaCheck(cudaMemcpy(cur.data(), d_cur, NP * sizeof(uint4), cudaMemcpyDeviceToHost));
    bool kat_host = true, kat_dev = true, same_curand = true;
    for (int i = 0; i < 3; i++) {
        uint4 h = philox4x32_10(kat_ctr[i], kat_key[i]);
        kat_host = kat_host && !memcmp(&h, &kat_out[i], sizeof(uint4));
        kat_dev = kat_dev && !memcmp(&mine[i], &kat_out[i], sizeof(uint4));
    }
    for (int i = 0; i < NP; i++) same_curand = same_curand && !memcmp(&mine[i], &cur[i], sizeof(uint4));
    check_true("known-answer vectors (host)", kat_host);
    check_true("known-answer vectors (device)", kat_dev);
    check_true("= curand_Philox4x32_10 on 65536 inputs", same_curand);
    cudaCheck(cudaFree(d_ctr)); cudaCheck(cudaFree(d_mine)); cudaCheck(cudaFree(d_cur)); cudaCheck(cudaFree(d_key));

    // ---- normal_fill against the host twin, grid and split independence
    const size_t n = g_dev_small ? 100003 : 10000019;   // small-size mode: 10^5 draws (moments at 5 standard errors still)
    const uint64_t seed = host_rng_next(&rng), offset = host_rng_next(&rng) >> 8;   // a large, arbitrary stream position
    const float mean = 0.5f, std = 2.f;
    printf("\n  normal_fill  n %zu  seed %llu  offset %llu\n", n, (unsigned long long)seed, (unsigned long long)offset);
    float *d_a = dev_alloc<float>(n), *d_b = dev_alloc<float>(n);
    dev_poison(d_a, n * 4);
    normal_fill(d_a, n, seed, offset, mean, std, 0);
    std::vector<double> ref(n);
    for (size_t i = 0; i < n;) {
        uint64_t e = offset + i, blk = e / 4;
        double z[4];
        philox_normal4(z, seed, blk);
        for (int w = (int)(e % 4); w < 4 && i < n; w++, i++) ref[i] = (float)fma((double)std, z[w], (double)mean);
    }
    std::vector<float> a = dev_download(d_a, n);
    check("normal_fill = host twin, bitwise", a, ref, 0, 0);

    bool same = true;
    const int grids[3] = {1, 7, 1000}, blocks[3] = {32, 96, 512};
    for (int k = 0; k < 3; k++) {
        dev_poison(d_b, n * 4);
        normal_fill_kernel<<<grids[k], blocks[k]>>>(d_b, n, seed, offset, mean, std);
        cudaCheck(cudaGetLastError());
        same = same && dev_same_bits(d_a, d_b, n * 4);
    }
    check_true("same bits for grids 1, 7, 1000", same);
    const size_t cut = 333331;   // odd: the second call starts inside a Philox block
    dev_poison(d_b, n * 4);
    normal_fill(d_b, cut, seed, offset, mean, std, 0);
    normal_fill(d_b + cut, n - cut, seed, offset + cut, mean, std, 0);
    check_true("same bits when split at an odd offset", dev_same_bits(d_a, d_b, n * 4));

    double s1 = 0, s2 = 0, tail = 0;
    for (size_t i = 0; i < n; i++) { double z = (a[i] - mean) / std; s1 += z; s2 += z * z; tail += fabs(z) > 3; }
    double m = s1 / n, var = s2 / n - m * m, pt = tail / n, p3 = 0.0026997960632601866;
    printf("    mean %.5f (want 0 ± %.5f)  var %.5f (want 1 ± %.5f)  P(|z|>3) %.6f (want %.6f ± %.6f)\n", m, 5 / sqrt((double)n),
           var, 5 * sqrt(2.0 / n), pt, p3, 5 * sqrt(p3 * (1 - p3) / n));
    check_true("moments", fabs(m) < 5 / sqrt((double)n) && fabs(var - 1) < 5 * sqrt(2.0 / n) && fabs(pt - p3) < 5 * sqrt(p3 * (1 - p3) / n));
    cudaCheck(cudaFree(d_a)); cudaCheck(cudaFree(d_b));

    // ---- timing
    const size_t nt = (size_t)24 * 16 * 21 * 60 * 104;
    float* d_t = dev_alloc<float>(nt);
    uint64_t off = 0;
    float ms = bench_ms([&] { normal_fill(d_t, nt, seed, off, 0.f, 1.f, 0); off += nt; });
    printf("\n  timing, n %zu\n", nt);
    report_bw("normal_fill", 4.0 * nt, ms);
    cudaCheck(cudaFree(d_t));
    return dev_finish("random");
}
