// cpu/umt5_cpu.h: the umT5 text encoder (transformers' UMT5EncoderModel) on the CPU, in double precision, reading
// its weights from safetensors row by row in their stored dtype, so the 5.7B-parameter umT5-XXL runs in a few
// hundred MB of memory.
//
//   Umt5Model m; char err[ST_ERRLEN];
//   umt5_open(&m, "text_encoder/", err);          // a .safetensors file, an index.json, or a folder with either
//   umt5_encode(&m, ids, L, out, err);            // out [L, d_model]: the last hidden state of the L tokens
//   umt5_close(&m);
//
// The architecture (transformers 5.24.0, models/umt5/modeling_umt5.py, read for facts; T5 v1.1 layout):
//   h = shared[ids]                                                    (no scaling of the embedding)
//   for each block:  n = rms(h) * layer.0.layer_norm                   rms(x) = x / sqrt(mean(x^2) + eps), no mean, no bias
//                    h += o( softmax_j( q_i . k_j + bias_h(j - i) ) v_j )   per head; no 1/sqrt(d_kv) (UMT5Attention.scaling = 1)
//                    n = rms(h) * layer.1.layer_norm
//                    h += wo( gelu_tanh(wi_0 n) * (wi_1 n) )           gated-gelu: ACT2FN["gelu_new"], the tanh form
//   out = rms(h) * final_layer_norm
// Unlike T5, every block has its own relative_attention_bias [num_buckets, num_heads]. The bucket of a relative
// position r = j - i (bidirectional encoder): half the buckets for r > 0; within a half, |r| < nb/4 is exact, larger
// |r| go to nb/4 + trunc(log(|r| / (nb/4)) / log(max_distance / (nb/4)) * (nb/4)), capped at nb/2 - 1, computed in
// float32 as transformers does (so positions on a bucket edge land where they land there).
// Padding: Wan runs the encoder on 512 positions with an attention mask and keeps the valid rows; a masked key gets
// no weight and the bias depends on j - i only, so the valid rows equal a run on the valid tokens alone (done here).
//
// Weights: transformers' names (`text_encoder/` of a diffusers Wan folder): shared.weight (or
// encoder.embed_tokens.weight), encoder.block.{i}.layer.0.SelfAttention.{q,k,v,o,relative_attention_bias}.weight,
// encoder.block.{i}.layer.0.layer_norm.weight, encoder.block.{i}.layer.1.DenseReluDense.{wi_0,wi_1,wo}.weight,
// encoder.block.{i}.layer.1.layer_norm.weight, encoder.final_layer_norm.weight; F32, BF16, F16 or F64, single file
// or sharded. The config is inferred from the shapes; relative_attention_max_distance and layer_norm_epsilon come
// from config.json beside the weights when there is one (else 128 and 1e-6, umT5's values). Wan's own
// models_t5_umt5-xxl-enc-bf16.pth (pickle, other names) is not read: use the diffusers folder's text_encoder/.
#pragma once
#include <math.h>
#include <sys/resource.h>
#include "../lib/safetensors.h"   // StSet: single or sharded safetensors, the JSON parser for config.json

typedef struct {
    int vocab, d_model, d_kv, num_heads, d_ff, num_layers, num_buckets, max_distance;
    double eps;
} Umt5Config;

// google/umt5-xxl, the encoder Wan2.1 uses (its text_encoder/config.json): 5.68B parameters in the encoder
static const Umt5Config UMT5_XXL = {256384, 4096, 64, 64, 10240, 24, 32, 128, 1e-6};

// a weight matrix [rows, cols] read on demand: from a file at an offset, or from memory (timing runs)
typedef struct { FILE* fp; const unsigned char* mem; uint64_t begin; int dtype; int64_t rows, cols; const char* name; } UmMat;

typedef struct {
    UmMat q, k, v, o, wi0, wi1, wo;   // [inner, d] x3, [d, inner], [d_ff, d] x2, [d, d_ff]
    double *ln1, *ln2;                // [d] each
    double* rel_bias;                 // [num_buckets, num_heads]
} Umt5Layer;

typedef struct {
    Umt5Config c;
    UmMat shared;                     // [vocab, d]
    Umt5Layer* layer;                 // [num_layers]
    double* final_ln;                 // [d]
    StSet set; FILE** fps;            // open shards (none for in-memory weights)
    unsigned char* stage;             // staging for one chunk of rows in the stored dtype
    double* wrows;                    // one chunk of rows converted to double
    size_t chunk_rows;
} Umt5Model;

static inline size_t umt5_num_params(const Umt5Config* c) {
    size_t d = (size_t)c->d_model, inner = (size_t)c->num_heads * c->d_kv, f = (size_t)c->d_ff;
    size_t per = 4 * inner * d + 3 * f * d + 2 * d + (size_t)c->num_buckets * c->num_heads;
    return (size_t)c->vocab * d + (size_t)c->num_layers * per + d;
}

// relative position r = key - query -> bucket, bidirectional (UMT5Attention._relative_position_bucket)
static inline int umt5_bucket(int r, int num_buckets, int max_distance) {
    int nb = num_buckets / 2, b = r > 0 ? nb : 0, n = r < 0 ? -r : r, max_exact = nb / 2;
    if (n < max_exact) return b + n;
    float ratio = logf((float)n / (float)max_exact) / (float)log((double)max_distance / max_exact);
    long large = max_exact + (long)(ratio * (float)(nb - max_exact));
    return b + (int)(large < nb - 1 ? large : nb - 1);
}

// rows [r0, r0 + nr) of W as double into dst [nr, cols]
static inline int um_read_rows(Umt5Model* m, const UmMat* W, int64_t r0, int64_t nr, double* dst, char* err) {
    int es = st_dtype_sizes[W->dtype];
    size_t n = (size_t)nr * (size_t)W->cols, bytes = n * (size_t)es;
    const unsigned char* src;
    if (W->mem) src = W->mem + (size_t)r0 * (size_t)W->cols * (size_t)es;
    else {
        if (st_fseek(W->fp, W->begin + (uint64_t)r0 * (uint64_t)W->cols * (uint64_t)es) != 0 || fread(m->stage, 1, bytes, W->fp) != bytes) {
            st_errf(err, "%s: could not read rows %lld..%lld: %s; the file is truncated or changed since it was opened", W->name,
                    (long long)r0, (long long)(r0 + nr), strerror(errno));
            return 1;
        }
        src = m->stage;
    }
    for (size_t i = 0; i < n; i++) {
        const unsigned char* q = src + i * (size_t)es; uint16_t h; float f;
        switch (W->dtype) {
        case ST_F32: memcpy(&f, q, 4); dst[i] = f; break;
        case ST_BF16: memcpy(&h, q, 2); dst[i] = st_bf16_to_f32(h); break;
        case ST_F16: memcpy(&h, q, 2); dst[i] = st_f16_to_f32(h); break;
        default: memcpy(&dst[i], q, 8); break;   // F64
        }
    }
    return 0;
}

// y [L, W.rows] = x [L, W.cols] · Wᵀ, streaming W in chunks of rows (overwrites y)
static inline int umt5_linear(Umt5Model* m, double* y, const double* x, const UmMat* W, int L, char* err) {
    int64_t R = W->rows, C = W->cols;
    for (int64_t r0 = 0; r0 < R; r0 += (int64_t)m->chunk_rows) {
        int64_t nr = R - r0 < (int64_t)m->chunk_rows ? R - r0 : (int64_t)m->chunk_rows;
        if (um_read_rows(m, W, r0, nr, m->wrows, err)) return 1;
        #pragma omp parallel for schedule(static) if ((double)L * (double)nr * (double)C > 2e6)   // threads only pay off on big chunks
        for (int64_t r = 0; r < nr; r++) {
            const double* w = m->wrows + r * C;
            int l = 0;
            for (; l + 4 <= L; l += 4) {   // four tokens per pass over the row: the row is loaded once, four sums run in parallel
                const double *x0 = x + (size_t)l * C, *x1 = x0 + C, *x2 = x1 + C, *x3 = x2 + C;
                double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
                for (int64_t i = 0; i < C; i++) { double wi = w[i]; s0 += x0[i] * wi; s1 += x1[i] * wi; s2 += x2[i] * wi; s3 += x3[i] * wi; }
                y[(size_t)l * R + r0 + r] = s0; y[(size_t)(l + 1) * R + r0 + r] = s1;
                y[(size_t)(l + 2) * R + r0 + r] = s2; y[(size_t)(l + 3) * R + r0 + r] = s3;
            }
            for (; l < L; l++) {
                const double* xl = x + (size_t)l * C; double s = 0;
                for (int64_t i = 0; i < C; i++) s += xl[i] * w[i];
                y[(size_t)l * R + r0 + r] = s;
            }
        }
    }
    return 0;
}

static inline void umt5_rmsnorm(double* out, const double* x, const double* w, int L, int d, double eps) {
    for (int l = 0; l < L; l++) {
        const double* xl = x + (size_t)l * d; double ss = 0;
        for (int i = 0; i < d; i++) ss += xl[i] * xl[i];
        double r = 1.0 / sqrt(ss / d + eps);
        for (int i = 0; i < d; i++) out[(size_t)l * d + i] = w[i] * (xl[i] * r);
    }
}

static inline double umt5_gelu_tanh(double x) { return 0.5 * x * (1.0 + tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))); }

// the last hidden state of ids[0..L) into out [L, d_model]; ids outside the vocabulary are an error
static inline int umt5_encode(Umt5Model* m, const int* ids, int L, double* out, char* err) {
    const Umt5Config* c = &m->c;
    int d = c->d_model, H = c->num_heads, dk = c->d_kv, inner = H * dk, F = c->d_ff;
    if (L < 1) { st_errf(err, "umt5_encode: %d tokens; need at least 1 (an empty prompt still has </s>)", L); return 1; }
    for (int l = 0; l < L; l++) if (ids[l] < 0 || ids[l] >= c->vocab) {
        st_errf(err, "token %d of %d is id %d, outside the encoder's vocabulary of %d; was the tokenizer made for these weights?", l, L, ids[l], c->vocab);
        return 1;
    }
    size_t Ld = (size_t)L * d;
    double* h = out;                                            // the residual stream lives in the output
    double* n = (double*)malloc(sizeof(double) * Ld);
    double* q = (double*)malloc(sizeof(double) * (size_t)L * inner);
    double* k = (double*)malloc(sizeof(double) * (size_t)L * inner);
    double* v = (double*)malloc(sizeof(double) * (size_t)L * inner);
    double* att = (double*)malloc(sizeof(double) * (size_t)L * inner);   // attention output before o
    double* a = (double*)malloc(sizeof(double) * (size_t)L * F);         // wi_0 n, then the gated product
    double* b = (double*)malloc(sizeof(double) * (size_t)L * F);         // wi_1 n
    double* tmp = (double*)malloc(sizeof(double) * Ld);                 // o(att) and wo(a) before the residual add
    int* bucket = (int*)malloc(sizeof(int) * (2 * (size_t)L + 1));      // bucket of r = j - i, r in [-L, L]
    int rc = !n || !q || !k || !v || !att || !a || !b || !tmp || !bucket;
    if (rc) st_errf(err, "out of memory for the activations of %d tokens (%.1f MB)", L, (double)L * (3 * d + 4 * inner + 2 * F) * 8 / 1e6);
    for (int l = 0; l < L && !rc; l++) rc = um_read_rows(m, &m->shared, ids[l], 1, h + (size_t)l * d, err);
    for (int r = -L; r <= L && !rc; r++) bucket[r + L] = umt5_bucket(r, c->num_buckets, c->max_distance);
    for (int li = 0; li < c->num_layers && !rc; li++) {
        const Umt5Layer* Y = &m->layer[li];
        umt5_rmsnorm(n, h, Y->ln1, L, d, c->eps);
        rc = umt5_linear(m, q, n, &Y->q, L, err) || umt5_linear(m, k, n, &Y->k, L, err) || umt5_linear(m, v, n, &Y->v, L, err);
        if (rc) break;
        #pragma omp parallel for schedule(static) if ((double)L * L * inner > 2e6)
        for (int hi = 0; hi < H; hi++) {
            double* p = (double*)malloc(sizeof(double) * (size_t)L);
            for (int i = 0; i < L; i++) {
                const double* qi = q + (size_t)i * inner + hi * dk;
                double mx = -INFINITY, sum = 0;
                for (int j = 0; j < L; j++) {
                    const double* kj = k + (size_t)j * inner + hi * dk; double s = 0;
                    for (int e = 0; e < dk; e++) s += qi[e] * kj[e];
                    p[j] = s + Y->rel_bias[bucket[j - i + L] * H + hi];
                    if (p[j] > mx) mx = p[j];
                }
                for (int j = 0; j < L; j++) { p[j] = exp(p[j] - mx); sum += p[j]; }
                double* o = att + (size_t)i * inner + hi * dk;
                for (int e = 0; e < dk; e++) o[e] = 0;
                for (int j = 0; j < L; j++) { const double* vj = v + (size_t)j * inner + hi * dk; double w = p[j] / sum; for (int e = 0; e < dk; e++) o[e] += w * vj[e]; }
            }
            free(p);
        }
        if ((rc = umt5_linear(m, tmp, att, &Y->o, L, err))) break;
        for (size_t i = 0; i < Ld; i++) h[i] += tmp[i];
        umt5_rmsnorm(n, h, Y->ln2, L, d, c->eps);
        if ((rc = umt5_linear(m, a, n, &Y->wi0, L, err) || umt5_linear(m, b, n, &Y->wi1, L, err))) break;
        for (size_t i = 0; i < (size_t)L * F; i++) a[i] = umt5_gelu_tanh(a[i]) * b[i];
        if ((rc = umt5_linear(m, tmp, a, &Y->wo, L, err))) break;
        for (size_t i = 0; i < Ld; i++) h[i] += tmp[i];
    }
    if (!rc) { umt5_rmsnorm(n, h, m->final_ln, L, d, c->eps); memcpy(out, n, sizeof(double) * Ld); }
    free(n); free(q); free(k); free(v); free(att); free(a); free(b); free(tmp); free(bucket);
    return rc;
}

static inline int umt5_alloc_scratch(Umt5Model* m, char* err) {
    size_t widest = (size_t)(m->c.d_ff > m->c.d_model ? m->c.d_ff : m->c.d_model);
    if ((size_t)m->c.num_heads * m->c.d_kv > widest) widest = (size_t)m->c.num_heads * m->c.d_kv;
    m->chunk_rows = 64;
    m->stage = (unsigned char*)malloc(m->chunk_rows * widest * 8);
    m->wrows = (double*)malloc(m->chunk_rows * widest * sizeof(double));
    if (!m->stage || !m->wrows) { st_errf(err, "out of memory for the weight staging buffers"); return 1; }
    return 0;
}

static inline void umt5_close(Umt5Model* m) {
    if (!m) return;
    if (m->layer) for (int i = 0; i < m->c.num_layers; i++) { free(m->layer[i].ln1); free(m->layer[i].ln2); free(m->layer[i].rel_bias); }
    free(m->layer); free(m->final_ln); free(m->stage); free(m->wrows);
    if (m->fps) for (int i = 0; i < m->set.n_files; i++) if (m->fps[i]) fclose(m->fps[i]);
    free(m->fps);
    st_set_close(&m->set);
    memset(m, 0, sizeof(*m));
}

// finds tensor `name` with the given shape (-1: any, *got receives it) and points W at it
static inline int umt5_bind(Umt5Model* m, UmMat* W, const char* name, int64_t rows, int64_t cols, int64_t* got_rows, int64_t* got_cols, char* err) {
    const StFile* f = NULL; const StTensor* t = st_set_find(&m->set, name, &f);
    if (!t) { st_errf(err, "%s: tensor %s is missing; expected transformers' UMT5EncoderModel names (a diffusers Wan folder's text_encoder/)", m->set.files[0].path, name); return 1; }
    char sb[256];
    if (t->ndim != 2 || (rows >= 0 && t->shape[0] != rows) || (cols >= 0 && t->shape[1] != cols)) {
        int64_t want[2] = {rows, cols};
        char wb[256]; st_shape_str(wb, 2, want);
        st_errf(err, "%s: tensor %s has shape %s, expected %s (* = any) from the other tensors; the checkpoint is inconsistent or not umT5", f->path, name, st_shape_str(sb, t->ndim, t->shape), wb);
        return 1;
    }
    if (t->dtype != ST_F32 && t->dtype != ST_BF16 && t->dtype != ST_F16 && t->dtype != ST_F64) {
        st_errf(err, "%s: tensor %s is %s; supported: F32, BF16, F16, F64", f->path, name, st_dtype_name(t->dtype)); return 1;
    }
    W->fp = m->fps[f - m->set.files]; W->mem = NULL; W->begin = t->begin; W->dtype = t->dtype; W->rows = t->shape[0]; W->cols = t->shape[1]; W->name = t->name;
    if (got_rows) *got_rows = t->shape[0];
    if (got_cols) *got_cols = t->shape[1];
    return 0;
}

// a small tensor ([n] or [a, b] with a * b = n) read whole as double
static inline double* umt5_small(Umt5Model* m, const char* name, int ndim, int64_t d0, int64_t d1, char* err) {
    const StFile* f = NULL; const StTensor* t = st_set_find(&m->set, name, &f);
    if (!t) { st_errf(err, "%s: tensor %s is missing; %s", m->set.files[0].path, name,
                      strstr(name, "relative_attention_bias") ? "every umT5 block has its own relative_attention_bias (T5 has one in block 0 only: is this a T5, not umT5, checkpoint?)"
                                                              : "expected transformers' UMT5EncoderModel names"); return NULL; }
    int ok = t->ndim == ndim && t->shape[0] == d0 && (ndim == 1 || t->shape[1] == d1);
    if (!ok) {
        char sb[256], wb[256]; int64_t want[2] = {d0, d1};
        st_errf(err, "%s: tensor %s has shape %s, expected %s", f->path, name, st_shape_str(sb, t->ndim, t->shape), st_shape_str(wb, ndim, want));
        return NULL;
    }
    double* p = (double*)malloc(sizeof(double) * (size_t)t->numel);
    if (!p || st_read_double(f, t, p, err)) { free(p); if (!p) st_errf(err, "out of memory"); return NULL; }
    return p;
}

// reads config.json beside the weights for the two numbers the shapes do not tell
static inline void umt5_read_config_json(const char* weights, Umt5Config* c) {
    char path[1200]; size_t n = strlen(weights);
    DIR* d = opendir(weights);
    if (d) { closedir(d); snprintf(path, sizeof(path), "%s%sconfig.json", weights, n && weights[n - 1] == '/' ? "" : "/"); }
    else { const char* s = strrchr(weights, '/'); snprintf(path, sizeof(path), "%.*sconfig.json", s ? (int)(s - weights + 1) : 0, weights); }
    char* buf; size_t len; char e[ST_ERRLEN], msg[320];
    if (st_read_small_file(path, &buf, &len, e)) return;
    StJson root; memset(&root, 0, sizeof(root));
    if (sj_parse(buf, len, &root, msg, sizeof(msg)) == 0 && root.type == SJ_OBJ) {
        const StJson* v = sj_get(&root, "relative_attention_max_distance");
        if (v && v->type == SJ_NUM) c->max_distance = (int)v->d;
        v = sj_get(&root, "layer_norm_epsilon");
        if (v && v->type == SJ_NUM) c->eps = v->d;
    }
    sj_free(&root); free(buf);
}

// opens the weights (a .safetensors file, a *.safetensors.index.json, or a folder holding either), infers the config
static inline int umt5_open(Umt5Model* m, const char* weights, char* err) {
    memset(m, 0, sizeof(*m));
    if (st_set_open(&m->set, weights, err)) return 1;
    m->fps = (FILE**)calloc((size_t)m->set.n_files, sizeof(FILE*));
    for (int i = 0; i < m->set.n_files; i++) {
        m->fps[i] = fopen(m->set.files[i].path, "rb");
        if (!m->fps[i]) { st_errf(err, "%s: cannot open: %s", m->set.files[i].path, strerror(errno)); umt5_close(m); return 1; }
    }
    Umt5Config* c = &m->c; c->max_distance = 128; c->eps = 1e-6;
    umt5_read_config_json(weights, c);
    int64_t V = -1, D = -1, inner = -1, F = -1, nb, H;
    const char* emb = st_set_find(&m->set, "shared.weight", NULL) ? "shared.weight" : "encoder.embed_tokens.weight";
    if (umt5_bind(m, &m->shared, emb, -1, -1, &V, &D, err)) { umt5_close(m); return 1; }
    const StTensor* rb = st_set_find(&m->set, "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", NULL);
    if (!rb || rb->ndim != 2) { st_errf(err, "%s: encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight is missing or not 2-D; not a T5/umT5 encoder", weights); umt5_close(m); return 1; }
    nb = rb->shape[0]; H = rb->shape[1];
    int L = 0; char name[160];
    for (;; L++) { snprintf(name, sizeof(name), "encoder.block.%d.layer.0.SelfAttention.q.weight", L); if (!st_set_find(&m->set, name, NULL)) break; }
    if (L == 0 || H <= 0 || nb < 4) { st_errf(err, "%s: no encoder.block.0 (found %d blocks, %lld heads, %lld buckets); not a umT5 encoder", weights, L, (long long)H, (long long)nb); umt5_close(m); return 1; }
    c->vocab = (int)V; c->d_model = (int)D; c->num_heads = (int)H; c->num_buckets = (int)nb; c->num_layers = L;
    m->layer = (Umt5Layer*)calloc((size_t)L, sizeof(Umt5Layer));
    if (!m->layer) { st_errf(err, "out of memory"); umt5_close(m); return 1; }
    for (int i = 0; i < L; i++) {
        Umt5Layer* Y = &m->layer[i]; char nm[7][160];
        const char* parts[7] = {"layer.0.SelfAttention.q", "layer.0.SelfAttention.k", "layer.0.SelfAttention.v", "layer.0.SelfAttention.o",
                                "layer.1.DenseReluDense.wi_0", "layer.1.DenseReluDense.wi_1", "layer.1.DenseReluDense.wo"};
        for (int p = 0; p < 7; p++) snprintf(nm[p], 160, "encoder.block.%d.%s.weight", i, parts[p]);
        int bad = umt5_bind(m, &Y->q, nm[0], i ? inner : -1, D, &inner, NULL, err) || umt5_bind(m, &Y->k, nm[1], inner, D, NULL, NULL, err) ||
                  umt5_bind(m, &Y->v, nm[2], inner, D, NULL, NULL, err) || umt5_bind(m, &Y->o, nm[3], D, inner, NULL, NULL, err) ||
                  umt5_bind(m, &Y->wi0, nm[4], i ? F : -1, D, &F, NULL, err) || umt5_bind(m, &Y->wi1, nm[5], F, D, NULL, NULL, err) ||
                  umt5_bind(m, &Y->wo, nm[6], D, F, NULL, NULL, err);
        if (bad) { umt5_close(m); return 1; }
        if (inner % H) { st_errf(err, "%s: q has %lld rows, not a multiple of the %lld heads of relative_attention_bias", nm[0], (long long)inner, (long long)H); umt5_close(m); return 1; }
        snprintf(name, sizeof(name), "encoder.block.%d.layer.0.layer_norm.weight", i);
        if (!(Y->ln1 = umt5_small(m, name, 1, D, 0, err))) { umt5_close(m); return 1; }
        snprintf(name, sizeof(name), "encoder.block.%d.layer.1.layer_norm.weight", i);
        if (!(Y->ln2 = umt5_small(m, name, 1, D, 0, err))) { umt5_close(m); return 1; }
        snprintf(name, sizeof(name), "encoder.block.%d.layer.0.SelfAttention.relative_attention_bias.weight", i);
        if (!(Y->rel_bias = umt5_small(m, name, 2, nb, H, err))) { umt5_close(m); return 1; }
    }
    c->d_kv = (int)(inner / H); c->d_ff = (int)F;
    if (!(m->final_ln = umt5_small(m, "encoder.final_layer_norm.weight", 1, D, 0, err))) { umt5_close(m); return 1; }
    if (umt5_alloc_scratch(m, err)) { umt5_close(m); return 1; }
    return 0;
}

static inline void umt5_config_print(const Umt5Config* c, FILE* out) {
    fprintf(out, "umT5 encoder: vocab %d, d_model %d, %d heads x %d, d_ff %d, %d layers, %d buckets (max distance %d), eps %g; %zu parameters\n",
            c->vocab, c->d_model, c->num_heads, c->d_kv, c->d_ff, c->num_layers, c->num_buckets, c->max_distance, c->eps, umt5_num_params(c));
}

// the peak resident memory of this process so far, in MB (getrusage: ru_maxrss is in KB on Linux)
static inline double umt5_peak_rss_mb(void) { struct rusage ru; getrusage(RUSAGE_SELF, &ru); return ru.ru_maxrss / 1024.0; }
