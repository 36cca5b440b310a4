// lib/latent_data_cli.h: ./test_tmd pack — encoded latents and text embeddings (.npy) into one latent dataset
// (lib/latent_data.h) for ./train_tmd --data:
//   ./test_tmd vae encode --weights VAE --video clips/0000.mp4 --out lat/0000.npy --normalized 1     (per video)
//   ./test_tmd encode --tokenizer spiece.model --weights text_encoder/ --prompts prompts.txt --out ctx/
//   ./test_tmd encode --tokenizer spiece.model --weights text_encoder/ --prompt "<negative prompt>" --out neg.npy
//   ./test_tmd pack --latents lat/ --contexts ctx/ --negative neg.npy [--captions prompts.txt] --out data.safetensors
// Samples pair by file name (lat/0000.npy with ctx/0000.npy) in sorted name order; --captions gives line k to the
// k-th name (./test_tmd encode --prompts names line k's embedding %04d.npy, so the order agrees).
#pragma once
#include <dirent.h>
#include "flags.h"
#include "npy.h"
#include "latent_data.h"

static int ld_cmp_str_(const void* a, const void* b) { return strcmp(*(const char* const*)a, *(const char* const*)b); }

// the *.npy names in dir, sorted; NULL with a message when the folder cannot be read or holds none
static char** ld_list_npy(const char* dir, int* n, char* err) {
    DIR* d = opendir(dir);
    *n = 0;
    if (!d) { st_errf(err, "%s: cannot open the folder: %s", dir, strerror(errno)); return NULL; }
    int cap = 64; char** v = (char**)malloc(sizeof(char*) * cap);
    struct dirent* e;
    while (v && (e = readdir(d))) {
        if (!st_ends_with(e->d_name, ".npy")) continue;
        if (*n == cap) { cap *= 2; char** v2 = (char**)realloc(v, sizeof(char*) * cap); if (!v2) break; v = v2; }
        v[(*n)++] = st_strdup(e->d_name);
    }
    closedir(d);
    if (*n == 0) { st_errf(err, "%s: no .npy files in the folder; expected one per sample (./test_tmd vae encode / encode write them)", dir); free(v); return NULL; }
    qsort(v, (size_t)*n, sizeof(char*), ld_cmp_str_);
    return v;
}
static void ld_free_list_(char** v, int n) { for (int i = 0; v && i < n; i++) free(v[i]); free(v); }

// a context .npy [rows, D] as L rows: zero rows added, or trailing rows dropped when they are all zero (umT5's
// padding); more non-zero rows than L is an error. *data becomes [L, D].
static int ld_fit_context_(const char* path, float** data, int ndim, const int64_t* sh, int L, int D, char* err) {
    char got[256];
    if (ndim != 2 || sh[1] != D || sh[0] < 1) {
        st_errf(err, "%s: shape %s, expected a context [L, %d] (./test_tmd encode writes [tokens, 4096] per prompt)", path, st_shape_str(got, ndim, sh), D);
        return 1;
    }
    int64_t rows = sh[0];
    for (int64_t r = L; r < rows; r++)
        for (int k = 0; k < D; k++)
            if ((*data)[r * D + k] != 0) {
                st_errf(err, "%s: row %lld of %lld is not zero, but the dataset holds %d rows; pack with --text-len %lld or more",
                        path, (long long)r, (long long)rows, L, (long long)rows);
                return 1;
            }
    float* f = (float*)realloc(*data, sizeof(float) * (size_t)L * D);
    if (!f) { st_errf(err, "%s: out of memory", path); return 1; }
    if (rows < L) memset(f + rows * D, 0, sizeof(float) * (size_t)(L - rows) * D);
    *data = f;
    return 0;
}

static int ld_check_finite_(const char* path, const float* x, size_t n, char* err) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i])) { st_errf(err, "%s: element %zu is %g, expected finite values; re-encode this sample or leave it out", path, i, (double)x[i]); return 1; }
    return 0;
}

// the rows of a context .npy that are not trailing zero rows (at least 1)
static int64_t ld_used_rows_(const float* x, int64_t rows, int64_t D) {
    while (rows > 1) {
        int zero = 1;
        for (int64_t k = 0; k < D && zero; k++) zero = x[(rows - 1) * D + k] == 0;
        if (!zero) break;
        rows--;
    }
    return rows;
}

static int ld_join_(char* out, size_t n, const char* dir, const char* name) {
    return snprintf(out, n, "%s%s%s", dir, dir[0] && dir[strlen(dir) - 1] == '/' ? "" : "/", name) >= (int)n;
}

static int pack_main(int argc, char** argv) {
    const char *lat_dir = NULL, *ctx_dir = NULL, *neg_path = NULL, *cap_path = NULL, *out = NULL;
    int text_len = 0;
    Flag flags[] = {
        FLAG_STR("--latents", &lat_dir, "folder of latents, one float32 .npy [C, T', H', W'] per sample, normalised as the DiT sees them (vae encode --normalized 1)"),
        FLAG_STR("--contexts", &ctx_dir, "folder of text embeddings, one float32 .npy [L_i, text_dim] per sample, named as the latents"),
        FLAG_STR("--negative", &neg_path, "the negative prompt's embedding .npy [L, text_dim] (CFG and condition dropout; paper Table 8)"),
        FLAG_STR("--captions", &cap_path, "optional: the captions, one line per sample in sorted file-name order"),
        FLAG_STR("--out", &out, "the dataset .safetensors to write (atomically)"),
        FLAG_INT_R("--text-len", &text_len, 0, 4096, "context rows stored (0: the longest context's non-zero rows); the trainer pads to the model's text_len"),
        FLAG_END};
    int rc = flags_parse(flags, argc, argv, 1, "usage: ./test_tmd pack --latents DIR --contexts DIR --negative NEG.npy --out DATA.safetensors [--captions FILE] [--text-len L]\n"
                                               "packs encoded latents and text embeddings into the latent dataset ./train_tmd --data reads (world/README.md)");
    if (rc) return rc == 1 ? 0 : 2;
    if (!lat_dir || !ctx_dir || !neg_path || !out) { fprintf(stderr, "error: pack needs --latents, --contexts, --negative and --out (./test_tmd pack --help)\n"); return 2; }
    char err[ST_ERRLEN], pa[2200], pb[2200];
    int nl = 0, nc = 0;
    char** ln = ld_list_npy(lat_dir, &nl, err);
    char** cn = ln ? ld_list_npy(ctx_dir, &nc, err) : NULL;
    if (!ln || !cn) { fprintf(stderr, "error: %s\n", err); ld_free_list_(ln, nl); return 1; }
    rc = 1;
    float *x = NULL, *neg = NULL;
    char *capbuf = NULL, **caps = NULL;
    int ncap = 0, cap_len = 0;
    int64_t sh[ST_MAXDIM], sh0[ST_MAXDIM];
    int nd = 0, nd0 = 0;
    LdWriter w; memset(&w, 0, sizeof(w));
    // every latent has a context of the same name and the other way round
    for (int i = 0, j = 0; i < nl || j < nc;) {
        int c = i >= nl ? 1 : j >= nc ? -1 : strcmp(ln[i], cn[j]);
        if (c) {
            fprintf(stderr, "error: %s/%s has no %s of the same name in %s; every sample needs both (pair them by file name)\n", c < 0 ? lat_dir : ctx_dir,
                    c < 0 ? ln[i] : cn[j], c < 0 ? "context" : "latent", c < 0 ? ctx_dir : lat_dir);
            goto done;
        }
        i++; j++;
    }
    // first pass over the headers' data: the latent shape (all equal), the context width and the rows needed
    int D = 0; int64_t rows_max = 0;
    for (int i = 0; i < nl; i++) {
        ld_join_(pa, sizeof(pa), lat_dir, ln[i]);
        if (npy_read(pa, &x, &nd, sh, err)) { fprintf(stderr, "error: %s\n", err); goto done; }
        free(x); x = NULL;
        char got[256], want[256];
        if (nd != 4) { fprintf(stderr, "error: %s: shape %s, expected a latent [C, T', H', W'] (no batch axis; ./test_tmd vae encode writes it)\n", pa, st_shape_str(got, nd, sh)); goto done; }
        if (i == 0) { nd0 = nd; memcpy(sh0, sh, sizeof(sh)); }
        else if (memcmp(sh, sh0, sizeof(int64_t) * 4)) {
            fprintf(stderr, "error: %s: shape %s, but %s/%s is %s; every video of a dataset must have the same size (crop or resize before encoding)\n", pa,
                    st_shape_str(got, nd, sh), lat_dir, ln[0], st_shape_str(want, nd0, sh0));
            goto done;
        }
        ld_join_(pb, sizeof(pb), ctx_dir, cn[i]);
        if (npy_read(pb, &x, &nd, sh, err)) { fprintf(stderr, "error: %s\n", err); goto done; }
        if (nd != 2 || (D && sh[1] != D)) {
            fprintf(stderr, "error: %s: shape %s, expected a context [L, %s] (./test_tmd encode writes [tokens, 4096])\n", pb, st_shape_str(got, nd, sh), D ? "the width of the others" : "text_dim");
            goto done;
        }
        D = (int)sh[1];
        int64_t used = ld_used_rows_(x, sh[0], D);
        if (used > rows_max) rows_max = used;
        free(x); x = NULL;
    }
    int neg_rows;
    {
        if (npy_read(neg_path, &neg, &nd, sh, err)) { fprintf(stderr, "error: %s\n", err); goto done; }
        char got[256];
        if (nd != 2 || sh[1] != D) { fprintf(stderr, "error: %s: shape %s, expected the negative prompt's context [L, %d]\n", neg_path, st_shape_str(got, nd, sh), D); goto done; }
        neg_rows = (int)ld_used_rows_(neg, sh[0], D);
        if (text_len > 0 && neg_rows > text_len) neg_rows = text_len;   // ld_fit_context_ refuses non-zero rows past it
        if (ld_fit_context_(neg_path, &neg, nd, sh, neg_rows, D, err) || ld_check_finite_(neg_path, neg, (size_t)neg_rows * D, err)) { fprintf(stderr, "error: %s\n", err); goto done; }
    }
    if (text_len > 0 && rows_max > text_len) {
        fprintf(stderr, "error: a context in %s has %lld non-zero rows, more than --text-len %d; pack with --text-len %lld or more\n", ctx_dir,
                (long long)rows_max, text_len, (long long)rows_max);
        goto done;
    }
    int L = text_len > 0 ? text_len : (int)rows_max;
    if (cap_path) {
        size_t len;
        if (st_read_small_file(cap_path, &capbuf, &len, err)) { fprintf(stderr, "error: %s\n", err); goto done; }
        caps = (char**)malloc(sizeof(char*) * (size_t)(nl + 1));
        for (char* s = capbuf; s && *s;) {
            char* e = strchr(s, '\n'); if (e) *e = 0;
            size_t k = strlen(s); if (k && s[k - 1] == '\r') s[k - 1] = 0;
            if (ncap < nl) caps[ncap] = s;
            ncap++;
            if ((int)strlen(s) > cap_len) cap_len = (int)strlen(s);
            s = e ? e + 1 : NULL;
        }
        if (ncap != nl) { fprintf(stderr, "error: %s has %d lines but there are %d samples; give one caption per sample, in sorted file-name order\n", cap_path, ncap, nl); goto done; }
        if (cap_len == 0) cap_len = 1;
    }
    const char* meta[] = {"latents", "normalised as the DiT sees them (Wan2.1: (z - mean) / std per channel)", "written_by", "./test_tmd pack"};
    if (ld_write_begin(&w, out, nl, (int)sh0[0], (int)sh0[1], (int)sh0[2], (int)sh0[3], L, D, neg_rows, cap_len, meta, 2, err)) { fprintf(stderr, "error: %s\n", err); goto done; }
    ld_write_negative(&w, neg);
    for (int i = 0; i < nl; i++) {
        ld_join_(pa, sizeof(pa), lat_dir, ln[i]);
        if (npy_read(pa, &x, &nd, sh, err) || ld_check_finite_(pa, x, (size_t)(sh0[0] * sh0[1] * sh0[2] * sh0[3]), err)) break;
        float* cx = NULL;
        ld_join_(pb, sizeof(pb), ctx_dir, cn[i]);
        if (npy_read(pb, &cx, &nd, sh, err) || ld_fit_context_(pb, &cx, nd, sh, L, D, err) || ld_check_finite_(pb, cx, (size_t)L * D, err)) { free(cx); break; }
        ld_write_sample(&w, i, x, cx, caps ? caps[i] : NULL);
        free(cx); free(x); x = NULL;
        if (i == nl - 1) rc = 0;
    }
    if (rc) { fprintf(stderr, "error: %s\n", err); ld_write_end(&w, 0, err); goto done; }
    if (ld_write_end(&w, 1, err)) { fprintf(stderr, "error: %s\n", err); rc = 1; goto done; }
    printf("wrote %s: %d samples, latents [%d, %lld, %lld, %lld, %lld], contexts [%d, %d, %d], negative [%d, %d]%s\n", out, nl, nl, (long long)sh0[0],
           (long long)sh0[1], (long long)sh0[2], (long long)sh0[3], nl, L, D, neg_rows, D, caps ? ", captions" : "");
done:
    free(x); free(neg); free(caps); free(capbuf);
    ld_free_list_(ln, nl); ld_free_list_(cn, nc);
    return rc;
}
