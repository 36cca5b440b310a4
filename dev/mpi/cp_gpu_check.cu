// dev/mpi/cp_gpu_check.cu: context parallelism's DiT forward and backward (gpu/wan_gpu.cuh with WanGpuActOpts.cp,
// gpu/cp_gpu.cuh) on K ranks against the same model on one rank, every rank its own GPU. Every rank runs both: the
// plain plan over the whole sequence, then the plan of its L/K tokens with the group of all ranks; batch 3 (not
// the group's size: a permutation with its two axes swapped then moves other elements), a tiny DiT, with and without
// per-block recompute; with recompute also a forward-only plan that borrows the training plan's block set.
//   the velocity      bit for bit: every per-token layer sees the same values, the attention over whole sequences of
//                     each head is the serial one (the all-to-alls move bits), and the head's rows are gathered
//   the latent's gradient  bit for bit after the sum over the group (each latent element is one token's, the other
//                     ranks add zeros)
//   parameter and context gradients  within fp32 rounding: each rank sums its tokens' part, the group sums the parts,
//                     so the sums over tokens run in another order than the serial kernels' (the check prints the worst
//                     difference relative to the tensor's largest gradient, and fails above 1e-5)
//   make dev/mpi/cp_gpu_check_sim && mpirun -np 2 /work/sim/run.sh dev/mpi/cp_gpu_check_sim   (dev/sim.md)
// Exit 1 on any failure.
#include "../../gpu/wan_gpu.cuh"
#include "../../lib/rng.h"
#include "../../lib/random_params.h"

static const WanConfig CFG = {"cp-check", 32, 48, 32, 4, 2, 3, 3, {1, 2, 2}, 5, 16, 1e-6};   // head dim 8, 2 blocks

static float* upload(const float* h, size_t n) { float* d; cudaCheck(cudaMalloc(&d, sizeof(float) * n)); cudaCheck(cudaMemcpy(d, h, sizeof(float) * n, cudaMemcpyHostToDevice)); return d; }
static float* download(const float* d, size_t n) { float* h = (float*)malloc(sizeof(float) * n); cudaCheck(cudaMemcpy(h, d, sizeof(float) * n, cudaMemcpyDeviceToHost)); return h; }

// differing elements, and the worst |a − b| / max|b|
static size_t compare(const float* a, const float* b, size_t n, double* worst) {
    size_t diff = 0; double mx = 0, w = 0;
    for (size_t i = 0; i < n; i++) { if (fabs(b[i]) > mx) mx = fabs(b[i]); }
    for (size_t i = 0; i < n; i++) {
        if (memcmp(&a[i], &b[i], 4)) diff++;
        double d = fabs((double)a[i] - b[i]) / (mx > 0 ? mx : 1);
        if (!(d <= w)) w = d;   // NaN counts as worst
    }
    *worst = w; return diff;
}

int main(int argc, char** argv) {
    Comm world; comm_init(&world, &argc, &argv);
    Comm grp; comm_split(&world, &grp, 0, world.rank);   // one group: every rank shares each sample
    gemm_init();
    const WanConfig* c = &CFG;
    int B = 3, T = 2, Hl = 4, Wl = 4;   // 2 x 2 x 2 = 8 tokens a sample
    size_t np = wan_num_params(c), nx = (size_t)B * c->in_dim * T * Hl * Wl, no = (size_t)B * c->out_dim * T * Hl * Wl, nctx = (size_t)B * c->text_len * c->text_dim;
    real* hp = (real*)calloc(np, sizeof(real)); random_params(c, hp, 11);
    float* pf = (float*)malloc(sizeof(float) * np); for (size_t i = 0; i < np; i++) pf[i] = (float)hp[i];
    Rng r = rng_make(12);
    float *hx = (float*)malloc(sizeof(float) * nx), *hd = (float*)malloc(sizeof(float) * no), *hc = (float*)calloc(nctx, sizeof(float));
    for (size_t i = 0; i < nx; i++) hx[i] = (float)rng_normal(&r);
    for (size_t i = 0; i < no; i++) hd[i] = (float)rng_normal(&r);
    for (int b = 0; b < B; b++) for (size_t i = 0; i < (size_t)(c->text_len - b) * c->text_dim; i++) hc[(size_t)b * c->text_len * c->text_dim + i] = (float)rng_normal(&r);
    double ts[3] = {731.0, 142.5, 9.0};
    float *d_x = upload(hx, nx), *d_dout = upload(hd, no), *d_ctx = upload(hc, nctx), *dx, *dctx;
    cudaCheck(cudaMalloc(&dx, sizeof(float) * nx)); cudaCheck(cudaMalloc(&dctx, sizeof(float) * nctx));
    WanGpuModel m; wan_gpu_model_init(&m, c, pf, 1, "cp-check");
    char err[ST_ERRLEN];
    if (world.rank == 0) printf("cp_gpu_check: the DiT's forward and backward with context parallelism over %d rank%s against one rank, config %s "
                                "(dim %d, %d heads of %d, %d blocks), batch %d, %d tokens a sample, %s, %s attention\n",
                                grp.world, grp.world > 1 ? "s" : "", c->name, c->dim, c->num_heads, wan_head_dim(c), c->num_layers, B,
                                (T / c->patch[0]) * (Hl / c->patch[1]) * (Wl / c->patch[2]), FLOATX_NAME, wan_gpu_use_flash(c) ? "flash" : "naive");
    int failures = 0;
    for (int rc = 0; rc <= 1; rc++) {
        wan_gpu_recompute = rc;
        float* got[2][4]; size_t plain_bytes = 0; float* fwd[2] = {NULL, NULL};
        for (int mode = 0; mode < 2; mode++) {   // 0: the whole sequence on this rank; 1: its tokens, the group sharing each sample
            WanGpuActOpts o; memset(&o, 0, sizeof(o)); o.cp = mode ? &grp : NULL;
            WanGpuAct a; if (wan_gpu_act_init_opts(&a, c, B, c->in_dim, T, Hl, Wl, 1, &o, err)) comm_abort(&world, err);
            cudaCheck(cudaMemset(m.grads, 0, sizeof(float) * np)); cudaCheck(cudaMemset(dx, 0, sizeof(float) * nx)); cudaCheck(cudaMemset(dctx, 0, sizeof(float) * nctx));
            wan_gpu_forward(&a, &m.w, d_x, ts, d_ctx);
            got[mode][0] = download(a.out, no);
            wan_gpu_backward(&m.dP, dx, dctx, d_dout, &a, &m.w);
            if (mode) {   // the parts of the group's ranks summed (what the training step's all-reduce of the gradients does)
                comm_all_reduce(&grp, m.grads, np, COMM_F32, a.stream); comm_all_reduce(&grp, dx, nx, COMM_F32, a.stream);
                comm_all_reduce(&grp, dctx, nctx, COMM_F32, a.stream);
            }
            cudaCheck(cudaStreamSynchronize(a.stream));
            got[mode][1] = download(dx, nx); got[mode][2] = download(m.grads, np); got[mode][3] = download(dctx, nctx);
            if (rc) {   // a forward-only plan borrowing this recomputing plan's block set (as TM-MF's unconditional pass does)
                WanGpuActOpts f = o; f.share = &a; WanGpuAct u;
                if (wan_gpu_act_init_opts(&u, c, B, c->in_dim, T, Hl, Wl, 0, &f, err)) comm_abort(&world, err);
                wan_gpu_forward(&u, &m.w, d_x, ts, d_ctx);
                cudaCheck(cudaStreamSynchronize(u.stream));
                fwd[mode] = download(u.out, no);
                wan_gpu_act_free(&u);
            }
            if (!mode) plain_bytes = a.arena.used;
            if (mode && world.rank == 0 && rc == 0) printf("  [rank 0] %d tokens of %d a sample, heads %d..%d after the all-to-all; activation arena %.3f MiB (the whole sequence: %.3f MiB), "
                                                          "besides it the CP buffers\n", a.g.L, a.cp->lay.L, a.cp->lay.rank * a.cp->lay.Hk, (a.cp->lay.rank + 1) * a.cp->lay.Hk - 1,
                                                          a.arena.used / 1048576.0, plain_bytes / 1048576.0);
            wan_gpu_act_free(&a);
        }
        const char* what[4] = {"velocity", "latent gradient", "parameter gradients", "context gradient"};
        size_t n[4] = {no, nx, np, nctx};
        for (int k = 0; k < 4; k++) {
            double worst; size_t diff = compare(got[1][k], got[0][k], n[k], &worst);
            int exact = k < 2, ok = exact ? diff == 0 : worst <= 1e-5;
            failures += !ok;
            printf("  [rank %d] recompute %s, %-20s %zu of %zu differ (worst %.2e of the largest)%s: %s\n", world.rank, rc ? "on " : "off", what[k], diff, n[k], worst,
                   exact ? ", want bit for bit" : ", want <= 1e-5", ok ? "ok" : "FAIL");
            free(got[0][k]); free(got[1][k]);
        }
        if (rc) {
            double worst; size_t diff = compare(fwd[1], fwd[0], no, &worst);
            failures += diff != 0;
            printf("  [rank %d] forward-only plan on the borrowed block set, velocity %zu of %zu differ, want bit for bit: %s\n", world.rank, diff, no, diff ? "FAIL" : "ok");
            free(fwd[0]); free(fwd[1]);
        }
    }
    // the refusal: heads or tokens the group does not divide
    if (grp.world > 1) {
        WanGpuActOpts o; memset(&o, 0, sizeof(o)); o.cp = &grp; WanGpuAct a;
        int refused = wan_gpu_act_init_opts(&a, c, 1, c->in_dim, 1, 2, 10, 1, &o, err) != 0;   // 1 x 1 x 5 = 5 tokens
        if (!refused || !strstr(err, "tokens")) { failures++; printf("  [rank %d] 5 tokens over cp %d: %s: FAIL\n", world.rank, grp.world, refused ? err : "not refused"); }
        else if (world.rank == 0) printf("  [rank 0] 5 tokens over cp %d refused: %s\n", grp.world, err);
    }
    wan_gpu_model_free(&m);
    printf("cp_gpu_check [rank %d]: %s\n", world.rank, failures ? "FAILED" : "ok");
    comm_finalize(&grp);
    comm_finalize(&world);
    return failures ? 1 : 0;
}
