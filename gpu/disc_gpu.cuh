// gpu/disc_gpu.cuh: the DMD2-v discriminator heads on the GPU (paper App. A.3; cpu/disc_cpu.h says which heads and
// from where). Mirrors cpu/disc_cpu.h name for name (disc_gpu_carve ↔ disc_carve, disc_gpu_forward ↔ disc_forward,
// ...), which is its oracle (test_gpu: gpu/tmd_gpu_tests.cuh, the head alone and inside the Stage 2 steps).
//
// The multiscale head (the default at Wan scale): channels-last maps [S, C] (S = T·H·W voxels) so that every
// convolution is a GEMM through the project's Linear path (kernels/gemm.cuh cuBLASLt, or kernels/gemm_tiled.cuh for
// GEMM=own) on floatX operands with fp32 accumulation: tensor cores in the bf16 build, exact fp32 in the fp32 build.
//   1x1x1: all five branches in one GEMM, z1 [S, 5C] = x0 [S, C] · W1ᵀ (W1 the branches' weights stacked [5C, C]);
//   3x3x3, padding 1: im2col in slices of DISC_COL_ROWS output voxels (bounded scratch [R, 27·C], tap-major columns
//     col[r, tap·C + c] = x[voxel r shifted by tap, c]) times the weight reordered tap-major [C, 27·C];
//   its input gradient: the same im2col of d out times the weight transposed and flipped (a 3x3x3 convolution with
//     padding 1 is inverted by the flipped one), no scatter;
//   weight gradients: d outᵀ · col slice by slice (matmul_backward's dweight, fp32, +=, in a fixed order).
// GroupNorm statistics, the global means and the GroupNorm gradient sums are per-channel sums over row chunks of
// DISC_ROWS_PER_CHUNK, added in a fixed order in double: deterministic, no atomics. Bias, GroupNorm and LeakyReLU
// run in fp32 on the GEMM outputs. Memory: the forward keeps only per-sample vectors; the backward recomputes one
// head's maps of one sample at a time (gpu/disc_plan.h lists every buffer; the real side borrows the fake side's
// scratch). Parameter gradients (dP non-NULL: the critic step) and the feature gradient (dfeat non-NULL: the student
// step) are each computed only when asked for.
// Dropout: train mode when DiscGpuAct.dropout_key[b] is non-zero (cpu/disc_cpu.h disc_dropout_factor, the same bits).
//
// The strided head (--disc-head strided): direct fp32 convolutions, one thread per output element (forward, input
// gradient and weight gradient each a gather, so no atomics), one block per GroupNorm group with a fixed-order tree
// reduction; deterministic, not fast. Samples run one after another; parameter gradients accumulate (+=).
// Every forward overwrites its outputs; every backward accumulates (+=) into parameter and feature gradients.
#pragma once
#include "wan_gpu.cuh"
#include "../cpu/disc_cpu.h"
#include "disc_plan.h" // the heads' buffers: the carve below and the memory plan read them

// DiscParams' fp32 twin over device memory, carved in disc_carve's order
typedef struct {
    float *conv_w[DISC_MAX_HEADS][DISC_MAX_CONVS], *conv_b[DISC_MAX_HEADS][DISC_MAX_CONVS];
    float *norm_w[DISC_MAX_HEADS][DISC_MAX_CONVS], *norm_b[DISC_MAX_HEADS][DISC_MAX_CONVS];
    float *mlp_0_w[DISC_MAX_HEADS], *mlp_0_b[DISC_MAX_HEADS], *mlp_2_w[DISC_MAX_HEADS], *mlp_2_b[DISC_MAX_HEADS];
} DiscParamsF;

static size_t disc_gpu_carve(const DiscConfig* dc, DiscParamsF* p, float* base) {
    size_t off = 0;
#define DISC_GPU_TAKE_(field, n)                                                                                       \
    do {                                                                                                               \
        p->field = base + off;                                                                                         \
        off += (size_t)(n);                                                                                            \
    } while (0)
    for (int h = 0; h < dc->n_heads; h++) {
        for (int k = 0; k < disc_n_convs(dc); k++) {
            int oc = disc_conv_out(dc, k);
            DISC_GPU_TAKE_(conv_w[h][k], disc_conv_numel(dc, k));
            DISC_GPU_TAKE_(conv_b[h][k], oc);
            DISC_GPU_TAKE_(norm_w[h][k], oc);
            DISC_GPU_TAKE_(norm_b[h][k], oc);
        }
        DISC_GPU_TAKE_(mlp_0_w[h], (size_t)dc->hidden * disc_feat_dim(dc));
        DISC_GPU_TAKE_(mlp_0_b[h], dc->hidden);
        DISC_GPU_TAKE_(mlp_2_w[h], dc->hidden);
        DISC_GPU_TAKE_(mlp_2_b[h], 1);
    }
#undef DISC_GPU_TAKE_
    return off;
}

// the heads' parameters and their gradients (fp32, one allocation each). No optimizer state yet.
typedef struct {
    DiscConfig dc;
    size_t n;
    float *params, *grads;
    DiscParamsF P, dP;
} DiscGpuModel;

// host_params [disc_num_params] fp32 in disc_carve's order (NULL: zeros)
static void disc_gpu_model_init(DiscGpuModel* m, const DiscConfig* dc, const float* host_params) {
    memset(m, 0, sizeof(*m));
    m->dc = *dc;
    m->n = disc_num_params(dc);
    m->params =
        (float*)cuda_malloc_named(sizeof(float) * (m->n ? m->n : 1), "discriminator parameters", WAN_GPU_OOM_HINT);
    m->grads =
        (float*)cuda_malloc_named(sizeof(float) * (m->n ? m->n : 1), "discriminator gradients", WAN_GPU_OOM_HINT);
    if (host_params)
        cudaCheck(cudaMemcpy(m->params, host_params, sizeof(float) * m->n, cudaMemcpyHostToDevice));
    else
        cudaCheck(cudaMemset(m->params, 0, sizeof(float) * m->n));
    cudaCheck(cudaMemset(m->grads, 0, sizeof(float) * m->n));
    disc_gpu_carve(dc, &m->P, m->params);
    disc_gpu_carve(dc, &m->dP, m->grads);
    printf("discriminator: %s, %d heads on teacher blocks", disc_kind_name(dc), dc->n_heads);
    for (int h = 0; h < dc->n_heads; h++) printf(" %d", dc->layers[h]);
    if (dc->kind == DISC_MULTISCALE) {
        printf(", C0 %d, scales", dc->in_ch);
        for (int i = 0; i < dc->n_scales; i++) printf(" %d", dc->scales[i]);
    }
    printf(", hidden %d: %zu parameters (%.2fM), %.1f MiB (fp32 weights and gradients)\n", dc->hidden, m->n, m->n / 1e6,
           2.0 * sizeof(float) * m->n / (1 << 20));
}
static void disc_gpu_model_free(DiscGpuModel* m) {
    cudaCheck(cudaFree(m->params));
    cudaCheck(cudaFree(m->grads));
}

// ---------------------------------------------------------------------------------------------------------
// layers (channels-first [C, T, H, W], one sample)

typedef struct {
    int IC, T, H, W, OC, OT, OH, OW, k0, k1, k2, s0, s1, s2;
} DiscConvGeom;
static DiscConvGeom disc_conv_geom_(Shape4 in, Shape4 o, int k) { // strided conv k
    DiscConvGeom g = {in.C,
                      in.T,
                      in.H,
                      in.W,
                      o.C,
                      o.T,
                      o.H,
                      o.W,
                      DISC_KERNEL[k][0],
                      DISC_KERNEL[k][1],
                      DISC_KERNEL[k][2],
                      DISC_STRIDE[k][0],
                      DISC_STRIDE[k][1],
                      DISC_STRIDE[k][2]};
    return g;
}
static unsigned disc_blocks_(size_t n) { return (unsigned)((n + 255) / 256); }

// conv3ds_forward: one thread per output element
__global__ void disc_conv_forward_kernel(float* out, const float* inp, const float* w, const float* b, DiscConvGeom g) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)g.OC * g.OT * g.OH * g.OW) return;
    int j = (int)(idx % g.OW), i = (int)((idx / g.OW) % g.OH), t = (int)((idx / ((size_t)g.OW * g.OH)) % g.OT);
    int o = (int)(idx / ((size_t)g.OW * g.OH * g.OT));
    float s = b[o];
    for (int c = 0; c < g.IC; c++)
        for (int a = 0; a < g.k0; a++) {
            int ti = t * g.s0 - DISC_PAD + a;
            if (ti < 0 || ti >= g.T) continue;
            for (int bb = 0; bb < g.k1; bb++) {
                int hi = i * g.s1 - DISC_PAD + bb;
                if (hi < 0 || hi >= g.H) continue;
                const float* wr = w + ((((size_t)o * g.IC + c) * g.k0 + a) * g.k1 + bb) * g.k2;
                const float* xr = inp + (((size_t)c * g.T + ti) * g.H + hi) * g.W;
                for (int e = 0; e < g.k2; e++) {
                    int wi = j * g.s2 - DISC_PAD + e;
                    if (wi >= 0 && wi < g.W) s += wr[e] * xr[wi];
                }
            }
        }
    out[idx] = s;
}
// conv3ds_backward's input gradient as a gather: one thread per input element (OVERWRITES dinp)
__global__ void disc_conv_backward_input_kernel(float* dinp, const float* dout, const float* w, DiscConvGeom g) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)g.IC * g.T * g.H * g.W) return;
    int wi = (int)(idx % g.W), hi = (int)((idx / g.W) % g.H), ti = (int)((idx / ((size_t)g.W * g.H)) % g.T);
    int c = (int)(idx / ((size_t)g.W * g.H * g.T));
    float s = 0;
    for (int o = 0; o < g.OC; o++)
        for (int a = 0; a < g.k0; a++) {
            int tt = ti + DISC_PAD - a;
            if (tt < 0 || tt % g.s0 || tt / g.s0 >= g.OT) continue;
            for (int bb = 0; bb < g.k1; bb++) {
                int hh = hi + DISC_PAD - bb;
                if (hh < 0 || hh % g.s1 || hh / g.s1 >= g.OH) continue;
                for (int e = 0; e < g.k2; e++) {
                    int ww = wi + DISC_PAD - e;
                    if (ww < 0 || ww % g.s2 || ww / g.s2 >= g.OW) continue;
                    s += dout[(((size_t)o * g.OT + tt / g.s0) * g.OH + hh / g.s1) * g.OW + ww / g.s2] *
                         w[((((size_t)o * g.IC + c) * g.k0 + a) * g.k1 + bb) * g.k2 + e];
                }
            }
        }
    dinp[idx] = s;
}
// conv3ds_backward's weight and bias gradients: one thread per weight, then one per bias (+=)
__global__ void disc_conv_backward_params_kernel(float* dw, float* db, const float* dout, const float* inp,
                                                 DiscConvGeom g) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    size_t nw = (size_t)g.OC * g.IC * g.k0 * g.k1 * g.k2;
    if (idx >= nw + g.OC) return;
    if (idx >= nw) {
        int o = (int)(idx - nw);
        size_t S = (size_t)g.OT * g.OH * g.OW;
        float s = 0;
        for (size_t q = 0; q < S; q++) s += dout[(size_t)o * S + q];
        db[o] += s;
        return;
    }
    int e = (int)(idx % g.k2), bb = (int)((idx / g.k2) % g.k1), a = (int)((idx / ((size_t)g.k2 * g.k1)) % g.k0);
    size_t oc = idx / ((size_t)g.k2 * g.k1 * g.k0);
    int c = (int)(oc % g.IC), o = (int)(oc / g.IC);
    float s = 0;
    for (int t = 0; t < g.OT; t++) {
        int ti = t * g.s0 - DISC_PAD + a;
        if (ti < 0 || ti >= g.T) continue;
        for (int i = 0; i < g.OH; i++) {
            int hi = i * g.s1 - DISC_PAD + bb;
            if (hi < 0 || hi >= g.H) continue;
            for (int j = 0; j < g.OW; j++) {
                int wi = j * g.s2 - DISC_PAD + e;
                if (wi < 0 || wi >= g.W) continue;
                s += dout[(((size_t)o * g.OT + t) * g.OH + i) * g.OW + j] *
                     inp[(((size_t)c * g.T + ti) * g.H + hi) * g.W + wi];
            }
        }
    }
    dw[idx] += s;
}

// a fixed-order tree sum over the block (blockDim.x = 256); every thread gets the total
__device__ float disc_block_sum_(float v, float* sh) {
    sh[threadIdx.x] = v;
    __syncthreads();
    for (int st = blockDim.x / 2; st > 0; st /= 2) {
        if ((int)threadIdx.x < st) sh[threadIdx.x] += sh[threadIdx.x + st];
        __syncthreads();
    }
    float r = sh[0];
    __syncthreads();
    return r;
}
// groupnorm_forward: one block per group
__global__ void disc_groupnorm_forward_kernel(float* out, float* xhat, float* mean, float* rstd, const float* inp,
                                              const float* w, const float* b, int C, int S, int G) {
    __shared__ float sh[256];
    int g = blockIdx.x, cg = C / G;
    size_t n = (size_t)cg * S, base = (size_t)g * n;
    float s = 0;
    for (size_t i = threadIdx.x; i < n; i += blockDim.x) s += inp[base + i];
    float m = disc_block_sum_(s, sh) / n;
    float v = 0;
    for (size_t i = threadIdx.x; i < n; i += blockDim.x) {
        float d = inp[base + i] - m;
        v += d * d;
    }
    float rs = 1.0f / sqrtf(disc_block_sum_(v, sh) / n + 1e-5f);
    if (threadIdx.x == 0) {
        mean[g] = m;
        rstd[g] = rs;
    }
    for (size_t i = threadIdx.x; i < n; i += blockDim.x) {
        int c = g * cg + (int)(i / S);
        float xh = (inp[base + i] - m) * rs;
        xhat[base + i] = xh;
        out[base + i] = xh * w[c] + b[c];
    }
}
// groupnorm_backward's input gradient: one block per group (OVERWRITES dinp)
__global__ void disc_groupnorm_backward_input_kernel(float* dinp, const float* dout, const float* xhat,
                                                     const float* rstd, const float* w, int C, int S, int G) {
    __shared__ float sh[256];
    int g = blockIdx.x, cg = C / G;
    size_t n = (size_t)cg * S, base = (size_t)g * n;
    float sd = 0, sdx = 0;
    for (size_t i = threadIdx.x; i < n; i += blockDim.x) {
        float dx = dout[base + i] * w[g * cg + (int)(i / S)];
        sd += dx;
        sdx += dx * xhat[base + i];
    }
    sd = disc_block_sum_(sd, sh);
    sdx = disc_block_sum_(sdx, sh);
    for (size_t i = threadIdx.x; i < n; i += blockDim.x) {
        float dx = dout[base + i] * w[g * cg + (int)(i / S)];
        dinp[base + i] = rstd[g] * (dx - sd / n - xhat[base + i] * sdx / n);
    }
}
// groupnorm_backward's affine gradients: one thread per channel (+=)
__global__ void disc_groupnorm_backward_params_kernel(float* dw, float* db, const float* dout, const float* xhat, int C,
                                                      int S) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float sw = 0, sb = 0;
    for (int i = 0; i < S; i++) {
        float d = dout[(size_t)c * S + i];
        sw += d * xhat[(size_t)c * S + i];
        sb += d;
    }
    dw[c] += sw;
    db[c] += sb;
}
// leaky_forward; leaky_backward OVERWRITING dinp
__global__ void disc_leaky_forward_kernel(float* out, const float* inp, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = inp[i] > 0 ? inp[i] : (float)LEAKY_SLOPE * inp[i];
}
__global__ void disc_leaky_backward_kernel(float* dinp, const float* dout, const float* inp, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) dinp[i] = inp[i] > 0 ? dout[i] : (float)LEAKY_SLOPE * dout[i];
}
// average pool: one thread per channel
__global__ void disc_pool_forward_kernel(float* pool, const float* x, int C, int S) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float s = 0;
    for (int i = 0; i < S; i++) s += x[(size_t)c * S + i];
    pool[c] = s / S;
}
// its backward: g[c, i] = dpool[c] / S (OVERWRITES g); one block per channel c (no division per element)
__global__ void disc_pool_backward_kernel(float* g, const float* dpool, int S) {
    const float v = dpool[blockIdx.x] / S;
    float* gc = g + (size_t)blockIdx.x * S;
    for (int i = threadIdx.x; i < S; i += blockDim.x) gc[i] = v;
}
// the MLP: h1 = W0·pool + b0, a1 = LeakyReLU(h1), logit = w2·(a1·m) + b2, m the dropout factors of head h under
// key (0: all 1) (one block)
__global__ void disc_mlp_forward_kernel(float* h1, float* a1, float* logit, const float* pool, const float* w0,
                                        const float* b0, const float* w2, const float* b2, int C4, int hidden,
                                        uint64_t key, int h) {
    for (int j = threadIdx.x; j < hidden; j += blockDim.x) {
        float s = b0[j];
        for (int c = 0; c < C4; c++) s += w0[(size_t)j * C4 + c] * pool[c];
        h1[j] = s;
        a1[j] = s > 0 ? s : (float)LEAKY_SLOPE * s;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        float z = b2[0];
        for (int i = 0; i < hidden; i++) z += w2[i] * (a1[i] * (float)disc_dropout_factor(key, h, i));
        *logit = z;
    }
}
// its backward from d logit = gz: parameter gradients (+=; dw0 NULL: skipped), dh1 scratch [hidden], dpool [C4] (one
// block)
__global__ void disc_mlp_backward_kernel(float* dpool, float* dh1, float* dw0, float* db0, float* dw2, float* db2,
                                         const float* pool, const float* h1, const float* a1, const float* w0,
                                         const float* w2, float gz, int C4, int hidden, uint64_t key, int h) {
    for (int i = threadIdx.x; i < hidden; i += blockDim.x) {
        float m = (float)disc_dropout_factor(key, h, i);
        if (dw2) dw2[i] += gz * (a1[i] * m);
        float d = gz * w2[i] * m;
        dh1[i] = h1[i] > 0 ? d : (float)LEAKY_SLOPE * d;
    }
    if (threadIdx.x == 0 && db2) db2[0] += gz;
    __syncthreads();
    if (dw0) {
        for (size_t q = threadIdx.x; q < (size_t)hidden * C4; q += blockDim.x) dw0[q] += dh1[q / C4] * pool[q % C4];
        for (int j = threadIdx.x; j < hidden; j += blockDim.x) db0[j] += dh1[j];
    }
    for (int c = threadIdx.x; c < C4; c += blockDim.x) {
        float s = 0;
        for (int j = 0; j < hidden; j++) s += dh1[j] * w0[(size_t)j * C4 + c];
        dpool[c] = s;
    }
}

// ---------------------------------------------------------------------------------------------------------
// the multiscale head's kernels (channels-last [S, C], one sample)

// x0 [S, C] (voxel s = (t·H + i)·W + j) from one sample's feature [L, D] (cpu/layers.h unpatchify_forward's order:
// token (t/pt, i/ph, j/pw), within it (t%pt, i%ph, j%pw, c)); patchify_add inverts it into dfeat (+=). One block per
// voxel (its place in the feature computed once, in 32-bit), the threads over its C channels, which are contiguous on
// both sides; a bijection: no two threads write one place.
__device__ inline size_t disc_ms_feat_row_(int v, int C, int H, int W, int pt, int ph, int pw) {
    const int j = v % W, i = (v / W) % H, t = v / (W * H);
    const size_t token = ((size_t)(t / pt) * (H / ph) + i / ph) * (W / pw) + j / pw;
    return token * ((size_t)C * pt * ph * pw) + (size_t)(((t % pt) * ph + i % ph) * pw + j % pw) * C;
}
__global__ void disc_ms_unpatchify_kernel(floatX* x0, const float* feat, int C, int H, int W, int pt, int ph, int pw) {
    const float* f = feat + disc_ms_feat_row_(blockIdx.x, C, H, W, pt, ph, pw);
    floatX* o = x0 + (size_t)blockIdx.x * C;
    for (int c = threadIdx.x; c < C; c += blockDim.x) o[c] = from_float<floatX>(f[c]);
}
__global__ void disc_ms_patchify_add_kernel(float* dfeat, const floatX* dx0, int C, int H, int W, int pt, int ph,
                                            int pw) {
    float* f = dfeat + disc_ms_feat_row_(blockIdx.x, C, H, W, pt, ph, pw);
    const floatX* d = dx0 + (size_t)blockIdx.x * C;
    for (int c = threadIdx.x; c < C; c += blockDim.x) f[c] += to_float(d[c]);
}
// threads for a row-per-block kernel over C columns (n at a time): up to 256, a multiple of 32
static int disc_ms_row_threads_(int C, int n) {
    int t = (C / n + 31) / 32 * 32;
    return t < 32 ? 32 : t > 256 ? 256 : t;
}
// out[i] = (floatX) in[i]; acc_out[i] += in[i]
__global__ void disc_ms_cast_kernel(floatX* out, const float* in, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = from_float<floatX>(in[i]);
}
__global__ void disc_ms_add_kernel(float* acc, const float* in, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) acc[i] += in[i];
}
// a 3x3x3 weight w [C, C, 27] (PyTorch's [OC, IC, kt, kh, kw]) tap-major: wk[o, tap·C + c] = w[o, c, tap], and for the
// input gradient wt[c, tap·C + o] = w[o, c, 26 − tap] (wt may be NULL)
__global__ void disc_ms_w3_kernel(floatX* wk, floatX* wt, const float* w, int C) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)27 * C * C) return;
    int tap = (int)(idx % 27), c = (int)((idx / 27) % C), o = (int)(idx / (27 * (size_t)C));
    wk[(size_t)o * 27 * C + (size_t)tap * C + c] = from_float<floatX>(w[idx]);
    if (wt) wt[(size_t)c * 27 * C + (size_t)(26 - tap) * C + o] = from_float<floatX>(w[idx]);
}
// its gradient back: dw[o, c, tap] += dwk[o, tap·C + c]
__global__ void disc_ms_w3_grad_kernel(float* dw, const float* dwk, int C) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)27 * C * C) return;
    int tap = (int)(idx % 27), c = (int)((idx / 27) % C), o = (int)(idx / (27 * (size_t)C));
    dw[idx] += dwk[(size_t)o * 27 * C + (size_t)tap * C + c];
}
// col [R, 27·C]: rows r0 .. r0 + R − 1 of a T x H x W map x [S, C], col[r, tap·C + c] = x[(t + a − 1, i + b − 1,
// j + e − 1), c] for tap = (a·3 + b)·3 + e, zero outside the map (padding 1). One block per row r (its voxel decoded
// once, in 32-bit), the threads over the C channels of each tap: FLOATX_VEC16 at a time (a 128-bit copy) when vec.
__global__ void disc_ms_im2col_kernel(floatX* col, const floatX* x, int C, int T, int H, int W, int r0, int vec) {
    const int v = r0 + blockIdx.x, j0 = v % W, i0 = (v / W) % H, t0 = v / (W * H);
    floatX* row = col + (size_t)blockIdx.x * 27 * C;
    for (int tap = 0; tap < 27; tap++) {
        const int j = j0 + tap % 3 - 1, i = i0 + (tap / 3) % 3 - 1, t = t0 + tap / 9 - 1;
        const bool in = t >= 0 && t < T && i >= 0 && i < H && j >= 0 && j < W;
        const floatX* src = in ? x + (((size_t)t * H + i) * W + j) * C : NULL;
        floatX* dst = row + (size_t)tap * C;
        if (vec) {
            for (int c = FLOATX_VEC16 * threadIdx.x; c < C; c += FLOATX_VEC16 * blockDim.x)
                *reinterpret_cast<uint4*>(dst + c) =
                    in ? *reinterpret_cast<const uint4*>(src + c) : make_uint4(0, 0, 0, 0);
        } else {
            for (int c = threadIdx.x; c < C; c += blockDim.x) dst[c] = in ? src[c] : from_float<floatX>(0.f);
        }
    }
}
static void disc_ms_im2col_(floatX* col, const floatX* x, int C, int T, int H, int W, size_t r0, int R,
                            cudaStream_t s) {
    const int vec = C % FLOATX_VEC16 == 0 && ((uintptr_t)col | (uintptr_t)x) % 16 == 0;
    disc_ms_im2col_kernel<<<R, disc_ms_row_threads_(C, vec ? FLOATX_VEC16 : 1), 0, s>>>(col, x, C, T, H, W, (int)r0,
                                                                                        vec);
    cudaCheck(cudaGetLastError());
}
// AvgPool3d(kernel = stride = s), floor mode: p [(T/s)·(H/s)·(W/s), C] = the mean of each s³ cell of a [T·H·W, C]
__global__ void disc_ms_avgpool_kernel(floatX* p, const floatX* a, int C, int T, int H, int W, int s) {
    const int Ho = H / s, Wo = W / s, v = blockIdx.x; // one block per output voxel
    const int j = v % Wo, i = (v / Wo) % Ho, t = v / (Wo * Ho);
    const float cell = (float)(s * s * s);
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float acc = 0.f;
        for (int q = 0; q < s; q++)
            for (int r = 0; r < s; r++)
                for (int e = 0; e < s; e++)
                    acc += to_float(a[((((size_t)t * s + q) * H + i * s + r) * W + j * s + e) * C + c]);
        p[(size_t)v * C + c] = from_float<floatX>(acc / cell);
    }
}
// its backward (OVERWRITES da [T·H·W, C]): dp of the voxel's cell / s³, 0 in the remainder floor mode drops; one
// block per input voxel
__global__ void disc_ms_avgpool_backward_kernel(floatX* da, const floatX* dp, int C, int T, int H, int W, int s) {
    const int To = T / s, Ho = H / s, Wo = W / s, v = blockIdx.x;
    const int j = (v % W) / s, i = ((v / W) % H) / s, t = v / (W * H) / s;
    const bool in = t < To && i < Ho && j < Wo;
    const float cell = (float)(s * s * s);
    const floatX* g = dp + (((size_t)t * Ho + i) * Wo + j) * C;
    for (int c = threadIdx.x; c < C; c += blockDim.x)
        da[(size_t)v * C + c] = from_float<floatX>(in ? to_float(g[c]) / cell : 0.f);
}

// a GroupNorm + LeakyReLU after a convolution whose output z lacks its bias: x = z + b, xhat = (x − mean_g)·rstd_g,
// n = xhat·gw + gb, a = LeakyReLU(n); channel c is in group c / cg
typedef struct {
    const float *b, *gw, *gb, *mean, *rstd;
    int cg;
} DiscMsNorm;
enum { DISC_MS_SUM = 0, DISC_MS_SQ, DISC_MS_ACT, DISC_MS_BWD };
// per-channel partial sums over the rows of chunk blockIdx.x of z [rows, ld] (columns 0..C−1):
//   SUM: Σ x (x = z + b, b may be NULL);  SQ: Σ (x − mean_g)²;  ACT: Σ a;
//   BWD: with d a = dact[r, c] (or dconst[c] when dact is NULL) and d n = d a · LeakyReLU'(n): Σ d n·xhat (p1), Σ d n
//   (p2)
__global__ void disc_ms_partials_kernel(float* p1, float* p2, const floatX* z, int ld, int rows, int C, int mode,
                                        DiscMsNorm g, const floatX* dact, const float* dconst) {
    int c = blockIdx.y * blockDim.x + threadIdx.x;
    if (c >= C) return;
    int r0 = blockIdx.x * DISC_ROWS_PER_CHUNK, r1 = min(r0 + DISC_ROWS_PER_CHUNK, rows);
    float b = g.b ? g.b[c] : 0.f, m = 0.f, rs = 1.f, gw = 1.f, gb = 0.f, s1 = 0.f, s2 = 0.f;
    if (mode != DISC_MS_SUM) m = g.mean[c / g.cg];
    if (mode >= DISC_MS_ACT) {
        rs = g.rstd[c / g.cg];
        gw = g.gw[c];
        gb = g.gb[c];
    }
    for (int r = r0; r < r1; r++) {
        float x = to_float(z[(size_t)r * ld + c]) + b;
        if (mode == DISC_MS_SUM)
            s1 += x;
        else if (mode == DISC_MS_SQ)
            s1 += (x - m) * (x - m);
        else {
            float xh = (x - m) * rs, n = xh * gw + gb;
            if (mode == DISC_MS_ACT)
                s1 += n > 0 ? n : (float)LEAKY_SLOPE * n;
            else {
                float da = dact ? to_float(dact[(size_t)r * C + c]) : dconst[c],
                      dn = n > 0 ? da : (float)LEAKY_SLOPE * da;
                s1 += dn * xh;
                s2 += dn;
            }
        }
    }
    p1[(size_t)blockIdx.x * C + c] = s1;
    if (p2) p2[(size_t)blockIdx.x * C + c] = s2;
}
// the chunks added in order (double): o1[c] = scale·Σ p1 (OVERWRITES), o2 likewise when given; acc1/acc2 (may be NULL)
// += the same sums (parameter gradients)
__global__ void disc_ms_reduce_kernel(float* o1, float* o2, float* acc1, float* acc2, const float* p1, const float* p2,
                                      int nch, int C, double scale) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    double s1 = 0, s2 = 0;
    for (int k = 0; k < nch; k++) {
        s1 += p1[(size_t)k * C + c];
        if (p2) s2 += p2[(size_t)k * C + c];
    }
    if (o1) o1[c] = (float)(s1 * scale);
    if (o2) o2[c] = (float)(s2 * scale);
    if (acc1) acc1[c] += (float)s1;
    if (acc2) acc2[c] += (float)s2;
}
// per group g of cg channels: out[g] = Σ_{c in g} w[c]·in[c] (w NULL: 1), then
//   which 0: / n (a mean);  1: 1 / sqrt(/ n + 1e-5) (rstd from Σ (x − mean)²);  2: as is
__global__ void disc_ms_group_kernel(float* out, const float* in, const float* w, int G, int cg, double n, int which) {
    int g = blockIdx.x * blockDim.x + threadIdx.x;
    if (g >= G) return;
    double s = 0;
    for (int c = g * cg; c < (g + 1) * cg; c++) s += (double)in[c] * (w ? w[c] : 1.0);
    out[g] = which == 0 ? (float)(s / n) : which == 1 ? (float)(1.0 / sqrt(s / n + 1e-5)) : (float)s;
}
// out [rows, C] = LeakyReLU(GroupNorm(z + b)) from z [rows, ld]: one block per row, the threads over its channels,
// FLOATX_VEC16 at a time (128-bit loads of z, stores of out) when vec (C and ld multiples of it, aligned rows)
__device__ inline float disc_ms_norm_one_(float z, int c, const DiscMsNorm& g) {
    const float n = ((z + g.b[c] - g.mean[c / g.cg]) * g.rstd[c / g.cg]) * g.gw[c] + g.gb[c];
    return n > 0 ? n : (float)LEAKY_SLOPE * n;
}
__global__ void disc_ms_norm_kernel(floatX* out, const floatX* z, int ld, int C, DiscMsNorm g, int vec) {
    const floatX* zr = z + (size_t)blockIdx.x * ld;
    floatX* o = out + (size_t)blockIdx.x * C;
    if (vec) {
        for (int c = FLOATX_VEC16 * threadIdx.x; c < C; c += FLOATX_VEC16 * blockDim.x) {
            float v[FLOATX_VEC16];
            floatx_load16(zr + c, v);
#pragma unroll
            for (int k = 0; k < FLOATX_VEC16; k++) v[k] = disc_ms_norm_one_(v[k], c + k, g);
            floatx_store16(o + c, v);
        }
    } else {
        for (int c = threadIdx.x; c < C; c += blockDim.x)
            o[c] = from_float<floatX>(disc_ms_norm_one_(to_float(zr[c]), c, g));
    }
}
static void disc_ms_norm_apply_(floatX* out, const floatX* z, int ld, int rows, int C, DiscMsNorm g, cudaStream_t s) {
    const int vec = C % FLOATX_VEC16 == 0 && ld % FLOATX_VEC16 == 0 && ((uintptr_t)out | (uintptr_t)z) % 16 == 0;
    disc_ms_norm_kernel<<<rows, disc_ms_row_threads_(C, vec ? FLOATX_VEC16 : 1), 0, s>>>(out, z, ld, C, g, vec);
    cudaCheck(cudaGetLastError());
}
// groupnorm_backward's input gradient through the LeakyReLU (OVERWRITES dz [rows, ldo]): dz = rstd·(dxhat − Σdxhat/n
// − xhat·Σ(dxhat·xhat)/n), dxhat = d n·gw; sd[g] = Σ dxhat, sdx[g] = Σ dxhat·xhat over the group (n = cg·rows).
// One block per row, the threads over its channels.
__global__ void disc_ms_norm_backward_kernel(floatX* dz, int ldo, const floatX* z, int ld, int rows, int C,
                                             DiscMsNorm g, const floatX* dact, const float* dconst, const float* sdx,
                                             const float* sd) {
    const size_t r = blockIdx.x;
    const float inv = 1.f / ((float)g.cg * (float)rows);
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        const int grp = c / g.cg;
        float rs = g.rstd[grp], xh = (to_float(z[r * ld + c]) + g.b[c] - g.mean[grp]) * rs, n = xh * g.gw[c] + g.gb[c];
        float da = dact ? to_float(dact[r * C + c]) : dconst[c], dn = n > 0 ? da : (float)LEAKY_SLOPE * da;
        dz[r * ldo + c] = from_float<floatX>(rs * (dn * g.gw[c] - sd[grp] * inv - xh * sdx[grp] * inv));
    }
}

// ---------------------------------------------------------------------------------------------------------
// the heads

// the multiscale head's buffers (gpu/disc_plan.h's lists, typed)
#define DISC_PTR_f32                float
#define DISC_PTR_fx                 floatX
#define DISC_FIELD_(type, field, n) DISC_PTR_##type* field;
typedef struct {
    DISC_MS_KEEP(DISC_FIELD_, z)
} DiscMsKeep;
typedef struct {
    DISC_MS_SCRATCH(DISC_FIELD_, z)
} DiscMsScratch;
#undef DISC_FIELD_

typedef struct {
    int B;
    DiscConfig dc;
    uint64_t dropout_key[TMD_MAX_BATCH]; // per sample; 0: eval mode (the student step), else train mode
    // multiscale
    DiscDims dims;
    Shape4 x0s, cin[DISC_MAX_CONVS], cout[DISC_MAX_CONVS];
    DiscMsKeep k;
    DiscMsScratch* w;
    DiscMsScratch own; // w: own, or the lender's
    int pt, ph, pw;
    // strided
    Shape4 shp[DISC_CONVS + 1]; // shp[0] the unpatchified feature, shp[k + 1] after conv k
    PatchGrid pg;               // one sample's feature grid: C = C0, P = D
    float* x0[DISC_MAX_HEADS];  // [B, C0, T, H, W]
    float *z[DISC_MAX_HEADS][DISC_CONVS], *xh[DISC_MAX_HEADS][DISC_CONVS], *nrm[DISC_MAX_HEADS][DISC_CONVS];
    float *mean[DISC_MAX_HEADS][DISC_CONVS], *rstd[DISC_MAX_HEADS][DISC_CONVS];
    float* act[DISC_MAX_HEADS][DISC_CONVS]; // [B, ...] each
    float *pool[DISC_MAX_HEADS], *h1[DISC_MAX_HEADS], *a1[DISC_MAX_HEADS];
    float* logit_d;                               // [B, n_heads] device
    double logit[TMD_MAX_BATCH * DISC_MAX_HEADS]; // [B, n_heads] host copy after disc_gpu_forward
    float *gcur, *gtmp, *gin, *dh1, *dpool, *dfe; // backward scratch (one sample)
    char* base;
    size_t bytes;
} DiscGpuAct;

static float* disc_gpu_take_(float* base, size_t* off, size_t n) {
    float* p = base ? base + *off : NULL;
    *off += (n + 63) / 64 * 64;
    return p;
}
static size_t disc_gpu_strided_carve_(DiscGpuAct* a, float* base, size_t LD) {
    size_t off = 0, B = a->B;
    const DiscConfig* dc = &a->dc;
    size_t big = shape_numel(a->shp[0]);
    for (int k = 1; k <= DISC_CONVS; k++)
        if (shape_numel(a->shp[k]) > big) big = shape_numel(a->shp[k]);
    for (int h = 0; h < dc->n_heads; h++) {
        a->x0[h] = disc_gpu_take_(base, &off, B * shape_numel(a->shp[0]));
        for (int k = 0; k < DISC_CONVS; k++) {
            size_t n = B * shape_numel(a->shp[k + 1]), G = B * disc_groups(dc->width[k]);
            a->z[h][k] = disc_gpu_take_(base, &off, n);
            a->xh[h][k] = disc_gpu_take_(base, &off, n);
            a->nrm[h][k] = disc_gpu_take_(base, &off, n);
            a->act[h][k] = disc_gpu_take_(base, &off, n);
            a->mean[h][k] = disc_gpu_take_(base, &off, G);
            a->rstd[h][k] = disc_gpu_take_(base, &off, G);
        }
        a->pool[h] = disc_gpu_take_(base, &off, B * dc->width[DISC_CONVS - 1]);
        a->h1[h] = disc_gpu_take_(base, &off, B * dc->hidden);
        a->a1[h] = disc_gpu_take_(base, &off, B * dc->hidden);
    }
    a->logit_d = disc_gpu_take_(base, &off, B * DISC_MAX_HEADS);
    a->gcur = disc_gpu_take_(base, &off, big);
    a->gtmp = disc_gpu_take_(base, &off, big);
    a->gin = disc_gpu_take_(base, &off, big);
    a->dh1 = disc_gpu_take_(base, &off, dc->hidden);
    a->dpool = disc_gpu_take_(base, &off, dc->width[DISC_CONVS - 1]);
    a->dfe = disc_gpu_take_(base, &off, LD);
    return off;
}
// the multiscale lists carved from base (NULL: sizes only); returns bytes
#define DISC_CARVE_(type, field, n)                                                                                    \
    {                                                                                                                  \
        size_t b_ = act_round((n) * sizeof(DISC_PTR_##type));                                                          \
        dst->field = base && (n) > 0 ? (DISC_PTR_##type*)(base + off) : NULL;                                          \
        off += b_;                                                                                                     \
    }
static size_t disc_gpu_ms_carve_keep_(DiscMsKeep* dst, char* base, DiscDims z) {
    size_t off = 0;
    DISC_MS_KEEP(DISC_CARVE_, z) return off;
}
static size_t disc_gpu_ms_carve_scratch_(DiscMsScratch* dst, char* base, DiscDims z) {
    size_t off = 0;
    DISC_MS_SCRATCH(DISC_CARVE_, z) return off;
}
#undef DISC_CARVE_

// plans the heads' activations for B samples of the teacher activations ta's grid; share (may be NULL): a multiscale
// act of the same shapes whose scratch this one borrows (the two run one after the other on one stream)
static void disc_gpu_act_init(DiscGpuAct* a, const DiscConfig* dc, const WanGpuAct* ta,
                              const DiscGpuAct* share = NULL) {
    memset(a, 0, sizeof(*a));
    const WanConfig* c = &ta->cfg;
    if (ta->B > TMD_MAX_BATCH) {
        fprintf(stderr, "discriminator: batch %d > %d; lower --batch\n", ta->B, TMD_MAX_BATCH);
        exit(1);
    }
    a->B = ta->B;
    a->dc = *dc;
    int T = ta->g.T, Hl = ta->g.Hl, Wl = ta->g.Wl;
    size_t LD = (size_t)ta->g.L * c->dim, n;
    int borrows = share && dc->kind == DISC_MULTISCALE;
    if (dc->kind == DISC_MULTISCALE) {
        for (int i = 0; i < dc->n_scales; i++)
            if (dc->scales[i] > T || dc->scales[i] > Hl || dc->scales[i] > Wl) {
                fprintf(stderr,
                        "discriminator: pooling scale %d on a %d x %d x %d latent grid; build the head for this grid "
                        "(disc_config_multiscale) or use --disc-head strided\n",
                        dc->scales[i], T, Hl, Wl);
                exit(1);
            }
        a->dims = disc_dims(dc, a->B, T, Hl, Wl);
        disc_shapes(dc, T, Hl, Wl, &a->x0s, a->cin, a->cout);
        a->pt = c->patch[0];
        a->ph = c->patch[1];
        a->pw = c->patch[2];
        n = disc_gpu_ms_carve_keep_(&a->k, NULL, a->dims) +
            (borrows ? 0 : disc_gpu_ms_carve_scratch_(&a->own, NULL, a->dims));
        a->base = (char*)cuda_malloc_named(n, "discriminator activations", WAN_GPU_OOM_HINT);
        size_t off = disc_gpu_ms_carve_keep_(&a->k, a->base, a->dims);
        if (!borrows) disc_gpu_ms_carve_scratch_(&a->own, a->base + off, a->dims);
        a->w = borrows ? share->w : &a->own;
    } else {
        a->shp[0] = (Shape4){dc->in_ch, T, Hl, Wl};
        for (int k = 0; k < DISC_CONVS; k++)
            a->shp[k + 1] = conv_out_shape(a->shp[k], dc->width[k], DISC_KERNEL[k], DISC_STRIDE[k], DISC_PAD);
        a->pg = patch_grid(1, dc->in_ch, T, Hl, Wl, c->patch[0], c->patch[1], c->patch[2]);
        n = sizeof(float) * disc_gpu_strided_carve_(a, NULL, LD);
        a->base = (char*)cuda_malloc_named(n, "discriminator activations", WAN_GPU_OOM_HINT);
        disc_gpu_strided_carve_(a, (float*)a->base, LD);
    }
    a->bytes = n;
    size_t plan = disc_act_bytes(dc, a->B, T, Hl, Wl, LD, sizeof(floatX), borrows);
    if (plan != n) { // gpu/disc_plan.h is what the memory plan counts: the two must not drift apart
        fprintf(stderr, "discriminator: carved %zu bytes but gpu/disc_plan.h plans %zu; fix the plan\n", n, plan);
        exit(1);
    }
}
static void disc_gpu_act_free(DiscGpuAct* a) { cudaCheck(cudaFree(a->base)); }

// logits of every head on every sample of the teacher activations `ta` (features at residual levels layers[h] + 1);
// the host copy a->logit[b·n_heads + h] is ready on return (one synchronisation)
static void disc_gpu_strided_forward_(DiscGpuAct* a, const DiscParamsF* p, const DiscConfig* dc, const WanGpuAct* ta) {
    cudaStream_t s = ta->stream;
    size_t LD = (size_t)ta->g.L * ta->cfg.dim;
    for (int b = 0; b < a->B; b++)
        for (int h = 0; h < dc->n_heads; h++) {
            float* x0 = a->x0[h] + b * shape_numel(a->shp[0]);
            unpatchify_forward<float>(x0, wan_gpu_xs(ta, dc->layers[h] + 1) + b * LD, a->pg, s);
            const float* x = x0;
            for (int k = 0; k < DISC_CONVS; k++) {
                Shape4 o = a->shp[k + 1];
                size_t n = shape_numel(o), S = (size_t)o.T * o.H * o.W;
                int G = disc_groups(o.C);
                float *z = a->z[h][k] + b * n, *xh = a->xh[h][k] + b * n, *nrm = a->nrm[h][k] + b * n,
                      *act = a->act[h][k] + b * n;
                disc_conv_forward_kernel<<<disc_blocks_(n), 256, 0, s>>>(z, x, p->conv_w[h][k], p->conv_b[h][k],
                                                                         disc_conv_geom_(a->shp[k], o, k));
                disc_groupnorm_forward_kernel<<<G, 256, 0, s>>>(nrm, xh, a->mean[h][k] + b * G, a->rstd[h][k] + b * G,
                                                                z, p->norm_w[h][k], p->norm_b[h][k], o.C, (int)S, G);
                disc_leaky_forward_kernel<<<disc_blocks_(n), 256, 0, s>>>(act, nrm, n);
                x = act;
            }
            Shape4 o = a->shp[DISC_CONVS];
            int S = o.T * o.H * o.W, C4 = o.C;
            float* pool = a->pool[h] + b * C4;
            disc_pool_forward_kernel<<<disc_blocks_(C4), 256, 0, s>>>(pool, x, C4, S);
            disc_mlp_forward_kernel<<<1, 256, 0, s>>>(
                a->h1[h] + b * dc->hidden, a->a1[h] + b * dc->hidden, a->logit_d + b * dc->n_heads + h, pool,
                p->mlp_0_w[h], p->mlp_0_b[h], p->mlp_2_w[h], p->mlp_2_b[h], C4, dc->hidden, 0, h);
            cudaCheck(cudaGetLastError());
        }
}

// dlogit[b·n_heads + h] → dp (+=, NULL: parameter gradients are not computed) and the feature gradients
// dfeat[layers[h] + 1] [B, L, D] (+=, the array or its entries may be NULL)
static void disc_gpu_strided_backward_(DiscParamsF* dp, float* const* dfeat, const double* dlogit, DiscGpuAct* a,
                                       const DiscParamsF* p, const DiscConfig* dc, const WanGpuAct* ta) {
    cudaStream_t s = ta->stream;
    size_t LD = (size_t)ta->g.L * ta->cfg.dim;
    for (int b = 0; b < a->B; b++)
        for (int h = 0; h < dc->n_heads; h++) {
            Shape4 o = a->shp[DISC_CONVS];
            int S = o.T * o.H * o.W, C4 = o.C, Hd = dc->hidden;
            disc_mlp_backward_kernel<<<1, 256, 0, s>>>(
                a->dpool, a->dh1, dp ? dp->mlp_0_w[h] : NULL, dp ? dp->mlp_0_b[h] : NULL, dp ? dp->mlp_2_w[h] : NULL,
                dp ? dp->mlp_2_b[h] : NULL, a->pool[h] + b * C4, a->h1[h] + b * Hd, a->a1[h] + b * Hd, p->mlp_0_w[h],
                p->mlp_2_w[h], (float)dlogit[b * dc->n_heads + h], C4, Hd, 0, h);
            disc_pool_backward_kernel<<<C4, 256, 0, s>>>(a->gcur, a->dpool, S);
            for (int k = DISC_CONVS - 1; k >= 0; k--) {
                Shape4 ok = a->shp[k + 1];
                size_t n = shape_numel(ok), Sk = (size_t)ok.T * ok.H * ok.W;
                int G = disc_groups(ok.C);
                disc_leaky_backward_kernel<<<disc_blocks_(n), 256, 0, s>>>(a->gtmp, a->gcur, a->nrm[h][k] + b * n,
                                                                           n); // d nrm
                if (dp)
                    disc_groupnorm_backward_params_kernel<<<disc_blocks_(ok.C), 256, 0, s>>>(
                        dp->norm_w[h][k], dp->norm_b[h][k], a->gtmp, a->xh[h][k] + b * n, ok.C, (int)Sk);
                disc_groupnorm_backward_input_kernel<<<G, 256, 0, s>>>(a->gcur, a->gtmp, a->xh[h][k] + b * n,
                                                                       a->rstd[h][k] + b * G, p->norm_w[h][k], ok.C,
                                                                       (int)Sk, G); // d z
                DiscConvGeom cg = disc_conv_geom_(a->shp[k], ok, k);
                const float* xin =
                    k ? a->act[h][k - 1] + b * shape_numel(a->shp[k]) : a->x0[h] + b * shape_numel(a->shp[0]);
                if (dp) {
                    size_t nw = (size_t)cg.OC * cg.IC * cg.k0 * cg.k1 * cg.k2 + cg.OC;
                    disc_conv_backward_params_kernel<<<disc_blocks_(nw), 256, 0, s>>>(
                        dp->conv_w[h][k], dp->conv_b[h][k], a->gcur, xin, cg);
                }
                disc_conv_backward_input_kernel<<<disc_blocks_(shape_numel(a->shp[k])), 256, 0, s>>>(
                    a->gin, a->gcur, p->conv_w[h][k], cg);
                float* t = a->gcur;
                a->gcur = a->gin;
                a->gin = t;
            }
            cudaCheck(cudaGetLastError());
            float* dfe = dfeat ? dfeat[dc->layers[h] + 1] : NULL;
            if (dfe) {
                unpatchify_backward<float>(a->dfe, a->gcur, a->pg, s);
                wan_gpu_add<float>(dfe + b * LD, a->dfe, LD, s);
            }
        }
}

// ---------------------------------------------------------------------------------------------------------
// the multiscale head (one sample b, one head h at a time)

static unsigned disc_ms_blocks_(size_t n) { return (unsigned)((n + 255) / 256); }
// branch i's norm after its 1x1x1 (k3 0: statistics in w->mean, w->rstd) or after its 3x3x3 (k3 1: w->mean3, w->rstd3)
static DiscMsNorm disc_ms_norm_(const DiscParamsF* p, const DiscConfig* dc, int h, int i, int k3,
                                const DiscMsScratch* w) {
    int k = 2 * i + k3;
    DiscMsNorm g = {p->conv_b[h][k],         p->norm_w[h][k],         p->norm_b[h][k],
                    k3 ? w->mean3 : w->mean, k3 ? w->rstd3 : w->rstd, dc->in_ch / disc_groups(dc->in_ch)};
    return g;
}
// per-channel sums of z [rows, ld] in `mode` into w->sum1 (and w->sum2 for DISC_MS_BWD) times `scale`; acc1/acc2 (may
// be NULL) += the unscaled sums
static void disc_ms_colsum_(DiscMsScratch* w, const floatX* z, int ld, int rows, int C, int mode, DiscMsNorm g,
                            const floatX* dact, const float* dconst, double scale, float* acc1, float* acc2,
                            cudaStream_t s) {
    int nch = (rows + DISC_ROWS_PER_CHUNK - 1) / DISC_ROWS_PER_CHUNK;
    int two = mode == DISC_MS_BWD;
    disc_ms_partials_kernel<<<dim3(nch, (C + 255) / 256), 256, 0, s>>>(w->part1, two ? w->part2 : NULL, z, ld, rows, C,
                                                                       mode, g, dact, dconst);
    disc_ms_reduce_kernel<<<(C + 255) / 256, 256, 0, s>>>(w->sum1, two ? w->sum2 : NULL, acc1, acc2, w->part1,
                                                          two ? w->part2 : NULL, nch, C, scale);
}
// GroupNorm statistics of x = z + b over z [rows, ld] into g's mean and rstd (the mean, then Σ (x − mean)²)
static void disc_ms_stats_(DiscMsScratch* w, const floatX* z, int ld, int rows, int C, DiscMsNorm g, cudaStream_t s) {
    int G = C / g.cg;
    double n = (double)g.cg * rows;
    disc_ms_colsum_(w, z, ld, rows, C, DISC_MS_SUM, g, NULL, NULL, 1.0, NULL, NULL, s);
    disc_ms_group_kernel<<<(G + 255) / 256, 256, 0, s>>>((float*)g.mean, w->sum1, NULL, G, g.cg, n, 0);
    disc_ms_colsum_(w, z, ld, rows, C, DISC_MS_SQ, g, NULL, NULL, 1.0, NULL, NULL, s);
    disc_ms_group_kernel<<<(G + 255) / 256, 256, 0, s>>>((float*)g.rstd, w->sum1, NULL, G, g.cg, n, 1);
}
// the GroupNorm + LeakyReLU backward of one block: d z (OVERWRITES dz [rows, ldo]) from z [rows, ld] and d act
// (dact [rows, C], or dconst[c] on every row); dgw, dgb, db (may be NULL) += the affine's and the conv bias' gradients
static void disc_ms_norm_backward_(floatX* dz, int ldo, const floatX* z, int ld, int rows, int C, DiscMsNorm g,
                                   const floatX* dact, const float* dconst, float* dgw, float* dgb, float* db,
                                   DiscMsScratch* w, cudaStream_t s) {
    int G = C / g.cg;
    disc_ms_colsum_(w, z, ld, rows, C, DISC_MS_BWD, g, dact, dconst, 1.0, dgw, dgb, s); // Σ d n·xhat, Σ d n per channel
    disc_ms_group_kernel<<<(G + 255) / 256, 256, 0, s>>>(w->gs1, w->sum1, g.gw, G, g.cg, 1.0,
                                                         2); // Σ dxhat·xhat per group
    disc_ms_group_kernel<<<(G + 255) / 256, 256, 0, s>>>(w->gs2, w->sum2, g.gw, G, g.cg, 1.0, 2); // Σ dxhat
    disc_ms_norm_backward_kernel<<<rows, disc_ms_row_threads_(C, 1), 0, s>>>(dz, ldo, z, ld, rows, C, g, dact, dconst,
                                                                             w->gs1, w->gs2);
    if (db) {
        DiscMsNorm none = g;
        none.b = NULL;
        disc_ms_colsum_(w, dz, ldo, rows, C, DISC_MS_SUM, none, NULL, NULL, 1.0, db, NULL, s); // the conv bias: Σ d z
    }
}
// out [rows, C] = conv3x3x3(x [rows, C] on the map shape m) without its bias, slice by slice through w->col
static void disc_ms_conv3_(floatX* out, const floatX* x, const floatX* wk, Shape4 m, DiscMsScratch* w, size_t R,
                           cudaStream_t s) {
    int C = m.C;
    size_t S = shape_voxels(m);
    for (size_t r0 = 0; r0 < S; r0 += R) {
        int Rn = (int)(S - r0 < R ? S - r0 : R);
        disc_ms_im2col_(w->col, x, C, m.T, m.H, m.W, r0, Rn, s);
        matmul_forward<floatX>(out + r0 * C, NULL, w->col, wk, NULL, Rn, 27 * C, C, 0, s);
    }
}
// dwk [C, 27·C] (OVERWRITTEN) = Σ over slices of d outᵀ · im2col(x): the 3x3x3's weight gradient, tap-major
static void disc_ms_conv3_dweight_(float* dwk, const floatX* dout, const floatX* x, const floatX* wk, Shape4 m,
                                   DiscMsScratch* w, size_t R, cudaStream_t s) {
    int C = m.C;
    size_t S = shape_voxels(m);
    cudaCheck(cudaMemsetAsync(dwk, 0, sizeof(float) * 27 * C * C, s));
    for (size_t r0 = 0; r0 < S; r0 += R) {
        int Rn = (int)(S - r0 < R ? S - r0 : R);
        disc_ms_im2col_(w->col, x, C, m.T, m.H, m.W, r0, Rn, s);
        matmul_backward<floatX>(NULL, dwk, NULL, NULL, dout + r0 * C, w->col, wk, NULL, Rn, 27 * C, C, 0, s);
    }
}
// branch i's forward up to z2 (the 3x3x3 output; both GroupNorms' statistics in w); returns the 3x3x3's input (a1,
// or the pooled p). Needs z1 = x0·W1ᵀ in w->z1. with_wt: also the flipped weight for the input gradient.
static const floatX* disc_ms_branch_forward_(DiscGpuAct* a, const DiscParamsF* p, int h, int i, int with_wt,
                                             cudaStream_t s) {
    const DiscConfig* dc = &a->dc;
    DiscMsScratch* w = a->w;
    int C = dc->in_ch, sc = dc->scales[i], nsC = (int)a->dims.nsC;
    int S = (int)a->dims.S;
    Shape4 m1 = a->cout[2 * i], m3 = a->cin[2 * i + 1];
    DiscMsNorm g1 = disc_ms_norm_(p, dc, h, i, 0, w);
    disc_ms_stats_(w, w->z1 + (size_t)i * C, nsC, S, C, g1, s);
    disc_ms_norm_apply_(w->a1, w->z1 + (size_t)i * C, nsC, S, C, g1, s);
    const floatX* x = w->a1;
    if (sc > 1) {
        disc_ms_avgpool_kernel<<<(unsigned)shape_voxels(m3), disc_ms_row_threads_(C, 1), 0, s>>>(w->p, w->a1, C, m1.T,
                                                                                                 m1.H, m1.W, sc);
        x = w->p;
    }
    disc_ms_w3_kernel<<<disc_ms_blocks_((size_t)27 * C * C), 256, 0, s>>>(w->w3k, with_wt ? w->w3t : NULL,
                                                                          p->conv_w[h][2 * i + 1], C);
    disc_ms_conv3_(w->z2, x, w->w3k, m3, w, a->dims.R, s);
    disc_ms_stats_(w, w->z2, C, (int)shape_voxels(m3), C, disc_ms_norm_(p, dc, h, i, 1, w), s);
    cudaCheck(cudaGetLastError());
    return x;
}
// unpatchified x0 and z1 = x0·W1ᵀ (every branch's 1x1x1 in one GEMM) for sample b, head h
static void disc_ms_head_input_(DiscGpuAct* a, const DiscParamsF* p, const WanGpuAct* ta, int b, int h,
                                cudaStream_t s) {
    const DiscConfig* dc = &a->dc;
    DiscMsScratch* w = a->w;
    int C = dc->in_ch, S = (int)a->dims.S;
    size_t LD = (size_t)ta->g.L * ta->cfg.dim;
    disc_ms_unpatchify_kernel<<<S, disc_ms_row_threads_(C, 1), 0, s>>>(
        w->x0, wan_gpu_xs(ta, dc->layers[h] + 1) + b * LD, C, a->x0s.H, a->x0s.W, a->pt, a->ph, a->pw);
    for (int i = 0; i < dc->n_scales; i++)
        disc_ms_cast_kernel<<<disc_ms_blocks_((size_t)C * C), 256, 0, s>>>(w->w1 + (size_t)i * C * C,
                                                                           p->conv_w[h][2 * i], (size_t)C * C);
    matmul_forward<floatX>(w->z1, NULL, w->x0, w->w1, NULL, S, C, (int)a->dims.nsC, 0, s);
}
// d pool / S3 of branch i: the gradient every voxel of its 3x3x3 block's output gets from the global mean
__global__ void disc_ms_dconst_kernel(float* dc3, const float* dpool, int C, float inv) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c < C) dc3[c] = dpool[c] * inv;
}

static void disc_gpu_ms_forward_(DiscGpuAct* a, const DiscParamsF* p, const DiscConfig* dc, const WanGpuAct* ta) {
    cudaStream_t s = ta->stream;
    DiscMsScratch* w = a->w;
    int C = dc->in_ch, F = (int)a->dims.F, Hd = dc->hidden, nh = dc->n_heads;
    for (int b = 0; b < a->B; b++)
        for (int h = 0; h < nh; h++) {
            disc_ms_head_input_(a, p, ta, b, h, s);
            size_t o = (size_t)b * nh + h;
            float* pool = a->k.pool + o * F;
            for (int i = 0; i < dc->n_scales; i++) {
                disc_ms_branch_forward_(a, p, h, i, 0, s);
                int S3 = (int)shape_voxels(a->cin[2 * i + 1]);
                disc_ms_colsum_(w, w->z2, C, S3, C, DISC_MS_ACT, disc_ms_norm_(p, dc, h, i, 1, w), NULL, NULL, 1.0 / S3,
                                NULL, NULL, s);
                cudaCheck(
                    cudaMemcpyAsync(pool + (size_t)i * C, w->sum1, sizeof(float) * C, cudaMemcpyDeviceToDevice, s));
            }
            disc_mlp_forward_kernel<<<1, 256, 0, s>>>(a->k.h1 + o * Hd, a->k.ha + o * Hd, a->k.logit_d + o, pool,
                                                      p->mlp_0_w[h], p->mlp_0_b[h], p->mlp_2_w[h], p->mlp_2_b[h], F, Hd,
                                                      a->dropout_key[b], h);
            cudaCheck(cudaGetLastError());
        }
}

// the head's backward, recomputing its forward one branch at a time. dp (the critic step) gets every parameter's
// gradient; dfeat (the student step) the feature gradient; the GEMMs for what is not asked for are skipped.
static void disc_gpu_ms_backward_(DiscParamsF* dp, float* const* dfeat, const double* dlogit, DiscGpuAct* a,
                                  const DiscParamsF* p, const DiscConfig* dc, const WanGpuAct* ta) {
    cudaStream_t s = ta->stream;
    DiscMsScratch* w = a->w;
    int C = dc->in_ch, F = (int)a->dims.F, Hd = dc->hidden, nh = dc->n_heads, S = (int)a->dims.S,
        nsC = (int)a->dims.nsC;
    size_t LD = (size_t)ta->g.L * ta->cfg.dim;
    for (int b = 0; b < a->B; b++)
        for (int h = 0; h < nh; h++) {
            float* dfe = dfeat ? dfeat[dc->layers[h] + 1] : NULL;
            if (!dp && !dfe) continue;
            size_t o = (size_t)b * nh + h;
            disc_mlp_backward_kernel<<<1, 256, 0, s>>>(
                w->dpool, w->dh1, dp ? dp->mlp_0_w[h] : NULL, dp ? dp->mlp_0_b[h] : NULL, dp ? dp->mlp_2_w[h] : NULL,
                dp ? dp->mlp_2_b[h] : NULL, a->k.pool + o * F, a->k.h1 + o * Hd, a->k.ha + o * Hd, p->mlp_0_w[h],
                p->mlp_2_w[h], (float)dlogit[o], F, Hd, a->dropout_key[b], h);
            disc_ms_head_input_(a, p, ta, b, h, s);
            for (int i = 0; i < dc->n_scales; i++) {
                int k1 = 2 * i, k3 = 2 * i + 1, sc = dc->scales[i];
                Shape4 m1 = a->cout[k1], m3 = a->cin[k3];
                int S3 = (int)shape_voxels(m3);
                const floatX* x3 = disc_ms_branch_forward_(a, p, h, i, 1, s);
                // the 3x3x3 block: d act = d pool / S3 on every voxel (the global mean)
                disc_ms_dconst_kernel<<<(C + 255) / 256, 256, 0, s>>>(w->dc3, w->dpool + (size_t)i * C, C, 1.f / S3);
                disc_ms_norm_backward_(w->dz2, C, w->z2, C, S3, C, disc_ms_norm_(p, dc, h, i, 1, w), NULL, w->dc3,
                                       dp ? dp->norm_w[h][k3] : NULL, dp ? dp->norm_b[h][k3] : NULL,
                                       dp ? dp->conv_b[h][k3] : NULL, w, s);
                if (dp) {
                    disc_ms_conv3_dweight_(w->dw3, w->dz2, x3, w->w3k, m3, w, a->dims.R, s);
                    disc_ms_w3_grad_kernel<<<disc_ms_blocks_((size_t)27 * C * C), 256, 0, s>>>(dp->conv_w[h][k3],
                                                                                               w->dw3, C);
                }
                disc_ms_conv3_(sc > 1 ? w->dp : w->da, w->dz2, w->w3t, m3, w, a->dims.R,
                               s); // d x3: the flipped convolution
                if (sc > 1)
                    disc_ms_avgpool_backward_kernel<<<(unsigned)shape_voxels(m1), disc_ms_row_threads_(C, 1), 0, s>>>(
                        w->da, w->dp, C, m1.T, m1.H, m1.W, sc);
                // the 1x1x1 block's GroupNorm and LeakyReLU: d z1 of this branch, in its columns of dz1
                disc_ms_norm_backward_(w->dz1 + (size_t)i * C, nsC, w->z1 + (size_t)i * C, nsC, S, C,
                                       disc_ms_norm_(p, dc, h, i, 0, w), w->da, NULL, dp ? dp->norm_w[h][k1] : NULL,
                                       dp ? dp->norm_b[h][k1] : NULL, dp ? dp->conv_b[h][k1] : NULL, w, s);
                cudaCheck(cudaGetLastError());
            }
            if (dp) { // every branch's 1x1x1 weight gradient in one GEMM, then into each branch's tensor
                cudaCheck(cudaMemsetAsync(w->dw1, 0, sizeof(float) * nsC * C, s));
                matmul_backward<floatX>(NULL, w->dw1, NULL, NULL, w->dz1, w->x0, w->w1, NULL, S, C, nsC, 0, s);
                for (int i = 0; i < dc->n_scales; i++)
                    disc_ms_add_kernel<<<disc_ms_blocks_((size_t)C * C), 256, 0, s>>>(
                        dp->conv_w[h][2 * i], w->dw1 + (size_t)i * C * C, (size_t)C * C);
            }
            if (dfe) { // d x0 = d z1 · W1 (into a1, free by now), then back to the feature's token layout
                matmul_backward<floatX>(w->a1, NULL, NULL, NULL, w->dz1, w->x0, w->w1, NULL, S, C, nsC, 0, s);
                disc_ms_patchify_add_kernel<<<S, disc_ms_row_threads_(C, 1), 0, s>>>(dfe + b * LD, w->a1, C, a->x0s.H,
                                                                                     a->x0s.W, a->pt, a->ph, a->pw);
            }
            cudaCheck(cudaGetLastError());
        }
}

// logits of every head on every sample of the teacher activations `ta` (features at residual levels layers[h] + 1);
// the host copy a->logit[b·n_heads + h] is ready on return (one synchronisation)
static void disc_gpu_forward(DiscGpuAct* a, const DiscParamsF* p, const DiscConfig* dc, const WanGpuAct* ta) {
    cudaStream_t s = ta->stream;
    const int prof = bench_prof_begin(PROF_DISC, s); // --bench: the discriminator's class (its GEMMs fold into it)
    if (dc->kind == DISC_MULTISCALE)
        disc_gpu_ms_forward_(a, p, dc, ta);
    else
        disc_gpu_strided_forward_(a, p, dc, ta);
    bench_prof_end(prof, 0, s);
    float lf[TMD_MAX_BATCH * DISC_MAX_HEADS];
    size_t nl = (size_t)a->B * dc->n_heads;
    cudaCheck(cudaMemcpyAsync(lf, dc->kind == DISC_MULTISCALE ? a->k.logit_d : a->logit_d, sizeof(float) * nl,
                              cudaMemcpyDeviceToHost, s));
    cudaCheck(cudaStreamSynchronize(s));
    for (size_t i = 0; i < nl; i++) a->logit[i] = lf[i];
}
// dlogit[b·n_heads + h] → dp (+=, NULL: parameter gradients are not computed) and the feature gradients
// dfeat[layers[h] + 1] [B, L, D] (+=, the array or its entries may be NULL: not computed)
static void disc_gpu_backward(DiscParamsF* dp, float* const* dfeat, const double* dlogit, DiscGpuAct* a,
                              const DiscParamsF* p, const DiscConfig* dc, const WanGpuAct* ta) {
    const int prof = bench_prof_begin(PROF_DISC, ta->stream);
    if (dc->kind == DISC_MULTISCALE)
        disc_gpu_ms_backward_(dp, dfeat, dlogit, a, p, dc, ta);
    else
        disc_gpu_strided_backward_(dp, dfeat, dlogit, a, p, dc, ta);
    bench_prof_end(prof, 0, ta->stream);
}
