// gpu/kd_pairs.h: the KD warm-up's teacher ODE pairs on the host, plain C (tested on the CPU in `make test`, group
// "data"; gpu/kd_gpu.cuh makes them with the GPU teacher and caches them):
//   KdPairs            P pairs: the noise, the teacher's sample from it, the caption it was sampled for
//   kd_pairs_captions  the pairs' captions, drawn from the run's data source (gpu/train_data.h) as the stages draw
//                      theirs: the built-in world's training stream (seed, KD_STREAM), or a latent dataset's contexts
//                      in its shuffled order (train_data_next)
//   kd_pairs_meta      what the cache records about how its pairs were made (the source, the teacher's sampler, the
//                      seed, a fingerprint of the teacher); kd_pairs_check refuses a cache that differs, naming how
#pragma once
#include "train_data.h"   // TrainData, train_data_next, train_data_describe
#include "train_state.h"  // TsMeta
#include "../lib/alloc.h" // xmalloc

#define KD_STREAM 4 // the KD pairs' streams: (seed, 4) next to the stages' 0 .. 3 (train_tmd.cu)

// the pairs on the host: noise, the teacher's sample from it, the caption (zero-padded to text_len rows)
typedef struct {
    int P;
    size_t numel, nctx;
    float *noise, *target, *ctx; // [P·numel], [P·numel], [P·nctx]
} KdPairs;

// the settings that made a set of pairs (a cache that differs in any of them is refused)
typedef struct {
    int pairs, steps;
    double cfg, shift; // how many; the teacher's sampler: UniPC steps, CFG, shift
    uint64_t seed;     // the noise and captions
    int skip_layer;    // skip-layer guidance: the block the unconditional forward drops (-1: none)
} KdPairSettings;

static void kd_pairs_alloc(KdPairs* kp, int P, size_t numel, size_t nctx) {
    kp->P = P;
    kp->numel = numel;
    kp->nctx = nctx;
    kp->noise = (float*)xmalloc((size_t)P * numel, sizeof(float), "KD pairs: noise");
    kp->target = (float*)xmalloc((size_t)P * numel, sizeof(float), "KD pairs: teacher samples");
    kp->ctx = (float*)xmalloc((size_t)P * nctx, sizeof(float), "KD pairs: captions");
}
static void kd_pairs_free(KdPairs* kp) {
    free(kp->noise);
    free(kp->target);
    free(kp->ctx);
    memset(kp, 0, sizeof(*kp));
}

// FNV-1a over fp32 words, continuing from h (start: KD_FNV_START): a fingerprint of the teacher's weights, and of a
// dataset's pair contexts and negative prompt, so pairs of another teacher or dataset are refused
#define KD_FNV_START 1469598103934665603ull
static uint64_t kd_fnv1a(uint64_t h, const float* w, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &w[i], 4);
        h = (h ^ u) * 1099511628211ull;
    }
    return h;
}
static uint64_t kd_teacher_hash(const float* w, size_t n) { return kd_fnv1a(KD_FNV_START, w, n); }

// the P captions of the pairs into ctx [P·nctx] from td, opened for this purpose with stream KD_STREAM
// (train_data_open(td, data, c, seed, KD_STREAM, 0, 1, ...)): pair i takes the i-th draw, one sample per draw. The
// world: world_sample_batch's training stream (seed, KD_STREAM, 0), as the pairs always were; a dataset: its contexts
// in its shuffled order for this seed (each sample's latent is read and dropped: the pair's target is the teacher's
// sample). *contexts_hash: the fingerprint of a dataset's pair contexts and negative prompt (0 for the world, whose
// stream the seed fixes). Nonzero with a message on a bad sample.
static int kd_pairs_captions(float* ctx, TrainData* td, int P, uint64_t* contexts_hash, char* err) {
    float* x = (float*)xmalloc(td->numel, sizeof(float), "KD pairs: a sample's latent");
    int rc = 0;
    for (int i = 0; i < P && !rc; i++) rc = train_data_next(td, 1, x, ctx + (size_t)i * td->nctx, err);
    free(x);
    *contexts_hash = 0;
    if (!rc && td->from_file)
        *contexts_hash = kd_fnv1a(kd_fnv1a(KD_FNV_START, ctx, (size_t)P * td->nctx), td->negative, td->nctx);
    return rc;
}

// the settings' part of the cache's metadata (kd_pairs_meta; sample_tmd --kd-pairs checks an existing file's with it
// before any GPU work)
static void kd_pairs_meta_settings(TsMeta* m, const KdPairSettings* s) {
    char b[64];
    ts_meta_u64(m, "pairs", (uint64_t)s->pairs);
    ts_meta_u64(m, "sampler_steps", (uint64_t)s->steps);
    snprintf(b, sizeof(b), "%.17g", s->cfg);
    ts_meta_set(m, "cfg", b);
    snprintf(b, sizeof(b), "%.17g", s->shift);
    ts_meta_set(m, "shift", b);
    ts_meta_u64(m, "seed", s->seed);
    if (s->skip_layer >= 0)
        ts_meta_u64(m, "skip_layer", (uint64_t)s->skip_layer); // absent: none (caches written before it)
}

// the cache's metadata. The world's pairs keep the keys they always had (kind, config, world, pairs, sampler_steps,
// cfg, shift, seed, teacher_fnv1a), so caches written before --data still load; a dataset's replace "world" by "data"
// (train_data_describe: the latents' count and shape, the order's seed) and "contexts_fnv1a" (the pairs' contexts and
// the negative prompt the teacher's CFG used)
static void kd_pairs_meta(TsMeta* m, const WanConfig* c, const TrainData* td, const KdPairSettings* s,
                          uint64_t teacher_hash, uint64_t contexts_hash) {
    memset(m, 0, sizeof(*m));
    char b[256];
    ts_meta_set(m, "kind", "kd_pairs");
    ts_meta_set(m, "config", c->name);
    if (!td->from_file)
        ts_meta_set(m, "world", td->wc.name);
    else {
        train_data_describe(td, b, sizeof(b));
        ts_meta_set(m, "data", b);
        snprintf(b, sizeof(b), "%016llx", (unsigned long long)contexts_hash);
        ts_meta_set(m, "contexts_fnv1a", b);
    }
    kd_pairs_meta_settings(m, s);
    snprintf(b, sizeof(b), "%016llx", (unsigned long long)teacher_hash);
    ts_meta_set(m, "teacher_fnv1a", b);
}

// 0 when the cache's metadata `have` records the pairs this run wants; else 1 with the first difference in err: the
// source first (the built-in world vs a latent dataset, then which world or dataset), then every other setting
static int kd_pairs_check(const TsMeta* have, const TsMeta* want, const char* path, char* err) {
    const char* hw = ts_meta_get(have, "world");
    const char* hd = ts_meta_get(have, "data");
    const char* ww = ts_meta_get(want, "world");
    const char* wd = ts_meta_get(want, "data");
    const char* kind = ts_meta_get(have, "kind");
    if (!kind || strcmp(kind, "kd_pairs")) {
        st_errf(err, "%s holds no KD pairs (its kind is '%s', expected 'kd_pairs')", path, kind ? kind : "(missing)");
        return 1;
    }
    if (ww && !hw && hd) {
        st_errf(err,
                "%s holds pairs made from a latent dataset (%s), but this run's pairs are of the built-in world '%s'",
                path, hd, ww);
        return 1;
    }
    if (wd && !hd && hw) {
        st_errf(err,
                "%s holds pairs of the built-in world '%s', but this run's pairs come from the latent dataset (%s)",
                path, hw, wd);
        return 1;
    }
    const char* hs = ts_meta_get(have, "skip_layer"); // recorded only when used: a run without it checks its absence
    if (hs && !ts_meta_get(want, "skip_layer")) {
        st_errf(
            err,
            "%s holds pairs sampled with skip-layer guidance at block %s, but this run's pairs are sampled without it",
            path, hs);
        return 1;
    }
    for (int i = 0; i < want->n; i++) {
        const char* v = ts_meta_get(have, want->key[i]);
        if (!v || strcmp(v, want->val[i])) {
            const char* what =
                !strcmp(want->key[i], "data") ? " (another latent dataset, or another --seed's order of it)"
                : !strcmp(want->key[i], "contexts_fnv1a")
                    ? " (the dataset's contexts or negative prompt differ: another dataset of the same shape)"
                : !strcmp(want->key[i], "teacher_fnv1a") ? " (another teacher)"
                                                         : "";
            st_errf(err, "%s: this run's pairs have %s = %s, the cache's %s%s", path, want->key[i], want->val[i],
                    v ? v : "(missing)", what);
            return 1;
        }
    }
    return 0;
}

// reads a cache file's pairs into kp (allocated for the P pairs `want` records) when its metadata is `want`'s; 1 with
// what differs and what to do otherwise (train_tmd's KD warm-up, gpu/kd_gpu.cuh kd_pairs_get; the pairs sample_tmd
// --dataset --kd-pairs writes, gpu/kd_dataset.h, are read by this)
static int kd_pairs_load(KdPairs* kp, const char* path, const TsMeta* want, char* err) {
    TsMeta have;
    memset(&have, 0, sizeof(have));
    TsBuffer b[3] = {{"kd.noise", kp->noise, (size_t)kp->P * kp->numel},
                     {"kd.target", kp->target, (size_t)kp->P * kp->numel},
                     {"kd.context", kp->ctx, (size_t)kp->P * kp->nctx}};
    char why[ST_ERRLEN];
    // the settings first: a cache of another size then says which setting differs, not which buffer
    StFile sf;
    if (st_open(&sf, path, why)) {
        snprintf(err, ST_ERRLEN, "KD pairs cache: %.700s (delete it to make the pairs again)", why);
        return 1;
    }
    for (int k = 0; k < sf.n_meta && k < TS_MAX_META; k++) ts_meta_set(&have, sf.meta_keys[k], sf.meta_vals[k]);
    st_close(&sf);
    if (kd_pairs_check(&have, want, path, why) || ts_load(path, b, 3, &have, why)) {
        snprintf(
            err, ST_ERRLEN,
            "KD pairs cache: %.700s. The pairs must come from this teacher and this run's data (the built-in world, or "
            "--data) with this run's --kd-pairs, --kd-sampler-steps, --kd-cfg, --kd-shift, --kd-skip-layer and --seed: "
            "delete the file (or give "
            "another --kd-cache) to make them again",
            why);
        return 1;
    }
    return 0;
}
