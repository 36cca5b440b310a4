// kernels/gemm_algo_cache_tests.h: the cuBLASLt algorithm cache's keys (kernels/gemm_algo_cache.h), on the CPU: a shape
// asked twice hits and returns the stored bytes; a shape that differs in any one field of the key misses (a field the
// key forgot would hand one shape's algorithm to another: wrong alignment or epilogue, a crash or wrong numbers).
#pragma once
#include "gemm_algo_cache.h"
#include "../lib/testing.h"
#include "../lib/alloc.h"

static void test_gemm_algo_cache(void) {
    GemmAlgoCache* c = (GemmAlgoCache*)xcalloc(1, sizeof(GemmAlgoCache), "gemm algo cache test");
    // the base shape, then 18 variants, each differing from it in exactly one field
    // fields: m n k transa transb lda ldb ldd ab_type d_type epilogue has_bias has_aux ldaux beta_nonzero align_a _b _d
    const int base[18] = {1536, 32760, 1536, 1, 0, 1536, 1536, 1536, 14, 14, 3, 1, 1, 1536, 0, 256, 256, 256};
    unsigned char algo[GEMM_ALGO_BYTES];
    int stored_all = 1, found_own = 1, missed_before = 1;
    for (int v = -1; v < 18; v++) {
        int f[18];
        memcpy(f, base, sizeof(f));
        if (v >= 0) f[v] = (v == 3 || v == 4 || v == 11 || v == 12 || v == 14) ? !f[v] : (v >= 15 ? 16 : f[v] + 8);
        const GemmKey key = gemm_key(f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], f[9], f[10], f[11], f[12],
                                     f[13], f[14], (uint32_t)f[15], (uint32_t)f[16], (uint32_t)f[17]);
        missed_before &= gemm_cache_find(c, &key) == NULL;
        for (int i = 0; i < GEMM_ALGO_BYTES; i++) algo[i] = (unsigned char)(7 * v + i);
        stored_all &= gemm_cache_insert(c, &key, algo, sizeof(algo));
        const GemmKey again = gemm_key(f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], f[9], f[10], f[11], f[12],
                                       f[13], f[14], (uint32_t)f[15], (uint32_t)f[16], (uint32_t)f[17]);
        const unsigned char* got = (const unsigned char*)gemm_cache_find(c, &again);
        found_own &= got != NULL && !memcmp(got, algo, sizeof(algo));
    }
    EXPECT(missed_before, "gemm algo cache: a shape that differs in one key field (each of 18) misses the cache");
    EXPECT(stored_all && c->n == 19, "gemm algo cache: 19 shapes stored (%d)", c->n);
    EXPECT(found_own, "gemm algo cache: each shape asked again gets its own algorithm's bytes back");
    EXPECT(c->hits == 19 && c->misses == 19, "gemm algo cache: 19 hits, 19 misses (%ld, %ld)", c->hits, c->misses);
    // ldaux is ignored without an aux tensor (it is not read then), so those keys are equal
    GemmKey a = gemm_key(8, 8, 8, 0, 0, 8, 8, 8, 14, 14, 1, 0, 0, 8, 0, 16, 16, 16);
    GemmKey b = gemm_key(8, 8, 8, 0, 0, 8, 8, 8, 14, 14, 1, 0, 0, 64, 0, 16, 16, 16);
    EXPECT(!memcmp(&a, &b, sizeof(a)), "gemm algo cache: ldaux without an aux tensor does not split a shape");
    // a full cache refuses, and the caller keeps asking the heuristic
    while (c->n < GEMM_CACHE_SIZE) {
        a.m++;
        gemm_cache_insert(c, &a, algo, sizeof(algo));
    }
    a.m++;
    EXPECT(!gemm_cache_insert(c, &a, algo, sizeof(algo)) && gemm_cache_find(c, &a) == NULL,
           "gemm algo cache: a full cache (%d shapes) stores nothing more", GEMM_CACHE_SIZE);
    printf("  gemm algo cache: 19 shapes (a base and one per key field) stored and found, %d shapes fill it\n",
           GEMM_CACHE_SIZE);
    free(c);
}
