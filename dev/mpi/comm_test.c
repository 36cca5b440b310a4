// dev/mpi/comm_test.c: lib/comm.h's collectives against a serial computation, on host buffers, under mpirun
// (`make test-mpi`: 2 ranks, and 3 for slices the world does not divide). Every rank can compute every rank's data
// (comm_test_value), so each result is compared bit for bit with the serial one: gathers and the all-to-all must move
// the right elements to the right places, the sums must be the rank-order sums ((x_0 + x_1) + x_2) + ... exactly.
// The values span 40 binary orders of magnitude with mixed signs, so a sum in another order differs (checked: with 3
// ranks or more the reverse order gives other bits, so the comparison can fail).
//   ./comm_test          every collective, every type, several counts; exit 1 on any mismatch
//   ./comm_test --abort  the last rank calls comm_host_abort while the others wait in a barrier: the launch must end
//                        (non-zero) with the message, never hang (`make test-mpi` runs it under a timeout)
#include <math.h>
#include "../../lib/comm.h"

static int failures = 0;
#define CHECK(cond, ...) do { if (!(cond)) { failures++; printf("[rank %d] FAIL: ", C.rank); printf(__VA_ARGS__); printf("\n"); } } while (0)
static CommHost C;

// a value of rank r at index i (salt: which test), with magnitudes 2^-20 .. 2^20 and both signs
static double comm_test_value(int r, size_t i, int salt) {
    uint64_t h = (uint64_t)r * 0x9E3779B97F4A7C15ull ^ (uint64_t)i * 0xBF58476D1CE4E5B9ull ^ (uint64_t)salt * 0x94D049BB133111EBull;
    h ^= h >> 31; h *= 0xD6E8FEB86CD9B5D3ull; h ^= h >> 29;
    return ((double)(h % 2001) - 1000.0) / 997.0 * ldexp(1.0, (int)((h >> 20) % 41) - 20);
}
static void put(void* buf, CommType t, size_t i, double v) {
    if (t == COMM_F32) ((float*)buf)[i] = (float)v;
    else if (t == COMM_F64) ((double*)buf)[i] = v;
    else ((uint16_t*)buf)[i] = comm_f32_to_bf16((float)v);
}
// the serial rank-order sum of the values at index i of ranks 0..world-1 (reverse: world-1..0), in the type's precision
static void serial_sum(void* out, CommType t, size_t o, size_t i, int salt, int reverse) {
    int K = C.world;
    if (t == COMM_F64) { double a = 0; for (int k = 0; k < K; k++) { int r = reverse ? K - 1 - k : k; double x = comm_test_value(r, i, salt); a = k ? a + x : x; } ((double*)out)[o] = a; return; }
    float a = 0;
    for (int k = 0; k < K; k++) {
        int r = reverse ? K - 1 - k : k;
        float x = t == COMM_F32 ? (float)comm_test_value(r, i, salt) : comm_bf16_to_f32(comm_f32_to_bf16((float)comm_test_value(r, i, salt)));
        a = k ? a + x : x;
    }
    if (t == COMM_F32) ((float*)out)[o] = a; else ((uint16_t*)out)[o] = comm_f32_to_bf16(a);
}

static void test_all_gather(CommType t, size_t count, int in_place) {
    size_t es = comm_type_size(t), K = (size_t)C.world;
    char *recv = calloc(K * count, es), *send = malloc(count * es), *want = malloc(K * count * es);
    for (size_t i = 0; i < count; i++) put(send, t, i, comm_test_value(C.rank, i, 1));
    for (size_t r = 0; r < K; r++) for (size_t i = 0; i < count; i++) put(want, t, r * count + i, comm_test_value((int)r, i, 1));
    if (in_place) memcpy(recv + C.rank * count * es, send, count * es);
    comm_host_all_gather(&C, recv, in_place ? recv + C.rank * count * es : send, count, t);
    CHECK(!memcmp(recv, want, K * count * es), "all_gather %s count %zu%s differs from the serial gather", comm_type_name(t), count, in_place ? " (in place)" : "");
    free(recv); free(send); free(want);
}

static void test_reduce_scatter(CommType t, size_t count, int in_place) {
    size_t es = comm_type_size(t), K = (size_t)C.world;
    char *send = malloc(K * count * es), *recv = malloc(count * es), *want = malloc(count * es), *rev = malloc(count * es);
    for (size_t i = 0; i < K * count; i++) put(send, t, i, comm_test_value(C.rank, i, 2));
    for (size_t i = 0; i < count; i++) { serial_sum(want, t, i, C.rank * count + i, 2, 0); serial_sum(rev, t, i, C.rank * count + i, 2, 1); }
    void* out = in_place ? send + C.rank * count * es : recv;
    comm_host_reduce_scatter(&C, out, send, count, t);
    CHECK(!memcmp(out, want, count * es), "reduce_scatter %s count %zu%s differs from the rank-order sum", comm_type_name(t), count, in_place ? " (in place)" : "");
    if (C.world >= 3 && count == 1000 && t != COMM_BF16 && C.rank == 0 && !in_place)
        printf("  reduce_scatter %s: the reverse-order sum differs in %s elements (the order matters, and the check would see it)\n",
               comm_type_name(t), memcmp(rev, want, count * es) ? "some" : "NO");
    free(send); free(recv); free(want); free(rev);
}

static void test_all_reduce(CommType t, size_t n) {
    size_t es = comm_type_size(t);
    char *buf = malloc(n * es), *want = malloc(n * es);
    for (size_t i = 0; i < n; i++) { put(buf, t, i, comm_test_value(C.rank, i, 3)); serial_sum(want, t, i, i, 3, 0); }
    comm_host_all_reduce(&C, buf, n, t);
    CHECK(!memcmp(buf, want, n * es), "all_reduce %s n %zu differs from the rank-order sum", comm_type_name(t), n);
    free(buf); free(want);
}

static void test_all_to_all(CommType t, size_t count) {
    size_t es = comm_type_size(t), K = (size_t)C.world;
    char *send = malloc(K * count * es), *recv = malloc(K * count * es), *want = malloc(K * count * es);
    // block j of rank r's send is (r -> j); rank q receives block q of every rank r at r*count
    for (size_t j = 0; j < K; j++) for (size_t i = 0; i < count; i++) put(send, t, j * count + i, comm_test_value(C.rank, j * count + i, 4));
    for (size_t r = 0; r < K; r++) for (size_t i = 0; i < count; i++) put(want, t, r * count + i, comm_test_value((int)r, C.rank * count + i, 4));
    comm_host_all_to_all(&C, recv, send, count, t);
    CHECK(!memcmp(recv, want, K * count * es), "all_to_all %s count %zu misplaces elements", comm_type_name(t), count);
    free(send); free(recv); free(want);
}

static void test_broadcast(CommType t, size_t n, int root) {
    size_t es = comm_type_size(t);
    char *buf = malloc(n * es), *want = malloc(n * es);
    for (size_t i = 0; i < n; i++) { put(buf, t, i, comm_test_value(C.rank, i, 5)); put(want, t, i, comm_test_value(root, i, 5)); }
    comm_host_broadcast(&C, buf, n, t, root);
    CHECK(!memcmp(buf, want, n * es), "broadcast %s n %zu from rank %d differs", comm_type_name(t), n, root);
    free(buf); free(want);
}

int main(int argc, char** argv) {
    comm_host_init(&C, &argc, &argv);
    if (argc > 1 && !strcmp(argv[1], "--abort")) {
        if (C.rank == C.world - 1) comm_host_abort(&C, "comm_test --abort: the last rank fails on purpose");
        comm_host_barrier(&C);   // the others wait here for a rank that never comes
        printf("[rank %d] FAIL: passed a barrier that a failed rank never reached\n", C.rank);
        comm_host_finalize(&C);
        return 0;   // `make test-mpi` wants a non-zero exit: this line is the bug it catches
    }
    if (C.rank == 0) printf("comm_test: lib/comm.h collectives on %d ranks vs a serial computation, bit for bit\n", C.world);
    // bf16 rounding: to nearest, ties to even
    CHECK(comm_f32_to_bf16(1.0f) == 0x3f80 && comm_f32_to_bf16(1.0f + 1.0f / 256) == 0x3f80 && comm_f32_to_bf16(1.0f + 3.0f / 256) == 0x3f82 &&
          comm_f32_to_bf16(-2.0f) == 0xc000 && comm_bf16_to_f32(0x3f81) == 1.0078125f, "bf16 round to nearest even");
    size_t counts[] = {1, 7, 1000, 4099};
    CommType types[] = {COMM_F32, COMM_BF16, COMM_F64};
    int checks = 0;
    for (int k = 0; k < 3; k++)
        for (int j = 0; j < 4; j++) {
            test_all_gather(types[k], counts[j], 0); test_all_gather(types[k], counts[j], 1);
            test_reduce_scatter(types[k], counts[j], 0); test_reduce_scatter(types[k], counts[j], 1);
            test_all_to_all(types[k], counts[j]);
            test_all_reduce(types[k], counts[j]); test_all_reduce(types[k], counts[j] * C.world + 1);   // a slice the world does not divide
            for (int root = 0; root < C.world; root += C.world - 1 > 0 ? C.world - 1 : 1) test_broadcast(types[k], counts[j], root);
            checks += 9;
        }
    test_all_reduce(COMM_F32, (size_t)3 << 20);   // 12 MiB: past the shared-memory transport's eager size
    test_all_gather(COMM_BF16, (size_t)1 << 20, 0);
    checks += 2;
    comm_host_barrier(&C);
    int all = failures;
#ifdef USE_MPI
    if (C.mpi) MPI_Allreduce(&failures, &all, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
#endif
    if (C.rank == 0) printf("comm_test: %d ranks, %d checks per rank (fp32, bf16, fp64; counts 1, 7, 1000, 4099, uneven all-reduce): %s (%d mismatches)\n",
                            C.world, checks, all ? "FAILED" : "all bit-identical to the serial computation", all);
    comm_host_finalize(&C);
    return all ? 1 : 0;
}
