// gpu/nccl_dp.cuh: data parallelism over NCCL for train_tmd (compiled when the Makefile finds NCCL: -DUSE_NCCL).
//   ranks      from mpirun's environment (OMPI_COMM_WORLD_RANK/SIZE, or PMI_RANK/PMI_SIZE), else one rank; no MPI
//              library is linked: the NCCL unique id travels through a shared file (TMD_NCCL_ID_FILE, default
//              ./nccl_id.bin) that rank 0 writes atomically and the others wait for
//   gradients  summed over ranks after each backward in buckets of DP_BUCKET_FLOATS (one ncclAllReduce each, on the
//              training stream), then scaled by 1/world inside AdamW (grad_scale), so every rank applies the same
//              update to the same weights. NCCL's ring sum is deterministic for a fixed world size and topology.
//   data       each rank draws its own clips, times and noise: the streams are seeded with (seed, stage, rank), and
//              rank 0's are the single-GPU run's, so a 1-rank run is the plain run bit for bit (no collective runs).
//   output     rank 0 prints and writes checkpoints.
// Not yet run: this machine has no GPU (it compiles, with NCCL 2 headers and library found by the Makefile's probe).
#pragma once
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "../kernels/common.cuh"
#ifdef USE_NCCL
#include <nccl.h>
#define ncclCheck(call) do { ncclResult_t r_ = (call); if (r_ != ncclSuccess) { \
    fprintf(stderr, "[NCCL error] %s:%d: %s: %s\n", __FILE__, __LINE__, #call, ncclGetErrorString(r_)); exit(1); } } while (0)
#endif

#define DP_BUCKET_FLOATS (16u << 20)   // 64 MiB of fp32 gradients per collective

typedef struct {
    int rank, world;
#ifdef USE_NCCL
    ncclComm_t comm;
#endif
} DataParallel;

static int dp_env_int_(const char* a, const char* b, int dflt) {
    const char* s = getenv(a); if (!s) s = getenv(b);
    return s ? atoi(s) : dflt;
}

static void dp_init(DataParallel* dp) {
    memset(dp, 0, sizeof(*dp));
    dp->rank = dp_env_int_("OMPI_COMM_WORLD_RANK", "PMI_RANK", 0);
    dp->world = dp_env_int_("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", 1);
    if (dp->world < 1 || dp->rank < 0 || dp->rank >= dp->world) { fprintf(stderr, "data parallel: rank %d of %d is not a valid pair\n", dp->rank, dp->world); exit(1); }
    if (dp->world == 1) return;
#ifdef USE_NCCL
    int ndev = 0; cudaCheck(cudaGetDeviceCount(&ndev));
    cudaCheck(cudaSetDevice(dp->rank % ndev));   // one GPU per rank on each node
    const char* path = getenv("TMD_NCCL_ID_FILE"); if (!path) path = "nccl_id.bin";
    ncclUniqueId id;
    if (dp->rank == 0) {
        ncclCheck(ncclGetUniqueId(&id));
        char tmp[1100]; snprintf(tmp, sizeof(tmp), "%s.tmp", path);
        FILE* f = fopen(tmp, "wb");
        if (!f || fwrite(&id, sizeof(id), 1, f) != 1 || fclose(f) != 0 || rename(tmp, path) != 0) {
            fprintf(stderr, "data parallel: cannot write the NCCL id to %s (set TMD_NCCL_ID_FILE to a path every rank can read)\n", path); exit(1);
        }
    } else {
        for (int tries = 0;; tries++) {   // rank 0 renames the file into place once it is whole
            FILE* f = fopen(path, "rb");
            if (f) { size_t got = fread(&id, sizeof(id), 1, f); fclose(f); if (got == 1) break; }
            if (tries > 6000) { fprintf(stderr, "data parallel: rank %d waited 10 minutes for %s from rank 0\n", dp->rank, path); exit(1); }
            usleep(100000);
        }
    }
    ncclCheck(ncclCommInitRank(&dp->comm, dp->world, id, dp->rank));
    if (dp->rank == 0) printf("data parallel: %d ranks over NCCL\n", dp->world);
#else
    fprintf(stderr, "data parallel: %d ranks asked for, but this build has no NCCL (the Makefile did not find it)\n", dp->world); exit(1);
#endif
}

// grads [n] fp32 on the device: summed over the ranks in place (nothing to do for one rank)
static void dp_allreduce_sum(DataParallel* dp, float* grads, size_t n, cudaStream_t s) {
    if (dp->world == 1) return;
#ifdef USE_NCCL
    for (size_t off = 0; off < n; off += DP_BUCKET_FLOATS) {
        size_t k = n - off < DP_BUCKET_FLOATS ? n - off : DP_BUCKET_FLOATS;
        ncclCheck(ncclAllReduce(grads + off, grads + off, k, ncclFloat, ncclSum, dp->comm, s));
    }
#else
    (void)grads; (void)n; (void)s;
#endif
}

static void dp_free(DataParallel* dp) {
#ifdef USE_NCCL
    if (dp->world > 1) ncclCheck(ncclCommDestroy(dp->comm));
#endif
    memset(dp, 0, sizeof(*dp));
}
