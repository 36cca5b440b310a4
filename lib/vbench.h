// lib/vbench.h: the VBench sampling suite as plain C: which videos to make, what to call them, which seed each
// gets, and how a half-done suite resumes. sample_tmd --prompts drives it with the GPU sampler; the CPU tests drive
// it with a tiny random model (lib/vbench_tests.h).
// VBench's rules (its prompts/README.md; the TMD paper samples from Wan's extended prompts):
//   - one prompt a line; 5 videos per prompt, 25 for prompts of the `temporal_flickering` dimension (which
//     dimensions a prompt serves comes from VBench_full_info.json: [{"prompt_en": ..., "dimension": [...]}, ...]);
//   - files `{prompt}-{index}` + extension, named after the ORIGINAL prompt even when the extended prompt (a second
//     file, line for line) was used for generation;
//   - a different seed per video, every seed recorded.
// Choices made here:
//   - seed(prompt, i) = (FNV-1a-64(prompt) XOR splitmix64(base_seed)) mod 2^62 + i: a function of the prompt's
//     text, not of its line, so a subset or a reordered prompt file gives every prompt the same videos;
//   - a prompt that appears on several lines names the same files: its videos are made once (at the most videos
//     any of its lines asks for); two DIFFERENT prompts whose file names would coincide are an error;
//   - characters a file name cannot hold ('/', control characters) become '_', and names are cut (on a UTF-8
//     boundary) to fit the 255-byte NAME_MAX with the index and extension; the manifest keeps the exact prompt;
//   - every video is written under OUT/.partial/ and renamed into OUT/ when complete, so a file under its final
//     name is always whole, and resuming = skipping the files that exist;
//   - OUT/manifest.tsv is written (atomically) before the first video: the whole plan with every seed, and the
//     generator's settings; a resume whose plan differs in any line refuses instead of mixing two suites.
#pragma once
#include "rng.h"           // splitmix64_mix
#include "safetensors.h"   // ST_ERRLEN, st_errf, the JSON reader, st_read_small_file, atomic writes
#include <sys/stat.h>
#include <sys/types.h>
#include <errno.h>

#define VB_VIDEOS 5
#define VB_VIDEOS_FLICKER 25
#define VB_NAME_MAX 255            // bytes of one path component (Linux NAME_MAX)
#define VB_STEM_MAX (VB_NAME_MAX - 16)  // room for "-24" and the extension

typedef struct {
    int n;                // prompt lines
    char** prompt;        // [n] the original prompts (they name the files)
    char** gen_prompt;    // [n] what the model is given: the extended prompt, or the original
    char** stem;          // [n] the file-name form of prompt[i]
    int* videos;          // [n] 5, or 25 for temporal_flickering
    int* first;           // [n] the first line with the same prompt (== i for the line that makes the videos)
} VbSuite;

typedef struct {
    int line, index;      // prompt line (0-based) and video index 0..videos-1
    uint64_t seed;
    char file[VB_NAME_MAX + 1];  // "{stem}-{index}{ext}"
} VbJob;

static void vb_suite_free(VbSuite* s) {
    for (int i = 0; i < s->n; i++) {
        if (s->gen_prompt && s->prompt && s->gen_prompt[i] != s->prompt[i]) free(s->gen_prompt[i]);
        if (s->prompt) free(s->prompt[i]);
        if (s->stem) free(s->stem[i]);
    }
    free(s->prompt); free(s->gen_prompt); free(s->stem); free(s->videos); free(s->first);
    memset(s, 0, sizeof(*s));
}

// ---------------------------------------------------------------------------------------------------------
// text files: one prompt a line

static void vb_free_lines(char** lines, int n) { for (int i = 0; i < n; i++) free(lines[i]); free(lines); }

// reads the lines of a text file (a final newline is optional; "\r\n" endings are accepted); an empty line, a NUL
// byte or an empty file is an error naming the line
static int vb_read_lines(const char* path, char*** lines_out, int* n_out, char* err) {
    *lines_out = NULL; *n_out = 0;
    char* buf; size_t len;
    if (st_read_small_file(path, &buf, &len, err)) return 1;
    if (memchr(buf, 0, len)) { st_errf(err, "%s: holds a NUL byte; expected a text file with one prompt a line", path); free(buf); return 1; }
    int cap = 0, n = 0; char** lines = NULL;
    size_t i = 0;
    while (i < len) {
        size_t j = i; while (j < len && buf[j] != '\n') j++;
        size_t e = j; if (e > i && buf[e - 1] == '\r') e--;
        if (e == i) {
            st_errf(err, "%s: line %d is empty; expected one prompt a line (a prompt file and its extended file must correspond line for line)", path, n + 1);
            vb_free_lines(lines, n); free(buf); return 1;
        }
        if (n == cap) { cap = cap ? 2 * cap : 64; lines = (char**)realloc(lines, sizeof(char*) * cap); }
        lines[n] = (char*)malloc(e - i + 1); memcpy(lines[n], buf + i, e - i); lines[n][e - i] = 0; n++;
        i = j + 1;
    }
    free(buf);
    if (n == 0) { st_errf(err, "%s: no prompts (the file is empty); expected one prompt a line", path); return 1; }
    *lines_out = lines; *n_out = n;
    return 0;
}

// ---------------------------------------------------------------------------------------------------------
// file names and seeds

// file-name form of a prompt into out (>= VB_STEM_MAX + 1 bytes): '/' and control characters → '_', cut to
// VB_STEM_MAX bytes without splitting a UTF-8 sequence. Returns 1 when the stem differs from the prompt.
static int vb_file_stem(char* out, const char* prompt) {
    size_t n = strlen(prompt), k = 0; int changed = 0;
    if (n > VB_STEM_MAX) {
        n = VB_STEM_MAX;
        while (n > 0 && ((unsigned char)prompt[n] & 0xC0) == 0x80) n--;   // prompt[n] continues a sequence: cut before it
        changed = 1;
    }
    for (; k < n; k++) {
        unsigned char c = (unsigned char)prompt[k];
        int bad = c == '/' || c < 0x20 || c == 0x7F;
        out[k] = bad ? '_' : (char)c; changed |= bad;
    }
    out[k] = 0;
    return changed;
}

static uint64_t vb_fnv1a64(const char* s) { uint64_t h = 0xcbf29ce484222325ull; for (; *s; s++) { h ^= (unsigned char)*s; h *= 0x100000001b3ull; } return h; }
// the seed of video `index` of `prompt` (see the header: a function of the text, distinct within a prompt)
static uint64_t vb_seed(uint64_t base_seed, const char* prompt, int index) {
    return ((vb_fnv1a64(prompt) ^ splitmix64_mix(base_seed + SPLITMIX64_GAMMA)) & ((1ull << 62) - 1)) + (uint64_t)index;
}

// a string as one single-quoted shell word ('it'\''s'); returns -1 when out (cap bytes) is too small
static int vb_shell_quote(char* out, size_t cap, const char* s) {
    size_t k = 0;
    if (cap < 3) return -1;
    out[k++] = '\'';
    for (; *s; s++) {
        if (*s == '\'') { if (k + 5 >= cap) return -1; memcpy(out + k, "'\\''", 4); k += 4; }
        else { if (k + 2 >= cap) return -1; out[k++] = *s; }
    }
    out[k++] = '\''; out[k] = 0;
    return (int)k;
}

// ---------------------------------------------------------------------------------------------------------
// VBench_full_info.json: which prompts serve temporal_flickering

// sets videos[i] = 25 for every prompt listed with "temporal_flickering" among its dimensions, 5 otherwise.
// Every prompt must have an entry (a prompt missing from the info file means the wrong file: an error).
static int vb_apply_info(VbSuite* s, const char* info_path, char* err) {
    char* buf; size_t len; char msg[320];
    if (st_read_small_file(info_path, &buf, &len, err)) return 1;
    StJson root;
    if (sj_parse(buf, len, &root, msg, sizeof(msg))) { st_errf(err, "%s: not valid JSON: %s", info_path, msg); free(buf); return 1; }
    free(buf);
    int rc = 0;
    if (root.type != SJ_ARR) { st_errf(err, "%s: the top level is a JSON %s, expected an array of {\"prompt_en\": ..., \"dimension\": [...]} (VBench_full_info.json)", info_path, sj_type_name(root.type)); rc = 1; }
    char* found = (char*)calloc(s->n ? s->n : 1, 1);
    for (int e = 0; !rc && e < root.n; e++) {
        const StJson* it = &root.kids[e];
        const StJson* p = sj_get(it, "prompt_en"); const StJson* d = sj_get(it, "dimension");
        if (!p || p->type != SJ_STR || !d || d->type != SJ_ARR) {
            st_errf(err, "%s: entry %d has no string \"prompt_en\" and array \"dimension\"; expected VBench_full_info.json's format", info_path, e); rc = 1; break;
        }
        int flicker = 0;
        for (int k = 0; k < d->n; k++) if (d->kids[k].type == SJ_STR && !strcmp(d->kids[k].s, "temporal_flickering")) flicker = 1;
        for (int i = 0; i < s->n; i++)
            if (!strcmp(s->prompt[i], p->s)) { found[i] = 1; if (flicker) s->videos[i] = VB_VIDEOS_FLICKER; }
    }
    for (int i = 0; !rc && i < s->n; i++)
        if (!found[i]) { st_errf(err, "%s: no entry for prompt line %d (\"%.120s\"); is this the info file of this prompt suite?", info_path, i + 1, s->prompt[i]); rc = 1; }
    free(found); sj_free(&root);
    return rc;
}

// ---------------------------------------------------------------------------------------------------------
// the suite: prompts, extended prompts (may be NULL), info file (may be NULL: 5 videos for every prompt)

static int vb_suite_load(VbSuite* s, const char* prompts_path, const char* extended_path, const char* info_path, char* err) {
    memset(s, 0, sizeof(*s));
    char** lines; int n;
    if (vb_read_lines(prompts_path, &lines, &n, err)) return 1;
    s->n = n; s->prompt = lines;
    s->gen_prompt = (char**)calloc(n, sizeof(char*)); s->stem = (char**)calloc(n, sizeof(char*));
    s->videos = (int*)malloc(sizeof(int) * n); s->first = (int*)malloc(sizeof(int) * n);
    for (int i = 0; i < n; i++) { s->gen_prompt[i] = s->prompt[i]; s->videos[i] = VB_VIDEOS; s->first[i] = i; }
    if (extended_path) {
        char** ext; int ne;
        if (vb_read_lines(extended_path, &ext, &ne, err)) { vb_suite_free(s); return 1; }
        if (ne != n) {
            st_errf(err, "%s has %d lines but %s has %d; the extended prompts must correspond to the prompts line for line", extended_path, ne, prompts_path, n);
            vb_free_lines(ext, ne); vb_suite_free(s); return 1;
        }
        for (int i = 0; i < n; i++) s->gen_prompt[i] = ext[i];
        free(ext);
    }
    for (int i = 0; i < n; i++) { s->stem[i] = (char*)malloc(VB_STEM_MAX + 1); vb_file_stem(s->stem[i], s->prompt[i]); }
    if (info_path && vb_apply_info(s, info_path, err)) { vb_suite_free(s); return 1; }
    for (int i = 0; i < n; i++) for (int j = 0; j < i; j++) {
        if (strcmp(s->stem[i], s->stem[j])) continue;
        if (strcmp(s->prompt[i], s->prompt[j])) {
            st_errf(err, "%s: lines %d and %d are different prompts but both name their files '%s-N' (after replacing characters a file name cannot hold "
                    "and cutting to %d bytes); edit one of them", prompts_path, j + 1, i + 1, s->stem[i], VB_STEM_MAX);
            vb_suite_free(s); return 1;
        }
        s->first[i] = s->first[j];
        if (s->videos[i] > s->videos[s->first[i]]) s->videos[s->first[i]] = s->videos[i];
        break;
    }
    return 0;
}

// the videos of the suite in order (duplicate lines contribute none); *jobs malloc'd
static int vb_plan(const VbSuite* s, uint64_t base_seed, const char* ext, VbJob** jobs, int* n_jobs) {
    int n = 0;
    for (int i = 0; i < s->n; i++) if (s->first[i] == i) n += s->videos[i];
    VbJob* J = (VbJob*)calloc(n ? n : 1, sizeof(VbJob));
    int k = 0;
    for (int i = 0; i < s->n; i++) {
        if (s->first[i] != i) continue;
        for (int v = 0; v < s->videos[i]; v++, k++) {
            J[k].line = i; J[k].index = v; J[k].seed = vb_seed(base_seed, s->prompt[i], v);
            snprintf(J[k].file, sizeof(J[k].file), "%s-%d%s", s->stem[i], v, ext);
        }
    }
    *jobs = J; *n_jobs = n;
    return 0;
}

// ---------------------------------------------------------------------------------------------------------
// manifest: "# vbench manifest v1", "# base_seed N", "# generator <settings>", a header row, then one row per
// video: file, line (1-based), index, seed, prompt, generation prompt. Tabs, newlines and backslashes in text
// are escaped (\t \n \\) so a row is always one line of six fields.

static void vb_put_escaped(StBuf* b, const char* s) {
    for (; *s; s++) {
        if (*s == '\t') sb_str(b, "\\t"); else if (*s == '\n') sb_str(b, "\\n"); else if (*s == '\\') sb_str(b, "\\\\");
        else sb_put(b, s, 1);
    }
}

static char* vb_manifest_text(const VbSuite* s, const VbJob* J, int n, uint64_t base_seed, const char* generator) {
    StBuf b; memset(&b, 0, sizeof(b));
    char line[64];
    sb_str(&b, "# vbench manifest v1\n");
    snprintf(line, sizeof(line), "# base_seed %llu\n", (unsigned long long)base_seed); sb_str(&b, line);
    sb_str(&b, "# generator "); vb_put_escaped(&b, generator ? generator : ""); sb_str(&b, "\n");
    sb_str(&b, "file\tline\tindex\tseed\tprompt\tgeneration_prompt\n");
    for (int k = 0; k < n; k++) {
        vb_put_escaped(&b, J[k].file);
        snprintf(line, sizeof(line), "\t%d\t%d\t%llu\t", J[k].line + 1, J[k].index, (unsigned long long)J[k].seed); sb_str(&b, line);
        vb_put_escaped(&b, s->prompt[J[k].line]); sb_str(&b, "\t");
        vb_put_escaped(&b, s->gen_prompt[J[k].line]); sb_str(&b, "\n");
    }
    if (b.oom) { free(b.p); return NULL; }
    return b.p;
}

// ---------------------------------------------------------------------------------------------------------
// running the suite

// makes one video: writes the whole file at `path` (a temporary name; vb_run renames it), returns 0, or 1 with err
typedef int (*VbGenerateFn)(void* ctx, const VbSuite* s, const VbJob* job, const char* path, char* err);

typedef struct { int planned, already, made, duplicates; } VbReport;

static int vb_mkdir(const char* path, char* err) {
    if (mkdir(path, 0755) == 0 || errno == EEXIST) {
        struct stat st;
        if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) return 0;
        st_errf(err, "%s exists and is not a directory; choose another output path", path); return 1;
    }
    st_errf(err, "cannot create directory %s: %s", path, strerror(errno)); return 1;
}

static int vb_file_done(const char* path) { struct stat st; return stat(path, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0; }

// makes every video of the plan that OUT does not hold yet, at most max_new of them (<= 0: all); writes or checks
// the manifest first. A failing generator stops the run with its message; files already made stay.
static int vb_run(const VbSuite* s, const char* out_dir, const char* ext, uint64_t base_seed, const char* generator,
                  VbGenerateFn gen, void* ctx, int max_new, VbReport* rep, char* err) {
    memset(rep, 0, sizeof(*rep));
    for (int i = 0; i < s->n; i++) rep->duplicates += s->first[i] != i;
    VbJob* J; int n;
    vb_plan(s, base_seed, ext, &J, &n);
    rep->planned = n;
    char path[4096], tmp[4096], dir[3100];
    if (strlen(out_dir) > 3000) { st_errf(err, "output path too long (%zu bytes)", strlen(out_dir)); free(J); return 1; }
    snprintf(dir, sizeof(dir), "%s/.partial", out_dir);
    if (vb_mkdir(out_dir, err) || vb_mkdir(dir, err)) { free(J); return 1; }
    char* text = vb_manifest_text(s, J, n, base_seed, generator);
    if (!text) { st_errf(err, "out of memory for the manifest"); free(J); return 1; }
    snprintf(path, sizeof(path), "%s/manifest.tsv", out_dir);
    struct stat st;
    if (stat(path, &st) == 0) {
        char* old; size_t len;
        if (st_read_small_file(path, &old, &len, err)) { free(text); free(J); return 1; }
        if (len != strlen(text) || memcmp(old, text, len)) {
            int ln = 1; size_t k = 0;
            while (k < len && old[k] == text[k]) { if (old[k] == '\n') ln++; k++; }
            st_errf(err, "%s was written for a different suite or settings (first difference on line %d); resuming would mix two suites: "
                    "use a new output directory, or delete it to start over", path, ln);
            free(old); free(text); free(J); return 1;
        }
        free(old);
    } else {
        FILE* fp = st_atomic_begin(path, tmp, err);
        if (!fp) { free(text); free(J); return 1; }
        int ok = fputs(text, fp) >= 0;
        if (!ok) st_errf(err, "%s: write failed: %s", path, strerror(errno));
        if (st_atomic_end(fp, tmp, path, ok, err)) { free(text); free(J); return 1; }
    }
    free(text);
    int rc = 0;
    for (int k = 0; k < n; k++) {
        snprintf(path, sizeof(path), "%s/%s", out_dir, J[k].file);
        if (vb_file_done(path)) { rep->already++; continue; }
        if (max_new > 0 && rep->made >= max_new) continue;
        snprintf(tmp, sizeof(tmp), "%s/%s", dir, J[k].file);
        remove(tmp);   // a leftover of an interrupted run
        if (gen(ctx, s, &J[k], tmp, err)) { remove(tmp); rc = 1; break; }
        if (!vb_file_done(tmp)) { st_errf(err, "%s: the generator reported success but wrote no file", tmp); rc = 1; break; }
        if (rename(tmp, path) != 0) { st_errf(err, "cannot rename %s to %s: %s", tmp, path, strerror(errno)); rc = 1; break; }
        rep->made++;
    }
    free(J);
    return rc;
}
