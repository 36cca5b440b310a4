// gpu/multirank_tests.h: the host logic of a multi-rank train_tmd run (mpirun -np K), tested on the CPU:
//   the consolidated checkpoint: K ranks' slices of the AdamW moments gathered into the whole buffers (lib/shard.h's
//     host twin of gpu/shard_gpu.cuh shard_opt_gather_moments), written once, read back and sliced for K' ranks: the
//     slices equal the ones the K'-rank layout cuts from the original whole buffers, and K' = K gives the K ranks'
//     own slices back bit for bit
//   the layout on resume (gpu/train_state.h ts_check_layout): the same global batch resumes on any number of ranks
//     that divides it, anything else is refused with the --batch that fits
//   the data split (gpu/train_data.h train_data_next): K ranks of batch B together take exactly the samples of one
//     rank of batch K·B, step after step, and leave the stream in the same state
#pragma once
#include "train_state.h"
#include "train_data.h"
#include "../lib/shard.h"

static void test_ckpt_consolidated(const char* tmpdir) {
    printf("\n[multirank] a multi-rank run's checkpoint: consolidated from the slices, re-sharded on load, the layout "
           "refusals\n");
    char path[1024], err[ST_ERRLEN];
    snprintf(path, sizeof(path), "%s/multirank.safetensors", tmpdir);
    enum { NU = 4 };
    const char* names[NU] = {"embed", "block.0", "block.1", "head"};
    size_t sizes[NU] = {37, 1000, 1003, 5}, n = 37 + 1000 + 1003 + 5;
    float* w = (float*)malloc(sizeof(float) * n);
    float* m = (float*)malloc(sizeof(float) * n);
    float* v = (float*)malloc(sizeof(float) * n);
    Rng r = rng_make(2026);
    for (size_t i = 0; i < n; i++) {
        w[i] = (float)rng_normal(&r);
        m[i] = (float)rng_normal(&r);
        v[i] = (float)fabs(rng_normal(&r));
    }
    // a 2-rank run's state: the whole weights (every rank holds them) and each rank's slices of the moments
    const int K = 2, B = 3;
    ShardLayout L;
    EXPECT(shard_layout_init(&L, names, sizes, NU, K, 4, err, sizeof(err)) == 0, "%s", err);
    float* sm[2];
    float* sv[2];
    for (int k = 0; k < K; k++) {
        sm[k] = (float*)malloc(sizeof(float) * L.shard_numel);
        sv[k] = (float*)malloc(sizeof(float) * L.shard_numel);
        shard_scatter_host(&L, k, m, sm[k], sizeof(float));
        shard_scatter_host(&L, k, v, sv[k], sizeof(float));
    }
    // rank 0 consolidates (every unit gathered from the slices) and writes one file
    float* cm = (float*)calloc(n, sizeof(float));
    float* cv = (float*)calloc(n, sizeof(float));
    for (int u = 0; u < L.n_units; u++) {
        shard_unit_gather_host(&L, u, (const void* const*)sm, cm, sizeof(float));
        shard_unit_gather_host(&L, u, (const void* const*)sv, cv, sizeof(float));
    }
    TsMeta meta;
    memset(&meta, 0, sizeof(meta));
    ts_meta_set(&meta, "stage", "stage1");
    ts_meta_u64(&meta, "batch", (uint64_t)K * B);
    ts_meta_u64(&meta, "ranks", (uint64_t)K);
    ts_meta_u64(&meta, "step", 7);
    TsBuffer out[3] = {{"student.params", w, n}, {"student.adam_m", cm, n}, {"student.adam_v", cv, n}};
    EXPECT(ts_save(path, out, 3, &meta, err) == 0, "write: %s", err);
    // any later run reads the whole buffers
    float* lw = (float*)malloc(sizeof(float) * n);
    float* lm = (float*)malloc(sizeof(float) * n);
    float* lv = (float*)malloc(sizeof(float) * n);
    TsBuffer in[3] = {{"student.params", lw, n}, {"student.adam_m", lm, n}, {"student.adam_v", lv, n}};
    TsMeta have;
    EXPECT(ts_load(path, in, 3, &have, err) == 0, "read: %s", err);
    int whole =
        !memcmp(lw, w, sizeof(float) * n) && !memcmp(lm, m, sizeof(float) * n) && !memcmp(lv, v, sizeof(float) * n);
    EXPECT(whole, "the consolidated file does not hold the whole weights and moments of the 2 ranks");
    printf("  2 ranks' moment slices -> one file: the whole weights and moments, bit for bit: %s\n",
           whole ? "yes" : "NO");
    // re-sharded over K' = 1, 2, 3, 4: each rank's slices equal the layout's cut of the original buffers
    int Ks[4] = {1, 2, 3, 4};
    for (int k = 0; k < 4; k++) {
        ShardLayout L2;
        shard_layout_init(&L2, names, sizes, NU, Ks[k], 4, err, sizeof(err));
        float* a = (float*)malloc(sizeof(float) * L2.shard_numel);
        float* b = (float*)malloc(sizeof(float) * L2.shard_numel);
        size_t bad = 0;
        for (int rr = 0; rr < Ks[k]; rr++) {
            const float* src[2] = {m, v};
            const float* got[2] = {lm, lv};
            for (int q = 0; q < 2; q++) {
                shard_scatter_host(&L2, rr, src[q], a, sizeof(float));
                shard_scatter_host(&L2, rr, got[q], b, sizeof(float));
                for (size_t i = 0; i < L2.shard_numel; i++) bad += memcmp(&a[i], &b[i], sizeof(float)) != 0;
                if (Ks[k] == K)
                    bad += memcmp(b, q ? sv[rr] : sm[rr], sizeof(float) * L.shard_numel) !=
                           0; // the same layout: the ranks' own slices
            }
        }
        EXPECT(bad == 0, "re-sharded over %d ranks: %zu slice elements differ", Ks[k], bad);
        printf("  loaded on %d rank%s: every rank's slices of m and v as cut from the original%s: %s\n", Ks[k],
               Ks[k] > 1 ? "s" : "", Ks[k] == K ? " (= the writing ranks' own)" : "", bad ? "NO" : "yes");
        free(a);
        free(b);
    }
    // the layout on resume: global batch 6 (2 ranks x 3)
    EXPECT(ts_check_layout(&have, 2, 3, path, err) == 0, "the same layout must resume: %s", err);
    EXPECT(ts_check_layout(&have, 1, 6, path, err) == 0 && ts_check_layout(&have, 3, 2, path, err) == 0 &&
               ts_check_layout(&have, 6, 1, path, err) == 0,
           "another layout of the same global batch must resume: %s", err);
    printf("  global batch 6 written by 2 ranks x 3: resumes as 2 x 3, 1 x 6, 3 x 2, 6 x 1\n");
    EXPECT(ts_check_layout(&have, 1, 3, path, err) != 0 && strstr(err, "--batch 6 on 1 rank "),
           "1 rank x 3 must be refused with --batch 6: %s", err);
    printf("  1 rank x 3 -> %s\n", err);
    EXPECT(ts_check_layout(&have, 4, 1, path, err) != 0 && strstr(err, "cannot split") && strstr(err, "divides 6"),
           "4 ranks must be refused (6 is not a multiple of 4): %s", err);
    printf("  4 ranks -> %s\n", err);
    TsMeta old;
    memset(&old, 0, sizeof(old));
    ts_meta_u64(&old, "batch", 2); // a checkpoint from before "ranks": one rank
    EXPECT(ts_check_layout(&old, 2, 1, path, err) == 0 && ts_check_layout(&old, 2, 2, path, err) != 0 &&
               strstr(err, "1 rank x batch 2"),
           "a checkpoint without 'ranks' is one rank's: %s", err);
    for (int k = 0; k < K; k++) {
        free(sm[k]);
        free(sv[k]);
    }
    free(w);
    free(m);
    free(v);
    free(cm);
    free(cv);
    free(lw);
    free(lm);
    free(lv);
}

// K ranks of batch B take the samples of one rank of batch K·B (the built-in world's stream), two steps running
static void test_data_rank_split(void) {
    WanConfig c;
    char err[ST_ERRLEN];
    EXPECT(wan_preset(&c, "tiny", err) == 0, "%s", err);
    const int K = 3, B = 2;
    TrainData one, rk[3];
    EXPECT(train_data_open(&one, NULL, &c, 11, 1, 0, 1, err) == 0, "%s", err);
    for (int k = 0; k < K; k++) EXPECT(train_data_open(&rk[k], NULL, &c, 11, 1, k, K, err) == 0, "%s", err);
    size_t nx = one.numel, nc = one.nctx;
    float* x1 = (float*)malloc(sizeof(float) * nx * K * B);
    float* c1 = (float*)malloc(sizeof(float) * nc * K * B);
    float* xr = (float*)malloc(sizeof(float) * nx * B);
    float* cr = (float*)malloc(sizeof(float) * nc * B);
    size_t bad = 0, same_state = 1;
    for (int step = 0; step < 2; step++) {
        train_data_next(&one, K * B, x1, c1, err);
        for (int k = 0; k < K; k++) {
            train_data_next(&rk[k], B, xr, cr, err);
            bad += memcmp(xr, x1 + (size_t)k * B * nx, sizeof(float) * nx * B) != 0;
            bad += memcmp(cr, c1 + (size_t)k * B * nc, sizeof(float) * nc * B) != 0;
            same_state &= train_data_state(&rk[k]) == train_data_state(&one);
        }
    }
    EXPECT(bad == 0 && same_state,
           "world stream: %zu rank batches differ from one rank's batch of %d, stream states %s", bad, K * B,
           same_state ? "equal" : "differ");
    printf("  the world's stream, 2 steps: %d ranks of batch %d take one rank's batch of %d, rank r the samples from r "
           "x %d, one stream state: %s\n",
           K, B, K * B, B, bad == 0 && same_state ? "yes" : "NO");
    train_data_free(&one);
    for (int k = 0; k < K; k++) train_data_free(&rk[k]);
    free(x1);
    free(c1);
    free(xr);
    free(cr);
}

static void test_multirank(const char* tmpdir) {
    test_ckpt_consolidated(tmpdir);
    test_data_rank_split();
}
