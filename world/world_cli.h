// world/world_cli.h: `world <command> [flags]`, the built-in world's command line (test_tmd forwards to world_main).
//   gen     generate the datasets (GPU and tiny sizes) into data/, plus a contact sheet of real clips
//   sheet   contact sheet (PNG) and, when ffmpeg is present, an .mp4 of a dataset or clips file
//   score   score clips against their captions (toy VBench), against a reference set of real clips (--real)
//   render  render captions you write into a contact sheet (the renderer as a tool)
//   encode  show how the text encoder reads a caption
// Each command's flags are a lib/flags.h table: the parser and the usage text (world <command> --help) read it.
#pragma once
#include "world.h"        // grammar, renderer, dataset files
#include "text.h"         // text encoder
#include "score.h"        // toy VBench
#include "png.h"          // contact sheets, mp4
#include "../lib/timer.h" // now_s
#include "../lib/flags.h" // flag tables
#include <sys/stat.h>
#include <errno.h>
#include <time.h>

static const char* const WORLD_CMDS[][2] = {
    {"gen", "generate the datasets into data/ (both sizes) and contact sheets of real clips"},
    {"sheet", "contact sheet (and mp4 with ffmpeg) of a dataset or clips file"},
    {"score", "score clips against their captions: toy VBench (quality, semantic, total)"},
    {"render", "render captions into a contact sheet"},
    {"encode", "show how the text encoder reads a caption"},
};
#define WORLD_N_CMDS 5

static inline void world_usage(FILE* f) {
    fprintf(f, "usage: ./test_tmd world <command> [flags]; ./test_tmd world <command> --help lists its flags\n");
    for (int c = 0; c < WORLD_N_CMDS; c++) fprintf(f, "  %-7s %s\n", WORLD_CMDS[c][0], WORLD_CMDS[c][1]);
}

// flags_parse for a world command: 0 to go on, else the exit code (0 after --help, 2 after a bad flag)
static inline int world_flags(const Flag* flags, int argc, char** argv, const char* cmd, int* done) {
    char synopsis[160];
    for (int c = 0; c < WORLD_N_CMDS; c++)
        if (!strcmp(WORLD_CMDS[c][0], cmd))
            snprintf(synopsis, sizeof(synopsis), "usage: ./test_tmd world %s [flags]   (%s)", cmd, WORLD_CMDS[c][1]);
    int rc = flags_parse(flags, argc, argv, 1, synopsis);
    *done = rc != 0;
    return rc == 1 ? 0 : rc;
}

static inline int world_mkdir(const char* dir) {
    if (mkdir(dir, 0755) == 0 || errno == EEXIST) return 0;
    fprintf(stderr, "world: cannot create directory %s: %s\n", dir, strerror(errno));
    return 1;
}

// sheet (and mp4 when asked and possible) of clips [first, first + n) of a set; held-out captions are marked
static inline int world_write_sheet(const WorldSet* s, const int* idx, int n, const char* png, const char* mp4,
                                    int scale, int fps) {
    size_t numel = (size_t)s->C * s->T * s->H * s->W;
    float* clips = (float*)malloc(sizeof(float) * numel * (size_t)n);
    char** caps = (char**)malloc(sizeof(char*) * (size_t)n);
    for (int i = 0; i < n; i++) {
        memcpy(clips + (size_t)i * numel, s->clips + (size_t)idx[i] * numel, sizeof(float) * numel);
        caps[i] = (char*)malloc(WORLD_CAPLEN + 64);
        snprintf(caps[i], WORLD_CAPLEN + 64, "%d%s: %s", idx[i],
                 s->heldout && s->heldout[idx[i]] > 0.5f ? " [held-out]" : "", s->captions[idx[i]]);
    }
    char err[PNG_ERRLEN];
    int rc = png_write_sheet(png, clips, n, s->T, s->H, s->W, (const char* const*)caps, scale, err);
    if (rc)
        fprintf(stderr, "world: %s\n", err);
    else
        printf("wrote %s (%d clips)\n", png, n);
    if (!rc && mp4) {
        int m = png_write_mp4(mp4, clips, n, s->T, s->H, s->W, (const char* const*)caps, fps, err);
        if (m == 2)
            printf("%s\n", err); // no ffmpeg: say so, not an error
        else if (m) {
            fprintf(stderr, "world: %s\n", err);
            rc = 1;
        } else
            printf("wrote %s\n", mp4);
    }
    for (int i = 0; i < n; i++) free(caps[i]);
    free(caps);
    free(clips);
    return rc;
}

static inline int world_cmd_gen(int argc, char** argv) {
    const char* out = "data";
    const char* size = "both";
    long long seed = 1;
    int n_train = 0, n_eval = 0, sheet_n = 8, done;
    Flag flags[] = {
        FLAG_STR("--out", &out, "directory for world_{gpu,tiny}_{train,eval}.safetensors and the sheets"),
        FLAG_STR("--size", &size, "gpu, tiny or both"),
        FLAG_INT_R("--n-train", &n_train, 0, 1 << 20, "training clips per size (0: gpu 2048, tiny 1024)"),
        FLAG_INT_R("--n-eval", &n_eval, 0, 1 << 20, "evaluation clips per size, half held-out (0: gpu 256, tiny 64)"),
        FLAG_I64_R("--seed", &seed, 0, (long long)1 << 62, "seed: the data is a pure function of it"),
        FLAG_INT_R("--sheet-n", &sheet_n, 1, 64, "clips in each contact sheet (half held-out, half seen)"),
        FLAG_END};
    int rc = world_flags(flags, argc, argv, "gen", &done);
    if (done) return rc;
    if (n_eval == 1) {
        fprintf(stderr, "world gen: --n-eval must be 0 (the default) or at least 2 (half the set is held-out)\n");
        return 2;
    }
    if (strcmp(size, "gpu") && strcmp(size, "tiny") && strcmp(size, "both")) {
        fprintf(stderr, "world gen: --size must be gpu, tiny or both, got \"%s\"\n", size);
        return 1;
    }
    if (world_mkdir(out)) return 1;
    int have_ffmpeg = png_have_ffmpeg();
    printf("ffmpeg: %s\n", have_ffmpeg ? "found, writing mp4 too" : "not found on the PATH, PNG sheets only");
    for (int w = 0; w < 2; w++) {
        WorldConfig c = w == 0 ? world_config_gpu() : world_config_tiny();
        if (strcmp(size, "both") && strcmp(size, c.name)) continue;
        for (int split = 0; split < 2; split++) {
            int n = split == 0 ? (n_train > 0 ? (int)n_train : c.n_train) : (n_eval > 0 ? (int)n_eval : c.n_eval);
            char path[1024];
            snprintf(path, sizeof(path), "%s/world_%s_%s.safetensors", out, c.name, split == 0 ? "train" : "eval");
            double t0 = now_s();
            WorldSet s;
            world_generate(&c, split == 0 ? WORLD_TRAIN : WORLD_HELDOUT, n, (uint64_t)seed, &s);
            double t1 = now_s();
            char err[ST_ERRLEN];
            if (world_save(&s, path, (uint64_t)seed, err)) {
                fprintf(stderr, "world gen: %s\n", err);
                world_set_free(&s);
                return 1;
            }
            int nh = 0;
            for (int i = 0; i < n; i++) nh += s.heldout[i] > 0.5f;
            double mb = (double)n * (world_clip_numel(&c) + (size_t)c.text_len * c.text_dim) * 4 / 1e6;
            printf("wrote %s: %d clips [3,%d,%d,%d] (%d held-out), context [%d,%d], %.1f MB; render %.2f s, write %.2f "
                   "s \n",
                   path, n, c.T, c.H, c.W, nh, c.text_len, c.text_dim, mb, t1 - t0, now_s() - t1);
            if (split == 1) { // contact sheet of real clips: the first held-out ones and the first seen ones
                int idx[64], k = 0, half = (int)sheet_n / 2;
                for (int i = 0; i < n && k < half; i++)
                    if (s.heldout[i] > 0.5f) idx[k++] = i;
                for (int i = 0; i < n && k < sheet_n; i++)
                    if (s.heldout[i] <= 0.5f) idx[k++] = i;
                char png[1024], mp4[1024];
                snprintf(png, sizeof(png), "%s/world_%s_sheet.png", out, c.name);
                snprintf(mp4, sizeof(mp4), "%s/world_%s_sheet.mp4", out, c.name);
                if (world_write_sheet(&s, idx, k, png, have_ffmpeg ? mp4 : NULL, 0, 4)) {
                    world_set_free(&s);
                    return 1;
                }
            }
            world_set_free(&s);
        }
    }
    return 0;
}

static inline int world_cmd_sheet(int argc, char** argv) {
    const char *in = NULL, *png = "sheet.png", *mp4 = NULL;
    int first = 0, n = 8, scale = 0, fps = 4, done;
    Flag flags[] = {
        FLAG_STR("--in", &in, "dataset or clips file (.safetensors with clips [N,3,T,H,W] + captions); required"),
        FLAG_STR("--out", &png, "contact sheet to write"),
        FLAG_STR("--mp4", &mp4, "also write an .mp4 (needs ffmpeg on the PATH)"),
        FLAG_INT_R("--first", &first, 0, 1 << 30, "first clip to draw"),
        FLAG_INT_R("--n", &n, 1, 256, "number of clips to draw"),
        FLAG_INT_R("--scale", &scale, 0, 64, "pixel replication factor (0: frames ~64 px)"),
        FLAG_INT_R("--fps", &fps, 1, 120, "mp4 frame rate"),
        FLAG_END};
    int rc = world_flags(flags, argc, argv, "sheet", &done);
    if (done) return rc;
    if (!in) {
        fprintf(stderr, "world sheet: --in FILE is required (see --help)\n");
        return 2;
    }
    WorldSet s;
    char err[ST_ERRLEN];
    if (world_load(&s, in, err)) {
        fprintf(stderr, "world sheet: %s\n", err);
        return 1;
    }
    if (first >= s.n) {
        fprintf(stderr, "world sheet: --first %d but %s has %d clips\n", first, in, s.n);
        world_set_free(&s);
        return 1;
    }
    if (first + n > s.n) n = s.n - first;
    int* idx = (int*)malloc(sizeof(int) * (size_t)n);
    for (int i = 0; i < n; i++) idx[i] = (int)first + i;
    rc = world_write_sheet(&s, idx, (int)n, png, mp4, (int)scale, (int)fps);
    free(idx);
    world_set_free(&s);
    return rc;
}

static inline int world_cmd_score(int argc, char** argv) {
    const char *in = NULL, *real_path = NULL;
    int per_clip = 0, done;
    Flag flags[] = {FLAG_STR("--clips", &in, "clips to score, with their captions in the metadata; required"),
                    FLAG_STR("--real", &real_path,
                             "real clips for the Frechet distance; required, and not the --clips file "
                             "(e.g. data/world_<size>_eval.safetensors for samples of its captions)"),
                    FLAG_SWITCH("--per-clip", &per_clip, "also print what was found in every clip"), FLAG_END};
    int rc = world_flags(flags, argc, argv, "score", &done);
    if (done) return rc;
    if (!in) {
        fprintf(stderr, "world score: --clips FILE is required (see --help)\n");
        return 2;
    }
    // no default reference: the evaluation set scored against itself gave a Frechet term of 0 without a word
    if (!real_path) {
        fprintf(stderr,
                "world score: --real FILE is required: the real clips the Frechet distance compares with (for "
                "samples of the evaluation captions: data/world_<size>_eval.safetensors; to score that set itself: "
                "data/world_<size>_train.safetensors)\n");
        return 1;
    }
    struct stat st_in, st_real;
    if (stat(in, &st_in) == 0 && stat(real_path, &st_real) == 0 && st_in.st_dev == st_real.st_dev &&
        st_in.st_ino == st_real.st_ino) {
        fprintf(stderr,
                "world score: --clips and --real are the same file (%s): the Frechet distance of a set to itself is 0; "
                "pass another set of real clips as --real\n",
                in);
        return 1;
    }
    WorldSet s, r;
    char err[ST_ERRLEN];
    if (world_load(&s, in, err)) {
        fprintf(stderr, "world score: %s\n", err);
        return 1;
    }
    WorldConfig c;
    int known = world_config_for_shape(&c, s.T, s.H, s.W) == 0;
    if (world_load(&r, real_path, err)) {
        fprintf(stderr, "world score: reference: %s\n", err);
        world_set_free(&s);
        return 1;
    }
    ScoreRef ref;
    ScoreClip* pc = (ScoreClip*)malloc(sizeof(ScoreClip) * (size_t)s.n);
    WorldScore sc;
    rc =
        score_ref_init(&ref, r.clips, r.n, r.T, r.H, r.W, err) ||
        score_clips(&sc, s.clips, s.n, s.T, s.H, s.W, (const char* const*)s.captions, &ref, known ? &c : NULL, pc, err);
    if (rc)
        fprintf(stderr, "world %s\n", err); // err starts with "score: "
    else {
        if (per_clip)
            for (int i = 0; i < s.n; i++) {
                printf("%4d %-80s", i, s.captions[i]);
                if (!pc[i].parsed) {
                    printf(" (not a world caption)\n");
                    continue;
                }
                printf(" colour %.2f shape %.2f count %.0f (found %d) motion %.2f | sharp %.3f temporal %.3f bg %.3f\n",
                       pc[i].colour, pc[i].shape, pc[i].count, pc[i].n_found, pc[i].motion, pc[i].sharpness,
                       pc[i].temporal, pc[i].background);
            }
        char label[1200];
        snprintf(label, sizeof(label), "%s vs real %s (%d)", in, real_path, r.n);
        score_print(stdout, &sc, label);
    }
    free(pc);
    world_set_free(&s);
    world_set_free(&r);
    return rc;
}

static inline int world_cmd_render(int argc, char** argv) {
    const char *text = NULL, *size = "gpu", *png = "sheet.png", *mp4 = NULL;
    long long seed = 1;
    int scale = 0, fps = 4, done;
    Flag flags[] = {FLAG_STR("--caption", &text, "captions to render, up to 16, ';'-separated; required"),
                    FLAG_STR("--size", &size, "gpu or tiny: clip and text sizes"),
                    FLAG_I64_R("--seed", &seed, 0, (long long)1 << 62, "seed of the objects' placement"),
                    FLAG_STR("--out", &png, "contact sheet to write"),
                    FLAG_STR("--mp4", &mp4, "also write an .mp4 (needs ffmpeg on the PATH)"),
                    FLAG_INT_R("--scale", &scale, 0, 64, "pixel replication factor (0: frames ~64 px)"),
                    FLAG_INT_R("--fps", &fps, 1, 120, "mp4 frame rate"),
                    FLAG_END};
    int rc = world_flags(flags, argc, argv, "render", &done);
    if (done) return rc;
    WorldConfig c;
    if (!text) {
        fprintf(stderr, "world render: --caption TEXT is required (see --help)\n");
        return 2;
    }
    if (world_config_by_name(&c, size)) {
        fprintf(stderr, "world render: --size must be gpu or tiny, got \"%s\"\n", size);
        return 1;
    }
    WorldSet s;
    memset(&s, 0, sizeof(s));
    s.C = 3;
    s.T = c.T;
    s.H = c.H;
    s.W = c.W;
    s.clips = (float*)malloc(sizeof(float) * world_clip_numel(&c) * 16);
    s.captions = (char**)calloc(16, sizeof(char*));
    for (const char* p = text; *p && s.n < 16;) {
        const char* e = strchr(p, ';');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        char cap[512], err[256];
        snprintf(cap, sizeof(cap), "%.*s", (int)(len < 511 ? len : 511), p);
        p += len + (e ? 1 : 0);
        WorldScene sc;
        if (world_parse_caption(cap, &sc, err)) {
            fprintf(stderr, "world render: \"%s\": %s\n", cap, err);
            rc = 1;
            continue;
        }
        WRng r = wrng_seed((uint64_t)seed, 3, (uint64_t)s.n);
        for (int i = 0; i < sc.n_obj; i++) world_place(&r, &sc.obj[i]);
        for (int tries = 0; sc.n_obj == 2 && tries < 256 && world_objects_collide(&sc.obj[0], &sc.obj[1]); tries++)
            world_place(&r, &sc.obj[1]);
        world_render_clip(s.clips + world_clip_numel(&c) * (size_t)s.n, &sc, c.T, c.H, c.W);
        s.captions[s.n] = (char*)malloc(WORLD_CAPLEN);
        world_caption(&sc, s.captions[s.n], WORLD_CAPLEN); // canonical form
        s.n++;
    }
    if (s.n) {
        int idx[16] = {0};
        for (int i = 0; i < s.n; i++) idx[i] = i;
        rc |= world_write_sheet(&s, idx, s.n, png, mp4, (int)scale, (int)fps);
    }
    world_set_free(&s);
    return rc;
}

static inline int world_cmd_encode(int argc, char** argv) {
    const char *text = NULL, *size = "gpu";
    int done;
    Flag flags[] = {FLAG_STR("--caption", &text, "the caption to encode; required"),
                    FLAG_STR("--size", &size, "gpu or tiny: text sizes"), FLAG_END};
    int rc = world_flags(flags, argc, argv, "encode", &done);
    if (done) return rc;
    WorldConfig c;
    if (!text) {
        fprintf(stderr, "world encode: --caption TEXT is required (see --help)\n");
        return 2;
    }
    if (world_config_by_name(&c, size)) {
        fprintf(stderr, "world encode: --size must be gpu or tiny\n");
        return 1;
    }
    TextEncoder te = world_text_encoder(&c);
    float* ctx = (float*)malloc(sizeof(float) * (size_t)c.text_len * c.text_dim);
    TextInfo info;
    text_encode(&te, text, ctx, &info);
    printf("context [%d, %d]: %d words, %d rows used, %d unknown\n", c.text_len, c.text_dim, info.n_words, info.n_used,
           info.n_unknown);
    for (int i = 0; i < c.text_len; i++) {
        printf("  row %2d:", i);
        for (int d = 0; d < 6; d++) printf(" %+.3f", ctx[i * c.text_dim + d]);
        printf(" ...%s\n", i < info.n_used ? "" : " (padding)");
    }
    WorldScene sc;
    char err[256];
    if (world_parse_caption(text, &sc, err))
        printf("not a world caption: %s\n", err);
    else
        printf("parses as a world caption with %d object(s)\n", sc.n_obj);
    free(ctx);
    return 0;
}

static inline int world_main(int argc, char** argv) {
    if (argc < 1 || strcmp(argv[0], "--help") == 0 || strcmp(argv[0], "-h") == 0 || strcmp(argv[0], "help") == 0) {
        world_usage(argc < 1 ? stderr : stdout);
        return argc < 1 ? 2 : 0;
    }
    const char* cmd = argv[0];
    if (strcmp(cmd, "gen") == 0) return world_cmd_gen(argc, argv);
    if (strcmp(cmd, "sheet") == 0) return world_cmd_sheet(argc, argv);
    if (strcmp(cmd, "score") == 0) return world_cmd_score(argc, argv);
    if (strcmp(cmd, "render") == 0) return world_cmd_render(argc, argv);
    if (strcmp(cmd, "encode") == 0) return world_cmd_encode(argc, argv);
    fprintf(stderr, "world: unknown command \"%s\"\n", cmd);
    world_usage(stderr);
    return 2;
}
