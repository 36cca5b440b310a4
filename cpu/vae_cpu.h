// cpu/vae_cpu.h: the Wan2.1 video VAE on the CPU, in double precision: config, parameter layout under official and
// diffusers names, safetensors loading, and causal chunked encode / decode with the feature cache.
//
// The model is diffusers' AutoencoderKLWan (src/diffusers/models/autoencoders/autoencoder_kl_wan.py, 0.42.1) and the
// official WanVAE_ (Wan-Video/Wan2.1, wan/modules/vae.py); both compute the same function and the facts below are
// read from them (no code copied):
//   - CausalConv3d pads time on the past side only (2*p frames in front, none behind) and space symmetrically.
//   - RMS_norm is F.normalize over channels (x / max(|x|_2, 1e-12)) times sqrt(C) times gamma; no bias.
//   - ResidualBlock: h = shortcut(x) (1x1x1 conv when C changes, else identity);
//                    x = conv2(silu(norm2(conv1(silu(norm1(x)))))) + h   (dropout 0).
//   - AttentionBlock (the middle only, one head over the H*W pixels of each frame separately): to_qkv (1x1 conv to
//     3C: q, k, v in that order), softmax(q k^T / sqrt(C)) v, proj (1x1 conv), plus the input.
//   - Resample: upsample2d = nearest x2 in space (nearest-exact at scale 2 reads source pixel floor(y/2)), conv2d 3x3
//     pad 1 to C/2 channels; upsample3d additionally runs time_conv (causal (3,1,1), C -> 2C) first and interleaves
//     the two halves of its output as frames 2j and 2j+1; downsample2d = zero pad right and bottom by 1, conv2d 3x3
//     stride 2; downsample3d additionally runs time_conv ((3,1,1), stride 2 in time, no padding) after it.
//   - Encoder3d: conv1, per stage num_res_blocks blocks (+ a Resample except after the last stage), middle
//     (res, attention, res), head (norm, silu, conv to 2*z_dim); WanVAE_.conv1 (1x1x1, "quant_conv") then the
//     posterior mean is the first z_dim channels.
//   - Decoder3d: WanVAE_.conv2 (1x1x1, "post_quant_conv"), conv1, middle, per stage num_res_blocks+1 blocks (+ a
//     Resample except after the last stage; the next stage's input has half the channels), head (norm, silu, conv to
//     3 channels); the decoded video is clamped to [-1, 1] (diffusers' _decode, the official WanVAE.decode).
//   - Chunks with the feature cache (WanVAE_.encode/decode, AutoencoderKLWan._encode/_decode): the encoder sees the
//     first frame alone, then chunks of 4 frames; the decoder sees one latent frame at a time. Every causal conv
//     with time padding keeps the last 2 frames of its input (CACHE_T = 2) and prepends them to the next chunk; the
//     upsample3d time_conv skips the first chunk entirely (the "Rep" marker: the first latent frame becomes one
//     frame) and starts its own cache at the second; the downsample3d time_conv passes the first chunk through and
//     afterwards convolves [last frame of the previous chunk, this chunk]. So 81 frames <-> 21 latent frames.
// Only the Wan2.1 form is implemented: is_residual = False (Wan2.2's residual up/down blocks are not), attn_scales
// empty (diffusers' decoder ignores attn_scales, so a non-empty list would differ between the peers anyway).
//
// Arrays are channel-first without a batch axis: video [3, T, H, W] in [-1, 1], latent [z_dim, T', H/s, W/s].
#pragma once
#include "../lib/timer.h"  // now_s
#include <math.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "../lib/safetensors.h"
#ifdef _OPENMP
#include <omp.h>
#endif

#define VAE_MAX_STAGES 6
#define VAE_MAX_RES 4        // residual blocks per stage (the decoder has num_res_blocks + 1)
#define VAE_MAX_TENSORS 512
#define VAE_CHUNK 4          // frames per encoder chunk after the first (the peers' 1 + 4 + 4 + ...)

typedef struct {
    int dim;                              // base channels (96)
    int z_dim;                            // latent channels (16)
    int num_stages;                       // len(dim_mult) (4)
    int dim_mult[VAE_MAX_STAGES];         // [1, 2, 4, 4]
    int num_res_blocks;                   // 2
    int temporal_down[VAE_MAX_STAGES];    // encoder stage i < num_stages-1 halves time after it: [0, 1, 1]
} VaeConfig;

// diffusers AutoencoderKLWan() defaults = the official _video_vae cfg with z_dim 16
static const VaeConfig VAE_WAN21 = {96, 16, 4, {1, 2, 4, 4}, 2, {0, 1, 1}};

// Wan2.1's per-channel latent statistics (official WanVAE.__init__ mean/std; diffusers' latents_mean/latents_std):
// the DiT sees (mu - mean) / std
static const double VAE_LATENT_MEAN[16] = {-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
                                           0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921};
static const double VAE_LATENT_STD[16] = {2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
                                          3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160};

static int vae_spatial_factor(const VaeConfig* c) { return 1 << (c->num_stages - 1); }
static int vae_temporal_factor(const VaeConfig* c) {
    int f = 1;
    for (int i = 0; i + 1 < c->num_stages; i++) f *= c->temporal_down[i] ? 2 : 1;
    return f;
}
static int vae_decoded_frames(const VaeConfig* c, int latent_frames) { return 1 + vae_temporal_factor(c) * (latent_frames - 1); }
static int vae_encoded_frames(const VaeConfig* c, int frames) { return 1 + (frames - 1) / VAE_CHUNK * VAE_CHUNK / vae_temporal_factor(c); }

static int vae_config_check(const VaeConfig* c, char* err) {
    int ntd = 0;
    for (int i = 0; i + 1 < c->num_stages; i++) ntd += c->temporal_down[i] != 0;
    const char* bad = c->dim <= 0 ? "base dim must be positive"
                    : c->z_dim <= 0 ? "z_dim must be positive"
                    : c->num_stages < 1 || c->num_stages > VAE_MAX_STAGES ? "1 to 6 stages (len(dim_mult))"
                    : c->num_res_blocks < 1 || c->num_res_blocks + 1 > VAE_MAX_RES ? "1 to 3 residual blocks per stage"
                    : ntd > 2 ? "at most 2 temporal down-samplings (a chunk of 4 frames halves twice)" : NULL;
    for (int i = 0; !bad && i < c->num_stages; i++)
        if (c->dim_mult[i] <= 0) bad = "dim_mult entries must be positive";
    for (int i = 1; !bad && i < c->num_stages; i++)  // the decoder halves the channels of each up-sampling
        if ((c->dim * c->dim_mult[i]) % 2) bad = "dim * dim_mult[i] must be even for i >= 1 (the decoder halves it)";
    if (bad) { snprintf(err, ST_ERRLEN, "VAE config: %s (base dim %d, z_dim %d, %d stages, %d res blocks)", bad, c->dim, c->z_dim, c->num_stages, c->num_res_blocks); return -1; }
    return 0;
}

static void vae_config_print(const VaeConfig* c, FILE* f) {
    fprintf(f, "VAE: base dim %d, z_dim %d, dim_mult [", c->dim, c->z_dim);
    for (int i = 0; i < c->num_stages; i++) fprintf(f, "%s%d", i ? ", " : "", c->dim_mult[i]);
    fprintf(f, "], %d res blocks, temporal down-sampling [", c->num_res_blocks);
    for (int i = 0; i + 1 < c->num_stages; i++) fprintf(f, "%s%s", i ? ", " : "", c->temporal_down[i] ? "True" : "False");
    fprintf(f, "]: x%d in space, x%d in time\n", vae_spatial_factor(c), vae_temporal_factor(c));
}

// ----------------------------------------------------------------------------------------------------------------
// parameters: one allocation carved in the official module order

typedef struct {
    double *norm1;                  // [cin, 1, 1, 1]
    double *conv1_w, *conv1_b;      // [cout, cin, 3, 3, 3], [cout]
    double *norm2;                  // [cout, 1, 1, 1]
    double *conv2_w, *conv2_b;      // [cout, cout, 3, 3, 3], [cout]
    double *shortcut_w, *shortcut_b; // [cout, cin, 1, 1, 1], [cout]; NULL when cin == cout
    int cin, cout;
} VaeResBlock;

typedef struct {
    double *norm;                   // [c, 1, 1]
    double *qkv_w, *qkv_b;          // [3c, c, 1, 1], [3c]
    double *proj_w, *proj_b;        // [c, c, 1, 1], [c]
    int c;
} VaeAttn;

typedef struct {
    double *conv_w, *conv_b;        // resample.1: [cout, c, 3, 3], [cout]  (up: cout = c/2; down: cout = c)
    double *time_w, *time_b;        // time_conv: up [2c, c, 3, 1, 1], down [c, c, 3, 1, 1]; NULL for the 2d modes
    int c, cout, up, temporal;      // up: 1 for upsample, 0 for downsample; temporal: the 3d mode
} VaeResample;

typedef struct {
    double *conv_in_w, *conv_in_b;  // encoder [d0, 3, 3, 3, 3]; decoder [e0, z, 3, 3, 3]
    VaeResBlock res[VAE_MAX_STAGES][VAE_MAX_RES];
    VaeResample resample[VAE_MAX_STAGES];   // after stage i < num_stages - 1
    VaeResBlock mid_res0; VaeAttn mid_attn; VaeResBlock mid_res1;
    double *norm_out;               // [c, 1, 1, 1]
    double *conv_out_w, *conv_out_b;  // encoder [2z, c, 3, 3, 3]; decoder [3, c, 3, 3, 3]
    int nres;                       // residual blocks per stage
} VaeCoder;

typedef struct {
    VaeCoder enc;
    double *quant_w, *quant_b;             // official conv1 / diffusers quant_conv: [2z, 2z, 1, 1, 1]
    double *post_quant_w, *post_quant_b;   // official conv2 / diffusers post_quant_conv: [z, z, 1, 1, 1]
    VaeCoder dec;
} VaeParams;

typedef struct { char name[128], dname[128]; int ndim; int64_t shape[5]; size_t offset, numel; } VaeTensor;   // names as long as vae_add_res_'s buffers

typedef struct { VaeTensor* t; int n; size_t total; double* base; } VaeLayout_;

static void vae_add_(VaeLayout_* b, double** slot, const char* name, const char* dname, int ndim, int64_t s0, int64_t s1, int64_t s2, int64_t s3, int64_t s4) {
    int64_t s[5] = {s0, s1, s2, s3, s4};
    size_t numel = 1;
    for (int i = 0; i < ndim; i++) numel *= (size_t)s[i];
    if (b->t) {
        VaeTensor* t = &b->t[b->n];
        snprintf(t->name, sizeof(t->name), "%s", name); snprintf(t->dname, sizeof(t->dname), "%s", dname);
        t->ndim = ndim; t->offset = b->total; t->numel = numel;
        for (int i = 0; i < 5; i++) t->shape[i] = i < ndim ? s[i] : 1;
    }
    if (slot) *slot = b->base ? b->base + b->total : NULL;
    b->n++; b->total += numel;
}

// a residual block under official prefix `op` (".residual.N" children) and diffusers prefix `dp`
static void vae_add_res_(VaeLayout_* b, VaeResBlock* r, const char* op, const char* dp, int cin, int cout) {
    char o[128], d[128];
    r->cin = cin; r->cout = cout;
#define VAE_RES_T(field, os, ds, nd, a0, a1, a2, a3, a4) \
    snprintf(o, sizeof(o), "%s." os, op); snprintf(d, sizeof(d), "%s." ds, dp); vae_add_(b, &r->field, o, d, nd, a0, a1, a2, a3, a4);
    VAE_RES_T(norm1, "residual.0.gamma", "norm1.gamma", 4, cin, 1, 1, 1, 0)
    VAE_RES_T(conv1_w, "residual.2.weight", "conv1.weight", 5, cout, cin, 3, 3, 3)
    VAE_RES_T(conv1_b, "residual.2.bias", "conv1.bias", 1, cout, 0, 0, 0, 0)
    VAE_RES_T(norm2, "residual.3.gamma", "norm2.gamma", 4, cout, 1, 1, 1, 0)
    VAE_RES_T(conv2_w, "residual.6.weight", "conv2.weight", 5, cout, cout, 3, 3, 3)
    VAE_RES_T(conv2_b, "residual.6.bias", "conv2.bias", 1, cout, 0, 0, 0, 0)
    if (cin != cout) {
        VAE_RES_T(shortcut_w, "shortcut.weight", "conv_shortcut.weight", 5, cout, cin, 1, 1, 1)
        VAE_RES_T(shortcut_b, "shortcut.bias", "conv_shortcut.bias", 1, cout, 0, 0, 0, 0)
    } else { r->shortcut_w = r->shortcut_b = NULL; }
#undef VAE_RES_T
}

static void vae_add_mid_(VaeLayout_* b, VaeCoder* k, const char* side, int c) {
    char o[128], d[128];
    snprintf(o, sizeof(o), "%s.middle.0", side); snprintf(d, sizeof(d), "%s.mid_block.resnets.0", side);
    vae_add_res_(b, &k->mid_res0, o, d, c, c);
    VaeAttn* a = &k->mid_attn; a->c = c;
#define VAE_ATT_T(field, s, nd, a0, a1, a2, a3) \
    snprintf(o, sizeof(o), "%s.middle.1." s, side); snprintf(d, sizeof(d), "%s.mid_block.attentions.0." s, side); vae_add_(b, &a->field, o, d, nd, a0, a1, a2, a3, 0);
    VAE_ATT_T(norm, "norm.gamma", 3, c, 1, 1, 0)
    VAE_ATT_T(qkv_w, "to_qkv.weight", 4, 3 * c, c, 1, 1)
    VAE_ATT_T(qkv_b, "to_qkv.bias", 1, 3 * c, 0, 0, 0)
    VAE_ATT_T(proj_w, "proj.weight", 4, c, c, 1, 1)
    VAE_ATT_T(proj_b, "proj.bias", 1, c, 0, 0, 0)
#undef VAE_ATT_T
    snprintf(o, sizeof(o), "%s.middle.2", side); snprintf(d, sizeof(d), "%s.mid_block.resnets.1", side);
    vae_add_res_(b, &k->mid_res1, o, d, c, c);
}

static void vae_add_resample_(VaeLayout_* b, VaeResample* s, const char* op, const char* dp, int c, int up, int temporal) {
    char o[128], d[128];
    s->c = c; s->up = up; s->temporal = temporal; s->cout = up ? c / 2 : c;
    snprintf(o, sizeof(o), "%s.resample.1.weight", op); snprintf(d, sizeof(d), "%s.resample.1.weight", dp);
    vae_add_(b, &s->conv_w, o, d, 4, s->cout, c, 3, 3, 0);
    snprintf(o, sizeof(o), "%s.resample.1.bias", op); snprintf(d, sizeof(d), "%s.resample.1.bias", dp);
    vae_add_(b, &s->conv_b, o, d, 1, s->cout, 0, 0, 0, 0);
    if (temporal) {
        snprintf(o, sizeof(o), "%s.time_conv.weight", op); snprintf(d, sizeof(d), "%s.time_conv.weight", dp);
        vae_add_(b, &s->time_w, o, d, 5, up ? 2 * c : c, c, 3, 1, 1);
        snprintf(o, sizeof(o), "%s.time_conv.bias", op); snprintf(d, sizeof(d), "%s.time_conv.bias", dp);
        vae_add_(b, &s->time_b, o, d, 1, up ? 2 * c : c, 0, 0, 0, 0);
    } else { s->time_w = s->time_b = NULL; }
}

// The one place the layout is written down, in the official module order (WanVAE_: encoder, conv1, conv2, decoder).
// Fills `tensors` (may be NULL) with both names, carves `base` (may be NULL) into *p, returns the tensor count and
// the element count in *total.
static int vae_layout(const VaeConfig* c, VaeTensor* tensors, VaeParams* p, double* base, size_t* total) {
    VaeParams scratch;
    if (!p) p = &scratch;
    memset(p, 0, sizeof(*p));
    VaeLayout_ b = {tensors, 0, 0, base};
    int S = c->num_stages, z = c->z_dim, nrb = c->num_res_blocks;
    char o[128], d[128];
    // encoder: dims = dim * [1] + dim_mult
    int ed[VAE_MAX_STAGES + 1]; ed[0] = c->dim;
    for (int i = 0; i < S; i++) ed[i + 1] = c->dim * c->dim_mult[i];
    VaeCoder* e = &p->enc; e->nres = nrb;
    vae_add_(&b, &e->conv_in_w, "encoder.conv1.weight", "encoder.conv_in.weight", 5, ed[0], 3, 3, 3, 3);
    vae_add_(&b, &e->conv_in_b, "encoder.conv1.bias", "encoder.conv_in.bias", 1, ed[0], 0, 0, 0, 0);
    int flat = 0;   // Encoder3d.downsamples / down_blocks is one flat list of blocks and resamples
    for (int i = 0; i < S; i++) {
        for (int r = 0; r < nrb; r++, flat++) {
            snprintf(o, sizeof(o), "encoder.downsamples.%d", flat); snprintf(d, sizeof(d), "encoder.down_blocks.%d", flat);
            vae_add_res_(&b, &e->res[i][r], o, d, r == 0 ? ed[i] : ed[i + 1], ed[i + 1]);
        }
        if (i < S - 1) {
            snprintf(o, sizeof(o), "encoder.downsamples.%d", flat); snprintf(d, sizeof(d), "encoder.down_blocks.%d", flat);
            vae_add_resample_(&b, &e->resample[i], o, d, ed[i + 1], 0, c->temporal_down[i]);
            flat++;
        }
    }
    vae_add_mid_(&b, e, "encoder", ed[S]);
    vae_add_(&b, &e->norm_out, "encoder.head.0.gamma", "encoder.norm_out.gamma", 4, ed[S], 1, 1, 1, 0);
    vae_add_(&b, &e->conv_out_w, "encoder.head.2.weight", "encoder.conv_out.weight", 5, 2 * z, ed[S], 3, 3, 3);
    vae_add_(&b, &e->conv_out_b, "encoder.head.2.bias", "encoder.conv_out.bias", 1, 2 * z, 0, 0, 0, 0);
    vae_add_(&b, &p->quant_w, "conv1.weight", "quant_conv.weight", 5, 2 * z, 2 * z, 1, 1, 1);
    vae_add_(&b, &p->quant_b, "conv1.bias", "quant_conv.bias", 1, 2 * z, 0, 0, 0, 0);
    vae_add_(&b, &p->post_quant_w, "conv2.weight", "post_quant_conv.weight", 5, z, z, 1, 1, 1);
    vae_add_(&b, &p->post_quant_b, "conv2.bias", "post_quant_conv.bias", 1, z, 0, 0, 0, 0);
    // decoder: dims = dim * [dim_mult[-1]] + dim_mult[::-1]; stage i > 0 takes half the channels (the up-sampling)
    int dd[VAE_MAX_STAGES + 1]; dd[0] = c->dim * c->dim_mult[S - 1];
    for (int i = 0; i < S; i++) dd[i + 1] = c->dim * c->dim_mult[S - 1 - i];
    VaeCoder* k = &p->dec; k->nres = nrb + 1;
    vae_add_(&b, &k->conv_in_w, "decoder.conv1.weight", "decoder.conv_in.weight", 5, dd[0], z, 3, 3, 3);
    vae_add_(&b, &k->conv_in_b, "decoder.conv1.bias", "decoder.conv_in.bias", 1, dd[0], 0, 0, 0, 0);
    vae_add_mid_(&b, k, "decoder", dd[0]);
    flat = 0;       // Decoder3d.upsamples is flat; diffusers groups it as up_blocks[i].resnets[r] / .upsamplers.0
    for (int i = 0; i < S; i++) {
        int cin = i == 0 ? dd[0] : dd[i] / 2;
        for (int r = 0; r < nrb + 1; r++, flat++) {
            snprintf(o, sizeof(o), "decoder.upsamples.%d", flat); snprintf(d, sizeof(d), "decoder.up_blocks.%d.resnets.%d", i, r);
            vae_add_res_(&b, &k->res[i][r], o, d, r == 0 ? cin : dd[i + 1], dd[i + 1]);
        }
        if (i < S - 1) {  // temperal_upsample = temperal_downsample[::-1]
            snprintf(o, sizeof(o), "decoder.upsamples.%d", flat); snprintf(d, sizeof(d), "decoder.up_blocks.%d.upsamplers.0", i);
            vae_add_resample_(&b, &k->resample[i], o, d, dd[i + 1], 1, c->temporal_down[S - 2 - i]);
            flat++;
        }
    }
    vae_add_(&b, &k->norm_out, "decoder.head.0.gamma", "decoder.norm_out.gamma", 4, dd[S], 1, 1, 1, 0);
    vae_add_(&b, &k->conv_out_w, "decoder.head.2.weight", "decoder.conv_out.weight", 5, 3, dd[S], 3, 3, 3);
    vae_add_(&b, &k->conv_out_b, "decoder.head.2.bias", "decoder.conv_out.bias", 1, 3, 0, 0, 0, 0);
    if (total) *total = b.total;
    return b.n;
}

static size_t vae_num_params(const VaeConfig* c) { size_t n; vae_layout(c, NULL, NULL, NULL, &n); return n; }

typedef struct { VaeConfig c; double* params; VaeParams P; } Vae;

static void vae_free(Vae* v) { free(v->params); memset(v, 0, sizeof(*v)); }

// a model with every parameter zero (for tests and callers that fill the weights themselves)
static int vae_init(Vae* v, const VaeConfig* c, char* err) {
    memset(v, 0, sizeof(*v));
    if (vae_config_check(c, err)) return -1;
    v->c = *c;
    size_t n = vae_num_params(c);
    v->params = (double*)calloc(n, sizeof(double));
    if (!v->params) { snprintf(err, ST_ERRLEN, "out of memory for %zu VAE parameters (%.1f GB in double)", n, n * 8e-9); return -1; }
    vae_layout(c, NULL, &v->P, v->params, NULL);
    return 0;
}

// ----------------------------------------------------------------------------------------------------------------
// loading: official or diffusers names (detected per tensor), config inferred from the shapes

static const StTensor* vae_find_(const StSet* s, const char* official, const char* diffusers, const StFile** f) {
    const StTensor* t = st_set_find(s, official, f);
    return t ? t : st_set_find(s, diffusers, f);
}

// Config from the tensors: base dim from the encoder's first conv, z_dim from post_quant_conv, the stage structure
// by walking the encoder's flat block list (same indices under both names), temporal down-sampling from time_conv.
static int vae_infer_config_(const StSet* s, VaeConfig* c, const char* path, char* err) {
    const StFile* f;
    memset(c, 0, sizeof(*c));
    const StTensor* ci = vae_find_(s, "encoder.conv1.weight", "encoder.conv_in.weight", &f);
    const StTensor* pq = vae_find_(s, "conv2.weight", "post_quant_conv.weight", &f);
    if (!ci || !pq) {
        snprintf(err, ST_ERRLEN, "%s: tensor '%s' not found (nor its diffusers name '%s'); is this a Wan2.1 VAE? expected "
                 "official Wan2.1 (wan/modules/vae.py) or diffusers AutoencoderKLWan names", path,
                 !ci ? "encoder.conv1.weight" : "conv2.weight", !ci ? "encoder.conv_in.weight" : "post_quant_conv.weight");
        return -1;
    }
    if (ci->ndim != 5 || pq->ndim != 5) { snprintf(err, ST_ERRLEN, "%s: encoder.conv1.weight and conv2.weight must be 5-D Conv3d weights", path); return -1; }
    c->dim = (int)ci->shape[0]; c->z_dim = (int)pq->shape[0];
    int flat = 0, nrb = -1, stage = 0;
    char o[128], d[128];
    for (;;) {
        snprintf(o, sizeof(o), "encoder.downsamples.%d.residual.2.weight", flat); snprintf(d, sizeof(d), "encoder.down_blocks.%d.conv1.weight", flat);
        const StTensor* rw = vae_find_(s, o, d, &f);
        snprintf(o, sizeof(o), "encoder.downsamples.%d.resample.1.weight", flat); snprintf(d, sizeof(d), "encoder.down_blocks.%d.resample.1.weight", flat);
        const StTensor* sw = vae_find_(s, o, d, &f);
        if (!rw && !sw) break;
        if (stage >= VAE_MAX_STAGES) { snprintf(err, ST_ERRLEN, "%s: more than %d encoder stages", path, VAE_MAX_STAGES); return -1; }
        int n = 0;
        while (rw) {  // the residual blocks of this stage
            c->dim_mult[stage] = (int)rw->shape[0] / (c->dim > 0 ? c->dim : 1);
            n++; flat++;
            snprintf(o, sizeof(o), "encoder.downsamples.%d.residual.2.weight", flat); snprintf(d, sizeof(d), "encoder.down_blocks.%d.conv1.weight", flat);
            rw = vae_find_(s, o, d, &f);
        }
        if (nrb < 0) nrb = n;
        else if (n != nrb) { snprintf(err, ST_ERRLEN, "%s: encoder stage %d has %d residual blocks, stage 0 has %d", path, stage, n, nrb); return -1; }
        snprintf(o, sizeof(o), "encoder.downsamples.%d.resample.1.weight", flat); snprintf(d, sizeof(d), "encoder.down_blocks.%d.resample.1.weight", flat);
        sw = vae_find_(s, o, d, &f);
        stage++;
        if (!sw) break;
        snprintf(o, sizeof(o), "encoder.downsamples.%d.time_conv.weight", flat); snprintf(d, sizeof(d), "encoder.down_blocks.%d.time_conv.weight", flat);
        c->temporal_down[stage - 1] = vae_find_(s, o, d, &f) != NULL;
        flat++;
    }
    c->num_stages = stage; c->num_res_blocks = nrb;
    return vae_config_check(c, err);
}

static void vae_shape_str_(char* buf, size_t n, const int64_t* s, int nd) {
    int o = snprintf(buf, n, "[");
    for (int i = 0; i < nd && o < (int)n; i++) o += snprintf(buf + o, n - o, i ? ", %lld" : "%lld", (long long)s[i]);
    if (o < (int)n) snprintf(buf + o, n - o, "]");
}

// Loads a VAE checkpoint (.safetensors, a sharded index.json or a directory holding one; F32/BF16/F16; official or
// diffusers names). If `expect` is not NULL the inferred config must equal it. Missing, mis-shaped and unexpected
// tensors are errors that name the tensor.
static int vae_load(Vae* v, const char* path, const VaeConfig* expect, char* err) {
    memset(v, 0, sizeof(*v));
    StSet s;
    if (st_set_open(&s, path, err)) return -1;
    VaeConfig c;
    if (vae_infer_config_(&s, &c, path, err)) { st_set_close(&s); return -1; }
    if (expect && memcmp(&c, expect, sizeof(c)) != 0) {
        char a[160], b[160]; FILE* m;
        m = fmemopen(a, sizeof(a), "w"); vae_config_print(&c, m); fclose(m);
        m = fmemopen(b, sizeof(b), "w"); vae_config_print(expect, m); fclose(m);
        a[strcspn(a, "\n")] = 0; b[strcspn(b, "\n")] = 0;
        snprintf(err, ST_ERRLEN, "%s: the checkpoint holds %s but %s was expected", path, a, b);
        st_set_close(&s); return -1;
    }
    if (vae_init(v, &c, err)) { st_set_close(&s); return -1; }
    VaeTensor* tl = (VaeTensor*)malloc(sizeof(VaeTensor) * VAE_MAX_TENSORS);
    int nt = vae_layout(&c, tl, NULL, NULL, NULL), rc = 0, matched = 0;
    for (int i = 0; i < nt && !rc; i++) {
        const StFile* f = NULL;
        const StTensor* t = vae_find_(&s, tl[i].name, tl[i].dname, &f);
        char want[96], got[96];
        vae_shape_str_(want, sizeof(want), tl[i].shape, tl[i].ndim);
        if (!t) {
            snprintf(err, ST_ERRLEN, "%s: tensor '%s' (diffusers '%s', shape %s) is missing; the checkpoint is incomplete or "
                     "its structure differs from the one inferred from encoder.downsamples", path, tl[i].name, tl[i].dname, want);
            rc = -1; break;
        }
        int same = t->ndim == tl[i].ndim;
        for (int dd = 0; same && dd < t->ndim; dd++) same = t->shape[dd] == tl[i].shape[dd];
        if (!same) {
            vae_shape_str_(got, sizeof(got), t->shape, t->ndim);
            snprintf(err, ST_ERRLEN, "%s: tensor '%s' has shape %s but the inferred config expects %s", path, t->name, got, want);
            rc = -1; break;
        }
        char e2[ST_ERRLEN];
        if (st_read_double(f, t, v->params + tl[i].offset, e2)) { snprintf(err, ST_ERRLEN, "%s", e2); rc = -1; }
        matched++;
    }
    if (!rc) {  // every tensor of the file must have been used: an extra one means a different model
        int total = 0;
        for (int i = 0; i < s.n_files; i++) total += s.files[i].n;
        if (total != matched) {
            for (int i = 0; i < s.n_files && !rc; i++)
                for (int j = 0; j < s.files[i].n && !rc; j++) {
                    const char* nm = s.files[i].tensors[j].name;
                    int known = 0;
                    for (int q = 0; q < nt && !known; q++) known = !strcmp(nm, tl[q].name) || !strcmp(nm, tl[q].dname);
                    if (!known) {
                        snprintf(err, ST_ERRLEN, "%s: unexpected tensor '%s' (%d tensors in the file, %d expected for the inferred "
                                 "config); not a Wan2.1 VAE (attention in the up/down blocks, Wan2.2's residual blocks?)", path, nm, total, nt);
                        rc = -1;
                    }
                }
            if (!rc) { snprintf(err, ST_ERRLEN, "%s: %d tensors but %d expected (a tensor present under both naming conventions?)", path, total, nt); rc = -1; }
        }
    }
    free(tl); st_set_close(&s);
    if (rc) vae_free(v);
    return rc;
}

// Writes the parameters as F32 under official (diffusers_names = 0) or diffusers names.
static int vae_save(const char* path, const Vae* v, int diffusers_names, char* err) {
    VaeTensor* tl = (VaeTensor*)malloc(sizeof(VaeTensor) * VAE_MAX_TENSORS);
    int nt = vae_layout(&v->c, tl, NULL, NULL, NULL);
    StOut* o = (StOut*)calloc((size_t)nt, sizeof(StOut));
    for (int i = 0; i < nt; i++) {
        o[i].name = diffusers_names ? tl[i].dname : tl[i].name; o[i].ndim = tl[i].ndim; o[i].f64 = v->params + tl[i].offset;
        for (int d = 0; d < tl[i].ndim; d++) o[i].shape[d] = tl[i].shape[d];
    }
    int rc = st_write(path, o, nt, NULL, 0, err);
    free(o); free(tl);
    return rc;
}

// ----------------------------------------------------------------------------------------------------------------
// memory accounting: every activation and cache buffer goes through here, so the peak is known, not guessed

static size_t vae_mem_now = 0, vae_mem_peak = 0;
static double* vae_alloc_(size_t n) {
    double* p = (double*)calloc(n ? n : 1, sizeof(double));
    if (!p) { fprintf(stderr, "error: out of memory allocating %zu doubles (%.2f GB) for VAE activations\n", n, n * 8e-9); exit(1); }
    vae_mem_now += n * sizeof(double);
    if (vae_mem_now > vae_mem_peak) vae_mem_peak = vae_mem_now;
    return p;
}
static void vae_release_(double* p, size_t n) { if (p) { free(p); vae_mem_now -= n * sizeof(double); } }

// ----------------------------------------------------------------------------------------------------------------
// layers. A tensor is [C][T][H][W] (channel stride T*H*W). Every layer overwrites its output.

typedef struct { double* p; int C, T, H, W; } VaeT;
#define VAE_BUF(ptr) ((VaeT){(ptr), 0, 0, 0, 0})   // a buffer whose shape the layer writing it sets
static size_t vae_plane(const VaeT* x) { return (size_t)x->H * x->W; }
static double* vae_at(const VaeT* x, int c, int t) { return x->p + ((size_t)c * x->T + t) * vae_plane(x); }

static double vae_flops = 0;   // multiply-adds x 2 of the convolutions and attention, for the GFLOP/s report

// One output frame of a convolution with kernel (KT, KH, KW), spatial stride s and zero padding (pt top, pl left;
// bottom/right follow from Ho, Wo). in[kt] points at channel 0 of input frame kt (NULL = a zero frame of the causal
// padding), channel stride in_cs, planes H x W; with up2 the planes are read nearest-neighbour up-sampled by 2 (so
// they are 2H x 2W logically). Weights [Cout][Cin][KT][KH][KW]. out: channel 0 of the output frame, stride out_cs.
#define VAE_OB 8   // output channels per accumulator block
static void vae_conv_frame(double* out, size_t out_cs, const double* const* in, size_t in_cs, int Cin, int H, int W, int up2,
                           const double* w, const double* b, int Cout, int KT, int KH, int KW, int s, int pt, int pl, int Ho, int Wo) {
    int Hl = up2 ? 2 * H : H, Wl = up2 ? 2 * W : W;   // the logical input size
    int nblk = (Cout + VAE_OB - 1) / VAE_OB;
    for (int kt = 0; kt < KT; kt++) if (in[kt]) vae_flops += 2.0 * Cout * Cin * KH * KW * (double)Ho * Wo;
#pragma omp parallel for collapse(2) schedule(dynamic) if ((double)Cout * Cin * KT * KH * KW * Ho * Wo >= 1e6)
    for (int yo = 0; yo < Ho; yo++)
        for (int blk = 0; blk < nblk; blk++) {
            double acc[VAE_OB][Wo];
            double rowbuf[Wl];
            int o0 = blk * VAE_OB, no = Cout - o0 < VAE_OB ? Cout - o0 : VAE_OB;
            for (int o = 0; o < no; o++) for (int x = 0; x < Wo; x++) acc[o][x] = b ? b[o0 + o] : 0;
            for (int kt = 0; kt < KT; kt++) {
                if (!in[kt]) continue;
                for (int ic = 0; ic < Cin; ic++) {
                    const double* plane = in[kt] + (size_t)ic * in_cs;
                    for (int kh = 0; kh < KH; kh++) {
                        int yi = yo * s + kh - pt;
                        if (yi < 0 || yi >= Hl) continue;
                        const double* row;
                        if (up2) { const double* src = plane + (size_t)(yi / 2) * W; for (int x = 0; x < Wl; x++) rowbuf[x] = src[x / 2]; row = rowbuf; }
                        else row = plane + (size_t)yi * W;
                        for (int kw = 0; kw < KW; kw++) {
                            int dx = kw - pl;   // xi = xo*s + dx must lie in [0, Wl)
                            int x0 = dx < 0 ? (-dx + s - 1) / s : 0;
                            int x1 = (Wl - 1 - dx) / s + 1; if (Wl - 1 - dx < 0) x1 = 0; if (x1 > Wo) x1 = Wo;
                            for (int o = 0; o < no; o++) {
                                double wv = w[((((size_t)(o0 + o) * Cin + ic) * KT + kt) * KH + kh) * KW + kw];
                                double* a = acc[o];
                                if (s == 1) {   // a and r never overlap: simd without the alias check (1.6x here)
                                    const double* r = row + dx;
#pragma omp simd
                                    for (int x = x0; x < x1; x++) a[x] += wv * r[x];
                                }
                                else for (int x = x0; x < x1; x++) a[x] += wv * row[x * s + dx];
                            }
                        }
                    }
                }
            }
            for (int o = 0; o < no; o++) memcpy(out + (size_t)(o0 + o) * out_cs + (size_t)yo * Wo, acc[o], sizeof(double) * Wo);
        }
}

// RMS_norm over channels (F.normalize: x / max(|x|, 1e-12)) * sqrt(C) * gamma, then SiLU when silu; out may be x
static void vae_norm(VaeT* out, const VaeT* x, const double* gamma, int silu, double* scratch) {
    size_t n = (size_t)x->T * vae_plane(x);
    for (size_t i = 0; i < n; i++) scratch[i] = 0;
    for (int c = 0; c < x->C; c++) { const double* p = x->p + c * n; for (size_t i = 0; i < n; i++) scratch[i] += p[i] * p[i]; }
    for (size_t i = 0; i < n; i++) scratch[i] = 1.0 / fmax(sqrt(scratch[i]), 1e-12);
    double sc = sqrt((double)x->C);
    *out = (VaeT){out->p, x->C, x->T, x->H, x->W};
    for (int c = 0; c < x->C; c++) {
        const double* p = x->p + c * n; double* q = out->p + c * n; double g = gamma[c] * sc;
        for (size_t i = 0; i < n; i++) {
            double v = p[i] * scratch[i] * g;
            q[i] = silu ? v / (1.0 + exp(-v)) : v;
        }
    }
}

// The feature cache of one causal conv: the last (up to 2) frames of its input, [C][2][H][W]. `started` marks the
// first chunk of the upsample3d / downsample3d time convs, which behave differently there.
typedef struct { double* p; int C, H, W, n, started; size_t size; } VaeCache;

static void vae_cache_free(VaeCache* k) { vae_release_(k->p, k->size); memset(k, 0, sizeof(*k)); }
static double* vae_cache_frame(VaeCache* k, int c, int j) { return k->p + ((size_t)c * 2 + j) * k->H * k->W; }

// keep the last frames of [cache, x] (at most 2, or `keep`)
static void vae_cache_push(VaeCache* k, const VaeT* x, int keep) {
    if (!k->p) { k->C = x->C; k->H = x->H; k->W = x->W; k->size = (size_t)x->C * 2 * x->H * x->W; k->p = vae_alloc_(k->size); k->n = 0; }
    size_t pl = vae_plane(x);
    int total = k->n + x->T, n = total < keep ? total : keep;
    for (int c = 0; c < x->C; c++) {
        // the kept frames are frames total-n .. total-1 of [cache (k->n), x (x->T)]; walk forward, so a cache frame
        // moves only to an earlier or equal slot
        for (int j = 0; j < n; j++) {
            int src = total - n + j;
            const double* from = src < k->n ? vae_cache_frame(k, c, src) : vae_at(x, c, src - k->n);
            double* to = vae_cache_frame(k, c, j);
            if (from != to) memmove(to, from, sizeof(double) * pl);
        }
    }
    k->n = n;
}

// causal conv with kernel (3, 3, 3), padding 1 in space and 2 in front in time, through the cache
static void vae_causal_conv3(VaeT* out, const VaeT* x, VaeCache* k, const double* w, const double* b, int Cout) {
    *out = (VaeT){out->p, Cout, x->T, x->H, x->W};
    size_t pl = vae_plane(x);
    for (int t = 0; t < x->T; t++) {
        const double* in[3];
        for (int kt = 0; kt < 3; kt++) {
            int j = t + kt - 2;   // frame index in x; negative = from the cache (or zero padding)
            if (j >= 0) in[kt] = vae_at(x, 0, j);
            else { int ci = k->n + j; in[kt] = ci >= 0 ? vae_cache_frame(k, 0, ci) : NULL; }
        }
        // the cache frames have channel stride 2*plane, x frames T*plane: convolve them in two passes if mixed
        const double* a[3] = {NULL, NULL, NULL}; const double* c_[3] = {NULL, NULL, NULL};
        int has_cache = 0;
        for (int kt = 0; kt < 3; kt++) { if (t + kt - 2 >= 0) a[kt] = in[kt]; else { c_[kt] = in[kt]; has_cache |= in[kt] != NULL; } }
        vae_conv_frame(vae_at(out, 0, t), (size_t)out->T * pl, a, (size_t)x->T * pl, x->C, x->H, x->W, 0, w, b, Cout, 3, 3, 3, 1, 1, 1, x->H, x->W);
        if (has_cache) {
            VaeT tmp = {vae_alloc_((size_t)Cout * pl), Cout, 1, x->H, x->W};
            vae_conv_frame(tmp.p, pl, c_, 2 * pl, x->C, x->H, x->W, 0, w, NULL, Cout, 3, 3, 3, 1, 1, 1, x->H, x->W);
            for (int o = 0; o < Cout; o++) { double* d = vae_at(out, o, t); const double* s = tmp.p + o * pl; for (size_t i = 0; i < pl; i++) d[i] += s[i]; }
            vae_release_(tmp.p, (size_t)Cout * pl);
        }
    }
    vae_cache_push(k, x, 2);
}

// pointwise conv (1x1x1 or 1x1): out[o] = b[o] + sum_i w[o][i] x[i]; out may not alias x
static void vae_pointwise(VaeT* out, const VaeT* x, const double* w, const double* b, int Cout) {
    *out = (VaeT){out->p, Cout, x->T, x->H, x->W};
    size_t n = (size_t)x->T * vae_plane(x);
    vae_flops += 2.0 * Cout * x->C * (double)n;
#pragma omp parallel for if ((double)Cout * x->C * n >= 1e6)
    for (int o = 0; o < Cout; o++) {
        double* q = out->p + o * n;
        for (size_t i = 0; i < n; i++) q[i] = b[o];
        for (int c = 0; c < x->C; c++) { double wv = w[(size_t)o * x->C + c]; const double* p = x->p + c * n; for (size_t i = 0; i < n; i++) q[i] += wv * p[i]; }
    }
}

// the scratch of one encode or decode, sized once by vae_plan: the activation x lives in p[0], layers use p[1..3]
typedef struct { double* p[4]; size_t act; double* norm; size_t normn; } VaeBufs;

// ResidualBlock on x (in B->p[0]), the result written over it
static void vae_resblock(VaeT* x, const VaeResBlock* r, VaeCache* k1, VaeCache* k2, VaeBufs* B) {
    VaeT h = VAE_BUF(B->p[1]), c1 = VAE_BUF(B->p[2]), sc = VAE_BUF(B->p[3]);
    vae_norm(&h, x, r->norm1, 1, B->norm);
    vae_causal_conv3(&c1, &h, k1, r->conv1_w, r->conv1_b, r->cout);
    vae_norm(&h, &c1, r->norm2, 1, B->norm);
    vae_causal_conv3(&c1, &h, k2, r->conv2_w, r->conv2_b, r->cout);
    const double* shortcut = x->p;
    if (r->shortcut_w) { vae_pointwise(&sc, x, r->shortcut_w, r->shortcut_b, r->cout); shortcut = sc.p; }
    size_t n = (size_t)r->cout * x->T * vae_plane(x);
    for (size_t i = 0; i < n; i++) x->p[i] = c1.p[i] + shortcut[i];
    x->C = r->cout;
}

// AttentionBlock: per frame, one head over the H*W pixels; x += proj(softmax(q k^T / sqrt(C)) v)
static void vae_attention(VaeT* x, const VaeAttn* a, VaeBufs* B) {
    int C = x->C; size_t L = vae_plane(x);
    VaeT n = VAE_BUF(B->p[1]), qkv = VAE_BUF(B->p[2]), o = VAE_BUF(B->p[3]);
    vae_norm(&n, x, a->norm, 0, B->norm);
    vae_pointwise(&qkv, &n, a->qkv_w, a->qkv_b, 3 * C);
    double scale = 1.0 / sqrt((double)C);
    vae_flops += 4.0 * C * (double)L * L * x->T;
    for (int t = 0; t < x->T; t++) {
        // token-major copies of q, k, v (L x C) so the dot products run over contiguous channels
        double* qt = vae_alloc_(3 * L * C); double* kt = qt + L * C; double* vt = kt + L * C;
        for (int c = 0; c < C; c++)
            for (size_t i = 0; i < L; i++) {
                qt[i * C + c] = vae_at(&qkv, c, t)[i]; kt[i * C + c] = vae_at(&qkv, C + c, t)[i]; vt[i * C + c] = vae_at(&qkv, 2 * C + c, t)[i];
            }
#pragma omp parallel for if ((double)L * L * C >= 1e6)
        for (size_t i = 0; i < L; i++) {
            double* s = (double*)malloc(sizeof(double) * L); double* acc = (double*)calloc((size_t)C, sizeof(double));
            double m = -INFINITY;
            for (size_t j = 0; j < L; j++) { double d = 0; for (int c = 0; c < C; c++) d += qt[i * C + c] * kt[j * C + c]; s[j] = d * scale; m = fmax(m, s[j]); }
            double z = 0;
            for (size_t j = 0; j < L; j++) { s[j] = exp(s[j] - m); z += s[j]; }
            for (size_t j = 0; j < L; j++) { double p = s[j] / z; for (int c = 0; c < C; c++) acc[c] += p * vt[j * C + c]; }
            for (int c = 0; c < C; c++) o.p[((size_t)c * x->T + t) * L + i] = acc[c];
            free(s); free(acc);
        }
        vae_release_(qt, 3 * L * C);
    }
    o.C = C; o.T = x->T; o.H = x->H; o.W = x->W;
    VaeT pr = VAE_BUF(B->p[2]);
    vae_pointwise(&pr, &o, a->proj_w, a->proj_b, C);
    size_t nn = (size_t)C * x->T * L;
    for (size_t i = 0; i < nn; i++) x->p[i] += pr.p[i];
}

// Resample. Up: [upsample3d: time_conv through the cache, interleave] nearest x2 + conv3x3 -> cout channels.
// Down: zero pad (0,1,0,1), conv3x3 stride 2 [downsample3d: time_conv stride 2 over [last frame, chunk]].
static int vae_resample(VaeT* x, const VaeResample* r, VaeCache* k, VaeBufs* B, char* err) {
    size_t pl = vae_plane(x);
    if (r->up) {
        if (r->temporal) {
            if (!k->started) { k->started = 1; }   // first chunk: no time conv ("Rep")
            else {
                // time_conv (3,1,1) C -> 2C, causal over [cache, x]; then frame 2j = channels [0,C), 2j+1 = [C,2C)
                VaeT tc = {B->p[1], 2 * r->c, x->T, x->H, x->W};
                for (int t = 0; t < x->T; t++) {
                    const double *a[3] = {NULL, NULL, NULL}, *c_[3] = {NULL, NULL, NULL};
                    int has_cache = 0;
                    for (int kt = 0; kt < 3; kt++) {
                        int j = t + kt - 2;
                        if (j >= 0) a[kt] = vae_at(x, 0, j);
                        else { int ci = k->n + j; if (ci >= 0 && k->p) { c_[kt] = vae_cache_frame(k, 0, ci); has_cache = 1; } }
                    }
                    vae_conv_frame(vae_at(&tc, 0, t), (size_t)tc.T * pl, a, (size_t)x->T * pl, r->c, x->H, x->W, 0, r->time_w, r->time_b, 2 * r->c, 3, 1, 1, 1, 0, 0, x->H, x->W);
                    if (has_cache) {
                        double* tmp = vae_alloc_((size_t)2 * r->c * pl);
                        vae_conv_frame(tmp, pl, c_, 2 * pl, r->c, x->H, x->W, 0, r->time_w, NULL, 2 * r->c, 3, 1, 1, 1, 0, 0, x->H, x->W);
                        for (int o = 0; o < 2 * r->c; o++) { double* d = vae_at(&tc, o, t); for (size_t i = 0; i < pl; i++) d[i] += tmp[o * pl + i]; }
                        vae_release_(tmp, (size_t)2 * r->c * pl);
                    }
                }
                vae_cache_push(k, x, 2);
                int T2 = 2 * x->T;
                for (int c = 0; c < r->c; c++)
                    for (int t = 0; t < x->T; t++)
                        for (int h = 0; h < 2; h++) memcpy(x->p + ((size_t)c * T2 + 2 * t + h) * pl, vae_at(&tc, h * r->c + c, t), sizeof(double) * pl);
                x->T = T2;
            }
        }
        VaeT y = {B->p[2], r->cout, x->T, 2 * x->H, 2 * x->W};
        size_t pl2 = vae_plane(&y);
        for (int t = 0; t < x->T; t++) {
            const double* in[1] = {vae_at(x, 0, t)};
            vae_conv_frame(vae_at(&y, 0, t), (size_t)y.T * pl2, in, (size_t)x->T * pl, r->c, x->H, x->W, 1, r->conv_w, r->conv_b, r->cout, 1, 3, 3, 1, 1, 1, y.H, y.W);
        }
        memcpy(x->p, y.p, sizeof(double) * r->cout * y.T * pl2);
        *x = (VaeT){x->p, r->cout, y.T, y.H, y.W};
        return 0;
    }
    // down: output (H + 1 - 3) / 2 + 1 after the (0, 1, 0, 1) zero pad
    int Ho = (x->H - 2) / 2 + 1, Wo = (x->W - 2) / 2 + 1;
    VaeT y = {B->p[2], r->c, x->T, Ho, Wo};
    size_t pl2 = vae_plane(&y);
    for (int t = 0; t < x->T; t++) {
        const double* in[1] = {vae_at(x, 0, t)};
        vae_conv_frame(vae_at(&y, 0, t), (size_t)y.T * pl2, in, (size_t)x->T * pl, r->c, x->H, x->W, 0, r->conv_w, r->conv_b, r->c, 1, 3, 3, 2, 0, 0, Ho, Wo);
    }
    if (r->temporal) {
        if (!k->started) { k->started = 1; vae_cache_push(k, &y, 1); }   // first chunk passes through, remembered
        else {
            // time_conv (3,1,1) stride 2, no padding, over [last frame of the previous chunk, y]
            int n_in = 1 + y.T, To = (n_in - 3) / 2 + 1;
            if (n_in < 3) { snprintf(err, ST_ERRLEN, "a temporal down-sampling got a chunk of %d frame(s); it needs at least 2 (frame counts must be 1 + 4k)", y.T); return -1; }
            VaeT z = {B->p[3], r->c, To, Ho, Wo};
            for (int t = 0; t < To; t++) {
                const double *a[3] = {NULL, NULL, NULL}, *c_[3] = {NULL, NULL, NULL};
                for (int kt = 0; kt < 3; kt++) { int j = 2 * t + kt - 1; if (j >= 0) a[kt] = vae_at(&y, 0, j); else c_[kt] = vae_cache_frame(k, 0, k->n - 1); }
                vae_conv_frame(vae_at(&z, 0, t), (size_t)To * pl2, a, (size_t)y.T * pl2, r->c, Ho, Wo, 0, r->time_w, r->time_b, r->c, 3, 1, 1, 1, 0, 0, Ho, Wo);
                if (c_[0]) {
                    double* tmp = vae_alloc_((size_t)r->c * pl2);
                    vae_conv_frame(tmp, pl2, c_, 2 * pl2, r->c, Ho, Wo, 0, r->time_w, NULL, r->c, 3, 1, 1, 1, 0, 0, Ho, Wo);
                    for (int o = 0; o < r->c; o++) { double* d = vae_at(&z, o, t); for (size_t i = 0; i < pl2; i++) d[i] += tmp[o * pl2 + i]; }
                    vae_release_(tmp, (size_t)r->c * pl2);
                }
            }
            vae_cache_push(k, &y, 1);
            y = z;
        }
    }
    memcpy(x->p, y.p, sizeof(double) * r->c * y.T * pl2);
    *x = (VaeT){x->p, r->c, y.T, Ho, Wo};
    return 0;
}

// ----------------------------------------------------------------------------------------------------------------
// chunked encode / decode

typedef struct { VaeCache in, res[VAE_MAX_STAGES][VAE_MAX_RES][2], resample[VAE_MAX_STAGES], mid[2][2], out; } VaeCoderCache;

static void vae_coder_cache_free(VaeCoderCache* k) {
    vae_cache_free(&k->in); vae_cache_free(&k->out);
    for (int i = 0; i < VAE_MAX_STAGES; i++) {
        vae_cache_free(&k->resample[i]);
        for (int r = 0; r < VAE_MAX_RES; r++) { vae_cache_free(&k->res[i][r][0]); vae_cache_free(&k->res[i][r][1]); }
    }
    for (int i = 0; i < 2; i++) { vae_cache_free(&k->mid[i][0]); vae_cache_free(&k->mid[i][1]); }
}

static size_t vae_max_(size_t a, size_t b) { return a > b ? a : b; }

// The largest tensor one chunk creates (elements), walking the same shapes as the forward below: a later chunk is
// the largest (4 frames into the encoder; one latent frame grows to vae_temporal_factor frames in the decoder).
static size_t vae_plan(const VaeConfig* c, int decode, int H, int W) {
    VaeParams p; vae_layout(c, NULL, &p, NULL, NULL);   // the channel counts, without weights
    const VaeParams* P = &p;
    size_t m = 0;
    int S = c->num_stages;
    if (decode) {
        const VaeCoder* k = &P->dec;
        size_t t = 1, hw = (size_t)H * W;
        m = vae_max_(m, (size_t)c->z_dim * hw);
        m = vae_max_(m, 3 * (size_t)k->mid_attn.c * hw);
        for (int i = 0; i < S; i++) {
            for (int r = 0; r < k->nres; r++) m = vae_max_(m, (size_t)vae_max_(k->res[i][r].cin, k->res[i][r].cout) * t * hw);
            if (i < S - 1) {
                const VaeResample* s = &k->resample[i];
                if (s->temporal) { m = vae_max_(m, 2 * (size_t)s->c * t * hw); t *= 2; }
                m = vae_max_(m, (size_t)s->c * t * hw);
                hw *= 4;
                m = vae_max_(m, (size_t)s->cout * t * hw);
            }
        }
        m = vae_max_(m, 3 * t * hw);
    } else {
        const VaeCoder* k = &P->enc;
        size_t t = VAE_CHUNK, hw = (size_t)H * W;
        m = vae_max_(m, 3 * t * hw);
        for (int i = 0; i < S; i++) {
            for (int r = 0; r < k->nres; r++) m = vae_max_(m, (size_t)vae_max_(k->res[i][r].cin, k->res[i][r].cout) * t * hw);
            if (i < S - 1) {
                hw = (size_t)((H >> i) - 2) / 2 + 1; hw *= (size_t)((W >> i) - 2) / 2 + 1;
                m = vae_max_(m, (size_t)k->resample[i].c * t * hw);
                if (k->resample[i].temporal) t = (t + 1 - 3) / 2 + 1;
            }
        }
        m = vae_max_(m, 3 * (size_t)k->mid_attn.c * t * hw);
        m = vae_max_(m, 2 * (size_t)c->z_dim * t * hw);
    }
    return m;
}

static void vae_bufs_init(VaeBufs* b, size_t act, int dim) {
    // the norm scratch holds T*H*W of a normed tensor; every normed tensor has >= dim/2 channels (the decoder's
    // stage inputs are half a stage's width, never below dim/2), so T*H*W <= 2*act/dim
    b->act = act; b->normn = 2 * act / (size_t)dim + 1;
    for (int i = 0; i < 4; i++) b->p[i] = vae_alloc_(act);
    b->norm = vae_alloc_(b->normn);
}
static void vae_bufs_free(VaeBufs* b) { for (int i = 0; i < 4; i++) vae_release_(b->p[i], b->act); vae_release_(b->norm, b->normn); }
static void vae_swap_(double** a, double** b) { double* t = *a; *a = *b; *b = t; }

static void vae_mid(VaeT* x, const VaeCoder* k, VaeCoderCache* kc, VaeBufs* B) {
    vae_resblock(x, &k->mid_res0, &kc->mid[0][0], &kc->mid[0][1], B);
    vae_attention(x, &k->mid_attn, B);
    vae_resblock(x, &k->mid_res1, &kc->mid[1][0], &kc->mid[1][1], B);
}

// norm_out, SiLU, conv_out through its cache: x -> [cout, T, H, W] in B->p[0]
static void vae_head(VaeT* x, const VaeCoder* k, VaeCoderCache* kc, VaeBufs* B, int cout) {
    VaeT h = VAE_BUF(B->p[1]), y = VAE_BUF(B->p[2]);
    vae_norm(&h, x, k->norm_out, 1, B->norm);
    vae_causal_conv3(&y, &h, &kc->out, k->conv_out_w, k->conv_out_b, cout);
    vae_swap_(&B->p[0], &B->p[2]);
    *x = y; x->p = B->p[0];
}

// one decoder chunk: latent frame z [z_dim, 1, h, w] -> frames [3, t, 8h, 8w] in B->p[0] (x describes them)
static int vae_decoder_chunk(const Vae* v, VaeCoderCache* kc, VaeBufs* B, VaeT* x, const VaeT* z, char* err) {
    const VaeCoder* k = &v->P.dec;
    VaeT y = VAE_BUF(B->p[1]);
    vae_pointwise(&y, z, v->P.post_quant_w, v->P.post_quant_b, v->c.z_dim);
    VaeT c0 = VAE_BUF(B->p[0]);
    vae_causal_conv3(&c0, &y, &kc->in, k->conv_in_w, k->conv_in_b, k->mid_res0.cin);
    *x = c0;
    vae_mid(x, k, kc, B);
    for (int i = 0; i < v->c.num_stages; i++) {
        for (int r = 0; r < k->nres; r++) vae_resblock(x, &k->res[i][r], &kc->res[i][r][0], &kc->res[i][r][1], B);
        if (i < v->c.num_stages - 1 && vae_resample(x, &k->resample[i], &kc->resample[i], B, err)) return -1;
    }
    vae_head(x, k, kc, B, 3);
    return 0;
}

// one encoder chunk: frames [3, t, H, W] already in B->p[0] (x) -> [2 z_dim, t', H/s, W/s] in B->p[0]
static int vae_encoder_chunk(const Vae* v, VaeCoderCache* kc, VaeBufs* B, VaeT* x, char* err) {
    const VaeCoder* k = &v->P.enc;
    VaeT c0 = VAE_BUF(B->p[1]);
    vae_causal_conv3(&c0, x, &kc->in, k->conv_in_w, k->conv_in_b, k->res[0][0].cin);
    vae_swap_(&B->p[0], &B->p[1]);
    *x = c0;
    for (int i = 0; i < v->c.num_stages; i++) {
        for (int r = 0; r < k->nres; r++) vae_resblock(x, &k->res[i][r], &kc->res[i][r][0], &kc->res[i][r][1], B);
        if (i < v->c.num_stages - 1 && vae_resample(x, &k->resample[i], &kc->resample[i], B, err)) return -1;
    }
    vae_mid(x, k, kc, B);
    vae_head(x, k, kc, B, 2 * v->c.z_dim);
    VaeT q = VAE_BUF(B->p[1]);
    vae_pointwise(&q, x, v->P.quant_w, v->P.quant_b, 2 * v->c.z_dim);
    vae_swap_(&B->p[0], &B->p[1]);
    *x = q;
    return 0;
}

static double vae_cpu_s_(void) { return (double)clock() / CLOCKS_PER_SEC; }   // process CPU time (all threads)

// Decodes a raw latent z [z_dim, T, h, w] (what diffusers' decode takes) into video [3, vae_decoded_frames(T), s*h,
// s*w], clamped to [-1, 1]. One latent frame per chunk through the feature cache: memory is the caches plus a few
// buffers of one chunk, independent of T. progress: NULL or a stream for one line per chunk.
static int vae_decode(const Vae* v, double* video, const double* z, int T, int h, int w, FILE* progress, char* err) {
    const VaeConfig* c = &v->c;
    if (T < 1 || h < 1 || w < 1) { snprintf(err, ST_ERRLEN, "decode: latent [%d, %d, %d, %d] must have at least one frame and pixel", c->z_dim, T, h, w); return -1; }
    int s = vae_spatial_factor(c), H = h * s, W = w * s, To = vae_decoded_frames(c, T);
    VaeBufs B; vae_bufs_init(&B, vae_plan(c, 1, h, w), c->dim);
    VaeCoderCache kc; memset(&kc, 0, sizeof(kc));
    double* zc = vae_alloc_((size_t)c->z_dim * h * w);
    int rc = 0, f0 = 0;
    for (int t = 0; t < T && !rc; t++) {
        double t0 = now_s(), c0 = vae_cpu_s_(), fl0 = vae_flops;
        for (int ch = 0; ch < c->z_dim; ch++) memcpy(zc + (size_t)ch * h * w, z + ((size_t)ch * T + t) * h * w, sizeof(double) * h * w);
        VaeT zt = {zc, c->z_dim, 1, h, w}, x;
        if ((rc = vae_decoder_chunk(v, &kc, &B, &x, &zt, err))) break;
        for (int ch = 0; ch < 3; ch++)
            for (int j = 0; j < x.T; j++) {
                const double* src = vae_at(&x, ch, j); double* dst = video + ((size_t)ch * To + f0 + j) * H * W;
                for (size_t i = 0; i < (size_t)H * W; i++) dst[i] = fmin(1.0, fmax(-1.0, src[i]));   // clamp to [-1, 1]
            }
        if (progress) { double dt = now_s() - t0; fprintf(progress, "  decode chunk %d/%d: latent frame %d -> frames %d..%d, %.2f s (%.2f s CPU), %.2f GFLOP/s\n", t + 1, T, t, f0, f0 + x.T - 1, dt, vae_cpu_s_() - c0, (vae_flops - fl0) / dt * 1e-9); }
        f0 += x.T;
    }
    if (!rc && f0 != To) { snprintf(err, ST_ERRLEN, "decode: produced %d frames, expected %d (internal error)", f0, To); rc = -1; }
    vae_release_(zc, (size_t)c->z_dim * h * w);
    vae_coder_cache_free(&kc); vae_bufs_free(&B);
    return rc;
}

// Encodes video [3, T, H, W] (T = 1 + 4k, H and W multiples of the spatial factor) into the posterior mean
// [z_dim, vae_encoded_frames(T), H/s, W/s] (diffusers' encode(x).latent_dist.mode(), the official encode's mu).
static int vae_encode(const Vae* v, double* z, const double* video, int T, int H, int W, FILE* progress, char* err) {
    const VaeConfig* c = &v->c;
    int s = vae_spatial_factor(c);
    if (T < 1 || (T - 1) % VAE_CHUNK) {
        snprintf(err, ST_ERRLEN, "encode: %d frames; the causal layout takes 1 + %dk frames (1, 5, 9, ..., 81): the first frame "
                 "alone, then chunks of %d; trim the video to %d frames", T, VAE_CHUNK, VAE_CHUNK, T < 1 ? 1 : 1 + (T - 1) / VAE_CHUNK * VAE_CHUNK);
        return -1;
    }
    if (H < s || W < s || H % s || W % s) {
        snprintf(err, ST_ERRLEN, "encode: frame size %dx%d must be a positive multiple of %d (the spatial factor); crop or resize", H, W, s);
        return -1;
    }
    int h = H / s, w = W / s, Tl = vae_encoded_frames(c, T);
    VaeBufs B; vae_bufs_init(&B, vae_plan(c, 0, H, W), c->dim);
    VaeCoderCache kc; memset(&kc, 0, sizeof(kc));
    int rc = 0, f0 = 0, l0 = 0, nchunks = 1 + (T - 1) / VAE_CHUNK;
    for (int i = 0; i < nchunks && !rc; i++) {
        double t0 = now_s(), c0 = vae_cpu_s_(), fl0 = vae_flops;
        int n = i == 0 ? 1 : VAE_CHUNK;
        VaeT x = {B.p[0], 3, n, H, W};
        for (int ch = 0; ch < 3; ch++) memcpy(vae_at(&x, ch, 0), video + ((size_t)ch * T + f0) * H * W, sizeof(double) * n * H * W);
        if ((rc = vae_encoder_chunk(v, &kc, &B, &x, err))) break;
        if (x.H != h || x.W != w || l0 + x.T > Tl) { snprintf(err, ST_ERRLEN, "encode: chunk %d gave [%d, %d, %d] (internal error)", i, x.T, x.H, x.W); rc = -1; break; }
        for (int ch = 0; ch < c->z_dim; ch++)   // the posterior mean: the first z_dim of the 2 z_dim channels
            for (int j = 0; j < x.T; j++) memcpy(z + ((size_t)ch * Tl + l0 + j) * h * w, vae_at(&x, ch, j), sizeof(double) * h * w);
        if (progress) { double dt = now_s() - t0; fprintf(progress, "  encode chunk %d/%d: frames %d..%d -> latent frame(s) %d..%d, %.2f s (%.2f s CPU), %.2f GFLOP/s\n", i + 1, nchunks, f0, f0 + n - 1, l0, l0 + x.T - 1, dt, vae_cpu_s_() - c0, (vae_flops - fl0) / dt * 1e-9); }
        f0 += n; l0 += x.T;
    }
    if (!rc && l0 != Tl) { snprintf(err, ST_ERRLEN, "encode: produced %d latent frames, expected %d (internal error)", l0, Tl); rc = -1; }
    vae_coder_cache_free(&kc); vae_bufs_free(&B);
    return rc;
}

// Wan's latent normalisation (what the DiT sees): dir > 0: z = (z - mean) / std; dir < 0: z = z * std + mean.
// Only defined for z_dim 16 (the statistics of the released Wan2.1 VAE).
static int vae_normalize(double* z, int z_dim, size_t per_channel, int dir, char* err) {
    if (z_dim != 16) { snprintf(err, ST_ERRLEN, "--normalized: Wan2.1's latents_mean/latents_std are for z_dim 16, this VAE has z_dim %d", z_dim); return -1; }
    for (int c = 0; c < 16; c++)
        for (size_t i = 0; i < per_channel; i++) {
            double* p = z + c * per_channel + i;
            *p = dir > 0 ? (*p - VAE_LATENT_MEAN[c]) / VAE_LATENT_STD[c] : *p * VAE_LATENT_STD[c] + VAE_LATENT_MEAN[c];
        }
    return 0;
}

// a latent array read from a file must be [z_dim, T, H, W]: the check the CLI and callers run before decoding
static int vae_check_latent_shape(const VaeConfig* c, int ndim, const int64_t* sh, const char* what, char* err) {
    if (ndim != 4 || sh[0] != c->z_dim) {
        char got[256]; st_shape_str(got, ndim, sh);
        snprintf(err, ST_ERRLEN, "%s: latent of shape %s, expected [z_dim %d, T, H, W] (no batch axis); a latent of another "
                 "VAE, or one with a batch axis (squeeze it)", what, got, c->z_dim);
        return -1;
    }
    return 0;
}

// The float API for callers outside the CPU reference (sample_tmd writes mp4 from its latents through this):
// latent [z_dim, T, h, w] (normalized = 1: as the DiT produces them) -> video [3, vae_decoded_frames(T), s*h, s*w].
static int vae_decode_f(const Vae* v, float* video, const float* latent, int T, int h, int w, int normalized, FILE* progress, char* err) {
    size_t nz = (size_t)v->c.z_dim * T * h * w, s = (size_t)vae_spatial_factor(&v->c);
    size_t nv = (size_t)3 * vae_decoded_frames(&v->c, T) * h * s * w * s;
    double* z = (double*)malloc(sizeof(double) * nz); double* x = (double*)malloc(sizeof(double) * nv);
    if (!z || !x) { free(z); free(x); snprintf(err, ST_ERRLEN, "decode: out of memory for %zu + %zu doubles", nz, nv); return -1; }
    for (size_t i = 0; i < nz; i++) z[i] = latent[i];
    int rc = normalized ? vae_normalize(z, v->c.z_dim, nz / v->c.z_dim, -1, err) : 0;
    if (!rc) rc = vae_decode(v, x, z, T, h, w, progress, err);
    if (!rc) for (size_t i = 0; i < nv; i++) video[i] = (float)x[i];
    free(z); free(x);
    return rc;
}
