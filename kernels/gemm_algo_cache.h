// kernels/gemm_algo_cache.h: cuBLASLt's algorithm choice, remembered per GEMM shape (plain C, no CUDA: the host tests
// in test_tmd check it, gpu's kernels/gemm.cuh uses it). cuBLASLt's heuristic costs tens of microseconds of host time
// per call; a 1.3B training step makes thousands of GEMM calls over a few dozen distinct shapes, so each shape asks
// once.
//
// The key is everything the heuristic reads: sizes, transposes, leading dimensions, types, epilogue, whether a bias
// and an auxiliary (GELU) tensor are given and the aux's leading dimension, whether C is read (beta != 0), and the
// pointers' alignments (an algorithm picked for 256-byte-aligned pointers may not run on 16-byte-aligned ones).
// The value is cuBLASLt's opaque algorithm (cublasLtMatmulAlgo_t is 8 uint64_t), stored here as bytes.
#pragma once
#include <stdint.h>
#include <string.h>

typedef struct {
    int m, n, k, transa, transb, lda, ldb, ldd, ab_type, d_type, epilogue, has_bias, has_aux, ldaux, beta_nonzero;
    uint32_t align_a, align_b, align_d;
} GemmKey;

#define GEMM_ALGO_BYTES 64
#define GEMM_CACHE_SIZE 256 // distinct shapes; the 14B Stage 2 step has under 100

typedef struct {
    int n;
    GemmKey key[GEMM_CACHE_SIZE];
    unsigned char algo[GEMM_CACHE_SIZE][GEMM_ALGO_BYTES];
    long hits, misses;
} GemmAlgoCache;

// the key with every padding byte zero, so memcmp compares keys
static inline GemmKey gemm_key(int m, int n, int k, int transa, int transb, int lda, int ldb, int ldd, int ab_type,
                               int d_type, int epilogue, int has_bias, int has_aux, int ldaux, int beta_nonzero,
                               uint32_t align_a, uint32_t align_b, uint32_t align_d) {
    GemmKey key;
    memset(&key, 0, sizeof(key));
    key.m = m;
    key.n = n;
    key.k = k;
    key.transa = transa;
    key.transb = transb;
    key.lda = lda;
    key.ldb = ldb;
    key.ldd = ldd;
    key.ab_type = ab_type;
    key.d_type = d_type;
    key.epilogue = epilogue;
    key.has_bias = has_bias;
    key.has_aux = has_aux;
    key.ldaux = has_aux ? ldaux : 0;
    key.beta_nonzero = beta_nonzero;
    key.align_a = align_a;
    key.align_b = align_b;
    key.align_d = align_d;
    return key;
}

// the stored algorithm of key, or NULL (a miss: the caller runs the heuristic and inserts its answer)
static inline const void* gemm_cache_find(GemmAlgoCache* c, const GemmKey* key) {
    for (int i = 0; i < c->n; i++)
        if (!memcmp(&c->key[i], key, sizeof(*key))) {
            c->hits++;
            return c->algo[i];
        }
    c->misses++;
    return NULL;
}

// remembers algo (bytes ≤ GEMM_ALGO_BYTES) for key; returns 0 when the cache is full (the caller then asks the
// heuristic every time for new shapes: correct, only slower)
static inline int gemm_cache_insert(GemmAlgoCache* c, const GemmKey* key, const void* algo, size_t bytes) {
    if (c->n >= GEMM_CACHE_SIZE || bytes > GEMM_ALGO_BYTES) return 0;
    c->key[c->n] = *key;
    memset(c->algo[c->n], 0, GEMM_ALGO_BYTES);
    memcpy(c->algo[c->n], algo, bytes);
    c->n++;
    return 1;
}
