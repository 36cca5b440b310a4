// cpu/disc_cpu.h: the DMD2-v discriminator on the CPU reference (paper App. A.3, Table 3's "Conv3D" head).
// One head per frozen-teacher feature layer. A head, for a feature [L, D] of the DiT's residual stream:
//   unpatchify to [C0, T, H, W], C0 = D / (p_t·p_h·p_w)   (the latent grid; FastGen's _unpatchify_features order)
//   4 × (Conv3d, GroupNorm, LeakyReLU 0.2)                  kernels/strides as FastGen's conv3d head (below)
//   adaptive average pool to [C4], Linear C4→hidden, LeakyReLU 0.2, Linear hidden→1: the head's logit
// Shapes follow NVlabs/FastGen fastgen/networks/discriminators.py (_build_dit_conv3d_discriminator_head, read for
// facts): conv 1 kernel (3,4,4) stride (1,2,2), conv 2 kernel (3,4,4) stride 2, convs 3 and 4 kernel 3 stride 2,
// all with padding 1; GroupNorm groups max(1, C/4) up to 32 channels, else the largest divisor of C that is <= 32.
// At Wan2.1 1.3B scale (C0 = 1536/4 = 384, widths 512, 512, 1024, 1024, hidden 512) one head has 65.0M parameters
// (disc_num_params, printed by the tests). Every forward overwrites its outputs; every backward accumulates (+=).
#pragma once
#include "wan_cpu.h"
#include "../lib/rng.h"

#define DISC_MAX_HEADS 8
#define DISC_CONVS 4

typedef struct {
    int n_heads; int layers[DISC_MAX_HEADS];  // teacher blocks whose output feeds each head
    int in_ch;                                // C0 = D / (p_t·p_h·p_w)
    int width[DISC_CONVS];                    // output channels of the four convolutions
    int hidden;                               // MLP hidden width
} DiscConfig;

static const int DISC_KERNEL[DISC_CONVS][3] = {{3, 4, 4}, {3, 4, 4}, {3, 3, 3}, {3, 3, 3}};
static const int DISC_STRIDE[DISC_CONVS][3] = {{1, 2, 2}, {2, 2, 2}, {2, 2, 2}, {2, 2, 2}};
#define DISC_PAD 1

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
    for (int i = 0; i < 3; i++) { int dup = 0; for (int j = 0; j < n; j++) dup |= layers[j] == want[i]; if (!dup) layers[n++] = want[i]; }
    return n;
}

// a config for `c` with the given widths: in_ch from the patch, layers from the table above
static DiscConfig disc_config(const WanConfig* c, int w1, int w2, int w3, int w4, int hidden) {
    DiscConfig d; memset(&d, 0, sizeof(d));
    d.n_heads = disc_layers_for(c->num_layers, d.layers);
    d.in_ch = c->dim / wan_patch_numel(c);
    d.width[0] = w1; d.width[1] = w2; d.width[2] = w3; d.width[3] = w4; d.hidden = hidden;
    return d;
}

typedef struct {
    real *conv_w[DISC_MAX_HEADS][DISC_CONVS];  // [OC, IC, kt, kh, kw]
    real *conv_b[DISC_MAX_HEADS][DISC_CONVS];  // [OC]
    real *norm_w[DISC_MAX_HEADS][DISC_CONVS];  // [OC] GroupNorm affine
    real *norm_b[DISC_MAX_HEADS][DISC_CONVS];  // [OC]
    real *mlp_0_w[DISC_MAX_HEADS];             // [hidden, C4]
    real *mlp_0_b[DISC_MAX_HEADS];             // [hidden]
    real *mlp_2_w[DISC_MAX_HEADS];             // [1, hidden]
    real *mlp_2_b[DISC_MAX_HEADS];             // [1]
} DiscParams;

static int disc_conv_in(const DiscConfig* dc, int k) { return k == 0 ? dc->in_ch : dc->width[k - 1]; }

// carves the parameters out of base (NULL: count only); returns the number of parameters of all heads
static size_t disc_carve(const DiscConfig* dc, DiscParams* p, real* base) {
    size_t off = 0;
#define DISC_TAKE_(field, n) do { if (p) p->field = base + off; off += (size_t)(n); } while (0)
    for (int h = 0; h < dc->n_heads; h++) {
        for (int k = 0; k < DISC_CONVS; k++) {
            int ic = disc_conv_in(dc, k), oc = dc->width[k];
            DISC_TAKE_(conv_w[h][k], (size_t)oc * ic * DISC_KERNEL[k][0] * DISC_KERNEL[k][1] * DISC_KERNEL[k][2]);
            DISC_TAKE_(conv_b[h][k], oc); DISC_TAKE_(norm_w[h][k], oc); DISC_TAKE_(norm_b[h][k], oc);
        }
        DISC_TAKE_(mlp_0_w[h], (size_t)dc->hidden * dc->width[DISC_CONVS - 1]); DISC_TAKE_(mlp_0_b[h], dc->hidden);
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
#define DISC_UNIF_(ptr, n, fan) do { double a_ = 1 / sqrt((double)(fan)); for (size_t i_ = 0; i_ < (size_t)(n); i_++) (ptr)[i_] = a_ * (2 * rng_uniform(&r) - 1); } while (0)
    for (int h = 0; h < dc->n_heads; h++) {
        for (int k = 0; k < DISC_CONVS; k++) {
            int ic = disc_conv_in(dc, k), oc = dc->width[k], kv = DISC_KERNEL[k][0] * DISC_KERNEL[k][1] * DISC_KERNEL[k][2];
            DISC_UNIF_(p.conv_w[h][k], (size_t)oc * ic * kv, ic * kv); DISC_UNIF_(p.conv_b[h][k], oc, ic * kv);
            for (int i = 0; i < oc; i++) p.norm_w[h][k][i] = 1;
        }
        int c4 = dc->width[DISC_CONVS - 1];
        DISC_UNIF_(p.mlp_0_w[h], (size_t)dc->hidden * c4, c4); DISC_UNIF_(p.mlp_0_b[h], dc->hidden, c4);
        DISC_UNIF_(p.mlp_2_w[h], dc->hidden, dc->hidden); DISC_UNIF_(p.mlp_2_b[h], 1, dc->hidden);
    }
#undef DISC_UNIF_
}

// ---------------------------------------------------------------------------------------------------------
// layers (channels-first [C, T, H, W])

typedef struct { int C, T, H, W; } Shape4;
static size_t shape_numel(Shape4 s) { return (size_t)s.C * s.T * s.H * s.W; }
static Shape4 conv_out_shape(Shape4 in, int oc, const int* k, const int* st) {
    Shape4 o = {oc, (in.T + 2 * DISC_PAD - k[0]) / st[0] + 1, (in.H + 2 * DISC_PAD - k[1]) / st[1] + 1, (in.W + 2 * DISC_PAD - k[2]) / st[2] + 1};
    return o;
}

// out[o, t, i, j] = b[o] + Σ_{c, a, b, e} w[o, c, a, b, e]·inp[c, t·st0 − 1 + a, i·st1 − 1 + b, j·st2 − 1 + e] (zero padding)
static void conv3ds_forward(real* out, const real* inp, const real* w, const real* b, Shape4 in, Shape4 os, const int* k, const int* st) {
    int IC = in.C;
    for (int o = 0; o < os.C; o++) for (int t = 0; t < os.T; t++) for (int i = 0; i < os.H; i++) for (int j = 0; j < os.W; j++) {
        double s = b[o];
        for (int c = 0; c < IC; c++) for (int a = 0; a < k[0]; a++) {
            int ti = t * st[0] - DISC_PAD + a; if (ti < 0 || ti >= in.T) continue;
            for (int bb = 0; bb < k[1]; bb++) {
                int hi = i * st[1] - DISC_PAD + bb; if (hi < 0 || hi >= in.H) continue;
                const real* wr = w + ((((size_t)o * IC + c) * k[0] + a) * k[1] + bb) * k[2];
                const real* xr = inp + (((size_t)c * in.T + ti) * in.H + hi) * in.W;
                for (int e = 0; e < k[2]; e++) { int wi = j * st[2] - DISC_PAD + e; if (wi >= 0 && wi < in.W) s += wr[e] * xr[wi]; }
            }
        }
        out[(((size_t)o * os.T + t) * os.H + i) * os.W + j] = s;
    }
}
// backward of the line above: dinp (+=, may be NULL), dw (+=), db (+=)
static void conv3ds_backward(real* dinp, real* dw, real* db, const real* dout, const real* inp, const real* w, Shape4 in, Shape4 os,
                             const int* k, const int* st) {
    int IC = in.C;
    for (int o = 0; o < os.C; o++) for (int t = 0; t < os.T; t++) for (int i = 0; i < os.H; i++) for (int j = 0; j < os.W; j++) {
        double g = dout[(((size_t)o * os.T + t) * os.H + i) * os.W + j];
        if (g == 0) continue;
        db[o] += g;
        for (int c = 0; c < IC; c++) for (int a = 0; a < k[0]; a++) {
            int ti = t * st[0] - DISC_PAD + a; if (ti < 0 || ti >= in.T) continue;
            for (int bb = 0; bb < k[1]; bb++) {
                int hi = i * st[1] - DISC_PAD + bb; if (hi < 0 || hi >= in.H) continue;
                size_t wo = ((((size_t)o * IC + c) * k[0] + a) * k[1] + bb) * k[2], xo = (((size_t)c * in.T + ti) * in.H + hi) * in.W;
                for (int e = 0; e < k[2]; e++) {
                    int wi = j * st[2] - DISC_PAD + e; if (wi < 0 || wi >= in.W) continue;
                    dw[wo + e] += g * inp[xo + wi];
                    if (dinp) dinp[xo + wi] += g * w[wo + e];
                }
            }
        }
    }
}

// GroupNorm over [C, S] (S = T·H·W) with G groups, eps 1e-5 (PyTorch's default): xhat, mean[G], rstd[G] kept
static void groupnorm_forward(real* out, real* xhat, real* mean, real* rstd, const real* inp, const real* w, const real* b, int C, size_t S, int G) {
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
static void groupnorm_backward(real* dinp, real* dw, real* db, const real* dout, const real* xhat, const real* rstd, const real* w, int C, size_t S, int G) {
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
static void leaky_forward(real* out, const real* inp, size_t n) { for (size_t i = 0; i < n; i++) out[i] = inp[i] > 0 ? inp[i] : LEAKY_SLOPE * inp[i]; }
static void leaky_backward(real* dinp, const real* dout, const real* inp, size_t n) { for (size_t i = 0; i < n; i++) dinp[i] += inp[i] > 0 ? dout[i] : LEAKY_SLOPE * dout[i]; }

// ---------------------------------------------------------------------------------------------------------
// the heads

typedef struct {
    Shape4 shp[DISC_CONVS + 1];                        // shp[0]: unpatchified feature, shp[k + 1]: after conv k
    real *x0[DISC_MAX_HEADS];                          // [C0, T, H, W] unpatchified feature
    real *z[DISC_MAX_HEADS][DISC_CONVS];               // conv outputs
    real *xh[DISC_MAX_HEADS][DISC_CONVS], *nrm[DISC_MAX_HEADS][DISC_CONVS];  // GroupNorm xhat and output
    real *mean[DISC_MAX_HEADS][DISC_CONVS], *rstd[DISC_MAX_HEADS][DISC_CONVS];
    real *act[DISC_MAX_HEADS][DISC_CONVS];             // LeakyReLU outputs (the next conv's input)
    real *pool[DISC_MAX_HEADS], *h1[DISC_MAX_HEADS], *a1[DISC_MAX_HEADS];  // [C4], [hidden], [hidden]
    double logit[DISC_MAX_HEADS];
    Arena arena;
} DiscAct;

static void disc_act_carve_(DiscAct* a, const DiscConfig* dc) {
    for (int h = 0; h < dc->n_heads; h++) {
        a->x0[h] = arena_take(&a->arena, shape_numel(a->shp[0]));
        for (int k = 0; k < DISC_CONVS; k++) {
            size_t n = shape_numel(a->shp[k + 1]); int G = disc_groups(dc->width[k]);
            a->z[h][k] = arena_take(&a->arena, n); a->xh[h][k] = arena_take(&a->arena, n); a->nrm[h][k] = arena_take(&a->arena, n);
            a->act[h][k] = arena_take(&a->arena, n); a->mean[h][k] = arena_take(&a->arena, G); a->rstd[h][k] = arena_take(&a->arena, G);
        }
        a->pool[h] = arena_take(&a->arena, dc->width[DISC_CONVS - 1]);
        a->h1[h] = arena_take(&a->arena, dc->hidden); a->a1[h] = arena_take(&a->arena, dc->hidden);
    }
}
static void disc_act_init(DiscAct* a, const DiscConfig* dc, const WanGrid* g) {
    memset(a, 0, sizeof(*a));
    a->shp[0] = (Shape4){dc->in_ch, g->T, g->Hl, g->Wl};
    for (int k = 0; k < DISC_CONVS; k++) a->shp[k + 1] = conv_out_shape(a->shp[k], dc->width[k], DISC_KERNEL[k], DISC_STRIDE[k]);
    ARENA_BUILD(&a->arena, disc_act_carve_(a, dc));
}
static void disc_act_free(DiscAct* a) { free(a->arena.base); }

// logits of every head on the teacher activations `ta` (features at residual levels layers[h] + 1)
static void disc_forward(DiscAct* a, const DiscParams* p, const DiscConfig* dc, const WanAct* ta) {
    const WanGrid* g = &ta->g; const WanConfig* c = &ta->cfg;
    for (int h = 0; h < dc->n_heads; h++) {
        unpatchify_forward(a->x0[h], wan_xs(ta, dc->layers[h] + 1), dc->in_ch, g->T, g->Hl, g->Wl, c->patch[0], c->patch[1], c->patch[2]);
        const real* x = a->x0[h];
        for (int k = 0; k < DISC_CONVS; k++) {
            Shape4 o = a->shp[k + 1]; size_t S = (size_t)o.T * o.H * o.W;
            conv3ds_forward(a->z[h][k], x, p->conv_w[h][k], p->conv_b[h][k], a->shp[k], o, DISC_KERNEL[k], DISC_STRIDE[k]);
            groupnorm_forward(a->nrm[h][k], a->xh[h][k], a->mean[h][k], a->rstd[h][k], a->z[h][k], p->norm_w[h][k], p->norm_b[h][k], o.C, S, disc_groups(o.C));
            leaky_forward(a->act[h][k], a->nrm[h][k], shape_numel(o));
            x = a->act[h][k];
        }
        Shape4 o = a->shp[DISC_CONVS]; size_t S = (size_t)o.T * o.H * o.W;
        for (int ch = 0; ch < o.C; ch++) { double s = 0; for (size_t i = 0; i < S; i++) s += x[(size_t)ch * S + i]; a->pool[h][ch] = s / S; }
        linear_forward(a->h1[h], a->pool[h], p->mlp_0_w[h], p->mlp_0_b[h], 1, o.C, dc->hidden);
        leaky_forward(a->a1[h], a->h1[h], dc->hidden);
        double z = p->mlp_2_b[h][0]; for (int i = 0; i < dc->hidden; i++) z += p->mlp_2_w[h][i] * a->a1[h][i];
        a->logit[h] = z;
    }
}

// dlogit[h] → dp (+=, may be NULL: parameter gradients are then discarded) and the feature gradients
// dfeat[layers[h] + 1] (+=, may be NULL)
static void disc_backward(DiscParams* dp, real** dfeat, const double* dlogit, const DiscAct* a, const DiscParams* p, const DiscConfig* dc, const WanAct* ta) {
    const WanGrid* g = &ta->g; const WanConfig* c = &ta->cfg;
    size_t big = shape_numel(a->shp[0]);
    for (int k = 1; k <= DISC_CONVS; k++) if (shape_numel(a->shp[k]) > big) big = shape_numel(a->shp[k]);
    real* gcur = (real*)calloc(big, sizeof(real)); real* gtmp = (real*)calloc(big, sizeof(real)); real* gin = (real*)calloc(big, sizeof(real));
    real* dh = (real*)calloc(dc->hidden + 1, sizeof(real)); real* dpool = (real*)calloc(dc->width[DISC_CONVS - 1], sizeof(real));
    DiscParams sp; real* sbuf = NULL;   // a scratch gradient target when dp is NULL
    if (!dp) { sbuf = (real*)calloc(disc_num_params(dc), sizeof(real)); disc_carve(dc, &sp, sbuf); dp = &sp; }
    for (int h = 0; h < dc->n_heads; h++) {
        double gz = dlogit[h];
        dp->mlp_2_b[h][0] += gz;
        memset(dh, 0, sizeof(real) * dc->hidden);
        for (int i = 0; i < dc->hidden; i++) { dp->mlp_2_w[h][i] += gz * a->a1[h][i]; dh[i] = gz * p->mlp_2_w[h][i]; }
        real* dh1 = dh + 0; real* tmp = (real*)calloc(dc->hidden, sizeof(real));
        leaky_backward(tmp, dh1, a->h1[h], dc->hidden);
        Shape4 o = a->shp[DISC_CONVS]; size_t S = (size_t)o.T * o.H * o.W;
        memset(dpool, 0, sizeof(real) * o.C);
        linear_backward(dpool, dp->mlp_0_w[h], dp->mlp_0_b[h], tmp, a->pool[h], p->mlp_0_w[h], 1, o.C, dc->hidden);
        free(tmp);
        for (int ch = 0; ch < o.C; ch++) for (size_t i = 0; i < S; i++) gcur[(size_t)ch * S + i] = dpool[ch] / S;   // pool = mean
        for (int k = DISC_CONVS - 1; k >= 0; k--) {
            Shape4 ok = a->shp[k + 1]; size_t n = shape_numel(ok), Sk = (size_t)ok.T * ok.H * ok.W;
            memset(gtmp, 0, sizeof(real) * n);
            leaky_backward(gtmp, gcur, a->nrm[h][k], n);                              // d nrm
            memset(gcur, 0, sizeof(real) * n);
            groupnorm_backward(gcur, dp->norm_w[h][k], dp->norm_b[h][k], gtmp, a->xh[h][k], a->rstd[h][k], p->norm_w[h][k], ok.C, Sk, disc_groups(ok.C));  // d z
            const real* xin = k ? a->act[h][k - 1] : a->x0[h];
            memset(gin, 0, sizeof(real) * shape_numel(a->shp[k]));
            conv3ds_backward(gin, dp->conv_w[h][k], dp->conv_b[h][k], gcur, xin, p->conv_w[h][k], a->shp[k], ok, DISC_KERNEL[k], DISC_STRIDE[k]);
            memcpy(gcur, gin, sizeof(real) * shape_numel(a->shp[k]));
        }
        real* dfe = dfeat ? dfeat[dc->layers[h] + 1] : NULL;
        if (dfe) unpatchify_backward(dfe, gcur, dc->in_ch, g->T, g->Hl, g->Wl, c->patch[0], c->patch[1], c->patch[2]);
    }
    free(gcur); free(gtmp); free(gin); free(dh); free(dpool); free(sbuf);
}
