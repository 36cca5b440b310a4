// dev/mpi/shard_step_test.c: the sharded optimizer step (gpu/shard_gpu.cuh's order of operations) on host buffers,
// under mpirun, against the replicated step it replaces, bit for bit. Each rank holds the same parameters and its own
// gradients (its own data); per step:
//   replicated  all_reduce(grads) (the sum in rank order); the global norm over the whole buffer; AdamW on every element
//   sharded     per unit (lib/shard.h): the unit's gradient padded to K slices, reduce_scatter -> this rank's slice;
//               the global norm from the slices' partial sums of squares (all_reduce, fp64); AdamW on the slice of the
//               fp32 master weights and moments (1/K of them); per unit all_gather of the master slices -> the whole
//               weights (what the forward reads)
// The reduce-scatter's sums are lib/comm.h's rank-order sums, the all-reduce's too, so every gradient element is the
// same bits on both paths; without clipping the updates are then bit-identical. With clipping, the factor comes from
// the norm, whose fp64 sum runs in another order on the two paths (per-slice partials, then across ranks): the norms
// agree to ~1e-15 and the parameters are checked to agree within 1e-6 relative (and reported when bit-identical).
// The AdamW here is kernels/adamw.cuh's adamw_kernel line for line, in float.
#include <math.h>
#include "../../lib/comm.h"
#include "../../lib/shard.h"

static CommHost C;
static int failures = 0;
#define CHECK(cond, ...) do { if (!(cond)) { failures++; printf("[rank %d] FAIL: ", C.rank); printf(__VA_ARGS__); printf("\n"); } } while (0)

static float value(int r, size_t i, int salt) {
    uint64_t h = (uint64_t)r * 0x9E3779B97F4A7C15ull ^ (uint64_t)i * 0xBF58476D1CE4E5B9ull ^ (uint64_t)salt * 0x94D049BB133111EBull;
    h ^= h >> 31; h *= 0xD6E8FEB86CD9B5D3ull; h ^= h >> 29;
    return (float)(((double)(h % 2001) - 1000.0) / 1000.0);
}

// kernels/adamw.cuh adamw_kernel over n elements
static void adamw(float* params, float* m, float* v, const float* grads, size_t n, double lr, double wd, double grad_scale, long step) {
    double beta1 = 0.9, beta2 = 0.99, eps = 1e-8;
    float bc1 = (float)(1.0 - pow(beta1, (double)step)), bc2 = (float)(1.0 - pow(beta2, (double)step));
    float b1 = (float)beta1, b2 = (float)beta2, omb1 = (float)(1.0 - beta1), omb2 = (float)(1.0 - beta2), e = (float)eps, decay = (float)(1.0 - lr * wd);
    float fl = (float)lr, gs = (float)grad_scale;
    for (size_t i = 0; i < n; i++) {
        float g = gs * grads[i];
        float mi = b1 * m[i] + omb1 * g;
        float vi = b2 * v[i] + omb2 * g * g;
        float p = params[i] * decay - fl * (mi / bc1) / (sqrtf(vi / bc2) + e);
        m[i] = mi; v[i] = vi; params[i] = p;
    }
}
static double sumsq(const float* g, size_t n) { double s = 0; for (size_t i = 0; i < n; i++) s += (double)g[i] * g[i]; return s; }
// train_tmd.cu tmd_adamw_'s factor: clipping of the mean gradient's norm, times 1/ranks
static double clip_factor(double n2, double clip, double gscale, double* gnorm) {
    *gnorm = sqrt(n2) * gscale;
    double k = clip > 0 ? fmin(1.0, clip / (*gnorm + 1e-6)) : 1.0;
    return k * gscale;
}

static void run(const size_t* units, int n_units, double clip, int steps) {
    char err[256]; ShardLayout L; const char* names[16];
    for (int u = 0; u < n_units; u++) names[u] = "unit";
    if (shard_layout_init(&L, names, units, n_units, C.world, 4, err, sizeof(err))) comm_host_abort(&C, err);
    size_t n = L.numel, ns = L.shard_numel, K = (size_t)C.world;
    float *P = malloc(4 * n), *Pr = malloc(4 * n), *G = malloc(4 * n), *Gr = malloc(4 * n), *m = calloc(n, 4), *v = calloc(n, 4);
    float *master = malloc(4 * ns), *ms = calloc(ns, 4), *vs = calloc(ns, 4), *gs = malloc(4 * ns), *stage = malloc(4 * L.max_unit_padded);
    for (size_t i = 0; i < n; i++) P[i] = Pr[i] = value(0, i, 7);   // the same initial weights on every rank
    shard_scatter_host(&L, C.rank, P, master, 4);                     // this rank's slices of them
    double gscale = 1.0 / C.world; size_t differ = 0; double worst = 0, norm_gap = 0;
    for (int step = 1; step <= steps; step++) {
        for (size_t i = 0; i < n; i++) G[i] = Gr[i] = value(C.rank + 1, i, step);   // this rank's gradients
        // replicated
        comm_host_all_reduce(&C, Gr, n, COMM_F32);
        double gn_r, kr = clip_factor(sumsq(Gr, n), clip, gscale, &gn_r);
        adamw(Pr, m, v, Gr, n, 1e-2, 0.01, kr, step);
        // sharded: reduce-scatter unit by unit through a padded staging buffer
        for (int u = 0; u < L.n_units; u++) {
            const ShardUnit* x = &L.unit[u];
            memcpy(stage, G + x->offset, 4 * x->numel); memset(stage + x->numel, 0, 4 * (shard_padded(&L, u) - x->numel));
            comm_host_reduce_scatter(&C, gs + x->shard_offset, stage, x->slice, COMM_F32);
        }
        double n2 = sumsq(gs, ns);   // the padding's gradient is zero
        comm_host_all_reduce(&C, &n2, 1, COMM_F64);
        double gn_s, ks = clip_factor(n2, clip, gscale, &gn_s);
        adamw(master, ms, vs, gs, ns, 1e-2, 0.01, ks, step);
        for (int u = 0; u < L.n_units; u++) {   // the whole weights back, unit by unit
            const ShardUnit* x = &L.unit[u];
            comm_host_all_gather(&C, stage, master + x->shard_offset, x->slice, COMM_F32);
            memcpy(P + x->offset, stage, 4 * x->numel);
        }
        if (fabs(gn_s - gn_r) / gn_r > norm_gap) norm_gap = fabs(gn_s - gn_r) / gn_r;
    }
    for (size_t i = 0; i < n; i++) if (P[i] != Pr[i]) { differ++; double r = fabs(P[i] - Pr[i]) / (fabs(Pr[i]) + 1e-30); if (r > worst) worst = r; }
    // the padding of the master slices stays zero (zero gradient, zero weight: AdamW keeps it 0)
    size_t pad_nonzero = 0;
    for (int u = 0; u < L.n_units; u++) {
        const ShardUnit* x = &L.unit[u]; size_t lo = (size_t)C.rank * x->slice;
        for (size_t j = 0; j < x->slice; j++) if (lo + j >= x->numel && master[x->shard_offset + j] != 0) pad_nonzero++;
    }
    if (clip > 0) CHECK(norm_gap < 1e-12 && worst < 1e-6, "clip %g: the norms differ by %.2e relative, the weights by %.2e (%zu elements)", clip, norm_gap, worst, differ);
    else CHECK(differ == 0, "no clipping: %zu weights differ from the replicated step (worst %.2e relative)", differ, worst);
    CHECK(pad_nonzero == 0, "%zu padding elements of the master slices moved", pad_nonzero);
    if (C.rank == 0)
        printf("  %d units, %zu params (%zu a rank, %zu padding), %d steps, clip %g: weights %s the replicated step's (norms %.1e apart)\n", L.n_units, n, ns, K * ns - n,
               steps, clip, differ ? "within 1e-6 of" : "bit-identical to", norm_gap);
    free(P); free(Pr); free(G); free(Gr); free(m); free(v); free(master); free(ms); free(vs); free(gs); free(stage);
}

int main(int argc, char** argv) {
    comm_host_init(&C, &argc, &argv);
    if (C.rank == 0) printf("shard_step_test: the sharded AdamW step on %d ranks against the replicated one\n", C.world);
    size_t units[] = {37, 1000, 1003, 999, 5};   // uneven units, one smaller than the ranks' slices
    run(units, 5, 0, 3);
    run(units, 5, 0.5, 3);   // the norm is ~20 per step: clipping active
    int all = failures;
#ifdef USE_MPI
    if (C.mpi) MPI_Allreduce(&failures, &all, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
#endif
    if (C.rank == 0) printf("shard_step_test: %s\n", all ? "FAILED" : "ok");
    comm_host_finalize(&C);
    return all ? 1 : 0;
}
