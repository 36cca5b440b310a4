// gpu/comm.cuh: lib/comm.h's collectives over DEVICE buffers, for the multi-rank CUDA programs (mpirun -np K
// ./train_tmd). One interface, two backends, the semantics (counts per rank, in-place forms, layouts) lib/comm.h's:
//   NCCL        when the build has NCCL (-DUSE_NCCL) and more than one rank runs (TMD_COMM=mpi picks the other):
//               the collectives run on the given stream, fp32/bf16/fp64, sums in NCCL's order (deterministic for a
//               fixed world and topology, not lib/comm.h's rank order); the all-to-all is NCCL's grouped send/recv
//   host-staged MPI otherwise (machines without GPUs' NCCL, the simulator): the stream is synchronised, the buffer
//               copied to the host, lib/comm.h's MPI collective run (rank-order sums, tested by `make test-mpi`),
//               the result copied back; all_reduce in segments of COMM_STAGE_ELEMS (elementwise, so the same sums)
// Ranks: MPI's when the build has MPI (-DUSE_MPI: the NCCL id is broadcast over MPI); a build with NCCL and without MPI
// reads them from the launcher's environment (OMPI_COMM_WORLD_RANK/SIZE, PMI_RANK/SIZE) and passes the NCCL id
// through a file (TMD_NCCL_ID_FILE, default ./nccl_id.bin, written atomically by rank 0). One GPU per rank:
// the node-local rank (OMPI_COMM_WORLD_LOCAL_RANK, SLURM_LOCALID, else the rank) modulo the visible GPUs.
// A failing rank calls comm_abort(msg): NCCL's communicator is aborted and MPI_Abort ends every rank, never a hang.
// Not yet run on more than one GPU (this machine has none).
#pragma once
#include <unistd.h>
#include "../lib/comm.h"
#include "../kernels/common.cuh"
#ifdef USE_NCCL
#include <nccl.h>
#endif

#define COMM_STAGE_ELEMS ((size_t)16 << 20) // host-staged all_reduce segment (64 MiB of fp32)

typedef struct {
    CommHost host; // rank, world, MPI (lib/comm.h)
    int rank, world;
    int nccl; // 1: NCCL runs the collectives; 0: staged through the host (MPI), or one rank
#ifdef USE_NCCL
    ncclComm_t nccl_comm;
#endif
    char* stage;
    size_t stage_bytes; // host staging buffer, grown on demand
} Comm;

static void comm_abort(Comm* c, const char* msg) {
#ifdef USE_NCCL
    if (c->nccl) ncclCommAbort(c->nccl_comm);
#endif
    comm_host_abort(&c->host, msg);
}

#ifdef USE_NCCL
#define ncclCheck(c, call)                                                                                             \
    do {                                                                                                               \
        ncclResult_t r_ = (call);                                                                                      \
        if (r_ != ncclSuccess) {                                                                                       \
            char m_[512];                                                                                              \
            snprintf(m_, sizeof(m_), "[NCCL error] %s:%d: %s: %s", __FILE__, __LINE__, #call, ncclGetErrorString(r_)); \
            comm_abort(c, m_);                                                                                         \
        }                                                                                                              \
    } while (0)
static ncclDataType_t comm_nccl_type_(CommType t) {
    return t == COMM_F32 ? ncclFloat : t == COMM_BF16 ? ncclBfloat16 : ncclFloat64;
}

// the NCCL id from rank 0 to the others: over MPI, or through a file every rank can read
static void comm_nccl_id_(Comm* c, ncclUniqueId* id) {
    if (c->rank == 0) ncclCheck(c, ncclGetUniqueId(id));
#ifdef USE_MPI
    mpiCheck(&c->host, MPI_Bcast(id, (int)sizeof(*id), MPI_BYTE, 0, MPI_COMM_WORLD));
#else
    const char* path = getenv("TMD_NCCL_ID_FILE");
    if (!path) path = "nccl_id.bin";
    char m[1200];
    if (c->rank == 0) {
        char tmp[1100];
        snprintf(tmp, sizeof(tmp), "%s.tmp", path);
        FILE* f = fopen(tmp, "wb");
        if (!f || fwrite(id, sizeof(*id), 1, f) != 1 || fclose(f) != 0 || rename(tmp, path) != 0) {
            snprintf(m, sizeof(m),
                     "cannot write the NCCL id to %s (set TMD_NCCL_ID_FILE to a path every rank can read)", path);
            comm_abort(c, m);
        }
    } else {
        for (int tries = 0;; tries++) { // rank 0 renames the file into place once it is whole
            FILE* f = fopen(path, "rb");
            if (f) {
                size_t got = fread(id, sizeof(*id), 1, f);
                fclose(f);
                if (got == 1) break;
            }
            if (tries > 6000) {
                snprintf(m, sizeof(m), "waited 10 minutes for the NCCL id in %s from rank 0", path);
                comm_abort(c, m);
            }
            usleep(100000);
        }
    }
#endif
}
#endif

// ranks, the GPU of this rank, the backend; one rank without a launcher (no collective ever runs then)
static void comm_init(Comm* c, int* argc, char*** argv) {
    memset(c, 0, sizeof(*c));
#if defined(USE_NCCL) && !defined(USE_MPI)
    // NCCL alone: ranks from the launcher's environment (lib/comm.h would refuse several ranks without MPI)
    c->host.world = comm_env_world();
    c->host.rank = comm_env_int("OMPI_COMM_WORLD_RANK", "PMI_RANK", 0);
    (void)argc;
    (void)argv;
#else
    comm_host_init(&c->host, argc, argv);
#endif
    c->rank = c->host.rank;
    c->world = c->host.world;
    if (c->world < 1 || c->rank < 0 || c->rank >= c->world) {
        char m[96];
        snprintf(m, sizeof(m), "rank %d of %d is not a valid pair", c->rank, c->world);
        comm_abort(c, m);
    }
    if (c->world == 1) return;
    int ndev = 0;
    cudaCheck(cudaGetDeviceCount(&ndev));
    int local = comm_env_int("OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", c->rank);
    cudaCheck(cudaSetDevice(local % (ndev > 0 ? ndev : 1)));
#ifdef USE_NCCL
    const char* want = getenv("TMD_COMM");
    c->nccl = !(want && !strcmp(want, "mpi"));
#ifndef USE_MPI
    if (!c->nccl) comm_abort(c, "TMD_COMM=mpi, but this build has no MPI: install OpenMPI and rebuild");
#endif
    if (c->nccl) {
        ncclUniqueId id;
        comm_nccl_id_(c, &id);
        ncclCheck(c, ncclCommInitRank(&c->nccl_comm, c->world, id, c->rank));
    }
#endif
    if (c->rank == 0)
        printf("comm: %d ranks, collectives over %s\n", c->world, c->nccl ? "NCCL" : "MPI, staged through host memory");
}

// a group of c's ranks: those passing the same color, ordered by key, every rank of c calling it (lib/comm.h
// comm_host_split; ncclCommSplit on the NCCL backend). The group's collectives run over its ranks only, on the
// group's rank numbers; the GPU stays c's. Finalize sub (comm_finalize) before c.
static void comm_split(Comm* c, Comm* sub, int color, int key) {
    memset(sub, 0, sizeof(*sub));
#if defined(USE_NCCL) && !defined(USE_MPI)
    if (c->world > 1 && !c->nccl) comm_abort(c, "comm_split without MPI needs NCCL");
    sub->host.sub = 1;
    sub->host.world = 1;
#else
    comm_host_split(&c->host, &sub->host, color, key);
#endif
    sub->rank = sub->host.rank;
    sub->world = sub->host.world;
#ifdef USE_NCCL
    if (c->nccl) {
        ncclCheck(c, ncclCommSplit(c->nccl_comm, color, key, &sub->nccl_comm, NULL));
        int r = 0, n = 1;
        ncclCheck(c, ncclCommUserRank(sub->nccl_comm, &r));
        ncclCheck(c, ncclCommCount(sub->nccl_comm, &n));
        sub->rank = r;
        sub->world = n;
        sub->host.rank = r;
        sub->host.world = n;
        sub->nccl = 1;
    }
#endif
}

static void comm_finalize(Comm* c) {
#ifdef USE_NCCL
    if (c->nccl) ncclCommDestroy(c->nccl_comm);
#endif
    free(c->stage);
#if !(defined(USE_NCCL) && !defined(USE_MPI))
    comm_host_finalize(&c->host);
#endif
    memset(c, 0, sizeof(*c));
}

static char* comm_stage_(Comm* c, size_t bytes) {
    if (bytes > c->stage_bytes) {
        free(c->stage);
        c->stage = (char*)malloc(bytes);
        c->stage_bytes = bytes;
        if (!c->stage) {
            char m[120];
            snprintf(m, sizeof(m), "out of host memory for %zu bytes of staging", bytes);
            comm_abort(c, m);
        }
    }
    return c->stage;
}
static void comm_d2h_(void* h, const void* d, size_t bytes, cudaStream_t s) {
    cudaCheck(cudaMemcpyAsync(h, d, bytes, cudaMemcpyDeviceToHost, s));
    cudaCheck(cudaStreamSynchronize(s));
}
static void comm_h2d_(void* d, const void* h, size_t bytes, cudaStream_t s) {
    cudaCheck(cudaMemcpyAsync(d, h, bytes, cudaMemcpyHostToDevice, s));
    cudaCheck(cudaStreamSynchronize(s));
}

// send [count] -> recv [world][count]; in place when send == recv + rank*count
static void comm_all_gather(Comm* c, void* recv, const void* send, size_t count, CommType t, cudaStream_t s) {
    size_t bytes = count * comm_type_size(t);
    char* mine = (char*)recv + (size_t)c->rank * bytes;
    if (c->world == 1) {
        if ((const void*)mine != send) cudaCheck(cudaMemcpyAsync(mine, send, bytes, cudaMemcpyDeviceToDevice, s));
        return;
    }
#ifdef USE_NCCL
    if (c->nccl) {
        ncclCheck(c, ncclAllGather(send, recv, count, comm_nccl_type_(t), c->nccl_comm, s));
        return;
    }
#endif
    char* h = comm_stage_(c, bytes * (size_t)c->world);
    comm_d2h_(h + (size_t)c->rank * bytes, send, bytes, s);
    comm_host_all_gather(&c->host, h, h + (size_t)c->rank * bytes, count, t);
    comm_h2d_(recv, h, bytes * (size_t)c->world, s);
}

// send [world][count] -> recv [count], the sum over ranks of their slice `rank`; in place when recv == send +
// rank*count
static void comm_reduce_scatter(Comm* c, void* recv, const void* send, size_t count, CommType t, cudaStream_t s) {
    size_t bytes = count * comm_type_size(t);
    if (c->world == 1) {
        if (recv != send) cudaCheck(cudaMemcpyAsync(recv, send, bytes, cudaMemcpyDeviceToDevice, s));
        return;
    }
#ifdef USE_NCCL
    if (c->nccl) {
        ncclCheck(c, ncclReduceScatter(send, recv, count, comm_nccl_type_(t), ncclSum, c->nccl_comm, s));
        return;
    }
#endif
    char* h = comm_stage_(c, bytes * (size_t)c->world);
    comm_d2h_(h, send, bytes * (size_t)c->world, s);
    comm_host_reduce_scatter(&c->host, h + (size_t)c->rank * bytes, h, count, t);
    comm_h2d_(recv, h + (size_t)c->rank * bytes, bytes, s);
}

// buf [n] summed over the ranks in place, any n
static void comm_all_reduce(Comm* c, void* buf, size_t n, CommType t, cudaStream_t s) {
    if (c->world == 1 || n == 0) return;
#ifdef USE_NCCL
    if (c->nccl) {
        ncclCheck(c, ncclAllReduce(buf, buf, n, comm_nccl_type_(t), ncclSum, c->nccl_comm, s));
        return;
    }
#endif
    size_t es = comm_type_size(t);
    for (size_t off = 0; off < n; off += COMM_STAGE_ELEMS) {
        size_t k = n - off < COMM_STAGE_ELEMS ? n - off : COMM_STAGE_ELEMS;
        char *h = comm_stage_(c, k * es), *d = (char*)buf + off * es;
        comm_d2h_(h, d, k * es, s);
        comm_host_all_reduce(&c->host, h, k, t);
        comm_h2d_(d, h, k * es, s);
    }
}

// send [world][count] -> recv [world][count]: block j of send to rank j, block j of recv from rank j (not in place)
static void comm_all_to_all(Comm* c, void* recv, const void* send, size_t count, CommType t, cudaStream_t s) {
    size_t bytes = count * comm_type_size(t);
    if (recv == send) comm_abort(c, "comm_all_to_all: recv and send must be different buffers");
    if (c->world == 1) {
        cudaCheck(cudaMemcpyAsync(recv, send, bytes, cudaMemcpyDeviceToDevice, s));
        return;
    }
#ifdef USE_NCCL
    if (c->nccl) {
        ncclCheck(c, ncclGroupStart());
        for (int j = 0; j < c->world; j++) {
            ncclCheck(c,
                      ncclSend((const char*)send + (size_t)j * bytes, count, comm_nccl_type_(t), j, c->nccl_comm, s));
            ncclCheck(c, ncclRecv((char*)recv + (size_t)j * bytes, count, comm_nccl_type_(t), j, c->nccl_comm, s));
        }
        ncclCheck(c, ncclGroupEnd());
        return;
    }
#endif
    char* h = comm_stage_(c, 2 * bytes * (size_t)c->world);
    comm_d2h_(h, send, bytes * (size_t)c->world, s);
    comm_host_all_to_all(&c->host, h + bytes * (size_t)c->world, h, count, t);
    comm_h2d_(recv, h + bytes * (size_t)c->world, bytes * (size_t)c->world, s);
}

// buf [n] from rank root to every rank
static void comm_broadcast(Comm* c, void* buf, size_t n, CommType t, int root, cudaStream_t s) {
    if (root < 0 || root >= c->world) {
        char m[96];
        snprintf(m, sizeof(m), "comm_broadcast from rank %d of %d", root, c->world);
        comm_abort(c, m);
    }
    if (c->world == 1) return;
#ifdef USE_NCCL
    if (c->nccl) {
        ncclCheck(c, ncclBroadcast(buf, buf, n, comm_nccl_type_(t), root, c->nccl_comm, s));
        return;
    }
#endif
    size_t bytes = n * comm_type_size(t);
    char* h = comm_stage_(c, bytes);
    comm_d2h_(h, buf, bytes, s);
    comm_host_broadcast(&c->host, h, n, t, root);
    comm_h2d_(buf, h, bytes, s);
}

// every rank's work on stream s done and every rank here
static void comm_barrier(Comm* c, cudaStream_t s) {
    cudaCheck(cudaStreamSynchronize(s));
    if (c->world == 1) return;
#if defined(USE_NCCL) && !defined(USE_MPI)
    float* one;
    cudaCheck(cudaMalloc(&one, sizeof(float)));
    ncclCheck(c, ncclAllReduce(one, one, 1, ncclFloat, ncclSum, c->nccl_comm, s));
    cudaCheck(cudaStreamSynchronize(s));
    cudaCheck(cudaFree(one));
#else
    comm_host_barrier(&c->host);
#endif
}
