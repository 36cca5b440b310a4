// dev/mpi/fsdp_gpu_check.cu: fully sharded training steps of a tiny Wan DiT (gpu/fsdp_gpu.cuh: per-unit all-gather of
// the weights, per-unit reduce-scatter of the gradients, AdamW on the slices) against the replicated step (every rank
// the whole model, gpu/wan_gpu.cuh's whole-model path, the gradients all-reduced, train_tmd's plain AdamW), every rank
// its own GPU and its own sample, bit for bit: the forward's output of every step on every rank, and the weights (and
// the bf16 copy) after the steps, gathered. Run with -np 1 it is the one-rank claim: the sharded path's gathers are
// copies and its sums the gradient itself, so it equals the whole-model path.
// --shared: three models share ONE pair of gathered units and unit gradients (fsdp_buffers_init,
// fsdp_wan_init_shared), interleaved as a distillation step interleaves them: two trainable models A and B (other
// weights, other samples) and a frozen bf16-only model Z (its floatX slices and the fp32-read tensors' own layout,
// gpu/frozen_weights.h shard_layout_wan_fp32), run forward A, B, Z, then backward A, Z (its input gradient only), B;
// checked: every output, Z's input gradient, A's and B's gradient norms and weights against whole models (Z: a whole
// frozen model, wan_gpu_model_init). In the fp32 build Z's floatX slices are fp32, and its fp32 views are still only
// the packed layout's (every other fp32 view NULL), so a read outside the layout faults here too.
//   make dev/mpi/fsdp_gpu_check_sim && mpirun -np 2 /work/sim/run.sh dev/mpi/fsdp_gpu_check_sim    (dev/sim.md)
//   flags: --steps N (2), --recompute (per-block activation recompute: the backward's re-gather), --clip C (global-norm clipping),
//          --shared (above), --mutate wrong-unit | skip-rs | trust-hold | drop-fp32 (a deliberate fault the check must
//          catch: block 1 run with block 0's gathered weights; block 0's gradient never reduce-scattered; a model
//          trusting a buffer's hold of its unit that another model's gather made (its view taken over, as one shared
//          view per buffer would); the frozen model's fp32 view of block 0's norm3 bias dropped from its layout)
// Exit 1 on any difference.
#include "../../gpu/fsdp_gpu.cuh"

static const WanConfig CHECK_CONFIG = {"fsdp-check", 64, 96, 32, 4, 2, 3, 3, {1, 2, 2}, 6, 24, 1e-6};   // test_gpu's parity config

static float value(int r, size_t i, int salt) {
    uint64_t h = (uint64_t)(r + 1) * 0x9E3779B97F4A7C15ull ^ (uint64_t)i * 0xBF58476D1CE4E5B9ull ^ (uint64_t)salt * 0x94D049BB133111EBull;
    h ^= h >> 31; h *= 0xD6E8FEB86CD9B5D3ull; h ^= h >> 29;
    return (float)(((double)(h % 2001) - 1000.0) / 1000.0);
}
static float* upload(size_t n, int r, int salt, float scale) {
    float* h = (float*)malloc(sizeof(float) * n); float* d;
    for (size_t i = 0; i < n; i++) h[i] = scale * value(r, i, salt);
    cudaCheck(cudaMalloc(&d, sizeof(float) * n)); cudaCheck(cudaMemcpy(d, h, sizeof(float) * n, cudaMemcpyHostToDevice));
    free(h); return d;
}

// the deliberate faults: the provider's hook wrapped
static const char* mutate_ = "";
typedef struct {
    WanGpuUnits hook; // first member
    FsdpWan* f;
    int first; // the check's first model (the wrong-unit and skip-rs faults are its)
} Wrap;
static WanGpuWeights wrong_;
static const WanGpuWeights* gather_mutated(WanGpuUnits* self, int u, int backward) {
    Wrap* w = (Wrap*)self;
    FsdpWan* f = w->f;
    if (w->first && !strcmp(mutate_, "wrong-unit") && u == 2) { // block 1 asked for: block 0's weights handed out as block 1's
        wrong_ = *f->hook.gather(&f->hook, 1, backward);
        wrong_.P.blocks[1] = wrong_.P.blocks[0]; wrong_.X.blocks[1] = wrong_.X.blocks[0];
        return &wrong_;
    }
    if (!strcmp(mutate_, "trust-hold")) // a hold of unit u by another model taken as this model's (the model tag ignored)
        for (int b = 0; b < 2; b++)
            if (f->B->held[b] == u && f->B->owner[b] && f->B->owner[b] != f) {
                f->view[b] = ((const FsdpWan*)f->B->owner[b])->view[b];
                f->B->owner[b] = f;
            }
    return f->hook.gather(&f->hook, u, backward);
}
static WanParamsF* grads_mutated(WanGpuUnits* self, int u) { FsdpWan* f = ((Wrap*)self)->f; return f->hook.grads(&f->hook, u); }
static void done_mutated(WanGpuUnits* self, int u) {
    Wrap* w = (Wrap*)self;
    FsdpWan* f = w->f;
    if (w->first && !strcmp(mutate_, "skip-rs") && u == 1) { f->B->open[1] = -1; f->B->gowner[1] = NULL; return; } // block 0's gradient dropped
    f->hook.done(&f->hook, u);
}

enum { BATCH = 1, LT = 2, LH = 4, LW = 4 };

// one model of the check: the replicated reference and the sharded twin
typedef struct {
    const char* name;
    int trainable;
    WanGpuModel m;         // the whole model (the reference)
    WanGpuAct a0, a1;      // the reference's activations, the sharded model's
    ShardOpt o;            // trainable: the slices and their optimizer
    float *p1, *g1;        // one rank: the whole buffers the slices alias
    floatX* x1;
    float *z32;            // frozen: this rank's fp32-read slices (packed layout)
    floatX* zx;            // frozen: this rank's floatX slices
    ShardLayout L32;
    FsdpWan f;
    Wrap wrap;
    WanGpuWeights Wf;
    float *x, *ctx, *dout, *dx0, *dx1;
    double t[1];
} Model;

static void model_init(Model* M, const char* name, int trainable, int salt, Comm* comm, const ShardLayout* L, FsdpBuffers* B, int first) {
    const WanConfig* c = &CHECK_CONFIG;
    char err[256];
    memset(M, 0, sizeof(*M));
    M->name = name; M->trainable = trainable;
    int K = comm->world;
    size_t n = wan_num_params(c), nx = (size_t)c->in_dim * LT * LH * LW, no = (size_t)c->out_dim * LT * LH * LW, nctx = (size_t)c->text_len * c->text_dim;
    // the same initial weights on every rank; every rank its own sample and output gradient
    int o = 10 * (salt - 1); // model A (salt 1): the inputs of the one-model check
    M->x = upload(nx, comm->rank, 2 + o, 1.0f); M->ctx = upload(nctx, comm->rank, 3 + o, 1.0f); M->dout = upload(no, comm->rank, 4 + o, 1.0f);
    M->t[0] = 300.0 + 100.0 * comm->rank + 5.0 * o;
    if (wan_gpu_act_init(&M->a0, c, BATCH, c->in_dim, LT, LH, LW, 1, err) || wan_gpu_act_init(&M->a1, c, BATCH, c->in_dim, LT, LH, LW, 1, err)) comm_abort(comm, err);
    memset(&M->Wf, 0, sizeof(M->Wf)); M->Wf.cfg = *c;
    M->wrap.hook.gather = gather_mutated; M->wrap.hook.grads = grads_mutated; M->wrap.hook.done = done_mutated; M->wrap.f = &M->f; M->wrap.first = first;
    M->Wf.units = &M->wrap.hook;
    if (trainable) {
        float* init = upload(n, 0, salt, 0.2f);
        wan_gpu_model_init(&M->m, c, NULL, 1, name);
        cudaCheck(cudaMemcpy(M->m.params, init, sizeof(float) * n, cudaMemcpyDeviceToDevice)); wan_gpu_model_refresh_copy(&M->m, 0);
        cudaCheck(cudaFree(init));
        // sharded: this rank's slices (from a whole buffer here, freed below) and the provider
        float *m0, *v0; cudaCheck(cudaMalloc(&m0, sizeof(float) * n)); cudaCheck(cudaMalloc(&v0, sizeof(float) * n));
        cudaCheck(cudaMemset(m0, 0, sizeof(float) * n)); cudaCheck(cudaMemset(v0, 0, sizeof(float) * n));
        M->p1 = upload(n, 0, salt, 0.2f);
        if (K == 1) {   // one rank: the slices are whole buffers (the aliased layout)
            cudaCheck(cudaMalloc(&M->g1, sizeof(float) * n));
#ifdef ENABLE_FP32
            M->x1 = M->p1;
#else
            cudaCheck(cudaMalloc(&M->x1, sizeof(floatX) * n)); wan_gpu_cast_to_x(M->x1, M->p1, n, 0);
#endif
        }
        shard_opt_init(&M->o, comm, L, M->p1, M->g1, m0, v0, 0);
        if (K > 1) { cudaCheck(cudaDeviceSynchronize()); cudaCheck(cudaFree(M->p1)); cudaCheck(cudaFree(m0)); cudaCheck(cudaFree(v0)); M->p1 = NULL; }
#ifndef ENABLE_FP32
        if (K > 1) wan_gpu_cast_to_x(M->o.master_x, M->o.master, L->shard_numel, 0);   // the slices' bf16 copy (shard_opt_init leaves it to the step)
#endif
        const floatX* xs = K == 1 ? M->x1 : M->o.master_x;
        if (B) fsdp_wan_init_shared(&M->f, comm, L, NULL, c, M->o.master, xs, M->o.g, 0, B);
        else fsdp_wan_init(&M->f, comm, L, c, M->o.master, xs, M->o.g, 0);
        return;
    }
    // frozen bf16-only: the whole frozen model from host weights; the slices: floatX of every parameter, fp32 of the
    // fp32-read tensors' own layout
    float* h = (float*)malloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++) h[i] = 0.2f * value(0, i, salt);
    wan_gpu_model_init(&M->m, c, h, 0, name);
    if (shard_layout_wan_fp32(&M->L32, L, c, err, sizeof(err))) comm_abort(comm, err);
    size_t n32 = wan_gpu_fp32_params(c), big = L->shard_numel > M->L32.shard_numel ? L->shard_numel : M->L32.shard_numel;
    float* packed = (float*)malloc(sizeof(float) * n32); float* sh = (float*)malloc(sizeof(float) * big); float* d;
    wan_fp32_pack_host(c, h, packed);
    shard_scatter_host(&M->L32, comm->rank, packed, sh, sizeof(float));
    cudaCheck(cudaMalloc(&M->z32, sizeof(float) * M->L32.shard_numel));
    cudaCheck(cudaMemcpy(M->z32, sh, sizeof(float) * M->L32.shard_numel, cudaMemcpyHostToDevice));
    shard_scatter_host(L, comm->rank, h, sh, sizeof(float));
    cudaCheck(cudaMalloc(&d, sizeof(float) * L->shard_numel));
    cudaCheck(cudaMemcpy(d, sh, sizeof(float) * L->shard_numel, cudaMemcpyHostToDevice));
#ifdef ENABLE_FP32
    M->zx = d;
#else
    cudaCheck(cudaMalloc(&M->zx, sizeof(floatX) * L->shard_numel)); wan_gpu_cast_to_x(M->zx, d, L->shard_numel, 0);
    cudaCheck(cudaDeviceSynchronize()); cudaCheck(cudaFree(d));
#endif
    free(h); free(packed); free(sh);
    fsdp_wan_init_shared(&M->f, comm, L, &M->L32, c, M->z32, M->zx, NULL, 0, B);
    if (!strcmp(mutate_, "drop-fp32")) { // block 0's norm3 bias left out of the fp32 layout: its fp32 view NULL
        M->f.offsets32.blocks[0].norm3_bias = NULL;
        printf("  [rank %d] MUTATED: %s's block 0 norm3 bias has no fp32 view\n", comm->rank, name);
    }
    cudaCheck(cudaMalloc(&M->dx0, sizeof(float) * nx)); cudaCheck(cudaMalloc(&M->dx1, sizeof(float) * nx));
}

int main(int argc, char** argv) {
    Comm comm; comm_init(&comm, &argc, &argv);
    int K = comm.world, recompute = 0, steps = 2, shared = 0; double clip = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--recompute")) recompute = 1;
        else if (!strcmp(argv[i], "--shared")) shared = 1;
        else if (!strcmp(argv[i], "--clip") && i + 1 < argc) clip = atof(argv[++i]);
        else if (!strcmp(argv[i], "--mutate") && i + 1 < argc) mutate_ = argv[++i];
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoi(argv[++i]);
        else { fprintf(stderr, "fsdp_gpu_check: unknown argument '%s' (expected --recompute, --shared, --clip C, --steps N, --mutate wrong-unit|skip-rs|trust-hold|drop-fp32)\n", argv[i]); return 2; }
    }
    if (*mutate_ && strcmp(mutate_, "wrong-unit") && strcmp(mutate_, "skip-rs") && strcmp(mutate_, "trust-hold") && strcmp(mutate_, "drop-fp32")) {
        fprintf(stderr, "fsdp_gpu_check: --mutate '%s': expected wrong-unit, skip-rs, trust-hold or drop-fp32\n", mutate_); return 2;
    }
    if (!shared && (!strcmp(mutate_, "trust-hold") || !strcmp(mutate_, "drop-fp32"))) { fprintf(stderr, "fsdp_gpu_check: --mutate %s needs --shared\n", mutate_); return 2; }
    wan_gpu_recompute = recompute;
    gemm_init();
    const WanConfig* c = &CHECK_CONFIG;
    if (steps < 1) comm_abort(&comm, "--steps: expected at least 1");
    size_t n = wan_num_params(c), nx = (size_t)c->in_dim * LT * LH * LW, no = (size_t)c->out_dim * LT * LH * LW;
    char err[256]; ShardLayout L;
    if (shard_layout_wan(&L, c, 0, K, 4, err, sizeof(err))) comm_abort(&comm, err);
    if (comm.rank == 0)
        printf("fsdp_gpu_check: %d sharded training step%s of a %zu-parameter DiT (%d blocks, %d units, %zu a rank) on %d rank%s (%s, recompute %s, clip %g%s%s%s) "
               "against the replicated step\n", steps, steps > 1 ? "s" : "", n, c->num_layers, L.n_units, L.shard_numel, K, K > 1 ? "s" : "",
               sizeof(floatX) == 2 ? "bf16 build" : "fp32 build", recompute ? "on" : "off", clip,
               shared ? ", shared buffers: trainable A and B, frozen bf16-only Z" : "", *mutate_ ? ", MUTATED: " : "", mutate_);

    Model M[3]; int nm = shared ? 3 : 1;
    FsdpBuffers B; ShardLayout L32;
    if (shared) { // the buffers sized for the three models (lib/shard.h shard_fsdp_shared_buffers)
        if (shard_layout_wan_fp32(&L32, &L, c, err, sizeof(err))) comm_abort(&comm, err);
        ShardFsdpModel users[3] = {shard_fsdp_model(&L, NULL, 1), shard_fsdp_model(&L, NULL, 1), shard_fsdp_model(&L, &L32, 0)};
        fsdp_buffers_init(&B, &comm, users, 3);
        if (comm.rank == 0)
            printf("  shared buffers: 2 x %zu fp32, 2 x %zu floatX, %zu + %zu gradient elements (Z's fp32-read layout: %zu of %zu parameters, %zu a rank)\n",
                   B.wide, B.narrow, B.emb_grad, B.grad, L32.numel, n, L32.shard_numel);
    }
    model_init(&M[0], "A", 1, 1, &comm, &L, shared ? &B : NULL, 1);
    if (shared) { model_init(&M[1], "B", 1, 5, &comm, &L, &B, 0); model_init(&M[2], "Z", 0, 7, &comm, &L, &B, 0); }
    WanParamsF dmark; memset(&dmark, 0, sizeof(dmark));   // a non-NULL dW: the model is trainable (the provider supplies the views)
    static const int fwd[3] = {0, 1, 2}, bwd[3] = {0, 2, 1}; // forward A, B, Z; backward A, Z, B

    double* scratch; cudaCheck(cudaMalloc(&scratch, sizeof(double) * (ADAMW_NORM_BLOCKS + 1)));
    size_t big = n > no ? n : no; if (nx > big) big = nx;
    float* ha = (float*)malloc(sizeof(float) * big); float* hb = (float*)malloc(sizeof(float) * big);
    int failures = 0; double gscale = 1.0 / K;
    for (long step = 1; step <= steps; step++) {
        // replicated
        for (int i = 0; i < nm; i++) if (M[i].trainable) cudaCheck(cudaMemset(M[i].m.grads, 0, sizeof(float) * n));
        for (int j = 0; j < nm; j++) { Model* X = &M[fwd[j]]; wan_gpu_forward(&X->a0, &X->m.w, X->x, X->t, X->ctx); }
        for (int j = 0; j < nm; j++) {
            Model* X = &M[bwd[j]];
            if (X->trainable) wan_gpu_backward(&X->m.dP, NULL, NULL, X->dout, &X->a0, &X->m.w);
            else { cudaCheck(cudaMemset(X->dx0, 0, sizeof(float) * nx)); wan_gpu_backward(NULL, X->dx0, NULL, X->dout, &X->a0, &X->m.w); }
        }
        double gn0[3] = {0, 0, 0}, gn1[3] = {0, 0, 0};
        for (int i = 0; i < nm; i++) {
            Model* X = &M[i];
            if (!X->trainable) continue;
            comm_all_reduce(&comm, X->m.grads, n, COMM_F32, 0);
            adamw_grad_norm_squared(scratch, scratch + 1, X->m.grads, n, 0);
            double n2; cudaCheck(cudaMemcpy(&n2, scratch, sizeof(double), cudaMemcpyDeviceToHost));
            gn0[i] = sqrt(n2) * gscale;
            double k = (clip > 0 ? fmin(1.0, clip / (gn0[i] + 1e-6)) : 1.0) * gscale;
#ifdef ENABLE_FP32
            floatX* cx = NULL;
#else
            floatX* cx = X->m.params_x;
#endif
            adamw_update(X->m.params, cx, X->m.opt_m, X->m.opt_v, X->m.grads, n, (float)1e-2, 0.9f, 0.99f, 1e-8f, (float)0.01, (float)k, step, 0);
        }
        // sharded, in the same order through the shared buffers
        for (int i = 0; i < nm; i++) if (M[i].trainable) cudaCheck(cudaMemset(M[i].o.g, 0, sizeof(float) * L.shard_numel));
        for (int j = 0; j < nm; j++) { Model* X = &M[fwd[j]]; wan_gpu_forward(&X->a1, &X->Wf, X->x, X->t, X->ctx); }
        for (int j = 0; j < nm; j++) {
            Model* X = &M[bwd[j]];
            if (X->trainable) wan_gpu_backward(&dmark, NULL, NULL, X->dout, &X->a1, &X->Wf);
            else { cudaCheck(cudaMemset(X->dx1, 0, sizeof(float) * nx)); wan_gpu_backward(NULL, X->dx1, NULL, X->dout, &X->a1, &X->Wf); }
        }
        for (int i = 0; i < nm; i++) {
            Model* X = &M[i];
            if (!X->trainable) continue;
            shard_opt_step(&X->o, &comm, K == 1 ? X->p1 : NULL, K == 1 ? X->x1 : NULL, NULL, 1e-2, 0.01, clip, step, gscale, scratch, &gn1[i], 0);
            fsdp_wan_release(&X->f);
        }
        cudaCheck(cudaDeviceSynchronize());
        for (int i = 0; i < nm; i++) {
            Model* X = &M[i];
            cudaCheck(cudaMemcpy(ha, X->a0.out, sizeof(float) * no, cudaMemcpyDeviceToHost)); cudaCheck(cudaMemcpy(hb, X->a1.out, sizeof(float) * no, cudaMemcpyDeviceToHost));
            size_t dif = 0, ddx = 0; for (size_t q = 0; q < no; q++) dif += ha[q] != hb[q];
            if (X->trainable)
                printf("  [rank %d] step %ld%s%s: forward output %zu of %zu differ, gradient norm %.17g / %.17g%s\n", comm.rank, step, shared ? ", model " : "", shared ? X->name : "",
                       dif, no, gn0[i], gn1[i], dif || gn0[i] != gn1[i] ? "  DIFFER" : "");
            else {
                cudaCheck(cudaMemcpy(ha, X->dx0, sizeof(float) * nx, cudaMemcpyDeviceToHost)); cudaCheck(cudaMemcpy(hb, X->dx1, sizeof(float) * nx, cudaMemcpyDeviceToHost));
                for (size_t q = 0; q < nx; q++) ddx += ha[q] != hb[q];
                printf("  [rank %d] step %ld, model %s (frozen, bf16-only layout): forward output %zu of %zu differ, input gradient %zu of %zu differ%s\n",
                       comm.rank, step, X->name, dif, no, ddx, nx, dif || ddx ? "  DIFFER" : "");
            }
            failures += dif != 0 || ddx != 0 || gn0[i] != gn1[i];
        }
    }
    // the weights: every unit's slices gathered (fp32, and the bf16 copy) against the replicated model's
    float* gath; cudaCheck(cudaMalloc(&gath, sizeof(float) * L.max_unit_padded));
    for (int i = 0; i < nm; i++) {
        Model* X = &M[i];
        if (!X->trainable) continue;
        size_t dw = 0, dx = 0;
#ifndef ENABLE_FP32
        const floatX* xs = K == 1 ? X->x1 : X->o.master_x;
#endif
        for (int u = 0; u < L.n_units; u++) {
            const ShardUnit* x_ = &L.unit[u];
            comm_all_gather(&comm, gath, X->o.master + x_->shard_offset, x_->slice, COMM_F32, 0);
            cudaCheck(cudaMemcpy(ha, gath, sizeof(float) * x_->numel, cudaMemcpyDeviceToHost));
            cudaCheck(cudaMemcpy(hb, X->m.params + x_->offset, sizeof(float) * x_->numel, cudaMemcpyDeviceToHost));
            for (size_t q = 0; q < x_->numel; q++) dw += ha[q] != hb[q];
#ifndef ENABLE_FP32
            comm_all_gather(&comm, gath, xs + x_->shard_offset, x_->slice, COMM_BF16, 0);
            cudaCheck(cudaMemcpy(ha, gath, sizeof(floatX) * x_->numel, cudaMemcpyDeviceToHost));
            cudaCheck(cudaMemcpy(hb, X->m.params_x + x_->offset, sizeof(floatX) * x_->numel, cudaMemcpyDeviceToHost));
            dx += memcmp(ha, hb, sizeof(floatX) * x_->numel) != 0;
#endif
        }
        printf("  [rank %d]%s%s after %d steps: %zu of %zu weights differ%s; %ld unit gathers (prefetches included)%s\n", comm.rank, shared ? " model " : "", shared ? X->name : "", steps, dw, n,
               sizeof(floatX) == 2 ? (dx ? ", the bf16 copy DIFFERS" : ", the bf16 copy the same") : "", X->f.gathers, dw || dx ? "  DIFFER" : "");
        failures += dw != 0 || dx != 0;
    }
    if (shared) printf("  [rank %d] model Z: %ld unit gathers\n", comm.rank, M[2].f.gathers);
    fflush(stdout);
    comm_barrier(&comm, 0);
    if (comm.rank == 0) printf("fsdp_gpu_check: rank 0 %s (every rank exits 1 on a difference of its own)\n", failures ? "FAILED" : "ok");
    for (int i = 0; i < nm; i++) {
        fsdp_wan_free(&M[i].f);
        if (M[i].trainable) shard_opt_free(&M[i].o);
        wan_gpu_act_free(&M[i].a0); wan_gpu_act_free(&M[i].a1); wan_gpu_model_free(&M[i].m);
    }
    if (shared) fsdp_buffers_free(&B);
    comm_finalize(&comm);
    return failures ? 1 : 0;
}
