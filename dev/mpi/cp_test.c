// dev/mpi/cp_test.c: context parallelism's communication on host buffers under mpirun (`make test-mpi`): the world
// split into groups of cp ranks (lib/comm.h comm_host_split: ranks g·cp .. g·cp + cp − 1 form group g), and in each
// group the layouts of lib/cp.h moved by the real all-to-all and all-gather, against the serial layout bit for bit.
// Each group works on its own tensor (salted by the group), so a collective that crossed groups gives wrong bits.
//   ./cp_test CP    (the world must divide by CP); exit 1 on any mismatch
#include <stdint.h>
#include "../../lib/comm.h"
#include "../../lib/cp.h"

static float value(size_t i, int salt) {
    uint64_t h = (uint64_t)i * 0x9E3779B97F4A7C15ull ^ (uint64_t)(salt + 1) * 0xBF58476D1CE4E5B9ull;
    h ^= h >> 31; h *= 0xD6E8FEB86CD9B5D3ull; h ^= h >> 29;
    return (float)((double)(h % 2001) / 1000.0 - 1.0);
}

int main(int argc, char** argv) {
    CommHost W; comm_host_init(&W, &argc, &argv);
    int K2 = argc > 1 ? atoi(argv[1]) : W.world;
    if (K2 < 1 || W.world % K2) { char m[160]; snprintf(m, sizeof(m), "cp_test %d: expected a group size that divides the %d ranks", K2, W.world); comm_host_abort(&W, m); }
    CommHost G; comm_host_split(&W, &G, W.rank / K2, W.rank % K2);
    int group = W.rank / K2, fails = 0;
    if (G.world != K2 || G.rank != W.rank % K2) { printf("[rank %d] FAIL: group of %d ranks, rank %d in it; expected %d and %d\n", W.rank, G.world, G.rank, K2, W.rank % K2); fails++; }
    static const int shapes[][4] = {{2, 12, 6, 4}, {1, 24, 12, 2}, {3, 12, 12, 8}};   // B, L, H, d (L and H divide by 2, 3, 4)
    for (int s = 0; s < 3; s++) {
        int B = shapes[s][0], L = shapes[s][1], H = shapes[s][2], d = shapes[s][3];
        CpLayout p; char err[400];
        if (cp_layout_init(&p, G.world, G.rank, B, L, H, d, err, sizeof(err))) comm_host_abort(&W, err);
        size_t n = (size_t)B * L * H * d, nr = n / K2;
        float *x = malloc(sizeof(float) * n), *seq = malloc(sizeof(float) * nr), *send = malloc(sizeof(float) * nr),
              *recv = malloc(sizeof(float) * nr), *heads = malloc(sizeof(float) * nr), *back = malloc(sizeof(float) * nr);
        for (size_t i = 0; i < n; i++) x[i] = value(i, 10 * group + s);
        cp_copy_rows(seq, p.Lr, 0, x, L, cp_first_token(&p), p.Lr, B, (size_t)H * d);   // this rank's tokens
        cp_seq_to_send(send, seq, &p, sizeof(float));
        comm_host_all_to_all(&G, recv, send, cp_a2a_count(&p), COMM_F32);
        cp_recv_to_heads(heads, recv, &p, sizeof(float));
        size_t bad = 0;
        for (int b = 0; b < B; b++) for (int t = 0; t < L; t++) for (int h = 0; h < p.Hk; h++) for (int e = 0; e < d; e++) {
            float want = x[(((size_t)b * L + t) * H + (size_t)G.rank * p.Hk + h) * d + e];
            if (memcmp(&heads[(((size_t)b * L + t) * p.Hk + h) * d + e], &want, 4)) bad++;
        }
        cp_heads_to_send(send, heads, &p, sizeof(float));
        comm_host_all_to_all(&G, recv, send, cp_a2a_count(&p), COMM_F32);
        cp_recv_to_seq(back, recv, &p, sizeof(float));
        int inv = memcmp(back, seq, sizeof(float) * nr) != 0;
        // the gather of per-token rows (the head's output, P = H·d here) back to [B][L][P]
        float* all = malloc(sizeof(float) * n), *full = malloc(sizeof(float) * n);
        comm_host_all_gather(&G, all, seq, nr, COMM_F32);
        cp_transpose12(full, all, (size_t)K2, (size_t)B, (size_t)p.Lr * H * d * sizeof(float));
        int gat = memcmp(full, x, sizeof(float) * n) != 0;
        if (bad || inv || gat) { fails++; printf("[rank %d, group %d] FAIL B %d L %d H %d d %d cp %d: %zu head elements wrong, heads -> seq %s, gather %s\n",
                                                 W.rank, group, B, L, H, d, K2, bad, inv ? "wrong" : "ok", gat ? "wrong" : "ok"); }
        free(x); free(seq); free(send); free(recv); free(heads); free(back); free(all); free(full);
    }
    // a sum over the group only (the losses' reduction): group g's ranks add 1 + rank each
    double v = 1.0 + W.rank, want = 0;
    for (int r = group * K2; r < group * K2 + K2; r++) want += 1.0 + r;
    comm_host_all_reduce(&G, &v, 1, COMM_F64);
    if (v != want) { fails++; printf("[rank %d] FAIL: the group's sum is %g, expected %g (a sum over the world would be another)\n", W.rank, v, want); }
    if (W.rank == 0 || fails) printf("cp_test: %d ranks in groups of %d: %s\n", W.world, K2, fails ? "FAILED" : "seq <-> heads, the gather and the group's sum bit for bit");
    comm_host_finalize(&G);
    comm_host_finalize(&W);
    return fails ? 1 : 0;
}
