// kernels/patchify.cuh: latent <-> token layouts around the patch embedding and the head
// (official model.py patch_embedding / unpatchify; cpu/layers.h patchify_*, unpatchify_*)
//
// A latent x [B, C, T, Hl, Wl] fp32 is cut into (pt, ph, pw) patches on the grid (Fp, Hp, Wp) = (T/pt, Hl/ph, Wl/pw);
// token n = (f·Hp + i)·Wp + j, L = Fp·Hp·Wp tokens per sample, P = C·pt·ph·pw values per token.
//
//   patchify    p [B·L, P] (Tp)   p[n][((c·pt + a)·ph + dh)·pw + dw] = x[c, f·pt + a, i·ph + dh, j·pw + dw]
//               channel SLOWEST, matching the Conv3d weight [D, C, pt, ph, pw] flattened for the GEMM.
//   unpatchify  out [B, C, T, Hl, Wl] fp32 from y [B·L, P] (Ty)
//               out[c, f·pt + a, i·ph + dh, j·pw + dw] = y[n][((a·ph + dh)·pw + dw)·C + c]
//               channel FASTEST (the official einsum 'fhwpqrc->cfphqwr'): the opposite of patchify.
//
// Tp = floatX (the patch-embedding GEMM runs in bf16); Ty = float (the head runs in fp32) or floatX.
// Overwritten: p, out (forward); dy (unpatchify backward: it feeds the head GEMM backward).
// Accumulated (+=): dx (patchify backward: the latent's fp32 gradient, e.g. a generated sample fed to the teacher).
// Latent positions past the last whole patch (T, Hl, Wl not divisible) belong to no token: unpatchify writes 0
// there and patchify_backward adds nothing.
// Version 1 (the simple one), checked and timed by dev/cuda/patchify.cu; not yet run on a GPU (dev/cuda/README.md).
#pragma once
#include "common.cuh"
#include "precision.cuh"

typedef struct {
    int B, C, T, Hl, Wl, pt, ph, pw, Fp, Hp, Wp, L, P;
} PatchGrid;

static inline PatchGrid patch_grid(int B, int C, int T, int Hl, int Wl, int pt, int ph, int pw) {
    PatchGrid g = {B, C, T, Hl, Wl, pt, ph, pw, T / pt, Hl / ph, Wl / pw, 0, C * pt * ph * pw};
    g.L = g.Fp * g.Hp * g.Wp;
    return g;
}

// token-side index (b, n, k) -> latent-side flat index; k in the channel-slowest order when c_fastest == 0
__host__ __device__ inline size_t patch_to_latent(const PatchGrid& g, int b, int n, int k, int c_fastest) {
    int j = n % g.Wp, i = (n / g.Wp) % g.Hp, f = n / (g.Wp * g.Hp);
    int c, a, dh, dw;
    if (c_fastest) {
        c = k % g.C;
        int s = k / g.C;
        dw = s % g.pw;
        dh = (s / g.pw) % g.ph;
        a = s / (g.pw * g.ph);
    } else {
        dw = k % g.pw;
        dh = (k / g.pw) % g.ph;
        a = (k / (g.pw * g.ph)) % g.pt;
        c = k / (g.pw * g.ph * g.pt);
    }
    return ((((size_t)b * g.C + c) * g.T + f * g.pt + a) * g.Hl + i * g.ph + dh) * g.Wl + j * g.pw + dw;
}

// latent-side flat index -> token-side flat index (b·L + n)·P + k, or -1 when the position is in no patch
__host__ __device__ inline long long latent_to_patch(const PatchGrid& g, size_t idx, int c_fastest) {
    int w = (int)(idx % g.Wl), h = (int)((idx / g.Wl) % g.Hl), t = (int)((idx / ((size_t)g.Wl * g.Hl)) % g.T);
    size_t bc = idx / ((size_t)g.Wl * g.Hl * g.T);
    int c = (int)(bc % g.C), b = (int)(bc / g.C);
    int f = t / g.pt, a = t % g.pt, i = h / g.ph, dh = h % g.ph, j = w / g.pw, dw = w % g.pw;
    if (f >= g.Fp || i >= g.Hp || j >= g.Wp) return -1;
    int n = (f * g.Hp + i) * g.Wp + j;
    int k = c_fastest ? ((a * g.ph + dh) * g.pw + dw) * g.C + c : ((c * g.pt + a) * g.ph + dh) * g.pw + dw;
    return (long long)(((size_t)b * g.L + n) * g.P + k);
}

// one thread per token-side element (coalesced writes of p)
template <typename Tp> __global__ void patchify_forward_kernel(Tp* p, const float* x, PatchGrid g) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)g.B * g.L * g.P) return;
    int k = (int)(idx % g.P);
    size_t bn = idx / g.P;
    p[idx] = from_float<Tp>(x[patch_to_latent(g, (int)(bn / g.L), (int)(bn % g.L), k, 0)]);
}

// inverts the gather p = x[...]: dx += scatter(dp). One thread per latent element (coalesced read-modify-write of dx)
template <typename Tp> __global__ void patchify_backward_kernel(float* dx, const Tp* dp, PatchGrid g) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)g.B * g.C * g.T * g.Hl * g.Wl) return;
    long long src = latent_to_patch(g, idx, 0);
    if (src >= 0) dx[idx] += to_float(dp[src]);
}

// one thread per latent element (coalesced writes of out)
template <typename Ty> __global__ void unpatchify_forward_kernel(float* out, const Ty* y, PatchGrid g) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)g.B * g.C * g.T * g.Hl * g.Wl) return;
    long long src = latent_to_patch(g, idx, 1);
    out[idx] = src >= 0 ? to_float(y[src]) : 0.f;
}

// inverts the scatter out[...] = y: dy = gather(dout). One thread per token-side element
template <typename Ty> __global__ void unpatchify_backward_kernel(Ty* dy, const float* dout, PatchGrid g) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)g.B * g.L * g.P) return;
    int k = (int)(idx % g.P);
    size_t bn = idx / g.P;
    dy[idx] = from_float<Ty>(dout[patch_to_latent(g, (int)(bn / g.L), (int)(bn % g.L), k, 1)]);
}

static inline unsigned patch_blocks(size_t n) { return (unsigned)((n + 255) / 256); }

// p [B·L, P] = patchify(x [B, C, T, Hl, Wl])
template <typename Tp> static void patchify_forward(Tp* p, const float* x, PatchGrid g, cudaStream_t stream) {
    patchify_forward_kernel<Tp><<<patch_blocks((size_t)g.B * g.L * g.P), 256, 0, stream>>>(p, x, g);
    cudaCheck(cudaGetLastError());
}
// dx [B, C, T, Hl, Wl] += scatter(dp)
template <typename Tp> static void patchify_backward(float* dx, const Tp* dp, PatchGrid g, cudaStream_t stream) {
    patchify_backward_kernel<Tp><<<patch_blocks((size_t)g.B * g.C * g.T * g.Hl * g.Wl), 256, 0, stream>>>(dx, dp, g);
    cudaCheck(cudaGetLastError());
}
// out [B, C, T, Hl, Wl] = unpatchify(y [B·L, P])
template <typename Ty> static void unpatchify_forward(float* out, const Ty* y, PatchGrid g, cudaStream_t stream) {
    unpatchify_forward_kernel<Ty><<<patch_blocks((size_t)g.B * g.C * g.T * g.Hl * g.Wl), 256, 0, stream>>>(out, y, g);
    cudaCheck(cudaGetLastError());
}
// dy [B·L, P] = gather(dout)
template <typename Ty> static void unpatchify_backward(Ty* dy, const float* dout, PatchGrid g, cudaStream_t stream) {
    unpatchify_backward_kernel<Ty><<<patch_blocks((size_t)g.B * g.L * g.P), 256, 0, stream>>>(dy, dout, g);
    cudaCheck(cudaGetLastError());
}
