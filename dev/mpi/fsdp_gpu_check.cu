// dev/mpi/fsdp_gpu_check.cu: fully sharded training steps of a tiny Wan DiT (gpu/fsdp_gpu.cuh: per-unit all-gather of
// the weights, per-unit reduce-scatter of the gradients, AdamW on the slices) against the replicated step (every rank
// the whole model, gpu/wan_gpu.cuh's whole-model path, the gradients all-reduced, train_tmd's plain AdamW), every rank
// its own GPU and its own sample, bit for bit: the forward's output of every step on every rank, and the weights (and
// the bf16 copy) after the steps, gathered. Run with -np 1 it is the one-rank claim: the sharded path's gathers are
// copies and its sums the gradient itself, so it equals the whole-model path.
//   make dev/mpi/fsdp_gpu_check_sim && mpirun -np 2 /work/sim/run.sh dev/mpi/fsdp_gpu_check_sim    (dev/sim.md)
//   flags: --steps N (2), --recompute (per-block activation recompute: the backward's re-gather), --clip C (global-norm clipping),
//          --mutate wrong-unit | skip-rs (a deliberate fault the check must catch: block 1 run with block 0's gathered
//          weights; block 0's gradient never reduce-scattered)
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
static WanGpuUnits* inner_; static const char* mutate_ = "";
static WanGpuWeights wrong_;
static const WanGpuWeights* gather_mutated(WanGpuUnits* self, int u, int backward) {
    (void)self;
    if (!strcmp(mutate_, "wrong-unit") && u == 2) {   // block 1 asked for: block 0's weights handed out as block 1's
        wrong_ = *inner_->gather(inner_, 1, backward);
        wrong_.P.blocks[1] = wrong_.P.blocks[0]; wrong_.X.blocks[1] = wrong_.X.blocks[0];
        return &wrong_;
    }
    return inner_->gather(inner_, u, backward);
}
static WanParamsF* grads_mutated(WanGpuUnits* self, int u) { (void)self; return inner_->grads(inner_, u); }
static void done_mutated(WanGpuUnits* self, int u) {
    (void)self;
    if (!strcmp(mutate_, "skip-rs") && u == 1) { FsdpWan* f = (FsdpWan*)inner_; f->open[1] = -1; return; }   // block 0's gradient dropped
    inner_->done(inner_, u);
}

int main(int argc, char** argv) {
    Comm comm; comm_init(&comm, &argc, &argv);
    int K = comm.world, recompute = 0, steps = 2; double clip = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--recompute")) recompute = 1;
        else if (!strcmp(argv[i], "--clip") && i + 1 < argc) clip = atof(argv[++i]);
        else if (!strcmp(argv[i], "--mutate") && i + 1 < argc) mutate_ = argv[++i];
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoi(argv[++i]);
        else { fprintf(stderr, "fsdp_gpu_check: unknown argument '%s' (expected --recompute, --clip C, --steps N, --mutate wrong-unit|skip-rs)\n", argv[i]); return 2; }
    }
    wan_gpu_recompute = recompute;
    gemm_init();
    const WanConfig* c = &CHECK_CONFIG;
    int B = 1, T = 2, Hl = 4, Wl = 4;
    if (steps < 1) comm_abort(&comm, "--steps: expected at least 1");
    size_t n = wan_num_params(c), nx = (size_t)c->in_dim * T * Hl * Wl, no = (size_t)c->out_dim * T * Hl * Wl, nctx = (size_t)c->text_len * c->text_dim;
    char err[256]; ShardLayout L;
    if (shard_layout_wan(&L, c, 0, K, 4, err, sizeof(err))) comm_abort(&comm, err);
    if (comm.rank == 0)
        printf("fsdp_gpu_check: %d sharded training step%s of a %zu-parameter DiT (%d blocks, %d units, %zu a rank) on %d rank%s (%s, recompute %s, clip %g%s%s) "
               "against the replicated step\n", steps, steps > 1 ? "s" : "", n, c->num_layers, L.n_units, L.shard_numel, K, K > 1 ? "s" : "",
               sizeof(floatX) == 2 ? "bf16 build" : "fp32 build", recompute ? "on" : "off", clip, *mutate_ ? ", MUTATED: " : "", mutate_);

    // the same initial weights on every rank; every rank its own sample and output gradient
    float* init = upload(n, 0, 1, 0.2f);
    float* x = upload(nx, comm.rank, 2, 1.0f); float* ctx = upload(nctx, comm.rank, 3, 1.0f); float* dout = upload(no, comm.rank, 4, 1.0f);
    double t[1] = {300.0 + 100.0 * comm.rank};

    // replicated: the whole model on this rank
    WanGpuModel m; wan_gpu_model_init(&m, c, NULL, 1, "replicated");
    cudaCheck(cudaMemcpy(m.params, init, sizeof(float) * n, cudaMemcpyDeviceToDevice)); wan_gpu_model_refresh_copy(&m, 0);
    WanGpuAct a0; if (wan_gpu_act_init(&a0, c, B, c->in_dim, T, Hl, Wl, 1, err)) comm_abort(&comm, err);
    // sharded: this rank's slices (from a whole buffer here, freed below) and the provider
    float *m0, *v0; cudaCheck(cudaMalloc(&m0, sizeof(float) * n)); cudaCheck(cudaMalloc(&v0, sizeof(float) * n));
    cudaCheck(cudaMemset(m0, 0, sizeof(float) * n)); cudaCheck(cudaMemset(v0, 0, sizeof(float) * n));
    float* g1 = NULL; floatX* x1 = NULL;   // one rank: the slices are whole buffers (the aliased layout)
    float* p1 = upload(n, 0, 1, 0.2f);
    if (K == 1) {
        cudaCheck(cudaMalloc(&g1, sizeof(float) * n));
#ifdef ENABLE_FP32
        x1 = p1;
#else
        cudaCheck(cudaMalloc(&x1, sizeof(floatX) * n)); wan_gpu_cast_to_x(x1, p1, n, 0);
#endif
    }
    ShardOpt o; shard_opt_init(&o, &comm, &L, p1, g1, m0, v0, 0);
    if (K > 1) { cudaCheck(cudaDeviceSynchronize()); cudaCheck(cudaFree(p1)); cudaCheck(cudaFree(m0)); cudaCheck(cudaFree(v0)); p1 = NULL; }
#ifndef ENABLE_FP32
    if (K > 1) wan_gpu_cast_to_x(o.master_x, o.master, L.shard_numel, 0);   // the slices' bf16 copy (shard_opt_init leaves it to the step)
#endif
    const floatX* xs = K == 1 ? x1 : o.master_x;
    FsdpWan f; fsdp_wan_init(&f, &comm, &L, c, o.master, xs, o.g, 0);
    WanGpuUnits wrapped = {gather_mutated, grads_mutated, done_mutated}; inner_ = &f.hook;
    WanGpuWeights Wf; memset(&Wf, 0, sizeof(Wf)); Wf.cfg = *c; Wf.units = &wrapped;
    WanParamsF dmark; memset(&dmark, 0, sizeof(dmark));   // a non-NULL dW: the model is trainable (the provider supplies the views)
    WanGpuAct a1; if (wan_gpu_act_init(&a1, c, B, c->in_dim, T, Hl, Wl, 1, err)) comm_abort(&comm, err);

    double* scratch; cudaCheck(cudaMalloc(&scratch, sizeof(double) * (ADAMW_NORM_BLOCKS + 1)));
    float* ha = (float*)malloc(sizeof(float) * (n > no ? n : no)); float* hb = (float*)malloc(sizeof(float) * (n > no ? n : no));
    int failures = 0; double gscale = 1.0 / K;
    for (long step = 1; step <= steps; step++) {
        // replicated
        cudaCheck(cudaMemset(m.grads, 0, sizeof(float) * n));
        wan_gpu_forward(&a0, &m.w, x, t, ctx);
        wan_gpu_backward(&m.dP, NULL, NULL, dout, &a0, &m.w);
        comm_all_reduce(&comm, m.grads, n, COMM_F32, 0);
        adamw_grad_norm_squared(scratch, scratch + 1, m.grads, n, 0);
        double n2; cudaCheck(cudaMemcpy(&n2, scratch, sizeof(double), cudaMemcpyDeviceToHost));
        double gn0 = sqrt(n2) * gscale, k = (clip > 0 ? fmin(1.0, clip / (gn0 + 1e-6)) : 1.0) * gscale;
#ifdef ENABLE_FP32
        floatX* cx = NULL;
#else
        floatX* cx = m.params_x;
#endif
        adamw_update(m.params, cx, m.opt_m, m.opt_v, m.grads, n, (float)1e-2, 0.9f, 0.99f, 1e-8f, (float)0.01, (float)k, step, 0);
        // sharded
        cudaCheck(cudaMemset(o.g, 0, sizeof(float) * L.shard_numel));
        wan_gpu_forward(&a1, &Wf, x, t, ctx);
        wan_gpu_backward(&dmark, NULL, NULL, dout, &a1, &Wf);
        double gn1;
        shard_opt_step(&o, &comm, K == 1 ? p1 : NULL, K == 1 ? x1 : NULL, NULL, 1e-2, 0.01, clip, step, gscale, scratch, &gn1, 0);
        fsdp_wan_release(&f);
        cudaCheck(cudaDeviceSynchronize());
        cudaCheck(cudaMemcpy(ha, a0.out, sizeof(float) * no, cudaMemcpyDeviceToHost)); cudaCheck(cudaMemcpy(hb, a1.out, sizeof(float) * no, cudaMemcpyDeviceToHost));
        size_t dif = 0; for (size_t i = 0; i < no; i++) dif += ha[i] != hb[i];
        printf("  [rank %d] step %ld: forward output %zu of %zu differ, gradient norm %.17g / %.17g%s\n", comm.rank, step, dif, no, gn0, gn1, dif || gn0 != gn1 ? "  DIFFER" : "");
        failures += dif != 0 || gn0 != gn1;
    }
    // the weights: every unit's slices gathered (fp32, and the bf16 copy) against the replicated model's
    size_t dw = 0, dx = 0;
    float* gath; cudaCheck(cudaMalloc(&gath, sizeof(float) * L.max_unit_padded));
    for (int u = 0; u < L.n_units; u++) {
        const ShardUnit* x_ = &L.unit[u];
        comm_all_gather(&comm, gath, o.master + x_->shard_offset, x_->slice, COMM_F32, 0);
        cudaCheck(cudaMemcpy(ha, gath, sizeof(float) * x_->numel, cudaMemcpyDeviceToHost));
        cudaCheck(cudaMemcpy(hb, m.params + x_->offset, sizeof(float) * x_->numel, cudaMemcpyDeviceToHost));
        for (size_t i = 0; i < x_->numel; i++) dw += ha[i] != hb[i];
#ifndef ENABLE_FP32
        comm_all_gather(&comm, gath, xs + x_->shard_offset, x_->slice, COMM_BF16, 0);
        cudaCheck(cudaMemcpy(ha, gath, sizeof(floatX) * x_->numel, cudaMemcpyDeviceToHost));
        cudaCheck(cudaMemcpy(hb, m.params_x + x_->offset, sizeof(floatX) * x_->numel, cudaMemcpyDeviceToHost));
        dx += memcmp(ha, hb, sizeof(floatX) * x_->numel) != 0;
#endif
    }
    printf("  [rank %d] after %d steps: %zu of %zu weights differ%s; %ld unit gathers (prefetches included)%s\n", comm.rank, steps, dw, n,
           sizeof(floatX) == 2 ? (dx ? ", the bf16 copy DIFFERS" : ", the bf16 copy the same") : "", f.gathers, dw || dx ? "  DIFFER" : "");
    failures += dw != 0 || dx != 0;
    fflush(stdout);
    comm_barrier(&comm, 0);
    if (comm.rank == 0) printf("fsdp_gpu_check: rank 0 %s (every rank exits 1 on a difference of its own)\n", failures ? "FAILED" : "ok");
    fsdp_wan_free(&f); shard_opt_free(&o); wan_gpu_act_free(&a0); wan_gpu_act_free(&a1); wan_gpu_model_free(&m);
    comm_finalize(&comm);
    return failures ? 1 : 0;
}
