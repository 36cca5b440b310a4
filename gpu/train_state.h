// gpu/train_state.h: a training checkpoint as one safetensors file, plain C (tested on the CPU; train_tmd copies its
// device buffers to the host and back). Every buffer that decides the next step is in it: master weights and AdamW
// moments of every trainable network, and as metadata the step, the AdamW step counts, the host random stream
// (seed, counter), the Philox noise stream (seed, offset), the data stream's state and the settings the run was
// started with. Written atomically (path.tmp, fsync, rename: lib/safetensors.h), so a crash leaves the previous
// checkpoint whole; a resumed run is the uninterrupted one, bit for bit, because nothing else carries state.
// A resume refuses a file whose buffers are missing or of another size, or whose settings differ, naming which.
#pragma once
#include "../lib/safetensors.h"

typedef struct {
    const char* name;
    float* data;
    size_t n;
} TsBuffer; // one flat fp32 buffer (host)
#define TS_MAX_META 32
typedef struct {
    int n;
    char key[TS_MAX_META][48];
    char val[TS_MAX_META][256];
} TsMeta;

static void ts_meta_set(TsMeta* m, const char* key, const char* val) {
    for (int i = 0; i < m->n; i++)
        if (!strcmp(m->key[i], key)) {
            snprintf(m->val[i], sizeof(m->val[i]), "%s", val);
            return;
        }
    if (m->n >= TS_MAX_META) {
        fprintf(stderr, "ts_meta_set: more than %d metadata keys\n", TS_MAX_META);
        exit(1);
    }
    snprintf(m->key[m->n], sizeof(m->key[0]), "%s", key);
    snprintf(m->val[m->n], sizeof(m->val[0]), "%s", val);
    m->n++;
}
static void ts_meta_u64(TsMeta* m, const char* key, uint64_t v) {
    char b[32];
    snprintf(b, sizeof(b), "%llu", (unsigned long long)v);
    ts_meta_set(m, key, b);
}
static const char* ts_meta_get(const TsMeta* m, const char* key) {
    for (int i = 0; i < m->n; i++)
        if (!strcmp(m->key[i], key)) return m->val[i];
    return NULL;
}
// parses an unsigned metadata value; 1 with a message when missing or not a number
static int ts_meta_get_u64(const TsMeta* m, const char* key, uint64_t* v, const char* path, char* err) {
    const char* s = ts_meta_get(m, key);
    char* end = NULL;
    if (!s) {
        st_errf(err, "%s: checkpoint has no '%s' entry; was it written by train_tmd?", path, key);
        return 1;
    }
    errno = 0;
    unsigned long long x = strtoull(s, &end, 10);
    if (errno || !end || *end || end == s) {
        st_errf(err, "%s: checkpoint entry '%s' is '%s', expected an unsigned integer", path, key, s);
        return 1;
    }
    *v = (uint64_t)x;
    return 0;
}

static int ts_save(const char* path, const TsBuffer* bufs, int nb, const TsMeta* meta, char* err) {
    StOut* o = (StOut*)calloc(nb ? nb : 1, sizeof(StOut));
    const char** kv = (const char**)calloc(2 * (meta->n + 1), sizeof(char*));
    for (int i = 0; i < nb; i++) {
        o[i].name = bufs[i].name;
        o[i].ndim = 1;
        o[i].shape[0] = (int64_t)bufs[i].n;
        o[i].f32 = bufs[i].data;
    }
    for (int i = 0; i < meta->n; i++) {
        kv[2 * i] = meta->key[i];
        kv[2 * i + 1] = meta->val[i];
    }
    int rc = st_write(path, o, nb, kv, meta->n, err);
    free(o);
    free(kv);
    return rc;
}

// reads every buffer (each must exist with exactly n elements) and the metadata into *meta
static int ts_load(const char* path, TsBuffer* bufs, int nb, TsMeta* meta, char* err) {
    StFile f;
    if (st_open(&f, path, err)) return 1;
    int rc = 0;
    memset(meta, 0, sizeof(*meta));
    for (int k = 0; k < f.n_meta && k < TS_MAX_META; k++) ts_meta_set(meta, f.meta_keys[k], f.meta_vals[k]);
    for (int i = 0; i < nb && !rc; i++) {
        const StTensor* t = st_find(&f, bufs[i].name);
        if (!t) {
            st_errf(err,
                    "%s: checkpoint has no buffer '%s'; it was written by another stage or version (resume the same "
                    "--stage)",
                    path, bufs[i].name);
            rc = 1;
            break;
        }
        if (t->numel != (int64_t)bufs[i].n) {
            st_errf(err,
                    "%s: buffer '%s' has %lld elements, this run needs %zu; the checkpoint is of another model or "
                    "config (--preset, --head-blocks, --fusion)",
                    path, bufs[i].name, (long long)t->numel, bufs[i].n);
            rc = 1;
            break;
        }
        rc = st_read_float(&f, t, bufs[i].data, err);
    }
    st_close(&f);
    return rc;
}

// the settings a resumed run must share with the checkpoint: every key of `want` must be there with the same value
static int ts_check_settings(const TsMeta* have, const TsMeta* want, const char* path, char* err) {
    for (int i = 0; i < want->n; i++) {
        const char* v = ts_meta_get(have, want->key[i]);
        if (!v || strcmp(v, want->val[i])) {
            st_errf(err,
                    "%s: this run has %s = %s but the checkpoint was written with %s; resume with the same settings, "
                    "or start a new run",
                    path, want->key[i], want->val[i], v ? v : "(missing)");
            return 1;
        }
    }
    return 0;
}

// whether a stage's checkpoint is there and how far it got: 0 when `path` does not exist, 1 with *step from its
// metadata, -1 with a message when it exists but is not a readable train_tmd checkpoint
static int ts_peek_step(const char* path, uint64_t* step, char* err) {
    FILE* f = fopen(path, "rb");
    if (!f) return 0;
    fclose(f);
    StFile sf;
    if (st_open(&sf, path, err)) return -1;
    TsMeta meta;
    memset(&meta, 0, sizeof(meta));
    for (int k = 0; k < sf.n_meta && k < TS_MAX_META; k++) ts_meta_set(&meta, sf.meta_keys[k], sf.meta_vals[k]);
    st_close(&sf);
    return ts_meta_get_u64(&meta, "step", step, path, err) ? -1 : 1;
}

// what a pipeline does with a stage whose checkpoint is `path` and whose run is `steps` long: start it, resume it
// from the checkpoint, or skip it (done); TS_BAD with a message when the file is there but unreadable
enum { TS_BAD = -1, TS_FRESH = 0, TS_RESUME = 1, TS_DONE = 2 };
static int ts_stage_action(const char* path, uint64_t steps, uint64_t* done, char* err) {
    *done = 0;
    int have = ts_peek_step(path, done, err);
    if (have < 0) return TS_BAD;
    if (!have) return TS_FRESH;
    return *done >= steps ? TS_DONE : TS_RESUME;
}

// A checkpoint of a data-parallel run (mpirun -np K) is the same file as a one-rank run's: rank 0 writes the whole
// weights and the AdamW moments gathered from the ranks' slices (gpu/shard_gpu.cuh shard_opt_gather_moments), and
// one set of streams, because every stream is the global batch's (train_tmd: each rank draws the step's K·B samples'
// scalars and data and keeps its own B; its Philox noise is its slice of the global batch's offsets). So the file has
// no per-rank state. Its "batch" is the global batch of a micro-batch (K·B; a one-rank run's B, as before) and
// "ranks" the K that wrote it (absent: 1). A resume on K' ranks with batch B' continues the same sample stream when
// K'·B' is the checkpoint's global batch: the same K is the uninterrupted run, another K re-shards on load (each rank
// slices the whole buffers it read); any other B' is refused with the batch that would fit. 0, or 1 with the message.
static int ts_check_layout(const TsMeta* have, int ranks, int batch, const char* path, char* err) {
    uint64_t gb = 0, k0 = 1;
    if (ts_meta_get_u64(have, "batch", &gb, path, err)) return 1;
    if (ts_meta_get(have, "ranks") && ts_meta_get_u64(have, "ranks", &k0, path, err)) return 1;
    if ((uint64_t)ranks * (uint64_t)batch == gb) return 0;
    if (gb % (uint64_t)ranks == 0)
        st_errf(err,
                "%s: the checkpoint's global batch is %llu (%llu rank%s x batch %llu), this run's %d (%d rank%s x "
                "--batch %d); "
                "resume with --batch %llu on %d rank%s to keep the global batch (or start a new run)",
                path, (unsigned long long)gb, (unsigned long long)k0, k0 > 1 ? "s" : "", (unsigned long long)(gb / k0),
                ranks * batch, ranks, ranks > 1 ? "s" : "", batch, (unsigned long long)(gb / (uint64_t)ranks), ranks,
                ranks > 1 ? "s" : "");
    else
        st_errf(err,
                "%s: the checkpoint's global batch is %llu (%llu rank%s x batch %llu), which %d ranks cannot split "
                "evenly; resume on a "
                "number of ranks that divides %llu with --batch %llu / ranks (or start a new run)",
                path, (unsigned long long)gb, (unsigned long long)k0, k0 > 1 ? "s" : "", (unsigned long long)(gb / k0),
                ranks, (unsigned long long)gb, (unsigned long long)gb);
    return 1;
}
