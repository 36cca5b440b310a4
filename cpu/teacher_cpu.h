// cpu/teacher_cpu.h: the teacher on the CPU reference: how Wan is trained and how it samples.
//   AdamW                 torch.optim.AdamW over one flat buffer (decoupled weight decay, bias correction),
//                         optional global-norm clipping, non-finite gradients skip the step
//   flow_matching_loss    the teacher's training loss (rectified flow as in the Wan2.1 report and the TMD paper's Sec.
//   2),
//                         forward and backward over a batch, condition dropout to the empty caption
//   teacher_train_step    zero the gradients, the loss, one AdamW step; reports and skips non-finite steps
//   teacher_sigmas        the sampling grid: official UniPC (linspace(0.999, 0)) or plain (linspace(1, 0)), shifted
//   teacher_sample        CFG + Euler or the official UniPC bh2 predictor-corrector (fm_solvers_unipc.py) over a
//                         VelocityFn, so the same solvers run the Wan model (wan_velocity) and analytic fields
// Convention: x_σ = (1 − σ)·x + σ·x1, x1 ~ N(0, I); the model predicts v ≈ x1 − x; x0 prediction m = x_σ − σ·v.
// Time stays in double on the host. Errors are returned (-1 with a message in err[ST_ERRLEN]); non-finite
// values are returned as 1 with a message saying where they appeared.
#pragma once
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../wan.h"
#include "../lib/rng.h"
#include "../lib/alloc.h" // xmalloc, xcalloc
#include "wan_cpu.h"

// timestep shift: shift_γ(u) = γ·u / ((γ − 1)·u + 1); γ = 1 is the identity
static double shift_sigma(double u, double gamma) { return gamma * u / ((gamma - 1) * u + 1); }

// the timestep the model is fed: 1000·σ in training; the official sampler truncates it to an integer
// (timesteps = (sigmas*1000).to(int64)) while the solver keeps the exact σ
static double teacher_model_timestep(double sigma, int truncate) {
    return truncate ? floor(1000.0 * sigma) : 1000.0 * sigma;
}

// ---------------------------------------------------------------------------------------------------------
// AdamW (torch.optim.AdamW, amsgrad off, maximize off), one flat loop over the parameter buffer:
//   p ← p − lr·wd·p                                  decoupled weight decay, before the moment update
//   m ← β1·m + (1 − β1)·g ;  v ← β2·v + (1 − β2)·g²
//   p ← p − lr·(m / (1 − β1^k)) / (sqrt(v / (1 − β2^k)) + eps)      k = step count after the increment
// m and v reuse the parameter layout (wan_carve over them gives per-tensor views).

typedef struct {
    real* m; // [n] first moment
    real* v; // [n] second moment
    size_t n;
    long step;    // steps taken (skipped steps do not count)
    long skipped; // steps refused because a gradient was NaN/Inf
    double lr, beta1, beta2, eps, weight_decay;
    size_t scaled_from; // elements [scaled_from, n) take lr·lr_scale (e.g. the student's flow-head extras); n: none
    double lr_scale;
} AdamW;

static int adamw_init(AdamW* o, size_t n, double lr, double beta1, double beta2, double eps, double weight_decay,
                      char* err) {
    memset(o, 0, sizeof(*o));
    if (n == 0 || !(lr >= 0) || !(beta1 >= 0 && beta1 < 1) || !(beta2 >= 0 && beta2 < 1) || !(eps > 0) ||
        !(weight_decay >= 0)) {
        snprintf(err, ST_ERRLEN,
                 "adamw: bad hyperparameters (n %zu, lr %g, betas %g %g, eps %g, weight_decay %g); "
                 "need n > 0, lr >= 0, 0 <= beta < 1, eps > 0, weight_decay >= 0",
                 n, lr, beta1, beta2, eps, weight_decay);
        return -1;
    }
    o->m = (real*)calloc(n, sizeof(real)); // checked below: the caller gets the message
    o->v = (real*)calloc(n, sizeof(real));
    if (!o->m || !o->v) {
        free(o->m);
        free(o->v);
        snprintf(err, ST_ERRLEN, "adamw: out of memory for 2 x %zu moments", n);
        return -1;
    }
    o->n = n;
    o->lr = lr;
    o->beta1 = beta1;
    o->beta2 = beta2;
    o->eps = eps;
    o->weight_decay = weight_decay;
    o->scaled_from = n;
    o->lr_scale = 1;
    return 0;
}
static void adamw_free(AdamW* o) {
    free(o->m);
    free(o->v);
    memset(o, 0, sizeof(*o));
}

// ‖g‖₂ over the whole buffer (NaN/Inf propagate)
static double grad_global_norm(const real* g, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)g[i] * g[i];
    return sqrt(s);
}

// One step on params[n] with grads[n] (read only). max_grad_norm > 0 clips like torch.nn.utils.clip_grad_norm_
// (g·min(1, max_norm / (‖g‖ + 1e-6))); <= 0 does not clip. *grad_norm (may be NULL) gets ‖g‖ before clipping.
// Returns 0 when the step was taken, 1 when it was skipped because ‖g‖ is not finite (parameters, moments and
// the step count untouched).
static int adamw_step(AdamW* o, real* params, const real* grads, double max_grad_norm, double* grad_norm) {
    double norm = grad_global_norm(grads, o->n);
    if (grad_norm) *grad_norm = norm;
    if (!isfinite(norm)) {
        o->skipped++;
        return 1;
    }
    double clip = max_grad_norm > 0 ? fmin(1.0, max_grad_norm / (norm + 1e-6)) : 1.0;
    o->step++;
    double bc1 = 1 - pow(o->beta1, (double)o->step), bc2 = 1 - pow(o->beta2, (double)o->step);
    for (size_t i = 0; i < o->n; i++) {
        double lr = i < o->scaled_from ? o->lr : o->lr * o->lr_scale;
        double g = clip * grads[i];
        double m = o->beta1 * o->m[i] + (1 - o->beta1) * g;
        double v = o->beta2 * o->v[i] + (1 - o->beta2) * g * g;
        o->m[i] = (real)m;
        o->v[i] = (real)v;
        params[i] = (real)(params[i] * (1 - lr * o->weight_decay) - lr * (m / bc1) / (sqrt(v / bc2) + o->eps));
    }
    return 0;
}

// ---------------------------------------------------------------------------------------------------------
// flow matching (the teacher's objective). For each sample b of the batch, in this order of random draws:
//   u ~ U(0,1) → σ = shift_γ(u);  d ~ U(0,1), dropped = d < p_drop;  x1 ~ N(0, I) (element order of x)
//   x_σ = (1 − σ)·x + σ·x1 ;  v = model(x_σ, t(σ), dropped ? empty caption : ctx)
//   loss = mean over the batch and the elements of (v − (x1 − x))²
// The empty caption (0 rows, zero-padded to text_len) is also the unconditional input of CFG.

typedef struct {
    double p_drop;  // condition dropout probability (0.1 here: the usual choice for CFG training)
    double shift;   // σ = shift_γ(u), u ~ U(0,1); 1 = uniform σ
    int truncate_t; // 0: feed the model 1000·σ as a float (training); 1: floor(1000·σ) like the sampler
} FlowMatchOpts;

typedef struct {
    int B, C, T, H, W; // clean latents x [B, C, T, H, W]
    const real* x;
    const real* const* ctx; // B captions: ctx[b] is [ctx_rows[b], text_dim]; ctx or ctx[b] may be NULL for 0 rows
    const int* ctx_rows;    // [B], 0 <= rows <= text_len; NULL = every caption empty
} FlowMatchBatch;

typedef struct {
    double sigma;
    int dropped;
    double loss;
} FlowMatchSample; // what each sample drew and scored

static int flow_matching_check_(const WanAct* act, const FlowMatchBatch* b, const FlowMatchOpts* o, char* err) {
    const WanConfig* c = &act->cfg;
    if (c->out_dim != c->in_dim) {
        snprintf(err, ST_ERRLEN,
                 "flow matching: config '%s' has in_dim %d but out_dim %d; the velocity must have the latent's shape",
                 c->name, c->in_dim, c->out_dim);
        return -1;
    }
    if (b->B <= 0 || !b->x) {
        snprintf(err, ST_ERRLEN, "flow matching: empty batch (B = %d, x %s)", b->B, b->x ? "set" : "NULL");
        return -1;
    }
    if (b->C != act->g.C || b->T != act->g.T || b->H != act->g.Hl || b->W != act->g.Wl) {
        snprintf(err, ST_ERRLEN,
                 "flow matching: latents are [%d, %d, %d, %d, %d] but the activations were planned for "
                 "[B, %d, %d, %d, %d]; call wan_act_init with the batch's latent shape",
                 b->B, b->C, b->T, b->H, b->W, act->g.C, act->g.T, act->g.Hl, act->g.Wl);
        return -1;
    }
    for (int i = 0; i < b->B; i++) {
        int rows = b->ctx_rows ? b->ctx_rows[i] : 0;
        if (rows < 0 || rows > c->text_len) {
            snprintf(err, ST_ERRLEN,
                     "flow matching: caption %d has %d rows; expected 0..%d (text_len of '%s'; cut longer "
                     "captions to text_len)",
                     i, rows, c->text_len, c->name);
            return -1;
        }
        if (rows > 0 && (!b->ctx || !b->ctx[i])) {
            snprintf(err, ST_ERRLEN, "flow matching: caption %d has %d rows but no data (NULL)", i, rows);
            return -1;
        }
    }
    if (!(o->p_drop >= 0 && o->p_drop <= 1) || !(o->shift > 0)) {
        snprintf(err, ST_ERRLEN, "flow matching: p_drop %g must lie in [0, 1] and shift %g must be > 0", o->p_drop,
                 o->shift);
        return -1;
    }
    return 0;
}

// Returns the loss in *loss and, when dP is not NULL, ACCUMULATES (+=) its parameter gradient into dP (the
// caller zeroes the gradient buffer, one memset, so micro-batches can add up; each call contributes the
// gradient of its own batch mean, so K accumulated micro-batches need a 1/K). info[B] may be NULL.
// Returns 0; 1 if a sample's loss is not finite (message names the sample and its σ; the backward stops there,
// so dP holds a partial sum that must not be applied); -1 on a shape or option error (message).
static int flow_matching_loss(double* loss, WanParams* dP, WanAct* act, const WanParams* P, const FlowMatchBatch* b,
                              const FlowMatchOpts* o, Rng* rng, FlowMatchSample* info, char* err) {
    *loss = NAN;
    if (flow_matching_check_(act, b, o, err)) return -1;
    size_t n = (size_t)b->C * b->T * b->H * b->W;
    real* xs = (real*)xmalloc(n, sizeof(real), "flow_matching_loss: xs"); // x_σ
    real* tg = (real*)xmalloc(n, sizeof(real), "flow_matching_loss: tg"); // target x1 − x
    real* dv = (real*)xmalloc(n, sizeof(real), "flow_matching_loss: dv"); // ∂loss/∂v
    if (!xs || !tg || !dv) {
        free(xs);
        free(tg);
        free(dv);
        snprintf(err, ST_ERRLEN, "flow matching: out of memory (3 x %zu)", n);
        return -1;
    }
    double total = 0, scale = 2.0 / ((double)b->B * (double)n);
    int rc = 0;
    for (int i = 0; i < b->B && rc == 0; i++) {
        const real* x = b->x + (size_t)i * n;
        double sigma = shift_sigma(rng_uniform(rng), o->shift);
        int dropped = rng_uniform(rng) < o->p_drop;
        for (size_t k = 0; k < n; k++) {
            double x1 = rng_normal(rng);
            xs[k] = (real)((1 - sigma) * x[k] + sigma * x1);
            tg[k] = (real)(x1 - x[k]);
        }
        int rows = (dropped || !b->ctx_rows) ? 0 : b->ctx_rows[i];
        wan_forward(act, P, xs, teacher_model_timestep(sigma, o->truncate_t), rows ? b->ctx[i] : NULL, rows);
        double se = 0;
        for (size_t k = 0; k < n; k++) {
            double d = act->out[k] - tg[k];
            se += d * d;
            dv[k] = (real)(scale * d);
        }
        if (info) {
            info[i].sigma = sigma;
            info[i].dropped = dropped;
            info[i].loss = se / n;
        }
        if (!isfinite(se)) {
            snprintf(err, ST_ERRLEN, "flow matching: non-finite loss for sample %d of %d (sigma %.6f, %s caption)", i,
                     b->B, sigma, rows ? "conditional" : "empty");
            rc = 1;
            break;
        }
        total += se / n;
        if (dP) wan_backward(dP, NULL, NULL, dv, act, P);
    }
    if (rc == 0) *loss = total / b->B;
    free(xs);
    free(tg);
    free(dv);
    return rc;
}

// One training step of the teacher: grads ← 0, flow-matching loss and gradient, AdamW on params.
// params and grads are flat buffers of wan_num_params(&act->cfg) elements (opt->n must match).
// Returns 0 when the step was taken; 1 when it was skipped (non-finite loss or gradient: printed to stderr
// with the step number, parameters untouched); -1 on an error (message).
static int teacher_train_step(double* loss, double* grad_norm, AdamW* opt, real* params, real* grads, WanAct* act,
                              const FlowMatchBatch* b, const FlowMatchOpts* o, double max_grad_norm, Rng* rng,
                              char* err) {
    size_t np = wan_num_params(&act->cfg);
    if (opt->n != np) {
        snprintf(err, ST_ERRLEN, "teacher step: the optimizer holds %zu moments but config '%s' has %zu parameters",
                 opt->n, act->cfg.name, np);
        return -1;
    }
    WanParams P, dP;
    wan_carve(&act->cfg, &P, params);
    wan_carve(&act->cfg, &dP, grads);
    memset(grads, 0, sizeof(real) * np);
    int rc = flow_matching_loss(loss, &dP, act, &P, b, o, rng, NULL, err);
    if (rc < 0) return rc;
    if (rc == 1) {
        fprintf(stderr, "teacher step %ld skipped: %s\n", opt->step + 1, err);
        opt->skipped++;
        return 1;
    }
    double gn;
    if (adamw_step(opt, params, grads, max_grad_norm, &gn)) {
        snprintf(err, ST_ERRLEN, "non-finite gradient norm %g (loss %g)", gn, *loss);
        fprintf(stderr, "teacher step %ld skipped: %s\n", opt->step + 1, err);
        if (grad_norm) *grad_norm = gn;
        return 1;
    }
    if (grad_norm) *grad_norm = gn;
    return 0;
}

// ---------------------------------------------------------------------------------------------------------
// sampling

// v[n] = velocity at (x, σ). t_model is the timestep to feed a network (1000σ, or floor of it); cond = 1 for
// the conditional (prompt) pass, 0 for the unconditional (negative prompt / empty caption) pass.
typedef void (*VelocityFn)(real* v, const real* x, double sigma, double t_model, int cond, void* user);

enum { SOLVER_EULER = 0, SOLVER_UNIPC = 1 };
enum {
    GRID_UNIPC = 0,
    GRID_PLAIN = 1
}; // linspace(0.999, 0, N+1)[:-1] (official UniPC) | linspace(1, 0, N+1)[:-1] (official DPM++)

typedef struct {
    int steps;       // N
    double shift;    // γ of the σ grid (Wan T2V: 5; the 1.3B README suggests 8–12)
    double guidance; // w: v = v_u + w·(v_c − v_u); w = 1 runs the conditional pass only
    int solver;      // SOLVER_EULER | SOLVER_UNIPC
    int grid;        // GRID_UNIPC | GRID_PLAIN
    int truncate_t;  // 1: feed floor(1000σ) like the official sampler; 0: 1000σ
} SampleOpts;

// sigmas[0..N]: σ_i = shift_γ(base_i), base = linspace(top, 0, N+1)[:-1] with top = 0.999 (GRID_UNIPC) or 1
// (GRID_PLAIN), and σ_N = 0 (official Wan2.1 wan/utils/fm_solvers_unipc.py, FlowUniPCMultistepScheduler.set_timesteps)
static int teacher_sigmas(double* sigmas, int steps, double shift, int grid, char* err) {
    if (steps < 1 || !(shift > 0) || (grid != GRID_UNIPC && grid != GRID_PLAIN)) {
        snprintf(err, ST_ERRLEN,
                 "sigma grid: steps %d must be >= 1, shift %g > 0, grid %d one of GRID_UNIPC (0), GRID_PLAIN (1)",
                 steps, shift, grid);
        return -1;
    }
    double top = grid == GRID_UNIPC ? 0.999 : 1.0;
    for (int i = 0; i < steps; i++)
        sigmas[i] = shift_sigma(top * (double)(steps - i) / steps, shift); // linspace(top, 0, N+1)[i]
    sigmas[steps] = 0;
    return 0;
}

// v = v_u + w·(v_c − v_u); w = 1: the conditional pass alone. vu is scratch [n]. Returns the passes run.
static int cfg_velocity_(real* v, real* vu, const real* x, size_t n, double sigma, double t_model, double w,
                         VelocityFn f, void* user) {
    f(v, x, sigma, t_model, 1, user);
    if (w == 1.0) return 1;
    f(vu, x, sigma, t_model, 0, user);
    for (size_t k = 0; k < n; k++) v[k] = (real)(vu[k] + w * (v[k] - vu[k]));
    return 2;
}

static double unipc_lambda_(double sigma) { return log(1 - sigma) - log(sigma); } // λ = log α − log σ, α = 1 − σ

static int all_finite_(const real* x, size_t n) {
    for (size_t k = 0; k < n; k++)
        if (!isfinite(x[k])) return 0;
    return 1;
}

// Samples in place: x[n] holds the initial noise on entry (at σ_0) and the sample (σ = 0) on return.
// *nfe (may be NULL) gets the model evaluations (steps, or 2·steps with CFG). Returns 0; 1 if the sample
// became non-finite (message names the step and σ; x is then garbage); -1 on bad options (message).
// Euler:  x_{i+1} = x_i + (σ_{i+1} − σ_i)·v_i.
// UniPC (official Wan2.1 FlowUniPCMultistepScheduler: bh2, order 2, predict_x0, lower_order_final), with
// α = 1 − σ, λ = log α − log σ, m_i = x_i − σ_i·v_i from the uncorrected x_i, and p_i = min(2, N − i, i + 1):
//   corrector (i ≥ 1, order p_{i−1}):  h = λ_i − λ_{i−1}, φ = expm1(−h), B = φ
//     xc_i = (σ_i/σ_{i−1})·xc_{i−1} − α_i·φ·m_{i−1} − α_i·B·(ρ0·D + ρ1·(m_i − m_{i−1}))
//       p = 1: ρ0 = 0, ρ1 = 0.5.   p = 2: r = (λ_{i−2} − λ_{i−1})/h, D = (m_{i−2} − m_{i−1})/r,
//       g1 = φ/(−h) − 1, g2 = g1/(−h) − 0.5, [[1, 1], [r, 1]]·ρ = [g1/B, 2·g2/B]
//   predictor:  h = λ_{i+1} − λ_i, φ = expm1(−h)
//     x_{i+1} = (σ_{i+1}/σ_i)·xc_i − α_{i+1}·φ·m_i  [− α_{i+1}·φ·0.5·(m_{i−1} − m_i)/r, r = (λ_{i−1} − λ_i)/h, if p_i =
//     2]
//   last step (σ_N = 0, λ_N = +∞, φ = −1): x_N = m_{N−1}, so the last corrector's output is not used.
static int teacher_sample(real* x, size_t n, VelocityFn f, void* user, const SampleOpts* o, int* nfe, char* err) {
    if (nfe) *nfe = 0;
    if (!x || n == 0 || !f) {
        snprintf(err, ST_ERRLEN, "sampler: no latent (n = %zu) or no velocity function", n);
        return -1;
    }
    if (o->solver != SOLVER_EULER && o->solver != SOLVER_UNIPC) {
        snprintf(err, ST_ERRLEN, "sampler: unknown solver %d; expected SOLVER_EULER (0) or SOLVER_UNIPC (1)",
                 o->solver);
        return -1;
    }
    if (!isfinite(o->guidance)) {
        snprintf(err, ST_ERRLEN, "sampler: guidance %g is not finite", o->guidance);
        return -1;
    }
    int N = o->steps;
    double* sg = (double*)xmalloc((N > 0 ? N + 1 : 1), sizeof(double), "teacher_sample: sg");
    if (teacher_sigmas(sg, N, o->shift, o->grid, err)) {
        free(sg);
        return -1;
    }
    if (o->solver == SOLVER_UNIPC && sg[0] >= 1) {
        snprintf(err, ST_ERRLEN,
                 "sampler: UniPC needs sigma_0 < 1 (lambda = log((1 - sigma)/sigma) is -inf at 1), got %g; "
                 "use GRID_UNIPC (starts at 0.999) or the Euler solver",
                 sg[0]);
        free(sg);
        return -1;
    }
    real* v = (real*)xmalloc(n, sizeof(real), "teacher_sample: v");
    real* vu = (real*)xmalloc(n, sizeof(real), "teacher_sample: vu");
    real* m = (real*)xmalloc(n, sizeof(real), "teacher_sample: m"); // m_i
    real* m1 = (real*)xmalloc(n, sizeof(real), "teacher_sample: m1");
    real* m2 = (real*)xmalloc(n, sizeof(real), "teacher_sample: m2"); // m_{i−1}, m_{i−2}
    real* xc = (real*)xmalloc(n, sizeof(real), "teacher_sample: xc"); // corrected sample
    if (!v || !vu || !m || !m1 || !m2 || !xc) {
        snprintf(err, ST_ERRLEN, "sampler: out of memory for 6 buffers of %zu elements", n);
        free(sg);
        free(v);
        free(vu);
        free(m);
        free(m1);
        free(m2);
        free(xc);
        return -1;
    }
    int evals = 0, rc = 0, p_prev = 0;
    for (int i = 0; i < N; i++) {
        double s = sg[i], s_next = sg[i + 1];
        evals += cfg_velocity_(v, vu, x, n, s, teacher_model_timestep(s, o->truncate_t), o->guidance, f, user);
        if (o->solver == SOLVER_EULER) {
            for (size_t k = 0; k < n; k++) x[k] = (real)(x[k] + (s_next - s) * v[k]);
        } else {
            for (size_t k = 0; k < n; k++) m[k] = (real)(x[k] - s * v[k]);
            double lam = unipc_lambda_(s);
            if (i == 0) {
                memcpy(xc, x, sizeof(real) * n);
            } else { // corrector, order p_prev
                double s_prev = sg[i - 1], h = lam - unipc_lambda_(s_prev), hh = -h, phi = expm1(hh), Bh = phi;
                double rho0 = 0, rho1 = 0.5, r = 1;
                if (p_prev == 2) {
                    r = (unipc_lambda_(sg[i - 2]) - unipc_lambda_(s_prev)) / h;
                    double g1 = phi / hh - 1, g2 = g1 / hh - 0.5, b0 = g1 / Bh, b1 = 2 * g2 / Bh;
                    rho0 = (b0 - b1) / (1 - r);
                    rho1 = b0 - rho0; // [[1, 1], [r, 1]]·ρ = b
                }
                double a = 1 - s;
                for (size_t k = 0; k < n; k++) {
                    double D = p_prev == 2 ? (m2[k] - m1[k]) / r : 0;
                    xc[k] =
                        (real)((s / s_prev) * xc[k] - a * phi * m1[k] - a * Bh * (rho0 * D + rho1 * (m[k] - m1[k])));
                }
            }
            int p = N - i < i + 1 ? N - i : i + 1;
            if (p > 2) p = 2;
            if (s_next == 0) {
                memcpy(x, m, sizeof(real) * n); // x_N = m_{N−1}
            } else {
                double h = unipc_lambda_(s_next) - lam, phi = expm1(-h), a = 1 - s_next;
                double r = p == 2 ? (unipc_lambda_(sg[i - 1]) - lam) / h : 1;
                for (size_t k = 0; k < n; k++) {
                    double xn = (s_next / s) * xc[k] - a * phi * m[k];
                    if (p == 2) xn -= a * phi * 0.5 * (m1[k] - m[k]) / r;
                    x[k] = (real)xn;
                }
            }
            real* t = m2;
            m2 = m1;
            m1 = m;
            m = t; // m_{i−2} ← m_{i−1} ← m_i
            p_prev = p;
        }
        if (!all_finite_(x, n)) {
            snprintf(err, ST_ERRLEN, "sampler: non-finite sample after step %d of %d (sigma %.6f -> %.6f)", i + 1, N, s,
                     s_next);
            rc = 1;
            break;
        }
    }
    if (nfe) *nfe = evals;
    free(sg);
    free(v);
    free(vu);
    free(m);
    free(m1);
    free(m2);
    free(xc);
    return rc;
}

// the VelocityFn of a Wan model: one sample, cond = prompt rows, uncond = negative prompt (0 rows = empty caption)
typedef struct {
    WanAct* act; // planned for the latent's shape (wan_act_init)
    const WanParams* P;
    const real* ctx_cond;
    int rows_cond; // [rows, text_dim]
    const real* ctx_uncond;
    int rows_uncond; // [rows, text_dim]; 0 rows = the empty caption
    // skip-layer guidance (slg 1): the unconditional forward leaves out block slg_block, so CFG's
    // v = v_u' + w·(v_c − v_u') guides away from the model without that block (NVlabs/FastGen: WanT2V sample() passes
    // skip_layers to the negative-condition call only, from the first step; Table 7's KD trajectories: skip-layer 10)
    int slg, slg_block;
} WanVelocity;

static void wan_velocity(real* v, const real* x, double sigma, double t_model, int cond, void* user) {
    (void)sigma;
    WanVelocity* w = (WanVelocity*)user;
    wan_forward_skipping(w->act, w->P, x, t_model, cond ? w->ctx_cond : w->ctx_uncond, cond ? w->rows_cond : w->rows_uncond,
                         !cond && w->slg ? w->slg_block : -1);
    const WanGrid* g = &w->act->g;
    memcpy(v, w->act->out, sizeof(real) * (size_t)w->act->cfg.out_dim * g->T * g->Hl * g->Wl);
}

// checks a WanVelocity against the latent it will sample ([C, T, H, W]); -1 with a message
static int wan_velocity_check(const WanVelocity* w, int C, int T, int H, int W, char* err) {
    const WanConfig* c = &w->act->cfg;
    const WanGrid* g = &w->act->g;
    if (C != g->C || T != g->T || H != g->Hl || W != g->Wl || c->out_dim != c->in_dim) {
        snprintf(err, ST_ERRLEN,
                 "sampler: latent [%d, %d, %d, %d] but the activations were planned for [%d, %d, %d, %d] "
                 "(in_dim %d, out_dim %d must agree)",
                 C, T, H, W, g->C, g->T, g->Hl, g->Wl, c->in_dim, c->out_dim);
        return -1;
    }
    int rows[2] = {w->rows_cond, w->rows_uncond};
    const real* p[2] = {w->ctx_cond, w->ctx_uncond};
    for (int i = 0; i < 2; i++)
        if (rows[i] < 0 || rows[i] > c->text_len || (rows[i] > 0 && !p[i])) {
            snprintf(err, ST_ERRLEN, "sampler: %s caption has %d rows%s; expected 0..%d (text_len)",
                     i ? "uncond" : "cond", rows[i], rows[i] > 0 && !p[i] ? " but no data" : "", c->text_len);
            return -1;
        }
    return 0;
}
