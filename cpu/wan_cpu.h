// cpu/wan_cpu.h: the CPU reference of the Wan2.1 DiT, forward and backward, one sample at a time.
// Built from composable pieces so the TMD student can reuse them (backbone = blocks [0, L−H), flow head =
// blocks [L−H, L) + head, run N times per outer step):
//   wan_time_*        sinusoid → time_embedding (Linear, SiLU, Linear) = e → SiLU → time_projection = e0 [6, D]
//   wan_text_*        context zero-padded to text_len → Linear, GELU-tanh, Linear = c [text_len, D] (no mask)
//   wan_patch_embed_* latent [C, T, Hl, Wl] → tokens [L, D]
//   wan_block_*       one DiT block on the residual stream
//   wan_head_*        LN, modulation by e (shift, scale), Linear, unpatchify (channel fastest)
//   wan_forward / wan_backward: the whole model (WanModel.forward), with all activations kept in WanAct.
// Backward functions accumulate (+=) into parameter gradients (a WanParams carved over a gradient buffer) and
// into input gradients; pass NULL for input gradients that are not wanted.
#pragma once
#include "../wan.h"
#include "../lib/alloc.h" // xcalloc: allocations that name what they were for when they fail
#include "layers.h"

typedef struct {
    int C, T, Hl, Wl, Fp, Hp, Wp, L;
} WanGrid;

// the token grid of a latent [C, T, Hl, Wl]; -1 with a message if the latent does not fit the patch size
static int wan_grid(WanGrid* g, const WanConfig* c, int C, int T, int Hl, int Wl, char* err) {
    if (T > 0 && Hl > 0 && Wl > 0 && (int64_t)T * Hl * Wl > INT32_MAX) {
        snprintf(err, ST_ERRLEN, "latent [%d, %d, %d, %d] has more than 2^31 positions; use a smaller latent", C, T, Hl,
                 Wl);
        return -1;
    }
    if (C != c->in_dim || T % c->patch[0] || Hl % c->patch[1] || Wl % c->patch[2] || T <= 0 || Hl <= 0 || Wl <= 0) {
        snprintf(err, ST_ERRLEN,
                 "latent [%d, %d, %d, %d] does not fit config '%s': expected %d channels and T, H, W "
                 "divisible by the patch (%d, %d, %d)",
                 C, T, Hl, Wl, c->name, c->in_dim, c->patch[0], c->patch[1], c->patch[2]);
        return -1;
    }
    g->C = C;
    g->T = T;
    g->Hl = Hl;
    g->Wl = Wl;
    g->Fp = T / c->patch[0];
    g->Hp = Hl / c->patch[1];
    g->Wp = Wl / c->patch[2];
    g->L = g->Fp * g->Hp * g->Wp;
    return 0;
}

// a bump allocator so each activation struct is one allocation
typedef struct {
    real* base;
    size_t used, cap;
} Arena;
static real* arena_take(Arena* a, size_t n) {
    if (!a->base) { // sizing pass
        a->cap += n;
        return NULL;
    }
    real* p = a->base + a->used;
    a->used += n;
    return p;
}
// runs `fill` twice: once to size, once to carve zeroed memory (a failed allocation exits, saying how many bytes)
#define ARENA_BUILD(arena, fill)                                                                                       \
    do {                                                                                                               \
        (arena)->base = NULL;                                                                                          \
        (arena)->cap = 0;                                                                                              \
        (arena)->used = 0;                                                                                             \
        fill;                                                                                                          \
        (arena)->base = (real*)xcalloc((arena)->cap, sizeof(real), "activations (" #fill ")");                         \
        fill;                                                                                                          \
    } while (0)

// ---------------------------------------------------------------------------------------------------------
// time embedding

typedef struct {
    real* sin; // [freq_dim] [cos | sin]
    real* h1;  // [D] time_embedding.0 output (pre-SiLU)
    real* a1;  // [D] SiLU(h1)
    real* e;   // [D] time_embedding.2 output: the head's conditioning
    real* se;  // [D] SiLU(e)
    real* e0;  // [6D] time_projection output: the blocks' modulation (fp32 in the official model)
} WanTimeAct;

static void wan_time_carve(WanTimeAct* a, Arena* ar, const WanConfig* c) {
    a->sin = arena_take(ar, c->freq_dim);
    a->h1 = arena_take(ar, c->dim);
    a->a1 = arena_take(ar, c->dim);
    a->e = arena_take(ar, c->dim);
    a->se = arena_take(ar, c->dim);
    a->e0 = arena_take(ar, 6 * (size_t)c->dim);
}

// t: the model timestep (1000·σ)
static void wan_time_forward(WanTimeAct* a, const WanParams* P, const WanConfig* c, double t) {
    int D = c->dim;
    sinusoid_forward(a->sin, t, c->freq_dim);
    linear_forward(a->h1, a->sin, P->time_embedding_0_weight, P->time_embedding_0_bias, 1, c->freq_dim, D);
    silu_forward(a->a1, a->h1, D);
    linear_forward(a->e, a->a1, P->time_embedding_2_weight, P->time_embedding_2_bias, 1, D, D);
    silu_forward(a->se, a->e, D);
    linear_forward(a->e0, a->se, P->time_projection_1_weight, P->time_projection_1_bias, 1, D, 6 * D);
}

// de: gradient w.r.t. e from the head (may be NULL); de0: gradient w.r.t. e0 from the blocks (may be NULL)
static void wan_time_backward(WanParams* dP, const WanTimeAct* a, const WanParams* P, const WanConfig* c,
                              const real* de, const real* de0) {
    int D = c->dim;
    real* g_e = (real*)xcalloc(D, sizeof(real), "wan_time_backward: g_e");
    real* g_se = (real*)xcalloc(D, sizeof(real), "wan_time_backward: g_se");
    real* g_a1 = (real*)xcalloc(D, sizeof(real), "wan_time_backward: g_a1");
    real* g_h1 = (real*)xcalloc(D, sizeof(real), "wan_time_backward: g_h1");
    if (de)
        for (int i = 0; i < D; i++) g_e[i] += de[i];
    if (de0) {
        linear_backward(g_se, dP->time_projection_1_weight, dP->time_projection_1_bias, de0, a->se,
                        P->time_projection_1_weight, 1, D, 6 * D);
        silu_backward(g_e, g_se, a->e, D);
    }
    linear_backward(g_a1, dP->time_embedding_2_weight, dP->time_embedding_2_bias, g_e, a->a1,
                    P->time_embedding_2_weight, 1, D, D);
    silu_backward(g_h1, g_a1, a->h1, D);
    linear_backward(NULL, dP->time_embedding_0_weight, dP->time_embedding_0_bias, g_h1, a->sin,
                    P->time_embedding_0_weight, 1, c->freq_dim, D);
    free(g_e);
    free(g_se);
    free(g_a1);
    free(g_h1);
}

// ---------------------------------------------------------------------------------------------------------
// text embedding

typedef struct {
    real* ctx; // [text_len, text_dim] the caption rows, zero-padded (padded rows are attended, not masked)
    real* h1;  // [text_len, D] pre-GELU
    real* a1;  // [text_len, D]
    real* c;   // [text_len, D] the context every cross-attention reads
} WanTextAct;

static void wan_text_carve(WanTextAct* a, Arena* ar, const WanConfig* c) {
    size_t n = (size_t)c->text_len;
    a->ctx = arena_take(ar, n * c->text_dim);
    a->h1 = arena_take(ar, n * c->dim);
    a->a1 = arena_take(ar, n * c->dim);
    a->c = arena_take(ar, n * c->dim);
}

// ctx: [Lt, text_dim] with Lt <= text_len (longer captions are cut to text_len by the caller)
static void wan_text_forward(WanTextAct* a, const WanParams* P, const WanConfig* c, const real* ctx, int Lt) {
    int D = c->dim, N = c->text_len;
    memset(a->ctx, 0, sizeof(real) * (size_t)N * c->text_dim);
    if (ctx) memcpy(a->ctx, ctx, sizeof(real) * (size_t)Lt * c->text_dim);
    linear_forward(a->h1, a->ctx, P->text_embedding_0_weight, P->text_embedding_0_bias, N, c->text_dim, D);
    gelu_forward(a->a1, a->h1, (size_t)N * D);
    linear_forward(a->c, a->a1, P->text_embedding_2_weight, P->text_embedding_2_bias, N, D, D);
}

// dc: [text_len, D]; dctx: [Lt, text_dim] (+=, may be NULL: only the caption's rows, the padding is constant)
static void wan_text_backward(WanParams* dP, real* dctx, const WanTextAct* a, const WanParams* P, const WanConfig* c,
                              const real* dc, int Lt) {
    int D = c->dim, N = c->text_len;
    real* g_a1 = (real*)xcalloc((size_t)N * D, sizeof(real), "wan_text_backward: g_a1");
    real* g_h1 = (real*)xcalloc((size_t)N * D, sizeof(real), "wan_text_backward: g_h1");
    real* g_ctx = (real*)xcalloc((size_t)N * c->text_dim, sizeof(real), "wan_text_backward: g_ctx");
    linear_backward(g_a1, dP->text_embedding_2_weight, dP->text_embedding_2_bias, dc, a->a1, P->text_embedding_2_weight,
                    N, D, D);
    gelu_backward(g_h1, g_a1, a->h1, (size_t)N * D);
    linear_backward(dctx ? g_ctx : NULL, dP->text_embedding_0_weight, dP->text_embedding_0_bias, g_h1, a->ctx,
                    P->text_embedding_0_weight, N, c->text_dim, D);
    if (dctx)
        for (size_t i = 0; i < (size_t)Lt * c->text_dim; i++) dctx[i] += g_ctx[i];
    free(g_a1);
    free(g_h1);
    free(g_ctx);
}

// ---------------------------------------------------------------------------------------------------------
// patch embedding: tokens[L, D] = patchify(x) · W_peᵀ + b_pe (the Conv3d with stride = kernel as a GEMM)

static void wan_patch_embed_forward(real* tokens, real* patches, const WanParams* P, const WanConfig* c,
                                    const WanGrid* g, const real* x) {
    int K = c->in_dim * wan_patch_numel(c);
    patchify_forward(patches, x, g->C, g->T, g->Hl, g->Wl, c->patch[0], c->patch[1], c->patch[2]);
    linear_forward(tokens, patches, P->patch_embedding_weight, P->patch_embedding_bias, g->L, K, c->dim);
}

// dx may be NULL
static void wan_patch_embed_backward(WanParams* dP, real* dx, const real* dtokens, const real* patches,
                                     const WanParams* P, const WanConfig* c, const WanGrid* g) {
    int K = c->in_dim * wan_patch_numel(c);
    real* dp = dx ? (real*)xcalloc((size_t)g->L * K, sizeof(real), "wan_patch_embed_backward: dp") : NULL;
    linear_backward(dp, dP->patch_embedding_weight, dP->patch_embedding_bias, dtokens, patches,
                    P->patch_embedding_weight, g->L, K, c->dim);
    if (dx) {
        patchify_backward(dx, dp, g->C, g->T, g->Hl, g->Wl, c->patch[0], c->patch[1], c->patch[2]);
        free(dp);
    }
}

// ---------------------------------------------------------------------------------------------------------
// one DiT block (official Wan2.1 wan/modules/model.py, WanAttentionBlock.forward):
//   mod = modulation + e0                                     [6, D]: shift, scale, gate; shift, scale, gate
//   x1  = x  + SelfAttn(LN(x)·(1 + mod1) + mod0) · mod2       q, k RMSNorm over D, 3D RoPE on q, k
//   x2  = x1 + CrossAttn(LN_affine(x1; norm3), c)             no modulation, no gate, all text_len keys
//   out = x2 + FFN(LN(x2)·(1 + mod4) + mod3) · mod5           Linear, GELU-tanh, Linear

typedef struct {
    const real* x_in; // [L, D] (points at the caller's residual buffer; kept for the backward)
    real* mod;        // [6, D]
    real *ln1_mean, *ln1_rstd, *xhat1, *h1;
    real *q_pre, *k_pre, *v, *q_rstd, *k_rstd, *qn, *kn, *qr, *kr, *att, *ao, *sa;
    real* x1; // [L, D]
    real *ln3_mean, *ln3_rstd, *y3;
    real *cq_pre, *cq_rstd, *cqn, *ck_pre, *ck_rstd, *ckn, *cv, *catt, *cao, *ca;
    real* x2; // [L, D]
    real *ln2_mean, *ln2_rstd, *xhat2, *h2, *f1, *f1a, *f2;
    real* bwd; // wan_block_backward's scratch, wan_block_scratch_size(c, L) reals; blocks run their
               // backward one at a time, so all blocks of a model share one (NULL: allocated per call)
} WanBlockAct;

// reals of wan_block_backward's scratch: d mod [6D]; the residual gradient and three temporaries [L, D]; two
// [L, F]; the cross-attention's d q [L, D] and d k, d v, d k_pre [text_len, D]; the self-attention's five [L, D]
static size_t wan_block_scratch_size(const WanConfig* c, int L) {
    size_t D = (size_t)c->dim, LD = (size_t)L * D;
    return 6 * D + 4 * LD + 2 * (size_t)L * c->ffn_dim + LD + 3 * (size_t)c->text_len * D + 5 * LD;
}

static void wan_block_carve(WanBlockAct* a, Arena* ar, const WanConfig* c, int L) {
    size_t D = c->dim, F = c->ffn_dim, H = c->num_heads, Lc = c->text_len, LD = (size_t)L * D;
    a->mod = arena_take(ar, 6 * D);
    a->ln1_mean = arena_take(ar, L);
    a->ln1_rstd = arena_take(ar, L);
    a->xhat1 = arena_take(ar, LD);
    a->h1 = arena_take(ar, LD);
    a->q_pre = arena_take(ar, LD);
    a->k_pre = arena_take(ar, LD);
    a->v = arena_take(ar, LD);
    a->q_rstd = arena_take(ar, L);
    a->k_rstd = arena_take(ar, L);
    a->qn = arena_take(ar, LD);
    a->kn = arena_take(ar, LD);
    a->qr = arena_take(ar, LD);
    a->kr = arena_take(ar, LD);
    a->att = arena_take(ar, H * L * L);
    a->ao = arena_take(ar, LD);
    a->sa = arena_take(ar, LD);
    a->x1 = arena_take(ar, LD);
    a->ln3_mean = arena_take(ar, L);
    a->ln3_rstd = arena_take(ar, L);
    a->y3 = arena_take(ar, LD);
    a->cq_pre = arena_take(ar, LD);
    a->cq_rstd = arena_take(ar, L);
    a->cqn = arena_take(ar, LD);
    a->ck_pre = arena_take(ar, Lc * D);
    a->ck_rstd = arena_take(ar, Lc);
    a->ckn = arena_take(ar, Lc * D);
    a->cv = arena_take(ar, Lc * D);
    a->catt = arena_take(ar, H * L * Lc);
    a->cao = arena_take(ar, LD);
    a->ca = arena_take(ar, LD);
    a->x2 = arena_take(ar, LD);
    a->ln2_mean = arena_take(ar, L);
    a->ln2_rstd = arena_take(ar, L);
    a->xhat2 = arena_take(ar, LD);
    a->h2 = arena_take(ar, LD);
    a->f1 = arena_take(ar, (size_t)L * F);
    a->f1a = arena_take(ar, (size_t)L * F);
    a->f2 = arena_take(ar, LD);
}

// x_out [L, D] may not alias x_in. e0: [6D]; ctx: [text_len, D]; rope: rope_table of the grid.
static void wan_block_forward(real* x_out, WanBlockAct* a, const WanBlock* B, const WanConfig* c, const real* x_in,
                              const real* e0, const real* ctx, const real* rope, int L) {
    int D = c->dim, F = c->ffn_dim, H = c->num_heads, d = wan_head_dim(c), Lc = c->text_len;
    size_t LD = (size_t)L * D;
    a->x_in = x_in;
    for (int i = 0; i < 6 * D; i++) a->mod[i] = B->modulation[i] + e0[i];
    const real *shift1 = a->mod, *scale1 = a->mod + D, *gate1 = a->mod + 2 * D, *shift2 = a->mod + 3 * D,
               *scale2 = a->mod + 4 * D, *gate2 = a->mod + 5 * D;
    // self-attention
    layernorm_forward(a->xhat1, a->ln1_mean, a->ln1_rstd, x_in, NULL, NULL, L, D, c->eps);
    modulate_forward(a->h1, a->xhat1, shift1, scale1, L, D);
    linear_forward(a->q_pre, a->h1, B->self_attn_q_weight, B->self_attn_q_bias, L, D, D);
    linear_forward(a->k_pre, a->h1, B->self_attn_k_weight, B->self_attn_k_bias, L, D, D);
    linear_forward(a->v, a->h1, B->self_attn_v_weight, B->self_attn_v_bias, L, D, D);
    rmsnorm_forward(a->qn, a->q_rstd, a->q_pre, B->self_attn_norm_q_weight, L, D, c->eps);
    rmsnorm_forward(a->kn, a->k_rstd, a->k_pre, B->self_attn_norm_k_weight, L, D, c->eps);
    rope_forward(a->qr, a->qn, rope, L, H, d);
    rope_forward(a->kr, a->kn, rope, L, H, d);
    attention_forward(a->ao, a->att, a->qr, a->kr, a->v, L, L, H, d);
    linear_forward(a->sa, a->ao, B->self_attn_o_weight, B->self_attn_o_bias, L, D, D);
    memcpy(a->x1, x_in, sizeof(real) * LD);
    gated_add_forward(a->x1, a->sa, gate1, L, D);
    // cross-attention
    layernorm_forward(a->y3, a->ln3_mean, a->ln3_rstd, a->x1, B->norm3_weight, B->norm3_bias, L, D, c->eps);
    linear_forward(a->cq_pre, a->y3, B->cross_attn_q_weight, B->cross_attn_q_bias, L, D, D);
    rmsnorm_forward(a->cqn, a->cq_rstd, a->cq_pre, B->cross_attn_norm_q_weight, L, D, c->eps);
    linear_forward(a->ck_pre, ctx, B->cross_attn_k_weight, B->cross_attn_k_bias, Lc, D, D);
    rmsnorm_forward(a->ckn, a->ck_rstd, a->ck_pre, B->cross_attn_norm_k_weight, Lc, D, c->eps);
    linear_forward(a->cv, ctx, B->cross_attn_v_weight, B->cross_attn_v_bias, Lc, D, D);
    attention_forward(a->cao, a->catt, a->cqn, a->ckn, a->cv, L, Lc, H, d);
    linear_forward(a->ca, a->cao, B->cross_attn_o_weight, B->cross_attn_o_bias, L, D, D);
    for (size_t i = 0; i < LD; i++) a->x2[i] = a->x1[i] + a->ca[i];
    // FFN
    layernorm_forward(a->xhat2, a->ln2_mean, a->ln2_rstd, a->x2, NULL, NULL, L, D, c->eps);
    modulate_forward(a->h2, a->xhat2, shift2, scale2, L, D);
    linear_forward(a->f1, a->h2, B->ffn_0_weight, B->ffn_0_bias, L, D, F);
    gelu_forward(a->f1a, a->f1, (size_t)L * F);
    linear_forward(a->f2, a->f1a, B->ffn_2_weight, B->ffn_2_bias, L, F, D);
    memcpy(x_out, a->x2, sizeof(real) * LD);
    gated_add_forward(x_out, a->f2, gate2, L, D);
}

// dx_in (+=) [L, D]; de0 (+=) [6D] may be NULL; dctx (+=) [text_len, D] may be NULL
static void wan_block_backward(WanBlock* dB, real* dx_in, real* de0, real* dctx, const real* dx_out,
                               const WanBlockAct* a, const WanBlock* B, const WanConfig* c, const real* ctx,
                               const real* rope, int L) {
    int D = c->dim, F = c->ffn_dim, H = c->num_heads, d = wan_head_dim(c), Lc = c->text_len;
    size_t LD = (size_t)L * D, n_scratch = wan_block_scratch_size(c, L);
    real* scratch = a->bwd ? a->bwd : (real*)xmalloc(n_scratch, sizeof(real), "wan_block_backward scratch");
    memset(scratch, 0, sizeof(real) * n_scratch);
    real* next = scratch;
#define TAKE(n) (next += (n), next - (n))
    real* dmod = TAKE(6 * (size_t)D);
    real *dshift1 = dmod, *dscale1 = dmod + D, *dgate1 = dmod + 2 * D, *dshift2 = dmod + 3 * D, *dscale2 = dmod + 4 * D,
         *dgate2 = dmod + 5 * D;
    const real *scale1 = a->mod + D, *gate1 = a->mod + 2 * D, *scale2 = a->mod + 4 * D, *gate2 = a->mod + 5 * D;
    real* dx = TAKE(LD); // running gradient of the residual stream
    real* t1 = TAKE(LD);
    real* t2 = TAKE(LD);
    real* t3 = TAKE(LD);
    real* tF = TAKE((size_t)L * F);
    real* tF2 = TAKE((size_t)L * F);
#define ZERO(p, n) memset(p, 0, sizeof(real) * (n))
    // FFN: out = x2 + f2·gate2
    memcpy(dx, dx_out, sizeof(real) * LD);                      // dx = d x2 (identity path)
    gated_add_backward(t1, dgate2, dx_out, a->f2, gate2, L, D); // t1 = d f2
    linear_backward(tF, dB->ffn_2_weight, dB->ffn_2_bias, t1, a->f1a, B->ffn_2_weight, L, F, D); // tF = d f1a
    gelu_backward(tF2, tF, a->f1, (size_t)L * F);                                                // tF2 = d f1
    ZERO(t2, LD);
    linear_backward(t2, dB->ffn_0_weight, dB->ffn_0_bias, tF2, a->h2, B->ffn_0_weight, L, D, F); // t2 = d h2
    ZERO(t3, LD);
    modulate_backward(t3, dshift2, dscale2, t2, a->xhat2, scale2, L, D);                 // t3 = d xhat2
    layernorm_backward(dx, NULL, NULL, t3, a->x2, NULL, a->ln2_mean, a->ln2_rstd, L, D); // dx += LN' · d xhat2
    // cross-attention: x2 = x1 + ca  →  d x1 = dx + LN3'(...)
    ZERO(t1, LD);
    linear_backward(t1, dB->cross_attn_o_weight, dB->cross_attn_o_bias, dx, a->cao, B->cross_attn_o_weight, L, D,
                    D); // t1 = d cao
    real* dcqn = TAKE(LD);
    real* dckn = TAKE((size_t)Lc * D);
    real* dcv = TAKE((size_t)Lc * D);
    real* dck = TAKE((size_t)Lc * D);
    attention_backward(dcqn, dckn, dcv, t1, a->catt, a->cqn, a->ckn, a->cv, L, Lc, H, d);
    ZERO(t2, LD);
    rmsnorm_backward(t2, dB->cross_attn_norm_q_weight, dcqn, a->cq_pre, B->cross_attn_norm_q_weight, a->cq_rstd, L,
                     D); // t2 = d cq_pre
    rmsnorm_backward(dck, dB->cross_attn_norm_k_weight, dckn, a->ck_pre, B->cross_attn_norm_k_weight, a->ck_rstd, Lc,
                     D);
    linear_backward(dctx, dB->cross_attn_k_weight, dB->cross_attn_k_bias, dck, ctx, B->cross_attn_k_weight, Lc, D, D);
    linear_backward(dctx, dB->cross_attn_v_weight, dB->cross_attn_v_bias, dcv, ctx, B->cross_attn_v_weight, Lc, D, D);
    ZERO(t3, LD);
    linear_backward(t3, dB->cross_attn_q_weight, dB->cross_attn_q_bias, t2, a->y3, B->cross_attn_q_weight, L, D,
                    D); // t3 = d y3
    layernorm_backward(dx, dB->norm3_weight, dB->norm3_bias, t3, a->x1, B->norm3_weight, a->ln3_mean, a->ln3_rstd, L,
                       D); // dx = d x1
    // self-attention: x1 = x_in + sa·gate1
    ZERO(t1, LD);
    gated_add_backward(t1, dgate1, dx, a->sa, gate1, L, D); // t1 = d sa
    ZERO(t2, LD);
    linear_backward(t2, dB->self_attn_o_weight, dB->self_attn_o_bias, t1, a->ao, B->self_attn_o_weight, L, D,
                    D); // t2 = d ao
    real* dqr = TAKE(LD);
    real* dkr = TAKE(LD);
    real* dv = TAKE(LD);
    real* dqn = TAKE(LD);
    real* dkn = TAKE(LD);
    attention_backward(dqr, dkr, dv, t2, a->att, a->qr, a->kr, a->v, L, L, H, d);
    rope_backward(dqn, dqr, rope, L, H, d);
    rope_backward(dkn, dkr, rope, L, H, d);
    ZERO(dqr, LD);
    rmsnorm_backward(dqr, dB->self_attn_norm_q_weight, dqn, a->q_pre, B->self_attn_norm_q_weight, a->q_rstd, L,
                     D); // dqr = d q_pre
    ZERO(dkr, LD);
    rmsnorm_backward(dkr, dB->self_attn_norm_k_weight, dkn, a->k_pre, B->self_attn_norm_k_weight, a->k_rstd, L,
                     D); // dkr = d k_pre
    ZERO(t3, LD);        // t3 = d h1
    linear_backward(t3, dB->self_attn_q_weight, dB->self_attn_q_bias, dqr, a->h1, B->self_attn_q_weight, L, D, D);
    linear_backward(t3, dB->self_attn_k_weight, dB->self_attn_k_bias, dkr, a->h1, B->self_attn_k_weight, L, D, D);
    linear_backward(t3, dB->self_attn_v_weight, dB->self_attn_v_bias, dv, a->h1, B->self_attn_v_weight, L, D, D);
    ZERO(t1, LD);
    modulate_backward(t1, dshift1, dscale1, t3, a->xhat1, scale1, L, D);                   // t1 = d xhat1
    layernorm_backward(dx, NULL, NULL, t1, a->x_in, NULL, a->ln1_mean, a->ln1_rstd, L, D); // dx = d x_in
    for (size_t i = 0; i < LD; i++) dx_in[i] += dx[i];
    // mod = modulation + e0
    for (int i = 0; i < 6 * D; i++) {
        dB->modulation[i] += dmod[i];
        if (de0) de0[i] += dmod[i];
    }
#undef ZERO
#undef TAKE
    if (!a->bwd) free(scratch);
}

// ---------------------------------------------------------------------------------------------------------
// head: y = Linear(LN(x)·(1 + scale) + shift), (shift, scale) = head.modulation + e; then unpatchify

typedef struct {
    real *mod, *mean, *rstd, *xhat, *hm, *y;
} WanHeadAct;

static void wan_head_carve(WanHeadAct* a, Arena* ar, const WanConfig* c, int L) {
    size_t LD = (size_t)L * c->dim;
    a->mod = arena_take(ar, 2 * (size_t)c->dim);
    a->mean = arena_take(ar, L);
    a->rstd = arena_take(ar, L);
    a->xhat = arena_take(ar, LD);
    a->hm = arena_take(ar, LD);
    a->y = arena_take(ar, (size_t)L * c->out_dim * wan_patch_numel(c));
}

// out: [out_dim, T, Hl, Wl]
static void wan_head_forward(real* out, WanHeadAct* a, const WanParams* P, const WanConfig* c, const WanGrid* g,
                             const real* x, const real* e) {
    int D = c->dim, L = g->L, Po = c->out_dim * wan_patch_numel(c);
    for (int i = 0; i < 2 * D; i++) a->mod[i] = P->head_modulation[i] + e[i % D];
    layernorm_forward(a->xhat, a->mean, a->rstd, x, NULL, NULL, L, D, c->eps);
    modulate_forward(a->hm, a->xhat, a->mod, a->mod + D, L, D);
    linear_forward(a->y, a->hm, P->head_head_weight, P->head_head_bias, L, D, Po);
    unpatchify_forward(out, a->y, c->out_dim, g->T, g->Hl, g->Wl, c->patch[0], c->patch[1], c->patch[2]);
}

// dx (+=) [L, D]; de (+=) [D] may be NULL
static void wan_head_backward(WanParams* dP, real* dx, real* de, const real* dout, const WanHeadAct* a,
                              const WanParams* P, const WanConfig* c, const WanGrid* g, const real* x) {
    int D = c->dim, L = g->L, Po = c->out_dim * wan_patch_numel(c);
    real* dy = (real*)xcalloc((size_t)L * Po, sizeof(real), "wan_head_backward: dy");
    real* dhm = (real*)xcalloc((size_t)L * D, sizeof(real), "wan_head_backward: dhm");
    real* dxhat = (real*)xcalloc((size_t)L * D, sizeof(real), "wan_head_backward: dxhat");
    real* dmod = (real*)xcalloc(2 * (size_t)D, sizeof(real), "wan_head_backward: dmod");
    unpatchify_backward(dy, dout, c->out_dim, g->T, g->Hl, g->Wl, c->patch[0], c->patch[1], c->patch[2]);
    linear_backward(dhm, dP->head_head_weight, dP->head_head_bias, dy, a->hm, P->head_head_weight, L, D, Po);
    modulate_backward(dxhat, dmod, dmod + D, dhm, a->xhat, a->mod + D, L, D);
    layernorm_backward(dx, NULL, NULL, dxhat, x, NULL, a->mean, a->rstd, L, D);
    for (int i = 0; i < 2 * D; i++) {
        dP->head_modulation[i] += dmod[i];
        if (de) de[i % D] += dmod[i];
    }
    free(dy);
    free(dhm);
    free(dxhat);
    free(dmod);
}

// ---------------------------------------------------------------------------------------------------------
// the whole model

typedef struct {
    WanConfig cfg;
    WanGrid g;
    real* patches; // [L, in_dim·P]
    real* xs;      // [num_layers + 1, L, D] residual stream: xs[0] patch embedding, xs[l+1] output of block l
    real* rope;    // [L, head_dim/2, 2]
    real* out;     // [out_dim, T, Hl, Wl] the velocity
    WanTimeAct time;
    WanTextAct text;
    WanBlockAct blocks[WAN_MAX_LAYERS];
    WanHeadAct head;
    Arena arena;
    int Lt; // caption rows of the last forward
} WanAct;

static void wan_act_carve_(WanAct* a) {
    const WanConfig* c = &a->cfg;
    int L = a->g.L;
    Arena* ar = &a->arena;
    a->patches = arena_take(ar, (size_t)L * c->in_dim * wan_patch_numel(c));
    a->xs = arena_take(ar, (size_t)(c->num_layers + 1) * L * c->dim);
    a->rope = arena_take(ar, (size_t)L * wan_head_dim(c));
    a->out = arena_take(ar, (size_t)c->out_dim * a->g.T * a->g.Hl * a->g.Wl);
    wan_time_carve(&a->time, ar, c);
    wan_text_carve(&a->text, ar, c);
    for (int l = 0; l < c->num_layers; l++) wan_block_carve(&a->blocks[l], ar, c, L);
    real* bwd = arena_take(ar, wan_block_scratch_size(c, L)); // shared: the blocks' backwards run one at a time
    for (int l = 0; l < c->num_layers; l++) a->blocks[l].bwd = bwd;
    wan_head_carve(&a->head, ar, c, L);
}

static void wan_act_init(WanAct* a, const WanConfig* c, const WanGrid* g) {
    memset(a, 0, sizeof(*a));
    a->cfg = *c;
    a->g = *g;
    ARENA_BUILD(&a->arena, wan_act_carve_(a));
    rope_table(a->rope, g->Fp, g->Hp, g->Wp, wan_head_dim(c));
}
static void wan_act_free(WanAct* a) {
    free(a->arena.base);
    memset(a, 0, sizeof(*a));
}

// bytes wan_act_init would allocate for config c and grid g (the sizing pass alone), to refuse a latent that does
// not fit before allocating
static size_t wan_act_bytes(const WanConfig* c, const WanGrid* g) {
    WanAct* a = (WanAct*)xcalloc(1, sizeof(WanAct), "an activation plan");
    a->cfg = *c;
    a->g = *g;
    wan_act_carve_(a);
    size_t n = a->arena.cap;
    free(a);
    return n * sizeof(real);
}

static real* wan_xs(const WanAct* a, int l) { return a->xs + (size_t)l * a->g.L * a->cfg.dim; }

// embeddings and the first n blocks, block `skip` left out (its input passed on unchanged; skip < 0: none): after it,
// wan_xs(a, n) holds the residual stream after block n−1
static void wan_forward_blocks_skipping_(WanAct* a, const WanParams* P, const real* x, double t, const real* ctx, int Lt, int n, int skip) {
    const WanConfig* c = &a->cfg;
    a->Lt = Lt;
    wan_time_forward(&a->time, P, c, t);
    wan_text_forward(&a->text, P, c, ctx, Lt);
    wan_patch_embed_forward(wan_xs(a, 0), a->patches, P, c, &a->g, x);
    for (int l = 0; l < n; l++) {
        if (l == skip) { memcpy(wan_xs(a, l + 1), wan_xs(a, l), sizeof(real) * (size_t)a->g.L * c->dim); continue; }
        wan_block_forward(wan_xs(a, l + 1), &a->blocks[l], &P->blocks[l], c, wan_xs(a, l), a->time.e0, a->text.c,
                          a->rope, a->g.L);
    }
}

// embeddings and the first n blocks: after it, wan_xs(a, n) holds the residual stream after block n−1
// (the TMD backbone's main feature when n = L − H; teacher features for the discriminator at any n)
static void wan_forward_blocks(WanAct* a, const WanParams* P, const real* x, double t, const real* ctx, int Lt, int n) {
    wan_forward_blocks_skipping_(a, P, x, t, ctx, Lt, n, -1);
}

// WanModel.forward for one sample with block `skip` left out (skip < 0: none): skip-layer guidance's unconditional
// branch (NVlabs/FastGen fastgen/networks/Wan/network.py: the block loop `continue`s over the indices in skip_layers)
static void wan_forward_skipping(WanAct* a, const WanParams* P, const real* x, double t, const real* ctx, int Lt, int skip) {
    wan_forward_blocks_skipping_(a, P, x, t, ctx, Lt, a->cfg.num_layers, skip);
    wan_head_forward(a->out, &a->head, P, &a->cfg, &a->g, wan_xs(a, a->cfg.num_layers), a->time.e);
}

// WanModel.forward for one sample: x [in_dim, T, Hl, Wl], t = timestep (1000·σ), ctx [Lt, text_dim]. → a->out
static void wan_forward(WanAct* a, const WanParams* P, const real* x, double t, const real* ctx, int Lt) {
    wan_forward_skipping(a, P, x, t, ctx, Lt, -1);
}

// backward of wan_forward_blocks(..., n): dtop = d xs[n] (may be NULL); dfeat[l] (l = 1..n, the array and its
// entries may be NULL) adds a gradient at the residual level xs[l] (features read by someone else, e.g. the
// discriminator); dc_extra [text_len, D] is the gradient of the text context from other readers (the flow head).
// Accumulates into dP, dx (may be NULL), dctx ([Lt, text_dim], may be NULL).
static void wan_backward_blocks(WanParams* dP, real* dx, real* dctx, const real* dtop, int n, real* const* dfeat,
                                const real* dc_extra, const WanAct* a, const WanParams* P) {
    const WanConfig* c = &a->cfg;
    int L = a->g.L, D = c->dim;
    size_t LD = (size_t)L * D;
    real* g_cur = (real*)xcalloc(LD, sizeof(real), "wan_backward_blocks: g_cur");
    real* g_prev = (real*)xcalloc(LD, sizeof(real), "wan_backward_blocks: g_prev");
    real* de0 = (real*)xcalloc(6 * (size_t)D, sizeof(real), "wan_backward_blocks: de0");
    real* dc = (real*)xcalloc((size_t)c->text_len * D, sizeof(real), "wan_backward_blocks: dc");
    if (dtop) memcpy(g_cur, dtop, sizeof(real) * LD);
    if (dc_extra) memcpy(dc, dc_extra, sizeof(real) * (size_t)c->text_len * D);
    for (int l = n - 1; l >= 0; l--) {
        if (dfeat && dfeat[l + 1])
            for (size_t i = 0; i < LD; i++) g_cur[i] += dfeat[l + 1][i];
        memset(g_prev, 0, sizeof(real) * LD);
        wan_block_backward(&dP->blocks[l], g_prev, de0, dc, g_cur, &a->blocks[l], &P->blocks[l], c, a->text.c, a->rope,
                           L);
        real* tmp = g_cur;
        g_cur = g_prev;
        g_prev = tmp;
    }
    if (dfeat && dfeat[0])
        for (size_t i = 0; i < LD; i++) g_cur[i] += dfeat[0][i];
    wan_patch_embed_backward(dP, dx, g_cur, a->patches, P, c, &a->g);
    wan_time_backward(dP, &a->time, P, c, NULL, de0);
    wan_text_backward(dP, dctx, &a->text, P, c, dc, a->Lt);
    free(g_cur);
    free(g_prev);
    free(de0);
    free(dc);
}

// dout [out_dim, T, Hl, Wl] → dP (+=), dx (+=, may be NULL), dctx (+=, [Lt, text_dim], may be NULL)
static void wan_backward(WanParams* dP, real* dx, real* dctx, const real* dout, const WanAct* a, const WanParams* P) {
    const WanConfig* c = &a->cfg;
    int D = c->dim;
    real* gtop = (real*)xcalloc((size_t)a->g.L * D, sizeof(real), "wan_backward: gtop");
    real* de = (real*)xcalloc(D, sizeof(real), "wan_backward: de");
    wan_head_backward(dP, gtop, de, dout, &a->head, P, c, &a->g, wan_xs(a, c->num_layers));
    wan_time_backward(dP, &a->time, P, c, de, NULL); // the head's path through e; the blocks' path through e0 below
    wan_backward_blocks(dP, dx, dctx, gtop, c->num_layers, NULL, NULL, a, P);
    free(gtop);
    free(de);
}
