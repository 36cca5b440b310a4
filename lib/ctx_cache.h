// lib/ctx_cache.h: text contexts (the umT5 embedding of a prompt, what the DiT cross-attends to) cached on disk, so a
// rerun, another model with the same text encoder, a dataset run and a VBench suite encode each prompt once.
// Plain C, header-only (tested in `make test`, group "prompts": lib/prompt_tests.h).
//
//   uint64_t fp; cc_encoder_fingerprint(&fp, "text_encoder/", "tokenizer/spiece.model", err);
//   CtxCache c; cc_init(&c, "~/.cache/tmd/contexts", fp, 512, 4096, err);
//   int hit = cc_load(&c, prompt, ctx, &rows, err);     // 1: ctx [512, 4096] filled (zero rows past `rows`); 0: miss
//   cc_store(&c, prompt, ctx, rows, err);                // after encoding a miss
//
// The key: the encoder's fingerprint (its weight files and the tokenizer model), the context length (text_len: the
// tokenizer cuts the prompt to text_len − 1 pieces + </s>) and the prompt's exact bytes. Files live under
// ROOT/<fingerprint>/<key>.safetensors: one tensor "context" [rows, width] F32 (the valid rows only: a 100-token
// prompt is 1.6 MB, not the padded 8 MB) and __metadata__ {format "tmd-context", version, encoder_fingerprint,
// text_len, prompt}. Invalidation: another encoder has another fingerprint, so it never sees these files; a file whose
// metadata disagrees with the lookup (another prompt, fingerprint or width: a hash collision or a tampered file) or
// that does not parse is a miss and is overwritten by the next store. Writes are atomic (a process-unique temporary
// name, then rename), so ranks of an mpirun that encode the same prompt at once never see half a file.
//
// The fingerprint does not read 11 GB of weights: per file, its size, its first 1 MiB (a safetensors header with
// every name, dtype and shape) and 64 evenly spaced 4 KiB samples of the rest (a fine-tune of the same shapes differs
// there); files up to 16 MiB (the tokenizer's spiece.model) are hashed whole.
#pragma once
#include <sys/stat.h>
#include <unistd.h>
#include "safetensors.h"

#define CC_FORMAT  "tmd-context"
#define CC_VERSION "1"
#define CC_FNV_START 0xcbf29ce484222325ull

static inline uint64_t cc_fnv(uint64_t h, const void* p, size_t n) {
    const unsigned char* b = (const unsigned char*)p;
    for (size_t i = 0; i < n; i++) { h ^= b[i]; h *= 0x100000001b3ull; }
    return h;
}
static inline uint64_t cc_fnv_u64(uint64_t h, uint64_t v) {
    unsigned char b[8];
    for (int k = 0; k < 8; k++) b[k] = (unsigned char)(v >> (8 * k));
    return cc_fnv(h, b, 8);
}

// one file's identity into *h (see the header)
static inline int cc_file_fingerprint(uint64_t* h, const char* path, char* err) {
    FILE* f = fopen(path, "rb");
    if (!f) { st_errf(err, "%s: cannot open for its fingerprint: %s", path, strerror(errno)); return 1; }
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0) { st_errf(err, "%s: cannot stat: %s", path, strerror(errno)); fclose(f); return 1; }
    uint64_t size = (uint64_t)sb.st_size;
    *h = cc_fnv_u64(*h, size);
    const uint64_t whole = 16u << 20, head = 1u << 20, chunk = 4096;
    unsigned char* buf = (unsigned char*)malloc(head);
    if (!buf) { st_errf(err, "out of memory"); fclose(f); return 1; }
    int ok = 1;
    if (size <= whole) {
        size_t n;
        while ((n = fread(buf, 1, head, f)) > 0) *h = cc_fnv(*h, buf, n);
        ok = !ferror(f);
    } else {
        ok = fread(buf, 1, head, f) == head;
        if (ok) *h = cc_fnv(*h, buf, head);
        for (int k = 0; k < 64 && ok; k++) {
            uint64_t off = head + (size - head - chunk) / 63 * (uint64_t)k;
            ok = st_fseek(f, off) == 0 && fread(buf, 1, chunk, f) == chunk;
            if (ok) *h = cc_fnv(*h, buf, chunk);
        }
    }
    free(buf); fclose(f);
    if (!ok) st_errf(err, "%s: read error while taking its fingerprint: %s", path, strerror(errno));
    return !ok;
}

// the text encoder's fingerprint: every file of its weights (a .safetensors, an index.json's shards, or a folder
// holding either, in the order the index lists them) and the tokenizer model
static inline int cc_encoder_fingerprint(uint64_t* fp, const char* encoder_weights, const char* tokenizer, char* err) {
    StSet s;
    if (st_set_open(&s, encoder_weights, err)) return 1;
    uint64_t h = CC_FNV_START;
    int rc = 0;
    for (int i = 0; i < s.n_files && !rc; i++) rc = cc_file_fingerprint(&h, s.files[i].path, err);
    st_set_close(&s);
    if (!rc) { h = cc_fnv(h, "tokenizer", 9); rc = cc_file_fingerprint(&h, tokenizer, err); }
    *fp = h;
    return rc;
}

typedef struct {
    char dir[1024];         // ROOT/<fingerprint>; "" : no cache (every lookup misses, stores do nothing)
    uint64_t fingerprint;
    int text_len, width;
} CtxCache;

// mkdir -p (every component of path)
static inline int cc_mkdirs(const char* path, char* err) {
    char p[1024];
    if (strlen(path) >= sizeof(p)) { st_errf(err, "path too long: %.200s...", path); return 1; }
    strcpy(p, path);
    for (char* s = p + 1; ; s++) {
        if (*s == '/' || *s == 0) {
            char c = *s; *s = 0;
            if (mkdir(p, 0755) != 0 && errno != EEXIST) {
                st_errf(err, "%s: cannot create the directory: %s; give a writable one", p, strerror(errno));
                return 1;
            }
            *s = c;
            if (!c) break;
        }
    }
    return 0;
}

// root NULL or "": no cache
static inline int cc_init(CtxCache* c, const char* root, uint64_t fingerprint, int text_len, int width, char* err) {
    memset(c, 0, sizeof(*c));
    c->fingerprint = fingerprint; c->text_len = text_len; c->width = width;
    if (!root || !root[0]) return 0;
    if (strlen(root) > 900) { st_errf(err, "context cache directory too long (%zu bytes)", strlen(root)); return 1; }
    snprintf(c->dir, sizeof(c->dir), "%.900s/%016llx", root, (unsigned long long)fingerprint);   // root <= 900 bytes: checked above
    return cc_mkdirs(c->dir, err);
}

// the key of a prompt (the file's name)
static inline uint64_t cc_key(const CtxCache* c, const char* prompt) {
    uint64_t h = cc_fnv_u64(cc_fnv_u64(CC_FNV_START, c->fingerprint), (uint64_t)c->text_len);
    return cc_fnv(h, prompt, strlen(prompt));
}
static inline void cc_path(const CtxCache* c, const char* prompt, char* out, size_t n) {
    snprintf(out, n, "%s/%016llx.safetensors", c->dir, (unsigned long long)cc_key(c, prompt));
}

// 1: ctx [text_len, width] holds the cached context (rows valid, zero rows after); 0: a miss (no file, or a file
// that is not this prompt's under this encoder: *why gets a short reason when non-NULL and the file existed)
static inline int cc_load(const CtxCache* c, const char* prompt, float* ctx, int* rows, char* why) {
    if (why) why[0] = 0;
    if (!c->dir[0]) return 0;
    char path[1200], err[ST_ERRLEN], fp[32], tl[16];
    cc_path(c, prompt, path, sizeof(path));
    if (access(path, F_OK) != 0) return 0;
    StFile f;
    if (st_open(&f, path, err)) { if (why) snprintf(why, ST_ERRLEN, "unreadable (%.300s)", err); return 0; }
    snprintf(fp, sizeof(fp), "%016llx", (unsigned long long)c->fingerprint); snprintf(tl, sizeof(tl), "%d", c->text_len);
    const char* m_fmt = st_meta(&f, "format"); const char* m_fp = st_meta(&f, "encoder_fingerprint");
    const char* m_tl = st_meta(&f, "text_len"); const char* m_p = st_meta(&f, "prompt");
    const StTensor* t = st_find(&f, "context");
    const char* bad = !m_fmt || strcmp(m_fmt, CC_FORMAT) ? "not a context file"
                    : !m_fp || strcmp(m_fp, fp) ? "another encoder's fingerprint"
                    : !m_tl || strcmp(m_tl, tl) ? "another text_len"
                    : !m_p || strcmp(m_p, prompt) ? "another prompt (a key collision)"
                    : !t || t->ndim != 2 || t->shape[1] != c->width || t->shape[0] < 1 || t->shape[0] > c->text_len ? "a context of another shape"
                    : NULL;
    int hit = 0;
    if (!bad) {
        int r = (int)t->shape[0];
        if (st_read_float(&f, t, ctx, err)) bad = "unreadable data";
        else {
            for (size_t k = 0; k < (size_t)r * c->width && !bad; k++) if (!isfinite(ctx[k])) bad = "a non-finite value";
            if (!bad) {
                memset(ctx + (size_t)r * c->width, 0, sizeof(float) * (size_t)(c->text_len - r) * c->width);
                *rows = r; hit = 1;
            }
        }
    }
    if (bad && why) snprintf(why, ST_ERRLEN, "%s", bad);
    st_close(&f);
    return hit;
}

// stores ctx's first `rows` rows [rows, width] for prompt (atomically); no cache: nothing
static inline int cc_store(const CtxCache* c, const char* prompt, const float* ctx, int rows, char* err) {
    if (!c->dir[0]) return 0;
    if (rows < 1 || rows > c->text_len) { st_errf(err, "context cache: %d rows, expected 1..%d", rows, c->text_len); return 1; }
    char path[1200], part[1300], fp[32], tl[16];
    cc_path(c, prompt, path, sizeof(path));
    snprintf(part, sizeof(part), "%s.%ld.part", path, (long)getpid());   // unique per process: ranks may race on a prompt
    snprintf(fp, sizeof(fp), "%016llx", (unsigned long long)c->fingerprint); snprintf(tl, sizeof(tl), "%d", c->text_len);
    const char* kv[8] = {"format", CC_FORMAT, "version", CC_VERSION, "encoder_fingerprint", fp, "text_len", tl};
    const char* kv2[10] = {kv[0], kv[1], kv[2], kv[3], kv[4], kv[5], kv[6], kv[7], "prompt", prompt};
    StOut o; memset(&o, 0, sizeof(o));
    o.name = "context"; o.ndim = 2; o.shape[0] = rows; o.shape[1] = c->width; o.f32 = ctx;
    if (st_write(part, &o, 1, kv2, 5, err)) return 1;
    if (rename(part, path) != 0) { st_errf(err, "%s: cannot rename %s into place: %s", path, part, strerror(errno)); remove(part); return 1; }
    return 0;
}
