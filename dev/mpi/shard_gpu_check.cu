// dev/mpi/shard_gpu_check.cu: gpu/shard_gpu.cuh's sharded optimizer step on the device against the replicated step
// (comm_all_reduce of the gradients, then train_tmd's plain AdamW on the whole buffer), every rank its own GPU, bit for
// bit: weights and the bf16 copy on every rank after three steps, clipped and not. The host twin of this check is
// dev/mpi/shard_step_test.c (`make test-mpi`); this one runs the device code: the padded staging, the collectives of
// gpu/comm.cuh (NCCL, or MPI staged through the host), the slice AdamW, the gathers.
//   make dev/mpi/shard_gpu_check                  (the Makefile's nvcc flags: NCCL when found, MPI)
//   mpirun -np 2 dev/mpi/shard_gpu_check          on 2 GPUs; under the simulator (dev/sim.md), with the simulator build:
//   make dev/mpi/shard_gpu_check_sim && mpirun -np 2 /work/sim/run.sh dev/mpi/shard_gpu_check_sim
// Exit 1 on any difference.
#include "../../gpu/shard_gpu.cuh"

static float value(int r, size_t i, int salt) {
    uint64_t h = (uint64_t)r * 0x9E3779B97F4A7C15ull ^ (uint64_t)i * 0xBF58476D1CE4E5B9ull ^ (uint64_t)salt * 0x94D049BB133111EBull;
    h ^= h >> 31; h *= 0xD6E8FEB86CD9B5D3ull; h ^= h >> 29;
    return (float)(((double)(h % 2001) - 1000.0) / 1000.0);
}

int main(int argc, char** argv) {
    Comm comm; comm_init(&comm, &argc, &argv);
    int K = comm.world;
    size_t units[] = {37, 1000, 1003, 999, 5};   // uneven units, one smaller than the ranks' slices
    const char* names[] = {"a", "b", "c", "d", "e"};
    char err[256]; ShardLayout L;
    if (shard_layout_init(&L, names, units, 5, K, 4, err, sizeof(err))) comm_abort(&comm, err);
    size_t n = L.numel;
    if (comm.rank == 0) printf("shard_gpu_check: the sharded optimizer step on %d rank%s (%s) against the replicated one, %zu params, %zu a rank\n",
                               K, K > 1 ? "s" : "", sizeof(floatX) == 2 ? "bf16 build" : "fp32 build", n, L.shard_numel);
    float* h = (float*)malloc(sizeof(float) * n);
    float *p[2], *g, *gr, *m0, *v0, *m1, *v1; floatX* x[2];
    for (int k = 0; k < 2; k++) { cudaCheck(cudaMalloc(&p[k], sizeof(float) * n)); cudaCheck(cudaMalloc(&x[k], sizeof(floatX) * n)); }
    cudaCheck(cudaMalloc(&g, sizeof(float) * n)); cudaCheck(cudaMalloc(&gr, sizeof(float) * n));
    cudaCheck(cudaMalloc(&m0, sizeof(float) * n)); cudaCheck(cudaMalloc(&v0, sizeof(float) * n));
    cudaCheck(cudaMalloc(&m1, sizeof(float) * n)); cudaCheck(cudaMalloc(&v1, sizeof(float) * n));
    cudaCheck(cudaMemset(m0, 0, sizeof(float) * n)); cudaCheck(cudaMemset(v0, 0, sizeof(float) * n));
    cudaCheck(cudaMemset(m1, 0, sizeof(float) * n)); cudaCheck(cudaMemset(v1, 0, sizeof(float) * n));
    double* scratch; cudaCheck(cudaMalloc(&scratch, sizeof(double) * (ADAMW_NORM_BLOCKS + 1)));
    int failures = 0;
    for (int clipped = 0; clipped <= 1; clipped++) {
        double clip = clipped ? 0.5 : 0, gscale = 1.0 / K;   // the gradient's norm is ~20: 0.5 clips
        for (size_t i = 0; i < n; i++) h[i] = value(0, i, 7 + clipped);   // the same weights on every rank
        for (int k = 0; k < 2; k++) cudaCheck(cudaMemcpy(p[k], h, sizeof(float) * n, cudaMemcpyHostToDevice));
        cudaCheck(cudaMemset(m0, 0, sizeof(float) * n)); cudaCheck(cudaMemset(v0, 0, sizeof(float) * n));
        cudaCheck(cudaMemset(m1, 0, sizeof(float) * n)); cudaCheck(cudaMemset(v1, 0, sizeof(float) * n));
        ShardOpt o; shard_opt_init(&o, &comm, &L, p[1], g, m1, v1, 0);
        double gn0 = 0, gn1 = 0;
        for (long step = 1; step <= 3; step++) {
            for (size_t i = 0; i < n; i++) h[i] = value(comm.rank + 1, i, (int)step);   // this rank's gradient
            cudaCheck(cudaMemcpy(gr, h, sizeof(float) * n, cudaMemcpyHostToDevice)); cudaCheck(cudaMemcpy(g, h, sizeof(float) * n, cudaMemcpyHostToDevice));
            // replicated: train_tmd.cu's all-reduce and tmd_adamw_
            comm_all_reduce(&comm, gr, n, COMM_F32, 0);
            adamw_grad_norm_squared(scratch, scratch + 1, gr, n, 0);
            double n2; cudaCheck(cudaMemcpy(&n2, scratch, sizeof(double), cudaMemcpyDeviceToHost));
            gn0 = sqrt(n2) * gscale;
            double k = (clip > 0 ? fmin(1.0, clip / (gn0 + 1e-6)) : 1.0) * gscale;
#ifdef ENABLE_FP32
            floatX* cx = NULL;
#else
            floatX* cx = x[0];
#endif
            adamw_update(p[0], cx, m0, v0, gr, n, (float)1e-2, 0.9f, 0.99f, 1e-8f, (float)0.01, (float)k, step, 0);
            // sharded
            shard_opt_step(&o, &comm, p[1], x[1], g, 1e-2, 0.01, clip, step, gscale, scratch, &gn1, 0);
        }
        shard_opt_gather_moments(&o, &comm, m1, v1, 0);   // what train_tmd does before a checkpoint
        cudaCheck(cudaDeviceSynchronize());
        float* a = (float*)malloc(sizeof(float) * n); float* b = (float*)malloc(sizeof(float) * n);
        cudaCheck(cudaMemcpy(a, p[0], sizeof(float) * n, cudaMemcpyDeviceToHost)); cudaCheck(cudaMemcpy(b, p[1], sizeof(float) * n, cudaMemcpyDeviceToHost));
        size_t differ = 0; double worst = 0;
        for (size_t i = 0; i < n; i++) if (a[i] != b[i]) { differ++; worst = fmax(worst, fabs(a[i] - b[i]) / (fabs(a[i]) + 1e-30)); }
        size_t differ_mv = 0;
        float* bufs[2][2] = {{m0, m1}, {v0, v1}};
        for (int q = 0; q < 2; q++) {
            cudaCheck(cudaMemcpy(a, bufs[q][0], sizeof(float) * n, cudaMemcpyDeviceToHost)); cudaCheck(cudaMemcpy(b, bufs[q][1], sizeof(float) * n, cudaMemcpyDeviceToHost));
            for (size_t i = 0; i < n; i++) if (a[i] != b[i]) { differ_mv++; worst = fmax(worst, fabs(a[i] - b[i]) / (fabs(a[i]) + 1e-30)); }
        }
        size_t differ_x = 0;
#ifndef ENABLE_FP32
        cudaCheck(cudaMemcpy(a, x[0], sizeof(floatX) * n, cudaMemcpyDeviceToHost)); cudaCheck(cudaMemcpy(b, x[1], sizeof(floatX) * n, cudaMemcpyDeviceToHost));
        differ_x = memcmp(a, b, sizeof(floatX) * n) != 0;
#endif
        // bit for bit unclipped (the same rank-order sums with MPI; NCCL's reduce-scatter and all-reduce may sum in
        // other orders: then within 1e-6); clipped, the norms' fp64 sums run in other orders (1e-15 apart)
        int ok = clipped ? fabs(gn1 - gn0) <= 1e-12 * gn0 && worst <= 1e-6 : (comm.nccl ? worst <= 1e-6 : differ == 0 && differ_x == 0 && differ_mv == 0);
        printf("  [rank %d] %s, 3 steps: %zu of %zu weights, %zu of %zu gathered moments differ (worst %.2e relative)%s, norms %.17g / %.17g: %s\n", comm.rank,
               clipped ? "clip 0.5" : "no clipping", differ, n, differ_mv, 2 * n, worst, sizeof(floatX) == 2 ? (differ_x ? ", the bf16 copy differs" : ", the bf16 copy identical") : "", gn1, gn0, ok ? "ok" : "FAIL");
        failures += !ok;
        free(a); free(b); shard_opt_free(&o);
    }
    int all = failures;
#ifdef USE_MPI
    if (comm.host.mpi) MPI_Allreduce(&failures, &all, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
#endif
    if (comm.rank == 0) printf("shard_gpu_check: %s\n", all ? "FAILED" : "ok");
    comm_finalize(&comm);
    return all ? 1 : 0;
}
