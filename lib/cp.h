// lib/cp.h: context parallelism's layouts, in plain C (the arithmetic gpu/wan_gpu.cuh's CP path runs on the device,
// tested here against the serial layout bit for bit: lib/cp_tests.h in `make test`, dev/mpi/cp_test.c under mpirun).
// Ulysses-style sequence parallelism (Jacobs et al. 2023, "DeepSpeed Ulysses"): a group of K2 ranks shares each
// sample. Every rank holds the tokens [rank·L/K2, (rank+1)·L/K2) of every sample (Wan's token order: frame, row,
// column) and runs every per-token layer on them (modulation, norms, projections, RoPE, cross-attention against the
// replicated text, FFN). Self-attention needs every token: an all-to-all turns the sequence-sharded q, k, v
// [B, L/K2, H, d] into head-sharded ones [B, L, H/K2, d] (rank r: heads [r·H/K2, (r+1)·H/K2)), the attention runs on
// whole sequences of its heads, and the reverse all-to-all turns the output back. The backward of an all-to-all is the
// reverse all-to-all (it is a permutation of the group's elements). RoPE rotates each token by its GLOBAL position:
// rank r uses the rows [r·L/K2, (r+1)·L/K2) of the full table.
//
// One permutation does every layout change: cp_transpose12 out[j][i][:] = in[i][j][:] (chunks of `chunk` bytes). With
// Lr = L/K2, Hk = H/K2, C = Hk·d elements:
//   seq -> heads  send [K2][B·Lr][C] = transpose12(q [B·Lr][K2][C]); all-to-all (block j to rank j);
//                 heads [B][K2][Lr·C] = transpose12(recv [K2][B][Lr·C])   (recv block j: rank j's tokens)
//   heads -> seq  send [K2][B][Lr·C] = transpose12(heads [B][K2][Lr·C]); all-to-all;
//                 seq [B·Lr][K2][C]  = transpose12(recv [K2][B·Lr][C])
// and the gather of the head's output: y [B][L][P] = transpose12(all_gather [K2][B][Lr·P]).
#pragma once
#include <stdio.h>
#include <string.h>
#include <stddef.h>

typedef struct {
    int K2, rank;    // the group's ranks, this rank in it
    int B, L, H, d;  // samples, tokens per sample, heads, head dim (the whole problem)
    int Lr, Hk;      // tokens and heads a rank: L / K2, H / K2
} CpLayout;

// 0, or -1 and a message: the all-to-all splits the tokens and the heads evenly, so K2 must divide both
static int cp_layout_init(CpLayout* p, int K2, int rank, int B, int L, int H, int d, char* err, size_t errlen) {
    memset(p, 0, sizeof(*p));
    if (K2 < 1 || rank < 0 || rank >= K2 || B < 1 || L < 1 || H < 1 || d < 1) {
        snprintf(err, errlen, "context parallelism: rank %d of a group of %d, batch %d, %d tokens, %d heads of %d: expected 0 <= rank < cp and "
                 "every size >= 1", rank, K2, B, L, H, d);
        return -1;
    }
    if (L % K2 || H % K2) {
        snprintf(err, errlen, "--cp %d: each sample's %d tokens and the model's %d heads must both divide by cp (the all-to-all splits them "
                 "evenly): %s; pick a cp that divides both, or a latent whose token count (T/pt x H/ph x W/pw) does",
                 K2, L, H, L % K2 && H % K2 ? "neither does" : L % K2 ? "the tokens do not" : "the heads do not");
        return -1;
    }
    p->K2 = K2; p->rank = rank; p->B = B; p->L = L; p->H = H; p->d = d; p->Lr = L / K2; p->Hk = H / K2;
    return 0;
}

// A training run's ranks with context parallelism (train_tmd --cp K2): the world's K ranks in K/K2 groups of K2
// consecutive ranks, rank r at place r mod K2 of group r / K2 (comm_split's color and key, so the place is the rank in
// the group, CpLayout.rank). The groups are the data-parallel ranks: every stream of a step (the data, the noise, the
// per-sample draws) is the global batch of groups·B samples, group g's the samples [g·B, (g+1)·B) (cp_first_sample),
// so a group's K2 ranks draw the same samples and split their tokens. K2 = 1: every rank its own group.
typedef struct {
    int group, groups; // this rank's group (its data-parallel rank), the groups (data-parallel ranks): K / K2
    int place;         // this rank's place in its group (its rank there)
} CpGroups;

// 0, or -1 and a message: K2 must divide K
static int cp_groups_init(CpGroups* g, int K, int K2, int rank, char* err, size_t errlen) {
    memset(g, 0, sizeof(*g));
    if (K < 1 || K2 < 1 || rank < 0 || rank >= K) {
        snprintf(err, errlen, "context parallelism: rank %d of %d ranks in groups of %d: expected 0 <= rank < ranks and "
                 "both >= 1", rank, K, K2);
        return -1;
    }
    if (K % K2) {
        snprintf(err, errlen, "--cp %d: the %d rank%s (mpirun -np) must divide into groups of %d; launch a multiple of "
                 "%d ranks, or pick a cp that divides %d", K2, K, K > 1 ? "s" : "", K2, K2, K);
        return -1;
    }
    g->group = rank / K2; g->groups = K / K2; g->place = rank % K2;
    return 0;
}

// the first of this rank's B samples in the step's global batch of groups·B
static int cp_first_sample(const CpGroups* g, int B) { return g->group * B; }

// this rank's first token of every sample (its global position 0 is this token's)
static int cp_first_token(const CpLayout* p) { return p->rank * p->Lr; }

// out[j][i][:] = in[i][j][:], i < n1, j < n2, chunks of `chunk` bytes (out and in distinct)
static void cp_transpose12(void* out, const void* in, size_t n1, size_t n2, size_t chunk) {
    for (size_t j = 0; j < n2; j++)
        for (size_t i = 0; i < n1; i++)
            memcpy((char*)out + (j * n1 + i) * chunk, (const char*)in + (i * n2 + j) * chunk, chunk);
}

// the four steps around the all-to-alls (es: element bytes), and the count each rank sends to each other rank
static size_t cp_a2a_count(const CpLayout* p) { return (size_t)p->B * p->Lr * p->Hk * p->d; }
static void cp_seq_to_send(void* send, const void* seq, const CpLayout* p, size_t es) {
    cp_transpose12(send, seq, (size_t)p->B * p->Lr, (size_t)p->K2, (size_t)p->Hk * p->d * es);
}
static void cp_recv_to_heads(void* heads, const void* recv, const CpLayout* p, size_t es) {
    cp_transpose12(heads, recv, (size_t)p->K2, (size_t)p->B, (size_t)p->Lr * p->Hk * p->d * es);
}
static void cp_heads_to_send(void* send, const void* heads, const CpLayout* p, size_t es) {
    cp_transpose12(send, heads, (size_t)p->B, (size_t)p->K2, (size_t)p->Lr * p->Hk * p->d * es);
}
static void cp_recv_to_seq(void* seq, const void* recv, const CpLayout* p, size_t es) {
    cp_transpose12(seq, recv, (size_t)p->K2, (size_t)p->B * p->Lr, (size_t)p->Hk * p->d * es);
}

// this rank's rows of a per-token table [L][row] (the RoPE table: row = head_dim floats): rows [rank·Lr, (rank+1)·Lr)
static void cp_table_slice(float* slice, const float* table, const CpLayout* p, size_t row) {
    memmove(slice, table + (size_t)cp_first_token(p) * row, sizeof(float) * (size_t)p->Lr * row);   // slice may be table (in place)
}

// out [B][Lo][row] rows [o0, o0+n) = in [B][Li][row] rows [i0, i0+n), for every sample (the local slice of a per-token
// array, and its scatter back)
static void cp_copy_rows(float* out, int Lo, int o0, const float* in, int Li, int i0, int n, int B, size_t row) {
    for (int b = 0; b < B; b++)
        memcpy(out + ((size_t)b * Lo + o0) * row, in + ((size_t)b * Li + i0) * row, sizeof(float) * (size_t)n * row);
}
