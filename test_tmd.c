// test_tmd.c: the CPU reference's driver and the project's tests. Plain C, double precision.
//   ./test_tmd                 run every test (what `make test` does); ends with "N passed, N failed"
//   ./test_tmd forward ...     the CPU forward of a checkpoint on .npy inputs (debugging real weights)
//   ./test_tmd presets         print every preset's config and parameter count
//   ./test_tmd world ...       the built-in world: generate data, contact sheets, scoring
//   ./test_tmd distill ...     the whole method in the tiny world;  ./test_tmd ablate ...  the paper's claims in miniature
#define WAN_REAL double
#include "wan.h"                // config, presets, parameter layout, safetensors weights I/O
#include "cpu/wan_cpu.h"        // the CPU reference DiT: forward and backward
#include "lib/npy.h"            // .npy float32 I/O
#include "lib/rng.h"            // deterministic random numbers
#include "lib/testing.h"        // EXPECT, expect_close_d
#include "lib/io_tests.h"       // safetensors and npy tests, corrupt-input cases
#include "cpu/teacher_tests.h"  // the teacher: flow matching, AdamW, Euler and UniPC sampling with CFG
#include "cpu/tmd_tests.h"      // TMD on the CPU: student, inner flow, TM-MF, DMD2-v (and cpu/distill_cpu.h itself)
#include "world/world_tests.h"  // the built-in world's tests (and world.h, text.h, score.h, png.h)
#include "world/world_cli.h"    // ./test_tmd world gen | sheet | score | render | encode
#include "cpu/distill_run.h"    // the whole method on the CPU in the tiny world: teacher, TM-MF, DMD2-v, table
#include "cpu/ablate.h"         // the paper's claims in miniature: ./test_tmd ablate
#include "lib/flags.h"          // flag tables: parser and usage from one place
#include "gpu/host_tests.h"     // the GPU programs' plain-C pieces: VBench suite logic, memory plan
#include <time.h>

static const char* TMPDIR_ = "/tmp";
static char test_tmpdir[512];

static double now_s(void) { struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts); return ts.tv_sec + 1e-9 * ts.tv_nsec; }

static void fill_normal(double* p, size_t n, Rng* r, double mean, double std) { for (size_t i = 0; i < n; i++) p[i] = mean + std * rng_normal(r); }

// random parameters of a sensible scale with no trivial 0 or 1, so a dropped or swapped term changes the output
static void random_params(const WanConfig* c, double* buf, uint64_t seed) {
    Rng r = rng_make(seed);
    WanTensor* tl = (WanTensor*)malloc(sizeof(WanTensor) * WAN_MAX_TENSORS);
    int nt = wan_layout(c, tl, NULL, NULL, NULL);
    for (int i = 0; i < nt; i++) {
        const WanTensor* t = &tl[i];
        double* p = buf + t->offset;
        if (strstr(t->name, "modulation")) fill_normal(p, t->numel, &r, 0, 0.3);
        else if (strstr(t->name, "norm")) fill_normal(p, t->numel, &r, 1, 0.1);   // norm_q, norm_k, norm3 weight (norm3.bias below)
        else if (t->ndim == 1) fill_normal(p, t->numel, &r, 0, 0.1);
        else { size_t fan_in = t->numel / (size_t)t->shape[0]; fill_normal(p, t->numel, &r, 0, 1.0 / sqrt((double)fan_in)); }
        if (strstr(t->name, "norm3.bias")) fill_normal(p, t->numel, &r, 0, 0.1);
    }
    free(tl);
}

// =========================================================================================================
// presets

static void test_presets(void) {
    printf("\n[presets] parameter counts\n");
    const char* names[] = {"wan2.1-t2v-1.3b", "wan2.1-t2v-14b"};
    size_t want[] = {1418996800ull, 14288491584ull};
    int want_tensors[] = {825, 1095};
    for (int i = 0; i < 2; i++) {
        WanConfig c; char err[ST_ERRLEN];
        EXPECT(wan_preset(&c, names[i], err) == 0, "%s", err);
        size_t n = wan_num_params(&c);
        int nt = wan_layout(&c, NULL, NULL, NULL, NULL);
        printf("  %-18s ", names[i]); wan_print_count(&c, stdout);
        EXPECT(n == want[i], "%s: %zu parameters, expected %zu", names[i], n, want[i]);
        EXPECT(nt == want_tensors[i], "%s: %d tensors, expected %d", names[i], nt, want_tensors[i]);
    }
    for (int i = 0; i < WAN_NUM_PRESETS; i++) { char err[ST_ERRLEN]; EXPECT(wan_config_check(&WAN_PRESETS[i].c, err) == 0, "%s", err); }
    WanConfig c; char err[ST_ERRLEN];
    EXPECT(wan_preset(&c, "wan2.1-t2v-7b", err) != 0 && strstr(err, "wan2.1-t2v-1.3b"), "unknown preset message: %s", err);
    printf("  unknown preset -> %s\n", err);
}

// =========================================================================================================
// layer gradient checks: loss = Σ out·g, analytic backward vs central differences (h = 1e-5, double)

static double dot(const double* a, const double* b, size_t n) { double s = 0; for (size_t i = 0; i < n; i++) s += a[i] * b[i]; return s; }
static double* dalloc(size_t n) { return (double*)calloc(n ? n : 1, sizeof(double)); }
static double* drandn(size_t n, Rng* r, double std) { double* p = dalloc(n); fill_normal(p, n, r, 0, std); return p; }

enum { L_LINEAR, L_LAYERNORM, L_LAYERNORM_AFFINE, L_RMSNORM, L_MODULATE, L_GELU, L_SILU, L_ROPE, L_ATTENTION, L_PATCHIFY, L_UNPATCHIFY };

typedef struct {
    int kind, N, C, OC, Nk, H, d;       // sizes
    int T, Hl, Wl;                      // for rope / patchify
    double *x, *w, *b, *k, *v, *g;      // inputs, weights, cotangent
    double *out, *s1, *s2, *att, *rope;  // outputs and saved statistics
    size_t nout;
} LayerCase;

static double layer_loss(void* p) {
    LayerCase* L = (LayerCase*)p;
    switch (L->kind) {
    case L_LINEAR: linear_forward(L->out, L->x, L->w, L->b, L->N, L->C, L->OC); break;
    case L_LAYERNORM: layernorm_forward(L->out, L->s1, L->s2, L->x, NULL, NULL, L->N, L->C, 1e-6); break;
    case L_LAYERNORM_AFFINE: layernorm_forward(L->out, L->s1, L->s2, L->x, L->w, L->b, L->N, L->C, 1e-6); break;
    case L_RMSNORM: rmsnorm_forward(L->out, L->s1, L->x, L->w, L->N, L->C, 1e-6); break;
    case L_MODULATE: modulate_forward(L->out, L->x, L->b, L->w, L->N, L->C); break;
    case L_GELU: gelu_forward(L->out, L->x, (size_t)L->N * L->C); break;
    case L_SILU: silu_forward(L->out, L->x, (size_t)L->N * L->C); break;
    case L_ROPE: rope_forward(L->out, L->x, L->rope, L->N, L->H, L->d); break;
    case L_ATTENTION: attention_forward(L->out, L->att, L->x, L->k, L->v, L->N, L->Nk, L->H, L->d); break;
    case L_PATCHIFY: patchify_forward(L->out, L->x, L->C, L->T, L->Hl, L->Wl, 1, 2, 2); break;
    case L_UNPATCHIFY: unpatchify_forward(L->out, L->x, L->C, L->T, L->Hl, L->Wl, 1, 2, 2); break;
    }
    return dot(L->out, L->g, L->nout);
}

static void test_layer_grads(void) {
    printf("\n[gradcheck] layers: analytic backward vs central differences (double, h=%g)\n", GC_H);
    Rng r = rng_make(7);
    const char* names[] = {"linear", "layernorm (no affine)", "layernorm (affine)", "rmsnorm", "modulate", "gelu_tanh", "silu",
                           "rope3d", "attention", "patchify", "unpatchify"};
    for (int kind = L_LINEAR; kind <= L_UNPATCHIFY; kind++) {
        LayerCase L; memset(&L, 0, sizeof(L));
        L.kind = kind; L.N = 5; L.C = 12; L.OC = 7; L.Nk = 6; L.H = 2; L.d = 12; L.T = 2; L.Hl = 4; L.Wl = 6;
        size_t nx = (size_t)L.N * L.C;
        if (kind == L_ROPE || kind == L_ATTENTION) { L.C = L.H * L.d; nx = (size_t)L.N * L.C; }
        if (kind == L_ROPE) { L.N = L.T * (L.Hl / 2) * (L.Wl / 2); nx = (size_t)L.N * L.C;
                              L.rope = dalloc((size_t)L.N * L.d); rope_table(L.rope, L.T, L.Hl / 2, L.Wl / 2, L.d); }
        if (kind == L_PATCHIFY || kind == L_UNPATCHIFY) { L.C = 3; nx = (size_t)L.C * L.T * L.Hl * L.Wl; }
        L.x = drandn(nx, &r, 1.0);
        if (kind == L_GELU || kind == L_SILU) for (size_t i = 0; i < nx; i++) L.x[i] *= 2.5;  // cover the tails
        L.w = drandn(kind == L_LINEAR ? (size_t)L.OC * L.C : (size_t)L.C, &r, 0.5);
        if (kind != L_LINEAR) for (int i = 0; i < L.C; i++) L.w[i] += 1;
        L.b = drandn(kind == L_LINEAR ? L.OC : L.C, &r, 0.5);
        L.k = drandn((size_t)L.Nk * L.C, &r, 1.0); L.v = drandn((size_t)L.Nk * L.C, &r, 1.0);
        L.nout = kind == L_LINEAR ? (size_t)L.N * L.OC : nx;
        L.out = dalloc(L.nout); L.g = drandn(L.nout, &r, 1.0);
        L.s1 = dalloc(L.N); L.s2 = dalloc(L.N); L.att = dalloc((size_t)L.H * L.N * L.Nk);
        layer_loss(&L);  // forward, saving statistics for the backward
        double* dx = dalloc(nx); double* dw = dalloc(kind == L_LINEAR ? (size_t)L.OC * L.C : (size_t)L.C);
        double* db = dalloc(kind == L_LINEAR ? L.OC : L.C);
        double* dk = dalloc((size_t)L.Nk * L.C); double* dv = dalloc((size_t)L.Nk * L.C);
        int has_w = 0, has_b = 0, has_kv = 0;
        switch (kind) {
        case L_LINEAR: linear_backward(dx, dw, db, L.g, L.x, L.w, L.N, L.C, L.OC); has_w = has_b = 1; break;
        case L_LAYERNORM: layernorm_backward(dx, NULL, NULL, L.g, L.x, NULL, L.s1, L.s2, L.N, L.C); break;
        case L_LAYERNORM_AFFINE: layernorm_backward(dx, dw, db, L.g, L.x, L.w, L.s1, L.s2, L.N, L.C); has_w = has_b = 1; break;
        case L_RMSNORM: rmsnorm_backward(dx, dw, L.g, L.x, L.w, L.s1, L.N, L.C); has_w = 1; break;
        case L_MODULATE: modulate_backward(dx, db, dw, L.g, L.x, L.w, L.N, L.C); has_w = has_b = 1; break;
        case L_GELU: gelu_backward(dx, L.g, L.x, nx); break;
        case L_SILU: silu_backward(dx, L.g, L.x, nx); break;
        case L_ROPE: rope_backward(dx, L.g, L.rope, L.N, L.H, L.d); break;
        case L_ATTENTION: attention_backward(dx, dk, dv, L.g, L.att, L.x, L.k, L.v, L.N, L.Nk, L.H, L.d); has_kv = 1; break;
        case L_PATCHIFY: patchify_backward(dx, L.g, L.C, L.T, L.Hl, L.Wl, 1, 2, 2); break;
        case L_UNPATCHIFY: unpatchify_backward(dx, L.g, L.C, L.T, L.Hl, L.Wl, 1, 2, 2); break;
        }
        char nm[96];
        snprintf(nm, sizeof(nm), "%s d(input)", names[kind]); gradcheck(nm, L.x, (long)nx, dx, layer_loss, &L, 400);
        if (has_w) { snprintf(nm, sizeof(nm), "%s d(weight%s)", names[kind], kind == L_MODULATE ? "=scale" : "");
                     gradcheck(nm, L.w, kind == L_LINEAR ? (long)L.OC * L.C : L.C, dw, layer_loss, &L, 400); }
        if (has_b) { snprintf(nm, sizeof(nm), "%s d(bias%s)", names[kind], kind == L_MODULATE ? "=shift" : "");
                     gradcheck(nm, L.b, kind == L_LINEAR ? L.OC : L.C, db, layer_loss, &L, 400); }
        if (has_kv) { snprintf(nm, sizeof(nm), "%s d(key)", names[kind]); gradcheck(nm, L.k, (long)L.Nk * L.C, dk, layer_loss, &L, 400);
                      snprintf(nm, sizeof(nm), "%s d(value)", names[kind]); gradcheck(nm, L.v, (long)L.Nk * L.C, dv, layer_loss, &L, 400); }
        free(L.x); free(L.w); free(L.b); free(L.k); free(L.v); free(L.out); free(L.g); free(L.s1); free(L.s2); free(L.att); free(L.rope);
        free(dx); free(dw); free(db); free(dk); free(dv);
    }
}

// the tolerance is not a formality: a deliberately broken backward (wrong sign of one term) must fail it
static void test_gradcheck_catches_bugs(void) {
    printf("\n[gradcheck] a broken backward must fail the same tolerance\n");
    Rng r = rng_make(11);
    int N = 4, C = 10;
    LayerCase L; memset(&L, 0, sizeof(L));
    L.kind = L_LAYERNORM; L.N = N; L.C = C; L.nout = (size_t)N * C;
    L.x = drandn(L.nout, &r, 1); L.g = drandn(L.nout, &r, 1); L.out = dalloc(L.nout); L.s1 = dalloc(N); L.s2 = dalloc(N);
    layer_loss(&L);
    double* dx = dalloc(L.nout);
    // layernorm backward with the xhat·mean(dxhat·xhat) term's sign flipped
    for (int n = 0; n < N; n++) {
        double s1 = 0, s2 = 0;
        for (int i = 0; i < C; i++) { double xh = (L.x[n * C + i] - L.s1[n]) * L.s2[n]; s1 += L.g[n * C + i]; s2 += L.g[n * C + i] * xh; }
        s1 /= C; s2 /= C;
        for (int i = 0; i < C; i++) { double xh = (L.x[n * C + i] - L.s1[n]) * L.s2[n]; dx[n * C + i] = L.s2[n] * (L.g[n * C + i] - s1 + xh * s2); }
    }
    long m = (long)L.nout; double* num = dalloc(m);
    for (long i = 0; i < m; i++) { double x0 = L.x[i]; L.x[i] = x0 + GC_H; double fp = layer_loss(&L); L.x[i] = x0 - GC_H; double fm = layer_loss(&L); L.x[i] = x0; num[i] = (fp - fm) / (2 * GC_H); }
    double maxrel = 0, maxb = 0;
    for (long i = 0; i < m; i++) maxb = fmax(maxb, fabs(num[i]));
    for (long i = 0; i < m; i++) maxrel = fmax(maxrel, fabs(dx[i] - num[i]) / fmax(fabs(num[i]), 1e-3 * maxb));
    printf("  layernorm with one sign flipped: max rel %.3e vs tol %.0e -> %s\n", maxrel, GC_TOL, maxrel > GC_TOL ? "caught" : "MISSED");
    EXPECT(maxrel > 1e3 * GC_TOL, "a sign bug gave max rel %.3e, not far above tol %.0e", maxrel, GC_TOL);
    free(L.x); free(L.g); free(L.out); free(L.s1); free(L.s2); free(dx); free(num);
}

// =========================================================================================================
// whole-model gradient check on the tiny preset at a small non-square grid

typedef struct { WanAct* act; WanParams* P; double* x; double* ctx; int Lt; double t; double* g; size_t nout; } ModelCase;

static double model_loss(void* p) {
    ModelCase* m = (ModelCase*)p;
    wan_forward(m->act, m->P, m->x, m->t, m->ctx, m->Lt);
    return dot(m->act->out, m->g, m->nout);
}

static void test_model_grads(void) {
    WanConfig c; char err[ST_ERRLEN];
    wan_preset(&c, "tiny", err);
    c.num_layers = 2;  // two blocks suffice to exercise block-to-block gradients; keeps the check fast
    c.dim = 32; c.num_heads = 2; c.ffn_dim = 48; c.patch[1] = c.patch[2] = 2;  // (1, 2, 2) as Wan, head dim 16
    printf("\n[gradcheck] whole model '%s' (%d layers, D %d, %d heads): every parameter tensor, latent and context\n", c.name, c.num_layers, c.dim, c.num_heads);
    size_t np = wan_num_params(&c);
    double* buf = dalloc(np); double* gbuf = dalloc(np);
    random_params(&c, buf, 1234);
    WanParams P, dP; wan_carve(&c, &P, buf); wan_carve(&c, &dP, gbuf);
    WanGrid g; EXPECT(wan_grid(&g, &c, 3, 2, 4, 6, err) == 0, "%s", err);
    WanAct act; wan_act_init(&act, &c, &g);
    Rng r = rng_make(99);
    size_t nx = (size_t)3 * 2 * 4 * 6; int Lt = 5;
    ModelCase m = {&act, &P, drandn(nx, &r, 1), drandn((size_t)Lt * c.text_dim, &r, 1), Lt, 731.0, NULL, nx};
    m.g = drandn(nx, &r, 1);
    model_loss(&m);
    double* dx = dalloc(nx); double* dctx = dalloc((size_t)Lt * c.text_dim);
    wan_backward(&dP, dx, dctx, m.g, &act, &P);
    gradcheck("latent x", m.x, (long)nx, dx, model_loss, &m, 24);
    gradcheck("context (caption rows)", m.ctx, (long)Lt * c.text_dim, dctx, model_loss, &m, 24);
    WanTensor* tl = (WanTensor*)malloc(sizeof(WanTensor) * WAN_MAX_TENSORS);
    int nt = wan_layout(&c, tl, NULL, NULL, NULL);
    for (int i = 0; i < nt; i++) gradcheck(tl[i].name, buf + tl[i].offset, (long)tl[i].numel, gbuf + tl[i].offset, model_loss, &m, 12);
    free(tl); free(buf); free(gbuf); free(m.x); free(m.ctx); free(m.g); free(dx); free(dctx);
    wan_act_free(&act);
}

// =========================================================================================================
// names and weights I/O of whole models

// writes c's tensors from buf under official names, leaving out `drop` and transposing the shape of `reshape`
static void write_variant(const char* path, const WanConfig* c, const double* buf, const char* drop, const char* reshape) {
    WanTensor* tl = (WanTensor*)malloc(sizeof(WanTensor) * WAN_MAX_TENSORS);
    int nt = wan_layout(c, tl, NULL, NULL, NULL), n = 0;
    StOut* o = (StOut*)calloc((size_t)nt, sizeof(StOut));
    for (int i = 0; i < nt; i++) {
        if (drop && !strcmp(tl[i].name, drop)) continue;
        o[n].name = tl[i].name; o[n].ndim = tl[i].ndim; o[n].f64 = buf + tl[i].offset;
        for (int d = 0; d < tl[i].ndim; d++) o[n].shape[d] = tl[i].shape[d];
        if (reshape && !strcmp(tl[i].name, reshape)) { o[n].shape[0] = tl[i].shape[1]; o[n].shape[1] = tl[i].shape[0]; }
        n++;
    }
    char err[ST_ERRLEN], heads[16], tl_[16];
    snprintf(heads, sizeof(heads), "%d", c->num_heads); snprintf(tl_, sizeof(tl_), "%d", c->text_len);
    const char* meta[] = {"num_heads", heads, "text_len", tl_};
    EXPECT(st_write(path, o, n, meta, 2, err) == 0, "%s", err);
    free(o); free(tl);
}

static void test_names_and_roundtrip(void) {
    printf("\n[weights] official <-> diffusers names, save/load round trip, bad checkpoints\n");
    WanConfig c; char err[ST_ERRLEN];
    wan_preset(&c, "tiny", err);
    // every official name passes through unchanged; a few diffusers names map to their official twins
    WanTensor* tl = (WanTensor*)malloc(sizeof(WanTensor) * WAN_MAX_TENSORS);
    int nt = wan_layout(&c, tl, NULL, NULL, NULL), same = 1;
    char out[128];
    for (int i = 0; i < nt; i++) { wan_canonical_name(tl[i].name, out, sizeof(out)); same &= strcmp(out, tl[i].name) == 0; }
    EXPECT(same, "an official name was rewritten");
    const char* pairs[][2] = {
        {"blocks.3.attn1.to_out.0.weight", "blocks.3.self_attn.o.weight"}, {"blocks.0.norm2.bias", "blocks.0.norm3.bias"},
        {"blocks.12.ffn.net.0.proj.weight", "blocks.12.ffn.0.weight"}, {"scale_shift_table", "head.modulation"},
        {"blocks.1.scale_shift_table", "blocks.1.modulation"}, {"condition_embedder.time_proj.bias", "time_projection.1.bias"},
        {"proj_out.weight", "head.head.weight"}, {"model.diffusion_model.blocks.2.cross_attn.norm_k.weight", "blocks.2.cross_attn.norm_k.weight"},
        {"blocks.0.attn2.norm_q.weight", "blocks.0.cross_attn.norm_q.weight"}};
    for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
        wan_canonical_name(pairs[i][0], out, sizeof(out));
        EXPECT(strcmp(out, pairs[i][1]) == 0, "%s -> %s, expected %s", pairs[i][0], out, pairs[i][1]);
    }
    printf("  name mapping: %d official names unchanged, %zu diffusers/prefixed names mapped\n", nt, sizeof(pairs) / sizeof(pairs[0]));
    // round trip through safetensors with the config in the metadata
    size_t np = wan_num_params(&c);
    double* buf = dalloc(np);
    random_params(&c, buf, 5);
    char path[600]; snprintf(path, sizeof(path), "%s/tiny_roundtrip.safetensors", test_tmpdir);
    EXPECT(wan_save(path, &c, buf, NULL, 0, err) == 0, "save: %s", err);
    WanConfig c2; memset(&c2, 0, sizeof(c2));
    double* buf2 = NULL;
    EXPECT(wan_load(path, &c2, 0, 0, &buf2, err) == 0, "load: %s", err);
    if (buf2) {
        double maxd = 0; for (size_t i = 0; i < np; i++) maxd = fmax(maxd, fabs(buf2[i] - (double)(float)buf[i]));
        printf("  round trip of %zu parameters (written as F32): max diff %.1e, config heads %d, text_len %d\n", np, maxd, c2.num_heads, c2.text_len);
        EXPECT(maxd == 0, "round trip changed values by %.3e", maxd);
        EXPECT(c2.num_heads == c.num_heads && c2.text_len == c.text_len && c2.num_layers == c.num_layers && c2.freq_dim == c.freq_dim,
               "inferred config differs from the saved one");
        free(buf2); buf2 = NULL;
    }
    // a checkpoint that contradicts the expected config
    WanConfig wrong = c; wrong.ffn_dim = 96;
    int rc = wan_load(path, &wrong, 0, 0, &buf2, err);
    printf("  config mismatch -> %s\n", rc ? err : "(accepted!)");
    EXPECT(rc != 0 && strstr(err, "ffn_dim") && strstr(err, "128") && strstr(err, "96"), "mismatch message: %s", err);
    // a missing tensor: save a model with one layer fewer but claim the full config
    WanConfig shallow = c; shallow.num_layers = c.num_layers - 1;
    snprintf(path, sizeof(path), "%s/tiny_missing.safetensors", test_tmpdir);
    wan_save(path, &shallow, buf, NULL, 0, err);
    rc = wan_load(path, &c, 0, 0, &buf2, err);
    printf("  fewer layers than the config -> %s\n", rc ? err : "(accepted!)");
    EXPECT(rc != 0 && strstr(err, "num_layers"), "message: %s", err);
    // a tensor missing from an otherwise complete checkpoint, and a tensor whose shape contradicts the config
    snprintf(path, sizeof(path), "%s/tiny_drop.safetensors", test_tmpdir);
    write_variant(path, &c, buf, "blocks.2.cross_attn.norm_k.weight", NULL);
    rc = wan_load(path, &c, 0, 0, &buf2, err);
    printf("  missing tensor -> %s\n", rc ? err : "(accepted!)");
    EXPECT(rc != 0 && strstr(err, "blocks.2.cross_attn.norm_k.weight") && strstr(err, "missing"), "message: %s", err);
    snprintf(path, sizeof(path), "%s/tiny_shape.safetensors", test_tmpdir);
    write_variant(path, &c, buf, NULL, "blocks.1.ffn.2.weight");
    rc = wan_load(path, &c, 0, 0, &buf2, err);
    printf("  contradicting shape -> %s\n", rc ? err : "(accepted!)");
    EXPECT(rc != 0 && strstr(err, "blocks.1.ffn.2.weight") && strstr(err, "[128, 64]") && strstr(err, "[64, 128]"), "message: %s", err);
    // a checkpoint that is not a Wan DiT at all
    StOut o[2]; memset(o, 0, sizeof(o));
    float dummy[64 * 48];
    for (int i = 0; i < 64 * 48; i++) dummy[i] = 0.5f;
    o[0].name = "patch_embedding.weight"; o[0].ndim = 5; o[0].shape[0] = 64; o[0].shape[1] = 3; o[0].shape[2] = 1; o[0].shape[3] = 4; o[0].shape[4] = 4; o[0].f32 = dummy;
    o[1].name = "head.head.weight"; o[1].ndim = 2; o[1].shape[0] = 48; o[1].shape[1] = 64; o[1].f32 = dummy;
    snprintf(path, sizeof(path), "%s/tiny_partial.safetensors", test_tmpdir);
    st_write(path, o, 2, NULL, 0, err);
    rc = wan_load(path, &c, 0, 0, &buf2, err);
    printf("  checkpoint without text/time embeddings -> %s\n", rc ? err : "(accepted!)");
    EXPECT(rc != 0 && strstr(err, "text_embedding.0.weight"), "message: %s", err);
    free(buf); free(tl);
}

// =========================================================================================================
// peer check against diffusers' WanTransformer3DModel (vectors made by dev/peer/make_wan_vectors.py)

#define PEER_DIR "dev/peer/vectors"

static double* read_npy_d(const char* name, int ndim, const int64_t* shape, size_t* n_out) {
    char path[512], err[ST_ERRLEN]; snprintf(path, sizeof(path), "%s/%s", PEER_DIR, name);
    float* f = NULL;
    if (npy_read_shape(path, &f, ndim, shape, err)) { EXPECT(0, "%s", err); return NULL; }
    size_t n = 1; for (int i = 0; i < ndim; i++) n *= (size_t)shape[i];
    double* d = dalloc(n); for (size_t i = 0; i < n; i++) d[i] = f[i];
    free(f); if (n_out) *n_out = n;
    return d;
}

// float -> bfloat16 -> float with round-to-nearest-even (what torch's .to(torch.bfloat16) does)
static double bf16_round(double v) {
    float f = (float)v; uint32_t u; memcpy(&u, &f, 4);
    u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000u;
    memcpy(&f, &u, 4); return f;
}

static void test_peer_diffusers(void) {
    printf("\n[peer] CPU forward and backward vs diffusers WanTransformer3DModel (%s)\n", PEER_DIR);
    const char* files[] = {"wan_tiny_official.safetensors", "wan_tiny_diffusers.safetensors", "wan_tiny_comfy_bf16"};
    int64_t xs[4] = {16, 2, 6, 10}, cs[2] = {5, 32};
    size_t nx, nc;
    double* x = read_npy_d("x.npy", 4, xs, &nx);
    double* ctx = read_npy_d("context.npy", 2, cs, &nc);
    double* v32 = read_npy_d("v_fp32.npy", 4, xs, NULL);
    double* g = read_npy_d("g.npy", 4, xs, NULL);
    char path[512]; snprintf(path, sizeof(path), "%s/timestep.txt", PEER_DIR);
    FILE* tf = fopen(path, "r"); double t = -1;
    EXPECT(tf && fscanf(tf, "%lf", &t) == 1, "cannot read %s", path);
    if (tf) fclose(tf);
    if (!x || !ctx || !v32 || !g || t < 0) { printf("  peer vectors missing: run dev/peer/make_wan_vectors.py (see dev/peer/README.md)\n"); return; }
    double* f32_weights = NULL;
    for (int fi = 0; fi < 3; fi++) {
        char err[ST_ERRLEN]; snprintf(path, sizeof(path), "%s/%s", PEER_DIR, files[fi]);
        WanConfig c; memset(&c, 0, sizeof(c)); double* buf = NULL;
        if (wan_load(path, &c, 2, 16, &buf, err)) { EXPECT(0, "%s", err); continue; }
        if (fi == 0) { free(f32_weights); f32_weights = dalloc(wan_num_params(&c)); memcpy(f32_weights, buf, sizeof(double) * wan_num_params(&c)); }
        if (fi == 2 && f32_weights) {  // the BF16 shards must load to exactly the F32 weights rounded to bfloat16 (nearest even)
            size_t np = wan_num_params(&c), bad = 0;
            for (size_t i = 0; i < np; i++) if (buf[i] != bf16_round(f32_weights[i])) bad++;
            printf("  bf16 shards with model.diffusion_model. prefix: %zu of %zu weights differ from bf16(F32 weights)\n", bad, np);
            EXPECT(bad == 0, "%zu weights differ", bad);
        }
        WanParams P; wan_carve(&c, &P, buf);
        WanGrid gr; wan_grid(&gr, &c, 16, 2, 6, 10, err);
        WanAct act; wan_act_init(&act, &c, &gr);
        wan_forward(&act, &P, x, t, ctx, 5);
        char nm[128];
        if (fi < 2) {
            snprintf(nm, sizeof(nm), "forward, %s vs fp32", files[fi]);
            expect_close_scaled(nm, act.out, v32, (long)nx, 1e-5);
        } else {  // bf16 weights: the loader must convert exactly; the output moves by bf16 rounding only
            snprintf(nm, sizeof(nm), "forward, bf16 shards vs fp32 (bf16 tolerance)");
            expect_close_scaled(nm, act.out, v32, (long)nx, 2e-2);
        }
        if (fi == 0) {  // the double-precision reference against diffusers run in true float64: forward and backward
            StFile rf;
            snprintf(path, sizeof(path), "%s/reference_f64.safetensors", PEER_DIR);
            if (st_open(&rf, path, err)) { EXPECT(0, "%s", err); }
            else {
                const StTensor *tv = st_find(&rf, "v"), *tgx = st_find(&rf, "grad_x"), *tgc = st_find(&rf, "grad_context");
                EXPECT(tv && tgx && tgc && (size_t)tv->numel == nx && (size_t)tgx->numel == nx && (size_t)tgc->numel == nc,
                       "%s: expected tensors v, grad_x, grad_context of %zu, %zu, %zu elements", path, nx, nx, nc);
                if (tv && tgx && tgc && (size_t)tv->numel == nx && (size_t)tgx->numel == nx && (size_t)tgc->numel == nc) {
                    double* v64 = dalloc(nx); double* gx64 = dalloc(nx); double* gc64 = dalloc(nc);
                    st_read_double(&rf, tv, v64, err); st_read_double(&rf, tgx, gx64, err); st_read_double(&rf, tgc, gc64, err);
                    expect_close_scaled("forward vs diffusers float64", act.out, v64, (long)nx, 1e-12);
                    size_t np = wan_num_params(&c);
                    double* gbuf = dalloc(np); WanParams dP; wan_carve(&c, &dP, gbuf);
                    double* dx = dalloc(nx); double* dctx = dalloc(nc);
                    wan_backward(&dP, dx, dctx, g, &act, &P);
                    expect_close_scaled("backward: d latent vs torch float64 autograd", dx, gx64, (long)nx, 1e-10);
                    expect_close_scaled("backward: d context vs torch float64 autograd", dctx, gc64, (long)nc, 1e-10);
                    StFile gf;
                    snprintf(path, sizeof(path), "%s/grads_official.safetensors", PEER_DIR);
                    if (st_open(&gf, path, err)) { EXPECT(0, "%s", err); }
                    else {
                        WanTensor* tl = (WanTensor*)malloc(sizeof(WanTensor) * WAN_MAX_TENSORS);
                        int nt = wan_layout(&c, tl, NULL, NULL, NULL);
                        for (int i = 0; i < nt; i++) {
                            const StTensor* st = st_find(&gf, tl[i].name);
                            if (!st || (size_t)st->numel != tl[i].numel) { EXPECT(0, "%s: gradient of %s missing or wrong size", path, tl[i].name); continue; }
                            double* ref = dalloc(tl[i].numel);
                            st_read_double(&gf, st, ref, err);
                            char gn[160]; snprintf(gn, sizeof(gn), "d %s", tl[i].name);
                            expect_close_scaled(gn, gbuf + tl[i].offset, ref, (long)tl[i].numel, 1e-10);
                            free(ref);
                        }
                        free(tl); st_close(&gf);
                    }
                    free(gbuf); free(dx); free(dctx); free(v64); free(gx64); free(gc64);
                }
                st_close(&rf);
            }
        }
        wan_act_free(&act); free(buf);
    }
    free(x); free(ctx); free(v32); free(g); free(f32_weights);
}

// =========================================================================================================
// the tiny distillation: teacher → TM-MF → DMD2-v → sample → score, with the settings of `./test_tmd distill`

static double row_total(const DistillRow* r, int n, const char* name) {
    for (int i = 0; i < n; i++) if (!strcmp(r[i].name, name)) return r[i].total;
    EXPECT(0, "table has no row '%s'", name);
    return -1;
}

static void test_distill(void) {
    DistillOpts o = distill_defaults();
    DistillRow rows[DISTILL_MAX_ROWS];
    int n = distill_run(&o, rows);
    distill_print(rows, n);
    char nm[64];
    snprintf(nm, sizeof(nm), "teacher UniPC %d steps, CFG %g", o.teacher_eval_steps, o.cfg_eval);
    double teacher = row_total(rows, n, nm);
    snprintf(nm, sizeof(nm), "teacher Euler 1 step, CFG %g", o.cfg_eval); double euler1 = row_total(rows, n, nm);
    snprintf(nm, sizeof(nm), "teacher Euler 2 steps, CFG %g", o.cfg_eval); double euler2 = row_total(rows, n, nm);
    snprintf(nm, sizeof(nm), "TMD M1 N%d H%d", o.N, o.H); double tmd1 = row_total(rows, n, nm);
    snprintf(nm, sizeof(nm), "TMD M2 N%d H%d", o.N, o.H); double tmd2 = row_total(rows, n, nm);
    // the teacher learned the world: its many-step samples beat its own one-step Euler sample
    printf("  teacher many-step %.1f vs its 1-step Euler %.1f\n", teacher, euler1);
    EXPECT(teacher > euler1 + 5, "the tiny teacher did not learn: many-step %.1f vs 1-step %.1f", teacher, euler1);
    // the claim in miniature: the student at M = 1 or 2 beats the teacher's Euler sampler at the same number of steps ...
    double gain1 = tmd1 - euler1, gain2 = tmd2 - euler2;
    printf("  TMD vs teacher Euler at the same steps: M=1 %+.1f, M=2 %+.1f\n", gain1, gain2);
    EXPECT(gain1 > 0 || gain2 > 0, "TMD beat the teacher's Euler sampler at neither M = 1 (%+.1f) nor M = 2 (%+.1f)", gain1, gain2);
    // ... and comes close to the teacher's many-step CFG samples: within 10 points of toy-VBench total
    double best = fmax(tmd1, tmd2);
    printf("  best TMD %.1f vs teacher many-step %.1f: gap %.1f points (\"close\" = within 10)\n", best, teacher, teacher - best);
    EXPECT(teacher - best <= 10, "TMD's best total %.1f is %.1f points below the teacher's %.1f", best, teacher - best, teacher);
}

// =========================================================================================================
// `./test_tmd forward`: the CPU forward of any checkpoint on .npy inputs

static void forward_usage(void) {
    printf("usage: ./test_tmd forward --weights W [--latent x.npy] [--timestep T] [--context c.npy] [--out v.npy]\n"
           "                          [--heads N] [--text-len N]\n"
           "  --weights   a Wan2.1 DiT checkpoint: .safetensors, *.safetensors.index.json, or a directory holding one\n"
           "              (official, diffusers or model.diffusion_model.-prefixed names; F32, BF16 or F16)\n"
           "  --latent    float32 .npy [in_dim, T, H, W] (H, W in latent pixels); default: random normal [in_dim, 1, 4, 4]\n"
           "  --timestep  the model timestep, 1000*sigma (default 500)\n"
           "  --context   float32 .npy [Lt, text_dim], the text encoder's rows (Lt <= text_len); default: empty caption\n"
           "  --out       where to write the velocity as float32 .npy (default: print a summary only)\n"
           "  --heads     number of attention heads when the checkpoint does not say (default: metadata, else dim/128)\n"
           "  --text-len  rows the context is zero-padded to (default: metadata, else 512)\n"
           "Runs in double precision on the CPU; a 1.3B checkpoint needs about 12 GB of memory.\n");
}

static int cmd_forward(int argc, char** argv) {
    const char *weights = NULL, *latent = NULL, *context = NULL, *outp = NULL; double t = 500; int heads = 0, text_len = 0;
    for (int i = 2; i < argc; i++) {
        const char* a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { forward_usage(); return 0; }
        if (i + 1 >= argc) { fprintf(stderr, "error: flag %s needs a value\n", a); forward_usage(); return 2; }
        const char* v = argv[++i];
        if (!strcmp(a, "--weights")) weights = v; else if (!strcmp(a, "--latent")) latent = v;
        else if (!strcmp(a, "--context")) context = v; else if (!strcmp(a, "--out")) outp = v;
        else if (!strcmp(a, "--timestep")) t = atof(v); else if (!strcmp(a, "--heads")) heads = atoi(v);
        else if (!strcmp(a, "--text-len")) text_len = atoi(v);
        else { fprintf(stderr, "error: unknown flag %s\n", a); forward_usage(); return 2; }
    }
    if (!weights) { fprintf(stderr, "error: --weights is required\n"); forward_usage(); return 2; }
    char err[ST_ERRLEN];
    WanConfig c; memset(&c, 0, sizeof(c)); double* buf = NULL;
    if (wan_load(weights, &c, heads, text_len, &buf, err)) { fprintf(stderr, "error: %s\n", err); return 1; }
    wan_config_print(&c, stdout); wan_print_count(&c, stdout);
    int64_t shape[ST_MAXDIM] = {c.in_dim, 1, 4 * c.patch[1], 4 * c.patch[2]};
    float* xf = NULL;
    if (latent) {
        int nd;
        if (npy_read(latent, &xf, &nd, shape, err)) { fprintf(stderr, "error: %s\n", err); return 1; }
        if (nd != 4 || shape[0] != c.in_dim) {
            fprintf(stderr, "error: %s: expected a latent [%d, T, H, W], found %d dimensions with %lld in the first\n", latent, c.in_dim, nd, (long long)shape[0]);
            return 1;
        }
    }
    size_t nx = (size_t)shape[0] * shape[1] * shape[2] * shape[3];
    double* x = dalloc(nx); Rng r = rng_make(0);
    for (size_t i = 0; i < nx; i++) x[i] = xf ? xf[i] : rng_normal(&r);
    free(xf);
    WanGrid g; if (wan_grid(&g, &c, (int)shape[0], (int)shape[1], (int)shape[2], (int)shape[3], err)) { fprintf(stderr, "error: %s\n", err); return 1; }
    double* ctx = NULL; int Lt = 0;
    if (context) {
        float* cf; int64_t cs[ST_MAXDIM]; int nd;
        if (npy_read(context, &cf, &nd, cs, err)) { fprintf(stderr, "error: %s\n", err); return 1; }
        if (nd != 2 || cs[1] != c.text_dim) {
            fprintf(stderr, "error: %s: expected a context [Lt, %d], found %d dimensions with %lld in the last\n", context, c.text_dim, nd, (long long)cs[nd - 1]);
            free(cf); return 1;
        }
        Lt = (int)cs[0];
        if (Lt > c.text_len) { fprintf(stderr, "warning: context has %d rows, more than text_len %d; keeping the first %d\n", Lt, c.text_len, c.text_len); Lt = c.text_len; }
        ctx = dalloc((size_t)Lt * c.text_dim); for (size_t i = 0; i < (size_t)Lt * c.text_dim; i++) ctx[i] = cf[i];
        free(cf);
    }
    WanParams P; wan_carve(&c, &P, buf);
    WanAct act; wan_act_init(&act, &c, &g);
    double t0 = now_s();
    wan_forward(&act, &P, x, t, ctx, Lt);
    size_t no = (size_t)c.out_dim * g.T * g.Hl * g.Wl;
    double s = 0, s2 = 0; for (size_t i = 0; i < no; i++) { s += act.out[i]; s2 += act.out[i] * act.out[i]; }
    printf("forward: latent [%d, %d, %d, %d] (%d tokens), timestep %g, %d caption rows: %.2f s; output mean %.6f std %.6f\n",
           g.C, g.T, g.Hl, g.Wl, g.L, t, Lt, now_s() - t0, s / no, sqrt(s2 / no - (s / no) * (s / no)));
    if (outp) {
        float* of = (float*)malloc(sizeof(float) * no); for (size_t i = 0; i < no; i++) of[i] = (float)act.out[i];
        int64_t os[4] = {c.out_dim, g.T, g.Hl, g.Wl};
        if (npy_write(outp, of, 4, os, err)) { fprintf(stderr, "error: %s\n", err); return 1; }
        printf("wrote %s\n", outp); free(of);
    }
    wan_act_free(&act); free(buf); free(x); free(ctx);
    return 0;
}

static int cmd_distill(int argc, char** argv) {
    DistillOpts o = distill_defaults();
    int rc = distill_parse_flags(&o, argc, argv, 2, "usage: ./test_tmd distill [flags]   (the whole method on the CPU, tiny world)");
    if (rc) return rc == 1 ? 0 : 2;
    DistillRow rows[DISTILL_MAX_ROWS];
    int n = distill_run(&o, rows);
    distill_print(rows, n);
    return 0;
}

static int cmd_presets(void) {
    for (int i = 0; i < WAN_NUM_PRESETS; i++) {
        printf("%s: %s\n", WAN_PRESETS[i].name, WAN_PRESETS[i].what);
        wan_config_print(&WAN_PRESETS[i].c, stdout); wan_print_count(&WAN_PRESETS[i].c, stdout); printf("\n");
    }
    return 0;
}

int main(int argc, char** argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc > 1 && !strcmp(argv[1], "forward")) return cmd_forward(argc, argv);
    if (argc > 1 && !strcmp(argv[1], "presets")) return cmd_presets();
    if (argc > 1 && !strcmp(argv[1], "world")) return world_main(argc - 2, argv + 2);
    if (argc > 1 && !strcmp(argv[1], "distill")) return cmd_distill(argc, argv);
    if (argc > 1 && !strcmp(argv[1], "ablate")) return ablate_main(argc, argv);
    if (argc > 1) {
        printf("usage: ./test_tmd                run all tests\n"
               "       ./test_tmd forward ...    CPU forward of a checkpoint (./test_tmd forward --help)\n"
               "       ./test_tmd presets        print the presets and their parameter counts\n"
               "       ./test_tmd world ...      the built-in world: gen, sheet, score, render, encode (./test_tmd world --help)\n"
               "       ./test_tmd distill ...    the whole method on the CPU in the tiny world (./test_tmd distill --help)\n"
               "       ./test_tmd ablate ...     the paper's claims in miniature (./test_tmd ablate --help)\n");
        return strcmp(argv[1], "--help") && strcmp(argv[1], "-h") ? 2 : 0;
    }
    const char* td = getenv("TMPDIR"); if (td && *td) TMPDIR_ = td;
    snprintf(test_tmpdir, sizeof(test_tmpdir), "%s/test_tmd.%d", TMPDIR_, (int)getpid());
    char cmd[600]; snprintf(cmd, sizeof(cmd), "mkdir -p '%s'", test_tmpdir);
    if (system(cmd) != 0) { fprintf(stderr, "error: cannot create %s\n", test_tmpdir); return 1; }
    double t0 = now_s();
    test_presets();
    printf("\n[io] safetensors and npy\n");
    test_io(test_tmpdir);
    printf("\n[world] the built-in world: grammar, renderer, text encoder, toy VBench\n");
    test_world();
    test_layer_grads();
    test_gradcheck_catches_bugs();
    test_model_grads();
    test_names_and_roundtrip();
    test_peer_diffusers();
    test_teacher();
    test_tmd();
    test_gpu_host(test_tmpdir);
    test_distill();
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", test_tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", test_tmpdir);
    printf("\n(%.1f s)\n%d passed, %d failed\n", now_s() - t0, tests_passed, tests_failed);
    return tests_failed ? 1 : 0;
}
