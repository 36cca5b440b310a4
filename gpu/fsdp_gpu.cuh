// gpu/fsdp_gpu.cuh: fully sharded data parallelism (ZeRO-3 / FSDP semantics) for Wan models: no rank holds a model's
// whole weights or gradients. This rank keeps its slices (lib/shard.h's layout: the fp32 master weights, their floatX
// copy and the summed gradient, gpu/shard_gpu.cuh's ShardOpt buffers); the DiT's loops (gpu/wan_gpu.cuh, through
// WanGpuWeights.units) ask for each unit just before it runs, and the model's provider (FsdpWan)
//   gather  all-gathers the unit's slices into one of TWO gathered-unit buffers and hands out views in which only that
//           unit's tensors are set (a reader of another unit gets NULL and faults instead of reading stale weights);
//           the next unit (forward: u + 1, backward: u − 1) is then gathered into the other buffer: with NCCL on a
//           second stream, an event ordering it after the last kernel that read that buffer and another ordering the
//           unit's first reader after the gather (not yet run: no multi-GPU machine); host-staged (MPI, the simulator)
//           and on one rank in order on the compute stream. A unit asked for again while its buffer still holds it
//           for THIS model (the backward's recompute, the head after the last block) is not gathered again.
//   grads   zeroes the unit's gradient buffer (padded to K slices) when the unit's backward opens it: one buffer for
//           the embeddings (open from the head's path through e until the end of the backward), one for the block or
//           head running
//   done    reduce-scatters the unit's gradient (rank-order sums, gpu/comm.cuh) and adds this rank's slice into the
//           summed-gradient slice, so the optimizer (shard_opt_step with grads NULL) steps the slice as it is
// The buffers (FsdpBuffers) are shared by all the step's sharded models, which run one after another: one pair of
// gathered units and one pair of unit gradients, sized for the largest user (lib/shard.h shard_fsdp_shared_buffers,
// the list gpu/shard_plan.h sums). Every buffer is tagged with the model and unit it holds, so a model never trusts a
// hold that another model's gather has since overwritten (it gathers again), and a gradient buffer another model
// still has open is an abort, never an overwrite. fsdp_wan_init gives one model a pair of its own (the same list for
// one model); fsdp_buffers_init + fsdp_wan_init_shared share one pair. The contract a caller keeps: a view handed out
// is read only by work enqueued before the next gather of ANY model sharing the buffers (that gather's prefetch may
// refill it, ordered after that work), and one model's backward finishes before another model's backward opens a
// unit gradient.
// What a unit's gather moves: a trainable model, its whole fp32 master unit and (bf16 build) the floatX copy: 6 bytes a
// parameter, 4 in the fp32 build (where the copy IS the master). A frozen model with the fp32-read layout
// (gpu/frozen_weights.h shard_layout_wan_fp32: the norms, modulation, embeddings' time path and head the GPU reads in
// fp32, sharded like the rest): its floatX unit and its packed fp32-read tensors, every other fp32 view NULL; its
// slices cost 2 bytes a parameter plus 4 for each fp32-read one (bf16 build). The fp32 build keeps that layout too
// (4 + 4·fp32-read/n bytes), so the simulator checks that no fp32 read escapes it. With one rank the layout is the
// identity, the gathers are copies and the sums are the gradient itself: the same bits as the whole-model path (the
// check: dev/mpi/fsdp_gpu_check.cu with -np 1).
// Users: train_tmd --fsdp (the student, fake score and bf16-only teacher over one FsdpBuffers; the TMD student's flow
// head gathers its blocks and head here, its extras are an FsdpHeld unit below). Not yet: the discriminator, the
// gradient's reduce-scatter on the second stream (it runs on the compute stream), NCCL on hardware.
#pragma once
#include <stdint.h>
#include "wan_gpu.cuh"
#include "shard_gpu.cuh"

// the gathered units and unit gradients of a step's sharded models (lib/shard.h shard_fsdp_shared_buffers)
typedef struct {
    size_t wide, narrow, emb_grad, grad; // capacities in elements (lib/shard.h's list)
    float* gathered[2];                  // [wide] fp32: a trainable model's whole unit, a frozen packed one's fp32 part
    floatX* gathered_x[2];  // [narrow] floatX: a whole unit (NULL in the fp32 build without a frozen model)
    const void* owner[2];   // the model (FsdpWan) whose unit each buffer holds, NULL none
    int held[2];            // that unit
    int cur;                // the buffer handed out last, -1 none
    cudaStream_t reader[2]; // the stream of the model each buffer was last handed to
    float* ugrad[2];        // [emb_grad], [grad]: the embeddings' gradient, the running unit's
    const void* gowner[2];  // the model whose unit gradient each holds open, NULL none
    int open[2];            // that unit
    cudaStream_t side;      // the gathers' stream (NCCL)
    cudaEvent_t ready[2], freed[2];
    cudaEvent_t issued; // NCCL: recorded on the filling model's compute stream just before a fill
    void* mem[SHARD_FSDP_MAX_BUFS];
    int nmem;
} FsdpBuffers;

typedef struct {
    WanGpuUnits hook; // first member: what WanGpuWeights.units points at
    Comm* comm;
    ShardLayout L;   // every parameter
    ShardLayout L32; // a frozen packed model: its fp32-read tensors (gpu/frozen_weights.h); n_units 0 otherwise
    WanConfig cfg;
    int n_wan_units; // embeddings, blocks, head (a student's flow-head unit, if the layout has one, is not asked for
                     // here)
    const float* w_shard;  // [L.shard_numel] this rank's fp32 slices (a frozen packed model: [L32.shard_numel])
    const floatX* x_shard; // [L.shard_numel] their floatX copy (the fp32 build, trainable: w_shard)
    float* g_shard;        // [L.shard_numel] the summed gradient's slices (NULL: frozen)
    FsdpBuffers* B;        // the buffers it gathers into (shared, or own)
    FsdpBuffers* own;      // fsdp_wan_init's buffers of its own (NULL: shared, the caller's)
    WanGpuWeights view[2]; // its views over each buffer, only its unit's tensors set (valid while B->owner[b] == this)
    WanParamsF gview[2];   // views over B->ugrad
    WanParamsF
        offsets; // the whole layout carved over address FSDP_PROBE_ with 1-byte elements: pointer − probe = element
    WanParamsF offsets32; // a frozen packed model: the fp32-read tensors at their L32 elements, every other slot NULL
    cudaStream_t s;       // compute stream (the model's activations')
    long gathers;         // all-gathers issued (prefetches included), for the logs and the checks
} FsdpWan;

#define FSDP_PROBE_                                                                                                    \
    ((uintptr_t)1                                                                                                      \
     << 40) // an address never dereferenced: the offsets' carving base (wan_carve_view writes base + element)

// views of unit u of layout L over buf (esz bytes an element): every pointer slot of offsets (the probe carving) inside
// unit u rebased into buf, every other slot NULL. view is a WAN_DEFINE_PARAMS struct (WanParamsF or WanParamsX: the
// same pointer slots).
static void fsdp_unit_view_(const ShardLayout* L, const WanParamsF* offsets, int u, void* view, void* buf, size_t esz) {
    const ShardUnit* x = &L->unit[u];
    size_t nslot = sizeof(WanParamsF) / sizeof(void*);
    for (size_t k = 0; k < nslot; k++) {
        void* p;
        memcpy(&p, (const char*)offsets + k * sizeof(void*), sizeof(p));
        uintptr_t e = (uintptr_t)p - FSDP_PROBE_;
        void* q = NULL;
        if (p && e >= x->offset && e < x->offset + x->numel) q = (char*)buf + (e - x->offset) * esz;
        memcpy((char*)view + k * sizeof(void*), &q, sizeof(q));
    }
}

static int fsdp_packed_(const FsdpWan* f) { return f->L32.n_units > 0; }

// unit u's slices all-gathered into buffer b: with NCCL on the side stream, after the last reader of b (its freed
// event) and after everything the model's compute stream has been given so far (the side stream is non-blocking, so
// nothing else orders it after, e.g., the optimizer's writes to the slices); staged through the host (or one rank) on
// the compute stream itself, in order (those collectives block the host anyway, so a second stream would overlap
// nothing), after b's last reader when that was another stream. (The simulator cannot check the side-stream path with
// host staging: its cudaStreamSynchronize of a non-default stream returns before the stream's copies have run, so the
// staged collective's host buffer is read before the copy fills it; dev/results/fsdp-shared-sim-20261208.txt.)
static void fsdp_fill_(FsdpWan* f, int b, int u) {
    FsdpBuffers* B = f->B;
    const ShardUnit* x = &f->L.unit[u];
    cudaStream_t st = f->comm->nccl ? B->side : f->s;
    if (f->comm->nccl || (B->owner[b] && B->reader[b] != st)) cudaCheck(cudaStreamWaitEvent(st, B->freed[b], 0));
    if (f->comm->nccl) {
        cudaCheck(cudaEventRecord(B->issued, f->s));
        cudaCheck(cudaStreamWaitEvent(B->side, B->issued, 0));
    }
    CommType xt = sizeof(floatX) == 2 ? COMM_BF16 : COMM_F32;
    WanGpuWeights* w = &f->view[b];
    memset(w, 0, sizeof(*w));
    w->cfg = f->cfg;
    if (fsdp_packed_(f)) { // the fp32-read tensors into the wide buffer, the whole floatX unit into the narrow one
        const ShardUnit* y = &f->L32.unit[u];
        if (y->slice) comm_all_gather(f->comm, B->gathered[b], f->w_shard + y->shard_offset, y->slice, COMM_F32, st);
        comm_all_gather(f->comm, B->gathered_x[b], f->x_shard + x->shard_offset, x->slice, xt, st);
        fsdp_unit_view_(&f->L32, &f->offsets32, u, &w->P, B->gathered[b], sizeof(float));
        fsdp_unit_view_(&f->L, &f->offsets, u, &w->X, B->gathered_x[b], sizeof(floatX));
    } else {
        comm_all_gather(f->comm, B->gathered[b], f->w_shard + x->shard_offset, x->slice, COMM_F32, st);
#ifdef ENABLE_FP32
        void* xb = B->gathered[b]; // the copy IS the master
#else
        comm_all_gather(f->comm, B->gathered_x[b], f->x_shard + x->shard_offset, x->slice, xt, st);
        void* xb = B->gathered_x[b];
#endif
        fsdp_unit_view_(&f->L, &f->offsets, u, &w->P, B->gathered[b], sizeof(float));
        fsdp_unit_view_(&f->L, &f->offsets, u, &w->X, xb, sizeof(floatX));
    }
    if (f->comm->nccl) cudaCheck(cudaEventRecord(B->ready[b], B->side));
    B->owner[b] = f;
    B->held[b] = u;
    f->gathers++;
}

// buffer b holds this model's unit u (a hold tagged by another model is not this model's weights)
static int fsdp_holds_(const FsdpWan* f, int b, int u) { return f->B->owner[b] == f && f->B->held[b] == u; }

static const WanGpuWeights* fsdp_gather_(WanGpuUnits* self, int u, int backward) {
    FsdpWan* f = (FsdpWan*)self;
    FsdpBuffers* B = f->B;
    if (u < 0 || u >= f->n_wan_units) {
        char m[96];
        snprintf(m, sizeof(m), "fsdp: unit %d asked of %d", u, f->n_wan_units);
        comm_abort(f->comm, m);
    }
    if (B->cur >= 0) // every reader of the buffer handed out last is enqueued before here
        cudaCheck(cudaEventRecord(B->freed[B->cur], B->reader[B->cur]));
    int b = fsdp_holds_(f, 0, u) ? 0 : fsdp_holds_(f, 1, u) ? 1 : -1;
    if (b < 0) {
        b = B->cur == 0 ? 1 : 0;
        fsdp_fill_(f, b, u);
    }
    if (f->comm->nccl) cudaCheck(cudaStreamWaitEvent(f->s, B->ready[b], 0));
    B->cur = b;
    B->reader[b] = f->s;
    int next = backward ? u - 1 : u + 1; // the prefetch: the unit the loop asks for next
    if (next >= 0 && next < f->n_wan_units && !fsdp_holds_(f, 1 - b, next)) fsdp_fill_(f, 1 - b, next);
    return &f->view[b];
}

static WanParamsF* fsdp_grads_(WanGpuUnits* self, int u) {
    FsdpWan* f = (FsdpWan*)self;
    FsdpBuffers* B = f->B;
    int k = u == 0 ? 0 : 1;
    if (!f->g_shard) comm_abort(f->comm, "fsdp: a gradient asked of a frozen model");
    if (B->gowner[k] == f && B->open[k] == u) return &f->gview[k];
    if (B->gowner[k]) {
        char m[160];
        snprintf(m, sizeof(m), "fsdp: unit %d's gradient opened while unit %d's%s is not done", u, B->open[k],
                 B->gowner[k] == f ? "" : " (of another model sharing the buffers)");
        comm_abort(f->comm, m);
    }
    cudaCheck(cudaMemsetAsync(B->ugrad[k], 0, sizeof(float) * shard_padded(&f->L, u),
                              f->s)); // the padding stays 0 for the sums
    fsdp_unit_view_(&f->L, &f->offsets, u, &f->gview[k], B->ugrad[k], sizeof(float));
    B->gowner[k] = f;
    B->open[k] = u;
    return &f->gview[k];
}

static void fsdp_done_(WanGpuUnits* self, int u) {
    FsdpWan* f = (FsdpWan*)self;
    FsdpBuffers* B = f->B;
    int k = u == 0 ? 0 : 1;
    if (B->gowner[k] != f || B->open[k] != u) {
        char m[96];
        snprintf(m, sizeof(m), "fsdp: unit %d done but not open", u);
        comm_abort(f->comm, m);
    }
    const ShardUnit* x = &f->L.unit[u];
    float* mine = B->ugrad[k] + (size_t)f->comm->rank * x->slice;
    comm_reduce_scatter(f->comm, mine, B->ugrad[k], x->slice, COMM_F32, f->s); // in place: this rank's slice summed
    wan_gpu_add<float>(f->g_shard + x->shard_offset, mine, x->slice, f->s);
    B->gowner[k] = NULL;
    B->open[k] = -1;
}

#ifdef ENABLE_FP32
#define FSDP_FP32_BUILD_ 1
#else
#define FSDP_FP32_BUILD_ 0
#endif

// the buffers of the sharded models m[0 .. n) (each model's layout, whether it is trainable, a frozen packed one's
// fp32-read layout): lib/shard.h's list allocated in its order. Every model of fsdp_wan_init_shared over them must be
// among those m describes (it checks the capacities).
static void fsdp_buffers_init(FsdpBuffers* B, Comm* comm, const ShardFsdpModel* m, int n) {
    memset(B, 0, sizeof(*B));
    ShardBuf bufs[SHARD_FSDP_MAX_BUFS];
    B->nmem = shard_fsdp_shared_buffers(m, n, FSDP_FP32_BUILD_, bufs);
    int nw = 0, nx = 0;
    for (int i = 0; i < B->nmem; i++) {
        B->mem[i] = cuda_malloc_named(bufs[i].bytes ? bufs[i].bytes : 1, bufs[i].name, "more ranks");
        switch (bufs[i].kind) {
        case 'w': B->wide = bufs[i].bytes / sizeof(float), B->gathered[nw++] = (float*)B->mem[i]; break;
        case 'x': B->narrow = bufs[i].bytes / sizeof(floatX), B->gathered_x[nx++] = (floatX*)B->mem[i]; break;
        case 'e': B->emb_grad = bufs[i].bytes / sizeof(float), B->ugrad[0] = (float*)B->mem[i]; break;
        default: B->grad = bufs[i].bytes / sizeof(float), B->ugrad[1] = (float*)B->mem[i]; break;
        }
    }
    if (nw != 2 || (nx != 0 && nx != 2) || (!B->ugrad[0]) != (!B->ugrad[1]))
        comm_abort(comm, "fsdp_buffers_init: lib/shard.h's buffer list and this carving disagree");
    for (int b = 0; b < 2; b++) {
        B->held[b] = B->open[b] = -1;
        cudaCheck(cudaEventCreateWithFlags(&B->ready[b], cudaEventDisableTiming));
        cudaCheck(cudaEventCreateWithFlags(&B->freed[b], cudaEventDisableTiming));
    }
    cudaCheck(cudaEventCreateWithFlags(&B->issued, cudaEventDisableTiming));
    B->cur = -1;
    cudaCheck(cudaStreamCreateWithFlags(&B->side, cudaStreamNonBlocking));
}

static void fsdp_buffers_free(FsdpBuffers* B) {
    cudaCheck(cudaStreamSynchronize(B->side));
    cudaCheck(cudaDeviceSynchronize());
    for (int i = 0; i < B->nmem; i++) cudaCheck(cudaFree(B->mem[i]));
    for (int b = 0; b < 2; b++) {
        cudaCheck(cudaEventDestroy(B->ready[b]));
        cudaCheck(cudaEventDestroy(B->freed[b]));
    }
    cudaCheck(cudaEventDestroy(B->issued));
    cudaCheck(cudaStreamDestroy(B->side));
    memset(B, 0, sizeof(*B));
}

// the provider of a Wan model sharded by L (shard_layout_wan of c, comm's world) over this rank's slices, gathering
// into the shared buffers B; s: the stream the model's activations run on. g_shard NULL: frozen. L32 (frozen only;
// NULL: the whole unit in fp32): gpu/frozen_weights.h shard_layout_wan_fp32 of L, and then w_shard holds this rank's
// slices of the packed fp32-read tensors ([L32->shard_numel]) and x_shard the floatX slices of every parameter (the
// fp32 build too). After it: W->units = &f->hook on a WanGpuWeights whose cfg is c.
static void fsdp_wan_init_shared(FsdpWan* f, Comm* comm, const ShardLayout* L, const ShardLayout* L32,
                                 const WanConfig* c, const float* w_shard, const floatX* x_shard, float* g_shard,
                                 cudaStream_t s, FsdpBuffers* B) {
    memset(f, 0, sizeof(*f));
    f->hook.gather = fsdp_gather_;
    f->hook.grads = fsdp_grads_;
    f->hook.done = fsdp_done_;
    f->comm = comm;
    f->L = *L;
    f->cfg = *c;
    f->n_wan_units = c->num_layers + 2;
    char m[400];
    if (L->K != comm->world || L->n_units < f->n_wan_units ||
        L->unit[f->n_wan_units - 1].offset + L->unit[f->n_wan_units - 1].numel != wan_num_params(c)) {
        snprintf(m, sizeof(m), "fsdp_wan_init: a layout of %d units over %d ranks is not %s's Wan units over %d ranks",
                 L->n_units, L->K, c->name, comm->world);
        comm_abort(comm, m);
    }
    if (L32 && (g_shard || L32->n_units != L->n_units || L32->K != L->K || L32->numel != wan_gpu_fp32_params(c))) {
        snprintf(m, sizeof(m),
                 "fsdp_wan_init: an fp32-read layout of %zu elements in %d units for a %s model; expected a frozen "
                 "model (no gradient) and shard_layout_wan_fp32 of its layout (%zu elements in %d units)",
                 L32->numel, L32->n_units, g_shard ? "trainable" : "frozen", wan_gpu_fp32_params(c), L->n_units);
        comm_abort(comm, m);
    }
    size_t need_w = L32 ? L32->max_unit_padded : L->max_unit_padded;
    size_t need_x = (L32 || !FSDP_FP32_BUILD_) ? L->max_unit_padded : 0;
    if (B->wide < need_w || B->narrow < need_x ||
        (g_shard && (B->emb_grad < shard_padded(L, 0) || B->grad < L->max_unit_padded))) {
        snprintf(m, sizeof(m),
                 "fsdp_wan_init: the shared buffers (%zu fp32, %zu floatX, %zu + %zu gradient elements) are smaller "
                 "than %s needs: give fsdp_buffers_init every model that shares them",
                 B->wide, B->narrow, B->emb_grad, B->grad, c->name);
        comm_abort(comm, m);
    }
    if (!L32 && FSDP_FP32_BUILD_) x_shard = (const floatX*)w_shard;
    f->w_shard = w_shard;
    f->x_shard = x_shard;
    f->g_shard = g_shard;
    f->s = s;
    f->B = B;
    wan_carve_view(c, &f->offsets, sizeof(f->offsets), (void*)FSDP_PROBE_, 1);
    if (L32) { // the fp32-read slots at their packed elements, in layout order (= the views' slot order, wan.h)
        f->L32 = *L32;
        memset(&f->offsets32, 0, sizeof(f->offsets32));
        WanTensor* t = (WanTensor*)malloc(sizeof(WanTensor) * WAN_MAX_TENSORS);
        if (!t) comm_abort(comm, "fsdp_wan_init: out of host memory for the layout table");
        int nt = wan_layout(c, t, NULL, NULL, NULL), i = 0;
        size_t packed = 0;
        for (size_t k = 0; k < sizeof(WanParamsF) / sizeof(void*); k++) {
            void* p;
            memcpy(&p, (const char*)&f->offsets + k * sizeof(void*), sizeof(p));
            if (!p) continue;
            if (i >= nt || (uintptr_t)p - FSDP_PROBE_ != t[i].offset)
                comm_abort(comm, "fsdp_wan_init: the views' slot order is not wan.h's layout order");
            if (wan_gpu_reads_fp32(t[i].name)) {
                void* q = (void*)(FSDP_PROBE_ + packed);
                memcpy((char*)&f->offsets32 + k * sizeof(void*), &q, sizeof(q));
                packed += t[i].numel;
            }
            i++;
        }
        free(t);
        if (i != nt || packed != L32->numel) comm_abort(comm, "fsdp_wan_init: the fp32-read tensors and L32 disagree");
    }
}

// the provider of a Wan model sharded by L (shard_layout_wan of c, comm's world) over this rank's slices, with a pair
// of buffers of its own; s: the stream the model's activations run on. g_shard NULL: frozen (the whole unit gathered
// in fp32 too). After it: W->units = &f->hook on a WanGpuWeights whose cfg is c.
static void fsdp_wan_init(FsdpWan* f, Comm* comm, const ShardLayout* L, const WanConfig* c, const float* w_shard,
                          const floatX* x_shard, float* g_shard, cudaStream_t s) {
    FsdpBuffers* own = (FsdpBuffers*)malloc(sizeof(FsdpBuffers));
    if (!own) comm_abort(comm, "fsdp_wan_init: out of host memory");
    ShardFsdpModel m = shard_fsdp_model(L, NULL, g_shard != NULL);
    fsdp_buffers_init(own, comm, &m, 1);
    fsdp_wan_init_shared(f, comm, L, NULL, c, w_shard, x_shard, g_shard, s, own);
    f->own = own;
}

// every gather done and this model's holds forgotten (its shards change under the optimizer: call after each step)
static void fsdp_wan_release(FsdpWan* f) {
    FsdpBuffers* B = f->B;
    cudaCheck(cudaStreamSynchronize(B->side));
    cudaCheck(cudaStreamSynchronize(f->s));
    for (int b = 0; b < 2; b++)
        if (B->owner[b] == f) B->owner[b] = NULL, B->held[b] = -1;
}

// the whole buffer of which shard [L.shard_numel] holds this rank's slices (the master weights, or a model's AdamW
// moment), consolidated into host [L.numel] on rank 0 (other ranks may pass NULL): every unit's slices all-gathered
// through the first gathered buffer, after the gathers are released (a collective: every rank calls it, the same
// order; what a checkpoint of a sharded model writes, the same file as a whole model's)
static void fsdp_wan_consolidate(FsdpWan* f, const float* shard, float* host) {
    FsdpBuffers* B = f->B;
    fsdp_wan_release(f);
    for (int b = 0; b < 2; b++) // the buffer is overwritten below, whichever model (sharing it) held it
        if (B->owner[b]) cudaCheck(cudaStreamSynchronize(B->reader[b]));
    B->owner[0] = NULL, B->held[0] = -1;
    for (int u = 0; u < f->L.n_units; u++) {
        const ShardUnit* x = &f->L.unit[u];
        comm_all_gather(f->comm, B->gathered[0], shard + x->shard_offset, x->slice, COMM_F32, f->s);
        if (f->comm->rank == 0)
            cudaCheck(cudaMemcpyAsync(host + x->offset, B->gathered[0], sizeof(float) * x->numel,
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
    if (f->own) {
        fsdp_buffers_free(f->own);
        free(f->own);
    }
    memset(f, 0, sizeof(*f));
}
