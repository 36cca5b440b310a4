// lib/comm.h: the collectives of the multi-rank programs behind one small interface, in plain C over HOST buffers.
// gpu/comm.cuh puts the same interface over device buffers (NCCL, or staged through these functions); the semantics
// are defined and tested here (dev/mpi/comm_test.c, `make test-mpi`), without a GPU.
//   backend  MPI when compiled with -DUSE_MPI (the Makefile finds OpenMPI by compiling against it) and launched by
//            mpirun/srun, else one rank, where every collective is a copy (or nothing); a launch of several ranks
//            without MPI is refused
//   types    COMM_F32 (float), COMM_BF16 (uint16_t bf16 bit patterns), COMM_F64 (double)
//   counts   per rank: all_gather: send [count] -> recv [world][count] (rank r's at r*count; in place when
//            send == recv + rank*count); reduce_scatter: send [world][count] -> recv [count] = the sum over the ranks of
//            their send[rank*count ..] (in place when recv == send + rank*count); all_to_all: send [world][count] ->
//            recv [world][count] (send block j goes to rank j, recv block j came from rank j; not in place);
//            all_reduce: buf [n] in place, any n (the world need not divide it); broadcast: buf [n] from root
//   sums     deterministic: every element is summed in rank order, ((x_0 + x_1) + x_2) + ..., in fp32 for fp32 and bf16
//            (bf16 widened, the sum rounded once to nearest even) and in fp64 for fp64, so the result is the same bits
//            on every rank, in every run, whatever order the messages arrive in. MPI_SUM promises no order, so the
//            pieces travel by an all-to-all (a reduce-scatter's traffic) and are summed here. NCCL's sums
//            (gpu/comm.cuh) are deterministic for a fixed world and topology but in NCCL's order, not this one.
//   groups   comm_host_split: the collectives over a subset of the ranks (context parallelism's group of one sample's
//            ranks), MPI_Comm_split's colors and keys
//   errors   every MPI call is checked; comm_host_abort(msg) prints "[rank r/K] fatal: msg" and takes every rank down
//            (MPI_Abort), so a failing rank never leaves the others waiting in a collective
#pragma once
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <limits.h>
#ifdef USE_MPI
#include <mpi.h>
#endif

typedef enum { COMM_F32 = 0, COMM_BF16 = 1, COMM_F64 = 2 } CommType;
static size_t comm_type_size(CommType t) { return t == COMM_F32 ? 4 : t == COMM_BF16 ? 2 : 8; }
static const char* comm_type_name(CommType t) { return t == COMM_F32 ? "fp32" : t == COMM_BF16 ? "bf16" : "fp64"; }

typedef struct {
    int rank, world;
    int mpi;                  // 1: MPI is initialised (by comm_host_init or before it)
    int mpi_owned;            // 1: comm_host_init called MPI_Init, so comm_host_finalize calls MPI_Finalize
    void* tmp; size_t tmp_bytes;   // the sums' scratch, grown on demand
    int sub;                  // 1: a group split from another (comm_host_split); its finalize frees only the group
#ifdef USE_MPI
    MPI_Comm mc;              // the ranks the collectives run over: MPI_COMM_WORLD, or a group's
#endif
} CommHost;

// the rank and world a launcher announces in the environment (OpenMPI, MPICH/Slurm PMI), or def when none does
static int comm_env_int(const char* a, const char* b, int def) {
    const char* s = getenv(a); if (!s) s = getenv(b);
    return s ? atoi(s) : def;
}
static int comm_env_world(void) { return comm_env_int("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", 1); }

static void comm_host_abort(const CommHost* c, const char* msg) {
    fprintf(stderr, "[rank %d/%d] fatal: %s\n", c ? c->rank : 0, c ? c->world : 1, msg);
    fflush(stderr); fflush(stdout);
#ifdef USE_MPI
    int init = 0; MPI_Initialized(&init);
    if (init) MPI_Abort(MPI_COMM_WORLD, 1);   // mpirun ends every rank
#endif
    exit(1);
}

#ifdef USE_MPI
#define mpiCheck(c, call) do { int r_ = (call); if (r_ != MPI_SUCCESS) { char m_[MPI_MAX_ERROR_STRING + 160]; char e_[MPI_MAX_ERROR_STRING]; int n_ = 0; \
    MPI_Error_string(r_, e_, &n_); snprintf(m_, sizeof(m_), "%s:%d: %s: %s", __FILE__, __LINE__, #call, e_); comm_host_abort(c, m_); } } while (0)
static MPI_Datatype comm_mpi_type_(CommType t) { return t == COMM_F32 ? MPI_FLOAT : t == COMM_BF16 ? MPI_UINT16_T : MPI_DOUBLE; }
#endif

// MPI counts are ints: the host-staged backend is for tests and small runs (NCCL takes size_t)
static int comm_count_(CommHost* c, size_t n, const char* what) {
    if (n > (size_t)INT_MAX / (size_t)c->world) {
        char m[200]; snprintf(m, sizeof(m), "%s of %zu elements x %d ranks: more than the MPI backend's int counts hold; use the NCCL build for this size", what, n, c->world);
        comm_host_abort(c, m);
    }
    return (int)n;
}

#ifndef USE_MPI
// several ranks without MPI (a build with NCCL alone, whose ranks come from the environment): the host path cannot run
static void comm_no_mpi_(CommHost* c, const char* what) {
    char m[200]; snprintf(m, sizeof(m), "%s over %d ranks needs MPI on the host path, and this build has none: install OpenMPI and rebuild", what, c->world);
    comm_host_abort(c, m);
}
#endif

static void* comm_tmp_(CommHost* c, size_t bytes) {
    if (bytes > c->tmp_bytes) {
        free(c->tmp); c->tmp = malloc(bytes); c->tmp_bytes = bytes;
        if (!c->tmp) { char m[120]; snprintf(m, sizeof(m), "out of host memory for %zu bytes of collective scratch", bytes); comm_host_abort(c, m); }
    }
    return c->tmp;
}

// bf16 <-> fp32 on the bit patterns: widening is exact; narrowing rounds to nearest even (NaN kept a NaN)
static float comm_bf16_to_f32(uint16_t h) { uint32_t u = (uint32_t)h << 16; float f; memcpy(&f, &u, 4); return f; }
static uint16_t comm_f32_to_bf16(float f) {
    uint32_t u; memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1)) >> 16);
}

// out[i] = sum over j = 0 .. parts-1, in that order, of in[j*count + i]
static void comm_sum_parts_(void* out, const void* in, size_t count, int parts, CommType t) {
    for (size_t i = 0; i < count; i++) {
        if (t == COMM_F64) {
            const double* x = (const double*)in; double acc = x[i];
            for (int j = 1; j < parts; j++) acc += x[(size_t)j * count + i];
            ((double*)out)[i] = acc;
        } else if (t == COMM_F32) {
            const float* x = (const float*)in; float acc = x[i];
            for (int j = 1; j < parts; j++) acc += x[(size_t)j * count + i];
            ((float*)out)[i] = acc;
        } else {
            const uint16_t* x = (const uint16_t*)in; float acc = comm_bf16_to_f32(x[i]);
            for (int j = 1; j < parts; j++) acc += comm_bf16_to_f32(x[(size_t)j * count + i]);
            ((uint16_t*)out)[i] = comm_f32_to_bf16(acc);
        }
    }
}

// MPI when built with it (MPI_Init here unless already done), else one rank; a launch of several ranks (mpirun's
// environment) in a build without MPI is refused with what to do
static void comm_host_init(CommHost* c, int* argc, char*** argv) {
    memset(c, 0, sizeof(*c)); c->world = 1;
#ifdef USE_MPI
    // without a launcher (mpirun, srun, hydra) one rank runs without MPI: no singleton start-up for a one-GPU run
    if (!getenv("OMPI_COMM_WORLD_SIZE") && !getenv("PMI_SIZE") && !getenv("PMIX_RANK")) { (void)argc; (void)argv; return; }
    int init = 0; MPI_Initialized(&init);
    if (!init) { mpiCheck(c, MPI_Init(argc, argv)); c->mpi_owned = 1; }
    c->mpi = 1; c->mc = MPI_COMM_WORLD;
    mpiCheck(c, MPI_Comm_rank(MPI_COMM_WORLD, &c->rank));
    mpiCheck(c, MPI_Comm_size(MPI_COMM_WORLD, &c->world));
#else
    (void)argc; (void)argv;
    int world = comm_env_world();
    if (world > 1) {
        c->rank = comm_env_int("OMPI_COMM_WORLD_RANK", "PMI_RANK", 0); c->world = world;
        comm_host_abort(c, "launched as one of several ranks, but this build has no MPI: install OpenMPI (apt-get install openmpi-bin libopenmpi-dev) and rebuild");
    }
#endif
}

static void comm_host_finalize(CommHost* c) {
    free(c->tmp);
#ifdef USE_MPI
    if (c->sub && c->world > 1) MPI_Comm_free(&c->mc);
    else if (c->mpi_owned) MPI_Finalize();
#endif
    memset(c, 0, sizeof(*c));
}

// a group of c's ranks (context parallelism's ranks of one sample, or the data-parallel ranks across samples): the ranks
// that pass the same color, ordered by key, every rank of c calling it (MPI_Comm_split). sub's collectives run over the
// group only, with the same semantics (its rank and world are the group's); an abort still ends every rank of the
// launch. Finalize sub before c.
static void comm_host_split(CommHost* c, CommHost* sub, int color, int key) {
    memset(sub, 0, sizeof(*sub)); sub->sub = 1; sub->world = 1;
    if (color < 0) comm_host_abort(c, "comm_host_split: the color must be >= 0");
#ifdef USE_MPI
    sub->mc = c->mc; sub->mpi = c->mpi;
    if (c->world == 1) return;
    mpiCheck(c, MPI_Comm_split(c->mc, color, key, &sub->mc));
    mpiCheck(c, MPI_Comm_rank(sub->mc, &sub->rank));
    mpiCheck(c, MPI_Comm_size(sub->mc, &sub->world));
    if (sub->world == 1) { MPI_Comm_free(&sub->mc); sub->mc = c->mc; }   // a group of one runs no collective
#else
    (void)key;
    if (c->world > 1) comm_no_mpi_(c, "comm_host_split");
#endif
}

static void comm_host_barrier(CommHost* c) {
#ifdef USE_MPI
    if (c->world > 1) mpiCheck(c, MPI_Barrier(c->mc));
#else
    if (c->world > 1) comm_no_mpi_(c, "barrier");
#endif
}

static void comm_host_all_gather(CommHost* c, void* recv, const void* send, size_t count, CommType t) {
    size_t es = comm_type_size(t), bytes = count * es;
    char* mine = (char*)recv + (size_t)c->rank * bytes;
    if (c->world == 1) { if (mine != send) memmove(mine, send, bytes); return; }
#ifdef USE_MPI
    int n = comm_count_(c, count, "all_gather");
    mpiCheck(c, MPI_Allgather(mine == send ? MPI_IN_PLACE : send, n, comm_mpi_type_(t), recv, n, comm_mpi_type_(t), c->mc));
#else
    comm_no_mpi_(c, "all_gather");
#endif
}

static void comm_host_reduce_scatter(CommHost* c, void* recv, const void* send, size_t count, CommType t) {
    size_t es = comm_type_size(t), bytes = count * es;
    if (c->world == 1) { if (recv != send) memmove(recv, send, bytes); return; }
#ifdef USE_MPI
    int n = comm_count_(c, count, "reduce_scatter");
    void* parts = comm_tmp_(c, bytes * (size_t)c->world);   // [world][count]: every rank's piece of this rank's slice
    mpiCheck(c, MPI_Alltoall(send, n, comm_mpi_type_(t), parts, n, comm_mpi_type_(t), c->mc));
    comm_sum_parts_(recv, parts, count, c->world, t);
#else
    comm_no_mpi_(c, "reduce_scatter");
#endif
}

static void comm_host_all_to_all(CommHost* c, void* recv, const void* send, size_t count, CommType t) {
    if (recv == send) comm_host_abort(c, "all_to_all: recv and send must be different buffers");
    if (c->world == 1) { memcpy(recv, send, count * comm_type_size(t)); return; }
#ifdef USE_MPI
    int n = comm_count_(c, count, "all_to_all");
    mpiCheck(c, MPI_Alltoall(send, n, comm_mpi_type_(t), recv, n, comm_mpi_type_(t), c->mc));
#else
    comm_no_mpi_(c, "all_to_all");
#endif
}

// in place over any n: padded to world slices of ceil(n / world), reduce-scattered in rank order, all-gathered back
static void comm_host_all_reduce(CommHost* c, void* buf, size_t n, CommType t) {
    if (c->world == 1 || n == 0) return;
#ifdef USE_MPI
    size_t es = comm_type_size(t), K = (size_t)c->world, slice = (n + K - 1) / K;
    int ns = comm_count_(c, slice, "all_reduce");
    char* tmp = (char*)comm_tmp_(c, 2 * K * slice * es);
    char *padded = tmp, *parts = tmp + K * slice * es;
    memcpy(padded, buf, n * es); memset(padded + n * es, 0, (K * slice - n) * es);
    mpiCheck(c, MPI_Alltoall(padded, ns, comm_mpi_type_(t), parts, ns, comm_mpi_type_(t), c->mc));
    comm_sum_parts_(padded + (size_t)c->rank * slice * es, parts, slice, c->world, t);
    mpiCheck(c, MPI_Allgather(MPI_IN_PLACE, ns, comm_mpi_type_(t), padded, ns, comm_mpi_type_(t), c->mc));
    memcpy(buf, padded, n * es);
#else
    (void)buf; (void)t; comm_no_mpi_(c, "all_reduce");
#endif
}

static void comm_host_broadcast(CommHost* c, void* buf, size_t n, CommType t, int root) {
    if (root < 0 || root >= c->world) { char m[96]; snprintf(m, sizeof(m), "broadcast from rank %d of %d", root, c->world); comm_host_abort(c, m); }
    if (c->world == 1) return;
#ifdef USE_MPI
    int k = comm_count_(c, n, "broadcast");
    mpiCheck(c, MPI_Bcast(buf, k, comm_mpi_type_(t), root, c->mc));
#else
    (void)buf; (void)n; (void)t; comm_no_mpi_(c, "broadcast");
#endif
}
