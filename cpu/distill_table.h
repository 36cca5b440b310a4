// cpu/distill_table.h: the Table-1-style table of a distillation run, plain C with no model in it, so that
// ./test_tmd distill (cpu/distill_run.h, the CPU reference) and ./train_tmd (gpu/eval_gpu.cuh) print the same table.
// A row: the sampler, its effective NFE (0: no sampler, the real clips), the toy VBench scores in percent
// (world/score.h), the Fréchet distance to real clips and the time per sample, and where measured the per-caption
// distance to the distillation target and the diversity.
#pragma once
#include <stdio.h>

// The per-caption columns (cpu/distill_run.h; world/score.h score_cond), printed when any row has them (n_cap > 0):
//   to target   the mean over the evaluation captions of the energy distance between the row's clips for the caption
//               (cond_k noises) and the distillation target's (the teacher's many-step samples at the VSD guidance),
//               on the scorer's per-clip features: 0 in expectation for a second draw of the target itself, larger
//               for a generator that collapses, ignores its caption or differs otherwise; ± its bootstrap standard
//               error over captions
//   diversity   the row's within-caption spread over the target's (1: as varied as the target, 0: ignores its noise)
// total_se: the bootstrap standard error of the total over the evaluation captions (0: not measured).
#define DISTILL_MAX_CAPS 64
typedef struct {
    char name[48];
    double nfe, quality, semantic, total, ms_per_sample, frechet;
    double total_se;
    int n_cap;                          // captions of the per-caption distance (0: not measured)
    double cond, cond_se, diversity, diversity_se;
    double cond_cap[DISTILL_MAX_CAPS];  // the distance per caption, for paired comparisons between rows
} DistillRow;
#define DISTILL_SHEET_CLIPS 3   // clips per row in the contact sheet
#define DISTILL_MAX_ROWS 16

static void distill_fprint(FILE* f, const DistillRow* r, int n) {
    int cond = 0, se = 0;
    for (int i = 0; i < n; i++) cond |= r[i].n_cap > 0, se |= r[i].total_se > 0;
    fprintf(f, "\n  %-34s %8s %8s %9s %8s%s %8s %10s%s\n", "sampler", "eff.NFE", "quality", "semantic", "total",
            se ? "    ± se" : "", "Fréchet", "ms/sample", cond ? "   to target    ± se  diversity" : "");
    for (int i = 0; i < n; i++) {
        char nfe[16], ms[16], tse[16] = "", tg[48] = "";
        if (r[i].nfe > 0) snprintf(nfe, sizeof(nfe), "%8.2f", r[i].nfe), snprintf(ms, sizeof(ms), "%10.1f", r[i].ms_per_sample);
        else snprintf(nfe, sizeof(nfe), "%8s", "-"), snprintf(ms, sizeof(ms), "%10s", "-");
        if (se) snprintf(tse, sizeof(tse), " %7.1f", r[i].total_se);
        if (cond && r[i].n_cap > 0)
            snprintf(tg, sizeof(tg), "  %10.2f %7.2f %10.2f", r[i].cond, r[i].cond_se, r[i].diversity);
        else if (cond) snprintf(tg, sizeof(tg), "  %10s %7s %10s", "-", "", "-");
        fprintf(f, "  %-34s %s %8.1f %9.1f %8.1f%s %8.1f %s%s\n", r[i].name, nfe, r[i].quality, r[i].semantic, r[i].total,
                tse, r[i].frechet, ms, tg);
    }
}
static void distill_print(const DistillRow* r, int n) { distill_fprint(stdout, r, n); }
