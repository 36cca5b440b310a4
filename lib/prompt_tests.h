// lib/prompt_tests.h: test_prompts(tmpdir), the group "prompts" of `make test`: the host side of real prompts in
// sample_tmd: the context cache (lib/ctx_cache.h: keys, invalidation), the prompt pipeline on the tiny committed umT5
// (cpu/prompt_ctx.h: misses encoded and cached, a rerun served from the cache without opening the encoder, a long
// prompt cut with a warning), a diffusers folder's parts (lib/wan_parts.h) and each bad input refused before GPU
// work, and the dataset directories of sample_tmd --dataset (lib/latent_data.h): writer → train_tmd --data reader
// round trip, resume of a half-written dataset, the rank split, another model's shards.
#pragma once
#include "testing.h"
#include "ctx_cache.h"
#include "wan_parts.h"
#include "vbench.h"
#include "../cpu/prompt_ctx.h"
#include "../gpu/train_data.h"
#include "../gpu/kd_dataset.h"   // sample_tmd --dataset --kd-pairs: the KD warm-up's pairs beside a dataset

#define PT_DIR "dev/peer/vectors"

static int pt_contains(const char* s, const char* what) { return strstr(s, what) != NULL; }
static void pt_write(const char* path, const void* p, size_t n) { FILE* f = fopen(path, "wb"); if (f) { fwrite(p, 1, n, f); fclose(f); } }
static int pt_copy(const char* from, const char* to) {
    FILE* a = fopen(from, "rb"); FILE* b = fopen(to, "wb");
    if (!a || !b) { if (a) fclose(a); if (b) fclose(b); return 1; }
    char buf[65536]; size_t n;
    while ((n = fread(buf, 1, sizeof(buf), a)) > 0) fwrite(buf, 1, n, b);
    fclose(a); fclose(b);
    return 0;
}

// ---------------------------------------------------------------------------------------------------------
static void test_ctx_cache(const char* tmp) {
    printf("\n[prompts] the context cache: keys, hits, invalidation\n");
    char err[ST_ERRLEN], root[600], tok[300], tok2[700], big[700];
    snprintf(root, sizeof(root), "%s/prompts/cache", tmp);
    snprintf(tok, sizeof(tok), "%s/spm_nfkc_bf.model", PT_DIR);
    uint64_t fa = 0, fb = 0, fa2 = 0;
    EXPECT(cc_encoder_fingerprint(&fa, PT_DIR "/umt5_a", tok, err) == 0, "%s", err);
    EXPECT(cc_encoder_fingerprint(&fa2, PT_DIR "/umt5_a", tok, err) == 0, "%s", err);
    EXPECT(cc_encoder_fingerprint(&fb, PT_DIR "/umt5_b", tok, err) == 0, "%s", err);
    // one byte of the tokenizer changed: another fingerprint
    snprintf(tok2, sizeof(tok2), "%s/prompts/spm_copy.model", tmp);
    char cmd[1600]; snprintf(cmd, sizeof(cmd), "mkdir -p '%s/prompts'", tmp); EXPECT(system(cmd) == 0, "mkdir");
    EXPECT(pt_copy(tok, tok2) == 0, "copy %s", tok);
    FILE* f = fopen(tok2, "r+b"); fseek(f, 5000, SEEK_SET); int c = fgetc(f); fseek(f, 5000, SEEK_SET); fputc(c ^ 1, f); fclose(f);
    uint64_t ft = 0; EXPECT(cc_encoder_fingerprint(&ft, PT_DIR "/umt5_a", tok2, err) == 0, "%s", err);
    printf("  fingerprints: umt5_a %016llx (again %016llx), umt5_b %016llx, umt5_a with one tokenizer byte flipped %016llx\n",
           (unsigned long long)fa, (unsigned long long)fa2, (unsigned long long)fb, (unsigned long long)ft);
    EXPECT(fa == fa2 && fa != fb && fa != ft, "the fingerprint must be stable and tell encoders and tokenizers apart");
    // a file past 16 MiB is sampled: a byte changed at a sampled offset past the first MiB still changes it
    snprintf(big, sizeof(big), "%s/prompts/big.bin", tmp);
    size_t nb = (17u << 20) + 12345;
    unsigned char* z = (unsigned char*)calloc(nb, 1);
    pt_write(big, z, nb);
    uint64_t h1 = CC_FNV_START, h2 = CC_FNV_START;
    EXPECT(cc_file_fingerprint(&h1, big, err) == 0, "%s", err);
    uint64_t off = (1u << 20) + (nb - (1u << 20) - 4096) / 63 * 40 + 100;   // inside the 41st sample
    z[off] = 7; pt_write(big, z, nb); free(z);
    EXPECT(cc_file_fingerprint(&h2, big, err) == 0, "%s", err);
    printf("  a 17 MiB file with one byte changed at %llu (a sampled 4 KiB block): fingerprint %s\n", (unsigned long long)off, h1 != h2 ? "changed" : "SAME");
    EXPECT(h1 != h2, "the sampled fingerprint missed a change in a sampled block");
    remove(big);

    // store and load: the valid rows back bit for bit, zero rows after; another prompt, encoder or text_len misses
    CtxCache ca, cb, ca8;
    EXPECT(cc_init(&ca, root, fa, 10, 6, err) == 0, "%s", err);
    EXPECT(cc_init(&cb, root, fb, 10, 6, err) == 0, "%s", err);
    EXPECT(cc_init(&ca8, root, fa, 8, 6, err) == 0, "%s", err);
    float ctx[60], got[60];
    Rng r = rng_make(7);
    for (int k = 0; k < 60; k++) ctx[k] = k < 18 ? (float)rng_normal(&r) : 0.f;
    EXPECT(cc_store(&ca, "a red fox", ctx, 3, err) == 0, "%s", err);
    int rows = 0, same = 1;
    for (int k = 0; k < 60; k++) got[k] = 99.f;
    int hit = cc_load(&ca, "a red fox", got, &rows, NULL);
    for (int k = 0; k < 60; k++) same &= got[k] == ctx[k];
    printf("  stored 3 rows of 6 for \"a red fox\": load %s, %d rows, values and zero padding %s\n", hit ? "hit" : "MISS", rows, same ? "equal" : "DIFFER");
    EXPECT(hit && rows == 3 && same, "cache round trip");
    EXPECT(!cc_load(&ca, "a red fox.", got, &rows, NULL), "another prompt must miss");
    EXPECT(!cc_load(&cb, "a red fox", got, &rows, NULL), "another encoder's fingerprint must miss");
    EXPECT(!cc_load(&ca8, "a red fox", got, &rows, NULL), "another text_len must miss");
    EXPECT(cc_key(&ca, "x") != cc_key(&cb, "x") && cc_key(&ca, "x") != cc_key(&ca8, "x") && cc_key(&ca, "x") != cc_key(&ca, "y"),
           "keys must depend on fingerprint, text_len and prompt");
    // a file under a prompt's key that holds another prompt (a collision, a copied file) or another encoder: a miss
    // with its reason, then overwritten by the next store
    char pa[1200], pb[1200];
    EXPECT(cc_store(&ca, "another prompt", ctx, 2, err) == 0, "%s", err);
    cc_path(&ca, "another prompt", pa, sizeof(pa)); cc_path(&ca, "a red fox", pb, sizeof(pb));
    EXPECT(rename(pa, pb) == 0, "rename");
    char why[ST_ERRLEN];
    hit = cc_load(&ca, "a red fox", got, &rows, why);
    printf("  a file under the key of \"a red fox\" holding \"another prompt\": %s (%s)\n", hit ? "HIT" : "miss", why);
    EXPECT(!hit && pt_contains(why, "another prompt"), "a collision must miss with its reason, got '%s'", why);
    cc_path(&cb, "a red fox", pa, sizeof(pa));
    EXPECT(cc_store(&cb, "a red fox", ctx, 3, err) == 0, "%s", err);
    EXPECT(pt_copy(pa, pb) == 0, "copy");   // umt5_b's file copied into umt5_a's directory under the same key name
    hit = cc_load(&ca, "a red fox", got, &rows, why);
    printf("  another encoder's file copied under this encoder's key: %s (%s)\n", hit ? "HIT" : "miss", why);
    EXPECT(!hit && pt_contains(why, "fingerprint"), "another fingerprint must miss, got '%s'", why);
    EXPECT(cc_store(&ca, "a red fox", ctx, 3, err) == 0 && cc_load(&ca, "a red fox", got, &rows, NULL), "store over a stale file");
    CtxCache none; cc_init(&none, NULL, fa, 10, 6, err);
    EXPECT(cc_store(&none, "q", ctx, 3, err) == 0 && !cc_load(&none, "q", got, &rows, NULL), "no cache directory: stores nothing, always misses");
}

// the CPU encoder on the committed tiny umT5 (config A: vocab 560 = spm_nfkc_bf.model, d_model 48) through PromptCtx
static void test_prompt_pipeline(const char* tmp) {
    printf("\n[prompts] prompts to contexts: tokenizer -> umT5 (CPU backend) -> cache; a rerun reads the cache only\n");
    char err[ST_ERRLEN], root[600], tok[300];
    snprintf(root, sizeof(root), "%s/prompts/cache2", tmp);
    snprintf(tok, sizeof(tok), "%s/spm_nfkc_bf.model", PT_DIR);
    const char* prompts[3] = {"A panda drinking coffee in a cafe in Paris", "a cat", "A panda drinking coffee in a cafe in Paris"};
    int TL = 40, D = 48;
    PromptCtx pc;
    if (pc_open(&pc, PT_DIR "/umt5_a", tok, root, TL, D, NULL, err)) { EXPECT(0, "%s", err); return; }
    float* out = (float*)malloc(sizeof(float) * 3 * TL * D); int rows[3];
    EXPECT(pc_encode(&pc, prompts, 3, out, rows, err) == 0, "%s", err);
    printf("  first run: %d hits, %d misses (encoder opened: %s), rows %d %d %d\n", pc.hits, pc.misses, pc.be_open ? "yes" : "no", rows[0], rows[1], rows[2]);
    EXPECT(pc.misses == 3 && pc.hits == 0 && pc.be_open, "3 misses expected");
    // the reference: the same ids through umt5_encode directly
    int ids[64]; int trunc = 0; Umt5Model m;
    int n = spm_wan_ids(&pc.sp, prompts[1], TL, ids, &trunc, err);
    if (n > 0 && umt5_open(&m, PT_DIR "/umt5_a", err) == 0) {
        double* h = (double*)malloc(sizeof(double) * n * D);
        umt5_encode(&m, ids, n, h, err);
        double md = 0, pad = 0;
        for (int k = 0; k < n * D; k++) md = fmax(md, fabs(out[TL * D + k] - (float)h[k]));
        for (int k = n * D; k < TL * D; k++) pad = fmax(pad, fabs(out[TL * D + k]));
        printf("  \"a cat\": %d tokens, max |pipeline - umt5_encode| %g, padding rows max %g\n", n, md, pad);
        EXPECT(n == rows[1] && md == 0 && pad == 0, "the pipeline's context must be the encoder's, zero-padded");
        free(h); umt5_close(&m);
    } else EXPECT(0, "%s", err);
    pc_close(&pc);
    // a rerun: every prompt from the cache, the encoder never opened, the same numbers
    float* out2 = (float*)malloc(sizeof(float) * 3 * TL * D);
    PromptCtx pc2;
    if (pc_open(&pc2, PT_DIR "/umt5_a", tok, root, TL, D, NULL, err) == 0) {
        EXPECT(pc_encode(&pc2, prompts, 3, out2, rows, err) == 0, "%s", err);
        int same = memcmp(out, out2, sizeof(float) * 3 * TL * D) == 0;
        printf("  rerun: %d hits, %d misses (encoder opened: %s), contexts %s\n", pc2.hits, pc2.misses, pc2.be_open ? "yes" : "no", same ? "identical" : "DIFFER");
        EXPECT(pc2.hits == 3 && pc2.misses == 0 && !pc2.be_open && same, "a rerun must come from the cache");
        float* one = (float*)malloc(sizeof(float) * TL * D); int r1 = 0;
        EXPECT(pc_context(&pc2, prompts[1], one, &r1, err) == 0 && r1 == rows[1] && !memcmp(one, out2 + TL * D, sizeof(float) * TL * D), "pc_context: %s", err);
        free(one);
        pc_close(&pc2);
    } else EXPECT(0, "%s", err);
    // a prompt longer than text_len tokens: cut to text_len − 1 pieces + </s>, with a warning
    PromptCtx pc3;
    if (pc_open(&pc3, PT_DIR "/umt5_a", tok, NULL, 8, D, NULL, err) == 0) {
        const char* longp[1] = {"a very long prompt about a panda drinking coffee in a small cafe in Paris on a rainy day"};
        int r8 = 0; float* o8 = (float*)malloc(sizeof(float) * 8 * D);
        EXPECT(pc_encode(&pc3, longp, 1, o8, &r8, err) == 0, "%s", err);
        printf("  a prompt longer than text_len 8: %d rows kept, %d prompt cut with a warning\n", r8, pc3.truncated_prompts);
        EXPECT(r8 == 8 && pc3.truncated_prompts == 1, "a long prompt must be cut to text_len with a warning");
        free(o8); pc_close(&pc3);
    } else EXPECT(0, "%s", err);
    free(out); free(out2);
}

// a batched backend (what the GPU encoder is to cpu/prompt_ctx.h): batches of up to 2, each sequence through the CPU
// encoder; it records the batch sizes it was given
typedef struct { Umt5Model m; int text_len, calls, sizes[16], opened; } PtBatched;
static int ptb_open(void* e, const char* weights, int text_len, int* max_batch, char* err) {
    PtBatched* b = (PtBatched*)e; b->text_len = text_len; *max_batch = 2; b->opened++;
    return umt5_open(&b->m, weights, err);
}
static int ptb_encode(void* e, const int* const* ids, const int* lens, int B, float* out, char* err) {
    PtBatched* b = (PtBatched*)e;
    int d = b->m.c.d_model;
    if (b->calls < 16) b->sizes[b->calls] = B;
    b->calls++;
    memset(out, 0, sizeof(float) * (size_t)B * b->text_len * d);
    for (int i = 0; i < B; i++) {
        double* h = (double*)malloc(sizeof(double) * (size_t)lens[i] * d);
        if (umt5_encode(&b->m, ids[i], lens[i], h, err)) { free(h); return 1; }
        for (int k = 0; k < lens[i] * d; k++) out[(size_t)i * b->text_len * d + k] = (float)h[k];
        free(h);
    }
    return 0;
}
static void ptb_close(void* e) { umt5_close(&((PtBatched*)e)->m); }

static void test_prompt_batches(const char* tmp) {
    printf("\n[prompts] a batched encoder backend (the GPU encoder's seam): misses in batches, each prompt in its place\n");
    char err[ST_ERRLEN], root[600], tok[300];
    snprintf(root, sizeof(root), "%s/prompts/cache3", tmp);
    snprintf(tok, sizeof(tok), "%s/spm_nfkc_bf.model", PT_DIR);
    const char* prompts[5] = {"a cat", "rain over Paris at night", "a cat", "waves breaking", "a tiny robot dancing on the table"};
    int TL = 24, D = 48;
    size_t nctx = (size_t)TL * D;
    float* ref = (float*)malloc(sizeof(float) * 5 * nctx); float* got = (float*)malloc(sizeof(float) * 5 * nctx);
    int rr[5], rg[5];
    PromptCtx a;   // the reference: the CPU backend, one prompt at a time, no cache
    if (pc_open(&a, PT_DIR "/umt5_a", tok, NULL, TL, D, NULL, err)) { EXPECT(0, "%s", err); free(ref); free(got); return; }
    EXPECT(pc_encode(&a, prompts, 5, ref, rr, err) == 0, "%s", err);
    pc_close(&a);
    // prompt 1 cached beforehand: the misses are 0, 2, 3, 4 (2 repeats 0: encoded again, both stored under one key)
    PtBatched be; memset(&be, 0, sizeof(be));
    PcBackend pb = {ptb_open, ptb_encode, ptb_close, &be, "a test backend, batches of 2"};
    PromptCtx b;
    if (pc_open(&b, PT_DIR "/umt5_a", tok, root, TL, D, &pb, err)) { EXPECT(0, "%s", err); free(ref); free(got); return; }
    EXPECT(cc_store(&b.cache, prompts[1], ref + nctx, rr[1], err) == 0, "%s", err);
    EXPECT(pc_encode(&b, prompts, 5, got, rg, err) == 0, "%s", err);
    int same = memcmp(ref, got, sizeof(float) * 5 * nctx) == 0 && !memcmp(rr, rg, sizeof(rr));
    printf("  5 prompts, 1 cached: %d hit, %d misses in %d calls of sizes %d, %d; contexts and rows %s the one-at-a-time CPU run's\n", b.hits, b.misses,
           be.calls, be.sizes[0], be.sizes[1], same ? "equal to" : "DIFFER from");
    EXPECT(b.hits == 1 && b.misses == 4 && be.calls == 2 && be.sizes[0] == 2 && be.sizes[1] == 2 && same, "batched encoding");
    pc_close(&b);
    free(ref); free(got);
}

// a tiny diffusers-style folder: transformer/ (a DiT of text_dim `text_dim`), text_encoder/ (umt5_a), tokenizer/
// spiece.model (spm_nfkc_bf), vae/ (vae_b)
static void pt_make_folder(const char* dir, int text_dim, int with_tokenizer) {
    char cmd[3000], cwd[1024], err[ST_ERRLEN];
    if (!getcwd(cwd, sizeof(cwd))) cwd[0] = 0;
    snprintf(cmd, sizeof(cmd), "rm -rf '%s' && mkdir -p '%s/transformer' '%s/vae' && ln -s '%s/" PT_DIR "/umt5_a' '%s/text_encoder' && "
             "ln -s '%s/" PT_DIR "/vae_b_diffusers.safetensors' '%s/vae/diffusion_pytorch_model.safetensors'", dir, dir, dir, cwd, dir, cwd, dir);
    EXPECT(system(cmd) == 0, "%s", cmd);
    if (with_tokenizer) {
        snprintf(cmd, sizeof(cmd), "mkdir -p '%s/tokenizer' && ln -s '%s/" PT_DIR "/spm_nfkc_bf.model' '%s/tokenizer/spiece.model'", dir, cwd, dir);
        EXPECT(system(cmd) == 0, "%s", cmd);
    }
    WanConfig c; wan_preset(&c, "tiny", err); c.text_dim = text_dim;
    real* p = (real*)calloc(wan_num_params(&c), sizeof(real));
    char path[1200]; snprintf(path, sizeof(path), "%s/transformer/diffusion_pytorch_model.safetensors", dir);
    EXPECT(wan_save(path, &c, p, NULL, 0, err) == 0, "%s", err);
    free(p);
}

static void test_wan_folder(const char* tmp) {
    printf("\n[prompts] a diffusers Wan2.1 folder: its parts found, each bad input refused with a message\n");
    char dir[700], err[ST_ERRLEN], tok[300], path[1200];
    snprintf(dir, sizeof(dir), "%s/prompts/Wan-tiny", tmp);
    snprintf(tok, sizeof(tok), "%s/spm_nfkc_bf.model", PT_DIR);
    pt_make_folder(dir, 48, 1);
    WanParts w;
    int rc = wan_parts_find(&w, dir, NULL, NULL, NULL, NULL, "detv", err);
    printf("  found: %s | %s | %s | %s\n", w.transformer, w.text_encoder, w.tokenizer, w.vae);
    EXPECT(rc == 0 && pt_contains(w.transformer, "/transformer") && pt_contains(w.text_encoder, "/text_encoder") &&
           pt_contains(w.tokenizer, "tokenizer/spiece.model") && pt_contains(w.vae, "vae/diffusion_pytorch_model.safetensors"), "discovery: %s", err);
    rc = wan_parts_find(&w, dir, NULL, NULL, tok, NULL, "detv", err);
    EXPECT(rc == 0 && !strcmp(w.tokenizer, tok), "a --tokenizer flag must win over the folder's");
    // the DiT's text width from its header, and the checks that pass
    WanConfig pc; snprintf(path, sizeof(path), "%s/transformer", dir);
    rc = train_data_peek_config(&pc, NULL, path, 0, err);
    SpmModel sp; int sp_ok = spm_load(&sp, tok, err) == 0;
    EXPECT(rc == 0 && sp_ok && pc.text_dim == 48, "peek: %s", err);
    if (sp_ok) EXPECT(wan_parts_check_text(w.text_encoder, tok, &sp, pc.text_dim, err) == 0, "a matching folder refused: %s", err);

    // bad inputs, each with a message
    struct { const char* what; int rc; const char* must; } cases[8];
    int nc = 0;
    char e[8][ST_ERRLEN];
    // 1. a folder missing a part
    char dir2[700]; snprintf(dir2, sizeof(dir2), "%s/prompts/Wan-notok", tmp);
    pt_make_folder(dir2, 48, 0);
    cases[nc].what = "a folder without tokenizer/"; cases[nc].rc = wan_parts_find(&w, dir2, NULL, NULL, NULL, NULL, "detv", e[nc]); cases[nc].must = "--tokenizer"; nc++;
    cases[nc].what = "--wan naming a file"; cases[nc].rc = wan_parts_find(&w, tok, NULL, NULL, NULL, NULL, "d", e[nc]); cases[nc].must = "not a directory"; nc++;
    cases[nc].what = "--text-encoder that does not exist"; cases[nc].rc = wan_parts_find(&w, dir, NULL, "/nonexistent/te", NULL, NULL, "e", e[nc]); cases[nc].must = "no such file"; nc++;
    // 2. a tokenizer that does not pair with the encoder: spm_nfkc_bf (560 pieces) against umt5_b (300 rows)
    cases[nc].what = "tokenizer of 560 pieces, encoder of 300 rows";
    cases[nc].rc = sp_ok ? wan_parts_check_text(PT_DIR "/umt5_b", tok, &sp, 40, e[nc]) : 1; cases[nc].must = "not a pair"; nc++;
    // 3. an encoder whose width is not the DiT's text_dim
    cases[nc].what = "encoder 48 wide, DiT text_dim 32";
    cases[nc].rc = sp_ok ? wan_parts_check_text(PT_DIR "/umt5_a", tok, &sp, 32, e[nc]) : 1; cases[nc].must = "text_dim 32"; nc++;
    // 4. an empty prompt file
    snprintf(path, sizeof(path), "%s/prompts/empty.txt", tmp); pt_write(path, "", 0);
    char** lines = NULL; int nl = 0;
    cases[nc].what = "an empty prompt file"; cases[nc].rc = vb_read_lines(path, &lines, &nl, e[nc]); cases[nc].must = "empty"; nc++;
    if (cases[nc - 1].rc == 0) vb_free_lines(lines, nl);
    for (int k = 0; k < nc; k++) {
        int ok = cases[k].rc != 0 && pt_contains(e[k], cases[k].must);
        printf("  %-46s -> %s: %.150s%s\n", cases[k].what, cases[k].rc ? "refused" : "ACCEPTED", cases[k].rc ? e[k] : "", strlen(e[k]) > 150 ? "..." : "");
        EXPECT(ok, "%s: expected an error mentioning '%s', got rc %d '%s'", cases[k].what, cases[k].must, cases[k].rc, cases[k].rc ? e[k] : "");
    }
    // the pipeline refuses the same pair before opening anything big
    PromptCtx p;
    rc = pc_open(&p, PT_DIR "/umt5_a", tok, NULL, 16, 32, NULL, err);
    EXPECT(rc != 0 && pt_contains(err, "text_dim 32"), "pc_open must refuse an encoder of the wrong width: %s", err);
    if (!rc) pc_close(&p);
    if (sp_ok) spm_free(&sp);
}

// ---------------------------------------------------------------------------------------------------------
// the dataset directory: a fake teacher (each latent a function of its seed) and fake contexts (rows and values a
// function of the prompt), so every number read back can be checked
typedef struct { int C, T, H, W, D, TL; int calls; int64_t made[64]; int n_made; int fail_at; } PtSource;

static void pt_latent_of(uint64_t seed, float* x, size_t n) { Rng r = rng_make(seed); for (size_t k = 0; k < n; k++) x[k] = (float)rng_normal(&r); }
static int pt_rows_of(const char* prompt) { return 1 + (int)(strlen(prompt) % 5); }
static void pt_context_of(const char* prompt, float* ctx, int TL, int D) {
    memset(ctx, 0, sizeof(float) * TL * D);
    Rng r = rng_make(vb_fnv1a64(prompt));
    for (int k = 0; k < pt_rows_of(prompt) * D; k++) ctx[k] = (float)rng_normal(&r);
}
static int pt_latents(void* ctx, const LdsPlan* p, int64_t first, int count, float* lat, char* err) {
    PtSource* s = (PtSource*)ctx;
    size_t nl = (size_t)s->C * s->T * s->H * s->W;
    for (int b = 0; b < count; b++) {
        if (s->fail_at >= 0 && first + b == s->fail_at) { snprintf(err, ST_ERRLEN, "killed at sample %lld", (long long)(first + b)); return 1; }
        pt_latent_of(p->seed[first + b], lat + b * nl, nl);
        if (s->n_made < 64) s->made[s->n_made++] = first + b;
    }
    s->calls++;
    return 0;
}
static int pt_context(void* ctx, const char* prompt, float* c, int* rows, char* err) {
    (void)err; PtSource* s = (PtSource*)ctx;
    pt_context_of(prompt, c, s->TL, s->D); *rows = pt_rows_of(prompt);
    return 0;
}

static void test_dataset_dir(const char* tmp) {
    printf("\n[prompts] sample_tmd --dataset directories: writer -> train_tmd --data reader, resume, rank split, another model\n");
    char dir[700], err[ST_ERRLEN], path[1200], cmd[1500];
    snprintf(dir, sizeof(dir), "%s/prompts/dataset", tmp);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir); EXPECT(system(cmd) == 0, "rm");
    const char* prompts[7] = {"a red fox", "a cat on a mat", "rain over Paris", "a cat on a mat", "waves", "a tiny robot dancing", "snow"};
    PtSource src = {3, 2, 8, 8, 32, 12, 0, {0}, 0, -1};
    float neg[2 * 32]; Rng r = rng_make(99); for (int k = 0; k < 64; k++) neg[k] = (float)rng_normal(&r);
    LdsSource s = {3, 2, 8, 8, 32, 12, 2, neg, 2, pt_latents, pt_context, &src};
    LdsPlan p;
    EXPECT(lds_plan_make(&p, prompts, 7, 5, 3, "00000000000000aa", "fake teacher", err) == 0, "%s", err);
    // the rank split: every shard made by exactly one rank, for 1..5 ranks
    int split_ok = 1;
    for (int world = 1; world <= 5; world++)
        for (int k = 0; k < p.n_shards; k++) { int owners = 0; for (int rk = 0; rk < world; rk++) owners += lds_shard_mine(k, rk, world); split_ok &= owners == 1; }
    printf("  plan: 7 samples in %d shards of 3; each shard owned by exactly one rank for 1..5 ranks: %s\n", p.n_shards, split_ok ? "yes" : "NO");
    EXPECT(p.n_shards == 3 && split_ok, "rank split");
    EXPECT(p.seed[1] != p.seed[3], "two lines of the same prompt must get two seeds");
    // rank 1 of 2 first (shard 1), then a "killed" rank 0 (dies in shard 2 after shard 0)
    LdsReport rep;
    EXPECT(lds_run(dir, &p, 1, 2, &s, &rep, err) == 0 && rep.mine == 1 && rep.made == 1, "rank 1: %s", err);
    src.fail_at = 6;
    int rc = lds_run(dir, &p, 0, 2, &s, &rep, err);
    printf("  rank 1 of 2 made shard 1; rank 0 of 2 killed at sample 6: %s (made %d shard)\n", rc ? err : "NOT KILLED", rep.made);
    EXPECT(rc != 0 && rep.made == 1, "the fake kill");
    lds_shard_path(path, sizeof(path), dir, 2);
    struct stat sb;
    EXPECT(stat(path, &sb) != 0, "a killed shard must not exist under its final name");
    TrainData td; WanConfig c; wan_preset(&c, "tiny", err);
    rc = train_data_open(&td, dir, &c, 1, 1, 0, 1, err);
    printf("  train_tmd --data on the half-written dataset: %s\n", rc ? err : "ACCEPTED");
    EXPECT(rc != 0 && pt_contains(err, "missing") && pt_contains(err, "shard-00002"), "a half-written dataset must be refused: %s", err);
    if (!rc) train_data_free(&td);
    // resume with one rank: only shard 2 is made
    src.fail_at = -1; src.n_made = 0;
    EXPECT(lds_run(dir, &p, 0, 1, &s, &rep, err) == 0, "resume: %s", err);
    printf("  resume on 1 rank: %d shards already there, %d made (samples %lld..%lld)\n", rep.already, rep.made, src.n_made ? (long long)src.made[0] : -1LL,
           src.n_made ? (long long)src.made[src.n_made - 1] : -1LL);
    EXPECT(rep.already == 2 && rep.made == 1 && src.n_made == 1 && src.made[0] == 6, "resume must redo only the unfinished shard");
    // the reader: every sample's latent, context (zero-padded to text_len) and caption as written
    rc = train_data_open(&td, dir, &c, 1, 1, 0, 1, err);
    EXPECT(rc == 0, "train_data_open on the dataset directory: %s", err);
    if (rc == 0) {
        size_t nl = td.numel, nctx = td.nctx;
        float* x = (float*)malloc(sizeof(float) * nl); float* cx = (float*)malloc(sizeof(float) * nctx);
        float* wx = (float*)malloc(sizeof(float) * nl * 2); float* wc = (float*)malloc(sizeof(float) * nctx * 2);   // a batch of 2 below
        int bad = 0; char cap[256];
        for (int64_t i = 0; i < 7; i++) {
            if (ld_read_latent(&td.ld, i, x, err) || ld_read_context(&td.ld, i, cx, c.text_len, err) || ld_caption(&td.ld, i, cap, sizeof(cap), err)) { bad++; continue; }
            pt_latent_of(p.seed[i], wx, nl); pt_context_of(prompts[i], wc, c.text_len, 32);
            bad += memcmp(x, wx, sizeof(float) * nl) != 0 || memcmp(cx, wc, sizeof(float) * nctx) != 0 || strcmp(cap, prompts[i]) != 0;
        }
        int negok = 1; for (int k = 0; k < (int)nctx; k++) negok &= td.negative[k] == (k < 64 ? neg[k] : 0.f);
        printf("  read back: %lld samples, latents [%d, %d, %d, %d]; %d of 7 differ from what was written; negative prompt %s\n", (long long)td.ld.n,
               td.ld.C, td.T, td.H, td.W, bad, negok ? "equal" : "DIFFERS");
        EXPECT(td.ld.n == 7 && bad == 0 && negok, "round trip: %d bad samples", bad);
        // the trainer's batches: one epoch of 7 visits every sample once
        int seen[7] = {0}; int64_t idx[7]; uint64_t pos = 0;
        LdOrder o; ld_order_init(&o, 3, 7); ld_order_batch(&o, &pos, 0, 1, 7, idx);
        for (int b = 0; b < 7; b++) seen[idx[b]]++;
        int once = 1; for (int b = 0; b < 7; b++) once &= seen[b] == 1;
        ld_order_free(&o);
        EXPECT(once && train_data_next(&td, 2, wx, wc, err) == 0, "batches: %s", err);
        free(x); free(cx); free(wx); free(wc);
        train_data_free(&td);
    }
    // a rerun with everything done makes nothing
    src.n_made = 0;
    EXPECT(lds_run(dir, &p, 0, 1, &s, &rep, err) == 0 && rep.made == 0 && src.n_made == 0, "a finished dataset must make nothing");
    // another model (fingerprint) in the same directory: refused before any sampling
    LdsPlan q; lds_plan_make(&q, prompts, 7, 5, 3, "00000000000000bb", "another teacher", err);
    rc = lds_run(dir, &q, 0, 1, &s, &rep, err);
    printf("  another model's run into the directory: %s\n", rc ? err : "ACCEPTED");
    EXPECT(rc != 0 && pt_contains(err, "another model"), "another fingerprint must be refused: %s", err);
    lds_plan_free(&q);
    // the same model with another seed: another plan
    lds_plan_make(&q, prompts, 7, 6, 3, "00000000000000aa", "fake teacher", err);
    rc = lds_run(dir, &q, 0, 1, &s, &rep, err);
    EXPECT(rc != 0 && pt_contains(err, "another dataset"), "another plan must be refused: %s", err);
    lds_plan_free(&q);
    // a shard of another model dropped into the directory: the reader refuses it
    char other[700]; snprintf(other, sizeof(other), "%s/prompts/dataset_b", tmp);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", other); EXPECT(system(cmd) == 0, "rm");
    lds_plan_make(&q, prompts, 7, 5, 3, "00000000000000bb", "another teacher", err);
    EXPECT(lds_run(other, &q, 0, 1, &s, &rep, err) == 0, "%s", err);
    snprintf(cmd, sizeof(cmd), "cp '%s/shard-00001.safetensors' '%s/shard-00001.safetensors'", other, dir); EXPECT(system(cmd) == 0, "cp");
    rc = train_data_open(&td, dir, &c, 1, 1, 0, 1, err);
    printf("  a shard of another model in the directory: %s\n", rc ? err : "ACCEPTED");
    EXPECT(rc != 0 && pt_contains(err, "another model's shard"), "a foreign shard must be refused: %s", err);
    if (!rc) train_data_free(&td);
    // and the writer's resume check remakes it
    src.n_made = 0;
    EXPECT(lds_run(dir, &p, 0, 1, &s, &rep, err) == 0 && rep.made == 1 && src.n_made == 3 && src.made[0] == 3, "the foreign shard must be remade");
    lds_plan_free(&q);
    // a directory without a manifest, and an empty prompt list
    snprintf(path, sizeof(path), "%s/prompts", tmp);
    rc = train_data_open(&td, path, &c, 1, 1, 0, 1, err);
    EXPECT(rc != 0 && pt_contains(err, LDS_MANIFEST), "a directory without a manifest: %s", err);
    rc = lds_plan_make(&q, prompts, 0, 5, 3, "00", "", err);
    EXPECT(rc != 0 && pt_contains(err, "no prompts"), "an empty prompt list: %s", err);
    lds_plan_free(&p);
}

// ---------------------------------------------------------------------------------------------------------
// the KD warm-up's pairs beside a dataset directory (gpu/kd_dataset.h): a fake noise stream (a function of the
// element's index) and a fake teacher (a function of the pair's noise, caption and the negative prompt), so the file
// train_tmd's KD stage loads (gpu/kd_pairs.h kd_pairs_load, as kd_pairs_get calls it) can be checked value by value
typedef struct { int calls, fail_at_call, made_chunks; } KtSource;
static float kt_noise_of(uint64_t seed, uint64_t e) { uint64_t x = splitmix64_mix(seed * 0x9E3779B97F4A7C15ull + e); return (float)((double)(x >> 11) / 9007199254740992.0 - 0.5); }
static float kt_target_of(float z, const float* ctx, size_t nctx, size_t j, const float* neg) { return 0.5f * z + ctx[j % nctx] - 0.25f * neg[j % nctx]; }
static int kt_noise(void* u, uint64_t seed, uint64_t offset, size_t n, float* out, char* err) {
    (void)u; (void)err;
    for (size_t i = 0; i < n; i++) out[i] = kt_noise_of(seed, offset + i);
    return 0;
}
static int kt_teacher(void* u, KdPairs* kp, const float* neg, char* err) {
    KtSource* s = (KtSource*)u;
    if (s->fail_at_call >= 0 && s->calls == s->fail_at_call) { snprintf(err, ST_ERRLEN, "killed in the teacher's call %d", s->calls); return 1; }
    s->calls++;
    for (int i = 0; i < kp->P; i++)
        for (size_t j = 0; j < kp->numel; j++) kp->target[i * kp->numel + j] = kt_target_of(kp->noise[i * kp->numel + j], kp->ctx + i * kp->nctx, kp->nctx, j, neg);
    return 0;
}

static void test_kd_dataset(const char* tmp) {
    printf("\n[prompts] sample_tmd --dataset --kd-pairs: the KD pairs beside a dataset -> train_tmd --stage kd's cache reader, resume, rank split\n");
    char dir[700], err[ST_ERRLEN], path[1200], cmd[1500];
    snprintf(dir, sizeof(dir), "%s/prompts/dataset", tmp);   // test_dataset_dir's finished dataset (7 samples)
    snprintf(cmd, sizeof(cmd), "rm -f '%s'/kd*", dir); EXPECT(system(cmd) == 0, "rm");
    WanConfig c; wan_preset(&c, "tiny", err);
    KdPairSettings ks = {5, 2, 2.0, 3.0, 7, -1};   // 5 pairs, UniPC 2 steps, CFG 2, shift 3, train_tmd --seed 7, no skip-layer guidance
    TrainData td; KdDsPlan p; KdDsReport rep;
    int rc = train_data_open(&td, dir, &c, ks.seed, KD_STREAM, 0, 1, err);
    EXPECT(rc == 0, "the dataset: %s", err);
    if (rc) return;
    EXPECT(kd_ds_plan_make(&p, &td, &c, &ks, 0x1234, 2, err) == 0, "plan: %s", err);
    printf("  plan: %d pairs in %d chunks of %d; pair samples", p.P, p.n_chunks, p.S);
    for (int i = 0; i < p.P; i++) printf(" %lld", (long long)p.sample[i]);
    printf("\n");
    EXPECT(p.n_chunks == 3 && kd_ds_chunk_count(&p, 2) == 1, "chunks");
    KtSource ksrc = {0, -1, 0};
    KdDsSource src = {kt_noise, kt_teacher, &ksrc};
    // rank 1 of 2 (chunk 1), then rank 0 of 2 killed in its second chunk (chunk 2), then a rerun on 1 rank
    EXPECT(kd_ds_run(dir, &p, &td, 1, 2, &src, &rep, err) == 0 && rep.mine == 1 && rep.made == 1 && rep.missing == 2 && !rep.assembled, "rank 1: %s", err);
    ksrc.fail_at_call = 2;
    rc = kd_ds_run(dir, &p, &td, 0, 2, &src, &rep, err);
    printf("  rank 1 of 2 made chunk 1 (2 missing, nothing assembled); rank 0 of 2 killed: %s (made %d)\n", rc ? err : "NOT KILLED", rep.made);
    EXPECT(rc != 0 && rep.made == 1, "the fake kill");
    kd_ds_chunk_path(path, sizeof(path), dir, 2);
    struct stat sb;
    EXPECT(stat(path, &sb) != 0, "a killed chunk must not exist under its final name");
    snprintf(path, sizeof(path), "%s/" KD_DS_PAIRS_FILE, dir);
    EXPECT(stat(path, &sb) != 0, "nothing may be assembled before every chunk is there");
    ksrc.fail_at_call = -1; ksrc.calls = 0;
    EXPECT(kd_ds_run(dir, &p, &td, 0, 1, &src, &rep, err) == 0, "resume: %s", err);
    printf("  resume on 1 rank: %d chunks already there, %d made, assembled %s\n", rep.already, rep.made, rep.assembled == 2 ? "now" : "NO");
    EXPECT(rep.already == 2 && rep.made == 1 && ksrc.calls == 1 && rep.assembled == 2, "resume must make only the killed chunk, then assemble");
    // train_tmd --stage kd --data DIR --seed 7 --kd-cache DIR/kd_pairs.safetensors: its captions, its metadata, its loader
    TrainData t2; KdPairs kp, want_kp; uint64_t ch = 0; TsMeta want;
    EXPECT(train_data_open(&t2, dir, &c, ks.seed, KD_STREAM, 0, 1, err) == 0, "%s", err);
    kd_pairs_alloc(&kp, ks.pairs, t2.numel, t2.nctx); kd_pairs_alloc(&want_kp, ks.pairs, t2.numel, t2.nctx);
    EXPECT(kd_pairs_captions(want_kp.ctx, &t2, ks.pairs, &ch, err) == 0, "%s", err);
    kd_pairs_meta(&want, &c, &t2, &ks, 0x1234, ch);
    rc = kd_pairs_load(&kp, path, &want, err);
    printf("  train_tmd's KD cache reader on %s: %s\n", KD_DS_PAIRS_FILE, rc ? err : "loaded");
    EXPECT(rc == 0, "the assembled pairs must load as train_tmd's cache: %s", err);
    if (rc == 0) {
        size_t bad_z = 0, bad_c = 0, bad_t = 0;
        for (int i = 0; i < ks.pairs; i++) {
            for (size_t j = 0; j < t2.numel; j++) {
                float z = kt_noise_of(ks.seed * 1000003 + KD_STREAM, (uint64_t)i * t2.numel + j);
                bad_z += kp.noise[i * t2.numel + j] != z;
                bad_t += kp.target[i * t2.numel + j] != kt_target_of(z, want_kp.ctx + i * t2.nctx, t2.nctx, j, t2.negative);
            }
            bad_c += memcmp(kp.ctx + i * t2.nctx, want_kp.ctx + i * t2.nctx, sizeof(float) * t2.nctx) != 0;
        }
        printf("  pairs read back against train_tmd's own draw: noise %zu, captions %zu, teacher samples %zu values differ\n", bad_z, bad_c, bad_t);
        EXPECT(bad_z == 0 && bad_c == 0 && bad_t == 0, "round trip: noise %zu, captions %zu, targets %zu differ", bad_z, bad_c, bad_t);
    }
    // train_tmd with another --seed, or another teacher: refused by name
    KdPairSettings k2 = ks; k2.seed = 8; TsMeta w2;
    kd_pairs_meta(&w2, &c, &t2, &k2, 0x1234, ch);
    rc = kd_pairs_load(&kp, path, &w2, err);
    EXPECT(rc != 0 && pt_contains(err, "seed"), "a train_tmd run of another --seed must refuse the pairs: %s", err);
    kd_pairs_meta(&w2, &c, &t2, &ks, 0x9999, ch);
    rc = kd_pairs_load(&kp, path, &w2, err);
    EXPECT(rc != 0 && pt_contains(err, "another teacher"), "another teacher must refuse the pairs: %s", err);
    kd_pairs_free(&kp); kd_pairs_free(&want_kp); train_data_free(&t2);
    // a rerun: nothing made; a run of other settings into the directory: refused by name before any sampling
    ksrc.calls = 0;
    EXPECT(kd_ds_run(dir, &p, &td, 0, 1, &src, &rep, err) == 0 && rep.assembled == 1 && ksrc.calls == 0, "a finished run must make nothing: %s", err);
    KdDsPlan q; KdPairSettings k3 = ks; k3.cfg = 5;
    TrainData t3; EXPECT(train_data_open(&t3, dir, &c, ks.seed, KD_STREAM, 0, 1, err) == 0, "%s", err);
    EXPECT(kd_ds_plan_make(&q, &t3, &c, &k3, 0x1234, 2, err) == 0, "%s", err);
    rc = kd_ds_run(dir, &q, &t3, 0, 1, &src, &rep, err);
    printf("  another --kd-cfg into the directory: %s\n", rc ? err : "ACCEPTED");
    EXPECT(rc != 0 && pt_contains(err, "cfg") && ksrc.calls == 0, "other settings must be refused: %s", err);
    // the same, before any GPU work (sample_tmd's first check): other settings refused, this run's and a fresh directory accepted
    KdPairSettings k4 = ks; k4.skip_layer = 10;
    int pre_same = kd_ds_precheck(dir, &ks, err), pre_cfg = kd_ds_precheck(dir, &k3, err);
    printf("  the early check (before GPU work): this run's settings %s; --kd-cfg 5 %s: %s\n", pre_same ? "REFUSED" : "accepted", pre_cfg ? "refused" : "ACCEPTED", err);
    EXPECT(pre_same == 0 && pre_cfg != 0 && pt_contains(err, "cfg = 2") && pt_contains(err, "cfg = 5"), "the early check: %s", err);
    EXPECT(kd_ds_precheck(dir, &k4, err) != 0 && pt_contains(err, "skip_layer"), "another skip-layer guidance: %s", err);
    EXPECT(kd_ds_precheck(tmp, &ks, err) == 0, "a directory without pairs: %s", err);
    // a chunk of other settings left in the directory (the assembled file gone): made again, not mixed in
    EXPECT(remove(path) == 0, "rm");
    EXPECT(kd_ds_run(dir, &q, &t3, 0, 1, &src, &rep, err) == 0 && rep.made == 3, "the other settings' run: %s", err);
    EXPECT(remove(path) == 0, "rm");
    ksrc.calls = 0;
    EXPECT(kd_ds_run(dir, &p, &td, 0, 1, &src, &rep, err) == 0 && rep.made == 3 && rep.already == 0 && rep.assembled == 2,
           "chunks of other settings must be made again (made %d, already %d): %s", rep.made, rep.already, err);
    kd_ds_plan_free(&q); train_data_free(&t3);
    // bad input
    KdPairSettings k0 = ks; k0.pairs = 0;
    rc = kd_ds_plan_make(&q, &td, &c, &k0, 0x1234, 2, err);
    EXPECT(rc != 0 && pt_contains(err, "--kd-pairs"), "no pairs: %s", err);
    TrainData tw; EXPECT(train_data_open(&tw, NULL, &c, 1, KD_STREAM, 0, 1, err) == 0, "%s", err);
    rc = kd_ds_plan_make(&q, &tw, &c, &ks, 0x1234, 2, err);
    EXPECT(rc != 0 && pt_contains(err, "built-in world"), "the world: %s", err);
    kd_ds_plan_free(&p); train_data_free(&td);
}

static void test_prompts(const char* tmpdir) {
    test_ctx_cache(tmpdir);
    test_prompt_pipeline(tmpdir);
    test_prompt_batches(tmpdir);
    test_wan_folder(tmpdir);
    test_dataset_dir(tmpdir);
    test_kd_dataset(tmpdir);
}
