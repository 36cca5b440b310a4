// cpu/distill_table.h: the Table-1-style table of a distillation run, plain C with no model in it, so that
// ./test_tmd distill (cpu/distill_run.h, the CPU reference) and ./train_tmd (gpu/eval_gpu.cuh) print the same table.
// A row: the sampler, its effective NFE (0: no sampler, the real clips), the toy VBench scores in percent
// (world/score.h), the Fréchet distance to real clips and the time per sample.
#pragma once
#include <stdio.h>

// frechet_target: the Fréchet distance to the distillation target (the teacher's samples at the VSD guidance), printed
// as a last column when any row has one (0: not measured)
typedef struct { char name[48]; double nfe, quality, semantic, total, ms_per_sample, frechet, frechet_target; } DistillRow;
#define DISTILL_SHEET_CLIPS 3   // clips per row in the contact sheet
#define DISTILL_MAX_ROWS 16

static void distill_fprint(FILE* f, const DistillRow* r, int n) {
    int target = 0;
    for (int i = 0; i < n; i++) target |= r[i].frechet_target > 0;
    fprintf(f, "\n  %-34s %8s %8s %9s %8s %8s %10s%s\n", "sampler", "eff.NFE", "quality", "semantic", "total", "Fréchet",
           "ms/sample", target ? "  Fréchet to target" : "");
    for (int i = 0; i < n; i++) {
        char tg[32] = "";
        if (target && r[i].frechet_target > 0) snprintf(tg, sizeof(tg), "  %17.1f", r[i].frechet_target);
        else if (target) snprintf(tg, sizeof(tg), "  %17s", "-");
        if (r[i].nfe > 0)
            fprintf(f, "  %-34s %8.2f %8.1f %9.1f %8.1f %8.1f %10.1f%s\n", r[i].name, r[i].nfe, r[i].quality, r[i].semantic,
                   r[i].total, r[i].frechet, r[i].ms_per_sample, tg);
        else
            fprintf(f, "  %-34s %8s %8.1f %9.1f %8.1f %8.1f %10s%s\n", r[i].name, "-", r[i].quality, r[i].semantic,
                   r[i].total, r[i].frechet, "-", tg);
    }
}
static void distill_print(const DistillRow* r, int n) { distill_fprint(stdout, r, n); }
