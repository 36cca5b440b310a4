// world/text.h: the built-in world's text encoder, a stand-in for Wan's umT5 with the same interface:
// caption -> context [text_len, text_dim] floats, one row per word, rows past the caption's length set to zero
// (Wan pads umT5's output to text_len = 512 with zeros the same way).
//
// Row i = rms_normalise( e(word_i) + 0.5 e("#phrase k") + 0.25 e("#pos i") ), where e(key) is a fixed Gaussian
// vector drawn from a hash of the key and the encoder's seed, and k counts the "and"s before word i. A real encoder
// is contextual; the phrase and position terms are the minimum of context the DiT needs, because Wan's
// cross-attention has no positions of its own and must still tell which object "red" belongs to in
// "small red circle ... and big blue square ...". Rows have unit RMS (entries ~ N(0, 1)).
//
// Behaviour on bad input (documented, never a crash):
//   - NULL or "" (no words): all zeros. This is the unconditional input for classifier-free guidance;
//     the built-in world defines no negative prompt.
//   - a word outside the vocabulary (when the encoder has one): it still gets its hashed embedding, and a warning.
//   - more words than text_len: the first text_len words are kept, and a warning says how many were dropped.
// Words are maximal runs of [A-Za-z0-9] and non-ASCII bytes, lowercased, at most 31 bytes (longer ones are cut).
#pragma once
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <math.h>
#include <ctype.h>
#include "../lib/rng.h" // splitmix64

#define TEXT_WORDLEN   32
#define TEXT_MAX_WORDS 512

typedef struct {
    int text_len, text_dim;            // output [text_len, text_dim]
    uint64_t seed;                     // which embedding table (all programs of one run must agree)
    int (*in_vocab)(const char* word); // NULL: every word is known (no warnings)
    int quiet;                         // 1: no warnings on stderr (the counts still come back in TextInfo)
} TextEncoder;

typedef struct {
    int n_words;   // words in the caption
    int n_used;    // rows filled = min(n_words, text_len)
    int n_unknown; // words outside the vocabulary (among all n_words)
} TextInfo;

#define TEXT_DEFAULT_SEED 0x7e77ull

static inline TextEncoder text_encoder_make(int text_len, int text_dim, uint64_t seed) {
    TextEncoder te;
    te.text_len = text_len;
    te.text_dim = text_dim;
    te.seed = seed;
    te.in_vocab = NULL;
    te.quiet = 0;
    return te;
}

// splits text into lowercase words; returns the number of words, stores at most max_words of them
static inline int text_split_words(const char* text, char (*words)[TEXT_WORDLEN], int max_words) {
    int n = 0;
    const unsigned char* p = (const unsigned char*)(text ? text : "");
    while (*p) {
        while (*p && !(isalnum(*p) || *p >= 128)) p++;
        if (!*p) break;
        char tmp[TEXT_WORDLEN];
        int k = 0;
        while (*p && (isalnum(*p) || *p >= 128)) {
            if (k < TEXT_WORDLEN - 1) tmp[k++] = (char)tolower(*p);
            p++;
        }
        tmp[k] = 0;
        if (n < max_words) memcpy(words[n], tmp, (size_t)k + 1);
        n++;
    }
    return n;
}

// adds w * e(key) to v[dim]: e(key) ~ N(0, I), fixed by FNV-1a(key) and the seed (splitmix64 + Box-Muller)
static inline void text_add_embedding(float* v, int dim, const char* key, uint64_t seed, float w) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (const unsigned char* p = (const unsigned char*)key; *p; p++) {
        h ^= *p;
        h *= 0x100000001b3ull;
    }
    uint64_t s = h ^ (seed * SPLITMIX64_GAMMA);
    for (int d = 0; d < dim; d++) {
        double u[2];
        for (int j = 0; j < 2; j++) {
            uint64_t z = splitmix64(&s);
            u[j] = ((double)(z >> 11) + 0.5) * (1.0 / 9007199254740992.0); // (0, 1)
        }
        v[d] += w * (float)(sqrt(-2.0 * log(u[0])) * cos(6.283185307179586 * u[1]));
    }
}

// Encodes caption into out [text_len, text_dim]. Returns 0, or 1 if the encoder's sizes are invalid (then out is
// untouched and a message is printed). info may be NULL.
static inline int text_encode(const TextEncoder* te, const char* caption, float* out, TextInfo* info) {
    if (te->text_len < 1 || te->text_dim < 1) {
        fprintf(stderr, "text: encoder has text_len %d, text_dim %d; both must be >= 1\n", te->text_len, te->text_dim);
        return 1;
    }
    char words[TEXT_MAX_WORDS][TEXT_WORDLEN]; // 16 KB
    int nw = text_split_words(caption, words, TEXT_MAX_WORDS);
    int stored = nw < TEXT_MAX_WORDS ? nw : TEXT_MAX_WORDS;
    int n_used = stored < te->text_len ? stored : te->text_len;
    int n_unknown = 0;
    memset(out, 0, sizeof(float) * (size_t)te->text_len * te->text_dim);
    int phrase = 0;
    for (int i = 0; i < stored; i++) {
        if (te->in_vocab && !te->in_vocab(words[i])) {
            n_unknown++;
            if (!te->quiet)
                fprintf(stderr, "text: warning: unknown word \"%s\" in \"%.200s\"; it gets a hashed embedding\n",
                        words[i], caption);
        }
        if (i >= n_used) continue;
        float* row = out + (size_t)i * te->text_dim;
        char key[48];
        text_add_embedding(row, te->text_dim, words[i], te->seed, 1.0f);
        snprintf(key, sizeof(key), "#phrase %d", phrase);
        text_add_embedding(row, te->text_dim, key, te->seed, 0.5f);
        snprintf(key, sizeof(key), "#pos %d", i);
        text_add_embedding(row, te->text_dim, key, te->seed, 0.25f);
        double ss = 0;
        for (int d = 0; d < te->text_dim; d++) ss += (double)row[d] * row[d];
        float scale = (float)(1.0 / sqrt(ss / te->text_dim + 1e-12));
        for (int d = 0; d < te->text_dim; d++) row[d] *= scale;
        if (strcmp(words[i], "and") == 0) phrase++;
    }
    if (nw > te->text_len && !te->quiet)
        fprintf(stderr, "text: warning: caption has %d words but text_len is %d; the last %d are dropped: \"%.200s\"\n",
                nw, te->text_len, nw - te->text_len, caption);
    if (info) {
        info->n_words = nw;
        info->n_used = n_used;
        info->n_unknown = n_unknown;
    }
    return 0;
}
