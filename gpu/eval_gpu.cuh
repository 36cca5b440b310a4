// gpu/eval_gpu.cuh: the Table-1-style evaluation of ./train_tmd's pipeline on the GPU, the twin of cpu/distill_run.h's
// (same rows, same scores, same printed table: DistillRow and distill_print are that file's). Every row samples the
// evaluation captions of the built-in world from the same initial noise (one Philox draw), the clips are clamped to
// [-1, 1] as a decoder would, scored on the host by the toy VBench (world/score.h) against a Fréchet reference of real
// training clips, and timed on the device (ms per sample: the whole batch's DiT time over the batch size).
#pragma once
#include <time.h>
#include "../cpu/distill_table.h" // DistillRow, distill_print, DISTILL_SHEET_CLIPS: the CPU reference's table
#include "../world/world.h"       // the evaluation set
#include "../world/score.h"       // the toy VBench
#include "../world/png.h"         // the contact sheet
#include "teacher_gpu.cuh"        // wan_gpu_velocity over cpu/teacher_cpu.h's solvers
#include "tmd_gpu.cuh"            // tmd_gpu_sample, dmd_gpu_sample, effective_nfe

typedef struct {
    WorldConfig wc;
    const WanConfig* c;
    int n;         // clips per row (the batch of every sampler)
    uint64_t seed; // the evaluation set, its reference and the shared noise
    WorldSet ev, refset;
    ScoreRef ref;
    WanGpuAct a;                         // forward-only plan for batch n
    float *x, *noise, *y1, *ctx, *ctx_u; // device
    float *hx, *stage;                   // host [n·numel]
    size_t numel, nctx;
    float* sheet; // host: DISTILL_SHEET_CLIPS clips per row, row 0 the real clips (NULL: no sheet)
} EvalGpu;

static int eval_gpu_init(EvalGpu* e, const WanConfig* c, const WorldConfig* wc, int n, uint64_t seed, int with_sheet,
                         char* err) {
    memset(e, 0, sizeof(*e));
    e->wc = *wc;
    e->c = c;
    e->n = n;
    e->seed = seed;
    if (n < DISTILL_SHEET_CLIPS || n > TMD_MAX_BATCH) {
        snprintf(err, ST_ERRLEN, "--eval-n %d: expected %d .. %d", n, DISTILL_SHEET_CLIPS, TMD_MAX_BATCH);
        return 1;
    }
    world_generate(wc, WORLD_ANY, n, seed + 1000, &e->ev); // cpu/distill_run.h's seeds
    world_generate(wc, WORLD_TRAIN, 64, seed + 2000, &e->refset);
    if (score_ref_init(&e->ref, e->refset.clips, e->refset.n, wc->T, wc->H, wc->W, err)) return 1;
    if (wan_gpu_act_init(&e->a, c, n, wc->C, wc->T, wc->H, wc->W, 0, err)) return 1;
    e->numel = world_clip_numel(wc);
    e->nctx = (size_t)wc->text_len * wc->text_dim;
    size_t nx = e->numel * n;
    float** d[] = {&e->x, &e->noise, &e->y1};
    for (int i = 0; i < 3; i++)
        *d[i] = (float*)cuda_malloc_named(sizeof(float) * nx, "evaluation latents", WAN_GPU_OOM_HINT);
    e->ctx = (float*)cuda_malloc_named(sizeof(float) * e->nctx * n, "evaluation captions", WAN_GPU_OOM_HINT);
    e->ctx_u = (float*)cuda_malloc_named(sizeof(float) * e->nctx * n, "evaluation captions", WAN_GPU_OOM_HINT);
    cudaCheck(cudaMemcpy(e->ctx, e->ev.context, sizeof(float) * e->nctx * n, cudaMemcpyHostToDevice));
    cudaCheck(cudaMemset(e->ctx_u, 0, sizeof(float) * e->nctx * n)); // the empty caption
    normal_fill(e->noise, nx, seed * 1000003, 0, 0.f, 1.f, 0);       // the initial noise of every row
    e->hx = (float*)malloc(sizeof(float) * nx);
    e->stage = (float*)malloc(sizeof(float) * nx);
    if (with_sheet) {
        e->sheet = (float*)calloc(e->numel * DISTILL_SHEET_CLIPS * DISTILL_MAX_ROWS, sizeof(float));
        memcpy(e->sheet, e->ev.clips, sizeof(float) * e->numel * DISTILL_SHEET_CLIPS);
    }
    return 0;
}

static void eval_gpu_free(EvalGpu* e) {
    cudaCheck(cudaFree(e->x));
    cudaCheck(cudaFree(e->noise));
    cudaCheck(cudaFree(e->y1));
    cudaCheck(cudaFree(e->ctx));
    cudaCheck(cudaFree(e->ctx_u));
    wan_gpu_act_free(&e->a);
    world_set_free(&e->ev);
    world_set_free(&e->refset);
    free(e->hx);
    free(e->stage);
    free(e->sheet);
}

// row 0: the real evaluation clips, scored as they are (no sampler, no NFE)
static void eval_gpu_real_row(EvalGpu* e, DistillRow* row) {
    WorldScore s;
    char err[ST_ERRLEN];
    memset(row, 0, sizeof(*row));
    snprintf(row->name, sizeof(row->name), "real clips");
    if (score_clips(&s, e->ev.clips, e->n, e->wc.T, e->wc.H, e->wc.W, (const char* const*)e->ev.captions, &e->ref,
                    &e->wc, NULL, err)) {
        fprintf(stderr, "evaluation: scoring the real clips failed: %s\n", err);
        row->total = -1;
        return;
    }
    row->quality = 100 * s.quality;
    row->semantic = 100 * s.semantic;
    row->total = 100 * s.total;
    row->frechet = s.raw[SC_FRECHET];
}

// scores e->hx (the row's samples, host) into row; keeps its first clips in the sheet at row index r
static void eval_gpu_score_(EvalGpu* e, DistillRow* row, int r, const char* name, double nfe, double ms) {
    WorldScore ws;
    char err[ST_ERRLEN];
    size_t nx = e->numel * e->n;
    for (size_t k = 0; k < nx; k++) e->hx[k] = fmaxf(-1.f, fminf(1.f, e->hx[k])); // the decoder's clamp
    memset(row, 0, sizeof(*row));
    snprintf(row->name, sizeof(row->name), "%s", name);
    row->nfe = nfe;
    row->ms_per_sample = ms / e->n;
    if (score_clips(&ws, e->hx, e->n, e->wc.T, e->wc.H, e->wc.W, (const char* const*)e->ev.captions, &e->ref, &e->wc,
                    NULL, err)) {
        fprintf(stderr, "evaluation: scoring %s failed: %s\n", name, err);
        row->total = -1;
    } else {
        row->quality = 100 * ws.quality;
        row->semantic = 100 * ws.semantic;
        row->total = 100 * ws.total;
        row->frechet = ws.raw[SC_FRECHET];
    }
    if (e->sheet && r < DISTILL_MAX_ROWS)
        memcpy(e->sheet + (size_t)r * e->numel * DISTILL_SHEET_CLIPS, e->hx,
               sizeof(float) * e->numel * DISTILL_SHEET_CLIPS);
    printf("  %-34s total %.1f  (%.2f ms per sample)\n", row->name, row->total, row->ms_per_sample);
}

// the teacher: cpu/teacher_cpu.h's solver (UniPC or Euler) with CFG against the empty caption, the batch together
static void eval_gpu_teacher_row(EvalGpu* e, DistillRow* row, int r, const WanGpuModel* T, int steps, int solver,
                                 double shift, double cfg) {
    char name[48], err[ST_ERRLEN];
    if (solver == SOLVER_UNIPC)
        snprintf(name, sizeof(name), "teacher UniPC %d steps, CFG %g", steps, cfg);
    else
        snprintf(name, sizeof(name), "teacher Euler %d step%s, CFG %g", steps, steps > 1 ? "s" : "", cfg);
    size_t nx = e->numel * e->n;
    cudaCheck(cudaMemcpy(e->hx, e->noise, sizeof(float) * nx, cudaMemcpyDeviceToHost));
    WanGpuVelocity vel = {&e->a, &T->w, e->ctx, e->ctx_u, e->x, e->stage, nx, 0, 0};
    SampleOpts so = {steps, shift, cfg, solver, GRID_UNIPC, 0}; // as cpu/distill_run.h distill_teacher_sample
    int nfe = 0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC,
                  &t0); // host wall time: the solver runs on the host, each evaluation copies the latents both ways
    if (teacher_sample(e->hx, nx, wan_gpu_velocity, &vel, &so, &nfe, err))
        fprintf(stderr, "evaluation: teacher sampling: %s\n", err);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    eval_gpu_score_(e, row, r, name, 2.0 * steps, 1e3 * (t1.tv_sec - t0.tv_sec) + 1e-6 * (t1.tv_nsec - t0.tv_nsec));
}

// a distilled student: TMD (S, Algorithm 1, N inner steps) or DMD2-v (P, the multi-step sampler), at M outer steps
static void eval_gpu_student_row(EvalGpu* e, DistillRow* row, int r, const char* name, const TmdGpuStudent* S,
                                 TmdGpuRollout* ro, const WanGpuModel* P, int M, double nfe) {
    size_t nx = e->numel * e->n;
    double gamma_outer = outer_shift_default(M); // the trainers' (cpu/tmd_cpu.h)
    cudaCheck(cudaMemcpy(e->x, e->noise, sizeof(float) * nx, cudaMemcpyDeviceToDevice));
    cudaEvent_t e0, e1;
    cudaCheck(cudaEventCreate(&e0));
    cudaCheck(cudaEventCreate(&e1));
    cudaCheck(cudaEventRecord(e0));
    uint64_t offset = 0;
    if (S)
        tmd_gpu_sample(e->x, S, &e->a, ro, e->y1, e->ctx, M, gamma_outer, e->seed * 7919, &offset);
    else
        dmd_gpu_sample(e->x, &P->w, &e->a, e->ctx, M, gamma_outer);
    cudaCheck(cudaEventRecord(e1));
    cudaCheck(cudaEventSynchronize(e1));
    float ms;
    cudaCheck(cudaEventElapsedTime(&ms, e0, e1));
    cudaCheck(cudaEventDestroy(e0));
    cudaCheck(cudaEventDestroy(e1));
    cudaCheck(cudaMemcpy(e->hx, e->x, sizeof(float) * nx, cudaMemcpyDeviceToHost));
    eval_gpu_score_(e, row, r, name, nfe, ms);
}

// the contact sheet: DISTILL_SHEET_CLIPS clips of every row, captioned "row: caption" (cpu/distill_run.h's layout)
static int eval_gpu_sheet(const EvalGpu* e, const DistillRow* rows, int nr, const char* path, char* err) {
    if (nr > DISTILL_MAX_ROWS) nr = DISTILL_MAX_ROWS;
    int nc = nr * DISTILL_SHEET_CLIPS;
    char** caps = (char**)malloc(sizeof(char*) * nc);
    for (int i = 0; i < nc; i++) {
        caps[i] = (char*)malloc(160);
        snprintf(caps[i], 160, "%s: %s", rows[i / DISTILL_SHEET_CLIPS].name, e->ev.captions[i % DISTILL_SHEET_CLIPS]);
    }
    int rc = png_write_sheet(path, e->sheet, nc, e->wc.T, e->wc.H, e->wc.W, (const char* const*)caps, 0, err);
    for (int i = 0; i < nc; i++) free(caps[i]);
    free(caps);
    return rc;
}
