// world/world_cli.h: `world <command> [flags]`, the built-in world's command line (test_tmd forwards to world_main).
//   gen     generate the datasets (GPU and tiny sizes) into data/, plus a contact sheet of real clips
//   sheet   contact sheet (PNG) and, when ffmpeg is present, an .mp4 of a dataset or clips file
//   score   score clips against their captions (toy VBench), against a reference set of real clips (--real)
//   render  render captions you write into a contact sheet (the renderer as a tool)
//   encode  show how the text encoder reads a caption
// The usage text is generated from WORLD_FLAGS, the same table the parser reads.
#pragma once
#include "world.h"        // grammar, renderer, dataset files
#include "text.h"         // text encoder
#include "score.h"        // toy VBench
#include "png.h"          // contact sheets, mp4
#include "../lib/timer.h" // now_s
#include <sys/stat.h>
#include <errno.h>
#include <time.h>

typedef struct {
    const char* cmds; // commands that take it, space separated
    const char* name; // "--out"
    const char* arg;  // value placeholder, NULL for a switch
    const char* def;  // default value (NULL: none)
    const char* help;
} WorldFlag;

static const WorldFlag WORLD_FLAGS[] = {
    {"gen", "--out", "DIR", "data", "directory for world_{gpu,tiny}_{train,eval}.safetensors and the sheets"},
    {"gen", "--size", "WHICH", "both", "gpu, tiny or both"},
    {"gen", "--n-train", "N", NULL, "training clips per size (default: gpu 2048, tiny 1024)"},
    {"gen", "--n-eval", "N", NULL, "evaluation clips per size, half of them held-out (default: gpu 256, tiny 64)"},
    {"gen render", "--seed", "S", "1", "seed: the data is a pure function of it"},
    {"gen", "--sheet-n", "N", "8", "clips in each contact sheet (half held-out, half seen)"},
    {"sheet", "--in", "FILE", NULL, "dataset or clips file (.safetensors with clips [N,3,T,H,W] + captions)"},
    {"sheet render", "--out", "PNG", "sheet.png", "contact sheet to write"},
    {"sheet render", "--mp4", "MP4", NULL, "also write an .mp4 (needs ffmpeg on the PATH)"},
    {"sheet", "--first", "I", "0", "first clip to draw"},
    {"sheet", "--n", "N", "8", "number of clips to draw"},
    {"sheet render", "--scale", "K", "0", "pixel replication factor (0: frames ~64 px)"},
    {"sheet render", "--fps", "F", "4", "mp4 frame rate"},
    {"score", "--clips", "FILE", NULL, "clips to score, with their captions in the metadata"},
    {"score", "--real", "FILE", NULL,
     "real clips for the Frechet distance (required; a set other than --clips, e.g. "
     "data/world_<size>_train.safetensors)"},
    {"score", "--per-clip", NULL, NULL, "also print what was found in every clip"},
    {"render", "--caption", "TEXT", NULL, "captions to render, up to 16, ';'-separated"},
    {"encode", "--caption", "TEXT", NULL, "the caption to encode"},
    {"render encode", "--size", "WHICH", "gpu", "gpu or tiny: clip and text sizes"},
};
#define WORLD_N_FLAGS ((int)(sizeof(WORLD_FLAGS) / sizeof(WORLD_FLAGS[0])))

static const char* const WORLD_CMDS[][2] = {
    {"gen", "generate the datasets into data/ (both sizes) and contact sheets of real clips"},
    {"sheet", "contact sheet (and mp4 with ffmpeg) of a dataset or clips file"},
    {"score", "score clips against their captions: toy VBench (quality, semantic, total)"},
    {"render", "render captions into a contact sheet"},
    {"encode", "show how the text encoder reads a caption"},
};
#define WORLD_N_CMDS 5

static inline int world_cmd_has(const char* cmds, const char* cmd) { // is cmd a word of the space-separated list cmds?
    size_t n = strlen(cmd);
    for (const char* p = cmds; (p = strstr(p, cmd)) != NULL; p += n)
        if ((p == cmds || p[-1] == ' ') && (p[n] == 0 || p[n] == ' ')) return 1;
    return 0;
}

static inline void world_usage(FILE* f, const char* cmd) {
    fprintf(f, "usage: world <command> [flags]   (./test_tmd world ...)\n");
    for (int c = 0; c < WORLD_N_CMDS; c++) {
        if (cmd && strcmp(cmd, WORLD_CMDS[c][0]) != 0) continue;
        fprintf(f, "\n  %-7s %s\n", WORLD_CMDS[c][0], WORLD_CMDS[c][1]);
        for (int i = 0; i < WORLD_N_FLAGS; i++) {
            const WorldFlag* fl = &WORLD_FLAGS[i];
            if (!world_cmd_has(fl->cmds, WORLD_CMDS[c][0])) continue;
            char lhs[64];
            snprintf(lhs, sizeof(lhs), "%s%s%s", fl->name, fl->arg ? " " : "", fl->arg ? fl->arg : "");
            fprintf(f, "    %-18s %s", lhs, fl->help);
            if (fl->def) fprintf(f, " [%s]", fl->def);
            fprintf(f, "\n");
        }
    }
}

// parses argv (after the command) against the flags of cmd into vals[WORLD_N_FLAGS]; returns 0, 1 on error
static inline int world_parse_flags(const char* cmd, int argc, char** argv, const char** vals) {
    for (int i = 0; i < WORLD_N_FLAGS; i++)
        vals[i] = world_cmd_has(WORLD_FLAGS[i].cmds, cmd) ? WORLD_FLAGS[i].def : NULL;
    for (int a = 0; a < argc; a++) {
        int k = -1;
        for (int i = 0; i < WORLD_N_FLAGS && k < 0; i++)
            if (strcmp(argv[a], WORLD_FLAGS[i].name) == 0 && world_cmd_has(WORLD_FLAGS[i].cmds, cmd)) k = i;
        if (k < 0) {
            fprintf(stderr, "world %s: unknown flag or argument \"%s\"\n", cmd, argv[a]);
            world_usage(stderr, cmd);
            return 1;
        }
        if (!WORLD_FLAGS[k].arg) {
            vals[k] = "1";
            continue;
        }
        if (a + 1 >= argc) {
            fprintf(stderr, "world %s: %s needs a value (%s)\n", cmd, argv[a], WORLD_FLAGS[k].arg);
            return 1;
        }
        vals[k] = argv[++a];
    }
    return 0;
}

static const char* world_flag(const char* cmd, const char** vals, const char* name) {
    for (int i = 0; i < WORLD_N_FLAGS; i++)
        if (strcmp(WORLD_FLAGS[i].name, name) == 0 && world_cmd_has(WORLD_FLAGS[i].cmds, cmd)) return vals[i];
    return NULL;
}

// integer flag value; NULL or junk -> *out = def / error
static inline int world_flag_int(const char* cmd, const char** vals, const char* name, long long lo, long long hi,
                                 long long def, long long* out) {
    const char* v = world_flag(cmd, vals, name);
    if (!v) {
        *out = def;
        return 0;
    }
    char* end;
    long long x = strtoll(v, &end, 10);
    if (*v == 0 || *end != 0 || x < lo || x > hi) {
        fprintf(stderr, "world %s: %s must be an integer in [%lld, %lld], got \"%s\"\n", cmd, name, lo, hi, v);
        return 1;
    }
    *out = x;
    return 0;
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

static inline int world_cmd_gen(const char** vals) {
    const char* out = world_flag("gen", vals, "--out");
    const char* size = world_flag("gen", vals, "--size");
    long long seed, n_train, n_eval, sheet_n;
    if (world_flag_int("gen", vals, "--seed", 0, (long long)1 << 62, 1, &seed) ||
        world_flag_int("gen", vals, "--n-train", 1, 1 << 20, -1, &n_train) ||
        world_flag_int("gen", vals, "--n-eval", 2, 1 << 20, -1, &n_eval) ||
        world_flag_int("gen", vals, "--sheet-n", 1, 64, 8, &sheet_n))
        return 1;
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

static inline int world_cmd_sheet(const char** vals) {
    const char* in = world_flag("sheet", vals, "--in");
    long long first, n, scale, fps;
    if (!in) {
        fprintf(stderr, "world sheet: --in FILE is required\n");
        world_usage(stderr, "sheet");
        return 1;
    }
    if (world_flag_int("sheet", vals, "--first", 0, 1 << 30, 0, &first) ||
        world_flag_int("sheet", vals, "--n", 1, 256, 8, &n) ||
        world_flag_int("sheet", vals, "--scale", 0, 64, 0, &scale) ||
        world_flag_int("sheet", vals, "--fps", 1, 120, 4, &fps))
        return 1;
    WorldSet s;
    char err[ST_ERRLEN];
    if (world_load(&s, in, err)) {
        fprintf(stderr, "world sheet: %s\n", err);
        return 1;
    }
    if (first >= s.n) {
        fprintf(stderr, "world sheet: --first %lld but %s has %d clips\n", first, in, s.n);
        world_set_free(&s);
        return 1;
    }
    if (first + n > s.n) n = s.n - first;
    int* idx = (int*)malloc(sizeof(int) * (size_t)n);
    for (int i = 0; i < n; i++) idx[i] = (int)first + i;
    int rc = world_write_sheet(&s, idx, (int)n, world_flag("sheet", vals, "--out"), world_flag("sheet", vals, "--mp4"),
                               (int)scale, (int)fps);
    free(idx);
    world_set_free(&s);
    return rc;
}

static inline int world_cmd_score(const char** vals) {
    const char* in = world_flag("score", vals, "--clips");
    const char* real_path = world_flag("score", vals, "--real");
    int per_clip = world_flag("score", vals, "--per-clip") != NULL;
    if (!in) {
        fprintf(stderr, "world score: --clips FILE is required\n");
        world_usage(stderr, "score");
        return 1;
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
    int rc =
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

static inline int world_cmd_render(const char** vals) {
    const char* text = world_flag("render", vals, "--caption");
    const char* size = world_flag("render", vals, "--size");
    long long seed, scale, fps;
    WorldConfig c;
    if (!text) {
        fprintf(stderr, "world render: --caption TEXT is required\n");
        world_usage(stderr, "render");
        return 1;
    }
    if (world_config_by_name(&c, size)) {
        fprintf(stderr, "world render: --size must be gpu or tiny, got \"%s\"\n", size);
        return 1;
    }
    if (world_flag_int("render", vals, "--seed", 0, (long long)1 << 62, 1, &seed) ||
        world_flag_int("render", vals, "--scale", 0, 64, 0, &scale) ||
        world_flag_int("render", vals, "--fps", 1, 120, 4, &fps))
        return 1;
    WorldSet s;
    memset(&s, 0, sizeof(s));
    s.C = 3;
    s.T = c.T;
    s.H = c.H;
    s.W = c.W;
    s.clips = (float*)malloc(sizeof(float) * world_clip_numel(&c) * 16);
    s.captions = (char**)calloc(16, sizeof(char*));
    int rc = 0;
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
        rc |= world_write_sheet(&s, idx, s.n, world_flag("render", vals, "--out"), world_flag("render", vals, "--mp4"),
                                (int)scale, (int)fps);
    }
    world_set_free(&s);
    return rc;
}

static inline int world_cmd_encode(const char** vals) {
    const char* text = world_flag("encode", vals, "--caption");
    WorldConfig c;
    if (!text) {
        fprintf(stderr, "world encode: --caption TEXT is required\n");
        return 1;
    }
    if (world_config_by_name(&c, world_flag("encode", vals, "--size"))) {
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
        world_usage(argc < 1 ? stderr : stdout, NULL);
        return argc < 1 ? 1 : 0;
    }
    const char* cmd = argv[0];
    int known = 0;
    for (int c = 0; c < WORLD_N_CMDS; c++) known |= strcmp(cmd, WORLD_CMDS[c][0]) == 0;
    if (!known) {
        fprintf(stderr, "world: unknown command \"%s\"\n", cmd);
        world_usage(stderr, NULL);
        return 1;
    }
    for (int a = 1; a < argc; a++)
        if (strcmp(argv[a], "--help") == 0 || strcmp(argv[a], "-h") == 0) {
            world_usage(stdout, cmd);
            return 0;
        }
    const char* vals[WORLD_N_FLAGS];
    if (world_parse_flags(cmd, argc - 1, argv + 1, vals)) return 1;
    if (strcmp(cmd, "gen") == 0) return world_cmd_gen(vals);
    if (strcmp(cmd, "sheet") == 0) return world_cmd_sheet(vals);
    if (strcmp(cmd, "score") == 0) return world_cmd_score(vals);
    if (strcmp(cmd, "render") == 0) return world_cmd_render(vals);
    return world_cmd_encode(vals);
}
