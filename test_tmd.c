// test_tmd.c: the CPU reference's driver and the project's tests. Plain C, double precision.
//   ./test_tmd                 run every fast test group (what `make test` does); ends with "N passed, N failed"
//   ./test_tmd test G...       run the named groups; ./test_tmd test --list names them (distill: make test-distill)
//   ./test_tmd forward ...     the CPU forward of a checkpoint on .npy inputs (debugging real weights)
//   ./test_tmd presets         print every preset's config and parameter count
//   ./test_tmd world ...       the built-in world: generate data, contact sheets, scoring
//   ./test_tmd distill ...     the whole method in the tiny world
//   ./test_tmd ablate ...      the paper's claims in miniature
//   ./test_tmd encode ...      prompts to umT5 embeddings (the DiT context), no Python
//   ./test_tmd vae ...         the Wan2.1 VAE: decode latents to video, encode video to latents
#define WAN_REAL double
#include "wan.h"               // config, presets, parameter layout, safetensors weights I/O
#include "cpu/wan_cpu.h"       // the CPU reference DiT: forward and backward
#include "lib/npy.h"           // .npy float32 I/O
#include "lib/rng.h"           // deterministic random numbers
#include "lib/testing.h"       // EXPECT, expect_close_d
#include "lib/io_tests.h"      // safetensors and npy tests, corrupt-input cases
#include "cpu/teacher_tests.h" // the teacher: flow matching, AdamW, Euler and UniPC sampling with CFG
#include "cpu/tmd_tests.h"     // TMD on the CPU: student, inner flow, TM-MF, DMD2-v (and cpu/distill_cpu.h itself)
#include "world/world_tests.h" // the built-in world's tests (and world.h, text.h, score.h, png.h)
#include "world/world_cli.h"   // ./test_tmd world gen | sheet | score | render | encode
#include "world/score_cond_tests.h" // the per-caption distance to a target: planted generators ranked
#include "cpu/distill_run.h"   // the whole method on the CPU in the tiny world: teacher, TM-MF, DMD2-v, table
#include "cpu/distill_smoke_tests.h" // a few steps of every distillation stage
#include "cpu/ablate.h"               // the paper's claims in miniature: ./test_tmd ablate
#include "gpu/host_tests.h"           // the GPU programs' plain-C pieces: VBench suite logic, memory plan, checkpoints
#include "lib/cp_tests.h"              // context parallelism's layouts against the serial computation
#include "lib/philox_tests.h"          // the GPU noise's Box-Muller (lib/philox.h) against long-double libm
#include "kernels/gemm_algo_cache_tests.h" // cuBLASLt's algorithm per GEMM shape: the cache's keys
#include "lib/prompt_tests.h"          // real prompts: context cache, Wan folder parts, bad inputs, dataset directories
#include "lib/flags.h"               // flag tables: parser and usage from one place
#include "lib/alloc.h"               // xmalloc, xcalloc: checked allocations
#include "lib/timer.h"               // now_s
#include "lib/random_params.h"       // random parameters for the tests
#include "cpu/umt5_tests.h"           // prompts to embeddings: SentencePiece tokenizer and umT5 encoder vs peers
#include "cpu/umt5_cli.h"             // ./test_tmd encode: prompts -> umT5 context .npy
#include "cpu/vae_tests.h"            // the Wan2.1 VAE (cpu/vae_cpu.h): peer check vs diffusers, memory, bad inputs
#include "cpu/vae_cli.h"              // ./test_tmd vae decode | encode | info
#include "lib/latent_data_tests.h"     // latent datasets: ./test_tmd pack, the reader, train_tmd's data source, Table 7
#include <limits.h>
#include <unistd.h> // fork, pipe, chdir: the bad-input tests
#include <sys/wait.h>

static const char* TMPDIR_ = "/tmp";
static char test_tmpdir[512];

static void fill_normal(double* p, size_t n, Rng* r, double mean, double std) {
    for (size_t i = 0; i < n; i++) p[i] = mean + std * rng_normal(r);
}

// =========================================================================================================
// presets

static void test_presets(void) {
    printf("\n[presets] parameter counts\n");
    const char* names[] = {"wan2.1-t2v-1.3b", "wan2.1-t2v-14b"};
    size_t want[] = {1418996800ull, 14288491584ull};
    int want_tensors[] = {825, 1095};
    for (int i = 0; i < 2; i++) {
        WanConfig c;
        char err[ST_ERRLEN];
        EXPECT(wan_preset(&c, names[i], err) == 0, "%s", err);
        size_t n = wan_num_params(&c);
        int nt = wan_layout(&c, NULL, NULL, NULL, NULL);
        printf("  %-18s ", names[i]);
        wan_print_count(&c, stdout);
        EXPECT(n == want[i], "%s: %zu parameters, expected %zu", names[i], n, want[i]);
        EXPECT(nt == want_tensors[i], "%s: %d tensors, expected %d", names[i], nt, want_tensors[i]);
    }
    for (int i = 0; i < WAN_NUM_PRESETS; i++) {
        char err[ST_ERRLEN];
        EXPECT(wan_config_check(&WAN_PRESETS[i].c, err) == 0, "%s", err);
    }
    WanConfig c;
    char err[ST_ERRLEN];
    EXPECT(wan_preset(&c, "wan2.1-t2v-7b", err) != 0 && strstr(err, "wan2.1-t2v-1.3b"), "unknown preset message: %s",
           err);
    printf("  unknown preset -> %s\n", err);
}

// =========================================================================================================
// layer gradient checks: loss = Σ out·g, analytic backward vs central differences (h = 1e-5, double)

static double dot(const double* a, const double* b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}
static double* dalloc(size_t n) { return (double*)xcalloc(n, sizeof(double), "a test buffer"); }
static double* drandn(size_t n, Rng* r, double std) {
    double* p = dalloc(n);
    fill_normal(p, n, r, 0, std);
    return p;
}

enum {
    L_LINEAR,
    L_LAYERNORM,
    L_LAYERNORM_AFFINE,
    L_RMSNORM,
    L_MODULATE,
    L_GELU,
    L_SILU,
    L_ROPE,
    L_ATTENTION,
    L_PATCHIFY,
    L_UNPATCHIFY
};

typedef struct {
    int kind, N, C, OC, Nk, H, d;       // sizes
    int T, Hl, Wl;                      // for rope / patchify
    double *x, *w, *b, *k, *v, *g;      // inputs, weights, cotangent
    double *out, *s1, *s2, *att, *rope; // outputs and saved statistics
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
    const char* names[] = {"linear",
                           "layernorm (no affine)",
                           "layernorm (affine)",
                           "rmsnorm",
                           "modulate",
                           "gelu_tanh",
                           "silu",
                           "rope3d",
                           "attention",
                           "patchify",
                           "unpatchify"};
    for (int kind = L_LINEAR; kind <= L_UNPATCHIFY; kind++) {
        LayerCase L;
        memset(&L, 0, sizeof(L));
        L.kind = kind;
        L.N = 5;
        L.C = 12;
        L.OC = 7;
        L.Nk = 6;
        L.H = 2;
        L.d = 12;
        L.T = 2;
        L.Hl = 4;
        L.Wl = 6;
        size_t nx = (size_t)L.N * L.C;
        if (kind == L_ROPE || kind == L_ATTENTION) {
            L.C = L.H * L.d;
            nx = (size_t)L.N * L.C;
        }
        if (kind == L_ROPE) {
            L.N = L.T * (L.Hl / 2) * (L.Wl / 2);
            nx = (size_t)L.N * L.C;
            L.rope = dalloc((size_t)L.N * L.d);
            rope_table(L.rope, L.T, L.Hl / 2, L.Wl / 2, L.d);
        }
        if (kind == L_PATCHIFY || kind == L_UNPATCHIFY) {
            L.C = 3;
            nx = (size_t)L.C * L.T * L.Hl * L.Wl;
        }
        L.x = drandn(nx, &r, 1.0);
        if (kind == L_GELU || kind == L_SILU)
            for (size_t i = 0; i < nx; i++) L.x[i] *= 2.5; // cover the tails
        L.w = drandn(kind == L_LINEAR ? (size_t)L.OC * L.C : (size_t)L.C, &r, 0.5);
        if (kind != L_LINEAR)
            for (int i = 0; i < L.C; i++) L.w[i] += 1;
        L.b = drandn(kind == L_LINEAR ? L.OC : L.C, &r, 0.5);
        L.k = drandn((size_t)L.Nk * L.C, &r, 1.0);
        L.v = drandn((size_t)L.Nk * L.C, &r, 1.0);
        L.nout = kind == L_LINEAR ? (size_t)L.N * L.OC : nx;
        L.out = dalloc(L.nout);
        L.g = drandn(L.nout, &r, 1.0);
        L.s1 = dalloc(L.N);
        L.s2 = dalloc(L.N);
        L.att = dalloc((size_t)L.H * L.N * L.Nk);
        layer_loss(&L); // forward, saving statistics for the backward
        double* dx = dalloc(nx);
        double* dw = dalloc(kind == L_LINEAR ? (size_t)L.OC * L.C : (size_t)L.C);
        double* db = dalloc(kind == L_LINEAR ? L.OC : L.C);
        double* dk = dalloc((size_t)L.Nk * L.C);
        double* dv = dalloc((size_t)L.Nk * L.C);
        int has_w = 0, has_b = 0, has_kv = 0;
        switch (kind) {
        case L_LINEAR:
            linear_backward(dx, dw, db, L.g, L.x, L.w, L.N, L.C, L.OC);
            has_w = has_b = 1;
            break;
        case L_LAYERNORM: layernorm_backward(dx, NULL, NULL, L.g, L.x, NULL, L.s1, L.s2, L.N, L.C); break;
        case L_LAYERNORM_AFFINE:
            layernorm_backward(dx, dw, db, L.g, L.x, L.w, L.s1, L.s2, L.N, L.C);
            has_w = has_b = 1;
            break;
        case L_RMSNORM:
            rmsnorm_backward(dx, dw, L.g, L.x, L.w, L.s1, L.N, L.C);
            has_w = 1;
            break;
        case L_MODULATE:
            modulate_backward(dx, db, dw, L.g, L.x, L.w, L.N, L.C);
            has_w = has_b = 1;
            break;
        case L_GELU: gelu_backward(dx, L.g, L.x, nx); break;
        case L_SILU: silu_backward(dx, L.g, L.x, nx); break;
        case L_ROPE: rope_backward(dx, L.g, L.rope, L.N, L.H, L.d); break;
        case L_ATTENTION:
            attention_backward(dx, dk, dv, L.g, L.att, L.x, L.k, L.v, L.N, L.Nk, L.H, L.d);
            has_kv = 1;
            break;
        case L_PATCHIFY: patchify_backward(dx, L.g, L.C, L.T, L.Hl, L.Wl, 1, 2, 2); break;
        case L_UNPATCHIFY: unpatchify_backward(dx, L.g, L.C, L.T, L.Hl, L.Wl, 1, 2, 2); break;
        }
        char nm[96];
        snprintf(nm, sizeof(nm), "%s d(input)", names[kind]);
        gradcheck(nm, L.x, (long)nx, dx, layer_loss, &L, 400);
        if (has_w) {
            snprintf(nm, sizeof(nm), "%s d(weight%s)", names[kind], kind == L_MODULATE ? "=scale" : "");
            gradcheck(nm, L.w, kind == L_LINEAR ? (long)L.OC * L.C : L.C, dw, layer_loss, &L, 400);
        }
        if (has_b) {
            snprintf(nm, sizeof(nm), "%s d(bias%s)", names[kind], kind == L_MODULATE ? "=shift" : "");
            gradcheck(nm, L.b, kind == L_LINEAR ? L.OC : L.C, db, layer_loss, &L, 400);
        }
        if (has_kv) {
            snprintf(nm, sizeof(nm), "%s d(key)", names[kind]);
            gradcheck(nm, L.k, (long)L.Nk * L.C, dk, layer_loss, &L, 400);
            snprintf(nm, sizeof(nm), "%s d(value)", names[kind]);
            gradcheck(nm, L.v, (long)L.Nk * L.C, dv, layer_loss, &L, 400);
        }
        free(L.x);
        free(L.w);
        free(L.b);
        free(L.k);
        free(L.v);
        free(L.out);
        free(L.g);
        free(L.s1);
        free(L.s2);
        free(L.att);
        free(L.rope);
        free(dx);
        free(dw);
        free(db);
        free(dk);
        free(dv);
    }
}

// the tolerance is not a formality: a deliberately broken backward (wrong sign of one term) must fail it
static void test_gradcheck_catches_bugs(void) {
    printf("\n[gradcheck] a broken backward must fail the same tolerance\n");
    Rng r = rng_make(11);
    int N = 4, C = 10;
    LayerCase L;
    memset(&L, 0, sizeof(L));
    L.kind = L_LAYERNORM;
    L.N = N;
    L.C = C;
    L.nout = (size_t)N * C;
    L.x = drandn(L.nout, &r, 1);
    L.g = drandn(L.nout, &r, 1);
    L.out = dalloc(L.nout);
    L.s1 = dalloc(N);
    L.s2 = dalloc(N);
    layer_loss(&L);
    double* dx = dalloc(L.nout);
    // layernorm backward with the xhat·mean(dxhat·xhat) term's sign flipped
    for (int n = 0; n < N; n++) {
        double s1 = 0, s2 = 0;
        for (int i = 0; i < C; i++) {
            double xh = (L.x[n * C + i] - L.s1[n]) * L.s2[n];
            s1 += L.g[n * C + i];
            s2 += L.g[n * C + i] * xh;
        }
        s1 /= C;
        s2 /= C;
        for (int i = 0; i < C; i++) {
            double xh = (L.x[n * C + i] - L.s1[n]) * L.s2[n];
            dx[n * C + i] = L.s2[n] * (L.g[n * C + i] - s1 + xh * s2);
        }
    }
    long m = (long)L.nout;
    double* num = dalloc(m);
    for (long i = 0; i < m; i++) {
        double x0 = L.x[i];
        L.x[i] = x0 + GC_H;
        double fp = layer_loss(&L);
        L.x[i] = x0 - GC_H;
        double fm = layer_loss(&L);
        L.x[i] = x0;
        num[i] = (fp - fm) / (2 * GC_H);
    }
    double maxrel = 0, maxb = 0;
    for (long i = 0; i < m; i++) maxb = fmax(maxb, fabs(num[i]));
    for (long i = 0; i < m; i++) maxrel = fmax(maxrel, fabs(dx[i] - num[i]) / fmax(fabs(num[i]), 1e-3 * maxb));
    printf("  layernorm with one sign flipped: max rel %.3e vs tol %.0e -> %s\n", maxrel, GC_TOL,
           maxrel > GC_TOL ? "caught" : "MISSED");
    EXPECT(maxrel > 1e3 * GC_TOL, "a sign bug gave max rel %.3e, not far above tol %.0e", maxrel, GC_TOL);
    free(L.x);
    free(L.g);
    free(L.out);
    free(L.s1);
    free(L.s2);
    free(dx);
    free(num);
}

// =========================================================================================================
// whole-model gradient check on the tiny preset at a small non-square grid

typedef struct {
    WanAct* act;
    WanParams* P;
    double* x;
    double* ctx;
    int Lt;
    double t;
    double* g;
    size_t nout;
} ModelCase;

static double model_loss(void* p) {
    ModelCase* m = (ModelCase*)p;
    wan_forward(m->act, m->P, m->x, m->t, m->ctx, m->Lt);
    return dot(m->act->out, m->g, m->nout);
}

static void test_model_grads(void) {
    WanConfig c;
    char err[ST_ERRLEN];
    wan_preset(&c, "tiny", err);
    c.num_layers = 2; // two blocks suffice to exercise block-to-block gradients; keeps the check fast
    c.dim = 32;
    c.num_heads = 2;
    c.ffn_dim = 48;
    c.patch[1] = c.patch[2] = 2; // (1, 2, 2) as Wan, head dim 16
    printf("\n[gradcheck] whole model '%s' (%d layers, D %d, %d heads): every parameter tensor, latent and context\n",
           c.name, c.num_layers, c.dim, c.num_heads);
    size_t np = wan_num_params(&c);
    double* buf = dalloc(np);
    double* gbuf = dalloc(np);
    random_params(&c, buf, 1234);
    WanParams P, dP;
    wan_carve(&c, &P, buf);
    wan_carve(&c, &dP, gbuf);
    WanGrid g;
    EXPECT(wan_grid(&g, &c, 3, 2, 4, 6, err) == 0, "%s", err);
    WanAct act;
    wan_act_init(&act, &c, &g);
    Rng r = rng_make(99);
    size_t nx = (size_t)3 * 2 * 4 * 6;
    int Lt = 5;
    ModelCase m = {&act, &P, drandn(nx, &r, 1), drandn((size_t)Lt * c.text_dim, &r, 1), Lt, 731.0, NULL, nx};
    m.g = drandn(nx, &r, 1);
    model_loss(&m);
    double* dx = dalloc(nx);
    double* dctx = dalloc((size_t)Lt * c.text_dim);
    wan_backward(&dP, dx, dctx, m.g, &act, &P);
    gradcheck("latent x", m.x, (long)nx, dx, model_loss, &m, 24);
    gradcheck("context (caption rows)", m.ctx, (long)Lt * c.text_dim, dctx, model_loss, &m, 24);
    WanTensor* tl = (WanTensor*)malloc(sizeof(WanTensor) * WAN_MAX_TENSORS);
    int nt = wan_layout(&c, tl, NULL, NULL, NULL);
    for (int i = 0; i < nt; i++)
        gradcheck(tl[i].name, buf + tl[i].offset, (long)tl[i].numel, gbuf + tl[i].offset, model_loss, &m, 12);
    free(tl);
    free(buf);
    free(gbuf);
    free(m.x);
    free(m.ctx);
    free(m.g);
    free(dx);
    free(dctx);
    wan_act_free(&act);
}

// =========================================================================================================
// names and weights I/O of whole models

// writes c's tensors from buf under official names, leaving out `drop` and transposing the shape of `reshape`
static void write_variant(const char* path, const WanConfig* c, const double* buf, const char* drop,
                          const char* reshape) {
    WanTensor* tl = (WanTensor*)malloc(sizeof(WanTensor) * WAN_MAX_TENSORS);
    int nt = wan_layout(c, tl, NULL, NULL, NULL), n = 0;
    StOut* o = (StOut*)calloc((size_t)nt, sizeof(StOut));
    for (int i = 0; i < nt; i++) {
        if (drop && !strcmp(tl[i].name, drop)) continue;
        o[n].name = tl[i].name;
        o[n].ndim = tl[i].ndim;
        o[n].f64 = buf + tl[i].offset;
        for (int d = 0; d < tl[i].ndim; d++) o[n].shape[d] = tl[i].shape[d];
        if (reshape && !strcmp(tl[i].name, reshape)) {
            o[n].shape[0] = tl[i].shape[1];
            o[n].shape[1] = tl[i].shape[0];
        }
        n++;
    }
    char err[ST_ERRLEN], heads[16], tl_[16];
    snprintf(heads, sizeof(heads), "%d", c->num_heads);
    snprintf(tl_, sizeof(tl_), "%d", c->text_len);
    const char* meta[] = {"num_heads", heads, "text_len", tl_};
    EXPECT(st_write(path, o, n, meta, 2, err) == 0, "%s", err);
    free(o);
    free(tl);
}

static void test_names_and_roundtrip(void) {
    printf("\n[weights] official <-> diffusers names, save/load round trip, bad checkpoints\n");
    WanConfig c;
    char err[ST_ERRLEN];
    wan_preset(&c, "tiny", err);
    // every official name passes through unchanged; a few diffusers names map to their official twins
    WanTensor* tl = (WanTensor*)malloc(sizeof(WanTensor) * WAN_MAX_TENSORS);
    int nt = wan_layout(&c, tl, NULL, NULL, NULL), same = 1;
    char out[128];
    for (int i = 0; i < nt; i++) {
        wan_canonical_name(tl[i].name, out, sizeof(out));
        same &= strcmp(out, tl[i].name) == 0;
    }
    EXPECT(same, "an official name was rewritten");
    const char* pairs[][2] = {
        {"blocks.3.attn1.to_out.0.weight", "blocks.3.self_attn.o.weight"},
        {"blocks.0.norm2.bias", "blocks.0.norm3.bias"},
        {"blocks.12.ffn.net.0.proj.weight", "blocks.12.ffn.0.weight"},
        {"scale_shift_table", "head.modulation"},
        {"blocks.1.scale_shift_table", "blocks.1.modulation"},
        {"condition_embedder.time_proj.bias", "time_projection.1.bias"},
        {"proj_out.weight", "head.head.weight"},
        {"model.diffusion_model.blocks.2.cross_attn.norm_k.weight", "blocks.2.cross_attn.norm_k.weight"},
        {"blocks.0.attn2.norm_q.weight", "blocks.0.cross_attn.norm_q.weight"}};
    for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
        wan_canonical_name(pairs[i][0], out, sizeof(out));
        EXPECT(strcmp(out, pairs[i][1]) == 0, "%s -> %s, expected %s", pairs[i][0], out, pairs[i][1]);
    }
    printf("  name mapping: %d official names unchanged, %zu diffusers/prefixed names mapped\n", nt,
           sizeof(pairs) / sizeof(pairs[0]));
    // round trip through safetensors with the config in the metadata
    size_t np = wan_num_params(&c);
    double* buf = dalloc(np);
    random_params(&c, buf, 5);
    char path[600];
    snprintf(path, sizeof(path), "%s/tiny_roundtrip.safetensors", test_tmpdir);
    EXPECT(wan_save(path, &c, buf, NULL, 0, err) == 0, "save: %s", err);
    WanConfig c2;
    memset(&c2, 0, sizeof(c2));
    double* buf2 = NULL;
    EXPECT(wan_load(path, &c2, 0, 0, &buf2, err) == 0, "load: %s", err);
    if (buf2) {
        double maxd = 0;
        for (size_t i = 0; i < np; i++) maxd = fmax(maxd, fabs(buf2[i] - (double)(float)buf[i]));
        printf("  round trip of %zu parameters (written as F32): max diff %.1e, config heads %d, text_len %d\n", np,
               maxd, c2.num_heads, c2.text_len);
        EXPECT(maxd == 0, "round trip changed values by %.3e", maxd);
        EXPECT(c2.num_heads == c.num_heads && c2.text_len == c.text_len && c2.num_layers == c.num_layers &&
                   c2.freq_dim == c.freq_dim,
               "inferred config differs from the saved one");
        free(buf2);
        buf2 = NULL;
    }
    // a checkpoint that contradicts the expected config
    WanConfig wrong = c;
    wrong.ffn_dim = 96;
    int rc = wan_load(path, &wrong, 0, 0, &buf2, err);
    printf("  config mismatch -> %s\n", rc ? err : "(accepted!)");
    EXPECT(rc != 0 && strstr(err, "ffn_dim") && strstr(err, "128") && strstr(err, "96"), "mismatch message: %s", err);
    // a missing tensor: save a model with one layer fewer but claim the full config
    WanConfig shallow = c;
    shallow.num_layers = c.num_layers - 1;
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
    EXPECT(rc != 0 && strstr(err, "blocks.1.ffn.2.weight") && strstr(err, "[128, 64]") && strstr(err, "[64, 128]"),
           "message: %s", err);
    // a checkpoint that is not a Wan DiT at all
    StOut o[2];
    memset(o, 0, sizeof(o));
    float dummy[64 * 48];
    for (int i = 0; i < 64 * 48; i++) dummy[i] = 0.5f;
    o[0] = (StOut){.name = "patch_embedding.weight", .ndim = 5, .shape = {64, 3, 1, 4, 4}, .f32 = dummy};
    o[1] = (StOut){.name = "head.head.weight", .ndim = 2, .shape = {48, 64}, .f32 = dummy};
    snprintf(path, sizeof(path), "%s/tiny_partial.safetensors", test_tmpdir);
    st_write(path, o, 2, NULL, 0, err);
    rc = wan_load(path, &c, 0, 0, &buf2, err);
    printf("  checkpoint without text/time embeddings -> %s\n", rc ? err : "(accepted!)");
    EXPECT(rc != 0 && strstr(err, "text_embedding.0.weight"), "message: %s", err);
    free(buf);
    free(tl);
}

// =========================================================================================================
// peer check against diffusers' WanTransformer3DModel (vectors made by dev/peer/make_wan_vectors.py)

#define PEER_DIR "dev/peer/vectors"

static double* read_npy_d(const char* name, int ndim, const int64_t* shape, size_t* n_out) {
    char path[512], err[ST_ERRLEN];
    snprintf(path, sizeof(path), "%s/%s", PEER_DIR, name);
    float* f = NULL;
    if (npy_read_shape(path, &f, ndim, shape, err)) {
        EXPECT(0, "%s", err);
        return NULL;
    }
    size_t n = 1;
    for (int i = 0; i < ndim; i++) n *= (size_t)shape[i];
    double* d = dalloc(n);
    for (size_t i = 0; i < n; i++) d[i] = f[i];
    free(f);
    if (n_out) *n_out = n;
    return d;
}

// float -> bfloat16 -> float with round-to-nearest-even (what torch's .to(torch.bfloat16) does)
static double bf16_round(double v) {
    float f = (float)v;
    uint32_t u;
    memcpy(&u, &f, 4);
    u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000u;
    memcpy(&f, &u, 4);
    return f;
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
    char path[512];
    snprintf(path, sizeof(path), "%s/timestep.txt", PEER_DIR);
    FILE* tf = fopen(path, "r");
    double t = -1;
    EXPECT(tf && fscanf(tf, "%lf", &t) == 1, "cannot read %s", path);
    if (tf) fclose(tf);
    if (!x || !ctx || !v32 || !g || t < 0) {
        printf("  peer vectors missing: run dev/peer/make_wan_vectors.py (see dev/peer/README.md)\n");
        return;
    }
    double* f32_weights = NULL;
    for (int fi = 0; fi < 3; fi++) {
        char err[ST_ERRLEN];
        snprintf(path, sizeof(path), "%s/%s", PEER_DIR, files[fi]);
        WanConfig c;
        memset(&c, 0, sizeof(c));
        double* buf = NULL;
        if (wan_load(path, &c, 2, 16, &buf, err)) {
            EXPECT(0, "%s", err);
            continue;
        }
        if (fi == 0) {
            free(f32_weights);
            f32_weights = dalloc(wan_num_params(&c));
            memcpy(f32_weights, buf, sizeof(double) * wan_num_params(&c));
        }
        if (fi == 2 &&
            f32_weights) { // the BF16 shards must load to exactly the F32 weights rounded to bfloat16 (nearest even)
            size_t np = wan_num_params(&c), bad = 0;
            for (size_t i = 0; i < np; i++)
                if (buf[i] != bf16_round(f32_weights[i])) bad++;
            printf(
                "  bf16 shards with model.diffusion_model. prefix: %zu of %zu weights differ from bf16(F32 weights)\n",
                bad, np);
            EXPECT(bad == 0, "%zu weights differ", bad);
        }
        WanParams P;
        wan_carve(&c, &P, buf);
        WanGrid gr;
        wan_grid(&gr, &c, 16, 2, 6, 10, err);
        WanAct act;
        wan_act_init(&act, &c, &gr);
        wan_forward(&act, &P, x, t, ctx, 5);
        char nm[128];
        if (fi < 2) {
            snprintf(nm, sizeof(nm), "forward, %s vs fp32", files[fi]);
            expect_close_scaled(nm, act.out, v32, (long)nx, 1e-5);
        } else { // bf16 weights: the loader must convert exactly; the output moves by bf16 rounding only
            snprintf(nm, sizeof(nm), "forward, bf16 shards vs fp32 (bf16 tolerance)");
            expect_close_scaled(nm, act.out, v32, (long)nx, 2e-2);
        }
        if (fi == 0) { // the double-precision reference against diffusers run in true float64: forward and backward
            StFile rf;
            snprintf(path, sizeof(path), "%s/reference_f64.safetensors", PEER_DIR);
            if (st_open(&rf, path, err)) {
                EXPECT(0, "%s", err);
            } else {
                const StTensor *tv = st_find(&rf, "v"), *tgx = st_find(&rf, "grad_x"),
                               *tgc = st_find(&rf, "grad_context");
                EXPECT(tv && tgx && tgc && (size_t)tv->numel == nx && (size_t)tgx->numel == nx &&
                           (size_t)tgc->numel == nc,
                       "%s: expected tensors v, grad_x, grad_context of %zu, %zu, %zu elements", path, nx, nx, nc);
                if (tv && tgx && tgc && (size_t)tv->numel == nx && (size_t)tgx->numel == nx &&
                    (size_t)tgc->numel == nc) {
                    double* v64 = dalloc(nx);
                    double* gx64 = dalloc(nx);
                    double* gc64 = dalloc(nc);
                    st_read_double(&rf, tv, v64, err);
                    st_read_double(&rf, tgx, gx64, err);
                    st_read_double(&rf, tgc, gc64, err);
                    expect_close_scaled("forward vs diffusers float64", act.out, v64, (long)nx, 1e-12);
                    size_t np = wan_num_params(&c);
                    double* gbuf = dalloc(np);
                    WanParams dP;
                    wan_carve(&c, &dP, gbuf);
                    double* dx = dalloc(nx);
                    double* dctx = dalloc(nc);
                    wan_backward(&dP, dx, dctx, g, &act, &P);
                    expect_close_scaled("backward: d latent vs torch float64 autograd", dx, gx64, (long)nx, 1e-10);
                    expect_close_scaled("backward: d context vs torch float64 autograd", dctx, gc64, (long)nc, 1e-10);
                    StFile gf;
                    snprintf(path, sizeof(path), "%s/grads_official.safetensors", PEER_DIR);
                    if (st_open(&gf, path, err)) {
                        EXPECT(0, "%s", err);
                    } else {
                        WanTensor* tl = (WanTensor*)malloc(sizeof(WanTensor) * WAN_MAX_TENSORS);
                        int nt = wan_layout(&c, tl, NULL, NULL, NULL);
                        for (int i = 0; i < nt; i++) {
                            const StTensor* st = st_find(&gf, tl[i].name);
                            if (!st || (size_t)st->numel != tl[i].numel) {
                                EXPECT(0, "%s: gradient of %s missing or wrong size", path, tl[i].name);
                                continue;
                            }
                            double* ref = dalloc(tl[i].numel);
                            st_read_double(&gf, st, ref, err);
                            char gn[160];
                            snprintf(gn, sizeof(gn), "d %s", tl[i].name);
                            expect_close_scaled(gn, gbuf + tl[i].offset, ref, (long)tl[i].numel, 1e-10);
                            free(ref);
                        }
                        free(tl);
                        st_close(&gf);
                    }
                    free(gbuf);
                    free(dx);
                    free(dctx);
                    free(v64);
                    free(gx64);
                    free(gc64);
                }
                st_close(&rf);
            }
        }
        wan_act_free(&act);
        free(buf);
    }
    free(x);
    free(ctx);
    free(v32);
    free(g);
    free(f32_weights);
}

// =========================================================================================================
// the tiny distillation: teacher → TM-MF → DMD2-v → sample → score, with the settings of `./test_tmd distill`

static const DistillRow* row_named(const DistillRow* r, int n, const char* name) {
    for (int i = 0; i < n; i++)
        if (!strcmp(r[i].name, name)) return &r[i];
    EXPECT(0, "table has no row '%s'", name);
    static const DistillRow none = {.total = -1};
    return &none;
}

// The claims on seed 1 of the default run. Checked: what the paired seeds of dev/results/ablations-cpu.md support
// (there, in each of 3 paired seeds, by more than the evaluation's own sampling error).
// Printed, not checked: the rest, which those runs leave within the evaluation's error, against the paper, or unrun.
static void test_distill(void) {
    DistillOpts o = distill_defaults();
    DistillRow rows[DISTILL_MAX_ROWS];
    int n = distill_run(&o, rows);
    distill_print(rows, n);
    char nm[64];
    snprintf(nm, sizeof(nm), "teacher UniPC %d steps, CFG %g", o.teacher_eval_steps, o.cfg_eval);
    const DistillRow* teacher = row_named(rows, n, nm);
    snprintf(nm, sizeof(nm), "teacher Euler 1 step, CFG %g", o.cfg_eval);
    const DistillRow* euler1 = row_named(rows, n, nm);
    snprintf(nm, sizeof(nm), "teacher Euler 2 steps, CFG %g", o.cfg_eval);
    const DistillRow* euler2 = row_named(rows, n, nm);
    snprintf(nm, sizeof(nm), "TMD M1 N%d H%d", o.N, o.H);
    const DistillRow* r1 = row_named(rows, n, nm);
    snprintf(nm, sizeof(nm), "TMD M2 N%d H%d", o.N, o.H);
    const DistillRow* r2 = row_named(rows, n, nm);
    // checked: the teacher learned the world (its many-step samples beat its own one-step Euler sample)
    printf("  teacher many-step %.1f ± %.1f vs its 1-step Euler %.1f ± %.1f\n", teacher->total, teacher->total_se,
           euler1->total, euler1->total_se);
    EXPECT(teacher->total > euler1->total + 5, "the tiny teacher did not learn: many-step %.1f vs 1-step %.1f",
           teacher->total, euler1->total);
    // checked: the measure's floor. With the VSD guidance at the table's teacher guidance (the default), the teacher's
    // row is a second draw of the distillation target: at 0 up to sampling error, and every student farther
    EXPECT(r1->n_cap > 0 && r2->n_cap > 0 && teacher->n_cap > 0, "the table has no per-caption distance to the target");
    if (r1->n_cap == 0 || r2->n_cap == 0 || teacher->n_cap == 0) return;
    if (o.cfg_dmd == o.cfg_eval) {
        printf("  the teacher's second draw is at %.2f ± %.2f from the target\n", teacher->cond, teacher->cond_se);
        EXPECT(fabs(teacher->cond) < 3 * teacher->cond_se,
               "the teacher's own second draw is at %.2f ± %.2f from its target: the measure is biased", teacher->cond,
               teacher->cond_se);
        for (int i = 0; i < n; i++) {
            if (strncmp(rows[i].name, "TMD", 3)) continue;   // (DMD2-v: not run at this default in the seeds above)
            double d = rows[i].cond - teacher->cond;
            double se = score_boot_se(rows[i].cond_cap, teacher->cond_cap, rows[i].n_cap);
            printf("  %-30s %.2f farther from the target than the teacher (paired se %.2f)\n", rows[i].name, d, se);
            EXPECT(d > 3 * se, "%s is as close to the target as the teacher's own second draw (%+.2f, se %.2f)",
                   rows[i].name, d, se);
        }
    }
    // checked: two steps beat one on what Stage 2 optimises, the per-caption distance to the target (paper: 84.68 vs
    // 83.80 on VBench); seeds 1, 2, 3: M = 2 closer in every seed, by 3.9, 3.5 and 2.6 unpaired standard errors
    double d21 = r1->cond - r2->cond, se21 = score_boot_se(r1->cond_cap, r2->cond_cap, r1->n_cap);
    printf("  per-caption distance to the target: TMD M1 %.2f ± %.2f, M2 %.2f ± %.2f: M2 closer by %.2f (paired se "
           "%.2f)\n",
           r1->cond, r1->cond_se, r2->cond, r2->cond_se, d21, se21);
    EXPECT(d21 > 3 * se21, "two-step TMD is not clearly closer to the target than one-step: %.2f vs %.2f (paired se %.2f)",
           r2->cond, r1->cond, se21);
    // printed: what the 3-seed tables leave within the evaluation's error, or against the paper
    printf("  not checked (within the evaluation's error, not reproduced, or not run; dev/results/ablations-cpu.md):\n");
    printf("    toy VBench total, TMD M2 - M1: %+.1f (each ± %.1f / %.1f)\n", r2->total - r1->total, r2->total_se,
           r1->total_se);
    printf("    TMD vs teacher Euler at the same steps: M1 %+.1f, M2 %+.1f (total); per-caption distance %+.2f, %+.2f\n",
           r1->total - euler1->total, r2->total - euler2->total, r1->cond - euler1->cond, r2->cond - euler2->cond);
    printf("    best TMD %.1f vs the teacher's many-step %.1f: gap %.1f points\n", fmax(r1->total, r2->total),
           teacher->total, teacher->total - fmax(r1->total, r2->total));
    printf("    diversity (within-caption spread over the target's): TMD M1 %.2f, M2 %.2f, teacher %.2f\n",
           r1->diversity, r2->diversity, teacher->diversity);
    for (int i = 0; i < n; i++)
        if (!strncmp(rows[i].name, "DMD2-v", 6))
            printf("    %s: total %.1f, per-caption distance %.2f (TMD at the same M: see the table)\n", rows[i].name,
                   rows[i].total, rows[i].cond);
}

// =========================================================================================================
// `./test_tmd forward`: the CPU forward of any checkpoint on .npy inputs

// the first non-finite value of a float array read from path, as an error message (0 when all are finite)
static int check_finite_f(const char* path, const float* v, size_t n, char* err) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(v[i])) {
            snprintf(err, ST_ERRLEN,
                     "%s: value %zu of %zu is %g; the input must be finite (was it written after a "
                     "NaN in the pipeline?)",
                     path, i, n, (double)v[i]);
            return 1;
        }
    return 0;
}

// physical memory of this machine in bytes (0 if unknown)
static double phys_mem_bytes(void) {
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    return pages > 0 && page > 0 ? (double)pages * (double)page : 0;
}

static int cmd_forward(int argc, char** argv) {
    const char *weights = NULL, *latent = NULL, *context = NULL, *outp = NULL;
    double t = 500;
    int heads = 0, text_len = 0;
    Flag flags[] = {
        FLAG_STR("--weights", &weights,
                 "a Wan2.1 DiT checkpoint: .safetensors, *.safetensors.index.json, or a directory "
                 "holding one (official, diffusers or model.diffusion_model.-prefixed names; F32, BF16 or F16)"),
        FLAG_STR("--latent", &latent,
                 "float32 .npy [in_dim, T, H, W] (H, W in latent pixels); none: random normal "
                 "[in_dim, patch_t, 4 patch_h, 4 patch_w]"),
        FLAG_DOUBLE_R("--timestep", &t, 0, 1000, "the model timestep, 1000*sigma"),
        FLAG_STR("--context", &context,
                 "float32 .npy [Lt, text_dim], the text encoder's rows (Lt <= text_len); "
                 "none: the empty caption"),
        FLAG_STR("--out", &outp, "where to write the velocity as float32 .npy (none: print a summary only)"),
        FLAG_INT_R("--heads", &heads, 0, WAN_MAX_WIDTH,
                   "attention heads when neither the checkpoint's metadata nor a "
                   "config.json beside it says (0: those)"),
        FLAG_INT_R("--text-len", &text_len, 0, WAN_MAX_TEXT_LEN,
                   "rows the context is zero-padded to (0: metadata, else 512)"),
        FLAG_END};
    int rc = flags_parse(flags, argc, argv, 2,
                         "usage: ./test_tmd forward --weights W [flags]   (the CPU forward of a "
                         "checkpoint in double precision; a 1.3B checkpoint needs about 12 GB of memory)");
    if (rc) return rc == 1 ? 0 : 2;
    if (!weights) {
        fprintf(stderr, "error: --weights is required (see ./test_tmd forward --help)\n");
        return 2;
    }
    char err[ST_ERRLEN];
    WanConfig c;
    memset(&c, 0, sizeof(c));
    double* buf = NULL;
    if (wan_load(weights, &c, heads, text_len, &buf, err)) {
        fprintf(stderr, "error: %s\n", err);
        return 1;
    }
    wan_config_print(&c, stdout);
    wan_print_count(&c, stdout);
    int64_t shape[ST_MAXDIM] = {c.in_dim, c.patch[0], 4 * c.patch[1], 4 * c.patch[2]};
    float* xf = NULL;
    rc = 1;
    double* x = NULL;
    double* ctx = NULL;
    float* cf = NULL;
    int Lt = 0;
    WanGrid g;
    if (latent) {
        int nd;
        if (npy_read(latent, &xf, &nd, shape, err)) {
            fprintf(stderr, "error: %s\n", err);
            goto done;
        }
        int fits = nd == 4 && shape[0] == c.in_dim;
        for (int i = 1; fits && i < 4; i++) fits = shape[i] > 0 && shape[i] <= INT_MAX;
        if (!fits) {
            char sb[256];
            fprintf(stderr, "error: %s: expected a latent [%d, T, H, W] with positive T, H, W, found shape %s\n",
                    latent, c.in_dim, st_shape_str(sb, nd, shape));
            goto done;
        }
        if (check_finite_f(latent, xf, (size_t)st_numel(4, shape), err)) {
            fprintf(stderr, "error: %s\n", err);
            goto done;
        }
    }
    if (wan_grid(&g, &c, (int)shape[0], (int)shape[1], (int)shape[2], (int)shape[3], err)) {
        fprintf(stderr, "error: %s\n", err);
        goto done;
    }
    // the activations of a double-precision forward grow with L² (attention); refuse what this machine cannot hold
    double need = (double)wan_act_bytes(&c, &g) + (double)wan_num_params(&c) * sizeof(double), have = phys_mem_bytes();
    if (have > 0 && need > have) {
        fprintf(stderr,
                "error: a latent of %d tokens needs %.1f GB for the CPU forward (attention grows with tokens²), "
                "more than this machine's %.1f GB; use a smaller latent\n",
                g.L, need / 1e9, have / 1e9);
        goto done;
    }
    x = (double*)xmalloc((size_t)st_numel(4, shape), sizeof(double), "the latent");
    Rng r = rng_make(0);
    for (size_t i = 0; i < (size_t)st_numel(4, shape); i++) x[i] = xf ? xf[i] : rng_normal(&r);
    if (context) {
        int64_t cs[ST_MAXDIM];
        int nd;
        if (npy_read(context, &cf, &nd, cs, err)) {
            fprintf(stderr, "error: %s\n", err);
            goto done;
        }
        if (nd != 2 || cs[1] != c.text_dim) {
            char sb[256];
            fprintf(stderr, "error: %s: expected a context [Lt, %d], found shape %s\n", context, c.text_dim,
                    st_shape_str(sb, nd, cs));
            goto done;
        }
        if (check_finite_f(context, cf, (size_t)st_numel(2, cs), err)) {
            fprintf(stderr, "error: %s\n", err);
            goto done;
        }
        Lt = cs[0] > c.text_len ? c.text_len : (int)cs[0];
        if (cs[0] > c.text_len)
            fprintf(stderr, "warning: context has %lld rows, more than text_len %d; keeping the first %d\n",
                    (long long)cs[0], c.text_len, c.text_len);
        ctx = (double*)xmalloc((size_t)Lt * c.text_dim, sizeof(double), "the context");
        for (size_t i = 0; i < (size_t)Lt * c.text_dim; i++) ctx[i] = cf[i];
    }
    WanParams P;
    wan_carve(&c, &P, buf);
    WanAct act;
    wan_act_init(&act, &c, &g);
    double t0 = now_s();
    wan_forward(&act, &P, x, t, ctx, Lt);
    size_t no = (size_t)c.out_dim * g.T * g.Hl * g.Wl;
    double s = 0, s2 = 0;
    for (size_t i = 0; i < no; i++) {
        s += act.out[i];
        s2 += act.out[i] * act.out[i];
    }
    printf("forward: latent [%d, %d, %d, %d] (%d tokens), timestep %g, %d caption rows: %.2f s; output mean %.6f std "
           "%.6f\n",
           g.C, g.T, g.Hl, g.Wl, g.L, t, Lt, now_s() - t0, s / no, sqrt(s2 / no - (s / no) * (s / no)));
    if (!isfinite(s2)) {
        fprintf(stderr, "error: the output holds non-finite values from finite inputs: the checkpoint's weights are "
                        "broken (NaN or huge); nothing written\n");
        wan_act_free(&act);
        goto done;
    }
    rc = 0;
    if (outp) {
        float* of = (float*)xmalloc(no, sizeof(float), "the output");
        for (size_t i = 0; i < no; i++) of[i] = (float)act.out[i];
        int64_t os[4] = {c.out_dim, g.T, g.Hl, g.Wl};
        if (npy_write(outp, of, 4, os, err)) {
            fprintf(stderr, "error: %s\n", err);
            rc = 1;
        } else {
            printf("wrote %s\n", outp);
        }
        free(of);
    }
    wan_act_free(&act);
done:
    free(buf);
    free(xf);
    free(x);
    free(cf);
    free(ctx);
    return rc;
}

static int cmd_distill(int argc, char** argv) {
    DistillOpts o = distill_defaults();
    int rc = distill_parse_flags(&o, argc, argv, 2,
                                 "usage: ./test_tmd distill [flags]   (the whole method on the CPU, tiny world)");
    if (rc) return rc == 1 ? 0 : 2;
    if (o.sheet && o.eval_n < DISTILL_SHEET_CLIPS) {
        fprintf(stderr,
                "error: --sheet draws the first %d evaluation clips of every row, but --eval-n is %d; raise --eval-n "
                "to %d or more\n",
                DISTILL_SHEET_CLIPS, o.eval_n, DISTILL_SHEET_CLIPS);
        return 2;
    }
    DistillRow rows[DISTILL_MAX_ROWS];
    int n = distill_run(&o, rows);
    distill_print(rows, n);
    return 0;
}

// =========================================================================================================
// bad input: one regression case per finding of the hardening review (issue 9). Each case failed, crashed or
// hung on the code before the fix; its comment says how.

static char bi_dir[600];                            // every case writes under it
static WanConfig bi_tiny;                           // the config of the cases' checkpoints
static const char* BI_HEADS[] = {"num_heads", "4"}; // metadata that names the tiny model's head count

// runs fn(argc, argv) as the command line "./test_tmd <cmd> args..." (args NULL-terminated)
static int bi_run(int (*fn)(int, char**), const char* cmd, const char* const* args) {
    char* argv[40];
    int argc = 0;
    argv[argc++] = (char*)"./test_tmd";
    argv[argc++] = (char*)cmd;
    for (int i = 0; args[i] && argc < 39; i++) argv[argc++] = (char*)args[i];
    argv[argc] = NULL;
    fflush(stdout);
    return fn(argc, argv);
}
static int bi_world(int argc, char** argv) { return world_main(argc - 2, argv + 2); }

// a checkpoint of config c with random parameters and the given metadata pairs (official names)
static void bi_write_ckpt(const char* path, const WanConfig* c, const char* const* meta, int n_meta) {
    WanTensor* tl = (WanTensor*)malloc(sizeof(WanTensor) * WAN_MAX_TENSORS);
    double* buf = dalloc(wan_num_params(c));
    random_params(c, buf, 77);
    int nt = wan_layout(c, tl, NULL, NULL, NULL);
    StOut* o = (StOut*)calloc((size_t)nt, sizeof(StOut));
    for (int i = 0; i < nt; i++) {
        o[i].name = tl[i].name;
        o[i].ndim = tl[i].ndim;
        o[i].f64 = buf + tl[i].offset;
        for (int k = 0; k < tl[i].ndim; k++) o[i].shape[k] = tl[i].shape[k];
    }
    char err[ST_ERRLEN];
    EXPECT(st_write(path, o, nt, meta, n_meta, err) == 0, "%s", err);
    free(o);
    free(tl);
    free(buf);
}

// wan_load must refuse path with a message holding `word`
static void bi_expect_load_fails(const char* what, const char* path, const char* word) {
    WanConfig c;
    memset(&c, 0, sizeof(c));
    double* buf = NULL;
    char err[ST_ERRLEN] = "";
    int rc = wan_load(path, &c, 0, 0, &buf, err);
    int ok = rc != 0 && strstr(err, word) != NULL;
    printf("  %-46s %s | %s\n", what, ok ? "ok  " : "FAIL", rc ? err : "(accepted)");
    EXPECT(ok, "%s: expected a refusal saying '%s'", what, word);
    free(buf);
}

static void bi_expect_rc(const char* what, int rc, int want) {
    printf("  %-46s %s | exit code %d, expected %d\n", what, rc == want ? "ok  " : "FAIL", rc, want);
    EXPECT(rc == want, "%s: exit code %d, expected %d", what, rc, want);
}

static void bi_write_npy(const char* path, const float* v, int nd, const int64_t* shape) {
    char err[ST_ERRLEN];
    EXPECT(npy_write(path, v, nd, shape, err) == 0, "%s", err);
}

// the plain tiny checkpoint most cases run `forward` on
static const char* bi_tiny_ckpt(void) {
    static char p[1100];
    snprintf(p, sizeof(p), "%s/tiny.safetensors", bi_dir);
    if (access(p, R_OK) != 0) bi_write_ckpt(p, &bi_tiny, BI_HEADS, 1);
    return p;
}

// 1. a second __metadata__ object replaced the first's arrays while the count stayed (heap overflow, NULL strcmp);
//    any key repeated in any object is refused
static void bi_case1(void) {
    char p[1100], err[ST_ERRLEN];
    unsigned char z[16] = {0};
    StFile f;
    snprintf(p, sizeof(p), "%s/case1a.safetensors", bi_dir);
    io_write_raw_st(p,
                    "{\"__metadata__\":{\"a\":\"1\",\"b\":\"2\",\"c\":\"3\"},\"__metadata__\":{\"d\":\"4\"},"
                    "\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
                    z, 8, 0);
    int rc = st_open(&f, p, err);
    io_expect_fail("1. two __metadata__ objects", rc, err, p, "twice");
    if (!rc) st_close(&f);
    snprintf(p, sizeof(p), "%s/case1b.safetensors", bi_dir);
    io_write_raw_st(p, "{\"t\":{\"dtype\":\"F32\",\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,8]}}", z, 8, 0);
    rc = st_open(&f, p, err);
    io_expect_fail("1. a tensor entry with two dtypes", rc, err, p, "twice");
    if (!rc) st_close(&f);
}

// 2. sizes from files are bounded before anything is allocated (an unchecked calloc of the activations segfaulted)
static void bi_case2(void) {
    char p[1100], q[1100];
    const char* meta[] = {"num_heads", "4", "text_len", "100000000"};
    snprintf(p, sizeof(p), "%s/case2.safetensors", bi_dir);
    bi_write_ckpt(p, &bi_tiny, meta, 2);
    bi_expect_load_fails("2. metadata text_len 100,000,000", p, "text_len");
    snprintf(q, sizeof(q), "%s/case2_latent.npy", bi_dir);
    int64_t sh[4] = {3, 1, 2048, 1024};
    float* big = (float*)calloc((size_t)3 * 2048 * 1024, sizeof(float));
    bi_write_npy(q, big, 4, sh);
    free(big);
    const char* args[] = {"--weights", bi_tiny_ckpt(), "--latent", q, NULL};
    bi_expect_rc("2. forward on a 131,072-token latent", bi_run(cmd_forward, "forward", args), 1);
    remove(q);
}

// 3. metadata values and numeric flags are parsed strictly, each with a range (atoi / atof took anything)
static void bi_case3(void) {
    char p[1100];
    const char* bad[][3] = {{"eps", "nan", "3. metadata eps nan"},
                            {"eps", "-1", "3. metadata eps -1"},
                            {"num_heads", "99999999999", "3. metadata num_heads past int"},
                            {"num_heads", "4x", "3. metadata num_heads '4x'"}};
    for (int i = 0; i < 4; i++) {
        const char* meta[] = {"num_heads", "4", bad[i][0], bad[i][1]};
        snprintf(p, sizeof(p), "%s/case3_%d.safetensors", bi_dir, i);
        bi_write_ckpt(p, &bi_tiny, strcmp(bad[i][0], "num_heads") ? meta : meta + 2,
                      strcmp(bad[i][0], "num_heads") ? 2 : 1);
        bi_expect_load_fails(bad[i][2], p, bad[i][0]);
    }
    const char* w = bi_tiny_ckpt();
    const char* t_abc[] = {"--weights", w, "--timestep", "abc", NULL};
    bi_expect_rc("3. forward --timestep abc", bi_run(cmd_forward, "forward", t_abc), 2);
    const char* t_nan[] = {"--weights", w, "--timestep", "nan", NULL};
    bi_expect_rc("3. forward --timestep nan", bi_run(cmd_forward, "forward", t_nan), 2);
    const char* t_heads[] = {"--weights", w, "--heads", "4x", NULL};
    bi_expect_rc("3. forward --heads 4x", bi_run(cmd_forward, "forward", t_heads), 2);
    const char* d_lr[] = {
        "--teacher-lr", "nan", "--teacher-steps", "0", "--tmmf-steps",         "0", "--dmd-iters", "0",
        "--baseline",   "0",   "--eval-n",        "1", "--teacher-eval-steps", "1", NULL};
    bi_expect_rc("3. distill --teacher-lr nan", bi_run(cmd_distill, "distill", d_lr), 2);
}

// 4. NaN or Inf in a latent, context or timestep gave a NaN output file and exit 0
static void bi_case4(void) {
    char lp[1100], cp[1100];
    const char* w = bi_tiny_ckpt();
    float lat[3 * 16 * 16], ctx[5 * 32];
    Rng r = rng_make(3);
    for (int i = 0; i < 3 * 16 * 16; i++) lat[i] = (float)rng_normal(&r);
    for (int i = 0; i < 5 * 32; i++) ctx[i] = (float)rng_normal(&r);
    int64_t ls[4] = {3, 1, 16, 16}, cs[2] = {5, 32};
    snprintf(cp, sizeof(cp), "%s/case4_ctx.npy", bi_dir);
    bi_write_npy(cp, ctx, 2, cs);
    lat[100] = NAN;
    snprintf(lp, sizeof(lp), "%s/case4_lat_nan.npy", bi_dir);
    bi_write_npy(lp, lat, 4, ls);
    const char* a1[] = {"--weights", w, "--latent", lp, "--context", cp, NULL};
    bi_expect_rc("4. forward on a latent with a NaN", bi_run(cmd_forward, "forward", a1), 1);
    lat[100] = 0.5f;
    ctx[7] = INFINITY;
    snprintf(lp, sizeof(lp), "%s/case4_lat.npy", bi_dir);
    bi_write_npy(lp, lat, 4, ls);
    snprintf(cp, sizeof(cp), "%s/case4_ctx_inf.npy", bi_dir);
    bi_write_npy(cp, ctx, 2, cs);
    const char* a2[] = {"--weights", w, "--latent", lp, "--context", cp, NULL};
    bi_expect_rc("4. forward on a context with an Inf", bi_run(cmd_forward, "forward", a2), 1);
    const char* a3[] = {"--weights", w, "--latent", lp, "--timestep", "inf", NULL};
    bi_expect_rc("4. forward --timestep inf", bi_run(cmd_forward, "forward", a3), 2);
}

// 5. a 0-D context read cs[-1] (seen under ASan); the distillation's sheet, eval count and step counts are checked
static void bi_case5(void) {
    char cp[1100], sheet[1100];
    snprintf(cp, sizeof(cp), "%s/case5_ctx_0d.npy", bi_dir);
    float one = 1;
    bi_write_npy(cp, &one, 0, NULL);
    const char* a1[] = {"--weights", bi_tiny_ckpt(), "--context", cp, NULL};
    bi_expect_rc("5. forward on a 0-D context", bi_run(cmd_forward, "forward", a1), 1);
    snprintf(sheet, sizeof(sheet), "%s/case5_sheet.png", bi_dir);
    const char* fast[] = {"--teacher-steps", "0", "--tmmf-steps",         "0", "--dmd-iters", "0",
                          "--baseline",      "0", "--teacher-eval-steps", "1"};
    const char* cases[][5] = {{"5. distill --sheet with 2 eval clips", "--sheet", sheet, "--eval-n", "2"},
                              {"5. distill --eval-n 0", "--eval-n", "0", NULL, NULL},
                              {"5. distill --teacher-steps -5", "--teacher-steps", "-5", "--eval-n", "1"},
                              {"5. distill --dmd-iters -1", "--dmd-iters", "-1", "--eval-n", "1"}};
    for (int i = 0; i < 4; i++) {
        const char* args[16];
        int n = 0;
        for (int k = 0; k < 10; k++) args[n++] = fast[k];
        for (int k = 1; k < 5 && cases[i][k]; k++) args[n++] = cases[i][k]; // a later flag wins
        args[n] = NULL;
        bi_expect_rc(cases[i][0], bi_run(cmd_distill, "distill", args), 2);
    }
}

// 6. the shards of an index must be regular files inside the index's directory: an absolute path showed the first
//    bytes of any readable file as a "header length", and a FIFO hung the reader forever
static void bi_case6(void) {
    char sub[1100], q[1100], fifo[1200], ipath[1200];
    unsigned char z[16] = {0};
    snprintf(sub, sizeof(sub), "%s/case6", bi_dir);
    mkdir(sub, 0755);
    snprintf(q, sizeof(q), "%s/case6_outside.safetensors", bi_dir);
    io_write_raw_st(q, "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", z, 8, 0);
    const char* shard[3] = {q, "../case6_outside.safetensors", "fifo.safetensors"};
    const char* what[3] = {"6. index naming an absolute shard path", "6. index naming a shard in ../",
                           "6. index naming a FIFO as a shard"};
    const char* word[3] = {"inside", "inside", "regular file"};
    snprintf(fifo, sizeof(fifo), "%s/fifo.safetensors", sub);
    EXPECT(mkfifo(fifo, 0644) == 0, "mkfifo %s: %s", fifo, strerror(errno));
    for (int i = 0; i < 3; i++) {
        char idx[1400];
        snprintf(ipath, sizeof(ipath), "%s/c%d.safetensors.index.json", sub, i);
        snprintf(idx, sizeof(idx), "{\"metadata\":{},\"weight_map\":{\"t\":\"%s\"}}", shard[i]);
        io_write_bytes(ipath, idx, strlen(idx));
        // in a child with an alarm, so a reader that blocks on the FIFO fails the case instead of hanging the suite
        int fd[2];
        if (pipe(fd) != 0) {
            EXPECT(0, "pipe: %s", strerror(errno));
            continue;
        }
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0) {
            close(fd[0]);
            alarm(10);
            StSet s;
            char e2[ST_ERRLEN] = "";
            int r2 = st_set_open(&s, ipath, e2);
            if (!r2) snprintf(e2, sizeof(e2), "(accepted)");
            ssize_t wr = write(fd[1], e2, strlen(e2) + 1);
            (void)wr;
            _exit(r2 ? 1 : 0);
        }
        close(fd[1]);
        char e3[ST_ERRLEN] = "";
        ssize_t got = 0, k;
        while (got < (ssize_t)sizeof(e3) - 1 && (k = read(fd[0], e3 + got, sizeof(e3) - 1 - (size_t)got)) > 0) got += k;
        e3[got] = 0;
        close(fd[0]);
        int status = 0;
        waitpid(pid, &status, 0);
        int killed = WIFSIGNALED(status), r3 = WIFEXITED(status) ? WEXITSTATUS(status) : 1;
        if (killed) snprintf(e3, sizeof(e3), "(killed by signal %d: it hung or crashed)", WTERMSIG(status));
        int ok = !killed && r3 != 0 && strstr(e3, word[i]) != NULL;
        printf("  %-46s %s | %s\n", what[i], ok ? "ok  " : "FAIL", e3);
        EXPECT(ok, "%s: expected a refusal saying '%s'", what[i], word[i]);
    }
    remove(fifo);
}

// 7. a big header of nested empty arrays took gigabytes and seconds before it was refused: the root must be an
//    object, and the number of JSON values is capped while parsing
static void bi_case7(void) {
    char p[1100], err[ST_ERRLEN];
    StFile f;
    size_t n = 3u << 20; // 3 MB: a million empty arrays
    char* h = (char*)malloc(n + 64);
    size_t k = (size_t)snprintf(h, 64, "{\"a\":[");
    while (k + 8 < n) {
        memcpy(h + k, "[],", 3);
        k += 3;
    }
    memcpy(h + k, "[]]}", 5);
    snprintf(p, sizeof(p), "%s/case7a.safetensors", bi_dir);
    io_write_raw_st(p, h, NULL, 0, 0);
    double t0 = now_s();
    int rc = st_open(&f, p, err);
    double dt = now_s() - t0;
    io_expect_fail("7. a million empty arrays in one header", rc, err, p, "JSON values");
    printf("  (refused after %.3f s)\n", dt);
    h[0] = '[';
    memcpy(h + 1, "[],[],", 6);
    snprintf(p, sizeof(p), "%s/case7b.safetensors", bi_dir);
    io_write_raw_st(p, h, NULL, 0, 0);
    rc = st_open(&f, p, err);
    io_expect_fail("7. a header whose root is an array", rc, err, p, "starts with");
    free(h);
}

// 8. the head count: config.json beside the weights is read, and nothing silently guesses dim/128;
//    forward's default latent honours the temporal patch
static void bi_case8(void) {
    char sub[1100], p[1200], q[1200], err[ST_ERRLEN];
    snprintf(sub, sizeof(sub), "%s/case8_diffusers", bi_dir);
    mkdir(sub, 0755);
    snprintf(p, sizeof(p), "%s/diffusion_pytorch_model.safetensors", sub);
    bi_write_ckpt(p, &bi_tiny, NULL, 0);
    snprintf(q, sizeof(q), "%s/config.json", sub);
    const char* cfg =
        "{\"_class_name\": \"WanTransformer3DModel\", \"num_attention_heads\": 4, \"attention_head_dim\": 16,"
        " \"eps\": 1e-06, \"num_layers\": 4}";
    io_write_bytes(q, cfg, strlen(cfg));
    WanConfig c;
    memset(&c, 0, sizeof(c));
    double* buf = NULL;
    int rc = wan_load(sub, &c, 0, 0, &buf, err);
    int ok = rc == 0 && c.num_heads == 4;
    printf("  %-46s %s | %s\n", "8. heads from config.json beside the weights", ok ? "ok  " : "FAIL",
           rc ? err : "4 heads");
    EXPECT(ok, "config.json's 4 heads: rc %d, heads %d (%s)", rc, c.num_heads, rc ? err : "");
    free(buf);
    WanConfig wide = bi_tiny;
    wide.dim = 256;
    wide.num_layers = 1;
    snprintf(p, sizeof(p), "%s/case8_dim256.safetensors", bi_dir);
    bi_write_ckpt(p, &wide, NULL, 0);
    bi_expect_load_fails("8. dim 256, nothing says the head count", p, "heads");
    WanConfig pt2 = bi_tiny;
    pt2.patch[0] = 2;
    snprintf(p, sizeof(p), "%s/case8_patch_t2.safetensors", bi_dir);
    bi_write_ckpt(p, &pt2, BI_HEADS, 1);
    const char* args[] = {"--weights", p, NULL};
    bi_expect_rc("8. forward's default latent, temporal patch 2", bi_run(cmd_forward, "forward", args), 0);
}

// 9. `world score` without --real compared the evaluation set with itself (the Frechet term was always 0)
static void bi_case9(void) {
    char here[1024], sub[1100], p[1200], err[ST_ERRLEN];
    snprintf(sub, sizeof(sub), "%s/case9", bi_dir);
    mkdir(sub, 0755);
    snprintf(p, sizeof(p), "%s/data", sub);
    mkdir(p, 0755);
    WorldConfig wc = world_config_tiny();
    WorldSet s;
    world_generate(&wc, WORLD_HELDOUT, 8, 5, &s);
    snprintf(p, sizeof(p), "%s/data/world_tiny_eval.safetensors", sub);
    EXPECT(world_save(&s, p, 5, err) == 0, "%s", err);
    world_set_free(&s);
    if (!getcwd(here, sizeof(here)) || chdir(sub) != 0) {
        EXPECT(0, "cannot change into %s", sub);
        return;
    }
    const char* a1[] = {"score", "--clips", "data/world_tiny_eval.safetensors", NULL};
    bi_expect_rc("9. world score without --real (fails)", bi_run(bi_world, "world", a1) != 0, 1);
    const char* a2[] = {
        "score", "--clips", "data/world_tiny_eval.safetensors", "--real", "data/world_tiny_eval.safetensors", NULL};
    bi_expect_rc("9. world score --real the same file (fails)", bi_run(bi_world, "world", a2) != 0, 1);
    EXPECT(chdir(here) == 0, "cannot return to %s", here);
}

// the helpers behind the fixes: strict numbers, flag ranges and switches, and the checked allocation's message
static void bi_helpers(void) {
    long long i = 0;
    double x = 0;
    struct {
        const char* s;
        int ok;
    } ints[] = {{"12", 1},   {"-3", 1}, {"12 ", 0},
                {" 12", 0},  {"", 0},   {"1e3", 0},
                {"0x10", 0}, {"4x", 0}, {"99999999999999999999", 0},
                {"101", 0}};
    int good = 1;
    for (size_t k = 0; k < sizeof(ints) / sizeof(ints[0]); k++)
        good &= (parse_int(ints[k].s, -5, 100, &i) == NULL) == ints[k].ok;
    struct {
        const char* s;
        int ok;
    } reals[] = {{"0.5", 1},  {"-1e-3", 1}, {"1e400", 0}, {"nan", 0}, {"inf", 0},
                 {"-inf", 0}, {"0.5x", 0},  {"", 0},      {"2", 0}};
    for (size_t k = 0; k < sizeof(reals) / sizeof(reals[0]); k++)
        good &= (parse_double(reals[k].s, -1, 1, &x) == NULL) == reals[k].ok;
    printf("  %-46s %s | %zu integers, %zu reals accepted or refused as they should be\n", "parse_int, parse_double",
           good ? "ok  " : "FAIL", sizeof(ints) / sizeof(ints[0]), sizeof(reals) / sizeof(reals[0]));
    EXPECT(good, "parse_int / parse_double accepted or refused a value wrongly");
    int n = 3, sw = 0;
    long long big = 0;
    Flag flags[] = {FLAG_INT_R("--n", &n, 1, 5, "n"), FLAG_I64_R("--big", &big, 0, (long long)1 << 62, "big"),
                    FLAG_SWITCH("--sw", &sw, "a switch"), FLAG_END};
    char* ok_argv[] = {(char*)"p", (char*)"--sw",  (char*)"--n",
                       (char*)"5", (char*)"--big", (char*)"4611686018427387904"};
    char* bad_argv[] = {(char*)"p", (char*)"--n", (char*)"6"};
    int rc_ok = flags_parse(flags, 6, ok_argv, 1, "usage");
    int rc_bad = flags_parse(flags, 3, bad_argv, 1, "usage");
    int fl = rc_ok == 0 && sw == 1 && n == 5 && big == (long long)1 << 62 && rc_bad == 2 && n == 5;
    printf("  %-46s %s | in-range values set, --n 6 of 1..5 refused with exit code %d\n", "flags_parse ranges, switch",
           fl ? "ok  " : "FAIL", rc_bad);
    EXPECT(fl, "flags_parse: rc %d / %d, n %d, sw %d, big %lld", rc_ok, rc_bad, n, sw, big);
    // xmalloc of more than any machine has: exits 1 after naming what it was for and the bytes (in a child)
    int fd[2];
    if (pipe(fd) != 0) return;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        close(fd[0]);
        dup2(fd[1], 2);
        void* p = xmalloc((size_t)1 << 62, 4, "a test buffer");
        free(p);
        _exit(0);
    }
    close(fd[1]);
    char msg[512] = "";
    ssize_t got = 0, k;
    while (got < (ssize_t)sizeof(msg) - 1 && (k = read(fd[0], msg + got, sizeof(msg) - 1 - (size_t)got)) > 0) got += k;
    msg[got] = 0;
    close(fd[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    int am = WIFEXITED(status) && WEXITSTATUS(status) == 1 && strstr(msg, "a test buffer") && strstr(msg, "bytes");
    char* nl = strchr(msg, '\n');
    if (nl) *nl = 0;
    printf("  %-46s %s | %s\n", "xmalloc of 2^64 bytes", am ? "ok  " : "FAIL", msg);
    EXPECT(am, "xmalloc's failure: status %d, message '%s'", status, msg);
}

static void (*const BI_CASES[])(void) = {bi_helpers, bi_case1, bi_case2, bi_case3, bi_case4,
                                         bi_case5,   bi_case6, bi_case7, bi_case8, bi_case9};

static void test_bad_inputs(void) {
    printf("\n[inputs] every kind of bad input the hardening review found: refused with a message, never a crash\n");
    char err[ST_ERRLEN], cmd[800];
    snprintf(bi_dir, sizeof(bi_dir), "%s/bad_inputs", test_tmpdir);
    mkdir(bi_dir, 0755);
    wan_preset(&bi_tiny, "tiny", err);
    const char* only = getenv("TMD_BAD_INPUT_CASE"); // 1..9: one case (to try it on older code); 0: the helpers
    for (int i = 0; i < (int)(sizeof(BI_CASES) / sizeof(BI_CASES[0])); i++)
        if (!only || strtol(only, NULL, 10) == i) BI_CASES[i]();
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", bi_dir);
    EXPECT(system(cmd) == 0, "could not remove %s", bi_dir);
}

static int cmd_presets(void) {
    for (int i = 0; i < WAN_NUM_PRESETS; i++) {
        printf("%s: %s\n", WAN_PRESETS[i].name, WAN_PRESETS[i].what);
        wan_config_print(&WAN_PRESETS[i].c, stdout);
        wan_print_count(&WAN_PRESETS[i].c, stdout);
        printf("\n");
    }
    return 0;
}

// =========================================================================================================
// test groups: `./test_tmd test <group>...`; `./test_tmd` runs every FAST group (what `make test` does). A new group
// is one line here.

static void test_io_group(void) {
    printf("\n[io] safetensors and npy\n");
    test_io(test_tmpdir);
}
static void test_world_group(void) {
    printf("\n[world] the built-in world: grammar, renderer, text encoder, toy VBench\n");
    test_world();
}
static void test_measure_group(void) {
    printf("\n[measure] the per-caption distance to the distillation target and diversity\n");
    test_score_cond();
}
static void test_umt5_group(void) {
    test_umt5(test_tmpdir);
}
static void test_vae_group(void) {
    test_vae(test_tmpdir);
}
static void test_gpu_host_group(void) {
    test_gpu_host(test_tmpdir);
    test_cp();
    test_gemm_algo_cache();
}
static void test_grad_group(void) {
    test_layer_grads();
    test_gradcheck_catches_bugs();
    test_model_grads();
}

static void test_data_group(void) { test_latent_data(test_tmpdir); }
static void test_prompts_group(void) { test_prompts(test_tmpdir); }

enum { FAST, SLOW };
typedef struct {
    const char* name;
    void (*run)(void);
    const char* what;
    int speed;
} TestGroup;
static const TestGroup TEST_GROUPS[] = {
    {"presets", test_presets, "the presets' parameter and tensor counts", FAST},
    {"io", test_io_group, "safetensors and npy: round trips and one case per kind of corrupt file", FAST},
    {"inputs", test_bad_inputs, "bad input of every kind found so far: refused with a message, never a crash", FAST},
    {"world", test_world_group, "the built-in world: grammar, renderer, text encoder, toy VBench, PNG", FAST},
    {"measure", test_measure_group, "the per-caption distance to a target: planted generators ranked correctly", FAST},
    {"grad", test_grad_group, "finite-difference gradient checks of every layer and the whole model", FAST},
    {"weights", test_names_and_roundtrip, "official <-> diffusers names, save/load round trip, bad checkpoints", FAST},
    {"peer", test_peer_diffusers, "CPU forward and backward vs diffusers' WanTransformer3DModel", FAST},
    {"umt5", test_umt5_group, "SentencePiece ids and the umT5 encoder vs sentencepiece and transformers", FAST},
    {"vae", test_vae_group, "the Wan2.1 VAE vs diffusers' AutoencoderKLWan, cache memory, bad inputs", FAST},
    {"teacher", test_teacher, "AdamW, flow matching, Euler and UniPC with CFG, a tiny teacher run", FAST},
    {"tmd", test_tmd, "TMD: student, inner flow, TM-MF, DMD2-v gradients", FAST},
    {"disc", test_disc_multiscale, "the multiscale discriminator head (FastGen's): every layer by central differences", FAST},
    {"philox", test_philox, "the GPU noise's log, sin/cos and Box-Muller (lib/philox.h) against long-double libm", FAST},
    {"gpuhost", test_gpu_host_group, "the GPU programs' plain-C parts: VBench suite, memory plan, checkpoints, GEMM algorithm cache", FAST},
    {"data", test_data_group, "latent datasets for --data: ./test_tmd pack, the reader's checks, the data order, Table 7", FAST},
    {"prompts", test_prompts_group, "real prompts: the context cache, a Wan folder's parts, bad inputs, sample_tmd --dataset directories", FAST},
    {"smoke", test_distill_smoke, "a few steps of every distillation stage: finite losses, parameters move", FAST},
    {"distill", test_distill, "the tiny distillation and the paper's claim in miniature (make test-distill)", SLOW},
};
#define N_TEST_GROUPS ((int)(sizeof(TEST_GROUPS) / sizeof(TEST_GROUPS[0])))

static void test_list(FILE* out) {
    for (int i = 0; i < N_TEST_GROUPS; i++)
        fprintf(out, "  %-8s %s%s\n", TEST_GROUPS[i].name, TEST_GROUPS[i].what,
                TEST_GROUPS[i].speed == SLOW ? " [not in the default run]" : "");
}

// runs the named groups (all FAST groups when none is named); ends with "N passed, N failed"
static int run_tests(int n_names, char** names) {
    for (int k = 0; k < n_names; k++) {
        int found = 0;
        for (int i = 0; i < N_TEST_GROUPS; i++) found |= !strcmp(names[k], TEST_GROUPS[i].name);
        if (!found) {
            fprintf(stderr, "error: no test group '%s'; the groups are:\n", names[k]);
            test_list(stderr);
            return 2;
        }
    }
    const char* td = getenv("TMPDIR");
    if (td && *td) TMPDIR_ = td;
    snprintf(test_tmpdir, sizeof(test_tmpdir), "%s/test_tmd.%d", TMPDIR_, (int)getpid());
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "mkdir -p '%s'", test_tmpdir);
    if (system(cmd) != 0) {
        fprintf(stderr, "error: cannot create %s\n", test_tmpdir);
        return 1;
    }
    double t0 = now_s(), took[N_TEST_GROUPS];
    int ran[N_TEST_GROUPS], failed_before = 0;
    for (int i = 0; i < N_TEST_GROUPS; i++) {
        ran[i] = n_names == 0 && TEST_GROUPS[i].speed == FAST;
        for (int k = 0; k < n_names; k++) ran[i] |= !strcmp(names[k], TEST_GROUPS[i].name);
        if (!ran[i]) continue;
        double g0 = now_s();
        TEST_GROUPS[i].run();
        took[i] = now_s() - g0;
        ran[i] = tests_failed > failed_before ? 2 : 1;
        failed_before = tests_failed;
    }
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", test_tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", test_tmpdir);
    printf("\n");
    for (int i = 0; i < N_TEST_GROUPS; i++)
        if (ran[i]) printf("  %-8s %7.1f s  %s\n", TEST_GROUPS[i].name, took[i], ran[i] == 2 ? "FAILED" : "ok");
    printf("(%.1f s)\n%d passed, %d failed\n", now_s() - t0, tests_passed, tests_failed);
    return tests_failed ? 1 : 0;
}

int main(int argc, char** argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 1) return run_tests(0, NULL);
    if (!strcmp(argv[1], "test")) {
        if (argc > 2 && !strcmp(argv[2], "--list")) {
            printf("test groups (./test_tmd test <group>...; ./test_tmd alone runs all but those marked):\n");
            test_list(stdout);
            return 0;
        }
        return run_tests(argc - 2, argv + 2);
    }
    if (!strcmp(argv[1], "forward")) return cmd_forward(argc, argv);
    if (!strcmp(argv[1], "presets")) return cmd_presets();
    if (!strcmp(argv[1], "world")) return world_main(argc - 2, argv + 2);
    if (!strcmp(argv[1], "distill")) return cmd_distill(argc, argv);
    if (!strcmp(argv[1], "ablate")) return ablate_main(argc, argv);
    if (!strcmp(argv[1], "encode")) return umt5_cli_main(argc - 1, argv + 1);
    if (!strcmp(argv[1], "vae")) return vae_main(argc - 2, argv + 2);
    if (!strcmp(argv[1], "pack")) return pack_main(argc - 1, argv + 1);
    if (!strcmp(argv[1], "plan")) return stage_plan_main(argc, argv);
    printf(
        "usage: ./test_tmd                run every fast test group (what `make test` does)\n"
        "       ./test_tmd test G...      run the named test groups (./test_tmd test --list)\n"
        "       ./test_tmd forward ...    CPU forward of a checkpoint (./test_tmd forward --help)\n"
        "       ./test_tmd presets        print the presets and their parameter counts\n"
        "       ./test_tmd world ...      the built-in world: gen, sheet, score, render, encode (./test_tmd world "
        "--help)\n"
        "       ./test_tmd distill ...    the whole method on the CPU in the tiny world (./test_tmd distill --help)\n"
        "       ./test_tmd ablate ...     the paper's claims in miniature (./test_tmd ablate --help)\n"
        "       ./test_tmd encode ...     prompts to umT5 embeddings, no Python (./test_tmd encode --help)\n"
        "       ./test_tmd vae ...        the Wan2.1 VAE: decode, encode, info (./test_tmd vae --help)\n"
        "       ./test_tmd pack ...       latents + text embeddings (.npy) into a dataset for ./train_tmd --data (./test_tmd pack --help)\n"
        "       ./test_tmd plan ...       the memory plan of every ./train_tmd stage at Table 7's settings (./test_tmd plan --help)\n");
    return strcmp(argv[1], "--help") && strcmp(argv[1], "-h") ? 2 : 0;
}
