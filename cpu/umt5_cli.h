// cpu/umt5_cli.h: `./test_tmd encode`: prompts to umT5 embeddings (the DiT's text context) with no Python.
//   ./test_tmd encode --tokenizer spiece.model --weights text_encoder/ --prompt "a cat" --out ctx.npy [--text-len 512]
//   ./test_tmd encode --tokenizer spiece.model --weights text_encoder/ --prompts prompts.txt --out ctx_dir/
//   ./test_tmd encode --tokenizer spiece.model --prompt "a cat" --ids-only [--raw]
//   ./test_tmd encode --bench-tokens 24          one prompt through random weights of the umT5-XXL shape (timing)
#pragma once
#include <sys/stat.h>
#include <time.h>
#include "../lib/flags.h"
#include "../lib/npy.h"
#include "../lib/rng.h"
#include "../lib/sentencepiece.h"
#include "umt5_cpu.h"

static double umt5_now(void) { struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts); return ts.tv_sec + 1e-9 * ts.tv_nsec; }
// CPU seconds of this process, all threads (on a shared machine the wall time also counts other jobs)
static double umt5_cpu_s(void) { struct timespec ts; clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts); return ts.tv_sec + 1e-9 * ts.tv_nsec; }

// writes out [L, d] (float32), zero-padded to text_len rows when text_len > L
static int umt5_write_ctx(const char* path, const double* out, int L, int d, int text_len, char* err) {
    int rows = text_len > L ? text_len : L;
    float* f = (float*)calloc((size_t)rows * d, sizeof(float));
    if (!f) { st_errf(err, "%s: out of memory", path); return 1; }
    for (size_t i = 0; i < (size_t)L * d; i++) f[i] = (float)out[i];
    int64_t shape[2] = {rows, d};
    int rc = npy_write(path, f, 2, shape, err);
    free(f);
    return rc;
}

// random weights of config c held in memory as BF16; every layer shares one layer's matrices (timing only)
static int umt5_random_model(Umt5Model* m, const Umt5Config* c, int vocab_rows, unsigned char** hold, char* err) {
    memset(m, 0, sizeof(*m)); m->c = *c;
    size_t d = (size_t)c->d_model, inner = (size_t)c->num_heads * c->d_kv, F = (size_t)c->d_ff;
    size_t sizes[8] = {inner * d, inner * d, inner * d, d * inner, F * d, F * d, d * F, (size_t)vocab_rows * d}, total = 0;
    for (int i = 0; i < 8; i++) total += sizes[i];
    *hold = (unsigned char*)malloc(total * 2);
    m->layer = (Umt5Layer*)calloc((size_t)c->num_layers, sizeof(Umt5Layer));
    double* small = (double*)malloc(sizeof(double) * (3 * d + (size_t)c->num_buckets * c->num_heads));
    if (!*hold || !m->layer || !small) { st_errf(err, "out of memory for %.2f GB of random BF16 weights", total * 2 / 1e9); free(small); return 1; }
    Rng r = rng_make(1);
    size_t off = 0; UmMat mats[8];
    for (int i = 0; i < 8; i++) {
        int64_t cols = i == 3 ? (int64_t)inner : i == 6 ? (int64_t)F : (int64_t)d;
        double a = sqrt(3.0 / (double)cols);   // uniform with variance 1/fan_in
        for (size_t k = 0; k < sizes[i]; k++) {
            float v = (float)(a * (2 * rng_uniform(&r) - 1)); uint32_t u; memcpy(&u, &v, 4); uint16_t h = (uint16_t)(u >> 16);
            memcpy(*hold + 2 * (off + k), &h, 2);
        }
        mats[i].fp = NULL; mats[i].mem = *hold + 2 * off; mats[i].begin = 0; mats[i].dtype = ST_BF16;
        mats[i].rows = (int64_t)(sizes[i] / (size_t)cols); mats[i].cols = cols; mats[i].name = "random";
        off += sizes[i];
    }
    for (size_t k = 0; k < 2 * d; k++) small[k] = 1 + 0.1 * (rng_uniform(&r) - 0.5);
    for (size_t k = 2 * d; k < 3 * d + (size_t)c->num_buckets * c->num_heads; k++) small[k] = rng_uniform(&r) - 0.5;
    for (int li = 0; li < c->num_layers; li++) {
        Umt5Layer* Y = &m->layer[li];
        Y->q = mats[0]; Y->k = mats[1]; Y->v = mats[2]; Y->o = mats[3]; Y->wi0 = mats[4]; Y->wi1 = mats[5]; Y->wo = mats[6];
        // umt5_close frees these per layer, so each layer gets its own copies of the small tensors
        Y->ln1 = (double*)malloc(sizeof(double) * d); Y->ln2 = (double*)malloc(sizeof(double) * d);
        Y->rel_bias = (double*)malloc(sizeof(double) * (size_t)c->num_buckets * c->num_heads);
        memcpy(Y->ln1, small, sizeof(double) * d); memcpy(Y->ln2, small + d, sizeof(double) * d);
        memcpy(Y->rel_bias, small + 3 * d, sizeof(double) * (size_t)c->num_buckets * c->num_heads);
    }
    m->shared = mats[7]; m->c.vocab = vocab_rows;
    m->final_ln = (double*)malloc(sizeof(double) * d); memcpy(m->final_ln, small + 2 * d, sizeof(double) * d);
    free(small);
    return umt5_alloc_scratch(m, err);
}

static int umt5_bench(int tokens, int layers) {
    Umt5Config c = UMT5_XXL; c.num_layers = layers;
    printf("timing: %d tokens through %d layer(s) of the umT5-XXL shape, random BF16 weights in memory (one layer's\n"
           "matrices shared by all layers; a 1024-row embedding instead of 256,384 rows: only the tokens' rows are read)\n", tokens, layers);
    umt5_config_print(&UMT5_XXL, stdout);
    char err[ST_ERRLEN]; Umt5Model m; unsigned char* hold = NULL;
    double t0 = umt5_now();
    if (umt5_random_model(&m, &c, 1024, &hold, err)) { fprintf(stderr, "error: %s\n", err); free(hold); return 1; }
    printf("random weights: %.1f s, peak RSS %.0f MB\n", umt5_now() - t0, umt5_peak_rss_mb());
    int* ids = (int*)malloc(sizeof(int) * (size_t)tokens); for (int i = 0; i < tokens; i++) ids[i] = (i * 37 + 5) % 1024;
    double* out = (double*)malloc(sizeof(double) * (size_t)tokens * c.d_model);
    t0 = umt5_now(); double c0 = umt5_cpu_s();
    int rc = umt5_encode(&m, ids, tokens, out, err);
    double dt = umt5_now() - t0, dc = umt5_cpu_s() - c0;
    if (rc) fprintf(stderr, "error: %s\n", err);
    else {
        double s = 0; for (size_t i = 0; i < (size_t)tokens * c.d_model; i++) s += out[i] * out[i];
        printf("encode: %.2f s wall, %.2f s CPU for %d layer(s): per layer %.2f s wall, %.2f s CPU; x %d = %.1f s wall, %.1f s CPU for umT5-XXL;\n"
               "        peak RSS %.0f MB (of which %.0f MB the random weights held in memory), rms(out) %.4f\n",
               dt, dc, layers, dt / layers, dc / layers, UMT5_XXL.num_layers, dt / layers * UMT5_XXL.num_layers, dc / layers * UMT5_XXL.num_layers,
               umt5_peak_rss_mb(), 2.0 * (4.0 * c.d_model * c.num_heads * c.d_kv + 3.0 * c.d_model * c.d_ff + 1024.0 * c.d_model) / 1048576.0,
               sqrt(s / ((double)tokens * c.d_model)));
    }
    free(ids); free(out); umt5_close(&m); free(hold);
    return rc;
}

static int umt5_cli_main(int argc, char** argv) {
    const char *tokenizer = NULL, *weights = NULL, *prompt = NULL, *prompts = NULL, *outp = NULL;
    int text_len = 0, max_tokens = 512, ids_only = 0, raw = 0, bench_tokens = 0, bench_layers = 1;
    Flag flags[] = {
        FLAG_STR("--tokenizer", &tokenizer, "SentencePiece model: spiece.model (tokenizer/ of a diffusers Wan folder)"),
        FLAG_STR("--weights", &weights, "umT5 encoder: .safetensors, *.index.json or a folder (text_encoder/ of a diffusers Wan folder)"),
        FLAG_STR("--prompt", &prompt, "one prompt (\"\" is allowed: Wan's empty negative prompt)"),
        FLAG_STR("--prompts", &prompts, "a file of prompts, one per line; writes OUT/0000.npy, OUT/0001.npy, ... (line order)"),
        FLAG_STR("--out", &outp, "with --prompt: the .npy to write; with --prompts: the folder (created if missing)"),
        FLAG_INT("--text-len", &text_len, "pad the context with zero rows to this many (Wan's DiT: 512); 0: only the valid rows"),
        FLAG_INT("--max-tokens", &max_tokens, "truncate to this many ids including </s>, with a warning (Wan: 512)"),
        FLAG_BOOL("--ids-only", &ids_only, "print the ids the encoder would see, one line per prompt; needs no weights"),
        FLAG_BOOL("--raw", &raw, "with --ids-only: sentencepiece's own ids of the string (no cleaning, no </s>, no truncation)"),
        FLAG_INT("--bench-tokens", &bench_tokens, "time this many tokens through random weights of the umT5-XXL shape; nothing else"),
        FLAG_INT("--bench-layers", &bench_layers, "layers the timing runs (the per-layer time x 24 is printed)"),
        FLAG_END};
    // --ids-only and --raw may stand alone (no 0/1 after them)
    char** av = (char**)malloc(sizeof(char*) * (size_t)(2 * argc + 1)); int ac = 0;
    for (int i = 0; i < argc; i++) {
        av[ac++] = argv[i];
        if ((!strcmp(argv[i], "--ids-only") || !strcmp(argv[i], "--raw")) && (i + 1 >= argc || (strcmp(argv[i + 1], "0") && strcmp(argv[i + 1], "1")))) av[ac++] = (char*)"1";
    }
    int rc = flags_parse(flags, ac, av, 1, "usage: ./test_tmd encode --tokenizer spiece.model [--weights text_encoder/] (--prompt S | --prompts FILE) [--out PATH] [flags]\n"
                                          "prompts -> umT5 embeddings [L, d_model] as float32 .npy (L valid tokens incl. </s>, zero rows to --text-len)");
    free(av);
    if (rc) return rc == 1 ? 0 : 2;
    if (bench_tokens > 0) {
        if (bench_layers < 1 || bench_layers > 24 || bench_tokens > 512) { fprintf(stderr, "error: need 1 <= --bench-layers <= 24 and --bench-tokens <= 512\n"); return 2; }
        return umt5_bench(bench_tokens, bench_layers);
    }
    if (!tokenizer) { fprintf(stderr, "error: --tokenizer is required (the spiece.model of the umT5 tokenizer)\n"); return 2; }
    if (!!prompt == !!prompts) { fprintf(stderr, "error: give exactly one of --prompt and --prompts (found %s)\n", prompt ? "both" : "neither"); return 2; }
    if (!ids_only && (!weights || !outp)) { fprintf(stderr, "error: --weights and --out are required unless --ids-only is given\n"); return 2; }
    if (raw && !ids_only) { fprintf(stderr, "error: --raw only changes what --ids-only prints; add --ids-only\n"); return 2; }
    if (max_tokens < 1 || text_len < 0) { fprintf(stderr, "error: need --max-tokens >= 1 and --text-len >= 0 (found %d, %d)\n", max_tokens, text_len); return 2; }
    if (text_len > 0 && text_len < max_tokens) max_tokens = text_len;   // Wan truncates to text_len
    char err[ST_ERRLEN > SPM_ERRLEN ? ST_ERRLEN : SPM_ERRLEN];
    SpmModel sp;
    if (spm_load(&sp, tokenizer, err)) { fprintf(stderr, "error: %s\n", err); return 1; }
    // the prompts: one, or the lines of a file (a trailing '\r' is dropped)
    char** list = NULL; int n = 0; char* filebuf = NULL;
    if (prompt) { list = (char**)malloc(sizeof(char*)); list[n++] = (char*)prompt; }
    else {
        size_t len; if (st_read_small_file(prompts, &filebuf, &len, err)) { fprintf(stderr, "error: %s\n", err); spm_free(&sp); return 1; }
        int cap = 1; for (size_t i = 0; i < len; i++) cap += filebuf[i] == '\n';
        list = (char**)malloc(sizeof(char*) * (size_t)cap);
        for (char* s = filebuf; s && *s;) {
            char* e = strchr(s, '\n'); if (e) *e = 0;
            size_t L = strlen(s); if (L && s[L - 1] == '\r') s[L - 1] = 0;
            list[n++] = s; s = e ? e + 1 : NULL;
        }
        if (!ids_only && mkdir(outp, 0755) != 0 && errno != EEXIST) { fprintf(stderr, "error: cannot create the folder %s: %s\n", outp, strerror(errno)); free(list); free(filebuf); spm_free(&sp); return 1; }
    }
    Umt5Model m; int have_model = 0;
    if (!ids_only) {
        double t0 = umt5_now();
        if (umt5_open(&m, weights, err)) { fprintf(stderr, "error: %s\n", err); free(list); free(filebuf); spm_free(&sp); return 1; }
        have_model = 1;
        umt5_config_print(&m.c, stdout);
        printf("weights: %s, %d file(s), stored as %s, opened in %.2f s (read row by row while encoding)\n", weights, m.set.n_files, st_dtype_name(m.shared.dtype), umt5_now() - t0);
        if (m.c.vocab < sp.n_pieces) fprintf(stderr, "warning: the tokenizer has %d pieces, the encoder's vocabulary %d; a piece past it will fail\n", sp.n_pieces, m.c.vocab);
    }
    int cap_ids = raw ? 0 : max_tokens; int* ids = NULL;
    rc = 0;
    for (int p = 0; p < n && !rc; p++) {
        int count, trunc = 0;
        if (raw) {
            count = spm_encode(&sp, list[p], strlen(list[p]), NULL, 0, err);
            if (count >= 0) { free(ids); ids = (int*)malloc(sizeof(int) * (size_t)(count + 1)); count = spm_encode(&sp, list[p], strlen(list[p]), ids, count, err); }
        } else {
            if (!ids) ids = (int*)malloc(sizeof(int) * (size_t)cap_ids);
            count = spm_wan_ids(&sp, list[p], max_tokens, ids, &trunc, err);
        }
        if (count < 0) { fprintf(stderr, "error: prompt %d: %s\n", p, err); rc = 1; break; }
        if (trunc) fprintf(stderr, "warning: prompt %d has %d pieces, more than the %d the encoder takes with </s>; the last %d are dropped (as Wan does)\n",
                           p, count - 1 + trunc, max_tokens, trunc);
        if (ids_only) { for (int i = 0; i < count; i++) printf(i ? " %d" : "%d", ids[i]); printf("\n"); continue; }
        double* out = (double*)malloc(sizeof(double) * (size_t)count * m.c.d_model);
        double t0 = umt5_now(), c0 = umt5_cpu_s();
        if (!out || umt5_encode(&m, ids, count, out, err)) { fprintf(stderr, "error: prompt %d: %s\n", p, out ? err : "out of memory"); free(out); rc = 1; break; }
        double dt = umt5_now() - t0, dc = umt5_cpu_s() - c0;
        char path[1200];
        if (prompt) snprintf(path, sizeof(path), "%s", outp);
        else snprintf(path, sizeof(path), "%s%s%04d.npy", outp, outp[strlen(outp) - 1] == '/' ? "" : "/", p);
        if (umt5_write_ctx(path, out, count, m.c.d_model, text_len, err)) { fprintf(stderr, "error: %s\n", err); free(out); rc = 1; break; }
        printf("prompt %d: %d tokens (incl. </s>) -> %s [%d, %d], %.2f s wall, %.2f s CPU, peak RSS %.0f MB\n", p, count, path, text_len > count ? text_len : count,
               m.c.d_model, dt, dc, umt5_peak_rss_mb());
        free(out);
    }
    free(ids); free(list); free(filebuf); spm_free(&sp);
    if (have_model) umt5_close(&m);
    return rc;
}
