// lib/latent_data_tests.h: test_latent_data(tmpdir), the group "data" of `make test`: the latent dataset format
// (lib/latent_data.h), ./test_tmd pack (lib/latent_data_cli.h) and train_tmd's data source and Table 7 defaults
// (gpu/train_data.h), the KD warm-up's captions and pair cache settings from either data source (gpu/kd_pairs.h), all
// on tiny random arrays, with one bad input of every kind the reader refuses.
#pragma once
#include "testing.h"
#include "latent_data_cli.h"
#include "../gpu/train_data.h"
#include "../gpu/kd_pairs.h"   // the KD warm-up's pairs: captions from the run's data, the cache's metadata and its check
#include "../gpu/distill_plan.h" // the KD plan's pairs item, for the dataset's latent shape

static void ldt_path_(char* out, size_t n, const char* dir, const char* name) { snprintf(out, n, "%s/%s", dir, name); }
static int ldt_exists_(const char* path) { FILE* f = fopen(path, "rb"); if (f) fclose(f); return f != NULL; }

// runs pack_main on a NULL-terminated argument list, its messages to stderr
static int ldt_pack_(const char* const* args) {
    char* av[32]; int ac = 0;
    av[ac++] = (char*)"pack";
    while (*args && ac < 31) av[ac++] = (char*)*args++;
    av[ac] = NULL;
    fflush(stdout);
    return pack_main(ac, av);
}

// a safetensors file from a raw JSON header and raw data bytes (for dtypes st_write does not write)
static void ldt_write_raw_(const char* path, const char* json, const void* data, size_t bytes) {
    FILE* f = fopen(path, "wb");
    size_t hn = strlen(json), pad = (8 - hn % 8) % 8;
    uint64_t n = hn + pad;
    unsigned char len8[8];
    for (int k = 0; k < 8; k++) len8[k] = (unsigned char)(n >> (8 * k));
    fwrite(len8, 1, 8, f); fwrite(json, 1, hn, f);
    for (size_t k = 0; k < pad; k++) fputc(' ', f);
    fwrite(data, 1, bytes, f);
    fclose(f);
}

// the sample arrays of the round trip: 3 samples of [3, 2, 8, 8] latents and [rows_i, 32] contexts
#define LDT_N 3
#define LDT_C 3
#define LDT_T 2
#define LDT_HW 8
#define LDT_D 32
static const int LDT_ROWS[LDT_N] = {3, 5, 4};   // non-zero rows; sample 2's file carries 3 zero rows more (umT5 padding)

static void test_latent_data(const char* tmpdir) {
    printf("\n[data] latent datasets: ./test_tmd pack, the reader's checks, the trainer's order and Table 7\n");
    char dir[600], lat[700], ctx[700], p[800], q[800], out[800], err[ST_ERRLEN];
    snprintf(dir, sizeof(dir), "%s/latent_data", tmpdir);
    ldt_path_(lat, sizeof(lat), dir, "lat"); ldt_path_(ctx, sizeof(ctx), dir, "ctx");
    char cmd[2400]; snprintf(cmd, sizeof(cmd), "mkdir -p '%s' '%s'", lat, ctx);
    EXPECT(system(cmd) == 0, "cannot create %s", dir);
    Rng rng = rng_make(20261201);
    size_t nl = (size_t)LDT_C * LDT_T * LDT_HW * LDT_HW;
    float* xs = (float*)malloc(sizeof(float) * nl * LDT_N);
    float* cs = (float*)calloc((size_t)LDT_N * 8 * LDT_D, sizeof(float));   // up to 8 rows each
    float neg[2 * LDT_D];
    for (size_t k = 0; k < nl * LDT_N; k++) xs[k] = (float)rng_normal(&rng);
    for (int i = 0; i < LDT_N; i++) for (int k = 0; k < LDT_ROWS[i] * LDT_D; k++) cs[i * 8 * LDT_D + k] = (float)rng_normal(&rng);
    for (int k = 0; k < 2 * LDT_D; k++) neg[k] = (float)rng_normal(&rng);
    for (int i = 0; i < LDT_N; i++) {
        char name[32]; snprintf(name, sizeof(name), "%04d.npy", i);
        int64_t ls[4] = {LDT_C, LDT_T, LDT_HW, LDT_HW}, cshape[2] = {LDT_ROWS[i] + (i == 2 ? 3 : 0), LDT_D};
        ldt_path_(p, sizeof(p), lat, name); EXPECT(npy_write(p, xs + i * nl, 4, ls, err) == 0, "%s", err);
        ldt_path_(p, sizeof(p), ctx, name); EXPECT(npy_write(p, cs + i * 8 * LDT_D, 2, cshape, err) == 0, "%s", err);
    }
    char negp[800], capp[800]; ldt_path_(negp, sizeof(negp), dir, "neg.npy"); ldt_path_(capp, sizeof(capp), dir, "captions.txt");
    int64_t ns[2] = {2, LDT_D};
    EXPECT(npy_write(negp, neg, 2, ns, err) == 0, "%s", err);
    const char* captions[LDT_N] = {"a red fox, running", "\"quoted\" caption / with slash", "third"};
    FILE* cf = fopen(capp, "w"); for (int i = 0; i < LDT_N; i++) fprintf(cf, "%s\n", captions[i]); fclose(cf);

    // 1. pack, then read every sample back: values bit for bit, contexts padded with zero rows to the model's text_len
    ldt_path_(out, sizeof(out), dir, "data.safetensors");
    const char* a1[] = {"--latents", lat, "--contexts", ctx, "--negative", negp, "--captions", capp, "--out", out, NULL};
    EXPECT(ldt_pack_(a1) == 0, "pack of 3 tiny samples failed");
    LatentData d;
    int rc = ld_open(&d, out, err);
    EXPECT(rc == 0, "ld_open: %s", err);
    if (rc == 0) {
        EXPECT(d.n == LDT_N && d.C == LDT_C && d.T == LDT_T && d.H == LDT_HW && d.W == LDT_HW && d.D == LDT_D && d.L == 5,
               "shapes: n %lld C %d T %d H %d W %d D %d L %d; want 3 3 2 8 8 32 5 (L: the longest context's non-zero rows)",
               (long long)d.n, d.C, d.T, d.H, d.W, d.D, d.L);
        int text_len = 12; float got_x[LDT_C * LDT_T * LDT_HW * LDT_HW], got_c[12 * LDT_D], got_n[12 * LDT_D];
        int same_x = 1, same_c = 1, same_cap = 1;
        for (int i = 0; i < LDT_N; i++) {
            EXPECT(ld_read_latent(&d, i, got_x, err) == 0 && ld_read_context(&d, i, got_c, text_len, err) == 0, "sample %d: %s", i, err);
            same_x &= memcmp(got_x, xs + i * nl, sizeof(float) * nl) == 0;
            for (int k = 0; k < text_len * LDT_D; k++) same_c &= got_c[k] == (k < 8 * LDT_D ? cs[i * 8 * LDT_D + k] : 0.f);
            char cap[128]; EXPECT(ld_caption(&d, i, cap, sizeof(cap), err) == 0, "%s", err);
            same_cap &= strcmp(cap, captions[i]) == 0;
        }
        EXPECT(same_x, "latents read back differ from the .npy files");
        EXPECT(same_c, "contexts read back differ from the .npy files (or are not zero past their rows)");
        EXPECT(same_cap, "captions read back differ from the captions file");
        EXPECT(ld_read_negative(&d, got_n, text_len, err) == 0, "%s", err);
        int same_n = 1; for (int k = 0; k < text_len * LDT_D; k++) same_n &= got_n[k] == (k < 2 * LDT_D ? neg[k] : 0.f);
        EXPECT(same_n, "the negative context read back differs");
        EXPECT(ld_read_latent(&d, LDT_N, got_x, err) != 0 && strstr(err, "sample 3"), "sample 3 of 3 should be refused: %s", err);
        printf("  pack -> %lld samples, latents [%d, %d, %d, %d], contexts [%d, %d] read back bit for bit, captions too\n", (long long)d.n, d.C, d.T, d.H, d.W, d.L, d.D);
        // 2. against a model: the tiny preset takes it; each mismatch is refused naming the tensor and the fix
        WanConfig c; wan_preset(&c, "tiny", err);
        EXPECT(ld_check_model(&d, c.name, c.in_dim, c.out_dim, c.patch, c.text_len, c.text_dim, err) == 0, "tiny should take the dataset: %s", err);
        struct { const char* what; WanConfig c; const char* says; } bad[4];
        for (int k = 0; k < 4; k++) bad[k].c = c;
        bad[0].what = "16 latent channels"; bad[0].c.in_dim = bad[0].c.out_dim = 16; bad[0].says = "channels";
        bad[1].what = "patch 3"; bad[1].c.patch[1] = 3; bad[1].says = "multiple of the model's patch";
        bad[2].what = "text_dim 64"; bad[2].c.text_dim = 64; bad[2].says = "'contexts' are 32 wide";
        bad[3].what = "text_len 4"; bad[3].c.text_len = 4; bad[3].says = "--text-len 4";
        for (int k = 0; k < 4; k++) {
            err[0] = 0;
            int r = ld_check_model(&d, "x", bad[k].c.in_dim, bad[k].c.out_dim, bad[k].c.patch, bad[k].c.text_len, bad[k].c.text_dim, err);
            EXPECT(r != 0 && strstr(err, bad[k].says), "a model with %s should be refused saying '%s': %s", bad[k].what, bad[k].says, err);
        }
        ld_close(&d);
    }
    // --text-len 12 stores 12 rows; --text-len 4 is fewer than sample 1's 5 non-zero rows: refused, nothing written
    char out12[800]; ldt_path_(out12, sizeof(out12), dir, "data12.safetensors");
    const char* a2[] = {"--latents", lat, "--contexts", ctx, "--negative", negp, "--out", out12, "--text-len", "12", NULL};
    EXPECT(ldt_pack_(a2) == 0 && ld_open(&d, out12, err) == 0 && d.L == 12 && !d.cap, "--text-len 12: %s", err);
    if (d.fp) ld_close(&d);

    // 3. pack refuses bad input and leaves no file behind
    char outb[800]; ldt_path_(outb, sizeof(outb), dir, "bad.safetensors");
    const char* a3[] = {"--latents", lat, "--contexts", ctx, "--negative", negp, "--out", outb, "--text-len", "4", NULL};
    EXPECT(ldt_pack_(a3) != 0 && !ldt_exists_(outb), "--text-len 4 < 5 non-zero rows should be refused with no file written");
    const char* a4[] = {"--latents", lat, "--contexts", ctx, "--negative", negp, "--captions", negp, "--out", outb, NULL};
    EXPECT(ldt_pack_(a4) != 0 && !ldt_exists_(outb), "a captions file without 3 lines should be refused");
    const char* a5[] = {"--latents", lat, "--contexts", ctx, "--out", outb, NULL};
    EXPECT(ldt_pack_(a5) != 0 && !ldt_exists_(outb), "pack without --negative should be refused");
    {   // a latent without its context; then a latent of another size; then a NaN
        int64_t ls[4] = {LDT_C, LDT_T, LDT_HW, LDT_HW}, ls2[4] = {LDT_C, LDT_T, LDT_HW, 2 * LDT_HW};
        ldt_path_(p, sizeof(p), lat, "0003.npy"); npy_write(p, xs, 4, ls, err);
        const char* a6[] = {"--latents", lat, "--contexts", ctx, "--negative", negp, "--out", outb, NULL};
        EXPECT(ldt_pack_(a6) != 0 && !ldt_exists_(outb), "a latent with no context of the same name should be refused");
        ldt_path_(q, sizeof(q), ctx, "0003.npy"); int64_t cshape[2] = {2, LDT_D}; npy_write(q, cs, 2, cshape, err);
        float* big = (float*)calloc(nl * 2, sizeof(float));
        npy_write(p, big, 4, ls2, err);
        EXPECT(ldt_pack_(a6) != 0 && !ldt_exists_(outb), "a latent of another size should be refused");
        memcpy(big, xs, sizeof(float) * nl); big[17] = NAN;
        npy_write(p, big, 4, ls, err);
        EXPECT(ldt_pack_(a6) != 0 && !ldt_exists_(outb), "a latent holding a NaN should be refused");
        remove(p); remove(q); free(big);
    }

    // 4. the reader refuses malformed files, naming the tensor (files made by st_write, and raw for other dtypes)
    {
        float buf[4 * 3 * 2 * 8 * 8];
        for (size_t k = 0; k < sizeof(buf) / sizeof(buf[0]); k++) buf[k] = (float)(k % 7) * 0.25f;
        const char* meta[] = {"format", LD_FORMAT, "version", LD_VERSION};
        StOut good[3] = {{"latents", 5, {2, 3, 2, 8, 8}, buf, NULL}, {"contexts", 3, {2, 4, 32}, buf, NULL}, {"negative_context", 2, {4, 32}, buf, NULL}};
        struct { const char* what; int drop; int field; int64_t dim; int nmeta; const char* says; } cases[] = {
            {"no __metadata__ format", -1, -1, 0, 0, "format"},
            {"no negative_context", 2, -1, 0, 2, "negative_context"},
            {"latents of rank 4", -1, 0, 4, 2, "expected 5 dims"},
            {"3 contexts for 2 latents", -1, 1, 3, 2, "has 3 samples"},
            {"a negative context 16 wide", -1, 2, 16, 2, "'negative_context' has shape"},
        };
        for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
            StOut t[3]; int n = 0;
            for (int j = 0; j < 3; j++) {
                if (j == cases[k].drop) continue;
                t[n] = good[j];
                if (j == cases[k].field) {
                    if (j == 0) t[n].ndim = 4;
                    else if (j == 1) t[n].shape[0] = cases[k].dim;
                    else t[n].shape[1] = cases[k].dim;
                }
                n++;
            }
            ldt_path_(p, sizeof(p), dir, "malformed.safetensors");
            EXPECT(st_write(p, t, n, meta, cases[k].nmeta, err) == 0, "%s", err);
            err[0] = 0;
            EXPECT(ld_open(&d, p, err) != 0 && strstr(err, cases[k].says), "%s: should be refused saying '%s': %s", cases[k].what, cases[k].says, err);
        }
        // a NaN in sample 1: the file opens, sample 0 reads, sample 1 is refused by name
        buf[3 * 2 * 8 * 8 + 5] = NAN;
        ldt_path_(p, sizeof(p), dir, "nan.safetensors");
        EXPECT(st_write(p, good, 3, meta, 2, err) == 0, "%s", err);
        float x[3 * 2 * 8 * 8];
        rc = ld_open(&d, p, err);
        EXPECT(rc == 0 && ld_read_latent(&d, 0, x, err) == 0, "a NaN in sample 1 should not stop sample 0: %s", err);
        err[0] = 0;
        EXPECT(rc == 0 && ld_read_latent(&d, 1, x, err) != 0 && strstr(err, "'latents', sample 1") && strstr(err, "finite"), "the NaN in sample 1: %s", err);
        if (rc == 0) ld_close(&d);
        // BF16 latents and contexts read back exactly (k/4 is exact in bf16); captions of dtype F32 refused; truncated
        uint16_t hb[2 * 3 * 2 * 8 * 8 + 2 * 4 * 32 + 4 * 32];
        size_t nb = sizeof(hb) / sizeof(hb[0]);
        for (size_t k = 0; k < nb; k++) { float v = (float)(k % 7) * 0.25f; uint32_t u; memcpy(&u, &v, 4); hb[k] = (uint16_t)(u >> 16); }
        char json[1024];
        snprintf(json, sizeof(json), "{\"__metadata__\":{\"format\":\"" LD_FORMAT "\",\"version\":\"" LD_VERSION "\"},"
                 "\"latents\":{\"dtype\":\"BF16\",\"shape\":[2,3,2,8,8],\"data_offsets\":[0,%d]},"
                 "\"contexts\":{\"dtype\":\"BF16\",\"shape\":[2,4,32],\"data_offsets\":[%d,%d]},"
                 "\"negative_context\":{\"dtype\":\"BF16\",\"shape\":[4,32],\"data_offsets\":[%d,%d]}}",
                 2 * 768, 2 * 768, 2 * 768 + 512, 2 * 768 + 512, 2 * 768 + 512 + 256);
        ldt_path_(p, sizeof(p), dir, "bf16.safetensors");
        ldt_write_raw_(p, json, hb, sizeof(hb));
        float cx[12 * 32];
        rc = ld_open(&d, p, err);
        EXPECT(rc == 0 && ld_read_latent(&d, 1, x, err) == 0 && ld_read_context(&d, 1, cx, 12, err) == 0, "BF16 dataset: %s", err);
        int same = 1;
        for (int k = 0; k < 384 && rc == 0; k++) same &= x[k] == (float)((384 + k) % 7) * 0.25f;   // sample 1: elements 384..
        for (int k = 0; k < 12 * 32 && rc == 0; k++) same &= cx[k] == (k < 128 ? (float)((768 + 128 + k) % 7) * 0.25f : 0.f);
        EXPECT(rc == 0 && same, "BF16 latents and contexts should read back exactly");
        if (rc == 0) ld_close(&d);
        char json2[1200];
        snprintf(json2, sizeof(json2), "%.*s,\"captions\":{\"dtype\":\"F32\",\"shape\":[2,1],\"data_offsets\":[%d,%d]}}", (int)strlen(json) - 1, json,
                 2 * 768 + 512 + 256, 2 * 768 + 512 + 256 + 8);
        uint16_t hb2[sizeof(hb) / 2 + 4]; memcpy(hb2, hb, sizeof(hb)); memset(hb2 + nb, 0, 8);
        ldt_write_raw_(p, json2, hb2, sizeof(hb2));
        err[0] = 0;
        EXPECT(ld_open(&d, p, err) != 0 && strstr(err, "'captions' has dtype F32"), "F32 captions should be refused: %s", err);
        ldt_write_raw_(p, json, hb, sizeof(hb) - 10);
        err[0] = 0;
        EXPECT(ld_open(&d, p, err) != 0, "a truncated dataset should be refused at open");
    }

    // 5. the visiting order: a permutation per epoch, deterministic, split by rank, resumable from the position
    {
        LdOrder o1, o2, o3;
        ld_order_init(&o1, 7, 7); ld_order_init(&o2, 7, 7); ld_order_init(&o3, 8, 7);
        int perm_ok = 1, same = 1, differs = 0, epochs_differ = 0;
        int64_t seq[21];
        for (int e = 0; e < 3; e++) {
            int seen[7] = {0};
            for (int j = 0; j < 7; j++) { seq[e * 7 + j] = ld_order_index(&o1, (uint64_t)(e * 7 + j)); seen[seq[e * 7 + j]]++; }
            for (int j = 0; j < 7; j++) perm_ok &= seen[j] == 1;
        }
        for (int j = 0; j < 7; j++) epochs_differ |= seq[j] != seq[7 + j];
        for (int j = 0; j < 21; j++) { same &= ld_order_index(&o2, (uint64_t)j) == seq[j]; differs |= ld_order_index(&o3, (uint64_t)j) != seq[j]; }
        EXPECT(perm_ok, "every epoch should visit each of the 7 samples once");
        EXPECT(same && differs && epochs_differ, "the order should repeat for one seed (%d), change with the seed (%d) and between epochs (%d)", same, differs, epochs_differ);
        // 2 ranks of batch 2 take the 1-rank run's positions 4k..4k+1 and 4k+2..4k+3; ld_order_index jumps back
        // to an earlier epoch (a resume) and gives the same samples
        uint64_t pos0 = 0, pos1 = 0; int split = 1;
        for (int k = 0; k < 5; k++) {
            int64_t i0[2], i1[2];
            ld_order_batch(&o2, &pos0, 0, 2, 2, i0); ld_order_batch(&o2, &pos1, 1, 2, 2, i1);
            for (int b = 0; b < 2; b++) split &= i0[b] == seq[(4 * k + b) % 21] && i1[b] == seq[(4 * k + 2 + b) % 21];
        }
        EXPECT(split && pos0 == 20 && pos1 == 20, "2 ranks should split each global batch of 4 of the 1-rank order (positions %llu, %llu)",
               (unsigned long long)pos0, (unsigned long long)pos1);
        ld_order_free(&o1); ld_order_free(&o2); ld_order_free(&o3);
    }

    // 6. train_tmd's data source: the file's samples in the order's sequence, the negative as the unconditional
    // context, the state one integer; the world's source is world_sample_batch's stream unchanged
    {
        WanConfig c; wan_preset(&c, "tiny", err);
        TrainData td, tw;
        rc = train_data_open(&td, out, &c, 5, 1, 0, 1, err);
        EXPECT(rc == 0, "train_data_open of the packed file with the tiny preset: %s", err);
        if (rc == 0) {
            EXPECT(td.T == LDT_T && td.H == LDT_HW && td.numel == nl && td.nctx == (size_t)c.text_len * c.text_dim, "data shapes");
            float xb[2 * 384], cb[2 * 12 * 32], xr[384], cr[12 * 32], xb2[2 * 384], cb2[2 * 12 * 32];
            LdOrder o; ld_order_init(&o, td.order_seed, LDT_N);
            int ok = 1;
            for (int k = 0; k < 4; k++) {   // past an epoch (3 samples)
                EXPECT(train_data_next(&td, 2, xb, cb, err) == 0, "%s", err);
                for (int b = 0; b < 2; b++) {
                    int64_t i = ld_order_index(&o, (uint64_t)(2 * k + b));
                    ld_read_latent(&td.ld, i, xr, err); ld_read_context(&td.ld, i, cr, c.text_len, err);
                    ok &= !memcmp(xr, xb + b * 384, sizeof(xr)) && !memcmp(cr, cb + b * 384, sizeof(cr));
                }
            }
            EXPECT(ok, "train_data_next should return the dataset's samples in the order's sequence");
            uint64_t s = train_data_state(&td);
            train_data_next(&td, 2, xb, cb, err);
            train_data_set_state(&td, s);
            train_data_next(&td, 2, xb2, cb2, err);
            EXPECT(s == 8 && !memcmp(xb, xb2, sizeof(xb)) && !memcmp(cb, cb2, sizeof(cb)), "resuming from state %llu should repeat the batch", (unsigned long long)s);
            int neg_ok = 1; for (int k = 0; k < 12 * 32; k++) neg_ok &= td.negative[k] == (k < 64 ? neg[k] : 0.f);
            EXPECT(neg_ok, "the unconditional context should be the negative prompt's, zero-padded");
            ld_order_free(&o); train_data_free(&td);
        }
        EXPECT(train_data_open(&tw, NULL, &c, 5, 1, 0, 1, err) == 0 && !tw.from_file && !tw.negative, "the built-in world: %s", err);
        WorldConfig wc = world_config_tiny(); WRng st = wrng_seed(5, 1, 0);
        float* a = (float*)malloc(sizeof(float) * tw.numel * 2); float* b = (float*)malloc(sizeof(float) * tw.numel * 2);
        float* ca = (float*)malloc(sizeof(float) * tw.nctx * 2); float* cb3 = (float*)malloc(sizeof(float) * tw.nctx * 2);
        world_sample_batch(&wc, &st, WORLD_TRAIN, 2, a, ca, NULL, NULL);
        train_data_next(&tw, 2, b, cb3, err);
        EXPECT(!memcmp(a, b, sizeof(float) * tw.numel * 2) && !memcmp(ca, cb3, sizeof(float) * tw.nctx * 2) && train_data_state(&tw) == st.s,
               "without --data the trainer's stream should be the world's, unchanged");
        free(a); free(b); free(ca); free(cb3); train_data_free(&tw);
        WanConfig big; wan_preset(&big, "wan2.1-t2v-1.3b", err);
        err[0] = 0;
        EXPECT(train_data_open(&td, out, &big, 5, 1, 0, 1, err) != 0 && strstr(err, "channels"), "the 1.3B model should refuse 3-channel latents: %s", err);
        err[0] = 0;
        EXPECT(train_data_open(&td, NULL, &big, 5, 1, 0, 1, err) != 0 && strstr(err, "--data"), "the 1.3B model without --data should point to it: %s", err);
    }

    // 7. Table 7: found by shape (an inferred checkpoint counts), not for the toy presets; the discriminator width
    // whose heads' parameter count is nearest the table's; flags a user gave are kept
    {
        WanConfig c13, c14, cw, ct; Table7 t;
        wan_preset(&c13, "wan2.1-t2v-1.3b", err); wan_preset(&c14, "wan2.1-t2v-14b", err); wan_preset(&cw, "world", err); wan_preset(&ct, "tiny", err);
        snprintf(c13.name, sizeof(c13.name), "inferred");
        EXPECT(table7_for(&cw, &t) == 0 && table7_for(&ct, &t) == 0, "the world and tiny presets have no Table 7 row");
        EXPECT(table7_for(&c14, &t) == 1 && t.c_norm == 1e-5 && t.N == 4, "14B: c = 1e-5·d, TMD-N4H5");
        EXPECT(table7_for(&c13, &t) == 1 && t.c_norm == 1.0 && t.N == 2 && t.stage1_lr == 3e-5, "1.3B (inferred name): c = d, N2H5, lr 3e-5");
        const WanConfig* cs2[2] = {&c13, &c14};
        for (int k = 0; k < 2; k++) {
            table7_for(cs2[k], &t);
            size_t n = 0; int w = table7_disc_width(cs2[k], t.disc_params, &n);
            DiscConfig dc = disc_config(cs2[k], w / 2, w / 2, w, w, w), dc2 = disc_config(cs2[k], w / 2 + 1, w / 2 + 1, w + 2, w + 2, w + 2);
            EXPECT(disc_num_params(&dc) == n && fabs((double)n - t.disc_params) <= fabs((double)disc_num_params(&dc2) - t.disc_params) &&
                   fabs((double)n / t.disc_params - 1) < 0.1, "%s: width %d gives %zu discriminator parameters, Table 7 says %.0f", t.name, w, n, t.disc_params);
            printf("  Table 7, %s: discriminator width %d -> %.1fM parameters (paper %.0fM)\n", t.name, w, n / 1e6, t.disc_params / 1e6);
        }
        char* argv[] = {(char*)"train_tmd", (char*)"--tmmf-lr", (char*)"1e-4", (char*)"--data", (char*)"f", NULL};
        EXPECT(flag_given(5, argv, "--tmmf-lr") && flag_given(5, argv, "--data") && !flag_given(5, argv, "--tmmf-steps"), "flag_given");
        table7_for(&c13, &t);
        int steps = 1000; double lr = 1e-4;   // as parsed: --tmmf-lr given (1e-4), --tmmf-steps left at its default
        Table7Set set[2] = {{"--tmmf-steps", &steps, NULL, (double)t.stage1_steps}, {"--tmmf-lr", NULL, &lr, t.stage1_lr}};
        FILE* devnull = fopen("/dev/null", "w");
        table7_apply(&t, set, 2, 5, argv, devnull ? devnull : stdout);
        if (devnull) fclose(devnull);
        EXPECT(steps == t.stage1_steps && lr == 1e-4, "Table 7 should fill --tmmf-steps (%d) and keep the given --tmmf-lr (%g)", steps, lr);
        // the config of a checkpoint before its weights are read: inferred from the header as wan_load infers it
        char ck[800]; ldt_path_(ck, sizeof(ck), dir, "tiny_teacher.safetensors");
        real* w = (real*)calloc(wan_num_params(&ct), sizeof(real));
        WanConfig peek;
        EXPECT(wan_save(ck, &ct, w, NULL, 0, err) == 0 && train_data_peek_config(&peek, NULL, ck, 0, err) == 0 && peek.dim == ct.dim &&
               peek.num_layers == ct.num_layers && peek.in_dim == ct.in_dim && peek.text_len == ct.text_len && peek.num_heads == ct.num_heads,
               "train_data_peek_config of a tiny checkpoint: %s", err);
        free(w);
    }

    // 8. the KD warm-up's pairs (gpu/kd_pairs.h): their captions are the data source's (the world's training stream
    // (seed, KD_STREAM, 0) as before --data; the dataset's contexts in its order for (seed, KD_STREAM)); the cache
    // records the source, and one of the other world, another dataset or another dataset's contents is refused by name
    {
        WanConfig c; wan_preset(&c, "tiny", err);
        KdPairSettings ks = {4, 2, 5.0, 3.0, 7, -1};
        TrainData tw, td;
        float* cw = (float*)malloc(sizeof(float) * 4 * (size_t)c.text_len * c.text_dim);
        float* cd = (float*)malloc(sizeof(float) * 4 * (size_t)c.text_len * c.text_dim);
        uint64_t hw = 1, hd = 0;
        EXPECT(train_data_open(&tw, NULL, &c, ks.seed, KD_STREAM, 0, 1, err) == 0 && kd_pairs_captions(cw, &tw, 4, &hw, err) == 0, "world captions: %s", err);
        {   // the world's captions: world_sample_batch's training stream (seed, KD_STREAM, 0), one clip per pair
            WorldConfig wc = world_config_tiny(); WRng st = wrng_seed(ks.seed, KD_STREAM, 0);
            float* clip = (float*)malloc(sizeof(float) * world_clip_numel(&wc)); float* cr = (float*)malloc(sizeof(float) * tw.nctx);
            int same = hw == 0;
            for (int i = 0; i < 4; i++) { world_sample_batch(&wc, &st, WORLD_TRAIN, 1, clip, cr, NULL, NULL); same &= !memcmp(cr, cw + i * tw.nctx, sizeof(float) * tw.nctx); }
            EXPECT(same, "the KD pairs' world captions should be the world's training stream (seed, %d, 0), one clip per pair", KD_STREAM);
            free(clip); free(cr);
        }
        rc = train_data_open(&td, out, &c, ks.seed, KD_STREAM, 0, 1, err);
        EXPECT(rc == 0 && kd_pairs_captions(cd, &td, 4, &hd, err) == 0 && hd != 0, "dataset captions: %s", err);
        if (rc == 0) {   // the dataset's: its contexts in the order of (seed, KD_STREAM), past an epoch (3 samples)
            LdOrder o; ld_order_init(&o, splitmix64_mix(ks.seed * 1000003ull + KD_STREAM), LDT_N);
            float cr[12 * 32]; int same = 1;
            for (int i = 0; i < 4; i++) { ld_read_context(&td.ld, ld_order_index(&o, (uint64_t)i), cr, c.text_len, err); same &= !memcmp(cr, cd + i * td.nctx, sizeof(cr)); }
            EXPECT(same, "the KD pairs' dataset captions should be its contexts in the data order of (seed, KD_STREAM)");
            ld_order_free(&o);
            // the memory plan's "KD pairs" item for the dataset's latent shape is what gpu/kd_gpu.cuh kd_gpu_work_init
            // puts on the device: P noises and teacher samples of td.numel floats, P contexts of td.nctx
            PlanInput pin; memset(&pin, 0, sizeof(pin));
            pin.wan = c; pin.T = td.T; pin.Hl = td.H; pin.Wl = td.W; pin.batch = 1; pin.N = 2; pin.H = 2; pin.kd_pairs = 5;
            MemPlan mp; distill_plan(&mp, &pin, 3);
            double want_b = 5.0 * (2.0 * td.numel + td.nctx) * 4.0, got_b = -1;
            for (int k = 0; k < mp.n; k++) if (!strcmp(mp.item[k].name, "KD pairs")) got_b = mp.item[k].bytes;
            EXPECT(got_b == want_b, "the KD plan's pairs for latents [%d, %d, %d, %d]: %.0f bytes, the device holds %.0f", LDT_C, td.T, td.H, td.W, got_b, want_b);
        }
        TsMeta mw, md, m2;
        kd_pairs_meta(&mw, &c, &tw, &ks, 0x1234, hw);
        // the world's cache keeps exactly the keys caches written before --data have, so they still load
        const char* keys[] = {"kind", "config", "world", "pairs", "sampler_steps", "cfg", "shift", "seed", "teacher_fnv1a"};
        int keys_ok = mw.n == 9;
        for (int k = 0; k < 9 && keys_ok; k++) keys_ok &= !strcmp(mw.key[k], keys[k]);
        EXPECT(keys_ok && !strcmp(ts_meta_get(&mw, "world"), "tiny"), "the world's KD cache metadata should keep its keys (%d of them)", mw.n);
        EXPECT(kd_pairs_check(&mw, &mw, "w.st", err) == 0, "a world cache of the same settings should load: %s", err);
        {   // pairs sampled with skip-layer guidance (Table 7's KD trajectories) are not pairs sampled without, either way
            KdPairSettings kslg = ks; kslg.skip_layer = 10; TsMeta ms;
            kd_pairs_meta(&ms, &c, &tw, &kslg, 0x1234, hw);
            err[0] = 0;
            EXPECT(kd_pairs_check(&mw, &ms, "w.st", err) != 0 && strstr(err, "skip_layer = 10"), "a cache without skip-layer guidance in a run with it: %s", err);
            printf("  pairs without skip-layer guidance, a run with it -> %s\n", err);
            err[0] = 0;
            EXPECT(kd_pairs_check(&ms, &mw, "w.st", err) != 0 && strstr(err, "skip-layer guidance at block 10"), "a cache with skip-layer guidance in a run without: %s", err);
            printf("  pairs with skip-layer guidance, a run without -> %s\n", err);
            err[0] = 0;
            EXPECT(kd_pairs_check(&ms, &ms, "w.st", err) == 0, "a cache with the same skip-layer guidance should load: %s", err);
        }
        if (rc == 0) {
            kd_pairs_meta(&md, &c, &td, &ks, 0x1234, hd);
            EXPECT(kd_pairs_check(&md, &md, "d.st", err) == 0, "a dataset cache of the same settings should load: %s", err);
            err[0] = 0;
            EXPECT(kd_pairs_check(&md, &mw, "d.st", err) != 0 && strstr(err, "latent dataset") && strstr(err, "built-in world 'tiny'"),
                   "a dataset's cache in a world run should be refused naming both: %s", err);
            err[0] = 0;
            EXPECT(kd_pairs_check(&mw, &md, "w.st", err) != 0 && strstr(err, "built-in world 'tiny'") && strstr(err, "latent dataset"),
                   "a world's cache in a dataset run should be refused naming both: %s", err);
            printf("  KD pairs: world captions = the world's stream, dataset captions = its contexts in order; a world cache in a --data run: %s\n", err);
            m2 = md; ts_meta_u64(&m2, "seed", 8);
            err[0] = 0;
            EXPECT(kd_pairs_check(&m2, &md, "d.st", err) != 0 && strstr(err, "seed"), "another seed should be refused naming it: %s", err);
            m2 = mw; ts_meta_set(&m2, "kind", "stage");
            err[0] = 0;
            EXPECT(kd_pairs_check(&m2, &mw, "w.st", err) != 0 && strstr(err, "kd_pairs"), "a file of another kind should be refused: %s", err);
        }
        // another dataset: of another size (its description differs); of the same shape with other contexts (the
        // fingerprint differs); the same contents under another name and context padding (data12: accepted)
        struct { const char* name; int n; float bump; int refuse; const char* says; } other[3] = {
            {"data_n2.safetensors", 2, 0.f, 1, "data = latents 2 x"}, {"data_ctx.safetensors", LDT_N, 0.5f, 1, "contexts_fnv1a"}, {NULL, 0, 0.f, 0, NULL}};
        for (int k = 0; k < 3 && rc == 0; k++) {
            char po[800];
            if (other[k].name) {
                ldt_path_(po, sizeof(po), dir, other[k].name);
                float* cx = (float*)malloc(sizeof(float) * LDT_N * 8 * LDT_D); memcpy(cx, cs, sizeof(float) * LDT_N * 8 * LDT_D);
                for (int j = 0; j < LDT_N * 8 * LDT_D; j++) cx[j] += other[k].bump;
                const char* meta[] = {"format", LD_FORMAT, "version", LD_VERSION};
                StOut t[3] = {{"latents", 5, {other[k].n, LDT_C, LDT_T, LDT_HW, LDT_HW}, xs, NULL}, {"contexts", 3, {other[k].n, 8, LDT_D}, cx, NULL},
                              {"negative_context", 2, {2, LDT_D}, neg, NULL}};
                EXPECT(st_write(po, t, 3, meta, 2, err) == 0, "%s", err);
                free(cx);
            } else snprintf(po, sizeof(po), "%s", out12);
            TrainData t2; uint64_t h2 = 0;
            int r2 = train_data_open(&t2, po, &c, ks.seed, KD_STREAM, 0, 1, err);
            EXPECT(r2 == 0 && kd_pairs_captions(cd, &t2, 4, &h2, err) == 0, "%s: %s", po, err);
            if (r2 == 0) {
                kd_pairs_meta(&m2, &c, &t2, &ks, 0x1234, h2);
                err[0] = 0;
                int refused = kd_pairs_check(&md, &m2, "d.st", err) != 0;
                if (other[k].refuse) EXPECT(refused && strstr(err, other[k].says), "a cache of %s should be refused naming '%s': %s", po, other[k].says, err);
                else EXPECT(!refused, "the same contexts and negative prompt packed with --text-len 12 are the same pairs: %s", err);
                train_data_free(&t2);
            }
        }
        if (rc == 0) train_data_free(&td);
        train_data_free(&tw); free(cw); free(cd);
    }
    free(xs); free(cs);
}
