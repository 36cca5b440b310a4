// gpu/kd_dataset.h: the KD warm-up's teacher ODE pairs made beside a dataset directory (issue 21's "the same path makes
// the KD warm-up's teacher trajectories for --data runs"): `sample_tmd --mode teacher --prompts FILE --dataset DIR
// --kd-pairs P` writes, after the dataset, the very file `train_tmd --stage kd --data DIR --kd-cache
// DIR/kd_pairs.safetensors` would make for itself (gpu/kd_gpu.cuh kd_pairs_get: the same noise, captions, teacher
// sampler and metadata), so the trainer loads it instead of sampling the teacher. Plain C (make test, group
// "prompts"); sample_tmd gives the noise and the teacher's samples on the GPU through KdSource.
//   KdDsPlan          the P pairs: pair i's dataset sample (its caption) drawn in train_tmd's KD order (train_data_open
//                     with stream KD_STREAM and train_tmd's --seed, one sample per draw: gpu/kd_pairs.h
//                     kd_pairs_captions), the cache metadata train_tmd will want (kd_pairs_meta; the contexts'
//                     fingerprint streamed: one caption in memory), chunks of S pairs
//   kd_ds_run         rank's share: chunks k ≡ rank (mod world), each DIR/kd-pairs-0000k.safetensors (written to .tmp,
//                     renamed: a killed run makes only the missing chunks again), then, when every chunk is there,
//                     DIR/kd_pairs.safetensors assembled from them (each rank through its own temporary name, renamed:
//                     two ranks assembling at once write the same bytes)
// A chunk records the whole cache metadata plus its place (kd_chunk, kd_first, kd_count): a chunk of other settings,
// another teacher or another dataset is made again, not mixed in.
// Noise: pair i's latent noise is Philox stream (seed·1000003 + KD_STREAM) elements [i·numel, (i+1)·numel), as
// kd_pairs_get draws all P at once (kernels/random.cuh: an element's value depends only on its index), so a chunk
// fills its own range.
#pragma once
#include <sys/stat.h>
#include "kd_pairs.h" // KdPairs, KdPairSettings, kd_pairs_meta, kd_fnv1a, kd_pairs_load, KD_STREAM

#define KD_DS_PAIRS_FILE "kd_pairs.safetensors"

typedef struct {
    int P, S, n_chunks;  // pairs, pairs per chunk, chunks
    size_t numel, nctx;  // floats per pair: latent (noise, target), caption [text_len, text_dim]
    int64_t* sample;     // [P] pair i's dataset sample
    uint64_t noise_seed; // Philox seed of the noise (seed·1000003 + KD_STREAM)
    TsMeta want;         // the cache's metadata, as train_tmd computes it
} KdDsPlan;

static void kd_ds_plan_free(KdDsPlan* p) {
    free(p->sample);
    memset(p, 0, sizeof(*p));
}
static int kd_ds_chunk_first(const KdDsPlan* p, int k) { return k * p->S; }
static int kd_ds_chunk_count(const KdDsPlan* p, int k) {
    int r = p->P - k * p->S;
    return r < p->S ? r : p->S;
}
static void kd_ds_chunk_path(char* out, size_t n, const char* dir, int k) {
    snprintf(out, n, "%s/kd-pairs-%05d.safetensors", dir, k);
}

// td: the finished dataset directory opened as train_tmd's KD warm-up opens it (train_data_open(td, DIR, c, seed,
// KD_STREAM, 0, 1)); s: the pairs' settings (s->seed: the --seed train_tmd will be given); teacher_hash:
// kd_teacher_hash of the teacher's weights as train_tmd loads them. Reads every pair's caption once (the
// fingerprint); keeps only the sample indices.
static int kd_ds_plan_make(KdDsPlan* p, TrainData* td, const WanConfig* c, const KdPairSettings* s,
                           uint64_t teacher_hash, int chunk, char* err) {
    memset(p, 0, sizeof(*p));
    if (!td->from_file) {
        st_errf(err, "KD pairs beside a dataset need the dataset (a directory or file), not the built-in world");
        return 1;
    }
    if (s->pairs < 1 || chunk < 1) {
        st_errf(err, "KD pairs: %d pairs in chunks of %d; expected at least 1 of each (--kd-pairs, --shard-size)",
                s->pairs, chunk);
        return 1;
    }
    p->P = s->pairs;
    p->S = chunk;
    p->n_chunks = (s->pairs + chunk - 1) / chunk;
    p->numel = td->numel;
    p->nctx = td->nctx;
    p->noise_seed = s->seed * 1000003 + KD_STREAM;
    p->sample = (int64_t*)malloc(sizeof(int64_t) * (size_t)s->pairs);
    float* ctx = (float*)malloc(sizeof(float) * td->nctx);
    if (!p->sample || !ctx) {
        free(ctx);
        kd_ds_plan_free(p);
        st_errf(err, "out of host memory for %d KD pairs' plan", s->pairs);
        return 1;
    }
    uint64_t h = KD_FNV_START;
    for (int i = 0; i < s->pairs; i++) { // train_data_next's draw, one sample at a time (kd_pairs_captions)
        ld_order_batch(&td->order, &td->position, td->rank, td->world, 1, &p->sample[i]);
        if (ld_read_context(&td->ld, p->sample[i], ctx, td->text_len, err)) {
            free(ctx);
            kd_ds_plan_free(p);
            return 1;
        }
        h = kd_fnv1a(h, ctx, td->nctx);
    }
    free(ctx);
    h = kd_fnv1a(h, td->negative, td->nctx);
    kd_pairs_meta(&p->want, c, td, s, teacher_hash, h);
    return 0;
}

// chunk k's metadata: the cache's, then its place
static void kd_ds_chunk_meta(TsMeta* m, const KdDsPlan* p, int k) {
    *m = p->want;
    ts_meta_set(m, "kind", "kd_pairs_chunk");
    ts_meta_u64(m, "kd_chunk", (uint64_t)k);
    ts_meta_u64(m, "kd_first", (uint64_t)kd_ds_chunk_first(p, k));
    ts_meta_u64(m, "kd_count", (uint64_t)kd_ds_chunk_count(p, k));
}

// 1 when chunk k is on disk with exactly this plan's metadata (a torn or foreign one is made again, said so)
static int kd_ds_chunk_done(const char* dir, const KdDsPlan* p, int k) {
    char path[1200], err[ST_ERRLEN];
    kd_ds_chunk_path(path, sizeof(path), dir, k);
    struct stat sb;
    if (stat(path, &sb) != 0) return 0;
    StFile f;
    if (st_open(&f, path, err)) {
        fprintf(stderr, "note: %s is unreadable (%s); making it again\n", path, err);
        return 0;
    }
    TsMeta have, want;
    memset(&have, 0, sizeof(have));
    for (int i = 0; i < f.n_meta && i < TS_MAX_META; i++) ts_meta_set(&have, f.meta_keys[i], f.meta_vals[i]);
    st_close(&f);
    kd_ds_chunk_meta(&want, p, k);
    for (int i = 0; i < want.n; i++) {
        const char* v = ts_meta_get(&have, want.key[i]);
        if (!v || strcmp(v, want.val[i])) {
            fprintf(stderr, "note: %s is not this run's KD chunk %d (its %s is %s, this run's %s); making it again\n",
                    path, k, want.key[i], v ? v : "(missing)", want.val[i]);
            return 0;
        }
    }
    return 1;
}

// where a chunk's pairs come from (sample_tmd: the GPU): the noise of Philox stream elements [offset, offset + n)
// of `seed`, and the teacher's samples of kp (kp->noise and kp->ctx set, kp->target to fill; the CFG's unconditional
// context is the dataset's negative prompt, `negative` [nctx])
typedef int (*KdDsNoiseFn)(void* u, uint64_t seed, uint64_t offset, size_t n, float* out, char* err);
typedef int (*KdDsTeacherFn)(void* u, KdPairs* kp, const float* negative, char* err);
typedef struct {
    KdDsNoiseFn noise;
    KdDsTeacherFn teacher;
    void* u;
} KdDsSource;

static int kd_ds_write_chunk(const char* dir, const KdDsPlan* p, TrainData* td, int k, const KdDsSource* s, char* err) {
    int first = kd_ds_chunk_first(p, k), n = kd_ds_chunk_count(p, k);
    KdPairs kp;
    kd_pairs_alloc(&kp, n, p->numel, p->nctx);
    int rc = s->noise(s->u, p->noise_seed, (uint64_t)first * p->numel, (size_t)n * p->numel, kp.noise, err);
    for (int i = 0; i < n && !rc; i++)
        rc = ld_read_context(&td->ld, p->sample[first + i], kp.ctx + (size_t)i * p->nctx, td->text_len, err);
    if (!rc) rc = s->teacher(s->u, &kp, td->negative, err);
    if (!rc) {
        char path[1200];
        TsMeta m;
        kd_ds_chunk_meta(&m, p, k);
        kd_ds_chunk_path(path, sizeof(path), dir, k);
        TsBuffer b[3] = {{"kd.noise", kp.noise, (size_t)n * p->numel},
                         {"kd.target", kp.target, (size_t)n * p->numel},
                         {"kd.context", kp.ctx, (size_t)n * p->nctx}};
        rc = ts_save(path, b, 3, &m, err);
    }
    kd_pairs_free(&kp);
    return rc;
}

// DIR/kd_pairs.safetensors from every chunk (all must be done): one file of P pairs, the metadata train_tmd wants
static int kd_ds_assemble(const char* dir, const KdDsPlan* p, int rank, char* err) {
    KdPairs kp;
    kd_pairs_alloc(&kp, p->P, p->numel, p->nctx);
    int rc = 0;
    for (int k = 0; k < p->n_chunks && !rc; k++) {
        char path[1200];
        TsMeta have;
        int first = kd_ds_chunk_first(p, k), n = kd_ds_chunk_count(p, k);
        kd_ds_chunk_path(path, sizeof(path), dir, k);
        TsBuffer b[3] = {{"kd.noise", kp.noise + (size_t)first * p->numel, (size_t)n * p->numel},
                         {"kd.target", kp.target + (size_t)first * p->numel, (size_t)n * p->numel},
                         {"kd.context", kp.ctx + (size_t)first * p->nctx, (size_t)n * p->nctx}};
        rc = ts_load(path, b, 3, &have, err);
    }
    char path[1200], tmp[1300];
    snprintf(path, sizeof(path), "%s/" KD_DS_PAIRS_FILE, dir);
    snprintf(tmp, sizeof(tmp), "%s.rank%d", path,
             rank); // ts_save writes tmp.tmp and renames it to tmp; then tmp -> path
    if (!rc) {
        TsBuffer b[3] = {{"kd.noise", kp.noise, (size_t)p->P * p->numel},
                         {"kd.target", kp.target, (size_t)p->P * p->numel},
                         {"kd.context", kp.ctx, (size_t)p->P * p->nctx}};
        rc = ts_save(tmp, b, 3, &p->want, err);
        if (!rc && rename(tmp, path) != 0) {
            st_errf(err, "%s: cannot rename %s to it: %s", path, tmp, strerror(errno));
            remove(tmp);
            rc = 1;
        }
    }
    kd_pairs_free(&kp);
    return rc;
}

// before any GPU work: an assembled DIR/kd_pairs.safetensors of other settings (pairs, sampler, seed, skip-layer
// guidance) is refused now; the teacher's and the dataset's fingerprints are compared after the dataset (kd_ds_run)
static int kd_ds_precheck(const char* dir, const KdPairSettings* s, char* err) {
    char path[1200];
    snprintf(path, sizeof(path), "%s/" KD_DS_PAIRS_FILE, dir);
    struct stat sb;
    if (stat(path, &sb) != 0) return 0;
    StFile f;
    TsMeta have, want;
    memset(&have, 0, sizeof(have));
    memset(&want, 0, sizeof(want));
    if (st_open(&f, path, err)) {
        char why[ST_ERRLEN];
        snprintf(why, sizeof(why), "%s", err);
        st_errf(err, "%.800s; delete it to make the KD pairs again", why);
        return 1;
    }
    for (int i = 0; i < f.n_meta && i < TS_MAX_META; i++) ts_meta_set(&have, f.meta_keys[i], f.meta_vals[i]);
    st_close(&f);
    ts_meta_set(&want, "kind", "kd_pairs");
    kd_pairs_meta_settings(&want, s);
    const char* hs = ts_meta_get(&have, "skip_layer");
    for (int i = 0; i <= want.n; i++) {
        const char* key = i < want.n ? want.key[i] : "skip_layer";
        const char* w = i < want.n ? want.val[i] : NULL;
        const char* v = ts_meta_get(&have, key);
        if (i == want.n && (!hs || ts_meta_get(&want, "skip_layer")))
            break; // the last round: a file with skip-layer guidance, a run without
        if (!v || !w || strcmp(v, w)) {
            st_errf(err,
                    "%s holds KD pairs with %s = %s, this run's %s = %s: move it away or delete it to make this run's "
                    "pairs, or give the "
                    "settings it was made with (--kd-pairs, --kd-sampler-steps, --kd-cfg, --kd-shift, --kd-skip-layer, "
                    "--seed)",
                    path, key, v ? v : "(none)", key, w ? w : "(none)");
            return 1;
        }
    }
    return 0;
}

typedef struct {
    int chunks, mine, already, made, missing, assembled;
} KdDsReport;

// rank's chunks of the plan into dir, then the assembled file when every chunk is there (missing: chunks of other
// ranks not yet written; a rerun, or the last rank to finish, assembles). An assembled file of this plan already
// there: nothing to do.
static int kd_ds_run(const char* dir, const KdDsPlan* p, TrainData* td, int rank, int world, const KdDsSource* s,
                     KdDsReport* rep, char* err) {
    memset(rep, 0, sizeof(*rep));
    rep->chunks = p->n_chunks;
    if (world < 1 || rank < 0 || rank >= world) {
        st_errf(err, "rank %d of %d is not a valid pair", rank, world);
        return 1;
    }
    char path[1200];
    snprintf(path, sizeof(path), "%s/" KD_DS_PAIRS_FILE, dir);
    struct stat sb;
    if (stat(path, &sb) == 0) {
        StFile f;
        TsMeta have;
        memset(&have, 0, sizeof(have));
        if (st_open(&f, path, err)) return 1;
        for (int i = 0; i < f.n_meta && i < TS_MAX_META; i++) ts_meta_set(&have, f.meta_keys[i], f.meta_vals[i]);
        st_close(&f);
        if (kd_pairs_check(&have, &p->want, path, err) == 0) {
            rep->assembled = 1;
            return 0;
        }
        char why[ST_ERRLEN];
        snprintf(why, sizeof(why), "%s", err);
        st_errf(err,
                "%.800s. It holds other KD pairs than this run's (--kd-pairs, --kd-sampler-steps, --kd-cfg, "
                "--kd-shift, --kd-skip-layer, --seed, "
                "the teacher, the dataset); move it away or delete it to make this run's",
                why);
        return 1;
    }
    for (int k = 0; k < p->n_chunks; k++) {
        if (k % world != rank) continue;
        rep->mine++;
        if (kd_ds_chunk_done(dir, p, k)) {
            rep->already++;
            continue;
        }
        if (kd_ds_write_chunk(dir, p, td, k, s, err)) return 1;
        rep->made++;
        printf("KD pairs %s: chunk %d of %d written (%d pairs)\n", dir, k + 1, p->n_chunks, kd_ds_chunk_count(p, k));
        fflush(stdout);
    }
    for (int k = 0; k < p->n_chunks; k++) rep->missing += !kd_ds_chunk_done(dir, p, k);
    if (rep->missing) return 0;
    if (kd_ds_assemble(dir, p, rank, err)) return 1;
    rep->assembled = 2;
    return 0;
}
