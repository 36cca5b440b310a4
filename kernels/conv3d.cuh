// kernels/conv3d.cuh: the Wan2.1 VAE decoder's convolution forward (causal Conv3d, and the Conv2d / 1x1x1 cases as
// KT = 1 or KH = KW = 1), fp32 in and out, fp32 accumulation. Version 1 of dev/cuda/conv3d.cu (the only one so far).
//
// What it computes (cpu/vae_cpu.h vae_conv_frame is the twin; the facts are diffusers' WanCausalConv3d and
// WanResample): for every output channel o, frame t, pixel (y, x)
//   out[o][t][y][x] = b[o] + sum_{i, kt, kh, kw} w[o][i][kt][kh][kw] * in(i, t + kt - (KT-1), y + kh - KH/2, x + kw -
//   KW/2)
// where frame index f < 0 reads the feature cache (its last -f-th frame) or, beyond the cache, the causal zero padding,
// and pixels outside the frame are zero (the symmetric spatial padding). With up2 the input planes are H/2 x W/2
// and are read nearest-neighbour up-sampled by 2 (WanUpsample + Conv2d 3x3 of upsample2d/3d, fused: the 4x larger
// up-sampled tensor is never written). Layouts: x [Cin][T][H][W], cache [Cin][nc][H][W], w [Cout][Cin][KT][KH][KW]
// (PyTorch's), out [Cout][T][H][W]. With down2 (the encoder's spatial down-sampling) the input planes are 2H x 2W and
// out(y, x) reads in(2y + kh, 2x + kw), zero past the right and bottom edge.
//
// Why an implicit GEMM and not im2col + cuBLAS: as a GEMM, M = Cout, N = T*H*W, K = Cin*KT*KH*KW. At the decoder's
// full-resolution stage (96 channels, 4 frames of 480x832) the im2col matrix is K x N = 2592 x 1.6M, 16.6 GB in fp32
// -- larger than the activations it is made from by 27x, and written and read once each per conv. The implicit GEMM
// gathers the same K x N tile straight from the input into shared memory (the causal time padding, the cache and the
// up-sampling are index arithmetic in that gather), so memory stays at the activations and the FLOPs are the same.
// This first version uses CUDA cores (64x64 output tile, 16-deep K steps, 4x4 outputs per thread); a tensor-core
// (bf16/tf32 mma) version is the next step if the VAE ever matters next to the DiT's 50 steps.
#pragma once
#include "common.cuh"

#define CONV3D_BM 64 // output channels per block
#define CONV3D_BN 64 // output pixels (t, y, x flattened) per block
#define CONV3D_BK 16 // reduction (ic, kt, kh, kw) per shared-memory step

struct Conv3dShape {
    int Cin, Cout, T, H, W; // output frames T and output size H x W (= the input's, or twice it with up2)
    int KT, KH, KW;         // kernel; time padding KT-1 in front only, space (KH-1)/2 and (KW-1)/2 both sides
    int nc;                 // cache frames before x (0 .. KT-1)
    int up2;                // input planes are (H/2) x (W/2), read up-sampled by 2
    int down2;              // spatial stride 2 over input planes of 2H x 2W, zero padding right and bottom only (the
                            // encoder's downsample2d/3d: F.pad (0, 1, 0, 1) then Conv2d 3x3 stride 2; even sizes)
};

// the input value at reduction index k for output pixel (t, y, x): zero outside the frame or before the cache
__device__ __forceinline__ float conv3d_gather(const float* __restrict__ x, const float* __restrict__ cache,
                                               const Conv3dShape& s, int k, int t, int y, int xx) {
    int kw = k % s.KW, r = k / s.KW;
    int kh = r % s.KH;
    r /= s.KH;
    int kt = r % s.KT;
    int ic = r / s.KT;
    int f = t + kt - (s.KT - 1);
    int yi, xi, Hi, Wi;
    if (s.down2) {
        yi = 2 * y + kh;
        xi = 2 * xx + kw;
        Hi = 2 * s.H;
        Wi = 2 * s.W;
        if (yi >= Hi || xi >= Wi) return 0.f; // the (0, 1, 0, 1) pad
    } else {
        yi = y + kh - (s.KH - 1) / 2;
        xi = xx + kw - (s.KW - 1) / 2;
        if (yi < 0 || yi >= s.H || xi < 0 || xi >= s.W) return 0.f;
        Hi = s.up2 ? s.H / 2 : s.H;
        Wi = s.up2 ? s.W / 2 : s.W;
        if (s.up2) {
            yi >>= 1;
            xi >>= 1;
        }
    }
    if (f >= 0) return x[(((size_t)ic * s.T + f) * Hi + yi) * Wi + xi];
    int c = s.nc + f; // f = -1 is the cache's last frame
    if (c < 0) return 0.f;
    return cache[(((size_t)ic * s.nc + c) * Hi + yi) * Wi + xi];
}

__global__ void __launch_bounds__(256)
    conv3d_forward_kernel(float* __restrict__ out, const float* __restrict__ x, const float* __restrict__ cache,
                          const float* __restrict__ w, const float* __restrict__ b, Conv3dShape s) {
    __shared__ float As[CONV3D_BK][CONV3D_BM + 4]; // weights: k x output channel (+4: no bank conflicts on the store)
    __shared__ float Bs[CONV3D_BK][CONV3D_BN];     // gathered inputs: k x output pixel
    const int K = s.Cin * s.KT * s.KH * s.KW;
    const long N = (long)s.T * s.H * s.W;
    const int m0 = blockIdx.y * CONV3D_BM;
    const long n0 = (long)blockIdx.x * CONV3D_BN;
    const int tid = threadIdx.x, tm = tid / 16, tn = tid % 16; // thread (tm, tn) owns rows tm*4.., cols tn*4..
    // the 4 output pixels this thread gathers for the B tile: column tid % 64, rows (tid / 64) * 4 .. + 3
    const int bcol = tid % CONV3D_BN, brow = (tid / CONV3D_BN) * 4;
    const long n = n0 + bcol;
    int pt = 0, py = 0, px = 0;
    if (n < N) {
        px = (int)(n % s.W);
        long q = n / s.W;
        py = (int)(q % s.H);
        pt = (int)(q / s.H);
    }
    float acc[4][4] = {};
    for (int k0 = 0; k0 < K; k0 += CONV3D_BK) {
        // A tile: 64 x 16 weights, 4 per thread (w rows are K long and contiguous)
        for (int i = 0; i < 4; i++) {
            int e = tid + i * 256, mm = e / CONV3D_BK, kk = e % CONV3D_BK;
            int m = m0 + mm, k = k0 + kk;
            As[kk][mm] = (m < s.Cout && k < K) ? w[(size_t)m * K + k] : 0.f;
        }
        for (int i = 0; i < 4; i++) {
            int k = k0 + brow + i;
            Bs[brow + i][bcol] = (n < N && k < K) ? conv3d_gather(x, cache, s, k, pt, py, px) : 0.f;
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < CONV3D_BK; kk++) {
            float a[4], bb[4];
            for (int i = 0; i < 4; i++) a[i] = As[kk][tm * 4 + i];
            for (int j = 0; j < 4; j++) bb[j] = Bs[kk][tn * 4 + j];
            for (int i = 0; i < 4; i++)
                for (int j = 0; j < 4; j++) acc[i][j] = fmaf(a[i], bb[j], acc[i][j]);
        }
        __syncthreads();
    }
    for (int i = 0; i < 4; i++) {
        int m = m0 + tm * 4 + i;
        if (m >= s.Cout) continue;
        float bias = b ? b[m] : 0.f;
        for (int j = 0; j < 4; j++) {
            long nn = n0 + tn * 4 + j;
            if (nn < N) out[(size_t)m * N + nn] = acc[i][j] + bias;
        }
    }
}

// out [Cout][T][H][W] = conv(x [Cin][T][H'][W'], cache [Cin][nc][H'][W']) with (H', W') = (H, W), or (H/2, W/2) with
// up2, or (2H, 2W) with down2. cache may be NULL when nc == 0; b may be NULL. Overwrites out.
static void conv3d_forward(float* out, const float* x, const float* cache, const float* w, const float* b,
                           Conv3dShape s, cudaStream_t stream) {
    if (s.nc > s.KT - 1 || (s.nc > 0 && !cache) || (s.up2 && (s.H % 2 || s.W % 2)) ||
        (s.down2 && (s.up2 || s.KH != 3 || s.KW != 3))) {
        fprintf(
            stderr,
            "conv3d_forward: bad shape (nc %d with KT %d, cache %p, up2 %d with %dx%d, down2 %d with kernel %dx%d)\n",
            s.nc, s.KT, (const void*)cache, s.up2, s.H, s.W, s.down2, s.KH, s.KW);
        exit(1);
    }
    long N = (long)s.T * s.H * s.W;
    dim3 grid((unsigned)((N + CONV3D_BN - 1) / CONV3D_BN), (unsigned)((s.Cout + CONV3D_BM - 1) / CONV3D_BM));
    conv3d_forward_kernel<<<grid, 256, 0, stream>>>(out, x, cache, w, b, s);
    cudaCheck(cudaGetLastError());
}
