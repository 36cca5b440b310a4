// kernels/attention.cuh: multi-head attention on the GPU (non-causal, no mask), the 71% of the 1.3B model's FLOPs:
// a flash-style fused forward and a FlashAttention-2-style deterministic backward on bf16 tensor cores
// (mma.sync.m16n8k16 through inline PTX), plus a naive version of both that materialises the scores (tests, tiny
// models). Born in dev/cuda/attention.cu (checks against a CPU twin, timings); the design is in dev/cuda/attention.md.
//
// What it computes, per batch b and head h (the math of attention_forward / attention_backward in cpu/layers.h):
//   S = q·kᵀ / √d        P = softmax_rows(S)        out = P·v        lse_i = log Σ_j exp(S_ij)
//   backward, with δ_i = Σ_e dout_ie·out_ie (= Σ_j P_ij·dP_ij):
//   dv = Pᵀ·dout         dP = dout·vᵀ        dS = P ⊙ (dP − δ)        dq = dS·k / √d        dk = dSᵀ·q / √d
//
// Shapes (heads interleaved as the model stores them, [B, tokens, H, d], row-major, d contiguous):
//   q, out, dq, dout  [B, Nq, H, d]      k, v, dk, dv  [B, Nk, H, d]      lse, delta  [B, H, Nq] fp32
// Nq and Nk are separate, so one kernel serves self-attention (Nq = Nk = L, 32,760 at 480p) and cross-attention
// (Nk = 512 text keys); any Nq, Nk >= 1 works (tails are bounds-checked). q and k arrive RMS-normalised and rotated.
// Every function OVERWRITES its outputs (out, lse, dq, dk, dv, and the scratch att / dS / delta); nothing accumulates.
// Unlike the CPU reference (which accumulates into dq, dk, dv), callers that need += add the result themselves.
//
// Flash kernels (bf16 in and out, fp32 accumulate, online softmax in base 2, head dim d = 64 or 128 as a template):
//   all three use 256 threads = 8 warps; each warp owns 16 rows of the block's "resident" operand and sweeps the
//   other operand through a double-buffered shared-memory tile (cp.async, zero-filled past the end).
//   kernel                      resident rows (8 warps × 16)     swept tile          smem per block, d=128 / d=64
//   forward                     128 query rows (Q in registers)  64 keys (K, V)      104,448 B / 55,296 B
//   backward dK, dV             128 key rows (K, V in smem)      32 / 64 queries     104,960 B / 74,752 B
//   backward dQ                 128 query rows (Q, dO in regs)   32 / 64 keys        104,448 B / 73,728 B
//   (a smem row holds d + 8 bf16: the 16-byte pad puts ldmatrix's 8 row addresses in 8 different bank groups)
//   One block per SM at d = 128 (up to 255 registers a thread); the grid is (row tiles, H, B).
//
// FLOPs (the convention the FlashAttention papers use, so TFLOP/s compare): forward 4·B·Nq·Nk·d·H (two matmuls),
// backward 2.5× that (five matmuls). The deterministic two-kernel backward really executes seven matmuls
// (S and dP are recomputed in both kernels), 1.4× the conventional backward count.
// Determinism: no atomics; every output element is written by one thread after a fixed-order reduction.
//
// Sources of the non-obvious facts (PTX ISA 9.x, "Warp-level matrix instructions"):
//   mma.m16n8k16 .bf16 fragments (§9.7.14.5.8), groupID g = lane>>2, t = lane%4:
//     A (16×16, row-major): a[0] = (row g,   k 2t..2t+1)  a[1] = (row g+8, k 2t..2t+1)
//                           a[2] = (row g,   k 2t+8..+9)  a[3] = (row g+8, k 2t+8..+9)
//     B (16×8, "col"):      b[0] = (k 2t..2t+1, col g)    b[1] = (k 2t+8..2t+9, col g)
//     C/D (16×8, fp32):     c[0], c[1] = (row g, col 2t, 2t+1)   c[2], c[3] = (row g+8, col 2t, 2t+1)
//     In every .b32 register the lower-indexed element sits in the low 16 bits.
//   ldmatrix.m8n8.x4.b16 (§9.7.14.5.15): lanes 8i..8i+7 give the 8 row addresses (16 bytes each) of matrix i, and
//     register i of every lane receives matrix i's elements (row lane/4, cols 2·(lane%4), +1); with .trans it
//     receives (rows 2·(lane%4), +1; col lane/4) instead.
//   Consequence used by every kernel (as in FlashAttention-2): the C fragments of two adjacent n8 tiles, rounded
//   to bf16 and packed pairwise, are exactly the A fragment of one k16 step, so P and dS never leave registers.
#pragma once
#include <stdint.h>
#include <string.h>
#include <math.h>
#include <cuda_bf16.h>
#include "common.cuh"    // cudaCheck
#include "precision.cuh" // to_float, from_float<T> (the naive path's conversions)

typedef __nv_bfloat16 bf16;

#define ATTN_LOG2E 1.4426950408889634f
#define ATTN_LN2   0.6931471805599453f
#define ATTN_PAD   8 // bf16 elements of padding at the end of every shared-memory row (16 bytes)

// The flash kernels and their launchers. A build with -DATTN_NAIVE (make ATTN=naive) leaves them out entirely, so the
// program carries no tensor-core or async-copy instructions (a functional simulator cannot parse or run them).
#ifndef ATTN_NAIVE

// tile sizes of the flash kernels for head dim D (see the table above)
template <int D> struct AttnTiles {
    static_assert(D == 64 || D == 128, "the flash kernels cover head dims 64 and 128");
    static constexpr int WARPS = 8, THREADS = 32 * WARPS;
    static constexpr int LDS = D + ATTN_PAD;               // shared-memory row stride, in elements
    static constexpr int FWD_BQ = 16 * WARPS, FWD_BK = 64; // forward: query rows per block, keys per tile
    static constexpr int DKV_BK = 16 * WARPS, DKV_BQ = D == 128 ? 32 : 64; // dK/dV: keys per block, queries per tile
    static constexpr int DQ_BQ = 16 * WARPS, DQ_BK = D == 128 ? 32 : 64;   // dQ: query rows per block, keys per tile
    static constexpr size_t FWD_SMEM = (size_t)(FWD_BQ + 4 * FWD_BK) * LDS * sizeof(bf16);    // Q, 2×K, 2×V
    static constexpr size_t DKV_SMEM = (size_t)(2 * DKV_BK + 4 * DKV_BQ) * LDS * sizeof(bf16) // K, V, 2×Q, 2×dO
                                       + (size_t)4 * DKV_BQ * sizeof(float);                  // 2×lse, 2×delta
    static constexpr size_t DQ_SMEM = (size_t)(2 * DQ_BQ + 4 * DQ_BK) * LDS * sizeof(bf16);   // Q, dO, 2×K, 2×V
    static_assert(FWD_SMEM <= 227 * 1024 && DKV_SMEM <= 227 * 1024 && DQ_SMEM <= 227 * 1024,
                  "over the per-block smem limit");
};

// ---------------------------------------------------------------------------------------------------------
// PTX helpers: async copies, ldmatrix, mma. The "memory" clobbers keep the compiler from moving shared-memory
// traffic across them (correctness before the last few percent).

__device__ __forceinline__ uint32_t attn_smem_u32(const void* p) { return (uint32_t)__cvta_generic_to_shared(p); }

// 16-byte global -> shared copy that bypasses L1; valid == false reads nothing and writes 16 zero bytes
// (cp.async's src-size operand: bytes past src-size are zero-filled)
__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(attn_smem_u32(smem)), "l"(gmem),
                 "r"(valid ? 16 : 0)
                 : "memory");
}
// 4-byte global -> shared copy (through L1; .cg takes only 16 bytes); valid == false writes 4 zero bytes
__device__ __forceinline__ void cp_async_4(void* smem, const void* gmem, bool valid) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(attn_smem_u32(smem)), "l"(gmem),
                 "r"(valid ? 4 : 0)
                 : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }

__device__ __forceinline__ void ldsm_x4(uint32_t r[4], const bf16* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(attn_smem_u32(p))
                 : "memory");
}
__device__ __forceinline__ void ldsm_x4_trans(uint32_t r[4], const bf16* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(attn_smem_u32(p))
                 : "memory");
}

// c[16×8] += a[16×16] · b[16×8], bf16 inputs, fp32 accumulate
__device__ __forceinline__ void mma_bf16_16816(float c[4], const uint32_t a[4], const uint32_t b[2]) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
                 "{%0, %1, %2, %3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// two floats -> one .b32 of two bf16, lo in the low half (the lower-indexed fragment element)
__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi); // .x = lo is stored first, i.e. in the low 16 bits
    uint32_t u;
    memcpy(&u, &v, sizeof(u));
    return u;
}

// the C fragments of n8 tiles 2kk and 2kk+1 (a 16×16 block of P or dS) as the A fragment of one k16 step
__device__ __forceinline__ void c_to_a_frag(uint32_t a[4], const float c0[4], const float c1[4]) {
    a[0] = pack_bf16x2(c0[0], c0[1]); // row g,   k 2t, 2t+1      (tile 2kk,   c0 c1)
    a[1] = pack_bf16x2(c0[2], c0[3]); // row g+8, k 2t, 2t+1      (tile 2kk,   c2 c3)
    a[2] = pack_bf16x2(c1[0], c1[1]); // row g,   k 2t+8, 2t+9    (tile 2kk+1, c0 c1)
    a[3] = pack_bf16x2(c1[2], c1[3]); // row g+8, k 2t+8, 2t+9    (tile 2kk+1, c2 c3)
}

// A fragment (16×16) at rows m0.., cols k0.. of a row-major [m][k] smem array with row stride ld.
// Lane l addresses row (l&7) of matrix l>>3; matrices (m 0-7, k 0-7), (m 8-15, k 0-7), (m 0-7, k 8-15), (m 8-15, k
// 8-15) land in a[0..3], which is the A fragment order.
__device__ __forceinline__ void load_frag_a(uint32_t a[4], const bf16* s, int ld, int m0, int k0, int lane) {
    ldsm_x4(a, s + (m0 + (lane & 7) + ((lane >> 3) & 1) * 8) * ld + k0 + (lane >> 4) * 8);
}

// B fragments of two adjacent n8 tiles (n0..n0+7 -> b0, n0+8..n0+15 -> b1) for the k16 step at k0, when smem holds
// B transposed, [n][k] (e.g. K for S = Q·Kᵀ: a row is a key = n, a column is a head-dim index = k).
// Matrices: (n 0-7, k 0-7) -> b0[0], (n 0-7, k 8-15) -> b0[1], (n 8-15, k 0-7) -> b1[0], (n 8-15, k 8-15) -> b1[1].
__device__ __forceinline__ void load_frag_b_nk(uint32_t b0[2], uint32_t b1[2], const bf16* s, int ld, int n0, int k0,
                                               int lane) {
    uint32_t r[4];
    ldsm_x4(r, s + (n0 + (lane & 7) + (lane >> 4) * 8) * ld + k0 + ((lane >> 3) & 1) * 8);
    b0[0] = r[0];
    b0[1] = r[1];
    b1[0] = r[2];
    b1[1] = r[3];
}

// the same two B fragments when smem holds B as [k][n] (e.g. V for O = P·V: a row is a key = k, a column is a
// head-dim index = n): ldmatrix .trans. Matrices: (k 0-7, n 0-7) -> b0[0], (k 8-15, n 0-7) -> b0[1],
// (k 0-7, n 8-15) -> b1[0], (k 8-15, n 8-15) -> b1[1].
__device__ __forceinline__ void load_frag_b_kn(uint32_t b0[2], uint32_t b1[2], const bf16* s, int ld, int k0, int n0,
                                               int lane) {
    uint32_t r[4];
    ldsm_x4_trans(r, s + (k0 + (lane & 7) + ((lane >> 3) & 1) * 8) * ld + n0 + (lane >> 4) * 8);
    b0[0] = r[0];
    b0[1] = r[1];
    b1[0] = r[2];
    b1[1] = r[3];
}

// stages rows [row0, row0 + ROWS) of one head into smem [ROWS][D + ATTN_PAD]; global row r starts at g + r·stride.
// Rows at or past n are zero-filled (and nothing past the end is read). 16-byte chunks, consecutive threads on
// consecutive chunks of a row, so a warp reads whole rows.
template <int D, int ROWS, int THREADS>
__device__ __forceinline__ void load_tile_async(bf16* s, const bf16* g, size_t stride, int row0, int n) {
    constexpr int CPR = D / 8, CHUNKS = ROWS * CPR; // 16-byte chunks per row, per tile
#pragma unroll
    for (int it = 0; it < (CHUNKS + THREADS - 1) / THREADS; it++) {
        const int c = it * THREADS + threadIdx.x;
        if (CHUNKS % THREADS != 0 && c >= CHUNKS) break;
        const int r = c / CPR, col = (c % CPR) * 8;
        const bool valid = row0 + r < n;
        const bf16* src = g + (size_t)(valid ? row0 + r : 0) * stride + col; // row 0 always exists (n >= 1)
        cp_async_16(s + r * (D + ATTN_PAD) + col, src, valid);
    }
}

// ---------------------------------------------------------------------------------------------------------
// Forward. Grid (ceil(Nq/128), H, B). Warp w owns query rows q0 + 16w .. +15; each thread holds rows g and g+8
// of them (index r = 0, 1 below). Online softmax in base 2: scores are scaled by scale·log2(e), m is the running
// max in that unit, l the running sum of 2^(s − m) over this thread's columns (summed over the quad at the end).

template <int D>
__global__ void __launch_bounds__(AttnTiles<D>::THREADS, 1)
    attention_forward_flash_kernel(bf16* __restrict__ out, float* __restrict__ lse, const bf16* __restrict__ q,
                                   const bf16* __restrict__ k, const bf16* __restrict__ v, int Nq, int Nk, int H,
                                   float scale_log2) {
    typedef AttnTiles<D> T;
    constexpr int BQ = T::FWD_BQ, BK = T::FWD_BK, LDS = T::LDS, NT = T::THREADS;
    extern __shared__ __align__(16) unsigned char attn_smem[];
    bf16* sQ = reinterpret_cast<bf16*>(attn_smem); // [BQ][LDS]
    bf16* sK = sQ + BQ * LDS;                      // [2][BK][LDS], double-buffered
    bf16* sV = sK + 2 * BK * LDS;                  // [2][BK][LDS]

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int q0 = blockIdx.x * BQ, h = blockIdx.y, b = blockIdx.z;
    const size_t stride = (size_t)H * D; // elements between consecutive tokens
    const bf16* qh = q + (size_t)b * Nq * stride + (size_t)h * D;
    const bf16* kh = k + (size_t)b * Nk * stride + (size_t)h * D;
    const bf16* vh = v + (size_t)b * Nk * stride + (size_t)h * D;

    load_tile_async<D, BQ, NT>(sQ, qh, stride, q0, Nq);
    load_tile_async<D, BK, NT>(sK, kh, stride, 0, Nk);
    load_tile_async<D, BK, NT>(sV, vh, stride, 0, Nk);
    cp_async_commit();
    cp_async_wait_all();
    __syncthreads();

    uint32_t qf[D / 16][4]; // this warp's 16 query rows as A fragments, one per k16 step of the head dim
#pragma unroll
    for (int kd = 0; kd < D / 16; kd++) load_frag_a(qf[kd], sQ, LDS, warp * 16, kd * 16, lane);

    float o[D / 8][4]; // O accumulator: n8 tile dn covers head-dim columns 8dn..8dn+7
#pragma unroll
    for (int dn = 0; dn < D / 8; dn++) o[dn][0] = o[dn][1] = o[dn][2] = o[dn][3] = 0.f;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};

    const int ntiles = (Nk + BK - 1) / BK;
    for (int kt = 0; kt < ntiles; kt++) {
        const int buf = kt & 1;
        if (kt > 0) { // tile kt has landed, and every warp is done with tile kt-1 (whose buffer is refilled next)
            cp_async_wait_all();
            __syncthreads();
        }
        if (kt + 1 < ntiles) {
            load_tile_async<D, BK, NT>(sK + (buf ^ 1) * BK * LDS, kh, stride, (kt + 1) * BK, Nk);
            load_tile_async<D, BK, NT>(sV + (buf ^ 1) * BK * LDS, vh, stride, (kt + 1) * BK, Nk);
            cp_async_commit();
        }
        const bf16* cK = sK + buf * BK * LDS;
        const bf16* cV = sV + buf * BK * LDS;

        // S = Q·Kᵀ for 16 rows × 64 keys: n8 tile nj covers keys 8nj..8nj+7 of the tile
        float s[BK / 8][4];
#pragma unroll
        for (int nj = 0; nj < BK / 8; nj++) s[nj][0] = s[nj][1] = s[nj][2] = s[nj][3] = 0.f;
#pragma unroll
        for (int kd = 0; kd < D / 16; kd++) {
#pragma unroll
            for (int nj = 0; nj < BK / 8; nj += 2) {
                uint32_t b0[2], b1[2];
                load_frag_b_nk(b0, b1, cK, LDS, nj * 8, kd * 16, lane);
                mma_bf16_16816(s[nj], qf[kd], b0);
                mma_bf16_16816(s[nj + 1], qf[kd], b1);
            }
        }

        // keys past Nk (zero-filled in smem) get probability 0
        const int kbase = kt * BK;
        if (kbase + BK > Nk) {
#pragma unroll
            for (int nj = 0; nj < BK / 8; nj++)
#pragma unroll
                for (int i = 0; i < 4; i++)
                    if (kbase + nj * 8 + 2 * t + (i & 1) >= Nk) s[nj][i] = -INFINITY;
        }

        // online softmax: new running max, rescale of the old sum and accumulator
        float mnew[2] = {m[0], m[1]};
#pragma unroll
        for (int nj = 0; nj < BK / 8; nj++) {
#pragma unroll
            for (int i = 0; i < 4; i++) s[nj][i] *= scale_log2;
            mnew[0] = fmaxf(mnew[0], fmaxf(s[nj][0], s[nj][1]));
            mnew[1] = fmaxf(mnew[1], fmaxf(s[nj][2], s[nj][3]));
        }
        float corr[2], msafe[2], rowsum[2] = {0.f, 0.f};
#pragma unroll
        for (int r = 0; r < 2; r++) { // a row lives in the 4 threads of a quad
            mnew[r] = fmaxf(mnew[r], __shfl_xor_sync(0xffffffffu, mnew[r], 1));
            mnew[r] = fmaxf(mnew[r], __shfl_xor_sync(0xffffffffu, mnew[r], 2));
            msafe[r] = mnew[r] == -INFINITY ? 0.f : mnew[r]; // never -inf - -inf
            corr[r] = exp2f(m[r] - msafe[r]);                // 0 on the first tile (m = -inf)
            m[r] = mnew[r];
        }
#pragma unroll
        for (int nj = 0; nj < BK / 8; nj++) {
            s[nj][0] = exp2f(s[nj][0] - msafe[0]);
            s[nj][1] = exp2f(s[nj][1] - msafe[0]);
            s[nj][2] = exp2f(s[nj][2] - msafe[1]);
            s[nj][3] = exp2f(s[nj][3] - msafe[1]);
            rowsum[0] += s[nj][0] + s[nj][1];
            rowsum[1] += s[nj][2] + s[nj][3];
        }
        l[0] = l[0] * corr[0] + rowsum[0];
        l[1] = l[1] * corr[1] + rowsum[1];
#pragma unroll
        for (int dn = 0; dn < D / 8; dn++) {
            o[dn][0] *= corr[0];
            o[dn][1] *= corr[0];
            o[dn][2] *= corr[1];
            o[dn][3] *= corr[1];
        }

        // O += P·V: P (bf16) straight from the S accumulators; V fragments by ldmatrix.trans
#pragma unroll
        for (int kk = 0; kk < BK / 16; kk++) {
            uint32_t pa[4];
            c_to_a_frag(pa, s[2 * kk], s[2 * kk + 1]);
#pragma unroll
            for (int dn = 0; dn < D / 8; dn += 2) {
                uint32_t b0[2], b1[2];
                load_frag_b_kn(b0, b1, cV, LDS, kk * 16, dn * 8, lane);
                mma_bf16_16816(o[dn], pa, b0);
                mma_bf16_16816(o[dn + 1], pa, b1);
            }
        }
    }

    // epilogue: out = O / l (bf16), lse = ln(2^m · l)
#pragma unroll
    for (int r = 0; r < 2; r++) {
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
    }
    float* lse_h = lse + ((size_t)b * H + h) * Nq;
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int row = q0 + warp * 16 + g + 8 * r;
        if (row < Nq) {
            const float inv = 1.f / l[r];
            bf16* orow = out + ((size_t)b * Nq + row) * stride + (size_t)h * D;
#pragma unroll
            for (int dn = 0; dn < D / 8; dn++)
                *reinterpret_cast<__nv_bfloat162*>(orow + dn * 8 + 2 * t) =
                    __floats2bfloat162_rn(o[dn][2 * r] * inv, o[dn][2 * r + 1] * inv);
            if (t == 0) lse_h[row] = (m[r] + log2f(l[r])) * ATTN_LN2;
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Backward step 1: delta[b, h, i] = Σ_e dout[b, i, h, e] · out[b, i, h, e] (= Σ_j P_ij dP_ij), one warp per row,
// fp32, fixed reduction order.

__global__ void attention_backward_preprocess_kernel(float* __restrict__ delta, const bf16* __restrict__ dout,
                                                     const bf16* __restrict__ out, int B, int Nq, int H, int d) {
    const size_t row = (size_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32; // flat (b, i, h)
    const int lane = threadIdx.x & 31;
    if (row >= (size_t)B * Nq * H) return; // warp-uniform
    const bf16* o = out + row * d;
    const bf16* go = dout + row * d;
    float acc = 0.f;
    for (int e = lane; e < d; e += 32) acc += __bfloat162float(go[e]) * __bfloat162float(o[e]);
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
    if (lane == 0) {
        const int h = (int)(row % H), i = (int)((row / H) % Nq), b = (int)(row / ((size_t)H * Nq));
        delta[((size_t)b * H + h) * Nq + i] = acc;
    }
}

// ---------------------------------------------------------------------------------------------------------
// Backward step 2: dK, dV. Grid (ceil(Nk/128), H, B). Warp w owns key rows k0 + 16w .. +15 and sweeps every query
// tile, working in the transposed orientation so that its keys are the MMA's M dimension:
//   Sᵀ = K·Qᵀ;  Pᵀ = 2^(Sᵀ·scale·log2e − lse·log2e);  dV += Pᵀ·dO;  dPᵀ = V·dOᵀ;  dSᵀ = Pᵀ ⊙ (dPᵀ − δ);  dK += dSᵀ·Q
// A thread's columns are query indices (8nj + 2t + {0,1}), so lse and δ are per column, read from smem.
// Queries past Nq are zero-filled, lse and δ included: their P is 1, but P·dO = 0 and dS = P·(V·0 − 0) = 0 add nothing.

// stages lse (natural log) and δ of query rows [q0, q0 + BQ) into smem, zeros past Nq (async: no warp waits here)
template <int BQ, int THREADS>
__device__ __forceinline__ void load_rowstats_async(float* sL, float* sD, const float* lse_h, const float* delta_h,
                                                    int q0, int Nq) {
    for (int i = threadIdx.x; i < BQ; i += THREADS) {
        const bool valid = q0 + i < Nq;
        cp_async_4(sL + i, lse_h + (valid ? q0 + i : 0), valid);
        cp_async_4(sD + i, delta_h + (valid ? q0 + i : 0), valid);
    }
}

template <int D>
__global__ void __launch_bounds__(AttnTiles<D>::THREADS, 1)
    attention_backward_dkdv_flash_kernel(bf16* __restrict__ dk, bf16* __restrict__ dv, const bf16* __restrict__ dout,
                                         const float* __restrict__ lse, const float* __restrict__ delta,
                                         const bf16* __restrict__ q, const bf16* __restrict__ k,
                                         const bf16* __restrict__ v, int Nq, int Nk, int H, float scale,
                                         float scale_log2) {
    typedef AttnTiles<D> T;
    constexpr int BK = T::DKV_BK, BQ = T::DKV_BQ, LDS = T::LDS, NT = T::THREADS;
    extern __shared__ __align__(16) unsigned char attn_smem[];
    bf16* sK = reinterpret_cast<bf16*>(attn_smem);            // [BK][LDS]
    bf16* sV = sK + BK * LDS;                                 // [BK][LDS]
    bf16* sQ = sV + BK * LDS;                                 // [2][BQ][LDS]
    bf16* sdO = sQ + 2 * BQ * LDS;                            // [2][BQ][LDS]
    float* sL = reinterpret_cast<float*>(sdO + 2 * BQ * LDS); // [2][BQ] lse (0 past Nq)
    float* sD = sL + 2 * BQ;                                  // [2][BQ] delta (0 past Nq)

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int k0 = blockIdx.x * BK, h = blockIdx.y, b = blockIdx.z;
    const size_t stride = (size_t)H * D;
    const bf16* qh = q + (size_t)b * Nq * stride + (size_t)h * D;
    const bf16* doh = dout + (size_t)b * Nq * stride + (size_t)h * D;
    const bf16* kh = k + (size_t)b * Nk * stride + (size_t)h * D;
    const bf16* vh = v + (size_t)b * Nk * stride + (size_t)h * D;
    const float* lse_h = lse + ((size_t)b * H + h) * Nq;
    const float* delta_h = delta + ((size_t)b * H + h) * Nq;

    load_tile_async<D, BK, NT>(sK, kh, stride, k0, Nk);
    load_tile_async<D, BK, NT>(sV, vh, stride, k0, Nk);
    load_tile_async<D, BQ, NT>(sQ, qh, stride, 0, Nq);
    load_tile_async<D, BQ, NT>(sdO, doh, stride, 0, Nq);
    load_rowstats_async<BQ, NT>(sL, sD, lse_h, delta_h, 0, Nq);
    cp_async_commit();

    float dk_acc[D / 8][4], dv_acc[D / 8][4];
#pragma unroll
    for (int dn = 0; dn < D / 8; dn++)
#pragma unroll
        for (int i = 0; i < 4; i++) dk_acc[dn][i] = dv_acc[dn][i] = 0.f;

    const int ntiles = (Nq + BQ - 1) / BQ;
    for (int it = 0; it < ntiles; it++) {
        const int buf = it & 1;
        cp_async_wait_all(); // query tile it has landed, and every warp is done with tile it-1
        __syncthreads();
        if (it + 1 < ntiles) {
            const int nq0 = (it + 1) * BQ;
            load_tile_async<D, BQ, NT>(sQ + (buf ^ 1) * BQ * LDS, qh, stride, nq0, Nq);
            load_tile_async<D, BQ, NT>(sdO + (buf ^ 1) * BQ * LDS, doh, stride, nq0, Nq);
            load_rowstats_async<BQ, NT>(sL + (buf ^ 1) * BQ, sD + (buf ^ 1) * BQ, lse_h, delta_h, nq0, Nq);
            cp_async_commit();
        }
        const bf16* cQ = sQ + buf * BQ * LDS;
        const bf16* cdO = sdO + buf * BQ * LDS;
        const float* cL = sL + buf * BQ;
        const float* cD = sD + buf * BQ;

        // Sᵀ = K·Qᵀ: 16 keys × BQ queries
        float st[BQ / 8][4];
#pragma unroll
        for (int nj = 0; nj < BQ / 8; nj++) st[nj][0] = st[nj][1] = st[nj][2] = st[nj][3] = 0.f;
#pragma unroll
        for (int kd = 0; kd < D / 16; kd++) {
            uint32_t a[4];
            load_frag_a(a, sK, LDS, warp * 16, kd * 16, lane);
#pragma unroll
            for (int nj = 0; nj < BQ / 8; nj += 2) {
                uint32_t b0[2], b1[2];
                load_frag_b_nk(b0, b1, cQ, LDS, nj * 8, kd * 16, lane);
                mma_bf16_16816(st[nj], a, b0);
                mma_bf16_16816(st[nj + 1], a, b1);
            }
        }
        // Pᵀ from the saved logsumexp of each query (column)
#pragma unroll
        for (int nj = 0; nj < BQ / 8; nj++)
#pragma unroll
            for (int i = 0; i < 4; i++)
                st[nj][i] = exp2f(st[nj][i] * scale_log2 - cL[nj * 8 + 2 * t + (i & 1)] * ATTN_LOG2E);

                // dV += Pᵀ·dO   (dO as [k = query][n = e] -> ldmatrix.trans)
#pragma unroll
        for (int kk = 0; kk < BQ / 16; kk++) {
            uint32_t pa[4];
            c_to_a_frag(pa, st[2 * kk], st[2 * kk + 1]);
#pragma unroll
            for (int dn = 0; dn < D / 8; dn += 2) {
                uint32_t b0[2], b1[2];
                load_frag_b_kn(b0, b1, cdO, LDS, kk * 16, dn * 8, lane);
                mma_bf16_16816(dv_acc[dn], pa, b0);
                mma_bf16_16816(dv_acc[dn + 1], pa, b1);
            }
        }

        // dPᵀ = V·dOᵀ   (dO as [n = query][k = e] -> plain ldmatrix)
        float dpt[BQ / 8][4];
#pragma unroll
        for (int nj = 0; nj < BQ / 8; nj++) dpt[nj][0] = dpt[nj][1] = dpt[nj][2] = dpt[nj][3] = 0.f;
#pragma unroll
        for (int kd = 0; kd < D / 16; kd++) {
            uint32_t a[4];
            load_frag_a(a, sV, LDS, warp * 16, kd * 16, lane);
#pragma unroll
            for (int nj = 0; nj < BQ / 8; nj += 2) {
                uint32_t b0[2], b1[2];
                load_frag_b_nk(b0, b1, cdO, LDS, nj * 8, kd * 16, lane);
                mma_bf16_16816(dpt[nj], a, b0);
                mma_bf16_16816(dpt[nj + 1], a, b1);
            }
        }
        // dSᵀ = Pᵀ ⊙ (dPᵀ − δ), in place in dpt (the 1/√d is applied once at the end)
#pragma unroll
        for (int nj = 0; nj < BQ / 8; nj++)
#pragma unroll
            for (int i = 0; i < 4; i++) dpt[nj][i] = st[nj][i] * (dpt[nj][i] - cD[nj * 8 + 2 * t + (i & 1)]);

                // dK += dSᵀ·Q   (Q as [k = query][n = e] -> ldmatrix.trans)
#pragma unroll
        for (int kk = 0; kk < BQ / 16; kk++) {
            uint32_t da[4];
            c_to_a_frag(da, dpt[2 * kk], dpt[2 * kk + 1]);
#pragma unroll
            for (int dn = 0; dn < D / 8; dn += 2) {
                uint32_t b0[2], b1[2];
                load_frag_b_kn(b0, b1, cQ, LDS, kk * 16, dn * 8, lane);
                mma_bf16_16816(dk_acc[dn], da, b0);
                mma_bf16_16816(dk_acc[dn + 1], da, b1);
            }
        }
    }

#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int key = k0 + warp * 16 + g + 8 * r;
        if (key < Nk) {
            const size_t off = ((size_t)b * Nk + key) * stride + (size_t)h * D;
#pragma unroll
            for (int dn = 0; dn < D / 8; dn++) {
                *reinterpret_cast<__nv_bfloat162*>(dk + off + dn * 8 + 2 * t) =
                    __floats2bfloat162_rn(dk_acc[dn][2 * r] * scale, dk_acc[dn][2 * r + 1] * scale);
                *reinterpret_cast<__nv_bfloat162*>(dv + off + dn * 8 + 2 * t) =
                    __floats2bfloat162_rn(dv_acc[dn][2 * r], dv_acc[dn][2 * r + 1]);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Backward step 3: dQ. Grid (ceil(Nq/128), H, B). Warp w owns query rows q0 + 16w .. +15 (Q and dO as A fragments
// in registers, lse and δ of its two rows in registers) and sweeps every key tile:
//   S = Q·Kᵀ;  P = 2^(S·scale·log2e − lse·log2e) (0 past Nk);  dP = dO·Vᵀ;  dS = P ⊙ (dP − δ);  dQ += dS·K

template <int D>
__global__ void __launch_bounds__(AttnTiles<D>::THREADS, 1)
    attention_backward_dq_flash_kernel(bf16* __restrict__ dq, const bf16* __restrict__ dout,
                                       const float* __restrict__ lse, const float* __restrict__ delta,
                                       const bf16* __restrict__ q, const bf16* __restrict__ k,
                                       const bf16* __restrict__ v, int Nq, int Nk, int H, float scale,
                                       float scale_log2) {
    typedef AttnTiles<D> T;
    constexpr int BQ = T::DQ_BQ, BK = T::DQ_BK, LDS = T::LDS, NT = T::THREADS;
    extern __shared__ __align__(16) unsigned char attn_smem[];
    bf16* sQ = reinterpret_cast<bf16*>(attn_smem); // [BQ][LDS]
    bf16* sdO = sQ + BQ * LDS;                     // [BQ][LDS]
    bf16* sK = sdO + BQ * LDS;                     // [2][BK][LDS]
    bf16* sV = sK + 2 * BK * LDS;                  // [2][BK][LDS]

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int q0 = blockIdx.x * BQ, h = blockIdx.y, b = blockIdx.z;
    const size_t stride = (size_t)H * D;
    const bf16* qh = q + (size_t)b * Nq * stride + (size_t)h * D;
    const bf16* doh = dout + (size_t)b * Nq * stride + (size_t)h * D;
    const bf16* kh = k + (size_t)b * Nk * stride + (size_t)h * D;
    const bf16* vh = v + (size_t)b * Nk * stride + (size_t)h * D;
    const float* lse_h = lse + ((size_t)b * H + h) * Nq;
    const float* delta_h = delta + ((size_t)b * H + h) * Nq;

    load_tile_async<D, BQ, NT>(sQ, qh, stride, q0, Nq);
    load_tile_async<D, BQ, NT>(sdO, doh, stride, q0, Nq);
    load_tile_async<D, BK, NT>(sK, kh, stride, 0, Nk);
    load_tile_async<D, BK, NT>(sV, vh, stride, 0, Nk);
    cp_async_commit();
    cp_async_wait_all();
    __syncthreads();

    uint32_t qf[D / 16][4], dof[D / 16][4];
#pragma unroll
    for (int kd = 0; kd < D / 16; kd++) {
        load_frag_a(qf[kd], sQ, LDS, warp * 16, kd * 16, lane);
        load_frag_a(dof[kd], sdO, LDS, warp * 16, kd * 16, lane);
    }
    float lrow[2], drow[2]; // rows past Nq are never stored, any finite value will do
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int row = q0 + warp * 16 + g + 8 * r;
        lrow[r] = row < Nq ? lse_h[row] * ATTN_LOG2E : 0.f;
        drow[r] = row < Nq ? delta_h[row] : 0.f;
    }

    float dq_acc[D / 8][4];
#pragma unroll
    for (int dn = 0; dn < D / 8; dn++) dq_acc[dn][0] = dq_acc[dn][1] = dq_acc[dn][2] = dq_acc[dn][3] = 0.f;

    const int ntiles = (Nk + BK - 1) / BK;
    for (int kt = 0; kt < ntiles; kt++) {
        const int buf = kt & 1;
        if (kt > 0) {
            cp_async_wait_all();
            __syncthreads();
        }
        if (kt + 1 < ntiles) {
            load_tile_async<D, BK, NT>(sK + (buf ^ 1) * BK * LDS, kh, stride, (kt + 1) * BK, Nk);
            load_tile_async<D, BK, NT>(sV + (buf ^ 1) * BK * LDS, vh, stride, (kt + 1) * BK, Nk);
            cp_async_commit();
        }
        const bf16* cK = sK + buf * BK * LDS;
        const bf16* cV = sV + buf * BK * LDS;

        // S = Q·Kᵀ and dP = dO·Vᵀ: 16 rows × BK keys each (K and V as [n = key][k = e] -> plain ldmatrix)
        float s[BK / 8][4], dp[BK / 8][4];
#pragma unroll
        for (int nj = 0; nj < BK / 8; nj++)
#pragma unroll
            for (int i = 0; i < 4; i++) s[nj][i] = dp[nj][i] = 0.f;
#pragma unroll
        for (int kd = 0; kd < D / 16; kd++) {
#pragma unroll
            for (int nj = 0; nj < BK / 8; nj += 2) {
                uint32_t b0[2], b1[2];
                load_frag_b_nk(b0, b1, cK, LDS, nj * 8, kd * 16, lane);
                mma_bf16_16816(s[nj], qf[kd], b0);
                mma_bf16_16816(s[nj + 1], qf[kd], b1);
                load_frag_b_nk(b0, b1, cV, LDS, nj * 8, kd * 16, lane);
                mma_bf16_16816(dp[nj], dof[kd], b0);
                mma_bf16_16816(dp[nj + 1], dof[kd], b1);
            }
        }
        // dS = P ⊙ (dP − δ), with P = 0 for keys past Nk (their K, V rows are zero, their P would not be)
        const int kbase = kt * BK;
#pragma unroll
        for (int nj = 0; nj < BK / 8; nj++)
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const int r = i >> 1;
                float p = exp2f(s[nj][i] * scale_log2 - lrow[r]);
                if (kbase + nj * 8 + 2 * t + (i & 1) >= Nk) p = 0.f;
                s[nj][i] = p * (dp[nj][i] - drow[r]);
            }

            // dQ += dS·K   (K as [k = key][n = e] -> ldmatrix.trans)
#pragma unroll
        for (int kk = 0; kk < BK / 16; kk++) {
            uint32_t da[4];
            c_to_a_frag(da, s[2 * kk], s[2 * kk + 1]);
#pragma unroll
            for (int dn = 0; dn < D / 8; dn += 2) {
                uint32_t b0[2], b1[2];
                load_frag_b_kn(b0, b1, cK, LDS, kk * 16, dn * 8, lane);
                mma_bf16_16816(dq_acc[dn], da, b0);
                mma_bf16_16816(dq_acc[dn + 1], da, b1);
            }
        }
    }

#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int row = q0 + warp * 16 + g + 8 * r;
        if (row < Nq) {
            bf16* dqrow = dq + ((size_t)b * Nq + row) * stride + (size_t)h * D;
#pragma unroll
            for (int dn = 0; dn < D / 8; dn++)
                *reinterpret_cast<__nv_bfloat162*>(dqrow + dn * 8 + 2 * t) =
                    __floats2bfloat162_rn(dq_acc[dn][2 * r] * scale, dq_acc[dn][2 * r + 1] * scale);
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Host launchers of the flash path

// exits with a message unless the flash kernels can take these arguments
static inline void attention_flash_check(const char* fn, int B, int Nq, int Nk, int H, int d, const void* const* ptrs,
                                         int nptrs) {
    if (d != 64 && d != 128) {
        fprintf(stderr,
                "%s: head dim %d is not supported by the flash kernels (64 or 128); use the naive path "
                "(attention_forward_naive / attention_backward_naive) for other head dims\n",
                fn, d);
        exit(1);
    }
    if (B < 1 || Nq < 1 || Nk < 1 || H < 1 || B > 65535 || H > 65535) {
        fprintf(stderr, "%s: sizes B=%d Nq=%d Nk=%d H=%d out of range (each >= 1; B, H <= 65535)\n", fn, B, Nq, Nk, H);
        exit(1);
    }
    for (int i = 0; i < nptrs; i++)
        if ((uintptr_t)ptrs[i] % 16 != 0) {
            fprintf(stderr,
                    "%s: tensor argument %d is not 16-byte aligned (cp.async and the bf16x2 stores need it); "
                    "pass buffers from cudaMalloc or offsets that are multiples of 8 bf16 elements\n",
                    fn, i);
            exit(1);
        }
}

template <int D>
static void attention_forward_flash_launch(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v, int B,
                                           int Nq, int Nk, int H, cudaStream_t stream) {
    typedef AttnTiles<D> T;
    static bool smem_set = false; // once per instantiation: allow more than 48 KB of dynamic shared memory
    if (!smem_set) {
        cudaCheck(cudaFuncSetAttribute(attention_forward_flash_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       (int)T::FWD_SMEM));
        smem_set = true;
    }
    const float scale_log2 = (float)(ATTN_LOG2E / sqrt((double)D));
    dim3 grid((Nq + T::FWD_BQ - 1) / T::FWD_BQ, H, B);
    attention_forward_flash_kernel<D>
        <<<grid, T::THREADS, T::FWD_SMEM, stream>>>(out, lse, q, k, v, Nq, Nk, H, scale_log2);
    cudaCheck(cudaGetLastError());
}

static inline void attention_backward_preprocess(float* delta, const bf16* dout, const bf16* out, int B, int Nq, int H,
                                                 int d, cudaStream_t stream) {
    const size_t rows = (size_t)B * Nq * H;
    const int warps_per_block = 8;
    attention_backward_preprocess_kernel<<<(unsigned)((rows + warps_per_block - 1) / warps_per_block),
                                           32 * warps_per_block, 0, stream>>>(delta, dout, out, B, Nq, H, d);
    cudaCheck(cudaGetLastError());
}

template <int D>
static void attention_backward_dkdv_flash_launch(bf16* dk, bf16* dv, const bf16* dout, const float* lse,
                                                 const float* delta, const bf16* q, const bf16* k, const bf16* v, int B,
                                                 int Nq, int Nk, int H, cudaStream_t stream) {
    typedef AttnTiles<D> T;
    static bool smem_set = false;
    if (!smem_set) {
        cudaCheck(cudaFuncSetAttribute(attention_backward_dkdv_flash_kernel<D>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, (int)T::DKV_SMEM));
        smem_set = true;
    }
    const double scale = 1.0 / sqrt((double)D);
    dim3 grid((Nk + T::DKV_BK - 1) / T::DKV_BK, H, B);
    attention_backward_dkdv_flash_kernel<D><<<grid, T::THREADS, T::DKV_SMEM, stream>>>(
        dk, dv, dout, lse, delta, q, k, v, Nq, Nk, H, (float)scale, (float)(scale * ATTN_LOG2E));
    cudaCheck(cudaGetLastError());
}

template <int D>
static void attention_backward_dq_flash_launch(bf16* dq, const bf16* dout, const float* lse, const float* delta,
                                               const bf16* q, const bf16* k, const bf16* v, int B, int Nq, int Nk,
                                               int H, cudaStream_t stream) {
    typedef AttnTiles<D> T;
    static bool smem_set = false;
    if (!smem_set) {
        cudaCheck(cudaFuncSetAttribute(attention_backward_dq_flash_kernel<D>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, (int)T::DQ_SMEM));
        smem_set = true;
    }
    const double scale = 1.0 / sqrt((double)D);
    dim3 grid((Nq + T::DQ_BQ - 1) / T::DQ_BQ, H, B);
    attention_backward_dq_flash_kernel<D><<<grid, T::THREADS, T::DQ_SMEM, stream>>>(
        dq, dout, lse, delta, q, k, v, Nq, Nk, H, (float)scale, (float)(scale * ATTN_LOG2E));
    cudaCheck(cudaGetLastError());
}

// out [B, Nq, H, d] = softmax(q·kᵀ/√d)·v per head; lse [B, H, Nq] = the rows' logsumexp, saved for the backward.
// Overwrites out and lse.
static inline void attention_forward_flash(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v, int B,
                                           int Nq, int Nk, int H, int d, cudaStream_t stream) {
    const void* ptrs[] = {out, lse, q, k, v};
    attention_flash_check("attention_forward_flash", B, Nq, Nk, H, d, ptrs, 5);
    if (d == 64)
        attention_forward_flash_launch<64>(out, lse, q, k, v, B, Nq, Nk, H, stream);
    else
        attention_forward_flash_launch<128>(out, lse, q, k, v, B, Nq, Nk, H, stream);
}

// inverts out = softmax(q·kᵀ/√d)·v (attention_forward_flash), recomputing P from lse:
// dq [B, Nq, H, d], dk, dv [B, Nk, H, d] are OVERWRITTEN; delta [B, H, Nq] fp32 is scratch (written, then read).
// Deterministic: three launches on `stream`, no atomics.
static inline void attention_backward_flash(bf16* dq, bf16* dk, bf16* dv, float* delta, const bf16* dout,
                                            const bf16* out, const float* lse, const bf16* q, const bf16* k,
                                            const bf16* v, int B, int Nq, int Nk, int H, int d, cudaStream_t stream) {
    const void* ptrs[] = {dq, dk, dv, delta, dout, out, lse, q, k, v};
    attention_flash_check("attention_backward_flash", B, Nq, Nk, H, d, ptrs, 10);
    attention_backward_preprocess(delta, dout, out, B, Nq, H, d, stream);
    if (d == 64) {
        attention_backward_dkdv_flash_launch<64>(dk, dv, dout, lse, delta, q, k, v, B, Nq, Nk, H, stream);
        attention_backward_dq_flash_launch<64>(dq, dout, lse, delta, q, k, v, B, Nq, Nk, H, stream);
    } else {
        attention_backward_dkdv_flash_launch<128>(dk, dv, dout, lse, delta, q, k, v, B, Nq, Nk, H, stream);
        attention_backward_dq_flash_launch<128>(dq, dout, lse, delta, q, k, v, B, Nq, Nk, H, stream);
    }
}

#endif // ATTN_NAIVE

// FLOPs by the FlashAttention convention (see the header comment)
static inline double attention_forward_flops(int B, int Nq, int Nk, int H, int d) {
    return 4.0 * B * (double)Nq * Nk * d * H;
}
static inline double attention_backward_flops(int B, int Nq, int Nk, int H, int d) {
    return 2.5 * attention_forward_flops(B, Nq, Nk, H, d);
}

// ---------------------------------------------------------------------------------------------------------
// Naive version: materialises the scores [B, H, Nq, Nk] in fp32, one thread per output element, fp32 math
// throughout. Any head dim; T = float or bf16 for q, k, v, out and the gradients (floatX: in the all-fp32 build,
// -DENABLE_FP32, this is the only path, since the flash kernels need bf16). Memory B·H·Nq·Nk·4 bytes per score
// buffer, so small shapes only (tests, the tiny and world presets).

// s[b, h, i, j] = scale · a[b, i, h, :] · c[b, j, h, :]   (scores: a = q, c = k; dP: a = dout, c = v, scale 1)
template <typename T>
__global__ void attention_rowdot_naive_kernel(float* s, const T* a, const T* c, int B, int Nq, int Nk, int H, int d,
                                              float scale) {
    const size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)B * H * Nq * Nk) return;
    const int j = (int)(idx % Nk);
    const int i = (int)((idx / Nk) % Nq);
    const int h = (int)((idx / ((size_t)Nk * Nq)) % H);
    const int b = (int)(idx / ((size_t)Nk * Nq * H));
    const T* ai = a + (((size_t)b * Nq + i) * H + h) * d;
    const T* cj = c + (((size_t)b * Nk + j) * H + h) * d;
    float acc = 0.f;
    for (int e = 0; e < d; e++) acc += to_float(ai[e]) * to_float(cj[e]);
    s[idx] = acc * scale;
}

// in place, one warp per row of att [rows, Nk]: scores -> probabilities; lse[row] = log Σ_j exp(score)
__global__ void attention_softmax_naive_kernel(float* att, float* lse, size_t rows, int Nk) {
    const size_t row = (size_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    const int lane = threadIdx.x & 31;
    if (row >= rows) return;
    float* a = att + row * Nk;
    float mx = -INFINITY;
    for (int j = lane; j < Nk; j += 32) mx = fmaxf(mx, a[j]);
    for (int off = 16; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
    float sum = 0.f;
    for (int j = lane; j < Nk; j += 32) sum += expf(a[j] - mx);
    for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
    for (int j = lane; j < Nk; j += 32) a[j] = expf(a[j] - mx) / sum;
    if (lane == 0) lse[row] = mx + logf(sum);
}

// in place, one warp per row: dS = P ⊙ (dP − Σ_j P·dP) · scale   (dS holds dP on entry)
__global__ void attention_softmax_backward_naive_kernel(float* dS, const float* att, size_t rows, int Nk, float scale) {
    const size_t row = (size_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    const int lane = threadIdx.x & 31;
    if (row >= rows) return;
    float* ds = dS + row * Nk;
    const float* p = att + row * Nk;
    float dot = 0.f;
    for (int j = lane; j < Nk; j += 32) dot += p[j] * ds[j];
    for (int off = 16; off > 0; off >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, off);
    for (int j = lane; j < Nk; j += 32) ds[j] = p[j] * (ds[j] - dot) * scale;
}

// out[b, i, h, e] = Σ_j w[b, h, i, j] · c[b, j, h, e]   (out = P·v with w = att; dq = dS·k with w = dS)
template <typename T>
__global__ void attention_weighted_sum_naive_kernel(T* out, const float* w, const T* c, int B, int Nq, int Nk, int H,
                                                    int d) {
    const size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x; // flat over [B, Nq, H, d]
    if (idx >= (size_t)B * Nq * H * d) return;
    const int e = (int)(idx % d);
    const int h = (int)((idx / d) % H);
    const int i = (int)((idx / ((size_t)d * H)) % Nq);
    const int b = (int)(idx / ((size_t)d * H * Nq));
    const float* wi = w + (((size_t)b * H + h) * Nq + i) * Nk;
    const T* cb = c + (size_t)b * Nk * H * d + (size_t)h * d + e;
    float acc = 0.f;
    for (int j = 0; j < Nk; j++) acc += wi[j] * to_float(cb[(size_t)j * H * d]);
    out[idx] = from_float<T>(acc);
}

// dk[b, j, h, e] = Σ_i dS[b, h, i, j] · q[b, i, h, e] ; dv[b, j, h, e] = Σ_i P[b, h, i, j] · dout[b, i, h, e]
template <typename T>
__global__ void attention_dkdv_naive_kernel(T* dk, T* dv, const float* dS, const float* att, const T* q, const T* dout,
                                            int B, int Nq, int Nk, int H, int d) {
    const size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x; // flat over [B, Nk, H, d]
    if (idx >= (size_t)B * Nk * H * d) return;
    const int e = (int)(idx % d);
    const int h = (int)((idx / d) % H);
    const int j = (int)((idx / ((size_t)d * H)) % Nk);
    const int b = (int)(idx / ((size_t)d * H * Nk));
    const size_t w0 = ((size_t)b * H + h) * Nq * Nk + j;          // [b, h, i, j] at w0 + i·Nk
    const size_t x0 = (size_t)b * Nq * H * d + (size_t)h * d + e; // [b, i, h, e] at x0 + i·H·d
    float acc_k = 0.f, acc_v = 0.f;
    for (int i = 0; i < Nq; i++) {
        acc_k += dS[w0 + (size_t)i * Nk] * to_float(q[x0 + (size_t)i * H * d]);
        acc_v += att[w0 + (size_t)i * Nk] * to_float(dout[x0 + (size_t)i * H * d]);
    }
    dk[idx] = from_float<T>(acc_k);
    dv[idx] = from_float<T>(acc_v);
}

static inline unsigned attn_blocks(size_t n, int per_block) { return (unsigned)((n + per_block - 1) / per_block); }

// out [B, Nq, H, d], lse [B, H, Nq], att [B, H, Nq, Nk] fp32 = the probabilities P (kept for the backward).
// Overwrites out, lse, att.
template <typename T>
static void attention_forward_naive(T* out, float* lse, float* att, const T* q, const T* k, const T* v, int B, int Nq,
                                    int Nk, int H, int d, cudaStream_t stream) {
    const size_t scores = (size_t)B * H * Nq * Nk, rows = (size_t)B * H * Nq;
    attention_rowdot_naive_kernel<T>
        <<<attn_blocks(scores, 256), 256, 0, stream>>>(att, q, k, B, Nq, Nk, H, d, (float)(1.0 / sqrt((double)d)));
    cudaCheck(cudaGetLastError());
    attention_softmax_naive_kernel<<<attn_blocks(rows, 8), 256, 0, stream>>>(att, lse, rows, Nk);
    cudaCheck(cudaGetLastError());
    attention_weighted_sum_naive_kernel<T>
        <<<attn_blocks((size_t)B * Nq * H * d, 256), 256, 0, stream>>>(out, att, v, B, Nq, Nk, H, d);
    cudaCheck(cudaGetLastError());
}

// inverts attention_forward_naive from its saved probabilities att. dq, dk, dv are OVERWRITTEN;
// dS [B, H, Nq, Nk] fp32 is scratch.
template <typename T>
static void attention_backward_naive(T* dq, T* dk, T* dv, float* dS, const T* dout, const float* att, const T* q,
                                     const T* k, const T* v, int B, int Nq, int Nk, int H, int d, cudaStream_t stream) {
    const size_t scores = (size_t)B * H * Nq * Nk, rows = (size_t)B * H * Nq;
    attention_rowdot_naive_kernel<T>
        <<<attn_blocks(scores, 256), 256, 0, stream>>>(dS, dout, v, B, Nq, Nk, H, d, 1.f); // dP
    cudaCheck(cudaGetLastError());
    attention_softmax_backward_naive_kernel<<<attn_blocks(rows, 8), 256, 0, stream>>>(dS, att, rows, Nk,
                                                                                      (float)(1.0 / sqrt((double)d)));
    cudaCheck(cudaGetLastError());
    attention_weighted_sum_naive_kernel<T>
        <<<attn_blocks((size_t)B * Nq * H * d, 256), 256, 0, stream>>>(dq, dS, k, B, Nq, Nk, H, d);
    cudaCheck(cudaGetLastError());
    attention_dkdv_naive_kernel<T>
        <<<attn_blocks((size_t)B * Nk * H * d, 256), 256, 0, stream>>>(dk, dv, dS, att, q, dout, B, Nq, Nk, H, d);
    cudaCheck(cudaGetLastError());
}
