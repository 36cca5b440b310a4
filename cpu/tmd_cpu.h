// cpu/tmd_cpu.h: the TMD student on the CPU reference (paper Section 3, App. A.1), its inner flow and samplers.
//   the decoupled student: backbone = embeddings + first L − H blocks (main feature m); flow head = fusion of the
//     inner state y_s with m, the last H blocks and the output head, conditioned on e(s) + e_Δ(s − r)
//   the inner flow (paper Eq. 13-14 and Alg. 1, with MeanFlow's sign): u = y1 − head, y_r = y_s − (s − r)·u
//   samplers: TMD (Algorithm 1), DMD2-v multi-step, effective NFE (Eq. 16)
// Every forward overwrites its outputs; every backward accumulates (+=) into gradients (see cpu/layers.h).
#pragma once
#include "wan_cpu.h"
#include "../lib/rng.h"

// ---------------------------------------------------------------------------------------------------------
// time grids

// shift_γ(u) = γ·u / ((γ − 1)·u + 1)   (Wan's timestep shift; paper Section 3.2)
static double time_shift(double u, double gamma) { return gamma * u / ((gamma - 1) * u + 1); }

// every sampled or gridded time lives in [T_MIN, T_MAX] = [0.001, 0.999], clamped AFTER the shift (Table 7's
// min/max t; FastGen's noise schedule clamps after shifting): shift_5(0.999) = 0.9998 would otherwise leave it
#define T_MIN 0.001
#define T_MAX 0.999
static double clamp_time(double t) { return fmin(fmax(t, T_MIN), T_MAX); }

// outer grid t[0..M]: t_0 = 0 < ... < t_M = 0.999, t_i = min(shift_γ(0.999·i/M), 0.999): FastGen shifts
// linspace(0.999, 0, M + 1) (its Wan configs list [0.999, 0.908, 0] for M = 2 with γ = 10 and
// [0.999, 0.937, 0.833, 0.624, 0] for M = 4 with γ = 5); t_M = s_N = 0.999 (paper fn. 2)
static void outer_grid(double* t, int M, double gamma) {
    t[0] = 0;
    for (int i = 1; i <= M; i++) t[i] = fmin(time_shift(T_MAX * i / M, gamma), T_MAX);
}

// THE t_student shift γ of the outer grid for a student of M steps: every trainer (cpu/distill_cpu.h tmmf_defaults and
// dmd_defaults, which cpu/distill_run.h and train_tmd.cu build their configs from) and every sampler (sample_tmd.cu,
// gpu/eval_gpu.cuh, cpu/distill_run.h) takes it from here, so a student is sampled on the grid it was trained on.
// 10 up to three steps, 5 from four. Table 7 gives 10 "if not specified otherwise"; App. B.6 specifies 5 only "for 4
// steps" (Table 11: 84.60 against 84.53 with 10). At 3 steps Table 11 has the two tied, 10 marginally ahead overall
// (84.48 against 84.47: quality 85.71 / 85.55, semantic 79.58 / 80.15), so nothing overrides Table 7's default there.
// Beyond four steps the paper reports nothing; B.6's "lower shift values ... when using more steps" keeps 5.
static double outer_shift_default(int M) { return M >= 4 ? 5 : 10; }

// effective NFE (Eq. 16): M·(1 + (N − 1)·H / L)
static double effective_nfe(int M, int N, int H, int L) { return M * (1.0 + (double)(N - 1) * H / L); }

// ---------------------------------------------------------------------------------------------------------
// the student's extra parameters

enum { FUSION_GATED = 0, FUSION_CONCAT = 1 };

typedef struct {
    WanConfig wan;     // the teacher's architecture
    int head_blocks;   // H: the flow head is the last H blocks and the output head
    int fusion;        // FUSION_GATED (paper's default) or FUSION_CONCAT (App. B.3)
    int fuse_ffn_dim;  // hidden width of the gated fusion's MLP
} StudentConfig;

typedef struct {
    real* delta_time_0_weight;  // [D, freq_dim] time embedding of s − r (a second Wan time MLP)
    real* delta_time_0_bias;    // [D]
    real* delta_time_2_weight;  // [D, D]  zero-initialised, so e_Δ = 0 at initialisation
    real* delta_time_2_bias;    // [D]     zero-initialised
    real* fuse_modulation;      // [3, D]  gated fusion: shift, scale (added to the global ones), own gate (zero-init)
    real* fuse_0_weight;        // [Ff, D] gated fusion MLP
    real* fuse_0_bias;          // [Ff]
    real* fuse_2_weight;        // [D, Ff]
    real* fuse_2_bias;          // [D]
    real* fuse_gate;            // [1]     a: the global gate sigmoid(a)
    real* concat_weight;        // [D, 2D] concat fusion: Linear([m, p(y_s)]), identity on the m half at init
    real* concat_bias;          // [D]
} StudentExtra;

typedef struct { WanParams w; StudentExtra x; } StudentParams;

// lays out the extras after the Wan parameters in one buffer; names are used when saving a student checkpoint
static int student_extra_layout(const StudentConfig* sc, WanTensor* tl, StudentExtra* X, real* base, size_t* total) {
    WanLayoutBuilder_ b = {tl, 0, 0, NULL, base};
    int64_t D = sc->wan.dim, Ff = sc->fuse_ffn_dim;
    wan_add_(&b, X ? &X->delta_time_0_weight : NULL, "flow_head.delta_time_embedding.0.weight", 2, D, sc->wan.freq_dim, 0, 0, 0);
    wan_add_(&b, X ? &X->delta_time_0_bias : NULL, "flow_head.delta_time_embedding.0.bias", 1, D, 0, 0, 0, 0);
    wan_add_(&b, X ? &X->delta_time_2_weight : NULL, "flow_head.delta_time_embedding.2.weight", 2, D, D, 0, 0, 0);
    wan_add_(&b, X ? &X->delta_time_2_bias : NULL, "flow_head.delta_time_embedding.2.bias", 1, D, 0, 0, 0, 0);
    if (sc->fusion == FUSION_GATED) {
        wan_add_(&b, X ? &X->fuse_modulation : NULL, "flow_head.fusion.modulation", 2, 3, D, 0, 0, 0);
        wan_add_(&b, X ? &X->fuse_0_weight : NULL, "flow_head.fusion.ffn.0.weight", 2, Ff, D, 0, 0, 0);
        wan_add_(&b, X ? &X->fuse_0_bias : NULL, "flow_head.fusion.ffn.0.bias", 1, Ff, 0, 0, 0, 0);
        wan_add_(&b, X ? &X->fuse_2_weight : NULL, "flow_head.fusion.ffn.2.weight", 2, D, Ff, 0, 0, 0);
        wan_add_(&b, X ? &X->fuse_2_bias : NULL, "flow_head.fusion.ffn.2.bias", 1, D, 0, 0, 0, 0);
        wan_add_(&b, X ? &X->fuse_gate : NULL, "flow_head.fusion.gate", 1, 1, 0, 0, 0, 0);
    } else {
        wan_add_(&b, X ? &X->concat_weight : NULL, "flow_head.fusion.concat.weight", 2, D, 2 * D, 0, 0, 0);
        wan_add_(&b, X ? &X->concat_bias : NULL, "flow_head.fusion.concat.bias", 1, D, 0, 0, 0, 0);
    }
    if (total) *total = b.total;
    return b.n;
}

static size_t student_num_params(const StudentConfig* sc) {
    size_t n; student_extra_layout(sc, NULL, NULL, NULL, &n);
    return wan_num_params(&sc->wan) + n;
}

// carves [Wan parameters | extras] out of one buffer of student_num_params elements
static void student_carve(const StudentConfig* sc, StudentParams* S, real* base) {
    memset(S, 0, sizeof(*S));
    wan_carve(&sc->wan, &S->w, base);
    student_extra_layout(sc, NULL, &S->x, base + wan_num_params(&sc->wan), NULL);
}

// the student starts as the teacher: Wan weights copied; the s − r embedding's output layer, the fusion's own gate
// and (concat) the projection's y-half chosen so that the flow head at s = r reproduces the teacher exactly
// (gated) or up to N(0, 0.01)-weighted patch features (concat, as the paper initialises it).
static void student_init(const StudentConfig* sc, real* buf, const real* teacher, uint64_t seed) {
    size_t nw = wan_num_params(&sc->wan);
    size_t nx; student_extra_layout(sc, NULL, NULL, NULL, &nx);
    memcpy(buf, teacher, sizeof(real) * nw);
    memset(buf + nw, 0, sizeof(real) * nx);
    StudentParams S; student_carve(sc, &S, buf);
    Rng r = rng_make(seed);
    int D = sc->wan.dim, Ff = sc->fuse_ffn_dim;
    for (size_t i = 0; i < (size_t)D * sc->wan.freq_dim; i++) S.x.delta_time_0_weight[i] = rng_normal(&r) / sqrt((double)sc->wan.freq_dim);
    if (sc->fusion == FUSION_GATED) {
        for (size_t i = 0; i < (size_t)Ff * D; i++) S.x.fuse_0_weight[i] = rng_normal(&r) / sqrt((double)D);
        for (size_t i = 0; i < (size_t)D * Ff; i++) S.x.fuse_2_weight[i] = rng_normal(&r) / sqrt((double)Ff);
        // fuse_modulation (shift, scale offsets and the block's own gate) zero; a = 0 so sigmoid(a) = 0.5
    } else {
        for (int o = 0; o < D; o++) for (int i = 0; i < 2 * D; i++)
            S.x.concat_weight[(size_t)o * 2 * D + i] = i < D ? (i == o) : 0.01 * rng_normal(&r);
    }
}

// ---------------------------------------------------------------------------------------------------------
// one flow-head evaluation: head_θ(y_s, s, r; m)
//   e_h  = time_embedding(sin(1000 s)) + delta_time_embedding(sin(1000 (s − r)))       [D]
//   e0_h = time_projection(SiLU(e_h))                                                  [6, D] (the global projection)
//   p    = patch_embedding(y_s)                                                        [L, D] (shared with the backbone)
//   gated:  q = FFN_f(LN(p)·(1 + scale) + shift)·gate,  (shift, scale) = fuse_mod[0:2] + e0_h[3:5], gate = fuse_mod[2]
//           h = m + sigmoid(a)·q            (the gated interpolation between m and m + q)
//   concat: h = W_c·[m, p] + b_c
//   head_θ = Head(Blocks_{L−H..L−1}(h; e0_h, c); e_h)
// Choices (the paper leaves the block open; recorded by the audit against the paper's App. A.1):
//  - time: the head is conditioned on e(s) + e_Δ(s − r), the teacher's own time embedding of s plus a second
//    time MLP of s − r whose output layer starts at zero; the sum drives the global time projection (so the
//    head blocks' AdaLN), the fusion's shift/scale and the output head. At init the head therefore sees time s
//    exactly as the teacher's last H blocks would, and r has no effect.
//  - fusion: the paper's AdaLN block is a Wan FFN sub-block, p + g·FFN(LN(p)·(1 + scale) + shift), and the fusion
//    interpolates between m and it with sigmoid(a). Taken literally, (1 − σ)·m + σ·(p + g·FFN) would add σ·p (the
//    patch features of the noisy inner state) to the head's input at init and the student would NOT equal the
//    teacher. We drop the block's inner residual p: h = m + σ(a)·g·FFN(...), with its own gate g zero-initialised,
//    so h = m at init. The inner state y_s reaches the head only through the learned FFN path.
// Consequence (test_student_init): at init head_θ(y_s, s, r; m(x_t, t)) equals the teacher run with its first
// L − H blocks at time t and its last H blocks and output head at time s, for any y_s and r; it equals the
// teacher's v(x_t, t) only at s = t.

typedef struct {
    real *sin_s, *h1_s, *a1_s, *e_s;   // time embedding of s (shared time_embedding weights)
    real *sin_d, *h1_d, *a1_d, *e_d;   // delta time embedding of s − r
    real *e_h, *se_h, *e0_h;           // [D], [D], [6D]
    real *patches, *p;                 // [L, in·P], [L, D]
    real *fmod;                        // [3D] shift, scale, gate of the fusion block
    real *fmean, *frstd, *fxhat, *fh, *ff1, *ff1a, *ff2, *q;
    real *cat;                         // [L, 2D]
    real *xs;                          // [H + 1, L, D]: xs[0] = fused feature, xs[k] = after head block k − 1
    WanBlockAct blocks[WAN_MAX_LAYERS];
    WanHeadAct head;
    real* out;                         // [out_dim, T, Hl, Wl] head_θ(y_s, s, r; m)
    double s, r, gate;                 // inputs kept for the backward; gate = sigmoid(a)
    const real* m;
    Arena arena;
} HeadAct;

static void head_act_carve_(HeadAct* a, const StudentConfig* sc, const WanGrid* g) {
    const WanConfig* c = &sc->wan; Arena* ar = &a->arena;
    size_t D = c->dim, L = g->L, LD = L * D, Ff = sc->fuse_ffn_dim;
    a->sin_s = arena_take(ar, c->freq_dim); a->h1_s = arena_take(ar, D); a->a1_s = arena_take(ar, D); a->e_s = arena_take(ar, D);
    a->sin_d = arena_take(ar, c->freq_dim); a->h1_d = arena_take(ar, D); a->a1_d = arena_take(ar, D); a->e_d = arena_take(ar, D);
    a->e_h = arena_take(ar, D); a->se_h = arena_take(ar, D); a->e0_h = arena_take(ar, 6 * D);
    a->patches = arena_take(ar, L * c->in_dim * wan_patch_numel(c)); a->p = arena_take(ar, LD);
    a->fmod = arena_take(ar, 3 * D);
    a->fmean = arena_take(ar, L); a->frstd = arena_take(ar, L); a->fxhat = arena_take(ar, LD); a->fh = arena_take(ar, LD);
    a->ff1 = arena_take(ar, L * Ff); a->ff1a = arena_take(ar, L * Ff); a->ff2 = arena_take(ar, LD); a->q = arena_take(ar, LD);
    a->cat = arena_take(ar, 2 * LD);
    a->xs = arena_take(ar, (size_t)(sc->head_blocks + 1) * LD);
    for (int k = 0; k < sc->head_blocks; k++) wan_block_carve(&a->blocks[k], ar, c, (int)L);
    wan_head_carve(&a->head, ar, c, (int)L);
    a->out = arena_take(ar, (size_t)c->out_dim * g->T * g->Hl * g->Wl);
}
static void head_act_init(HeadAct* a, const StudentConfig* sc, const WanGrid* g) { memset(a, 0, sizeof(*a)); ARENA_BUILD(&a->arena, head_act_carve_(a, sc, g)); }
static void head_act_free(HeadAct* a) { free(a->arena.base); memset(a, 0, sizeof(*a)); }

// Linear, SiLU, Linear on a sinusoid (the Wan time MLP) with given weights
static void time_mlp_forward(real* e, real* sin, real* h1, real* a1, const real* w0, const real* b0, const real* w2, const real* b2, double t, int freq_dim, int D) {
    sinusoid_forward(sin, t, freq_dim);
    linear_forward(h1, sin, w0, b0, 1, freq_dim, D);
    silu_forward(a1, h1, D);
    linear_forward(e, a1, w2, b2, 1, D, D);
}
static void time_mlp_backward(real* dw0, real* db0, real* dw2, real* db2, const real* de, const real* sin, const real* h1, const real* a1,
                              const real* w2, int freq_dim, int D) {
    real* ga = (real*)calloc(D, sizeof(real)); real* gh = (real*)calloc(D, sizeof(real));
    linear_backward(ga, dw2, db2, de, a1, w2, 1, D, D);
    silu_backward(gh, ga, h1, D);
    linear_backward(NULL, dw0, db0, gh, sin, NULL, 1, freq_dim, D);
    free(ga); free(gh);
}

// m: main feature [L, D]; ctx_c: the backbone's text context c [text_len, D]; rope: the grid's table; y [C, T, Hl, Wl]
static void head_forward(HeadAct* a, const StudentParams* S, const StudentConfig* sc, const WanGrid* g, const real* m,
                         const real* ctx_c, const real* rope, const real* y, double s, double r) {
    const WanConfig* c = &sc->wan; const WanParams* P = &S->w; const StudentExtra* X = &S->x;
    int D = c->dim, L = g->L, Ff = sc->fuse_ffn_dim, Lb = c->num_layers - sc->head_blocks;
    size_t LD = (size_t)L * D;
    a->s = s; a->r = r; a->m = m;
    time_mlp_forward(a->e_s, a->sin_s, a->h1_s, a->a1_s, P->time_embedding_0_weight, P->time_embedding_0_bias,
                     P->time_embedding_2_weight, P->time_embedding_2_bias, 1000.0 * s, c->freq_dim, D);
    time_mlp_forward(a->e_d, a->sin_d, a->h1_d, a->a1_d, X->delta_time_0_weight, X->delta_time_0_bias,
                     X->delta_time_2_weight, X->delta_time_2_bias, 1000.0 * (s - r), c->freq_dim, D);
    for (int i = 0; i < D; i++) a->e_h[i] = a->e_s[i] + a->e_d[i];
    silu_forward(a->se_h, a->e_h, D);
    linear_forward(a->e0_h, a->se_h, P->time_projection_1_weight, P->time_projection_1_bias, 1, D, 6 * D);
    wan_patch_embed_forward(a->p, a->patches, P, c, g, y);
    real* h = a->xs;
    if (sc->fusion == FUSION_GATED) {
        for (int i = 0; i < D; i++) { a->fmod[i] = X->fuse_modulation[i] + a->e0_h[3 * D + i]; a->fmod[D + i] = X->fuse_modulation[D + i] + a->e0_h[4 * D + i];
                                      a->fmod[2 * D + i] = X->fuse_modulation[2 * D + i]; }
        layernorm_forward(a->fxhat, a->fmean, a->frstd, a->p, NULL, NULL, L, D, c->eps);
        modulate_forward(a->fh, a->fxhat, a->fmod, a->fmod + D, L, D);
        linear_forward(a->ff1, a->fh, X->fuse_0_weight, X->fuse_0_bias, L, D, Ff);
        gelu_forward(a->ff1a, a->ff1, (size_t)L * Ff);
        linear_forward(a->ff2, a->ff1a, X->fuse_2_weight, X->fuse_2_bias, L, Ff, D);
        a->gate = 1 / (1 + exp(-X->fuse_gate[0]));
        for (size_t n = 0; n < (size_t)L; n++) for (int i = 0; i < D; i++) {
            a->q[n * D + i] = a->ff2[n * D + i] * a->fmod[2 * D + i];
            h[n * D + i] = m[n * D + i] + a->gate * a->q[n * D + i];
        }
    } else {
        for (size_t n = 0; n < (size_t)L; n++) { memcpy(a->cat + n * 2 * D, m + n * D, sizeof(real) * D); memcpy(a->cat + n * 2 * D + D, a->p + n * D, sizeof(real) * D); }
        linear_forward(h, a->cat, X->concat_weight, X->concat_bias, L, 2 * D, D);
    }
    for (int k = 0; k < sc->head_blocks; k++)
        wan_block_forward(a->xs + (size_t)(k + 1) * LD, &a->blocks[k], &P->blocks[Lb + k], c, a->xs + (size_t)k * LD, a->e0_h, ctx_c, rope, L);
    wan_head_forward(a->out, &a->head, P, c, g, a->xs + (size_t)sc->head_blocks * LD, a->e_h);
}

// dout = d head_θ → dS (+=), dm (+=, [L, D]), dc (+=, [text_len, D]), dy (+=, may be NULL)
static void head_backward(StudentParams* dS, real* dm, real* dc, real* dy, const real* dout, const HeadAct* a, const StudentParams* S,
                          const StudentConfig* sc, const WanGrid* g, const real* ctx_c, const real* rope) {
    const WanConfig* c = &sc->wan; const WanParams* P = &S->w; const StudentExtra* X = &S->x;
    WanParams* dP = &dS->w; StudentExtra* dX = &dS->x;
    int D = c->dim, L = g->L, Ff = sc->fuse_ffn_dim, H = sc->head_blocks, Lb = c->num_layers - H;
    size_t LD = (size_t)L * D;
    real* de_h = (real*)calloc(D, sizeof(real)); real* de0_h = (real*)calloc(6 * (size_t)D, sizeof(real));
    real* g_cur = (real*)calloc(LD, sizeof(real)); real* g_prev = (real*)calloc(LD, sizeof(real));
    wan_head_backward(dP, g_cur, de_h, dout, &a->head, P, c, g, a->xs + (size_t)H * LD);
    for (int k = H - 1; k >= 0; k--) {
        memset(g_prev, 0, sizeof(real) * LD);
        wan_block_backward(&dP->blocks[Lb + k], g_prev, de0_h, dc, g_cur, &a->blocks[k], &P->blocks[Lb + k], c, ctx_c, rope, L);
        real* t = g_cur; g_cur = g_prev; g_prev = t;
    }
    // g_cur = d h (the fused feature)
    real* dp = (real*)calloc(LD, sizeof(real));
    if (sc->fusion == FUSION_GATED) {
        real* dq = (real*)calloc(LD, sizeof(real)); real* dff2 = (real*)calloc(LD, sizeof(real));
        real* dff1a = (real*)calloc((size_t)L * Ff, sizeof(real)); real* dff1 = (real*)calloc((size_t)L * Ff, sizeof(real));
        real* dfh = (real*)calloc(LD, sizeof(real)); real* dfxhat = (real*)calloc(LD, sizeof(real));
        real* dfmod = (real*)calloc(3 * (size_t)D, sizeof(real));
        double dgate = 0;
        for (size_t i = 0; i < LD; i++) { dm[i] += g_cur[i]; dq[i] = a->gate * g_cur[i]; dgate += g_cur[i] * a->q[i]; }  // h = m + σ(a)·q
        dX->fuse_gate[0] += dgate * a->gate * (1 - a->gate);
        for (size_t n = 0; n < (size_t)L; n++) for (int i = 0; i < D; i++) {                                          // q = ff2·gate_f
            dff2[n * D + i] = dq[n * D + i] * a->fmod[2 * D + i]; dfmod[2 * D + i] += dq[n * D + i] * a->ff2[n * D + i];
        }
        linear_backward(dff1a, dX->fuse_2_weight, dX->fuse_2_bias, dff2, a->ff1a, X->fuse_2_weight, L, Ff, D);
        gelu_backward(dff1, dff1a, a->ff1, (size_t)L * Ff);
        linear_backward(dfh, dX->fuse_0_weight, dX->fuse_0_bias, dff1, a->fh, X->fuse_0_weight, L, D, Ff);
        modulate_backward(dfxhat, dfmod, dfmod + D, dfh, a->fxhat, a->fmod + D, L, D);
        layernorm_backward(dp, NULL, NULL, dfxhat, a->p, NULL, a->fmean, a->frstd, L, D);
        for (int i = 0; i < D; i++) {  // fmod = (fuse_mod[0:2] + e0_h[3:5], fuse_mod[2])
            dX->fuse_modulation[i] += dfmod[i]; de0_h[3 * D + i] += dfmod[i];
            dX->fuse_modulation[D + i] += dfmod[D + i]; de0_h[4 * D + i] += dfmod[D + i];
            dX->fuse_modulation[2 * D + i] += dfmod[2 * D + i];
        }
        free(dq); free(dff2); free(dff1a); free(dff1); free(dfh); free(dfxhat); free(dfmod);
    } else {
        real* dcat = (real*)calloc(2 * LD, sizeof(real));
        linear_backward(dcat, dX->concat_weight, dX->concat_bias, g_cur, a->cat, X->concat_weight, L, 2 * D, D);
        for (size_t n = 0; n < (size_t)L; n++) for (int i = 0; i < D; i++) { dm[n * D + i] += dcat[n * 2 * D + i]; dp[n * D + i] += dcat[n * 2 * D + D + i]; }
        free(dcat);
    }
    wan_patch_embed_backward(dP, dy, dp, a->patches, P, c, g);
    // e0_h = TP(SiLU(e_h)); e_h = e_s + e_d
    real* dse = (real*)calloc(D, sizeof(real));
    linear_backward(dse, dP->time_projection_1_weight, dP->time_projection_1_bias, de0_h, a->se_h, P->time_projection_1_weight, 1, D, 6 * D);
    silu_backward(de_h, dse, a->e_h, D);
    time_mlp_backward(dP->time_embedding_0_weight, dP->time_embedding_0_bias, dP->time_embedding_2_weight, dP->time_embedding_2_bias,
                      de_h, a->sin_s, a->h1_s, a->a1_s, P->time_embedding_2_weight, c->freq_dim, D);
    time_mlp_backward(dX->delta_time_0_weight, dX->delta_time_0_bias, dX->delta_time_2_weight, dX->delta_time_2_bias,
                      de_h, a->sin_d, a->h1_d, a->a1_d, X->delta_time_2_weight, c->freq_dim, D);
    free(de_h); free(de0_h); free(g_cur); free(g_prev); free(dp); free(dse);
}

// ---------------------------------------------------------------------------------------------------------
// the inner flow (Algorithm 1's INNERFLOW) with every step's activations kept, so it can be backpropagated
// (flow-head rollout, Section 3.2). Inner grid s_j = shift_10(j/N), s_N clamped to 0.999.

typedef struct {
    int N;
    double s[65];            // s_0 = 0 < ... < s_N
    HeadAct steps[64];       // steps[j − 1] evaluates at (s_j, s_{j−1})
    real* ys;                // [N + 1, numel] ys[N] = y1, ys[j − 1] = state after the step from s_j
    size_t numel;
} Rollout;

static void inner_grid(double* s, int N, double gamma) { for (int j = 0; j <= N; j++) s[j] = fmin(time_shift((double)j / N, gamma), 0.999); }

static void rollout_init(Rollout* ro, const StudentConfig* sc, const WanGrid* g, int N, double gamma) {
    memset(ro, 0, sizeof(*ro));
    ro->N = N; inner_grid(ro->s, N, gamma);
    ro->numel = (size_t)sc->wan.out_dim * g->T * g->Hl * g->Wl;
    ro->ys = (real*)calloc((N + 1) * ro->numel, sizeof(real));
    for (int j = 0; j < N; j++) head_act_init(&ro->steps[j], sc, g);
}
static void rollout_free(Rollout* ro) { for (int j = 0; j < ro->N; j++) head_act_free(&ro->steps[j]); free(ro->ys); }
static real* rollout_y(const Rollout* ro, int j) { return ro->ys + (size_t)j * ro->numel; }

// y ← y1; for j = N..1: y ← y − (s_j − s_{j−1})·(y1 − head(y, s_j, s_{j−1}; m)); returns ŷ = rollout_y(ro, 0)
static const real* rollout_forward(Rollout* ro, const StudentParams* S, const StudentConfig* sc, const WanGrid* g, const real* m,
                                   const real* ctx_c, const real* rope, const real* y1) {
    memcpy(rollout_y(ro, ro->N), y1, sizeof(real) * ro->numel);
    for (int j = ro->N; j >= 1; j--) {
        HeadAct* a = &ro->steps[j - 1];
        const real* y = rollout_y(ro, j); real* yn = rollout_y(ro, j - 1);
        head_forward(a, S, sc, g, m, ctx_c, rope, y, ro->s[j], ro->s[j - 1]);
        double ds = ro->s[j] - ro->s[j - 1];
        for (size_t i = 0; i < ro->numel; i++) yn[i] = y[i] - ds * (y1[i] - a->out[i]);   // y_r = y_s − (s − r)·u
    }
    return rollout_y(ro, 0);
}

// dyhat = d ŷ → dS, dm (+=), dc (+=): backpropagation through all N inner steps (gradients reach y_{s_j} through the
// shared patch embedding, and m through every step's fusion)
static void rollout_backward(StudentParams* dS, real* dm, real* dc, const real* dyhat, const Rollout* ro, const StudentParams* S,
                             const StudentConfig* sc, const WanGrid* g, const real* ctx_c, const real* rope) {
    real* dy = (real*)malloc(sizeof(real) * ro->numel); real* dprev = (real*)calloc(ro->numel, sizeof(real));
    real* dhead = (real*)malloc(sizeof(real) * ro->numel);
    memcpy(dy, dyhat, sizeof(real) * ro->numel);             // dy = d y_{s_{j−1}}
    for (int j = 1; j <= ro->N; j++) {
        double ds = ro->s[j] - ro->s[j - 1];
        // y_{j−1} = y_j − ds·y1 + ds·head(y_j): d y_j = dy (identity) + (head path); d head = ds·dy
        for (size_t i = 0; i < ro->numel; i++) { dhead[i] = ds * dy[i]; dprev[i] = dy[i]; }
        head_backward(dS, dm, dc, j < ro->N ? dprev : NULL, dhead, &ro->steps[j - 1], S, sc, g, ctx_c, rope);
        memcpy(dy, dprev, sizeof(real) * ro->numel);
    }
    free(dy); free(dprev); free(dhead);
}

// ---------------------------------------------------------------------------------------------------------
// samplers. Each takes the initial noise x [C, T, Hl, Wl] (overwritten with the sample), the caption context
// ([Lt, text_dim] rows), and an Rng for the inner noise. Time in double; the model sees 1000·t.

// the student's backbone on x_t: fills `bb` and returns m = its residual stream after block L − H − 1
static const real* student_backbone_forward(WanAct* bb, const StudentParams* S, const StudentConfig* sc, const real* x, double t, const real* ctx, int Lt) {
    int Lb = sc->wan.num_layers - sc->head_blocks;
    wan_forward_blocks(bb, &S->w, x, 1000.0 * t, ctx, Lt, Lb);
    return wan_xs(bb, Lb);
}

// TMD (Algorithm 1): for i = M..1: m = backbone(x, t_i); x ← x − (t_i − t_{i−1})·INNERFLOW(m), fresh y1 every step.
// outer_sde = 1 is a probe, not the paper's sampler (App. A.3: "the outer transitions are also deterministic"): between
// outer steps x ← (1 − t_{i−1})·x̂ + t_{i−1}·ε with x̂ = x − t_i·ŷ and a fresh ε, the input Stage 2 trains on.
static void tmd_sample(real* x, const StudentParams* S, const StudentConfig* sc, const WanGrid* g, const real* ctx, int Lt,
                       int M, int N, double gamma_outer, double gamma_inner, int outer_sde, Rng* rng) {
    double t[65]; outer_grid(t, M, gamma_outer);
    WanAct bb; wan_act_init(&bb, &sc->wan, g);
    Rollout ro; rollout_init(&ro, sc, g, N, gamma_inner);
    real* y1 = (real*)malloc(sizeof(real) * ro.numel);
    for (int i = M; i >= 1; i--) {
        const real* m = student_backbone_forward(&bb, S, sc, x, t[i], ctx, Lt);
        for (size_t k = 0; k < ro.numel; k++) y1[k] = rng_normal(rng);
        const real* yhat = rollout_forward(&ro, S, sc, g, m, bb.text.c, bb.rope, y1);
        if (outer_sde && i > 1) {
            for (size_t k = 0; k < ro.numel; k++) x[k] = (1 - t[i - 1]) * (x[k] - t[i] * yhat[k]) + t[i - 1] * rng_normal(rng);
        } else {
            for (size_t k = 0; k < ro.numel; k++) x[k] -= (t[i] - t[i - 1]) * yhat[k];  // Eq. 4
        }
    }
    free(y1); rollout_free(&ro); wan_act_free(&bb);
}

// DMD2-v deterministic multi-step sampler (App. A.3) for a plain Wan student g(x_t, t) = x_t − t·v(x_t, t):
// x_{t'} = (t'/t)·x_t + (1 − t'/t)·g(x_t, t). (The paper's Eq. 18 prints the coefficients swapped; at t' = t this
// form returns x_t and at t' = 0 it returns g.)
static void dmd_sample(real* x, const WanParams* P, const WanConfig* c, const WanGrid* g, const real* ctx, int Lt, int M, double gamma_outer) {
    double t[65]; outer_grid(t, M, gamma_outer);
    WanAct a; wan_act_init(&a, c, g);
    size_t n = (size_t)c->out_dim * g->T * g->Hl * g->Wl;
    for (int i = M; i >= 1; i--) {
        wan_forward(&a, P, x, 1000.0 * t[i], ctx, Lt);
        double k = t[i - 1] / t[i];
        for (size_t e = 0; e < n; e++) { double x0 = x[e] - t[i] * a.out[e]; x[e] = k * x[e] + (1 - k) * x0; }
    }
    wan_act_free(&a);
}
