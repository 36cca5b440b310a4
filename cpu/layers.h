// cpu/layers.h: the CPU reference's layers, each a forward/backward pair in plain C (OpenMP where it pays).
// Argument order: outputs first, then saved activations, inputs, weights, sizes.
// Every forward OVERWRITES its outputs. Every backward ACCUMULATES (+=) into the gradients of its inputs and
// weights, so callers zero gradient buffers once and sum over uses (a residual stream, shared weights).
// `real` is the element type of wan.h (double in test_tmd.c, so finite differences are exact to ~1e-10).
// OpenMP splits a loop only when it holds enough work (OMP_MIN_WORK multiply-adds, a few milliseconds on one core):
// below that the fork/join and the waiting threads' spinning cost more than they save, and on a machine whose cores
// are busy with other jobs they made the tests 10x slower than one thread (the smoke group: 20 s with 2 threads at a
// threshold of 262144, 1.7 s with one thread; 2.7 s with 2 threads at this threshold). Each output element is
// computed by one thread, so results do not depend on the thread count.
#pragma once
#include <math.h>
#include <string.h>
#include <stdlib.h>
#include "../lib/alloc.h" // xmalloc: scratch buffers that say what they were for when they fail

#define OMP_MIN_WORK (1 << 22)

// ---------------------------------------------------------------------------------------------------------
// Linear: out[N, OC] = inp[N, IC] · w[OC, IC]ᵀ + b[OC]   (PyTorch nn.Linear; b may be NULL)

static void linear_forward(real* out, const real* inp, const real* w, const real* b, int N, int IC, int OC) {
#pragma omp parallel for if ((size_t)N * IC * OC >= OMP_MIN_WORK)
    for (int n = 0; n < N; n++) {
        const real* x = inp + (size_t)n * IC;
        for (int o = 0; o < OC; o++) {
            const real* wr = w + (size_t)o * IC;
            real acc = b ? b[o] : 0;
            for (int i = 0; i < IC; i++) acc += x[i] * wr[i];
            out[(size_t)n * OC + o] = acc;
        }
    }
}

// inverts out = inp·wᵀ + b:  dinp += dout·w ; dw += doutᵀ·inp ; db += Σ_n dout   (dinp, dw, db may be NULL)
static void linear_backward(real* dinp, real* dw, real* db, const real* dout, const real* inp, const real* w, int N,
                            int IC, int OC) {
    if (dinp) {
#pragma omp parallel for if ((size_t)N * IC * OC >= OMP_MIN_WORK)
        for (int n = 0; n < N; n++) {
            real* dx = dinp + (size_t)n * IC;
            const real* g = dout + (size_t)n * OC;
            for (int o = 0; o < OC; o++) {
                real go = g[o];
                const real* wr = w + (size_t)o * IC;
                for (int i = 0; i < IC; i++) dx[i] += go * wr[i];
            }
        }
    }
    if (dw || db) {
#pragma omp parallel for if ((size_t)N * IC * OC >= OMP_MIN_WORK)
        for (int o = 0; o < OC; o++) {
            real* dwr = dw ? dw + (size_t)o * IC : NULL;
            real sb = 0;
            for (int n = 0; n < N; n++) {
                real go = dout[(size_t)n * OC + o];
                sb += go;
                if (dwr) {
                    const real* x = inp + (size_t)n * IC;
                    for (int i = 0; i < IC; i++) dwr[i] += go * x[i];
                }
            }
            if (db) db[o] += sb;
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// LayerNorm over the last dim C: out = (x − mean)·rstd (·w + b when w is not NULL). Saves mean, rstd [N].

static void layernorm_forward(real* out, real* mean, real* rstd, const real* inp, const real* w, const real* b, int N,
                              int C, double eps) {
#pragma omp parallel for if ((size_t)N * C >= OMP_MIN_WORK / 8)
    for (int n = 0; n < N; n++) {
        const real* x = inp + (size_t)n * C;
        real m = 0;
        for (int i = 0; i < C; i++) m += x[i];
        m /= C;
        real v = 0;
        for (int i = 0; i < C; i++) {
            real d = x[i] - m;
            v += d * d;
        }
        v /= C;
        real r = 1 / sqrt(v + eps);
        real* y = out + (size_t)n * C;
        for (int i = 0; i < C; i++) {
            real xh = (x[i] - m) * r;
            y[i] = w ? xh * w[i] + b[i] : xh;
        }
        mean[n] = m;
        rstd[n] = r;
    }
}

// inverts y = xhat·w + b, xhat = (x − mean)·rstd:
// dxhat = dy·w ; dx += rstd·(dxhat − mean(dxhat) − xhat·mean(dxhat·xhat)) ; dw += Σ dy·xhat ; db += Σ dy
static void layernorm_backward(real* dinp, real* dw, real* db, const real* dout, const real* inp, const real* w,
                               const real* mean, const real* rstd, int N, int C) {
    real* dxh_buf = (real*)xmalloc((size_t)C * N, sizeof(real), "layernorm_backward: dxh_buf");
#pragma omp parallel for if ((size_t)N * C >= OMP_MIN_WORK / 8)
    for (int n = 0; n < N; n++) {
        const real* x = inp + (size_t)n * C;
        const real* g = dout + (size_t)n * C;
        real* dxh = dxh_buf + (size_t)n * C;
        real s1 = 0, s2 = 0;
        for (int i = 0; i < C; i++) {
            real xh = (x[i] - mean[n]) * rstd[n];
            dxh[i] = w ? g[i] * w[i] : g[i];
            s1 += dxh[i];
            s2 += dxh[i] * xh;
        }
        s1 /= C;
        s2 /= C;
        real* dx = dinp + (size_t)n * C;
        for (int i = 0; i < C; i++) {
            real xh = (x[i] - mean[n]) * rstd[n];
            dx[i] += rstd[n] * (dxh[i] - s1 - xh * s2);
        }
    }
    if (w)
        for (int n = 0; n < N; n++) {
            const real* x = inp + (size_t)n * C;
            const real* g = dout + (size_t)n * C;
            for (int i = 0; i < C; i++) {
                real xh = (x[i] - mean[n]) * rstd[n];
                dw[i] += g[i] * xh;
                db[i] += g[i];
            }
        }
    free(dxh_buf);
}

// ---------------------------------------------------------------------------------------------------------
// RMSNorm over the last dim C (Wan: across all heads, C = D): out = x·rstd·w, rstd = 1/sqrt(mean(x²) + eps)

static void rmsnorm_forward(real* out, real* rstd, const real* inp, const real* w, int N, int C, double eps) {
#pragma omp parallel for if ((size_t)N * C >= OMP_MIN_WORK / 8)
    for (int n = 0; n < N; n++) {
        const real* x = inp + (size_t)n * C;
        real ms = 0;
        for (int i = 0; i < C; i++) ms += x[i] * x[i];
        ms /= C;
        real r = 1 / sqrt(ms + eps);
        real* y = out + (size_t)n * C;
        for (int i = 0; i < C; i++) y[i] = x[i] * r * w[i];
        rstd[n] = r;
    }
}

// inverts y = x·rstd·w:  dx += rstd·(dy·w − x·rstd²·mean(dy·w·x)) ; dw += Σ dy·x·rstd
static void rmsnorm_backward(real* dinp, real* dw, const real* dout, const real* inp, const real* w, const real* rstd,
                             int N, int C) {
#pragma omp parallel for if ((size_t)N * C >= OMP_MIN_WORK / 8)
    for (int n = 0; n < N; n++) {
        const real* x = inp + (size_t)n * C;
        const real* g = dout + (size_t)n * C;
        real r = rstd[n];
        real s = 0;
        for (int i = 0; i < C; i++) s += g[i] * w[i] * x[i];
        s /= C;
        real* dx = dinp + (size_t)n * C;
        for (int i = 0; i < C; i++) dx[i] += r * (g[i] * w[i] - x[i] * r * r * s);
    }
    for (int n = 0; n < N; n++) {
        const real* x = inp + (size_t)n * C;
        const real* g = dout + (size_t)n * C;
        for (int i = 0; i < C; i++) dw[i] += g[i] * x[i] * rstd[n];
    }
}

// ---------------------------------------------------------------------------------------------------------
// AdaLN modulation: out = xhat·(1 + scale) + shift, scale/shift [C] broadcast over N rows

static void modulate_forward(real* out, const real* xhat, const real* shift, const real* scale, int N, int C) {
    for (size_t n = 0; n < (size_t)N; n++)
        for (int i = 0; i < C; i++) out[n * C + i] = xhat[n * C + i] * (1 + scale[i]) + shift[i];
}

// inverts out = xhat·(1 + scale) + shift
static void modulate_backward(real* dxhat, real* dshift, real* dscale, const real* dout, const real* xhat,
                              const real* scale, int N, int C) {
    for (size_t n = 0; n < (size_t)N; n++)
        for (int i = 0; i < C; i++) {
            real g = dout[n * C + i];
            dxhat[n * C + i] += g * (1 + scale[i]);
            dshift[i] += g;
            dscale[i] += g * xhat[n * C + i];
        }
}

// gated residual: x += y·gate (gate [C] broadcast over N rows)
static void gated_add_forward(real* x, const real* y, const real* gate, int N, int C) {
    for (size_t n = 0; n < (size_t)N; n++)
        for (int i = 0; i < C; i++) x[n * C + i] += y[n * C + i] * gate[i];
}

// inverts x_out = x_in + y·gate: dx_in = dx_out (the caller keeps the same buffer); dy += dx·gate; dgate += Σ dx·y
static void gated_add_backward(real* dy, real* dgate, const real* dx, const real* y, const real* gate, int N, int C) {
    for (size_t n = 0; n < (size_t)N; n++)
        for (int i = 0; i < C; i++) {
            dy[n * C + i] += dx[n * C + i] * gate[i];
            dgate[i] += dx[n * C + i] * y[n * C + i];
        }
}

// ---------------------------------------------------------------------------------------------------------
// activations

#define GELU_K 0.7978845608028654 // sqrt(2/pi)
// gelu_tanh(x) = 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))
static void gelu_forward(real* out, const real* inp, size_t n) {
    for (size_t i = 0; i < n; i++) {
        real x = inp[i];
        out[i] = 0.5 * x * (1 + tanh(GELU_K * (x + 0.044715 * x * x * x)));
    }
}
static void gelu_backward(real* dinp, const real* dout, const real* inp, size_t n) {
    for (size_t i = 0; i < n; i++) {
        real x = inp[i], u = GELU_K * (x + 0.044715 * x * x * x), th = tanh(u);
        real du = GELU_K * (1 + 3 * 0.044715 * x * x);
        dinp[i] += dout[i] * (0.5 * (1 + th) + 0.5 * x * (1 - th * th) * du);
    }
}

// silu(x) = x·σ(x)
static void silu_forward(real* out, const real* inp, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = inp[i] / (1 + exp(-inp[i]));
}
static void silu_backward(real* dinp, const real* dout, const real* inp, size_t n) {
    for (size_t i = 0; i < n; i++) {
        real s = 1 / (1 + exp(-inp[i]));
        dinp[i] += dout[i] * s * (1 + inp[i] * (1 - s));
    }
}

// ---------------------------------------------------------------------------------------------------------
// time sinusoid (official sinusoidal_embedding_1d, in double): out[freq_dim] = [cos(t·ω_k) | sin(t·ω_k)],
// ω_k = 10000^(−k/half), k = 0..half−1. t is the model timestep (1000·σ; the official sampler truncates it).
static void sinusoid_forward(real* out, double t, int freq_dim) {
    int half = freq_dim / 2;
    for (int k = 0; k < half; k++) {
        double a = t * pow(10000.0, -(double)k / half);
        out[k] = cos(a);
        out[half + k] = sin(a);
    }
}

// ---------------------------------------------------------------------------------------------------------
// 3D RoPE, interleaved pairs (x[2j], x[2j+1]), per-axis frequency tables (official Wan2.1 wan/modules/model.py,
// rope_params and rope_apply).
// table cs[L][d/2][2] = (cos θ, sin θ) for token n = (f·Hp + i)·Wp + j.

static void rope_table(real* cs, int Fp, int Hp, int Wp, int head_dim) {
    int c = head_dim / 2, ch = c / 3, cf = c - 2 * ch; // pairs per axis: frame cf, height ch, width ch
    int dt = 2 * cf, dh = 2 * ch;                      // each axis' own sub-dimension in the exponent
    for (int f = 0; f < Fp; f++)
        for (int i = 0; i < Hp; i++)
            for (int j = 0; j < Wp; j++) {
                size_t n = ((size_t)f * Hp + i) * Wp + j;
                for (int p = 0; p < c; p++) {
                    double th;
                    if (p < cf)
                        th = f * pow(10000.0, -2.0 * p / dt);
                    else if (p < cf + ch)
                        th = i * pow(10000.0, -2.0 * (p - cf) / dh);
                    else
                        th = j * pow(10000.0, -2.0 * (p - cf - ch) / dh);
                    cs[(n * c + p) * 2] = cos(th);
                    cs[(n * c + p) * 2 + 1] = sin(th);
                }
            }
}

// rotates each head's pairs: out = x·e^{iθ}; `inverse` rotates by −θ (that is also the backward)
static void rope_apply(real* out, const real* inp, const real* cs, int L, int num_heads, int head_dim, int inverse) {
    int c = head_dim / 2;
    real sgn = inverse ? -1 : 1;
    for (size_t n = 0; n < (size_t)L; n++)
        for (int h = 0; h < num_heads; h++)
            for (int p = 0; p < c; p++) {
                real co = cs[(n * c + p) * 2], si = sgn * cs[(n * c + p) * 2 + 1];
                const real* x = inp + (n * num_heads + h) * head_dim + 2 * p;
                real* y = out + (n * num_heads + h) * head_dim + 2 * p;
                real a = x[0], b = x[1];
                y[0] = a * co - b * si;
                y[1] = a * si + b * co;
            }
}
static void rope_forward(real* out, const real* inp, const real* cs, int L, int H, int d) {
    rope_apply(out, inp, cs, L, H, d, 0);
}
// inverts a rotation: dx += R(−θ)·dy
static void rope_backward(real* dinp, const real* dout, const real* cs, int L, int H, int d) {
    real* tmp = (real*)xmalloc((size_t)L * H * d, sizeof(real), "rope_backward: tmp");
    rope_apply(tmp, dout, cs, L, H, d, 1);
    for (size_t i = 0; i < (size_t)L * H * d; i++) dinp[i] += tmp[i];
    free(tmp);
}

// ---------------------------------------------------------------------------------------------------------
// multi-head attention, non-causal, no mask: out[Nq, H·d] = softmax(q·kᵀ/√d)·v per head.
// q [Nq, H·d], k and v [Nk, H·d] (heads interleaved as in [B, L, H, d]). Saves the probabilities att [H, Nq, Nk].

static void attention_forward(real* out, real* att, const real* q, const real* k, const real* v, int Nq, int Nk, int H,
                              int d) {
    int D = H * d;
    real scale = 1 / sqrt((double)d);
#pragma omp parallel for collapse(2) if ((size_t)H * Nq * Nk * d >= OMP_MIN_WORK)
    for (int h = 0; h < H; h++)
        for (int i = 0; i < Nq; i++) {
            real* a = att + ((size_t)h * Nq + i) * Nk;
            const real* qi = q + (size_t)i * D + h * d;
            real mx = -1e300;
            for (int j = 0; j < Nk; j++) {
                const real* kj = k + (size_t)j * D + h * d;
                real s = 0;
                for (int e = 0; e < d; e++) s += qi[e] * kj[e];
                a[j] = s * scale;
                if (a[j] > mx) mx = a[j];
            }
            real sum = 0;
            for (int j = 0; j < Nk; j++) {
                a[j] = exp(a[j] - mx);
                sum += a[j];
            }
            for (int j = 0; j < Nk; j++) a[j] /= sum;
            real* o = out + (size_t)i * D + h * d;
            for (int e = 0; e < d; e++) o[e] = 0;
            for (int j = 0; j < Nk; j++) {
                const real* vj = v + (size_t)j * D + h * d;
                for (int e = 0; e < d; e++) o[e] += a[j] * vj[e];
            }
        }
}

// inverts o = P·v, P = softmax(S), S = q·kᵀ/√d:
// dv += Pᵀ·do ; dP = do·vᵀ ; dS = P ⊙ (dP − Σ_j P·dP) ; dq += dS·k/√d ; dk += dSᵀ·q/√d
static void attention_backward(real* dq, real* dk, real* dv, const real* dout, const real* att, const real* q,
                               const real* k, const real* v, int Nq, int Nk, int H, int d) {
    int D = H * d;
    real scale = 1 / sqrt((double)d);
    for (int h = 0; h < H; h++) {
        real* dS = (real*)xmalloc((size_t)Nq * Nk, sizeof(real), "attention_backward: dS");
#pragma omp parallel for if ((size_t)Nq * Nk * d >= OMP_MIN_WORK)
        for (int i = 0; i < Nq; i++) {
            const real* a = att + ((size_t)h * Nq + i) * Nk;
            const real* g = dout + (size_t)i * D + h * d;
            real dot = 0;
            for (int j = 0; j < Nk; j++) {
                const real* vj = v + (size_t)j * D + h * d;
                real dp = 0;
                for (int e = 0; e < d; e++) dp += g[e] * vj[e];
                dS[(size_t)i * Nk + j] = dp;
                dot += a[j] * dp;
            }
            for (int j = 0; j < Nk; j++) dS[(size_t)i * Nk + j] = a[j] * (dS[(size_t)i * Nk + j] - dot) * scale;
            real* dqi = dq + (size_t)i * D + h * d;
            for (int j = 0; j < Nk; j++) {
                const real* kj = k + (size_t)j * D + h * d;
                real s = dS[(size_t)i * Nk + j];
                for (int e = 0; e < d; e++) dqi[e] += s * kj[e];
            }
        }
#pragma omp parallel for if ((size_t)Nq * Nk * d >= OMP_MIN_WORK)
        for (int j = 0; j < Nk; j++) {
            real* dkj = dk + (size_t)j * D + h * d;
            real* dvj = dv + (size_t)j * D + h * d;
            for (int i = 0; i < Nq; i++) {
                real s = dS[(size_t)i * Nk + j], p = att[((size_t)h * Nq + i) * Nk + j];
                const real* qi = q + (size_t)i * D + h * d;
                const real* g = dout + (size_t)i * D + h * d;
                for (int e = 0; e < d; e++) {
                    dkj[e] += s * qi[e];
                    dvj[e] += p * g[e];
                }
            }
        }
        free(dS);
    }
}

// ---------------------------------------------------------------------------------------------------------
// patchify / unpatchify for a (pt, ph, pw) patch over a latent [C, T, Hl, Wl]; tokens in order (f, i, j).
// Patch embedding input: p[n][(c·pt + dt)·ph·pw + dh·pw + dw] — channel SLOWEST (Conv3d weight [D, C, pt, ph, pw]).
// Head output:  y[n][((dt·ph + dh)·pw + dw)·C + c]             — channel FASTEST (official unpatchify einsum).

static void patchify_forward(real* p, const real* x, int C, int T, int Hl, int Wl, int pt, int ph, int pw) {
    int Fp = T / pt, Hp = Hl / ph, Wp = Wl / pw, P = C * pt * ph * pw;
    for (int f = 0; f < Fp; f++)
        for (int i = 0; i < Hp; i++)
            for (int j = 0; j < Wp; j++) {
                real* row = p + (((size_t)f * Hp + i) * Wp + j) * P;
                for (int c = 0; c < C; c++)
                    for (int a = 0; a < pt; a++)
                        for (int b = 0; b < ph; b++)
                            for (int e = 0; e < pw; e++)
                                row[((c * pt + a) * ph + b) * pw + e] =
                                    x[(((size_t)c * T + f * pt + a) * Hl + i * ph + b) * Wl + j * pw + e];
            }
}
// inverts the gather: dx += scatter(dp)
static void patchify_backward(real* dx, const real* dp, int C, int T, int Hl, int Wl, int pt, int ph, int pw) {
    int Fp = T / pt, Hp = Hl / ph, Wp = Wl / pw, P = C * pt * ph * pw;
    for (int f = 0; f < Fp; f++)
        for (int i = 0; i < Hp; i++)
            for (int j = 0; j < Wp; j++) {
                const real* row = dp + (((size_t)f * Hp + i) * Wp + j) * P;
                for (int c = 0; c < C; c++)
                    for (int a = 0; a < pt; a++)
                        for (int b = 0; b < ph; b++)
                            for (int e = 0; e < pw; e++)
                                dx[(((size_t)c * T + f * pt + a) * Hl + i * ph + b) * Wl + j * pw + e] +=
                                    row[((c * pt + a) * ph + b) * pw + e];
            }
}

static void unpatchify_forward(real* x, const real* y, int C, int T, int Hl, int Wl, int pt, int ph, int pw) {
    int Fp = T / pt, Hp = Hl / ph, Wp = Wl / pw, P = C * pt * ph * pw;
    for (int f = 0; f < Fp; f++)
        for (int i = 0; i < Hp; i++)
            for (int j = 0; j < Wp; j++) {
                const real* row = y + (((size_t)f * Hp + i) * Wp + j) * P;
                for (int a = 0; a < pt; a++)
                    for (int b = 0; b < ph; b++)
                        for (int e = 0; e < pw; e++)
                            for (int c = 0; c < C; c++)
                                x[(((size_t)c * T + f * pt + a) * Hl + i * ph + b) * Wl + j * pw + e] =
                                    row[((a * ph + b) * pw + e) * C + c];
            }
}
// inverts the scatter: dy += gather(dx)
static void unpatchify_backward(real* dy, const real* dx, int C, int T, int Hl, int Wl, int pt, int ph, int pw) {
    int Fp = T / pt, Hp = Hl / ph, Wp = Wl / pw, P = C * pt * ph * pw;
    for (int f = 0; f < Fp; f++)
        for (int i = 0; i < Hp; i++)
            for (int j = 0; j < Wp; j++) {
                real* row = dy + (((size_t)f * Hp + i) * Wp + j) * P;
                for (int a = 0; a < pt; a++)
                    for (int b = 0; b < ph; b++)
                        for (int e = 0; e < pw; e++)
                            for (int c = 0; c < C; c++)
                                row[((a * ph + b) * pw + e) * C + c] +=
                                    dx[(((size_t)c * T + f * pt + a) * Hl + i * ph + b) * Wl + j * pw + e];
            }
}

// ---------------------------------------------------------------------------------------------------------
// Conv3D, kernel k×k×k, stride 1, zero padding k/2, on channels-last tokens: inp [F·H·W, IC] in (f, i, j) order,
// out [F·H·W, OC]; weight [OC, IC, k, k, k] (PyTorch Conv3d layout), bias [OC]. Used by the discriminator heads
// on unpatchified teacher features.

static void conv3d_forward(real* out, const real* inp, const real* w, const real* b, int F, int H, int W, int IC,
                           int OC, int k) {
    int p = k / 2;
#pragma omp parallel for collapse(2) if ((size_t)F * H * W * IC * OC * k * k * k >= OMP_MIN_WORK)
    for (int f = 0; f < F; f++)
        for (int i = 0; i < H; i++)
            for (int j = 0; j < W; j++) {
                real* o = out + (((size_t)f * H + i) * W + j) * OC;
                for (int oc = 0; oc < OC; oc++) o[oc] = b ? b[oc] : 0;
                for (int df = 0; df < k; df++)
                    for (int di = 0; di < k; di++)
                        for (int dj = 0; dj < k; dj++) {
                            int ff = f + df - p, ii = i + di - p, jj = j + dj - p;
                            if (ff < 0 || ff >= F || ii < 0 || ii >= H || jj < 0 || jj >= W) continue;
                            const real* x = inp + (((size_t)ff * H + ii) * W + jj) * IC;
                            for (int oc = 0; oc < OC; oc++) {
                                const real* wr = w + (size_t)oc * IC * k * k * k + (df * k + di) * k + dj;
                                real acc = 0;
                                for (int ic = 0; ic < IC; ic++) acc += wr[(size_t)ic * k * k * k] * x[ic];
                                o[oc] += acc;
                            }
                        }
            }
}

// inverts out = conv(inp, w) + b: dinp += convᵀ(dout); dw += dout ⊗ patches; db += Σ dout   (dinp may be NULL)
static void conv3d_backward(real* dinp, real* dw, real* db, const real* dout, const real* inp, const real* w, int F,
                            int H, int W, int IC, int OC, int k) {
    int p = k / 2;
    for (int f = 0; f < F; f++)
        for (int i = 0; i < H; i++)
            for (int j = 0; j < W; j++) {
                const real* g = dout + (((size_t)f * H + i) * W + j) * OC;
                for (int oc = 0; oc < OC; oc++) db[oc] += g[oc];
                for (int df = 0; df < k; df++)
                    for (int di = 0; di < k; di++)
                        for (int dj = 0; dj < k; dj++) {
                            int ff = f + df - p, ii = i + di - p, jj = j + dj - p;
                            if (ff < 0 || ff >= F || ii < 0 || ii >= H || jj < 0 || jj >= W) continue;
                            size_t n = ((size_t)ff * H + ii) * W + jj;
                            const real* x = inp + n * IC;
                            real* dx = dinp ? dinp + n * IC : NULL;
                            for (int oc = 0; oc < OC; oc++) {
                                size_t base = (size_t)oc * IC * k * k * k + (df * k + di) * k + dj;
                                real go = g[oc];
                                for (int ic = 0; ic < IC; ic++) {
                                    dw[base + (size_t)ic * k * k * k] += go * x[ic];
                                    if (dx) dx[ic] += go * w[base + (size_t)ic * k * k * k];
                                }
                            }
                        }
            }
}
