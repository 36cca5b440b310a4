// gpu/recompute_tests.cuh: per-block activation recompute (gpu/wan_gpu.cuh wan_gpu_recompute) against keeping every
// block's activations. The kernels are deterministic, so the two must agree to the bit: every check here runs the same
// pass twice, recompute off then on, from the same weights and inputs, and compares with memcmp (no tolerance).
//   the whole model: forward + backward (parameter, latent and context gradients): the teacher's and the fake
//     score's pass, and the DMD2-v baseline's generator
//   the partial backward with injected feature gradients and an outside context gradient, trainable (the TMD
//     backbone under its flow head) and frozen (the GAN loss through the frozen teacher: latent gradient only)
//   one flow-matching teacher step (gpu/teacher_gpu.cuh: Philox noise, the loss, AdamW): the updated weights
//   and the activation bytes: the recomputing plan must be smaller whenever there are two blocks or more
// The TMD steps (TM-MF, the Stage 2 student through the rollout, the critic, the GAN terms) run the same comparison
// inside gpu/tmd_gpu_tests.cuh (recompute_check), next to their CPU parity. Included by test_gpu.cu.
#pragma once
#include "teacher_gpu.cuh"   // teacher_gpu_step: the flow-matching step
#include "tmd_gpu_tests.cuh" // expect_bit_identical, tmd_download_f_, tmd_random_params_, tmd_upload_

static void test_recompute_wan_gpu(const WanConfig* c, int B, int T, int Hl, int Wl, uint64_t seed) {
    printf("\n[recompute] the DiT's forward + backward with per-block activation recompute vs without, config '%s', "
           "batch %d (memcmp)\n",
           c->name, B);
    char err[ST_ERRLEN];
    size_t np = wan_num_params(c), nx = (size_t)c->in_dim * T * Hl * Wl, no = (size_t)c->out_dim * T * Hl * Wl,
           nctx = (size_t)c->text_len * c->text_dim;
    WanGrid g;
    if (wan_grid(&g, c, c->in_dim, T, Hl, Wl, err)) {
        fprintf(stderr, "%s\n", err);
        exit(1);
    }
    size_t LD = (size_t)B * g.L * c->dim, LcD = (size_t)B * c->text_len * c->dim;
    int nb = c->num_layers - 1;
    double* hp = (double*)calloc(np, sizeof(double));
    tmd_random_params_(c, hp, seed);
    Rng r = rng_make(seed + 1);
    double* hx = (double*)malloc(sizeof(double) * B * nx);
    double* hd = (double*)malloc(sizeof(double) * B * no);
    double* hc = (double*)calloc(B * nctx, sizeof(double));
    double* hf = (double*)malloc(sizeof(double) * 3 * LD + sizeof(double) * LcD);
    double tsteps[TMD_MAX_BATCH];
    for (size_t i = 0; i < B * nx; i++) hx[i] = rng_normal(&r);
    for (size_t i = 0; i < B * no; i++) hd[i] = rng_normal(&r);
    for (int b = 0; b < B; b++) {
        tsteps[b] = 1000.0 * rng_uniform(&r);
        for (size_t i = 0; i < (size_t)(c->text_len - b % 2) * c->text_dim; i++) hc[b * nctx + i] = rng_normal(&r);
    }
    for (size_t i = 0; i < 3 * LD + LcD; i++) hf[i] = rng_normal(&r);
    float* d_x = tmd_upload_(hx, B * nx);
    float* d_dout = tmd_upload_(hd, B * no);
    float* d_ctx = tmd_upload_(hc, B * nctx);
    float* d_f =
        tmd_upload_(hf, 3 * LD + LcD); // dtop, the feature gradients at xs[1] and xs[nb − 1], the context gradient
    float *dx, *dctx;
    cudaCheck(cudaMalloc(&dx, sizeof(float) * B * nx));
    cudaCheck(cudaMalloc(&dctx, sizeof(float) * B * nctx));
    float* pf = (float*)malloc(sizeof(float) * np);
    for (size_t i = 0; i < np; i++) pf[i] = (float)hp[i];
    // per mode: the whole model's dW, dx, dctx; the partial trainable dW, dx, dctx; the frozen partial dx; the teacher
    // step's weights
    enum { K = 8 };
    float* got[2][K];
    size_t n_of[K] = {np, B * nx, B * nctx, np, B * nx, B * nctx, B * nx, np};
    const char* what[K] = {"whole model: parameter gradients",
                           "whole model: latent gradient",
                           "whole model: context gradient",
                           "backbone + injected: parameter gradients",
                           "backbone + injected: latent gradient",
                           "backbone + injected: context gradient",
                           "frozen teacher to features: latent gradient",
                           "teacher FM step: weights after AdamW"};
    size_t bytes[2];
    int saved = wan_gpu_recompute;
    for (int rc = 0; rc < 2; rc++) {
        wan_gpu_recompute = rc;
        WanGpuModel m;
        wan_gpu_model_init(&m, c, pf, 1, rc ? "recompute" : "keep all");
        WanGpuAct a;
        if (wan_gpu_act_init(&a, c, B, c->in_dim, T, Hl, Wl, 1, err)) {
            fprintf(stderr, "%s\n", err);
            exit(1);
        }
        bytes[rc] = a.arena.used;
        cudaCheck(cudaMemset(dx, 0, sizeof(float) * B * nx));
        cudaCheck(cudaMemset(dctx, 0, sizeof(float) * B * nctx));
        wan_gpu_forward(&a, &m.w, d_x, tsteps, d_ctx);
        wan_gpu_backward(&m.dP, dx, dctx, d_dout, &a, &m.w);
        got[rc][0] = tmd_download_f_(m.grads, np);
        got[rc][1] = tmd_download_f_(dx, B * nx);
        got[rc][2] = tmd_download_f_(dctx, B * nctx);
        cudaCheck(cudaMemset(m.grads, 0, sizeof(float) * np));
        cudaCheck(cudaMemset(dx, 0, sizeof(float) * B * nx));
        cudaCheck(cudaMemset(dctx, 0, sizeof(float) * B * nctx));
        float* dfeat[WAN_MAX_LAYERS + 1] = {0};
        dfeat[1] = d_f + LD;
        dfeat[nb] = d_f + 2 * LD;
        wan_gpu_forward_blocks(&a, &m.w, d_x, tsteps, d_ctx, nb);
        wan_gpu_backward_blocks(&m.dP, dx, dctx, d_f, nb, dfeat, d_f + 3 * LD, &a, &m.w);
        got[rc][3] = tmd_download_f_(m.grads, np);
        got[rc][4] = tmd_download_f_(dx, B * nx);
        got[rc][5] = tmd_download_f_(dctx, B * nctx);
        cudaCheck(cudaMemset(dx, 0, sizeof(float) * B * nx));
        wan_gpu_forward(&a, &m.w, d_x, tsteps, d_ctx); // as dmd_gpu_student_step: the whole
        wan_gpu_backward_blocks(NULL, dx, NULL, NULL, nb, dfeat, NULL, &a,
                                &m.w); // forward, the frozen backward to the features
        got[rc][6] = tmd_download_f_(dx, B * nx);
        wan_gpu_act_free(&a);
        TeacherGpu t;
        float* xf = (float*)malloc(sizeof(float) * B * nx);
        float* cf = (float*)malloc(sizeof(float) * B * nctx);
        for (size_t i = 0; i < B * nx; i++) xf[i] = (float)hx[i];
        for (size_t i = 0; i < B * nctx; i++) cf[i] = (float)hc[i];
        if (teacher_gpu_init(&t, &m, B, c->in_dim, T, Hl, Wl, seed + 5, err)) {
            fprintf(stderr, "%s\n", err);
            exit(1);
        }
        FlowMatchOpts fo = {0.5, 3.0, 0};
        TeacherGpuOpt opt = {1e-3, 0.9, 0.99, 1e-8, 0.01, 1.0};
        double loss, gn;
        EXPECT(teacher_gpu_step(&t, xf, cf, &fo, &opt, &loss, &gn, err) == 0, "teacher step (recompute %d): %s", rc,
               err);
        got[rc][7] = tmd_download_f_(m.params, np);
        teacher_gpu_free(&t);
        free(xf);
        free(cf);
        wan_gpu_model_free(&m);
    }
    wan_gpu_recompute = saved;
    for (int k = 0; k < K; k++) {
        expect_bit_identical(what[k], got[0][k], got[1][k], n_of[k]);
        free(got[0][k]);
        free(got[1][k]);
    }
    printf("  activation plan: %.3f MiB keeping every block's activations, %.3f MiB with recompute (%d blocks)\n",
           bytes[0] / 1048576.0, bytes[1] / 1048576.0, c->num_layers);
    EXPECT(c->num_layers < 2 || bytes[1] < bytes[0], "recompute should plan fewer bytes (%zu vs %zu)", bytes[1],
           bytes[0]);
    EXPECT(bytes[0] == act_wan_bytes(c, B, g.L, 1, 0, wan_gpu_use_flash(c), sizeof(floatX)) &&
               bytes[1] == act_wan_bytes(c, B, g.L, 1, 1, wan_gpu_use_flash(c), sizeof(floatX)),
           "the allocations are the plan's act_wan_bytes");
    cudaCheck(cudaFree(d_x));
    cudaCheck(cudaFree(d_dout));
    cudaCheck(cudaFree(d_ctx));
    cudaCheck(cudaFree(d_f));
    cudaCheck(cudaFree(dx));
    cudaCheck(cudaFree(dctx));
    free(pf);
    free(hp);
    free(hx);
    free(hd);
    free(hc);
    free(hf);
}
