// lib/vbench_tests.h: tests of the VBench suite logic (lib/vbench.h) with a tiny random model on the CPU: file
// names (awkward characters, long prompts, duplicates), the 25-video rule from an info file, seeds, the manifest,
// and resuming a half-done suite to exactly the files of an uninterrupted run. The prompts are this file's own.
#pragma once
#include "vbench.h"
#include "npy.h"
#include "testing.h"
#include "../cpu/tmd_cpu.h"   // the CPU reference: a one-step sample of a tiny random model makes each "video"

typedef struct {
    WanConfig c; WanGrid g; WanParams P; real* params; WanAct act;
    int calls, fail_at;       // generator calls so far; fail (return 1) on this call (0: never)
    char seen[64][VB_NAME_MAX + 1]; int n_seen;   // first files made, to check none is made twice
    int made_twice;
} VbTinyModel;

static void vb_tiny_init(VbTinyModel* m) {
    memset(m, 0, sizeof(*m));
    char err[ST_ERRLEN];
    wan_preset(&m->c, "tiny", err);
    wan_grid(&m->g, &m->c, m->c.in_dim, 4, 16, 16, err);
    size_t n = wan_num_params(&m->c);
    m->params = (real*)malloc(sizeof(real) * n);
    Rng r = rng_make(77);
    for (size_t i = 0; i < n; i++) m->params[i] = 0.05 * rng_normal(&r);
    wan_carve(&m->c, &m->P, m->params);
    wan_act_init(&m->act, &m->c, &m->g);
}
static void vb_tiny_free(VbTinyModel* m) { wan_act_free(&m->act); free(m->params); }

// one "video": noise from the job's seed, a caption context from the generation prompt's text, one DMD2-v step
static int vb_tiny_generate(void* ctx, const VbSuite* s, const VbJob* job, const char* path, char* err) {
    VbTinyModel* m = (VbTinyModel*)ctx;
    m->calls++;
    if (m->fail_at && m->calls == m->fail_at) { st_errf(err, "generator failed on purpose (call %d)", m->calls); return 1; }
    for (int k = 0; k < m->n_seen; k++) if (!strcmp(m->seen[k], job->file)) m->made_twice++;
    if (m->n_seen < 64) snprintf(m->seen[m->n_seen++], VB_NAME_MAX + 1, "%s", job->file);
    size_t n = (size_t)m->c.out_dim * m->g.T * m->g.Hl * m->g.Wl;
    int Lt = 4;
    real* x = (real*)malloc(sizeof(real) * n); real* cx = (real*)malloc(sizeof(real) * Lt * m->c.text_dim);
    Rng rn = rng_make(job->seed), rc = rng_make(vb_fnv1a64(s->gen_prompt[job->line]));
    for (size_t i = 0; i < n; i++) x[i] = rng_normal(&rn);
    for (int i = 0; i < Lt * m->c.text_dim; i++) cx[i] = rng_normal(&rc);
    dmd_sample(x, &m->P, &m->c, &m->g, cx, Lt, 1, 10.0);
    float* f = (float*)malloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++) f[i] = (float)x[i];
    int64_t shape[4] = {m->c.out_dim, m->g.T, m->g.Hl, m->g.Wl};
    int rc_ = npy_write(path, f, 4, shape, err);
    free(x); free(cx); free(f);
    return rc_;
}

static int vb_write_text(const char* path, const char* text) {
    FILE* f = fopen(path, "wb"); if (!f) return 1;
    int ok = fputs(text, f) >= 0; return fclose(f) != 0 || !ok;
}
static int vb_same_file(const char* a, const char* b) {
    char* x; char* y; size_t nx, ny; char err[ST_ERRLEN];
    if (st_read_small_file(a, &x, &nx, err)) return 0;
    if (st_read_small_file(b, &y, &ny, err)) { free(x); return 0; }
    int same = nx == ny && !memcmp(x, y, nx); free(x); free(y); return same;
}
static int vb_count_files(const char* dir, const char* ext) {
    char cmd[1200]; snprintf(cmd, sizeof(cmd), "ls -1 '%s' | grep -c '%s$'", dir, ext);
    FILE* p = popen(cmd, "r"); int n = -1; if (p) { if (fscanf(p, "%d", &n) != 1) n = -1; pclose(p); } return n;
}

static void test_vbench(const char* tmpdir) {
    printf("\n[vbench] the VBench suite: names, seeds, the 25-video rule, manifest, resume (tiny random model)\n");
    char err[ST_ERRLEN], P[1024], E[1024], I[1024], out1[1024], out2[1024], path[2048], path2[2048];
    snprintf(P, sizeof(P), "%s/vb_prompts.txt", tmpdir); snprintf(E, sizeof(E), "%s/vb_extended.txt", tmpdir);
    snprintf(I, sizeof(I), "%s/vb_info.json", tmpdir);
    snprintf(out1, sizeof(out1), "%s/vb_out1", tmpdir); snprintf(out2, sizeof(out2), "%s/vb_out2", tmpdir);
    // our own prompts: a slash, quotes and an apostrophe, a tab, UTF-8, a CRLF line, a duplicate, a 300-byte prompt
    char longp[320]; memset(longp, 0, sizeof(longp));
    for (int i = 0; i < 99; i++) memcpy(longp + 3 * i, "\xc3\xa9z", 3);   // "éz" x 99 = 297 bytes: a cut must not split 'é'
    char prompts[2048];
    snprintf(prompts, sizeof(prompts),
             "a red ball rolls left/right\n"
             "a kite, it's \"frozen\" in time\r\n"
             "tab\there\n"
             "a red ball rolls left/right\n"
             "%s\n"
             "still water", longp);   // no final newline
    const char* extended =
        "EXT a red ball rolls from left to right across a table\n"
        "EXT a kite hangs still in the sky\n"
        "EXT tab\n"
        "EXT duplicate line\n"
        "EXT long\n"
        "EXT a lake without a ripple\n";
    char info[2048];
    snprintf(info, sizeof(info),
             "[{\"prompt_en\": \"a red ball rolls left\\/right\", \"dimension\": [\"dynamic_degree\"]},\n"
             " {\"prompt_en\": \"a kite, it's \\\"frozen\\\" in time\", \"dimension\": [\"temporal_flickering\", \"scene\"]},\n"
             " {\"prompt_en\": \"tab\\there\", \"dimension\": [\"color\"], \"auxiliary_info\": {\"color\": {\"color\": \"red\"}}},\n"
             " {\"prompt_en\": \"%s\", \"dimension\": [\"scene\"]},\n"
             " {\"prompt_en\": \"still \\u0077ater\", \"dimension\": [\"temporal_flickering\"]}]\n", longp);
    EXPECT(!vb_write_text(P, prompts) && !vb_write_text(E, extended) && !vb_write_text(I, info), "cannot write the test prompt files in %s", tmpdir);

    VbSuite s;
    int rc = vb_suite_load(&s, P, E, I, err);
    EXPECT(rc == 0, "suite load: %s", err);
    if (rc) return;
    EXPECT(s.n == 6, "6 prompt lines read, got %d", s.n);
    EXPECT(!strcmp(s.prompt[1], "a kite, it's \"frozen\" in time"), "CRLF line: got '%s'", s.prompt[1]);
    EXPECT(!strcmp(s.gen_prompt[0], "EXT a red ball rolls from left to right across a table"), "extended prompt of line 1: '%s'", s.gen_prompt[0]);
    EXPECT(!strcmp(s.stem[0], "a red ball rolls left_right"), "slash in a file name: '%s'", s.stem[0]);
    EXPECT(!strcmp(s.stem[2], "tab_here"), "tab in a file name: '%s'", s.stem[2]);
    EXPECT(!strcmp(s.stem[1], s.prompt[1]), "quotes and apostrophes stay: '%s'", s.stem[1]);
    size_t ls = strlen(s.stem[4]);
    EXPECT(ls <= VB_STEM_MAX && ls > VB_STEM_MAX - 3 && !memcmp(s.stem[4], longp, ls) && ((unsigned char)longp[ls] & 0xC0) != 0x80,
           "long prompt cut to %zu bytes (at most %d, on a UTF-8 boundary)", ls, VB_STEM_MAX);
    EXPECT(s.first[3] == 0 && s.first[0] == 0, "line 4 repeats line 1: first = %d", s.first[3]);
    int want_videos[6] = {5, 25, 5, 5, 5, 25};
    int vid_ok = 1; for (int i = 0; i < 6; i++) if (s.first[i] == i && s.videos[i] != want_videos[i]) vid_ok = 0;
    EXPECT(vid_ok, "videos per prompt: %d %d %d - %d %d (want 5 25 5 - 5 25)", s.videos[0], s.videos[1], s.videos[2], s.videos[4], s.videos[5]);
    VbJob* J; int nj; vb_plan(&s, 7, ".npy", &J, &nj);
    EXPECT(nj == 5 + 25 + 5 + 5 + 25, "planned %d videos, want 65 (duplicate line makes none)", nj);
    int distinct = 1, names_ok = 1;
    for (int a = 0; a < nj; a++) for (int b = 0; b < a; b++) { if (J[a].seed == J[b].seed) distinct = 0; if (!strcmp(J[a].file, J[b].file)) names_ok = 0; }
    EXPECT(distinct && names_ok, "every video has its own seed (%d) and file (%d)", distinct, names_ok);
    EXPECT(!strcmp(J[0].file, "a red ball rolls left_right-0.npy") && !strcmp(J[5 + 24].file, "a kite, it's \"frozen\" in time-24.npy"),
           "file names '%s', '%s'", J[0].file, J[5 + 24].file);
    int fit = 1; for (int a = 0; a < nj; a++) if (strlen(J[a].file) + strlen(".partial") > VB_NAME_MAX) fit = 0;
    EXPECT(fit, "every file name fits NAME_MAX");
    EXPECT(J[0].seed == vb_seed(7, s.prompt[0], 0) && J[1].seed == J[0].seed + 1 && vb_seed(8, s.prompt[0], 0) != J[0].seed,
           "seeds: a function of (base, prompt, index); another base gives others");
    printf("  %d lines -> %d videos (one duplicate line, two flickering prompts x 25); e.g. '%s' seed %llu\n", s.n, nj, J[5].file, (unsigned long long)J[5].seed);
    free(J);

    char q[256]; vb_shell_quote(q, sizeof(q), "it's a/b");
    EXPECT(!strcmp(q, "'it'\\''s a/b'"), "shell quoting of an apostrophe: %s", q);

    // an uninterrupted run, and a run stopped after 7 videos, then one failing, then resumed
    VbTinyModel m; vb_tiny_init(&m);
    VbReport r1, r2;
    rc = vb_run(&s, out1, ".npy", 7, "tiny random model, M=1", vb_tiny_generate, &m, 0, &r1, err);
    EXPECT(rc == 0 && r1.made == nj && r1.already == 0 && r1.duplicates == 1, "full run: rc %d made %d of %d (%s)", rc, r1.made, nj, rc ? err : "");
    EXPECT(vb_count_files(out1, ".npy") == nj, "full run wrote %d .npy files, want %d", vb_count_files(out1, ".npy"), nj);
    vb_tiny_free(&m); vb_tiny_init(&m);
    rc = vb_run(&s, out2, ".npy", 7, "tiny random model, M=1", vb_tiny_generate, &m, 7, &r2, err);
    EXPECT(rc == 0 && r2.made == 7, "interrupted run made %d, want 7", r2.made);
    m.fail_at = m.calls + 3;
    rc = vb_run(&s, out2, ".npy", 7, "tiny random model, M=1", vb_tiny_generate, &m, 0, &r2, err);
    EXPECT(rc != 0 && r2.already == 7 && r2.made == 2 && strstr(err, "on purpose"), "failing generator stops the run: rc %d, already %d, made %d: %s", rc, r2.already, r2.made, err);
    EXPECT(vb_count_files(out2, ".npy") == 9, "after the failure %d files under their final names, want 9 (the failed one is not there)", vb_count_files(out2, ".npy"));
    m.fail_at = 0;
    rc = vb_run(&s, out2, ".npy", 7, "tiny random model, M=1", vb_tiny_generate, &m, 0, &r2, err);
    EXPECT(rc == 0 && r2.already == 9 && r2.made == nj - 9, "resume: already %d made %d (want 9, %d): %s", r2.already, r2.made, nj - 9, rc ? err : "");
    EXPECT(m.made_twice == 0, "resume remade %d finished files", m.made_twice);
    VbJob* J2; vb_plan(&s, 7, ".npy", &J2, &nj);
    int same = 1;
    for (int a = 0; a < nj; a++) {
        snprintf(path, sizeof(path), "%s/%s", out1, J2[a].file); snprintf(path2, sizeof(path2), "%s/%s", out2, J2[a].file);
        if (!vb_same_file(path, path2)) { same = 0; printf("  differs: %s\n", J2[a].file); }
    }
    snprintf(path, sizeof(path), "%s/manifest.tsv", out1); snprintf(path2, sizeof(path2), "%s/manifest.tsv", out2);
    EXPECT(same && vb_same_file(path, path2), "resumed suite equals the uninterrupted one, byte for byte (videos %d, manifest %d)", same, vb_same_file(path, path2));
    printf("  full run %d videos; interrupted at 7, failed at 10, resumed: %d made, every file and the manifest identical\n", r1.made, r2.made);
    // the manifest names the seed of every video, in the plan's order
    char* man; size_t ml;
    if (!st_read_small_file(path, &man, &ml, err)) {
        char row[512]; snprintf(row, sizeof(row), "\n%s\t2\t24\t%llu\ta kite, it's \"frozen\" in time\tEXT a kite hangs still in the sky\n", J2[29].file, (unsigned long long)J2[29].seed);
        EXPECT(strstr(man, row) != NULL, "manifest row of video 24 of line 2 not found");
        EXPECT(strstr(man, "\ttab\\there\tEXT tab\n") != NULL, "manifest escapes a tab in a prompt as \\t");
        free(man);
    }
    free(J2);
    // resuming with other settings refuses
    rc = vb_run(&s, out2, ".npy", 8, "tiny random model, M=1", vb_tiny_generate, &m, 0, &r2, err);
    EXPECT(rc != 0 && strstr(err, "different suite") && strstr(err, "line 2"), "resume with another seed refuses: %s", err);
    printf("  another base seed on the same directory -> %s\n", err);
    rc = vb_run(&s, out2, ".npy", 7, "tiny random model, M=2", vb_tiny_generate, &m, 0, &r2, err);
    EXPECT(rc != 0 && strstr(err, "line 3"), "resume with other generator settings refuses: %s", err);
    vb_tiny_free(&m);
    vb_suite_free(&s);

    // bad inputs
    char bad[1024]; snprintf(bad, sizeof(bad), "%s/vb_bad.txt", tmpdir);
    vb_write_text(bad, "one\n\nthree\n");
    EXPECT(vb_suite_load(&s, bad, NULL, NULL, err) && strstr(err, "line 2 is empty"), "empty line: %s", err);
    printf("  empty line -> %s\n", err);
    vb_write_text(bad, "one\ntwo\n");
    EXPECT(vb_suite_load(&s, P, bad, NULL, err) && strstr(err, "line for line"), "extended file of another length: %s", err);
    printf("  extended file of another length -> %s\n", err);
    vb_write_text(bad, "a/b\na_b\n");
    EXPECT(vb_suite_load(&s, bad, NULL, NULL, err) && strstr(err, "different prompts"), "two prompts, one file name: %s", err);
    printf("  two prompts, one file name -> %s\n", err);
    vb_write_text(bad, "still water\nnot in the info file\n");
    EXPECT(vb_suite_load(&s, bad, NULL, I, err) && strstr(err, "line 2"), "prompt missing from the info file: %s", err);
    printf("  prompt missing from the info file -> %s\n", err);
    vb_write_text(bad, "{\"prompt_en\": 1}");
    EXPECT(vb_suite_load(&s, P, NULL, bad, err) && strstr(err, "array"), "info file not an array: %s", err);
    EXPECT(vb_suite_load(&s, P, NULL, NULL, err) == 0 && s.videos[1] == 5, "without an info file every prompt gets 5 videos");
    vb_suite_free(&s);
}
