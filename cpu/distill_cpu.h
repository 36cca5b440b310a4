// cpu/distill_cpu.h: TMD's two training stages on the CPU reference, one sample at a time.
//   Stage 1, TM-MF (Section 3.1, App. A.2): tmmf_sample
//   Stage 2, DMD2-v with flow-head rollout (Section 3.2, App. A.3): the generator (TMD student or the plain DMD2-v
//     baseline), the VSD gradient against the CFG teacher, the fake score's denoising score matching, Conv3D
//     discriminator heads on frozen-teacher features and both GAN losses
//   KD warm-up for one-step students
// Formulas follow the TMD paper (Sec. 3, App. A) in one sign convention, with the facts the paper leaves open taken
// from NVlabs/FastGen (mean_flow.py, dmd2.py); the remaining choices are marked "Choice".
// Each *_sample function returns its loss terms and ACCUMULATES parameter gradients scaled by `scale`
// (1/batch for a mean over the batch).
#pragma once
#include "tmd_cpu.h"
#include "disc_cpu.h"   // the Conv3D discriminator heads on frozen-teacher features

static double softplus(double x) { return x > 30 ? x : log1p(exp(x)); }
static double sigmoid(double x) { return 1 / (1 + exp(-x)); }
static void randn_fill(real* p, size_t n, Rng* r) { for (size_t i = 0; i < n; i++) p[i] = rng_normal(r); }
static double uniform_in(Rng* r, double lo, double hi) { return lo + (hi - lo) * rng_uniform(r); }
// a training time: shift_γ(U(0.001, 0.999)), clamped to [0.001, 0.999] after the shift (Table 7; FastGen)
static double shifted_time(Rng* r, double gamma) { return clamp_time(time_shift(uniform_in(r, T_MIN, T_MAX), gamma)); }

// ---------------------------------------------------------------------------------------------------------
// Stage 1: TM-MF

typedef struct {
    int M;              // outer steps the student is trained for: t_i uniform over {t_1..t_M}
    double gamma_outer; // shift of the outer grid (t_student: outer_shift_default(M))
    int N;              // inner steps: the (s, r) grid s_j = shift_10(j/N)
    double gamma_inner; // shift of the inner grid (s_student, 10)
    double gamma_s;     // shift of s_mf (3)
    double p_tm;        // probability of r = s, the plain transition-matching loss (0.75)
    double cfg;         // guidance scale of the target velocity (3)
    double p_drop;      // condition dropout (0.1)
    double delta;       // finite-difference step of the JVP (5e-3)
    double c_norm;      // adaptive normalisation constant c = c_norm·d (1 for 1.3B, 1e-5 for 14B)
    int tm_only;        // 1: TM pretraining (r = s always; the Table 6 ablation)
    int plain_tangent;  // 1: take du/ds along the conditional v instead of the guided v_g (ablation of fix 1)
} TmmfConfig;

// Stage 1's settings for a student of M outer steps (t_student shift: outer_shift_default(M), the samplers' too)
static TmmfConfig tmmf_defaults(int M) {
    TmmfConfig c = {M, outer_shift_default(M), 2, 10, 3, 0.75, 3, 0.1, 5e-3, 1.0, 0, 0};
    return c;
}

typedef struct {
    WanAct bb, bb_u;        // backbone activations: conditional (with gradients) and unconditional (guidance)
    HeadAct h, h_aux;       // the trained head evaluation and a scratch one (JVP, guidance: no gradients)
    real *x1, *xt, *y, *y1, *ys, *v, *vg, *u, *uhat, *yp, *du, *dhead, *dm, *dc;
    size_t numel;
    // frozen target (for tests): when have_target, uhat and norm are reused instead of recomputed
    int have_target, keep_target; double norm;
} TmmfWork;

static void tmmf_work_init(TmmfWork* w, const StudentConfig* sc, const WanGrid* g) {
    memset(w, 0, sizeof(*w));
    wan_act_init(&w->bb, &sc->wan, g); wan_act_init(&w->bb_u, &sc->wan, g);
    head_act_init(&w->h, sc, g); head_act_init(&w->h_aux, sc, g);
    size_t n = w->numel = (size_t)sc->wan.out_dim * g->T * g->Hl * g->Wl;
    size_t LD = (size_t)g->L * sc->wan.dim;
    real** bufs[] = {&w->x1, &w->xt, &w->y, &w->y1, &w->ys, &w->v, &w->vg, &w->u, &w->uhat, &w->yp, &w->dhead};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) *bufs[i] = (real*)calloc(n, sizeof(real));
    w->du = (real*)calloc(3 * n, sizeof(real));   // tmmf_target's scratch
    w->dm = (real*)calloc(LD, sizeof(real));
    w->dc = (real*)calloc((size_t)sc->wan.text_len * sc->wan.dim, sizeof(real));
}
static void tmmf_work_free(TmmfWork* w) {
    wan_act_free(&w->bb); wan_act_free(&w->bb_u); head_act_free(&w->h); head_act_free(&w->h_aux);
    real* bufs[] = {w->x1, w->xt, w->y, w->y1, w->ys, w->v, w->vg, w->u, w->uhat, w->yp, w->du, w->dhead, w->dm, w->dc};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) free(bufs[i]);
}

// an average-velocity field u(y, s, r) [n] evaluated by the caller: the student's head with a fixed main feature
// (tmmf_sample), or a closed form (the tests)
typedef void (*AvgVelocityFn)(void* ctx, real* u, const real* y, double s, double r);

// The TM-MF target (App. A.2; MeanFlow's identity u = v − (s − r)·du/ds), all under stop-gradient:
//   v_g   = w·v + (1 − w)·u_∅(y_s, s, s)             guidance, standard form (uncond NULL: v_g = v)
//   du/ds ≈ [u(y_s + δ·τ, s + δ, r) − u(y_s − δ·τ, s − δ, r)] / (2δ)   one-sided where s + δ > 0.999 or s − δ < r
//   û     = v_g − (s − r)·du/ds                      (û = v_g when r = s)
// The tangent τ is the GUIDED velocity v_g: the head learns the average velocity of the guided field, and the
// total derivative must follow that field's trajectories (MeanFlow's official code; FastGen's mean_flow.py, whose
// _mix_condition returns the guided dx_t/dt that _jvp uses as the tangent). With τ = v (plain_tangent, the
// earlier choice) and v ≠ v_g, the loss's fixed point is the average velocity of no single field
// (test_tmmf_fixed_point). u_sr = u(y_s, s, r), already evaluated; scratch: 3·n.
static void tmmf_target(real* uhat, real* tangent, const real* ys, const real* v, const real* u_sr, double s, double r,
                        double cfg, double delta, int plain_tangent, AvgVelocityFn cond, AvgVelocityFn uncond,
                        void* ctx, real* scratch, size_t n) {
    real *up = scratch, *um = scratch + n, *yp = scratch + 2 * n;
    if (uncond && cfg != 1) {
        uncond(ctx, up, ys, s, s);
        for (size_t k = 0; k < n; k++) uhat[k] = cfg * v[k] + (1 - cfg) * up[k];
    } else {
        memcpy(uhat, v, sizeof(real) * n);
    }
    memcpy(tangent, plain_tangent ? v : uhat, sizeof(real) * n);
    if (r >= s) return;
    int fwd = s + delta <= T_MAX, bwd = s - delta >= r;
    if (fwd) { for (size_t k = 0; k < n; k++) yp[k] = ys[k] + delta * tangent[k]; cond(ctx, up, yp, s + delta, r); }
    if (bwd) { for (size_t k = 0; k < n; k++) yp[k] = ys[k] - delta * tangent[k]; cond(ctx, um, yp, s - delta, r); }
    for (size_t k = 0; k < n; k++) {
        double dd = fwd && bwd ? (up[k] - um[k]) / (2 * delta)
                    : fwd      ? (up[k] - u_sr[k]) / delta
                    : bwd      ? (u_sr[k] - um[k]) / delta
                               : 0;
        uhat[k] -= (s - r) * dd;
    }
}

// the student's u_θ(y, s, r; m) = y1 − head_θ(y, s, r; m) (Eq. 14) with a scratch head evaluation, as an AvgVelocityFn
typedef struct {
    HeadAct* h;
    const StudentParams* S;
    const StudentConfig* sc;
    const WanGrid* g;
    const real *m, *ctx_c, *rope, *mu, *ctx_u, *rope_u, *y1;
    size_t n;
} HeadField;
static void head_field_eval_(HeadField* f, const real* m, const real* c, const real* rope, real* u, const real* y,
                             double s, double r) {
    head_forward(f->h, f->S, f->sc, f->g, m, c, rope, y, s, r);
    for (size_t i = 0; i < f->n; i++) u[i] = f->y1[i] - f->h->out[i];
}
static void head_field_cond(void* p, real* u, const real* y, double s, double r) {
    HeadField* f = (HeadField*)p;
    head_field_eval_(f, f->m, f->ctx_c, f->rope, u, y, s, r);
}
static void head_field_uncond(void* p, real* u, const real* y, double s, double r) {
    HeadField* f = (HeadField*)p;
    head_field_eval_(f, f->mu, f->ctx_u, f->rope_u, u, y, s, r);
}

typedef struct { double loss, mse; double s, r, t; int dropped; } TmmfStats;

// one sample of the TM-MF loss  ‖u_θ − û‖² / sg(‖u_θ − û‖² + c),  û = sg(v_g − (s − r)·du/ds)
// x: clean latent; ctx/Lt: its caption; ctx_u/Lt_u: the unconditional caption (empty for the world: NULL, 0)
static TmmfStats tmmf_sample(StudentParams* dS, const StudentParams* S, const StudentConfig* sc, const WanGrid* g,
                             TmmfWork* w, const real* x, const real* ctx, int Lt, const real* ctx_u, int Lt_u,
                             const TmmfConfig* cf, Rng* rng, double scale) {
    TmmfStats st; memset(&st, 0, sizeof(st));
    size_t n = w->numel;
    double tg[65], sg[65];
    outer_grid(tg, cf->M, cf->gamma_outer); inner_grid(sg, cf->N, cf->gamma_inner);
    // outer state from real data (Algorithm 2)
    int i = 1 + (int)(rng_uniform(rng) * cf->M); if (i > cf->M) i = cf->M;
    double t = tg[i];
    randn_fill(w->x1, n, rng);
    for (size_t k = 0; k < n; k++) w->xt[k] = (1 - t) * x[k] + t * w->x1[k];
    int dropped = rng_uniform(rng) < cf->p_drop;
    const real* c_in = dropped ? ctx_u : ctx; int L_in = dropped ? Lt_u : Lt;
    const real* m = student_backbone_forward(&w->bb, S, sc, w->xt, t, c_in, L_in);
    // inner flow target y = x1 − x, its noise y1, and (s, r) on the discrete grid (App. A.2)
    for (size_t k = 0; k < n; k++) w->y[k] = w->x1[k] - x[k];
    randn_fill(w->y1, n, rng);
    double s = shifted_time(rng, cf->gamma_s);
    int kk = 0; for (int j = 0; j <= cf->N; j++) if (sg[j] <= s) kk = j;
    double r = sg[kk];
    if (cf->tm_only || rng_uniform(rng) < cf->p_tm) r = s;
    for (size_t k = 0; k < n; k++) { w->ys[k] = (1 - s) * w->y[k] + s * w->y1[k]; w->v[k] = w->y1[k] - w->y[k]; }
    // the trained evaluation
    head_forward(&w->h, S, sc, g, m, w->bb.text.c, w->bb.rope, w->ys, s, r);
    for (size_t k = 0; k < n; k++) w->u[k] = w->y1[k] - w->h.out[k];
    if (!w->have_target) {
        HeadField f = {&w->h_aux, S, sc, g, m, w->bb.text.c, w->bb.rope, NULL, NULL, NULL, w->y1, n};
        if (!dropped && cf->cfg != 1) {   // the unconditional main feature m_∅ for the guidance term (no gradient)
            f.mu = student_backbone_forward(&w->bb_u, S, sc, w->xt, t, ctx_u, Lt_u);
            f.ctx_u = w->bb_u.text.c;
            f.rope_u = w->bb_u.rope;
        }
        tmmf_target(w->uhat, w->vg, w->ys, w->v, w->u, s, r, cf->cfg, cf->delta, cf->plain_tangent, head_field_cond,
                    f.mu ? head_field_uncond : NULL, &f, w->du, n);
    }
    // adaptive loss normalisation
    double err2 = 0; for (size_t k = 0; k < n; k++) { double e = w->u[k] - w->uhat[k]; err2 += e * e; }
    double cnorm = cf->c_norm * (double)n;
    if (!w->have_target) { w->norm = err2 + cnorm; if (w->keep_target) w->have_target = 1; }
    st.loss = err2 / w->norm; st.mse = err2 / n; st.s = s; st.r = r; st.t = t; st.dropped = dropped;
    if (!dS) return st;
    // d loss / d head = −2(u − û)/norm (u = y1 − head)
    for (size_t k = 0; k < n; k++) w->dhead[k] = -scale * 2 * (w->u[k] - w->uhat[k]) / w->norm;
    memset(w->dm, 0, sizeof(real) * (size_t)g->L * sc->wan.dim);
    memset(w->dc, 0, sizeof(real) * (size_t)sc->wan.text_len * sc->wan.dim);
    head_backward(dS, w->dm, w->dc, NULL, w->dhead, &w->h, S, sc, g, w->bb.text.c, w->bb.rope);
    // gradients reach the backbone: the main feature is not detached (Section 3.1)
    wan_backward_blocks(&dS->w, NULL, NULL, w->dm, sc->wan.num_layers - sc->head_blocks, NULL, w->dc, &w->bb, &S->w);
    return st;
}

// ---------------------------------------------------------------------------------------------------------
// the Stage 2 generator: x̂ = g_θ(x_{t_i}, t_i) with gradients
//   TMD:     m = backbone(x_t, t); ŷ = INNERFLOW(m) through all N steps; x̂ = x_t − t·ŷ  (or x1 − ŷ, Eq. 15)
//   DMD2-v:  x̂ = x_t − t·v_θ(x_t, t)   (Eq. 17)
// Choice: x̂ = x_t − t·ŷ by default, the clean sample the sampler implies (Eq. 4 with t_{i−1} = 0); the paper's
// Eq. 15 / Algorithm 2 write x1 − ŷ, which equals it only at t = 1 and in training hands the true noise x1 to the
// sample; keep it as an option (xhat_eq15).

typedef struct {
    int tmd;                     // 1: decoupled TMD student; 0: plain Wan student (DMD2-v baseline)
    int xhat_eq15;               // 1: x̂ = x1 − ŷ (paper's Eq. 15); 0: x̂ = x_t − t·ŷ
    int rollout_grad;            // 1: backpropagate through all N inner steps; 0: only through the last one
    StudentConfig sc;
    const StudentParams* S;      // tmd
    const WanParams* P;          // baseline
    WanAct bb;                   // backbone (tmd) or the whole model (baseline)
    Rollout ro;
    real *xhat, *dyhat, *dm, *dc, *dv;
    double t;
    size_t numel;
} Generator;

static void generator_init(Generator* G, int tmd, const StudentConfig* sc, const WanGrid* g, int N,
                           double gamma_inner) {
    memset(G, 0, sizeof(*G));
    G->tmd = tmd; G->sc = *sc; G->rollout_grad = 1;
    wan_act_init(&G->bb, &sc->wan, g);
    if (tmd) rollout_init(&G->ro, sc, g, N, gamma_inner);
    G->numel = (size_t)sc->wan.out_dim * g->T * g->Hl * g->Wl;
    G->xhat = (real*)calloc(G->numel, sizeof(real));
    G->dyhat = (real*)calloc(G->numel, sizeof(real));
    G->dv = (real*)calloc(G->numel, sizeof(real));
    G->dm = (real*)calloc((size_t)g->L * sc->wan.dim, sizeof(real));
    G->dc = (real*)calloc((size_t)sc->wan.text_len * sc->wan.dim, sizeof(real));
}
static void generator_free(Generator* G) {
    wan_act_free(&G->bb); if (G->tmd) rollout_free(&G->ro);
    free(G->xhat); free(G->dyhat); free(G->dv); free(G->dm); free(G->dc);
}

// x̂ into G->xhat; y1 is the inner noise (tmd), x1 the outer noise (only for xhat_eq15)
static const real* generator_forward(Generator* G, const WanGrid* g, const real* xt, double t, const real* ctx, int Lt,
                                     const real* y1, const real* x1) {
    G->t = t;
    if (G->tmd) {
        const real* m = student_backbone_forward(&G->bb, G->S, &G->sc, xt, t, ctx, Lt);
        const real* yhat = rollout_forward(&G->ro, G->S, &G->sc, g, m, G->bb.text.c, G->bb.rope, y1);
        for (size_t k = 0; k < G->numel; k++) G->xhat[k] = G->xhat_eq15 ? x1[k] - yhat[k] : xt[k] - t * yhat[k];
    } else {
        wan_forward(&G->bb, G->P, xt, 1000.0 * t, ctx, Lt);
        for (size_t k = 0; k < G->numel; k++) G->xhat[k] = xt[k] - t * G->bb.out[k];
    }
    return G->xhat;
}

// dxhat = d x̂ → parameter gradients (dS for TMD, dP for the baseline)
static void generator_backward(Generator* G, StudentParams* dS, WanParams* dP, const WanGrid* g, const real* dxhat) {
    double k = G->tmd && G->xhat_eq15 ? -1 : -G->t;           // d x̂ / d ŷ (or d v)
    for (size_t i = 0; i < G->numel; i++) G->dyhat[i] = k * dxhat[i];
    if (G->tmd) {
        memset(G->dm, 0, sizeof(real) * (size_t)g->L * G->sc.wan.dim);
        memset(G->dc, 0, sizeof(real) * (size_t)G->sc.wan.text_len * G->sc.wan.dim);
        if (G->rollout_grad)
            rollout_backward(dS, G->dm, G->dc, G->dyhat, &G->ro, G->S, &G->sc, g, G->bb.text.c, G->bb.rope);
        else {  // no rollout gradient: the last inner step only (ŷ = y_1 − ds·(y1 − head)), earlier steps detached
            double ds = G->ro.s[1] - G->ro.s[0];
            for (size_t i = 0; i < G->numel; i++) G->dv[i] = ds * G->dyhat[i];
            head_backward(dS, G->dm, G->dc, NULL, G->dv, &G->ro.steps[0], G->S, &G->sc, g, G->bb.text.c, G->bb.rope);
        }
        wan_backward_blocks(&dS->w, NULL, NULL, G->dm, G->sc.wan.num_layers - G->sc.head_blocks, NULL, G->dc, &G->bb,
                            &G->S->w);
    } else {
        wan_backward(dP, NULL, NULL, G->dyhat, &G->bb, G->P);
    }
}

// ---------------------------------------------------------------------------------------------------------
// Stage 2: DMD2-v

typedef struct {
    int M;                // outer steps of the student
    double gamma_outer;   // t_student shift (outer_shift_default(M))
    double gamma_dmd;     // t_dmd shift (5)
    double cfg;           // teacher guidance in the VSD gradient (5)
    double gan_weight;    // λ (0.03)
    int update_every;     // the student is updated every k-th iteration (5)
    int vsd_l1_norm; // 0: normalise by mean|x̂ − g_teacher| (DMD/FastGen); 1: by the paper's ‖g_fake − g_teacher‖₁
                     // (mean)
    int gan_own_noise; // 1: the discriminator draws its own t and ε (the earlier choice); 0: the fake score's (FastGen)
    int backsim;       // 1: x_{t_i} by the student's own sampler from noise (DMD2's backward simulation); 0: from
                       // real data (the paper, App. A.3)
} DmdConfig;

// Stage 2's settings for a student of M outer steps (t_student shift: outer_shift_default(M), the samplers' too)
static DmdConfig dmd_defaults(int M) {
    DmdConfig c = {M, outer_shift_default(M), 5, 5, 0.03, 5, 0, 0, 0};
    return c;
}

// the VSD gradient on x̂ (Eq. 11; DMD's normalised form): grad = (g_fake − g_teacher) / (mean|x̂ − g_teacher| + 1e-6),
// the epsilon FastGen's variational_score_distillation_loss adds (l1: the paper's mean|g_fake − g_teacher| instead).
// Returns the normaliser.
#define VSD_EPS 1e-6
static double vsd_gradient(real* grad, const real* xhat, const real* g_teacher, const real* g_fake, size_t n, int l1) {
    double norm = 0;
    for (size_t k = 0; k < n; k++) norm += l1 ? fabs(g_fake[k] - g_teacher[k]) : fabs(xhat[k] - g_teacher[k]);
    norm = norm / n + VSD_EPS;
    for (size_t k = 0; k < n; k++) grad[k] = (g_fake[k] - g_teacher[k]) / norm;
    return norm;
}

typedef struct {
    WanAct tc, tu, fk, treal;   // teacher (cond, with features), teacher (uncond), fake score, teacher on real data
    DiscAct dfake, dreal;
    real *x1, *y1, *xt, *eps, *xhat_t, *grad, *dxhat, *dxt, *dv, *tmp;
    real* dfeat_buf; real* dfeat[WAN_MAX_LAYERS + 1];
    real* scratch_grad;         // gradients of the frozen teacher land here and are discarded
    size_t numel;
} DmdWork;

static void dmd_work_init(DmdWork* w, const WanConfig* c, const WanGrid* g, const DiscConfig* dc) {
    memset(w, 0, sizeof(*w));
    wan_act_init(&w->tc, c, g); wan_act_init(&w->tu, c, g); wan_act_init(&w->fk, c, g); wan_act_init(&w->treal, c, g);
    disc_act_init(&w->dfake, dc, g); disc_act_init(&w->dreal, dc, g);
    size_t n = w->numel = (size_t)c->out_dim * g->T * g->Hl * g->Wl;
    real** bufs[] = {&w->x1, &w->y1, &w->xt, &w->eps, &w->xhat_t, &w->grad, &w->dxhat, &w->dxt, &w->dv, &w->tmp};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) *bufs[i] = (real*)calloc(n, sizeof(real));
    size_t LD = (size_t)g->L * c->dim;
    w->dfeat_buf = (real*)calloc((size_t)(c->num_layers + 1) * LD, sizeof(real));
    for (int l = 0; l <= c->num_layers; l++) w->dfeat[l] = NULL;
    for (int h = 0; h < dc->n_heads; h++) w->dfeat[dc->layers[h] + 1] = w->dfeat_buf + (size_t)(dc->layers[h] + 1) * LD;
    w->scratch_grad = (real*)calloc(wan_num_params(c), sizeof(real));
}
static void dmd_work_free(DmdWork* w) {
    wan_act_free(&w->tc); wan_act_free(&w->tu); wan_act_free(&w->fk); wan_act_free(&w->treal);
    disc_act_free(&w->dfake); disc_act_free(&w->dreal);
    real* bufs[] = {w->x1,    w->y1,  w->xt, w->eps, w->xhat_t,    w->grad,
                    w->dxhat, w->dxt, w->dv, w->tmp, w->dfeat_buf, w->scratch_grad};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) free(bufs[i]);
}

typedef struct { double vsd, gan_g, dsm, gan_d, t_i, t, t_disc; } DmdStats;

// draws the outer state x_{t_i} from real data and runs the generator: x̂ in G->xhat
static void dmd_generate(Generator* G, DmdWork* w, const WanGrid* g, const real* x, const real* ctx, int Lt,
                         const DmdConfig* cf, Rng* rng, DmdStats* st) {
    double tg[65]; outer_grid(tg, cf->M, cf->gamma_outer);
    int i = 1 + (int)(rng_uniform(rng) * cf->M); if (i > cf->M) i = cf->M;
    double t = tg[i];
    randn_fill(w->x1, w->numel, rng); randn_fill(w->y1, w->numel, rng);
    if (cf->backsim && i < cf->M) {
        // backward simulation: the student's own deterministic sampler (Eq. 18) from the noise x1 at t_M down to
        // t_i, detached (only the last generator call below keeps its activations for the backward)
        memcpy(w->xt, w->x1, sizeof(real) * w->numel);
        for (int j = cf->M; j > i; j--) {
            randn_fill(w->eps, w->numel, rng);   // the inner noise of this earlier step (eps is redrawn after)
            const real* xh = generator_forward(G, g, w->xt, tg[j], ctx, Lt, w->eps, w->x1);
            double q = tg[j - 1] / tg[j];
            for (size_t k = 0; k < w->numel; k++) w->xt[k] = q * w->xt[k] + (1 - q) * xh[k];
        }
    } else {
        for (size_t k = 0; k < w->numel; k++) w->xt[k] = (1 - t) * x[k] + t * w->x1[k];   // from real data
    }
    generator_forward(G, g, w->xt, t, ctx, Lt, w->y1, w->x1);
    st->t_i = t;
}

// student update on one sample: VSD + λ·GAN generator loss; gradients into dS / dP via the generator
static DmdStats dmd_student_sample(Generator* G, StudentParams* dS, WanParams* dP, DmdWork* w, const WanParams* T,
                                   const WanParams* F, const DiscParams* Dp, const DiscConfig* dc, const WanGrid* g,
                                   const real* x, const real* ctx, int Lt, const real* ctx_u, int Lt_u,
                                   const DmdConfig* cf, Rng* rng, double scale) {
    DmdStats st; memset(&st, 0, sizeof(st));
    size_t n = w->numel;
    dmd_generate(G, w, g, x, ctx, Lt, cf, rng, &st);
    const real* xhat = G->xhat;
    double t = shifted_time(rng, cf->gamma_dmd);   // t_dmd
    st.t = t;
    randn_fill(w->eps, n, rng);
    for (size_t k = 0; k < n; k++) w->xhat_t[k] = (1 - t) * xhat[k] + t * w->eps[k];
    // teacher x0 with CFG (negative prompt = ctx_u) and the fake score's x0 (conditional), Eq. 17
    wan_forward(&w->tc, T, w->xhat_t, 1000.0 * t, ctx, Lt);
    wan_forward(&w->tu, T, w->xhat_t, 1000.0 * t, ctx_u, Lt_u);
    wan_forward(&w->fk, F, w->xhat_t, 1000.0 * t, ctx, Lt);
    for (size_t k = 0; k < n; k++) {
        double vt = w->tu.out[k] + cf->cfg * (w->tc.out[k] - w->tu.out[k]);
        w->tmp[k] = w->xhat_t[k] - t * vt;            // g_teacher
        w->dv[k] = w->xhat_t[k] - t * w->fk.out[k];   // g_fake
    }
    vsd_gradient(w->grad, xhat, w->tmp, w->dv, n, cf->vsd_l1_norm);
    // surrogate 0.5·mean((x̂ − sg(x̂ − grad))²): d/dx̂ = grad / numel
    double vsd = 0;
    for (size_t k = 0; k < n; k++) { vsd += 0.5 * w->grad[k] * w->grad[k]; w->dxhat[k] = scale * w->grad[k] / n; }
    st.vsd = vsd / n;
    // GAN generator loss mean_h softplus(−D_h): gradient through the frozen teacher's features into x̂_t, then x̂
    if (cf->gan_weight > 0 && dc->n_heads > 0) {
        DiscAct* da = &w->dfake;
        disc_forward(da, Dp, dc, &w->tc);
        double dlogit[DISC_MAX_HEADS], lg = 0;
        for (int h = 0; h < dc->n_heads; h++) {
            lg += softplus(-da->logit[h]) / dc->n_heads;
            dlogit[h] = -sigmoid(-da->logit[h]) / dc->n_heads * cf->gan_weight * scale;
        }
        st.gan_g = lg;
        memset(w->dfeat_buf, 0, sizeof(real) * (size_t)(w->tc.cfg.num_layers + 1) * w->tc.g.L * w->tc.cfg.dim);
        disc_backward(NULL, w->dfeat, dlogit, da, Dp, dc, &w->tc);
        int top = 0; for (int h = 0; h < dc->n_heads; h++) if (dc->layers[h] + 1 > top) top = dc->layers[h] + 1;
        WanParams scratch; wan_carve(&w->tc.cfg, &scratch, w->scratch_grad);
        memset(w->dxt, 0, sizeof(real) * n);
        wan_backward_blocks(&scratch, w->dxt, NULL, NULL, top, w->dfeat, NULL, &w->tc, T);
        for (size_t k = 0; k < n; k++) w->dxhat[k] += (1 - t) * w->dxt[k];
    }
    generator_backward(G, dS, dP, g, w->dxhat);
    return st;
}

// critic update on one sample: the fake score's denoising score matching and the discriminator's GAN loss,
// both on the detached generator sample. dF / dD may be NULL to skip that critic.
static DmdStats dmd_critic_sample(Generator* G, WanParams* dF, DiscParams* dD, DmdWork* w, const WanParams* T,
                                  const WanParams* F, const DiscParams* Dp, const DiscConfig* dc, const WanGrid* g,
                                  const real* x, const real* ctx, int Lt, const DmdConfig* cf, Rng* rng, double scale) {
    DmdStats st; memset(&st, 0, sizeof(st));
    size_t n = w->numel;
    dmd_generate(G, w, g, x, ctx, Lt, cf, rng, &st);
    const real* xhat = G->xhat;   // detached: nothing flows back into the generator here
    // fake score: ‖g_fake(x̂_t, t) − x̂‖², t = shift_5(U), g_fake = x̂_t − t·v_fake
    double t = shifted_time(rng, cf->gamma_dmd);
    st.t = t;
    randn_fill(w->eps, n, rng);
    for (size_t k = 0; k < n; k++) w->xhat_t[k] = (1 - t) * xhat[k] + t * w->eps[k];
    wan_forward(&w->fk, F, w->xhat_t, 1000.0 * t, ctx, Lt);
    double dsm = 0;
    for (size_t k = 0; k < n; k++) {
        double e = w->xhat_t[k] - t * w->fk.out[k] - xhat[k];
        dsm += e * e;
        w->dv[k] = -t * 2 * e / n * scale;
    }
    st.dsm = dsm / n;
    if (dF) wan_backward(dF, NULL, NULL, w->dv, &w->fk, F);
    // discriminator: teacher features on real (x_t, t) and fake (x̂_t, t) at the fake score's t and with its ε for
    // both (FastGen's Wan setting gan_use_same_t_noise), unless gan_own_noise asks for fresh draws
    if (dD && dc->n_heads > 0) {
        double td = t;
        int top = 0; for (int h = 0; h < dc->n_heads; h++) if (dc->layers[h] + 1 > top) top = dc->layers[h] + 1;
        if (cf->gan_own_noise) {
            td = shifted_time(rng, cf->gamma_dmd);
            randn_fill(w->eps, n, rng);
            for (size_t k = 0; k < n; k++) w->xhat_t[k] = (1 - td) * xhat[k] + td * w->eps[k];
            randn_fill(w->eps, n, rng);
        }
        st.t_disc = td;
        for (size_t k = 0; k < n; k++) w->xt[k] = (1 - td) * x[k] + td * w->eps[k];
        wan_forward_blocks(&w->tc, T, w->xhat_t, 1000.0 * td, ctx, Lt, top);
        wan_forward_blocks(&w->treal, T, w->xt, 1000.0 * td, ctx, Lt, top);
        // FastGen runs the discriminator in train mode here (dropout; eval mode in the student step): keys from td
        w->dfake.dropout_key = disc_dropout_key_for(td, 0); w->dreal.dropout_key = disc_dropout_key_for(td, 1);
        disc_forward(&w->dfake, Dp, dc, &w->tc);
        disc_forward(&w->dreal, Dp, dc, &w->treal);
        double dlf[DISC_MAX_HEADS], dlr[DISC_MAX_HEADS], ld = 0;
        for (int h = 0; h < dc->n_heads; h++) {
            double lr = w->dreal.logit[h], lf = w->dfake.logit[h];
            ld += (softplus(-lr) + softplus(lf)) / dc->n_heads;
            dlr[h] = -sigmoid(-lr) / dc->n_heads * scale; dlf[h] = sigmoid(lf) / dc->n_heads * scale;
        }
        st.gan_d = ld;
        disc_backward(dD, NULL, dlr, &w->dreal, Dp, dc, &w->treal);
        disc_backward(dD, NULL, dlf, &w->dfake, Dp, dc, &w->tc);
        w->dfake.dropout_key = w->dreal.dropout_key = 0;   // back to eval mode for the student step
    }
    return st;
}

// KD warm-up (one-step students): regress the one-step output from pure noise onto the teacher's many-step CFG
// sample from the same noise: loss mean (x̂ − x_teacher)²
static double kd_sample(Generator* G, StudentParams* dS, WanParams* dP, const WanGrid* g, const real* noise,
                        const real* x_teacher, const real* ctx, int Lt, double t_max, Rng* rng, double scale) {
    size_t n = G->numel;
    real* y1 = (real*)calloc(n, sizeof(real)); real* d = (real*)calloc(n, sizeof(real));
    randn_fill(y1, n, rng);
    generator_forward(G, g, noise, t_max, ctx, Lt, y1, noise);
    double loss = 0;
    for (size_t k = 0; k < n; k++) { double e = G->xhat[k] - x_teacher[k]; loss += e * e; d[k] = scale * 2 * e / n; }
    generator_backward(G, dS, dP, g, d);
    free(y1); free(d);
    return loss / n;
}
