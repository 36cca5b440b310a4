// cpu/ablate.h: the paper's claims in miniature, on the CPU tiny world: `./test_tmd ablate [--quick] [--seeds K]`.
// One teacher (cached), one evaluation set and one evaluation noise for every row; each distilled row is trained
// once per distillation seed and printed as mean ± sample standard deviation over the seeds, with the evaluation's
// own standard error in brackets (bootstrap over the evaluation captions); the teacher's rows do not depend on the
// distillation seed and are measured once (n = 1). Every row also gets the per-caption distance to the distillation
// target and the diversity (cpu/distill_table.h), and a last table gives the paired, seed-by-seed differences of the
// claims. `--baseline 0` runs the TMD rows only. Tables:
//   Table 1 shape: teacher (UniPC many steps, Euler 1/2/4), DMD2-v (KD-warmed at M = 1) and TMD at M = 1, 2
//   Table 6: TM versus TM-MF pretraining, after Stage 1 and after Stage 2 (M = 2)
//   Fig. 7:  flow-head rollout on versus off (M = 2)
//   Fig. 9:  t_dmd shift 5 versus none for the one-step DMD2-v student (mode collapse shows in the diversity column)
//   fusion gated versus concat (M = 2); an N and H sweep (M = 2)
// Stage 1 checkpoints are shared between rows that differ only in Stage 2 (rollout, t_dmd shift).
#pragma once
#include "distill_run.h"

#define ABL_MAX_SEEDS 8

typedef struct {
    const char* table;     // the claim the row belongs to
    const char* name;
    int tmd, M, N, H, fusion, tm_only, rollout; double gamma_dmd;
    int stage1_row;        // also score the student after Stage 1
} AblSpec;

// one table row over seeds: the k-th value is seed first_seed + k's (rows measured once, the teacher's, have n = 1);
// *_se: the evaluation's own sampling error (bootstrap over captions) of that measurement
typedef struct {
    char table[32], name[64];
    double nfe;
    int n;
    double total[ABL_MAX_SEEDS], quality[ABL_MAX_SEEDS], semantic[ABL_MAX_SEEDS], frechet[ABL_MAX_SEEDS],
        cond[ABL_MAX_SEEDS], diversity[ABL_MAX_SEEDS], total_se[ABL_MAX_SEEDS], cond_se[ABL_MAX_SEEDS];
    double cond_cap[ABL_MAX_SEEDS][DISTILL_MAX_CAPS];
    int n_cap;
    int shared;   // measured once for every seed (the teacher's rows)
} AblRow;

static AblRow* abl_row(AblRow* rows, int* nr, const char* table, const char* name, double nfe) {
    for (int i = 0; i < *nr; i++) if (!strcmp(rows[i].table, table) && !strcmp(rows[i].name, name)) return &rows[i];
    AblRow* r = &rows[(*nr)++]; memset(r, 0, sizeof(*r));
    snprintf(r->table, sizeof(r->table), "%s", table); snprintf(r->name, sizeof(r->name), "%s", name); r->nfe = nfe;
    return r;
}
static void abl_add(AblRow* r, const DistillRow* d) {
    if (r->n >= ABL_MAX_SEEDS) return;
    int k = r->n++;
    r->total[k] = d->total; r->quality[k] = d->quality; r->semantic[k] = d->semantic; r->frechet[k] = d->frechet;
    r->cond[k] = d->cond; r->diversity[k] = d->diversity; r->total_se[k] = d->total_se; r->cond_se[k] = d->cond_se;
    memcpy(r->cond_cap[k], d->cond_cap, sizeof(d->cond_cap)); r->n_cap = d->n_cap;
}
static double abl_mean(const double* v, int n) { double m = 0; for (int i = 0; i < n; i++) m += v[i] / n; return m; }
static void abl_stats(const double* v, int n, double* mean, double* sd) {
    double m = 0; for (int i = 0; i < n; i++) m += v[i];
    m /= n; double s = 0; for (int i = 0; i < n; i++) s += (v[i] - m) * (v[i] - m);
    *mean = m; *sd = n > 1 ? sqrt(s / (n - 1)) : 0;
}

// one table as markdown, to f: mean ± standard deviation over seeds, then in brackets the evaluation's own standard
// error (bootstrap over the evaluation captions, averaged over seeds); a row measured once says so ("1, shared")
static void abl_print_table(FILE* f, const AblRow* rows, int nr, const char* table, const char* title) {
    int any_cond = 0; for (int i = 0; i < nr; i++) if (!strcmp(rows[i].table, table)) any_cond |= rows[i].n_cap > 0;
    fprintf(f, "\n%s\n\n| sampler | eff. NFE | total [eval se] | quality | semantic | Fréchet |%s seeds |\n"
               "|---|---:|---:|---:|---:|---:|%s---:|\n",
            title, any_cond ? " to target [eval se] | diversity |" : "", any_cond ? "---:|---:|" : "");
    for (int i = 0; i < nr; i++) {
        const AblRow* r = &rows[i];
        if (strcmp(r->table, table)) continue;
        double mt, st, mq, sq, ms, ss, mf, sf, mc, sc, md, sd;
        abl_stats(r->total, r->n, &mt, &st);
        abl_stats(r->quality, r->n, &mq, &sq);
        abl_stats(r->semantic, r->n, &ms, &ss);
        abl_stats(r->frechet, r->n, &mf, &sf); abl_stats(r->cond, r->n, &mc, &sc); abl_stats(r->diversity, r->n, &md, &sd);
        char nfe[16]; if (r->nfe > 0) snprintf(nfe, sizeof(nfe), "%.2f", r->nfe); else snprintf(nfe, sizeof(nfe), "-");
        if (r->n > 1)
            fprintf(f, "| %s | %s | %.1f ± %.1f [%.1f] | %.1f ± %.1f | %.1f ± %.1f | %.1f ± %.1f |", r->name, nfe, mt, st,
                    abl_mean(r->total_se, r->n), mq, sq, ms, ss, mf, sf);
        else
            fprintf(f, "| %s | %s | %.1f [%.1f] | %.1f | %.1f | %.1f |", r->name, nfe, mt, r->total_se[0], mq, ms, mf);
        if (any_cond && r->n_cap > 0) {
            if (r->n > 1) fprintf(f, " %.2f ± %.2f [%.2f] | %.2f ± %.2f |", mc, sc, abl_mean(r->cond_se, r->n), md, sd);
            else fprintf(f, " %.2f [%.2f] | %.2f |", mc, r->cond_se[0], md);
        } else if (any_cond) fprintf(f, " | |");
        fprintf(f, " %d%s |\n", r->n, r->shared ? ", shared" : "");
    }
}

// a paired comparison over seeds: row a minus row b, seed by seed (same seed, one thing changed), for the total and
// the per-caption distance; with the evaluation's paired standard error of the distance (bootstrap over captions)
static void abl_print_paired(FILE* f, const AblRow* rows, int nr, const char* ta, const char* a, const char* tb,
                             const char* b, const char* claim) {
    const AblRow *ra = NULL, *rb = NULL;
    for (int i = 0; i < nr; i++) {
        if (!strcmp(rows[i].table, ta) && !strcmp(rows[i].name, a)) ra = &rows[i];
        if (!strcmp(rows[i].table, tb) && !strcmp(rows[i].name, b)) rb = &rows[i];
    }
    if (!ra || !rb || ra->n != rb->n || ra->n < 1) return;
    int n = ra->n, wins_t = 0, wins_c = 0;
    double dt[ABL_MAX_SEEDS], dc[ABL_MAX_SEEDS], se = 0;
    fprintf(f, "| %s | %s − %s |", claim, a, b);
    for (int k = 0; k < n; k++) {
        dt[k] = ra->total[k] - rb->total[k];
        dc[k] = ra->cond[k] - rb->cond[k];
        wins_t += dt[k] > 0; wins_c += dc[k] < 0;
        if (ra->n_cap > 0 && ra->n_cap == rb->n_cap) se += score_boot_se(ra->cond_cap[k], rb->cond_cap[k], ra->n_cap) / n;
        fprintf(f, " %+.1f / %+.2f |", dt[k], dc[k]);
    }
    double mt, st, mc, sc;
    abl_stats(dt, n, &mt, &st); abl_stats(dc, n, &mc, &sc);
    fprintf(f, " %+.1f ± %.1f / %+.2f ± %.2f [%.2f] | %d of %d / %d of %d |\n", mt, st, mc, sc, se, wins_t, n, wins_c, n);
}

static int ablate_main(int argc, char** argv) {
    // the harness's own flags, then every `./test_tmd distill` flag
    int quick = 0, seeds = 3, first_seed = 1; const char *out = NULL, *only = NULL;
    char** rest = (char**)malloc(sizeof(char*) * (argc + 1)); int nrest = 0;
    for (int i = 0; i < argc; i++) {
        if (i >= 2 && !strcmp(argv[i], "--quick")) { quick = 1; continue; }
        if (i >= 2 && i + 1 < argc && !strcmp(argv[i], "--seeds")) { seeds = atoi(argv[++i]); continue; }
        if (i >= 2 && i + 1 < argc && !strcmp(argv[i], "--first-seed")) { first_seed = atoi(argv[++i]); continue; }
        if (i >= 2 && i + 1 < argc && !strcmp(argv[i], "--out")) { out = argv[++i]; continue; }
        if (i >= 2 && i + 1 < argc && !strcmp(argv[i], "--only")) { only = argv[++i]; continue; }
        rest[nrest++] = argv[i];
    }
    DistillOpts base = distill_defaults();
    if (quick) {   // minutes, not an hour: the tables' shape, not their conclusions
        base.teacher_steps = 300; base.tmmf_steps = 30; base.dmd_iters = 30; base.kd_pairs = 16; base.kd_steps = 20;
        base.eval_n = 8; base.teacher_eval_steps = 8; seeds = 1;
    } else {
        base.tmmf_steps = 300; base.dmd_iters = 300;
    }
    int rc =
        distill_parse_flags(&base, nrest, rest, 2,
                            "usage: ./test_tmd ablate [--quick] [--seeds K] [--first-seed S] [--out FILE.md] [--only "
                            "t1,t6,fig7,fig9,fusion,nh]\n"
                            "                          [distill flags]\n"
                            "  the paper's claims in miniature; every distill flag below sets the base configuration");
    free(rest);
    if (rc) return rc == 1 ? 0 : 2;
    if (seeds < 1 || seeds > ABL_MAX_SEEDS) {
        fprintf(stderr, "error: --seeds must be in 1..%d, found %d\n", ABL_MAX_SEEDS, seeds);
        return 2;
    }
    const int N0 = base.N, H0 = base.H;
    AblSpec specs[] = {
        {"t1", "TMD M1", 1, 1, N0, H0, FUSION_GATED, 0, 1, base.gamma_dmd, 0},
        {"t1", "TMD M2", 1, 2, N0, H0, FUSION_GATED, 0, 1, base.gamma_dmd, 1},
        {"fig7", "TMD M2, rollout off", 1, 2, N0, H0, FUSION_GATED, 0, 0, base.gamma_dmd, 0},
        {"t6", "TM pretraining, M2", 1, 2, N0, H0, FUSION_GATED, 1, 1, base.gamma_dmd, 1},
        {"fusion", "TMD M2, concat fusion", 1, 2, N0, H0, FUSION_CONCAT, 0, 1, base.gamma_dmd, 0},
        {"nh", "TMD M2 N1 H1", 1, 2, 1, 1, FUSION_GATED, 0, 1, base.gamma_dmd, 0},
        {"nh", "TMD M2 N4 H1", 1, 2, 4, 1, FUSION_GATED, 0, 1, base.gamma_dmd, 0},
        {"nh", "TMD M2 N2 H2", 1, 2, 2, 2, FUSION_GATED, 0, 1, base.gamma_dmd, 0},
        {"t1", "DMD2-v M1 (KD)", 0, 1, N0, H0, FUSION_GATED, 0, 1, base.gamma_dmd, 0},
        {"t1", "DMD2-v M2", 0, 2, N0, H0, FUSION_GATED, 0, 1, base.gamma_dmd, 0},
        {"fig9", "DMD2-v M1 (KD), t_dmd shift 1 (none)", 0, 1, N0, H0, FUSION_GATED, 0, 1, 1.0, 0},
    };
    int nspec = (int)(sizeof(specs) / sizeof(specs[0]));
    double t_start = now_s();
    DistillWorld W;
    if (distill_world_init(&W, &base)) return 1;
    if (base.fidelity) distill_target_init(&W, &base);
    static AblRow rows[64]; int nr = 0;
    DistillRow tr[8];
    // the teacher's rows do not depend on the distillation seed: measured once (n = 1, "shared")
    int nt = distill_teacher_rows(&W, &base, tr, NULL);
    for (int i = 0; i < nt; i++) {
        AblRow* r = abl_row(rows, &nr, "t1", tr[i].name, tr[i].nfe);
        abl_add(r, &tr[i]); r->shared = 1;
    }
    AblRow* r9 = abl_row(rows, &nr, "fig9", tr[1].name, tr[1].nfe);   // for scale
    abl_add(r9, &tr[1]); r9->shared = 1;
    for (int i = 0; i < nt; i++)
        printf("  %s: total %.1f (quality %.1f, semantic %.1f, Fréchet %.2f, to target %.2f, diversity %.2f)\n",
               tr[i].name, tr[i].total, tr[i].quality, tr[i].semantic, tr[i].frechet, tr[i].cond, tr[i].diversity);
    printf("  teacher rows done at %.0f s\n", now_s() - t_start);
    for (int si = 0; si < seeds; si++) {
        uint64_t seed = (uint64_t)(first_seed + si);
        double* s1 = NULL; size_t s1_n = 0; char s1_key[64] = "";
        for (int k = 0; k < nspec; k++) {
            const AblSpec* sp = &specs[k];
            if (only && !strstr(only, sp->table))
                continue; // (t1 rows also fill the t6, fig7, fig9, fusion and nh references)
            if (!sp->tmd && !base.baseline) continue;   // --baseline 0: the TMD rows only
            DistillOpts o = base;
            o.seed = seed;
            o.M = sp->M;
            o.N = sp->N;
            o.H = sp->H;
            o.fusion = sp->fusion;
            o.tm_only = sp->tm_only;
            o.rollout = sp->rollout; o.gamma_dmd = sp->gamma_dmd;
            printf("\n[ablate] seed %llu: %s (%.0f s so far)\n", (unsigned long long)seed, sp->name,
                   now_s() - t_start);
            DistillRow d;
            if (sp->tmd) {
                StudentConfig sc = distill_student_config(&W, &o);
                size_t ns = student_num_params(&sc);
                char key[64]; snprintf(key, sizeof(key), "M%d N%d H%d f%d tm%d", o.M, o.N, o.H, o.fusion, o.tm_only);
                double* stu = (double*)malloc(sizeof(double) * ns);
                if (s1 && !strcmp(key, s1_key) && s1_n == ns) {
                    memcpy(stu, s1, sizeof(double) * ns);
                    printf("  Stage 1 shared (%s)\n", key);
                } else {
                    distill_stage1(&W, &o, o.M, stu);
                    free(s1);
                    s1 = (double*)malloc(sizeof(double) * ns);
                    memcpy(s1, stu, sizeof(double) * ns);
                    s1_n = ns;
                    snprintf(s1_key, sizeof(s1_key), "%s", key);
                    if (sp->stage1_row) {
                        char nm[96]; snprintf(nm, sizeof(nm), "%s after Stage 1", sp->name);
                        distill_eval_tmd(&W, &o, &sc, stu, o.M, nm, &d, NULL);
                        abl_add(
                            abl_row(rows, &nr, "t6", sp->tm_only ? "TM, after Stage 1" : "TM-MF, after Stage 1", d.nfe),
                            &d);
                        printf("  %s: total %.1f (quality %.1f, semantic %.1f, Fréchet %.2f)\n", nm, d.total, d.quality,
                               d.semantic, d.frechet);
                    }
                }
                distill_stage2(&W, &o, o.M, 1, stu);
                distill_eval_tmd(&W, &o, &sc, stu, o.M, sp->name, &d, NULL);
                free(stu);
            } else {
                double* b = (double*)malloc(sizeof(double) * W.nw); memcpy(b, W.teacher, sizeof(double) * W.nw);
                if (o.M == 1) distill_kd(&W, &o, 0, b);
                distill_stage2(&W, &o, o.M, 0, b);
                distill_eval_dmd(&W, &o, b, o.M, sp->name, &d, NULL);
                free(b);
            }
            printf("  %s: total %.1f (quality %.1f, semantic %.1f, Fréchet %.2f, to target %.2f, diversity %.2f)\n",
                   sp->name, d.total, d.quality, d.semantic, d.frechet, d.cond, d.diversity);
            if (strcmp(sp->table, "t6")) abl_add(abl_row(rows, &nr, sp->table, sp->name, d.nfe), &d);
            if (!strcmp(sp->table, "t1") && sp->M == 2 &&
                sp->tmd) { // the same run is the TM-MF row of Table 6 and Fig. 7's "on"
                abl_add(abl_row(rows, &nr, "t6", "TM-MF, after Stage 2", d.nfe), &d);
                abl_add(abl_row(rows, &nr, "fig7", "TMD M2, rollout on", d.nfe), &d);
                abl_add(abl_row(rows, &nr, "fusion", "TMD M2, gated fusion", d.nfe), &d);
                abl_add(abl_row(rows, &nr, "nh", "TMD M2 N2 H1", d.nfe), &d);
            }
            if (!strcmp(sp->table, "t6")) abl_add(abl_row(rows, &nr, "t6", "TM, after Stage 2", d.nfe), &d);
            if (!strcmp(sp->table, "t1") && sp->M == 1 && !sp->tmd)
                abl_add(abl_row(rows, &nr, "fig9", "DMD2-v M1 (KD), t_dmd shift 5", d.nfe), &d);
        }
        free(s1);
    }
    double elapsed = now_s() - t_start;
    const char* titles[][2] = {
        {"t1", "Table 1 shape: teacher, DMD2-v (KD-warmed at M = 1) and TMD at M = 1, 2"},
        {"t6", "Table 6: TM versus TM-MF pretraining (M = 2)"},
        {"fig7", "Fig. 7: flow-head rollout on versus off (M = 2)"},
        {"fig9",
         "Fig. 9: t_dmd shift 5 versus none, one-step DMD2-v (KD); diversity = within-caption spread over the target's"},
        {"fusion", "Fusion: gated versus concat (M = 2)"},
        {"nh", "N and H sweep (M = 2)"}};
    FILE* fo = out ? fopen(out, "w") : NULL;
    if (out && !fo) fprintf(stderr, "ablate: cannot write %s\n", out);
    for (int pass = 0; pass < (fo ? 2 : 1); pass++) {
        FILE* f = pass ? fo : stdout;
        fprintf(f,
                "\n(%s: %d seed%s from %d; Stage 1 %d steps, Stage 2 %d iterations, KD %d steps on %d pairs; %d clips "
                "per row; %.0f s)\n",
                quick ? "quick" : "full", seeds, seeds > 1 ? "s" : "", first_seed, base.tmmf_steps, base.dmd_iters,
                base.kd_steps, base.kd_pairs, base.eval_n, elapsed);
        for (int t = 0; t < 6; t++) abl_print_table(f, rows, nr, titles[t][0], titles[t][1]);
        fprintf(f, "\nPaired differences, seed by seed (total / per-caption distance to the target; a claim holds in a seed "
                   "when the total is higher / the distance lower); mean ± sd over seeds [the evaluation's paired "
                   "standard error of the distance, bootstrap over captions]\n\n| claim | difference |");
        for (int k = 0; k < seeds; k++) fprintf(f, " seed %d |", first_seed + k);
        fprintf(f, " mean | seeds where it holds |\n|---|---|");
        for (int k = 0; k < seeds + 2; k++) fprintf(f, "---:|");
        fprintf(f, "\n");
        abl_print_paired(f, rows, nr, "t1", "TMD M2", "t1", "TMD M1", "two steps beat one");
        abl_print_paired(f, rows, nr, "t1", "TMD M1", "t1", "DMD2-v M1 (KD)", "TMD beats DMD2-v, M = 1");
        abl_print_paired(f, rows, nr, "t1", "TMD M2", "t1", "DMD2-v M2", "TMD beats DMD2-v, M = 2");
        abl_print_paired(f, rows, nr, "t6", "TM-MF, after Stage 2", "t6", "TM, after Stage 2", "TM-MF beats TM");
        abl_print_paired(f, rows, nr, "fig7", "TMD M2, rollout on", "fig7", "TMD M2, rollout off", "rollout helps");
        abl_print_paired(f, rows, nr, "fig9", "DMD2-v M1 (KD), t_dmd shift 5", "fig9",
                         "DMD2-v M1 (KD), t_dmd shift 1 (none)", "t_dmd shift helps");
        abl_print_paired(f, rows, nr, "fusion", "TMD M2, gated fusion", "fusion", "TMD M2, concat fusion",
                         "gated beats concat");
    }
    if (fo) { fclose(fo); printf("  tables written to %s\n", out); }
    distill_world_free(&W);
    // every row must have scored (a failed scoring leaves total -1)
    int bad = 0;
    for (int i = 0; i < nr; i++)
        for (int k = 0; k < rows[i].n; k++) bad |= !(rows[i].total[k] >= 0 && isfinite(rows[i].total[k]));
    if (bad) { fprintf(stderr, "ablate: a row failed to score\n"); return 1; }
    return 0;
}
