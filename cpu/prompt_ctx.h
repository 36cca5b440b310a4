// cpu/prompt_ctx.h: prompts to the DiT's text contexts for a real Wan2.1 model: tokenizer (lib/sentencepiece.h) →
// umT5 encoder → [text_len, text_dim] zero-padded (Wan's context), through the on-disk cache (lib/ctx_cache.h).
// The encoder is a function pointer: sample_tmd plugs the GPU encoder in (gpu/umt5_gpu.cuh); without one, the CPU
// reference (cpu/umt5_cpu.h, double precision, ~15 CPU-s a prompt at XXL size) encodes. The encoder is opened only
// for the first miss, so a run whose prompts are all cached never reads its weights, and pc_release_encoder frees it
// before the DiT needs the memory.
//
//   PromptCtx pc; pc_open(&pc, text_encoder, tokenizer, cache_root, text_len, dit_text_dim, err);   // checks, no weights
//   pc_encode(&pc, prompts, n, out_or_NULL, rows_or_NULL, err);   // misses encoded (batched) and cached
//   pc_release_encoder(&pc);                                       // before the DiT
//   pc_context(&pc, prompt, ctx, &rows, err);                      // from the cache (or memory without one)
//   pc_close(&pc);
#pragma once
#include "../lib/ctx_cache.h"
#include "../lib/wan_parts.h"
#include "../lib/sentencepiece.h"
#include "umt5_cpu.h"

// a batch of B token sequences (ids[b], lens[b] tokens, </s> last) -> out [B, text_len, width] zero-padded
typedef int (*PcEncodeFn)(void* enc, const int* const* ids, const int* lens, int B, float* out, char* err);
// opens the encoder's weights (called at the first miss); its max batch into *max_batch
typedef int (*PcOpenFn)(void* enc, const char* weights, int text_len, int* max_batch, char* err);
typedef void (*PcCloseFn)(void* enc);

typedef struct {
    PcOpenFn open; PcEncodeFn encode; PcCloseFn close; void* enc;
    const char* name;
} PcBackend;

typedef struct {
    SpmModel sp;
    CtxCache cache;
    char weights[1024], tokenizer[1024];
    int text_len, width;
    PcBackend be; int be_open, max_batch;
    Umt5Model cpu;               // the CPU backend's model
    int hits, misses, truncated_prompts;
    double encode_s;             // wall seconds in the encoder
    // without a cache directory: the last pc_encode's contexts stay in memory
    char** mem_prompt; float* mem_ctx; int* mem_rows; int n_mem;
} PromptCtx;

static inline double pc_now(void) { struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts); return ts.tv_sec + 1e-9 * ts.tv_nsec; }

// the CPU backend: cpu/umt5_cpu.h in double, one prompt at a time
static int pc_cpu_open(void* enc, const char* weights, int text_len, int* max_batch, char* err) {
    (void)text_len; *max_batch = 1;
    return umt5_open(&((PromptCtx*)enc)->cpu, weights, err);
}
static int pc_cpu_encode(void* enc, const int* const* ids, const int* lens, int B, float* out, char* err) {
    PromptCtx* pc = (PromptCtx*)enc;
    int d = pc->cpu.c.d_model;
    for (int b = 0; b < B; b++) {
        double* h = (double*)malloc(sizeof(double) * (size_t)lens[b] * d);
        if (!h) { st_errf(err, "out of memory"); return 1; }
        if (umt5_encode(&pc->cpu, ids[b], lens[b], h, err)) { free(h); return 1; }
        float* o = out + (size_t)b * pc->text_len * d;
        memset(o, 0, sizeof(float) * (size_t)pc->text_len * d);
        for (size_t k = 0; k < (size_t)lens[b] * d; k++) o[k] = (float)h[k];
        free(h);
    }
    return 0;
}
static void pc_cpu_close(void* enc) { umt5_close(&((PromptCtx*)enc)->cpu); }

// every check before GPU work: the tokenizer loads, it pairs with the encoder's embedding, the encoder's width is
// the DiT's text_dim; the fingerprint; the cache directory. be NULL: the CPU backend.
static inline int pc_open(PromptCtx* pc, const char* text_encoder, const char* tokenizer, const char* cache_root, int text_len,
                          int dit_text_dim, const PcBackend* be, char* err) {
    memset(pc, 0, sizeof(*pc));
    snprintf(pc->weights, sizeof(pc->weights), "%s", text_encoder); snprintf(pc->tokenizer, sizeof(pc->tokenizer), "%s", tokenizer);
    pc->text_len = text_len; pc->width = dit_text_dim;
    if (be) pc->be = *be;
    else { PcBackend cpu = {pc_cpu_open, pc_cpu_encode, pc_cpu_close, pc, "the CPU reference (cpu/umt5_cpu.h, double; slow)"}; pc->be = cpu; }
    if (spm_load(&pc->sp, tokenizer, err)) return 1;
    uint64_t fp = 0;
    if (wan_parts_check_text(text_encoder, tokenizer, &pc->sp, dit_text_dim, err) || cc_encoder_fingerprint(&fp, text_encoder, tokenizer, err) ||
        cc_init(&pc->cache, cache_root, fp, text_len, dit_text_dim, err)) { spm_free(&pc->sp); return 1; }
    return 0;
}

static inline void pc_release_encoder(PromptCtx* pc) {
    if (pc->be_open && pc->be.close) pc->be.close(pc->be.enc);
    pc->be_open = 0;
}

static inline void pc_mem_free_(PromptCtx* pc) {
    for (int i = 0; i < pc->n_mem; i++) free(pc->mem_prompt[i]);
    free(pc->mem_prompt); free(pc->mem_ctx); free(pc->mem_rows);
    pc->mem_prompt = NULL; pc->mem_ctx = NULL; pc->mem_rows = NULL; pc->n_mem = 0;
}

static inline void pc_close(PromptCtx* pc) {
    pc_release_encoder(pc);
    pc_mem_free_(pc);
    spm_free(&pc->sp);
    memset(pc, 0, sizeof(*pc));
}

// the ids Wan's encoder sees (cleaned, cut to text_len − 1 pieces, </s>); a cut prompt is a warning
static inline int pc_ids(PromptCtx* pc, const char* prompt, int* ids, char* err) {
    int truncated = 0;
    int n = spm_wan_ids(&pc->sp, prompt, pc->text_len, ids, &truncated, err);
    if (n < 0) return -1;
    if (truncated) {
        fprintf(stderr, "warning: a prompt is longer than %d tokens: %d pieces cut (Wan cuts the same way): \"%.60s...\"\n", pc->text_len,
                truncated, prompt);
        pc->truncated_prompts++;
    }
    return n;
}

// encodes the n prompts that are not cached (in batches of the backend's size) and stores them; out [n, text_len,
// width] and rows [n] receive every prompt's context when non-NULL (else they are only cached; without a cache
// directory they are kept in memory for pc_context)
static inline int pc_encode(PromptCtx* pc, const char* const* prompts, int n, float* out, int* rows_out, char* err) {
    size_t nctx = (size_t)pc->text_len * pc->width;
    int keep = !pc->cache.dir[0] && !out;
    if (keep) {
        pc_mem_free_(pc);
        pc->mem_prompt = (char**)calloc((size_t)n, sizeof(char*)); pc->mem_rows = (int*)calloc((size_t)n, sizeof(int));
        pc->mem_ctx = (float*)malloc(sizeof(float) * nctx * (size_t)(n > 0 ? n : 1));
        if (!pc->mem_prompt || !pc->mem_rows || !pc->mem_ctx) { st_errf(err, "out of memory holding %d contexts (give a --ctx-cache directory)", n); return 1; }
        pc->n_mem = n;
        for (int i = 0; i < n; i++) pc->mem_prompt[i] = strdup(prompts[i]);
    }
    float* one = (float*)malloc(sizeof(float) * nctx);
    int* miss = (int*)malloc(sizeof(int) * (size_t)(n > 0 ? n : 1));
    if (!one || !miss) { free(one); free(miss); st_errf(err, "out of memory"); return 1; }
    int n_miss = 0, rc = 0;
    for (int i = 0; i < n; i++) {
        float* dst = out ? out + (size_t)i * nctx : keep ? pc->mem_ctx + (size_t)i * nctx : one;
        int r = 0;
        char why[ST_ERRLEN];
        if (cc_load(&pc->cache, prompts[i], dst, &r, why)) { pc->hits++; if (rows_out) rows_out[i] = r; if (keep) pc->mem_rows[i] = r; continue; }
        if (why[0]) fprintf(stderr, "note: context cache: the file for \"%.40s\" is %s; encoding it again\n", prompts[i], why);
        miss[n_miss++] = i;
    }
    if (n_miss && !pc->be_open) {
        printf("text encoder: %d prompt%s to encode with %s\n", n_miss, n_miss > 1 ? "s" : "", pc->be.name);
        if (pc->be.open(pc->be.enc, pc->weights, pc->text_len, &pc->max_batch, err)) rc = 1;
        else { pc->be_open = 1; if (pc->max_batch < 1) pc->max_batch = 1; }
    }
    int Bm = pc->max_batch > 0 ? pc->max_batch : 1;
    int** ids = (int**)calloc((size_t)Bm, sizeof(int*)); int* lens = (int*)calloc((size_t)Bm, sizeof(int));
    float* batch_out = (float*)malloc(sizeof(float) * nctx * (size_t)Bm);
    if (!ids || !lens || !batch_out) { st_errf(err, "out of memory"); rc = 1; }
    for (int b = 0; b < Bm && !rc; b++) if (!(ids[b] = (int*)malloc(sizeof(int) * (size_t)pc->text_len))) { st_errf(err, "out of memory"); rc = 1; }
    for (int s = 0; s < n_miss && !rc; s += Bm) {
        int B = n_miss - s < Bm ? n_miss - s : Bm;
        for (int b = 0; b < B && !rc; b++) if ((lens[b] = pc_ids(pc, prompts[miss[s + b]], ids[b], err)) < 0) rc = 1;
        if (rc) break;
        double t0 = pc_now();
        if (pc->be.encode(pc->be.enc, (const int* const*)ids, lens, B, batch_out, err)) { rc = 1; break; }
        pc->encode_s += pc_now() - t0;
        for (int b = 0; b < B && !rc; b++) {
            int i = miss[s + b];
            float* src = batch_out + (size_t)b * nctx;
            if (cc_store(&pc->cache, prompts[i], src, lens[b], err)) rc = 1;
            if (out) memcpy(out + (size_t)i * nctx, src, sizeof(float) * nctx);
            if (keep) { memcpy(pc->mem_ctx + (size_t)i * nctx, src, sizeof(float) * nctx); pc->mem_rows[i] = lens[b]; }
            if (rows_out) rows_out[i] = lens[b];
            pc->misses++;
        }
    }
    for (int b = 0; b < Bm && ids; b++) free(ids[b]);
    free(ids); free(lens); free(batch_out); free(one); free(miss);
    return rc;
}

// one prompt's context [text_len, width] (zero rows past *rows) after pc_encode: the cache, or the kept copy
static inline int pc_context(PromptCtx* pc, const char* prompt, float* ctx, int* rows, char* err) {
    int r = 0;
    if (pc->cache.dir[0]) {
        char why[ST_ERRLEN];
        if (cc_load(&pc->cache, prompt, ctx, &r, why)) { if (rows) *rows = r; return 0; }
        st_errf(err, "context cache %s: prompt \"%.60s\" is not there (%s); it was encoded a moment ago: is the disk full or the "
                "directory shared with a cleaner?", pc->cache.dir, prompt, why[0] ? why : "no file");
        return 1;
    }
    for (int i = 0; i < pc->n_mem; i++)
        if (!strcmp(pc->mem_prompt[i], prompt)) {
            memcpy(ctx, pc->mem_ctx + (size_t)i * pc->text_len * pc->width, sizeof(float) * (size_t)pc->text_len * pc->width);
            if (rows) *rows = pc->mem_rows[i];
            return 0;
        }
    st_errf(err, "prompt \"%.60s\" was not encoded (internal: pc_encode before pc_context)", prompt);
    return 1;
}
