// gpu/disc_gpu.cuh: the DMD2-v discriminator heads on the GPU (paper App. A.3, Table 3's "Conv3D" head). Mirrors
// cpu/disc_cpu.h name for name (disc_gpu_carve ↔ disc_carve, disc_gpu_forward ↔ disc_forward, ...), which is its
// oracle (gpu/tmd_gpu_tests.cuh). One head per frozen-teacher feature layer: unpatchify [L, D] → [C0, T, H, W],
// 4 × (Conv3d, GroupNorm, LeakyReLU 0.2), average pool, Linear, LeakyReLU, Linear → one logit.
//
// Precision: fp32 throughout (parameters, activations, gradients): the heads are small next to the DiT and their
// GEMM-free direct convolutions gain nothing from bf16 here. Kernels are the simple ones: one thread per output
// element for the convolutions (forward, input gradient and weight gradient each a gather, so no atomics), one block
// per GroupNorm group with a fixed-order tree reduction; deterministic, not fast (a Wan-scale run would want
// implicit-GEMM convolutions). Samples run one after another; parameter gradients accumulate (+=) sample by sample.
// Every forward overwrites its outputs; every backward accumulates (+=) into parameter and feature gradients.
#pragma once
#include "wan_gpu.cuh"
#include "../cpu/disc_cpu.h"

// DiscParams' fp32 twin over device memory, carved in disc_carve's order
typedef struct {
    float *conv_w[DISC_MAX_HEADS][DISC_CONVS], *conv_b[DISC_MAX_HEADS][DISC_CONVS];
    float *norm_w[DISC_MAX_HEADS][DISC_CONVS], *norm_b[DISC_MAX_HEADS][DISC_CONVS];
    float *mlp_0_w[DISC_MAX_HEADS], *mlp_0_b[DISC_MAX_HEADS], *mlp_2_w[DISC_MAX_HEADS], *mlp_2_b[DISC_MAX_HEADS];
} DiscParamsF;

static size_t disc_gpu_carve(const DiscConfig* dc, DiscParamsF* p, float* base) {
    size_t off = 0;
#define DISC_GPU_TAKE_(field, n) do { p->field = base + off; off += (size_t)(n); } while (0)
    for (int h = 0; h < dc->n_heads; h++) {
        for (int k = 0; k < DISC_CONVS; k++) {
            int ic = disc_conv_in(dc, k), oc = dc->width[k];
            DISC_GPU_TAKE_(conv_w[h][k], (size_t)oc * ic * DISC_KERNEL[k][0] * DISC_KERNEL[k][1] * DISC_KERNEL[k][2]);
            DISC_GPU_TAKE_(conv_b[h][k], oc); DISC_GPU_TAKE_(norm_w[h][k], oc); DISC_GPU_TAKE_(norm_b[h][k], oc);
        }
        DISC_GPU_TAKE_(mlp_0_w[h], (size_t)dc->hidden * dc->width[DISC_CONVS - 1]); DISC_GPU_TAKE_(mlp_0_b[h], dc->hidden);
        DISC_GPU_TAKE_(mlp_2_w[h], dc->hidden); DISC_GPU_TAKE_(mlp_2_b[h], 1);
    }
#undef DISC_GPU_TAKE_
    return off;
}

// the heads' parameters and their gradients (fp32, one allocation each). No optimizer state yet.
typedef struct { DiscConfig dc; size_t n; float *params, *grads; DiscParamsF P, dP; } DiscGpuModel;

// host_params [disc_num_params] fp32 in disc_carve's order (NULL: zeros)
static void disc_gpu_model_init(DiscGpuModel* m, const DiscConfig* dc, const float* host_params) {
    memset(m, 0, sizeof(*m));
    m->dc = *dc; m->n = disc_num_params(dc);
    m->params = (float*)cuda_malloc_named(sizeof(float) * (m->n ? m->n : 1), "discriminator parameters", WAN_GPU_OOM_HINT);
    m->grads = (float*)cuda_malloc_named(sizeof(float) * (m->n ? m->n : 1), "discriminator gradients", WAN_GPU_OOM_HINT);
    if (host_params) cudaCheck(cudaMemcpy(m->params, host_params, sizeof(float) * m->n, cudaMemcpyHostToDevice));
    else cudaCheck(cudaMemset(m->params, 0, sizeof(float) * m->n));
    cudaCheck(cudaMemset(m->grads, 0, sizeof(float) * m->n));
    disc_gpu_carve(dc, &m->P, m->params); disc_gpu_carve(dc, &m->dP, m->grads);
    printf("discriminator: %d heads on teacher blocks", dc->n_heads);
    for (int h = 0; h < dc->n_heads; h++) printf(" %d", dc->layers[h]);
    printf(", %.3fM parameters, %.1f MiB (fp32 weights and gradients)\n", m->n / 1e6, 2.0 * sizeof(float) * m->n / (1 << 20));
}
static void disc_gpu_model_free(DiscGpuModel* m) { cudaCheck(cudaFree(m->params)); cudaCheck(cudaFree(m->grads)); }

// ---------------------------------------------------------------------------------------------------------
// layers (channels-first [C, T, H, W], one sample)

typedef struct { int IC, T, H, W, OC, OT, OH, OW, k0, k1, k2, s0, s1, s2; } DiscConvGeom;
static DiscConvGeom disc_conv_geom_(Shape4 in, Shape4 o, int k) {
    DiscConvGeom g = {in.C, in.T, in.H, in.W, o.C, o.T, o.H, o.W, DISC_KERNEL[k][0], DISC_KERNEL[k][1], DISC_KERNEL[k][2],
                      DISC_STRIDE[k][0], DISC_STRIDE[k][1], DISC_STRIDE[k][2]};
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
__global__ void disc_conv_backward_params_kernel(float* dw, float* db, const float* dout, const float* inp, DiscConvGeom g) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    size_t nw = (size_t)g.OC * g.IC * g.k0 * g.k1 * g.k2;
    if (idx >= nw + g.OC) return;
    if (idx >= nw) {
        int o = (int)(idx - nw); size_t S = (size_t)g.OT * g.OH * g.OW; float s = 0;
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
                s += dout[(((size_t)o * g.OT + t) * g.OH + i) * g.OW + j] * inp[(((size_t)c * g.T + ti) * g.H + hi) * g.W + wi];
            }
        }
    }
    dw[idx] += s;
}

// a fixed-order tree sum over the block (blockDim.x = 256); every thread gets the total
__device__ float disc_block_sum_(float v, float* sh) {
    sh[threadIdx.x] = v; __syncthreads();
    for (int st = blockDim.x / 2; st > 0; st /= 2) { if ((int)threadIdx.x < st) sh[threadIdx.x] += sh[threadIdx.x + st]; __syncthreads(); }
    float r = sh[0]; __syncthreads();
    return r;
}
// groupnorm_forward: one block per group
__global__ void disc_groupnorm_forward_kernel(float* out, float* xhat, float* mean, float* rstd, const float* inp, const float* w,
                                              const float* b, int C, int S, int G) {
    __shared__ float sh[256];
    int g = blockIdx.x, cg = C / G; size_t n = (size_t)cg * S, base = (size_t)g * n;
    float s = 0;
    for (size_t i = threadIdx.x; i < n; i += blockDim.x) s += inp[base + i];
    float m = disc_block_sum_(s, sh) / n;
    float v = 0;
    for (size_t i = threadIdx.x; i < n; i += blockDim.x) { float d = inp[base + i] - m; v += d * d; }
    float rs = 1.0f / sqrtf(disc_block_sum_(v, sh) / n + 1e-5f);
    if (threadIdx.x == 0) { mean[g] = m; rstd[g] = rs; }
    for (size_t i = threadIdx.x; i < n; i += blockDim.x) {
        int c = g * cg + (int)(i / S);
        float xh = (inp[base + i] - m) * rs;
        xhat[base + i] = xh; out[base + i] = xh * w[c] + b[c];
    }
}
// groupnorm_backward's input gradient: one block per group (OVERWRITES dinp)
__global__ void disc_groupnorm_backward_input_kernel(float* dinp, const float* dout, const float* xhat, const float* rstd, const float* w,
                                                     int C, int S, int G) {
    __shared__ float sh[256];
    int g = blockIdx.x, cg = C / G; size_t n = (size_t)cg * S, base = (size_t)g * n;
    float sd = 0, sdx = 0;
    for (size_t i = threadIdx.x; i < n; i += blockDim.x) { float dx = dout[base + i] * w[g * cg + (int)(i / S)]; sd += dx; sdx += dx * xhat[base + i]; }
    sd = disc_block_sum_(sd, sh); sdx = disc_block_sum_(sdx, sh);
    for (size_t i = threadIdx.x; i < n; i += blockDim.x) {
        float dx = dout[base + i] * w[g * cg + (int)(i / S)];
        dinp[base + i] = rstd[g] * (dx - sd / n - xhat[base + i] * sdx / n);
    }
}
// groupnorm_backward's affine gradients: one thread per channel (+=)
__global__ void disc_groupnorm_backward_params_kernel(float* dw, float* db, const float* dout, const float* xhat, int C, int S) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float sw = 0, sb = 0;
    for (int i = 0; i < S; i++) { float d = dout[(size_t)c * S + i]; sw += d * xhat[(size_t)c * S + i]; sb += d; }
    dw[c] += sw; db[c] += sb;
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
// its backward: g[c, i] = dpool[c] / S (OVERWRITES g)
__global__ void disc_pool_backward_kernel(float* g, const float* dpool, int C, int S) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < (size_t)C * S) g[i] = dpool[i / S] / S;
}
// the MLP: h1 = W0·pool + b0, a1 = LeakyReLU(h1), logit = w2·a1 + b2 (one block)
__global__ void disc_mlp_forward_kernel(float* h1, float* a1, float* logit, const float* pool, const float* w0, const float* b0,
                                        const float* w2, const float* b2, int C4, int hidden) {
    for (int j = threadIdx.x; j < hidden; j += blockDim.x) {
        float s = b0[j];
        for (int c = 0; c < C4; c++) s += w0[(size_t)j * C4 + c] * pool[c];
        h1[j] = s; a1[j] = s > 0 ? s : (float)LEAKY_SLOPE * s;
    }
    __syncthreads();
    if (threadIdx.x == 0) { float z = b2[0]; for (int i = 0; i < hidden; i++) z += w2[i] * a1[i]; *logit = z; }
}
// its backward from d logit = gz: parameter gradients (+=; dw0 NULL: skipped), dh1 scratch [hidden], dpool [C4] (one block)
__global__ void disc_mlp_backward_kernel(float* dpool, float* dh1, float* dw0, float* db0, float* dw2, float* db2, const float* pool,
                                         const float* h1, const float* a1, const float* w0, const float* w2, float gz, int C4, int hidden) {
    for (int i = threadIdx.x; i < hidden; i += blockDim.x) {
        if (dw2) dw2[i] += gz * a1[i];
        float d = gz * w2[i];
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
// the heads

typedef struct {
    int B; DiscConfig dc;
    Shape4 shp[DISC_CONVS + 1];                    // as DiscAct
    PatchGrid pg;                                  // one sample's feature grid: C = C0, P = D
    float *x0[DISC_MAX_HEADS];                     // [B, C0, T, H, W]
    float *z[DISC_MAX_HEADS][DISC_CONVS], *xh[DISC_MAX_HEADS][DISC_CONVS], *nrm[DISC_MAX_HEADS][DISC_CONVS];
    float *mean[DISC_MAX_HEADS][DISC_CONVS], *rstd[DISC_MAX_HEADS][DISC_CONVS];
    float *act[DISC_MAX_HEADS][DISC_CONVS];        // [B, ...] each
    float *pool[DISC_MAX_HEADS], *h1[DISC_MAX_HEADS], *a1[DISC_MAX_HEADS];
    float* logit_d;                                // [B, n_heads] device
    double logit[TMD_MAX_BATCH * DISC_MAX_HEADS];  // [B, n_heads] host copy after disc_gpu_forward
    float *gcur, *gtmp, *gin, *dh1, *dpool, *dfe;  // backward scratch (one sample)
    float* base;
} DiscGpuAct;

static float* disc_gpu_take_(float* base, size_t* off, size_t n) { float* p = base ? base + *off : NULL; *off += (n + 63) / 64 * 64; return p; }
static size_t disc_gpu_act_carve_(DiscGpuAct* a, float* base, size_t LD) {
    size_t off = 0, B = a->B; const DiscConfig* dc = &a->dc;
    size_t big = shape_numel(a->shp[0]);
    for (int k = 1; k <= DISC_CONVS; k++) if (shape_numel(a->shp[k]) > big) big = shape_numel(a->shp[k]);
    for (int h = 0; h < dc->n_heads; h++) {
        a->x0[h] = disc_gpu_take_(base, &off, B * shape_numel(a->shp[0]));
        for (int k = 0; k < DISC_CONVS; k++) {
            size_t n = B * shape_numel(a->shp[k + 1]), G = B * disc_groups(dc->width[k]);
            a->z[h][k] = disc_gpu_take_(base, &off, n); a->xh[h][k] = disc_gpu_take_(base, &off, n);
            a->nrm[h][k] = disc_gpu_take_(base, &off, n); a->act[h][k] = disc_gpu_take_(base, &off, n);
            a->mean[h][k] = disc_gpu_take_(base, &off, G); a->rstd[h][k] = disc_gpu_take_(base, &off, G);
        }
        a->pool[h] = disc_gpu_take_(base, &off, B * dc->width[DISC_CONVS - 1]);
        a->h1[h] = disc_gpu_take_(base, &off, B * dc->hidden); a->a1[h] = disc_gpu_take_(base, &off, B * dc->hidden);
    }
    a->logit_d = disc_gpu_take_(base, &off, B * DISC_MAX_HEADS);
    a->gcur = disc_gpu_take_(base, &off, big); a->gtmp = disc_gpu_take_(base, &off, big); a->gin = disc_gpu_take_(base, &off, big);
    a->dh1 = disc_gpu_take_(base, &off, dc->hidden); a->dpool = disc_gpu_take_(base, &off, dc->width[DISC_CONVS - 1]);
    a->dfe = disc_gpu_take_(base, &off, LD);
    return off;
}
// plans the heads' activations for B samples of the teacher activations ta's grid
static void disc_gpu_act_init(DiscGpuAct* a, const DiscConfig* dc, const WanGpuAct* ta) {
    memset(a, 0, sizeof(*a));
    const WanConfig* c = &ta->cfg;
    if (ta->B > TMD_MAX_BATCH) { fprintf(stderr, "discriminator: batch %d > %d; lower --batch\n", ta->B, TMD_MAX_BATCH); exit(1); }
    a->B = ta->B; a->dc = *dc;
    a->shp[0] = (Shape4){dc->in_ch, ta->g.T, ta->g.Hl, ta->g.Wl};
    for (int k = 0; k < DISC_CONVS; k++) a->shp[k + 1] = conv_out_shape(a->shp[k], dc->width[k], DISC_KERNEL[k], DISC_STRIDE[k]);
    a->pg = patch_grid(1, dc->in_ch, ta->g.T, ta->g.Hl, ta->g.Wl, c->patch[0], c->patch[1], c->patch[2]);
    size_t LD = (size_t)ta->g.L * c->dim, n = disc_gpu_act_carve_(a, NULL, LD);
    a->base = (float*)cuda_malloc_named(sizeof(float) * n, "discriminator activations", WAN_GPU_OOM_HINT);
    disc_gpu_act_carve_(a, a->base, LD);
}
static void disc_gpu_act_free(DiscGpuAct* a) { cudaCheck(cudaFree(a->base)); }

// logits of every head on every sample of the teacher activations `ta` (features at residual levels layers[h] + 1);
// the host copy a->logit[b·n_heads + h] is ready on return (one synchronisation)
static void disc_gpu_forward(DiscGpuAct* a, const DiscParamsF* p, const DiscConfig* dc, const WanGpuAct* ta) {
    cudaStream_t s = ta->stream; size_t LD = (size_t)ta->g.L * ta->cfg.dim;
    for (int b = 0; b < a->B; b++)
        for (int h = 0; h < dc->n_heads; h++) {
            float* x0 = a->x0[h] + b * shape_numel(a->shp[0]);
            unpatchify_forward<float>(x0, wan_gpu_xs(ta, dc->layers[h] + 1) + b * LD, a->pg, s);
            const float* x = x0;
            for (int k = 0; k < DISC_CONVS; k++) {
                Shape4 o = a->shp[k + 1]; size_t n = shape_numel(o), S = (size_t)o.T * o.H * o.W; int G = disc_groups(o.C);
                float *z = a->z[h][k] + b * n, *xh = a->xh[h][k] + b * n, *nrm = a->nrm[h][k] + b * n, *act = a->act[h][k] + b * n;
                disc_conv_forward_kernel<<<disc_blocks_(n), 256, 0, s>>>(z, x, p->conv_w[h][k], p->conv_b[h][k], disc_conv_geom_(a->shp[k], o, k));
                disc_groupnorm_forward_kernel<<<G, 256, 0, s>>>(nrm, xh, a->mean[h][k] + b * G, a->rstd[h][k] + b * G, z, p->norm_w[h][k],
                                                                p->norm_b[h][k], o.C, (int)S, G);
                disc_leaky_forward_kernel<<<disc_blocks_(n), 256, 0, s>>>(act, nrm, n);
                x = act;
            }
            Shape4 o = a->shp[DISC_CONVS]; int S = o.T * o.H * o.W, C4 = o.C;
            float* pool = a->pool[h] + b * C4;
            disc_pool_forward_kernel<<<disc_blocks_(C4), 256, 0, s>>>(pool, x, C4, S);
            disc_mlp_forward_kernel<<<1, 256, 0, s>>>(a->h1[h] + b * dc->hidden, a->a1[h] + b * dc->hidden, a->logit_d + b * dc->n_heads + h,
                                                      pool, p->mlp_0_w[h], p->mlp_0_b[h], p->mlp_2_w[h], p->mlp_2_b[h], C4, dc->hidden);
            cudaCheck(cudaGetLastError());
        }
    float lf[TMD_MAX_BATCH * DISC_MAX_HEADS];
    size_t nl = (size_t)a->B * dc->n_heads;
    cudaCheck(cudaMemcpyAsync(lf, a->logit_d, sizeof(float) * nl, cudaMemcpyDeviceToHost, s));
    cudaCheck(cudaStreamSynchronize(s));
    for (size_t i = 0; i < nl; i++) a->logit[i] = lf[i];
}

// dlogit[b·n_heads + h] → dp (+=, NULL: parameter gradients are not computed) and the feature gradients
// dfeat[layers[h] + 1] [B, L, D] (+=, the array or its entries may be NULL)
static void disc_gpu_backward(DiscParamsF* dp, float* const* dfeat, const double* dlogit, DiscGpuAct* a, const DiscParamsF* p,
                              const DiscConfig* dc, const WanGpuAct* ta) {
    cudaStream_t s = ta->stream; size_t LD = (size_t)ta->g.L * ta->cfg.dim;
    for (int b = 0; b < a->B; b++)
        for (int h = 0; h < dc->n_heads; h++) {
            Shape4 o = a->shp[DISC_CONVS]; int S = o.T * o.H * o.W, C4 = o.C, Hd = dc->hidden;
            disc_mlp_backward_kernel<<<1, 256, 0, s>>>(a->dpool, a->dh1, dp ? dp->mlp_0_w[h] : NULL, dp ? dp->mlp_0_b[h] : NULL,
                                                       dp ? dp->mlp_2_w[h] : NULL, dp ? dp->mlp_2_b[h] : NULL, a->pool[h] + b * C4,
                                                       a->h1[h] + b * Hd, a->a1[h] + b * Hd, p->mlp_0_w[h], p->mlp_2_w[h],
                                                       (float)dlogit[b * dc->n_heads + h], C4, Hd);
            disc_pool_backward_kernel<<<disc_blocks_((size_t)C4 * S), 256, 0, s>>>(a->gcur, a->dpool, C4, S);
            for (int k = DISC_CONVS - 1; k >= 0; k--) {
                Shape4 ok = a->shp[k + 1]; size_t n = shape_numel(ok), Sk = (size_t)ok.T * ok.H * ok.W; int G = disc_groups(ok.C);
                disc_leaky_backward_kernel<<<disc_blocks_(n), 256, 0, s>>>(a->gtmp, a->gcur, a->nrm[h][k] + b * n, n);   // d nrm
                if (dp) disc_groupnorm_backward_params_kernel<<<disc_blocks_(ok.C), 256, 0, s>>>(dp->norm_w[h][k], dp->norm_b[h][k], a->gtmp,
                                                                                               a->xh[h][k] + b * n, ok.C, (int)Sk);
                disc_groupnorm_backward_input_kernel<<<G, 256, 0, s>>>(a->gcur, a->gtmp, a->xh[h][k] + b * n, a->rstd[h][k] + b * G,
                                                                       p->norm_w[h][k], ok.C, (int)Sk, G);               // d z
                DiscConvGeom cg = disc_conv_geom_(a->shp[k], ok, k);
                const float* xin = k ? a->act[h][k - 1] + b * shape_numel(a->shp[k]) : a->x0[h] + b * shape_numel(a->shp[0]);
                if (dp) {
                    size_t nw = (size_t)cg.OC * cg.IC * cg.k0 * cg.k1 * cg.k2 + cg.OC;
                    disc_conv_backward_params_kernel<<<disc_blocks_(nw), 256, 0, s>>>(dp->conv_w[h][k], dp->conv_b[h][k], a->gcur, xin, cg);
                }
                disc_conv_backward_input_kernel<<<disc_blocks_(shape_numel(a->shp[k])), 256, 0, s>>>(a->gin, a->gcur, p->conv_w[h][k], cg);
                float* t = a->gcur; a->gcur = a->gin; a->gin = t;
            }
            cudaCheck(cudaGetLastError());
            float* dfe = dfeat ? dfeat[dc->layers[h] + 1] : NULL;
            if (dfe) {
                unpatchify_backward<float>(a->dfe, a->gcur, a->pg, s);
                wan_gpu_add<float>(dfe + b * LD, a->dfe, LD, s);
            }
        }
}
