// lib/latent_data.h: the latent dataset a real teacher is distilled from (./train_tmd --weights W --data FILE):
// VAE latents and their text embeddings in one .safetensors file, read one sample at a time, and the order the
// trainer visits them in (shuffled per epoch, split by rank, resumable from one integer). Plain C, header-only.
//
// File (format "tmd-latents", version 1; the layout is world/README.md "Latent datasets"):
//   latents           [N, C, T', H', W']  F32, BF16 or F16: VAE latents normalised as the DiT sees them (Wan2.1:
//                                         (z − mean) / std per channel, `./test_tmd vae encode --normalized 1`)
//   contexts          [N, L, text_dim]    the umT5 embeddings of the captions, zero rows past each prompt's tokens
//   negative_context  [L, text_dim]       the negative prompt's embedding: classifier-free guidance and condition
//                                         dropout (paper Table 8; Wan's default negative prompt)
//   captions          [N, K] U8           optional: caption i's UTF-8 bytes, NUL-padded to K
//   __metadata__      {"format": "tmd-latents", "version": "1", ...}
// L may be shorter than the model's text_len (Wan: 512): the reader pads with zero rows, as Wan pads its context.
// Nothing is trusted: names, dtypes, ranks, N across tensors and every value read (finite) are checked, and each
// error names the file, the tensor (and sample), what was expected, what was found and what to do.
#pragma once
#include "safetensors.h"
#include "rng.h"

#define LD_FORMAT  "tmd-latents"
#define LD_VERSION "1"

typedef struct LatentData {
    StFile f;
    FILE* fp;                                       // kept open: one seek and one read per sample
    const StTensor *lat, *ctx, *neg, *cap;          // cap NULL: no captions
    int64_t n;                                      // samples
    int C, T, H, W;                                 // latent [C, T', H', W'] per sample
    int L, D;                                       // context rows and width
    int cap_len;                                    // bytes per caption row (0: none)
    // a dataset directory (sample_tmd --dataset, below): the shards, each a file as above, samples numbered across
    // them in shard order; f, fp, lat, ctx, cap are unused (neg: shard 0's, every shard holds the same), L the most
    // rows of any shard (each pads its own to text_len)
    struct LatentData* shard; int n_shards; int64_t* shard_first;
    char dir[1024];
} LatentData;

static inline void ld_close(LatentData* d) {
    for (int k = 0; k < d->n_shards; k++) {
        if (d->shard[k].fp) fclose(d->shard[k].fp);
        st_close(&d->shard[k].f);
    }
    free(d->shard); free(d->shard_first);
    if (d->fp) fclose(d->fp);
    st_close(&d->f);
    memset(d, 0, sizeof(*d));
}
// the dataset's name in messages: the file, or the directory
static inline const char* ld_name(const LatentData* d) { return d->n_shards ? d->dir : d->f.path; }
static inline int ld_open_dir_(LatentData* d, const char* dir, char* err);

static inline int ld_float_dtype_(int dt) { return dt == ST_F32 || dt == ST_BF16 || dt == ST_F16; }

// a tensor of the file by name with the expected rank and a float dtype, or an error naming what was found
static inline const StTensor* ld_tensor_(const StFile* f, const char* name, int ndim, const char* shape_doc, int optional, char* err) {
    const StTensor* t = st_find(f, name);
    char got[256];
    if (!t) {
        if (!optional)
            st_errf(err, "%s: no tensor '%s' %s; is this a latent dataset? write one with ./test_tmd pack (world/README.md, \"Latent datasets\")",
                    f->path, name, shape_doc);
        return NULL;
    }
    if (t->ndim != ndim) {
        st_errf(err, "%s: tensor '%s' has shape %s, expected %d dims %s; re-pack the dataset", f->path, name,
                st_shape_str(got, t->ndim, t->shape), ndim, shape_doc);
        return NULL;
    }
    for (int k = 0; k < ndim; k++)
        if (t->shape[k] <= 0 || t->shape[k] > INT32_MAX) {
            st_errf(err, "%s: tensor '%s' has shape %s: every dim must be in 1..%d %s; re-pack the dataset", f->path, name,
                    st_shape_str(got, t->ndim, t->shape), INT32_MAX, shape_doc);
            return NULL;
        }
    return t;
}

// opens and checks the file's structure (not yet against a model: ld_check_model); a directory: the shards of a
// sample_tmd --dataset run, as listed by its manifest (ld_open_dir_)
static inline int ld_open(LatentData* d, const char* path, char* err) {
    memset(d, 0, sizeof(*d));
    struct stat sb;
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) return ld_open_dir_(d, path, err);
    if (st_open(&d->f, path, err)) return 1;
    const char* fmt = st_meta(&d->f, "format");
    const char* ver = st_meta(&d->f, "version");
    if (!fmt || strcmp(fmt, LD_FORMAT) || !ver || strcmp(ver, LD_VERSION)) {
        st_errf(err, "%s: __metadata__ format '%s' version '%s', expected format '" LD_FORMAT "' version '" LD_VERSION "'; "
                "is it a model checkpoint or a world clip file? write a latent dataset with ./test_tmd pack", path,
                fmt ? fmt : "(missing)", ver ? ver : "(missing)");
        ld_close(d);
        return 1;
    }
    char got[256];
    int bad = !(d->lat = ld_tensor_(&d->f, "latents", 5, "[N, C, T', H', W']", 0, err)) ||
              !(d->ctx = ld_tensor_(&d->f, "contexts", 3, "[N, L, text_dim]", 0, err)) ||
              !(d->neg = ld_tensor_(&d->f, "negative_context", 2, "[L, text_dim]", 0, err));
    if (!bad) {
        d->cap = st_find(&d->f, "captions");
        if (d->cap && !ld_tensor_(&d->f, "captions", 2, "[N, K] (U8)", 0, err)) bad = 1;
    }
    if (bad) { ld_close(d); return 1; }
    const StTensor* fl[3] = {d->lat, d->ctx, d->neg};
    for (int i = 0; i < 3; i++)
        if (!ld_float_dtype_(fl[i]->dtype)) {
            st_errf(err, "%s: tensor '%s' has dtype %s, expected F32, BF16 or F16; re-pack the dataset", path, fl[i]->name, st_dtype_name(fl[i]->dtype));
            ld_close(d);
            return 1;
        }
    if (d->cap && d->cap->dtype != ST_U8) {
        st_errf(err, "%s: tensor 'captions' has dtype %s, expected U8 (UTF-8 bytes, NUL-padded); re-pack the dataset", path, st_dtype_name(d->cap->dtype));
        ld_close(d);
        return 1;
    }
    d->n = d->lat->shape[0];
    d->C = (int)d->lat->shape[1]; d->T = (int)d->lat->shape[2]; d->H = (int)d->lat->shape[3]; d->W = (int)d->lat->shape[4];
    d->L = (int)d->ctx->shape[1]; d->D = (int)d->ctx->shape[2];
    d->cap_len = d->cap ? (int)d->cap->shape[1] : 0;
    const char* what = NULL;
    int64_t want = 0, found = 0;
    if (d->ctx->shape[0] != d->n) { what = "contexts"; want = d->n; found = d->ctx->shape[0]; }
    else if (d->cap && d->cap->shape[0] != d->n) { what = "captions"; want = d->n; found = d->cap->shape[0]; }
    if (what) {
        st_errf(err, "%s: tensor '%s' has %lld samples but 'latents' has %lld; every sample needs a latent and a context; re-pack the dataset",
                path, what, (long long)found, (long long)want);
        ld_close(d);
        return 1;
    }
    if (d->neg->shape[1] != d->D) {
        st_errf(err, "%s: tensor 'negative_context' has shape %s, expected [L, %d] (the width of 'contexts'); re-pack it with the same text encoder",
                path, st_shape_str(got, d->neg->ndim, d->neg->shape), d->D);
        ld_close(d);
        return 1;
    }
    d->fp = fopen(path, "rb");
    if (!d->fp) { st_errf(err, "%s: cannot reopen for reading: %s", path, strerror(errno)); ld_close(d); return 1; }
    return 0;
}

// the model must take these latents and contexts: channels in and out, patch-divisible grid, context width, rows
static inline int ld_check_model(const LatentData* d, const char* model, int in_dim, int out_dim, const int patch[3], int text_len, int text_dim, char* err) {
    const char* p = ld_name(d);
    if (d->C != in_dim || d->C != out_dim) {
        st_errf(err, "%s: 'latents' have %d channels, but model '%s' takes %d in and gives %d out; encode the videos with the "
                "model's VAE (Wan2.1: 16 channels), or give the teacher these latents were made for", p, d->C, model, in_dim, out_dim);
        return 1;
    }
    int g[3] = {d->T, d->H, d->W};
    const char* gn[3] = {"T'", "H'", "W'"};
    for (int k = 0; k < 3; k++)
        if (g[k] % patch[k]) {
            st_errf(err, "%s: 'latents' grid [%d, %d, %d]: %s = %d is not a multiple of the model's patch %d (patch [%d, %d, %d]); "
                    "crop or resize the videos before encoding (Wan2.1 480p: 21 x 60 x 104)", p, d->T, d->H, d->W, gn[k], g[k], patch[k],
                    patch[0], patch[1], patch[2]);
            return 1;
        }
    if (d->D != text_dim) {
        st_errf(err, "%s: 'contexts' are %d wide, but model '%s' has text_dim %d; embed the captions with the model's text "
                "encoder (Wan2.1: umT5-XXL, 4096)", p, d->D, model, text_dim);
        return 1;
    }
    if (d->L > text_len || d->neg->shape[0] > text_len) {
        st_errf(err, "%s: 'contexts' have %d rows and 'negative_context' %lld, but model '%s' reads at most text_len %d; re-pack "
                "with --text-len %d", p, d->L, (long long)d->neg->shape[0], model, text_len, text_len);
        return 1;
    }
    return 0;
}

// reads elements [first, first + count) of tensor t into dst as float and checks them finite; `what` names the
// sample in an error ("sample 12")
static inline int ld_read_range_(const LatentData* d, const StTensor* t, int64_t first, int64_t count, float* dst, const char* what, char* err) {
    int es = st_dtype_sizes[t->dtype];
    uint64_t off = t->begin + (uint64_t)first * (uint64_t)es;
    if (st_fseek(d->fp, off) != 0) {
        st_errf(err, "%s: tensor '%s', %s: cannot seek to byte %llu: %s", d->f.path, t->name, what, (unsigned long long)off, strerror(errno));
        return 1;
    }
    if (t->dtype == ST_F32) {
        if (fread(dst, 4, (size_t)count, d->fp) != (size_t)count) goto short_read;
    } else {
        // 16-bit values: read into the upper half of dst, widen in place from the front (each write lands at or
        // before the bytes still to be read)
        uint16_t* h = (uint16_t*)(dst + count) - count;
        if (fread(h, 2, (size_t)count, d->fp) != (size_t)count) goto short_read;
        for (int64_t k = 0; k < count; k++) {
            uint16_t v = h[k];
            dst[k] = t->dtype == ST_BF16 ? st_bf16_to_f32(v) : st_f16_to_f32(v);
        }
    }
    for (int64_t k = 0; k < count; k++)
        if (!isfinite(dst[k])) {
            st_errf(err, "%s: tensor '%s', %s: element %lld is %g, expected a finite number; the encoder overflowed or the file is "
                    "corrupt; drop this sample and re-pack", d->f.path, t->name, what, (long long)k, (double)dst[k]);
            return 1;
        }
    return 0;
short_read:
    st_errf(err, "%s: tensor '%s', %s: short read at byte %llu (%s); the file changed or is truncated; re-pack it", d->f.path, t->name,
            what, (unsigned long long)off, ferror(d->fp) ? strerror(errno) : "end of file");
    return 1;
}

static inline int ld_check_index_(const LatentData* d, int64_t i, char* err) {
    if (i < 0 || i >= d->n) { st_errf(err, "%s: sample %lld asked for, the dataset has %lld (0..%lld)", ld_name(d), (long long)i, (long long)d->n, (long long)d->n - 1); return 1; }
    return 0;
}

// a directory's sample i: its shard and the index inside it (binary search over the shards' first samples)
static inline const LatentData* ld_locate_(const LatentData* d, int64_t* i) {
    int lo = 0, hi = d->n_shards - 1;
    while (lo < hi) { int mid = (lo + hi + 1) / 2; if (d->shard_first[mid] <= *i) lo = mid; else hi = mid - 1; }
    *i -= d->shard_first[lo];
    return &d->shard[lo];
}

// sample i's latent [C, T', H', W']
static inline int ld_read_latent(const LatentData* d, int64_t i, float* dst, char* err) {
    if (d->n_shards) { if (ld_check_index_(d, i, err)) return 1; d = ld_locate_(d, &i); }
    char what[64]; snprintf(what, sizeof(what), "sample %lld", (long long)i);
    int64_t n = (int64_t)d->C * d->T * d->H * d->W;
    return ld_check_index_(d, i, err) || ld_read_range_(d, d->lat, i * n, n, dst, what, err);
}

// sample i's context into dst [text_len, D]: the file's L rows, then zero rows (text_len >= L: ld_check_model)
static inline int ld_read_context(const LatentData* d, int64_t i, float* dst, int text_len, char* err) {
    if (d->n_shards) { if (ld_check_index_(d, i, err)) return 1; d = ld_locate_(d, &i); }
    char what[64]; snprintf(what, sizeof(what), "sample %lld", (long long)i);
    int64_t n = (int64_t)d->L * d->D;
    if (ld_check_index_(d, i, err) || ld_read_range_(d, d->ctx, i * n, n, dst, what, err)) return 1;
    memset(dst + n, 0, sizeof(float) * (size_t)((int64_t)(text_len - d->L) * d->D));
    return 0;
}

// the negative prompt's context into dst [text_len, D], zero rows past its own
static inline int ld_read_negative(const LatentData* d, float* dst, int text_len, char* err) {
    if (d->n_shards) d = &d->shard[0];
    int64_t rows = d->neg->shape[0], n = rows * d->D;
    if (ld_read_range_(d, d->neg, 0, n, dst, "the negative prompt", err)) return 1;
    memset(dst + n, 0, sizeof(float) * (size_t)((int64_t)(text_len - rows) * d->D));
    return 0;
}

// caption i into buf (NUL-terminated, cut to n − 1 bytes); "" when the file has none
static inline int ld_caption(const LatentData* d, int64_t i, char* buf, size_t n, char* err) {
    buf[0] = 0;
    if (ld_check_index_(d, i, err)) return 1;
    if (d->n_shards) d = ld_locate_(d, &i);
    if (!d->cap || n < 2) return 0;
    size_t k = (size_t)d->cap_len < n - 1 ? (size_t)d->cap_len : n - 1;
    uint64_t off = d->cap->begin + (uint64_t)i * (uint64_t)d->cap_len;
    if (st_fseek(d->fp, off) != 0 || fread(buf, 1, k, d->fp) != k) {
        st_errf(err, "%s: tensor 'captions', sample %lld: short read; the file changed or is truncated; re-pack it", d->f.path, (long long)i);
        buf[0] = 0;
        return 1;
    }
    buf[k] = 0;
    return 0;
}

// ---------------------------------------------------------------------------------------------------------
// The visiting order: epoch e is a Fisher-Yates shuffle of 0..N-1 drawn from splitmix64(seed, e). `position` counts
// the samples all ranks have consumed; at every step rank r of `world` takes positions [position + r·B, + B) and
// everyone advances position by world·B, so ranks never share a sample in a step, one rank equals the plain run,
// and a checkpoint holds the whole data state in one integer.
typedef struct {
    uint64_t seed;
    int64_t n, epoch;   // epoch: the shuffle in perm (-1: none yet)
    int64_t* perm;
} LdOrder;

static inline int ld_order_init(LdOrder* o, uint64_t seed, int64_t n) {
    o->seed = seed; o->n = n; o->epoch = -1;
    o->perm = (int64_t*)malloc(sizeof(int64_t) * (size_t)(n > 0 ? n : 1));
    return !o->perm || n <= 0;
}
static inline void ld_order_free(LdOrder* o) { free(o->perm); o->perm = NULL; }

// the sample at global position p
static inline int64_t ld_order_index(LdOrder* o, uint64_t p) {
    int64_t e = (int64_t)(p / (uint64_t)o->n);
    if (e != o->epoch) {
        Rng r = rng_make(splitmix64_mix(o->seed ^ splitmix64_mix((uint64_t)e + SPLITMIX64_GAMMA)));
        for (int64_t i = 0; i < o->n; i++) o->perm[i] = i;
        for (int64_t i = o->n - 1; i > 0; i--) {   // modulo bias < (i + 1) / 2^64: negligible
            int64_t j = (int64_t)(rng_u64(&r) % (uint64_t)(i + 1));
            int64_t t = o->perm[i]; o->perm[i] = o->perm[j]; o->perm[j] = t;
        }
        o->epoch = e;
    }
    return o->perm[p % (uint64_t)o->n];
}

// rank's B sample indices of the step starting at *position; advances *position by world·B
static inline void ld_order_batch(LdOrder* o, uint64_t* position, int rank, int world, int B, int64_t* idx) {
    for (int b = 0; b < B; b++) idx[b] = ld_order_index(o, *position + (uint64_t)rank * B + b);
    *position += (uint64_t)world * B;
}

// ---------------------------------------------------------------------------------------------------------
// Writing (./test_tmd pack): the header first, then each sample streamed to its place, so a dataset of any size
// needs one sample in memory. Always F32. Atomic: written to path.tmp and renamed at ld_write_end.
typedef struct {
    FILE* fp;
    char path[1024], tmp[1100];
    int64_t n;
    int C, T, H, W, L, D, cap_len, neg_rows;
    uint64_t data0, lat0, ctx0, neg0, cap0;   // absolute byte offsets of each tensor's data
    int ok;
} LdWriter;

static inline int ld_write_begin(LdWriter* w, const char* path, int64_t n, int C, int T, int H, int W, int L, int D, int neg_rows,
                                 int cap_len, const char* const* meta_kv, int n_meta, char* err) {
    memset(w, 0, sizeof(*w));
    snprintf(w->path, sizeof(w->path), "%s", path);
    w->n = n; w->C = C; w->T = T; w->H = H; w->W = W; w->L = L; w->D = D; w->cap_len = cap_len; w->neg_rows = neg_rows;
    uint64_t nl = (uint64_t)n * C * T * H * W * 4, nc = (uint64_t)n * L * D * 4, nn = (uint64_t)neg_rows * D * 4, nk = (uint64_t)n * cap_len;
    StBuf h; memset(&h, 0, sizeof(h));
    char num[256];
    sb_str(&h, "{\"__metadata__\":{\"format\":\"" LD_FORMAT "\",\"version\":\"" LD_VERSION "\"");
    for (int k = 0; k < n_meta; k++) { sb_str(&h, ","); sb_json_str(&h, meta_kv[2 * k]); sb_str(&h, ":"); sb_json_str(&h, meta_kv[2 * k + 1]); }
    snprintf(num, sizeof(num), "},\"latents\":{\"dtype\":\"F32\",\"shape\":[%lld,%d,%d,%d,%d],\"data_offsets\":[0,%llu]}", (long long)n, C, T, H, W,
             (unsigned long long)nl);
    sb_str(&h, num);
    snprintf(num, sizeof(num), ",\"contexts\":{\"dtype\":\"F32\",\"shape\":[%lld,%d,%d],\"data_offsets\":[%llu,%llu]}", (long long)n, L, D,
             (unsigned long long)nl, (unsigned long long)(nl + nc));
    sb_str(&h, num);
    snprintf(num, sizeof(num), ",\"negative_context\":{\"dtype\":\"F32\",\"shape\":[%d,%d],\"data_offsets\":[%llu,%llu]}", neg_rows, D,
             (unsigned long long)(nl + nc), (unsigned long long)(nl + nc + nn));
    sb_str(&h, num);
    if (cap_len > 0) {
        snprintf(num, sizeof(num), ",\"captions\":{\"dtype\":\"U8\",\"shape\":[%lld,%d],\"data_offsets\":[%llu,%llu]}", (long long)n, cap_len,
                 (unsigned long long)(nl + nc + nn), (unsigned long long)(nl + nc + nn + nk));
        sb_str(&h, num);
    }
    sb_str(&h, "}");
    while (!h.oom && h.n % 8) sb_str(&h, " ");
    if (h.oom) { free(h.p); st_errf(err, "%s: out of memory building the header", path); return 1; }
    w->fp = st_atomic_begin(path, w->tmp, err);
    if (!w->fp) { free(h.p); return 1; }
    unsigned char len8[8];
    for (int k = 0; k < 8; k++) len8[k] = (unsigned char)((uint64_t)h.n >> (8 * k));
    w->ok = fwrite(len8, 1, 8, w->fp) == 8 && fwrite(h.p, 1, h.n, w->fp) == h.n;
    w->data0 = 8 + h.n; w->lat0 = w->data0; w->ctx0 = w->lat0 + nl; w->neg0 = w->ctx0 + nc; w->cap0 = w->neg0 + nn;
    free(h.p);
    return 0;
}

static inline void ld_write_at_(LdWriter* w, uint64_t off, const void* p, size_t bytes) {
    if (w->ok) w->ok = st_fseek(w->fp, off) == 0 && fwrite(p, 1, bytes, w->fp) == bytes;
}
// sample i: latent [C, T, H, W], context [L, D] (already padded to L rows), caption (NULL or "": empty)
static inline void ld_write_sample(LdWriter* w, int64_t i, const float* latent, const float* ctx, const char* caption) {
    size_t nl = (size_t)w->C * w->T * w->H * w->W, nc = (size_t)w->L * w->D;
    ld_write_at_(w, w->lat0 + (uint64_t)i * nl * 4, latent, nl * 4);
    ld_write_at_(w, w->ctx0 + (uint64_t)i * nc * 4, ctx, nc * 4);
    if (w->cap_len > 0) {
        char* row = (char*)calloc((size_t)w->cap_len, 1);
        if (!row) { w->ok = 0; return; }
        if (caption) memcpy(row, caption, strlen(caption) < (size_t)w->cap_len ? strlen(caption) : (size_t)w->cap_len);
        ld_write_at_(w, w->cap0 + (uint64_t)i * w->cap_len, row, (size_t)w->cap_len);
        free(row);
    }
}
static inline void ld_write_negative(LdWriter* w, const float* neg) { ld_write_at_(w, w->neg0, neg, (size_t)w->neg_rows * w->D * 4); }

// finishes the file (every sample and the negative context must have been written); ok 0: abandon it
static inline int ld_write_end(LdWriter* w, int ok, char* err) {
    if (ok && !w->ok) st_errf(err, "%s: writing %s failed: %s (disk full?); the previous %s, if any, is untouched", w->path, w->tmp, strerror(errno), w->path);
    int rc = st_atomic_end(w->fp, w->tmp, w->path, ok && w->ok, err);
    w->fp = NULL;
    return rc || !ok;
}

// ---------------------------------------------------------------------------------------------------------
// Dataset directories: the paper's recipe (Sec. 4: 500k VidProM prompts, extended, whose videos the Wan2.1 14B
// teacher made), written by `sample_tmd --mode teacher --prompts FILE --dataset DIR` and read by
// `train_tmd --data DIR` through ld_open:
//   DIR/manifest.tsv           the plan: "# tmd-dataset manifest v1", "# fingerprint F" (the teacher, its text
//                              encoder, the sampler settings, the latent shape and the negative prompt: a run with
//                              another model refuses the directory), "# samples N", "# shard_size S", "# shards K",
//                              "# info ..." (settings in words, not compared), then one row per sample:
//                              shard, sample, seed, prompt (tab, newline and backslash escaped)
//   DIR/shard-00000.safetensors  shard k: samples [k·S, min(N, (k+1)·S)) in the file format above (their contexts,
//                              captions, the negative prompt's context), metadata dataset_fingerprint, shard, first
// Sample i is prompt line i with the seed lds_seed(base, prompt, i). A shard exists under its final name only when
// complete (written to .tmp, renamed), so the directory records what is done: a killed run reruns with the same
// command and makes only the missing shards. Under mpirun -np K, rank r makes shards k ≡ r (mod K), so any K
// (and a change of K between runs) covers every shard once. The reader needs every shard of the manifest.
#define LDS_MANIFEST "manifest.tsv"
#define LDS_MAGIC "# tmd-dataset manifest v1"

typedef struct {
    int64_t n; int shard_size, n_shards;
    const char* const* prompt; uint64_t* seed;   // [n]: the prompts are the caller's
    char fingerprint[40];
    char info[1024];
} LdsPlan;

// sample i's seed: a function of the prompt's text and its line (two lines of one prompt get two videos)
static inline uint64_t lds_seed(uint64_t base_seed, const char* prompt, int64_t i) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (const char* s = prompt; *s; s++) { h ^= (unsigned char)*s; h *= 0x100000001b3ull; }
    return splitmix64_mix(h ^ splitmix64_mix(base_seed + SPLITMIX64_GAMMA) ^ ((uint64_t)i * SPLITMIX64_GAMMA)) & ((1ull << 62) - 1);
}

static inline int lds_plan_make(LdsPlan* p, const char* const* prompts, int64_t n, uint64_t base_seed, int shard_size,
                                const char* fingerprint, const char* info, char* err) {
    memset(p, 0, sizeof(*p));
    if (n < 1) { st_errf(err, "the prompt file has no prompts; a dataset needs at least one"); return 1; }
    if (shard_size < 1) { st_errf(err, "--shard-size %d: expected at least 1", shard_size); return 1; }
    p->n = n; p->shard_size = shard_size; p->n_shards = (int)((n + shard_size - 1) / shard_size); p->prompt = prompts;
    p->seed = (uint64_t*)malloc(sizeof(uint64_t) * (size_t)n);
    if (!p->seed) { st_errf(err, "out of memory"); return 1; }
    for (int64_t i = 0; i < n; i++) p->seed[i] = lds_seed(base_seed, prompts[i], i);
    snprintf(p->fingerprint, sizeof(p->fingerprint), "%s", fingerprint);
    snprintf(p->info, sizeof(p->info), "%s", info ? info : "");
    for (char* c = p->info; *c; c++) if (*c == '\n' || *c == '\t') *c = ' ';
    return 0;
}
static inline void lds_plan_free(LdsPlan* p) { free(p->seed); memset(p, 0, sizeof(*p)); }

static inline int64_t lds_shard_first(const LdsPlan* p, int k) { return (int64_t)k * p->shard_size; }
static inline int lds_shard_count(const LdsPlan* p, int k) {
    int64_t left = p->n - lds_shard_first(p, k);
    return (int)(left < p->shard_size ? left : p->shard_size);
}
// rank's share: the shards k ≡ rank (mod world)
static inline int lds_shard_mine(int k, int rank, int world) { return k % world == rank; }
static inline void lds_shard_path(char* out, size_t n, const char* dir, int k) { snprintf(out, n, "%s/shard-%05d.safetensors", dir, k); }

static inline void lds_put_escaped_(StBuf* b, const char* s) {
    for (; *s; s++) {
        if (*s == '\t') sb_str(b, "\\t");
        else if (*s == '\n') sb_str(b, "\\n");
        else if (*s == '\\') sb_str(b, "\\\\");
        else sb_put(b, s, 1);
    }
}

// the manifest's text (malloc'd; NULL: out of memory)
static inline char* lds_manifest_text(const LdsPlan* p) {
    StBuf b; memset(&b, 0, sizeof(b));
    char line[256];
    sb_str(&b, LDS_MAGIC "\n# fingerprint "); sb_str(&b, p->fingerprint);
    snprintf(line, sizeof(line), "\n# samples %lld\n# shard_size %d\n# shards %d\n# info ", (long long)p->n, p->shard_size, p->n_shards);
    sb_str(&b, line); sb_str(&b, p->info); sb_str(&b, "\nshard\tsample\tseed\tprompt\n");
    for (int64_t i = 0; i < p->n; i++) {
        snprintf(line, sizeof(line), "%lld\t%lld\t%llu\t", (long long)(i / p->shard_size), (long long)i, (unsigned long long)p->seed[i]);
        sb_str(&b, line); lds_put_escaped_(&b, p->prompt[i]); sb_str(&b, "\n");
    }
    if (b.oom) { free(b.p); return NULL; }
    return b.p;
}

// "# key value" of a manifest's text into val (NUL-terminated, cut to n − 1), or 0 when absent
static inline int lds_manifest_get_(const char* text, const char* key, char* val, size_t n) {
    size_t kl = strlen(key);
    for (const char* l = text; l && *l == '#'; l = strchr(l, '\n'), l = l ? l + 1 : NULL) {
        if (!strncmp(l, "# ", 2) && !strncmp(l + 2, key, kl) && l[2 + kl] == ' ') {
            const char* v = l + 3 + kl; const char* e = strchr(v, '\n');
            size_t m = e ? (size_t)(e - v) : strlen(v);
            if (m >= n) m = n - 1;
            memcpy(val, v, m); val[m] = 0;
            return 1;
        }
    }
    return 0;
}

// text without its "# info" line (what two runs must agree on)
static inline void lds_drop_info_(char* text) {
    char* l = strstr(text, "\n# info ");
    if (!l) return;
    char* e = strchr(l + 1, '\n');
    if (e) memmove(l, e, strlen(e) + 1); else *l = 0;
}

// a whole manifest (500k extended prompts are a few hundred MB: larger than st_read_small_file allows)
static inline int lds_read_text_(const char* path, char** text, char* err) {
    *text = NULL;
    FILE* f = fopen(path, "rb");
    if (!f) { st_errf(err, "%s: cannot open: %s", path, strerror(errno)); return 1; }
    StBuf b; memset(&b, 0, sizeof(b));
    char buf[65536]; size_t n;
    while ((n = fread(buf, 1, sizeof(buf), f)) > 0) sb_put(&b, buf, n);
    int bad = ferror(f) || b.oom || !b.p;
    fclose(f);
    if (bad) { free(b.p); st_errf(err, "%s: cannot read it (%s)", path, b.oom ? "out of memory" : "read error or empty file"); return 1; }
    *text = b.p;
    return 0;
}

static inline int lds_mkdir_(const char* dir, char* err) {
    if (mkdir(dir, 0755) == 0 || errno == EEXIST) {
        struct stat sb;
        if (stat(dir, &sb) == 0 && S_ISDIR(sb.st_mode)) return 0;
        st_errf(err, "--dataset %s exists and is not a directory; give a directory", dir);
        return 1;
    }
    st_errf(err, "--dataset %s: cannot create the directory: %s", dir, strerror(errno));
    return 1;
}

// creates DIR and its manifest, or checks that the manifest there is this plan's: another fingerprint is another
// model's dataset; another plan (prompts, seeds, shard size) is another dataset. Either way: a new directory.
static inline int lds_manifest_sync(const char* dir, const LdsPlan* p, char* err) {
    if (lds_mkdir_(dir, err)) return 1;
    char path[1200]; snprintf(path, sizeof(path), "%s/" LDS_MANIFEST, dir);
    char* want = lds_manifest_text(p);
    if (!want) { st_errf(err, "out of memory for the manifest"); return 1; }
    struct stat sb;
    if (stat(path, &sb) == 0) {
        char* have = NULL;
        if (lds_read_text_(path, &have, err)) { free(want); return 1; }
        char fp[64] = "";
        int rc = 0;
        if (strncmp(have, LDS_MAGIC "\n", strlen(LDS_MAGIC) + 1)) {
            st_errf(err, "%s: not a tmd-dataset manifest (first line is not \"" LDS_MAGIC "\"); give --dataset a new directory", path);
            rc = 1;
        } else if (!lds_manifest_get_(have, "fingerprint", fp, sizeof(fp)) || strcmp(fp, p->fingerprint)) {
            st_errf(err, "%s holds another model's dataset: its fingerprint is %s, this run's %s (the teacher, its text encoder, the sampler "
                    "settings, the latent shape and the negative prompt make it); give --dataset a new directory, or rerun with the "
                    "settings that made it", dir, fp[0] ? fp : "(missing)", p->fingerprint);
            rc = 1;
        } else {
            lds_drop_info_(have); lds_drop_info_(want);
            if (strcmp(have, want)) {
                st_errf(err, "%s: its manifest plans another dataset (other prompts, seeds or shard size) with this model; rerun with the "
                        "prompt file, --seed and --shard-size that made it, or give --dataset a new directory", dir);
                rc = 1;
            }
        }
        free(have); free(want);
        return rc;
    }
    // several ranks may create it at once: each writes a process-unique temporary and renames (same content)
    char tmp[1300]; snprintf(tmp, sizeof(tmp), "%s.%ld.tmp", path, (long)getpid());
    FILE* f = fopen(tmp, "wb");
    int ok = f && fwrite(want, 1, strlen(want), f) == strlen(want);
    if (f) { ok = fflush(f) == 0 && fsync(fileno(f)) == 0 && ok; ok = fclose(f) == 0 && ok; }
    ok = ok && rename(tmp, path) == 0;
    if (!ok) { st_errf(err, "%s: cannot write the manifest: %s", path, strerror(errno)); remove(tmp); }
    free(want);
    return !ok;
}

// 1 when shard k is on disk, whole, and this plan's
static inline int lds_shard_done(const char* dir, const LdsPlan* p, int k) {
    char path[1200], err[ST_ERRLEN], num[32];
    lds_shard_path(path, sizeof(path), dir, k);
    struct stat sb;
    if (stat(path, &sb) != 0) return 0;
    LatentData d;
    if (ld_open(&d, path, err)) { fprintf(stderr, "note: %s is unreadable (%s); making it again\n", path, err); return 0; }
    const char* fp = st_meta(&d.f, "dataset_fingerprint"); const char* sh = st_meta(&d.f, "shard");
    snprintf(num, sizeof(num), "%d", k);
    int ok = fp && !strcmp(fp, p->fingerprint) && sh && !strcmp(sh, num) && d.n == lds_shard_count(p, k);
    if (!ok) fprintf(stderr, "note: %s is not this plan's shard %d (fingerprint %s, shard %s, %lld samples); making it again\n", path, k,
                     fp ? fp : "-", sh ? sh : "-", (long long)d.n);
    ld_close(&d);
    return ok;
}

// where a shard's samples come from: the teacher's latents (a batch of count samples of the plan, from sample
// first) and a prompt's context [text_len, D] (zero rows past *rows)
typedef int (*LdsLatentFn)(void* ctx, const LdsPlan* p, int64_t first, int count, float* latents, char* err);
typedef int (*LdsContextFn)(void* ctx, const char* prompt, float* context, int* rows, char* err);
typedef struct {
    int C, T, H, W, D, text_len, batch;
    const float* negative; int negative_rows;   // the negative prompt's context [negative_rows, D]
    LdsLatentFn latents; LdsContextFn context; void* ctx;
} LdsSource;

// makes shard k: the contexts (compact: the shard's L is its longest prompt), then the latents batch by batch
static inline int lds_write_shard(const char* dir, const LdsPlan* p, int k, const LdsSource* s, char* err) {
    int64_t first = lds_shard_first(p, k);
    int count = lds_shard_count(p, k), L = 1, K = 1;
    size_t nctx = (size_t)s->text_len * s->D, nl = (size_t)s->C * s->T * s->H * s->W;
    float* ctx = (float*)malloc(sizeof(float) * nctx * (size_t)count);
    float* lat = (float*)malloc(sizeof(float) * nl * (size_t)s->batch);
    if (!ctx || !lat) { free(ctx); free(lat); st_errf(err, "out of host memory for shard %d (%d samples)", k, count); return 1; }
    int rc = 0;
    for (int j = 0; j < count && !rc; j++) {
        int r = 0;
        rc = s->context(s->ctx, p->prompt[first + j], ctx + (size_t)j * nctx, &r, err);
        if (r > L) L = r;
        int len = (int)strlen(p->prompt[first + j]);
        if (len > K) K = len;
    }
    if (rc) { free(ctx); free(lat); return 1; }
    char path[1000], fpv[64], shv[32], fiv[32];   // < LdWriter's path
    lds_shard_path(path, sizeof(path), dir, k);
    snprintf(fpv, sizeof(fpv), "%s", p->fingerprint); snprintf(shv, sizeof(shv), "%d", k); snprintf(fiv, sizeof(fiv), "%lld", (long long)first);
    const char* meta[6] = {"dataset_fingerprint", fpv, "shard", shv, "first_sample", fiv};
    LdWriter w;
    if (ld_write_begin(&w, path, count, s->C, s->T, s->H, s->W, L, s->D, s->negative_rows, K, meta, 3, err)) { free(ctx); free(lat); return 1; }
    float* row = (float*)malloc(sizeof(float) * (size_t)L * s->D);
    for (int j = 0; j < count && !rc && row; j += s->batch) {
        int b = count - j < s->batch ? count - j : s->batch;
        rc = s->latents(s->ctx, p, first + j, b, lat, err);
        for (int q = 0; q < b && !rc; q++) {
            memcpy(row, ctx + (size_t)(j + q) * nctx, sizeof(float) * (size_t)L * s->D);   // rows past the prompt's are zero
            ld_write_sample(&w, j + q, lat + (size_t)q * nl, row, p->prompt[first + j + q]);
        }
    }
    if (!row) { st_errf(err, "out of memory"); rc = 1; }
    if (!rc) ld_write_negative(&w, s->negative);
    rc = ld_write_end(&w, !rc, err) || rc;
    free(row); free(ctx); free(lat);
    return rc;
}

typedef struct { int shards, mine, already, made; } LdsReport;

// rank's share of the plan into dir: the manifest first, then every missing shard of the share
static inline int lds_run(const char* dir, const LdsPlan* p, int rank, int world, const LdsSource* s, LdsReport* rep, char* err) {
    memset(rep, 0, sizeof(*rep));
    rep->shards = p->n_shards;
    if (world < 1 || rank < 0 || rank >= world) { st_errf(err, "rank %d of %d is not a valid pair", rank, world); return 1; }
    if (s->batch < 1) { st_errf(err, "batch %d: expected at least 1", s->batch); return 1; }
    if (lds_manifest_sync(dir, p, err)) return 1;
    for (int k = 0; k < p->n_shards; k++) {
        if (!lds_shard_mine(k, rank, world)) continue;
        rep->mine++;
        if (lds_shard_done(dir, p, k)) { rep->already++; continue; }
        if (lds_write_shard(dir, p, k, s, err)) return 1;
        rep->made++;
        printf("dataset %s: shard %d of %d written (%d samples)\n", dir, k + 1, p->n_shards, lds_shard_count(p, k));
        fflush(stdout);
    }
    return 0;
}

// the reader of a dataset directory (ld_open on a directory): the manifest's shards, every one present and of the
// manifest's fingerprint, with one latent shape, context width and negative prompt
static inline int ld_open_dir_(LatentData* d, const char* dir, char* err) {
    snprintf(d->dir, sizeof(d->dir), "%s", dir);
    char path[1200], *text = NULL, val[64], fp[64];
    snprintf(path, sizeof(path), "%s/" LDS_MANIFEST, dir);
    struct stat sb;
    if (stat(path, &sb) != 0) {
        st_errf(err, "%s is a directory without a %s: --data takes a latent dataset file (./test_tmd pack) or a directory made by "
                "./sample_tmd --mode teacher --prompts FILE --dataset DIR", dir, LDS_MANIFEST);
        return 1;
    }
    if (lds_read_text_(path, &text, err)) return 1;
    long long n = 0; int shards = 0;
    int ok = !strncmp(text, LDS_MAGIC "\n", strlen(LDS_MAGIC) + 1) && lds_manifest_get_(text, "fingerprint", fp, sizeof(fp)) &&
             lds_manifest_get_(text, "samples", val, sizeof(val)) && sscanf(val, "%lld", &n) == 1 && n > 0 &&
             lds_manifest_get_(text, "shards", val, sizeof(val)) && sscanf(val, "%d", &shards) == 1 && shards > 0 && shards <= 10000000;
    free(text);
    if (!ok) { st_errf(err, "%s: not a tmd-dataset manifest (expected \"" LDS_MAGIC "\", fingerprint, samples, shards)", path); return 1; }
    d->shard = (LatentData*)calloc((size_t)shards, sizeof(LatentData));
    d->shard_first = (int64_t*)calloc((size_t)shards, sizeof(int64_t));
    if (!d->shard || !d->shard_first) { st_errf(err, "out of memory"); ld_close(d); return 1; }
    d->n_shards = shards;
    int missing = 0, first_missing = -1;
    for (int k = 0; k < shards; k++) {
        lds_shard_path(path, sizeof(path), dir, k);
        if (stat(path, &sb) != 0) { if (!missing++) first_missing = k; }
    }
    if (missing) {
        st_errf(err, "%s: %d of its %d shards are missing (the first: shard-%05d.safetensors); the dataset is not finished: rerun the "
                "sample_tmd --dataset command that made it (it makes only the missing shards)", dir, missing, shards, first_missing);
        ld_close(d);
        return 1;
    }
    for (int k = 0; k < shards; k++) {
        LatentData* s = &d->shard[k];
        lds_shard_path(path, sizeof(path), dir, k);
        if (ld_open(s, path, err)) { ld_close(d); return 1; }
        const char* sf = st_meta(&s->f, "dataset_fingerprint");
        if (!sf || strcmp(sf, fp)) {
            st_errf(err, "%s holds another model's shard: fingerprint %s, the manifest's %s; remake it (delete it and rerun the sample_tmd "
                    "--dataset command)", path, sf ? sf : "(missing)", fp);
            ld_close(d);
            return 1;
        }
        const LatentData* z = &d->shard[0];
        if (k && (s->C != z->C || s->T != z->T || s->H != z->H || s->W != z->W || s->D != z->D || s->neg->shape[0] != z->neg->shape[0])) {
            st_errf(err, "%s: latents [%d, %d, %d, %d], contexts %d wide, negative prompt %lld rows, but shard 0 has [%d, %d, %d, %d], %d, %lld; "
                    "remake this shard", path, s->C, s->T, s->H, s->W, s->D, (long long)s->neg->shape[0], z->C, z->T, z->H, z->W, z->D,
                    (long long)z->neg->shape[0]);
            ld_close(d);
            return 1;
        }
        d->shard_first[k] = d->n;
        d->n += s->n;
        if (s->L > d->L) d->L = s->L;
    }
    if (d->n != n) {
        st_errf(err, "%s: the shards hold %lld samples, the manifest plans %lld; remake the dataset", dir, (long long)d->n, n);
        ld_close(d);
        return 1;
    }
    const LatentData* z = &d->shard[0];
    d->C = z->C; d->T = z->T; d->H = z->H; d->W = z->W; d->D = z->D; d->neg = z->neg;
    d->cap_len = z->cap_len;
    return 0;
}
