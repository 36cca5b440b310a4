// cpu/teacher_tests.h: tests of cpu/teacher_cpu.h (AdamW, the flow-matching loss and its gradient, the
// samplers on analytic Gaussian fields, CFG, and a tiny teacher training run). Entry point: test_teacher().
// Self-contained (helpers are prefixed tt_) so it can sit next to test_tmd.c's own helpers.
#pragma once
#ifdef _OPENMP
#include <omp.h>
#endif
#include "../lib/testing.h"
#include "../lib/timer.h"         // now_s
#include "../lib/random_params.h" // random_params
#include "teacher_cpu.h"

static double* tt_alloc_(size_t n) { return (double*)xcalloc(n, sizeof(double), "a teacher-test buffer"); }
static double* tt_randn_(size_t n, Rng* r, double mean, double std) {
    double* p = tt_alloc_(n);
    for (size_t i = 0; i < n; i++) p[i] = mean + std * rng_normal(r);
    return p;
}
static double tt_maxabs_diff_(const double* a, const double* b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs(a[i] - b[i]));
    if (!isfinite(m)) m = INFINITY;
    for (size_t i = 0; i < n; i++)
        if (!isfinite(a[i]) || !isfinite(b[i])) m = INFINITY;
    return m;
}

// =========================================================================================================
// AdamW against the formula written out by hand

static void test_teacher_adamw(void) {
    printf("\n[teacher] AdamW vs torch.optim.AdamW's update written out by hand\n");
    enum { N = 5 };
    double p0[N] = {0.5, -1.2, 2.0, 0.03, -0.7}, g1[N] = {0.1, -0.4, 2.5, -0.003, 0.0},
           g2[N] = {-0.2, -0.1, 1.0, 0.5, 0.3};
    double lr = 0.1, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.1;
    char err[ST_ERRLEN];
    AdamW o;
    EXPECT(adamw_init(&o, N, lr, b1, b2, eps, wd, err) == 0, "%s", err);
    double p[N];
    memcpy(p, p0, sizeof(p));
    double gn;
    int rc = adamw_step(&o, p, g1, 0, &gn);
    // step 1: m = (1−β1)g, v = (1−β2)g², m̂ = g, v̂ = g²  →  p1 = p0·(1 − lr·wd) − lr·g/(|g| + eps)
    double want1[N], want2[N];
    for (int i = 0; i < N; i++) want1[i] = p0[i] * (1 - lr * wd) - lr * g1[i] / (fabs(g1[i]) + eps);
    EXPECT(rc == 0 && o.step == 1, "adamw step 1 returned %d, step count %ld", rc, o.step);
    expect_close_d("adamw step 1 (incl. a zero gradient)", p, want1, N, 1e-13);
    // step 2: m = 0.09·g1 + 0.1·g2, v = 0.000999·g1² + 0.001·g2², bias corrections 1 − 0.81, 1 − 0.998001
    adamw_step(&o, p, g2, 0, NULL);
    for (int i = 0; i < N; i++) {
        double m = 0.09 * g1[i] + 0.1 * g2[i], v = 0.000999 * g1[i] * g1[i] + 0.001 * g2[i] * g2[i];
        want2[i] = want1[i] * (1 - lr * wd) - lr * (m / 0.19) / (sqrt(v / 0.001999) + eps);
    }
    expect_close_d("adamw step 2", p, want2, N, 1e-13);
    // decoupled weight decay: a zero gradient only shrinks p by (1 − lr·wd); coupled L2 (g += wd·p) would
    // instead move every entry by about lr (Adam normalises the decay gradient)
    AdamW o2;
    adamw_init(&o2, N, lr, b1, b2, eps, wd, err);
    double zero[N] = {0}, q[N], wantq[N];
    memcpy(q, p0, sizeof(q));
    adamw_step(&o2, q, zero, 0, NULL);
    for (int i = 0; i < N; i++) wantq[i] = p0[i] * (1 - lr * wd);
    expect_close_d("adamw weight decay is decoupled", q, wantq, N, 1e-15);
    // clipping: ‖g‖ = 10 clipped to 1 → the first moment is (1 − β1)·g·1/(10 + 1e-6)
    AdamW o3;
    adamw_init(&o3, 4, lr, b1, b2, eps, 0, err);
    double g3[4] = {6, 0, -8, 0}, r3[4] = {1, 2, 3, 4}, m3[4];
    adamw_step(&o3, r3, g3, 1.0, &gn);
    for (int i = 0; i < 4; i++) m3[i] = 0.1 * g3[i] / (10 + 1e-6);
    printf("  clipping: returned norm %.6f (want 10)\n", gn);
    EXPECT(fabs(gn - 10) < 1e-12, "grad norm %g, want 10", gn);
    expect_close_d("adamw clipped first moment", o3.m, m3, 4, 1e-13);
    // a NaN gradient skips the step: parameters, moments and step count unchanged
    double before[N];
    memcpy(before, p, sizeof(p));
    double gbad[N] = {0.1, NAN, 0.2, 0.3, 0.4};
    rc = adamw_step(&o, p, gbad, 0, &gn);
    printf("  NaN gradient: returned %d (1 = skipped), norm %g, step count %ld, skipped %ld\n", rc, gn, o.step,
           o.skipped);
    EXPECT(rc == 1 && o.step == 2 && o.skipped == 1 && memcmp(before, p, sizeof(p)) == 0,
           "a NaN gradient was not skipped cleanly");
    double ginf[N] = {0.1, 0, INFINITY, 0, 0};
    EXPECT(adamw_step(&o, p, ginf, 1.0, NULL) == 1 && memcmp(before, p, sizeof(p)) == 0,
           "an Inf gradient was not skipped");
    EXPECT(adamw_init(&o3, N, lr, 1.0, b2, eps, wd, err) == -1, "beta1 = 1 accepted");
    printf("  bad hyperparameters -> %s\n", err);
    adamw_free(&o);
    adamw_free(&o2);
    adamw_free(&o3);
}

// =========================================================================================================
// the flow-matching loss: its value, its gradient (central differences), its error reports

typedef struct {
    WanAct* act;
    WanParams* P;
    FlowMatchBatch* b;
    FlowMatchOpts* o;
    uint64_t seed;
} TTFmCase;

static double tt_fm_loss_(TTFmCase* f) {
    Rng r = rng_make(f->seed); // the same σ, dropout and noise at every evaluation
    double loss;
    char err[ST_ERRLEN];
    if (flow_matching_loss(&loss, NULL, f->act, f->P, f->b, f->o, &r, NULL, err)) {
        printf("  %s\n", err);
        return NAN;
    }
    return loss;
}

static void test_teacher_flow_matching(void) {
    WanConfig c;
    char err[ST_ERRLEN];
    wan_preset(&c, "tiny", err);
    c.num_layers = 2;
    int B = 3, C = 3, T = 2, H = 4, W = 4;
    printf("\n[teacher] flow-matching loss on '%s' (%d layers), latents [%d, %d, %d, %d, %d]\n", c.name, c.num_layers,
           B, C, T, H, W);
    size_t np = wan_num_params(&c), n = (size_t)C * T * H * W;
    double* buf = tt_alloc_(np);
    double* gbuf = tt_alloc_(np);
    random_params(&c, buf, 4242);
    WanParams P, dP;
    wan_carve(&c, &P, buf);
    wan_carve(&c, &dP, gbuf);
    WanGrid g;
    EXPECT(wan_grid(&g, &c, C, T, H, W, err) == 0, "%s", err);
    WanAct act;
    wan_act_init(&act, &c, &g);
    Rng r = rng_make(5);
    double* x = tt_randn_((size_t)B * n, &r, 0.2, 0.8);
    int rows[3] = {4, 3, 5};
    double* ctxs[3];
    for (int i = 0; i < B; i++) ctxs[i] = tt_randn_((size_t)rows[i] * c.text_dim, &r, 0, 1);
    const double* ctxp[3] = {ctxs[0], ctxs[1], ctxs[2]};
    FlowMatchBatch b = {B, C, T, H, W, x, ctxp, rows};
    FlowMatchOpts o = {0.4, 3.0, 0};
    uint64_t seed = 17;

    // (1) the value, recomputed from the documented draw order: per sample u, d, then the noise
    FlowMatchSample info[3];
    Rng r1 = rng_make(seed);
    double loss;
    int rc = flow_matching_loss(&loss, NULL, &act, &P, &b, &o, &r1, info, err);
    EXPECT(rc == 0, "flow matching: %s", err);
    Rng r2 = rng_make(seed);
    double want = 0;
    int n_drop = 0;
    double* xs = tt_alloc_(n);
    for (int i = 0; i < B; i++) {
        double u = rng_uniform(&r2), sigma = 3 * u / (2 * u + 1); // shift_3
        int dropped = rng_uniform(&r2) < 0.4;
        n_drop += dropped;
        double* tgt = tt_alloc_(n);
        for (size_t k = 0; k < n; k++) {
            double e = rng_normal(&r2);
            xs[k] = (1 - sigma) * x[i * n + k] + sigma * e;
            tgt[k] = e - x[i * n + k];
        }
        wan_forward(&act, &P, xs, 1000 * sigma, dropped ? NULL : ctxs[i], dropped ? 0 : rows[i]);
        double se = 0;
        for (size_t k = 0; k < n; k++) se += (act.out[k] - tgt[k]) * (act.out[k] - tgt[k]);
        want += se / n / B;
        printf("  sample %d: sigma %.4f (reported %.4f), %s, per-sample loss %.5f\n", i, sigma, info[i].sigma,
               dropped ? "caption dropped" : "conditional", info[i].loss);
        EXPECT(info[i].sigma == sigma && info[i].dropped == dropped,
               "sample %d: the loss drew sigma %g dropped %d, expected %g %d", i, info[i].sigma, info[i].dropped, sigma,
               dropped);
        free(tgt);
    }
    EXPECT(n_drop > 0 && n_drop < B, "the seed should drop some captions and keep others (dropped %d of %d)", n_drop,
           B);
    printf("  loss %.12f vs direct recomputation %.12f\n", loss, want);
    EXPECT(fabs(loss - want) <= 1e-12 * fabs(want), "loss %.15g != recomputation %.15g", loss, want);

    // (2) the gradient of the loss w.r.t. the parameters: 4 entries of every tensor, central differences.
    // Relative error per entry |a − n| / max(|n|, 1e-3·G), G = max|∇L| over all parameters (testing.h's floor,
    // taken over the whole gradient): the differences carry ~1e-10 absolute error at h = 1e-5 (rounding noise of
    // the forward pass over 2h; it is smallest, ~4e-11, near h = 3e-5), which would swamp entries near 0 (the
    // self-attention key bias is nearly softmax-invariant: its gradient can be ~1e-6).
    memset(gbuf, 0, sizeof(double) * np);
    Rng r3 = rng_make(seed);
    double l2;
    flow_matching_loss(&l2, &dP, &act, &P, &b, &o, &r3, NULL, err);
    TTFmCase fc = {&act, &P, &b, &o, seed};
    WanTensor* tl = (WanTensor*)malloc(sizeof(WanTensor) * WAN_MAX_TENSORS);
    int nt = wan_layout(&c, tl, NULL, NULL, NULL), bad = 0, per = 4;
    double* ana = tt_alloc_((size_t)nt * per);
    double* num = tt_alloc_((size_t)nt * per);
    int* cnt = (int*)calloc(nt, sizeof(int));
    const double h = 1e-5;
    double G = 0;
    for (size_t k = 0; k < np; k++) G = fmax(G, fabs(gbuf[k]));
    for (int ti = 0; ti < nt; ti++) {
        int m = tl[ti].numel < (size_t)per ? (int)tl[ti].numel : per;
        cnt[ti] = m;
        for (int k = 0; k < m; k++) {
            size_t idx = tl[ti].offset +
                         (m > 1 ? (size_t)k * (tl[ti].numel - 1) / (size_t)(m - 1) : 0); // spread from first to last
            double p0 = buf[idx];
            buf[idx] = p0 + h;
            double fp = tt_fm_loss_(&fc);
            buf[idx] = p0 - h;
            double fm = tt_fm_loss_(&fc);
            buf[idx] = p0;
            num[ti * per + k] = (fp - fm) / (2 * h);
            ana[ti * per + k] = gbuf[idx];
        }
    }
    double worst = 0, worst_abs = 0;
    const char* worst_name = "";
    for (int ti = 0; ti < nt; ti++) {
        double rel = 0;
        for (int k = 0; k < cnt[ti]; k++) {
            double a = ana[ti * per + k], nn = num[ti * per + k], e = fabs(a - nn) / fmax(fabs(nn), 1e-3 * G);
            if (!isfinite(e)) e = INFINITY;
            rel = fmax(rel, e);
            worst_abs = fmax(worst_abs, fabs(a - nn));
        }
        if (rel > worst) {
            worst = rel;
            worst_name = tl[ti].name;
        }
        if (rel > 1e-6) {
            bad++;
            printf("  FAIL %s: max rel %.3e\n", tl[ti].name, rel);
        }
    }
    printf("  d loss / d params: %d tensors x up to %d entries vs central differences (h = 1e-5, max|grad| %.3f):\n"
           "    worst %s, max rel %.3e, max abs %.1e (tol 1e-6 relative)\n",
           nt, per, G, worst_name, worst, worst_abs);
    EXPECT(bad == 0, "%d parameter tensors have flow-matching gradients off by more than 1e-6 relative", bad);
    // a gradient check passes trivially on a zero gradient; this one is not zero
    EXPECT(G > 1e-3 && isfinite(G), "largest gradient entry %g is not a plausible nonzero value", G);
    free(ana);
    free(num);
    free(cnt);

    // (3) the model timestep option: truncate_t feeds floor(1000σ)
    FlowMatchOpts ot = o;
    ot.truncate_t = 1;
    Rng r4 = rng_make(seed);
    double lt;
    flow_matching_loss(&lt, NULL, &act, &P, &b, &ot, &r4, info, err);
    Rng r5 = rng_make(seed);
    double want_t = 0;
    for (int i = 0; i < B; i++) {
        double u = rng_uniform(&r5), sigma = 3 * u / (2 * u + 1);
        int dropped = rng_uniform(&r5) < 0.4;
        double se = 0;
        double* tgt = tt_alloc_(n);
        for (size_t k = 0; k < n; k++) {
            double e = rng_normal(&r5);
            xs[k] = (1 - sigma) * x[i * n + k] + sigma * e;
            tgt[k] = e - x[i * n + k];
        }
        wan_forward(&act, &P, xs, floor(1000 * sigma), dropped ? NULL : ctxs[i], dropped ? 0 : rows[i]);
        for (size_t k = 0; k < n; k++) se += (act.out[k] - tgt[k]) * (act.out[k] - tgt[k]);
        want_t += se / n / B;
        free(tgt);
    }
    printf("  truncated timesteps: loss %.12f vs recomputation at floor(1000 sigma) %.12f (untruncated %.12f)\n", lt,
           want_t, loss);
    EXPECT(fabs(lt - want_t) <= 1e-12 * fabs(want_t) && lt != loss, "truncate_t: loss %.15g, expected %.15g", lt,
           want_t);

    // (4) what must be reported
    FlowMatchBatch wrong = b;
    wrong.H = 8;
    rc = flow_matching_loss(&lt, NULL, &act, &P, &wrong, &o, &r4, NULL, err);
    printf("  wrong latent shape -> %s\n", err);
    EXPECT(rc == -1 && strstr(err, "[3, 3, 2, 8, 4]") && strstr(err, "wan_act_init"), "message: %s", err);
    int long_rows[3] = {4, c.text_len + 1, 5};
    FlowMatchBatch lng = b;
    lng.ctx_rows = long_rows;
    rc = flow_matching_loss(&lt, NULL, &act, &P, &lng, &o, &r4, NULL, err);
    printf("  caption too long -> %s\n", err);
    EXPECT(rc == -1 && strstr(err, "caption 1") && strstr(err, "13 rows"), "message: %s", err);
    double keep = P.blocks[1].ffn_2_bias[3];
    P.blocks[1].ffn_2_bias[3] = NAN;
    Rng r6 = rng_make(seed);
    rc = flow_matching_loss(&lt, NULL, &act, &P, &b, &o, &r6, NULL, err);
    printf("  NaN in a parameter -> returned %d: %s\n", rc, err);
    EXPECT(rc == 1 && strstr(err, "sample 0") && strstr(err, "non-finite"), "a NaN loss was not reported: rc %d, %s",
           rc, err);
    // the training step refuses to apply it: parameters unchanged, no optimizer step counted
    AdamW opt;
    adamw_init(&opt, np, 1e-3, 0.9, 0.99, 1e-8, 0.01, err);
    double* snap = tt_alloc_(np);
    memcpy(snap, buf, sizeof(double) * np);
    Rng r7 = rng_make(seed);
    double sl, sg;
    printf("  (a 'teacher step 1 skipped' line on stderr is expected here)\n");
    rc = teacher_train_step(&sl, &sg, &opt, buf, gbuf, &act, &b, &o, 1.0, &r7, err);
    int same = 1;
    for (size_t k = 0; k < np; k++)
        if (!(snap[k] == buf[k] || (isnan(snap[k]) && isnan(buf[k])))) same = 0;
    EXPECT(rc == 1 && opt.step == 0 && opt.skipped == 1 && same, "a NaN loss reached the parameters (rc %d, step %ld)",
           rc, opt.step);
    P.blocks[1].ffn_2_bias[3] = keep;
    adamw_free(&opt);
    free(snap);
    free(tl);
    free(xs);
    free(buf);
    free(gbuf);
    free(x);
    for (int i = 0; i < B; i++) free(ctxs[i]);
    wan_act_free(&act);
}

// =========================================================================================================
// solvers on an analytic field. Data x ~ N(μ, s²) per element; x_σ = (1 − σ)·x + σ·ε; with a = 1 − σ,
// V = a²s² + σ²: x_σ ~ N(aμ, V), Cov(ε, x_σ) = σ, Cov(x, x_σ) = a·s², hence (Gaussian ⇒ linear regression)
//   E[ε − x | x_σ] = ((σ − a·s²)/V)·(x_σ − aμ) − μ.
// Probability-flow ODE dx/dσ = v: x(σ) = aμ + sqrt(V)·z with z constant (d sqrt(V)/dσ = (σ − a s²)/sqrt(V)),
// so from (σ_0, x_0) the ODE lands at μ + s·(x_0 − a_0 μ)/sqrt(V_0); from σ_0 = 1 that is μ + s·ε_0.

typedef struct {
    int n;
    const double* mu_c;
    const double* mu_u;
    const double* s;
    int calls, cap;
    double* sig;
    double* tmod;
    int* cond;
    double* xsum; // a record of every call (cap entries)
} TTField;

static void tt_gauss_v_(double* v, const double* x, double sigma, const double* mu, const double* s, int n) {
    double a = 1 - sigma;
    for (int j = 0; j < n; j++) {
        double V = a * a * s[j] * s[j] + sigma * sigma;
        v[j] = (sigma - a * s[j] * s[j]) / V * (x[j] - a * mu[j]) - mu[j];
    }
}
static void tt_field_(real* v, const real* x, double sigma, double t_model, int cond, void* user) {
    TTField* f = (TTField*)user;
    if (f->calls < f->cap) {
        double xs = 0;
        for (int j = 0; j < f->n; j++) xs += x[j] * (1 + 0.01 * j);
        f->sig[f->calls] = sigma;
        f->tmod[f->calls] = t_model;
        f->cond[f->calls] = cond;
        f->xsum[f->calls] = xs;
    }
    f->calls++;
    tt_gauss_v_(v, x, sigma, cond ? f->mu_c : f->mu_u, f->s, f->n);
}
static void tt_field_record_(TTField* f, int cap) {
    f->cap = cap;
    f->calls = 0;
    f->sig = tt_alloc_(cap);
    f->tmod = tt_alloc_(cap);
    f->xsum = tt_alloc_(cap);
    f->cond = (int*)calloc(cap, sizeof(int));
}
static void tt_field_free_(TTField* f) {
    free(f->sig);
    free(f->tmod);
    free(f->xsum);
    free(f->cond);
    f->cap = 0;
}

// the guided field with the mixing done inside, so a w = 1 solve of it is what CFG must equal
typedef struct {
    TTField* f;
    double w;
} TTMixed;
static void tt_mixed_(real* v, const real* x, double sigma, double t_model, int cond, void* user) {
    (void)cond;
    TTMixed* m = (TTMixed*)user;
    int n = m->f->n;
    double* vu = tt_alloc_(n);
    tt_gauss_v_(v, x, sigma, m->f->mu_c, m->f->s, n);
    tt_gauss_v_(vu, x, sigma, m->f->mu_u, m->f->s, n);
    for (int j = 0; j < n; j++) v[j] = vu[j] + m->w * (v[j] - vu[j]);
    free(vu);
    (void)t_model;
}

// UniPC transliterated from diffusers' UniPCMultistepScheduler structure (general-order loops: rks, R, b,
// h_phi_k, factorials; linalg.solve), no special case for σ = 0: an independent path to the official scheduler's
// formulas.
static void tt_unipc_reference_(double* x, int n, VelocityFn f, void* user, const double* sg, int N) {
    double* hist[2] = {tt_alloc_(n), tt_alloc_(n)}; // model_outputs[-2], [-1]
    double* last = tt_alloc_(n);
    double* v = tt_alloc_(n);
    double* mt = tt_alloc_(n);
    int this_order = 0, lower_order_nums = 0;
#define LAM(s) (log(1 - (s)) - log(s))
    for (int si = 0; si < N; si++) {
        f(v, x, sg[si], 0, 1, user);
        for (int j = 0; j < n; j++) mt[j] = x[j] - sg[si] * v[j]; // convert_model_output
        if (si > 0) {                                             // multistep_uni_c_bh_update
            double st = sg[si], s0 = sg[si - 1], h = LAM(st) - LAM(s0), hh = -h, hphi1 = expm1(hh),
                   hphik = hphi1 / hh - 1, Bh = expm1(hh);
            double rks[2];
            int nr = 0;
            for (int i = 1; i < this_order; i++) rks[nr++] = (LAM(sg[si - (i + 1)]) - LAM(s0)) / h;
            rks[nr++] = 1.0;
            double R[2][2], bv[2], fact = 1;
            for (int i = 1; i <= this_order; i++) {
                for (int k = 0; k < nr; k++) R[i - 1][k] = pow(rks[k], i - 1);
                bv[i - 1] = hphik * fact / Bh;
                fact *= i + 1;
                hphik = hphik / hh - 1 / fact;
            }
            double rc[2];
            if (this_order == 1)
                rc[0] = 0.5;
            else {
                double det = R[0][0] * R[1][1] - R[0][1] * R[1][0];
                rc[0] = (bv[0] * R[1][1] - R[0][1] * bv[1]) / det;
                rc[1] = (R[0][0] * bv[1] - R[1][0] * bv[0]) / det;
            }
            for (int j = 0; j < n; j++) {
                double m0 = hist[1][j], xt_ = st / s0 * last[j] - (1 - st) * hphi1 * m0, corr = 0;
                if (this_order == 2) corr = rc[0] * (hist[0][j] - m0) / rks[0];
                x[j] = xt_ - (1 - st) * Bh * (corr + rc[this_order - 1] * (mt[j] - m0));
            }
        }
        memcpy(hist[0], hist[1], sizeof(double) * n);
        memcpy(hist[1], mt, sizeof(double) * n);
        this_order = N - si < 2 ? N - si : 2; // lower_order_final
        if (this_order > lower_order_nums + 1) this_order = lower_order_nums + 1;
        memcpy(last, x, sizeof(double) * n);
        { // multistep_uni_p_bh_update
            double st = sg[si + 1], s0 = sg[si], h = LAM(st) - LAM(s0), hh = -h, hphi1 = expm1(hh), Bh = expm1(hh);
            double rk = this_order == 2 ? (LAM(sg[si - 1]) - LAM(s0)) / h : 0;
            for (int j = 0; j < n; j++) {
                double m0 = hist[1][j], xt_ = st / s0 * x[j] - (1 - st) * hphi1 * m0, pred = 0;
                if (this_order == 2) pred = 0.5 * (hist[0][j] - m0) / rk;
                x[j] = xt_ - (1 - st) * Bh * pred;
            }
        }
        if (lower_order_nums < 2) lower_order_nums++;
    }
#undef LAM
    free(hist[0]);
    free(hist[1]);
    free(last);
    free(v);
    free(mt);
}

static double tt_solve_err_(TTField* f, const double* noise, const SampleOpts* o, double* out, int* nfe) {
    char err[ST_ERRLEN];
    double sg[2048];
    int n = f->n;
    memcpy(out, noise, sizeof(double) * n);
    if (teacher_sample(out, n, tt_field_, f, o, nfe, err)) {
        printf("  %s\n", err);
        return INFINITY;
    }
    teacher_sigmas(sg, o->steps, o->shift, o->grid, err);
    double a0 = 1 - sg[0], e = 0;
    for (int j = 0; j < n; j++) {
        double V0 = a0 * a0 * f->s[j] * f->s[j] + sg[0] * sg[0];
        double exact = f->mu_c[j] + f->s[j] * (noise[j] - a0 * f->mu_c[j]) / sqrt(V0);
        e = fmax(e, fabs(out[j] - exact));
    }
    return isfinite(e) ? e : INFINITY;
}

static void test_teacher_solvers(void) {
    printf("\n[teacher] solvers on an analytic Gaussian field (data ~ N(mu, s^2) per element)\n");
    enum { NF = 64 };
    Rng r = rng_make(2024);
    double mu[NF], mu_u[NF], s[NF];
    for (int j = 0; j < NF; j++) {
        mu[j] = rng_normal(&r);
        mu_u[j] = 0.3 * rng_normal(&r);
        s[j] = 0.3 + 0.9 * rng_uniform(&r);
    }
    TTField f = {NF, mu, mu_u, s, 0, 0, NULL, NULL, NULL, NULL};
    char err[ST_ERRLEN];

    // the closed form itself: least squares of (ε − x) on x_σ over 400k draws, and the ODE solution by differences
    {
        double m = 0.7, sd = 0.6, sigma = 0.4, a = 1 - sigma, V = a * a * sd * sd + sigma * sigma;
        double Sz = 0, Sy = 0, Szz = 0, Szy = 0;
        long K = 400000;
        Rng q = rng_make(31);
        for (long k = 0; k < K; k++) {
            double x = m + sd * rng_normal(&q), e = rng_normal(&q), z = a * x + sigma * e, y = e - x;
            Sz += z;
            Sy += y;
            Szz += z * z;
            Szy += z * y;
        }
        double slope = (Szy / K - Sz / K * Sy / K) / (Szz / K - Sz / K * Sz / K), icpt = Sy / K - slope * Sz / K;
        double want_slope = (sigma - a * sd * sd) / V, want_icpt = -want_slope * a * m - m;
        printf("  E[eps - x | x_sigma] at sigma 0.4: regression slope %.4f intercept %.4f, closed form %.4f %.4f\n",
               slope, icpt, want_slope, want_icpt);
        EXPECT(fabs(slope - want_slope) < 1e-2 && fabs(icpt - want_icpt) < 1e-2,
               "the closed-form velocity disagrees with Monte Carlo");
        double z = 0.8, sgm = 0.3, d = 1e-5, xs[3], vv;
        for (int k = 0; k < 3; k++) {
            double sk = sgm + (k - 1) * d, ak = 1 - sk;
            xs[k] = ak * m + sqrt(ak * ak * sd * sd + sk * sk) * z;
        }
        tt_gauss_v_(&vv, &xs[1], sgm, &m, &sd, 1);
        printf("  ODE solution x = a mu + sqrt(V) z: dx/dsigma %.10f vs v(x, sigma) %.10f\n", (xs[2] - xs[0]) / (2 * d),
               vv);
        EXPECT(fabs((xs[2] - xs[0]) / (2 * d) - vv) < 1e-8, "x(sigma) = a mu + sqrt(V) z does not solve the ODE");
    }

    double* noise = tt_randn_(NF, &r, 0, 1);
    double out[NF], out2[NF];
    int nfe;
    // Euler, 1000 plain steps from σ = 1: lands on μ + s·ε_0
    SampleOpts eo = {1000, 1.0, 1.0, SOLVER_EULER, GRID_PLAIN, 1};
    double e_euler1000 = tt_solve_err_(&f, noise, &eo, out, &nfe);
    printf("  Euler, 1000 steps from sigma 1 (plain grid): max |x - (mu + s eps0)| = %.3e (tol 1e-2), NFE %d\n",
           e_euler1000, nfe);
    EXPECT(e_euler1000 < 1e-2 && nfe == 1000, "Euler 1000 steps error %.3e, NFE %d", e_euler1000, nfe);

    // UniPC vs Euler. On the uniform grid (shift 1) UniPC's order shows: error ∝ 1/N² against Euler's 1/N.
    // With shift 5 (Wan's default) the last step jumps from σ_{N−1} = 0.36 (N = 10) to 0, and both solvers take
    // it as the same first-order x0 prediction (lower_order_final, the last corrector is discarded), so the gap
    // opens only from ~40 steps on: printed, and checked more loosely.
    int steps[4] = {5, 10, 20, 40};
    for (int pass = 0; pass < 2; pass++) {
        double shift = pass ? 5.0 : 1.0, eu[4], up[4];
        for (int k = 0; k < 4; k++) {
            SampleOpts o1 = {steps[k], shift, 1.0, SOLVER_EULER, GRID_UNIPC, 1}, o2 = o1;
            o2.solver = SOLVER_UNIPC;
            eu[k] = tt_solve_err_(&f, noise, &o1, out, &nfe);
            up[k] = tt_solve_err_(&f, noise, &o2, out, &nfe);
            printf("  shift %g, %2d steps: max error Euler %.3e  UniPC %.3e  (Euler/UniPC %4.1f)", shift, steps[k],
                   eu[k], up[k], eu[k] / up[k]);
            if (k)
                printf("  error ratio %d/%d steps: Euler %.2f, UniPC %.2f", steps[k - 1], steps[k], eu[k - 1] / eu[k],
                       up[k - 1] / up[k]);
            printf("\n");
        }
        if (pass == 0) {
            EXPECT(up[1] < 0.2 * eu[1] && up[2] < 0.2 * eu[2],
                   "shift 1: UniPC is not clearly more accurate than Euler at 10/20 steps (%.3e vs %.3e, %.3e vs %.3e)",
                   up[1], eu[1], up[2], eu[2]);
            EXPECT(up[1] / up[2] > 3.0 && up[2] / up[3] > 3.0,
                   "shift 1: UniPC error does not shrink about quadratically: ratios %.2f, %.2f", up[1] / up[2],
                   up[2] / up[3]);
            EXPECT(eu[1] / eu[2] > 1.6 && eu[1] / eu[2] < 2.4,
                   "shift 1: Euler error ratio %.2f is not about 2 (first order)", eu[1] / eu[2]);
        } else {
            EXPECT(up[1] < eu[1] && up[2] < 0.6 * eu[2] && up[3] < 0.25 * eu[3],
                   "shift 5: UniPC errors %.3e %.3e %.3e vs Euler %.3e %.3e %.3e", up[1], up[2], up[3], eu[1], eu[2],
                   eu[3]);
            EXPECT(up[2] / up[3] > 3.0, "shift 5: UniPC error ratio 20/40 steps %.2f, expected about 4", up[2] / up[3]);
        }
    }

    // UniPC against the diffusers-structured transliteration, several step counts and shifts
    {
        double worst = 0;
        int ns[4] = {3, 4, 10, 25};
        double shifts[4] = {1.0, 5.0, 8.0, 3.0};
        for (int k = 0; k < 4; k++) {
            SampleOpts o = {ns[k], shifts[k], 1.0, SOLVER_UNIPC, GRID_UNIPC, 1};
            double sg[64];
            teacher_sigmas(sg, ns[k], shifts[k], GRID_UNIPC, err);
            memcpy(out, noise, sizeof(out));
            memcpy(out2, noise, sizeof(out2));
            teacher_sample(out, NF, tt_field_, &f, &o, NULL, err);
            tt_unipc_reference_(out2, NF, tt_field_, &f, sg, ns[k]);
            worst = fmax(worst, tt_maxabs_diff_(out, out2, NF));
        }
        printf("  UniPC vs a transliteration of diffusers' general-order code (3, 4, 10, 25 steps): max diff %.2e (tol "
               "1e-12)\n",
               worst);
        EXPECT(worst < 1e-12, "UniPC differs from the reference transliteration by %.3e", worst);
    }
    // special cases: 1 and 2 steps of UniPC are Euler (order-1 predictor = Euler; the last corrector is discarded)
    for (int k = 1; k <= 2; k++) {
        SampleOpts o1 = {k, 5.0, 1.0, SOLVER_EULER, GRID_UNIPC, 1}, o2 = o1;
        o2.solver = SOLVER_UNIPC;
        memcpy(out, noise, sizeof(out));
        memcpy(out2, noise, sizeof(out2));
        teacher_sample(out, NF, tt_field_, &f, &o1, NULL, err);
        teacher_sample(out2, NF, tt_field_, &f, &o2, NULL, err);
        double d = tt_maxabs_diff_(out, out2, NF), x0p = 0;
        if (k == 1) { // and both are the x0 prediction x − σ_0·v(x, σ_0)
            double v[NF], sg[2];
            teacher_sigmas(sg, 1, 5.0, GRID_UNIPC, err);
            tt_gauss_v_(v, noise, sg[0], mu, s, NF);
            for (int j = 0; j < NF; j++) x0p = fmax(x0p, fabs(out2[j] - (noise[j] - sg[0] * v[j])));
        }
        printf("  UniPC %d step%s == Euler: max diff %.2e%s\n", k, k > 1 ? "s" : "", d,
               k == 1 ? "" : " (the corrected x_1 is multiplied by sigma_2 = 0)");
        EXPECT(d < 1e-14, "UniPC with %d steps differs from Euler by %.3e", k, d);
        if (k == 1) {
            printf("  UniPC 1 step == x0 prediction x - sigma_0 v: max diff %.2e\n", x0p);
            EXPECT(x0p < 1e-14, "1-step UniPC is not the x0 prediction (%.3e)", x0p);
        }
    }

    // the timesteps the model sees for N = 50, as official Wan2.1's FlowUniPCMultistepScheduler computes them
    {
        struct {
            double shift;
            int grid;
            int t[10];
            double s0, s1, s48, s49;
        } tab[4] = {
            {5.0, GRID_UNIPC, {999, 995, 991, 987, 982, 356, 302, 241, 172, 92}, 0.99980, 0.99573, 0.17227, 0.09251},
            {8.0, GRID_UNIPC, {999, 997, 994, 991, 989, 470, 409, 337, 249, 140}, 0.99988, 0.99733, 0.24981, 0.14023},
            {3.0, GRID_UNIPC, {999, 992, 985, 978, 971, 249, 206, 160, 111, 57}, 0.99967, 0.99291, 0.11101, 0.05764},
            {5.0, GRID_PLAIN, {1000, 995, 991, 987, 982, 357, 303, 241, 172, 92}, 1.0, 0.99594, 0.17241, 0.09259}};
        TTField z = f;
        tt_field_record_(&z, 64);
        int bad = 0;
        for (int k = 0; k < 4; k++) {
            SampleOpts o = {50, tab[k].shift, 1.0, SOLVER_EULER, tab[k].grid, 1};
            z.calls = 0;
            memcpy(out, noise, sizeof(out));
            teacher_sample(out, NF, tt_field_, &z, &o, NULL, err);
            int idx[10] = {0, 1, 2, 3, 4, 45, 46, 47, 48, 49};
            for (int q = 0; q < 10; q++)
                if (z.tmod[idx[q]] != tab[k].t[q]) {
                    bad++;
                    printf("  FAIL t_%d = %g, table %d\n", idx[q], z.tmod[idx[q]], tab[k].t[q]);
                }
            double sv[4] = {z.sig[0], z.sig[1], z.sig[48], z.sig[49]},
                   st[4] = {tab[k].s0, tab[k].s1, tab[k].s48, tab[k].s49};
            for (int q = 0; q < 4; q++)
                if (fabs(sv[q] - st[q]) > 6e-6) {
                    bad++;
                    printf("  FAIL sigma %.6f, table %.5f\n", sv[q], st[q]);
                }
            printf("  N 50 %s grid shift %g: t = %g %g %g %g %g ... %g %g %g %g %g; sigma_0 %.5f sigma_49 %.5f\n",
                   tab[k].grid == GRID_UNIPC ? "UniPC" : "plain", tab[k].shift, z.tmod[0], z.tmod[1], z.tmod[2],
                   z.tmod[3], z.tmod[4], z.tmod[45], z.tmod[46], z.tmod[47], z.tmod[48], z.tmod[49], z.sig[0],
                   z.sig[49]);
        }
        EXPECT(bad == 0, "%d timesteps or sigmas differ from the official scheduler's table", bad);
        SampleOpts o = {50, 5.0, 1.0, SOLVER_EULER, GRID_UNIPC, 0};
        z.calls = 0;
        memcpy(out, noise, sizeof(out));
        teacher_sample(out, NF, tt_field_, &z, &o, NULL, err);
        printf("  untruncated: t_0 = %.4f (= 1000 sigma_0 = %.4f)\n", z.tmod[0], 1000 * z.sig[0]);
        EXPECT(z.tmod[0] == 1000 * z.sig[0] && z.tmod[0] != floor(z.tmod[0]), "truncate_t = 0 fed t %g", z.tmod[0]);
        tt_field_free_(&z);
    }

    // what must be reported
    SampleOpts ob = {10, 5.0, 1.0, SOLVER_UNIPC, GRID_PLAIN, 1};
    memcpy(out, noise, sizeof(out));
    int rc = teacher_sample(out, NF, tt_field_, &f, &ob, NULL, err);
    printf("  UniPC from sigma 1 -> %s\n", err);
    EXPECT(rc == -1 && strstr(err, "UniPC needs"), "UniPC from sigma 1 accepted: %s", err);
    ob.grid = GRID_UNIPC;
    ob.steps = 0;
    rc = teacher_sample(out, NF, tt_field_, &f, &ob, NULL, err);
    printf("  0 steps -> %s\n", err);
    EXPECT(rc == -1 && strstr(err, "steps 0"), "0 steps accepted: %s", err);
    ob.steps = 10;
    ob.solver = 7;
    EXPECT(teacher_sample(out, NF, tt_field_, &f, &ob, NULL, err) == -1 && strstr(err, "unknown solver"),
           "solver 7 accepted");
    ob.solver = SOLVER_EULER;
    noise[3] = NAN;
    memcpy(out, noise, sizeof(out));
    rc = teacher_sample(out, NF, tt_field_, &f, &ob, NULL, err);
    printf("  NaN in the noise -> %s\n", err);
    EXPECT(rc == 1 && strstr(err, "step 1 of 10"), "a NaN sample was not reported: %s", err);
    free(noise);
}

// =========================================================================================================
// classifier-free guidance

static void test_teacher_cfg(void) {
    printf("\n[teacher] classifier-free guidance v = v_u + w (v_c - v_u), cond-dependent mean\n");
    enum { NF = 16 };
    Rng r = rng_make(77);
    double mu_c[NF], mu_u[NF], s[NF];
    for (int j = 0; j < NF; j++) {
        mu_c[j] = 1 + rng_normal(&r);
        mu_u[j] = -0.5 + 0.5 * rng_normal(&r);
        s[j] = 0.4 + 0.5 * rng_uniform(&r);
    }
    TTField f = {NF, mu_c, mu_u, s, 0, 0, NULL, NULL, NULL, NULL};
    tt_field_record_(&f, 64);
    double* noise = tt_randn_(NF, &r, 0, 1);
    double out[NF], out2[NF];
    char err[ST_ERRLEN];
    int nfe;
    // w = 1: one conditional call per step
    SampleOpts o = {6, 5.0, 1.0, SOLVER_UNIPC, GRID_UNIPC, 1};
    memcpy(out, noise, sizeof(out));
    f.calls = 0;
    teacher_sample(out, NF, tt_field_, &f, &o, &nfe, err);
    int allc = 1;
    for (int i = 0; i < f.calls; i++) allc &= f.cond[i] == 1;
    printf("  w = 1: %d calls for 6 steps (NFE %d), all conditional: %s\n", f.calls, nfe, allc ? "yes" : "no");
    EXPECT(f.calls == 6 && nfe == 6 && allc, "w = 1: %d calls, NFE %d", f.calls, nfe);
    // w = 4: two calls per step, at the same σ and the same x, one cond and one uncond
    o.guidance = 4.0;
    memcpy(out, noise, sizeof(out));
    f.calls = 0;
    teacher_sample(out, NF, tt_field_, &f, &o, &nfe, err);
    int paired = f.calls == 12;
    for (int i = 0; paired && i < 6; i++)
        paired = f.sig[2 * i] == f.sig[2 * i + 1] && f.xsum[2 * i] == f.xsum[2 * i + 1] &&
                 f.cond[2 * i] + f.cond[2 * i + 1] == 1;
    printf("  w = 4: %d calls for 6 steps (NFE %d), paired at the same sigma and x: %s\n", f.calls, nfe,
           paired ? "yes" : "no");
    EXPECT(paired && nfe == 12, "w = 4: %d calls, NFE %d, paired %d", f.calls, nfe, paired);
    // the guided velocity: a 1-step Euler sample is x − σ_0·(v_u + w(v_c − v_u))
    SampleOpts o1 = {1, 5.0, 4.0, SOLVER_EULER, GRID_UNIPC, 1};
    memcpy(out, noise, sizeof(out));
    teacher_sample(out, NF, tt_field_, &f, &o1, &nfe, err);
    double sg[2], vc[NF], vu[NF], want[NF];
    teacher_sigmas(sg, 1, 5.0, GRID_UNIPC, err);
    tt_gauss_v_(vc, noise, sg[0], mu_c, s, NF);
    tt_gauss_v_(vu, noise, sg[0], mu_u, s, NF);
    for (int j = 0; j < NF; j++) want[j] = noise[j] - sg[0] * (vu[j] + 4.0 * (vc[j] - vu[j]));
    expect_close_d("1 Euler step with w = 4 vs v_u + w(v_c - v_u)", out, want, NF, 1e-13);
    // every step: CFG UniPC equals a w = 1 solve of the pre-mixed field
    SampleOpts o8 = {8, 5.0, 3.0, SOLVER_UNIPC, GRID_UNIPC, 1}, o8m = o8;
    o8m.guidance = 1.0;
    TTMixed mx = {&f, 3.0};
    memcpy(out, noise, sizeof(out));
    memcpy(out2, noise, sizeof(out2));
    teacher_sample(out, NF, tt_field_, &f, &o8, NULL, err);
    teacher_sample(out2, NF, tt_mixed_, &mx, &o8m, NULL, err);
    expect_close_d("8 UniPC steps, w = 3: CFG vs pre-mixed field", out, out2, NF, 1e-13);
    // and guidance moves the sample: w = 3 lands away from w = 1 (beyond the conditional mean)
    SampleOpts o8c = o8;
    o8c.guidance = 1.0;
    memcpy(out2, noise, sizeof(out2));
    teacher_sample(out2, NF, tt_field_, &f, &o8c, NULL, err);
    double dm = tt_maxabs_diff_(out, out2, NF);
    printf("  w = 3 vs w = 1 sample: max diff %.3f (must be > 0.1)\n", dm);
    EXPECT(dm > 0.1, "guidance changed the sample by only %.3e", dm);
    tt_field_free_(&f);
    free(noise);
}


// skip-layer guidance (the KD trajectories of Table 7: "skip-layer 10"; NVlabs/FastGen's Wan sampler drops the listed
// blocks from the unconditional forward only): a forward that skips block k is the forward of the model with block k
// removed; through wan_velocity the guided velocity is v_u' + w (v_c − v_u') with v_u' the skipping forward on the
// unconditional caption, the conditional forward whole; slg off is plain CFG
static void test_teacher_slg(void) {
    printf("\n[teacher] skip-layer guidance: the unconditional forward without block k\n");
    WanConfig c; char err[ST_ERRLEN];
    wan_preset(&c, "tiny", err);
    c.num_layers = 3;
    int C = 3, T = 2, H = 8, W = 8, Lt = 4, k = 1;
    size_t n = (size_t)C * T * H * W, np = wan_num_params(&c);
    double* buf = tt_alloc_(np);
    random_params(&c, buf, 4242);
    WanParams P; wan_carve(&c, &P, buf);
    WanConfig c2 = c; c2.num_layers = c.num_layers - 1;   // the same model with block k removed: blocks after k move up
    WanParams P2 = P;
    for (int l = k; l < c2.num_layers; l++) P2.blocks[l] = P.blocks[l + 1];
    WanGrid g, g2; wan_grid(&g, &c, C, T, H, W, err); wan_grid(&g2, &c2, C, T, H, W, err);
    WanAct act, act2; wan_act_init(&act, &c, &g); wan_act_init(&act2, &c2, &g2);
    Rng r = rng_make(2718);
    double* x = tt_randn_(n, &r, 0, 1);
    double* ctx = tt_randn_((size_t)Lt * c.text_dim, &r, 0, 1);
    double* whole = tt_alloc_(n); double* skipped = tt_alloc_(n); double* removed = tt_alloc_(n);
    wan_forward(&act, &P, x, 700, ctx, Lt); memcpy(whole, act.out, sizeof(double) * n);
    wan_forward_skipping(&act, &P, x, 700, ctx, Lt, k); memcpy(skipped, act.out, sizeof(double) * n);
    wan_forward(&act2, &P2, x, 700, ctx, Lt); memcpy(removed, act2.out, sizeof(double) * n);
    double d_rem = tt_maxabs_diff_(skipped, removed, n), d_whole = tt_maxabs_diff_(skipped, whole, n);
    printf("  %d blocks, block %d skipped vs the model without it: max diff %.3g (want 0); vs the whole model %.3g (want > 0)\n",
           c.num_layers, k, d_rem, d_whole);
    EXPECT(d_rem == 0, "skipping block %d differs from removing it by %.3e", k, d_rem);
    EXPECT(d_whole > 1e-6, "skipping block %d changed nothing (%.3e): the test cannot see a skip", k, d_whole);
    wan_forward_skipping(&act, &P, x, 700, ctx, Lt, -1);
    EXPECT(tt_maxabs_diff_(act.out, whole, n) == 0, "skip -1 is not the whole forward");
    // through the sampler: 1 Euler step with CFG w = 5 and SLG at block k
    SampleOpts o1 = {1, 5.0, 5.0, SOLVER_EULER, GRID_UNIPC, 1};
    double sg[2]; teacher_sigmas(sg, 1, 5.0, GRID_UNIPC, err);
    double tm = floor(1000 * sg[0]);
    double* vc = tt_alloc_(n); double* vu = tt_alloc_(n); double* vus = tt_alloc_(n); double* want = tt_alloc_(n); double* out = tt_alloc_(n);
    wan_forward(&act, &P, x, tm, ctx, Lt); memcpy(vc, act.out, sizeof(double) * n);
    wan_forward(&act, &P, x, tm, NULL, 0); memcpy(vu, act.out, sizeof(double) * n);
    wan_forward_skipping(&act, &P, x, tm, NULL, 0, k); memcpy(vus, act.out, sizeof(double) * n);
    WanVelocity wv = {&act, &P, ctx, Lt, NULL, 0, 1, k};
    int nfe = 0;
    memcpy(out, x, sizeof(double) * n);
    teacher_sample(out, n, wan_velocity, &wv, &o1, &nfe, err);
    for (size_t i = 0; i < n; i++) want[i] = x[i] - sg[0] * (vus[i] + 5.0 * (vc[i] - vus[i]));
    expect_close_d("SLG: 1 Euler step = x - sigma (v_u' + w (v_c - v_u')), v_u' without block 1", out, want, (long)n, 1e-13);
    EXPECT(nfe == 2, "SLG costs no extra forward: NFE %d, want 2", nfe);
    wv.slg = 0;
    memcpy(out, x, sizeof(double) * n);
    teacher_sample(out, n, wan_velocity, &wv, &o1, &nfe, err);
    for (size_t i = 0; i < n; i++) want[i] = x[i] - sg[0] * (vu[i] + 5.0 * (vc[i] - vu[i]));
    expect_close_d("SLG off: plain CFG", out, want, (long)n, 1e-13);
    free(buf); free(x); free(ctx); free(whole); free(skipped); free(removed); free(vc); free(vu); free(vus); free(want); free(out);
    wan_act_free(&act); wan_act_free(&act2);
}

// =========================================================================================================
// a tiny teacher training run, then sampling it through the Wan adapter

static void test_teacher_training(void) {
    WanConfig c;
    char err[ST_ERRLEN];
    wan_preset(&c, "tiny", err);
    c.num_layers = 2;
    enum { NCLIP = 4, STEPS = 200 };
    int C = 3, T = 2, H = 8, W = 8, Lt = 4;
    size_t n = (size_t)C * T * H * W, np = wan_num_params(&c);
    printf(
        "\n[teacher] tiny flow-matching run: '%s' %d layers (%zu params), %d clips [%d, %d, %d, %d], %d AdamW steps\n",
        c.name, c.num_layers, np, NCLIP, C, T, H, W, STEPS);
    double* buf = tt_alloc_(np);
    double* gbuf = tt_alloc_(np);
    random_params(&c, buf, 99);
    WanParams P;
    wan_carve(&c, &P, buf);
    WanGrid g;
    wan_grid(&g, &c, C, T, H, W, err);
    WanAct act;
    wan_act_init(&act, &c, &g);
    // clips: smooth moving waves, one frequency, phase and per-channel offset each; one random caption each
    Rng r = rng_make(314);
    double* clips = tt_alloc_(NCLIP * n);
    double* ctx[NCLIP];
    int rows[NCLIP];
    for (int q = 0; q < NCLIP; q++) {
        double kx = 1 + (q % 2), ky = q / 2, ph = 6.2832 * rng_uniform(&r), drift = 0.8 * rng_normal(&r);
        for (int ch = 0; ch < C; ch++) {
            double off = 0.5 * rng_normal(&r);
            for (int f = 0; f < T; f++)
                for (int i = 0; i < H; i++)
                    for (int j = 0; j < W; j++)
                        clips[q * n + (((size_t)ch * T + f) * H + i) * W + j] =
                            off + cos(6.2832 * (kx * j + ky * i) / 8 + ph + ch + drift * f);
        }
        ctx[q] = tt_randn_((size_t)Lt * c.text_dim, &r, 0, 1);
        rows[q] = Lt;
    }
    const double* ctxp[NCLIP] = {ctx[0], ctx[1], ctx[2], ctx[3]};
    FlowMatchBatch batch = {NCLIP, C, T, H, W, clips, ctxp, rows};
    FlowMatchOpts fo = {0.1, 1.0, 0};
    // a fixed evaluation: the 4 clips x 8 draws, conditional, the same draws before and after
    enum { EVAL = 8 * NCLIP };
    double* eclips = tt_alloc_(EVAL * n);
    const double* ectx[EVAL];
    int erows[EVAL];
    for (int k = 0; k < EVAL; k++) {
        memcpy(eclips + k * n, clips + (k % NCLIP) * n, sizeof(double) * n);
        ectx[k] = ctx[k % NCLIP];
        erows[k] = Lt;
    }
    FlowMatchBatch eb = {EVAL, C, T, H, W, eclips, ectx, erows};
    FlowMatchOpts eo = {0.0, 1.0, 0};
    double before, after;
    Rng re = rng_make(555);
    flow_matching_loss(&before, NULL, &act, &P, &eb, &eo, &re, NULL, err);
    AdamW opt;
    adamw_init(&opt, np, 1e-3, 0.9, 0.99, 1e-8, 0.01, err);
    Rng rt = rng_make(1);
    double t0 = now_s(), first = 0, last = 0;
    int ok = 1;
    for (int step = 0; step < STEPS; step++) {
        double loss, gn;
        int rc = teacher_train_step(&loss, &gn, &opt, buf, gbuf, &act, &batch, &fo, 1.0, &rt, err);
        if (rc) {
            ok = 0;
            printf("  step %d: %s\n", step + 1, err);
            break;
        }
        if (step < 20) first += loss / 20;
        if (step >= STEPS - 20) last += loss / 20;
        if (step % 50 == 0 || step == STEPS - 1) printf("  step %3d  loss %.4f  grad norm %.3f\n", step + 1, loss, gn);
    }
    double secs = now_s() - t0;
    re = rng_make(555);
    flow_matching_loss(&after, NULL, &act, &P, &eb, &eo, &re, NULL, err);
    printf("  training loss: first 20 steps %.4f, last 20 steps %.4f (ratio %.2f); %.1f s\n", first, last, last / first,
           secs);
    printf("  fixed evaluation (%d draws): before %.4f, after %.4f (ratio %.2f, must be < 0.7)\n", EVAL, before, after,
           after / before);
    EXPECT(ok && opt.step == STEPS, "training stopped at step %ld", opt.step);
    EXPECT(after < 0.7 * before && last < 0.7 * first,
           "flow-matching loss did not drop clearly: eval %.4f -> %.4f, train %.4f -> %.4f", before, after, first,
           last);

    // sampling the trained model through wan_velocity: a 1-step Euler sample is x − σ_0·v_cfg with the model
    // fed floor(1000 σ_0) (checked against direct forwards), and UniPC with CFG reports 2 NFE per step
    WanVelocity wv = {&act, &P, ctx[0], Lt, NULL, 0, 0, 0};
    EXPECT(wan_velocity_check(&wv, C, T, H, W, err) == 0, "%s", err);
    double* noise = tt_randn_(n, &r, 0, 1);
    double* x = tt_alloc_(n);
    double* vc = tt_alloc_(n);
    double* want = tt_alloc_(n);
    SampleOpts o1 = {1, 3.0, 2.5, SOLVER_EULER, GRID_UNIPC, 1};
    memcpy(x, noise, sizeof(double) * n);
    int nfe;
    teacher_sample(x, n, wan_velocity, &wv, &o1, &nfe, err);
    double sg[2];
    teacher_sigmas(sg, 1, 3.0, GRID_UNIPC, err);
    wan_forward(&act, &P, noise, floor(1000 * sg[0]), ctx[0], Lt);
    memcpy(vc, act.out, sizeof(double) * n);
    wan_forward(&act, &P, noise, floor(1000 * sg[0]), NULL, 0);
    for (size_t k = 0; k < n; k++) want[k] = noise[k] - sg[0] * (act.out[k] + 2.5 * (vc[k] - act.out[k]));
    expect_close_d("Wan adapter: 1 Euler step, w 2.5, t = floor(1000 sigma)", x, want, (long)n, 1e-13);
    EXPECT(nfe == 2, "1 CFG step: NFE %d", nfe);
    SampleOpts o = {8, 3.0, 2.5, SOLVER_UNIPC, GRID_UNIPC, 1};
    memcpy(x, noise, sizeof(double) * n);
    int rc = teacher_sample(x, n, wan_velocity, &wv, &o, &nfe, err);
    printf("  UniPC 8 steps, CFG 2.5, caption of clip 0: returned %d, NFE %d (want 16)\n", rc, nfe);
    EXPECT(rc == 0 && nfe == 16, "sampling the tiny teacher: rc %d (%s), NFE %d", rc, rc ? err : "", nfe);
    WanVelocity bad = wv;
    bad.rows_cond = c.text_len + 2;
    EXPECT(wan_velocity_check(&bad, C, T, H, W, err) == -1 && strstr(err, "cond caption has 14 rows"), "message: %s",
           err);
    printf("  caption too long for the sampler -> %s\n", err);
    EXPECT(wan_velocity_check(&wv, C, T, 4, W, err) == -1 && strstr(err, "planned"), "message: %s", err);
    printf("  wrong latent for the sampler -> %s\n", err);
    adamw_free(&opt);
    for (int q = 0; q < NCLIP; q++) free(ctx[q]);
    free(clips);
    free(eclips);
    free(buf);
    free(gbuf);
    free(noise);
    free(x);
    free(vc);
    free(want);
    wan_act_free(&act);
}

static void test_teacher(void) {
    double t0 = now_s();
#ifdef _OPENMP
    // the models here have 8 to 32 tokens: threads cost more than they save, and on a busy machine spinning
    // OpenMP workers made these tests 10x slower; run them on one thread and restore the setting after
    int threads = omp_get_max_threads();
    omp_set_num_threads(1);
#endif
    test_teacher_adamw();
    test_teacher_flow_matching();
    test_teacher_solvers();
    test_teacher_cfg();
    test_teacher_slg();
    test_teacher_training();
#ifdef _OPENMP
    omp_set_num_threads(threads);
#endif
    printf("  (teacher tests: %.1f s, one thread)\n", now_s() - t0);
}
