// wan.h: the Wan2.1 text-to-video DiT definition shared by every program.
//   - WanConfig and the named presets (wan2.1-t2v-1.3b, wan2.1-t2v-14b, world, tiny)
//   - the parameter layout: one buffer carved by a struct of pointers, tensors in the order in which the
//     official WanModel registers them (state_dict order) and under the official checkpoint names
//   - weights I/O: safetensors (official names, diffusers WanTransformer3DModel names, the
//     "model.diffusion_model." prefix, single files and sharded *.safetensors.index.json), config inference
//     from tensor shapes, and writing with the config in __metadata__
// The element type of the buffer is `real`: float by default (GPU programs), double for the CPU reference
// (test_tmd.c defines WAN_REAL double before including this file). The layout is offsets (WanTensor.offset), so any
// element type can be carved over it: WAN_DEFINE_PARAMS makes a typed twin of WanParams and wan_carve_view fills it
// (the GPU's fp32 master weights, fp32 gradients and AdamW moments are WanParams; its bf16 copy is a twin).
// The architecture is the official Wan2.1 code's (wan/modules/model.py) and diffusers' WanTransformer3DModel; the CPU
// reference that runs it is cpu/wan_cpu.h.
#pragma once
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <stddef.h>
#include "lib/safetensors.h"
#include "lib/parse.h"      // strict numbers for metadata and config.json

#ifndef WAN_REAL
#define WAN_REAL float
#endif
typedef WAN_REAL real;

#define WAN_MAX_LAYERS 64
#define WAN_MAX_TEXT_LEN 4096   // context rows (umT5: 512); bounds what a file may ask the activations to hold
#define WAN_MAX_WIDTH 65536     // dim, ffn_dim, freq_dim, text_dim, channels (the 14B model: dim 5120, ffn 13824)
#define WAN_MAX_TENSORS (15 + 27 * WAN_MAX_LAYERS)

// ----------------------------------------------------------------------------------------------------------
// config and presets

typedef struct {
    char name[64];
    int dim;         // D, model width
    int ffn_dim;     // FFN hidden width
    int freq_dim;    // size of the [cos | sin] time sinusoid
    int num_heads;   // head_dim = dim / num_heads
    int num_layers;  // number of DiT blocks
    int in_dim;      // latent channels in (16 for the Wan VAE, 3 for the built-in RGB world)
    int out_dim;     // latent channels out
    int patch[3];    // (t, h, w) patch size of the Conv3d patch embedding
    int text_len;    // context rows after zero-padding (512 for umT5)
    int text_dim;    // context width (4096 for umT5-XXL)
    double eps;      // every LayerNorm and RMSNorm
} WanConfig;

typedef struct { const char* name; const char* what; WanConfig c; } WanPreset;

// Wan presets: Wan2.1 configs (the official wan/configs). world: the built-in procedural world on one GPU
// (head dim 64 so the fused attention kernel covers it). tiny: CPU tests and the distillation in `make test`
// (4x4 patches: 64 tokens per 3x4x16x16 clip keep the double-precision CPU reference fast enough for CI).
static const WanPreset WAN_PRESETS[] = {
    {"wan2.1-t2v-1.3b", "Wan2.1 T2V 1.3B",                        {"wan2.1-t2v-1.3b", 1536,  8960, 256, 12, 30, 16, 16, {1, 2, 2}, 512, 4096, 1e-6}},
    {"wan2.1-t2v-14b",  "Wan2.1 T2V 14B",                         {"wan2.1-t2v-14b",  5120, 13824, 256, 40, 40, 16, 16, {1, 2, 2}, 512, 4096, 1e-6}},
    {"world",           "built-in world, RGB 3x9x32x32, one GPU", {"world",            384,  1536, 256,  6, 12,  3,  3, {1, 2, 2},  16,   64, 1e-6}},
    {"tiny",            "CPU tests, RGB 3x4x16x16, 4x4 patches",  {"tiny",              64,   128,  64,  4,  4,  3,  3, {1, 4, 4},  12,   32, 1e-6}},
};
#define WAN_NUM_PRESETS ((int)(sizeof(WAN_PRESETS) / sizeof(WAN_PRESETS[0])))

// returns 0 and fills *c, or -1 with a message listing the presets
static int wan_preset(WanConfig* c, const char* name, char* err) {
    for (int i = 0; i < WAN_NUM_PRESETS; i++)
        if (strcmp(WAN_PRESETS[i].name, name) == 0) { *c = WAN_PRESETS[i].c; return 0; }
    int n = snprintf(err, ST_ERRLEN, "unknown preset '%s'; expected one of:", name);
    for (int i = 0; i < WAN_NUM_PRESETS && n < ST_ERRLEN; i++) n += snprintf(err + n, ST_ERRLEN - n, " %s", WAN_PRESETS[i].name);
    return -1;
}

static int wan_head_dim(const WanConfig* c) { return c->dim / c->num_heads; }
static int wan_patch_numel(const WanConfig* c) { return c->patch[0] * c->patch[1] * c->patch[2]; }

// checks what the architecture needs of a config: positive sizes, D divisible by heads, RoPE pairs
static int wan_config_check(const WanConfig* c, char* err) {
    if (c->dim <= 0 || c->ffn_dim <= 0 || c->freq_dim <= 0 || c->num_heads <= 0 || c->num_layers <= 0 || c->in_dim <= 0 ||
        c->out_dim <= 0 || c->text_len <= 0 || c->text_dim <= 0 || c->patch[0] <= 0 || c->patch[1] <= 0 || c->patch[2] <= 0) {
        snprintf(err, ST_ERRLEN, "config '%s': every size must be positive", c->name); return -1;
    }
    if (c->num_layers > WAN_MAX_LAYERS) { snprintf(err, ST_ERRLEN, "config '%s': %d layers, at most %d supported", c->name, c->num_layers, WAN_MAX_LAYERS); return -1; }
    if (c->text_len > WAN_MAX_TEXT_LEN) {
        snprintf(err, ST_ERRLEN, "config '%s': text_len %d, at most %d supported (umT5 uses 512)", c->name, c->text_len, WAN_MAX_TEXT_LEN);
        return -1;
    }
    if (c->dim > WAN_MAX_WIDTH || c->ffn_dim > WAN_MAX_WIDTH || c->freq_dim > WAN_MAX_WIDTH || c->text_dim > WAN_MAX_WIDTH ||
        c->in_dim > WAN_MAX_WIDTH || c->out_dim > WAN_MAX_WIDTH || c->patch[0] > 64 || c->patch[1] > 64 || c->patch[2] > 64) {
        snprintf(err, ST_ERRLEN, "config '%s': a width is larger than %d (or a patch size larger than 64)", c->name, WAN_MAX_WIDTH);
        return -1;
    }
    if (!(c->eps > 0 && c->eps <= 0.1)) {
        snprintf(err, ST_ERRLEN, "config '%s': eps %g, expected a small positive number (Wan uses 1e-6)", c->name, c->eps);
        return -1;
    }
    if (c->dim % c->num_heads != 0) { snprintf(err, ST_ERRLEN, "config '%s': dim %d is not divisible by num_heads %d", c->name, c->dim, c->num_heads); return -1; }
    int d = wan_head_dim(c);
    if (d % 2 != 0 || d < 6) { snprintf(err, ST_ERRLEN, "config '%s': head dim %d must be even and >= 6 for the 3D RoPE split", c->name, d); return -1; }
    if (c->freq_dim % 2 != 0) { snprintf(err, ST_ERRLEN, "config '%s': freq_dim %d must be even", c->name, c->freq_dim); return -1; }
    return 0;
}

static void wan_config_print(const WanConfig* c, FILE* f) {
    fprintf(f, "+-----------------+------------------------+\n");
    fprintf(f, "| config          | %-22s |\n", c->name);
    fprintf(f, "| dim             | %-22d |\n", c->dim);
    fprintf(f, "| ffn_dim         | %-22d |\n", c->ffn_dim);
    fprintf(f, "| freq_dim        | %-22d |\n", c->freq_dim);
    char heads[32]; snprintf(heads, sizeof(heads), "%d (head dim %d)", c->num_heads, wan_head_dim(c));
    fprintf(f, "| num_heads       | %-22s |\n", heads);
    fprintf(f, "| num_layers      | %-22d |\n", c->num_layers);
    char io[32], patch[32];
    snprintf(io, sizeof(io), "%d, %d", c->in_dim, c->out_dim); snprintf(patch, sizeof(patch), "(%d, %d, %d)", c->patch[0], c->patch[1], c->patch[2]);
    fprintf(f, "| in_dim, out_dim | %-22s |\n", io);
    fprintf(f, "| patch (t,h,w)   | %-22s |\n", patch);
    fprintf(f, "| text_len        | %-22d |\n", c->text_len);
    fprintf(f, "| text_dim        | %-22d |\n", c->text_dim);
    fprintf(f, "| eps             | %-22g |\n", c->eps);
    fprintf(f, "+-----------------+------------------------+\n");
}

// ----------------------------------------------------------------------------------------------------------
// parameter layout

// The parameter struct for pointer type T* (Params holds num_layers Blocks), fields in checkpoint order. WanParams
// (T = real) views the master weights, gradients and moments; GPU code defines a twin over its floatX copy. Every twin has
// the same memory layout (only pointers), so one carving by byte offsets fills any of them (wan_carve_view).
#define WAN_DEFINE_PARAMS(Params, Block, T) \
typedef struct {                                                                                              \
    T* self_attn_q_weight;       /* [D, D] */                                                                 \
    T* self_attn_q_bias;         /* [D] */                                                                    \
    T* self_attn_k_weight;       /* [D, D] */                                                                 \
    T* self_attn_k_bias;         /* [D] */                                                                    \
    T* self_attn_v_weight;       /* [D, D] */                                                                 \
    T* self_attn_v_bias;         /* [D] */                                                                    \
    T* self_attn_o_weight;       /* [D, D] */                                                                 \
    T* self_attn_o_bias;         /* [D] */                                                                    \
    T* self_attn_norm_q_weight;  /* [D] RMSNorm across all heads */                                           \
    T* self_attn_norm_k_weight;  /* [D] */                                                                    \
    T* norm3_weight;             /* [D] affine LayerNorm before cross-attention (diffusers calls it norm2) */ \
    T* norm3_bias;               /* [D] */                                                                    \
    T* cross_attn_q_weight;      /* [D, D] */                                                                 \
    T* cross_attn_q_bias;        /* [D] */                                                                    \
    T* cross_attn_k_weight;      /* [D, D] */                                                                 \
    T* cross_attn_k_bias;        /* [D] */                                                                    \
    T* cross_attn_v_weight;      /* [D, D] */                                                                 \
    T* cross_attn_v_bias;        /* [D] */                                                                    \
    T* cross_attn_o_weight;      /* [D, D] */                                                                 \
    T* cross_attn_o_bias;        /* [D] */                                                                    \
    T* cross_attn_norm_q_weight; /* [D] */                                                                    \
    T* cross_attn_norm_k_weight; /* [D] */                                                                    \
    T* ffn_0_weight;             /* [F, D] */                                                                 \
    T* ffn_0_bias;               /* [F] */                                                                    \
    T* ffn_2_weight;             /* [D, F] */                                                                 \
    T* ffn_2_bias;               /* [D] */                                                                    \
    T* modulation;               /* [1, 6, D] shift, scale, gate (self-attn); shift, scale, gate (FFN) */     \
} Block;                                                                                                      \
typedef struct {                                                                                              \
    T* patch_embedding_weight;   /* [D, in_dim, pt, ph, pw] */                                                \
    T* patch_embedding_bias;     /* [D] */                                                                    \
    T* text_embedding_0_weight;  /* [D, text_dim] */                                                          \
    T* text_embedding_0_bias;    /* [D] */                                                                    \
    T* text_embedding_2_weight;  /* [D, D] */                                                                 \
    T* text_embedding_2_bias;    /* [D] */                                                                    \
    T* time_embedding_0_weight;  /* [D, freq_dim] */                                                          \
    T* time_embedding_0_bias;    /* [D] */                                                                    \
    T* time_embedding_2_weight;  /* [D, D] */                                                                 \
    T* time_embedding_2_bias;    /* [D] */                                                                    \
    T* time_projection_1_weight; /* [6D, D] */                                                                \
    T* time_projection_1_bias;   /* [6D] */                                                                   \
    Block blocks[WAN_MAX_LAYERS];                                                                             \
    T* head_head_weight;         /* [out_dim * pt*ph*pw, D] */                                                \
    T* head_head_bias;           /* [out_dim * pt*ph*pw] */                                                   \
    T* head_modulation;          /* [1, 2, D] shift, scale */                                                 \
} Params;
WAN_DEFINE_PARAMS(WanParams, WanBlock, real)

typedef struct { char name[96]; int ndim; int64_t shape[5]; size_t offset, numel; } WanTensor;

typedef struct { WanTensor* t; int n; size_t total; WanParams* p; real* base; } WanLayoutBuilder_;
// a typed twin (WAN_DEFINE_PARAMS) being carved over a buffer of esz-byte elements (wan_carve_view)
typedef struct { char* view; char* base; size_t esz; } WanViewBuilder_;

// records one tensor (name, shape, offset) and returns its element count
static size_t wan_record_(WanLayoutBuilder_* b, const char* name, int ndim, int64_t s0, int64_t s1, int64_t s2, int64_t s3, int64_t s4) {
    int64_t s[5] = {s0, s1, s2, s3, s4};
    size_t numel = 1;
    for (int i = 0; i < ndim; i++) numel *= (size_t)s[i];
    if (b->t) {
        WanTensor* t = &b->t[b->n];
        snprintf(t->name, sizeof(t->name), "%s", name);
        t->ndim = ndim; t->offset = b->total; t->numel = numel;
        for (int i = 0; i < 5; i++) t->shape[i] = i < ndim ? s[i] : 1;
    }
    return numel;
}

// the next tensor, its pointer written to *slot (layouts built on this one, e.g. the TMD student's extras)
static void wan_add_(WanLayoutBuilder_* b, real** slot, const char* name, int ndim, int64_t s0, int64_t s1, int64_t s2, int64_t s3, int64_t s4) {
    size_t numel = wan_record_(b, name, ndim, s0, s1, s2, s3, s4);
    if (slot && b->base) *slot = b->base + b->total;
    b->n++; b->total += numel;
}

// the next Wan tensor; off = the byte offset of its pointer inside WanParams, the same in every typed twin
static void wan_add_field_(WanLayoutBuilder_* b, const WanViewBuilder_* v, size_t off, const char* name, int ndim, int64_t s0, int64_t s1, int64_t s2, int64_t s3, int64_t s4) {
    size_t numel = wan_record_(b, name, ndim, s0, s1, s2, s3, s4);
    if (b->p && b->base) { real* q = b->base + b->total; memcpy((char*)b->p + off, &q, sizeof(q)); }
    if (v->view && v->base) { void* q = v->base + b->total * v->esz; memcpy(v->view + off, &q, sizeof(q)); }
    b->n++; b->total += numel;
}

// The one place the layout is written down. Order = official WanModel registration order:
// patch_embedding, text_embedding, time_embedding, time_projection, blocks (self_attn, norm3, cross_attn,
// ffn, modulation), head (head, modulation). Fills `tensors` (may be NULL), carves `base` into `p` (may be
// NULL), returns the number of tensors and writes the total element count to *total.
static int wan_layout_(const WanConfig* c, WanTensor* tensors, WanParams* p, real* base, void* view, void* view_base, size_t view_esz, size_t* total) {
    WanLayoutBuilder_ b = {tensors, 0, 0, p, base};
    WanViewBuilder_ v = {(char*)view, (char*)view_base, view_esz};
    int64_t D = c->dim, F = c->ffn_dim, P = wan_patch_numel(c);
    wan_add_field_(&b, &v, offsetof(WanParams, patch_embedding_weight), "patch_embedding.weight", 5, D, c->in_dim, c->patch[0], c->patch[1], c->patch[2]);
    wan_add_field_(&b, &v, offsetof(WanParams, patch_embedding_bias), "patch_embedding.bias", 1, D, 0, 0, 0, 0);
    wan_add_field_(&b, &v, offsetof(WanParams, text_embedding_0_weight), "text_embedding.0.weight", 2, D, c->text_dim, 0, 0, 0);
    wan_add_field_(&b, &v, offsetof(WanParams, text_embedding_0_bias), "text_embedding.0.bias", 1, D, 0, 0, 0, 0);
    wan_add_field_(&b, &v, offsetof(WanParams, text_embedding_2_weight), "text_embedding.2.weight", 2, D, D, 0, 0, 0);
    wan_add_field_(&b, &v, offsetof(WanParams, text_embedding_2_bias), "text_embedding.2.bias", 1, D, 0, 0, 0, 0);
    wan_add_field_(&b, &v, offsetof(WanParams, time_embedding_0_weight), "time_embedding.0.weight", 2, D, c->freq_dim, 0, 0, 0);
    wan_add_field_(&b, &v, offsetof(WanParams, time_embedding_0_bias), "time_embedding.0.bias", 1, D, 0, 0, 0, 0);
    wan_add_field_(&b, &v, offsetof(WanParams, time_embedding_2_weight), "time_embedding.2.weight", 2, D, D, 0, 0, 0);
    wan_add_field_(&b, &v, offsetof(WanParams, time_embedding_2_bias), "time_embedding.2.bias", 1, D, 0, 0, 0, 0);
    wan_add_field_(&b, &v, offsetof(WanParams, time_projection_1_weight), "time_projection.1.weight", 2, 6 * D, D, 0, 0, 0);
    wan_add_field_(&b, &v, offsetof(WanParams, time_projection_1_bias), "time_projection.1.bias", 1, 6 * D, 0, 0, 0, 0);
    for (int l = 0; l < c->num_layers; l++) {
        size_t k = offsetof(WanParams, blocks) + (size_t)l * sizeof(WanBlock);
        char nm[96];
#define WAN_BLOCK_TENSOR(field, suffix, nd, s0, s1, s2) \
        snprintf(nm, sizeof(nm), "blocks.%d." suffix, l); wan_add_field_(&b, &v, k + offsetof(WanBlock, field), nm, nd, s0, s1, s2, 0, 0);
        WAN_BLOCK_TENSOR(self_attn_q_weight, "self_attn.q.weight", 2, D, D, 0)
        WAN_BLOCK_TENSOR(self_attn_q_bias, "self_attn.q.bias", 1, D, 0, 0)
        WAN_BLOCK_TENSOR(self_attn_k_weight, "self_attn.k.weight", 2, D, D, 0)
        WAN_BLOCK_TENSOR(self_attn_k_bias, "self_attn.k.bias", 1, D, 0, 0)
        WAN_BLOCK_TENSOR(self_attn_v_weight, "self_attn.v.weight", 2, D, D, 0)
        WAN_BLOCK_TENSOR(self_attn_v_bias, "self_attn.v.bias", 1, D, 0, 0)
        WAN_BLOCK_TENSOR(self_attn_o_weight, "self_attn.o.weight", 2, D, D, 0)
        WAN_BLOCK_TENSOR(self_attn_o_bias, "self_attn.o.bias", 1, D, 0, 0)
        WAN_BLOCK_TENSOR(self_attn_norm_q_weight, "self_attn.norm_q.weight", 1, D, 0, 0)
        WAN_BLOCK_TENSOR(self_attn_norm_k_weight, "self_attn.norm_k.weight", 1, D, 0, 0)
        WAN_BLOCK_TENSOR(norm3_weight, "norm3.weight", 1, D, 0, 0)
        WAN_BLOCK_TENSOR(norm3_bias, "norm3.bias", 1, D, 0, 0)
        WAN_BLOCK_TENSOR(cross_attn_q_weight, "cross_attn.q.weight", 2, D, D, 0)
        WAN_BLOCK_TENSOR(cross_attn_q_bias, "cross_attn.q.bias", 1, D, 0, 0)
        WAN_BLOCK_TENSOR(cross_attn_k_weight, "cross_attn.k.weight", 2, D, D, 0)
        WAN_BLOCK_TENSOR(cross_attn_k_bias, "cross_attn.k.bias", 1, D, 0, 0)
        WAN_BLOCK_TENSOR(cross_attn_v_weight, "cross_attn.v.weight", 2, D, D, 0)
        WAN_BLOCK_TENSOR(cross_attn_v_bias, "cross_attn.v.bias", 1, D, 0, 0)
        WAN_BLOCK_TENSOR(cross_attn_o_weight, "cross_attn.o.weight", 2, D, D, 0)
        WAN_BLOCK_TENSOR(cross_attn_o_bias, "cross_attn.o.bias", 1, D, 0, 0)
        WAN_BLOCK_TENSOR(cross_attn_norm_q_weight, "cross_attn.norm_q.weight", 1, D, 0, 0)
        WAN_BLOCK_TENSOR(cross_attn_norm_k_weight, "cross_attn.norm_k.weight", 1, D, 0, 0)
        WAN_BLOCK_TENSOR(ffn_0_weight, "ffn.0.weight", 2, F, D, 0)
        WAN_BLOCK_TENSOR(ffn_0_bias, "ffn.0.bias", 1, F, 0, 0)
        WAN_BLOCK_TENSOR(ffn_2_weight, "ffn.2.weight", 2, D, F, 0)
        WAN_BLOCK_TENSOR(ffn_2_bias, "ffn.2.bias", 1, D, 0, 0)
        WAN_BLOCK_TENSOR(modulation, "modulation", 3, 1, 6, D)
#undef WAN_BLOCK_TENSOR
    }
    wan_add_field_(&b, &v, offsetof(WanParams, head_head_weight), "head.head.weight", 2, c->out_dim * P, D, 0, 0, 0);
    wan_add_field_(&b, &v, offsetof(WanParams, head_head_bias), "head.head.bias", 1, c->out_dim * P, 0, 0, 0, 0);
    wan_add_field_(&b, &v, offsetof(WanParams, head_modulation), "head.modulation", 3, 1, 2, D, 0, 0);
    if (total) *total = b.total;
    return b.n;
}

static int wan_layout(const WanConfig* c, WanTensor* tensors, WanParams* p, real* base, size_t* total) {
    return wan_layout_(c, tensors, p, base, NULL, NULL, 0, total);
}

static size_t wan_num_params(const WanConfig* c) { size_t n; wan_layout(c, NULL, NULL, NULL, &n); return n; }

// carve an existing buffer of wan_num_params(c) elements (host or device memory) into p
static void wan_carve(const WanConfig* c, WanParams* p, real* base) {
    memset(p, 0, sizeof(*p));
    wan_layout(c, NULL, p, base, NULL);
}

// the same carving for a typed twin: view is a WAN_DEFINE_PARAMS struct of view_bytes (= sizeof(WanParams)), base a
// buffer of wan_num_params(c) elements of elem_bytes each (e.g. the GPU's bf16 weight copy, or fp32 over a double build)
static void wan_carve_view(const WanConfig* c, void* view, size_t view_bytes, void* base, size_t elem_bytes) {
    if (view_bytes != sizeof(WanParams)) { fprintf(stderr, "wan_carve_view: the view is %zu bytes, WanParams %zu; define it with WAN_DEFINE_PARAMS\n", view_bytes, sizeof(WanParams)); exit(1); }
    memset(view, 0, view_bytes);
    wan_layout_(c, NULL, NULL, NULL, view, base, elem_bytes, NULL);
}

static void wan_print_count(const WanConfig* c, FILE* f) {
    size_t n = wan_num_params(c);
    char buf[32]; int len = snprintf(buf, sizeof(buf), "%zu", n), o = 0; char out[48];
    for (int i = 0; i < len; i++) { out[o++] = buf[i]; if ((len - 1 - i) % 3 == 0 && i != len - 1) out[o++] = ','; }
    out[o] = 0;
    fprintf(f, "parameters: %s (%d tensors)\n", out, wan_layout(c, NULL, NULL, NULL, NULL));
}

// ----------------------------------------------------------------------------------------------------------
// name translation: diffusers WanTransformer3DModel -> official Wan2.1 (diffusers' convert_wan_to_diffusers key map)

// Plain prefix rewrites in order; `blocks.N.` is split off first so each rule sees the in-block name.
static const char* WAN_DIFFUSERS_TOP[][2] = {
    {"condition_embedder.text_embedder.linear_1.", "text_embedding.0."},
    {"condition_embedder.text_embedder.linear_2.", "text_embedding.2."},
    {"condition_embedder.time_embedder.linear_1.", "time_embedding.0."},
    {"condition_embedder.time_embedder.linear_2.", "time_embedding.2."},
    {"condition_embedder.time_proj.", "time_projection.1."},
    {"scale_shift_table", "head.modulation"},
    {"proj_out.", "head.head."},
};
static const char* WAN_DIFFUSERS_BLOCK[][2] = {
    {"attn1.to_q.", "self_attn.q."}, {"attn1.to_k.", "self_attn.k."}, {"attn1.to_v.", "self_attn.v."},
    {"attn1.to_out.0.", "self_attn.o."}, {"attn1.norm_q.", "self_attn.norm_q."}, {"attn1.norm_k.", "self_attn.norm_k."},
    {"attn2.to_q.", "cross_attn.q."}, {"attn2.to_k.", "cross_attn.k."}, {"attn2.to_v.", "cross_attn.v."},
    {"attn2.to_out.0.", "cross_attn.o."}, {"attn2.norm_q.", "cross_attn.norm_q."}, {"attn2.norm_k.", "cross_attn.norm_k."},
    {"norm2.", "norm3."},  // the naming swap: diffusers' norm2 is the affine cross-attention norm, official norm3
    {"ffn.net.0.proj.", "ffn.0."}, {"ffn.net.2.", "ffn.2."},
    {"scale_shift_table", "modulation"},
};

// strips the "model.diffusion_model." prefix and maps a diffusers name to the official one; official names
// pass through unchanged. Returns 1 if a diffusers rule fired.
static int wan_canonical_name(const char* in, char* out, size_t outlen) {
    const char* prefix = "model.diffusion_model.";
    if (strncmp(in, prefix, strlen(prefix)) == 0) in += strlen(prefix);
    if (strncmp(in, "blocks.", 7) == 0) {
        const char* rest = in + 7;
        const char* dot = strchr(rest, '.');
        if (dot) {
            int n = (int)(dot - in) + 1;  // "blocks.N."
            for (size_t r = 0; r < sizeof(WAN_DIFFUSERS_BLOCK) / sizeof(WAN_DIFFUSERS_BLOCK[0]); r++) {
                size_t k = strlen(WAN_DIFFUSERS_BLOCK[r][0]);
                if (strncmp(in + n, WAN_DIFFUSERS_BLOCK[r][0], k) == 0) {
                    snprintf(out, outlen, "%.*s%s%s", n, in, WAN_DIFFUSERS_BLOCK[r][1], in + n + k);
                    return 1;
                }
            }
        }
    } else {
        for (size_t r = 0; r < sizeof(WAN_DIFFUSERS_TOP) / sizeof(WAN_DIFFUSERS_TOP[0]); r++) {
            size_t k = strlen(WAN_DIFFUSERS_TOP[r][0]);
            if (strncmp(in, WAN_DIFFUSERS_TOP[r][0], k) == 0) {
                snprintf(out, outlen, "%s%s", WAN_DIFFUSERS_TOP[r][1], in + k);
                return 1;
            }
        }
    }
    snprintf(out, outlen, "%s", in);
    return 0;
}

// ----------------------------------------------------------------------------------------------------------
// loading

typedef struct { char canon[300]; const StTensor* t; const StFile* f; } WanFound_;

typedef struct {
    StSet set;
    WanFound_* found;  // one per tensor in the file(s), under its canonical name
    int n_found;
    int diffusers_names, prefixed;
} WanCheckpoint_;

static void wan_ckpt_close_(WanCheckpoint_* k) { free(k->found); st_set_close(&k->set); memset(k, 0, sizeof(*k)); }

static int wan_ckpt_open_(WanCheckpoint_* k, const char* path, char* err) {
    memset(k, 0, sizeof(*k));
    if (st_set_open(&k->set, path, err)) return -1;
    int n = 0;
    for (int i = 0; i < k->set.n_files; i++) n += k->set.files[i].n;
    k->found = (WanFound_*)calloc((size_t)(n > 0 ? n : 1), sizeof(WanFound_));
    for (int i = 0; i < k->set.n_files; i++)
        for (int j = 0; j < k->set.files[i].n; j++) {
            WanFound_* w = &k->found[k->n_found++];
            const char* nm = k->set.files[i].tensors[j].name;
            if (strncmp(nm, "model.diffusion_model.", 22) == 0) k->prefixed = 1;
            k->diffusers_names |= wan_canonical_name(nm, w->canon, sizeof(w->canon));
            w->t = &k->set.files[i].tensors[j]; w->f = &k->set.files[i];
        }
    return 0;
}

static const WanFound_* wan_ckpt_find_(const WanCheckpoint_* k, const char* canon) {
    for (int i = 0; i < k->n_found; i++) if (strcmp(k->found[i].canon, canon) == 0) return &k->found[i];
    return NULL;
}

static const char* wan_ckpt_meta_(const WanCheckpoint_* k, const char* key) {
    for (int i = 0; i < k->set.n_files; i++) { const char* v = st_meta(&k->set.files[i], key); if (v) return v; }
    return NULL;
}

static int wan_shape_str_(char* buf, size_t n, const int64_t* s, int nd) {
    int o = snprintf(buf, n, "[");
    for (int i = 0; i < nd && o < (int)n; i++) o += snprintf(buf + o, n - o, i ? ", %lld" : "%lld", (long long)s[i]);
    if (o < (int)n) o += snprintf(buf + o, n - o, "]");
    return o;
}

// config.json beside the weights: the official Wan2.1 release's (num_heads, text_len, eps, dim, num_layers) or
// diffusers' WanTransformer3DModel's (num_attention_heads, attention_head_dim, eps, num_layers). Zero = not given.
typedef struct { char path[1100]; long long num_heads, text_len; double eps; } WanFileConfig_;

// a number of a config object: absent (0, *out untouched), in [lo, hi] (0, stored; an integer when ival is given), or
// anything else (-1 with a message naming the file, the key and the range)
static int wan_json_number_(const StJson* obj, const char* key, double lo, double hi, long long* ival, double* dval,
                            const char* file, char* err) {
    const StJson* e = sj_get(obj, key);
    if (!e) return 0;
    if (e->type != SJ_NUM || (ival && !e->is_int) || !(e->d >= lo && e->d <= hi)) {
        snprintf(err, ST_ERRLEN, "%.500s: \"%s\" is not %s in [%g, %g]; fix the file", file, key, ival ? "an integer" : "a number", lo, hi);
        return -1;
    }
    if (ival) *ival = e->i;
    else *dval = e->d;
    return 0;
}

// reads the config.json in the directory of path (or in path, if it is a directory), when there is one, and checks
// that it agrees with the shapes found in c (dim, num_layers)
static int wan_read_config_json_(WanFileConfig_* fc, const char* path, const WanConfig* c, char* err) {
    memset(fc, 0, sizeof(*fc));
    struct stat sb;
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) snprintf(fc->path, sizeof(fc->path), "%s/config.json", path);
    else {
        const char* slash = strrchr(path, '/');
        if (slash) snprintf(fc->path, sizeof(fc->path), "%.*s/config.json", (int)(slash - path), path);
        else snprintf(fc->path, sizeof(fc->path), "config.json");
    }
    if (stat(fc->path, &sb) != 0) { fc->path[0] = 0; return 0; }   // none: fine
    char* text = NULL;
    size_t len = 0;
    StJson root;
    char msg[400];
    if (st_read_small_file(fc->path, &text, &len, err)) return -1;
    if (sj_expect_object(text, len, msg, sizeof(msg)) || sj_parse(text, len, &root, msg, sizeof(msg))) {
        snprintf(err, ST_ERRLEN, "%.500s: not a valid config file (%.400s); fix or remove it", fc->path, msg);
        free(text);
        return -1;
    }
    free(text);
    long long head_dim = 0, dim = 0, layers = 0;
    int rc = wan_json_number_(&root, "num_heads", 1, WAN_MAX_WIDTH, &fc->num_heads, NULL, fc->path, err)
          || wan_json_number_(&root, "num_attention_heads", 1, WAN_MAX_WIDTH, &fc->num_heads, NULL, fc->path, err)
          || wan_json_number_(&root, "attention_head_dim", 1, WAN_MAX_WIDTH, &head_dim, NULL, fc->path, err)
          || wan_json_number_(&root, "dim", 1, WAN_MAX_WIDTH, &dim, NULL, fc->path, err)
          || wan_json_number_(&root, "num_layers", 1, WAN_MAX_LAYERS, &layers, NULL, fc->path, err)
          || wan_json_number_(&root, "text_len", 1, WAN_MAX_TEXT_LEN, &fc->text_len, NULL, fc->path, err)
          || wan_json_number_(&root, "eps", 1e-30, 0.1, NULL, &fc->eps, fc->path, err);
    sj_free(&root);
    if (rc) return -1;
    if (head_dim && fc->num_heads && !dim) dim = fc->num_heads * head_dim;   // diffusers gives the width this way
    if ((dim && dim != c->dim) || (layers && layers != c->num_layers)) {
        snprintf(err, ST_ERRLEN, "%.500s says dim %lld and %lld layers, but the weights beside it have dim %d and %d layers; "
                 "is it the config of another model?", fc->path, dim ? dim : (long long)c->dim, layers ? layers : (long long)c->num_layers,
                 c->dim, c->num_layers);
        return -1;
    }
    return 0;
}

// Infers the config from tensor shapes, and what shapes cannot tell (num_heads, text_len, eps) from the override,
// __metadata__ or a config.json beside the weights. With none of them, the heads of a preset with the same shapes
// are used (and a note says so); otherwise loading stops: a guessed head count gives wrong outputs silently.
static int wan_infer_config_(const WanCheckpoint_* k, WanConfig* c, int heads_override, int text_len_override, const char* path, char* err) {
    const WanFound_* pe = wan_ckpt_find_(k, "patch_embedding.weight");
    const WanFound_* te = wan_ckpt_find_(k, "text_embedding.0.weight");
    const WanFound_* ti = wan_ckpt_find_(k, "time_embedding.0.weight");
    const WanFound_* ff = wan_ckpt_find_(k, "blocks.0.ffn.0.weight");
    const WanFound_* hh = wan_ckpt_find_(k, "head.head.weight");
    const char* miss = !pe ? "patch_embedding.weight" : !te ? "text_embedding.0.weight" : !ti ? "time_embedding.0.weight"
                     : !ff ? "blocks.0.ffn.0.weight" : !hh ? "head.head.weight" : NULL;
    if (miss) {
        snprintf(err, ST_ERRLEN, "%s: tensor '%s' not found (nor its diffusers name); is this a Wan2.1 DiT checkpoint? "
                 "expected official Wan2.1 or diffusers WanTransformer3DModel names", path, miss);
        return -1;
    }
    if (pe->t->ndim != 5 || te->t->ndim != 2 || ti->t->ndim != 2 || ff->t->ndim != 2 || hh->t->ndim != 2) {
        snprintf(err, ST_ERRLEN, "%s: embedding tensors have unexpected ranks (patch_embedding.weight should be 5-D, the Linear weights 2-D)", path);
        return -1;
    }
    memset(c, 0, sizeof(*c));
    snprintf(c->name, sizeof(c->name), "inferred");
    c->dim = (int)pe->t->shape[0]; c->in_dim = (int)pe->t->shape[1];
    for (int i = 0; i < 3; i++) c->patch[i] = (int)pe->t->shape[2 + i];
    c->text_dim = (int)te->t->shape[1];
    c->freq_dim = (int)ti->t->shape[1];
    c->ffn_dim = (int)ff->t->shape[0];
    int P = wan_patch_numel(c);
    c->out_dim = (int)(hh->t->shape[0] / (P > 0 ? P : 1));
    int layers = 0;
    for (;;) {
        char nm[64]; snprintf(nm, sizeof(nm), "blocks.%d.modulation", layers);
        if (!wan_ckpt_find_(k, nm)) break;
        layers++;
    }
    c->num_layers = layers;
    const char* v;
    if ((v = wan_ckpt_meta_(k, "config"))) snprintf(c->name, sizeof(c->name), "%s", v);
    // what shapes cannot tell, in order: the caller's override, __metadata__, config.json beside the weights
    WanFileConfig_ fc;
    if (wan_read_config_json_(&fc, path, c, err)) return -1;
    const char* src_heads = "__metadata__ num_heads";
    long long heads = 0, text_len = 512;
    double eps = 1e-6;
    if (heads_override > 0) { heads = heads_override; src_heads = "--heads"; }
    else if ((v = wan_ckpt_meta_(k, "num_heads"))) {
        if (parse_int(v, 1, c->dim > 0 ? c->dim : 1, &heads)) {
            snprintf(err, ST_ERRLEN, "%s: __metadata__ num_heads is '%.40s', expected an integer in [1, dim %d]; fix the metadata "
                     "or pass the head count explicitly", path, v, c->dim);
            return -1;
        }
    } else if (fc.num_heads > 0) { heads = fc.num_heads; src_heads = fc.path; }
    if ((v = wan_ckpt_meta_(k, "text_len"))) {
        if (parse_int(v, 1, WAN_MAX_TEXT_LEN, &text_len)) {
            snprintf(err, ST_ERRLEN, "%s: __metadata__ text_len is '%.40s', expected an integer in [1, %d] (umT5: 512); fix the "
                     "metadata or pass the text length explicitly", path, v, WAN_MAX_TEXT_LEN);
            return -1;
        }
    } else if (fc.text_len > 0) text_len = fc.text_len;
    if (text_len_override > 0) text_len = text_len_override;
    if ((v = wan_ckpt_meta_(k, "eps"))) {
        if (parse_double(v, 1e-30, 0.1, &eps)) {
            snprintf(err, ST_ERRLEN, "%s: __metadata__ eps is '%.40s', expected a finite number in (0, 0.1] (Wan: 1e-6); fix the "
                     "metadata", path, v);
            return -1;
        }
    } else if (fc.eps > 0) eps = fc.eps;
    c->text_len = (int)text_len;
    c->eps = eps;
    if (heads == 0) {   // nothing says: a released model of the same shape may, and then we say that we used it
        for (int i = 0; i < WAN_NUM_PRESETS && heads == 0; i++) {
            const WanConfig* pc = &WAN_PRESETS[i].c;
            if (pc->dim == c->dim && pc->ffn_dim == c->ffn_dim && pc->num_layers == c->num_layers && pc->text_dim == c->text_dim) {
                heads = pc->num_heads;
                fprintf(stderr, "note: %s: neither __metadata__ nor a config.json beside it gives the head count; using %lld "
                        "heads of preset '%s', which has the same shapes\n", path, heads, pc->name);
            }
        }
    }
    if (heads == 0) {
        snprintf(err, ST_ERRLEN, "%s: nothing gives the number of attention heads (no __metadata__ num_heads, no config.json "
                 "beside the weights, and dim %d matches no preset); pass the head count explicitly (forward: --heads N)", path, c->dim);
        return -1;
    }
    c->num_heads = (int)heads;
    if (c->dim % c->num_heads) {
        snprintf(err, ST_ERRLEN, "%.500s: %lld heads (from %.300s) do not divide dim %d", path, heads, src_heads, c->dim);
        return -1;
    }
    return wan_config_check(c, err);
}

// Loads a Wan DiT checkpoint. If *c has dim > 0 on entry it is the expected config and every tensor shape
// must agree with it; otherwise the config is inferred (num_heads_override / text_len_override > 0 replace
// what inference picks). On success *params is a new buffer of wan_num_params(c) elements in layout order.
static int wan_load(const char* path, WanConfig* c, int num_heads_override, int text_len_override, real** params, char* err) {
    WanCheckpoint_ k;
    if (wan_ckpt_open_(&k, path, err)) return -1;
    WanConfig inferred;
    // an expected config names the head count itself, so inference need not find one
    int heads = num_heads_override > 0 ? num_heads_override : c->dim > 0 ? c->num_heads : 0;
    if (wan_infer_config_(&k, &inferred, heads, text_len_override, path, err)) { wan_ckpt_close_(&k); return -1; }
    if (c->dim > 0) {  // compare with the expected config, field by field
        const char* fields[] = {"dim", "ffn_dim", "freq_dim", "num_layers", "in_dim", "out_dim", "text_dim"};
        int want[] = {c->dim, c->ffn_dim, c->freq_dim, c->num_layers, c->in_dim, c->out_dim, c->text_dim};
        int got[] = {inferred.dim, inferred.ffn_dim, inferred.freq_dim, inferred.num_layers, inferred.in_dim, inferred.out_dim, inferred.text_dim};
        for (int i = 0; i < 7; i++)
            if (want[i] != got[i]) {
                snprintf(err, ST_ERRLEN, "%s: the checkpoint's %s is %d but the config '%s' expects %d; pick the preset "
                         "that matches the checkpoint, or omit the preset to infer it from the file", path, fields[i], got[i], c->name, want[i]);
                wan_ckpt_close_(&k); return -1;
            }
    } else {
        *c = inferred;
    }
    if (wan_config_check(c, err)) { wan_ckpt_close_(&k); return -1; }
    WanTensor* tl = (WanTensor*)malloc(sizeof(WanTensor) * WAN_MAX_TENSORS);
    size_t total;
    int nt = wan_layout(c, tl, NULL, NULL, &total);
    real* buf = (real*)malloc(sizeof(real) * (total > 0 ? total : 1));
    if (!buf) { snprintf(err, ST_ERRLEN, "%s: out of host memory for %zu parameters", path, total); free(tl); wan_ckpt_close_(&k); return -1; }
    int rc = 0;
    for (int i = 0; i < nt && rc == 0; i++) {
        const WanTensor* w = &tl[i];
        const WanFound_* f = wan_ckpt_find_(&k, w->name);
        if (!f) {
            char a[96]; wan_shape_str_(a, sizeof(a), w->shape, w->ndim);
            snprintf(err, ST_ERRLEN, "%s: tensor '%s' (shape %s for config '%s') is missing; the checkpoint is incomplete "
                     "or not a Wan2.1 T2V DiT", path, w->name, a, c->name);
            rc = -1; break;
        }
        // shapes must agree exactly, up to the leading 1 of the modulation tables (some exports squeeze it)
        int64_t numel = 1; for (int d = 0; d < w->ndim; d++) numel *= w->shape[d];
        int same = f->t->ndim == w->ndim;
        for (int d = 0; same && d < w->ndim; d++) same = f->t->shape[d] == w->shape[d];
        if (!same && f->t->numel == numel && strstr(w->name, "modulation") && f->t->ndim == w->ndim - 1) same = 1;
        if (!same) {
            char a[96], b[96];
            wan_shape_str_(a, sizeof(a), w->shape, w->ndim); wan_shape_str_(b, sizeof(b), f->t->shape, f->t->ndim);
            snprintf(err, ST_ERRLEN, "%s: tensor '%s' (file name '%s') has shape %s but config '%s' expects %s", path, w->name,
                     f->t->name, b, c->name, a);
            rc = -1; break;
        }
        char e2[ST_ERRLEN];
        if (sizeof(real) == sizeof(double)) rc = st_read_double(f->f, f->t, (double*)(void*)(buf + w->offset), e2);
        else rc = st_read_float(f->f, f->t, (float*)(void*)(buf + w->offset), e2);
        if (rc) snprintf(err, ST_ERRLEN, "%s", e2);
    }
    if (rc == 0) {  // tensors nobody asked for: a different model type (I2V has img_emb, k_img, ...)
        int extra = 0;
        for (int j = 0; j < k.n_found; j++) {
            int known = 0;
            for (int i = 0; i < nt && !known; i++) known = strcmp(k.found[j].canon, tl[i].name) == 0;
            if (!known && extra++ < 3) fprintf(stderr, "warning: %s: ignoring unexpected tensor '%s' (not part of a T2V WanModel)\n", path, k.found[j].t->name);
        }
        if (extra > 3) fprintf(stderr, "warning: %s: ... %d unexpected tensors ignored in all\n", path, extra);
    }
    free(tl);
    wan_ckpt_close_(&k);
    if (rc) { free(buf); return -1; }
    *params = buf;
    return 0;
}

// Writes params under official names as F32 with the config in __metadata__ (readable by
// safetensors.torch.load_file). Extra metadata pairs (key, value, ...) may be appended.
static int wan_save(const char* path, const WanConfig* c, const real* params, const char* const* extra_kv, int n_extra, char* err) {
    WanTensor* tl = (WanTensor*)malloc(sizeof(WanTensor) * WAN_MAX_TENSORS);
    size_t total;
    int nt = wan_layout(c, tl, NULL, NULL, &total);
    StOut* outs = (StOut*)calloc((size_t)nt, sizeof(StOut));
    for (int i = 0; i < nt; i++) {
        outs[i].name = tl[i].name; outs[i].ndim = tl[i].ndim;
        for (int d = 0; d < tl[i].ndim; d++) outs[i].shape[d] = tl[i].shape[d];
        if (sizeof(real) == sizeof(double)) outs[i].f64 = (const double*)(const void*)(params + tl[i].offset);
        else outs[i].f32 = (const float*)(const void*)(params + tl[i].offset);
    }
    char v[10][48];
    snprintf(v[0], 48, "%d", c->dim); snprintf(v[1], 48, "%d", c->ffn_dim); snprintf(v[2], 48, "%d", c->freq_dim);
    snprintf(v[3], 48, "%d", c->num_heads); snprintf(v[4], 48, "%d", c->num_layers); snprintf(v[5], 48, "%d", c->in_dim);
    snprintf(v[6], 48, "%d", c->out_dim); snprintf(v[7], 48, "%d", c->text_len); snprintf(v[8], 48, "%d", c->text_dim);
    snprintf(v[9], 48, "%g", c->eps);
    char patch[48]; snprintf(patch, sizeof(patch), "%d,%d,%d", c->patch[0], c->patch[1], c->patch[2]);
    const char* kv[2 * 12 + 64];
    int n = 0;
    const char* keys[] = {"dim", "ffn_dim", "freq_dim", "num_heads", "num_layers", "in_dim", "out_dim", "text_len", "text_dim", "eps"};
    for (int i = 0; i < 10; i++) { kv[2 * n] = keys[i]; kv[2 * n + 1] = v[i]; n++; }
    kv[2 * n] = "patch_size"; kv[2 * n + 1] = patch; n++;
    kv[2 * n] = "config"; kv[2 * n + 1] = c->name; n++;
    for (int i = 0; i < n_extra && i < 32; i++) { kv[2 * n] = extra_kv[2 * i]; kv[2 * n + 1] = extra_kv[2 * i + 1]; n++; }
    int rc = st_write(path, outs, nt, kv, n, err);
    free(outs); free(tl);
    return rc;
}

// The programs' common start: --preset and/or --weights. With weights, a preset (if given) is the config the
// checkpoint must match, else the config is inferred from it; without weights, the preset (default `fallback`)
// defines the model and *params stays NULL (the caller initialises it). Returns 0, 2 for a bad flag value, 1 for
// a bad file, with a message in err.
static int wan_model_from_flags(WanConfig* c, real** params, const char* preset, const char* weights, int heads,
                                const char* fallback, char* err) {
    memset(c, 0, sizeof(*c));
    *params = NULL;
    if (weights) {
        if (preset && wan_preset(c, preset, err)) return 2;
        return wan_load(weights, c, heads, 0, params, err) ? 1 : 0;
    }
    return wan_preset(c, preset ? preset : fallback, err) ? 2 : 0;
}
