// gpu/shard_gpu.cuh: one trainable model's sharded optimizer step on the device (ZeRO: the fp32 master weights, the
// AdamW moments and the summed gradients kept as this rank's slices of lib/shard.h's layout), the order of operations
// of dev/mpi/shard_step_test.c, which checks it on host buffers against the replicated step (bit for bit, `make
// test-mpi`):
//   1. per unit: the model's gradient (this rank's, [numel]) copied into a staging buffer padded with zeros to K
//   slices,
//      reduce-scattered into this rank's slice of the summed gradient            (comm_reduce_scatter, fp32)
//   2. the global norm from the slices' partial sums of squares                  (adamw_grad_norm_squared,
//   comm_all_reduce fp64)
//   3. AdamW on the slice: master, m, v (and, bf16 build, the slice's bf16 copy)  (kernels/adamw.cuh adamw_update)
//   4. per unit: the master slices all-gathered into the model's whole fp32 weights, the bf16 slices into its bf16
//      copy (what the forward reads)                                             (comm_all_gather, fp32 and bf16)
// One rank (K = 1, the identity layout) aliases the model's own buffers and runs exactly train_tmd's plain step (the
// norm over the whole gradient, adamw_update over the whole buffer): bit for bit the same, checked in test_gpu.
// train_tmd uses it with more than one rank (mpirun): the models' whole moments then only carry the checkpoint
// (shard_opt_gather_moments before each save). train_tmd still gives every model its whole fp32 weights, bf16 copy and
// gradients (its forward and backward read and write them whole), so there only the moments and the master weights'
// update are 1/K. The fully sharded path over these slices is gpu/fsdp_gpu.cuh (per-unit gathers and reduce-scatters;
// shard_opt_step with grads and params NULL), checked in dev/mpi/fsdp_gpu_check.cu, not yet wired into train_tmd.
// Not yet run on more than one GPU.
#pragma once
#include "comm.cuh"
#include "../lib/shard.h"
#include "../kernels/adamw.cuh"

typedef struct {
    ShardLayout L;
    int aliased;           // K = 1: the buffers below are the model's own
    float *master, *m, *v; // [shard_numel] this rank's slices of the fp32 weights and the AdamW moments
    float* g;              // [shard_numel] this rank's slice of the gradient summed over the ranks
    floatX* master_x;      // [shard_numel] the slices' bf16 copy (NULL in the fp32 build)
    float* stage;          // [max_unit_padded] one unit's padded gradient, then its gathered weights
    floatX* stage_x;       // [max_unit_padded] one unit's gathered bf16 weights (NULL in the fp32 build)
} ShardOpt;

// the optimizer of a model whose flat buffers are params [L->numel] (its weights, the same on every rank), grads,
// opt_m, opt_v (the model's, used as they are when K = 1); the slices start from params and the moments
static void shard_opt_load(ShardOpt* o, int rank, const float* params, const float* opt_m, const float* opt_v,
                           cudaStream_t s);
static void shard_opt_init(ShardOpt* o, Comm* comm, const ShardLayout* L, float* params, float* grads, float* opt_m,
                           float* opt_v, cudaStream_t s) {
    memset(o, 0, sizeof(*o));
    o->L = *L;
    if (L->K != comm->world) {
        char m[120];
        snprintf(m, sizeof(m), "shard_opt_init: a layout of %d slices for %d ranks", L->K, comm->world);
        comm_abort(comm, m);
    }
    if (L->K == 1) {
        o->aliased = 1;
        o->master = params;
        o->g = grads;
        o->m = opt_m;
        o->v = opt_v;
        return;
    }
    size_t ns = L->shard_numel, nu = L->max_unit_padded;
    o->master = (float*)cuda_malloc_named(sizeof(float) * ns, "sharded master weights", "more ranks");
    o->m = (float*)cuda_malloc_named(sizeof(float) * ns, "sharded AdamW m", "more ranks");
    o->v = (float*)cuda_malloc_named(sizeof(float) * ns, "sharded AdamW v", "more ranks");
    o->g = (float*)cuda_malloc_named(sizeof(float) * ns, "sharded gradients", "more ranks");
    o->stage = (float*)cuda_malloc_named(sizeof(float) * nu, "a unit's staging buffer", "more ranks");
    cudaCheck(cudaMemsetAsync(o->m, 0, sizeof(float) * ns, s));
    cudaCheck(cudaMemsetAsync(o->v, 0, sizeof(float) * ns, s)); // padding 0
#ifndef ENABLE_FP32
    o->master_x = (floatX*)cuda_malloc_named(sizeof(floatX) * ns, "sharded bf16 weights", "more ranks");
    o->stage_x = (floatX*)cuda_malloc_named(sizeof(floatX) * nu, "a unit's bf16 staging buffer", "more ranks");
#endif
    // this rank's slices of the weights (lib/shard.h shard_scatter_host, on the device): padding zero
    cudaCheck(cudaMemsetAsync(o->master, 0, sizeof(float) * ns, s));
    shard_opt_load(o, comm->rank, params, opt_m, opt_v, s);
}

// the rank's slice bounds of unit u: [lo, lo + n) of the unit's elements (n may be 0 for the last ranks of a small
// unit)
static size_t shard_opt_owned_(const ShardUnit* x, int rank, size_t* lo) {
    *lo = (size_t)rank * x->slice;
    return *lo >= x->numel ? 0 : (x->numel - *lo < x->slice ? x->numel - *lo : x->slice);
}

// copies this rank's slices of the model's whole params and moments (device buffers) into the slices (after
// shard_opt_init; after a checkpoint's weights and moments are loaded)
static void shard_opt_load(ShardOpt* o, int rank, const float* params, const float* opt_m, const float* opt_v,
                           cudaStream_t s) {
    if (o->aliased) return;
    const float* src[3] = {params, opt_m, opt_v};
    float* dst[3] = {o->master, o->m, o->v};
    for (int b = 0; b < 3; b++)
        for (int u = 0; u < o->L.n_units; u++) {
            const ShardUnit* x = &o->L.unit[u];
            size_t lo, n = shard_opt_owned_(x, rank, &lo);
            if (n)
                cudaCheck(cudaMemcpyAsync(dst[b] + x->shard_offset, src[b] + x->offset + lo, sizeof(float) * n,
                                          cudaMemcpyDeviceToDevice, s));
        }
}

// the moments' slices all-gathered into the model's whole opt_m and opt_v (before rank 0 writes a checkpoint: the
// same file as a one-rank run's); every rank calls it (a collective)
static void shard_opt_gather_moments(ShardOpt* o, Comm* comm, float* opt_m, float* opt_v, cudaStream_t s) {
    if (o->aliased) return;
    const float* src[2] = {o->m, o->v};
    float* dst[2] = {opt_m, opt_v};
    for (int b = 0; b < 2; b++)
        for (int u = 0; u < o->L.n_units; u++) {
            const ShardUnit* x = &o->L.unit[u];
            comm_all_gather(comm, o->stage, src[b] + x->shard_offset, x->slice, COMM_F32, s);
            cudaCheck(
                cudaMemcpyAsync(dst[b] + x->offset, o->stage, sizeof(float) * x->numel, cudaMemcpyDeviceToDevice, s));
        }
}

// one optimizer step: train_tmd.cu tmd_adamw_'s arithmetic (gscale = 1/ranks makes the summed gradient a mean; clip
// the per-network norm clipping, 0 off) over the slices. grads: this rank's gradient, not yet summed over the ranks;
// NULL when the slices o->g already hold the sum (gpu/fsdp_gpu.cuh reduce-scatters each unit as its backward ends).
// params NULL: no whole weights to refresh (FSDP: the next forward gathers the slices; with one rank, aliased, the
// slices are the model's buffers and params_x its floatX copy, which AdamW writes).
static void shard_opt_step(ShardOpt* o, Comm* comm, float* params, floatX* params_x, float* grads, double lr, double wd,
                           double clip, long step, double gscale, double* scratch, double* gnorm, cudaStream_t s) {
    const ShardLayout* L = &o->L;
    if (!o->aliased && grads)
        for (int u = 0; u < L->n_units; u++) { // 1. the summed gradient's slices
            const ShardUnit* x = &L->unit[u];
            cudaCheck(
                cudaMemcpyAsync(o->stage, grads + x->offset, sizeof(float) * x->numel, cudaMemcpyDeviceToDevice, s));
            cudaCheck(cudaMemsetAsync(o->stage + x->numel, 0, sizeof(float) * (shard_padded(L, u) - x->numel), s));
            comm_reduce_scatter(comm, o->g + x->shard_offset, o->stage, x->slice, COMM_F32, s);
        }
    adamw_grad_norm_squared(scratch, scratch + 1, o->g, L->shard_numel,
                            s); // 2. the slices' partial sums (the padding adds 0)
    if (!o->aliased) comm_all_reduce(comm, scratch, 1, COMM_F64, s);
    double n2;
    cudaCheck(cudaMemcpy(&n2, scratch, sizeof(double), cudaMemcpyDeviceToHost));
    *gnorm = sqrt(n2) * gscale;
    double k = clip > 0 ? fmin(1.0, clip / (*gnorm + 1e-6)) : 1.0;
    k *= gscale;
    floatX* copy = o->aliased ? params_x : o->master_x;
#ifdef ENABLE_FP32
    copy = NULL;
#endif
    adamw_update(o->master, copy, o->m, o->v, o->g, L->shard_numel, (float)lr, 0.9f, 0.99f, 1e-8f, (float)wd, (float)k,
                 step, s); // 3.
    if (o->aliased || !params) return;
    for (int u = 0; u < L->n_units; u++) { // 4. the whole weights back
        const ShardUnit* x = &L->unit[u];
        comm_all_gather(comm, o->stage, o->master + x->shard_offset, x->slice, COMM_F32, s);
        cudaCheck(cudaMemcpyAsync(params + x->offset, o->stage, sizeof(float) * x->numel, cudaMemcpyDeviceToDevice, s));
#ifndef ENABLE_FP32
        if (params_x) {
            comm_all_gather(comm, o->stage_x, o->master_x + x->shard_offset, x->slice, COMM_BF16, s);
            cudaCheck(cudaMemcpyAsync(params_x + x->offset, o->stage_x, sizeof(floatX) * x->numel,
                                      cudaMemcpyDeviceToDevice, s));
        }
#endif
    }
}

static void shard_opt_free(ShardOpt* o) {
    if (!o->aliased) {
        cudaCheck(cudaFree(o->master));
        cudaCheck(cudaFree(o->m));
        cudaCheck(cudaFree(o->v));
        cudaCheck(cudaFree(o->g));
        cudaCheck(cudaFree(o->stage));
        if (o->master_x) cudaCheck(cudaFree(o->master_x));
        if (o->stage_x) cudaCheck(cudaFree(o->stage_x));
    }
    memset(o, 0, sizeof(*o));
}
