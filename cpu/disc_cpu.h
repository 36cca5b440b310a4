// cpu/disc_cpu.h: the DMD2-v discriminator on the CPU reference (paper App. A.3 and Table 7: "Conv3D" heads on the
// frozen teacher's features). One head per feature layer; a head reads the DiT's residual stream [L, D] unpatchified to
// [C0, T, H, W], C0 = D / (p_t·p_h·p_w) (the latent grid; FastGen's _unpatchify_features order). Two head kinds,
// both from NVlabs/FastGen fastgen/networks/discriminators.py (read for facts, commit 34f30e8):
//
// DISC_MULTISCALE (the default at Wan scale): FastGen's "multiscale_down_mlp_large", the head every FastGen Wan T2V
// DMD2 config selects (disc_type = "multiscale_down_mlp_large", feature_indices [15, 22, 29]);
// _build_dit_multiscale_discriminator_head with scales (1, 2, 4, 8, 16), channel_reduction 1, mlp_hidden_dim 1024.
// Per scale s a branch: Conv3d 1x1x1 (C0→C0), GroupNorm, LeakyReLU 0.2, AvgPool3d(kernel = stride = s) when s > 1
// (PyTorch's defaults: no padding, floor mode, so an axis of length n keeps floor(n/s) cells and its remainder is
// dropped; an axis shorter than s is an error in PyTorch), Conv3d 3x3x3 padding 1 (C0→C0), GroupNorm, LeakyReLU 0.2,
// global average pool to [C0]. The branches' vectors concatenated [n_s·C0] → Linear → LeakyReLU 0.2 → Dropout 0.1 →
// Linear → the head's logit. At 1.3B (C0 = 384) one head has 22.62M parameters, three 67.87M: the paper's "68M".
// At 14B (C0 = 1280) three heads have 707.9M, which is not the paper's 172M (no FastGen head gives 172M at C0 = 1280;
// this is what the program builds and prints). Scales longer than the grid's shortest axis are left out (a tiny or
// world grid: T = 4 or 9 latent frames), so the parameter count there depends on the grid (disc_config_multiscale).
// Dropout: FastGen puts the discriminator in train() for the critic step and eval() for the student step
// (fastgen/methods/distribution_matching/dmd2.py _setup_grad_requirements), so the mask is drawn only in the critic
// step: DiscAct.dropout_key != 0 draws it from Philox (lib/philox.h philox_words, the same bits on CPU and GPU).
//
// DISC_STRIDED (--disc-head strided): FastGen's "conv3d_down_mlp", _build_dit_conv3d_discriminator_head:
//   4 × (Conv3d, GroupNorm, LeakyReLU 0.2), adaptive average pool to [C4], Linear C4→hidden, LeakyReLU 0.2, Linear→1
// conv 1 kernel (3,4,4) stride (1,2,2), conv 2 kernel (3,4,4) stride 2, convs 3 and 4 kernel 3 stride 2, padding 1.
// At 1.3B (widths 512, 512, 1024, 1024, hidden 512) one head has 65.0M parameters, three 195.1M.
//
// GroupNorm groups (FastGen's _get_optimal_groups): max(1, C/4) up to 32 channels, else the largest divisor of C that
// is <= 32 (384 and 1280: 32). Every forward overwrites its outputs; every backward accumulates (+=).
#pragma once
#include "wan_cpu.h"
#include "../lib/rng.h"
#include "../lib/philox.h"   // philox_words: the dropout mask's bits

#define DISC_MAX_HEADS 8
#define DISC_CONVS 4          // the strided head's convolutions
#define DISC_MAX_SCALES 5     // the multiscale head's branches (scales 1, 2, 4, 8, 16)
#define DISC_MAX_CONVS 10     // convolutions per head: 4 (strided) or 2 per branch (multiscale)
#define DISC_DROPOUT 0.1      // the multiscale head's Dropout(0.1) before the last Linear

enum { DISC_STRIDED = 0, DISC_MULTISCALE = 1 };

typedef struct {
    int kind;                                 // DISC_STRIDED or DISC_MULTISCALE
    int n_heads; int layers[DISC_MAX_HEADS];  // teacher blocks whose output feeds each head
    int in_ch;                                // C0 = D / (p_t·p_h·p_w)
    int width[DISC_CONVS];                    // strided: output channels of the four convolutions
    int n_scales, scales[DISC_MAX_SCALES];    // multiscale: the branches' pooling scales
    int hidden;                               // MLP hidden width
} DiscConfig;

static const int DISC_KERNEL[DISC_CONVS][3] = {{3, 4, 4}, {3, 4, 4}, {3, 3, 3}, {3, 3, 3}};
static const int DISC_STRIDE[DISC_CONVS][3] = {{1, 2, 2}, {2, 2, 2}, {2, 2, 2}, {2, 2, 2}};
#define DISC_PAD 1
static const int DISC_K1[3] = {1, 1, 1}, DISC_K3[3] = {3, 3, 3}, DISC_S1[3] = {1, 1, 1};

static int disc_groups(int C) {
    if (C <= 32) return C / 4 > 1 ? C / 4 : 1;
    int g = 32; while (g > 1 && C % g) g--;
    return g;
}

// the feature layers per preset: Table 7 lists (15, 22, 29) for 1.3B (30 blocks) and (19, 29, 39) for 14B (40
// blocks); any other depth scales the 1.3B choice (half, ~3/4 and the last block), without duplicates. Returns n.
static int disc_layers_for(int num_layers, int* layers) {
    if (num_layers == 30) { layers[0] = 15; layers[1] = 22; layers[2] = 29; return 3; }
    if (num_layers == 40) { layers[0] = 19; layers[1] = 29; layers[2] = 39; return 3; }
    int want[3] = {(15 * num_layers) / 30, (22 * num_layers) / 30, num_layers - 1}, n = 0;
    for (int i = 0; i < 3; i++) {
        int dup = 0;
        for (int j = 0; j < n; j++) dup |= layers[j] == want[i];
        if (!dup) layers[n++] = want[i];
    }
    return n;
}

// the strided head for `c` with the given widths: in_ch from the patch, layers from the table above
static DiscConfig disc_config(const WanConfig* c, int w1, int w2, int w3, int w4, int hidden) {
    DiscConfig d; memset(&d, 0, sizeof(d));
    d.kind = DISC_STRIDED;
    d.n_heads = disc_layers_for(c->num_layers, d.layers);
    d.in_ch = c->dim / wan_patch_numel(c);
    d.width[0] = w1; d.width[1] = w2; d.width[2] = w3; d.width[3] = w4; d.hidden = hidden;
    return d;
}
// the multiscale head for `c` on a latent grid T x Hl x Wl: FastGen's scales 1, 2, 4, 8, 16, those longer than the
// grid's shortest axis left out (AvgPool3d cannot pool an axis shorter than its kernel); hidden 1024 is FastGen's
static DiscConfig disc_config_multiscale(const WanConfig* c, int hidden, int T, int Hl, int Wl) {
    DiscConfig d; memset(&d, 0, sizeof(d));
    d.kind = DISC_MULTISCALE;
    d.n_heads = disc_layers_for(c->num_layers, d.layers);
    d.in_ch = c->dim / wan_patch_numel(c);
    int m = T < Hl ? T : Hl; if (Wl < m) m = Wl;
    for (int s = 1; s <= 16 && s <= m; s *= 2) d.scales[d.n_scales++] = s;
    d.hidden = hidden;
    return d;
}
// whether every FastGen scale fits the grid (the default head's rule, train_tmd --disc-head auto)
static int disc_multiscale_fits(int T, int Hl, int Wl) { return T >= 16 && Hl >= 16 && Wl >= 16; }

// the convolutions of a head, k = 0 .. disc_n_convs − 1: strided k; multiscale branch k/2, its 1x1x1 (k even) or
// 3x3x3 (k odd) convolution
static int disc_n_convs(const DiscConfig* dc) { return dc->kind == DISC_MULTISCALE ? 2 * dc->n_scales : DISC_CONVS; }
static int disc_conv_in(const DiscConfig* dc, int k) {
    return dc->kind == DISC_MULTISCALE || k == 0 ? dc->in_ch : dc->width[k - 1];
}
static int disc_conv_out(const DiscConfig* dc, int k) { return dc->kind == DISC_MULTISCALE ? dc->in_ch : dc->width[k]; }
static const int* disc_conv_kernel(const DiscConfig* dc, int k) {
    return dc->kind == DISC_MULTISCALE ? (k % 2 ? DISC_K3 : DISC_K1) : DISC_KERNEL[k];
}
static const int* disc_conv_stride(const DiscConfig* dc, int k) { return dc->kind == DISC_MULTISCALE ? DISC_S1 : DISC_STRIDE[k]; }
static int disc_conv_pad(const DiscConfig* dc, int k) { return dc->kind == DISC_MULTISCALE ? k % 2 : DISC_PAD; }
static size_t disc_conv_numel(const DiscConfig* dc, int k) {   // the weight's [OC, IC, kt, kh, kw]
    const int* kk = disc_conv_kernel(dc, k);
    return (size_t)disc_conv_out(dc, k) * disc_conv_in(dc, k) * kk[0] * kk[1] * kk[2];
}
// the MLP's input width: the strided head's last width, or the multiscale head's concatenated branches
static int disc_feat_dim(const DiscConfig* dc) {
    return dc->kind == DISC_MULTISCALE ? dc->n_scales * dc->in_ch : dc->width[DISC_CONVS - 1];
}
static const char* disc_kind_name(const DiscConfig* dc) {
    return dc->kind == DISC_MULTISCALE ? "multiscale (FastGen multiscale_down_mlp_large)" : "strided Conv3D (FastGen conv3d_down_mlp)";
}

typedef struct {
    real *conv_w[DISC_MAX_HEADS][DISC_MAX_CONVS];  // [OC, IC, kt, kh, kw]
    real *conv_b[DISC_MAX_HEADS][DISC_MAX_CONVS];  // [OC]
    real *norm_w[DISC_MAX_HEADS][DISC_MAX_CONVS];  // [OC] GroupNorm affine
    real *norm_b[DISC_MAX_HEADS][DISC_MAX_CONVS];  // [OC]
    real *mlp_0_w[DISC_MAX_HEADS];                 // [hidden, feat_dim]
    real *mlp_0_b[DISC_MAX_HEADS];                 // [hidden]
    real *mlp_2_w[DISC_MAX_HEADS];                 // [1, hidden]
    real *mlp_2_b[DISC_MAX_HEADS];                 // [1]
} DiscParams;

// carves the parameters out of base (NULL: count only); returns the number of parameters of all heads. Per head, in
// FastGen's module order: each convolution's weight and bias, then its GroupNorm's (strided: conv 0..3; multiscale:
// scale_branches.i.0 and .4 with their GroupNorms .1 and .5), then the MLP (mlp.0, mlp.2 / classifier.0, classifier.3)
static size_t disc_carve(const DiscConfig* dc, DiscParams* p, real* base) {
    size_t off = 0;
#define DISC_TAKE_(field, n) do { if (p) p->field = base + off; off += (size_t)(n); } while (0)
    for (int h = 0; h < dc->n_heads; h++) {
        for (int k = 0; k < disc_n_convs(dc); k++) {
            int oc = disc_conv_out(dc, k);
            DISC_TAKE_(conv_w[h][k], disc_conv_numel(dc, k));
            DISC_TAKE_(conv_b[h][k], oc); DISC_TAKE_(norm_w[h][k], oc); DISC_TAKE_(norm_b[h][k], oc);
        }
        DISC_TAKE_(mlp_0_w[h], (size_t)dc->hidden * disc_feat_dim(dc)); DISC_TAKE_(mlp_0_b[h], dc->hidden);
        DISC_TAKE_(mlp_2_w[h], dc->hidden); DISC_TAKE_(mlp_2_b[h], 1);
    }
#undef DISC_TAKE_
    return off;
}
static size_t disc_num_params(const DiscConfig* dc) { return disc_carve(dc, NULL, NULL); }

// PyTorch's default initialisation for Conv3d and Linear (uniform ±1/sqrt(fan_in) for weights and biases);
// GroupNorm weight 1, bias 0
static void disc_init(const DiscConfig* dc, real* buf, uint64_t seed) {
    DiscParams p; size_t n = disc_carve(dc, &p, buf);
    memset(buf, 0, sizeof(real) * n);
    Rng r = rng_make(seed);
#define DISC_UNIF_(ptr, n, fan)                                                                                        \
    do {                                                                                                               \
        double a_ = 1 / sqrt((double)(fan));                                                                           \
        for (size_t i_ = 0; i_ < (size_t)(n); i_++) (ptr)[i_] = a_ * (2 * rng_uniform(&r) - 1);                        \
    } while (0)
    for (int h = 0; h < dc->n_heads; h++) {
        for (int k = 0; k < disc_n_convs(dc); k++) {
            int oc = disc_conv_out(dc, k); size_t nw = disc_conv_numel(dc, k), fan = nw / oc;
            DISC_UNIF_(p.conv_w[h][k], nw, fan); DISC_UNIF_(p.conv_b[h][k], oc, fan);
            for (int i = 0; i < oc; i++) p.norm_w[h][k][i] = 1;
        }
        int f = disc_feat_dim(dc);
        DISC_UNIF_(p.mlp_0_w[h], (size_t)dc->hidden * f, f); DISC_UNIF_(p.mlp_0_b[h], dc->hidden, f);
        DISC_UNIF_(p.mlp_2_w[h], dc->hidden, dc->hidden); DISC_UNIF_(p.mlp_2_b[h], 1, dc->hidden);
    }
#undef DISC_UNIF_
}

// the dropout factor of hidden unit j of head h for a forward keyed `key` (0: eval mode, every factor 1): 0 with
// probability DISC_DROPOUT, else 1/(1 − DISC_DROPOUT) (PyTorch's inverted dropout). Philox word 0 of counter
// (j, h, 0, 0) under the key; the same function on the GPU.
static PHILOX_HD inline double disc_dropout_factor(uint64_t key, int h, int j) {
    if (!key) return 1;
    uint32_t ctr[4] = {(uint32_t)j, (uint32_t)h, 0, 0}, w[4];
    philox_words(w, ctr, key);
    return w[0] < (uint32_t)(DISC_DROPOUT * 4294967296.0) ? 0.0 : 1.0 / (1.0 - DISC_DROPOUT);
}

// the critic step's dropout key for one sample's real (is_real = 1) or fake features: a function of the step's sampled
// time t (drawn from the run's checkpointed generator, so a resumed run draws the same masks), never 0 (eval mode)
static PHILOX_HD inline uint64_t disc_dropout_key_for(double t, int is_real) {
    uint64_t b; memcpy(&b, &t, sizeof(b));
    uint64_t z = b + (is_real ? 0xD1B54A32D192ED03ull : 0x9E3779B97F4A7C15ull);   // splitmix64's finaliser
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull; z = (z ^ (z >> 27)) * 0x94D049BB133111EBull; z ^= z >> 31;
    return z ? z : 1;
}

// ---------------------------------------------------------------------------------------------------------
// layers (channels-first [C, T, H, W])

typedef struct { int C, T, H, W; } Shape4;
static size_t shape_numel(Shape4 s) { return (size_t)s.C * s.T * s.H * s.W; }
static size_t shape_voxels(Shape4 s) { return (size_t)s.T * s.H * s.W; }
static Shape4 conv_out_shape(Shape4 in, int oc, const int* k, const int* st, int pad) {
    Shape4 o = {oc, (in.T + 2 * pad - k[0]) / st[0] + 1, (in.H + 2 * pad - k[1]) / st[1] + 1,
                (in.W + 2 * pad - k[2]) / st[2] + 1};
    return o;
}

// out[o, t, i, j] = b[o] + Σ_{c, a, b, e} w[o, c, a, b, e]·inp[c, t·st0 − pad + a, i·st1 − pad + b, j·st2 − pad + e]
// (zero padding)
static void conv3ds_forward(real* out, const real* inp, const real* w, const real* b, Shape4 in, Shape4 os,
                            const int* k, const int* st, int pad) {
    int IC = in.C;
    for (int o = 0; o < os.C; o++)
        for (int t = 0; t < os.T; t++)
            for (int i = 0; i < os.H; i++)
                for (int j = 0; j < os.W; j++) {
                    double s = b[o];
                    for (int c = 0; c < IC; c++)
                        for (int a = 0; a < k[0]; a++) {
                            int ti = t * st[0] - pad + a;
                            if (ti < 0 || ti >= in.T) continue;
                            for (int bb = 0; bb < k[1]; bb++) {
                                int hi = i * st[1] - pad + bb;
                                if (hi < 0 || hi >= in.H) continue;
                                const real* wr = w + ((((size_t)o * IC + c) * k[0] + a) * k[1] + bb) * k[2];
                                const real* xr = inp + (((size_t)c * in.T + ti) * in.H + hi) * in.W;
                                for (int e = 0; e < k[2]; e++) {
                                    int wi = j * st[2] - pad + e;
                                    if (wi >= 0 && wi < in.W) s += wr[e] * xr[wi];
                                }
                            }
                        }
                    out[(((size_t)o * os.T + t) * os.H + i) * os.W + j] = s;
                }
}
// backward of the line above: dinp (+=, may be NULL), dw (+=), db (+=)
static void conv3ds_backward(real* dinp, real* dw, real* db, const real* dout, const real* inp, const real* w,
                             Shape4 in, Shape4 os, const int* k, const int* st, int pad) {
    int IC = in.C;
    for (int o = 0; o < os.C; o++)
        for (int t = 0; t < os.T; t++)
            for (int i = 0; i < os.H; i++)
                for (int j = 0; j < os.W; j++) {
                    double g = dout[(((size_t)o * os.T + t) * os.H + i) * os.W + j];
                    if (g == 0) continue;
                    db[o] += g;
                    for (int c = 0; c < IC; c++)
                        for (int a = 0; a < k[0]; a++) {
                            int ti = t * st[0] - pad + a;
                            if (ti < 0 || ti >= in.T) continue;
                            for (int bb = 0; bb < k[1]; bb++) {
                                int hi = i * st[1] - pad + bb;
                                if (hi < 0 || hi >= in.H) continue;
                                size_t wo = ((((size_t)o * IC + c) * k[0] + a) * k[1] + bb) * k[2],
                                       xo = (((size_t)c * in.T + ti) * in.H + hi) * in.W;
                                for (int e = 0; e < k[2]; e++) {
                                    int wi = j * st[2] - pad + e;
                                    if (wi < 0 || wi >= in.W) continue;
                                    dw[wo + e] += g * inp[xo + wi];
                                    if (dinp) dinp[xo + wi] += g * w[wo + e];
                                }
                            }
                        }
                }
}

// AvgPool3d(kernel = stride = s), no padding, floor mode: out [C, T/s, H/s, W/s] (integer division: the remainder of
// each axis is not read), out = mean of the s³ cell
static void avgpool3d_forward(real* out, const real* inp, Shape4 in, int s) {
    Shape4 o = {in.C, in.T / s, in.H / s, in.W / s};
    double inv = 1.0 / ((double)s * s * s);
    for (int c = 0; c < o.C; c++)
        for (int t = 0; t < o.T; t++)
            for (int i = 0; i < o.H; i++)
                for (int j = 0; j < o.W; j++) {
                    double acc = 0;
                    for (int a = 0; a < s; a++)
                        for (int b = 0; b < s; b++)
                            for (int e = 0; e < s; e++)
                                acc += inp[(((size_t)c * in.T + t * s + a) * in.H + i * s + b) * in.W + j * s + e];
                    out[(((size_t)c * o.T + t) * o.H + i) * o.W + j] = acc * inv;
                }
}
// its backward: dinp (+=) gets dout/s³ on every voxel of the cell, nothing on the remainder
static void avgpool3d_backward(real* dinp, const real* dout, Shape4 in, int s) {
    Shape4 o = {in.C, in.T / s, in.H / s, in.W / s};
    double inv = 1.0 / ((double)s * s * s);
    for (int c = 0; c < o.C; c++)
        for (int t = 0; t < o.T; t++)
            for (int i = 0; i < o.H; i++)
                for (int j = 0; j < o.W; j++) {
                    double g = dout[(((size_t)c * o.T + t) * o.H + i) * o.W + j] * inv;
                    for (int a = 0; a < s; a++)
                        for (int b = 0; b < s; b++)
                            for (int e = 0; e < s; e++)
                                dinp[(((size_t)c * in.T + t * s + a) * in.H + i * s + b) * in.W + j * s + e] += g;
                }
}

// GroupNorm over [C, S] (S = T·H·W) with G groups, eps 1e-5 (PyTorch's default): xhat, mean[G], rstd[G] kept
static void groupnorm_forward(real* out, real* xhat, real* mean, real* rstd, const real* inp, const real* w,
                              const real* b, int C, size_t S, int G) {
    int cg = C / G; size_t n = (size_t)cg * S;
    for (int g = 0; g < G; g++) {
        const real* x = inp + (size_t)g * n;
        double m = 0, v = 0;
        for (size_t i = 0; i < n; i++) m += x[i];
        m /= n;
        for (size_t i = 0; i < n; i++) v += (x[i] - m) * (x[i] - m);
        double rs = 1 / sqrt(v / n + 1e-5);
        mean[g] = m; rstd[g] = rs;
        for (int c = g * cg; c < (g + 1) * cg; c++) for (size_t s = 0; s < S; s++) {
            size_t idx = (size_t)c * S + s;
            xhat[idx] = (inp[idx] - m) * rs; out[idx] = xhat[idx] * w[c] + b[c];
        }
    }
}
// backward of out = xhat·w + b, xhat = (x − mean)·rstd per group: dinp (+=), dw (+=), db (+=)
static void groupnorm_backward(real* dinp, real* dw, real* db, const real* dout, const real* xhat, const real* rstd,
                               const real* w, int C, size_t S, int G) {
    int cg = C / G; size_t n = (size_t)cg * S;
    for (int g = 0; g < G; g++) {
        double sd = 0, sdx = 0;   // Σ dxhat, Σ dxhat·xhat
        for (int c = g * cg; c < (g + 1) * cg; c++) for (size_t s = 0; s < S; s++) {
            size_t idx = (size_t)c * S + s; double dx = dout[idx] * w[c];
            dw[c] += dout[idx] * xhat[idx]; db[c] += dout[idx];
            sd += dx; sdx += dx * xhat[idx];
        }
        for (int c = g * cg; c < (g + 1) * cg; c++) for (size_t s = 0; s < S; s++) {
            size_t idx = (size_t)c * S + s; double dx = dout[idx] * w[c];
            dinp[idx] += rstd[g] * (dx - sd / n - xhat[idx] * sdx / n);
        }
    }
}

#define LEAKY_SLOPE 0.2
static void leaky_forward(real* out, const real* inp, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = inp[i] > 0 ? inp[i] : LEAKY_SLOPE * inp[i];
}
static void leaky_backward(real* dinp, const real* dout, const real* inp, size_t n) {
    for (size_t i = 0; i < n; i++) dinp[i] += inp[i] > 0 ? dout[i] : LEAKY_SLOPE * dout[i];
}

// ---------------------------------------------------------------------------------------------------------
// the heads

typedef struct {
    Shape4 x0s;                                        // the unpatchified feature [C0, T, H, W]
    Shape4 cin[DISC_MAX_CONVS], cout[DISC_MAX_CONVS];  // each convolution's input and output
    real *x0[DISC_MAX_HEADS];                          // [C0, T, H, W] unpatchified feature
    real *z[DISC_MAX_HEADS][DISC_MAX_CONVS];           // conv outputs
    real *xh[DISC_MAX_HEADS][DISC_MAX_CONVS], *nrm[DISC_MAX_HEADS][DISC_MAX_CONVS];  // GroupNorm xhat and output
    real *mean[DISC_MAX_HEADS][DISC_MAX_CONVS], *rstd[DISC_MAX_HEADS][DISC_MAX_CONVS];
    real *act[DISC_MAX_HEADS][DISC_MAX_CONVS];         // LeakyReLU outputs
    real *pl[DISC_MAX_HEADS][DISC_MAX_SCALES];         // multiscale: branch i's AvgPool3d output (s > 1)
    real *pool[DISC_MAX_HEADS], *h1[DISC_MAX_HEADS], *a1[DISC_MAX_HEADS];  // [feat_dim], [hidden], [hidden]
    double logit[DISC_MAX_HEADS];
    uint64_t dropout_key;                              // 0: eval mode (no dropout); set by the critic step
    Arena arena;
} DiscAct;

static void disc_act_carve_(DiscAct* a, const DiscConfig* dc) {
    for (int h = 0; h < dc->n_heads; h++) {
        a->x0[h] = arena_take(&a->arena, shape_numel(a->x0s));
        for (int k = 0; k < disc_n_convs(dc); k++) {
            size_t n = shape_numel(a->cout[k]); int G = disc_groups(a->cout[k].C);
            a->z[h][k] = arena_take(&a->arena, n);
            a->xh[h][k] = arena_take(&a->arena, n);
            a->nrm[h][k] = arena_take(&a->arena, n);
            a->act[h][k] = arena_take(&a->arena, n);
            a->mean[h][k] = arena_take(&a->arena, G);
            a->rstd[h][k] = arena_take(&a->arena, G);
        }
        if (dc->kind == DISC_MULTISCALE)
            for (int i = 0; i < dc->n_scales; i++)
                if (dc->scales[i] > 1) a->pl[h][i] = arena_take(&a->arena, shape_numel(a->cin[2 * i + 1]));
        a->pool[h] = arena_take(&a->arena, disc_feat_dim(dc));
        a->h1[h] = arena_take(&a->arena, dc->hidden); a->a1[h] = arena_take(&a->arena, dc->hidden);
    }
}
// every convolution's input and output shape for a feature grid T x Hl x Wl (shared with the GPU)
static void disc_shapes(const DiscConfig* dc, int T, int Hl, int Wl, Shape4* x0s, Shape4* cin, Shape4* cout) {
    *x0s = (Shape4){dc->in_ch, T, Hl, Wl};
    for (int k = 0; k < disc_n_convs(dc); k++) {
        Shape4 in = *x0s;
        if (dc->kind == DISC_STRIDED && k > 0) in = cout[k - 1];
        if (dc->kind == DISC_MULTISCALE && k % 2) {
            int s = dc->scales[k / 2];
            in = (Shape4){dc->in_ch, T / s, Hl / s, Wl / s};
        }
        cin[k] = in;
        cout[k] = conv_out_shape(in, disc_conv_out(dc, k), disc_conv_kernel(dc, k), disc_conv_stride(dc, k), disc_conv_pad(dc, k));
    }
}
static void disc_act_init(DiscAct* a, const DiscConfig* dc, const WanGrid* g) {
    memset(a, 0, sizeof(*a));
    disc_shapes(dc, g->T, g->Hl, g->Wl, &a->x0s, a->cin, a->cout);
    ARENA_BUILD(&a->arena, disc_act_carve_(a, dc));
}
static void disc_act_free(DiscAct* a) { free(a->arena.base); }

// convolution k of head h, its GroupNorm and LeakyReLU, on input x
static void disc_conv_block_forward_(DiscAct* a, const DiscParams* p, int h, int k, const real* x, const DiscConfig* dc) {
    Shape4 o = a->cout[k];
    conv3ds_forward(a->z[h][k], x, p->conv_w[h][k], p->conv_b[h][k], a->cin[k], o, disc_conv_kernel(dc, k),
                    disc_conv_stride(dc, k), disc_conv_pad(dc, k));
    groupnorm_forward(a->nrm[h][k], a->xh[h][k], a->mean[h][k], a->rstd[h][k], a->z[h][k], p->norm_w[h][k],
                      p->norm_b[h][k], o.C, shape_voxels(o), disc_groups(o.C));
    leaky_forward(a->act[h][k], a->nrm[h][k], shape_numel(o));
}
// its backward from d act (gact, overwritten as scratch) into dinp (+=), dp's conv k and norm k (+=); gtmp scratch
static void disc_conv_block_backward_(real* dinp, DiscParams* dp, real* gact, real* gtmp, const DiscAct* a,
                                      const DiscParams* p, int h, int k, const real* x, const DiscConfig* dc) {
    Shape4 o = a->cout[k]; size_t n = shape_numel(o);
    memset(gtmp, 0, sizeof(real) * n);
    leaky_backward(gtmp, gact, a->nrm[h][k], n);                              // d nrm
    memset(gact, 0, sizeof(real) * n);
    groupnorm_backward(gact, dp->norm_w[h][k], dp->norm_b[h][k], gtmp, a->xh[h][k], a->rstd[h][k], p->norm_w[h][k], o.C,
                       shape_voxels(o), disc_groups(o.C));                    // d z
    conv3ds_backward(dinp, dp->conv_w[h][k], dp->conv_b[h][k], gact, x, p->conv_w[h][k], a->cin[k], o,
                     disc_conv_kernel(dc, k), disc_conv_stride(dc, k), disc_conv_pad(dc, k));
}
// the global average pool of a [C, S] map into out[C]
static void disc_mean_pool_(real* out, const real* x, Shape4 o) {
    size_t S = shape_voxels(o);
    for (int ch = 0; ch < o.C; ch++) {
        double s = 0;
        for (size_t i = 0; i < S; i++) s += x[(size_t)ch * S + i];
        out[ch] = s / S;
    }
}

// logits of every head on the teacher activations `ta` (features at residual levels layers[h] + 1); a->dropout_key
// (non-zero: train mode) draws the multiscale head's dropout mask
static void disc_forward(DiscAct* a, const DiscParams* p, const DiscConfig* dc, const WanAct* ta) {
    const WanGrid* g = &ta->g; const WanConfig* c = &ta->cfg;
    for (int h = 0; h < dc->n_heads; h++) {
        unpatchify_forward(a->x0[h], wan_xs(ta, dc->layers[h] + 1), dc->in_ch, g->T, g->Hl, g->Wl, c->patch[0],
                           c->patch[1], c->patch[2]);
        if (dc->kind == DISC_STRIDED) {
            const real* x = a->x0[h];
            for (int k = 0; k < DISC_CONVS; k++) { disc_conv_block_forward_(a, p, h, k, x, dc); x = a->act[h][k]; }
            disc_mean_pool_(a->pool[h], x, a->cout[DISC_CONVS - 1]);
        } else {
            for (int i = 0; i < dc->n_scales; i++) {
                disc_conv_block_forward_(a, p, h, 2 * i, a->x0[h], dc);                 // 1x1x1 on the full map
                const real* x = a->act[h][2 * i];
                if (dc->scales[i] > 1) { avgpool3d_forward(a->pl[h][i], x, a->cout[2 * i], dc->scales[i]); x = a->pl[h][i]; }
                disc_conv_block_forward_(a, p, h, 2 * i + 1, x, dc);                    // 3x3x3 on the pooled map
                disc_mean_pool_(a->pool[h] + (size_t)i * dc->in_ch, a->act[h][2 * i + 1], a->cout[2 * i + 1]);
            }
        }
        int F = disc_feat_dim(dc);
        linear_forward(a->h1[h], a->pool[h], p->mlp_0_w[h], p->mlp_0_b[h], 1, F, dc->hidden);
        leaky_forward(a->a1[h], a->h1[h], dc->hidden);
        double z = p->mlp_2_b[h][0];
        for (int i = 0; i < dc->hidden; i++) {
            double m = dc->kind == DISC_MULTISCALE ? disc_dropout_factor(a->dropout_key, h, i) : 1;
            z += p->mlp_2_w[h][i] * (a->a1[h][i] * m);
        }
        a->logit[h] = z;
    }
}

// dlogit[h] → dp (+=, may be NULL: parameter gradients are then discarded) and the feature gradients
// dfeat[layers[h] + 1] (+=, may be NULL)
static void disc_backward(DiscParams* dp, real** dfeat, const double* dlogit, const DiscAct* a, const DiscParams* p,
                          const DiscConfig* dc, const WanAct* ta) {
    const WanGrid* g = &ta->g; const WanConfig* c = &ta->cfg;
    size_t big = shape_numel(a->x0s);
    for (int k = 0; k < disc_n_convs(dc); k++) {
        if (shape_numel(a->cout[k]) > big) big = shape_numel(a->cout[k]);
        if (shape_numel(a->cin[k]) > big) big = shape_numel(a->cin[k]);
    }
    int F = disc_feat_dim(dc);
    real* gx0 = (real*)calloc(big, sizeof(real));    // d x0 (multiscale: summed over the branches)
    real* gcur = (real*)calloc(big, sizeof(real));
    real* gtmp = (real*)calloc(big, sizeof(real));
    real* gin = (real*)calloc(big, sizeof(real));
    real* dh = (real*)calloc(dc->hidden, sizeof(real));
    real* dpool = (real*)calloc(F, sizeof(real));
    DiscParams sp; real* sbuf = NULL;   // a scratch gradient target when dp is NULL
    if (!dp) { sbuf = (real*)calloc(disc_num_params(dc), sizeof(real)); disc_carve(dc, &sp, sbuf); dp = &sp; }
    for (int h = 0; h < dc->n_heads; h++) {
        double gz = dlogit[h];
        dp->mlp_2_b[h][0] += gz;
        memset(dh, 0, sizeof(real) * dc->hidden);
        for (int i = 0; i < dc->hidden; i++) {   // logit = b2 + Σ w2·(a1·m)
            double m = dc->kind == DISC_MULTISCALE ? disc_dropout_factor(a->dropout_key, h, i) : 1;
            dp->mlp_2_w[h][i] += gz * a->a1[h][i] * m;
            double da = gz * p->mlp_2_w[h][i] * m;
            dh[i] = a->h1[h][i] > 0 ? da : LEAKY_SLOPE * da;   // a1 = leaky(h1)
        }
        memset(dpool, 0, sizeof(real) * F);
        linear_backward(dpool, dp->mlp_0_w[h], dp->mlp_0_b[h], dh, a->pool[h], p->mlp_0_w[h], 1, F, dc->hidden);
        memset(gx0, 0, sizeof(real) * shape_numel(a->x0s));
        if (dc->kind == DISC_STRIDED) {
            Shape4 o = a->cout[DISC_CONVS - 1]; size_t S = shape_voxels(o);
            for (int ch = 0; ch < o.C; ch++)
                for (size_t i = 0; i < S; i++) gcur[(size_t)ch * S + i] = dpool[ch] / S;   // pool = mean
            for (int k = DISC_CONVS - 1; k >= 0; k--) {
                real* dst = k ? gin : gx0;
                if (k) memset(gin, 0, sizeof(real) * shape_numel(a->cin[k]));
                disc_conv_block_backward_(dst, dp, gcur, gtmp, a, p, h, k, k ? a->act[h][k - 1] : a->x0[h], dc);
                if (k) memcpy(gcur, gin, sizeof(real) * shape_numel(a->cin[k]));
            }
        } else {
            for (int i = 0; i < dc->n_scales; i++) {
                int k3 = 2 * i + 1, k1 = 2 * i; Shape4 o = a->cout[k3]; size_t S = shape_voxels(o);
                for (int ch = 0; ch < o.C; ch++)
                    for (size_t q = 0; q < S; q++) gcur[(size_t)ch * S + q] = dpool[(size_t)i * dc->in_ch + ch] / S;
                int s = dc->scales[i];
                memset(gin, 0, sizeof(real) * shape_numel(a->cin[k3]));
                disc_conv_block_backward_(gin, dp, gcur, gtmp, a, p, h, k3, s > 1 ? a->pl[h][i] : a->act[h][k1], dc);
                memset(gcur, 0, sizeof(real) * shape_numel(a->cout[k1]));
                if (s > 1) avgpool3d_backward(gcur, gin, a->cout[k1], s);   // d act of the 1x1x1 block
                else memcpy(gcur, gin, sizeof(real) * shape_numel(a->cout[k1]));
                disc_conv_block_backward_(gx0, dp, gcur, gtmp, a, p, h, k1, a->x0[h], dc);
            }
        }
        real* dfe = dfeat ? dfeat[dc->layers[h] + 1] : NULL;
        if (dfe) unpatchify_backward(dfe, gx0, dc->in_ch, g->T, g->Hl, g->Wl, c->patch[0], c->patch[1], c->patch[2]);
    }
    free(gx0); free(gcur); free(gtmp); free(gin); free(dh); free(dpool); free(sbuf);
}
