// gpu/umt5_gpu_tests.cuh: the GPU umT5 encoder (gpu/umt5_gpu.cuh) against the CPU reference (cpu/umt5_cpu.h in
// double, itself checked against transformers' UMT5EncoderModel by the test group `umt5`). Included by test_gpu.cu
// (lib/testing.h). Entry: test_umt5_gpu(small).
//   - tiny random configs built in memory (every layer its own weights and its own position bias table, BF16 values as
//     a real checkpoint stores them, so both builds read the same numbers): a batch of prompts of different lengths at
//     once, each prompt's valid rows against a CPU run of that prompt alone, the padding rows exactly zero. Lengths
//     past num_buckets/4 and past max_distance, so the log-spaced buckets and their cap are used.
//   - the committed peer vectors (dev/peer/vectors/umt5_a: F32, one file; umt5_b: BF16, 7 shards) through the real
//     loader, batched: against transformers' fp64 outputs.
//   - the comparisons can fail: the GPU output against the CPU reference of two wrong encoders (the position bias of
//     the blocks after the first dropped; the padding keys not masked) must be far outside the tolerance.
//   - bad input: an id outside the vocabulary, a prompt longer than text_len, more prompts than max_batch.
// Tolerance UMT5_GPU_TOL, relative to max|reference| of each prompt:
//   fp32 build: 1e-5 (fp32 arithmetic in another order than the double reference through 2-3 blocks; simulated: 1.5e-6
//     worst).
//   bf16 build: 3e-2, an estimate not yet measured (the simulator cannot run the bf16 build yet:
//     dev/results/umt5-gpu-sim-20261207.txt; a GPU run prints the measured error). Every floatX
//     tensor is rounded to 8 significant bits (2^-9 ≈ 2e-3 each); a block rounds its RMSNorm output, q, k, v, the
//     attention output, the FFN hidden pair and the gated product (7 roundings), 2-3 blocks about 20 in series,
//     ≈ √20·2e-3 ≈ 9e-3 as independent errors; the final RMSNorm rescales to unit RMS, so max|ref| is a few units.
//     A wrong formula (a missing bias table, an unmasked key) is 0.1 to 1 (the sensitivity lines below).
#pragma once
#include "umt5_gpu.cuh"
#include "../lib/rng.h"

#ifdef ENABLE_FP32
#define UMT5_GPU_TOL 1e-5
#else
#define UMT5_GPU_TOL 3e-2
#endif
#define UMT5_GPU_PEER_DIR "dev/peer/vectors"

// a random encoder of config c held in memory, every matrix its own BF16 values (uniform, variance 1/fan_in), norms
// near 1, bias tables uniform in [-1, 1]; *hold owns the matrices (free it after umt5_close)
static void umt5_gpu_random_model_(Umt5Model* m, const Umt5Config* c, uint64_t seed, unsigned char** hold) {
    memset(m, 0, sizeof(*m));
    m->c = *c;
    size_t d = (size_t)c->d_model, inner = (size_t)c->num_heads * c->d_kv, F = (size_t)c->d_ff;
    size_t per[7] = {inner * d, inner * d, inner * d, d * inner, F * d, F * d, d * F},
           cols[7] = {d, d, d, inner, d, d, F};
    size_t total = (size_t)c->vocab * d;
    for (int i = 0; i < 7; i++) total += per[i] * (size_t)c->num_layers;
    *hold = (unsigned char*)malloc(total * 2);
    m->layer = (Umt5Layer*)calloc((size_t)c->num_layers, sizeof(Umt5Layer));
    Rng r = rng_make(seed);
    size_t off = 0;
    UmMat* all[8 * 64];
    size_t nall = 0; // at most 63 layers in these tests
    for (int li = 0; li < c->num_layers; li++) {
        Umt5Layer* Y = &m->layer[li];
        UmMat* mats[7] = {&Y->q, &Y->k, &Y->v, &Y->o, &Y->wi0, &Y->wi1, &Y->wo};
        for (int i = 0; i < 7; i++) {
            mats[i]->rows = (int64_t)(per[i] / cols[i]);
            mats[i]->cols = (int64_t)cols[i];
            all[nall++] = mats[i];
        }
        Y->ln1 = (double*)malloc(sizeof(double) * d);
        Y->ln2 = (double*)malloc(sizeof(double) * d);
        Y->rel_bias = (double*)malloc(sizeof(double) * (size_t)c->num_buckets * c->num_heads);
        for (size_t k = 0; k < d; k++) {
            Y->ln1[k] = 1 + 0.2 * (rng_uniform(&r) - 0.5);
            Y->ln2[k] = 1 + 0.2 * (rng_uniform(&r) - 0.5);
        }
        for (int k = 0; k < c->num_buckets * c->num_heads; k++) Y->rel_bias[k] = 2 * rng_uniform(&r) - 1;
    }
    m->shared.rows = c->vocab;
    m->shared.cols = (int64_t)d;
    all[nall++] = &m->shared;
    for (size_t i = 0; i < nall; i++) {
        UmMat* W = all[i];
        double a = W == &m->shared ? 1.0 : sqrt(3.0 / (double)W->cols);
        size_t n = (size_t)(W->rows * W->cols);
        for (size_t k = 0; k < n; k++) {
            float v = (float)(a * (2 * rng_uniform(&r) - 1));
            uint32_t u;
            memcpy(&u, &v, 4);
            uint16_t h = (uint16_t)((u + 0x7fffu + ((u >> 16) & 1)) >> 16); // round to nearest even
            memcpy(*hold + 2 * (off + k), &h, 2);
        }
        W->fp = NULL;
        W->mem = *hold + 2 * off;
        W->begin = 0;
        W->dtype = ST_BF16;
        W->name = "random";
        off += n;
    }
    m->final_ln = (double*)malloc(sizeof(double) * d);
    for (size_t k = 0; k < d; k++) m->final_ln[k] = 1 + 0.2 * (rng_uniform(&r) - 0.5);
    char err[ST_ERRLEN];
    if (umt5_alloc_scratch(m, err)) {
        fprintf(stderr, "%s\n", err);
        exit(1);
    }
}

// the CPU reference of prompt (ids, len) as it should come out of the GPU: [len, d]
static double* umt5_gpu_cpu_ref_(Umt5Model* m, const int* ids, int len) {
    double* out = (double*)malloc(sizeof(double) * (size_t)len * m->c.d_model);
    char err[ST_ERRLEN];
    if (umt5_encode(m, ids, len, out, err)) {
        EXPECT(0, "CPU reference: %s", err);
        memset(out, 0, sizeof(double) * (size_t)len * m->c.d_model);
    }
    return out;
}

// max |a - b| / max |b| over n values
static double umt5_gpu_rel_(const double* a, const double* b, size_t n) {
    double e = 0, mx = 0;
    for (size_t i = 0; i < n; i++) {
        e = fmax(e, fabs(a[i] - b[i]));
        mx = fmax(mx, fabs(b[i]));
    }
    return e / (mx > 0 ? mx : 1);
}

// the GPU's prompt b rows [0, len) as double, and the max |value| of its rows [len, text_len) (must be 0)
static double* umt5_gpu_rows_(const float* ctx, int b, int len, int text_len, int d, double* pad_max) {
    double* g = (double*)malloc(sizeof(double) * (size_t)len * d);
    const float* o = ctx + (size_t)b * text_len * d;
    for (size_t i = 0; i < (size_t)len * d; i++) g[i] = o[i];
    double pm = 0;
    for (size_t i = (size_t)len * d; i < (size_t)text_len * d; i++) pm = fmax(pm, fabs((double)o[i]));
    *pad_max = pm;
    return g;
}

// One batch on a random config: each prompt against the CPU alone, the padding rows zero; then the two wrong encoders.
static void test_umt5_gpu_random(const Umt5Config* c, const int* lens, int B, int text_len, uint64_t seed) {
    char err[ST_ERRLEN], name[160];
    Umt5Model host;
    unsigned char* hold = NULL;
    umt5_gpu_random_model_(&host, c, seed, &hold);
    printf("  random ");
    umt5_config_print(c, stdout);
    Umt5Gpu g;
    if (umt5_gpu_init(&g, &host, B, text_len, err)) {
        EXPECT(0, "%s", err);
        free(hold);
        return;
    }
    umt5_gpu_print_plan(&g, stdout);
    Rng r = rng_make(seed + 1);
    int** ids = (int**)malloc(sizeof(int*) * B);
    int L = 0;
    for (int b = 0; b < B; b++) {
        ids[b] = (int*)malloc(sizeof(int) * text_len);
        for (int i = 0; i < text_len; i++) ids[b][i] = 1 + (int)(rng_uniform(&r) * (c->vocab - 1));
        if (lens[b] > L) L = lens[b];
    }
    int d = c->d_model;
    float* ctx = (float*)malloc(sizeof(float) * (size_t)B * text_len * d);
    for (size_t i = 0; i < (size_t)B * text_len * d; i++) ctx[i] = NAN; // every value must be written
    if (umt5_gpu_encode(&g, (const int* const*)ids, lens, B, ctx, err)) {
        EXPECT(0, "%s", err);
    } else {
        // the wrong encoders on the CPU: (a) the blocks after the first without their position bias
        Umt5Model* hm = &g.host;
        double** keep = (double**)malloc(sizeof(double*) * c->num_layers);
        double* zeros = (double*)calloc((size_t)c->num_buckets * c->num_heads, sizeof(double));
        double far_nobias = 0, far_nomask = 0, worst = 0; // the wrong encoders: the farthest prompt of the batch
        for (int b = 0; b < B; b++) {
            double pad_max;
            double* got = umt5_gpu_rows_(ctx, b, lens[b], text_len, d, &pad_max);
            double* ref = umt5_gpu_cpu_ref_(hm, ids[b], lens[b]);
            snprintf(name, sizeof(name), "prompt %d of %d (%d tokens, batch padded to %d)", b, B, lens[b], L);
            expect_close_scaled(name, got, ref, (long)lens[b] * d, UMT5_GPU_TOL);
            worst = fmax(worst, umt5_gpu_rel_(got, ref, (size_t)lens[b] * d));
            EXPECT(pad_max == 0, "prompt %d: the padding rows %d..%d are not zero (max %g)", b, lens[b], text_len - 1,
                   pad_max);
            for (int li = 1; li < c->num_layers; li++) {
                keep[li] = hm->layer[li].rel_bias;
                hm->layer[li].rel_bias = zeros;
            }
            double* wrong = umt5_gpu_cpu_ref_(hm, ids[b], lens[b]);
            for (int li = 1; li < c->num_layers; li++) hm->layer[li].rel_bias = keep[li];
            far_nobias =
                fmax(far_nobias,
                     umt5_gpu_rel_(got, wrong, (size_t)lens[b] * d)); // 0 for a 1-token prompt: one key, any bias
            free(wrong);
            if (lens[b] < L) { // (b) the padding keys not masked: the prompt run on L tokens, pad id 0 after its own
                int* padded = (int*)malloc(sizeof(int) * L);
                for (int i = 0; i < L; i++) padded[i] = i < lens[b] ? ids[b][i] : 0;
                double* un = umt5_gpu_cpu_ref_(hm, padded, L);
                far_nomask = fmax(far_nomask, umt5_gpu_rel_(got, un, (size_t)lens[b] * d));
                free(un);
                free(padded);
            }
            free(got);
            free(ref);
        }
        printf("  padding rows: all zero; worst prompt %.3e; the GPU against wrong encoders (must be far, farthest "
               "prompt): blocks > 0 "
               "without their position bias %.3e, padding keys unmasked %.3e\n",
               worst, far_nobias, far_nomask);
        EXPECT(far_nobias > 10 * UMT5_GPU_TOL && far_nomask > 10 * UMT5_GPU_TOL,
               "the check cannot tell a wrong encoder: %.3e (no bias) %.3e (no mask) against tolerance %.0e",
               far_nobias, far_nomask, UMT5_GPU_TOL);
        free(keep);
        free(zeros);
        // a second encode of the same batch gives the same bits (no atomics, buffers fully rewritten)
        float* again = (float*)malloc(sizeof(float) * (size_t)B * text_len * d);
        if (umt5_gpu_encode(&g, (const int* const*)ids, lens, B, again, err))
            EXPECT(0, "%s", err);
        else {
            int same = memcmp(again, ctx, sizeof(float) * (size_t)B * text_len * d) == 0;
            printf("  a second encode of the same batch: %s\n", same ? "the same bits" : "DIFFERENT");
            EXPECT(same, "a second encode differs");
        }
        free(again);
        // bad input: an id past the vocabulary, a prompt longer than text_len, too many prompts
        int keep_id = ids[0][0];
        ids[0][0] = c->vocab;
        int rc = umt5_gpu_encode(&g, (const int* const*)ids, lens, B, ctx, err);
        printf("  id %d with a vocabulary of %d -> %s\n", c->vocab, c->vocab, rc ? err : "(accepted!)");
        EXPECT(rc != 0 && strstr(err, "vocabulary"), "an out-of-vocabulary id was accepted");
        ids[0][0] = keep_id;
        int* long_lens = (int*)malloc(sizeof(int) * B);
        memcpy(long_lens, lens, sizeof(int) * B);
        long_lens[0] = text_len + 1;
        rc = umt5_gpu_encode(&g, (const int* const*)ids, long_lens, B, ctx, err);
        printf("  a prompt of %d tokens with text_len %d -> %s\n", text_len + 1, text_len, rc ? err : "(accepted!)");
        EXPECT(rc != 0 && strstr(err, "tokens"), "a prompt over text_len was accepted");
        rc = umt5_gpu_encode(&g, (const int* const*)ids, lens, B + 1, ctx, err);
        printf("  %d prompts with max_batch %d -> %s\n", B + 1, B, rc ? err : "(accepted!)");
        EXPECT(rc != 0, "more prompts than max_batch were accepted");
        free(long_lens);
    }
    for (int b = 0; b < B; b++) free(ids[b]);
    free(ids);
    free(ctx);
    umt5_gpu_close(&g);
    free(hold);
}

// a committed peer model through the real loader, its cases in one batch, against transformers' fp64 outputs
static void test_umt5_gpu_peer(const char* dir, const char* const* cases, int ncases) {
    char err[ST_ERRLEN], path[512], nm[160];
    StFile io;
    snprintf(path, sizeof(path), "%s/umt5_io.safetensors", UMT5_GPU_PEER_DIR);
    if (st_open(&io, path, err)) {
        EXPECT(0, "%s", err);
        return;
    }
    int* lens = (int*)malloc(sizeof(int) * ncases);
    int** ids = (int**)calloc((size_t)ncases, sizeof(int*));
    double** want = (double**)calloc((size_t)ncases, sizeof(double*));
    int ok = 1, text_len = 0;
    for (int k = 0; k < ncases && ok; k++) {
        snprintf(nm, sizeof(nm), "ids_%s", cases[k]);
        const StTensor* t = st_find(&io, nm);
        snprintf(nm, sizeof(nm), "out64_%s", cases[k]);
        const StTensor* o = st_find(&io, nm);
        if (!t || !o) {
            EXPECT(0, "%s: case %s missing (dev/peer/make_umt5_vectors.py)", path, cases[k]);
            ok = 0;
            break;
        }
        double* idf = (double*)malloc(sizeof(double) * (size_t)t->numel);
        want[k] = (double*)malloc(sizeof(double) * (size_t)o->numel);
        if (st_read_double(&io, t, idf, err) || st_read_double(&io, o, want[k], err)) {
            EXPECT(0, "%s", err);
            ok = 0;
            free(idf);
            break;
        }
        lens[k] = (int)t->numel;
        ids[k] = (int*)malloc(sizeof(int) * lens[k]);
        for (int i = 0; i < lens[k]; i++) ids[k][i] = (int)idf[i];
        free(idf);
        if (lens[k] > text_len) text_len = lens[k];
    }
    text_len += 3; // a few padding rows after the longest
    snprintf(path, sizeof(path), "%s/%s", UMT5_GPU_PEER_DIR, dir);
    Umt5Gpu g;
    if (ok && umt5_gpu_open(&g, path, ncases, text_len, err)) {
        EXPECT(0, "%s", err);
        ok = 0;
    }
    if (ok) {
        int d = g.host.c.d_model;
        printf("  %s (%s, %d file%s): ", dir, st_dtype_name(g.host.shared.dtype), g.host.set.n_files,
               g.host.set.n_files > 1 ? "s" : "");
        umt5_config_print(&g.host.c, stdout);
        float* ctx = (float*)malloc(sizeof(float) * (size_t)ncases * text_len * d);
        if (umt5_gpu_encode(&g, (const int* const*)ids, lens, ncases, ctx, err))
            EXPECT(0, "%s", err);
        else
            for (int k = 0; k < ncases; k++) {
                double pad_max;
                double* got = umt5_gpu_rows_(ctx, k, lens[k], text_len, d, &pad_max);
                snprintf(nm, sizeof(nm), "%s (%d tokens) vs fp64, batch of %d", cases[k], lens[k], ncases);
                expect_close_scaled(nm, got, want[k], (long)lens[k] * d, UMT5_GPU_TOL);
                EXPECT(pad_max == 0, "%s: padding rows not zero (max %g)", cases[k], pad_max);
                free(got);
            }
        free(ctx);
        umt5_gpu_close(&g);
    }
    for (int k = 0; k < ncases; k++) {
        free(ids[k]);
        free(want[k]);
    }
    free(ids);
    free(want);
    free(lens);
    st_close(&io);
}

// small: the simulator's sizes (umt5_b's 500-token case left out)
static void test_umt5_gpu(int small) {
    printf("\n[umt5] the GPU umT5 encoder (%s, GEMM: %s) vs the CPU reference (double), tolerance %.0e of max|ref| per "
           "prompt\n",
           FLOATX_NAME,
#ifdef GEMM_OWN
           "in-repo tiled",
#else
           "cuBLASLt",
#endif
           UMT5_GPU_TOL);
    // every dimension distinct; lengths past num_buckets/4 = 8 (log buckets) and past max_distance (the cap)
    Umt5Config c1 = {101, 40, 8, 5, 72, 3, 32, 20, 1e-6};
    int lens1[3] = {23, 1, 37};
    test_umt5_gpu_random(&c1, lens1, 3, 45, 7);
    Umt5Config c2 = {64, 32, 16, 2, 48, 2, 16, 12, 1e-6};
    int lens2[2] = {6, 19};
    test_umt5_gpu_random(&c2, lens2, 2, 19, 8);
    const char* a_cases[3] = {"a_len1", "a_len7", "a_prompt"};
    test_umt5_gpu_peer("umt5_a", a_cases, 3);
    const char* b_cases[2] = {"b_len7", "b_len500"};
    test_umt5_gpu_peer("umt5_b", b_cases, small ? 1 : 2);
}
