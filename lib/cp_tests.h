// lib/cp_tests.h: context parallelism's host logic (lib/cp.h) against the serial computation, bit for bit: the K2 ranks
// of a group simulated one after another, the all-to-all and the all-gather done by hand (recv_r[j] = send_j[r]).
//   the layouts   seq -> heads gives rank r the heads [r·Hk, (r+1)·Hk) of every token; heads -> seq inverts it
//   attention     a small self-attention with RoPE run sequence-sharded (per-token RoPE with the rank's table slice,
//                 all-to-all, attention over whole sequences of the rank's heads, reverse all-to-all) equals the serial
//                 one on every rank's tokens, bit for bit (the same float operations on the same values)
//   the gather    the head's output rows all-gathered and permuted equal the serial output
//   refusals      tokens or heads not divisible by cp
// (mutations tried: local RoPE rows, a swapped transpose in cp_recv_to_heads: the attention check fails)
#pragma once
#include <math.h>
#include <stdlib.h>
#include "cp.h"
#include "testing.h"

// q [L][H][d] rotated in place by the per-token table cs [L][d/2][2] (the pairs (2p, 2p+1), kernels/rope.cuh's form)
static void cp_test_rope_(float* q, const float* cs, int L, int H, int d) {
    for (int t = 0; t < L; t++) for (int h = 0; h < H; h++) for (int p = 0; p < d / 2; p++) {
        float* x = q + ((size_t)t * H + h) * d + 2 * p;
        float co = cs[((size_t)t * (d / 2) + p) * 2], si = cs[((size_t)t * (d / 2) + p) * 2 + 1];
        float a = x[0], b = x[1];
        x[0] = a * co - b * si; x[1] = a * si + b * co;
    }
}

// out [B][L][H][d] = softmax(q kᵀ / √d) v per sample and head, over L tokens, in float, one fixed order
static void cp_test_attention_(float* out, const float* q, const float* k, const float* v, int B, int L, int H, int d) {
    float* s = (float*)malloc(sizeof(float) * L);
    float scale = 1.0f / sqrtf((float)d);
    for (int b = 0; b < B; b++) for (int h = 0; h < H; h++) for (int i = 0; i < L; i++) {
        const float* qi = q + (((size_t)b * L + i) * H + h) * d;
        float m = -INFINITY, z = 0;
        for (int j = 0; j < L; j++) {
            const float* kj = k + (((size_t)b * L + j) * H + h) * d;
            float acc = 0; for (int e = 0; e < d; e++) acc += qi[e] * kj[e];
            s[j] = acc * scale; if (s[j] > m) m = s[j];
        }
        for (int j = 0; j < L; j++) { s[j] = expf(s[j] - m); z += s[j]; }
        float* oi = out + (((size_t)b * L + i) * H + h) * d;
        for (int e = 0; e < d; e++) {
            float acc = 0; for (int j = 0; j < L; j++) acc += s[j] * v[(((size_t)b * L + j) * H + h) * d + e];
            oi[e] = acc / z;
        }
    }
    free(s);
}

static float cp_test_value_(size_t i, int salt) {
    unsigned long long h = (unsigned long long)i * 0x9E3779B97F4A7C15ull ^ (unsigned long long)(salt + 1) * 0xBF58476D1CE4E5B9ull;
    h ^= h >> 31; h *= 0xD6E8FEB86CD9B5D3ull; h ^= h >> 29;
    return (float)((double)(h % 2001) / 1000.0 - 1.0);
}

// one (B, L, H, d, K2) case: the layouts, the attention through them, the gather; returns the failures
static int cp_test_case_(int B, int L, int H, int d, int K2) {
    char err[400];
    int fails = 0;
    size_t n = (size_t)B * L * H * d, Lr = (size_t)L / K2, nr = n / K2;
    float *x = (float*)malloc(sizeof(float) * n * 4), *qs = x + n, *ks = qs + n, *vs = ks + n;   // serial q, k, v
    float* cs = (float*)malloc(sizeof(float) * (size_t)L * d);
    for (size_t i = 0; i < n; i++) { x[i] = cp_test_value_(i, 0); qs[i] = cp_test_value_(i, 1); ks[i] = cp_test_value_(i, 2); vs[i] = cp_test_value_(i, 3); }
    for (int t = 0; t < L; t++) for (int p = 0; p < d / 2; p++) {   // a table whose rows differ by position
        double th = t * pow(100.0, -2.0 * p / d);
        cs[((size_t)t * (d / 2) + p) * 2] = (float)cos(th); cs[((size_t)t * (d / 2) + p) * 2 + 1] = (float)sin(th);
    }
    // serial: RoPE on q and k, attention
    float* ser = (float*)malloc(sizeof(float) * n);
    for (int b = 0; b < B; b++) { cp_test_rope_(qs + (size_t)b * L * H * d, cs, L, H, d); cp_test_rope_(ks + (size_t)b * L * H * d, cs, L, H, d); }
    cp_test_attention_(ser, qs, ks, vs, B, L, H, d);
    // every rank's sequence shard of x, q, k, v (q and k before RoPE: each rank rotates its own tokens)
    float* seq = (float*)malloc(sizeof(float) * n * 4);        // [K2][4][B][Lr][H][d]: x, q, k, v of rank r
    float* send = (float*)malloc(sizeof(float) * n * 3);       // [K2][3][K2 blocks of nr / K2]
    float* heads = (float*)malloc(sizeof(float) * n * 3);      // [K2][3][B][L][Hk][d]
    CpLayout P[64]; memset(P, 0, sizeof(P));
    for (int r = 0; r < K2; r++) {
        if (cp_layout_init(&P[r], K2, r, B, L, H, d, err, sizeof(err))) { EXPECT(0, "cp_layout_init: %s", err); return 1; }
        float* mine = seq + (size_t)r * 4 * nr;
        for (int a = 0; a < 4; a++) {   // x, and q, k, v as generated (q and k unrotated: the serial ones were rotated in place)
            float* dst = mine + (size_t)a * nr;
            for (int b = 0; b < B; b++) for (size_t i = 0; i < Lr; i++) for (size_t e = 0; e < (size_t)H * d; e++) {
                size_t gi = (((size_t)b * L + cp_first_token(&P[r]) + i) * H * d) + e;
                dst[((size_t)b * Lr + i) * H * d + e] = a == 0 ? x[gi] : cp_test_value_(gi, a);
            }
        }
        // RoPE from each token's global position: the rank's rows of the table
        float* slice = (float*)malloc(sizeof(float) * Lr * d);
        cp_table_slice(slice, cs, &P[r], (size_t)d);
        for (int b = 0; b < B; b++) {
            cp_test_rope_(mine + 1 * nr + (size_t)b * Lr * H * d, slice, (int)Lr, H, d);
            cp_test_rope_(mine + 2 * nr + (size_t)b * Lr * H * d, slice, (int)Lr, H, d);
        }
        free(slice);
        for (int a = 0; a < 3; a++) cp_seq_to_send(send + ((size_t)r * 3 + a) * nr, mine + (size_t)(a + 1) * nr, &P[r], sizeof(float));
    }
    // the all-to-all: rank r's recv block j = rank j's send block r; then the head layout
    size_t cnt = cp_a2a_count(&P[0]);
    float* recv = (float*)malloc(sizeof(float) * nr);
    for (int r = 0; r < K2; r++) for (int a = 0; a < 3; a++) {
        for (int j = 0; j < K2; j++) memcpy(recv + (size_t)j * cnt, send + ((size_t)j * 3 + a) * nr + (size_t)r * cnt, sizeof(float) * cnt);
        cp_recv_to_heads(heads + ((size_t)r * 3 + a) * nr, recv, &P[r], sizeof(float));
    }
    // the layout: x's heads of rank r, every token
    int bad = 0;
    {   // x: every rank's seq -> heads, compared with the serial head slice, then heads -> seq back
        float* sendx = (float*)malloc(sizeof(float) * n), *hx = (float*)malloc(sizeof(float) * n), *back = (float*)malloc(sizeof(float) * n);
        for (int r = 0; r < K2; r++) cp_seq_to_send(sendx + (size_t)r * nr, seq + (size_t)r * 4 * nr, &P[r], sizeof(float));
        for (int r = 0; r < K2; r++) {
            for (int j = 0; j < K2; j++) memcpy(recv + (size_t)j * cnt, sendx + (size_t)j * nr + (size_t)r * cnt, sizeof(float) * cnt);
            cp_recv_to_heads(hx + (size_t)r * nr, recv, &P[r], sizeof(float));
            for (int b = 0; b < B; b++) for (int t = 0; t < L; t++) for (int h = 0; h < P[r].Hk; h++) for (int e = 0; e < d; e++) {
                float want = x[(((size_t)b * L + t) * H + (size_t)r * P[r].Hk + h) * d + e];
                if (memcmp(&hx[(size_t)r * nr + (((size_t)b * L + t) * P[r].Hk + h) * d + e], &want, 4)) bad++;
            }
        }
        for (int r = 0; r < K2; r++) cp_heads_to_send(sendx + (size_t)r * nr, hx + (size_t)r * nr, &P[r], sizeof(float));
        for (int r = 0; r < K2; r++) {
            for (int j = 0; j < K2; j++) memcpy(recv + (size_t)j * cnt, sendx + (size_t)j * nr + (size_t)r * cnt, sizeof(float) * cnt);
            cp_recv_to_seq(back + (size_t)r * nr, recv, &P[r], sizeof(float));
            if (memcmp(back + (size_t)r * nr, seq + (size_t)r * 4 * nr, sizeof(float) * nr)) bad++;
        }
        free(sendx); free(hx); free(back);
    }
    EXPECT(bad == 0, "cp layout B %d L %d H %d d %d cp %d: %d elements of the head-sharded x differ from the serial heads, or heads -> seq did not invert", B, L, H, d, K2, bad);
    fails += bad != 0;
    // attention on each rank's heads over whole sequences, back to the sequence layout, against the serial output
    float *ao = (float*)malloc(sizeof(float) * nr), *aseq = (float*)malloc(sizeof(float) * n), *sendo = (float*)malloc(sizeof(float) * n);
    for (int r = 0; r < K2; r++) {
        const float* hr = heads + (size_t)r * 3 * nr;
        cp_test_attention_(ao, hr, hr + nr, hr + 2 * nr, B, L, P[r].Hk, d);
        cp_heads_to_send(sendo + (size_t)r * nr, ao, &P[r], sizeof(float));
    }
    int abad = 0;
    for (int r = 0; r < K2; r++) {
        for (int j = 0; j < K2; j++) memcpy(recv + (size_t)j * cnt, sendo + (size_t)j * nr + (size_t)r * cnt, sizeof(float) * cnt);
        cp_recv_to_seq(aseq + (size_t)r * nr, recv, &P[r], sizeof(float));
        for (int b = 0; b < B; b++)
            if (memcmp(aseq + (size_t)r * nr + (size_t)b * Lr * H * d, ser + ((size_t)b * L + cp_first_token(&P[r])) * H * d, sizeof(float) * Lr * H * d)) abad++;
    }
    EXPECT(abad == 0, "cp attention B %d L %d H %d d %d cp %d: %d (rank, sample) blocks of the sequence-sharded output differ from the serial attention's rows",
           B, L, H, d, K2, abad);
    fails += abad != 0;
    // the head's output: every rank's rows [B][Lr][P] all-gathered, permuted to [B][L][P]
    int Pd = 3;
    float *y = (float*)malloc(sizeof(float) * (size_t)B * L * Pd), *gat = (float*)malloc(sizeof(float) * (size_t)B * L * Pd), *yy = (float*)malloc(sizeof(float) * (size_t)B * L * Pd);
    for (size_t i = 0; i < (size_t)B * L * Pd; i++) y[i] = cp_test_value_(i, 9);
    for (int r = 0; r < K2; r++) cp_copy_rows(gat + (size_t)r * B * Lr * Pd, (int)Lr, 0, y, L, cp_first_token(&P[r]), (int)Lr, B, (size_t)Pd);
    cp_transpose12(yy, gat, (size_t)K2, (size_t)B, Lr * Pd * sizeof(float));
    EXPECT(!memcmp(yy, y, sizeof(float) * (size_t)B * L * Pd), "cp gather B %d L %d cp %d: the gathered output differs from the serial one", B, L, K2);
    fails += memcmp(yy, y, sizeof(float) * (size_t)B * L * Pd) != 0;
    free(y); free(gat); free(yy); free(ao); free(aseq); free(sendo); free(recv);
    free(x); free(cs); free(ser); free(seq); free(send); free(heads);
    return fails;
}

static void test_cp(void) {
    printf("context parallelism (lib/cp.h): layouts, attention through the all-to-all, the gather, against serial\n");
    static const int cases[][5] = {{1, 12, 6, 4, 2}, {2, 12, 6, 4, 3}, {3, 8, 4, 2, 4}, {2, 6, 4, 4, 1}, {2, 10, 4, 2, 2}};
    int fails = 0;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) fails += cp_test_case_(cases[i][0], cases[i][1], cases[i][2], cases[i][3], cases[i][4]);
    printf("  %zu layouts (cp 1 to 4, batch 1 to 3): %s\n", sizeof(cases) / sizeof(cases[0]), fails ? "FAIL" : "every rank's heads, attention rows and gathered output bit for bit");
    // refusals: the tokens, the heads, both
    CpLayout p; char err[400];
    EXPECT(cp_layout_init(&p, 4, 0, 1, 10, 8, 2, err, sizeof(err)) != 0 && strstr(err, "tokens do not") && strstr(err, "--cp 4"),
           "10 tokens over cp 4 should be refused naming the tokens: %s", err);
    EXPECT(cp_layout_init(&p, 4, 0, 1, 12, 6, 2, err, sizeof(err)) != 0 && strstr(err, "heads do not"), "6 heads over cp 4 should be refused naming the heads: %s", err);
    EXPECT(cp_layout_init(&p, 4, 0, 1, 10, 6, 2, err, sizeof(err)) != 0 && strstr(err, "neither"), "10 tokens and 6 heads over cp 4: %s", err);
    EXPECT(cp_layout_init(&p, 2, 2, 1, 12, 6, 2, err, sizeof(err)) != 0, "rank 2 of a group of 2 should be refused");
    EXPECT(cp_layout_init(&p, 5, 3, 1, 32760, 40, 128, err, sizeof(err)) == 0 && p.Lr == 6552 && p.Hk == 8 && cp_first_token(&p) == 19656,
           "14B at 480p x 81 frames over cp 5: %d tokens and %d heads a rank", p.Lr, p.Hk);
    // a training run's groups (train_tmd --cp): rank -> (group, place) is one-to-one onto groups x places, a group's
    // ranks have one data-parallel rank (so the same samples), the groups' samples tile the global batch once
    static const int runs[][2] = {{1, 1}, {2, 1}, {2, 2}, {4, 2}, {6, 3}, {8, 4}, {16, 4}, {12, 1}, {5, 5}};
    int gbad = 0;
    for (size_t i = 0; i < sizeof(runs) / sizeof(runs[0]); i++) {
        int K = runs[i][0], K2 = runs[i][1], B = 3, seen[64] = {0}, drawn[64 * 3] = {0};
        for (int r = 0; r < K; r++) {
            CpGroups g;
            if (cp_groups_init(&g, K, K2, r, err, sizeof(err))) { gbad++; continue; }
            if (g.groups != K / K2 || g.place < 0 || g.place >= K2 || g.group < 0 || g.group >= g.groups) gbad++;
            else seen[g.group * K2 + g.place]++;
            CpGroups f;   // the group's first rank: the same data-parallel rank, the same samples
            cp_groups_init(&f, K, K2, r - g.place, err, sizeof(err));
            if (f.group != g.group || f.place != 0 || cp_first_sample(&f, B) != cp_first_sample(&g, B)) gbad++;
            if (g.place == 0) for (int b = 0; b < B; b++) drawn[cp_first_sample(&g, B) + b]++;
        }
        for (int k = 0; k < K; k++) gbad += seen[k] != 1;
        for (int k = 0; k < K / K2 * B; k++) gbad += drawn[k] != 1;
    }
    EXPECT(gbad == 0, "the CP groups of a run: %d wrong (a rank in no group or two, a group's ranks drawing different samples, a sample drawn by no group or two)", gbad);
    if (!gbad) printf("  %zu rank layouts (1 to 16 ranks, cp 1 to 5): every rank at one place of one group, a group's ranks on the same samples, every sample once\n", sizeof(runs) / sizeof(runs[0]));
    CpGroups g;
    EXPECT(cp_groups_init(&g, 6, 4, 0, err, sizeof(err)) != 0 && strstr(err, "--cp 4") && strstr(err, "6 ranks"), "6 ranks in groups of 4 should be refused naming both: %s", err);
    EXPECT(cp_groups_init(&g, 1, 2, 0, err, sizeof(err)) != 0 && strstr(err, "1 rank "), "one rank with --cp 2 should be refused: %s", err);
    EXPECT(cp_groups_init(&g, 16, 4, 9, err, sizeof(err)) == 0 && g.group == 2 && g.place == 1 && g.groups == 4 && cp_first_sample(&g, 2) == 4,
           "rank 9 of 16 at cp 4: group %d place %d of %d groups", g.group, g.place, g.groups);
}
