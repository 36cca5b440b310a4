// cpu/umt5_tests.h: tests of the prompt-to-embedding path: lib/sentencepiece.h against the `sentencepiece`
// package, Wan's cleaning against Python's html/regex, and cpu/umt5_cpu.h against transformers' UMT5EncoderModel,
// all through committed vectors (dev/peer/make_spm_models.py, dev/peer/make_umt5_vectors.py). Entry: test_umt5(tmpdir).
// Self-contained (helpers are prefixed ut_).
#pragma once
#include "../lib/testing.h"
#include "../lib/sentencepiece.h"
#include "umt5_cpu.h"
#include "umt5_cli.h"

#define UT_DIR "dev/peer/vectors"
#define UT_MAX_IDS 20000

static int isxdigit_ascii_ut(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

// hex of UTF-8 bytes -> bytes (NUL-terminated); returns the length, stops at a tab, newline or end
static int ut_unhex(const char* h, char* out, const char** end) {
    int n = 0;
    for (; isxdigit_ascii_ut(h[0]) && isxdigit_ascii_ut(h[1]); h += 2) { unsigned v; sscanf(h, "%2x", &v); out[n++] = (char)v; }
    out[n] = 0; if (end) *end = h;
    return n;
}

// space-separated ints up to a tab, newline or end
static int ut_ints(const char* s, int* out, int max, const char** end) {
    int n = 0;
    while (*s == ' ') s++;
    while (*s && *s != '\t' && *s != '\n' && *s != '\r') {
        char* e; long v = strtol(s, &e, 10);
        if (e == s) break;
        if (n < max) out[n] = (int)v;
        n++; s = e;
        while (*s == ' ') s++;
    }
    if (end) *end = s;
    return n;
}

static const char* UT_MODELS[4] = {"nfkc_bf", "nfkc", "identity_bf", "identity"};

static void test_spm_vs_sentencepiece(void) {
    printf("\n[umt5] SentencePiece tokenizer vs the sentencepiece package (%s/spm_*.model, spm_cases.txt)\n", UT_DIR);
    SpmModel m[4]; char err[SPM_ERRLEN], path[512]; int ok[4];
    for (int k = 0; k < 4; k++) {
        snprintf(path, sizeof(path), "%s/spm_%s.model", UT_DIR, UT_MODELS[k]);
        ok[k] = spm_load(&m[k], path, err) == 0;
        EXPECT(ok[k], "%s", err);
    }
    snprintf(path, sizeof(path), "%s/spm_cases.txt", UT_DIR);
    FILE* f = fopen(path, "r");
    EXPECT(f != NULL, "cannot open %s: run dev/peer/make_spm_models.py (see dev/peer/README.md)", path);
    if (!f) { for (int k = 0; k < 4; k++) if (ok[k]) spm_free(&m[k]); return; }
    size_t cap = 1 << 20; char* line = (char*)malloc(cap); char* text = (char*)malloc(cap);
    int* want = (int*)malloc(sizeof(int) * UT_MAX_IDS); int* got = (int*)malloc(sizeof(int) * UT_MAX_IDS);
    int cases = 0, bad[4] = {0}, nids[4] = {0}, unk_or_byte[4] = {0}, no_prefix_diff = 0;
    SpmModel noprefix = m[0]; noprefix.add_dummy_prefix = 0;   // a deliberately wrong normaliser must disagree
    while (fgets(line, (int)cap, f)) {
        if (line[0] == '#') continue;
        const char* p; int n = ut_unhex(line, text, &p);
        cases++;
        for (int k = 0; k < 4; k++) {
            if (*p != '\t') { EXPECT(0, "%s: line %d has too few columns", path, cases); break; }
            int nw = ut_ints(p + 1, want, UT_MAX_IDS, &p);
            if (!ok[k]) continue;
            int ng = spm_encode(&m[k], text, (size_t)n, got, UT_MAX_IDS, err);
            nids[k] += nw;
            for (int i = 0; i < ng && i < UT_MAX_IDS; i++) if (m[k].type[got[i]] == SPM_UNKNOWN || m[k].type[got[i]] == SPM_BYTE) { unk_or_byte[k]++; break; }
            if (ng != nw || memcmp(got, want, sizeof(int) * (size_t)(nw < UT_MAX_IDS ? nw : UT_MAX_IDS)) != 0) {
                if (bad[k]++ < 3) {
                    printf("  MISMATCH spm_%s on \"%.50s\": %d ids, sentencepiece %d; first:", UT_MODELS[k], text, ng, nw);
                    for (int i = 0; i < ng && i < nw && i < UT_MAX_IDS; i++) if (got[i] != want[i]) { printf(" at %d: %d vs %d", i, got[i], want[i]); break; }
                    printf("\n");
                }
            }
            if (k == 0 && ok[0]) {
                int nn = spm_encode(&noprefix, text, (size_t)n, got, UT_MAX_IDS, err);
                if (nn != nw || memcmp(got, want, sizeof(int) * (size_t)(nw < UT_MAX_IDS ? nw : UT_MAX_IDS)) != 0) no_prefix_diff++;
            }
        }
    }
    fclose(f);
    for (int k = 0; k < 4; k++) {
        if (!ok[k]) continue;
        printf("  spm_%-12s %3d pieces, normaliser %-8s byte fallback %-3s: %d strings, %d ids, %d with <unk>/byte pieces: %d mismatched\n",
               UT_MODELS[k], m[k].n_pieces, m[k].name, m[k].byte_fallback ? "on" : "off", cases, nids[k], unk_or_byte[k], bad[k]);
        EXPECT(bad[k] == 0 && cases >= 40, "spm_%s: %d of %d strings give other ids than sentencepiece", UT_MODELS[k], bad[k], cases);
        EXPECT(unk_or_byte[k] > 0, "spm_%s: no string reached <unk> or byte fallback; the cases do not cover it", UT_MODELS[k]);
    }
    printf("  the same check with add_dummy_prefix flipped: %d of %d strings differ (must be most)\n", no_prefix_diff, cases);
    EXPECT(no_prefix_diff > cases / 2, "flipping add_dummy_prefix changed only %d of %d strings: the comparison is too weak", no_prefix_diff, cases);
    for (int k = 0; k < 4; k++) if (ok[k]) spm_free(&m[k]);
    free(line); free(text); free(want); free(got);
}

static void test_spm_wan_pipeline(void) {
    printf("\n[umt5] Wan's prompt pipeline: html.unescape x2, strip, regex \\s+ -> ' ', </s>, truncation (spm_wan.txt)\n");
    SpmModel m; char err[SPM_ERRLEN], path[512];
    snprintf(path, sizeof(path), "%s/spm_nfkc_bf.model", UT_DIR);
    if (spm_load(&m, path, err)) { EXPECT(0, "%s", err); return; }
    snprintf(path, sizeof(path), "%s/spm_wan.txt", UT_DIR);
    FILE* f = fopen(path, "r");
    EXPECT(f != NULL, "cannot open %s: run dev/peer/make_spm_models.py", path);
    if (!f) { spm_free(&m); return; }
    size_t cap = 1 << 20; char* line = (char*)malloc(cap); char* text = (char*)malloc(cap); char* clean = (char*)malloc(cap);
    int* want = (int*)malloc(sizeof(int) * 600); int* got = (int*)malloc(sizeof(int) * 600);
    int rows = 0, bad_clean = 0, bad_ids = 0, n_trunc = 0, changed = 0;
    while (fgets(line, (int)cap, f)) {
        if (line[0] == '#') continue;
        const char* p; ut_unhex(line, text, &p);
        int nc = ut_unhex(p + 1, clean, &p);
        int max_len = (int)strtol(p + 1, (char**)&p, 10);
        int nw = ut_ints(p + 1, want, 600, NULL);
        rows++;
        size_t gn; char* g = spm_wan_clean(text, strlen(text), &gn);
        if (!g || gn != (size_t)nc || memcmp(g, clean, gn) != 0) {
            if (bad_clean++ < 3) printf("  CLEAN MISMATCH on \"%.40s\": \"%.40s\" vs Python \"%.40s\"\n", text, g ? g : "(null)", clean);
        }
        if (g && strcmp(g, text) != 0) changed++;
        free(g);
        int trunc = 0, ng = spm_wan_ids(&m, text, max_len, got, &trunc, err);
        n_trunc += trunc > 0;
        if (ng != nw || memcmp(got, want, sizeof(int) * (size_t)(nw < 600 ? nw : 600)) != 0) {
            if (bad_ids++ < 3) printf("  IDS MISMATCH on \"%.40s\" (max_len %d): %d ids vs %d\n", text, max_len, ng, nw);
        }
    }
    fclose(f);
    printf("  %d (string, max_len) rows: cleaning changed %d and matched Python in all but %d; ids matched in all but %d; %d truncated\n",
           rows, changed, bad_clean, bad_ids, n_trunc);
    EXPECT(rows >= 80 && bad_clean == 0 && bad_ids == 0, "%d cleaning and %d id mismatches in %d rows", bad_clean, bad_ids, rows);
    EXPECT(changed >= 10 && n_trunc >= 3, "the rows exercise too little: %d cleaned, %d truncated", changed, n_trunc);
    // the empty prompt (Wan's negative prompt may be empty) is just </s>; a prompt over 512 pieces keeps 511 + </s>
    int trunc = 0, n = spm_wan_ids(&m, "", 512, got, &trunc, err);
    printf("  empty prompt -> %d id(s): %d (</s> is %d)\n", n, n > 0 ? got[0] : -1, m.eos_id);
    EXPECT(n == 1 && got[0] == m.eos_id && trunc == 0, "empty prompt gave %d ids", n);
    char* lng = (char*)malloc(20000); lng[0] = 0;
    for (int i = 0; i < 400; i++) strcat(lng, "a cat running ");
    n = spm_wan_ids(&m, lng, 512, got, &trunc, err);
    printf("  a %zu-character prompt -> %d ids, %d pieces cut, last id %d\n", strlen(lng), n, trunc, got[n - 1]);
    EXPECT(n == 512 && trunc > 0 && got[511] == m.eos_id, "long prompt: %d ids, %d cut", n, trunc);
    free(lng); free(line); free(text); free(clean); free(want); free(got);
    spm_free(&m);
}

static void ut_write_file(const char* path, const void* data, size_t n) { FILE* f = fopen(path, "wb"); if (f) { if (n) fwrite(data, 1, n, f); fclose(f); } }

static void test_spm_bad_models(const char* tmpdir) {
    printf("\n[umt5] bad tokenizer files\n");
    SpmModel m; char err[SPM_ERRLEN], path[600];
    int rc = spm_load(&m, "/nonexistent/spiece.model", err);
    printf("  missing -> %s\n", err);
    EXPECT(rc != 0 && strstr(err, "cannot open") && strstr(err, "spiece.model"), "missing file: %s", err);
    snprintf(path, sizeof(path), "%s/empty.model", tmpdir); ut_write_file(path, "", 0);
    rc = spm_load(&m, path, err); printf("  empty -> %s\n", err);
    EXPECT(rc != 0 && strstr(err, "0 bytes"), "empty file: %s", err);
    snprintf(path, sizeof(path), "%s/text.model", tmpdir);
    const char* junk = "{\"this\": \"is json, not a protobuf\"}\n"; ut_write_file(path, junk, strlen(junk));
    rc = spm_load(&m, path, err); printf("  not a protobuf -> %s\n", err);
    EXPECT(rc != 0 && strstr(err, "not a SentencePiece model"), "junk: %s", err);
    // a real model cut in the middle of its pieces, and one with a byte of its first piece's header flipped
    char src[512]; snprintf(src, sizeof(src), "%s/spm_identity.model", UT_DIR);
    FILE* f = fopen(src, "rb"); unsigned char buf[8192]; size_t n = f ? fread(buf, 1, sizeof(buf), f) : 0; if (f) fclose(f);
    EXPECT(n > 1000, "cannot read %s", src);
    if (n > 1000) {
        snprintf(path, sizeof(path), "%s/cut.model", tmpdir); ut_write_file(path, buf, n / 3);
        rc = spm_load(&m, path, err); printf("  truncated to a third -> %s\n", err);
        EXPECT(rc != 0 && strstr(err, "malformed"), "truncated: %s", err);
        unsigned char b2[8192]; memcpy(b2, buf, n); b2[1] = 0xff;   // the first piece's length varint
        snprintf(path, sizeof(path), "%s/flip.model", tmpdir); ut_write_file(path, b2, n);
        rc = spm_load(&m, path, err); printf("  corrupt length byte -> %s\n", err);
        EXPECT(rc != 0, "a corrupt model loaded");
    }
}

// ---------------------------------------------------------------------------------------------------------------
// the encoder

static double* ut_read(const StFile* f, const char* name, int64_t* numel) {
    char err[ST_ERRLEN]; const StTensor* t = st_find(f, name);
    if (!t) { EXPECT(0, "%s: tensor %s missing; rerun dev/peer/make_umt5_vectors.py", f->path, name); return NULL; }
    double* p = (double*)malloc(sizeof(double) * (size_t)(t->numel ? t->numel : 1));
    if (st_read_double(f, t, p, err)) { EXPECT(0, "%s", err); free(p); return NULL; }
    if (numel) *numel = t->numel;
    return p;
}

static void test_umt5_encoder(void) {
    printf("\n[umt5] encoder vs transformers UMT5EncoderModel (%s/umt5_*)\n", UT_DIR);
    char err[ST_ERRLEN], path[512];
    StFile io; snprintf(path, sizeof(path), "%s/umt5_io.safetensors", UT_DIR);
    if (st_open(&io, path, err)) { EXPECT(0, "%s (run dev/peer/make_umt5_vectors.py)", err); return; }
    // the bucket of every relative position -600..600, exactly as transformers computes it
    int64_t nb_ = 0; double* bk = ut_read(&io, "bucket", &nb_);
    if (bk) {
        int bad = 0, used[32] = {0};
        for (int r = -600; r <= 600; r++) { int b = umt5_bucket(r, 32, 128); if (b < 0 || b > 31 || b != (int)bk[r + 600]) bad++; else used[b] = 1; }
        int distinct = 0; for (int b = 0; b < 32; b++) distinct += used[b];
        printf("  relative position buckets -600..600 (32 buckets, max distance 128): %d differ from transformers, %d distinct\n", bad, distinct);
        // 31 of 32: bucket 16 would be r > 0 at distance 0, which cannot happen
        EXPECT(nb_ == 1201 && bad == 0 && distinct == 31, "bucket table: %d of %lld differ", bad, (long long)nb_);
        free(bk);
    }
    const char* dirs[2] = {"umt5_a", "umt5_b"};
    const char* cases[5] = {"a_len1", "a_len7", "a_prompt", "b_len7", "b_len500"};
    Umt5Model m[2]; int ok[2];
    for (int k = 0; k < 2; k++) {
        snprintf(path, sizeof(path), "%s/%s", UT_DIR, dirs[k]);
        ok[k] = umt5_open(&m[k], path, err) == 0;
        EXPECT(ok[k], "%s", err);
        if (ok[k]) { printf("  %s (%s, %d file%s): ", dirs[k], st_dtype_name(m[k].shared.dtype), m[k].set.n_files, m[k].set.n_files > 1 ? "s" : ""); umt5_config_print(&m[k].c, stdout); }
    }
    for (int ci = 0; ci < 5; ci++) {
        int k = cases[ci][0] == 'a' ? 0 : 1;
        if (!ok[k]) continue;
        char nm[64]; int64_t L = 0, n32 = 0, n64 = 0;
        snprintf(nm, sizeof(nm), "ids_%s", cases[ci]); double* idf = ut_read(&io, nm, &L);
        snprintf(nm, sizeof(nm), "out32_%s", cases[ci]); double* o32 = ut_read(&io, nm, &n32);
        snprintf(nm, sizeof(nm), "out64_%s", cases[ci]); double* o64 = ut_read(&io, nm, &n64);
        if (idf && o32 && o64 && n32 == L * m[k].c.d_model && n64 == n32) {
            int* ids = (int*)malloc(sizeof(int) * (size_t)L); for (int64_t i = 0; i < L; i++) ids[i] = (int)idf[i];
            double* out = (double*)malloc(sizeof(double) * (size_t)n32);
            if (umt5_encode(&m[k], ids, (int)L, out, err)) EXPECT(0, "%s", err);
            else {
                double e32 = 0, e64 = 0, r32 = 0, mx = 0;
                for (int64_t i = 0; i < n32; i++) { e32 = fmax(e32, fabs(out[i] - o32[i])); e64 = fmax(e64, fabs(out[i] - o64[i])); r32 = fmax(r32, fabs(o32[i] - o64[i])); mx = fmax(mx, fabs(o64[i])); }
                snprintf(nm, sizeof(nm), "%s (%lld tokens) vs fp32", cases[ci], (long long)L);
                expect_close_scaled(nm, out, o32, (long)n32, 1e-5);
                snprintf(nm, sizeof(nm), "%s (%lld tokens) vs true fp64", cases[ci], (long long)L);
                expect_close_scaled(nm, out, o64, (long)n32, 1e-12);
                printf("    transformers fp32 is %.2e from fp64, this double encoder %.2e\n", r32 / mx, e64 / mx);
                EXPECT(e64 < r32, "%s: not closer to fp64 (%.3e) than fp32 is (%.3e)", cases[ci], e64, r32);
            }
            if (ci == 2) {   // prompt -> ids through lib/sentencepiece.h, the same ids sentencepiece gave
                SpmModel sp; char e2[SPM_ERRLEN]; int64_t nu = 0; double* u = ut_read(&io, "prompt_utf8", &nu);
                snprintf(path, sizeof(path), "%s/spm_nfkc_bf.model", UT_DIR);
                if (u && spm_load(&sp, path, e2) == 0) {
                    char txt[512]; for (int64_t i = 0; i < nu && i < 511; i++) txt[i] = (char)u[i];
                    txt[nu < 511 ? nu : 511] = 0;
                    int got[600], tr = 0, n = spm_wan_ids(&sp, txt, 512, got, &tr, e2);
                    int same = n == (int)L; for (int i = 0; same && i < n; i++) same = got[i] == ids[i];
                    printf("    prompt \"%s\" -> %d ids by lib/sentencepiece.h: %s sentencepiece's + </s>\n", txt, n, same ? "the same as" : "DIFFERENT from");
                    EXPECT(same, "prompt ids differ from sentencepiece's");
                    spm_free(&sp);
                } else EXPECT(0, "prompt vector or tokenizer missing");
                free(u);
            }
            free(ids); free(out);
        } else EXPECT(0, "case %s: vectors missing or of the wrong size", cases[ci]);
        free(idf); free(o32); free(o64);
    }
    if (ok[0]) {   // an id outside the vocabulary is an error, not a read past the embedding
        int bad_ids[2] = {5, 560};
        double out[2 * 48];
        int rc = umt5_encode(&m[0], bad_ids, 2, out, err);
        printf("  id 560 with a vocabulary of 560 -> %s\n", rc ? err : "(accepted!)");
        EXPECT(rc != 0 && strstr(err, "560"), "out-of-vocabulary id: %s", err);
    }
    Umt5Model bad; int rc = umt5_open(&bad, UT_DIR "/spm_identity.model", err);
    printf("  a tokenizer passed as weights -> %s\n", rc ? err : "(accepted!)");
    EXPECT(rc != 0, "a non-safetensors file opened as weights");
    if (!rc) umt5_close(&bad);
    snprintf(path, sizeof(path), "%s/umt5_io.safetensors", UT_DIR);
    rc = umt5_open(&bad, path, err);
    printf("  a safetensors file without encoder tensors -> %s\n", rc ? err : "(accepted!)");
    EXPECT(rc != 0 && strstr(err, "missing"), "wrong safetensors: %s", err);
    if (!rc) umt5_close(&bad);
    for (int k = 0; k < 2; k++) if (ok[k]) umt5_close(&m[k]);
    st_close(&io);
}

// the documented command end to end: prompt -> ids -> encoder -> .npy padded to --text-len
static void test_umt5_cli(const char* tmpdir) {
    printf("\n[umt5] ./test_tmd encode on the tiny encoder: a prompt to a padded context .npy, and a prompt file\n");
    char err[ST_ERRLEN], path[700], tok[300], wts[300], prompts[600], outdir[600], t40[8] = "40";
    snprintf(tok, sizeof(tok), "%s/spm_nfkc_bf.model", UT_DIR); snprintf(wts, sizeof(wts), "%s/umt5_a", UT_DIR);
    snprintf(path, sizeof(path), "%s/ctx.npy", tmpdir);
    char* av[] = {"encode", "--tokenizer", tok, "--weights", wts, "--prompt", "A panda drinking coffee in a cafe in Paris, in Van Gogh style",
                  "--out", path, "--text-len", t40};
    int rc = umt5_cli_main((int)(sizeof(av) / sizeof(av[0])), av);
    EXPECT(rc == 0, "encode returned %d", rc);
    StFile io; char iop[300]; snprintf(iop, sizeof(iop), "%s/umt5_io.safetensors", UT_DIR);
    float* ctx = NULL; int64_t want_shape[2] = {40, 48};
    if (rc == 0 && npy_read_shape(path, &ctx, 2, want_shape, err) == 0 && st_open(&io, iop, err) == 0) {
        int64_t n = 0; double* ref = ut_read(&io, "out64_a_prompt", &n);
        double* got = (double*)malloc(sizeof(double) * 40 * 48); double padmax = 0;
        for (int i = 0; i < 40 * 48; i++) { got[i] = ctx[i]; if (i >= 30 * 48) padmax = fmax(padmax, fabs(ctx[i])); }
        if (ref && n == 30 * 48) expect_close_scaled("encode --text-len 40: rows 0..29 vs fp64 (float32 file)", got, ref, 30 * 48, 1e-6);
        else EXPECT(0, "reference out64_a_prompt missing");
        printf("  rows 30..39 (padding): max |value| %g\n", padmax);
        EXPECT(padmax == 0, "padding rows are not zero (max %g)", padmax);
        free(ref); free(got); st_close(&io);
    } else EXPECT(0, "%s", err);
    free(ctx);
    // a prompt file: one ordinary line and one empty line -> two files, the second a single </s> row
    snprintf(prompts, sizeof(prompts), "%s/prompts.txt", tmpdir); snprintf(outdir, sizeof(outdir), "%s/ctx_dir", tmpdir);
    ut_write_file(prompts, "a cat running on the grass\n\nthe end\n", 36);
    char* av2[] = {"encode", "--tokenizer", tok, "--weights", wts, "--prompts", prompts, "--out", outdir};
    rc = umt5_cli_main((int)(sizeof(av2) / sizeof(av2[0])), av2);
    EXPECT(rc == 0, "encode --prompts returned %d", rc);
    int nd; int64_t sh[ST_MAXDIM]; float* f = NULL;
    snprintf(path, sizeof(path), "%s/0001.npy", outdir);
    int ok = npy_read(path, &f, &nd, sh, err) == 0 && nd == 2 && sh[0] == 1 && sh[1] == 48;
    printf("  --prompts with an empty second line -> %s %s\n", path, ok ? "[1, 48] (</s> only)" : err);
    EXPECT(ok, "empty prompt line: %s", err);
    free(f); f = NULL;
    snprintf(path, sizeof(path), "%s/0002.npy", outdir);
    EXPECT(npy_read(path, &f, &nd, sh, err) == 0, "third prompt: %s", err);
    free(f);
    char* av3[] = {"encode", "--tokenizer", tok, "--prompt", "x", "--prompts", prompts, "--ids-only"};
    rc = umt5_cli_main((int)(sizeof(av3) / sizeof(av3[0])), av3);
    printf("  both --prompt and --prompts -> exit %d\n", rc);
    EXPECT(rc == 2, "conflicting flags returned %d", rc);
}

static void test_umt5(const char* tmpdir) {
    test_spm_vs_sentencepiece();
    test_spm_wan_pipeline();
    test_spm_bad_models(tmpdir);
    test_umt5_encoder();
    test_umt5_cli(tmpdir);
}
