// lib/sentencepiece.h: the SentencePiece unigram tokenizer, reading a `.model` file (umT5's spiece.model), and
// Wan2.1's prompt pipeline around it (text cleaning, end-of-sequence, truncation). Plain C, no dependencies.
//
//   SpmModel m; char err[SPM_ERRLEN];
//   if (spm_load(&m, "spiece.model", err)) { fprintf(stderr, "%s\n", err); ... }
//   int n = spm_encode(&m, text, strlen(text), ids, max_ids, err);      // what sentencepiece's `encode` returns
//   int n = spm_wan_ids(&m, prompt, 512, ids, &truncated, err);          // what Wan's encoder sees (cleaned, EOS)
//   spm_free(&m);
//
// Facts from the sources (read, not copied; google/sentencepiece at 2734490, Wan-Video/Wan2.1 at 9737cba):
// - src/sentencepiece_model.proto: ModelProto { 1 pieces {1 piece, 2 score (float), 3 type}, 2 trainer_spec,
//   3 normalizer_spec {1 name, 2 precompiled_charsmap, 3 add_dummy_prefix, 4 remove_extra_whitespaces,
//   5 escape_whitespaces} }, TrainerSpec {3 model_type, 24 treat_whitespace_as_suffix, 35 byte_fallback, 40 unk_id,
//   41 bos_id, 42 eos_id, 43 pad_id}. Piece types NORMAL 1, UNKNOWN 2, CONTROL 3, USER_DEFINED 4, UNUSED 5, BYTE 6.
// - src/normalizer.cc: the precompiled charsmap is <u32 trie size><darts-clone double array><NUL-separated
//   replacement strings>; each step takes the user-defined symbol that prefixes the input (kept as is), else the
//   longest rule among the first 32 trie matches (kMaxTrieResultsSize), else one UTF-8 character (a malformed byte
//   becomes U+FFFD and consumes one byte); leading, trailing and repeated spaces are dropped, ' ' becomes U+2581,
//   a U+2581 is prepended (add_dummy_prefix).
// - third_party/darts_clone/darts.h: a unit is a u32; has_leaf = bit 8, value = low 31 bits, label = bits 0-7 plus
//   bit 31, offset = (unit >> 10) << ((unit & 512) >> 6); commonPrefixSearch walks pos ^= offset, pos ^= byte.
// - src/unigram_model.cc, EncodeOptimized: Viterbi over byte positions, candidates visited by start position then
//   length, a later candidate replaces only with a strictly higher float score; user-defined pieces score
//   length * max_score - 0.1 (max_score starts at FLT_MIN), UNUSED pieces are skipped, a character no piece covers
//   is <unk> with score min_score - 10.
// - src/sentencepiece_processor.cc, PopulateSentencePieceText: with byte_fallback an <unk> becomes its UTF-8 bytes
//   as <0xXX> pieces; without it, a run of <unk> is merged into one.
// - Wan2.1 wan/modules/tokenizers.py and t5.py: basic_clean = ftfy.fix_text, html.unescape twice, strip;
//   whitespace_clean = regex \s+ -> ' ', strip; then the tokenizer appends </s> and truncates to text_len = 512
//   (511 pieces + </s>). See spm_wan_clean for what of ftfy is not reproduced.
#pragma once
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <stdarg.h>
#include <errno.h>
#include <float.h>
#include "html_entities.h"   // named character references for html_unescape (generated)

#define SPM_ERRLEN 1024
#define SPM_MAX_FILE (1u << 30)           // real models are < 10 MB (umT5's spiece.model: 4.5 MB)
enum { SPM_NORMAL = 1, SPM_UNKNOWN = 2, SPM_CONTROL = 3, SPM_USER_DEFINED = 4, SPM_UNUSED = 5, SPM_BYTE = 6 };

typedef struct {
    int n_pieces;
    const char** piece; int* piece_len;   // [n_pieces], pointing into blob (not NUL-terminated)
    float* score; int* type;              // [n_pieces]
    // normaliser spec
    char name[64];
    int add_dummy_prefix, remove_extra_whitespaces, escape_whitespaces;
    const uint32_t* trie; size_t trie_units;   // darts-clone double array of the charsmap (NULL: identity)
    char* replacements; size_t replacements_len;   // NUL-separated strings the trie's values point into (+1 NUL)
    // trainer spec
    int model_type, byte_fallback, treat_whitespace_as_suffix, unk_id, bos_id, eos_id, pad_id;
    // derived
    int unk;                               // the UNKNOWN piece
    int byte_piece[256];                   // <0xXX> pieces when byte_fallback
    float min_score, max_score;            // over NORMAL pieces, as unigram_model.cc computes them
    int max_piece_len;                     // in bytes
    int* hash; size_t hash_size;           // piece -> id for NORMAL, USER_DEFINED, UNUSED (open addressing)
    int* user; int n_user;                 // USER_DEFINED pieces, for the normaliser's prefix matcher
    unsigned char* blob; size_t blob_len;  // the file
    uint32_t* trie_copy;                   // aligned copy of the trie
} SpmModel;

__attribute__((format(printf, 2, 3))) static inline void spm_errf(char* err, const char* fmt, ...) {
    if (!err) return;
    va_list ap; va_start(ap, fmt); vsnprintf(err, SPM_ERRLEN, fmt, ap); va_end(ap);
}

static inline void spm_free(SpmModel* m) {
    if (!m) return;
    free(m->piece); free(m->piece_len); free(m->score); free(m->type); free(m->hash); free(m->user);
    free(m->blob); free(m->trie_copy); free(m->replacements);
    memset(m, 0, sizeof(*m));
}

// ---------------------------------------------------------------------------------------------------------------
// protobuf wire format: varint (0), fixed64 (1), length-delimited (2), fixed32 (5); groups (3, 4) are not used here

typedef struct { const unsigned char *p, *end; } SpmPb;

static inline int spm_pb_varint(SpmPb* b, uint64_t* v) {
    *v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (b->p >= b->end) return 1;
        unsigned char c = *b->p++;
        *v |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) return 0;
    }
    return 1;
}

// next field: *field, *wire; for wire 2 the payload is [*data, *data + *len); for 0/1/5 the value is in *v
static inline int spm_pb_next(SpmPb* b, int* field, int* wire, uint64_t* v, const unsigned char** data, size_t* len) {
    uint64_t key;
    if (spm_pb_varint(b, &key)) return 1;
    *field = (int)(key >> 3); *wire = (int)(key & 7);
    if (*field == 0) return 1;
    switch (*wire) {
    case 0: return spm_pb_varint(b, v);
    case 1: if (b->end - b->p < 8) return 1; *v = 0; for (int k = 7; k >= 0; k--) *v = *v << 8 | b->p[k]; b->p += 8; return 0;
    case 5: if (b->end - b->p < 4) return 1; *v = (uint64_t)b->p[0] | (uint64_t)b->p[1] << 8 | (uint64_t)b->p[2] << 16 | (uint64_t)b->p[3] << 24; b->p += 4; return 0;
    case 2: if (spm_pb_varint(b, v) || *v > (uint64_t)(b->end - b->p)) return 1; *data = b->p; *len = (size_t)*v; b->p += *len; return 0;
    default: return 1;
    }
}

static inline uint64_t spm_hash_bytes(const char* s, size_t n) {   // FNV-1a
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) { h ^= (unsigned char)s[i]; h *= 1099511628211ull; }
    return h;
}

// the id of the NORMAL / USER_DEFINED / UNUSED piece spelled s[0..n), or -1
static inline int spm_lookup(const SpmModel* m, const char* s, size_t n) {
    for (size_t h = spm_hash_bytes(s, n) & (m->hash_size - 1);; h = (h + 1) & (m->hash_size - 1)) {
        int id = m->hash[h];
        if (id < 0) return -1;
        if ((size_t)m->piece_len[id] == n && memcmp(m->piece[id], s, n) == 0) return id;
    }
}

static inline int spm_is_trie_piece(int type) { return type == SPM_NORMAL || type == SPM_USER_DEFINED || type == SPM_UNUSED; }

// loads and checks a .model file; on failure err says what was expected and found, and the model is left empty
static inline int spm_load(SpmModel* m, const char* path, char* err) {
    memset(m, 0, sizeof(*m));
    m->add_dummy_prefix = m->remove_extra_whitespaces = m->escape_whitespaces = 1;   // proto defaults
    m->model_type = 1; m->unk_id = 0; m->bos_id = 1; m->eos_id = 2; m->pad_id = -1; m->unk = -1;
    const char* fix = "pass the tokenizer's spiece.model (a SentencePiece unigram model, e.g. tokenizer/spiece.model of a diffusers Wan folder)";
    FILE* fp = fopen(path, "rb");
    if (!fp) { spm_errf(err, "%s: cannot open the tokenizer model: %s; %s", path, strerror(errno), fix); return 1; }
    long sz = -1;
    if (fseek(fp, 0, SEEK_END) == 0) sz = ftell(fp);
    if (sz <= 0 || (unsigned long)sz > SPM_MAX_FILE || fseek(fp, 0, SEEK_SET) != 0) {
        spm_errf(err, "%s: file is %ld bytes, expected a SentencePiece model of 1 byte to 1 GB; %s", path, sz, fix); fclose(fp); return 1;
    }
    m->blob = (unsigned char*)malloc((size_t)sz); m->blob_len = (size_t)sz;
    if (!m->blob || fread(m->blob, 1, (size_t)sz, fp) != (size_t)sz) {
        spm_errf(err, "%s: could not read %ld bytes: %s", path, sz, m->blob ? strerror(errno) : "out of memory"); fclose(fp); spm_free(m); return 1;
    }
    fclose(fp);
    // pass 1: count pieces, read the specs
    SpmPb b = {m->blob, m->blob + m->blob_len};
    int field, wire; uint64_t v; const unsigned char* d = NULL; size_t len = 0;
    const unsigned char* charsmap = NULL; size_t charsmap_len = 0;
    int n = 0;
    while (b.p < b.end) {
        if (spm_pb_next(&b, &field, &wire, &v, &d, &len)) {
            spm_errf(err, "%s: not a SentencePiece model: the protobuf is malformed at byte %ld of %zu; %s", path, (long)(b.p - m->blob), m->blob_len, fix);
            spm_free(m); return 1;
        }
        if (field == 1 && wire == 2) n++;
        else if ((field == 2 || field == 3) && wire == 2) {
            SpmPb s = {d, d + len}; int f2, w2; uint64_t v2; const unsigned char* d2 = NULL; size_t l2 = 0;
            while (s.p < s.end) {
                if (spm_pb_next(&s, &f2, &w2, &v2, &d2, &l2)) {
                    spm_errf(err, "%s: not a SentencePiece model: the %s is malformed; %s", path, field == 2 ? "trainer_spec" : "normalizer_spec", fix);
                    spm_free(m); return 1;
                }
                int iv = (int)(int64_t)v2;   // int32 fields: negative values are sign-extended 64-bit varints
                if (field == 2 && w2 == 0) {
                    if (f2 == 3) m->model_type = iv; else if (f2 == 24) m->treat_whitespace_as_suffix = v2 != 0;
                    else if (f2 == 35) m->byte_fallback = v2 != 0; else if (f2 == 40) m->unk_id = iv;
                    else if (f2 == 41) m->bos_id = iv; else if (f2 == 42) m->eos_id = iv; else if (f2 == 43) m->pad_id = iv;
                } else if (field == 3) {
                    if (f2 == 1 && w2 == 2) snprintf(m->name, sizeof(m->name), "%.*s", (int)(l2 < 63 ? l2 : 63), (const char*)d2);
                    else if (f2 == 2 && w2 == 2) { charsmap = d2; charsmap_len = l2; }
                    else if (f2 == 3 && w2 == 0) m->add_dummy_prefix = v2 != 0;
                    else if (f2 == 4 && w2 == 0) m->remove_extra_whitespaces = v2 != 0;
                    else if (f2 == 5 && w2 == 0) m->escape_whitespaces = v2 != 0;
                }
            }
        }
    }
    if (n == 0) { spm_errf(err, "%s: not a SentencePiece model: no pieces found (%zu bytes); %s", path, m->blob_len, fix); spm_free(m); return 1; }
    if (m->model_type != 1) {
        spm_errf(err, "%s: model_type is %d (%s), this tokenizer reads unigram models (1) only, as umT5's is", path, m->model_type,
                 m->model_type == 2 ? "BPE" : m->model_type == 3 ? "WORD" : m->model_type == 4 ? "CHAR" : "unknown");
        spm_free(m); return 1;
    }
    m->n_pieces = n;
    m->piece = (const char**)calloc((size_t)n, sizeof(char*)); m->piece_len = (int*)calloc((size_t)n, sizeof(int));
    m->score = (float*)calloc((size_t)n, sizeof(float)); m->type = (int*)calloc((size_t)n, sizeof(int));
    m->hash_size = 16; while (m->hash_size < 2 * (size_t)n) m->hash_size *= 2;
    m->hash = (int*)malloc(m->hash_size * sizeof(int)); m->user = (int*)calloc((size_t)n, sizeof(int));
    if (!m->piece || !m->piece_len || !m->score || !m->type || !m->hash || !m->user) { spm_errf(err, "%s: out of memory for %d pieces", path, n); spm_free(m); return 1; }
    for (size_t h = 0; h < m->hash_size; h++) m->hash[h] = -1;
    for (int k = 0; k < 256; k++) m->byte_piece[k] = -1;
    // pass 2: the pieces
    b.p = m->blob; int i = 0;
    m->min_score = FLT_MAX; m->max_score = FLT_MIN;   // unigram_model.cc's initial values (FLT_MIN > 0, on purpose)
    while (b.p < b.end) {
        spm_pb_next(&b, &field, &wire, &v, &d, &len);
        if (!(field == 1 && wire == 2)) continue;
        SpmPb s = {d, d + len}; int f2, w2; uint64_t v2; const unsigned char* d2 = NULL; size_t l2 = 0;
        m->type[i] = SPM_NORMAL;
        while (s.p < s.end) {
            if (spm_pb_next(&s, &f2, &w2, &v2, &d2, &l2)) { spm_errf(err, "%s: piece %d is malformed; %s", path, i, fix); spm_free(m); return 1; }
            if (f2 == 1 && w2 == 2) { m->piece[i] = (const char*)d2; m->piece_len[i] = (int)l2; }
            else if (f2 == 2 && w2 == 5) { uint32_t u = (uint32_t)v2; memcpy(&m->score[i], &u, 4); }
            else if (f2 == 3 && w2 == 0) m->type[i] = (int)v2;
        }
        int t = m->type[i];
        if (m->piece_len[i] == 0) { spm_errf(err, "%s: piece %d is empty (a piece must not be empty); the model is corrupt; %s", path, i, fix); spm_free(m); return 1; }
        if (t < 1 || t > 6) { spm_errf(err, "%s: piece %d has type %d, expected 1..6 (NORMAL..BYTE); the model is corrupt", path, i, t); spm_free(m); return 1; }
        if (t == SPM_NORMAL) { if (m->score[i] < m->min_score) m->min_score = m->score[i]; if (m->score[i] > m->max_score) m->max_score = m->score[i]; }
        if (t == SPM_UNKNOWN) {
            if (m->unk >= 0) { spm_errf(err, "%s: pieces %d and %d are both UNKNOWN; a model has one <unk>; the model is corrupt", path, m->unk, i); spm_free(m); return 1; }
            m->unk = i;
        }
        if (t == SPM_USER_DEFINED) m->user[m->n_user++] = i;
        if (t == SPM_BYTE) {
            const char* q = m->piece[i]; int hx = -1;   // exactly "<0xXX>" with upper-case hex (ByteToPiece's format)
            if (m->piece_len[i] == 6 && !memcmp(q, "<0x", 3) && q[5] == '>' && strchr("0123456789ABCDEF", q[3]) && strchr("0123456789ABCDEF", q[4]) && q[3] && q[4])
                hx = (int)((strchr("0123456789ABCDEF", q[3]) - "0123456789ABCDEF") * 16 + (strchr("0123456789ABCDEF", q[4]) - "0123456789ABCDEF"));
            if (!m->byte_fallback) { spm_errf(err, "%s: byte piece %.*s (id %d) found although byte_fallback is off; the model is corrupt", path, m->piece_len[i] < 16 ? m->piece_len[i] : 16, q, i); spm_free(m); return 1; }
            if (hx < 0) { spm_errf(err, "%s: byte piece '%.*s' (id %d) is not of the form <0xXX>; the model is corrupt", path, m->piece_len[i] < 16 ? m->piece_len[i] : 16, q, i); spm_free(m); return 1; }
            m->byte_piece[hx] = i;
        }
        if (spm_is_trie_piece(t)) {   // a piece spelled twice is an error, as in model_interface.cc
            if (spm_lookup(m, m->piece[i], (size_t)m->piece_len[i]) >= 0) {
                spm_errf(err, "%s: piece '%.*s' (id %d) is defined twice; the model is corrupt", path, m->piece_len[i] < 40 ? m->piece_len[i] : 40, m->piece[i], i);
                spm_free(m); return 1;
            }
            size_t h = spm_hash_bytes(m->piece[i], (size_t)m->piece_len[i]) & (m->hash_size - 1);
            while (m->hash[h] >= 0) h = (h + 1) & (m->hash_size - 1);
            m->hash[h] = i;
            if (m->piece_len[i] > m->max_piece_len) m->max_piece_len = m->piece_len[i];
        }
        i++;
    }
    if (m->unk < 0) { spm_errf(err, "%s: no UNKNOWN piece (<unk>) among %d pieces; the model is corrupt; %s", path, n, fix); spm_free(m); return 1; }
    if (m->byte_fallback) for (int k = 0; k < 256; k++) if (m->byte_piece[k] < 0) {
        spm_errf(err, "%s: byte_fallback is on but the byte piece <0x%02X> is missing (256 are required); the model is corrupt", path, k); spm_free(m); return 1;
    }
    if (m->eos_id >= n) { spm_errf(err, "%s: eos_id %d is not a piece (%d pieces); the model is corrupt", path, m->eos_id, n); spm_free(m); return 1; }
    // the precompiled charsmap: <u32 trie bytes><trie><replacement strings>
    if (charsmap && charsmap_len) {
        uint32_t tb = 0;
        if (charsmap_len > 4) tb = (uint32_t)charsmap[0] | (uint32_t)charsmap[1] << 8 | (uint32_t)charsmap[2] << 16 | (uint32_t)charsmap[3] << 24;
        if (charsmap_len <= 4 || tb == 0 || tb % 4 || (size_t)tb > charsmap_len - 4) {   // normalizer.cc: trie size < blob size
            spm_errf(err, "%s: the normaliser's precompiled_charsmap is broken (%zu bytes, trie size %u); the model is corrupt; %s", path, charsmap_len, tb, fix);
            spm_free(m); return 1;
        }
        m->trie_units = tb / 4;
        m->trie_copy = (uint32_t*)malloc(tb);
        m->replacements_len = charsmap_len - 4 - tb;
        m->replacements = (char*)malloc(m->replacements_len + 1);
        if (!m->trie_copy || !m->replacements) { spm_errf(err, "%s: out of memory", path); spm_free(m); return 1; }
        for (size_t k = 0; k < m->trie_units; k++) {   // little-endian on disk
            const unsigned char* q = charsmap + 4 + 4 * k;
            m->trie_copy[k] = (uint32_t)q[0] | (uint32_t)q[1] << 8 | (uint32_t)q[2] << 16 | (uint32_t)q[3] << 24;
        }
        memcpy(m->replacements, charsmap + 4 + tb, m->replacements_len);
        m->replacements[m->replacements_len] = 0;
        m->trie = m->trie_copy;
    }
    return 0;
}

// ---------------------------------------------------------------------------------------------------------------
// normaliser

// bytes of one UTF-8 character as sentencepiece's DecodeUTF8 accepts it (shortest form, no surrogates, <= U+10FFFF);
// 0 when malformed. A well-formed U+FFFD counts as valid (IsValidDecodeUTF8).
static inline int spm_utf8_len(const unsigned char* s, size_t n, uint32_t* cp_out) {
    uint32_t cp; int k;
    if (s[0] < 0x80) { if (cp_out) *cp_out = s[0]; return 1; }
    if ((s[0] & 0xE0) == 0xC0) { k = 2; cp = s[0] & 0x1F; }
    else if ((s[0] & 0xF0) == 0xE0) { k = 3; cp = s[0] & 0x0F; }
    else if ((s[0] & 0xF8) == 0xF0) { k = 4; cp = s[0] & 0x07; }
    else return 0;
    if (n < (size_t)k) return 0;
    for (int j = 1; j < k; j++) { if ((s[j] & 0xC0) != 0x80) return 0; cp = cp << 6 | (s[j] & 0x3F); }
    uint32_t lo = k == 2 ? 0x80 : k == 3 ? 0x800 : 0x10000;
    if (cp < lo || (cp >= 0xD800 && cp < 0xE000) || cp > 0x10FFFF) return 0;
    if (cp_out) *cp_out = cp;
    return k;
}

// sentencepiece's OneCharLen: the length the lead byte announces, whatever follows
static inline int spm_one_char_len(unsigned char c) { return "\1\1\1\1\1\1\1\1\1\1\1\1\2\2\3\4"[c >> 4]; }

// one normalisation step at s[0..n): *out/*out_len is what it becomes, the return value how many bytes it consumed
static inline size_t spm_normalize_prefix(const SpmModel* m, const char* s, size_t n, const char** out, size_t* out_len) {
    const unsigned char* u = (const unsigned char*)s;
    size_t best_user = 0;   // user-defined symbols pass through unnormalised (the PrefixMatcher, longest match)
    for (int k = 0; k < m->n_user; k++) {
        int id = m->user[k]; size_t L = (size_t)m->piece_len[id];
        if (L <= n && L > best_user && memcmp(s, m->piece[id], L) == 0) best_user = L;
    }
    if (best_user) { *out = s; *out_len = best_user; return best_user; }
    size_t longest = 0; uint32_t value = 0;
    if (m->trie) {   // darts-clone commonPrefixSearch, keeping the first 32 results as normalizer.cc does
        const uint32_t* a = m->trie; size_t units = m->trie_units, pos = 0; int found = 0;
        uint32_t unit = a[0];
        pos ^= (size_t)((unit >> 10) << ((unit & (1u << 9)) >> 6));
        for (size_t i = 0; i < n; i++) {
            pos ^= u[i];
            if (pos >= units) break;
            unit = a[pos];
            if ((unit & ((1u << 31) | 0xFF)) != u[i]) break;
            pos ^= (size_t)((unit >> 10) << ((unit & (1u << 9)) >> 6));
            if ((unit >> 8) & 1) {
                if (pos >= units) break;
                if (found < 32 && (longest == 0 || i + 1 > longest)) { longest = i + 1; value = a[pos] & ((1u << 31) - 1); }
                found++;
            }
        }
    }
    if (longest && value < m->replacements_len) {
        *out = m->replacements + value; *out_len = strlen(*out);   // NUL-terminated (a NUL was appended at load)
        return longest;
    }
    int k = spm_utf8_len(u, n, NULL);
    if (k == 0) { *out = "\xEF\xBF\xBD"; *out_len = 3; return 1; }   // malformed: U+FFFD for one byte
    *out = s; *out_len = (size_t)k;
    return (size_t)k;
}

typedef struct { char* p; size_t n, cap; int oom; } SpmBuf;
static inline void spm_put(SpmBuf* b, const char* s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t c = b->cap ? b->cap : 64; while (c < b->n + n + 1) c *= 2;
        char* q = (char*)realloc(b->p, c); if (!q) { b->oom = 1; return; }
        b->p = q; b->cap = c;
    }
    memcpy(b->p + b->n, s, n); b->n += n; b->p[b->n] = 0;
}

// the normalised text (U+2581 for spaces, dummy prefix, extra spaces removed); malloc'd, NUL-terminated
static inline char* spm_normalize(const SpmModel* m, const char* s, size_t n, size_t* out_n) {
    static const char WS[] = "\xe2\x96\x81";
    SpmBuf b = {0};
    spm_put(&b, "", 0);
    if (m->remove_extra_whitespaces) {   // leading spaces: steps whose whole output is " "
        while (n > 0) {
            const char* o; size_t ol; size_t c = spm_normalize_prefix(m, s, n, &o, &ol);
            if (!(ol == 1 && o[0] == ' ')) break;
            s += c; n -= c;
        }
    }
    if (n == 0) { *out_n = 0; return b.p; }
    const char* sp = m->escape_whitespaces ? WS : " "; size_t spn = m->escape_whitespaces ? 3 : 1;
    if (!m->treat_whitespace_as_suffix && m->add_dummy_prefix) spm_put(&b, sp, spn);
    int prev_space = m->remove_extra_whitespaces;
    while (n > 0) {
        const char* o; size_t ol; size_t c = spm_normalize_prefix(m, s, n, &o, &ol);
        while (prev_space && ol > 0 && o[0] == ' ') { o++; ol--; }
        if (ol > 0) {
            for (size_t k = 0; k < ol; k++) { if (o[k] == ' ' && m->escape_whitespaces) spm_put(&b, WS, 3); else spm_put(&b, o + k, 1); }
            prev_space = o[ol - 1] == ' ';
        }
        s += c; n -= c;
        if (!m->remove_extra_whitespaces) prev_space = 0;
    }
    if (m->remove_extra_whitespaces) while (b.n >= spn && memcmp(b.p + b.n - spn, sp, spn) == 0) { b.n -= spn; b.p[b.n] = 0; }
    if (m->treat_whitespace_as_suffix && m->add_dummy_prefix) spm_put(&b, sp, spn);
    if (b.oom) { free(b.p); *out_n = 0; return NULL; }
    *out_n = b.n;
    return b.p;
}

// ---------------------------------------------------------------------------------------------------------------
// unigram Viterbi (EncodeOptimized), then byte fallback / <unk> merging. Returns the number of ids (which may exceed
// max_ids: then only the first max_ids are written), or -1 with err filled.

typedef struct { int id; float score; int start; } SpmNode;

static inline int spm_encode(const SpmModel* m, const char* text, size_t text_n, int* ids, int max_ids, char* err) {
    size_t n = 0;
    char* s = spm_normalize(m, text, text_n, &n);
    if (!s) { spm_errf(err, "out of memory normalising %zu bytes", text_n); return -1; }
    if (n > (size_t)INT32_MAX / 4) { spm_errf(err, "text of %zu bytes is too long to tokenize (at most %d)", n, INT32_MAX / 4); free(s); return -1; }
    SpmNode* best = (SpmNode*)malloc((n + 1) * sizeof(SpmNode));
    int* path = (int*)malloc((n + 1) * sizeof(int));
    if (!best || !path) { spm_errf(err, "out of memory tokenizing %zu bytes", n); free(s); free(best); free(path); return -1; }
    for (size_t k = 0; k <= n; k++) { best[k].id = -1; best[k].score = 0; best[k].start = -1; }
    const float unk_score = m->min_score - 10.0f;   // kUnkPenalty
    for (size_t start = 0; start < n;) {
        const float here = best[start].score;
        int mblen = spm_one_char_len((unsigned char)s[start]);
        if ((size_t)mblen > n - start) mblen = (int)(n - start);
        int single = 0;
        size_t maxl = n - start < (size_t)m->max_piece_len ? n - start : (size_t)m->max_piece_len;
        for (size_t L = 1; L <= maxl; L++) {
            int id = spm_lookup(m, s + start, L);
            if (id < 0 || m->type[id] == SPM_UNUSED) continue;
            SpmNode* t = &best[start + L];
            if (m->type[id] == SPM_USER_DEFINED) {   // a double expression in unigram_model.cc, stored as float
                double cand = ((double)((float)L * m->max_score) - 0.1) + (double)here;
                if (t->start == -1 || cand > (double)t->score) { t->score = (float)cand; t->start = (int)start; t->id = id; }
            } else {
                float cand = m->score[id] + here;
                if (t->start == -1 || cand > t->score) { t->score = cand; t->start = (int)start; t->id = id; }
            }
            if (L == (size_t)mblen) single = 1;
        }
        if (!single) {
            SpmNode* t = &best[start + (size_t)mblen];
            float cand = unk_score + here;
            if (t->start == -1 || cand > t->score) { t->score = cand; t->start = (int)start; t->id = m->unk; }
        }
        start += (size_t)mblen;
    }
    int np = 0;   // backtrack: path holds end positions in reverse
    for (size_t e = n; e > 0; e = (size_t)best[e].start) path[np++] = (int)e;
    int count = 0, prev_unk = 0;
    for (int k = np - 1; k >= 0; k--) {
        size_t e = (size_t)path[k]; const SpmNode* nd = &best[e];
        int is_unk = m->type[nd->id] == SPM_UNKNOWN;
        if (is_unk && m->byte_fallback) {
            for (size_t j = (size_t)nd->start; j < e; j++) { if (count < max_ids) ids[count] = m->byte_piece[(unsigned char)s[j]]; count++; }
        } else if (!(is_unk && prev_unk)) {
            if (count < max_ids) ids[count] = nd->id;
            count++;
        }
        prev_unk = is_unk;
    }
    free(s); free(best); free(path);
    return count;
}

// ---------------------------------------------------------------------------------------------------------------
// Wan2.1's text cleaning (wan/modules/tokenizers.py): basic_clean then whitespace_clean, without ftfy.
//
// Not reproduced: ftfy.fix_text (ftfy 6.x defaults). On ordinary prompts it changes nothing (it changed none of
// VBench's 946 prompts); where it would act, the ids differ from Wan's:
// - mojibake repair (e.g. "cafÃ©" -> "café") and "\r\n" -> "\n", U+2028/U+2029 -> "\n", U+0085 -> "…";
// - curly quotes to straight ones (“ ” ‘ ’ -> " ');
// - removal of control characters (C0 except \t \n \f \r, DEL, C1, U+FEFF) and of terminal escape sequences;
// - ligatures (ﬁ -> fi) and full-width characters to their plain forms, and NFC composition. umT5's normaliser
//   (NFKC-style) does the same for most of these, so the ids usually agree anyway;
// - ftfy also unescapes HTML entities, but only in text without '<' and '>' (html.unescape below does it always).

// Python's str.isspace on one code point (used by str.strip); `regex`'s \s is the same minus U+001C..U+001F
static inline int spm_py_isspace(uint32_t c) {
    return (c >= 9 && c <= 13) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}
static inline int spm_regex_space(uint32_t c) { return spm_py_isspace(c) && !(c >= 0x1C && c <= 0x1F); }

static inline void spm_put_cp(SpmBuf* b, uint32_t c) {
    char u[4]; size_t k;
    if (c < 0x80) { u[0] = (char)c; k = 1; }
    else if (c < 0x800) { u[0] = (char)(0xC0 | c >> 6); u[1] = (char)(0x80 | (c & 63)); k = 2; }
    else if (c < 0x10000) { u[0] = (char)(0xE0 | c >> 12); u[1] = (char)(0x80 | ((c >> 6) & 63)); u[2] = (char)(0x80 | (c & 63)); k = 3; }
    else { u[0] = (char)(0xF0 | c >> 18); u[1] = (char)(0x80 | ((c >> 12) & 63)); u[2] = (char)(0x80 | ((c >> 6) & 63)); u[3] = (char)(0x80 | (c & 63)); k = 4; }
    spm_put(b, u, k);
}

static inline int spm_entity_cmp(const void* key, const void* elem) { return strcmp((const char*)key, *(const char* const*)elem); }

// Python's html.unescape (Lib/html/__init__.py): &#N; and &#xN; (';' optional) with the WHATWG fix-ups, and named
// references, the longest known name that prefixes the text when the whole is not a name. The named table is
// lib/html_entities.h: HTML 4's names and html5's legacy ones; HTML5-only names (e.g. &bigstar;) stay as they are.
static inline char* spm_html_unescape(const char* s, size_t n, size_t* out_n) {
    // Windows-1252 for &#128; .. &#159; (html.unescape's _invalid_charrefs; 0x81 0x8D 0x8F 0x90 0x9D map to themselves)
    static const uint16_t CP1252[32] = {0x20AC, 0x81, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160,
        0x2039, 0x0152, 0x8D, 0x017D, 0x8F, 0x90, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014, 0x02DC, 0x2122,
        0x0161, 0x203A, 0x0153, 0x9D, 0x017E, 0x0178};
    SpmBuf b = {0}; spm_put(&b, "", 0);
    size_t i = 0;
    while (i < n) {
        if (s[i] != '&') { size_t j = i; while (j < n && s[j] != '&') j++; spm_put(&b, s + i, j - i); i = j; continue; }
        size_t j = i + 1;
        if (j < n && s[j] == '#') {
            int hex = j + 1 < n && (s[j + 1] == 'x' || s[j + 1] == 'X');
            size_t d0 = j + 1 + (size_t)hex, d = d0; uint64_t num = 0;
            while (d < n && (hex ? ((s[d] >= '0' && s[d] <= '9') || ((s[d] | 32) >= 'a' && (s[d] | 32) <= 'f')) : (s[d] >= '0' && s[d] <= '9'))) {
                int dg = s[d] <= '9' ? s[d] - '0' : (s[d] | 32) - 'a' + 10;
                num = num > 0x7FFFFFFFull ? num : num * (hex ? 16 : 10) + (uint64_t)dg;   // saturates above U+10FFFF
                d++;
            }
            if (d == d0) { spm_put(&b, "&", 1); i++; continue; }   // "&#" without digits is not a reference
            if (d < n && s[d] == ';') d++;
            if (num == 0) spm_put_cp(&b, 0xFFFD);
            else if (num == 0x0D) spm_put_cp(&b, 0x0D);
            else if (num >= 0x80 && num <= 0x9F) spm_put_cp(&b, CP1252[num - 0x80]);
            else if ((num >= 0xD800 && num <= 0xDFFF) || num > 0x10FFFF) spm_put_cp(&b, 0xFFFD);
            else if ((num >= 1 && num <= 8) || (num >= 0x0E && num <= 0x1F) || (num >= 0x7F && num <= 0x9F) || num == 0x0B ||
                     (num >= 0xFDD0 && num <= 0xFDEF) || (num & 0xFFFE) == 0xFFFE) { /* invalid code points: dropped */ }
            else spm_put_cp(&b, (uint32_t)num);
            i = d; continue;
        }
        // a name: up to 32 characters other than \t \n \f space < & # ;, then an optional ';'
        size_t k = j;
        while (k < n && k - j < 32 && !strchr("\t\n\f <&#;", s[k])) k++;
        if (k == j) { spm_put(&b, "&", 1); i++; continue; }
        if (k < n && s[k] == ';') k++;
        char name[40]; size_t L = k - j; memcpy(name, s + j, L); name[L] = 0;
        int done = 0;
        for (size_t x = L; x >= 2 && !done; x--) {   // the whole, then ever shorter prefixes (length >= 2)
            char c = name[x]; name[x] = 0;
            const char* const* hit = (const char* const*)bsearch(name, HTML_ENTITY_NAMES, HTML_NUM_ENTITIES, sizeof(char*), spm_entity_cmp);
            name[x] = c;
            if (hit) { const char* v = HTML_ENTITY_VALUES[hit - HTML_ENTITY_NAMES]; spm_put(&b, v, strlen(v)); spm_put(&b, s + j + x, L - x); done = 1; }
        }
        if (!done) { spm_put(&b, "&", 1); spm_put(&b, s + j, L); }
        i = k;
    }
    if (b.oom) { free(b.p); return NULL; }
    *out_n = b.n;
    return b.p;
}

// strips str.isspace characters from both ends of s[0..n) in place; returns the new start and *n
static inline const char* spm_py_strip(const char* s, size_t* n) {
    const unsigned char* u = (const unsigned char*)s; size_t a = 0, e = *n; uint32_t c;
    while (a < e) { int k = spm_utf8_len(u + a, e - a, &c); if (!k || !spm_py_isspace(c)) break; a += (size_t)k; }
    while (e > a) {
        size_t q = e - 1; while (q > a && (u[q] & 0xC0) == 0x80) q--;
        int k = spm_utf8_len(u + q, e - q, &c);
        if (!k || (size_t)k != e - q || !spm_py_isspace(c)) break;
        e = q;
    }
    *n = e - a;
    return s + a;
}

// Wan's basic_clean + whitespace_clean (less ftfy, see above); malloc'd, NUL-terminated
static inline char* spm_wan_clean(const char* text, size_t n, size_t* out_n) {
    size_t n1, n2;
    char* a = spm_html_unescape(text, n, &n1);
    char* b = a ? spm_html_unescape(a, n1, &n2) : NULL;
    free(a);
    if (!b) return NULL;
    size_t m = n2; const char* s = spm_py_strip(b, &m);
    SpmBuf o = {0}; spm_put(&o, "", 0);
    const unsigned char* u = (const unsigned char*)s;
    for (size_t i = 0; i < m;) {
        uint32_t c = 0; int k = spm_utf8_len(u + i, m - i, &c);
        if (k && spm_regex_space(c)) {
            while (i < m && (k = spm_utf8_len(u + i, m - i, &c)) && spm_regex_space(c)) i += (size_t)k;
            spm_put(&o, " ", 1);
        } else { spm_put(&o, s + i, k ? (size_t)k : 1); i += k ? (size_t)k : 1; }
    }
    free(b);
    if (o.oom) { free(o.p); return NULL; }
    size_t r = o.n; const char* t = spm_py_strip(o.p, &r);
    memmove(o.p, t, r); o.p[r] = 0;
    *out_n = r;
    return o.p;
}

// the ids Wan's umT5 encoder sees for a prompt: cleaned, encoded, cut to max_len - 1 pieces, </s> appended.
// ids has room for max_len; *truncated gets how many pieces were cut (0 if none). Returns the count, or -1.
static inline int spm_wan_ids(const SpmModel* m, const char* prompt, int max_len, int* ids, int* truncated, char* err) {
    if (max_len < 1) { spm_errf(err, "max_len is %d, need at least 1 (room for </s>)", max_len); return -1; }
    size_t cn; char* c = spm_wan_clean(prompt, strlen(prompt), &cn);
    if (!c) { spm_errf(err, "out of memory cleaning a prompt of %zu bytes", strlen(prompt)); return -1; }
    int total = spm_encode(m, c, cn, ids, max_len - 1, err);
    free(c);
    if (total < 0) return -1;
    int kept = total < max_len - 1 ? total : max_len - 1;
    *truncated = total - kept;
    ids[kept] = m->eos_id;
    return kept + 1;
}
