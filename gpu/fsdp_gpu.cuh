// gpu/fsdp_gpu.cuh: fully sharded data parallelism (ZeRO-3 / FSDP semantics) for one Wan model: no rank holds the
// model's whole weights or gradients. This rank keeps its slices (lib/shard.h's layout: the fp32 master weights, their
// floatX copy and the summed gradient, gpu/shard_gpu.cuh's ShardOpt buffers); the DiT's loops (gpu/wan_gpu.cuh, through
// WanGpuWeights.units) ask for each unit just before it runs, and this provider
//   gather  all-gathers the unit's slices (fp32 master and, bf16 build, the floatX copy) into one of TWO gathered-unit
//           buffers and hands out views in which only that unit's tensors are set (a reader of another unit gets NULL
//           and faults instead of reading stale weights); the next unit (forward: u + 1, backward: u − 1) is then
//           gathered into the other buffer: with NCCL on a second stream, an event ordering it after the last kernel
//           that read that buffer and another ordering the unit's first reader after the gather (not yet run: no
//           multi-GPU machine); host-staged (MPI, the simulator) and on one rank in order on the compute stream. A unit
//           asked for again while held (the backward's recompute, the head after the last block) is not gathered again.
//   grads   zeroes the unit's gradient buffer (padded to K slices) when the unit's backward opens it: one buffer for
//           the embeddings (open from the head's path through e until the end of the backward), one for the block or
//           head running
//   done    reduce-scatters the unit's gradient (rank-order sums, gpu/comm.cuh) and adds this rank's slice into the
//           summed-gradient slice, so the optimizer (shard_opt_step with grads NULL) steps the slice as it is
// A frozen model (g_shard NULL) would use gather alone; it needs fp32 slices too (w_shard) until the fp32-read tensors
// get a packed layout of their own, so the sharded bf16-only teacher is not built yet. With one rank the layout is the
// identity, the gathers are copies and the sums are the gradient itself: the same bits as the whole-model path (the
// check: dev/mpi/fsdp_gpu_check.cu with -np 1).
// What it reads in fp32: the fp32 master of the whole unit is gathered with the floatX copy (the block reads only its
// norms and modulation in fp32, gpu/frozen_weights.h; gathering only those is a saving not made yet), so a trainable
// unit's gather moves 6 bytes a parameter in the bf16 build, 4 in the fp32 build (where the copy IS the master).
// The device buffers are lib/shard.h's shard_fsdp_buffers list (gpu/shard_plan.h sums the same list); each model has
// its own two gathered units (sharing one pair between the step's models, which run one after another, would save
// them twice over). Not yet: the TMD student's flow head (gpu/tmd_gpu.cuh reads the student's last blocks, head and
// extras whole), the discriminator, train_tmd's models (they still allocate whole buffers), the gradient's
// reduce-scatter on the second stream (it runs on the compute stream), NCCL on hardware.
#pragma once
#include <stdint.h>
#include "wan_gpu.cuh"
#include "shard_gpu.cuh"

typedef struct {
    WanGpuUnits hook; // first member: what WanGpuWeights.units points at
    Comm* comm;
    ShardLayout L;
    WanConfig cfg;
    int n_wan_units; // embeddings, blocks, head (a student's flow-head unit, if the layout has one, is not asked for
                     // here)
    const float* w_shard;  // [L.shard_numel] this rank's fp32 slices
    const floatX* x_shard; // [L.shard_numel] their floatX copy (the fp32 build: w_shard)
    float* g_shard;        // [L.shard_numel] the summed gradient's slices (NULL: frozen)
    float* gathered[2];    // [L.max_unit_padded] fp32
    floatX* gathered_x[2]; // [L.max_unit_padded] floatX (the fp32 build: gathered)
    int held[2];           // the unit each buffer holds, -1 none
    int cur;               // the buffer handed out last, -1 none
    WanGpuWeights view[2]; // views over each buffer, only its unit's tensors set
    float* ugrad[2];       // [L.unit[0] padded], [L.max_unit_padded]: the embeddings' gradient, the running unit's
    int open[2];           // the unit whose gradient each holds, -1 none
    WanParamsF gview[2];   // views over ugrad
    WanParamsF
        offsets; // the whole layout carved over address FSDP_PROBE_ with 1-byte elements: pointer − probe = element
    cudaStream_t s, side; // compute stream (the model's activations'), the gathers' stream
    cudaEvent_t ready[2], freed[2];
    long gathers; // all-gathers issued (prefetches included), for the logs and the checks
} FsdpWan;

#define FSDP_PROBE_                                                                                                    \
    ((uintptr_t)1                                                                                                      \
     << 40) // an address never dereferenced: the offsets' carving base (wan_carve_view writes base + element)

// views of unit u over buf (esz bytes an element): every pointer slot of the whole layout inside unit u rebased into
// buf, every other slot NULL. view is a WAN_DEFINE_PARAMS struct (WanParamsF or WanParamsX: the same pointer slots).
static void fsdp_unit_view_(const FsdpWan* f, int u, void* view, void* buf, size_t esz) {
    const ShardUnit* x = &f->L.unit[u];
    size_t nslot = sizeof(WanParamsF) / sizeof(void*);
    for (size_t k = 0; k < nslot; k++) {
        void* p;
        memcpy(&p, (const char*)&f->offsets + k * sizeof(void*), sizeof(p));
        uintptr_t e = (uintptr_t)p - FSDP_PROBE_;
        void* q = NULL;
        if (p && e >= x->offset && e < x->offset + x->numel) q = (char*)buf + (e - x->offset) * esz;
        memcpy((char*)view + k * sizeof(void*), &q, sizeof(q));
    }
}

// unit u's slices all-gathered into buffer b: with NCCL on the side stream, after the last reader of b (its freed
// event); staged through the host (or one rank) on the compute stream itself, in order: those collectives block the
// host anyway, so a second stream would overlap nothing
static void fsdp_fill_(FsdpWan* f, int b, int u) {
    const ShardUnit* x = &f->L.unit[u];
    cudaStream_t st = f->comm->nccl ? f->side : f->s;
    if (f->comm->nccl) cudaCheck(cudaStreamWaitEvent(f->side, f->freed[b], 0));
    comm_all_gather(f->comm, f->gathered[b], f->w_shard + x->shard_offset, x->slice, COMM_F32, st);
#ifndef ENABLE_FP32
    comm_all_gather(f->comm, f->gathered_x[b], f->x_shard + x->shard_offset, x->slice, COMM_BF16, st);
#endif
    if (f->comm->nccl) cudaCheck(cudaEventRecord(f->ready[b], f->side));
    f->held[b] = u;
    f->gathers++;
    WanGpuWeights* w = &f->view[b];
    memset(w, 0, sizeof(*w));
    w->cfg = f->cfg;
    fsdp_unit_view_(f, u, &w->P, f->gathered[b], sizeof(float));
    fsdp_unit_view_(f, u, &w->X, f->gathered_x[b], sizeof(floatX));
}

static const WanGpuWeights* fsdp_gather_(WanGpuUnits* self, int u, int backward) {
    FsdpWan* f = (FsdpWan*)self;
    if (u < 0 || u >= f->n_wan_units) {
        char m[96];
        snprintf(m, sizeof(m), "fsdp: unit %d asked of %d", u, f->n_wan_units);
        comm_abort(f->comm, m);
    }
    if (f->comm->nccl && f->cur >= 0)
        cudaCheck(cudaEventRecord(f->freed[f->cur], f->s)); // every reader of the last buffer is enqueued before here
    int b = f->held[0] == u ? 0 : f->held[1] == u ? 1 : -1;
    if (b < 0) {
        b = f->cur == 0 ? 1 : 0;
        fsdp_fill_(f, b, u);
    }
    if (f->comm->nccl) cudaCheck(cudaStreamWaitEvent(f->s, f->ready[b], 0));
    f->cur = b;
    int next = backward ? u - 1 : u + 1; // the prefetch: the unit the loop asks for next
    if (next >= 0 && next < f->n_wan_units && f->held[1 - b] != next) fsdp_fill_(f, 1 - b, next);
    return &f->view[b];
}

static WanParamsF* fsdp_grads_(WanGpuUnits* self, int u) {
    FsdpWan* f = (FsdpWan*)self;
    int k = u == 0 ? 0 : 1;
    if (!f->g_shard) comm_abort(f->comm, "fsdp: a gradient asked of a frozen model");
    if (f->open[k] == u) return &f->gview[k];
    if (f->open[k] >= 0) {
        char m[128];
        snprintf(m, sizeof(m), "fsdp: unit %d's gradient opened while unit %d's is not done", u, f->open[k]);
        comm_abort(f->comm, m);
    }
    cudaCheck(cudaMemsetAsync(f->ugrad[k], 0, sizeof(float) * shard_padded(&f->L, u),
                              f->s)); // the padding stays 0 for the sums
    fsdp_unit_view_(f, u, &f->gview[k], f->ugrad[k], sizeof(float));
    f->open[k] = u;
    return &f->gview[k];
}

static void fsdp_done_(WanGpuUnits* self, int u) {
    FsdpWan* f = (FsdpWan*)self;
    int k = u == 0 ? 0 : 1;
    if (f->open[k] != u) {
        char m[96];
        snprintf(m, sizeof(m), "fsdp: unit %d done but not open", u);
        comm_abort(f->comm, m);
    }
    const ShardUnit* x = &f->L.unit[u];
    float* mine = f->ugrad[k] + (size_t)f->comm->rank * x->slice;
    comm_reduce_scatter(f->comm, mine, f->ugrad[k], x->slice, COMM_F32, f->s); // in place: this rank's slice summed
    wan_gpu_add<float>(f->g_shard + x->shard_offset, mine, x->slice, f->s);
    f->open[k] = -1;
}

// the provider of a Wan model sharded by L (shard_layout_wan of c, comm's world) over this rank's slices; s: the stream
// the model's activations run on. g_shard NULL: frozen. After it: W->units = &f->hook on a WanGpuWeights whose cfg is
// c.
static void fsdp_wan_init(FsdpWan* f, Comm* comm, const ShardLayout* L, const WanConfig* c, const float* w_shard,
                          const floatX* x_shard, float* g_shard, cudaStream_t s) {
    memset(f, 0, sizeof(*f));
    f->hook.gather = fsdp_gather_;
    f->hook.grads = fsdp_grads_;
    f->hook.done = fsdp_done_;
    f->comm = comm;
    f->L = *L;
    f->cfg = *c;
    f->n_wan_units = c->num_layers + 2;
    if (L->K != comm->world || L->n_units < f->n_wan_units ||
        L->unit[f->n_wan_units - 1].offset + L->unit[f->n_wan_units - 1].numel != wan_num_params(c)) {
        char m[160];
        snprintf(m, sizeof(m), "fsdp_wan_init: a layout of %d units over %d ranks is not %s's Wan units over %d ranks",
                 L->n_units, L->K, c->name, comm->world);
        comm_abort(comm, m);
    }
#ifdef ENABLE_FP32
    x_shard = w_shard;
#endif
    f->w_shard = w_shard;
    f->x_shard = x_shard;
    f->g_shard = g_shard;
    f->s = s;
#ifdef ENABLE_FP32
    int fp32 = 1;
#else
    int fp32 = 0;
#endif
    ShardBuf bufs[SHARD_FSDP_MAX_BUFS]; // lib/shard.h's list, in its order: what gpu/shard_plan.h counts
    int nb = shard_fsdp_buffers(L, g_shard != NULL, fp32, bufs), k = 0;
    void* mem[SHARD_FSDP_MAX_BUFS];
    for (int i = 0; i < nb; i++) mem[i] = cuda_malloc_named(bufs[i].bytes, bufs[i].name, "more ranks");
    for (int b = 0; b < 2; b++) f->gathered[b] = (float*)mem[k++];
#ifdef ENABLE_FP32
    for (int b = 0; b < 2; b++) f->gathered_x[b] = f->gathered[b];
#else
    for (int b = 0; b < 2; b++) f->gathered_x[b] = (floatX*)mem[k++];
#endif
    if (g_shard)
        for (int b = 0; b < 2; b++) f->ugrad[b] = (float*)mem[k++];
    if (k != nb) comm_abort(comm, "fsdp_wan_init: lib/shard.h's buffer list and this carving disagree");
    for (int b = 0; b < 2; b++) {
        f->held[b] = -1;
        f->open[b] = -1;
        cudaCheck(cudaEventCreateWithFlags(&f->ready[b], cudaEventDisableTiming));
        cudaCheck(cudaEventCreateWithFlags(&f->freed[b], cudaEventDisableTiming));
    }
    f->cur = -1;
    cudaCheck(cudaStreamCreateWithFlags(&f->side, cudaStreamNonBlocking));
    wan_carve_view(c, &f->offsets, sizeof(f->offsets), (void*)FSDP_PROBE_, 1);
}

// every gather done and the buffers' hold forgotten (the shards change under the optimizer: call after each step)
static void fsdp_wan_release(FsdpWan* f) {
    cudaCheck(cudaStreamSynchronize(f->side));
    cudaCheck(cudaStreamSynchronize(f->s));
    f->held[0] = f->held[1] = -1;
    f->cur = -1;
}

// the whole buffer of which shard [L.shard_numel] holds this rank's slices (the master weights, or a model's AdamW
// moment), consolidated into host [L.numel] on rank 0 (other ranks may pass NULL): every unit's slices all-gathered
// through the first gathered buffer, after the gathers are released (a collective: every rank calls it, the same
// order; what a checkpoint of a sharded model writes, the same file as a whole model's)
static void fsdp_wan_consolidate(FsdpWan* f, const float* shard, float* host) {
    fsdp_wan_release(f);
    for (int u = 0; u < f->L.n_units; u++) {
        const ShardUnit* x = &f->L.unit[u];
        comm_all_gather(f->comm, f->gathered[0], shard + x->shard_offset, x->slice, COMM_F32, f->s);
        if (f->comm->rank == 0)
            cudaCheck(cudaMemcpyAsync(host + x->offset, f->gathered[0], sizeof(float) * x->numel,
                                      cudaMemcpyDeviceToHost, f->s));
    }
    cudaCheck(cudaStreamSynchronize(f->s));
}

// A unit of the layout past the Wan units, held whole on every rank through the step instead of gathered at each use:
// the TMD student's flow-head extras (lib/shard.h's "flow_head" unit: the fusion and the delta-time MLP), which every
// flow-head evaluation reads (N of them per rollout, each backward too) and which run in fp32 only, so only the fp32
// master is gathered. It is all-gathered once after each optimizer step (fsdp_held_gather); its gradient is one
// buffer summed over all the step's backward calls, as a whole model's is (so one rank gets the whole path's bits),
// reduce-scattered into the summed-gradient slices once, before the optimizer step (fsdp_held_reduce). Costs 8
// bytes a parameter of the unit on every rank (the 14B student's extras, about 0.17 B parameters with the fusion FFN
// at the Wan FFN width: about 1.3 GiB), against re-gathering it 2N times a student step.
typedef struct {
    FsdpWan* f;
    int u;    // the unit
    float* w; // [K slices] the unit's fp32 weights (the whole unit first, then the padding)
    float* g; // [K slices] this rank's gradient of the unit, summed over the step's backward calls (NULL: frozen)
} FsdpHeld;

// all-gathers unit u's slices into the held weights (after every optimizer step: the slices changed)
static void fsdp_held_gather(FsdpHeld* h) {
    const ShardUnit* x = &h->f->L.unit[h->u];
    comm_all_gather(h->f->comm, h->w, h->f->w_shard + x->shard_offset, x->slice, COMM_F32, h->f->s);
}

static void fsdp_held_init(FsdpHeld* h, FsdpWan* f, int u) {
    memset(h, 0, sizeof(*h));
    if (u < f->n_wan_units || u >= f->L.n_units) {
        char m[96];
        snprintf(m, sizeof(m), "fsdp_held_init: unit %d is not one past the %d Wan units of %d", u, f->n_wan_units,
                 f->L.n_units);
        comm_abort(f->comm, m);
    }
    h->f = f;
    h->u = u;
    size_t bytes = sizeof(float) * shard_padded(&f->L, u);
    h->w = (float*)cuda_malloc_named(bytes, "a held unit (fp32, the flow-head extras)", "more ranks");
    if (f->g_shard) {
        h->g = (float*)cuda_malloc_named(bytes, "a held unit's gradient (fp32)", "more ranks");
        cudaCheck(cudaMemsetAsync(h->g, 0, bytes, f->s)); // the padding stays 0 for the sums
    }
    fsdp_held_gather(h);
}

// the held unit's gradient to zero (at the start of each of the model's steps)
static void fsdp_held_zero_grad(FsdpHeld* h) {
    if (h->g) cudaCheck(cudaMemsetAsync(h->g, 0, sizeof(float) * shard_padded(&h->f->L, h->u), h->f->s));
}

// the step's gradient of the held unit reduce-scattered (rank-order sums) and added into this rank's summed-gradient
// slice (before the optimizer step; every rank calls it)
static void fsdp_held_reduce(FsdpHeld* h) {
    FsdpWan* f = h->f;
    const ShardUnit* x = &f->L.unit[h->u];
    float* mine = h->g + (size_t)f->comm->rank * x->slice;
    comm_reduce_scatter(f->comm, mine, h->g, x->slice, COMM_F32, f->s);
    wan_gpu_add<float>(f->g_shard + x->shard_offset, mine, x->slice, f->s);
}

static void fsdp_held_free(FsdpHeld* h) {
    if (h->w) cudaCheck(cudaFree(h->w));
    if (h->g) cudaCheck(cudaFree(h->g));
    memset(h, 0, sizeof(*h));
}

static void fsdp_wan_free(FsdpWan* f) {
    fsdp_wan_release(f);
    for (int b = 0; b < 2; b++) {
        cudaCheck(cudaFree(f->gathered[b]));
#ifndef ENABLE_FP32
        cudaCheck(cudaFree(f->gathered_x[b]));
#endif
        if (f->ugrad[b]) cudaCheck(cudaFree(f->ugrad[b]));
        cudaCheck(cudaEventDestroy(f->ready[b]));
        cudaCheck(cudaEventDestroy(f->freed[b]));
    }
    cudaCheck(cudaStreamDestroy(f->side));
    memset(f, 0, sizeof(*f));
}
